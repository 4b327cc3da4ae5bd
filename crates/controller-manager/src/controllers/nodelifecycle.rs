//! The node lifecycle controller (upstream's `node-lifecycle-controller`, with the taint
//! eviction controller it drives): notices nodes whose kubelet went silent, taints unhealthy
//! nodes, and evicts the pods that do not tolerate those taints.
//!
//! Two work queues share one state:
//!
//! - **Nodes** (keyed by name; re-queued by node and Lease changes, at the exact moment a
//!   node's grace period runs out, and every `--node-monitor-period` as a resync). A
//!   reconcile updates the node's [`health`]; a silent node gets every kubelet condition
//!   `Unknown` (reason `NodeStatusUnknown`) through the status subresource and a
//!   `NodeNotReady` Event. Then the node's managed [`taints`] are made to match its
//!   conditions (`not-ready`/`unreachable` `NoExecute` and the `NoSchedule` condition
//!   taints), with a node update guarded by its resourceVersion. Pods on a node whose
//!   `Ready` is not `True` are marked `Ready=False` (upstream's `MarkPodsNotReady`, with a
//!   `NodeNotReady` Event on each) when they became ready before the node stopped being
//!   ready, so a live kubelet that marks its pods ready again later is never fought.
//! - **Pods** on nodes with `NoExecute` taints (keyed `namespace/name`; re-queued when the
//!   pod changes, when its node's `NoExecute` taints change, and at its eviction time). A
//!   reconcile [`eviction::decide`]s: a pod that does not tolerate a taint is deleted
//!   (gracefully) at once, one that tolerates it for `tolerationSeconds` that long after the
//!   taint's `timeAdded`, one that tolerates it without a limit stays. An evicted pod gets
//!   the `DisruptionTarget` condition and a `TaintManagerEviction` Event, as upstream.
//!
//! Time comes from the context's clock; with a manual clock every node and tainted pod is
//! re-queued whenever the clock moves, so tests need not wait.
//!
//! Left out, as simplifications of upstream: per-zone eviction rate limits
//! (`--node-eviction-rate`, `--secondary-node-eviction-rate`, the partial-disruption
//! threshold) — `NoExecute` taints are added as soon as a node turns unhealthy; only the
//! cluster-wide "full disruption" guard is kept (no node ready → no `NoExecute` taints), and
//! leaving it does not reset the other nodes' probe times. The `RegisteredNode` and
//! `RemovingNode` Events and the cancellation Event of a scheduled eviction are not written,
//! and the legacy beta labels are not reconciled.

pub mod eviction;
pub mod health;
pub mod taints;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rkube_client::events::object_reference;
use rkube_client::{Action, Api, DeleteParams, EventType, ObjectRef, Patch, Recorder, WorkQueue};
use serde_json::{Value, json};
use tracing::info;

use self::eviction::Eviction;
use self::health::Health;
use crate::context::Context;
use crate::controllers::{Running, run_queue};
use crate::error::Result;
use crate::informer::{Change, Informer};

/// The controller's name, in Events and metrics.
pub const NAME: &str = "node-lifecycle-controller";
/// The name of the taint eviction half, in Events and metrics (as upstream's separate
/// controller).
pub const TAINT_EVICTION: &str = "taint-eviction-controller";
/// Where kubelets keep their heartbeat Leases, one per node, named after it.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// Nodes with this label do not count when deciding whether the cluster is fully disrupted.
pub const EXCLUDE_DISRUPTION_LABEL: &str = "node.kubernetes.io/exclude-disruption";

/// A taint on a node, for remembering when a taint without `timeAdded` was first seen.
type TaintId = (String, String, String, String);

fn taint_id(node: &str, taint: &Taint) -> TaintId {
    (
        node.to_string(),
        taint.key.clone(),
        taint.value.clone().unwrap_or_default(),
        taint.effect.clone(),
    )
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What both queues' reconciles share.
struct Lifecycle {
    ctx: Context,
    nodes: Informer<Node>,
    leases: Informer<Lease>,
    pods: Informer<Pod>,
    /// Heartbeat bookkeeping per node name.
    health: Mutex<HashMap<String, Health>>,
    /// When taints that carry no `timeAdded` were first seen.
    taints_seen: Mutex<HashMap<TaintId, Timestamp>>,
    recorder: Recorder,
    eviction_recorder: Recorder,
}

/// Subscribes the controller to the informers and returns its workers.
pub fn start(ctx: &Context) -> Running {
    let nodes = ctx.informer::<Node>();
    let leases = ctx.informer::<Lease>();
    let pods = ctx.informer::<Pod>();
    let node_queue: WorkQueue<ObjectRef> = WorkQueue::new();
    let pod_queue: WorkQueue<ObjectRef> = WorkQueue::new();

    nodes.subscribe({
        let (nodes, pods) = (nodes.clone(), pods.clone());
        let (node_queue, pod_queue) = (node_queue.clone(), pod_queue.clone());
        move |change| {
            let node = change.object();
            let name = node.metadata.name.clone().unwrap_or_default();
            node_queue.add(ObjectRef::new(&name));
            let is_ready = |n: &Node| health::ready_status(n) == Some("True");
            let flipped = match change {
                Change::Updated { old, new } => is_ready(old) != is_ready(new),
                Change::Deleted(_) => true,
                Change::Added(_) => false,
            };
            if flipped {
                // Whether the cluster is fully disrupted may have changed for every node.
                for other in nodes.list() {
                    node_queue.add(ObjectRef::from_obj(&*other));
                }
            }
            let before = change
                .old()
                .map(|o| taints::no_execute(o))
                .unwrap_or_default();
            let after = match change {
                Change::Deleted(_) => Vec::new(),
                _ => taints::no_execute(node),
            };
            if before != after {
                for pod in pods_on(&pods, &name) {
                    pod_queue.add(ObjectRef::from_obj(&*pod));
                }
            }
        }
    });
    leases.subscribe({
        let node_queue = node_queue.clone();
        move |change| {
            let meta = &change.object().metadata;
            if meta.namespace.as_deref() == Some(NODE_LEASE_NAMESPACE) {
                node_queue.add(ObjectRef::new(meta.name.as_deref().unwrap_or_default()));
            }
        }
    });
    pods.subscribe({
        let (nodes, pod_queue) = (nodes.clone(), pod_queue.clone());
        move |change| {
            if matches!(change, Change::Deleted(_)) {
                return;
            }
            let pod = change.object();
            if pod.metadata.deletion_timestamp.is_some() {
                return;
            }
            let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
                return;
            };
            if nodes
                .get("", node)
                .is_some_and(|n| !taints::no_execute(&n).is_empty())
            {
                pod_queue.add(ObjectRef::from_obj(&**pod));
            }
        }
    });

    let lifecycle = Arc::new(Lifecycle {
        ctx: ctx.clone(),
        nodes,
        leases,
        pods,
        health: Mutex::default(),
        taints_seen: Mutex::default(),
        recorder: ctx.recorder(NAME),
        eviction_recorder: ctx.recorder(TAINT_EVICTION),
    });
    let node_workers = run_queue(ctx, NAME, node_queue.clone(), {
        let lifecycle = lifecycle.clone();
        move |key| {
            let lifecycle = lifecycle.clone();
            async move { lifecycle.reconcile_node(key).await }
        }
    });
    let pod_workers = run_queue(ctx, TAINT_EVICTION, pod_queue.clone(), {
        let lifecycle = lifecycle.clone();
        move |key| {
            let lifecycle = lifecycle.clone();
            async move { lifecycle.reconcile_pod(key).await }
        }
    });
    let resync = lifecycle.resync_on_clock(node_queue, pod_queue);
    Box::pin(async move {
        futures::join!(node_workers, pod_workers, resync);
    })
}

/// The pods bound to `node`.
fn pods_on(pods: &Informer<Pod>, node: &str) -> Vec<Arc<Pod>> {
    pods.filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
}

/// Whether no node (of those that count) is ready, with `this` standing for its cached
/// copy. An empty cluster is not disrupted.
fn fully_disrupted(nodes: &[Arc<Node>], this: &Node) -> bool {
    let name = this.metadata.name.as_deref();
    let counts = |n: &Node| {
        !n.metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(EXCLUDE_DISRUPTION_LABEL))
    };
    let mut any = false;
    let others = nodes
        .iter()
        .map(|n| &**n)
        .filter(|n| n.metadata.name.as_deref() != name);
    for node in others.chain(std::iter::once(this)).filter(|n| counts(n)) {
        if health::ready_status(node) == Some("True") {
            return false;
        }
        any = true;
    }
    any
}

/// The pod's conditions with `Ready` turned `False` at `now`, when its node stopped being
/// ready at `node_since` (`None`: unknown) and the pod has been ready since no later than
/// that; `None` when nothing is to change.
pub fn not_ready_conditions(
    pod: &Pod,
    node_since: Option<Timestamp>,
    now: Timestamp,
) -> Option<Vec<PodCondition>> {
    let mut conditions = pod.status.as_ref()?.conditions.clone()?;
    let ready = conditions.iter_mut().find(|c| c.type_ == "Ready")?;
    if ready.status == "False" {
        return None;
    }
    let pod_since = ready.last_transition_time.as_ref().map(|t| t.0);
    if let (Some(pod_since), Some(node_since)) = (pod_since, node_since)
        && pod_since > node_since
    {
        // The kubelet marked the pod ready after the node turned unready: it is alive and
        // owns the pod's status.
        return None;
    }
    ready.status = "False".into();
    ready.last_transition_time = Some(Time(now));
    Some(conditions)
}

/// The pod's conditions with `DisruptionTarget=True` for a taint eviction; `None` when it
/// has it already.
pub fn disruption_target_conditions(pod: &Pod, now: Timestamp) -> Option<Vec<PodCondition>> {
    let mut conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let target = PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("DeletionByTaintManager".into()),
        message: Some("Taint manager: deleting due to NoExecute taint".into()),
        last_transition_time: Some(Time(now)),
        ..Default::default()
    };
    match conditions
        .iter_mut()
        .find(|c| c.type_ == "DisruptionTarget")
    {
        Some(c) if c.status == "True" => return None,
        Some(c) => *c = target,
        None => conditions.push(target),
    }
    Some(conditions)
}

/// A merge patch of `body` that only applies to the object at `resource_version`.
fn guarded(resource_version: Option<&str>, mut body: Value) -> Patch {
    body["metadata"] = json!({ "resourceVersion": resource_version });
    Patch::Merge(body)
}

impl Lifecycle {
    async fn reconcile_node(&self, key: ObjectRef) -> Result<Action> {
        let name = key.name;
        let Some(cached) = self.nodes.get("", &name) else {
            lock(&self.health).remove(&name);
            lock(&self.taints_seen).retain(|id, _| id.0 != name);
            return Ok(Action::Done);
        };
        let now = self.ctx.clock.now();
        let lease = self.leases.get(NODE_LEASE_NAMESPACE, &name);
        let health = {
            let mut map = lock(&self.health);
            let health = health::observe(map.get(&name), &cached, lease.as_deref(), now);
            map.insert(name.clone(), health.clone());
            health
        };
        let deadline = health::deadline(&health, health::grace_period(&cached, &self.ctx.settings));
        let silent = now >= deadline;
        let api: Api<Node> = Api::all(self.ctx.client.clone());
        let mut node = (*cached).clone();

        if silent && let Some(conditions) = health::silent_conditions(&node, now) {
            let was_ready = health::ready_status(&node) == Some("True");
            let patch = guarded(
                node.metadata.resource_version.as_deref(),
                json!({"status": {"conditions": conditions}}),
            );
            node = match api.patch_status(&name, &patch).await {
                Ok(node) => node,
                Err(e) if e.is_not_found() => return Ok(Action::Done),
                Err(e) => return Err(e.into()),
            };
            info!(node = %name, silent_for = ?self.ctx.clock.since(health.probe), "node stopped posting status, marked unknown");
            if was_ready {
                let message = format!("Node {name} status is now: NodeNotReady");
                self.recorder
                    .publish(
                        &object_reference(&node),
                        EventType::Normal,
                        "NodeNotReady",
                        &message,
                    )
                    .await;
            }
        }

        // A ready node gets no NoExecute taint either way: only look at the others if not.
        let no_execute = health::ready_status(&node) == Some("True")
            || !fully_disrupted(&self.nodes.list(), &node);
        let desired = taints::desired(&node, no_execute);
        let current = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        if let Some(next) = taints::reconcile(&current, &desired, now) {
            let value = if next.is_empty() {
                Value::Null
            } else {
                json!(next)
            };
            let patch = guarded(
                node.metadata.resource_version.as_deref(),
                json!({"spec": {"taints": value}}),
            );
            node = match api.patch(&name, &patch).await {
                Ok(node) => node,
                Err(e) if e.is_not_found() => return Ok(Action::Done),
                Err(e) => return Err(e.into()),
            };
            info!(node = %name, taints = ?desired, "node taints updated");
        }
        let kept = taints::no_execute(&node);
        lock(&self.taints_seen)
            .retain(|id, _| id.0 != name || kept.iter().any(|t| taint_id(&name, t) == *id));

        if health::ready_status(&node) != Some("True") {
            self.mark_pods_not_ready(&node, now).await?;
        }

        let period = self.ctx.settings.node_monitor_period;
        let next = if silent {
            period
        } else {
            self.ctx.clock.until(deadline).min(period)
        };
        Ok(Action::RequeueAfter(next.max(Duration::from_millis(10))))
    }

    /// Marks the pods on an unready `node` not ready (upstream's `MarkPodsNotReady`).
    async fn mark_pods_not_ready(&self, node: &Node, now: Timestamp) -> Result<()> {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let since = health::ready_transition(node);
        for pod in pods_on(&self.pods, name) {
            let Some(conditions) = not_ready_conditions(&pod, since, now) else {
                continue;
            };
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), ns);
            let patch = guarded(
                pod.metadata.resource_version.as_deref(),
                json!({"status": {"conditions": conditions}}),
            );
            match api.patch_status(pod_name, &patch).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            }
            info!(pod = %format!("{ns}/{pod_name}"), node = %name, "marked pod not ready");
            self.recorder
                .publish(
                    &object_reference(&*pod),
                    EventType::Warning,
                    "NodeNotReady",
                    "Node is not ready",
                )
                .await;
        }
        Ok(())
    }

    /// When a taint of `node` was added: its `timeAdded`, or when this controller first saw it.
    fn taint_added(&self, node: &str, taint: &Taint, now: Timestamp) -> Timestamp {
        if let Some(t) = &taint.time_added {
            return t.0;
        }
        *lock(&self.taints_seen)
            .entry(taint_id(node, taint))
            .or_insert(now)
    }

    async fn reconcile_pod(&self, key: ObjectRef) -> Result<Action> {
        let ns = key.namespace.as_deref().unwrap_or_default();
        let Some(pod) = self.pods.get(ns, &key.name) else {
            return Ok(Action::Done);
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            return Ok(Action::Done);
        };
        let Some(node) = self.nodes.get("", &node_name) else {
            return Ok(Action::Done);
        };
        let now = self.ctx.clock.now();
        let taints: Vec<(Taint, Timestamp)> = taints::no_execute(&node)
            .into_iter()
            .map(|t| {
                let added = self.taint_added(&node_name, &t, now);
                (t, added)
            })
            .collect();
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
        match eviction::decide(&tolerations, &taints, created) {
            Eviction::Never => Ok(Action::Done),
            Eviction::At(at) if at > now => Ok(Action::RequeueAfter(self.ctx.clock.until(at))),
            Eviction::At(_) | Eviction::Now => {
                self.evict(&pod, &node_name, now).await?;
                Ok(Action::Done)
            }
        }
    }

    /// Deletes `pod` (gracefully) for a `NoExecute` taint of its node.
    async fn evict(&self, pod: &Pod, node: &str, now: Timestamp) -> Result<()> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), ns);
        self.eviction_recorder
            .publish(
                &object_reference(pod),
                EventType::Normal,
                "TaintManagerEviction",
                &format!("Marking for deletion Pod {ns}/{name}"),
            )
            .await;
        if let Some(conditions) = disruption_target_conditions(pod, now) {
            let patch = guarded(
                pod.metadata.resource_version.as_deref(),
                json!({"status": {"conditions": conditions}}),
            );
            match api.patch_status(name, &patch).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        let params = DeleteParams::default().uid(pod.metadata.uid.as_deref().unwrap_or_default());
        match api.delete(name, &params).await {
            Ok(_) => {
                info!(pod = %format!("{ns}/{name}"), node, "evicted pod for a NoExecute taint");
                Ok(())
            }
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Re-queues every node and every pod on a `NoExecute`-tainted node whenever a manual
    /// clock moves (never for the system clock), until the stop signal.
    fn resync_on_clock(
        self: &Arc<Self>,
        node_queue: WorkQueue<ObjectRef>,
        pod_queue: WorkQueue<ObjectRef>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let this = self.clone();
        let mut stop = self.ctx.stop.clone();
        let mut moves = self.ctx.clock.subscribe();
        async move {
            loop {
                tokio::select! {
                    () = crate::stopped(&mut stop) => return,
                    () = moves.next() => {}
                }
                let nodes = this.nodes.list();
                for node in &nodes {
                    node_queue.add(ObjectRef::from_obj(&**node));
                }
                let tainted: Vec<&str> = nodes
                    .iter()
                    .filter(|n| !taints::no_execute(n).is_empty())
                    .filter_map(|n| n.metadata.name.as_deref())
                    .collect();
                if tainted.is_empty() {
                    continue;
                }
                for pod in this.pods.filter(|p| {
                    p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_deref())
                        .is_some_and(|n| tainted.contains(&n))
                }) {
                    pod_queue.add(ObjectRef::from_obj(&*pod));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus, PodStatus};

    fn t(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn pod_ready_since(since: &str, status: &str) -> Pod {
        Pod {
            status: Some(PodStatus {
                conditions: Some(vec![
                    PodCondition {
                        type_: "PodScheduled".into(),
                        status: "True".into(),
                        ..Default::default()
                    },
                    PodCondition {
                        type_: "Ready".into(),
                        status: status.into(),
                        last_transition_time: Some(Time(t(since))),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn node(name: &str, ready: &str, labels: &[(&str, &str)]) -> Arc<Node> {
        let mut node = Node::default();
        node.metadata.name = Some(name.into());
        node.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        node.status = Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: ready.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        Arc::new(node)
    }

    #[test]
    fn pods_that_were_ready_before_their_node_failed_are_marked_not_ready() {
        let node_since = Some(t("2026-01-01T00:10:00Z"));
        let now = t("2026-01-01T00:10:05Z");
        let pod = pod_ready_since("2026-01-01T00:00:00Z", "True");
        let conditions = not_ready_conditions(&pod, node_since, now).expect("marked");
        let ready = conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.last_transition_time, Some(Time(now)));
        assert_eq!(conditions.len(), 2, "other conditions stay");
        assert_eq!(
            not_ready_conditions(
                &pod_ready_since("2026-01-01T00:00:00Z", "False"),
                node_since,
                now
            ),
            None,
            "already not ready"
        );
        assert_eq!(
            not_ready_conditions(
                &pod_ready_since("2026-01-01T00:10:01Z", "True"),
                node_since,
                now
            ),
            None,
            "made ready by a live kubelet after the node turned unready"
        );
        assert_eq!(not_ready_conditions(&Pod::default(), node_since, now), None);
    }

    #[test]
    fn evicted_pods_get_the_disruption_target_condition_once() {
        let now = t("2026-01-01T00:10:05Z");
        let pod = pod_ready_since("2026-01-01T00:00:00Z", "True");
        let conditions = disruption_target_conditions(&pod, now).expect("added");
        let target = conditions
            .iter()
            .find(|c| c.type_ == "DisruptionTarget")
            .expect("condition");
        assert_eq!(target.reason.as_deref(), Some("DeletionByTaintManager"));
        let mut marked = pod.clone();
        marked.status.as_mut().expect("status").conditions = Some(conditions);
        assert_eq!(disruption_target_conditions(&marked, now), None);
    }

    #[test]
    fn full_disruption_means_no_node_that_counts_is_ready() {
        let a = node("a", "True", &[]);
        let b = node("b", "Unknown", &[]);
        let excluded = node("c", "True", &[(EXCLUDE_DISRUPTION_LABEL, "")]);
        assert!(!fully_disrupted(&[a.clone(), b.clone()], &b));
        // `this` replaces the cached copy of the same node.
        let a_down = node("a", "Unknown", &[]);
        assert!(fully_disrupted(&[a.clone(), b.clone()], &a_down));
        assert!(
            fully_disrupted(&[a.clone(), b.clone(), excluded], &a_down),
            "excluded nodes do not count"
        );
        let lonely = node("x", "True", &[(EXCLUDE_DISRUPTION_LABEL, "")]);
        assert!(
            !fully_disrupted(&[], &lonely),
            "no counted node is no disruption"
        );
    }
}
