//! `keel store` configuration: etcd's own member flags, so the same scripts can start
//! either etcd or Keel. Every flag also reads `KEEL_<FLAG>` from the environment.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use url::Url;

#[derive(Args, Clone, Debug)]
pub struct StoreConfig {
    /// Human-readable name for this member.
    #[arg(long, env = "KEEL_NAME", default_value = "default")]
    pub name: String,
    /// Path to the data directory (default: `<name>.etcd`).
    #[arg(long, env = "KEEL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// A directory for the Raft log apart from the data directory (a disk of its own, say;
    /// default: `<data-dir>/member/wal`).
    #[arg(long, env = "KEEL_WAL_DIR")]
    pub wal_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic (comma-separated).
    #[arg(long, env = "KEEL_LISTEN_CLIENT_URLS", default_value = "http://localhost:2379")]
    pub listen_client_urls: String,
    /// Client URLs to advertise to the rest of the cluster.
    #[arg(long, env = "KEEL_ADVERTISE_CLIENT_URLS", default_value = "http://localhost:2379")]
    pub advertise_client_urls: String,
    /// URLs to listen on for peer traffic.
    #[arg(long, env = "KEEL_LISTEN_PEER_URLS", default_value = "http://localhost:2380")]
    pub listen_peer_urls: String,
    /// This member's peer URLs to advertise to the rest of the cluster.
    #[arg(long, env = "KEEL_INITIAL_ADVERTISE_PEER_URLS", default_value = "http://localhost:2380")]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping: `name=peerURL,...`
    /// (default: this member alone).
    #[arg(long, env = "KEEL_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// `new` to bootstrap a cluster, `existing` to join one.
    #[arg(long, env = "KEEL_INITIAL_CLUSTER_STATE", default_value = "new")]
    pub initial_cluster_state: String,
    /// Initial cluster token, mixed into member and cluster ids.
    #[arg(long, env = "KEEL_INITIAL_CLUSTER_TOKEN", default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// Auto compaction retention: hours or a duration (`periodic`), or a revision count
    /// (`revision`). 0 disables auto compaction.
    #[arg(long, env = "KEEL_AUTO_COMPACTION_RETENTION", default_value = "0")]
    pub auto_compaction_retention: String,
    /// `periodic` or `revision`.
    #[arg(long, env = "KEEL_AUTO_COMPACTION_MODE", default_value = "periodic")]
    pub auto_compaction_mode: String,
    /// Raise an alarm when the backend exceeds this many bytes (0 = 2 GiB).
    #[arg(long, env = "KEEL_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    pub quota_backend_bytes: i64,
    /// Maximum client request size in bytes.
    #[arg(long, env = "KEEL_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub max_request_bytes: usize,
    /// Maximum operations per transaction.
    #[arg(long, env = "KEEL_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,
    /// Maximum concurrent streams that each client can open at a time (the largest value:
    /// no limit).
    #[arg(long, env = "KEEL_MAX_CONCURRENT_STREAMS", default_value_t = u32::MAX)]
    pub max_concurrent_streams: u32,
    /// Minimum interval a client should wait before pinging the server.
    #[arg(long, env = "KEEL_GRPC_KEEPALIVE_MIN_TIME", default_value = "5s")]
    pub grpc_keepalive_min_time: String,
    /// How long a connection may be silent before the server pings it (0 disables).
    #[arg(long, env = "KEEL_GRPC_KEEPALIVE_INTERVAL", default_value = "2h")]
    pub grpc_keepalive_interval: String,
    /// How long the server waits for the answer to its ping before closing the
    /// connection (0 disables).
    #[arg(long, env = "KEEL_GRPC_KEEPALIVE_TIMEOUT", default_value = "20s")]
    pub grpc_keepalive_timeout: String,
    /// Origins (URLs with a port) allowed to call the HTTP API from a browser (CORS);
    /// `*` or nothing allows every origin.
    #[arg(long, env = "KEEL_CORS", default_value = "*")]
    pub cors: String,
    /// Host names plain-HTTP requests may name in `Host` (against DNS rebinding); `*` or
    /// nothing allows every one.
    #[arg(long, env = "KEEL_HOST_WHITELIST", default_value = "*")]
    pub host_whitelist: String,
    /// Write long leases' time left through Raft now and then, so that leader changes do
    /// not give them their full TTL again.
    #[arg(long, env = "KEEL_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT", default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub experimental_enable_lease_checkpoint: bool,
    /// How often leases' time left is written (etcd 3.5's flag).
    #[arg(long, env = "KEEL_EXPERIMENTAL_LEASE_CHECKPOINT_INTERVAL", default_value = "5m")]
    pub experimental_lease_checkpoint_interval: String,
    /// Most revisions deleted in one write of a physical compaction.
    #[arg(long, env = "KEEL_EXPERIMENTAL_COMPACTION_BATCH_LIMIT", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub experimental_compaction_batch_limit: u32,
    /// etcd's flags for what Keel has not, or does its own way.
    #[command(flatten)]
    pub compat: crate::config_compat::CompatFlags,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "KEEL_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to time out.
    #[arg(long, env = "KEEL_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// Number of committed entries that trigger a snapshot.
    #[arg(long, env = "KEEL_SNAPSHOT_COUNT", default_value_t = 10_000)]
    pub snapshot_count: u64,
    /// Bytes of Raft log since the last snapshot that trigger one as well, and the most log
    /// kept behind a snapshot for slow followers. Keel batches many requests into one entry,
    /// so counting entries alone would let the log grow with the batch size.
    #[arg(long, env = "KEEL_EXPERIMENTAL_SNAPSHOT_LOG_BYTES", default_value_t = 64 << 20)]
    pub experimental_snapshot_log_bytes: u64,
    /// Interval between watch progress notifications (a Go duration, e.g. `10m`).
    #[arg(long, env = "KEEL_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL", default_value = "10m")]
    pub experimental_watch_progress_notify_interval: String,
    /// Disaster recovery, when a majority of the members is lost for good: start this
    /// member as a one-member cluster with its data, its member ID and the cluster ID (the
    /// other members are forgotten; add new ones after). Its old Raft log is set aside as
    /// `<wal-dir>.before-force-new-cluster`. Start it once with this flag, then without.
    #[arg(long, env = "KEEL_FORCE_NEW_CLUSTER", default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub force_new_cluster: bool,
    /// More URLs serving only `/metrics` and `/health` (comma-separated; `https` ones with
    /// the client certificate, as etcd's).
    #[arg(long, env = "KEEL_LISTEN_METRICS_URLS", default_value = "")]
    pub listen_metrics_urls: String,
    /// `basic`, or `extensive` to add gRPC handling-time histograms, as etcd's `--metrics`.
    #[arg(long, env = "KEEL_METRICS", default_value = "basic")]
    pub metrics: String,
    /// Applying entries that takes longer than this is logged and counted as slow
    /// (`etcd_server_slow_apply_total`; a Go duration).
    #[arg(long, env = "KEEL_EXPERIMENTAL_WARNING_APPLY_DURATION", default_value = "100ms")]
    pub experimental_warning_apply_duration: String,
    /// Before serving clients, compare this member's history hash with its peers' and
    /// refuse to start if one differs (etcd's flag).
    #[arg(long, env = "KEEL_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub experimental_initial_corrupt_check: bool,
    /// How often the leader compares its followers' history hashes with its own, raising
    /// a CORRUPT alarm for one that differs (a Go duration; 0 turns it off).
    #[arg(long, env = "KEEL_EXPERIMENTAL_CORRUPT_CHECK_TIME", default_value = "0s")]
    pub experimental_corrupt_check_time: String,
    /// Accepted for compatibility with etcd scripts (`zap`, etcd 3.4's structured logger).
    #[arg(long, env = "KEEL_LOGGER", default_value = "zap")]
    pub logger: String,
    /// The least severe log level written: `debug`, `info`, `warn`, `error`, `panic` or
    /// `fatal` (the last three write errors only). `RUST_LOG`, when set, takes precedence.
    #[arg(long, env = "KEEL_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Where logs go, comma-separated: `default` or `stderr`, `stdout`, or file paths
    /// (appended to).
    #[arg(long, env = "KEEL_LOG_OUTPUTS", default_value = "default")]
    pub log_outputs: String,
    /// Accepted for compatibility; Keel has no v2 API.
    #[arg(long, env = "KEEL_ENABLE_V2", default_value_t = false)]
    pub enable_v2: bool,
    /// The certificate (PEM, chain first) `https` client URLs serve.
    #[arg(long, env = "KEEL_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "KEEL_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// The authority (PEM) client certificates must be signed by, with `--client-cert-auth`.
    #[arg(long, env = "KEEL_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Require a client certificate signed by `--trusted-ca-file` on `https` client URLs;
    /// with auth enabled, a request without a token is its certificate's CommonName's.
    #[arg(long, env = "KEEL_CLIENT_CERT_AUTH", default_value_t = false)]
    pub client_cert_auth: bool,
    /// The certificate `https` peer URLs serve, and that this member presents to its peers.
    #[arg(long, env = "KEEL_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// The peer certificate's private key.
    #[arg(long, env = "KEEL_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// The authority that signed the members' peer certificates.
    #[arg(long, env = "KEEL_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Require peers to present a certificate signed by `--peer-trusted-ca-file`.
    #[arg(long, env = "KEEL_PEER_CLIENT_CERT_AUTH", default_value_t = false)]
    pub peer_client_cert_auth: bool,
    /// Serve `https` client URLs with a self-signed certificate made for them (kept in
    /// `<data-dir>/fixtures/client`) when no `--cert-file` is given; clients skip verifying
    /// it (`etcdctl --insecure-skip-tls-verify`).
    #[arg(long, env = "KEEL_AUTO_TLS", default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub auto_tls: bool,
    /// The same for `https` peer URLs (`<data-dir>/fixtures/peer`): members connect to each
    /// other without verifying certificates.
    #[arg(long, env = "KEEL_PEER_AUTO_TLS", default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub peer_auto_tls: bool,
    /// Years the certificates `--auto-tls` and `--peer-auto-tls` make are valid.
    #[arg(long, env = "KEEL_SELF_SIGNED_CERT_VALIDITY", default_value_t = 1)]
    pub self_signed_cert_validity: u32,
    /// TLS 1.2 cipher suites to allow, by Go's names, comma-separated (default: all that
    /// Keel's TLS offers; TLS 1.3 keeps its own, as in etcd).
    #[arg(long, env = "KEEL_CIPHER_SUITES", default_value = "")]
    pub cipher_suites: String,
    /// Client certificates this certificate revocation list (PEM) revokes are refused.
    #[arg(long, env = "KEEL_CLIENT_CRL_FILE")]
    pub client_crl_file: Option<PathBuf>,
    /// Peer certificates this certificate revocation list (PEM) revokes are refused.
    #[arg(long, env = "KEEL_PEER_CRL_FILE")]
    pub peer_crl_file: Option<PathBuf>,
    /// Peers must present a certificate with this CommonName.
    #[arg(long, env = "KEEL_PEER_CERT_ALLOWED_CN")]
    pub peer_cert_allowed_cn: Option<String>,
    /// A host name (or IP address) peers' certificates must be valid for.
    #[arg(long, env = "KEEL_PEER_CERT_ALLOWED_HOSTNAME")]
    pub peer_cert_allowed_hostname: Option<String>,
    /// Accept peers whose certificates name other addresses than the one they connect from.
    #[arg(long, env = "KEEL_EXPERIMENTAL_PEER_SKIP_CLIENT_SAN_VERIFICATION", default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub experimental_peer_skip_client_san_verification: bool,
    /// A host name (or IP address) clients' certificates must be valid for.
    #[arg(long, env = "KEEL_CLIENT_CERT_ALLOWED_HOSTNAME")]
    pub client_cert_allowed_hostname: Option<String>,
    /// The auth token type: `simple` (etcd's default), or
    /// `jwt,pub-key=<pem>,priv-key=<pem>,sign-method=<RS256...>,ttl=<duration>`.
    #[arg(long, env = "KEEL_AUTH_TOKEN", default_value = "simple")]
    pub auth_token: String,
    /// How long (seconds) an unused simple token stays valid.
    #[arg(long, env = "KEEL_AUTH_TOKEN_TTL", default_value_t = 300)]
    pub auth_token_ttl: u64,
    /// bcrypt's cost for password hashes (4 to 31).
    #[arg(long, env = "KEEL_BCRYPT_COST", default_value_t = 10)]
    pub bcrypt_cost: u32,
}

/// What `--auto-compaction-*` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    Off,
    /// Keep this much history (by time).
    Periodic(Duration),
    /// Keep this many revisions.
    Revision(i64),
}

/// One `--initial-cluster` entry: a member name and its peer URLs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialMember {
    pub name: String,
    pub peer_urls: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid URL {0:?} in --{1}: {2}")]
    Url(String, &'static str, String),
    #[error("--initial-cluster-state must be \"new\" or \"existing\", not {0:?}")]
    ClusterState(String),
    #[error("--initial-cluster entry {0:?} is not name=URL")]
    ClusterEntry(String),
    #[error("couldn't find local name {name:?} in the initial cluster configuration {cluster:?}")]
    NameNotInCluster { name: String, cluster: String },
    #[error("--initial-cluster has {urls:?} for {name:?} but --initial-advertise-peer-urls is {advertised:?}")]
    PeerUrlMismatch { name: String, urls: Vec<String>, advertised: Vec<String> },
    #[error("invalid --auto-compaction-retention {0:?}")]
    Retention(String),
    #[error("--auto-compaction-mode must be \"periodic\" or \"revision\", not {0:?}")]
    CompactionMode(String),
    #[error("invalid duration {0:?}")]
    Duration(String),
    #[error("--election-timeout ({election}ms) must be at least 5x --heartbeat-interval ({heartbeat}ms)")]
    Timing { election: u64, heartbeat: u64 },
    #[error("{0}")]
    Tls(String),
    #[error("--auth-token {0:?}: a token type (simple or jwt) with key=value options")]
    AuthToken(String),
    #[error("--bcrypt-cost {0}: must be between 4 and 31")]
    BcryptCost(u32),
    #[error("--metrics must be \"basic\" or \"extensive\", not {0:?}")]
    Metrics(String),
    #[error("--log-level must be debug, info, warn, error, panic or fatal, not {0:?}")]
    LogLevel(String),
    #[error("{0}")]
    Flag(String),
}

fn parse_urls(s: &str, flag: &'static str) -> Result<Vec<Url>, ConfigError> {
    s.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            let url = Url::parse(u).map_err(|e| ConfigError::Url(u.into(), flag, e.to_string()))?;
            if url.scheme() != "http" && url.scheme() != "https" {
                return Err(ConfigError::Url(u.into(), flag, "scheme must be http or https".into()));
            }
            if url.host_str().is_none() || url.port_or_known_default().is_none() {
                return Err(ConfigError::Url(u.into(), flag, "needs a host and port".into()));
            }
            Ok(url)
        })
        .collect()
}

/// Parses a Go duration (`1h30m`, `10m`, `500ms`, `5s`).
pub fn parse_go_duration(s: &str) -> Result<Duration, ConfigError> {
    let err = || ConfigError::Duration(s.into());
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(err());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(err)?;
        let value: f64 = rest[..num_end].parse().map_err(|_| err())?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let secs = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(err()),
        };
        rest = &rest[unit_end..];
        total += Duration::from_secs_f64(value * secs);
    }
    Ok(total)
}

impl StoreConfig {
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name)))
    }

    pub fn client_urls(&self) -> Result<Vec<Url>, ConfigError> {
        parse_urls(&self.listen_client_urls, "listen-client-urls")
    }

    pub fn advertise_client_urls(&self) -> Result<Vec<Url>, ConfigError> {
        parse_urls(&self.advertise_client_urls, "advertise-client-urls")
    }

    pub fn peer_urls(&self) -> Result<Vec<Url>, ConfigError> {
        parse_urls(&self.listen_peer_urls, "listen-peer-urls")
    }

    pub fn advertise_peer_urls(&self) -> Result<Vec<String>, ConfigError> {
        Ok(parse_urls(&self.initial_advertise_peer_urls, "initial-advertise-peer-urls")?
            .iter()
            .map(|u| u.as_str().trim_end_matches('/').to_string())
            .collect())
    }

    pub fn joining(&self) -> Result<bool, ConfigError> {
        match self.initial_cluster_state.as_str() {
            "new" => Ok(false),
            "existing" => Ok(true),
            other => Err(ConfigError::ClusterState(other.into())),
        }
    }

    /// The `--initial-cluster` members, grouped by name, in order of first appearance.
    pub fn initial_members(&self) -> Result<Vec<InitialMember>, ConfigError> {
        let default = format!("{}={}", self.name, self.initial_advertise_peer_urls);
        let spec = self.initial_cluster.clone().unwrap_or(default);
        let mut out: Vec<InitialMember> = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, url) = entry.split_once('=').ok_or_else(|| ConfigError::ClusterEntry(entry.into()))?;
            let url = parse_urls(url, "initial-cluster")?
                .first()
                .map(|u| u.as_str().trim_end_matches('/').to_string())
                .ok_or_else(|| ConfigError::ClusterEntry(entry.into()))?;
            match out.iter_mut().find(|m| m.name == name) {
                Some(m) => m.peer_urls.push(url),
                None => out.push(InitialMember { name: name.into(), peer_urls: vec![url] }),
            }
        }
        Ok(out)
    }

    /// How many members of the initial cluster, this one included, run on this machine: those
    /// with a peer URL on a loopback address or on a host this member advertises. At least 1.
    pub fn members_on_this_host(&self) -> Result<usize, ConfigError> {
        let host = |u: &Url| u.host().map(|h| h.to_owned());
        let own: Vec<url::Host> = parse_urls(&self.initial_advertise_peer_urls, "initial-advertise-peer-urls")?
            .iter()
            .filter_map(host)
            .collect();
        let local = |url: &str| {
            Url::parse(url).ok().as_ref().and_then(host).is_some_and(|h| {
                own.contains(&h)
                    || match h {
                        url::Host::Domain(d) => d == "localhost",
                        url::Host::Ipv4(ip) => ip.is_loopback(),
                        url::Host::Ipv6(ip) => ip.is_loopback(),
                    }
            })
        };
        let n = self.initial_members()?.iter().filter(|m| m.peer_urls.iter().any(|u| local(u))).count();
        Ok(n.max(1))
    }

    pub fn auto_compaction(&self) -> Result<AutoCompaction, ConfigError> {
        let r = self.auto_compaction_retention.trim();
        match self.auto_compaction_mode.as_str() {
            "revision" => {
                let n: i64 = r.parse().map_err(|_| ConfigError::Retention(r.into()))?;
                Ok(if n <= 0 { AutoCompaction::Off } else { AutoCompaction::Revision(n) })
            }
            "periodic" => {
                let d = match r.parse::<u64>() {
                    Ok(hours) => Duration::from_secs(hours * 3600),
                    Err(_) => parse_go_duration(r).map_err(|_| ConfigError::Retention(r.into()))?,
                };
                Ok(if d.is_zero() { AutoCompaction::Off } else { AutoCompaction::Periodic(d) })
            }
            other => Err(ConfigError::CompactionMode(other.into())),
        }
    }

    /// The tracing filter `--log-level` asks for.
    pub fn log_filter(&self) -> Result<&'static str, ConfigError> {
        if self.compat.debug {
            return Ok("debug");
        }
        match self.log_level.as_str() {
            "debug" => Ok("debug"),
            "info" => Ok("info,openraft=warn"),
            "warn" => Ok("warn"),
            "error" | "panic" | "fatal" => Ok("error"),
            other => Err(ConfigError::LogLevel(other.into())),
        }
    }

    pub fn metrics_urls(&self) -> Result<Vec<Url>, ConfigError> {
        parse_urls(&self.listen_metrics_urls, "listen-metrics-urls")
    }

    /// Whether `--metrics=extensive`; anything but `basic` or `extensive` is refused.
    pub fn extensive_metrics(&self) -> Result<bool, ConfigError> {
        match self.metrics.as_str() {
            "basic" => Ok(false),
            "extensive" => Ok(true),
            other => Err(ConfigError::Metrics(other.into())),
        }
    }

    pub fn warning_apply_duration(&self) -> Result<Duration, ConfigError> {
        parse_go_duration(&self.experimental_warning_apply_duration)
    }

    pub fn corrupt_check_time(&self) -> Result<Duration, ConfigError> {
        parse_go_duration(&self.experimental_corrupt_check_time)
    }

    pub fn access(&self) -> Result<crate::api::access::Access, ConfigError> {
        crate::api::access::Access::new(&self.cors, &self.host_whitelist).map_err(ConfigError::Flag)
    }

    /// How often leases' time left is checkpointed, if at all.
    pub fn lease_checkpoints(&self) -> Result<Option<Duration>, ConfigError> {
        let every = parse_go_duration(&self.experimental_lease_checkpoint_interval)?;
        if every.is_zero() {
            return Err(ConfigError::Flag("--experimental-lease-checkpoint-interval must be positive".into()));
        }
        Ok(self.experimental_enable_lease_checkpoint.then_some(every))
    }

    /// The client port's HTTP/2 keepalive and stream settings.
    pub fn keepalive(&self) -> Result<crate::api::keepalive::Keepalive, ConfigError> {
        Ok(crate::api::keepalive::Keepalive::new(
            parse_go_duration(&self.grpc_keepalive_min_time)?,
            parse_go_duration(&self.grpc_keepalive_interval)?,
            parse_go_duration(&self.grpc_keepalive_timeout)?,
            self.max_concurrent_streams,
        ))
    }

    pub fn progress_notify_interval(&self) -> Result<Duration, ConfigError> {
        parse_go_duration(&self.experimental_watch_progress_notify_interval)
    }

    /// Checks everything that can be checked before touching disk or network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.client_urls()?;
        self.advertise_client_urls()?;
        self.peer_urls()?;
        self.joining()?;
        self.auto_compaction()?;
        self.progress_notify_interval()?;
        self.log_filter()?;
        self.metrics_urls()?;
        self.extensive_metrics()?;
        self.warning_apply_duration()?;
        self.corrupt_check_time()?;
        self.keepalive()?;
        self.access()?;
        self.lease_checkpoints()?;
        self.compat.check()?;
        crate::api::tls::provider(&self.cipher_suites).map_err(ConfigError::Tls)?;
        let advertised = self.advertise_peer_urls()?;
        let members = self.initial_members()?;
        let me = members.iter().find(|m| m.name == self.name).ok_or_else(|| ConfigError::NameNotInCluster {
            name: self.name.clone(),
            cluster: self.initial_cluster.clone().unwrap_or_default(),
        })?;
        let (mut a, mut b) = (me.peer_urls.clone(), advertised.clone());
        a.sort();
        b.sort();
        if a != b {
            return Err(ConfigError::PeerUrlMismatch {
                name: self.name.clone(),
                urls: me.peer_urls.clone(),
                advertised,
            });
        }
        if self.election_timeout < 5 * self.heartbeat_interval {
            return Err(ConfigError::Timing { election: self.election_timeout, heartbeat: self.heartbeat_interval });
        }
        let https_peers = self.peer_urls()?.iter().any(|u| u.scheme() == "https")
            || self.advertise_peer_urls()?.iter().any(|u| u.starts_with("https://"))
            || self.initial_members()?.iter().flat_map(|m| &m.peer_urls).any(|u| u.starts_with("https://"));
        let peer_auto = self.peer_auto_tls && self.peer_cert_file.is_none();
        if https_peers && !peer_auto && (self.peer_cert_file.is_none() || self.peer_key_file.is_none()) {
            return Err(ConfigError::Tls("https peer URLs need --peer-cert-file and --peer-key-file".into()));
        }
        if https_peers && !peer_auto && self.peer_trusted_ca_file.is_none() {
            return Err(ConfigError::Tls("https peer URLs need --peer-trusted-ca-file (the peers' authority)".into()));
        }
        if self.peer_cert_file.is_some() != self.peer_key_file.is_some() {
            return Err(ConfigError::Tls("--peer-cert-file and --peer-key-file go together".into()));
        }
        if self.peer_client_cert_auth && self.peer_trusted_ca_file.is_none() {
            return Err(ConfigError::Tls("--peer-client-cert-auth needs --peer-trusted-ca-file".into()));
        }
        let https = self.client_urls()?.iter().any(|u| u.scheme() == "https");
        if https
            && !(self.auto_tls && self.cert_file.is_none())
            && (self.cert_file.is_none() || self.key_file.is_none())
        {
            return Err(ConfigError::Tls("https client URLs need --cert-file and --key-file".into()));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(ConfigError::Tls("--cert-file and --key-file go together".into()));
        }
        for (set, flag, needs) in [
            (self.client_crl_file.is_some() && !self.client_cert_auth, "--client-crl-file", "--client-cert-auth"),
            (self.peer_crl_file.is_some() && !self.peer_client_cert_auth, "--peer-crl-file", "--peer-client-cert-auth"),
            (
                self.peer_cert_allowed_cn.is_some() && !self.peer_client_cert_auth,
                "--peer-cert-allowed-cn",
                "--peer-client-cert-auth",
            ),
            (
                self.peer_cert_allowed_hostname.is_some() && !self.peer_client_cert_auth,
                "--peer-cert-allowed-hostname",
                "--peer-client-cert-auth",
            ),
            (
                self.client_cert_allowed_hostname.is_some() && !self.client_cert_auth,
                "--client-cert-allowed-hostname",
                "--client-cert-auth",
            ),
        ] {
            if set {
                return Err(ConfigError::Tls(format!("{flag} checks client certificates: it needs {needs}")));
            }
        }
        if self.client_cert_auth && self.trusted_ca_file.is_none() {
            return Err(ConfigError::Tls("--client-cert-auth needs --trusted-ca-file".into()));
        }
        self.jwt_options()?;
        if !(4..=31).contains(&self.bcrypt_cost) {
            return Err(ConfigError::BcryptCost(self.bcrypt_cost));
        }
        Ok(())
    }

    /// `--auth-token`: `None` for simple tokens, else the `jwt` options (`key=value`).
    pub fn jwt_options(&self) -> Result<Option<Vec<(String, String)>>, ConfigError> {
        let bad = || ConfigError::AuthToken(self.auth_token.clone());
        let mut parts = self.auth_token.split(',');
        let kind = parts.next().unwrap_or_default();
        let options: Vec<(String, String)> = parts
            .map(|p| p.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(bad))
            .collect::<Result<_, _>>()?;
        match kind {
            "simple" if options.is_empty() => Ok(None),
            "jwt" => Ok(Some(options)),
            _ => Err(bad()),
        }
    }

    /// etcd's minimum lease TTL: 1.5 election timeouts, rounded up to whole seconds.
    pub fn min_lease_ttl(&self) -> i64 {
        (self.election_timeout * 3 / 2).div_ceil(1000) as i64
    }

    /// etcd's request timeout: 5 s plus two election timeouts.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(5) + 2 * Duration::from_millis(self.election_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        store: StoreConfig,
    }

    fn with_cluster(name: &str, advertise: &str, cluster: &str) -> StoreConfig {
        use clap::Parser;
        let args = ["store", "--name", name, "--initial-advertise-peer-urls", advertise, "--initial-cluster", cluster];
        Flags::parse_from(args).store
    }

    #[test]
    fn members_on_this_host_are_those_on_loopback_or_on_our_own_host() {
        let loopback = "a=http://127.0.0.1:2380,b=http://127.0.0.1:12380,c=http://localhost:22380";
        assert_eq!(with_cluster("a", "http://127.0.0.1:2380", loopback).members_on_this_host().ok(), Some(3));
        let spread = "a=http://10.0.0.1:2380,b=http://10.0.0.2:2380,c=http://10.0.0.3:2380";
        assert_eq!(with_cluster("a", "http://10.0.0.1:2380", spread).members_on_this_host().ok(), Some(1));
        let two_here = "a=http://10.0.0.1:2380,b=http://10.0.0.1:12380,c=http://10.0.0.3:2380";
        assert_eq!(with_cluster("b", "http://10.0.0.1:12380", two_here).members_on_this_host().ok(), Some(2));
        let v6 = "a=http://[::1]:2380,b=http://[::1]:12380";
        assert_eq!(with_cluster("a", "http://[::1]:2380", v6).members_on_this_host().ok(), Some(2));
        let named = "a=http://node-a:2380,b=http://node-b:2380";
        assert_eq!(with_cluster("a", "http://node-a:2380", named).members_on_this_host().ok(), Some(1));
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("10m").ok(), Some(Duration::from_secs(600)));
        assert_eq!(parse_go_duration("1h30m").ok(), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("500ms").ok(), Some(Duration::from_millis(500)));
        assert!(parse_go_duration("10 parsecs").is_err());
        assert!(parse_go_duration("").is_err());
    }
}
