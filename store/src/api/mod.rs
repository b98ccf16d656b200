//! The client API on `--listen-client-urls`: etcd's gRPC services, plus the plain HTTP
//! endpoints etcd serves on the same port (`/health`, `/version`, `/metrics`, `/debug/vars`,
//! `/config/local/log`).
//!
//! Handlers validate, propose or read, and convert; the rules live in `mvcc` and `node`.
//! gRPC and HTTP share the port: the server speaks HTTP/1.1 and HTTP/2 (h2c) and routes
//! by path, as etcd's cmux does.

pub mod access;
pub mod auth;
pub mod authority;
pub mod backup;
pub mod client_verify;
pub mod cluster;
pub mod concurrency;
pub mod debug;
pub mod election;
pub mod gateway;
pub mod grpc_metrics;
pub mod http;
pub mod keepalive;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod metrics;
pub mod tls;
pub mod validate;
pub mod watch;

use std::sync::Arc;

use crate::node::Node;
use crate::proto::etcdserverpb::auth_server::AuthServer;
use crate::proto::etcdserverpb::cluster_server::ClusterServer;
use crate::proto::etcdserverpb::kv_server::KvServer;
use crate::proto::etcdserverpb::lease_server::LeaseServer;
use crate::proto::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::proto::v3electionpb::election_server::ElectionServer;
use crate::proto::v3lockpb::lock_server::LockServer;
use crate::watch::WatchHub;

/// gRPC's own framing overhead on top of the largest request, as etcd allows.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// tonic refuses bigger messages itself (with a different code than grpc-go); below this,
/// [`check_message_size`] answers exactly as etcd does.
const DECODE_LIMIT_BYTES: usize = 64 << 20;

/// etcd (grpc-go) refuses a message over `--max-request-bytes` + 512 KiB with
/// ResourceExhausted before reading it; the message text is grpc-go's.
pub fn check_message_size(msg: &impl prost::Message, max_request_bytes: usize) -> Result<(), tonic::Status> {
    let (len, max) = (msg.encoded_len(), max_request_bytes + GRPC_OVERHEAD_BYTES);
    if len > max {
        return Err(tonic::Status::resource_exhausted(format!(
            "grpc: received message larger than max ({len} vs. {max})"
        )));
    }
    Ok(())
}

/// Every client-facing route of a member.
pub fn router(
    node: Arc<Node>,
    hub: Arc<WatchHub>,
    backup_dir: std::path::PathBuf,
    access: access::Access,
) -> axum::Router {
    let kv = KvServer::new(kv::KvService::new(node.clone())).max_decoding_message_size(DECODE_LIMIT_BYTES);
    // gRPC's standard health service, as etcd registers it: the server ("") serves.
    let (_, health) = tonic_health::server::health_reporter();
    let grpc = tonic::service::Routes::new(kv)
        .add_service(health)
        .add_service(MaintenanceServer::new(maintenance::MaintenanceService::new(node.clone(), backup_dir.clone())))
        .add_service(ClusterServer::new(cluster::ClusterService::new(node.clone())))
        .add_service(watch::WatchService::new(node.clone(), hub.clone()))
        .add_service(LeaseServer::new(lease::LeaseService::new(node.clone())))
        .add_service(AuthServer::new(auth::AuthService::new(node.clone())))
        .add_service(LockServer::new(lock::LockService::new(concurrency::Local::new(node.clone(), hub.clone()))))
        .add_service(ElectionServer::new(election::ElectionService::new(concurrency::Local::new(
            node.clone(),
            hub.clone(),
        ))));
    // etcd's host and CORS checks, on what it serves over HTTP (unknown paths included).
    let checked = axum::middleware::from_fn_with_state(Arc::new(access), access::check);
    let http = gateway::router(node.clone(), hub.clone(), backup_dir)
        .merge(metrics::router(node.clone(), hub))
        .merge(http::router(node.clone()))
        .merge(debug::router(node))
        .layer(checked.clone());
    grpc.into_axum_router()
        .layer(axum::middleware::from_fn(grpc_metrics::count))
        .merge(http)
        .fallback_service(axum::Router::new().fallback(unknown_path).layer(checked))
}

/// What `--listen-metrics-urls` serve: `/metrics` and `/health`, as etcd's do.
pub fn metrics_router(node: Arc<Node>, hub: Arc<WatchHub>) -> axum::Router {
    metrics::router(node.clone(), hub).merge(http::health_router(node)).fallback(unknown_path)
}

/// A path nothing serves: gRPC's Unimplemented for a gRPC call, else 404 (as etcd's
/// gateway mux answers `curl` on a path it does not know).
async fn unknown_path(req: axum::extract::Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    let grpc = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented("").into_http::<axum::body::Body>().into_response();
    }
    // etcd's gateway answers under /v3/ (and /v3beta/, which it rewrites); Go's mux the rest.
    let path = req.uri().path();
    let body =
        if path.starts_with("/v3/") || path.starts_with("/v3beta/") { "Not Found\n" } else { "404 page not found\n" };
    let mut resp = (axum::http::StatusCode::NOT_FOUND, body).into_response();
    let h = resp.headers_mut();
    h.insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(axum::http::header::X_CONTENT_TYPE_OPTIONS, axum::http::HeaderValue::from_static("nosniff"));
    resp
}
