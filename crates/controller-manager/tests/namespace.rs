//! Namespaces end to end: `kubectl delete namespace` empties the namespace (reporting what
//! is left in its conditions while content remains) and then removes it; a new namespace
//! gets its `default` ServiceAccount; and the apiserver's `finalize` subresource over gRPC,
//! which the namespace controller writes through.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use rkube_client::{Api, Patch, PostParams};
use rkube_testing::TestApiserver;
use rkube_testing::cluster::{Cluster, ClusterOptions};
use rkube_testing::eventually;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

async fn cluster() -> Cluster {
    Cluster::start(ClusterOptions {
        nodes: 1,
        scheduler: false,
        controller_manager_args: vec![
            "--controllers=garbagecollector,namespace,serviceaccount".into(),
        ],
        ..Default::default()
    })
    .await
}

fn condition<'a>(ns: &'a Value, kind: &str) -> Option<&'a Value> {
    ns["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

const CONTENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: doomed}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: registry.local/web:v1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: running, namespace: doomed}
spec:
  nodeName: node-1
  containers: [{name: c, image: registry.local/web:v1}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: doomed}
data: {k: v}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: held, namespace: doomed, finalizers: [example.com/hold]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: doomed}
spec:
  selector: {app: web}
  ports: [{port: 80}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_removes_its_content_then_the_namespace() {
    let cluster = cluster().await;
    let kubectl = &cluster.kubectl;
    kubectl
        .run(&["create", "namespace", "doomed"])
        .await
        .expect("create namespace");
    kubectl.apply(CONTENT).await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(cluster.client(), "doomed");
    eventually("the pod running", WAIT, || async {
        let pod = pods.get("running").await.map_err(|e| e.to_string())?;
        match rkube_controller_manager::pods::is_ready(&pod) {
            true => Ok(()),
            false => Err(format!("{:?}", pod.status)),
        }
    })
    .await;

    kubectl
        .run(&["delete", "namespace", "doomed", "--wait=false"])
        .await
        .expect("delete namespace");

    // Everything goes but the held ConfigMap, and the conditions say so.
    eventually(
        "the content deleted but for the held configmap",
        WAIT,
        || async {
            let left = kubectl
                .run(&[
                    "get",
                    "deploy,pods,configmaps,services",
                    "-n",
                    "doomed",
                    "-o",
                    "name",
                ])
                .await?;
            let ns = kubectl.json(&["get", "namespace", "doomed"]).await;
            let remaining = condition(&ns, "NamespaceContentRemaining").cloned();
            let finalizers = condition(&ns, "NamespaceFinalizersRemaining").cloned();
            let expected_remaining =
                "Some resources are remaining: configmaps. has 1 resource instances";
            let expected_finalizers =
                "Some finalizers are remaining: example.com/hold in 1 resource instances";
            match (&remaining, &finalizers) {
                (Some(r), Some(f))
                    if left.trim() == "configmap/held"
                        && ns["status"]["phase"] == "Terminating"
                        && r["status"] == "True"
                        && r["reason"] == "SomeResourcesRemain"
                        && r["message"] == expected_remaining
                        && f["status"] == "True"
                        && f["reason"] == "SomeFinalizerRemain"
                        && f["message"] == expected_finalizers =>
                {
                    Ok(())
                }
                _ => Err(format!("left: {left:?}; conditions: {}", ns["status"])),
            }
        },
    )
    .await;
    let ns = kubectl.json(&["get", "namespace", "doomed"]).await;
    let failure =
        condition(&ns, "NamespaceDeletionContentFailure").expect("content failure condition");
    assert_eq!(failure["status"], "False", "{failure}");
    assert_eq!(failure["reason"], "ContentDeleted");
    let discovery =
        condition(&ns, "NamespaceDeletionDiscoveryFailure").expect("discovery condition");
    assert_eq!(
        discovery["message"],
        "All resources successfully discovered"
    );
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));

    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client(), "doomed");
    config_maps
        .patch(
            "held",
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("release the held configmap");
    let namespaces: Api<Namespace> = Api::all(cluster.client());
    eventually("the namespace gone", WAIT, || async {
        match namespaces
            .get_opt("doomed")
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(ns) => Err(format!("still there: {:?}", ns.status)),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_new_namespace_gets_a_default_service_account_again_and_again() {
    let cluster = cluster().await;
    cluster
        .kubectl
        .run(&["create", "namespace", "team-a"])
        .await
        .expect("create namespace");
    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client(), "team-a");
    let first = eventually("the default service account created", WAIT, || async {
        accounts
            .get_opt("default")
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    cluster
        .kubectl
        .run(&["delete", "serviceaccount", "default", "-n", "team-a"])
        .await
        .expect("delete service account");
    eventually(
        "the default service account created again",
        WAIT,
        || async {
            match accounts
                .get_opt("default")
                .await
                .map_err(|e| e.to_string())?
            {
                Some(sa) if sa.metadata.uid != first.metadata.uid => Ok(()),
                other => Err(format!("{:?}", other.map(|sa| sa.metadata.uid))),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn the_finalize_subresource_over_grpc_writes_only_spec_finalizers() {
    let server = TestApiserver::start().await;
    let namespaces: Api<Namespace> = Api::all(server.client());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "x"}})).expect("ns");
    let ns = namespaces.create(&ns).await.expect("create");
    assert_eq!(
        ns.spec.and_then(|s| s.finalizers).unwrap_or_default(),
        ["kubernetes"]
    );
    namespaces
        .delete("x", &Default::default())
        .await
        .expect("delete");
    let marked = namespaces.get("x").await.expect("held by its finalizer");
    assert!(marked.metadata.deletion_timestamp.is_some());

    let params = PostParams::default();
    let err = namespaces
        .patch_with("x", &Patch::Json(json!([])), "finalize", &params)
        .await
        .expect_err("only merge patches");
    assert_eq!(err.reason(), Some(rkube_types::Reason::BadRequest), "{err}");
    let err = namespaces
        .patch_with(
            "x",
            &Patch::Merge(
                json!({"metadata": {"resourceVersion": "1"}, "spec": {"finalizers": []}}),
            ),
            "finalize",
            &params,
        )
        .await
        .expect_err("a stale resourceVersion");
    assert!(err.is_conflict(), "{err}");

    // Labels in a finalize write are ignored; the last finalizer's removal deletes it.
    let kept = namespaces
        .patch_with(
            "x",
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}, "spec": {"finalizers": ["example.com/x"]}})),
            "finalize",
            &params,
        )
        .await
        .expect("finalize");
    assert_eq!(
        kept.metadata.labels, None,
        "only spec.finalizers is written"
    );
    assert_eq!(
        kept.spec.and_then(|s| s.finalizers).unwrap_or_default(),
        ["example.com/x"]
    );
    namespaces
        .patch_with(
            "x",
            &Patch::Merge(json!({"spec": {"finalizers": []}})),
            "finalize",
            &params,
        )
        .await
        .expect("finalize");
    assert!(
        namespaces.get_opt("x").await.expect("get").is_none(),
        "removed with its last finalizer"
    );
}
