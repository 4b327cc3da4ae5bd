use super::*;
use crate::registry::{all, lookup};
use proptest::prelude::*;
use serde_json::json;

fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn fs(s: &str) -> FieldSelector {
    FieldSelector::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
}

fn info(group: &str, plural: &str) -> &'static ResourceInfo {
    lookup(group, "v1", plural).unwrap_or_else(|| panic!("{group}/{plural} registered"))
}

#[test]
fn parses_operators() {
    let s = fs("spec.nodeName=n1,status.phase!=Running,metadata.name==web");
    assert_eq!(
        s.requirements,
        vec![
            FieldRequirement {
                field: "metadata.name".into(),
                operator: FieldOperator::Equals,
                value: "web".into(),
            },
            FieldRequirement {
                field: "spec.nodeName".into(),
                operator: FieldOperator::Equals,
                value: "n1".into(),
            },
            FieldRequirement {
                field: "status.phase".into(),
                operator: FieldOperator::NotEquals,
                value: "Running".into(),
            },
        ]
    );
    assert_eq!(
        s.to_string(),
        "metadata.name=web,spec.nodeName=n1,status.phase!=Running"
    );
}

#[test]
fn empty_selects_everything() {
    assert!(fs("").is_everything());
    assert!(fs(",").is_everything());
    assert!(FieldSelector::everything().matches(&set(&[])));
}

#[test]
fn escapes() {
    let s = fs(r"a=x\,y\=z\\w\!v");
    assert_eq!(s.requirements[0].value, r"x,y=z\w!v");
    assert_eq!(s.to_string(), r"a=x\,y\=z\\w!v");
    assert_eq!(fs(&s.to_string()), s);
    // The first operator splits; the rest must be escaped.
    assert_eq!(fs(r"a==\=b").requirements[0].value, "=b");
    assert_eq!(fs("a=!b").requirements[0].value, "!b");
    assert_eq!(fs("a!=").requirements[0].value, "");
}

#[test]
fn parse_errors() {
    assert_eq!(
        FieldSelector::parse("a=b,nooperator")
            .expect_err("no operator")
            .to_string(),
        "invalid selector: 'a=b,nooperator'; can't understand 'nooperator'"
    );
    assert_eq!(
        FieldSelector::parse(r"a=b\x")
            .expect_err("bad escape")
            .to_string(),
        r"invalid field selector: invalid escape sequence: \x"
    );
    assert_eq!(
        FieldSelector::parse(r"a=b\")
            .expect_err("dangling escape")
            .to_string(),
        r"invalid field selector: invalid escape sequence: \"
    );
    assert_eq!(
        FieldSelector::parse("a=b=c")
            .expect_err("unescaped =")
            .to_string(),
        "invalid field selector: unescaped character in value: ="
    );
}

#[test]
fn matching_treats_missing_as_empty() {
    let pod = set(&[("spec.nodeName", ""), ("status.phase", "Pending")]);
    assert!(fs("spec.nodeName=").matches(&pod));
    assert!(fs("spec.nodeName=").matches(&set(&[])));
    assert!(!fs("spec.nodeName!=").matches(&pod));
    assert!(fs("status.phase!=Running").matches(&pod));
    assert!(!fs("status.phase=Running").matches(&pod));
    assert!(fs("spec.nodeName=,status.phase=Pending").matches(&pod));
}

#[test]
fn exact_value_for_indexing() {
    let s = fs("status.phase!=Failed,spec.nodeName=node-1");
    assert_eq!(s.exact_value("spec.nodeName"), Some("node-1"));
    assert_eq!(s.exact_value("status.phase"), None);
    assert_eq!(s.exact_value("metadata.name"), None);
}

#[test]
fn supported_fields_per_kind() {
    let pods = info("", "pods");
    assert!(
        fs("spec.nodeName=a,metadata.namespace=b")
            .check_supported(pods)
            .is_ok()
    );
    let err = fs("spec.foo=a")
        .check_supported(pods)
        .expect_err("unsupported");
    assert_eq!(err.to_string(), "field label not supported: spec.foo");
    assert_eq!(
        err,
        FieldSelectorError::Unsupported {
            field: "spec.foo".into(),
            resource: "pods".into(),
        }
    );
    let cms = info("", "configmaps");
    assert!(fs("metadata.name=x").check_supported(cms).is_ok());
    assert!(fs("spec.nodeName=x").check_supported(cms).is_err());
    assert!(
        fs("type=Opaque")
            .check_supported(info("", "secrets"))
            .is_ok()
    );
    assert!(
        fs("status.successful=1")
            .check_supported(info("batch", "jobs"))
            .is_ok()
    );
    assert!(
        fs("regarding.name=x")
            .check_supported(info("events.k8s.io", "events"))
            .is_ok()
    );
    assert!(
        fs("involvedObject.name=x")
            .check_supported(info("", "events"))
            .is_ok()
    );
    assert!(
        fs("regarding.name=x")
            .check_supported(info("", "events"))
            .is_err()
    );
}

#[test]
fn field_tables_agree_with_supported_fields() {
    for r in all() {
        let supported = supported_fields(r);
        assert!(supported.contains(&"metadata.name"), "{}", r.plural);
        assert!(supported.contains(&"metadata.namespace"), "{}", r.plural);
        for f in kind_fields(r) {
            assert!(supported.contains(&f.name), "{} lacks {}", r.plural, f.name);
        }
        let fields = field_set(r, &json!({"metadata": {"name": "x", "namespace": "ns"}}));
        for key in fields.keys() {
            assert!(supported.contains(&key.as_str()), "{} sets {key}", r.plural);
        }
    }
}

#[test]
fn pod_field_set() {
    let pods = info("", "pods");
    let fields = field_set(
        pods,
        &json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"nodeName": "n1", "hostNetwork": true, "serviceAccount": "legacy"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}], "podIP": "10.0.0.5"},
        }),
    );
    assert_eq!(
        fields,
        set(&[
            ("metadata.name", "web"),
            ("metadata.namespace", "default"),
            ("spec.nodeName", "n1"),
            ("spec.restartPolicy", "Always"),
            ("spec.schedulerName", "default-scheduler"),
            ("spec.serviceAccountName", "legacy"),
            ("spec.hostNetwork", "true"),
            ("status.phase", "Running"),
            ("status.podIP", "10.0.0.5"),
            ("status.nominatedNodeName", ""),
        ])
    );
    let unscheduled = field_set(pods, &json!({"metadata": {"name": "p"}}));
    assert_eq!(unscheduled["spec.nodeName"], "");
    assert_eq!(unscheduled["spec.hostNetwork"], "false");
    assert!(fs("spec.nodeName=").matches(&unscheduled));
}

#[test]
fn other_field_sets() {
    let node = field_set(
        info("", "nodes"),
        &json!({"metadata": {"name": "n"}, "spec": {}}),
    );
    assert_eq!(
        node,
        set(&[("metadata.name", "n"), ("spec.unschedulable", "false")])
    );
    let rs = field_set(
        info("apps", "replicasets"),
        &json!({"metadata": {"name": "r", "namespace": "d"}, "status": {"replicas": 3}}),
    );
    assert_eq!(rs["status.replicas"], "3");
    let job = field_set(info("batch", "jobs"), &json!({"status": {"succeeded": 2}}));
    assert_eq!(job["status.successful"], "2");
    let event = field_set(
        info("", "events"),
        &json!({"involvedObject": {"kind": "Pod", "name": "web"}, "reportingComponent": "kubelet"}),
    );
    assert_eq!(event["involvedObject.kind"], "Pod");
    assert_eq!(event["source"], "kubelet");
    let new_event = field_set(
        info("events.k8s.io", "events"),
        &json!({"regarding": {"kind": "Pod"}, "reportingController": "rkube/kubelet"}),
    );
    assert_eq!(new_event["regarding.kind"], "Pod");
    assert_eq!(new_event["reportingController"], "rkube/kubelet");
    let secret = field_set(info("", "secrets"), &json!({}));
    assert_eq!(secret["type"], "Opaque");
    let svc = field_set(
        info("", "services"),
        &json!({"spec": {"clusterIP": "None"}}),
    );
    assert_eq!(svc["spec.clusterIP"], "None");
    assert_eq!(svc["spec.type"], "ClusterIP");
}

fn requirement() -> impl Strategy<Value = FieldRequirement> {
    (
        "[a-zA-Z][a-zA-Z0-9.]{0,12}",
        prop::bool::ANY,
        "[a-z0-9=,!\\\\ .-]{0,8}",
    )
        .prop_map(|(field, eq, value)| FieldRequirement {
            field,
            operator: if eq {
                FieldOperator::Equals
            } else {
                FieldOperator::NotEquals
            },
            value,
        })
}

fn selector() -> impl Strategy<Value = FieldSelector> {
    prop::collection::vec(requirement(), 0..5).prop_map(FieldSelector::new)
}

proptest! {
    #[test]
    fn display_then_parse_is_identity(s in selector()) {
        let text = s.to_string();
        prop_assert_eq!(FieldSelector::parse(&text), Ok(s), "{}", text);
    }

    #[test]
    fn matches_agrees_with_reference(s in selector(), values in prop::collection::vec("[a-z0-9=,!]{0,3}", 5)) {
        // Give some of the selector's fields a value; the rest are missing (= "").
        let mut fields = BTreeMap::new();
        for (r, v) in s.requirements.iter().zip(&values) {
            if !v.is_empty() {
                fields.insert(r.field.clone(), v.clone());
            }
        }
        let reference = s.requirements.iter().all(|r| {
            let actual = fields.get(&r.field).cloned().unwrap_or_default();
            (actual == r.value) == (r.operator == FieldOperator::Equals)
        });
        prop_assert_eq!(s.matches(&fields), reference);
    }

    #[test]
    fn escape_round_trips(v in "\\PC{0,20}") {
        prop_assert_eq!(unescape_value(&escape_value(&v)), Ok(v));
    }

    #[test]
    fn parse_never_panics(s in "\\PC{0,40}") {
        let _ = FieldSelector::parse(&s);
    }
}
