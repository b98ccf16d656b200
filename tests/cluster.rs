//! The three-member store: replication, reads on every member, failover with no lost
//! acknowledged write, membership changes under load, snapshot catch-up, an isolated
//! leader refusing to serve, and etcdctl's cluster commands compared in shape with a real
//! etcd cluster started the same way.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::harness::etcdctl::{self, shape, Output};
use crate::harness::load::{self, writer};
use crate::harness::{client, free_port, wait_for, wait_for_or, Cluster, Flavor, Member};

fn ctl(m: &Member, args: &[&str]) -> Output {
    etcdctl::run(&m.endpoint(), args, None)
}

fn acked_count(log: &load::Log) -> usize {
    log.blocking_lock().len()
}

/// Starts `n` writers through every member and returns them once `acked` of their puts are
/// acknowledged, with the log they record into.
async fn writes_under_way(c: &Cluster, n: usize, acked: usize) -> (Vec<tokio::task::JoinHandle<()>>, load::Log) {
    let log: load::Log = Arc::new(Mutex::new(Vec::new()));
    let writers = (0..n).map(|w| tokio::spawn(writer(c.client_urls(), w, log.clone(), false, usize::MAX))).collect();
    let probe = log.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("acknowledged writes", Duration::from_secs(30), || (acked_count(&probe) >= acked).then_some(()))
    })
    .await
    .expect("wait");
    (writers, log)
}

/// Waits until `m`'s own serializable reads show every acknowledged write in `log` (a
/// restarted member catching up), for at most 30 s.
async fn catches_up(m: &Member, log: &load::Log) {
    let mut own = etcd_client::Client::connect([m.client_url()], None).await.expect("connect");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Err(e) = load::verify(&mut own, log, true).await {
        assert!(std::time::Instant::now() < deadline, "{} did not catch up: {e}", m.name);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts every (stopped) member again and checks that every write in `log` that was
/// acknowledged is there, through the cluster and in each member's own serializable reads.
async fn restarts_with_every_acknowledged_write(c: &mut Cluster, log: &load::Log) {
    tokio::task::block_in_place(|| {
        for m in &mut c.members {
            m.start();
        }
        for m in &c.members {
            m.wait_ready();
        }
    });
    let mut any = etcd_client::Client::connect(c.client_urls(), None).await.expect("connect");
    load::verify(&mut any, log, false).await.expect("every acknowledged write survived");
    for m in &c.members {
        catches_up(m, log).await;
    }
}

#[test]
fn three_members_replicate_and_serve_reads_everywhere() {
    let c = Cluster::start(Flavor::Keel, 3, &[]);
    for (i, m) in c.members.iter().enumerate() {
        let out = ctl(m, &["put", &format!("k{i}"), &format!("v{i}")]);
        assert!(out.success(), "put through member {i}: {}", out.stderr);
    }
    for m in &c.members {
        let out = ctl(m, &["get", "k", "--prefix", "--print-value-only"]);
        assert_eq!(out.stdout.lines().collect::<Vec<_>>(), ["v0", "v1", "v2"], "linearizable read on {}", m.name);
    }
    for m in &c.members {
        wait_for("a serializable read to catch up", Duration::from_secs(10), || {
            let out = ctl(m, &["get", "k2", "--consistency=s", "--print-value-only"]);
            (out.stdout.trim() == "v2").then_some(())
        });
    }
    let list = ctl(&c.members[1], &["member", "list"]);
    assert_eq!(list.stdout.lines().filter(|l| l.contains(", started, m")).count(), 3, "{}", list.stdout);
    let leaders: usize =
        c.members.iter().map(|m| ctl(m, &["endpoint", "status"]).stdout.matches(", true, false,").count()).sum();
    assert_eq!(leaders, 1, "exactly one member reports itself leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_during_writes_loses_nothing() {
    let mut c = Cluster::start(Flavor::Keel, 3, &[]);
    let (writers, log) = writes_under_way(&c, 3, 200).await;

    let leader = tokio::task::block_in_place(|| c.leader());
    c.members[leader].kill();
    let at_kill = log.lock().await.len();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while log.lock().await.len() < at_kill + 100 {
        if std::time::Instant::now() > deadline {
            panic!("writes did not resume on a new leader within 30 s\n{}", c.log_tails());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_leader = tokio::task::block_in_place(|| c.leader());
    assert_ne!(new_leader, leader);

    tokio::task::block_in_place(|| {
        c.members[leader].start();
        c.members[leader].wait_ready();
    });
    for w in writers {
        w.abort();
    }
    let mut via_new = etcd_client::Client::connect([c.members[new_leader].client_url()], None).await.expect("connect");
    load::verify(&mut via_new, &log, false).await.expect("every acknowledged write survived");
    // The restarted member catches up: its own (serializable) reads show everything.
    catches_up(&c.members[leader], &log).await;
}

/// Every member SIGKILLed at once, mid-write: each loses what its state database had not
/// flushed (it has no WAL of its own; the Raft log is its write-ahead log), and purges ran
/// behind frequent snapshots. After a restart of all three, every acknowledged write is
/// there, through the cluster and in each member's own serializable reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_every_member_at_once_loses_nothing() {
    let mut c = Cluster::start(Flavor::Keel, 3, &["--snapshot-count=50"]);
    let (writers, log) = writes_under_way(&c, 4, 600).await;
    for m in &mut c.members {
        m.kill();
    }
    for w in writers {
        w.abort();
    }
    restarts_with_every_acknowledged_write(&mut c, &log).await;
}

/// Every member stopped with SIGTERM, mid-write, as an operator stops a cluster: each exits
/// by itself and reports success (a profile-instrumented build writes its profile only
/// then: `bench/pgo-build` relies on it), and after a restart every acknowledged write is
/// there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_every_member_with_sigterm_mid_write_exits_cleanly_and_loses_nothing() {
    let mut c = Cluster::start(Flavor::Keel, 3, &["--snapshot-count=50"]);
    let (writers, log) = writes_under_way(&c, 4, 300).await;
    tokio::task::block_in_place(|| {
        for m in &mut c.members {
            let status = m.terminate(Duration::from_secs(30));
            assert!(status.success(), "{} exited with {status} after SIGTERM\n{}", m.name, m.log_tail());
        }
    });
    for w in writers {
        w.abort();
    }
    restarts_with_every_acknowledged_write(&mut c, &log).await;
}

/// A write commits once it is durable on a majority, whether or not the leader's own copy
/// is part of it: with the leader's log writes stalled (a failpoint), writes through it are
/// still acknowledged, on its followers' copies. Killed before any of those writes reached
/// its own log, the leader comes back without them, and nothing it acknowledged is lost:
/// the new leader has every write, and the old one catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_commit_on_the_followers_while_the_leaders_disk_stalls_and_survive_its_crash() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let stall = tmp.path().join("stall");
    let stall_env = stall.display().to_string();
    let mut c = Cluster::start_with_env(
        Flavor::Keel,
        3,
        &[],
        &[(keel_store::raft::log_store::STALL_LEADER_WRITES, &stall_env)],
    );
    let leader = tokio::task::block_in_place(|| c.leader());
    let log: load::Log = Arc::new(Mutex::new(Vec::new()));
    // Writes before the stall open the leader's early streams to its followers.
    writer(vec![c.members[leader].client_url()], 0, log.clone(), true, 20).await;
    assert_eq!(log.lock().await.len(), 20, "writes before the stall");

    std::fs::write(&stall, b"").expect("arm the stall");
    let write = tokio::spawn(writer(vec![c.members[leader].client_url()], 1, log.clone(), true, 50));
    tokio::time::timeout(Duration::from_secs(60), write)
        .await
        .expect("50 writes acknowledged while the leader's own log writes stall")
        .expect("writer");
    assert_eq!(log.lock().await.len(), 70, "every write acknowledged");
    assert!(
        c.members[leader].log_text().contains("failpoint: the leader's log write stalls"),
        "the leader's writes stalled: {}",
        c.members[leader].log_tail()
    );

    c.members[leader].kill();
    std::fs::remove_file(&stall).expect("disarm the stall");
    let new_leader = tokio::task::block_in_place(|| c.leader());
    assert_ne!(new_leader, leader);
    let mut via_new = etcd_client::Client::connect([c.members[new_leader].client_url()], None).await.expect("connect");
    load::verify(&mut via_new, &log, false).await.expect("every acknowledged write survived the leader's crash");

    tokio::task::block_in_place(|| {
        c.members[leader].start();
        c.members[leader].wait_ready();
    });
    catches_up(&c.members[leader], &log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_member_under_load() {
    let mut c = Cluster::start(Flavor::Keel, 3, &[]);
    let leader = tokio::task::block_in_place(|| c.leader());
    let victim = (leader + 1) % 3;
    let keeper = 3 - leader - victim;
    let log: load::Log = Arc::new(Mutex::new(Vec::new()));
    let endpoints = vec![c.members[leader].client_url(), c.members[keeper].client_url()];
    let writers: Vec<_> =
        (0..2).map(|w| tokio::spawn(writer(endpoints.clone(), w, log.clone(), false, usize::MAX))).collect();

    tokio::task::block_in_place(|| {
        let victim_id = c.member_id(victim);
        let out = ctl(&c.members[keeper], &["member", "remove", &victim_id]);
        assert!(out.success(), "member remove: {}", out.stderr);
        // A removed member stops by itself.
        let victim_ep = c.members[victim].endpoint();
        wait_for("the removed member to stop serving", Duration::from_secs(30), || {
            (!etcdctl::run(&victim_ep, &["endpoint", "health", "--command-timeout=1s"], None).success()).then_some(())
        });
        c.members[victim].kill();

        let (cp, pp) = (free_port(), free_port());
        let peer = format!("http://127.0.0.1:{pp}");
        let out = ctl(
            &c.members[leader],
            &["member", "add", "m4", &format!("--peer-urls={peer}"), "--learner", "-w", "json"],
        );
        assert!(out.success(), "member add: {}", out.stderr);
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
        let new_id = format!("{:x}", v["member"]["ID"].as_u64().expect("new member id"));
        let initial = format!(
            "{}=http://127.0.0.1:{},{}=http://127.0.0.1:{},m4={peer}",
            c.members[leader].name, c.members[leader].peer_port, c.members[keeper].name, c.members[keeper].peer_port
        );
        let mut m4 = Member::new(Flavor::Keel, "m4", cp, pp, &initial, "existing", &[]);
        m4.start();
        m4.wait_ready();
        wait_for("the learner to be promotable", Duration::from_secs(30), || {
            ctl(&c.members[leader], &["member", "promote", &new_id]).success().then_some(())
        });
        let list = ctl(&m4, &["member", "list", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(list.stdout.trim()).expect("json");
        let members = v["members"].as_array().expect("members");
        assert_eq!(members.len(), 3);
        assert!(members.iter().all(|m| m.get("isLearner").is_none()), "all voters: {}", list.stdout);
        c.members[victim] = m4;
    });
    let probe = log.clone();
    let at = log.lock().await.len();
    tokio::task::spawn_blocking(move || {
        wait_for("writes after the replacement", Duration::from_secs(30), || {
            (acked_count(&probe) > at + 50).then_some(())
        })
    })
    .await
    .expect("writes continue");
    for w in writers {
        w.abort();
    }
    let mut via_new = etcd_client::Client::connect([c.members[victim].client_url()], None).await.expect("connect");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Err(e) = load::verify(&mut via_new, &log, true).await {
        assert!(std::time::Instant::now() < deadline, "new member missing data: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_compacted_logs_catches_up_from_a_snapshot() {
    let mut c = Cluster::start(Flavor::Keel, 3, &["--snapshot-count=100"]);
    let leader = tokio::task::block_in_place(|| c.leader());
    let lag = (leader + 1) % 3;
    c.members[lag].kill();
    let mut cl = etcd_client::Client::connect([c.members[leader].client_url()], None).await.expect("connect");
    for i in 0..600 {
        cl.put(format!("snap/{i:04}"), format!("v{i}"), None).await.expect("put");
    }
    tokio::task::block_in_place(|| {
        c.members[lag].start();
        holds_keys(&c, lag, "snap/", 600);
    });
    assert!(c.members[lag].log_text().contains("snapshot installed"), "caught up without a snapshot?");
    let out = ctl(&c.members[lag], &["get", "snap/0599", "--consistency=s", "--print-value-only"]);
    assert_eq!(out.stdout.trim(), "v599");
}

/// Waits until member `i` serves `n` keys under `prefix` from its own state (serializable
/// reads); if it does not in time, fails with its last answer and the end of every member's
/// log.
fn holds_keys(c: &Cluster, i: usize, prefix: &str, n: usize) {
    let ep = c.members[i].endpoint();
    let last = std::cell::RefCell::new(String::new());
    wait_for_or(
        &format!("member {i} to hold {n} keys under {prefix}"),
        Duration::from_secs(60),
        || {
            let out =
                etcdctl::run(&ep, &["get", prefix, "--prefix", "--limit=1", "-w", "json", "--consistency=s"], None);
            let done = out.stdout.contains(&format!("\"count\":{n}"));
            *last.borrow_mut() = out.stdout;
            done.then_some(())
        },
        || format!("its last answer: {}\n{}", last.borrow(), c.log_tails()),
    );
}

/// The log is bounded in bytes as well as entries: with a snapshot count that is never
/// reached, a log grown past `--experimental-snapshot-log-bytes` is snapshotted and purged
/// anyway, so a member that missed it catches up from a snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_past_its_byte_limit_is_snapshotted_and_purged() {
    let flags = ["--snapshot-count=1000000", "--experimental-snapshot-log-bytes=65536"];
    let mut c = Cluster::start(Flavor::Keel, 3, &flags);
    let leader = tokio::task::block_in_place(|| c.leader());
    let lag = (leader + 1) % 3;
    c.members[lag].kill();
    let mut cl = etcd_client::Client::connect([c.members[leader].client_url()], None).await.expect("connect");
    // 400 entries of 1 KiB: six times the limit.
    let value = "v".repeat(1024);
    for i in 0..400 {
        cl.put(format!("big/{i:04}"), value.clone(), None).await.expect("put");
    }
    tokio::task::block_in_place(|| {
        wait_for("the leader to purge its log by size", Duration::from_secs(30), || {
            c.members[leader].log_text().contains("the log was purged by its size").then_some(())
        });
        c.members[lag].start();
        holds_keys(&c, lag, "big/", 400);
    });
    assert!(c.members[lag].log_text().contains("snapshot installed"), "the log was not purged by its size");
}

#[test]
fn an_isolated_leader_stops_serving_linearizable_requests() {
    let c = Cluster::start(Flavor::Keel, 3, &[]);
    assert!(ctl(&c.members[0], &["put", "x", "1"]).success());
    let leader = c.leader();
    let followers: Vec<&Member> = c.members.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, m)| m).collect();
    for f in &followers {
        f.pause(true);
    }
    let l = &c.members[leader];
    let read = ctl(l, &["get", "x", "--command-timeout=3s"]);
    let write = ctl(l, &["put", "x", "2", "--command-timeout=3s"]);
    let stale = ctl(l, &["get", "x", "--consistency=s", "--print-value-only"]);
    for f in &followers {
        f.pause(false);
    }
    assert!(!read.success(), "a cut-off leader served a linearizable read: {}", read.stdout);
    assert!(!write.success(), "a cut-off leader acknowledged a write");
    assert_eq!(stale.stdout.trim(), "1", "serializable reads are served locally");
    wait_for("the cluster to serve again", Duration::from_secs(30), || {
        ctl(&c.members[leader], &["get", "x", "--command-timeout=2s"]).success().then_some(())
    });
}

#[test]
fn move_leader_transfers_leadership() {
    let c = Cluster::start(Flavor::Keel, 3, &[]);
    let leader = c.leader();
    let target = (leader + 1) % 3;
    let target_id = c.member_id(target);
    let out = ctl(&c.members[leader], &["move-leader", &target_id]);
    assert!(out.success(), "move-leader: {}", out.stderr);
    assert_eq!(c.leader(), target);
    assert!(ctl(&c.members[target], &["put", "after", "move"]).success());
}

/// Leadership moved twice while writers put through every member: writes forwarded during a
/// transfer wait out its hold, each write's caller is answered once, by the member that
/// proposed it, with what applying it produced, and every acknowledged write is there, with
/// the revision its answer gave, through the last leader and in each member's own reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_leader_during_writes_through_every_member_loses_nothing() {
    let c = Cluster::start(Flavor::Keel, 3, &[]);
    let (writers, log) = writes_under_way(&c, 4, 200).await;
    let mut leader = tokio::task::block_in_place(|| c.leader());
    for _ in 0..2 {
        let target = (leader + 1) % 3;
        let out = tokio::task::block_in_place(|| ctl(&c.members[leader], &["move-leader", &c.member_id(target)]));
        assert!(out.success(), "move-leader: {}", out.stderr);
        leader = tokio::task::block_in_place(|| c.leader());
        assert_eq!(leader, target);
        let moved = log.lock().await.len();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while log.lock().await.len() < moved + 100 {
            assert!(
                std::time::Instant::now() < deadline,
                "writes did not go on under the new leader\n{}",
                c.log_tails()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for w in writers {
        w.abort();
    }
    let mut via_leader = etcd_client::Client::connect([c.members[leader].client_url()], None).await.expect("connect");
    load::verify(&mut via_leader, &log, false).await.expect("every acknowledged write, as answered");
    for m in &c.members {
        catches_up(m, &log).await;
    }
}

/// `etcdctl member|endpoint|move-leader` give the same shape of output against Keel and
/// against a real etcd cluster started the same way.
#[test]
fn etcdctl_cluster_commands_have_etcds_shape() {
    let keel = Cluster::start(Flavor::Keel, 3, &[]);
    let etcd = Cluster::start(Flavor::Etcd, 3, &[]);
    let run = |c: &Cluster, args: &[&str]| -> Output {
        let eps = c.endpoints();
        let mut full = vec![format!("--endpoints={eps}")];
        full.extend(args.iter().map(|a| a.to_string()));
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        etcdctl::run(&c.members[0].endpoint(), &full, None)
    };
    let compare = |what: &str, k: &Output, e: &Output| {
        assert_eq!(k.code, e.code, "{what}: exit codes\nkeel: {}\netcd: {}", k.stderr, e.stderr);
        let (mut ks, mut es) = (shape(&k.stdout), shape(&e.stdout));
        // Tables and health lines come in member order, which differs between clusters.
        let sort = |s: &mut String| {
            let mut lines: Vec<&str> = s.lines().collect();
            lines.sort();
            *s = lines.join("\n");
        };
        sort(&mut ks);
        sort(&mut es);
        assert_eq!(ks, es, "{what}\n--- keel ---\n{}\n--- etcd ---\n{}", k.stdout, e.stdout);
    };
    for args in [
        &["member", "list", "-w", "json"][..],
        &["member", "list", "-w", "table"],
        &["member", "list"],
        &["endpoint", "status", "--cluster", "-w", "json"],
        &["endpoint", "status", "--cluster", "-w", "table"],
        &["endpoint", "health", "--cluster"],
        &["endpoint", "health", "--cluster", "-w", "json"],
        &["endpoint", "hashkv", "--cluster", "-w", "json"],
        &["endpoint", "hashkv", "--cluster", "-w", "table"],
    ] {
        compare(&args.join(" "), &run(&keel, args), &run(&etcd, args));
    }
    // Adding, promoting (not yet in sync) and removing a learner that never starts.
    let mut new_ids = Vec::new();
    for c in [&keel, &etcd] {
        let peer = format!("--peer-urls=http://127.0.0.1:{}", free_port());
        // etcd refuses reconfiguration until its leader has been connected to a quorum for
        // five seconds ("unhealthy cluster"); retry until it accepts.
        let out = wait_for("member add to be accepted", Duration::from_secs(30), || {
            let out = run(c, &["member", "add", "m4", &peer, "--learner", "-w", "json"]);
            (!out.stderr.contains("unhealthy cluster")).then_some(out)
        });
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap_or_default();
        new_ids.push((out, format!("{:x}", v["member"]["ID"].as_u64().unwrap_or(0))));
    }
    compare("member add --learner", &new_ids[0].0, &new_ids[1].0);
    let promote: Vec<Output> =
        [&keel, &etcd].iter().zip(&new_ids).map(|(c, (_, id))| run(c, &["member", "promote", id])).collect();
    compare("member promote", &promote[0], &promote[1]);
    assert!(promote[0].stderr.contains("can only promote a learner member which is in sync with leader"));
    let list: Vec<Output> = [&keel, &etcd].iter().map(|c| run(c, &["member", "list", "-w", "table"])).collect();
    compare("member list with an unstarted learner", &list[0], &list[1]);
    let remove: Vec<Output> =
        [&keel, &etcd].iter().zip(&new_ids).map(|(c, (_, id))| run(c, &["member", "remove", id])).collect();
    compare("member remove", &remove[0], &remove[1]);
    let missing: Vec<Output> = [&keel, &etcd].iter().map(|c| run(c, &["member", "remove", "1234"])).collect();
    compare("member remove (unknown)", &missing[0], &missing[1]);

    // move-leader to a follower, sent through the leader's endpoint.
    let moved: Vec<Output> = [&keel, &etcd]
        .iter()
        .map(|c| {
            let l = c.leader();
            let target = c.member_id((l + 1) % 3);
            etcdctl::run(&c.members[l].endpoint(), &["move-leader", &target], None)
        })
        .collect();
    compare("move-leader", &moved[0], &moved[1]);
}

/// `etcdctl snapshot save` from a running member, `keel snapshot restore` into three new
/// data directories, and a new cluster that has every key and continues the revision.
#[test]
fn backup_and_restore_into_a_new_cluster() {
    let source = Member::single(Flavor::Keel);
    for i in 0..50 {
        assert!(ctl(&source, &["put", &format!("k{i:02}"), &format!("v{i}")]).success());
    }
    assert!(ctl(&source, &["del", "k00"]).success());
    let rev = {
        let out = ctl(&source, &["get", "k01", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
        v["header"]["revision"].as_i64().expect("revision")
    };
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("backup.db");
    let saved = ctl(&source, &["snapshot", "save", &file.display().to_string()]);
    assert!(saved.success(), "snapshot save: {}", saved.stderr);

    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let initial =
        ports.iter().enumerate().map(|(i, (_, p))| format!("r{i}=http://127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let mut members: Vec<Member> = ports
        .iter()
        .enumerate()
        .map(|(i, (c, p))| Member::new(Flavor::Keel, &format!("r{i}"), *c, *p, &initial, "new", &[]))
        .collect();
    for m in &mut members {
        let out = std::process::Command::new(crate::harness::keel_program())
            .args(["snapshot", "restore", &file.display().to_string(), "--data-dir", &m.data_dir.display().to_string()])
            .output()
            .expect("restore");
        assert!(out.status.success(), "restore: {}", String::from_utf8_lossy(&out.stderr));
        m.start();
    }
    for m in &members {
        m.wait_ready();
    }
    let keys = ctl(&members[1], &["get", "k", "--prefix", "--keys-only"]);
    assert_eq!(keys.stdout.lines().filter(|l| !l.is_empty()).count(), 49);
    assert_eq!(ctl(&members[2], &["get", "k49", "--print-value-only"]).stdout.trim(), "v49");
    let out = ctl(&members[0], &["put", "after", "restore", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    assert_eq!(v["header"]["revision"].as_i64(), Some(rev + 1), "the revision continues from the backup");
    let list = ctl(&members[0], &["member", "list"]);
    assert_eq!(list.stdout.lines().filter(|l| l.contains(", started, r")).count(), 3, "{}", list.stdout);
}

/// Regression: a follower that falls behind on large values is sent its backlog in
/// AppendEntries requests bounded by bytes (openraft only bounds entries). Before the fix,
/// requests over the peer server's body limit were refused (413) forever and the follower
/// never caught up; with proposal batching, concurrent big writes could wedge the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_on_large_values_catches_up() {
    let c = Cluster::start(Flavor::Keel, 3, &[]);
    let leader = tokio::task::block_in_place(|| c.leader());
    let lag = (leader + 1) % 3;
    c.members[lag].pause(true);
    let url = c.members[leader].client_url();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut cl = etcd_client::Client::connect([url], None).await.expect("connect");
                for i in 0..5 {
                    cl.put(format!("big/{w}/{i}"), vec![b'x'; 1_000_000], None).await.expect("put 1 MB");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    c.members[lag].pause(false);
    let ep = c.members[lag].endpoint();
    tokio::task::spawn_blocking(move || {
        wait_for("the lagging follower to catch up on 40 MB", Duration::from_secs(60), || {
            let out = etcdctl::run(&ep, &["get", "big/", "--prefix", "--keys-only", "--consistency=s"], None);
            (out.stdout.lines().filter(|l| !l.is_empty()).count() == 40).then_some(())
        })
    })
    .await
    .expect("caught up");
}

/// `HashKV` (`etcdctl endpoint hashkv`), which operators and consistency checks use to
/// compare members: every member that applied the same history has the same hash, at the
/// current revision and at an earlier one, across a compaction and whatever each member's
/// storage has physically compacted; a later write changes the current hash and not the
/// earlier one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_agree_on_the_history_hash() {
    let c = Cluster::start(Flavor::Keel, 3, &[]);
    let mut w = client(&c.members[c.leader()]).await;
    for i in 0..200 {
        w.put(format!("k{}", i % 37), format!("v{i}"), None).await.expect("put");
        if i % 9 == 0 {
            w.delete(format!("k{}", (i + 3) % 37), None).await.expect("delete");
        }
    }
    let mid = w.get("k0", None).await.expect("read").header().map_or(0, |h| h.revision());
    w.compact(mid / 2, Some(etcd_client::CompactionOptions::new().with_physical())).await.expect("compact");
    let last = w.put("after", "x", None).await.expect("put").header().map_or(0, |h| h.revision());
    // Each member, once it has applied everything: the hash now and at `mid`.
    let mut hashes = Vec::new();
    for m in &c.members {
        let mut mc = client(m).await;
        mc.get("after", None).await.expect("a linearizable read on the member");
        let now = mc.hash_kv(0).await.expect("hashkv");
        assert_eq!(now.header().map(|h| h.revision()), Some(last));
        assert_eq!(now.compact_version(), mid / 2);
        let then = mc.hash_kv(mid).await.expect("hashkv at mid").hash();
        hashes.push((now.hash(), then));
    }
    assert!(hashes.windows(2).all(|p| p[0] == p[1]), "members disagree: {hashes:?}");
    w.put("later", "y", None).await.expect("put");
    let mut mc = client(&c.members[0]).await;
    mc.get("later", None).await.expect("read");
    assert_ne!(mc.hash_kv(0).await.expect("hashkv").hash(), hashes[0].0, "a write changes the hash");
    assert_eq!(mc.hash_kv(mid).await.expect("hashkv").hash(), hashes[0].1, "the past does not change");
    let err = mc.hash_kv(mid / 2 - 1).await.expect_err("compacted");
    assert!(err.to_string().contains("required revision has been compacted"), "{err}");
}
