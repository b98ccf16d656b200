//! Forwarding a follower's writes to the leader over one long-lived stream.
//!
//! A follower used to forward each write as an HTTP POST (`/keel/propose`) through the peer
//! connection pool: a hand-off to the HTTP client's connection task and a fresh server task
//! on the leader, each way, per write. Now each member keeps one stream per leader it has
//! forwarded to: an HTTP request to `/keel/forward` upgraded to `keel-forward/1`, then
//! length-delimited frames, `[u64 id][RaftRequest]` out and `[u64 id][bincode Answer]` back.
//! Writes are multiplexed: many may be in flight, and answers come back in whatever order
//! the leader applies them. A leader without the route (404) is called over HTTP instead.
//!
//! A stream that breaks fails the writes in flight on it with [`Forwarded::Retry`], as a
//! failed HTTP request did: the caller looks for the leader again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;

use super::{LocalError, Node};
use crate::error::EtcdError;
use crate::proto::keelpb::{RaftRequest, RaftResponse};
use crate::raft::network::{frame_codec, open_upgraded};
use crate::raft::{decode, encode};

pub const FORWARD_PATH: &str = "/keel/forward";
/// Frames written together at most: what is queued when the stream is free goes out in one
/// write (a system call per frame was a large part of a follower's CPU under many clients).
const MAX_BATCH: usize = 256;
pub const FORWARD_PROTOCOL: &str = "keel-forward/1";

/// The leader's answer to a forwarded write, as it travels.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum Answer {
    /// Applied: the encoded `RaftResponse`.
    Applied(Vec<u8>),
    NotLeader,
    Failed(EtcdError),
}

/// What became of a forwarded write.
pub(crate) enum Forwarded {
    Applied(RaftResponse),
    /// Ask again, wherever the leader is now.
    Retry,
    /// The leader has no stream route: use HTTP.
    NoStream,
    Failed(EtcdError),
}

type Call = (Bytes, oneshot::Sender<Forwarded>);

/// The follower's side: one stream per leader URL, opened on first use.
#[derive(Clone)]
pub(crate) struct Forwarder {
    http: reqwest::Client,
    conns: Arc<parking_lot::Mutex<HashMap<String, mpsc::UnboundedSender<Call>>>>,
    /// Leaders that answered 404 to the upgrade.
    http_only: Arc<parking_lot::Mutex<HashSet<String>>>,
}

impl Forwarder {
    pub(crate) fn new(http: reqwest::Client) -> Forwarder {
        Forwarder { http, conns: Arc::default(), http_only: Arc::default() }
    }

    /// Sends `req` to the leader at peer URL `base` and waits for its answer.
    pub(crate) async fn propose(&self, base: &str, req: &RaftRequest) -> Forwarded {
        if self.http_only.lock().contains(base) {
            return Forwarded::NoStream;
        }
        let (reply, answer) = oneshot::channel();
        let call = (Bytes::from(req.encode_to_vec()), reply);
        let sent = {
            let mut conns = self.conns.lock();
            let tx = conns.entry(base.to_string()).or_insert_with(|| self.connect(base));
            match tx.send(call) {
                Ok(()) => Ok(()),
                Err(mpsc::error::SendError(call)) => {
                    // That stream has ended: start another.
                    let fresh = self.connect(base);
                    let res = fresh.send(call).map_err(|_| ());
                    *tx = fresh;
                    res
                }
            }
        };
        if sent.is_err() {
            return Forwarded::Retry;
        }
        match answer.await {
            Ok(Forwarded::NoStream) => {
                self.http_only.lock().insert(base.to_string());
                Forwarded::NoStream
            }
            Ok(f) => f,
            Err(_) => Forwarded::Retry,
        }
    }

    fn connect(&self, base: &str) -> mpsc::UnboundedSender<Call> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_stream(self.http.clone(), base.to_string(), rx));
        tx
    }
}

/// One stream to a leader: writes calls as they come, matches answers to them by id.
async fn run_stream(http: reqwest::Client, base: String, mut calls: mpsc::UnboundedReceiver<Call>) {
    let stream = match open_upgraded(&http, &base, FORWARD_PATH, FORWARD_PROTOCOL).await {
        Ok(Some(s)) => s,
        failed => {
            let no_route = failed.is_ok();
            calls.close();
            while let Some((_, reply)) = calls.recv().await {
                let _ = reply.send(if no_route { Forwarded::NoStream } else { Forwarded::Retry });
            }
            return;
        }
    };
    let (mut sink, mut answers) = stream.split();
    let mut waiting: HashMap<u64, oneshot::Sender<Forwarded>> = HashMap::new();
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            call = calls.recv() => {
                let Some(first) = call else { break };
                // Everything queued goes out in one write.
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match calls.try_recv() {
                        Ok(c) => batch.push(c),
                        Err(_) => break,
                    }
                }
                let mut failed = false;
                for (body, reply) in batch {
                    if failed {
                        let _ = reply.send(Forwarded::Retry);
                        continue;
                    }
                    next_id += 1;
                    let mut frame = BytesMut::with_capacity(8 + body.len());
                    frame.put_u64(next_id);
                    frame.extend_from_slice(&body);
                    if sink.feed(frame.freeze()).await.is_err() {
                        let _ = reply.send(Forwarded::Retry);
                        failed = true;
                        continue;
                    }
                    waiting.insert(next_id, reply);
                }
                if failed || sink.flush().await.is_err() {
                    break;
                }
            }
            answer = answers.next() => {
                let Some(Ok(frame)) = answer else { break };
                if frame.len() < 8 {
                    break;
                }
                let (id, body) = frame.split_at(8);
                let id = u64::from_be_bytes(id.try_into().unwrap_or_default());
                let Some(reply) = waiting.remove(&id) else { continue };
                let outcome = match decode::<Answer>(body) {
                    Ok(Answer::Applied(r)) => match RaftResponse::decode(r.as_slice()) {
                        Ok(r) => Forwarded::Applied(r),
                        Err(e) => Forwarded::Failed(EtcdError::Internal(e.to_string())),
                    },
                    Ok(Answer::NotLeader) => Forwarded::Retry,
                    Ok(Answer::Failed(e)) => Forwarded::Failed(e),
                    Err(e) => Forwarded::Failed(EtcdError::Internal(e.to_string())),
                };
                let _ = reply.send(outcome);
            }
        }
    }
    for (_, reply) in waiting {
        let _ = reply.send(Forwarded::Retry);
    }
}

/// The leader's side: serves one follower's stream until it closes or this member stops.
/// Each write is handed to the batcher at once, with a function that queues its answer for
/// this task to write, so a slow one holds up nothing else.
pub(crate) async fn serve<T>(node: Arc<Node>, io: T, stop: tokio_util::sync::CancellationToken)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut frames) = Framed::new(io, frame_codec()).split();
    let (tx, mut done) = mpsc::unbounded_channel::<Bytes>();
    loop {
        tokio::select! {
            frame = frames.next() => {
                let Some(Ok(frame)) = frame else { return };
                if frame.len() < 8 {
                    return;
                }
                let frame = frame.freeze();
                let id = frame.slice(..8);
                let body = frame.slice(8..);
                let tx = tx.clone();
                let send = move |answer: Answer| {
                    let Ok(encoded) = encode(&answer) else { return };
                    let mut out = BytesMut::with_capacity(8 + encoded.len());
                    out.extend_from_slice(&id);
                    out.extend_from_slice(&encoded);
                    let _ = tx.send(out.freeze());
                };
                match RaftRequest::decode(body) {
                    // Answered by whichever task learns the result (see `Node::propose_here_then`).
                    Ok(req) => node.propose_here_then(req, move |r| {
                        send(match r {
                            Ok(r) => Answer::Applied(r.encode_to_vec()),
                            Err(LocalError::NotLeader) => Answer::NotLeader,
                            Err(LocalError::Etcd(e)) => Answer::Failed(e),
                        })
                    }),
                    Err(e) => send(Answer::Failed(EtcdError::Internal(e.to_string()))),
                }
            }
            Some(out) = done.recv() => {
                // Every answer ready goes out in one write.
                if sink.feed(out).await.is_err() {
                    return;
                }
                let mut n = 1;
                while n < MAX_BATCH {
                    let Ok(more) = done.try_recv() else { break };
                    if sink.feed(more).await.is_err() {
                        return;
                    }
                    n += 1;
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
            _ = stop.cancelled() => return,
        }
    }
}
