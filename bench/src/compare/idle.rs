//! What each cluster costs while nobody uses it: CPU time, context switches and memory,
//! measured for both clusters over the same seconds before the first workload. A control
//! plane's store is idle much of its life, and on a small machine an idle server's wake-ups
//! also land in whatever else runs there (here: the other cluster's runs).

use std::time::{Duration, Instant};

/// `/proc` reports CPU times in USER_HZ, which Linux fixes at 100 for user space.
pub(crate) const TICKS_PER_SEC: f64 = 100.0;

/// A cluster's cost while idle: the sums over its members, and memory per member.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IdleCost {
    /// CPU time as a share of one core, in percent.
    pub cpu_pct: f64,
    /// Context switches per second, every thread of every member.
    pub switches_per_s: f64,
    /// Resident memory per member, mean, in MB.
    pub rss_mb: f64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    ticks: u64,
    switches: u64,
    rss_mb: f64,
}

/// User plus system time of a whole process, from its `/proc/<pid>/stat` line: utime and
/// stime, the 14th and 15th fields.
fn stat_ticks(stat: &str) -> Option<u64> {
    stat_pair(stat, 14)
}

/// User plus system time of the children a process has waited for, from its
/// `/proc/<pid>/stat` line: cutime and cstime, the 16th and 17th fields.
fn stat_children_ticks(stat: &str) -> Option<u64> {
    stat_pair(stat, 16)
}

/// The sum of the `n`th and next fields of a `/proc/<pid>/stat` line (counting from 1). The
/// command name (the 2nd, in parentheses) may hold spaces and parentheses itself, so fields
/// are counted from the last `)`, which ends the 2nd.
fn stat_pair(stat: &str, n: usize) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(n.checked_sub(3)?);
    let first: u64 = fields.next()?.parse().ok()?;
    let second: u64 = fields.next()?.parse().ok()?;
    Some(first + second)
}

/// The CPU time (clock ticks) of this process's children that have been waited for: taken
/// before and after a command is run and waited for, what that command cost.
pub(crate) fn children_ticks() -> Option<u64> {
    stat_children_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// Voluntary plus involuntary context switches in one thread's `status`.
fn status_switches(status: &str) -> u64 {
    status
        .lines()
        .filter(|l| l.starts_with("voluntary_ctxt_switches:") || l.starts_with("nonvoluntary_ctxt_switches:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// A process's counters; `None` if it has gone. A process's own `status` counts only its
/// first thread's switches, so every thread's are added up.
fn sample_one(pid: u32) -> Option<Sample> {
    let ticks = stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let mut switches = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        if let Ok(s) = std::fs::read_to_string(task.path().join("status")) {
            switches += status_switches(&s);
        }
    }
    Some(Sample { ticks, switches, rss_mb: crate::watch::rss_mb(pid)? })
}

fn sample(pids: &[u32]) -> Option<Sample> {
    pids.iter().try_fold(Sample::default(), |acc, pid| {
        let s = sample_one(*pid)?;
        Some(Sample { ticks: acc.ticks + s.ticks, switches: acc.switches + s.switches, rss_mb: acc.rss_mb + s.rss_mb })
    })
}

/// CPU time (clock ticks) and context switches of the processes `pids` so far, summed;
/// `None` if one has gone.
pub(crate) fn counters(pids: &[u32]) -> Option<(u64, u64)> {
    sample(pids).map(|s| (s.ticks, s.switches))
}

fn cost(before: Sample, after: Sample, members: usize, took: Duration) -> Option<IdleCost> {
    let secs = took.as_secs_f64();
    if secs <= 0.0 || members == 0 {
        return None;
    }
    Some(IdleCost {
        cpu_pct: after.ticks.saturating_sub(before.ticks) as f64 / TICKS_PER_SEC / secs * 100.0,
        // A thread that ended meanwhile takes its count with it: never below zero.
        switches_per_s: after.switches.saturating_sub(before.switches) as f64 / secs,
        rss_mb: after.rss_mb / members as f64,
    })
}

/// Measures every cluster (its members' pids) over the same `window`.
pub async fn measure<const N: usize>(clusters: [Vec<u32>; N], window: Duration) -> [Option<IdleCost>; N] {
    let before = clusters.each_ref().map(|p| sample(p));
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let took = started.elapsed();
    std::array::from_fn(|i| cost(before[i]?, sample(&clusters[i])?, clusters[i].len(), took))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        // The name holds a space and a parenthesis; utime 1200 and stime 345 follow.
        let line = "4242 (keel (m0) x) S 1 4242 4242 0 -1 4194560 9000 0 12 0 1200 345 0 0 20 0 7 0 100";
        assert_eq!(stat_ticks(line), Some(1545));
        assert_eq!(stat_ticks("4242 (keel) S 1 2"), None);
        assert_eq!(stat_ticks("no parenthesis"), None);
    }

    #[test]
    fn children_time_is_the_two_fields_after_the_process_own() {
        let line = "42 (etcd (x) y) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 900 100 20 0 8";
        assert_eq!(stat_ticks(line), Some(300));
        assert_eq!(stat_children_ticks(line), Some(1000));
        assert_eq!(stat_children_ticks("42 (etcd) S 1 2"), None);
    }

    #[test]
    fn switches_add_voluntary_and_involuntary() {
        let status = "Name:\tkeel\nvoluntary_ctxt_switches:\t150\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(status_switches(status), 157);
        assert_eq!(status_switches("Name:\tkeel\n"), 0);
    }

    #[test]
    fn cost_is_per_second_and_memory_per_member() {
        let before = Sample { ticks: 1000, switches: 5000, rss_mb: 300.0 };
        let after = Sample { ticks: 1050, switches: 25_000, rss_mb: 330.0 };
        let c = cost(before, after, 3, Duration::from_secs(10));
        assert_eq!(c, Some(IdleCost { cpu_pct: 5.0, switches_per_s: 2000.0, rss_mb: 110.0 }));
        // Counts that went down (a thread ended) give zero, not a wrapped number.
        let fewer = Sample { switches: 4000, ..after };
        assert_eq!(cost(before, fewer, 3, Duration::from_secs(10)).map(|c| c.switches_per_s), Some(0.0));
        assert_eq!(cost(before, after, 3, Duration::ZERO), None);
    }

    #[tokio::test]
    async fn this_process_can_be_measured() {
        let me = vec![std::process::id()];
        let got = measure([me, vec![u32::MAX]], Duration::from_millis(50)).await;
        assert!(got[0].is_some_and(|c| c.rss_mb > 0.0 && c.cpu_pct >= 0.0), "{got:?}");
        // A process that does not exist gives nothing rather than zeros.
        assert_eq!(got[1], None);
    }
}
