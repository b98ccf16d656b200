//! Leases against a real etcd: a seeded random mix of grants (chosen and server-chosen ids,
//! TTLs from below the minimum to above the maximum), revokes, keep-alives, time-to-live
//! queries, lease listings, and puts, deletes and transactions that attach keys to leases or
//! keep them (`ignore_lease`, `ignore_value`), run in lock step against Keel and etcd with
//! every result compared. Nothing here waits for a lease to expire: the TTLs are long, and
//! remaining TTLs are compared as "more than half left" only. Last, Keel alone: lease
//! checkpoints across a leader change.

use std::collections::HashMap;
use std::time::Duration;

use etcd_client::{
    Client, DeleteOptions, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::harness::{client, err, rev, wait_for, Cluster, Flavor, Member};

const KEYS: [&str; 4] = ["k1", "k2", "k3", "k4"];

/// Lease ids as both servers must agree on them: chosen ids as they are, ids a server chose
/// by the order they first appeared in its answers.
#[derive(Default)]
struct Ids {
    chosen_by_server: HashMap<i64, usize>,
    /// Ids of the long leases granted, to use in requests (each server's own for `auto<n>`).
    known: Vec<i64>,
}

impl Ids {
    fn name(&self, id: i64) -> String {
        match self.chosen_by_server.get(&id) {
            Some(n) => format!("auto{n}"),
            None => format!("{id:#x}"),
        }
    }

    fn learn_auto(&mut self, id: i64) {
        let n = self.chosen_by_server.len();
        self.chosen_by_server.entry(id).or_insert(n);
    }
}

/// A remaining TTL, coarsely: the clock runs between the two servers' answers.
fn remaining(ttl: i64, granted: i64) -> String {
    if ttl <= 0 || granted <= 0 {
        ttl.to_string()
    } else if ttl * 2 > granted {
        "most".into()
    } else {
        format!("{ttl}/{granted}")
    }
}

/// A lease id for a request: one of the run's (by its index among the ids this server
/// knows, so `auto` ids map to each server's own), or one nobody granted.
fn pick(rng: &mut StdRng, ids: &Ids) -> i64 {
    if ids.known.is_empty() || rng.random_bool(0.15) {
        0x7e57_0000 + rng.random_range(0..3)
    } else {
        ids.known[rng.random_range(0..ids.known.len())]
    }
}

/// One random operation, derived from its seed alone; returns a normalised description.
async fn random_op(c: &mut Client, ids: &mut Ids, seed: u64) -> String {
    let mut rng = StdRng::seed_from_u64(seed);
    let key = KEYS[rng.random_range(0..KEYS.len())];
    match rng.random_range(0..14) {
        0..=2 => {
            // Long leases stay for the rest of the run; short or odd TTLs (etcd raises them
            // to its minimum, refuses them over its maximum) are revoked at once, so that no
            // lease expires while the two servers are compared.
            let ttl = [600, 3600, 1, 2, 5, 0, -5, 9_000_000_000, 9_000_000_001][rng.random_range(0..9)];
            let keep = (600..=3600).contains(&ttl);
            let chosen = rng.random_bool(0.6).then(|| 0x1ea5_0000 + rng.random_range(0..6));
            let opts = chosen.map(|id| LeaseGrantOptions::new().with_id(id));
            match c.lease_grant(ttl, opts).await {
                Ok(r) => {
                    if chosen.is_none() {
                        ids.learn_auto(r.id());
                    }
                    let mut out =
                        format!("grant {ttl} {chosen:?}: {} ttl {} {:?}", ids.name(r.id()), r.ttl(), r.error());
                    if keep {
                        ids.known.push(r.id());
                    } else {
                        match c.lease_revoke(r.id()).await {
                            Ok(_) => out += ", revoked",
                            Err(e) => out += &format!(", revoke: {}", err(e)),
                        }
                    }
                    out
                }
                Err(e) => format!("grant {ttl} {chosen:?}: {}", err(e)),
            }
        }
        3 => {
            let id = pick(&mut rng, ids);
            match c.lease_revoke(id).await {
                Ok(r) => format!("revoke {}: {}", ids.name(id), rev(r.header())),
                Err(e) => format!("revoke {}: {}", ids.name(id), err(e)),
            }
        }
        4..=5 => {
            let id = pick(&mut rng, ids);
            let opts = rng.random_bool(0.5).then(LeaseTimeToLiveOptions::new).map(|o| o.with_keys());
            match c.lease_time_to_live(id, opts).await {
                Ok(r) => {
                    let mut keys: Vec<String> = r.keys().iter().map(|k| String::from_utf8_lossy(k).into()).collect();
                    keys.sort();
                    format!(
                        "ttl {}: {} granted {} left {} keys {keys:?}",
                        ids.name(id),
                        ids.name(r.id()),
                        r.granted_ttl(),
                        remaining(r.ttl(), r.granted_ttl())
                    )
                }
                Err(e) => format!("ttl {}: {}", ids.name(id), err(e)),
            }
        }
        6 => match c.leases().await {
            Ok(r) => {
                let mut names: Vec<String> = r.leases().iter().map(|l| ids.name(l.id())).collect();
                names.sort();
                format!("leases: {names:?}")
            }
            Err(e) => format!("leases: {}", err(e)),
        },
        7 => {
            let id = pick(&mut rng, ids);
            let answer = async {
                let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
                keeper.keep_alive().await?;
                stream.message().await
            };
            match answer.await {
                Ok(Some(r)) => format!("keep-alive {}: {} ttl {}", ids.name(id), ids.name(r.id()), r.ttl()),
                Ok(None) => format!("keep-alive {}: stream ended", ids.name(id)),
                Err(e) => format!("keep-alive {}: {}", ids.name(id), err(e)),
            }
        }
        8..=10 => {
            let mut o = PutOptions::new().with_prev_key();
            let mut d = String::new();
            match rng.random_range(0..4) {
                0 => {
                    let id = pick(&mut rng, ids);
                    o = o.with_lease(id);
                    d = format!("lease {}", ids.name(id));
                }
                1 => {
                    o = o.with_ignore_lease();
                    d = "ignore_lease".into();
                }
                2 => {
                    o = o.with_ignore_value();
                    d = "ignore_value".into();
                }
                _ => {}
            }
            let value = if d == "ignore_value" { String::new() } else { format!("v{}", rng.random_range(0..9)) };
            match c.put(key, value.clone(), Some(o)).await {
                Ok(r) => format!(
                    "put {key}={value} {d}: {} prev {:?}",
                    rev(r.header()),
                    r.prev_key().map(|p| (String::from_utf8_lossy(p.value()).into_owned(), ids.name(p.lease())))
                ),
                Err(e) => format!("put {key} {d}: {}", err(e)),
            }
        }
        11 => match c.delete(key, Some(DeleteOptions::new())).await {
            Ok(r) => format!("del {key}: {} {}", rev(r.header()), r.deleted()),
            Err(e) => format!("del {key}: {}", err(e)),
        },
        12 => {
            let id = pick(&mut rng, ids);
            let other = KEYS[rng.random_range(0..KEYS.len())];
            let mut ops = vec![TxnOp::put(key, "t", Some(PutOptions::new().with_lease(id)))];
            if other != key {
                ops.push(TxnOp::put(other, "t", Some(PutOptions::new().with_ignore_lease())));
            }
            match c.txn(Txn::new().and_then(ops)).await {
                Ok(r) => {
                    let n = r.op_responses().iter().filter(|o| matches!(o, TxnOpResponse::Put(_))).count();
                    format!("txn put {key} lease {} + {other}: {} {n}", ids.name(id), rev(r.header()))
                }
                Err(e) => format!("txn put {key} lease {} + {other}: {}", ids.name(id), err(e)),
            }
        }
        _ => match c.get("k", Some(GetOptions::new().with_prefix())).await {
            Ok(r) => {
                let kvs: Vec<String> = r
                    .kvs()
                    .iter()
                    .map(|kv| {
                        format!(
                            "{}={}@m{}v{}:{}",
                            String::from_utf8_lossy(kv.key()),
                            String::from_utf8_lossy(kv.value()),
                            kv.mod_revision(),
                            kv.version(),
                            ids.name(kv.lease())
                        )
                    })
                    .collect();
                format!("get: {} {kvs:?}", rev(r.header()))
            }
            Err(e) => format!("get: {}", err(e)),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_lease_operations_match_etcd() {
    let keel = Member::single(Flavor::Keel);
    let etcd = Member::single(Flavor::Etcd);
    let (mut k, mut e) = (client(&keel).await, client(&etcd).await);
    let (mut k_ids, mut e_ids) = (Ids::default(), Ids::default());
    // Another base explores another mix: KEEL_LEASE_DIFF_SEED=n.
    let base = std::env::var("KEEL_LEASE_DIFF_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x1ea5_e000u64);
    let mut log = Vec::new();
    for i in 0..300u64 {
        let a = random_op(&mut k, &mut k_ids, base + i).await;
        let b = random_op(&mut e, &mut e_ids, base + i).await;
        log.push(b.clone());
        assert_eq!(a, b, "operation {i} differs (left Keel, right etcd); before it:\n{}", log.join("\n"));
    }
    if std::env::var_os("KEEL_DIFF_SHOW").is_some() {
        eprintln!("{}", log.join("\n"));
    }
    assert!(e_ids.known.len() >= 4, "too few leases granted to mean much: {}", e_ids.known.len());
}

/// Seconds left on `lease`, as the leader reports them (`etcdctl lease timetolive`).
fn ttl_left(c: &Cluster, lease: &str) -> i64 {
    let out = c.members[c.leader()].ctl(&["lease", "timetolive", lease], None);
    let secs = out.stdout.split("remaining(").nth(1).and_then(|r| r.split('s').next()).and_then(|s| s.parse().ok());
    secs.unwrap_or_else(|| panic!("timetolive: {out:?}"))
}

/// A new leader gives every lease its full TTL again (etcd's and Keel's default), unless the
/// leases' time left is checkpointed (`--experimental-enable-lease-checkpoint`): then it
/// counts on from the last checkpoint, and leader changes cannot keep a lease alive.
#[test]
fn leader_changes_count_on_from_a_lease_checkpoint() {
    let mut seen = Vec::new();
    for (flags, down_to) in [
        (vec!["--experimental-enable-lease-checkpoint", "--experimental-lease-checkpoint-interval=1s"], 20),
        (vec![], 27),
    ] {
        let mut c = Cluster::start(Flavor::Keel, 3, &flags);
        let leader = c.leader();
        let out = c.members[leader].ctl(&["lease", "grant", "30"], None);
        let lease = out.stdout.split_whitespace().nth(1).unwrap_or_else(|| panic!("grant: {out:?}")).to_string();
        // Let the lease run down: with checkpoints every second, several have been written by
        // the time 10 s have gone, the last saying at most 21.
        let ran_down = || (ttl_left(&c, &lease) <= down_to).then_some(());
        wait_for("the lease to run down", Duration::from_secs(30), ran_down);
        let target = (leader + 1) % 3;
        let out = c.members[leader].ctl(&["move-leader", &c.member_id(target)], None);
        assert!(out.success(), "move-leader: {out:?}");
        wait_for("the new leader", Duration::from_secs(10), || (c.leader() == target).then_some(()));
        let moved = ttl_left(&c, &lease);
        // The whole cluster stopped at once and started again: the checkpoint is kept with
        // the lease.
        for m in &mut c.members {
            m.kill();
        }
        for m in &mut c.members {
            m.start();
        }
        seen.push((flags.is_empty(), moved, ttl_left(&c, &lease)));
    }
    // A new leader adds an election timeout to what it counts from (a second or two).
    let (_, moved, restarted) = seen[0];
    assert!(moved <= 24, "with checkpoints, the new leader counts on from at most 21 s: {seen:?}");
    assert!(restarted <= 24, "and so does the leader after a restart of every member: {seen:?}");
    let (_, moved, restarted) = seen[1];
    assert!(moved >= 30 && restarted >= 30, "without, the lease gets its full 30 s again: {seen:?}");
}
