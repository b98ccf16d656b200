//! A `keel apiserver` process over a store, and `kubectl` pointed at it through a kubeconfig
//! and a discovery cache of its own, in a temp dir.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::free_port;

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
        let user = token.map_or("{}".to_string(), |t| format!("{{token: {t}}}"));
        Self::start_with_user(etcd_servers, extra, &user, ca)
    }

    /// Starts an API server; kubectl's kubeconfig user is `user` (a YAML flow mapping, e.g.
    /// `{client-certificate: ..., client-key: ...}`).
    pub fn start_with_user(etcd_servers: &str, extra: &[&str], user: &str, ca: Option<&std::path::Path>) -> ApiServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut a = ApiServer {
            port: 0,
            etcd_servers: etcd_servers.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            dir,
        };
        // A free port can be taken by a parallel test before the API server binds it: then
        // it exits, and starts again on another.
        for _ in 0..3 {
            a.port = free_port();
            a.write_kubeconfig(user, ca);
            if a.spawn() {
                return a;
            }
        }
        panic!("the apiserver never started on a free port\n{}", a.log());
    }

    fn write_kubeconfig(&self, user: &str, ca: Option<&std::path::Path>) {
        let port = self.port;
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
        std::fs::write(self.dir.path().join("kubeconfig"), kubeconfig).expect("kubeconfig");
    }

    /// Starts the process and waits until it serves (true) or has exited (false).
    fn spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("apiserver.log"))
            .expect("log file");
        let err = log.try_clone().expect("log file");
        let child = Command::new(super::keel_program())
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
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                eprintln!("the apiserver exited before serving:\n{}", self.log());
                self.child = None;
                return false;
            }
            let o = self.kubectl(&["get", "--raw", "/readyz"]);
            if o.status.success() && self.kubectl(&["get", "namespace", "default"]).status.success() {
                return true;
            }
            assert!(std::time::Instant::now() < deadline, "timed out waiting for the apiserver\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops and starts the API server on the same port (a fresh watch cache).
    pub fn restart(&mut self) {
        self.stop();
        assert!(self.spawn(), "the apiserver did not start again on its port");
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

/// A `keel controller-manager` process working through an API server.
pub struct ControllerManager {
    child: Child,
    dir: tempfile::TempDir,
}

impl ControllerManager {
    pub fn start(api: &ApiServer) -> ControllerManager {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(dir.path().join("controller-manager.log")).expect("log file");
        let err = log.try_clone().expect("log file");
        let child = Command::new(super::keel_program())
            .arg("controller-manager")
            .arg(format!("--server={}", api.url()))
            .env("RUST_LOG", "info,keel_controllers=debug")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("start keel controller-manager");
        ControllerManager { child, dir }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("controller-manager.log")).unwrap_or_default()
    }
}

impl Drop for ControllerManager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
