//! The KV service: Range, Put, DeleteRange, Txn, Compact.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::validate;
use crate::auth::{AuthStore, Who};
use crate::error::EtcdError;
use crate::node::Node;
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use crate::proto::keelpb::raft_request::Command;
use crate::proto::keelpb::raft_response::Result as Outcome;

pub struct KvService {
    node: Arc<Node>,
}

impl KvService {
    pub fn new(node: Arc<Node>) -> Self {
        KvService { node }
    }
}

fn unexpected() -> Status {
    EtcdError::Internal("unexpected apply result".into()).into()
}

/// etcd's doSerialize: a read authorised at one auth revision and served after a change
/// fails, so a permission revoked meanwhile is not overstepped.
fn check_unchanged(auth: &AuthStore, who: &Who) -> Result<(), EtcdError> {
    if who.auth_revision != 0 && who.auth_revision != auth.revision() {
        return Err(EtcdError::AuthOldRevision);
    }
    Ok(())
}

/// A transaction that only reads can be served without Raft, like a Range.
fn is_read_only(t: &TxnRequest) -> bool {
    use crate::proto::etcdserverpb::request_op::Request;
    t.success.iter().chain(&t.failure).all(|op| match &op.request {
        Some(Request::RequestRange(_)) | None => true,
        Some(Request::RequestTxn(n)) => is_read_only(n),
        _ => false,
    })
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let who = self.node.who_sent(&req).await?;
        let r = req.into_inner();
        validate::range(&r)?;
        if !r.serializable {
            self.node.read_barrier().await?;
        }
        let auth = &self.node.auth;
        auth.check_read(&who, &r.key, &r.range_end)?;
        let mut resp = self.node.store.range(&r)?;
        // etcd: an auth change during the read and the caller authenticates again.
        check_unchanged(auth, &who)?;
        self.node.fill(&mut resp.header, 0);
        Ok(Response::new(resp))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let who = self.node.who_sent(&req).await?;
        let r = req.into_inner();
        super::check_message_size(&r, self.node.limits.max_request_bytes)?;
        let cmd = Command::Put(r);
        self.node.check_quota(&cmd).await?;
        if let Command::Put(r) = &cmd {
            validate::put(r)?;
        }
        match self.node.propose_as(cmd, &who).await?.result {
            Some(Outcome::Put(mut p)) => {
                self.node.fill(&mut p.header, 0);
                Ok(Response::new(p))
            }
            _ => Err(unexpected()),
        }
    }

    async fn delete_range(&self, req: Request<DeleteRangeRequest>) -> Result<Response<DeleteRangeResponse>, Status> {
        let who = self.node.who_sent(&req).await?;
        let r = req.into_inner();
        validate::delete_range(&r)?;
        match self.node.propose_as(Command::DeleteRange(r), &who).await?.result {
            Some(Outcome::DeleteRange(mut d)) => {
                self.node.fill(&mut d.header, 0);
                Ok(Response::new(d))
            }
            _ => Err(unexpected()),
        }
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let who = self.node.who_sent(&req).await?;
        let r = req.into_inner();
        super::check_message_size(&r, self.node.limits.max_request_bytes)?;
        let cmd = Command::Txn(r);
        // As etcd: every transaction, even one that only reads, is refused over the quota.
        self.node.check_quota(&cmd).await?;
        let Command::Txn(r) = cmd else { return Err(unexpected()) };
        validate::txn(&r, self.node.limits.max_txn_ops)?;
        if is_read_only(&r) {
            self.node.read_barrier().await?;
            let auth = &self.node.auth;
            auth.check_read_txn(&who, &r)?;
            let mut t = self.node.store.read_txn(&r)?;
            check_unchanged(auth, &who)?;
            self.node.fill(&mut t.header, 0);
            return Ok(Response::new(t));
        }
        match self.node.propose_as(Command::Txn(r), &who).await?.result {
            Some(Outcome::Txn(mut t)) => {
                self.node.fill(&mut t.header, 0);
                Ok(Response::new(t))
            }
            _ => Err(unexpected()),
        }
    }

    async fn compact(&self, req: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        let who = self.node.who_sent(&req).await?;
        let r = req.into_inner();
        let (rev, physical) = (r.revision, r.physical);
        match self.node.propose_as(Command::Compaction(r), &who).await?.result {
            Some(Outcome::Compaction(mut c)) => {
                if physical {
                    self.node.store.wait_compacted(rev).await;
                }
                self.node.fill(&mut c.header, 0);
                // etcd reads the key "compaction" for the answer's revision, and counts
                // that read.
                crate::metrics::HOT.mvcc_range.inc();
                Ok(Response::new(c))
            }
            _ => Err(unexpected()),
        }
    }
}
