//! Physical compaction: deleting history that no read can reach any more.
//!
//! Compaction first drops old revisions from the index (under the write lock, in the
//! apply path); the revisions at or below the compaction point that reads still need are
//! the `keep` list. This module then deletes every other stored revision at or below it,
//! in the background and in bounded batches, and records how far it got so a restart
//! resumes it. Readers never ask for the deleted revisions, so they need no coordination.

use std::sync::Arc;

use parking_lot::Mutex;

use super::revision::Revision;
use crate::engine::{Cf, Engine, EngineError, WriteBatch};

pub(super) const META_COMPACT_DONE: &[u8] = b"compact_done";
const BATCH: usize = 10_000;

pub(super) fn spawn(
    engine: Engine,
    at: i64,
    keep: Vec<Revision>,
    lock: Arc<Mutex<()>>,
    done: tokio::sync::watch::Sender<i64>,
) {
    std::thread::Builder::new()
        .name("keel-compactor".into())
        .spawn(move || {
            let _serial = lock.lock();
            match run(&engine, at, &keep) {
                Ok(()) => {
                    done.send_if_modified(|d| {
                        let advanced = at > *d;
                        *d = (*d).max(at);
                        advanced
                    });
                }
                Err(e) => tracing::error!(error = %e, at, "physical compaction failed"),
            }
        })
        .map(|_| ())
        .unwrap_or_else(|e| tracing::error!(error = %e, "cannot start the compactor thread"));
}

fn run(engine: &Engine, at: i64, keep: &[Revision]) -> Result<(), EngineError> {
    let end = Revision::lower_bound_key(at + 1);
    let mut batch = WriteBatch::default();
    let mut deleted = 0usize;
    for item in engine.scan(Cf::Kv, &[], Some(&end))? {
        let (k, _) = item?;
        let Some((rev, _)) = Revision::from_key(&k) else { continue };
        if keep.binary_search(&rev).is_err() {
            batch.delete(Cf::Kv, k.to_vec());
            deleted += 1;
        }
        if batch.len() >= BATCH {
            engine.write(std::mem::take(&mut batch), false)?;
        }
    }
    batch.put(Cf::Meta, META_COMPACT_DONE, at.to_be_bytes().to_vec());
    engine.write(batch, false)?;
    tracing::debug!(at, deleted, "physical compaction finished");
    Ok(())
}
