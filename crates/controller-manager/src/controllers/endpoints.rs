//! The endpoints controller (upstream's `pkg/controller/endpoint`): keeps the core/v1
//! Endpoints object of every Service with a selector listing the pods behind it.
//!
//! For each Service key the reconcile reads the Service, the pods its selector matches and
//! the current Endpoints from the caches, computes the subsets ([`subsets`]), and creates
//! or replaces the Endpoints only when its subsets or labels differ, so an idle cluster sees
//! no writes. A Service without a selector (or of type ExternalName) is left alone: its
//! Endpoints are written by someone else. When a Service goes, its Endpoints go too; at
//! start-up every existing Endpoints object is checked once so leftovers of Services
//! deleted while the controller was down are removed (upstream's `checkLeftoverEndpoints`).
//!
//! Handlers: a Service change queues its key; a pod change queues the Services whose
//! endpoints it can change ([`membership::services_for_pod_change`]); the deletion of an
//! Endpoints object whose Service has a selector queues that Service so it is recreated.
//!
//! Left out: the `endpoints.kubernetes.io/last-change-trigger-time` annotation (optional
//! upstream too) and the batching of pod updates (`--endpoint-updates-batch-period`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rkube_client::{
    Action, Api, Client, DeleteParams, EventType, ObjectRef, Recorder, WorkQueue, object_reference,
};
use tracing::debug;

use crate::context::Context;
use crate::controllers::{self, Running};
use crate::error::Result;
use crate::informer::{Change, Informer};

pub mod membership;
pub mod subsets;

#[cfg(test)]
mod tests;

use membership::{HEADLESS_LABEL, is_headless, managed_selector, selects};
use subsets::{OVER_CAPACITY_ANNOTATION, desired_subsets, normalized, truncate};

/// Upstream's name of the controller, which also signs its Events.
pub const NAME: &str = "endpoints-controller";

/// Endpoints objects used as leader-election locks carry this annotation; the leftover
/// check leaves them alone, as upstream does.
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

/// The caches and client one reconcile reads and writes through.
struct Controller {
    client: Client,
    services: Informer<Service>,
    pods: Informer<Pod>,
    endpoints: Informer<Endpoints>,
    recorder: Recorder,
    /// The last Endpoints written per Service, until the cache shows it.
    written: Mutex<HashMap<ObjectRef, Written>>,
}

/// An Endpoints object the controller wrote, and the resourceVersion of the one it replaced
/// (`None` after a create). While the cache still holds that one, the written object is
/// the current state: planning on the cache would only fail with a conflict.
struct Written {
    replaced: Option<String>,
    object: Arc<Endpoints>,
}

/// Subscribes the controller to the informers and returns its workers.
pub fn start(ctx: &Context) -> Running {
    let ctrl = Arc::new(Controller {
        client: ctx.client.clone(),
        services: ctx.informer::<Service>(),
        pods: ctx.informer::<Pod>(),
        endpoints: ctx.informer::<Endpoints>(),
        recorder: ctx.recorder(NAME),
        written: Mutex::default(),
    });
    let queue: WorkQueue<ObjectRef> = WorkQueue::new();

    let q = queue.clone();
    ctrl.services
        .subscribe(move |change| q.add(ObjectRef::from_obj(&**change.object())));

    let q = queue.clone();
    let services = ctrl.services.clone();
    ctrl.pods.subscribe(move |change| {
        for key in membership::services_for_pod_change(&services, change) {
            q.add(key);
        }
    });

    let q = queue.clone();
    let services = ctrl.services.clone();
    ctrl.endpoints.subscribe(move |change| {
        if let Change::Deleted(ep) = change {
            let ns = ep.metadata.namespace.as_deref().unwrap_or_default();
            let name = ep.metadata.name.as_deref().unwrap_or_default();
            if services
                .get(ns, name)
                .is_some_and(|svc| managed_selector(&svc).is_some())
            {
                q.add(ObjectRef::from_obj(&**ep));
            }
        }
    });

    let leftovers = ctrl.endpoints.clone();
    let q = queue.clone();
    let reconciler = ctrl.clone();
    let running = controllers::run_queue(ctx, NAME, queue, move |key| {
        let ctrl = reconciler.clone();
        async move { ctrl.reconcile(key).await }
    });
    Box::pin(async move {
        // The daemon polls this once every informer has listed: check every Endpoints
        // object once, so those whose Service is gone are deleted.
        for ep in leftovers.list() {
            let lock = ep
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(LEADER_ANNOTATION));
            if !lock {
                q.add(ObjectRef::from_obj(&*ep));
            }
        }
        running.await;
    })
}

/// The labels of a Service's Endpoints: the Service's own, plus the headless label for a
/// headless Service.
pub fn endpoints_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

/// The Endpoints `svc` should have given the `current` one (if any) and the pods its
/// selector matches; `None` when `current` is already that.
pub fn desired_endpoints(
    svc: &Service,
    pods: &[Arc<Pod>],
    current: Option<&Endpoints>,
) -> Option<Endpoints> {
    let mut subsets = desired_subsets(svc, pods);
    let truncated = truncate(&mut subsets);
    let labels = endpoints_labels(svc);
    if let Some(current) = current {
        let same_subsets = normalized(current.subsets.as_deref()) == subsets;
        let same_labels = current.metadata.labels.clone().unwrap_or_default() == labels;
        let marked = current
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(OVER_CAPACITY_ANNOTATION));
        if same_subsets && same_labels && marked == truncated {
            return None;
        }
    }
    let mut ep = current.cloned().unwrap_or_else(|| Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            ..Default::default()
        },
        subsets: None,
    });
    ep.subsets = (!subsets.is_empty()).then_some(subsets);
    ep.metadata.labels = (!labels.is_empty()).then_some(labels);
    let mut annotations = ep.metadata.annotations.take().unwrap_or_default();
    if truncated {
        annotations.insert(OVER_CAPACITY_ANNOTATION.into(), "truncated".into());
    } else {
        annotations.remove(OVER_CAPACITY_ANNOTATION);
    }
    ep.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    Some(ep)
}

impl Controller {
    fn written(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef, Written>> {
        self.written.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current Endpoints of `key`: what the controller last wrote while the cache
    /// (`cached`) has not caught up with it, else the cached object.
    fn current(&self, key: &ObjectRef, cached: Option<Arc<Endpoints>>) -> Option<Arc<Endpoints>> {
        let mut written = self.written();
        let cached_version = cached
            .as_ref()
            .and_then(|c| c.metadata.resource_version.clone());
        match written.get(key) {
            Some(w) if w.replaced == cached_version => Some(w.object.clone()),
            Some(_) => {
                written.remove(key);
                cached
            }
            None => cached,
        }
    }

    async fn reconcile(&self, key: ObjectRef) -> Result<Action> {
        let ns = key.namespace.clone().unwrap_or_default();
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &ns);
        let Some(svc) = self.services.get(&ns, &key.name) else {
            self.written().remove(&key);
            // The Service is gone: so are its Endpoints.
            match api.delete(&key.name, &DeleteParams::default()).await {
                Ok(_) => debug!(endpoints = %key, "deleted endpoints of deleted service"),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(Action::Done);
        };
        let Some(selector) = managed_selector(&svc) else {
            return Ok(Action::Done);
        };
        let pods = self
            .pods
            .filter_namespace(&ns, |pod| selects(selector, pod.metadata.labels.as_ref()));
        let current = self.current(&key, self.endpoints.get(&ns, &key.name));
        let Some(desired) = desired_endpoints(&svc, &pods, current.as_deref()) else {
            return Ok(Action::Done);
        };
        let result = match &current {
            None => api.create(&desired).await,
            Some(_) => api.replace(&key.name, &desired).await,
        };
        let replaced = current
            .as_ref()
            .and_then(|c| c.metadata.resource_version.clone());
        if result.is_err() {
            self.written().remove(&key);
        }
        match result {
            Ok(object) => {
                debug!(service = %key, "endpoints written");
                let object = Arc::new(object);
                self.written().insert(key, Written { replaced, object });
                Ok(Action::Done)
            }
            // A stale cache: the watch brings the newer object and the retry uses it.
            Err(e) if e.is_conflict() || e.is_already_exists() => Err(e.into()),
            // Creates keep failing until the namespace is gone, which removes the Service.
            Err(e) if current.is_none() && membership::is_namespace_terminating(&e) => {
                debug!(service = %key, "namespace terminating, endpoints not created");
                Ok(Action::Done)
            }
            Err(e) => {
                let (reason, message) = if current.is_none() {
                    (
                        "FailedToCreateEndpoint",
                        format!("Failed to create endpoint for service {key}: {e}"),
                    )
                } else {
                    (
                        "FailedToUpdateEndpoint",
                        format!("Failed to update endpoint {key}: {e}"),
                    )
                };
                self.recorder
                    .publish(
                        &object_reference(&desired),
                        EventType::Warning,
                        reason,
                        &message,
                    )
                    .await;
                Err(e.into())
            }
        }
    }
}
