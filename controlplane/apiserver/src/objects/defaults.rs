//! Defaulting of the served types' fields, as kube-apiserver's defaulters set them.

use serde_json::{json, Value};

use super::name_of;
use crate::resources::ResourceType;

fn set_default(o: &mut Value, pointer: &str, value: Value) {
    if o.pointer(pointer).is_some_and(|v| !v.is_null()) {
        return;
    }
    let mut parts: Vec<&str> = pointer.split('/').skip(1).collect();
    let Some(last) = parts.pop() else { return };
    let mut cur = o;
    for p in parts {
        if !cur.get(p).is_some_and(Value::is_object) {
            cur[p] = json!({});
        }
        cur = &mut cur[p];
    }
    cur[last] = value;
}

fn default_pod_spec(spec: &mut Value) {
    set_default(spec, "/restartPolicy", json!("Always"));
    set_default(spec, "/dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "/schedulerName", json!("default-scheduler"));
    set_default(spec, "/terminationGracePeriodSeconds", json!(30));
    set_default(spec, "/securityContext", json!({}));
    set_default(spec, "/enableServiceLinks", json!(true));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
                let tag_latest = !image.contains(':') || image.ends_with(":latest");
                let policy = if tag_latest && !image.contains('@') { "Always" } else { "IfNotPresent" };
                set_default(c, "/imagePullPolicy", json!(policy));
                set_default(c, "/terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "/terminationMessagePolicy", json!("File"));
                set_default(c, "/resources", json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        set_default(p, "/protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

fn default_template(o: &mut Value) {
    if let Some(spec) = o.pointer_mut("/spec/template/spec") {
        default_pod_spec(spec);
    }
}

/// kube-apiserver's defaults for the fields users usually leave out.
pub(super) fn default(rt: &ResourceType, o: &mut Value) {
    match rt.plural {
        "namespaces" => {
            // Every namespace carries its name as a label, for namespace selectors.
            let name = name_of(o).to_string();
            if !name.is_empty() {
                set_default(o, "/metadata/labels", json!({}));
                o["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            }
            set_default(o, "/spec/finalizers", json!(["kubernetes"]));
            set_default(o, "/status/phase", json!("Active"));
        }
        "pods" => {
            if let Some(spec) = o.get_mut("spec") {
                default_pod_spec(spec);
            }
            set_default(o, "/status/phase", json!("Pending"));
        }
        "services" => {
            set_default(o, "/spec/type", json!("ClusterIP"));
            set_default(o, "/spec/sessionAffinity", json!("None"));
            if o.pointer("/spec/type").and_then(Value::as_str) != Some("ExternalName") {
                set_default(o, "/spec/ipFamilies", json!(["IPv4"]));
                set_default(o, "/spec/ipFamilyPolicy", json!("SingleStack"));
                set_default(o, "/spec/internalTrafficPolicy", json!("Cluster"));
            }
            if let Some(ports) = o.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
                for p in ports {
                    set_default(p, "/protocol", json!("TCP"));
                    if let Some(port) = p.get("port").cloned() {
                        set_default(p, "/targetPort", port);
                    }
                }
            }
            set_default(o, "/status/loadBalancer", json!({}));
        }
        "secrets" => {
            set_default(o, "/type", json!("Opaque"));
            // stringData is write-only: it lands in data, base64-encoded.
            if let Some(Value::Object(sd)) = o.as_object_mut().and_then(|m| m.remove("stringData")) {
                use base64::Engine as _;
                for (k, v) in sd {
                    let enc = base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default());
                    set_default(o, "/data", json!({}));
                    o["data"][k] = json!(enc);
                }
            }
        }
        "deployments" => {
            set_default(o, "/spec/replicas", json!(1));
            set_default(o, "/spec/strategy/type", json!("RollingUpdate"));
            if o.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("RollingUpdate") {
                set_default(o, "/spec/strategy/rollingUpdate/maxSurge", json!("25%"));
                set_default(o, "/spec/strategy/rollingUpdate/maxUnavailable", json!("25%"));
            }
            set_default(o, "/spec/revisionHistoryLimit", json!(10));
            set_default(o, "/spec/progressDeadlineSeconds", json!(600));
            default_template(o);
        }
        "replicasets" => {
            set_default(o, "/spec/replicas", json!(1));
            default_template(o);
        }
        "statefulsets" => {
            set_default(o, "/spec/replicas", json!(1));
            set_default(o, "/spec/podManagementPolicy", json!("OrderedReady"));
            set_default(o, "/spec/updateStrategy/type", json!("RollingUpdate"));
            if o.pointer("/spec/updateStrategy/type").and_then(Value::as_str) == Some("RollingUpdate") {
                set_default(o, "/spec/updateStrategy/rollingUpdate/partition", json!(0));
            }
            set_default(o, "/spec/revisionHistoryLimit", json!(10));
            set_default(o, "/spec/persistentVolumeClaimRetentionPolicy/whenDeleted", json!("Retain"));
            set_default(o, "/spec/persistentVolumeClaimRetentionPolicy/whenScaled", json!("Retain"));
            default_template(o);
        }
        "persistentvolumes" | "persistentvolumeclaims" => {
            set_default(o, "/spec/volumeMode", json!("Filesystem"));
            if rt.plural == "persistentvolumes" {
                set_default(o, "/spec/persistentVolumeReclaimPolicy", json!("Retain"));
                set_default(o, "/status/phase", json!("Pending"));
            } else {
                set_default(o, "/status/phase", json!("Pending"));
            }
        }
        _ => {}
    }
}
