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
