//! Validation of the served types: names, required fields and the checks people meet, with
//! kube-apiserver's causes and messages.

use serde_json::Value;

use super::{name_of, namespace_of};
use crate::resources::ResourceType;
use crate::status::{ApiError, ApiResult, Cause};

fn dns1123_label(s: &str) -> Option<&'static str> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    (!ok).then_some(
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
    )
}

fn dns1123_subdomain(s: &str) -> Option<&'static str> {
    let ok = !s.is_empty() && s.len() <= 253 && s.split('.').all(|l| dns1123_label(l).is_none());
    (!ok).then_some(
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
    )
}

/// Names are DNS-1123 subdomains, except where Kubernetes asks for labels.
fn name_problem(rt: &ResourceType, name: &str) -> Option<&'static str> {
    match rt.plural {
        "namespaces" | "services" => dns1123_label(name),
        _ => dns1123_subdomain(name),
    }
}

fn require(o: &Value, pointer: &str, field: &str, causes: &mut Vec<Cause>) {
    let present = match o.pointer(pointer) {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    };
    if !present {
        causes.push(Cause::required(field));
    }
}

fn validate_containers(spec: &Value, prefix: &str, causes: &mut Vec<Cause>) {
    require(spec, "/containers", &format!("{prefix}.containers"), causes);
    let mut seen = Vec::new();
    for list in ["containers", "initContainers"] {
        for (i, c) in spec.get(list).and_then(Value::as_array).into_iter().flatten().enumerate() {
            let field = format!("{prefix}.{list}[{i}]");
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
            if name.is_empty() {
                causes.push(Cause::required(&format!("{field}.name")));
            } else if let Some(why) = dns1123_label(name) {
                causes.push(Cause::invalid(&format!("{field}.name"), name, why));
            } else if seen.contains(&name) {
                causes.push(Cause::duplicate(&format!("{field}.name"), name));
            }
            seen.push(name);
            require(c, "/image", &format!("{field}.image"), causes);
        }
    }
}

fn selector_matches_template(o: &Value, causes: &mut Vec<Cause>) {
    let Some(sel) = o.pointer("/spec/selector") else {
        causes.push(Cause::required("spec.selector"));
        return;
    };
    let selector = crate::selectors::LabelSelector::from_spec(sel);
    if selector.is_empty() {
        causes.push(Cause::invalid("spec.selector", "null", "empty selector is invalid for deployment"));
        return;
    }
    let labels = o
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default();
    if !selector.matches(&labels) {
        let labels_str = serde_json::to_string(&labels).unwrap_or_default();
        causes.push(Cause::invalid(
            "spec.template.metadata.labels",
            &labels_str,
            "`selector` does not match template `labels`",
        ));
    }
}

pub(super) fn validate(rt: &ResourceType, o: &Value, old: Option<&Value>) -> ApiResult<()> {
    let name = name_of(o).to_string();
    let mut causes = Vec::new();
    if name.is_empty() {
        causes.push(Cause::required("metadata.name"));
    } else if let Some(why) = name_problem(rt, &name) {
        causes.push(Cause::invalid("metadata.name", &name, why));
    }
    if rt.namespaced && namespace_of(o).is_empty() {
        causes.push(Cause::required("metadata.namespace"));
    }
    match rt.plural {
        "pods" => {
            if let Some(spec) = o.get("spec") {
                validate_containers(spec, "spec", &mut causes);
            } else {
                causes.push(Cause::required("spec.containers"));
            }
            if let (Some(old), Some(new_spec)) = (old, o.get("spec")) {
                // A pod's spec is immutable but for images, deadlines and added tolerations.
                let strip = |s: &Value| {
                    let mut s = s.clone();
                    for list in ["containers", "initContainers"] {
                        if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
                            for c in cs {
                                if let Some(c) = c.as_object_mut() {
                                    c.remove("image");
                                }
                            }
                        }
                    }
                    if let Some(m) = s.as_object_mut() {
                        m.remove("activeDeadlineSeconds");
                        m.remove("tolerations");
                        m.remove("nodeName");
                    }
                    s
                };
                if let Some(old_spec) = old.get("spec") {
                    if strip(old_spec) != strip(new_spec) {
                        causes.push(Cause::forbidden(
                            "spec",
                            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                        ));
                    }
                }
            }
        }
        "deployments" | "replicasets" | "statefulsets" => {
            selector_matches_template(o, &mut causes);
            match o.pointer("/spec/template/spec") {
                Some(spec) => validate_containers(spec, "spec.template.spec", &mut causes),
                None => causes.push(Cause::required("spec.template.spec.containers")),
            }
            if let Some(r) = o.pointer("/spec/replicas").and_then(Value::as_i64) {
                if r < 0 {
                    causes.push(Cause::invalid("spec.replicas", &r.to_string(), "must be greater than or equal to 0"));
                }
            }
            if let Some(old) = old {
                if old.pointer("/spec/selector") != o.pointer("/spec/selector") {
                    let sel = o.pointer("/spec/selector").map(Value::to_string).unwrap_or_default();
                    causes.push(Cause::invalid("spec.selector", &sel, "field is immutable"));
                }
            }
        }
        "services" => {
            let ty = o.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
            if ty == "ExternalName" {
                require(o, "/spec/externalName", "spec.externalName", &mut causes);
            } else if o.pointer("/spec/clusterIP").and_then(Value::as_str) != Some("None") {
                require(o, "/spec/ports", "spec.ports", &mut causes);
            }
            for (i, p) in o.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
                let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    causes.push(Cause::invalid(
                        &format!("spec.ports[{i}].port"),
                        &port.to_string(),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
            if let Some(old) = old {
                let old_ip = old.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or_default();
                let new_ip = o.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or_default();
                if !old_ip.is_empty() && old_ip != new_ip && ty != "ExternalName" {
                    // kube-apiserver carries clusterIP into clusterIPs, then refuses the list.
                    let ips = format!("[]string{{\"{new_ip}\"}}");
                    causes.push(Cause::invalid_go("spec.clusterIPs[0]", &ips, "may not change once set"));
                }
            }
        }
        "configmaps" | "secrets" => {
            if let Some(old) = old {
                if old.get("immutable") == Some(&Value::Bool(true)) {
                    for f in ["data", "binaryData", "type", "immutable"] {
                        if old.get(f) != o.get(f) {
                            causes.push(Cause::forbidden(f, "field is immutable when `immutable` is set"));
                        }
                    }
                }
            }
            for field in ["data", "binaryData"] {
                for k in o.get(field).and_then(Value::as_object).into_iter().flatten().map(|(k, _)| k) {
                    let ok = !k.is_empty()
                        && k.len() <= 253
                        && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                    if !ok {
                        causes.push(Cause::invalid(
                            &format!("{field}[{k}]"),
                            k,
                            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                        ));
                    }
                }
            }
        }
        "leases"
        | "endpoints"
        | "events"
        | "endpointslices"
        | "ingresses"
        | "namespaces"
        | "nodes"
        | "persistentvolumes"
        | "persistentvolumeclaims" => {}
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(rt, &name, causes))
    }
}
