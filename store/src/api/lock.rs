//! The Lock service (etcd's v3lock): a mutex per name, held by the oldest key under
//! `<name>/` (see `concurrency`).

use tonic::{Request, Response, Status};

use super::concurrency::{
    contender_key, create_revision_is, keys_prefix, op_get, op_put, prefix_end, ranged_kv, Abandon, Local,
};
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::{PutRequest, RangeRequest, TxnRequest};
use crate::proto::v3lockpb::lock_server::Lock;
use crate::proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};

pub struct LockService {
    local: Local,
}

impl LockService {
    pub fn new(local: Local) -> Self {
        LockService { local }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, req: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let local = &self.local.acting_for(&req);
        let r = req.into_inner();
        let lease = local.session(r.lease).await?;
        let prefix = keys_prefix(&r.name);
        let key = contender_key(&prefix, lease);
        // Join the queue unless this lease already has a key there (then reuse it), and
        // read the oldest contender in the same transaction.
        let owner = RangeRequest {
            key: prefix.clone(),
            range_end: prefix_end(&prefix),
            limit: 1,
            sort_order: SortOrder::Ascend as i32,
            sort_target: SortTarget::Create as i32,
            ..Default::default()
        };
        let put = PutRequest { key: key.clone(), lease, ..Default::default() };
        let mine = RangeRequest { key: key.clone(), ..Default::default() };
        let t = TxnRequest {
            compare: vec![create_revision_is(&key, 0)],
            success: vec![op_put(put), op_get(owner.clone())],
            failure: vec![op_get(mine), op_get(owner)],
        };
        // A request abandoned while its put is on the way takes the key back too: it may
        // have been put already (etcd's mutex finds its context cancelled once the put
        // returns, and deletes the key then).
        let mut putting = Abandon::new(local, &key, None);
        let resp = local.txn(t).await.inspect_err(|e| putting.keep_unless_unknown(e))?;
        putting.keep();
        let header = resp.header.unwrap_or_default();
        let my_rev = if resp.succeeded {
            header.revision
        } else {
            ranged_kv(&resp, 0).map_or(header.revision, |kv| kv.create_revision)
        };
        let oldest = ranged_kv(&resp, 1).map(|kv| kv.create_revision);
        if oldest.is_none_or(|rev| rev == my_rev) {
            return Ok(Response::new(LockResponse { header: Some(header), key }));
        }
        let abandon = Abandon::new(local, &key, None);
        let header = local.wait_deletes(&prefix, my_rev - 1).await?;
        abandon.keep();
        Ok(Response::new(LockResponse { header: Some(header), key }))
    }

    async fn unlock(&self, req: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        let header = self.local.acting_for(&req).delete(req.into_inner().key).await?;
        Ok(Response::new(UnlockResponse { header: Some(header) }))
    }
}
