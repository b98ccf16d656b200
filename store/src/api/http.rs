//! Plain HTTP endpoints etcd serves beside gRPC: `/health` and `/version` (`/metrics` is in
//! `metrics.rs`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::maintenance::{CLUSTER_VERSION, ETCD_VERSION};
use crate::node::Node;

pub fn router(node: Arc<Node>) -> Router {
    health_router(node.clone()).merge(Router::new().route("/version", get(version)).with_state(node))
}

pub fn health_router(node: Arc<Node>) -> Router {
    Router::new().route("/health", get(health)).with_state(node)
}

/// `/health?exclude=NOSPACE&serializable=true`: which alarms not to count, and whether a
/// local read will do instead of a linearizable one.
#[derive(Debug, Default)]
struct HealthQuery {
    exclude: Vec<String>,
    serializable: bool,
}

impl HealthQuery {
    fn parse(query: Option<&str>) -> HealthQuery {
        let mut q = HealthQuery::default();
        for pair in query.unwrap_or_default().split('&') {
            match pair.split_once('=') {
                Some(("exclude", alarm)) => q.exclude.push(alarm.to_string()),
                Some(("serializable", v)) => q.serializable = v == "true",
                _ => {}
            }
        }
        q
    }
}

/// As etcd's `/health`: unhealthy while an alarm not excluded is raised, when no leader is
/// known, or when a read (linearizable unless `serializable=true`) fails within a second.
async fn health(State(node): State<Arc<Node>>, uri: axum::http::Uri) -> impl IntoResponse {
    let q = HealthQuery::parse(uri.query());
    let alarm = node
        .store
        .alarms
        .get(crate::proto::etcdserverpb::AlarmType::None)
        .into_iter()
        .map(|a| a.alarm().as_str_name().to_string())
        .find(|name| !q.exclude.contains(name));
    let reason = if let Some(name) = alarm {
        Some(format!("ALARM {name}"))
    } else if node.leader().is_none() {
        Some("RAFT NO LEADER".to_string())
    } else if q.serializable {
        None
    } else {
        match tokio::time::timeout(std::time::Duration::from_secs(1), node.read_barrier()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("QGET ERROR:{e}")),
            Err(_) => Some("QGET ERROR:context deadline exceeded".to_string()),
        }
    };
    let code = if reason.is_none() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let health = if reason.is_none() { "true" } else { "false" };
    (code, Json(json!({ "health": health, "reason": reason.unwrap_or_default() })))
}

async fn version() -> impl IntoResponse {
    Json(json!({ "etcdserver": ETCD_VERSION, "etcdcluster": CLUSTER_VERSION }))
}
