//! The DaemonSet's writes: daemon pods created and deleted under expectations, creations in
//! slow-start batches (upstream's `syncNodes`), and the status, written only when it
//! differs (upstream's `updateDaemonSetStatus`).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use rkube_client::{Api, DeleteParams, EventType, Patch, object_reference};
use serde_json::json;

use super::placement::{self, Eligibility};
use super::{
    BURST_REPLICAS, DaemonSetController, is_namespace_terminating, key_of, min_ready_seconds,
    node_to_pods, pod_template, template_generation, update,
};
use crate::error::Result;
use crate::ownership::owner_reference;
use crate::pods;

impl DaemonSetController {
    /// Deletes `delete` and creates a pod on each of `create_on`, at most
    /// [`BURST_REPLICAS`] of each, after recording them as expected (upstream's
    /// `syncNodes`). Creations go in slow-start batches (1, 2, 4, …) that stop at the first
    /// failing batch.
    pub(super) async fn sync_nodes(
        &self,
        ds: &DaemonSet,
        delete: Vec<Arc<Pod>>,
        create_on: Vec<String>,
        hash: &str,
    ) -> Result<()> {
        let key = key_of(ds).to_string();
        let create_n = create_on.len().min(BURST_REPLICAS);
        let delete_n = delete.len().min(BURST_REPLICAS);
        let to_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.expectations
            .expect(&key, to_i64(create_n), to_i64(delete_n));
        let namespace = ds.metadata.namespace.as_deref().unwrap_or_default();
        let name = ds.metadata.name.as_deref().unwrap_or_default();
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let template = pod_template(ds, hash);
        let owner = owner_reference(ds);
        let mut errors = Vec::new();

        let mut pos = 0;
        let mut batch = 1.min(create_n);
        while batch > 0 {
            let creations = create_on[pos..pos + batch].iter().map(|node| {
                let mut template = template.clone();
                if let Some(spec) = template.spec.as_mut() {
                    spec.affinity = Some(placement::pin_to_node(spec.affinity.take(), node));
                }
                let pod = pods::from_template(&template, namespace, owner.clone(), None, name);
                let api = pods_api.clone();
                async move { api.create(&pod).await }
            });
            let results = futures::future::join_all(creations).await;
            let mut failed = false;
            for result in results {
                match result {
                    Ok(pod) => {
                        let message = format!(
                            "Created pod: {}",
                            pod.metadata.name.as_deref().unwrap_or_default()
                        );
                        self.recorder
                            .publish(
                                &object_reference(ds),
                                EventType::Normal,
                                "SuccessfulCreate",
                                &message,
                            )
                            .await;
                    }
                    Err(e) => {
                        self.expectations.creation_observed(&key, 1);
                        if !is_namespace_terminating(&e) {
                            failed = true;
                            self.recorder
                                .publish(
                                    &object_reference(ds),
                                    EventType::Warning,
                                    "FailedCreate",
                                    &format!("Error creating: {e}"),
                                )
                                .await;
                            errors.push(e);
                        }
                    }
                }
            }
            pos += batch;
            if failed {
                // The pods never attempted are not expected either.
                self.expectations
                    .creation_observed(&key, to_i64(create_n - pos));
                break;
            }
            batch = (2 * batch).min(create_n - pos);
        }

        let deletions = delete.iter().take(delete_n).map(|pod| {
            let api = pods_api.clone();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let params = match pod.metadata.uid.as_deref() {
                Some(uid) => DeleteParams::default().uid(uid),
                None => DeleteParams::default(),
            };
            async move { (name.clone(), api.delete(&name, &params).await) }
        });
        for (pod, result) in futures::future::join_all(deletions).await {
            match result {
                Ok(_) => {
                    self.recorder
                        .publish(
                            &object_reference(ds),
                            EventType::Normal,
                            "SuccessfulDelete",
                            &format!("Deleted pod: {pod}"),
                        )
                        .await;
                }
                // Gone, or replaced by another pod of the same name: nothing to delete.
                Err(e) if e.is_not_found() || e.is_conflict() => {
                    self.expectations.deletion_observed(&key, 1);
                }
                Err(e) => {
                    self.expectations.deletion_observed(&key, 1);
                    self.recorder
                        .publish(
                            &object_reference(ds),
                            EventType::Warning,
                            "FailedDelete",
                            &format!("Error deleting: {e}"),
                        )
                        .await;
                    errors.push(e);
                }
            }
        }
        match errors.into_iter().next() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Writes the status when it differs (upstream's `updateDaemonSetStatus`); returns when
    /// to look again for pods about to become available.
    pub(super) async fn update_status(
        &self,
        ds: &DaemonSet,
        nodes: &[Arc<Node>],
        claimed: &[Arc<Pod>],
        hash: &str,
        observe_generation: bool,
    ) -> Result<Option<Duration>> {
        let by_node = node_to_pods(claimed, false);
        let generation = template_generation(ds);
        let min_ready = min_ready_seconds(ds);
        let counts = placement::count(
            nodes.iter().map(|node| {
                let name = node.metadata.name.as_deref().unwrap_or_default();
                let pods = by_node.get(name).map(Vec::as_slice).unwrap_or_default();
                let Eligibility { should_run, .. } = placement::node_should_run(node, ds);
                (should_run, pods)
            }),
            |pod| update::is_pod_updated(pod, hash, generation),
            min_ready,
            self.clock.now(),
        );
        let requeue = (min_ready > 0 && counts.ready != counts.available)
            .then(|| Duration::from_secs(u64::from(min_ready.unsigned_abs())));

        let status = ds.status.clone().unwrap_or_default();
        let unavailable = counts.desired - counts.available;
        let same_counts = status.desired_number_scheduled == counts.desired
            && status.current_number_scheduled == counts.current
            && status.number_misscheduled == counts.misscheduled
            && status.number_ready == counts.ready
            && status.updated_number_scheduled.unwrap_or(0) == counts.updated
            && status.number_available.unwrap_or(0) == counts.available
            && status.number_unavailable.unwrap_or(0) == unavailable;
        let observed = status.observed_generation.unwrap_or(0);
        let generation_seen = observed >= ds.metadata.generation.unwrap_or(0);
        if same_counts && (generation_seen || !observe_generation) {
            return Ok(requeue);
        }
        let observed = if observe_generation {
            ds.metadata.generation.unwrap_or(observed)
        } else {
            observed
        };
        let patch = Patch::Merge(json!({"status": {
            "observedGeneration": observed,
            "desiredNumberScheduled": counts.desired,
            "currentNumberScheduled": counts.current,
            "numberMisscheduled": counts.misscheduled,
            "numberReady": counts.ready,
            "updatedNumberScheduled": counts.updated,
            "numberAvailable": counts.available,
            "numberUnavailable": unavailable,
        }}));
        let namespace = ds.metadata.namespace.as_deref().unwrap_or_default();
        let name = ds.metadata.name.as_deref().unwrap_or_default();
        let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), namespace);
        match api.patch_status(name, &patch).await {
            Ok(_) => Ok(requeue),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
