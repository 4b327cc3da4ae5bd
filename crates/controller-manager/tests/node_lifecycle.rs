//! The node lifecycle controller (with taint-based eviction) and node IPAM end to end: a
//! control plane (apiserver, scheduler and controller-manager processes, fake kubelets)
//! with short grace periods, driven with the stock kubectl.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use rkube_client::{Api, DeleteParams, ListParams, WatchEvent, WatchParams};
use rkube_controller_manager::pods::{is_active, is_ready, phase};
use rkube_testing::cluster::{Cluster, ClusterOptions};
use rkube_testing::eventually;

const WAIT: Duration = Duration::from_secs(30);

const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

fn pod_yaml(name: &str, node: &str, tolerations: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {node}
  tolerations: {tolerations}
  containers:
  - name: app
    image: registry.local/app:v1
"#
    )
}

const REPLICASET: &str = r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      tolerations:
      - key: node.kubernetes.io/unreachable
        operator: Exists
        effect: NoExecute
        tolerationSeconds: 2
      containers:
      - name: app
        image: registry.local/app:v1
"#;

async fn get_pod(cluster: &Cluster, name: &str) -> Result<Pod, String> {
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    pods.get(name).await.map_err(|e| e.to_string())
}

async fn get_node(cluster: &Cluster, name: &str) -> Result<Node, String> {
    let nodes: Api<Node> = Api::all(cluster.client());
    nodes.get(name).await.map_err(|e| e.to_string())
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

/// Waits until the pod `name` runs and is ready.
async fn running(cluster: &Cluster, name: &str) {
    eventually(&format!("pod {name} running"), WAIT, || async {
        let pod = get_pod(cluster, name).await?;
        if phase(&pod) == "Running" && is_ready(&pod) {
            Ok(())
        } else {
            Err(format!("{:?}", pod.status))
        }
    })
    .await;
}

/// When the pod was evicted: its deletionTimestamp less its grace period.
fn evicted_at(pod: &Pod) -> Option<Timestamp> {
    let deletion = pod.metadata.deletion_timestamp.as_ref()?.0;
    let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0);
    deletion
        .checked_sub(jiff::SignedDuration::from_secs(grace))
        .ok()
}

/// Waits until the pod `name` is being deleted; returns it.
async fn evicted(cluster: &Cluster, name: &str) -> Pod {
    eventually(&format!("pod {name} evicted"), WAIT, || async {
        let pod = get_pod(cluster, name).await?;
        match pod.metadata.deletion_timestamp {
            Some(_) => Ok(pod),
            None => Err(format!("no deletionTimestamp; status {:?}", pod.status)),
        }
    })
    .await
}

fn condition<'a>(
    node: &'a Node,
    type_: &str,
) -> Option<&'a k8s_openapi::api::core::v1::NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == type_)
}

#[tokio::test]
async fn a_silent_node_goes_unknown_is_tainted_and_its_pods_are_evicted_and_replaced() {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 3,
        controller_manager_args: vec!["--node-monitor-grace-period=3s".into()],
        ..Default::default()
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");

    cluster.kubectl.apply(REPLICASET).await;
    let web = eventually("3 running web pods", WAIT, || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .map_err(|e| e.to_string())?;
        let ready: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| is_active(p) && is_ready(p))
            .collect();
        if ready.len() == 3 {
            Ok(ready)
        } else {
            Err(format!("{} ready", ready.len()))
        }
    })
    .await;
    // The node of a web pod dies.
    let victim = node_of(&web[0]).expect("bound").to_string();
    let victims_web: Vec<String> = web
        .iter()
        .filter(|p| node_of(p) == Some(victim.as_str()))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    cluster
        .kubectl
        .apply(&pod_yaml(
            "short",
            &victim,
            "[{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}]",
        ))
        .await;
    cluster
        .kubectl
        .apply(&pod_yaml(
            "forever",
            &victim,
            "[{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute}]",
        ))
        .await;
    running(&cluster, "short").await;
    running(&cluster, "forever").await;
    cluster.nodes.stop_node(&victim);

    // Ready (and every kubelet condition) goes Unknown after the grace period.
    let node = eventually(&format!("{victim} Ready=Unknown"), WAIT, || async {
        let node = get_node(&cluster, &victim).await?;
        match condition(&node, "Ready") {
            Some(c) if c.status == "Unknown" => Ok(node),
            c => Err(format!("{c:?}")),
        }
    })
    .await;
    let ready = condition(&node, "Ready").expect("ready");
    assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
    assert_eq!(
        ready.message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );
    for type_ in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert_eq!(
            condition(&node, type_).map(|c| c.status.as_str()),
            Some("Unknown"),
            "{type_} on {victim}"
        );
    }

    // The unreachable taints, NoExecute and NoSchedule.
    let node = eventually(&format!("{victim} tainted unreachable"), WAIT, || async {
        let node = get_node(&cluster, &victim).await?;
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let has = |effect: &str| {
            taints
                .iter()
                .any(|t| t.key == UNREACHABLE && t.effect == effect)
        };
        if has("NoExecute") && has("NoSchedule") {
            Ok(node)
        } else {
            Err(format!("{taints:?}"))
        }
    })
    .await;
    let tainted_at = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .and_then(|ts| {
            ts.iter()
                .find(|t| t.key == UNREACHABLE && t.effect == "NoExecute")
        })
        .and_then(|t| t.time_added.as_ref())
        .expect("the NoExecute taint has timeAdded")
        .0;

    // Pods tolerating the taint for 2 s go 2 s after it was added, not before.
    for name in victims_web.iter().map(String::as_str).chain(["short"]) {
        let pod = evicted(&cluster, name).await;
        let at = evicted_at(&pod).expect("deletion timestamp");
        let waited = at.duration_since(tainted_at);
        assert!(
            waited >= jiff::SignedDuration::from_secs(2),
            "{name} evicted {waited:?} after the taint was added"
        );
        let target = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "DisruptionTarget"));
        assert_eq!(
            target.and_then(|c| c.reason.as_deref()),
            Some("DeletionByTaintManager"),
            "{name}"
        );
    }
    let events: Api<Event> = Api::namespaced(cluster.client(), "default");
    eventually("a TaintManagerEviction event for short", WAIT, || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let found = list.items.iter().any(|e| {
            e.reason.as_deref() == Some("TaintManagerEviction")
                && e.involved_object.name.as_deref() == Some("short")
        });
        if found {
            Ok(())
        } else {
            Err(format!("{} events", list.items.len()))
        }
    })
    .await;

    // A pod tolerating the taint without a limit stays, marked not ready.
    let forever = get_pod(&cluster, "forever").await.expect("forever");
    assert!(
        forever.metadata.deletion_timestamp.is_none(),
        "forever was evicted"
    );
    eventually("forever marked not ready", WAIT, || async {
        let pod = get_pod(&cluster, "forever").await?;
        if is_ready(&pod) {
            Err("still ready".to_string())
        } else {
            Ok(())
        }
    })
    .await;

    // The ReplicaSet replaces its evicted pods on the live nodes.
    eventually("3 ready web pods off the dead node", WAIT, || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .map_err(|e| e.to_string())?;
        let active: Vec<&Pod> = list.items.iter().filter(|p| is_active(p)).collect();
        let nodes: BTreeSet<&str> = active.iter().filter_map(|p| node_of(p)).collect();
        let ready = active.iter().filter(|p| is_ready(p)).count();
        if active.len() == 3 && ready == 3 && !nodes.contains(victim.as_str()) {
            Ok(())
        } else {
            Err(format!(
                "{} active, {ready} ready, on {nodes:?}",
                active.len()
            ))
        }
    })
    .await;
    let forever = get_pod(&cluster, "forever").await.expect("forever");
    assert!(
        forever.metadata.deletion_timestamp.is_none(),
        "forever was evicted later"
    );
}

#[tokio::test]
async fn a_pod_that_does_not_tolerate_a_no_execute_taint_is_evicted_at_once() {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 2,
        ..Default::default()
    })
    .await;
    cluster
        .kubectl
        .apply(&pod_yaml("plain", "node-1", "[]"))
        .await;
    cluster
        .kubectl
        .apply(&pod_yaml(
            "tolerant",
            "node-1",
            "[{key: dedicated, operator: Equal, value: db, effect: NoExecute}]",
        ))
        .await;
    running(&cluster, "plain").await;
    running(&cluster, "tolerant").await;

    // The live fake kubelet deletes an evicted pod at once: watch for its eviction.
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let plain = get_pod(&cluster, "plain").await.expect("plain");
    let rv = plain.metadata.resource_version.clone().unwrap_or_default();
    let mut changes = pods
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch pods");
    let tainted = tokio::time::Instant::now();
    cluster
        .kubectl
        .run(&["taint", "node", "node-1", "dedicated=db:NoExecute"])
        .await
        .expect("kubectl taint");
    let pod = tokio::time::timeout(WAIT, async {
        while let Some(event) = changes.next().await {
            if let Ok(WatchEvent::Modified(pod) | WatchEvent::Deleted(pod)) = event
                && pod.metadata.name.as_deref() == Some("plain")
                && pod.metadata.deletion_timestamp.is_some()
            {
                return pod;
            }
        }
        panic!("the pod watch ended before plain was evicted");
    })
    .await
    .expect("plain evicted within the wait");
    // Not tolerated: no waiting (the default tolerations would be 300 s).
    assert!(
        tainted.elapsed() < Duration::from_secs(10),
        "evicted {:?} after the taint",
        tainted.elapsed()
    );
    assert!(
        pod.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs
                .iter()
                .any(|c| c.type_ == "DisruptionTarget" && c.status == "True")),
        "{:?}",
        pod.status
    );
    // The live fake kubelet finishes the deletion.
    eventually("plain gone", WAIT, || async {
        match get_pod(&cluster, "plain").await {
            Err(e) if e.contains("not found") || e.contains("NotFound") => Ok(()),
            Err(e) => Err(e),
            Ok(_) => Err("still there".into()),
        }
    })
    .await;
    let tolerant = get_pod(&cluster, "tolerant").await.expect("tolerant");
    assert!(
        tolerant.metadata.deletion_timestamp.is_none(),
        "tolerant was evicted"
    );
    assert!(
        is_ready(&tolerant),
        "the node is healthy: tolerant stays ready"
    );
}

/// The nodes' pod CIDRs, by node.
async fn pod_cidrs(cluster: &Cluster) -> Vec<(String, Option<String>, Vec<String>)> {
    let nodes: Api<Node> = Api::all(cluster.client());
    let list = nodes
        .list(&ListParams::default())
        .await
        .expect("list nodes");
    let mut out: Vec<_> = list
        .items
        .into_iter()
        .map(|n| {
            let spec = n.spec.unwrap_or_default();
            (
                n.metadata.name.unwrap_or_default(),
                spec.pod_cidr,
                spec.pod_cidrs.unwrap_or_default(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn every_node_gets_its_own_pod_cidr_from_the_cluster_cidr() {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 3,
        scheduler: false,
        controller_manager_args: vec!["--cluster-cidr=10.244.0.0/16".into()],
        ..Default::default()
    })
    .await;
    cluster.nodes.add_node("node-4").await.expect("node-4");
    let cidrs = eventually("4 nodes with pod CIDRs", WAIT, || async {
        let cidrs = pod_cidrs(&cluster).await;
        if cidrs.len() == 4 && cidrs.iter().all(|(_, one, _)| one.is_some()) {
            Ok(cidrs)
        } else {
            Err(format!("{cidrs:?}"))
        }
    })
    .await;
    let mut seen = BTreeSet::new();
    for (node, one, list) in &cidrs {
        let one = one.as_deref().expect("podCIDR");
        assert_eq!(list, &[one.to_string()], "{node}: podCIDRs holds podCIDR");
        let third: u8 = one
            .strip_prefix("10.244.")
            .and_then(|rest| rest.strip_suffix(".0/24"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{node}: {one} is no /24 of 10.244.0.0/16"));
        assert!(
            seen.insert(third),
            "{node}: {one} handed out twice in {cidrs:?}"
        );
    }
}

#[tokio::test]
async fn a_full_cluster_cidr_waits_for_a_node_to_go_and_reuses_its_cidr() {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 2,
        scheduler: false,
        controller_manager_args: vec![
            "--cluster-cidr=fd00:10:244::/63".into(),
            "--node-cidr-mask-size=64".into(),
        ],
        ..Default::default()
    })
    .await;
    let first = eventually("2 nodes with pod CIDRs", WAIT, || async {
        let cidrs = pod_cidrs(&cluster).await;
        if cidrs.iter().filter(|(_, one, _)| one.is_some()).count() == 2 {
            Ok(cidrs)
        } else {
            Err(format!("{cidrs:?}"))
        }
    })
    .await;
    let got: BTreeSet<&str> = first
        .iter()
        .filter_map(|(_, one, _)| one.as_deref())
        .collect();
    assert_eq!(
        got,
        BTreeSet::from(["fd00:10:244::/64", "fd00:10:244:1::/64"])
    );

    cluster.nodes.add_node("node-3").await.expect("node-3");
    let events: Api<Event> = Api::namespaced(cluster.client(), "default");
    eventually("CIDRNotAvailable for node-3", WAIT, || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let found = list.items.iter().any(|e| {
            e.reason.as_deref() == Some("CIDRNotAvailable")
                && e.involved_object.name.as_deref() == Some("node-3")
        });
        if found {
            Ok(())
        } else {
            Err(format!("{} events", list.items.len()))
        }
    })
    .await;
    let node3 = get_node(&cluster, "node-3").await.expect("node-3");
    assert!(
        node3.spec.and_then(|s| s.pod_cidr).is_none(),
        "nothing left to give"
    );

    // node-1 goes away: node-3 gets its CIDR.
    let freed = first[0].1.clone().expect("node-1 cidr");
    cluster.nodes.stop_node("node-1");
    let nodes: Api<Node> = Api::all(cluster.client());
    nodes
        .delete("node-1", &DeleteParams::default())
        .await
        .expect("delete node-1");
    eventually("node-3 with the freed CIDR", WAIT, || async {
        let node = get_node(&cluster, "node-3").await?;
        let cidr = node.spec.and_then(|s| s.pod_cidr);
        if cidr.as_deref() == Some(freed.as_str()) {
            Ok(())
        } else {
            Err(format!("{cidr:?}, want {freed}"))
        }
    })
    .await;
}
