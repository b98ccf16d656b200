//! Auth on a three-member Keel cluster: tokens issued by one member work on every other
//! (each waits for the entry that issued a token it has not seen), permissions are
//! enforced on every member, a revoke takes effect on the very next request, and the
//! users, roles and switch survive restarts and snapshots. The single-member behaviour
//! is compared with etcd's in `auth_diff`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::etcdctl::{self, Output};
use crate::harness::{wait_for, Cluster, Flavor, Member};

const ROOT: &str = "--user=root:rootpw";

fn ctl(m: &Member, args: &[&str]) -> Output {
    let out = etcdctl::run(&m.endpoint(), args, None);
    assert!(out.success(), "etcdctl {args:?} on {}: {}\n{}", m.name, out.stdout, out.stderr);
    out
}

/// root, and alice with role `r1`: read-write on the prefix `/p/`; auth enabled.
fn set_up(m: &Member) {
    for step in [
        &["user", "add", "root:rootpw"][..],
        &["user", "add", "alice:apw"],
        &["role", "add", "r1"],
        &["role", "grant-permission", "r1", "readwrite", "/p/", "--prefix"],
        &["user", "grant-role", "alice", "r1"],
        &["auth", "enable"],
    ] {
        ctl(m, step);
    }
}

fn b64(s: &str) -> String {
    crate::harness::base64::encode(s.as_bytes())
}

/// A JSON gateway call: the HTTP status and the body.
async fn call(http: &reqwest::Client, m: &Member, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = http.post(format!("{}{path}", m.client_url())).body(body.to_string());
    if let Some(t) = token {
        req = req.header("Authorization", t);
    }
    let resp = req.send().await.expect("gateway answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON from {path}: {text}")))
}

async fn token(http: &reqwest::Client, m: &Member, name: &str, password: &str) -> String {
    let (status, body) =
        call(http, m, "/v3/auth/authenticate", None, json!({"name": name, "password": password})).await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().expect("a token").to_string()
}

async fn put(http: &reqwest::Client, m: &Member, token: &str, key: &str) -> (u16, Value) {
    call(http, m, "/v3/kv/put", Some(token), json!({"key": b64(key), "value": b64("v")})).await
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_and_permissions_hold_on_every_member() {
    let c = Cluster::start(Flavor::Keel, 3, &[]);
    set_up(&c.members[0]);
    let http = reqwest::Client::new();
    for (i, issuer) in c.members.iter().enumerate() {
        let token = token(&http, issuer, "alice", "apw").await;
        // Straight away on every member, whether or not it has applied the token's entry.
        for m in &c.members {
            let (status, body) = put(&http, m, &token, &format!("/p/{i}")).await;
            assert_eq!(status, 200, "alice's put through {} with {}'s token: {body}", m.name, issuer.name);
            let (status, body) = put(&http, m, &token, "/q").await;
            assert_eq!((status, body["error"].as_str()), (403, Some("etcdserver: permission denied")), "{body}");
        }
    }
    // A follower that has not even received the token's entry yet: it waits for it.
    let leader = tokio::task::block_in_place(|| c.leader());
    let behind = &c.members[(leader + 1) % 3];
    behind.pause(true);
    let fresh = token(&http, &c.members[leader], "alice", "apw").await;
    behind.pause(false);
    let (status, body) = put(&http, behind, &fresh, "/p/fresh").await;
    assert_eq!(status, 200, "a token issued while {} was stopped: {body}", behind.name);

    let (status, body) = put(&http, &c.members[1], "nope.1", "/p/x").await;
    assert_eq!((status, body["error"].as_str()), (401, Some("etcdserver: invalid auth token")));
    let (status, body) =
        call(&http, &c.members[2], "/v3/kv/put", None, json!({"key": b64("/p/x"), "value": b64("v")})).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("etcdserver: user name is empty")));
    let (status, body) = call(
        &http,
        &c.members[2],
        "/v3/auth/user/list",
        Some(&token(&http, &c.members[1], "alice", "apw").await),
        json!({}),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (403, Some("etcdserver: permission denied")));

    // A revoke applies to the next request of a token issued before it, on any member.
    let alice = token(&http, &c.members[2], "alice", "apw").await;
    assert_eq!(put(&http, &c.members[2], &alice, "/p/before").await.0, 200);
    ctl(&c.members[0], &[ROOT, "role", "revoke-permission", "r1", "/p/", "--prefix"]);
    for m in &c.members {
        let (status, body) = put(&http, m, &alice, "/p/after").await;
        assert_eq!(status, 403, "after the revoke, through {}: {body}", m.name);
    }
    // A changed password ends the user's tokens everywhere.
    ctl(&c.members[1], &[ROOT, "role", "grant-permission", "r1", "readwrite", "/p/", "--prefix"]);
    let alice = token(&http, &c.members[0], "alice", "apw").await;
    let passwd = etcdctl::run(
        &c.members[0].endpoint(),
        &[ROOT, "user", "passwd", "alice", "--interactive=false"],
        Some(b"newpw\n"),
    );
    assert!(passwd.success(), "{}", passwd.stderr);
    // A member that has not applied the change yet still knows the token, but the write
    // carries the auth revision it was checked at and fails where it is applied, as in
    // etcd; once the member has applied the change, the token itself is refused.
    for m in &c.members {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = put(&http, m, &alice, "/p/x").await;
            match (status, body["error"].as_str()) {
                (401, Some("etcdserver: invalid auth token")) => break,
                (400, Some("etcdserver: revision of auth store is old")) => {}
                _ => panic!("an old password's token through {}: {status} {body}", m.name),
            }
            assert!(std::time::Instant::now() < deadline, "{} still knows the old token", m.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let got = ctl(&c.members[2], &[ROOT, "get", "/p/x"]);
    assert_eq!(got.stdout, "", "a refused put wrote /p/x");
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_state_survives_restarts_and_reaches_a_member_by_snapshot() {
    let mut c = Cluster::start(Flavor::Keel, 3, &["--snapshot-count=100"]);
    set_up(&c.members[0]);
    // A follower misses the next changes, and enough entries to need a snapshot.
    let leader = c.leader();
    let (down, up) = ((leader + 1) % 3, (leader + 2) % 3);
    c.members[down].kill();
    ctl(&c.members[leader], &[ROOT, "role", "add", "r2"]);
    ctl(&c.members[up], &[ROOT, "role", "grant-permission", "r2", "read", "/r/", "--prefix"]);
    ctl(&c.members[leader], &[ROOT, "user", "add", "bob:bpw"]);
    ctl(&c.members[up], &[ROOT, "user", "grant-role", "bob", "r2"]);
    let options = etcd_client::ConnectOptions::new().with_user("root", "rootpw");
    let mut root =
        etcd_client::Client::connect([c.members[leader].client_url()], Some(options)).await.expect("connect");
    for i in 0..600 {
        root.put(format!("/r/{i}"), "x", None).await.expect("put as root");
    }
    c.members[up].restart();
    c.members[down].start();
    let listing = |m: &Member, args: &[&str]| etcdctl::run(&m.endpoint(), args, None);
    for m in &c.members {
        let users = wait_for(&format!("bob's role on {}", m.name), Duration::from_secs(30), || {
            let out = listing(m, &["--user=bob:bpw", "--consistency=s", "get", "/r/", "--prefix", "--keys-only"]);
            out.success().then_some(out.stdout)
        });
        assert_eq!(users.lines().filter(|l| l.starts_with("/r/")).count(), 600, "on {}", m.name);
        let out = listing(m, &["--user=bob:bpw", "put", "/r/x", "1"]);
        assert!(out.stderr.contains("permission denied"), "bob may only read, on {}: {}", m.name, out.stderr);
        let out = ctl(m, &[ROOT, "role", "get", "r2"]);
        assert!(out.stdout.contains("[/r/, /r0) (prefix /r/)"), "on {}: {}", m.name, out.stdout);
    }
    // Only the snapshot can have brought the follower the roles: the log it was sent
    // starts after them.
    assert!(
        c.members[down].log_text().contains("snapshot installed"),
        "the follower caught up without a snapshot:\n{}",
        c.members[down].log_tail()
    );
}
