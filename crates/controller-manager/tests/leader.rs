//! Two `rkube-controller-manager` processes: one holds the `kube-controller-manager` Lease
//! and reconciles; killing it hands the Lease to the other, which carries on.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use rkube_client::{Api, ListParams};
use rkube_testing::cluster::{Cluster, ClusterOptions, daemon_binary};
use rkube_testing::{DaemonProcess, eventually};

const WAIT: Duration = Duration::from_secs(30);

async fn holder(leases: &Api<Lease>) -> Result<String, String> {
    let lease = leases
        .get("kube-controller-manager")
        .await
        .map_err(|e| e.to_string())?;
    lease
        .spec
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| "no holder".to_string())
}

async fn running_pods(pods: &Api<Pod>, want: usize) -> Result<(), String> {
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .map_err(|e| e.to_string())?;
    let n = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count();
    if n == want {
        Ok(())
    } else {
        Err(format!("{n} pods, want {want}"))
    }
}

fn replicaset(replicas: usize) -> String {
    format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: app\n        image: registry.local/app:v1\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_hands_the_controllers_over() {
    let cluster = Cluster::start(ClusterOptions {
        controller_manager: false,
        ..Default::default()
    })
    .await;
    let binary = daemon_binary("rkube-controller-manager");
    let mut managers: HashMap<String, DaemonProcess> = HashMap::new();
    for id in ["cm-a", "cm-b"] {
        let flags = [
            "--identity",
            id,
            "--leader-elect-lease-duration",
            "3s",
            "--leader-elect-renew-deadline",
            "2s",
            "--leader-elect-retry-period",
            "500ms",
        ];
        let p = DaemonProcess::spawn(&binary, &cluster.kubeconfig, &flags)
            .await
            .expect("controller manager starts");
        managers.insert(id.to_string(), p);
    }
    let leases: Api<Lease> = Api::namespaced(cluster.client(), "kube-system");
    let first = eventually("a controller manager to take the lease", WAIT, || {
        holder(&leases)
    })
    .await;
    assert!(managers.contains_key(&first), "holder {first:?}");

    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    cluster.kubectl.apply(&replicaset(3)).await;
    eventually("3 pods from the leader", WAIT, || running_pods(&pods, 3)).await;

    managers
        .remove(&first)
        .expect("leader")
        .kill()
        .await
        .expect("kill the leader");
    let second = eventually(
        "the other controller manager to take the lease",
        WAIT,
        || async {
            match holder(&leases).await? {
                h if h == first => Err(format!("still held by {h}")),
                h => Ok(h),
            }
        },
    )
    .await;
    assert!(managers.contains_key(&second), "holder {second:?}");

    cluster.kubectl.apply(&replicaset(5)).await;
    eventually("5 pods from the new leader", WAIT, || {
        running_pods(&pods, 5)
    })
    .await;
}
