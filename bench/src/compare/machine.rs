//! What the report says about the machine: cores, memory, CPU, kernel, and the fsync
//! latency of the disk the clusters write to (the floor under every durable write).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use crate::report::Recorder;

pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
    pub cpu: String,
    pub kernel: String,
    pub fsync_p50_ms: f64,
    pub fsync_p99_ms: f64,
}

fn meminfo_gib() -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb: f64 = text
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0 / 1024.0
}

/// 200 × (write 4 KiB, fdatasync) in `dir`.
fn fsync_latency(dir: &Path) -> (f64, f64) {
    let path = dir.join("fsync-probe");
    let Ok(mut f) = std::fs::File::create(&path) else { return (0.0, 0.0) };
    let block = vec![7u8; 4096];
    let mut rec = Recorder::default();
    for _ in 0..200 {
        let t = Instant::now();
        if f.write_all(&block).is_err() || f.sync_data().is_err() {
            break;
        }
        rec.record(t.elapsed());
    }
    let _ = std::fs::remove_file(&path);
    let s = rec.summary("fsync", std::time::Duration::from_secs(1));
    (s.p50_ms, s.p99_ms)
}

pub fn probe(dir: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let (fsync_p50_ms, fsync_p99_ms) = fsync_latency(dir);
    Machine {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_gib: meminfo_gib(),
        cpu,
        kernel,
        fsync_p50_ms,
        fsync_p99_ms,
    }
}

/// The machine's CPU time so far as (stolen, total), in clock ticks, from `/proc/stat`:
/// time the hypervisor ran something else while this machine's virtual CPUs had work.
pub fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_times(stat.lines().next()?)
}

/// `cpu  user nice system idle iowait irq softirq steal ...`: steal is the eighth figure.
fn parse_cpu_times(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields.take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    Some((*ticks.get(7)?, ticks.iter().sum()))
}

/// The share of CPU time stolen between two [`cpu_times`] readings, in percent.
pub fn steal_pct(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let total = after.1.checked_sub(before.1).filter(|t| *t > 0)?;
    Some(after.0.saturating_sub(before.0) as f64 * 100.0 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_read_from_the_cpu_line() {
        let line = "cpu  5464312 6858 1514487 3542331 140984 0 263222 40367 0 0";
        assert_eq!(parse_cpu_times(line), Some((40367, 5464312 + 6858 + 1514487 + 3542331 + 140984 + 263222 + 40367)));
        assert_eq!(parse_cpu_times("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(parse_cpu_times("cpu  1 2 3"), None);
        assert_eq!(steal_pct((10, 1000), (30, 1200)), Some(10.0));
        assert_eq!(steal_pct((10, 1000), (10, 1000)), None);
    }
}
