use super::*;
use crate::registry;
use serde_json::json;

fn info(plural: &str) -> &'static ResourceInfo {
    registry::all()
        .iter()
        .find(|r| r.plural == plural)
        .expect("registered plural")
}

#[test]
fn unknown_fields_are_dropped_and_named() {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labelz": {"a": "b"}},
        "spec": {
            "foo": 1,
            "containers": [{"name": "app", "image": "nginx", "bar": {"x": 1}}],
        },
    });
    let normalized = normalize(info("pods"), &pod).expect("normalizes");
    assert_eq!(
        normalized,
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]},
        })
    );
    let mut unknown = unknown_fields(&pod, &normalized);
    unknown.sort();
    assert_eq!(
        unknown,
        vec!["metadata.labelz", "spec.containers[0].bar", "spec.foo"]
    );
}

#[test]
fn valid_deployment_round_trips_unchanged() {
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": {"app": "web"},
            "annotations": {"a": ""},
            "finalizers": ["example.com/f"],
            "creationTimestamp": "2024-05-01T10:00:00Z",
            "resourceVersion": "12",
            "uid": "0b0c",
            "generation": 3,
            "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "u",
                                 "controller": true}],
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "web",
                        "image": "nginx:1.27",
                        "args": [],
                        "env": [{"name": "X", "value": "1"},
                                {"name": "Y", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}},
                        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
                    }],
                    "volumes": [{"name": "v", "emptyDir": {}}],
                    "nodeSelector": {},
                },
            },
        },
        "status": {
            "replicas": 3,
            "conditions": [{"type": "Available", "status": "True",
                            "lastTransitionTime": "2024-05-01T10:00:05Z"}],
        },
    });
    let normalized = normalize(info("deployments"), &deployment).expect("normalizes");
    assert_eq!(normalized, deployment);
    assert!(unknown_fields(&deployment, &normalized).is_empty());
}

#[test]
fn empty_values_are_kept_and_nothing_is_invented() {
    let cm = json!({"metadata": {"name": "c", "labels": {}}, "data": {}});
    assert_eq!(normalize(info("configmaps"), &cm).expect("normalizes"), cm);
    // Required fields k8s-openapi would default are not added.
    let pod = json!({"spec": {"containers": [{}]}});
    assert_eq!(normalize(info("pods"), &pod).expect("normalizes"), pod);
    assert_eq!(
        normalize(info("pods"), &json!({})).expect("normalizes"),
        json!({})
    );
}

#[test]
fn nulls_are_dropped_without_counting_as_unknown() {
    let cm = json!({"metadata": {"name": "c", "creationTimestamp": null}, "data": null,
                    "other": null});
    let normalized = normalize(info("configmaps"), &cm).expect("normalizes");
    assert_eq!(normalized, json!({"metadata": {"name": "c"}}));
    assert!(unknown_fields(&cm, &normalized).is_empty());
}

#[test]
fn int_or_string_keeps_its_form() {
    let svc = json!({
        "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 80, "targetPort": 8080},
                           {"port": 81, "targetPort": "http"}]},
    });
    let normalized = normalize(info("services"), &svc).expect("normalizes");
    assert_eq!(normalized, svc);
    assert_eq!(normalized["spec"]["ports"][0]["targetPort"], json!(8080));
    assert_eq!(normalized["spec"]["ports"][1]["targetPort"], json!("http"));
}

#[test]
fn quantities_stay_as_written() {
    let quota = json!({
        "metadata": {"name": "q"},
        "spec": {"hard": {"cpu": "1500m", "memory": "1.5Gi", "pods": "10"}},
    });
    assert_eq!(
        normalize(info("resourcequotas"), &quota).expect("normalizes"),
        quota
    );
    // A number becomes the string Kubernetes would store.
    let numeric = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": 10}}});
    let normalized = normalize(info("resourcequotas"), &numeric).expect("normalizes");
    assert_eq!(normalized["spec"]["hard"]["pods"], json!("10"));
    assert!(unknown_fields(&numeric, &normalized).is_empty());
}

#[test]
fn api_version_and_kind_are_kept_verbatim() {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    assert_eq!(normalize(info("configmaps"), &cm).expect("normalizes"), cm);
    // Missing ones are not added; the caller decides.
    let bare = json!({"metadata": {"name": "c"}});
    assert_eq!(
        normalize(info("configmaps"), &bare).expect("normalizes"),
        bare
    );
}

#[test]
fn secrets_keep_their_base64() {
    let secret = json!({"metadata": {"name": "s"}, "data": {"k": "aGVsbG8="}, "type": "Opaque"});
    assert_eq!(
        normalize(info("secrets"), &secret).expect("normalizes"),
        secret
    );
}

#[test]
fn times_are_canonical() {
    let cm = json!({"metadata": {"name": "c", "creationTimestamp": "2024-05-01T12:00:00+02:00"}});
    let normalized = normalize(info("configmaps"), &cm).expect("normalizes");
    assert_eq!(
        normalized["metadata"]["creationTimestamp"],
        json!("2024-05-01T10:00:00Z")
    );
}

#[test]
fn decode_errors_carry_the_message() {
    let err = normalize(
        info("pods"),
        &json!({"spec": {"containers": [{"name": "a", "image": 5}]}}),
    )
    .expect_err("image must be a string");
    assert!(
        matches!(&err, NormalizeError::Decode(m) if m.contains("invalid type")),
        "{err}"
    );
    assert_eq!(
        normalize(info("pods"), &json!([1])),
        Err(NormalizeError::NotAnObject)
    );
}

#[test]
fn unregistered_kinds_are_refused() {
    let fake = ResourceInfo {
        group: "example.com",
        kind: "Widget",
        ..*info("pods")
    };
    let err = normalize(&fake, &json!({})).expect_err("not registered");
    assert!(matches!(err, NormalizeError::NotRegistered { .. }));
    assert_eq!(
        err.to_string(),
        "kind Widget of group \"example.com\" is not registered"
    );
}

#[test]
fn every_registered_kind_normalizes() {
    for r in registry::all() {
        let obj = json!({
            "apiVersion": r.api_version(),
            "kind": r.kind,
            "metadata": {"name": "x", "labels": {"a": "b"}},
            "bogus": true,
        });
        let normalized =
            normalize(r, &obj).unwrap_or_else(|e| panic!("{} did not normalize: {e}", r.kind));
        assert_eq!(
            normalized,
            json!({"apiVersion": r.api_version(), "kind": r.kind,
                   "metadata": {"name": "x", "labels": {"a": "b"}}}),
            "{}",
            r.kind
        );
        assert_eq!(
            unknown_fields(&obj, &normalized),
            vec!["bogus"],
            "{}",
            r.kind
        );
    }
}

#[test]
fn opaque_values_are_kept_whole() {
    let rev = json!({"metadata": {"name": "r"}, "revision": 1,
                     "data": {"spec": {"anything": [1, {"$patch": "replace"}]}}});
    let normalized = normalize(info("controllerrevisions"), &rev).expect("normalizes");
    assert_eq!(normalized, rev);
}
