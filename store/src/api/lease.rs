//! The Lease service: Grant, Revoke, KeepAlive (a stream), TimeToLive, Leases.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::EtcdError;
use crate::lease::MAX_LEASE_TTL;
use crate::node::Node;
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};
use crate::proto::keelpb::raft_request::Command;
use crate::proto::keelpb::raft_response::Result as Outcome;

pub struct LeaseService {
    node: Arc<Node>,
}

impl LeaseService {
    pub fn new(node: Arc<Node>) -> Self {
        LeaseService { node }
    }
}

/// A lease id the way etcd picks one: random, positive, non-zero.
fn new_lease_id() -> i64 {
    loop {
        let id = rand::random::<i64>() & i64::MAX;
        if id != 0 {
            return id;
        }
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(&self, req: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        let who = self.node.who_sent(&req).await?;
        let mut r = req.into_inner();
        if r.ttl > MAX_LEASE_TTL {
            return Err(EtcdError::LeaseTtlTooLarge.into());
        }
        if r.id == 0 {
            r.id = new_lease_id();
        }
        let id = r.id;
        let cmd = Command::LeaseGrant(r);
        self.node.check_quota(&cmd).await?;
        match self.node.propose_as(cmd, &who).await?.result {
            Some(Outcome::LeaseGrant(mut g)) => {
                // On the leader, the deadline starts now rather than at the next expiry tick.
                let _ = self.node.renew_lease_here(id);
                self.node.fill(&mut g.header, 0);
                Ok(Response::new(g))
            }
            _ => Err(EtcdError::Internal("unexpected apply result".into()).into()),
        }
    }

    async fn lease_revoke(&self, req: Request<LeaseRevokeRequest>) -> Result<Response<LeaseRevokeResponse>, Status> {
        let who = self.node.who_sent(&req).await?;
        let r = self.node.propose_as(Command::LeaseRevoke(req.into_inner()), &who).await?;
        Ok(Response::new(LeaseRevokeResponse { header: Some(self.node.header(r.revision)) }))
    }

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let node = self.node.clone();
        tokio::spawn(async move {
            while let Some(Ok(ka)) = inbound.next().await {
                let resp = match node.renew_lease(ka.id).await {
                    Ok(ttl) => Ok(LeaseKeepAliveResponse {
                        header: Some(node.header(node.store.current_revision())),
                        id: ka.id,
                        ttl,
                    }),
                    Err(e) => Err(Status::from(e)),
                };
                if tx.send(resp).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let n = &self.node;
        let who = n.who_sent(&req).await?;
        let r = req.into_inner();
        let remaining = n.lease_remaining(r.id).await?;
        let header = Some(n.header(n.store.current_revision()));
        let Some(lease) = n.store.lease(r.id).filter(|_| remaining >= 0) else {
            return Ok(Response::new(LeaseTimeToLiveResponse { header, id: r.id, ttl: -1, ..Default::default() }));
        };
        let keys: Vec<_> = if r.keys { lease.keys.iter().cloned().collect() } else { Vec::new() };
        n.auth.check_lease_keys_readable(&who, &keys)?;
        Ok(Response::new(LeaseTimeToLiveResponse { header, id: r.id, ttl: remaining, granted_ttl: lease.ttl, keys }))
    }

    async fn lease_leases(&self, _req: Request<LeaseLeasesRequest>) -> Result<Response<LeaseLeasesResponse>, Status> {
        let n = &self.node;
        let leases = n.store.lease_ids().into_iter().map(|id| LeaseStatus { id }).collect();
        Ok(Response::new(LeaseLeasesResponse { header: Some(n.header(n.store.current_revision())), leases }))
    }
}
