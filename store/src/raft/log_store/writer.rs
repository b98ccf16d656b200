//! The log store's writes: the writer thread that takes whatever is queued and writes it as
//! one synced batch, and the write itself ([`Io::write`]), which followers also make on
//! Raft's own task (see the parent module).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use openraft::storage::LogFlushed;
use parking_lot::RwLock;

use super::{Early, STALL_LEADER_WRITES};
use crate::raft::state_machine::StateSync;
use crate::raft::wal::{Record, Wal};
use crate::raft::{encode, Entry, LogId, TypeConfig};

/// A synced log write taking this long is logged (etcd warns of slow fdatasyncs too).
const SLOW_WRITE: std::time::Duration = std::time::Duration::from_millis(100);

pub(super) fn stall_from_env() -> Option<std::path::PathBuf> {
    let path = std::path::PathBuf::from(std::env::var_os(STALL_LEADER_WRITES)?);
    tracing::warn!(path = %path.display(), "failpoint armed: the leader's log writes of client entries stall while this file exists");
    Some(path)
}

/// Work for the writer thread, applied in queue order.
pub(super) enum Op {
    /// Entries and their flush callback; `None` when it waits in
    /// [`Flushes`](crate::raft::flush::Flushes) instead.
    Append(Vec<Entry>, Option<LogFlushed<TypeConfig>>),
    /// Delete entries from this index on.
    Truncate(u64, Done),
    /// Delete entries up to and including this log id, and remember it.
    Purge(LogId, Done),
    /// The encoded vote.
    Vote(Vec<u8>, Done),
    /// Write what came before, then end the writer thread.
    Stop,
}

pub(super) type Done = tokio::sync::oneshot::Sender<Result<(), String>>;

/// Appended entries not yet written, by index: what readers see before the writer catches up.
pub(super) type Pending = Arc<RwLock<BTreeMap<u64, Entry>>>;

/// The newest entries written (see [`crate::raft::recent`]), shared by writers and readers.
pub(super) type Recent = Arc<RwLock<crate::raft::recent::Recent>>;

/// The newest committed log id (encoded) not yet written: a restart hint nobody waits for,
/// so it waits in memory for the next write instead of waking the writer of its own.
pub(super) type Hint = Arc<parking_lot::Mutex<Option<Vec<u8>>>>;

/// The writer thread, stopped and joined by [`LogStore::close`](super::LogStore::close) or when the last clone of
/// the store goes, so that no log write is still running when the process exits.
pub(super) struct WriterThread {
    pub(super) tx: mpsc::Sender<Op>,
    pub(super) handle: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl WriterThread {
    pub(super) fn stop(&self) {
        let handle = self.handle.lock().take();
        if let Some(h) = handle {
            let _ = self.tx.send(Op::Stop);
            let _ = h.join();
        }
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The writer thread: writes whatever is queued as one synced batch.
pub(super) fn writer_loop(io: Io, queued: Arc<AtomicUsize>, rx: mpsc::Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        ops.extend(rx.try_iter());
        // `Stop` is sent past the count (see `WriterThread::stop`).
        let n = ops.iter().filter(|op| !matches!(op, Op::Stop)).count();
        let stopping = io.write(ops);
        queued.fetch_sub(n, Ordering::AcqRel);
        if stopping {
            return;
        }
    }
}

/// What a write needs: shared by the writer thread and [`LogStore`](super::LogStore)'s own writes.
#[derive(Clone)]
pub(super) struct Io {
    pub(super) wal: Arc<Wal>,
    /// The applied state's durability, ensured before a purge.
    pub(super) state: Arc<StateSync>,
    pub(super) pending: Pending,
    pub(super) recent: Recent,
    pub(super) hint: Hint,
    /// Shared with [`LogStore`](super::LogStore), for the flush callbacks waiting in
    /// [`Flushes`](crate::raft::flush::Flushes).
    pub(super) early: Arc<std::sync::OnceLock<Early>>,
    /// See [`STALL_LEADER_WRITES`].
    pub(super) stall: Option<std::path::PathBuf>,
}

/// A record's owned parts, until the write borrows them.
enum Owned {
    Entry(u64, Vec<u8>),
    Vote(Vec<u8>),
    Committed(Vec<u8>),
    Truncate(u64),
    Purge(u64, Vec<u8>),
}

/// One thing a log write did, for [`Io::remember`].
enum Change {
    /// An entry's index, and where its encoded bytes are in the write's records.
    Written(u64, usize),
    Truncated(u64),
    Purged(u64),
}

impl Io {
    /// Tells `recent` what a write did, in order (its written entries' bytes are taken from
    /// `owned`). After a failed write nothing is kept: the log is unusable from then on.
    fn remember(&self, changes: Vec<Change>, owned: &mut [Owned], ok: bool) {
        let mut recent = self.recent.write();
        if !ok {
            recent.clear();
            return;
        }
        for change in changes {
            match change {
                Change::Written(index, at) => {
                    if let Some(Owned::Entry(_, bytes)) = owned.get_mut(at) {
                        recent.written(index, std::mem::take(bytes));
                    }
                }
                Change::Truncated(from) => recent.truncated(from),
                Change::Purged(upto) => recent.purged(upto),
            }
        }
        recent.trim();
    }

    /// Writes `ops` and the pending hint as one synced log write, then fires their
    /// callbacks. Returns whether one of them was [`Op::Stop`].
    pub(super) fn write(&self, ops: Vec<Op>) -> bool {
        let mut owned = Vec::with_capacity(ops.len() + 1);
        if let Some(h) = self.hint.lock().take() {
            owned.push(Owned::Committed(h));
        }
        let mut written: Vec<LogId> = Vec::new();
        let mut callbacks = Vec::new();
        // The last entry of appends whose callbacks wait in `flushes`.
        let mut waiting: Option<u64> = None;
        let mut client_entries = false;
        let mut dones = Vec::new();
        let mut purging: Option<u64> = None;
        let mut stopping = false;
        let mut failed: Option<String> = None;
        // What the write does to the log, in order, for `recent` once it has succeeded.
        let mut changes: Vec<Change> = Vec::new();
        for op in ops {
            match op {
                Op::Stop => stopping = true,
                Op::Append(entries, cb) => {
                    let normal = self.stall.is_some()
                        && entries.iter().any(|e| matches!(e.payload, openraft::EntryPayload::Normal(_)));
                    for e in entries {
                        match encode(&e) {
                            Ok(bytes) => {
                                changes.push(Change::Written(e.log_id.index, owned.len()));
                                owned.push(Owned::Entry(e.log_id.index, bytes));
                            }
                            Err(err) => failed = Some(err.to_string()),
                        }
                        written.push(e.log_id);
                    }
                    match cb {
                        Some(cb) => callbacks.push(cb),
                        None => {
                            waiting = waiting.max(written.last().map(|id| id.index));
                            client_entries |= normal;
                        }
                    }
                }
                Op::Truncate(from, done) => {
                    owned.push(Owned::Truncate(from));
                    changes.push(Change::Truncated(from));
                    dones.push(done);
                }
                Op::Purge(upto, done) => {
                    match encode(&upto) {
                        Ok(bytes) => owned.push(Owned::Purge(upto.index, bytes)),
                        Err(err) => failed = Some(err.to_string()),
                    }
                    purging = purging.max(Some(upto.index));
                    changes.push(Change::Purged(upto.index));
                    dones.push(done);
                }
                Op::Vote(v, done) => {
                    owned.push(Owned::Vote(v));
                    dones.push(done);
                }
            }
        }
        let mut result: Result<(), String> = match failed {
            Some(e) => Err(e),
            None => Ok(()),
        };
        if let (Some(upto), true) = (purging, result.is_ok()) {
            result = self.state.ensure(upto).map_err(|e| e.to_string());
        }
        if let (Some(stall), true) = (self.stall.as_ref(), client_entries) {
            if stall.exists() {
                tracing::warn!("failpoint: the leader's log write stalls");
                while stall.exists() {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
        let started = std::time::Instant::now();
        let entries = written.len();
        if result.is_ok() && !owned.is_empty() {
            let records: Vec<Record<'_>> = owned
                .iter()
                .map(|o| match o {
                    Owned::Entry(i, b) => Record::Entry(*i, b),
                    Owned::Vote(v) => Record::Vote(v),
                    Owned::Committed(c) => Record::Committed(c),
                    Owned::Truncate(i) => Record::Truncate(*i),
                    Owned::Purge(i, id) => Record::Purge(*i, id),
                })
                .collect();
            result = self.wal.write(&records).map_err(|e| e.to_string());
        }
        tracing::debug!(target: "keel_store::raft::rpc", entries, micros = started.elapsed().as_micros() as u64, "log write");
        if started.elapsed() >= SLOW_WRITE {
            tracing::warn!(entries, ms = started.elapsed().as_millis() as u64, "slow log write (fsync)");
        }
        self.remember(changes, &mut owned, result.is_ok());
        if result.is_ok() && !written.is_empty() {
            let mut p = self.pending.write();
            for id in &written {
                if p.get(&id.index).is_some_and(|e| e.log_id == *id) {
                    p.remove(&id.index);
                }
            }
        }
        if let (Some(upto), Some(early)) = (waiting, self.early.get()) {
            early.flushes.written(upto, &result);
        }
        for cb in callbacks {
            cb.log_io_completed(result.clone().map_err(std::io::Error::other));
        }
        for d in dones {
            let _ = d.send(result.clone());
        }
        stopping
    }
}
