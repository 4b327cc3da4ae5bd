//! The taints the node lifecycle controller keeps on nodes (upstream's
//! `doNoScheduleTaintingPass` and `processTaintBaseEviction`).
//!
//! `NoSchedule` taints mirror conditions (TaintNodesByCondition): `Ready=False` →
//! `node.kubernetes.io/not-ready`, `Ready=Unknown` → `node.kubernetes.io/unreachable`,
//! `MemoryPressure`, `DiskPressure`, `PIDPressure` and `NetworkUnavailable` `True` → their
//! pressure taints, and `spec.unschedulable` → `node.kubernetes.io/unschedulable`.
//!
//! `NoExecute` taints drive taint-based eviction: `Ready=False` → `not-ready`,
//! `Ready=Unknown` → `unreachable` (the two are exclusive, as the Ready condition is), none
//! while the node is ready. While no node in the cluster is ready (upstream's "full
//! disruption": more likely the control plane lost the nodes than every node died at once)
//! no `NoExecute` taint is kept, so nothing is evicted.
//!
//! Only these keys are managed: every other taint stays as it is. A managed taint that stays
//! keeps its `timeAdded`; a new one gets the current time.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::health::condition;

/// The node's Ready condition is `False`.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The node's Ready condition is `Unknown`: the controller lost touch with it.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The node is cordoned (`spec.unschedulable`).
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// `MemoryPressure=True`.
pub const MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
/// `DiskPressure=True`.
pub const DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
/// `PIDPressure=True`.
pub const PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
/// `NetworkUnavailable=True`.
pub const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// The `NoSchedule` effect.
pub const NO_SCHEDULE: &str = "NoSchedule";
/// The `NoExecute` effect.
pub const NO_EXECUTE: &str = "NoExecute";

/// Condition type, status → the `NoSchedule` taint key it stands for.
const CONDITION_TAINTS: [(&str, &str, &str); 6] = [
    ("Ready", "False", NOT_READY),
    ("Ready", "Unknown", UNREACHABLE),
    ("MemoryPressure", "True", MEMORY_PRESSURE),
    ("DiskPressure", "True", DISK_PRESSURE),
    ("PIDPressure", "True", PID_PRESSURE),
    ("NetworkUnavailable", "True", NETWORK_UNAVAILABLE),
];

/// Whether the controller owns `taint` (adds and removes it).
pub fn is_managed(taint: &Taint) -> bool {
    match taint.effect.as_str() {
        NO_SCHEDULE => {
            taint.key == UNSCHEDULABLE
                || CONDITION_TAINTS.iter().any(|(_, _, key)| *key == taint.key)
        }
        NO_EXECUTE => taint.key == NOT_READY || taint.key == UNREACHABLE,
        _ => false,
    }
}

/// The managed taints `node` should carry, as (key, effect); `no_execute` is false while
/// the cluster is fully disrupted.
pub fn desired(node: &Node, no_execute: bool) -> Vec<(&'static str, &'static str)> {
    let mut taints: Vec<(&str, &str)> = CONDITION_TAINTS
        .iter()
        .filter(|(type_, status, _)| condition(node, type_).is_some_and(|c| c.status == *status))
        .map(|(_, _, key)| (*key, NO_SCHEDULE))
        .collect();
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        taints.push((UNSCHEDULABLE, NO_SCHEDULE));
    }
    if no_execute {
        match condition(node, "Ready").map(|c| c.status.as_str()) {
            Some("False") => taints.push((NOT_READY, NO_EXECUTE)),
            Some("Unknown") => taints.push((UNREACHABLE, NO_EXECUTE)),
            _ => {}
        }
    }
    taints
}

/// The node's taints with the managed ones made `desired` (new ones stamped `now`), or
/// `None` when they already are.
pub fn reconcile(
    current: &[Taint],
    desired: &[(&str, &str)],
    now: Timestamp,
) -> Option<Vec<Taint>> {
    let wanted = |t: &Taint| desired.contains(&(t.key.as_str(), t.effect.as_str()));
    let removed = current.iter().any(|t| is_managed(t) && !wanted(t));
    let missing: Vec<Taint> = desired
        .iter()
        .filter(|(key, effect)| !current.iter().any(|t| t.key == *key && t.effect == *effect))
        .map(|(key, effect)| Taint {
            key: key.to_string(),
            effect: effect.to_string(),
            value: None,
            time_added: Some(Time(now)),
        })
        .collect();
    if !removed && missing.is_empty() {
        return None;
    }
    let mut taints: Vec<Taint> = current
        .iter()
        .filter(|t| !is_managed(t) || wanted(t))
        .cloned()
        .collect();
    taints.extend(missing);
    Some(taints)
}

/// The node's `NoExecute` taints.
pub fn no_execute(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|t| t.effect == NO_EXECUTE)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};

    fn node(conditions: &[(&str, &str)], taints: Vec<Taint>) -> Node {
        Node {
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(type_, status)| NodeCondition {
                            type_: type_.to_string(),
                            status: status.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn taint(key: &str, effect: &str, added: Option<&str>) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: added.map(|t| Time(t.parse().expect("time"))),
        }
    }

    fn keys(taints: &[Taint]) -> Vec<(String, String)> {
        taints
            .iter()
            .map(|t| (t.key.clone(), t.effect.clone()))
            .collect()
    }

    #[test]
    fn conditions_map_to_taints_like_upstream() {
        let ready = node(&[("Ready", "True"), ("MemoryPressure", "False")], vec![]);
        assert!(
            desired(&ready, true).is_empty(),
            "a healthy node carries none"
        );
        let not_ready = node(&[("Ready", "False"), ("DiskPressure", "True")], vec![]);
        assert_eq!(
            desired(&not_ready, true),
            [
                (NOT_READY, NO_SCHEDULE),
                (DISK_PRESSURE, NO_SCHEDULE),
                (NOT_READY, NO_EXECUTE)
            ]
        );
        let unknown = node(&[("Ready", "Unknown")], vec![]);
        assert_eq!(
            desired(&unknown, true),
            [(UNREACHABLE, NO_SCHEDULE), (UNREACHABLE, NO_EXECUTE)]
        );
        assert_eq!(
            desired(&unknown, false),
            [(UNREACHABLE, NO_SCHEDULE)],
            "no NoExecute taint in full disruption"
        );
        let mut cordoned = node(&[("Ready", "True"), ("PIDPressure", "True")], vec![]);
        cordoned.spec.as_mut().expect("spec").unschedulable = Some(true);
        assert_eq!(
            desired(&cordoned, true),
            [(PID_PRESSURE, NO_SCHEDULE), (UNSCHEDULABLE, NO_SCHEDULE)]
        );
    }

    #[test]
    fn reconcile_swaps_managed_taints_and_keeps_the_rest() {
        let now: Timestamp = "2026-01-01T00:10:00Z".parse().expect("time");
        let current = vec![
            taint("dedicated", NO_EXECUTE, None),
            taint(NOT_READY, NO_EXECUTE, Some("2026-01-01T00:00:00Z")),
            taint(NOT_READY, NO_SCHEDULE, Some("2026-01-01T00:00:00Z")),
            taint(UNREACHABLE, "PreferNoSchedule", None),
        ];
        // Ready False → Unknown: not-ready goes, unreachable comes.
        let next = reconcile(
            &current,
            &[(UNREACHABLE, NO_SCHEDULE), (UNREACHABLE, NO_EXECUTE)],
            now,
        )
        .expect("a change");
        assert_eq!(
            keys(&next),
            keys(&[
                taint("dedicated", NO_EXECUTE, None),
                taint(UNREACHABLE, "PreferNoSchedule", None),
                taint(UNREACHABLE, NO_SCHEDULE, None),
                taint(UNREACHABLE, NO_EXECUTE, None),
            ])
        );
        assert!(
            next[2..].iter().all(|t| t.time_added == Some(Time(now))),
            "new taints are stamped with the time they were added"
        );
        // Unchanged: nothing to write, and a kept taint keeps its time.
        let desired_now = [(UNREACHABLE, NO_SCHEDULE), (UNREACHABLE, NO_EXECUTE)];
        let later: Timestamp = "2026-01-01T00:20:00Z".parse().expect("time");
        assert_eq!(reconcile(&next, &desired_now, later), None);
        let partly = reconcile(&next[..3], &desired_now, later).expect("one missing");
        assert_eq!(partly[2].time_added, Some(Time(now)));
        assert_eq!(partly[3].time_added, Some(Time(later)));
        // Ready again: every managed taint goes, foreign ones stay.
        let healed = reconcile(&next, &[], later).expect("a change");
        assert_eq!(
            keys(&healed),
            keys(&[
                taint("dedicated", NO_EXECUTE, None),
                taint(UNREACHABLE, "PreferNoSchedule", None)
            ])
        );
        assert_eq!(no_execute(&node(&[], healed)).len(), 1);
    }
}
