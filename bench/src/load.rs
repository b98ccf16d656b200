//! The load driver: N clients over M connections, a total or a duration, an optional
//! target rate, a progress bar on a terminal, per-client latency recorders merged at the end.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use etcd_client::Client;
use indicatif::{ProgressBar, ProgressStyle};

use crate::report::{Recorder, Summary};

#[derive(Args, Clone, Debug)]
pub struct LoadOpts {
    /// etcd endpoints (host:port), comma-separated.
    #[arg(long, default_value = "127.0.0.1:2379", value_delimiter = ',', global = true)]
    pub endpoints: Vec<String>,
    /// gRPC connections to open (clients share them round-robin).
    #[arg(long, default_value_t = 1, global = true)]
    pub conns: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 1, global = true)]
    pub clients: usize,
    /// Total operations (ignored when --duration is given).
    #[arg(long, default_value_t = 10_000, global = true)]
    pub total: u64,
    /// Run for this many seconds instead of a total.
    #[arg(long, global = true)]
    pub duration: Option<f64>,
    /// Target operations per second across all clients (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0, global = true)]
    pub rate: f64,
    /// Also write the summary as JSON to this file.
    #[arg(long, global = true)]
    pub json: Option<std::path::PathBuf>,
    /// Also write every operation to this file, a line each: client, microseconds from the
    /// start of the run to the operation's start, its latency in microseconds, and `ok` or
    /// `err` (to see whether slow operations come together in time).
    #[arg(long, global = true)]
    pub trace: Option<std::path::PathBuf>,
}

impl LoadOpts {
    pub fn urls(&self) -> Vec<String> {
        self.endpoints.iter().map(|e| if e.contains("://") { e.clone() } else { format!("http://{e}") }).collect()
    }
}

pub async fn connect(opts: &LoadOpts) -> anyhow::Result<Vec<Client>> {
    let mut out = Vec::new();
    for _ in 0..opts.conns.max(1) {
        let c = Client::connect(opts.urls(), Some(etcd_client::ConnectOptions::new().with_keep_alive_while_idle(true)))
            .await?;
        out.push(c);
    }
    Ok(out)
}

pub fn progress(len: Option<u64>) -> ProgressBar {
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec}") {
        bar.set_style(style);
    }
    bar
}

/// Runs `op(client, n)` for operation numbers n = 0, 1, ... from `opts.clients` tasks.
pub async fn run<F, Fut>(name: &str, opts: &LoadOpts, op: F) -> anyhow::Result<Summary>
where
    F: Fn(Client, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let conns = connect(opts).await?;
    let next = Arc::new(AtomicU64::new(0));
    let total = if opts.duration.is_some() { u64::MAX } else { opts.total };
    let bar = progress(opts.duration.is_none().then_some(opts.total));
    let start = Instant::now();
    if let Some(path) = &opts.trace {
        // To line the trace up with system traces (e.g. `perf record -k CLOCK_REALTIME`).
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        eprintln!("trace {}: the run started at {} µs since the Unix epoch", path.display(), unix.as_micros());
    }
    let end = opts.duration.map(|d| start + Duration::from_secs_f64(d));
    let tracing = opts.trace.is_some();
    let mut tasks = Vec::new();
    for c in 0..opts.clients.max(1) {
        let (client, next, op, bar) = (conns[c % conns.len()].clone(), next.clone(), op.clone(), bar.clone());
        let rate = opts.rate;
        tasks.push(tokio::spawn(async move {
            let mut rec = Recorder::default();
            let mut trace = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total || end.is_some_and(|e| Instant::now() >= e) {
                    break;
                }
                if rate > 0.0 {
                    // Op n is due at start + n / rate: the whole run keeps the target rate.
                    let due = start + Duration::from_secs_f64(n as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let t = Instant::now();
                let ok = match op(client.clone(), n).await {
                    Ok(()) => {
                        rec.record(t.elapsed());
                        true
                    }
                    Err(_) => {
                        rec.errors += 1;
                        false
                    }
                };
                if tracing {
                    trace.push((t - start, t.elapsed(), ok));
                }
                bar.inc(1);
            }
            (rec, trace)
        }));
    }
    let mut all = Recorder::default();
    let mut lines = String::new();
    for (c, t) in tasks.into_iter().enumerate() {
        let (rec, trace) = t.await?;
        all.merge(&rec);
        for (at, took, ok) in trace {
            let ok = if ok { "ok" } else { "err" };
            lines.push_str(&format!("{c} {} {} {ok}\n", at.as_micros(), took.as_micros()));
        }
    }
    if let Some(path) = &opts.trace {
        std::fs::write(path, lines)?;
    }
    bar.finish_and_clear();
    Ok(all.summary(name, start.elapsed()))
}
