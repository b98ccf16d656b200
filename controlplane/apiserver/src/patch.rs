//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386), and strategic merge
//! patch for the built-in types (lists of named things merge by their key, `$patch`
//! directives, `$setElementOrder`, `$deleteFromPrimitiveList`, `$retainKeys`).

use serde_json::{Map, Value};

use crate::status::{ApiError, ApiResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// Applies `patch` to `original`.
pub fn apply(original: &Value, kind: PatchType, patch: &[u8]) -> ApiResult<Value> {
    match kind {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_slice(patch)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let mut doc = original.clone();
            json_patch::patch(&mut doc, &ops).map_err(|e| {
                ApiError::unprocessable(format!("the server rejected our request due to an error in our request: {e}"))
            })?;
            Ok(doc)
        }
        PatchType::Merge => {
            let p = parse(patch)?;
            let mut doc = original.clone();
            json_patch::merge(&mut doc, &p);
            Ok(doc)
        }
        PatchType::Strategic | PatchType::Apply => {
            let p = parse(patch)?;
            Ok(strategic(original, &p, ""))
        }
    }
}

fn parse(patch: &[u8]) -> ApiResult<Value> {
    let v: Value =
        serde_json::from_slice(patch).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("error decoding patch: the patch must be a JSON object"));
    }
    Ok(v)
}

/// The merge key of a list field of the built-in types (their `patchMergeKey`), if it merges.
pub fn merge_key(field: &str, sample: Option<&Value>) -> Option<&'static str> {
    let has = |k: &str| sample.and_then(|s| s.get(k)).is_some();
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "readinessGates" => Some(if field == "readinessGates" { "conditionType" } else { "name" }),
        "volumeMounts" | "volumeDevices" => Some(if field == "volumeDevices" { "devicePath" } else { "mountPath" }),
        "ports" if has("containerPort") => Some("containerPort"),
        "ports" => Some("port"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "addresses" if has("type") => Some("type"),
        _ => None,
    }
}

/// Lists of scalars that merge as sets (`patchStrategy: merge`).
pub fn merges_as_set(field: &str) -> bool {
    field == "finalizers"
}

fn strategic(original: &Value, patch: &Value, _path: &str) -> Value {
    let (Some(orig), Some(p)) = (original.as_object(), patch.as_object()) else {
        return patch.clone();
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut out = p.clone();
        out.remove("$patch");
        return Value::Object(out);
    }
    let mut out: Map<String, Value> = orig.clone();
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    let order_of = |field: &str| p.get(&format!("$setElementOrder/{field}")).and_then(Value::as_array);
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            // An order with no patch list for its field reorders the live list alone.
            if let (false, Some(order), Some(Value::Array(live))) =
                (p.contains_key(field), v.as_array(), out.get(field))
            {
                let key = merge_key(field, live.first());
                let reordered = go_order(live.clone(), order, live, key);
                out.insert(field.to_string(), Value::Array(reordered));
            }
            continue;
        }
        if k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(del)) = (out.get_mut(field), v.as_array()) {
                items.retain(|i| !del.contains(i));
            }
            continue;
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        let merged = match (out.get(k), v) {
            (Some(Value::Array(o)), Value::Array(pl)) => merge_list(k, o, pl, order_of(k)),
            (Some(o @ Value::Object(_)), Value::Object(_)) => strategic(o, v, k),
            (None, Value::Object(_)) => strategic(&Value::Object(Map::new()), v, k),
            (None, Value::Array(pl)) => merge_list(k, &[], pl, order_of(k)),
            _ => v.clone(),
        };
        out.insert(k.clone(), merged);
    }
    Value::Object(out)
}

/// Orders a merged list as Go's strategic merge does: the items named by the patch (or by
/// its `$setElementOrder`) in that order, the live-only items kept in their live order and
/// slotted in where the live list had them relative to patch items it also had; an item
/// new to the live list goes before live-only items it cannot be ordered against.
fn go_order(merged: Vec<Value>, patch_order: &[Value], live: &[Value], key: Option<&str>) -> Vec<Value> {
    let id = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let pos = |list: &[Value], v: &Value| {
        let want = id(v);
        list.iter().position(|x| id(x) == want)
    };
    let (mut named, live_only): (Vec<Value>, Vec<Value>) =
        merged.into_iter().partition(|m| pos(patch_order, m).is_some());
    named.sort_by_key(|m| pos(patch_order, m));
    let mut out = Vec::with_capacity(named.len() + live_only.len());
    let (mut i, mut j) = (0, 0);
    while i < live_only.len() || j < named.len() {
        let take_live = if i >= live_only.len() {
            false
        } else if j >= named.len() {
            true
        } else {
            matches!((pos(live, &live_only[i]), pos(live, &named[j])), (Some(l), Some(r)) if l < r)
        };
        if take_live {
            out.push(live_only[i].clone());
            i += 1;
        } else {
            out.push(named[j].clone());
            j += 1;
        }
    }
    out
}

fn merge_list(field: &str, orig: &[Value], patch: &[Value], set_order: Option<&Vec<Value>>) -> Value {
    if merges_as_set(field) {
        let mut out = orig.to_vec();
        for p in patch {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        return Value::Array(go_order(out, set_order.map_or(patch, |o| o.as_slice()), orig, None));
    }
    let Some(key) = merge_key(field, patch.first().or(orig.first())) else {
        // Lists without a merge strategy are replaced, minus any directive elements.
        return Value::Array(patch.iter().filter(|p| p.get("$patch").is_none()).cloned().collect());
    };
    if patch.iter().any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace")) {
        return Value::Array(patch.iter().filter(|p| p.get("$patch").is_none()).cloned().collect());
    }
    let mut out: Vec<Value> = orig.to_vec();
    for p in patch {
        let Some(id) = p.get(key) else {
            out.push(p.clone());
            continue;
        };
        let pos = out.iter().position(|o| o.get(key) == Some(id));
        if p.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = pos {
                out.remove(i);
            }
            continue;
        }
        match pos {
            Some(i) => out[i] = strategic(&out[i], p, field),
            None => out.push(strategic(&Value::Object(Map::new()), p, field)),
        }
    }
    let named: Vec<Value> = patch.iter().filter(|p| p.get("$patch").is_none()).cloned().collect();
    Value::Array(go_order(out, set_order.map_or(&named, |o| o), orig, Some(key)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_containers_by_name_and_honours_directives() -> ApiResult<()> {
        let orig = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}
        ]}}, "replicas": 1}, "metadata": {"finalizers": ["f1"], "labels": {"x": "1", "y": "2"}}});
        let patch = json!({"spec": {"replicas": 3, "template": {"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]}, {"name": "b", "$patch": "delete"}]
        }}}, "metadata": {"finalizers": ["f2"], "labels": {"y": null}}});
        let got = apply(&orig, PatchType::Strategic, patch.to_string().as_bytes())?;
        assert_eq!(
            got,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}, {"name": "X", "value": "1"}]}
            ]}}, "replicas": 3}, "metadata": {"finalizers": ["f2", "f1"], "labels": {"x": "1"}}})
        );
        Ok(())
    }

    #[test]
    fn strategic_merge_orders_lists_as_go_does() -> ApiResult<()> {
        let ports = |ps: &[i64]| json!({"spec": {"ports": ps.iter().map(|p| json!({"port": p})).collect::<Vec<_>>()}});
        // A new item goes first; patched live items keep their places among live-only ones.
        let got = apply(&ports(&[80, 8080]), PatchType::Strategic, br#"{"spec":{"ports":[{"port":443}]}}"#)?;
        assert_eq!(got, ports(&[443, 80, 8080]));
        let got = apply(
            &ports(&[80, 8080, 9090]),
            PatchType::Strategic,
            br#"{"spec":{"ports":[{"port":9090},{"port":80}]}}"#,
        )?;
        // Go compares a live-only item with the next patch item by live position only.
        assert_eq!(got, ports(&[8080, 9090, 80]));
        // $setElementOrder decides the order of the items it names, with or without a patch list.
        let patch =
            br#"{"spec":{"$setElementOrder/ports":[{"port":8080},{"port":80}],"ports":[{"port":8080,"name":"alt"}]}}"#;
        let got = apply(&ports(&[80, 8080]), PatchType::Strategic, patch)?;
        assert_eq!(got, json!({"spec": {"ports": [{"port": 8080, "name": "alt"}, {"port": 80}]}}));
        let got = apply(
            &ports(&[80, 8080]),
            PatchType::Strategic,
            br#"{"spec":{"$setElementOrder/ports":[{"port":8080},{"port":80}]}}"#,
        )?;
        assert_eq!(got, ports(&[8080, 80]));
        Ok(())
    }

    #[test]
    fn merge_and_json_patches() -> ApiResult<()> {
        let orig = json!({"data": {"a": "1", "b": "2"}, "list": [1, 2]});
        let merged = apply(&orig, PatchType::Merge, br#"{"data": {"a": null, "c": "3"}, "list": [3]}"#)?;
        assert_eq!(merged, json!({"data": {"b": "2", "c": "3"}, "list": [3]}));
        let patched = apply(&orig, PatchType::Json, br#"[{"op": "replace", "path": "/data/a", "value": "9"}]"#)?;
        assert_eq!(patched["data"]["a"], "9");
        assert!(apply(&orig, PatchType::Json, br#"[{"op": "test", "path": "/data/a", "value": "x"}]"#).is_err());
        assert!(apply(&orig, PatchType::Merge, b"[1]").is_err());
        Ok(())
    }
}
