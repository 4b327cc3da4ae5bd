//! Two `rkube-scheduler` processes: one holds the Lease and schedules; killing it hands the
//! Lease to the other within the lease duration, and no pod is ever bound twice.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use rkube_client::watcher::{self, Event};
use rkube_client::{Api, Patch, WatchStreamExt};
use rkube_scheduler::testing::{node, pod};
use rkube_testing::{DaemonProcess, TestApiserver, eventually};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(3);
const RETRY: Duration = Duration::from_millis(500);

async fn holder(leases: &Api<Lease>) -> Result<String, String> {
    let lease = leases
        .get("kube-scheduler")
        .await
        .map_err(|e| e.to_string())?;
    lease
        .spec
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| "no holder".to_string())
}

async fn create_pods(pods: &Api<Pod>, from: usize, to: usize) {
    for i in from..to {
        pods.create(&pod(&format!("p{i}")).cpu("100m").build())
            .await
            .expect("create pod");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_hands_over_and_no_pod_is_bound_twice() {
    let server = TestApiserver::start_sled().await;
    let kubeconfig = server.running().kubeconfig.clone().expect("kubeconfig");
    let client = server.client();
    let binary = Path::new(env!("CARGO_BIN_EXE_rkube-scheduler"));
    let flags = |id: &'static str| {
        [
            "--identity",
            id,
            "--leader-elect-lease-duration",
            "3s",
            "--leader-elect-renew-deadline",
            "2s",
            "--leader-elect-retry-period",
            "500ms",
        ]
    };
    let mut schedulers: HashMap<String, DaemonProcess> = HashMap::new();
    for id in ["sched-a", "sched-b"] {
        let p = DaemonProcess::spawn(binary, &kubeconfig, &flags(id))
            .await
            .expect("scheduler starts");
        schedulers.insert(id.to_string(), p);
    }

    // Every nodeName each pod is seen with, from a watch started before any pod exists.
    let seen: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let recorder = {
        let seen = seen.clone();
        let stream = watcher::watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
            .default_backoff();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(Ok(ev)) = stream.next().await {
                if let Event::Apply(p) | Event::InitApply(p) = ev {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let node = p.spec.and_then(|s| s.node_name).unwrap_or_default();
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    let list = seen.entry(name).or_default();
                    if !node.is_empty() && list.last() != Some(&node) {
                        list.push(node);
                    }
                }
            }
        })
    };

    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(&node("n1").build())
        .await
        .expect("create node");
    nodes
        .patch_status(
            "n1",
            &Patch::Merge(
                json!({"status": {"allocatable": {"cpu": "64", "memory": "64Gi", "pods": "110"}}}),
            ),
        )
        .await
        .expect("node status");

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let first = eventually(
        "a scheduler to take the lease",
        Duration::from_secs(30),
        || holder(&leases),
    )
    .await;
    assert!(schedulers.contains_key(&first), "holder {first:?}");

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create_pods(&pods, 0, 20).await;
    let bound = |n: usize| {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let count = list
                .items
                .iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
                .count();
            if count >= n {
                Ok(())
            } else {
                Err(format!("{count}/{n} pods bound"))
            }
        }
    };
    eventually("the first 20 pods bound", Duration::from_secs(30), || {
        bound(20)
    })
    .await;

    // Kill the leader outright: no release, the Lease must expire.
    let killed_at = tokio::time::Instant::now();
    schedulers
        .remove(&first)
        .expect("leader process")
        .kill()
        .await
        .expect("kill leader");
    create_pods(&pods, 20, 40).await;
    let second = eventually(
        "the other scheduler to take the lease",
        Duration::from_secs(30),
        || {
            let leases = leases.clone();
            let first = first.clone();
            async move {
                match holder(&leases).await? {
                    h if h == first => Err(format!("still held by {h}")),
                    h => Ok(h),
                }
            }
        },
    )
    .await;
    let handover = killed_at.elapsed();
    assert!(schedulers.contains_key(&second), "new holder {second:?}");
    // The Lease expires LEASE after its last renewal, and the candidate retries every
    // RETRY; one more RETRY of slack for a loaded machine.
    assert!(
        handover <= LEASE + RETRY * 2,
        "handover took {handover:?}, lease duration {LEASE:?}"
    );
    eventually("all 40 pods bound", Duration::from_secs(30), || bound(40)).await;

    // Give the watch a moment to deliver the last bindings, then check them.
    eventually(
        "the watch to see 40 bound pods",
        Duration::from_secs(10),
        || {
            let seen = seen.clone();
            async move {
                let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                let n = seen.values().filter(|v| !v.is_empty()).count();
                if n >= 40 {
                    Ok(())
                } else {
                    Err(format!("{n} seen bound"))
                }
            }
        },
    )
    .await;
    recorder.abort();
    let bindings = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (pod, nodes) in &bindings {
        assert_eq!(nodes.len(), 1, "pod {pod} was bound to {nodes:?}");
    }
    drop(schedulers);
    server.shutdown().await;
}
