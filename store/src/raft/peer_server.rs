//! The peer transport, server side: the routes other members call on `--listen-peer-urls`.
//!
//! `/raft/*` carry openraft's RPCs (bincode); `/keel/forward` (a stream, see
//! `node::forward`), `/keel/propose` (one write per request, for members without the
//! stream) and `/keel/read-index` let a follower hand a client's write or linearizable read
//! to the leader. A member that is not
//! the leader answers `421 Misdirected Request` so the caller looks for the new leader.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use axum::Router;
use futures::StreamExt;
use openraft::error::Fatal;
use openraft::raft::{AppendEntriesRequest, SnapshotResponse, VoteRequest};
use openraft::Snapshot;
use prost::Message;
use tokio::io::AsyncWriteExt;

use super::network::{
    frame_codec, APPEND_PATH, FRAME_APPEND, FRAME_VOTE, MAX_PEER_REQUEST_BYTES, SNAPSHOT_PATH, STREAM_PATH,
    STREAM_PROTOCOL, VOTE_PATH,
};
use super::snapshot::SnapshotFile;
use super::{decode, encode, NodeId, SnapshotMeta, TypeConfig, Vote};
use crate::node::{
    LocalError, MemberChange, Node, CAMPAIGN_PATH, FORWARD_PATH, FORWARD_PROTOCOL, HASH_KV_PATH, HOLD_ELECTION_PATH,
    LEASE_RENEW_PATH, LEASE_TTL_PATH, MEMBER_PATH, PROBING_PATH, PROPOSE_PATH, READ_INDEX_PATH,
};
use crate::proto::keelpb::RaftRequest;

#[derive(Clone)]
pub struct PeerState {
    pub node: Arc<Node>,
    /// Where received snapshots are written before they are installed.
    pub incoming_dir: std::path::PathBuf,
    /// Ends the Raft streams (they outlive the HTTP server's graceful shutdown otherwise).
    pub stop: tokio_util::sync::CancellationToken,
}

pub fn router(state: PeerState) -> Router {
    Router::new()
        .route(APPEND_PATH, post(append))
        .route(STREAM_PATH, post(stream))
        .route(FORWARD_PATH, post(forward_stream))
        .route(VOTE_PATH, post(vote))
        .route(SNAPSHOT_PATH, post(snapshot))
        .route(PROPOSE_PATH, post(propose))
        .route(READ_INDEX_PATH, post(read_index))
        .route(MEMBER_PATH, post(member_change))
        .route(MEMBERS_PATH, axum::routing::get(members))
        .route(PROBING_PATH, axum::routing::get(|| async { crate::node::probe_answer() }))
        .route(HOLD_ELECTION_PATH, post(hold_election))
        .route(CAMPAIGN_PATH, post(campaign))
        .route(LEASE_RENEW_PATH, post(lease_renew))
        .route(LEASE_TTL_PATH, post(lease_ttl))
        .route(HASH_KV_PATH, post(hash_kv))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_PEER_REQUEST_BYTES))
        .with_state(state)
}

fn bincode_response<T: serde::Serialize>(v: &T) -> Response {
    match encode(v) {
        Ok(b) => (StatusCode::OK, b).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn append(State(s): State<PeerState>, body: Bytes) -> Response {
    let req: AppendEntriesRequest<TypeConfig> = match decode(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let started = std::time::Instant::now();
    let n = req.entries.len();
    let res = s.node.raft.append_entries(req).await;
    tracing::debug!(target: "keel_store::raft::rpc", entries = n, micros = started.elapsed().as_micros() as u64, "append handled");
    bincode_response(&res)
}

/// Upgrades the request to a Raft stream (see `network`) and serves it on its own task.
async fn stream(State(s): State<PeerState>, req: axum::extract::Request) -> Response {
    upgrade_to(req, STREAM_PROTOCOL, move |io| serve_stream(s.node, io, s.stop))
}

/// Upgrades the request to a stream of forwarded writes (see `node::forward`).
async fn forward_stream(State(s): State<PeerState>, req: axum::extract::Request) -> Response {
    upgrade_to(req, FORWARD_PROTOCOL, move |io| crate::node::forward::serve(s.node, io, s.stop))
}

type UpgradedIo = hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>;

/// Answers a request asking to upgrade to `protocol` with `101 Switching Protocols` and
/// serves the upgraded connection with `serve` on a task of its own.
fn upgrade_to<F, Fut>(mut req: axum::extract::Request, protocol: &'static str, serve: F) -> Response
where
    F: FnOnce(UpgradedIo) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let asked = req.headers().get(header::UPGRADE).is_some_and(|v| v.as_bytes() == protocol.as_bytes());
    if !asked {
        return (StatusCode::BAD_REQUEST, format!("expected Upgrade: {protocol}")).into_response();
    }
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => serve(hyper_util::rt::TokioIo::new(io)).await,
            Err(e) => tracing::debug!(error = %e, protocol, "stream upgrade failed"),
        }
    });
    switching_to(protocol)
}

/// A `101 Switching Protocols` answer naming `protocol`.
fn switching_to(protocol: &'static str) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("upgrade"));
    resp.headers_mut().insert(header::UPGRADE, header::HeaderValue::from_static(protocol));
    resp
}

/// Answers request frames in order until the peer closes the stream, sends a frame that
/// does not decode, or this member stops.
async fn serve_stream<T>(node: Arc<Node>, io: T, stop: tokio_util::sync::CancellationToken)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut framed = tokio_util::codec::Framed::new(io, frame_codec());
    loop {
        let frame = tokio::select! {
            f = framed.next() => f,
            _ = stop.cancelled() => return,
        };
        let frame = match frame {
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "raft stream read failed");
                return;
            }
            None => return,
        };
        let Some((&kind, body)) = frame.split_first() else { return };
        let reply = match kind {
            FRAME_APPEND => match decode::<AppendEntriesRequest<TypeConfig>>(body) {
                Ok(req) => {
                    let started = std::time::Instant::now();
                    let n = req.entries.len();
                    let res = node.raft.append_entries(req).await;
                    tracing::debug!(target: "keel_store::raft::rpc", entries = n, micros = started.elapsed().as_micros() as u64, "append handled");
                    encode(&res)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable append on a raft stream; closing it");
                    return;
                }
            },
            FRAME_VOTE => match decode::<VoteRequest<NodeId>>(body) {
                Ok(req) => encode(&node.raft.vote(req).await),
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable vote on a raft stream; closing it");
                    return;
                }
            },
            other => {
                tracing::warn!(kind = other, "unknown frame on a raft stream; closing it");
                return;
            }
        };
        let Ok(reply) = reply else { return };
        if futures::SinkExt::send(&mut framed, Bytes::from(reply)).await.is_err() {
            return;
        }
    }
}

async fn vote(State(s): State<PeerState>, body: Bytes) -> Response {
    let req: VoteRequest<NodeId> = match decode(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    bincode_response(&s.node.raft.vote(req).await)
}

/// Receives a streamed snapshot: a length-prefixed (vote, meta) head, then the file.
async fn snapshot(State(s): State<PeerState>, body: Body) -> Response {
    match receive_snapshot(&s, body).await {
        Ok((vote, meta, file)) => {
            let snap = Snapshot { meta, snapshot: Box::new(file) };
            let res: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> =
                s.node.raft.install_full_snapshot(vote, snap).await;
            bincode_response(&res)
        }
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

async fn receive_snapshot(s: &PeerState, body: Body) -> Result<(Vote, SnapshotMeta, SnapshotFile), String> {
    let mut stream = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::new();
    // Read the head.
    let head_len = loop {
        if buf.len() >= 4 {
            let n = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if n > 16 << 20 {
                return Err("snapshot head too large".into());
            }
            if buf.len() >= 4 + n {
                break n;
            }
        }
        match stream.next().await {
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("snapshot stream ended early".into()),
        }
    };
    let (vote, meta): (Vote, SnapshotMeta) = decode(&buf[4..4 + head_len]).map_err(|e| e.to_string())?;
    let path = s.incoming_dir.join(format!("incoming-{}.part", meta.snapshot_id));
    let mut f = tokio::fs::File::create(&path).await.map_err(|e| e.to_string())?;
    f.write_all(&buf[4 + head_len..]).await.map_err(|e| e.to_string())?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        f.write_all(&chunk).await.map_err(|e| e.to_string())?;
    }
    f.sync_all().await.map_err(|e| e.to_string())?;
    Ok((vote, meta, SnapshotFile::at(path)))
}

async fn propose(State(s): State<PeerState>, body: Bytes) -> Response {
    let req = match RaftRequest::decode(body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    match s.node.propose_here(req).await {
        Ok(r) => (StatusCode::OK, r.encode_to_vec()).into_response(),
        Err(LocalError::NotLeader) => StatusCode::MISDIRECTED_REQUEST.into_response(),
        Err(LocalError::Etcd(e)) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn read_index(State(s): State<PeerState>) -> Response {
    match s.node.read_index_here().await {
        Ok(i) => (StatusCode::OK, i.to_be_bytes().to_vec()).into_response(),
        Err(LocalError::NotLeader) => StatusCode::MISDIRECTED_REQUEST.into_response(),
        Err(LocalError::Etcd(e)) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn member_change(State(s): State<PeerState>, body: Bytes) -> Response {
    let change: MemberChange = match decode(&body) {
        Ok(c) => c,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    match s.node.change_member_here(change).await {
        Ok(done) => bincode_response(&Ok::<(u64, u64), crate::error::EtcdError>(done)),
        Err(LocalError::NotLeader) => StatusCode::MISDIRECTED_REQUEST.into_response(),
        Err(LocalError::Etcd(e)) => bincode_response(&Err::<(u64, u64), _>(e)),
    }
}

/// Where a member joining with `--initial-cluster-state existing` learns its id.
pub const MEMBERS_PATH: &str = "/keel/members";

/// The cluster as a joining member needs to see it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ClusterInfo {
    pub cluster_id: u64,
    pub members: Vec<(NodeId, Vec<String>)>,
}

async fn members(State(s): State<PeerState>) -> Json<ClusterInfo> {
    let m = s.node.raft.metrics().borrow().membership_config.clone();
    let members = m.membership().nodes().map(|(id, n)| (*id, n.peer_urls.clone())).collect();
    Json(ClusterInfo { cluster_id: s.node.cluster_id, members })
}

async fn hold_election(State(s): State<PeerState>, body: Bytes) -> StatusCode {
    let ms = body.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0).min(60_000);
    s.node.hold_election(ms);
    StatusCode::OK
}

async fn campaign(State(s): State<PeerState>) -> StatusCode {
    if s.node.campaign().await {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

fn lease_id(body: &Bytes) -> Option<i64> {
    body.as_ref().try_into().ok().map(i64::from_be_bytes)
}

fn i64_answer(r: Result<i64, LocalError>) -> Response {
    match r {
        Ok(v) => (StatusCode::OK, v.to_be_bytes().to_vec()).into_response(),
        Err(LocalError::NotLeader) => StatusCode::MISDIRECTED_REQUEST.into_response(),
        Err(LocalError::Etcd(e)) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn lease_renew(State(s): State<PeerState>, body: Bytes) -> Response {
    match lease_id(&body) {
        Some(id) => i64_answer(s.node.renew_lease_here(id)),
        None => StatusCode::BAD_REQUEST.into_response(),
    }
}

async fn lease_ttl(State(s): State<PeerState>, body: Bytes) -> Response {
    match lease_id(&body) {
        Some(id) => i64_answer(s.node.lease_remaining_here(id)),
        None => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// This member's history hash at the revision in the body (decimal), for a peer's
/// corruption check; 409 when it cannot be taken there (compacted past it, or not reached).
async fn hash_kv(State(s): State<PeerState>, body: Bytes) -> Response {
    let Some(revision) = std::str::from_utf8(&body).ok().and_then(|t| t.parse::<i64>().ok()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match s.node.hash_at(revision).await {
        Ok(h) => axum::Json(h).into_response(),
        Err(e) => (StatusCode::CONFLICT, e.to_string()).into_response(),
    }
}
