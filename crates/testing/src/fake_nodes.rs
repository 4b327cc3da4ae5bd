//! `FakeNodes`: a test fake standing in for kubelets, so control-plane tests have nodes
//! whose pods "run" without containers. It is a fake on purpose and named as one; the real
//! kubelet (and its hollow mode for scale) replaces it where containers matter.
//!
//! For each node it: registers the Node with capacity and a Ready condition, renews the
//! node's Lease in `kube-node-lease` every second, marks pods bound to it Running and Ready
//! through the status subresource (once: later status changes by a test stay), ends pods
//! that ask for it (`fake.rkube.io/complete: "true"` → Succeeded;
//! `fake.rkube.io/fail-first: "N"` → the first N pods of the same controller end Failed,
//! later ones Succeeded), and finishes graceful deletions with a grace-0 delete, as a
//! kubelet confirms that containers stopped. Writes that fail on the way (an apiserver
//! restarting) are retried for a while. [`FakeNodes::stop_node`] makes one node's fake
//! kubelet "die": its Lease goes stale and its pods are left as they are.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use rkube_client::watcher::{self, Event};
use rkube_client::{Api, Client, DeleteParams, Patch, WatchStreamExt};
use rkube_types::Reason;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// The annotation that makes a pod end `Succeeded` once running.
pub const COMPLETE: &str = "fake.rkube.io/complete";
/// The annotation that makes the first N pods of one controller end `Failed`.
pub const FAIL_FIRST: &str = "fake.rkube.io/fail-first";
/// How often the fake kubelets renew their Leases.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a fake kubelet retries a pod write that failed on the way.
const RETRY_FOR: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Shared {
    live: Mutex<HashSet<String>>,
    /// Pods (by uid) already started, so each is started once.
    started: Mutex<HashSet<String>>,
    /// Pods (by uid) whose final delete was sent.
    finalized: Mutex<HashSet<String>>,
    /// Failed pods per controller uid, for `fail-first`.
    failures: Mutex<HashMap<String, u32>>,
    next_ip: AtomicU32,
    /// Each node's InternalIP, never reused by a later node.
    addresses: Mutex<HashMap<String, String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Fake kubelets for a set of nodes; they stop when this is dropped.
pub struct FakeNodes {
    client: Client,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FakeNodes {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl FakeNodes {
    /// Registers `names` as Ready nodes and starts their fake kubelets.
    pub async fn start(client: Client, names: &[String]) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared::default());
        let mut nodes = FakeNodes {
            client: client.clone(),
            shared: shared.clone(),
            tasks: Vec::new(),
        };
        for name in names {
            nodes.add_node(name).await?;
        }
        nodes
            .tasks
            .push(tokio::spawn(heartbeats(client.clone(), shared.clone())));
        nodes.tasks.push(tokio::spawn(run_pods(client, shared)));
        Ok(nodes)
    }

    /// Registers one more Ready node and starts its fake kubelet.
    pub async fn add_node(&self, name: &str) -> anyhow::Result<()> {
        // Live before the Node exists, so a pod bound the moment it appears is started.
        let address = {
            let mut addresses = lock(&self.shared.addresses);
            let index = addresses.len();
            let address = format!("172.31.{}.{}", index / 250, index % 250 + 1);
            addresses.insert(name.to_string(), address.clone());
            address
        };
        lock(&self.shared.live).insert(name.to_string());
        register(&self.client, name, &address).await?;
        renew(&self.client, name).await?;
        Ok(())
    }

    /// Stops the fake kubelet of `name`: no more Lease renewals, its pods are left alone.
    pub fn stop_node(&self, name: &str) {
        lock(&self.shared.live).remove(name);
    }

    /// The nodes whose fake kubelets run.
    pub fn live(&self) -> Vec<String> {
        let mut live: Vec<String> = lock(&self.shared.live).iter().cloned().collect();
        live.sort();
        live
    }
}

fn now() -> String {
    Timestamp::now().to_string()
}

async fn register(client: &Client, name: &str, address: &str) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        }},
    }))?;
    match nodes.create(&node).await {
        Ok(_) => {}
        Err(e) if e.is_already_exists() => {}
        Err(e) => return Err(e.into()),
    }
    let t = now();
    let status = json!({"status": {
        "capacity": {"cpu": "8", "memory": "64Gi", "pods": "110"},
        "allocatable": {"cpu": "8", "memory": "64Gi", "pods": "110"},
        "conditions": [
            {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
             "lastHeartbeatTime": t, "lastTransitionTime": t},
            {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure",
             "lastHeartbeatTime": t, "lastTransitionTime": t},
            {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID",
             "lastHeartbeatTime": t, "lastTransitionTime": t},
            {"type": "Ready", "status": "True", "reason": "KubeletReady",
             "message": "fake kubelet is posting ready status",
             "lastHeartbeatTime": t, "lastTransitionTime": t},
        ],
        "addresses": [
            {"type": "InternalIP", "address": address},
            {"type": "Hostname", "address": name},
        ],
        "nodeInfo": {
            "kubeletVersion": "v1.32.0-fake", "kubeProxyVersion": "v1.32.0-fake",
            "containerRuntimeVersion": "fake://0", "operatingSystem": "linux",
            "architecture": "amd64", "osImage": "fake", "kernelVersion": "fake",
            "machineID": "", "systemUUID": "", "bootID": "",
        },
    }});
    nodes.patch_status(name, &Patch::Merge(status)).await?;
    Ok(())
}

async fn renew(client: &Client, node: &str) -> anyhow::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let t = Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let patch =
        json!({"spec": {"renewTime": t, "holderIdentity": node, "leaseDurationSeconds": 40}});
    match leases.patch(node, &Patch::Merge(patch.clone())).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => {
            let mut lease = patch;
            lease["metadata"] = json!({"name": node, "namespace": "kube-node-lease"});
            let lease: Lease = serde_json::from_value(lease)?;
            match leases.create(&lease).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_already_exists() => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

async fn heartbeats(client: Client, shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tick.tick().await;
        let live: Vec<String> = lock(&shared.live).iter().cloned().collect();
        for node in live {
            if let Err(e) = renew(&client, &node).await {
                tracing::warn!(node, error = %e, "fake kubelet lease renewal failed");
            }
        }
    }
}

/// What the fake kubelet does with one pod event.
enum Step {
    Start,
    Finalize,
    Nothing,
}

fn step(pod: &Pod, shared: &Shared) -> Step {
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
        return Step::Nothing;
    };
    if !lock(&shared.live).contains(node) {
        return Step::Nothing;
    }
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if pod.metadata.deletion_timestamp.is_some() {
        return if lock(&shared.finalized).insert(uid) {
            Step::Finalize
        } else {
            Step::Nothing
        };
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, None | Some("Pending")) && lock(&shared.started).insert(uid) {
        return Step::Start;
    }
    Step::Nothing
}

async fn run_pods(client: Client, shared: Arc<Shared>) {
    let pods: Api<Pod> = Api::all(client.clone());
    let stream = watcher::watcher(pods, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    // Bounded concurrency, like a kubelet's pod workers.
    let permits = Arc::new(Semaphore::new(64));
    while let Some(event) = stream.next().await {
        let pod = match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => pod,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "fake kubelet pod watch failed");
                continue;
            }
        };
        let action = step(&pod, &shared);
        if matches!(action, Step::Nothing) {
            continue;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let client = client.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let result = match action {
                Step::Start => start_pod(&client, &shared, &pod).await,
                Step::Finalize => finalize(&client, &pod).await,
                Step::Nothing => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(pod = ?pod.metadata.name, error = %e, "fake kubelet failed");
                // Let the next event of this pod (if one comes) try again.
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                lock(&shared.started).remove(&uid);
                lock(&shared.finalized).remove(&uid);
            }
            drop(permit);
        });
    }
}

/// Sends `write` again, backing off, while it fails on the way (the apiserver restarting or
/// overloaded), for up to [`RETRY_FOR`]; a kubelet's pod workers retry the same way. Waiting
/// for the pod's next event instead would wait forever when the watch resumes where it left
/// off and nothing else changes the pod.
async fn retrying<T, F, Fut>(mut write: F) -> rkube_client::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = rkube_client::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + RETRY_FOR;
    let mut delay = Duration::from_millis(100);
    loop {
        match write().await {
            Err(e) if transient(&e) && tokio::time::Instant::now() + delay < deadline => {
                tracing::debug!(error = %e, "fake kubelet write failed, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            result => return result,
        }
    }
}

/// Whether a failed write may succeed if sent again.
fn transient(e: &rkube_client::Error) -> bool {
    matches!(
        e.reason(),
        Some(
            Reason::ServiceUnavailable
                | Reason::Timeout
                | Reason::TooManyRequests
                | Reason::InternalError
        )
    )
}

async fn finalize(client: &Client, pod: &Pod) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(
        client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let params = DeleteParams::immediate().uid(pod.metadata.uid.as_deref().unwrap_or_default());
    match retrying(|| api.delete(name, &params)).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn container_statuses(pod: &Pod, state: serde_json::Value, ready: bool) -> serde_json::Value {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "ready": ready, "started": ready, "restartCount": 0, "state": state,
            })
        })
        .collect()
}

async fn start_pod(client: &Client, shared: &Shared, pod: &Pod) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(
        client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let n = shared.next_ip.fetch_add(1, Ordering::Relaxed);
    let ip = format!("10.244.{}.{}", (n / 250) % 256, n % 250 + 1);
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    let host_ip = node
        .and_then(|n| lock(&shared.addresses).get(n).cloned())
        .unwrap_or_default();
    let t = now();
    let cond = |type_: &str, status: &str| json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": t});
    let running = json!({"status": {
        "phase": "Running",
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": t,
        "conditions": [
            cond("PodReadyToStartContainers", "True"), cond("Initialized", "True"),
            cond("Ready", "True"), cond("ContainersReady", "True"), cond("PodScheduled", "True"),
        ],
        "containerStatuses": container_statuses(pod, json!({"running": {"startedAt": t}}), true),
    }});
    let running = Patch::Merge(running);
    retrying(|| api.patch_status(name, &running)).await?;

    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let fail_first: Option<u32> = annotations.get(FAIL_FIRST).and_then(|v| v.parse().ok());
    let complete = annotations.get(COMPLETE).is_some_and(|v| v == "true");
    if fail_first.is_none() && !complete {
        return Ok(());
    }
    let owner = pod
        .metadata
        .owner_references
        .as_deref()
        .and_then(|refs| refs.iter().find(|r| r.controller == Some(true)))
        .map(|r| r.uid.clone())
        .unwrap_or_else(|| pod.metadata.uid.clone().unwrap_or_default());
    let fail = match fail_first {
        Some(limit) => {
            let mut failures = lock(&shared.failures);
            let count = failures.entry(owner).or_default();
            if *count < limit {
                *count += 1;
                true
            } else {
                false
            }
        }
        None => false,
    };
    let (phase, code, reason) = if fail {
        ("Failed", 1, "Error")
    } else {
        ("Succeeded", 0, "Completed")
    };
    let t = now();
    let terminated = json!({"terminated": {
        "exitCode": code, "reason": reason, "startedAt": t, "finishedAt": t,
    }});
    let done = json!({"status": {
        "phase": phase,
        "conditions": [
            cond("PodReadyToStartContainers", "False"), cond("Initialized", "True"),
            json!({"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": t}),
            json!({"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": t}),
            cond("PodScheduled", "True"),
        ],
        "containerStatuses": container_statuses(pod, terminated, false),
    }});
    let done = Patch::Merge(done);
    retrying(|| api.patch_status(name, &done)).await?;
    Ok(())
}
