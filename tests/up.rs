//! `keel up`, what `make run` starts: the store, the API server and the controller manager,
//! a kubeconfig that works, a clean stop on Ctrl-C, and a second start that resumes the same
//! cluster.

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

/// The controller manager runs inside `keel up`: a dependent goes with its owner.
fn collects_garbage(dir: &std::path::Path, tag: &str) {
    let owner = format!("owner-{tag}");
    let o = kubectl(dir, &["create", "configmap", &owner]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = kubectl(dir, &["get", "configmap", &owner, "-o", "jsonpath={.metadata.uid}"]);
    let owner_uid = String::from_utf8_lossy(&o.stdout).to_string();
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dep-{tag}\n  ownerReferences:\n  - {{apiVersion: v1, kind: ConfigMap, name: {owner}, uid: {owner_uid}}}\n"
    );
    let path = dir.join(format!("dep-{tag}.yaml"));
    std::fs::write(&path, manifest).expect("manifest");
    let o = kubectl(dir, &["apply", "-f", &path.display().to_string()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(kubectl(dir, &["delete", "configmap", &owner]).status.success());
    wait_for("the dependent to be collected", Duration::from_secs(30), || {
        let o = kubectl(dir, &["get", "configmap", &format!("dep-{tag}"), "-o", "name"]);
        (!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("NotFound")).then_some(())
    });
}

fn up_once(dir: &std::path::Path, port: u16) -> String {
    let log = std::fs::File::create(dir.join("up.log")).expect("log");
    let mut up = Command::new(crate::harness::keel_program())
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
    collects_garbage(dir, &uid[..8]);
    // Ctrl-C stops everything cleanly (also with the collector's watches open).
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
