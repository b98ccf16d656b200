//! keel-apiserver: a Kubernetes-compatible REST API over any etcd v3 endpoint (Keel's
//! store or a real etcd). Stateless: every object lives in the store, so any number of API
//! servers can serve the same cluster.

pub mod alloc;
pub mod auth;
pub mod discovery;
pub mod lifecycle;
pub mod logs;
pub mod managed;
pub mod objects;
pub mod patch;
pub mod protobuf;
pub mod registry;
pub mod resources;
pub mod selectors;
pub mod server;
pub mod status;
pub mod storage;
pub mod table;
pub mod tls;
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
    /// The authority (PEM) that signed the store's serving certificate, for `https`
    /// store URLs.
    #[arg(long, env = "KEEL_ETCD_CAFILE")]
    pub etcd_cafile: Option<std::path::PathBuf>,
    /// The client certificate (PEM) to present to the store (with --etcd-keyfile).
    #[arg(long, env = "KEEL_ETCD_CERTFILE", requires = "etcd_keyfile")]
    pub etcd_certfile: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "KEEL_ETCD_KEYFILE", requires = "etcd_certfile")]
    pub etcd_keyfile: Option<std::path::PathBuf>,
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
    /// Accept only requests with a bearer token from this file (CSV: token,user,uid[,groups]).
    #[arg(long, env = "KEEL_TOKEN_AUTH_FILE")]
    pub token_auth_file: Option<std::path::PathBuf>,
    /// Serve HTTPS with this certificate (PEM; with --tls-private-key-file).
    #[arg(long, env = "KEEL_TLS_CERT_FILE", requires = "tls_private_key_file")]
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "KEEL_TLS_PRIVATE_KEY_FILE", requires = "tls_cert_file")]
    pub tls_private_key_file: Option<std::path::PathBuf>,
    /// Accept client certificates signed by this authority (PEM); the certificate's
    /// CommonName is the user, its Organizations the groups. Needs HTTPS.
    #[arg(long, env = "KEEL_CLIENT_CA_FILE", requires = "tls_cert_file")]
    pub client_ca_file: Option<std::path::PathBuf>,
    /// Which of a node's addresses to reach its node agent on, in order of preference.
    #[arg(long, env = "KEEL_KUBELET_PREFERRED_ADDRESS_TYPES", default_value = logs::DEFAULT_ADDRESS_TYPES)]
    pub kubelet_preferred_address_types: String,
    /// Verify node agents' serving certificates against this authority (PEM); without it
    /// they are not verified, as with kube-apiserver.
    #[arg(long, env = "KEEL_KUBELET_CERTIFICATE_AUTHORITY")]
    pub kubelet_certificate_authority: Option<std::path::PathBuf>,
}

impl ApiServerConfig {
    /// An API server on 127.0.0.1:`port` with every other setting at its default.
    pub fn local(etcd_servers: Vec<String>, port: u16) -> ApiServerConfig {
        ApiServerConfig {
            etcd_servers,
            etcd_cafile: None,
            etcd_certfile: None,
            etcd_keyfile: None,
            bind_address: IpAddr::from([127, 0, 0, 1]),
            port,
            etcd_prefix: "/registry".into(),
            service_cluster_ip_range: "10.96.0.0/12".into(),
            service_node_port_range: "30000-32767".into(),
            default_watch_cache_size: 10_000,
            token_auth_file: None,
            tls_cert_file: None,
            tls_private_key_file: None,
            client_ca_file: None,
            kubelet_preferred_address_types: logs::DEFAULT_ADDRESS_TYPES.into(),
            kubelet_certificate_authority: None,
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
        match registry::create(api, &t, body, &w).await {
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
    let tokens = cfg.token_auth_file.as_deref().map(auth::Tokens::load).transpose()?;
    let tls = match (&cfg.tls_cert_file, &cfg.tls_private_key_file) {
        (Some(cert), Some(key)) => {
            // One crypto provider for the process; a second install (tests, `keel up`) is fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
            Some(tls::server_config(cert, key, cfg.client_ca_file.as_deref())?)
        }
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert-file and --tls-private-key-file go together"),
    };
    let addr = SocketAddr::new(cfg.bind_address, cfg.port);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let store_tls = storage::StoreTls {
        ca: cfg.etcd_cafile.clone(),
        identity: cfg.etcd_certfile.clone().zip(cfg.etcd_keyfile.clone()),
    };
    let storage = storage::Storage::connect(&cfg.etcd_servers, &store_tls)
        .await
        .with_context(|| format!("cannot reach the store at {}", cfg.etcd_servers.join(",")))?;
    let kubelets =
        logs::Kubelets::new(&cfg.kubelet_preferred_address_types, cfg.kubelet_certificate_authority.as_deref())?;
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
        kubelets,
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
    let stopping = api.stopping.clone();
    let shutdown = async move {
        shutdown.await;
        stopping.cancel();
    };
    tracing::info!(%local, "apiserver serving");
    let mut app = server::router(api);
    if tokens.is_some() || cfg.client_ca_file.is_some() {
        let authn = Arc::new(auth::Authn { tokens, client_certs: cfg.client_ca_file.is_some() });
        app = app.layer(axum::middleware::from_fn_with_state(authn, auth::require_auth));
    }
    match tls {
        None => axum::serve(listener, app).with_graceful_shutdown(shutdown).await?,
        Some(tls) => {
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                stopper.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
            });
            axum_server::from_tcp(listener.into_std()?)
                .acceptor(tls::IdentifyingAcceptor::new(tls))
                .handle(handle)
                .serve(app.into_make_service())
                .await?;
        }
    }
    Ok(())
}
