//! Where a DaemonSet's pods belong (upstream's `NodeShouldRunDaemonPod`,
//! `podsShouldBeOnNode` and `pkg/controller/daemon/util`): a node is eligible when the pod's
//! `nodeName` (if any), `nodeSelector` and required node affinity match it and every
//! `NoSchedule`/`NoExecute` taint is tolerated — counting the tolerations every daemon pod
//! gets (not-ready and unreachable `NoExecute`; disk, memory and PID pressure and
//! unschedulable `NoSchedule`; network-unavailable for host-network pods). A pod already
//! running stays while only `NoSchedule` taints are untolerated. Taint and affinity
//! matching is the scheduler's own, from `rkube_types::scheduling`.
//!
//! Daemon pods are pinned to their node by a required node affinity on `metadata.name`
//! (`matchFields`), which the scheduler honours when it binds them.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Taint, Toleration,
};
use rkube_types::scheduling::node_affinity::{self, RequiredNodeAffinity};
use rkube_types::scheduling::tolerations_tolerate;

use crate::pods;

/// Taint of a node whose Ready condition is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint of a node whose Ready condition is Unknown.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Taint of a node under disk pressure.
pub const TAINT_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
/// Taint of a node under memory pressure.
pub const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
/// Taint of a node under PID pressure.
pub const TAINT_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
/// Taint of a cordoned node.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// Taint of a node whose network is not configured.
pub const TAINT_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// The node field a daemon pod's node affinity names.
pub const NODE_NAME_FIELD: &str = node_affinity::NODE_NAME_FIELD;

const NO_SCHEDULE: &str = "NoSchedule";
const NO_EXECUTE: &str = "NoExecute";

fn exists(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.to_string()),
        operator: Some("Exists".to_string()),
        effect: Some(effect.to_string()),
        ..Default::default()
    }
}

/// Adds `toleration` to `spec`, replacing one with the same key, operator, value and effect
/// (upstream's `AddOrUpdateTolerationInPodSpec`, which drops a `tolerationSeconds`).
fn add_or_update_toleration(spec: &mut PodSpec, toleration: Toleration) {
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    let same = |t: &Toleration| {
        t.key == toleration.key
            && t.effect == toleration.effect
            && t.operator == toleration.operator
            && t.value == toleration.value
    };
    match tolerations.iter_mut().find(|t| same(t)) {
        Some(t) => *t = toleration,
        None => tolerations.push(toleration),
    }
}

/// Adds the tolerations every daemon pod gets (upstream's `AddOrUpdateDaemonPodTolerations`),
/// so node problems neither evict daemon pods nor keep them off a node.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    add_or_update_toleration(spec, exists(TAINT_NOT_READY, NO_EXECUTE));
    add_or_update_toleration(spec, exists(TAINT_UNREACHABLE, NO_EXECUTE));
    add_or_update_toleration(spec, exists(TAINT_DISK_PRESSURE, NO_SCHEDULE));
    add_or_update_toleration(spec, exists(TAINT_MEMORY_PRESSURE, NO_SCHEDULE));
    add_or_update_toleration(spec, exists(TAINT_PID_PRESSURE, NO_SCHEDULE));
    add_or_update_toleration(spec, exists(TAINT_UNSCHEDULABLE, NO_SCHEDULE));
    if spec.host_network == Some(true) {
        add_or_update_toleration(spec, exists(TAINT_NETWORK_UNAVAILABLE, NO_SCHEDULE));
    }
}

/// The affinity `affinity` becomes on a pod for `node`: its required node affinity replaced
/// by one term selecting `metadata.name` = `node` (upstream's
/// `ReplaceDaemonSetPodNodeNameNodeAffinity`; preferred terms and pod affinities stay).
pub fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let selector = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: NODE_NAME_FIELD.to_string(),
                operator: "In".to_string(),
                values: Some(vec![node.to_string()]),
            }]),
            match_expressions: None,
        }],
    };
    let mut affinity = affinity.unwrap_or_default();
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(selector);
    affinity
}

/// The node a daemon pod is for: its `nodeName`, or else the `metadata.name` its required
/// node affinity pins it to (upstream's `GetTargetNodeName`).
pub fn target_node(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(node);
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == NODE_NAME_FIELD && r.operator == "In")
        .and_then(|r| match r.values.as_deref() {
            Some([node]) => Some(node.as_str()),
            _ => None,
        })
}

/// Whether some taint of `taints` that `effect_applies` to is tolerated by none of
/// `tolerations`.
fn has_untolerated(
    taints: &[Taint],
    tolerations: &[Toleration],
    effect_applies: impl Fn(&str) -> bool,
) -> bool {
    taints
        .iter()
        .filter(|t| effect_applies(&t.effect))
        .any(|taint| !tolerations_tolerate(tolerations, taint))
}

/// Whether `spec`'s `nodeSelector` and required node affinity select `node` (upstream's
/// `GetRequiredNodeAffinity(pod).Match(node)`, parse errors counting as no match).
pub fn fits_node_affinity(spec: &PodSpec, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let name = node.metadata.name.as_deref().unwrap_or_default();
    RequiredNodeAffinity::from_spec(spec).matches(labels, name)
}

/// What a node means for a DaemonSet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eligibility {
    /// A daemon pod should be created here if there is none.
    pub should_run: bool,
    /// A daemon pod already here may stay.
    pub should_continue_running: bool,
}

/// Whether `ds` should run (and keep running) a pod on `node` (upstream's
/// `NodeShouldRunDaemonPod`).
pub fn node_should_run(node: &Node, ds: &DaemonSet) -> Eligibility {
    const NO: Eligibility = Eligibility {
        should_run: false,
        should_continue_running: false,
    };
    let Some(template) = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref()) else {
        return NO;
    };
    let node_name = node.metadata.name.as_deref().unwrap_or_default();
    if let Some(pinned) = template.node_name.as_deref().filter(|n| !n.is_empty())
        && pinned != node_name
    {
        return NO;
    }
    if !fits_node_affinity(template, node) {
        return NO;
    }
    let mut spec = template.clone();
    add_daemon_tolerations(&mut spec);
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    if has_untolerated(taints, tolerations, |e| e == NO_SCHEDULE || e == NO_EXECUTE) {
        // A pod already here stays unless a NoExecute taint would evict it.
        return Eligibility {
            should_run: false,
            should_continue_running: !has_untolerated(taints, tolerations, |e| e == NO_EXECUTE),
        };
    }
    Eligibility {
        should_run: true,
        should_continue_running: true,
    }
}

/// Upstream's `podByCreationTimestampAndPhase`: scheduled pods first, then the oldest, then
/// by name.
pub fn by_scheduled_then_age(a: &Arc<Pod>, b: &Arc<Pod>) -> Ordering {
    let scheduled = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
    };
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    scheduled(b)
        .cmp(&scheduled(a))
        .then_with(|| created(a).cmp(&created(b)))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// What to do on one node (upstream's `podsShouldBeOnNode`).
#[derive(Debug, Default)]
pub struct NodeActions {
    /// A daemon pod should be created on the node.
    pub create: bool,
    /// Pods to delete: excess, misscheduled, or succeeded (see `succeeded`).
    pub delete: Vec<Arc<Pod>>,
    /// Failed pods, deleted unless the node's failed-pod backoff holds them.
    pub failed: Vec<Arc<Pod>>,
    /// The succeeded pods among `delete`, for their event.
    pub succeeded: Vec<Arc<Pod>>,
}

/// Inputs of [`pods_should_be_on_node`] besides the node's pods.
#[derive(Debug, Clone, Copy)]
pub struct NodeContext<'a> {
    /// The node's eligibility.
    pub eligibility: Eligibility,
    /// Whether the DaemonSet surges during updates (two pods per node allowed).
    pub surge: bool,
    /// The current revision's hash.
    pub hash: &'a str,
    /// The DaemonSet's `minReadySeconds`.
    pub min_ready_seconds: i32,
    /// Now.
    pub now: Timestamp,
}

/// Decides the creations and deletions on one node from its daemon pods.
pub fn pods_should_be_on_node(ctx: NodeContext<'_>, pods: &[Arc<Pod>]) -> NodeActions {
    let mut out = NodeActions::default();
    let Eligibility {
        should_run,
        should_continue_running,
    } = ctx.eligibility;
    let exists = !pods.is_empty();
    if should_run && !exists {
        out.create = true;
    } else if should_continue_running {
        let mut running = Vec::new();
        for pod in pods {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            match pods::phase(pod) {
                "Failed" => out.failed.push(pod.clone()),
                "Succeeded" => {
                    out.succeeded.push(pod.clone());
                    out.delete.push(pod.clone());
                }
                _ => running.push(pod.clone()),
            }
        }
        running.sort_by(by_scheduled_then_age);
        if !ctx.surge {
            // One pod per node: keep the oldest.
            if running.len() > 1 {
                out.delete.extend(running.drain(1..));
            }
        } else if running.is_empty() {
            // Surging needs at least one live pod on the node.
            out.create = should_run;
        } else if running.len() > 1 {
            // Keep the oldest new and the oldest old pod; the old one goes once it is not
            // ready or the new one is available.
            let hash_of = |p: &Pod| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| {
                        l.get(crate::controllers::history::CONTROLLER_REVISION_HASH_LABEL)
                    })
                    .cloned()
            };
            let mut oldest_new: Option<Arc<Pod>> = None;
            let mut oldest_old: Option<Arc<Pod>> = None;
            for pod in running {
                let slot = if hash_of(&pod).as_deref() == Some(ctx.hash) {
                    &mut oldest_new
                } else {
                    &mut oldest_old
                };
                if slot.is_none() {
                    *slot = Some(pod);
                } else {
                    out.delete.push(pod);
                }
            }
            if let (Some(new), Some(old)) = (oldest_new, oldest_old)
                && (!pods::is_ready(&old)
                    || pods::is_available(&new, ctx.min_ready_seconds, ctx.now))
            {
                out.delete.push(old);
            }
        }
    } else if exists {
        out.delete.extend(
            pods.iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .cloned(),
        );
    }
    out
}

/// The counts of a DaemonSet's status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Nodes that should run a daemon pod.
    pub desired: i32,
    /// Nodes that should and do run one.
    pub current: i32,
    /// Nodes that run one but should not.
    pub misscheduled: i32,
    /// Nodes whose daemon pod is ready.
    pub ready: i32,
    /// Nodes whose daemon pod runs the current template.
    pub updated: i32,
    /// Nodes whose daemon pod has been ready for `minReadySeconds`.
    pub available: i32,
}

/// Counts the status of a DaemonSet from each node's eligibility and daemon pods (upstream's
/// `updateDaemonSetStatus`): a node's oldest scheduled pod stands for it.
pub fn count<'a>(
    nodes: impl IntoIterator<Item = (bool, &'a [Arc<Pod>])>,
    is_updated: impl Fn(&Pod) -> bool,
    min_ready_seconds: i32,
    now: Timestamp,
) -> Counts {
    let mut c = Counts::default();
    for (should_run, pods) in nodes {
        let scheduled = !pods.is_empty();
        if !should_run {
            if scheduled {
                c.misscheduled += 1;
            }
            continue;
        }
        c.desired += 1;
        let Some(pod) = pods.iter().min_by(|a, b| by_scheduled_then_age(a, b)) else {
            continue;
        };
        c.current += 1;
        if pods::is_ready(pod) {
            c.ready += 1;
            if pods::is_available(pod, min_ready_seconds, now) {
                c.available += 1;
            }
        }
        if is_updated(pod) {
            c.updated += 1;
        }
    }
    c
}
