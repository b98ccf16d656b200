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
    Router::new().route("/health", get(health)).route("/version", get(version)).with_state(node)
}

/// Healthy when a leader is known and a quorum read succeeds, as etcd's `/health`.
async fn health(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let ok = node.leader().is_some()
        && tokio::time::timeout(std::time::Duration::from_secs(1), node.read_barrier()).await.is_ok_and(|r| r.is_ok());
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(json!({ "health": if ok { "true" } else { "false" }, "reason": "" })))
}

async fn version() -> impl IntoResponse {
    Json(json!({ "etcdserver": ETCD_VERSION, "etcdcluster": CLUSTER_VERSION }))
}
