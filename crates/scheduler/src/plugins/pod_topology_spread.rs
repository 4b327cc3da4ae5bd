//! Topology spread constraints (and the cluster's default constraints): skew filters and scores,
//! as upstream's `podtopologyspread` plugin. `DoNotSchedule` constraints are hard: PreFilter
//! counts the matching pods per topology domain over every eligible node and keeps, per
//! constraint, the two least loaded domains ("critical paths"), so that Filter is a few hash
//! lookups per node. `ScheduleAnyway` constraints are soft: PreScore counts per domain and
//! Score favours the nodes whose domains hold fewer matching pods. A pod without constraints of
//! its own gets the default constraints of the plugin args (the system defaults unless
//! `defaultingType: List`).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};
use rkube_types::scheduling::tolerations_tolerate;
use rkube_types::selector::{LabelSelector, Operator, Requirement, SelectorError};
use serde::Deserialize;

use crate::framework::{
    CycleState, FilterPlugin, MAX_NODE_SCORE, Plugin, PreFilterPlugin, PreScorePlugin, ScorePlugin,
    Status,
};
use crate::node_info::{Labels, MatchMemo, NodeInfo, PodInfo};
use crate::plugins::node_affinity::RequiredNodeAffinity;
use crate::snapshot::Snapshot;

/// The plugin's name in configuration.
pub const NAME: &str = "PodTopologySpread";

/// The reason given when placing the pod on a node would exceed a constraint's `maxSkew`.
pub const ERR_REASON_CONSTRAINTS_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints";
/// The reason given when a node lacks the topology key of a hard constraint.
pub const ERR_REASON_NODE_LABEL_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

const PRE_FILTER_KEY: &str = "PreFilterPodTopologySpread";
const PRE_SCORE_KEY: &str = "PreScorePodTopologySpread";

const DO_NOT_SCHEDULE: &str = "DoNotSchedule";
const SCHEDULE_ANYWAY: &str = "ScheduleAnyway";
const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
const HONOR: &str = "Honor";

/// The raw score Score gives a node that lacks a topology key, so that NormalizeScore (which
/// sees scores, not node names) can give it 0 and leave it out of the min/max; no real score
/// can be this value.
const IGNORED_SCORE: i64 = i64::MIN;

/// Labels that differ on every pod of a controller. The default selector is built from the
/// pod's labels (see [`default_selector`]); keeping these would make it select the pod alone.
const PER_POD_LABELS: &[&str] = &[
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "batch.kubernetes.io/job-completion-index",
];

/// One constraint with its selector parsed and its defaults applied (upstream's internal
/// `topologySpreadConstraint`).
#[derive(Debug, Clone)]
struct Constraint {
    max_skew: i32,
    topology_key: String,
    /// `None` is a nil selector, which selects no pod.
    selector: Option<LabelSelector>,
    min_domains: i32,
    honor_node_affinity: bool,
    honor_node_taints: bool,
}

impl Constraint {
    fn selects(&self, labels: &Labels) -> bool {
        self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }

    /// Whether a node counts for this constraint, given whether it matches the pod's
    /// required node affinity and tolerates its taints (computed once per node).
    fn includes(&self, affinity_ok: bool, taints_ok: bool) -> bool {
        (!self.honor_node_affinity || affinity_ok) && (!self.honor_node_taints || taints_ok)
    }
}

/// Parses the constraints of `list` whose `whenUnsatisfiable` is `action`, merging
/// `matchLabelKeys` (with the values from `pod_labels`) into their selectors.
fn parse_constraints(
    list: &[TopologySpreadConstraint],
    pod_labels: &Labels,
    action: &str,
) -> Result<Vec<Constraint>, SelectorError> {
    let mut out = Vec::new();
    for c in list.iter().filter(|c| c.when_unsatisfiable == action) {
        let mut selector = c
            .label_selector
            .as_ref()
            .map(LabelSelector::from_api)
            .transpose()?;
        let mut extra = Vec::new();
        for key in c.match_label_keys.iter().flatten() {
            if let Some(value) = pod_labels.get(key) {
                extra.push(Requirement::new(
                    key.as_str(),
                    Operator::Equals,
                    [value.as_str()],
                )?);
            }
        }
        if !extra.is_empty() {
            // As upstream, a nil selector with matchLabelKeys becomes the key=value set.
            let mut requirements = selector.map(|s| s.requirements).unwrap_or_default();
            requirements.extend(extra);
            selector = Some(LabelSelector::new(requirements));
        }
        out.push(Constraint {
            max_skew: c.max_skew,
            topology_key: c.topology_key.clone(),
            selector,
            min_domains: c.min_domains.unwrap_or(1),
            honor_node_affinity: c.node_affinity_policy.as_deref().unwrap_or(HONOR) == HONOR,
            honor_node_taints: c.node_taints_policy.as_deref() == Some(HONOR),
        });
    }
    Ok(out)
}

/// The selector default constraints use for `pod`.
///
/// Deviation from upstream: upstream ANDs the selectors of the Services, ReplicationControllers,
/// ReplicaSets and StatefulSets that select the pod; the snapshot has no listers for those, so
/// a pod with a controlling owner reference is spread with the other pods that carry the same
/// labels (its own labels, minus the per-pod ones of [`PER_POD_LABELS`]), which is what a
/// ReplicaSet's or StatefulSet's selector picks out in practice. Pods without a controller get
/// no default constraints.
fn default_selector(pod: &PodInfo) -> Option<LabelSelector> {
    let controlled = pod
        .pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true));
    if !controlled {
        return None;
    }
    let requirements = pod
        .labels
        .iter()
        .filter(|(k, _)| !PER_POD_LABELS.contains(&k.as_str()))
        .map(|(k, v)| Requirement::new(k.as_str(), Operator::Equals, [v.as_str()]))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    (!requirements.is_empty()).then(|| LabelSelector::new(requirements))
}

/// The pod's own topology spread constraints, if any.
fn pod_constraints(pod: &Pod) -> &[TopologySpreadConstraint] {
    pod.spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .unwrap_or_default()
}

/// Whether the node has every constraint's topology key.
fn has_all_keys(labels: &Labels, constraints: &[Constraint]) -> bool {
    constraints
        .iter()
        .all(|c| labels.contains_key(&c.topology_key))
}

/// How many pods of `pods` in `namespace` the selector selects, leaving out terminating pods.
fn count_matching(
    pods: &[Arc<PodInfo>],
    selector: Option<&LabelSelector>,
    namespace: &str,
    mut memo: Option<&mut MatchMemo>,
) -> i64 {
    let Some(selector) = selector else {
        return 0;
    };
    pods.iter()
        .filter(|p| {
            let matches = || p.namespace == namespace && selector.matches(&p.labels);
            p.pod.metadata.deletion_timestamp.is_none()
                && match memo.as_deref_mut() {
                    Some(memo) => memo.get_or(p.label_hash, matches),
                    None => matches(),
                }
        })
        .count() as i64
}

/// Whether the pod tolerates every `NoSchedule` and `NoExecute` taint of the node.
fn tolerates_node(pod: &Pod, node: &NodeInfo) -> bool {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    node.taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerations_tolerate(tolerations, t))
}

/// Evaluates the node inclusion policies of every constraint on one node at once: whether the
/// node matches the pod's required node affinity and tolerates its taints, each computed only
/// when some constraint honours it.
struct Inclusion<'a> {
    pod: &'a Pod,
    affinity: &'a RequiredNodeAffinity,
    any_affinity: bool,
    any_taints: bool,
}

impl<'a> Inclusion<'a> {
    fn new(pod: &'a Pod, affinity: &'a RequiredNodeAffinity, constraints: &[Constraint]) -> Self {
        Inclusion {
            any_affinity: !affinity.is_empty() && constraints.iter().any(|c| c.honor_node_affinity),
            any_taints: constraints.iter().any(|c| c.honor_node_taints),
            affinity,
            pod,
        }
    }

    /// `(affinity_ok, taints_ok)` for the node.
    fn check(&self, node: &NodeInfo) -> (bool, bool) {
        (
            !self.any_affinity || self.affinity.matches(&node.labels, &node.name),
            !self.any_taints || tolerates_node(self.pod, node),
        )
    }
}

/// The two domains with the fewest matching pods for one constraint (upstream's
/// `criticalPaths`): `[0]` always holds the minimum; `[1]` is at least as large but not
/// necessarily the second minimum. Two suffice because preemption removes pods from one node
/// at a time, on its own copy of the state.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CriticalPaths([(String, i64); 2]);

impl CriticalPaths {
    fn new() -> Self {
        let none = (String::new(), i64::from(i32::MAX));
        CriticalPaths([none.clone(), none])
    }

    fn min(&self) -> i64 {
        self.0[0].1
    }

    fn update(&mut self, value: &str, count: i64) {
        let p = &mut self.0;
        let at = if p[0].0 == value {
            Some(0)
        } else if p[1].0 == value {
            Some(1)
        } else {
            None
        };
        match at {
            Some(i) => {
                p[i].1 = count;
                if p[0].1 > p[1].1 {
                    p.swap(0, 1);
                }
            }
            None if count < p[0].1 => {
                p[1] = std::mem::replace(&mut p[0], (value.to_string(), count));
            }
            None if count < p[1].1 => p[1] = (value.to_string(), count),
            None => {}
        }
    }
}

/// What PreFilter computes for Filter (and preemption updates with add_pod/remove_pod).
#[derive(Debug, Clone)]
struct PreFilterState {
    /// The hard constraints; shared between the copies preemption makes.
    constraints: Arc<Vec<Constraint>>,
    /// Per constraint: whether the incoming pod matches its own selector.
    self_match: Arc<Vec<bool>>,
    /// The incoming pod's node selector and required node affinity, for add_pod/remove_pod.
    affinity: Arc<RequiredNodeAffinity>,
    /// Per constraint: the least loaded domains.
    critical_paths: Vec<CriticalPaths>,
    /// Per constraint: topology value → number of matching pods, for every eligible domain.
    counts: Vec<HashMap<String, i64>>,
}

impl PreFilterState {
    /// The global minimum for the skew; 0 while fewer domains than `minDomains` exist.
    fn min_match(&self, i: usize, min_domains: i32) -> i64 {
        if self.counts[i].len() < usize::try_from(min_domains).unwrap_or(0) {
            0
        } else {
            self.critical_paths[i].min()
        }
    }

    /// Adds `delta` matching pods for `other` placed on `node` (preemption's what-if).
    fn update_with_pod(&mut self, pod: &PodInfo, other: &PodInfo, node: &NodeInfo, delta: i64) {
        if other.namespace != pod.namespace || !has_all_keys(&node.labels, &self.constraints) {
            return;
        }
        let inclusion = Inclusion::new(&pod.pod, &self.affinity, &self.constraints);
        let (affinity_ok, taints_ok) = inclusion.check(node);
        for (i, c) in self.constraints.iter().enumerate() {
            if !c.selects(&other.labels) || !c.includes(affinity_ok, taints_ok) {
                continue;
            }
            let Some(value) = node.labels.get(&c.topology_key) else {
                continue;
            };
            let count = match self.counts[i].get_mut(value.as_str()) {
                Some(count) => {
                    *count += delta;
                    *count
                }
                None => {
                    self.counts[i].insert(value.clone(), delta);
                    delta
                }
            };
            self.critical_paths[i].update(value, count);
        }
    }
}

/// What PreScore computes for Score and NormalizeScore.
#[derive(Debug)]
struct PreScoreState {
    /// The soft constraints.
    constraints: Vec<Constraint>,
    /// Whether nodes lacking a topology key are left out (scored 0); the system defaults
    /// don't require all keys so that nodes without a zone label still spread by hostname.
    require_all_keys: bool,
    /// Per constraint: topology value → matching pods, for the domains of the candidate nodes;
    /// empty for hostname constraints, which Score counts on the node itself.
    counts: Vec<HashMap<String, i64>>,
    /// Per constraint: `ln(domains + 2)`, so that counts in small topologies weigh more.
    weights: Vec<f64>,
}

/// The plugin's args (`PodTopologySpreadArgs`, v1).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Args {
    #[allow(dead_code)]
    api_version: Option<String>,
    #[allow(dead_code)]
    kind: Option<String>,
    #[serde(default)]
    default_constraints: Vec<TopologySpreadConstraint>,
    defaulting_type: Option<String>,
}

/// The PodTopologySpread plugin.
struct PodTopologySpread {
    /// The constraints for pods without their own.
    default_constraints: Vec<TopologySpreadConstraint>,
    /// Whether `default_constraints` are the system defaults.
    system_defaulted: bool,
}

impl PodTopologySpread {
    /// The pod's constraints with `whenUnsatisfiable: action`, or the default ones when the
    /// pod has none of its own.
    fn constraints(&self, pod: &PodInfo, action: &str) -> Result<Vec<Constraint>, SelectorError> {
        let own = pod_constraints(&pod.pod);
        if !own.is_empty() {
            return parse_constraints(own, &pod.labels, action);
        }
        let mut constraints = parse_constraints(&self.default_constraints, &pod.labels, action)?;
        if constraints.is_empty() {
            return Ok(constraints);
        }
        let Some(selector) = default_selector(pod) else {
            return Ok(Vec::new());
        };
        for c in &mut constraints {
            c.selector = Some(selector.clone());
        }
        Ok(constraints)
    }
}

impl Plugin for PodTopologySpread {
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

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot) -> Status {
        let constraints = match self.constraints(pod, DO_NOT_SCHEDULE) {
            Ok(c) => c,
            Err(e) => {
                return Status::error(format!(
                    "obtaining pod's hard topology spread constraints: {e}"
                ));
            }
        };
        if constraints.is_empty() {
            return Status::skip();
        }
        let mut counts: Vec<HashMap<String, i64>> = constraints
            .iter()
            .map(|c| {
                let capacity = if c.topology_key == LABEL_HOSTNAME {
                    snapshot.len()
                } else {
                    0
                };
                HashMap::with_capacity(capacity)
            })
            .collect();
        let affinity = Arc::new(RequiredNodeAffinity::from_pod(&pod.pod));
        let inclusion = Inclusion::new(&pod.pod, &affinity, &constraints);
        // Placed pods of one workload share their labels: match each label set once.
        let mut memos = vec![MatchMemo::default(); constraints.len()];
        for node in snapshot.nodes() {
            if !has_all_keys(&node.labels, &constraints) {
                continue;
            }
            let (affinity_ok, taints_ok) = inclusion.check(node);
            for (i, c) in constraints.iter().enumerate() {
                if !c.includes(affinity_ok, taints_ok) {
                    continue;
                }
                let Some(value) = node.labels.get(&c.topology_key) else {
                    continue;
                };
                let n = count_matching(
                    &node.pods,
                    c.selector.as_ref(),
                    &pod.namespace,
                    Some(&mut memos[i]),
                );
                // Domains with no matching pod count too: they make the global minimum 0 and
                // count towards minDomains.
                match counts[i].get_mut(value.as_str()) {
                    Some(count) => *count += n,
                    None => {
                        counts[i].insert(value.clone(), n);
                    }
                }
            }
        }
        let critical_paths = counts
            .iter()
            .map(|domains| {
                let mut paths = CriticalPaths::new();
                for (value, n) in domains {
                    paths.update(value, *n);
                }
                paths
            })
            .collect();
        let self_match = constraints.iter().map(|c| c.selects(&pod.labels)).collect();
        state.write(
            PRE_FILTER_KEY,
            PreFilterState {
                constraints: Arc::new(constraints),
                self_match: Arc::new(self_match),
                affinity,
                critical_paths,
                counts,
            },
        );
        Status::success()
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &Arc<PodInfo>,
        node: &NodeInfo,
        _snapshot: &Snapshot,
    ) -> Status {
        match state.read_mut::<PreFilterState>(PRE_FILTER_KEY) {
            Some(s) => {
                s.update_with_pod(pod, other, node, 1);
                Status::success()
            }
            None => Status::error(format!("reading {PRE_FILTER_KEY:?} from cycle state")),
        }
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &Arc<PodInfo>,
        node: &NodeInfo,
        _snapshot: &Snapshot,
    ) -> Status {
        match state.read_mut::<PreFilterState>(PRE_FILTER_KEY) {
            Some(s) => {
                s.update_with_pod(pod, other, node, -1);
                Status::success()
            }
            None => Status::error(format!("reading {PRE_FILTER_KEY:?} from cycle state")),
        }
    }
}

impl FilterPlugin for PodTopologySpread {
    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<PreFilterState>(PRE_FILTER_KEY) else {
            return Status::error(format!("reading {PRE_FILTER_KEY:?} from cycle state"));
        };
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(value) = node.labels.get(&c.topology_key) else {
                return Status::unresolvable(ERR_REASON_NODE_LABEL_NOT_MATCH);
            };
            // existing matches + the pod itself if it matches − the global minimum.
            let matched = s.counts[i].get(value.as_str()).copied().unwrap_or(0);
            let skew = matched + i64::from(s.self_match[i]) - s.min_match(i, c.min_domains);
            if skew > i64::from(c.max_skew) {
                return Status::unschedulable(ERR_REASON_CONSTRAINTS_NOT_MATCH);
            }
        }
        Status::success()
    }
}

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[&NodeInfo],
        snapshot: &Snapshot,
    ) -> Status {
        if snapshot.is_empty() {
            return Status::skip();
        }
        let constraints = match self.constraints(pod, SCHEDULE_ANYWAY) {
            Ok(c) => c,
            Err(e) => {
                return Status::error(format!(
                    "obtaining pod's soft topology spread constraints: {e}"
                ));
            }
        };
        if constraints.is_empty() {
            return Status::skip();
        }
        let require_all_keys = !pod_constraints(&pod.pod).is_empty() || !self.system_defaulted;

        // The domains of the candidate nodes; only those are counted below.
        let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); constraints.len()];
        let mut ignored = 0usize;
        for node in nodes {
            if require_all_keys && !has_all_keys(&node.labels, &constraints) {
                ignored += 1;
                continue;
            }
            for (i, c) in constraints.iter().enumerate() {
                if c.topology_key == LABEL_HOSTNAME {
                    continue;
                }
                let value = node
                    .labels
                    .get(&c.topology_key)
                    .map(String::as_str)
                    .unwrap_or_default();
                if !counts[i].contains_key(value) {
                    counts[i].insert(value.to_string(), 0);
                }
            }
        }
        let weights = constraints
            .iter()
            .zip(&counts)
            .map(|(c, domains)| {
                let size = if c.topology_key == LABEL_HOSTNAME {
                    nodes.len() - ignored
                } else {
                    domains.len()
                };
                (size as f64 + 2.0).ln()
            })
            .collect();

        let affinity = RequiredNodeAffinity::from_pod(&pod.pod);
        let inclusion = Inclusion::new(&pod.pod, &affinity, &constraints);
        let mut memos = vec![MatchMemo::default(); constraints.len()];
        for node in snapshot.nodes() {
            if require_all_keys && !has_all_keys(&node.labels, &constraints) {
                continue;
            }
            let (affinity_ok, taints_ok) = inclusion.check(node);
            for (i, c) in constraints.iter().enumerate() {
                if !c.includes(affinity_ok, taints_ok) {
                    continue;
                }
                let value = node
                    .labels
                    .get(&c.topology_key)
                    .map(String::as_str)
                    .unwrap_or_default();
                // Domains without a candidate node don't matter, and hostname domains are
                // counted in Score.
                if let Some(count) = counts[i].get_mut(value) {
                    *count += count_matching(
                        &node.pods,
                        c.selector.as_ref(),
                        &pod.namespace,
                        Some(&mut memos[i]),
                    );
                }
            }
        }
        state.write(
            PRE_SCORE_KEY,
            Arc::new(PreScoreState {
                constraints,
                require_all_keys,
                counts,
                weights,
            }),
        );
        Status::success()
    }
}

impl ScorePlugin for PodTopologySpread {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<Arc<PreScoreState>>(PRE_SCORE_KEY) else {
            return Err(Status::error(format!(
                "reading {PRE_SCORE_KEY:?} from cycle state"
            )));
        };
        if s.require_all_keys && !has_all_keys(&node.labels, &s.constraints) {
            return Ok(IGNORED_SCORE);
        }
        let mut score = 0.0;
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(value) = node.labels.get(&c.topology_key) else {
                continue;
            };
            let count = if c.topology_key == LABEL_HOSTNAME {
                count_matching(&node.pods, c.selector.as_ref(), &pod.namespace, None)
            } else {
                s.counts[i].get(value.as_str()).copied().unwrap_or(0)
            };
            // maxSkew − 1 waters down the differences between domains: the larger the
            // tolerated skew, the flatter the scores.
            score += count as f64 * s.weights[i] + f64::from(c.max_skew - 1);
        }
        Ok(score.round() as i64)
    }

    fn normalize(&self, _state: &CycleState, _pod: &PodInfo, scores: &mut [i64]) -> Status {
        let (mut min, mut max) = (i64::MAX, 0);
        for &s in scores.iter().filter(|s| **s != IGNORED_SCORE) {
            min = min.min(s);
            max = max.max(s);
        }
        for s in scores.iter_mut() {
            *s = if *s == IGNORED_SCORE {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *s) / max
            };
        }
        Status::success()
    }
}

/// The system default constraints (upstream's `systemDefaultConstraints`).
fn system_default_constraints() -> Vec<TopologySpreadConstraint> {
    [(LABEL_HOSTNAME, 3), (LABEL_ZONE, 5)]
        .into_iter()
        .map(|(key, max_skew)| TopologySpreadConstraint {
            max_skew,
            topology_key: key.to_string(),
            when_unsatisfiable: SCHEDULE_ANYWAY.to_string(),
            ..Default::default()
        })
        .collect()
}

/// Checks the args as upstream's `ValidatePodTopologySpreadArgs`; returns every problem.
fn validate(args: &Args, defaulting_type: &str) -> Vec<String> {
    let mut errors = Vec::new();
    match defaulting_type {
        "System" if !args.default_constraints.is_empty() => errors.push(
            "defaultingType: Invalid value: \"System\": when .defaultConstraints are not empty"
                .to_string(),
        ),
        "System" | "List" => {}
        other => errors.push(format!(
            "defaultingType: Unsupported value: {other:?}: supported values: \"System\", \"List\""
        )),
    }
    for (i, c) in args.default_constraints.iter().enumerate() {
        let path = format!("defaultConstraints[{i}]");
        if c.max_skew <= 0 {
            errors.push(format!(
                "{path}.maxSkew: Invalid value: {}: not in valid range (0, inf)",
                c.max_skew
            ));
        }
        if c.topology_key.is_empty() {
            errors.push(format!(
                "{path}.topologyKey: Required value: can not be empty"
            ));
        } else {
            for reason in rkube_types::validation::is_qualified_name(&c.topology_key) {
                errors.push(format!(
                    "{path}.topologyKey: Invalid value: {:?}: {reason}",
                    c.topology_key
                ));
            }
        }
        match c.when_unsatisfiable.as_str() {
            DO_NOT_SCHEDULE | SCHEDULE_ANYWAY => {}
            "" => errors.push(format!(
                "{path}.whenUnsatisfiable: Required value: can not be empty"
            )),
            other => errors.push(format!(
                "{path}.whenUnsatisfiable: Unsupported value: {other:?}: supported values: \"DoNotSchedule\", \"ScheduleAnyway\""
            )),
        }
        if c.label_selector.is_some() {
            errors.push(format!(
                "{path}.labelSelector: Forbidden: constraint must not define a selector, as they deduced for each pod"
            ));
        }
        let repeated = args.default_constraints[..i].iter().any(|o| {
            o.topology_key == c.topology_key && o.when_unsatisfiable == c.when_unsatisfiable
        });
        if repeated {
            errors.push(format!(
                "{path}: Duplicate value: \"{{{}, {}}}\"",
                c.topology_key, c.when_unsatisfiable
            ));
        }
    }
    errors
}

/// Builds the plugin from its args (`PodTopologySpreadArgs`: `defaultConstraints` and
/// `defaultingType`, `System` by default).
pub fn new(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    let args: Args = match args {
        Some(v) => {
            Args::deserialize(v).map_err(|e| format!("decoding PodTopologySpreadArgs: {e}"))?
        }
        None => Args::default(),
    };
    let defaulting_type = args.defaulting_type.as_deref().unwrap_or("System");
    let errors = validate(&args, defaulting_type);
    if !errors.is_empty() {
        return Err(format!(
            "invalid PodTopologySpreadArgs: {}",
            errors.join("; ")
        ));
    }
    let system_defaulted = defaulting_type == "System";
    let default_constraints = if system_defaulted {
        system_default_constraints()
    } else {
        args.default_constraints
    };
    Ok(Arc::new(PodTopologySpread {
        default_constraints,
        system_defaulted,
    }))
}

#[cfg(test)]
mod tests;
