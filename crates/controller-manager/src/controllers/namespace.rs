//! The namespace controller (upstream's `namespace-controller`): empties a namespace being
//! deleted, then releases it.
//!
//! `kubectl delete namespace x` marks the namespace (deletionTimestamp, phase Terminating);
//! the apiserver keeps it while `spec.finalizers` holds `kubernetes`. Each reconcile of such
//! a namespace deletes every object of every namespaced resource in it (pods gracefully:
//! the kubelet finishes them), lists what is left, reports it in the namespace's conditions
//! ([`conditions`]) and, once nothing is left, removes `kubernetes` through the `finalize`
//! subresource, upon which the apiserver deletes the namespace.
//!
//! Work arrives by watch: the namespace's own changes, and the deletion of any object in a
//! terminating namespace (the metadata informers the garbage collector also uses). The
//! re-check upstream schedules from the pods' grace periods stays as a guard.

pub mod conditions;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rkube_client::{
    Action, Api, Client, DeleteParams, ListParams, ObjectRef, Patch, PostParams, PropagationPolicy,
    WorkQueue,
};
use rkube_types::{ResourceInfo, registry};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::context::Context;
use crate::controllers::{self, Running};
use crate::error::{Error, Result};
use crate::informer::{Change, Informer};
use crate::metadata::PartialObjectMeta;

use self::conditions::ContentTotals;

/// Upstream's name of the controller.
pub const NAME: &str = "namespace-controller";
/// The finalizer in `spec.finalizers` that is this controller's to remove.
pub const FINALIZER: &str = "kubernetes";
/// How long objects held by finalizers are given before the next look (upstream: 15 s).
const FINALIZER_ESTIMATE_SECONDS: i64 = 15;
/// How long after an object of a terminating namespace goes its namespace is looked at
/// again, so that many going at once make one pass over the content, not one each.
const CONTENT_SETTLE: Duration = Duration::from_millis(200);

/// Subscribes the controller to the informers and returns its workers.
pub fn start(ctx: &Context) -> Running {
    let namespaces = ctx.informer::<Namespace>();
    let queue: WorkQueue<ObjectRef> = WorkQueue::new();
    namespaces.subscribe({
        let queue = queue.clone();
        move |change| {
            let ns = change.object();
            if ns.metadata.deletion_timestamp.is_some() {
                queue.add(ObjectRef::from_obj(&**ns));
            }
        }
    });
    macro_rules! watch_content {
        ($($ty:ty),* $(,)?) => { $( watch_content::<$ty>(ctx, &namespaces, &queue); )* };
    }
    rkube_types::for_each_kind!(watch_content);
    let controller = Arc::new(NamespaceController {
        client: ctx.client.clone(),
        clock: ctx.clock.clone(),
    });
    controllers::run_queue(ctx, NAME, queue, move |key| {
        let controller = controller.clone();
        async move { controller.reconcile(&key.name).await }
    })
}

/// Queues a terminating namespace when an object of kind `K` in it goes away.
fn watch_content<K: k8s_openapi::Resource + 'static>(
    ctx: &Context,
    namespaces: &Informer<Namespace>,
    queue: &WorkQueue<ObjectRef>,
) {
    let namespaced = registry::for_type::<K>().is_some_and(|r| r.namespaced);
    // Events come and go on their own; the garbage collector does not watch them either.
    if !namespaced || K::KIND == "Event" {
        return;
    }
    let (namespaces, queue) = (namespaces.clone(), queue.clone());
    ctx.informer::<PartialObjectMeta<K>>()
        .subscribe(move |change| {
            if let Change::Deleted(obj) = change
                && let Some(ns) = obj.metadata.namespace.as_deref()
                && namespaces
                    .get("", ns)
                    .is_some_and(|n| n.metadata.deletion_timestamp.is_some())
            {
                // A burst of deletions (a namespace's pods finishing) makes one pass.
                queue.add_after(ObjectRef::new(ns), CONTENT_SETTLE);
            }
        });
}

/// What deleting the objects of one resource left behind.
#[derive(Debug, Clone, Default, PartialEq)]
struct ResourceOutcome {
    /// Seconds to wait for what is left (graceful pods, finalizers).
    estimate: i64,
    /// Objects left.
    remaining: usize,
    /// Objects left, by finalizer.
    finalizers: BTreeMap<String, usize>,
}

/// Upstream's `group/version, Resource=plural` form of a resource, used in messages.
fn gvr(info: &ResourceInfo) -> String {
    format!("{}/{}, Resource={}", info.group, info.version, info.plural)
}

/// The longest grace period of the pods in `pods` that have not finished, cut to zero once
/// `elapsed` (since the namespace was marked) reaches it (upstream's
/// `estimateGracefulTerminationForPods`).
fn pod_estimate(pods: &[Value], elapsed: Duration) -> i64 {
    let estimate = pods
        .iter()
        .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        .filter_map(|p| p["spec"]["terminationGracePeriodSeconds"].as_i64())
        .max()
        .unwrap_or(0)
        .max(0);
    if elapsed >= Duration::from_secs(estimate.unsigned_abs()) {
        0
    } else {
        estimate
    }
}

/// What is left of one resource after its objects were deleted: counts, finalizers, and
/// whether that is expected (waiting on a grace period or finalizers) or an error.
fn judge_remaining(
    namespace: &str,
    info: &ResourceInfo,
    estimate: i64,
    remaining: &[Value],
) -> (ResourceOutcome, Option<String>) {
    let mut outcome = ResourceOutcome {
        estimate,
        remaining: remaining.len(),
        finalizers: BTreeMap::new(),
    };
    for item in remaining {
        for f in item["metadata"]["finalizers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(f) = f.as_str() {
                *outcome.finalizers.entry(f.to_string()).or_default() += 1;
            }
        }
    }
    if remaining.is_empty() || estimate != 0 {
        return (outcome, None);
    }
    if !outcome.finalizers.is_empty() {
        // Finalizers are normal; their owners are given time.
        outcome.estimate = FINALIZER_ESTIMATE_SECONDS;
        return (outcome, None);
    }
    let error = format!(
        "unexpected items still remain in namespace: {namespace} for gvr: {}",
        gvr(info)
    );
    (outcome, Some(error))
}

struct NamespaceController {
    client: Client,
    clock: Clock,
}

impl NamespaceController {
    async fn reconcile(&self, name: &str) -> Result<Action> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        // Several actors edit a terminating namespace: read it live.
        let Some(ns) = api.get_opt(name).await? else {
            return Ok(Action::Done);
        };
        let Some(deleted_at) = ns.metadata.deletion_timestamp.clone() else {
            return Ok(Action::Done);
        };
        let finalizers = ns
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.clone())
            .unwrap_or_default();
        if !finalizers.iter().any(|f| f == FINALIZER) {
            return Ok(Action::Done);
        }

        let elapsed = self.clock.since(deleted_at.0);
        let (totals, estimate) = self.delete_all_content(name, elapsed).await;
        let ns = self.report(&api, ns, &totals).await;

        if !totals.delete_errors.is_empty() {
            return Err(Error::Invalid(format!(
                "deleting the content of namespace {name} failed: {}",
                totals.delete_errors.join("; ")
            )));
        }
        if estimate > 0 {
            let wait = Duration::from_secs((estimate / 2 + 1).unsigned_abs());
            debug!(
                namespace = name,
                estimate, "content remains in the namespace"
            );
            return Ok(Action::RequeueAfter(wait));
        }

        let rest: Vec<String> = finalizers.into_iter().filter(|f| f != FINALIZER).collect();
        let patch = Patch::Merge(json!({
            "metadata": {"resourceVersion": ns.metadata.resource_version},
            "spec": {"finalizers": rest},
        }));
        match api
            .patch_with(name, &patch, "finalize", &PostParams::default())
            .await
        {
            Ok(_) => info!(
                namespace = name,
                "namespace content deleted, namespace finalized"
            ),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Action::Done)
    }

    /// Writes the conditions for `totals` into the namespace's status if they differ;
    /// returns the namespace as it is afterwards. A failure is only logged, as upstream.
    async fn report(
        &self,
        api: &Api<Namespace>,
        ns: Namespace,
        totals: &ContentTotals,
    ) -> Namespace {
        let now = Time(self.clock.now());
        let mut current = ns
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        if !conditions::merge(&mut current, conditions::desired(totals, &now)) {
            return ns;
        }
        let name = ns.metadata.name.clone().unwrap_or_default();
        let patch = Patch::Merge(json!({"status": {"conditions": current}}));
        match api.patch_status(&name, &patch).await {
            Ok(updated) => updated,
            Err(e) => {
                warn!(namespace = %name, error = %e, "updating the namespace's conditions failed");
                ns
            }
        }
    }

    /// Deletes every object of every namespaced resource in `namespace`; returns what is
    /// left and how long to wait for it.
    async fn delete_all_content(&self, namespace: &str, elapsed: Duration) -> (ContentTotals, i64) {
        let mut totals = ContentTotals::default();
        let mut estimate = 0;
        for info in registry::all().iter().filter(|r| r.namespaced) {
            let (outcome, error) = self.delete_resource(info, namespace, elapsed).await;
            estimate = estimate.max(outcome.estimate);
            if outcome.remaining > 0 {
                totals.remaining.insert(
                    (info.plural.to_string(), info.group.to_string()),
                    outcome.remaining,
                );
                for (f, n) in outcome.finalizers {
                    *totals.finalizers.entry(f).or_default() += n;
                }
            }
            if let Some(error) = error {
                totals.delete_errors.push(error);
            }
        }
        (totals, estimate)
    }

    /// Deletes the objects of one resource in `namespace` and judges what is left.
    async fn delete_resource(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        elapsed: Duration,
    ) -> (ResourceOutcome, Option<String>) {
        let api: Api<Value> = Api::dynamic(
            self.client.clone(),
            info.group,
            info.version,
            info.plural,
            namespace,
        );
        let items = match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(e) => return (ResourceOutcome::default(), Some(e.to_string())),
        };
        if items.is_empty() {
            return (ResourceOutcome::default(), None);
        }
        let estimate = if info.group.is_empty() && info.plural == "pods" {
            pod_estimate(&items, elapsed)
        } else {
            0
        };
        // Dependents are deleted here too, so the collector need not orphan anything.
        let params = DeleteParams::default().propagation(PropagationPolicy::Background);
        for item in &items {
            if !item["metadata"]["deletionTimestamp"].is_null() {
                continue;
            }
            let name = item["metadata"]["name"].as_str().unwrap_or_default();
            match api.delete(name, &params).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    let outcome = ResourceOutcome {
                        estimate,
                        ..Default::default()
                    };
                    return (outcome, Some(e.to_string()));
                }
            }
        }
        let remaining = match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(e) => {
                let outcome = ResourceOutcome {
                    estimate,
                    ..Default::default()
                };
                return (outcome, Some(e.to_string()));
            }
        };
        judge_remaining(namespace, info, estimate, &remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static ResourceInfo {
        registry::lookup("", "v1", "pods").expect("pods")
    }

    fn pod(phase: &str, grace: i64) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"terminationGracePeriodSeconds": grace},
            "status": {"phase": phase}})
    }

    #[test]
    fn pods_are_given_their_longest_grace_period_from_the_deletion() {
        let items = [
            pod("Running", 30),
            pod("Running", 10),
            pod("Succeeded", 300),
        ];
        assert_eq!(pod_estimate(&items, Duration::ZERO), 30);
        assert_eq!(pod_estimate(&items, Duration::from_secs(29)), 30);
        assert_eq!(
            pod_estimate(&items, Duration::from_secs(30)),
            0,
            "time is up"
        );
        assert_eq!(pod_estimate(&[pod("Failed", 30)], Duration::ZERO), 0);
    }

    #[test]
    fn what_remains_is_waited_for_only_with_a_grace_period_or_finalizers() {
        let (outcome, error) = judge_remaining("x", pods(), 0, &[]);
        assert_eq!((outcome.remaining, error), (0, None));

        let (outcome, error) = judge_remaining("x", pods(), 30, &[pod("Running", 30)]);
        assert_eq!((outcome.estimate, outcome.remaining, error), (30, 1, None));

        let held = json!({"metadata": {"name": "c", "finalizers": ["example.com/hold"]}});
        let (outcome, error) = judge_remaining("x", pods(), 0, &[held]);
        assert_eq!(outcome.estimate, FINALIZER_ESTIMATE_SECONDS);
        assert_eq!(outcome.finalizers.get("example.com/hold"), Some(&1));
        assert_eq!(error, None);

        let (_, error) = judge_remaining("x", pods(), 0, &[pod("Running", 30)]);
        assert_eq!(
            error.as_deref(),
            Some("unexpected items still remain in namespace: x for gvr: /v1, Resource=pods")
        );
    }
}
