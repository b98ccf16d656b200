//! Server-side `Table` output, what `kubectl get` prints: the usual columns per type, with
//! each row carrying the object's metadata (kubectl adds NAMESPACE and LABELS from it).

use serde_json::{json, Value};

use crate::resources::ResourceType;

/// Whether the client asked for `as=Table` (kubectl get does).
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p: Vec<&str> = part.split(';').map(str::trim).collect();
        p.contains(&"as=Table") && p.contains(&"g=meta.k8s.io") && (p.contains(&"v=v1") || p.contains(&"v=v1beta1"))
    })
}

/// Wants the whole object in rows (`includeObject=Object`) or only its metadata.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn parse(s: Option<&str>) -> Include {
        match s {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

fn col(name: &str, ty: &str, priority: i32, description: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
}

fn s(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn n(v: Option<&Value>) -> i64 {
    v.and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        "<none>".to_string()
    } else {
        s
    }
}

/// A duration as kubectl prints ages: `5s`, `3m2s`, `4h`, `2d3h`.
pub fn age(created: &str) -> String {
    let Ok(t) = created.parse::<jiff::Timestamp>() else { return "<unknown>".to_string() };
    let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        format!("{m}m{}s", secs % 60)
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        format!("{h}h{}m", m % 60)
    } else if d < 2 {
        format!("{h}h")
    } else if d < 8 {
        format!("{d}d{}h", h % 24)
    } else {
        format!("{d}d")
    }
}

fn containers_images(spec: Option<&Value>) -> (String, String) {
    let cs = spec.and_then(|s| s.get("containers")).and_then(Value::as_array).cloned().unwrap_or_default();
    let names: Vec<String> = cs.iter().map(|c| s(c.get("name"))).collect();
    let images: Vec<String> = cs.iter().map(|c| s(c.get("image"))).collect();
    (names.join(","), images.join(","))
}

/// The wide columns of a workload: its template's containers and images, and its selector.
fn template_columns(selector: &str) -> [Value; 3] {
    [
        col("Containers", "string", 1, "Names of each container in the template."),
        col("Images", "string", 1, "Images referenced by each container in the template."),
        col("Selector", "string", 1, selector),
    ]
}

fn template_cells(o: &Value) -> [Value; 3] {
    let (c, i) = containers_images(o.pointer("/spec/template/spec"));
    [json!(c), json!(i), json!(selector_string(o.pointer("/spec/selector")))]
}

fn selector_string(sel: Option<&Value>) -> String {
    sel.map(|s| crate::selectors::LabelSelector::from_spec(s).to_string_form()).map(or_none).unwrap_or("<none>".into())
}

fn columns_and_cells(rt: &ResourceType, o: &Value) -> (Vec<Value>, Vec<Value>) {
    let name = s(o.pointer("/metadata/name"));
    let created = age(&s(o.pointer("/metadata/creationTimestamp")));
    let name_col = col("Name", "string", 0, "Name must be unique within a namespace.");
    let age_col = col(
        "Age",
        "string",
        0,
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    );
    match rt.plural {
        "pods" => {
            let statuses =
                o.pointer("/status/containerStatuses").and_then(Value::as_array).cloned().unwrap_or_default();
            let total = o.pointer("/spec/containers").and_then(Value::as_array).map_or(0, Vec::len);
            let ready = statuses.iter().filter(|c| c.get("ready") == Some(&Value::Bool(true))).count();
            let restarts: i64 = statuses.iter().map(|c| n(c.get("restartCount"))).sum();
            let mut status = s(o.pointer("/status/phase"));
            if let Some(reason) = o.pointer("/status/reason").and_then(Value::as_str) {
                status = reason.to_string();
            }
            for c in &statuses {
                if let Some(w) = c.pointer("/state/waiting/reason").and_then(Value::as_str) {
                    status = w.to_string();
                } else if let Some(t) = c.pointer("/state/terminated/reason").and_then(Value::as_str) {
                    status = t.to_string();
                }
            }
            if o.pointer("/metadata/deletionTimestamp").is_some() {
                status = "Terminating".to_string();
            }
            (
                vec![
                    name_col,
                    col("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
                    col("Status", "string", 0, "The aggregate status of the containers in this pod."),
                    col("Restarts", "string", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
                    age_col,
                    col("IP", "string", 1, "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
                    col("Node", "string", 1, "Name of the Node this Pod is assigned to."),
                    col("Nominated Node", "string", 1, "nominatedNodeName is set when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods."),
                    col("Readiness Gates", "string", 1, "If specified, all readiness gates will be evaluated for pod readiness."),
                ],
                vec![
                    json!(name),
                    json!(format!("{ready}/{total}")),
                    json!(status),
                    json!(restarts.to_string()),
                    json!(created),
                    json!(or_none(s(o.pointer("/status/podIP")))),
                    json!(or_none(s(o.pointer("/spec/nodeName")))),
                    json!(or_none(s(o.pointer("/status/nominatedNodeName")))),
                    json!("<none>"),
                ],
            )
        }
        "deployments" => {
            let mut cols = vec![
                name_col,
                col("Ready", "string", 0, "Number of the pod with ready state"),
                col("Up-to-date", "string", 0, "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
                col("Available", "string", 0, "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
                age_col,
            ];
            cols.extend(template_columns("Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."));
            let mut cells = vec![
                json!(name),
                json!(format!("{}/{}", n(o.pointer("/status/readyReplicas")), n(o.pointer("/spec/replicas")))),
                json!(n(o.pointer("/status/updatedReplicas"))),
                json!(n(o.pointer("/status/availableReplicas"))),
                json!(created),
            ];
            cells.extend(template_cells(o));
            (cols, cells)
        }
        "replicasets" => {
            let mut cols = vec![
                name_col,
                col("Desired", "integer", 0, "Replicas is the number of desired replicas."),
                col("Current", "integer", 0, "Replicas is the most recently observed number of replicas."),
                col("Ready", "integer", 0, "The number of ready replicas for this replica set."),
                age_col,
            ];
            cols.extend(template_columns("Selector is a label query over pods that should match the replica count."));
            let mut cells = vec![
                json!(name),
                json!(n(o.pointer("/spec/replicas"))),
                json!(n(o.pointer("/status/replicas"))),
                json!(n(o.pointer("/status/readyReplicas"))),
                json!(created),
            ];
            cells.extend(template_cells(o));
            (cols, cells)
        }
        "statefulsets" => {
            let (c, i) = containers_images(o.pointer("/spec/template/spec"));
            (
                vec![
                    name_col,
                    col("Ready", "string", 0, "Number of the pod with ready state"),
                    age_col,
                    col("Containers", "string", 1, "Names of each container in the template."),
                    col("Images", "string", 1, "Images referenced by each container in the template."),
                ],
                vec![
                    json!(name),
                    json!(format!("{}/{}", n(o.pointer("/status/readyReplicas")), n(o.pointer("/spec/replicas")))),
                    json!(created),
                    json!(c),
                    json!(i),
                ],
            )
        }
        "services" => {
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| {
                    let node = p.get("nodePort").map(|np| format!(":{}", s(Some(np)))).unwrap_or_default();
                    format!("{}{node}/{}", s(p.get("port")), s(p.get("protocol")))
                })
                .collect();
            let external = o
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|i| s(i.get("ip"))).collect::<Vec<_>>().join(","))
                .filter(|s| !s.is_empty())
                .or_else(|| o.pointer("/spec/externalName").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| {
                    if s(o.pointer("/spec/type")) == "LoadBalancer" {
                        "<pending>".into()
                    } else {
                        "<none>".into()
                    }
                });
            let selector = o
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(Some(v)))).collect::<Vec<_>>().join(","))
                .map(or_none)
                .unwrap_or("<none>".into());
            (
                vec![
                    name_col,
                    col("Type", "string", 0, "type determines how the Service is exposed."),
                    col("Cluster-IP", "string", 0, "clusterIP is the IP address of the service and is usually assigned randomly."),
                    col("External-IP", "string", 0, "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
                    col("Port(s)", "string", 0, "The network ports exposed by the service."),
                    age_col,
                    col("Selector", "string", 1, "Route service traffic to pods with label keys and values matching this selector."),
                ],
                vec![
                    json!(name),
                    json!(s(o.pointer("/spec/type"))),
                    json!(or_none(s(o.pointer("/spec/clusterIP")))),
                    json!(external),
                    json!(or_none(ports.join(","))),
                    json!(created),
                    json!(selector),
                ],
            )
        }
        "configmaps" => {
            let data = o.get("data").and_then(Value::as_object).map_or(0, |m| m.len())
                + o.get("binaryData").and_then(Value::as_object).map_or(0, |m| m.len());
            (
                vec![name_col, col("Data", "integer", 0, "Number of data entries."), age_col],
                vec![json!(name), json!(data), json!(created)],
            )
        }
        "secrets" => {
            let data = o.get("data").and_then(Value::as_object).map_or(0, |m| m.len());
            (
                vec![
                    name_col,
                    col("Type", "string", 0, "The type of the secret"),
                    col("Data", "integer", 0, "Number of data entries."),
                    age_col,
                ],
                vec![json!(name), json!(s(o.get("type"))), json!(data), json!(created)],
            )
        }
        "namespaces" => (
            vec![name_col, col("Status", "string", 0, "The status of the namespace"), age_col],
            vec![json!(name), json!(s(o.pointer("/status/phase"))), json!(created)],
        ),
        "nodes" => {
            let ready = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| s(c.get("type")) == "Ready"))
                .map(|c| if s(c.get("status")) == "True" { "Ready" } else { "NotReady" })
                .unwrap_or("Unknown");
            let mut status = ready.to_string();
            if o.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<String> = o
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/").map(str::to_string))
                .collect();
            let addr = |t: &str| {
                o.pointer("/status/addresses")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find(|x| s(x.get("type")) == t))
                    .map(|x| s(x.get("address")))
                    .unwrap_or("<none>".into())
            };
            (
                vec![
                    name_col,
                    col("Status", "string", 0, "The status of the node"),
                    col("Roles", "string", 0, "The roles of the node"),
                    age_col,
                    col("Version", "string", 0, "Kubelet Version reported by the node."),
                    col("Internal-IP", "string", 1, "List of addresses reachable to the node. Queried from cloud provider, if available."),
                    col("External-IP", "string", 1, "List of addresses reachable to the node. Queried from cloud provider, if available."),
                    col("OS-Image", "string", 1, "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
                    col("Kernel-Version", "string", 1, "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
                    col("Container-Runtime", "string", 1, "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
                ],
                vec![
                    json!(name),
                    json!(status),
                    json!(or_none(roles.join(","))),
                    json!(created),
                    json!(s(o.pointer("/status/nodeInfo/kubeletVersion"))),
                    json!(addr("InternalIP")),
                    json!(addr("ExternalIP")),
                    json!(or_none(s(o.pointer("/status/nodeInfo/osImage")))),
                    json!(or_none(s(o.pointer("/status/nodeInfo/kernelVersion")))),
                    json!(or_none(s(o.pointer("/status/nodeInfo/containerRuntimeVersion")))),
                ],
            )
        }
        "endpoints" => {
            let eps: Vec<String> = o
                .get("subsets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|ss| {
                    let ports: Vec<String> = ss
                        .get("ports")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|p| s(p.get("port")))
                        .collect();
                    let ips: Vec<String> = ss
                        .get("addresses")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|a| s(a.get("ip")))
                        .collect();
                    ips.into_iter()
                        .flat_map(move |ip| {
                            let ports = ports.clone();
                            if ports.is_empty() {
                                vec![ip]
                            } else {
                                ports.into_iter().map(|p| format!("{ip}:{p}")).collect()
                            }
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            (
                vec![name_col, col("Endpoints", "string", 0, "Endpoints of the service"), age_col],
                vec![json!(name), json!(or_none(eps.join(","))), json!(created)],
            )
        }
        "events" => (
            vec![
                col("Last Seen", "string", 0, "Time of the last occurrence"),
                col("Type", "string", 0, "Type of this event"),
                col(
                    "Reason",
                    "string",
                    0,
                    "Short, machine understandable string that gives the reason for this event being generated.",
                ),
                col("Object", "string", 0, "The object that this event is about."),
                col("Message", "string", 0, "A human-readable description of the status of this operation."),
            ],
            vec![
                json!(age(&s(o
                    .get("lastTimestamp")
                    .or(o.get("eventTime"))
                    .or(o.pointer("/metadata/creationTimestamp"))))),
                json!(s(o.get("type"))),
                json!(s(o.get("reason"))),
                json!(format!(
                    "{}/{}",
                    s(o.pointer("/involvedObject/kind")).to_lowercase(),
                    s(o.pointer("/involvedObject/name"))
                )),
                json!(s(o.get("message"))),
            ],
        ),
        "leases" => (
            vec![name_col, col("Holder", "string", 0, "The holder of the lease"), age_col],
            vec![json!(name), json!(s(o.pointer("/spec/holderIdentity"))), json!(created)],
        ),
        "persistentvolumeclaims" => (
            vec![
                name_col,
                col("Status", "string", 0, ""),
                col("Volume", "string", 0, ""),
                col("Capacity", "string", 0, ""),
                age_col,
            ],
            vec![
                json!(name),
                json!(s(o.pointer("/status/phase"))),
                json!(s(o.pointer("/spec/volumeName"))),
                json!(s(o.pointer("/status/capacity/storage"))),
                json!(created),
            ],
        ),
        _ => (vec![name_col, age_col], vec![json!(name), json!(created)]),
    }
}

fn row(rt: &ResourceType, o: &Value, include: Include) -> (Vec<Value>, Value) {
    let (cols, cells) = columns_and_cells(rt, o);
    let object = match include {
        Include::None => Value::Null,
        Include::Object => o.clone(),
        Include::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
    };
    let mut r = json!({ "cells": cells });
    if !object.is_null() {
        r["object"] = object;
    }
    (cols, r)
}

/// A Table of `objects`; `metadata` carries the list's resourceVersion and continue token.
pub fn table(rt: &ResourceType, objects: &[Value], metadata: Value, include: Include) -> Value {
    let mut columns = columns_and_cells(rt, &json!({})).0;
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let (c, r) = row(rt, o, include);
            columns = c;
            r
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}
