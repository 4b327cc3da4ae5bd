//! PostFilter: preemption, as upstream's `DefaultPreemption` plugin and preemption
//! `Evaluator`. When no node fits a pod, it looks for a node where evicting pods of lower
//! priority makes room: on a sample of the nodes the filters rejected as `Unschedulable`, it
//! removes every lower-priority pod on a copy of the node, checks that the pod then fits,
//! and gives back (reprieves) as many of those pods as still leave room, most important
//! first and PodDisruptionBudget-protected ones before the others. Among the nodes that work
//! it picks the one with the fewest budget violations, then the least important victims.
//!
//! The plugin is pure: it returns the node to nominate and the victims; the scheduler
//! deletes the victims and sets `status.nominatedNodeName`.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::framework::{
    Code, CycleState, NodeStatuses, Plugin, PostFilterPlugin, PostFilterResult, Status,
};
use crate::node_info::{NodeInfo, PodInfo};
use crate::profile::Profile;
use crate::snapshot::{DisruptionBudget, Snapshot};

/// The plugin's name in configuration.
pub const NAME: &str = "DefaultPreemption";

/// Default of `minCandidateNodesPercentage`.
pub const DEFAULT_MIN_CANDIDATE_NODES_PERCENTAGE: i32 = 10;
/// Default of `minCandidateNodesAbsolute`.
pub const DEFAULT_MIN_CANDIDATE_NODES_ABSOLUTE: i32 = 100;

/// A node's reason when no pod on it has a lower priority than the preemptor.
const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
/// The reason counted for every node the dry run did not look at (or could not help on).
const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";

/// `DefaultPreemptionArgs`: how many nodes to dry-run preemption on before choosing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultPreemptionArgs {
    /// The share of the candidate nodes, in percent, to find victims on at least.
    pub min_candidate_nodes_percentage: i32,
    /// The number of candidate nodes to find victims on at least.
    pub min_candidate_nodes_absolute: i32,
}

impl Default for DefaultPreemptionArgs {
    fn default() -> Self {
        DefaultPreemptionArgs {
            min_candidate_nodes_percentage: DEFAULT_MIN_CANDIDATE_NODES_PERCENTAGE,
            min_candidate_nodes_absolute: DEFAULT_MIN_CANDIDATE_NODES_ABSOLUTE,
        }
    }
}

/// The args as written in `pluginConfig[].args`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArgs {
    #[serde(rename = "apiVersion")]
    _api_version: Option<String>,
    kind: Option<String>,
    #[serde(rename = "minCandidateNodesPercentage")]
    min_candidate_nodes_percentage: Option<i32>,
    #[serde(rename = "minCandidateNodesAbsolute")]
    min_candidate_nodes_absolute: Option<i32>,
}

impl DefaultPreemptionArgs {
    /// Reads and validates the args (unset fields take the defaults), as upstream's
    /// `ValidateDefaultPreemptionArgs`.
    pub fn from_json(args: Option<&serde_json::Value>) -> Result<Self, String> {
        let Some(value) = args.filter(|v| !v.is_null()) else {
            return Ok(DefaultPreemptionArgs::default());
        };
        let raw = RawArgs::deserialize(value).map_err(|e| format!("invalid {NAME} args: {e}"))?;
        if let Some(kind) = raw
            .kind
            .as_deref()
            .filter(|k| *k != "DefaultPreemptionArgs")
        {
            return Err(format!(
                "invalid {NAME} args: kind is {kind:?}, want \"DefaultPreemptionArgs\""
            ));
        }
        let defaults = DefaultPreemptionArgs::default();
        let args = DefaultPreemptionArgs {
            min_candidate_nodes_percentage: raw
                .min_candidate_nodes_percentage
                .unwrap_or(defaults.min_candidate_nodes_percentage),
            min_candidate_nodes_absolute: raw
                .min_candidate_nodes_absolute
                .unwrap_or(defaults.min_candidate_nodes_absolute),
        };
        let pct = args.min_candidate_nodes_percentage;
        if !(0..=100).contains(&pct) {
            return Err(format!(
                "minCandidateNodesPercentage: invalid value {pct}: not in valid range [0, 100]"
            ));
        }
        let abs = args.min_candidate_nodes_absolute;
        if abs < 0 {
            return Err(format!(
                "minCandidateNodesAbsolute: invalid value {abs}: not in valid range [0, inf)"
            ));
        }
        if pct == 0 && abs == 0 {
            return Err(
                "minCandidateNodesPercentage and minCandidateNodesAbsolute cannot be zero at the same time"
                    .to_string(),
            );
        }
        Ok(args)
    }

    /// How many candidates the dry run looks for among `nodes` potential nodes (upstream's
    /// `calculateNumCandidates`): the percentage, raised to the absolute floor, capped at
    /// `nodes`.
    pub fn num_candidates(&self, nodes: usize) -> usize {
        let by_share =
            nodes.saturating_mul(self.min_candidate_nodes_percentage.max(0) as usize) / 100;
        by_share
            .max(self.min_candidate_nodes_absolute.max(0) as usize)
            .min(nodes)
    }
}

/// The DefaultPreemption plugin.
#[derive(Debug, Clone)]
pub struct DefaultPreemption {
    args: DefaultPreemptionArgs,
}

impl DefaultPreemption {
    /// A plugin with these args.
    pub fn with_args(args: DefaultPreemptionArgs) -> DefaultPreemption {
        DefaultPreemption { args }
    }
}

/// Builds the plugin from its args.
pub fn new(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(DefaultPreemption::with_args(
        DefaultPreemptionArgs::from_json(args)?,
    )))
}

impl Plugin for DefaultPreemption {
    fn name(&self) -> &'static str {
        NAME
    }

    fn as_post_filter(&self) -> Option<&dyn PostFilterPlugin> {
        Some(self)
    }
}

impl PostFilterPlugin for DefaultPreemption {
    fn post_filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
        statuses: &NodeStatuses,
        profile: &Profile,
    ) -> (Option<PostFilterResult>, Status) {
        let (result, mut status) = self.preempt(state, pod, snapshot, statuses, profile);
        // Upstream prefixes every message of this plugin so users can tell it from the
        // filters' reasons in the same event.
        for reason in &mut status.reasons {
            reason.insert_str(0, "preemption: ");
        }
        (result, status)
    }
}

/// A node where preemption works and the pods to evict there.
#[derive(Debug, Clone)]
struct Candidate {
    node: String,
    /// Most important first.
    victims: Vec<Arc<PodInfo>>,
    /// How many victims are protected by an exhausted PodDisruptionBudget.
    pdb_violations: usize,
}

impl DefaultPreemption {
    /// Upstream's `Evaluator.Preempt` without the API calls. On failure the result is
    /// `None` to keep the pod's nomination, or an empty result (no node) to clear it.
    fn preempt(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
        statuses: &NodeStatuses,
        profile: &Profile,
    ) -> (Option<PostFilterResult>, Status) {
        if let Err(reason) = eligible_to_preempt_others(pod, snapshot, statuses) {
            return (None, Status::unschedulable(reason));
        }
        let all = snapshot.nodes();
        if all.is_empty() {
            return (None, Status::error("no nodes available"));
        }
        // Only nodes rejected as resolvable can be helped by removing pods.
        let potential: Vec<&NodeInfo> = all
            .iter()
            .filter(|n| {
                statuses
                    .get(&n.name)
                    .is_some_and(|s| s.code == Code::Unschedulable)
            })
            .collect();
        let (candidates, node_statuses) = if potential.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let budgets: Vec<&DisruptionBudget> = snapshot.disruption_budgets().collect();
            let offset = (uid_hash(&pod.uid) % potential.len() as u64) as usize;
            let wanted = self.args.num_candidates(potential.len());
            dry_run(
                profile, state, pod, snapshot, &potential, &budgets, offset, wanted,
            )
        };
        let Some(best) = pick_one_node(&candidates) else {
            let errors: Vec<String> = node_statuses
                .iter()
                .filter(|s| s.code == Code::Error)
                .map(|s| s.to_string())
                .collect();
            if !errors.is_empty() {
                // Upstream's aggregate error: one error as is, several in brackets.
                let message = match errors.as_slice() {
                    [one] => one.clone(),
                    _ => format!("[{}]", errors.join(", ")),
                };
                return (None, Status::error(message));
            }
            tracing::debug!(pod = %pod.key, "preemption is not helpful for scheduling");
            return (
                Some(PostFilterResult::default()),
                Status::unschedulable(fit_error(all.len(), &node_statuses)),
            );
        };
        let best = &candidates[best];
        tracing::debug!(
            pod = %pod.key,
            node = %best.node,
            victims = best.victims.len(),
            pdb_violations = best.pdb_violations,
            "preemption candidate chosen"
        );
        (
            Some(PostFilterResult {
                nominated_node: Some(best.node.clone()),
                victims: best.victims.clone(),
            }),
            Status::success(),
        )
    }
}

/// Upstream's `PodEligibleToPreemptOthers`: `Err` with the reason when the pod must not
/// preempt (now).
fn eligible_to_preempt_others(
    pod: &PodInfo,
    snapshot: &Snapshot,
    statuses: &NodeStatuses,
) -> Result<(), &'static str> {
    let spec = pod.pod.spec.as_ref();
    if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return Err("not eligible due to preemptionPolicy=Never.");
    }
    let nominated = pod
        .pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty());
    let Some(nominated) = nominated else {
        return Ok(());
    };
    // A nominated node that preemption can no longer help (or that the filters did not
    // report on, which upstream treats the same) frees the pod to preempt elsewhere.
    let resolvable = statuses
        .get(nominated)
        .is_some_and(|s| s.code != Code::UnschedulableAndUnresolvable);
    if !resolvable {
        return Ok(());
    }
    // Victims of an earlier preemption still terminating there: wait for them rather than
    // evicting more pods.
    if let Some(node) = snapshot.get(nominated)
        && node
            .pods
            .iter()
            .any(|p| p.priority < pod.priority && terminating_by_preemption(p))
    {
        return Err("not eligible due to a terminating pod on the nominated node.");
    }
    Ok(())
}

/// Whether the pod is being deleted because of a preemption. Upstream also requires a
/// `DisruptionTarget` condition with reason `PreemptionByScheduler`; a terminating pod
/// without any `DisruptionTarget` condition counts too here, so that waiting works even when
/// the victims were deleted without the condition.
fn terminating_by_preemption(p: &PodInfo) -> bool {
    if p.pod.metadata.deletion_timestamp.is_none() {
        return false;
    }
    let condition = p
        .pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "DisruptionTarget"));
    match condition {
        None => true,
        Some(c) => c.status == "True" && c.reason.as_deref() == Some("PreemptionByScheduler"),
    }
}

/// FNV-1a of the pod's uid: the dry run's starting offset among the potential nodes, which
/// upstream picks at random; a hash keeps runs reproducible while still spreading different
/// pods over different nodes.
fn uid_hash(uid: &str) -> u64 {
    uid.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Upstream's `DryRunPreemption`: visits the potential nodes from `offset`, wrapping
/// around, until `wanted` candidates are found with at least one that violates no budget.
/// Returns the candidates (non-violating ones first, each group in visiting order, at most
/// `wanted` of each) and the statuses of the nodes where preemption does not work.
#[allow(clippy::too_many_arguments)]
fn dry_run(
    profile: &Profile,
    state: &CycleState,
    pod: &PodInfo,
    snapshot: &Snapshot,
    potential: &[&NodeInfo],
    budgets: &[&DisruptionBudget],
    offset: usize,
    wanted: usize,
) -> (Vec<Candidate>, Vec<Status>) {
    let mut non_violating: Vec<Candidate> = Vec::new();
    let mut violating: Vec<Candidate> = Vec::new();
    let mut statuses = Vec::new();
    for i in 0..potential.len() {
        let node = potential[(offset + i) % potential.len()];
        match select_victims_on_node(profile, state, pod, node, snapshot, budgets) {
            Ok((victims, pdb_violations)) if !victims.is_empty() => {
                let list = if pdb_violations == 0 {
                    &mut non_violating
                } else {
                    &mut violating
                };
                if list.len() < wanted {
                    list.push(Candidate {
                        node: node.name.clone(),
                        victims,
                        pdb_violations,
                    });
                }
                if !non_violating.is_empty() && non_violating.len() + violating.len() >= wanted {
                    break;
                }
            }
            Ok(_) => statuses.push(Status::error(format!(
                "expected at least one victim pod on node {:?}",
                node.name
            ))),
            Err(status) => statuses.push(status),
        }
    }
    non_violating.extend(violating);
    (non_violating, statuses)
}

/// When a pod started, in nanoseconds; a pod not started yet counts as starting now, that
/// is after every pod that has (upstream's `GetPodStartTime`).
fn start_time(p: &PodInfo) -> i128 {
    p.pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map_or(i128::MAX, |t| t.0.as_nanosecond())
}

/// Sorts pods most important first: higher priority, then earlier start (upstream's
/// `MoreImportantPod`); the sort is stable, so remaining ties keep the node's order.
fn sort_by_importance(pods: &mut [Arc<PodInfo>]) {
    pods.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| start_time(a).cmp(&start_time(b)))
    });
}

/// Turns a failed PreFilter extension status into an internal error, as upstream's
/// `AsStatus(status.AsError())`.
fn as_error(status: Status) -> Status {
    Status {
        code: Code::Error,
        ..status
    }
}

/// Removes `victim` from the node copy and tells the PreFilter plugins.
fn remove_victim(
    profile: &Profile,
    state: &mut CycleState,
    pod: &PodInfo,
    node: &mut NodeInfo,
    victim: &Arc<PodInfo>,
    snapshot: &Snapshot,
) -> Result<(), Status> {
    node.remove_pod(&victim.key);
    let status = profile.run_pre_filter_remove_pod(state, pod, victim, node, snapshot);
    if status.is_success() {
        Ok(())
    } else {
        Err(as_error(status))
    }
}

/// Puts `victim` back on the node copy and tells the PreFilter plugins.
fn add_back(
    profile: &Profile,
    state: &mut CycleState,
    pod: &PodInfo,
    node: &mut NodeInfo,
    victim: &Arc<PodInfo>,
    snapshot: &Snapshot,
) -> Result<(), Status> {
    node.add_pod(victim.clone());
    let status = profile.run_pre_filter_add_pod(state, pod, victim, node, snapshot);
    if status.is_success() {
        Ok(())
    } else {
        Err(as_error(status))
    }
}

/// Upstream's `SelectVictimsOnNode`: the fewest, least important lower-priority pods to
/// evict from `node` for `pod` to fit, and how many of them violate a PodDisruptionBudget.
/// `Err` carries why preemption does not work on this node. Works on copies of the node
/// and the cycle state.
fn select_victims_on_node(
    profile: &Profile,
    state: &CycleState,
    pod: &PodInfo,
    node: &NodeInfo,
    snapshot: &Snapshot,
    budgets: &[&DisruptionBudget],
) -> Result<(Vec<Arc<PodInfo>>, usize), Status> {
    let mut potential: Vec<Arc<PodInfo>> = node
        .pods
        .iter()
        .filter(|p| p.priority < pod.priority)
        .cloned()
        .collect();
    if potential.is_empty() {
        return Err(Status::unresolvable(NO_VICTIMS));
    }
    let mut node = node.clone();
    let mut state = state.clone();
    for victim in &potential {
        remove_victim(profile, &mut state, pod, &mut node, victim, snapshot)?;
    }
    // If the pod does not fit even with every lower-priority pod gone, the node cannot help.
    // (Upstream does not try to satisfy affinity to the victims themselves either.)
    let status = profile.run_filter(&state, pod, &node);
    if !status.is_success() {
        return Err(status);
    }
    sort_by_importance(&mut potential);
    let (violating, non_violating) = split_by_budget_violation(potential, budgets);
    let mixed = !violating.is_empty() && !non_violating.is_empty();
    let mut victims = Vec::new();
    let mut pdb_violations = 0;
    // Reprieve budget-protected pods first so that they are the last to be evicted, and
    // within each group the most important first.
    for (protected, group) in [(true, violating), (false, non_violating)] {
        for p in group {
            add_back(profile, &mut state, pod, &mut node, &p, snapshot)?;
            if !profile.run_filter(&state, pod, &node).is_success() {
                remove_victim(profile, &mut state, pod, &mut node, &p, snapshot)?;
                victims.push(p);
                if protected {
                    pdb_violations += 1;
                }
            }
        }
    }
    if mixed {
        sort_by_importance(&mut victims);
    }
    Ok((victims, pdb_violations))
}

/// Upstream's `filterPodsWithPDBViolation`: splits `pods` (in their order) into those
/// whose eviction would take a PodDisruptionBudget below zero allowed disruptions, counting
/// the earlier pods of the list as evicted, and the rest.
fn split_by_budget_violation(
    pods: Vec<Arc<PodInfo>>,
    budgets: &[&DisruptionBudget],
) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut allowed: Vec<i32> = budgets.iter().map(|b| b.disruptions_allowed).collect();
    let mut violating = Vec::new();
    let mut non_violating = Vec::new();
    for pod in pods {
        let mut violated = false;
        // A pod without labels matches no budget (upstream skips it outright).
        if !pod.labels.is_empty() {
            for (left, budget) in allowed.iter_mut().zip(budgets) {
                if budget.covers(&pod) {
                    *left -= 1;
                    violated |= *left < 0;
                }
            }
        }
        if violated {
            violating.push(pod);
        } else {
            non_violating.push(pod);
        }
    }
    (violating, non_violating)
}

/// Upstream's `pickOneNodeForPreemption`: the candidate with the fewest budget violations,
/// then the lowest highest victim priority, then the smallest sum of victim priorities,
/// then the fewest victims, then the latest start among its highest-priority victims, then
/// the first.
fn pick_one_node(candidates: &[Candidate]) -> Option<usize> {
    // Larger is better, compared lexicographically like upstream's chain of score functions.
    let score = |c: &Candidate| {
        let highest = c.victims.first().map_or(0, |p| p.priority);
        // Shifting each priority to be non-negative keeps more pods of a negative priority
        // from looking cheaper than fewer of them.
        let sum: i64 = c
            .victims
            .iter()
            .map(|p| i64::from(p.priority) + (1i64 << 31))
            .sum();
        let earliest_start = c
            .victims
            .iter()
            .take_while(|p| p.priority == highest)
            .map(|p| start_time(p))
            .min()
            .unwrap_or(i128::MIN);
        (
            -(c.pdb_violations as i64),
            -i64::from(highest),
            -sum,
            -(c.victims.len() as i64),
            earliest_start,
        )
    };
    let mut best: Option<(usize, _)> = None;
    for (i, c) in candidates.iter().enumerate() {
        let s = score(c);
        if best.as_ref().is_none_or(|(_, b)| s > *b) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

/// Upstream's `FitError` message for a failed preemption: the number of nodes for each
/// reason, sorted as strings, with the nodes the dry run did not report on counted as not
/// helpful.
fn fit_error(all: usize, statuses: &[Status]) -> String {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for s in statuses {
        for r in &s.reasons {
            *counts.entry(r.as_str()).or_default() += 1;
        }
    }
    if statuses.len() < all {
        *counts.entry(NOT_HELPFUL).or_default() += all - statuses.len();
    }
    let mut parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    let mut message = format!("0/{all} nodes are available:");
    if !parts.is_empty() {
        message.push(' ');
        message.push_str(&parts.join(", "));
        message.push('.');
    }
    message
}

#[cfg(test)]
mod tests;
