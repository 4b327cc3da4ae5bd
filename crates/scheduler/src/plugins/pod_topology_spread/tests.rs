//! Tests of PodTopologySpread, most of them upstream's cases from `filtering_test.go` and
//! `scoring_test.go`.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use serde_json::json;

use super::*;
use crate::framework::Code;
use crate::testing::{node, pod};

const ZONE: &str = "zone";
const HOST: &str = "node";

/// A plugin with no default constraints (`defaultingType: List`), as upstream's tests use.
fn list_plugin() -> Arc<dyn Plugin> {
    new(Some(&json!({"defaultingType": "List"}))).expect("valid args")
}

fn system_plugin() -> Arc<dyn Plugin> {
    new(None).expect("no args")
}

/// A node labelled with its zone and its name under `node` (and the hostname label).
fn zoned(name: &str, zone: &str) -> Node {
    node(name)
        .label(ZONE, zone)
        .label(HOST, name)
        .label(LABEL_HOSTNAME, name)
        .build()
}

/// A pod labelled `foo=""`, the label upstream's `fooSelector` looks for.
fn foo(name: &str) -> Pod {
    pod(name).label("foo", "").build()
}

fn snapshot(nodes: Vec<Node>, pods: Vec<(Pod, &str)>) -> Snapshot {
    let mut s = Snapshot::new();
    for n in nodes {
        s.upsert_node(Arc::new(n));
    }
    for (p, on) in pods {
        s.add_pod(Arc::new(PodInfo::new(Arc::new(p))), on);
    }
    s
}

fn info(p: Pod) -> PodInfo {
    PodInfo::new(Arc::new(p))
}

/// Changes the pod's constraints in place (fields the builder has no setter for).
fn edit_constraints(mut p: Pod, f: impl Fn(&mut TopologySpreadConstraint)) -> Pod {
    if let Some(list) = p
        .spec
        .as_mut()
        .and_then(|s| s.topology_spread_constraints.as_mut())
    {
        list.iter_mut().for_each(f);
    }
    p
}

fn controlled(mut p: Pod) -> Pod {
    p.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "apps/v1".to_string(),
        kind: "ReplicaSet".to_string(),
        name: "rs".to_string(),
        uid: "rs-uid".to_string(),
        controller: Some(true),
        ..Default::default()
    }]);
    p
}

/// Runs PreFilter and Filter on every node; returns each node's status.
fn filter_all(pl: &dyn Plugin, p: &PodInfo, s: &Snapshot) -> BTreeMap<String, Status> {
    let mut state = CycleState::new();
    let pre = pl
        .as_pre_filter()
        .expect("prefilter")
        .pre_filter(&mut state, p, s);
    filter_with(pl, &state, &pre, p, s)
}

fn filter_with(
    pl: &dyn Plugin,
    state: &CycleState,
    pre: &Status,
    p: &PodInfo,
    s: &Snapshot,
) -> BTreeMap<String, Status> {
    assert!(
        pre.is_success() || pre.is_skip(),
        "prefilter failed: {pre:?}"
    );
    s.nodes()
        .iter()
        .map(|n| {
            let status = if pre.is_skip() {
                Status::success()
            } else {
                pl.as_filter().expect("filter").filter(state, p, n)
            };
            (n.name.clone(), status)
        })
        .collect()
}

fn codes(statuses: &BTreeMap<String, Status>) -> Vec<(&str, Code)> {
    statuses.iter().map(|(n, s)| (n.as_str(), s.code)).collect()
}

/// Runs PreScore over `candidates`, then Score and NormalizeScore; `None` when PreScore skips.
fn scores(
    pl: &dyn Plugin,
    p: &PodInfo,
    s: &Snapshot,
    candidates: &[&str],
) -> Option<Vec<(String, i64)>> {
    let nodes: Vec<&NodeInfo> = candidates
        .iter()
        .map(|n| s.get(n).expect("candidate node"))
        .collect();
    let mut state = CycleState::new();
    let pre = pl
        .as_pre_score()
        .expect("prescore")
        .pre_score(&mut state, p, &nodes, s);
    if pre.is_skip() {
        return None;
    }
    assert!(pre.is_success(), "prescore failed: {pre:?}");
    let score = pl.as_score().expect("score");
    let mut raw: Vec<i64> = nodes
        .iter()
        .map(|n| score.score(&state, p, n).expect("score"))
        .collect();
    assert!(score.normalize(&state, p, &mut raw).is_success());
    Some(candidates.iter().map(|n| n.to_string()).zip(raw).collect())
}

fn four_nodes_two_zones() -> Vec<Node> {
    vec![
        zoned("node-a", "zone1"),
        zoned("node-b", "zone1"),
        zoned("node-x", "zone2"),
        zoned("node-y", "zone2"),
    ]
}

/// Matching pods spread 2/1/0/3 over node-a, node-b, node-x, node-y.
fn pods_2_1_0_3() -> Vec<(Pod, &'static str)> {
    vec![
        (foo("p-a1"), "node-a"),
        (foo("p-a2"), "node-a"),
        (foo("p-b1"), "node-b"),
        (foo("p-y1"), "node-y"),
        (foo("p-y2"), "node-y"),
        (foo("p-y3"), "node-y"),
    ]
}

use Code::{Success, Unschedulable, UnschedulableAndUnresolvable as Unresolvable};

#[test]
fn zones_with_three_and_one_pods_send_the_pod_to_the_lesser_zone() {
    let s = snapshot(
        four_nodes_two_zones(),
        vec![
            (foo("p-a1"), "node-a"),
            (foo("p-a2"), "node-a"),
            (foo("p-b1"), "node-b"),
            (foo("p-x1"), "node-x"),
        ],
    );
    let p = info(
        pod("p")
            .label("foo", "")
            .spread(1, ZONE, DO_NOT_SCHEDULE, "foo", "")
            .build(),
    );
    let got = filter_all(&*list_plugin(), &p, &s);
    assert_eq!(
        codes(&got),
        [
            ("node-a", Unschedulable),
            ("node-b", Unschedulable),
            ("node-x", Success),
            ("node-y", Success),
        ]
    );
    assert_eq!(
        got["node-a"].reasons,
        ["node(s) didn't match pod topology spread constraints"]
    );
}

#[test]
fn even_zones_let_every_node_fit() {
    let s = snapshot(
        four_nodes_two_zones(),
        vec![
            (foo("p-a1"), "node-a"),
            (foo("p-a2"), "node-a"),
            (foo("p-b1"), "node-b"),
            (foo("p-y1"), "node-y"),
            (foo("p-y2"), "node-y"),
            (foo("p-y3"), "node-y"),
        ],
    );
    let p = info(
        pod("p")
            .label("foo", "")
            .spread(1, ZONE, DO_NOT_SCHEDULE, "foo", "")
            .build(),
    );
    let got = filter_all(&*list_plugin(), &p, &s);
    assert!(got.values().all(Status::is_success), "{got:?}");
}

#[test]
fn nodes_spread_2_1_0_3_only_the_empty_node_fits_with_max_skew_1() {
    let s = snapshot(four_nodes_two_zones(), pods_2_1_0_3());
    let p = info(
        pod("p")
            .label("foo", "")
            .spread(1, HOST, DO_NOT_SCHEDULE, "foo", "")
            .build(),
    );
    assert_eq!(
        codes(&filter_all(&*list_plugin(), &p, &s)),
        [
            ("node-a", Unschedulable),
            ("node-b", Unschedulable),
            ("node-x", Success),
            ("node-y", Unschedulable),
        ]
    );
    let p = info(
        pod("p")
            .label("foo", "")
            .spread(2, HOST, DO_NOT_SCHEDULE, "foo", "")
            .build(),
    );
    assert_eq!(
        codes(&filter_all(&*list_plugin(), &p, &s)),
        [
            ("node-a", Unschedulable),
            ("node-b", Success),
            ("node-x", Success),
            ("node-y", Unschedulable),
        ]
    );
}

#[test]
fn a_pod_not_matching_its_own_selector_adds_no_self_match() {
    let s = snapshot(four_nodes_two_zones(), pods_2_1_0_3());
    let p = info(
        pod("p")
            .label("bar", "")
            .spread(1, HOST, DO_NOT_SCHEDULE, "foo", "")
            .build(),
    );
    assert_eq!(
        codes(&filter_all(&*list_plugin(), &p, &s)),
        [
            ("node-a", Unschedulable),
            ("node-b", Success),
            ("node-x", Success),
            ("node-y", Unschedulable),
        ]
    );
}

#[test]
fn a_node_missing_the_topology_key_is_unresolvable_and_not_counted() {
    // node-b's label is misspelt: its pod is not counted, so the zones read 1/2.
    let s = snapshot(
        vec![
            zoned("node-a", "zone1"),
            node("node-b")
                .label("zon", "zone1")
                .label(HOST, "node-b")
                .build(),
            zoned("node-x", "zone2"),
            zoned("node-y", "zone2"),
        ],
        vec![
            (foo("p-a1"), "node-a"),
            (foo("p-b1"), "node-b"),
            (foo("p-x1"), "node-x"),
            (foo("p-y1"), "node-y"),
        ],
    );
    let p = info(
        pod("p")
            .label("foo", "")
            .spread(1, ZONE, DO_NOT_SCHEDULE, "foo", "")
            .build(),
    );
    let got = filter_all(&*list_plugin(), &p, &s);
    assert_eq!(
        codes(&got),
        [
            ("node-a", Success),
            ("node-b", Unresolvable),
            ("node-x", Unschedulable),
            ("node-y", Unschedulable),
        ]
    );
    assert_eq!(
        got["node-b"].reasons,
        ["node(s) didn't match pod topology spread constraints (missing required label)"]
    );
}

#[test]
fn no_node_with_the_topology_key_makes_every_node_unresolvable() {
    let s = snapshot(four_nodes_two_zones(), vec![]);
    let p = info(
        pod("p")
            .label("foo", "")
            .spread(1, "rack", DO_NOT_SCHEDULE, "foo", "")
            .build(),
    );
    let got = filter_all(&*list_plugin(), &p, &s);
    assert!(got.values().all(|s| s.code == Unresolvable), "{got:?}");
}

#[test]
fn pods_in_other_namespaces_and_terminating_pods_are_not_counted() {
    let mut terminating = foo("p-b1");
    terminating.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
    let s = snapshot(
        four_nodes_two_zones(),
        vec![
            (
                pod("p-a1").namespace("ns1").label("foo", "").build(),
                "node-a",
            ),
            (
                pod("p-a2").namespace("ns2").label("foo", "").build(),
                "node-a",
            ),
            (terminating, "node-b"),
            (foo("p-x1"), "node-x"),
            (foo("p-y1"), "node-y"),
        ],
    );
    let p = info(
        pod("p")
            .label("foo", "")
            .spread(1, ZONE, DO_NOT_SCHEDULE, "foo", "")
            .build(),
    );
    assert_eq!(
        codes(&filter_all(&*list_plugin(), &p, &s)),
        [
            ("node-a", Success),
            ("node-b", Success),
            ("node-x", Unschedulable),
            ("node-y", Unschedulable),
        ]
    );
}

#[test]
fn a_nil_selector_matches_no_pod() {
    let s = snapshot(
        four_nodes_two_zones(),
        vec![(foo("p-x1"), "node-x"), (foo("p-y1"), "node-y")],
    );
    let p = pod("p")
        .label("foo", "")
        .spread(1, ZONE, DO_NOT_SCHEDULE, "foo", "")
        .build();
    let p = info(edit_constraints(p, |c| c.label_selector = None));
    let got = filter_all(&*list_plugin(), &p, &s);
    assert!(got.values().all(Status::is_success), "{got:?}");
}

#[test]
fn fewer_domains_than_min_domains_make_the_global_minimum_zero() {
    let nodes = || {
        ["node-a", "node-b", "node-c"]
            .map(|n| node(n).label(HOST, n).build())
            .to_vec()
    };
    let pods = || {
        vec![
            (foo("p-a1"), "node-a"),
            (foo("p-a2"), "node-a"),
            (foo("p-b1"), "node-b"),
            (foo("p-b2"), "node-b"),
            (foo("p-c1"), "node-c"),
        ]
    };
    let s = snapshot(nodes(), pods());
    let with_min = |min: i32| {
        let p = pod("p")
            .label("foo", "")
            .spread(2, HOST, DO_NOT_SCHEDULE, "foo", "")
            .build();
        info(edit_constraints(p, |c| c.min_domains = Some(min)))
    };
    // 3 domains < minDomains 4: the minimum is 0, so 2 + 1 − 0 > 2 on node-a and node-b.
    assert_eq!(
        codes(&filter_all(&*list_plugin(), &with_min(4), &s)),
        [
            ("node-a", Unschedulable),
            ("node-b", Unschedulable),
            ("node-c", Success),
        ]
    );
    // 3 domains ≥ minDomains 2: the minimum is 1 and every node fits.
    let got = filter_all(&*list_plugin(), &with_min(2), &s);
    assert!(got.values().all(Status::is_success), "{got:?}");
}

#[test]
fn node_affinity_policy_honor_leaves_unmatched_nodes_out_of_the_counts() {
    // Matching pods spread 0/2/0/1; the pod's affinity excludes node-b.
    let s = snapshot(
        four_nodes_two_zones(),
        vec![
            (foo("p-b1"), "node-b"),
            (foo("p-b2"), "node-b"),
            (foo("p-y1"), "node-y"),
        ],
    );
    let base = || {
        pod("p")
            .label("foo", "")
            .required_node_affinity(HOST, "NotIn", &["node-b"])
            .spread(1, ZONE, DO_NOT_SCHEDULE, "foo", "")
            .build()
    };
    // Honor (the default): zones read 0/1, so zone1 fits (node-b is left to NodeAffinity).
    assert_eq!(
        codes(&filter_all(&*list_plugin(), &info(base()), &s)),
        [
            ("node-a", Success),
            ("node-b", Success),
            ("node-x", Unschedulable),
            ("node-y", Unschedulable),
        ]
    );
    // Ignore: zones read 2/1, so only zone2 fits.
    let ignore = info(edit_constraints(base(), |c| {
        c.node_affinity_policy = Some("Ignore".to_string())
    }));
    assert_eq!(
        codes(&filter_all(&*list_plugin(), &ignore, &s)),
        [
            ("node-a", Unschedulable),
            ("node-b", Unschedulable),
            ("node-x", Success),
            ("node-y", Success),
        ]
    );
}

#[test]
fn node_affinity_policy_honor_applies_the_node_selector() {
    // node-a is the only node of zone1 and the node selector leaves it out.
    let s = snapshot(
        vec![
            node("node-a")
                .label(ZONE, "zone1")
                .label("disk", "hdd")
                .build(),
            node("node-x")
                .label(ZONE, "zone2")
                .label("disk", "ssd")
                .build(),
            node("node-y")
                .label(ZONE, "zone3")
                .label("disk", "ssd")
                .build(),
        ],
        vec![(foo("p-x1"), "node-x")],
    );
    let p = info(
        pod("p")
            .label("foo", "")
            .node_selector("disk", "ssd")
            .spread(1, ZONE, DO_NOT_SCHEDULE, "foo", "")
            .build(),
    );
    // Domains: zone2 = 1, zone3 = 0 (zone1 excluded).
    assert_eq!(
        codes(&filter_all(&*list_plugin(), &p, &s)),
        [
            ("node-a", Success),
            ("node-x", Unschedulable),
            ("node-y", Success),
        ]
    );
}

#[test]
fn node_taints_policy_honor_leaves_untolerated_nodes_out_of_the_counts() {
    let s = snapshot(
        vec![
            zoned("node-a", "zone1"),
            node("node-x")
                .label(ZONE, "zone2")
                .taint("dedicated", "db", "NoSchedule")
                .build(),
        ],
        vec![(foo("p-a1"), "node-a")],
    );
    let base = || {
        pod("p")
            .label("foo", "")
            .spread(1, ZONE, DO_NOT_SCHEDULE, "foo", "")
            .build()
    };
    // Ignore (the default): the empty tainted zone is the minimum, zone1 is too full.
    assert_eq!(
        codes(&filter_all(&*list_plugin(), &info(base()), &s)),
        [("node-a", Unschedulable), ("node-x", Success)]
    );
    let honor = |p: Pod| {
        info(edit_constraints(p, |c| {
            c.node_taints_policy = Some("Honor".to_string())
        }))
    };
    // Honor: zone2 is not a domain, so zone1 is the minimum and fits.
    assert_eq!(
        codes(&filter_all(&*list_plugin(), &honor(base()), &s)),
        [("node-a", Success), ("node-x", Success)]
    );
    // A toleration brings the tainted zone back.
    let tolerating = honor(
        pod("p")
            .label("foo", "")
            .toleration("dedicated", "Equal", "db", "NoSchedule")
            .spread(1, ZONE, DO_NOT_SCHEDULE, "foo", "")
            .build(),
    );
    assert_eq!(
        codes(&filter_all(&*list_plugin(), &tolerating, &s)),
        [("node-a", Unschedulable), ("node-x", Success)]
    );
}

#[test]
fn match_label_keys_count_only_pods_with_the_same_values() {
    let web = |name: &str, version: &str| {
        pod(name)
            .label("app", "web")
            .label("version", version)
            .build()
    };
    let s = snapshot(
        four_nodes_two_zones(),
        vec![
            (web("old-a1", "v1"), "node-a"),
            (web("old-a2", "v1"), "node-a"),
            (web("new-x1", "v2"), "node-x"),
        ],
    );
    let mut p = pod("p")
        .label("app", "web")
        .label("version", "v2")
        .spread(1, ZONE, DO_NOT_SCHEDULE, "app", "web")
        .build();
    p = edit_constraints(p, |c| {
        c.match_label_keys = Some(vec!["version".to_string()])
    });
    // Only v2 pods count: zones read 0/1, so zone1 fits and zone2 doesn't.
    assert_eq!(
        codes(&filter_all(&*list_plugin(), &info(p), &s)),
        [
            ("node-a", Success),
            ("node-b", Success),
            ("node-x", Unschedulable),
            ("node-y", Unschedulable),
        ]
    );
}

#[test]
fn a_pod_without_hard_constraints_skips_the_filter() {
    let s = snapshot(four_nodes_two_zones(), pods_2_1_0_3());
    let p = info(
        pod("p")
            .label("foo", "")
            .spread(1, HOST, SCHEDULE_ANYWAY, "foo", "")
            .build(),
    );
    let mut state = CycleState::new();
    let pre = list_plugin()
        .as_pre_filter()
        .expect("prefilter")
        .pre_filter(&mut state, &p, &s);
    assert!(pre.is_skip());
    // The system defaults are all ScheduleAnyway: a controlled pod skips the filter too.
    let p = info(controlled(foo("p")));
    let pre = system_plugin()
        .as_pre_filter()
        .expect("prefilter")
        .pre_filter(&mut state, &p, &s);
    assert!(pre.is_skip());
}

#[test]
fn list_default_constraints_filter_controlled_pods_by_their_labels() {
    let pl = new(Some(&json!({
        "defaultingType": "List",
        "defaultConstraints": [
            {"maxSkew": 1, "topologyKey": ZONE, "whenUnsatisfiable": "DoNotSchedule"}
        ],
    })))
    .expect("valid args");
    let s = snapshot(
        four_nodes_two_zones(),
        vec![(foo("p-a1"), "node-a"), (foo("p-a2"), "node-a")],
    );
    let got = filter_all(&*pl, &info(controlled(foo("p"))), &s);
    assert_eq!(
        codes(&got),
        [
            ("node-a", Unschedulable),
            ("node-b", Unschedulable),
            ("node-x", Success),
            ("node-y", Success),
        ]
    );
    // Without a controller there is no selector to default from: no constraint applies.
    let got = filter_all(&*pl, &info(foo("p")), &s);
    assert!(got.values().all(Status::is_success), "{got:?}");
}

#[test]
fn default_selector_drops_per_pod_labels() {
    let p = info(controlled(
        pod("web-0")
            .label("app", "web")
            .label("statefulset.kubernetes.io/pod-name", "web-0")
            .build(),
    ));
    let sel = default_selector(&p).expect("selector");
    assert_eq!(sel.to_string(), "app=web");
    assert!(default_selector(&info(pod("bare").label("app", "web").build())).is_none());
    assert!(default_selector(&info(controlled(pod("unlabelled").build()))).is_none());
}

#[test]
fn schedule_anyway_scores_favour_the_emptier_nodes() {
    let nodes = || {
        ["node-a", "node-b", "node-c", "node-d"]
            .map(|n| node(n).label(LABEL_HOSTNAME, n).build())
            .to_vec()
    };
    let s = snapshot(
        nodes(),
        vec![
            (foo("p-a1"), "node-a"),
            (foo("p-a2"), "node-a"),
            (foo("p-b1"), "node-b"),
            (foo("p-d1"), "node-d"),
            (foo("p-d2"), "node-d"),
            (foo("p-d3"), "node-d"),
        ],
    );
    let all = ["node-a", "node-b", "node-c", "node-d"];
    let with_skew = |max_skew| {
        info(
            pod("p")
                .label("foo", "")
                .spread(max_skew, LABEL_HOSTNAME, SCHEDULE_ANYWAY, "foo", "")
                .build(),
        )
    };
    let got = scores(&*list_plugin(), &with_skew(1), &s, &all).expect("scored");
    let want = [
        ("node-a", 20),
        ("node-b", 60),
        ("node-c", 100),
        ("node-d", 0),
    ];
    assert_eq!(got, want.map(|(n, s)| (n.to_string(), s)));
    // A larger maxSkew flattens the scores.
    let got = scores(&*list_plugin(), &with_skew(2), &s, &all).expect("scored");
    let want = [
        ("node-a", 33),
        ("node-b", 66),
        ("node-c", 100),
        ("node-d", 16),
    ];
    assert_eq!(got, want.map(|(n, s)| (n.to_string(), s)));
}

#[test]
fn scores_weigh_only_the_candidate_nodes_domains() {
    // Matching pods spread 4/2/1/~3~: node-y is not a candidate.
    let names = ["node-a", "node-b", "node-x", "node-y"];
    let s = snapshot(
        names
            .map(|n| node(n).label(LABEL_HOSTNAME, n).build())
            .to_vec(),
        [("node-a", 4), ("node-b", 2), ("node-x", 1), ("node-y", 3)]
            .into_iter()
            .flat_map(|(n, count)| (0..count).map(move |i| (foo(&format!("{n}-{i}")), n)))
            .collect(),
    );
    let p = info(
        pod("p")
            .label("foo", "")
            .spread(1, LABEL_HOSTNAME, SCHEDULE_ANYWAY, "foo", "")
            .build(),
    );
    let got = scores(&*list_plugin(), &p, &s, &["node-a", "node-b", "node-x"]).expect("scored");
    let want = [("node-a", 33), ("node-b", 83), ("node-x", 100)];
    assert_eq!(got, want.map(|(n, s)| (n.to_string(), s)));
}

#[test]
fn zone_scores_prefer_the_emptier_zone_and_zero_nodes_without_the_key() {
    let mut nodes = four_nodes_two_zones();
    nodes.push(node("node-z").label(HOST, "node-z").build());
    let s = snapshot(
        nodes,
        vec![
            (foo("p-a1"), "node-a"),
            (foo("p-a2"), "node-a"),
            (foo("p-b1"), "node-b"),
            (foo("p-x1"), "node-x"),
        ],
    );
    let p = info(
        pod("p")
            .label("foo", "")
            .spread(1, ZONE, SCHEDULE_ANYWAY, "foo", "")
            .build(),
    );
    let got = scores(
        &*list_plugin(),
        &p,
        &s,
        &["node-a", "node-b", "node-x", "node-y", "node-z"],
    )
    .expect("scored");
    // Weight ln(2 + 2): zone1 round(3 × 1.386) = 4, zone2 round(1.386) = 1; node-z lacks the
    // key and gets 0 without pulling the minimum down.
    let want = [
        ("node-a", 25),
        ("node-b", 25),
        ("node-x", 100),
        ("node-y", 100),
        ("node-z", 0),
    ];
    assert_eq!(got, want.map(|(n, s)| (n.to_string(), s)));
}

#[test]
fn system_defaults_score_controlled_pods_by_hostname_without_zone_labels() {
    let names = ["node-a", "node-b", "node-c", "node-d"];
    let s = snapshot(
        names
            .map(|n| node(n).label(LABEL_HOSTNAME, n).build())
            .to_vec(),
        [("node-a", 4), ("node-b", 3), ("node-c", 2), ("node-d", 1)]
            .into_iter()
            .flat_map(|(n, count)| (0..count).map(move |i| (foo(&format!("{n}-{i}")), n)))
            .collect(),
    );
    // Same scores as one hostname constraint with maxSkew 3, as upstream's service case.
    let got = scores(&*system_plugin(), &info(controlled(foo("p"))), &s, &names).expect("scored");
    let want = [
        ("node-a", 44),
        ("node-b", 66),
        ("node-c", 77),
        ("node-d", 100),
    ];
    assert_eq!(got, want.map(|(n, s)| (n.to_string(), s)));
    // An uncontrolled pod has no default selector: Score is skipped.
    assert!(scores(&*system_plugin(), &info(foo("p")), &s, &names).is_none());
    // A pod with only hard constraints of its own gets no soft defaults either.
    let hard = pod("p")
        .label("foo", "")
        .spread(1, ZONE, DO_NOT_SCHEDULE, "foo", "")
        .build();
    assert!(scores(&*system_plugin(), &info(controlled(hard)), &s, &names).is_none());
}

fn pre_filter_state(state: &CycleState) -> &PreFilterState {
    state
        .read::<PreFilterState>(PRE_FILTER_KEY)
        .expect("prefilter state")
}

#[test]
fn remove_pod_and_add_pod_update_the_counts_and_the_minimum() {
    // Upstream's "two spreadConstraints" RemovePod case.
    let s = snapshot(
        vec![
            zoned("node-a", "zone1"),
            zoned("node-b", "zone1"),
            zoned("node-x", "zone2"),
        ],
        vec![
            (foo("p-a1"), "node-a"),
            (foo("p-a2"), "node-a"),
            (foo("p-b1"), "node-b"),
            (foo("p-x1"), "node-x"),
            (foo("p-x2"), "node-x"),
        ],
    );
    let p = info(
        pod("p")
            .label("foo", "")
            .spread(1, ZONE, DO_NOT_SCHEDULE, "foo", "")
            .spread(1, HOST, DO_NOT_SCHEDULE, "foo", "")
            .build(),
    );
    let pl = list_plugin();
    let pf = pl.as_pre_filter().expect("prefilter");
    let mut state = CycleState::new();
    assert!(pf.pre_filter(&mut state, &p, &s).is_success());
    assert_eq!(pre_filter_state(&state).critical_paths[0].min(), 2);

    let node_x = s.get("node-x").expect("node");
    let victim = s.pod("default/p-x1").expect("pod").clone();
    assert!(
        pf.remove_pod(&mut state, &p, &victim, node_x, &s)
            .is_success()
    );
    let st = pre_filter_state(&state);
    assert_eq!(
        st.counts[0],
        HashMap::from([("zone1".into(), 3), ("zone2".into(), 1)])
    );
    assert_eq!(
        st.counts[1],
        HashMap::from([
            ("node-a".into(), 2),
            ("node-b".into(), 1),
            ("node-x".into(), 1)
        ])
    );
    assert_eq!(st.critical_paths[0].0[0], ("zone2".to_string(), 1));
    assert_eq!(st.critical_paths[1].min(), 1);
    // With p-x1 gone node-x fits (zone2: 1 + 1 − 1, node-x: 1 + 1 − 1).
    assert!(
        pl.as_filter()
            .expect("filter")
            .filter(&state, &p, node_x)
            .is_success()
    );

    // Adding a matching pod back in another namespace changes nothing; in the pod's own
    // namespace it does.
    let other_ns = Arc::new(info(pod("q").namespace("other").label("foo", "").build()));
    assert!(
        pf.add_pod(&mut state, &p, &other_ns, node_x, &s)
            .is_success()
    );
    assert_eq!(pre_filter_state(&state).counts[0]["zone2"], 1);
    assert!(pf.add_pod(&mut state, &p, &victim, node_x, &s).is_success());
    let st = pre_filter_state(&state);
    assert_eq!(st.counts[0]["zone2"], 2);
    assert_eq!(st.critical_paths[0].min(), 2);
    assert_eq!(st.critical_paths[1].min(), 1);
    let got = pl.as_filter().expect("filter").filter(&state, &p, node_x);
    assert_eq!(got.code, Unschedulable);
}

#[test]
fn removing_an_unrelated_pod_changes_nothing() {
    let s = snapshot(
        four_nodes_two_zones(),
        vec![
            (pod("p-a0").label("bar", "").build(), "node-a"),
            (foo("p-a1"), "node-a"),
            (foo("p-x1"), "node-x"),
        ],
    );
    let p = info(
        pod("p")
            .label("foo", "")
            .spread(1, ZONE, DO_NOT_SCHEDULE, "foo", "")
            .build(),
    );
    let pl = list_plugin();
    let pf = pl.as_pre_filter().expect("prefilter");
    let mut state = CycleState::new();
    assert!(pf.pre_filter(&mut state, &p, &s).is_success());
    let before = pre_filter_state(&state).counts.clone();
    let unrelated = s.pod("default/p-a0").expect("pod").clone();
    let node_a = s.get("node-a").expect("node");
    assert!(
        pf.remove_pod(&mut state, &p, &unrelated, node_a, &s)
            .is_success()
    );
    assert_eq!(pre_filter_state(&state).counts, before);
}

#[test]
fn preemption_copies_of_the_state_are_independent() {
    let s = snapshot(
        four_nodes_two_zones(),
        vec![(foo("p-a1"), "node-a"), (foo("p-x1"), "node-x")],
    );
    let p = info(
        pod("p")
            .label("foo", "")
            .spread(1, ZONE, DO_NOT_SCHEDULE, "foo", "")
            .build(),
    );
    let pl = list_plugin();
    let pf = pl.as_pre_filter().expect("prefilter");
    let mut state = CycleState::new();
    assert!(pf.pre_filter(&mut state, &p, &s).is_success());
    let mut copy = state.clone();
    let victim = s.pod("default/p-a1").expect("pod").clone();
    assert!(
        pf.remove_pod(&mut copy, &p, &victim, s.get("node-a").expect("node"), &s)
            .is_success()
    );
    assert_eq!(pre_filter_state(&copy).counts[0]["zone1"], 0);
    assert_eq!(pre_filter_state(&state).counts[0]["zone1"], 1);
}

#[test]
fn critical_paths_keep_the_minimum_through_updates() {
    let mut paths = CriticalPaths::new();
    for (v, n) in [("z1", 3), ("z2", 1), ("z3", 2)] {
        paths.update(v, n);
    }
    assert_eq!(paths.0[0], ("z2".to_string(), 1));
    assert_eq!(paths.0[1], ("z3".to_string(), 2));
    paths.update("z2", 4);
    assert_eq!(paths.0[0], ("z3".to_string(), 2));
    paths.update("z1", 0);
    assert_eq!(paths.min(), 0);
}

#[test]
fn args_are_validated_as_upstream() {
    let err = |v: serde_json::Value| new(Some(&v)).err().expect("invalid args");
    assert!(
        err(json!({"defaultConstraints": [
            {"maxSkew": 1, "topologyKey": ZONE, "whenUnsatisfiable": "ScheduleAnyway"}
        ]}))
        .contains("when .defaultConstraints are not empty")
    );
    let e = err(json!({"defaultingType": "List", "defaultConstraints": [
        {"maxSkew": 0, "topologyKey": ZONE, "whenUnsatisfiable": "Sometimes",
         "labelSelector": {"matchLabels": {"a": "b"}}},
        {"maxSkew": 1, "topologyKey": ZONE, "whenUnsatisfiable": "Sometimes"}
    ]}));
    assert!(
        e.contains("defaultConstraints[0].maxSkew: Invalid value: 0"),
        "{e}"
    );
    assert!(
        e.contains("defaultConstraints[0].whenUnsatisfiable: Unsupported value"),
        "{e}"
    );
    assert!(
        e.contains("defaultConstraints[0].labelSelector: Forbidden"),
        "{e}"
    );
    assert!(e.contains("defaultConstraints[1]: Duplicate value"), "{e}");
    assert!(err(json!({"defaultingType": "Sometimes"})).contains("defaultingType: Unsupported"));
    assert!(err(json!({"defaultConstrains": []})).contains("unknown field"));
    assert!(
        new(Some(&json!({
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "PodTopologySpreadArgs",
            "defaultingType": "List"
        })))
        .is_ok()
    );
}
