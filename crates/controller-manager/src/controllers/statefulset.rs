//! The StatefulSet controller (upstream's `statefulset-controller`,
//! `pkg/controller/statefulset`): pods with stable names `<set>-<ordinal>`, hostnames under
//! the governing service, and a claim per volume claim template, created and replaced in
//! ordinal order.
//!
//! Each reconcile of a StatefulSet:
//! 1. claims the set's pods (members by name that match its selector) and revisions;
//! 2. finds the update revision — the revision holding the current template, created when
//!    new, or renumbered when the template went back to an older one (`kubectl rollout
//!    undo`) — and the current revision (`status.currentRevision`, or the update revision on
//!    the first reconcile);
//! 3. plans the pod changes ([`control`]) and carries them out — one after another with
//!    `OrderedReady`, in slow-start batches with `Parallel`;
//! 4. writes the status when it differs, marking the rollout complete when every pod runs
//!    the update revision and is ready;
//! 5. prunes revisions no pod runs beyond `revisionHistoryLimit`.
//!
//! Storage: rkube has no volume provisioning yet, so claims are created as objects (named
//! `<claim>-<set>-<ordinal>`, labelled like upstream) and stay `Pending`; pods mount them by
//! name. Under `persistentVolumeClaimRetentionPolicy`, `whenDeleted: Delete` makes the set
//! the claims' owner and `whenScaled: Delete` makes a condemned pod the owner of its claims
//! before it is deleted, so the garbage collector removes them; a policy changed after the
//! claims exist is not applied to them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use rkube_client::{
    Action, Api, Client, DeleteParams, EventType, ObjectRef, Patch, Recorder, WorkQueue,
    object_reference,
};
use rkube_types::selector::LabelSelector;
use serde_json::json;
use tracing::debug;

use crate::clock::Clock;
use crate::context::Context;
use crate::controllers::history::{self, HASH_LABEL};
use crate::controllers::{Running, run_queue};
use crate::error::{Error, Result};
use crate::informer::{Change, Informer};
use crate::ownership::{Claimant, controller_ref, owner_reference};
use crate::pods;

pub mod control;
pub mod identity;
#[cfg(test)]
mod tests;

use control::{DeleteReason, Step};

/// The controller's name, as upstream (also the events' source).
pub const NAME: &str = "statefulset-controller";

/// The most steps run at once with `Parallel` (upstream's `MaxBatchSize`).
const MAX_BATCH: usize = 500;

/// Subscribes the controller to the informers and returns its workers.
pub fn start(ctx: &Context) -> Running {
    let controller = Arc::new(StatefulSetController {
        client: ctx.client.clone(),
        clock: ctx.clock.clone(),
        sets: ctx.informer(),
        pods: ctx.informer(),
        revisions: ctx.informer(),
        claims: ctx.informer(),
        queue: WorkQueue::new(),
        recorder: ctx.recorder(NAME),
    });
    controller.subscribe();
    let reconciler = controller.clone();
    run_queue(ctx, NAME, controller.queue.clone(), move |key| {
        let c = reconciler.clone();
        async move { c.reconcile(key).await }
    })
}

/// The controller's caches and queue.
struct StatefulSetController {
    client: Client,
    clock: Clock,
    sets: Informer<StatefulSet>,
    pods: Informer<Pod>,
    revisions: Informer<ControllerRevision>,
    claims: Informer<PersistentVolumeClaim>,
    queue: WorkQueue<ObjectRef>,
    recorder: Recorder,
}

fn selector_of(set: &StatefulSet) -> Option<LabelSelector> {
    LabelSelector::from_api(&set.spec.as_ref()?.selector).ok()
}

/// The status as the controller writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// `metadata.generation` acted on.
    pub observed_generation: i64,
    /// The replica counts.
    pub counts: control::Counts,
    /// `currentRevision`.
    pub current_revision: String,
    /// `updateRevision`.
    pub update_revision: String,
    /// `collisionCount`.
    pub collision_count: i32,
}

impl Status {
    /// Marks a finished rolling update (upstream's `completeRollingUpdate`): every pod at the
    /// update revision and ready makes the update revision current.
    pub fn complete_rolling_update(&mut self, set: &StatefulSet) {
        let c = &mut self.counts;
        if !control::is_on_delete(set) && c.updated == c.replicas && c.ready == c.replicas {
            c.current = c.updated;
            self.current_revision = self.update_revision.clone();
        }
    }

    /// Whether the set's stored status differs (upstream's `inconsistentStatus`).
    pub fn differs_from(&self, set: &StatefulSet) -> bool {
        let Some(s) = set.status.as_ref() else {
            return true;
        };
        let c = &self.counts;
        self.observed_generation > s.observed_generation.unwrap_or(0)
            || c.replicas != s.replicas
            || c.current != s.current_replicas.unwrap_or(0)
            || c.ready != s.ready_replicas.unwrap_or(0)
            || c.updated != s.updated_replicas.unwrap_or(0)
            || c.available != s.available_replicas.unwrap_or(0)
            || Some(&self.current_revision) != s.current_revision.as_ref()
            || Some(&self.update_revision) != s.update_revision.as_ref()
            || self.collision_count != s.collision_count.unwrap_or(0)
    }
}

impl StatefulSetController {
    fn subscribe(self: &Arc<Self>) {
        let this = self.clone();
        self.sets.subscribe(move |change| {
            this.queue.add(ObjectRef::from_obj(&**change.object()));
        });
        let this = self.clone();
        self.pods.subscribe(move |change| this.on_pod(change));
    }

    /// The set a controller reference names, if cached with that uid.
    fn resolve(&self, namespace: &str, owner: &OwnerReference) -> Option<Arc<StatefulSet>> {
        if owner.kind != "StatefulSet" {
            return None;
        }
        self.sets
            .get(namespace, &owner.name)
            .filter(|s| s.metadata.uid.as_deref() == Some(owner.uid.as_str()))
    }

    fn on_pod(&self, change: &Change<Pod>) {
        let pod = change.object();
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        if let Change::Updated { old, new } = change {
            if old.metadata.resource_version == new.metadata.resource_version {
                return;
            }
            let old_ref = controller_ref(&old.metadata);
            if old_ref != controller_ref(&new.metadata)
                && let Some(set) = old_ref.and_then(|r| self.resolve(namespace, r))
            {
                self.queue.add(ObjectRef::from_obj(&*set));
            }
        }
        match controller_ref(&pod.metadata) {
            Some(owner) => {
                let Some(set) = self.resolve(namespace, owner) else {
                    return;
                };
                let key = ObjectRef::from_obj(&*set);
                if let Change::Updated { old, new } = change {
                    let min_ready = control::min_ready_seconds(&set);
                    if min_ready > 0 && !pods::is_ready(old) && pods::is_ready(new) {
                        let after = Duration::from_secs(u64::from(min_ready.unsigned_abs()));
                        self.queue.add_after(key.clone(), after);
                    }
                }
                self.queue.add(key);
            }
            None => {
                let relevant = match change {
                    Change::Added(_) => true,
                    Change::Updated { old, new } => {
                        old.metadata.labels != new.metadata.labels
                            || controller_ref(&old.metadata).is_some()
                    }
                    Change::Deleted(_) => false,
                };
                if !relevant {
                    return;
                }
                let labels = pod.metadata.labels.clone().unwrap_or_default();
                for set in self.sets.filter_namespace(namespace, |s| {
                    selector_of(s).is_some_and(|sel| sel.matches(&labels))
                }) {
                    self.queue.add(ObjectRef::from_obj(&*set));
                }
            }
        }
    }

    async fn reconcile(&self, key: ObjectRef) -> Result<Action> {
        let namespace = key.namespace.clone().unwrap_or_default();
        let Some(set) = self.sets.get(&namespace, &key.name) else {
            debug!(statefulset = %key, "statefulset has been deleted");
            return Ok(Action::Done);
        };
        let selector = set
            .spec
            .as_ref()
            .ok_or_else(|| Error::Invalid(format!("statefulset {key} has no spec")))
            .and_then(|s| {
                LabelSelector::from_api(&s.selector).map_err(|e| {
                    Error::Invalid(format!("statefulset {key}: invalid selector: {e}"))
                })
            })?;

        let claimant = Claimant::new(&*set, selector);
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let candidates = self.pods.filter_namespace(&namespace, |p| {
            identity::is_member_of(&set, p) || crate::ownership::is_controlled_by(&p.metadata, &uid)
        });
        let pods: Vec<Arc<Pod>> = claimant
            .claim(&self.client, candidates)
            .await?
            .into_iter()
            .filter(|p| identity::is_member_of(&set, p))
            .collect();
        let mut revisions = claimant
            .claim(&self.client, self.revisions.list_namespace(&namespace))
            .await?;
        history::sort_revisions(&mut revisions);

        let (current, update, collision_count) = self.revisions_of(&set, &revisions).await?;
        let current_template = history::template_of(&current).unwrap_or_default();
        let update_template = history::template_of(&update).unwrap_or_default();
        let current_name = current.metadata.name.clone().unwrap_or_default();
        let update_name = update.metadata.name.clone().unwrap_or_default();
        let inputs = control::Inputs {
            set: &set,
            current: control::Revision {
                name: &current_name,
                template: &current_template,
            },
            update: control::Revision {
                name: &update_name,
                template: &update_template,
            },
            pods: &pods,
            now: self.clock.now(),
        };
        let plan = control::plan(&inputs, |pod| self.claims_missing(&set, pod));

        let outcome = self.execute(&set, &plan).await;

        let mut status = Status {
            observed_generation: set.metadata.generation.unwrap_or(0),
            counts: plan.counts,
            current_revision: current_name.clone(),
            update_revision: update_name.clone(),
            collision_count,
        };
        status.complete_rolling_update(&set);
        let status_outcome = self.write_status(&set, &status).await;
        self.truncate_history(&set, &pods, &revisions, &current_name, &update_name)
            .await?;
        outcome?;
        status_outcome?;

        let min_ready = control::min_ready_seconds(&set);
        if min_ready > 0 && status.counts.ready != status.counts.available {
            return Ok(Action::RequeueAfter(Duration::from_secs(u64::from(
                min_ready.unsigned_abs(),
            ))));
        }
        Ok(Action::Done)
    }

    /// The current and update revisions and the collision count (upstream's
    /// `getStatefulSetRevisions`); `sorted` are the set's revisions, oldest first.
    async fn revisions_of(
        &self,
        set: &StatefulSet,
        sorted: &[Arc<ControllerRevision>],
    ) -> Result<(ControllerRevision, ControllerRevision, i32)> {
        let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
        let mut collision_count = set
            .status
            .as_ref()
            .and_then(|s| s.collision_count)
            .unwrap_or(0);
        let template = set
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let snapshot = history::Snapshot {
            owner: owner_reference(set),
            namespace,
            labels: template.metadata.as_ref().and_then(|m| m.labels.as_ref()),
            annotations: set.metadata.annotations.as_ref(),
            hash_label: HASH_LABEL,
            data: history::template_patch(&template),
            revision: history::next_revision(sorted),
        };
        let equal: Vec<&Arc<ControllerRevision>> = sorted
            .iter()
            .filter(|r| history::data_of(r) == &snapshot.data)
            .collect();
        let update = match (equal.last(), sorted.last()) {
            // The latest revision already holds the template.
            (Some(eq), Some(last)) if history::equal_data(eq, last) => (**last).clone(),
            // The template went back to an older revision: it becomes the latest.
            (Some(eq), _) => history::renumber(&self.client, eq, snapshot.revision).await?,
            (None, _) => history::create(&self.client, &snapshot, &mut collision_count).await?,
        };
        let current_name = set
            .status
            .as_ref()
            .and_then(|s| s.current_revision.as_deref());
        let current = sorted
            .iter()
            .find(|r| current_name.is_some() && r.metadata.name.as_deref() == current_name)
            .map_or_else(|| update.clone(), |r| (**r).clone());
        Ok((current, update, collision_count))
    }

    /// Whether some claim of `pod` is missing from the cache.
    fn claims_missing(&self, set: &StatefulSet, pod: &Pod) -> bool {
        let Some(ordinal) = identity::ordinal(pod) else {
            return false;
        };
        let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
        identity::claims_for(set, ordinal).iter().any(|claim| {
            let name = claim.metadata.name.as_deref().unwrap_or_default();
            self.claims.get(namespace, name).is_none()
        })
    }

    /// Runs the plan's steps: each phase in order, stopping at the first failure.
    async fn execute(&self, set: &StatefulSet, plan: &control::Plan) -> Result<()> {
        for phase in [&plan.replicas, &plan.condemned] {
            if plan.monotonic {
                for step in phase {
                    self.run_step(set, step).await?;
                }
            } else {
                self.slow_start(set, phase).await?;
            }
        }
        if let Some(step) = &plan.update {
            self.run_step(set, step).await?;
        }
        Ok(())
    }

    /// Runs `steps` at once in batches of 1, 2, 4, … (at most [`MAX_BATCH`]), stopping
    /// after a batch with a failure (upstream's `slowStartBatch`).
    async fn slow_start(&self, set: &StatefulSet, steps: &[Step]) -> Result<()> {
        let mut pos = 0;
        let mut batch = 1;
        while pos < steps.len() {
            let end = (pos + batch).min(steps.len());
            let results =
                futures::future::join_all(steps[pos..end].iter().map(|s| self.run_step(set, s)))
                    .await;
            if let Some(e) = results.into_iter().find_map(Result::err) {
                return Err(e);
            }
            pos = end;
            batch = (batch * 2).min(MAX_BATCH);
        }
        Ok(())
    }

    async fn pod_event(&self, set: &StatefulSet, verb: &str, pod: &str, error: Option<&Error>) {
        let set_name = set.metadata.name.as_deref().unwrap_or_default();
        let title = {
            let mut chars = verb.chars();
            chars
                .next()
                .map(|c| c.to_uppercase().collect::<String>() + chars.as_str())
                .unwrap_or_default()
        };
        let (type_, reason, message) = match error {
            None => (
                EventType::Normal,
                format!("Successful{title}"),
                format!("{verb} Pod {pod} in StatefulSet {set_name} successful"),
            ),
            Some(e) => (
                EventType::Warning,
                format!("Failed{title}"),
                format!("{verb} Pod {pod} in StatefulSet {set_name} failed error: {e}"),
            ),
        };
        self.recorder
            .publish(&object_reference(set), type_, &reason, &message)
            .await;
    }

    async fn run_step(&self, set: &StatefulSet, step: &Step) -> Result<()> {
        let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        match step {
            Step::Create(pod) => {
                let name = pod.metadata.name.clone().unwrap_or_default();
                self.create_claims(set, pod).await?;
                match pods_api.create(pod).await {
                    Ok(_) => {
                        self.pod_event(set, "create", &name, None).await;
                        Ok(())
                    }
                    // Our cache lags behind a pod we created: it arrives shortly.
                    Err(e)
                        if e.is_already_exists() && self.pods.get(namespace, &name).is_none() =>
                    {
                        debug!(pod = %name, "pod already exists, waiting for the cache");
                        Ok(())
                    }
                    Err(e) => {
                        let e = Error::from(e);
                        self.pod_event(set, "create", &name, Some(&e)).await;
                        Err(e)
                    }
                }
            }
            Step::CreateClaims(pod) => self.create_claims(set, pod).await,
            Step::FixIdentity(pod) => {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let ordinal = identity::ordinal(pod).unwrap_or(0);
                let patch = Patch::Merge(json!({"metadata": {
                    "resourceVersion": pod.metadata.resource_version,
                    "labels": {
                        identity::POD_NAME_LABEL: name,
                        identity::POD_INDEX_LABEL: ordinal.to_string(),
                    },
                }}));
                match pods_api.patch(&name, &patch).await {
                    Ok(_) => {
                        self.pod_event(set, "update", &name, None).await;
                        Ok(())
                    }
                    // Changed or gone since: the change brings the set back.
                    Err(e) if e.is_conflict() || e.is_not_found() => Ok(()),
                    Err(e) => {
                        let e = Error::from(e);
                        self.pod_event(set, "update", &name, Some(&e)).await;
                        Err(e)
                    }
                }
            }
            Step::Delete(pod, reason) => {
                if *reason == DeleteReason::ScaleDown && identity::claims_deleted_on_scale_down(set)
                {
                    self.give_claims_to(set, pod).await?;
                }
                let name = pod.metadata.name.clone().unwrap_or_default();
                let params = match pod.metadata.uid.as_deref() {
                    Some(uid) => DeleteParams::default().uid(uid),
                    None => DeleteParams::default(),
                };
                match pods_api.delete(&name, &params).await {
                    Ok(_) => {
                        self.pod_event(set, "delete", &name, None).await;
                        Ok(())
                    }
                    // Gone, or replaced by a newer pod of the same name.
                    Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
                    Err(e) => {
                        let e = Error::from(e);
                        self.pod_event(set, "delete", &name, Some(&e)).await;
                        Err(e)
                    }
                }
            }
        }
    }

    /// Creates the claims of `pod` that do not exist yet.
    async fn create_claims(&self, set: &StatefulSet, pod: &Pod) -> Result<()> {
        let Some(ordinal) = identity::ordinal(pod) else {
            return Ok(());
        };
        let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
        let set_name = set.metadata.name.as_deref().unwrap_or_default();
        let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        for claim in identity::claims_for(set, ordinal) {
            let name = claim.metadata.name.clone().unwrap_or_default();
            if self.claims.get(namespace, &name).is_some() {
                continue;
            }
            match api.create(&claim).await {
                Ok(_) => {
                    let message = format!(
                        "create Claim {name} Pod {pod_name} in StatefulSet {set_name} success"
                    );
                    self.recorder
                        .publish(
                            &object_reference(set),
                            EventType::Normal,
                            "SuccessfulCreate",
                            &message,
                        )
                        .await;
                }
                Err(e) if e.is_already_exists() => {}
                Err(e) => {
                    let message = format!(
                        "create Claim {name} for Pod {pod_name} in StatefulSet {set_name} failed error: {e}"
                    );
                    self.recorder
                        .publish(
                            &object_reference(set),
                            EventType::Warning,
                            "FailedCreate",
                            &message,
                        )
                        .await;
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// Makes `pod` an owner of its claims, so they are garbage collected after it
    /// (`whenScaled: Delete`).
    async fn give_claims_to(&self, set: &StatefulSet, pod: &Pod) -> Result<()> {
        let Some(ordinal) = identity::ordinal(pod) else {
            return Ok(());
        };
        let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        let owner = identity::claim_owner_for_pod(pod);
        for wanted in identity::claims_for(set, ordinal) {
            let name = wanted.metadata.name.clone().unwrap_or_default();
            let Some(claim) = self.claims.get(namespace, &name) else {
                continue;
            };
            let mut refs = claim.metadata.owner_references.clone().unwrap_or_default();
            if refs.iter().any(|r| r.uid == owner.uid) {
                continue;
            }
            refs.push(owner.clone());
            let patch = Patch::Merge(json!({"metadata": {
                "resourceVersion": claim.metadata.resource_version,
                "ownerReferences": refs,
            }}));
            match api.patch(&name, &patch).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Writes `status` when the stored one differs.
    async fn write_status(&self, set: &StatefulSet, status: &Status) -> Result<()> {
        if !status.differs_from(set) {
            return Ok(());
        }
        let c = &status.counts;
        let patch = Patch::Merge(json!({"status": {
            "observedGeneration": status.observed_generation,
            "replicas": c.replicas,
            "readyReplicas": c.ready,
            "currentReplicas": c.current,
            "updatedReplicas": c.updated,
            "availableReplicas": c.available,
            "currentRevision": status.current_revision,
            "updateRevision": status.update_revision,
            "collisionCount": status.collision_count,
        }}));
        let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
        let name = set.metadata.name.as_deref().unwrap_or_default();
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), namespace);
        match api.patch_status(name, &patch).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the oldest revisions that neither the status nor any pod uses, beyond
    /// `revisionHistoryLimit` (upstream's `truncateHistory`).
    async fn truncate_history(
        &self,
        set: &StatefulSet,
        pods: &[Arc<Pod>],
        sorted: &[Arc<ControllerRevision>],
        current: &str,
        update: &str,
    ) -> Result<()> {
        let limit =
            history::history_limit(set.spec.as_ref().and_then(|s| s.revision_history_limit));
        let Ok(limit) = usize::try_from(limit) else {
            return Ok(());
        };
        let mut live: BTreeMap<&str, ()> = BTreeMap::new();
        live.insert(current, ());
        live.insert(update, ());
        for pod in pods {
            live.insert(identity::revision_of(pod), ());
        }
        let is_live = |r: &ControllerRevision| {
            live.contains_key(r.metadata.name.as_deref().unwrap_or_default())
        };
        let old = sorted.iter().filter(|r| !is_live(r)).count();
        for rev in history::prune(sorted, old.saturating_sub(limit), is_live) {
            history::delete(&self.client, &rev).await?;
        }
        Ok(())
    }
}
