//! One watcher: what it watches, how it wants events, and turning changes into its
//! responses (filters, prev_kv, fragmenting).

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use tokio::sync::mpsc;

use crate::mvcc::{Change, HistoryEvent, KeyRange};
use crate::proto::etcdserverpb::watch_create_request::FilterType;
use crate::proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchResponse};
use crate::proto::mvccpb::event::EventType;
use crate::proto::mvccpb::{Event, KeyValue};

/// A watch stream's outbound queue.
pub type Outbox = mpsc::Sender<Out>;

/// What a watch stream's queue carries: one response, or one revision's events for many
/// watchers of the stream at once, which the stream writes out as a response each.
///
/// etcd sends every watcher its own response, and so does Keel on the wire; queueing a
/// revision once per stream instead of once per watcher keeps 1,000 watchers of one key
/// on one stream from filling its queue with one event, so they stay synced instead of
/// being moved to the catch-up loop and back on every revision.
#[derive(Debug)]
pub enum Out {
    One(WatchResponse),
    Group(Group),
}

/// The same events, at one revision, for several watchers of one stream.
#[derive(Debug)]
pub struct Group {
    pub revision: i64,
    pub events: Arc<Vec<Event>>,
    pub ids: Vec<i64>,
}

impl From<WatchResponse> for Out {
    fn from(r: WatchResponse) -> Out {
        Out::One(r)
    }
}

impl Out {
    /// The responses this stands for, in order, their headers completed by `fill` (a
    /// group's once, from the group's revision, then copied to each response).
    pub fn into_responses(
        self,
        fill: &dyn Fn(&mut Option<ResponseHeader>),
    ) -> impl Iterator<Item = WatchResponse> + use<> {
        let (one, group) = match self {
            Out::One(mut r) => {
                fill(&mut r.header);
                (Some(r), None)
            }
            Out::Group(g) => {
                let mut header = Some(ResponseHeader { revision: g.revision, ..Default::default() });
                fill(&mut header);
                (None, Some((g, header)))
            }
        };
        let many = group.into_iter().flat_map(|(g, header)| {
            let Group { events, ids, .. } = g;
            ids.into_iter().map(move |watch_id| WatchResponse {
                header,
                watch_id,
                events: events.as_ref().clone(),
                ..Default::default()
            })
        });
        one.into_iter().chain(many)
    }
}

/// Identifies a watcher: its stream and its id on that stream.
pub type WatchKey = (u64, i64);

#[derive(Clone, Debug)]
pub struct Watcher {
    pub id: i64,
    pub stream: u64,
    pub range: KeyRange,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
    pub progress_notify: bool,
    pub fragment: bool,
    /// The first revision this watcher has not been sent yet.
    pub next_rev: i64,
    pub tx: Outbox,
}

impl Watcher {
    pub fn new(id: i64, stream: u64, req: &WatchCreateRequest, next_rev: i64, tx: Outbox) -> Watcher {
        let has = |f: FilterType| req.filters.contains(&(f as i32));
        Watcher {
            id,
            stream,
            range: KeyRange::new(&req.key, &req.range_end),
            no_put: has(FilterType::Noput),
            no_delete: has(FilterType::Nodelete),
            prev_kv: req.prev_kv,
            progress_notify: req.progress_notify,
            fragment: req.fragment,
            next_rev,
            tx,
        }
    }

    pub fn key(&self) -> WatchKey {
        (self.stream, self.id)
    }

    /// The single key this watcher watches, if it watches exactly one.
    pub fn single_key(&self) -> Option<&Bytes> {
        match &self.range {
            KeyRange::Single(k) => Some(k),
            KeyRange::Span { .. } => None,
        }
    }

    fn wants(&self, delete: bool) -> bool {
        if delete {
            !self.no_delete
        } else {
            !self.no_put
        }
    }

    /// The event a committed change makes for this watcher, if it wants it.
    pub fn event_for(&self, c: &Change, revision: i64) -> Option<Event> {
        let delete = c.kv.is_none();
        if !self.wants(delete) {
            return None;
        }
        let kv = match &c.kv {
            Some(kv) => kv.clone(),
            None => KeyValue { key: c.key.clone(), mod_revision: revision, ..Default::default() },
        };
        let prev_kv = if self.prev_kv { c.prev.clone() } else { None };
        let kind = if delete { EventType::Delete } else { EventType::Put };
        Some(Event { r#type: kind as i32, kv: Some(kv), prev_kv })
    }

    /// The event a change read back from history makes for this watcher, if wanted.
    pub fn event_from_history(&self, h: &HistoryEvent) -> Option<Event> {
        if !self.wants(h.delete) {
            return None;
        }
        let kind = if h.delete { EventType::Delete } else { EventType::Put };
        let prev_kv = if self.prev_kv { h.prev.clone() } else { None };
        Some(Event { r#type: kind as i32, kv: Some(h.kv.clone()), prev_kv })
    }

    /// The responses carrying `events` (all of one or more whole revisions, the latest
    /// being `revision`). A watcher that asked for fragments gets a response too large for
    /// one message split into several, all but the last marked `fragment`.
    pub fn responses(&self, revision: i64, events: Vec<Event>, max_bytes: usize) -> Vec<WatchResponse> {
        let whole = WatchResponse {
            header: Some(ResponseHeader { revision, ..Default::default() }),
            watch_id: self.id,
            events,
            ..Default::default()
        };
        if !self.fragment || whole.encoded_len() <= max_bytes {
            return vec![whole];
        }
        let mut out = Vec::new();
        let mut current: Vec<Event> = Vec::new();
        let mut size = 0;
        for e in whole.events {
            let n = e.encoded_len() + 8;
            if !current.is_empty() && size + n > max_bytes {
                out.push(std::mem::take(&mut current));
                size = 0;
            }
            size += n;
            current.push(e);
        }
        out.push(current);
        let last = out.len() - 1;
        out.into_iter()
            .enumerate()
            .map(|(i, events)| WatchResponse {
                header: Some(ResponseHeader { revision, ..Default::default() }),
                watch_id: self.id,
                events,
                fragment: i != last,
                ..Default::default()
            })
            .collect()
    }
}
