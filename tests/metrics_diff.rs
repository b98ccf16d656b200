//! `/metrics` compared with etcd's: the same requests counted the same way (gRPC calls by
//! method and status code, messages, request bytes, MVCC operations), the disk latency
//! histograms with etcd's buckets, and the per-peer series a cluster's alerts read.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::etcdctl;
use crate::harness::{wait_for, Cluster, Flavor, Member};

/// Every sample of a scrape: the series (name and labels, as printed) and its value.
fn scrape(m: &Member) -> BTreeMap<String, f64> {
    let (_, body) = crate::harness::http_get(m.client_url().trim_start_matches("http://"), "/metrics");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(series, value)| (series.to_string(), value.parse().unwrap_or(f64::NAN)))
        .collect()
}

/// What changed between two scrapes, in the series `keep` selects.
fn changes(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    keep: impl Fn(&str) -> bool,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter(|(s, _)| keep(s))
        .map(|(s, v)| (s.clone(), v - before.get(s).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

/// The same etcdctl requests, some refused, counted the same way by both servers.
#[test]
fn requests_are_counted_as_etcd_counts_them() {
    let keel = Member::single(Flavor::Keel);
    let etcd = Member::single(Flavor::Etcd);
    let script: &[&[&str]] = &[
        &["put", "a", "1"],
        &["put", "b", "2"],
        &["put", "", "x"],
        &["get", "a"],
        &["get", "--prefix", ""],
        &["del", "b"],
        &["del", "nothing"],
        &["lease", "grant", "60"],
        &["lease", "revoke", "1"],
        &["compaction", "1"],
        &["compaction", "100"],
        &["put", "d", "4", "--prev-kv"],
        &["put", "d", "--ignore-value"],
        &["del", "d", "--prev-kv"],
    ];
    // etcd counts reads and writes per backend transaction: a transaction that writes
    // evaluates its compares apart from its operations; one that only reads does not.
    let txns: [&[u8]; 4] = [
        b"value(\"a\") = \"1\"\n\nput c 3\nget a\n\nget b\n\n",
        b"value(\"a\") = \"1\"\nversion(\"c\") = \"1\"\n\nget a\nget c\n\n\n",
        b"value(\"a\") = \"2\"\n\nput c 4\n\nget b\n\n",
        b"value(\"a\") = \"1\"\nvalue(\"c\") = \"3\"\n\nput c 5\n\n\n",
    ];
    let mut seen = Vec::new();
    for m in [&keel, &etcd] {
        let before = scrape(m);
        for step in script {
            m.ctl(step, None);
        }
        for txn in txns {
            let out = m.ctl(&["txn"], Some(txn));
            assert!(out.success(), "{:?}: {}{}", m.flavor, out.stdout, out.stderr);
        }
        // A lease's keys go with it: each a delete.
        let grant = m.ctl(&["lease", "grant", "60"], None);
        let id = grant.stdout.split_whitespace().nth(1).expect("a lease id").to_string();
        m.ctl(&["put", "e", "5", &format!("--lease={id}")], None);
        m.ctl(&["put", "f", "6", &format!("--lease={id}")], None);
        m.ctl(&["lease", "revoke", &id], None);
        // A watch stream: its create, the answer and one event, then the client goes away.
        let watch = |field: &str| {
            let series = format!(
                "grpc_server_{field}{{grpc_method=\"Watch\",grpc_service=\"etcdserverpb.Watch\",grpc_type=\"bidi_stream\"}}"
            );
            scrape(m).get(&series).copied().unwrap_or(0.0) - before.get(&series).copied().unwrap_or(0.0)
        };
        let watcher = etcdctl::spawn(&m.endpoint(), &["watch", "w"]);
        wait_for("the watch created", Duration::from_secs(20), || (watch("msg_sent_total") >= 1.0).then_some(()));
        m.ctl(&["put", "w", "1"], None);
        watcher.stop_after("w\n1");
        wait_for("the watch counted handled", Duration::from_secs(20), || {
            (watch("msg_sent_total") >= 2.0 && !changes(&before, &scrape(m), |s| s.contains("Canceled")).is_empty())
                .then_some(())
        });
        let after = scrape(m);
        let counted = changes(&before, &after, |s| {
            (s.starts_with("grpc_server_") && !s.contains("grpc.health"))
                || s.starts_with("etcd_mvcc_put_total")
                || s.starts_with("etcd_mvcc_delete_total")
                || s.starts_with("etcd_mvcc_txn_total")
                || s.starts_with("etcd_mvcc_range_total")
                || s.starts_with("etcd_network_client_grpc_received_bytes_total")
        });
        seen.push(counted);
        // The disk histograms: etcd's buckets, and the writes synced and committed.
        for name in ["etcd_disk_wal_fsync_duration_seconds", "etcd_disk_backend_commit_duration_seconds"] {
            let buckets: Vec<&str> = after
                .keys()
                .filter_map(|s| s.strip_prefix(&format!("{name}_bucket{{le=\"")))
                .map(|s| s.trim_end_matches("\"}"))
                .collect();
            let mut sorted: Vec<f64> = buckets.iter().filter_map(|b| b.parse().ok()).collect();
            sorted.sort_by(f64::total_cmp);
            let mut expected: Vec<f64> = (0..14).map(|i| 0.001 * f64::from(1 << i)).collect();
            expected.push(f64::INFINITY);
            assert_eq!(sorted, expected, "{:?}: {name}'s buckets", m.flavor);
            let count = format!("{name}_count");
            let grew = after.get(&count).copied().unwrap_or(0.0) - before.get(&count).copied().unwrap_or(0.0);
            // etcd commits its backend every 100 ms, whatever was written meanwhile.
            assert!(grew >= 1.0, "{:?}: {name} counted nothing for 5 writes", m.flavor);
        }
    }
    assert!(seen[1].len() > 20, "etcd counted too little to compare: {:#?}", seen[1]);
    assert_eq!(seen[0], seen[1], "left Keel, right etcd");
}

/// The member ids of a cluster's members, in hex as etcd labels peers, by member name.
fn ids(m: &Member) -> BTreeMap<String, String> {
    let out = m.ctl(&["member", "list", "-w", "json"], None);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("member list JSON");
    v["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| (m["name"].as_str().unwrap_or("").to_string(), format!("{:x}", m["ID"].as_u64().unwrap_or(0))))
        .collect()
}

/// Every member times the round trip to each of its peers (the leader its heartbeats,
/// followers their probes), and the leader counts the sends that fail when one is down,
/// under etcd's names and labels (what the etcd mixin's member alerts read).
#[test]
fn every_member_times_its_peers_and_the_leader_counts_failed_sends() {
    for flavor in [Flavor::Keel, Flavor::Etcd] {
        let mut c = Cluster::start(flavor, 3, &[]);
        let leader = c.leader();
        let ids = ids(&c.members[leader]);
        let peers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        for from in 0..3 {
            for to in (0..3).filter(|p| *p != from) {
                let to = &ids[&c.members[to].name];
                let series = format!("etcd_network_peer_round_trip_time_seconds_count{{To=\"{to}\"}}");
                // etcd's first observations come within seconds, later ones every 30 s.
                wait_for(&format!("{flavor:?}: m{} {series}", from + 1), Duration::from_secs(45), || {
                    (scrape(&c.members[from]).get(&series).copied().unwrap_or(0.0) > 0.0).then_some(())
                });
            }
        }
        let down = peers[0];
        let to = ids[&c.members[down].name].clone();
        c.members[down].kill();
        let series = format!("etcd_network_peer_sent_failures_total{{To=\"{to}\"}}");
        wait_for(&format!("{flavor:?}: {series}"), Duration::from_secs(30), || {
            c.members[leader].ctl(&["put", "k", "v"], None);
            (scrape(&c.members[leader]).get(&series).copied().unwrap_or(0.0) > 0.0).then_some(())
        });
    }
}

/// `--metrics=extensive` adds the gRPC handling-time histograms; a 1µs
/// `--experimental-warning-apply-duration` counts every apply as slow.
#[test]
fn extensive_metrics_and_the_slow_apply_threshold() {
    for flavor in [Flavor::Keel, Flavor::Etcd] {
        let plain = Member::single(flavor);
        let tuned = Member::single_with(flavor, &["--metrics=extensive", "--experimental-warning-apply-duration=1us"]);
        for m in [&plain, &tuned] {
            assert!(m.ctl(&["put", "k", "v"], None).success());
        }
        let series = "grpc_server_handling_seconds_count{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}";
        assert_eq!(scrape(&tuned).get(series).copied(), Some(1.0), "{flavor:?}");
        assert_eq!(scrape(&plain).get(series), None, "{flavor:?}");
        let slow = |m: &Member| scrape(m).get("etcd_server_slow_apply_total").copied().unwrap_or(0.0);
        assert!(slow(&tuned) >= 1.0, "{flavor:?}: no slow apply counted");
        assert_eq!(slow(&plain), 0.0, "{flavor:?}");
    }
}
