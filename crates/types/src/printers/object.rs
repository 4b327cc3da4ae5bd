//! Forgiving reads of Kubernetes JSON for the printers: a missing, `null` or mistyped field
//! reads as its zero value (`""`, `0`, `false`, empty list), as it would after Go decodes the
//! object into its typed struct, so a malformed object prints instead of failing.

use super::time::Timestamp;
use serde_json::Value;
use std::collections::BTreeMap;

/// `null`, returned for paths that lead nowhere.
static NULL: Value = Value::Null;

/// A borrowed view of a JSON object with path-based getters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Obj<'a>(pub(crate) &'a Value);

impl<'a> Obj<'a> {
    /// The value at `path`, if present and not `null`.
    pub(crate) fn get(&self, path: &[&str]) -> Option<&'a Value> {
        let mut v = self.0;
        for key in path {
            v = v.get(key)?;
        }
        (!v.is_null()).then_some(v)
    }

    /// The sub-object at `path` (a view of `null` when absent).
    pub(crate) fn at(&self, path: &[&str]) -> Obj<'a> {
        Obj(self.get(path).unwrap_or(&NULL))
    }

    /// Whether this view is of a present (non-`null`) value.
    pub(crate) fn present(&self) -> bool {
        !self.0.is_null()
    }

    /// Whether a non-`null` value is present at `path`.
    pub(crate) fn has(&self, path: &[&str]) -> bool {
        self.get(path).is_some()
    }

    /// The string at `path`, if present.
    pub(crate) fn opt_str(&self, path: &[&str]) -> Option<&'a str> {
        self.get(path).and_then(Value::as_str)
    }

    /// The string at `path`, or `""`.
    pub(crate) fn str(&self, path: &[&str]) -> &'a str {
        self.opt_str(path).unwrap_or("")
    }

    /// The string at `path`, or `default` when absent or empty (as API defaulting fills
    /// empty enum fields).
    pub(crate) fn str_or(&self, path: &[&str], default: &'a str) -> &'a str {
        match self.str(path) {
            "" => default,
            s => s,
        }
    }

    /// The integer at `path`, if present.
    pub(crate) fn opt_int(&self, path: &[&str]) -> Option<i64> {
        let v = self.get(path)?;
        v.as_i64()
            .or_else(|| v.as_u64().map(|u| i64::try_from(u).unwrap_or(i64::MAX)))
            .or_else(|| v.as_f64().map(|f| f as i64))
    }

    /// The integer at `path`, or 0.
    pub(crate) fn int(&self, path: &[&str]) -> i64 {
        self.opt_int(path).unwrap_or(0)
    }

    /// The boolean at `path`, if present.
    pub(crate) fn opt_bool(&self, path: &[&str]) -> Option<bool> {
        self.get(path).and_then(Value::as_bool)
    }

    /// The boolean at `path`, or `false`.
    pub(crate) fn bool(&self, path: &[&str]) -> bool {
        self.opt_bool(path).unwrap_or(false)
    }

    /// The array at `path`, or an empty slice.
    pub(crate) fn list(&self, path: &[&str]) -> &'a [Value] {
        self.get(path)
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// The number of entries of the object (map) at `path`.
    pub(crate) fn map_len(&self, path: &[&str]) -> usize {
        self.get(path)
            .and_then(Value::as_object)
            .map_or(0, serde_json::Map::len)
    }

    /// The string map at `path` (labels, selectors, annotations), sorted by key; non-string
    /// values are skipped.
    pub(crate) fn string_map(&self, path: &[&str]) -> BTreeMap<&'a str, &'a str> {
        self.get(path)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
            .collect()
    }

    /// The timestamp at `path`, if present and valid RFC 3339.
    pub(crate) fn time(&self, path: &[&str]) -> Option<Timestamp> {
        self.opt_str(path).and_then(Timestamp::parse)
    }

    /// `metadata.name`.
    pub(crate) fn name(&self) -> &'a str {
        self.str(&["metadata", "name"])
    }

    /// `metadata.creationTimestamp`.
    pub(crate) fn created(&self) -> Option<Timestamp> {
        self.time(&["metadata", "creationTimestamp"])
    }

    /// Whether `metadata.deletionTimestamp` is set.
    pub(crate) fn deleting(&self) -> bool {
        self.has(&["metadata", "deletionTimestamp"])
    }

    /// The annotation `key`, if present.
    pub(crate) fn annotation(&self, key: &str) -> Option<&'a str> {
        self.opt_str(&["metadata", "annotations", key])
    }
}

/// Views of the elements of a JSON array.
pub(crate) fn each(list: &[Value]) -> impl DoubleEndedIterator<Item = Obj<'_>> {
    list.iter().map(Obj)
}
