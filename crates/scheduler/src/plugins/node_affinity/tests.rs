use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity as ApiNodeAffinity, NodeSelector as ApiNodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, Pod, PreferredSchedulingTerm,
};
use serde_json::json;

use super::*;
use crate::framework::Code;
use crate::testing::{node, pod};

fn req(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.to_string(),
        operator: operator.to_string(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
    }
}

fn term(
    exprs: Vec<NodeSelectorRequirement>,
    fields: Vec<NodeSelectorRequirement>,
) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_expressions: (!exprs.is_empty()).then_some(exprs),
        match_fields: (!fields.is_empty()).then_some(fields),
    }
}

/// Sets the pod's required node affinity to exactly these terms.
fn with_required(mut p: Pod, terms: Vec<NodeSelectorTerm>) -> Pod {
    if let Some(spec) = p.spec.as_mut() {
        spec.affinity
            .get_or_insert_with(Affinity::default)
            .node_affinity
            .get_or_insert_with(ApiNodeAffinity::default)
            .required_during_scheduling_ignored_during_execution = Some(ApiNodeSelector {
            node_selector_terms: terms,
        });
    }
    p
}

fn pod_info(p: Pod) -> PodInfo {
    PodInfo::new(Arc::new(p))
}

fn node_info(n: crate::testing::NodeBuilder) -> NodeInfo {
    NodeInfo::new(Arc::new(n.build()))
}

/// Runs PreFilter then Filter, as the framework does (Filter skipped on Skip).
fn run_filter(pl: &NodeAffinity, p: &PodInfo, n: &NodeInfo) -> Status {
    let mut state = CycleState::new();
    let pre = pl.pre_filter(&mut state, p, &Snapshot::new());
    if pre.is_skip() {
        return Status::success();
    }
    if !pre.is_success() {
        return pre;
    }
    pl.filter(&state, p, n)
}

fn fits(p: &PodInfo, n: &NodeInfo) -> bool {
    run_filter(&NodeAffinity::default(), p, n).is_success()
}

#[test]
fn pod_without_selector_or_affinity_is_skipped() {
    let mut state = CycleState::new();
    let s = NodeAffinity::default().pre_filter(
        &mut state,
        &pod_info(pod("p").build()),
        &Snapshot::new(),
    );
    assert!(s.is_skip());
}

#[test]
fn node_selector_needs_every_label() {
    let p = pod_info(
        pod("p")
            .node_selector("zone", "a")
            .node_selector("disk", "ssd")
            .build(),
    );
    assert!(fits(
        &p,
        &node_info(
            node("n")
                .label("zone", "a")
                .label("disk", "ssd")
                .label("x", "y")
        )
    ));
    assert!(!fits(&p, &node_info(node("n").label("zone", "a"))));
    assert!(!fits(
        &p,
        &node_info(node("n").label("zone", "b").label("disk", "ssd"))
    ));
}

#[test]
fn mismatch_reason_is_upstream_and_unresolvable() {
    let p = pod_info(pod("p").node_selector("zone", "a").build());
    let s = run_filter(&NodeAffinity::default(), &p, &node_info(node("n")));
    assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
    assert_eq!(
        s.reasons,
        vec!["node(s) didn't match Pod's node affinity/selector"]
    );
}

#[test]
fn node_selector_and_required_affinity_must_both_match() {
    let p = pod_info(
        pod("p")
            .node_selector("zone", "a")
            .required_node_affinity("disk", "In", &["ssd"])
            .build(),
    );
    assert!(fits(
        &p,
        &node_info(node("n").label("zone", "a").label("disk", "ssd"))
    ));
    assert!(!fits(&p, &node_info(node("n").label("zone", "a"))));
    assert!(!fits(&p, &node_info(node("n").label("disk", "ssd"))));
}

#[test]
fn terms_are_ored_and_expressions_anded() {
    let p = pod_info(with_required(
        pod("p").build(),
        vec![
            term(vec![req("a", "In", &["1"]), req("b", "In", &["2"])], vec![]),
            term(vec![req("c", "Exists", &[])], vec![]),
        ],
    ));
    assert!(fits(
        &p,
        &node_info(node("n").label("a", "1").label("b", "2"))
    ));
    assert!(
        !fits(&p, &node_info(node("n").label("a", "1"))),
        "expressions are ANDed"
    );
    assert!(
        fits(&p, &node_info(node("n").label("c", ""))),
        "terms are ORed"
    );
    assert!(!fits(&p, &node_info(node("n"))));
}

#[test]
fn set_operators_follow_label_selector_semantics() {
    let one = |op: &str, values: &[&str]| {
        pod_info(with_required(
            pod("p").build(),
            vec![term(vec![req("k", op, values)], vec![])],
        ))
    };
    let with = node_info(node("n").label("k", "v"));
    let other = node_info(node("n").label("k", "w"));
    let without = node_info(node("n"));

    let p = one("In", &["v", "x"]);
    assert!(fits(&p, &with) && !fits(&p, &other) && !fits(&p, &without));
    // NotIn matches nodes without the label.
    let p = one("NotIn", &["v"]);
    assert!(!fits(&p, &with) && fits(&p, &other) && fits(&p, &without));
    let p = one("Exists", &[]);
    assert!(fits(&p, &with) && fits(&p, &other) && !fits(&p, &without));
    let p = one("DoesNotExist", &[]);
    assert!(!fits(&p, &with) && !fits(&p, &other) && fits(&p, &without));
}

#[test]
fn gt_and_lt_compare_integers() {
    let gt = pod_info(
        pod("p")
            .required_node_affinity("cores", "Gt", &["4"])
            .build(),
    );
    let lt = pod_info(
        pod("p")
            .required_node_affinity("cores", "Lt", &["4"])
            .build(),
    );
    let eight = node_info(node("n").label("cores", "8"));
    let four = node_info(node("n").label("cores", "4"));
    let two = node_info(node("n").label("cores", "2"));
    let words = node_info(node("n").label("cores", "many"));
    let none = node_info(node("n"));
    assert!(fits(&gt, &eight) && !fits(&gt, &four) && !fits(&gt, &two));
    assert!(!fits(&lt, &eight) && !fits(&lt, &four) && fits(&lt, &two));
    // A label that is not an integer, or no label, never matches.
    assert!(!fits(&gt, &words) && !fits(&lt, &words));
    assert!(!fits(&gt, &none) && !fits(&lt, &none));
}

#[test]
fn invalid_expression_makes_only_its_term_unmatchable() {
    let p = pod_info(with_required(
        pod("p").build(),
        vec![
            term(vec![req("cores", "Gt", &["lots"])], vec![]),
            term(vec![req("zone", "In", &["a"])], vec![]),
        ],
    ));
    assert!(!fits(&p, &node_info(node("n").label("cores", "8"))));
    assert!(fits(&p, &node_info(node("n").label("zone", "a"))));

    let bad_op = pod_info(with_required(
        pod("p").build(),
        vec![term(vec![req("k", "Equals", &["v"])], vec![])],
    ));
    assert!(!fits(&bad_op, &node_info(node("n").label("k", "v"))));
}

#[test]
fn empty_terms_match_no_node() {
    let p = pod_info(with_required(pod("p").build(), vec![]));
    assert!(!fits(&p, &node_info(node("n"))));
    let p = pod_info(with_required(pod("p").build(), vec![term(vec![], vec![])]));
    assert!(!fits(&p, &node_info(node("n"))));
}

#[test]
fn match_fields_select_by_node_name() {
    let p = pod_info(with_required(
        pod("p").build(),
        vec![term(vec![], vec![req("metadata.name", "In", &["n1"])])],
    ));
    assert!(fits(&p, &node_info(node("n1"))));
    let s = run_filter(&NodeAffinity::default(), &p, &node_info(node("n2")));
    assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
    // Upstream never filters nodes outside the pinned names and reports them so.
    assert_eq!(
        s.reasons,
        vec!["node(s) didn't satisfy plugin(s) [NodeAffinity]"]
    );

    let not_in = pod_info(with_required(
        pod("p").build(),
        vec![term(vec![], vec![req("metadata.name", "NotIn", &["n1"])])],
    ));
    assert!(!fits(&not_in, &node_info(node("n1"))));
    assert!(fits(&not_in, &node_info(node("n2"))));
}

#[test]
fn match_fields_and_expressions_in_one_term_are_anded() {
    let p = pod_info(with_required(
        pod("p").build(),
        vec![term(
            vec![req("zone", "In", &["a"])],
            vec![req("metadata.name", "In", &["n1"])],
        )],
    ));
    assert!(fits(&p, &node_info(node("n1").label("zone", "a"))));
    let s = run_filter(
        &NodeAffinity::default(),
        &p,
        &node_info(node("n1").label("zone", "b")),
    );
    assert_eq!(s.reasons, vec![ERR_REASON_POD]);
}

#[test]
fn match_fields_with_several_values_is_invalid() {
    let p = pod_info(with_required(
        pod("p").build(),
        vec![term(
            vec![],
            vec![req("metadata.name", "In", &["n1", "n2"])],
        )],
    ));
    let s = run_filter(&NodeAffinity::default(), &p, &node_info(node("n1")));
    assert_eq!(s.reasons, vec![ERR_REASON_POD]);
}

#[test]
fn pinned_names_are_intersected_within_and_united_across_terms() {
    let p = pod_info(with_required(
        pod("p").build(),
        vec![
            term(
                vec![],
                vec![
                    req("metadata.name", "In", &["n1"]),
                    req("metadata.name", "In", &["n1"]),
                ],
            ),
            term(vec![], vec![req("metadata.name", "In", &["n2"])]),
        ],
    ));
    assert!(fits(&p, &node_info(node("n1"))));
    assert!(fits(&p, &node_info(node("n2"))));
    assert!(!fits(&p, &node_info(node("n3"))));
}

#[test]
fn conflicting_pinned_names_reject_in_pre_filter() {
    let p = pod_info(with_required(
        pod("p").build(),
        vec![term(
            vec![],
            vec![
                req("metadata.name", "In", &["n1"]),
                req("metadata.name", "In", &["n2"]),
            ],
        )],
    ));
    let mut state = CycleState::new();
    let s = NodeAffinity::default().pre_filter(&mut state, &p, &Snapshot::new());
    assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
    assert_eq!(s.reasons, vec!["pod affinity terms conflict"]);
}

#[test]
fn a_term_without_names_does_not_pin() {
    let p = pod_info(with_required(
        pod("p").build(),
        vec![
            term(vec![], vec![req("metadata.name", "In", &["n1"])]),
            term(vec![req("zone", "In", &["a"])], vec![]),
        ],
    ));
    assert!(fits(&p, &node_info(node("n2").label("zone", "a"))));
    let s = run_filter(&NodeAffinity::default(), &p, &node_info(node("n2")));
    assert_eq!(s.reasons, vec![ERR_REASON_POD]);
}

#[test]
fn filter_without_pre_filter_parses_on_the_fly() {
    let p = pod_info(pod("p").node_selector("zone", "a").build());
    let pl = NodeAffinity::default();
    assert!(
        pl.filter(
            &CycleState::new(),
            &p,
            &node_info(node("n").label("zone", "a"))
        )
        .is_success()
    );
    assert!(
        !pl.filter(&CycleState::new(), &p, &node_info(node("n")))
            .is_success()
    );
}

#[test]
fn required_node_affinity_is_reusable() {
    let r = RequiredNodeAffinity::from_pod(&pod("p").build());
    assert!(r.is_empty());
    let n = node_info(node("n"));
    assert!(r.matches(&n.labels, &n.name));
    let r = RequiredNodeAffinity::from_pod(
        &pod("p").required_node_affinity("k", "Exists", &[]).build(),
    );
    assert!(!r.is_empty());
    let labelled = node_info(node("n").label("k", "v"));
    assert!(r.matches(&labelled.labels, &labelled.name));
    assert!(!r.matches(&n.labels, &n.name));
}

fn added(value: serde_json::Value) -> Result<Arc<dyn Plugin>, String> {
    new(Some(&value))
}

#[test]
fn added_affinity_applies_to_every_pod_with_its_own_reason() {
    let pl = NodeAffinity::with_added_affinity(Some(&ApiNodeAffinity {
        required_during_scheduling_ignored_during_execution: Some(ApiNodeSelector {
            node_selector_terms: vec![term(vec![req("pool", "In", &["batch"])], vec![])],
        }),
        preferred_during_scheduling_ignored_during_execution: None,
    }))
    .expect("valid");
    // Not skipped even though the pod has no selector of its own.
    let p = pod_info(pod("p").build());
    assert!(run_filter(&pl, &p, &node_info(node("n").label("pool", "batch"))).is_success());
    let s = run_filter(&pl, &p, &node_info(node("n")));
    assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
    assert_eq!(
        s.reasons,
        vec!["node(s) didn't match scheduler-enforced node affinity"]
    );

    // Both must match.
    let p = pod_info(pod("p").node_selector("zone", "a").build());
    let s = run_filter(&pl, &p, &node_info(node("n").label("pool", "batch")));
    assert_eq!(s.reasons, vec![ERR_REASON_POD]);
}

#[test]
fn args_parse_from_camel_case_json() {
    let pl = added(json!({
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "NodeAffinityArgs",
        "addedAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "pool", "operator": "In", "values": ["batch"]}
                ]}]
            }
        }
    }))
    .expect("valid args");
    let f = pl.as_filter().expect("filter");
    let p = pod_info(pod("p").build());
    assert!(
        f.filter(
            &CycleState::new(),
            &p,
            &node_info(node("n").label("pool", "batch"))
        )
        .is_success()
    );
    assert!(
        !f.filter(&CycleState::new(), &p, &node_info(node("n")))
            .is_success()
    );
    assert!(new(None).is_ok());
}

#[test]
fn invalid_args_are_rejected() {
    let err = added(json!({"addedAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "cores", "operator": "Gt", "values": ["many"]}
            ]}]
        }
    }}))
    .err()
    .expect("invalid Gt value");
    assert!(
        err.contains("addedAffinity.requiredDuringSchedulingIgnoredDuringExecution"),
        "{err}"
    );
    assert!(
        err.contains("nodeSelectorTerms[0].matchExpressions[0]"),
        "{err}"
    );

    assert!(
        added(json!({"addedAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {
                "matchExpressions": [{"key": "k", "operator": "Bogus"}]
            }}]
        }}))
        .is_err()
    );
    assert!(
        added(json!({"addedAffinityy": {}})).is_err(),
        "unknown fields are rejected"
    );
}

fn preferred(weight: i32, exprs: Vec<NodeSelectorRequirement>) -> PreferredSchedulingTerm {
    PreferredSchedulingTerm {
        weight,
        preference: term(exprs, vec![]),
    }
}

/// PreScore, Score on every node, then NormalizeScore; `None` when PreScore skipped.
fn scores(pl: &NodeAffinity, p: &PodInfo, nodes: &[NodeInfo]) -> Option<Vec<i64>> {
    let refs: Vec<&NodeInfo> = nodes.iter().collect();
    let mut state = CycleState::new();
    let s = pl.pre_score(&mut state, p, &refs, &Snapshot::new());
    if s.is_skip() {
        return None;
    }
    assert!(s.is_success(), "{s:?}");
    let mut raw: Vec<i64> = nodes
        .iter()
        .map(|n| pl.score(&state, p, n).expect("score"))
        .collect();
    assert!(pl.normalize(&state, p, &mut raw).is_success());
    Some(raw)
}

#[test]
fn score_sums_matching_weights_and_normalizes() {
    let p = pod_info(
        pod("p")
            .preferred_node_affinity(20, "zone", "In", &["a"])
            .preferred_node_affinity(60, "disk", "In", &["ssd"])
            .build(),
    );
    let nodes = [
        node_info(node("none")),
        node_info(node("zone").label("zone", "a")),
        node_info(node("disk").label("disk", "ssd")),
        node_info(node("both").label("zone", "a").label("disk", "ssd")),
    ];
    // Raw 0, 20, 60, 80; scaled against the highest (80).
    assert_eq!(
        scores(&NodeAffinity::default(), &p, &nodes),
        Some(vec![0, 25, 75, 100])
    );
}

#[test]
fn score_is_skipped_without_preferred_terms() {
    let p = pod_info(pod("p").required_node_affinity("k", "Exists", &[]).build());
    assert_eq!(
        scores(&NodeAffinity::default(), &p, &[node_info(node("n"))]),
        None
    );
}

#[test]
fn score_ignores_zero_weight_terms_and_keeps_zero_scores() {
    let mut p = pod("p").build();
    if let Some(spec) = p.spec.as_mut() {
        spec.affinity = Some(Affinity {
            node_affinity: Some(ApiNodeAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![preferred(
                    0,
                    vec![req("k", "Exists", &[])],
                )]),
                required_during_scheduling_ignored_during_execution: None,
            }),
            ..Default::default()
        });
    }
    let nodes = [node_info(node("a").label("k", "v")), node_info(node("b"))];
    assert_eq!(
        scores(&NodeAffinity::default(), &pod_info(p), &nodes),
        Some(vec![0, 0])
    );
}

#[test]
fn invalid_preferred_term_is_an_error_in_pre_score() {
    let p = pod_info(
        pod("p")
            .preferred_node_affinity(10, "cores", "Lt", &["few"])
            .build(),
    );
    let mut state = CycleState::new();
    let s = NodeAffinity::default().pre_score(&mut state, &p, &[], &Snapshot::new());
    assert_eq!(s.code, Code::Error);
}

#[test]
fn added_preferred_terms_score_every_pod() {
    let pl = NodeAffinity::with_added_affinity(Some(&ApiNodeAffinity {
        required_during_scheduling_ignored_during_execution: None,
        preferred_during_scheduling_ignored_during_execution: Some(vec![preferred(
            10,
            vec![req("pool", "In", &["general"])],
        )]),
    }))
    .expect("valid");
    let p = pod_info(
        pod("p")
            .preferred_node_affinity(30, "zone", "In", &["a"])
            .build(),
    );
    let nodes = [
        node_info(node("a").label("pool", "general")),
        node_info(node("b").label("zone", "a")),
        node_info(node("c").label("zone", "a").label("pool", "general")),
    ];
    // Raw 10, 30, 40.
    assert_eq!(scores(&pl, &p, &nodes), Some(vec![25, 75, 100]));
    // A pod without preferences is still scored by the added terms.
    let plain = pod_info(pod("q").build());
    assert_eq!(scores(&pl, &plain, &nodes), Some(vec![100, 0, 100]));
}

#[test]
fn default_normalize_score_scales_and_reverses() {
    let mut s = vec![0, 5, 10];
    default_normalize_score(100, false, &mut s);
    assert_eq!(s, vec![0, 50, 100]);
    let mut s = vec![0, 5, 10];
    default_normalize_score(100, true, &mut s);
    assert_eq!(s, vec![100, 50, 0]);
    let mut s = vec![0, 0];
    default_normalize_score(100, false, &mut s);
    assert_eq!(s, vec![0, 0]);
    let mut s = vec![0, 0];
    default_normalize_score(100, true, &mut s);
    assert_eq!(s, vec![100, 100]);
    let mut s = vec![1, 2, 3];
    default_normalize_score(100, false, &mut s);
    assert_eq!(
        s,
        vec![33, 66, 100],
        "integer division truncates as upstream"
    );
}
