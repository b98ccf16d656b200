//! A point-in-time read view over the engine (a RocksDB snapshot).

use super::{Cf, Engine, EngineError, KvPair};

/// Reads through this view see the database as it was when the view was taken, even
/// while writes and compaction go on.
pub struct EngineSnapshot<'a> {
    engine: &'a Engine,
    snap: rocksdb::Snapshot<'a>,
}

impl<'a> EngineSnapshot<'a> {
    pub(super) fn new(engine: &'a Engine) -> Self {
        EngineSnapshot { engine, snap: engine.db.snapshot() }
    }

    pub fn multi_get(&self, cf: Cf, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, EngineError> {
        let h = self.engine.handle(cf)?;
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_snapshot(&self.snap);
        self.engine
            .db
            .batched_multi_get_cf_opt(h, keys.iter(), false, &ro)
            .into_iter()
            .map(|r| Ok(r?.map(|p| p.to_vec())))
            .collect()
    }

    /// Iterates a whole column family in key order, as of the snapshot.
    pub fn scan_all(&self, cf: Cf) -> Result<impl Iterator<Item = Result<KvPair, EngineError>> + '_, EngineError> {
        let h = self.engine.handle(cf)?;
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_snapshot(&self.snap);
        let it = self.engine.db.iterator_cf_opt(h, ro, rocksdb::IteratorMode::Start);
        Ok(it.map(|r| r.map_err(EngineError::from)))
    }
}
