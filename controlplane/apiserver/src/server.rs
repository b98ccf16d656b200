//! The HTTP front: routing of Kubernetes REST paths to verbs, and the verbs themselves over
//! the store (get, list, create, update, patch, delete, deletecollection, and the status,
//! scale and binding subresources). Watches are in `watch.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::alloc::Allocator;
use crate::objects::{self, FieldValidation};
use crate::patch::PatchType;
use crate::registry::{bind, create, delete, delete_collection, patch_object, scale_of, update};
use crate::resources::{self, ResourceType, Sub};
use crate::selectors::{labels_of, FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult};
use crate::storage::{Storage, Stored};
use crate::table::{self, Include};
use crate::watchcache::WatchCache;
use crate::{discovery, watch};

pub struct Api {
    pub storage: Storage,
    pub prefix: String,
    pub alloc: Allocator,
    pub server_address: String,
    caches: tokio::sync::Mutex<HashMap<String, Arc<WatchCache>>>,
    /// Namespaces being deleted, for the namespace finalizer (see `lifecycle.rs`).
    pub(crate) terminating: tokio::sync::mpsc::UnboundedSender<String>,
    cache_size: usize,
    /// Cancelled when the server stops: ends open watches, which a graceful shutdown would
    /// otherwise wait for (kube-apiserver ends them too).
    pub stopping: tokio_util::sync::CancellationToken,
    /// How `pods/log` reaches node agents.
    pub kubelets: crate::logs::Kubelets,
}

pub type Shared = Arc<Api>;

/// What a request path names.
#[derive(Debug)]
pub struct Target {
    pub rt: &'static ResourceType,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<Sub>,
}

impl Api {
    pub fn new(
        storage: Storage,
        prefix: &str,
        alloc: Allocator,
        server_address: String,
        terminating: tokio::sync::mpsc::UnboundedSender<String>,
        cache_size: usize,
        kubelets: crate::logs::Kubelets,
    ) -> Api {
        Api {
            storage,
            prefix: prefix.trim_end_matches('/').to_string(),
            alloc,
            server_address,
            caches: tokio::sync::Mutex::new(HashMap::new()),
            terminating,
            cache_size,
            stopping: tokio_util::sync::CancellationToken::new(),
            kubelets,
        }
    }

    /// The key prefix of a resource type (and namespace), ending in `/`.
    pub fn collection_key(&self, rt: &ResourceType, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if rt.namespaced => format!("{}/{}/{ns}/", self.prefix, rt.storage),
            _ => format!("{}/{}/", self.prefix, rt.storage),
        }
    }

    pub fn key(&self, rt: &ResourceType, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.collection_key(rt, namespace))
    }

    /// The watch cache of a resource type, started on first use.
    pub async fn cache(&self, rt: &ResourceType) -> ApiResult<Arc<WatchCache>> {
        let prefix = self.collection_key(rt, None);
        let mut caches = self.caches.lock().await;
        if let Some(c) = caches.get(&prefix) {
            return Ok(Arc::clone(c));
        }
        let c = WatchCache::start(self.storage.clone(), prefix.clone(), self.cache_size, self.stopping.clone())
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        caches.insert(prefix, Arc::clone(&c));
        Ok(c)
    }
}

pub fn router(api: Shared) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(ready))
        .route("/api", get(api_versions))
        .route("/apis", get(api_groups))
        .route("/openapi/v3", get(|| async { Json(discovery::openapi_index()) }))
        .route("/openapi/v3/{*gv}", get(openapi_gv))
        .fallback(dispatch)
        .with_state(api)
}

async fn version() -> Json<Value> {
    Json(json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-keel",
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    }))
}

async fn health() -> &'static str {
    "ok"
}

async fn ready(State(api): State<Shared>) -> Response {
    match api.storage.revision().await {
        Ok(_) => "ok".into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("[-]etcd failed: {}", e.message)).into_response(),
    }
}

fn aggregated(core: bool) -> Response {
    let body = serde_json::to_vec(&discovery::aggregated(core)).unwrap_or_default();
    ([(header::CONTENT_TYPE, discovery::AGGREGATED_V2)], body).into_response()
}

async fn api_versions(State(api): State<Shared>, headers: HeaderMap) -> Response {
    if discovery::wants_aggregated(&accept(&headers)) {
        return aggregated(true);
    }
    Json(discovery::api_versions(&api.server_address)).into_response()
}

async fn api_groups(headers: HeaderMap) -> Response {
    if discovery::wants_aggregated(&accept(&headers)) {
        return aggregated(false);
    }
    Json(discovery::api_group_list()).into_response()
}

async fn openapi_gv(axum::extract::Path(gv): axum::extract::Path<String>) -> Response {
    let parts: Vec<&str> = gv.split('/').collect();
    let doc = match parts.as_slice() {
        ["api", v] => discovery::openapi_document("", v),
        ["apis", g, v] => discovery::openapi_document(g, v),
        _ => None,
    };
    match doc {
        Some(d) => Json(d).into_response(),
        None => ApiError::path_not_found(&gv).into_response(),
    }
}

pub type Query = HashMap<String, String>;

fn parse_query(uri: &Uri) -> Query {
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()).into_owned().collect()
}

/// Splits a resource path into its target; `Ok(None)` for a group-version document.
fn parse_path(path: &str) -> ApiResult<(String, String, Vec<String>)> {
    let segs: Vec<String> = path.trim_matches('/').split('/').map(str::to_string).collect();
    match segs.first().map(String::as_str) {
        Some("api") if segs.len() >= 2 => Ok((String::new(), segs[1].clone(), segs[2..].to_vec())),
        Some("apis") if segs.len() >= 3 => Ok((segs[1].clone(), segs[2].clone(), segs[3..].to_vec())),
        _ => Err(ApiError::path_not_found(path)),
    }
}

fn target(group: &str, version: &str, rest: &[String], path: &str) -> ApiResult<Target> {
    let nf = || ApiError::path_not_found(path);
    let lookup = |plural: &str| resources::find(group, version, plural).ok_or_else(nf);
    let sub = |s: Option<&String>| -> ApiResult<Option<Sub>> {
        match s {
            None => Ok(None),
            Some(s) => Sub::parse(s).map(Some).ok_or_else(nf),
        }
    };
    match rest {
        [ns_kw, ns, plural, tail @ ..]
            if ns_kw == "namespaces" && resources::find(group, version, plural).is_some() =>
        {
            let rt = lookup(plural)?;
            if !rt.namespaced {
                return Err(nf());
            }
            let (name, s) = match tail {
                [] => (None, None),
                [name] => (Some(name.clone()), None),
                [name, s] => (Some(name.clone()), sub(Some(s))?),
                _ => return Err(nf()),
            };
            if let Some(s) = s {
                if !rt.has(s) {
                    return Err(nf());
                }
            }
            Ok(Target { rt, namespace: Some(ns.clone()), name, sub: s })
        }
        [plural, tail @ ..] => {
            let rt = lookup(plural)?;
            let (name, s) = match tail {
                [] => (None, None),
                [name] if !rt.namespaced => (Some(name.clone()), None),
                [name, s] if !rt.namespaced => (Some(name.clone()), sub(Some(s))?),
                _ => return Err(nf()),
            };
            if let Some(s) = s {
                if !(rt.has(s) || rt.plural == "namespaces" && s == Sub::Status) {
                    return Err(nf());
                }
            }
            Ok(Target { rt, namespace: None, name, sub: s })
        }
        [] => Err(nf()),
    }
}

/// Every resource request lands here.
async fn dispatch(State(api): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let q = parse_query(&uri);
    let result = async {
        let (group, version, rest) = parse_path(&path)?;
        if rest.is_empty() {
            if method != Method::GET {
                return Err(ApiError::method_not_allowed(format!("{method} is not allowed on {path}")));
            }
            return discovery::resource_list(&group, &version)
                .map(|d| Json(d).into_response())
                .ok_or_else(|| ApiError::path_not_found(&path));
        }
        let t = target(&group, &version, &rest, &path)?;
        handle(&api, method, t, &q, &headers, body).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// How a write is made: validation, dry run, and the field manager it is recorded under.
pub struct Write<'a> {
    pub fv: FieldValidation,
    pub dry_run: bool,
    pub manager: &'a str,
}

/// `fieldManager`, or as kube-apiserver derives it, the User-Agent up to its first `/`.
fn field_manager(q: &Query, headers: &HeaderMap) -> String {
    if let Some(m) = q.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    let ua = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("unknown");
    ua.split('/').next().unwrap_or("unknown").chars().take(128).collect()
}

fn accept(headers: &HeaderMap) -> String {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

fn content_type(headers: &HeaderMap) -> String {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json").to_string()
}

fn with_warnings(mut r: Response, warnings: &[String]) -> Response {
    for w in warnings {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "'"))) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}

/// Request bodies are JSON, or Kubernetes protobuf (client-go's default for built-in types).
fn parse_body(headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    let ct = content_type(headers);
    let base = ct.split(';').next().unwrap_or_default().trim();
    if base == crate::protobuf::CONTENT_TYPE {
        return crate::protobuf::decode(body).map_err(|e| {
            ApiError::bad_request(format!("the body of the request could not be decoded as protobuf: {e}"))
        });
    }
    if !(base == "application/json" || base.ends_with("+json") || base == "*/*" || base.is_empty()) {
        return Err(ApiError::unsupported_media_type(&ct));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body of the request could not be decoded as JSON: {e}")))
}

async fn handle(
    api: &Api,
    method: Method,
    t: Target,
    q: &Query,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let is_watch = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    let fv = FieldValidation::parse(q.get("fieldValidation").map(String::as_str))?;
    let dry_run = q.get("dryRun").is_some_and(|d| d == "All");
    let manager = field_manager(q, headers);
    let w = Write { fv, dry_run, manager: &manager };
    match (method, &t.name, t.sub) {
        (Method::GET, None, _) if is_watch => watch::serve(api, &t, q, &accept(headers)).await,
        (Method::GET, None, _) => list(api, &t, q, &accept(headers)).await,
        (Method::POST, None, _) => {
            let (obj, warnings) = create(api, &t, parse_body(headers, &body)?, &w).await?;
            Ok(with_warnings((StatusCode::CREATED, Json(obj)).into_response(), &warnings))
        }
        (Method::DELETE, None, _) => delete_collection(api, &t, q).await.map(|v| Json(v).into_response()),
        (Method::GET, Some(name), None | Some(Sub::Status)) => {
            let stored = get_object(api, &t, name).await?;
            if table::wants_table(&accept(headers)) {
                let meta = json!({ "resourceVersion": stored.revision.to_string() });
                let include = Include::parse(q.get("includeObject").map(String::as_str));
                return Ok(Json(table::table(t.rt, &[stored.object], meta, include)).into_response());
            }
            Ok(Json(stored.object).into_response())
        }
        (Method::GET, Some(name), Some(Sub::Scale)) => {
            let stored = get_object(api, &t, name).await?;
            Ok(Json(scale_of(&stored.object)).into_response())
        }
        (Method::GET, Some(name), Some(Sub::Log)) => crate::logs::serve(api, &t, name, q).await,
        (Method::PUT, Some(name), sub) => {
            let (obj, warnings) = update(api, &t, name, parse_body(headers, &body)?, sub, &w).await?;
            Ok(with_warnings(Json(obj).into_response(), &warnings))
        }
        (Method::PATCH, Some(name), sub) => {
            let ct = content_type(headers);
            let kind = PatchType::from_content_type(&ct).ok_or_else(|| ApiError::unsupported_media_type(&ct))?;
            let force = q.get("force").is_some_and(|f| f == "true");
            let (obj, created) = patch_object(api, &t, name, kind, &body, sub, force, &w).await?;
            let code = if created { StatusCode::CREATED } else { StatusCode::OK };
            Ok((code, Json(obj)).into_response())
        }
        (Method::DELETE, Some(name), None) => {
            let opts = if body.is_empty() { json!({}) } else { parse_body(headers, &body)? };
            delete(api, &t, name, &opts, q, dry_run).await.map(|v| Json(v).into_response())
        }
        (Method::POST, Some(name), Some(Sub::Binding)) => bind(api, &t, name, parse_body(headers, &body)?)
            .await
            .map(|v| (StatusCode::CREATED, Json(v)).into_response()),
        (m, _, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({m})"
        ))),
    }
}

pub async fn get_object(api: &Api, t: &Target, name: &str) -> ApiResult<Stored> {
    let key = api.key(t.rt, t.namespace.as_deref(), name);
    api.storage.get(&key).await?.ok_or_else(|| ApiError::not_found(t.rt, name))
}

/// The continue token kube-apiserver uses: base64 of {v, rv, start}.
fn continue_token(rv: i64, start: &[u8], collection: &str) -> String {
    let rel = String::from_utf8_lossy(&start[collection.len().min(start.len())..]).to_string();
    let t = json!({ "v": "meta.k8s.io/v1", "rv": rv, "start": rel });
    base64::engine::general_purpose::URL_SAFE.encode(t.to_string())
}

fn parse_continue(token: &str, collection: &str) -> ApiResult<(i64, Vec<u8>)> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE.decode(token).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    if start.contains("..") || start.starts_with('/') {
        return Err(bad());
    }
    Ok((rv, format!("{collection}{start}").into_bytes()))
}

pub struct Filter {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub namespace: Option<String>,
}

impl Filter {
    pub fn from_query(t: &Target, q: &Query) -> ApiResult<Filter> {
        let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or_default())
            .map_err(ApiError::bad_request)?;
        let rt = t.rt;
        let allowed = |f: &str| field_supported(rt, f);
        let fields = FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or_default(), &allowed)
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "Unable to find \"{}\" that match label selector \"\", field selector \"{}\": {e}",
                    rt.qualified(),
                    q.get("fieldSelector").map(String::as_str).unwrap_or_default()
                ))
            })?;
        Ok(Filter { labels, fields, namespace: t.namespace.clone() })
    }

    pub fn matches(&self, o: &Value) -> bool {
        if let Some(ns) = &self.namespace {
            if objects::namespace_of(o) != ns {
                return false;
            }
        }
        self.labels.matches(&labels_of(o)) && self.fields.matches(o)
    }
}

/// The field selectors each type supports (Kubernetes' field label conversion).
fn field_supported(rt: &ResourceType, f: &str) -> bool {
    if matches!(f, "metadata.name" | "metadata.namespace") {
        return true;
    }
    match rt.plural {
        "pods" => matches!(
            f,
            "spec.nodeName"
                | "spec.restartPolicy"
                | "spec.schedulerName"
                | "spec.serviceAccountName"
                | "spec.hostNetwork"
                | "status.phase"
                | "status.podIP"
                | "status.nominatedNodeName"
        ),
        "events" => {
            f.starts_with("involvedObject.") || matches!(f, "reason" | "source" | "type" | "reportingComponent")
        }
        "secrets" => f == "type",
        "nodes" => f == "spec.unschedulable",
        "namespaces" => f == "status.phase",
        "replicasets" => f == "status.replicas",
        "persistentvolumeclaims" | "persistentvolumes" => false,
        _ => false,
    }
}

async fn list(api: &Api, t: &Target, q: &Query, accept: &str) -> ApiResult<Response> {
    let collection = api.collection_key(t.rt, t.namespace.as_deref());
    let filter = Filter::from_query(t, q)?;
    let limit: i64 = q.get("limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0).unwrap_or(0);
    let (mut revision, mut start) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(c) => {
            let (rv, s) = parse_continue(c, &collection)?;
            (rv, Some(s))
        }
        None => {
            let exact = q.get("resourceVersionMatch").map(String::as_str) == Some("Exact")
                || (limit > 0 && q.get("resourceVersion").is_some_and(|r| r != "0" && !r.is_empty()));
            let rv = if exact {
                q.get("resourceVersion")
                    .and_then(|r| r.parse().ok())
                    .ok_or_else(|| ApiError::bad_request("resourceVersion: Invalid value: must be an integer"))?
            } else {
                0
            };
            (rv, None)
        }
    };
    let mut items = Vec::new();
    let (next, remaining) = loop {
        let want = if limit > 0 { limit - items.len() as i64 } else { 0 };
        let page = api.storage.list(&collection, start.clone(), want, revision).await.map_err(|e| {
            if e.reason == "Expired" {
                ApiError::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.")
            } else {
                e
            }
        })?;
        // The store answers with its current revision; a read at a past one (a continued
        // list) is at that one.
        if revision == 0 {
            revision = page.revision;
        }
        items.extend(page.items.into_iter().map(|s| s.object).filter(|o| filter.matches(o)));
        match page.next_key {
            // Selectors thinned the page: read on until it is full or the list ends.
            Some(k) if limit > 0 && (items.len() as i64) < limit => start = Some(k),
            next => break (next, page.remaining),
        }
    };
    let mut meta = json!({ "resourceVersion": revision.to_string() });
    if let Some(k) = &next {
        meta["continue"] = json!(continue_token(revision, k, &collection));
        if filter.labels.is_empty() && filter.fields.is_empty() {
            meta["remainingItemCount"] = json!(remaining);
        }
    }
    if table::wants_table(accept) {
        let include = Include::parse(q.get("includeObject").map(String::as_str));
        return Ok(Json(table::table(t.rt, &items, meta, include)).into_response());
    }
    Ok(Json(json!({
        "kind": t.rt.list_kind(),
        "apiVersion": t.rt.api_version(),
        "metadata": meta,
        "items": items,
    }))
    .into_response())
}
