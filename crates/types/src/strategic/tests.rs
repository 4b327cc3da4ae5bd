use super::schema::{ListStrategy, Schema};
use super::*;
use crate::registry;
use proptest::prelude::*;
use serde_json::json;

fn info(plural: &str) -> &'static ResourceInfo {
    registry::all()
        .iter()
        .find(|r| r.plural == plural)
        .expect("registered plural")
}

/// Applies `patch` to `original` as an object of `plural`, panicking on errors.
fn patched(plural: &str, mut original: Value, patch: Value) -> Value {
    apply(info(plural), &mut original, &patch).expect("patch applies");
    original
}

fn deployment(containers: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}},
        "spec": {
            "replicas": 2,
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": containers},
            },
        },
    })
}

fn containers_of(obj: &Value) -> &Value {
    &obj["spec"]["template"]["spec"]["containers"]
}

#[test]
fn kubectl_apply_merges_containers_and_env_by_name() {
    let original = deployment(json!([
        {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
        {"name": "b", "image": "b:1"},
    ]));
    let out = patched(
        "deployments",
        original,
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "env": [{"name": "X", "value": "3"}]},
        ]}}}}),
    );
    assert_eq!(
        containers_of(&out),
        &json!([
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "3"}, {"name": "Y", "value": "2"}]},
            {"name": "b", "image": "b:1"},
        ])
    );
    assert_eq!(out["spec"]["replicas"], json!(2));
}

#[test]
fn new_items_go_before_the_originals_without_an_order() {
    // As in Kubernetes (the `kubectl patch` docs show the added container first): patch
    // items the original does not have are placed before the original's own items.
    let original = deployment(json!([{"name": "a", "image": "a:1"}]));
    let out = patched(
        "deployments",
        original.clone(),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "c:1"}]}}}}),
    );
    assert_eq!(
        containers_of(&out),
        &json!([{"name": "c", "image": "c:1"}, {"name": "a", "image": "a:1"}])
    );
    // With `$setElementOrder`, as `kubectl apply` sends, the new item goes where it is listed.
    let out = patched(
        "deployments",
        original,
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "c"}],
            "containers": [{"name": "c", "image": "c:1"}],
        }}}}),
    );
    assert_eq!(
        containers_of(&out),
        &json!([{"name": "a", "image": "a:1"}, {"name": "c", "image": "c:1"}])
    );
}

#[test]
fn patch_delete_removes_a_container() {
    let original =
        deployment(json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]));
    let out = patched(
        "deployments",
        original,
        json!({"spec": {"template": {"spec": {"containers": [{"$patch": "delete", "name": "a"}]}}}}),
    );
    assert_eq!(containers_of(&out), &json!([{"name": "b", "image": "b:1"}]));
}

#[test]
fn patch_replace_in_a_list_replaces_it() {
    let original =
        deployment(json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]));
    let out = patched(
        "deployments",
        original,
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "c:1"},
            {"$patch": "replace"},
        ]}}}}),
    );
    assert_eq!(containers_of(&out), &json!([{"name": "c", "image": "c:1"}]));
}

#[test]
fn patch_replace_and_delete_on_maps() {
    let original = deployment(json!([]));
    let out = patched(
        "deployments",
        original.clone(),
        json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({"only": "this"}));
    let out = patched(
        "deployments",
        original.clone(),
        json!({"metadata": {"labels": {"$patch": "delete"}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({}));
    let out = patched(
        "deployments",
        original,
        json!({"metadata": {"labels": {"$patch": "merge", "new": "x"}}}),
    );
    assert_eq!(
        out["metadata"]["labels"],
        json!({"app": "web", "tier": "front", "new": "x"})
    );
}

#[test]
fn null_removes_a_label() {
    let out = patched(
        "deployments",
        deployment(json!([])),
        json!({"metadata": {"labels": {"tier": null, "missing": null}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
}

#[test]
fn nulls_in_new_values_are_dropped() {
    let out = patched(
        "configmaps",
        json!({"metadata": {"name": "c"}}),
        json!({"data": {"a": "1", "b": null}}),
    );
    assert_eq!(out, json!({"metadata": {"name": "c"}, "data": {"a": "1"}}));
}

#[test]
fn finalizers_union() {
    let out = patched(
        "configmaps",
        json!({"metadata": {"name": "c", "finalizers": ["a", "b"]}}),
        json!({"metadata": {"finalizers": ["c", "a"]}}),
    );
    // Kubernetes' order: patch items in patch order, original-only items where they were.
    assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));
    let out = patched(
        "configmaps",
        json!({"metadata": {"name": "c", "finalizers": ["a", "b"]}}),
        json!({"metadata": {"finalizers": ["b", "c"]}}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
}

#[test]
fn delete_from_primitive_list() {
    let out = patched(
        "configmaps",
        json!({"metadata": {"name": "c", "finalizers": ["a", "b", "c"]}}),
        json!({"metadata": {
            "$deleteFromPrimitiveList/finalizers": ["b"],
            "$setElementOrder/finalizers": ["c", "a"],
        }}),
    );
    assert_eq!(
        out,
        json!({"metadata": {"name": "c", "finalizers": ["c", "a"]}})
    );
}

#[test]
fn container_ports_merge_by_container_port() {
    let original = deployment(json!([{"name": "a", "ports": [
        {"containerPort": 80, "name": "http"},
        {"containerPort": 443, "name": "https"},
    ]}]));
    let out = patched(
        "deployments",
        original,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "ports": [
            {"containerPort": 443, "protocol": "TCP"},
            {"containerPort": 8080},
        ]}]}}}}),
    );
    assert_eq!(
        containers_of(&out)[0]["ports"],
        json!([
            {"containerPort": 80, "name": "http"},
            {"containerPort": 443, "name": "https", "protocol": "TCP"},
            {"containerPort": 8080},
        ])
    );
}

#[test]
fn service_ports_merge_by_port() {
    let out = patched(
        "services",
        json!({"metadata": {"name": "s"}, "spec": {"ports": [
            {"port": 80, "targetPort": 8080},
            {"port": 81, "targetPort": 8081},
        ]}}),
        json!({"spec": {"ports": [{"port": 81, "targetPort": "http"}]}}),
    );
    assert_eq!(
        out["spec"]["ports"],
        json!([{"port": 80, "targetPort": 8080}, {"port": 81, "targetPort": "http"}])
    );
}

#[test]
fn lists_without_strategy_are_replaced() {
    let original = deployment(json!([{"name": "a", "args": ["x", "y", "z"]}]));
    let out = patched(
        "deployments",
        original,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "args": ["q"]}]}}}}),
    );
    assert_eq!(containers_of(&out)[0]["args"], json!(["q"]));
    // Also where the containing type is unknown to the table.
    let out = patched(
        "configmaps",
        json!({"metadata": {"name": "c"}, "spec": {"list": [{"name": "a", "v": 1}]}}),
        json!({"spec": {"list": [{"name": "a"}]}}),
    );
    assert_eq!(out["spec"]["list"], json!([{"name": "a"}]));
}

#[test]
fn retain_keys_drops_rolling_update_when_switching_to_recreate() {
    let mut original = deployment(json!([]));
    original["spec"]["strategy"] = json!({
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    });
    let out = patched(
        "deployments",
        original,
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
    );
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
}

#[test]
fn set_element_order_orders_and_does_not_leak() {
    let original = deployment(json!([
        {"name": "a", "image": "a:1"},
        {"name": "b", "image": "b:1"},
        {"name": "c", "image": "c:1"},
    ]));
    let out = patched(
        "deployments",
        original,
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}],
            "containers": [{"name": "a", "image": "a:2"}],
        }}}}),
    );
    assert_eq!(
        out["spec"]["template"]["spec"],
        json!({"containers": [
            {"name": "c", "image": "c:1"},
            {"name": "a", "image": "a:2"},
            {"name": "b", "image": "b:1"},
        ]})
    );
    assert!(!out.to_string().contains('$'), "{out}");
}

#[test]
fn directives_in_new_values_are_applied_not_stored() {
    let out = patched(
        "pods",
        json!({"metadata": {"name": "p"}, "spec": {}}),
        json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}],
            "containers": [{"name": "a", "env": [{"name": "X", "value": "1"}, {"$patch": "replace"}]}],
            "volumes": [{"name": "v", "$retainKeys": ["name", "emptyDir"], "emptyDir": {}}],
            "affinity": {"$patch": "delete"},
        }}),
    );
    assert_eq!(
        out,
        json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "a", "env": [{"name": "X", "value": "1"}]}],
            "volumes": [{"name": "v", "emptyDir": {}}],
        }})
    );
}

#[test]
fn cron_job_templates_reach_containers() {
    let original = json!({"metadata": {"name": "cj"}, "spec": {"schedule": "* * * * *",
    "jobTemplate": {"spec": {"template": {"spec": {"containers": [
        {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"},
    ]}}}}}});
    let out = patched(
        "cronjobs",
        original,
        json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [
            {"name": "b", "image": "b:2"},
        ]}}}}}}),
    );
    assert_eq!(
        out["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"],
        json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}])
    );
}

#[test]
fn status_conditions_merge_by_type() {
    let out = patched(
        "nodes",
        json!({"metadata": {"name": "n"}, "status": {
            "conditions": [{"type": "Ready", "status": "False"}, {"type": "DiskPressure", "status": "False"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
        }}),
        json!({"status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "Hostname", "address": "n"}],
        }}),
    );
    assert_eq!(
        out["status"],
        json!({
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"}],
            "addresses": [{"type": "Hostname", "address": "n"}, {"type": "InternalIP", "address": "10.0.0.1"}],
        })
    );
    let out = patched(
        "jobs",
        json!({"metadata": {"name": "j"}, "status": {"conditions": [{"type": "Complete", "status": "False"}]}}),
        json!({"status": {"conditions": [{"type": "Failed", "status": "True"}]}}),
    );
    assert_eq!(
        out["status"]["conditions"].as_array().map(Vec::len),
        Some(2)
    );
}

#[test]
fn owner_references_merge_by_uid() {
    let out = patched(
        "pods",
        json!({"metadata": {"name": "p", "ownerReferences": [{"uid": "1", "name": "a"}]}}),
        json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}, {"uid": "1", "controller": true}]}}),
    );
    assert_eq!(
        out["metadata"]["ownerReferences"],
        json!([{"uid": "2", "name": "b"}, {"uid": "1", "name": "a", "controller": true}])
    );
}

#[test]
fn merge_keys_compare_numbers_by_value() {
    let out = patched(
        "services",
        json!({"spec": {"ports": [{"port": 80, "name": "a"}]}}),
        json!({"spec": {"ports": [{"port": 80.0, "name": "b"}]}}),
    );
    assert_eq!(out["spec"]["ports"].as_array().map(Vec::len), Some(1));
}

#[test]
fn errors() {
    let mut original = deployment(json!([{"name": "a"}]));
    let before = original.clone();
    let deployments = info("deployments");
    let err = |patch: Value| {
        apply(deployments, &mut original.clone(), &patch)
            .expect_err("patch must fail")
            .to_string()
    };
    assert_eq!(err(json!([1])), "the patch must be a JSON object");
    assert_eq!(err(json!("x")), "the patch must be a JSON object");
    assert_eq!(
        err(json!({"metadata": {"$patch": "explode"}})),
        "invalid $patch directive \"explode\" at metadata: must be \"replace\", \"delete\" or \"merge\""
    );
    assert_eq!(
        err(json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}})),
        "list item spec.template.spec.containers[0] has no merge key \"name\""
    );
    assert_eq!(
        err(json!({"spec": {"template": {"spec": {"containers": ["a"]}}}})),
        "list item spec.template.spec.containers[0] must be an object, as the list merges by \"name\""
    );
    assert_eq!(
        err(json!({"spec": {"$bogus": 1}})),
        "unknown directive \"$bogus\" at spec"
    );
    assert_eq!(
        err(json!({"$retainKeys": "type"})),
        "$retainKeys at <root> must be a list"
    );
    assert_eq!(
        err(json!({"spec": {"strategy": {"$retainKeys": [1]}}})),
        "$retainKeys at spec.strategy must be a list of strings"
    );
    assert_eq!(
        err(json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}})),
        "field \"rollingUpdate\" at spec.strategy is patched but not listed in $retainKeys"
    );
    assert_eq!(
        err(json!({"metadata": {"$setElementOrder/finalizers": {}}})),
        "$setElementOrder/finalizers at metadata must be a list"
    );
    // A failing patch leaves the original as it was, even after partial progress.
    let result = apply(
        deployments,
        &mut original,
        &json!({"metadata": {"labels": {"x": "y"}}, "spec": {"$bogus": 1}}),
    );
    assert!(result.is_err());
    assert_eq!(original, before);
    assert_eq!(
        apply(deployments, &mut json!([]), &json!({})),
        Err(StrategicError::OriginalNotObject)
    );
}

// Property: a patch made only of fields of the original, with the same values, changes
// nothing (what `kubectl apply` sends when nothing changed, minus the directives).

fn name() -> impl Strategy<Value = String> {
    "[a-z]{1,3}"
}

fn container() -> impl Strategy<Value = Value> {
    (
        "[a-z:0-9]{1,6}",
        prop::collection::btree_map(name(), "[a-z0-9]{0,3}", 0..4),
        prop::collection::btree_set(1u16..1000, 0..3),
        prop::collection::vec("[a-z]{0,2}", 0..4),
        prop::option::of(Just(json!({"limits": {"cpu": "1"}}))),
    )
        .prop_map(|(image, env, ports, args, resources)| {
            let mut c = json!({
                "image": image,
                "env": env.into_iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>(),
                "ports": ports.into_iter().map(|p| json!({"containerPort": p, "protocol": "TCP"})).collect::<Vec<_>>(),
                "args": args,
            });
            if let Some(r) = resources {
                c["resources"] = r;
            }
            c
        })
}

fn deployment_strategy() -> impl Strategy<Value = Value> {
    (
        prop::collection::btree_map(name(), name(), 0..3),
        prop::collection::btree_set("[a-z.]{1,4}", 0..3),
        prop::collection::btree_map(name(), container(), 1..4),
        prop::collection::btree_map(name(), Just(json!({"emptyDir": {}})), 0..3),
        0i32..5,
        prop::bool::ANY,
    )
        .prop_map(
            |(labels, finalizers, containers, volumes, replicas, rolling)| {
                let containers: Vec<Value> = containers
                    .into_iter()
                    .map(|(n, mut c)| {
                        c["name"] = json!(n);
                        c
                    })
                    .collect();
                let volumes: Vec<Value> = volumes
                    .into_iter()
                    .map(|(n, mut v)| {
                        v["name"] = json!(n);
                        v
                    })
                    .collect();
                let strategy = if rolling {
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}})
                } else {
                    json!({"type": "Recreate"})
                };
                json!({
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "d", "labels": labels, "finalizers": finalizers},
                    "spec": {
                        "replicas": replicas,
                        "strategy": strategy,
                        "template": {"spec": {"containers": containers, "volumes": volumes}},
                    },
                    "status": {"conditions": [{"type": "Available", "status": "True"}]},
                })
            },
        )
}

/// A patch with some of the fields of `value` (chosen by `choices`), with their values.
fn sub_patch(
    value: &Value,
    schema: Schema,
    strategy: ListStrategy,
    choices: &mut impl Iterator<Item = bool>,
) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                if choices.next().unwrap_or(true) {
                    let (child, child_strategy) = schema.child(k);
                    out.insert(k.clone(), sub_patch(v, child, child_strategy, choices));
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => match strategy {
            ListStrategy::Replace => value.clone(),
            ListStrategy::MergePrimitive => Value::Array(
                items
                    .iter()
                    .filter(|_| choices.next().unwrap_or(true))
                    .cloned()
                    .collect(),
            ),
            ListStrategy::MergeByKey(key) => {
                let mut out = Vec::new();
                for item in items {
                    if choices.next().unwrap_or(true) {
                        let mut sub = sub_patch(item, schema, ListStrategy::Replace, choices);
                        sub[key] = item[key].clone();
                        out.push(sub);
                    }
                }
                Value::Array(out)
            }
        },
        scalar => scalar.clone(),
    }
}

proptest! {
    #[test]
    fn patching_with_own_values_changes_nothing(
        original in deployment_strategy(),
        choices in prop::collection::vec(any::<bool>(), 1..200),
    ) {
        let info = info("deployments");
        let mut choices = choices.into_iter().cycle();
        let patch = sub_patch(&original, Schema::top(info), ListStrategy::Replace, &mut choices);
        let mut out = original.clone();
        apply(info, &mut out, &patch).expect("patch applies");
        prop_assert_eq!(out, original, "patch {}", patch);
    }
}

/// Any JSON built from field names, directives and directive values, as patches.
fn wild_patch() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec![
        "metadata",
        "labels",
        "finalizers",
        "spec",
        "template",
        "containers",
        "name",
        "env",
        "args",
        "strategy",
        "a",
        "$patch",
        "$retainKeys",
        "$setElementOrder/containers",
        "$setElementOrder/finalizers",
        "$deleteFromPrimitiveList/finalizers",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        prop::sample::select(vec!["replace", "delete", "merge", "a", "b", "name"])
            .prop_map(|s| json!(s)),
        (0i64..3).prop_map(|n| json!(n)),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..5).prop_map(|m| {
                Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

fn has_directive_key(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.starts_with('$') || has_directive_key(v)),
        Value::Array(items) => items.iter().any(has_directive_key),
        _ => false,
    }
}

proptest! {
    #[test]
    fn directives_never_reach_the_result(patch in wild_patch()) {
        let mut original = deployment(json!([
            {"name": "a", "env": [{"name": "X", "value": "1"}], "args": ["x"]},
            {"name": "b"},
        ]));
        original["metadata"]["finalizers"] = json!(["a", "b"]);
        let before = original.clone();
        match apply(info("deployments"), &mut original, &patch) {
            Ok(()) => prop_assert!(!has_directive_key(&original), "{}", original),
            Err(_) => prop_assert_eq!(original, before),
        }
    }
}
