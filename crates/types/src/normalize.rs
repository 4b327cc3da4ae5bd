//! Normalization of objects to the form Kubernetes stores: decoded into their `k8s-openapi`
//! type and encoded again, so unknown fields disappear exactly as they do when Kubernetes
//! decodes JSON into its Go structs, and values such as quantities given as numbers or times
//! with offsets come back in their canonical spelling.
//!
//! The round trip alone would also add fields: `k8s-openapi` fills required fields that are
//! missing (`metadata: {}`, `containers: []`, `name: ""`) and always writes `apiVersion` and
//! `kind`. Kubernetes does not store what was not sent, so [`normalize`] keeps only the keys the
//! original object had (with a non-null value), and copies `apiVersion` and `kind` verbatim.
//! [`unknown_fields`] then names what the round trip dropped, for the warnings (or, with
//! strict field validation, the errors) the API server reports.

use crate::registry::ResourceInfo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde::de::value::MapDeserializer;
use serde_json::{Map, Value};

/// Why an object could not be normalized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    /// The object is not a JSON object.
    #[error("the object must be a JSON object")]
    NotAnObject,
    /// The object does not decode into the kind's type (a field has the wrong type, a
    /// quantity or time does not parse, ...); carries the decoder's message.
    #[error("{0}")]
    Decode(String),
    /// The decoded object could not be encoded again (a time out of range, ...).
    #[error("cannot encode the object: {0}")]
    Encode(String),
    /// The resource has no `k8s-openapi` type in the registry's table.
    #[error("kind {kind} of group {group:?} is not registered")]
    NotRegistered {
        /// API group of the resource (`""` for core).
        group: &'static str,
        /// Kind of the resource.
        kind: &'static str,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = NormalizeError> = std::result::Result<T, E>;

/// The object as Kubernetes stores it: decoded into its `k8s-openapi` type and encoded again,
/// which drops unknown fields exactly as Kubernetes' decoding into Go structs does.
/// `apiVersion` and `kind` are kept as given (and not added when absent); no other field is
/// added either, and present-but-empty values (`data: {}`, `args: []`) are kept.
pub fn normalize(info: &ResourceInfo, obj: &Value) -> Result<Value, NormalizeError> {
    let map = obj.as_object().ok_or(NormalizeError::NotAnObject)?;
    let mut out = round_trip(info, map)?;
    keep_only_given(&mut out, obj);
    if let Value::Object(out_map) = &mut out {
        for key in ["apiVersion", "kind"] {
            match map.get(key) {
                Some(value) if !value.is_null() => {
                    out_map.insert(key.to_string(), value.clone());
                }
                _ => {
                    out_map.remove(key);
                }
            }
        }
    }
    Ok(out)
}

/// JSON paths of the fields of `original` that `normalized` dropped (unknown fields), in
/// Kubernetes' spelling: `spec.foo`, `spec.containers[0].imagePullPolcy`, `metadata.labelz`.
/// Fields whose value is `null` don't count (Kubernetes drops those silently).
pub fn unknown_fields(original: &Value, normalized: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect_dropped(original, normalized, "", &mut out);
    out
}

/// Decodes and re-encodes `obj` as the `k8s-openapi` type of `info`.
fn round_trip(info: &ResourceInfo, obj: &Map<String, Value>) -> Result<Value, NormalizeError> {
    macro_rules! round_trips {
        ($($ty:ty),* $(,)?) => {
            $(
                if info.group == <$ty as k8s_openapi::Resource>::GROUP
                    && info.kind == <$ty as k8s_openapi::Resource>::KIND
                {
                    return encode(&decode::<$ty>(obj)?);
                }
            )*
        };
    }
    crate::for_each_kind!(round_trips);
    Err(NormalizeError::NotRegistered {
        group: info.group,
        kind: info.kind,
    })
}

/// Decodes `obj` as `T`, ignoring `apiVersion` and `kind` (the registry already matched them,
/// and `k8s-openapi` would refuse a missing or differently spelled one).
fn decode<T: DeserializeOwned>(obj: &Map<String, Value>) -> Result<T, NormalizeError> {
    let fields = obj
        .iter()
        .filter(|(k, _)| k.as_str() != "apiVersion" && k.as_str() != "kind")
        .map(|(k, v)| (k.as_str(), v));
    T::deserialize(MapDeserializer::<_, serde_json::Error>::new(fields))
        .map_err(|e| NormalizeError::Decode(e.to_string()))
}

fn encode<T: Serialize>(value: &T) -> Result<Value, NormalizeError> {
    serde_json::to_value(value).map_err(|e| NormalizeError::Encode(e.to_string()))
}

/// Removes from `out` every object key that `given` (the same position in the original) does
/// not have, or has as `null`: the fields `k8s-openapi` filled in on its own.
fn keep_only_given(out: &mut Value, given: &Value) {
    match (out, given) {
        (Value::Object(out), Value::Object(given)) => {
            out.retain(|key, value| match given.get(key) {
                None | Some(Value::Null) => false,
                Some(given_value) => {
                    keep_only_given(value, given_value);
                    true
                }
            });
        }
        (Value::Array(out), Value::Array(given)) => {
            for (value, given_value) in out.iter_mut().zip(given) {
                keep_only_given(value, given_value);
            }
        }
        _ => {}
    }
}

/// Appends to `out` the paths below `path` of the non-null keys of `original` that
/// `normalized` lacks.
fn collect_dropped(original: &Value, normalized: &Value, path: &str, out: &mut Vec<String>) {
    match (original, normalized) {
        (Value::Object(original), Value::Object(normalized)) => {
            for (key, value) in original {
                if value.is_null() {
                    continue;
                }
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match normalized.get(key) {
                    None => out.push(child),
                    Some(kept) => collect_dropped(value, kept, &child, out),
                }
            }
        }
        (Value::Array(original), Value::Array(normalized)) => {
            for (i, (value, kept)) in original.iter().zip(normalized).enumerate() {
                collect_dropped(value, kept, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
