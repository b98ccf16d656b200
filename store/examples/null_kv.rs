//! A calibration server for `etcdctl check perf`: the etcd KV service on Keel's own serving
//! stack (tonic routes in axum, a member's client listener), answering every request at once and storing
//! nothing. What `check perf` reaches against it is the ceiling this machine puts on any
//! server: the load generator and the gRPC work alone, with no Raft, disk or state.
//!
//! `cargo run --release -p keel-store --example null_kv -- 127.0.0.1:28000 127.0.0.1:28010 ...`
//! (one listener per address, all in one process), then
//! `etcdctl --endpoints=... check perf --load=l`.
//!
//! `NULL_KV_WORK_US=n` makes each put also spend `n` µs of CPU on the worker that answers it,
//! before answering: a stand-in for the work a real server does per write, to see how much
//! of it the load generator tolerates on the same cores.

use std::sync::atomic::{AtomicI64, Ordering};

use keel_store::api::keepalive::Keepalive;
use keel_store::proto::etcdserverpb::kv_server::{Kv, KvServer};
use keel_store::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use keel_store::server::{serve_client, ClientListener};
use tonic::{Request, Response, Status};

#[derive(Default)]
struct NullKv {
    revision: AtomicI64,
    /// CPU to spend on each put before answering it.
    work: std::time::Duration,
}

impl NullKv {
    fn header(&self, bump: bool) -> Option<ResponseHeader> {
        let revision = if bump {
            self.revision.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.revision.load(Ordering::Relaxed)
        };
        Some(ResponseHeader { cluster_id: 1, member_id: 1, revision, raft_term: 1 })
    }
}

#[tonic::async_trait]
impl Kv for NullKv {
    async fn range(&self, _: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        Ok(Response::new(RangeResponse { header: self.header(false), ..Default::default() }))
    }

    async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        if !self.work.is_zero() {
            let until = std::time::Instant::now() + self.work;
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        Ok(Response::new(PutResponse { header: self.header(true), prev_kv: None }))
    }

    async fn delete_range(&self, _: Request<DeleteRangeRequest>) -> Result<Response<DeleteRangeResponse>, Status> {
        Ok(Response::new(DeleteRangeResponse { header: self.header(true), ..Default::default() }))
    }

    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(Status::unimplemented("null server: txn"))
    }

    async fn compact(&self, _: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        Err(Status::unimplemented("null server: compact"))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addrs: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(!addrs.is_empty(), "usage: null_kv ADDR...");
    let work = match std::env::var("NULL_KV_WORK_US") {
        Ok(v) => std::time::Duration::from_micros(v.parse()?),
        Err(_) => std::time::Duration::ZERO,
    };
    let kv = NullKv { work, ..NullKv::default() };
    let router = tonic::service::Routes::new(KvServer::new(kv)).into_axum_router();
    let mut tasks = Vec::new();
    for a in addrs {
        let listener = tokio::net::TcpListener::bind(&a).await?;
        let router = router.clone();
        let stop = tokio_util::sync::CancellationToken::new();
        tasks.push(tokio::spawn(serve_client(
            ClientListener(listener),
            router,
            stop,
            Keepalive::etcd_default(),
            |_| None,
        )));
    }
    for t in tasks {
        t.await?;
    }
    Ok(())
}
