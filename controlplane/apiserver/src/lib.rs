//! keel-apiserver: a Kubernetes-compatible REST API over any etcd v3 endpoint (Keel's
//! store or a real etcd). Stateless: every object lives in the store, so any number of API
//! servers can serve the same cluster.

pub mod alloc;
pub mod discovery;
pub mod lifecycle;
pub mod managed;
pub mod objects;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod selectors;
pub mod server;
pub mod status;
pub mod storage;
pub mod table;
pub mod watch;
pub mod watchcache;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::json;

/// `keel apiserver` flags (kube-apiserver's names where it has them).
#[derive(clap::Args, Debug, Clone)]
pub struct ApiServerConfig {
    /// The store's client URLs, comma-separated (Keel's store or etcd).
    #[arg(long, env = "KEEL_ETCD_SERVERS", value_delimiter = ',', required = true)]
    pub etcd_servers: Vec<String>,
    /// The address to serve on.
    #[arg(long, env = "KEEL_BIND_ADDRESS", default_value = "127.0.0.1")]
    pub bind_address: IpAddr,
    /// The port to serve plain HTTP on.
    #[arg(long, env = "KEEL_PORT", default_value_t = 6443)]
    pub port: u16,
    /// The key prefix every object is stored under.
    #[arg(long, env = "KEEL_ETCD_PREFIX", default_value = "/registry")]
    pub etcd_prefix: String,
    /// The range Service ClusterIPs come from.
    #[arg(long, env = "KEEL_SERVICE_CLUSTER_IP_RANGE", default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: String,
    /// The range NodePorts come from.
    #[arg(long, env = "KEEL_SERVICE_NODE_PORT_RANGE", default_value = "30000-32767")]
    pub service_node_port_range: String,
    /// Events each resource type's watch cache keeps for watchers resuming from a recent
    /// resourceVersion; older ones read the store's history.
    #[arg(long, env = "KEEL_DEFAULT_WATCH_CACHE_SIZE", default_value_t = 10_000)]
    pub default_watch_cache_size: usize,
}

impl ApiServerConfig {
    /// An API server on 127.0.0.1:`port` with every other setting at its default.
    pub fn local(etcd_servers: Vec<String>, port: u16) -> ApiServerConfig {
        ApiServerConfig {
            etcd_servers,
            bind_address: IpAddr::from([127, 0, 0, 1]),
            port,
            etcd_prefix: "/registry".into(),
            service_cluster_ip_range: "10.96.0.0/12".into(),
            service_node_port_range: "30000-32767".into(),
            default_watch_cache_size: 10_000,
        }
    }
}

/// The namespaces every cluster has.
const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

async fn ensure_namespaces(api: &server::Api) -> anyhow::Result<()> {
    let rt = resources::find("", "v1", "namespaces").context("namespaces are served")?;
    for ns in SYSTEM_NAMESPACES {
        let t = server::Target { rt, namespace: None, name: None, sub: None };
        let body = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } });
        let w = server::Write { fv: objects::FieldValidation::Strict, dry_run: false, manager: "keel-apiserver" };
        match server::create(api, &t, body, &w).await {
            Ok(_) => {}
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => anyhow::bail!("creating namespace {ns}: {}", e.message),
        }
    }
    Ok(())
}

/// Binds, then serves until `shutdown` resolves.
pub async fn run(cfg: ApiServerConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let ranges = alloc::Ranges::parse(&cfg.service_cluster_ip_range, &cfg.service_node_port_range)?;
    let addr = SocketAddr::new(cfg.bind_address, cfg.port);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let storage = storage::Storage::connect(&cfg.etcd_servers)
        .await
        .with_context(|| format!("cannot reach the store at {}", cfg.etcd_servers.join(",")))?;
    let (term_tx, term_rx) = tokio::sync::mpsc::unbounded_channel();
    let allocator = alloc::Allocator::new(storage.clone(), &cfg.etcd_prefix, ranges);
    let local = listener.local_addr()?;
    let api = Arc::new(server::Api::new(
        storage,
        &cfg.etcd_prefix,
        allocator,
        local.to_string(),
        term_tx,
        cfg.default_watch_cache_size.max(1),
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match ensure_namespaces(&api).await {
            Ok(()) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::info!("waiting for the store: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
    tokio::spawn(lifecycle::run(Arc::clone(&api), term_rx));
    tracing::info!(%local, "apiserver serving");
    axum::serve(listener, server::router(api)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
