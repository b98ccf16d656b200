//! Field ownership for server-side apply: `metadata.managedFields` in Kubernetes' FieldsV1
//! form. An apply owns the fields of the configuration it sends; applying a different value
//! to a field another manager owns is a conflict (409) unless forced, which takes the field
//! over; fields a manager applied before and no longer applies are removed unless someone
//! else owns them. Other writes (create, update, patch) record what they changed under their
//! manager and take those fields from everyone else, without conflicts.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::objects::now;
use crate::patch::{merge_key, merges_as_set};

/// One step of a field path, as FieldsV1 spells it.
type Step = String;

/// A set of field paths: a tree whose leaves are owned fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields(BTreeMap<Step, Fields>);

impl Fields {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields set in `v`, a configuration or an object (`field` names the value for list
    /// semantics).
    pub fn of(v: &Value, field: &str) -> Fields {
        let mut out = Fields::default();
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    out.0.insert(format!("f:{k}"), Fields::of(child, k));
                }
            }
            Value::Array(items) => {
                if merges_as_set(field) {
                    for i in items {
                        out.0.insert(format!("v:{i}"), Fields::default());
                    }
                } else if let Some(key) = merge_key(field, items.first()) {
                    for i in items {
                        let Some(id) = i.get(key) else { continue };
                        let mut item = Fields::of(i, field);
                        item.0.insert(".".into(), Fields::default());
                        out.0.insert(format!("k:{}", json!({ key: id })), item);
                    }
                }
                // Other lists are atomic: owned as a whole, a leaf.
            }
            _ => {}
        }
        out
    }

    pub fn from_json(v: &Value) -> Fields {
        Fields(
            v.as_object()
                .map(|m| m.iter().map(|(k, c)| (k.clone(), Fields::from_json(c))).collect())
                .unwrap_or_default(),
        )
    }

    pub fn to_json(&self) -> Value {
        Value::Object(self.0.iter().map(|(k, c)| (k.clone(), c.to_json())).collect::<Map<_, _>>())
    }

    /// Every leaf path.
    pub fn leaves(&self) -> Vec<Vec<Step>> {
        let mut out = Vec::new();
        for (k, c) in &self.0 {
            if c.is_empty() {
                out.push(vec![k.clone()]);
            } else {
                for mut p in c.leaves() {
                    p.insert(0, k.clone());
                    out.push(p);
                }
            }
        }
        out
    }

    pub fn contains(&self, path: &[Step]) -> bool {
        match path.split_first() {
            None => true,
            Some((first, rest)) => self.0.get(first).is_some_and(|c| {
                if rest.is_empty() {
                    c.is_empty() || c.0.contains_key(".")
                } else {
                    c.contains(rest)
                }
            }),
        }
    }

    pub fn remove(&mut self, path: &[Step]) {
        let Some((first, rest)) = path.split_first() else { return };
        if rest.is_empty() {
            self.0.remove(first);
            return;
        }
        if let Some(c) = self.0.get_mut(first) {
            c.remove(rest);
            if c.is_empty() {
                self.0.remove(first);
            }
        }
    }

    pub fn insert(&mut self, path: &[Step]) {
        let Some((first, rest)) = path.split_first() else { return };
        self.0.entry(first.clone()).or_default().insert(rest);
    }
}

/// The value at `path` in `v`, if there is one.
pub fn value_at<'a>(v: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let Some((first, rest)) = path.split_first() else { return Some(v) };
    if first == "." {
        return Some(v);
    }
    let next = if let Some(name) = first.strip_prefix("f:") {
        v.get(name)?
    } else if let Some(key) = first.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(key).ok()?;
        v.as_array()?.iter().find(|i| key.iter().all(|(k, kv)| i.get(k) == Some(kv)))?
    } else if let Some(item) = first.strip_prefix("v:") {
        let item: Value = serde_json::from_str(item).ok()?;
        v.as_array()?.iter().find(|i| **i == item)?
    } else {
        return None;
    };
    value_at(next, rest)
}

/// Removes the value at `path` from `v`.
fn remove_at(v: &mut Value, path: &[Step]) {
    let Some((first, rest)) = path.split_first() else { return };
    let last = rest.is_empty() || rest == ["."];
    if let Some(name) = first.strip_prefix("f:") {
        if last {
            if let Some(m) = v.as_object_mut() {
                m.remove(name);
            }
        } else if let Some(c) = v.get_mut(name) {
            remove_at(c, rest);
        }
    } else if let Some(key) = first.strip_prefix("k:") {
        let Ok(key) = serde_json::from_str::<Map<String, Value>>(key) else { return };
        let Some(items) = v.as_array_mut() else { return };
        let matches = |i: &Value| key.iter().all(|(k, kv)| i.get(k) == Some(kv));
        if last {
            items.retain(|i| !matches(i));
        } else if let Some(i) = items.iter_mut().find(|i| matches(i)) {
            remove_at(i, rest);
        }
    } else if let Some(item) = first.strip_prefix("v:") {
        let Ok(item) = serde_json::from_str::<Value>(item) else { return };
        if let Some(items) = v.as_array_mut() {
            items.retain(|i| *i != item);
        }
    }
}

fn path_string(path: &[Step]) -> String {
    path.iter()
        .filter(|s| *s != ".")
        .map(|s| {
            if let Some(n) = s.strip_prefix("f:") {
                format!(".{n}")
            } else if let Some(k) = s.strip_prefix("k:") {
                format!("[{}]", k.trim_matches(|c| c == '{' || c == '}').replacen(':', "=", 1).replace('"', ""))
            } else if let Some(v) = s.strip_prefix("v:") {
                format!("[={v}]")
            } else {
                s.clone()
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    subresource: Option<String>,
    fields: Fields,
}

fn entries(o: &Value) -> Vec<Entry> {
    o.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| Entry {
            manager: e.get("manager").and_then(Value::as_str).unwrap_or_default().to_string(),
            operation: e.get("operation").and_then(Value::as_str).unwrap_or("Update").to_string(),
            api_version: e.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string(),
            subresource: e.get("subresource").and_then(Value::as_str).map(str::to_string),
            fields: Fields::from_json(e.get("fieldsV1").unwrap_or(&Value::Null)),
        })
        .collect()
}

fn store_entries(o: &mut Value, list: Vec<Entry>) {
    let time = now();
    let out: Vec<Value> = list
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": time,
                "fieldsType": "FieldsV1",
                "fieldsV1": e.fields.to_json(),
            });
            if let Some(s) = e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        if out.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(out));
        }
    }
}

/// The fields an object's content sets, without what the server owns.
fn content_fields(o: &Value) -> Fields {
    let mut v = o.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
        m.remove("kind");
        m.remove("apiVersion");
    }
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "name",
            "namespace",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generateName",
        ] {
            meta.remove(k);
        }
        if meta.is_empty() {
            v.as_object_mut().map(|m| m.remove("metadata"));
        }
    }
    Fields::of(&v, "")
}

/// A conflict of an apply with another manager's field.
#[derive(Debug)]
pub struct Conflicts(pub Vec<(String, String, String)>);

impl Conflicts {
    /// kube-apiserver's message: `Apply failed with 1 conflict: conflict with "m" using apps/v1: .spec.replicas`.
    pub fn message(&self) -> String {
        let n = self.0.len();
        let items: Vec<String> =
            self.0.iter().map(|(m, api, path)| format!("conflict with \"{m}\" using {api}: {path}")).collect();
        format!("Apply failed with {n} conflict{}: {}", if n == 1 { "" } else { "s" }, items.join("\n"))
    }

    pub fn causes(&self) -> Value {
        self.0
            .iter()
            .map(|(m, api, path)| json!({ "reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\" using {api}"), "field": path }))
            .collect::<Vec<_>>()
            .into()
    }
}

/// Applies `config` for `manager` onto `current` (already merged into `merged` by the caller's
/// strategic merge): checks conflicts, removes what the manager stopped applying, and
/// records ownership.
pub fn apply(
    current: &Value,
    merged: Value,
    config: &Value,
    manager: &str,
    api_version: &str,
    force: bool,
) -> Result<Value, Conflicts> {
    let applied = content_fields(config);
    let mut list = entries(current);
    let mut conflicts = Vec::new();
    for leaf in applied.leaves() {
        for e in list.iter().filter(|e| !(e.manager == manager && e.operation == "Apply")) {
            if e.fields.contains(&leaf) && value_at(current, &leaf) != value_at(config, &leaf) {
                conflicts.push((e.manager.clone(), e.api_version.clone(), path_string(&leaf)));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        conflicts.sort();
        conflicts.dedup();
        return Err(Conflicts(conflicts));
    }
    let mut out = merged;
    // Fields this manager applied before and no longer applies go, unless shared.
    let previous = list.iter().find(|e| e.manager == manager && e.operation == "Apply").map(|e| e.fields.clone());
    if let Some(prev) = previous {
        for leaf in prev.leaves() {
            let still = applied.contains(&leaf);
            let shared =
                list.iter().any(|e| !(e.manager == manager && e.operation == "Apply") && e.fields.contains(&leaf));
            if !still && !shared {
                remove_at(&mut out, &leaf);
            }
        }
    }
    if force {
        for leaf in applied.leaves() {
            for e in list.iter_mut().filter(|e| !(e.manager == manager && e.operation == "Apply")) {
                if value_at(current, &leaf) != value_at(config, &leaf) {
                    e.fields.remove(&leaf);
                }
            }
        }
    }
    list.retain(|e| !(e.manager == manager && e.operation == "Apply"));
    list.push(Entry {
        manager: manager.to_string(),
        operation: "Apply".into(),
        api_version: api_version.to_string(),
        subresource: None,
        fields: applied,
    });
    store_entries(&mut out, list);
    Ok(out)
}

/// Records a non-apply write by `manager`: it owns what it changed (everything, for a create),
/// and nobody else does any more.
pub fn update(old: Option<&Value>, new: &mut Value, manager: &str, api_version: &str, subresource: Option<&str>) {
    let mut list = old.map(entries).unwrap_or_default();
    let after = content_fields(new);
    let changed: Vec<Vec<Step>> = match old {
        None => after.leaves(),
        Some(o) => {
            let before = content_fields(o);
            let mut c: Vec<Vec<Step>> =
                after.leaves().into_iter().filter(|l| value_at(o, l) != value_at(new, l)).collect();
            c.extend(before.leaves().into_iter().filter(|l| value_at(new, l).is_none()));
            c
        }
    };
    if changed.is_empty() && old.is_some() {
        store_entries(new, list);
        return;
    }
    for e in list.iter_mut() {
        for l in &changed {
            e.fields.remove(l);
        }
    }
    let mine = changed.iter().filter(|l| value_at(new, l).is_some()).cloned().collect::<Vec<_>>();
    let pos = list
        .iter()
        .position(|e| e.manager == manager && e.operation == "Update" && e.subresource.as_deref() == subresource);
    let entry = match pos {
        Some(i) => &mut list[i],
        None => {
            list.push(Entry {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: api_version.to_string(),
                subresource: subresource.map(str::to_string),
                fields: Fields::default(),
            });
            let last = list.len() - 1;
            &mut list[last]
        }
    };
    for l in mine {
        entry.fields.insert(&l);
    }
    store_entries(new, list);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"app": "d"}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    #[test]
    fn field_sets_use_kubernetes_keys() {
        let f = content_fields(&deployment(1, "a"));
        let j = f.to_json();
        assert!(j.pointer("/f:spec/f:replicas").is_some(), "{j}");
        assert!(j.pointer("/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"c\"}/f:image").is_some(), "{j}");
        assert!(j.pointer("/f:metadata/f:labels/f:app").is_some(), "{j}");
    }

    #[test]
    fn applies_conflict_with_other_managers_unless_forced() {
        let mut created = deployment(1, "a");
        update(None, &mut created, "kubectl-create", "apps/v1", None);
        // Applying the same values is no conflict; a different replica count is.
        let same = deployment(1, "a");
        assert!(apply(&created, created.clone(), &same, "mgr", "apps/v1", false).is_ok());
        let other = deployment(3, "a");
        let err = match apply(&created, created.clone(), &other, "mgr", "apps/v1", false) {
            Err(e) => e,
            Ok(_) => panic!("no conflict reported"),
        };
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"kubectl-create\" using apps/v1: .spec.replicas"
        );
        let forced = match apply(&created, other.clone(), &other, "mgr", "apps/v1", true) {
            Ok(v) => v,
            Err(e) => panic!("forced apply failed: {e:?}"),
        };
        let owners: Vec<String> = entries(&forced)
            .iter()
            .filter(|e| e.fields.contains(&["f:spec".into(), "f:replicas".into()]))
            .map(|e| e.manager.clone())
            .collect();
        assert_eq!(owners, vec!["mgr"]);
    }

    #[test]
    fn fields_an_applier_drops_are_removed_unless_shared() {
        let config =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let first = match apply(&json!({}), config.clone(), &config, "m", "v1", false) {
            Ok(v) => v,
            Err(e) => panic!("{e:?}"),
        };
        let smaller = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        let second = match apply(&first, first.clone(), &smaller, "m", "v1", false) {
            Ok(v) => v,
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(second["data"], json!({"a": "1"}));
    }
}
