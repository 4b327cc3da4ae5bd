//! What one reconcile of a StatefulSet does to its pods (upstream's `updateStatefulSet` in
//! `stateful_set_control.go`), computed from a snapshot so tests can check every choice.
//!
//! Pods with an ordinal in `[start, start + replicas)` are replicas; the others are
//! condemned. With `OrderedReady` (monotonic) the plan stops at the first replica that is
//! missing (it creates it), failed (it deletes it) or not yet Running, Ready and available;
//! only when every replica is healthy does it delete condemned pods, the highest ordinal first
//! and one at a time, and then roll out: the highest ordinal not at the update revision (down
//! to `partition`) is deleted, to be recreated at the update revision, once every higher one
//! is available. `Parallel` creates and deletes without waiting; the rollout still goes one
//! pod at a time.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};

use super::identity::{self, is_running_and_available, is_running_and_ready, is_terminating};
use crate::pods;

/// Why a pod is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// It failed or succeeded; it is recreated once gone.
    Finished,
    /// Its ordinal is beyond the replicas.
    ScaleDown,
    /// It runs an old revision; it is recreated at the update revision.
    Update,
}

/// One action on the cluster.
#[derive(Debug, Clone)]
pub enum Step {
    /// Create the pod, after its missing claims.
    Create(Box<Pod>),
    /// Create the missing claims of a pod that exists.
    CreateClaims(Arc<Pod>),
    /// Restore the pod's identity labels.
    FixIdentity(Arc<Pod>),
    /// Delete the pod.
    Delete(Arc<Pod>, DeleteReason),
}

/// A revision as the plan needs it: its name and the template it holds.
#[derive(Debug, Clone, Copy)]
pub struct Revision<'a> {
    /// The ControllerRevision's name (pods carry it in `controller-revision-hash`).
    pub name: &'a str,
    /// The pod template of the revision.
    pub template: &'a PodTemplateSpec,
}

/// What a plan reads.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The set.
    pub set: &'a StatefulSet,
    /// Its current revision (what pods below the partition run).
    pub current: Revision<'a>,
    /// Its update revision (what the spec asks for now).
    pub update: Revision<'a>,
    /// The set's pods (claimed, members by name).
    pub pods: &'a [Arc<Pod>],
    /// Now, for `minReadySeconds`.
    pub now: Timestamp,
}

/// The replica counts of a status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Pods that exist.
    pub replicas: i32,
    /// Pods Running and Ready.
    pub ready: i32,
    /// Pods Ready for `minReadySeconds`.
    pub available: i32,
    /// Live pods at the current revision.
    pub current: i32,
    /// Live pods at the update revision.
    pub updated: i32,
}

/// The plan of one reconcile.
#[derive(Debug, Default)]
pub struct Plan {
    /// Steps on the replicas, in order.
    pub replicas: Vec<Step>,
    /// Deletions of condemned pods, highest ordinal first.
    pub condemned: Vec<Step>,
    /// The rollout's deletion, if it may proceed.
    pub update: Option<Step>,
    /// Whether steps must run one after another (`OrderedReady`), or may run at once.
    pub monotonic: bool,
    /// The status counts after the plan.
    pub counts: Counts,
}

impl Plan {
    /// Every step, in order.
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.replicas
            .iter()
            .chain(&self.condemned)
            .chain(self.update.as_ref())
    }
}

/// `minReadySeconds` of the set.
pub fn min_ready_seconds(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

/// Whether the set creates and deletes without waiting (`podManagementPolicy: Parallel`).
pub fn allows_burst(set: &StatefulSet) -> bool {
    set.spec
        .as_ref()
        .and_then(|s| s.pod_management_policy.as_deref())
        == Some("Parallel")
}

/// Whether the set's update strategy is `OnDelete`.
pub fn is_on_delete(set: &StatefulSet) -> bool {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("OnDelete")
}

/// The rolling update's partition, `None` without a `rollingUpdate` block.
pub fn partition(set: &StatefulSet) -> Option<i32> {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref())
        .map(|r| r.partition.unwrap_or(0))
}

/// Counts pods for the status (upstream's `computeReplicaStatus`).
pub fn count(
    pods: &[Arc<Pod>],
    min_ready_seconds: i32,
    current: &str,
    update: &str,
    now: Timestamp,
) -> Counts {
    let mut c = Counts::default();
    for pod in pods {
        c.replicas += 1;
        if is_running_and_ready(pod) {
            c.ready += 1;
            if is_running_and_available(pod, min_ready_seconds, now) {
                c.available += 1;
            }
        }
        if !is_terminating(pod) {
            let revision = identity::revision_of(pod);
            if revision == current {
                c.current += 1;
            }
            if revision == update {
                c.updated += 1;
            }
        }
    }
    c
}

/// The pod to create for `ordinal`: at the current revision below the partition (or, without
/// a `rollingUpdate` block, below the count of current replicas), at the update revision
/// otherwise (upstream's `newVersionedStatefulSetPod`).
pub fn new_versioned_pod(inputs: &Inputs<'_>, ordinal: i32) -> Pod {
    let set = inputs.set;
    let start = identity::start_ordinal(set);
    let rolling = !is_on_delete(set);
    let current_replicas = set
        .status
        .as_ref()
        .and_then(|s| s.current_replicas)
        .unwrap_or(0);
    let at_current = match partition(set) {
        None => rolling && ordinal < start.saturating_add(current_replicas),
        Some(partition) => ordinal < start.saturating_add(partition),
    };
    let revision = if at_current {
        inputs.current
    } else {
        inputs.update
    };
    identity::new_pod(set, revision.template, ordinal, revision.name)
}

/// At most this many creations are planned per reconcile of a `Parallel` set; the pods'
/// arrival brings the set back for the next ones, so a set of a million replicas costs each
/// reconcile no more than its existing pods and this many new ones.
pub const MAX_PLANNED_CREATES: usize = 500;

/// Plans one reconcile. `claims_missing` says whether an existing pod lacks claims.
pub fn plan(inputs: &Inputs<'_>, claims_missing: impl Fn(&Pod) -> bool) -> Plan {
    let set = inputs.set;
    let min_ready = min_ready_seconds(set);
    let now = inputs.now;
    let replica_count = identity::replicas(set).max(0);
    let start = identity::start_ordinal(set);
    // One past the last replica's ordinal.
    let end = start.saturating_add(replica_count);

    // The replicas that exist, by ordinal; every other ordinal below `end` is missing.
    let mut existing: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
    let mut condemned: Vec<Arc<Pod>> = Vec::new();
    let mut live: Vec<Arc<Pod>> = Vec::new();
    for pod in inputs.pods {
        let Some(ordinal) = identity::ordinal(pod) else {
            continue;
        };
        live.push(pod.clone());
        if (start..end).contains(&ordinal) {
            existing.insert(ordinal, pod.clone());
        } else {
            condemned.push(pod.clone());
        }
    }
    identity::sort_descending(&mut condemned);

    let mut plan = Plan {
        monotonic: !allows_burst(set),
        counts: count(
            &live,
            min_ready,
            inputs.current.name,
            inputs.update.name,
            now,
        ),
        ..Default::default()
    };
    if set.metadata.deletion_timestamp.is_some() {
        return plan;
    }
    let monotonic = plan.monotonic;

    // The first unhealthy pod: of the replicas in order (a missing one is unhealthy), else
    // the lowest condemned one.
    let missing = i64::from(replica_count) > i64::try_from(existing.len()).unwrap_or(i64::MAX);
    let first_unhealthy_condemned = if missing
        || existing
            .values()
            .any(|p| !is_running_and_available(p, min_ready, now))
    {
        None
    } else {
        condemned
            .iter()
            .rev()
            .find(|p| !is_running_and_available(p, min_ready, now))
            .cloned()
    };

    // Replicas: create the missing, replace the finished, wait for each to be healthy. Once
    // enough creations are planned, only the existing pods above are visited.
    let mut creates = 0;
    let mut next = (start < end).then_some(start);
    while let Some(ordinal) = next {
        match existing.get(&ordinal) {
            None => {
                if creates < MAX_PLANNED_CREATES {
                    let pod = new_versioned_pod(inputs, ordinal);
                    plan.replicas.push(Step::Create(Box::new(pod)));
                    creates += 1;
                }
                if monotonic {
                    return plan;
                }
            }
            Some(pod) if matches!(pods::phase(pod), "Failed" | "Succeeded") => {
                if !is_terminating(pod) {
                    plan.replicas
                        .push(Step::Delete(pod.clone(), DeleteReason::Finished));
                }
                if monotonic {
                    return plan;
                }
            }
            Some(pod) => {
                if pods::phase(pod) == "Pending" && claims_missing(pod) {
                    plan.replicas.push(Step::CreateClaims(pod.clone()));
                }
                if monotonic
                    && (is_terminating(pod)
                        || !is_running_and_ready(pod)
                        || !is_running_and_available(pod, min_ready, now))
                {
                    return plan;
                }
                if !identity::identity_matches(set, pod) {
                    plan.replicas.push(Step::FixIdentity(pod.clone()));
                } else if !identity::storage_matches(set, pod) && claims_missing(pod) {
                    plan.replicas.push(Step::CreateClaims(pod.clone()));
                }
            }
        }
        next = if creates < MAX_PLANNED_CREATES {
            ordinal.checked_add(1).filter(|o| *o < end)
        } else {
            existing
                .range(ordinal.saturating_add(1)..end)
                .next()
                .map(|(o, _)| *o)
        };
    }

    // Condemned pods, highest ordinal first; in order, only the first unhealthy one may go
    // while unhealthy.
    for pod in &condemned {
        if is_terminating(pod) {
            if monotonic {
                return plan;
            }
            continue;
        }
        let first_unhealthy = first_unhealthy_condemned
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, pod));
        if monotonic && !is_running_and_available(pod, min_ready, now) && !first_unhealthy {
            return plan;
        }
        plan.condemned
            .push(Step::Delete(pod.clone(), DeleteReason::ScaleDown));
        if monotonic {
            return plan;
        }
    }

    if is_on_delete(set) {
        return plan;
    }

    // The rollout: from the highest ordinal down to the partition, one pod at a time; a
    // missing or unavailable replica holds it.
    let update_min = start.saturating_add(partition(set).unwrap_or(0).max(0));
    for ordinal in (update_min..end).rev() {
        let Some(pod) = existing.get(&ordinal) else {
            return plan;
        };
        if identity::revision_of(pod) != inputs.update.name && !is_terminating(pod) {
            plan.update = Some(Step::Delete(pod.clone(), DeleteReason::Update));
            plan.counts.current -= 1;
            return plan;
        }
        if !is_running_and_available(pod, min_ready, now) {
            return plan;
        }
    }
    plan
}
