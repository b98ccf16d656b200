//! Disaster recovery with `--force-new-cluster`, against etcd: a three-member cluster loses
//! two members for good; the survivor, started once with the flag, serves its data as a
//! one-member cluster with the same member and cluster IDs, takes writes, stays so after a
//! plain restart, and grows again with `member add`. The same steps on both, compared.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{free_port, wait_for, Cluster, Flavor, Member};

/// The IDs (member, cluster) a member reports.
fn ids(m: &Member) -> (u64, u64) {
    let h = &m.status()["header"];
    (h["member_id"].as_u64().expect("member id"), h["cluster_id"].as_u64().expect("cluster id"))
}

fn members(m: &Member) -> Vec<(String, bool)> {
    let out = m.ctl(&["member", "list", "-w", "json"], None);
    let v: Value = serde_json::from_str(out.stdout.trim()).expect("member list JSON");
    let mut list: Vec<(String, bool)> = v["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| (m["name"].as_str().unwrap_or("").to_string(), m["isLearner"].as_bool().unwrap_or(false)))
        .collect();
    list.sort();
    list
}

fn values(m: &Member) -> String {
    m.ctl(&["get", "--prefix", "k", "--print-value-only"], None).stdout
}

/// One server's transcript of the recovery.
fn scenario(flavor: Flavor) -> Vec<String> {
    let mut c = Cluster::start(flavor, 3, &[]);
    for i in 0..20 {
        assert!(c.members[i % 3].ctl(&["put", &format!("k{i:02}"), &format!("v{i}")], None).success());
    }
    let survivor = 2;
    // The survivor has applied the last write, so it knows it committed (an entry it had
    // not learned was committed would be dropped, by etcd as by Keel).
    wait_for("the survivor to apply the last write", Duration::from_secs(30), || {
        let got = c.members[survivor].ctl(&["get", "k19", "--print-value-only", "--consistency=s"], None);
        (got.stdout == "v19\n").then_some(())
    });
    let before = ids(&c.members[survivor]);
    let mut log = vec![values(&c.members[survivor])];
    // Two members are gone for good; the survivor alone cannot serve.
    for m in &mut c.members {
        m.kill();
    }
    let s = &mut c.members[survivor];
    s.extra_args.push("--force-new-cluster".into());
    s.start();
    s.wait_ready();
    log.push(format!("same IDs: {}", ids(s) == before));
    log.push(format!("members: {:?}", members(s)));
    log.push(values(s));
    log.push(format!("put: {:?}", s.ctl(&["put", "k99", "after"], None).stdout));
    // Started again without the flag: the same one-member cluster.
    s.extra_args.pop();
    s.restart();
    log.push(format!("after a restart, same IDs: {} members: {:?}", ids(s) == before, members(s)));
    log.push(values(s));
    // It grows again as any cluster does.
    let (cp, pp) = (free_port(), free_port());
    let peer = format!("http://127.0.0.1:{pp}");
    let added = s.ctl(&["member", "add", "m4", &format!("--peer-urls={peer}")], None);
    log.push(format!("member add: {}", added.success()));
    let initial = format!("{}=http://127.0.0.1:{},m4={peer}", s.name, s.peer_port);
    let mut m4 = Member::new(flavor, "m4", cp, pp, &initial, "existing", &[]);
    m4.start();
    m4.wait_ready();
    let s = &c.members[survivor];
    wait_for("the new member to catch up", Duration::from_secs(30), || {
        (m4.ctl(&["get", "k99", "--print-value-only", "--consistency=s"], None).stdout == "after\n").then_some(())
    });
    let copy = m4.ctl(&["get", "--prefix", "k", "--print-value-only", "--consistency=s"], None).stdout;
    log.push(format!("the new member's copy is the survivor's: {}", copy == values(s)));
    log.push(format!("members: {:?}", members(&m4)));
    log.push(format!("put through m4: {:?}", m4.ctl(&["put", "k98", "grown"], None).stdout));
    log.push(values(s));
    log
}

#[test]
fn a_survivor_of_a_lost_majority_restarts_as_a_one_member_cluster() {
    let (k, e) = (scenario(Flavor::Keel), scenario(Flavor::Etcd));
    // One deliberate difference: the data kept. etcd keeps the entries up to the commit
    // index it had saved, which can be behind what it applied (in this test it often drops
    // the last write, which the survivor had applied and the client had been told was
    // done). Keel applies its whole log, so it keeps every write the survivor had; a write
    // in it that was never committed was never acknowledged either. So Keel's values are
    // all twenty, and etcd's a prefix of them.
    let data = |t: &[String]| -> Vec<String> { t.iter().filter(|l| l.starts_with("v0\n")).cloned().collect() };
    let steps = |t: &[String]| -> Vec<String> {
        t.iter().filter(|l| !l.starts_with("v0\n") && !l.starts_with("the new member's copy")).cloned().collect()
    };
    assert_eq!(steps(&k), steps(&e), "left Keel, right etcd");
    let all: String = (0..20).map(|i| format!("v{i}\n")).collect();
    assert_eq!(data(&k)[..2], [all.clone(), all.clone()], "Keel lost a write the survivor had");
    for (kv, ev) in data(&k).iter().zip(data(&e)) {
        let etcd_kept: Vec<&str> = ev.lines().filter(|v| v.starts_with('v')).collect();
        assert!(all.lines().take(etcd_kept.len()).eq(etcd_kept.iter().copied()), "etcd's data is not a prefix: {ev}");
        assert!(kv.starts_with(&all), "{kv}");
    }
    assert!(k[1].ends_with("true"), "{k:?}");
    // And Keel's new member has the survivor's data. etcd's does not always: a write the
    // survivor applied past the commit index it had saved stays in its database but not in
    // its log, so a member added later never gets it.
    assert!(k.iter().any(|l| l == "the new member's copy is the survivor's: true"), "{k:?}");
}
