//! Watch workloads: delivery latency from the moment a put is *sent* to each watcher's
//! receipt (so it includes the commit), missed events, and fan-out to many watchers.

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

/// What one stream's watchers received: every delivery's latency, and per put how many of
/// them got it and the latest of them.
struct Received {
    rec: Recorder,
    /// Indexed by the put's sequence number.
    per_put: Vec<(u64, u64)>,
}

struct Streams {
    handles: Vec<tokio::task::JoinHandle<Received>>,
    /// One message per stream whose watchers have every event.
    complete: mpsc::Receiver<()>,
    /// Set to end the streams that are still waiting.
    stop: tokio::sync::watch::Sender<bool>,
}

/// Opens the streams and watchers; returns once every watcher is created. Each stream's
/// task keeps its own figures, merged at the end: the client does as little per event as it
/// can (1,000 events a put at 100 puts/s), since on a small machine its work delays the
/// servers' too.
async fn open_watchers(
    clients: &[Client],
    w: &WatchOpts,
    t0: Instant,
    sent: Arc<Vec<AtomicU64>>,
) -> anyhow::Result<Streams> {
    let streams = w.streams.clamp(1, w.watchers.max(1));
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(streams);
    let (complete_tx, complete) = mpsc::channel::<()>(streams);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut handles = Vec::new();
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
        let (ready, sent, complete) = (ready_tx.clone(), sent.clone(), complete_tx.clone());
        let mut stop = stop_rx.clone();
        let expected = n as u64 * w.puts;
        handles.push(tokio::spawn(async move {
            let mut got = Received { rec: Recorder::default(), per_put: vec![(0, 0); sent.len()] };
            let (mut created, mut events) = (0, 0u64);
            let stopped = stop.changed();
            tokio::pin!(stopped);
            loop {
                let resp = tokio::select! {
                    biased;
                    r = ws.message() => match r {
                        Ok(Some(resp)) => resp,
                        _ => break,
                    },
                    _ = &mut stopped => break,
                };
                if resp.created() {
                    created += 1;
                    if created == n {
                        let _ = ready.send(()).await;
                    }
                    continue;
                }
                let now = t0.elapsed().as_nanos() as u64;
                for e in resp.events() {
                    let Some(seq) = e.kv().and_then(|kv| parse_seq(kv.value())) else { continue };
                    let Some(at) = sent.get(seq as usize) else { continue };
                    let lat = now.saturating_sub(at.load(Ordering::Relaxed));
                    got.rec.record(Duration::from_nanos(lat));
                    // In range: `sent` has an entry for it.
                    let p = &mut got.per_put[seq as usize];
                    p.0 += 1;
                    p.1 = p.1.max(lat);
                    events += 1;
                }
                if events >= expected {
                    let _ = complete.send(()).await;
                    break;
                }
            }
            got
        }));
    }
    for _ in 0..handles.len() {
        ready_rx.recv().await;
    }
    Ok(Streams { handles, complete, stop })
}

/// The put's sequence number: the value's leading digits.
fn parse_seq(v: &[u8]) -> Option<u64> {
    let digits: &[u8] = &v[..v.iter().take_while(|b| b.is_ascii_digit()).count()];
    if digits.is_empty() {
        return None;
    }
    // A value from the server: too many digits is no sequence number, not an overflow.
    digits.iter().try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
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
    // Streams are spread over the connections.
    let mut streams = open_watchers(&conns, w, t0, sent.clone()).await?;
    let rss_before: Vec<f64> = w.member_pid.iter().filter_map(|p| rss_mb(*p)).collect();

    let start = Instant::now();
    let writer_rec = write(conns[0].clone(), w, t0, sent.clone()).await;
    // Until every stream has every event, or 30 s more.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for _ in 0..streams.handles.len() {
        if !matches!(tokio::time::timeout_at(deadline, streams.complete.recv()).await, Ok(Some(()))) {
            break;
        }
    }
    let elapsed = start.elapsed();
    let rss_after: Vec<f64> = w.member_pid.iter().filter_map(|p| rss_mb(*p)).collect();
    let _ = streams.stop.send(true);
    let want = w.watchers as u64 * w.puts;
    let mut all = Recorder::default();
    let mut last_for: Vec<(u64, u64)> = vec![(0, 0); sent.len()];
    for h in streams.handles {
        let got = h.await?;
        all.merge(&got.rec);
        for (e, (n, lat)) in last_for.iter_mut().zip(got.per_put) {
            e.0 += n;
            e.1 = e.1.max(lat);
        }
    }
    let got = all.count();
    let mut summary = all.summary(name, elapsed);
    summary.count = got;
    let full: Vec<u64> = last_for.iter().filter(|(n, _)| *n == w.watchers as u64).map(|(_, l)| *l).collect();
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

#[cfg(test)]
mod tests {
    use super::parse_seq;

    #[test]
    fn a_sequence_number_is_the_values_leading_digits_and_never_overflows() {
        assert_eq!(parse_seq(b"42-padding"), Some(42));
        assert_eq!(parse_seq(b"0"), Some(0));
        assert_eq!(parse_seq(b""), None);
        assert_eq!(parse_seq(b"x1"), None);
        assert_eq!(parse_seq(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_seq(b"18446744073709551616"), None);
        assert_eq!(parse_seq(b"99999999999999999999999"), None);
    }
}
