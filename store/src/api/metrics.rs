//! `GET /metrics`: the member's state in Prometheus' text format, under etcd's metric names,
//! so dashboards and alerts written for etcd (and `etcdctl check datascale`, which reads
//! `process_resident_memory_bytes`) work against Keel. Values are read when scraped.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use super::maintenance::{CLUSTER_VERSION, ETCD_VERSION};
use crate::node::Node;
use crate::watch::WatchHub;

/// The gauges, and what they are read from.
struct Metrics {
    registry: Registry,
    node: Arc<Node>,
    hub: Arc<WatchHub>,
    has_leader: IntGauge,
    is_leader: IntGauge,
    is_learner: IntGauge,
    committed: IntGauge,
    applied: IntGauge,
    db_size: IntGauge,
    db_size_in_use: IntGauge,
    keys: IntGauge,
    watchers: IntGauge,
    auth_revision: IntGauge,
    current_revision: IntGauge,
    compact_revision: IntGauge,
    leader_changes: IntCounter,
}

fn gauge(registry: &Registry, subsystem: &str, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::with_opts(Opts::new(name, help).namespace("etcd").subsystem(subsystem))?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Metrics {
    fn new(node: Arc<Node>, hub: Arc<WatchHub>) -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        crate::metrics::HOT.register(&registry)?;
        let version = IntGaugeVec::new(
            Opts::new("version", "Which version is running. 1 for 'server_version' label with current version.")
                .namespace("etcd")
                .subsystem("server"),
            &["server_version"],
        )?;
        registry.register(Box::new(version.clone()))?;
        version.with_label_values(&[ETCD_VERSION]).set(1);
        for (subsystem, name, help, label, value) in [
            (
                "server",
                "id",
                "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
                "server_id",
                format!("{:x}", node.id),
            ),
            (
                "",
                "cluster_version",
                "Which version is running. 1 for 'cluster_version' label with current cluster version",
                "cluster_version",
                // Major and minor only, as etcd labels it.
                CLUSTER_VERSION.rsplit_once('.').map_or(CLUSTER_VERSION, |(v, _)| v).to_string(),
            ),
        ] {
            let g = IntGaugeVec::new(Opts::new(name, help).namespace("etcd").subsystem(subsystem), &[label])?;
            registry.register(Box::new(g.clone()))?;
            g.with_label_values(&[value.as_str()]).set(1);
        }
        let leader_changes = IntCounter::with_opts(
            Opts::new("leader_changes_seen_total", "The number of leader changes seen.")
                .namespace("etcd")
                .subsystem("server"),
        )?;
        registry.register(Box::new(leader_changes.clone()))?;
        Ok(Metrics {
            leader_changes,
            has_leader: gauge(
                &registry,
                "server",
                "has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
            )?,
            is_leader: gauge(
                &registry,
                "server",
                "is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            )?,
            is_learner: gauge(
                &registry,
                "server",
                "is_learner",
                "Whether or not this member is a learner. 1 if is, 0 otherwise.",
            )?,
            committed: gauge(
                &registry,
                "server",
                "proposals_committed_total",
                "The total number of consensus proposals committed.",
            )?,
            applied: gauge(
                &registry,
                "server",
                "proposals_applied_total",
                "The total number of consensus proposals applied.",
            )?,
            db_size: gauge(
                &registry,
                "mvcc",
                "db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
            )?,
            db_size_in_use: gauge(
                &registry,
                "mvcc",
                "db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes.",
            )?,
            keys: gauge(&registry, "debugging_mvcc", "keys_total", "Total number of keys.")?,
            watchers: gauge(&registry, "debugging_mvcc", "watcher_total", "Total number of watchers.")?,
            auth_revision: gauge(&registry, "debugging_auth", "revision", "The current revision of auth store.")?,
            current_revision: gauge(&registry, "debugging_mvcc", "current_revision", "The current revision of store.")?,
            compact_revision: gauge(
                &registry,
                "debugging_mvcc",
                "compact_revision",
                "The revision of the last compaction in store.",
            )?,
            registry,
            node,
            hub,
        })
    }

    fn scrape(&self) -> Result<Vec<u8>, prometheus::Error> {
        let n = &self.node;
        let m = n.raft.metrics().borrow().clone();
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.has_leader.set(i64::from(m.current_leader.is_some()));
        self.is_leader.set(i64::from(m.current_leader == Some(n.id)));
        self.is_learner.set(i64::from(n.is_learner()));
        // openraft's metrics carry no commit index: what this member has applied is the
        // committed index it knows of, at most a few entries behind it.
        let applied = n.applied.last_applied().map_or(0, |l| to_i64(l.index));
        self.committed.set(applied);
        self.applied.set(applied);
        let db = to_i64(n.store.engine().size());
        self.db_size.set(db);
        self.db_size_in_use.set(db);
        self.keys.set(n.store.with_index(|index, _, _| i64::try_from(index.len()).unwrap_or(i64::MAX)));
        self.watchers.set(i64::try_from(self.hub.watcher_count()).unwrap_or(i64::MAX));
        self.auth_revision.set(to_i64(n.auth.revision()));
        self.current_revision.set(n.store.current_revision());
        // etcd's before any compaction: -1.
        self.compact_revision.set(match n.store.compact_revision() {
            0 => -1,
            r => r,
        });
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

/// Counts the leaders this member sees come in, as etcd's `leader_changes_seen_total` does,
/// until Raft stops.
async fn count_leader_changes(node: Arc<Node>, counter: IntCounter) {
    let mut rx = node.raft.metrics();
    let mut leader = None;
    loop {
        let now = rx.borrow_and_update().current_leader;
        if now.is_some() && now != leader {
            counter.inc();
        }
        leader = now;
        if rx.changed().await.is_err() {
            return;
        }
    }
}

pub fn router(node: Arc<Node>, hub: Arc<WatchHub>) -> Router {
    match Metrics::new(node, hub) {
        Ok(m) => {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(count_leader_changes(m.node.clone(), m.leader_changes.clone()));
            }
            Router::new().route("/metrics", get(metrics)).with_state(Arc::new(m))
        }
        Err(e) => {
            tracing::error!(error = %e, "metrics unavailable");
            Router::new()
        }
    }
}

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    match m.scrape() {
        Ok(out) => (StatusCode::OK, [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], out).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
