//! The ReplicaSet controller (upstream `replicaset-controller`,
//! `pkg/controller/replicaset`): keeps `spec.replicas` pods of each ReplicaSet alive.
//!
//! A reconcile of one ReplicaSet:
//! 1. claims the active pods of its namespace (adopts matching orphans, releases owned pods
//!    whose labels stopped matching);
//! 2. when its [expectations](tracking) are satisfied and it is not being deleted, creates
//!    the missing pods from its template in [slow-start](slow_start) batches (at most
//!    [`BURST_REPLICAS`] per sync), or deletes the surplus, least valuable first
//!    ([`ranking`]);
//! 3. writes its status ([`status`]) when it differs, and asks to be synced again when a
//!    ready pod is due to become available (`minReadySeconds`).
//!
//! Pod handlers count expectations down: a pod `Added` with a ReplicaSet as its controller
//! is an observed creation; a pod that gets a `deletionTimestamp` or is gone is an observed
//! deletion. Until the expected changes are observed the ReplicaSet does not act again, so a
//! burst of syncs while 500 creations are on their way does not create 500 more.
//! Terminating pods do not count as replicas, so a pod being evicted or deleted is replaced
//! at once.

mod ranking;
mod slow_start;
mod status;
mod tracking;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use rkube_client::{
    Action, Api, Client, DeleteParams, EventType, ObjectRef, Recorder, WorkQueue, object_reference,
};
use rkube_types::selector::LabelSelector;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::context::Context;
use crate::controllers::{self, Running};
use crate::error::{Error, Result};
use crate::expectations::earliest;
use crate::informer::{Change, Informer};
use crate::ownership::{Claimant, controller_ref, owner_reference};
use crate::pods;

use self::tracking::Tracking;

/// Upstream's controller name, also the source of its Events.
pub const NAME: &str = "replicaset-controller";

/// The most pods one sync creates or deletes (upstream's `BurstReplicas`).
pub const BURST_REPLICAS: usize = 500;

/// The first slow-start batch (upstream's `SlowStartInitialBatchSize`).
pub const SLOW_START_INITIAL_BATCH: usize = 1;

/// Subscribes the controller to the ReplicaSet and pod informers and returns its workers.
pub fn start(ctx: &Context) -> Running {
    let queue: WorkQueue<ObjectRef> = WorkQueue::new();
    let controller = Arc::new(ReplicaSetController {
        client: ctx.client.clone(),
        replicasets: ctx.informer::<ReplicaSet>(),
        pods: ctx.informer::<Pod>(),
        tracking: Tracking::default(),
        recorder: ctx.recorder(NAME),
        clock: ctx.clock.clone(),
    });
    controller.subscribe(&queue);
    let workers = {
        let c = controller.clone();
        controllers::run_queue(ctx, NAME, queue.clone(), move |key| {
            let c = c.clone();
            async move { c.reconcile(key).await }
        })
    };
    // A manual clock (tests) jumps instead of passing: then every ReplicaSet waiting for a
    // pod to become available is synced at once rather than after the real-time delay its
    // reconcile asked for. The system clock never reports a jump, so this is idle there.
    let clock_jumps = {
        let c = controller;
        let mut stop = ctx.stop.clone();
        let mut moves = ctx.clock.subscribe();
        async move {
            loop {
                tokio::select! {
                    () = crate::stopped(&mut stop) => return,
                    () = moves.next() => c.enqueue_waiting_for_availability(&queue),
                }
            }
        }
    };
    Box::pin(async move {
        futures::future::join(workers, clock_jumps).await;
    })
}

/// What one pod change means for the ReplicaSets.
#[derive(Debug, Default, PartialEq, Eq)]
struct PodEffects {
    /// ReplicaSets whose creation expectation the change satisfies (one each).
    created: Vec<ObjectRef>,
    /// ReplicaSets and the UID of a pod whose deletion the change shows.
    deleted: Vec<(ObjectRef, String)>,
    /// ReplicaSets to sync.
    sync: Vec<ObjectRef>,
}

struct ReplicaSetController {
    client: Client,
    replicasets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
    tracking: Tracking,
    recorder: Recorder,
    clock: Clock,
}

/// The parsed selector of `rs`; `None` when it does not parse or selects everything (the
/// API refuses an empty ReplicaSet selector, so such an object must not adopt every pod).
fn selector_of(rs: &ReplicaSet) -> Option<LabelSelector> {
    let spec = rs.spec.as_ref()?;
    LabelSelector::from_api(&spec.selector)
        .ok()
        .filter(|s| !s.is_everything())
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or_default()
}

/// The message of an apiserver error as upstream's Events quote it (without the code).
fn error_message(e: &rkube_client::Error) -> String {
    e.api_error()
        .map(|a| a.message.clone())
        .unwrap_or_else(|| e.to_string())
}

/// Whether a create failed because the namespace is being deleted: then no pod can be
/// created, and that is no failure of the ReplicaSet (upstream's `NamespaceTerminatingCause`).
fn namespace_terminating(e: &rkube_client::Error) -> bool {
    e.api_error().is_some_and(|a| {
        a.causes.iter().any(|c| c.reason == "NamespaceTerminating")
            || a.message.contains("because it is being terminated")
    })
}

/// Why a pod creation did not happen.
enum CreateError {
    /// The namespace is terminating: stop quietly.
    NamespaceTerminating,
    /// The apiserver refused or failed.
    Api(rkube_client::Error),
}

impl ReplicaSetController {
    /// Adds the event handlers to the informers: they observe expectations and queue keys.
    fn subscribe(self: &Arc<Self>, queue: &WorkQueue<ObjectRef>) {
        let (c, q) = (self.clone(), queue.clone());
        self.replicasets
            .subscribe(move |change| c.on_replicaset_change(change, &q));
        let (c, q) = (self.clone(), queue.clone());
        self.pods
            .subscribe(move |change| c.on_pod_change(change, &q));
    }

    /// The ReplicaSet `r` (a pod's controller reference) names, if it is in the cache with
    /// that UID.
    fn resolve(&self, namespace: &str, r: &OwnerReference) -> Option<Arc<ReplicaSet>> {
        if r.kind != "ReplicaSet" || !r.api_version.starts_with("apps/") {
            return None;
        }
        self.replicasets
            .get(namespace, &r.name)
            .filter(|rs| rs.metadata.uid.as_deref() == Some(r.uid.as_str()))
    }

    /// The ReplicaSets of `pod`'s namespace whose selector matches its labels.
    fn matching_replicasets(&self, pod: &Pod) -> Vec<ObjectRef> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let matching: Vec<ObjectRef> = self
            .replicasets
            .filter_namespace(namespace, |rs| {
                selector_of(rs).is_some_and(|s| s.matches(&labels))
            })
            .iter()
            .map(|rs| ObjectRef::from_obj(&**rs))
            .collect();
        if matching.len() > 1 {
            warn!(
                pod = %ObjectRef::from_obj(pod),
                replicasets = matching.len(),
                "more than one replicaset selects the pod"
            );
        }
        matching
    }

    /// The ReplicaSet controlling `pod`, if it is one in the cache.
    fn owner_of(&self, pod: &Pod) -> Option<ObjectRef> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let r = controller_ref(&pod.metadata)?;
        self.resolve(namespace, r)
            .map(|rs| ObjectRef::from_obj(&*rs))
    }

    /// A pod is going away (deletion timestamp, or gone): its owner observes the deletion.
    fn pod_deleted(&self, pod: &Pod, effects: &mut PodEffects) {
        if let Some(owner) = self.owner_of(pod) {
            effects.deleted.push((owner.clone(), uid_of(pod)));
            effects.sync.push(owner);
        }
    }

    /// Maps a pod change to expectation observations and ReplicaSets to sync (upstream's
    /// `addPod`, `updatePod` and `deletePod`).
    fn pod_effects(&self, change: &Change<Pod>) -> PodEffects {
        let mut effects = PodEffects::default();
        match change {
            Change::Added(pod) => {
                if pod.metadata.deletion_timestamp.is_some() {
                    // Seen for the first time already terminating (e.g. after a restart):
                    // not a creation to count.
                    self.pod_deleted(pod, &mut effects);
                } else if controller_ref(&pod.metadata).is_some() {
                    if let Some(owner) = self.owner_of(pod) {
                        effects.created.push(owner.clone());
                        effects.sync.push(owner);
                    }
                } else {
                    effects.sync = self.matching_replicasets(pod);
                }
            }
            Change::Updated { old, new } => {
                if old.metadata.resource_version == new.metadata.resource_version
                    && old.metadata.resource_version.is_some()
                {
                    return effects;
                }
                let labels_changed = old.metadata.labels != new.metadata.labels;
                if new.metadata.deletion_timestamp.is_some() {
                    // A graceful deletion: the replacement is made now, not once the kubelet
                    // has finished.
                    self.pod_deleted(new, &mut effects);
                    if labels_changed {
                        self.pod_deleted(old, &mut effects);
                    }
                    effects.sync.dedup();
                    return effects;
                }
                let old_ref = controller_ref(&old.metadata);
                let new_ref = controller_ref(&new.metadata);
                let ref_changed = old_ref != new_ref;
                if ref_changed && old_ref.is_some() {
                    effects.sync.extend(self.owner_of(old));
                }
                if new_ref.is_some() {
                    effects.sync.extend(self.owner_of(new));
                } else if labels_changed || ref_changed {
                    effects.sync.extend(self.matching_replicasets(new));
                }
                effects.sync.dedup();
            }
            Change::Deleted(pod) => self.pod_deleted(pod, &mut effects),
        }
        effects
    }

    fn on_pod_change(&self, change: &Change<Pod>, queue: &WorkQueue<ObjectRef>) {
        let effects = self.pod_effects(change);
        for key in &effects.created {
            self.tracking.creation_observed(&key.to_string(), 1);
        }
        for (key, uid) in &effects.deleted {
            self.tracking.deletion_observed(&key.to_string(), uid);
        }
        for key in effects.sync {
            queue.add(key);
        }
    }

    fn on_replicaset_change(&self, change: &Change<ReplicaSet>, queue: &WorkQueue<ObjectRef>) {
        match change {
            Change::Added(rs) => queue.add(ObjectRef::from_obj(&**rs)),
            Change::Updated { old, new } => {
                if old.metadata.uid != new.metadata.uid {
                    // Deleted and created again under the same name: start clean.
                    self.tracking
                        .forget(&ObjectRef::from_obj(&**old).to_string());
                }
                queue.add(ObjectRef::from_obj(&**new));
            }
            Change::Deleted(rs) => {
                let key = ObjectRef::from_obj(&**rs);
                self.tracking.forget(&key.to_string());
                queue.add(key);
            }
        }
    }

    fn enqueue_waiting_for_availability(&self, queue: &WorkQueue<ObjectRef>) {
        for rs in self.replicasets.list() {
            let status = rs.status.clone().unwrap_or_default();
            if status::min_ready_seconds(&rs) > 0
                && status.ready_replicas.unwrap_or(0) != status.available_replicas.unwrap_or(0)
            {
                queue.add(ObjectRef::from_obj(&*rs));
            }
        }
    }

    /// Records an Event about `rs` without holding up the sync.
    fn event(&self, rs: &ReplicaSet, type_: EventType, reason: &'static str, message: String) {
        let recorder = self.recorder.clone();
        let target = object_reference(rs);
        tokio::spawn(async move { recorder.publish(&target, type_, reason, &message).await });
    }

    async fn reconcile(&self, key: ObjectRef) -> Result<Action> {
        let namespace = key.namespace.clone().unwrap_or_default();
        let rs_key = key.to_string();
        let Some(rs) = self.replicasets.get(&namespace, &key.name) else {
            self.tracking.forget(&rs_key);
            return Ok(Action::Done);
        };
        let Some(selector) = selector_of(&rs) else {
            // Nothing to retry: an update of the selector brings the ReplicaSet back.
            warn!(replicaset = %key, "replicaset has an invalid or empty selector, skipping");
            return Ok(Action::Done);
        };
        let needs_sync = self.tracking.satisfied(&rs_key);
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let candidates = self.pods.filter_namespace(&namespace, |p| {
            pods::is_active(p) && controller_ref(&p.metadata).is_none_or(|r| r.uid == uid)
        });
        let owned = Claimant::new(&*rs, selector)
            .claim(&self.client, candidates)
            .await?;

        let managed = if needs_sync && rs.metadata.deletion_timestamp.is_none() {
            self.manage_replicas(&rs, &rs_key, &owned).await
        } else {
            Ok(())
        };

        let now = self.clock.now();
        let failure = managed.as_ref().err().map(|e| match e {
            Error::Api(e) => error_message(e),
            other => other.to_string(),
        });
        let new_status = status::calculate(&rs, &owned, failure.as_deref(), now);
        self.write_status(&rs, new_status).await?;
        managed?;
        let requeue = earliest(
            status::next_availability_check(&owned, status::min_ready_seconds(&rs), now),
            if needs_sync {
                None
            } else {
                self.tracking.expires_in(&rs_key)
            },
        );
        Ok(requeue.map_or(Action::Done, Action::RequeueAfter))
    }

    /// Creates or deletes pods so that `owned` (the active pods the ReplicaSet controls)
    /// matches `spec.replicas`.
    async fn manage_replicas(
        &self,
        rs: &Arc<ReplicaSet>,
        key: &str,
        owned: &[Arc<Pod>],
    ) -> Result<()> {
        let want = usize::try_from(status::desired_replicas(rs)).unwrap_or(0);
        let have = owned.len();
        if have < want {
            let n = (want - have).min(BURST_REPLICAS);
            self.create_pods(rs, key, n).await
        } else if have > want {
            let n = (have - want).min(BURST_REPLICAS);
            self.delete_pods(rs, key, owned, n).await
        } else {
            Ok(())
        }
    }

    async fn create_pods(&self, rs: &Arc<ReplicaSet>, key: &str, n: usize) -> Result<()> {
        let Some(template) = rs.spec.as_ref().and_then(|s| s.template.as_ref()) else {
            return Err(Error::Invalid(format!(
                "replicaset {key} has no pod template"
            )));
        };
        let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
        let name = rs.metadata.name.as_deref().unwrap_or_default();
        let pod = pods::from_template(template, namespace, owner_reference(&**rs), None, name);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        info!(replicaset = %key, creating = n, "too few replicas");
        // Expect the creations before making them: their Added events may arrive before the
        // calls return.
        self.tracking.expect_creations(key, n);
        let (created, error) = slow_start::slow_start_batch(n, SLOW_START_INITIAL_BATCH, || {
            self.create_pod(rs, &api, &pod)
        })
        .await;
        if created < n {
            // Pods never created are never observed.
            debug!(replicaset = %key, skipped = n - created, "slow start stopped, lowering expectations");
            self.tracking.creation_observed(key, n - created);
        }
        match error {
            None | Some(CreateError::NamespaceTerminating) => Ok(()),
            Some(CreateError::Api(e)) => Err(e.into()),
        }
    }

    async fn create_pod(
        &self,
        rs: &ReplicaSet,
        api: &Api<Pod>,
        pod: &Pod,
    ) -> Result<(), CreateError> {
        match api.create(pod).await {
            Ok(created) => {
                self.event(
                    rs,
                    EventType::Normal,
                    "SuccessfulCreate",
                    format!("Created pod: {}", pod_name(&created)),
                );
                Ok(())
            }
            Err(e) if namespace_terminating(&e) => Err(CreateError::NamespaceTerminating),
            Err(e) => {
                self.event(
                    rs,
                    EventType::Warning,
                    "FailedCreate",
                    format!("Error creating: {}", error_message(&e)),
                );
                Err(CreateError::Api(e))
            }
        }
    }

    async fn delete_pods(
        &self,
        rs: &Arc<ReplicaSet>,
        key: &str,
        owned: &[Arc<Pod>],
        n: usize,
    ) -> Result<()> {
        let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
        let related = self.related_pods(rs);
        let victims = ranking::pods_to_delete(owned, &related, n);
        info!(replicaset = %key, deleting = victims.len(), "too many replicas");
        self.tracking
            .expect_deletions(key, victims.iter().map(|p| uid_of(p)));
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let results = futures::future::join_all(victims.iter().map(|pod| {
            let api = &api;
            async move {
                let uid = uid_of(pod);
                match api
                    .delete(pod_name(pod), &DeleteParams::default().uid(&uid))
                    .await
                {
                    Ok(_) => {
                        self.event(
                            rs,
                            EventType::Normal,
                            "SuccessfulDelete",
                            format!("Deleted pod: {}", pod_name(pod)),
                        );
                        Ok(())
                    }
                    Err(e) => {
                        // The informer will not see this deletion: count it down now.
                        self.tracking.deletion_observed(key, &uid);
                        if e.is_not_found() || e.is_conflict() {
                            // Gone already, or replaced by another pod of the same name.
                            Ok(())
                        } else {
                            self.event(
                                rs,
                                EventType::Warning,
                                "FailedDelete",
                                format!("Error deleting: {}", error_message(&e)),
                            );
                            Err(e)
                        }
                    }
                }
            }
        }))
        .await;
        match results.into_iter().find_map(Result::err) {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// The active pods of every ReplicaSet with the same controller as `rs` (none when `rs`
    /// has no controller), for the doubled-up ranking.
    fn related_pods(&self, rs: &ReplicaSet) -> Vec<Arc<Pod>> {
        let Some(owner) = controller_ref(&rs.metadata) else {
            return Vec::new();
        };
        let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
        let siblings: Vec<String> = self
            .replicasets
            .filter_namespace(namespace, |other| {
                controller_ref(&other.metadata).is_some_and(|r| r.uid == owner.uid)
            })
            .iter()
            .filter_map(|other| other.metadata.uid.clone())
            .collect();
        self.pods.filter_namespace(namespace, |p| {
            pods::is_active(p)
                && controller_ref(&p.metadata).is_some_and(|r| siblings.contains(&r.uid))
        })
    }

    /// Writes `status` if it differs from what `rs` reports, marking `rs`'s generation as
    /// observed.
    async fn write_status(
        &self,
        rs: &ReplicaSet,
        mut status: k8s_openapi::api::apps::v1::ReplicaSetStatus,
    ) -> Result<()> {
        if !status::differs(rs, &status) {
            return Ok(());
        }
        status.observed_generation = rs.metadata.generation;
        let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
        let name = rs.metadata.name.as_deref().unwrap_or_default();
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), namespace);
        let mut updated = rs.clone();
        updated.status = Some(status);
        match api.replace_status(name, &updated).await {
            Ok(_) => Ok(()),
            // The cache is behind the stored object: its update event is on its way and
            // syncs this ReplicaSet again with the newer state.
            Err(e) if e.is_conflict() || e.is_not_found() => {
                debug!(replicaset = %ObjectRef::from_obj(rs), error = %e, "status write lost a race");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}
