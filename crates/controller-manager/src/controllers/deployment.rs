//! The deployment controller (upstream's `deployment-controller`): rolls Deployments out
//! over ReplicaSets.
//!
//! A Deployment owns one ReplicaSet per pod template it has had, named
//! `<deployment>-<pod-template-hash>` and kept apart from the others by that hash in its
//! labels, selector and pod template. The ReplicaSet whose template is the Deployment's is
//! the *new* one; every other is *old*. Each reconcile, as upstream's `syncDeployment`:
//!
//! 1. claims the ReplicaSets of the namespace that the selector matches (adopting orphans,
//!    releasing those that stopped matching);
//! 2. while the Deployment is being deleted, only updates its status;
//! 3. sets the Progressing condition to paused or resumed when `spec.paused` changed;
//! 4. while paused, or when `spec.replicas` changed (a *scaling event*, seen in the
//!    desired-replicas annotation of the active ReplicaSets), resizes the ReplicaSets —
//!    proportionally during a rollout — without rolling out;
//! 5. otherwise rolls out: `RollingUpdate` grows the new ReplicaSet and shrinks old ones
//!    within maxSurge and maxUnavailable ([`rolling`]); `Recreate` scales the old ones to
//!    zero, waits until their pods are gone, then creates the new one ([`recreate`]);
//! 6. writes the status (counts, Available, Progressing; [`progress`]) when it differs, and
//!    comes back at the progress deadline.
//!
//! Revisions ([`history`]) number the templates: the new ReplicaSet gets the highest, a
//! template seen before (`kubectl rollout undo`) reuses its ReplicaSet and moves it to the
//! top, and old ReplicaSets beyond `revisionHistoryLimit` are deleted once empty.
//!
//! Handlers: Deployment changes queue the Deployment; ReplicaSet changes queue the owning
//! Deployment (orphans: every Deployment whose selector matches); pod deletions queue the
//! owning Recreate Deployment, which waits for its old pods to be gone.

pub mod hash;
mod history;
mod progress;
mod recreate;
mod replicas;
mod rolling;
mod sync;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use rkube_client::{
    Action, Api, Client, EventType, ObjectRef, Patch, Recorder, WorkQueue, object_reference,
};
use rkube_types::selector::LabelSelector;
use serde_json::json;
use tracing::{debug, info};

use crate::clock::Clock;
use crate::context::Context;
use crate::controllers::{self, Running};
use crate::error::{Error, Result};
use crate::informer::{Change, Informer};
use crate::ownership::{Claimant, controller_ref};

use self::history::{DESIRED_REPLICAS, MAX_REPLICAS, replicas_annotations_need_update};
use self::replicas::{RECREATE, deployment_replicas, max_surge, rs_replicas};

/// Upstream's name of the controller, also the source of its Events.
pub const NAME: &str = "deployment-controller";

/// The deployment controller's view of the cluster and its writers.
struct DeploymentController {
    client: Client,
    deployments: Informer<Deployment>,
    replica_sets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
    recorder: Recorder,
    clock: Clock,
}

/// Subscribes the controller to the Deployment, ReplicaSet and pod informers and returns
/// its workers.
pub fn start(ctx: &Context) -> Running {
    let queue: WorkQueue<ObjectRef> = WorkQueue::new();
    let dc = Arc::new(DeploymentController {
        client: ctx.client.clone(),
        deployments: ctx.informer::<Deployment>(),
        replica_sets: ctx.informer::<ReplicaSet>(),
        pods: ctx.informer::<Pod>(),
        recorder: ctx.recorder(NAME),
        clock: ctx.clock.clone(),
    });

    let q = queue.clone();
    dc.deployments
        .subscribe(move |change| q.add(ObjectRef::from_obj(&**change.object())));

    let (q, deployments) = (queue.clone(), dc.deployments.clone());
    dc.replica_sets.subscribe(move |change| {
        for key in deployments_for_replica_set_change(&deployments, change) {
            q.add(key);
        }
    });

    let (q, deployments, replica_sets) = (
        queue.clone(),
        dc.deployments.clone(),
        dc.replica_sets.clone(),
    );
    dc.pods.subscribe(move |change| {
        let gone = match change {
            Change::Deleted(_) => true,
            // A pod that finished no longer holds up a Recreate rollout either.
            Change::Updated { old, new } => {
                crate::pods::is_terminated(new) && !crate::pods::is_terminated(old)
            }
            Change::Added(_) => false,
        };
        if gone
            && let Some(d) = deployment_for_pod(&deployments, &replica_sets, change.object())
            && replicas::strategy_type(&d) == RECREATE
        {
            q.add(ObjectRef::from_obj(&*d));
        }
    });

    let clock_watch = watch_clock(ctx, dc.clone(), queue.clone());
    let workers = controllers::run_queue(ctx, NAME, queue, move |key| {
        let dc = dc.clone();
        async move { dc.reconcile(key).await }
    });
    Box::pin(async move {
        futures::join!(workers, clock_watch);
    })
}

/// With a manual clock, a jump may pass progress deadlines: look at every Deployment then,
/// instead of waiting for the real-time requeue.
fn watch_clock(
    ctx: &Context,
    dc: Arc<DeploymentController>,
    queue: WorkQueue<ObjectRef>,
) -> impl Future<Output = ()> + Send + 'static {
    let mut stop = ctx.stop.clone();
    let mut moves = ctx.clock.subscribe();
    async move {
        loop {
            tokio::select! {
                () = crate::stopped(&mut stop) => return,
                () = moves.next() => {
                    for d in dc.deployments.list() {
                        if progress::has_progress_deadline(&d) {
                            queue.add(ObjectRef::from_obj(&*d));
                        }
                    }
                }
            }
        }
    }
}

/// The Deployment controlling `owner_ref` in `namespace`, if it is in the cache with that
/// uid (upstream's `resolveControllerRef`).
fn resolve_deployment(
    deployments: &Informer<Deployment>,
    namespace: &str,
    owner_ref: &OwnerReference,
) -> Option<Arc<Deployment>> {
    if owner_ref.kind != "Deployment" {
        return None;
    }
    deployments
        .get(namespace, &owner_ref.name)
        .filter(|d| d.metadata.uid.as_deref() == Some(owner_ref.uid.as_str()))
}

/// The Deployments of `rs`'s namespace whose (non-empty) selector matches its labels.
fn deployments_selecting(deployments: &Informer<Deployment>, rs: &ReplicaSet) -> Vec<ObjectRef> {
    let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
    let labels = rs.metadata.labels.clone().unwrap_or_default();
    deployments
        .filter_namespace(namespace, |d| {
            d.spec
                .as_ref()
                .and_then(|s| LabelSelector::from_api(&s.selector).ok())
                .is_some_and(|sel| !sel.is_everything() && sel.matches(&labels))
        })
        .iter()
        .map(|d| ObjectRef::from_obj(&**d))
        .collect()
}

/// The Deployments a ReplicaSet change concerns (upstream's add/update/deleteReplicaSet).
fn deployments_for_replica_set_change(
    deployments: &Informer<Deployment>,
    change: &Change<ReplicaSet>,
) -> Vec<ObjectRef> {
    let owner = |rs: &ReplicaSet| {
        let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
        controller_ref(&rs.metadata)
            .and_then(|r| resolve_deployment(deployments, namespace, r))
            .map(|d| ObjectRef::from_obj(&*d))
    };
    match change {
        Change::Added(rs) => match controller_ref(&rs.metadata) {
            Some(_) => owner(rs).into_iter().collect(),
            // An orphan: whoever matches may adopt it. A deleted one concerns nobody.
            None if rs.metadata.deletion_timestamp.is_none() => {
                deployments_selecting(deployments, rs)
            }
            None => Vec::new(),
        },
        Change::Updated { old, new } => {
            if old.metadata.resource_version == new.metadata.resource_version {
                return Vec::new();
            }
            let (old_ref, new_ref) = (controller_ref(&old.metadata), controller_ref(&new.metadata));
            let ref_changed = old_ref.map(|r| &r.uid) != new_ref.map(|r| &r.uid);
            let mut keys = Vec::new();
            if ref_changed && old_ref.is_some() {
                keys.extend(owner(old));
            }
            if new_ref.is_some() {
                keys.extend(owner(new));
            } else if ref_changed || old.metadata.labels != new.metadata.labels {
                keys.extend(deployments_selecting(deployments, new));
            }
            keys
        }
        Change::Deleted(rs) => owner(rs).into_iter().collect(),
    }
}

/// The Deployment controlling the ReplicaSet controlling `pod`, if both are cached
/// (upstream's `getDeploymentForPod`).
fn deployment_for_pod(
    deployments: &Informer<Deployment>,
    replica_sets: &Informer<ReplicaSet>,
    pod: &Pod,
) -> Option<Arc<Deployment>> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let rs_ref = controller_ref(&pod.metadata).filter(|r| r.kind == "ReplicaSet")?;
    let rs = replica_sets
        .get(namespace, &rs_ref.name)
        .filter(|rs| rs.metadata.uid.as_deref() == Some(rs_ref.uid.as_str()))?;
    resolve_deployment(deployments, namespace, controller_ref(&rs.metadata)?)
}

impl DeploymentController {
    /// Reconciles one Deployment. A write that lost a race with a newer version (409
    /// Conflict: the cache was behind) is not an error to back off from: the newer version
    /// is on its way through the informers and brings the key back.
    async fn reconcile(&self, key: ObjectRef) -> Result<Action> {
        match self.sync_deployment(&key).await {
            Err(Error::Api(e)) if e.is_conflict() => {
                debug!(deployment = %key, error = %e, "stale cache, waiting for the newer version");
                Ok(Action::Done)
            }
            outcome => outcome,
        }
    }

    /// Upstream's `syncDeployment`: see the module documentation.
    async fn sync_deployment(&self, key: &ObjectRef) -> Result<Action> {
        let namespace = key.namespace.clone().unwrap_or_default();
        let Some(cached) = self.deployments.get(&namespace, &key.name) else {
            debug!(deployment = %key, "deployment gone");
            return Ok(Action::Done);
        };
        let mut d = (*cached).clone();
        let Some(spec) = d.spec.as_ref() else {
            return Err(Error::Invalid(format!("deployment {key} has no spec")));
        };
        let selector = LabelSelector::from_api(&spec.selector).map_err(|e| {
            Error::Invalid(format!("deployment {key} has an invalid selector: {e}"))
        })?;
        if selector.is_everything() {
            return self.selecting_all(&mut d).await;
        }
        let mut rs_list = self.replica_sets_for(&d, selector.clone()).await?;

        if d.metadata.deletion_timestamp.is_some() {
            return self.sync_status_only(&mut d, &mut rs_list).await;
        }
        self.check_paused_conditions(&mut d).await?;
        if d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
            return self.sync(&mut d, &mut rs_list).await;
        }
        if self.is_scaling_event(&mut d, &mut rs_list).await? {
            return self.sync(&mut d, &mut rs_list).await;
        }
        match replicas::strategy_type(&d) {
            RECREATE => {
                let pods = self.pod_map(&d, &selector, &rs_list);
                self.rollout_recreate(&mut d, &mut rs_list, &pods).await
            }
            replicas::ROLLING_UPDATE => self.rollout_rolling(&mut d, &mut rs_list).await,
            other => Err(Error::Invalid(format!(
                "deployment {key} has unexpected strategy type {other:?}"
            ))),
        }
    }

    /// A Deployment with an empty selector would claim every ReplicaSet of its namespace:
    /// warn, mark the generation observed, and do nothing else (as upstream).
    async fn selecting_all(&self, d: &mut Deployment) -> Result<Action> {
        self.event(
            d,
            EventType::Warning,
            "SelectingAll",
            "This deployment is selecting all pods. A non-empty selector is required.".into(),
        );
        let observed = d.status.as_ref().and_then(|s| s.observed_generation);
        if observed.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
            let mut status = d.status.clone().unwrap_or_default();
            status.observed_generation = d.metadata.generation;
            self.update_status(d, status).await?;
        }
        Ok(Action::Done)
    }

    /// The ReplicaSets the Deployment controls after claiming (upstream's
    /// `getReplicaSetsForDeployment`), oldest first.
    async fn replica_sets_for(
        &self,
        d: &Deployment,
        selector: LabelSelector,
    ) -> Result<Vec<ReplicaSet>> {
        let namespace = d.metadata.namespace.as_deref().unwrap_or_default();
        let candidates = self.replica_sets.list_namespace(namespace);
        let claimed = Claimant::new(d, selector)
            .claim(&self.client, candidates)
            .await?;
        let mut list: Vec<ReplicaSet> = claimed.iter().map(|rs| (**rs).clone()).collect();
        list.sort_by(replicas::by_creation);
        Ok(list)
    }

    /// The Deployment's pods by the uid of the ReplicaSet controlling them (upstream's
    /// `getPodMapForDeployment`): those the selector matches and one of `rs_list` controls.
    fn pod_map(
        &self,
        d: &Deployment,
        selector: &LabelSelector,
        rs_list: &[ReplicaSet],
    ) -> HashMap<String, Vec<Arc<Pod>>> {
        let namespace = d.metadata.namespace.as_deref().unwrap_or_default();
        let mut map: HashMap<String, Vec<Arc<Pod>>> = rs_list
            .iter()
            .filter_map(|rs| rs.metadata.uid.clone())
            .map(|uid| (uid, Vec::new()))
            .collect();
        let pods = self.pods.filter_namespace(namespace, |p| {
            selector.matches(&p.metadata.labels.clone().unwrap_or_default())
        });
        for pod in pods {
            if let Some(owner) = controller_ref(&pod.metadata)
                && let Some(list) = map.get_mut(&owner.uid)
            {
                list.push(pod);
            }
        }
        map
    }

    fn deployments_api(&self, d: &Deployment) -> Api<Deployment> {
        Api::namespaced(
            self.client.clone(),
            d.metadata.namespace.as_deref().unwrap_or_default(),
        )
    }

    fn replica_sets_api(&self, namespace: &str) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Writes `status` through the status subresource, guarded by the resourceVersion `d`
    /// was read at, and keeps the written object in `d`.
    async fn update_status(&self, d: &mut Deployment, status: DeploymentStatus) -> Result<()> {
        let mut obj = d.clone();
        obj.status = Some(status);
        let name = d.metadata.name.clone().unwrap_or_default();
        *d = self.deployments_api(d).replace_status(&name, &obj).await?;
        Ok(())
    }

    /// Sets the Deployment's revision annotation (a metadata patch, guarded by the
    /// resourceVersion `d` was read at: the status subresource does not carry annotations);
    /// whether it changed.
    async fn set_deployment_revision(&self, d: &mut Deployment, revision: &str) -> Result<bool> {
        if history::deployment_revision(d) == Some(revision) {
            return Ok(false);
        }
        let name = d.metadata.name.clone().unwrap_or_default();
        let patch = Patch::Merge(json!({
            "metadata": {
                "resourceVersion": d.metadata.resource_version,
                "annotations": {history::REVISION: revision},
            },
        }));
        *d = self.deployments_api(d).patch(&name, &patch).await?;
        Ok(true)
    }

    /// Resizes `rs` to `new_scale` and refreshes its replicas annotations when either
    /// differs (upstream's `scaleReplicaSet`); whether its size changed, and the ReplicaSet
    /// as written. The write is guarded by `rs`'s resourceVersion.
    async fn scale_replica_set(
        &self,
        rs: &ReplicaSet,
        new_scale: i32,
        d: &Deployment,
    ) -> Result<(bool, ReplicaSet)> {
        let old_scale = rs_replicas(rs);
        let desired = deployment_replicas(d);
        let max = desired + max_surge(d);
        let size_changed = old_scale != new_scale;
        if !size_changed && !replicas_annotations_need_update(rs, desired, max) {
            return Ok((false, rs.clone()));
        }
        let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
        let name = rs.metadata.name.clone().unwrap_or_default();
        let patch = Patch::Merge(json!({
            "metadata": {
                "resourceVersion": rs.metadata.resource_version,
                "annotations": {DESIRED_REPLICAS: desired.to_string(), MAX_REPLICAS: max.to_string()},
            },
            "spec": {"replicas": new_scale},
        }));
        let updated = self
            .replica_sets_api(namespace)
            .patch(&name, &patch)
            .await?;
        if size_changed {
            let direction = if old_scale < new_scale { "up" } else { "down" };
            info!(deployment = %ObjectRef::from_obj(d), replicaset = %name, from = old_scale, to = new_scale, "scaled replica set");
            self.event(
                d,
                EventType::Normal,
                "ScalingReplicaSet",
                format!("Scaled {direction} replica set {name} from {old_scale} to {new_scale}"),
            );
        }
        Ok((size_changed, updated))
    }

    /// Resizes `rs` only if its size differs (upstream's `scaleReplicaSetAndRecordEvent`).
    async fn scale_replica_set_and_record_event(
        &self,
        rs: &ReplicaSet,
        new_scale: i32,
        d: &Deployment,
    ) -> Result<(bool, ReplicaSet)> {
        if rs_replicas(rs) == new_scale {
            return Ok((false, rs.clone()));
        }
        self.scale_replica_set(rs, new_scale, d).await
    }

    /// Records an Event about `d` in the background (recording never fails a reconcile).
    fn event(&self, d: &Deployment, type_: EventType, reason: &'static str, message: String) {
        let recorder = self.recorder.clone();
        let target = object_reference(d);
        tokio::spawn(async move {
            recorder.publish(&target, type_, reason, &message).await;
        });
    }
}

/// Replaces the ReplicaSet with `rs`'s uid in `list` by `rs` (or appends it).
fn replace_in(list: &mut Vec<ReplicaSet>, rs: ReplicaSet) {
    match list.iter_mut().find(|r| r.metadata.uid == rs.metadata.uid) {
        Some(slot) => *slot = rs,
        None => list.push(rs),
    }
}
