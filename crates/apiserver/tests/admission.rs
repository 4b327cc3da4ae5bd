//! What the apiserver does to objects on the way in, and the verbs' Kubernetes semantics.

use rkube_rpc::ResourcesClient;
use rkube_rpc::v1::{self, ResourceRef};
use rkube_testing::TestApiserver;
use serde_json::{Value, json};
use tonic::transport::Channel;

struct Api {
    c: ResourcesClient<Channel>,
    r: ResourceRef,
}

impl Api {
    async fn new(server: &TestApiserver, group: &str, resource: &str, ns: &str) -> Self {
        let c = server.grpc();
        Api {
            c,
            r: ResourceRef::new(group, "v1", resource, ns),
        }
    }

    async fn create(&mut self, obj: Value) -> Result<Value, rkube_types::ApiError> {
        self.c
            .create(v1::CreateRequest {
                resource: Some(self.r.clone()),
                object: serde_json::to_vec(&obj).expect("json").into(),
                ..Default::default()
            })
            .await
            .map(|r| serde_json::from_slice(&r.into_inner().object).expect("json"))
            .map_err(|s| rkube_rpc::from_grpc(&s))
    }

    async fn get(&mut self, name: &str) -> Result<Value, rkube_types::ApiError> {
        self.c
            .get(v1::GetRequest {
                resource: Some(self.r.clone()),
                name: name.into(),
            })
            .await
            .map(|r| serde_json::from_slice(&r.into_inner().object).expect("json"))
            .map_err(|s| rkube_rpc::from_grpc(&s))
    }

    async fn update(&mut self, obj: &Value, status: bool) -> Value {
        let req = v1::UpdateRequest {
            resource: Some(self.r.clone()),
            name: obj["metadata"]["name"].as_str().expect("name").into(),
            object: serde_json::to_vec(obj).expect("json").into(),
            ..Default::default()
        };
        let resp = if status {
            self.c.update_status(req).await
        } else {
            self.c.update(req).await
        };
        serde_json::from_slice(&resp.expect("update").into_inner().object).expect("json")
    }

    async fn patch(&mut self, name: &str, kind: v1::PatchType, patch: Value, sub: &str) -> Value {
        let resp = self
            .c
            .patch(v1::PatchRequest {
                resource: Some(self.r.clone()),
                name: name.into(),
                patch_type: kind as i32,
                patch: serde_json::to_vec(&patch).expect("json").into(),
                subresource: sub.into(),
                ..Default::default()
            })
            .await
            .expect("patch");
        serde_json::from_slice(&resp.into_inner().object).expect("json")
    }

    async fn delete(&mut self, name: &str, grace: Option<i64>) -> Value {
        let resp = self
            .c
            .delete(v1::DeleteRequest {
                resource: Some(self.r.clone()),
                name: name.into(),
                grace_period_seconds: grace,
                ..Default::default()
            })
            .await
            .expect("delete");
        serde_json::from_slice(&resp.into_inner().object).expect("json")
    }

    async fn list(&mut self, opts: v1::ListOptions) -> v1::ListResponse {
        self.c
            .list(v1::ListRequest {
                resource: Some(self.r.clone()),
                options: Some(opts),
            })
            .await
            .expect("list")
            .into_inner()
    }
}

fn deployment(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": "docker.io/library/busybox:1"}]}}
        }
    })
}

#[tokio::test]
async fn system_namespaces_exist_from_the_start() {
    let server = TestApiserver::start().await;
    let mut ns = Api::new(&server, "", "namespaces", "").await;
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = ns
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("namespace {name}: {e}"));
        assert_eq!(obj["status"]["phase"], "Active");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn create_fills_system_fields_and_defaults() {
    let server = TestApiserver::start().await;
    let mut api = Api::new(&server, "apps", "deployments", "").await;
    let created = api.create(deployment("web", 2)).await.expect("create");
    let meta = &created["metadata"];
    assert_eq!(meta["namespace"], "default", "default namespace");
    assert_eq!(meta["uid"].as_str().expect("uid").len(), 36);
    assert!(
        meta["creationTimestamp"]
            .as_str()
            .expect("ts")
            .ends_with('Z')
    );
    assert_eq!(meta["generation"], 1);
    let rv: u64 = meta["resourceVersion"]
        .as_str()
        .expect("rv")
        .parse()
        .expect("numeric rv");
    assert!(rv > 0);
    assert_eq!(
        created["spec"]["strategy"]["type"], "RollingUpdate",
        "defaulted"
    );
    assert_eq!(
        created["spec"]["template"]["spec"]["restartPolicy"],
        "Always"
    );

    let mut gen_api = Api::new(&server, "", "configmaps", "default").await;
    let made = gen_api
        .create(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "cfg-"}}),
        )
        .await
        .expect("generateName");
    let name = made["metadata"]["name"].as_str().expect("name");
    assert!(
        name.starts_with("cfg-") && name.len() == 9,
        "generated name {name}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn generation_and_status_subresource() {
    let server = TestApiserver::start().await;
    let mut api = Api::new(&server, "apps", "deployments", "default").await;
    let created = api.create(deployment("web", 1)).await.expect("create");

    let mut relabeled = created.clone();
    relabeled["metadata"]["labels"]["tier"] = "front".into();
    let after_labels = api.update(&relabeled, false).await;
    assert_eq!(
        after_labels["metadata"]["generation"], 1,
        "metadata changes keep the generation"
    );

    let mut scaled = after_labels.clone();
    scaled["spec"]["replicas"] = 3.into();
    scaled["status"] = json!({"replicas": 99});
    let after_scale = api.update(&scaled, false).await;
    assert_eq!(
        after_scale["metadata"]["generation"], 2,
        "spec change bumps the generation"
    );
    assert!(
        after_scale["status"].get("replicas").is_none(),
        "main update ignores status: {}",
        after_scale["status"]
    );

    let mut status = after_scale.clone();
    status["status"] = json!({"replicas": 3, "observedGeneration": 2});
    status["spec"]["replicas"] = 7.into();
    let after_status = api.update(&status, true).await;
    assert_eq!(after_status["status"]["replicas"], 3);
    assert_eq!(
        after_status["spec"]["replicas"], 3,
        "status update ignores spec"
    );
    assert_eq!(after_status["metadata"]["generation"], 2);

    let patched = api
        .patch(
            "web",
            v1::PatchType::Merge,
            json!({"spec": {"replicas": 5}}),
            "",
        )
        .await;
    assert_eq!(patched["spec"]["replicas"], 5);
    assert_eq!(patched["metadata"]["generation"], 3);
    let patched = api
        .patch(
            "web",
            v1::PatchType::Json,
            json!([{"op": "replace", "path": "/status/replicas", "value": 5}]),
            "status",
        )
        .await;
    assert_eq!(patched["status"]["replicas"], 5);

    // A merge patch replaces the containers list; the defaults come back, as upstream
    // defaults every write, so the template still equals its ReplicaSets'.
    let patched = api
        .patch(
            "web",
            v1::PatchType::Merge,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "registry.local/web:v2"}]}}}}),
            "",
        )
        .await;
    let container = &patched["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    assert_eq!(container["terminationMessagePolicy"], "File");
    assert_eq!(patched["metadata"]["generation"], 4);
    let mut unchanged = patched.clone();
    unchanged["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .expect("container")
        .remove("imagePullPolicy");
    let after = api.update(&unchanged, false).await;
    assert_eq!(
        after["metadata"]["generation"], 4,
        "dropping a defaulted field changes nothing"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn delete_is_graceful_for_running_pods_and_objects_with_finalizers() {
    let server = TestApiserver::start().await;
    let mut pods = Api::new(&server, "", "pods", "default").await;
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "docker.io/library/busybox:1"}]}
    });
    pods.create(pod).await.expect("create pod");
    let marked = pods.delete("p", None).await;
    assert!(
        marked["metadata"]["deletionTimestamp"].is_string(),
        "bound pod is marked, not removed"
    );
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
    assert!(
        pods.get("p").await.is_ok(),
        "still there during its grace period"
    );
    pods.delete("p", Some(0)).await;
    assert_eq!(pods.get("p").await.expect_err("gone").code(), 404);

    let mut cms = Api::new(&server, "", "configmaps", "default").await;
    cms.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "f", "finalizers": ["example.com/hold"]}}))
        .await
        .expect("create");
    let marked = cms.delete("f", None).await;
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    let mut released = cms.get("f").await.expect("held by its finalizer");
    released["metadata"]["finalizers"] = json!([]);
    cms.update(&released, false).await;
    assert_eq!(
        cms.get("f")
            .await
            .expect_err("removed with its last finalizer")
            .code(),
        404
    );
    server.shutdown().await;
}

#[tokio::test]
async fn list_selects_and_pages() {
    // Paging proper: small lists would otherwise come whole (see the next test).
    let options = rkube_testing::Options {
        unpaged_list_max: 0,
        ..Default::default()
    };
    let server = TestApiserver::start_with(options, false).await;
    let mut cms = Api::new(&server, "", "configmaps", "default").await;
    for i in 0..7 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        cms.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}"), "labels": {"tier": tier}}}))
            .await
            .expect("create");
    }
    let even = cms
        .list(v1::ListOptions {
            label_selector: "tier=even".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(even.items.len(), 4);
    let named = cms
        .list(v1::ListOptions {
            field_selector: "metadata.name=c3".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(named.items.len(), 1);

    let mut names = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    let mut first_rv = String::new();
    loop {
        let page = cms
            .list(v1::ListOptions {
                limit: 3,
                continue_token: token.clone(),
                ..Default::default()
            })
            .await;
        pages += 1;
        if first_rv.is_empty() {
            first_rv = page.resource_version.clone();
        }
        assert_eq!(
            page.resource_version, first_rv,
            "pages keep the first page's resourceVersion"
        );
        for item in &page.items {
            let v: Value = serde_json::from_slice(item).expect("json");
            names.push(v["metadata"]["name"].as_str().expect("name").to_string());
        }
        if page.continue_token.is_empty() {
            break;
        }
        token = page.continue_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);

    let dry = cms
        .c
        .create(v1::CreateRequest {
            resource: Some(cms.r.clone()),
            object: serde_json::to_vec(
                &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dry"}}),
            )
            .expect("json")
            .into(),
            dry_run: true,
            ..Default::default()
        })
        .await;
    assert!(dry.is_ok(), "dry run is admitted");
    assert_eq!(
        cms.get("dry")
            .await
            .expect_err("dry run stores nothing")
            .code(),
        404
    );
    server.shutdown().await;
}

#[tokio::test]
async fn terminating_namespaces_take_no_new_objects() {
    let server = TestApiserver::start().await;
    let mut ns = Api::new(&server, "", "namespaces", "").await;
    ns.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}}))
        .await
        .expect("create namespace");
    let mut cms = Api::new(&server, "", "configmaps", "doomed").await;
    cms.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "before"}}))
        .await
        .expect("create in an active namespace");
    let marked = ns.delete("doomed", None).await;
    assert_eq!(marked["status"]["phase"], "Terminating");
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    let err = cms
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after"}}))
        .await
        .expect_err("terminating namespace");
    assert_eq!(
        (err.code(), err.reason),
        (403, rkube_types::Reason::Forbidden),
        "{err}"
    );
    assert_eq!(
        err.causes
            .iter()
            .map(|c| (c.reason.as_str(), c.field.as_str(), c.message.as_str()))
            .collect::<Vec<_>>(),
        [(
            "NamespaceTerminating",
            "metadata.namespace",
            "namespace doomed is being terminated"
        )]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_pod_in_its_grace_period_survives_status_updates_and_other_kinds_have_no_grace() {
    let server = TestApiserver::start().await;
    let mut pods = Api::new(&server, "", "pods", "default").await;
    pods.create(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "1"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "docker.io/library/busybox:1"}]}
    }))
    .await
    .expect("create pod");
    pods.delete("p", Some(30)).await;
    // Regression (review A1): an update during the grace period must not delete the pod.
    let mut status = pods.get("p").await.expect("marked pod");
    status["status"]["phase"] = "Running".into();
    status["metadata"]["labels"]["a"] = "changed-through-status".into();
    let after = pods.update(&status, true).await;
    assert_eq!(after["status"]["phase"], "Running");
    assert_eq!(
        after["metadata"]["labels"]["a"], "1",
        "a status write keeps the labels (review A4)"
    );
    assert!(
        pods.get("p").await.is_ok(),
        "still there until the kubelet confirms"
    );

    // Regression (review A2): a grace period means nothing for a ConfigMap.
    let mut cms = Api::new(&server, "", "configmaps", "default").await;
    cms.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}))
        .await
        .expect("create");
    cms.delete("c", Some(30)).await;
    assert_eq!(cms.get("c").await.expect_err("gone at once").code(), 404);
    server.shutdown().await;
}

#[tokio::test]
async fn patches_cannot_grow_an_object_past_the_limit() {
    let server = TestApiserver::start().await;
    // ControllerRevision.data is free-form, so only the object size limit applies.
    let mut revs = Api::new(&server, "apps", "controllerrevisions", "default").await;
    let created = revs
        .create(
            json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "g"},
                       "revision": 1, "data": {"a": "x".repeat(600 * 1024)}}),
        )
        .await
        .expect("create");
    let rv = created["metadata"]["resourceVersion"].clone();
    let resource = revs.r.clone();
    let patch = |patch: Value, kind: v1::PatchType| v1::PatchRequest {
        resource: Some(resource.clone()),
        name: "g".into(),
        patch_type: kind as i32,
        patch: serde_json::to_vec(&patch).expect("json").into(),
        ..Default::default()
    };
    // Regression (review A3): each request is small; the object after the patch is not.
    let merge = patch(
        json!({"data": {"b": "y".repeat(1024 * 1024)}}),
        v1::PatchType::Merge,
    );
    let err = rkube_rpc::from_grpc(&revs.c.patch(merge).await.expect_err("too large"));
    assert_eq!(err.code(), 413, "{err}");
    // A JSON patch copying the data into itself doubles it with every operation.
    let bomb: Vec<Value> = (0..30)
        .map(|i| json!({"op": "copy", "from": "/data", "path": format!("/data/x{i}")}))
        .collect();
    let err = rkube_rpc::from_grpc(
        &revs
            .c
            .patch(patch(json!(bomb), v1::PatchType::Json))
            .await
            .expect_err("too large"),
    );
    assert_eq!(err.code(), 413, "{err}");
    let now = revs.get("g").await.expect("get");
    assert_eq!(
        now["metadata"]["resourceVersion"], rv,
        "refused patches changed nothing"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn small_lists_come_whole_whatever_the_limit() {
    let server = TestApiserver::start().await;
    let mut cms = Api::new(&server, "", "configmaps", "default").await;
    for i in 0..7 {
        cms.create(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}")}}),
        )
        .await
        .expect("create");
    }
    let page = cms
        .list(v1::ListOptions {
            limit: 3,
            ..Default::default()
        })
        .await;
    assert_eq!(
        page.items.len(),
        7,
        "a list under the unpaged maximum ignores limit"
    );
    assert!(
        page.continue_token.is_empty(),
        "and says there is nothing more"
    );
    assert_eq!(page.remaining_item_count, None);
    server.shutdown().await;
}

fn pod_with(name: &str, spec_extra: Value) -> Value {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "docker.io/library/busybox:latest"}]}});
    if let (Some(spec), Some(extra)) = (pod["spec"].as_object_mut(), spec_extra.as_object()) {
        spec.extend(extra.clone());
    }
    pod
}

#[tokio::test]
async fn priority_admission_resolves_priority_classes() {
    let server = TestApiserver::start().await;
    let mut classes = Api::new(&server, "scheduling.k8s.io", "priorityclasses", "").await;
    let mut pods = Api::new(&server, "", "pods", "default").await;
    let critical = classes
        .get("system-node-critical")
        .await
        .expect("system class");
    assert_eq!(critical["value"], 2_000_001_000);

    classes
        .create(
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never"}),
        )
        .await
        .expect("class");
    let p = pods
        .create(pod_with("p-high", json!({"priorityClassName": "high"})))
        .await
        .expect("pod");
    assert_eq!(p["spec"]["priority"], 1000);
    assert_eq!(p["spec"]["preemptionPolicy"], "Never");

    let plain = pods
        .create(pod_with("p-plain", json!({})))
        .await
        .expect("pod");
    assert_eq!(
        plain["spec"]["priority"], 0,
        "no class and no global default"
    );

    let missing = pods
        .create(pod_with("p-missing", json!({"priorityClassName": "nope"})))
        .await
        .expect_err("unknown class");
    assert_eq!(missing.reason, rkube_types::Reason::Forbidden);
    assert!(
        missing
            .message
            .contains("no PriorityClass with name nope was found"),
        "{}",
        missing.message
    );
    let mismatch = pods
        .create(pod_with(
            "p-mismatch",
            json!({"priorityClassName": "high", "priority": 5}),
        ))
        .await
        .expect_err("priority disagrees with the class");
    assert_eq!(mismatch.reason, rkube_types::Reason::Forbidden);
    assert!(pods.get("p-mismatch").await.is_err(), "nothing was written");

    classes
        .create(
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": "everyday"}, "value": 7, "globalDefault": true}),
        )
        .await
        .expect("default class");
    // The global default is read from the watch cache, which follows the store closely.
    let mut n = 0;
    let defaulted = rkube_testing::eventually(
        "pods to get the global default priority",
        std::time::Duration::from_secs(10),
        || {
            n += 1;
            let name = format!("p-default-{n}");
            let mut pods = Api {
                c: server.grpc(),
                r: ResourceRef::new("", "v1", "pods", "default"),
            };
            async move {
                let p = pods
                    .create(pod_with(&name, json!({})))
                    .await
                    .map_err(|e| e.message)?;
                if p["spec"]["priority"] == 7 {
                    Ok(p)
                } else {
                    Err(format!("priority {}", p["spec"]["priority"]))
                }
            }
        },
    )
    .await;
    assert_eq!(defaulted["spec"]["priorityClassName"], "everyday");
}

#[tokio::test]
async fn binding_over_grpc_checks_the_uid_and_binds_once() {
    let server = TestApiserver::start().await;
    let mut pods = Api::new(&server, "", "pods", "default").await;
    let pod = pods.create(pod_with("b", json!({}))).await.expect("pod");
    let uid = pod["metadata"]["uid"].as_str().expect("uid").to_string();
    let c = server.grpc();
    let bind = |uid: &str, node: &str| {
        let req = v1::CreateRequest {
            resource: Some(ResourceRef::new("", "v1", "pods", "default")),
            object: serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": "b", "uid": uid}, "target": {"kind": "Node", "name": node}}))
            .expect("json")
            .into(),
            subresource: "binding".into(),
            ..Default::default()
        };
        let mut c = c.clone();
        async move { c.create(req).await.map_err(|s| rkube_rpc::from_grpc(&s)) }
    };
    let stale = bind("not-the-uid", "n1")
        .await
        .expect_err("another pod's uid");
    assert_eq!(stale.reason, rkube_types::Reason::Conflict);
    assert!(pods.get("b").await.expect("pod")["spec"]["nodeName"].is_null());
    let bound = bind(&uid, "n1").await.expect("bind");
    let bound: Value = serde_json::from_slice(&bound.into_inner().object).expect("json");
    assert_eq!(bound["spec"]["nodeName"], "n1");
    let again = bind(&uid, "n2").await.expect_err("bound once");
    assert_eq!(again.reason, rkube_types::Reason::Conflict);
    assert!(
        again.message.contains("already assigned to node \"n1\""),
        "{}",
        again.message
    );
}
