//! The node IPAM controller (upstream's `node-ipam-controller` with its range allocator):
//! gives every node a pod CIDR of its own from `--cluster-cidr`.
//!
//! With `--cluster-cidr` set, the cluster CIDR is divided into subnets of
//! `--node-cidr-mask-size` bits ([`CidrSet`]). At the first reconcile (after the informers
//! listed) every subnet that an existing node already has is marked taken, so a restart
//! hands out nothing twice. A node without `spec.podCIDR` then gets the next free subnet in
//! `spec.podCIDR` and `spec.podCIDRs` (one node update, guarded by its resourceVersion);
//! a node deleted gives its subnet back. When none is left the node gets a
//! `CIDRNotAvailable` Event and is retried with backoff, and at once when a node goes away.
//! IPv4 and IPv6 cluster CIDRs both work; with one cluster CIDR a node gets one pod CIDR
//! (dual-stack clusters, with two, are not supported yet).

pub mod cidr_set;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use k8s_openapi::api::core::v1::Node;
use rkube_client::{
    Action, Api, EventType, ObjectRef, Patch, Recorder, WorkQueue, object_reference,
};
use serde_json::json;
use tracing::{error, info, warn};

use self::cidr_set::{Cidr, CidrSet};
use crate::context::Context;
use crate::controllers::{Running, run_queue};
use crate::error::{Error, Result};
use crate::informer::{Change, Informer};

/// The controller's name, in Events and metrics.
pub const NAME: &str = "node-ipam-controller";

/// The subnets and who has them.
#[derive(Debug)]
struct Allocations {
    set: CidrSet,
    /// Node name → its subnet's number.
    owners: HashMap<String, usize>,
    /// Whether the existing nodes' subnets were marked taken.
    initialized: bool,
}

/// What a reconcile does for a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Nothing,
    /// Write this subnet into the node.
    Assign(usize),
    /// No subnet left.
    Full,
}

/// The number of the node's pod CIDR in `set`, if it has one from it.
fn member(set: &CidrSet, node: &Node) -> Option<usize> {
    pod_cidrs(node)
        .iter()
        .filter_map(|c| Cidr::parse(c))
        .find_map(|c| set.index_of(c))
}

impl Allocations {
    fn new(set: CidrSet) -> Self {
        Allocations {
            set,
            owners: HashMap::new(),
            initialized: false,
        }
    }

    /// Marks the subnets of `nodes` taken.
    fn rebuild<'a>(&mut self, nodes: impl IntoIterator<Item = &'a Node>) {
        for node in nodes {
            if let Some(index) = member(&self.set, node) {
                self.set.occupy(index);
                self.owners
                    .insert(node.metadata.name.clone().unwrap_or_default(), index);
            }
        }
        self.initialized = true;
    }

    /// Gives back the subnet of the node `name`, gone; whether it had one.
    fn release(&mut self, name: &str) -> bool {
        match self.owners.remove(name) {
            Some(index) => {
                self.set.release(index);
                true
            }
            None => false,
        }
    }

    /// Decides for the node `name`, reserving a subnet when it needs one.
    fn plan(&mut self, name: &str, node: &Node) -> Step {
        let owned = self.owners.get(name).copied();
        if !pod_cidrs(node).is_empty() {
            // The node has its CIDR (ours, or set by someone else): account for it.
            let mine = member(&self.set, node);
            if owned != mine {
                self.release(name);
                if let Some(new) = mine {
                    self.set.occupy(new);
                    self.owners.insert(name.to_string(), new);
                }
            }
            return Step::Nothing;
        }
        if let Some(index) = owned {
            // Reserved before, but the write did not land (or the node was re-created).
            return Step::Assign(index);
        }
        match self.set.allocate() {
            Some(index) => {
                self.owners.insert(name.to_string(), index);
                Step::Assign(index)
            }
            None => Step::Full,
        }
    }
}

struct Ipam {
    ctx: Context,
    nodes: Informer<Node>,
    queue: WorkQueue<ObjectRef>,
    recorder: Recorder,
    cluster: Cidr,
    allocations: Mutex<Allocations>,
}

/// The node's pod CIDRs (`spec.podCIDRs`, or `spec.podCIDR` alone).
pub fn pod_cidrs(node: &Node) -> Vec<String> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    match (&spec.pod_cidrs, &spec.pod_cidr) {
        (Some(list), _) if !list.is_empty() => list.clone(),
        (_, Some(one)) if !one.is_empty() => vec![one.clone()],
        _ => Vec::new(),
    }
}

/// Subscribes the controller to the informers and returns its workers; runs nothing
/// without a cluster CIDR.
pub fn start(ctx: &Context) -> Running {
    let Some((ip, prefix)) = ctx.settings.cluster_cidr else {
        return Box::pin(async {});
    };
    let cluster = Cidr { ip, prefix };
    let set = match CidrSet::new(cluster, ctx.settings.node_cidr_mask_size) {
        Ok(set) => set,
        Err(e) => {
            error!(cluster_cidr = %cluster, error = %e, "node ipam disabled");
            return Box::pin(async {});
        }
    };
    let nodes = ctx.informer::<Node>();
    let queue: WorkQueue<ObjectRef> = WorkQueue::new();
    nodes.subscribe({
        let queue = queue.clone();
        move |change| {
            let wanted = match change {
                Change::Added(_) | Change::Deleted(_) => true,
                Change::Updated { old, new } => pod_cidrs(old) != pod_cidrs(new),
            };
            if wanted {
                queue.add(ObjectRef::from_obj(&**change.object()));
            }
        }
    });
    let ipam = Arc::new(Ipam {
        ctx: ctx.clone(),
        nodes,
        queue: queue.clone(),
        recorder: ctx.recorder(NAME),
        cluster,
        allocations: Mutex::new(Allocations::new(set)),
    });
    run_queue(ctx, NAME, queue, move |key| {
        let ipam = ipam.clone();
        async move { ipam.reconcile(key).await }
    })
}

impl Ipam {
    /// The allocations, rebuilt from the nodes on first use. The workers run only after the
    /// informers listed, so the cache is complete by then.
    fn lock(&self) -> MutexGuard<'_, Allocations> {
        let mut a = self
            .allocations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !a.initialized {
            let nodes = self.nodes.list();
            a.rebuild(nodes.iter().map(|n| &**n));
            info!(cluster_cidr = %self.cluster, used = a.set.used(), capacity = a.set.capacity(), "pod cidr allocations rebuilt from nodes");
        }
        a
    }

    async fn reconcile(&self, key: ObjectRef) -> Result<Action> {
        let name = key.name;
        let Some(node) = self.nodes.get("", &name) else {
            if self.lock().release(&name) {
                // A subnet came free: nodes still waiting for one may have it.
                for waiting in self.nodes.filter(|n| pod_cidrs(n).is_empty()) {
                    self.queue.add(ObjectRef::from_obj(&*waiting));
                }
            }
            return Ok(Action::Done);
        };
        let step = self.lock().plan(&name, &node);
        match step {
            Step::Nothing => Ok(Action::Done),
            Step::Full => {
                let message = format!("Node {name} status is now: CIDRNotAvailable");
                self.recorder
                    .publish(
                        &object_reference(&*node),
                        EventType::Normal,
                        "CIDRNotAvailable",
                        &message,
                    )
                    .await;
                Err(Error::Invalid(format!(
                    "no /{} left in the cluster cidr {} for node {name}",
                    self.ctx.settings.node_cidr_mask_size, self.cluster
                )))
            }
            Step::Assign(index) => {
                let cidr = self.lock().set.cidr(index).to_string();
                let api: Api<Node> = Api::all(self.ctx.client.clone());
                let patch = Patch::Merge(json!({
                    "metadata": {"resourceVersion": node.metadata.resource_version},
                    "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
                }));
                match api.patch(&name, &patch).await {
                    Ok(_) => {
                        info!(node = %name, pod_cidr = %cidr, "assigned pod cidr");
                        Ok(Action::Done)
                    }
                    Err(e) if e.is_not_found() => {
                        self.lock().release(&name);
                        Ok(Action::Done)
                    }
                    Err(e) if e.is_conflict() => Err(e.into()),
                    Err(e) => {
                        warn!(node = %name, pod_cidr = %cidr, error = %e, "pod cidr assignment failed");
                        let message = format!("Node {name} status is now: CIDRAssignmentFailed");
                        self.recorder
                            .publish(
                                &object_reference(&*node),
                                EventType::Normal,
                                "CIDRAssignmentFailed",
                                &message,
                            )
                            .await;
                        Err(e.into())
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;

    #[test]
    fn pod_cidrs_prefer_the_list_and_fall_back_to_the_single_field() {
        let mut node = Node::default();
        assert!(pod_cidrs(&node).is_empty());
        node.spec = Some(NodeSpec {
            pod_cidr: Some("10.244.1.0/24".into()),
            ..Default::default()
        });
        assert_eq!(pod_cidrs(&node), ["10.244.1.0/24"]);
        node.spec.as_mut().expect("spec").pod_cidrs =
            Some(vec!["10.244.1.0/24".into(), "fd00::/64".into()]);
        assert_eq!(pod_cidrs(&node).len(), 2);
    }

    fn node(name: &str, cidr: Option<&str>) -> Node {
        let mut node = Node::default();
        node.metadata.name = Some(name.into());
        node.spec = Some(NodeSpec {
            pod_cidr: cidr.map(str::to_string),
            pod_cidrs: cidr.map(|c| vec![c.to_string()]),
            ..Default::default()
        });
        node
    }

    fn allocations(cluster: &str, mask: u8) -> Allocations {
        let cluster = Cidr::parse(cluster).expect("cidr");
        Allocations::new(CidrSet::new(cluster, mask).expect("set"))
    }

    /// Plans for `name` and, as the apiserver would, writes the planned CIDR into it.
    fn assign(a: &mut Allocations, name: &str) -> Option<String> {
        match a.plan(name, &node(name, None)) {
            Step::Assign(index) => {
                let cidr = a.set.cidr(index).to_string();
                assert_eq!(a.plan(name, &node(name, Some(&cidr))), Step::Nothing);
                Some(cidr)
            }
            Step::Full => None,
            Step::Nothing => panic!("{name} has no CIDR yet"),
        }
    }

    #[test]
    fn allocations_are_rebuilt_from_existing_nodes_and_never_handed_out_twice() {
        let mut a = allocations("10.244.0.0/22", 24);
        let existing = [
            node("a", Some("10.244.0.0/24")),
            node("b", Some("10.244.2.0/24")),
            node("foreign", Some("192.168.0.0/24")),
            node("new", None),
        ];
        a.rebuild(existing.iter());
        assert_eq!(a.set.used(), 2);
        assert_eq!(a.plan("a", &existing[0]), Step::Nothing);
        assert_eq!(assign(&mut a, "new").as_deref(), Some("10.244.1.0/24"));
        assert_eq!(assign(&mut a, "c").as_deref(), Some("10.244.3.0/24"));
        assert_eq!(assign(&mut a, "d"), None, "exhausted");

        // Deleting a node gives its subnet back; the waiting node gets it.
        assert!(a.release("b"));
        assert!(!a.release("b"), "released once");
        assert_eq!(assign(&mut a, "d").as_deref(), Some("10.244.2.0/24"));
    }

    #[test]
    fn a_lost_write_reuses_the_reservation_and_foreign_cidrs_are_accounted() {
        let mut a = allocations("fd00:10:244::/62", 64);
        a.rebuild(std::iter::empty());
        let first = a.plan("x", &node("x", None));
        assert_eq!(first, Step::Assign(0));
        assert_eq!(
            a.plan("x", &node("x", None)),
            first,
            "retry after a failed write"
        );
        // Someone else set a different CIDR: ours goes back, theirs is taken.
        assert_eq!(
            a.plan("x", &node("x", Some("fd00:10:244:3::/64"))),
            Step::Nothing
        );
        assert_eq!(a.owners.get("x"), Some(&3));
        assert_eq!(a.set.used(), 1);
        assert_eq!(assign(&mut a, "y").as_deref(), Some("fd00:10:244:1::/64"));
    }
}
