//! Field selectors (`?fieldSelector=spec.nodeName=node-1,status.phase!=Running`): parsing,
//! printing and matching with the semantics of Kubernetes' `k8s.io/apimachinery/pkg/fields`,
//! plus the per-kind tables of selectable fields the Kubernetes registries define.
//!
//! Matching works on a flat field set (`field → value`) computed once per object by
//! [`field_set`]. As in Kubernetes, a field an object lacks has its zero value (`""` for
//! strings, `false`, `0`), so `spec.nodeName=` selects unscheduled pods.

use crate::registry::ResourceInfo;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// How a field requirement compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldOperator {
    /// `field=value` or `field==value`.
    Equals,
    /// `field!=value`.
    NotEquals,
}

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldRequirement {
    /// The field, e.g. `spec.nodeName`.
    pub field: String,
    /// The comparison.
    pub operator: FieldOperator,
    /// The value, unescaped.
    pub value: String,
}

/// A conjunction of field requirements; no requirements select everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FieldSelector {
    /// The requirements, all of which must hold; sorted by their printed form when built by
    /// this module.
    pub requirements: Vec<FieldRequirement>,
}

/// Why a field selector is invalid or not supported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldSelectorError {
    /// A term has no `=`, `==` or `!=`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    InvalidTerm {
        /// The whole selector.
        selector: String,
        /// The term at fault.
        term: String,
    },
    /// A backslash escapes something other than `\`, `,`, `=` or `!`, or ends the value.
    #[error("invalid field selector: invalid escape sequence: {sequence}")]
    InvalidEscape {
        /// The escape sequence, e.g. `\x`.
        sequence: String,
    },
    /// A value contains `,` or `=` without a backslash.
    #[error("invalid field selector: unescaped character in value: {character}")]
    UnescapedCharacter {
        /// The character.
        character: char,
    },
    /// The resource does not support selecting on this field.
    #[error("field label not supported: {field}")]
    Unsupported {
        /// The field.
        field: String,
        /// The resource (plural), e.g. `pods`.
        resource: String,
    },
}

impl FieldRequirement {
    /// Whether the field set satisfies this requirement; a missing field counts as `""`.
    pub fn matches(&self, fields: &BTreeMap<String, String>) -> bool {
        let actual = fields.get(&self.field).map(String::as_str).unwrap_or("");
        match self.operator {
            FieldOperator::Equals => actual == self.value,
            FieldOperator::NotEquals => actual != self.value,
        }
    }
}

impl fmt::Display for FieldRequirement {
    /// `field=value` or `field!=value`, with the value escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.operator {
            FieldOperator::Equals => "=",
            FieldOperator::NotEquals => "!=",
        };
        write!(f, "{}{op}{}", self.field, escape_value(&self.value))
    }
}

/// Escapes a value for a field selector: `\` → `\\`, `,` → `\,`, `=` → `\=` (Kubernetes'
/// `fields.EscapeValue`).
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Undoes [`escape_value`]; also accepts `\!`. Unescaped `,` and `=` are errors.
fn unescape_value(value: &str) -> Result<String, FieldSelectorError> {
    if !value.contains(['\\', ',', '=']) {
        return Ok(value.to_string());
    }
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('\\' | ',' | '=' | '!')) => out.push(escaped),
                Some(other) => {
                    return Err(FieldSelectorError::InvalidEscape {
                        sequence: format!("\\{other}"),
                    });
                }
                None => {
                    return Err(FieldSelectorError::InvalidEscape {
                        sequence: "\\".to_string(),
                    });
                }
            },
            ',' | '=' => return Err(FieldSelectorError::UnescapedCharacter { character: c }),
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// Splits at commas not preceded by a backslash; escapes stay in the terms.
fn split_terms(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in selector.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// Splits a term at its first operator (`!=`, then `==`, then `=` at each position).
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (token, op) in [
            ("!=", FieldOperator::NotEquals),
            ("==", FieldOperator::Equals),
            ("=", FieldOperator::Equals),
        ] {
            if let Some(value) = rest.strip_prefix(token) {
                return Some((&term[..i], op, value));
            }
        }
    }
    None
}

impl FieldSelector {
    /// A selector of these requirements, sorted by their printed form so equal selectors
    /// compare equal.
    pub fn new(mut requirements: Vec<FieldRequirement>) -> Self {
        requirements.sort_by_cached_key(ToString::to_string);
        FieldSelector { requirements }
    }

    /// Parses `field=value,field!=value,...`. Values may escape `,`, `=`, `\` and `!` with a
    /// backslash; nothing is trimmed, as in Kubernetes. The empty string selects everything.
    pub fn parse(s: &str) -> Result<Self, FieldSelectorError> {
        let mut requirements = Vec::new();
        for term in split_terms(s) {
            if term.is_empty() {
                continue;
            }
            let (field, operator, raw) =
                split_term(term).ok_or_else(|| FieldSelectorError::InvalidTerm {
                    selector: s.to_string(),
                    term: term.to_string(),
                })?;
            requirements.push(FieldRequirement {
                field: field.to_string(),
                operator,
                value: unescape_value(raw)?,
            });
        }
        Ok(FieldSelector::new(requirements))
    }

    /// The selector that matches every object.
    pub fn everything() -> Self {
        FieldSelector::default()
    }

    /// Whether this selector matches every object.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether the field set (from [`field_set`]) satisfies every requirement.
    pub fn matches(&self, fields: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(fields))
    }

    /// Checks that `info`'s resource supports selecting on every field used, with
    /// Kubernetes' error (`field label not supported: spec.foo`) otherwise.
    pub fn check_supported(&self, info: &ResourceInfo) -> Result<(), FieldSelectorError> {
        let supported = supported_fields(info);
        match self
            .requirements
            .iter()
            .find(|r| !supported.contains(&r.field.as_str()))
        {
            None => Ok(()),
            Some(r) => Err(FieldSelectorError::Unsupported {
                field: r.field.clone(),
                resource: info.plural.to_string(),
            }),
        }
    }

    /// The value `field` must equal (`field=value` or `field==value`), for index lookups such
    /// as pods by `spec.nodeName`.
    pub fn exact_value(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.operator == FieldOperator::Equals)
            .map(|r| r.value.as_str())
    }
}

impl FromStr for FieldSelector {
    type Err = FieldSelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FieldSelector::parse(s)
    }
}

impl fmt::Display for FieldSelector {
    /// The canonical string, terms joined by `,`; it parses back to an equal selector as long
    /// as field names contain no `=`, `,`, `\` or `!`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// One selectable field: where its value lives in the object's JSON and what it is when absent.
struct Field {
    /// The selector name.
    name: &'static str,
    /// JSON paths to try in order (array indexes as numbers); the first present, non-empty
    /// value wins.
    paths: &'static [&'static [&'static str]],
    /// The value when no path has one: the zero value or the Kubernetes default.
    absent: &'static str,
}

const fn field(
    name: &'static str,
    paths: &'static [&'static [&'static str]],
    absent: &'static str,
) -> Field {
    Field {
        name,
        paths,
        absent,
    }
}

const POD_FIELDS: &[Field] = &[
    field("spec.nodeName", &[&["spec", "nodeName"]], ""),
    field(
        "spec.restartPolicy",
        &[&["spec", "restartPolicy"]],
        "Always",
    ),
    field(
        "spec.schedulerName",
        &[&["spec", "schedulerName"]],
        "default-scheduler",
    ),
    field(
        "spec.serviceAccountName",
        &[&["spec", "serviceAccountName"], &["spec", "serviceAccount"]],
        "",
    ),
    field("spec.hostNetwork", &[&["spec", "hostNetwork"]], "false"),
    field("status.phase", &[&["status", "phase"]], ""),
    field(
        "status.podIP",
        &[&["status", "podIPs", "0", "ip"], &["status", "podIP"]],
        "",
    ),
    field(
        "status.nominatedNodeName",
        &[&["status", "nominatedNodeName"]],
        "",
    ),
];

const EVENT_FIELDS: &[Field] = &[
    field("involvedObject.kind", &[&["involvedObject", "kind"]], ""),
    field(
        "involvedObject.namespace",
        &[&["involvedObject", "namespace"]],
        "",
    ),
    field("involvedObject.name", &[&["involvedObject", "name"]], ""),
    field("involvedObject.uid", &[&["involvedObject", "uid"]], ""),
    field(
        "involvedObject.apiVersion",
        &[&["involvedObject", "apiVersion"]],
        "",
    ),
    field(
        "involvedObject.resourceVersion",
        &[&["involvedObject", "resourceVersion"]],
        "",
    ),
    field(
        "involvedObject.fieldPath",
        &[&["involvedObject", "fieldPath"]],
        "",
    ),
    field("reason", &[&["reason"]], ""),
    field("reportingComponent", &[&["reportingComponent"]], ""),
    field(
        "source",
        &[&["source", "component"], &["reportingComponent"]],
        "",
    ),
    field("type", &[&["type"]], ""),
];

const EVENTS_K8S_IO_FIELDS: &[Field] = &[
    field("regarding.kind", &[&["regarding", "kind"]], ""),
    field("regarding.namespace", &[&["regarding", "namespace"]], ""),
    field("regarding.name", &[&["regarding", "name"]], ""),
    field("regarding.uid", &[&["regarding", "uid"]], ""),
    field("regarding.apiVersion", &[&["regarding", "apiVersion"]], ""),
    field(
        "regarding.resourceVersion",
        &[&["regarding", "resourceVersion"]],
        "",
    ),
    field("regarding.fieldPath", &[&["regarding", "fieldPath"]], ""),
    field("reason", &[&["reason"]], ""),
    field("reportingController", &[&["reportingController"]], ""),
    field("type", &[&["type"]], ""),
];

const SECRET_FIELDS: &[Field] = &[field("type", &[&["type"]], "Opaque")];
const NODE_FIELDS: &[Field] = &[field(
    "spec.unschedulable",
    &[&["spec", "unschedulable"]],
    "false",
)];
const NAMESPACE_FIELDS: &[Field] = &[field("status.phase", &[&["status", "phase"]], "")];
const REPLICAS_FIELDS: &[Field] = &[field("status.replicas", &[&["status", "replicas"]], "0")];
const JOB_FIELDS: &[Field] = &[field("status.successful", &[&["status", "succeeded"]], "0")];
const SERVICE_FIELDS: &[Field] = &[
    field("spec.clusterIP", &[&["spec", "clusterIP"]], ""),
    field("spec.type", &[&["spec", "type"]], "ClusterIP"),
];

/// The kind-specific fields of a resource, beyond `metadata.name` and `metadata.namespace`.
fn kind_fields(info: &ResourceInfo) -> &'static [Field] {
    match (info.group, info.plural) {
        ("", "pods") => POD_FIELDS,
        ("", "events") => EVENT_FIELDS,
        ("events.k8s.io", "events") => EVENTS_K8S_IO_FIELDS,
        ("", "secrets") => SECRET_FIELDS,
        ("", "nodes") => NODE_FIELDS,
        ("", "namespaces") => NAMESPACE_FIELDS,
        ("", "replicationcontrollers") | ("apps", "replicasets") => REPLICAS_FIELDS,
        ("batch", "jobs") => JOB_FIELDS,
        ("", "services") => SERVICE_FIELDS,
        _ => &[],
    }
}

/// The fields a resource's field selectors may use, as the Kubernetes API server accepts them.
/// Every resource supports `metadata.name` and `metadata.namespace`.
pub fn supported_fields(info: &ResourceInfo) -> &'static [&'static str] {
    match (info.group, info.plural) {
        ("", "pods") => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            // Accepted by Kubernetes but never populated: it matches as "".
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        ("", "events") => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("events.k8s.io", "events") => &[
            "metadata.name",
            "metadata.namespace",
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ],
        ("", "secrets") => &["metadata.name", "metadata.namespace", "type"],
        ("", "nodes") => &["metadata.name", "metadata.namespace", "spec.unschedulable"],
        ("", "namespaces") => &["metadata.name", "metadata.namespace", "status.phase"],
        ("", "replicationcontrollers") | ("apps", "replicasets") => {
            &["metadata.name", "metadata.namespace", "status.replicas"]
        }
        ("batch", "jobs") => &["metadata.name", "metadata.namespace", "status.successful"],
        ("", "services") => &[
            "metadata.name",
            "metadata.namespace",
            "spec.clusterIP",
            "spec.type",
        ],
        _ => &["metadata.name", "metadata.namespace"],
    }
}

/// The value at a JSON path; numeric segments index arrays.
fn lookup<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, seg| match v {
        Value::Object(map) => map.get(*seg),
        Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// A JSON scalar as Kubernetes prints it in a field set; `None` for absent, null, empty or
/// structured values.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The field values of one object (its Kubernetes JSON) that selectors match against.
///
/// Contains `metadata.name`, `metadata.namespace` (namespaced resources) and the kind's fields
/// from [`supported_fields`]. Absent values are the zero value (`""`, `false`, `0`), or the
/// value Kubernetes defaults them to (`spec.restartPolicy` `Always`, `spec.schedulerName`
/// `default-scheduler`, secret `type` `Opaque`, service `spec.type` `ClusterIP`).
pub fn field_set(info: &ResourceInfo, obj: &Value) -> BTreeMap<String, String> {
    let mut set = BTreeMap::new();
    let meta = |key: &str| {
        lookup(obj, &["metadata", key])
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    set.insert("metadata.name".to_string(), meta("name"));
    if info.namespaced {
        set.insert("metadata.namespace".to_string(), meta("namespace"));
    }
    for f in kind_fields(info) {
        let value = f
            .paths
            .iter()
            .find_map(|path| lookup(obj, path).and_then(scalar))
            .unwrap_or_else(|| f.absent.to_string());
        set.insert(f.name.to_string(), value);
    }
    set
}

#[cfg(test)]
mod tests;
