//! Differential tests: the same etcdctl (v3.4) script against `keel store` and against a
//! real etcd started with the same flags; outputs must match after normalising cluster and
//! member ids and raft terms.

use crate::harness::etcdctl::{self, txn, Output};
use crate::harness::{Flavor, Member};

struct Step {
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
}

fn s(args: &[&str]) -> Step {
    Step { args: args.iter().map(|a| a.to_string()).collect(), stdin: None }
}

fn with_stdin(args: &[&str], input: &str) -> Step {
    Step { args: args.iter().map(|a| a.to_string()).collect(), stdin: Some(input.as_bytes().to_vec()) }
}

fn run_both(keel: &Member, etcd: &Member, step: &Step) -> (Output, Output) {
    let args: Vec<&str> = step.args.iter().map(String::as_str).collect();
    let a = etcdctl::run(&keel.endpoint(), &args, step.stdin.as_deref()).normalized();
    let b = etcdctl::run(&etcd.endpoint(), &args, step.stdin.as_deref()).normalized();
    (a, b)
}

fn differential(name: &str, steps: &[Step]) {
    let keel = Member::single(Flavor::Keel);
    let etcd = Member::single(Flavor::Etcd);
    for (i, step) in steps.iter().enumerate() {
        let (k, e) = run_both(&keel, &etcd, step);
        assert!(
            !e.stderr.contains("unknown flag") && !e.stdout.starts_with("NAME:"),
            "{name} step {i} is not a valid etcdctl 3.4 command: {:?}\n{}",
            step.args,
            e.stderr
        );
        assert_eq!(
            k, e,
            "{name} step {i}: etcdctl {:?}\n--- keel ---\n{}\n{}\n--- etcd ---\n{}\n{}",
            step.args, k.stdout, k.stderr, e.stdout, e.stderr
        );
    }
}

#[test]
fn put_and_get() {
    let mut steps = vec![
        s(&["put", "a", "1"]),
        s(&["put", "b", "2"]),
        s(&["put", "c", "3"]),
        s(&["put", "a", "11"]),
        s(&["put", "d", "4"]),
        s(&["put", "e/1", "x"]),
        s(&["put", "e/2", "y"]),
        s(&["put", "e/3", "z"]),
        s(&["put", "e/2", "yy"]),
        s(&["put", "-w", "json", "f", "6"]),
    ];
    for g in [
        &["get", "a"][..],
        &["get", "a", "-w", "json"],
        &["get", "a", "-w", "fields"],
        &["get", "a", "--print-value-only"],
        &["get", "e", "--prefix"],
        &["get", "e", "--prefix", "-w", "json"],
        &["get", "e", "--prefix", "--keys-only"],
        &["get", "e", "--prefix", "--keys-only", "-w", "json"],
        &["get", "e", "--prefix", "--limit", "1", "-w", "json"],
        &["get", "a", "c"],
        &["get", "a", "c", "-w", "json"],
        &["get", "b", "--from-key"],
        &["get", "a", "--from-key", "--limit", "2", "-w", "json"],
        &["get", "", "--prefix", "--limit", "3"],
        &["get", "e/", "--prefix", "--limit", "1", "-w", "json"],
        &["get", "missing"],
        &["get", "missing", "-w", "json"],
        &["get", "a", "--rev", "2"],
        &["get", "a", "--rev", "5", "-w", "json"],
        &["get", "", "--prefix", "--rev", "7", "-w", "json"],
        &["get", "a", "--consistency", "s", "-w", "json"],
    ] {
        steps.push(s(g));
    }
    for target in ["KEY", "VERSION", "CREATE", "MODIFY", "VALUE"] {
        for order in ["ASCEND", "DESCEND"] {
            steps.push(s(&["get", "", "--prefix", "--sort-by", target, "--order", order, "-w", "json"]));
            steps.push(s(&["get", "", "--prefix", "--sort-by", target, "--order", order, "--limit", "2"]));
        }
        steps.push(s(&["get", "", "--prefix", "--sort-by", target, "--keys-only"]));
    }
    differential("put_and_get", &steps);
}

#[test]
fn delete() {
    let steps = vec![
        s(&["put", "a", "1"]),
        s(&["put", "b", "2"]),
        s(&["put", "c", "3"]),
        s(&["put", "d/1", "x"]),
        s(&["put", "d/2", "y"]),
        s(&["put", "e", "5"]),
        s(&["put", "f", "6"]),
        s(&["del", "a"]),
        s(&["del", "a"]),
        s(&["del", "a", "-w", "json"]),
        s(&["del", "b", "d", "-w", "json"]),
        s(&["del", "d", "--prefix", "--prev-kv"]),
        s(&["get", "", "--prefix"]),
        s(&["del", "e", "--prev-kv", "-w", "json"]),
        s(&["put", "e", "again"]),
        s(&["get", "e", "-w", "json"]),
        s(&["del", "e", "--from-key", "-w", "json"]),
        s(&["get", "", "--prefix", "-w", "json"]),
        s(&["get", "", "--prefix", "--rev", "8", "-w", "json"]),
    ];
    differential("delete", &steps);
}

#[test]
fn transactions() {
    let mut steps = vec![s(&["put", "k1", "v1"]), s(&["put", "k2", "v2"]), s(&["put", "k2", "v2b"])];
    let cases: Vec<(Vec<&str>, Vec<&str>, Vec<&str>)> = vec![
        (vec![r#"value("k1") = "v1""#], vec!["put k3 v3", "get k1"], vec!["put k4 v4"]),
        (vec![r#"value("k1") = "nope""#], vec!["put k3 v3"], vec!["put k4 v4", "get k4"]),
        (vec![r#"version("k2") = "2""#, r#"create("k1") = "2""#], vec!["del k3", "get k", "--prefix"], vec![]),
        (vec![r#"mod("k1") > "100""#], vec!["put x 1"], vec!["get k1", "get k2"]),
        (vec![r#"mod("k2") < "100""#, r#"value("k1") > "a""#], vec!["put k1 new", "get k1"], vec![]),
        (vec![r#"version("nokey") = "0""#, r#"create("nokey") = "0""#], vec!["put nokey first"], vec![]),
        (vec![r#"value("absent") = """#], vec!["put y 1"], vec!["put z 1"]),
        (vec![r#"lease("k1") = "0""#], vec!["del k1 --prev-kv"], vec![]),
        (vec![r#"version("k2") != "9""#], vec!["put k5 a", "put k6 b", "del k5"], vec![]),
        (vec![], vec!["get k2", "get k6"], vec![]),
    ];
    for (c, ok, fail) in &cases {
        steps.push(with_stdin(&["txn"], &txn(c, ok, fail)));
        steps.push(with_stdin(&["txn", "-w", "json"], &txn(c, ok, fail)));
        steps.push(s(&["get", "", "--prefix", "-w", "json"]));
    }
    // Two writes to one key in a branch are refused.
    steps.push(with_stdin(&["txn"], &txn(&[], &["put dup 1", "put dup 2"], &[])));
    differential("transactions", &steps);
}

#[test]
fn compaction_and_revisions() {
    let mut steps = Vec::new();
    for v in 1..=6 {
        steps.push(s(&["put", "a", &v.to_string()]));
    }
    steps.push(s(&["del", "a"]));
    steps.push(s(&["put", "b", "x"]));
    for step in [
        &["compact", "4"][..],
        &["get", "a", "--rev", "3"],
        &["get", "a", "--rev", "4", "-w", "json"],
        &["get", "a", "--rev", "5"],
        &["get", "a", "--rev", "8"],
        &["get", "a", "--rev", "100"],
        &["get", "", "--prefix", "--rev", "4", "-w", "json"],
        &["compact", "4"],
        &["compact", "2"],
        &["compact", "100"],
        &["compact", "8", "--physical"],
        &["get", "", "--prefix", "-w", "json"],
        &["get", "a", "--rev", "7"],
        &["get", "b", "--rev", "9", "-w", "json"],
        &["put", "a", "again"],
        &["get", "a", "-w", "json"],
    ] {
        steps.push(s(step));
    }
    differential("compaction_and_revisions", &steps);
}

#[test]
fn put_options_and_errors() {
    let steps = vec![
        s(&["put", "a", "1"]),
        s(&["put", "a", "2", "--prev-kv"]),
        s(&["put", "a", "3", "--prev-kv", "-w", "json"]),
        s(&["put", "a", "--ignore-value"]),
        s(&["get", "a", "-w", "json"]),
        s(&["put", "b", "--ignore-value"]),
        s(&["put", "b", "--ignore-lease"]),
        s(&["put", "a", "4", "--lease", "1234"]),
        s(&["put", "a", "5", "--ignore-lease"]),
        s(&["get", "a", "-w", "json"]),
        s(&["put", "", "empty"]),
        s(&["get", ""]),
        s(&["del", ""]),
    ];
    differential("put_options_and_errors", &steps);
}

#[test]
fn large_values_through_stdin() {
    let big = "v".repeat(1_400_000);
    let too_big = "v".repeat(1_700_000);
    let steps = vec![
        with_stdin(&["put", "big"], &big),
        s(&["get", "big", "--keys-only", "-w", "json"]),
        with_stdin(&["put", "too-big"], &too_big),
        s(&["get", "too-big", "--keys-only", "-w", "json"]),
    ];
    differential("large_values", &steps);
}

/// `/metrics` under etcd's names, which `etcdctl check datascale` reads (the member's
/// resident memory before and after its 10,000 puts): the check passes on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_check_datascale() {
    let keel = Member::single(Flavor::Keel);
    let etcd = Member::single(Flavor::Etcd);
    let names = [
        "etcd_server_has_leader 1",
        "etcd_server_is_leader 1",
        "etcd_server_leader_changes_seen_total 1",
        "process_resident_memory_bytes",
        "etcd_mvcc_db_total_size_in_bytes",
        "etcd_debugging_auth_revision 1",
        "etcd_server_id{server_id=",
        "etcd_cluster_version{cluster_version=",
        "etcd_server_proposals_pending 0",
        "etcd_server_proposals_failed_total 0",
        "etcd_server_slow_apply_total",
        "etcd_debugging_mvcc_current_revision 1",
        "etcd_debugging_mvcc_compact_revision -1",
        "etcd_disk_wal_write_bytes_total",
    ];
    for m in [&keel, &etcd] {
        let text =
            reqwest::get(format!("{}/metrics", m.client_url())).await.expect("scrape").text().await.expect("text");
        for name in names {
            assert!(text.lines().any(|l| l.starts_with(name)), "{:?} /metrics has no {name}", m.flavor);
        }
    }
    let run = |m: &Member| etcdctl::run(&m.endpoint(), &["check", "datascale", "--load=s"], None);
    let (k, e) = (run(&keel), run(&etcd));
    assert_eq!(k.code, e.code, "keel: {}{}\netcd: {}{}", k.stdout, k.stderr, e.stdout, e.stderr);
    assert!(k.stdout.contains("PASS: Approximate system memory used"), "{}{}", k.stdout, k.stderr);
    let keys = |m: &Member| etcdctl::run(&m.endpoint(), &["get", "--prefix", "", "--count-only", "-w", "json"], None);
    assert_eq!(shape_count(&keys(&keel).stdout), shape_count(&keys(&etcd).stdout), "the check cleans up after itself");
}

fn shape_count(json: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(json.trim()).ok().and_then(|v| v.get("count").and_then(|c| c.as_u64()))
}
