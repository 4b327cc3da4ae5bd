//! Reading Kubernetes protobuf request bodies.
//!
//! client-go's typed clients (which `kubectl create namespace|configmap|secret|
//! serviceaccount` use) send `application/vnd.kubernetes.protobuf`: the `k8s\0` magic, then a
//! `runtime.Unknown` envelope (type meta and the raw object message). This module decodes the
//! protobuf wire format and turns the object into Kubernetes JSON with a small schema of the
//! kinds it knows: ConfigMap, Secret, Namespace and ServiceAccount in full, and the parts of
//! Deployment, Job, CronJob and Service that `kubectl create deployment|job|cronjob|service`
//! write. A field the schema does not know is refused with 415 asking for JSON (unless it is
//! empty, as the zero-valued structs Go always encodes), so nothing is dropped silently;
//! other kinds get the same 415 (every other client path of kubectl sends JSON). Responses
//! are always JSON, which these clients accept.

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
    /// `intstr.IntOrString`: `{type, intVal, strVal}` → a JSON number or string.
    IntOrString,
    /// `map<string, resource.Quantity>`.
    MapQuantity,
    Msg(&'static [Field]),
}

#[derive(Clone, Copy)]
struct Field {
    number: u32,
    name: &'static str,
    kind: Kind,
    repeated: bool,
    /// A pointer field in Go: present only when set, so even a zero value is kept. Other
    /// scalar fields are always on the wire, and their zero value means "unset".
    pointer: bool,
}

const fn f(number: u32, name: &'static str, kind: Kind) -> Field {
    Field {
        number,
        name,
        kind,
        repeated: false,
        pointer: false,
    }
}

const fn opt(number: u32, name: &'static str, kind: Kind) -> Field {
    Field {
        number,
        name,
        kind,
        repeated: false,
        pointer: true,
    }
}

const fn list(number: u32, name: &'static str, kind: Kind) -> Field {
    Field {
        number,
        name,
        kind,
        repeated: true,
        pointer: false,
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

const LABEL_SELECTOR: &[Field] = &[
    f(1, "matchLabels", Kind::MapStr),
    list(
        2,
        "matchExpressions",
        Kind::Msg(&[
            f(1, "key", Kind::Str),
            f(2, "operator", Kind::Str),
            list(3, "values", Kind::Str),
        ]),
    ),
];

const CONTAINER_PORT: &[Field] = &[
    f(1, "name", Kind::Str),
    f(2, "hostPort", Kind::Int),
    f(3, "containerPort", Kind::Int),
    f(4, "protocol", Kind::Str),
    f(5, "hostIP", Kind::Str),
];

const CONTAINER: &[Field] = &[
    f(1, "name", Kind::Str),
    f(2, "image", Kind::Str),
    list(3, "command", Kind::Str),
    list(4, "args", Kind::Str),
    f(5, "workingDir", Kind::Str),
    list(6, "ports", Kind::Msg(CONTAINER_PORT)),
    list(
        7,
        "env",
        Kind::Msg(&[f(1, "name", Kind::Str), f(2, "value", Kind::Str)]),
    ),
    f(
        8,
        "resources",
        Kind::Msg(&[
            f(1, "limits", Kind::MapQuantity),
            f(2, "requests", Kind::MapQuantity),
        ]),
    ),
    f(13, "terminationMessagePath", Kind::Str),
    f(14, "imagePullPolicy", Kind::Str),
    f(20, "terminationMessagePolicy", Kind::Str),
];

const POD_SPEC: &[Field] = &[
    list(2, "containers", Kind::Msg(CONTAINER)),
    f(3, "restartPolicy", Kind::Str),
    opt(4, "terminationGracePeriodSeconds", Kind::Int),
    opt(5, "activeDeadlineSeconds", Kind::Int),
    f(6, "dnsPolicy", Kind::Str),
    f(7, "nodeSelector", Kind::MapStr),
    f(8, "serviceAccountName", Kind::Str),
    f(10, "nodeName", Kind::Str),
    f(11, "hostNetwork", Kind::Bool),
    f(14, "securityContext", Kind::Msg(&[])),
    f(16, "hostname", Kind::Str),
    f(17, "subdomain", Kind::Str),
    f(19, "schedulerName", Kind::Str),
    list(20, "initContainers", Kind::Msg(CONTAINER)),
    opt(21, "automountServiceAccountToken", Kind::Bool),
    list(
        22,
        "tolerations",
        Kind::Msg(&[
            f(1, "key", Kind::Str),
            f(2, "operator", Kind::Str),
            f(3, "value", Kind::Str),
            f(4, "effect", Kind::Str),
            opt(5, "tolerationSeconds", Kind::Int),
        ]),
    ),
    f(24, "priorityClassName", Kind::Str),
    opt(30, "enableServiceLinks", Kind::Bool),
];

const POD_TEMPLATE_SPEC: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(POD_SPEC)),
];

const DEPLOYMENT: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(
        2,
        "spec",
        Kind::Msg(&[
            opt(1, "replicas", Kind::Int),
            f(2, "selector", Kind::Msg(LABEL_SELECTOR)),
            f(3, "template", Kind::Msg(POD_TEMPLATE_SPEC)),
            f(
                4,
                "strategy",
                Kind::Msg(&[
                    f(1, "type", Kind::Str),
                    f(
                        2,
                        "rollingUpdate",
                        Kind::Msg(&[
                            opt(1, "maxUnavailable", Kind::IntOrString),
                            opt(2, "maxSurge", Kind::IntOrString),
                        ]),
                    ),
                ]),
            ),
            f(5, "minReadySeconds", Kind::Int),
            opt(6, "revisionHistoryLimit", Kind::Int),
            f(7, "paused", Kind::Bool),
            opt(9, "progressDeadlineSeconds", Kind::Int),
        ]),
    ),
    // Status is the controllers' to write; an empty one is what kubectl sends.
    f(3, "status", Kind::Msg(&[])),
];

const JOB_SPEC: &[Field] = &[
    opt(1, "parallelism", Kind::Int),
    opt(2, "completions", Kind::Int),
    opt(3, "activeDeadlineSeconds", Kind::Int),
    f(4, "selector", Kind::Msg(LABEL_SELECTOR)),
    opt(5, "manualSelector", Kind::Bool),
    f(6, "template", Kind::Msg(POD_TEMPLATE_SPEC)),
    opt(7, "backoffLimit", Kind::Int),
    opt(8, "ttlSecondsAfterFinished", Kind::Int),
    opt(9, "completionMode", Kind::Str),
    opt(10, "suspend", Kind::Bool),
];

const JOB: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(JOB_SPEC)),
    f(3, "status", Kind::Msg(&[])),
];

const CRON_JOB: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(
        2,
        "spec",
        Kind::Msg(&[
            f(1, "schedule", Kind::Str),
            opt(2, "startingDeadlineSeconds", Kind::Int),
            f(3, "concurrencyPolicy", Kind::Str),
            opt(4, "suspend", Kind::Bool),
            f(
                5,
                "jobTemplate",
                Kind::Msg(&[
                    f(1, "metadata", Kind::Msg(OBJECT_META)),
                    f(2, "spec", Kind::Msg(JOB_SPEC)),
                ]),
            ),
            opt(6, "successfulJobsHistoryLimit", Kind::Int),
            opt(7, "failedJobsHistoryLimit", Kind::Int),
            opt(8, "timeZone", Kind::Str),
        ]),
    ),
    f(3, "status", Kind::Msg(&[])),
];

const SERVICE: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(
        2,
        "spec",
        Kind::Msg(&[
            list(
                1,
                "ports",
                Kind::Msg(&[
                    f(1, "name", Kind::Str),
                    f(2, "protocol", Kind::Str),
                    f(3, "port", Kind::Int),
                    f(4, "targetPort", Kind::IntOrString),
                    f(5, "nodePort", Kind::Int),
                    opt(6, "appProtocol", Kind::Str),
                ]),
            ),
            f(2, "selector", Kind::MapStr),
            f(3, "clusterIP", Kind::Str),
            f(4, "type", Kind::Str),
            list(5, "externalIPs", Kind::Str),
            f(7, "sessionAffinity", Kind::Str),
            f(10, "externalName", Kind::Str),
            list(18, "clusterIPs", Kind::Str),
        ]),
    ),
    // kubectl sends `status: {loadBalancer: {}}`.
    f(
        3,
        "status",
        Kind::Msg(&[f(1, "loadBalancer", Kind::Msg(&[]))]),
    ),
];

/// The schema of a kind this module can read.
fn schema(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    match (api_version, kind) {
        ("v1", "ConfigMap") => Some(CONFIG_MAP),
        ("v1", "Secret") => Some(SECRET),
        ("v1", "Namespace") => Some(NAMESPACE),
        ("v1", "ServiceAccount") => Some(SERVICE_ACCOUNT),
        ("v1", "Service") => Some(SERVICE),
        ("apps/v1", "Deployment") => Some(DEPLOYMENT),
        ("batch/v1", "Job") => Some(JOB),
        ("batch/v1", "CronJob") => Some(CRON_JOB),
        _ => None,
    }
}

fn text(bytes: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| bad("a string field is not UTF-8"))
}

fn map_entry(bytes: &[u8], kind: Kind) -> Result<(String, Value), ApiError> {
    let mut key = String::new();
    let mut value = Value::String(String::new());
    for (number, wire) in fields(bytes)? {
        match (number, wire) {
            (1, Wire::Bytes(b)) => key = text(b)?,
            (2, Wire::Bytes(b)) if matches!(kind, Kind::MapBytes) => {
                value = base64::engine::general_purpose::STANDARD.encode(b).into();
            }
            (2, Wire::Bytes(b)) if matches!(kind, Kind::MapQuantity) => value = quantity(b)?,
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

fn quantity(bytes: &[u8]) -> Result<Value, ApiError> {
    let mut out = Value::String(String::new());
    for (number, wire) in fields(bytes)? {
        if let (1, Wire::Bytes(b)) = (number, wire) {
            out = text(b)?.into();
        }
    }
    Ok(out)
}

fn int_or_string(bytes: &[u8]) -> Result<Value, ApiError> {
    let (mut is_string, mut int, mut string) = (false, 0i64, String::new());
    for (number, wire) in fields(bytes)? {
        match (number, wire) {
            (1, Wire::Varint(v)) => is_string = v == 1,
            (2, Wire::Varint(v)) => int = i64::from(v as i32),
            (3, Wire::Bytes(b)) => string = text(b)?,
            _ => {}
        }
    }
    Ok(if is_string { string.into() } else { int.into() })
}

fn value(kind: Kind, wire: Wire<'_>) -> Result<Option<Value>, ApiError> {
    Ok(Some(match (kind, wire) {
        (Kind::Str, Wire::Bytes(b)) => text(b)?.into(),
        (Kind::Int, Wire::Varint(v)) => (v as i64).into(),
        (Kind::Bool, Wire::Varint(v)) => (v != 0).into(),
        (Kind::Time, Wire::Bytes(b)) => time(b)?,
        (Kind::IntOrString, Wire::Bytes(b)) => int_or_string(b)?,
        (Kind::Msg(schema), Wire::Bytes(b)) => message(schema, b)?,
        _ => return Ok(None),
    }))
}

/// Whether a non-pointer scalar holds its zero value, which Go writes for unset fields:
/// an empty string, 0, false, the zero time or an IntOrString of 0.
fn is_zero(kind: Kind, wire: &Wire<'_>) -> Result<bool, ApiError> {
    Ok(match (kind, wire) {
        (Kind::Str | Kind::Int | Kind::Bool, Wire::Varint(v)) => *v == 0,
        (Kind::Str | Kind::Time, Wire::Bytes([])) => true,
        (Kind::Time, Wire::Bytes(b)) => time(b)? == Value::String("1970-01-01T00:00:00Z".into()),
        (Kind::IntOrString, Wire::Bytes(b)) => int_or_string(b)? == json!(0),
        _ => false,
    })
}

/// One message as JSON, by `schema`. An unknown field is refused unless it holds its zero
/// value (Go encodes empty structs and zero scalars of some fields regardless).
fn message(schema: &[Field], bytes: &[u8]) -> Result<Value, ApiError> {
    let mut out = Map::new();
    for (number, wire) in fields(bytes)? {
        let Some(field) = schema.iter().find(|f| f.number == number) else {
            let empty = match wire {
                Wire::Varint(v) => v == 0,
                Wire::Bytes(b) => b.is_empty(),
                Wire::Fixed => false,
            };
            if empty {
                continue;
            }
            return Err(ApiError::new(
                Reason::UnsupportedMediaType,
                format!(
                    "this protobuf body sets field {number}, which rkube reads only from JSON; send the object as application/json"
                ),
            ));
        };
        if !field.pointer && !field.repeated && is_zero(field.kind, &wire)? {
            continue;
        }
        match (field.kind, wire) {
            (Kind::MapStr | Kind::MapBytes | Kind::MapQuantity, Wire::Bytes(b)) => {
                let (k, v) = map_entry(b, field.kind)?;
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
                "protobuf bodies are supported for ConfigMap, Secret, Namespace, ServiceAccount, Service, Deployment, Job and CronJob only; send {kind} as application/json"
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

    fn envelope(api_version: &[u8], kind: &[u8], object: &[u8]) -> Vec<u8> {
        let type_meta = [bytes_field(1, api_version), bytes_field(2, kind)].concat();
        [
            MAGIC.to_vec(),
            bytes_field(1, &type_meta),
            bytes_field(2, object),
        ]
        .concat()
    }

    #[test]
    fn zero_scalars_are_unset_but_zero_pointers_are_kept() {
        // spec: replicas 0 (a pointer), minReadySeconds 0 and strategy.type "" (not).
        let strategy = bytes_field(1, b"");
        let spec = [
            vec![tag(1, 0), 0],
            vec![tag(5, 0), 0],
            bytes_field(4, &strategy),
        ]
        .concat();
        let meta = [bytes_field(1, b"web"), bytes_field(2, b"")].concat();
        let dep = [bytes_field(1, &meta), bytes_field(2, &spec)].concat();
        let obj = decode(&envelope(b"apps/v1", b"Deployment", &dep)).expect("decodes");
        assert_eq!(
            obj,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"replicas": 0, "strategy": {}}})
        );
    }

    #[test]
    fn an_unknown_field_with_a_value_is_refused_not_dropped() {
        let spec = [vec![tag(8, 0), 5]].concat(); // field 8 of DeploymentSpec is unknown here
        let dep = [
            bytes_field(1, &bytes_field(1, b"web")),
            bytes_field(2, &spec),
        ]
        .concat();
        let err = decode(&envelope(b"apps/v1", b"Deployment", &dep)).expect_err("refused");
        assert_eq!(err.code(), 415, "{err}");
        let empty = [bytes_field(1, &bytes_field(1, b"web")), vec![tag(9, 0), 0]].concat();
        assert!(decode(&envelope(b"apps/v1", b"Deployment", &empty)).is_ok());
    }

    #[test]
    fn garbage_is_a_400_not_a_panic() {
        for body in [&b"k8s\0\x0a\xff"[..], b"k8s\0\x0a", b"nope", b"k8s\0\x0f"] {
            let err = decode(body).expect_err("garbage");
            assert_eq!(err.code(), 400, "{err}");
        }
    }
}
