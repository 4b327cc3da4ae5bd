//! The Deployment's status: counts summed over its ReplicaSets, the `Available` condition,
//! and the `Progressing` condition that says whether a rollout is moving, done, paused or
//! stuck past `progressDeadlineSeconds` (upstream's `progress.go` and the condition helpers
//! of `deployment/util`). Everything here is pure: the caller passes the time.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::replicas::{
    actual_replica_count, available_replica_count, deployment_replicas, max_unavailable,
    ready_replica_count, replica_count,
};

/// The `Progressing` condition type.
pub const PROGRESSING: &str = "Progressing";
/// The `Available` condition type.
pub const AVAILABLE: &str = "Available";
/// The `ReplicaFailure` condition type (copied from the ReplicaSets).
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

/// Progressing: a ReplicaSet was scaled during the rollout.
pub const REPLICA_SET_UPDATED: &str = "ReplicaSetUpdated";
/// Progressing: the new ReplicaSet could not be created.
pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
/// Progressing: the new ReplicaSet was created.
pub const NEW_REPLICA_SET: &str = "NewReplicaSetCreated";
/// Progressing: an existing ReplicaSet with the template was found.
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
/// Progressing: the rollout finished.
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
/// Progressing: no progress within `progressDeadlineSeconds`.
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
/// Progressing: the Deployment is paused.
pub const PAUSED: &str = "DeploymentPaused";
/// Progressing: the Deployment was resumed.
pub const RESUMED: &str = "DeploymentResumed";
/// Available: at least `replicas - maxUnavailable` pods are available.
pub const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
/// Available: fewer than `replicas - maxUnavailable` pods are available.
pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

/// `now` to the second, as Kubernetes stores times, so that what is written compares equal
/// to what is read back.
pub fn to_second(now: Timestamp) -> Timestamp {
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// A condition whose update and transition times are `now`.
pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    let now = Time(to_second(now));
    DeploymentCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// The condition of `type_`, if present.
pub fn get_condition<'a>(
    status: Option<&'a DeploymentStatus>,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Sets `condition` unless one of its type with the same status and reason is there; keeps
/// the transition time when only the reason changes (upstream's `SetDeploymentCondition`).
pub fn set_condition(status: &mut DeploymentStatus, mut condition: DeploymentCondition) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(current) = conditions.iter().find(|c| c.type_ == condition.type_) {
        if current.status == condition.status && current.reason == condition.reason {
            return;
        }
        if current.status == condition.status {
            condition.last_transition_time = current.last_transition_time.clone();
        }
    }
    conditions.retain(|c| c.type_ != condition.type_);
    conditions.push(condition);
}

/// Removes the condition of `type_`.
pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
    }
}

/// `status` as it reads back from the apiserver: zero counts and empty lists are absent
/// (Go omits them), so that computed and stored statuses compare equal.
pub fn normalized(status: Option<&DeploymentStatus>) -> DeploymentStatus {
    let mut s = status.cloned().unwrap_or_default();
    let zero_none = |v: &mut Option<i32>| *v = v.filter(|n| *n != 0);
    zero_none(&mut s.replicas);
    zero_none(&mut s.updated_replicas);
    zero_none(&mut s.ready_replicas);
    zero_none(&mut s.available_replicas);
    zero_none(&mut s.unavailable_replicas);
    s.observed_generation = s.observed_generation.filter(|n| *n != 0);
    s.conditions = s.conditions.filter(|c| !c.is_empty());
    s
}

/// Whether the Deployment has a progress deadline (`progressDeadlineSeconds` set and not
/// MaxInt32, which means none).
pub fn has_progress_deadline(d: &Deployment) -> bool {
    progress_deadline(d).is_some()
}

fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()?
        .progress_deadline_seconds
        .filter(|s| *s != i32::MAX)
}

/// The status the ReplicaSets add up to, with the `Available` condition (upstream's
/// `calculateStatus`); other conditions are carried over.
pub fn calculate_status(
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    d: &Deployment,
    now: Timestamp,
) -> DeploymentStatus {
    let available = available_replica_count(all);
    let total = replica_count(all);
    let unavailable = (total - available).max(0);
    let current = d.status.as_ref();
    let mut status = normalized(Some(&DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(actual_replica_count(all)),
        updated_replicas: Some(actual_replica_count(&new.into_iter().collect::<Vec<_>>())),
        ready_replicas: Some(ready_replica_count(all)),
        available_replicas: Some(available),
        unavailable_replicas: Some(unavailable),
        collision_count: current.and_then(|s| s.collision_count),
        conditions: current.and_then(|s| s.conditions.clone()),
    }));
    let condition = if available >= deployment_replicas(d) - max_unavailable(d) {
        new_condition(
            AVAILABLE,
            "True",
            MINIMUM_REPLICAS_AVAILABLE,
            "Deployment has minimum availability.".into(),
            now,
        )
    } else {
        new_condition(
            AVAILABLE,
            "False",
            MINIMUM_REPLICAS_UNAVAILABLE,
            "Deployment does not have minimum availability.".into(),
            now,
        )
    };
    set_condition(&mut status, condition);
    status
}

fn count(v: Option<i32>) -> i32 {
    v.unwrap_or(0)
}

/// Whether every desired replica is updated and available and no old pod is left
/// (upstream's `DeploymentComplete`).
pub fn deployment_complete(d: &Deployment, status: Option<&DeploymentStatus>) -> bool {
    let replicas = deployment_replicas(d);
    let s = normalized(status);
    count(s.updated_replicas) == replicas
        && count(s.replicas) == replicas
        && count(s.available_replicas) == replicas
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Whether `new` shows progress over the Deployment's current status: more updated, ready
/// or available pods, or fewer old ones (upstream's `DeploymentProgressing`).
pub fn deployment_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = normalized(d.status.as_ref());
    let old_old = count(old.replicas) - count(old.updated_replicas);
    let new_old = count(new.replicas) - count(new.updated_replicas);
    count(new.updated_replicas) > count(old.updated_replicas)
        || new_old < old_old
        || count(new.ready_replicas) > count(old.ready_replicas)
        || count(new.available_replicas) > count(old.available_replicas)
}

/// Whether the rollout has shown no progress for `progressDeadlineSeconds` since the
/// Progressing condition was last updated, or has timed out already (upstream's
/// `DeploymentTimedOut`).
pub fn deployment_timed_out(d: &Deployment, status: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(condition) = get_condition(Some(status), PROGRESSING) else {
        return false;
    };
    match condition.reason.as_deref() {
        // A finished rollout is not estimated again until a new one starts.
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => {
            let Some(from) = condition.last_update_time.as_ref() else {
                return false;
            };
            let due = from
                .0
                .checked_add(jiff::SignedDuration::from_secs(i64::from(deadline)))
                .unwrap_or(Timestamp::MAX);
            due < now
        }
    }
}

/// The status after a rollout step (upstream's `syncRolloutStatus`): counts, Available,
/// and Progressing moved to complete, progressing or timed out, plus the ReplicaSets'
/// ReplicaFailure condition.
pub fn rollout_status(
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    d: &Deployment,
    now: Timestamp,
) -> DeploymentStatus {
    let mut status = calculate_status(all, new, d, now);
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let new_name = new.and_then(|rs| rs.metadata.name.as_deref());
    if !has_progress_deadline(d) {
        remove_condition(&mut status, PROGRESSING);
    }
    let current = get_condition(d.status.as_ref(), PROGRESSING);
    let complete_before = count(status.replicas) == count(status.updated_replicas)
        && current.is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE));
    if has_progress_deadline(d) && !complete_before {
        if deployment_complete(d, Some(&status)) {
            let message = match new_name {
                Some(rs) => format!("ReplicaSet {rs:?} has successfully progressed."),
                None => format!("Deployment {name:?} has successfully progressed."),
            };
            set_condition(
                &mut status,
                new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE, message, now),
            );
        } else if deployment_progressing(d, &status) {
            let message = match new_name {
                Some(rs) => format!("ReplicaSet {rs:?} is progressing."),
                None => format!("Deployment {name:?} is progressing."),
            };
            // Progress moves lastUpdateTime even when the reason stays, so this replaces
            // the condition instead of going through set_condition.
            let mut condition =
                new_condition(PROGRESSING, "True", REPLICA_SET_UPDATED, message, now);
            if let Some(current) = current {
                if current.status == "True" {
                    condition.last_transition_time = current.last_transition_time.clone();
                }
                remove_condition(&mut status, PROGRESSING);
            }
            set_condition(&mut status, condition);
        } else if deployment_timed_out(d, &status, now) {
            let message = match new_name {
                Some(rs) => format!("ReplicaSet {rs:?} has timed out progressing."),
                None => format!("Deployment {name:?} has timed out progressing."),
            };
            set_condition(
                &mut status,
                new_condition(PROGRESSING, "False", TIMED_OUT, message, now),
            );
        }
    }
    match replica_failure(all, new) {
        Some(failure) => set_condition(&mut status, failure),
        None => remove_condition(&mut status, REPLICA_FAILURE),
    }
    normalized(Some(&status))
}

/// The first ReplicaFailure condition of the new ReplicaSet, else of any ReplicaSet, as a
/// Deployment condition.
fn replica_failure(all: &[&ReplicaSet], new: Option<&ReplicaSet>) -> Option<DeploymentCondition> {
    let failure = |rs: &ReplicaSet| {
        rs.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == REPLICA_FAILURE)
            .map(|c| DeploymentCondition {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_update_time: c.last_transition_time.clone(),
                last_transition_time: c.last_transition_time.clone(),
            })
    };
    new.and_then(failure)
        .or_else(|| all.iter().find_map(|rs| failure(rs)))
}

/// When to look at a rollout again to see whether it missed its deadline (upstream's
/// `requeueStuckDeployment`): `None` without a deadline, a Progressing condition, or once
/// complete or timed out.
pub fn requeue_after(d: &Deployment, new: &DeploymentStatus, now: Timestamp) -> Option<Duration> {
    let deadline = progress_deadline(d)?;
    let current = get_condition(d.status.as_ref(), PROGRESSING)?;
    if deployment_complete(d, Some(new)) || current.reason.as_deref() == Some(TIMED_OUT) {
        return None;
    }
    let from = current.last_update_time.as_ref()?.0;
    let due = from
        .checked_add(jiff::SignedDuration::from_secs(i64::from(deadline)))
        .unwrap_or(Timestamp::MAX);
    let left = Duration::try_from(due.duration_since(now)).unwrap_or(Duration::ZERO);
    // A second more, as upstream, so the check lands after the deadline, not on it.
    Some(left + Duration::from_secs(1))
}

/// The status with the Progressing condition set to paused or resumed when `spec.paused`
/// changed (upstream's `checkPausedConditions`); `None` when nothing changes. A timed-out
/// condition is kept.
pub fn paused_status(d: &Deployment, now: Timestamp) -> Option<DeploymentStatus> {
    if !has_progress_deadline(d) {
        return None;
    }
    let current = get_condition(d.status.as_ref(), PROGRESSING);
    let reason = current.and_then(|c| c.reason.as_deref());
    if reason == Some(TIMED_OUT) {
        return None;
    }
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    let condition = match (paused, reason == Some(PAUSED)) {
        (true, false) => new_condition(
            PROGRESSING,
            "Unknown",
            PAUSED,
            "Deployment is paused".into(),
            now,
        ),
        (false, true) => new_condition(
            PROGRESSING,
            "Unknown",
            RESUMED,
            "Deployment is resumed".into(),
            now,
        ),
        _ => return None,
    };
    let mut status = d.status.clone().unwrap_or_default();
    set_condition(&mut status, condition);
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::deployment::tests::{deployment, rolling, rs};

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn reason(status: &DeploymentStatus, type_: &str) -> Option<String> {
        get_condition(Some(status), type_).and_then(|c| c.reason.clone())
    }

    #[test]
    fn conditions_keep_transition_time_when_only_the_reason_changes() {
        let mut status = DeploymentStatus::default();
        let t0 = at("2026-01-01T00:00:00Z");
        let t1 = at("2026-01-01T00:01:00Z");
        set_condition(
            &mut status,
            new_condition(PROGRESSING, "True", NEW_REPLICA_SET, "a".into(), t0),
        );
        set_condition(
            &mut status,
            new_condition(PROGRESSING, "True", NEW_REPLICA_SET, "b".into(), t1),
        );
        let c = get_condition(Some(&status), PROGRESSING).unwrap();
        assert_eq!(
            c.message.as_deref(),
            Some("a"),
            "same status and reason: kept"
        );
        set_condition(
            &mut status,
            new_condition(PROGRESSING, "True", REPLICA_SET_UPDATED, "c".into(), t1),
        );
        let c = get_condition(Some(&status), PROGRESSING).unwrap();
        assert_eq!(c.last_transition_time, Some(Time(t0)));
        assert_eq!(c.last_update_time, Some(Time(t1)));
        set_condition(
            &mut status,
            new_condition(PROGRESSING, "False", TIMED_OUT, "d".into(), t1),
        );
        let c = get_condition(Some(&status), PROGRESSING).unwrap();
        assert_eq!(c.last_transition_time, Some(Time(t1)));
        assert_eq!(status.conditions.as_ref().unwrap().len(), 1);
        remove_condition(&mut status, PROGRESSING);
        assert!(get_condition(Some(&status), PROGRESSING).is_none());
    }

    #[test]
    fn status_sums_the_replica_sets_and_sets_availability() {
        let mut d = rolling(deployment("web", 4), "1", "1");
        d.metadata.generation = Some(3);
        let old = rs("web-old", 3, 3, "2026-01-01T00:00:00Z");
        let mut new = rs("web-new", 2, 1, "2026-01-01T00:01:00Z");
        new.status.as_mut().unwrap().replicas = 2;
        let now = at("2026-01-01T00:02:00Z");
        let s = calculate_status(&[&old, &new], Some(&new), &d, now);
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.replicas, Some(5));
        assert_eq!(s.updated_replicas, Some(2));
        assert_eq!(s.available_replicas, Some(4));
        assert_eq!(s.unavailable_replicas, Some(1));
        assert_eq!(
            reason(&s, AVAILABLE).as_deref(),
            Some(MINIMUM_REPLICAS_AVAILABLE)
        );
        let s = calculate_status(&[&new], Some(&new), &d, now);
        assert_eq!(
            reason(&s, AVAILABLE).as_deref(),
            Some(MINIMUM_REPLICAS_UNAVAILABLE)
        );
        assert_eq!(s.ready_replicas, Some(1));
        let empty = calculate_status(&[], None, &deployment("web", 0), now);
        assert_eq!(
            (empty.replicas, empty.updated_replicas),
            (None, None),
            "zeros are absent"
        );
    }

    #[test]
    fn rollouts_progress_complete_and_time_out() {
        let t0 = at("2026-01-01T00:00:00Z");
        let mut d = deployment("web", 2);
        d.metadata.generation = Some(1);
        d.spec.as_mut().unwrap().progress_deadline_seconds = Some(5);
        let mut status = DeploymentStatus::default();
        set_condition(
            &mut status,
            new_condition(PROGRESSING, "True", NEW_REPLICA_SET, "created".into(), t0),
        );
        d.status = Some(status);

        // Pods appear: progress moves lastUpdateTime but not the transition.
        let mut new = rs("web-new", 2, 0, "2026-01-01T00:00:00Z");
        new.status.as_mut().unwrap().replicas = 2;
        let t1 = at("2026-01-01T00:00:02Z");
        let s = rollout_status(&[&new], Some(&new), &d, t1);
        let c = get_condition(Some(&s), PROGRESSING).unwrap();
        assert_eq!(c.reason.as_deref(), Some(REPLICA_SET_UPDATED));
        assert_eq!(
            c.message.as_deref(),
            Some("ReplicaSet \"web-new\" is progressing.")
        );
        assert_eq!(c.last_update_time, Some(Time(t1)));
        assert_eq!(c.last_transition_time, Some(Time(t0)));
        d.status = Some(s.clone());

        // Nothing moves: not yet past the deadline, look again a second after it.
        let t2 = at("2026-01-01T00:00:04Z");
        let s = rollout_status(&[&new], Some(&new), &d, t2);
        assert_eq!(s, normalized(d.status.as_ref()), "no change, no write");
        assert_eq!(requeue_after(&d, &s, t2), Some(Duration::from_secs(4)));

        // Past the deadline: timed out, and no more requeues.
        let t3 = at("2026-01-01T00:00:08Z");
        let s = rollout_status(&[&new], Some(&new), &d, t3);
        assert_eq!(reason(&s, PROGRESSING).as_deref(), Some(TIMED_OUT));
        assert_eq!(
            get_condition(Some(&s), PROGRESSING).unwrap().status,
            "False"
        );
        let mut timed_out = d.clone();
        timed_out.status = Some(s.clone());
        assert_eq!(requeue_after(&timed_out, &s, t3), None);

        // The pods become available: complete.
        new.status.as_mut().unwrap().available_replicas = Some(2);
        new.status.as_mut().unwrap().ready_replicas = Some(2);
        let s = rollout_status(&[&new], Some(&new), &timed_out, t3);
        assert_eq!(reason(&s, PROGRESSING).as_deref(), Some(NEW_RS_AVAILABLE));
        assert!(deployment_complete(&d, Some(&s)));
        assert_eq!(requeue_after(&d, &s, t3), None);
    }

    #[test]
    fn without_a_deadline_there_is_no_progressing_condition() {
        let mut d = deployment("web", 1);
        d.spec.as_mut().unwrap().progress_deadline_seconds = Some(i32::MAX);
        let mut status = DeploymentStatus::default();
        set_condition(
            &mut status,
            new_condition(
                PROGRESSING,
                "True",
                NEW_REPLICA_SET,
                "x".into(),
                at("2026-01-01T00:00:00Z"),
            ),
        );
        d.status = Some(status);
        let new = rs("web-new", 1, 1, "2026-01-01T00:00:00Z");
        let s = rollout_status(&[&new], Some(&new), &d, at("2026-01-01T00:00:01Z"));
        assert!(get_condition(Some(&s), PROGRESSING).is_none());
        assert!(paused_status(&d, at("2026-01-01T00:00:01Z")).is_none());
    }

    #[test]
    fn pausing_and_resuming_set_progressing_unknown() {
        let now = at("2026-01-01T00:00:00Z");
        let mut d = deployment("web", 1);
        assert!(paused_status(&d, now).is_none(), "not paused, never was");
        d.spec.as_mut().unwrap().paused = Some(true);
        let s = paused_status(&d, now).unwrap();
        assert_eq!(reason(&s, PROGRESSING).as_deref(), Some(PAUSED));
        assert_eq!(
            get_condition(Some(&s), PROGRESSING).unwrap().status,
            "Unknown"
        );
        d.status = Some(s);
        assert!(paused_status(&d, now).is_none(), "already paused");
        d.spec.as_mut().unwrap().paused = Some(false);
        let s = paused_status(&d, now).unwrap();
        assert_eq!(reason(&s, PROGRESSING).as_deref(), Some(RESUMED));

        let mut timed_out = DeploymentStatus::default();
        set_condition(
            &mut timed_out,
            new_condition(PROGRESSING, "False", TIMED_OUT, "x".into(), now),
        );
        d.status = Some(timed_out);
        d.spec.as_mut().unwrap().paused = Some(true);
        assert!(paused_status(&d, now).is_none(), "a timeout is kept");
    }

    #[test]
    fn replica_failures_are_copied_from_the_new_replica_set_first() {
        use k8s_openapi::api::apps::v1::ReplicaSetCondition;
        let d = deployment("web", 1);
        let failing = |name: &str, message: &str| {
            let mut r = rs(name, 1, 0, "2026-01-01T00:00:00Z");
            r.status.as_mut().unwrap().conditions = Some(vec![ReplicaSetCondition {
                type_: REPLICA_FAILURE.into(),
                status: "True".into(),
                reason: Some("FailedCreate".into()),
                message: Some(message.into()),
                last_transition_time: None,
            }]);
            r
        };
        let old = failing("old", "old failed");
        let new = failing("new", "new failed");
        let now = at("2026-01-01T00:00:00Z");
        let s = rollout_status(&[&old, &new], Some(&new), &d, now);
        let c = get_condition(Some(&s), REPLICA_FAILURE).unwrap();
        assert_eq!(c.message.as_deref(), Some("new failed"));
        let fine = rs("new", 1, 1, "2026-01-01T00:00:00Z");
        let s = rollout_status(&[&fine], Some(&fine), &d, now);
        assert!(get_condition(Some(&s), REPLICA_FAILURE).is_none());
    }
}
