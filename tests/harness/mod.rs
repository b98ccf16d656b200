//! The shared harness for multi-process tests: real `keel store` and real `etcd` processes
//! on free loopback ports in temp dirs, killed when dropped; readiness and conditions are
//! polled with deadlines, never slept on.

#![allow(dead_code)]

pub mod base64;
pub mod etcdctl;
pub mod h2raw;
pub mod http1;
pub mod kube;
pub mod load;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which server a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Keel,
    Etcd,
}

impl Flavor {
    fn program(self) -> PathBuf {
        match self {
            Flavor::Keel => keel_program(),
            Flavor::Etcd => PathBuf::from("etcd"),
        }
    }
}

/// The `keel` binary under test: this build's, or the one `KEEL_TEST_BINARY` names (to run
/// the suite against another build of the same code, such as the benchmarks' optimised one).
pub fn keel_program() -> PathBuf {
    std::env::var_os("KEEL_TEST_BINARY").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_keel")), PathBuf::from)
}

/// A loopback port nobody is listening on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_for_or(what, timeout, f, String::new)
}

/// As [`wait_for`], and on timeout the panic message ends with what `context` gives (the
/// members' logs, say).
pub fn wait_for_or<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    context: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out waiting for {what}\n{}", context());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plain HTTP/1.0 GET of `path` from `addr` (`host:port`): the status and the body, read
/// until the server closes the connection.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let answer = http1::request(addr, "GET", path, "");
    (answer.status, answer.body)
}

/// An HTTPS client trusting `ca`, presenting `cert` (certificate, key) if given.
pub fn https_client(ca: &Path, cert: Option<&(PathBuf, PathBuf)>) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).expect("ca")).expect("ca pem");
    let mut builder = reqwest::Client::builder().use_rustls_tls().add_root_certificate(ca);
    if let Some((c, k)) = cert {
        let mut pem = std::fs::read(c).expect("cert");
        pem.extend(std::fs::read(k).expect("key"));
        builder = builder.identity(reqwest::Identity::from_pem(&pem).expect("identity"));
    }
    builder.build().expect("client")
}

/// Whether a member answers reads: with auth enabled, refusing one without a user counts.
fn serves(m: &Member) -> bool {
    let out = m.ctl(&["get", "readiness-probe"], None);
    out.success() || out.stderr.contains("etcdserver: user name is empty")
}

/// A member serving `https` client URLs: its certificate, the authority clients'
/// certificates must be signed by (`--client-cert-auth`), and the certificate the harness's
/// own etcdctl calls present.
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub ca: PathBuf,
    pub server: (PathBuf, PathBuf),
    pub client: (PathBuf, PathBuf),
}

impl ClientTls {
    /// The member flags.
    pub fn server_flags(&self) -> Vec<String> {
        vec![
            format!("--cert-file={}", self.server.0.display()),
            format!("--key-file={}", self.server.1.display()),
            format!("--trusted-ca-file={}", self.ca.display()),
            "--client-cert-auth".to_string(),
        ]
    }

    /// The member flags for `https` peer URLs, with the same files: every member presents
    /// its certificate to the others, and requires theirs.
    pub fn peer_flags(&self) -> Vec<String> {
        vec![
            format!("--peer-cert-file={}", self.server.0.display()),
            format!("--peer-key-file={}", self.server.1.display()),
            format!("--peer-trusted-ca-file={}", self.ca.display()),
            "--peer-client-cert-auth".to_string(),
        ]
    }

    /// etcdctl's flags to trust the member and present `cert`.
    pub fn etcdctl_flags(&self, cert: &(PathBuf, PathBuf)) -> Vec<String> {
        vec![
            format!("--cacert={}", self.ca.display()),
            format!("--cert={}", cert.0.display()),
            format!("--key={}", cert.1.display()),
        ]
    }
}

/// A certificate authority for tests, in a temp dir, with openssl.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: (PathBuf, PathBuf),
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = self_signed_cert(dir.path(), "ca", "keel-test-ca");
        Pki { dir, ca }
    }

    /// A certificate for 127.0.0.1 signed by the authority, usable by servers and clients,
    /// with subject `CN=<cn>` (no CommonName if `cn` is empty); (certificate, key).
    pub fn leaf(&self, name: &str, cn: &str) -> (PathBuf, PathBuf) {
        self.leaf_for(name, cn, "IP:127.0.0.1")
    }

    /// As [`Pki::leaf`], valid for `sans` (openssl's `subjectAltName` syntax).
    pub fn leaf_for(&self, name: &str, cn: &str, sans: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.path();
        let (cert, key, csr, ext) = (
            d.join(format!("{name}.pem")),
            d.join(format!("{name}-key.pem")),
            d.join(format!("{name}.csr")),
            d.join(format!("{name}.ext")),
        );
        let subject = if cn.is_empty() { "/O=keel-test".to_string() } else { format!("/CN={cn}") };
        let run = |cmd: &mut Command| {
            let out = cmd.output().expect("openssl");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        };
        run(Command::new("openssl")
            .args(["req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", &subject, "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        std::fs::write(
            &ext,
            format!("subjectAltName={sans}\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n"),
        )
        .expect("extensions file");
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "1", "-set_serial", &rand::random::<u32>().to_string(), "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&self.ca.0)
            .arg("-CAkey")
            .arg(&self.ca.1)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert));
        (cert, key)
    }

    /// A certificate revocation list, signed by the authority, revoking `revoked`.
    pub fn crl(&self, revoked: &[&Path]) -> PathBuf {
        let d = self.dir.path().join("crl-db");
        std::fs::create_dir_all(&d).expect("crl dir");
        std::fs::write(d.join("index.txt"), "").expect("index");
        std::fs::write(d.join("crlnumber"), "01\n").expect("crlnumber");
        let config = d.join("ca.cnf");
        std::fs::write(
            &config,
            format!(
                "[ca]\ndefault_ca = ca_default\n[ca_default]\ndatabase = {}\ncrlnumber = {}\n\
                 default_md = sha256\ndefault_crl_days = 1\n",
                d.join("index.txt").display(),
                d.join("crlnumber").display()
            ),
        )
        .expect("openssl config");
        let openssl = |extra: &[&std::ffi::OsStr]| {
            let out = Command::new("openssl")
                .args(["ca", "-config"])
                .arg(&config)
                .arg("-keyfile")
                .arg(&self.ca.1)
                .arg("-cert")
                .arg(&self.ca.0)
                .args(extra)
                .output()
                .expect("openssl");
            assert!(out.status.success(), "openssl ca: {}", String::from_utf8_lossy(&out.stderr));
        };
        for cert in revoked {
            openssl(&["-revoke".as_ref(), cert.as_os_str()]);
        }
        let crl = d.join("crl.pem");
        openssl(&["-gencrl".as_ref(), "-out".as_ref(), crl.as_os_str()]);
        crl
    }

    /// Client TLS for a member: a server certificate, and `client` for the harness.
    pub fn client_tls(&self, client: (PathBuf, PathBuf)) -> ClientTls {
        ClientTls { ca: self.ca.0.clone(), server: self.leaf("server", "keel-test-server"), client }
    }
}

/// One member of a cluster, as a child process.
pub struct Member {
    pub flavor: Flavor,
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub initial_cluster: String,
    pub extra_args: Vec<String>,
    /// Environment variables the process gets (failpoints, for one).
    pub env: Vec<(String, String)>,
    /// A command the process is started under (`prlimit --nofile=...`, say).
    pub wrap: Vec<String>,
    /// `https` client URLs, with these files.
    pub tls: Option<ClientTls>,
    /// `https` peer URLs too (with the same files).
    pub peer_tls: bool,
    /// `https` client URLs with `--auto-tls` (a self-signed certificate, not verified).
    pub auto_tls: bool,
    /// `https` peer URLs with `--peer-auto-tls`.
    pub peer_auto_tls: bool,
    child: Option<Child>,
    log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Member {
    /// Starts a one-member cluster and waits until it serves.
    pub fn single(flavor: Flavor) -> Member {
        Self::single_with(flavor, &[])
    }

    pub fn single_with(flavor: Flavor, extra: &[&str]) -> Member {
        Self::single_configured(flavor, extra, None)
    }

    /// A one-member cluster serving `https` client URLs.
    pub fn single_tls(flavor: Flavor, extra: &[&str], tls: ClientTls) -> Member {
        Self::single_configured(flavor, extra, Some(tls))
    }

    fn single_configured(flavor: Flavor, extra: &[&str], tls: Option<ClientTls>) -> Member {
        // A free port can be taken by a parallel test between our probe and the member's
        // bind: a member that exits before serving is started again on fresh ports.
        for _ in 0..3 {
            let peer_port = free_port();
            let initial = format!("m1=http://127.0.0.1:{peer_port}");
            let mut m = Member::new(flavor, "m1", free_port(), peer_port, &initial, "new", extra);
            m.tls = tls.clone();
            m.start();
            if m.try_wait_ready() {
                return m;
            }
        }
        panic!("{flavor:?} never started on free ports");
    }

    /// Waits until the member serves (true) or its process has exited (false).
    fn try_wait_ready(&mut self) -> bool {
        let ep = self.endpoint();
        let exited = wait_for(&format!("{:?} at {ep} to serve", self.flavor), Duration::from_secs(30), || {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    return Some(true);
                }
            }
            serves(self).then_some(false)
        });
        if exited {
            eprintln!("{:?} at {ep} exited before serving:\n{}", self.flavor, self.log_tail());
            self.child = None;
        }
        !exited
    }

    /// A member that is not started yet.
    pub fn new(
        flavor: Flavor,
        name: &str,
        client_port: u16,
        peer_port: u16,
        initial_cluster: &str,
        state: &str,
        extra: &[&str],
    ) -> Member {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut extra_args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        extra_args.push(format!("--initial-cluster-state={state}"));
        Member {
            flavor,
            initial_cluster: initial_cluster.to_string(),
            name: name.to_string(),
            client_port,
            peer_port,
            data_dir: tmp.path().join("data"),
            extra_args,
            env: Vec::new(),
            wrap: Vec::new(),
            tls: None,
            peer_tls: false,
            auto_tls: false,
            peer_auto_tls: false,
            child: None,
            log: tmp.path().join("member.log"),
            _tmp: Some(tmp),
        }
    }

    pub fn endpoint(&self) -> String {
        if self.tls.is_some() || self.auto_tls {
            self.client_url()
        } else {
            format!("127.0.0.1:{}", self.client_port)
        }
    }

    pub fn client_url(&self) -> String {
        let scheme = if self.tls.is_some() || self.auto_tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// etcdctl against this member, over TLS with the harness's client certificate if it
    /// serves `https` (without verifying the member's certificate under `--auto-tls`).
    pub fn ctl(&self, args: &[&str], stdin: Option<&[u8]>) -> etcdctl::Output {
        let mut flags = self.tls.as_ref().map(|t| t.etcdctl_flags(&t.client)).unwrap_or_default();
        if self.auto_tls {
            flags.extend(["--insecure-skip-tls-verify".to_string(), "--insecure-transport=false".to_string()]);
        }
        let all: Vec<&str> = flags.iter().map(String::as_str).chain(args.iter().copied()).collect();
        etcdctl::run(&self.endpoint(), &all, stdin)
    }

    fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        if self.flavor == Flavor::Keel {
            a.push("store".into());
        }
        let scheme = if self.peer_tls || self.peer_auto_tls { "https" } else { "http" };
        let peer = format!("{scheme}://127.0.0.1:{}", self.peer_port);
        for (k, v) in [
            ("--name", self.name.clone()),
            ("--data-dir", self.data_dir.display().to_string()),
            ("--listen-client-urls", self.client_url()),
            ("--advertise-client-urls", self.client_url()),
            ("--listen-peer-urls", peer.clone()),
            ("--initial-advertise-peer-urls", peer),
            ("--initial-cluster", self.initial_cluster.clone()),
            ("--initial-cluster-token", "keel-test".into()),
        ] {
            a.push(format!("{k}={v}"));
        }
        a.extend(self.extra_args.iter().cloned());
        if self.auto_tls {
            a.push("--auto-tls".into());
        }
        if self.peer_auto_tls {
            a.push("--peer-auto-tls".into());
        }
        if let Some(t) = &self.tls {
            a.extend(t.server_flags());
            if self.peer_tls {
                a.extend(t.peer_flags());
            }
        }
        a
    }

    /// Starts the process (after a kill, on the same data dir).
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let err = log.try_clone().expect("log file");
        let mut cmd = match self.wrap.split_first() {
            Some((wrapper, args)) => {
                let mut c = Command::new(wrapper);
                c.args(args).arg(self.flavor.program());
                c
            }
            None => Command::new(self.flavor.program()),
        };
        let child = cmd
            .args(self.args())
            .env("RUST_LOG", "info,openraft=warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", self.flavor));
        self.child = Some(child);
    }

    /// Waits until the member answers a linearizable read.
    pub fn wait_ready(&self) {
        let ep = self.endpoint();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !serves(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {:?} at {ep} to serve\n{}",
                self.flavor,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, as an operator (or systemd) stops a member; waits for it to exit and
    /// returns how it did. Panics if it is still running after `grace`.
    pub fn terminate(&mut self, grace: Duration) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("a running member");
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = c.try_wait().expect("wait for the member") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("{} still running {grace:?} after SIGTERM\n{}", self.name, self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.start();
        self.wait_ready();
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn data_path(&self) -> &Path {
        &self.data_dir
    }

    /// What `etcdctl endpoint status -w json` reports for this member (its `Status`).
    pub fn status(&self) -> serde_json::Value {
        let out = self.ctl(&["endpoint", "status", "-w", "json"], None);
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("status JSON from {}: {e}: {}{}", self.name, out.stdout, out.stderr));
        v[0]["Status"].clone()
    }

    /// This member's id, as `endpoint status` reports it.
    pub fn id(&self) -> u64 {
        self.status()["header"]["member_id"].as_u64().expect("member id")
    }

    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGSTOP / SIGCONT: the process stays alive but stops answering.
    pub fn pause(&self, paused: bool) {
        if let Some(pid) = self.pid() {
            let sig = if paused { "-STOP" } else { "-CONT" };
            let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// How the process ended, if it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }
}

/// A cluster of members started together with a static `--initial-cluster`.
pub struct Cluster {
    pub members: Vec<Member>,
}

impl Cluster {
    /// The end of every member's log, for a failure message.
    pub fn log_tails(&self) -> String {
        self.members.iter().map(|m| format!("--- {}:\n{}", m.name, m.log_tail())).collect::<Vec<_>>().join("\n")
    }

    pub fn start(flavor: Flavor, n: usize, extra: &[&str]) -> Cluster {
        Self::start_with_env(flavor, n, extra, &[])
    }

    /// A cluster on `https` client and peer URLs, every member with the same files.
    pub fn start_tls(flavor: Flavor, n: usize, extra: &[&str], tls: ClientTls) -> Cluster {
        for _ in 0..3 {
            if let Some(c) = Self::try_start_with(flavor, n, extra, &[], Some(&tls)) {
                return c;
            }
        }
        panic!("a {n}-member {flavor:?} TLS cluster never started on free ports");
    }

    /// As [`Cluster::start`], every member with the environment variables `env`.
    pub fn start_with_env(flavor: Flavor, n: usize, extra: &[&str], env: &[(&str, &str)]) -> Cluster {
        // As for single members: a member that lost its free port to a parallel test exits,
        // and the whole cluster starts again on fresh ports.
        for _ in 0..3 {
            if let Some(c) = Self::try_start(flavor, n, extra, env) {
                return c;
            }
        }
        panic!("a {n}-member {flavor:?} cluster never started on free ports");
    }

    fn try_start(flavor: Flavor, n: usize, extra: &[&str], env: &[(&str, &str)]) -> Option<Cluster> {
        Self::try_start_with(flavor, n, extra, env, None)
    }

    fn try_start_with(
        flavor: Flavor,
        n: usize,
        extra: &[&str],
        env: &[(&str, &str)],
        tls: Option<&ClientTls>,
    ) -> Option<Cluster> {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("m{}={scheme}://127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<Member> = ports
            .iter()
            .enumerate()
            .map(|(i, (c, p))| Member::new(flavor, &format!("m{}", i + 1), *c, *p, &initial, "new", extra))
            .collect();
        for m in &mut members {
            m.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            m.tls = tls.cloned();
            m.peer_tls = tls.is_some();
            m.start();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for m in &mut members {
                if let Some(c) = m.child.as_mut() {
                    if let Ok(Some(_)) = c.try_wait() {
                        eprintln!("{} exited before serving:\n{}", m.name, m.log_tail());
                        return None;
                    }
                }
            }
            if members.iter().all(serves) {
                return Some(Cluster { members });
            }
            assert!(Instant::now() < deadline, "timed out waiting for the cluster:\n{}", members[0].log_tail());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn endpoints(&self) -> String {
        self.members.iter().filter(|m| m.is_running()).map(Member::endpoint).collect::<Vec<_>>().join(",")
    }

    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().filter(|m| m.is_running()).map(Member::client_url).collect()
    }

    /// The index of the member that the running members agree is the leader.
    pub fn leader(&self) -> usize {
        wait_for("an agreed leader", Duration::from_secs(30), || {
            let mut ids = Vec::new();
            let mut leader = None;
            for m in self.members.iter().filter(|m| m.is_running()) {
                let s = m.ctl(&["endpoint", "status", "-w", "json"], None);
                let v: serde_json::Value = serde_json::from_str(s.stdout.trim()).ok()?;
                let st = &v[0]["Status"];
                ids.push(st["header"]["member_id"].as_u64()?);
                let l = st["leader"].as_u64()?;
                if leader.is_some_and(|x| x != l) || l == 0 {
                    return None;
                }
                leader = Some(l);
            }
            let running: Vec<usize> = (0..self.members.len()).filter(|i| self.members[*i].is_running()).collect();
            ids.iter().position(|id| Some(*id) == leader).map(|p| running[p])
        })
    }

    /// The member id of member `i`, as `etcdctl endpoint status` reports it (hex).
    pub fn member_id(&self, i: usize) -> String {
        format!("{:x}", self.members[i].id())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An etcd-client connected to a member.
/// A client error as the differential tests compare it: gRPC code and message.
pub fn err(e: etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("ERR {:?} {}", s.code(), s.message()),
        other => format!("ERR {other}"),
    }
}

/// A response header's revision (-1 without one).
pub fn rev(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map_or(-1, |h| h.revision())
}

pub async fn client(m: &Member) -> etcd_client::Client {
    etcd_client::Client::connect([m.client_url()], None).await.expect("connect")
}

/// Writes a self-signed certificate for 127.0.0.1 with subject `CN=<cn>` into `dir` as
/// `<name>.pem` and `<name>-key.pem`, with openssl; returns (certificate, key).
pub fn self_signed_cert(dir: &Path, name: &str, cn: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", &format!("/CN={cn}")])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    (cert, key)
}
