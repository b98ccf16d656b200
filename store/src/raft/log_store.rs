//! The Raft log and vote, in their own RocksDB instance (`RaftLog`, `RaftState`).
//!
//! Contract (openraft `RaftLogStorage`): the vote is durable before `save_vote` returns;
//! appended entries are readable as soon as `append` returns, and its flush callback fires
//! only once they are durable.
//!
//! All writes go through one writer thread, in order. `append` puts the entries in an
//! in-memory map (so readers see them at once) and queues them; the writer takes everything
//! queued, writes it as one *synced* batch (group commit: one fsync for every append that
//! arrived meanwhile), drops the written entries from the map and fires the callbacks. So
//! Raft's own task never waits on the disk, and nothing else shares this WAL.
//!
//! Purging log entries first syncs the state machine's WAL: entries are only purged once
//! a snapshot covers them, and the applied state must be at least as durable as the log it
//! replaces.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::StorageIOError;
use openraft::{LogState, RaftLogReader};
use parking_lot::RwLock;

use super::{decode, encode, Entry, LogId, StorageError, TypeConfig, Vote};
use crate::engine::{Cf, Engine, EngineError, WriteBatch};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// Work for the writer thread, applied in queue order.
enum Op {
    Append(Vec<Entry>, LogFlushed<TypeConfig>),
    /// Delete entries from this index on.
    Truncate(u64, Done),
    /// Delete entries up to and including this log id, and remember it.
    Purge(LogId, Done),
    /// A raft-state key and its encoded value.
    Put(&'static [u8], Vec<u8>, Done),
    /// A raft-state key nobody waits for (a restart hint): written with the next batch, and
    /// a batch of nothing but hints is not synced (the next synced write makes it durable).
    Hint(&'static [u8], Vec<u8>),
    /// Write what came before, then end the writer thread.
    Stop,
}

type Done = tokio::sync::oneshot::Sender<Result<(), String>>;

/// Appended entries not yet written, by index: what readers see before the writer catches up.
type Pending = Arc<RwLock<BTreeMap<u64, Entry>>>;

#[derive(Clone)]
pub struct LogStore {
    engine: Engine,
    pending: Pending,
    writer: mpsc::Sender<Op>,
    /// The writer thread, joined by [`LogStore::close`] so that no RocksDB work is still
    /// running when the process exits.
    thread: Arc<parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

fn index_key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageError::from(StorageIOError::read_logs(&e))
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageError::from(StorageIOError::write_logs(&e))
}

/// The writer thread: batches whatever is queued into one write, synced unless it holds
/// nothing but hints.
fn writer_loop(engine: Engine, state: Engine, pending: Pending, rx: mpsc::Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        ops.extend(rx.try_iter());
        let mut batch = WriteBatch::default();
        let mut written: Vec<LogId> = Vec::new();
        let mut callbacks = Vec::new();
        let mut dones = Vec::new();
        let mut purging = false;
        let mut stopping = false;
        let mut sync = false;
        let mut failed: Option<String> = None;
        for op in ops {
            match op {
                Op::Stop => {
                    stopping = true;
                    sync = true;
                }
                Op::Hint(key, value) => batch.put(Cf::RaftState, key, value),
                Op::Append(entries, cb) => {
                    sync = true;
                    for e in entries {
                        match encode(&e) {
                            Ok(bytes) => batch.put(Cf::RaftLog, index_key(e.log_id.index).to_vec(), bytes),
                            Err(err) => failed = Some(err.to_string()),
                        }
                        written.push(e.log_id);
                    }
                    callbacks.push(cb);
                }
                Op::Truncate(from, done) => {
                    sync = true;
                    batch.delete_range(Cf::RaftLog, index_key(from).to_vec(), index_key(u64::MAX).to_vec());
                    batch.delete(Cf::RaftLog, index_key(u64::MAX).to_vec());
                    dones.push(done);
                }
                Op::Purge(upto, done) => {
                    sync = true;
                    match encode(&upto) {
                        Ok(bytes) => batch.put(Cf::RaftState, LAST_PURGED, bytes),
                        Err(err) => failed = Some(err.to_string()),
                    }
                    batch.delete_range(Cf::RaftLog, index_key(0).to_vec(), index_key(upto.index + 1).to_vec());
                    purging = true;
                    dones.push(done);
                }
                Op::Put(key, value, done) => {
                    sync = true;
                    batch.put(Cf::RaftState, key, value);
                    dones.push(done);
                }
            }
        }
        let mut result: Result<(), String> = match failed {
            Some(e) => Err(e),
            None => Ok(()),
        };
        if purging && result.is_ok() {
            result = state.sync_wal().map_err(|e| e.to_string());
        }
        let started = std::time::Instant::now();
        let entries = written.len();
        if result.is_ok() {
            result = engine.write(batch, sync).map_err(|e: EngineError| e.to_string());
        }
        tracing::debug!(target: "keel_store::raft::rpc", entries, sync, micros = started.elapsed().as_micros() as u64, "log write");
        if result.is_ok() {
            let mut p = pending.write();
            for id in &written {
                if p.get(&id.index).is_some_and(|e| e.log_id == *id) {
                    p.remove(&id.index);
                }
            }
        }
        for cb in callbacks {
            cb.log_io_completed(result.clone().map_err(std::io::Error::other));
        }
        for d in dones {
            let _ = d.send(result.clone());
        }
        if stopping {
            return;
        }
    }
}

impl LogStore {
    /// `engine` is the log database; `state` the state machine's, synced before a purge.
    pub fn new(engine: Engine, state: Engine) -> Result<LogStore, std::io::Error> {
        let (tx, rx) = mpsc::channel::<Op>();
        let pending: Pending = Arc::default();
        let (e, p) = (engine.clone(), pending.clone());
        let thread =
            std::thread::Builder::new().name("keel-log-writer".into()).spawn(move || writer_loop(e, state, p, rx))?;
        Ok(LogStore { engine, pending, writer: tx, thread: Arc::new(parking_lot::Mutex::new(Some(thread))) })
    }

    /// Writes what is queued and stops the writer thread, waiting for it. Later writes fail.
    pub fn close(&self) {
        let _ = self.writer.send(Op::Stop);
        let handle = self.thread.lock().take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.engine.get(Cf::RaftState, key).map_err(read_err)? {
            Some(v) => Ok(Some(decode(&v).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    /// Queues an operation and waits until the writer has made it durable.
    async fn submit(&self, op: impl FnOnce(Done) -> Op) -> Result<(), StorageError> {
        let stopped = || write_err(std::io::Error::other("the log writer has stopped"));
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.writer.send(op(tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?.map_err(|e| write_err(std::io::Error::other(e)))
    }

    async fn put_state<T: serde::Serialize>(&self, key: &'static [u8], v: &T) -> Result<(), StorageError> {
        let bytes = encode(v).map_err(write_err)?;
        self.submit(|done| Op::Put(key, bytes, done)).await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Some(i.saturating_add(1)),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        // Entries still on their way to disk first; they win over older stored ones.
        let mut out: BTreeMap<u64, Entry> =
            self.pending.read().range(start..end.unwrap_or(u64::MAX)).map(|(i, e)| (*i, e.clone())).collect();
        let end_key = end.map(index_key);
        for item in
            self.engine.scan(Cf::RaftLog, &index_key(start), end_key.as_ref().map(|k| &k[..])).map_err(read_err)?
        {
            let (_, v) = item.map_err(read_err)?;
            let e = decode::<Entry>(&v).map_err(read_err)?;
            out.entry(e.log_id.index).or_insert(e);
        }
        Ok(out.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.get_meta(LAST_PURGED)?;
        let pending_last = self.pending.read().values().next_back().map(|e| e.log_id);
        let stored_last = match self.engine.last(Cf::RaftLog).map_err(read_err)? {
            Some((_, v)) => Some(decode::<Entry>(&v).map_err(read_err)?.log_id),
            None => None,
        };
        let last = pending_last.or(stored_last).or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_state(VOTE, vote).await.map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(VOTE)
    }

    /// The committed id is a restart hint (openraft re-derives commitment otherwise): it is
    /// queued with the next batch, not waited for, so commits never stall Raft's task.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = encode(&committed).map_err(write_err)?;
        self.writer
            .send(Op::Hint(COMMITTED, bytes))
            .map_err(|_| write_err(std::io::Error::other("the log writer has stopped")))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        {
            let mut p = self.pending.write();
            for e in &entries {
                p.insert(e.log_id.index, e.clone());
            }
        }
        self.writer
            .send(Op::Append(entries, callback))
            .map_err(|_| write_err(std::io::Error::other("the log writer has stopped")))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.pending.write().retain(|i, _| *i < log_id.index);
        self.submit(|done| Op::Truncate(log_id.index, done)).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.submit(|done| Op::Purge(log_id, done)).await
    }
}
