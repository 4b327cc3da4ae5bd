//! The ReplicaSet controller and the pod garbage collector end to end: a control plane
//! (apiserver, scheduler and controller-manager processes, fake kubelets) driven with the
//! stock kubectl.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use rkube_client::{Api, ListParams, WatchEvent, WatchParams};
use rkube_controller_manager::ownership::controller_ref;
use rkube_controller_manager::pods::is_active;
use rkube_testing::cluster::{Cluster, ClusterOptions};
use rkube_testing::eventually;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn replicaset_yaml(name: &str, replicas: usize, min_ready_seconds: u32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: {name}
spec:
  replicas: {replicas}
  minReadySeconds: {min_ready_seconds}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: app
        image: registry.local/app:v1
"#
    )
}

/// The active (not terminating, not finished) pods labelled `app=<app>`.
async fn active_pods(cluster: &Cluster, app: &str) -> Result<Vec<Pod>, String> {
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let list = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map_err(|e| e.to_string())?;
    Ok(list.items.into_iter().filter(is_active).collect())
}

fn names(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

async fn rs_json(cluster: &Cluster, name: &str) -> Result<Value, String> {
    let out = cluster
        .kubectl
        .run(&["get", "rs", name, "-o", "json"])
        .await?;
    serde_json::from_str(&out).map_err(|e| e.to_string())
}

/// Waits until the ReplicaSet has `n` active pods it controls and reports all of them
/// ready and available; returns the pods.
async fn converged(cluster: &Cluster, name: &str, n: usize) -> Vec<Pod> {
    eventually(
        &format!("{name} at {n} ready, available replicas"),
        WAIT,
        || async {
            let rs = rs_json(cluster, name).await?;
            let uid = rs["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let pods = active_pods(cluster, name).await?;
            let owned = pods
                .iter()
                .filter(|p| controller_ref(&p.metadata).is_some_and(|r| r.uid == uid))
                .count();
            let status = &rs["status"];
            let count = |field: &str| status[field].as_u64().unwrap_or(0) as usize;
            if pods.len() == n
                && owned == n
                && count("replicas") == n
                && count("readyReplicas") == n
                && count("availableReplicas") == n
                && status["observedGeneration"] == rs["metadata"]["generation"]
            {
                Ok(pods)
            } else {
                Err(format!(
                    "{} active pods, {owned} owned, status {status}",
                    pods.len()
                ))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicaset_keeps_its_pods_through_scaling_and_deletions() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    cluster.kubectl.apply(&replicaset_yaml("web", 5, 1)).await;

    // Five pods with a controlling ownerReference, reported ready and (after
    // minReadySeconds) available.
    let pods = converged(&cluster, "web", 5).await;
    for pod in &pods {
        let r = controller_ref(&pod.metadata).expect("a controller");
        assert_eq!((r.kind.as_str(), r.name.as_str()), ("ReplicaSet", "web"));
        assert_eq!(r.block_owner_deletion, Some(true));
        assert!(
            pod.metadata
                .name
                .as_deref()
                .unwrap_or_default()
                .starts_with("web-")
        );
    }
    // One SuccessfulCreate Event per pod (Events are written in the background).
    eventually("five SuccessfulCreate events", WAIT, || async {
        let out = cluster
            .kubectl
            .run(&["get", "events", "-o", "json"])
            .await?;
        let events: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        let created: Vec<&str> = events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["reason"] == "SuccessfulCreate" && e["involvedObject"]["name"] == "web")
            .filter_map(|e| e["message"].as_str())
            .collect();
        if created.len() == 5 && created.iter().all(|m| m.starts_with("Created pod: web-")) {
            Ok(())
        } else {
            Err(format!("{created:?}"))
        }
    })
    .await;

    // Scale up and down with kubectl (the scale subresource).
    cluster
        .kubectl
        .run(&["scale", "rs", "web", "--replicas=8"])
        .await
        .expect("scale up");
    let before = names(&converged(&cluster, "web", 8).await);
    cluster
        .kubectl
        .run(&["scale", "rs", "web", "--replicas=3"])
        .await
        .expect("scale down");
    let after = names(&converged(&cluster, "web", 3).await);
    assert!(
        after.is_subset(&before),
        "scaling down creates nothing: {after:?} ⊄ {before:?}"
    );

    // A deleted pod is replaced at once: the replacement appears while the old one is
    // still terminating or already gone.
    let victim = after.iter().next().expect("a pod").clone();
    cluster
        .kubectl
        .run(&["delete", "pod", &victim, "--wait=false"])
        .await
        .expect("delete pod");
    let replaced = names(&converged(&cluster, "web", 3).await);
    assert!(
        !replaced.contains(&victim),
        "{victim} still active in {replaced:?}"
    );
    assert_eq!(
        replaced.difference(&after).count(),
        1,
        "one replacement: {replaced:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_is_adopted_and_a_relabelled_pod_is_released() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    cluster
        .kubectl
        .apply(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stray\n  labels:\n    app: adopt\nspec:\n  containers:\n  - name: c\n    image: registry.local/app:v1\n",
        )
        .await;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    eventually("the orphan running", WAIT, || async {
        let pod = pods.get("stray").await.map_err(|e| e.to_string())?;
        if rkube_controller_manager::pods::is_ready(&pod) {
            Ok(())
        } else {
            Err(format!("{:?}", pod.status))
        }
    })
    .await;

    // A ReplicaSet of one selecting it adopts it instead of creating a pod.
    cluster.kubectl.apply(&replicaset_yaml("adopt", 1, 0)).await;
    let pods_now = converged(&cluster, "adopt", 1).await;
    assert_eq!(names(&pods_now), BTreeSet::from(["stray".to_string()]));

    // Relabelled, it no longer matches: released, and replaced by a new pod.
    cluster
        .kubectl
        .run(&["label", "pod", "stray", "app=elsewhere", "--overwrite"])
        .await
        .expect("relabel");
    eventually("stray released", WAIT, || async {
        let pod = pods.get("stray").await.map_err(|e| e.to_string())?;
        match controller_ref(&pod.metadata) {
            None => Ok(()),
            Some(r) => Err(format!("still controlled by {}", r.name)),
        }
    })
    .await;
    let replacement = converged(&cluster, "adopt", 1).await;
    assert!(!names(&replacement).contains("stray"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_replicas_never_creates_more_pods_than_asked() {
    const REPLICAS: usize = 200;
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let rv = pods
        .list(&ListParams::default())
        .await
        .expect("list")
        .resource_version;
    // Every pod of the namespace, in revision order: the burst's creations, and at the end
    // a sentinel pod whose arrival shows that every earlier creation has been seen.
    let mut stream = pods
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch");
    let created = Arc::new(Mutex::new(BTreeSet::new()));
    let watcher = {
        let created = created.clone();
        tokio::spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                if let WatchEvent::Added(pod) = event {
                    let app = pod.metadata.labels.as_ref().and_then(|l| l.get("app"));
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    match app.map(String::as_str) {
                        Some("burst") => {
                            created
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(name);
                        }
                        Some("sentinel") => return,
                        _ => {}
                    }
                }
            }
        })
    };

    // End to end this guards the property itself; the controller's unit test
    // `expectations_keep_a_sync_from_creating_pods_the_cache_has_not_seen_yet` holds the
    // informer cache back on purpose, which a local cluster rarely does on its own.
    cluster
        .kubectl
        .apply(&replicaset_yaml("burst", REPLICAS, 0))
        .await;
    // Changes to the ReplicaSet while its pods are being created sync it again and again;
    // none of those syncs may create pods the first one already asked for.
    for i in 0..5 {
        cluster
            .kubectl
            .run(&[
                "annotate",
                "rs",
                "burst",
                &format!("poke={i}"),
                "--overwrite",
            ])
            .await
            .expect("annotate");
    }
    converged(&cluster, "burst", REPLICAS).await;
    cluster
        .kubectl
        .apply(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sentinel\n  labels:\n    app: sentinel\nspec:\n  containers:\n  - name: c\n    image: registry.local/app:v1\n",
        )
        .await;
    tokio::time::timeout(WAIT, watcher)
        .await
        .expect("the watch reaches the sentinel")
        .expect("the watcher task");
    let n = created.lock().unwrap_or_else(|e| e.into_inner()).len();
    assert_eq!(n, REPLICAS, "pods created for a ReplicaSet of {REPLICAS}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podgc_removes_orphaned_and_surplus_terminated_pods() {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 1,
        controller_manager_args: vec!["--terminated-pod-gc-threshold=2".into()],
        ..Default::default()
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");

    // A pod bound to a node that does not exist (its fake kubelet never touches it) is
    // marked Failed and force-deleted after the quarantine; one on a live node stays.
    cluster
        .kubectl
        .apply(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ghost\nspec:\n  nodeName: ghost-node\n  containers:\n  - name: c\n    image: registry.local/app:v1\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: alive\nspec:\n  nodeName: node-1\n  containers:\n  - name: c\n    image: registry.local/app:v1\n",
        )
        .await;
    eventually("the ghost pod removed", WAIT, || async {
        match pods.get_opt("ghost").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(p) => Err(format!("still there: {:?}", p.status.and_then(|s| s.phase))),
        }
    })
    .await;
    assert!(
        pods.get_opt("alive").await.expect("get").is_some(),
        "a pod on a live node stays"
    );

    // Four pods that finish, with a threshold of two: the two oldest are deleted.
    for i in 1..=4 {
        cluster
            .kubectl
            .apply(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: done-{i}\n  labels:\n    app: done\n  annotations:\n    fake.rkube.io/complete: \"true\"\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: registry.local/app:v1\n"
            ))
            .await;
    }
    eventually("two newest terminated pods left", WAIT, || async {
        let list = pods
            .list(&ListParams::default().labels("app=done"))
            .await
            .map_err(|e| e.to_string())?;
        let mut phases: Vec<(String, String)> = list
            .items
            .iter()
            .map(|p| {
                (
                    p.metadata.name.clone().unwrap_or_default(),
                    rkube_controller_manager::pods::phase(p).to_string(),
                )
            })
            .collect();
        phases.sort();
        let left: Vec<&str> = phases.iter().map(|(n, _)| n.as_str()).collect();
        if left == ["done-3", "done-4"] && phases.iter().all(|(_, p)| p == "Succeeded") {
            Ok(())
        } else {
            Err(format!("{phases:?}"))
        }
    })
    .await;
}
