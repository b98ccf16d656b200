//! `--auto-compaction-retention`: the leader compacts old history on a schedule.
//!
//! Revision mode keeps the last N revisions, checked every 5 minutes (as etcd's revision
//! compactor). Periodic mode samples the revision every tenth of the retention window
//! (capped at an hour) and compacts to the newest sample at least one window old, so the
//! store keeps roughly `retention` worth of history. Only the leader proposes; every
//! member applies the compaction through Raft.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::AutoCompaction;
use crate::node::Node;
use crate::proto::etcdserverpb::CompactionRequest;
use crate::proto::keelpb::raft_request::Command;

const REVISION_CHECK: Duration = Duration::from_secs(300);

pub async fn run(node: Arc<Node>, mode: AutoCompaction, stop: CancellationToken) {
    let tick = match mode {
        AutoCompaction::Off => return,
        AutoCompaction::Revision(_) => REVISION_CHECK,
        AutoCompaction::Periodic(d) => (d.min(Duration::from_secs(3600)) / 10).max(Duration::from_millis(100)),
    };
    let mut samples: VecDeque<(Instant, i64)> = VecDeque::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.cancelled() => return,
        }
        let now = Instant::now();
        let current = node.store.current_revision();
        samples.push_back((now, current));
        let target = match mode {
            AutoCompaction::Off => return,
            AutoCompaction::Revision(keep) => current - keep,
            AutoCompaction::Periodic(window) => {
                // Drop samples older than the newest one that is at least a window old.
                while samples.len() > 1 && now.duration_since(samples[1].0) >= window {
                    samples.pop_front();
                }
                match samples.front() {
                    Some((t, rev)) if now.duration_since(*t) >= window => *rev,
                    _ => continue,
                }
            }
        };
        if node.leader() != Some(node.id) || target <= node.store.compact_revision() {
            continue;
        }
        let cmd = Command::Compaction(CompactionRequest { revision: target, physical: false });
        match node.propose(cmd).await {
            Ok(_) => tracing::info!(revision = target, "auto compaction"),
            Err(e) => tracing::debug!(error = %e, revision = target, "auto compaction skipped"),
        }
    }
}
