//! A pod's `nodeSelector` and node affinity in parsed form, as upstream's
//! `component-helpers/scheduling/corev1/nodeaffinity`: built once per pod ([`NodeSelector`],
//! [`PreferredTerms`], [`RequiredNodeAffinity`]), then matched against any number of nodes
//! without allocating.
//!
//! A term's `matchExpressions` are label requirements (`In`, `NotIn`, `Exists`,
//! `DoesNotExist`, `Gt`, `Lt`) over the node's labels; its `matchFields` compare
//! `metadata.name` (`In`/`NotIn` with one value). The scheduler's NodeAffinity and
//! PodTopologySpread plugins and the DaemonSet controller all decide with these, as upstream
//! does.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NodeSelector as ApiNodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec,
    PreferredSchedulingTerm,
};

use crate::selector::{Operator, Requirement};

/// The only field a node selector term's `matchFields` can name.
pub const NODE_NAME_FIELD: &str = "metadata.name";

const SUPPORTED_OPERATORS: &str = r#""In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt""#;

/// One `matchFields` requirement: `In` or `NotIn` with exactly one value.
#[derive(Debug, Clone)]
struct FieldRequirement {
    key: String,
    /// `In` (equal) or `NotIn` (not equal).
    equal: bool,
    value: String,
}

impl FieldRequirement {
    /// Matches against the node's fields, of which only `metadata.name` exists; any other
    /// key reads as empty, as upstream's `fields.Set`.
    #[inline]
    fn matches(&self, node_name: &str) -> bool {
        let actual = if self.key == NODE_NAME_FIELD {
            node_name
        } else {
            ""
        };
        (actual == self.value) == self.equal
    }
}

/// A parsed `NodeSelectorTerm`: its expressions and fields are ANDed.
#[derive(Debug, Clone)]
struct Term {
    /// `matchExpressions`, `None` when the term has none.
    labels: Option<Vec<Requirement>>,
    /// `matchFields`, `None` when the term has none.
    fields: Option<Vec<FieldRequirement>>,
    /// Why the term is invalid; an invalid term matches no node.
    errors: Vec<String>,
}

/// Whether a term has neither expressions nor fields (it selects nothing and is dropped).
fn is_empty_term(term: &NodeSelectorTerm) -> bool {
    term.match_expressions.as_ref().is_none_or(Vec::is_empty)
        && term.match_fields.as_ref().is_none_or(Vec::is_empty)
}

impl Term {
    /// Parses a term; `path` names it in error messages.
    fn parse(term: &NodeSelectorTerm, path: &dyn Fn() -> String) -> Term {
        let mut errors = Vec::new();
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        let labels = (!exprs.is_empty()).then(|| {
            let mut out = Vec::with_capacity(exprs.len());
            for (i, expr) in exprs.iter().enumerate() {
                match label_requirement(expr) {
                    Ok(r) => out.push(r),
                    Err(e) => errors.push(format!("{}.matchExpressions[{i}]{e}", path())),
                }
            }
            out
        });
        let reqs = term.match_fields.as_deref().unwrap_or_default();
        let fields = (!reqs.is_empty()).then(|| {
            let mut out = Vec::with_capacity(reqs.len());
            for (i, req) in reqs.iter().enumerate() {
                match field_requirement(req) {
                    Ok(r) => out.push(r),
                    Err(e) => errors.push(format!("{}.matchFields[{i}]{e}", path())),
                }
            }
            out
        });
        Term {
            labels,
            fields,
            errors,
        }
    }

    /// Whether the node matches every expression and field. A node without a name skips
    /// the fields, as upstream (it has no `metadata.name` field to compare).
    #[inline]
    fn matches(&self, labels: &BTreeMap<String, String>, name: &str) -> bool {
        if !self.errors.is_empty() {
            return false;
        }
        if let Some(reqs) = &self.labels
            && !reqs.iter().all(|r| r.matches(labels))
        {
            return false;
        }
        if let Some(fields) = &self.fields
            && !name.is_empty()
            && !fields.iter().all(|f| f.matches(name))
        {
            return false;
        }
        true
    }
}

/// Converts a `matchExpressions` entry; the error starts with the field path suffix.
fn label_requirement(expr: &NodeSelectorRequirement) -> Result<Requirement, String> {
    let operator = match expr.operator.as_str() {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        "Gt" => Operator::GreaterThan,
        "Lt" => Operator::LessThan,
        other => {
            return Err(format!(
                ".operator: Unsupported value: {other:?}: supported values: {SUPPORTED_OPERATORS}"
            ));
        }
    };
    let values = expr.values.iter().flatten().map(String::as_str);
    Requirement::new(expr.key.as_str(), operator, values).map_err(|e| format!(": {e}"))
}

/// Converts a `matchFields` entry; the error starts with the field path suffix.
fn field_requirement(req: &NodeSelectorRequirement) -> Result<FieldRequirement, String> {
    let equal = match req.operator.as_str() {
        "In" => true,
        "NotIn" => false,
        other => {
            return Err(format!(
                r#".operator: Unsupported value: {other:?}: supported values: "In", "NotIn""#
            ));
        }
    };
    match req.values.as_deref().unwrap_or_default() {
        [value] => Ok(FieldRequirement {
            key: req.key.clone(),
            equal,
            value: value.clone(),
        }),
        values => Err(format!(
            ".values: Invalid value: {values:?}: must have one element"
        )),
    }
}

/// A parsed `NodeSelector`: terms ORed. Empty terms are dropped, so a selector without a
/// non-empty term matches no node.
#[derive(Debug, Clone, Default)]
pub struct NodeSelector {
    terms: Vec<Term>,
}

impl NodeSelector {
    /// Parses leniently, as upstream's `NewLazyErrorNodeSelector`: an invalid term only
    /// matches no node. This is how pods' selectors are read, for backwards compatibility.
    pub fn parse_lenient(selector: &ApiNodeSelector) -> NodeSelector {
        let terms = selector
            .node_selector_terms
            .iter()
            .enumerate()
            .filter(|(_, t)| !is_empty_term(t))
            .map(|(i, t)| Term::parse(t, &|| format!("nodeSelectorTerms[{i}]")))
            .collect();
        NodeSelector { terms }
    }

    /// Parses strictly, as upstream's `NewNodeSelector`: any invalid term is an error
    /// listing every problem.
    pub fn parse(selector: &ApiNodeSelector) -> Result<NodeSelector, String> {
        let parsed = NodeSelector::parse_lenient(selector);
        let errors: Vec<&str> = parsed
            .terms
            .iter()
            .flat_map(|t| t.errors.iter().map(String::as_str))
            .collect();
        if errors.is_empty() {
            Ok(parsed)
        } else {
            Err(errors.join(", "))
        }
    }

    /// Whether any term matches the node with these `labels` and `metadata.name`.
    #[inline]
    pub fn matches(&self, labels: &BTreeMap<String, String>, name: &str) -> bool {
        self.terms.iter().any(|t| t.matches(labels, name))
    }
}

/// Parsed preferred scheduling terms with their weights.
#[derive(Debug, Clone, Default)]
pub struct PreferredTerms {
    terms: Vec<(Term, i64)>,
}

impl PreferredTerms {
    /// Parses strictly, as upstream's `NewPreferredSchedulingTerms`; terms with weight 0 or
    /// no expressions and fields are dropped without being checked.
    pub fn parse(terms: &[PreferredSchedulingTerm]) -> Result<PreferredTerms, String> {
        let mut out = Vec::with_capacity(terms.len());
        let mut errors = Vec::new();
        for (i, t) in terms.iter().enumerate() {
            if t.weight == 0 || is_empty_term(&t.preference) {
                continue;
            }
            let term = Term::parse(&t.preference, &|| format!("[{i}]"));
            if term.errors.is_empty() {
                out.push((term, i64::from(t.weight)));
            } else {
                errors.extend(term.errors);
            }
        }
        if errors.is_empty() {
            Ok(PreferredTerms { terms: out })
        } else {
            Err(errors.join(", "))
        }
    }

    /// The sum of the weights of the terms the node with these `labels` and
    /// `metadata.name` matches.
    #[inline]
    pub fn score(&self, labels: &BTreeMap<String, String>, name: &str) -> i64 {
        self.terms
            .iter()
            .filter(|(t, _)| t.matches(labels, name))
            .map(|(_, w)| *w)
            .sum()
    }
}

/// A pod's `spec.nodeSelector` and required node affinity, parsed once (upstream's
/// `nodeaffinity.RequiredNodeAffinity`). A node must match both.
#[derive(Debug, Clone, Default)]
pub struct RequiredNodeAffinity {
    /// `spec.nodeSelector`: every label must be present with this value.
    node_selector: Vec<(String, String)>,
    /// `requiredDuringSchedulingIgnoredDuringExecution`, when set.
    affinity: Option<NodeSelector>,
}

impl RequiredNodeAffinity {
    /// Parses the pod's selector and required affinity (upstream's
    /// `GetRequiredNodeAffinity`). Invalid affinity terms match no node rather than failing
    /// (upstream's lazy errors).
    pub fn from_pod(pod: &Pod) -> RequiredNodeAffinity {
        pod.spec
            .as_ref()
            .map(RequiredNodeAffinity::from_spec)
            .unwrap_or_default()
    }

    /// [`RequiredNodeAffinity::from_pod`] for a pod spec (a workload's pod template).
    pub fn from_spec(spec: &PodSpec) -> RequiredNodeAffinity {
        let node_selector = spec
            .node_selector
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let affinity = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| {
                na.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(NodeSelector::parse_lenient);
        RequiredNodeAffinity {
            node_selector,
            affinity,
        }
    }

    /// Whether the pod sets neither a node selector nor required affinity (every node
    /// matches).
    pub fn is_empty(&self) -> bool {
        self.node_selector.is_empty() && self.affinity.is_none()
    }

    /// Whether the node's `labels` match the node selector and the node (with these
    /// `labels` and `metadata.name`) matches one of the required terms.
    #[inline]
    pub fn matches(&self, labels: &BTreeMap<String, String>, name: &str) -> bool {
        let selected = self
            .node_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v));
        selected
            && self
                .affinity
                .as_ref()
                .is_none_or(|a| a.matches(labels, name))
    }
}

#[cfg(test)]
mod tests;
