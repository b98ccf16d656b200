//! The Maintenance service: Status, Alarm, Defragment, MoveLeader (what etcdctl's
//! `endpoint status`, `alarm list`, `defrag` and `move-leader` use).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::error::EtcdError;
use crate::node::Node;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse, HashKvRequest, HashKvResponse,
    HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, StatusRequest, StatusResponse,
};
use crate::proto::keelpb::raft_request::Command;
use crate::proto::keelpb::raft_response::Result as Outcome;

/// The etcd version Keel reports. Kubernetes enables watch progress requests (and
/// consistent reads from its cache) only for etcd >= 3.5.13.
pub const ETCD_VERSION: &str = "3.5.17";
/// The cluster version reported by `/version`.
pub const CLUSTER_VERSION: &str = "3.5.0";

pub struct MaintenanceService {
    node: Arc<Node>,
    /// Where backups are staged while they stream.
    backup_dir: std::path::PathBuf,
}

impl MaintenanceService {
    pub fn new(node: Arc<Node>, backup_dir: std::path::PathBuf) -> Self {
        MaintenanceService { node, backup_dir }
    }

    /// Defragment, snapshot, hashes and leader moves are for the root role, as in etcd
    /// (status and alarms are not).
    /// Refusals are etcd's auth package errors, as Unknown (etcd does not translate them).
    async fn admin<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let who = self.node.who_sent(req).await.map_err(|e| e.as_auth_package_error())?;
        self.node.auth.check_admin(&who).map_err(|e| e.as_auth_package_error())
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn status(&self, _req: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let n = &self.node;
        let m = n.raft.metrics().borrow().clone();
        let db = n.store.engine().size() as i64;
        Ok(Response::new(StatusResponse {
            header: Some(n.header(n.store.current_revision())),
            version: ETCD_VERSION.into(),
            db_size: db,
            leader: m.current_leader.unwrap_or(0),
            raft_index: m.last_log_index.unwrap_or(0),
            raft_term: m.current_term,
            raft_applied_index: n.applied.last_applied().map_or(0, |l| l.index),
            // etcd lists the raised alarms in their protobuf text form.
            errors: n
                .store
                .alarms
                .get(AlarmType::None)
                .iter()
                .map(|a| format!("memberID:{} alarm:{} ", a.member_id, a.alarm().as_str_name()))
                .collect(),
            db_size_in_use: db,
            is_learner: n.is_learner(),
            storage_version: String::new(),
            // etcd 3.5's field: etcd 3.4 has none, and its gateway shows none.
            db_size_quota: 0,
            downgrade_info: None,
        }))
    }

    async fn hash_kv(&self, req: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        let n = &self.node;
        self.admin(&req).await?;
        let (hash, current, compacted) = n.store.hash_kv(req.into_inner().revision)?;
        // etcd's compaction point is -1 until the first compaction.
        let compact_revision = if compacted == 0 { -1 } else { compacted };
        Ok(Response::new(HashKvResponse { header: Some(n.header(current)), hash, compact_revision, hash_revision: 0 }))
    }

    /// etcd's `Hash` covers its whole database file; here it is the history's hash at the
    /// current revision (see `hash_kv`), for the same purpose: comparing members.
    async fn hash(&self, req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let n = &self.node;
        self.admin(&req).await?;
        let (hash, current, _) = n.store.hash_kv(0)?;
        Ok(Response::new(HashResponse { header: Some(n.header(current)), hash }))
    }

    /// Every alarm request goes through Raft, listing too, as in etcd. etcd answers
    /// without a header (its maintenance server passes the applier's bare response on):
    /// `alarm list -w json` is `{}` when none is raised.
    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        match self.node.propose(Command::Alarm(req.into_inner())).await?.result {
            Some(Outcome::Alarm(a)) => Ok(Response::new(a)),
            _ => Err(EtcdError::Internal("unexpected apply result".into()).into()),
        }
    }

    async fn snapshot(&self, req: Request<SnapshotRequest>) -> Result<Response<super::backup::SnapshotStream>, Status> {
        self.admin(&req).await?;
        let file = super::backup::save(&self.node, &self.backup_dir).await?;
        Ok(Response::new(super::backup::stream(file).await?))
    }

    async fn move_leader(&self, req: Request<MoveLeaderRequest>) -> Result<Response<MoveLeaderResponse>, Status> {
        let n = &self.node;
        self.admin(&req).await?;
        n.move_leader(req.get_ref().target_id).await?;
        Ok(Response::new(MoveLeaderResponse { header: Some(n.header(n.store.current_revision())) }))
    }

    async fn defragment(&self, req: Request<DefragmentRequest>) -> Result<Response<DefragmentResponse>, Status> {
        self.admin(&req).await?;
        let n = self.node.clone();
        let engine = n.store.engine().clone();
        tokio::task::spawn_blocking(move || engine.compact_all())
            .await
            .map_err(|e| EtcdError::Internal(e.to_string()))?
            .map_err(EtcdError::from)?;
        // The space it freed counts for the very next write.
        n.quota.forget_size();
        Ok(Response::new(DefragmentResponse { header: Some(n.header(n.store.current_revision())) }))
    }
}
