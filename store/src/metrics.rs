//! What the hot paths count and time, under etcd's metric names, label names and bucket
//! bounds, so the alerts and dashboards written for etcd (the etcd mixin's fsync, commit,
//! proposal, gRPC and peer alerts) read Keel's members as they read etcd's.
//!
//! The collectors are process-wide, as etcd's are (Prometheus' default registry): the
//! code that counts reaches them without a handle, and each member's `/metrics` registry
//! registers them beside the gauges it reads when scraped (`api/metrics.rs`). A process
//! running several members (tests) counts them all together.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

pub struct Hot {
    pub wal_fsync: Histogram,
    pub wal_write_bytes: IntCounter,
    pub backend_commit: Histogram,
    pub proposals_pending: IntGauge,
    pub proposals_failed: IntCounter,
    pub slow_apply: IntCounter,
    pub mvcc_put: IntCounter,
    pub mvcc_delete: IntCounter,
    pub mvcc_range: IntCounter,
    pub mvcc_txn: IntCounter,
    pub grpc_started: IntCounterVec,
    pub grpc_handled: IntCounterVec,
    pub grpc_msg_received: IntCounterVec,
    pub grpc_msg_sent: IntCounterVec,
    /// Only with `--metrics=extensive`, as etcd's.
    pub grpc_handling: HistogramVec,
    pub client_received_bytes: IntCounter,
    pub client_sent_bytes: IntCounter,
    pub peer_round_trip: HistogramVec,
    pub peer_sent_failures: IntCounterVec,
}

pub static HOT: LazyLock<Hot> = LazyLock::new(Hot::new);

/// `--metrics=extensive`: gRPC handling times too.
static EXTENSIVE: AtomicBool = AtomicBool::new(false);
/// `--experimental-warning-apply-duration`, in microseconds.
static SLOW_APPLY_MICROS: AtomicU64 = AtomicU64::new(100_000);

/// Sets what the flags decide, once at start-up.
pub fn configure(extensive: bool, slow_apply: Duration) {
    EXTENSIVE.store(extensive, Ordering::Relaxed);
    SLOW_APPLY_MICROS.store(u64::try_from(slow_apply.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
}

pub fn extensive() -> bool {
    EXTENSIVE.load(Ordering::Relaxed)
}

/// Applying entries for longer than this is slow (logged, and counted).
pub fn slow_apply() -> Duration {
    Duration::from_micros(SLOW_APPLY_MICROS.load(Ordering::Relaxed))
}

fn opts(subsystem: &str, name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("etcd").subsystem(subsystem)
}

/// etcd's disk latency buckets: 1 ms to 8 s, doubling.
fn disk_histogram(name: &str, help: &str) -> Histogram {
    let buckets = exponential_buckets(0.001, 2.0, 14).unwrap_or_default();
    let opts = HistogramOpts::new(name, help).namespace("etcd").subsystem("disk").buckets(buckets);
    Histogram::with_opts(opts).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn counter(o: Opts) -> IntCounter {
    let name = o.name.clone();
    IntCounter::with_opts(o).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn counter_vec(o: Opts, labels: &[&str]) -> IntCounterVec {
    let name = o.name.clone();
    IntCounterVec::new(o, labels).unwrap_or_else(|e| panic!("{name}: {e}"))
}

impl Hot {
    fn new() -> Hot {
        let grpc = |name: &str, help: &str, labels: &[&str]| counter_vec(Opts::new(name, help), labels);
        let rtt_buckets = exponential_buckets(0.0001, 2.0, 14).unwrap_or_default();
        let rtt = HistogramOpts::new("peer_round_trip_time_seconds", "Round-Trip-Time histogram between peers")
            .namespace("etcd")
            .subsystem("network")
            .buckets(rtt_buckets);
        Hot {
            wal_fsync: disk_histogram(
                "wal_fsync_duration_seconds",
                "The latency distributions of fsync called by WAL.",
            ),
            wal_write_bytes: counter(opts("disk", "wal_write_bytes_total", "Total number of bytes written in WAL.")),
            backend_commit: disk_histogram(
                "backend_commit_duration_seconds",
                "The latency distributions of commit called by backend.",
            ),
            proposals_pending: IntGauge::with_opts(opts(
                "server",
                "proposals_pending",
                "The current number of pending proposals to commit.",
            ))
            .unwrap_or_else(|e| panic!("proposals_pending: {e}")),
            proposals_failed: counter(opts(
                "server",
                "proposals_failed_total",
                "The total number of failed proposals seen.",
            )),
            slow_apply: counter(opts(
                "server",
                "slow_apply_total",
                "The total number of slow apply requests (likely overloaded from slow disk).",
            )),
            mvcc_put: counter(opts("mvcc", "put_total", "Total number of puts seen by this member.")),
            mvcc_delete: counter(opts("mvcc", "delete_total", "Total number of deletes seen by this member.")),
            mvcc_range: counter(opts("mvcc", "range_total", "Total number of ranges seen by this member.")),
            mvcc_txn: counter(opts("mvcc", "txn_total", "Total number of txns seen by this member.")),
            grpc_started: grpc(
                "grpc_server_started_total",
                "Total number of RPCs started on the server.",
                &["grpc_type", "grpc_service", "grpc_method"],
            ),
            grpc_handled: grpc(
                "grpc_server_handled_total",
                "Total number of RPCs completed on the server, regardless of success or failure.",
                &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
            ),
            grpc_msg_received: grpc(
                "grpc_server_msg_received_total",
                "Total number of RPC stream messages received on the server.",
                &["grpc_type", "grpc_service", "grpc_method"],
            ),
            grpc_msg_sent: grpc(
                "grpc_server_msg_sent_total",
                "Total number of gRPC stream messages sent by the server.",
                &["grpc_type", "grpc_service", "grpc_method"],
            ),
            grpc_handling: HistogramVec::new(
                HistogramOpts::new(
                    "grpc_server_handling_seconds",
                    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
                ),
                &["grpc_type", "grpc_service", "grpc_method"],
            )
            .unwrap_or_else(|e| panic!("grpc_handling: {e}")),
            client_received_bytes: counter(opts(
                "network",
                "client_grpc_received_bytes_total",
                "The total number of bytes received from grpc clients.",
            )),
            client_sent_bytes: counter(opts(
                "network",
                "client_grpc_sent_bytes_total",
                "The total number of bytes sent to grpc clients.",
            )),
            peer_round_trip: HistogramVec::new(rtt, &["To"]).unwrap_or_else(|e| panic!("peer_round_trip: {e}")),
            peer_sent_failures: counter_vec(
                opts("network", "peer_sent_failures_total", "The total number of send failures from peers."),
                &["To"],
            ),
        }
    }

    /// Adds every collector to a member's registry.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.wal_fsync.clone()))?;
        registry.register(Box::new(self.wal_write_bytes.clone()))?;
        registry.register(Box::new(self.backend_commit.clone()))?;
        registry.register(Box::new(self.proposals_pending.clone()))?;
        registry.register(Box::new(self.proposals_failed.clone()))?;
        registry.register(Box::new(self.slow_apply.clone()))?;
        registry.register(Box::new(self.mvcc_put.clone()))?;
        registry.register(Box::new(self.mvcc_delete.clone()))?;
        registry.register(Box::new(self.mvcc_range.clone()))?;
        registry.register(Box::new(self.mvcc_txn.clone()))?;
        registry.register(Box::new(self.grpc_started.clone()))?;
        registry.register(Box::new(self.grpc_handled.clone()))?;
        registry.register(Box::new(self.grpc_msg_received.clone()))?;
        registry.register(Box::new(self.grpc_msg_sent.clone()))?;
        if extensive() {
            registry.register(Box::new(self.grpc_handling.clone()))?;
        }
        registry.register(Box::new(self.client_received_bytes.clone()))?;
        registry.register(Box::new(self.client_sent_bytes.clone()))?;
        registry.register(Box::new(self.peer_round_trip.clone()))?;
        registry.register(Box::new(self.peer_sent_failures.clone()))?;
        Ok(())
    }
}

/// Times a step into a histogram: `let _t = Timer::start(&HOT.wal_fsync);`.
pub struct Timer<'a> {
    histogram: &'a Histogram,
    started: Instant,
}

impl<'a> Timer<'a> {
    pub fn start(histogram: &'a Histogram) -> Timer<'a> {
        Timer { histogram, started: Instant::now() }
    }
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

/// Counts a proposal pending while it lives, as etcd's `proposals_pending`.
pub struct Pending(());

impl Pending {
    pub fn start() -> Pending {
        HOT.proposals_pending.inc();
        Pending(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        HOT.proposals_pending.dec();
    }
}
