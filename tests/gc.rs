//! Deletion propagation: what `kubectl delete --cascade=background|orphan|foreground` does
//! through `keel apiserver` (the finalizers it sets) and `keel controller-manager` (the
//! garbage collector that acts on them), with ConfigMaps that own one another.

use std::time::Duration;

use crate::harness::kube::{ApiServer, ControllerManager};
use crate::harness::{wait_for, Flavor, Member};

const DEADLINE: Duration = Duration::from_secs(30);

fn kubectl_ok(api: &ApiServer, args: &[&str]) -> String {
    let o = api.kubectl(args);
    assert!(o.status.success(), "kubectl {args:?} failed: {}\n{}", String::from_utf8_lossy(&o.stderr), api.log());
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn uid(api: &ApiServer, name: &str) -> String {
    kubectl_ok(api, &["get", "configmap", name, "-o", "jsonpath={.metadata.uid}"])
}

fn exists(api: &ApiServer, name: &str) -> bool {
    let o = api.kubectl(&["get", "configmap", name, "-o", "name"]);
    if o.status.success() {
        return true;
    }
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("NotFound") || err.contains("not found"), "kubectl get {name}: {err}");
    false
}

/// The names of the owners `name` refers to, space-separated.
fn owners_of(api: &ApiServer, name: &str) -> String {
    kubectl_ok(api, &["get", "configmap", name, "-o", "jsonpath={.metadata.ownerReferences[*].name}"])
}

/// Creates ConfigMap `name` owned by `owners` (blocking their deletion when `block`).
fn create_owned(api: &ApiServer, name: &str, owners: &[&str], block: bool) {
    let refs: Vec<String> = owners
        .iter()
        .map(|o| {
            format!(
                "  - {{apiVersion: v1, kind: ConfigMap, name: {o}, uid: {}, blockOwnerDeletion: {block}}}",
                uid(api, o)
            )
        })
        .collect();
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  ownerReferences:\n{}\n",
        refs.join("\n")
    );
    let o = api.kubectl_stdin(&["apply", "-f", "-"], &manifest);
    assert!(o.status.success(), "create {name}: {}", String::from_utf8_lossy(&o.stderr));
}

fn wait_gone(api: &ApiServer, gc: &ControllerManager, name: &str) {
    let deadline = std::time::Instant::now() + DEADLINE;
    while exists(api, name) {
        assert!(std::time::Instant::now() < deadline, "{name} was never collected\n{}", gc.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn deletion_propagates_background_orphan_and_foreground() {
    let store = Member::single(Flavor::Keel);
    let api = ApiServer::start(&store.client_url(), &[]);

    // Without a collector the API server does what kube-apiserver does: an Orphan delete
    // leaves the owner in place, marked for deletion, with the `orphan` finalizer.
    kubectl_ok(&api, &["create", "configmap", "o1"]);
    create_owned(&api, "d1", &["o1"], true);
    kubectl_ok(&api, &["delete", "configmap", "o1", "--cascade=orphan", "--wait=false"]);
    assert_eq!(kubectl_ok(&api, &["get", "configmap", "o1", "-o", "jsonpath={.metadata.finalizers}"]), r#"["orphan"]"#);
    assert!(!kubectl_ok(&api, &["get", "configmap", "o1", "-o", "jsonpath={.metadata.deletionTimestamp}"]).is_empty());
    assert_eq!(owners_of(&api, "d1"), "o1");

    // The collector finishes it: d1 loses its owner reference, then o1 goes.
    let gc = ControllerManager::start(&api);
    wait_gone(&api, &gc, "o1");
    assert!(exists(&api, "d1"), "an orphaned dependent stays");
    assert_eq!(owners_of(&api, "d1"), "");
    // Emptied, the field is gone (Go's omitempty), not an empty list.
    assert_eq!(kubectl_ok(&api, &["get", "configmap", "d1", "-o", "jsonpath={.metadata.ownerReferences}"]), "");

    // Background (kubectl's default): dependents go after their owner; one that has
    // another owner still alive stays, without the reference to the deleted one.
    kubectl_ok(&api, &["create", "configmap", "o2"]);
    kubectl_ok(&api, &["create", "configmap", "o2-other"]);
    create_owned(&api, "d2", &["o2"], false);
    create_owned(&api, "d2-shared", &["o2", "o2-other"], false);
    kubectl_ok(&api, &["delete", "configmap", "o2"]);
    wait_gone(&api, &gc, "d2");
    wait_for("d2-shared to drop its reference to o2", DEADLINE, || {
        (owners_of(&api, "d2-shared") == "o2-other").then_some(())
    });

    // Foreground through two levels: kubectl waits for o3, which goes only after d3, which
    // goes only after dd3, so when kubectl returns all three are gone.
    kubectl_ok(&api, &["create", "configmap", "o3"]);
    create_owned(&api, "d3", &["o3"], true);
    create_owned(&api, "dd3", &["d3"], true);
    create_owned(&api, "d3-loose", &["o3"], false);
    kubectl_ok(&api, &["delete", "configmap", "o3", "--cascade=foreground", "--timeout=30s"]);
    for name in ["o3", "d3", "dd3"] {
        assert!(!exists(&api, name), "{name} outlived a foreground delete of o3\n{}", gc.log());
    }
    wait_gone(&api, &gc, "d3-loose");

    // A delete's options are checked like kube-apiserver checks them.
    kubectl_ok(&api, &["create", "configmap", "o4"]);
    let bad = api.kubectl(&["delete", "--raw", "/api/v1/namespaces/default/configmaps/o4?propagationPolicy=Sideways"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("Unsupported value"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(exists(&api, "o4"));
}
