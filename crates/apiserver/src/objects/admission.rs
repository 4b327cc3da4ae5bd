//! The pure parts of admission and of the verbs: decoding and checking request bodies,
//! carrying system fields across updates, normalizing, sizing and stamping objects, JSON
//! patches within limits, and continue tokens. No I/O: [`super::Objects`] does the reads
//! and writes around them.

use super::{FieldValidation, ListQuery, MAX_OBJECT_BYTES, Part, WriteOptions};
use crate::watch_cache::Filter;
use bytes::Bytes;
use rkube_store::{Revision, ValueFn};
use rkube_types::fields::FieldSelector;
use rkube_types::selector::LabelSelector;
use rkube_types::status::StatusCause;
use rkube_types::{ApiError, Reason, ResourceInfo, validation};
use serde_json::{Map, Value, json};

/// The storage key, refusing names that could escape their place in the key space.
pub(super) fn object_key(info: &ResourceInfo, ns: &str, name: &str) -> Result<String, ApiError> {
    if name.is_empty() {
        return Err(ApiError::bad_request("resource name may not be empty"));
    }
    if info.namespaced && ns.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} is namespaced: a namespace is required",
            info.plural
        )));
    }
    if name.contains('/') || ns.contains('/') || name == "." || name == ".." {
        return Err(ApiError::bad_request(format!(
            "invalid resource name {name:?}: may not contain '/'"
        )));
    }
    Ok(info.storage_key(ns, name))
}

pub(super) fn filter(info: &ResourceInfo, ns: &str, q: &ListQuery) -> Result<Filter, ApiError> {
    let labels = LabelSelector::parse(&q.label_selector)
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields = FieldSelector::parse(&q.field_selector)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    fields
        .check_supported(info)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Filter {
        namespace: (info.namespaced && !ns.is_empty()).then(|| ns.to_string()),
        labels,
        fields,
    })
}

pub(super) fn parse_revision(rv: &str) -> Result<Revision, ApiError> {
    rv.parse::<Revision>()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))
}

pub(super) fn too_large() -> ApiError {
    ApiError::too_large(format!(
        "Request entity too large: limit is {MAX_OBJECT_BYTES}"
    ))
}

/// Decodes a request body and checks it is an object of `info`'s kind.
pub(super) fn parse_body(info: &ResourceInfo, body: &[u8]) -> Result<Value, ApiError> {
    if body.len() > MAX_OBJECT_BYTES {
        return Err(too_large());
    }
    let mut obj: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("unable to decode the request body: {e}")))?;
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "unable to decode the request body: not a JSON object",
        ));
    };
    let api_version = info.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), api_version.clone().into());
        }
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), info.kind.into());
        }
        Some(k) if k == info.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                info.kind
            )));
        }
    }
    match map.get("metadata") {
        None | Some(Value::Null) => {
            map.insert("metadata".into(), json!({}));
        }
        Some(Value::Object(_)) => {}
        Some(_) => return Err(ApiError::bad_request("metadata must be an object")),
    }
    Ok(obj)
}

/// Applies a JSON patch one operation at a time, refusing patches whose `copy` operations
/// would grow the document past the object size limit (each copy can double it).
pub(super) fn apply_json_patch(doc: &mut Value, patch: &json_patch::Patch) -> Result<(), ApiError> {
    let mut copied = 0usize;
    for op in &patch.0 {
        if let json_patch::PatchOperation::Copy(copy) = op
            && let Some(from) = doc.pointer(copy.from.as_str())
        {
            let mut counter = ByteCounter(0);
            let _ = serde_json::to_writer(&mut counter, from);
            copied += counter.0;
            if copied > MAX_OBJECT_BYTES {
                return Err(too_large());
            }
        }
        json_patch::patch(doc, std::slice::from_ref(op))
            .map_err(|e| ApiError::new(Reason::Invalid, format!("unable to apply patch: {e}")))?;
        // Each operation may nest one level deeper than the last; deep documents would
        // exhaust the stack of everything that walks them recursively later.
        if depth(doc) > MAX_DEPTH {
            return Err(ApiError::new(
                Reason::Invalid,
                format!("the patched object nests deeper than {MAX_DEPTH} levels"),
            ));
        }
    }
    Ok(())
}

/// The deepest nesting a patched object may have (Kubernetes objects stay far below it).
pub(super) const MAX_DEPTH: usize = 100;

/// The nesting depth of `value`, measured without recursion.
pub(super) fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            Value::Object(map) => stack.extend(map.values().map(|i| (i, d + 1))),
            _ => {}
        }
    }
    deepest
}

/// Carries the system fields of `old` into `new` and keeps the part the write may not touch.
pub(super) fn admit_update(info: &ResourceInfo, old: &Value, mut new: Value, part: Part) -> Value {
    if info.has_status() {
        match part {
            Part::Main => match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().map(|o| o.remove("status"));
                }
            },
            Part::Status => {
                // As Kubernetes' ResetObjectMetaForStatus: a status write changes the status
                // only; labels, annotations, finalizers and owners stay as they were.
                let status = new.get("status").cloned();
                new = old.clone();
                match status {
                    Some(s) => new["status"] = s,
                    None => {
                        new.as_object_mut().map(|o| o.remove("status"));
                    }
                }
            }
        }
    }
    let old_meta = old["metadata"].as_object().cloned().unwrap_or_default();
    let meta = metadata_mut(&mut new);
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "name",
        "generation",
    ] {
        match old_meta.get(field) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
    meta.remove("resourceVersion");
    if part == Part::Main {
        crate::defaults::apply_update(info.group, info.kind, &mut new);
    }
    if spec_of(&new) != spec_of(old)
        && let Some(g) = old["metadata"]["generation"].as_i64()
    {
        new["metadata"]["generation"] = (g + 1).into();
    }
    new
}

/// Everything but metadata and status: what a change of bumps the generation.
pub(super) fn spec_of(obj: &Value) -> Map<String, Value> {
    let mut map = obj.as_object().cloned().unwrap_or_default();
    map.remove("metadata");
    map.remove("status");
    map
}

/// The field manager a write is recorded under.
pub(super) fn manager(opts: &WriteOptions) -> &str {
    if opts.field_manager.is_empty() {
        "unknown"
    } else {
        &opts.field_manager
    }
}

/// Drops the fields the object's type does not have, as Kubernetes' decoding does, and warns
/// about them or refuses the request as `validation` says. An object that does not decode is
/// left for validation to report.
pub(super) fn prune_unknown(
    info: &ResourceInfo,
    name: &str,
    obj: Value,
    validation: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let Ok(normalized) = rkube_types::normalize::normalize(info, &obj) else {
        return Ok((obj, Vec::new()));
    };
    let unknown = rkube_types::normalize::unknown_fields(&obj, &normalized);
    if unknown.is_empty() {
        return Ok((normalized, Vec::new()));
    }
    let messages: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();
    match validation {
        FieldValidation::Strict => Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            info.kind,
            info.api_version(),
            info.kind,
            messages.join(", ")
        ))
        .with_details(info.group, info.plural, name)),
        FieldValidation::Warn => Ok((normalized, messages)),
        FieldValidation::Ignore => Ok((normalized, Vec::new())),
    }
}

pub(super) fn validate(info: &ResourceInfo, name: &str, obj: &Value) -> Result<(), ApiError> {
    refuse(info, name, validation::validate_object(info, obj))
}

/// Validates an update: a cause the stored object already has is not held against the
/// update, so an object stored before a check existed (or was tightened) can still be
/// labelled, finalized or deleted; only what the update makes invalid is refused.
pub(super) fn validate_update(
    info: &ResourceInfo,
    name: &str,
    old: &Value,
    new: &Value,
) -> Result<(), ApiError> {
    let mut causes = validation::validate_object(info, new);
    if !causes.is_empty() {
        let existing = validation::validate_object(info, old);
        causes.retain(|c| !existing.contains(c));
    }
    refuse(info, name, causes)
}

/// 422 Invalid with `causes`, unless there are none.
fn refuse(info: &ResourceInfo, name: &str, causes: Vec<StatusCause>) -> Result<(), ApiError> {
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(
        info.group,
        info.kind,
        info.plural,
        name,
        causes,
    ))
}

pub(super) fn namespace_mismatch(body: &str, request: &str) -> ApiError {
    ApiError::bad_request(format!(
        "the namespace of the provided object ({body}) does not match the namespace sent on the request ({request})"
    ))
}

pub(super) fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    match obj["metadata"].as_object_mut() {
        Some(m) => m,
        None => unreachable!("metadata was just made an object"),
    }
}

pub(super) fn str_of(v: Option<&Value>) -> &str {
    v.and_then(Value::as_str).unwrap_or_default()
}

pub(super) fn memchr_str(haystack: &[u8], needle: &str) -> bool {
    let needle = needle.as_bytes();
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

pub(super) fn has_finalizers(obj: &Value) -> bool {
    let meta = obj["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    let namespace = obj["kind"] == "Namespace"
        && obj["spec"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
    meta || namespace
}

pub(super) fn default_grace(info: &ResourceInfo, obj: &Value) -> i64 {
    if info.group.is_empty() && info.kind == "Pod" {
        if obj["spec"]["nodeName"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
        {
            // Never scheduled: nothing runs, nothing to wait for.
            return 0;
        }
        return obj["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(30);
    }
    0
}

pub(super) fn pod_is_done(obj: &Value) -> bool {
    matches!(
        obj["status"]["phase"].as_str(),
        Some("Succeeded") | Some("Failed")
    )
}

pub(super) fn qos_class(pod: &Value) -> &'static str {
    let containers = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let limits = &c["resources"]["limits"];
        let requests = &c["resources"]["requests"];
        for res in ["cpu", "memory"] {
            let (l, r) = (&limits[res], &requests[res]);
            if !l.is_null() || !r.is_null() {
                any = true;
            }
            if l.is_null() || (!r.is_null() && r != l) {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

pub(super) fn without_revision(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    v
}

pub(super) fn encode(obj: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(obj).unwrap_or_default())
}

/// Refuses an object that admission or a patch made larger than the limit.
pub(super) fn check_size(obj: &Value) -> Result<(), ApiError> {
    let mut counter = ByteCounter(0);
    if serde_json::to_writer(&mut counter, obj).is_err() || counter.0 > MAX_OBJECT_BYTES {
        return Err(too_large());
    }
    Ok(())
}

/// Counts what would be written.
pub(super) struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Stores `obj` with its resourceVersion set to the write's revision: serialized once.
pub(super) fn with_revision(mut obj: Value) -> ValueFn {
    Box::new(move |revision| {
        metadata_mut(&mut obj).insert("resourceVersion".into(), revision.to_string().into());
        encode(&obj)
    })
}

/// RFC 3339 time, whole seconds, `offset_seconds` from now.
pub(super) fn now(offset_seconds: i64) -> String {
    let secs = jiff::Timestamp::now()
        .as_second()
        .saturating_add(offset_seconds);
    jiff::Timestamp::from_second(secs)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

/// Five characters from Kubernetes' generateName alphabet (no vowels, no look-alikes).
pub(super) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Encodes a continue token: the list's revision and the last key served.
pub fn encode_continue(revision: Revision, last_key: &str) -> String {
    let raw = format!("{revision}/{last_key}");
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn decode_continue(token: &str) -> Result<(Revision, String), ApiError> {
    let invalid = || ApiError::bad_request("continue key is not valid");
    if !token.len().is_multiple_of(2) {
        return Err(invalid());
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    let raw = String::from_utf8(bytes.ok_or_else(invalid)?).map_err(|_| invalid())?;
    let (rev, key) = raw.split_once('/').ok_or_else(invalid)?;
    Ok((rev.parse().map_err(|_| invalid())?, key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let token = encode_continue(42, "/registry/core/pods/default/web-1");
        assert_eq!(
            decode_continue(&token).expect("decodes"),
            (42, "/registry/core/pods/default/web-1".to_string())
        );
        for bad in ["zz", "abc", "", "2f"] {
            assert_eq!(
                decode_continue(bad).unwrap_err().code(),
                400,
                "token {bad:?}"
            );
        }
    }

    #[test]
    fn an_update_is_refused_only_for_what_it_makes_invalid() {
        let info = rkube_types::registry::lookup("apps", "v1", "deployments").expect("registered");
        // Stored before the progress-deadline check existed.
        let old = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "minReadySeconds": 30,
                "progressDeadlineSeconds": 30,
                "template": {"metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let mut labelled = old.clone();
        labelled["metadata"]["labels"] = json!({"x": "y"});
        assert!(validate_update(info, "d", &old, &labelled).is_ok());
        let mut worse = old.clone();
        worse["spec"]["progressDeadlineSeconds"] = json!(10);
        let err = validate_update(info, "d", &old, &worse).expect_err("a new invalid value");
        assert_eq!(err.causes.len(), 1);
        assert_eq!(err.causes[0].field, "spec.progressDeadlineSeconds");
        assert!(
            validate(info, "d", &old).is_err(),
            "on create the same object is refused"
        );
    }

    #[test]
    fn generation_moves_only_with_the_spec() {
        let info = rkube_types::registry::lookup("apps", "v1", "deployments").expect("registered");
        let mut old = json!({"metadata": {"name": "d", "generation": 3, "uid": "u"}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
        // Stored objects are defaulted; updates are defaulted the same way.
        crate::defaults::apply("apps", "Deployment", &mut old);
        let labels =
            json!({"metadata": {"name": "d", "labels": {"a": "b"}}, "spec": {"replicas": 1}});
        assert_eq!(
            admit_update(info, &old, labels, Part::Main)["metadata"]["generation"],
            3
        );
        let scaled = json!({"metadata": {"name": "d"}, "spec": {"replicas": 2}});
        let new = admit_update(info, &old, scaled, Part::Main);
        assert_eq!(new["metadata"]["generation"], 4);
        assert_eq!(new["metadata"]["uid"], "u", "uid is kept");
        assert_eq!(new["status"]["replicas"], 1, "main update keeps the status");
        let status =
            json!({"metadata": {"name": "d"}, "spec": {"replicas": 9}, "status": {"replicas": 2}});
        let new = admit_update(info, &old, status, Part::Status);
        assert_eq!(new["spec"]["replicas"], 1, "status update keeps the spec");
        assert_eq!(new["status"]["replicas"], 2);
        assert_eq!(new["metadata"]["generation"], 3);
    }

    #[test]
    fn qos_classes() {
        let pod = |res: Value| json!({"spec": {"containers": [{"name": "a", "resources": res}]}});
        assert_eq!(qos_class(&pod(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&pod(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&pod(json!({"requests": {"cpu": "1"}}))),
            "Burstable"
        );
    }
}
