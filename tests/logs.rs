//! `kubectl logs` through `keel apiserver`: the API server finds the pod's node and streams
//! the node agent's `/containerLogs/...` back. Until Keel's kubelet lands, the node agent
//! here is a small HTTPS server in the test that answers that one route the way a kubelet
//! does (its path and options echoed into the log lines, so the test sees what arrived).

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, RawQuery};
use axum::routing::get;

use crate::harness::kube::ApiServer;
use crate::harness::{free_port, Flavor, Member};

/// Serves `GET /containerLogs/{namespace}/{pod}/{container}` over HTTPS on `port` with a
/// self-signed certificate; runs on a thread of its own until the test ends.
fn start_node_agent(dir: &std::path::Path, port: u16) {
    let (cert, key) = crate::harness::self_signed_cert(dir, "kubelet", "node-1");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key).await.expect("tls config");
            let app = axum::Router::new().route(
                "/containerLogs/{namespace}/{pod}/{container}",
                get(|Path((ns, pod, c)): Path<(String, String, String)>, RawQuery(q): RawQuery| async move {
                    format!("{ns}/{pod}/{c} line 1\n{ns}/{pod}/{c} line 2 ?{}\n", q.unwrap_or_default())
                }),
            );
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let server = axum_server::bind_rustls(addr, tls).serve(app.into_make_service());
            let _ = ready_tx.send(());
            let _ = server.await;
        });
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).expect("node agent started");
}

fn apply(api: &ApiServer, manifest: &str) {
    let o = api.kubectl_stdin(&["apply", "-f", "-"], manifest);
    assert!(o.status.success(), "apply: {}\n{}", String::from_utf8_lossy(&o.stderr), api.log());
}

fn node(api: &ApiServer, name: &str, port: u16) {
    apply(api, &format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n"));
    let status = format!(
        r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}}}}}}"#
    );
    let o = api.kubectl(&["patch", "node", name, "--subresource=status", "--type=merge", "-p", &status]);
    assert!(o.status.success(), "patch node status: {}", String::from_utf8_lossy(&o.stderr));
}

fn pod(api: &ApiServer, name: &str, node: Option<&str>) {
    let node = node.map(|n| format!("  nodeName: {n}\n")).unwrap_or_default();
    apply(
        api,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{node}  containers:\n  - {{name: app, image: busybox}}\n  - {{name: sidecar, image: busybox}}\n"
        ),
    );
}

fn out(o: &std::process::Output) -> (bool, String, String) {
    (o.status.success(), String::from_utf8_lossy(&o.stdout).to_string(), String::from_utf8_lossy(&o.stderr).to_string())
}

#[test]
fn kubectl_logs_streams_from_the_pods_node_agent() {
    let store = Member::single(Flavor::Keel);
    let api = ApiServer::start(&store.client_url(), &[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let agent_port = free_port();
    start_node_agent(dir.path(), agent_port);
    node(&api, "node-1", agent_port);
    pod(&api, "web", Some("node-1"));

    let (ok, stdout, stderr) = out(&api.kubectl(&["logs", "web", "-c", "sidecar", "--tail=5", "--timestamps"]));
    assert!(ok, "{stderr}\n{}", api.log());
    assert_eq!(stdout, "default/web/sidecar line 1\ndefault/web/sidecar line 2 ?tailLines=5&timestamps=true\n");
    let (ok, stdout, _) = out(&api.kubectl(&["logs", "web", "-c", "app", "-f"]));
    assert!(ok);
    assert!(stdout.ends_with("line 2 ?follow=true\n"), "{stdout}");

    // The API server's own checks, as kube-apiserver words them.
    let (ok, _, stderr) = out(&api.kubectl(&["get", "--raw", "/api/v1/namespaces/default/pods/web/log"]));
    assert!(!ok);
    assert!(
        stderr.contains("a container name must be specified for pod web, choose one of: [app sidecar]"),
        "{stderr}"
    );
    let (ok, _, stderr) = out(&api.kubectl(&["logs", "web", "-c", "nope"]));
    assert!(!ok);
    assert!(stderr.contains("container nope is not valid for pod web"), "{stderr}");
    let (ok, _, stderr) = out(&api.kubectl(&["logs", "missing"]));
    assert!(!ok);
    assert!(stderr.contains("pods \"missing\" not found"), "{stderr}");

    // A pod on no node yet has no logs; a node whose agent does not answer is an error
    // naming the address tried.
    pod(&api, "pending", None);
    let (ok, stdout, stderr) = out(&api.kubectl(&["logs", "pending", "-c", "app"]));
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "");
    let dead_port = free_port();
    node(&api, "node-2", dead_port);
    pod(&api, "stranded", Some("node-2"));
    let (ok, _, stderr) = out(&api.kubectl(&["logs", "stranded", "-c", "app"]));
    assert!(!ok);
    assert!(stderr.contains(&format!("127.0.0.1:{dead_port}/containerLogs/default/stranded/app")), "{stderr}");
}
