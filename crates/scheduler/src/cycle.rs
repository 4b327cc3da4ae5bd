//! One scheduling cycle for one pod, pure: PreFilter, Filter over a round-robin sample of
//! nodes, PreScore, Score, and the choice of the best node (ties broken at random, as
//! upstream does). The scheduling loop wraps it with assume, reserve, binding and
//! preemption; the property tests and the benchmarks call it directly.

use std::collections::{BTreeMap, HashSet};

use crate::framework::{Code, CycleState, NodeStatuses, Status};
use crate::node_info::{NodeInfo, PodInfo};
use crate::profile::Profile;
use crate::snapshot::Snapshot;

/// Where the pod goes.
#[derive(Debug)]
pub struct Placement {
    /// The chosen node.
    pub node: String,
    /// How many nodes were filtered.
    pub evaluated: usize,
    /// How many passed.
    pub feasible: usize,
    /// Where the next cycle starts its round-robin search.
    pub next_start: usize,
    /// The cycle's state, for Reserve and Permit.
    pub state: CycleState,
}

/// Why no node was chosen.
#[derive(Debug)]
pub enum Failure {
    /// No node fits the pod.
    Fit(FitError),
    /// A plugin failed.
    Error(Status),
}

/// No node fits: why, node by node (upstream's `FitError`).
#[derive(Debug)]
pub struct FitError {
    /// How many nodes the cluster has.
    pub num_nodes: usize,
    /// The rejection of a PreFilter plugin, which applies to every node.
    pub pre_filter: Option<Status>,
    /// Each node's rejection by the filters.
    pub statuses: NodeStatuses,
    /// The cycle's state, for PostFilter.
    pub state: CycleState,
}

impl FitError {
    /// The user-facing summary, as upstream writes it: `0/5 nodes are available: 2 node(s)
    /// had untolerated taint {dedicated: gpu}, 3 Insufficient cpu.` (reasons counted over
    /// the nodes and sorted).
    pub fn message(&self) -> String {
        if self.num_nodes == 0 {
            return "no nodes available to schedule pods".to_string();
        }
        let mut out = format!("0/{} nodes are available:", self.num_nodes);
        if let Some(pf) = &self.pre_filter {
            out.push_str(&format!(" {pf}."));
            return out;
        }
        let mut histogram: BTreeMap<&str, usize> = BTreeMap::new();
        for status in self.statuses.values() {
            for reason in &status.reasons {
                *histogram.entry(reason.as_str()).or_default() += 1;
            }
        }
        let mut reasons: Vec<String> = histogram
            .into_iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        reasons.sort();
        out.push_str(&format!(" {}.", reasons.join(", ")));
        out
    }

    /// The plugins that rejected the pod somewhere; the queue moves the pod back when an
    /// event one of them cares about happens.
    pub fn plugins(&self) -> HashSet<&'static str> {
        let mut out: HashSet<&'static str> = self.statuses.values().map(|s| s.plugin).collect();
        if let Some(pf) = &self.pre_filter {
            out.insert(pf.plugin);
        }
        out.remove("");
        out
    }
}

/// A small xorshift generator for tie-breaking; not for anything that needs real
/// randomness.
#[derive(Debug, Clone)]
pub struct TieBreaker(u64);

impl TieBreaker {
    /// Seeded from `seed` (zero is replaced by a constant).
    pub fn new(seed: u64) -> TieBreaker {
        TieBreaker(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Schedules `pod` against `snapshot` with `profile`, searching from node `start`.
pub fn schedule_pod(
    profile: &Profile,
    snapshot: &Snapshot,
    pod: &PodInfo,
    start: usize,
    ties: &mut TieBreaker,
) -> Result<Placement, Failure> {
    let mut state = CycleState::new();
    let num_nodes = snapshot.len();
    if num_nodes == 0 {
        return Err(Failure::Fit(FitError {
            num_nodes,
            pre_filter: None,
            statuses: NodeStatuses::new(),
            state,
        }));
    }
    let status = profile.run_pre_filter(&mut state, pod, snapshot);
    if status.code == Code::Error {
        return Err(Failure::Error(status));
    }
    if status.is_rejected() {
        // Every node is rejected for the same reason.
        let statuses = snapshot
            .nodes()
            .iter()
            .map(|n| (n.name.clone(), status.clone()))
            .collect();
        return Err(Failure::Fit(FitError {
            num_nodes,
            pre_filter: Some(status),
            statuses,
            state,
        }));
    }
    let start = start % num_nodes;
    let feasible = profile.find_feasible(&state, pod, snapshot, start);
    if let Some(err) = feasible.statuses.values().find(|s| s.code == Code::Error) {
        return Err(Failure::Error(err.clone()));
    }
    let next_start = (start + feasible.evaluated) % num_nodes;
    if feasible.nodes.is_empty() {
        return Err(Failure::Fit(FitError {
            num_nodes,
            pre_filter: None,
            statuses: feasible.statuses,
            state,
        }));
    }
    let nodes: Vec<&NodeInfo> = feasible
        .nodes
        .iter()
        .map(|i| &snapshot.nodes()[*i])
        .collect();
    let chosen = if nodes.len() == 1 {
        0
    } else {
        let totals = profile
            .run_score(&mut state, pod, &nodes, snapshot)
            .map_err(Failure::Error)?;
        select_host(&totals, ties)
    };
    Ok(Placement {
        node: nodes[chosen].name.clone(),
        evaluated: feasible.evaluated,
        feasible: nodes.len(),
        next_start,
        state,
    })
}

/// The index of the highest total; among equal totals each is equally likely (reservoir
/// sampling, as upstream's `selectHost`).
pub fn select_host(totals: &[i64], ties: &mut TieBreaker) -> usize {
    let mut best = 0;
    let mut seen = 0u64;
    for (i, t) in totals.iter().enumerate() {
        if *t > totals[best] {
            best = i;
            seen = 1;
        } else if *t == totals[best] {
            seen += 1;
            if ties.next().is_multiple_of(seen) {
                best = i;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Status;

    #[test]
    fn fit_error_message_counts_and_sorts_reasons_as_upstream() {
        let mut statuses = NodeStatuses::new();
        for n in ["a", "b", "c"] {
            statuses.insert(n.into(), Status::unschedulable("Insufficient cpu"));
        }
        for n in ["d", "e"] {
            statuses.insert(
                n.into(),
                Status::unresolvable("node(s) had untolerated taint {dedicated: gpu}"),
            );
        }
        let err = FitError {
            num_nodes: 5,
            pre_filter: None,
            statuses,
            state: CycleState::new(),
        };
        assert_eq!(
            err.message(),
            "0/5 nodes are available: 2 node(s) had untolerated taint {dedicated: gpu}, 3 Insufficient cpu."
        );
    }

    #[test]
    fn select_host_takes_the_best_and_spreads_ties() {
        let mut ties = TieBreaker::new(7);
        assert_eq!(select_host(&[1, 5, 3], &mut ties), 1);
        let mut hits = [0usize; 3];
        for _ in 0..3000 {
            hits[select_host(&[9, 9, 9], &mut ties)] += 1;
        }
        assert!(
            hits.iter().all(|h| *h > 800),
            "ties should be spread evenly, got {hits:?}"
        );
    }
}
