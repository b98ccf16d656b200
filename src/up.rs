//! `keel up`: the embedded default. Starts the store (one member, or three local members),
//! the API server on 127.0.0.1:6443 and the controller manager in this process, and writes
//! `DIR/kubeconfig`; further control-plane components join here as they are built. Ctrl-C
//! stops everything;
//! a second `keel up` on the same data dir resumes the cluster.

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
    /// The API server's port (on 127.0.0.1).
    #[arg(long, default_value_t = 6443)]
    pub apiserver_port: u16,
}

fn kubeconfig(port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: keel\n  cluster:\n    server: http://127.0.0.1:{port}\n\
         contexts:\n- name: keel\n  context:\n    cluster: keel\n    user: keel\ncurrent-context: keel\n\
         users:\n- name: keel\n  user: {{}}\n"
    )
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
    let urls = endpoints.iter().map(|e| format!("http://{e}")).collect();
    let api_cfg = keel_apiserver::ApiServerConfig::local(urls, up.apiserver_port);
    let kubeconfig_path = up.data_dir.join("kubeconfig");
    std::fs::create_dir_all(&up.data_dir)
        .and_then(|()| std::fs::write(&kubeconfig_path, kubeconfig(up.apiserver_port)))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", kubeconfig_path.display()))?;
    let mut rx = stop_rx.clone();
    let apiserver = tokio::spawn(keel_apiserver::run(api_cfg, async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    let mut rx = stop_rx.clone();
    let controllers =
        keel_controllers::ControllerManagerConfig::local(format!("http://127.0.0.1:{}", up.apiserver_port));
    let controllers = tokio::spawn(keel_controllers::run(controllers, async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    println!("keel is up: {} store member(s), data in {}", up.store_members, up.data_dir.display());
    println!("  etcdctl --endpoints={} member list -w table", endpoints.join(","));
    println!("  export KUBECONFIG={}; kubectl get namespaces", kubeconfig_path.display());
    println!("Ctrl-C stops everything; `keel up --data-dir {}` resumes.", up.data_dir.display());
    tokio::select! {
        _ = shutdown => {}
        r = apiserver => {
            // The API server ended on its own: stop the store too and report why.
            let _ = stop_tx.send(true);
            for m in members {
                m.await??;
            }
            return r?;
        }
    }
    let _ = stop_tx.send(true);
    controllers.await??;
    for m in members {
        m.await??;
    }
    Ok(())
}
