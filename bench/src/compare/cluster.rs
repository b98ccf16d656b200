//! Three-member clusters of either server, started with identical flags on loopback.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Keel,
    Etcd,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Keel => "Keel",
            Flavor::Etcd => "etcd",
        }
    }
}

pub struct Cluster {
    pub flavor: Flavor,
    pub endpoints: Vec<String>,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The flags both servers get: etcd's own member flags, identical except the program.
fn member_args(name: &str, dir: &Path, client: u16, peer: u16, initial: &str) -> Vec<String> {
    vec![
        format!("--name={name}"),
        format!("--data-dir={}", dir.display()),
        format!("--listen-client-urls=http://127.0.0.1:{client}"),
        format!("--advertise-client-urls=http://127.0.0.1:{client}"),
        format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-cluster={initial}"),
        "--initial-cluster-state=new".into(),
        "--initial-cluster-token=bench".into(),
        "--heartbeat-interval=100".into(),
        "--election-timeout=1000".into(),
        "--snapshot-count=10000".into(),
        "--log-level=error".into(),
    ]
}

impl Cluster {
    pub async fn start(flavor: Flavor, program: &Path, base: &Path) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new().prefix(flavor.name()).tempdir_in(base)?;
        let ports: Vec<(u16, u16)> =
            (0..3).map(|_| Ok::<_, anyhow::Error>((free_port()?, free_port()?))).collect::<Result<_, _>>()?;
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut children = Vec::new();
        for (i, (c, p)) in ports.iter().enumerate() {
            let data = dir.path().join(format!("m{i}"));
            let log = std::fs::File::create(dir.path().join(format!("m{i}.log")))?;
            let mut cmd = Command::new(program);
            if flavor == Flavor::Keel {
                cmd.arg("store").env("RUST_LOG", "warn");
            }
            cmd.args(member_args(&format!("m{i}"), &data, *c, *p, &initial));
            children.push(cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn()?);
        }
        let endpoints: Vec<String> = ports.iter().map(|(c, _)| format!("127.0.0.1:{c}")).collect();
        let cluster = Cluster { flavor, endpoints, children, _dir: dir };
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Whether the member at `endpoints[i]` is the leader now; `None` if it cannot say.
    pub async fn leads(&self, i: usize) -> Option<bool> {
        let mut c = etcd_client::Client::connect([format!("http://{}", self.endpoints.get(i)?)], None).await.ok()?;
        let status = c.status().await.ok()?;
        let me = status.header()?.member_id();
        Some(status.leader() == me)
    }

    /// Every member answers a linearizable read and agrees on a leader.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.ready().await.unwrap_or(false) {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("{} cluster did not become ready", self.flavor.name());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn ready(&self) -> anyhow::Result<bool> {
        let mut leaders = Vec::new();
        for e in &self.endpoints {
            let mut c = etcd_client::Client::connect([format!("http://{e}")], None).await?;
            c.get("ready", None).await?;
            leaders.push(c.status().await?.leader());
        }
        Ok(leaders.iter().all(|l| *l != 0 && *l == leaders[0]))
    }

    /// Stops every member with SIGTERM, as an operator would, and waits for each to exit
    /// (a profile-instrumented build writes its profile on the way out); kills any member
    /// still running after `grace`. Fails if a member did not exit cleanly by itself.
    pub fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        for c in &self.children {
            let pid = i32::try_from(c.id()).ok().and_then(rustix::process::Pid::from_raw);
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        let deadline = Instant::now() + grace;
        let mut unclean = Vec::new();
        for (i, c) in self.children.iter_mut().enumerate() {
            loop {
                match c.try_wait()? {
                    Some(status) if status.success() => break,
                    Some(status) => {
                        unclean.push(format!("m{i} exited with {status}"));
                        break;
                    }
                    None if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        unclean.push(format!("m{i} did not stop within {} s and was killed", grace.as_secs()));
                        break;
                    }
                    None => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        // Every child has been waited for: nothing left for `Drop` to kill.
        self.children.clear();
        if unclean.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("{}", unclean.join("; "))
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
