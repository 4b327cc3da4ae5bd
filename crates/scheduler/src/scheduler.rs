//! The scheduling loop. One task owns the [`Snapshot`]: it applies informer updates to it as
//! they arrive, pops pods from the queue and runs a cycle for each, assumes the chosen node
//! at once (the pod counts on it from then on) and hands the binding to a background task.
//! A failed binding forgets the assumed pod and requeues it; a binding seen by the informer
//! confirms it. Preemption's evictions, status updates and Events are API calls made off
//! the loop as well.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use rkube_client::watcher::Event;
use rkube_client::{Api, Client, DeleteParams, EventType, Patch};
use rkube_types::Reason;
use rkube_types::selector::LabelSelector;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::cycle::{Failure, TieBreaker, schedule_pod};
use crate::events::EventSink;
use crate::framework::PostFilterResult;
use crate::metrics::{AttemptResult, Metrics};
use crate::node_info::PodInfo;
use crate::profile::Profile;
use crate::queue::{ClusterEvent, QueuedPod, SchedulingQueue};
use crate::snapshot::{DisruptionBudget, Snapshot};

/// The scheduler name pods get when they name none.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";
/// How many binding calls may be in flight.
pub const MAX_BINDINGS_IN_FLIGHT: usize = 256;
/// How long shutdown waits for the bindings in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// One informer update for the loop. Boxed: the update channel holds thousands of them.
#[derive(Debug)]
pub enum Update {
    /// A node event.
    Node(Box<Event<Node>>),
    /// A pod event.
    Pod(Box<Event<Pod>>),
    /// A namespace event (namespace labels, for affinity's namespace selectors).
    Namespace(Box<Event<Namespace>>),
    /// A PodDisruptionBudget event (for preemption).
    Budget(Box<Event<PodDisruptionBudget>>),
}

struct Bound {
    pod: QueuedPod,
    node: String,
    profile: String,
    result: Result<(), rkube_client::Error>,
    took: Duration,
}

/// Which informers have delivered their first full list.
#[derive(Debug, Default)]
struct Synced {
    nodes: bool,
    pods: bool,
    namespaces: bool,
    budgets: bool,
}

impl Synced {
    /// Whether every informer has listed: a cycle before that could miss the pods that
    /// anti-affinity, a namespace selector or a disruption budget must see.
    fn all(&self) -> bool {
        self.nodes && self.pods && self.namespaces && self.budgets
    }
}

/// The scheduling loop's state.
pub struct Scheduler {
    profiles: HashMap<String, Arc<Profile>>,
    snapshot: Snapshot,
    queue: Arc<SchedulingQueue>,
    /// Pods placed by this scheduler whose binding the informer has not confirmed yet:
    /// key → UID.
    assumed: HashMap<String, String>,
    /// The keys of those whose binding call has not answered yet.
    binding: HashSet<String>,
    /// Pods this scheduler is responsible for that wait for a node (in the queue or in a
    /// cycle).
    pending: HashSet<String>,
    /// Keys seen since an informer's relist began, per kind.
    relisting: HashMap<&'static str, HashSet<String>>,
    synced: Synced,
    next_start: usize,
    ties: TieBreaker,
    client: Client,
    events: EventSink,
    metrics: Arc<Metrics>,
    bound_tx: mpsc::UnboundedSender<Bound>,
    bound_rx: mpsc::UnboundedReceiver<Bound>,
    binding_slots: Arc<Semaphore>,
    /// True while this replica leads but its informers have not listed yet (`/readyz`).
    syncing: Arc<AtomicBool>,
}

impl Scheduler {
    /// A scheduler for `profiles` (each pod picks one by `spec.schedulerName`).
    pub fn new(
        profiles: Vec<Profile>,
        queue: Arc<SchedulingQueue>,
        client: Client,
        events: EventSink,
        metrics: Arc<Metrics>,
    ) -> Scheduler {
        let (bound_tx, bound_rx) = mpsc::unbounded_channel();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Scheduler {
            profiles: profiles
                .into_iter()
                .map(|p| (p.scheduler_name.clone(), Arc::new(p)))
                .collect(),
            snapshot: Snapshot::new(),
            queue,
            assumed: HashMap::new(),
            binding: HashSet::new(),
            pending: HashSet::new(),
            relisting: HashMap::new(),
            synced: Synced::default(),
            next_start: 0,
            ties: TieBreaker::new(seed),
            client,
            events,
            metrics,
            bound_tx,
            bound_rx,
            binding_slots: Arc::new(Semaphore::new(MAX_BINDINGS_IN_FLIGHT)),
            syncing: Arc::default(),
        }
    }

    /// Reports through `syncing` whether the loop is waiting for its informers' first
    /// lists (read by `/readyz`).
    pub fn with_readiness(mut self, syncing: Arc<AtomicBool>) -> Scheduler {
        self.syncing = syncing;
        self
    }

    /// Runs until `stop` turns true or the updates end. Updates are applied before each
    /// cycle, so a cycle sees every event that arrived before it; scheduling starts once
    /// nodes and pods have been listed.
    pub async fn run(
        mut self,
        mut updates: mpsc::Receiver<Update>,
        mut stop: watch::Receiver<bool>,
    ) {
        let queue = self.queue.clone();
        let mut flush_stop = stop.clone();
        let flusher = tokio::spawn(async move {
            queue
                .run_flusher(async move {
                    crate::stopped(&mut flush_stop).await;
                })
                .await;
        });
        let mut gauges = tokio::time::interval(Duration::from_secs(1));
        loop {
            while let Ok(update) = updates.try_recv() {
                self.apply(update);
            }
            while let Ok(bound) = self.bound_rx.try_recv() {
                self.finish_binding(bound);
            }
            // Scheduling waits for the informers, and for a binding slot: the bindings in
            // flight are the backpressure on the loop.
            self.syncing.store(!self.synced.all(), Ordering::Relaxed);
            let ready = self.synced.all() && self.binding_slots.available_permits() > 0;
            let queue = self.queue.clone();
            tokio::select! {
                biased;
                () = crate::stopped(&mut stop) => break,
                update = updates.recv() => match update {
                    Some(update) => self.apply(update),
                    None => break,
                },
                Some(bound) = self.bound_rx.recv() => self.finish_binding(bound),
                _ = gauges.tick() => {
                    let l = self.queue.lengths();
                    self.metrics.pending(l.active, l.backoff, l.unschedulable);
                }
                popped = queue.pop(), if ready => match popped {
                    Some(pod) => self.schedule_one(pod),
                    None => break,
                },
            }
        }
        self.syncing.store(false, Ordering::Relaxed);
        self.queue.close();
        flusher.abort();
        // Let the bindings in flight answer (up to a grace period) before the Lease goes to
        // another replica.
        let drained = tokio::time::timeout(
            SHUTDOWN_GRACE,
            self.binding_slots
                .acquire_many(MAX_BINDINGS_IN_FLIGHT as u32),
        )
        .await;
        if drained.is_err() {
            warn!(
                in_flight = self.binding.len(),
                "bindings still in flight at shutdown"
            );
        }
        info!("scheduling loop stopped");
    }

    /// Applies one informer update to the snapshot and the queue.
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Node(ev) => self.node_event(*ev),
            Update::Pod(ev) => self.pod_event(*ev),
            Update::Namespace(ev) => self.namespace_event(*ev),
            Update::Budget(ev) => self.budget_event(*ev),
        }
    }

    fn relist_seen(&mut self, kind: &'static str, key: &str) {
        if let Some(seen) = self.relisting.get_mut(kind) {
            seen.insert(key.to_string());
        }
    }

    fn node_event(&mut self, ev: Event<Node>) {
        match ev {
            Event::Init => {
                self.relisting.insert("nodes", HashSet::new());
            }
            Event::InitApply(node) => {
                let name = node.metadata.name.clone().unwrap_or_default();
                self.relist_seen("nodes", &name);
                self.node_applied(node);
            }
            Event::InitDone => {
                let seen = self.relisting.remove("nodes").unwrap_or_default();
                let gone: Vec<String> = self
                    .snapshot
                    .nodes()
                    .iter()
                    .filter(|n| !seen.contains(&n.name))
                    .map(|n| n.name.clone())
                    .collect();
                for name in gone {
                    self.snapshot.remove_node(&name);
                    self.queue.on_event(ClusterEvent::NodeDelete);
                }
                self.synced.nodes = true;
            }
            Event::Apply(node) => self.node_applied(node),
            Event::Delete(node) => {
                let name = node.metadata.name.unwrap_or_default();
                self.snapshot.remove_node(&name);
                self.queue.on_event(ClusterEvent::NodeDelete);
            }
        }
    }

    fn node_applied(&mut self, node: Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let before = self.snapshot.get(&name).map(|n| {
            (
                n.allocatable.clone(),
                n.labels.clone(),
                n.taints.clone(),
                n.unschedulable,
            )
        });
        self.snapshot.upsert_node(Arc::new(node));
        let Some(after) = self.snapshot.get(&name) else {
            return;
        };
        let event = match before {
            None => Some(ClusterEvent::NodeAdd),
            Some((allocatable, labels, taints, unschedulable)) => {
                let allocatable = allocatable != after.allocatable;
                let labels = labels != after.labels;
                let taints = taints != after.taints;
                let unschedulable = unschedulable != after.unschedulable;
                (allocatable || labels || taints || unschedulable).then_some(
                    ClusterEvent::NodeUpdate {
                        allocatable,
                        labels,
                        taints,
                        unschedulable,
                    },
                )
            }
        };
        if let Some(event) = event {
            self.queue.on_event(event);
        }
    }

    fn pod_event(&mut self, ev: Event<Pod>) {
        match ev {
            Event::Init => {
                self.relisting.insert("pods", HashSet::new());
            }
            Event::InitApply(pod) => {
                self.relist_seen("pods", &pod_key(&pod));
                self.pod_applied(pod);
            }
            Event::InitDone => {
                let seen = self.relisting.remove("pods").unwrap_or_default();
                let gone: Vec<String> = self
                    .snapshot
                    .pod_keys()
                    .chain(self.pending.iter())
                    .filter(|k| !seen.contains(*k) && !self.binding.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.pod_deleted(&key);
                }
                self.synced.pods = true;
            }
            Event::Apply(pod) => self.pod_applied(pod),
            Event::Delete(pod) => self.pod_deleted(&pod_key(&pod)),
        }
    }

    fn pod_applied(&mut self, pod: Pod) {
        let key = pod_key(&pod);
        let spec = pod.spec.as_ref();
        let node = spec.and_then(|s| s.node_name.clone()).unwrap_or_default();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let terminal = matches!(phase, Some("Succeeded" | "Failed"));
        if !node.is_empty() {
            if self.pending.remove(&key) {
                self.queue.delete(&key);
            }
            self.assumed.remove(&key);
            if terminal {
                // A finished pod holds no resources.
                if self.snapshot.remove_pod(&key).is_some() {
                    self.queue.on_event(ClusterEvent::AssignedPodDelete);
                }
                return;
            }
            let info = Arc::new(PodInfo::new(Arc::new(pod)));
            let event = match self.snapshot.pod(&key) {
                None => Some(ClusterEvent::AssignedPodAdd),
                Some(old) if old.labels != info.labels || old.requests != info.requests => {
                    Some(ClusterEvent::AssignedPodUpdate)
                }
                Some(_) => None,
            };
            self.snapshot.add_pod(info, &node);
            if let Some(event) = event {
                self.queue.on_event(event);
            }
            return;
        }
        let ours = spec
            .map(|s| {
                s.scheduler_name
                    .as_deref()
                    .unwrap_or(DEFAULT_SCHEDULER_NAME)
            })
            .is_some_and(|name| self.profiles.contains_key(name));
        let gated = spec
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_some_and(|g| !g.is_empty());
        if terminal || !ours || gated || pod.metadata.deletion_timestamp.is_some() {
            if self.pending.remove(&key) {
                self.queue.delete(&key);
            }
            return;
        }
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        match self.assumed.get(&key) {
            // Its binding is in flight; the informer will confirm it.
            Some(assumed_uid) if assumed_uid == uid => return,
            // Deleted and created again under the same name: the binding (which names the
            // old UID) will be refused; the new pod is a new pending pod.
            Some(_) => self.forget(&key),
            None => {}
        }
        let info = Arc::new(PodInfo::new(Arc::new(pod)));
        if self.pending.insert(key) {
            self.queue.add(info);
        } else {
            self.queue.update(info);
        }
    }

    fn pod_deleted(&mut self, key: &str) {
        if self.pending.remove(key) {
            self.queue.delete(key);
        }
        self.assumed.remove(key);
        if self.snapshot.remove_pod(key).is_some() {
            self.queue.on_event(ClusterEvent::AssignedPodDelete);
        }
    }

    fn namespace_event(&mut self, ev: Event<Namespace>) {
        match ev {
            Event::Init => {
                self.relisting.insert("namespaces", HashSet::new());
            }
            Event::InitApply(ns) | Event::Apply(ns) => {
                let name = ns.metadata.name.unwrap_or_default();
                self.relist_seen("namespaces", &name);
                self.snapshot
                    .set_namespace(&name, ns.metadata.labels.unwrap_or_default());
            }
            Event::InitDone => {
                let seen = self.relisting.remove("namespaces").unwrap_or_default();
                let gone: Vec<String> = self
                    .snapshot
                    .namespace_labels()
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for name in gone {
                    self.snapshot.remove_namespace(&name);
                }
                self.synced.namespaces = true;
            }
            Event::Delete(ns) => {
                self.snapshot
                    .remove_namespace(&ns.metadata.name.unwrap_or_default());
            }
        }
    }

    fn budget_event(&mut self, ev: Event<PodDisruptionBudget>) {
        match ev {
            Event::Init => {
                self.relisting.insert("budgets", HashSet::new());
            }
            Event::InitApply(pdb) | Event::Apply(pdb) => {
                let namespace = pdb.metadata.namespace.clone().unwrap_or_default();
                let key = format!(
                    "{namespace}/{}",
                    pdb.metadata.name.as_deref().unwrap_or_default()
                );
                self.relist_seen("budgets", &key);
                let selector = pdb
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .and_then(|s| LabelSelector::from_api(s).ok());
                let disruptions_allowed = pdb
                    .status
                    .as_ref()
                    .map(|s| s.disruptions_allowed)
                    .unwrap_or(0);
                self.snapshot.set_disruption_budget(DisruptionBudget {
                    key,
                    namespace,
                    selector,
                    disruptions_allowed,
                });
            }
            Event::InitDone => {
                let seen = self.relisting.remove("budgets").unwrap_or_default();
                let gone: Vec<String> = self
                    .snapshot
                    .disruption_budgets()
                    .filter(|b| !seen.contains(&b.key))
                    .map(|b| b.key.clone())
                    .collect();
                for key in gone {
                    self.snapshot.remove_disruption_budget(&key);
                }
                self.synced.budgets = true;
            }
            Event::Delete(pdb) => {
                let key = format!(
                    "{}/{}",
                    pdb.metadata.namespace.as_deref().unwrap_or_default(),
                    pdb.metadata.name.as_deref().unwrap_or_default()
                );
                self.snapshot.remove_disruption_budget(&key);
            }
        }
    }

    /// One scheduling cycle for `qp`.
    fn schedule_one(&mut self, mut qp: QueuedPod) {
        let pod = qp.info.clone();
        let profile_name = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.clone())
            .unwrap_or_else(|| DEFAULT_SCHEDULER_NAME.to_string());
        let Some(profile) = self.profiles.get(&profile_name).cloned() else {
            self.queue.done(&pod.key);
            return;
        };
        let started = Instant::now();
        match schedule_pod(
            &profile,
            &self.snapshot,
            &pod,
            self.next_start,
            &mut self.ties,
        ) {
            Ok(placement) => {
                self.next_start = placement.next_start;
                let node = placement.node;
                let mut state = placement.state;
                self.snapshot.add_pod(pod.clone(), &node);
                self.assumed.insert(pod.key.clone(), pod.uid.clone());
                // The pod counts on the node from now on: pods waiting for it (affinity,
                // spread) may fit now.
                self.queue.on_event(ClusterEvent::AssignedPodAdd);
                let mut status = profile.run_reserve(&mut state, &pod, &node);
                if status.is_success() {
                    status = profile.run_permit(&state, &pod, &node);
                }
                if status.is_success() {
                    status = profile.run_pre_bind(&state, &pod, &node);
                }
                if status.is_success() {
                    status = profile.bind_claimed(&pod);
                }
                if !status.is_success() {
                    profile.run_unreserve(&mut state, &pod, &node);
                    self.forget(&pod.key);
                    let result = if status.is_rejected() {
                        AttemptResult::Unschedulable
                    } else {
                        AttemptResult::Error
                    };
                    self.metrics
                        .attempt(result, &profile_name, started.elapsed().as_secs_f64());
                    self.events.pod(
                        &pod.pod,
                        EventType::Warning,
                        "FailedScheduling",
                        status.to_string(),
                    );
                    if status.is_rejected() {
                        qp.unschedulable_plugins = [status.plugin].into_iter().collect();
                        self.queue.add_unschedulable(qp);
                    } else {
                        self.queue.add_backoff(qp);
                    }
                    self.queue.done(&pod.key);
                    return;
                }
                self.metrics.attempt(
                    AttemptResult::Scheduled,
                    &profile_name,
                    started.elapsed().as_secs_f64(),
                );
                debug!(pod = %pod.key, node = %node, evaluated = placement.evaluated,
                    feasible = placement.feasible, "pod placed");
                self.bind(qp, node, profile_name);
            }
            Err(Failure::Fit(fit)) => {
                let mut message = fit.message();
                let mut nominated = None;
                if !profile.post_filter.is_empty() && fit.pre_filter.is_none() {
                    let (result, status) =
                        profile.run_post_filter(&fit.state, &pod, &self.snapshot, &fit.statuses);
                    match result.filter(|r| r.nominated_node.is_some()) {
                        Some(result) => {
                            self.metrics.preemption(Some(result.victims.len()));
                            nominated = result.nominated_node.clone();
                            self.preempt(&pod, result);
                        }
                        None => {
                            self.metrics.preemption(None);
                            if !status.is_success() && !status.reasons.is_empty() {
                                message.push(' ');
                                message.push_str(&status.to_string());
                            }
                        }
                    }
                }
                self.metrics.attempt(
                    AttemptResult::Unschedulable,
                    &profile_name,
                    started.elapsed().as_secs_f64(),
                );
                debug!(pod = %pod.key, %message, "pod unschedulable");
                self.events.pod(
                    &pod.pod,
                    EventType::Warning,
                    "FailedScheduling",
                    message.clone(),
                );
                self.mark_unschedulable(&pod, &message, nominated.as_deref());
                qp.unschedulable_plugins = fit.plugins();
                self.queue.add_unschedulable(qp);
                self.queue.done(&pod.key);
            }
            Err(Failure::Error(status)) => {
                warn!(pod = %pod.key, plugin = status.plugin, error = %status, "scheduling failed");
                self.metrics.attempt(
                    AttemptResult::Error,
                    &profile_name,
                    started.elapsed().as_secs_f64(),
                );
                self.events.pod(
                    &pod.pod,
                    EventType::Warning,
                    "FailedScheduling",
                    format!("running {:?} plugin: {status}", status.plugin),
                );
                self.queue.add_backoff(qp);
                self.queue.done(&pod.key);
            }
        }
    }

    /// Forgets an assumed pod that will not be bound.
    fn forget(&mut self, key: &str) {
        if self.assumed.remove(key).is_some() && self.snapshot.remove_pod(key).is_some() {
            self.queue.on_event(ClusterEvent::AssignedPodDelete);
        }
    }

    /// Posts the binding in the background; the outcome comes back to the loop. The loop
    /// pops a pod only while a binding slot is free, so the slot is there.
    fn bind(&mut self, qp: QueuedPod, node: String, profile: String) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &qp.info.namespace);
        let slot = self.binding_slots.clone().try_acquire_owned().ok();
        let tx = self.bound_tx.clone();
        self.binding.insert(qp.info.key.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let started = Instant::now();
            let uid = Some(qp.info.uid.as_str()).filter(|u| !u.is_empty());
            let result = api.bind(&qp.info.name, uid, &node).await.map(|_| ());
            let _ = tx.send(Bound {
                pod: qp,
                node,
                profile,
                result,
                took: started.elapsed(),
            });
        });
    }

    fn finish_binding(&mut self, bound: Bound) {
        let Bound {
            pod: qp,
            node,
            profile,
            result,
            took,
        } = bound;
        let pod = qp.info.clone();
        self.binding.remove(&pod.key);
        self.metrics.binding(result.is_ok(), took.as_secs_f64());
        match result {
            Ok(()) => {
                if let Some(since) = qp.initial_attempt {
                    self.metrics
                        .pod_scheduled(qp.attempts, since.elapsed().as_secs_f64());
                }
                self.events.pod(
                    &pod.pod,
                    EventType::Normal,
                    "Scheduled",
                    format!("Successfully assigned {} to {node}", pod.key),
                );
                if let Some(p) = self.profiles.get(&profile) {
                    p.run_post_bind(&pod, &node);
                }
                self.queue.done(&pod.key);
            }
            Err(error)
                if matches!(
                    error.reason(),
                    None | Some(
                        Reason::ServiceUnavailable | Reason::Timeout | Reason::InternalError
                    )
                ) =>
            {
                // No answer (timeout, connection lost): the binding may have happened. Keep
                // the pod assumed, so its node stays charged, and let the informer say
                // what became of it; if it is still pending then, it is tried again.
                warn!(pod = %pod.key, node = %node, %error, "binding outcome unknown");
                if self.assumed.get(&pod.key) == Some(&pod.uid) {
                    self.assumed.remove(&pod.key);
                }
                if self.pending.contains(&pod.key) {
                    self.queue.add_backoff(qp);
                } else {
                    self.queue.done(&pod.key);
                }
            }
            Err(error) => {
                // A definite refusal: forget the placement. A pod still pending (refused
                // for a stale write, or deleted and created again meanwhile) goes back to
                // the queue; one bound by someone else or deleted has left it.
                if self.assumed.get(&pod.key) == Some(&pod.uid) {
                    self.forget(&pod.key);
                }
                if error.is_not_found() {
                    debug!(pod = %pod.key, %error, "binding refused");
                    self.queue.done(&pod.key);
                    return;
                }
                debug!(pod = %pod.key, node = %node, %error, "binding failed");
                self.events.pod(
                    &pod.pod,
                    EventType::Warning,
                    "FailedScheduling",
                    format!("Binding rejected: {error}"),
                );
                if self.pending.contains(&pod.key) {
                    self.queue.add_backoff(qp);
                } else {
                    self.queue.done(&pod.key);
                }
            }
        }
    }

    /// Sets the pod's `PodScheduled` condition to False/Unschedulable with `message` (and
    /// `status.nominatedNodeName`), unless it already says so.
    fn mark_unschedulable(&self, pod: &PodInfo, message: &str, nominated: Option<&str>) {
        let status = pod.pod.status.as_ref();
        let current = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|list| list.iter().find(|c| c.type_ == "PodScheduled"));
        let unchanged = current.is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(message)
        });
        let nominated_now = status.and_then(|s| s.nominated_node_name.as_deref());
        if unchanged && (nominated.is_none() || nominated == nominated_now) {
            return;
        }
        let transition = match current {
            Some(c) if c.status == "False" => c
                .last_transition_time
                .as_ref()
                .map(|t| rfc3339(t.0))
                .unwrap_or_else(now),
            _ => now(),
        };
        let list = with_condition(
            pod,
            json!({
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastProbeTime": null,
                "lastTransitionTime": transition,
            }),
        );
        // The resourceVersion makes the patch a precondition: a pod that changed meanwhile
        // (bound by the next cycle, say) is left alone rather than marked unschedulable.
        let mut patch = json!({
            "metadata": {"resourceVersion": pod.pod.metadata.resource_version},
            "status": {"conditions": list},
        });
        if let Some(node) = nominated {
            patch["status"]["nominatedNodeName"] = node.into();
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let name = pod.name.clone();
        tokio::spawn(async move {
            if let Err(error) = api.patch_status(&name, &Patch::Merge(patch)).await
                && !error.is_not_found()
                && !error.is_conflict()
            {
                warn!(pod = %name, %error, "updating the PodScheduled condition failed");
            }
        });
    }

    /// Deletes the victims preemption chose and tells them why: an Event, and the
    /// `DisruptionTarget` condition (reason `PreemptionByScheduler`) that Job failure
    /// policies read, set before the deletion as upstream does. Victims already being
    /// deleted are left alone.
    fn preempt(&self, pod: &PodInfo, result: PostFilterResult) {
        let node = result.nominated_node.unwrap_or_default();
        info!(pod = %pod.key, node = %node, victims = result.victims.len(), "preempting");
        let scheduler_name = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.clone())
            .unwrap_or_else(|| DEFAULT_SCHEDULER_NAME.to_string());
        for victim in result.victims {
            if victim.pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            self.events.pod(
                &victim.pod,
                EventType::Normal,
                "Preempted",
                format!("Preempted by pod {} on node {node}", pod.uid),
            );
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &victim.namespace);
            let name = victim.name.clone();
            let uid = victim.uid.clone();
            let condition = disruption_target(&victim, &scheduler_name);
            tokio::spawn(async move {
                if let Err(error) = api.patch_status(&name, &Patch::Merge(condition)).await {
                    if error.is_not_found() {
                        return;
                    }
                    warn!(pod = %name, %error, "marking a preemption victim failed");
                }
                let params = DeleteParams {
                    preconditions_uid: Some(uid),
                    ..Default::default()
                };
                if let Err(error) = api.delete(&name, &params).await
                    && !error.is_not_found()
                {
                    warn!(pod = %name, %error, "deleting a preemption victim failed");
                }
            });
        }
    }

    /// The snapshot (for tests).
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }
}

/// The status patch that adds `DisruptionTarget=True` (reason `PreemptionByScheduler`) to a
/// victim's conditions, keeping the others.
fn disruption_target(victim: &PodInfo, scheduler_name: &str) -> serde_json::Value {
    let list = with_condition(
        victim,
        json!({
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "PreemptionByScheduler",
            "message": format!("{scheduler_name}: preempting to accommodate a higher priority pod"),
            "lastTransitionTime": now(),
        }),
    );
    json!({"status": {"conditions": list}})
}

/// The pod's conditions with `condition` in place of any of the same type: the whole list
/// a merge patch of `status.conditions` must carry (merge patches replace lists).
fn with_condition(pod: &PodInfo, condition: serde_json::Value) -> Vec<serde_json::Value> {
    let mut list: Vec<serde_json::Value> = pod
        .pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| condition["type"] != c.type_.as_str())
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    list.push(condition);
    list
}

/// A timestamp as Kubernetes writes it (RFC 3339, seconds, UTC).
fn rfc3339(t: k8s_openapi::jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Now, as Kubernetes writes it.
fn now() -> String {
    rfc3339(k8s_openapi::jiff::Timestamp::now())
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pod;

    #[test]
    fn victims_are_marked_as_disruption_targets_keeping_other_conditions() {
        let mut p = pod("victim").build();
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            conditions: Some(vec![k8s_openapi::api::core::v1::PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let patch = disruption_target(&PodInfo::new(Arc::new(p)), "default-scheduler");
        let conditions = patch["status"]["conditions"].as_array().expect("list");
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[0]["type"], "Ready");
        assert_eq!(conditions[1]["type"], "DisruptionTarget");
        assert_eq!(conditions[1]["reason"], "PreemptionByScheduler");
        assert_eq!(
            conditions[1]["message"],
            "default-scheduler: preempting to accommodate a higher priority pod"
        );
    }
}
