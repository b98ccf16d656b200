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
