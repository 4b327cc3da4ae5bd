//! Recovery ("run it for real"): control-plane processes killed or restarted in the middle
//! of work finish that work, and nothing is done twice or lost.
//!
//! - A scheduler SIGKILLed while it binds 500 pods is replaced by a new process: every pod
//!   ends up bound, and no pod's `spec.nodeName` ever changes once set (a watch from before
//!   the first pod sees every binding); the apiserver refuses to bind a bound pod again.
//! - A controller manager SIGKILLed during a scale-up to 200 replicas, then again during a
//!   rollout, is replaced and finishes both. A watch from before the Deployment sees at
//!   most 200 active pods while scaling up, ReplicaSets never sized beyond replicas +
//!   surge, one ReplicaSet per template hash, and 200 pods created per template (a pod
//!   created twice would show).
//! - An apiserver process stopped with SIGTERM during a (stalled) rolling update, then
//!   SIGKILLed during a running one, and started again on the same data dir and port loses
//!   no object (lists of every kind before and after), and the scheduler and
//!   controller-manager processes (and the in-process fake kubelets) carry on by themselves:
//!   same pids, the rollouts complete, nothing done twice as above.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rkube_client::watcher::{self, Event};
use rkube_client::{Api, Client, ListParams, Patch, WatchStreamExt};
use rkube_rpc::v1::{ListRequest, ResourceRef};
use rkube_testing::cluster::{Cluster, ClusterOptions, daemon_binary};
use rkube_testing::{ApiserverProcess, DaemonProcess, FakeNodes, eventually};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The longest wait for one step (a few hundred pods through a debug build on 2 cores).
const WAIT: Duration = Duration::from_secs(60);
const HASH_LABEL: &str = "pod-template-hash";
/// Pods a fake node holds (its `pods` capacity).
const NODE_PODS: usize = 110;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn uid_of(meta: &ObjectMeta) -> String {
    meta.uid.clone().unwrap_or_default()
}

fn label(meta: &ObjectMeta, key: &str) -> String {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(key))
        .cloned()
        .unwrap_or_default()
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// Counts against the replicas, as the ReplicaSet controller counts: neither terminating
/// nor finished.
fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// A watch (re-listing and resuming by itself) whose events fold into `S`; stops when
/// dropped.
struct Recorder<S> {
    state: Arc<Mutex<S>>,
    /// Bumped after every event, for [`Recorder::wait_for`].
    applied: tokio::sync::watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl<S: Send + 'static> Recorder<S> {
    fn start<K>(api: Api<K>, labels: &str, state: S, apply: fn(&mut S, Event<K>)) -> Self
    where
        K: k8s_openapi::Metadata<Ty = ObjectMeta>
            + k8s_openapi::serde::Serialize
            + k8s_openapi::serde::de::DeserializeOwned
            + Clone
            + Send
            + Sync
            + 'static,
    {
        let state = Arc::new(Mutex::new(state));
        let stream =
            watcher::watcher(api, watcher::Config::default().labels(labels)).default_backoff();
        let shared = state.clone();
        let (tx, applied) = tokio::sync::watch::channel(0);
        let task = tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                // Errors are retried by the backoff; a relist follows.
                if let Ok(event) = event {
                    apply(&mut lock(&shared), event);
                    tx.send_modify(|n| *n += 1);
                }
            }
        });
        Recorder {
            state,
            applied,
            task,
        }
    }

    fn lock(&self) -> MutexGuard<'_, S> {
        lock(&self.state)
    }

    /// Waits until `check` passes on the state, looking again after every event (so a
    /// test acts within an event of the moment, as for killing a daemon mid-work), or
    /// fails after [`WAIT`] with what `check` last said.
    async fn wait_for<T>(&self, what: &str, check: impl Fn(&S) -> Result<T, String>) -> T {
        let mut applied = self.applied.clone();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            applied.mark_unchanged();
            let last = match check(&self.lock()) {
                Ok(value) => return value,
                Err(seen) => seen,
            };
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => panic!("the watch for {what} ended; last seen: {last}"),
                Err(_) => panic!("timed out after {WAIT:?} waiting for {what}; last seen: {last}"),
            }
        }
    }
}

impl<S> Drop for Recorder<S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The objects a watch holds now (uid → what each counts as), rebuilt by every relist so
/// that a relist never keeps objects deleted while the watch was down.
#[derive(Debug)]
struct Current<V> {
    /// Whether the first list is done (so later objects are seen from their creation).
    synced: bool,
    now: HashMap<String, V>,
    /// What a relist in progress has seen, swapped in when it is complete.
    relisting: Option<HashMap<String, V>>,
}

impl<V> Default for Current<V> {
    fn default() -> Self {
        Self {
            synced: false,
            now: HashMap::new(),
            relisting: None,
        }
    }
}

impl<V> Current<V> {
    /// Applies `event`; `value` gives an object's uid and what it counts as (None: it is
    /// not counted, as a pod that has finished).
    fn apply<K>(&mut self, event: &Event<K>, value: impl Fn(&K) -> (String, Option<V>)) {
        match event {
            Event::Init => self.relisting = Some(HashMap::new()),
            Event::InitApply(object) => {
                if let (uid, Some(v)) = value(object)
                    && let Some(listed) = &mut self.relisting
                {
                    listed.insert(uid, v);
                }
            }
            Event::InitDone => {
                if let Some(listed) = self.relisting.take() {
                    self.now = listed;
                }
                self.synced = true;
            }
            Event::Apply(object) => match value(object) {
                (uid, Some(v)) => {
                    self.now.insert(uid, v);
                }
                (uid, None) => {
                    self.now.remove(&uid);
                }
            },
            Event::Delete(object) => {
                self.now.remove(&value(object).0);
            }
        }
    }

    fn listed(&self) -> Result<(), String> {
        if self.synced {
            Ok(())
        } else {
            Err("not listed yet".to_string())
        }
    }

    fn len(&self) -> usize {
        self.now.len()
    }

    fn values(&self) -> impl Iterator<Item = &V> {
        self.now.values()
    }
}

/// What a watch of pods saw.
#[derive(Debug, Default)]
struct PodLog {
    /// uid → (name, every `spec.nodeName` it was seen with, in order, repeats folded).
    bindings: HashMap<String, (String, Vec<String>)>,
    /// uid → template hash, of every pod seen.
    templates: HashMap<String, String>,
    /// uid → template hash, of the active pods.
    active: Current<String>,
    /// The most active pods seen at once since the last [`PodLog::reset_peak`].
    peak: usize,
    /// How many of those were of each template, for failure messages.
    at_peak: BTreeMap<String, usize>,
}

impl PodLog {
    fn apply(&mut self, event: Event<Pod>) {
        if let Event::InitApply(pod) | Event::Apply(pod) = &event {
            self.record(pod);
        }
        self.active.apply(&event, |pod| {
            (
                uid_of(&pod.metadata),
                is_active(pod).then(|| label(&pod.metadata, HASH_LABEL)),
            )
        });
        if self.active.len() > self.peak {
            self.peak = self.active.len();
            self.at_peak = self.per_template();
        }
    }

    /// Active pods per template.
    fn per_template(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for hash in self.active.values() {
            *counts.entry(hash.clone()).or_default() += 1;
        }
        counts
    }

    fn record(&mut self, pod: &Pod) {
        let uid = uid_of(&pod.metadata);
        self.templates
            .entry(uid.clone())
            .or_insert_with(|| label(&pod.metadata, HASH_LABEL));
        let name = pod.metadata.name.clone().unwrap_or_default();
        let (_, nodes) = self
            .bindings
            .entry(uid)
            .or_insert_with(|| (name, Vec::new()));
        if let Some(node) = node_of(pod)
            && nodes.last().map(String::as_str) != Some(node)
        {
            nodes.push(node.to_string());
        }
    }

    fn reset_peak(&mut self) {
        self.peak = self.active.len();
        self.at_peak = self.per_template();
    }

    fn listed(&self) -> Result<(), String> {
        self.active.listed()
    }

    fn active_with_hash(&self, hash: &str) -> usize {
        self.active.values().filter(|h| *h == hash).count()
    }

    /// How many pods of each template were ever seen.
    fn created(&self) -> BTreeMap<String, usize> {
        let mut created = BTreeMap::new();
        for hash in self.templates.values() {
            *created.entry(hash.clone()).or_default() += 1;
        }
        created
    }

    /// Pods seen with more than one node.
    fn rebound(&self) -> Vec<String> {
        self.bindings
            .values()
            .filter(|(_, nodes)| nodes.len() > 1)
            .map(|(name, nodes)| format!("{name} bound to {nodes:?}"))
            .collect()
    }
}

/// What a watch of ReplicaSets saw.
#[derive(Debug, Default)]
struct ReplicaSetLog {
    /// Template hash → uids of every ReplicaSet ever seen with it.
    per_hash: BTreeMap<String, BTreeSet<String>>,
    /// uid → spec.replicas.
    sizes: Current<i32>,
    /// The largest sum of the sizes seen since the last [`ReplicaSetLog::reset_peak`].
    peak: i32,
}

impl ReplicaSetLog {
    fn apply(&mut self, event: Event<ReplicaSet>) {
        if let Event::InitApply(rs) | Event::Apply(rs) = &event {
            self.record_hash(rs);
        }
        self.sizes.apply(&event, |rs| {
            let size = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            (uid_of(&rs.metadata), Some(size))
        });
        self.peak = self.peak.max(self.sizes.values().sum());
    }

    fn record_hash(&mut self, rs: &ReplicaSet) {
        self.per_hash
            .entry(label(&rs.metadata, HASH_LABEL))
            .or_default()
            .insert(uid_of(&rs.metadata));
    }

    fn reset_peak(&mut self) {
        self.peak = self.sizes.values().sum();
    }

    fn listed(&self) -> Result<(), String> {
        self.sizes.listed()
    }
}

/// A Deployment `name` of `replicas` pods labelled `app=<name>` running `image`, rolled
/// with maxSurge and maxUnavailable 25%.
fn deployment(name: &str, replicas: i32, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }))
    .expect("deployment")
}

/// The Deployment `app`, its ReplicaSet of the current revision (once made), and its
/// other ReplicaSets.
async fn replica_sets(
    client: &Client,
    app: &str,
) -> Result<(Deployment, Option<ReplicaSet>, Vec<ReplicaSet>), String> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d = deployments.get(app).await.map_err(|e| e.to_string())?;
    let revision = |m: &ObjectMeta| {
        m.annotations
            .as_ref()
            .and_then(|a| a.get("deployment.kubernetes.io/revision"))
            .cloned()
            .unwrap_or_default()
    };
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let list = api
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map_err(|e| e.to_string())?;
    let (current, old): (Vec<_>, Vec<_>) = list
        .items
        .into_iter()
        .partition(|rs| revision(&rs.metadata) == revision(&d.metadata));
    Ok((d, current.into_iter().next(), old))
}

/// Waits until the Deployment `app` has rolled out its current template to `replicas`
/// available pods, the old ReplicaSets are empty, and exactly `replicas` pods are active,
/// all of the current template; returns its template hash.
async fn rolled_out(client: &Client, app: &str, replicas: i32) -> String {
    let what = format!("deployment {app} rolled out to {replicas} replicas");
    eventually(&what, WAIT, || async {
        let (d, current, old) = replica_sets(client, app).await?;
        let current = current.ok_or("no ReplicaSet of the current revision")?;
        let hash = label(&current.metadata, HASH_LABEL);
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let list = pods
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .map_err(|e| e.to_string())?;
        let active: Vec<&Pod> = list.items.iter().filter(|p| is_active(p)).collect();
        let current_template = active
            .iter()
            .filter(|p| label(&p.metadata, HASH_LABEL) == hash)
            .count();
        let status = d.status.clone().unwrap_or_default();
        let counts = (
            status.replicas.unwrap_or(0),
            status.updated_replicas.unwrap_or(0),
            status.available_replicas.unwrap_or(0),
        );
        let old_sizes: Vec<_> = old.iter().map(sizes).collect();
        if status.observed_generation == d.metadata.generation
            && counts == (replicas, replicas, replicas)
            && old_sizes.iter().all(|s| s.0 == 0 && s.1 == 0)
            && active.len() == replicas as usize
            && current_template == active.len()
        {
            return Ok(hash);
        }
        let waiting: Vec<String> = list
            .items
            .iter()
            .filter(|p| !is_ready(p) || !is_active(p))
            .map(|p| {
                format!(
                    "{} (node {:?}, phase {:?}, ready {}, terminating {})",
                    p.metadata.name.as_deref().unwrap_or_default(),
                    node_of(p),
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    is_ready(p),
                    p.metadata.deletion_timestamp.is_some(),
                )
            })
            .collect();
        Err(format!(
            "deployment: observed generation {:?} of {:?}, (replicas, updated, available) \
             {counts:?}; (spec, status, ready, available) of the new ReplicaSet {hash} {:?}, \
             of the old ones {old_sizes:?}; {} active pods, {current_template} of the new \
             template; pods not ready or not active: {waiting:?}",
            status.observed_generation,
            d.metadata.generation,
            sizes(&current),
            active.len(),
        ))
    })
    .await
}

/// (spec, status, ready, available) replicas of a ReplicaSet.
fn sizes(rs: &ReplicaSet) -> (i32, i32, i32, i32) {
    let status = rs.status.clone().unwrap_or_default();
    (
        rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
        status.replicas,
        status.ready_replicas.unwrap_or(0),
        status.available_replicas.unwrap_or(0),
    )
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_killed_while_binding_is_replaced_and_every_pod_is_bound_once() {
    // More than the scheduler's 256 bindings in flight, so some wait for it when it dies.
    const PODS: usize = 500;
    const NODES: usize = 5;
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: NODES,
        scheduler: false,
        controller_manager: false,
        ..Default::default()
    })
    .await;
    let client = cluster.client();
    let log = Recorder::start(
        Api::<Pod>::all(client.clone()),
        "app=batch",
        PodLog::default(),
        PodLog::apply,
    );
    log.wait_for("the pod watch listed", |l| l.listed()).await;

    // All pending before the scheduler starts, so it has a queue to work through when it
    // is killed.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    futures::stream::iter(0..PODS)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("batch-{i}"), "labels": {"app": "batch"}},
                    "spec": {"containers": [{"name": "c", "image": "registry.local/app:v1"}]},
                }))
                .expect("pod");
                pods.create(&pod).await.expect("create pod");
            }
        })
        .buffer_unordered(16)
        .collect::<()>()
        .await;

    let scheduler_binary = daemon_binary("rkube-scheduler");
    let flags = ["--leader-elect=false"];
    let first = DaemonProcess::spawn(&scheduler_binary, &cluster.kubeconfig, &flags)
        .await
        .expect("the scheduler starts");
    let bound = |log: &PodLog| {
        log.bindings
            .values()
            .filter(|(_, nodes)| !nodes.is_empty())
            .count()
    };
    // Killed as soon as its first bindings are answered, while hundreds are in flight or
    // queued. (Its own count: the watch can lag the bindings by hundreds of pods.)
    eventually("the scheduler to make its first bindings", WAIT, || async {
        match bindings_made(&first).await? {
            0 => Err("no binding made".to_string()),
            _ => Ok(()),
        }
    })
    .await;
    first.kill().await.expect("SIGKILL the scheduler");
    let list = pods.list(&ListParams::default()).await.expect("list pods");
    let bound_at_kill: Vec<&Pod> = list.items.iter().filter(|p| node_of(p).is_some()).collect();
    assert!(
        bound_at_kill.len() < PODS,
        "the scheduler bound all {PODS} pods before it was killed: the test missed the middle"
    );
    // The apiserver binds a pod once: a second binding, to another node or the same one, is
    // refused, and the pod stays where it is.
    let pod = bound_at_kill[0];
    let name = pod.metadata.name.as_deref().expect("name");
    let node = node_of(pod).expect("bound").to_string();
    let other = (1..=NODES)
        .map(|i| format!("node-{i}"))
        .find(|n| *n != node)
        .expect("another node");
    for target in [&other, &node] {
        let err = pods
            .bind(name, pod.metadata.uid.as_deref(), target)
            .await
            .expect_err("binding a bound pod again must fail");
        assert!(
            err.is_conflict(),
            "binding {name} (on {node}) to {target}: {err}"
        );
    }
    let after = pods.get(name).await.expect("get pod");
    assert_eq!(node_of(&after), Some(node.as_str()), "{name} moved");

    let second = DaemonProcess::spawn(&scheduler_binary, &cluster.kubeconfig, &flags)
        .await
        .expect("a new scheduler starts");
    cluster.scheduler = Some(second);
    let placement = eventually("every pod bound", WAIT, || async {
        let list = pods
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for pod in &list.items {
            if let Some(node) = node_of(pod) {
                *per_node.entry(node.to_string()).or_default() += 1;
            }
        }
        match per_node.values().sum::<usize>() {
            n if n == PODS => Ok(per_node),
            n => Err(format!("{n}/{PODS} bound: {per_node:?}")),
        }
    })
    .await;
    assert!(
        placement.values().all(|&n| n <= NODE_PODS),
        "a node holds more than its {NODE_PODS} pods: {placement:?}"
    );
    log.wait_for("the watch to see every binding", |log| match bound(log) {
        n if n == PODS => Ok(()),
        n => Err(format!("{n}/{PODS} seen bound")),
    })
    .await;
    let log = log.lock();
    assert_eq!(log.bindings.len(), PODS, "pods seen");
    let rebound = log.rebound();
    assert!(rebound.is_empty(), "pods bound twice: {rebound:?}");
}

/// The bindings the scheduler `daemon` made (the count of its binding latency histogram).
async fn bindings_made(daemon: &DaemonProcess) -> Result<u64, String> {
    let metrics = daemon
        .http_get("/metrics")
        .await
        .map_err(|e| e.to_string())?;
    let count = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"scheduler_binding_duration_seconds_count{result="ok"} "#));
    match count {
        Some(n) => n.trim().parse().map_err(|e| format!("{n:?}: {e}")),
        None => Ok(0),
    }
}

/// Starts a controller-manager process on `kubeconfig` with `flags`.
async fn controller_manager(kubeconfig: &Path, flags: &[&str]) -> DaemonProcess {
    DaemonProcess::spawn(
        &daemon_binary("rkube-controller-manager"),
        kubeconfig,
        flags,
    )
    .await
    .expect("the controller manager starts")
}

/// SIGKILLs the cluster's controller manager.
async fn kill_controller_manager(cluster: &mut Cluster) {
    cluster
        .controller_manager
        .take()
        .expect("controller manager")
        .kill()
        .await
        .expect("SIGKILL the controller manager");
}

/// Leader election as in production, with a short Lease: a replacement acts once the
/// killed leader's Lease has expired, so whatever the killed process had in flight has
/// landed (or not) by then. Without it, a replacement started at once was seen (once in
/// about a hundred loaded runs) to have 212 pods active while scaling to 200, perhaps by
/// listing before the apiserver had finished the dead process's last creations.
const SHORT_LEASE: [&str; 4] = [
    "--leader-elect=true",
    "--leader-elect-lease-duration=4s",
    // Not much shorter: a leader that cannot renew in time (a loaded CI machine) exits.
    "--leader-elect-renew-deadline=3s",
    "--leader-elect-retry-period=500ms",
];

/// Watches of the `app=web` pods and ReplicaSets (listed before anything exists), then the
/// `web` Deployment of `replicas` created; returns the logs and the Deployments API.
async fn web_deployment(
    client: &Client,
    replicas: i32,
) -> (Recorder<PodLog>, Recorder<ReplicaSetLog>, Api<Deployment>) {
    let pod_log = Recorder::start(
        Api::<Pod>::all(client.clone()),
        "app=web",
        PodLog::default(),
        PodLog::apply,
    );
    let rs_log = Recorder::start(
        Api::<ReplicaSet>::all(client.clone()),
        "app=web",
        ReplicaSetLog::default(),
        ReplicaSetLog::apply,
    );
    pod_log
        .wait_for("the pod watch listed", |l| l.listed())
        .await;
    rs_log
        .wait_for("the replica set watch listed", |l| l.listed())
        .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .create(&deployment("web", replicas, "registry.local/app:v1"))
        .await
        .expect("create deployment");
    (pod_log, rs_log, deployments)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_manager_killed_mid_scale_up_and_mid_rollout_finishes_without_extra_pods() {
    const REPLICAS: i32 = 200;
    // 25% of 200.
    const SURGE: i32 = 50;
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: 4,
        controller_manager: false,
        ..Default::default()
    })
    .await;
    cluster.controller_manager = Some(controller_manager(&cluster.kubeconfig, &SHORT_LEASE).await);
    let client = cluster.client();
    let (pod_log, rs_log, deployments) = web_deployment(&client, REPLICAS).await;

    // Scale-up: killed while the ReplicaSet controller creates pods in batches.
    pod_log
        .wait_for("the scale-up under way", |log| match log.active.len() {
            n if n >= 40 => Ok(()),
            n => Err(format!("{n} pods")),
        })
        .await;
    kill_controller_manager(&mut cluster).await;
    let at_kill = pod_log.lock().active.len();
    assert!(
        at_kill < REPLICAS as usize,
        "all {REPLICAS} pods were created before the kill: the test missed the middle"
    );
    cluster.controller_manager = Some(controller_manager(&cluster.kubeconfig, &SHORT_LEASE).await);
    let v1 = rolled_out(&client, "web", REPLICAS).await;
    caught_up(&pod_log, &v1, REPLICAS).await;
    {
        let (mut pods, mut sets) = (pod_log.lock(), rs_log.lock());
        // Nothing is deleted while scaling up, so this bound is exact.
        assert!(
            pods.peak <= REPLICAS as usize,
            "{} active pods at once while scaling to {REPLICAS} (killed at {at_kill}), per \
             template {:?}; replica sets sized {} at most",
            pods.peak,
            pods.at_peak,
            sets.peak
        );
        assert!(
            sets.peak <= REPLICAS,
            "replica sets sized {} while scaling to {REPLICAS}",
            sets.peak
        );
        pods.reset_peak();
        sets.reset_peak();
    }

    // Rollout: killed while the new ReplicaSet grows and the old one shrinks.
    deployments
        .patch(
            "web",
            &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "registry.local/app:v2"}]}}}})),
        )
        .await
        .expect("set image v2");
    pod_log
        .wait_for("the rollout under way", |log| {
            let new = log.active.len() - log.active_with_hash(&v1);
            if new >= 20 {
                Ok(())
            } else {
                Err(format!("{new} pods of the new template"))
            }
        })
        .await;
    kill_controller_manager(&mut cluster).await;
    assert!(
        pod_log.lock().active_with_hash(&v1) > 0,
        "the rollout was done before the kill: the test missed the middle"
    );
    cluster.controller_manager = Some(controller_manager(&cluster.kubeconfig, &SHORT_LEASE).await);
    let v2 = rolled_out(&client, "web", REPLICAS).await;
    assert_ne!(v1, v2, "the template hash changes with the image");
    caught_up(&pod_log, &v2, REPLICAS).await;
    let (pods, sets) = (pod_log.lock(), rs_log.lock());
    assert_done_once(&pods, &sets, &[v1, v2], (REPLICAS, SURGE), 0);
}

/// Waits until the pod watch has seen the end of a rollout: `replicas` active pods, all
/// of template `hash`.
async fn caught_up(log: &Recorder<PodLog>, hash: &str, replicas: i32) {
    let what = format!("the pod watch to see {replicas} pods of template {hash}");
    log.wait_for(&what, |log| {
        let (all, current) = (log.active.len(), log.active_with_hash(hash));
        if all == replicas as usize && current == all {
            Ok(())
        } else {
            Err(format!("{all} active pods, {current} of template {hash}"))
        }
    })
    .await;
}

/// Checks that a Deployment of `replicas` rolled out `templates` (template hashes, in
/// order) doing nothing twice: one ReplicaSet per template; their sizes never summed to
/// more than `replicas + surge` since the last reset; `replicas` pods created per template
/// (the pods of the template being rolled out are never deleted, so a pod created twice
/// would show), up to `recreated` more for the last one; no pod bound twice.
///
/// Active pods may briefly number more than `replicas + surge`: as upstream, the
/// Deployment controller grows the new ReplicaSet once the old one's size is lowered, which
/// can be before the ReplicaSet controller has deleted the old one's surplus pods. The
/// sizes bound and the pods-per-template count are what make "nothing twice" exact.
fn assert_done_once(
    pods: &PodLog,
    sets: &ReplicaSetLog,
    templates: &[String],
    (replicas, surge): (i32, i32),
    recreated: usize,
) {
    assert!(
        sets.peak <= replicas + surge,
        "replica sets sized {} during the rollout, at most {replicas} + {surge} allowed",
        sets.peak
    );
    let hashes: Vec<&String> = sets.per_hash.keys().collect();
    let mut expected: Vec<&String> = templates.iter().collect();
    expected.sort();
    assert_eq!(hashes, expected, "template hashes of the ReplicaSets");
    for (hash, uids) in &sets.per_hash {
        assert_eq!(uids.len(), 1, "ReplicaSets of template {hash}: {uids:?}");
    }
    let created = pods.created();
    let replicas = replicas as usize;
    for (i, hash) in templates.iter().enumerate() {
        let n = created.get(hash).copied().unwrap_or(0);
        let most = if i + 1 == templates.len() {
            replicas + recreated
        } else {
            replicas
        };
        assert!(
            (replicas..=most).contains(&n),
            "{n} pods created of template {hash}, {replicas} expected; all: {created:?}"
        );
    }
    let rebound = pods.rebound();
    assert!(rebound.is_empty(), "pods bound twice: {rebound:?}");
}

/// One stored object as listed through the API.
#[derive(Debug)]
struct Stored {
    /// `plural.group`.
    resource: String,
    uid: String,
    resource_version: u64,
    object: Value,
}

/// Every object of every kind the apiserver serves, by `plural.group namespace/name`.
type Snapshot = BTreeMap<String, Stored>;

async fn snapshot(client: &Client) -> Result<Snapshot, String> {
    let mut rpc = client.rpc();
    let mut all = Snapshot::new();
    for info in rkube_types::registry::all() {
        let resource = format!("{}.{}", info.plural, info.group);
        let list = rpc
            .list(ListRequest {
                resource: Some(ResourceRef::new(info.group, info.version, info.plural, "")),
                options: None,
            })
            .await
            .map_err(|e| format!("list {resource}: {e}"))?
            .into_inner();
        for item in list.items {
            let object: Value = serde_json::from_slice(&item).map_err(|e| e.to_string())?;
            let meta = &object["metadata"];
            let text = |field: &str| meta[field].as_str().unwrap_or_default().to_string();
            let key = format!("{resource} {}/{}", text("namespace"), text("name"));
            let resource_version = text("resourceVersion")
                .parse()
                .map_err(|e| format!("{key}: resourceVersion: {e}"))?;
            all.insert(
                key,
                Stored {
                    resource: resource.clone(),
                    uid: text("uid"),
                    resource_version,
                    object,
                },
            );
        }
    }
    Ok(all)
}

/// The objects of `before` that `must_survive` picks and `after` lost, replaced (another
/// uid), set back (an older resourceVersion), or changed without a new resourceVersion.
fn lost(
    before: &Snapshot,
    after: &Snapshot,
    must_survive: impl Fn(&Stored) -> bool,
) -> Vec<String> {
    let mut lost = Vec::new();
    for (key, old) in before.iter().filter(|(_, s)| must_survive(s)) {
        let Some(new) = after.get(key) else {
            lost.push(format!("{key} (rv {}) is gone", old.resource_version));
            continue;
        };
        if new.uid != old.uid {
            lost.push(format!("{key} has uid {} instead of {}", new.uid, old.uid));
        } else if new.resource_version < old.resource_version {
            lost.push(format!(
                "{key} went back from rv {} to {}",
                old.resource_version, new.resource_version
            ));
        } else if new.resource_version == old.resource_version && new.object != old.object {
            lost.push(format!(
                "{key} changed at the same rv {}: {} then {}",
                old.resource_version, old.object, new.object
            ));
        }
    }
    lost
}

/// Lists everything from a restarted apiserver (the first calls may meet the old
/// connection).
async fn snapshot_after_restart(client: &Client) -> Snapshot {
    eventually("lists from the restarted apiserver", WAIT, || {
        snapshot(client)
    })
    .await
}

fn pod_scheduled(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
        .map(|c| c.status.as_str())
}

/// Pods of the template being rolled out that may be created twice when the apiserver is
/// SIGKILLed with a pod creation in flight. A known bug of the ReplicaSet controller (as
/// of upstream's): it counts a create whose answer was lost as not made, and syncing again
/// before its informer, listing anew, has seen the pod that was made, it makes another,
/// then deletes the surplus. 0 once a create of unknown outcome keeps its expectation.
const LOST_CREATE_ANSWERS: usize = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apiserver_restarted_during_rollouts_loses_nothing_and_the_daemons_carry_on() {
    const REPLICAS: i32 = 30;
    let dir = tempfile::tempdir().expect("temp dir");
    let binary = daemon_binary("rkube-apiserver");
    let mut apiserver = ApiserverProcess::spawn(&binary, dir.path(), &[])
        .await
        .expect("the apiserver starts");
    let port = apiserver.addr.port();
    let kubeconfig = apiserver.kubeconfig();
    let client = apiserver.client().await.expect("client");
    let names = ["node-1".to_string(), "node-2".to_string()];
    let _nodes = FakeNodes::start(client.clone(), &names)
        .await
        .expect("fake nodes register");
    // Both as in production, leader election included: each must keep its Lease through
    // the apiserver's restarts (the default renew deadline, 10s, outlasts them).
    let mut scheduler = DaemonProcess::spawn(&daemon_binary("rkube-scheduler"), &kubeconfig, &[])
        .await
        .expect("the scheduler starts");
    let mut cm = controller_manager(&kubeconfig, &[]).await;
    let pids = (scheduler.pid(), cm.pid());
    let (pod_log, rs_log, deployments) = web_deployment(&client, REPLICAS).await;
    let v1 = rolled_out(&client, "web", REPLICAS).await;

    // 1. SIGTERM during a rollout stalled on pods no node takes yet: nothing moves, so
    // every object listed before must be listed after, unchanged or newer.
    rs_log.lock().reset_peak();
    deployments
        .patch(
            "web",
            &Patch::Merge(json!({"spec": {"template": {"spec": {
                "nodeSelector": {"rollout": "v2"},
                "containers": [{"name": "app", "image": "registry.local/app:v2"}],
            }}}})),
        )
        .await
        .expect("set image v2");
    // maxSurge 25% of 30 rounds up to 8, maxUnavailable down to 7: the old ReplicaSet
    // keeps 23 available pods, and the new one grows to the 38 allowed in all.
    let (surge, new_size, old_size) = (8, 15, 23);
    eventually(
        "the rollout stalled on unschedulable pods",
        WAIT,
        || async {
            let (_, current, old) = replica_sets(&client, "web").await?;
            let current = current.ok_or("no new ReplicaSet yet")?;
            let old: Vec<_> = old.iter().map(sizes).collect();
            // (spec, status, ready, available)
            if sizes(&current) != (new_size, new_size, 0, 0)
                || old != [(old_size, old_size, old_size, old_size)]
            {
                return Err(format!("new {:?}, old {old:?}", sizes(&current)));
            }
            let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .map_err(|e| e.to_string())?;
            let hash = label(&current.metadata, HASH_LABEL);
            let unschedulable = list
                .items
                .iter()
                .filter(|p| {
                    label(&p.metadata, HASH_LABEL) == hash && pod_scheduled(p) == Some("False")
                })
                .count();
            let terminating = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_some())
                .count();
            if unschedulable != new_size as usize || terminating > 0 {
                return Err(format!(
                    "{unschedulable} pods unschedulable, {terminating} terminating"
                ));
            }
            Ok(())
        },
    )
    .await;
    let before = snapshot(&client).await.expect("list everything");
    let status = apiserver.terminate().await.expect("SIGTERM the apiserver");
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    apiserver = ApiserverProcess::spawn_on_port(&binary, dir.path(), port, &[])
        .await
        .expect("the apiserver restarts on its port");
    let after = snapshot_after_restart(&client).await;
    let missing = lost(&before, &after, |_| true);
    assert!(
        missing.is_empty(),
        "{} of {} objects lost over a SIGTERM restart: {missing:#?}",
        missing.len(),
        before.len()
    );

    // The nodes now take the new pods: the rollout goes on, driven by the same processes.
    let nodes: Api<Node> = Api::all(client.clone());
    for name in &names {
        nodes
            .patch(
                name,
                &Patch::Merge(json!({"metadata": {"labels": {"rollout": "v2"}}})),
            )
            .await
            .expect("label node");
    }
    let v2 = rolled_out(&client, "web", REPLICAS).await;
    {
        let mut sets = rs_log.lock();
        let most = REPLICAS + surge;
        assert!(
            sets.peak <= most,
            "replica sets sized {} rolling out v2, at most {REPLICAS} + {surge} allowed",
            sets.peak
        );
        sets.reset_peak();
    }

    // 2. SIGKILL during a rollout that moves one pod at a time: what was acknowledged
    // before the kill is there after it, except pods of the old template, which the
    // rollout may have deleted in between.
    deployments
        .patch(
            "web",
            &Patch::Merge(json!({"spec": {
                "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {"spec": {"containers": [
                    {"name": "app", "image": "registry.local/app:v3"}]}},
            }})),
        )
        .await
        .expect("set image v3");
    let v3 = eventually("the one-by-one rollout under way", WAIT, || async {
        let (_, current, _) = replica_sets(&client, "web").await?;
        let current = current.ok_or("no new ReplicaSet yet")?;
        let ready = current
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        let hash = label(&current.metadata, HASH_LABEL);
        if hash != v2 && ready >= 3 {
            Ok(hash)
        } else {
            Err(format!("{ready} ready pods of template {hash}"))
        }
    })
    .await;
    let before = snapshot(&client).await.expect("list everything");
    apiserver.kill().await.expect("SIGKILL the apiserver");
    let still_old = before
        .values()
        .filter(|s| {
            s.resource == "pods." && s.object["metadata"]["labels"][HASH_LABEL] == v2.as_str()
        })
        .count();
    assert!(
        still_old > 0,
        "the rollout was done before the kill: the test missed the middle"
    );
    let apiserver = ApiserverProcess::spawn_on_port(&binary, dir.path(), port, &[])
        .await
        .expect("the apiserver restarts on its port");
    let after = snapshot_after_restart(&client).await;
    let missing = lost(&before, &after, |s| {
        s.resource != "pods." || s.object["metadata"]["labels"][HASH_LABEL] == v3.as_str()
    });
    assert!(
        missing.is_empty(),
        "{} of {} objects lost over a SIGKILL restart: {missing:#?}",
        missing.len(),
        before.len()
    );
    assert_eq!(rolled_out(&client, "web", REPLICAS).await, v3);

    assert_eq!(
        (scheduler.pid(), cm.pid()),
        pids,
        "the daemons were not restarted"
    );
    assert!(
        scheduler.is_running() && cm.is_running(),
        "the daemons are still running"
    );
    caught_up(&pod_log, &v3, REPLICAS).await;
    assert_done_once(
        &pod_log.lock(),
        &rs_log.lock(),
        &[v1, v2, v3],
        (REPLICAS, 1),
        LOST_CREATE_ANSWERS,
    );
    let status = apiserver.terminate().await.expect("SIGTERM the apiserver");
    assert!(status.success(), "clean exit on SIGTERM: {status}");
}
