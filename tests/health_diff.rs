//! Health, as probes see it: gRPC's standard health service (`grpc.health.v1.Health`),
//! which etcd registers and `grpc_health_probe`, load balancers and grpc-go clients call;
//! `/health` with its alarm and consistency options (what kubeadm's etcd probes ask); and
//! `--listen-metrics-urls`, where probes and Prometheus usually go. The same answers from
//! both servers.

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::harness::{free_port, Flavor, Member};

async fn answers(m: &Member) -> Vec<String> {
    let channel =
        tonic::transport::Endpoint::from_shared(m.client_url()).expect("url").connect().await.expect("connect");
    let mut client = HealthClient::new(channel);
    let mut out = Vec::new();
    for service in ["", "etcdserverpb.KV", "no.such.Service"] {
        let req = HealthCheckRequest { service: service.into() };
        out.push(match client.check(req).await {
            Ok(r) => format!("{service:?}: {:?}", ServingStatus::try_from(r.into_inner().status)),
            Err(s) => format!("{service:?}: {:?}", s.code()),
        });
    }
    // The watch answers at once with the current status.
    let mut watch = client.watch(HealthCheckRequest { service: String::new() }).await.expect("watch").into_inner();
    let first = watch.message().await.expect("a status").expect("a message");
    out.push(format!("watch: {:?}", ServingStatus::try_from(first.status)));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_service_answers_as_etcds_does() {
    let keel = Member::single(Flavor::Keel);
    let etcd = Member::single(Flavor::Etcd);
    let (k, e) = (answers(&keel).await, answers(&etcd).await);
    assert_eq!(k, e, "left Keel, right etcd");
    assert!(k[0].ends_with("Ok(Serving)"), "{k:?}");
}

fn get(port: u16, path: &str) -> (u16, String) {
    crate::harness::http_get(&format!("127.0.0.1:{port}"), path)
}

/// The status, and the body as JSON when it is (etcd writes an unhealthy answer as text
/// holding JSON). Keel also gives etcd 3.5's `reason` ("ALARM NOSPACE", ...), which etcd
/// 3.4 has not: it is left out of the comparison, and checked on its own.
fn health(port: u16, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = get(port, path);
    let mut v = serde_json::from_str(body.trim()).unwrap_or(serde_json::Value::String(body));
    if let Some(reason) = v.as_object_mut().and_then(|o| o.remove("reason")) {
        let healthy = v["health"] == "true";
        assert_eq!(reason.as_str().is_some_and(str::is_empty), healthy, "{path}: {v} with reason {reason}");
        if path == "/health" && !healthy {
            assert_eq!(reason, "ALARM NOSPACE");
        }
    }
    (status, v)
}

#[test]
fn metrics_urls_serve_metrics_and_health() {
    let mut seen = Vec::new();
    for flavor in [Flavor::Keel, Flavor::Etcd] {
        let port = free_port();
        let m = Member::single_with(flavor, &[&format!("--listen-metrics-urls=http://127.0.0.1:{port}")]);
        let (status, metrics) = get(port, "/metrics");
        assert!(metrics.contains("etcd_server_has_leader 1"), "{flavor:?}: {status} {metrics}");
        seen.push((status, health(port, "/health"), get(port, "/v3/kv/range").0));
        drop(m);
    }
    assert_eq!(seen[0], seen[1], "left Keel, right etcd");
}

/// An alarm makes a member unhealthy unless excluded, as kubeadm's probe
/// (`/health?exclude=NOSPACE&serializable=true`) asks.
#[test]
fn health_reports_alarms_unless_excluded() {
    let mut seen = Vec::new();
    for flavor in [Flavor::Keel, Flavor::Etcd] {
        let m = Member::single_with(flavor, &["--quota-backend-bytes=1000000"]);
        let port: u16 = m.client_url().rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
        let mut answers = vec![health(port, "/health")];
        let value = "x".repeat(100_000);
        let filled = (1..=60).any(|i| !m.ctl(&["put", &format!("k{i}")], Some(value.as_bytes())).success());
        assert!(filled, "{flavor:?} never filled");
        for path in [
            "/health",
            "/health?exclude=NOSPACE",
            "/health?exclude=CORRUPT",
            "/health?exclude=NOSPACE&serializable=true",
        ] {
            answers.push(health(port, path));
        }
        seen.push(answers);
    }
    assert_eq!(seen[0], seen[1], "left Keel, right etcd");
    assert_eq!(seen[0][1].0, 503, "{:?}", seen[0]);
}
