//! `keel controller-manager`: the controllers, each a client of the API server that keeps no
//! state it cannot rebuild by list+watch (DESIGN.md). So far: the garbage collector, which
//! gives `propagationPolicy` (Background, Foreground, Orphan) its meaning.

pub mod gc;

use std::future::Future;
use std::path::PathBuf;

/// Flags of `keel controller-manager`.
#[derive(clap::Args, Debug, Clone)]
pub struct ControllerManagerConfig {
    /// The API server to work through.
    #[arg(long, env = "KEEL_SERVER", default_value = "http://127.0.0.1:6443")]
    pub server: String,
    /// A kubeconfig to take the server and credentials from instead of --server.
    #[arg(long, env = "KEEL_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

impl ControllerManagerConfig {
    pub fn local(server: String) -> ControllerManagerConfig {
        ControllerManagerConfig { server, kubeconfig: None }
    }

    async fn client(&self) -> anyhow::Result<kube::Client> {
        let config = match &self.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| anyhow::anyhow!("cannot read kubeconfig {}: {e}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?
            }
            None => {
                let uri: http::Uri =
                    self.server.parse().map_err(|e| anyhow::anyhow!("--server {:?}: {e}", self.server))?;
                kube::Config::new(uri)
            }
        };
        Ok(kube::Client::try_from(config)?)
    }
}

/// Runs the controllers until `shutdown` resolves.
pub async fn run(cfg: ControllerManagerConfig, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    let client = cfg.client().await?;
    tokio::select! {
        r = gc::run(client) => r,
        () = shutdown => Ok(()),
    }
}
