//! Discovery documents (`/api`, `/apis`, one per group-version) and the OpenAPI v3 index
//! kubectl reads to learn that the server validates fields itself (`fieldValidation`).

use serde_json::{json, Value};

use crate::resources::{self, ResourceType, Sub, RESOURCES};

const VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }],
    })
}

pub fn api_group_list() -> Value {
    let groups: Vec<Value> = resources::groups()
        .into_iter()
        .filter(|g| !g.is_empty())
        .map(|g| {
            let gv = json!({ "groupVersion": format!("{g}/v1"), "version": "v1" });
            json!({ "name": g, "versions": [gv.clone()], "preferredVersion": gv })
        })
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

pub fn api_group(group: &str) -> Option<Value> {
    if group.is_empty() || !resources::groups().contains(&group) {
        return None;
    }
    let gv = json!({ "groupVersion": format!("{group}/v1"), "version": "v1" });
    Some(
        json!({ "kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [gv.clone()], "preferredVersion": gv }),
    )
}

/// Short names, and the `all` category for `kubectl get all`.
fn add_names(e: &mut Value, rt: &ResourceType) {
    if !rt.short_names.is_empty() {
        e["shortNames"] = json!(rt.short_names);
    }
    if rt.in_all {
        e["categories"] = json!(["all"]);
    }
}

/// What a subresource answers with (group, version, kind; empty group and version meaning
/// the resource's own) and its verbs.
fn sub_kind(rt: &ResourceType, sub: Sub) -> (&'static str, &'static str, &'static str, &'static [&'static str]) {
    match sub {
        Sub::Status => ("", "", rt.kind, &["get", "patch", "update"]),
        Sub::Scale => ("autoscaling", "v1", "Scale", &["get", "patch", "update"]),
        Sub::Binding => ("", "", "Binding", &["create"]),
        Sub::Log => ("", "", "Pod", &["get"]),
    }
}

fn sub_entry(rt: &ResourceType, sub: Sub) -> Value {
    let (group, version, kind, verbs) = sub_kind(rt, sub);
    let mut e = json!({
        "name": format!("{}/{}", rt.plural, sub.name()),
        "singularName": "",
        "namespaced": rt.namespaced,
        "kind": kind,
        "verbs": verbs,
    });
    if !group.is_empty() {
        e["group"] = json!(group);
        e["version"] = json!(version);
    }
    e
}

/// The APIResourceList of one group-version.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if !resources::group_version_exists(group, version) {
        return None;
    }
    let mut list = Vec::new();
    for rt in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        let mut e = json!({
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": VERBS,
        });
        add_names(&mut e, rt);
        list.push(e);
        for sub in rt.subresources {
            list.push(sub_entry(rt, *sub));
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list }))
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: where each group-version's document is.
pub fn openapi_index() -> Value {
    let mut paths = serde_json::Map::new();
    for g in resources::groups() {
        let p = gv_path(g, "v1");
        paths.insert(p.clone(), json!({ "serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash()) }));
    }
    json!({ "paths": paths })
}

fn hash() -> &'static str {
    // The documents change only with the binary.
    env!("CARGO_PKG_VERSION")
}

/// The documents, built once: schemas are generated from the types.
static OPENAPI: std::sync::LazyLock<std::collections::HashMap<(String, String), Value>> =
    std::sync::LazyLock::new(|| {
        let mut docs = std::collections::HashMap::new();
        for r in RESOURCES.iter() {
            docs.entry((r.group.to_string(), r.version.to_string()))
                .or_insert_with(|| build_openapi_document(r.group, r.version));
        }
        docs
    });

/// One group-version's OpenAPI v3 document.
pub fn openapi_document(group: &str, version: &str) -> Option<Value> {
    OPENAPI.get(&(group.to_string(), version.to_string())).cloned()
}

/// The item paths with their operations, PATCH tagged with the group-version-kind and the
/// `fieldValidation` parameter (kubectl looks for it before trusting the server to
/// validate), and the JSON schemas of the types, each kind's tagged with its
/// group-version-kind (what `kubectl explain` looks for).
fn build_openapi_document(group: &str, version: &str) -> Value {
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let mut kinds = Vec::new();
    for rt in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        kinds.push(((rt.schema)(&mut generator), rt));
    }
    let mut schemas = generator.take_definitions(true);
    for (name, rt) in kinds {
        if let Some(Value::Object(s)) = schemas.get_mut(&name) {
            s.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{ "group": rt.group, "version": rt.version, "kind": rt.kind }]),
            );
        }
    }
    let mut paths = serde_json::Map::new();
    for rt in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        let base = format!("/{}", gv_path(group, version));
        let item = if rt.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", rt.plural)
        } else {
            format!("{base}/{}/{{name}}", rt.plural)
        };
        let gvk = json!({ "group": rt.group, "version": rt.version, "kind": rt.kind });
        let params = json!([
            { "name": "dryRun", "in": "query", "schema": { "type": "string" } },
            { "name": "fieldManager", "in": "query", "schema": { "type": "string" } },
            { "name": "fieldValidation", "in": "query", "schema": { "type": "string" } },
            { "name": "force", "in": "query", "schema": { "type": "boolean" } },
        ]);
        let op = |action: &str| {
            json!({
                "operationId": format!("{action}{}", rt.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "responses": { "200": { "description": "OK" } },
            })
        };
        paths.insert(item, json!({ "get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete") }));
    }
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": "v1.32.0" },
        "paths": paths,
        "components": { "schemas": schemas },
    })
}

/// The aggregated discovery media type (`/api` and `/apis` in one request each).
pub const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the client accepts aggregated discovery v2 (client-go and kube-rs ask for it).
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p: Vec<&str> = part.split(';').map(str::trim).collect();
        p.contains(&"g=apidiscovery.k8s.io") && p.contains(&"v=v2") && p.contains(&"as=APIGroupDiscoveryList")
    })
}

fn aggregated_resource(rt: &ResourceType) -> Value {
    let kind = |group: &str, version: &str, kind: &str| json!({ "group": group, "version": version, "kind": kind });
    let subresources: Vec<Value> = rt
        .subresources
        .iter()
        .map(|sub| {
            let (group, version, k, verbs) = sub_kind(rt, *sub);
            let response = if group.is_empty() {
                kind(if *sub == Sub::Status { rt.group } else { "" }, rt.version, k)
            } else {
                kind(group, version, k)
            };
            json!({ "subresource": sub.name(), "responseKind": response, "verbs": verbs })
        })
        .collect();
    let mut r = json!({
        "resource": rt.plural,
        "responseKind": kind(rt.group, rt.version, rt.kind),
        "scope": if rt.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": rt.singular,
        "verbs": VERBS,
    });
    add_names(&mut r, rt);
    if !subresources.is_empty() {
        r["subresources"] = json!(subresources);
    }
    r
}

/// `/api` (`core` = true) or `/apis` as an APIGroupDiscoveryList.
pub fn aggregated(core: bool) -> Value {
    let items: Vec<Value> = resources::groups()
        .into_iter()
        .filter(|g| g.is_empty() == core)
        .map(|g| {
            let resources: Vec<Value> = RESOURCES.iter().filter(|r| r.group == g).map(aggregated_resource).collect();
            let mut meta = json!({ "creationTimestamp": null });
            if !g.is_empty() {
                meta["name"] = json!(g);
            }
            json!({ "metadata": meta, "versions": [{ "version": "v1", "resources": resources, "freshness": "Current" }] })
        })
        .collect();
    json!({ "kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items })
}
