//! Unit tests of the DaemonSet decisions: eligibility, per-node actions, status counts and
//! the rolling update.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Affinity, Container, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, NodeSpec, Pod, PodCondition, PodSpec, PodStatus, PodTemplateSpec, Taint,
    Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::placement::{self, Eligibility, NodeContext};
use super::update::{self, RollingContext};
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

fn node(name: &str, node_labels: &[(&str, &str)], taints: Vec<Taint>) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels(node_labels)),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: Some(taints),
            ..Default::default()
        }),
        status: None,
    }
}

fn taint(key: &str, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        effect: effect.into(),
        ..Default::default()
    }
}

fn daemonset(spec: PodSpec) -> DaemonSet {
    DaemonSet {
        metadata: ObjectMeta {
            name: Some("agent".into()),
            namespace: Some("default".into()),
            uid: Some("ds-uid".into()),
            generation: Some(2),
            ..Default::default()
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(labels(&[("app", "agent")])),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&[("app", "agent")])),
                    ..Default::default()
                }),
                spec: Some(spec),
            },
            ..Default::default()
        }),
        status: None,
    }
}

fn plain() -> PodSpec {
    PodSpec {
        containers: vec![Container {
            name: "c".into(),
            image: Some("agent:v1".into()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn pod(name: &str, node: &str, hash: &str, ready_since: Option<&str>, created: &str) -> Arc<Pod> {
    Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels(&[
                ("app", "agent"),
                ("controller-revision-hash", hash),
            ])),
            creation_timestamp: Some(Time(created.parse().unwrap())),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            ..plain()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            conditions: ready_since.map(|t| {
                vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(t.parse().unwrap())),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }),
    })
}

const READY: Option<&str> = Some("2026-01-01T00:00:00Z");

fn with_phase(pod: &Pod, phase: &str) -> Arc<Pod> {
    let mut pod = pod.clone();
    pod.status.get_or_insert_with(Default::default).phase = Some(phase.into());
    Arc::new(pod)
}

#[test]
fn every_node_is_eligible_without_constraints() {
    let ds = daemonset(plain());
    let e = placement::node_should_run(&node("n1", &[], vec![]), &ds);
    assert_eq!(
        e,
        Eligibility {
            should_run: true,
            should_continue_running: true
        }
    );
}

#[test]
fn node_selector_and_required_affinity_filter_nodes() {
    let ds = daemonset(PodSpec {
        node_selector: Some(labels(&[("disk", "ssd")])),
        ..plain()
    });
    assert!(placement::node_should_run(&node("n1", &[("disk", "ssd")], vec![]), &ds).should_run);
    let e = placement::node_should_run(&node("n2", &[("disk", "hdd")], vec![]), &ds);
    assert!(!e.should_run && !e.should_continue_running);

    let affinity = |op: &str, values: &[&str]| {
        daemonset(PodSpec {
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: "zone".into(),
                                operator: op.into(),
                                values: Some(values.iter().map(|v| v.to_string()).collect()),
                            }]),
                            match_fields: None,
                        }],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..plain()
        })
    };
    let a = node("a", &[("zone", "a")], vec![]);
    let b = node("b", &[("zone", "b")], vec![]);
    assert!(placement::node_should_run(&a, &affinity("In", &["a"])).should_run);
    assert!(!placement::node_should_run(&b, &affinity("In", &["a"])).should_run);
    assert!(placement::node_should_run(&b, &affinity("NotIn", &["a"])).should_run);
    assert!(
        !placement::node_should_run(&a, &affinity("Bogus", &["a"])).should_run,
        "an invalid term matches nothing"
    );
}

#[test]
fn untolerated_taints_keep_new_pods_off_and_no_execute_evicts() {
    let ds = daemonset(plain());
    let no_schedule = node("n", &[], vec![taint("dedicated", "NoSchedule")]);
    assert_eq!(
        placement::node_should_run(&no_schedule, &ds),
        Eligibility {
            should_run: false,
            should_continue_running: true
        },
        "a NoSchedule taint keeps new pods off but lets a running one stay"
    );
    let no_execute = node("n", &[], vec![taint("dedicated", "NoExecute")]);
    assert_eq!(
        placement::node_should_run(&no_execute, &ds),
        Eligibility {
            should_run: false,
            should_continue_running: false
        }
    );
    let prefer = node("n", &[], vec![taint("dedicated", "PreferNoSchedule")]);
    assert!(placement::node_should_run(&prefer, &ds).should_run);

    let tolerant = daemonset(PodSpec {
        tolerations: Some(vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }]),
        ..plain()
    });
    assert!(placement::node_should_run(&no_execute, &tolerant).should_run);
}

#[test]
fn daemon_pods_tolerate_node_problems() {
    let ds = daemonset(plain());
    for (key, effect) in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ] {
        let n = node("n", &[], vec![taint(key, effect)]);
        assert!(
            placement::node_should_run(&n, &ds).should_run,
            "{key}:{effect}"
        );
    }
    // network-unavailable only for host-network pods.
    let n = node(
        "n",
        &[],
        vec![taint(
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
        )],
    );
    assert!(!placement::node_should_run(&n, &ds).should_run);
    let host = daemonset(PodSpec {
        host_network: Some(true),
        ..plain()
    });
    assert!(placement::node_should_run(&n, &host).should_run);

    // A toleration the template already has is replaced, not duplicated.
    let mut spec = PodSpec {
        tolerations: Some(vec![Toleration {
            key: Some("node.kubernetes.io/not-ready".into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: Some(300),
            ..Default::default()
        }]),
        ..plain()
    };
    placement::add_daemon_tolerations(&mut spec);
    let tolerations = spec.tolerations.unwrap();
    assert_eq!(tolerations.len(), 6);
    assert_eq!(tolerations[0].toleration_seconds, None);
}

#[test]
fn pods_are_pinned_to_their_node_by_affinity() {
    let existing = Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm::default()],
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let affinity = placement::pin_to_node(Some(existing), "node-2");
    let pinned = Pod {
        spec: Some(PodSpec {
            affinity: Some(affinity.clone()),
            ..plain()
        }),
        ..Default::default()
    };
    assert_eq!(placement::target_node(&pinned), Some("node-2"));
    let terms = affinity
        .node_affinity
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .unwrap()
        .node_selector_terms;
    assert_eq!(terms.len(), 1);
    let field = &terms[0].match_fields.as_ref().unwrap()[0];
    assert_eq!(
        (field.key.as_str(), field.operator.as_str()),
        ("metadata.name", "In")
    );
    let bound = pod("p", "node-3", "h", None, "2026-01-01T00:00:00Z");
    assert_eq!(placement::target_node(&bound), Some("node-3"));
}

#[test]
fn the_pod_template_carries_hash_generation_and_tolerations() {
    let ds = daemonset(plain());
    let template = pod_template(&ds, "abc");
    let l = template.metadata.unwrap().labels.unwrap();
    assert_eq!(l["controller-revision-hash"], "abc");
    assert_eq!(l["pod-template-generation"], "2");
    assert_eq!(l["app"], "agent");
    assert_eq!(template.spec.unwrap().tolerations.unwrap().len(), 6);
}

fn ctx(eligibility: Eligibility, surge: bool) -> NodeContext<'static> {
    NodeContext {
        eligibility,
        surge,
        hash: "new",
        min_ready_seconds: 0,
        now: now(),
    }
}

const RUN: Eligibility = Eligibility {
    should_run: true,
    should_continue_running: true,
};
const STAY: Eligibility = Eligibility {
    should_run: false,
    should_continue_running: true,
};
const NONE: Eligibility = Eligibility {
    should_run: false,
    should_continue_running: false,
};

fn names(pods: &[Arc<Pod>]) -> Vec<String> {
    pods.iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect()
}

#[test]
fn a_node_gets_a_pod_keeps_one_and_loses_extras() {
    let a = pod("a", "n", "new", READY, "2026-01-01T00:00:00Z");
    let b = pod("b", "n", "new", READY, "2026-01-01T00:01:00Z");
    assert!(placement::pods_should_be_on_node(ctx(RUN, false), &[]).create);
    assert!(!placement::pods_should_be_on_node(ctx(STAY, false), &[]).create);
    let one = placement::pods_should_be_on_node(ctx(RUN, false), std::slice::from_ref(&a));
    assert!(!one.create && one.delete.is_empty());
    let two = placement::pods_should_be_on_node(ctx(RUN, false), &[b.clone(), a.clone()]);
    assert_eq!(names(&two.delete), ["b"], "the oldest stays");
    let gone = placement::pods_should_be_on_node(ctx(NONE, false), std::slice::from_ref(&a));
    assert_eq!(
        names(&gone.delete),
        ["a"],
        "a node that stopped matching loses its pod"
    );
}

#[test]
fn failed_and_succeeded_pods_are_replaced_after_they_go() {
    let failed = with_phase(
        &pod("f", "n", "new", None, "2026-01-01T00:00:00Z"),
        "Failed",
    );
    let done = with_phase(
        &pod("s", "n", "new", None, "2026-01-01T00:00:00Z"),
        "Succeeded",
    );
    let actions = placement::pods_should_be_on_node(ctx(RUN, false), std::slice::from_ref(&failed));
    assert_eq!(names(&actions.failed), ["f"]);
    assert!(
        !actions.create,
        "the replacement waits until the failed pod is gone"
    );
    let actions = placement::pods_should_be_on_node(ctx(RUN, false), &[done]);
    assert_eq!(names(&actions.delete), ["s"]);
    assert_eq!(names(&actions.succeeded), ["s"]);
}

#[test]
fn surging_keeps_old_until_new_is_available() {
    let old = pod("old", "n", "old", READY, "2026-01-01T00:00:00Z");
    let new_pending = pod("new", "n", "new", None, "2026-01-01T00:05:00Z");
    let new_ready = pod("new", "n", "new", READY, "2026-01-01T00:05:00Z");
    let a = placement::pods_should_be_on_node(ctx(RUN, true), &[old.clone(), new_pending]);
    assert!(a.delete.is_empty());
    let a = placement::pods_should_be_on_node(ctx(RUN, true), &[old.clone(), new_ready]);
    assert_eq!(names(&a.delete), ["old"]);
}

#[test]
fn status_counts_follow_upstream() {
    let ready_new = pod("a", "n1", "new", READY, "2026-01-01T00:00:00Z");
    let pending_old = pod("b", "n2", "old", None, "2026-01-01T00:00:00Z");
    let stray = pod("c", "n4", "new", READY, "2026-01-01T00:00:00Z");
    let nodes: Vec<(bool, Vec<Arc<Pod>>)> = vec![
        (true, vec![ready_new]),
        (true, vec![pending_old]),
        (true, vec![]),
        (false, vec![stray]),
    ];
    let counts = placement::count(
        nodes.iter().map(|(run, pods)| (*run, pods.as_slice())),
        |p| update::is_pod_updated(p, "new", None),
        0,
        now(),
    );
    assert_eq!(
        counts,
        placement::Counts {
            desired: 3,
            current: 2,
            misscheduled: 1,
            ready: 1,
            updated: 1,
            available: 1,
        }
    );
    let counts = placement::count(
        nodes.iter().map(|(run, pods)| (*run, pods.as_slice())),
        |_| true,
        3600,
        now(),
    );
    assert_eq!(counts.available, 0, "minReadySeconds not yet passed");
}

fn rolling(max_unavailable: Option<IntOrString>, max_surge: Option<IntOrString>) -> DaemonSet {
    let mut ds = daemonset(plain());
    ds.spec.as_mut().unwrap().update_strategy = Some(DaemonSetUpdateStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDaemonSet {
            max_unavailable,
            max_surge,
        }),
    });
    ds
}

#[test]
fn surge_and_unavailability_scale_like_upstream() {
    assert_eq!(
        update::scaled_value(Some(&IntOrString::String("25%".into())), 10, true),
        Ok(3)
    );
    assert_eq!(
        update::scaled_value(Some(&IntOrString::String("25%".into())), 10, false),
        Ok(2)
    );
    assert!(update::scaled_value(Some(&IntOrString::String("x".into())), 10, true).is_err());
    let ds = daemonset(plain());
    assert_eq!(
        update::surge_and_unavailable(&ds, 5),
        Ok((0, 1)),
        "defaults"
    );
    let ds = rolling(
        Some(IntOrString::Int(0)),
        Some(IntOrString::String("50%".into())),
    );
    assert_eq!(update::surge_and_unavailable(&ds, 5), Ok((3, 0)));
    assert!(update::allows_surge(&ds));
    let ds = rolling(Some(IntOrString::Int(0)), Some(IntOrString::Int(0)));
    assert_eq!(
        update::surge_and_unavailable(&ds, 5),
        Ok((0, 1)),
        "nothing allowed becomes one unavailable"
    );
    let mut on_delete = daemonset(plain());
    on_delete.spec.as_mut().unwrap().update_strategy = Some(DaemonSetUpdateStrategy {
        type_: Some("OnDelete".into()),
        rolling_update: None,
    });
    assert!(!update::is_rolling_update(&on_delete));
    assert_eq!(update::surge_and_unavailable(&on_delete, 5), Ok((0, 0)));
}

fn rolling_ctx(max_surge: i32, max_unavailable: i32, desired: i32) -> RollingContext<'static> {
    RollingContext {
        max_surge,
        max_unavailable,
        desired,
        hash: "new",
        generation: None,
        min_ready_seconds: 0,
        now: now(),
    }
}

fn by_node(pods: &[(&str, Vec<Arc<Pod>>)]) -> BTreeMap<String, Vec<Arc<Pod>>> {
    pods.iter()
        .map(|(n, p)| (n.to_string(), p.clone()))
        .collect()
}

#[test]
fn rolling_update_deletes_old_pods_within_max_unavailable() {
    let t = "2026-01-01T00:00:00Z";
    let map = by_node(&[
        ("n1", vec![pod("a", "n1", "old", READY, t)]),
        ("n2", vec![pod("b", "n2", "old", READY, t)]),
        ("n3", vec![pod("c", "n3", "old", READY, t)]),
    ]);
    let actions = update::rolling_update(rolling_ctx(0, 1, 3), &map, |_| true);
    assert_eq!(actions.delete, ["a"], "one at a time");
    assert!(actions.create_on.is_empty());
    let actions = update::rolling_update(rolling_ctx(0, 2, 3), &map, |_| true);
    assert_eq!(actions.delete, ["a", "b"]);

    // A node without a pod (its old one was just deleted) uses up the budget.
    let map = by_node(&[
        ("n1", vec![]),
        ("n2", vec![pod("b", "n2", "old", READY, t)]),
        ("n3", vec![pod("c", "n3", "old", READY, t)]),
    ]);
    assert!(
        update::rolling_update(rolling_ctx(0, 1, 3), &map, |_| true)
            .delete
            .is_empty()
    );

    // An unavailable new pod too; an unavailable old pod is replaced regardless.
    let map = by_node(&[
        ("n1", vec![pod("a2", "n1", "new", None, t)]),
        ("n2", vec![pod("b", "n2", "old", None, t)]),
        ("n3", vec![pod("c", "n3", "old", READY, t)]),
    ]);
    let actions = update::rolling_update(rolling_ctx(0, 1, 3), &map, |_| true);
    assert_eq!(actions.delete, ["b"]);
}

#[test]
fn rolling_update_with_surge_creates_beside_old_pods() {
    let t = "2026-01-01T00:00:00Z";
    let map = by_node(&[
        ("n1", vec![pod("a", "n1", "old", READY, t)]),
        ("n2", vec![pod("b", "n2", "old", READY, t)]),
    ]);
    let actions = update::rolling_update(rolling_ctx(1, 0, 2), &map, |_| true);
    assert_eq!(actions.create_on, ["n1"]);
    assert!(actions.delete.is_empty());

    let map = by_node(&[
        (
            "n1",
            vec![
                pod("a", "n1", "old", READY, t),
                pod("a2", "n1", "new", READY, t),
            ],
        ),
        ("n2", vec![pod("b", "n2", "old", READY, t)]),
    ]);
    let actions = update::rolling_update(rolling_ctx(1, 0, 2), &map, |_| true);
    assert_eq!(
        actions.delete,
        ["a"],
        "the new pod is available: the old one goes"
    );
    assert_eq!(actions.create_on, ["n2"]);

    let map = by_node(&[
        (
            "n1",
            vec![
                pod("a", "n1", "old", READY, t),
                pod("a2", "n1", "new", None, t),
            ],
        ),
        ("n2", vec![pod("b", "n2", "old", READY, t)]),
    ]);
    let actions = update::rolling_update(rolling_ctx(1, 0, 2), &map, |_| true);
    assert!(
        actions.delete.is_empty() && actions.create_on.is_empty(),
        "surge used up"
    );
}

#[test]
fn pods_are_updated_by_hash_or_template_generation() {
    let p = pod("a", "n", "h1", None, "2026-01-01T00:00:00Z");
    assert!(update::is_pod_updated(&p, "h1", None));
    assert!(!update::is_pod_updated(&p, "h2", None));
    let mut labelled = (*p).clone();
    labelled
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("pod-template-generation".into(), "4".into());
    assert!(update::is_pod_updated(&labelled, "h2", Some(4)));
    assert!(!update::is_pod_updated(&labelled, "h2", Some(5)));
}
