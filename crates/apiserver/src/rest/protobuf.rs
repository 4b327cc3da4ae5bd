//! Reading Kubernetes protobuf request bodies.
//!
//! client-go's typed clients (which `kubectl create namespace|configmap|secret|
//! serviceaccount` use) send `application/vnd.kubernetes.protobuf`: the `k8s\0` magic, then a
//! `runtime.Unknown` envelope (type meta and the raw object message). This module decodes the
//! protobuf wire format and turns the object into Kubernetes JSON with a small schema of the
//! kinds it knows; other kinds get 415 asking for JSON (every other client path of kubectl
//! sends JSON). Responses are always JSON, which these clients accept.

use base64::Engine;
use rkube_types::{ApiError, Reason};
use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\0";

/// One field as it is on the wire.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn bad(message: &str) -> ApiError {
    ApiError::bad_request(format!("unable to decode protobuf body: {message}"))
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, ApiError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos).ok_or_else(|| bad("truncated varint"))?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(bad("varint too long"))
}

/// The fields of one message, in order.
fn fields(buf: &[u8]) -> Result<Vec<(u32, Wire<'_>)>, ApiError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let number = u32::try_from(tag >> 3).map_err(|_| bad("field number out of range"))?;
        let wire = match tag & 7 {
            0 => Wire::Varint(varint(buf, &mut pos)?),
            1 => {
                pos = pos
                    .checked_add(8)
                    .filter(|p| *p <= buf.len())
                    .ok_or_else(|| bad("truncated fixed64"))?;
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?)
                    .map_err(|_| bad("length out of range"))?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or_else(|| bad("truncated field"))?;
                let bytes = &buf[pos..end];
                pos = end;
                Wire::Bytes(bytes)
            }
            5 => {
                pos = pos
                    .checked_add(4)
                    .filter(|p| *p <= buf.len())
                    .ok_or_else(|| bad("truncated fixed32"))?;
                Wire::Fixed
            }
            _ => return Err(bad("unsupported wire type")),
        };
        out.push((number, wire));
    }
    Ok(out)
}

/// How a field's value becomes JSON.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    /// `map<string, string>`.
    MapStr,
    /// `map<string, bytes>`.
    MapBytes,
    /// `metav1.Time`: `{seconds, nanos}` → RFC 3339.
    Time,
    Msg(&'static [Field]),
}

#[derive(Clone, Copy)]
struct Field {
    number: u32,
    name: &'static str,
    kind: Kind,
    repeated: bool,
}

const fn f(number: u32, name: &'static str, kind: Kind) -> Field {
    Field {
        number,
        name,
        kind,
        repeated: false,
    }
}

const fn list(number: u32, name: &'static str, kind: Kind) -> Field {
    Field {
        number,
        name,
        kind,
        repeated: true,
    }
}

const OWNER_REFERENCE: &[Field] = &[
    f(1, "kind", Kind::Str),
    f(3, "name", Kind::Str),
    f(4, "uid", Kind::Str),
    f(5, "apiVersion", Kind::Str),
    f(6, "controller", Kind::Bool),
    f(7, "blockOwnerDeletion", Kind::Bool),
];

const OBJECT_META: &[Field] = &[
    f(1, "name", Kind::Str),
    f(2, "generateName", Kind::Str),
    f(3, "namespace", Kind::Str),
    f(5, "uid", Kind::Str),
    f(6, "resourceVersion", Kind::Str),
    f(7, "generation", Kind::Int),
    f(8, "creationTimestamp", Kind::Time),
    f(9, "deletionTimestamp", Kind::Time),
    f(10, "deletionGracePeriodSeconds", Kind::Int),
    f(11, "labels", Kind::MapStr),
    f(12, "annotations", Kind::MapStr),
    list(13, "ownerReferences", Kind::Msg(OWNER_REFERENCE)),
    list(14, "finalizers", Kind::Str),
];

const OBJECT_REFERENCE: &[Field] = &[
    f(1, "kind", Kind::Str),
    f(2, "namespace", Kind::Str),
    f(3, "name", Kind::Str),
    f(4, "uid", Kind::Str),
    f(5, "apiVersion", Kind::Str),
    f(6, "resourceVersion", Kind::Str),
    f(7, "fieldPath", Kind::Str),
];

const CONFIG_MAP: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "data", Kind::MapStr),
    f(3, "binaryData", Kind::MapBytes),
    f(4, "immutable", Kind::Bool),
];

const SECRET: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "data", Kind::MapBytes),
    f(3, "type", Kind::Str),
    f(4, "stringData", Kind::MapStr),
    f(5, "immutable", Kind::Bool),
];

const NAMESPACE: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(&[list(1, "finalizers", Kind::Str)])),
    f(3, "status", Kind::Msg(&[f(1, "phase", Kind::Str)])),
];

const SERVICE_ACCOUNT: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    list(2, "secrets", Kind::Msg(OBJECT_REFERENCE)),
    list(3, "imagePullSecrets", Kind::Msg(&[f(1, "name", Kind::Str)])),
    f(4, "automountServiceAccountToken", Kind::Bool),
];

/// The schema of a kind this module can read.
fn schema(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    match (api_version, kind) {
        ("v1", "ConfigMap") => Some(CONFIG_MAP),
        ("v1", "Secret") => Some(SECRET),
        ("v1", "Namespace") => Some(NAMESPACE),
        ("v1", "ServiceAccount") => Some(SERVICE_ACCOUNT),
        _ => None,
    }
}

fn text(bytes: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| bad("a string field is not UTF-8"))
}

fn map_entry(bytes: &[u8], value_as_bytes: bool) -> Result<(String, Value), ApiError> {
    let mut key = String::new();
    let mut value = Value::String(String::new());
    for (number, wire) in fields(bytes)? {
        match (number, wire) {
            (1, Wire::Bytes(b)) => key = text(b)?,
            (2, Wire::Bytes(b)) if value_as_bytes => {
                value = base64::engine::general_purpose::STANDARD.encode(b).into();
            }
            (2, Wire::Bytes(b)) => value = text(b)?.into(),
            _ => {}
        }
    }
    Ok((key, value))
}

fn time(bytes: &[u8]) -> Result<Value, ApiError> {
    let mut seconds = 0i64;
    for (number, wire) in fields(bytes)? {
        if let (1, Wire::Varint(v)) = (number, wire) {
            seconds = v as i64;
        }
    }
    Ok(jiff::Timestamp::from_second(seconds)
        .map(|t| Value::String(t.to_string()))
        .unwrap_or(Value::Null))
}

fn value(kind: Kind, wire: Wire<'_>) -> Result<Option<Value>, ApiError> {
    Ok(Some(match (kind, wire) {
        (Kind::Str, Wire::Bytes(b)) => text(b)?.into(),
        (Kind::Int, Wire::Varint(v)) => (v as i64).into(),
        (Kind::Bool, Wire::Varint(v)) => (v != 0).into(),
        (Kind::Time, Wire::Bytes(b)) => time(b)?,
        (Kind::Msg(schema), Wire::Bytes(b)) => message(schema, b)?,
        _ => return Ok(None),
    }))
}

/// One message as JSON, by `schema`; unknown fields are skipped.
fn message(schema: &[Field], bytes: &[u8]) -> Result<Value, ApiError> {
    let mut out = Map::new();
    for (number, wire) in fields(bytes)? {
        let Some(field) = schema.iter().find(|f| f.number == number) else {
            continue;
        };
        match (field.kind, wire) {
            (Kind::MapStr | Kind::MapBytes, Wire::Bytes(b)) => {
                let (k, v) = map_entry(b, matches!(field.kind, Kind::MapBytes))?;
                let map = out.entry(field.name).or_insert_with(|| json!({}));
                if let Some(map) = map.as_object_mut() {
                    map.insert(k, v);
                }
            }
            (kind, wire) => {
                if let Some(v) = value(kind, wire)? {
                    if field.repeated {
                        let list = out.entry(field.name).or_insert_with(|| json!([]));
                        if let Some(list) = list.as_array_mut() {
                            list.push(v);
                        }
                    } else {
                        out.insert(field.name.to_string(), v);
                    }
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// The Kubernetes JSON of a protobuf-encoded object body.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("missing the k8s protobuf prefix"))?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (number, wire) in fields(envelope)? {
        match (number, wire) {
            (1, Wire::Bytes(type_meta)) => {
                for (n, w) in fields(type_meta)? {
                    match (n, w) {
                        (1, Wire::Bytes(b)) => api_version = text(b)?,
                        (2, Wire::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let schema = schema(&api_version, &kind).ok_or_else(|| {
        ApiError::new(
            Reason::UnsupportedMediaType,
            format!(
                "protobuf bodies are supported for ConfigMap, Secret, Namespace and ServiceAccount only; send {kind} as application/json"
            ),
        )
    })?;
    let mut obj = message(schema, raw)?;
    obj["apiVersion"] = api_version.into();
    obj["kind"] = kind.into();
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(number: u32, wire: u8) -> u8 {
        ((number << 3) as u8) | wire
    }

    fn bytes_field(number: u32, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag(number, 2), content.len() as u8];
        out.extend_from_slice(content);
        out
    }

    #[test]
    fn decodes_a_configmap_envelope() {
        let meta = bytes_field(1, b"web");
        let entry = [bytes_field(1, b"k"), bytes_field(2, b"v")].concat();
        let cm = [bytes_field(1, &meta), bytes_field(2, &entry)].concat();
        let type_meta = [bytes_field(1, b"v1"), bytes_field(2, b"ConfigMap")].concat();
        let body = [
            MAGIC.to_vec(),
            bytes_field(1, &type_meta),
            bytes_field(2, &cm),
        ]
        .concat();
        let obj = decode(&body).expect("decodes");
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web"}, "data": {"k": "v"}})
        );
    }

    #[test]
    fn garbage_is_a_400_not_a_panic() {
        for body in [&b"k8s\0\x0a\xff"[..], b"k8s\0\x0a", b"nope", b"k8s\0\x0f"] {
            let err = decode(body).expect_err("garbage");
            assert_eq!(err.code(), 400, "{err}");
        }
    }
}
