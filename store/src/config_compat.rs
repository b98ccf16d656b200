//! etcd member flags that tune what Keel does not have (bbolt, Go's profiler, capnslog,
//! etcd's WAL files), or that Keel honours in its own way. They are accepted, so that an
//! etcd member's flags start a Keel member unchanged, and each one given a value Keel
//! cannot honour is reported when the member starts, with what Keel does instead. Flags
//! for what Keel lacks altogether (discovery, the proxy, the v2 API) are refused with the
//! reason, never ignored.

use clap::Args;

use crate::config::ConfigError;

#[derive(Args, Clone, Debug, Default)]
pub struct CompatFlags {
    /// etcd: snapshot files to retain. Keel keeps its latest snapshot only.
    #[arg(long, env = "KEEL_MAX_SNAPSHOTS", default_value_t = 5)]
    pub max_snapshots: u32,
    /// etcd: WAL files to retain. Keel drops its Raft log up to each snapshot.
    #[arg(long, env = "KEEL_MAX_WALS", default_value_t = 5)]
    pub max_wals: u32,
    /// etcd: longest wait before a backend commit (bbolt). Keel commits each applied batch.
    #[arg(long, env = "KEEL_BACKEND_BATCH_INTERVAL", default_value = "0")]
    pub backend_batch_interval: String,
    /// etcd: most operations before a backend commit (bbolt). Keel commits each applied batch.
    #[arg(long, env = "KEEL_BACKEND_BATCH_LIMIT", default_value_t = 0)]
    pub backend_batch_limit: u64,
    /// etcd: bbolt's freelist type. Keel's state is in RocksDB.
    #[arg(long, env = "KEEL_EXPERIMENTAL_BACKEND_BBOLT_FREELIST_TYPE", default_value = "map")]
    pub experimental_backend_bbolt_freelist_type: String,
    /// etcd: Go's profiler under /debug/pprof. Keel has none (profile it with perf).
    #[arg(long, env = "KEEL_ENABLE_PPROF", default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub enable_pprof: bool,
    /// etcd: capnslog levels by package. Keel's are set by --log-level or RUST_LOG.
    #[arg(long, env = "KEEL_LOG_PACKAGE_LEVELS", default_value = "")]
    pub log_package_levels: String,
    /// Debug logging (etcd's older spelling of --log-level=debug).
    #[arg(long, env = "KEEL_DEBUG", default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub debug: bool,
    /// etcd: Raft's pre-vote phase. Keel's Raft (openraft) has none.
    #[arg(long, env = "KEEL_PRE_VOTE", default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub pre_vote: bool,
    /// Refuse membership changes that would lose quorum. Keel always does.
    #[arg(long, env = "KEEL_STRICT_RECONFIG_CHECK", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub strict_reconfig_check: bool,
    /// etcd: start the first election early after a restart. Keel's members campaign
    /// after an election timeout without a leader.
    #[arg(long, env = "KEEL_INITIAL_ELECTION_TICK_ADVANCE", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub initial_election_tick_advance: bool,
    /// etcd: bootstrap from a discovery service. Not supported.
    #[arg(long, env = "KEEL_DISCOVERY", default_value = "")]
    pub discovery: String,
    /// etcd: bootstrap from DNS SRV records. Not supported.
    #[arg(long, env = "KEEL_DISCOVERY_SRV", default_value = "")]
    pub discovery_srv: String,
    /// etcd: what to do when discovery fails (with --discovery, not supported).
    #[arg(long, env = "KEEL_DISCOVERY_FALLBACK", default_value = "proxy")]
    pub discovery_fallback: String,
    /// etcd: an HTTP proxy for the discovery service (with --discovery, not supported).
    #[arg(long, env = "KEEL_DISCOVERY_PROXY", default_value = "")]
    pub discovery_proxy: String,
    /// etcd: suffix of the DNS SRV name (with --discovery-srv, not supported).
    #[arg(long, env = "KEEL_DISCOVERY_SRV_NAME", default_value = "")]
    pub discovery_srv_name: String,
    /// etcd: run as a v2 proxy. Not supported.
    #[arg(long, env = "KEEL_PROXY", default_value = "off")]
    pub proxy: String,
    /// etcd's v2 proxy (not supported): ms an endpoint stays failed.
    #[arg(long, env = "KEEL_PROXY_FAILURE_WAIT", default_value_t = 5000)]
    pub proxy_failure_wait: u64,
    /// etcd's v2 proxy (not supported): ms between endpoint refreshes.
    #[arg(long, env = "KEEL_PROXY_REFRESH_INTERVAL", default_value_t = 30000)]
    pub proxy_refresh_interval: u64,
    /// etcd's v2 proxy (not supported): dial timeout in ms.
    #[arg(long, env = "KEEL_PROXY_DIAL_TIMEOUT", default_value_t = 1000)]
    pub proxy_dial_timeout: u64,
    /// etcd's v2 proxy (not supported): write timeout in ms.
    #[arg(long, env = "KEEL_PROXY_WRITE_TIMEOUT", default_value_t = 5000)]
    pub proxy_write_timeout: u64,
    /// etcd's v2 proxy (not supported): read timeout in ms.
    #[arg(long, env = "KEEL_PROXY_READ_TIMEOUT", default_value_t = 0)]
    pub proxy_read_timeout: u64,
    /// etcd: serve the v2 API from v3 data. Not supported.
    #[arg(long, env = "KEEL_EXPERIMENTAL_ENABLE_V2V3", default_value = "")]
    pub experimental_enable_v2v3: String,
}

impl CompatFlags {
    /// Refuses what Keel lacks; returns a notice for each flag given a value Keel does not
    /// honour.
    pub fn check(&self) -> Result<Vec<String>, ConfigError> {
        let unsupported = |flag: &str, why: &str| Err(ConfigError::Flag(format!("{flag} is not supported: {why}")));
        if !self.discovery.is_empty() || !self.discovery_srv.is_empty() {
            return unsupported(
                "--discovery / --discovery-srv",
                "start members with --initial-cluster (and --initial-cluster-state)",
            );
        }
        if self.proxy != "off" {
            return unsupported("--proxy", "Keel has no v2 proxy; use `etcd grpc-proxy` or point clients at members");
        }
        if !self.experimental_enable_v2v3.is_empty() {
            return unsupported("--experimental-enable-v2v3", "Keel serves the v3 API only");
        }
        let mut notices = Vec::new();
        let mut note = |set: bool, flag: &str, instead: &str| {
            if set {
                notices.push(format!("{flag} has no effect in Keel: {instead}"));
            }
        };
        note(self.max_snapshots != 5, "--max-snapshots", "it keeps its latest snapshot only");
        note(self.max_wals != 5, "--max-wals", "it drops its Raft log up to each snapshot");
        note(
            self.backend_batch_interval != "0" || self.backend_batch_limit != 0,
            "--backend-batch-interval/--backend-batch-limit",
            "it commits each applied batch of entries at once",
        );
        note(
            self.experimental_backend_bbolt_freelist_type != "map",
            "--experimental-backend-bbolt-freelist-type",
            "its state is in RocksDB",
        );
        note(self.enable_pprof, "--enable-pprof", "it has no Go profiler (use perf)");
        note(!self.log_package_levels.is_empty(), "--log-package-levels", "use --log-level or RUST_LOG");
        note(self.pre_vote, "--pre-vote", "its Raft (openraft) has no pre-vote phase");
        note(
            !self.strict_reconfig_check,
            "--strict-reconfig-check=false",
            "it always refuses membership changes that would lose quorum",
        );
        note(
            !self.initial_election_tick_advance,
            "--initial-election-tick-advance=false",
            "a restarted member campaigns after an election timeout without hearing from a leader",
        );
        Ok(notices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_say_nothing() {
        let f = CompatFlags {
            max_snapshots: 5,
            max_wals: 5,
            backend_batch_interval: "0".into(),
            experimental_backend_bbolt_freelist_type: "map".into(),
            strict_reconfig_check: true,
            initial_election_tick_advance: true,
            proxy: "off".into(),
            ..CompatFlags::default()
        };
        assert_eq!(f.check().ok(), Some(vec![]));
        let tuned = CompatFlags { max_wals: 0, pre_vote: true, ..f.clone() };
        let notices = tuned.check().unwrap_or_default();
        assert_eq!(notices.len(), 2, "{notices:?}");
        assert!(notices[0].starts_with("--max-wals has no effect in Keel"), "{notices:?}");
        let discovery = CompatFlags { discovery: "https://discovery.etcd.io/x".into(), ..f };
        assert!(discovery.check().is_err());
    }
}
