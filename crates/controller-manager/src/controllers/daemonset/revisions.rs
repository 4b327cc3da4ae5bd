//! The DaemonSet's ControllerRevisions (upstream's `constructHistory`, `snapshot`,
//! `dedupCurHistories` and `cleanupHistory`): the revision whose data restores the current
//! template is the current one — created when new, renumbered above every other when the
//! template returns to an older one — and its hash labels new pods. Old revisions beyond
//! `revisionHistoryLimit` go, oldest first, unless pods still run them.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::Pod;
use rkube_client::{Api, Patch};
use rkube_types::selector::LabelSelector;
use serde_json::json;
use tracing::info;

use super::{DaemonSetController, key_of};
use crate::controllers::history::{self, CONTROLLER_REVISION_HASH_LABEL};
use crate::error::{Error, Result};
use crate::ownership::{Claimant, owner_reference};

impl DaemonSetController {
    /// Finds the revision of the current template among the DaemonSet's revisions, creating
    /// or renumbering it as needed; returns it and the other (old) revisions (upstream's
    /// `constructHistory`).
    pub(super) async fn construct_history(
        &self,
        ds: &DaemonSet,
        selector: &LabelSelector,
    ) -> Result<(ControllerRevision, Vec<Arc<ControllerRevision>>)> {
        let namespace = ds.metadata.namespace.as_deref().unwrap_or_default();
        let claimed = Claimant::new(ds, selector.clone())
            .claim(&self.client, self.revisions.list_namespace(namespace))
            .await?;
        let template = ds
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let patch = history::template_patch(&template);
        let api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), namespace);
        let mut current = Vec::new();
        let mut old = Vec::new();
        for mut rev in claimed {
            let name = rev.metadata.name.clone().unwrap_or_default();
            if rev
                .metadata
                .labels
                .as_ref()
                .is_none_or(|l| !l.contains_key(CONTROLLER_REVISION_HASH_LABEL))
            {
                // Upstream labels unlabelled revisions with their name.
                let patch = Patch::Merge(
                    json!({"metadata": {"labels": {CONTROLLER_REVISION_HASH_LABEL: name}}}),
                );
                rev = Arc::new(api.patch(&name, &patch).await?);
            }
            if history::data_of(&rev) == &patch {
                current.push(rev);
            } else {
                old.push(rev);
            }
        }
        let next = history::max_revision(&old) + 1;
        let current = match current.len() {
            0 => self.snapshot(ds, patch, next).await?,
            _ => {
                let keep = self.dedup_current(ds, current).await?;
                if keep.revision < next {
                    history::renumber(&self.client, &keep, next).await?
                } else {
                    keep
                }
            }
        };
        Ok((current, old))
    }

    /// Creates the revision of the current template (upstream's `snapshot`); a name taken by
    /// other data bumps the DaemonSet's `collisionCount` and fails, so the retry uses a new
    /// name.
    async fn snapshot(
        &self,
        ds: &DaemonSet,
        data: serde_json::Value,
        number: i64,
    ) -> Result<ControllerRevision> {
        let namespace = ds.metadata.namespace.as_deref().unwrap_or_default();
        let name = ds.metadata.name.as_deref().unwrap_or_default();
        let template = ds.spec.as_ref().map(|s| &s.template);
        let collision_count = ds.status.as_ref().and_then(|s| s.collision_count);
        let snapshot = history::Snapshot {
            owner: owner_reference(ds),
            namespace,
            labels: template
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.as_ref()),
            annotations: ds.metadata.annotations.as_ref(),
            hash_label: CONTROLLER_REVISION_HASH_LABEL,
            data,
            revision: number,
        };
        let revision = snapshot.build(collision_count);
        let rev_name = revision.metadata.name.clone().unwrap_or_default();
        let api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), namespace);
        match api.create(&revision).await {
            Ok(created) => Ok(created),
            Err(e) if e.is_already_exists() => {
                let existing = api.get(&rev_name).await?;
                if history::data_of(&existing) == &snapshot.data {
                    return Ok(existing);
                }
                let daemonsets: Api<DaemonSet> = Api::namespaced(self.client.clone(), namespace);
                let fresh = daemonsets.get(name).await?;
                let fresh_count = fresh.status.as_ref().and_then(|s| s.collision_count);
                if fresh_count != collision_count {
                    return Err(Error::Invalid(format!(
                        "stale collision count of daemonset {namespace}/{name}, retrying"
                    )));
                }
                let bumped = fresh_count.unwrap_or(0).saturating_add(1);
                let patch = Patch::Merge(json!({
                    "metadata": {"resourceVersion": fresh.metadata.resource_version},
                    "status": {"collisionCount": bumped},
                }));
                daemonsets.patch_status(name, &patch).await?;
                info!(daemonset = %key_of(ds), collision_count = bumped, "hash collision, bumped collision count");
                Err(Error::Invalid(format!(
                    "controllerrevision {rev_name} exists with other data"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Keeps the highest-numbered of several revisions of the current template, relabels
    /// pods of the others and deletes them (upstream's `dedupCurHistories`).
    async fn dedup_current(
        &self,
        ds: &DaemonSet,
        mut current: Vec<Arc<ControllerRevision>>,
    ) -> Result<ControllerRevision> {
        history::sort_revisions(&mut current);
        let Some(keep) = current.pop() else {
            return Err(Error::Invalid("no current revision to keep".into()));
        };
        if current.is_empty() {
            return Ok((*keep).clone());
        }
        let keep_hash = keep
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(CONTROLLER_REVISION_HASH_LABEL))
            .cloned()
            .unwrap_or_default();
        let namespace = ds.metadata.namespace.as_deref().unwrap_or_default();
        let uid = ds.metadata.uid.as_deref().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        for pod in self.pods.filter_namespace(namespace, |p| {
            crate::ownership::is_controlled_by(&p.metadata, uid)
        }) {
            let hash = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(CONTROLLER_REVISION_HASH_LABEL));
            if hash != Some(&keep_hash) {
                let name = pod.metadata.name.as_deref().unwrap_or_default();
                let patch = Patch::Merge(
                    json!({"metadata": {"labels": {CONTROLLER_REVISION_HASH_LABEL: keep_hash}}}),
                );
                match pods.patch(name, &patch).await {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        for duplicate in current {
            history::delete(&self.client, &duplicate).await?;
        }
        Ok((*keep).clone())
    }

    /// Deletes old revisions beyond `revisionHistoryLimit`, oldest first, keeping those pods
    /// still run (upstream's `cleanupHistory`).
    pub(super) async fn cleanup_history(
        &self,
        ds: &DaemonSet,
        claimed: &[Arc<Pod>],
        mut old: Vec<Arc<ControllerRevision>>,
    ) -> Result<()> {
        let limit = history::history_limit(ds.spec.as_ref().and_then(|s| s.revision_history_limit));
        let excess = old
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(0));
        if excess == 0 {
            return Ok(());
        }
        let live: HashSet<&String> = claimed
            .iter()
            .filter_map(|p| {
                p.metadata
                    .labels
                    .as_ref()?
                    .get(CONTROLLER_REVISION_HASH_LABEL)
            })
            .collect();
        history::sort_revisions(&mut old);
        for rev in history::prune(&old, excess, |r| {
            r.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(CONTROLLER_REVISION_HASH_LABEL))
                .is_some_and(|h| live.contains(h))
        }) {
            history::delete(&self.client, &rev).await?;
        }
        Ok(())
    }
}
