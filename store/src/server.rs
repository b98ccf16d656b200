//! Start-up: from a validated config and bound listeners to a serving member.
//!
//! [`bind`] opens the client and peer listeners (so a taken port fails fast, before any
//! disk work), and [`run`] opens storage, starts Raft, bootstraps or rejoins the cluster,
//! serves until `shutdown` resolves, then stops cleanly. Tests bind port 0 and call the
//! same functions.

use std::collections::BTreeMap;
use std::future::{Future, IntoFuture};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::authority::AuthorityFix;
use crate::api::keepalive::{Keepalive, PingPolicy};
use crate::api::tls::ClientCert;
use crate::auto_compact;
use crate::config::{ConfigError, StoreConfig};
use crate::engine::{Engine, EngineError};
use crate::mvcc::MvccStore;
use crate::node::{Limits, Node};
use crate::proto::keelpb::raft_request::Command;
use crate::proto::keelpb::MemberAttributes;
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::peer_server::{self, PeerState};
use crate::raft::state_machine::StateMachine;
use crate::raft::wal::{Record, Wal, WalOptions};
use crate::raft::{ids, Member, NodeId, Raft};
use crate::watch::WatchHub;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {url}: {source}")]
    Bind { url: String, source: std::io::Error },
    #[error("data directory {path:?} is not usable: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("storage: {0}")]
    Engine(#[from] EngineError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("the Raft log in {path:?}: {source}")]
    Log { path: PathBuf, source: std::io::Error },
    #[error("cannot join the existing cluster: {0}")]
    Join(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Auth(String),
    #[error("{0}")]
    Corrupt(String),
}

/// The sockets a member serves on.
pub struct Listeners {
    pub client: Vec<TcpListener>,
    pub peer: Vec<TcpListener>,
    /// `--listen-metrics-urls`
    pub metrics: Vec<TcpListener>,
}

async fn bind_all(urls: &[url::Url]) -> Result<Vec<TcpListener>, StartError> {
    let mut out = Vec::new();
    for u in urls {
        let host = u.host_str().unwrap_or("localhost").trim_start_matches('[').trim_end_matches(']');
        let port = u.port_or_known_default().unwrap_or(0);
        let l =
            TcpListener::bind((host, port)).await.map_err(|source| StartError::Bind { url: u.to_string(), source })?;
        out.push(l);
    }
    Ok(out)
}

/// Opens every listener the config names.
pub async fn bind(cfg: &StoreConfig) -> Result<Listeners, StartError> {
    Ok(Listeners {
        client: bind_all(&cfg.client_urls()?).await?,
        peer: bind_all(&cfg.peer_urls()?).await?,
        metrics: bind_all(&cfg.metrics_urls()?).await?,
    })
}

fn prepare_dir(path: &Path) -> Result<(), StartError> {
    let err = |source| StartError::DataDir { path: path.to_path_buf(), source };
    std::fs::create_dir_all(path).map_err(err)?;
    let probe = path.join(".keel-write-test");
    std::fs::write(&probe, b"ok").map_err(err)?;
    std::fs::remove_file(&probe).map_err(err)?;
    Ok(())
}

/// This member's id, the cluster id, the initial members, and whether this is a first boot.
struct Identity {
    id: NodeId,
    cluster_id: u64,
    initial: BTreeMap<NodeId, Member>,
    first_boot: bool,
}

async fn identity(wal: &Wal, cfg: &StoreConfig, http: &reqwest::Client) -> Result<Identity, StartError> {
    let members = cfg.initial_members()?;
    let token = &cfg.initial_cluster_token;
    let initial: BTreeMap<NodeId, Member> = members
        .iter()
        .map(|m| {
            (ids::member_id(&m.peer_urls, token, None), Member { name: m.name.clone(), peer_urls: m.peer_urls.clone() })
        })
        .collect();
    if let Some((id, cluster_id)) = wal.meta().identity {
        return Ok(Identity { id, cluster_id, initial, first_boot: false });
    }
    let (id, cluster_id) = if cfg.joining()? {
        join_existing(cfg, http).await?
    } else {
        let id = ids::member_id(&cfg.advertise_peer_urls()?, token, None);
        (id, ids::cluster_id(&initial.keys().copied().collect::<Vec<_>>()))
    };
    wal.write(&[Record::Identity(id, cluster_id)]).map_err(|source| StartError::Log { path: wal_dir(cfg), source })?;
    Ok(Identity { id, cluster_id, initial, first_boot: true })
}

fn wal_dir(cfg: &StoreConfig) -> PathBuf {
    cfg.wal_dir.clone().unwrap_or_else(|| cfg.data_dir().join("member").join("wal"))
}

/// Opens the member's Raft log, refusing one written by an older Keel (a RocksDB database).
fn open_wal(cfg: &StoreConfig) -> Result<Arc<Wal>, StartError> {
    let path = wal_dir(cfg);
    if path.join("CURRENT").exists() {
        let source = std::io::Error::other(
            "this data directory was written by an older Keel, whose Raft log was a RocksDB database; \
             this version cannot read it (restore a snapshot into a new data directory instead)",
        );
        return Err(StartError::Log { path, source });
    }
    Wal::open(&path, WalOptions::default()).map(Arc::new).map_err(|source| StartError::Log { path, source })
}

/// A member joining a running cluster learns the id `member add` gave it (and the
/// cluster id) from the other members named in `--initial-cluster`, as etcd does.
async fn join_existing(cfg: &StoreConfig, http: &reqwest::Client) -> Result<(NodeId, u64), StartError> {
    let mine = cfg.advertise_peer_urls()?;
    let peers: Vec<String> =
        cfg.initial_members()?.into_iter().filter(|m| m.name != cfg.name).flat_map(|m| m.peer_urls).collect();
    for url in &peers {
        let Ok(resp) = http.get(format!("{url}{}", peer_server::MEMBERS_PATH)).send().await else { continue };
        let Ok(info) = resp.json::<peer_server::ClusterInfo>().await else { continue };
        if let Some((id, _)) = info.members.iter().find(|(_, urls)| urls.iter().any(|u| mine.contains(u))) {
            return Ok((*id, info.cluster_id));
        }
        return Err(StartError::Join(format!(
            "no member with peer URLs {mine:?} in the cluster at {url}; add it first (etcdctl member add)"
        )));
    }
    Err(StartError::Join(format!("none of the existing members {peers:?} answered")))
}

fn raft_config(cfg: &StoreConfig) -> Result<Arc<openraft::Config>, StartError> {
    let rc = openraft::Config {
        cluster_name: cfg.initial_cluster_token.clone(),
        heartbeat_interval: cfg.heartbeat_interval,
        election_timeout_min: cfg.election_timeout,
        election_timeout_max: cfg.election_timeout * 2,
        install_snapshot_timeout: 60_000,
        max_payload_entries: 1000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_count.max(1)),
        max_in_snapshot_log_to_keep: 5000.min(cfg.snapshot_count),
        purge_batch_size: 256,
        ..Default::default()
    };
    Ok(Arc::new(rc.validate().map_err(|e| StartError::Raft(e.to_string()))?))
}

/// Runs a member until `shutdown` resolves.
pub async fn run(
    cfg: StoreConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    cfg.validate()?;
    for notice in cfg.compat.check()? {
        tracing::warn!("{notice}");
    }
    crate::metrics::configure(cfg.extensive_metrics()?, cfg.warning_apply_duration()?);
    use crate::api::tls::{self, ClientCheck};
    let provider = tls::provider(&cfg.cipher_suites).map_err(StartError::Tls)?;
    // The certificates given, or with --auto-tls / --peer-auto-tls and none given,
    // self-signed ones made for the URLs' hosts.
    let hosts = |urls: Vec<url::Url>| -> Vec<String> {
        urls.iter().filter_map(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string())).collect()
    };
    let fixtures = cfg.data_dir().join("fixtures");
    let client_files = match (&cfg.cert_file, &cfg.key_file) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        _ if cfg.auto_tls => Some(
            tls::self_signed(&fixtures.join("client"), &hosts(cfg.client_urls()?), cfg.self_signed_cert_validity)
                .map_err(StartError::Tls)?,
        ),
        _ => None,
    };
    let peer_auto = cfg.peer_auto_tls && cfg.peer_cert_file.is_none();
    let peer_files = match (&cfg.peer_cert_file, &cfg.peer_key_file) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        _ if peer_auto => Some(
            tls::self_signed(&fixtures.join("peer"), &hosts(cfg.peer_urls()?), cfg.self_signed_cert_validity)
                .map_err(StartError::Tls)?,
        ),
        _ => None,
    };
    let tls = match client_files.as_ref().map(|(c, k)| (c, k)) {
        Some((cert, key)) => {
            let check = ClientCheck {
                ca: cfg.trusted_ca_file.clone().filter(|_| cfg.client_cert_auth),
                crl: cfg.client_crl_file.clone(),
                allowed_cn: None,
                allowed_hostname: cfg.client_cert_allowed_hostname.clone(),
            };
            Some(tls::server_config(cert, key, &check, provider.clone()).map_err(StartError::Tls)?)
        }
        _ => None,
    };
    let peer_tls = match peer_files.as_ref().map(|(c, k)| (c, k)) {
        Some((cert, key)) => {
            let check = ClientCheck {
                ca: cfg.peer_trusted_ca_file.clone().filter(|_| cfg.peer_client_cert_auth && !peer_auto),
                crl: cfg.peer_crl_file.clone(),
                allowed_cn: cfg.peer_cert_allowed_cn.clone(),
                allowed_hostname: cfg.peer_cert_allowed_hostname.clone(),
            };
            Some(tls::server_config(cert, key, &check, provider.clone()).map_err(StartError::Tls)?)
        }
        _ => None,
    };
    let member_dir = cfg.data_dir().join("member");
    prepare_dir(&member_dir)?;
    let snap_dir = member_dir.join("snap");
    prepare_dir(&snap_dir)?;
    let engine = Engine::open(&member_dir.join("db"))?;
    let store = MvccStore::open(engine.clone(), cfg.min_lease_ttl())?;
    store.set_compaction_batch(cfg.experimental_compaction_batch_limit as usize);
    let tokens = crate::auth::SimpleTokens::new(std::time::Duration::from_secs(cfg.auth_token_ttl));
    let mut auth = crate::auth::AuthStore::open(engine.clone(), tokens, cfg.bcrypt_cost)?;
    if let Some(options) = cfg.jwt_options()? {
        let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        auth = auth.with_jwt(crate::auth::JwtTokens::from_options(&options).map_err(StartError::Auth)?);
    }
    let auth = Arc::new(auth);
    let forced = if cfg.force_new_cluster {
        let wal = open_wal(&cfg)?;
        crate::raft::force_new::prepare(wal, &wal_dir(&cfg), &engine, &store, &auth, &snap_dir)
            .await
            .map_err(StartError::Raft)?
    } else {
        None
    };
    let wal = open_wal(&cfg)?;
    if let Some((id, cluster_id)) = forced {
        wal.write(&[Record::Identity(id, cluster_id)])
            .map_err(|source| StartError::Log { path: wal_dir(&cfg), source })?;
    }
    let peer_client_tls = match (&cfg.peer_trusted_ca_file, &peer_files) {
        (_, Some((cert, key))) if peer_auto => {
            Some(tls::peer_client_config_unverified(cert, key, provider.clone()).map_err(StartError::Tls)?)
        }
        (Some(ca), Some((cert, key))) => {
            Some(tls::peer_client_config(ca, cert, key, provider.clone()).map_err(StartError::Tls)?)
        }
        _ => None,
    };
    let network = Network::with_tls(peer_client_tls);
    let http = network.http().clone();
    let who = match forced {
        Some((id, cluster_id)) => {
            let me = Member { name: cfg.name.clone(), peer_urls: cfg.advertise_peer_urls()? };
            Identity { id, cluster_id, initial: BTreeMap::from([(id, me)]), first_boot: true }
        }
        None => identity(&wal, &cfg, &http).await?,
    };
    let sm = StateMachine::open(store.clone(), auth.clone(), snap_dir.clone())
        .map_err(|e| StartError::Raft(e.to_string()))?;
    let applied = sm.applied();
    let log = LogStore::new(wal.clone(), sm.state_sync()).map_err(|e| StartError::Raft(e.to_string()))?;
    let log_writer = log.clone();
    log.send_early(network.early_appends(), who.id);
    log.answer_through(sm.waiters());
    let raft =
        Raft::new(who.id, raft_config(&cfg)?, network, log, sm).await.map_err(|e| StartError::Raft(e.to_string()))?;
    // Data this cluster did not get from its log (forced, or a restored backup): new
    // members must be sent it by snapshot.
    let bootstraps = who.first_boot && (forced.is_some() || !cfg.joining()?);
    let started_with_data = bootstraps && store.current_revision() > 1;
    if bootstraps {
        let initialized = raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized {
            if let Err(e) = raft.initialize(who.initial.clone()).await {
                tracing::warn!(error = %e, "cluster bootstrap");
            }
        }
    }
    if started_with_data {
        tokio::spawn(crate::raft::force_new::seed_snapshot(raft.clone()));
    }
    let limits = Limits {
        max_request_bytes: cfg.max_request_bytes,
        max_txn_ops: cfg.max_txn_ops,
        request_timeout: cfg.request_timeout(),
    };
    let node = Arc::new(Node {
        id: who.id,
        cluster_id: who.cluster_id,
        name: cfg.name.clone(),
        raft: raft.clone(),
        store,
        auth,
        client_cert_auth: cfg.client_cert_auth,
        applied,
        limits,
        quota: crate::mvcc::alarms::Quota::new(cfg.quota_backend_bytes),
        forwarder: crate::node::forward::Forwarder::new(http.clone()),
        http,
        cluster_token: cfg.initial_cluster_token.clone(),
        expiry: Arc::new(crate::lease::Expiry::new(cfg.lease_checkpoints()?)),
        proposals: Arc::new(tokio::sync::RwLock::new(())),
        batcher: crate::node::Batcher::start(raft.clone()),
    });
    tracing::info!(member = %format!("{:x}", who.id), cluster = %format!("{:x}", who.cluster_id), name = %cfg.name, "member started");

    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let peer_router =
        peer_server::router(PeerState { node: node.clone(), incoming_dir: snap_dir.clone(), stop: stop.clone() });
    let peers = Serving {
        tls: peer_tls.as_ref(),
        check_san: !cfg.experimental_peer_skip_client_san_verification,
        keepalive: None,
    };
    tasks.extend(serve_all(listeners.peer, cfg.peer_urls()?, peers, &peer_router, &stop)?);
    if cfg.experimental_initial_corrupt_check {
        // The state machine's database keeps only what was flushed; what this member's log
        // says was committed is applied again now. Hash only once it is.
        let committed = wal
            .meta()
            .committed
            .and_then(|b| crate::raft::decode::<Option<crate::raft::LogId>>(&b).ok().flatten())
            .map_or(0, |l| l.index);
        if let Err(e) = node.initial_corrupt_check(committed).await {
            shut_down(stop, tasks, &raft, log_writer).await;
            return Err(StartError::Corrupt(e));
        }
    }
    let fragmenting = crate::watch::Fragmenting::for_member(cfg.max_request_bytes, node.header(0));
    let hub = WatchHub::attach(&node.store, fragmenting);
    let client_router = crate::api::router(node.clone(), hub.clone(), snap_dir, cfg.access()?);
    let metrics_router = crate::api::metrics_router(node.clone(), hub.clone());
    tokio::spawn(progress_notifications(hub, cfg.progress_notify_interval()?, stop.clone()));
    tokio::spawn(crate::lease::run_expiry(node.clone(), node.expiry.clone(), stop.clone()));
    let client = Serving { tls: tls.as_ref(), check_san: false, keepalive: Some(cfg.keepalive()?) };
    tasks.extend(serve_all(listeners.client, cfg.client_urls()?, client, &client_router, &stop)?);
    let metrics = Serving { keepalive: None, ..client };
    tasks.extend(serve_all(listeners.metrics, cfg.metrics_urls()?, metrics, &metrics_router, &stop)?);
    tokio::spawn(publish_attributes(
        node.clone(),
        cfg.advertise_client_urls()?.iter().map(|u| u.as_str().trim_end_matches('/').to_string()).collect(),
        stop.clone(),
    ));
    tokio::spawn(auto_compact::run(node.clone(), cfg.auto_compaction()?, stop.clone()));
    let corrupt_every = cfg.corrupt_check_time()?;
    if !corrupt_every.is_zero() {
        tokio::spawn(node.clone().corrupt_checks(corrupt_every, stop.clone()));
    }
    tokio::spawn(track_role(node.raft.clone(), log_writer.clone()));
    tokio::spawn(node.clone().probe_peers(stop.clone()));
    tokio::spawn(crate::raft::log_size::run(node.raft.clone(), wal, cfg.experimental_snapshot_log_bytes, stop.clone()));

    tokio::select! {
        _ = shutdown => tracing::info!("stopping"),
        _ = removed(node.clone()) => tracing::warn!("this member was removed from the cluster; stopping"),
    }
    shut_down(stop, tasks, &raft, log_writer).await;
    Ok(())
}

/// Stops the servers and background tasks, then Raft, then the log writer.
async fn shut_down(
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    raft: &Raft,
    log_writer: LogStore,
) {
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let _ = raft.shutdown().await;
    // The log writer is a thread of its own: end it before the process can exit under it.
    let _ = tokio::task::spawn_blocking(move || log_writer.close()).await;
}

/// Sends periodic progress notifications to the watchers that asked for them.
async fn progress_notifications(hub: Arc<WatchHub>, every: std::time::Duration, stop: CancellationToken) {
    if every.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => hub.notify_progress(),
            _ = stop.cancelled() => return,
        }
    }
}

/// Keeps the log store told whether this member follows (see `LogStore::set_following`)
/// and which membership openraft takes as effective (see `LogStore::effective_membership`).
async fn track_role(raft: crate::raft::Raft, log: LogStore) {
    let mut rx = raft.server_metrics();
    loop {
        let (following, membership) = {
            let m = rx.borrow();
            (m.state != openraft::ServerState::Leader, m.membership_config.clone())
        };
        log.effective_membership(&membership);
        log.set_following(following);
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Resolves once this member, having been part of the cluster, is no longer in its
/// membership (etcd stops a removed member the same way).
///
/// Server metrics, not the full metrics: those change with every entry, and each change
/// would wake this (and its thread) once per write.
async fn removed(node: Arc<Node>) {
    let mut rx = node.raft.server_metrics();
    let mut seen = false;
    loop {
        let present = rx.borrow().membership_config.membership().get_node(&node.id).is_some();
        if present {
            seen = true;
        } else if seen {
            return;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// How long a stopping member waits for open requests and streams (watches, lease
/// keep-alives) before it closes them; etcd bounds its graceful stop the same way.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// How a port is served.
#[derive(Clone, Copy)]
struct Serving<'a> {
    /// TLS for its `https` URLs.
    tls: Option<&'a Arc<rustls::ServerConfig>>,
    /// See [`crate::api::tls::TlsListener::new`].
    check_san: bool,
    /// The client port's gRPC settings ([`serve_client`]); None: served plainly.
    keepalive: Option<Keepalive>,
}

/// Serves `router` on each listener, with TLS where its URL is `https`.
fn serve_all(
    listeners: Vec<TcpListener>,
    urls: Vec<url::Url>,
    how: Serving<'_>,
    router: &axum::Router,
    stop: &CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<()>>, StartError> {
    let mut tasks = Vec::new();
    for (l, url) in listeners.into_iter().zip(urls) {
        let (router, stop) = (router.clone(), stop.clone());
        tasks.push(match how.tls {
            Some(config) if url.scheme() == "https" => {
                let l = crate::api::tls::TlsListener::new(l, config.clone(), how.check_san)
                    .map_err(|source| StartError::Bind { url: url.to_string(), source })?;
                match how.keepalive {
                    Some(k) => tokio::spawn(serve_client(l, router, stop, k, |io| Some(ClientCert::of(io)))),
                    None => tokio::spawn(serve_tls(l, router, stop)),
                }
            }
            _ => match how.keepalive {
                Some(k) => tokio::spawn(serve_client(ClientListener(l), router, stop, k, |_| None)),
                None => tokio::spawn(serve(l, router, stop)),
            },
        });
    }
    Ok(tasks)
}

async fn serve(listener: TcpListener, router: axum::Router, stop: CancellationToken) {
    let graceful = axum::serve(ClientListener(listener), router).with_graceful_shutdown(stop.clone().cancelled_owned());
    until_stopped(graceful, stop).await
}

/// [`serve`] on an `https` URL: each request carries the connection's client certificate
/// (`ConnectInfo<ClientCert>`).
async fn serve_tls(listener: crate::api::tls::TlsListener, router: axum::Router, stop: CancellationToken) {
    let service = router.into_make_service_with_connect_info::<ClientCert>();
    let graceful = axum::serve(listener, service).with_graceful_shutdown(stop.clone().cancelled_owned());
    until_stopped(graceful, stop).await
}

/// Serves the client port: as [`serve`], but with etcd's gRPC keepalive and stream settings
/// (`--grpc-keepalive-*`, `--max-concurrent-streams`), each connection under a
/// [`PingPolicy`], and the client's certificate (`cert`) on each request as
/// `ConnectInfo<ClientCert>`.
pub async fn serve_client<L: axum::serve::Listener<Addr = std::net::SocketAddr>>(
    listener: L,
    router: axum::Router,
    stop: CancellationToken,
    keepalive: Keepalive,
    cert: fn(&L::Io) -> Option<ClientCert>,
) {
    let server = accept_clients(listener, router, stop.clone(), keepalive, cert);
    until_stopped(
        async move {
            server.await;
            Ok(())
        },
        stop,
    )
    .await
}

async fn accept_clients<L: axum::serve::Listener<Addr = std::net::SocketAddr>>(
    mut listener: L,
    router: axum::Router,
    stop: CancellationToken,
    keepalive: Keepalive,
    cert: fn(&L::Io) -> Option<ClientCert>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(keepalive.max_streams)
        .keep_alive_interval(keepalive.interval)
        .keep_alive_timeout(keepalive.timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (io, addr) = tokio::select! {
            c = listener.accept() => c,
            () = stop.cancelled() => break,
        };
        let cert = cert(&io).map(axum::extract::ConnectInfo);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            if let Some(cert) = &cert {
                req.extensions_mut().insert(cert.clone());
            }
            tower::ServiceExt::oneshot(router.clone(), req)
        });
        let io = TokioIo::new(PingPolicy::new(io, keepalive.min_time));
        let conn = graceful.watch(builder.serve_connection_with_upgrades(io, service).into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "client connection ended");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Runs a server until it stops, or until [`STOP_GRACE`] after `stop`, when the
/// connections still open are closed.
async fn until_stopped(server: impl IntoFuture<Output = std::io::Result<()>>, stop: CancellationToken) {
    let server = server.into_future();
    tokio::select! {
        res = server => {
            if let Err(e) = res {
                tracing::error!(error = %e, "server stopped");
            }
        }
        () = async {
            stop.cancelled().await;
            tokio::time::sleep(STOP_GRACE).await;
        } => tracing::info!("closing connections still open {STOP_GRACE:?} after stopping"),
    }
}

/// Accepts connections with TCP_NODELAY, each wrapped in [`AuthorityFix`]: how a member
/// serves its client port (public for `examples/null_kv.rs`, which measures this stack).
pub struct ClientListener(pub TcpListener);

impl axum::serve::Listener for ClientListener {
    type Io = AuthorityFix<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((tcp, addr)) => {
                    let _ = tcp.set_nodelay(true);
                    return (AuthorityFix::new(tcp), addr);
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// Publishes this member's name and client URLs through Raft once a leader exists (etcd's
/// `publish`), so `member list` shows them on every member.
async fn publish_attributes(node: Arc<Node>, client_urls: Vec<String>, stop: CancellationToken) {
    let attrs = MemberAttributes { id: node.id, name: node.name.clone(), client_urls };
    loop {
        if node.applied.attrs.read().get(&node.id) == Some(&attrs) {
            return;
        }
        let r = tokio::select! {
            r = node.propose(Command::MemberAttributes(attrs.clone())) => r,
            _ = stop.cancelled() => return,
        };
        match r {
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(error = %e, "publishing member attributes, will retry");
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}
