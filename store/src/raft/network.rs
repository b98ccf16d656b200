//! The peer transport, client side: Raft RPCs over HTTP with bincode bodies.
//!
//! Each RPC is a POST to the target's first peer URL. A transport failure is reported to
//! openraft as `Unreachable` (it backs off and retries); an error returned by the remote
//! Raft is passed through as a `RemoteError`. Snapshots stream from their file.

use std::future::Future;
use std::time::Duration;

use openraft::error::{
    Fatal, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::Snapshot;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{decode, encode, Member, NodeId, TypeConfig, Vote};

pub const APPEND_PATH: &str = "/raft/append";
pub const VOTE_PATH: &str = "/raft/vote";
pub const SNAPSHOT_PATH: &str = "/raft/snapshot";
/// AppendEntries requests above this are split: openraft counts entries, not bytes, and a
/// batch entry can carry megabytes.
pub const MAX_APPEND_BYTES: usize = 16 << 20;
/// What the peer server accepts per request (the snapshot route streams and has no limit).
pub const MAX_PEER_REQUEST_BYTES: usize = 64 << 20;

/// Creates one [`PeerClient`] per replication target; all share one connection pool.
#[derive(Clone)]
pub struct Network {
    http: reqwest::Client,
}

impl Network {
    pub fn new() -> Network {
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(1))
            .build()
            .unwrap_or_default();
        Network { http }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

impl Default for Network {
    fn default() -> Self {
        Network::new()
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        let base = node.peer_urls.first().cloned().unwrap_or_default().trim_end_matches('/').to_string();
        PeerClient { target, base, http: self.http.clone() }
    }
}

/// The encoded size of an entry's payload (close enough to its share of the request).
fn entry_size(e: &super::Entry) -> usize {
    use prost::Message;
    match &e.payload {
        openraft::EntryPayload::Normal(cmd) => cmd.0.encoded_len() + 32,
        _ => 256,
    }
}

pub struct PeerClient {
    target: NodeId,
    base: String,
    http: reqwest::Client,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

type RpcResult<T, E> = Result<T, RPCError<NodeId, Member, RaftError<NodeId, E>>>;

impl PeerClient {
    async fn call<Req, Resp, E>(&self, path: &str, req: &Req, ttl: Duration) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let started = std::time::Instant::now();
        let size = body.len();
        let resp = self
            .http
            .post(format!("{}{}", self.base, path))
            .timeout(ttl)
            .body(body)
            .send()
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        if !resp.status().is_success() {
            let e = TransportError(format!("peer answered {}", resp.status()));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        let bytes = resp.bytes().await.map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        tracing::debug!(target: "keel_store::raft::rpc", path, size, micros = started.elapsed().as_micros() as u64, "peer rpc");
        let res: Result<Resp, RaftError<NodeId, E>> =
            decode(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        let n = rpc.entries.len() as u64;
        if n > 1 {
            let size: usize = rpc.entries.iter().map(entry_size).sum();
            if size > MAX_APPEND_BYTES {
                // Ask openraft to resend with about as many entries as fit.
                let fit = (n * MAX_APPEND_BYTES as u64 / size as u64).clamp(1, n - 1);
                return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(fit)));
            }
        }
        self.call(APPEND_PATH, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(VOTE_PATH, &rpc, option.hard_ttl()).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let unreachable =
            |e: &dyn std::fmt::Display| StreamingError::Unreachable(Unreachable::new(&TransportError(e.to_string())));
        let head = encode(&(vote, snapshot.meta.clone())).map_err(|e| unreachable(&e))?;
        let file = tokio::fs::File::open(&snapshot.snapshot.path).await.map_err(|e| unreachable(&e))?;
        let prefix = futures::stream::once(async move {
            let mut b = (head.len() as u32).to_be_bytes().to_vec();
            b.extend_from_slice(&head);
            Ok::<_, std::io::Error>(bytes::Bytes::from(b))
        });
        let body = futures::StreamExt::chain(prefix, tokio_util::io::ReaderStream::new(file));
        let send =
            self.http.post(format!("{}{}", self.base, SNAPSHOT_PATH)).body(reqwest::Body::wrap_stream(body)).send();
        let resp = tokio::select! {
            r = send => r.map_err(|e| unreachable(&e))?,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        if !resp.status().is_success() {
            return Err(unreachable(&format!("peer answered {}", resp.status())));
        }
        let bytes = resp.bytes().await.map_err(|e| unreachable(&e))?;
        let res: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> = decode(&bytes).map_err(|e| unreachable(&e))?;
        res.map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))
    }
}
