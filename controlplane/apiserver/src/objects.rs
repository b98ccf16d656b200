//! What the API server does to an object between the request and the store: type and
//! metadata checks, strict decoding, system fields (uid, creationTimestamp, generation),
//! defaulting and validation as kube-apiserver does them for the built-in types. The
//! per-type defaults are in [`defaults`], the per-type validation in [`validate`].

use rand::Rng;
use serde_json::{json, Map, Value};

use crate::resources::{ResourceType, Sub};
use crate::status::{ApiError, ApiResult, Cause};

mod defaults;
mod validate;

use defaults::default;
use validate::validate;

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
