//! Filter: cordoned nodes (`spec.unschedulable`) take only pods tolerating the
//! `node.kubernetes.io/unschedulable:NoSchedule` taint, as upstream's `NodeUnschedulable`
//! plugin. The node lifecycle controller adds that taint to cordoned nodes too, but the
//! scheduler must not depend on it having done so yet.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Taint, Toleration};
use rkube_types::scheduling::tolerations_tolerate;

use crate::framework::{CycleState, FilterPlugin, Plugin, Status};
use crate::node_info::{NodeInfo, PodInfo};
use crate::plugins::taint_toleration::EFFECT_NO_SCHEDULE;

/// The plugin's name in configuration.
pub const NAME: &str = "NodeUnschedulable";

/// The Filter reason, worded as upstream.
pub const ERR_REASON: &str = "node(s) were unschedulable";

/// The key of the taint that stands for `spec.unschedulable`.
pub const TAINT_NODE_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Whether the pod tolerates `node.kubernetes.io/unschedulable:NoSchedule`.
fn tolerates_unschedulable(tolerations: &[Toleration]) -> bool {
    // Built only for cordoned nodes, which are rare; the common path does not allocate.
    let taint = Taint {
        key: TAINT_NODE_UNSCHEDULABLE.to_string(),
        effect: EFFECT_NO_SCHEDULE.to_string(),
        value: None,
        time_added: None,
    };
    tolerations_tolerate(tolerations, &taint)
}

/// The NodeUnschedulable plugin.
#[derive(Debug, Default)]
pub struct NodeUnschedulable;

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl FilterPlugin for NodeUnschedulable {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if !node.unschedulable {
            return Status::success();
        }
        let tolerations = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or_default();
        if tolerates_unschedulable(tolerations) {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON)
        }
    }
}

/// Builds the plugin; it takes no args.
pub fn new(_args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(NodeUnschedulable))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testing::{NodeBuilder, PodBuilder, node, pod};

    fn filter(p: PodBuilder, n: NodeBuilder) -> Status {
        let pod = PodInfo::new(Arc::new(p.build()));
        let node = NodeInfo::new(Arc::new(n.build()));
        NodeUnschedulable.filter(&CycleState::new(), &pod, &node)
    }

    #[test]
    fn schedulable_node_takes_any_pod() {
        assert!(filter(pod("p"), node("n")).is_success());
    }

    #[test]
    fn cordoned_node_rejects_with_upstream_reason() {
        let s = filter(pod("p"), node("n").unschedulable());
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(s.reasons, vec!["node(s) were unschedulable"]);
    }

    #[test]
    fn cordoned_node_takes_pods_tolerating_the_unschedulable_taint() {
        let exact = pod("p").toleration(TAINT_NODE_UNSCHEDULABLE, "Exists", "", "NoSchedule");
        assert!(filter(exact, node("n").unschedulable()).is_success());
        let any_effect = pod("p").toleration(TAINT_NODE_UNSCHEDULABLE, "Exists", "", "");
        assert!(filter(any_effect, node("n").unschedulable()).is_success());
        let everything = pod("p").toleration("", "Exists", "", "");
        assert!(filter(everything, node("n").unschedulable()).is_success());
    }

    #[test]
    fn other_tolerations_do_not_help() {
        let wrong_effect = pod("p").toleration(TAINT_NODE_UNSCHEDULABLE, "Exists", "", "NoExecute");
        assert!(filter(wrong_effect, node("n").unschedulable()).is_rejected());
        let wrong_key = pod("p").toleration("node.kubernetes.io/not-ready", "Exists", "", "");
        assert!(filter(wrong_key, node("n").unschedulable()).is_rejected());
    }
}
