//! Taints and tolerations, as upstream's `TaintToleration` plugin: a node's `NoSchedule`
//! and `NoExecute` taints keep out every pod that does not tolerate them (Filter), and its
//! `PreferNoSchedule` taints make it less attractive to pods that do not tolerate them
//! (Score: the fewer intolerable `PreferNoSchedule` taints, the higher the score).
//!
//! The toleration matching is upstream's `Toleration.ToleratesTaint`, from
//! `rkube_types::scheduling`, shared with the plugins that check single well-known taints
//! (NodeUnschedulable), PodTopologySpread's `nodeTaintsPolicy` and the controllers.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Taint, Toleration};
use rkube_types::scheduling::tolerations_tolerate;

use crate::framework::{
    CycleState, FilterPlugin, MAX_NODE_SCORE, Plugin, PreScorePlugin, ScorePlugin, Status,
};
use crate::node_info::{NodeInfo, PodInfo};
use crate::plugins::node_affinity::default_normalize_score;
use crate::snapshot::Snapshot;

/// The plugin's name in configuration.
pub const NAME: &str = "TaintToleration";

/// The effect of a taint that keeps new pods off the node.
pub const EFFECT_NO_SCHEDULE: &str = "NoSchedule";
/// The effect of a taint that keeps new pods off the node and evicts running ones.
pub const EFFECT_NO_EXECUTE: &str = "NoExecute";
/// The effect of a taint that the scheduler tries, but does not promise, to respect.
pub const EFFECT_PREFER_NO_SCHEDULE: &str = "PreferNoSchedule";

/// The pod's `spec.tolerations`.
fn pod_tolerations(pod: &PodInfo) -> &[Toleration] {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

/// The Filter reason for an untolerated taint, worded as upstream (`{key: }` when the taint
/// has no value).
fn untolerated_reason(taint: &Taint) -> String {
    format!(
        "node(s) had untolerated taint {{{}: {}}}",
        taint.key,
        taint.value.as_deref().unwrap_or_default()
    )
}

/// The number of `PreferNoSchedule` taints of `taints` that none of `tolerations` tolerates.
fn count_intolerable_prefer_no_schedule(taints: &[Taint], tolerations: &[Toleration]) -> i64 {
    taints
        .iter()
        .filter(|t| t.effect == EFFECT_PREFER_NO_SCHEDULE && !tolerations_tolerate(tolerations, t))
        .count() as i64
}

/// What PreScore keeps for Score: only the tolerations that can tolerate a
/// `PreferNoSchedule` taint (empty or `PreferNoSchedule` effect), so that the per-node loop
/// skips the `NoExecute` tolerations nearly every pod carries by default.
#[derive(Debug, Clone)]
struct PreScoreState {
    tolerations: Arc<[Toleration]>,
}

/// The TaintToleration plugin.
#[derive(Debug, Default)]
pub struct TaintToleration;

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl FilterPlugin for TaintToleration {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let tolerations = pod_tolerations(pod);
        // Upstream reports the first untolerated taint in the node's order.
        let untolerated = node.taints.iter().find(|t| {
            (t.effect == EFFECT_NO_SCHEDULE || t.effect == EFFECT_NO_EXECUTE)
                && !tolerations_tolerate(tolerations, t)
        });
        match untolerated {
            Some(taint) => Status::unresolvable(untolerated_reason(taint)),
            None => Status::success(),
        }
    }
}

impl PreScorePlugin for TaintToleration {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _nodes: &[&NodeInfo],
        _snapshot: &Snapshot,
    ) -> Status {
        let tolerations: Arc<[Toleration]> = pod_tolerations(pod)
            .iter()
            .filter(|t| {
                let effect = t.effect.as_deref().unwrap_or_default();
                effect.is_empty() || effect == EFFECT_PREFER_NO_SCHEDULE
            })
            .cloned()
            .collect();
        state.write(NAME, PreScoreState { tolerations });
        Status::success()
    }
}

impl ScorePlugin for TaintToleration {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        // Without PreScore (disabled), every toleration is considered: the filtered list
        // gives the same count, only faster.
        let tolerations = match state.read::<PreScoreState>(NAME) {
            Some(s) => &s.tolerations[..],
            None => pod_tolerations(pod),
        };
        Ok(count_intolerable_prefer_no_schedule(
            &node.taints,
            tolerations,
        ))
    }

    fn normalize(&self, _state: &CycleState, _pod: &PodInfo, scores: &mut [i64]) -> Status {
        default_normalize_score(MAX_NODE_SCORE, true, scores);
        Status::success()
    }
}

/// Builds the plugin; it takes no args.
pub fn new(_args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(TaintToleration))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testing::{node, pod};
    use k8s_openapi::api::core::v1::{Node, Pod};

    fn node_info(n: Node) -> NodeInfo {
        NodeInfo::new(Arc::new(n))
    }

    fn pod_info(p: Pod) -> PodInfo {
        PodInfo::new(Arc::new(p))
    }

    fn filter(p: &PodInfo, n: &NodeInfo) -> Status {
        TaintToleration.filter(&CycleState::new(), p, n)
    }

    #[test]
    fn no_schedule_and_no_execute_taints_filter_with_upstream_reason() {
        let p = pod_info(pod("p").build());
        let s = filter(
            &p,
            &node_info(
                node("n")
                    .taint("dedicated", "gpu", EFFECT_NO_SCHEDULE)
                    .build(),
            ),
        );
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(
            s.reasons,
            vec!["node(s) had untolerated taint {dedicated: gpu}"]
        );

        let s = filter(
            &p,
            &node_info(
                node("n")
                    .taint(
                        "node-role.kubernetes.io/control-plane",
                        "",
                        EFFECT_NO_EXECUTE,
                    )
                    .build(),
            ),
        );
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(
            s.reasons,
            vec!["node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"]
        );
    }

    #[test]
    fn prefer_no_schedule_taints_do_not_filter() {
        let p = pod_info(pod("p").build());
        let n = node_info(node("n").taint("k", "v", EFFECT_PREFER_NO_SCHEDULE).build());
        assert!(filter(&p, &n).is_success());
    }

    #[test]
    fn filter_reports_the_first_untolerated_taint() {
        let p = pod_info(pod("p").toleration("a", "Exists", "", "").build());
        let n = node_info(
            node("n")
                .taint("a", "1", EFFECT_NO_SCHEDULE)
                .taint("b", "2", EFFECT_NO_EXECUTE)
                .taint("c", "3", EFFECT_NO_SCHEDULE)
                .build(),
        );
        assert_eq!(
            filter(&p, &n).reasons,
            vec!["node(s) had untolerated taint {b: 2}"]
        );
    }

    #[test]
    fn tolerated_taints_pass_the_filter() {
        let p = pod_info(
            pod("p")
                .toleration("dedicated", "Equal", "gpu", EFFECT_NO_SCHEDULE)
                .toleration(
                    "node.kubernetes.io/not-ready",
                    "Exists",
                    "",
                    EFFECT_NO_EXECUTE,
                )
                .build(),
        );
        let n = node_info(
            node("n")
                .taint("dedicated", "gpu", EFFECT_NO_SCHEDULE)
                .taint("node.kubernetes.io/not-ready", "", EFFECT_NO_EXECUTE)
                .build(),
        );
        assert!(filter(&p, &n).is_success());
    }

    fn scores(p: &PodInfo, nodes: &[NodeInfo]) -> Vec<i64> {
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let mut state = CycleState::new();
        let pl = TaintToleration;
        assert!(
            pl.pre_score(&mut state, p, &refs, &Snapshot::new())
                .is_success()
        );
        let mut raw: Vec<i64> = nodes
            .iter()
            .map(|n| pl.score(&state, p, n).expect("score"))
            .collect();
        assert!(pl.normalize(&state, p, &mut raw).is_success());
        raw
    }

    #[test]
    fn score_prefers_nodes_with_fewer_intolerable_prefer_no_schedule_taints() {
        let p = pod_info(
            pod("p")
                .toleration("tolerated", "Equal", "yes", EFFECT_PREFER_NO_SCHEDULE)
                // A NoSchedule toleration does not tolerate a PreferNoSchedule taint.
                .toleration("other", "Exists", "", EFFECT_NO_SCHEDULE)
                .build(),
        );
        let nodes = [
            node_info(node("clean").build()),
            node_info(
                node("tolerated")
                    .taint("tolerated", "yes", EFFECT_PREFER_NO_SCHEDULE)
                    .build(),
            ),
            node_info(
                node("one")
                    .taint("other", "x", EFFECT_PREFER_NO_SCHEDULE)
                    .build(),
            ),
            node_info(
                node("two")
                    .taint("other", "x", EFFECT_PREFER_NO_SCHEDULE)
                    .taint("third", "", EFFECT_PREFER_NO_SCHEDULE)
                    // Hard taints do not count towards the score.
                    .taint("hard", "", EFFECT_NO_SCHEDULE)
                    .build(),
            ),
        ];
        assert_eq!(scores(&p, &nodes), vec![100, 100, 50, 0]);
    }

    #[test]
    fn score_is_max_everywhere_when_no_node_has_intolerable_taints() {
        let p = pod_info(pod("p").toleration("", "Exists", "", "").build());
        let nodes = [
            node_info(node("a").build()),
            node_info(node("b").taint("k", "v", EFFECT_PREFER_NO_SCHEDULE).build()),
        ];
        assert_eq!(scores(&p, &nodes), vec![100, 100]);
    }

    #[test]
    fn score_without_pre_score_counts_the_same() {
        let p = pod_info(pod("p").toleration("k", "Exists", "", "").build());
        let n = node_info(
            node("n")
                .taint("k", "v", EFFECT_PREFER_NO_SCHEDULE)
                .taint("j", "v", EFFECT_PREFER_NO_SCHEDULE)
                .build(),
        );
        assert_eq!(TaintToleration.score(&CycleState::new(), &p, &n), Ok(1));
    }
}
