//! etcd's JSON gateway (`POST /v3/...` with protobuf JSON bodies, as `curl` users and
//! HTTP-only clients call etcd): the same requests against Keel and a real etcd, HTTP
//! statuses and bodies compared. Ids that differ between any two clusters (cluster,
//! member, raft term) are masked; so are remaining TTLs (the clock runs between the two).

use serde_json::Value;

use crate::harness::{Flavor, Member};

/// How much of an answer is compared.
#[derive(Clone, Copy, PartialEq)]
enum Cmp {
    /// Status and body (ids masked).
    Whole,
    /// Status, and the body's field names only (member lists, status: values differ).
    Shape,
    /// Status and gRPC code only (parser messages differ between Go and Rust).
    Code,
    /// Status only.
    Status,
}

const MASKED: [&str; 5] = ["cluster_id", "member_id", "raft_term", "TTL", "hash"];

fn mask(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if MASKED.contains(&k.as_str()) {
                    *v = Value::String("*".into());
                } else {
                    mask(v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask),
        _ => {}
    }
}

fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        _ => Value::Null,
    }
}

async fn call(http: &reqwest::Client, m: &Member, path: &str, body: &str, cmp: Cmp) -> String {
    let url = format!("{}{path}", m.client_url());
    let resp = http.post(url).body(body.to_string()).send().await.expect("the request is answered");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("a body");
    let mut v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    let v = match cmp {
        Cmp::Whole => {
            mask(&mut v);
            v
        }
        Cmp::Shape => shape(&v),
        Cmp::Code => v.get("code").cloned().unwrap_or(Value::Null),
        Cmp::Status => Value::Null,
    };
    format!("POST {path} {body} -> {status} {v}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_gateway_answers_as_etcds_does() {
    let keel = Member::single(Flavor::Keel);
    let etcd = Member::single(Flavor::Etcd);
    let http = reqwest::Client::new();
    use Cmp::{Code, Shape, Status, Whole};
    let steps: &[(&str, &str, Cmp)] = &[
        ("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#, Whole),
        ("/v3/kv/range", r#"{"key":"Zm9v"}"#, Whole),
        ("/v3beta/kv/range", r#"{"key":"Zm9v","keys_only":true}"#, Whole),
        ("/v3/kv/range", "{}", Whole),
        ("/v3/kv/put", "", Whole),
        ("/v3/kv/range", r#"{"key":"Zm9v","revision":"99"}"#, Whole),
        ("/v3/kv/range", r#"{"key":"Zm9v","unknown_field":1}"#, Whole),
        ("/v3/kv/range", "garbage", Code),
        ("/v3/lease/grant", r#"{"ID":"4096","TTL":"600"}"#, Whole),
        ("/v3/lease/grant", r#"{"ID":4096,"TTL":600}"#, Whole),
        ("/v3/lease/grant", r#"{"ID":"4100","TTL":"99999999999"}"#, Whole),
        ("/v3/kv/put", r#"{"key":"YS8x","value":"MQ==","lease":"4096"}"#, Whole),
        ("/v3/kv/put", r#"{"key":"YS8y","value":"Mg==","lease":"5000"}"#, Whole),
        ("/v3/lease/timetolive", r#"{"ID":"4096","keys":true}"#, Whole),
        ("/v3/kv/lease/timetolive", r#"{"ID":"4097"}"#, Whole),
        ("/v3/lease/leases", "{}", Whole),
        ("/v3/kv/lease/leases", "", Whole),
        ("/v3/kv/put", r#"{"key":"YS8z","value":"Mw==","prev_kv":true}"#, Whole),
        ("/v3/kv/put", r#"{"key":"YS8z","value":"NA==","prev_kv":true}"#, Whole),
        ("/v3/kv/range", r#"{"key":"YS8=","range_end":"YTA=","sort_order":"DESCEND","sort_target":"MOD"}"#, Whole),
        ("/v3/kv/range", r#"{"key":"YS8=","range_end":"YTA=","count_only":true}"#, Whole),
        ("/v3/kv/lease/revoke", r#"{"ID":"4096"}"#, Whole),
        ("/v3/lease/revoke", r#"{"ID":"4096"}"#, Whole),
        (
            "/v3/kv/txn",
            r#"{"compare":[{"key":"YS8z","result":"EQUAL","target":"VALUE","value":"NA=="}],
               "success":[{"request_put":{"key":"Yg==","value":"Yw=="}},{"request_range":{"key":"YS8z"}}],
               "failure":[{"request_delete_range":{"key":"YS8z"}}]}"#,
            Whole,
        ),
        (
            "/v3/kv/txn",
            r#"{"compare":[{"key":"Yg==","result":"GREATER","target":"VERSION","version":"5"}],
               "failure":[{"request_delete_range":{"key":"YS8=","range_end":"YTA=","prev_kv":true}}]}"#,
            Whole,
        ),
        ("/v3/kv/deleterange", r#"{"key":"Zm9v","prev_kv":true}"#, Whole),
        ("/v3/kv/compaction", r#"{"revision":"3"}"#, Whole),
        ("/v3/kv/range", r#"{"key":"Zm9v","revision":"2"}"#, Whole),
        ("/v3/kv/compaction", r#"{"revision":"1000"}"#, Whole),
        ("/v3/lease/grant", r#"{"ID":"4097","TTL":"600"}"#, Whole),
        ("/v3/lock/lock", r#"{"name":"bG9jaw==","lease":"4097"}"#, Whole),
        ("/v3/lock/unlock", r#"{"key":"bG9jay8xMDAx"}"#, Whole),
        ("/v3/election/leader", r#"{"name":"ZWw="}"#, Whole),
        ("/v3/election/campaign", r#"{"name":"ZWw=","value":"djE=","lease":"4097"}"#, Whole),
        ("/v3/election/leader", r#"{"name":"ZWw="}"#, Whole),
        (
            "/v3/election/proclaim",
            r#"{"leader":{"name":"ZWw=","key":"ZWwvMTAwMQ==","rev":"12","lease":"4097"},"value":"djI="}"#,
            Whole,
        ),
        ("/v3/election/proclaim", r#"{"value":"djI="}"#, Whole),
        ("/v3/election/resign", r#"{"leader":{"name":"ZWw=","key":"ZWwvMTAwMQ==","rev":"12"}}"#, Whole),
        ("/v3/maintenance/alarm", "{}", Whole),
        ("/v3/maintenance/status", "{}", Shape),
        ("/v3/cluster/member/list", "{}", Shape),
        ("/v3/kv/nothing-here", "{}", Status),
    ];
    for (i, (path, body, cmp)) in steps.iter().enumerate() {
        let k = call(&http, &keel, path, body, *cmp).await;
        let e = call(&http, &etcd, path, body, *cmp).await;
        assert_eq!(k, e, "step {i} differs (left Keel, right etcd)");
    }
    // Large values: under --max-request-bytes (1.5 MiB), over it, and over it plus gRPC's
    // allowance: the same answers and errors (a value's base64 is a third larger).
    for n in [1_000_000, 1_600_000, 2_500_000] {
        let value = String::from_utf8(vec![b'x'; n]).expect("ascii");
        let body =
            serde_json::json!({ "key": "Ymln", "value": crate::harness::base64::encode(value.as_bytes()) }).to_string();
        let k = call(&http, &keel, "/v3/kv/put", &body, Whole).await;
        let e = call(&http, &etcd, "/v3/kv/put", &body, Whole).await;
        let (k, e) = (k.replace(&body, "<body>"), e.replace(&body, "<body>"));
        assert_eq!(k, e, "a {n}-byte value (left Keel, right etcd)");
        if n == 1_000_000 {
            assert!(k.contains("-> 200"), "a value under the limit is stored: {k}");
        }
    }
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(10), f).await.expect("an answer in time")
}

/// Reads a gateway watch's answer until it has `n` lines (with a deadline).
async fn lines(resp: &mut reqwest::Response, n: usize, buf: &mut String) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while buf.matches('\n').count() < n {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk()).await.expect("more of the watch in time");
        match chunk.expect("the watch answer reads") {
            Some(c) => buf.push_str(&String::from_utf8_lossy(&c)),
            None => break,
        }
    }
    let mut out = Vec::new();
    for _ in 0..n {
        let Some(at) = buf.find('\n') else { break };
        let line: String = buf.drain(..=at).collect();
        let mut v: Value = serde_json::from_str(line.trim()).unwrap_or(Value::String(line));
        mask(&mut v);
        out.push(v.to_string());
    }
    out
}

/// The gateway's streaming watch (`POST /v3/watch`): a body of several watch requests, the
/// answer a line `{"result": ...}` per watch response, as etcd's.
async fn watch_scenario(m: &Member) -> Vec<String> {
    let http = reqwest::Client::new();
    let put = |v: &'static str| {
        let (http, url) = (http.clone(), format!("{}/v3/kv/put", m.client_url()));
        async move { http.post(url).body(format!(r#"{{"key":"Zm9v","value":"{v}"}}"#)).send().await.expect("put") }
    };
    put("YmFy").await;
    let body =
        r#"{"create_request":{"key":"Zm9v","prev_kv":true}} {"create_request":{"key":"Zm9v","start_revision":"1"}}"#;
    let url = format!("{}/v3/watch", m.client_url());
    let mut w = http.post(url).body(body).send().await.expect("watch");
    let mut buf = String::new();
    let mut out = lines(&mut w, 3, &mut buf).await;
    put("YmF6").await;
    // One response per watcher, in no order either server promises.
    let mut both = lines(&mut w, 2, &mut buf).await;
    both.sort();
    out.extend(both);
    // Lease keep-alives: a line for each request, the answer ending with the body.
    let post = |path: &str, body: &'static str| http.post(format!("{}{path}", m.client_url())).body(body).send();
    post("/v3/lease/grant", r#"{"ID":"4096","TTL":"600"}"#).await.expect("grant");
    let mut ka = post("/v3/lease/keepalive", r#"{"ID":"4096"} {"ID":"77"}"#).await.expect("keepalive");
    let mut kbuf = String::new();
    out.extend(lines(&mut ka, 2, &mut kbuf).await);
    out.push(format!("keep-alive ends: {:?}", within(ka.chunk()).await.ok().flatten()));
    // An election observed: its leader, then each new value.
    let mut obs = post("/v3/election/observe", r#"{"name":"ZQ=="}"#);
    let campaign = post("/v3/election/campaign", r#"{"name":"ZQ==","value":"djE=","lease":"4096"}"#);
    let (obs_resp, _) = tokio::join!(async { within(&mut obs).await }, campaign);
    let mut obs_resp = obs_resp.expect("observe");
    let proclaim = r#"{"leader":{"name":"ZQ==","key":"ZS8xMDAw","rev":"4","lease":"4096"},"value":"djI="}"#;
    post("/v3/election/proclaim", proclaim).await.expect("proclaim");
    let mut obuf = String::new();
    out.extend(lines(&mut obs_resp, 2, &mut obuf).await);

    // A request that cannot be read: an error status, and etcd's error body (its message
    // is the JSON parser's, which differs).
    let bad = http.post(format!("{}/v3/watch", m.client_url())).body("garbage").send().await.expect("watch");
    out.push(format!("{}", bad.status()));
    let text = within(bad.text()).await.unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or_default();
    out.push(format!("code {}", v["code"]));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_gateway_watch_streams_as_etcds_does() {
    let keel = Member::single(Flavor::Keel);
    let etcd = Member::single(Flavor::Etcd);
    let (k, e) = (watch_scenario(&keel).await, watch_scenario(&etcd).await);
    assert_eq!(k, e, "left Keel, right etcd");
}

/// A backup through the gateway (`POST /v3/maintenance/snapshot`): lines of base64 chunks
/// that put together end with etcd's trailer, the SHA-256 of everything before it, on both
/// (the files themselves are each server's own format).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_gateway_streams_a_snapshot_as_etcds_does() {
    let keel = Member::single(Flavor::Keel);
    let etcd = Member::single(Flavor::Etcd);
    let http = reqwest::Client::new();
    let dir = tempfile::tempdir().expect("temp dir");
    for m in [&keel, &etcd] {
        let body = within(async {
            let resp = http.post(format!("{}/v3/maintenance/snapshot", m.client_url())).body("{}").send().await;
            resp.expect("answered").text().await.expect("body")
        })
        .await;
        let mut file = Vec::new();
        // Each message: its fields, and the bytes it says remain after it.
        let mut messages = Vec::new();
        for line in body.lines() {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{:?}: {e}: {line}", m.flavor));
            let blob = v["result"]["blob"].as_str().unwrap_or_else(|| panic!("{:?}: no blob in {line}", m.flavor));
            file.extend(crate::harness::base64::decode(blob).expect("base64"));
            let fields: Vec<String> = v["result"].as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
            let remaining: u64 = v["result"]["remaining_bytes"].as_str().map_or(0, |r| r.parse().expect("a count"));
            messages.push((fields, remaining, file.len() as u64));
        }
        assert!(file.len() > 32, "{:?}: {} bytes", m.flavor, file.len());
        // As etcd counts: the database's bytes still to come, the trailer not included;
        // the trailer alone in the last message.
        let data = file.len() as u64 - 32;
        let (last, rest) = messages.split_last().expect("messages");
        for (fields, remaining, sent) in rest {
            assert_eq!(*remaining, data - sent, "{:?}", m.flavor);
            if *remaining > 0 {
                assert_eq!(fields, &["blob", "remaining_bytes"], "{:?}: the fields of a chunk", m.flavor);
            }
        }
        assert_eq!((&last.0[..], last.1, last.2 - data), (&["blob".to_string()][..], 0, 32), "{:?}", m.flavor);
        let (content, sum) = file.split_at(file.len() - 32);
        let path = dir.path().join("content");
        std::fs::write(&path, content).expect("write");
        let out = std::process::Command::new("sha256sum").arg(&path).output().expect("sha256sum");
        let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with(&hex),
            "{:?}: the trailer is not the SHA-256",
            m.flavor
        );
    }
}
