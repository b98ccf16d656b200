//! `keel`: one binary for every part of Keel. `main` parses flags and wires; each
//! subcommand's start-up lives in its crate.

mod up;

use clap::{Parser, Subcommand};
use keel_store::StoreConfig;

#[derive(Parser)]
#[command(
    name = "keel",
    version,
    about = "A Raft-replicated, etcd-compatible store and a Kubernetes-style control plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a store member (a drop-in etcd v3 server; takes etcd's member flags).
    Store(Box<StoreConfig>),
    /// Run a Kubernetes-compatible API server over a store (Keel's or etcd).
    Apiserver(Box<keel_apiserver::ApiServerConfig>),
    /// Run the controllers (so far the garbage collector) against an API server.
    ControllerManager(Box<keel_controllers::ControllerManagerConfig>),
    /// Run the embedded default: the store (1 or 3 local members) and, as they land, the
    /// control-plane components, until Ctrl-C.
    Up(up::UpConfig),
    /// Work with backups taken by `etcdctl snapshot save`.
    Snapshot {
        #[command(subcommand)]
        cmd: SnapshotCmd,
    },
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Create a new data directory from a backup; start `keel store` on it with a new
    /// `--initial-cluster` to bring up a cluster that continues from the backup.
    Restore {
        /// The file `etcdctl snapshot save` wrote.
        file: std::path::PathBuf,
        /// The data directory to create (must not hold a member yet).
        #[arg(long)]
        data_dir: std::path::PathBuf,
    },
}

/// Logging: `RUST_LOG` if set, else the store's `--log-level`; to stderr, or where the
/// store's `--log-outputs` say.
fn init_tracing(cli: &Cli) -> Result<(), String> {
    use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
    let (level, outputs) = match &cli.command {
        Cmd::Store(cfg) => (cfg.log_filter().map_err(|e| e.to_string())?, cfg.log_outputs.as_str()),
        _ => ("info,openraft=warn", "default"),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let mut writer: Option<BoxMakeWriter> = None;
    for out in outputs.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let next = match out {
            "default" | "stderr" => BoxMakeWriter::new(std::io::stderr),
            "stdout" => BoxMakeWriter::new(std::io::stdout),
            "journal" => return Err("--log-outputs: journal is not supported; use stderr under systemd".into()),
            path => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("--log-outputs {path}: {e}"))?;
                BoxMakeWriter::new(std::sync::Mutex::new(file))
            }
        };
        writer = Some(match writer {
            Some(w) => BoxMakeWriter::new(w.and(next)),
            None => next,
        });
    }
    let writer = writer.unwrap_or_else(|| BoxMakeWriter::new(std::io::stderr));
    // The filter can be replaced while the process runs (etcd's `PUT /config/local/log`).
    // Filters without span-field directives, as all of ours are, are decided once per call
    // site: a disabled log line costs nothing more, a written one an uncontended read lock.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(outputs == "default")
        .with_filter_reloading();
    let handle = builder.reload_handle();
    builder.init();
    keel_store::process::install_log_control(Box::new(move |directives| {
        let filter = tracing_subscriber::EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    }));
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_tracing(&cli) {
        eprintln!("keel: {e}");
        return std::process::ExitCode::FAILURE;
    }
    keel_store::process::raise_open_files_limit();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Cmd::Store(cfg) = &cli.command {
        if let Some(n) = store_workers(cfg) {
            rt.worker_threads(n);
        }
    }
    match rt.build() {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => {
            eprintln!("keel: starting the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The async worker threads for a store member: its share of the machine's cores when other
/// members of its cluster run on the same machine (`None`: tokio's default, one per core, or
/// `TOKIO_WORKER_THREADS` when set).
///
/// Workers beyond the cores a member can have to itself add wake-ups, not capacity: a worker
/// that finds work wakes an idle one to look for more, and a task woken from another thread
/// wakes a parked worker, each hand-off two context switches, which cost a virtual machine
/// more than the work handed over. Three members on loopback on two cores, one client's puts
/// (random keys), nine A/B runs of 8,000-10,000 puts on fresh clusters: with one worker each
/// instead of two, p99 was lower in eight, its median 0.75 against 0.83 ms and 0.80 against
/// 0.92 ms in two series; p50 about 30 µs lower; context switches 18.0 a put against 25.0,
/// the members' CPU about 550 µs a put against 615. Watch delivery to 1,000 watchers did not
/// change (p99 median 2.88 against 2.89 ms, six A/B runs); put throughput under 100 clients
/// fell 3-5%.
fn store_workers(cfg: &StoreConfig) -> Option<usize> {
    if std::env::var_os("TOKIO_WORKER_THREADS").is_some() {
        return None;
    }
    let here = cfg.members_on_this_host().ok().filter(|n| *n > 1)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = (cores / here).max(1);
    tracing::info!(workers, members_on_this_host = here, cores, "sharing the machine's cores with other members");
    Some(workers)
}

async fn run(cli: Cli) -> std::process::ExitCode {
    let result = match cli.command {
        Cmd::Store(cfg) => run_store(*cfg).await,
        Cmd::Apiserver(cfg) => keel_apiserver::run(*cfg, shutdown_signal()).await,
        Cmd::ControllerManager(cfg) => keel_controllers::run(*cfg, shutdown_signal()).await,
        Cmd::Up(cfg) => up::run(cfg, shutdown_signal()).await,
        Cmd::Snapshot { cmd: SnapshotCmd::Restore { file, data_dir } } => {
            keel_store::api::backup::restore(&file, &data_dir).map_err(anyhow::Error::from).map(|()| {
                println!("restored {} into {}", file.display(), data_dir.display());
            })
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run_store(cfg: StoreConfig) -> anyhow::Result<()> {
    cfg.validate()?;
    let listeners = keel_store::server::bind(&cfg).await?;
    keel_store::server::run(cfg, listeners, shutdown_signal()).await?;
    Ok(())
}
