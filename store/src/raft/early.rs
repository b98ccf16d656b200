//! Early appends: the leader sends new entries to its followers while its own fsync runs.
//!
//! openraft 0.9 writes the leader's new entries and waits for that write to be durable
//! before it starts replicating them (`append_to_log` awaits the flush callback), so every
//! write pays for two fsyncs one after the other: the leader's, then a follower's. etcd's
//! leader sends its `MsgApp`s while it writes its own WAL, and the two overlap.
//!
//! Keel gets the overlap without changing openraft: when the leader's log store is handed
//! new entries it also sends them, as the AppendEntries request openraft itself will send
//! for them a moment later (the leader's committed vote, the previous entry's log id, no
//! commit index), over a stream of its own to each follower. A follower takes it like any
//! AppendEntries from its leader and starts its fsync at once; when openraft's own request
//! arrives, the entries are already there and durable, and the answer comes back without a
//! second disk wait. Answers to early requests are read and dropped: openraft still decides
//! what is replicated and committed from its own requests' answers, so commitment still
//! means durable on a majority.
//!
//! It is safe because an early request is exactly a request the leader may send: it carries
//! the leader's vote (a follower that has moved on to a newer term rejects it, as it would a
//! late request), and entries that are in the leader's log after an entry that is too (a
//! follower whose log differs at that point reports a conflict, as Raft has it). Early
//! requests are best effort: dropped when a follower's stream cannot be opened or its queue
//! is full.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use openraft::raft::AppendEntriesRequest;
use tokio::sync::mpsc;

use super::network::{open_stream, FRAME_APPEND};
use super::{encode, Entry, LogId, NodeId, TypeConfig, Vote};

/// Early requests queued per follower at most; more are dropped.
const QUEUE: usize = 64;
/// How long to wait before trying again to open a stream that failed to open.
const RETRY: Duration = Duration::from_secs(1);

/// The leader's side: one sender task per follower, each with its own stream.
#[derive(Clone)]
pub struct EarlyAppends {
    http: reqwest::Client,
    targets: Arc<parking_lot::Mutex<HashMap<NodeId, Target>>>,
}

struct Target {
    base: String,
    tx: mpsc::Sender<Bytes>,
}

impl EarlyAppends {
    pub fn new(http: reqwest::Client) -> EarlyAppends {
        EarlyAppends { http, targets: Arc::default() }
    }

    /// Starts sending early requests to `id` at peer URL `base` (called whenever openraft
    /// makes a replication client for it).
    pub fn target(&self, id: NodeId, base: &str) {
        let mut targets = self.targets.lock();
        if targets.get(&id).is_some_and(|t| t.base == base && !t.tx.is_closed()) {
            return;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(send_loop(self.http.clone(), base.to_string(), rx));
        targets.insert(id, Target { base: base.to_string(), tx });
    }

    /// Sends `entries`, which follow `prev` in the leader's log, to every follower.
    pub fn send(&self, prev: LogId, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let leader = first.log_id.leader_id;
        let req = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(leader.term, leader.node_id),
            prev_log_id: Some(prev),
            entries: entries.to_vec(),
            leader_commit: None,
        };
        let Ok(body) = encode(&req) else { return };
        let mut frame = BytesMut::with_capacity(body.len() + 1);
        frame.put_u8(FRAME_APPEND);
        frame.extend_from_slice(&body);
        let frame = frame.freeze();
        for (id, t) in self.targets.lock().iter() {
            if *id != leader.node_id {
                let _ = t.tx.try_send(frame.clone());
            }
        }
    }
}

/// Writes early requests to one follower's stream, opening it when needed; a task of its
/// own reads and drops the answers.
async fn send_loop(http: reqwest::Client, base: String, mut rx: mpsc::Receiver<Bytes>) {
    let mut sink = None;
    let mut failed_at: Option<Instant> = None;
    while let Some(frame) = rx.recv().await {
        if sink.is_none() {
            if failed_at.is_some_and(|t| t.elapsed() < RETRY) {
                continue;
            }
            match open_stream(&http, &base).await {
                Ok(Some(stream)) => {
                    let (si, mut answers) = stream.split();
                    tokio::spawn(async move { while let Some(Ok(_)) = answers.next().await {} });
                    sink = Some(si);
                    failed_at = None;
                }
                Ok(None) | Err(_) => {
                    failed_at = Some(Instant::now());
                    continue;
                }
            }
        }
        if let Some(si) = sink.as_mut() {
            if si.send(frame).await.is_err() {
                sink = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{header, StatusCode};
    use axum::response::Response;
    use openraft::raft::AppendEntriesResponse;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::raft::network::{frame_codec, STREAM_PATH, STREAM_PROTOCOL};

    /// A follower that records the AppendEntries requests it gets on Raft streams and
    /// answers each with success.
    async fn follower() -> (String, mpsc::UnboundedReceiver<AppendEntriesRequest<TypeConfig>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let app = axum::Router::new().route(
            STREAM_PATH,
            axum::routing::post(move |mut req: axum::extract::Request| {
                let tx = tx.clone();
                async move {
                    let upgrade = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let Ok(io) = upgrade.await else { return };
                        let mut framed =
                            tokio_util::codec::Framed::new(hyper_util::rt::TokioIo::new(io), frame_codec());
                        while let Some(Ok(frame)) = framed.next().await {
                            let Some((&FRAME_APPEND, body)) = frame.split_first() else { return };
                            let Ok(req) = super::super::decode::<AppendEntriesRequest<TypeConfig>>(body) else {
                                return;
                            };
                            let _ = tx.send(req);
                            let ok: Result<AppendEntriesResponse<NodeId>, openraft::error::RaftError<NodeId>> =
                                Ok(AppendEntriesResponse::Success);
                            let Ok(answer) = encode(&ok) else { return };
                            if framed.send(Bytes::from(answer)).await.is_err() {
                                return;
                            }
                        }
                    });
                    let mut resp = Response::new(Body::empty());
                    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                    resp.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("upgrade"));
                    resp.headers_mut().insert(header::UPGRADE, header::HeaderValue::from_static(STREAM_PROTOCOL));
                    resp
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), rx)
    }

    fn entry(term: u64, leader: NodeId, index: u64) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(term, leader), index), payload: EntryPayload::Blank }
    }

    async fn next(
        rx: &mut mpsc::UnboundedReceiver<AppendEntriesRequest<TypeConfig>>,
    ) -> AppendEntriesRequest<TypeConfig> {
        tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("an early request in time").expect("open")
    }

    #[tokio::test]
    async fn early_requests_are_the_leaders_own_and_arrive_in_order() {
        let (url, mut rx) = follower().await;
        let early = EarlyAppends::new(reqwest::Client::new());
        early.target(2, &url);
        // The leader itself is never a target, even if openraft made a client for it.
        let (own_url, mut own_rx) = follower().await;
        early.target(1, &own_url);

        let prev = entry(3, 1, 9).log_id;
        early.send(prev, &[entry(3, 1, 10), entry(3, 1, 11)]);
        early.send(entry(3, 1, 11).log_id, &[entry(3, 1, 12)]);

        let first = next(&mut rx).await;
        assert_eq!(first.vote, Vote::new_committed(3, 1));
        assert_eq!(first.prev_log_id, Some(prev));
        assert_eq!(first.entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), vec![10, 11]);
        assert_eq!(first.leader_commit, None, "an early request never moves the commit index");
        let second = next(&mut rx).await;
        assert_eq!(second.prev_log_id, Some(entry(3, 1, 11).log_id));
        assert_eq!(second.entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), vec![12]);
        assert!(own_rx.try_recv().is_err(), "the leader sent an early request to itself");
    }

    #[tokio::test]
    async fn a_follower_that_cannot_be_reached_does_not_hold_up_the_others() {
        // Nothing listens on the first target's port.
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let dead_url = format!("http://{}", dead.local_addr().expect("addr"));
        drop(dead);
        let (url, mut rx) = follower().await;
        let early = EarlyAppends::new(reqwest::Client::new());
        early.target(2, &dead_url);
        early.target(3, &url);
        for i in 0..QUEUE as u64 {
            early.send(entry(1, 1, i + 1).log_id, &[entry(1, 1, i + 2)]);
        }
        for i in 0..QUEUE as u64 {
            let req = next(&mut rx).await;
            assert_eq!(req.entries[0].log_id.index, i + 2);
        }
    }
}
