use super::*;
use proptest::prelude::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sel(s: &str) -> LabelSelector {
    LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
}

fn err(s: &str) -> String {
    match LabelSelector::parse(s) {
        Ok(parsed) => panic!("{s:?} should not parse, got {parsed:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn parses_every_operator() {
    let s = sel("a=b,c==d,e!=f,g in (x,y),h notin (z),i,!j, k>3,l<4");
    let ops: Vec<(&str, Operator, Vec<&str>)> = s
        .requirements
        .iter()
        .map(|r| {
            (
                r.key.as_str(),
                r.operator,
                r.values.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        vec![
            ("a", Operator::Equals, vec!["b"]),
            ("c", Operator::Equals, vec!["d"]),
            ("e", Operator::NotEquals, vec!["f"]),
            ("g", Operator::In, vec!["x", "y"]),
            ("h", Operator::NotIn, vec!["z"]),
            ("i", Operator::Exists, vec![]),
            ("j", Operator::DoesNotExist, vec![]),
            ("k", Operator::GreaterThan, vec!["3"]),
            ("l", Operator::LessThan, vec!["4"]),
        ]
    );
    assert_eq!(
        s.to_string(),
        "a=b,c=d,e!=f,g in (x,y),h notin (z),i,!j,k>3,l<4"
    );
}

#[test]
fn empty_and_whitespace_select_everything() {
    assert!(sel("").is_everything());
    assert!(sel("   ").is_everything());
    assert!(LabelSelector::everything().matches(&labels(&[])));
    assert_eq!(LabelSelector::everything().to_string(), "");
}

#[test]
fn whitespace_tolerant() {
    assert_eq!(sel(" a = b , c in ( x , y ) "), sel("a=b,c in (x,y)"));
    assert_eq!(sel("a\t!=\nb"), sel("a!=b"));
}

#[test]
fn requirements_sorted_by_key_values_sorted_and_deduped() {
    let s = sel("z=1,a in (c,b,c),m");
    assert_eq!(s.to_string(), "a in (b,c),m,z=1");
}

#[test]
fn keywords_are_values_in_value_position() {
    let s = sel("in=notin,notin in (in,notin)");
    assert!(s.matches(&labels(&[("in", "notin"), ("notin", "in")])));
    assert_eq!(sel(&s.to_string()), s);
}

#[test]
fn empty_values() {
    // `a=` and `a in ()` mean the empty value, as in Kubernetes.
    assert!(sel("a=").matches(&labels(&[("a", "")])));
    assert!(!sel("a=").matches(&labels(&[])));
    assert_eq!(sel("a in ()").requirements[0].values, vec![""]);
    assert_eq!(sel("a in (,x)").requirements[0].values, vec!["", "x"]);
    assert_eq!(sel("a in (x,)").requirements[0].values, vec!["", "x"]);
    assert_eq!(
        sel("a in (x,,y)").requirements[0].values,
        vec!["", "x", "y"]
    );
    assert_eq!(sel("a=,b").to_string(), "a=,b");
}

#[test]
fn matching_semantics() {
    let l = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
    for (s, want) in [
        ("app=web", true),
        ("app==web", true),
        ("app=db", false),
        ("app!=db", true),
        ("missing!=x", true), // != matches absent keys
        ("missing notin (x)", true),
        ("missing in (x)", false),
        ("missing=x", false),
        ("app in (db,web)", true),
        ("app notin (db,web)", false),
        ("app", true),
        ("missing", false),
        ("!missing", true),
        ("!app", false),
        ("n>4", true),
        ("n>5", false),
        ("n<6", true),
        ("app>1", false), // not an integer
        ("missing<1", false),
        ("app=web,tier=front", true),
        ("app=web,tier=back", false),
    ] {
        assert_eq!(sel(s).matches(&l), want, "{s}");
    }
}

#[test]
fn syntax_errors_match_kubernetes() {
    assert_eq!(
        err("a b"),
        "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
    );
    assert_eq!(err("a=b c"), "found 'c', expected: ',' or 'end of string'");
    assert_eq!(err("a=b,"), "found '', expected: identifier after ','");
    assert_eq!(err("a=b,,c"), "found ',', expected: identifier after ','");
    assert_eq!(
        err(",a"),
        "found ',', expected: !, identifier, or 'end of string'"
    );
    assert_eq!(
        err("=a"),
        "found '=', expected: !, identifier, or 'end of string'"
    );
    assert_eq!(
        err("a in b"),
        "unable to parse requirement: found 'b', expected: '('"
    );
    assert_eq!(
        err("a in (b"),
        "unable to parse requirement: found '', expected: ',' or ')'"
    );
    assert_eq!(
        err("a in (b c)"),
        "unable to parse requirement: found 'c', expected: ',' or ')'"
    );
    assert_eq!(
        err("a in (="),
        "unable to parse requirement: found '=', expected: ',', ')' or identifier"
    );
    assert_eq!(
        err("a=(b)"),
        "unable to parse requirement: found '(', expected: identifier"
    );
    assert_eq!(
        err("!"),
        "unable to parse requirement: found '', expected: identifier"
    );
    assert_eq!(err("!a=b"), "found '=', expected: ',' or 'end of string'");
}

#[test]
fn syntax_errors_carry_the_position() {
    match LabelSelector::parse("a=b, c d") {
        Err(SelectorError::Syntax { position, .. }) => assert_eq!(position, 7),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn invalid_keys_and_values() {
    assert!(err("-x").starts_with("invalid label key \"-x\": name part must consist of"));
    assert!(err("a/b/c=d").starts_with("invalid label key \"a/b/c\": a qualified name must"));
    assert!(err("/a").contains("prefix part must be non-empty"));
    assert!(err("a=-b").starts_with("invalid label value \"-b\" for key \"a\""));
    assert!(err(&format!("a={}", "x".repeat(64))).contains("must be no more than 63 characters"));
    assert!(err("a in (b,-c)").starts_with("invalid label value \"-c\""));
    assert!(err("k>x").contains("the value must be an integer"));
    assert!(err("k>").contains("the value must be an integer"));
    assert!(err("k>-1").starts_with("invalid label value \"-1\"")); // not a label value
    assert!(err("a=b\0").contains("invalid label value"));
    assert_eq!(
        sel("example.com/tier=a").requirements[0].key,
        "example.com/tier"
    );
}

#[test]
fn requirement_new_checks_value_counts() {
    assert!(matches!(
        Requirement::new("a", Operator::In, Vec::<String>::new()),
        Err(SelectorError::EmptyValues { .. })
    ));
    assert!(matches!(
        Requirement::new("a", Operator::Equals, ["x", "y"]),
        Err(SelectorError::NotOneValue { .. })
    ));
    assert!(matches!(
        Requirement::new("a", Operator::Exists, ["x"]),
        Err(SelectorError::UnexpectedValues { .. })
    ));
    assert!(matches!(
        Requirement::new("a", Operator::GreaterThan, ["1", "2"]),
        Err(SelectorError::NotOneNumber { .. })
    ));
}

#[test]
fn from_api_converts_match_labels_and_expressions() {
    let api = metav1::LabelSelector {
        match_labels: Some(labels(&[("app", "web")])),
        match_expressions: Some(vec![
            metav1::LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["front".into(), "edge".into()]),
            },
            metav1::LabelSelectorRequirement {
                key: "canary".into(),
                operator: "DoesNotExist".into(),
                values: None,
            },
        ]),
    };
    let s = LabelSelector::from_api(&api).expect("valid");
    assert_eq!(s.to_string(), "app=web,!canary,tier in (edge,front)");
    assert!(s.matches(&labels(&[("app", "web"), ("tier", "edge")])));
    assert!(!s.matches(&labels(&[
        ("app", "web"),
        ("tier", "edge"),
        ("canary", "1")
    ])));
    assert!(
        LabelSelector::from_api(&metav1::LabelSelector::default())
            .expect("empty is valid")
            .is_everything()
    );
}

#[test]
fn from_api_rejects_bad_operators_and_values() {
    let expr = |op: &str, values: Option<Vec<String>>| metav1::LabelSelector {
        match_expressions: Some(vec![metav1::LabelSelectorRequirement {
            key: "k".into(),
            operator: op.into(),
            values,
        }]),
        ..Default::default()
    };
    assert_eq!(
        LabelSelector::from_api(&expr("Gt", Some(vec!["1".into()])))
            .expect_err("Gt is not allowed in matchExpressions")
            .to_string(),
        "\"Gt\" is not a valid label selector operator"
    );
    assert!(matches!(
        LabelSelector::from_api(&expr("In", None)),
        Err(SelectorError::EmptyValues { .. })
    ));
    assert!(matches!(
        LabelSelector::from_api(&expr("Exists", Some(vec!["x".into()]))),
        Err(SelectorError::UnexpectedValues { .. })
    ));
    let bad_label = metav1::LabelSelector {
        match_labels: Some(labels(&[("app", "not valid")])),
        ..Default::default()
    };
    assert!(matches!(
        LabelSelector::from_api(&bad_label),
        Err(SelectorError::InvalidValue { .. })
    ));
}

#[test]
fn from_labels_selects_exactly_those_labels() {
    let set = labels(&[("a", "1"), ("b", "2")]);
    let s = LabelSelector::from_labels(&set).expect("valid");
    assert_eq!(s.to_string(), "a=1,b=2");
    assert!(s.matches(&set));
    assert!(!s.matches(&labels(&[("a", "1")])));
}

// ---- property tests ----

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["a", "b", "app", "in", "notin", "tier"]).prop_map(String::from),
        "[a-z][a-z0-9]{0,3}",
        "[a-z]{1,3}\\.io/[A-Za-z][-_.A-Za-z0-9]{0,3}[a-z]",
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        prop::sample::select(vec!["x", "y", "web", "in", "notin", "1", "5"]).prop_map(String::from),
        "[A-Za-z0-9]([-_.A-Za-z0-9]{0,4}[A-Za-z0-9])?",
    ]
}

fn requirement() -> impl Strategy<Value = Requirement> {
    (
        key(),
        prop::sample::select(vec![
            Operator::Equals,
            Operator::NotEquals,
            Operator::In,
            Operator::NotIn,
            Operator::Exists,
            Operator::DoesNotExist,
            Operator::GreaterThan,
            Operator::LessThan,
        ]),
        prop::collection::vec(value(), 1..4),
        0i64..10,
    )
        .prop_map(|(key, op, values, n)| {
            let values = match op {
                Operator::Equals | Operator::NotEquals => vec![values[0].clone()],
                Operator::In | Operator::NotIn => values,
                Operator::Exists | Operator::DoesNotExist => vec![],
                Operator::GreaterThan | Operator::LessThan => vec![n.to_string()],
            };
            Requirement::new(key, op, values).expect("generated requirements are valid")
        })
}

fn selector() -> impl Strategy<Value = LabelSelector> {
    prop::collection::vec(requirement(), 0..5).prop_map(LabelSelector::new)
}

fn label_set() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(key(), value(), 0..5)
}

/// Kubernetes' matching rules, written out per operator as the documentation states them.
fn reference_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    sel.requirements.iter().all(|r| {
        let v = labels.get(&r.key);
        let int = |s: &String| s.parse::<i64>().ok();
        match r.operator {
            Operator::Equals => v == Some(&r.values[0]),
            Operator::NotEquals => v != Some(&r.values[0]),
            Operator::In => v.is_some_and(|v| r.values.contains(v)),
            Operator::NotIn => v.is_none_or(|v| !r.values.contains(v)),
            Operator::Exists => v.is_some(),
            Operator::DoesNotExist => v.is_none(),
            Operator::GreaterThan => {
                matches!((v.and_then(int), int(&r.values[0])), (Some(a), Some(b)) if a > b)
            }
            Operator::LessThan => {
                matches!((v.and_then(int), int(&r.values[0])), (Some(a), Some(b)) if a < b)
            }
        }
    })
}

proptest! {
    #[test]
    fn display_then_parse_is_identity(s in selector()) {
        let text = s.to_string();
        let parsed = LabelSelector::parse(&text);
        prop_assert_eq!(parsed, Ok(s), "{}", text);
    }

    #[test]
    fn matches_agrees_with_reference(s in selector(), l in label_set()) {
        prop_assert_eq!(s.matches(&l), reference_matches(&s, &l));
    }

    #[test]
    fn selecting_a_set_matches_that_set(l in label_set()) {
        let s = LabelSelector::from_labels(&l).expect("generated labels are valid");
        prop_assert!(s.matches(&l));
        let reparsed = LabelSelector::parse(&s.to_string()).expect("canonical form parses");
        prop_assert!(reparsed.matches(&l));
    }

    #[test]
    fn parse_never_panics(s in "\\PC{0,40}") {
        let _ = LabelSelector::parse(&s);
    }

    #[test]
    fn parse_of_selector_alphabet_never_panics_and_reprints(s in "[a-z0-9 =!(),<>.in/-]{0,30}") {
        if let Ok(parsed) = LabelSelector::parse(&s) {
            prop_assert_eq!(LabelSelector::parse(&parsed.to_string()), Ok(parsed));
        }
    }
}
