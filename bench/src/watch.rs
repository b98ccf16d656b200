//! Watch workloads: delivery latency from the moment a put is *sent* to each watcher's
//! receipt (so it includes the commit), missed events, and fan-out to many watchers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use etcd_client::{Client, WatchOptions};
use tokio::sync::mpsc;

use crate::load::{self, LoadOpts};
use crate::report::{Recorder, Summary};

#[derive(Args, Clone, Debug)]
pub struct WatchOpts {
    /// Watchers in all.
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// Watch streams the watchers are spread over.
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Puts per second from the writer.
    #[arg(long, default_value_t = 100.0)]
    pub put_rate: f64,
    /// Puts in all.
    #[arg(long, default_value_t = 1000)]
    pub puts: u64,
    /// Watch a prefix (puts go to 100 keys under it) instead of one key.
    #[arg(long)]
    pub prefix: bool,
    #[arg(long, default_value_t = 32)]
    pub val_size: usize,
    /// Member processes whose resident memory to report (comma-separated pids).
    #[arg(long, value_delimiter = ',')]
    pub member_pid: Vec<u32>,
}

const KEY: &str = "watch-bench";

/// Resident set size of a process, in MB.
pub fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

struct Stream {
    handle: tokio::task::JoinHandle<()>,
}

/// Opens the streams and watchers; returns once every watcher is created.
async fn open_watchers(
    clients: &[Client],
    w: &WatchOpts,
    t0: Instant,
    sent: Arc<Vec<AtomicU64>>,
    per_event_done: mpsc::UnboundedSender<(u64, u64)>,
) -> anyhow::Result<Vec<Stream>> {
    let streams = w.streams.clamp(1, w.watchers.max(1));
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(streams);
    let mut out = Vec::new();
    for s in 0..streams {
        let n = w.watchers / streams + usize::from(s < w.watchers % streams);
        if n == 0 {
            continue;
        }
        let opts = || w.prefix.then(|| WatchOptions::new().with_prefix());
        let mut c = clients[s % clients.len()].clone();
        let mut ws = c.watch(KEY, opts()).await?;
        for _ in 1..n {
            ws.watch(KEY, opts()).await?;
        }
        let (ready, sent, done) = (ready_tx.clone(), sent.clone(), per_event_done.clone());
        let handle = tokio::spawn(async move {
            let mut created = 0;
            while let Ok(Some(resp)) = ws.message().await {
                if resp.created() {
                    created += 1;
                    if created == n {
                        let _ = ready.send(()).await;
                    }
                    continue;
                }
                let now = t0.elapsed().as_nanos() as u64;
                for e in resp.events() {
                    let Some(kv) = e.kv() else { continue };
                    let seq = parse_seq(kv.value());
                    let Some(at) = seq.and_then(|s| sent.get(s as usize)) else { continue };
                    let lat = now.saturating_sub(at.load(Ordering::Relaxed));
                    if let Some(s) = seq {
                        let _ = done.send((s, lat));
                    }
                }
            }
        });
        out.push(Stream { handle });
    }
    for _ in 0..out.len() {
        ready_rx.recv().await;
    }
    Ok(out)
}

fn parse_seq(v: &[u8]) -> Option<u64> {
    let digits: Vec<u8> = v.iter().copied().take_while(u8::is_ascii_digit).collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// The writer: puts at a fixed rate; returns its own (acknowledged) latencies.
async fn write(mut c: Client, w: &WatchOpts, t0: Instant, sent: Arc<Vec<AtomicU64>>) -> Recorder {
    let mut rec = Recorder::default();
    let start = Instant::now();
    for seq in 0..w.puts {
        let due = start + Duration::from_secs_f64(seq as f64 / w.put_rate.max(0.001));
        tokio::time::sleep_until(due.into()).await;
        let key = if w.prefix { format!("{KEY}/{:02}", seq % 100) } else { KEY.to_string() };
        let mut value = format!("{seq:012}").into_bytes();
        value.resize(w.val_size.max(12), b'.');
        let t = Instant::now();
        sent[seq as usize].store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        match c.put(key, value, None).await {
            Ok(_) => rec.record(t.elapsed()),
            Err(_) => rec.errors += 1,
        }
    }
    rec
}

async fn measure(name: &str, opts: &LoadOpts, w: &WatchOpts) -> anyhow::Result<(Summary, Vec<u64>)> {
    let conns = load::connect(opts).await?;
    let t0 = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..w.puts).map(|_| AtomicU64::new(u64::MAX)).collect());
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    // Streams are spread over the connections.
    let streams = open_watchers(&conns, w, t0, sent.clone(), done_tx.clone()).await?;
    drop(done_tx);
    let rss_before: Vec<f64> = w.member_pid.iter().filter_map(|p| rss_mb(*p)).collect();

    let start = Instant::now();
    let writer_rec = write(conns[0].clone(), w, t0, sent.clone()).await;
    // Completion per event: when the last watcher got it.
    let want = w.watchers as u64 * w.puts;
    let mut got = 0u64;
    let mut all = Recorder::default();
    let mut last_for: HashMap<u64, (u64, u64)> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got < want {
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(Some((seq, lat))) => {
                got += 1;
                all.record(Duration::from_nanos(lat));
                let e = last_for.entry(seq).or_default();
                e.0 += 1;
                e.1 = e.1.max(lat);
            }
            _ => break,
        }
    }
    let elapsed = start.elapsed();
    let rss_after: Vec<f64> = w.member_pid.iter().filter_map(|p| rss_mb(*p)).collect();
    for s in streams {
        s.handle.abort();
    }
    let mut summary = all.summary(name, elapsed);
    summary.count = got;
    let full: Vec<u64> = last_for.values().filter(|(n, _)| *n == w.watchers as u64).map(|(_, l)| *l).collect();
    summary.extra.insert("missed_events".into(), want.saturating_sub(got) as f64);
    let put = writer_rec.summary("put", elapsed);
    summary.extra.insert("put_p50_ms".into(), put.p50_ms);
    summary.extra.insert("put_p99_ms".into(), put.p99_ms);
    if let Some(m) = rss_after.iter().cloned().reduce(f64::max) {
        summary.extra.insert("member_rss_mb".into(), m);
    }
    if let Some(m) = rss_before.iter().cloned().reduce(f64::max) {
        summary.extra.insert("member_rss_mb_idle_watchers".into(), m);
    }
    Ok((summary, full))
}

pub async fn latency(opts: &LoadOpts, w: &WatchOpts) -> anyhow::Result<Summary> {
    let name = format!("watch-latency ({} watchers, {} streams, {} puts/s)", w.watchers, w.streams, w.put_rate);
    Ok(measure(&name, opts, w).await?.0)
}

/// Many watchers of one key: delivery latency, time until every watcher has an event,
/// and the member's memory.
pub async fn fanout(opts: &LoadOpts, w: &WatchOpts) -> anyhow::Result<Summary> {
    let name = format!("watch-fanout ({} watchers, {} streams)", w.watchers, w.streams);
    let (mut s, complete) = measure(&name, opts, w).await?;
    let mut rec = Recorder::default();
    for l in complete {
        rec.record(Duration::from_nanos(l));
    }
    let c = rec.summary("complete", Duration::from_secs(1));
    s.extra.insert("all_watchers_p50_ms".into(), c.p50_ms);
    s.extra.insert("all_watchers_p99_ms".into(), c.p99_ms);
    s.extra.insert("all_watchers_max_ms".into(), c.max_ms);
    Ok(s)
}
