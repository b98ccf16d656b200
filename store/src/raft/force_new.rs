//! `--force-new-cluster`: disaster recovery when a majority of the members is gone for
//! good. The surviving member keeps its data, its member ID and the cluster ID, and starts
//! as a one-member cluster: the rest of its log is applied, the old Raft log is set aside
//! (`<wal-dir>.before-force-new-cluster`), and its snapshots and the old membership are
//! forgotten, as a restored backup's are.
//!
//! A cluster that starts on data it did not get from its own log (forced, or restored from
//! a backup) snapshots it once it has a leader and drops the log before it
//! ([`seed_snapshot`]), so that members added later get the data by snapshot; otherwise
//! they would replay the new log alone.

use std::path::Path;
use std::sync::Arc;

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};

use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::wal::Wal;
use super::NodeId;
use crate::auth::AuthStore;
use crate::engine::Engine;
use crate::mvcc::MvccStore;

/// Readies the data directory for a forced one-member cluster: `Some((member, cluster))`
/// to start it with, or `None` if `wal` holds no member yet (a fresh directory starts as
/// usual). Consumes `wal` (it is closed and moved aside).
pub async fn prepare(
    wal: Arc<Wal>,
    wal_dir: &Path,
    engine: &Engine,
    store: &Arc<MvccStore>,
    auth: &Arc<AuthStore>,
    snap_dir: &Path,
) -> Result<Option<(NodeId, u64)>, String> {
    let Some((id, cluster_id)) = wal.meta().identity else {
        wal.close();
        return Ok(None);
    };
    tracing::warn!(member = %format!("{id:x}"), "forcing a new one-member cluster from this member's data");
    catch_up(&wal, store, auth, snap_dir).await?;
    // Everything applied is on disk before the log it came from is set aside.
    engine.persist().map_err(|e| e.to_string())?;
    wal.close();
    drop(wal);
    let aside = wal_dir.with_extension("before-force-new-cluster");
    if aside.exists() {
        std::fs::remove_dir_all(&aside).map_err(|e| format!("{}: {e}", aside.display()))?;
    }
    std::fs::rename(wal_dir, &aside).map_err(|e| format!("{}: {e}", wal_dir.display()))?;
    // The snapshots are of the old log; the data they hold is in the database already.
    for item in std::fs::read_dir(snap_dir).map_err(|e| format!("{}: {e}", snap_dir.display()))? {
        let p = item.map_err(|e| e.to_string())?.path();
        let removed = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        removed.map_err(|e| format!("{}: {e}", p.display()))?;
    }
    // The alarms stay: they name this member or members that may come back under their IDs.
    crate::api::backup::forget_cluster(engine, false).map_err(|e| e.to_string())?;
    Ok(Some((id, cluster_id)))
}

/// Applies every entry of the log this member had not applied (its database keeps only
/// what was flushed; a normal start applies the rest again from the log). All of them, not
/// only those up to the committed index the log records: Keel records that index lazily,
/// with the next write, so the last entries a member applied (and acknowledged) may lie
/// past it. An entry past it that never was committed was never acknowledged either, and
/// may take effect.
async fn catch_up(
    wal: &Arc<Wal>,
    store: &Arc<MvccStore>,
    auth: &Arc<AuthStore>,
    snap_dir: &Path,
) -> Result<(), String> {
    let raft = |e: openraft::StorageError<NodeId>| e.to_string();
    let mut sm = StateMachine::open(store.clone(), auth.clone(), snap_dir.to_path_buf()).map_err(raft)?;
    let mut log = LogStore::new(wal.clone(), sm.state_sync()).map_err(|e| e.to_string())?;
    let applied = async {
        let last = log.get_log_state().await?.last_log_id;
        let (applied, _) = sm.applied_state().await?;
        let from = applied.map_or(0, |l| l.index + 1);
        if let Some(last) = last.filter(|l| l.index >= from) {
            let entries = log.try_get_log_entries(from..=last.index).await?;
            tracing::info!(from, to = last.index, entries = entries.len(), "applying the rest of the log");
            sm.apply(entries).await?;
        }
        Ok::<(), openraft::StorageError<NodeId>>(())
    }
    .await;
    let closing = log.clone();
    let _ = tokio::task::spawn_blocking(move || closing.close()).await;
    applied.map_err(raft)
}

/// Once this member has applied the new cluster's first entry, takes a snapshot and drops
/// the log it covers, so that a member added later is sent the snapshot, data and all.
pub async fn seed_snapshot(raft: super::Raft) {
    let mut rx = raft.metrics();
    let ready = |m: &openraft::RaftMetrics<NodeId, super::Member>| m.last_applied.is_some();
    if rx.wait_for(ready).await.is_err() {
        return;
    }
    if let Err(e) = raft.trigger().snapshot().await {
        tracing::warn!(error = %e, "snapshotting the data this cluster started with");
        return;
    }
    let taken = rx.wait_for(|m| m.snapshot.is_some()).await.ok().and_then(|m| m.snapshot);
    if let Some(s) = taken {
        if let Err(e) = raft.trigger().purge_log(s.index).await {
            tracing::warn!(error = %e, "dropping the log the first snapshot covers");
        }
        tracing::info!(index = s.index, "the data this cluster started with is in a snapshot");
    }
}
