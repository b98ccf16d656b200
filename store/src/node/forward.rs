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
//!
//! Each side writes through an [`Outlet`]: a frame that is its stream's only one outstanding
//! (one client's writes) is written by whoever has it, there and then; otherwise frames go
//! to the stream's task, which writes everything queued at once (many clients' writes: one
//! system call for many frames).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;

use super::{LocalError, Node};
use crate::error::EtcdError;
use crate::proto::keelpb::{RaftRequest, RaftResponse};
use crate::raft::network::{frame_codec, open_upgraded, RaftStream};
use crate::raft::shared_sink::{Hand, SharedSink};
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

/// A forwarded write's caller, by the id its frame carries.
type Waiting = Arc<parking_lot::Mutex<HashMap<u64, oneshot::Sender<Forwarded>>>>;

/// One forward stream's writing half, shared by its task and whoever has a frame for it.
struct Outlet<S> {
    sink: SharedSink<S>,
    /// Frames for the task to write; `None` asks it to finish writing one written at once.
    tx: mpsc::UnboundedSender<Option<Bytes>>,
}

impl<S> Outlet<S>
where
    S: futures::Sink<Bytes, Error = std::io::Error> + Unpin,
{
    fn new() -> (Outlet<S>, mpsc::UnboundedReceiver<Option<Bytes>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Outlet { sink: SharedSink::default(), tx }, rx)
    }

    /// Sends `frame`: written at once if it is the stream's only one outstanding (`lone`)
    /// and nothing waits for the task, else through the task. `false` if it cannot go out:
    /// the stream or its task has ended.
    fn send(&self, frame: Bytes, lone: bool) -> bool {
        self.sink.send(
            &frame,
            lone,
            |_| {},
            |hand| match hand {
                Hand::Frame => self.tx.send(Some(frame.clone())).is_ok(),
                Hand::Flush => self.tx.send(None).is_ok(),
                // Its caller retries elsewhere.
                Hand::AfterFailure => false,
            },
        )
    }

    /// The task's part: writes `taken` (messages from its queue) in one go; `false` if the
    /// stream failed.
    async fn write_queued(&self, taken: Vec<Option<Bytes>>) -> bool {
        let n = taken.len();
        let mut ok = true;
        for frame in taken.into_iter().flatten() {
            if !self.sink.feed(frame, |_| {}).await {
                ok = false;
                break;
            }
        }
        let ok = ok && self.sink.flush().await;
        self.sink.finished(n, ok);
        ok
    }
}

/// Takes what a task's queue holds after `first`, up to a batch.
fn take_batch(first: Option<Bytes>, rx: &mut mpsc::UnboundedReceiver<Option<Bytes>>) -> Vec<Option<Bytes>> {
    let mut taken = vec![first];
    while taken.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(m) => taken.push(m),
            Err(_) => break,
        }
    }
    taken
}

/// A follower's stream to one leader: its outlet and the callers waiting on it.
#[derive(Clone)]
struct Conn {
    outlet: Arc<Outlet<futures::stream::SplitSink<RaftStream, Bytes>>>,
    waiting: Waiting,
    next_id: Arc<std::sync::atomic::AtomicU64>,
}

/// The follower's side: one stream per leader URL, opened on first use.
#[derive(Clone)]
pub(crate) struct Forwarder {
    http: reqwest::Client,
    conns: Arc<parking_lot::Mutex<HashMap<String, Conn>>>,
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
        let conn = {
            let mut conns = self.conns.lock();
            let conn = conns.entry(base.to_string()).or_insert_with(|| self.connect(base));
            if conn.outlet.tx.is_closed() {
                // That stream has ended: start another.
                *conn = self.connect(base);
            }
            conn.clone()
        };
        let id = conn.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut frame = BytesMut::with_capacity(8 + req.encoded_len());
        frame.put_u64(id);
        if req.encode(&mut frame).is_err() {
            return Forwarded::Failed(EtcdError::Internal("encoding a forwarded write".into()));
        }
        let lone = {
            let mut waiting = conn.waiting.lock();
            waiting.insert(id, reply);
            waiting.len() == 1
        };
        if !conn.outlet.send(frame.freeze(), lone) {
            // Answered by the task if it got to it first; else here.
            if let Some(reply) = conn.waiting.lock().remove(&id) {
                let _ = reply.send(Forwarded::Retry);
            }
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

    fn connect(&self, base: &str) -> Conn {
        let (outlet, rx) = Outlet::new();
        let conn = Conn { outlet: Arc::new(outlet), waiting: Waiting::default(), next_id: Arc::default() };
        tokio::spawn(run_stream(self.http.clone(), base.to_string(), conn.clone(), rx));
        conn
    }
}

/// One stream to a leader: opens it, writes what is queued for it, and matches answers to
/// their callers by id.
async fn run_stream(http: reqwest::Client, base: String, conn: Conn, mut rx: mpsc::UnboundedReceiver<Option<Bytes>>) {
    let stream = match open_upgraded(&http, &base, FORWARD_PATH, FORWARD_PROTOCOL).await {
        Ok(Some(s)) => s,
        failed => {
            let no_route = failed.is_ok();
            rx.close();
            let waiting: Vec<_> = conn.waiting.lock().drain().collect();
            for (_, reply) in waiting {
                let _ = reply.send(if no_route { Forwarded::NoStream } else { Forwarded::Retry });
            }
            return;
        }
    };
    let (sink, mut answers) = stream.split();
    conn.outlet.sink.open(sink, ());
    loop {
        tokio::select! {
            first = rx.recv() => {
                let Some(first) = first else { break };
                let taken = take_batch(first, &mut rx);
                if !conn.outlet.write_queued(taken).await {
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
                let Some(reply) = conn.waiting.lock().remove(&id) else { continue };
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
    // Nothing more goes out or comes back on this stream.
    rx.close();
    conn.outlet.sink.close();
    let waiting: Vec<_> = conn.waiting.lock().drain().collect();
    for (_, reply) in waiting {
        let _ = reply.send(Forwarded::Retry);
    }
}

/// The writing half of a forward stream the leader serves.
type AnswerSink<T> = futures::stream::SplitSink<Framed<T, tokio_util::codec::LengthDelimitedCodec>, Bytes>;

/// The leader's side: serves one follower's stream until it closes or this member stops.
/// Each write is handed to the batcher at once, with a function that queues its answer for
/// this task to write, so a slow one holds up nothing else.
pub(crate) async fn serve<T>(node: Arc<Node>, io: T, stop: tokio_util::sync::CancellationToken)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sink, frames) = Framed::new(io, frame_codec()).split();
    let (outlet, rx) = Outlet::new();
    outlet.sink.open(sink, ());
    let outlet = Arc::new(outlet);
    // Writes received and not yet answered: an answer that is the only one is written at once.
    let outstanding = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    serve_frames(&node, &outlet, &outstanding, frames, rx, stop).await;
    // Answers still to come find the stream closed (the follower retries those writes).
    outlet.sink.close();
}

/// [`serve`]'s loop, until the stream ends or fails, or this member stops.
async fn serve_frames<T>(
    node: &Arc<Node>,
    outlet: &Arc<Outlet<AnswerSink<T>>>,
    outstanding: &Arc<std::sync::atomic::AtomicUsize>,
    mut frames: futures::stream::SplitStream<Framed<T, tokio_util::codec::LengthDelimitedCodec>>,
    mut rx: mpsc::UnboundedReceiver<Option<Bytes>>,
    stop: tokio_util::sync::CancellationToken,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
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
                outstanding.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                let (outlet, outstanding) = (outlet.clone(), outstanding.clone());
                let send = move |answer: Answer| {
                    let lone = outstanding.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1;
                    let Ok(encoded) = encode(&answer) else { return };
                    let mut out = BytesMut::with_capacity(8 + encoded.len());
                    out.extend_from_slice(&id);
                    out.extend_from_slice(&encoded);
                    // (Not sent: the stream has ended, and the follower retries its writes.)
                    outlet.send(out.freeze(), lone);
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
            Some(first) = rx.recv() => {
                // Every answer queued goes out in one write.
                let taken = take_batch(first, &mut rx);
                if !outlet.write_queued(taken).await {
                    return;
                }
            }
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::{SinkExt, StreamExt};

    use super::*;

    type TestSink = futures::sink::SinkMapErr<
        futures::channel::mpsc::Sender<Bytes>,
        fn(futures::channel::mpsc::SendError) -> std::io::Error,
    >;

    /// An outlet over an in-memory "wire" of `room` frames.
    fn outlet(
        room: usize,
    ) -> (Outlet<TestSink>, mpsc::UnboundedReceiver<Option<Bytes>>, futures::channel::mpsc::Receiver<Bytes>) {
        let (tx, wire) = futures::channel::mpsc::channel::<Bytes>(room);
        let closed: fn(futures::channel::mpsc::SendError) -> std::io::Error = |_| std::io::Error::other("closed");
        let (outlet, queue) = Outlet::new();
        outlet.sink.open(tx.sink_map_err(closed), ());
        (outlet, queue, wire)
    }

    fn on_wire(wire: &mut futures::channel::mpsc::Receiver<Bytes>) -> Option<Bytes> {
        wire.try_recv().ok()
    }

    #[tokio::test]
    async fn a_lone_frame_goes_out_at_once_and_queued_ones_keep_their_order() {
        let (outlet, mut queue, mut wire) = outlet(16);
        // Alone, a frame is on the wire before any task has run.
        assert!(outlet.send(Bytes::from_static(b"1"), true));
        assert_eq!(on_wire(&mut wire), Some(Bytes::from_static(b"1")));
        // With others outstanding it goes to the task, and a lone one after it waits its turn.
        assert!(outlet.send(Bytes::from_static(b"2"), false));
        assert!(outlet.send(Bytes::from_static(b"3"), true));
        assert_eq!(on_wire(&mut wire), None);
        let first = queue.recv().await.expect("queued");
        assert!(outlet.write_queued(take_batch(first, &mut queue)).await);
        assert_eq!(on_wire(&mut wire), Some(Bytes::from_static(b"2")));
        assert_eq!(on_wire(&mut wire), Some(Bytes::from_static(b"3")));
        // The task has caught up: alone again, at once.
        assert!(outlet.send(Bytes::from_static(b"4"), true));
        assert_eq!(on_wire(&mut wire), Some(Bytes::from_static(b"4")));
    }

    #[tokio::test]
    async fn frames_the_stream_cannot_take_at_once_go_through_the_task_in_order() {
        let (outlet, mut queue, mut wire) = outlet(1);
        assert!(outlet.send(Bytes::from_static(b"1"), true));
        // The wire is full after this one: it needs the task to see it through.
        assert!(outlet.send(Bytes::from_static(b"2"), true));
        // So this one, alone or not, waits behind it.
        assert!(outlet.send(Bytes::from_static(b"3"), true));
        assert_eq!(on_wire(&mut wire), Some(Bytes::from_static(b"1")));
        let first = queue.recv().await.expect("queued");
        let taken = take_batch(first, &mut queue);
        let (ok, rest) = tokio::join!(outlet.write_queued(taken), async { [wire.next().await, wire.next().await] });
        assert!(ok);
        assert_eq!(rest, [Some(Bytes::from_static(b"2")), Some(Bytes::from_static(b"3"))]);
        // A stream that has failed takes nothing more, at once or through the task.
        drop(wire);
        assert!(!outlet.send(Bytes::from_static(b"4"), true));
        assert!(outlet.send(Bytes::from_static(b"5"), false), "handed to the task");
        let first = queue.recv().await.expect("queued");
        assert!(!outlet.write_queued(take_batch(first, &mut queue)).await);
    }
}
