//! The endpointslice controller (upstream's `pkg/controller/endpointslice`): keeps the
//! `discovery.k8s.io/v1` EndpointSlices of every Service with a selector listing the pods
//! behind it, at most [`MAX_ENDPOINTS_PER_SLICE`] endpoints per slice.
//!
//! Each reconcile reads the Service, the pods its selector matches and the slices labelled
//! `kubernetes.io/service-name=<svc>` and `endpointslice.kubernetes.io/managed-by=
//! endpointslice-controller.k8s.io` from the caches, lets the pure [`reconciler`] plan the
//! fewest writes, and carries them out. The [`tracker`] remembers the generation of every
//! slice written, so the controller's own writes do not bring the Service back and a cache
//! that has not caught up with them is waited for rather than planned on.
//!
//! Handlers: a Service change queues its key; a pod change queues the Services whose
//! endpoints it can change; a slice changed or deleted by someone else queues its Service;
//! a node that appears queues the Services whose pods waited for it, and a node whose zone
//! label changes queues the Services of its pods.
//!
//! Slices carry an owner reference to their Service, so the garbage collector deletes them
//! with it; the controller also deletes the slices of a Service it finds gone, so they do
//! not outlive it when no garbage collector runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use rkube_client::{
    Action, Api, Client, DeleteParams, EventType, ObjectRef, Recorder, WorkQueue, object_reference,
};
use tokio::time::Instant;
use tracing::debug;

use crate::context::Context;
use crate::controllers::endpoints::membership::{
    is_namespace_terminating, managed_selector, selects, services_for_pod_change,
};
use crate::controllers::{self, Running};
use crate::error::{Error, Result};
use crate::informer::{Change, Informer};
use crate::ownership::controller_ref;

pub mod reconciler;
pub mod tracker;

#[cfg(test)]
mod tests;

pub use reconciler::{
    LABEL_MANAGED_BY, LABEL_SERVICE_NAME, LABEL_ZONE, MANAGED_BY, MAX_ENDPOINTS_PER_SLICE,
};
use reconciler::{Plan, label, managed_by_controller};
use tracker::{Tracker, service_key};

/// Upstream's name of the controller, which also signs its Events.
pub const NAME: &str = "endpointslice-controller";

/// How soon a Service whose cached slices lag behind the controller's writes is retried.
const STALE_RETRY: Duration = Duration::from_millis(100);

/// The caches, client and bookkeeping one reconcile works with.
struct Controller {
    client: Client,
    services: Informer<Service>,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    slices: Informer<EndpointSlice>,
    recorder: Recorder,
    tracker: Tracker,
    /// Services whose pods were left out because their node is not known yet, by node.
    waiting_for_node: Mutex<BTreeMap<String, BTreeSet<ObjectRef>>>,
}

/// Subscribes the controller to the informers and returns its workers.
pub fn start(ctx: &Context) -> Running {
    let ctrl = Arc::new(Controller {
        client: ctx.client.clone(),
        services: ctx.informer::<Service>(),
        pods: ctx.informer::<Pod>(),
        nodes: ctx.informer::<Node>(),
        slices: ctx.informer::<EndpointSlice>(),
        recorder: ctx.recorder(NAME),
        tracker: Tracker::default(),
        waiting_for_node: Mutex::default(),
    });
    let queue: WorkQueue<ObjectRef> = WorkQueue::new();

    let q = queue.clone();
    ctrl.services
        .subscribe(move |change| q.add(ObjectRef::from_obj(&**change.object())));

    let q = queue.clone();
    let services = ctrl.services.clone();
    ctrl.pods.subscribe(move |change| {
        for key in services_for_pod_change(&services, change) {
            q.add(key);
        }
    });

    let q = queue.clone();
    let weak = Arc::downgrade(&ctrl);
    ctrl.slices.subscribe(move |change| {
        if let Some(ctrl) = weak.upgrade() {
            for key in ctrl.services_for_slice_change(change) {
                q.add(key);
            }
        }
    });

    let q = queue.clone();
    let weak = Arc::downgrade(&ctrl);
    ctrl.nodes.subscribe(move |change| {
        if let Some(ctrl) = weak.upgrade() {
            for key in ctrl.services_for_node_change(change) {
                q.add(key);
            }
        }
    });

    controllers::run_queue(ctx, NAME, queue, move |key| {
        let ctrl = ctrl.clone();
        async move { ctrl.reconcile(key).await }
    })
}

fn zone(node: &Node) -> Option<&str> {
    node.metadata
        .labels
        .as_ref()?
        .get(LABEL_ZONE)
        .map(String::as_str)
}

impl Controller {
    /// Upstream's `onEndpointSliceAdd/Update/Delete`: the Services a slice change needs
    /// reconciled, leaving out the echoes of the controller's own writes.
    fn services_for_slice_change(&self, change: &Change<EndpointSlice>) -> Vec<ObjectRef> {
        match change {
            Change::Added(slice) => {
                if managed_by_controller(slice) && self.tracker.should_sync(slice) {
                    return service_key(slice).into_iter().collect();
                }
            }
            Change::Updated { old, new } => {
                if label(old, LABEL_SERVICE_NAME) != label(new, LABEL_SERVICE_NAME) {
                    return service_key(old)
                        .into_iter()
                        .chain(service_key(new))
                        .collect();
                }
                if managed_by_controller(old) != managed_by_controller(new)
                    || (managed_by_controller(new) && self.tracker.should_sync(new))
                {
                    return service_key(new).into_iter().collect();
                }
            }
            Change::Deleted(slice) => {
                // Unexpected deletions (by someone else, or of slices this run never
                // wrote) bring the Service back to recreate what it needs.
                if managed_by_controller(slice) && !self.tracker.handle_deletion(slice) {
                    return service_key(slice).into_iter().collect();
                }
            }
        }
        Vec::new()
    }

    /// The Services a node change needs reconciled: those whose pods waited for the node
    /// to appear, and, when its zone changes, those selecting pods on it.
    fn services_for_node_change(&self, change: &Change<Node>) -> BTreeSet<ObjectRef> {
        let node = change.object();
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let mut keys = match change {
            Change::Added(_) => self
                .waiting_for_node
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(name)
                .unwrap_or_default(),
            _ => BTreeSet::new(),
        };
        if let Change::Updated { old, new } = change
            && zone(old) != zone(new)
        {
            let pods = self
                .pods
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name));
            for pod in pods {
                let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
                for svc in self.services.filter_namespace(ns, |svc| {
                    managed_selector(svc)
                        .is_some_and(|sel| selects(sel, pod.metadata.labels.as_ref()))
                }) {
                    keys.insert(ObjectRef::from_obj(&*svc));
                }
            }
        }
        keys
    }

    async fn reconcile(&self, key: ObjectRef) -> Result<Action> {
        let ns = key.namespace.clone().unwrap_or_default();
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &ns);
        let ours = |slice: &EndpointSlice| {
            managed_by_controller(slice) && label(slice, LABEL_SERVICE_NAME) == Some(&key.name)
        };
        let Some(svc) = self.services.get(&ns, &key.name) else {
            self.tracker.delete_service(&key);
            self.waiting_for_node
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|_, keys| {
                    keys.remove(&key);
                    !keys.is_empty()
                });
            // The garbage collector would delete them through their owner reference; so
            // does this, for slices a Service controls (not those orphaned on purpose).
            let owned = self.slices.filter_namespace(&ns, |s| {
                ours(s) && controller_ref(&s.metadata).is_some_and(|r| r.kind == "Service")
            });
            for slice in owned {
                let name = slice.metadata.name.as_deref().unwrap_or_default();
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => {
                        debug!(service = %key, slice = name, "deleted slice of deleted service")
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(Action::Done);
        };
        let Some(selector) = managed_selector(&svc) else {
            return Ok(Action::Done);
        };
        let pods = self
            .pods
            .filter_namespace(&ns, |pod| selects(selector, pod.metadata.labels.as_ref()));
        let mut slices = self.slices.filter_namespace(&ns, ours);
        if self.tracker.stale(&key, &slices, Instant::now()) {
            debug!(service = %key, "endpointslice cache is out of date, retrying");
            return Ok(Action::RequeueAfter(STALE_RETRY));
        }
        // Slices pending deletion are neither reused nor counted (upstream's
        // `dropEndpointSlicesPendingDeletion`, which upstream applies before its staleness
        // check; checking first lets a slice held by a finalizer count as gone for a
        // deletion the controller expects, instead of looking stale).
        slices.retain(|s| s.metadata.deletion_timestamp.is_none());
        let nodes = &self.nodes;
        let node_zone = |name: &str| nodes.get("", name).map(|n| zone(&n).map(str::to_string));
        let plan = reconciler::plan(&svc, &pods, &slices, &node_zone, MAX_ENDPOINTS_PER_SLICE);
        let missing = plan.missing_nodes.clone();
        let mut outcome = self.apply(&api, &svc, plan).await;
        if outcome.is_ok() && !missing.is_empty() {
            let mut waiting = self
                .waiting_for_node
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for node in &missing {
                waiting.entry(node.clone()).or_default().insert(key.clone());
            }
            let names: Vec<&str> = missing.iter().map(String::as_str).collect();
            outcome = Err(Error::Invalid(format!(
                "skipping pods for service {key}: node(s) {} not found",
                names.join(", ")
            )));
        }
        match outcome {
            Ok(action) => Ok(action),
            // Creates keep failing until the namespace is gone, which removes the Service.
            Err(Error::Api(e)) if is_namespace_terminating(&e) => Ok(Action::Done),
            Err(e) => {
                // A stale cache is retried quietly; the watch brings the newer objects.
                let stale = matches!(&e, Error::Api(e) if e.is_conflict() || e.is_already_exists());
                if !stale {
                    self.recorder
                        .publish(
                            &object_reference(&*svc),
                            EventType::Warning,
                            "FailedToUpdateEndpointSlices",
                            &format!("Error updating Endpoint Slices for Service {key}: {e}"),
                        )
                        .await;
                }
                Err(e)
            }
        }
    }

    /// Carries out a plan (upstream's `finalize`): creates (unless the Service is being
    /// deleted, so nothing races the garbage collector), updates, then deletes, recording
    /// each in the tracker.
    async fn apply(&self, api: &Api<EndpointSlice>, svc: &Service, plan: Plan) -> Result<Action> {
        if plan.is_empty() {
            return Ok(Action::Done);
        }
        let service = ObjectRef::from_obj(svc);
        if svc.metadata.deletion_timestamp.is_none() {
            for slice in &plan.create {
                let created = api.create(slice).await?;
                debug!(service = %service, slice = ?created.metadata.name, endpoints = created.endpoints.len(), "created endpointslice");
                self.tracker.update(&created);
            }
        }
        for slice in &plan.update {
            let name = slice.metadata.name.as_deref().unwrap_or_default();
            let updated = api.replace(name, slice).await?;
            debug!(service = %service, slice = name, endpoints = updated.endpoints.len(), "updated endpointslice");
            self.tracker.update(&updated);
        }
        for slice in &plan.delete {
            let name = slice.metadata.name.as_deref().unwrap_or_default();
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {
                    debug!(service = %service, slice = name, "deleted endpointslice");
                    self.tracker.expect_deletion(slice);
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Action::Done)
    }
}
