//! A `keel apiserver` process over a store, and `kubectl` pointed at it through a kubeconfig
//! and a discovery cache of its own, in a temp dir.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::{free_port, wait_for};

pub struct ApiServer {
    pub port: u16,
    pub etcd_servers: String,
    extra: Vec<String>,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl ApiServer {
    /// Starts an API server over `etcd_servers` (comma-separated URLs) and waits until ready.
    pub fn start(etcd_servers: &str, extra: &[&str]) -> ApiServer {
        Self::start_as(etcd_servers, extra, None, None)
    }

    /// Starts an API server; kubectl uses `token` as its bearer token and, with `ca`, HTTPS
    /// trusting that certificate authority.
    pub fn start_as(
        etcd_servers: &str,
        extra: &[&str],
        token: Option<&str>,
        ca: Option<&std::path::Path>,
    ) -> ApiServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let user = token.map_or("{}".to_string(), |t| format!("{{token: {t}}}"));
        let cluster = match ca {
            Some(ca) => {
                format!("{{server: \"https://127.0.0.1:{port}\", certificate-authority: \"{}\"}}", ca.display())
            }
            None => format!("{{server: \"http://127.0.0.1:{port}\"}}"),
        };
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: keel\n  cluster: {cluster}\n\
             contexts:\n- name: keel\n  context:\n    cluster: keel\n    user: keel\n    namespace: default\n\
             current-context: keel\nusers:\n- name: keel\n  user: {user}\n"
        );
        std::fs::write(dir.path().join("kubeconfig"), kubeconfig).expect("kubeconfig");
        let mut a = ApiServer {
            port,
            etcd_servers: etcd_servers.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            dir,
        };
        a.spawn();
        a
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("apiserver.log"))
            .expect("log file");
        let err = log.try_clone().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("apiserver")
            .arg(format!("--etcd-servers={}", self.etcd_servers))
            .arg(format!("--port={}", self.port))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("start keel apiserver");
        self.child = Some(child);
        wait_for(&format!("the apiserver to be ready\n{}", self.log()), Duration::from_secs(30), || {
            let o = self.kubectl(&["get", "--raw", "/readyz"]);
            (o.status.success() && self.kubectl(&["get", "namespace", "default"]).status.success()).then_some(())
        });
    }

    /// Stops and starts the API server on the same port (a fresh watch cache).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The plain-HTTP URL (for API servers started without TLS).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.args(args)
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("KUBECACHEDIR", self.dir.path().join("cache"))
            .env_remove("KUBERNETES_SERVICE_HOST");
        c
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run kubectl")
    }

    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}
