//! `keel store`'s command line: etcd's flags, `KEEL_*` environment fallbacks, and a clear
//! error with a non-zero exit for bad flags, an unusable data dir or a taken port.

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::Duration;

use etcd_client::GetOptions;

use crate::harness::{client, free_port, wait_for, Flavor, Member};

fn keel(args: &[&str]) -> Output {
    Command::new(crate::harness::keel_program()).arg("store").args(args).output().expect("run keel")
}

fn member_flags(client: u16, peer: u16, dir: &str) -> Vec<String> {
    vec![
        format!("--data-dir={dir}"),
        format!("--listen-client-urls=http://127.0.0.1:{client}"),
        format!("--advertise-client-urls=http://127.0.0.1:{client}"),
        format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-cluster=default=http://127.0.0.1:{peer}"),
    ]
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn unknown_flag_is_refused() {
    let o = keel(&["--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--no-such-flag"), "{}", stderr(&o));
}

#[test]
fn bad_values_are_refused_with_a_reason() {
    for (flag, expect) in [
        ("--initial-cluster-state=maybe", "initial-cluster-state"),
        ("--listen-client-urls=not a url", "listen-client-urls"),
        ("--initial-cluster=other=http://127.0.0.1:1", "couldn't find local name"),
        ("--auto-compaction-retention=soon", "auto-compaction-retention"),
        ("--grpc-keepalive-interval=soon", "\"soon\""),
        ("--max-concurrent-streams=-1", "max-concurrent-streams"),
        ("--cors=http://a.com", "does not have the form \"host:port\""),
        ("--discovery=https://discovery.etcd.io/3e86b59982e49066c5d813af1c2e2579cbf573de", "not supported"),
        ("--proxy=on", "not supported"),
    ] {
        let o = keel(&[flag]);
        assert!(!o.status.success(), "{flag} was accepted");
        assert!(stderr(&o).contains(expect), "{flag}: {}", stderr(&o));
    }
}

#[test]
fn unusable_data_dir_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"not a directory").expect("write");
    let dir = file.join("data");
    let args = member_flags(free_port(), free_port(), &dir.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = keel(&args);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("data directory"), "{}", stderr(&o));
}

#[test]
fn taken_port_is_refused() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let tmp = tempfile::tempdir().expect("tmp");
    let args = member_flags(port, free_port(), &tmp.path().join("d").display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = keel(&args);
    assert!(!o.status.success());
    assert!(stderr(&o).contains(&format!("cannot listen on http://127.0.0.1:{port}")), "{}", stderr(&o));
}

#[test]
fn flags_come_from_the_environment_too() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (c, p) = (free_port(), free_port());
    let mut child = Command::new(crate::harness::keel_program())
        .arg("store")
        .env("KEEL_NAME", "envy")
        .env("KEEL_DATA_DIR", tmp.path().join("d"))
        .env("KEEL_LISTEN_CLIENT_URLS", format!("http://127.0.0.1:{c}"))
        .env("KEEL_ADVERTISE_CLIENT_URLS", format!("http://127.0.0.1:{c}"))
        .env("KEEL_LISTEN_PEER_URLS", format!("http://127.0.0.1:{p}"))
        .env("KEEL_INITIAL_ADVERTISE_PEER_URLS", format!("http://127.0.0.1:{p}"))
        .env("KEEL_INITIAL_CLUSTER", format!("envy=http://127.0.0.1:{p}"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let ep = format!("127.0.0.1:{c}");
    // The client URL appears once the member has published its attributes.
    let listed = wait_for("member list with the client URL", Duration::from_secs(30), || {
        let o = crate::harness::etcdctl::run(&ep, &["member", "list"], None);
        (o.success() && o.stdout.contains(&format!("http://127.0.0.1:{c}"))).then_some(o.stdout)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(listed.contains(", envy, "), "the name came from KEEL_NAME: {listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_auto_compaction_drops_old_history() {
    let m = Member::single_with(Flavor::Keel, &["--auto-compaction-retention=1s"]);
    let mut c = client(&m).await;
    for i in 0..5 {
        c.put("k", format!("v{i}"), None).await.expect("put");
    }
    // Keep writing until the leader compacts past revision 2.
    let url = m.client_url();
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Runtime::new().expect("rt");
        rt.block_on(async {
            let mut c = etcd_client::Client::connect([url], None).await.expect("connect");
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                c.put("tick", "x", None).await.expect("put");
                let old = c.get("k", Some(GetOptions::new().with_revision(2))).await;
                if old.is_err() {
                    return;
                }
                assert!(std::time::Instant::now() < deadline, "history was never compacted");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    })
    .await
    .expect("compaction observed");
    let latest = c.get("k", None).await.expect("latest survives compaction");
    assert_eq!(latest.kvs()[0].value(), b"v4");
}

/// `--wal-dir`: the Raft log lives there, not in the data directory, and a restart reads
/// it back.
#[test]
fn the_raft_log_goes_to_wal_dir() {
    let wal = tempfile::tempdir().expect("temp dir");
    let flag = format!("--wal-dir={}", wal.path().join("wal").display());
    let mut m = Member::single_with(Flavor::Keel, &[&flag]);
    assert!(m.ctl(&["put", "k", "v"], None).success());
    let segments = std::fs::read_dir(wal.path().join("wal")).expect("the wal dir").count();
    assert!(segments > 0, "no log segments in --wal-dir");
    assert!(!m.data_path().join("member").join("wal").exists(), "a log in the data directory too");
    m.restart();
    assert_eq!(m.ctl(&["get", "k", "--print-value-only"], None).stdout, "v\n");
}

/// `--log-outputs` sends the log to a file instead of stderr; a `--log-level` etcd does
/// not know is refused. (The harness sets `RUST_LOG`, which takes precedence over the
/// level.)
#[test]
fn logs_go_where_log_outputs_says() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("keel.log");
    let outputs = format!("--log-outputs={}", file.display());
    let m = Member::single_with(Flavor::Keel, &[&outputs, "--log-level=warn"]);
    let logged = std::fs::read_to_string(&file).expect("the log file");
    assert!(logged.contains("member started"), "{logged}");
    assert!(!m.log_text().contains("member started"), "the log went to stderr too");
    let out = keel(&["--log-level=loud"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--log-level must be"), "{}", stderr(&out));
}

/// etcd's tuning flags for what Keel has not (bbolt, WAL files, Go's profiler, pre-vote)
/// start a member as they are, as the same flags start etcd; each is reported once, with
/// what Keel does instead.
#[test]
fn etcds_tuning_flags_are_accepted_and_reported() {
    let flags = [
        "--max-snapshots=10",
        "--max-wals=0",
        "--backend-batch-interval=10ms",
        "--backend-batch-limit=100",
        "--experimental-backend-bbolt-freelist-type=array",
        "--enable-pprof",
        "--pre-vote=true",
        "--strict-reconfig-check=false",
        "--initial-election-tick-advance=false",
        "--log-package-levels=etcdserver=DEBUG",
        "--experimental-compaction-batch-limit=500",
        "--proxy-dial-timeout=2000",
        "--discovery-srv-name=prod",
    ];
    let mut served = Vec::new();
    for flavor in [Flavor::Keel, Flavor::Etcd] {
        let m = Member::single_with(flavor, &flags);
        served.push(m.ctl(&["put", "k", "v"], None).stdout);
        if flavor == Flavor::Keel {
            let log = m.log_text();
            for flag in ["--max-snapshots", "--max-wals", "--backend-batch-interval", "--pre-vote", "--enable-pprof"] {
                assert!(log.contains(flag) && log.contains("has no effect in Keel"), "{flag}: {log}");
            }
        }
    }
    assert_eq!(served[0], served[1], "left Keel, right etcd");
}
