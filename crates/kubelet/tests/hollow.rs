//! Hollow nodes: one `rkube-kubelet --hollow-nodes N` process registers N nodes that keep
//! their Leases and run a Deployment's pods through the real pod workers over the simulated
//! runtime, with the real scheduler and controller manager.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use rkube_client::Api;
use rkube_testing::cluster::{Cluster, ClusterOptions, daemon_binary};
use rkube_testing::{DaemonProcess, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hollow_nodes_register_keep_leases_and_run_a_deployment() {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 0,
        ..Default::default()
    })
    .await;
    let _hollow = DaemonProcess::spawn(
        &daemon_binary("rkube-kubelet"),
        &cluster.kubeconfig,
        &[
            "--hollow-nodes",
            "20",
            "--hollow-start-delay",
            "50ms",
            "--node-lease-renew",
            "1s",
        ],
    )
    .await
    .unwrap();
    let nodes: Api<Node> = Api::all(cluster.client());
    eventually("20 Ready hollow nodes", Duration::from_secs(30), || async {
        let list = nodes
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let ready = list
            .items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready == 20 {
            Ok(())
        } else {
            Err(format!("{ready} ready"))
        }
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), "kube-node-lease");
    let first = eventually("hollow-7's Lease", Duration::from_secs(10), || async {
        match leases
            .get_opt("hollow-7")
            .await
            .map_err(|e| e.to_string())?
        {
            Some(l) => Ok(l.spec.unwrap().renew_time),
            None => Err("no lease yet".to_string()),
        }
    })
    .await;
    eventually(
        "hollow-7's Lease renewed",
        Duration::from_secs(10),
        || async {
            let now = leases
                .get("hollow-7")
                .await
                .map_err(|e| e.to_string())?
                .spec
                .unwrap()
                .renew_time;
            if now != first {
                Ok(())
            } else {
                Err(format!("{now:?}"))
            }
        },
    )
    .await;

    let out = cluster
        .kubectl
        .apply(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: hollow-app, namespace: default}
spec:
  replicas: 100
  selector: {matchLabels: {app: hollow-app}}
  template:
    metadata: {labels: {app: hollow-app}}
    spec:
      containers:
      - name: c
        image: rkube.local/busybox:1.0
        readinessProbe: {exec: {command: ["true"]}, periodSeconds: 1}
"#,
        )
        .await;
    assert!(out.contains("created"), "{out}");
    let deployments: Api<Deployment> = Api::namespaced(cluster.client(), "default");
    eventually(
        "100 available replicas on hollow nodes",
        Duration::from_secs(90),
        || async {
            let d = deployments
                .get("hollow-app")
                .await
                .map_err(|e| e.to_string())?;
            let available = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
            if available == 100 {
                Ok(())
            } else {
                Err(format!("{available} available"))
            }
        },
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let list = pods.list(&Default::default()).await.unwrap();
    let on_nodes: std::collections::HashSet<_> = list
        .items
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    assert!(
        on_nodes.len() > 10,
        "pods spread over the hollow nodes: {on_nodes:?}"
    );
    assert!(list.items.iter().all(|p| {
        let s = p.status.as_ref().unwrap();
        s.phase.as_deref() == Some("Running")
            && s.pod_ip.as_deref().is_some_and(|ip| ip.starts_with("10."))
    }));

    cluster
        .kubectl
        .run(&["scale", "deployment/hollow-app", "--replicas=0"])
        .await
        .unwrap();
    eventually("the hollow pods gone", Duration::from_secs(60), || async {
        let n = pods
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        if n == 0 {
            Ok(())
        } else {
            Err(format!("{n} pods"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_beyond_max_pods_are_rejected_as_out_of_pods() {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 0,
        scheduler: false,
        controller_manager: false,
        ..Default::default()
    })
    .await;
    let _hollow = DaemonProcess::spawn(
        &daemon_binary("rkube-kubelet"),
        &cluster.kubeconfig,
        &[
            "--hollow-nodes",
            "1",
            "--hollow-node-prefix",
            "small-",
            "--max-pods",
            "2",
        ],
    )
    .await
    .unwrap();
    let nodes: Api<Node> = Api::all(cluster.client());
    eventually("the hollow node", Duration::from_secs(30), || async {
        match nodes.get_opt("small-0").await.map_err(|e| e.to_string())? {
            Some(_) => Ok(()),
            None => Err("not registered".to_string()),
        }
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    for i in 0..3 {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("p{i}")},
            "spec": {"nodeName": "small-0", "containers": [{"name": "c", "image": "rkube.local/busybox:1.0"}]}
        }))
        .unwrap();
        pods.create(&pod).await.unwrap();
        // One at a time, so which pod is the third is certain.
        eventually("the pod handled", Duration::from_secs(30), || async {
            let p = pods
                .get(&format!("p{i}"))
                .await
                .map_err(|e| e.to_string())?;
            match p.status.and_then(|s| s.phase) {
                Some(phase) if phase != "Pending" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
    let phase = |name: &str| {
        let pods = pods.clone();
        let name = name.to_string();
        async move {
            let s = pods.get(&name).await.unwrap().status.unwrap();
            (s.phase.unwrap_or_default(), s.reason.unwrap_or_default())
        }
    };
    assert_eq!(phase("p0").await.0, "Running");
    assert_eq!(phase("p1").await.0, "Running");
    assert_eq!(
        phase("p2").await,
        ("Failed".to_string(), "OutOfpods".to_string())
    );
}
