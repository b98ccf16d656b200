//! Lease expiry, decided by the leader.
//!
//! Only the leader tracks deadlines. When a member becomes leader it gives every lease its
//! full TTL (or its checkpointed remainder) plus one election timeout, so no lease expires
//! early because of a leader change; keepalives (sent to, or forwarded to, the leader) push
//! a deadline to now + TTL. Every half second the leader proposes a revoke for each expired
//! lease, through Raft like any client request; a member that stops being leader forgets
//! its deadlines.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::error::EtcdError;
use crate::node::Node;
use crate::proto::etcdserverpb::LeaseRevokeRequest;
use crate::proto::keelpb::raft_request::Command;

const TICK: Duration = Duration::from_millis(500);
/// etcd's `leaseRevokeRate`: revokes proposed per second at most.
const REVOKES_PER_TICK: usize = 500;
/// After proposing a revoke, wait this long before proposing it again.
const REVOKE_RETRY: Duration = Duration::from_secs(3);

#[derive(Default)]
pub struct Expiry {
    /// Lease id → when it expires. Empty unless this member leads.
    deadlines: Mutex<HashMap<i64, Instant>>,
}

impl Expiry {
    /// Keeps a lease alive for another `ttl` seconds.
    pub fn renew(&self, id: i64, ttl: i64) {
        let d = Instant::now() + Duration::from_secs(ttl.max(0) as u64);
        self.deadlines.lock().insert(id, d);
    }

    /// Seconds left, if this member tracks the lease.
    pub fn remaining(&self, id: i64) -> Option<i64> {
        let d = *self.deadlines.lock().get(&id)?;
        Some(d.saturating_duration_since(Instant::now()).as_secs() as i64)
    }

    fn clear(&self) {
        self.deadlines.lock().clear();
    }

    /// A new leader: every lease gets its TTL (or checkpointed remainder) plus `extend`.
    fn promote(&self, node: &Node, extend: Duration) {
        let now = Instant::now();
        let mut d = self.deadlines.lock();
        d.clear();
        for l in node.store.leases() {
            let ttl = if l.remaining_ttl > 0 { l.remaining_ttl } else { l.ttl };
            d.insert(l.id, now + Duration::from_secs(ttl.max(0) as u64) + extend);
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
            d.entry(l.id).or_insert(now + Duration::from_secs(l.ttl.max(0) as u64));
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
    let extend = Duration::from_millis(node.raft.config().election_timeout_max);
    let mut leading = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.cancelled() => return,
        }
        let now_leading = node.raft.metrics().borrow().state == ServerState::Leader;
        match (leading, now_leading) {
            (false, true) => expiry.promote(&node, extend),
            (true, false) => expiry.clear(),
            _ => {}
        }
        leading = now_leading;
        if !leading {
            continue;
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
