//! The in-tree plugins, one module each, and the registry from plugin name to factory.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::framework::Plugin;

pub mod default_binder;
pub mod default_preemption;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_resources;
pub mod node_unschedulable;
pub mod pod_topology_spread;
pub mod queue_sort;
pub mod taint_toleration;

/// Builds a plugin from its `pluginConfig` args (`None` when the configuration has none).
pub type Factory = fn(Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String>;

/// Plugin name → factory, for every in-tree plugin.
pub fn registry() -> BTreeMap<&'static str, Factory> {
    let mut r: BTreeMap<&'static str, Factory> = BTreeMap::new();
    r.insert(node_name::NAME, node_name::new);
    r.insert(node_unschedulable::NAME, node_unschedulable::new);
    r.insert(node_affinity::NAME, node_affinity::new);
    r.insert(taint_toleration::NAME, taint_toleration::new);
    r.insert(node_ports::NAME, node_ports::new);
    r.insert(node_resources::NAME, node_resources::new);
    r.insert(node_resources::BALANCED_NAME, node_resources::new_balanced);
    r.insert(inter_pod_affinity::NAME, inter_pod_affinity::new);
    r.insert(pod_topology_spread::NAME, pod_topology_spread::new);
    r.insert(queue_sort::NAME, queue_sort::new);
    r.insert(default_binder::NAME, default_binder::new);
    r.insert(default_preemption::NAME, default_preemption::new);
    r
}
