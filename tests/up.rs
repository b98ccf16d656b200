//! `keel up`, what `make run` starts: the store and the API server, a kubeconfig that works,
//! a clean stop on Ctrl-C, and a second start that resumes the same cluster.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{free_port, wait_for};

fn kubectl(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", dir.join("data/kubeconfig"))
        .env("KUBECACHEDIR", dir.join("cache"))
        .output()
        .expect("kubectl")
}

fn up_once(dir: &std::path::Path, port: u16) -> String {
    let log = std::fs::File::create(dir.join("up.log")).expect("log");
    let mut up = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["up", "--data-dir"])
        .arg(dir.join("data"))
        .arg(format!("--apiserver-port={port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("keel up");
    let uid = wait_for("keel up to serve kubectl", Duration::from_secs(60), || {
        let o = kubectl(dir, &["get", "namespace", "default", "-o", "jsonpath={.metadata.uid}"]);
        o.status.success().then(|| String::from_utf8_lossy(&o.stdout).to_string())
    });
    // Ctrl-C stops everything cleanly.
    let _ = Command::new("kill").args(["-INT", &up.id().to_string()]).status();
    let status = wait_for("keel up to stop", Duration::from_secs(30), || up.try_wait().ok().flatten());
    let log = std::fs::read_to_string(dir.join("up.log")).unwrap_or_default();
    assert!(status.success(), "keel up exited with {status}\n{log}");
    uid
}

#[test]
fn keel_up_serves_kubectl_and_resumes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let first = up_once(dir.path(), port);
    let second = up_once(dir.path(), port);
    assert!(!first.is_empty());
    assert_eq!(first, second, "the second keel up resumes the same cluster");
}
