//! `nodeSelector` and node affinity, as upstream's `NodeAffinity` plugin: the pod's
//! `spec.nodeSelector` and its required node affinity terms filter nodes, its preferred terms
//! score them (the sum of the weights of the terms a node matches, scaled to 0–100). The
//! plugin's `addedAffinity` args apply to every pod on top of its own.
//!
//! The parsed forms ([`NodeSelector`], [`PreferredTerms`], [`RequiredNodeAffinity`]) are
//! upstream's `component-helpers/scheduling/corev1/nodeaffinity`: built once per pod, then
//! matched against nodes without allocating. Other plugins (PodTopologySpread's
//! `nodeAffinityPolicy: Honor`) reuse [`RequiredNodeAffinity`].

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    NodeAffinity as ApiNodeAffinity, NodeSelector as ApiNodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, Pod, PreferredSchedulingTerm,
};
use rkube_types::selector::{Operator, Requirement};
use serde::Deserialize;

use crate::framework::{
    CycleState, FilterPlugin, MAX_NODE_SCORE, Plugin, PreFilterPlugin, PreScorePlugin, ScorePlugin,
    Status,
};
use crate::node_info::{NodeInfo, PodInfo};
use crate::snapshot::Snapshot;

/// The plugin's name in configuration.
pub const NAME: &str = "NodeAffinity";

/// The Filter reason when the pod's own `nodeSelector` or required affinity does not match.
pub const ERR_REASON_POD: &str = "node(s) didn't match Pod's node affinity/selector";
/// The Filter reason when the plugin's `addedAffinity` does not match.
pub const ERR_REASON_ENFORCED: &str = "node(s) didn't match scheduler-enforced node affinity";
/// The PreFilter reason when every term pins the pod to node names and no name is left.
pub const ERR_REASON_CONFLICT: &str = "pod affinity terms conflict";
/// The Filter reason for nodes outside the names the required terms pin the pod to. Upstream
/// never filters those nodes (PreFilter narrows the node list) and reports them with this
/// message instead.
pub const ERR_REASON_NOT_IN_NODE_NAMES: &str = "node(s) didn't satisfy plugin(s) [NodeAffinity]";

/// The only field a node selector term's `matchFields` can name.
const NODE_NAME_FIELD: &str = "metadata.name";

/// The CycleState key of the PreFilter state.
const PRE_FILTER_KEY: &str = "PreFilterNodeAffinity";
/// The CycleState key of the PreScore state.
const PRE_SCORE_KEY: &str = "PreScoreNodeAffinity";

/// Scales `scores` to `0..=max` relative to the highest one, as upstream's
/// `helper.DefaultNormalizeScore`; with `reverse`, a higher raw score ends lower. When every
/// score is 0 they stay 0, or all become `max` with `reverse`.
pub fn default_normalize_score(max: i64, reverse: bool, scores: &mut [i64]) {
    let highest = scores.iter().copied().max().unwrap_or(0).max(0);
    if highest == 0 {
        if reverse {
            scores.fill(max);
        }
        return;
    }
    for score in scores.iter_mut() {
        let scaled = max * *score / highest;
        *score = if reverse { max - scaled } else { scaled };
    }
}

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

const SUPPORTED_OPERATORS: &str = r#""In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt""#;

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
    fn matches(&self, node: &NodeInfo) -> bool {
        if !self.errors.is_empty() {
            return false;
        }
        if let Some(labels) = &self.labels
            && !labels.iter().all(|r| r.matches(&node.labels))
        {
            return false;
        }
        if let Some(fields) = &self.fields
            && !node.name.is_empty()
            && !fields.iter().all(|f| f.matches(&node.name))
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

    /// Whether any term matches the node.
    pub fn matches(&self, node: &NodeInfo) -> bool {
        self.terms.iter().any(|t| t.matches(node))
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

    /// The sum of the weights of the terms the node matches.
    pub fn score(&self, node: &NodeInfo) -> i64 {
        self.terms
            .iter()
            .filter(|(t, _)| t.matches(node))
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
    /// Parses the pod's selector and required affinity. Invalid affinity terms match no
    /// node rather than failing (upstream's lazy errors).
    pub fn from_pod(pod: &Pod) -> RequiredNodeAffinity {
        let Some(spec) = pod.spec.as_ref() else {
            return RequiredNodeAffinity::default();
        };
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

    /// Whether the node's labels match the node selector and the node matches one of the
    /// required terms.
    pub fn matches(&self, node: &NodeInfo) -> bool {
        let selected = self
            .node_selector
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v));
        selected && self.affinity.as_ref().is_none_or(|a| a.matches(node))
    }
}

/// What PreFilter keeps for Filter.
#[derive(Debug, Clone)]
struct PreFilterState {
    required: Arc<RequiredNodeAffinity>,
    /// The only nodes the required terms allow, by `metadata.name`, when every term pins
    /// names (upstream returns them as a `PreFilterResult`).
    node_names: Option<Arc<HashSet<String>>>,
}

/// What PreScore keeps for Score.
#[derive(Debug, Clone)]
struct PreScoreState {
    preferred: Option<Arc<PreferredTerms>>,
}

/// The node names every term pins the pod to with `matchFields` `metadata.name In`:
/// intersected within a term, united across terms; `None` when some term pins none.
fn pinned_node_names(terms: &[NodeSelectorTerm]) -> Option<HashSet<String>> {
    let mut union = HashSet::new();
    for term in terms {
        let mut names: Option<HashSet<&str>> = None;
        for r in term.match_fields.iter().flatten() {
            if r.key != NODE_NAME_FIELD || r.operator != "In" {
                continue;
            }
            let values: HashSet<&str> = r.values.iter().flatten().map(String::as_str).collect();
            names = Some(match names {
                None => values,
                Some(prev) => prev.intersection(&values).copied().collect(),
            });
        }
        // A term without a name requirement lets every node through (terms are ORed).
        union.extend(names?.into_iter().map(str::to_string));
    }
    Some(union)
}

/// The pod's preferred node affinity terms, parsed; `Ok(None)` when it has none.
fn pod_preferred(pod: &Pod) -> Result<Option<PreferredTerms>, String> {
    let terms = pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        });
    terms.map(PreferredTerms::parse).transpose()
}

/// The NodeAffinity plugin.
#[derive(Debug, Default)]
pub struct NodeAffinity {
    /// `addedAffinity.requiredDuringSchedulingIgnoredDuringExecution`.
    added_required: Option<NodeSelector>,
    /// `addedAffinity.preferredDuringSchedulingIgnoredDuringExecution`.
    added_preferred: Option<PreferredTerms>,
}

impl NodeAffinity {
    /// The plugin with `addedAffinity` applied to every pod; an error when it is invalid.
    pub fn with_added_affinity(added: Option<&ApiNodeAffinity>) -> Result<NodeAffinity, String> {
        let mut pl = NodeAffinity::default();
        let Some(added) = added else {
            return Ok(pl);
        };
        if let Some(ns) = &added.required_during_scheduling_ignored_during_execution {
            pl.added_required = Some(NodeSelector::parse(ns).map_err(|e| {
                format!("parsing addedAffinity.requiredDuringSchedulingIgnoredDuringExecution: {e}")
            })?);
        }
        if let Some(terms) = added
            .preferred_during_scheduling_ignored_during_execution
            .as_deref()
            .filter(|t| !t.is_empty())
        {
            pl.added_preferred = Some(PreferredTerms::parse(terms).map_err(|e| {
                format!(
                    "parsing addedAffinity.preferredDuringSchedulingIgnoredDuringExecution: {e}"
                )
            })?);
        }
        Ok(pl)
    }
}

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for NodeAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, _snapshot: &Snapshot) -> Status {
        let spec = pod.pod.spec.as_ref();
        let required = spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| {
                na.required_during_scheduling_ignored_during_execution
                    .as_ref()
            });
        // Upstream checks for a nil (not empty) nodeSelector.
        let has_selector = spec.is_some_and(|s| s.node_selector.is_some());
        if required.is_none() && self.added_required.is_none() && !has_selector {
            return Status::skip();
        }
        let node_names = required
            .filter(|ns| !ns.node_selector_terms.is_empty())
            .and_then(|ns| pinned_node_names(&ns.node_selector_terms));
        if node_names.as_ref().is_some_and(HashSet::is_empty) {
            return Status::unresolvable(ERR_REASON_CONFLICT);
        }
        state.write(
            PRE_FILTER_KEY,
            PreFilterState {
                required: Arc::new(RequiredNodeAffinity::from_pod(&pod.pod)),
                node_names: node_names.map(Arc::new),
            },
        );
        Status::success()
    }
}

impl FilterPlugin for NodeAffinity {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let pre = state.read::<PreFilterState>(PRE_FILTER_KEY);
        if let Some(names) = pre.and_then(|s| s.node_names.as_ref())
            && !names.contains(&node.name)
        {
            return Status::unresolvable(ERR_REASON_NOT_IN_NODE_NAMES);
        }
        if let Some(added) = &self.added_required
            && !added.matches(node)
        {
            return Status::unresolvable(ERR_REASON_ENFORCED);
        }
        let matched = match pre {
            Some(s) => s.required.matches(node),
            // PreFilter is disabled in this profile: parse here, as upstream falls back to.
            None => RequiredNodeAffinity::from_pod(&pod.pod).matches(node),
        };
        if matched {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON_POD)
        }
    }
}

impl PreScorePlugin for NodeAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _nodes: &[&NodeInfo],
        _snapshot: &Snapshot,
    ) -> Status {
        let preferred = match pod_preferred(&pod.pod) {
            Ok(p) => p,
            Err(e) => return Status::error(e),
        };
        if preferred.is_none() && self.added_preferred.is_none() {
            return Status::skip();
        }
        state.write(
            PRE_SCORE_KEY,
            PreScoreState {
                preferred: preferred.map(Arc::new),
            },
        );
        Status::success()
    }
}

impl ScorePlugin for NodeAffinity {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let mut count = self.added_preferred.as_ref().map_or(0, |p| p.score(node));
        match state.read::<PreScoreState>(PRE_SCORE_KEY) {
            Some(s) => count += s.preferred.as_ref().map_or(0, |p| p.score(node)),
            // PreScore is disabled in this profile: parse here, as upstream falls back to.
            None => {
                let preferred = pod_preferred(&pod.pod).map_err(Status::error)?;
                count += preferred.map_or(0, |p| p.score(node));
            }
        }
        Ok(count)
    }

    fn normalize(&self, _state: &CycleState, _pod: &PodInfo, scores: &mut [i64]) -> Status {
        default_normalize_score(MAX_NODE_SCORE, false, scores);
        Status::success()
    }
}

/// `NodeAffinityArgs` of `kubescheduler.config.k8s.io/v1`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NodeAffinityArgs {
    // Accepted so that args written with their type meta decode; unknown fields are not.
    #[serde(default)]
    #[allow(dead_code)]
    api_version: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    kind: Option<String>,
    #[serde(default)]
    added_affinity: Option<ApiNodeAffinity>,
}

/// Builds the plugin from its `NodeAffinityArgs` (`addedAffinity`).
pub fn new(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    let args = match args.filter(|a| !a.is_null()) {
        Some(a) => NodeAffinityArgs::deserialize(a)
            .map_err(|e| format!("invalid NodeAffinityArgs: {e}"))?,
        None => NodeAffinityArgs::default(),
    };
    Ok(Arc::new(NodeAffinity::with_added_affinity(
        args.added_affinity.as_ref(),
    )?))
}

#[cfg(test)]
mod tests;
