//! One running member: the Raft node, its store, and what every API handler needs from
//! them (etcd's `EtcdServer`).
//!
//! - [`Node::propose`] puts a command through Raft and returns what applying it produced.
//!   On a follower it forwards to the leader over the peer transport, so clients may write
//!   to any member. It retries across leader changes until the request deadline.
//! - [`Node::read_barrier`] makes a following local read linearizable: the leader confirms
//!   its leadership with a quorum (read index); a follower asks the leader for that index
//!   and waits until it has applied it.
//! - [`Node::header`] fills the etcd response header.

mod batcher;
mod corrupt;
pub(crate) mod forward;
mod lease;
mod membership;
mod prober;
mod transfer;

pub use batcher::Batcher;
pub use corrupt::{PeerHash, HASH_KV_PATH};
pub use forward::{FORWARD_PATH, FORWARD_PROTOCOL};
pub use lease::{LEASE_RENEW_PATH, LEASE_TTL_PATH};
pub use membership::{MemberChange, MEMBER_PATH};
pub use prober::{probe_answer, PROBING_PATH};
pub use transfer::{CAMPAIGN_PATH, HOLD_ELECTION_PATH};

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::RaftError;
use prost::Message;

use crate::auth::{AuthStore, Credentials, SimpleTokens, Who};
use crate::error::EtcdError;
use crate::mvcc::MvccStore;
use crate::proto::etcdserverpb::ResponseHeader;
use crate::proto::keelpb::raft_request::Command;
use crate::proto::keelpb::raft_response::Result as Outcome;
use crate::proto::keelpb::{RaftRequest, RaftResponse};
use crate::raft::state_machine::Applied;
use crate::raft::{Member, NodeId, Raft};

pub const PROPOSE_PATH: &str = "/keel/propose";
pub const READ_INDEX_PATH: &str = "/keel/read-index";

/// Limits and timing a member enforces on requests.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub request_timeout: Duration,
}

pub struct Node {
    pub id: NodeId,
    pub cluster_id: u64,
    pub name: String,
    pub raft: Raft,
    pub store: Arc<MvccStore>,
    /// Users, roles and tokens.
    pub auth: Arc<AuthStore>,
    /// `--client-cert-auth`: a verified client certificate names a user.
    pub client_cert_auth: bool,
    pub applied: Arc<Applied>,
    pub limits: Limits,
    /// `--quota-backend-bytes`, checked before each write as etcd does.
    pub quota: crate::mvcc::alarms::Quota,
    /// The peer transport's connection pool, for forwarding to the leader.
    pub http: reqwest::Client,
    /// Streams to the leader that forwarded writes go over.
    pub(crate) forwarder: forward::Forwarder,
    /// `--initial-cluster-token`, mixed into the ids of members added later.
    pub cluster_token: String,
    /// Lease deadlines (tracked while this member leads).
    pub expiry: Arc<crate::lease::Expiry>,
    /// Proposals hold this shared; a leader transfer holds it exclusively so that no new
    /// entry keeps the followers' leader lease alive meanwhile.
    pub proposals: Arc<tokio::sync::RwLock<()>>,
    /// Groups concurrent proposals into Raft entries.
    pub batcher: Batcher,
}

/// Why the peer-facing handlers could not serve a forwarded request here.
#[derive(Clone, Debug)]
pub enum LocalError {
    NotLeader,
    Etcd(EtcdError),
}

impl Node {
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader { cluster_id: self.cluster_id, member_id: self.id, revision, raft_term: self.term() }
    }

    /// Fills the identity fields of a header produced by the state machine.
    pub fn fill(&self, h: &mut Option<ResponseHeader>, revision: i64) {
        let rev = h.as_ref().map_or(revision, |h| h.revision);
        *h = Some(self.header(rev));
    }

    /// The first peer URL of a member.
    pub fn peer_url_of(&self, id: NodeId) -> Option<String> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        let node: Option<&Member> = m.membership().get_node(&id);
        node.and_then(|n| n.peer_urls.first().cloned()).map(|u| u.trim_end_matches('/').to_string())
    }

    /// Waits (until `deadline`) for a leader to be known.
    pub(crate) async fn await_leader(&self, deadline: Instant) -> Result<NodeId, EtcdError> {
        let mut rx = self.raft.server_metrics();
        loop {
            if let Some(l) = rx.borrow().current_leader {
                return Ok(l);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(EtcdError::NoLeader);
            }
            match tokio::time::timeout(left, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(EtcdError::Stopped),
                Err(_) => return Err(EtcdError::NoLeader),
            }
        }
    }

    /// Who sent a client request (etcd's AuthInfoFromCtx): the user its token names; with
    /// no token and `--client-cert-auth`, its client certificate's CommonName (a certificate
    /// without one names the user "", who may do nothing); else nobody.
    /// A token this member has not seen may come from an `Authenticate` entry it has not
    /// applied yet: it waits for that entry first. With auth disabled, a request with a
    /// token is refused, as etcd 3.4 refuses it (no token is valid then).
    pub async fn who(&self, creds: &Credentials) -> Result<Who, EtcdError> {
        let Some(token) = creds.token.as_deref() else {
            return Ok(match &creds.cert_name {
                Some(cn) if self.client_cert_auth => Who { username: cn.clone(), auth_revision: self.auth.revision() },
                _ => Who::default(),
            });
        };
        let first = self.auth.who(Some(token));
        let issued = SimpleTokens::index_of(token).unwrap_or(0);
        let seen = self.applied.last_applied().map_or(0, |l| l.index) >= issued;
        if first.is_ok() || seen || self.auth.jwt.is_some() {
            return first;
        }
        let _ = tokio::time::timeout(self.limits.request_timeout, self.applied.wait_for(issued)).await;
        self.auth.who(Some(token))
    }

    /// [`Node::who`] for a gRPC request.
    pub async fn who_sent<T>(&self, req: &tonic::Request<T>) -> Result<Who, EtcdError> {
        self.who(&Credentials::of(req)).await
    }

    /// Puts a client's command through Raft, to be applied if `who` may (see
    /// [`crate::auth`]), and returns its applied outcome.
    pub async fn propose_as(&self, cmd: Command, who: &Who) -> Result<RaftResponse, EtcdError> {
        self.propose_request(RaftRequest { command: Some(cmd), auth: Some(who.clone()) }).await
    }

    /// etcd's quota check before a put, transaction or lease grant: when the write would
    /// take the database past the quota, raises this member's NOSPACE alarm (which caps
    /// every member's writes until cleared) and refuses the write.
    pub async fn check_quota(&self, cmd: &Command) -> Result<(), EtcdError> {
        use crate::proto::etcdserverpb::{alarm_request::AlarmAction, AlarmRequest, AlarmType};
        if self.quota.fits(self.store.engine(), crate::mvcc::alarms::cost(cmd)) {
            return Ok(());
        }
        let raise =
            AlarmRequest { action: AlarmAction::Activate as i32, member_id: self.id, alarm: AlarmType::Nospace as i32 };
        if let Err(e) = self.propose(Command::Alarm(raise)).await {
            tracing::warn!(error = %e, "raising the NOSPACE alarm");
        }
        Err(EtcdError::NoSpace)
    }

    /// Puts a member's own command through Raft (no permission check) and returns its
    /// applied outcome.
    pub async fn propose(&self, cmd: Command) -> Result<RaftResponse, EtcdError> {
        self.propose_request(RaftRequest { command: Some(cmd), auth: None }).await
    }

    async fn propose_request(&self, req: RaftRequest) -> Result<RaftResponse, EtcdError> {
        if req.encoded_len() > self.limits.max_request_bytes {
            return Err(EtcdError::RequestTooLarge);
        }
        // As etcd counts: pending until answered; failed when Raft gave no answer (no
        // leader, a timeout), not when the applied command itself failed.
        let _pending = crate::metrics::Pending::start();
        let answer = self.propose_until_answered(req).await;
        if answer.is_err() {
            crate::metrics::HOT.proposals_failed.inc();
        }
        into_result(answer?)
    }

    async fn propose_until_answered(&self, req: RaftRequest) -> Result<RaftResponse, EtcdError> {
        let deadline = Instant::now() + self.limits.request_timeout;
        loop {
            // A member that knows another leads forwards at once: proposing here first
            // would only go through the batcher and openraft to learn the same.
            match self.leader() {
                Some(leader) if leader != self.id => {
                    if let Some(r) = self.forward_propose(leader, &req, deadline).await? {
                        return Ok(r);
                    }
                }
                _ => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let attempt = tokio::time::timeout(left, self.propose_here(req.clone())).await;
                    match attempt.map_err(|_| EtcdError::Timeout)? {
                        Ok(r) => return Ok(r),
                        Err(LocalError::Etcd(e)) => return Err(e),
                        Err(LocalError::NotLeader) => {}
                    }
                    // Another member leads (or none is known yet): forward on the next turn.
                    if self.await_leader(deadline).await? != self.id {
                        continue;
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(EtcdError::Timeout);
            }
            // The leader changed under us; give the election a moment to settle.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Proposes on this member only; `NotLeader` if it is not the leader.
    pub async fn propose_here(&self, req: RaftRequest) -> Result<RaftResponse, LocalError> {
        let _open = self.proposals.read().await;
        self.batcher.propose(req).await
    }

    /// Proposes on this member only, and calls `then` with the result (`NotLeader` if this
    /// member is not the leader) on whatever task learns it, with no task waiting for it
    /// meanwhile; used for writes forwarded by followers.
    pub(crate) fn propose_here_then(
        self: &Arc<Self>,
        req: RaftRequest,
        then: impl FnOnce(Result<RaftResponse, LocalError>) + Send + 'static,
    ) {
        match self.proposals.clone().try_read_owned() {
            Ok(open) => self.batcher.propose_then(req, move |r| {
                drop(open);
                then(r)
            }),
            // A leader transfer holds proposals: wait for it on a task of its own.
            Err(_) => {
                let node = self.clone();
                tokio::spawn(async move { then(node.propose_here(req).await) });
            }
        }
    }

    /// POSTs `body` to a peer's `path`; `None` if it did not answer 200 (not the leader any
    /// more, unreachable, ...), so the caller looks for the leader again.
    pub(crate) async fn peer_call(
        &self,
        peer: NodeId,
        path: &str,
        body: Vec<u8>,
        deadline: Instant,
    ) -> Option<bytes::Bytes> {
        let url = self.peer_url_of(peer)?;
        let left = deadline.saturating_duration_since(Instant::now());
        let resp = self.http.post(format!("{url}{path}")).timeout(left).body(body).send().await.ok()?;
        if resp.status().as_u16() != 200 {
            return None;
        }
        resp.bytes().await.ok()
    }

    /// Sends the proposal to the leader. `Ok(None)` means "try again" (leader changed).
    async fn forward_propose(
        &self,
        leader: NodeId,
        req: &RaftRequest,
        deadline: Instant,
    ) -> Result<Option<RaftResponse>, EtcdError> {
        let Some(url) = self.peer_url_of(leader) else { return Ok(None) };
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.forwarder.propose(&url, req)).await {
            Ok(forward::Forwarded::Applied(r)) => return Ok(Some(r)),
            Ok(forward::Forwarded::Retry) | Err(_) => return Ok(None),
            Ok(forward::Forwarded::Failed(e)) => return Err(e),
            Ok(forward::Forwarded::NoStream) => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let sent = self.http.post(format!("{url}{PROPOSE_PATH}")).timeout(left).body(req.encode_to_vec()).send().await;
        let Ok(resp) = sent else { return Ok(None) };
        match resp.status().as_u16() {
            200 => {
                let body = resp.bytes().await.map_err(|_| EtcdError::LeaderChanged)?;
                RaftResponse::decode(body).map(Some).map_err(|e| EtcdError::Internal(e.to_string()))
            }
            421 => Ok(None),
            _ => {
                let msg = resp.text().await.unwrap_or_default();
                Err(EtcdError::Internal(msg))
            }
        }
    }

    /// Makes the next local read linearizable.
    pub async fn read_barrier(&self) -> Result<(), EtcdError> {
        let deadline = Instant::now() + self.limits.request_timeout;
        let wait_for = |index: u64| async move {
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::timeout(left, self.applied.wait_for(index)).await.map_err(|_| EtcdError::Timeout)
        };
        loop {
            // As in `propose`: a member that knows another leads asks it at once.
            match self.leader() {
                Some(leader) if leader != self.id => {
                    if let Some(index) = self.forward_read_index(leader, deadline).await {
                        return wait_for(index).await;
                    }
                }
                _ => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let attempt = tokio::time::timeout(left, self.read_index_here()).await;
                    match attempt.map_err(|_| EtcdError::Timeout)? {
                        Ok(index) => return wait_for(index).await,
                        Err(LocalError::Etcd(e)) => return Err(e),
                        Err(LocalError::NotLeader) => {}
                    }
                    if self.await_leader(deadline).await? != self.id {
                        continue;
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(EtcdError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// On the leader: confirms leadership with a quorum and returns the index a read must
    /// wait for.
    pub async fn read_index_here(&self) -> Result<u64, LocalError> {
        match self.raft.get_read_log_id().await {
            Ok((read, _applied)) => Ok(read.map_or(0, |l| l.index)),
            Err(RaftError::APIError(_)) => Err(LocalError::NotLeader),
            Err(RaftError::Fatal(_)) => Err(LocalError::Etcd(EtcdError::Stopped)),
        }
    }

    async fn forward_read_index(&self, leader: NodeId, deadline: Instant) -> Option<u64> {
        let body = self.peer_call(leader, READ_INDEX_PATH, Vec::new(), deadline).await?;
        Some(u64::from_be_bytes(body.as_ref().try_into().ok()?))
    }

    pub fn is_learner(&self) -> bool {
        let m = self.applied.membership.read();
        let membership = m.membership();
        membership.get_node(&self.id).is_some() && !membership.voter_ids().any(|v| v == self.id)
    }
}

/// Turns an applied outcome into the handler's result.
fn into_result(r: RaftResponse) -> Result<RaftResponse, EtcdError> {
    match &r.result {
        Some(Outcome::Error(e)) => Err(EtcdError::from_apply_code(e.code)),
        _ => Ok(r),
    }
}
