//! Proposal batching: many client commands per Raft entry.
//!
//! openraft moves entries through its log IO one step at a time, so under concurrent load
//! the cost per *entry* bounds throughput. The batcher takes whatever proposals are queued
//! when there is room in the pipeline (at most [`IN_FLIGHT`] entries being committed at
//! once) and proposes them as one `RaftBatch` entry; the state machine applies its commands
//! in order, one revision each. A lone proposal goes out alone and at once, so batching adds
//! no latency at low load.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use prost::Message;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::LocalError;
use crate::error::EtcdError;
use crate::proto::keelpb::raft_request::Command;
use crate::proto::keelpb::raft_response::Result as Outcome;
use crate::proto::keelpb::{RaftBatch, RaftRequest, RaftResponse};
use crate::raft::{Cmd, Raft};

/// Entries being committed at once.
const IN_FLIGHT: usize = 4;
/// Commands per entry at most.
const MAX_COMMANDS: usize = 1024;
/// Bytes per entry at most (beyond a single command): keeps entries, and so
/// AppendEntries requests, a few megabytes at most.
const MAX_BYTES: usize = 2 << 20;

type Reply = oneshot::Sender<Result<RaftResponse, LocalError>>;

#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::UnboundedSender<(RaftRequest, Reply)>,
}

impl Batcher {
    pub fn start(raft: Raft) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx));
        Batcher { tx }
    }

    /// Proposes `req` (on the leader) and returns what applying it produced.
    pub async fn propose(&self, req: RaftRequest) -> Result<RaftResponse, LocalError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send((req, reply)).map_err(|_| LocalError::Etcd(EtcdError::Stopped))?;
        rx.await.map_err(|_| LocalError::Etcd(EtcdError::Stopped))?
    }
}

async fn run(raft: Raft, mut rx: mpsc::UnboundedReceiver<(RaftRequest, Reply)>) {
    let room = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // While the pipeline is full, proposals queue up and go out together.
        let Ok(permit) = room.clone().acquire_owned().await else { return };
        let mut bytes = first.0.encoded_len();
        let mut batch = vec![first];
        while batch.len() < MAX_COMMANDS && bytes < MAX_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.0.encoded_len();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            submit(&raft, batch).await;
            drop(permit);
        });
    }
}

async fn write(raft: &Raft, req: RaftRequest) -> Result<RaftResponse, LocalError> {
    match raft.client_write(Cmd(req)).await {
        Ok(r) => Ok(r.data.0),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(LocalError::NotLeader),
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
            Err(LocalError::Etcd(EtcdError::Internal(e.to_string())))
        }
        Err(RaftError::Fatal(_)) => Err(LocalError::Etcd(EtcdError::Stopped)),
    }
}

async fn submit(raft: &Raft, mut batch: Vec<(RaftRequest, Reply)>) {
    if batch.len() == 1 {
        if let Some((req, reply)) = batch.pop() {
            let _ = reply.send(write(raft, req).await);
        }
        return;
    }
    let (requests, replies): (Vec<RaftRequest>, Vec<Reply>) = batch.into_iter().unzip();
    let entry = RaftRequest { command: Some(Command::Batch(RaftBatch { requests })) };
    match write(raft, entry).await {
        Ok(RaftResponse { result: Some(Outcome::Batch(b)), .. }) if b.responses.len() == replies.len() => {
            for (reply, resp) in replies.into_iter().zip(b.responses) {
                let _ = reply.send(Ok(resp));
            }
        }
        Ok(_) => {
            for reply in replies {
                let _ = reply.send(Err(LocalError::Etcd(EtcdError::Internal("malformed batch result".into()))));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
