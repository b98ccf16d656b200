//! `keel up`: the embedded default. Starts the store (one member, or three local members)
//! in this process; control-plane components join here as they are built. Ctrl-C stops
//! everything; a second `keel up` on the same data dir resumes the cluster.

use std::path::PathBuf;

use clap::{Args, Parser};
use keel_store::StoreConfig;
use tokio::sync::watch;

#[derive(Args, Clone, Debug)]
pub struct UpConfig {
    /// Where every component keeps its data.
    #[arg(long, env = "KEEL_DATA_DIR", default_value = "keel-data")]
    pub data_dir: PathBuf,
    /// Store members to run: 1, or 3 for a local replicated cluster.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub store_members: u8,
}

/// Client and peer ports of local member `i` (0-based), as etcd's Procfile lays them out.
fn ports(i: u8) -> (u16, u16) {
    match i {
        0 => (2379, 2380),
        n => (u16::from(n) * 10_000 + 12_379, u16::from(n) * 10_000 + 12_380),
    }
}

fn member_config(up: &UpConfig, i: u8) -> anyhow::Result<StoreConfig> {
    let initial: Vec<String> =
        (0..up.store_members).map(|j| format!("keel-{}=http://127.0.0.1:{}", j + 1, ports(j).1)).collect();
    let (c, p) = ports(i);
    let dir = up.data_dir.join(format!("store-{}", i + 1));
    let args = [
        "store".to_string(),
        format!("--name=keel-{}", i + 1),
        format!("--data-dir={}", dir.display()),
        format!("--listen-client-urls=http://127.0.0.1:{c}"),
        format!("--advertise-client-urls=http://127.0.0.1:{c}"),
        format!("--listen-peer-urls=http://127.0.0.1:{p}"),
        format!("--initial-advertise-peer-urls=http://127.0.0.1:{p}"),
        format!("--initial-cluster={}", initial.join(",")),
        "--initial-cluster-token=keel-up".to_string(),
    ];
    #[derive(Parser)]
    struct One {
        #[command(subcommand)]
        cmd: Sub,
    }
    #[derive(clap::Subcommand)]
    enum Sub {
        Store(StoreConfig),
    }
    let One { cmd: Sub::Store(cfg) } = One::try_parse_from(std::iter::once("keel".to_string()).chain(args))?;
    cfg.validate()?;
    Ok(cfg)
}

pub async fn run(up: UpConfig, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut members = Vec::new();
    for i in 0..up.store_members {
        let cfg = member_config(&up, i)?;
        let listeners = keel_store::server::bind(&cfg).await?;
        let mut rx = stop_rx.clone();
        members.push(tokio::spawn(async move {
            keel_store::server::run(cfg, listeners, async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await
        }));
    }
    let endpoints: Vec<String> = (0..up.store_members).map(|i| format!("127.0.0.1:{}", ports(i).0)).collect();
    println!("keel is up: {} store member(s), data in {}", up.store_members, up.data_dir.display());
    println!("  etcdctl --endpoints={} member list -w table", endpoints.join(","));
    println!("Ctrl-C stops everything; `keel up --data-dir {}` resumes.", up.data_dir.display());
    shutdown.await;
    let _ = stop_tx.send(true);
    for m in members {
        m.await??;
    }
    Ok(())
}
