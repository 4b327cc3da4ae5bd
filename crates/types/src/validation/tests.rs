use super::*;
use crate::registry::{lookup, resolve};
use proptest::prelude::*;
use serde_json::json;

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric \
     characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  \
     or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
     alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
     (e.g. 'example.com', regex used for validation is \
     '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', \
     and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or \
     '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric \
     characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. \
     'MyValue',  or 'my_value',  or '12345', regex used for validation is \
     '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

#[test]
fn dns1123_label() {
    for ok in ["a", "a-b", "0", "abc-123", &"a".repeat(63)] {
        assert!(is_dns1123_label(ok).is_empty(), "{ok}");
    }
    assert_eq!(is_dns1123_label("A"), vec![LABEL_MSG]);
    assert_eq!(is_dns1123_label(""), vec![LABEL_MSG]);
    assert_eq!(is_dns1123_label("-a"), vec![LABEL_MSG]);
    assert_eq!(is_dns1123_label("a.b"), vec!["must not contain dots"]);
    assert_eq!(
        is_dns1123_label(&"a".repeat(64)),
        vec!["must be no more than 63 characters"]
    );
    assert_eq!(
        is_dns1123_label(&format!("{}_", "a".repeat(64))),
        vec!["must be no more than 63 characters", LABEL_MSG]
    );
}

#[test]
fn dns1123_subdomain() {
    for ok in ["a", "a.b", "example.com", "a-1.b-2", &"a".repeat(253)] {
        assert!(is_dns1123_subdomain(ok).is_empty(), "{ok}");
    }
    for bad in ["", ".", "a.", ".a", "a..b", "A.b", "a_b", "a.-b", "ü"] {
        assert_eq!(is_dns1123_subdomain(bad), vec![SUBDOMAIN_MSG], "{bad:?}");
    }
    assert_eq!(
        is_dns1123_subdomain(&"a".repeat(254)),
        vec!["must be no more than 253 characters"]
    );
}

#[test]
fn dns1035_label() {
    assert!(is_dns1035_label("web").is_empty());
    assert_eq!(
        is_dns1035_label("1web"),
        vec![
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start \
             with an alphabetic character, and end with an alphanumeric character (e.g. \
             'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
        ]
    );
}

#[test]
fn path_segment() {
    assert!(is_path_segment_name("system:admin").is_empty());
    assert!(is_path_segment_name("Any Thing").is_empty());
    assert_eq!(is_path_segment_name("."), vec!["may not be '.'"]);
    assert_eq!(is_path_segment_name(".."), vec!["may not be '..'"]);
    assert_eq!(
        is_path_segment_name("a/b%c"),
        vec!["may not contain '/'", "may not contain '%'"]
    );
}

#[test]
fn qualified_names() {
    for ok in [
        "a",
        "A",
        "app",
        "my.name",
        "MyName",
        "123-abc",
        "example.com/MyName",
        "a_b",
    ] {
        assert!(is_qualified_name(ok).is_empty(), "{ok}");
    }
    assert_eq!(
        is_qualified_name(""),
        vec![
            "name part must be non-empty".to_string(),
            QUALIFIED_MSG.to_string()
        ]
    );
    assert_eq!(is_qualified_name("-x"), vec![QUALIFIED_MSG]);
    assert_eq!(
        is_qualified_name("/a"),
        vec!["prefix part must be non-empty"]
    );
    assert_eq!(
        is_qualified_name("Example.com/a"),
        vec![format!("prefix part {SUBDOMAIN_MSG}")]
    );
    assert_eq!(
        is_qualified_name(&"a".repeat(64)),
        vec!["name part must be no more than 63 characters"]
    );
    let many = is_qualified_name("a/b/c");
    assert_eq!(many.len(), 1);
    assert!(many[0].starts_with("a qualified name must consist of"));
    assert!(
        many[0]
            .ends_with("with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')")
    );
}

#[test]
fn label_values() {
    for ok in ["", "a", "my_value", "12345", "a.b-c", &"v".repeat(63)] {
        assert!(is_valid_label_value(ok).is_empty(), "{ok}");
    }
    assert_eq!(is_valid_label_value("-a"), vec![LABEL_VALUE_MSG]);
    assert_eq!(is_valid_label_value("a b"), vec![LABEL_VALUE_MSG]);
    assert_eq!(
        is_valid_label_value(&"v".repeat(64)),
        vec!["must be no more than 63 characters"]
    );
}

#[test]
fn config_map_keys() {
    assert!(is_config_map_key("key.name").is_empty());
    assert!(is_config_map_key(".hidden").is_empty());
    assert_eq!(is_config_map_key("."), vec!["must not be '.'"]);
    assert_eq!(is_config_map_key("..a"), vec!["must not start with '..'"]);
    assert_eq!(is_config_map_key("a/b").len(), 1);
    assert_eq!(is_config_map_key("").len(), 1);
}

#[test]
fn port_names() {
    assert!(is_valid_port_name("http").is_empty());
    assert!(is_valid_port_name("h2c-1").is_empty());
    assert_eq!(
        is_valid_port_name("80"),
        vec!["must contain at least one letter (a-z)"]
    );
    assert_eq!(
        is_valid_port_name("-a--b"),
        vec![
            "must not contain consecutive hyphens",
            "must not begin or end with a hyphen"
        ]
    );
    assert_eq!(
        is_valid_port_name(&"a".repeat(16)),
        vec!["must be no more than 15 characters"]
    );
}

#[test]
fn validate_name_dispatches_on_rule() {
    assert!(validate_name(NameRule::Dns1123Label, "a.b").len() == 1);
    assert!(validate_name(NameRule::Dns1123Subdomain, "a.b").is_empty());
    assert!(validate_name(NameRule::PathSegment, "A:B").is_empty());
}

// ---- validate_object ----

fn info(name: &str) -> &'static ResourceInfo {
    resolve(name).unwrap_or_else(|| panic!("{name} registered"))
}

fn check(resource: &str, obj: serde_json::Value) -> Vec<String> {
    validate_object(info(resource), &obj)
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn pod(spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": spec})
}

fn deployment(selector: serde_json::Value, labels: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": selector,
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]},
            },
        },
    })
}

#[test]
fn valid_objects_have_no_causes() {
    assert!(
        check(
            "pods",
            pod(json!({"containers": [{"name": "a", "image": "b"}]}))
        )
        .is_empty()
    );
    assert!(
        check(
            "deployments",
            deployment(
                json!({"matchLabels": {"app": "web"}}),
                json!({"app": "web"})
            )
        )
        .is_empty()
    );
    assert!(check("namespaces", json!({"metadata": {"name": "kube-system"}})).is_empty());
    assert!(
        check(
            "roles",
            json!({"metadata": {"name": "system:controller:x"}})
        )
        .is_empty()
    );
    assert!(
        check(
            "leases",
            json!({"metadata": {"name": "kube-scheduler"}, "spec": {}})
        )
        .is_empty()
    );
    assert!(
        check(
            "services",
            json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80, "targetPort": "http"}]}})
        )
        .is_empty()
    );
}

#[test]
fn metadata_name_rules() {
    assert_eq!(
        check("configmaps", json!({"metadata": {}})),
        vec!["metadata.name: Required value: name or generateName is required"]
    );
    assert!(check("configmaps", json!({"metadata": {"generateName": "cfg-"}})).is_empty());
    assert_eq!(
        check("configmaps", json!({"metadata": {"name": "Bad_Name"}})),
        vec![format!(
            "metadata.name: Invalid value: \"Bad_Name\": {SUBDOMAIN_MSG}"
        )]
    );
    assert_eq!(
        check("namespaces", json!({"metadata": {"name": "a.b"}})),
        vec!["metadata.name: Invalid value: \"a.b\": must not contain dots"]
    );
    assert_eq!(
        check("clusterroles", json!({"metadata": {"name": "a/b"}})),
        vec!["metadata.name: Invalid value: \"a/b\": may not contain '/'"]
    );
    let svc = check(
        "services",
        json!({"metadata": {"name": "1web"}, "spec": {"clusterIP": "None"}}),
    );
    assert_eq!(svc.len(), 1);
    assert!(svc[0].starts_with("metadata.name: Invalid value: \"1web\": a DNS-1035 label"));
    assert_eq!(
        check("configmaps", json!({"metadata": {"generateName": "Bad-"}})).len(),
        1,
        "generateName is validated"
    );
}

#[test]
fn metadata_labels_and_annotations() {
    let got = check(
        "configmaps",
        json!({"metadata": {"name": "c", "labels": {"-bad": "ok", "good": "not ok"}}}),
    );
    assert_eq!(
        got,
        vec![
            format!("metadata.labels: Invalid value: \"-bad\": {QUALIFIED_MSG}"),
            format!("metadata.labels: Invalid value: \"not ok\": {LABEL_VALUE_MSG}"),
        ]
    );
    let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
    let got = check(
        "configmaps",
        json!({"metadata": {"name": "c", "annotations": {"a": big, "b/c/d": ""}}}),
    );
    assert_eq!(got.len(), 2);
    assert!(got[0].starts_with("metadata.annotations: Invalid value: \"b/c/d\""));
    assert_eq!(
        got[1],
        "metadata.annotations: Too long: may not be more than 262144 bytes"
    );
    // Annotation keys are checked case-insensitively.
    assert!(
        check(
            "configmaps",
            json!({"metadata": {"name": "c", "annotations": {"Example.COM/Key": "v"}}})
        )
        .is_empty()
    );
}

#[test]
fn decode_errors_become_causes() {
    let causes = validate_object(
        info("pods"),
        &pod(json!({"containers": [{"name": "a", "image": 5}]})),
    );
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].reason, "FieldValueInvalid");
    assert!(
        causes[0].message.contains("invalid type"),
        "{}",
        causes[0].message
    );
    let meta = validate_object(info("pods"), &json!({"metadata": {"labels": "x"}}));
    assert_eq!(meta.len(), 1);
    assert_eq!(meta[0].field, "metadata");
    assert_eq!(validate_object(info("pods"), &json!([1])).len(), 1);
    // Other kinds are decoded too.
    assert_eq!(
        validate_object(
            info("leases"),
            &json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": 1}})
        )
        .len(),
        1
    );
}

#[test]
fn api_version_and_kind_are_not_rechecked() {
    let obj = json!({"apiVersion": "apps/v1beta1", "kind": "Whatever", "metadata": {"name": "c"}});
    assert!(validate_object(info("configmaps"), &obj).is_empty());
}

#[test]
fn pod_causes_use_kubernetes_paths() {
    assert_eq!(
        check("pods", pod(json!({"containers": [{"name": "a"}]}))),
        vec!["spec.containers[0].image: Required value"]
    );
    assert_eq!(
        check("pods", pod(json!({}))),
        vec!["spec.containers: Required value"]
    );
    assert_eq!(
        check("pods", json!({"metadata": {"name": "p"}})),
        vec!["spec.containers: Required value"]
    );
}

#[test]
fn workload_selector_must_match_template() {
    let got = check(
        "deployments",
        deployment(json!({"matchLabels": {"app": "web"}}), json!({"app": "db"})),
    );
    assert_eq!(
        got,
        vec![
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"db\"}: \
             `selector` does not match template `labels`"
        ]
    );
    let causes = validate_object(
        info("deployments"),
        &deployment(json!({"matchLabels": {"app": "web"}}), json!({"app": "db"})),
    );
    assert_eq!(causes[0].field, "spec.template.metadata.labels");
    assert_eq!(causes[0].reason, "FieldValueInvalid");
}

#[test]
fn workload_selector_required_and_non_empty() {
    let mut obj = deployment(json!({}), json!({"app": "web"}));
    assert_eq!(
        check("deployments", obj.clone()),
        vec![
            "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), \
             MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for \
             deployment"
        ]
    );
    obj["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("selector");
    assert_eq!(
        check("deployments", obj),
        vec!["spec.selector: Required value"]
    );
    let got = check(
        "replicasets",
        json!({"metadata": {"name": "r"}, "spec": {
            "replicas": -1,
            "selector": {"matchExpressions": [{"key": "app", "operator": "Gt", "values": ["1"]}]},
            "template": {"metadata": {"labels": {"app": "x"}}, "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "i"}],
            }},
        }}),
    );
    assert_eq!(
        got,
        vec![
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            "spec.selector.matchExpressions[0].operator: Invalid value: \"Gt\": not a valid \
             selector operator",
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \
             \"Always\"",
        ]
    );
}

#[test]
fn deployment_rollout_fields() {
    let mut obj = deployment(
        json!({"matchLabels": {"app": "web"}}),
        json!({"app": "web"}),
    );
    obj["spec"]["strategy"] = json!({"type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
    assert_eq!(
        check("deployments", obj.clone()),
        vec![
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"0%\": may not be 0 \
              when `maxSurge` is 0"
        ]
    );
    obj["spec"]["strategy"]["rollingUpdate"] = json!({"maxSurge": -1, "maxUnavailable": "150%"});
    assert_eq!(
        check("deployments", obj.clone()),
        vec![
            "spec.strategy.rollingUpdate.maxSurge: Invalid value: -1: must be greater than or \
             equal to 0",
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"150%\": must not be \
             greater than 100%",
        ]
    );
    obj["spec"]["strategy"]["rollingUpdate"] = json!({"maxSurge": "x%", "maxUnavailable": 1});
    assert_eq!(
        check("deployments", obj.clone()),
        vec![
            "spec.strategy.rollingUpdate.maxSurge: Invalid value: \"x%\": a valid percent string \
             must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex \
             used for validation is '[0-9]+%')"
        ]
    );
    obj["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}});
    assert_eq!(
        check("deployments", obj.clone()),
        vec![
            "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` \
              is 'Recreate'"
        ]
    );
    obj["spec"]["strategy"] = json!({"type": "BlueGreen"});
    obj["spec"]["minReadySeconds"] = json!(30);
    obj["spec"]["progressDeadlineSeconds"] = json!(30);
    assert_eq!(
        check("deployments", obj.clone()),
        vec![
            "spec.progressDeadlineSeconds: Invalid value: 30: must be greater than \
             minReadySeconds",
            "spec.strategy.type: Unsupported value: \"BlueGreen\": supported values: \
             \"Recreate\", \"RollingUpdate\"",
        ]
    );
    obj["spec"]["strategy"] = json!({"type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
    obj["spec"]["progressDeadlineSeconds"] = json!(600);
    assert_eq!(check("deployments", obj), Vec::<String>::new());
}

#[test]
fn daemon_set_rolling_update_has_exactly_one_of_surge_and_unavailability() {
    let ds = |rolling: serde_json::Value| {
        json!({"metadata": {"name": "d"}, "spec": {
            "selector": {"matchLabels": {"app": "d"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": rolling},
            "template": {"metadata": {"labels": {"app": "d"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}},
        }})
    };
    assert_eq!(
        check(
            "daemonsets",
            ds(json!({"maxUnavailable": 1, "maxSurge": 1}))
        ),
        vec![
            "spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: 1: may not be set \
              when maxUnavailable is non-zero"
        ]
    );
    assert_eq!(
        check(
            "daemonsets",
            ds(json!({"maxUnavailable": 0, "maxSurge": "0%"}))
        ),
        vec![
            "spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 \
              when maxSurge is 0"
        ]
    );
    assert_eq!(
        check(
            "daemonsets",
            ds(json!({"maxUnavailable": 0, "maxSurge": "150%"}))
        ),
        vec![
            "spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: \"150%\": must not be \
              greater than 100%"
        ]
    );
    assert!(
        check(
            "daemonsets",
            ds(json!({"maxUnavailable": 0, "maxSurge": "10%"}))
        )
        .is_empty()
    );
    assert!(
        check(
            "daemonsets",
            ds(json!({"maxUnavailable": 1, "maxSurge": 0}))
        )
        .is_empty()
    );
}

#[test]
fn stateful_set_ordinals_and_partition_are_not_negative() {
    let sts = json!({"metadata": {"name": "s"}, "spec": {
        "selector": {"matchLabels": {"app": "s"}},
        "ordinals": {"start": -1},
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": -2}},
        "template": {"metadata": {"labels": {"app": "s"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}},
    }});
    assert_eq!(
        check("statefulsets", sts),
        vec![
            "spec.ordinals.start: Invalid value: -1: must be greater than or equal to 0",
            "spec.updateStrategy.rollingUpdate.partition: Invalid value: -2: must be greater \
             than or equal to 0",
        ]
    );
}

#[test]
fn workload_template_spec_is_validated() {
    let mut obj = deployment(
        json!({"matchLabels": {"app": "web"}}),
        json!({"app": "web"}),
    );
    obj["spec"]["template"]["spec"]["containers"][0]["ports"] = json!([{"containerPort": 0}]);
    assert_eq!(
        check("deployments", obj),
        vec!["spec.template.spec.containers[0].ports[0].containerPort: Required value"]
    );
    let ds = json!({"metadata": {"name": "d"}, "spec": {
        "selector": {"matchLabels": {"app": "d"}},
        "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": []}},
    }});
    assert_eq!(
        check("daemonsets", ds),
        vec!["spec.template.spec.containers: Required value"]
    );
    let sts = json!({"metadata": {"name": "s"}, "spec": {
        "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["s"]}]},
        "template": {"metadata": {"labels": {"app": "t"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
    }});
    assert_eq!(check("statefulsets", sts).len(), 1);
}

#[test]
fn replication_controllers_default_selector_to_template_labels() {
    let rc = json!({"metadata": {"name": "rc"}, "spec": {
        "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
    }});
    assert!(check("rc", rc).is_empty());
    assert_eq!(
        check("rc", json!({"metadata": {"name": "rc"}, "spec": {}})),
        vec![
            "spec.selector: Required value",
            "spec.template: Required value"
        ]
    );
}

#[test]
fn jobs_need_on_failure_or_never() {
    let job = |policy: serde_json::Value| {
        json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {
            "restartPolicy": policy,
            "containers": [{"name": "c", "image": "i"}],
        }}}})
    };
    assert!(check("jobs", job(json!("Never"))).is_empty());
    assert!(check("jobs", job(json!("OnFailure"))).is_empty());
    assert_eq!(
        check("jobs", job(serde_json::Value::Null)),
        vec![
            "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \
             \"OnFailure\", \"Never\""
        ]
    );
    let cron = json!({"metadata": {"name": "cj"}, "spec": {"schedule": "", "jobTemplate": {"spec": {
        "template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "i"}]}},
    }}}});
    assert_eq!(
        check("cronjobs", cron),
        vec![
            "spec.schedule: Required value",
            "spec.jobTemplate.spec.template.spec.restartPolicy: Unsupported value: \"Always\": \
             supported values: \"OnFailure\", \"Never\"",
        ]
    );
}

#[test]
fn cron_job_schedules_and_time_zones() {
    let cron = |spec: serde_json::Value| {
        let mut obj = json!({"metadata": {"name": "cj"}, "spec": {"jobTemplate": {"spec": {
            "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "i"}]}},
        }}}});
        for (k, v) in spec.as_object().expect("object") {
            obj["spec"][k] = v.clone();
        }
        obj
    };
    assert!(check("cronjobs", cron(json!({"schedule": "*/5 * * * *"}))).is_empty());
    assert!(
        check(
            "cronjobs",
            cron(json!({"schedule": "@hourly", "timeZone": "Europe/Paris"}))
        )
        .is_empty()
    );
    assert_eq!(
        check("cronjobs", cron(json!({"schedule": "61 * * * *"}))),
        vec![
            "spec.schedule: Invalid value: \"61 * * * *\": minute field \"61\": 61 is above the \
              maximum 59"
        ]
    );
    assert_eq!(
        check(
            "cronjobs",
            cron(json!({"schedule": "CRON_TZ=UTC 0 * * * *"}))
        ),
        vec![
            "spec.schedule: Invalid value: \"CRON_TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ \
              in schedule, use timeZone field instead"
        ]
    );
    assert_eq!(
        check(
            "cronjobs",
            cron(json!({"schedule": "0 * * * *", "timeZone": "Mars/Olympus",
                "startingDeadlineSeconds": -1}))
        ),
        vec![
            "spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus",
            "spec.startingDeadlineSeconds: Invalid value: -1: must be greater than or equal to 0",
        ]
    );
    assert_eq!(
        check(
            "cronjobs",
            cron(json!({"schedule": "0 * * * *", "timeZone": "Local"}))
        ),
        vec![
            "spec.timeZone: Invalid value: \"Local\": timeZone must be an explicit time zone as \
              defined in https://www.iana.org/time-zones"
        ]
    );
}

#[test]
fn services() {
    let svc = |spec: serde_json::Value| json!({"metadata": {"name": "web"}, "spec": spec});
    assert_eq!(
        check("svc", svc(json!({}))),
        vec!["spec.ports: Required value"]
    );
    assert!(check("svc", svc(json!({"clusterIP": "None"}))).is_empty());
    assert_eq!(
        check("svc", svc(json!({"type": "ExternalName"}))),
        vec!["spec.externalName: Required value"]
    );
    assert!(
        check(
            "svc",
            svc(json!({"type": "ExternalName", "externalName": "db.example.com"}))
        )
        .is_empty()
    );
    assert_eq!(
        check(
            "svc",
            svc(json!({"type": "Magic", "ports": [{"port": 80}]}))
        ),
        vec![
            "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \
             \"ExternalName\", \"LoadBalancer\", \"NodePort\""
        ]
    );
    assert_eq!(
        check(
            "svc",
            svc(json!({"ports": [
                {"name": "http", "port": 80},
                {"name": "http", "port": 0, "targetPort": 70000},
                {"port": 443, "protocol": "HTTP"},
            ]}))
        ),
        vec![
            "spec.ports[1].name: Duplicate value: \"http\"",
            "spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.ports[1].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.ports[2].name: Required value",
            "spec.ports[2].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \
             \"TCP\", \"UDP\"",
        ]
    );
}

#[test]
fn config_maps_and_secrets() {
    let got = check(
        "cm",
        json!({"metadata": {"name": "c"}, "data": {"ok.key": "1", "bad/key": "2", "dup": "x"},
               "binaryData": {"dup": "eA=="}}),
    );
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got[0].starts_with("data[bad/key]: Invalid value: \"bad/key\": a valid config key"));
    assert_eq!(
        got[1],
        "data[dup]: Invalid value: \"dup\": duplicate of key present in binaryData"
    );
    assert_eq!(
        check(
            "secrets",
            json!({"metadata": {"name": "s"}, "data": {"..x": "eA=="}})
        ),
        vec!["data[..x]: Invalid value: \"..x\": must not start with '..'"]
    );
    assert_eq!(
        check(
            "secrets",
            json!({"metadata": {"name": "s"}, "stringData": {"a b": "x"}})
        )
        .len(),
        1
    );
    assert_eq!(
        check(
            "secrets",
            json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "stringData": {"tls.crt": "x"}})
        ),
        vec!["data[tls.key]: Required value"]
    );
    let huge = "x".repeat(1024 * 1024 + 1);
    assert_eq!(
        check(
            "cm",
            json!({"metadata": {"name": "c"}, "data": {"a": huge}})
        ),
        vec!["Too long: may not be more than 1048576 bytes"]
    );
}

#[test]
fn every_registered_kind_validates_a_minimal_object() {
    for r in crate::registry::all() {
        let obj = json!({"apiVersion": r.api_version(), "kind": r.kind, "metadata": {"name": "x"}});
        let causes = validate_object(r, &obj);
        // Kinds with required spec fields complain about them, never about decoding.
        assert!(
            causes
                .iter()
                .all(|c| !c.field.is_empty() || c.message.starts_with("Too long")),
            "{}: {causes:?}",
            r.kind
        );
    }
    let _ = lookup("", "v1", "pods");
}

proptest! {
    #[test]
    fn label_validators_agree_with_their_regexes(s in "[-a-zA-Z0-9_./]{0,70}") {
        let label_ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        prop_assert_eq!(is_dns1123_label(&s).is_empty(), label_ok);
        let value_ok = s.is_empty()
            || (s.len() <= 63
                && s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
                && s.as_bytes()[0].is_ascii_alphanumeric()
                && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric());
        prop_assert_eq!(is_valid_label_value(&s).is_empty(), value_ok);
        if !s.contains('/') {
            prop_assert_eq!(is_qualified_name(&s).is_empty(), !s.is_empty() && value_ok);
        }
    }

    #[test]
    fn validate_object_never_panics(name in "\\PC{0,20}", key in "\\PC{0,10}", image in "\\PC{0,10}") {
        let obj = json!({"metadata": {"name": name, "labels": {key: "v"}},
                         "spec": {"containers": [{"name": "c", "image": image}]}});
        let _ = validate_object(info("pods"), &obj);
        let _ = validate_object(info("deployments"), &obj);
    }
}
