//! Keeping the Raft log bounded in bytes, not only in entries.
//!
//! openraft takes a snapshot every `--snapshot-count` entries and then purges the log, keeping
//! `min(5000, --snapshot-count)` entries for followers that lag. etcd does the same, with one
//! client request per entry. Keel's batcher puts up to 1,024 requests (2 MiB) into one
//! entry, so under load the log grew with the batch size: 100 clients writing 2 KiB values
//! left about 380 MB of log on each member (six 64 MiB segments) where etcd's would hold
//! about 30 MB, and large values could have filled a disk before the first snapshot.
//!
//! So each member also watches its log's size: once the entries after its last snapshot
//! hold `limit` bytes it takes a snapshot, and once a snapshot is taken it purges the log
//! through the newest entry that still leaves `limit` bytes behind it (never past the
//! snapshot; openraft also holds a purge back while a replication needs the entries). A
//! follower further behind than that catches up from a snapshot, as it would after
//! `--snapshot-count` entries.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::wal::Wal;
use super::TypeConfig;

/// How often the log's size is looked at.
const EVERY: Duration = Duration::from_secs(1);

/// What to do about the log's size.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub snapshot: bool,
    pub purge_through: Option<u64>,
}

/// `snapshot`: the last snapshot's index; `keep_point`: the highest index whose later
/// entries hold the limit's bytes ([`Wal::purge_point`]), which also says whether the
/// entries after the snapshot do (they do if the snapshot is at or before it); `purged`:
/// the last purged index.
pub fn plan(snapshot: Option<u64>, keep_point: Option<u64>, purged: Option<u64>) -> Plan {
    let Some(k) = keep_point else { return Plan { snapshot: false, purge_through: None } };
    let purge_through = snapshot.map(|s| k.min(s)).filter(|p| purged.is_none_or(|done| *p > done));
    Plan { snapshot: snapshot.is_none_or(|s| s <= k), purge_through }
}

/// Runs until `stop`: takes snapshots and purges the log by its size (see the module).
pub async fn run(raft: openraft::Raft<TypeConfig>, wal: Arc<Wal>, limit: u64, stop: CancellationToken) {
    if limit == 0 {
        return;
    }
    // The snapshot index at the last trigger: no second trigger until a newer one is taken.
    let mut asked_at: Option<Option<u64>> = None;
    // The purge asked for and not seen done yet.
    let mut purging: Option<u64> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        let (snapshot, purged) = {
            let m = raft.metrics();
            let m = m.borrow();
            (m.snapshot.map(|l| l.index), m.purged.map(|l| l.index))
        };
        // One walk over the newest `limit` bytes of the log, under the lock the log writer
        // also takes.
        let p = plan(snapshot, wal.purge_point(limit), purged);
        if asked_at.is_some_and(|at| at != snapshot) {
            asked_at = None;
        }
        if p.snapshot && asked_at.is_none() {
            tracing::debug!(limit, "the log since the last snapshot is large: taking a snapshot");
            asked_at = Some(snapshot);
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
        }
        if let Some(upto) = purging.filter(|upto| purged.is_some_and(|done| done >= *upto)) {
            tracing::info!(upto, limit, "the log was purged by its size");
            purging = None;
        }
        if let Some(upto) = p.purge_through.filter(|upto| purging.is_none_or(|asked| *upto > asked)) {
            purging = Some(upto);
            if raft.trigger().purge_log(upto).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_log_is_snapshotted_and_purged_down_to_the_limit() {
        // Small: nothing to do.
        assert_eq!(plan(Some(50), None, Some(10)), Plan { snapshot: false, purge_through: None });
        // The entries since the snapshot reached the limit (the keep point is past it): a
        // snapshot, and a purge no further than the snapshot.
        assert_eq!(plan(Some(50), Some(60), Some(10)), Plan { snapshot: true, purge_through: Some(50) });
        // The purge never passes the snapshot, and is not asked for twice.
        assert_eq!(plan(Some(50), Some(40), Some(10)), Plan { snapshot: false, purge_through: Some(40) });
        assert_eq!(plan(Some(50), Some(40), Some(40)).purge_through, None);
        assert_eq!(plan(Some(50), Some(30), Some(40)).purge_through, None);
        // No snapshot yet: nothing can be purged.
        assert_eq!(plan(None, Some(60), None), Plan { snapshot: true, purge_through: None });
        // Nothing purged yet.
        assert_eq!(plan(Some(50), Some(40), None).purge_through, Some(40));
    }
}
