//! Validation of names, labels and objects, with Kubernetes' rules and error texts
//! (`k8s.io/apimachinery/pkg/util/validation`, `pkg/apis/*/validation`).
//!
//! The `is_*` functions return every rule a string breaks, worded exactly as Kubernetes words
//! them (an empty vector means valid). [`validate_object`] checks a whole object's metadata and
//! the required fields of the kinds rkube interprets, returning `Status` causes with Kubernetes
//! field paths such as `spec.containers[0].image`.

use crate::registry::{NameRule, ResourceInfo};
use crate::status::StatusCause;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde::de::value::MapDeserializer;
use std::collections::BTreeMap;

mod kinds;
mod pod;

/// Longest DNS-1123 label.
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// Longest DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// Longest DNS-1035 label.
pub const DNS1035_LABEL_MAX_LENGTH: usize = 63;
/// Longest name part of a qualified name (label and annotation keys).
pub const QUALIFIED_NAME_MAX_LENGTH: usize = 63;
/// Longest label value.
pub const LABEL_VALUE_MAX_LENGTH: usize = 63;
/// Largest total size of an object's annotations (keys plus values), in bytes.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR_MSG: &str = "a lowercase RFC 1123 label must consist of lower case \
     alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower \
     case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric \
     character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_ERR_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric \
     characters or '-', start with an alphabetic character, and end with an alphanumeric \
     character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', \
     and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR_MSG: &str = "a valid label must be an empty string or consist of \
     alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric \
     character";
const CONFIG_MAP_KEY_FMT: &str = "[-._a-zA-Z0-9]+";
const CONFIG_MAP_KEY_ERR_MSG: &str =
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";

/// Kubernetes' `MaxLenError`.
fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// Kubernetes' `RegexError`, including its double spaces between examples.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push('\'');
        out.push_str(example);
        out.push_str("', ");
    }
    out.push_str("regex used for validation is '");
    out.push_str(fmt);
    out.push_str("')");
    out
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Matches `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn matches_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            is_lower_alnum(first)
                && is_lower_alnum(last)
                && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

/// Matches the DNS-1123 subdomain regex: dot-separated labels.
fn matches_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(matches_dns1123_label)
}

/// Matches `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn matches_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Kubernetes' `IsDNS1123Label`: at most 63 lowercase alphanumerics or `-`, starting and ending
/// alphanumeric.
pub fn is_dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_dns1123_label(s) {
        if matches_dns1123_subdomain(s) {
            // A valid subdomain but not a label: the length was checked, so it must be dots.
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_ERR_MSG,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// Kubernetes' `IsDNS1123Subdomain`: at most 253 characters of dot-separated DNS-1123 labels.
pub fn is_dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !matches_dns1123_subdomain(s) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// Kubernetes' `IsDNS1035Label`: a DNS-1123 label that starts with a letter (service names).
pub fn is_dns1035_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1035_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1035_LABEL_MAX_LENGTH));
    }
    if !(matches_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()) {
        errs.push(regex_error(
            DNS1035_LABEL_ERR_MSG,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// Kubernetes' `IsValidPathSegmentName`: not `.` or `..`, and no `/` or `%`.
pub fn is_path_segment_name(s: &str) -> Vec<String> {
    if s == "." || s == ".." {
        return vec![format!("may not be '{s}'")];
    }
    is_path_segment_prefix(s)
}

/// Kubernetes' `IsValidPathSegmentPrefix`: no `/` or `%`.
fn is_path_segment_prefix(s: &str) -> Vec<String> {
    ["/", "%"]
        .iter()
        .filter(|bad| s.contains(*bad))
        .map(|bad| format!("may not contain '{bad}'"))
        .collect()
}

/// Kubernetes' `IsQualifiedName` (label and annotation keys): a name part of at most 63
/// alphanumerics, `-`, `_` or `.` starting and ending alphanumeric, optionally prefixed by a
/// DNS-1123 subdomain and `/`.
pub fn is_qualified_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. \
                 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_ERR_MSG,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX_LENGTH {
        errs.push(format!(
            "name part {}",
            max_len_error(QUALIFIED_NAME_MAX_LENGTH)
        ));
    }
    if !matches_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// Kubernetes' `IsValidLabelValue`: empty, or at most 63 alphanumerics, `-`, `_` or `.`
/// starting and ending alphanumeric.
pub fn is_valid_label_value(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > LABEL_VALUE_MAX_LENGTH {
        errs.push(max_len_error(LABEL_VALUE_MAX_LENGTH));
    }
    if !(s.is_empty() || matches_qualified_name_part(s)) {
        errs.push(regex_error(
            LABEL_VALUE_ERR_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// Kubernetes' `IsConfigMapKey` (ConfigMap and Secret data keys): at most 253 alphanumerics,
/// `-`, `_` or `.`, and not `.`, `..` or starting with `..`.
pub fn is_config_map_key(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    let charset_ok = !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if !charset_ok {
        errs.push(regex_error(
            CONFIG_MAP_KEY_ERR_MSG,
            CONFIG_MAP_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if s == "." {
        errs.push("must not be '.'".to_string());
    } else if s == ".." {
        errs.push("must not be '..'".to_string());
    } else if s.starts_with("..") {
        errs.push("must not start with '..'".to_string());
    }
    errs
}

/// Kubernetes' `IsValidPortNum`: 1 to 65535.
pub fn is_valid_port_num(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) {
        Vec::new()
    } else {
        vec!["must be between 1 and 65535, inclusive".to_string()]
    }
}

/// Kubernetes' `IsValidPortName` (IANA service names): at most 15 characters of `[-a-z0-9]`
/// with at least one letter, no `--`, not starting or ending with `-`.
pub fn is_valid_port_name(port: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if port.len() > 15 {
        errs.push(max_len_error(15));
    }
    if port.is_empty() || !port.bytes().all(|c| is_lower_alnum(c) || c == b'-') {
        errs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if !port.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if port.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if port.starts_with('-') || port.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

/// Validates an object name under `rule`; an empty vector means valid.
pub fn validate_name(rule: NameRule, name: &str) -> Vec<String> {
    match rule {
        NameRule::Dns1123Label => is_dns1123_label(name),
        NameRule::Dns1123Subdomain => is_dns1123_subdomain(name),
        NameRule::PathSegment => is_path_segment_name(name),
    }
}

/// Validates a `generateName` under `rule`: like a name, but a trailing `-` is allowed because
/// a random suffix follows. Mirrors Kubernetes' `maskTrailingDash`, quirk included.
fn validate_generate_name(rule: NameRule, prefix: &str, dns1035: bool) -> Vec<String> {
    if rule == NameRule::PathSegment {
        return is_path_segment_prefix(prefix);
    }
    let masked;
    let name = if prefix.len() > 1 && prefix.ends_with('-') {
        // Kubernetes drops the last two bytes and appends "a".
        masked = format!("{}a", prefix.get(..prefix.len() - 2).unwrap_or(""));
        masked.as_str()
    } else {
        prefix
    };
    if dns1035 {
        is_dns1035_label(name)
    } else {
        validate_name(rule, name)
    }
}

/// Kubernetes' `field.Invalid` for a value that is not a string (printed without quotes).
fn invalid_raw(
    field: impl Into<String>,
    value: impl std::fmt::Display,
    detail: &str,
) -> StatusCause {
    StatusCause::new(
        "FieldValueInvalid",
        field,
        format!("Invalid value: {value}: {detail}"),
    )
}

/// Kubernetes' `field.Required` with a detail message.
fn required_because(field: impl Into<String>, detail: &str) -> StatusCause {
    StatusCause::new(
        "FieldValueRequired",
        field,
        format!("Required value: {detail}"),
    )
}

/// Kubernetes' `field.TooLong` for a byte limit.
fn too_long(field: impl Into<String>, limit: usize) -> StatusCause {
    StatusCause::new(
        "FieldValueTooLong",
        field,
        format!("Too long: may not be more than {limit} bytes"),
    )
}

/// Kubernetes' `field.NotFound`.
fn not_found(field: impl Into<String>, value: &str) -> StatusCause {
    StatusCause::new("FieldValueNotFound", field, format!("Not found: {value:?}"))
}

/// Go's `%#v` of a `map[string]string`, as Kubernetes prints label maps in causes.
fn go_map(map: Option<&BTreeMap<String, String>>) -> String {
    match map {
        None => "map[string]string(nil)".to_string(),
        Some(map) => {
            let entries: Vec<String> = map.iter().map(|(k, v)| format!("{k:?}:{v:?}")).collect();
            format!("map[string]string{{{}}}", entries.join(", "))
        }
    }
}

/// Kubernetes' `ValidateLabels`: every key a qualified name, every value a label value.
fn validate_labels(labels: Option<&BTreeMap<String, String>>, field: &str) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    for (key, value) in labels.into_iter().flatten() {
        for msg in is_qualified_name(key) {
            causes.push(StatusCause::invalid(field, key, msg));
        }
        for msg in is_valid_label_value(value) {
            causes.push(StatusCause::invalid(field, value, msg));
        }
    }
    causes
}

/// Kubernetes' `ValidateAnnotations`: keys are qualified names (case-insensitively) and the
/// total size is at most 256 KiB.
fn validate_annotations(
    annotations: Option<&BTreeMap<String, String>>,
    field: &str,
) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    let mut total = 0;
    for (key, value) in annotations.into_iter().flatten() {
        for msg in is_qualified_name(&key.to_lowercase()) {
            causes.push(StatusCause::invalid(field, key, msg));
        }
        total += key.len() + value.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        causes.push(too_long(field, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    causes
}

/// Kubernetes' `ValidateObjectMeta` for name, generateName, labels and annotations.
fn validate_metadata(info: &ResourceInfo, meta: &ObjectMeta) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    let rule = info.name_rule();
    // Kubernetes validates Service names as DNS-1035 labels, stricter than the name rule.
    let dns1035 = info.group.is_empty() && info.kind == "Service";
    let name = meta.name.as_deref().unwrap_or("");
    let generate_name = meta.generate_name.as_deref().unwrap_or("");
    if !generate_name.is_empty() {
        for msg in validate_generate_name(rule, generate_name, dns1035) {
            causes.push(StatusCause::invalid(
                "metadata.generateName",
                generate_name,
                msg,
            ));
        }
    }
    if name.is_empty() {
        if generate_name.is_empty() {
            causes.push(required_because(
                "metadata.name",
                "name or generateName is required",
            ));
        }
    } else {
        let msgs = if dns1035 {
            is_dns1035_label(name)
        } else {
            validate_name(rule, name)
        };
        for msg in msgs {
            causes.push(StatusCause::invalid("metadata.name", name, msg));
        }
    }
    causes.extend(validate_labels(meta.labels.as_ref(), "metadata.labels"));
    causes.extend(validate_annotations(
        meta.annotations.as_ref(),
        "metadata.annotations",
    ));
    causes
}

/// Decodes `obj` as `T`, ignoring `apiVersion` and `kind` (the registry already matched them,
/// and `k8s-openapi` would refuse a missing or different spelling).
fn decode<T: DeserializeOwned>(
    obj: &serde_json::Map<String, serde_json::Value>,
) -> Result<T, DecodeFailure> {
    let fields = obj
        .iter()
        .filter(|(k, _)| k.as_str() != "apiVersion" && k.as_str() != "kind")
        .map(|(k, v)| (k.as_str(), v));
    serde_path_to_error::deserialize(MapDeserializer::<_, serde_json::Error>::new(fields)).map_err(
        |e| DecodeFailure {
            field: match e.path().to_string() {
                p if p == "." => String::new(),
                p => p,
            },
            message: e.inner().to_string(),
        },
    )
}

/// An object that does not decode into its type: where, and the decoder's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeFailure {
    /// Path of the offending field, e.g. `spec.replicas` (empty for the object itself).
    pub(crate) field: String,
    /// What the decoder said.
    pub(crate) message: String,
}

/// A decoding failure as a cause.
fn decode_error(field: &str, message: String) -> StatusCause {
    StatusCause::new("FieldValueInvalid", field, message)
}

/// Validates the object's metadata and the required fields of the kinds rkube interprets.
/// `obj` is the Kubernetes JSON of an object of `info`'s kind. Returns field causes (empty =
/// valid).
///
/// Metadata: `metadata.name` (or `generateName`) per the resource's [`NameRule`] (DNS-1035
/// for services), label keys and values, annotation keys and total size. The namespace is not
/// checked here. Then the object is decoded into its `k8s-openapi` type (a failure becomes one
/// `FieldValueInvalid` cause carrying the decoder's message) and the kind's required fields
/// are checked: pods and pod templates of workloads, jobs and cron jobs, services, config
/// maps, secrets.
pub fn validate_object(info: &ResourceInfo, obj: &serde_json::Value) -> Vec<StatusCause> {
    let Some(map) = obj.as_object() else {
        return vec![decode_error(
            "",
            "the object must be a JSON object".to_string(),
        )];
    };
    let meta = match map.get("metadata") {
        None | Some(serde_json::Value::Null) => ObjectMeta::default(),
        Some(value) => match ObjectMeta::deserialize(value) {
            Ok(meta) => meta,
            Err(e) => return vec![decode_error("metadata", e.to_string())],
        },
    };
    let mut causes = validate_metadata(info, &meta);
    match kinds::validate_kind(info, map) {
        Ok(kind_causes) => causes.extend(kind_causes),
        Err(failure) => causes.push(decode_error(&failure.field, failure.message)),
    }
    causes
}

#[cfg(test)]
mod tests;
