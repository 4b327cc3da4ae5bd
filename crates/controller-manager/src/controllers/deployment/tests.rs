//! Fixtures for the deployment controller's unit tests, and rollouts simulated end to end
//! over the pure decisions: the controller's steps alternate with a model of the
//! ReplicaSet controller and kubelets, and the surge and availability bounds are checked
//! after every step.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, ReplicaSet, ReplicaSetSpec, ReplicaSetStatus,
    RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;

use super::replicas::{
    active, deployment_replicas, max_surge, max_unavailable, rs_available, rs_replicas,
};
use super::rolling::{new_replica_set_target, old_replica_set_targets};
use super::sync::scaling_plan;

fn labels(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), app.to_string())])
}

/// A pod template of one container `app` running `image`, labelled `app=web`.
pub fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels("web")),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some(image.into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

/// A Deployment as the apiserver defaults it: RollingUpdate 25%/25%, 10 revisions, 600 s
/// deadline, selecting `app=web`, template `registry.local/app:v1`.
pub fn deployment(name: &str, replicas: i32) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            generation: Some(1),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels("web")),
                ..Default::default()
            },
            template: template("registry.local/app:v1"),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".into())),
                    max_unavailable: Some(IntOrString::String("25%".into())),
                }),
            }),
            revision_history_limit: Some(10),
            progress_deadline_seconds: Some(600),
            ..Default::default()
        }),
        status: None,
    }
}

fn int_or_percent(s: &str) -> IntOrString {
    match s.parse() {
        Ok(n) => IntOrString::Int(n),
        Err(_) => IntOrString::String(s.into()),
    }
}

/// `d` with maxSurge and maxUnavailable set (`"1"` is an int, `"25%"` a percentage).
pub fn rolling(mut d: Deployment, surge: &str, unavailable: &str) -> Deployment {
    if let Some(strategy) = d.spec.as_mut().and_then(|s| s.strategy.as_mut()) {
        strategy.rolling_update = Some(RollingUpdateDeployment {
            max_surge: Some(int_or_percent(surge)),
            max_unavailable: Some(int_or_percent(unavailable)),
        });
    }
    d
}

/// A ReplicaSet of `replicas` pods, `available` of them available (and ready), created at
/// `created`, with the v1 template and its last change observed.
pub fn rs(name: &str, replicas: i32, available: i32, created: &str) -> ReplicaSet {
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            generation: Some(1),
            creation_timestamp: created.parse().ok().map(Time),
            labels: Some(labels("web")),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels("web")),
                ..Default::default()
            },
            template: Some(template("registry.local/app:v1")),
            ..Default::default()
        }),
        status: Some(ReplicaSetStatus {
            replicas,
            available_replicas: Some(available),
            ready_replicas: Some(available),
            observed_generation: Some(1),
            ..Default::default()
        }),
    }
}

fn set_size(rs: &mut ReplicaSet, n: i32) {
    if let Some(spec) = rs.spec.as_mut() {
        spec.replicas = Some(n);
    }
}

fn set_available(rs: &mut ReplicaSet, n: i32) {
    let size = rs_replicas(rs);
    if let Some(status) = rs.status.as_mut() {
        status.replicas = size;
        status.available_replicas = Some(n);
        status.ready_replicas = Some(n);
    }
}

/// A rolling update from a fully available old ReplicaSet: the controller's steps (one
/// resize per reconcile, as `rollout_rolling`) alternate with pods coming and going.
/// `ready_per_round[i]` new pods become available in round `i` (1 once it runs out).
/// Returns the number of rounds, or the first bound broken.
fn simulate_rollout(
    d: &Deployment,
    ready_per_round: &[i32],
    rounds: usize,
) -> Result<usize, String> {
    let replicas = deployment_replicas(d);
    let old = rs("web-old", replicas, replicas, "2026-01-01T00:00:00Z");
    let new = rs("web-new", 0, 0, "2026-01-01T00:01:00Z");
    simulate_rollout_from(d, old, new, ready_per_round, rounds)
}

/// [`simulate_rollout`] from a given old and new ReplicaSet.
fn simulate_rollout_from(
    d: &Deployment,
    mut old: ReplicaSet,
    mut new: ReplicaSet,
    ready_per_round: &[i32],
    rounds: usize,
) -> Result<usize, String> {
    let replicas = deployment_replicas(d);
    let (surge, unavailable) = (max_surge(d), max_unavailable(d));
    for round in 0..rounds {
        // The controller.
        let target = new_replica_set_target(d, &[&old, &new], &new).map_err(|e| e.to_string())?;
        let mut acted = false;
        if let Some(n) = target {
            set_size(&mut new, n);
            acted = true;
        } else {
            let active_old = active(&[&old]);
            for (_, n) in old_replica_set_targets(d, &[&old, &new], &active_old, &new) {
                set_size(&mut old, n);
                acted = true;
            }
        }
        let total = rs_replicas(&old) + rs_replicas(&new);
        if total > replicas + surge {
            return Err(format!(
                "round {round}: {total} replicas over {replicas} + {surge}"
            ));
        }
        // Old pods are deleted (the unavailable first), new pods start unavailable.
        let old_available = rs_available(&old).min(rs_replicas(&old));
        set_available(&mut old, old_available);
        let floor = old_available + rs_available(&new).min(rs_replicas(&new));
        if floor < replicas - unavailable {
            return Err(format!(
                "round {round}: {floor} available under {replicas} - {unavailable}"
            ));
        }
        if !acted
            && rs_replicas(&old) == 0
            && rs_replicas(&new) == replicas
            && rs_available(&new) == replicas
        {
            return Ok(round);
        }
        let ready = ready_per_round.get(round).copied().unwrap_or(1);
        let new_available = (rs_available(&new) + ready).min(rs_replicas(&new));
        set_available(&mut new, new_available);
    }
    Err(format!(
        "not done after {rounds} rounds: old {}, new {} ({} available)",
        rs_replicas(&old),
        rs_replicas(&new),
        rs_available(&new)
    ))
}

#[test]
fn a_rolling_update_of_four_with_surge_one_unavailable_one() {
    let d = rolling(deployment("web", 4), "1", "1");
    let rounds = simulate_rollout(&d, &[], 100).unwrap();
    assert!(rounds > 2, "rolled out in steps, took {rounds}");
}

#[test]
fn a_stuck_rollout_keeps_the_old_replicas_available() {
    // New pods never become available: the old ReplicaSet keeps replicas - maxUnavailable.
    let d = rolling(deployment("web", 4), "1", "1");
    let err = simulate_rollout(&d, &[0; 50], 50).unwrap_err();
    assert!(err.starts_with("not done"), "{err}");
    assert!(err.contains("old 3, new 2 (0 available)"), "{err}");
}

#[test]
fn surge_zero_and_unavailable_zero_still_roll_out() {
    // Percentages that round to zero: one pod may be unavailable (fenceposts).
    let d = rolling(deployment("web", 3), "0%", "10%");
    simulate_rollout(&d, &[], 100).unwrap();
}

#[test]
fn scaled_mid_rollout_proportionally_then_the_rollout_completes() {
    // Upstream's example: 10 replicas, surge 3, unavailable 2, mid-rollout with 8 old and
    // 5 new (13 = 10 + 3); scaled to 20 while paused, 23 = 20 + 3 are allowed: the 10
    // more are spread 8:5, the remainder to the larger.
    let mut d = rolling(deployment("web", 10), "3", "2");
    let mut old = rs("web-old", 8, 8, "2026-01-01T00:00:00Z");
    let mut new = rs("web-new", 5, 5, "2026-01-01T00:01:00Z");
    for r in [&mut old, &mut new] {
        super::history::set_replicas_annotations(r, 10, 13);
    }
    d.spec.as_mut().unwrap().replicas = Some(20);
    d.spec.as_mut().unwrap().paused = Some(true);
    for step in scaling_plan(&d, Some(&new), &[&old]) {
        let target = if step.name == "web-old" {
            &mut old
        } else {
            &mut new
        };
        set_size(target, step.replicas);
        super::history::set_replicas_annotations(target, 20, 23);
    }
    assert_eq!((rs_replicas(&old), rs_replicas(&new)), (14, 9));
    // The added pods come up while paused; then the Deployment is resumed.
    for r in [&mut old, &mut new] {
        let n = rs_replicas(r);
        set_available(r, n);
    }
    d.spec.as_mut().unwrap().paused = Some(false);
    simulate_rollout_from(&d, old, new, &[], 200).unwrap();
}

proptest! {
    #[test]
    fn rolling_updates_respect_surge_and_availability(
        replicas in 1i32..=12,
        surge in 0i32..=4,
        unavailable in 0i32..=4,
        percent in any::<bool>(),
        ready in proptest::collection::vec(0i32..=3, 0..40),
    ) {
        let (surge, unavailable) = if percent {
            (format!("{}%", surge * 20), format!("{}%", unavailable * 20))
        } else {
            (surge.to_string(), unavailable.to_string())
        };
        let d = rolling(deployment("web", replicas), &surge, &unavailable);
        let result = simulate_rollout(&d, &ready, 400);
        prop_assert!(result.is_ok(), "{:?} with surge {} unavailable {}", result, surge, unavailable);
    }
}
