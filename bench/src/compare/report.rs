//! `etcdctl check perf`, medians, and writing docs/benchmarks.md.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::idle::IdleCost;
use super::machine::Machine;
use super::plot;
use super::{
    idle, Workload, CLIENT_CPU_PER_OP, CPU_PER_EVENT, CPU_PER_OP, MAX_STEAL_PCT, ON_LEADER, STEAL, SWITCHES_PER_OP,
};
use crate::report::Summary;

/// Runs `etcdctl check perf --load=l` (60 s) against the cluster and reads its verdict,
/// with the writes it made (its throughput over its 60 s, so that the members' CPU is
/// counted per write) and its own CPU per write. Both CPU figures cover the whole command:
/// connecting its 500 clients, and deleting every key it wrote at the end, count too.
pub async fn check_perf(endpoints: &[String]) -> anyhow::Result<Summary> {
    let before = idle::children_ticks();
    let out = tokio::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(["check", "perf", "--load=l"])
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let number_in = |line: &str| -> f64 {
        line.split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter_map(|t| t.parse::<f64>().ok())
            .next_back()
            .unwrap_or(0.0)
    };
    let mut s = crate::report::Recorder::default().summary("check perf", Duration::from_secs(60));
    for line in text.lines() {
        if line.contains("Throughput") {
            s.throughput = number_in(line);
        } else if line.contains("Slowest request") {
            s.extra.insert("slowest_request_s".into(), number_in(line));
        } else if line.contains("Stddev") {
            s.extra.insert("stddev_s".into(), number_in(line));
        }
    }
    s.count = (s.throughput * 60.0).round() as u64;
    if let (Some(b), Some(a), true) = (before, idle::children_ticks(), s.count > 0) {
        let us = a.saturating_sub(b) as f64 / idle::TICKS_PER_SEC * 1e6 / s.count as f64;
        s.extra.insert(CLIENT_CPU_PER_OP.into(), us);
    }
    let passed = text.lines().last().is_some_and(|l| l.trim() == "PASS");
    s.extra.insert("pass".into(), if passed { 1.0 } else { 0.0 });
    Ok(s)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

fn metric(runs: &[Summary], f: impl Fn(&Summary) -> Option<f64>) -> Option<f64> {
    median(runs.iter().filter_map(f).collect())
}

/// Reads one figure from a run's summary.
type Metric = Box<dyn Fn(&Summary) -> Option<f64>>;

const READING_START: &str = "<!-- reading:start -->";
const READING_END: &str = "<!-- reading:end -->";

/// The hand-written reading kept from the previous report, if any.
fn kept_reading(path: &Path) -> String {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    match (old.find(READING_START), old.find(READING_END)) {
        (Some(a), Some(b)) if b > a => old[a + READING_START.len()..b].trim().to_string(),
        _ => "_(to be written after reading the numbers)_".to_string(),
    }
}

/// Keel/etcd of each round's pair of runs (`k[i]` and `e[i]`), and in how many rounds that
/// is at most `max_ratio`: medians taken over each side's rounds apart can meet a target
/// that most rounds miss, or the other way round. `None` for fewer than two rounds.
fn by_round(k: &[Summary], e: &[Summary], f: &dyn Fn(&Summary) -> Option<f64>, max_ratio: f64) -> Option<String> {
    if k.len() < 2 || k.len() != e.len() {
        return None;
    }
    let ratios: Vec<f64> = k
        .iter()
        .zip(e)
        .filter_map(|(a, b)| match (f(a), f(b)) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        })
        .collect();
    if ratios.len() != k.len() {
        return None;
    }
    let met = ratios.iter().filter(|r| **r <= max_ratio).count();
    // Two decimals, or three where two would round onto the threshold from either side.
    let list: Vec<String> = ratios
        .iter()
        .map(|r| if (r - max_ratio).abs() < 0.005 && *r != max_ratio { format!("{r:.3}") } else { format!("{r:.2}") })
        .collect();
    let mut out = format!("round by round {}: met in {met} of {}", list.join(", "), ratios.len());
    let steal: Option<Vec<String>> =
        k.iter().zip(e).map(|(a, b)| Some(format!("{:.0}/{:.0}%", a.extra.get(STEAL)?, b.extra.get(STEAL)?))).collect();
    if let Some(steal) = steal {
        let _ = write!(out, "; CPU stolen by the hypervisor, Keel/etcd run of each round: {}", steal.join(", "));
    }
    Some(out)
}

/// How an extra figure is named in the table, and its decimals: the ones every load run
/// has read as words; workload-specific ones keep their keys.
fn label_of(extra: &str) -> (&str, usize) {
    match extra {
        CPU_PER_OP => ("the members' CPU per request (µs)", 0),
        SWITCHES_PER_OP => ("the members' context switches per request", 1),
        CPU_PER_EVENT => ("the members' CPU per event delivered (µs)", 2),
        CLIENT_CPU_PER_OP => ("etcdctl's CPU per write (µs)", 0),
        other => (other, 2),
    }
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

/// Keel/etcd, and whether that is better for Keel.
fn ratio(k: Option<f64>, e: Option<f64>, lower_is_better: bool) -> String {
    match (k, e) {
        (Some(k), Some(e)) if e > 0.0 => {
            let r = k / e;
            let better = if lower_is_better { r < 1.0 } else { r > 1.0 };
            format!("{r:.2}{}", if better { " ✓" } else { "" })
        }
        _ => "–".into(),
    }
}

/// What a comparison ran and measured.
pub struct Outcome<'a> {
    pub command: String,
    /// What the keel binary is ("the release build", ...).
    pub keel_build: &'a str,
    pub rounds: usize,
    pub workloads: &'a [Workload],
    pub results: &'a [[Vec<Summary>; 2]],
    /// Runs repeated because the hypervisor took CPU during them: Keel's, etcd's.
    pub repeats: [usize; 2],
    /// Each cluster's cost while idle (Keel's, etcd's), measured over `idle_window`.
    pub idle: [Option<IdleCost>; 2],
    pub idle_window: Duration,
    pub took: Duration,
}

pub fn write(out: &Path, m: &Machine, run: &Outcome<'_>) -> anyhow::Result<()> {
    let Outcome { command, keel_build, rounds, workloads, results, repeats, idle, idle_window, took } = run;
    let (rounds, took, workloads, results) = (*rounds, *took, *workloads, *results);
    let plots = out.with_file_name("bench");
    std::fs::create_dir_all(&plots)?;
    let reading = kept_reading(out);
    let mut d = String::new();
    writeln!(d, "# Benchmarks: Keel against etcd, same machine, same run\n")?;
    writeln!(
        d,
        "Written by `{command}` ({rounds} rounds alternating A/B/B/A...; the 100k-watcher fan-out and check perf run once, after the rounds; {:.0} s in all).",
        took.as_secs_f64()
    )?;
    writeln!(
        d,
        "Both clusters: three members on loopback, identical flags (`--heartbeat-interval=100 \
         --election-timeout=1000 --snapshot-count=10000`), the same `keel-bench` client code \
         (Rust `etcd-client`). Keel is {keel_build}; etcd is Debian's `etcd-server`."
    )?;
    writeln!(
        d,
        "Before each run the runner waits for a quiet second (under 2% of the CPU stolen by the \
         hypervisor, under 10% busy); a run during which the hypervisor took more than \
         {MAX_STEAL_PCT}% of the CPU is run again, at most twice (heavy workloads excepted). \
         Repeated this time: {} Keel runs, {} etcd runs.\n",
        repeats[0], repeats[1]
    )?;
    writeln!(d, "## Machine\n")?;
    writeln!(d, "| | |\n|---|---|")?;
    writeln!(d, "| cores | {} |", m.cores)?;
    writeln!(d, "| memory | {:.1} GiB |", m.memory_gib)?;
    writeln!(d, "| CPU | {} |", m.cpu)?;
    writeln!(d, "| kernel | {} |", m.kernel)?;
    writeln!(d, "| idle CPU | {} |", m.idle)?;
    writeln!(d, "| scheduler parameters | {} |", m.scheduler)?;
    writeln!(
        d,
        "| disk fsync (4 KiB write + fdatasync) | p50 {:.3} ms, p99 {:.3} ms |",
        m.fsync_p50_ms, m.fsync_p99_ms
    )?;
    if let Some(f) = &m.floor {
        writeln!(
            d,
            "| a replicated put's floor (`keel-bench floor`: a client, a leader and two followers as plain \
             blocking processes, loopback TCP, durable on two of three; no server work; {} puts) | p50 {:.3} ms, \
             p99 {:.3} ms, p99.9 {:.3} ms; the three members' CPU {} µs and {} context switches a put |",
            f.count,
            f.p50_ms,
            f.p99_ms,
            f.p999_ms,
            fmt(f.extra.get(CPU_PER_OP).copied(), 0),
            fmt(f.extra.get(SWITCHES_PER_OP).copied(), 1),
        )?;
    }
    writeln!(d)?;
    write_idle(&mut d, idle, *idle_window)?;
    writeln!(d, "## Results (median over rounds)\n")?;
    writeln!(d, "Ratios are Keel / etcd; ✓ marks where Keel is better.\n")?;
    writeln!(d, "| workload | metric | Keel | etcd | ratio |\n|---|---|---:|---:|---:|")?;
    for (w, [k, e]) in workloads.iter().zip(results) {
        let rows: Vec<(&str, Metric, bool, usize)> = vec![
            ("throughput (ops/s)", Box::new(|s: &Summary| Some(s.throughput)), false, 0),
            ("p50 ms", Box::new(|s: &Summary| Some(s.p50_ms).filter(|v| *v > 0.0)), true, 3),
            ("p99 ms", Box::new(|s: &Summary| Some(s.p99_ms).filter(|v| *v > 0.0)), true, 3),
            ("p99.9 ms", Box::new(|s: &Summary| Some(s.p999_ms).filter(|v| *v > 0.0)), true, 3),
        ];
        for (name, f, lower, digits) in rows {
            let (kv, ev) = (metric(k, &f), metric(e, &f));
            if kv.is_none() && ev.is_none() {
                continue;
            }
            writeln!(
                d,
                "| {} | {name} | {} | {} | {} |",
                w.title,
                fmt(kv, digits),
                fmt(ev, digits),
                ratio(kv, ev, lower)
            )?;
        }
        let mut extras: Vec<String> = k.iter().chain(e.iter()).flat_map(|s| s.extra.keys().cloned()).collect();
        extras.sort();
        extras.dedup();
        for x in extras {
            let f = |s: &Summary| s.extra.get(&x).copied();
            let (kv, ev) = (metric(k, f), metric(e, f));
            if x == STEAL {
                // The machine's, not the server's: no ratio.
                writeln!(
                    d,
                    "| {} | CPU stolen by the hypervisor (%) | {} | {} | – |",
                    w.title,
                    fmt(kv, 1),
                    fmt(ev, 1)
                )?;
                continue;
            }
            if x == ON_LEADER {
                // Where the run happened to put the watchers: a condition, not a result.
                let said = |v: Option<f64>| v.map_or("–", |v| if v > 0.5 { "leader" } else { "follower" });
                writeln!(d, "| {} | the watchers' member | {} | {} | – |", w.title, said(kv), said(ev))?;
                continue;
            }
            let lower = !matches!(x.as_str(), "pass");
            let (label, digits) = label_of(&x);
            writeln!(
                d,
                "| {} | {label} | {} | {} | {} |",
                w.title,
                fmt(kv, digits),
                fmt(ev, digits),
                ratio(kv, ev, lower)
            )?;
        }
        if let (Some(ks), Some(es)) = (k.last(), e.last()) {
            if ks.p99_ms > 0.0 || es.p99_ms > 0.0 {
                let file = plots.join(format!("{}.svg", w.id));
                let mut series = vec![("Keel", ks), ("etcd", es)];
                // The one-client put beside the machine's floor for it.
                if let (true, Some(f)) = (w.id == "put-1", &m.floor) {
                    series.push(("floor (keel-bench floor)", f));
                }
                if plot::percentiles(&file, &w.title, &series).is_ok() {
                    writeln!(d, "| {} | plot | [{}.svg](bench/{}.svg) | | |", w.title, w.id, w.id)?;
                }
            }
        }
    }
    writeln!(d, "\n## The issue's targets\n")?;
    let find = |id: &str| workloads.iter().position(|w| w.id == id).map(|i| &results[i]);
    let target = |d: &mut String, what: &str, id: &str, f: &dyn Fn(&Summary) -> Option<f64>, max_ratio: f64| {
        if let Some([k, e]) = find(id) {
            let (kv, ev) = (metric(k, f), metric(e, f));
            let met = matches!((kv, ev), (Some(k), Some(e)) if k <= e * max_ratio);
            let mut detail: Vec<String> = Vec::new();
            if let (Some(kv), Some(ev)) = (kv, ev) {
                if ev > 0.0 {
                    detail.push(format!("{:.2}×", kv / ev));
                }
            }
            // Only when every round ran on both, so that the i-th runs are one round's pair.
            if k.len() == rounds && e.len() == rounds {
                detail.extend(by_round(k, e, f, max_ratio));
            }
            let detail = if detail.is_empty() { String::new() } else { format!(" ({})", detail.join("; ")) };
            let _ = writeln!(
                d,
                "- {what}: Keel {} vs etcd {} → {}{detail}",
                fmt(kv, 3),
                fmt(ev, 3),
                if met { "**met**" } else { "**not met**" }
            );
        }
    };
    target(&mut d, "1-client sequential put p99 (ms), target ≤ ½ etcd", "put-1", &|s| Some(s.p99_ms), 0.5);
    target(
        &mut d,
        "watch delivery p99, 1,000 watchers / 10 streams (ms), target ≤ ½ etcd",
        "watch-1k",
        &|s| Some(s.p99_ms),
        0.5,
    );
    target(&mut d, "watch delivery p99, 10,000 watchers / 100 streams (ms)", "watch-10k", &|s| Some(s.p99_ms), 1.0);
    target(&mut d, "100,000 watchers: delivery p99 (ms), target ≤ ½ etcd", "fanout-100k", &|s| Some(s.p99_ms), 0.5);
    target(
        &mut d,
        "100,000 watchers: member RSS (MB), target ≤ etcd",
        "fanout-100k",
        &|s| s.extra.get("member_rss_mb").copied(),
        1.0,
    );
    if let Some([k, e]) = find("check-perf") {
        let pass = |r: &[Summary]| metric(r, |s| s.extra.get("pass").copied()).is_some_and(|p| p > 0.5);
        // What each write cost the members and the load generator, where measured.
        let costs = |r: &[Summary]| match (
            metric(r, |s| s.extra.get(CPU_PER_OP).copied()),
            metric(r, |s| s.extra.get(CLIENT_CPU_PER_OP).copied()),
        ) {
            (Some(m), Some(c)) => format!("; CPU a write: the members {m:.0} µs, etcdctl {c:.0} µs"),
            _ => String::new(),
        };
        writeln!(
            d,
            "- `etcdctl check perf --load=l`: Keel {} ({:.0} writes/s{}), etcd {} ({:.0} writes/s{})",
            if pass(k) { "PASS" } else { "FAIL" },
            metric(k, |s| Some(s.throughput)).unwrap_or(0.0),
            costs(k),
            if pass(e) { "PASS" } else { "FAIL" },
            metric(e, |s| Some(s.throughput)).unwrap_or(0.0),
            costs(e),
        )?;
    }
    writeln!(d, "\n## Reading\n\n{READING_START}\n{reading}\n{READING_END}")?;
    std::fs::write(out, d)?;
    Ok(())
}

/// Each cluster's cost while idle, if it could be measured.
fn write_idle(d: &mut String, idle: &[Option<IdleCost>; 2], window: Duration) -> std::fmt::Result {
    let [Some(k), Some(e)] = idle else { return Ok(()) };
    writeln!(d, "## Idle\n")?;
    writeln!(
        d,
        "Both clusters started, no client, measured over the same {} s before the first workload.\n",
        window.as_secs()
    )?;
    writeln!(d, "| | Keel | etcd | ratio |\n|---|---:|---:|---:|")?;
    let rows: [(&str, f64, f64, usize); 3] = [
        ("CPU, three members (% of one core)", k.cpu_pct, e.cpu_pct, 1),
        ("context switches per second, three members", k.switches_per_s, e.switches_per_s, 0),
        ("RSS per member (MB)", k.rss_mb, e.rss_mb, 1),
    ];
    for (name, kv, ev, digits) in rows {
        writeln!(
            d,
            "| {name} | {} | {} | {} |",
            fmt(Some(kv), digits),
            fmt(Some(ev), digits),
            ratio(Some(kv), Some(ev), true)
        )?;
    }
    writeln!(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p99_ms: f64) -> Summary {
        let mut s = crate::report::Recorder::default().summary("put", Duration::from_secs(1));
        s.p99_ms = p99_ms;
        s
    }

    #[test]
    fn the_per_request_figures_read_as_words_and_others_keep_their_keys() {
        assert_eq!(label_of(CPU_PER_OP), ("the members' CPU per request (µs)", 0));
        assert_eq!(label_of(SWITCHES_PER_OP), ("the members' context switches per request", 1));
        assert_eq!(label_of("member_rss_mb"), ("member_rss_mb", 2));
    }

    #[test]
    fn a_target_is_judged_round_by_round_as_well() {
        let p99 = |s: &Summary| Some(s.p99_ms);
        // The medians (2.3 against 5.1) meet ½; paired by round, one round of three does.
        let keel = [run(1.9), run(4.7), run(2.3)];
        let etcd = [run(2.3), run(5.5), run(5.1)];
        assert_eq!(
            by_round(&keel, &etcd, &p99, 0.5).as_deref(),
            Some("round by round 0.83, 0.85, 0.45: met in 1 of 3")
        );
        // A ratio just over the threshold is not shown as the threshold itself.
        assert_eq!(
            by_round(&[run(2.012), run(1.0)], &[run(4.0), run(2.0)], &p99, 0.5).as_deref(),
            Some("round by round 0.503, 0.50: met in 1 of 2")
        );
        // With the CPU the hypervisor stole during each run.
        let stolen = |mut s: Summary, pct: f64| {
            s.extra.insert(STEAL.into(), pct);
            s
        };
        let keel_s = [stolen(run(1.9), 1.0), stolen(run(4.7), 16.4)];
        let etcd_s = [stolen(run(2.3), 2.0), stolen(run(5.5), 12.0)];
        assert_eq!(
            by_round(&keel_s, &etcd_s, &p99, 0.5).as_deref(),
            Some(
                "round by round 0.83, 0.85: met in 0 of 2; \
                 CPU stolen by the hypervisor, Keel/etcd run of each round: 1/2%, 16/12%"
            )
        );
        // One round alone, or rounds that do not pair up, give nothing to add.
        assert_eq!(by_round(&keel[..1], &etcd[..1], &p99, 0.5), None);
        assert_eq!(by_round(&keel, &etcd[..2], &p99, 0.5), None);
        // A round without the figure on one side cannot be paired either.
        assert_eq!(
            by_round(&keel, &[run(2.3), run(0.0), run(5.1)], &|s| Some(s.p99_ms).filter(|v| *v > 0.0), 0.5),
            None
        );
    }
}
