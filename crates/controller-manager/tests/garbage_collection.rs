//! The garbage collector against a real apiserver: `kubectl delete deployment` with each
//! cascade does what Kubernetes does to the ReplicaSet and pods, and objects whose owners
//! never existed are collected.
//!
//! Only the collector (and the namespace and ServiceAccount controllers) run, and the
//! tests build the Deployment → ReplicaSet → pods chain themselves, so what happens to it
//! is the collector's doing alone.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use rkube_client::{Api, Client, Patch};
use rkube_testing::cluster::{Cluster, ClusterOptions};
use rkube_testing::eventually;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const NS: &str = "default";

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

fn owner_ref(api_version: &str, kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn uid(meta: &ObjectMeta) -> String {
    meta.uid.clone().expect("stored objects have a uid")
}

/// A Deployment `web`, its ReplicaSet `web-1` and two running pods, linked by controller
/// references as the workload controllers write them. `hold` puts a finalizer on the first
/// pod, so it outlives its deletion until the test lets it go.
async fn deployment_chain(client: &Client, hold: bool) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let labels = json!({"app": "web"});
    let template = json!({"metadata": {"labels": labels},
        "spec": {"containers": [{"name": "c", "image": "registry.local/web:v1"}]}});
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": template},
    }))
    .expect("deployment");
    let d = deployments.create(&d).await.expect("create deployment");
    let mut rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "labels": labels},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": template},
    }))
    .expect("replicaset");
    rs.metadata.owner_references = Some(vec![owner_ref(
        "apps/v1",
        "Deployment",
        "web",
        &uid(&d.metadata),
    )]);
    let rs = replica_sets.create(&rs).await.expect("create replicaset");
    for i in 0..2 {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("web-1-{i}"), "labels": labels},
            "spec": {"nodeName": "node-1",
                "containers": [{"name": "c", "image": "registry.local/web:v1"}]},
        }))
        .expect("pod");
        pod.metadata.owner_references = Some(vec![owner_ref(
            "apps/v1",
            "ReplicaSet",
            "web-1",
            &uid(&rs.metadata),
        )]);
        if hold && i == 0 {
            pod.metadata.finalizers = Some(vec!["example.com/hold".into()]);
        }
        pods.create(&pod).await.expect("create pod");
    }
}

async fn names<K>(api: &Api<K>) -> Vec<String>
where
    K: k8s_openapi::Metadata<Ty = ObjectMeta>
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Send
        + 'static,
{
    let mut names: Vec<String> = api
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .iter()
        .filter_map(|o| o.metadata().name.clone())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_cascade_deletes_the_replicaset_and_its_pods() {
    let cluster = cluster().await;
    let client = cluster.client();
    deployment_chain(&client, false).await;
    cluster
        .kubectl
        .run(&[
            "delete",
            "deployment",
            "web",
            "--cascade=background",
            "--wait=false",
        ])
        .await
        .expect("delete");
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    eventually("the replicaset and its pods collected", WAIT, || async {
        let (rs, pods) = (names(&replica_sets).await, names(&pods).await);
        match rs.is_empty() && pods.is_empty() {
            true => Ok(()),
            false => Err(format!("replicasets {rs:?}, pods {pods:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_cascade_keeps_the_deployment_until_its_dependents_are_gone() {
    let cluster = cluster().await;
    let client = cluster.client();
    deployment_chain(&client, true).await;
    cluster
        .kubectl
        .run(&[
            "delete",
            "deployment",
            "web",
            "--cascade=foreground",
            "--wait=false",
        ])
        .await
        .expect("delete");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);

    // The held pod keeps the ReplicaSet, which keeps the Deployment; the other pod goes.
    eventually("only the held pod left, being deleted", WAIT, || async {
        let left = names(&pods).await;
        let held = pods.get_opt("web-1-0").await.map_err(|e| e.to_string())?;
        match held {
            Some(p) if left == ["web-1-0"] && p.metadata.deletion_timestamp.is_some() => Ok(()),
            _ => Err(format!("pods {left:?}")),
        }
    })
    .await;
    for (what, meta) in [
        (
            "deployment",
            deployments.get("web").await.map(|d| d.metadata),
        ),
        (
            "replicaset",
            replica_sets.get("web-1").await.map(|r| r.metadata),
        ),
    ] {
        let meta =
            meta.unwrap_or_else(|e| panic!("the {what} is kept while a dependent is left: {e}"));
        assert!(
            meta.deletion_timestamp.is_some(),
            "{what} marked for deletion"
        );
        assert_eq!(
            meta.finalizers.as_deref(),
            Some(&["foregroundDeletion".to_string()][..]),
            "{what} waits for its dependents"
        );
    }

    pods.patch(
        "web-1-0",
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("release the held pod");
    eventually("deployment, replicaset and pods gone", WAIT, || async {
        let (d, rs, p) = (
            names(&deployments).await,
            names(&replica_sets).await,
            names(&pods).await,
        );
        match d.is_empty() && rs.is_empty() && p.is_empty() {
            true => Ok(()),
            false => Err(format!("deployments {d:?}, replicasets {rs:?}, pods {p:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_cascade_keeps_the_replicaset_and_pods_without_the_reference() {
    let cluster = cluster().await;
    let client = cluster.client();
    deployment_chain(&client, false).await;
    cluster
        .kubectl
        .run(&[
            "delete",
            "deployment",
            "web",
            "--cascade=orphan",
            "--wait=false",
        ])
        .await
        .expect("delete");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    eventually(
        "the deployment gone, its replicaset orphaned",
        WAIT,
        || async {
            let d = names(&deployments).await;
            let rs = replica_sets.get("web-1").await.map_err(|e| e.to_string())?;
            match (d.is_empty(), rs.metadata.owner_references.as_deref()) {
                (true, None | Some([])) => Ok(()),
                (gone, refs) => Err(format!(
                    "deployment gone: {gone}, replicaset owners {refs:?}"
                )),
            }
        },
    )
    .await;
    let rs = replica_sets.get("web-1").await.expect("replicaset kept");
    for name in ["web-1-0", "web-1-1"] {
        let pod = pods.get(name).await.expect("pod kept");
        let owners = pod.metadata.owner_references.unwrap_or_default();
        assert_eq!(owners.len(), 1, "{name} still owned by the replicaset");
        assert_eq!(Some(&owners[0].uid), rs.metadata.uid.as_ref());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dangling_dependents_are_collected_and_shared_ones_only_lose_the_reference() {
    let cluster = cluster().await;
    let client = cluster.client();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let ghost = owner_ref(
        "v1",
        "ConfigMap",
        "ghost",
        "0b5e7a3c-0000-4000-8000-00000000dead",
    );
    let owner = config_maps
        .create(&ConfigMap {
            metadata: ObjectMeta {
                name: Some("owner".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .expect("create owner");
    let real = owner_ref("v1", "ConfigMap", "owner", &uid(&owner.metadata));
    for (name, owners) in [
        ("orphan-of-ghost", vec![ghost.clone()]),
        ("shared", vec![ghost.clone(), real.clone()]),
    ] {
        config_maps
            .create(&ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    owner_references: Some(owners),
                    ..Default::default()
                },
                ..Default::default()
            })
            .await
            .expect("create dependent");
    }
    eventually("the dangling dependent collected", WAIT, || async {
        let left = names(&config_maps).await;
        let shared = config_maps.get("shared").await.map_err(|e| e.to_string())?;
        let owners: Vec<String> = shared
            .metadata
            .owner_references
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.name)
            .collect();
        match (
            left.contains(&"orphan-of-ghost".to_string()),
            owners.as_slice(),
        ) {
            (false, [only]) if only == "owner" => Ok(()),
            _ => Err(format!("configmaps {left:?}, owners of shared {owners:?}")),
        }
    })
    .await;

    // Its last owner gone, the shared one goes too.
    cluster
        .kubectl
        .run(&["delete", "configmap", "owner", "--wait=false"])
        .await
        .expect("delete owner");
    eventually(
        "the shared dependent collected with its last owner",
        WAIT,
        || async {
            match config_maps
                .get_opt("shared")
                .await
                .map_err(|e| e.to_string())?
            {
                None => Ok(()),
                Some(cm) => Err(format!(
                    "still there, owners {:?}",
                    cm.metadata.owner_references
                )),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_controller_deleting_a_deployment_takes_its_replicasets_and_pods() {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 1,
        ..Default::default()
    })
    .await;
    let kubectl = &cluster.kubectl;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), NS);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(cluster.client(), NS);
    for cascade in ["background", "foreground"] {
        let name = format!("web-{cascade}");
        kubectl
            .apply(&format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: c, image: registry.local/web:v1}}]}}\n"
            ))
            .await;
        eventually(&format!("two pods of {name}"), WAIT, || async {
            match names(&pods).await {
                p if p.len() == 2 => Ok(()),
                p => Err(format!("pods {p:?}")),
            }
        })
        .await;
        kubectl
            .run(&[
                "delete",
                "deployment",
                &name,
                &format!("--cascade={cascade}"),
                "--wait=false",
            ])
            .await
            .expect("delete deployment");
        eventually(
            &format!("{name}, its replicaset and pods gone"),
            WAIT,
            || async {
                let (d, rs, p) = (
                    kubectl.run(&["get", "deployments", "-o", "name"]).await?,
                    names(&replica_sets).await,
                    names(&pods).await,
                );
                match d.trim().is_empty() && rs.is_empty() && p.is_empty() {
                    true => Ok(()),
                    false => Err(format!("deployments {d:?}, replicasets {rs:?}, pods {p:?}")),
                }
            },
        )
        .await;
    }
}
