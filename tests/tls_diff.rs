//! Client TLS against a real etcd: both started with the same `https` client URL,
//! certificate, key, client authority and `--client-cert-auth`, then the same etcdctl
//! (v3.4) steps and gateway calls against each, compared. Covers client certificates
//! required (none, or one from another authority, cannot connect), and with auth enabled,
//! a certificate's CommonName acting as the user when a request has no token.

use std::path::PathBuf;

use crate::harness::etcdctl::Output;
use crate::harness::{https_client, ClientTls, Cluster, Flavor, Member, Pki};

struct Setup {
    pki: Pki,
    tls: ClientTls,
    keel: Member,
    etcd: Member,
}

fn setup() -> Setup {
    let pki = Pki::new();
    let tls = pki.client_tls(pki.leaf("root", "root"));
    let keel = Member::single_tls(Flavor::Keel, &[], tls.clone());
    let etcd = Member::single_tls(Flavor::Etcd, &[], tls.clone());
    Setup { pki, tls, keel, etcd }
}

/// etcdctl presenting `cert` (none: trusting the server only).
fn ctl(m: &Member, tls: &ClientTls, cert: Option<&(PathBuf, PathBuf)>, args: &[&str]) -> Output {
    // A handshake that fails is retried until the command times out.
    let mut flags = vec![format!("--cacert={}", tls.ca.display()), "--command-timeout=3s".to_string()];
    if let Some((c, k)) = cert {
        flags.push(format!("--cert={}", c.display()));
        flags.push(format!("--key={}", k.display()));
    }
    let all: Vec<&str> = flags.iter().map(String::as_str).chain(args.iter().copied()).collect();
    crate::harness::etcdctl::run(&m.endpoint(), &all, None).normalized()
}

fn both(s: &Setup, cert: Option<&(PathBuf, PathBuf)>, args: &[&str]) -> Output {
    let k = ctl(&s.keel, &s.tls, cert, args);
    let e = ctl(&s.etcd, &s.tls, cert, args);
    assert_eq!(
        k, e,
        "etcdctl {args:?}\n--- keel ---\n{}\n{}\n--- etcd ---\n{}\n{}",
        k.stdout, k.stderr, e.stdout, e.stderr
    );
    k
}

#[test]
fn clients_need_a_certificate_from_the_trusted_authority() {
    let s = setup();
    let root = s.tls.client.clone();
    both(&s, Some(&root), &["put", "a", "1"]);
    let out = both(&s, Some(&root), &["get", "a", "-w", "json"]);
    assert!(out.stdout.contains(r#""kvs""#), "{}", out.stdout);
    // No certificate, or one another authority signed: the handshake fails, which etcdctl
    // reports as a deadline.
    let out = both(&s, None, &["get", "a"]);
    assert_eq!(out.stderr, "Error: context deadline exceeded");
    let other = Pki::new();
    let stranger = other.leaf("stranger", "root");
    let out = both(&s, Some(&stranger), &["get", "a"]);
    assert_eq!(out.stderr, "Error: context deadline exceeded");
    // Plain HTTP to an https URL is no way in either.
    let plain = |m: &Member| {
        crate::harness::etcdctl::run(
            &format!("127.0.0.1:{}", m.client_port),
            &["--command-timeout=3s", "get", "a"],
            None,
        )
    };
    assert!(!plain(&s.keel).success() && !plain(&s.etcd).success());
}

#[test]
fn a_certificates_common_name_is_the_user_of_requests_without_a_token() {
    let s = setup();
    let root = s.tls.client.clone();
    let alice = s.pki.leaf("alice", "alice");
    let bob = s.pki.leaf("bob", "bob");
    let nameless = s.pki.leaf("nameless", "");
    for step in [
        &["put", "/p/a", "1"][..],
        &["put", "/q", "2"],
        &["user", "add", "root:rootpw"],
        &["user", "add", "alice:apw"],
        &["role", "add", "r1"],
        &["role", "grant-permission", "r1", "readwrite", "/p/", "--prefix"],
        &["user", "grant-role", "alice", "r1"],
        // Before auth is enabled a CommonName grants nothing and refuses nothing.
        &["get", "/q"],
        &["auth", "enable"],
    ] {
        both(&s, Some(&root), step);
    }
    // root's certificate is root; alice's is alice, with alice's grants.
    both(&s, Some(&root), &["get", "/q"]);
    both(&s, Some(&root), &["user", "list"]);
    both(&s, Some(&alice), &["get", "/p/a"]);
    both(&s, Some(&alice), &["put", "/p/b", "3"]);
    let out = both(&s, Some(&alice), &["get", "/q"]);
    assert_eq!(out.stderr, "Error: etcdserver: permission denied");
    both(&s, Some(&alice), &["user", "list"]);
    both(&s, Some(&alice), &["user", "get", "alice"]);
    // A token takes precedence over the certificate.
    both(&s, Some(&alice), &["--user=root:rootpw", "get", "/q"]);
    both(&s, Some(&root), &["--user=alice:apw", "get", "/q"]);
    // A CommonName that is no user may do nothing; a certificate without one is nobody.
    both(&s, Some(&bob), &["get", "/p/a"]);
    let out = both(&s, Some(&nameless), &["get", "/p/a"]);
    assert_eq!(out.stderr, "Error: etcdserver: permission denied");
    both(&s, Some(&nameless), &["--user=alice:apw", "get", "/p/a"]);
    // Watches too.
    let out = both(&s, Some(&alice), &["watch", "/q"]);
    assert!(out.stderr.contains("permission denied"), "{}", out.stderr);
    both(&s, Some(&root), &["auth", "disable"]);
    both(&s, Some(&alice), &["get", "/q"]);
}

/// The JSON gateway cannot take a user from a certificate: with client certificates and
/// auth on, etcd refuses a gateway call whose certificate has a CommonName (400, its text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_refuses_named_certificates_once_auth_is_on() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let s = tokio::task::block_in_place(setup);
    let nameless = s.pki.leaf("nameless", "");
    let client = |cert: &(PathBuf, PathBuf)| https_client(&s.tls.ca, Some(cert));
    let (named, anonymous) = (client(&s.tls.client), client(&nameless));
    let call = |http: reqwest::Client, m: String, path: &'static str, token: Option<String>| async move {
        let mut req = http.post(format!("{m}{path}")).body(r#"{"key":"YQ=="}"#);
        if let Some(t) = token {
            req = req.header("Authorization", t);
        }
        let resp = req.send().await.expect("answered");
        let status = resp.status().as_u16();
        let ctype = resp.headers().get("content-type").map(|v| v.to_str().unwrap_or_default().to_string());
        let body = resp.text().await.expect("body");
        // Ids differ between the two.
        let body = if status == 200 { "OK".to_string() } else { body };
        (status, ctype, body)
    };
    for (label, m) in [("keel", s.keel.client_url()), ("etcd", s.etcd.client_url())] {
        let before = call(named.clone(), m.clone(), "/v3/kv/range", None).await;
        assert_eq!(before.0, 200, "{label}: auth off, the certificate is just a certificate");
        tokio::task::block_in_place(|| {
            let root = s.tls.client.clone();
            let member = if label == "keel" { &s.keel } else { &s.etcd };
            for step in [&["user", "add", "root:rootpw"][..], &["auth", "enable"]] {
                let out = ctl(member, &s.tls, Some(&root), step);
                assert!(out.success(), "{label}: {step:?}: {}", out.stderr);
            }
        });
    }
    let mut answers = Vec::new();
    for m in [s.keel.client_url(), s.etcd.client_url()] {
        let named_call = call(named.clone(), m.clone(), "/v3/kv/range", None).await;
        let beta = call(named.clone(), m.clone(), "/v3beta/kv/range", None).await;
        let no_token = call(anonymous.clone(), m.clone(), "/v3/kv/range", None).await;
        let token = {
            let resp = anonymous
                .post(format!("{m}/v3/auth/authenticate"))
                .body(r#"{"name":"root","password":"rootpw"}"#)
                .send()
                .await
                .expect("authenticate");
            let v: serde_json::Value = resp.json().await.expect("json");
            v["token"].as_str().expect("token").to_string()
        };
        let with_token = call(anonymous.clone(), m.clone(), "/v3/kv/range", Some(token.clone())).await;
        let named_with_token = call(named.clone(), m.clone(), "/v3/kv/range", Some(token)).await;
        answers.push(vec![named_call, beta, no_token, with_token, named_with_token]);
    }
    assert_eq!(answers[0], answers[1], "keel, then etcd");
    assert_eq!(answers[0][0].0, 400);
    assert_eq!(answers[0][3].0, 200);
}

/// Three members on `https` client and peer URLs, each requiring the others' certificates:
/// writes through any member (forwarded to the leader), linearizable reads everywhere, a
/// new leader after the old one dies, all over TLS; the same flags start etcd. The peer
/// port refuses plain HTTP and TLS clients without a certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_on_https_client_and_peer_urls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = Pki::new();
    let tls = pki.client_tls(pki.leaf("root", "root"));
    let mut keel = tokio::task::block_in_place(|| Cluster::start_tls(Flavor::Keel, 3, &[], tls.clone()));
    let etcd = tokio::task::block_in_place(|| Cluster::start_tls(Flavor::Etcd, 3, &[], tls.clone()));
    let alive = tokio::task::block_in_place(|| {
        for c in [&keel, &etcd] {
            for (i, m) in c.members.iter().enumerate() {
                let out = m.ctl(&["put", &format!("k{i}"), &format!("v{i}")], None);
                assert!(out.success(), "{:?} put through {}: {}", m.flavor, m.name, out.stderr);
            }
            for m in &c.members {
                let out = m.ctl(&["get", "k", "--prefix", "--print-value-only"], None);
                assert_eq!(out.stdout.trim(), "v0\nv1\nv2", "{:?} read through {}: {}", m.flavor, m.name, out.stderr);
            }
        }
        let shape = |c: &Cluster| {
            let out = c.members[0].ctl(&["endpoint", "status", "--cluster", "-w", "json"], None);
            assert!(out.success(), "{}", out.stderr);
            crate::harness::etcdctl::shape(&out.stdout)
        };
        assert_eq!(shape(&keel), shape(&etcd), "endpoint status --cluster over https");
        let leader = keel.leader();
        keel.members[leader].kill();
        let next = (leader + 1) % 3;
        crate::harness::wait_for("a write after the leader died", std::time::Duration::from_secs(30), || {
            keel.members[next].ctl(&["put", "after", "1"], None).success().then_some(())
        });
        let out = keel.members[(leader + 2) % 3].ctl(&["get", "after", "--print-value-only"], None);
        assert_eq!(out.stdout.trim(), "1", "{}", out.stderr);
        next
    });
    let peer = format!("127.0.0.1:{}", keel.members[alive].peer_port);
    let plain = reqwest::Client::new().get(format!("http://{peer}/keel/members")).send().await;
    assert!(!plain.is_ok_and(|r| r.status().is_success()), "plain HTTP to a TLS peer port");
    let anonymous = https_client(&tls.ca, None);
    let refused = anonymous.get(format!("https://{peer}/keel/members")).send().await;
    assert!(refused.is_err(), "a TLS client without a certificate: {refused:?}");
    // With the members' certificate, the same request is served.
    let member = https_client(&tls.ca, Some(&tls.server));
    let served = member.get(format!("https://{peer}/keel/members")).send().await.expect("served");
    assert!(served.status().is_success(), "{}", served.status());
}

/// The API server reaches a store that requires client certificates, as kube-apiserver
/// reaches etcd (`--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`).
#[test]
fn the_api_server_reaches_a_store_that_requires_client_certificates() {
    let pki = Pki::new();
    let client = pki.leaf("apiserver", "kube-apiserver");
    let tls = pki.client_tls(client.clone());
    let store = Member::single_tls(Flavor::Keel, &[], tls.clone());
    let flags = [
        format!("--etcd-cafile={}", tls.ca.display()),
        format!("--etcd-certfile={}", client.0.display()),
        format!("--etcd-keyfile={}", client.1.display()),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let api = crate::harness::kube::ApiServer::start(&store.client_url(), &flags);
    let made = api.kubectl(&["create", "configmap", "over-tls", "--from-literal=a=1"]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let out = store.ctl(&["get", "/registry/configmaps/default/over-tls", "--keys-only"], None);
    assert_eq!(out.stdout.trim(), "/registry/configmaps/default/over-tls", "{}", out.stderr);
}

/// Rotating the serving certificate needs no restart: both read the files again for new
/// connections once they change (written elsewhere and renamed into place).
#[test]
fn a_replaced_serving_certificate_is_served_without_a_restart() {
    let (old_ca, new_ca) = (Pki::new(), Pki::new());
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server-key.pem"));
    let install = |from: &(PathBuf, PathBuf)| {
        for (src, dst) in [(&from.1, &key), (&from.0, &cert)] {
            let staged = dst.with_extension("new");
            std::fs::copy(src, &staged).expect("stage");
            std::fs::rename(&staged, dst).expect("rename into place");
        }
    };
    install(&old_ca.leaf("server", "keel-test-server"));
    let client = old_ca.leaf("client", "root");
    let tls = ClientTls { ca: old_ca.ca.0.clone(), server: (cert.clone(), key.clone()), client: client.clone() };
    let keel = Member::single_tls(Flavor::Keel, &[], tls.clone());
    let etcd = Member::single_tls(Flavor::Etcd, &[], tls.clone());
    let s = Setup { pki: old_ca, tls, keel, etcd };
    both(&s, Some(&client), &["put", "a", "1"]);
    install(&new_ca.leaf("server", "keel-test-server"));
    // Clients that trust only the old authority can no longer connect; those that trust the
    // new one can (the client certificates are still checked against the old one).
    let out = both(&s, Some(&client), &["get", "a"]);
    assert_eq!(out.stderr, "Error: context deadline exceeded");
    let renewed = ClientTls { ca: new_ca.ca.0.clone(), ..s.tls.clone() };
    let k = ctl(&s.keel, &renewed, Some(&client), &["get", "a", "--print-value-only"]);
    let e = ctl(&s.etcd, &renewed, Some(&client), &["get", "a", "--print-value-only"]);
    assert_eq!((k.stdout.trim(), e.stdout.trim()), ("1", "1"), "{}\n{}", k.stderr, e.stderr);
}
