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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
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

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing();
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
