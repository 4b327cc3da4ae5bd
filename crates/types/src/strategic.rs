//! Strategic merge patch (`application/strategic-merge-patch+json`), as
//! `k8s.io/apimachinery/pkg/util/strategicpatch` applies it: what `kubectl apply` (client-side)
//! and `kubectl patch --type=strategic` send.
//!
//! Objects merge recursively and `null` deletes a key. Lists are replaced, unless the field is
//! tagged `patchStrategy:"merge"`: lists of objects then merge item by item, matched by the
//! field's merge key (`containers` by `name`, `ports` by `containerPort`, ...), and lists of
//! primitives (`metadata.finalizers`) become the union of both. Which fields merge depends on
//! the kind and the path, and comes from the table in `strategic/schema.rs`.
//!
//! The directives are honoured and never left in the result:
//! - `"$patch": "replace"` in a map replaces the map with the rest of the patch map; as an
//!   item of a merging list it replaces the whole list with the patch's other items.
//! - `"$patch": "delete"` in a map empties it; as an item `{"$patch": "delete", key: v}` of a
//!   merging list it deletes the items whose merge key is `v`.
//! - `"$patch": "merge"` is the default and changes nothing.
//! - `"$retainKeys": [..]` drops the keys of the original map that are not listed.
//! - `"$deleteFromPrimitiveList/<field>": [..]` removes those values from a list of
//!   primitives.
//! - `"$setElementOrder/<field>": [..]` orders a merging list: listed items in the listed
//!   order, the original's other items kept where they were relative to them.
//!
//! Merged lists are ordered as Kubernetes orders them: the patch's items in the patch's order
//! (or `$setElementOrder`'s), the original's other items where they were relative to them;
//! so without `$setElementOrder` an item new to the list goes before the original's items.
//!
//! Like Kubernetes (which applies patches with `IgnoreUnmatchedNulls`), a `null` for a key the
//! original lacks is dropped rather than stored. Unlike it, directives inside a value that is
//! new to the original are applied (to an empty value) instead of being stored verbatim.

use crate::registry::ResourceInfo;
use serde_json::{Map, Value};

mod schema;

use schema::{ListStrategy, Schema};

/// The key of the `$patch` directive.
const PATCH: &str = "$patch";
/// The key of the `$retainKeys` directive.
const RETAIN_KEYS: &str = "$retainKeys";
/// The key prefix of the `$setElementOrder/<field>` directive.
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
/// The key prefix of the `$deleteFromPrimitiveList/<field>` directive.
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Why a strategic merge patch could not be applied. Paths are Kubernetes field paths
/// (`spec.template.spec.containers[1]`); the top level is spelled `<root>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrategicError {
    /// The patch is not a JSON object.
    #[error("the patch must be a JSON object")]
    PatchNotObject,
    /// The object to patch is not a JSON object.
    #[error("the object to patch must be a JSON object")]
    OriginalNotObject,
    /// A `$patch` directive with a value other than `replace`, `delete` or `merge`.
    #[error(
        "invalid $patch directive {value} at {path}: must be \"replace\", \"delete\" or \"merge\""
    )]
    InvalidPatchDirective {
        /// Where the directive is.
        path: String,
        /// The directive's value, as JSON.
        value: String,
    },
    /// A key starting with `$` that is no directive.
    #[error("unknown directive {key:?} at {path}")]
    UnknownDirective {
        /// The map holding the key.
        path: String,
        /// The key.
        key: String,
    },
    /// A directive whose value must be a list but is not.
    #[error("{directive} at {path} must be a list")]
    DirectiveNotList {
        /// The map holding the directive.
        path: String,
        /// The directive's key.
        directive: String,
    },
    /// A `$retainKeys` list with an item that is not a string.
    #[error("$retainKeys at {path} must be a list of strings")]
    RetainKeysNotStrings {
        /// The map holding the directive.
        path: String,
    },
    /// A patch map sets a field its own `$retainKeys` does not list.
    #[error("field {field:?} at {path} is patched but not listed in $retainKeys")]
    NotRetained {
        /// The map holding the directive.
        path: String,
        /// The field.
        field: String,
    },
    /// An item of a list that merges by key lacks the key.
    #[error("list item {path} has no merge key {key:?}")]
    MissingMergeKey {
        /// The item.
        path: String,
        /// The merge key of the list.
        key: &'static str,
    },
    /// An item of a list that merges by key is not an object.
    #[error("list item {path} must be an object, as the list merges by {key:?}")]
    ItemNotObject {
        /// The item.
        path: String,
        /// The merge key of the list.
        key: &'static str,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = StrategicError> = std::result::Result<T, E>;

/// Applies a strategic merge patch to `original` (Kubernetes JSON of an object of `info`'s
/// kind), in place. On error `original` is left unchanged.
pub fn apply(info: &ResourceInfo, original: &mut Value, patch: &Value) -> Result<()> {
    let patch = patch.as_object().ok_or(StrategicError::PatchNotObject)?;
    let Value::Object(original) = original else {
        return Err(StrategicError::OriginalNotObject);
    };
    let mut merged = original.clone();
    merge_map(&mut merged, patch, Schema::top(info), "")?;
    *original = merged;
    Ok(())
}

/// A `$patch` directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Directive {
    Replace,
    Delete,
    Merge,
}

/// The `$patch` directive of a patch map, if it has one.
fn directive(patch: &Map<String, Value>, path: &str) -> Result<Option<Directive>> {
    match patch.get(PATCH) {
        None => Ok(None),
        Some(Value::String(s)) if s == "replace" => Ok(Some(Directive::Replace)),
        Some(Value::String(s)) if s == "delete" => Ok(Some(Directive::Delete)),
        Some(Value::String(s)) if s == "merge" => Ok(Some(Directive::Merge)),
        Some(other) => Err(StrategicError::InvalidPatchDirective {
            path: shown(path),
            value: other.to_string(),
        }),
    }
}

/// A path for error messages.
fn shown(path: &str) -> String {
    if path.is_empty() {
        "<root>".to_string()
    } else {
        path.to_string()
    }
}

/// The path of `field` below `path`.
fn field_path(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// Merges a patch map into an original map of type `schema`.
fn merge_map(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    schema: Schema,
    path: &str,
) -> Result<()> {
    match directive(patch, path)? {
        Some(Directive::Replace) => {
            let mut fresh = Map::new();
            merge_fields(&mut fresh, patch, schema, path)?;
            *original = fresh;
            Ok(())
        }
        Some(Directive::Delete) => {
            original.clear();
            Ok(())
        }
        Some(Directive::Merge) | None => merge_fields(original, patch, schema, path),
    }
}

/// The value of a directive that must be a list.
fn directive_list<'a>(value: &'a Value, key: &str, path: &str) -> Result<&'a [Value]> {
    value
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| StrategicError::DirectiveNotList {
            path: shown(path),
            directive: key.to_string(),
        })
}

/// Merges the fields of a patch map (all but `$patch`) into `original`.
fn merge_fields(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    schema: Schema,
    path: &str,
) -> Result<()> {
    let mut retain = None;
    let mut deletions = Vec::new();
    let mut orders = Vec::new();
    for (key, value) in patch {
        if key == PATCH {
            continue;
        } else if key == RETAIN_KEYS {
            retain = Some(directive_list(value, key, path)?);
        } else if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            deletions.push((field, directive_list(value, key, path)?));
        } else if let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) {
            let order = directive_list(value, key, path)?;
            // The order applies to the list as it was before the patch.
            let before = original.get(field).and_then(Value::as_array).cloned();
            orders.push((field, order, before));
        } else if key.starts_with('$') {
            return Err(StrategicError::UnknownDirective {
                path: shown(path),
                key: key.clone(),
            });
        }
    }

    if let Some(retain) = retain {
        let not_strings = || StrategicError::RetainKeysNotStrings { path: shown(path) };
        let keep = retain
            .iter()
            .map(|k| k.as_str().ok_or_else(not_strings))
            .collect::<Result<Vec<_>>>()?;
        if let Some((field, _)) = patch
            .iter()
            .find(|(k, v)| !k.starts_with('$') && !v.is_null() && !keep.contains(&k.as_str()))
        {
            return Err(StrategicError::NotRetained {
                path: shown(path),
                field: field.clone(),
            });
        }
        original.retain(|k, _| keep.contains(&k.as_str()));
    }

    for (field, values) in deletions {
        if let Some(Value::Array(items)) = original.get_mut(field) {
            items.retain(|item| !values.iter().any(|v| same(item, v)));
        }
    }

    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            original.remove(key);
            continue;
        }
        let child_path = field_path(path, key);
        let (child, strategy) = schema.child(key);
        match (original.get_mut(key), value) {
            (Some(Value::Object(o)), Value::Object(p)) => merge_map(o, p, child, &child_path)?,
            (Some(Value::Array(o)), Value::Array(p)) => {
                merge_list(o, p, child, strategy, &child_path)?;
            }
            _ => match materialize(value, child, strategy, &child_path)? {
                Some(v) => {
                    original.insert(key.clone(), v);
                }
                None => {
                    original.remove(key);
                }
            },
        }
    }

    for (field, order, before) in orders {
        let key = match schema.child(field).1 {
            ListStrategy::MergeByKey(key) => Some(key),
            ListStrategy::MergePrimitive => None,
            // A replaced list is in the patch's order already.
            ListStrategy::Replace => continue,
        };
        if let Some(Value::Array(items)) = original.get_mut(field) {
            let order_ids = identities(order, key);
            let before_ids = identities(before.as_deref().unwrap_or_default(), key);
            if items.iter().all(|item| identity(item, key).is_some()) {
                *items = normalize_order(std::mem::take(items), &order_ids, &before_ids, key);
            }
        }
    }
    Ok(())
}

/// The value a patch value stands for where the original has nothing: the patch applied to
/// an empty value, so that directives are applied and nulls dropped. `None` means no value.
fn materialize(
    patch: &Value,
    schema: Schema,
    strategy: ListStrategy,
    path: &str,
) -> Result<Option<Value>> {
    Ok(match patch {
        Value::Null => None,
        Value::Object(patch) => {
            if directive(patch, path)? == Some(Directive::Delete) {
                return Ok(None);
            }
            let mut fresh = Map::new();
            merge_map(&mut fresh, patch, schema, path)?;
            Some(Value::Object(fresh))
        }
        Value::Array(patch) => {
            let mut fresh = Vec::new();
            merge_list(&mut fresh, patch, schema, strategy, path)?;
            Some(Value::Array(fresh))
        }
        scalar => Some(scalar.clone()),
    })
}

/// Merges a patch list into an original list whose items are of type `schema`.
fn merge_list(
    original: &mut Vec<Value>,
    patch: &[Value],
    schema: Schema,
    strategy: ListStrategy,
    path: &str,
) -> Result<()> {
    match strategy {
        ListStrategy::Replace => {
            let mut items = Vec::with_capacity(patch.len());
            for (i, item) in patch.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                if let Value::Object(map) = item
                    && directive(map, &item_path)?.is_some()
                {
                    // List directives mean nothing in a list that is replaced anyway.
                    continue;
                }
                items.extend(materialize(
                    item,
                    schema,
                    ListStrategy::Replace,
                    &item_path,
                )?);
            }
            *original = items;
            Ok(())
        }
        ListStrategy::MergePrimitive => merge_primitives(original, patch, path),
        ListStrategy::MergeByKey(key) => merge_by_key(original, patch, schema, key, path),
    }
}

/// Merges a list of primitives: the union, in the patch's order where it gives one.
fn merge_primitives(original: &mut Vec<Value>, patch: &[Value], path: &str) -> Result<()> {
    let mut replace = false;
    let mut items = Vec::with_capacity(patch.len());
    for (i, item) in patch.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        if let Value::Object(map) = item
            && let Some(directive) = directive(map, &item_path)?
        {
            replace |= directive == Directive::Replace;
            continue;
        }
        items.extend(materialize(
            item,
            Schema::Unknown,
            ListStrategy::Replace,
            &item_path,
        )?);
    }
    if replace {
        *original = dedup(items);
        return Ok(());
    }
    let before = std::mem::take(original);
    let merged = dedup(before.iter().chain(&items).cloned().collect());
    *original = normalize_order(
        merged,
        &identities(&items, None),
        &identities(&before, None),
        None,
    );
    Ok(())
}

/// Merges a list of objects item by item, matched by `key`.
fn merge_by_key(
    original: &mut Vec<Value>,
    patch: &[Value],
    schema: Schema,
    key: &'static str,
    path: &str,
) -> Result<()> {
    let mut replace = false;
    let mut items = Vec::with_capacity(patch.len());
    for (i, item) in patch.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        let Value::Object(map) = item else {
            return Err(StrategicError::ItemNotObject {
                path: item_path,
                key,
            });
        };
        let key_value = map.get(key).filter(|v| !v.is_null());
        match directive(map, &item_path)? {
            Some(Directive::Delete) => {
                let value = key_value.ok_or(StrategicError::MissingMergeKey {
                    path: item_path,
                    key,
                })?;
                original.retain(|o| !has_key_value(o, key, value));
            }
            Some(Directive::Replace) => replace = true,
            // A bare `{"$patch": "merge"}` asks for what happens anyway.
            Some(Directive::Merge) if map.len() == 1 => {}
            Some(Directive::Merge) | None => {
                let value = key_value.ok_or_else(|| StrategicError::MissingMergeKey {
                    path: item_path.clone(),
                    key,
                })?;
                items.push((item_path, map, value));
            }
        }
    }

    if replace {
        let mut fresh = Vec::with_capacity(items.len());
        for (item_path, map, _) in items {
            let mut item = Map::new();
            merge_map(&mut item, map, schema, &item_path)?;
            fresh.push(Value::Object(item));
        }
        *original = fresh;
        return Ok(());
    }

    let before = original.clone();
    for (item_path, map, value) in &items {
        match original.iter_mut().find(|o| has_key_value(o, key, value)) {
            Some(Value::Object(existing)) => merge_map(existing, map, schema, item_path)?,
            _ => {
                let mut item = Map::new();
                merge_map(&mut item, map, schema, item_path)?;
                original.push(Value::Object(item));
            }
        }
    }
    // Items of the original without the key cannot be placed; leave such lists as merged.
    if original
        .iter()
        .all(|item| identity(item, Some(key)).is_some())
    {
        let patch_ids: Vec<&Value> = items.iter().map(|(_, _, value)| *value).collect();
        *original = normalize_order(
            std::mem::take(original),
            &patch_ids,
            &identities(&before, Some(key)),
            Some(key),
        );
    }
    Ok(())
}

/// What identifies a list item: its merge key's value, or the item itself in a list of
/// primitives.
fn identity<'a>(item: &'a Value, key: Option<&str>) -> Option<&'a Value> {
    match key {
        Some(key) => item.get(key).filter(|v| !v.is_null()),
        None => Some(item),
    }
}

/// The identities of the items of a list that have one.
fn identities<'a>(items: &'a [Value], key: Option<&str>) -> Vec<&'a Value> {
    items
        .iter()
        .filter_map(|item| identity(item, key))
        .collect()
}

/// Where the item identified by `id` is in `order`.
fn position(order: &[&Value], id: &Value) -> Option<usize> {
    order.iter().position(|o| same(o, id))
}

/// Orders a merged list as Kubernetes' `normalizeElementOrder` does: the items named in
/// `patch_order` in that order, the others in their `server_order` order, and the two
/// interleaved so that an item of the original goes before a patch item it preceded there.
fn normalize_order(
    merged: Vec<Value>,
    patch_order: &[&Value],
    server_order: &[&Value],
    key: Option<&str>,
) -> Vec<Value> {
    let pos =
        |order: &[&Value], item: &Value| identity(item, key).and_then(|id| position(order, id));
    let (mut patched, mut server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|item| pos(patch_order, item).is_some());
    patched.sort_by_key(|item| pos(patch_order, item).unwrap_or(usize::MAX));
    server_only.sort_by_key(|item| pos(server_order, item).unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(patched.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patched.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (Some(l), Some(r)) => {
                matches!(
                    (pos(server_order, l), pos(server_order, r)),
                    (Some(li), Some(ri)) if li < ri
                )
            }
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        out.extend(if take_left { left.next() } else { right.next() });
    }
    out
}

/// Whether `item` is an object whose `key` equals `value`.
fn has_key_value(item: &Value, key: &str, value: &Value) -> bool {
    item.get(key).is_some_and(|v| same(v, value))
}

/// JSON equality, except that numbers compare by value (`80` equals `80.0`), as they do
/// in Go, where JSON numbers decode to `float64`.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(x), Some(y)) if x == y)
        }
        _ => a == b,
    }
}

/// The items without later repetitions.
fn dedup(items: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(items.len());
    for item in items {
        if !out.iter().any(|o| same(o, &item)) {
            out.push(item);
        }
    }
    out
}

#[cfg(test)]
mod tests;
