//! Lease expiry, decided by the leader.
//!
//! Only the leader tracks deadlines. When a member becomes leader it gives every lease its
//! full TTL (or its checkpointed remainder) plus one election timeout, so no lease expires
//! early because of a leader change; keepalives (sent to, or forwarded to, the leader) push
//! a deadline to now + TTL. Every half second the leader proposes a revoke for each expired
//! lease, through Raft like any client request; a member that stops being leader forgets
//! its deadlines.
//!
//! With `--experimental-enable-lease-checkpoint`, the leader also writes each long lease's
//! time left through Raft every `--experimental-lease-checkpoint-interval` (5 minutes), as
//! etcd's lessor does, so that a new leader counts down from there rather than from the
//! full TTL: leader changes can no longer keep a long lease alive for ever. A keepalive
//! clears a lease's checkpoint (one more entry), since the lease then has its full TTL again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::error::EtcdError;
use crate::node::Node;
use crate::proto::etcdserverpb::{LeaseCheckpoint, LeaseCheckpointRequest, LeaseRevokeRequest};
use crate::proto::keelpb::raft_request::Command;

const TICK: Duration = Duration::from_millis(500);
/// etcd's `leaseRevokeRate`: revokes proposed per second at most.
const REVOKES_PER_TICK: usize = 500;
/// After proposing a revoke, wait this long before proposing it again.
const REVOKE_RETRY: Duration = Duration::from_secs(3);
/// etcd's `maxLeaseCheckpointBatchSize`: checkpoints in one Raft entry at most.
const CHECKPOINTS_PER_ENTRY: usize = 1000;

#[derive(Default)]
pub struct Expiry {
    /// Lease id → when it expires. Empty unless this member leads.
    deadlines: Mutex<HashMap<i64, Instant>>,
    /// How often long leases' time left is checkpointed; None: never.
    checkpoint_every: Option<Duration>,
    /// Lease id → when its next checkpoint is due (leases longer than the interval only).
    checkpoints: Mutex<HashMap<i64, Instant>>,
    /// Leases renewed since their checkpoint: cleared with the next checkpoints.
    renewed: Mutex<Vec<i64>>,
    /// The term this member has led in since its deadlines were set, if it leads.
    led_term: Mutex<Option<u64>>,
}

impl Expiry {
    pub fn new(checkpoint_every: Option<Duration>) -> Expiry {
        Expiry { checkpoint_every, ..Expiry::default() }
    }

    /// Keeps a lease alive for another `ttl` seconds. A time left written for it earlier
    /// (`checkpointed`) is cleared with the next checkpoints.
    pub fn renew(&self, id: i64, ttl: i64, checkpointed: bool) {
        let now = Instant::now();
        self.deadlines.lock().insert(id, now + Duration::from_secs(ttl.max(0) as u64));
        self.schedule_checkpoint(id, ttl, now);
        if checkpointed && self.checkpoint_every.is_some() {
            self.renewed.lock().push(id);
        }
    }

    /// A lease with `left` seconds gets its next checkpoint one interval from `now`, if it
    /// outlasts the interval (etcd's `scheduleCheckpointIfNeeded`).
    fn schedule_checkpoint(&self, id: i64, left: i64, now: Instant) {
        if let Some(every) = self.checkpoint_every {
            if Duration::from_secs(left.max(0) as u64) > every {
                self.checkpoints.lock().insert(id, now + every);
            }
        }
    }

    /// The checkpoints due: each lease's whole seconds left (rounded up), for leases with
    /// less left than their TTL. Each is scheduled again.
    fn checkpoints_due(&self, node: &Node) -> Vec<LeaseCheckpoint> {
        let Some(every) = self.checkpoint_every else { return Vec::new() };
        let now = Instant::now();
        let deadlines = self.deadlines.lock();
        let mut renewed: Vec<i64> = self.renewed.lock().drain(..).collect();
        renewed.sort_unstable();
        renewed.dedup();
        let mut due: Vec<LeaseCheckpoint> =
            renewed.into_iter().map(|id| LeaseCheckpoint { id, remaining_ttl: 0 }).collect();
        let mut checkpoints = self.checkpoints.lock();
        checkpoints.retain(|id, at| {
            if *at > now || due.len() >= CHECKPOINTS_PER_ENTRY {
                return true;
            }
            let (Some(deadline), Some(lease)) = (deadlines.get(id), node.store.lease(*id)) else { return false };
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                return false;
            }
            let secs = left.as_secs() as i64 + i64::from(left.subsec_nanos() > 0);
            if secs < lease.ttl {
                due.push(LeaseCheckpoint { id: *id, remaining_ttl: secs });
            }
            if left > every {
                *at = now + every;
                true
            } else {
                false
            }
        });
        // Stable: a lease's clear (first) is applied before a checkpoint of its new time.
        due.sort_by_key(|c| c.id);
        due
    }

    /// Seconds left, if this member tracks the lease.
    pub fn remaining(&self, id: i64) -> Option<i64> {
        let d = *self.deadlines.lock().get(&id)?;
        Some(d.saturating_duration_since(Instant::now()).as_secs() as i64)
    }

    /// Sets the deadlines up when this member has become leader (in a new term), and forgets
    /// them when it no longer leads; whether it leads. Called before each use, so that a
    /// keepalive or time-to-live answered right after an election sees the deadlines the
    /// new leader counts from, never a lease's full TTL by default.
    pub fn follow_role(&self, node: &Node) -> bool {
        let (state, term) = {
            let m = node.raft.metrics();
            let m = m.borrow();
            (m.state, m.current_term)
        };
        let leading = (state == ServerState::Leader).then_some(term);
        let mut led = self.led_term.lock();
        if *led != leading {
            match leading {
                Some(_) => self.promote(node, Duration::from_millis(node.raft.config().election_timeout_max)),
                None => self.clear(),
            }
            *led = leading;
        }
        leading.is_some()
    }

    fn clear(&self) {
        self.deadlines.lock().clear();
        self.checkpoints.lock().clear();
        self.renewed.lock().clear();
    }

    /// A new leader: every lease gets its TTL (or checkpointed remainder) plus `extend`.
    fn promote(&self, node: &Node, extend: Duration) {
        let now = Instant::now();
        let mut d = self.deadlines.lock();
        d.clear();
        self.checkpoints.lock().clear();
        for l in node.store.leases() {
            let ttl = if l.remaining_ttl > 0 { l.remaining_ttl } else { l.ttl };
            d.insert(l.id, now + Duration::from_secs(ttl.max(0) as u64) + extend);
            self.schedule_checkpoint(l.id, ttl, now);
        }
    }

    /// Picks up leases granted since the last tick, drops revoked ones, and returns the
    /// expired ones (giving each a retry deadline).
    fn due(&self, node: &Node) -> Vec<i64> {
        let now = Instant::now();
        let leases = node.store.leases();
        let mut d = self.deadlines.lock();
        let live: std::collections::HashSet<i64> = leases.iter().map(|l| l.id).collect();
        d.retain(|id, _| live.contains(id));
        for l in &leases {
            d.entry(l.id).or_insert_with(|| {
                self.schedule_checkpoint(l.id, l.ttl, now);
                now + Duration::from_secs(l.ttl.max(0) as u64)
            });
        }
        let mut expired: Vec<i64> =
            d.iter().filter(|(_, t)| **t <= now).map(|(id, _)| *id).take(REVOKES_PER_TICK).collect();
        expired.sort_unstable();
        for id in &expired {
            d.insert(*id, now + REVOKE_RETRY);
        }
        expired
    }
}

/// The leader's expiry loop.
pub async fn run(node: Arc<Node>, expiry: Arc<Expiry>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.cancelled() => return,
        }
        if !expiry.follow_role(&node) {
            continue;
        }
        let checkpoints = expiry.checkpoints_due(&node);
        if !checkpoints.is_empty() {
            checkpoint(node.clone(), checkpoints);
        }
        for id in expiry.due(&node) {
            let node = node.clone();
            tokio::spawn(async move {
                match node.propose(Command::LeaseRevoke(LeaseRevokeRequest { id })).await {
                    Ok(_) | Err(EtcdError::LeaseNotFound) => tracing::debug!(lease = id, "lease expired"),
                    Err(e) => tracing::warn!(lease = id, error = %e, "revoking an expired lease failed; will retry"),
                }
            });
        }
    }
}

/// Writes leases' time left through Raft; a failure is only logged (the next interval writes
/// again), as etcd's lessor does.
fn checkpoint(node: Arc<Node>, checkpoints: Vec<LeaseCheckpoint>) {
    tokio::spawn(async move {
        let n = checkpoints.len();
        match node.propose(Command::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints })).await {
            Ok(_) => tracing::debug!(leases = n, "checkpointed leases' time left"),
            Err(e) => tracing::warn!(leases = n, error = %e, "checkpointing leases failed"),
        }
    });
}
