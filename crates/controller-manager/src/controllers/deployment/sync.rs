//! What every path of a reconcile shares (upstream's `sync.go`): finding — or creating —
//! the new ReplicaSet and bringing its revision up to date, resizing ReplicaSets on a
//! scaling event (proportionally during a rollout), deleting old ReplicaSets beyond the
//! history limit, and writing the status when it changed.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rkube_client::{Action, DeleteParams, EventType, ObjectRef, Patch};
use rkube_types::Reason;
use serde_json::json;
use tracing::{debug, info, warn};

use super::hash::{POD_TEMPLATE_HASH_LABEL, compute_hash, equal_ignore_hash};
use super::history::{
    max_revision, replica_sets_to_clean_up, revision, set_new_replica_set_annotations,
};
use super::progress::{
    self, FAILED_RS_CREATE, FOUND_NEW_RS, NEW_REPLICA_SET, PROGRESSING, get_condition,
    has_progress_deadline, new_condition, normalized, set_condition,
};
use super::replicas::{
    active, all_of, by_size_newer, by_size_older, deployment_replicas, find_active_or_latest,
    find_new_replica_set, is_rolling_update, is_saturated, max_surge, new_rs_new_replicas,
    proportion, replica_count, rs_replicas,
};
use super::{DeploymentController, replace_in};
use crate::error::{Error, Result};
use crate::ownership::{is_controlled_by, owner_reference};

/// One ReplicaSet resize of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleStep {
    /// The ReplicaSet.
    pub name: String,
    /// Its new `spec.replicas`.
    pub replicas: i32,
    /// Also refresh its replicas annotations when the size stays (upstream calls
    /// `scaleReplicaSet` rather than `scaleReplicaSetAndRecordEvent`).
    pub annotate: bool,
}

/// How a scaling event resizes the ReplicaSets (upstream's `scale`): the only active (or
/// the newest) ReplicaSet takes the whole size; a saturated new one leaves the old ones
/// nothing; otherwise, during a rolling update, the change is spread in proportion to each
/// active ReplicaSet's share, larger ones first, the remainder going to the largest.
pub fn scaling_plan(
    d: &Deployment,
    new: Option<&ReplicaSet>,
    old: &[&ReplicaSet],
) -> Vec<ScaleStep> {
    let replicas = deployment_replicas(d);
    let step = |rs: &ReplicaSet, n: i32, annotate: bool| ScaleStep {
        name: rs.metadata.name.clone().unwrap_or_default(),
        replicas: n,
        annotate,
    };
    if let Some(rs) = find_active_or_latest(new, old) {
        if rs_replicas(rs) == replicas {
            return Vec::new();
        }
        return vec![step(rs, replicas, false)];
    }
    if is_saturated(d, new) {
        return active(old)
            .into_iter()
            .map(|rs| step(rs, 0, false))
            .collect();
    }
    if !is_rolling_update(d) {
        return Vec::new();
    }
    let mut all = active(&old.iter().copied().chain(new).collect::<Vec<_>>());
    let allowed = if replicas > 0 {
        replicas + max_surge(d)
    } else {
        0
    };
    let to_add = allowed - replica_count(&all);
    match to_add.cmp(&0) {
        std::cmp::Ordering::Greater => all.sort_by(|a, b| by_size_newer(a, b)),
        std::cmp::Ordering::Less => all.sort_by(|a, b| by_size_older(a, b)),
        std::cmp::Ordering::Equal => {}
    }
    let mut added = 0;
    let mut sizes: Vec<i32> = all
        .iter()
        .map(|rs| {
            if to_add == 0 {
                return rs_replicas(rs);
            }
            let p = proportion(rs, d, to_add, added);
            added += p;
            rs_replicas(rs) + p
        })
        .collect();
    if to_add != 0
        && let Some(first) = sizes.first_mut()
    {
        *first = (*first + to_add - added).max(0);
    }
    all.iter()
        .zip(sizes)
        .map(|(rs, n)| step(rs, n, true))
        .collect()
}

/// `rs_list` split into the new ReplicaSet (by uid) and the others.
fn split(rs_list: &[ReplicaSet], new_uid: Option<&str>) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
    let is_new = |rs: &ReplicaSet| new_uid.is_some() && rs.metadata.uid.as_deref() == new_uid;
    (
        rs_list.iter().find(|rs| is_new(rs)).cloned(),
        rs_list.iter().filter(|rs| !is_new(rs)).cloned().collect(),
    )
}

fn is_namespace_terminating(e: &rkube_client::Error) -> bool {
    e.api_error().is_some_and(|a| {
        a.causes.iter().any(|c| c.reason == "NamespaceTerminating")
            || (a.reason == Reason::Forbidden && a.message.contains("being terminated"))
    })
}

impl DeploymentController {
    /// The new ReplicaSet (created when `create` and missing) and the old ones, with the
    /// revisions brought up to date (upstream's `getAllReplicaSetsAndSyncRevision`).
    /// Writes land in `rs_list` and `d`.
    pub(super) async fn get_all_replica_sets_and_sync_revision(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>)> {
        let new_uid = find_new_replica_set(d, rs_list).and_then(|rs| rs.metadata.uid.clone());
        let (_, old) = split(rs_list, new_uid.as_deref());
        let new = self.get_new_replica_set(d, rs_list, &old, create).await?;
        Ok((new, old))
    }

    /// Upstream's `getNewReplicaSet`: the ReplicaSet with the Deployment's template, its
    /// annotations synced and its revision raised above every old one (a rollback to it
    /// moves it to the top); when there is none and `create`, a new one named
    /// `<deployment>-<hash>`, as large as the strategy allows now.
    async fn get_new_replica_set(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
        old: &[ReplicaSet],
        create: bool,
    ) -> Result<Option<ReplicaSet>> {
        let new_revision = max_revision(old) + 1;
        let surge = max_surge(d);
        let min_ready = d
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0);
        if let Some(existing) = find_new_replica_set(d, rs_list).cloned() {
            let mut rs = existing;
            let annotations_changed =
                set_new_replica_set_annotations(d, &mut rs, new_revision, true, surge);
            let rs_min_ready = rs
                .spec
                .as_ref()
                .and_then(|s| s.min_ready_seconds)
                .unwrap_or(0);
            if annotations_changed || rs_min_ready != min_ready {
                let namespace = rs.metadata.namespace.clone().unwrap_or_default();
                let name = rs.metadata.name.clone().unwrap_or_default();
                let patch = Patch::Merge(json!({
                    "metadata": {
                        "resourceVersion": rs.metadata.resource_version,
                        "annotations": rs.metadata.annotations,
                    },
                    "spec": {"minReadySeconds": min_ready},
                }));
                rs = self
                    .replica_sets_api(&namespace)
                    .patch(&name, &patch)
                    .await?;
                replace_in(rs_list, rs.clone());
            }
            if let Some(rev) = revision(&rs.metadata).filter(|r| *r > 0) {
                self.set_deployment_revision(d, &rev.to_string()).await?;
            }
            if has_progress_deadline(d) && get_condition(d.status.as_ref(), PROGRESSING).is_none() {
                let name = rs.metadata.name.as_deref().unwrap_or_default();
                let mut status = d.status.clone().unwrap_or_default();
                set_condition(
                    &mut status,
                    new_condition(
                        PROGRESSING,
                        "True",
                        FOUND_NEW_RS,
                        format!("Found new replica set {name:?}"),
                        self.clock.now(),
                    ),
                );
                self.update_status(d, status).await?;
            }
            return Ok(Some(rs));
        }
        if !create {
            return Ok(None);
        }

        let key = ObjectRef::from_obj(d);
        let namespace = d.metadata.namespace.clone().unwrap_or_default();
        let Some(spec) = d.spec.as_ref() else {
            return Err(Error::Invalid(format!("deployment {key} has no spec")));
        };
        let hash = compute_hash(
            &spec.template,
            d.status.as_ref().and_then(|s| s.collision_count),
        );
        let mut template = spec.template.clone();
        let labels = template
            .metadata
            .get_or_insert_with(ObjectMeta::default)
            .labels
            .get_or_insert_with(BTreeMap::new);
        labels.insert(POD_TEMPLATE_HASH_LABEL.to_string(), hash.clone());
        let labels = labels.clone();
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH_LABEL.to_string(), hash.clone());
        let name = format!("{}-{hash}", d.metadata.name.as_deref().unwrap_or_default());
        let mut new_rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                owner_references: Some(vec![owner_reference(&*d)]),
                labels: Some(labels),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let all: Vec<&ReplicaSet> = old.iter().chain([&new_rs]).collect();
        let count = new_rs_new_replicas(d, &all, &new_rs)
            .map_err(|e| Error::Invalid(format!("deployment {key}: {e}")))?;
        if let Some(spec) = new_rs.spec.as_mut() {
            spec.replicas = Some(count);
        }
        set_new_replica_set_annotations(d, &mut new_rs, new_revision, false, surge);

        let api = self.replica_sets_api(&namespace);
        let (created, already_existed) = match api.create(&new_rs).await {
            Ok(created) => (created, false),
            Err(e) if e.is_already_exists() => {
                // A slow cache, or a hash collision with a ReplicaSet of another template.
                let existing = match self.replica_sets.get(&namespace, &name) {
                    Some(rs) => (*rs).clone(),
                    None => api.get(&name).await?,
                };
                let uid = d.metadata.uid.as_deref().unwrap_or_default();
                let same_template = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| {
                        d.spec
                            .as_ref()
                            .is_some_and(|s| equal_ignore_hash(&s.template, t))
                    });
                if is_controlled_by(&existing.metadata, uid) && same_template {
                    (existing, true)
                } else {
                    let mut status = d.status.clone().unwrap_or_default();
                    let before = status.collision_count.unwrap_or(0);
                    status.collision_count = Some(before + 1);
                    if self.update_status(d, status).await.is_ok() {
                        info!(deployment = %key, old = before, new = before + 1, "hash collision, bumping collision count");
                    }
                    return Err(e.into());
                }
            }
            Err(e) if is_namespace_terminating(&e) => return Err(e.into()),
            Err(e) => {
                let message = format!("Failed to create new replica set {name:?}: {e}");
                if has_progress_deadline(d) {
                    let mut status = d.status.clone().unwrap_or_default();
                    set_condition(
                        &mut status,
                        new_condition(
                            PROGRESSING,
                            "False",
                            FAILED_RS_CREATE,
                            message.clone(),
                            self.clock.now(),
                        ),
                    );
                    // The create error is what matters; this write is best effort.
                    if let Err(err) = self.update_status(d, status).await {
                        debug!(deployment = %key, error = %err, "recording the create failure failed");
                    }
                }
                self.event(d, EventType::Warning, FAILED_RS_CREATE, message);
                return Err(e.into());
            }
        };
        if !already_existed {
            info!(deployment = %key, replicaset = %name, replicas = count, "created replica set");
            if count > 0 {
                self.event(
                    d,
                    EventType::Normal,
                    "ScalingReplicaSet",
                    format!("Scaled up replica set {name} from 0 to {count}"),
                );
            }
        }
        self.set_deployment_revision(d, &new_revision.to_string())
            .await?;
        if !already_existed && has_progress_deadline(d) {
            let mut status = d.status.clone().unwrap_or_default();
            set_condition(
                &mut status,
                new_condition(
                    PROGRESSING,
                    "True",
                    NEW_REPLICA_SET,
                    format!("Created new replica set {name:?}"),
                    self.clock.now(),
                ),
            );
            self.update_status(d, status).await?;
        }
        replace_in(rs_list, created.clone());
        Ok(Some(created))
    }

    /// Upstream's `sync`: a scaling event or a paused Deployment. Resizes without rolling
    /// out, cleans up history while paused, and writes the status.
    pub(super) async fn sync(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> Result<Action> {
        let (new, old) = self
            .get_all_replica_sets_and_sync_revision(d, rs_list, false)
            .await?;
        let plan = scaling_plan(d, new.as_ref(), &old.iter().collect::<Vec<_>>());
        self.apply_scaling(&plan, d, rs_list).await?;
        let new_uid = new.as_ref().and_then(|rs| rs.metadata.uid.clone());
        let (new, old) = split(rs_list, new_uid.as_deref());
        if d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
            self.cleanup_deployment(d, &old).await?;
        }
        self.sync_deployment_status(d, &all_of(&old, new.as_ref()), new.as_ref())
            .await
    }

    /// A Deployment being deleted: status only (upstream's `syncStatusOnly`).
    pub(super) async fn sync_status_only(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> Result<Action> {
        let (new, old) = self
            .get_all_replica_sets_and_sync_revision(d, rs_list, false)
            .await?;
        self.sync_deployment_status(d, &all_of(&old, new.as_ref()), new.as_ref())
            .await
    }

    /// Applies `plan` in order, keeping what was written in `rs_list`; whether a size
    /// changed.
    async fn apply_scaling(
        &self,
        plan: &[ScaleStep],
        d: &Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> Result<bool> {
        let mut scaled = false;
        for step in plan {
            let Some(rs) = rs_list
                .iter()
                .find(|rs| rs.metadata.name.as_deref() == Some(step.name.as_str()))
                .cloned()
            else {
                continue;
            };
            let (changed, updated) = if step.annotate {
                self.scale_replica_set(&rs, step.replicas, d).await?
            } else {
                self.scale_replica_set_and_record_event(&rs, step.replicas, d)
                    .await?
            };
            scaled |= changed;
            replace_in(rs_list, updated);
        }
        Ok(scaled)
    }

    /// Whether `spec.replicas` differs from the desired-replicas annotation of an active
    /// ReplicaSet (upstream's `isScalingEvent`).
    pub(super) async fn is_scaling_event(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> Result<bool> {
        let (new, old) = self
            .get_all_replica_sets_and_sync_revision(d, rs_list, false)
            .await?;
        let replicas = deployment_replicas(d);
        Ok(active(&all_of(&old, new.as_ref()))
            .iter()
            .filter_map(|rs| super::history::desired_replicas_annotation(rs))
            .any(|desired| desired != replicas))
    }

    /// Sets the Progressing condition to paused or resumed (upstream's
    /// `checkPausedConditions`).
    pub(super) async fn check_paused_conditions(&self, d: &mut Deployment) -> Result<()> {
        if let Some(status) = progress::paused_status(d, self.clock.now()) {
            self.update_status(d, status).await?;
        }
        Ok(())
    }

    /// Deletes old ReplicaSets beyond `revisionHistoryLimit` (upstream's
    /// `cleanupDeployment`).
    pub(super) async fn cleanup_deployment(
        &self,
        d: &Deployment,
        old: &[ReplicaSet],
    ) -> Result<()> {
        for rs in replica_sets_to_clean_up(d, old) {
            let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
            let name = rs.metadata.name.as_deref().unwrap_or_default();
            info!(deployment = %ObjectRef::from_obj(d), replicaset = name, "deleting old replica set beyond the revision history limit");
            match self
                .replica_sets_api(namespace)
                .delete(name, &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                // Stop at the first failure rather than pressing on against a struggling
                // apiserver; the retry picks up the rest.
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Writes the status the ReplicaSets add up to, if it differs (upstream's
    /// `syncDeploymentStatus`).
    async fn sync_deployment_status(
        &self,
        d: &mut Deployment,
        all: &[&ReplicaSet],
        new: Option<&ReplicaSet>,
    ) -> Result<Action> {
        let status = progress::calculate_status(all, new, d, self.clock.now());
        if status != normalized(d.status.as_ref()) {
            self.update_status(d, status).await?;
        }
        Ok(Action::Done)
    }

    /// Writes the status after a rollout step, if it differs; otherwise asks to come back
    /// at the progress deadline (upstream's `syncRolloutStatus` and
    /// `requeueStuckDeployment`).
    pub(super) async fn sync_rollout_status(
        &self,
        d: &mut Deployment,
        all: &[&ReplicaSet],
        new: Option<&ReplicaSet>,
    ) -> Result<Action> {
        let now = self.clock.now();
        let status = progress::rollout_status(all, new, d, now);
        if status != normalized(d.status.as_ref()) {
            if get_condition(Some(&status), PROGRESSING).and_then(|c| c.reason.as_deref())
                == Some(progress::TIMED_OUT)
                && get_condition(d.status.as_ref(), PROGRESSING).and_then(|c| c.reason.as_deref())
                    != Some(progress::TIMED_OUT)
            {
                warn!(deployment = %ObjectRef::from_obj(d), "deployment exceeded its progress deadline");
            }
            self.update_status(d, status).await?;
            return Ok(Action::Done);
        }
        Ok(match progress::requeue_after(d, &status, now) {
            Some(after) => Action::RequeueAfter(after),
            None => Action::Done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::deployment::history::set_replicas_annotations;
    use crate::controllers::deployment::tests::{deployment, rolling, rs};

    fn sized(name: &str, replicas: i32, created: &str, desired: i32, max: i32) -> ReplicaSet {
        let mut r = rs(name, replicas, replicas, created);
        set_replicas_annotations(&mut r, desired, max);
        r
    }

    fn sizes(plan: &[ScaleStep]) -> Vec<(&str, i32)> {
        plan.iter().map(|s| (s.name.as_str(), s.replicas)).collect()
    }

    #[test]
    fn a_single_active_replica_set_takes_the_whole_size() {
        let d = deployment("web", 5);
        let new = sized("web-new", 3, "2026-01-01T00:01:00Z", 3, 4);
        let old = sized("web-old", 0, "2026-01-01T00:00:00Z", 3, 4);
        let plan = scaling_plan(&d, Some(&new), &[&old]);
        assert_eq!(sizes(&plan), [("web-new", 5)]);
        assert!(!plan[0].annotate);
        let same = deployment("web", 3);
        assert!(scaling_plan(&same, Some(&new), &[&old]).is_empty());
        // Nothing active: the newest takes it (a Deployment scaled up from zero).
        let zero = sized("web-new", 0, "2026-01-01T00:01:00Z", 0, 0);
        assert_eq!(
            sizes(&scaling_plan(&d, Some(&zero), &[&old])),
            [("web-new", 5)]
        );
    }

    #[test]
    fn a_saturated_new_replica_set_scales_old_ones_to_zero() {
        let d = deployment("web", 3);
        let new = sized("web-new", 3, "2026-01-01T00:01:00Z", 3, 4);
        let old = sized("web-old", 1, "2026-01-01T00:00:00Z", 3, 4);
        assert_eq!(
            sizes(&scaling_plan(&d, Some(&new), &[&old])),
            [("web-old", 0)]
        );
    }

    #[test]
    fn scaling_mid_rollout_is_proportional() {
        // Upstream's example: 10 replicas, surge 3, mid-rollout with 8 old and 5 new
        // (13 = 10 + 3), scaled to 20 (25 = 20 + 5 allowed): 12 more, spread 8:5.
        let d = rolling(deployment("web", 20), "5", "2");
        let old = sized("web-old", 8, "2026-01-01T00:00:00Z", 10, 13);
        let new = sized("web-new", 5, "2026-01-01T00:01:00Z", 10, 13);
        let plan = scaling_plan(&d, Some(&new), &[&old]);
        assert_eq!(sizes(&plan), [("web-old", 15), ("web-new", 10)]);
        assert!(plan.iter().all(|s| s.annotate));
        assert_eq!(plan.iter().map(|s| s.replicas).sum::<i32>(), 25);

        // And back down to 10 (+3 = 13): the older loses first on ties.
        let down = rolling(deployment("web", 10), "3", "2");
        let old = sized("web-old", 15, "2026-01-01T00:00:00Z", 20, 25);
        let new = sized("web-new", 10, "2026-01-01T00:01:00Z", 20, 25);
        let plan = scaling_plan(&down, Some(&new), &[&old]);
        assert_eq!(sizes(&plan), [("web-old", 8), ("web-new", 5)]);
    }

    #[test]
    fn recreate_deployments_are_not_spread() {
        let mut d = deployment("web", 6);
        d.spec.as_mut().unwrap().strategy.as_mut().unwrap().type_ =
            Some(super::super::replicas::RECREATE.into());
        let old = sized("web-old", 2, "2026-01-01T00:00:00Z", 3, 3);
        let new = sized("web-new", 1, "2026-01-01T00:01:00Z", 3, 3);
        assert!(scaling_plan(&d, Some(&new), &[&old]).is_empty());
    }

    #[test]
    fn split_by_uid() {
        let a = rs("a", 1, 1, "2026-01-01T00:00:00Z");
        let b = rs("b", 1, 1, "2026-01-01T00:00:00Z");
        let list = vec![a, b];
        let (new, old) = split(&list, Some("uid-b"));
        assert_eq!(new.and_then(|r| r.metadata.name), Some("b".into()));
        assert_eq!(old.len(), 1);
        let (new, old) = split(&list, None);
        assert!(new.is_none());
        assert_eq!(old.len(), 2);
    }
}
