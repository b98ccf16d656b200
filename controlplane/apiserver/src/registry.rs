//! The write verbs over the store: create (also by server-side apply), update, patch,
//! delete, deletecollection, and the scale and binding subresources, each a Txn guarded on
//! the object's mod_revision and retried on a fresh read where Kubernetes retries.

use serde_json::{json, Value};

use crate::objects;
use crate::patch::{self, PatchType};
use crate::resources::{self, ResourceType, Sub};
use crate::selectors::LabelSelector;
use crate::server::{get_object, Api, Filter, Query, Target, Write};
use crate::status::{ApiError, ApiResult};
use crate::storage::{Stored, WriteError};

/// How many times a patch or a status write is retried when the object changed under it.
const RETRIES: usize = 16;

async fn check_namespace(api: &Api, t: &Target) -> ApiResult<()> {
    let Some(ns) = &t.namespace else { return Ok(()) };
    let Some(nsrt) = resources::find("", "v1", "namespaces") else { return Ok(()) };
    match api.storage.get(&api.key(nsrt, None, ns)).await? {
        None => Err(ApiError::not_found(nsrt, ns)),
        Some(s) if s.object.pointer("/metadata/deletionTimestamp").is_some() => Err(ApiError::forbidden(format!(
            "unable to create new content in namespace {ns} because it is being terminated"
        ))),
        Some(_) => Ok(()),
    }
}

fn write_error(rt: &ResourceType, name: &str, e: WriteError, creating: bool) -> ApiError {
    match e {
        WriteError::Changed(Some(_)) if creating => ApiError::already_exists(rt, name),
        WriteError::Changed(None) if !creating => ApiError::not_found(rt, name),
        WriteError::Changed(_) => ApiError::conflict(rt, name),
        WriteError::Api(e) => e,
    }
}

pub async fn create(api: &Api, t: &Target, body: Value, w: &Write<'_>) -> ApiResult<(Value, Vec<String>)> {
    create_applied(api, t, body, w, None).await
}

/// Creates an object; `applied` is the configuration of a server-side apply that creates it.
async fn create_applied(
    api: &Api,
    t: &Target,
    body: Value,
    w: &Write<'_>,
    applied: Option<(&Value, bool)>,
) -> ApiResult<(Value, Vec<String>)> {
    let (fv, dry_run) = (w.fv, w.dry_run);
    let mut body = body;
    objects::check_type(t.rt, &mut body)?;
    let (decoded, warnings) = objects::decode(t.rt, body, fv)?;
    let mut obj = objects::for_create(t.rt, t.namespace.as_deref(), decoded)?;
    let api_version = t.rt.api_version();
    match applied {
        Some((config, force)) => {
            obj = crate::managed::apply(&json!({}), obj, config, w.manager, &api_version, force)
                .map_err(|c| apply_conflict(t.rt, objects::name_of(config), &c))?;
        }
        None => crate::managed::update(None, &mut obj, w.manager, &api_version, None),
    }
    check_namespace(api, t).await?;
    let name = objects::name_of(&obj).to_string();
    let ns = t.rt.namespaced.then(|| objects::namespace_of(&obj).to_string());
    let key = api.key(t.rt, ns.as_deref(), &name);
    if dry_run {
        return Ok((obj, warnings));
    }
    let allocated = if t.rt.plural == "services" { allocate_service(api, &mut obj, None).await? } else { Vec::new() };
    match api.storage.create(&key, &obj).await {
        Ok(rev) => {
            crate::storage::set_resource_version(&mut obj, rev);
            Ok((obj, warnings))
        }
        Err(e) => {
            release(api, &allocated).await;
            Err(write_error(t.rt, &name, e, true))
        }
    }
}

/// Allocates the ClusterIP and NodePorts a service needs and does not have yet (keeping
/// those of `old`); returns what it allocated, to release on failure.
async fn allocate_service(api: &Api, svc: &mut Value, old: Option<&Value>) -> ApiResult<Vec<(&'static str, String)>> {
    let name = format!("{}/{}", objects::namespace_of(svc), objects::name_of(svc));
    let mut got = Vec::new();
    let ty = svc.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    if ty == "ExternalName" {
        return Ok(got);
    }
    let old_ip = old.and_then(|o| o.pointer("/spec/clusterIP")).and_then(Value::as_str).map(str::to_string);
    let wanted = svc.pointer("/spec/clusterIP").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let ip = match (wanted, old_ip) {
        (Some(ip), _) if ip == "None" => ip,
        (Some(ip), Some(old)) if ip == old => ip,
        (None, Some(old)) => old,
        (wanted, _) => {
            let ip = api.alloc.cluster_ip(&name, wanted.as_deref()).await?;
            got.push(("clusterips", ip.clone()));
            ip
        }
    };
    svc["spec"]["clusterIP"] = json!(ip);
    svc["spec"]["clusterIPs"] = json!([ip]);
    if ty == "NodePort" || ty == "LoadBalancer" {
        let old_ports: Vec<Value> =
            old.and_then(|o| o.pointer("/spec/ports")).and_then(Value::as_array).cloned().unwrap_or_default();
        let ports = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut);
        for p in ports.into_iter().flatten() {
            let wanted = p.get("nodePort").and_then(Value::as_i64);
            let previous = old_ports
                .iter()
                .find(|o| o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol"))
                .and_then(|o| o.get("nodePort"))
                .and_then(Value::as_i64);
            let port = match (wanted, previous) {
                (Some(w), Some(prev)) if w == prev => w,
                (None, Some(prev)) => prev,
                (w, _) => match api.alloc.node_port(&name, w).await {
                    Ok(port) => {
                        got.push(("nodeports", port.to_string()));
                        port
                    }
                    Err(e) => {
                        release(api, &got).await;
                        return Err(e);
                    }
                },
            };
            p["nodePort"] = json!(port);
        }
    }
    Ok(got)
}

async fn release(api: &Api, allocated: &[(&'static str, String)]) {
    for (kind, value) in allocated {
        if let Err(e) = api.alloc.release(kind, value).await {
            tracing::warn!("could not release {kind} {value}: {}", e.message);
        }
    }
}

async fn release_service(api: &Api, svc: &Value) {
    let mut got = Vec::new();
    if let Some(ip) =
        svc.pointer("/spec/clusterIP").and_then(Value::as_str).filter(|ip| *ip != "None" && !ip.is_empty())
    {
        got.push(("clusterips", ip.to_string()));
    }
    for p in svc.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
        if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
            got.push(("nodeports", np.to_string()));
        }
    }
    release(api, &got).await;
}

/// Writes an update of `old`: a service's ClusterIP and NodePorts are allocated first and
/// released again if the write does not happen.
async fn commit(
    api: &Api,
    t: &Target,
    key: &str,
    old: &Stored,
    mut new: Value,
    sub: Option<Sub>,
) -> Result<Value, WriteError> {
    let allocated = if t.rt.plural == "services" && sub.is_none() {
        allocate_service(api, &mut new, Some(&old.object)).await.map_err(WriteError::Api)?
    } else {
        Vec::new()
    };
    let written = write_over(api, t, key, old, new).await;
    if written.is_err() {
        release(api, &allocated).await;
    }
    written
}

/// Writes `new` over `old` if `old` is still current; finishes a deletion whose last
/// finalizer is gone.
async fn write_over(api: &Api, t: &Target, key: &str, old: &Stored, mut new: Value) -> Result<Value, WriteError> {
    let finalizing = new.pointer("/metadata/deletionTimestamp").is_some()
        && new.pointer("/metadata/finalizers").and_then(Value::as_array).is_none_or(Vec::is_empty);
    if finalizing {
        let rev = api.storage.delete(key, old.revision).await?;
        crate::storage::set_resource_version(&mut new, rev);
        if t.rt.plural == "services" {
            release_service(api, &new).await;
        }
        return Ok(new);
    }
    let rev = api.storage.update(key, old.revision, &new).await?;
    crate::storage::set_resource_version(&mut new, rev);
    Ok(new)
}

pub(crate) async fn update(
    api: &Api,
    t: &Target,
    name: &str,
    mut body: Value,
    sub: Option<Sub>,
    w: &Write<'_>,
) -> ApiResult<(Value, Vec<String>)> {
    let (fv, dry_run) = (w.fv, w.dry_run);
    if sub == Some(Sub::Scale) {
        let replicas = body.pointer("/spec/replicas").and_then(Value::as_i64);
        let rv = body.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_string);
        let obj = set_replicas(api, t, name, replicas, rv, dry_run).await?;
        return Ok((scale_of(&obj), Vec::new()));
    }
    objects::check_type(t.rt, &mut body)?;
    if objects::name_of(&body) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            objects::name_of(&body)
        )));
    }
    let expected: Option<i64> = match body.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
        None | Some("") => None,
        Some(rv) => Some(rv.parse().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?),
    };
    let (decoded, warnings) = objects::decode(t.rt, body, fv)?;
    let key = api.key(t.rt, t.namespace.as_deref(), name);
    for _ in 0..RETRIES {
        let old = get_object(api, t, name).await?;
        if expected.is_some_and(|e| e != old.revision) {
            return Err(ApiError::conflict(t.rt, name));
        }
        let mut new = objects::for_update(t.rt, &old.object, decoded.clone(), sub)?;
        let subresource = sub.map(Sub::name);
        crate::managed::update(Some(&old.object), &mut new, w.manager, &t.rt.api_version(), subresource);
        if dry_run {
            return Ok((new, warnings));
        }
        match commit(api, t, &key, &old, new, sub).await {
            Ok(v) => return Ok((v, warnings)),
            Err(WriteError::Changed(_)) if expected.is_none() => continue,
            Err(e) => return Err(write_error(t.rt, name, e, false)),
        }
    }
    Err(ApiError::conflict(t.rt, name))
}

pub fn scale_of(o: &Value) -> Value {
    let selector =
        o.pointer("/spec/selector").map(|s| LabelSelector::from_spec(s).to_string_form()).unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": objects::name_of(o),
            "namespace": objects::namespace_of(o),
            "uid": o.pointer("/metadata/uid"),
            "resourceVersion": o.pointer("/metadata/resourceVersion"),
            "creationTimestamp": o.pointer("/metadata/creationTimestamp"),
        },
        "spec": { "replicas": o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0) },
        "status": {
            "replicas": o.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

pub(crate) async fn set_replicas(
    api: &Api,
    t: &Target,
    name: &str,
    replicas: Option<i64>,
    rv: Option<String>,
    dry_run: bool,
) -> ApiResult<Value> {
    let replicas = replicas.unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::unprocessable(format!(
            "Scale.autoscaling \"{name}\" is invalid: spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
        )));
    }
    let key = api.key(t.rt, t.namespace.as_deref(), name);
    for _ in 0..RETRIES {
        let old = get_object(api, t, name).await?;
        if rv.as_deref().is_some_and(|rv| !rv.is_empty() && rv != old.revision.to_string()) {
            return Err(ApiError::conflict(t.rt, name));
        }
        let mut new = old.object.clone();
        new["spec"]["replicas"] = json!(replicas);
        let new = objects::for_update(t.rt, &old.object, new, None)?;
        if dry_run {
            return Ok(new);
        }
        match write_over(api, t, &key, &old, new).await {
            Ok(v) => return Ok(v),
            Err(WriteError::Changed(_)) if rv.is_none() => continue,
            Err(e) => return Err(write_error(t.rt, name, e, false)),
        }
    }
    Err(ApiError::conflict(t.rt, name))
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn patch_object(
    api: &Api,
    t: &Target,
    name: &str,
    kind: PatchType,
    body: &[u8],
    sub: Option<Sub>,
    force: bool,
    w: &Write<'_>,
) -> ApiResult<(Value, bool)> {
    let (fv, dry_run) = (w.fv, w.dry_run);
    let config: Option<Value> = if kind == PatchType::Apply {
        Some(serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?)
    } else {
        None
    };
    if kind == PatchType::Apply && w.manager.is_empty() {
        return Err(ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    let key = api.key(t.rt, t.namespace.as_deref(), name);
    for _ in 0..RETRIES {
        let old = match api.storage.get(&key).await? {
            Some(o) => o,
            None if kind == PatchType::Apply && sub.is_none() => {
                let mut applied = config.clone().unwrap_or_default();
                objects::check_type(t.rt, &mut applied)?;
                let cfg = config.as_ref().unwrap_or(&applied);
                match create_applied(api, t, applied.clone(), w, Some((cfg, force))).await {
                    Ok((obj, _)) => return Ok((obj, true)),
                    Err(e) if e.reason == "AlreadyExists" => continue,
                    Err(e) => return Err(e),
                }
            }
            None => return Err(ApiError::not_found(t.rt, name)),
        };
        let base = if sub == Some(Sub::Scale) { scale_of(&old.object) } else { old.object.clone() };
        let patched = patch::apply(&base, kind, body)?;
        let precondition = patched
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|rv| *rv != old.revision.to_string())
            .map(str::to_string);
        if precondition.is_some() {
            return Err(ApiError::conflict(t.rt, name));
        }
        if sub == Some(Sub::Scale) {
            let replicas = patched.pointer("/spec/replicas").and_then(Value::as_i64);
            let obj = set_replicas(api, t, name, replicas, Some(old.revision.to_string()), dry_run).await?;
            return Ok((scale_of(&obj), false));
        }
        let mut patched = patched;
        objects::check_type(t.rt, &mut patched)?;
        let (decoded, _) = objects::decode(t.rt, patched, fv)?;
        let mut new = objects::for_update(t.rt, &old.object, decoded, sub)?;
        let api_version = t.rt.api_version();
        match &config {
            Some(c) => {
                new = crate::managed::apply(&old.object, new, c, w.manager, &api_version, force)
                    .map_err(|e| apply_conflict(t.rt, name, &e))?;
            }
            None => crate::managed::update(Some(&old.object), &mut new, w.manager, &api_version, sub.map(Sub::name)),
        }
        if dry_run {
            return Ok((new, false));
        }
        match commit(api, t, &key, &old, new, sub).await {
            Ok(v) => return Ok((v, false)),
            Err(WriteError::Changed(_)) => continue,
            Err(e) => return Err(write_error(t.rt, name, e, false)),
        }
    }
    Err(ApiError::conflict(t.rt, name))
}

fn apply_conflict(rt: &ResourceType, name: &str, c: &crate::managed::Conflicts) -> ApiError {
    let mut e = ApiError::conflict_msg(rt, name, "");
    e.message = c.message();
    if let Some(d) = e.details.as_mut() {
        d["causes"] = c.causes();
    }
    e
}

fn delete_option<'a>(opts: &'a Value, q: &'a Query, field: &str) -> Option<String> {
    q.get(field).cloned().or_else(|| match opts.get(field) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::Bool(b)) => Some(b.to_string()),
        _ => None,
    })
}

/// The garbage collector's finalizers (kube-apiserver's names): the collector removes the
/// owner references to the object from its dependents, or deletes its dependents, then
/// removes the finalizer.
pub const ORPHAN_FINALIZER: &str = "orphan";
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// Which garbage-collection finalizer a delete asks for: `None` when the options say
/// nothing (existing finalizers stay), `Some(None)` for Background, `Some(Some(f))` for
/// Orphan or Foreground. The deprecated `orphanDependents` counts as Orphan/Background.
fn gc_finalizer(opts: &Value, q: &Query) -> ApiResult<Option<Option<&'static str>>> {
    let policy = delete_option(opts, q, "propagationPolicy");
    let orphan = delete_option(opts, q, "orphanDependents");
    if policy.is_some() && orphan.is_some() {
        return Err(ApiError::unprocessable(
            "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Invalid value: \"null\": orphanDependents and deletionPropagation cannot be both set",
        ));
    }
    match (policy.as_deref(), orphan.as_deref()) {
        (Some("Orphan"), _) | (None, Some("true")) => Ok(Some(Some(ORPHAN_FINALIZER))),
        (Some("Foreground"), _) => Ok(Some(Some(FOREGROUND_FINALIZER))),
        (Some("Background"), _) | (None, Some(_)) => Ok(Some(None)),
        (Some(p), _) => Err(ApiError::bad_request(format!("DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""))),
        (None, None) => Ok(None),
    }
}

pub async fn delete(api: &Api, t: &Target, name: &str, opts: &Value, q: &Query, dry_run: bool) -> ApiResult<Value> {
    let key = api.key(t.rt, t.namespace.as_deref(), name);
    let gc = gc_finalizer(opts, q)?;
    let grace: Option<i64> = delete_option(opts, q, "gracePeriodSeconds").and_then(|g| g.parse().ok());
    for _ in 0..RETRIES {
        let old = get_object(api, t, name).await?;
        if let Some(uid) = opts.pointer("/preconditions/uid").and_then(Value::as_str) {
            if old.object.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid) {
                return Err(ApiError::conflict_msg(
                    t.rt,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        old.object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default()
                    ),
                ));
            }
        }
        if let Some(rv) = opts.pointer("/preconditions/resourceVersion").and_then(Value::as_str) {
            if rv != old.revision.to_string() {
                return Err(ApiError::conflict_msg(t.rt, name, &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}", old.revision)));
            }
        }
        let old_finalizers: Vec<Value> =
            old.object.pointer("/metadata/finalizers").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut new_finalizers = old_finalizers.clone();
        if let Some(wanted) = gc.filter(|_| t.rt.plural != "namespaces") {
            new_finalizers.retain(|f| f != ORPHAN_FINALIZER && f != FOREGROUND_FINALIZER);
            new_finalizers.extend(wanted.map(|f| json!(f)));
        }
        let finalizers = !new_finalizers.is_empty();
        let graceful_pod = t.rt.plural == "pods"
            && old.object.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty())
            && grace.unwrap_or(1) > 0
            && old
                .object
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .is_none_or(|p| p != "Succeeded" && p != "Failed");
        let is_namespace = t.rt.plural == "namespaces";
        if finalizers || graceful_pod || is_namespace {
            let deleting = old.object.pointer("/metadata/deletionTimestamp").is_some();
            if deleting && new_finalizers == old_finalizers {
                return Ok(old.object);
            }
            let mut new = old.object.clone();
            if new_finalizers != old_finalizers {
                new["metadata"]["finalizers"] = json!(new_finalizers);
            }
            if deleting {
                // A second delete only changes which garbage-collection finalizer is set.
                if dry_run {
                    return Ok(new);
                }
                match api.storage.update(&key, old.revision, &new).await {
                    Ok(rev) => {
                        crate::storage::set_resource_version(&mut new, rev);
                        return Ok(new);
                    }
                    Err(WriteError::Changed(_)) => continue,
                    Err(e) => return Err(write_error(t.rt, name, e, false)),
                }
            }
            new["metadata"]["deletionTimestamp"] = json!(objects::now());
            let g = if graceful_pod {
                grace
                    .or_else(|| old.object.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
                    .unwrap_or(30)
            } else {
                0
            };
            new["metadata"]["deletionGracePeriodSeconds"] = json!(g);
            if is_namespace {
                new["status"]["phase"] = json!("Terminating");
            }
            if dry_run {
                return Ok(new);
            }
            match api.storage.update(&key, old.revision, &new).await {
                Ok(rev) => {
                    crate::storage::set_resource_version(&mut new, rev);
                    if is_namespace {
                        let _ = api.terminating.send(name.to_string());
                    }
                    return Ok(new);
                }
                Err(WriteError::Changed(_)) => continue,
                Err(e) => return Err(write_error(t.rt, name, e, false)),
            }
        }
        if dry_run {
            return Ok(old.object);
        }
        match api.storage.delete(&key, old.revision).await {
            Ok(rev) => {
                let mut gone = old.object;
                crate::storage::set_resource_version(&mut gone, rev);
                if t.rt.plural == "services" {
                    release_service(api, &gone).await;
                }
                return Ok(gone);
            }
            Err(WriteError::Changed(_)) => continue,
            Err(e) => return Err(write_error(t.rt, name, e, false)),
        }
    }
    Err(ApiError::conflict(t.rt, name))
}

pub(crate) async fn delete_collection(api: &Api, t: &Target, q: &Query) -> ApiResult<Value> {
    let filter = Filter::from_query(t, q)?;
    let collection = api.collection_key(t.rt, t.namespace.as_deref());
    let page = api.storage.list(&collection, None, 0, 0).await?;
    let dry_run = q.get("dryRun").is_some_and(|d| d == "All");
    let mut deleted = Vec::new();
    for item in page.items.into_iter().filter(|s| filter.matches(&s.object)) {
        let name = objects::name_of(&item.object).to_string();
        let ns = t.rt.namespaced.then(|| objects::namespace_of(&item.object).to_string());
        let one = Target { rt: t.rt, namespace: ns, name: Some(name.clone()), sub: None };
        match delete(api, &one, &name, &json!({}), q, dry_run).await {
            Ok(v) => deleted.push(v),
            Err(e) if e.reason == "NotFound" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json!({
        "kind": t.rt.list_kind(),
        "apiVersion": t.rt.api_version(),
        "metadata": { "resourceVersion": page.revision.to_string() },
        "items": deleted,
    }))
}

/// `pods/<name>/binding`: assigns the pod to a node, once.
pub(crate) async fn bind(api: &Api, t: &Target, name: &str, binding: Value) -> ApiResult<Value> {
    let node = binding.pointer("/target/name").and_then(Value::as_str).unwrap_or_default().to_string();
    if node.is_empty() {
        return Err(ApiError::unprocessable(format!("Binding \"{name}\" is invalid: target.name: Required value")));
    }
    let key = api.key(t.rt, t.namespace.as_deref(), name);
    for _ in 0..RETRIES {
        let old = get_object(api, t, name).await?;
        if old.object.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::conflict_msg(t.rt, name, "pod is being deleted, cannot be assigned to a host"));
        }
        if let Some(n) = old.object.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict_msg(t.rt, name, &format!("pod {name} is already assigned to node \"{n}\"")));
        }
        let mut new = old.object.clone();
        new["spec"]["nodeName"] = json!(node);
        if let Some(ann) = binding.pointer("/metadata/annotations").and_then(Value::as_object) {
            for (k, v) in ann {
                new["metadata"]["annotations"][k] = v.clone();
            }
        }
        let cond = json!({ "type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": objects::now() });
        let mut conds: Vec<Value> =
            new.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
        conds.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
        conds.push(cond);
        new["status"]["conditions"] = json!(conds);
        match api.storage.update(&key, old.revision, &new).await {
            Ok(_) => {
                return Ok(
                    json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201 }),
                )
            }
            Err(WriteError::Changed(_)) => continue,
            Err(e) => return Err(write_error(t.rt, name, e, false)),
        }
    }
    Err(ApiError::conflict(t.rt, name))
}
