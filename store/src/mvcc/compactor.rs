//! Physical compaction: deleting history that no read can reach any more.
//!
//! Compaction first drops old revisions from the index (under the write lock, in the
//! apply path); the revisions at or below the compaction point that reads still need are
//! the `keep` list. This module then deletes every other stored revision at or below it,
//! in the background and in bounded batches, and records how far it got so a restart
//! resumes it. Readers never ask for the deleted revisions, so they need no coordination.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

use super::revision::Revision;
use crate::engine::{Cf, Engine, EngineError, WriteBatch};

pub(super) const META_COMPACT_DONE: &[u8] = b"compact_done";
/// Revisions deleted in one write, unless `--experimental-compaction-batch-limit` says.
const BATCH: usize = 1000;

/// The store's physical compactions: each runs on a thread of its own, one at a time, and
/// all are stopped and joined when the store is dropped, so none outlives the store's
/// storage. (They used to be detached, so a database could still be open, and in use,
/// while the process exited and ran RocksDB's static destructors; a test process that had
/// just passed its test once aborted at exit with "double free or corruption", which is
/// what that race looks like.) A compaction stopped part-way is taken up again at the next
/// start, which finds the compaction point ahead of the one recorded as done.
#[derive(Default)]
pub(super) struct Compactions {
    /// Held by the running compaction: they delete in order.
    serial: Arc<Mutex<()>>,
    stop: Arc<AtomicBool>,
    /// Revisions deleted in one write; 0: [`BATCH`].
    batch: Arc<AtomicUsize>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Compactions {
    /// Deletes the stored revisions at or below `at` that are not in `keep`, in the
    /// background; `done` is told `at` when it is finished.
    pub(super) fn spawn(&self, engine: Engine, at: i64, keep: Vec<Revision>, done: tokio::sync::watch::Sender<i64>) {
        let (serial, stop) = (self.serial.clone(), self.stop.clone());
        let batch = match self.batch.load(Ordering::Relaxed) {
            0 => BATCH,
            n => n,
        };
        let mut threads = self.threads.lock();
        threads.retain(|t| !t.is_finished());
        let spawned = std::thread::Builder::new().name("keel-compactor".into()).spawn(move || {
            let _serial = serial.lock();
            match run(&engine, at, &keep, batch, &stop) {
                Ok(true) => {
                    done.send_if_modified(|d| {
                        let advanced = at > *d;
                        *d = (*d).max(at);
                        advanced
                    });
                }
                Ok(false) => tracing::debug!(at, "physical compaction stopped with the store"),
                Err(e) => tracing::error!(error = %e, at, "physical compaction failed"),
            }
        });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => tracing::error!(error = %e, "cannot start the compactor thread"),
        }
    }

    /// Deletes at most `n` revisions in one write from now on.
    pub(super) fn set_batch(&self, n: usize) {
        self.batch.store(n, Ordering::Relaxed);
    }

    /// Stops the compactions under way and waits for their threads.
    fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Compactions {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Returns whether it finished (`false`: stopped before the end).
fn run(engine: &Engine, at: i64, keep: &[Revision], batch_max: usize, stop: &AtomicBool) -> Result<bool, EngineError> {
    let end = Revision::lower_bound_key(at + 1);
    let mut batch = WriteBatch::default();
    let mut deleted = 0usize;
    for item in engine.scan(Cf::Kv, &[], Some(&end))? {
        if stop.load(Ordering::Acquire) {
            return Ok(false);
        }
        let (k, _) = item?;
        let Some((rev, _)) = Revision::from_key(&k) else { continue };
        if keep.binary_search(&rev).is_err() {
            batch.delete(Cf::Kv, k.to_vec());
            deleted += 1;
        }
        if batch.len() >= batch_max {
            engine.write(std::mem::take(&mut batch), false)?;
        }
    }
    batch.put(Cf::Meta, META_COMPACT_DONE, at.to_be_bytes().to_vec());
    engine.write(batch, false)?;
    tracing::debug!(at, deleted, "physical compaction finished");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any batch size deletes the same: everything at or below the point but what is kept.
    #[test]
    fn the_batch_limit_changes_the_writes_not_what_is_deleted() -> Result<(), Box<dyn std::error::Error>> {
        for batch_max in [1, 7, 1000] {
            let dir = tempfile::tempdir()?;
            let engine = Engine::open(dir.path())?;
            let mut batch = WriteBatch::default();
            for main in 1..=100 {
                batch.put(Cf::Kv, Revision::new(main, 0).to_key(false), vec![0u8; 16]);
            }
            engine.write(batch, false)?;
            let keep = [Revision::new(10, 0), Revision::new(50, 0)];
            assert!(run(&engine, 60, &keep, batch_max, &AtomicBool::new(false))?);
            let left: Vec<i64> = engine
                .scan(Cf::Kv, &[], None)?
                .filter_map(|item| item.ok().and_then(|(k, _)| Revision::from_key(&k)).map(|(r, _)| r.main))
                .collect();
            let expected: Vec<i64> = [10, 50].into_iter().chain(61..=100).collect();
            assert_eq!(left, expected, "batches of {batch_max}");
        }
        Ok(())
    }

    #[test]
    fn dropping_the_compactions_stops_them_and_lets_go_of_storage() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let engine = Engine::open(dir.path())?;
        // Enough history that deleting it takes a while.
        let mut batch = WriteBatch::default();
        for main in 1..=50_000 {
            batch.put(Cf::Kv, Revision::new(main, 0).to_key(false), vec![0u8; 16]);
        }
        engine.write(batch, false)?;
        let (done, mut told) = tokio::sync::watch::channel(0);
        let compactions = Compactions::default();
        compactions.spawn(engine.clone(), 50_000, Vec::new(), done);
        drop(engine);
        drop(compactions);
        // No thread holds the database any more: it opens again (RocksDB refuses a second
        // open of a database this process has open), and a compaction cut short did not
        // report itself done.
        let engine = Engine::open(dir.path())?;
        if *told.borrow_and_update() == 50_000 {
            // It finished before the stop; then it recorded that.
            assert!(engine.get(Cf::Meta, META_COMPACT_DONE)?.is_some());
        } else {
            assert!(engine.get(Cf::Meta, META_COMPACT_DONE)?.is_none());
        }
        Ok(())
    }
}
