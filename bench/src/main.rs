//! `keel-bench`: load generators for any etcd v3 endpoints (Keel or etcd, the same client
//! code against both) and `compare`, the side-by-side runner.

mod compare;
mod floor;
mod load;
mod report;
mod watch;
mod workloads;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "keel-bench", about = "Benchmark etcd v3 endpoints: Keel and etcd side by side")]
struct Cli {
    #[command(flatten)]
    load: load::LoadOpts,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Put latency and throughput.
    Put(workloads::PutOpts),
    /// Range latency and throughput (linearizable or serializable).
    Range(workloads::RangeOpts),
    /// Compare-and-set transactions on contended keys.
    Txn(workloads::TxnOpts),
    /// Watch delivery latency, from put sent to event received, and missed events.
    WatchLatency(watch::WatchOpts),
    /// Many watchers of one key: time until all have an event, member memory.
    WatchFanout(watch::WatchOpts),
    /// A Kubernetes-like mix of guarded updates, lists, gets and watches.
    Mixed(workloads::MixedOpts),
    /// Start a three-member Keel and a three-member etcd cluster, run the same workloads
    /// against each (alternating), and write docs/benchmarks.md with plots.
    Compare(compare::CompareOpts),
    /// The training run of a profile-guided build: the quick comparison's workloads against
    /// a three-member cluster of an instrumented `keel` alone, then a clean stop (see
    /// `bench/pgo-build`).
    Train(compare::TrainOpts),
    /// The least a replicated, durable put takes on this machine: a client, a leader and two
    /// followers as plain blocking processes, no server work (`--total` puts).
    Floor(floor::FloorOpts),
    /// A member process of `floor`.
    #[command(hide = true)]
    FloorMember(floor::MemberOpts),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.cmd {
        // Plain blocking code: no runtime.
        Cmd::FloorMember(m) => floor::member(m),
        Cmd::Floor(f) => print_summary(&cli, floor::run(cli.load.total, f)?),
        _ => tokio::runtime::Runtime::new()?.block_on(run(&cli)),
    }
}

async fn run(cli: &Cli) -> anyhow::Result<()> {
    let o = &cli.load;
    let summary = match &cli.cmd {
        Cmd::Put(p) => workloads::put(o, p).await?,
        Cmd::Range(r) => workloads::range(o, r).await?,
        Cmd::Txn(t) => workloads::txn(o, t).await?,
        Cmd::WatchLatency(w) => watch::latency(o, w).await?,
        Cmd::WatchFanout(w) => watch::fanout(o, w).await?,
        Cmd::Mixed(m) => workloads::mixed(o, m).await?,
        Cmd::Compare(c) => return compare::run(c).await,
        Cmd::Train(t) => return compare::train(t).await,
        Cmd::Floor(_) | Cmd::FloorMember(_) => anyhow::bail!("the floor runs without a runtime"),
    };
    print_summary(cli, summary)
}

fn print_summary(cli: &Cli, summary: report::Summary) -> anyhow::Result<()> {
    summary.print();
    if let Some(path) = &cli.load.json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)?;
    }
    Ok(())
}
