//! What the lock and election services are built on, as etcd builds them (its v3lock and
//! v3election servers use `clientv3/concurrency` over an in-process client): the member's
//! own KV, lease and watch services, called as a client would, so every request is
//! validated, replicated or read linearizably, and fails, exactly as a client's would.
//!
//! The recipe is etcd's: a contender puts a key `<name>/<lease in hex>` attached to its
//! lease if it has none yet; contenders are ordered by their keys' create revisions; the
//! oldest holds the lock (or leads), and each other waits for every older key to be
//! deleted (unlocked, resigned, or its lease ended).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tonic::{Request, Status};

use super::kv::KvService;
use super::lease::LeaseService;
use crate::auth::Credentials;
use crate::node::Node;
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::request_op::Request as Op;
use crate::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RangeResponse, RequestOp, ResponseHeader,
    TxnRequest, TxnResponse, WatchCreateRequest, WatchResponse,
};
use crate::proto::mvccpb::event::EventType;
use crate::proto::mvccpb::{Event, KeyValue};
use crate::watch::watcher::Out;
use crate::watch::WatchHub;

/// The TTL of the lease a contender gets when it names none (etcd's default session TTL).
const SESSION_TTL: i64 = 60;

/// etcd's lock and election servers get errors from their in-process client as plain Go
/// errors, which gRPC reports as Unknown with the same text.
fn as_client_error(s: Status) -> Status {
    Status::unknown(s.message())
}

/// The member as its own client.
#[derive(Clone)]
pub struct Local {
    node: Arc<Node>,
    kv: Arc<KvService>,
    lease: Arc<LeaseService>,
    hub: Arc<WatchHub>,
    /// The client this acts for: its requests are checked as that client's.
    creds: Credentials,
}

impl Local {
    pub fn new(node: Arc<Node>, hub: Arc<WatchHub>) -> Local {
        Local {
            kv: Arc::new(KvService::new(node.clone())),
            lease: Arc::new(LeaseService::new(node.clone())),
            node,
            hub,
            creds: Credentials::default(),
        }
    }

    /// This client acting for the sender of a request (its token), as etcd's in-process
    /// client passes the caller's on.
    pub fn acting_for<T>(&self, req: &Request<T>) -> Local {
        Local { creds: Credentials::of(req), ..self.clone() }
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        self.creds.request(msg)
    }

    pub async fn txn(&self, t: TxnRequest) -> Result<TxnResponse, Status> {
        Ok(self.kv.txn(self.request(t)).await.map_err(as_client_error)?.into_inner())
    }

    pub async fn range(&self, r: RangeRequest) -> Result<RangeResponse, Status> {
        Ok(self.kv.range(self.request(r)).await.map_err(as_client_error)?.into_inner())
    }

    pub async fn delete(&self, key: Bytes) -> Result<ResponseHeader, Status> {
        let d = DeleteRangeRequest { key, ..Default::default() };
        let d = self.kv.delete_range(self.request(d)).await.map_err(as_client_error)?;
        Ok(d.into_inner().header.unwrap_or_default())
    }

    /// Deletes `key` if it is still the one created at `rev` (a resign); the header.
    pub async fn delete_if_created_at(&self, key: &Bytes, rev: i64) -> Result<ResponseHeader, Status> {
        let t =
            TxnRequest { compare: vec![create_revision_is(key, rev)], success: vec![op_delete(key)], failure: vec![] };
        Ok(self.txn(t).await?.header.unwrap_or_default())
    }

    /// The lease a contender's key is attached to: `lease`, or a new one if 0 (etcd's
    /// `NewSession` grants one and, on the server, never keeps it alive).
    pub async fn session(&self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let g = LeaseGrantRequest { ttl: SESSION_TTL, id: 0 };
        Ok(self.lease.lease_grant(self.request(g)).await.map_err(as_client_error)?.into_inner().id)
    }

    /// A watch of one key (or a prefix) from `start_revision` on the member's hub.
    pub fn watch(&self, key: Bytes, range_end: Bytes, start_revision: i64) -> LocalWatch {
        let (tx, rx) = mpsc::channel(16);
        let stream = self.hub.open_stream(tx);
        self.hub.create(stream, &WatchCreateRequest { key, range_end, start_revision, ..Default::default() });
        LocalWatch { hub: self.hub.clone(), node: self.node.clone(), stream, rx, ready: VecDeque::new() }
    }

    /// The oldest key under `prefix` (by create revision), and the read's header.
    pub async fn first_created(&self, prefix: &Bytes) -> Result<(Option<KeyValue>, ResponseHeader), Status> {
        let r = self.range(oldest_or_newest(prefix, SortOrder::Ascend, 0)).await?;
        Ok((r.kvs.into_iter().next(), r.header.unwrap_or_default()))
    }

    /// Waits until no key under `prefix` created at or before `max_create_rev` is left;
    /// returns the header of the read that found none (etcd's `waitDeletes`).
    pub async fn wait_deletes(&self, prefix: &Bytes, max_create_rev: i64) -> Result<ResponseHeader, Status> {
        loop {
            let r = self.range(oldest_or_newest(prefix, SortOrder::Descend, max_create_rev)).await?;
            let header = r.header.unwrap_or_default();
            let Some(newest) = r.kvs.into_iter().next() else { return Ok(header) };
            self.wait_delete(newest.key, header.revision).await?;
        }
    }

    /// Waits for `key` to be deleted at `rev` or later.
    async fn wait_delete(&self, key: Bytes, rev: i64) -> Result<(), Status> {
        let mut w = self.watch(key, Bytes::new(), rev);
        loop {
            let r = w.next().await?;
            if r.events.iter().any(|e| e.r#type == EventType::Delete as i32) {
                return Ok(());
            }
        }
    }
}

/// A contender's key, taken back if its request ends before it holds the lock or leads
/// (the client went away, or waiting failed), as etcd's mutex and election take theirs
/// back: deleted, or, given the revision it was created at, deleted only if it is still
/// that key (a resign).
pub struct Abandon {
    local: Local,
    key: Option<(Bytes, Option<i64>)>,
}

impl Abandon {
    pub fn new(local: &Local, key: &Bytes, created_at: Option<i64>) -> Abandon {
        Abandon { local: local.clone(), key: Some((key.clone(), created_at)) }
    }

    /// The request got what it waited for: the key stays.
    pub fn keep(mut self) {
        self.key = None;
    }

    /// After a put that failed: the key was not put, unless the failure leaves that
    /// unknown (no leader, a timeout), when it is taken back to be sure.
    pub fn keep_unless_unknown(&mut self, e: &Status) {
        use tonic::Code;
        if !matches!(e.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled) {
            self.key = None;
        }
    }
}

impl Drop for Abandon {
    fn drop(&mut self) {
        let Some((key, created_at)) = self.key.take() else { return };
        // Not while the runtime itself is going away (the member is stopping).
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let local = self.local.clone();
        runtime.spawn(async move {
            let taken_back = match created_at {
                Some(rev) => local.delete_if_created_at(&key, rev).await,
                None => local.delete(key).await,
            };
            if let Err(e) = taken_back {
                tracing::debug!(error = %e, "taking back an abandoned contender's key");
            }
        });
    }
}

/// The range `etcd`'s `WithFirstCreate` / `WithLastCreate` make: under `prefix`, one key,
/// by create revision; `max_create_rev` > 0 leaves out keys created after it.
fn oldest_or_newest(prefix: &Bytes, order: SortOrder, max_create_rev: i64) -> RangeRequest {
    RangeRequest {
        key: prefix.clone(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: order as i32,
        sort_target: SortTarget::Create as i32,
        max_create_revision: max_create_rev,
        ..Default::default()
    }
}

/// The end of the range of keys starting with `prefix` (etcd's `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end.into();
        }
    }
    // All 0xff (or empty): every key from the prefix on.
    Bytes::from_static(b"\0")
}

/// A contender's key: `<prefix><lease in lowercase hex>`, as etcd formats it.
pub fn contender_key(prefix: &[u8], lease: i64) -> Bytes {
    let mut k = prefix.to_vec();
    k.extend_from_slice(format!("{lease:x}").as_bytes());
    k.into()
}

/// `name` + "/": the prefix a lock's or an election's keys share.
pub fn keys_prefix(name: &[u8]) -> Bytes {
    let mut p = name.to_vec();
    p.push(b'/');
    p.into()
}

/// A compare of `key`'s create revision.
pub fn create_revision_is(key: &Bytes, rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.clone(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
        ..Default::default()
    }
}

pub fn op_put(p: PutRequest) -> RequestOp {
    RequestOp { request: Some(Op::RequestPut(p)) }
}

pub fn op_get(r: RangeRequest) -> RequestOp {
    RequestOp { request: Some(Op::RequestRange(r)) }
}

pub fn op_delete(key: &Bytes) -> RequestOp {
    RequestOp { request: Some(Op::RequestDeleteRange(DeleteRangeRequest { key: key.clone(), ..Default::default() })) }
}

/// The single key a range in a transaction's `index`-th response found.
pub fn ranged_kv(t: &TxnResponse, index: usize) -> Option<&KeyValue> {
    use crate::proto::etcdserverpb::response_op::Response;
    match t.responses.get(index).and_then(|r| r.response.as_ref()) {
        Some(Response::ResponseRange(r)) => r.kvs.first(),
        _ => None,
    }
}

/// A watch on the member's own hub; closed when dropped.
pub struct LocalWatch {
    hub: Arc<WatchHub>,
    node: Arc<Node>,
    stream: u64,
    rx: mpsc::Receiver<Out>,
    ready: VecDeque<WatchResponse>,
}

impl LocalWatch {
    /// The next response with events, headers filled in. A cancelled watch (its start
    /// compacted) is an error, as a client library reports it.
    pub async fn next(&mut self) -> Result<WatchResponse, Status> {
        loop {
            while let Some(r) = self.ready.pop_front() {
                if r.canceled {
                    return Err(as_client_error(crate::error::EtcdError::Compacted.into()));
                }
                if !r.events.is_empty() {
                    return Ok(r);
                }
            }
            let out = self.rx.recv().await.ok_or_else(|| Status::unavailable("watch closed"))?;
            let node = self.node.clone();
            self.ready.extend(out.into_local_responses(&move |h| node.fill(h, 0)));
        }
    }

    /// Events of the next response, with its header.
    pub async fn next_events(&mut self) -> Result<(ResponseHeader, Vec<Event>), Status> {
        let r = self.next().await?;
        Ok((r.header.unwrap_or_default(), r.events))
    }
}

impl Drop for LocalWatch {
    fn drop(&mut self) {
        self.hub.close_stream(self.stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_and_contender_keys_are_etcds() {
        assert_eq!(prefix_end(b"lock/"), Bytes::from_static(b"lock0"));
        assert_eq!(prefix_end(b"a\xff"), Bytes::from_static(b"b"));
        assert_eq!(prefix_end(b"\xff\xff"), Bytes::from_static(b"\0"));
        assert_eq!(contender_key(b"lock/", 0x694d_7c8a_1b2c), Bytes::from_static(b"lock/694d7c8a1b2c"));
        assert_eq!(keys_prefix(b"e"), Bytes::from_static(b"e/"));
    }
}
