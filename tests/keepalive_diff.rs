//! gRPC keepalive and stream limits on the client port (`--grpc-keepalive-min-time`,
//! `--grpc-keepalive-interval`, `--grpc-keepalive-timeout`, `--max-concurrent-streams`),
//! seen from a bare HTTP/2 client that answers pings only when told to: the same frames
//! from Keel and etcd.

use std::time::{Duration, Instant};

use crate::harness::h2raw::{self, Frame, H2};
use crate::harness::{Flavor, Member};

const FLAVORS: [Flavor; 2] = [Flavor::Keel, Flavor::Etcd];

/// What the server sends until it closes the connection, by meaning, leaving out what
/// does not concern keepalive. Keel's server says GOAWAY (no error) before it closes a
/// connection whose pings went unanswered; etcd's just closes it. Both are a close.
fn until_closed(h2: &mut H2) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while let Some(f) = h2.next(deadline) {
        if let Some(d) = keep(&f) {
            seen.push(d);
        }
    }
    if seen.last().is_some_and(|d| d.starts_with("GOAWAY") && d.contains("code=0")) {
        seen.pop();
    }
    seen.push("closed".into());
    seen
}

fn keep(f: &Frame) -> Option<String> {
    matches!(f.kind, h2raw::PING | h2raw::GOAWAY | h2raw::RST_STREAM).then(|| f.describe())
}

/// Frames (kept as above) until `n` have been seen; panics if the connection closes.
fn first(h2: &mut H2, n: usize, answer_pings: bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while seen.len() < n {
        let f = h2.next(deadline).unwrap_or_else(|| panic!("closed after {seen:?}"));
        if answer_pings && f.kind == h2raw::PING && f.flags & h2raw::ACK == 0 {
            h2.send(&h2raw::frame(h2raw::PING, h2raw::ACK, 0, &f.payload));
        }
        seen.extend(keep(&f));
    }
    seen
}

#[test]
fn a_client_that_pings_too_often_is_sent_away() {
    let mut seen = Vec::new();
    for flavor in FLAVORS {
        // The defaults: at most a ping every 5 s with a stream open, every two hours without.
        let m = Member::single(flavor);
        let mut idle = H2::connect(&m.endpoint());
        idle.pings(4);
        let mut busy = H2::connect(&m.endpoint());
        busy.open_watch(1);
        busy.pings(4);
        // Allowed: pings far enough apart, with a stream open.
        let m2 = Member::single_with(flavor, &["--grpc-keepalive-min-time=100ms"]);
        let mut polite = H2::connect(&m2.endpoint());
        polite.open_watch(1);
        for _ in 0..4 {
            polite.pings(1);
            // The client's own pace, what the test is about; not a wait for the server.
            std::thread::sleep(Duration::from_millis(250));
        }
        seen.push((until_closed(&mut idle), until_closed(&mut busy), first(&mut polite, 4, false)));
    }
    assert_eq!(seen[0], seen[1], "left Keel, right etcd");
    let ack = || "PING ACK".to_string();
    let (idle, busy, polite) = &seen[0];
    assert_eq!(idle, &[ack(), ack(), ack(), ack(), "GOAWAY last=0 code=11 too_many_pings".into(), "closed".into()]);
    assert_eq!(busy[4], "GOAWAY last=1 code=11 too_many_pings");
    assert_eq!(polite, &[ack(), ack(), ack(), ack()]);
}

#[test]
fn a_silent_client_is_pinged_then_dropped() {
    let mut seen = Vec::new();
    for flavor in FLAVORS {
        let m = Member::single_with(flavor, &["--grpc-keepalive-interval=1s", "--grpc-keepalive-timeout=1s"]);
        // Answering: still there after several pings.
        let mut alive = H2::connect(&m.endpoint());
        alive.open_watch(1);
        // Silent, with a stream open: pinged once, then closed.
        let mut silent = H2::connect(&m.endpoint());
        silent.open_watch(1);
        let answered = first(&mut alive, 3, true);
        seen.push((answered, until_closed(&mut silent)));
        // The answering connection still serves after the silent one was dropped.
        alive.pings(1);
        while first(&mut alive, 1, true) != ["PING ACK"] {}
    }
    assert_eq!(seen[0], seen[1], "left Keel, right etcd");
    assert_eq!(seen[0].1, ["PING", "closed"]);
}

#[test]
fn max_concurrent_streams_is_announced_and_enforced() {
    let mut seen = Vec::new();
    for flavor in FLAVORS {
        let unlimited = Member::single(flavor);
        let h2 = H2::connect(&unlimited.endpoint());
        let default = h2.setting(h2raw::SETTINGS_MAX_CONCURRENT_STREAMS);
        let limited = Member::single_with(flavor, &["--max-concurrent-streams=2"]);
        let mut h2 = H2::connect(&limited.endpoint());
        let announced = h2.setting(h2raw::SETTINGS_MAX_CONCURRENT_STREAMS);
        for stream in [1, 3, 5] {
            h2.open_watch(stream);
        }
        let refused = first(&mut h2, 1, true);
        seen.push((default, announced, refused));
    }
    assert_eq!(seen[0], seen[1], "left Keel, right etcd");
    assert_eq!(seen[0], (Some(u32::MAX), Some(2), vec!["RST_STREAM stream=5 code=7".to_string()]));
}

/// A client multiplexing many watches on one connection (as the Kubernetes API server
/// does) is not held back: by default there is no limit on streams (the largest number is
/// announced).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_share_one_connection() {
    for flavor in FLAVORS {
        let m = Member::single(flavor);
        let mut client = etcd_client::Client::connect([m.client_url()], None).await.expect("connect");
        let all = async {
            let mut streams = Vec::new();
            for i in 0..300 {
                streams.push(client.watch(format!("key{i}"), None).await.expect("watch"));
            }
            client.get("key0", None).await
        };
        let get = tokio::time::timeout(Duration::from_secs(30), all).await;
        assert!(matches!(get, Ok(Ok(_))), "{flavor:?}: 300 watch streams and a request on one connection: {get:?}");
    }
}
