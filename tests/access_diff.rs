//! What etcd checks before serving HTTP on its client port: the `Host` of plain-HTTP
//! requests (`--host-whitelist`, against DNS rebinding) and browsers' origins (`--cors`,
//! with preflight `OPTIONS`). The same requests to Keel and etcd, the same answers; gRPC
//! is not checked by either.

use crate::harness::{https_client, Flavor, Member, Pki};

const CORS: [&str; 3] = ["access-control-allow-origin", "access-control-allow-methods", "access-control-allow-headers"];

/// Status, the CORS headers, and (for a refusal or an unknown path) the content type and
/// body.
async fn ask(http: &reqwest::Client, base: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut req = http.request(method.parse().expect("method"), format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if method == "POST" {
        req = req.body(r#"{"key":"YQ=="}"#);
    }
    let resp = req.send().await.expect("answered");
    let status = resp.status().as_u16();
    let mut out = format!("{method} {path} {headers:?}: {status}");
    for h in CORS {
        if let Some(v) = resp.headers().get(h) {
            out.push_str(&format!("\n  {h}: {}", v.to_str().unwrap_or_default()));
        }
    }
    if status == 421 || status == 404 {
        let ctype = resp.headers().get("content-type").map(|v| v.to_str().unwrap_or_default().to_string());
        out.push_str(&format!("\n  {ctype:?}\n{}", resp.text().await.expect("body")));
    }
    out
}

async fn answers(m: &Member, base: &str, http: &reqwest::Client, host: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (method, path, origin) in [
        ("GET", "/version", None),
        ("GET", "/version", Some("http://a.com:80")),
        ("GET", "/health", Some("http://c.com:80")),
        ("POST", "/v3/kv/range", Some("https://b.com:8443")),
        ("OPTIONS", "/v3/kv/put", Some("http://a.com:80")),
        ("OPTIONS", "/v3/kv/put", Some("http://c.com:80")),
        ("GET", "/no/such/path", Some("http://a.com:80")),
        ("POST", "/v3/kv/no-such-call", None),
        ("POST", "/v3alpha/kv/range", None),
        ("GET", "/metrics", None),
    ] {
        for host in [host, "localhost", "example.com:2379"] {
            let mut headers = vec![("host", host)];
            headers.extend(origin.map(|o| ("origin", o)));
            out.push(ask(http, base, method, path, &headers).await);
        }
    }
    // gRPC is not checked.
    let put = m.ctl(&["put", "k", "v"], None);
    out.push(format!("etcdctl put: {}", put.stdout.trim()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_and_origins_are_checked_as_etcd_checks_them() {
    let http = reqwest::Client::new();
    for (flags, refusals) in [
        (vec![], 0),
        (vec!["--cors=http://a.com:80,https://b.com:8443", "--host-whitelist=localhost,example.com"], 10),
        (vec!["--cors=*", "--host-whitelist=127.0.0.1"], 20),
    ] {
        let mut seen = Vec::new();
        for flavor in [Flavor::Keel, Flavor::Etcd] {
            let m = tokio::task::block_in_place(|| Member::single_with(flavor, &flags));
            let host = m.endpoint();
            let answers = answers(&m, &m.client_url(), &http, &host).await;
            seen.push(answers.iter().map(|a| a.replace(&host, "<member>")).collect::<Vec<_>>());
        }
        assert_eq!(seen[0], seen[1], "{flags:?}: left Keel, right etcd");
        let refused = seen[0].iter().filter(|a| a.contains(": 421")).count();
        assert_eq!(refused, refusals, "{flags:?}: {:#?}", seen[0]);
    }
}

/// Over TLS every `Host` is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_requests_may_name_any_host() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = Pki::new();
    let tls = pki.client_tls(pki.leaf("root", "root"));
    let http = https_client(&tls.ca, Some(&tls.client));
    let mut seen = Vec::new();
    for flavor in [Flavor::Keel, Flavor::Etcd] {
        let flags = ["--host-whitelist=example.com", "--cors=http://a.com:80"];
        let m = tokio::task::block_in_place(|| Member::single_tls(flavor, &flags, tls.clone()));
        let mut out = Vec::new();
        for host in ["127.0.0.1", "evil.com"] {
            let headers = [("host", host), ("origin", "http://a.com:80")];
            out.push(ask(&http, &m.client_url(), "GET", "/version", &headers).await);
        }
        seen.push(out);
    }
    assert_eq!(seen[0], seen[1], "left Keel, right etcd");
    assert!(seen[0].iter().all(|a| a.contains(": 200")), "{seen:#?}");
}
