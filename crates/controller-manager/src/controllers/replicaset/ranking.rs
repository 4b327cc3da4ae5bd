//! Which pods a ReplicaSet deletes first when it has too many: upstream's
//! `ActivePodsWithRanks` ordering, so a scale-down removes the pods that matter least.
//!
//! In order, a pod is deleted before another when it is:
//! 1. not assigned to a node (the other is);
//! 2. in an earlier phase: `Pending` < `Unknown` < `Running`;
//! 3. not ready (the other is);
//! 4. cheaper by its `controller.kubernetes.io/pod-deletion-cost` annotation;
//! 5. on a node crowded with more pods of the same owner's ReplicaSets (its rank);
//! 6. ready for less time (both ready);
//! 7. restarted more often (the highest container restart count, then sidecars');
//! 8. newer.
//!
//! Ties fall back to the name so the choice is deterministic. Upstream's
//! `LogarithmicScaleDown` bucketing of ages (which randomizes between pods of similar age) is
//! not applied: ages compare exactly.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

use crate::pods;

/// The annotation users set to make a pod cheaper (lower) or dearer (higher) to delete.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Upstream's `podPhaseToOrdinal`: phases it does not list rank with `Pending`.
fn phase_ordinal(pod: &Pod) -> u8 {
    match pods::phase(pod) {
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    }
}

fn is_assigned(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

/// The pod's deletion cost; missing or unparsable annotations cost 0, as upstream.
pub fn deletion_cost(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DELETION_COST))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The highest restart count of the regular containers, then of the sidecars (init
/// containers with `restartPolicy: Always`).
fn max_restarts(pod: &Pod) -> (i32, i32) {
    let Some(status) = pod.status.as_ref() else {
        return (0, 0);
    };
    let regular = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0);
    let sidecars: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.as_str())
        .collect();
    let sidecar = status
        .init_container_statuses
        .iter()
        .flatten()
        .filter(|c| sidecars.contains(&c.name.as_str()))
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0);
    (regular, sidecar)
}

/// A time that is "empty" (missing, or the epoch a missing transition time reads as) sorts
/// first; otherwise the later time sorts first. Upstream's `afterOrZero`.
fn later_or_empty_first(a: Option<Timestamp>, b: Option<Timestamp>) -> Ordering {
    let a = a.filter(|t| *t != Timestamp::UNIX_EPOCH);
    let b = b.filter(|t| *t != Timestamp::UNIX_EPOCH);
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => b.cmp(&a),
    }
}

/// Orders two pods for deletion: `Less` means `a` goes first. `rank_a` and `rank_b` count
/// the active pods of related ReplicaSets on each pod's node.
pub fn compare(a: &Pod, rank_a: usize, b: &Pod, rank_b: usize) -> Ordering {
    // 1. Unassigned before assigned.
    is_assigned(a)
        .cmp(&is_assigned(b))
        // 2. Pending < Unknown < Running.
        .then_with(|| phase_ordinal(a).cmp(&phase_ordinal(b)))
        // 3. Not ready before ready.
        .then_with(|| pods::is_ready(a).cmp(&pods::is_ready(b)))
        // 4. Lower deletion cost first.
        .then_with(|| deletion_cost(a).cmp(&deletion_cost(b)))
        // 5. Doubled up (higher rank) first.
        .then_with(|| rank_b.cmp(&rank_a))
        // 6. Ready for less time first, when both are ready.
        .then_with(|| match (pods::ready_since(a), pods::ready_since(b)) {
            (Some(ra), Some(rb)) => later_or_empty_first(Some(ra), Some(rb)),
            _ => Ordering::Equal,
        })
        // 7. More restarts first.
        .then_with(|| max_restarts(b).cmp(&max_restarts(a)))
        // 8. Newer first.
        .then_with(|| {
            later_or_empty_first(
                a.metadata.creation_timestamp.as_ref().map(|t| t.0),
                b.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        })
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// The `count` pods of `pods` to delete first. `related` are the active pods of every
/// ReplicaSet with the same controller (a Deployment's old and new ReplicaSets), used to
/// prefer pods on nodes where the workload is doubled up.
pub fn pods_to_delete(pods: &[Arc<Pod>], related: &[Arc<Pod>], count: usize) -> Vec<Arc<Pod>> {
    if count >= pods.len() {
        return pods.to_vec();
    }
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for pod in related.iter().filter(|p| pods::is_active(p)) {
        *on_node.entry(node_name(pod)).or_default() += 1;
    }
    let mut ranked: Vec<(usize, &Arc<Pod>)> = pods
        .iter()
        .map(|p| (on_node.get(node_name(p)).copied().unwrap_or(0), p))
        .collect();
    ranked.sort_by(|(ra, a), (rb, b)| compare(a, *ra, b, *rb));
    ranked
        .into_iter()
        .take(count)
        .map(|(_, p)| Arc::clone(p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerStatus, PodCondition, PodSpec, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(1_700_000_000 + second).unwrap())
    }

    /// A pod called `name` created at second `created`; adjust with the builders below.
    fn pod(name: &str, created: i64) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.creation_timestamp = Some(at(created));
        p.spec = Some(PodSpec::default());
        p.status = Some(PodStatus::default());
        p
    }

    fn on(mut p: Pod, node: &str) -> Pod {
        p.spec.get_or_insert_with(Default::default).node_name = Some(node.into());
        p
    }

    fn phase(mut p: Pod, phase: &str) -> Pod {
        p.status.get_or_insert_with(Default::default).phase = Some(phase.into());
        p
    }

    fn ready_at(mut p: Pod, second: i64) -> Pod {
        p = phase(p, "Running");
        p.status
            .get_or_insert_with(Default::default)
            .conditions
            .get_or_insert_with(Vec::new)
            .push(PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(at(second)),
                ..Default::default()
            });
        p
    }

    fn restarts(mut p: Pod, n: i32) -> Pod {
        p.status
            .get_or_insert_with(Default::default)
            .container_statuses = Some(vec![ContainerStatus {
            name: "app".into(),
            restart_count: n,
            ..Default::default()
        }]);
        p
    }

    fn cost(mut p: Pod, c: &str) -> Pod {
        p.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(DELETION_COST.into(), c.into());
        p
    }

    fn first(a: Pod, b: Pod) -> String {
        let pods = [Arc::new(a), Arc::new(b)];
        let chosen = pods_to_delete(&pods, &[], 1);
        chosen[0].metadata.name.clone().unwrap()
    }

    #[test]
    fn unassigned_pods_go_before_assigned_ones() {
        let assigned = ready_at(on(pod("assigned", 10), "n1"), 20);
        assert_eq!(first(assigned.clone(), pod("unassigned", 0)), "unassigned");
        assert_eq!(first(pod("unassigned", 0), assigned), "unassigned");
    }

    #[test]
    fn earlier_phases_go_first() {
        let pending = phase(on(pod("pending", 0), "n1"), "Pending");
        let unknown = phase(on(pod("unknown", 0), "n1"), "Unknown");
        let running = phase(on(pod("running", 0), "n1"), "Running");
        assert_eq!(first(running.clone(), unknown.clone()), "unknown");
        assert_eq!(first(unknown, pending.clone()), "pending");
        assert_eq!(first(running, pending), "pending");
    }

    #[test]
    fn not_ready_goes_before_ready_and_recently_ready_before_long_ready() {
        let not_ready = phase(on(pod("not-ready", 0), "n1"), "Running");
        let ready_long = ready_at(on(pod("ready-long", 0), "n1"), 100);
        let ready_recent = ready_at(on(pod("ready-recent", 0), "n1"), 200);
        assert_eq!(first(ready_long.clone(), not_ready), "not-ready");
        assert_eq!(first(ready_long, ready_recent), "ready-recent");
    }

    #[test]
    fn more_restarts_go_first_then_newer_pods() {
        let calm = restarts(ready_at(on(pod("calm", 50), "n1"), 100), 0);
        let flappy = restarts(ready_at(on(pod("flappy", 10), "n1"), 100), 7);
        assert_eq!(first(calm.clone(), flappy), "flappy");
        let older = restarts(ready_at(on(pod("older", 10), "n1"), 100), 0);
        assert_eq!(first(older, calm), "calm", "the newer pod goes first");
    }

    #[test]
    fn deletion_cost_and_doubled_up_nodes_decide_between_equal_pods() {
        let cheap = cost(ready_at(on(pod("cheap", 0), "n1"), 100), "-5");
        let dear = cost(ready_at(on(pod("dear", 50), "n1"), 100), "10");
        assert_eq!(first(dear, cheap), "cheap");
        assert_eq!(deletion_cost(&cost(pod("bad", 0), "lots")), 0);

        // Two pods of the workload on n1, one on n2: the n1 pod goes first even though the
        // n2 pod is newer.
        let a = Arc::new(ready_at(on(pod("a", 0), "n1"), 100));
        let b = Arc::new(ready_at(on(pod("b", 50), "n2"), 100));
        let sibling = Arc::new(ready_at(on(pod("sibling", 0), "n1"), 100));
        let related = [a.clone(), b.clone(), sibling];
        let chosen = pods_to_delete(&[b, a], &related, 1);
        assert_eq!(chosen[0].metadata.name.as_deref(), Some("a"));
    }

    #[test]
    fn sidecar_restarts_break_ties_of_regular_restarts() {
        let mut with_sidecar = restarts(ready_at(on(pod("sidecar", 0), "n1"), 100), 1);
        if let Some(spec) = with_sidecar.spec.as_mut() {
            spec.init_containers = Some(vec![Container {
                name: "proxy".into(),
                restart_policy: Some("Always".into()),
                ..Default::default()
            }]);
        }
        if let Some(status) = with_sidecar.status.as_mut() {
            status.init_container_statuses = Some(vec![ContainerStatus {
                name: "proxy".into(),
                restart_count: 4,
                ..Default::default()
            }]);
        }
        let plain = restarts(ready_at(on(pod("plain", 50), "n1"), 100), 1);
        assert_eq!(first(plain, with_sidecar), "sidecar");
    }

    #[test]
    fn asking_for_all_returns_all_and_the_order_is_total() {
        let pods: Vec<Arc<Pod>> = (0..5)
            .map(|i| Arc::new(ready_at(on(pod(&format!("p{i}"), i), "n1"), 100)))
            .collect();
        assert_eq!(pods_to_delete(&pods, &[], 9).len(), 5);
        let chosen: Vec<String> = pods_to_delete(&pods, &[], 3)
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(chosen, ["p4", "p3", "p2"], "newest first");
    }

    #[test]
    fn a_missing_ready_time_or_creation_time_counts_as_the_newest() {
        let mut no_transition = ready_at(on(pod("no-transition", 0), "n1"), 100);
        if let Some(c) = no_transition
            .status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
        {
            c[0].last_transition_time = None;
        }
        let ready = ready_at(on(pod("ready", 50), "n1"), 200);
        assert_eq!(first(ready.clone(), no_transition), "no-transition");
        let mut no_creation = ready_at(on(pod("no-creation", 0), "n1"), 200);
        no_creation.metadata.creation_timestamp = None;
        assert_eq!(first(ready, no_creation), "no-creation");
    }
}
