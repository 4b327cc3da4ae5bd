//! Tests of InterPodAffinity: required terms in both directions, the first-pod rule,
//! namespaces, preemption's add/remove, scoring and args.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as ApiSelector, LabelSelectorRequirement,
};
use serde_json::json;

use super::*;
use crate::framework::Code;
use crate::testing::{label_selector, node, pod};

const HOST: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";

fn info(p: Pod) -> Arc<PodInfo> {
    Arc::new(PodInfo::new(Arc::new(p)))
}

fn plugin() -> InterPodAffinity {
    InterPodAffinity::with_args(&InterPodAffinityArgs::default())
}

/// Nodes `n1`, `n2` in zone `z1` and `n3` in zone `z2`, each with its hostname label.
fn zoned_nodes() -> Vec<(&'static str, Option<&'static str>)> {
    vec![("n1", Some("z1")), ("n2", Some("z1")), ("n3", Some("z2"))]
}

/// A snapshot of nodes (name, zone) and pods placed on them.
fn snapshot(nodes: &[(&str, Option<&str>)], pods: Vec<(Pod, &str)>) -> Snapshot {
    let mut s = Snapshot::new();
    for (name, zone) in nodes {
        let mut b = node(name).cpu("4").label(HOST, name);
        if let Some(z) = zone {
            b = b.label(ZONE, z);
        }
        s.upsert_node(Arc::new(b.build()));
    }
    for (p, on) in pods {
        s.add_pod(info(p), on);
    }
    s
}

/// Runs PreFilter, then Filter on every node: node name → status (all successes when
/// PreFilter says Skip, as the framework then skips Filter).
fn filter_all(
    p: &InterPodAffinity,
    s: &Snapshot,
    incoming: &PodInfo,
) -> (Status, BTreeMap<String, Status>) {
    let mut state = CycleState::new();
    let pre = p.pre_filter(&mut state, incoming, s);
    assert!(
        pre.is_success() || pre.is_skip(),
        "prefilter rejected: {pre:?}"
    );
    let out = s
        .nodes()
        .iter()
        .map(|n| {
            let status = if pre.is_skip() {
                Status::success()
            } else {
                p.filter(&state, incoming, n)
            };
            (n.name.clone(), status)
        })
        .collect();
    (pre, out)
}

/// The names of the nodes that pass.
fn feasible(s: &Snapshot, incoming: Pod) -> Vec<String> {
    let (_, statuses) = filter_all(&plugin(), s, &info(incoming));
    statuses
        .into_iter()
        .filter(|(_, st)| st.is_success())
        .map(|(n, _)| n)
        .collect()
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Edits the first required pod affinity term.
fn edit_affinity(mut p: Pod, f: impl FnOnce(&mut PodAffinityTerm)) -> Pod {
    let term = p
        .spec
        .as_mut()
        .and_then(|s| s.affinity.as_mut())
        .and_then(|a| a.pod_affinity.as_mut())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_mut()
        })
        .and_then(|v| v.first_mut())
        .expect("the pod has a required affinity term");
    f(term);
    p
}

/// Edits the first required pod anti-affinity term.
fn edit_anti_affinity(mut p: Pod, f: impl FnOnce(&mut PodAffinityTerm)) -> Pod {
    let term = p
        .spec
        .as_mut()
        .and_then(|s| s.affinity.as_mut())
        .and_then(|a| a.pod_anti_affinity.as_mut())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_mut()
        })
        .and_then(|v| v.first_mut())
        .expect("the pod has a required anti-affinity term");
    f(term);
    p
}

// ---- required anti-affinity of the incoming pod ----

#[test]
fn anti_affinity_spreads_replicas_one_per_hostname() {
    let web = |name: &str| {
        pod(name)
            .label("app", "web")
            .pod_anti_affinity(HOST, "app", "web")
            .build()
    };
    let s = snapshot(&zoned_nodes(), vec![(web("w1"), "n1"), (web("w2"), "n3")]);
    let (pre, statuses) = filter_all(&plugin(), &s, &info(web("w3")));
    assert!(pre.is_success());
    assert_eq!(
        statuses["n1"],
        Status::unschedulable(ERR_REASON_ANTI_AFFINITY),
        "the incoming pod's own anti-affinity is reported first"
    );
    assert!(statuses["n2"].is_success());
    assert_eq!(statuses["n3"].code, Code::Unschedulable);
}

#[test]
fn anti_affinity_per_zone_excludes_the_whole_zone() {
    let s = snapshot(
        &zoned_nodes(),
        vec![(pod("db-0").label("app", "db").build(), "n1")],
    );
    let incoming = pod("db-1")
        .label("app", "db")
        .pod_anti_affinity(ZONE, "app", "db")
        .build();
    assert_eq!(feasible(&s, incoming), names(&["n3"]));
}

#[test]
fn anti_affinity_ignores_nodes_without_the_topology_key() {
    let s = snapshot(
        &[("n1", Some("z1")), ("bare", None)],
        vec![
            (pod("db-0").label("app", "db").build(), "n1"),
            (pod("db-1").label("app", "db").build(), "bare"),
        ],
    );
    let incoming = pod("db-2").pod_anti_affinity(ZONE, "app", "db").build();
    // `bare` is in no zone: the pod there counts nowhere and the node is in no repelled domain.
    assert_eq!(feasible(&s, incoming), names(&["bare"]));
}

// ---- symmetry: existing pods' required anti-affinity ----

#[test]
fn existing_pod_anti_affinity_repels_the_incoming_pod() {
    let loner = pod("loner")
        .label("app", "loner")
        .pod_anti_affinity(ZONE, "app", "noisy")
        .build();
    let s = snapshot(&zoned_nodes(), vec![(loner, "n1")]);
    let (pre, statuses) = filter_all(
        &plugin(),
        &s,
        &info(pod("noisy").label("app", "noisy").build()),
    );
    assert!(pre.is_success(), "the pod has no terms but is repelled");
    assert_eq!(
        statuses["n1"],
        Status::unschedulable(ERR_REASON_EXISTING_ANTI_AFFINITY)
    );
    assert_eq!(
        statuses["n2"],
        Status::unschedulable(ERR_REASON_EXISTING_ANTI_AFFINITY),
        "same zone as the repelling pod"
    );
    assert!(statuses["n3"].is_success());
}

#[test]
fn existing_anti_affinity_that_does_not_match_lets_prefilter_skip() {
    let loner = pod("loner").pod_anti_affinity(ZONE, "app", "noisy").build();
    let s = snapshot(&zoned_nodes(), vec![(loner, "n1")]);
    let mut state = CycleState::new();
    let incoming = info(pod("quiet").label("app", "quiet").build());
    assert!(plugin().pre_filter(&mut state, &incoming, &s).is_skip());
}

#[test]
fn prefilter_skips_pods_without_required_terms_in_a_cluster_without_anti_affinity() {
    let s = snapshot(
        &zoned_nodes(),
        vec![(pod("a").label("app", "db").build(), "n1")],
    );
    let incoming = info(
        pod("b")
            .preferred_pod_affinity(10, ZONE, "app", "db")
            .build(),
    );
    let mut state = CycleState::new();
    assert!(plugin().pre_filter(&mut state, &incoming, &s).is_skip());
}

// ---- required affinity of the incoming pod ----

#[test]
fn affinity_to_a_zone_with_a_matching_pod() {
    let s = snapshot(
        &zoned_nodes(),
        vec![(pod("db").label("app", "db").build(), "n2")],
    );
    let incoming = info(pod("web").pod_affinity(ZONE, "app", "db").build());
    let (_, statuses) = filter_all(&plugin(), &s, &incoming);
    assert!(statuses["n1"].is_success(), "same zone as the db pod");
    assert!(statuses["n2"].is_success());
    assert_eq!(statuses["n3"], Status::unresolvable(ERR_REASON_AFFINITY));
    assert_eq!(statuses["n3"].code, Code::UnschedulableAndUnresolvable);
}

#[test]
fn affinity_terms_must_all_be_satisfied_by_the_same_pods() {
    // Two terms: app=db in the zone and tier=cache on the host. A pod matches only if it
    // matches both selectors (upstream counts pods matching all terms).
    let s = snapshot(
        &zoned_nodes(),
        vec![
            (pod("db").label("app", "db").build(), "n1"),
            (pod("cache").label("tier", "cache").build(), "n1"),
        ],
    );
    let incoming = pod("web")
        .pod_affinity(ZONE, "app", "db")
        .pod_affinity(HOST, "tier", "cache")
        .build();
    assert!(
        feasible(&s, incoming).is_empty(),
        "no single pod matches both terms"
    );

    let s = snapshot(
        &zoned_nodes(),
        vec![(
            pod("both")
                .label("app", "db")
                .label("tier", "cache")
                .build(),
            "n1",
        )],
    );
    let incoming = pod("web")
        .pod_affinity(ZONE, "app", "db")
        .pod_affinity(HOST, "tier", "cache")
        .build();
    assert_eq!(feasible(&s, incoming), names(&["n1"]));
}

#[test]
fn first_pod_of_a_group_with_affinity_to_itself_may_go_anywhere_with_the_key() {
    let nodes = [("n1", Some("z1")), ("n2", Some("z2")), ("bare", None)];
    let s = snapshot(
        &nodes,
        vec![(pod("other").label("app", "web").build(), "n1")],
    );
    let first = pod("db-0")
        .label("app", "db")
        .pod_affinity(ZONE, "app", "db")
        .build();
    let (_, statuses) = filter_all(&plugin(), &s, &info(first));
    assert!(statuses["n1"].is_success());
    assert!(statuses["n2"].is_success());
    assert_eq!(
        statuses["bare"],
        Status::unresolvable(ERR_REASON_AFFINITY),
        "a node missing the topology key fails affinity even for the first pod"
    );
}

#[test]
fn first_pod_rule_needs_the_pod_to_match_its_own_terms() {
    let s = snapshot(&zoned_nodes(), vec![]);
    let stranger = pod("web")
        .label("app", "web")
        .pod_affinity(ZONE, "app", "db")
        .build();
    assert!(feasible(&s, stranger).is_empty());
}

#[test]
fn first_pod_rule_does_not_apply_once_a_peer_exists() {
    let s = snapshot(
        &zoned_nodes(),
        vec![(pod("db-0").label("app", "db").build(), "n3")],
    );
    let next = pod("db-1")
        .label("app", "db")
        .pod_affinity(ZONE, "app", "db")
        .build();
    assert_eq!(feasible(&s, next), names(&["n3"]));
}

#[test]
fn affinity_fails_on_nodes_missing_the_topology_key() {
    let s = snapshot(
        &[("n1", Some("z1")), ("bare", None)],
        vec![(pod("db").label("app", "db").build(), "n1")],
    );
    let incoming = pod("web").pod_affinity(ZONE, "app", "db").build();
    assert_eq!(feasible(&s, incoming), names(&["n1"]));
}

#[test]
fn affinity_is_checked_before_anti_affinity() {
    let s = snapshot(
        &zoned_nodes(),
        vec![(pod("db").label("app", "db").build(), "n3")],
    );
    let incoming = info(
        pod("web")
            .pod_affinity(ZONE, "app", "cache")
            .pod_anti_affinity(ZONE, "app", "db")
            .build(),
    );
    let (_, statuses) = filter_all(&plugin(), &s, &incoming);
    assert_eq!(statuses["n3"], Status::unresolvable(ERR_REASON_AFFINITY));
}

// ---- namespaces ----

#[test]
fn terms_look_in_the_pods_own_namespace_by_default() {
    let s = snapshot(
        &zoned_nodes(),
        vec![(
            pod("db").namespace("other").label("app", "db").build(),
            "n1",
        )],
    );
    let incoming = pod("web")
        .label("app", "web")
        .pod_anti_affinity(ZONE, "app", "db")
        .build();
    assert_eq!(
        feasible(&s, incoming),
        names(&["n1", "n2", "n3"]),
        "the db pod is in another namespace"
    );
}

#[test]
fn terms_with_namespaces_look_only_there() {
    let s = snapshot(
        &zoned_nodes(),
        vec![
            (
                pod("db").namespace("other").label("app", "db").build(),
                "n1",
            ),
            (pod("db-local").label("app", "db").build(), "n3"),
        ],
    );
    let incoming = edit_anti_affinity(
        pod("web").pod_anti_affinity(ZONE, "app", "db").build(),
        |t| t.namespaces = Some(vec!["other".to_string()]),
    );
    assert_eq!(feasible(&s, incoming), names(&["n3"]));
}

#[test]
fn namespace_selector_selects_namespaces_by_their_labels() {
    let mut s = snapshot(
        &zoned_nodes(),
        vec![
            (
                pod("db-a").namespace("team-a").label("app", "db").build(),
                "n1",
            ),
            (
                pod("db-b").namespace("team-b").label("app", "db").build(),
                "n3",
            ),
        ],
    );
    s.set_namespace("team-a", Labels::from([("team".into(), "a".into())]));
    s.set_namespace("team-b", Labels::from([("team".into(), "b".into())]));

    let incoming = edit_affinity(pod("web").pod_affinity(ZONE, "app", "db").build(), |t| {
        t.namespace_selector = Some(label_selector("team", "a"))
    });
    assert_eq!(feasible(&s, incoming), names(&["n1", "n2"]));

    // An empty namespaceSelector selects every namespace.
    let everywhere = edit_anti_affinity(
        pod("web").pod_anti_affinity(ZONE, "app", "db").build(),
        |t| t.namespace_selector = Some(ApiSelector::default()),
    );
    assert!(feasible(&s, everywhere).is_empty());
}

#[test]
fn existing_pod_namespace_selector_is_matched_against_the_incoming_pods_namespace() {
    let loner = edit_anti_affinity(
        pod("loner")
            .namespace("infra")
            .pod_anti_affinity(ZONE, "app", "noisy")
            .build(),
        |t| t.namespace_selector = Some(label_selector("tier", "batch")),
    );
    let mut s = snapshot(&zoned_nodes(), vec![(loner, "n1")]);
    s.set_namespace("batch", Labels::from([("tier".into(), "batch".into())]));
    s.set_namespace("web", Labels::from([("tier".into(), "web".into())]));

    let batch = pod("noisy")
        .namespace("batch")
        .label("app", "noisy")
        .build();
    assert_eq!(feasible(&s, batch), names(&["n3"]));
    let web = pod("noisy").namespace("web").label("app", "noisy").build();
    assert_eq!(feasible(&s, web), names(&["n1", "n2", "n3"]));
}

// ---- preemption: add_pod / remove_pod ----

#[test]
fn add_and_remove_pod_update_the_filter_result() {
    let p = plugin();
    let s = snapshot(&zoned_nodes(), vec![]);
    let incoming = info(
        pod("web")
            .label("app", "web")
            .pod_anti_affinity(ZONE, "app", "db")
            .build(),
    );
    let n1 = s.get("n1").expect("node");
    let n2 = s.get("n2").expect("node");
    let mut state = CycleState::new();
    assert!(p.pre_filter(&mut state, &incoming, &s).is_success());
    assert!(p.filter(&state, &incoming, n2).is_success());

    // A nominated db pod on n1 makes the whole zone z1 off limits.
    let db = info(pod("db").label("app", "db").build());
    assert!(p.add_pod(&mut state, &incoming, &db, n1, &s).is_success());
    assert_eq!(
        p.filter(&state, &incoming, n2),
        Status::unschedulable(ERR_REASON_ANTI_AFFINITY)
    );
    assert!(
        p.remove_pod(&mut state, &incoming, &db, n1, &s)
            .is_success()
    );
    assert!(p.filter(&state, &incoming, n2).is_success());

    // An added pod whose anti-affinity repels the incoming pod (symmetry).
    let loner = info(pod("loner").pod_anti_affinity(HOST, "app", "web").build());
    assert!(
        p.add_pod(&mut state, &incoming, &loner, n2, &s)
            .is_success()
    );
    assert_eq!(
        p.filter(&state, &incoming, n2),
        Status::unschedulable(ERR_REASON_EXISTING_ANTI_AFFINITY)
    );
    assert!(p.filter(&state, &incoming, n1).is_success(), "other host");
    assert!(
        p.remove_pod(&mut state, &incoming, &loner, n2, &s)
            .is_success()
    );
    assert!(p.filter(&state, &incoming, n2).is_success());
}

#[test]
fn removing_the_only_peer_leaves_affinity_unsatisfied_on_a_cloned_state() {
    let p = plugin();
    let db = pod("db").label("app", "db").build();
    let s = snapshot(&zoned_nodes(), vec![(db, "n3")]);
    let incoming = info(pod("web").pod_affinity(ZONE, "app", "db").build());
    let n3 = s.get("n3").expect("node");
    let mut state = CycleState::new();
    assert!(p.pre_filter(&mut state, &incoming, &s).is_success());

    let mut trial = state.clone();
    let victim = s.pod("default/db").expect("placed").clone();
    assert!(
        p.remove_pod(&mut trial, &incoming, &victim, n3, &s)
            .is_success()
    );
    assert_eq!(
        p.filter(&trial, &incoming, n3),
        Status::unresolvable(ERR_REASON_AFFINITY),
        "web does not match its own terms, so the first-pod rule does not apply"
    );
    assert!(
        p.filter(&state, &incoming, n3).is_success(),
        "the original state is untouched"
    );
}

#[test]
fn add_pod_without_prefilter_state_is_an_error() {
    let p = plugin();
    let s = snapshot(&zoned_nodes(), vec![]);
    let incoming = info(pod("web").build());
    let other = info(pod("db").build());
    let n1 = s.get("n1").expect("node");
    let mut state = CycleState::new();
    assert_eq!(
        p.add_pod(&mut state, &incoming, &other, n1, &s).code,
        Code::Error
    );
    assert_eq!(p.filter(&state, &incoming, n1).code, Code::Error);
}

// ---- parse errors ----

#[test]
fn unparseable_terms_make_the_pod_unresolvable() {
    let bad = edit_affinity(pod("web").pod_affinity(ZONE, "app", "db").build(), |t| {
        t.label_selector = Some(ApiSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "app".to_string(),
                operator: "Near".to_string(),
                values: None,
            }]),
        });
    });
    let incoming = info(bad);
    assert!(
        incoming.parse_error.is_some(),
        "precondition: the term fails to parse"
    );
    let s = snapshot(&zoned_nodes(), vec![]);
    let mut state = CycleState::new();
    let status = plugin().pre_filter(&mut state, &incoming, &s);
    assert_eq!(status.code, Code::UnschedulableAndUnresolvable);
    assert!(status.reasons[0].starts_with("parsing pod: "), "{status:?}");
}

// ---- scoring ----

/// Runs PreScore, Score on every node and NormalizeScore: node name → score, or `None` when
/// PreScore said Skip.
fn score_all(
    p: &InterPodAffinity,
    s: &Snapshot,
    incoming: &PodInfo,
) -> Option<BTreeMap<String, i64>> {
    let nodes: Vec<&NodeInfo> = s.nodes().iter().collect();
    let mut state = CycleState::new();
    let pre = p.pre_score(&mut state, incoming, &nodes, s);
    if pre.is_skip() {
        return None;
    }
    assert!(pre.is_success(), "prescore failed: {pre:?}");
    let mut scores: Vec<i64> = nodes
        .iter()
        .map(|n| p.score(&state, incoming, n).expect("score"))
        .collect();
    assert!(p.normalize(&state, incoming, &mut scores).is_success());
    Some(nodes.iter().map(|n| n.name.clone()).zip(scores).collect())
}

#[test]
fn preferred_affinity_ranks_the_peer_zone_highest() {
    let s = snapshot(
        &zoned_nodes(),
        vec![(pod("db").label("app", "db").build(), "n3")],
    );
    let incoming = info(
        pod("web")
            .preferred_pod_affinity(50, ZONE, "app", "db")
            .build(),
    );
    let scores = score_all(&plugin(), &s, &incoming).expect("scored");
    assert_eq!(scores["n3"], MAX_NODE_SCORE);
    assert_eq!(scores["n1"], 0);
    assert_eq!(scores["n2"], 0);
}

#[test]
fn preferred_anti_affinity_ranks_the_peer_zone_lowest() {
    let s = snapshot(
        &zoned_nodes(),
        vec![(pod("web-0").label("app", "web").build(), "n1")],
    );
    let incoming = info(
        pod("web-1")
            .preferred_pod_anti_affinity(10, ZONE, "app", "web")
            .build(),
    );
    let scores = score_all(&plugin(), &s, &incoming).expect("scored");
    assert_eq!(scores["n1"], 0);
    assert_eq!(scores["n2"], 0);
    assert_eq!(scores["n3"], MAX_NODE_SCORE);
}

#[test]
fn scores_are_min_max_normalized_into_0_to_100() {
    // Raw: n1 = +30 (zone z1: affinity 20 + host 10), n2 = +20, n3 = -10.
    let s = snapshot(
        &zoned_nodes(),
        vec![
            (pod("db").label("app", "db").build(), "n1"),
            (pod("web").label("app", "web").build(), "n3"),
        ],
    );
    let incoming = info(
        pod("x")
            .preferred_pod_affinity(20, ZONE, "app", "db")
            .preferred_pod_affinity(10, HOST, "app", "db")
            .preferred_pod_anti_affinity(10, ZONE, "app", "web")
            .build(),
    );
    let scores = score_all(&plugin(), &s, &incoming).expect("scored");
    assert_eq!(scores["n1"], 100);
    assert_eq!(scores["n2"], 75, "(20 - -10) / 40 * 100");
    assert_eq!(scores["n3"], 0);
}

#[test]
fn existing_pods_preferences_and_required_affinity_attract_the_incoming_pod() {
    let fan = pod("fan")
        .preferred_pod_affinity(5, HOST, "app", "star")
        .build();
    let follower = pod("follower").pod_affinity(HOST, "app", "star").build();
    let hater = pod("hater")
        .preferred_pod_anti_affinity(100, HOST, "app", "star")
        .build();
    let s = snapshot(
        &zoned_nodes(),
        vec![(fan, "n1"), (follower, "n2"), (hater, "n3")],
    );
    let star = info(pod("star").label("app", "star").build());

    let weighted = InterPodAffinity::with_args(&InterPodAffinityArgs {
        hard_pod_affinity_weight: 10,
        ..Default::default()
    });
    let scores = score_all(&weighted, &s, &star).expect("scored");
    // Raw: n1 = 5, n2 = 10, n3 = -100.
    assert_eq!(scores["n2"], 100);
    assert_eq!(scores["n1"], 95, "(5 + 100) / 110 * 100, truncated");
    assert_eq!(scores["n3"], 0);

    let no_hard = InterPodAffinity::with_args(&InterPodAffinityArgs {
        hard_pod_affinity_weight: 0,
        ..Default::default()
    });
    let scores = score_all(&no_hard, &s, &star).expect("scored");
    assert_eq!(scores["n1"], 100);
    assert_eq!(
        scores["n2"], 95,
        "without hardPodAffinityWeight the follower's required term weighs nothing"
    );
}

#[test]
fn ignore_preferred_terms_of_existing_pods_skips_pods_without_preferences() {
    let fan = pod("fan")
        .preferred_pod_affinity(5, HOST, "app", "star")
        .build();
    let s = snapshot(&zoned_nodes(), vec![(fan, "n1")]);
    let star = info(pod("star").label("app", "star").build());
    assert!(score_all(&plugin(), &s, &star).is_some());

    let ignoring = InterPodAffinity::with_args(&InterPodAffinityArgs {
        ignore_preferred_terms_of_existing_pods: true,
        ..Default::default()
    });
    assert!(score_all(&ignoring, &s, &star).is_none());
}

#[test]
fn prescore_skips_when_nothing_weighs() {
    let s = snapshot(
        &zoned_nodes(),
        vec![(pod("plain").label("app", "db").build(), "n1")],
    );
    assert!(score_all(&plugin(), &s, &info(pod("x").build())).is_none());
    let unmatched = info(
        pod("y")
            .preferred_pod_affinity(5, ZONE, "app", "nothing")
            .build(),
    );
    assert!(score_all(&plugin(), &s, &unmatched).is_none());
}

#[test]
fn equal_scores_normalize_to_zero() {
    // Both nodes share the zone of the matching pod, so they tie.
    let s = snapshot(
        &[("n1", Some("z1")), ("n2", Some("z1"))],
        vec![(pod("db").label("app", "db").build(), "n1")],
    );
    let incoming = info(
        pod("x")
            .preferred_pod_affinity(7, ZONE, "app", "db")
            .build(),
    );
    let scores = score_all(&plugin(), &s, &incoming).expect("scored");
    assert_eq!(scores["n1"], 0);
    assert_eq!(scores["n2"], 0);
}

// ---- args ----

#[test]
fn args_default_and_validate_as_upstream() {
    let d = InterPodAffinityArgs::from_json(None).expect("defaults");
    assert_eq!(d.hard_pod_affinity_weight, 1);
    assert!(!d.ignore_preferred_terms_of_existing_pods);

    let a = InterPodAffinityArgs::from_json(Some(&json!({
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "InterPodAffinityArgs",
        "hardPodAffinityWeight": 0,
        "ignorePreferredTermsOfExistingPods": true,
    })))
    .expect("valid");
    assert_eq!(a.hard_pod_affinity_weight, 0);
    assert!(a.ignore_preferred_terms_of_existing_pods);

    let err = InterPodAffinityArgs::from_json(Some(&json!({"hardPodAffinityWeight": 101})))
        .expect_err("out of range");
    assert!(err.contains("not in valid range [0, 100]"), "{err}");
    let err = InterPodAffinityArgs::from_json(Some(&json!({"hardPodAffinityWeight": -1})))
        .expect_err("out of range");
    assert!(err.contains("hardPodAffinityWeight"), "{err}");
    let err = InterPodAffinityArgs::from_json(Some(&json!({"hardPodWeight": 3})))
        .expect_err("unknown field");
    assert!(err.contains("hardPodWeight"), "{err}");
    assert!(new(Some(&json!({"kind": "NodeAffinityArgs"}))).is_err());
    assert!(new(None).is_ok());
}

#[test]
fn the_registry_builds_the_plugin_with_all_its_extension_points() {
    let plugin = new(None).expect("built");
    assert_eq!(plugin.name(), NAME);
    assert!(plugin.as_pre_filter().is_some());
    assert!(plugin.as_filter().is_some());
    assert!(plugin.as_pre_score().is_some());
    assert!(plugin.as_score().is_some());
}
