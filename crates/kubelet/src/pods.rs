//! The pods of one node: a worker per pod fed by pod events, the runtime relist (PLEG) that
//! pokes workers when their containers change, and the clean-up of sandboxes whose pods
//! no longer exist (deleted while the kubelet was down).

pub mod probe;
pub mod spec;
pub mod status;
pub mod view;
pub mod worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use rkube_client::Client;
use rkube_types::quantity::Quantity;
use tokio::sync::{Notify, mpsc, watch};

use crate::runtime::{Runtime, labels};

/// What every pod worker of a node shares.
pub struct NodeContext<R> {
    /// The API client.
    pub client: Client,
    /// The container runtime.
    pub runtime: R,
    /// The node's name.
    pub node_name: String,
    /// The node's InternalIP (the pods' hostIP).
    pub host_ip: String,
    /// Settings for sandbox and container configs.
    pub spec: spec::SpecContext,
    /// Where pod volumes live (`<root>/pods`).
    pub pods_dir: PathBuf,
    /// The node's allocatable resources (resourceFieldRef defaults).
    pub allocatable: BTreeMap<String, Quantity>,
    /// Memory capacity in bytes (oom_score_adj).
    pub memory_capacity: u64,
    /// The runtime's name for container IDs (`containerd`).
    pub runtime_name: String,
    /// A hollow node: no volumes, env or network, probes and hooks pass.
    pub simulated: bool,
    /// How often configMap, secret and projected volumes are rewritten from the API.
    pub sync_frequency: Duration,
    /// The most pods that may run here at once (`--max-pods`); more are rejected.
    pub max_pods: usize,
}

/// A pod event for one node.
#[derive(Debug)]
pub enum PodEvent {
    /// A pod bound to the node was added or changed.
    Apply(Box<Pod>),
    /// A pod was removed from the API.
    Deleted(Box<Pod>),
    /// A (re-)list starts: the pods that follow until [`PodEvent::Synced`] are all of them.
    ListStart,
    /// The list is complete: pods not in it are gone (a re-list after a watch gap sends no
    /// delete events for them), and sandboxes of pods never seen are orphans.
    Synced,
}

struct WorkerHandle {
    pod: watch::Sender<Option<Pod>>,
    poke: Arc<Notify>,
}

/// What one runtime relist saw: each pod's containers (id, state), and every pod UID with
/// a sandbox or container of rkube's.
struct Relist {
    containers: HashMap<String, Vec<(String, i32)>>,
    uids: HashSet<String>,
}

/// Runs the node's pods until `shutdown` fires. `relist` is the PLEG period (`None` for
/// hollow nodes, whose runtime changes only when told to).
pub async fn run<R: Runtime>(
    ctx: Arc<NodeContext<R>>,
    mut events: mpsc::Receiver<PodEvent>,
    relist: Option<Duration>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut synced = false;
    let mut listing: Option<HashSet<String>> = None;
    // Pods admitted to run (not finished), for --max-pods.
    let mut admitted: HashSet<String> = HashSet::new();
    let mut last_seen: HashMap<String, Vec<(String, i32)>> = HashMap::new();
    // The relist runs on its own, so a slow runtime never holds up pod events.
    let (relist_tx, mut relist_rx) = mpsc::channel::<Relist>(1);
    if let Some(period) = relist {
        tokio::spawn(run_relist(ctx.clone(), period, relist_tx, shutdown.clone()));
    }
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return };
                match event {
                    PodEvent::Apply(pod) => {
                        let mut pod = *pod;
                        let uid = pod.metadata.uid.clone().unwrap_or_default();
                        if let Some(seen) = listing.as_mut() {
                            seen.insert(uid.clone());
                        }
                        if finished(&pod) {
                            admitted.remove(&uid);
                        }
                        match workers.get(&uid) {
                            Some(w) => { w.pod.send_replace(Some(pod)); }
                            None => {
                                if !finished(&pod) && pod.metadata.deletion_timestamp.is_none() {
                                    if admitted.len() >= ctx.max_pods {
                                        reject(&ctx, &mut pod).await;
                                    } else {
                                        admitted.insert(uid.clone());
                                    }
                                }
                                let h = spawn_worker(&ctx, &uid, Some(pod), &done_tx, &shutdown);
                                workers.insert(uid, h);
                            }
                        }
                    }
                    PodEvent::Deleted(pod) => {
                        let uid = pod.metadata.uid.clone().unwrap_or_default();
                        if let Some(w) = workers.get(&uid) {
                            w.pod.send_replace(None);
                        }
                    }
                    PodEvent::ListStart => listing = Some(HashSet::new()),
                    PodEvent::Synced => {
                        if let Some(seen) = listing.take() {
                            for (uid, w) in &workers {
                                if !seen.contains(uid) {
                                    w.pod.send_replace(None);
                                }
                            }
                        }
                        synced = true;
                    }
                }
            }
            Some(uid) = done_rx.recv() => {
                workers.remove(&uid);
                admitted.remove(&uid);
            }
            Some(seen) = relist_rx.recv() => {
                for uid in &seen.uids {
                    match workers.get(uid) {
                        Some(w) if last_seen.get(uid) != seen.containers.get(uid) => w.poke.notify_one(),
                        Some(_) => {}
                        None if synced => {
                            tracing::info!(pod_uid = %uid, "removing the sandbox of a pod that no longer exists");
                            let h = spawn_worker(&ctx, uid, None, &done_tx, &shutdown);
                            workers.insert(uid.clone(), h);
                        }
                        None => {}
                    }
                }
                last_seen = seen.containers;
            }
            _ = shutdown.changed() => return,
        }
    }
}

fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Refuses a pod the node has no room for, as upstream's admission does: the pod fails
/// with reason OutOfpods, and its worker then only waits for its deletion.
async fn reject<R: Runtime>(ctx: &NodeContext<R>, pod: &mut Pod) {
    let message = format!(
        "Pod was rejected: Node didn't have enough resource: pods, requested: 1, used: {}, capacity: {}",
        ctx.max_pods, ctx.max_pods
    );
    let (ns, name) = (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    tracing::info!(pod = %format!("{ns}/{name}"), "{message}");
    let api: rkube_client::Api<Pod> = rkube_client::Api::namespaced(ctx.client.clone(), &ns);
    let status = serde_json::json!({"status": {"phase": "Failed", "reason": "OutOfpods", "message": message}});
    if let Err(e) = api
        .patch_status(&name, &rkube_client::Patch::Merge(status))
        .await
    {
        tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "writing the rejection failed");
    }
    let s = pod.status.get_or_insert_with(Default::default);
    s.phase = Some("Failed".into());
    s.reason = Some("OutOfpods".into());
}

fn spawn_worker<R: Runtime>(
    ctx: &Arc<NodeContext<R>>,
    uid: &str,
    pod: Option<Pod>,
    done: &mpsc::UnboundedSender<String>,
    shutdown: &watch::Receiver<bool>,
) -> WorkerHandle {
    let (tx, rx) = watch::channel(pod);
    let poke = Arc::new(Notify::new());
    let worker = worker::PodWorker::new(ctx.clone(), uid.to_string(), rx, poke.clone());
    let done = done.clone();
    let uid = uid.to_string();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        worker.run(shutdown).await;
        let _ = done.send(uid);
    });
    WorkerHandle { pod: tx, poke }
}

/// The PLEG: relists the runtime every `period` and hands what it saw to the pod manager.
async fn run_relist<R: Runtime>(
    ctx: Arc<NodeContext<R>>,
    period: Duration,
    tx: mpsc::Sender<Relist>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let (containers, sandboxes) = match (
            ctx.runtime.list_containers(None).await,
            ctx.runtime.list_pod_sandboxes(None).await,
        ) {
            (Ok(c), Ok(s)) => (c, s),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "runtime relist failed");
                continue;
            }
        };
        let managed = |l: &HashMap<String, String>| {
            l.get(labels::MANAGED_BY).map(String::as_str) == Some(labels::MANAGER)
        };
        let mut seen = Relist {
            containers: HashMap::new(),
            uids: HashSet::new(),
        };
        for c in containers.iter().filter(|c| managed(&c.labels)) {
            if let Some(uid) = c.labels.get(labels::POD_UID) {
                seen.containers
                    .entry(uid.clone())
                    .or_default()
                    .push((c.id.clone(), c.state));
                seen.uids.insert(uid.clone());
            }
        }
        for s in sandboxes.iter().filter(|s| managed(&s.labels)) {
            if let Some(uid) = s.labels.get(labels::POD_UID) {
                seen.uids.insert(uid.clone());
            }
        }
        for list in seen.containers.values_mut() {
            list.sort();
        }
        if tx.send(seen).await.is_err() {
            return;
        }
    }
}
