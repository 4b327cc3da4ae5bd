//! The Job controller's pod writes (upstream's `podControl` calls): creating pods in
//! slow-start batches, deleting them, and removing their tracking finalizer, with the
//! events and expectation bookkeeping each needs.

use std::sync::Arc;

use futures::future::join_all;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use rkube_client::{DeleteParams, EventType};

use super::{JobController, manage, name_of, uid_of};
use crate::error::{Error, Result};
use crate::ownership::owner_reference;

impl JobController {
    /// Creates a pod per entry of `indexes` (`None` for a NonIndexed Job) in slow-start
    /// batches of 1, 2, 4, ... that stop at the first failure; returns how many were made.
    pub(super) async fn create_pods(
        &self,
        job: &Job,
        key: &str,
        template: &PodTemplateSpec,
        indexes: &[Option<i32>],
    ) -> (i32, Option<Error>) {
        let mut created = 0;
        let mut rest = indexes;
        let mut batch = 1;
        while !rest.is_empty() {
            let (now, later) = rest.split_at(batch.min(rest.len()));
            let results = join_all(
                now.iter()
                    .map(|ix| self.create_pod(job, key, template, *ix)),
            )
            .await;
            let mut error = None;
            for result in results {
                match result {
                    Ok(()) => created += 1,
                    Err(e) => error = Some(e),
                }
            }
            rest = later;
            if let Some(error) = error {
                // The skipped pods will not be observed.
                self.expectations
                    .creation_observed(key, i64::try_from(rest.len()).unwrap_or(i64::MAX));
                return (created, Some(error));
            }
            batch *= 2;
        }
        (created, None)
    }

    async fn create_pod(
        &self,
        job: &Job,
        key: &str,
        template: &PodTemplateSpec,
        index: Option<i32>,
    ) -> Result<()> {
        let namespace = job.metadata.namespace.as_deref().unwrap_or_default();
        let job_name = job.metadata.name.as_deref().unwrap_or_default();
        let template = match index {
            Some(i) => manage::indexed_pod_template(template, job_name, i),
            None => template.clone(),
        };
        let prefix = manage::pod_name_prefix(job_name, index);
        let pod =
            crate::pods::from_template(&template, namespace, owner_reference(job), None, &prefix);
        match self.pod_api(namespace).create(&pod).await {
            Ok(pod) => {
                let message = format!("Created pod: {}", name_of(&pod));
                self.event(job, EventType::Normal, "SuccessfulCreate", &message)
                    .await;
                Ok(())
            }
            Err(e) => {
                self.expectations.creation_observed(key, 1);
                let message = format!("Error creating: {e}");
                self.event(job, EventType::Warning, "FailedCreate", &message)
                    .await;
                Err(e.into())
            }
        }
    }

    /// Deletes `pods`. With a `key` (surplus pods of a running Job) their finalizer goes
    /// first, so they are not counted, and failures count down the expectations; without
    /// one (a finishing Job) the finalizer stays until the pods are counted as failed.
    /// Returns (ready pods deleted, pods deleted, first error).
    pub(super) async fn delete_pods(
        &self,
        job: &Job,
        key: Option<&str>,
        pods: &[Arc<Pod>],
    ) -> (i32, i32, Option<Error>) {
        let results = join_all(pods.iter().map(|pod| self.delete_pod(job, key, pod))).await;
        let mut deleted_ready = 0;
        let mut deleted = 0;
        let mut error = None;
        for (pod, result) in pods.iter().zip(results) {
            match result {
                Ok(()) => {
                    deleted += 1;
                    if crate::pods::is_ready(pod) {
                        deleted_ready += 1;
                    }
                }
                Err(e) => error = Some(e),
            }
        }
        (deleted_ready, deleted, error)
    }

    async fn delete_pod(&self, job: &Job, key: Option<&str>, pod: &Pod) -> Result<()> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let api = self.pod_api(namespace);
        let failed = |e: rkube_client::Error| {
            if let Some(key) = key {
                self.expectations.deletion_observed(key, 1);
            }
            e
        };
        if key.is_some()
            && let Some(patch) = manage::remove_finalizer_patch(pod)
        {
            match api.patch(name_of(pod), &patch).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {
                    failed(e);
                    return Ok(());
                }
                Err(e) => return Err(failed(e).into()),
            }
        }
        let params = DeleteParams::default().uid(uid_of(pod));
        match api.delete(name_of(pod), &params).await {
            Ok(_) => {
                let message = format!("Deleted pod: {}", name_of(pod));
                self.event(job, EventType::Normal, "SuccessfulDelete", &message)
                    .await;
                Ok(())
            }
            Err(e) if e.is_not_found() => {
                failed(e);
                Ok(())
            }
            Err(e) => {
                let message = format!("Error deleting: {e}");
                self.event(job, EventType::Warning, "FailedDelete", &message)
                    .await;
                Err(failed(e).into())
            }
        }
    }

    /// Removes the tracking finalizer of `pods`; returns the UIDs it is gone from.
    pub(super) async fn release_pods(
        &self,
        key: &str,
        pods: &[Arc<Pod>],
    ) -> (Vec<String>, Option<Error>) {
        self.finalizers
            .expect(key, pods.iter().map(|p| uid_of(p).to_string()));
        let results = join_all(pods.iter().map(|pod| async move {
            let Some(patch) = manage::remove_finalizer_patch(pod) else {
                return Ok(());
            };
            let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
            match self.pod_api(namespace).patch(name_of(pod), &patch).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    // No update will show the removal.
                    self.finalizers.observed(key, uid_of(pod));
                    if e.is_not_found() { Ok(()) } else { Err(e) }
                }
            }
        }))
        .await;
        let mut released = Vec::new();
        let mut error = None;
        for (pod, result) in pods.iter().zip(results) {
            match result {
                Ok(()) => released.push(uid_of(pod).to_string()),
                Err(e) => error = Some(e.into()),
            }
        }
        (released, error)
    }
}
