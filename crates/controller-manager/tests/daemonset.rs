//! The DaemonSet controller end to end: one pod per eligible node (taints and node selectors
//! respected, new nodes covered), failed pods replaced, and a rolling update followed with
//! `kubectl rollout status`, `history` and `undo`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use rkube_client::watcher::{self, Event as WatchEvent};
use rkube_client::{Api, ListParams, Patch};
use rkube_controller_manager::pods;
use rkube_testing::cluster::{Cluster, ClusterOptions};
use rkube_testing::eventually;

const WAIT: Duration = Duration::from_secs(40);

fn daemonset(name: &str, image: &str, extra_pod_spec: &str, annotations: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {name}
spec:
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
{annotations}    spec:
{extra_pod_spec}      containers:
      - name: agent
        image: {image}
"#
    )
}

/// Live pods of `app`, as node → (name, image, ready).
async fn pods_by_node(
    cluster: &Cluster,
    app: &str,
) -> BTreeMap<String, Vec<(String, String, bool)>> {
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let list = api
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let mut out: BTreeMap<String, Vec<(String, String, bool)>> = BTreeMap::new();
    for pod in list
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let spec = pod.spec.clone().unwrap_or_default();
        out.entry(spec.node_name.clone().unwrap_or_default())
            .or_default()
            .push((
                pod.metadata.name.clone().unwrap_or_default(),
                spec.containers[0].image.clone().unwrap_or_default(),
                pods::is_ready(pod),
            ));
    }
    out
}

/// Waits until exactly `nodes` run one ready pod of `app` each, with `image`.
async fn wait_for_pods_on(cluster: &Cluster, app: &str, nodes: &[&str], image: &str) {
    eventually(
        &format!("one ready {image} pod of {app} on each of {nodes:?}"),
        WAIT,
        || async {
            let now = pods_by_node(cluster, app).await;
            let ok = now.len() == nodes.len()
                && nodes.iter().all(|n| {
                    now.get(*n)
                        .is_some_and(|p| p.len() == 1 && p[0].1 == image && p[0].2)
                });
            if ok { Ok(()) } else { Err(format!("{now:?}")) }
        },
    )
    .await;
}

async fn wait_status(cluster: &Cluster, name: &str, desired: i32) {
    let api: Api<DaemonSet> = Api::namespaced(cluster.client(), "default");
    eventually(
        &format!("daemonset {name} status with {desired} desired, all available"),
        WAIT,
        || async {
            let ds = api.get(name).await.map_err(|e| e.to_string())?;
            let s = ds.status.clone().unwrap_or_default();
            let ok = s.desired_number_scheduled == desired
                && s.current_number_scheduled == desired
                && s.number_ready == desired
                && s.number_available == Some(desired)
                && s.updated_number_scheduled == Some(desired)
                && s.number_misscheduled == 0
                && s.observed_generation == ds.metadata.generation;
            if ok { Ok(()) } else { Err(format!("{s:?}")) }
        },
    )
    .await;
}

/// Follows the pods of `app` and records the most nodes (of `nodes`) that were at once
/// without a ready pod that is not being deleted.
struct Unavailability {
    worst: Arc<Mutex<Option<usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Unavailability {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Unavailability {
    fn start(cluster: &Cluster, app: &str, nodes: &[&str]) -> Self {
        let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
        let config = watcher::Config {
            label_selector: Some(format!("app={app}")),
            ..Default::default()
        };
        let nodes: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
        let worst = Arc::new(Mutex::new(None));
        let sink = worst.clone();
        let task = tokio::spawn(async move {
            // Pod name → (node, serving).
            let mut pods: HashMap<String, (String, bool)> = HashMap::new();
            let mut listed = false;
            let stream = watcher::watcher(api, config);
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(WatchEvent::Apply(p) | WatchEvent::InitApply(p)) => {
                        let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
                        let serving = pods::is_ready(&p) && p.metadata.deletion_timestamp.is_none();
                        pods.insert(
                            p.metadata.name.clone().unwrap_or_default(),
                            (node.unwrap_or_default(), serving),
                        );
                    }
                    Ok(WatchEvent::Delete(p)) => {
                        pods.remove(p.metadata.name.as_deref().unwrap_or_default());
                    }
                    Ok(WatchEvent::InitDone) => listed = true,
                    _ => continue,
                }
                if !listed {
                    continue;
                }
                let down = nodes
                    .iter()
                    .filter(|n| !pods.values().any(|(node, serving)| node == *n && *serving))
                    .count();
                let mut worst = sink.lock().unwrap_or_else(PoisonError::into_inner);
                *worst = Some(worst.unwrap_or(0).max(down));
            }
        });
        Unavailability { worst, task }
    }

    /// The most nodes down at once so far; `None` until the first list is in.
    fn worst(&self) -> Option<usize> {
        *self.worst.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The resourceVersions of DaemonSet `name` and of its pods and revisions.
async fn versions(cluster: &Cluster, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for args in [
        vec!["get", "daemonset", name],
        vec![
            "get",
            "pods,controllerrevisions",
            "-l",
            &format!("app={name}"),
        ],
    ] {
        let json = cluster.kubectl.json(&args).await;
        let items = match json["items"].as_array() {
            Some(items) => items.clone(),
            None => vec![json],
        };
        for item in items {
            out.push(format!(
                "{}/{}@{}",
                item["kind"].as_str().unwrap_or_default(),
                item["metadata"]["name"].as_str().unwrap_or_default(),
                item["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
            ));
        }
    }
    out.sort();
    out
}

async fn rollout_status(cluster: &Cluster, name: &str) -> String {
    cluster
        .kubectl
        .run(&[
            "rollout",
            "status",
            &format!("daemonset/{name}"),
            "--timeout=40s",
        ])
        .await
        .unwrap_or_else(|e| panic!("rollout status: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn covers_every_eligible_node_and_follows_nodes_as_they_come_and_change() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    cluster
        .kubectl
        .run(&["taint", "nodes", "node-2", "dedicated=infra:NoSchedule"])
        .await
        .expect("taint");
    cluster
        .kubectl
        .apply(&daemonset("agent", "registry.local/agent:v1", "", ""))
        .await;
    wait_for_pods_on(
        &cluster,
        "agent",
        &["node-1", "node-3"],
        "registry.local/agent:v1",
    )
    .await;
    wait_status(&cluster, "agent", 2).await;
    // Converged, the controller writes nothing more. Absence can only be seen over a window.
    let before = versions(&cluster, "agent").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        versions(&cluster, "agent").await,
        before,
        "an idle DaemonSet is rewritten"
    );
    let out = rollout_status(&cluster, "agent").await;
    assert!(out.contains("successfully rolled out"), "{out}");

    // The pods carry the revision hash, the template generation, the daemon tolerations and
    // the node affinity the scheduler placed them with.
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let pod = api
        .list(&ListParams::default().labels("app=agent"))
        .await
        .expect("list")
        .items
        .remove(0);
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let hash = labels["controller-revision-hash"].clone();
    assert_eq!(labels["pod-template-generation"], "1");
    let spec = pod.spec.clone().unwrap_or_default();
    let tolerations: Vec<_> = spec
        .tolerations
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| t.key)
        .collect();
    assert!(
        tolerations.contains(&"node.kubernetes.io/unschedulable".to_string()),
        "{tolerations:?}"
    );
    assert!(
        tolerations.contains(&"node.kubernetes.io/not-ready".to_string()),
        "{tolerations:?}"
    );
    let fields = &spec
        .affinity
        .and_then(|a| a.node_affinity)
        .and_then(|a| a.required_during_scheduling_ignored_during_execution)
        .expect("required node affinity")
        .node_selector_terms[0];
    let field = &fields.match_fields.as_ref().expect("matchFields")[0];
    assert_eq!(field.key, "metadata.name");
    assert_eq!(
        field.values.clone().unwrap_or_default(),
        [spec.node_name.clone().unwrap_or_default()]
    );
    let revisions: Api<ControllerRevision> = Api::namespaced(cluster.client(), "default");
    let rev = revisions
        .get(&format!("agent-{hash}"))
        .await
        .expect("revision agent-<hash>");
    assert_eq!(rev.revision, 1);

    // A new node gets a pod.
    cluster.nodes.add_node("node-4").await.expect("node-4");
    let on_node_4 = eventually("a pod of agent bound to node-4", WAIT, || async {
        let now = pods_by_node(&cluster, "agent").await;
        match now.get("node-4").and_then(|p| p.first()) {
            Some((name, _, _)) => Ok(name.clone()),
            None => Err(format!("{now:?}")),
        }
    })
    .await;
    // FakeNodes::add_node registers the Node before its fake kubelet counts it as live, so
    // a pod bound in between is never started; one more event of the pod gets it started.
    cluster
        .kubectl
        .run(&["annotate", "pod", &on_node_4, "test.rkube.io/nudge=1"])
        .await
        .expect("annotate");
    wait_for_pods_on(
        &cluster,
        "agent",
        &["node-1", "node-3", "node-4"],
        "registry.local/agent:v1",
    )
    .await;
    wait_status(&cluster, "agent", 3).await;

    // A node that stops matching the node selector loses its pod.
    cluster
        .kubectl
        .run(&["label", "nodes", "node-1", "node-3", "role=edge"])
        .await
        .expect("label");
    cluster
        .kubectl
        .apply(&daemonset(
            "edge",
            "registry.local/edge:v1",
            "      nodeSelector:\n        role: edge\n",
            "",
        ))
        .await;
    wait_for_pods_on(
        &cluster,
        "edge",
        &["node-1", "node-3"],
        "registry.local/edge:v1",
    )
    .await;
    cluster
        .kubectl
        .run(&["label", "nodes", "node-3", "role-"])
        .await
        .expect("unlabel");
    wait_for_pods_on(&cluster, "edge", &["node-1"], "registry.local/edge:v1").await;
    wait_status(&cluster, "edge", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_daemon_pods_are_replaced() {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 1,
        ..Default::default()
    })
    .await;
    cluster
        .kubectl
        .apply(&daemonset("flaky", "registry.local/flaky:v1", "", ""))
        .await;
    wait_for_pods_on(&cluster, "flaky", &["node-1"], "registry.local/flaky:v1").await;
    let first = pods_by_node(&cluster, "flaky").await["node-1"][0].0.clone();

    // The pod's containers fail, as a kubelet would report it.
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    api.patch_status(
        &first,
        &Patch::Merge(
            serde_json::json!({"status": {"phase": "Failed", "conditions": [
                {"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            ]}}),
        ),
    )
    .await
    .expect("fail the pod");

    let events: Api<Event> = Api::namespaced(cluster.client(), "default");
    eventually("a FailedDaemonPod event", WAIT, || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let reasons: Vec<_> = list.items.iter().filter_map(|e| e.reason.clone()).collect();
        if reasons.iter().any(|r| r == "FailedDaemonPod") {
            Ok(())
        } else {
            Err(format!("{reasons:?}"))
        }
    })
    .await;
    eventually("the failed pod replaced by a running one", WAIT, || async {
        let now = pods_by_node(&cluster, "flaky").await;
        match now.get("node-1").map(Vec::as_slice) {
            Some([(name, _, true)]) if *name != first => Ok(()),
            _ => Err(format!("{now:?}")),
        }
    })
    .await;
    assert!(
        api.get_opt(&first).await.expect("get").is_none(),
        "the failed pod is deleted"
    );
    wait_status(&cluster, "flaky", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_completes_and_undo_restores_the_old_template() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    cluster
        .kubectl
        .apply(&daemonset("agent", "registry.local/agent:v1", "", ""))
        .await;
    let nodes = ["node-1", "node-2", "node-3"];
    wait_for_pods_on(&cluster, "agent", &nodes, "registry.local/agent:v1").await;
    rollout_status(&cluster, "agent").await;

    let unavailability = Unavailability::start(&cluster, "agent", &nodes);
    eventually("the pod watch listed", WAIT, || async {
        unavailability
            .worst()
            .ok_or_else(|| "not listed yet".to_string())
    })
    .await;
    cluster
        .kubectl
        .run(&[
            "set",
            "image",
            "daemonset/agent",
            "agent=registry.local/agent:v2",
        ])
        .await
        .expect("set image");
    let out = rollout_status(&cluster, "agent").await;
    assert!(out.contains("successfully rolled out"), "{out}");
    wait_for_pods_on(&cluster, "agent", &nodes, "registry.local/agent:v2").await;
    wait_status(&cluster, "agent", 3).await;
    assert_eq!(
        unavailability.worst(),
        Some(1),
        "maxUnavailable 1: one node at a time without a ready pod"
    );

    let history = cluster
        .kubectl
        .run(&["rollout", "history", "daemonset/agent"])
        .await
        .expect("rollout history");
    assert!(history.contains('1') && history.contains('2'), "{history}");
    let revision1 = cluster
        .kubectl
        .run(&["rollout", "history", "daemonset/agent", "--revision=1"])
        .await
        .expect("history of revision 1");
    assert!(revision1.contains("registry.local/agent:v1"), "{revision1}");

    cluster
        .kubectl
        .run(&["rollout", "undo", "daemonset/agent"])
        .await
        .expect("rollout undo");
    rollout_status(&cluster, "agent").await;
    wait_for_pods_on(&cluster, "agent", &nodes, "registry.local/agent:v1").await;
    wait_status(&cluster, "agent", 3).await;
    let revisions: Api<ControllerRevision> = Api::namespaced(cluster.client(), "default");
    let mut numbers: Vec<(i64, String)> = revisions
        .list(&ListParams::default().labels("app=agent"))
        .await
        .expect("list revisions")
        .items
        .iter()
        .map(|r| {
            let template =
                rkube_controller_manager::controllers::history::template_of(r).unwrap_or_default();
            let image = template
                .spec
                .and_then(|s| s.containers[0].image.clone())
                .unwrap_or_default();
            (r.revision, image)
        })
        .collect();
    numbers.sort();
    assert_eq!(
        numbers,
        [
            (2, "registry.local/agent:v2".to_string()),
            (3, "registry.local/agent:v1".to_string())
        ],
        "undo renumbers the v1 revision"
    );
}
