//! The storage engine boundary: the only module that names RocksDB.
//!
//! Everything above (the MVCC rules, the Raft log store, leases) works on the small API
//! here, in our own types: column families are an enum, batches are [`WriteBatch`], and
//! errors are [`EngineError`]. Keeping `rocksdb::` out of the layers above lets us test
//! them in isolation and swap the engine without touching them (TiKV's `engine_traits`
//! lesson).
//!
//! A member's RocksDB instance holds the state machine ([`Cf::STATE_MACHINE`]), written
//! without a WAL by the apply path, which Raft can replay. The Raft log is not here: it has a
//! file format of its own (`raft::wal`), so applies never queue behind log fsyncs.

mod snapshot;

use std::path::Path;
use std::sync::Arc;

pub use snapshot::EngineSnapshot;

/// Bytes per memtable (per column family): also the most a flush writes at once.
const MEMTABLE_BYTES: usize = 4 << 20;

/// One stored key and value, as iterators return them.
pub type KvPair = (Box<[u8]>, Box<[u8]>);

/// A column family: one keyspace with its own purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cf {
    /// MVCC history: revision (+ tombstone mark) → encoded `mvccpb.KeyValue`.
    Kv,
    /// State-machine metadata: last applied log id, membership, compaction marks.
    Meta,
    /// Leases: id → encoded lease.
    Lease,
}

impl Cf {
    /// The column families that make up the replicated state machine (what a snapshot holds).
    pub const STATE_MACHINE: [Cf; 3] = [Cf::Kv, Cf::Meta, Cf::Lease];

    fn name(self) -> &'static str {
        match self {
            Cf::Kv => "kv",
            Cf::Meta => "meta",
            Cf::Lease => "lease",
        }
    }

    /// A stable one-byte tag, used in snapshot files (0 and 1 were the Raft log's).
    pub fn tag(self) -> u8 {
        match self {
            Cf::Kv => 2,
            Cf::Meta => 3,
            Cf::Lease => 4,
        }
    }

    pub fn from_tag(tag: u8) -> Option<Cf> {
        Cf::STATE_MACHINE.into_iter().find(|cf| cf.tag() == tag)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("column family {0} is missing")]
    MissingCf(&'static str),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// A set of writes applied atomically by [`Engine::write`].
#[derive(Default)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
}

enum BatchOp {
    Put(Cf, Vec<u8>, Vec<u8>),
    Delete(Cf, Vec<u8>),
    DeleteRange(Cf, Vec<u8>, Vec<u8>),
}

impl WriteBatch {
    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Put(cf, key.into(), value.into()));
    }
    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Delete(cf, key.into()));
    }
    /// Deletes `[from, to)`.
    pub fn delete_range(&mut self, cf: Cf, from: impl Into<Vec<u8>>, to: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::DeleteRange(cf, from.into(), to.into()));
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// One RocksDB instance. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    db: Arc<rocksdb::DB>,
    cfs: &'static [Cf],
}

impl Engine {
    /// Opens (creating if needed) the state-machine database in `path`.
    pub fn open(path: &Path) -> Result<Engine, EngineError> {
        Self::open_with(path, &Cf::STATE_MACHINE)
    }

    fn open_with(path: &Path, cfs: &'static [Cf]) -> Result<Engine, EngineError> {
        std::fs::create_dir_all(path)?;
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_bytes_per_sync(1 << 20);
        // Compactions run at the lowest CPU priority (nice 19), flushes at normal priority.
        // A compaction is CPU work (decompress, merge, compress) that nothing waits for, and
        // the three members of a one-machine cluster compact together, since they apply the
        // same writes: after 100,000 puts, a chain of compactions on each member took 0.2-0.6 s
        // of a later single-client run, and 23-50 of its 100 slowest puts fell inside them
        // (4-14 at the lowest priority, three runs each). Under 300,000 puts from 100 clients,
        // which keep both cores busy, compactions still kept level 0 at one file, with no
        // write stalls.
        let mut env = rocksdb::Env::new()?;
        env.lower_thread_pool_cpu_priority();
        opts.set_env(&env);
        // No RocksDB WAL: the Raft log is the state machine's write-ahead log (as etcd's WAL
        // is for its bbolt file). Writes go to the memtables only; the state reaches disk when
        // RocksDB flushes them (a full memtable, or `persist` before the Raft log is purged),
        // and a restart replays the log from the last applied entry that was flushed. Atomic
        // flushes keep the column families at one point of the write sequence, so what a
        // crash leaves is always a prefix of the writes, as a WAL would have recovered.
        // (Writing and writing back a WAL cost each member a write per applied entry and a
        // stream of writeback that queued with the log fsyncs on the disk.)
        opts.set_atomic_flush(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let mut block = rocksdb::BlockBasedOptions::default();
        block.set_block_cache(&rocksdb::Cache::new_lru_cache(64 << 20));
        block.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&block);
        let descriptors = cfs.iter().map(|cf| {
            let mut o = rocksdb::Options::default();
            // Small memtables: without a WAL, a flush is how the state reaches disk, and the
            // flush before a purge must not be a burst of tens of megabytes queued with the
            // log's fsyncs (64 MiB, RocksDB's default, measured worse on the one-client put
            // tail after heavy load). Room for four, so writes do not wait for a flush under way.
            o.set_write_buffer_size(MEMTABLE_BYTES);
            o.set_max_write_buffer_number(4);
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            o.set_block_based_table_factory(&block);
            rocksdb::ColumnFamilyDescriptor::new(cf.name(), o)
        });
        let db = rocksdb::DB::open_cf_descriptors(&opts, path, descriptors)?;
        Ok(Engine { db: Arc::new(db), cfs })
    }

    fn handle(&self, cf: Cf) -> Result<&rocksdb::ColumnFamily, EngineError> {
        self.db.cf_handle(cf.name()).ok_or(EngineError::MissingCf(cf.name()))
    }

    /// Applies a batch atomically (to the memtables: see [`Engine::open`]). With `sync`,
    /// returns only once it and every write before it are on disk ([`Engine::persist`]).
    pub fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), EngineError> {
        let _commit = crate::metrics::Timer::start(&crate::metrics::HOT.backend_commit);
        let mut wb = rocksdb::WriteBatch::default();
        for op in batch.ops {
            match op {
                BatchOp::Put(cf, k, v) => wb.put_cf(self.handle(cf)?, k, v),
                BatchOp::Delete(cf, k) => wb.delete_cf(self.handle(cf)?, k),
                BatchOp::DeleteRange(cf, a, b) => wb.delete_range_cf(self.handle(cf)?, a, b),
            }
        }
        let mut wo = rocksdb::WriteOptions::default();
        wo.disable_wal(true);
        self.db.write_opt(wb, &wo)?;
        if sync {
            self.persist()?;
        }
        Ok(())
    }

    /// Makes every write so far durable: flushes the memtables of all column families, as
    /// one atomic flush, and waits for it (the new table files and the manifest are synced).
    pub fn persist(&self) -> Result<(), EngineError> {
        let handles = self.cfs.iter().map(|cf| self.handle(*cf)).collect::<Result<Vec<_>, _>>()?;
        let mut fo = rocksdb::FlushOptions::default();
        fo.set_wait(true);
        self.db.flush_cfs_opt(&handles, &fo)?;
        Ok(())
    }

    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.db.get_cf(self.handle(cf)?, key)?)
    }

    /// Reads many keys at once; the result has one slot per key, in order.
    pub fn multi_get(&self, cf: Cf, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, EngineError> {
        let h = self.handle(cf)?;
        self.db.batched_multi_get_cf(h, keys.iter(), false).into_iter().map(|r| Ok(r?.map(|p| p.to_vec()))).collect()
    }

    /// Iterates `[from, to)` (to `None` = the end of the keyspace) in key order.
    pub fn scan(
        &self,
        cf: Cf,
        from: &[u8],
        to: Option<&[u8]>,
    ) -> Result<impl Iterator<Item = Result<KvPair, EngineError>> + '_, EngineError> {
        let mut ro = rocksdb::ReadOptions::default();
        if let Some(to) = to {
            ro.set_iterate_upper_bound(to.to_vec());
        }
        let it = self.db.iterator_cf_opt(
            self.handle(cf)?,
            ro,
            rocksdb::IteratorMode::From(from, rocksdb::Direction::Forward),
        );
        Ok(it.map(|r| r.map_err(EngineError::from)))
    }

    /// The last key-value pair of a column family, if any.
    pub fn last(&self, cf: Cf) -> Result<Option<KvPair>, EngineError> {
        let mut it = self.db.iterator_cf(self.handle(cf)?, rocksdb::IteratorMode::End);
        Ok(it.next().transpose()?)
    }

    /// A consistent point-in-time view for reads.
    pub fn snapshot(&self) -> EngineSnapshot<'_> {
        EngineSnapshot::new(self)
    }

    /// Approximate bytes on disk and in memtables: what etcd reports as the db size.
    pub fn size(&self) -> u64 {
        let mut total = 0;
        for cf in self.cfs.iter().copied() {
            if let Ok(h) = self.handle(cf) {
                for p in ["rocksdb.total-sst-files-size", "rocksdb.cur-size-all-mem-tables"] {
                    total += self.db.property_int_value_cf(h, p).ok().flatten().unwrap_or(0);
                }
            }
        }
        total
    }

    /// Compacts every column family's files (etcd's defragment).
    pub fn compact_all(&self) -> Result<(), EngineError> {
        for cf in self.cfs.iter().copied() {
            self.db.compact_range_cf(self.handle(cf)?, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }
}
