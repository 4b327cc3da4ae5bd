//! Unit tests of the StatefulSet decisions: identity, ordinal order, scale down, rollout with
//! partition, and status.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec, StatefulSetStatus, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, Pod, PodCondition, PodSpec, PodStatus, PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};

use super::control::{self, Inputs, Revision, Step};
use super::identity;
use super::*;

fn now() -> Timestamp {
    "2026-01-01T00:10:00Z".parse().unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(&[("app", "web")])),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some(image.into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

fn set(replicas: i32, policy: &str) -> StatefulSet {
    StatefulSet {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("set-uid".into()),
            generation: Some(1),
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            pod_management_policy: Some(policy.into()),
            service_name: Some("nginx".into()),
            selector: LabelSelector {
                match_labels: Some(labels(&[("app", "web")])),
                ..Default::default()
            },
            template: template("app:v1"),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: None,
            }),
            ..Default::default()
        }),
        status: None,
    }
}

fn with_partition(mut s: StatefulSet, partition: i32) -> StatefulSet {
    s.spec.as_mut().unwrap().update_strategy = Some(StatefulSetUpdateStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateStatefulSetStrategy {
            partition: Some(partition),
            max_unavailable: None,
        }),
    });
    s
}

/// A pod of the set at `revision`, in `phase`, ready or not.
fn pod(s: &StatefulSet, ordinal: i32, revision: &str, phase: &str, ready: bool) -> Arc<Pod> {
    let mut p = identity::new_pod(s, &template("app:v1"), ordinal, revision);
    p.metadata.uid = Some(format!("uid-{ordinal}"));
    p.status = Some(PodStatus {
        phase: Some(phase.into()),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: if ready { "True" } else { "False" }.into(),
            last_transition_time: Some(Time("2026-01-01T00:00:00Z".parse().unwrap())),
            ..Default::default()
        }]),
        ..Default::default()
    });
    Arc::new(p)
}

fn healthy(s: &StatefulSet, ordinal: i32, revision: &str) -> Arc<Pod> {
    pod(s, ordinal, revision, "Running", true)
}

fn terminating(p: &Arc<Pod>) -> Arc<Pod> {
    let mut p = (**p).clone();
    p.metadata.deletion_timestamp = Some(Time(now()));
    Arc::new(p)
}

fn plan_for(s: &StatefulSet, pods: &[Arc<Pod>]) -> control::Plan {
    let current = template("app:v1");
    let update = template("app:v2");
    let inputs = Inputs {
        set: s,
        current: Revision {
            name: "web-v1",
            template: &current,
        },
        update: Revision {
            name: "web-v2",
            template: &update,
        },
        pods,
        now: now(),
    };
    control::plan(&inputs, |_| false)
}

/// The steps as short strings: `create web-0@web-v1`, `delete web-2 (Update)`, ...
fn steps(plan: &control::Plan) -> Vec<String> {
    plan.steps()
        .map(|s| match s {
            Step::Create(p) => format!(
                "create {}@{}",
                p.metadata.name.as_deref().unwrap(),
                identity::revision_of(p)
            ),
            Step::CreateClaims(p) => format!("claims {}", p.metadata.name.as_deref().unwrap()),
            Step::FixIdentity(p) => format!("identity {}", p.metadata.name.as_deref().unwrap()),
            Step::Delete(p, why) => {
                format!("delete {} ({why:?})", p.metadata.name.as_deref().unwrap())
            }
        })
        .collect()
}

#[test]
fn ordinals_come_from_the_trailing_number() {
    assert_eq!(identity::parent_and_ordinal("web-0"), Some(("web", 0)));
    assert_eq!(
        identity::parent_and_ordinal("my-web-12"),
        Some(("my-web", 12))
    );
    assert_eq!(identity::parent_and_ordinal("web"), None);
    assert_eq!(identity::parent_and_ordinal("web-"), None);
    assert_eq!(identity::parent_and_ordinal("web-x1"), None);
    assert_eq!(
        identity::parent_and_ordinal("web-99999999999"),
        None,
        "beyond int32"
    );
    let s = set(3, "OrderedReady");
    let mut other = (*healthy(&s, 0, "r")).clone();
    other.metadata.name = Some("webx-0".into());
    assert!(!identity::is_member_of(&s, &other));
    assert!(identity::is_member_of(&s, &healthy(&s, 7, "r")));
}

#[test]
fn new_pods_have_a_stable_identity() {
    let mut s = set(3, "OrderedReady");
    s.spec.as_mut().unwrap().volume_claim_templates = Some(vec![PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("www".into()),
            ..Default::default()
        },
        ..Default::default()
    }]);
    let p = identity::new_pod(&s, &template("app:v1"), 2, "web-abc");
    assert_eq!(p.metadata.name.as_deref(), Some("web-2"));
    assert_eq!(p.metadata.generate_name, None);
    let l = p.metadata.labels.clone().unwrap();
    assert_eq!(l["statefulset.kubernetes.io/pod-name"], "web-2");
    assert_eq!(l["apps.kubernetes.io/pod-index"], "2");
    assert_eq!(l["controller-revision-hash"], "web-abc");
    assert_eq!(l["app"], "web");
    let spec = p.spec.clone().unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("web-2"));
    assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
    let volume = &spec.volumes.unwrap()[0];
    assert_eq!(volume.name, "www");
    assert_eq!(
        volume.persistent_volume_claim.as_ref().unwrap().claim_name,
        "www-web-2"
    );
    assert!(identity::identity_matches(&s, &p));
    assert!(identity::storage_matches(&s, &p));
    let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("StatefulSet", Some(true))
    );

    let claims = identity::claims_for(&s, 2);
    assert_eq!(claims[0].metadata.name.as_deref(), Some("www-web-2"));
    assert_eq!(claims[0].metadata.labels.as_ref().unwrap()["app"], "web");
    assert!(
        claims[0].metadata.owner_references.is_none(),
        "retained by default"
    );
    s.spec
        .as_mut()
        .unwrap()
        .persistent_volume_claim_retention_policy =
        Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
            when_deleted: Some("Delete".into()),
            when_scaled: Some("Retain".into()),
        });
    let owners = identity::claims_for(&s, 2)[0]
        .metadata
        .owner_references
        .clone()
        .unwrap();
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].controller),
        ("StatefulSet", None)
    );
    assert!(!identity::claims_deleted_on_scale_down(&s));

    let mut relabelled = p.clone();
    relabelled
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .remove("apps.kubernetes.io/pod-index");
    assert!(!identity::identity_matches(&s, &relabelled));
}

#[test]
fn ordered_ready_creates_one_pod_at_a_time_in_order() {
    let s = set(3, "OrderedReady");
    assert_eq!(steps(&plan_for(&s, &[])), ["create web-0@web-v2"]);
    let web0_pending = pod(&s, 0, "web-v2", "Pending", false);
    assert!(
        steps(&plan_for(&s, &[web0_pending])).is_empty(),
        "web-1 waits for web-0 to be Running and Ready"
    );
    let web0_running_unready = pod(&s, 0, "web-v2", "Running", false);
    assert!(steps(&plan_for(&s, &[web0_running_unready])).is_empty());
    let web0 = healthy(&s, 0, "web-v2");
    assert_eq!(
        steps(&plan_for(&s, std::slice::from_ref(&web0))),
        ["create web-1@web-v2"]
    );
    let web1 = healthy(&s, 1, "web-v2");
    assert_eq!(
        steps(&plan_for(&s, &[web0.clone(), web1.clone()])),
        ["create web-2@web-v2"]
    );
    // A gap is filled before anything above it.
    let web2 = healthy(&s, 2, "web-v2");
    assert_eq!(steps(&plan_for(&s, &[web0, web2])), ["create web-1@web-v2"]);
}

#[test]
fn parallel_creates_every_missing_pod_at_once() {
    let s = set(3, "Parallel");
    let plan = plan_for(&s, &[]);
    assert!(!plan.monotonic);
    assert_eq!(
        steps(&plan),
        [
            "create web-0@web-v2",
            "create web-1@web-v2",
            "create web-2@web-v2"
        ]
    );
    let web0 = pod(&s, 0, "web-v2", "Pending", false);
    assert_eq!(
        steps(&plan_for(&s, &[web0])),
        ["create web-1@web-v2", "create web-2@web-v2"],
        "no waiting for web-0"
    );
}

#[test]
fn a_huge_parallel_set_plans_a_bounded_batch() {
    let s = set(i32::MAX, "Parallel");
    // Pods at the start and far above it: the ones above are still visited.
    let pods = [
        healthy(&s, 0, "web-v2"),
        pod(&s, 1_000_000, "web-v2", "Failed", false),
    ];
    let plan = plan_for(&s, &pods);
    let got = steps(&plan);
    assert_eq!(got.len(), control::MAX_PLANNED_CREATES + 1);
    assert_eq!(got[0], "create web-1@web-v2");
    assert_eq!(
        got[control::MAX_PLANNED_CREATES - 1],
        format!("create web-{}@web-v2", control::MAX_PLANNED_CREATES)
    );
    assert_eq!(
        got[control::MAX_PLANNED_CREATES],
        "delete web-1000000 (Finished)"
    );
    assert!(plan.update.is_none(), "missing replicas hold the rollout");
}

#[test]
fn failed_pods_are_deleted_to_be_recreated() {
    let s = set(2, "OrderedReady");
    let failed = pod(&s, 0, "web-v2", "Failed", false);
    let web1 = healthy(&s, 1, "web-v2");
    assert_eq!(
        steps(&plan_for(&s, &[failed.clone(), web1.clone()])),
        ["delete web-0 (Finished)"]
    );
    assert!(
        steps(&plan_for(&s, &[terminating(&failed), web1])).is_empty(),
        "the replacement waits until the pod is gone"
    );
}

#[test]
fn scale_down_removes_the_highest_ordinal_first_one_at_a_time() {
    let s = set(1, "OrderedReady");
    let pods: Vec<_> = (0..3).map(|o| healthy(&s, o, "web-v2")).collect();
    assert_eq!(steps(&plan_for(&s, &pods)), ["delete web-2 (ScaleDown)"]);
    let waiting = [pods[0].clone(), pods[1].clone(), terminating(&pods[2])];
    assert!(
        steps(&plan_for(&s, &waiting)).is_empty(),
        "web-1 waits until web-2 is gone"
    );
    assert_eq!(
        steps(&plan_for(&s, &pods[..2])),
        ["delete web-1 (ScaleDown)"]
    );
    // An unhealthy replica blocks scale down.
    let broken = [pod(&s, 0, "web-v2", "Running", false), pods[1].clone()];
    assert!(steps(&plan_for(&s, &broken)).is_empty());

    let p = set(1, "Parallel");
    let pods: Vec<_> = (0..3).map(|o| healthy(&p, o, "web-v2")).collect();
    assert_eq!(
        steps(&plan_for(&p, &pods)),
        ["delete web-2 (ScaleDown)", "delete web-1 (ScaleDown)"]
    );
}

#[test]
fn rolling_update_goes_from_the_highest_ordinal_waiting_for_readiness() {
    let s = set(3, "OrderedReady");
    let old: Vec<_> = (0..3).map(|o| healthy(&s, o, "web-v1")).collect();
    let plan = plan_for(&s, &old);
    assert_eq!(steps(&plan), ["delete web-2 (Update)"]);
    assert_eq!(
        plan.counts.current, 2,
        "the deleted pod no longer counts as current"
    );

    // web-2 recreated at the update revision but not ready yet: wait.
    let mid = [
        old[0].clone(),
        old[1].clone(),
        pod(&s, 2, "web-v2", "Running", false),
    ];
    assert!(steps(&plan_for(&s, &mid)).is_empty());
    let mid = [old[0].clone(), old[1].clone(), healthy(&s, 2, "web-v2")];
    assert_eq!(steps(&plan_for(&s, &mid)), ["delete web-1 (Update)"]);
    let done: Vec<_> = (0..3).map(|o| healthy(&s, o, "web-v2")).collect();
    let plan = plan_for(&s, &done);
    assert!(steps(&plan).is_empty());
    assert_eq!(plan.counts.updated, 3);
}

#[test]
fn a_partition_keeps_lower_ordinals_at_the_current_revision() {
    let s = with_partition(set(3, "OrderedReady"), 1);
    let pods = [
        healthy(&s, 0, "web-v1"),
        healthy(&s, 1, "web-v1"),
        healthy(&s, 2, "web-v2"),
    ];
    assert_eq!(steps(&plan_for(&s, &pods)), ["delete web-1 (Update)"]);
    let pods = [
        healthy(&s, 0, "web-v1"),
        healthy(&s, 1, "web-v2"),
        healthy(&s, 2, "web-v2"),
    ];
    assert!(
        steps(&plan_for(&s, &pods)).is_empty(),
        "web-0 is below the partition"
    );
    // A pod below the partition is recreated at the current revision, above at the update.
    let missing = [healthy(&s, 1, "web-v2"), healthy(&s, 2, "web-v2")];
    assert_eq!(steps(&plan_for(&s, &missing)), ["create web-0@web-v1"]);
    let missing = [healthy(&s, 0, "web-v1"), healthy(&s, 2, "web-v2")];
    assert_eq!(steps(&plan_for(&s, &missing)), ["create web-1@web-v2"]);
}

#[test]
fn on_delete_leaves_old_pods_alone() {
    let mut s = set(2, "OrderedReady");
    s.spec.as_mut().unwrap().update_strategy = Some(StatefulSetUpdateStrategy {
        type_: Some("OnDelete".into()),
        rolling_update: None,
    });
    let old = [healthy(&s, 0, "web-v1"), healthy(&s, 1, "web-v1")];
    assert!(steps(&plan_for(&s, &old)).is_empty());
    // Without a rollingUpdate block, a pod recreated below the current count keeps the
    // current revision only with RollingUpdate; OnDelete recreates at the update revision.
    assert_eq!(steps(&plan_for(&s, &old[..1])), ["create web-1@web-v2"]);
}

#[test]
fn without_partition_recreated_pods_below_current_replicas_stay_current() {
    let mut s = set(3, "OrderedReady");
    s.status = Some(StatefulSetStatus {
        current_replicas: Some(2),
        ..Default::default()
    });
    let pods = [healthy(&s, 1, "web-v1"), healthy(&s, 2, "web-v2")];
    assert_eq!(steps(&plan_for(&s, &pods)), ["create web-0@web-v1"]);
}

#[test]
fn identity_is_restored_on_healthy_pods() {
    let s = set(1, "OrderedReady");
    let mut p = (*healthy(&s, 0, "web-v2")).clone();
    p.metadata
        .labels
        .as_mut()
        .unwrap()
        .remove("statefulset.kubernetes.io/pod-name");
    assert_eq!(steps(&plan_for(&s, &[Arc::new(p)])), ["identity web-0"]);
}

#[test]
fn a_deleted_set_only_counts() {
    let mut s = set(3, "OrderedReady");
    s.metadata.deletion_timestamp = Some(Time(now()));
    let plan = plan_for(&s, &[healthy(&s, 0, "web-v2")]);
    assert!(steps(&plan).is_empty());
    assert_eq!(plan.counts.replicas, 1);
}

#[test]
fn status_counts_and_completes_the_rollout() {
    let s = set(3, "OrderedReady");
    let pods = [
        healthy(&s, 0, "web-v1"),
        pod(&s, 1, "web-v2", "Running", false),
        terminating(&healthy(&s, 2, "web-v2")),
    ];
    let c = control::count(&pods, 0, "web-v1", "web-v2", now());
    assert_eq!(
        c,
        control::Counts {
            replicas: 3,
            ready: 2,
            available: 2,
            current: 1,
            updated: 1,
        }
    );
    let mut status = Status {
        observed_generation: 1,
        counts: control::Counts {
            replicas: 3,
            ready: 3,
            available: 3,
            current: 0,
            updated: 3,
        },
        current_revision: "web-v1".into(),
        update_revision: "web-v2".into(),
        collision_count: 0,
    };
    status.complete_rolling_update(&s);
    assert_eq!(status.current_revision, "web-v2");
    assert_eq!(status.counts.current, 3);
    assert!(status.differs_from(&s));
    let mut stored = s.clone();
    stored.status = Some(StatefulSetStatus {
        observed_generation: Some(1),
        replicas: 3,
        ready_replicas: Some(3),
        available_replicas: Some(3),
        current_replicas: Some(3),
        updated_replicas: Some(3),
        current_revision: Some("web-v2".into()),
        update_revision: Some("web-v2".into()),
        collision_count: Some(0),
        ..Default::default()
    });
    assert!(
        !status.differs_from(&stored),
        "an unchanged status is not written"
    );
}

#[test]
fn available_waits_for_min_ready_seconds() {
    let mut s = set(2, "OrderedReady");
    s.spec.as_mut().unwrap().min_ready_seconds = Some(3600);
    let web0 = healthy(&s, 0, "web-v2");
    assert!(
        steps(&plan_for(&s, &[web0])).is_empty(),
        "web-1 waits for web-0 to be available"
    );
}
