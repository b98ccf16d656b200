//! The space quota (`--quota-backend-bytes`) and the NOSPACE alarm, against etcd: the
//! same etcdctl steps from the write that fills the database to the alarm cleared after
//! the space is freed, outputs compared. The two servers' databases grow differently, so
//! each is filled until it refuses, and only what follows is compared.

use crate::harness::etcdctl::Output;
use crate::harness::{Cluster, Flavor, Member};

const QUOTA: &str = "--quota-backend-bytes=1000000";

/// The member's id, decimal, as `alarm list` prints it.
fn member_id(m: &Member) -> String {
    m.id().to_string()
}

/// An etcdctl step's output, with what differs between the two servers replaced: the
/// member's id and endpoint.
fn step(m: &Member, id: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let out = m.ctl(args, stdin).normalized();
    let clean = |s: &str| s.replace(id, "ID").replace(&m.endpoint(), "ENDPOINT");
    Output { code: out.code, stdout: clean(&out.stdout), stderr: clean(&out.stderr) }
}

/// The alarms `endpoint status` reports.
fn status_errors(m: &Member, id: &str) -> String {
    m.status()["errors"].to_string().replace(id, "ID")
}

/// Puts 100 KB values until the member refuses one; returns the refusal.
fn fill(m: &Member, id: &str) -> Output {
    let value = "x".repeat(100_000);
    for i in 1..=60 {
        let out = step(m, id, &["put", &format!("k{i}")], Some(value.as_bytes()));
        if !out.success() {
            return out;
        }
    }
    panic!("{:?} took 6 MB under a 1 MB quota", m.flavor);
}

/// What one server answers, step by step, from the refused write to the alarm cleared.
fn scenario(m: &mut Member) -> Vec<(String, Output)> {
    let id = member_id(m);
    let mut log = vec![("the write over the quota".to_string(), fill(m, &id))];
    let mut run = |m: &Member, args: &[&str], stdin: Option<&[u8]>| {
        log.push((format!("{args:?}"), step(m, &id, args, stdin)));
    };
    let read_only = b"value(\"k2\") = \"z\"\n\nget k2\n\n\n".as_slice();
    let writes = b"value(\"k2\") = \"z\"\n\n\nput k2 z\n\n".as_slice();
    run(m, &["alarm", "list"], None);
    run(m, &["alarm", "list", "-w", "json"], None);
    // Every write that adds is refused; reads, read-only transactions and deletes are not.
    run(m, &["put", "x", "y"], None);
    run(m, &["txn"], Some(writes));
    run(m, &["txn"], Some(read_only));
    run(m, &["lease", "grant", "100"], None);
    run(m, &["get", "k1", "--keys-only"], None);
    run(m, &["del", "k1"], None);
    // The alarm is part of the replicated state: it outlives a restart.
    m.restart();
    run(m, &["alarm", "list"], None);
    run(m, &["put", "x", "y"], None);
    log.push(("status errors".into(), Output { code: 0, stdout: status_errors(m, &id), stderr: String::new() }));
    // Freeing the space does not clear the alarm; disarming does.
    let freed = m.ctl(&["del", "--prefix", "k"], None);
    assert!(freed.success(), "{:?}: {}", m.flavor, freed.stderr);
    let got = m.ctl(&["get", "x", "-w", "json"], None);
    let rev = serde_json::from_str::<serde_json::Value>(got.stdout.trim()).expect("get JSON")["header"]["revision"]
        .as_i64()
        .expect("revision");
    let compacted = m.ctl(&["compaction", &rev.to_string()], None);
    assert!(compacted.success(), "{:?}: {}", m.flavor, compacted.stderr);
    let mut run = |m: &Member, args: &[&str], stdin: Option<&[u8]>| {
        log.push((format!("{args:?}"), step(m, &id, args, stdin)));
    };
    run(m, &["defrag"], None);
    run(m, &["put", "x", "y"], None);
    run(m, &["alarm", "disarm"], None);
    run(m, &["alarm", "list"], None);
    run(m, &["put", "x", "y"], None);
    run(m, &["lease", "grant", "100"], None);
    log.push(("status errors".into(), Output { code: 0, stdout: status_errors(m, &id), stderr: String::new() }));
    log
}

#[test]
fn a_full_database_refuses_writes_until_space_is_freed_and_the_alarm_disarmed() {
    let mut keel = Member::single_with(Flavor::Keel, &[QUOTA]);
    let mut etcd = Member::single_with(Flavor::Etcd, &[QUOTA]);
    let (k, e) = (scenario(&mut keel), scenario(&mut etcd));
    assert_eq!(k.len(), e.len());
    for ((what, k), (_, e)) in k.iter().zip(&e) {
        // Lease ids are random.
        let lease = |o: &Output| o.stdout.split_whitespace().next().map(str::to_string);
        if k.success() && what.contains("lease") {
            assert_eq!((k.code, lease(k)), (e.code, lease(e)), "{what}");
            continue;
        }
        assert_eq!(k, e, "{what}\n--- keel ---\n{}\n{}\n--- etcd ---\n{}\n{}", k.stdout, k.stderr, e.stdout, e.stderr);
    }
}

/// On three members, the alarm one member raises caps writes through every member, and
/// clearing it through another lifts it everywhere.
#[test]
fn one_members_alarm_caps_the_whole_cluster() {
    let c = Cluster::start(Flavor::Keel, 3, &[QUOTA]);
    let id = member_id(&c.members[1]);
    let refused = fill(&c.members[1], &id);
    assert!(refused.stderr.contains("database space exceeded"), "{}", refused.stderr);
    for m in &c.members {
        let out = m.ctl(&["put", "x", "y"], None);
        assert!(out.stderr.contains("database space exceeded"), "{}: {}{}", m.name, out.stdout, out.stderr);
        // The others' databases are as full: a write through one raises its alarm too.
        let list = m.ctl(&["alarm", "list"], None);
        assert!(list.stdout.contains(&format!("memberID:{id} alarm:NOSPACE \n")), "{}: {}", m.name, list.stdout);
    }
    // Space freed on every member (each checks its own database), then the alarm cleared
    // through another member.
    assert!(c.members[0].ctl(&["del", "--prefix", "k"], None).success());
    let got = c.members[0].ctl(&["get", "x", "-w", "json"], None);
    let rev = serde_json::from_str::<serde_json::Value>(got.stdout.trim()).expect("get JSON")["header"]["revision"]
        .as_i64()
        .expect("revision");
    assert!(c.members[0].ctl(&["compaction", &rev.to_string()], None).success());
    for m in &c.members {
        assert!(m.ctl(&["defrag"], None).success());
    }
    assert!(c.members[2].ctl(&["alarm", "disarm"], None).success());
    for m in &c.members {
        assert_eq!(m.ctl(&["alarm", "list"], None).stdout, "", "{}", m.name);
        let out = m.ctl(&["put", "x", "y"], None);
        assert!(out.success(), "{}: {}", m.name, out.stderr);
    }
}
