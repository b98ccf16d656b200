//! Membership changes with etcd's semantics: MemberAdd (voter or learner), MemberPromote,
//! MemberRemove, MemberUpdate. They run on the leader (a follower forwards them) as
//! openraft membership changes (joint consensus); each returns once the new membership is
//! applied locally, so a following member list shows it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};

use super::{LocalError, Node};
use crate::error::EtcdError;
use crate::raft::{decode, encode, ids, Member, NodeId};

pub const MEMBER_PATH: &str = "/keel/member";

/// A membership change as forwarded between members.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MemberChange {
    Add { peer_urls: Vec<String>, learner: bool },
    Promote { id: NodeId },
    Remove { id: NodeId },
    Update { id: NodeId, peer_urls: Vec<String> },
}

/// A learner may be promoted once it has this fraction of the leader's log (etcd: 90%).
const LEARNER_READY_PERCENT: u64 = 90;

/// The majority of `voters`.
fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

fn valid_peer_urls(urls: &[String]) -> Result<Vec<String>, EtcdError> {
    if urls.is_empty() {
        return Err(EtcdError::MemberBadUrls);
    }
    urls.iter()
        .map(|u| match url::Url::parse(u) {
            Ok(p) if matches!(p.scheme(), "http" | "https") && p.host_str().is_some() && p.port().is_some() => {
                Ok(u.trim_end_matches('/').to_string())
            }
            _ => Err(EtcdError::MemberBadUrls),
        })
        .collect()
}

impl Node {
    /// Applies a membership change, forwarding it to the leader if needed. Returns the id
    /// of the member concerned (the new id for an add) once this member has applied the
    /// change too, so that the member list it answers with shows it.
    pub async fn change_member(&self, change: MemberChange) -> Result<NodeId, EtcdError> {
        let deadline = Instant::now() + self.limits.request_timeout;
        loop {
            match self.change_member_here(change.clone()).await {
                Ok((id, _)) => return Ok(id),
                Err(LocalError::Etcd(e)) => return Err(e),
                Err(LocalError::NotLeader) => {}
            }
            let leader = self.await_leader(deadline).await?;
            if leader != self.id {
                if let Some(r) = self.forward_member_change(leader, &change, deadline).await {
                    let (id, index) = r?;
                    tokio::time::timeout_at(deadline.into(), self.applied.wait_for(index))
                        .await
                        .map_err(|_| EtcdError::Timeout)?;
                    return Ok(id);
                }
            }
            if Instant::now() >= deadline {
                return Err(EtcdError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn forward_member_change(
        &self,
        leader: NodeId,
        change: &MemberChange,
        deadline: Instant,
    ) -> Option<Result<(NodeId, u64), EtcdError>> {
        let body = self.peer_call(leader, MEMBER_PATH, encode(change).ok()?, deadline).await?;
        decode::<Result<(NodeId, u64), EtcdError>>(&body).ok()
    }

    /// On the leader: carries out the change and returns the member's id with the log index
    /// of the new membership, once applied here. `NotLeader` elsewhere.
    pub async fn change_member_here(&self, change: MemberChange) -> Result<(NodeId, u64), LocalError> {
        if self.raft.metrics().borrow().state != ServerState::Leader {
            return Err(LocalError::NotLeader);
        }
        let membership = self.raft.metrics().borrow().membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let nodes: BTreeMap<NodeId, Member> = membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
        let etcd = |e| Err(LocalError::Etcd(e));
        let mut promote = None;
        let (id, changes) = match change {
            MemberChange::Add { peer_urls, learner } => {
                let urls = valid_peer_urls(&peer_urls).map_err(LocalError::Etcd)?;
                if nodes.values().any(|n| n.peer_urls.iter().any(|u| urls.contains(u))) {
                    return etcd(EtcdError::PeerUrlExist);
                }
                let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                let id = ids::member_id(&urls, &self.cluster_token, Some(now));
                if nodes.contains_key(&id) {
                    return etcd(EtcdError::MemberExist);
                }
                let node = Member { name: String::new(), peer_urls: urls };
                if learner {
                    (id, ChangeMembers::AddNodes(BTreeMap::from([(id, node)])))
                } else if voters.len() == 1 {
                    // A one-member cluster growing (restored, or forced to one member):
                    // etcd takes the new voter at once. Here a new voter must ack the new
                    // configuration before it commits, which it cannot before it runs, so
                    // the member joins as a learner now and becomes a voter once it has
                    // caught up; the one member keeps its quorum meanwhile.
                    promote = Some(id);
                    (id, ChangeMembers::AddNodes(BTreeMap::from([(id, node)])))
                } else {
                    if !self.enough_started(voters.len() + 1) {
                        return etcd(EtcdError::MemberNotEnoughStarted);
                    }
                    (id, ChangeMembers::AddVoters(BTreeMap::from([(id, node)])))
                }
            }
            MemberChange::Promote { id } => {
                if !nodes.contains_key(&id) {
                    return etcd(EtcdError::MemberNotFound);
                }
                if voters.contains(&id) {
                    return etcd(EtcdError::MemberNotLearner);
                }
                if !self.learner_ready(id) {
                    return etcd(EtcdError::LearnerNotReady);
                }
                (id, ChangeMembers::AddVoterIds(BTreeSet::from([id])))
            }
            MemberChange::Remove { id } => {
                if !nodes.contains_key(&id) {
                    return etcd(EtcdError::MemberNotFound);
                }
                if voters.contains(&id) {
                    if !self.enough_started_without(id, voters.len() - 1) {
                        return etcd(EtcdError::MemberNotEnoughStarted);
                    }
                    (id, ChangeMembers::RemoveVoters(BTreeSet::from([id])))
                } else {
                    (id, ChangeMembers::RemoveNodes(BTreeSet::from([id])))
                }
            }
            MemberChange::Update { id, peer_urls } => {
                let urls = valid_peer_urls(&peer_urls).map_err(LocalError::Etcd)?;
                let Some(old) = nodes.get(&id) else { return etcd(EtcdError::MemberNotFound) };
                if nodes.iter().any(|(other, n)| *other != id && n.peer_urls.iter().any(|u| urls.contains(u))) {
                    return etcd(EtcdError::PeerUrlExist);
                }
                let node = Member { name: old.name.clone(), peer_urls: urls };
                (id, ChangeMembers::SetNodes(BTreeMap::from([(id, node)])))
            }
        };
        match self.raft.change_membership(changes, false).await {
            Ok(resp) => {
                if let Some(id) = promote {
                    tokio::spawn(promote_when_caught_up(self.raft.clone(), id));
                }
                self.applied.wait_for(resp.log_id.index).await;
                Ok((id, resp.log_id.index))
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(LocalError::NotLeader),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(LocalError::Etcd(EtcdError::Internal(e.to_string())))
            }
            Err(RaftError::Fatal(_)) => Err(LocalError::Etcd(EtcdError::Stopped)),
        }
    }

    /// Members (the leader and the followers whose log is close to the leader's) that are
    /// replicating now.
    fn started_voters(&self, except: Option<NodeId>) -> usize {
        let m = self.raft.metrics().borrow().clone();
        let last = m.last_log_index.unwrap_or(0);
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        let Some(repl) = m.replication else { return 0 };
        voters
            .iter()
            .filter(|v| Some(**v) != except)
            .filter(|v| {
                **v == self.id || repl.get(v).cloned().flatten().is_some_and(|l| last.saturating_sub(l.index) < 1000)
            })
            .count()
    }

    /// etcd's strict reconfiguration check: after the change, the started members must
    /// still be a quorum of the voters.
    fn enough_started(&self, voters_after: usize) -> bool {
        self.started_voters(None) >= quorum(voters_after)
    }

    fn enough_started_without(&self, removed: NodeId, voters_after: usize) -> bool {
        self.started_voters(Some(removed)) >= quorum(voters_after)
    }

    fn learner_ready(&self, id: NodeId) -> bool {
        let m = self.raft.metrics().borrow().clone();
        let last = m.last_log_index.unwrap_or(0);
        let matched = m.replication.and_then(|r| r.get(&id).cloned().flatten()).map_or(0, |l| l.index);
        matched * 100 >= last * LEARNER_READY_PERCENT
    }
}

/// Makes learner `id` a voter once it has caught up, while this member leads (see the
/// one-member case of `change_member_here`). Gives up if it is removed, promoted by
/// someone, or leadership moves, or after ten minutes.
async fn promote_when_caught_up(raft: crate::raft::Raft, id: NodeId) {
    let mut rx = raft.metrics();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        let m = rx.borrow_and_update().clone();
        let membership = m.membership_config.membership();
        if m.state != ServerState::Leader
            || membership.get_node(&id).is_none()
            || membership.voter_ids().any(|v| v == id)
        {
            return;
        }
        let last = m.last_log_index.unwrap_or(0);
        let matched = m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map_or(0, |l| l.index);
        if matched > 0 && matched * 100 >= last * LEARNER_READY_PERCENT {
            match raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false).await {
                Ok(_) => return,
                Err(e) => tracing::warn!(member = %format!("{id:x}"), error = %e, "promoting the new member"),
            }
        }
        if tokio::time::timeout_at(give_up, rx.changed()).await.map_or(true, |r| r.is_err()) {
            return;
        }
    }
}
