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
use crate::raft::answer::Waiter;
use crate::raft::{Cmd, Raft};

/// Entries being committed at once.
const IN_FLIGHT: usize = 4;
/// Commands per entry at most.
const MAX_COMMANDS: usize = 1024;
/// Bytes per entry at most (beyond a single command): keeps entries, and so
/// AppendEntries requests, a few megabytes at most.
const MAX_BYTES: usize = 2 << 20;

/// Where a proposal's result goes. One dropped unanswered (the member is stopping) answers
/// `Stopped`.
struct Reply(Option<ReplyTo>);

enum ReplyTo {
    /// A caller waiting for it.
    Wait(oneshot::Sender<Result<RaftResponse, LocalError>>),
    /// A function to call with it, on whatever task has it (see [`Batcher::propose_then`]).
    Call(Box<dyn FnOnce(Result<RaftResponse, LocalError>) + Send>),
}

impl Reply {
    fn send(mut self, result: Result<RaftResponse, LocalError>) {
        match self.0.take() {
            Some(ReplyTo::Wait(tx)) => {
                let _ = tx.send(result);
            }
            Some(ReplyTo::Call(f)) => f(result),
            None => {}
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(to) = self.0.take() {
            Reply(Some(to)).send(Err(LocalError::Etcd(EtcdError::Stopped)));
        }
    }
}

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
        self.tx.send((req, Reply(Some(ReplyTo::Wait(reply))))).map_err(|_| LocalError::Etcd(EtcdError::Stopped))?;
        rx.await.map_err(|_| LocalError::Etcd(EtcdError::Stopped))?
    }

    /// Proposes `req` (on the leader) and calls `then` with what applying it produced, on
    /// the task that learns it: no task of the caller's waits in between.
    pub(crate) fn propose_then(
        &self,
        req: RaftRequest,
        then: impl FnOnce(Result<RaftResponse, LocalError>) + Send + 'static,
    ) {
        // Not sent (the batcher has stopped), the reply is dropped: it answers `Stopped`.
        let _ = self.tx.send((req, Reply(Some(ReplyTo::Call(Box::new(then))))));
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

async fn write(raft: &Raft, req: RaftRequest, waiter: Waiter) -> Result<RaftResponse, LocalError> {
    match raft.client_write(Cmd(req, Some(waiter))).await {
        Ok(r) => Ok(r.data.0),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(LocalError::NotLeader),
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
            Err(LocalError::Etcd(EtcdError::Internal(e.to_string())))
        }
        Err(RaftError::Fatal(_)) => Err(LocalError::Etcd(EtcdError::Stopped)),
    }
}

/// Proposes one entry for `batch`. Its callers are answered by the state machine as soon as
/// it has applied the entry (see [`crate::raft::answer`]), or else (an error, or no answer
/// from there) by what openraft returns.
async fn submit(raft: &Raft, mut batch: Vec<(RaftRequest, Reply)>) {
    let (entry, replies): (RaftRequest, Vec<Reply>) = match batch.pop() {
        Some((req, reply)) if batch.is_empty() => (req, vec![reply]),
        last => {
            batch.extend(last);
            let (requests, replies) = batch.into_iter().unzip();
            (RaftRequest { command: Some(Command::Batch(RaftBatch { requests })), auth: None }, replies)
        }
    };
    let replies = Arc::new(parking_lot::Mutex::new(Some(replies)));
    let waiter = {
        let replies = replies.clone();
        Waiter::new(move |resp| {
            if let Some(r) = replies.lock().take() {
                answer(r, Ok(resp));
            }
        })
    };
    let result = write(raft, entry, waiter).await;
    let unanswered = replies.lock().take();
    if let Some(r) = unanswered {
        answer(r, result);
    }
}

/// Answers the callers of one entry: a lone proposal gets the entry's result, a batch's each
/// their own part of it.
fn answer(mut replies: Vec<Reply>, result: Result<RaftResponse, LocalError>) {
    if replies.len() == 1 {
        if let Some(reply) = replies.pop() {
            reply.send(result);
        }
        return;
    }
    match result {
        Ok(RaftResponse { result: Some(Outcome::Batch(b)), .. }) if b.responses.len() == replies.len() => {
            for (reply, resp) in replies.into_iter().zip(b.responses) {
                reply.send(Ok(resp));
            }
        }
        Ok(_) => {
            for reply in replies {
                reply.send(Err(LocalError::Etcd(EtcdError::Internal("malformed batch result".into()))));
            }
        }
        Err(e) => {
            for reply in replies {
                reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_dropped_unanswered_answers_stopped() {
        let (tx, mut rx) = oneshot::channel();
        drop(Reply(Some(ReplyTo::Wait(tx))));
        assert!(matches!(rx.try_recv(), Ok(Err(LocalError::Etcd(EtcdError::Stopped)))));

        let got = Arc::new(parking_lot::Mutex::new(None));
        let g = got.clone();
        drop(Reply(Some(ReplyTo::Call(Box::new(move |r| *g.lock() = Some(r.is_err()))))));
        assert_eq!(*got.lock(), Some(true));
    }

    #[test]
    fn a_reply_answered_is_answered_once() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = calls.clone();
        let reply = Reply(Some(ReplyTo::Call(Box::new(move |r| {
            assert!(r.is_ok());
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }))));
        reply.send(Ok(RaftResponse::default()));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
