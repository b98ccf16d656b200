//! Corruption checks and the CORRUPT alarm. A failpoint makes one Keel member store a
//! different value than its peers (as a disk flipping bits would); the leader's periodic
//! check must raise a CORRUPT alarm for it, which stops writes cluster-wide, and the member
//! must refuse to start with the start-up check. etcd cannot be corrupted from outside, so
//! the alarm's effects are compared with etcd's by raising it through the API.

use std::time::Duration;

use serde_json::json;

use crate::harness::etcdctl::Output;
use crate::harness::{wait_for, Cluster, Flavor, Member};

#[test]
fn the_leader_finds_a_corrupt_follower_and_writes_stop() {
    let mut c = Cluster::start(Flavor::Keel, 3, &["--experimental-corrupt-check-time=300ms"]);
    let leader = c.leader();
    let bad = (leader + 1) % 3;
    c.members[bad].env.push(("KEEL_FAILPOINT_CORRUPT_APPLY".into(), "flipped".into()));
    c.members[bad].restart();
    let bad_id = c.members[bad].id();
    assert!(c.members[leader].ctl(&["put", "flipped", "v"], None).success());
    let expected = format!("memberID:{bad_id} alarm:CORRUPT \n");
    wait_for("the CORRUPT alarm", Duration::from_secs(30), || {
        (c.members[leader].ctl(&["alarm", "list"], None).stdout == expected).then_some(())
    });
    for m in &c.members {
        let out = m.ctl(&["put", "k", "v"], None);
        assert!(out.stderr.contains("etcdserver: corrupt cluster"), "{}: {}{}", m.name, out.stdout, out.stderr);
        let got = m.ctl(&["get", "flipped", "--print-value-only", "--consistency=s"], None);
        assert!(got.success(), "{}: reads go on: {}", m.name, got.stderr);
    }
    // The same member, started with the start-up check, refuses to start.
    let m = &mut c.members[bad];
    m.kill();
    m.extra_args.push("--experimental-initial-corrupt-check".into());
    m.start();
    let log_path = m.log_path();
    let status = crate::harness::wait_for_or(
        "the corrupt member to exit",
        Duration::from_secs(30),
        || m.exited(),
        || {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().filter(|l| !l.contains("openraft")).collect();
            lines[lines.len().saturating_sub(25)..].join("\n")
        },
    );
    assert!(!status.success(), "{}", m.log_tail());
    assert!(m.log_text().contains("found data inconsistency with peers"), "{}", m.log_tail());
    // A healthy member passes the same check and serves.
    let good = (leader + 2) % 3;
    c.members[good].extra_args.push("--experimental-initial-corrupt-check".into());
    c.members[good].restart();
    assert!(c.members[good].log_text().contains("initial corruption check passed"), "{}", c.members[good].log_tail());
}

/// Raises a CORRUPT alarm for the member itself through the JSON gateway (etcdctl has no
/// command for it); returns the answer with the id masked.
async fn raise_corrupt(m: &Member, id: u64) -> String {
    let body = json!({"action": "ACTIVATE", "memberID": id.to_string(), "alarm": "CORRUPT"});
    let resp = reqwest::Client::new()
        .post(format!("{}/v3/maintenance/alarm", m.client_url()))
        .body(body.to_string())
        .send()
        .await
        .expect("gateway");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    format!("{status} {}", text.replace(&id.to_string(), "ID"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_alarm_refuses_what_etcds_refuses() {
    let keel = Member::single(Flavor::Keel);
    let etcd = Member::single(Flavor::Etcd);
    let mut answers = Vec::new();
    for m in [&keel, &etcd] {
        let id = m.id();
        assert!(m.ctl(&["put", "a", "1"], None).success());
        let mut log = vec![raise_corrupt(m, id).await];
        let writes = b"value(\"a\") = \"1\"\n\nput a 2\n\n\n".as_slice();
        let reads = b"value(\"a\") = \"1\"\n\nget a\n\n\n".as_slice();
        let steps: [(&[&str], Option<&[u8]>); 12] = [
            (&["alarm", "list"], None),
            (&["put", "x", "y"], None),
            (&["get", "a", "--print-value-only"], None),
            (&["del", "a"], None),
            (&["txn"], Some(writes)),
            (&["txn"], Some(reads)),
            (&["lease", "grant", "60"], None),
            (&["lease", "revoke", "1234"], None),
            (&["compaction", "1"], None),
            (&["alarm", "disarm"], None),
            (&["alarm", "list"], None),
            (&["put", "x", "y"], None),
        ];
        for (args, stdin) in steps {
            let out = m.ctl(args, stdin).normalized();
            let mask = |s: &str| s.replace(&id.to_string(), "ID");
            let out = Output { code: out.code, stdout: mask(&out.stdout), stderr: mask(&out.stderr) };
            log.push(format!("{args:?}: {out:?}"));
        }
        answers.push(log);
    }
    assert_eq!(answers[0], answers[1], "left Keel, right etcd");
    assert!(answers[0][2].contains("corrupt cluster"), "{:?}", answers[0]);
}
