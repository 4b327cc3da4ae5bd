//! Server-side apply and managed fields.
//!
//! Each write records which manager owns which fields in `metadata.managedFields`
//! (`FieldsV1`, as Kubernetes encodes it). An apply (`application/apply-patch+yaml`) merges
//! the manager's configuration into the object (maps by key, lists by their merge keys, as a
//! strategic merge), removes the fields it applied before and no longer applies (unless
//! another manager owns them), and fails with 409 and one `FieldManagerConflict` cause per
//! field another manager owns with a different value — unless `force` takes them over.
//!
//! Simplifications (documented in docs/api-compatibility.md): list items are identified by
//! their merge key when their items are objects sharing one (`name`, `containerPort`,
//! `port`, ...), lists of scalars under `finalizers` are sets, every other list is atomic.

use rkube_types::{ApiError, ResourceInfo, StatusCause};
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// A map key: `f:name`.
    Field(String),
    /// A list item by its key fields (JSON object text): `k:{"name":"c"}`.
    Key(String),
    /// A set member (JSON text): `v:"x"`.
    Member(String),
}

/// A field path from the object's root.
pub type Path = Vec<Step>;

/// Keys that identify items of object lists, in order of preference.
/// Kubernetes' merge keys that share a list with a `name` field (container and service
/// ports, volume mounts and devices) come first, so adding a `name` to such items does not
/// change how they are identified.
const ITEM_KEYS: [&str; 9] = [
    "containerPort",
    "port",
    "mountPath",
    "devicePath",
    "name",
    "ip",
    "type",
    "uid",
    "topologyKey",
];

/// The key field identifying the items of `list`, if every item is an object that has it
/// with a distinct scalar value.
fn item_key(list: &[Value]) -> Option<&'static str> {
    if list.is_empty() || !list.iter().all(Value::is_object) {
        return None;
    }
    ITEM_KEYS.into_iter().find(|key| {
        let mut seen = BTreeSet::new();
        list.iter().all(|item| match item.get(*key) {
            Some(v) if !v.is_object() && !v.is_array() && !v.is_null() => {
                seen.insert(v.to_string())
            }
            _ => false,
        })
    })
}

fn is_set(parent: &[Step]) -> bool {
    matches!(parent.last(), Some(Step::Field(f)) if f == "finalizers")
}

/// The leaf paths `value` sets, under `prefix`.
fn collect(value: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                prefix.push(Step::Field(k.clone()));
                collect(v, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(list) if is_set(prefix) && list.iter().all(|v| !v.is_object()) => {
            for v in list {
                prefix.push(Step::Member(v.to_string()));
                out.insert(prefix.clone());
                prefix.pop();
            }
        }
        Value::Array(list) => match item_key(list) {
            Some(key) => {
                for item in list {
                    let id = json!({ key: item[key].clone() }).to_string();
                    prefix.push(Step::Key(id));
                    collect(item, prefix, out);
                    prefix.pop();
                }
            }
            None => {
                out.insert(prefix.clone());
            }
        },
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The fields an object (or an applied configuration) sets, leaving out identity fields.
pub fn fields_of(obj: &Value) -> BTreeSet<Path> {
    /// Top-level keys nobody manages.
    const SYSTEM: [&str; 3] = ["apiVersion", "kind", "status"];
    /// Metadata keys that are identity or the server's, not managed fields.
    const IDENTITY: [&str; 10] = [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "managedFields",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ];
    let mut out = BTreeSet::new();
    let Some(map) = obj.as_object() else {
        collect(obj, &mut Vec::new(), &mut out);
        return out;
    };
    // Walks in place (no copy of the object): this runs on every write.
    let mut path = Vec::new();
    for (k, v) in map.iter().filter(|(k, _)| !SYSTEM.contains(&k.as_str())) {
        path.push(Step::Field(k.clone()));
        match (k.as_str(), v.as_object()) {
            ("metadata", Some(meta)) => {
                for (mk, mv) in meta
                    .iter()
                    .filter(|(mk, _)| !IDENTITY.contains(&mk.as_str()))
                {
                    path.push(Step::Field(mk.clone()));
                    collect(mv, &mut path, &mut out);
                    path.pop();
                }
            }
            _ => collect(v, &mut path, &mut out),
        }
        path.pop();
    }
    out
}

/// The leaf paths whose values differ between `old` and `new` (present in `new`).
pub fn changed(old: &Value, new: &Value) -> BTreeSet<Path> {
    let before = fields_of(old);
    fields_of(new)
        .into_iter()
        .filter(|p| !before.contains(p) || value_at(old, p) != value_at(new, p))
        .collect()
}

/// The value at `path`.
pub fn value_at<'a>(obj: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let mut cur = obj;
    for step in path {
        cur = match step {
            Step::Field(f) => cur.get(f)?,
            Step::Key(id) => {
                let key: Map<String, Value> = serde_json::from_str(id).ok()?;
                cur.as_array()?
                    .iter()
                    .find(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))?
            }
            Step::Member(m) => {
                let v: Value = serde_json::from_str(m).ok()?;
                cur.as_array()?.iter().find(|x| **x == v)?
            }
        };
    }
    Some(cur)
}

/// Removes the field at `path` (and empty maps it leaves behind, except at the top).
fn remove_at(obj: &mut Value, path: &[Step]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for step in parents {
        let next = match step {
            Step::Field(f) => cur.get_mut(f),
            Step::Key(id) => {
                let Ok(key) = serde_json::from_str::<Map<String, Value>>(id) else {
                    return;
                };
                cur.as_array_mut().and_then(|l| {
                    l.iter_mut()
                        .find(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))
                })
            }
            Step::Member(_) => None,
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match last {
        Step::Field(f) => {
            if let Some(map) = cur.as_object_mut() {
                map.remove(f);
            }
        }
        Step::Key(id) => {
            if let (Ok(key), Some(list)) = (
                serde_json::from_str::<Map<String, Value>>(id),
                cur.as_array_mut(),
            ) {
                list.retain(|item| !key.iter().all(|(k, v)| item.get(k) == Some(v)));
            }
        }
        Step::Member(m) => {
            if let (Ok(v), Some(list)) = (serde_json::from_str::<Value>(m), cur.as_array_mut()) {
                list.retain(|x| *x != v);
            }
        }
    }
}

/// `.spec.containers[name="c"].image`, as Kubernetes prints paths in conflicts.
pub fn display(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Field(f) => {
                out.push('.');
                out.push_str(f);
            }
            Step::Key(id) => {
                let key: Map<String, Value> = serde_json::from_str(id).unwrap_or_default();
                let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
            Step::Member(m) => out.push_str(&format!("[{m}]")),
        }
    }
    out
}

/// `FieldsV1` JSON of a set of paths.
pub fn to_fields_v1(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut cur = &mut root;
        for step in path {
            let key = match step {
                Step::Field(f) => format!("f:{f}"),
                Step::Key(id) => format!("k:{id}"),
                Step::Member(m) => format!("v:{m}"),
            };
            let entry = cur.entry(key).or_insert_with(|| json!({}));
            if matches!(step, Step::Key(_)) {
                entry
                    .as_object_mut()
                    .map(|m| m.entry(".").or_insert_with(|| json!({})));
            }
            cur = match entry.as_object_mut() {
                Some(m) => m,
                None => break,
            };
        }
    }
    Value::Object(root)
}

/// The paths of a `FieldsV1` JSON (its leaves; `.` marks an item, not a leaf of its own).
pub fn from_fields_v1(fields: &Value) -> BTreeSet<Path> {
    fn walk(node: &Map<String, Value>, prefix: &mut Path, out: &mut BTreeSet<Path>) {
        let children: Vec<_> = node.iter().filter(|(k, _)| k.as_str() != ".").collect();
        if children.is_empty() && !prefix.is_empty() {
            out.insert(prefix.clone());
            return;
        }
        for (k, v) in children {
            let step = if let Some(f) = k.strip_prefix("f:") {
                Step::Field(f.to_string())
            } else if let Some(id) = k.strip_prefix("k:") {
                Step::Key(id.to_string())
            } else if let Some(m) = k.strip_prefix("v:") {
                Step::Member(m.to_string())
            } else {
                continue;
            };
            prefix.push(step);
            match v.as_object() {
                Some(child) => walk(child, prefix, out),
                None => {
                    out.insert(prefix.clone());
                }
            }
            prefix.pop();
        }
    }
    let mut out = BTreeSet::new();
    if let Some(map) = fields.as_object() {
        walk(map, &mut Vec::new(), &mut out);
    }
    out
}

/// One `managedFields` entry.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    subresource: String,
    raw: Value,
    fields: BTreeSet<Path>,
}

fn entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| Entry {
                    manager: e["manager"].as_str().unwrap_or_default().to_string(),
                    operation: e["operation"].as_str().unwrap_or_default().to_string(),
                    subresource: e["subresource"].as_str().unwrap_or_default().to_string(),
                    raw: e.clone(),
                    fields: from_fields_v1(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn store_entries(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut raw = e.raw;
            raw["fieldsV1"] = to_fields_v1(&e.fields);
            raw
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn new_entry(
    info: &ResourceInfo,
    manager: &str,
    operation: &str,
    subresource: &str,
    now: &str,
) -> Entry {
    let mut raw = json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": info.api_version(),
        "time": now,
        "fieldsType": "FieldsV1",
    });
    if !subresource.is_empty() {
        raw["subresource"] = subresource.into();
    }
    Entry {
        manager: manager.to_string(),
        operation: operation.to_string(),
        subresource: subresource.to_string(),
        raw,
        fields: BTreeSet::new(),
    }
}

/// Records an update by `manager`: it owns the fields it changed; others lose them.
pub fn record_update(
    info: &ResourceInfo,
    old: &Value,
    new: &mut Value,
    manager: &str,
    subresource: &str,
    now: &str,
) {
    let changed = changed(old, new);
    // Managed fields come from the stored object, not from what an update sent.
    let mut list = entries(old);
    if changed.is_empty() {
        store_entries(new, list);
        return;
    }
    for e in &mut list {
        e.fields.retain(|p| !changed.contains(p));
    }
    let idx = match list.iter().position(|e| {
        e.manager == manager && e.operation == "Update" && e.subresource == subresource
    }) {
        Some(i) => i,
        None => {
            list.push(new_entry(info, manager, "Update", subresource, now));
            list.len() - 1
        }
    };
    list[idx].fields.extend(changed);
    list[idx].raw["time"] = now.into();
    store_entries(new, list);
}

/// The object after `manager` applies `config` to `live`: merged, with the fields it stopped
/// applying removed and managed fields updated; or 409 with the conflicting fields.
pub fn apply(
    info: &ResourceInfo,
    live: &Value,
    config: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApiError> {
    let applied = fields_of(config);
    let mut list = entries(live);
    let name = live["metadata"]["name"].as_str().unwrap_or_default();
    let mut conflicts = Vec::new();
    for e in list
        .iter_mut()
        .filter(|e| !(e.manager == manager && e.operation == "Apply"))
    {
        let theirs: Vec<Path> = applied
            .iter()
            .filter(|p| e.fields.contains(*p) && value_at(live, p) != value_at(config, p))
            .cloned()
            .collect();
        if force {
            e.fields.retain(|p| !theirs.contains(p));
        } else {
            conflicts.extend(theirs.into_iter().map(|p| (e.manager.clone(), p)));
        }
    }
    if !conflicts.is_empty() {
        let causes: Vec<StatusCause> = conflicts
            .iter()
            .map(|(m, p)| {
                StatusCause::new(
                    "FieldManagerConflict",
                    display(p),
                    format!("conflict with {m:?} using {}", info.api_version()),
                )
            })
            .collect();
        let summary: Vec<String> = conflicts
            .iter()
            .map(|(m, p)| {
                format!(
                    "conflict with {m:?} using {}: {}",
                    info.api_version(),
                    display(p)
                )
            })
            .collect();
        let mut err = ApiError::conflict(
            info.group,
            info.plural,
            name,
            &format!(
                "Apply failed with {} conflict{}: {}",
                conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" },
                summary.join("\n")
            ),
        );
        err.message = format!(
            "Apply failed with {} conflict{}: {}",
            conflicts.len(),
            if conflicts.len() == 1 { "" } else { "s" },
            summary.join("\n")
        );
        err.causes = causes;
        return Err(err);
    }
    let mut merged = live.clone();
    let mut patch = config.clone();
    if let Some(meta) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        meta.remove("resourceVersion");
    }
    rkube_types::strategic::apply(info, &mut merged, &patch).map_err(|e| {
        ApiError::bad_request(format!("cannot merge the applied configuration: {e}"))
    })?;
    // Fields this manager applied before and no longer does go, unless someone else owns them.
    let previous = list
        .iter()
        .find(|e| e.manager == manager && e.operation == "Apply")
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    for path in previous.difference(&applied) {
        let owned_elsewhere = list
            .iter()
            .any(|e| !(e.manager == manager && e.operation == "Apply") && e.fields.contains(path));
        if !owned_elsewhere {
            remove_at(&mut merged, path);
        }
    }
    match list
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == "Apply")
    {
        Some(e) => {
            e.fields = applied;
            e.raw["time"] = now.into();
        }
        None => {
            let mut e = new_entry(info, manager, "Apply", "", now);
            e.fields = applied;
            list.push(e);
        }
    }
    store_entries(&mut merged, list);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy() -> &'static ResourceInfo {
        rkube_types::registry::lookup("apps", "v1", "deployments").expect("registered")
    }

    #[test]
    fn fields_v1_round_trips() {
        let obj = json!({"metadata": {"labels": {"a": "1"}, "finalizers": ["x"]},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let set = fields_of(&obj);
        let encoded = to_fields_v1(&set);
        assert_eq!(
            encoded["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["f:image"],
            json!({})
        );
        assert_eq!(from_fields_v1(&encoded), set);
    }

    #[test]
    fn a_second_manager_conflicts_unless_forced() {
        let live = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 1}});
        let first = apply(
            deploy(),
            &live,
            &json!({"spec": {"replicas": 1}}),
            "alice",
            false,
            "t",
        )
        .expect("first apply");
        let err = apply(
            deploy(),
            &first,
            &json!({"spec": {"replicas": 3}}),
            "bob",
            false,
            "t",
        )
        .expect_err("conflict");
        assert_eq!(err.code(), 409);
        assert_eq!(err.causes[0].field, ".spec.replicas");
        assert!(
            err.message.contains("conflict with \"alice\""),
            "{}",
            err.message
        );
        let forced = apply(
            deploy(),
            &first,
            &json!({"spec": {"replicas": 3}}),
            "bob",
            true,
            "t",
        )
        .expect("forced");
        assert_eq!(forced["spec"]["replicas"], 3);
        let owners: Vec<&str> = forced["metadata"]["managedFields"]
            .as_array()
            .expect("entries")
            .iter()
            .filter_map(|e| e["manager"].as_str())
            .collect();
        assert_eq!(owners, ["bob"], "alice lost her only field");
    }

    #[test]
    fn fields_no_longer_applied_are_removed() {
        let live = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 1}});
        let first = apply(
            deploy(),
            &live,
            &json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
            "alice",
            false,
            "t",
        )
        .expect("apply");
        let second = apply(
            deploy(),
            &first,
            &json!({"metadata": {"labels": {"a": "1"}}}),
            "alice",
            false,
            "t",
        )
        .expect("apply");
        assert_eq!(second["metadata"]["labels"], json!({"a": "1"}));
    }

    #[test]
    fn updates_take_ownership_of_what_they_change() {
        let old = json!({"metadata": {"name": "d"}, "spec": {"replicas": 1}});
        let applied = apply(
            deploy(),
            &old,
            &json!({"spec": {"replicas": 1}}),
            "alice",
            false,
            "t",
        )
        .expect("apply");
        let mut new = applied.clone();
        new["spec"]["replicas"] = 4.into();
        record_update(deploy(), &applied, &mut new, "kubectl-scale", "", "t");
        let err = apply(
            deploy(),
            &new,
            &json!({"spec": {"replicas": 1}}),
            "alice",
            false,
            "t",
        )
        .expect_err("conflict");
        assert!(err.message.contains("kubectl-scale"), "{}", err.message);
    }
}
