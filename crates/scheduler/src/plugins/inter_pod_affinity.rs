//! Pod affinity and anti-affinity, required and preferred, including the symmetry of existing
//! pods' anti-affinity, as upstream's `interpodaffinity` plugin.
//!
//! PreFilter walks the snapshot once per pod and counts, per topology pair (`zone=z1`), the
//! existing pods whose required anti-affinity matches the incoming pod, and the existing pods
//! matching the incoming pod's required affinity and anti-affinity terms. Filter then answers
//! for one node with a few hash lookups, never looking at pods. PreScore likewise sums the
//! preferred terms (both directions) and existing pods' required affinity into per-pair
//! weights that Score looks up by the node's labels.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::framework::{
    CycleState, FilterPlugin, MAX_NODE_SCORE, Plugin, PreFilterPlugin, PreScorePlugin, ScorePlugin,
    Status,
};
use crate::node_info::{AffinityTerm, Labels, MatchMemo, NodeInfo, PodInfo, WeightedAffinityTerm};
use crate::snapshot::Snapshot;

#[cfg(test)]
mod tests;

/// The plugin's name in configuration.
pub const NAME: &str = "InterPodAffinity";

/// Why a node fails because a pod already there (or in its domain) repels the incoming pod.
pub const ERR_REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
/// Why a node fails the incoming pod's required affinity.
pub const ERR_REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
/// Why a node fails the incoming pod's required anti-affinity.
pub const ERR_REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";

/// Upstream's default `hardPodAffinityWeight`.
pub const DEFAULT_HARD_POD_AFFINITY_WEIGHT: i32 = 1;

const PRE_FILTER_KEY: &str = "PreFilterInterPodAffinity";
const PRE_SCORE_KEY: &str = "PreScoreInterPodAffinity";

/// `InterPodAffinityArgs` of the KubeSchedulerConfiguration (`kubescheduler.config.k8s.io/v1`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InterPodAffinityArgs {
    /// `apiVersion`, accepted and ignored (args may carry their type meta).
    #[serde(default)]
    pub api_version: Option<String>,
    /// `kind`; when set it must be `InterPodAffinityArgs`.
    #[serde(default)]
    pub kind: Option<String>,
    /// The score weight, 0–100, of existing pods' required affinity terms that match the
    /// incoming pod (0 turns this symmetry off).
    #[serde(default = "default_hard_weight")]
    pub hard_pod_affinity_weight: i32,
    /// Whether to skip scoring when the incoming pod has no preferred terms of its own, even
    /// if existing pods have preferences towards it.
    #[serde(default)]
    pub ignore_preferred_terms_of_existing_pods: bool,
}

fn default_hard_weight() -> i32 {
    DEFAULT_HARD_POD_AFFINITY_WEIGHT
}

impl Default for InterPodAffinityArgs {
    fn default() -> Self {
        InterPodAffinityArgs {
            api_version: None,
            kind: None,
            hard_pod_affinity_weight: DEFAULT_HARD_POD_AFFINITY_WEIGHT,
            ignore_preferred_terms_of_existing_pods: false,
        }
    }
}

impl InterPodAffinityArgs {
    /// Reads the args from their JSON (`None`: the defaults) and validates them as upstream's
    /// `ValidateInterPodAffinityArgs`.
    pub fn from_json(args: Option<&serde_json::Value>) -> Result<Self, String> {
        let parsed = match args {
            None | Some(serde_json::Value::Null) => InterPodAffinityArgs::default(),
            Some(v) => InterPodAffinityArgs::deserialize(v)
                .map_err(|e| format!("invalid {NAME} args: {e}"))?,
        };
        if let Some(kind) = parsed
            .kind
            .as_deref()
            .filter(|k| *k != "InterPodAffinityArgs")
        {
            return Err(format!(
                "invalid {NAME} args: kind {kind:?} is not InterPodAffinityArgs"
            ));
        }
        let w = parsed.hard_pod_affinity_weight;
        if !(0..=100).contains(&w) {
            return Err(format!(
                "invalid {NAME} args: hardPodAffinityWeight: Invalid value: {w}: not in valid range [0, 100]"
            ));
        }
        Ok(parsed)
    }
}

/// The InterPodAffinity plugin: PreFilter (with add/remove pod), Filter, PreScore, Score.
#[derive(Debug, Clone)]
pub struct InterPodAffinity {
    hard_pod_affinity_weight: i64,
    ignore_preferred_terms_of_existing_pods: bool,
}

impl InterPodAffinity {
    /// The plugin with validated args.
    pub fn with_args(args: &InterPodAffinityArgs) -> InterPodAffinity {
        InterPodAffinity {
            hard_pod_affinity_weight: i64::from(args.hard_pod_affinity_weight),
            ignore_preferred_terms_of_existing_pods: args.ignore_preferred_terms_of_existing_pods,
        }
    }
}

/// Builds the plugin from its args.
pub fn new(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    let args = InterPodAffinityArgs::from_json(args)?;
    Ok(Arc::new(InterPodAffinity::with_args(&args)))
}

/// Counts per topology pair, as topology key → value → count. Nested so that Filter and
/// Score look pairs up by borrowed `&str` without building a key. Zero counts are removed, so
/// emptiness means "no matching pod anywhere" (the first-pod-of-a-group rule relies on it).
#[derive(Debug, Clone, Default)]
struct TopologyCounts(HashMap<String, HashMap<String, i64>>);

impl TopologyCounts {
    fn add(&mut self, key: &str, value: &str, delta: i64) {
        if delta == 0 {
            return;
        }
        let Some(values) = self.0.get_mut(key) else {
            self.0
                .insert(key.to_string(), HashMap::from([(value.to_string(), delta)]));
            return;
        };
        match values.get_mut(value) {
            Some(n) => {
                *n += delta;
                if *n == 0 {
                    values.remove(value);
                    if values.is_empty() {
                        self.0.remove(key);
                    }
                }
            }
            None => {
                values.insert(value.to_string(), delta);
            }
        }
    }

    /// Adds `delta` to the pair of `key` and the node's value for it; nodes without the
    /// label are in no domain of that key and count nowhere.
    fn add_on(&mut self, node: &Labels, key: &str, delta: i64) {
        if let Some(value) = node.get(key) {
            self.add(key, value, delta);
        }
    }

    fn get(&self, key: &str, value: &str) -> i64 {
        self.0
            .get(key)
            .and_then(|values| values.get(value))
            .copied()
            .unwrap_or(0)
    }

    /// The sum of the counts of the pairs the node is in.
    fn sum_on(&self, node: &Labels) -> i64 {
        self.0
            .iter()
            .filter_map(|(key, values)| values.get(node.get(key)?))
            .sum()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What PreFilter computes for Filter.
#[derive(Debug, Clone, Default)]
struct PreFilterState {
    /// Pairs where existing pods' required anti-affinity terms match the incoming pod.
    existing_anti_affinity: TopologyCounts,
    /// Pairs with existing pods matching all of the incoming pod's required affinity terms
    /// (one count per term's key).
    affinity: TopologyCounts,
    /// Pairs with existing pods matching one of the incoming pod's required anti-affinity
    /// terms.
    anti_affinity: TopologyCounts,
    /// Whether the incoming pod matches all of its own required affinity terms.
    matches_own_affinity: bool,
}

impl PreFilterState {
    /// Counts `other`, placed on a node labelled `node`, with `delta` (+1 added, -1 removed).
    fn update(
        &mut self,
        pod: &PodInfo,
        other: &PodInfo,
        node: &Labels,
        namespaces: &HashMap<String, Labels>,
        delta: i64,
    ) {
        for t in &other.required_anti_affinity {
            if t.matches(pod, namespaces) {
                self.existing_anti_affinity
                    .add_on(node, &t.topology_key, delta);
            }
        }
        if matches_all(&pod.required_affinity, other, namespaces) {
            for t in &pod.required_affinity {
                self.affinity.add_on(node, &t.topology_key, delta);
            }
        }
        for t in &pod.required_anti_affinity {
            if t.matches(other, namespaces) {
                self.anti_affinity.add_on(node, &t.topology_key, delta);
            }
        }
    }

    fn satisfies_affinity(&self, pod: &PodInfo, node: &Labels) -> bool {
        let mut pods_exist = true;
        for t in &pod.required_affinity {
            let Some(value) = node.get(&t.topology_key) else {
                // A node outside every domain of the key can never satisfy the term.
                return false;
            };
            if self.affinity.get(&t.topology_key, value) <= 0 {
                pods_exist = false;
            }
        }
        // The first pod of a group with affinity to itself would wait forever for a peer:
        // when no pod anywhere matches and the pod matches its own terms, any node with all
        // the topology keys will do.
        pods_exist || (self.affinity.is_empty() && self.matches_own_affinity)
    }

    fn satisfies_anti_affinity(&self, pod: &PodInfo, node: &Labels) -> bool {
        self.anti_affinity.is_empty()
            || pod.required_anti_affinity.iter().all(|t| {
                node.get(&t.topology_key)
                    .is_none_or(|v| self.anti_affinity.get(&t.topology_key, v) <= 0)
            })
    }

    fn satisfies_existing_anti_affinity(&self, node: &Labels) -> bool {
        self.existing_anti_affinity.0.iter().all(|(key, values)| {
            node.get(key)
                .and_then(|v| values.get(v))
                .is_none_or(|n| *n <= 0)
        })
    }
}

/// Whether `pod` matches every term (false when there are none, as upstream).
fn matches_all(
    terms: &[AffinityTerm],
    pod: &PodInfo,
    namespaces: &HashMap<String, Labels>,
) -> bool {
    !terms.is_empty() && terms.iter().all(|t| t.matches(pod, namespaces))
}

/// What PreScore computes for Score.
#[derive(Debug, Clone)]
struct PreScoreState {
    /// Summed weights per topology pair; positive attracts, negative repels.
    scores: TopologyCounts,
}

/// Adds the weights of matching preferred terms, negated when `sign` is -1.
fn add_weighted(
    scores: &mut TopologyCounts,
    terms: &[WeightedAffinityTerm],
    target: &PodInfo,
    namespaces: &HashMap<String, Labels>,
    node: &Labels,
    sign: i64,
) {
    for wt in terms {
        if wt.term.matches(target, namespaces) {
            scores.add_on(node, &wt.term.topology_key, sign * i64::from(wt.weight));
        }
    }
}

impl InterPodAffinity {
    /// Adds what one existing pod on a node labelled `node` contributes to the scores.
    fn score_existing_pod(
        &self,
        scores: &mut TopologyCounts,
        pod: &PodInfo,
        existing: &PodInfo,
        node: &Labels,
        namespaces: &HashMap<String, Labels>,
    ) {
        // The incoming pod's preferences towards the existing pod.
        add_weighted(
            scores,
            &pod.preferred_affinity,
            existing,
            namespaces,
            node,
            1,
        );
        add_weighted(
            scores,
            &pod.preferred_anti_affinity,
            existing,
            namespaces,
            node,
            -1,
        );
        // The existing pod's wishes towards the incoming pod (symmetry).
        if self.hard_pod_affinity_weight > 0 {
            for t in &existing.required_affinity {
                if t.matches(pod, namespaces) {
                    scores.add_on(node, &t.topology_key, self.hard_pod_affinity_weight);
                }
            }
        }
        add_weighted(
            scores,
            &existing.preferred_affinity,
            pod,
            namespaces,
            node,
            1,
        );
        add_weighted(
            scores,
            &existing.preferred_anti_affinity,
            pod,
            namespaces,
            node,
            -1,
        );
    }

    fn update_pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        snapshot: &Snapshot,
        delta: i64,
    ) -> Status {
        let Some(s) = state.read_mut::<PreFilterState>(PRE_FILTER_KEY) else {
            return Status::error(format!(
                "reading {PRE_FILTER_KEY:?} from cycle state: not found"
            ));
        };
        s.update(pod, other, &node.labels, snapshot.namespace_labels(), delta);
        Status::success()
    }
}

impl Plugin for InterPodAffinity {
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

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot) -> Status {
        if let Some(e) = &pod.parse_error {
            return Status::unresolvable(format!("parsing pod: {e}"));
        }
        let namespaces = snapshot.namespace_labels();
        let mut s = PreFilterState::default();

        // Symmetry: only nodes holding pods with required anti-affinity can repel the pod.
        // Pods of one workload share their terms: each distinct term is matched once.
        if snapshot.have_pods_with_required_anti_affinity() {
            let mut memo = MatchMemo::default();
            for node in snapshot.nodes() {
                if node.pods_with_required_anti_affinity == 0 {
                    continue;
                }
                for existing in &node.pods {
                    for t in &existing.required_anti_affinity {
                        if memo.get_or(t.id, || t.matches(pod, namespaces)) {
                            s.existing_anti_affinity
                                .add_on(&node.labels, &t.topology_key, 1);
                        }
                    }
                }
            }
        }

        let affinity = &pod.required_affinity;
        let anti_affinity = &pod.required_anti_affinity;
        if affinity.is_empty() && anti_affinity.is_empty() {
            if s.existing_anti_affinity.is_empty() {
                return Status::skip();
            }
        } else {
            // Placed pods of one workload share their labels: each distinct label set is
            // matched once per term.
            let mut affinity_memo = MatchMemo::default();
            let mut anti_memo = vec![MatchMemo::default(); anti_affinity.len()];
            for node in snapshot.nodes() {
                if node.pods.is_empty() {
                    continue;
                }
                // Pods on a node without a term's key count in no domain of it, so the
                // matching is skipped unless some key is present.
                let labels = &node.labels;
                if affinity
                    .iter()
                    .any(|t| labels.contains_key(&t.topology_key))
                {
                    let n = node
                        .pods
                        .iter()
                        .filter(|p| {
                            affinity_memo
                                .get_or(p.label_hash, || matches_all(affinity, p, namespaces))
                        })
                        .count() as i64;
                    for t in affinity {
                        s.affinity.add_on(labels, &t.topology_key, n);
                    }
                }
                for (t, memo) in anti_affinity.iter().zip(anti_memo.iter_mut()) {
                    if !labels.contains_key(&t.topology_key) {
                        continue;
                    }
                    let n = node
                        .pods
                        .iter()
                        .filter(|p| memo.get_or(p.label_hash, || t.matches(p, namespaces)))
                        .count() as i64;
                    s.anti_affinity.add_on(labels, &t.topology_key, n);
                }
            }
            s.matches_own_affinity = matches_all(affinity, pod, namespaces);
        }
        state.write(PRE_FILTER_KEY, s);
        Status::success()
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &Arc<PodInfo>,
        node: &NodeInfo,
        snapshot: &Snapshot,
    ) -> Status {
        self.update_pre_filter(state, pod, other, node, snapshot, 1)
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &Arc<PodInfo>,
        node: &NodeInfo,
        snapshot: &Snapshot,
    ) -> Status {
        self.update_pre_filter(state, pod, other, node, snapshot, -1)
    }
}

impl FilterPlugin for InterPodAffinity {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<PreFilterState>(PRE_FILTER_KEY) else {
            return Status::error(format!(
                "reading {PRE_FILTER_KEY:?} from cycle state: not found"
            ));
        };
        if !s.satisfies_affinity(pod, &node.labels) {
            return Status::unresolvable(ERR_REASON_AFFINITY);
        }
        if !s.satisfies_anti_affinity(pod, &node.labels) {
            return Status::unschedulable(ERR_REASON_ANTI_AFFINITY);
        }
        if !s.satisfies_existing_anti_affinity(&node.labels) {
            return Status::unschedulable(ERR_REASON_EXISTING_ANTI_AFFINITY);
        }
        Status::success()
    }
}

impl PreScorePlugin for InterPodAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _nodes: &[&NodeInfo],
        snapshot: &Snapshot,
    ) -> Status {
        if let Some(e) = &pod.parse_error {
            return Status::error(format!("parsing pod: {e}"));
        }
        let has_preferences =
            !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
        if !has_preferences
            && (self.ignore_preferred_terms_of_existing_pods || !snapshot.have_pods_with_affinity())
        {
            return Status::skip();
        }
        let namespaces = snapshot.namespace_labels();
        let mut scores = TopologyCounts::default();
        // Scores accumulate over the whole cluster (not just the feasible nodes): a pod on an
        // infeasible node still makes its domain attractive or repellent.
        for node in snapshot.nodes() {
            // Without labels the node is in no domain, so its pods weigh nowhere.
            if node.labels.is_empty() || (!has_preferences && node.pods_with_affinity == 0) {
                continue;
            }
            for existing in &node.pods {
                // Without its own preferences the pod is only scored by existing pods' terms,
                // and required anti-affinity terms score nothing.
                if !has_preferences
                    && existing.required_affinity.is_empty()
                    && existing.preferred_affinity.is_empty()
                    && existing.preferred_anti_affinity.is_empty()
                {
                    continue;
                }
                self.score_existing_pod(&mut scores, pod, existing, &node.labels, namespaces);
            }
        }
        if scores.is_empty() {
            return Status::skip();
        }
        state.write(PRE_SCORE_KEY, PreScoreState { scores });
        Status::success()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<PreScoreState>(PRE_SCORE_KEY) else {
            return Err(Status::error(format!(
                "reading {PRE_SCORE_KEY:?} from cycle state: not found"
            )));
        };
        Ok(s.scores.sum_on(&node.labels))
    }

    fn normalize(&self, state: &CycleState, _pod: &PodInfo, scores: &mut [i64]) -> Status {
        let Some(s) = state.read::<PreScoreState>(PRE_SCORE_KEY) else {
            return Status::error(format!(
                "reading {PRE_SCORE_KEY:?} from cycle state: not found"
            ));
        };
        if s.scores.is_empty() {
            return Status::success();
        }
        let min = scores.iter().copied().min().unwrap_or(0);
        let max = scores.iter().copied().max().unwrap_or(0);
        let spread = max - min;
        for score in scores.iter_mut() {
            // Min-max into 0..=100, truncating as upstream's float-to-int conversion does.
            *score = if spread > 0 {
                (MAX_NODE_SCORE as f64 * ((*score - min) as f64 / spread as f64)) as i64
            } else {
                0
            };
        }
        Status::success()
    }
}
