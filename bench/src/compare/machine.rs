//! What the report says about the machine: cores, memory, CPU, kernel, how an idle CPU
//! waits for work, and the fsync latency of the disk the clusters write to (the floor under
//! every durable write).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use crate::report::Recorder;

pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
    pub cpu: String,
    pub kernel: String,
    /// How an idle CPU waits (see [`idle_wait`]).
    pub idle: String,
    /// The scheduler's settings on the kernel command line (see [`scheduler_params`]).
    pub scheduler: String,
    pub fsync_p50_ms: f64,
    pub fsync_p99_ms: f64,
    /// What `keel-bench floor` measured, if it ran.
    pub floor: Option<crate::report::Summary>,
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

/// How an idle CPU waits for work: the cpuidle driver and governor and, with the haltpoll
/// driver (a VM guest's), how long it polls before it halts. On a VM that matters to every
/// latency here: a halted virtual CPU costs an exit to the hypervisor and back to wake, and
/// a request wakes several. On this project's machine (polling off), 200 µs of polling,
/// tried by hand, took Keel's one-client put p50 from about 1.04 to 0.73 ms and etcd's from 1.52
/// to 1.45 ms.
fn idle_wait() -> String {
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string());
    describe_idle(
        read("/sys/devices/system/cpu/cpuidle/current_driver"),
        read("/sys/devices/system/cpu/cpuidle/current_governor"),
        read("/sys/module/haltpoll/parameters/guest_halt_poll_ns"),
    )
}

fn describe_idle(driver: Option<String>, governor: Option<String>, poll_ns: Option<String>) -> String {
    let Some(driver) = driver.filter(|d| !d.is_empty() && d != "none") else {
        return "unknown (no cpuidle driver)".into();
    };
    let mut out = format!("cpuidle driver {driver}");
    if let Some(g) = governor.filter(|g| !g.is_empty()) {
        out.push_str(&format!(", governor {g}"));
    }
    if driver == "haltpoll" {
        match poll_ns.and_then(|p| p.parse::<u64>().ok()) {
            Some(0) => out.push_str("; guest halt polling off: an idle virtual CPU halts at once"),
            Some(ns) => out.push_str(&format!("; polls up to {} µs before it halts", ns / 1000)),
            None => {}
        }
    }
    out
}

/// The scheduler's parameters on the kernel command line (`sched_*`), verbatim. They decide
/// where a woken thread runs, and so how many wake-ups of a request cross virtual CPUs: this
/// project's machine boots with `sched_vcpu_pack=15` (not a mainline parameter), and in
/// traced puts the members' threads ran one after another on one virtual CPU while the
/// other was halted, and a wake-up sent to the halted one took up to 240 µs to run.
fn scheduler_params() -> String {
    describe_scheduler(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default())
}

fn describe_scheduler(cmdline: &str) -> String {
    let params: Vec<&str> = cmdline
        .split_whitespace()
        .take_while(|w| *w != "--")
        .filter(|w| w.starts_with("sched_") || w.starts_with("sched."))
        .collect();
    if params.is_empty() {
        "none on the kernel command line".into()
    } else {
        params.join(" ")
    }
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
        idle: idle_wait(),
        scheduler: scheduler_params(),
        fsync_p50_ms,
        fsync_p99_ms,
        floor: None,
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

    #[test]
    fn idle_wait_names_the_driver_and_whether_a_guest_polls() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            describe_idle(s("haltpoll"), s("haltpoll"), s("0")),
            "cpuidle driver haltpoll, governor haltpoll; guest halt polling off: an idle virtual CPU halts at once"
        );
        assert_eq!(
            describe_idle(s("haltpoll"), s("haltpoll"), s("200000")),
            "cpuidle driver haltpoll, governor haltpoll; polls up to 200 µs before it halts"
        );
        assert_eq!(describe_idle(s("intel_idle"), s("menu"), None), "cpuidle driver intel_idle, governor menu");
        assert_eq!(describe_idle(None, None, None), "unknown (no cpuidle driver)");
        assert_eq!(describe_idle(s("none"), None, None), "unknown (no cpuidle driver)");
    }

    #[test]
    fn scheduler_params_are_taken_from_the_kernel_command_line_before_init_arguments() {
        let line = "console=ttyS0 cpuidle_haltpoll.force=1 sched_vcpu_pack=15 rdinit=/init -- --sched_x=1\n";
        assert_eq!(describe_scheduler(line), "sched_vcpu_pack=15");
        assert_eq!(describe_scheduler("quiet splash"), "none on the kernel command line");
        assert_eq!(describe_scheduler(""), "none on the kernel command line");
    }
}
