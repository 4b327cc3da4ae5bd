use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector as ApiNodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, Pod, PodSpec, PreferredSchedulingTerm,
};

use super::*;

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

fn selector(terms: Vec<NodeSelectorTerm>) -> ApiNodeSelector {
    ApiNodeSelector {
        node_selector_terms: terms,
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Whether one term, parsed leniently, matches the node.
fn term_matches(t: NodeSelectorTerm, node_labels: &[(&str, &str)], name: &str) -> bool {
    NodeSelector::parse_lenient(&selector(vec![t])).matches(&labels(node_labels), name)
}

#[test]
fn expressions_follow_label_selector_semantics() {
    let ssd = [("disk", "ssd")];
    let one = |op: &str, values: &[&str]| term(vec![req("disk", op, values)], vec![]);
    assert!(term_matches(one("In", &["ssd", "nvme"]), &ssd, "n"));
    assert!(!term_matches(one("In", &["hdd"]), &ssd, "n"));
    assert!(term_matches(one("NotIn", &["hdd"]), &ssd, "n"));
    assert!(term_matches(one("NotIn", &["hdd"]), &[], "n"));
    assert!(!term_matches(one("NotIn", &["ssd"]), &ssd, "n"));
    assert!(term_matches(one("Exists", &[]), &ssd, "n"));
    assert!(!term_matches(one("Exists", &[]), &[], "n"));
    assert!(term_matches(one("DoesNotExist", &[]), &[], "n"));
    assert!(!term_matches(one("DoesNotExist", &[]), &ssd, "n"));
}

#[test]
fn gt_and_lt_compare_integers() {
    let cores = [("cores", "8")];
    let one = |op: &str, value: &str| term(vec![req("cores", op, &[value])], vec![]);
    assert!(term_matches(one("Gt", "4"), &cores, "n"));
    assert!(!term_matches(one("Gt", "8"), &cores, "n"));
    assert!(term_matches(one("Lt", "16"), &cores, "n"));
    assert!(!term_matches(one("Lt", "8"), &cores, "n"));
    // Missing or non-integer labels never compare.
    assert!(!term_matches(one("Gt", "4"), &[], "n"));
    assert!(!term_matches(one("Gt", "4"), &[("cores", "many")], "n"));
    // A non-integer value makes the term invalid.
    assert!(!term_matches(one("Gt", "four"), &cores, "n"));
}

#[test]
fn terms_are_ored_and_requirements_anded() {
    let sel = NodeSelector::parse_lenient(&selector(vec![
        term(
            vec![req("a", "Exists", &[]), req("b", "Exists", &[])],
            vec![],
        ),
        term(vec![req("c", "Exists", &[])], vec![]),
    ]));
    assert!(sel.matches(&labels(&[("a", "1"), ("b", "1")]), "n"));
    assert!(!sel.matches(&labels(&[("a", "1")]), "n"));
    assert!(sel.matches(&labels(&[("c", "1")]), "n"));
}

#[test]
fn empty_terms_and_selectors_match_no_node() {
    assert!(!NodeSelector::parse_lenient(&selector(vec![])).matches(&labels(&[]), "n"));
    let empty = NodeSelectorTerm {
        match_expressions: Some(vec![]),
        match_fields: Some(vec![]),
    };
    assert!(!term_matches(empty, &[("a", "1")], "n"));
}

#[test]
fn invalid_term_matches_no_node_but_others_still_do() {
    let sel = NodeSelector::parse_lenient(&selector(vec![
        term(vec![req("a", "Bogus", &["x"])], vec![]),
        term(vec![req("b", "Exists", &[])], vec![]),
    ]));
    assert!(!sel.matches(&labels(&[("a", "x")]), "n"));
    assert!(sel.matches(&labels(&[("b", "1")]), "n"));
    // In without values is invalid too.
    assert!(!term_matches(
        term(vec![req("a", "In", &[])], vec![]),
        &[("a", "")],
        "n"
    ));
}

#[test]
fn strict_parse_lists_every_problem_with_its_path() {
    let err = NodeSelector::parse(&selector(vec![
        term(vec![req("a", "Bogus", &[])], vec![]),
        term(vec![], vec![req(NODE_NAME_FIELD, "In", &["x", "y"])]),
    ]))
    .expect_err("invalid");
    assert!(
        err.starts_with(
            r#"nodeSelectorTerms[0].matchExpressions[0].operator: Unsupported value: "Bogus""#
        ),
        "{err}"
    );
    assert!(
        err.contains(
            r#", nodeSelectorTerms[1].matchFields[0].values: Invalid value: ["x", "y"]: must have one element"#
        ),
        "{err}"
    );
    assert!(
        NodeSelector::parse(&selector(vec![term(vec![req("a", "Exists", &[])], vec![])])).is_ok()
    );
}

#[test]
fn match_fields_compare_the_node_name() {
    let pinned = |op: &str| term(vec![], vec![req(NODE_NAME_FIELD, op, &["node-1"])]);
    assert!(term_matches(pinned("In"), &[], "node-1"));
    assert!(!term_matches(pinned("In"), &[], "node-2"));
    assert!(!term_matches(pinned("NotIn"), &[], "node-1"));
    assert!(term_matches(pinned("NotIn"), &[], "node-2"));
    // Any other field reads as empty.
    let other = term(vec![], vec![req("metadata.uid", "In", &["u"])]);
    assert!(!term_matches(other, &[], "node-1"));
    // Fields and expressions in one term are ANDed.
    let both = term(
        vec![req("a", "Exists", &[])],
        vec![req(NODE_NAME_FIELD, "In", &["node-1"])],
    );
    assert!(term_matches(both.clone(), &[("a", "1")], "node-1"));
    assert!(!term_matches(both.clone(), &[], "node-1"));
    assert!(!term_matches(both, &[("a", "1")], "node-2"));
}

#[test]
fn match_fields_need_one_value_and_in_or_not_in() {
    let several = term(vec![], vec![req(NODE_NAME_FIELD, "In", &["a", "b"])]);
    assert!(!term_matches(several, &[], "a"));
    let exists = term(vec![], vec![req(NODE_NAME_FIELD, "Exists", &[])]);
    assert!(!term_matches(exists, &[], "a"));
}

#[test]
fn a_node_without_name_skips_match_fields() {
    // Upstream's node fields set is empty for a nameless node, and an empty set is not
    // compared.
    let pinned = term(vec![], vec![req(NODE_NAME_FIELD, "In", &["node-1"])]);
    assert!(term_matches(pinned, &[], ""));
}

fn spec(node_selector: &[(&str, &str)], required: Option<Vec<NodeSelectorTerm>>) -> PodSpec {
    PodSpec {
        node_selector: (!node_selector.is_empty()).then(|| labels(node_selector)),
        affinity: required.map(|terms| Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(selector(terms)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn required_affinity_needs_node_selector_and_a_term() {
    let r = RequiredNodeAffinity::from_spec(&spec(
        &[("zone", "a")],
        Some(vec![term(vec![req("disk", "In", &["ssd"])], vec![])]),
    ));
    assert!(!r.is_empty());
    assert!(r.matches(&labels(&[("zone", "a"), ("disk", "ssd")]), "n"));
    assert!(!r.matches(&labels(&[("zone", "b"), ("disk", "ssd")]), "n"));
    assert!(!r.matches(&labels(&[("zone", "a"), ("disk", "hdd")]), "n"));
    assert!(!r.matches(&labels(&[("disk", "ssd")]), "n"));
}

#[test]
fn required_affinity_without_selector_or_terms_matches_every_node() {
    let r = RequiredNodeAffinity::from_spec(&spec(&[], None));
    assert!(r.is_empty());
    assert!(r.matches(&labels(&[]), "n"));
    let r = RequiredNodeAffinity::from_pod(&Pod::default());
    assert!(r.is_empty());
    assert!(r.matches(&labels(&[]), ""));
    // A required affinity with no terms is set but selects nothing.
    let r = RequiredNodeAffinity::from_spec(&spec(&[], Some(vec![])));
    assert!(!r.is_empty());
    assert!(!r.matches(&labels(&[("a", "1")]), "n"));
}

#[test]
fn from_pod_reads_the_pod_spec() {
    let pod = Pod {
        spec: Some(spec(&[("zone", "a")], None)),
        ..Default::default()
    };
    let r = RequiredNodeAffinity::from_pod(&pod);
    assert!(r.matches(&labels(&[("zone", "a")]), "n"));
    assert!(!r.matches(&labels(&[("zone", "b")]), "n"));
}

fn preferred(weight: i32, exprs: Vec<NodeSelectorRequirement>) -> PreferredSchedulingTerm {
    PreferredSchedulingTerm {
        weight,
        preference: term(exprs, vec![]),
    }
}

#[test]
fn preferred_terms_sum_the_weights_of_matching_terms() {
    let p = PreferredTerms::parse(&[
        preferred(5, vec![req("a", "Exists", &[])]),
        preferred(3, vec![req("b", "Exists", &[])]),
        // Dropped without being checked: zero weight, or no requirements.
        preferred(0, vec![req("a", "Bogus", &[])]),
        preferred(7, vec![]),
    ])
    .expect("valid");
    assert_eq!(p.score(&labels(&[("a", "1"), ("b", "1")]), "n"), 8);
    assert_eq!(p.score(&labels(&[("b", "1")]), "n"), 3);
    assert_eq!(p.score(&labels(&[]), "n"), 0);
}

#[test]
fn invalid_preferred_term_is_an_error() {
    let err =
        PreferredTerms::parse(&[preferred(1, vec![req("a", "Bogus", &[])])]).expect_err("invalid");
    assert!(
        err.starts_with(r#"[0].matchExpressions[0].operator: Unsupported value: "Bogus""#),
        "{err}"
    );
}
