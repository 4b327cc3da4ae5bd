//! The DaemonSet controller (upstream's `daemonset-controller`, `pkg/controller/daemon`):
//! one pod of each DaemonSet on every eligible node.
//!
//! Each reconcile of a DaemonSet:
//! 1. claims its ControllerRevisions and finds (or creates, or renumbers) the one that holds
//!    the current template — its hash labels new pods `controller-revision-hash`;
//! 2. claims its pods and groups them by the node they are for (`nodeName`, or the node
//!    their required affinity pins them to);
//! 3. per node ([`placement`]): creates a pod where one should run and none does, deletes
//!    pods where none should run, excess pods, succeeded pods and failed pods (with a
//!    per-node backoff so a kubelet that keeps failing pods is not hot-looped);
//! 4. once every creation and deletion it asked for has been observed, runs the rolling
//!    update ([`update`]) — `OnDelete` leaves old pods alone;
//! 5. prunes old revisions to `revisionHistoryLimit`, and writes the status when it differs.
//!
//! New pods get the daemon tolerations, a required node affinity on `metadata.name` for
//! their node (the scheduler binds them there) and the labels `controller-revision-hash`
//! and `pod-template-generation`. rkube's apiserver does not maintain the deprecated
//! `deprecated.daemonset.template.generation` annotation, so the label falls back to
//! `metadata.generation`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod, PodTemplateSpec};
use rkube_client::{Action, Client, EventType, ObjectRef, Recorder, WorkQueue, object_reference};
use rkube_types::selector::LabelSelector;
use tokio::time::Instant;
use tracing::debug;

use crate::clock::Clock;
use crate::context::Context;
use crate::controllers::history::CONTROLLER_REVISION_HASH_LABEL;
use crate::controllers::{Running, run_queue};
use crate::error::{Error, Result};
use crate::expectations::{Expectations, earliest};
use crate::informer::{Change, Informer};
use crate::ownership::{Claimant, controller_ref};
use crate::pods;

pub mod placement;
mod revisions;
mod sync;
#[cfg(test)]
mod tests;
pub mod update;

use placement::NodeContext;
use update::{RollingContext, TEMPLATE_GENERATION_LABEL};

/// The controller's name, as upstream (also the events' source).
pub const NAME: &str = "daemonset-controller";

/// The annotation upstream's apiserver keeps with the DaemonSet's template generation.
pub const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";

/// At most this many creations or deletions per reconcile (upstream's `BurstReplicas`).
const BURST_REPLICAS: usize = 250;

/// The first delay before a failed daemon pod on a node is replaced again.
const FAILED_POD_BACKOFF: Duration = Duration::from_secs(1);
/// The longest such delay.
const FAILED_POD_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);

/// Subscribes the controller to the informers and returns its workers.
pub fn start(ctx: &Context) -> Running {
    let controller = Arc::new(DaemonSetController {
        client: ctx.client.clone(),
        clock: ctx.clock.clone(),
        daemonsets: ctx.informer(),
        pods: ctx.informer(),
        nodes: ctx.informer(),
        revisions: ctx.informer(),
        expectations: Expectations::new(),
        queue: WorkQueue::new(),
        recorder: ctx.recorder(NAME),
        backoff: Mutex::default(),
    });
    controller.subscribe();
    let reconciler = controller.clone();
    run_queue(ctx, NAME, controller.queue.clone(), move |key| {
        let c = reconciler.clone();
        async move { c.reconcile(key).await }
    })
}

/// The controller's state: caches, expectations, queue and the failed-pod backoff.
struct DaemonSetController {
    client: Client,
    clock: Clock,
    daemonsets: Informer<DaemonSet>,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    revisions: Informer<ControllerRevision>,
    expectations: Expectations,
    queue: WorkQueue<ObjectRef>,
    recorder: Recorder,
    /// `<ds uid>/<observed generation>/<node>` → (current delay, last failure).
    backoff: Mutex<HashMap<String, (Duration, Instant)>>,
}

fn key_of(ds: &DaemonSet) -> ObjectRef {
    ObjectRef::from_obj(ds)
}

fn selector_of(ds: &DaemonSet) -> Option<LabelSelector> {
    LabelSelector::from_api(&ds.spec.as_ref()?.selector).ok()
}

fn labels_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

fn min_ready_seconds(ds: &DaemonSet) -> i32 {
    ds.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

/// The DaemonSet's template generation: upstream's deprecated annotation, or
/// `metadata.generation` (see the module docs).
pub fn template_generation(ds: &DaemonSet) -> Option<i64> {
    match ds
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TEMPLATE_GENERATION_ANNOTATION))
    {
        Some(value) => value.parse().ok(),
        None => ds.metadata.generation,
    }
}

/// The template new pods are made from (upstream's `CreatePodTemplate`): the DaemonSet's,
/// with the daemon tolerations and the generation and hash labels.
pub fn pod_template(ds: &DaemonSet, hash: &str) -> PodTemplateSpec {
    let mut template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let spec = template.spec.get_or_insert_with(Default::default);
    placement::add_daemon_tolerations(spec);
    let labels = template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(BTreeMap::new);
    if let Some(generation) = template_generation(ds) {
        labels.insert(TEMPLATE_GENERATION_LABEL.into(), generation.to_string());
    }
    if !hash.is_empty() {
        labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), hash.into());
    }
    template
}

/// Whether a selector selects every pod (upstream refuses such DaemonSets).
fn selects_everything(ds: &DaemonSet) -> bool {
    ds.spec.as_ref().is_none_or(|s| {
        s.selector
            .match_labels
            .as_ref()
            .is_none_or(|l| l.is_empty())
            && s.selector
                .match_expressions
                .as_ref()
                .is_none_or(|e| e.is_empty())
    })
}

/// Groups claimed pods by the node they are for, leaving out pods that ended and are being
/// deleted (unless `include_deleted_terminal`).
fn node_to_pods(
    pods: &[Arc<Pod>],
    include_deleted_terminal: bool,
) -> BTreeMap<String, Vec<Arc<Pod>>> {
    let mut map: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for pod in pods {
        if !include_deleted_terminal
            && pods::is_terminated(pod)
            && pod.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        if let Some(node) = placement::target_node(pod) {
            map.entry(node.to_string()).or_default().push(pod.clone());
        }
    }
    map
}

impl DaemonSetController {
    fn subscribe(self: &Arc<Self>) {
        let this = self.clone();
        self.daemonsets.subscribe(move |change| {
            this.queue.add(key_of(change.object()));
        });
        let this = self.clone();
        self.pods.subscribe(move |change| this.on_pod(change));
        let this = self.clone();
        self.nodes.subscribe(move |change| this.on_node(change));
        let this = self.clone();
        self.revisions
            .subscribe(move |change| this.on_revision(change));
    }

    /// The DaemonSet a controller reference names, if cached with that uid.
    fn resolve(
        &self,
        namespace: &str,
        owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    ) -> Option<Arc<DaemonSet>> {
        if owner.kind != "DaemonSet" {
            return None;
        }
        self.daemonsets
            .get(namespace, &owner.name)
            .filter(|ds| ds.metadata.uid.as_deref() == Some(owner.uid.as_str()))
    }

    /// DaemonSets of `namespace` whose selector matches `labels` (for orphans).
    fn selecting(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Vec<Arc<DaemonSet>> {
        self.daemonsets.filter_namespace(namespace, |ds| {
            !selects_everything(ds) && selector_of(ds).is_some_and(|s| s.matches(labels))
        })
    }

    fn on_pod(&self, change: &Change<Pod>) {
        let pod = change.object();
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let deleting = match change {
            Change::Deleted(_) => true,
            Change::Added(p) => p.metadata.deletion_timestamp.is_some(),
            Change::Updated { old, new } => {
                if old.metadata.resource_version == new.metadata.resource_version {
                    return;
                }
                new.metadata.deletion_timestamp.is_some()
            }
        };
        if deleting {
            if let Some(ds) = controller_ref(&pod.metadata).and_then(|r| self.resolve(namespace, r))
            {
                self.expectations
                    .deletion_observed(&key_of(&ds).to_string(), 1);
                self.queue.add(key_of(&ds));
            }
            return;
        }
        if let Change::Updated { old, .. } = change {
            let old_ref = controller_ref(&old.metadata);
            if old_ref != controller_ref(&pod.metadata)
                && let Some(ds) = old_ref.and_then(|r| self.resolve(namespace, r))
            {
                self.queue.add(key_of(&ds));
            }
        }
        match controller_ref(&pod.metadata) {
            Some(owner) => {
                let Some(ds) = self.resolve(namespace, owner) else {
                    return;
                };
                let key = key_of(&ds);
                match change {
                    Change::Added(_) => self.expectations.creation_observed(&key.to_string(), 1),
                    Change::Updated { old, .. } => {
                        let min_ready = min_ready_seconds(&ds);
                        if min_ready > 0 && !pods::is_ready(old) && pods::is_ready(pod) {
                            let after = Duration::from_secs(u64::from(min_ready.unsigned_abs()));
                            self.queue
                                .add_after(key.clone(), after + Duration::from_secs(1));
                        }
                    }
                    Change::Deleted(_) => {}
                }
                self.queue.add(key);
            }
            None => {
                let relevant = match change {
                    Change::Updated { old, new } => {
                        old.metadata.labels != new.metadata.labels
                            || controller_ref(&old.metadata).is_some()
                    }
                    _ => true,
                };
                if relevant {
                    for ds in self.selecting(namespace, &labels_of(&pod.metadata)) {
                        self.queue.add(key_of(&ds));
                    }
                }
            }
        }
    }

    fn on_node(&self, change: &Change<Node>) {
        for ds in self.daemonsets.list() {
            let now = placement::node_should_run(change.object(), &ds);
            let relevant = match change {
                Change::Added(_) => now.should_run,
                Change::Updated { old, .. } => placement::node_should_run(old, &ds) != now,
                // Status counts the node no more.
                Change::Deleted(_) => true,
            };
            if relevant {
                self.queue.add(key_of(&ds));
            }
        }
    }

    fn on_revision(&self, change: &Change<ControllerRevision>) {
        let rev = change.object();
        let namespace = rev.metadata.namespace.as_deref().unwrap_or_default();
        if let Change::Updated { old, new } = change {
            if old.metadata.resource_version == new.metadata.resource_version {
                return;
            }
            let old_ref = controller_ref(&old.metadata);
            if old_ref != controller_ref(&new.metadata)
                && let Some(ds) = old_ref.and_then(|r| self.resolve(namespace, r))
            {
                self.queue.add(key_of(&ds));
            }
        }
        match controller_ref(&rev.metadata) {
            Some(owner) => {
                if let Some(ds) = self.resolve(namespace, owner) {
                    self.queue.add(key_of(&ds));
                }
            }
            None if !matches!(change, Change::Deleted(_)) => {
                for ds in self.selecting(namespace, &labels_of(&rev.metadata)) {
                    self.queue.add(key_of(&ds));
                }
            }
            None => {}
        }
    }

    async fn reconcile(&self, key: ObjectRef) -> Result<Action> {
        let namespace = key.namespace.clone().unwrap_or_default();
        let expectations_key = key.to_string();
        let Some(ds) = self.daemonsets.get(&namespace, &key.name) else {
            debug!(daemonset = %key, "daemonset has been deleted");
            self.expectations.forget(&expectations_key);
            return Ok(Action::Done);
        };
        if selects_everything(&ds) {
            self.recorder
                .publish(
                    &object_reference(&*ds),
                    EventType::Warning,
                    "SelectingAll",
                    "This daemon set is selecting all pods. A non-empty selector is required.",
                )
                .await;
            return Ok(Action::Done);
        }
        let selector = LabelSelector::from_api(
            &ds.spec
                .as_ref()
                .map(|s| s.selector.clone())
                .unwrap_or_default(),
        )
        .map_err(|e| Error::Invalid(format!("daemonset {key}: invalid selector: {e}")))?;
        // Status of a DaemonSet being deleted cannot be trusted (its revisions may be gone).
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }

        let (current, old) = self.construct_history(&ds, &selector).await?;
        let hash = current
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(CONTROLLER_REVISION_HASH_LABEL))
            .cloned()
            .unwrap_or_default();
        let claimed = Claimant::new(&*ds, selector)
            .claim(&self.client, self.pods.list_namespace(&namespace))
            .await?;
        let nodes = self.nodes.list();

        if !self.expectations.satisfied(&expectations_key) {
            // Only the status: this generation has not been acted on.
            let requeue = self
                .update_status(&ds, &nodes, &claimed, &hash, false)
                .await?;
            let requeue = earliest(requeue, self.expectations.expires_in(&expectations_key));
            return Ok(requeue.map_or(Action::Done, Action::RequeueAfter));
        }

        let mut requeue = self.manage(&ds, &nodes, &claimed, &hash).await?;
        if self.expectations.satisfied(&expectations_key) && update::is_rolling_update(&ds) {
            self.rolling_update(&ds, &nodes, &claimed, &hash).await?;
        }
        self.cleanup_history(&ds, &claimed, old).await?;
        let status_requeue = self
            .update_status(&ds, &nodes, &claimed, &hash, true)
            .await?;
        requeue = earliest(requeue, status_requeue);
        Ok(requeue.map_or(Action::Done, Action::RequeueAfter))
    }

    /// Whether the failed-pod backoff of `key` holds at `now`; how long it still holds.
    fn in_backoff(&self, key: &str, now: Instant) -> Option<Duration> {
        let backoff = self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
        let (delay, last) = backoff.get(key)?;
        let elapsed = now.saturating_duration_since(*last);
        (elapsed < *delay).then(|| *delay - elapsed)
    }

    /// Records one more failure of `key`: doubles its delay.
    fn back_off(&self, key: &str, now: Instant) {
        let mut backoff = self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
        backoff
            .entry(key.to_string())
            .and_modify(|(delay, last)| {
                *delay = (*delay * 2).min(FAILED_POD_BACKOFF_MAX);
                *last = now;
            })
            .or_insert((FAILED_POD_BACKOFF, now));
        // Forget entries idle for twice the longest delay, so the map does not grow forever.
        backoff.retain(|_, (_, last)| {
            now.saturating_duration_since(*last) < 2 * FAILED_POD_BACKOFF_MAX
        });
    }

    /// Creates and deletes daemon pods so each eligible node runs one (upstream's `manage`);
    /// returns when to look again for failed pods held by the backoff.
    async fn manage(
        &self,
        ds: &DaemonSet,
        nodes: &[Arc<Node>],
        claimed: &[Arc<Pod>],
        hash: &str,
    ) -> Result<Option<Duration>> {
        let by_node = node_to_pods(claimed, false);
        let surge = update::allows_surge(ds);
        let now = self.clock.now();
        let min_ready = min_ready_seconds(ds);
        let uid = ds.metadata.uid.as_deref().unwrap_or_default();
        let generation = ds
            .status
            .as_ref()
            .and_then(|s| s.observed_generation)
            .unwrap_or(0);
        let mut create_on = Vec::new();
        let mut delete = Vec::new();
        let mut requeue = None;
        let mut node_names = HashSet::new();
        for node in nodes {
            let node_name = node.metadata.name.clone().unwrap_or_default();
            let pods = by_node
                .get(&node_name)
                .map(Vec::as_slice)
                .unwrap_or_default();
            node_names.insert(node_name.clone());
            let actions = placement::pods_should_be_on_node(
                NodeContext {
                    eligibility: placement::node_should_run(node, ds),
                    surge,
                    hash,
                    min_ready_seconds: min_ready,
                    now,
                },
                pods,
            );
            if actions.create {
                create_on.push(node_name.clone());
            }
            for pod in &actions.succeeded {
                let message = format!(
                    "Found succeeded daemon pod {}/{} on node {node_name}, will try to delete it",
                    pod.metadata.namespace.as_deref().unwrap_or_default(),
                    pod.metadata.name.as_deref().unwrap_or_default()
                );
                self.recorder
                    .publish(
                        &object_reference(ds),
                        EventType::Normal,
                        "SucceededDaemonPod",
                        &message,
                    )
                    .await;
            }
            delete.extend(actions.delete);
            for pod in actions.failed {
                let backoff_key = format!("{uid}/{generation}/{node_name}");
                let instant = Instant::now();
                if let Some(left) = self.in_backoff(&backoff_key, instant) {
                    debug!(pod = %ObjectRef::from_obj(&*pod), node = %node_name, delay = ?left, "failed daemon pod held by backoff");
                    requeue = earliest(requeue, Some(left));
                    continue;
                }
                self.back_off(&backoff_key, instant);
                let message = format!(
                    "Found failed daemon pod {}/{} on node {node_name}, will try to kill it",
                    pod.metadata.namespace.as_deref().unwrap_or_default(),
                    pod.metadata.name.as_deref().unwrap_or_default()
                );
                self.recorder
                    .publish(
                        &object_reference(ds),
                        EventType::Warning,
                        "FailedDaemonPod",
                        &message,
                    )
                    .await;
                delete.push(pod);
            }
        }
        // Unscheduled pods for nodes that are gone: nothing else would delete them.
        for (node, pods) in &by_node {
            if !node_names.contains(node) {
                delete.extend(
                    pods.iter()
                        .filter(|p| {
                            placement::target_node(p).is_some()
                                && p.spec
                                    .as_ref()
                                    .and_then(|s| s.node_name.as_deref())
                                    .is_none_or(str::is_empty)
                        })
                        .cloned(),
                );
            }
        }
        self.sync_nodes(ds, delete, create_on, hash).await?;
        Ok(requeue)
    }

    /// One round of the rolling update.
    async fn rolling_update(
        &self,
        ds: &DaemonSet,
        nodes: &[Arc<Node>],
        claimed: &[Arc<Pod>],
        hash: &str,
    ) -> Result<()> {
        let mut by_node = node_to_pods(claimed, false);
        let mut eligible = HashSet::new();
        for node in nodes {
            if placement::node_should_run(node, ds).should_run {
                let name = node.metadata.name.clone().unwrap_or_default();
                by_node.entry(name.clone()).or_default();
                eligible.insert(name);
            }
        }
        let desired = i32::try_from(eligible.len()).unwrap_or(i32::MAX);
        let (max_surge, max_unavailable) = update::surge_and_unavailable(ds, desired)
            .map_err(|e| Error::Invalid(format!("daemonset {}: {e}", key_of(ds))))?;
        let actions = update::rolling_update(
            RollingContext {
                max_surge,
                max_unavailable,
                desired,
                hash,
                generation: template_generation(ds),
                min_ready_seconds: min_ready_seconds(ds),
                now: self.clock.now(),
            },
            &by_node,
            |node| eligible.contains(node),
        );
        if actions.delete.is_empty() && actions.create_on.is_empty() {
            return Ok(());
        }
        let by_name: HashMap<&str, &Arc<Pod>> = claimed
            .iter()
            .map(|p| (p.metadata.name.as_deref().unwrap_or_default(), p))
            .collect();
        let delete = actions
            .delete
            .iter()
            .filter_map(|n| by_name.get(n.as_str()).map(|p| (*p).clone()))
            .collect();
        self.sync_nodes(ds, delete, actions.create_on, hash).await
    }
}

/// Whether a create failed because the namespace is being deleted (then every creation
/// fails the same way, and it is no error of the controller).
pub(crate) fn is_namespace_terminating(e: &rkube_client::Error) -> bool {
    e.api_error().is_some_and(|a| {
        a.reason == rkube_types::Reason::Forbidden
            && a.message.contains("because it is being terminated")
    })
}
