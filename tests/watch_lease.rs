//! Watches and leases through the real etcdctl, against Keel and a real etcd: the same
//! scenario on both, outputs compared after normalising ids and timings.

use crate::harness::etcdctl::{self, normalize_leases, spawn, Output};
use std::sync::Arc;

use crate::harness::{wait_for, Flavor, Member};

/// One server's transcript of the scenario.
fn watch_and_lease_scenario(m: &Member) -> String {
    let ep = m.endpoint();
    let run = |args: &[&str]| -> Output { etcdctl::run(&ep, args, None).normalized() };
    let mut log = Vec::new();
    let mut step =
        |what: &str, out: Output| log.push(format!("$ {what}\n{}\n{}\n[{}]", out.stdout, out.stderr, out.code));
    step("put a 1", run(&["put", "a", "1"]));
    step("put a 2", run(&["put", "a", "2"]));
    step("put b 1", run(&["put", "b", "1"]));
    // Watches from explicit revisions see the same events however fast they start.
    let w_hist = spawn(&ep, &["watch", "a", "--rev=1", "--prev-kv"]);
    let w_noput = spawn(&ep, &["watch", "--prefix", "", "--rev=5"]);
    let mut w_inter = spawn(&ep, &["watch", "-i"]);
    w_inter.send("watch b --rev=1\n");
    step("put a 3", run(&["put", "a", "3"]));
    step("del a", run(&["del", "a"]));
    let txn = "\nput c 1\nput d 1\n\n\n";
    step("txn", etcdctl::run(&ep, &["txn"], Some(txn.as_bytes())).normalized());
    step("put b 2", run(&["put", "b", "2"]));

    let grant = run(&["lease", "grant", "100"]);
    let lease = grant.stdout.split_whitespace().nth(1).unwrap_or_default().to_string();
    let ids = vec![lease.clone()];
    let norm = |o: Output| Output { stdout: normalize_leases(&o.stdout, &ids), ..o };
    step("lease grant 100", norm(grant.clone()));
    step("put --lease k v", run(&["put", &format!("--lease={lease}"), "k", "v"]));
    step("get k -w json", norm(run(&["get", "k", "-w", "json"])));
    step("lease timetolive --keys", norm(run(&["lease", "timetolive", &lease, "--keys"])));
    step("lease list", norm(run(&["lease", "list"])));
    step("lease keep-alive --once", norm(run(&["lease", "keep-alive", "--once", &lease])));
    step("lease revoke", norm(run(&["lease", "revoke", &lease])));
    step("get k", run(&["get", "k"]));
    step("lease timetolive (revoked)", norm(run(&["lease", "timetolive", &lease])));
    step("lease revoke (again)", norm(run(&["lease", "revoke", &lease])));
    step("lease keep-alive --once (unknown)", run(&["lease", "keep-alive", "--once", "1234"]));
    step("lease timetolive (unknown) -w json", run(&["lease", "timetolive", "1234", "-w", "json"]));
    step("lease grant (too long)", run(&["lease", "grant", "9999999999"]));
    step("put end x", run(&["put", "end", "x"]));
    // Started after the writes, this one catches up from history in one batch on both.
    let w_all = spawn(&ep, &["watch", "--prefix", "", "--rev=5", "-w", "json"]);

    log.push(format!("watch a --rev=1 --prev-kv:\n{}", w_hist.stop_after("DELETE\na\n")));
    let all = w_all.stop_after("ZW5k"); // base64 "end"
    let all = all.lines().map(|l| {
        let line = etcdctl::Output { code: 0, stdout: l.into(), stderr: String::new() }.normalized().stdout;
        normalize_leases(&line, &ids)
    });
    log.push(format!("watch --prefix '' --rev=5 -w json:\n{}", all.collect::<Vec<_>>().join("\n")));
    log.push(format!("watch --prefix '' --rev=5:\n{}", w_noput.stop_after("end\nx\n")));
    log.push(format!("watch -i (watch b --rev=1):\n{}", w_inter.stop_after("b\n2\n")));
    log.join("\n")
}

#[test]
fn watch_and_lease_commands_match_etcd() {
    let keel = watch_and_lease_scenario(&Member::single(Flavor::Keel));
    let etcd = watch_and_lease_scenario(&Member::single(Flavor::Etcd));
    assert_eq!(keel, etcd, "\n--- keel ---\n{keel}\n--- etcd ---\n{etcd}");
}

/// A key put with a lease vanishes when the lease's TTL runs out, and a watch sees the
/// DELETE, on both servers.
fn expiry_scenario(m: &Member) -> String {
    let ep = m.endpoint();
    let grant = etcdctl::run(&ep, &["lease", "grant", "2"], None);
    let lease = grant.stdout.split_whitespace().nth(1).unwrap_or_default().to_string();
    assert!(etcdctl::run(&ep, &["put", &format!("--lease={lease}"), "short", "lived"], None).success());
    let w = spawn(&ep, &["watch", "short", "--rev=2"]);
    wait_for("the lease to expire", std::time::Duration::from_secs(15), || {
        etcdctl::run(&ep, &["get", "short"], None).stdout.is_empty().then_some(())
    });
    let ttl = etcdctl::run(&ep, &["lease", "timetolive", &lease], None);
    let events = w.stop_after("DELETE");
    normalize_leases(&format!("{}\n{}\n{}", grant.stdout, events, ttl.stdout), &[lease])
}

#[test]
fn a_lease_expires_at_its_ttl_and_watchers_see_the_delete() {
    let keel = expiry_scenario(&Member::single(Flavor::Keel));
    let etcd = expiry_scenario(&Member::single(Flavor::Etcd));
    assert_eq!(keel, etcd);
}

/// Three members: leases kept alive survive the leader's death (the new leader extends
/// them); a lease nobody keeps alive still expires, within its TTL plus an election timeout
/// of the last keepalive, and not before its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_leader_failover_and_expire_when_abandoned() {
    use std::time::{Duration, Instant};
    let mut c = crate::harness::Cluster::start(Flavor::Keel, 3, &[]);
    let mut cl = etcd_client::Client::connect(c.client_urls(), None).await.expect("connect");
    let ttl = 4;
    let mut kept = Vec::new();
    for i in 0..3 {
        let id = cl.lease_grant(ttl, None).await.expect("grant").id();
        cl.put(format!("kept/{i}"), "x", Some(etcd_client::PutOptions::new().with_lease(id))).await.expect("put");
        kept.push(id);
    }
    let abandoned = cl.lease_grant(ttl, None).await.expect("grant").id();
    let abandoned_at = Instant::now();
    cl.put("abandoned", "x", Some(etcd_client::PutOptions::new().with_lease(abandoned))).await.expect("put");

    // Keep the three alive about every half second (etcd's client does it every TTL/3),
    // each through its own task so one slow answer does not delay the others, through
    // whichever member answers.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let keepers: Vec<_> = kept
        .iter()
        .map(|id| {
            let (stop, id, urls) = (stop.clone(), *id, c.client_urls());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let connect = etcd_client::Client::connect(urls.clone(), None);
                    if let Ok(Ok(mut k)) = tokio::time::timeout(Duration::from_millis(500), connect).await {
                        if let Ok((mut ka, mut stream)) = k.lease_keep_alive(id).await {
                            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                                if ka.keep_alive().await.is_err() {
                                    break;
                                }
                                match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
                                    Ok(Ok(Some(_))) => tokio::time::sleep(Duration::from_millis(500)).await,
                                    _ => break,
                                }
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .collect();
    let leader = tokio::task::block_in_place(|| c.leader());
    c.members[leader].kill();
    let survivors: Vec<String> = c.client_urls();
    let mut cl = etcd_client::Client::connect(survivors, None).await.expect("connect");
    // The new leader extends every lease as it takes over (etcd: TTL + an election timeout
    // from then); under load the election itself can take seconds, so the bound starts
    // when the survivors agree on a leader.
    let _ = tokio::task::block_in_place(|| c.leader());
    let promoted_at = Instant::now();

    // The abandoned lease's key disappears: not before its TTL, and within TTL + the
    // extension (the maximum election timeout, 2 s here) of the new leader's taking over,
    // plus the expiry check and the revoke's own round through Raft.
    let deadline = promoted_at + Duration::from_secs(ttl as u64) + Duration::from_millis(2000 + 2000);
    loop {
        let gone = cl.get("abandoned", None).await.map(|r| r.kvs().is_empty()).unwrap_or(false);
        if gone {
            break;
        }
        assert!(Instant::now() < deadline, "the abandoned lease did not expire in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(abandoned_at.elapsed() >= Duration::from_secs(ttl as u64), "a lease expired before its TTL");

    // The kept leases live on, well past two TTLs after the failover.
    let watch_until = Instant::now() + Duration::from_secs(2 * ttl as u64);
    while Instant::now() < watch_until {
        for i in 0..3 {
            let r = cl.get(format!("kept/{i}"), Some(etcd_client::GetOptions::new().with_serializable())).await;
            let present = r.map(|r| !r.kvs().is_empty()).unwrap_or(true);
            assert!(present, "kept lease {i} expired across the leader change");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for k in keepers {
        let _ = k.await;
    }
}
