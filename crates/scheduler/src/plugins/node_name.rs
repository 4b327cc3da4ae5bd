//! Filter: the pod's `spec.nodeName`, when set, names the only node it fits, as upstream's
//! `NodeName` plugin. Pods created with `nodeName` set normally bypass the scheduler; this
//! catches the ones that still reach it (another `schedulerName` picking them up, or a
//! DaemonSet-style pin).

use std::sync::Arc;

use crate::framework::{CycleState, FilterPlugin, Plugin, Status};
use crate::node_info::{NodeInfo, PodInfo};

/// The plugin's name in configuration.
pub const NAME: &str = "NodeName";

/// The Filter reason, worded as upstream.
pub const ERR_REASON: &str = "node(s) didn't match the requested node name";

/// Whether the pod may run on the node: it names none, or this one.
pub fn fits(pod: &PodInfo, node: &NodeInfo) -> bool {
    let wanted = pod.node_name();
    wanted.is_empty() || wanted == node.name
}

/// The NodeName plugin.
#[derive(Debug, Default)]
pub struct NodeName;

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl FilterPlugin for NodeName {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if fits(pod, node) {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON)
        }
    }
}

/// Builds the plugin; it takes no args.
pub fn new(_args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(NodeName))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testing::{node, pod};

    fn filter(p: crate::testing::PodBuilder, n: &str) -> Status {
        let pod = PodInfo::new(Arc::new(p.build()));
        let node = NodeInfo::new(Arc::new(node(n).build()));
        NodeName.filter(&CycleState::new(), &pod, &node)
    }

    #[test]
    fn pod_without_node_name_fits_every_node() {
        assert!(filter(pod("p"), "n1").is_success());
    }

    #[test]
    fn pod_fits_only_the_named_node() {
        assert!(filter(pod("p").node_name("n1"), "n1").is_success());
        let s = filter(pod("p").node_name("n1"), "n2");
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(
            s.reasons,
            vec!["node(s) didn't match the requested node name"]
        );
    }
}
