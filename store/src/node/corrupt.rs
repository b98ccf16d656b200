//! Corruption checks, as etcd's: members compare the hashes of their histories
//! ([`crate::mvcc::store::MvccStore::hash_kv`]) at one revision over the peer network.
//!
//! - At start-up (`--experimental-initial-corrupt-check`), before serving clients, a
//!   member compares its hash with every peer's at its own revision, and refuses to start
//!   if one differs where both have compacted to the same point.
//! - Periodically (`--experimental-corrupt-check-time`), the leader compares every
//!   follower's hash with its own, and raises a CORRUPT alarm for a follower that differs.
//!   While it is raised, every member refuses writes ("etcdserver: corrupt cluster") until
//!   an operator clears it.
//!
//! A peer asked for a revision it has not applied yet waits for it a moment; one that has
//! compacted past it, or does not answer, is left out of the comparison, as in etcd.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Node;
use crate::error::EtcdError;
use crate::proto::etcdserverpb::{alarm_request::AlarmAction, AlarmRequest, AlarmType};
use crate::proto::keelpb::raft_request::Command;

/// The peer route that answers with a member's hash at a revision.
pub const HASH_KV_PATH: &str = "/keel/hashkv";

/// How long a peer waits to reach the revision it is asked about.
const CATCH_UP: Duration = Duration::from_secs(2);

/// A member's hash at a revision, and the compaction point it was taken at.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerHash {
    pub member: u64,
    pub revision: i64,
    pub hash: u32,
    pub compact_revision: i64,
}

impl Node {
    /// This member's hash at `revision` (0: now), waiting a moment for a revision it has
    /// not applied yet.
    pub async fn hash_at(&self, revision: i64) -> Result<PeerHash, EtcdError> {
        let deadline = Instant::now() + CATCH_UP;
        loop {
            match self.store.hash_kv(revision) {
                Ok((hash, current, compact_revision)) => {
                    let revision = if revision == 0 { current } else { revision };
                    return Ok(PeerHash { member: self.id, revision, hash, compact_revision });
                }
                Err(EtcdError::FutureRev) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The other voters' hashes at `revision`: those that answered. The voters are those
    /// of the membership this member has applied: at start-up, before Raft has loaded it,
    /// Raft's own view of the membership is still empty.
    async fn peer_hashes(&self, revision: i64) -> Vec<PeerHash> {
        let peers: Vec<(u64, String)> = {
            let stored = self.applied.membership.read();
            let membership = stored.membership();
            membership
                .voter_ids()
                .filter(|id| *id != self.id)
                .filter_map(|id| {
                    let url = membership.get_node(&id)?.peer_urls.first()?.trim_end_matches('/').to_string();
                    Some((id, url))
                })
                .collect()
        };
        let body = revision.to_string().into_bytes();
        let timeout = CATCH_UP + Duration::from_secs(1);
        let asks = peers.into_iter().map(|(id, url)| {
            let body = body.clone();
            async move {
                let sent = self.http.post(format!("{url}{HASH_KV_PATH}")).timeout(timeout).body(body).send().await;
                let answer = match sent {
                    Ok(r) if r.status().is_success() => r.bytes().await.ok(),
                    _ => None,
                };
                match answer.map(|b| serde_json::from_slice::<PeerHash>(&b)) {
                    Some(Ok(h)) => Some(h),
                    Some(Err(e)) => {
                        tracing::warn!(peer = %format!("{id:x}"), error = %e, "unreadable hash from a peer");
                        None
                    }
                    None => {
                        tracing::warn!(peer = %format!("{id:x}"), "no hash from a peer (down, slow, or compacted past the revision)");
                        None
                    }
                }
            }
        });
        futures::future::join_all(asks).await.into_iter().flatten().collect()
    }

    /// The peers whose history differs from this member's (both compacted to the same
    /// point; otherwise the hashes cover different revisions and say nothing).
    async fn mismatched_peers(&self) -> Result<Vec<PeerHash>, EtcdError> {
        let mine = self.hash_at(0).await?;
        let peers = self.peer_hashes(mine.revision).await;
        Ok(peers
            .into_iter()
            .filter(|p| p.hash != mine.hash && p.compact_revision == mine.compact_revision)
            .inspect(|p| {
                tracing::error!(
                    peer = %format!("{:x}", p.member),
                    revision = mine.revision,
                    local = mine.hash,
                    remote = p.hash,
                    "a peer's history differs from this member's"
                );
            })
            .collect())
    }

    /// The start-up check, once this member has applied its log through `committed`: an
    /// error if any peer's history differs.
    pub async fn initial_corrupt_check(&self, committed: u64) -> Result<(), String> {
        if tokio::time::timeout(Duration::from_secs(30), self.applied.wait_for(committed)).await.is_err() {
            return Err(format!("{:x} could not apply its log through {committed} to check it", self.id));
        }
        let bad = self.mismatched_peers().await.map_err(|e| e.to_string())?;
        if bad.is_empty() {
            tracing::info!("initial corruption check passed");
            return Ok(());
        }
        Err(format!("{:x} found data inconsistency with peers", self.id))
    }

    /// The periodic check, every `every` while this member leads, until `stop`.
    pub async fn corrupt_checks(self: Arc<Self>, every: Duration, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if self.leader() != Some(self.id) {
                continue;
            }
            let bad = match self.mismatched_peers().await {
                Ok(bad) => bad,
                Err(e) => {
                    tracing::warn!(error = %e, "corruption check");
                    continue;
                }
            };
            for p in bad {
                let alarm = AlarmRequest {
                    action: AlarmAction::Activate as i32,
                    member_id: p.member,
                    alarm: AlarmType::Corrupt as i32,
                };
                if let Err(e) = self.propose(Command::Alarm(alarm)).await {
                    tracing::warn!(error = %e, "raising a CORRUPT alarm");
                }
            }
        }
    }
}
