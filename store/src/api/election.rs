//! The Election service (etcd's v3election): the oldest key under `<name>/` leads, its
//! value the leader's proclamation (see `concurrency`).

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::concurrency::{
    contender_key, create_revision_is, keys_prefix, op_get, op_put, prefix_end, ranged_kv, Abandon, Local,
};
use crate::proto::etcdserverpb::{PutRequest, RangeRequest, ResponseHeader, TxnRequest};
use crate::proto::mvccpb::event::EventType;
use crate::proto::v3electionpb::election_server::Election;
use crate::proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest, ProclaimResponse,
    ResignRequest, ResignResponse,
};

/// etcd's errors here are plain Go errors, which gRPC reports as Unknown with their text.
fn not_leader() -> Status {
    Status::unknown("election: not leader")
}

fn no_leader() -> Status {
    Status::unknown("election: no leader")
}

fn missing_leader_key() -> Status {
    Status::unknown("\"leader\" field must be provided")
}

pub struct ElectionService {
    local: Local,
}

impl ElectionService {
    pub fn new(local: Local) -> Self {
        ElectionService { local }
    }
}

/// Proclaims `value` as the leader holding `key` (created at `rev`); not the leader if the
/// key is gone or was made again since.
async fn proclaim(local: &Local, key: &Bytes, rev: i64, value: Bytes) -> Result<ResponseHeader, Status> {
    let put = PutRequest { key: key.clone(), value, ignore_lease: true, ..Default::default() };
    let t = TxnRequest { compare: vec![create_revision_is(key, rev)], success: vec![op_put(put)], failure: vec![] };
    let resp = local.txn(t).await?;
    if !resp.succeeded {
        return Err(not_leader());
    }
    Ok(resp.header.unwrap_or_default())
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(&self, req: Request<CampaignRequest>) -> Result<Response<CampaignResponse>, Status> {
        let local = &self.local.acting_for(&req);
        let r = req.into_inner();
        let lease = local.session(r.lease).await?;
        let prefix = keys_prefix(&r.name);
        let key = contender_key(&prefix, lease);
        let put = PutRequest { key: key.clone(), value: r.value.clone(), lease, ..Default::default() };
        let mine = RangeRequest { key: key.clone(), ..Default::default() };
        let t = TxnRequest {
            compare: vec![create_revision_is(&key, 0)],
            success: vec![op_put(put)],
            failure: vec![op_get(mine)],
        };
        // A request abandoned while its put is on the way takes the key back too (see the
        // lock's).
        let mut putting = Abandon::new(local, &key, None);
        let resp = local.txn(t).await.inspect_err(|e| putting.keep_unless_unknown(e))?;
        putting.keep();
        let header = resp.header.unwrap_or_default();
        // If this lease already campaigns here, it keeps its place (and proclaims the new
        // value below).
        let existing = if resp.succeeded { None } else { ranged_kv(&resp, 0).cloned() };
        let rev = existing.as_ref().map_or(header.revision, |kv| kv.create_revision);
        let abandon = Abandon::new(local, &key, Some(rev));
        if existing.is_some_and(|kv| kv.value != r.value) {
            proclaim(local, &key, rev, r.value.clone()).await?;
        }
        let waited = local.wait_deletes(&prefix, rev - 1).await;
        // Given up only if the caller went away (this future is dropped): a failed wait
        // leaves the key, as etcd's does.
        abandon.keep();
        waited?;
        let leader = LeaderKey { name: r.name, key, rev, lease };
        Ok(Response::new(CampaignResponse { header: Some(header), leader: Some(leader) }))
    }

    async fn proclaim(&self, req: Request<ProclaimRequest>) -> Result<Response<ProclaimResponse>, Status> {
        let local = self.local.acting_for(&req);
        let r = req.into_inner();
        let leader = r.leader.ok_or_else(missing_leader_key)?;
        let header = proclaim(&local, &leader.key, leader.rev, r.value).await?;
        Ok(Response::new(ProclaimResponse { header: Some(header) }))
    }

    async fn leader(&self, req: Request<LeaderRequest>) -> Result<Response<LeaderResponse>, Status> {
        let local = self.local.acting_for(&req);
        let prefix = keys_prefix(&req.into_inner().name);
        let (kv, header) = local.first_created(&prefix).await?;
        let kv = kv.ok_or_else(no_leader)?;
        Ok(Response::new(LeaderResponse { header: Some(header), kv: Some(kv) }))
    }

    async fn observe(&self, req: Request<LeaderRequest>) -> Result<Response<ObserveStream>, Status> {
        let local = self.local.acting_for(&req);
        let prefix = keys_prefix(&req.into_inner().name);
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            if let Err(e) = observe(&local, &prefix, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn resign(&self, req: Request<ResignRequest>) -> Result<Response<ResignResponse>, Status> {
        let local = self.local.acting_for(&req);
        let leader = req.into_inner().leader.ok_or_else(missing_leader_key)?;
        let header = local.delete_if_created_at(&leader.key, leader.rev).await?;
        Ok(Response::new(ResignResponse { header: Some(header) }))
    }
}

/// Sends each leader in turn, and each new value of its key, until the receiver goes
/// away (etcd's `Election.Observe`). Returns early, with nothing more to say, then.
async fn observe(
    local: &Local,
    prefix: &Bytes,
    tx: &mpsc::Sender<Result<LeaderResponse, Status>>,
) -> Result<(), Status> {
    loop {
        let (oldest, header) = local.first_created(prefix).await?;
        let (mut header, kv) = match oldest {
            Some(kv) => (header, kv),
            None => {
                // Nobody leads: wait for the first key put under the prefix.
                let mut w = local.watch(prefix.clone(), prefix_end(prefix), header.revision);
                loop {
                    let (h, events) = w.next_events().await?;
                    let put = events.into_iter().find(|e| e.r#type == EventType::Put as i32).and_then(|e| e.kv);
                    if let Some(kv) = put {
                        break (ResponseHeader { revision: kv.mod_revision, ..h }, kv);
                    }
                }
            }
        };
        if tx.send(Ok(LeaderResponse { header: Some(header), kv: Some(kv.clone()) })).await.is_err() {
            return Ok(());
        }
        // Follow the leader's key: each new value, until it is deleted.
        let mut w = local.watch(kv.key.clone(), Bytes::new(), header.revision + 1);
        'leader: loop {
            let (h, events) = w.next_events().await?;
            header = h;
            for e in events {
                if e.r#type == EventType::Delete as i32 {
                    break 'leader;
                }
                let resp = LeaderResponse { header: Some(header), kv: e.kv };
                if tx.send(Ok(resp)).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}
