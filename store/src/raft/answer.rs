//! Answers for the member that proposed an entry, straight from the state machine.
//!
//! openraft answers a `client_write` once the state machine task has returned its results
//! to Raft's task and that task has got round to them: two hand-offs between tasks after the
//! entry is applied, on every write's path. A proposal instead carries a [`Waiter`] in its
//! [`super::Cmd`] (never encoded, so only the proposing member has it). The log store
//! registers it under the entry's log id when the entry is appended, and the state machine
//! answers it as soon as it has applied that entry, then gives openraft an empty response
//! for it. Whoever proposed takes whichever answer comes first (see `node::batcher`): the
//! waiter, or openraft's own, which also carries its errors (not the leader, ...).
//!
//! A waiter answers only for the entry it was registered with: an entry the log lost (a new
//! leader truncated it) is forgotten, as is anything another entry at its index replaces.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Cmd, Entry, LogId};
use crate::proto::keelpb::RaftResponse;

type Answer = Box<dyn FnOnce(RaftResponse) + Send>;

/// Whoever waits for what applying one proposed entry returns. Answered at most once.
#[derive(Clone, Default)]
pub struct Waiter(Arc<parking_lot::Mutex<Option<Answer>>>);

impl Waiter {
    pub fn new(answer: impl FnOnce(RaftResponse) + Send + 'static) -> Waiter {
        Waiter(Arc::new(parking_lot::Mutex::new(Some(Box::new(answer)))))
    }

    fn answer(&self, resp: RaftResponse) {
        let answer = self.0.lock().take();
        if let Some(answer) = answer {
            answer(resp);
        }
    }
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waiter")
    }
}

/// The waiters of entries appended and not yet applied, by log index.
#[derive(Default)]
pub struct Waiters(parking_lot::Mutex<BTreeMap<u64, (LogId, Waiter)>>);

impl Waiters {
    /// Registers the waiters that `entries`, just appended, carry.
    pub fn appended(&self, entries: &[Entry]) {
        let mut map = None;
        for e in entries {
            if let openraft::EntryPayload::Normal(Cmd(_, Some(w))) = &e.payload {
                map.get_or_insert_with(|| self.0.lock()).insert(e.log_id.index, (e.log_id, w.clone()));
            }
        }
    }

    /// Entries from index `from` on left the log.
    pub fn truncated(&self, from: u64) {
        self.0.lock().split_off(&from);
    }

    /// Everything through index `upto` is in the state (a snapshot was installed).
    pub fn covered(&self, upto: u64) {
        let mut map = self.0.lock();
        while map.first_key_value().is_some_and(|(i, _)| *i <= upto) {
            map.pop_first();
        }
    }

    /// The entry `log_id` was applied with `resp`: answers its waiter, if it has one, and
    /// returns what is left for openraft to pass on (nothing, then).
    pub fn applied(&self, log_id: LogId, resp: RaftResponse) -> RaftResponse {
        let waiter = {
            let mut map = self.0.lock();
            // Anything below was forgotten in between (a leader change).
            while map.first_key_value().is_some_and(|(i, _)| *i < log_id.index) {
                map.pop_first();
            }
            map.remove(&log_id.index)
        };
        match waiter {
            Some((id, w)) if id == log_id => {
                w.answer(resp);
                RaftResponse::default()
            }
            _ => resp,
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::proto::keelpb::RaftRequest;

    fn id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn proposed(term: u64, index: u64) -> (Entry, Arc<parking_lot::Mutex<Option<i64>>>) {
        let got = Arc::new(parking_lot::Mutex::new(None));
        let g = got.clone();
        let waiter = Waiter::new(move |r: RaftResponse| *g.lock() = Some(r.revision));
        let entry =
            Entry { log_id: id(term, index), payload: EntryPayload::Normal(Cmd(RaftRequest::default(), Some(waiter))) };
        (entry, got)
    }

    fn resp(revision: i64) -> RaftResponse {
        RaftResponse { revision, result: None }
    }

    #[test]
    fn the_waiter_of_an_applied_entry_is_answered_once_and_openraft_gets_nothing() {
        let waiters = Waiters::default();
        let (e, got) = proposed(1, 5);
        waiters.appended(&[e]);
        assert_eq!(waiters.applied(id(1, 5), resp(7)), RaftResponse::default());
        assert_eq!(*got.lock(), Some(7));
        // Applied again (it is not: each index once), it would find no waiter.
        assert_eq!(waiters.applied(id(1, 5), resp(8)), resp(8));
        assert_eq!(*got.lock(), Some(7));
    }

    #[test]
    fn a_replaced_or_truncated_entry_answers_nobody() {
        let waiters = Waiters::default();
        let (a, got_a) = proposed(1, 5);
        let (b, got_b) = proposed(1, 6);
        let (c, got_c) = proposed(1, 7);
        waiters.appended(&[a, b, c]);
        // A new leader's entry at index 5, of another term: the old waiter is not its.
        assert_eq!(waiters.applied(id(2, 5), resp(9)), resp(9));
        waiters.truncated(7);
        assert_eq!(waiters.applied(id(2, 6), resp(10)), resp(10));
        assert_eq!(waiters.applied(id(1, 7), resp(11)), resp(11));
        assert_eq!((*got_a.lock(), *got_b.lock(), *got_c.lock()), (None, None, None));
    }

    #[test]
    fn a_snapshot_forgets_the_waiters_it_covers() {
        let waiters = Waiters::default();
        let (a, got_a) = proposed(1, 5);
        let (b, got_b) = proposed(1, 9);
        waiters.appended(&[a, b]);
        waiters.covered(5);
        assert_eq!(waiters.applied(id(1, 9), resp(3)), RaftResponse::default());
        assert_eq!((*got_a.lock(), *got_b.lock()), (None, Some(3)));
    }
}
