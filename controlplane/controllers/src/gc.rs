//! The garbage collector: what kube-controller-manager's garbage collector does for the
//! `propagationPolicy` of a delete, as a plain API client.
//!
//! - Background (the default): once an object is gone, its dependents (objects whose
//!   `ownerReferences` name it by uid) are deleted when none of their owners is left.
//! - Orphan: the API server sets `deletionTimestamp` and the `orphan` finalizer; the
//!   collector removes the owner's reference from every dependent, then the finalizer,
//!   and the API server deletes the owner.
//! - Foreground: the API server sets the `foregroundDeletion` finalizer; the collector
//!   deletes the dependents (foreground again for those that block their owner's
//!   deletion) and removes the finalizer once no dependent with `blockOwnerDeletion` is
//!   left.
//!
//! It discovers every resource that can be listed, watched and deleted, watches each one,
//! and keeps only a graph of uids, owners and finalizers. Changes queue the uids they
//! concern; a worker looks at each one against the graph, and before deleting anything
//! because its owner is missing it asks the API server for that owner by name (its watch
//! may simply not have seen the owner yet), as the real collector does. A resync every
//! [`RESYNC`] queues everything again, so a failed step is retried.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::discovery::{verbs, ApiResource, Discovery, Scope};
use kube::runtime::watcher;
use kube::Client;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::mpsc;

/// The API server's finalizer names for Orphan and Foreground deletion.
pub const ORPHAN: &str = "orphan";
pub const FOREGROUND: &str = "foregroundDeletion";

/// How often every object with owners or a deletion finalizer is looked at again.
const RESYNC: Duration = Duration::from_secs(30);
/// How long a uid waits before it is looked at again after a failed step.
const RETRY: Duration = Duration::from_secs(1);

/// A resource the collector watches.
struct Kind {
    ar: ApiResource,
    namespaced: bool,
}

/// What the collector remembers of one object.
#[derive(Clone)]
struct Node {
    kind: usize,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    finalizers: Vec<String>,
    deleting: bool,
}

impl Node {
    fn waits_for(&self, finalizer: &str) -> bool {
        self.deleting && self.finalizers.iter().any(|f| f == finalizer)
    }
}

/// Objects by uid, and who names each uid as an owner.
#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    /// Records `obj`; returns the uids to look at because of it.
    fn upsert(&mut self, kind: usize, obj: &DynamicObject) -> Vec<String> {
        let meta = &obj.metadata;
        let Some(uid) = meta.uid.clone() else { return Vec::new() };
        let node = Node {
            kind,
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
            owners: meta.owner_references.clone().unwrap_or_default(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
        };
        let mut touched = vec![uid.clone()];
        if let Some(old) = self.nodes.remove(&uid) {
            for o in &old.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(&uid);
                }
                touched.push(o.uid.clone());
            }
        }
        for o in &node.owners {
            self.dependents.entry(o.uid.clone()).or_default().insert(uid.clone());
            touched.push(o.uid.clone());
        }
        self.nodes.insert(uid, node);
        touched
    }

    /// Forgets the object with `uid`; returns its owners and its dependents.
    fn remove(&mut self, uid: &str) -> Vec<String> {
        let mut touched = Vec::new();
        if let Some(old) = self.nodes.remove(uid) {
            for o in &old.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(uid);
                    if d.is_empty() && !self.nodes.contains_key(&o.uid) {
                        self.dependents.remove(&o.uid);
                    }
                }
                touched.push(o.uid.clone());
            }
        }
        touched.extend(self.dependents.get(uid).into_iter().flatten().cloned());
        touched
    }

    /// The dependents of `uid` still known, with whether each blocks the owner's deletion.
    fn dependents_of(&self, uid: &str) -> Vec<(String, Node, bool)> {
        let mut out = Vec::new();
        for d in self.dependents.get(uid).into_iter().flatten() {
            if let Some(n) = self.nodes.get(d) {
                let blocks = n.owners.iter().any(|o| o.uid == uid && o.block_owner_deletion.unwrap_or(false));
                out.push((d.clone(), n.clone(), blocks));
            }
        }
        out
    }
}

struct Collector {
    client: Client,
    kinds: Vec<Kind>,
    /// (group, kind) → index in `kinds`, to find an owner reference's resource.
    by_kind: HashMap<(String, String), usize>,
    graph: Mutex<Graph>,
    queue: mpsc::UnboundedSender<String>,
    queued: Mutex<HashSet<String>>,
}

/// Runs the collector until the process stops; discovery is retried until the API server
/// answers.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let kinds = loop {
        match discover(&client).await {
            Ok(k) => break k,
            Err(e) => {
                tracing::info!(error = %e, "garbage collector: discovery failed; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    tracing::info!(resources = kinds.len(), "garbage collector started");
    let by_kind = kinds.iter().enumerate().map(|(i, k)| ((k.ar.group.clone(), k.ar.kind.clone()), i)).collect();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let gc =
        Arc::new(Collector { client, kinds, by_kind, graph: Mutex::default(), queue: tx, queued: Mutex::default() });
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..gc.kinds.len() {
        tasks.spawn(gc.clone().watch(i));
    }
    tasks.spawn(gc.clone().resync());
    while let Some(uid) = rx.recv().await {
        gc.queued.lock().remove(&uid);
        if let Err(e) = gc.process(&uid).await {
            tracing::debug!(uid, error = %e, "garbage collector: will retry");
            let gc = gc.clone();
            tokio::spawn(async move {
                tokio::time::sleep(RETRY).await;
                gc.enqueue(uid);
            });
        }
    }
    Ok(())
}

/// Every resource that can be listed, watched and deleted.
async fn discover(client: &Client) -> anyhow::Result<Vec<Kind>> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut kinds = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if [verbs::LIST, verbs::WATCH, verbs::DELETE].iter().all(|v| caps.supports_operation(v)) {
                kinds.push(Kind { ar, namespaced: caps.scope == Scope::Namespaced });
            }
        }
    }
    Ok(kinds)
}

/// The group of an `apiVersion` ("apps/v1" → "apps", "v1" → "").
fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl Collector {
    fn enqueue(&self, uid: String) {
        if self.queued.lock().insert(uid.clone()) {
            let _ = self.queue.send(uid);
        }
    }

    fn api(&self, kind: usize, namespace: Option<&str>) -> Api<DynamicObject> {
        let k = &self.kinds[kind];
        match namespace.filter(|_| k.namespaced) {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &k.ar),
            None => Api::all_with(self.client.clone(), &k.ar),
        }
    }

    /// Follows one resource, keeping the graph in step (a relist drops what vanished).
    async fn watch(self: Arc<Self>, kind: usize) {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &self.kinds[kind].ar);
        let mut events = watcher(api, watcher::Config::default()).boxed();
        let mut listed: HashSet<String> = HashSet::new();
        while let Some(event) = events.next().await {
            let touched = match event {
                Ok(watcher::Event::Apply(o)) => self.graph.lock().upsert(kind, &o),
                Ok(watcher::Event::Delete(o)) => match o.metadata.uid.as_deref() {
                    Some(uid) => self.graph.lock().remove(uid),
                    None => Vec::new(),
                },
                Ok(watcher::Event::Init) => {
                    listed.clear();
                    Vec::new()
                }
                Ok(watcher::Event::InitApply(o)) => {
                    listed.extend(o.metadata.uid.clone());
                    self.graph.lock().upsert(kind, &o)
                }
                Ok(watcher::Event::InitDone) => {
                    let mut g = self.graph.lock();
                    let gone: Vec<String> = g
                        .nodes
                        .iter()
                        .filter(|(u, n)| n.kind == kind && !listed.contains(*u))
                        .map(|(u, _)| u.clone())
                        .collect();
                    gone.iter().flat_map(|u| g.remove(u)).collect()
                }
                Err(e) => {
                    tracing::debug!(resource = %self.kinds[kind].ar.plural, error = %e, "garbage collector watch");
                    tokio::time::sleep(RETRY).await;
                    Vec::new()
                }
            };
            for uid in touched {
                self.enqueue(uid);
            }
        }
    }

    async fn resync(self: Arc<Self>) {
        loop {
            tokio::time::sleep(RESYNC).await;
            let uids: Vec<String> = {
                let g = self.graph.lock();
                g.nodes
                    .iter()
                    .filter(|(_, n)| !n.owners.is_empty() || n.waits_for(ORPHAN) || n.waits_for(FOREGROUND))
                    .map(|(u, _)| u.clone())
                    .collect()
            };
            for uid in uids {
                self.enqueue(uid);
            }
        }
    }

    /// Looks at one object: finishes an Orphan or Foreground deletion, or deletes the object
    /// when none of its owners is left.
    async fn process(&self, uid: &str) -> Result<(), kube::Error> {
        let (node, dependents, owners) = {
            let g = self.graph.lock();
            let Some(node) = g.nodes.get(uid).cloned() else { return Ok(()) };
            let dependents = g.dependents_of(uid);
            // Owners as the graph knows them: None when not seen (maybe not there).
            let owners: Vec<(OwnerReference, Option<Node>)> =
                node.owners.iter().map(|o| (o.clone(), g.nodes.get(&o.uid).cloned())).collect();
            (node, dependents, owners)
        };
        if node.waits_for(ORPHAN) {
            for (_, d, _) in &dependents {
                self.drop_owner_refs(d, &[uid.to_string()]).await?;
            }
            return self.drop_finalizer(&node, ORPHAN).await;
        }
        if node.waits_for(FOREGROUND) {
            let mut blocked = false;
            for (duid, d, blocks) in &dependents {
                blocked |= *blocks;
                if !d.deleting {
                    let policy = if *blocks { PropagationPolicy::Foreground } else { PropagationPolicy::Background };
                    self.delete(duid, d, policy).await?;
                }
            }
            if !blocked {
                self.drop_finalizer(&node, FOREGROUND).await?;
            }
            return Ok(());
        }
        if owners.is_empty() || node.deleting {
            return Ok(());
        }
        let mut absent = Vec::new();
        let mut present = false;
        for (o, seen) in &owners {
            match seen {
                Some(_) => present = true,
                None if self.owner_absent(&node, o).await? => absent.push(o.uid.clone()),
                None => present = true,
            }
        }
        if !present {
            tracing::info!(
                resource = %self.kinds[node.kind].ar.plural,
                namespace = node.namespace.as_deref().unwrap_or(""),
                name = %node.name,
                "garbage collector: deleting an object whose owners are gone"
            );
            self.delete(uid, &node, PropagationPolicy::Background).await
        } else if !absent.is_empty() {
            self.drop_owner_refs(&node, &absent).await
        } else {
            Ok(())
        }
    }

    /// Whether the owner `o` of `dep` is really gone: asked of the API server by name (a
    /// different uid under that name is another object). An owner of a kind the collector
    /// does not know counts as present: it never deletes on a guess.
    async fn owner_absent(&self, dep: &Node, o: &OwnerReference) -> Result<bool, kube::Error> {
        let Some(&kind) = self.by_kind.get(&(group_of(&o.api_version).to_string(), o.kind.clone())) else {
            return Ok(false);
        };
        if self.kinds[kind].namespaced && dep.namespace.is_none() {
            return Ok(false);
        }
        let found = self.api(kind, dep.namespace.as_deref()).get_opt(&o.name).await?;
        Ok(found.is_none_or(|f| f.metadata.uid.as_deref() != Some(o.uid.as_str())))
    }

    async fn delete(&self, uid: &str, node: &Node, policy: PropagationPolicy) -> Result<(), kube::Error> {
        let params = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: None }),
            ..DeleteParams::default()
        };
        match self.api(node.kind, node.namespace.as_deref()).delete(&node.name, &params).await {
            Ok(_) => Ok(()),
            // Gone already, or replaced by a new object of the same name.
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes the owner references to `owners` from `node`.
    async fn drop_owner_refs(&self, node: &Node, owners: &[String]) -> Result<(), kube::Error> {
        self.shrink_meta_list(node, "ownerReferences", |m| {
            let refs = m.owner_references.as_deref().unwrap_or_default();
            (refs.len(), refs.iter().filter(|r| !owners.contains(&r.uid)).map(|r| json!(r)).collect())
        })
        .await
    }

    /// Removes `finalizer` from `node`; the API server deletes the object when it was the
    /// last one.
    async fn drop_finalizer(&self, node: &Node, finalizer: &str) -> Result<(), kube::Error> {
        self.shrink_meta_list(node, "finalizers", |m| {
            let all = m.finalizers.as_deref().unwrap_or_default();
            (all.len(), all.iter().filter(|f| *f != finalizer).map(|f| json!(f)).collect())
        })
        .await
    }

    /// Reads `node` and, if `keep` (list length, items kept) leaves fewer items in its
    /// metadata list `field`, writes
    /// the rest back with a merge patch guarded by the resourceVersion it read (null, not
    /// [], when none is left: Go omits the empty field).
    async fn shrink_meta_list(
        &self,
        node: &Node,
        field: &str,
        keep: impl Fn(&kube::api::ObjectMeta) -> (usize, Vec<serde_json::Value>),
    ) -> Result<(), kube::Error> {
        let api = self.api(node.kind, node.namespace.as_deref());
        let Some(current) = api.get_opt(&node.name).await? else { return Ok(()) };
        let (before, kept) = keep(&current.metadata);
        if kept.len() == before {
            return Ok(());
        }
        let value = if kept.is_empty() { json!(null) } else { json!(kept) };
        let patch = json!({ "metadata": { "resourceVersion": current.metadata.resource_version, field: value } });
        match api.patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(uid: &str, owners: &[(&str, bool)]) -> DynamicObject {
        let refs: Vec<serde_json::Value> = owners
            .iter()
            .map(|(u, block)| json!({"apiVersion": "v1", "kind": "ConfigMap", "name": u, "uid": u, "blockOwnerDeletion": block}))
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": uid, "namespace": "default", "uid": uid, "ownerReferences": refs },
        }))
        .expect("object")
    }

    #[test]
    fn the_graph_tracks_dependents_through_changes_and_removal() {
        let mut g = Graph::default();
        g.upsert(0, &obj("owner", &[]));
        let touched = g.upsert(0, &obj("dep", &[("owner", true)]));
        assert_eq!(touched, vec!["dep".to_string(), "owner".to_string()]);
        let deps = g.dependents_of("owner");
        assert_eq!(deps.len(), 1);
        assert!(deps[0].2, "blockOwnerDeletion is seen");
        // The dependent drops its owner reference: the owner has no dependents left.
        let touched = g.upsert(0, &obj("dep", &[]));
        assert!(touched.contains(&"owner".to_string()));
        assert!(g.dependents_of("owner").is_empty());
        // Removing an owner reports the dependents that named it.
        g.upsert(0, &obj("dep", &[("owner", false)]));
        assert_eq!(g.remove("owner"), vec!["dep".to_string()]);
        assert_eq!(g.remove("dep"), vec!["owner".to_string()]);
        assert!(g.nodes.is_empty() && g.dependents.is_empty());
    }

    #[test]
    fn owner_groups_come_from_api_versions() {
        assert_eq!(group_of("v1"), "");
        assert_eq!(group_of("apps/v1"), "apps");
        assert_eq!(group_of("networking.k8s.io/v1"), "networking.k8s.io");
    }
}
