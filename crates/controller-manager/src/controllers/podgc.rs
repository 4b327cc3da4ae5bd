//! The pod garbage collector (upstream `pod-garbage-collector-controller`,
//! `pkg/controller/podgc`): removes pods nobody else will ever finish.
//!
//! - **Orphaned pods**: bound to a node that no longer exists. Once the node has been
//!   missing from the informer cache for [`QUARANTINE`] and a GET confirms it is gone, the
//!   pod is marked `Failed` with a `DisruptionTarget` condition (reason `DeletionByPodGC`)
//!   and force-deleted (grace period 0): no kubelet will ever confirm its termination.
//! - **Unscheduled terminating pods**: being deleted but never bound, so no kubelet will
//!   finish them: force-deleted.
//! - **Terminating pods on out-of-service nodes**: being deleted on a node that is not Ready
//!   and carries the `node.kubernetes.io/out-of-service` taint: force-deleted.
//! - **Terminated pods beyond the threshold**: when more than
//!   `--terminated-pod-gc-threshold` pods have finished (`Succeeded` or `Failed`), the
//!   oldest (evicted ones first) are deleted down to the threshold (0 disables this).
//!
//! Upstream scans every pod every 20 seconds. Here the work is level-triggered instead: the
//! pod handler queues a pod only when one of the cases above may apply to it (its node is
//! not in the cache, it is terminating unscheduled or on an out-of-service node), the node
//! handler queues the pods of a node that is deleted or goes out of service, and a pod
//! finishing queues one cluster-wide "terminated pods" key. The quarantine is a
//! `RequeueAfter` of the pod's key. No periodic pass is needed: every state a case depends
//! on (pods, nodes) arrives by watch, and a failed GET or delete is retried with the key's
//! backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rkube_client::{Action, Api, Client, DeleteParams, ObjectRef, Patch, WorkQueue};
use serde_json::json;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::context::Context;
use crate::controllers::{self, Running};
use crate::error::Result;
use crate::informer::{Change, Informer};
use crate::pods;

/// Upstream's controller name.
pub const NAME: &str = "pod-garbage-collector-controller";

/// How long a node must be missing from the cache before a GET decides whether its pods are
/// orphans. Upstream waits 40 s; the GET is what makes the decision safe (the cache may lag,
/// the apiserver does not), so a shorter wait only has to cover a node re-registering.
pub const QUARANTINE: Duration = Duration::from_secs(5);

/// The taint that tells the garbage collector a NotReady node's pods may be force-deleted.
pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";

/// How many force deletions of terminated pods run at once.
const CONCURRENT_DELETES: usize = 16;

/// The queue key of the terminated-pods pass: cluster-scoped, so it never equals a pod's
/// (always namespaced) key.
fn terminated_key() -> ObjectRef {
    ObjectRef::new("terminated-pods")
}

/// What the garbage collector does with one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Nothing.
    Keep,
    /// Being deleted but never scheduled: force-delete.
    UnscheduledTerminating,
    /// Being deleted on a NotReady node tainted out-of-service: force-delete.
    TerminatingOutOfService,
    /// Bound to this node, which is not in the cache: quarantine, confirm, force-delete.
    NodeMissing(String),
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

fn is_node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

fn is_out_of_service(node: &Node) -> bool {
    !is_node_ready(node)
        && node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT))
}

/// The verdict on `pod`, given its node as the cache has it (`None`: not in the cache).
fn verdict(pod: &Pod, node: Option<&Node>) -> Verdict {
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let bound_to = node_name(pod);
    if bound_to.is_empty() {
        return if terminating {
            Verdict::UnscheduledTerminating
        } else {
            Verdict::Keep
        };
    }
    match node {
        None => Verdict::NodeMissing(bound_to.to_string()),
        Some(node) if terminating && is_out_of_service(node) => Verdict::TerminatingOutOfService,
        Some(_) => Verdict::Keep,
    }
}

/// Upstream's `byEvictionAndCreationTimestamp`: evicted pods first, then the oldest, then
/// by name.
fn deletion_order(a: &Pod, b: &Pod) -> std::cmp::Ordering {
    let evicted = |p: &Pod| {
        pods::phase(p) == "Failed"
            && p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted")
    };
    evicted(b)
        .cmp(&evicted(a))
        .then_with(|| {
            let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(a).cmp(&created(b))
        })
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// The terminated pods to delete so that at most `threshold` remain, in deletion order.
fn terminated_to_delete(pods: &[Arc<Pod>], threshold: usize) -> Vec<Arc<Pod>> {
    let mut terminated: Vec<Arc<Pod>> = pods
        .iter()
        .filter(|p| pods::is_terminated(p))
        .cloned()
        .collect();
    if threshold == 0 || terminated.len() <= threshold {
        return Vec::new();
    }
    terminated.sort_by(|a, b| deletion_order(a, b));
    let excess = terminated.len() - threshold;
    terminated.truncate(excess);
    terminated
}

/// Subscribes the garbage collector to the pod and node informers and returns its workers.
pub fn start(ctx: &Context) -> Running {
    let queue: WorkQueue<ObjectRef> = WorkQueue::new();
    let gc = Arc::new(PodGc {
        client: ctx.client.clone(),
        pods: ctx.informer::<Pod>(),
        nodes: ctx.informer::<Node>(),
        threshold: ctx.settings.terminated_pod_gc_threshold,
        clock: ctx.clock.clone(),
        missing_since: Mutex::default(),
    });
    {
        let (gc2, q) = (gc.clone(), queue.clone());
        gc.pods
            .subscribe(move |change| gc2.on_pod_change(change, &q));
        let (gc2, q) = (gc.clone(), queue.clone());
        gc.nodes
            .subscribe(move |change| gc2.on_node_change(change, &q));
    }
    controllers::run_queue(ctx, NAME, queue, move |key| {
        let gc = gc.clone();
        async move { gc.reconcile(key).await }
    })
}

struct PodGc {
    client: Client,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    threshold: usize,
    clock: Clock,
    /// Nodes missing from the cache, and since when (the quarantine).
    missing_since: Mutex<HashMap<String, Instant>>,
}

impl PodGc {
    fn missing_since(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.missing_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn node_of(&self, pod: &Pod) -> Option<Arc<Node>> {
        self.nodes.get("", node_name(pod))
    }

    fn on_pod_change(&self, change: &Change<Pod>, queue: &WorkQueue<ObjectRef>) {
        let pod = match change {
            Change::Added(pod) | Change::Updated { new: pod, .. } => pod,
            Change::Deleted(_) => return,
        };
        if verdict(pod, self.node_of(pod).as_deref()) != Verdict::Keep {
            queue.add(ObjectRef::from_obj(&**pod));
        }
        let newly_terminated =
            pods::is_terminated(pod) && !change.old().is_some_and(|old| pods::is_terminated(old));
        if self.threshold > 0 && newly_terminated {
            queue.add(terminated_key());
        }
    }

    fn on_node_change(&self, change: &Change<Node>, queue: &WorkQueue<ObjectRef>) {
        let name = change.object().metadata.name.clone().unwrap_or_default();
        match change {
            Change::Added(_) => {
                // Back (or new): whatever quarantine ran for the name is over.
                self.missing_since().remove(&name);
            }
            Change::Updated { old, new } => {
                if is_out_of_service(new) && !is_out_of_service(old) {
                    for pod in self
                        .pods
                        .filter(|p| node_name(p) == name && p.metadata.deletion_timestamp.is_some())
                    {
                        queue.add(ObjectRef::from_obj(&*pod));
                    }
                }
            }
            Change::Deleted(_) => {
                for pod in self.pods.filter(|p| node_name(p) == name) {
                    queue.add(ObjectRef::from_obj(&*pod));
                }
            }
        }
    }

    async fn reconcile(&self, key: ObjectRef) -> Result<Action> {
        if key == terminated_key() {
            return self.gc_terminated().await;
        }
        let namespace = key.namespace.as_deref().unwrap_or_default();
        let Some(pod) = self.pods.get(namespace, &key.name) else {
            return Ok(Action::Done);
        };
        match verdict(&pod, self.node_of(&pod).as_deref()) {
            Verdict::Keep => {
                let node = node_name(&pod);
                if !node.is_empty() {
                    self.missing_since().remove(node);
                }
                Ok(Action::Done)
            }
            Verdict::UnscheduledTerminating => {
                info!(pod = %key, "force deleting unscheduled terminating pod");
                self.mark_failed_and_delete(&pod, None).await?;
                Ok(Action::Done)
            }
            Verdict::TerminatingOutOfService => {
                info!(pod = %key, node = node_name(&pod), "force deleting terminating pod on out-of-service node");
                self.mark_failed_and_delete(&pod, None).await?;
                Ok(Action::Done)
            }
            Verdict::NodeMissing(node) => self.gc_orphan(&key, &pod, &node).await,
        }
    }

    /// A pod whose node is not in the cache: wait out the quarantine, then ask the
    /// apiserver whether the node exists.
    async fn gc_orphan(&self, key: &ObjectRef, pod: &Pod, node: &str) -> Result<Action> {
        let since = *self
            .missing_since()
            .entry(node.to_string())
            .or_insert_with(Instant::now);
        let waited = since.elapsed();
        if waited < QUARANTINE {
            return Ok(Action::RequeueAfter(QUARANTINE - waited));
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        if nodes.get_opt(node).await?.is_some() {
            // The cache lags behind: the node exists. Look again after another quarantine
            // (by then the cache has it and the pod is kept).
            self.missing_since().remove(node);
            return Ok(Action::RequeueAfter(QUARANTINE));
        }
        info!(pod = %key, node, "force deleting orphaned pod, its node no longer exists");
        let condition = PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            reason: Some("DeletionByPodGC".into()),
            message: Some("PodGC: node no longer exists".into()),
            last_transition_time: Some(Time(self.clock.now())),
            ..Default::default()
        };
        self.mark_failed_and_delete(pod, Some(condition)).await?;
        Ok(Action::Done)
    }

    /// Deletes the oldest terminated pods beyond the threshold.
    async fn gc_terminated(&self) -> Result<Action> {
        let doomed = terminated_to_delete(&self.pods.list(), self.threshold);
        if doomed.is_empty() {
            return Ok(Action::Done);
        }
        info!(
            pods = doomed.len(),
            threshold = self.threshold,
            "garbage collecting terminated pods"
        );
        let results: Vec<Result<()>> = futures::stream::iter(doomed)
            .map(|pod| async move { self.mark_failed_and_delete(&pod, None).await })
            .buffer_unordered(CONCURRENT_DELETES)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(Action::Done)
    }

    /// Upstream's `markFailedAndDeletePodWithCondition`: a pod that has not finished is
    /// first marked `Failed` (with `condition`, if given), since no kubelet will ever do
    /// it; then it is deleted with grace period 0.
    async fn mark_failed_and_delete(
        &self,
        pod: &Pod,
        condition: Option<PodCondition>,
    ) -> Result<()> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        if !pods::is_terminated(pod) {
            let mut status = json!({"phase": "Failed"});
            if let Some(condition) = condition {
                // A merge patch replaces the list: send the others as they are.
                let mut conditions: Vec<PodCondition> = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.clone())
                    .unwrap_or_default();
                conditions.retain(|c| c.type_ != condition.type_);
                conditions.push(condition);
                status["conditions"] = json!(conditions);
            }
            match api
                .patch_status(name, &Patch::Merge(json!({ "status": status })))
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        match api.delete(name, &DeleteParams::immediate().uid(&uid)).await {
            Ok(_) => Ok(()),
            // Gone already, or another pod now has the name.
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => {
                warn!(pod = %ObjectRef::from_obj(pod), error = %e, "force deletion failed");
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use k8s_openapi::api::core::v1::{
        NodeCondition, NodeSpec, NodeStatus, PodSpec, PodStatus, Taint,
    };

    fn pod(name: &str, node: Option<&str>, created: i64) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("default".into());
        p.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        p.spec = Some(PodSpec {
            node_name: node.map(Into::into),
            ..Default::default()
        });
        p
    }

    fn finished(mut p: Pod, phase: &str, reason: Option<&str>) -> Pod {
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            reason: reason.map(Into::into),
            ..Default::default()
        });
        p
    }

    fn node(ready: bool, out_of_service: bool) -> Node {
        Node {
            spec: Some(NodeSpec {
                taints: out_of_service.then(|| {
                    vec![Taint {
                        key: OUT_OF_SERVICE_TAINT.into(),
                        effect: "NoExecute".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "Unknown" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn terminating(mut p: Pod) -> Pod {
        p.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        p
    }

    #[test]
    fn verdicts_follow_upstream_cases() {
        let healthy = node(true, false);
        assert_eq!(
            verdict(&pod("a", Some("n1"), 0), Some(&healthy)),
            Verdict::Keep
        );
        assert_eq!(
            verdict(&pod("a", None, 0), None),
            Verdict::Keep,
            "pending scheduling"
        );
        assert_eq!(
            verdict(&pod("a", Some("gone"), 0), None),
            Verdict::NodeMissing("gone".into())
        );
        assert_eq!(
            verdict(&terminating(pod("a", None, 0)), None),
            Verdict::UnscheduledTerminating
        );
        assert_eq!(
            verdict(&terminating(pod("a", Some("n1"), 0)), Some(&healthy)),
            Verdict::Keep,
            "its kubelet finishes it"
        );
        assert_eq!(
            verdict(
                &terminating(pod("a", Some("n1"), 0)),
                Some(&node(false, true))
            ),
            Verdict::TerminatingOutOfService
        );
        assert_eq!(
            verdict(
                &terminating(pod("a", Some("n1"), 0)),
                Some(&node(true, true))
            ),
            Verdict::Keep,
            "the taint counts only on a node that is not Ready"
        );
        assert_eq!(
            verdict(&pod("a", Some("n1"), 0), Some(&node(false, true))),
            Verdict::Keep,
            "only terminating pods"
        );
    }

    #[test]
    fn terminated_pods_beyond_the_threshold_go_evicted_first_then_oldest() {
        let pods: Vec<Arc<Pod>> = vec![
            Arc::new(finished(pod("old-ok", Some("n1"), 10), "Succeeded", None)),
            Arc::new(finished(pod("older-failed", Some("n1"), 5), "Failed", None)),
            Arc::new(finished(
                pod("new-evicted", Some("n1"), 99),
                "Failed",
                Some("Evicted"),
            )),
            Arc::new(finished(pod("newest", Some("n1"), 100), "Succeeded", None)),
            Arc::new(pod("running", Some("n1"), 1)),
        ];
        let names = |v: Vec<Arc<Pod>>| -> Vec<String> {
            v.iter().filter_map(|p| p.metadata.name.clone()).collect()
        };
        assert_eq!(
            names(terminated_to_delete(&pods, 1)),
            ["new-evicted", "older-failed", "old-ok"]
        );
        assert!(
            terminated_to_delete(&pods, 4).is_empty(),
            "4 terminated, threshold 4"
        );
        assert!(
            terminated_to_delete(&pods, 0).is_empty(),
            "0 disables the pass"
        );
    }
}
