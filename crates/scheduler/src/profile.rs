//! A scheduling profile: the plugins enabled at each extension point for one
//! `schedulerName`, and the pure part of a scheduling cycle that runs them (PreFilter,
//! Filter over a sample of nodes, PreScore, Score, NormalizeScore, weighting).

use std::sync::Arc;

use crate::framework::{
    Code, CycleState, MAX_NODE_SCORE, NodeStatuses, Plugin, PostFilterResult, PreFilterPlugin,
    Status,
};
use crate::node_info::{NodeInfo, PodInfo};
use crate::snapshot::Snapshot;

/// Upstream's floor on how many feasible nodes to find before scoring.
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// Upstream's floor on the adaptive percentage of nodes to score.
pub const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;

/// The plugins of one profile, per extension point, in order.
#[derive(Clone)]
pub struct Profile {
    /// The `schedulerName` pods pick this profile by.
    pub scheduler_name: String,
    /// Orders the queue.
    pub queue_sort: Option<Arc<dyn Plugin>>,
    /// PreFilter plugins.
    pub pre_filter: Vec<Arc<dyn Plugin>>,
    /// Filter plugins.
    pub filter: Vec<Arc<dyn Plugin>>,
    /// PostFilter plugins.
    pub post_filter: Vec<Arc<dyn Plugin>>,
    /// PreScore plugins.
    pub pre_score: Vec<Arc<dyn Plugin>>,
    /// Score plugins with their weights.
    pub score: Vec<(Arc<dyn Plugin>, i64)>,
    /// Reserve plugins.
    pub reserve: Vec<Arc<dyn Plugin>>,
    /// Permit plugins.
    pub permit: Vec<Arc<dyn Plugin>>,
    /// PreBind plugins.
    pub pre_bind: Vec<Arc<dyn Plugin>>,
    /// Bind plugins.
    pub bind: Vec<Arc<dyn Plugin>>,
    /// PostBind plugins.
    pub post_bind: Vec<Arc<dyn Plugin>>,
    /// `percentageOfNodesToScore` (0 or unset: adaptive, as upstream).
    pub percentage_of_nodes_to_score: Option<i32>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |v: &[Arc<dyn Plugin>]| v.iter().map(|p| p.name()).collect::<Vec<_>>();
        f.debug_struct("Profile")
            .field("scheduler_name", &self.scheduler_name)
            .field("pre_filter", &names(&self.pre_filter))
            .field("filter", &names(&self.filter))
            .field("post_filter", &names(&self.post_filter))
            .field(
                "score",
                &self
                    .score
                    .iter()
                    .map(|(p, w)| (p.name(), *w))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// What the filters found for one pod.
#[derive(Debug, Default)]
pub struct Feasible {
    /// Positions in [`Snapshot::nodes`] of the nodes that passed, at most the sample size.
    pub nodes: Vec<usize>,
    /// Why each rejected node was rejected.
    pub statuses: NodeStatuses,
    /// How many nodes were looked at.
    pub evaluated: usize,
}

impl Profile {
    /// A profile with no plugins.
    pub fn empty(scheduler_name: &str) -> Profile {
        Profile {
            scheduler_name: scheduler_name.to_string(),
            queue_sort: None,
            pre_filter: Vec::new(),
            filter: Vec::new(),
            post_filter: Vec::new(),
            pre_score: Vec::new(),
            score: Vec::new(),
            reserve: Vec::new(),
            permit: Vec::new(),
            pre_bind: Vec::new(),
            bind: Vec::new(),
            post_bind: Vec::new(),
            percentage_of_nodes_to_score: None,
        }
    }

    /// Runs every PreFilter plugin. A `Skip` marks the plugin's Filter as skipped; the first
    /// rejection or error is returned, naming its plugin.
    pub fn run_pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> Status {
        for p in &self.pre_filter {
            let Some(pf) = p.as_pre_filter() else {
                continue;
            };
            let status = pf.pre_filter(state, pod, snapshot);
            match status.code {
                Code::Success => {}
                Code::Skip => {
                    state.skip_filter.insert(p.name());
                }
                _ => return status.with_plugin(p.name()),
            }
        }
        Status::success()
    }

    /// Tells every PreFilter plugin that `other` was added to `node` (preemption).
    pub fn run_pre_filter_add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &Arc<PodInfo>,
        node: &NodeInfo,
        snapshot: &Snapshot,
    ) -> Status {
        self.each_pre_filter(state, |pf, state| {
            pf.add_pod(state, pod, other, node, snapshot)
        })
    }

    /// Tells every PreFilter plugin that `other` was removed from `node` (preemption).
    pub fn run_pre_filter_remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &Arc<PodInfo>,
        node: &NodeInfo,
        snapshot: &Snapshot,
    ) -> Status {
        self.each_pre_filter(state, |pf, state| {
            pf.remove_pod(state, pod, other, node, snapshot)
        })
    }

    /// Calls `f` on every PreFilter plugin not skipped this cycle; the first failure wins.
    fn each_pre_filter(
        &self,
        state: &mut CycleState,
        mut f: impl FnMut(&dyn PreFilterPlugin, &mut CycleState) -> Status,
    ) -> Status {
        for p in &self.pre_filter {
            if state.skip_filter.contains(p.name()) {
                continue;
            }
            if let Some(pf) = p.as_pre_filter() {
                let s = f(pf, state);
                if !s.is_success() {
                    return s.with_plugin(p.name());
                }
            }
        }
        Status::success()
    }

    /// Runs the Filter plugins on one node; the first rejection wins.
    pub fn run_filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        for p in &self.filter {
            if state.skip_filter.contains(p.name()) {
                continue;
            }
            let Some(f) = p.as_filter() else {
                continue;
            };
            let status = f.filter(state, pod, node);
            if !status.is_success() {
                return status.with_plugin(p.name());
            }
        }
        Status::success()
    }

    /// How many feasible nodes to find before scoring, out of `all` (upstream's
    /// `numFeasibleNodesToFind`).
    pub fn nodes_to_find(&self, all: usize) -> usize {
        let pct = self.percentage_of_nodes_to_score.unwrap_or(0).max(0) as usize;
        if all < MIN_FEASIBLE_NODES_TO_FIND || pct >= 100 {
            return all;
        }
        let adaptive = if pct == 0 {
            50usize
                .saturating_sub(all / 125)
                .max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
        } else {
            pct
        };
        (all * adaptive / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
    }

    /// Runs the filters over the nodes, starting at `start` and wrapping around, until
    /// enough feasible nodes are found (upstream's round-robin sampling).
    pub fn find_feasible(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
        start: usize,
    ) -> Feasible {
        let nodes = snapshot.nodes();
        let all = nodes.len();
        let want = self.nodes_to_find(all);
        let mut out = Feasible::default();
        for i in 0..all {
            let at = (start + i) % all;
            out.evaluated += 1;
            let status = self.run_filter(state, pod, &nodes[at]);
            if status.is_success() {
                out.nodes.push(at);
                if out.nodes.len() >= want {
                    break;
                }
            } else {
                out.statuses.insert(nodes[at].name.clone(), status);
            }
        }
        out
    }

    /// Runs PreScore, then every Score plugin over `nodes`, normalizes and weights the
    /// scores, and returns each node's total.
    pub fn run_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[&NodeInfo],
        snapshot: &Snapshot,
    ) -> Result<Vec<i64>, Status> {
        for p in &self.pre_score {
            let Some(ps) = p.as_pre_score() else {
                continue;
            };
            let status = ps.pre_score(state, pod, nodes, snapshot);
            match status.code {
                Code::Success => {}
                Code::Skip => {
                    state.skip_score.insert(p.name());
                }
                _ => return Err(status.with_plugin(p.name())),
            }
        }
        let mut totals = vec![0i64; nodes.len()];
        let mut scores = vec![0i64; nodes.len()];
        for (p, weight) in &self.score {
            if state.skip_score.contains(p.name()) {
                continue;
            }
            let Some(s) = p.as_score() else {
                continue;
            };
            for (i, node) in nodes.iter().enumerate() {
                scores[i] = s
                    .score(state, pod, node)
                    .map_err(|e| e.with_plugin(p.name()))?;
            }
            let status = s.normalize(state, pod, &mut scores);
            if !status.is_success() {
                return Err(status.with_plugin(p.name()));
            }
            for (t, s) in totals.iter_mut().zip(&scores) {
                *t += s.clamp(&0, &MAX_NODE_SCORE) * weight;
            }
        }
        Ok(totals)
    }

    /// Runs the PostFilter plugins until one proposes a node.
    pub fn run_post_filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
        statuses: &NodeStatuses,
    ) -> (Option<PostFilterResult>, Status) {
        let mut last = Status::unschedulable("no PostFilter plugin");
        for p in &self.post_filter {
            let Some(pf) = p.as_post_filter() else {
                continue;
            };
            let (result, status) = pf.post_filter(state, pod, snapshot, statuses, self);
            if status.is_success() {
                return (result, status);
            }
            last = status.with_plugin(p.name());
        }
        (None, last)
    }

    /// Runs Reserve; the first failure wins. On a failure the caller runs
    /// [`Profile::run_unreserve`] on every plugin, as upstream does.
    pub fn run_reserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Status {
        for p in &self.reserve {
            let Some(r) = p.as_reserve() else {
                continue;
            };
            let status = r.reserve(state, pod, node);
            if !status.is_success() {
                return status.with_plugin(p.name());
            }
        }
        Status::success()
    }

    /// Runs Unreserve on every Reserve plugin, in reverse.
    pub fn run_unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) {
        for p in self.reserve.iter().rev() {
            if let Some(r) = p.as_reserve() {
                r.unreserve(state, pod, node);
            }
        }
    }

    /// Runs Permit; the first rejection wins.
    pub fn run_permit(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Status {
        for p in &self.permit {
            if let Some(pm) = p.as_permit() {
                let status = pm.permit(state, pod, node);
                if !status.is_success() {
                    return status.with_plugin(p.name());
                }
            }
        }
        Status::success()
    }

    /// Runs PreBind; the first failure wins.
    pub fn run_pre_bind(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Status {
        for p in &self.pre_bind {
            if let Some(pb) = p.as_pre_bind() {
                let status = pb.pre_bind(state, pod, node);
                if !status.is_success() {
                    return status.with_plugin(p.name());
                }
            }
        }
        Status::success()
    }

    /// Whether some Bind plugin claims the pod (the scheduler then posts the binding).
    pub fn bind_claimed(&self, pod: &PodInfo) -> Status {
        for p in &self.bind {
            if let Some(b) = p.as_bind() {
                let status = b.claims(pod);
                if !status.is_skip() {
                    return status.with_plugin(p.name());
                }
            }
        }
        Status::error("no bind plugin claimed the pod")
    }

    /// Runs PostBind.
    pub fn run_post_bind(&self, pod: &PodInfo, node: &str) {
        for p in &self.post_bind {
            if let Some(pb) = p.as_post_bind() {
                pb.post_bind(pod, node);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_to_find_follows_upstream() {
        let p = Profile::empty("default-scheduler");
        assert_eq!(p.nodes_to_find(50), 50, "small clusters are searched whole");
        assert_eq!(p.nodes_to_find(1000), 420, "50 - 1000/125 = 42%");
        assert_eq!(p.nodes_to_find(5000), 500, "50 - 40 = 10%");
        assert_eq!(p.nodes_to_find(6000), 300, "floor of 5%");
        assert_eq!(p.nodes_to_find(150), 100, "never fewer than 100");
        let mut all = Profile::empty("x");
        all.percentage_of_nodes_to_score = Some(100);
        assert_eq!(all.nodes_to_find(5000), 5000);
    }
}
