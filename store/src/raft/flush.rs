//! The leader's log write, stood in for by its followers': an entry is committed once it is
//! durable on a majority, whichever members that majority is made of.
//!
//! openraft 0.9 counts the leader in every majority it commits with: its replication of an
//! entry starts only once the leader's own write of it is durable (the flush callback of
//! [`RaftLogStorage::append`](openraft::storage::RaftLogStorage::append)), so each write
//! waits for the leader's fsync *and* a follower's. Raft's commitment asks only for durable
//! copies on a majority, any majority (the Raft thesis, §10.2.1, has the leader write its
//! log in parallel with replication): with three members, the second of three fsyncs, not
//! the slower of the leader's and the faster follower's.
//!
//! Keel gets that rule without changing openraft: the leader's flush callbacks wait here,
//! and one fires when the first of two things happens: the leader's own write of the entry
//! is durable ([`Flushes::written`]), or followers that form a majority of the voters by
//! themselves have confirmed holding it durably, through early appends
//! ([`Flushes::acked`], see [`super::early`]). In the second case openraft counts the
//! leader's copy a moment before it is on disk; the entry is durable on a majority without
//! it, so whatever openraft then commits is too. Should the leader crash before its write,
//! it restarts with a shorter log and as a candidate (see `LogStore::read_vote`); the
//! followers holding the entry refuse it their votes, and the next leader has the entry.
//!
//! A majority needs the voters, and a wrong set would be unsafe, so the set used is the
//! newest configuration in this member's log, as Raft defines the effective one: taken from
//! a membership entry as it is appended, or from openraft's metrics (start-up, snapshots),
//! never from a report older than the newest entry seen. A joint configuration (a change
//! under way), or none known, disables the stand-in: the leader's own write decides.

use std::collections::{BTreeSet, HashMap, VecDeque};

use openraft::storage::LogFlushed;
use openraft::Membership;

use super::{LogId, NodeId, TypeConfig, Vote};

/// A flush callback: openraft's, or a test's.
pub trait Callback: Send {
    fn fire(self, result: Result<(), std::io::Error>);
}

impl Callback for LogFlushed<TypeConfig> {
    fn fire(self, result: Result<(), std::io::Error>) {
        self.log_io_completed(result)
    }
}

/// The leader's flush callbacks waiting for a durable copy on a majority.
pub struct Flushes<C = LogFlushed<TypeConfig>> {
    me: NodeId,
    inner: parking_lot::Mutex<Inner<C>>,
}

struct Inner<C> {
    /// Callbacks not fired yet, each with the last entry of its append, in log order.
    waiting: VecDeque<(LogId, C)>,
    /// The highest log id each follower has confirmed holding durably, and under which vote.
    acked: HashMap<NodeId, (Vote, LogId)>,
    config: Config,
    /// Callbacks fired for a majority of followers, and for the leader's own write.
    stood_in: u64,
    own: u64,
}

/// The voters of the newest configuration in the log, as far as known.
#[derive(Default)]
struct Config {
    /// The newest configuration's log id (`None`: the initial, empty one).
    at: Option<LogId>,
    /// Its voters, if it is a uniform configuration; `None` for a joint one or none known.
    voters: Option<BTreeSet<NodeId>>,
    /// A truncation removed the configuration above from the log, from this index on: only
    /// a configuration older than that may be taken from metrics now (a report could still
    /// name the deleted one). A newer one comes with the next membership entry appended; a
    /// snapshot's newer configuration is not taken meanwhile, which costs only speed.
    truncated_from: Option<u64>,
}

fn voters_of(membership: &Membership<NodeId, super::Member>) -> Option<BTreeSet<NodeId>> {
    match membership.get_joint_config().as_slice() {
        [only] => Some(only.clone()),
        _ => None,
    }
}

impl<C: Callback> Flushes<C> {
    /// For member `me`.
    pub fn new(me: NodeId) -> Flushes<C> {
        let inner =
            Inner { waiting: VecDeque::new(), acked: HashMap::new(), config: Config::default(), stood_in: 0, own: 0 };
        Flushes { me, inner: parking_lot::Mutex::new(inner) }
    }

    /// The member this is.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Holds the callback of the leader's append ending with `last` until the entries are
    /// durable on a majority. Appends come in log order.
    pub fn wait(&self, last: LogId, callback: C) {
        let mut inner = self.inner.lock();
        inner.waiting.push_back((last, callback));
        self.fire_covered(&mut inner);
    }

    /// The leader's own write ended with `result`, through index `upto`.
    pub fn written(&self, upto: u64, result: &Result<(), String>) {
        let mut inner = self.inner.lock();
        while inner.waiting.front().is_some_and(|(id, _)| id.index <= upto) {
            if let Some((_, cb)) = inner.waiting.pop_front() {
                inner.own += 1;
                cb.fire(result.clone().map_err(std::io::Error::other));
            }
        }
    }

    /// `follower` confirmed, answering a request under `vote`, that its log holds the
    /// leader's entries through `matched`, durably.
    pub fn acked(&self, follower: NodeId, vote: Vote, matched: LogId) {
        let mut inner = self.inner.lock();
        let newer = match inner.acked.get(&follower) {
            Some((v, m)) => *v != vote || matched > *m,
            None => true,
        };
        if newer {
            inner.acked.insert(follower, (vote, matched));
            self.fire_covered(&mut inner);
        }
    }

    /// A membership entry at `at` was appended to this member's log.
    pub fn appended_membership(&self, at: LogId, membership: &Membership<NodeId, super::Member>) {
        let mut inner = self.inner.lock();
        inner.config = Config { at: Some(at), voters: voters_of(membership), truncated_from: None };
    }

    /// Entries from index `from` on were deleted from this member's log.
    pub fn truncated(&self, from: u64) {
        let mut inner = self.inner.lock();
        if inner.config.at.is_some_and(|at| at.index >= from) {
            let since = inner.config.truncated_from.map_or(from, |t| t.min(from));
            inner.config = Config { at: None, voters: None, truncated_from: Some(since) };
        }
    }

    /// openraft reports `membership`, at `at`, as the effective configuration.
    pub fn effective(&self, at: Option<LogId>, membership: &Membership<NodeId, super::Member>) {
        let mut inner = self.inner.lock();
        let take = match inner.config.truncated_from {
            // A report from before the truncation could name the deleted configuration.
            Some(from) => at.is_none_or(|at| at.index < from),
            None => at >= inner.config.at,
        };
        if take {
            inner.config = Config { at, voters: voters_of(membership), truncated_from: None };
        }
    }

    /// How many callbacks fired for followers' copies, and for the leader's own write.
    pub fn counts(&self) -> (u64, u64) {
        let inner = self.inner.lock();
        (inner.stood_in, inner.own)
    }

    /// Fires, in order, the callbacks whose entries followers that form a majority of the
    /// voters by themselves hold.
    fn fire_covered(&self, inner: &mut Inner<C>) {
        let Some(voters) = inner.config.voters.as_ref() else { return };
        let majority = voters.len() / 2 + 1;
        while let Some((id, _)) = inner.waiting.front() {
            let vote = Vote::new_committed(id.leader_id.term, id.leader_id.node_id);
            let holding = voters
                .iter()
                .filter(|v| **v != self.me)
                .filter(|v| {
                    inner.acked.get(v).is_some_and(|(acked_vote, m)| {
                        *acked_vote == vote && m.leader_id == id.leader_id && m.index >= id.index
                    })
                })
                .count();
            if holding < majority {
                return;
            }
            if let Some((_, cb)) = inner.waiting.pop_front() {
                inner.stood_in += 1;
                cb.fire(Ok(()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openraft::CommittedLeaderId;

    use super::*;

    /// A callback that records its append's number and whether it succeeded.
    struct Note(u64, Arc<parking_lot::Mutex<Vec<(u64, bool)>>>);

    impl Callback for Note {
        fn fire(self, result: Result<(), std::io::Error>) {
            self.1.lock().push((self.0, result.is_ok()));
        }
    }

    type Fired = Arc<parking_lot::Mutex<Vec<(u64, bool)>>>;

    fn id(term: u64, leader: NodeId, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, leader), index)
    }

    fn uniform(voters: &[NodeId]) -> Membership<NodeId, super::super::Member> {
        Membership::new(vec![voters.iter().copied().collect()], None)
    }

    /// Member 1 leading term 3 of a three-member cluster, with `n` appends waiting (append
    /// `i` ends at index 10 i).
    fn leader(n: u64) -> (Flushes<Note>, Fired) {
        let f = Flushes::new(1);
        f.effective(Some(id(1, 1, 1)), &uniform(&[1, 2, 3]));
        let fired = Fired::default();
        for i in 1..=n {
            f.wait(id(3, 1, 10 * i), Note(i, fired.clone()));
        }
        (f, fired)
    }

    fn fired(f: &Fired) -> Vec<(u64, bool)> {
        f.lock().clone()
    }

    #[test]
    fn both_followers_holding_an_append_stand_in_for_the_leaders_write() {
        let (f, got) = leader(2);
        let vote = Vote::new_committed(3, 1);
        f.acked(2, vote, id(3, 1, 10));
        assert_eq!(fired(&got), vec![], "one follower and no leader copy is not a majority");
        f.acked(3, vote, id(3, 1, 15));
        assert_eq!(fired(&got), vec![(1, true)], "two followers of three are; the second append is not covered");
        f.acked(2, vote, id(3, 1, 20));
        assert_eq!(fired(&got), vec![(1, true)]);
        f.acked(3, vote, id(3, 1, 20));
        assert_eq!(fired(&got), vec![(1, true), (2, true)]);
        // The leader's own write comes later and fires nothing twice.
        f.written(20, &Ok(()));
        assert_eq!(fired(&got).len(), 2);
        assert_eq!(f.counts(), (2, 0));
    }

    #[test]
    fn the_leaders_write_fires_what_it_covers_in_order_with_its_result() {
        let (f, got) = leader(3);
        f.acked(2, Vote::new_committed(3, 1), id(3, 1, 30));
        f.written(20, &Ok(()));
        assert_eq!(fired(&got), vec![(1, true), (2, true)]);
        f.written(30, &Err("disk full".into()));
        assert_eq!(fired(&got), vec![(1, true), (2, true), (3, false)]);
        assert_eq!(f.counts(), (0, 3));
    }

    #[test]
    fn confirmations_of_another_term_or_leader_count_for_nothing() {
        let (f, got) = leader(1);
        // Under an older vote, of an older term's entries, or under a vote that is not the
        // entry's leader's.
        f.acked(2, Vote::new_committed(2, 2), id(2, 2, 50));
        f.acked(3, Vote::new_committed(3, 1), id(2, 2, 50));
        f.acked(2, Vote::new_committed(3, 3), id(3, 1, 50));
        assert_eq!(fired(&got), vec![]);
        f.acked(2, Vote::new_committed(3, 1), id(3, 1, 50));
        f.acked(3, Vote::new_committed(3, 1), id(3, 1, 10));
        assert_eq!(fired(&got), vec![(1, true)]);
    }

    #[test]
    fn no_known_or_a_joint_configuration_leaves_it_to_the_leaders_write() {
        let vote = Vote::new_committed(3, 1);
        let got = Fired::default();
        let f: Flushes<Note> = Flushes::new(1);
        f.wait(id(3, 1, 10), Note(1, got.clone()));
        f.acked(2, vote, id(3, 1, 10));
        f.acked(3, vote, id(3, 1, 10));
        assert_eq!(fired(&got), vec![], "no configuration known");

        let (f, got) = leader(1);
        let joint = Membership::<NodeId, super::super::Member>::new(
            vec![[1, 2, 3].into_iter().collect(), [1, 2, 4].into_iter().collect()],
            None,
        );
        f.appended_membership(id(3, 1, 5), &joint);
        f.acked(2, vote, id(3, 1, 10));
        f.acked(3, vote, id(3, 1, 10));
        f.acked(4, vote, id(3, 1, 10));
        assert_eq!(fired(&got), vec![], "a change under way");
    }

    #[test]
    fn the_newest_configuration_in_the_log_decides_not_an_older_report() {
        let vote = Vote::new_committed(3, 1);
        let (f, got) = leader(1);
        f.appended_membership(id(3, 1, 5), &uniform(&[1, 2, 3, 4, 5]));
        // A metrics report from before that entry was appended.
        f.effective(Some(id(1, 1, 1)), &uniform(&[1, 2, 3]));
        f.acked(2, vote, id(3, 1, 10));
        f.acked(3, vote, id(3, 1, 10));
        assert_eq!(fired(&got), vec![], "two of five is no majority");
        f.acked(5, vote, id(3, 1, 10));
        assert_eq!(fired(&got), vec![(1, true)]);
    }

    #[test]
    fn a_truncated_configuration_is_forgotten_and_only_an_older_report_replaces_it() {
        let vote = Vote::new_committed(3, 1);
        let (f, got) = leader(1);
        f.appended_membership(id(2, 2, 5), &uniform(&[1, 2, 3]));
        f.truncated(4);
        f.acked(2, vote, id(3, 1, 10));
        f.acked(3, vote, id(3, 1, 10));
        assert_eq!(fired(&got), vec![], "no configuration known after the truncation");
        f.effective(Some(id(2, 2, 5)), &uniform(&[1, 2, 3]));
        assert_eq!(fired(&got), vec![], "a report naming the deleted entry");
        f.effective(Some(id(1, 1, 1)), &uniform(&[1, 2, 3]));
        f.acked(2, vote, id(3, 1, 11));
        assert_eq!(fired(&got), vec![(1, true)]);
    }
}
