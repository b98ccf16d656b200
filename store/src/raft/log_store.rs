//! The Raft log and vote, in the engine's `RaftLog` and `RaftState` column families.
//!
//! Contract (openraft `RaftLogStorage`): the vote is durable before `save_vote` returns;
//! appended entries are readable as soon as `append` returns and the flush callback fires
//! only once they are durable. Appends are written without sync and handed to a flusher
//! thread that fsyncs the WAL once for everything queued so far (group commit), then
//! completes the callbacks in order. Truncation and purge record their effect atomically.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader};

use openraft::StorageIOError;

use super::{decode, encode, Entry, LogId, StorageError, TypeConfig, Vote};
use crate::engine::{Cf, Engine, WriteBatch};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

#[derive(Clone)]
pub struct LogStore {
    engine: Engine,
    flusher: mpsc::Sender<LogFlushed<TypeConfig>>,
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

impl LogStore {
    pub fn new(engine: Engine) -> Result<LogStore, std::io::Error> {
        let (tx, rx) = mpsc::channel::<LogFlushed<TypeConfig>>();
        let flush_engine = engine.clone();
        std::thread::Builder::new().name("keel-wal-sync".into()).spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut waiting = vec![first];
                waiting.extend(rx.try_iter());
                let res = flush_engine.sync_wal();
                for cb in waiting {
                    let r = match &res {
                        Ok(()) => Ok(()),
                        Err(e) => Err(std::io::Error::other(e.to_string())),
                    };
                    cb.log_io_completed(r);
                }
            }
        })?;
        Ok(LogStore { engine, flusher: tx })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.engine.get(Cf::RaftState, key).map_err(read_err)? {
            Some(v) => Ok(Some(decode(&v).map_err(read_err)?)),
            None => Ok(None),
        }
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
        let end_key = end.map(index_key);
        let mut out = Vec::new();
        for item in
            self.engine.scan(Cf::RaftLog, &index_key(start), end_key.as_ref().map(|k| &k[..])).map_err(read_err)?
        {
            let (_, v) = item.map_err(read_err)?;
            out.push(decode::<Entry>(&v).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.get_meta(LAST_PURGED)?;
        let last = match self.engine.last(Cf::RaftLog).map_err(read_err)? {
            Some((_, v)) => Some(decode::<Entry>(&v).map_err(read_err)?.log_id),
            None => None,
        };
        Ok(LogState { last_purged_log_id, last_log_id: last.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut b = WriteBatch::default();
        b.put(Cf::RaftState, VOTE, encode(vote).map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))?);
        self.engine.write(b, true).map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut b = WriteBatch::default();
        b.put(Cf::RaftState, COMMITTED, encode(&committed).map_err(write_err)?);
        self.engine.write(b, false).map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut b = WriteBatch::default();
        for e in entries {
            b.put(Cf::RaftLog, index_key(e.log_id.index).to_vec(), encode(&e).map_err(write_err)?);
        }
        self.engine.write(b, false).map_err(write_err)?;
        self.flusher.send(callback).map_err(|_| write_err(std::io::Error::other("the WAL sync thread has stopped")))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut b = WriteBatch::default();
        b.delete_range(Cf::RaftLog, index_key(log_id.index).to_vec(), index_key(u64::MAX).to_vec());
        b.delete(Cf::RaftLog, index_key(u64::MAX).to_vec());
        self.engine.write(b, true).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut b = WriteBatch::default();
        b.put(Cf::RaftState, LAST_PURGED, encode(&log_id).map_err(write_err)?);
        b.delete_range(Cf::RaftLog, index_key(0).to_vec(), index_key(log_id.index + 1).to_vec());
        self.engine.write(b, false).map_err(write_err)
    }
}
