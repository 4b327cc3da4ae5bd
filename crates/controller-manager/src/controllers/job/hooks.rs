//! The Job controller's informer handlers (upstream's `addPod`/`updatePod`/`deletePod`
//! and the Job handlers): they map pod and Job changes to keys of the Job queue or the
//! orphan-pod queue and count expectations down; nothing else.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use rkube_client::{ObjectRef, WorkQueue};

use super::manage::{self, has_tracking_finalizer};
use super::status;
use super::tracking::FinalizerExpectations;
use super::{is_job_ref, uid_of};
use crate::expectations::Expectations;
use crate::informer::{Change, Informer};
use crate::ownership::{controller_ref, is_controlled_by};

/// The informer handlers: they map pod and Job changes to keys and count expectations.
#[derive(Clone)]
pub(super) struct Hooks {
    pub(super) jobs: Informer<Job>,
    pub(super) pods: Informer<Pod>,
    pub(super) queue: WorkQueue<ObjectRef>,
    pub(super) orphans: WorkQueue<ObjectRef>,
    pub(super) expectations: Arc<Expectations>,
    pub(super) finalizers: Arc<FinalizerExpectations>,
}

impl Hooks {
    /// The Job `reference` names, if it is in the cache with that UID.
    fn resolve(&self, namespace: &str, reference: &OwnerReference) -> Option<Arc<Job>> {
        if !is_job_ref(reference) {
            return None;
        }
        self.jobs
            .get(namespace, &reference.name)
            .filter(|j| j.metadata.uid.as_deref() == Some(reference.uid.as_str()))
    }

    /// Jobs whose selector matches an orphan pod.
    fn matching(&self, pod: &Pod) -> Vec<Arc<Job>> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        self.jobs.filter_namespace(namespace, |job| {
            manage::selector(job).is_ok_and(|s| !s.is_everything() && s.matches(&labels))
        })
    }

    pub(super) fn on_pod(&self, change: &Change<Pod>) {
        match change {
            Change::Added(pod) => {
                if pod.metadata.deletion_timestamp.is_some() {
                    self.pod_going(pod, false, true);
                    return;
                }
                let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
                match controller_ref(&pod.metadata) {
                    Some(reference) => match self.resolve(namespace, reference) {
                        Some(job) => {
                            let key = ObjectRef::from_obj(&*job);
                            self.expectations.creation_observed(&key.to_string(), 1);
                            self.queue.add(key);
                        }
                        None if is_job_ref(reference) && has_tracking_finalizer(pod) => {
                            self.orphans.add(ObjectRef::from_obj(&**pod));
                        }
                        None => {}
                    },
                    None => {
                        if has_tracking_finalizer(pod) {
                            self.orphans.add(ObjectRef::from_obj(&**pod));
                        }
                        for job in self.matching(pod) {
                            self.queue.add(ObjectRef::from_obj(&*job));
                        }
                    }
                }
            }
            Change::Updated { old, new } => {
                if old.metadata.resource_version == new.metadata.resource_version {
                    return;
                }
                if new.metadata.deletion_timestamp.is_some() {
                    let newly = old.metadata.deletion_timestamp.is_none();
                    self.pod_going(new, false, newly);
                    return;
                }
                let namespace = new.metadata.namespace.as_deref().unwrap_or_default();
                let released = !has_tracking_finalizer(new);
                let (cur, prev) = (controller_ref(&new.metadata), controller_ref(&old.metadata));
                let owner_changed = cur != prev;
                if owner_changed
                    && let Some(prev) = prev
                    && let Some(job) = self.resolve(namespace, prev)
                {
                    self.sync_owner(&job, new, released);
                }
                if let Some(cur) = cur {
                    match self.resolve(namespace, cur) {
                        Some(job) => self.sync_owner(&job, new, released),
                        None if is_job_ref(cur) && !released => {
                            self.orphans.add(ObjectRef::from_obj(&**new));
                        }
                        None => {}
                    }
                    return;
                }
                if !released {
                    self.orphans.add(ObjectRef::from_obj(&**new));
                }
                if owner_changed || old.metadata.labels != new.metadata.labels {
                    for job in self.matching(new) {
                        self.queue.add(ObjectRef::from_obj(&*job));
                    }
                }
            }
            Change::Deleted(pod) => {
                let unseen = pod.metadata.deletion_timestamp.is_none();
                self.pod_going(pod, true, unseen);
            }
        }
    }

    fn sync_owner(&self, job: &Job, pod: &Pod, released: bool) {
        let key = ObjectRef::from_obj(job);
        if released {
            self.finalizers.observed(&key.to_string(), uid_of(pod));
        } else if status::finished(job).is_some() {
            // A finished Job no longer counts its pods.
            self.orphans.add(ObjectRef::from_obj(pod));
        }
        self.queue.add(key);
    }

    /// A pod is being deleted (`gone`: it is deleted); `count` when this is the first sign
    /// of its deletion.
    fn pod_going(&self, pod: &Pod, gone: bool, count: bool) {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let holds = has_tracking_finalizer(pod);
        let Some(reference) = controller_ref(&pod.metadata) else {
            if holds {
                self.orphans.add(ObjectRef::from_obj(pod));
            }
            return;
        };
        match self.resolve(namespace, reference) {
            Some(job) if status::finished(&job).is_none() => {
                let key = ObjectRef::from_obj(&*job);
                let key_s = key.to_string();
                if count {
                    self.expectations.deletion_observed(&key_s, 1);
                }
                if gone || !holds {
                    self.finalizers.observed(&key_s, uid_of(pod));
                }
                self.queue.add(key);
            }
            _ => {
                if holds && is_job_ref(reference) {
                    self.orphans.add(ObjectRef::from_obj(pod));
                }
            }
        }
    }

    pub(super) fn on_job(&self, change: &Change<Job>) {
        let job = change.object();
        self.queue.add(ObjectRef::from_obj(&**job));
        if matches!(change, Change::Deleted(_)) || status::finished(job).is_some() {
            // Nothing will sync these pods again: their finalizers go through the orphan
            // queue (upstream's cleanupPodFinalizers).
            let namespace = job.metadata.namespace.as_deref().unwrap_or_default();
            let uid = job.metadata.uid.as_deref().unwrap_or_default();
            for pod in self.pods.filter_namespace(namespace, |p| {
                has_tracking_finalizer(p) && is_controlled_by(&p.metadata, uid)
            }) {
                self.orphans.add(ObjectRef::from_obj(&*pod));
            }
        }
    }
}
