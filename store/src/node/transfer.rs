//! Leader transfer (etcd's MoveLeader).
//!
//! openraft 0.9 has no transfer primitive, and followers refuse votes while their leader
//! lease (the last heartbeat plus the maximum election timeout) lasts. So the leader:
//! holds new proposals, waits until the target has its whole log, asks the other voters
//! not to campaign for a while, stops its own heartbeats, waits out the lease, and asks the
//! target to campaign. The target then wins (it has the longest log and the only
//! campaign). Whatever happens, the leader resumes heartbeats and proposals afterwards.

use std::time::{Duration, Instant};

use openraft::ServerState;

use super::Node;
use crate::error::EtcdError;
use crate::raft::NodeId;

pub const HOLD_ELECTION_PATH: &str = "/keel/hold-election";
pub const CAMPAIGN_PATH: &str = "/keel/campaign";

impl Node {
    pub async fn move_leader(&self, target: NodeId) -> Result<(), EtcdError> {
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return Err(EtcdError::NotLeader);
        }
        if target == self.id {
            return Ok(());
        }
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        if !voters.contains(&target) {
            return Err(EtcdError::BadLeaderTransferee);
        }
        let _hold = self.proposals.write().await;
        let result = self.transfer(target, &voters).await;
        self.raft.runtime_config().heartbeat(true);
        self.raft.runtime_config().elect(true);
        result
    }

    async fn transfer(&self, target: NodeId, voters: &[NodeId]) -> Result<(), EtcdError> {
        let election = Duration::from_millis(self.raft.config().election_timeout_max);
        let deadline = Instant::now() + self.limits.request_timeout;
        // 1. The target must have every entry.
        let mut rx = self.raft.metrics();
        loop {
            let m = rx.borrow().clone();
            let last = m.last_log_index.unwrap_or(0);
            let matched = m.replication.and_then(|r| r.get(&target).cloned().flatten()).map_or(0, |l| l.index);
            if matched >= last {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
                return Err(EtcdError::LeaderTransferTimeout);
            }
        }
        // 2. Nobody but the target campaigns, and the leader goes quiet.
        let hold_ms = (3 * election).as_millis() as u64;
        for v in voters.iter().filter(|v| **v != target && **v != self.id) {
            self.peer_post(*v, HOLD_ELECTION_PATH, hold_ms.to_be_bytes().to_vec()).await;
        }
        self.raft.runtime_config().elect(false);
        self.raft.runtime_config().heartbeat(false);
        // 3. Let the followers' leader lease run out, then the target campaigns.
        tokio::time::sleep(election + Duration::from_millis(self.raft.config().heartbeat_interval)).await;
        if !self.peer_post(target, CAMPAIGN_PATH, Vec::new()).await {
            return Err(EtcdError::LeaderTransferTimeout);
        }
        loop {
            if self.raft.metrics().borrow().current_leader == Some(target) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
                return Err(EtcdError::LeaderTransferTimeout);
            }
        }
    }

    /// On a follower: do not start elections for `ms` milliseconds.
    pub fn hold_election(&self, ms: u64) {
        self.raft.runtime_config().elect(false);
        let raft = self.raft.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            raft.runtime_config().elect(true);
        });
    }

    /// On the transfer target: campaign now.
    pub async fn campaign(&self) -> bool {
        self.raft.runtime_config().elect(true);
        self.raft.trigger().elect().await.is_ok()
    }

    /// POSTs to a peer's transport; true on success.
    async fn peer_post(&self, id: NodeId, path: &str, body: Vec<u8>) -> bool {
        let Some(url) = self.peer_url_of(id) else { return false };
        let sent = self.http.post(format!("{url}{path}")).timeout(Duration::from_secs(2)).body(body).send().await;
        sent.is_ok_and(|r| r.status().is_success())
    }
}
