//! The scheduler's view of the cluster: every node with the pods on it, and the labels of
//! every namespace. The scheduling loop owns it and applies each informer event to it as it
//! comes (and each assumed pod as it is placed), so a scheduling cycle reads it directly and
//! nothing is ever rebuilt per pod.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;

use crate::node_info::{Labels, NodeInfo, PodInfo};
use rkube_types::selector::LabelSelector;

/// A PodDisruptionBudget as preemption needs it.
#[derive(Debug, Clone)]
pub struct DisruptionBudget {
    /// `namespace/name`.
    pub key: String,
    /// Its namespace; it covers pods in that namespace only.
    pub namespace: String,
    /// The pods it covers (`None`: a nil selector, which covers none).
    pub selector: Option<LabelSelector>,
    /// `status.disruptionsAllowed`.
    pub disruptions_allowed: i32,
}

impl DisruptionBudget {
    /// Whether the budget covers `pod`.
    pub fn covers(&self, pod: &PodInfo) -> bool {
        pod.namespace == self.namespace
            && self
                .selector
                .as_ref()
                .is_some_and(|s| !s.is_everything() && s.matches(&pod.labels))
    }
}

/// Nodes, the pods on them and namespace labels.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    /// pod key → node name, for every pod placed on a node (known or not yet seen).
    pod_nodes: HashMap<String, String>,
    /// Pods bound to nodes not seen yet, attached when the node appears.
    waiting: HashMap<String, Vec<Arc<PodInfo>>>,
    namespaces: HashMap<String, Labels>,
    budgets: HashMap<String, DisruptionBudget>,
    pods_with_affinity: usize,
    pods_with_required_anti_affinity: usize,
}

impl Snapshot {
    /// An empty snapshot.
    pub fn new() -> Snapshot {
        Snapshot::default()
    }

    /// Every node, in a stable order (insertion order, with removals swapped in).
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// The node `name`.
    pub fn get(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|i| &self.nodes[*i])
    }

    /// The node `name`, to change it.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut NodeInfo> {
        self.index.get(name).map(|i| &mut self.nodes[*i])
    }

    /// The position of node `name` in [`Snapshot::nodes`].
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The labels of every namespace seen.
    pub fn namespace_labels(&self) -> &HashMap<String, Labels> {
        &self.namespaces
    }

    /// Whether any pod on any node has pod affinity or anti-affinity terms.
    pub fn have_pods_with_affinity(&self) -> bool {
        self.pods_with_affinity > 0
    }

    /// Whether any pod on any node has required anti-affinity terms.
    pub fn have_pods_with_required_anti_affinity(&self) -> bool {
        self.pods_with_required_anti_affinity > 0
    }

    /// Records a namespace's labels.
    pub fn set_namespace(&mut self, name: &str, labels: Labels) {
        self.namespaces.insert(name.to_string(), labels);
    }

    /// Every PodDisruptionBudget, by `namespace/name`.
    pub fn disruption_budgets(&self) -> impl Iterator<Item = &DisruptionBudget> {
        self.budgets.values()
    }

    /// Records a PodDisruptionBudget.
    pub fn set_disruption_budget(&mut self, budget: DisruptionBudget) {
        self.budgets.insert(budget.key.clone(), budget);
    }

    /// Forgets a PodDisruptionBudget.
    pub fn remove_disruption_budget(&mut self, key: &str) {
        self.budgets.remove(key);
    }

    /// Forgets a namespace.
    pub fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    /// Adds a node or replaces its object, keeping its pods.
    pub fn upsert_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        if let Some(i) = self.index.get(&name) {
            self.nodes[*i].set_node(node);
            return;
        }
        let mut info = NodeInfo::new(node);
        for pod in self.waiting.remove(&name).unwrap_or_default() {
            info.add_pod(pod);
        }
        self.index.insert(name, self.nodes.len());
        self.nodes.push(info);
    }

    /// Removes a node. Its pods stay known (they are deleted by the pod garbage collector)
    /// and come back if a node of that name returns.
    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else {
            return;
        };
        let info = self.nodes.swap_remove(i);
        if let Some(moved) = self.nodes.get(i) {
            self.index.insert(moved.name.clone(), i);
        }
        if !info.pods.is_empty() {
            self.waiting.insert(name.to_string(), info.pods);
        }
    }

    /// Places `pod` on node `node` (bound, or assumed while the binding is in flight),
    /// replacing any earlier placement of the same pod.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.remove_pod(&pod.key);
        self.pod_nodes.insert(pod.key.clone(), node.to_string());
        if pod.has_affinity() {
            self.pods_with_affinity += 1;
        }
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity += 1;
        }
        match self.index.get(node) {
            Some(i) => self.nodes[*i].add_pod(pod),
            None => self.waiting.entry(node.to_string()).or_default().push(pod),
        }
    }

    /// Removes the pod `key` from wherever it was placed; returns it and its node.
    pub fn remove_pod(&mut self, key: &str) -> Option<(Arc<PodInfo>, String)> {
        let node = self.pod_nodes.remove(key)?;
        let pod = match self.index.get(&node) {
            Some(i) => self.nodes[*i].remove_pod(key),
            None => {
                let list = self.waiting.get_mut(&node)?;
                let at = list.iter().position(|p| p.key == key)?;
                let pod = list.swap_remove(at);
                if list.is_empty() {
                    self.waiting.remove(&node);
                }
                Some(pod)
            }
        }?;
        if pod.has_affinity() {
            self.pods_with_affinity -= 1;
        }
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity -= 1;
        }
        Some((pod, node))
    }

    /// The node the pod `key` is placed on.
    pub fn node_of(&self, key: &str) -> Option<&str> {
        self.pod_nodes.get(key).map(String::as_str)
    }

    /// The pod `key`, if placed on a node.
    pub fn pod(&self, key: &str) -> Option<&Arc<PodInfo>> {
        let node = self.pod_nodes.get(key)?;
        match self.get(node) {
            Some(info) => info.pods.iter().find(|p| p.key == key),
            None => self.waiting.get(node)?.iter().find(|p| p.key == key),
        }
    }

    /// The keys of every pod placed on a node.
    pub fn pod_keys(&self) -> impl Iterator<Item = &String> {
        self.pod_nodes.keys()
    }

    /// The number of pods placed on nodes.
    pub fn pod_count(&self) -> usize {
        self.pod_nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod};

    #[test]
    fn pods_follow_their_node_through_removal_and_return() {
        let mut s = Snapshot::new();
        s.upsert_node(Arc::new(node("a").cpu("4").build()));
        s.upsert_node(Arc::new(node("b").cpu("4").build()));
        s.add_pod(
            Arc::new(PodInfo::new(Arc::new(pod("p1").cpu("1").build()))),
            "a",
        );
        // Bound to a node the informer has not delivered yet.
        s.add_pod(
            Arc::new(PodInfo::new(Arc::new(pod("p2").cpu("1").build()))),
            "c",
        );
        assert_eq!(s.get("a").map(|n| n.requested.milli_cpu), Some(1000));
        assert!(s.get("c").is_none());

        s.upsert_node(Arc::new(node("c").cpu("4").build()));
        assert_eq!(s.get("c").map(|n| n.pods.len()), Some(1));

        s.remove_node("a");
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.position("c"),
            Some(0),
            "the last node moved into the hole"
        );
        assert_eq!(s.node_of("default/p1"), Some("a"));
        s.upsert_node(Arc::new(node("a").cpu("4").build()));
        assert_eq!(s.get("a").map(|n| n.requested.milli_cpu), Some(1000));

        let (removed, on) = s.remove_pod("default/p1").expect("placed");
        assert_eq!((removed.key.as_str(), on.as_str()), ("default/p1", "a"));
        assert_eq!(s.get("a").map(|n| n.requested.milli_cpu), Some(0));
        assert_eq!(s.pod_count(), 1);
    }

    #[test]
    fn replacing_a_node_keeps_its_pods() {
        let mut s = Snapshot::new();
        s.upsert_node(Arc::new(node("a").cpu("4").build()));
        s.add_pod(
            Arc::new(PodInfo::new(Arc::new(pod("p").cpu("1").build()))),
            "a",
        );
        s.upsert_node(Arc::new(node("a").cpu("8").label("zone", "z1").build()));
        let a = s.get("a").expect("node");
        assert_eq!(a.allocatable.milli_cpu, 8000);
        assert_eq!(a.requested.milli_cpu, 1000);
        assert_eq!(a.labels.get("zone").map(String::as_str), Some("z1"));
    }
}
