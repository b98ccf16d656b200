//! One client watch stream as the hub keeps it: where its responses go, which watch
//! ids it has handed out, and how a create it refuses is answered.

use foldhash::HashSet;

use super::watcher::{watched_range, Outbox};
use crate::proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchResponse};

pub(super) struct Stream {
    pub(super) tx: Outbox,
    pub(super) next_id: i64,
    pub(super) ids: HashSet<i64>,
    /// Watchers the server cancelled (compacted history): as in etcd, their ids stay taken
    /// on the stream until the client cancels them too, which it is then answered for.
    pub(super) retired: HashSet<i64>,
    /// A progress request arrived while some watcher was catching up.
    pub(super) progress_pending: bool,
}

impl Stream {
    pub(super) fn new(tx: Outbox) -> Stream {
        Stream { tx, next_id: 0, ids: HashSet::default(), retired: HashSet::default(), progress_pending: false }
    }

    /// The id a new watcher gets, or etcd's reason to refuse it (answered for watch id -1):
    /// a range that ends at or before its key (refused before an id is taken), or a chosen
    /// id already in use. Like etcd, an id is never handed out twice on a stream, so a late
    /// response for a cancelled watcher names no other.
    pub(super) fn take_id(&mut self, req: &WatchCreateRequest) -> Result<i64, &'static str> {
        if watched_range(req).bounds().is_none() {
            return Err("mvcc: watcher range is empty");
        }
        let id = if req.watch_id != 0 {
            if self.ids.contains(&req.watch_id) {
                return Err("mvcc: duplicate watch ID provided on the WatchStream");
            }
            req.watch_id
        } else {
            while self.ids.contains(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        };
        self.ids.insert(id);
        Ok(id)
    }
}

/// The answer to a refused watch create: etcd answers it for watch id -1, created and
/// cancelled, with its reason.
pub(super) fn refusal(header: Option<ResponseHeader>, reason: &str) -> WatchResponse {
    WatchResponse {
        header,
        watch_id: -1,
        created: true,
        canceled: true,
        cancel_reason: reason.to_string(),
        ..Default::default()
    }
}
