//! What the API server does to an object between the request and the store: type and
//! metadata checks, strict decoding, system fields (uid, creationTimestamp, generation),
//! defaulting and validation as kube-apiserver does them for the built-in types.

use rand::Rng;
use serde_json::{json, Map, Value};

use crate::resources::{ResourceType, Sub};
use crate::status::{ApiError, ApiResult, Cause};

/// How unknown or duplicate fields are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> ApiResult<FieldValidation> {
        match s {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}; must be one of Ignore, Warn, Strict"
            ))),
        }
    }
}

pub fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn name_of(o: &Value) -> &str {
    o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
}

pub fn namespace_of(o: &Value) -> &str {
    o.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default()
}

fn meta_mut(o: &mut Value) -> &mut Map<String, Value> {
    if !o.get("metadata").is_some_and(Value::is_object) {
        o["metadata"] = json!({});
    }
    match o.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// Fields present (and non-null) in `input` that the typed decoding dropped: unknown fields.
fn unknown_fields(input: &Value, canonical: &Value, path: &str, out: &mut Vec<String>) {
    match (input, canonical) {
        (Value::Object(i), Value::Object(c)) => {
            for (k, v) in i {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match c.get(k) {
                    None if !v.is_null() => out.push(p),
                    Some(cv) => unknown_fields(v, cv, &p, out),
                    None => {}
                }
            }
        }
        (Value::Array(i), Value::Array(c)) => {
            for (n, (iv, cv)) in i.iter().zip(c).enumerate() {
                unknown_fields(iv, cv, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

/// A decoding error in Go's words where they differ: bad base64 in a `[]byte` field is
/// "illegal base64 data at input byte N" from Go's encoding/base64.
fn go_decode_error(e: &str) -> String {
    static BASE64: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"Invalid (?:symbol \d+|last symbol \d+|padding|byte \d+), offset (\d+)\.?").ok()
    });
    match BASE64.as_ref().and_then(|re| re.captures(e)) {
        Some(c) => format!("illegal base64 data at input byte {}", &c[1]),
        None => e.to_string(),
    }
}

/// Decodes `input` as the resource's type: the canonical form, and warnings for unknown
/// fields (an error under `Strict`).
pub fn decode(rt: &ResourceType, input: Value, fv: FieldValidation) -> ApiResult<(Value, Vec<String>)> {
    let canonical = (rt.canonicalize)(input.clone()).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {}",
            rt.kind,
            rt.version,
            rt.kind,
            go_decode_error(&e)
        ))
    })?;
    let mut unknown = Vec::new();
    if fv != FieldValidation::Ignore {
        unknown_fields(&input, &canonical, "", &mut unknown);
    }
    let warnings: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
    if fv == FieldValidation::Strict && !warnings.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            rt.kind,
            rt.version,
            rt.kind,
            warnings.join(", ")
        )));
    }
    Ok((canonical, warnings))
}

/// Checks the object's kind and apiVersion against the endpoint, filling them in if absent.
pub fn check_type(rt: &ResourceType, o: &mut Value) -> ApiResult<()> {
    if !o.is_object() {
        return Err(ApiError::bad_request("the body of the request must be a JSON object"));
    }
    let api_version = rt.api_version();
    match o.get("kind").and_then(Value::as_str) {
        None | Some("") => o["kind"] = json!(rt.kind),
        Some(k) if k == rt.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({api_version}) or kind {k} does not match {}",
                o.get("apiVersion").and_then(Value::as_str).unwrap_or_default(),
                rt.kind
            )))
        }
    }
    match o.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => o["apiVersion"] = json!(api_version),
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )))
        }
    }
    Ok(())
}

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

/// Prepares a new object for the store: system metadata, defaults, validation.
pub fn for_create(rt: &ResourceType, namespace: Option<&str>, mut o: Value) -> ApiResult<Value> {
    let meta = meta_mut(&mut o);
    if meta.get("name").and_then(Value::as_str).unwrap_or_default().is_empty() {
        if let Some(base) = meta.get("generateName").and_then(Value::as_str).filter(|g| !g.is_empty()) {
            const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
            let mut rng = rand::rng();
            let suffix: String = (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
            let prefix: String = base.chars().take(58).collect();
            let name = format!("{prefix}{suffix}");
            meta.insert("name".into(), json!(name));
        }
    }
    match (rt.namespaced, namespace) {
        (true, Some(ns)) => match meta.get("namespace").and_then(Value::as_str) {
            None | Some("") => {
                meta.insert("namespace".into(), json!(ns));
            }
            Some(other) if other != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            Some(_) => {}
        },
        (false, _) => {
            meta.remove("namespace");
        }
        (true, None) => {}
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now()));
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    meta.remove("resourceVersion");
    meta.remove("selfLink");
    if rt.has_spec {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    if rt.has(Sub::Status) && rt.plural != "namespaces" && rt.plural != "pods" && rt.plural != "services" {
        // Status is the controllers' to write, through the status subresource.
        if let Some(obj) = o.as_object_mut() {
            obj.remove("status");
        }
    }
    default(rt, &mut o);
    validate(rt, &o, None)?;
    Ok(o)
}

/// Prepares a replacement of `old` by `new` (the main resource or a subresource).
pub fn for_update(rt: &ResourceType, old: &Value, mut new: Value, sub: Option<Sub>) -> ApiResult<Value> {
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    if let Some(uid) = new.pointer("/metadata/uid").and_then(Value::as_str) {
        if !uid.is_empty() && Some(uid) != old_meta.get("uid").and_then(Value::as_str) {
            return Err(ApiError::conflict_msg(
                rt,
                name_of(old),
                "Precondition failed: UID in precondition does not match the UID in the object",
            ));
        }
    }
    if sub == Some(Sub::Status) {
        // Only the status changes; everything else stays as stored.
        let mut out = old.clone();
        match new.get("status") {
            Some(s) => out["status"] = s.clone(),
            None => {
                if let Some(o) = out.as_object_mut() {
                    o.remove("status");
                }
            }
        }
        return Ok(out);
    }
    let meta = meta_mut(&mut new);
    for k in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
        match old_meta.get(k) {
            Some(v) => meta.insert(k.into(), v.clone()),
            None => meta.remove(k),
        };
    }
    for k in ["name", "namespace"] {
        let (o, n) = (old_meta.get(k), meta.get(k));
        if n.is_some_and(|n| Some(n) != o && n != "") {
            return Err(ApiError::invalid(
                rt,
                name_of(old),
                vec![Cause::invalid(
                    &format!("metadata.{k}"),
                    n.and_then(Value::as_str).unwrap_or_default(),
                    "field is immutable",
                )],
            ));
        }
        if let Some(o) = o {
            meta.insert(k.into(), o.clone());
        }
    }
    if rt.has(Sub::Status) {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    default(rt, &mut new);
    if rt.has_spec && spec_of(old) != spec_of(&new) {
        let g = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
        meta_mut(&mut new).insert("generation".into(), json!(g + 1));
    }
    validate(rt, &new, Some(old))?;
    Ok(new)
}

/// Everything but metadata and status: what `generation` tracks.
fn spec_of(o: &Value) -> Value {
    let mut v = o.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("kind");
        m.remove("apiVersion");
    }
    v
}

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
fn default(rt: &ResourceType, o: &mut Value) {
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

fn validate(rt: &ResourceType, o: &Value, old: Option<&Value>) -> ApiResult<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn create_sets_system_fields_and_defaults() -> ApiResult<()> {
        let rt = find("apps", "v1", "deployments").ok_or_else(|| ApiError::internal("no deployments"))?;
        let d = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
        let out = for_create(rt, Some("default"), d)?;
        assert_eq!(out["metadata"]["generation"], 1);
        assert_eq!(out["metadata"]["namespace"], "default");
        assert_eq!(out["spec"]["replicas"], 1);
        assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"], "Always");
        let mut changed = out.clone();
        changed["spec"]["replicas"] = json!(3);
        changed["metadata"]["labels"] = json!({"x": "y"});
        let updated = for_update(rt, &out, changed, None)?;
        assert_eq!(updated["metadata"]["generation"], 2);
        let relabelled = for_update(
            rt,
            &updated,
            {
                let mut u = updated.clone();
                u["metadata"]["labels"] = json!({});
                u
            },
            None,
        )?;
        assert_eq!(relabelled["metadata"]["generation"], 2);
        Ok(())
    }

    #[test]
    fn invalid_objects_are_refused_with_causes() {
        let rt = match find("", "v1", "pods") {
            Some(rt) => rt,
            None => panic!("pods are served"),
        };
        let err = for_create(
            rt,
            Some("default"),
            json!({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "c"}]}}),
        );
        let e = match err {
            Err(e) => e,
            Ok(_) => panic!("accepted an invalid pod"),
        };
        assert_eq!(e.code.as_u16(), 422);
        let fields: Vec<String> = e.status()["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["field"].as_str().map(str::to_string))
            .collect();
        assert_eq!(fields, vec!["metadata.name", "spec.containers[0].image"]);
    }

    #[test]
    fn bad_base64_is_reported_in_gos_words() {
        let Some(rt) = find("", "v1", "secrets") else { panic!("secrets are served") };
        let bad =
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"a": "not base64!"}});
        let e = decode(rt, bad, FieldValidation::Strict).err().map(|e| (e.code.as_u16(), e.message));
        assert_eq!(
            e,
            Some((
                400,
                "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input byte 3"
                    .to_string()
            ))
        );
    }

    #[test]
    fn strict_decoding_names_unknown_fields() {
        let rt = match find("", "v1", "configmaps") {
            Some(rt) => rt,
            None => panic!("configmaps are served"),
        };
        let input = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "bogus": 1}, "data": {"a": "b"}, "extra": true});
        let (_, warnings) = decode(rt, input.clone(), FieldValidation::Warn).unwrap_or_default();
        assert_eq!(warnings, vec!["unknown field \"extra\"", "unknown field \"metadata.bogus\""]);
        assert!(decode(rt, input, FieldValidation::Strict).is_err());
    }
}
