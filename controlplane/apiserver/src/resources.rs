//! The resource types the API server serves: names, scope, storage layout, the typed
//! `k8s-openapi` struct each object must decode into, and what discovery says of them.

use k8s_openapi::api::{apps, coordination, core, discovery, networking};
use serde_json::Value;

/// A subresource served under `<resource>/<name>/<sub>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Status,
    Scale,
    Binding,
    Log,
}

impl Sub {
    pub fn name(self) -> &'static str {
        match self {
            Sub::Status => "status",
            Sub::Scale => "scale",
            Sub::Binding => "binding",
            Sub::Log => "log",
        }
    }

    pub fn parse(s: &str) -> Option<Sub> {
        [Sub::Status, Sub::Scale, Sub::Binding, Sub::Log].into_iter().find(|x| x.name() == s)
    }
}

/// Decodes a JSON object into its typed form and back: the canonical stored form. Fails
/// with the decoder's message when the JSON does not fit the type.
pub type Canonicalize = fn(Value) -> Result<Value, String>;

/// Adds the type's JSON schema (and those it refers to) to `generator`; returns its name.
pub type SchemaOf = fn(&mut schemars::SchemaGenerator) -> String;

fn schema_of<T: schemars::JsonSchema>(generator: &mut schemars::SchemaGenerator) -> String {
    let _ = generator.subschema_for::<T>();
    T::schema_name().into_owned()
}

fn canonical<T: serde::de::DeserializeOwned + serde::Serialize>(v: Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(v).map_err(|e| e.to_string())?;
    let mut out = serde_json::to_value(typed).map_err(|e| e.to_string())?;
    // ObjectMeta's lists and maps are `omitempty` in Go: an emptied one disappears.
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in ["labels", "annotations", "ownerReferences", "finalizers", "managedFields"] {
            let empty = match meta.get(field) {
                Some(Value::Array(a)) => a.is_empty(),
                Some(Value::Object(o)) => o.is_empty(),
                _ => false,
            };
            if empty {
                meta.remove(field);
            }
        }
    }
    Ok(out)
}

#[derive(Debug)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The plural, as in URLs (`pods`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Whether `kubectl get all` includes it.
    pub in_all: bool,
    pub subresources: &'static [Sub],
    /// The key segment under the storage prefix (Kubernetes' own layout: nodes live under
    /// `minions`, services under `services/specs`).
    pub storage: &'static str,
    /// Whether `metadata.generation` tracks spec changes (as kube-apiserver's strategies
    /// do for workloads and ingresses; core types such as pods and services have none).
    pub has_spec: bool,
    pub canonicalize: Canonicalize,
    pub schema: SchemaOf,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn has(&self, sub: Sub) -> bool {
        self.subresources.contains(&sub)
    }

    /// `pods`, or `deployments.apps` for the messages Kubernetes writes.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

macro_rules! resource {
    ($ty:ty, $plural:literal, $singular:literal, namespaced: $ns:literal, short: [$($short:literal),*],
     all: $all:literal, subs: [$($sub:ident),*], storage: $storage:literal, spec: $spec:literal) => {
        ResourceType {
            group: <$ty as k8s_openapi::Resource>::GROUP,
            version: <$ty as k8s_openapi::Resource>::VERSION,
            kind: <$ty as k8s_openapi::Resource>::KIND,
            plural: $plural,
            singular: $singular,
            namespaced: $ns,
            short_names: &[$($short),*],
            in_all: $all,
            subresources: &[$(Sub::$sub),*],
            storage: $storage,
            has_spec: $spec,
            canonicalize: canonical::<$ty>,
            schema: schema_of::<$ty>,
        }
    };
}

/// Every type served, in discovery order.
pub static RESOURCES: std::sync::LazyLock<Vec<ResourceType>> = std::sync::LazyLock::new(|| {
    vec![
        resource!(core::v1::Namespace, "namespaces", "namespace", namespaced: false, short: ["ns"],
            all: false, subs: [Status], storage: "namespaces", spec: false),
        resource!(core::v1::Node, "nodes", "node", namespaced: false, short: ["no"],
            all: false, subs: [Status], storage: "minions", spec: false),
        resource!(core::v1::Pod, "pods", "pod", namespaced: true, short: ["po"],
            all: true, subs: [Status, Binding, Log], storage: "pods", spec: false),
        resource!(core::v1::Service, "services", "service", namespaced: true, short: ["svc"],
            all: true, subs: [Status], storage: "services/specs", spec: false),
        resource!(core::v1::Endpoints, "endpoints", "endpoints", namespaced: true, short: ["ep"],
            all: false, subs: [], storage: "services/endpoints", spec: false),
        resource!(core::v1::ConfigMap, "configmaps", "configmap", namespaced: true, short: ["cm"],
            all: false, subs: [], storage: "configmaps", spec: false),
        resource!(core::v1::Secret, "secrets", "secret", namespaced: true, short: [],
            all: false, subs: [], storage: "secrets", spec: false),
        resource!(core::v1::PersistentVolume, "persistentvolumes", "persistentvolume", namespaced: false,
            short: ["pv"], all: false, subs: [Status], storage: "persistentvolumes", spec: false),
        resource!(core::v1::PersistentVolumeClaim, "persistentvolumeclaims", "persistentvolumeclaim",
            namespaced: true, short: ["pvc"], all: false, subs: [Status], storage: "persistentvolumeclaims",
            spec: false),
        resource!(core::v1::Event, "events", "event", namespaced: true, short: ["ev"],
            all: false, subs: [], storage: "events", spec: false),
        resource!(apps::v1::Deployment, "deployments", "deployment", namespaced: true, short: ["deploy"],
            all: true, subs: [Status, Scale], storage: "deployments", spec: true),
        resource!(apps::v1::ReplicaSet, "replicasets", "replicaset", namespaced: true, short: ["rs"],
            all: true, subs: [Status, Scale], storage: "replicasets", spec: true),
        resource!(apps::v1::StatefulSet, "statefulsets", "statefulset", namespaced: true, short: ["sts"],
            all: true, subs: [Status, Scale], storage: "statefulsets", spec: true),
        resource!(coordination::v1::Lease, "leases", "lease", namespaced: true, short: [],
            all: false, subs: [], storage: "leases", spec: false),
        resource!(discovery::v1::EndpointSlice, "endpointslices", "endpointslice", namespaced: true,
            short: [], all: false, subs: [], storage: "endpointslices", spec: false),
        resource!(networking::v1::Ingress, "ingresses", "ingress", namespaced: true, short: ["ing"],
            all: false, subs: [Status], storage: "ingress", spec: true),
    ]
});

/// The API groups, in discovery order (the core group, named "", first).
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RESOURCES.iter() {
        if !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

pub fn group_version_exists(group: &str, version: &str) -> bool {
    RESOURCES.iter().any(|r| r.group == group && r.version == version)
}
