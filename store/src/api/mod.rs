//! The client API on `--listen-client-urls`: etcd's gRPC services, plus the plain HTTP
//! endpoints etcd serves on the same port (`/health`, `/version`).
//!
//! Handlers validate, propose or read, and convert; the rules live in `mvcc` and `node`.
//! gRPC and HTTP share the port: the server speaks HTTP/1.1 and HTTP/2 (h2c) and routes
//! by path, as etcd's cmux does.

pub mod cluster;
pub mod http;
pub mod kv;
pub mod maintenance;
pub mod validate;

use std::sync::Arc;

use crate::node::Node;
use crate::proto::etcdserverpb::cluster_server::ClusterServer;
use crate::proto::etcdserverpb::kv_server::KvServer;
use crate::proto::etcdserverpb::maintenance_server::MaintenanceServer;

/// gRPC's own framing overhead on top of the largest request, as etcd allows.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Every client-facing route of a member.
pub fn router(node: Arc<Node>) -> axum::Router {
    let max = node.limits.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let grpc =
        tonic::service::Routes::new(KvServer::new(kv::KvService::new(node.clone())).max_decoding_message_size(max))
            .add_service(MaintenanceServer::new(maintenance::MaintenanceService::new(node.clone())))
            .add_service(ClusterServer::new(cluster::ClusterService::new(node.clone())));
    grpc.into_axum_router().merge(http::router(node))
}
