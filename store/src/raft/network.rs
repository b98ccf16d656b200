//! The peer transport, client side: Raft RPCs with bincode bodies.
//!
//! AppendEntries and Vote go over a long-lived stream per replication target: an HTTP
//! request to the target's first peer URL upgraded to `keel-raft/1`, then length-delimited
//! frames (`[kind][bincode request]` out, `[bincode result]` back), one exchange at a time,
//! which is how openraft drives each target anyway. A request per RPC through the HTTP
//! client cost a hand-off to its connection task and a fresh server task each way; on one
//! client's sequential puts that was a quarter of a millisecond per RPC. A member that does
//! not serve the stream (404) is called with one HTTP POST per RPC instead.
//!
//! A transport failure is reported to openraft as `Unreachable` (it backs off and retries)
//! and drops the stream, so the next RPC opens a fresh one; an error returned by the remote
//! Raft is passed through as a `RemoteError`. Snapshots stream from their file over HTTP.

use std::future::Future;
use std::time::Duration;

use bytes::BufMut;
use futures::{SinkExt, StreamExt};
use openraft::error::{
    Fatal, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::Snapshot;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::early::Covered;
use super::{decode, encode, Member, NodeId, TypeConfig, Vote};

pub const APPEND_PATH: &str = "/raft/append";
pub const VOTE_PATH: &str = "/raft/vote";
pub const SNAPSHOT_PATH: &str = "/raft/snapshot";
/// The route upgraded to a Raft stream, and the protocol named in its `Upgrade` header.
pub const STREAM_PATH: &str = "/raft/stream";
pub const STREAM_PROTOCOL: &str = "keel-raft/1";
/// The first byte of a stream request frame: which RPC it carries.
pub const FRAME_APPEND: u8 = 1;
pub const FRAME_VOTE: u8 = 2;
/// AppendEntries requests above this are split: openraft counts entries, not bytes, and a
/// batch entry can carry megabytes.
pub const MAX_APPEND_BYTES: usize = 16 << 20;
/// What the peer server accepts per request (the snapshot route streams and has no limit).
pub const MAX_PEER_REQUEST_BYTES: usize = 64 << 20;

/// Creates one [`PeerClient`] per replication target; all share one connection pool.
#[derive(Clone)]
pub struct Network {
    http: reqwest::Client,
    early: super::early::EarlyAppends,
    idle: IdleStreams,
}

/// Streams whose client went away, by target, for the next client to take over. openraft
/// makes a client per replication stream but also one per leadership check (a
/// linearizable read), and opening a stream per check cost a connection and an upgrade.
type IdleStreams = std::sync::Arc<parking_lot::Mutex<std::collections::HashMap<NodeId, Vec<RaftStream>>>>;

/// Idle streams kept per target at most.
const IDLE_PER_TARGET: usize = 4;

impl Network {
    pub fn new() -> Network {
        Network::with_tls(None)
    }

    /// A network whose `https` peer URLs use `tls` (the peers' authority, and this
    /// member's certificate for peers that ask for one).
    pub fn with_tls(tls: Option<rustls::ClientConfig>) -> Network {
        let mut builder = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(1));
        if let Some(config) = tls {
            builder = builder.use_preconfigured_tls(config);
        }
        let http = builder.build().unwrap_or_default();
        let early = super::early::EarlyAppends::new(http.clone());
        Network { http, early, idle: IdleStreams::default() }
    }

    /// Where the leader's log store sends entries ahead of its own fsync.
    pub fn early_appends(&self) -> super::early::EarlyAppends {
        self.early.clone()
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
        self.early.target(target, &base);
        PeerClient {
            target,
            base,
            http: self.http.clone(),
            early: self.early.clone(),
            stream: tokio::sync::Mutex::new(None),
            http_only: false,
            idle: self.idle.clone(),
            peer: PeerMetrics::new(target),
        }
    }
}

/// Frames on a Raft stream: a 4-byte length, then the frame.
pub fn frame_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(MAX_PEER_REQUEST_BYTES).new_codec()
}

pub(crate) type RaftStream = Framed<reqwest::Upgraded, LengthDelimitedCodec>;

/// Opens a Raft stream to the member whose peer URL is `base`. `None` if the member has no
/// stream route.
pub(crate) async fn open_stream(http: &reqwest::Client, base: &str) -> Result<Option<RaftStream>, String> {
    open_upgraded(http, base, STREAM_PATH, STREAM_PROTOCOL).await
}

/// Opens a framed stream to a member: an HTTP request to `path` at peer URL `base`, upgraded
/// to `protocol`. `None` if the member has no such route (404).
pub(crate) async fn open_upgraded(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    protocol: &'static str,
) -> Result<Option<RaftStream>, String> {
    let resp = http
        .post(format!("{base}{path}"))
        .header(reqwest::header::CONNECTION, "upgrade")
        .header(reqwest::header::UPGRADE, protocol)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match resp.status() {
        reqwest::StatusCode::SWITCHING_PROTOCOLS => {
            let io = resp.upgrade().await.map_err(|e| e.to_string())?;
            Ok(Some(Framed::new(io, frame_codec())))
        }
        reqwest::StatusCode::NOT_FOUND => Ok(None),
        s => Err(format!("peer answered {s} to a stream upgrade")),
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
    /// Answers to early requests, which can stand in for an append (see [`super::early`]).
    early: super::early::EarlyAppends,
    /// The open stream to the target, if any (behind a lock only because openraft wants the
    /// client `Sync`, which the upgraded connection is not; there is never contention).
    stream: tokio::sync::Mutex<Option<RaftStream>>,
    /// The target does not serve streams: one HTTP request per RPC.
    http_only: bool,
    /// Where the stream goes when this client does, and where it may come from.
    idle: IdleStreams,
    peer: PeerMetrics,
}

/// etcd's per-peer series, labelled with the target's member ID in hex: the round trip
/// of heartbeats (appends with no entries: no disk write on the way), and the RPCs that
/// failed.
struct PeerMetrics {
    round_trip: prometheus::Histogram,
    failures: prometheus::IntCounter,
}

impl PeerMetrics {
    fn new(target: NodeId) -> PeerMetrics {
        let to = format!("{target:x}");
        let hot = &crate::metrics::HOT;
        PeerMetrics {
            round_trip: hot.peer_round_trip.with_label_values(&[to.as_str()]),
            failures: hot.peer_sent_failures.with_label_values(&[to.as_str()]),
        }
    }
}

impl Drop for PeerClient {
    fn drop(&mut self) {
        // Only a stream in step (no exchange cut short) is ever left in the slot.
        if let Some(stream) = self.stream.get_mut().take() {
            let mut idle = self.idle.lock();
            let streams = idle.entry(self.target).or_default();
            if streams.len() < IDLE_PER_TARGET {
                streams.push(stream);
            }
        }
    }
}

/// What a stream exchange came to.
enum Exchanged {
    Reply(bytes::BytesMut),
    /// The target answered the upgrade with 404: it has no stream route.
    NoStream,
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

    /// Sends one frame on the stream (opening it first if needed) and reads the reply. The
    /// stream is out of its slot while in use, so an exchange cut short (an error, or the
    /// caller giving up) drops it instead of leaving a reply unread for the next one. A stream
    /// taken over from an earlier client may have died meanwhile: then the frame goes once more
    /// on a fresh one (a Raft RPC may be delivered twice; AppendEntries and Vote are
    /// idempotent).
    async fn exchange(&self, frame: bytes::Bytes) -> Result<Exchanged, String> {
        let mut slot = self.stream.lock().await;
        let mut current = slot.take();
        let mut reused = false;
        if current.is_none() {
            current = self.idle.lock().get_mut(&self.target).and_then(|s| s.pop());
            reused = current.is_some();
        }
        loop {
            let mut stream = match current.take() {
                Some(s) => s,
                None => match open_stream(&self.http, &self.base).await? {
                    Some(s) => s,
                    None => return Ok(Exchanged::NoStream),
                },
            };
            let reply = match stream.send(frame.clone()).await {
                Ok(()) => match stream.next().await {
                    Some(Ok(reply)) => Ok(reply),
                    Some(Err(e)) => Err(e.to_string()),
                    None => Err("the peer closed the stream".into()),
                },
                Err(e) => Err(e.to_string()),
            };
            match reply {
                Ok(reply) => {
                    *slot = Some(stream);
                    return Ok(Exchanged::Reply(reply));
                }
                Err(_) if reused => reused = false,
                Err(e) => return Err(e),
            }
        }
    }

    /// One RPC, counted as a failed send when it did not reach the target or its answer
    /// did not make sense.
    async fn rpc<Req, Resp, E>(&mut self, kind: u8, path: &str, req: &Req, ttl: Duration) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let res = self.rpc_once(kind, path, req, ttl).await;
        if let Err(RPCError::Unreachable(_) | RPCError::Network(_)) = &res {
            self.peer.failures.inc();
        }
        res
    }

    /// One RPC over the stream, or over HTTP when the target has no stream route.
    async fn rpc_once<Req, Resp, E>(&mut self, kind: u8, path: &str, req: &Req, ttl: Duration) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if self.http_only {
            return self.call(path, req, ttl).await;
        }
        let body = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut frame = bytes::BytesMut::with_capacity(body.len() + 1);
        frame.put_u8(kind);
        frame.extend_from_slice(&body);
        let started = std::time::Instant::now();
        let reply = match tokio::time::timeout(ttl, self.exchange(frame.freeze())).await {
            Ok(Ok(Exchanged::Reply(reply))) => reply,
            Ok(Ok(Exchanged::NoStream)) => {
                self.http_only = true;
                return self.call(path, req, ttl).await;
            }
            // A failed or abandoned exchange has dropped its stream already (see `exchange`).
            Ok(Err(e)) => return Err(RPCError::Unreachable(Unreachable::new(&TransportError(e)))),
            Err(_) => {
                let e = TransportError(format!("no reply within {ttl:?}"));
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
        };
        tracing::debug!(target: "keel_store::raft::rpc", path, size = body.len(), micros = started.elapsed().as_micros() as u64, "peer rpc");
        let res: Result<Resp, RaftError<NodeId, E>> =
            decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
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
        if let Some(last) = rpc.entries.last().map(|e| e.log_id) {
            let wait = option.hard_ttl() / 2;
            if let Covered::Yes = self.early.covered(self.target, &rpc.vote, last, rpc.leader_commit, wait).await {
                return Ok(AppendEntriesResponse::Success);
            }
        }
        let commit = rpc.leader_commit;
        let heartbeat = rpc.entries.is_empty();
        let started = std::time::Instant::now();
        let res = self.rpc(FRAME_APPEND, APPEND_PATH, &rpc, option.hard_ttl()).await;
        if res.is_ok() {
            self.early.told_commit(self.target, commit);
            if heartbeat {
                self.peer.round_trip.observe(started.elapsed().as_secs_f64());
            }
        }
        res
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.rpc(FRAME_VOTE, VOTE_PATH, &rpc, option.hard_ttl()).await
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
        // A deferred view is written out now, on its own thread (the only time a snapshot's
        // file is written on this member).
        let mut data = snapshot.snapshot;
        data.ready().await.map_err(|e| unreachable(&format!("writing the snapshot: {e}")))?;
        let file = tokio::fs::File::open(&data.path).await.map_err(|e| unreachable(&e))?;
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
