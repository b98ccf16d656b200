//! etcd's TLS hardening flags against a real etcd, the same flags on both: which TLS 1.2
//! cipher suites a handshake may use (`--cipher-suites`), revoked client certificates
//! (`--client-crl-file`), the one CommonName peers must present
//! (`--peer-cert-allowed-cn`), the host name client and peer certificates must be valid
//! for (`--client-cert-allowed-hostname`, `--peer-cert-allowed-hostname`), and self-signed certificates (`--auto-tls`,
//! `--peer-auto-tls`). Handshakes are made with `openssl s_client`, requests with
//! etcdctl (v3.4).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::etcdctl::{self, Output};
use crate::harness::{free_port, https_client, ClientTls, Cluster, Flavor, Member, Pki};

/// The cipher `openssl s_client` agreed on with `args` (a protocol and ciphers, a client
/// certificate), or `None` if the handshake failed.
fn handshake(port: u16, ca: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-CAfile"])
        .arg(ca)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    let cipher = text.lines().find_map(|l| l.split_once(", Cipher is ").map(|(_, c)| c.trim().to_string()));
    cipher.filter(|c| out.status.success() && c != "(NONE)")
}

#[test]
fn cipher_suites_limit_what_tls_1_2_may_use() {
    let pki = Pki::new();
    let tls = pki.client_tls(pki.leaf("root", "root"));
    let flag = "--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305";
    let mut seen = Vec::new();
    for flavor in [Flavor::Keel, Flavor::Etcd] {
        let m = Member::single_tls(flavor, &[flag], tls.clone());
        let cert = ["-cert", &tls.client.0.display().to_string(), "-key", &tls.client.1.display().to_string()]
            .map(str::to_string);
        let probe = |extra: &[&str]| {
            let args: Vec<&str> = cert.iter().map(String::as_str).chain(extra.iter().copied()).collect();
            handshake(m.client_port, &tls.ca, &args)
        };
        seen.push(vec![
            probe(&["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"]),
            probe(&["-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305"]),
            probe(&["-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"]),
            // TLS 1.3 keeps its own suites.
            probe(&["-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"]),
        ]);
    }
    assert_eq!(seen[0], seen[1], "left Keel, right etcd");
    assert_eq!(seen[0][0].as_deref(), Some("ECDHE-RSA-AES128-GCM-SHA256"));
    assert_eq!(seen[0][2], None, "a suite left out was agreed on");
}

#[test]
fn unknown_and_unoffered_cipher_suites_stop_the_member() {
    let keel = |suites: &str| {
        Command::new(crate::harness::keel_program())
            .args(["store", "--data-dir=/nonexistent/never-used", &format!("--cipher-suites={suites}")])
            .output()
            .expect("run keel")
    };
    let out = keel("TLS_NOT_A_SUITE");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected TLS cipher suite"), "{out:?}");
    // A suite Go offers and rustls does not (CBC): refused with the reason, never ignored.
    let out = keel("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not offered by Keel's TLS library"), "{out:?}");
}

/// etcdctl presenting `cert`.
fn ctl(m: &Member, ca: &Path, cert: &(PathBuf, PathBuf), args: &[&str]) -> Output {
    let mut all = vec![
        format!("--cacert={}", ca.display()),
        format!("--cert={}", cert.0.display()),
        format!("--key={}", cert.1.display()),
        "--command-timeout=3s".to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    etcdctl::run(&m.endpoint(), &all, None).normalized()
}

#[test]
fn revoked_client_certificates_are_refused() {
    let pki = Pki::new();
    let good = pki.leaf("good", "good");
    let revoked = pki.leaf("revoked", "revoked");
    let crl = pki.crl(&[&revoked.0]);
    let tls = pki.client_tls(good.clone());
    let flag = format!("--client-crl-file={}", crl.display());
    let members: Vec<Member> =
        [Flavor::Keel, Flavor::Etcd].into_iter().map(|f| Member::single_tls(f, &[&flag], tls.clone())).collect();
    let seen: Vec<_> = members
        .iter()
        .map(|m| (ctl(m, &tls.ca, &good, &["put", "a", "1"]), ctl(m, &tls.ca, &revoked, &["get", "a"])))
        .collect();
    assert_eq!(seen[0], seen[1], "left Keel, right etcd");
    assert!(seen[0].0.success() && !seen[0].1.success(), "{:?}", seen[0]);
    // A new list, revoking the good certificate too, written over the old one while the
    // members run: both refuse it from the next connection on.
    let again = pki.crl(&[&good.0]);
    assert_eq!(again, crl);
    let seen: Vec<Output> = members.iter().map(|m| ctl(m, &tls.ca, &good, &["get", "a"])).collect();
    assert_eq!(seen[0], seen[1], "left Keel, right etcd");
    assert!(!seen[0].success(), "{:?}", seen[0]);
}

/// Both servers, three members each with `flag`, members presenting the server
/// certificate to each other: whether a handshake on a peer port succeeds with the members'
/// certificate, and with `intruder`'s. TLS 1.2, so that a refused client certificate fails
/// the handshake itself.
fn peer_handshakes(tls: &ClientTls, flag: &str, intruder: &(PathBuf, PathBuf)) -> (bool, bool) {
    let mut seen = Vec::new();
    for flavor in [Flavor::Keel, Flavor::Etcd] {
        let c = Cluster::start_tls(flavor, 3, &[flag], tls.clone());
        assert!(c.members[0].ctl(&["put", "k", "v"], None).success(), "{flavor:?}: the members talk");
        let port = c.members[1].peer_port;
        let shake = |cert: &(PathBuf, PathBuf)| {
            let (cf, kf) = (cert.0.display().to_string(), cert.1.display().to_string());
            handshake(port, &tls.ca, &["-tls1_2", "-cert", &cf, "-key", &kf]).is_some()
        };
        seen.push((shake(&tls.server), shake(intruder)));
    }
    assert_eq!(seen[0], seen[1], "{flag}: left Keel, right etcd");
    seen[0]
}

#[test]
fn peers_must_present_the_allowed_common_name() {
    let pki = Pki::new();
    let tls = pki.client_tls(pki.leaf("root", "root"));
    // The members' certificate has the allowed CommonName.
    let intruder = pki.leaf("intruder", "intruder");
    assert_eq!(peer_handshakes(&tls, "--peer-cert-allowed-cn=keel-test-server", &intruder), (true, false));
}

/// Certificates are matched to the allowed host name by their subject alternative names
/// (wildcards included), never by their CommonName.
#[test]
fn client_certificates_must_be_valid_for_the_allowed_hostname() {
    let pki = Pki::new();
    let tls = pki.client_tls(pki.leaf_for("root", "root", "DNS:admin.example.com"));
    let certs = [
        ("exact", pki.leaf_for("exact", "x", "DNS:admin.example.com")),
        ("wildcard", pki.leaf_for("wildcard", "x", "DNS:*.example.com")),
        ("other", pki.leaf_for("other", "x", "DNS:other.example.org")),
        ("named only in its CommonName", pki.leaf_for("cn", "admin.example.com", "DNS:x.example.org")),
        ("an address", pki.leaf_for("ip", "x", "IP:127.0.0.1")),
    ];
    let mut seen = Vec::new();
    for flavor in [Flavor::Keel, Flavor::Etcd] {
        let m = Member::single_tls(flavor, &["--client-cert-allowed-hostname=admin.example.com"], tls.clone());
        let port = m.client_port;
        seen.push(
            certs
                .iter()
                .map(|(what, (c, k))| {
                    let (cf, kf) = (c.display().to_string(), k.display().to_string());
                    (*what, handshake(port, &tls.ca, &["-tls1_2", "-cert", &cf, "-key", &kf]).is_some())
                })
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(seen[0], seen[1], "left Keel, right etcd");
    let admitted: Vec<&str> = seen[0].iter().filter(|(_, ok)| *ok).map(|(w, _)| *w).collect();
    assert_eq!(admitted, ["exact", "wildcard"]);
}

#[test]
fn peers_must_be_valid_for_the_allowed_hostname() {
    let pki = Pki::new();
    let tls = pki.client_tls(pki.leaf("root", "root"));
    // The members' certificate is valid for 127.0.0.1. The intruder's names the address
    // only in its CommonName, and its alternative name resolves to it (so etcd's own check
    // of the address it connects from passes).
    let intruder = pki.leaf_for("intruder", "127.0.0.1", "DNS:localhost");
    assert_eq!(peer_handshakes(&tls, "--peer-cert-allowed-hostname=127.0.0.1", &intruder), (true, false));
}

/// A peer whose certificate names addresses or hosts must connect from one of them, as etcd
/// checks on its peer port, unless `--experimental-peer-skip-client-san-verification`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_must_connect_from_an_address_their_certificate_names() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = Pki::new();
    let tls = pki.client_tls(pki.leaf("root", "root"));
    let certs = [
        ("the members' own", tls.server.clone()),
        ("another address", pki.leaf_for("elsewhere", "x", "IP:10.9.8.7")),
        ("a name for this address", pki.leaf_for("by-name", "x", "DNS:localhost")),
        ("another address, and a name for this one", pki.leaf_for("both", "x", "IP:10.9.8.7,DNS:localhost")),
        ("a name for another address", pki.leaf_for("far", "x", "DNS:unresolvable.invalid")),
        ("no address or name", pki.leaf_for("unnamed", "x", "email:ops@example.com")),
    ];
    let mut seen = Vec::new();
    for flags in [vec![], vec!["--experimental-peer-skip-client-san-verification"]] {
        for flavor in [Flavor::Keel, Flavor::Etcd] {
            let c = tokio::task::block_in_place(|| Cluster::start_tls(flavor, 1, &flags, tls.clone()));
            let url = format!("https://127.0.0.1:{}/version", c.members[0].peer_port);
            let mut admitted = Vec::new();
            for (what, (cert, key)) in &certs {
                let http = https_client(&tls.ca, Some(&(cert.clone(), key.clone())));
                // Any answer at all: the connection was kept.
                admitted.push((*what, http.get(&url).send().await.is_ok()));
            }
            seen.push((flags.clone(), flavor, admitted));
        }
    }
    for pair in seen.chunks(2) {
        assert_eq!(pair[0].2, pair[1].2, "{:?}: left Keel, right etcd", pair[0].0);
    }
    let refused: Vec<&str> = seen[0].2.iter().filter(|(_, ok)| !ok).map(|(w, _)| *w).collect();
    assert_eq!(refused, ["another address", "a name for another address"]);
    assert!(seen[2].2.iter().all(|(_, ok)| *ok), "{:?}", seen[2]);
}

/// Three members on `https` client and peer URLs with `--auto-tls` and `--peer-auto-tls`:
/// they form a cluster with the certificates they made, which clients use unverified.
#[test]
fn self_signed_certificates_with_auto_tls() {
    let mut seen = Vec::new();
    for flavor in [Flavor::Keel, Flavor::Etcd] {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let initial =
            ports.iter().enumerate().map(|(i, (_, p))| format!("m{}=https://127.0.0.1:{p}", i + 1)).collect::<Vec<_>>();
        let mut members: Vec<Member> = ports
            .iter()
            .enumerate()
            .map(|(i, (c, p))| {
                let mut m = Member::new(flavor, &format!("m{}", i + 1), *c, *p, &initial.join(","), "new", &[]);
                m.auto_tls = true;
                m.peer_auto_tls = true;
                m
            })
            .collect();
        for m in &mut members {
            m.start();
        }
        for m in &members {
            m.wait_ready();
        }
        let put = members[0].ctl(&["put", "k", "v"], None);
        let got = members[2].ctl(&["get", "k", "--print-value-only"], None);
        // Verifying the certificate fails: nothing signed it.
        let verified = etcdctl::run(
            &members[1].endpoint(),
            &["--insecure-transport=false", "--command-timeout=3s", "get", "k"],
            None,
        );
        let cert = members[0].data_path().join("fixtures").join("client").join("cert.pem");
        // Valid a year (--self-signed-cert-validity=1): past 364 days, not past 366.
        let valid_past = |days: u32| {
            Command::new("openssl")
                .args(["x509", "-noout", "-checkend", &(days * 86_400).to_string(), "-in"])
                .arg(&cert)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        seen.push((put.stdout, got.stdout, verified.success(), cert.exists(), valid_past(364), valid_past(366)));
    }
    assert_eq!(seen[0], seen[1], "left Keel, right etcd");
    assert_eq!(seen[0], ("OK\n".to_string(), "v\n".to_string(), false, true, true, false));
}
