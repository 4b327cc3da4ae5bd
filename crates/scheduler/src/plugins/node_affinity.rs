//! `nodeSelector` and node affinity, as upstream's `NodeAffinity` plugin: the pod's
//! `spec.nodeSelector` and its required node affinity terms filter nodes, its preferred terms
//! score them (the sum of the weights of the terms a node matches, scaled to 0–100). The
//! plugin's `addedAffinity` args apply to every pod on top of its own.
//!
//! The parsed forms ([`NodeSelector`], [`PreferredTerms`], [`RequiredNodeAffinity`]) are
//! upstream's `component-helpers/scheduling/corev1/nodeaffinity`, shared with the DaemonSet
//! controller from `rkube_types::scheduling::node_affinity`: built once per pod, then
//! matched against nodes without allocating. Other plugins (PodTopologySpread's
//! `nodeAffinityPolicy: Honor`) reuse [`RequiredNodeAffinity`].

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{NodeAffinity as ApiNodeAffinity, NodeSelectorTerm, Pod};
use rkube_types::scheduling::node_affinity::NODE_NAME_FIELD;
pub use rkube_types::scheduling::node_affinity::{
    NodeSelector, PreferredTerms, RequiredNodeAffinity,
};
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
            && !added.matches(&node.labels, &node.name)
        {
            return Status::unresolvable(ERR_REASON_ENFORCED);
        }
        let matched = match pre {
            Some(s) => s.required.matches(&node.labels, &node.name),
            // PreFilter is disabled in this profile: parse here, as upstream falls back to.
            None => RequiredNodeAffinity::from_pod(&pod.pod).matches(&node.labels, &node.name),
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
        let mut count = self
            .added_preferred
            .as_ref()
            .map_or(0, |p| p.score(&node.labels, &node.name));
        match state.read::<PreScoreState>(PRE_SCORE_KEY) {
            Some(s) => {
                count += s
                    .preferred
                    .as_ref()
                    .map_or(0, |p| p.score(&node.labels, &node.name))
            }
            // PreScore is disabled in this profile: parse here, as upstream falls back to.
            None => {
                let preferred = pod_preferred(&pod.pod).map_err(Status::error)?;
                count += preferred.map_or(0, |p| p.score(&node.labels, &node.name));
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
