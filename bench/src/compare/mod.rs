//! `keel-bench compare`: the side-by-side runner.
//!
//! Starts a three-member Keel cluster and a three-member etcd cluster on loopback with the
//! same flags, runs every workload against each, alternating A/B/A/B so drift in the
//! machine hits both, and writes docs/benchmarks.md: the machine, the command line, a table
//! of medians and Keel/etcd ratios, the targets, and SVG latency plots.

mod cluster;
pub(crate) mod idle;
mod machine;
mod plot;
mod report;

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use crate::load::LoadOpts;
use crate::report::Summary;
use crate::{watch, workloads};
use cluster::{Cluster, Flavor};

#[derive(Args, Clone, Debug)]
pub struct CompareOpts {
    /// Short runs: the whole comparison in under ten minutes.
    #[arg(long)]
    pub quick: bool,
    /// Rounds of alternation (default: 2 quick, 3 full).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// The keel binary (default: `keel` next to this binary).
    #[arg(long)]
    pub keel: Option<PathBuf>,
    /// What the keel binary is, for the report ("the release build", ...).
    #[arg(long, default_value = "the release build")]
    pub keel_build: String,
    /// The etcd binary.
    #[arg(long, default_value = "etcd")]
    pub etcd: PathBuf,
    /// The report to write.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub out: PathBuf,
    /// Only run workloads whose id contains one of these (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Also write every operation of the put, range, txn and mixed runs to a file in this
    /// directory (`<workload>-<server>-<round>.trace`, as `put --trace` does), to see where
    /// in a run its slowest operations fell.
    #[arg(long)]
    pub trace_dir: Option<PathBuf>,
}

#[derive(Args, Clone, Debug)]
pub struct TrainOpts {
    /// The keel binary: a build instrumented with `-Cprofile-generate` or by BOLT, or the
    /// optimised build to check (default: `keel` next to this binary).
    #[arg(long)]
    pub keel: Option<PathBuf>,
}

/// The extra figure holding the share of CPU time the hypervisor stole during a run.
pub const STEAL: &str = "cpu_steal_pct";

/// The extra figure saying whether the fan-out's watchers were on the leader (1) or a
/// follower (0) when the run began: the writer's puts take milliseconds in one case and
/// tens of milliseconds in the other, the watchers' member doing the leader's work too.
pub const ON_LEADER: &str = "watchers_on_leader";

/// The extra figures holding the members' CPU time (µs) and context switches (every thread
/// of the three) per operation, over a load run: what the machine pays for each request,
/// which on two shared cores is also what the requests queue behind.
pub const CPU_PER_OP: &str = "members_cpu_us_per_op";
pub const SWITCHES_PER_OP: &str = "members_switches_per_op";
/// The three members' CPU time (µs) per event delivered, over a watch-latency run (its
/// writer's puts included): what a fan-out costs the servers, apart from the client.
pub const CPU_PER_EVENT: &str = "members_cpu_us_per_event";
/// `etcdctl check perf`'s own CPU time (µs) per write: the load generator shares the two
/// cores with the members, so what it takes is what the members cannot have.
pub const CLIENT_CPU_PER_OP: &str = "etcdctl_cpu_us_per_write";

/// A run during which the hypervisor took more than this share of the machine's CPU (in
/// percent) is run again, on either side: on this host it stole 5-23% for seconds at a
/// time, and a run's tail then measured that rather than the server.
pub const MAX_STEAL_PCT: f64 = 3.0;
/// How many times one run may be repeated for that.
const MAX_REPEATS: usize = 2;

/// One workload of the comparison.
pub struct Workload {
    pub id: &'static str,
    pub title: String,
    kind: Kind,
}

enum Kind {
    Put(LoadOpts, workloads::PutOpts),
    Range(LoadOpts, workloads::RangeOpts),
    Txn(LoadOpts, workloads::TxnOpts),
    Mixed(LoadOpts, workloads::MixedOpts),
    WatchLatency(LoadOpts, watch::WatchOpts),
    WatchFanout(LoadOpts, watch::WatchOpts),
    CheckPerf,
}

impl Workload {
    /// The 100k-watcher fan-out and check perf's large load: they leave a cluster loaded for
    /// a long while (etcd spent minutes per later workload), so the comparison runs them
    /// once, after the rounds, and the training run leaves them out.
    fn heavy(&self) -> bool {
        matches!(self.kind, Kind::WatchFanout(..) | Kind::CheckPerf)
    }
}

/// The keel binary to run: the one given, or `keel` next to this binary.
fn keel_program(given: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    Ok(match given {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("keel"),
    })
}

fn load(clients: usize, conns: usize, total: u64) -> LoadOpts {
    LoadOpts { endpoints: Vec::new(), conns, clients, total, duration: None, rate: 0.0, json: None, trace: None }
}

fn watch_opts(watchers: usize, streams: usize, rate: f64, puts: u64) -> watch::WatchOpts {
    watch::WatchOpts { watchers, streams, put_rate: rate, puts, prefix: false, val_size: 32, member_pid: Vec::new() }
}

fn plan(quick: bool) -> Vec<Workload> {
    let scale = |q: u64, f: u64| if quick { q } else { f };
    let put = |space| workloads::PutOpts { key_size: 8, val_size: 256, key_space_size: space, sequential_keys: false };
    let mut w = vec![
        Workload {
            id: "put-1",
            title: "put, 1 client, sequential (8 B key, 256 B value)".into(),
            kind: Kind::Put(load(1, 1, scale(2000, 10_000)), put(100_000)),
        },
        Workload {
            id: "put-100",
            title: "put, 100 clients over 10 connections".into(),
            kind: Kind::Put(load(100, 10, scale(20_000, 100_000)), put(100_000)),
        },
        Workload {
            id: "range-l",
            title: "range, linearizable, 1 client, 10 keys".into(),
            kind: Kind::Range(
                load(1, 1, scale(3000, 10_000)),
                workloads::RangeOpts { keys: 10, val_size: 256, consistency: "l".into() },
            ),
        },
        Workload {
            id: "range-s",
            title: "range, serializable, 1 client, 10 keys".into(),
            kind: Kind::Range(
                load(1, 1, scale(3000, 10_000)),
                workloads::RangeOpts { keys: 10, val_size: 256, consistency: "s".into() },
            ),
        },
        Workload {
            id: "txn",
            title: "txn compare-and-set, 50 clients, 1000 keys".into(),
            kind: Kind::Txn(load(50, 10, scale(10_000, 50_000)), workloads::TxnOpts { keys: 1000, val_size: 256 }),
        },
        Workload {
            id: "mixed",
            title: "mixed (k8s-like), 50 clients, 10 informer watches".into(),
            kind: Kind::Mixed(
                load(50, 10, scale(10_000, 50_000)),
                workloads::MixedOpts { objects: 1000, object_size: 1024, watchers: 10 },
            ),
        },
        Workload {
            id: "watch-1k",
            title: "watch latency, 1,000 watchers on 10 streams, 100 puts/s".into(),
            kind: Kind::WatchLatency(load(1, 10, 0), watch_opts(1000, 10, 100.0, scale(500, 2000))),
        },
        Workload {
            id: "watch-10k",
            title: "watch latency, 10,000 watchers on 100 streams, 100 puts/s".into(),
            kind: Kind::WatchLatency(load(1, 10, 0), watch_opts(10_000, 100, 100.0, scale(300, 1000))),
        },
    ];
    if !quick {
        w.push(Workload {
            id: "fanout-100k",
            title: "watch fan-out, 100,000 watchers of one key on one member, 10 puts/s".into(),
            kind: Kind::WatchFanout(load(1, 10, 0), watch_opts(100_000, 100, 10.0, 50)),
        });
        w.push(Workload { id: "check-perf", title: "etcdctl check perf --load=l".into(), kind: Kind::CheckPerf });
    }
    w
}

/// Waits, before a run, for a second in which the machine was quiet: under 2% of its CPU
/// stolen by the hypervisor and under 10% busy. After a heavy workload the host took back
/// 5-23% of this machine's CPU for several seconds (vmstat), and a server still working off
/// the previous load would slow the next run of the other one; either way the run would
/// measure that rather than the server. Gives up after 30 s. Returns a note for the log.
async fn settle() -> String {
    let started = Instant::now();
    let Some(mut last) = machine::cpu_times() else { return String::new() };
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let Some(now) = machine::cpu_times() else { return String::new() };
        let Some((steal, busy)) = now.since(&last) else { return String::new() };
        last = now;
        let waited = started.elapsed().as_secs_f64();
        if steal < 2.0 && busy < 10.0 {
            return format!(" (after {waited:.0} s for a quiet machine)");
        }
        if waited >= 30.0 {
            return format!(" (machine not quiet after {waited:.0} s: {steal:.0}% stolen, {busy:.0}% busy)");
        }
    }
}

async fn run_one(w: &Workload, c: &Cluster, trace: Option<PathBuf>) -> anyhow::Result<Summary> {
    let eps = c.endpoints.clone();
    let with = |o: &LoadOpts| LoadOpts { endpoints: eps.clone(), trace: trace.clone(), ..o.clone() };
    let load = matches!(w.kind, Kind::Put(..) | Kind::Range(..) | Kind::Txn(..) | Kind::Mixed(..) | Kind::CheckPerf);
    let watch = matches!(w.kind, Kind::WatchLatency(..));
    let before = if load || watch { idle::counters(&c.pids()) } else { None };
    let mut s = match &w.kind {
        Kind::Put(o, p) => workloads::put(&with(o), p).await?,
        Kind::Range(o, r) => workloads::range(&with(o), r).await?,
        Kind::Txn(o, t) => workloads::txn(&with(o), t).await?,
        Kind::Mixed(o, m) => workloads::mixed(&with(o), m).await?,
        Kind::WatchLatency(o, wo) => {
            let wo = watch::WatchOpts { member_pid: c.pids(), ..wo.clone() };
            watch::latency(&with(o), &wo).await?
        }
        Kind::WatchFanout(o, wo) => {
            // Every watcher on one member (the first), as etcd's watch memory benchmark.
            let one = LoadOpts { endpoints: vec![eps[0].clone()], ..o.clone() };
            let wo = watch::WatchOpts { member_pid: vec![c.pids()[0]], ..wo.clone() };
            let on_leader = c.leads(0).await;
            let mut s = watch::fanout(&one, &wo).await?;
            if let Some(l) = on_leader {
                s.extra.insert(ON_LEADER.into(), if l { 1.0 } else { 0.0 });
            }
            s
        }
        Kind::CheckPerf => report::check_perf(&c.endpoints).await?,
    };
    if let Some(before) = before {
        if let Some(after) = idle::counters(&c.pids()) {
            if watch {
                per_event(&mut s, before, after);
            } else {
                per_op(&mut s, before, after);
            }
        }
    }
    s.name = w.title.clone();
    Ok(s)
}

/// The members' CPU time (µs) and context switches per operation of `s`, from counters
/// (clock ticks, switches) taken before and after its run; none if it did nothing.
fn per_count(s: &Summary, (ticks0, switches0): (u64, u64), (ticks1, switches1): (u64, u64)) -> Option<(f64, f64)> {
    if s.count == 0 {
        return None;
    }
    let per = |d: u64| d as f64 / s.count as f64;
    let cpu = per(ticks1.saturating_sub(ticks0)) * 1e6 / idle::TICKS_PER_SEC;
    Some((cpu, per(switches1.saturating_sub(switches0))))
}

/// Records [`CPU_PER_OP`] and [`SWITCHES_PER_OP`] for a load run.
pub fn per_op(s: &mut Summary, before: (u64, u64), after: (u64, u64)) {
    if let Some((cpu, switches)) = per_count(s, before, after) {
        s.extra.insert(CPU_PER_OP.into(), cpu);
        s.extra.insert(SWITCHES_PER_OP.into(), switches);
    }
}

/// Records [`CPU_PER_EVENT`] for a watch run, whose count is its events delivered.
fn per_event(s: &mut Summary, before: (u64, u64), after: (u64, u64)) {
    if let Some((cpu, _)) = per_count(s, before, after) {
        s.extra.insert(CPU_PER_EVENT.into(), cpu);
    }
}

/// The training run of a profile-guided build (`bench/pgo-build`): the quick comparison's
/// workloads, once each, against a three-member cluster of `o.keel` alone, which is then
/// stopped the way an operator would stop it, so that every member writes its profile (an
/// instrumented build's; the same run checks the optimised binary before it is used).
/// The heavy workloads are left out: they would weigh the profile towards themselves, and
/// their code is the same fan-out and write paths the others run.
pub async fn train(o: &TrainOpts) -> anyhow::Result<()> {
    let keel = keel_program(o.keel.as_ref())?;
    let started = Instant::now();
    let cluster = Cluster::start(Flavor::Keel, &keel, &std::env::temp_dir()).await?;
    for w in plan(true).iter().filter(|w| !w.heavy()) {
        let s = run_one(w, &cluster, None).await?;
        eprintln!("{}: {:.0} ops/s, p50 {:.3}  p99 {:.3} ms", w.id, s.throughput, s.p50_ms, s.p99_ms);
    }
    // The join is blocking: off the runtime's thread.
    tokio::task::spawn_blocking(move || cluster.stop(std::time::Duration::from_secs(30))).await??;
    eprintln!("trained in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The command line as run, for the report, less the build's description (`--keel-build`,
/// which the report gives in words).
fn shown_command(args: impl Iterator<Item = String>) -> String {
    let mut shown = vec!["keel-bench".to_string()];
    let mut skip = false;
    for a in args {
        if std::mem::take(&mut skip) || a.starts_with("--keel-build=") {
            continue;
        }
        skip = a == "--keel-build";
        if !skip {
            shown.push(a);
        }
    }
    shown.join(" ")
}

pub async fn run(o: &CompareOpts) -> anyhow::Result<()> {
    let started = Instant::now();
    let keel = keel_program(o.keel.as_ref())?;
    let base = std::env::temp_dir();
    if let Some(d) = &o.trace_dir {
        std::fs::create_dir_all(d)?;
    }
    let mut m = machine::probe(&base);
    // The floor first, on a machine with nothing else of ours running.
    let floor_puts = if o.quick { 2_000 } else { 5_000 };
    let floor_dir = crate::floor::FloorOpts { dir: Some(base.clone()) };
    match tokio::task::spawn_blocking(move || crate::floor::run(floor_puts, &floor_dir)).await? {
        Ok(f) => {
            eprintln!("floor: p50 {:.3}  p99 {:.3} ms", f.p50_ms, f.p99_ms);
            m.floor = Some(f);
        }
        Err(e) => eprintln!("floor: {e:#}"),
    }
    let rounds = o.rounds.unwrap_or(if o.quick { 2 } else { 3 });
    let workloads: Vec<Workload> = plan(o.quick)
        .into_iter()
        .filter(|w| o.only.is_empty() || o.only.iter().any(|x| w.id.contains(x.as_str())))
        .collect();
    eprintln!(
        "starting a three-member Keel cluster ({}) and a three-member etcd cluster ({})",
        keel.display(),
        o.etcd.display()
    );
    let clusters =
        [Cluster::start(Flavor::Keel, &keel, &base).await?, Cluster::start(Flavor::Etcd, &o.etcd, &base).await?];
    // What each costs while idle: both at once, over the same seconds, on a quiet machine.
    let settled = settle().await;
    let window = std::time::Duration::from_secs(if o.quick { 5 } else { 10 });
    let idle = idle::measure([clusters[0].pids(), clusters[1].pids()], window).await;
    eprintln!("idle for {} s{settled}: Keel {:?}, etcd {:?}", window.as_secs(), idle[0], idle[1]);
    let mut results: Vec<[Vec<Summary>; 2]> = workloads.iter().map(|_| [Vec::new(), Vec::new()]).collect();
    // Runs repeated because the hypervisor took CPU during them, per cluster, and how many
    // repeats the whole comparison may make.
    let mut repeats = [0usize; 2];
    let budget = if o.quick { 4 } else { 12 };
    for round in 0..=rounds {
        for (wi, w) in workloads.iter().enumerate() {
            if (round == rounds) != w.heavy() {
                continue;
            }
            // A/B in even rounds, B/A in odd ones.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for ci in order {
                let c = &clusters[ci];
                let label = if round == rounds { "once".to_string() } else { format!("round {}/{rounds}", round + 1) };
                eprintln!("{label}: {} on {}", w.id, c.flavor.name());
                let mut attempt = 0;
                loop {
                    let settled = settle().await;
                    let before = machine::cpu_times();
                    let trace = o.trace_dir.as_ref().map(|d| {
                        d.join(format!("{}-{}-{}.trace", w.id, c.flavor.name(), label.replace([' ', '/'], "-")))
                    });
                    match run_one(w, c, trace).await {
                        Ok(mut s) => {
                            // How much CPU the hypervisor took meanwhile: on a shared host this,
                            // not the server, often decides a run's tail.
                            let steal =
                                before.zip(machine::cpu_times()).and_then(|(b, a)| a.since(&b)).map(|(st, _)| st);
                            if let Some(pct) = steal {
                                s.extra.insert(STEAL.into(), pct);
                            }
                            // Each run's own figures, so the spread behind the medians can be seen.
                            eprintln!(
                                "  {:.0} ops/s, p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3} ms; CPU steal {}{settled}",
                                s.throughput,
                                s.p50_ms,
                                s.p99_ms,
                                s.p999_ms,
                                s.max_ms,
                                steal.map_or("unknown".into(), |p| format!("{p:.0}%"))
                            );
                            let disturbed = steal.is_some_and(|p| p > MAX_STEAL_PCT);
                            if disturbed
                                && !w.heavy()
                                && attempt < MAX_REPEATS
                                && repeats.iter().sum::<usize>() < budget
                            {
                                attempt += 1;
                                repeats[ci] += 1;
                                eprintln!("  the hypervisor took over {MAX_STEAL_PCT}% of the CPU: run again");
                                continue;
                            }
                            results[wi][ci].push(s);
                        }
                        Err(e) => eprintln!("  {} failed on {}: {e:#}", w.id, c.flavor.name()),
                    }
                    break;
                }
            }
        }
    }
    let run = report::Outcome {
        command: shown_command(std::env::args().skip(1)),
        keel_build: &o.keel_build,
        rounds,
        workloads: &workloads,
        results: &results,
        repeats,
        idle,
        idle_window: window,
        took: started.elapsed(),
    };
    report::write(&o.out, &m, &run)?;
    eprintln!("wrote {} in {:.0}s", o.out.display(), started.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_switches_are_counted_per_operation() {
        let mut s = crate::report::Recorder::default().summary("put", std::time::Duration::from_secs(1));
        // No operations: nothing to divide by, nothing recorded.
        per_op(&mut s, (0, 0), (10, 10));
        assert!(s.extra.is_empty());
        s.count = 1_000;
        // 50 ticks of 10 ms over 1,000 operations: 500 µs each; 13,000 switches: 13 each.
        per_op(&mut s, (100, 2_000), (150, 15_000));
        assert_eq!(s.extra.get(CPU_PER_OP), Some(&500.0));
        assert_eq!(s.extra.get(SWITCHES_PER_OP), Some(&13.0));
        // A counter that went backwards (a thread ended) counts as nothing, not as negative.
        per_op(&mut s, (150, 15_000), (150, 14_000));
        assert_eq!(s.extra.get(SWITCHES_PER_OP), Some(&0.0));
    }

    #[test]
    fn the_reported_command_leaves_out_the_builds_description() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>().into_iter();
        assert_eq!(
            shown_command(args(&["compare", "--keel", "k", "--keel-build", "the release build", "--quick"])),
            "keel-bench compare --keel k --quick"
        );
        assert_eq!(
            shown_command(args(&["compare", "--keel-build=x y", "--only", "put"])),
            "keel-bench compare --only put"
        );
        assert_eq!(shown_command(args(&[])), "keel-bench");
    }

    #[test]
    fn a_watch_run_counts_cpu_per_event_delivered_and_nothing_else() {
        let mut s = crate::report::Recorder::default().summary("watch", std::time::Duration::from_secs(1));
        s.count = 100_000;
        // 40 ticks of 10 ms over 100,000 events: 4 µs each.
        per_event(&mut s, (100, 2_000), (140, 3_000));
        assert_eq!(s.extra.get(CPU_PER_EVENT), Some(&4.0));
        assert_eq!(s.extra.len(), 1, "{:?}", s.extra);
    }
}
