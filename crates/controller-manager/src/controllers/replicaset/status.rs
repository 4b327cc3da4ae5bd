//! A ReplicaSet's status from the pods it owns (upstream's `calculateStatus` and the
//! comparison in `updateReplicaSetStatus`): how many replicas exist, carry every template
//! label, are ready, and are available (ready for `minReadySeconds`), and a `ReplicaFailure`
//! condition while creating or deleting pods fails.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::pods;

/// The condition type set while pods cannot be created or deleted.
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

/// The replicas the ReplicaSet asks for (`spec.replicas`, 1 when unset as the API defaults).
pub fn desired_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0)
}

/// `spec.minReadySeconds`.
pub fn min_ready_seconds(rs: &ReplicaSet) -> i32 {
    rs.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

/// Zero reads as absent, as the Go types' `omitempty` writes it.
fn count(n: usize) -> Option<i32> {
    let n = i32::try_from(n).unwrap_or(i32::MAX);
    (n != 0).then_some(n)
}

/// The status `rs` should have with `owned` as its active pods at `now`. `failure` is the
/// error of this sync's pod creations or deletions, if any: it sets the `ReplicaFailure`
/// condition (unless one is set already), and its absence clears it.
/// `observedGeneration` is left as it was; [`differs`] and the writer deal with it.
pub fn calculate(
    rs: &ReplicaSet,
    owned: &[Arc<Pod>],
    failure: Option<&str>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let mut status = rs.status.clone().unwrap_or_default();
    let template_labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready = min_ready_seconds(rs);
    let (mut fully_labeled, mut ready, mut available) = (0, 0, 0);
    for pod in owned {
        let labels = pod.metadata.labels.as_ref();
        if template_labels
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        {
            fully_labeled += 1;
        }
        if pods::is_ready(pod) {
            ready += 1;
            if pods::is_available(pod, min_ready, now) {
                available += 1;
            }
        }
    }

    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let has_failure = conditions.iter().any(|c| c.type_ == REPLICA_FAILURE);
    match failure {
        Some(message) if !has_failure => {
            let want = desired_replicas(rs);
            let have = i32::try_from(owned.len()).unwrap_or(i32::MAX);
            let reason = match have.cmp(&want) {
                std::cmp::Ordering::Less => "FailedCreate",
                std::cmp::Ordering::Greater => "FailedDelete",
                std::cmp::Ordering::Equal => "",
            };
            conditions.push(ReplicaSetCondition {
                type_: REPLICA_FAILURE.into(),
                status: "True".into(),
                reason: Some(reason.into()).filter(|r: &String| !r.is_empty()),
                message: Some(message.into()),
                last_transition_time: Some(Time(now)),
            });
        }
        None if has_failure => conditions.retain(|c| c.type_ != REPLICA_FAILURE),
        _ => {}
    }
    if status.conditions.as_ref().is_some_and(Vec::is_empty) {
        status.conditions = None;
    }

    status.replicas = i32::try_from(owned.len()).unwrap_or(i32::MAX);
    status.fully_labeled_replicas = count(fully_labeled);
    status.ready_replicas = count(ready);
    status.available_replicas = count(available);
    status
}

/// Whether `new` differs from what `rs` reports, or `rs`'s status has not observed its
/// current generation: only then is a status write due.
pub fn differs(rs: &ReplicaSet, new: &ReplicaSetStatus) -> bool {
    let old = rs.status.clone().unwrap_or_default();
    let n = |v: Option<i32>| v.unwrap_or(0);
    let conditions = |s: &ReplicaSetStatus| s.conditions.clone().unwrap_or_default();
    old.replicas != new.replicas
        || n(old.fully_labeled_replicas) != n(new.fully_labeled_replicas)
        || n(old.ready_replicas) != n(new.ready_replicas)
        || n(old.available_replicas) != n(new.available_replicas)
        || rs.metadata.generation.unwrap_or(0) != old.observed_generation.unwrap_or(0)
        || conditions(&old) != conditions(new)
}

/// How long until the next of `owned` that is ready but not yet available becomes
/// available, if any: the ReplicaSet is synced again then to count it.
pub fn next_availability_check(
    owned: &[Arc<Pod>],
    min_ready_seconds: i32,
    now: Timestamp,
) -> Option<Duration> {
    if min_ready_seconds <= 0 {
        return None;
    }
    let min_ready = jiff::SignedDuration::from_secs(i64::from(min_ready_seconds));
    owned
        .iter()
        .filter(|p| !pods::is_available(p, min_ready_seconds, now))
        .filter_map(|p| pods::ready_since(p))
        .filter_map(|since| since.checked_add(min_ready).ok())
        .map(|at| {
            let left = at.duration_since(now);
            Duration::try_from(left).unwrap_or(Duration::ZERO)
        })
        .min()
        // A check due now (clock skew, rounding) still waits a moment rather than spinning.
        .map(|d| d.max(Duration::from_millis(100)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + second).unwrap()
    }

    fn rs(replicas: i32, min_ready: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                generation: Some(3),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: Some(min_ready),
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(
                            [
                                ("app".to_string(), "web".to_string()),
                                ("tier".to_string(), "fe".to_string()),
                            ]
                            .into(),
                        ),
                        ..Default::default()
                    }),
                    spec: None,
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// A pod with `labels` (k=v pairs), ready since `ready_since` seconds, if given.
    fn pod(labels: &[(&str, &str)], ready_since: Option<i64>) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            conditions: ready_since.map(|s| {
                vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(at(s))),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        Arc::new(p)
    }

    const FULL: &[(&str, &str)] = &[("app", "web"), ("tier", "fe")];

    #[test]
    fn counts_replicas_labels_readiness_and_availability() {
        let rs = rs(4, 10);
        let owned = [
            pod(FULL, Some(0)),           // ready 20 s: available
            pod(FULL, Some(15)),          // ready 5 s: not yet available
            pod(&[("app", "web")], None), // not fully labeled, not ready
            pod(FULL, None),
        ];
        let status = calculate(&rs, &owned, None, at(20));
        assert_eq!(status.replicas, 4);
        assert_eq!(status.fully_labeled_replicas, Some(3));
        assert_eq!(status.ready_replicas, Some(2));
        assert_eq!(status.available_replicas, Some(1));
        assert_eq!(status.conditions, None);

        assert_eq!(
            next_availability_check(&owned, 10, at(20)),
            Some(Duration::from_secs(5)),
            "the pod ready since 15 s becomes available at 25 s"
        );
        assert_eq!(next_availability_check(&owned, 0, at(20)), None);
        assert_eq!(
            next_availability_check(&owned[..1], 10, at(20)),
            None,
            "all available"
        );
    }

    #[test]
    fn zero_counts_are_omitted_like_upstream() {
        let status = calculate(&rs(0, 0), &[], None, at(0));
        assert_eq!(status.replicas, 0);
        assert_eq!(
            (
                status.ready_replicas,
                status.available_replicas,
                status.fully_labeled_replicas
            ),
            (None, None, None)
        );
    }

    #[test]
    fn a_failure_sets_the_replica_failure_condition_once_and_success_clears_it() {
        let mut rs = rs(3, 0);
        let owned = [pod(FULL, Some(0))];
        let failed = calculate(
            &rs,
            &owned,
            Some("pods \"web-x\" is forbidden: exceeded quota"),
            at(5),
        );
        let cond = &failed.conditions.as_ref().expect("a condition")[0];
        assert_eq!(cond.type_, REPLICA_FAILURE);
        assert_eq!(cond.status, "True");
        assert_eq!(cond.reason.as_deref(), Some("FailedCreate"));
        assert!(
            cond.message
                .as_deref()
                .unwrap_or_default()
                .contains("exceeded quota")
        );

        // The next failure keeps the condition as it was (same transition time).
        rs.status = Some(failed.clone());
        let again = calculate(&rs, &owned, Some("another error"), at(9));
        assert_eq!(again.conditions, failed.conditions);

        // A sync without failure removes it.
        let ok = calculate(&rs, &owned, None, at(12));
        assert_eq!(ok.conditions, None);

        // Too many pods and a failure: FailedDelete.
        let rs = self::rs(0, 0);
        let failed = calculate(&rs, &owned, Some("boom"), at(5));
        assert_eq!(
            failed.conditions.unwrap()[0].reason.as_deref(),
            Some("FailedDelete")
        );
    }

    #[test]
    fn a_write_is_due_only_when_something_changed() {
        let mut rs = rs(1, 0);
        let owned = [pod(FULL, Some(0))];
        let mut status = calculate(&rs, &owned, None, at(1));
        assert!(differs(&rs, &status), "no status yet");
        status.observed_generation = rs.metadata.generation;
        rs.status = Some(status.clone());
        let again = calculate(&rs, &owned, None, at(100));
        assert!(!differs(&rs, &again), "same counts, same generation");

        rs.metadata.generation = Some(4);
        assert!(
            differs(&rs, &again),
            "a new generation is observed even with equal counts"
        );
        rs.metadata.generation = Some(3);
        let fewer = calculate(&rs, &[], None, at(100));
        assert!(differs(&rs, &fewer));
    }
}
