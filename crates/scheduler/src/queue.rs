//! The scheduling queue: where pending pods wait for a scheduling cycle, in the shape of
//! upstream's `PriorityQueue` (`pkg/scheduler/backend/queue/scheduling_queue.go`) with
//! three sub-queues. *Active* is a heap in QueueSort order that [`SchedulingQueue::pop`]
//! takes from; *backoff* holds pods that failed recently, until their per-pod backoff
//! (`initial * 2^(attempts-1)`, capped) has passed; *unschedulable* holds pods that no node
//! fitted, until a cluster event that one of the plugins that rejected them cares about
//! (node added, pod deleted, …) might have changed the answer, or until they have waited
//! five minutes. A popped pod is *in flight* until the scheduling loop hands it back
//! ([`SchedulingQueue::add_unschedulable`], [`SchedulingQueue::add_backoff`]) or reports it
//! bound ([`SchedulingQueue::done`]); events that arrive meanwhile are remembered, so a pod
//! rejected just before the event that would have helped it goes to backoff rather than
//! waiting for the next event.
//!
//! Every pod known to the queue has exactly one entry in a key → entry map saying where it
//! is; the sub-queues are indexes over that map. The active heap is ordered by the
//! QueueSort plugin's `less`, which `std`'s `BinaryHeap` cannot take, so it is a small heap
//! of its own with lazy deletion: an update or delete leaves the old heap item behind, and
//! the item is recognised as stale by its generation when it reaches the top.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::debug;

use crate::node_info::PodInfo;
use crate::plugins::{
    default_preemption, inter_pod_affinity, node_affinity, node_ports, node_resources,
    node_unschedulable, pod_topology_spread, taint_toleration,
};

#[cfg(test)]
mod tests;

/// How long a pod may stay unschedulable before it is retried even without an event
/// (upstream's `DefaultPodMaxInUnschedulablePodsDuration`).
pub const POD_MAX_IN_UNSCHEDULABLE_PODS_DURATION: Duration = Duration::from_secs(5 * 60);
/// The default `podInitialBackoffSeconds` of KubeSchedulerConfiguration.
pub const DEFAULT_POD_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// The default `podMaxBackoffSeconds` of KubeSchedulerConfiguration.
pub const DEFAULT_POD_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often [`SchedulingQueue::run_flusher`] flushes (upstream flushes backoff every
/// second and unschedulable pods every 30 s; the unschedulable flush here is cheap because
/// that sub-queue is ordered by arrival, so both run every second).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// A pending pod with its queueing history, as upstream's `QueuedPodInfo`.
#[derive(Debug, Clone)]
pub struct QueuedPod {
    /// The pod.
    pub info: Arc<PodInfo>,
    /// Scheduling attempts so far; [`SchedulingQueue::pop`] increments it.
    pub attempts: u32,
    /// Monotonic sequence number of the pod's first arrival, the tie-breaker of QueueSort.
    pub added: u64,
    /// When the pod was first popped, for the end-to-end scheduling latency metric.
    pub initial_attempt: Option<Instant>,
    /// The plugins that rejected the pod in its last cycle; they decide which cluster
    /// events may make it schedulable. Cleared by [`SchedulingQueue::pop`].
    pub unschedulable_plugins: HashSet<&'static str>,
}

impl QueuedPod {
    /// `namespace/name`.
    pub fn key(&self) -> &str {
        &self.info.key
    }
}

/// A change in the cluster that may make unschedulable pods schedulable (upstream's
/// `ClusterEvent`, reduced to what the in-tree plugins register for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterEvent {
    /// A node was added.
    NodeAdd,
    /// A node changed; each flag says whether that part changed.
    NodeUpdate {
        /// `status.allocatable` changed.
        allocatable: bool,
        /// `metadata.labels` changed.
        labels: bool,
        /// `spec.taints` changed.
        taints: bool,
        /// `spec.unschedulable` changed.
        unschedulable: bool,
    },
    /// A node was deleted.
    NodeDelete,
    /// A pod was bound (or an already bound pod appeared).
    AssignedPodAdd,
    /// A bound pod changed (labels, or requests after an in-place resize).
    AssignedPodUpdate,
    /// A bound pod was deleted or terminated, freeing its resources.
    AssignedPodDelete,
    /// Everything may have changed: every unschedulable pod is moved.
    Forced,
}

/// The QueueSort plugin's order: `less(a, a_added, b, b_added)` is true when `a` is to be
/// scheduled before `b`.
pub type Less = Arc<dyn Fn(&PodInfo, u64, &PodInfo, u64) -> bool + Send + Sync>;

/// How many pods each sub-queue holds, for metrics (`scheduler_pending_pods{queue}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueLengths {
    /// Pods ready to be popped.
    pub active: usize,
    /// Pods waiting for their backoff to expire.
    pub backoff: usize,
    /// Pods waiting for an event (or five minutes).
    pub unschedulable: usize,
    /// Pods popped and not yet handed back or reported done.
    pub in_flight: usize,
}

/// The queue of pending pods. Cheap to clone: clones share the queue.
#[derive(Clone)]
pub struct SchedulingQueue {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Woken when active gains a pod and on close.
    notify: Notify,
}

impl fmt::Debug for SchedulingQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchedulingQueue")
            .field("lengths", &self.lengths())
            .finish()
    }
}

impl SchedulingQueue {
    /// An empty queue ordered by `less`, with per-pod backoff from `initial_backoff`
    /// doubling up to `max_backoff`.
    pub fn new(less: Less, initial_backoff: Duration, max_backoff: Duration) -> Self {
        SchedulingQueue {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner::new(less, initial_backoff, max_backoff)),
                notify: Notify::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The queue's invariants hold between statements that cannot panic, so a poisoned
        // lock still guards a consistent queue.
        self.shared
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the queue and wakes a waiting [`SchedulingQueue::pop`] when active grew.
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.lock();
        let before = inner.active_len;
        let out = f(&mut inner);
        let grew = inner.active_len > before;
        drop(inner);
        if grew {
            self.shared.notify.notify_one();
        }
        out
    }

    /// Adds a new pending pod to active. A pod the queue already knows is updated instead.
    pub fn add(&self, pod: Arc<PodInfo>) {
        self.with(|q| q.add(pod, Instant::now()));
    }

    /// A pending pod changed: the new object replaces the old one wherever the pod is. An
    /// unschedulable pod whose spec or metadata changed (not just its status) moves to
    /// backoff, or to active when its backoff has passed, as upstream does; an in-flight
    /// pod so changed goes to backoff instead of unschedulable if its cycle fails. A pod
    /// the queue does not know is added to active, as upstream does.
    pub fn update(&self, pod: Arc<PodInfo>) {
        self.with(|q| q.update(pod, Instant::now()));
    }

    /// Forgets the pod `key` (`namespace/name`): it was deleted or bound by someone else.
    /// An in-flight pod is dropped when its cycle hands it back.
    pub fn delete(&self, key: &str) {
        self.with(|q| q.delete(key));
    }

    /// Waits for the head of active and takes it; `None` once the queue is closed. The pod
    /// is in flight until handed back with [`SchedulingQueue::add_unschedulable`] or
    /// [`SchedulingQueue::add_backoff`], or reported with [`SchedulingQueue::done`]. Its
    /// `attempts` is incremented and its `unschedulable_plugins` cleared. Cancel-safe.
    pub async fn pop(&self) -> Option<QueuedPod> {
        loop {
            let mut notified = pin!(self.shared.notify.notified());
            // Registered before looking, so an add or close between the look and the
            // await is not missed.
            notified.as_mut().enable();
            {
                let mut inner = self.lock();
                if inner.closed {
                    return None;
                }
                if let Some(pod) = inner.pop_active(Instant::now()) {
                    let more = inner.active_len > 0;
                    drop(inner);
                    if more {
                        // One notification per batch of adds: pass it on to the next
                        // waiter while pods remain.
                        self.shared.notify.notify_one();
                    }
                    return Some(pod);
                }
            }
            notified.await;
        }
    }

    /// Takes the head of active without waiting.
    pub fn try_pop(&self) -> Option<QueuedPod> {
        let mut inner = self.lock();
        if inner.closed {
            return None;
        }
        inner.pop_active(Instant::now())
    }

    /// Hands back a pod whose cycle found no node, with `unschedulable_plugins` set to the
    /// plugins that rejected it. It waits in unschedulable for an event one of those
    /// plugins cares about, unless such an event (or a change of the pod itself) happened
    /// while it was in flight, or no plugin is named: then it goes to backoff.
    pub fn add_unschedulable(&self, pod: QueuedPod) {
        self.with(|q| q.add_unschedulable(pod, Instant::now()));
    }

    /// Hands back a pod whose cycle failed with an error or whose binding failed: it goes
    /// to backoff.
    pub fn add_backoff(&self, pod: QueuedPod) {
        self.with(|q| q.add_backoff(pod, Instant::now()));
    }

    /// The cycle of the in-flight pod `key` finished with the pod bound: the queue forgets
    /// it. Harmless after [`SchedulingQueue::add_unschedulable`] or
    /// [`SchedulingQueue::add_backoff`] (which end the flight themselves); call those
    /// first on failure, since a pod handed back after `done` is accepted as new.
    pub fn done(&self, key: &str) {
        self.with(|q| q.done(key));
    }

    /// Moves the unschedulable pods that a plugin interested in `event` rejected to
    /// backoff, or to active when their backoff has passed, and remembers the event for
    /// the pods in flight. Which plugin cares about which event is [`event_interest`].
    pub fn on_event(&self, event: ClusterEvent) {
        self.with(|q| q.on_event(event, Instant::now()));
    }

    /// Moves backoff pods whose backoff expired by `now` to active, and pods unschedulable
    /// for longer than [`POD_MAX_IN_UNSCHEDULABLE_PODS_DURATION`] to active (or backoff).
    pub fn flush(&self, now: Instant) {
        self.with(|q| q.flush(now));
    }

    /// Calls [`SchedulingQueue::flush`] every [`FLUSH_INTERVAL`] until `shutdown`
    /// completes or the queue is closed.
    pub async fn run_flusher(&self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = pin!(shutdown);
        let mut ticks = tokio::time::interval(FLUSH_INTERVAL);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                now = ticks.tick() => {
                    if self.lock().closed {
                        return;
                    }
                    self.flush(now);
                }
            }
        }
    }

    /// Closes the queue: every waiting and later [`SchedulingQueue::pop`] returns `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.shared.notify.notify_waiters();
    }

    /// How many pods each sub-queue holds.
    pub fn lengths(&self) -> QueueLengths {
        self.lock().lengths()
    }

    /// Whether the pod `key` is queued or in flight (and not deleted).
    pub fn contains(&self, key: &str) -> bool {
        self.lock().contains(key)
    }
}

/// The plugins whose rejections an event may resolve, as a set of plugin bits
/// (upstream's `EventsToRegister`, simplified):
///
/// | event | plugins |
/// |---|---|
/// | NodeAdd, Forced | every plugin, including out-of-tree ones |
/// | NodeUpdate, allocatable | NodeResourcesFit, NodeResourcesBalancedAllocation |
/// | NodeUpdate, labels | NodeAffinity, InterPodAffinity, PodTopologySpread |
/// | NodeUpdate, taints | TaintToleration, NodeUnschedulable, PodTopologySpread (`nodeTaintsPolicy`) |
/// | NodeUpdate, unschedulable | NodeUnschedulable |
/// | NodeDelete | PodTopologySpread |
/// | AssignedPodAdd | InterPodAffinity, PodTopologySpread |
/// | AssignedPodUpdate | InterPodAffinity, PodTopologySpread, NodeResourcesFit |
/// | AssignedPodDelete | NodeResourcesFit, NodePorts, InterPodAffinity, PodTopologySpread, DefaultPreemption |
///
/// A plugin is named in a pod's `unschedulable_plugins` whichever extension point
/// (PreFilter or Filter) rejected it, so PreFilter-level rejections move on the same
/// events.
pub fn event_interest(event: ClusterEvent) -> PluginSet {
    PluginSet(match event {
        ClusterEvent::NodeAdd | ClusterEvent::Forced => ALL,
        ClusterEvent::NodeUpdate {
            allocatable,
            labels,
            taints,
            unschedulable,
        } => {
            let mut m = 0;
            if allocatable {
                m |= FIT | BALANCED;
            }
            if labels {
                m |= NODE_AFFINITY | INTER_POD_AFFINITY | TOPOLOGY_SPREAD;
            }
            if taints {
                m |= TAINT_TOLERATION | NODE_UNSCHEDULABLE | TOPOLOGY_SPREAD;
            }
            if unschedulable {
                m |= NODE_UNSCHEDULABLE;
            }
            m
        }
        ClusterEvent::NodeDelete => TOPOLOGY_SPREAD,
        ClusterEvent::AssignedPodAdd => INTER_POD_AFFINITY | TOPOLOGY_SPREAD,
        ClusterEvent::AssignedPodUpdate => INTER_POD_AFFINITY | TOPOLOGY_SPREAD | FIT,
        ClusterEvent::AssignedPodDelete => {
            FIT | NODE_PORTS | INTER_POD_AFFINITY | TOPOLOGY_SPREAD | PREEMPTION
        }
    })
}

/// A set of plugins as bits, one per in-tree plugin that can reject a pod and one for all
/// others (which only NodeAdd and Forced move).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PluginSet(u32);

impl PluginSet {
    /// The set of `plugins`.
    pub fn of<'a>(plugins: impl IntoIterator<Item = &'a str>) -> PluginSet {
        PluginSet(plugins.into_iter().fold(0, |m, p| m | plugin_bit(p)))
    }

    /// Whether the sets share a plugin.
    pub fn intersects(self, other: PluginSet) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn bits(self) -> impl Iterator<Item = usize> {
        (0..PLUGIN_BITS).filter(move |b| self.0 & (1 << b) != 0)
    }
}

const FIT: u32 = 1 << 0;
const BALANCED: u32 = 1 << 1;
const NODE_AFFINITY: u32 = 1 << 2;
const INTER_POD_AFFINITY: u32 = 1 << 3;
const TOPOLOGY_SPREAD: u32 = 1 << 4;
const TAINT_TOLERATION: u32 = 1 << 5;
const NODE_UNSCHEDULABLE: u32 = 1 << 6;
const NODE_PORTS: u32 = 1 << 7;
const PREEMPTION: u32 = 1 << 8;
/// Any other plugin (NodeName, out-of-tree plugins).
const OTHER: u32 = 1 << 9;
const PLUGIN_BITS: usize = 10;
const ALL: u32 = (1 << PLUGIN_BITS) - 1;

fn plugin_bit(name: &str) -> u32 {
    const KNOWN: [(&str, u32); 9] = [
        (node_resources::NAME, FIT),
        (node_resources::BALANCED_NAME, BALANCED),
        (node_affinity::NAME, NODE_AFFINITY),
        (inter_pod_affinity::NAME, INTER_POD_AFFINITY),
        (pod_topology_spread::NAME, TOPOLOGY_SPREAD),
        (taint_toleration::NAME, TAINT_TOLERATION),
        (node_unschedulable::NAME, NODE_UNSCHEDULABLE),
        (node_ports::NAME, NODE_PORTS),
        (default_preemption::NAME, PREEMPTION),
    ];
    KNOWN
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(OTHER, |(_, bit)| *bit)
}

/// The backoff after `attempts` attempts: `initial * 2^(attempts-1)` capped at `max`
/// (upstream's `calculateBackoffDuration`); zero before the first attempt.
pub fn backoff_duration(attempts: u32, initial: Duration, max: Duration) -> Duration {
    if attempts == 0 {
        return Duration::ZERO;
    }
    let mut d = initial;
    for _ in 1..attempts {
        if d >= max.saturating_sub(d) {
            return max;
        }
        d += d;
    }
    d.min(max)
}

/// Whether an update of a pending pod may change its scheduling: anything but its status
/// and bookkeeping metadata (upstream's `isPodUpdated`). Status-only updates, such as the
/// scheduler's own `PodScheduled` condition, must not requeue the pod, or it would loop.
fn is_pod_updated(old: &Pod, new: &Pod) -> bool {
    if std::ptr::eq(old, new) {
        return false;
    }
    let (o, n) = (&old.metadata, &new.metadata);
    old.spec != new.spec
        || o.labels != n.labels
        || o.annotations != n.annotations
        || o.owner_references != n.owner_references
        || o.deletion_timestamp != n.deletion_timestamp
        || o.deletion_grace_period_seconds != n.deletion_grace_period_seconds
        || o.uid != n.uid
}

/// Where a known pod is.
#[derive(Debug)]
enum Slot {
    Active(QueuedPod),
    Backoff {
        pod: QueuedPod,
        expiry: Instant,
    },
    Unschedulable {
        pod: QueuedPod,
        /// When it was rejected (the last failure, from which backoff counts).
        since: Instant,
        plugins: PluginSet,
    },
    InFlight(InFlight),
}

/// What the queue remembers of a popped pod.
#[derive(Debug)]
struct InFlight {
    /// The latest object, which replaces the popped one when the pod is handed back.
    info: Arc<PodInfo>,
    /// The plugins interested in the events seen since the pop.
    events: PluginSet,
    /// The pod itself changed since the pop.
    updated: bool,
    /// The pod was deleted since the pop: drop it when handed back.
    deleted: bool,
}

#[derive(Debug)]
struct Entry {
    /// Identifies this placement of the pod in the sub-queue indexes.
    generation: u64,
    slot: Slot,
}

struct HeapItem {
    info: Arc<PodInfo>,
    added: u64,
    generation: u64,
}

struct Inner {
    less: Less,
    initial_backoff: Duration,
    max_backoff: Duration,
    pods: HashMap<String, Entry>,
    /// Binary heap in `less` order; may hold stale items (see the module docs).
    active: Vec<HeapItem>,
    active_len: usize,
    /// Backoff pods by (expiry, generation).
    backoff: BTreeMap<(Instant, u64), String>,
    /// Unschedulable pods by (since, generation): oldest first for the five-minute flush.
    unschedulable: BTreeMap<(Instant, u64), String>,
    /// For each plugin bit, the unschedulable pods that plugin rejected, so an event only
    /// looks at the pods it may help.
    by_plugin: [BTreeSet<(Instant, u64)>; PLUGIN_BITS],
    in_flight: HashSet<String>,
    next_added: u64,
    next_generation: u64,
    closed: bool,
}

impl Inner {
    fn new(less: Less, initial_backoff: Duration, max_backoff: Duration) -> Inner {
        Inner {
            less,
            initial_backoff,
            max_backoff,
            pods: HashMap::new(),
            active: Vec::new(),
            active_len: 0,
            backoff: BTreeMap::new(),
            unschedulable: BTreeMap::new(),
            by_plugin: Default::default(),
            in_flight: HashSet::new(),
            next_added: 0,
            next_generation: 0,
            closed: false,
        }
    }

    fn lengths(&self) -> QueueLengths {
        QueueLengths {
            active: self.active_len,
            backoff: self.backoff.len(),
            unschedulable: self.unschedulable.len(),
            in_flight: self.in_flight.len(),
        }
    }

    fn contains(&self, key: &str) -> bool {
        self.pods
            .get(key)
            .is_some_and(|e| !matches!(&e.slot, Slot::InFlight(f) if f.deleted))
    }

    fn backoff_expiry(&self, attempts: u32, last_failure: Instant) -> Instant {
        last_failure + backoff_duration(attempts, self.initial_backoff, self.max_backoff)
    }

    fn add(&mut self, info: Arc<PodInfo>, now: Instant) {
        if self.pods.contains_key(&info.key) {
            self.update(info, now);
            return;
        }
        let added = self.next_added;
        self.next_added += 1;
        self.put_active(QueuedPod {
            info,
            attempts: 0,
            added,
            initial_attempt: None,
            unschedulable_plugins: HashSet::new(),
        });
    }

    fn update(&mut self, info: Arc<PodInfo>, now: Instant) {
        let Some(entry) = self.pods.get_mut(&info.key) else {
            self.add(info, now);
            return;
        };
        match &mut entry.slot {
            Slot::Active(_) => {
                // Re-pushed so the heap sees the new object (QueueSort may read it).
                if let Some(Slot::Active(mut pod)) = self.take(&info.key) {
                    pod.info = info;
                    self.put_active(pod);
                }
            }
            Slot::Backoff { pod, .. } => pod.info = info,
            Slot::Unschedulable { pod, since, .. } => {
                if !is_pod_updated(&pod.info.pod, &info.pod) {
                    pod.info = info;
                    return;
                }
                let since = *since;
                if let Some(Slot::Unschedulable { mut pod, .. }) = self.take(&info.key) {
                    debug!(pod = %info.key, "unschedulable pod updated, requeueing");
                    pod.info = info;
                    self.requeue(pod, since, now);
                }
            }
            Slot::InFlight(f) => {
                if f.deleted {
                    // Deleted and recreated under the same name while the old one was in
                    // flight: the new pod takes the old one's place when it comes back,
                    // and is retried rather than parked.
                    f.deleted = false;
                    f.updated = true;
                } else {
                    f.updated |= is_pod_updated(&f.info.pod, &info.pod);
                }
                f.info = info;
            }
        }
    }

    fn delete(&mut self, key: &str) {
        match self.pods.get_mut(key).map(|e| &mut e.slot) {
            Some(Slot::InFlight(f)) => f.deleted = true,
            Some(_) => {
                self.take(key);
            }
            None => {}
        }
    }

    fn pop_active(&mut self, now: Instant) -> Option<QueuedPod> {
        while let Some(item) = self.heap_pop() {
            let key = &item.info.key;
            let current = self
                .pods
                .get_mut(key)
                .filter(|e| e.generation == item.generation && matches!(e.slot, Slot::Active(_)));
            let Some(entry) = current else {
                continue;
            };
            let flight = Slot::InFlight(InFlight {
                info: item.info.clone(),
                events: PluginSet::default(),
                updated: false,
                deleted: false,
            });
            let Slot::Active(mut pod) = std::mem::replace(&mut entry.slot, flight) else {
                continue;
            };
            self.active_len -= 1;
            self.in_flight.insert(key.clone());
            pod.attempts = pod.attempts.saturating_add(1);
            pod.initial_attempt.get_or_insert(now);
            pod.unschedulable_plugins.clear();
            return Some(pod);
        }
        None
    }

    /// Ends the flight of a handed-back pod: the pod with its latest object and what
    /// happened meanwhile, or `None` when it is to be dropped.
    fn land(&mut self, mut pod: QueuedPod) -> Option<(QueuedPod, Option<InFlight>)> {
        match self.pods.get(&pod.info.key).map(|e| &e.slot) {
            Some(Slot::InFlight(_)) => {
                let Some(Slot::InFlight(f)) = self.take(&pod.info.key) else {
                    return None;
                };
                if f.deleted {
                    debug!(pod = %pod.info.key, "pod deleted while in flight, dropping it");
                    return None;
                }
                pod.info = f.info.clone();
                Some((pod, Some(f)))
            }
            Some(_) => {
                debug!(pod = %pod.info.key, "pod handed back is already queued");
                None
            }
            None => Some((pod, None)),
        }
    }

    fn add_unschedulable(&mut self, pod: QueuedPod, now: Instant) {
        let Some((pod, flight)) = self.land(pod) else {
            return;
        };
        let plugins = PluginSet::of(pod.unschedulable_plugins.iter().copied());
        let moved = flight
            .as_ref()
            .is_some_and(|f| f.updated || f.events.intersects(plugins));
        if plugins.is_empty() || moved {
            // No plugin to wait on (an unexpected failure), or what it waits on already
            // happened: retry after backoff (upstream's moveRequestCycle check).
            let expiry = self.backoff_expiry(pod.attempts, now);
            self.put_backoff(pod, expiry);
        } else {
            self.put_unschedulable(pod, now, plugins);
        }
    }

    fn add_backoff(&mut self, pod: QueuedPod, now: Instant) {
        if let Some((pod, _)) = self.land(pod) {
            let expiry = self.backoff_expiry(pod.attempts, now);
            self.put_backoff(pod, expiry);
        }
    }

    fn done(&mut self, key: &str) {
        if matches!(self.pods.get(key).map(|e| &e.slot), Some(Slot::InFlight(_))) {
            self.take(key);
        }
    }

    fn on_event(&mut self, event: ClusterEvent, now: Instant) {
        let interest = event_interest(event);
        for key in &self.in_flight {
            if let Some(Entry {
                slot: Slot::InFlight(f),
                ..
            }) = self.pods.get_mut(key)
            {
                f.events.0 |= interest.0;
            }
        }
        let mut ids: Vec<(Instant, u64)> = interest
            .bits()
            .flat_map(|b| self.by_plugin[b].iter().copied())
            .collect();
        if ids.is_empty() {
            return;
        }
        // A pod rejected by several interested plugins is listed once per plugin.
        ids.sort_unstable();
        ids.dedup();
        debug!(?event, pods = ids.len(), "moving unschedulable pods");
        for id in ids {
            self.requeue_unschedulable(id, now);
        }
    }

    fn flush(&mut self, now: Instant) {
        while let Some(entry) = self.backoff.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            if let Some(Slot::Backoff { pod, .. }) = self.take(&key) {
                self.put_active(pod);
            }
        }
        let Some(cutoff) = now.checked_sub(POD_MAX_IN_UNSCHEDULABLE_PODS_DURATION) else {
            return;
        };
        while let Some((&id, _)) = self.unschedulable.first_key_value() {
            if id.0 >= cutoff {
                break;
            }
            self.requeue_unschedulable(id, now);
        }
    }

    /// Moves the unschedulable pod `id` to backoff or active.
    fn requeue_unschedulable(&mut self, id: (Instant, u64), now: Instant) {
        let Some(key) = self.unschedulable.get(&id).cloned() else {
            return;
        };
        if let Some(Slot::Unschedulable { pod, since, .. }) = self.take(&key) {
            self.requeue(pod, since, now);
        }
    }

    /// Puts a pod that failed at `last_failure` in backoff, or in active when its backoff
    /// has passed (upstream's `isPodBackingoff` check).
    fn requeue(&mut self, pod: QueuedPod, last_failure: Instant, now: Instant) {
        let expiry = self.backoff_expiry(pod.attempts, last_failure);
        if expiry > now {
            self.put_backoff(pod, expiry);
        } else {
            self.put_active(pod);
        }
    }

    fn generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    fn put_active(&mut self, pod: QueuedPod) {
        let generation = self.generation();
        self.heap_push(HeapItem {
            info: pod.info.clone(),
            added: pod.added,
            generation,
        });
        self.active_len += 1;
        self.pods.insert(
            pod.info.key.clone(),
            Entry {
                generation,
                slot: Slot::Active(pod),
            },
        );
    }

    fn put_backoff(&mut self, pod: QueuedPod, expiry: Instant) {
        let generation = self.generation();
        self.backoff
            .insert((expiry, generation), pod.info.key.clone());
        self.pods.insert(
            pod.info.key.clone(),
            Entry {
                generation,
                slot: Slot::Backoff { pod, expiry },
            },
        );
    }

    fn put_unschedulable(&mut self, pod: QueuedPod, since: Instant, plugins: PluginSet) {
        let generation = self.generation();
        let id = (since, generation);
        self.unschedulable.insert(id, pod.info.key.clone());
        for b in plugins.bits() {
            self.by_plugin[b].insert(id);
        }
        self.pods.insert(
            pod.info.key.clone(),
            Entry {
                generation,
                slot: Slot::Unschedulable {
                    pod,
                    since,
                    plugins,
                },
            },
        );
    }

    /// Removes the pod `key` from the map and the sub-queue indexes.
    fn take(&mut self, key: &str) -> Option<Slot> {
        let entry = self.pods.remove(key)?;
        match &entry.slot {
            // The heap item stays behind, stale; pop_active skips it.
            Slot::Active(_) => {
                self.active_len -= 1;
                self.compact_active();
            }
            Slot::Backoff { expiry, .. } => {
                self.backoff.remove(&(*expiry, entry.generation));
            }
            Slot::Unschedulable { since, plugins, .. } => {
                let id = (*since, entry.generation);
                self.unschedulable.remove(&id);
                for b in plugins.bits() {
                    self.by_plugin[b].remove(&id);
                }
            }
            Slot::InFlight(_) => {
                self.in_flight.remove(key);
            }
        }
        Some(entry.slot)
    }

    /// Drops stale heap items once they outnumber the live ones, so a pod updated many
    /// times while active does not grow the heap without bound.
    fn compact_active(&mut self) {
        let stale = self.active.len() - self.active_len;
        if stale <= 64 || stale <= self.active_len {
            return;
        }
        let pods = &self.pods;
        self.active.retain(|item| {
            pods.get(&item.info.key).is_some_and(|e| {
                e.generation == item.generation && matches!(e.slot, Slot::Active(_))
            })
        });
        for i in (0..self.active.len() / 2).rev() {
            self.sift_down(i);
        }
    }

    fn before(&self, a: &HeapItem, b: &HeapItem) -> bool {
        (self.less)(&a.info, a.added, &b.info, b.added)
    }

    fn heap_push(&mut self, item: HeapItem) {
        self.active.push(item);
        let mut i = self.active.len() - 1;
        while i > 0 {
            let parent = (i - 1) / 2;
            if !self.before(&self.active[i], &self.active[parent]) {
                break;
            }
            self.active.swap(i, parent);
            i = parent;
        }
    }

    fn heap_pop(&mut self) -> Option<HeapItem> {
        if self.active.is_empty() {
            return None;
        }
        let top = self.active.swap_remove(0);
        self.sift_down(0);
        Some(top)
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.active.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut first = i;
            if l < n && self.before(&self.active[l], &self.active[first]) {
                first = l;
            }
            if r < n && self.before(&self.active[r], &self.active[first]) {
                first = r;
            }
            if first == i {
                return;
            }
            self.active.swap(i, first);
            i = first;
        }
    }

    /// Checks that every known pod is in exactly the index its slot says, and nothing
    /// else is in any index.
    #[cfg(test)]
    fn check_invariants(&self) {
        let live_heap: Vec<&HeapItem> = self
            .active
            .iter()
            .filter(|item| {
                self.pods.get(&item.info.key).is_some_and(|e| {
                    e.generation == item.generation && matches!(e.slot, Slot::Active(_))
                })
            })
            .collect();
        let mut by_plugin_total = 0;
        let (mut active, mut backoff, mut unsched, mut flying) = (0, 0, 0, 0);
        for (key, e) in &self.pods {
            match &e.slot {
                Slot::Active(pod) => {
                    active += 1;
                    assert_eq!(&pod.info.key, key);
                    let items = live_heap.iter().filter(|i| &i.info.key == key).count();
                    assert_eq!(items, 1, "{key} has {items} live heap items");
                }
                Slot::Backoff { pod, expiry } => {
                    backoff += 1;
                    assert_eq!(&pod.info.key, key);
                    assert_eq!(self.backoff.get(&(*expiry, e.generation)), Some(key));
                }
                Slot::Unschedulable {
                    pod,
                    since,
                    plugins,
                } => {
                    unsched += 1;
                    assert_eq!(&pod.info.key, key);
                    let id = (*since, e.generation);
                    assert_eq!(self.unschedulable.get(&id), Some(key));
                    assert!(
                        !plugins.is_empty(),
                        "{key} is unschedulable without plugins"
                    );
                    for b in plugins.bits() {
                        assert!(self.by_plugin[b].contains(&id));
                        by_plugin_total += 1;
                    }
                }
                Slot::InFlight(f) => {
                    flying += 1;
                    assert_eq!(&f.info.key, key);
                    assert!(self.in_flight.contains(key));
                }
            }
        }
        assert_eq!(live_heap.len(), active, "live heap items");
        assert_eq!(self.active_len, active, "active length");
        assert_eq!(self.backoff.len(), backoff, "backoff length");
        assert_eq!(self.unschedulable.len(), unsched, "unschedulable length");
        assert_eq!(self.in_flight.len(), flying, "in-flight length");
        let indexed: usize = self.by_plugin.iter().map(BTreeSet::len).sum();
        assert_eq!(indexed, by_plugin_total, "plugin index size");
    }
}
