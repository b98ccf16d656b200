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

/// The machine's CPU time so far, in clock ticks, from `/proc/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    /// Time the hypervisor ran something else while this machine's virtual CPUs had work.
    pub steal: u64,
    /// Idle, including waiting for I/O.
    pub idle: u64,
    pub total: u64,
}

pub fn cpu_times() -> Option<CpuTimes> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_times(stat.lines().next()?)
}

/// `cpu  user nice system idle iowait irq softirq steal ...`.
fn parse_cpu_times(line: &str) -> Option<CpuTimes> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let t: Vec<u64> = fields.take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    Some(CpuTimes { steal: *t.get(7)?, idle: t[3] + t[4], total: t.iter().sum() })
}

impl CpuTimes {
    /// The shares of CPU time stolen and busy (neither idle nor stolen) since `before`, in
    /// percent; `None` if no time has passed.
    pub fn since(&self, before: &CpuTimes) -> Option<(f64, f64)> {
        let total = self.total.checked_sub(before.total).filter(|t| *t > 0)? as f64;
        let steal = self.steal.saturating_sub(before.steal) as f64;
        let idle = self.idle.saturating_sub(before.idle) as f64;
        Some((steal * 100.0 / total, (total - steal - idle).max(0.0) * 100.0 / total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_and_busy_are_read_from_the_cpu_line() {
        let line = "cpu  5464312 6858 1514487 3542331 140984 0 263222 40367 0 0";
        let total = 5464312 + 6858 + 1514487 + 3542331 + 140984 + 263222 + 40367;
        assert_eq!(parse_cpu_times(line), Some(CpuTimes { steal: 40367, idle: 3542331 + 140984, total }));
        assert_eq!(parse_cpu_times("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(parse_cpu_times("cpu  1 2 3"), None);
        let before = CpuTimes { steal: 10, idle: 500, total: 1000 };
        let after = CpuTimes { steal: 30, idle: 650, total: 1200 };
        assert_eq!(after.since(&before), Some((10.0, 15.0)));
        assert_eq!(before.since(&before), None);
    }
}
