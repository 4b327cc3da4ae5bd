//! Taints and tolerations, as upstream's `TaintToleration` plugin: a node's `NoSchedule`
//! and `NoExecute` taints keep out every pod that does not tolerate them (Filter), and its
//! `PreferNoSchedule` taints make it less attractive to pods that do not tolerate them
//! (Score: the fewer intolerable `PreferNoSchedule` taints, the higher the score).
//!
//! The toleration matching ([`tolerates`]) is upstream's `Toleration.ToleratesTaint`, shared
//! with the plugins that check single well-known taints (NodeUnschedulable).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Taint, Toleration};

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

/// Whether one toleration tolerates `taint`, as upstream's `Toleration.ToleratesTaint`:
/// an empty effect matches every effect, an empty key matches every key, and the operator
/// (`Equal` when unset) compares the values (`Exists` matches any value). An unknown operator
/// tolerates nothing.
pub fn toleration_tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        "Exists" => true,
        _ => false,
    }
}

/// Whether any of `tolerations` tolerates `taint` (upstream's `TolerationsTolerateTaint`).
pub fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| toleration_tolerates(t, taint))
}

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
        .filter(|t| t.effect == EFFECT_PREFER_NO_SCHEDULE && !tolerates(tolerations, t))
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
                && !tolerates(tolerations, t)
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

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.to_string(),
            value: (!value.is_empty()).then(|| value.to_string()),
            effect: effect.to_string(),
            time_added: None,
        }
    }

    fn toleration(key: &str, operator: &str, value: &str, effect: &str) -> Toleration {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Toleration {
            key: opt(key),
            operator: opt(operator),
            value: opt(value),
            effect: opt(effect),
            toleration_seconds: None,
        }
    }

    fn filter(p: &PodInfo, n: &NodeInfo) -> Status {
        TaintToleration.filter(&CycleState::new(), p, n)
    }

    #[test]
    fn equal_operator_compares_key_value_and_effect() {
        let t = taint("dedicated", "gpu", EFFECT_NO_SCHEDULE);
        assert!(toleration_tolerates(
            &toleration("dedicated", "Equal", "gpu", EFFECT_NO_SCHEDULE),
            &t
        ));
        // The operator defaults to Equal.
        assert!(toleration_tolerates(
            &toleration("dedicated", "", "gpu", EFFECT_NO_SCHEDULE),
            &t
        ));
        assert!(!toleration_tolerates(
            &toleration("dedicated", "Equal", "cpu", EFFECT_NO_SCHEDULE),
            &t
        ));
        assert!(!toleration_tolerates(
            &toleration("other", "Equal", "gpu", EFFECT_NO_SCHEDULE),
            &t
        ));
        assert!(!toleration_tolerates(
            &toleration("dedicated", "Equal", "gpu", EFFECT_NO_EXECUTE),
            &t
        ));
    }

    #[test]
    fn exists_with_empty_key_tolerates_every_taint() {
        let everything = toleration("", "Exists", "", "");
        for effect in [
            EFFECT_NO_SCHEDULE,
            EFFECT_NO_EXECUTE,
            EFFECT_PREFER_NO_SCHEDULE,
        ] {
            assert!(toleration_tolerates(&everything, &taint("a", "b", effect)));
            assert!(toleration_tolerates(&everything, &taint("c", "", effect)));
        }
        // Exists with an empty key but an effect tolerates every key of that effect only.
        let no_exec = toleration("", "Exists", "", EFFECT_NO_EXECUTE);
        assert!(toleration_tolerates(
            &no_exec,
            &taint("a", "b", EFFECT_NO_EXECUTE)
        ));
        assert!(!toleration_tolerates(
            &no_exec,
            &taint("a", "b", EFFECT_NO_SCHEDULE)
        ));
    }

    #[test]
    fn empty_effect_tolerates_all_effects_of_the_key() {
        let t = toleration("k", "Exists", "", "");
        for effect in [
            EFFECT_NO_SCHEDULE,
            EFFECT_NO_EXECUTE,
            EFFECT_PREFER_NO_SCHEDULE,
        ] {
            assert!(toleration_tolerates(&t, &taint("k", "v", effect)));
        }
        assert!(!toleration_tolerates(
            &t,
            &taint("other", "v", EFFECT_NO_SCHEDULE)
        ));
    }

    #[test]
    fn equal_with_empty_value_matches_a_taint_without_value() {
        assert!(toleration_tolerates(
            &toleration("k", "Equal", "", EFFECT_NO_SCHEDULE),
            &taint("k", "", EFFECT_NO_SCHEDULE)
        ));
        assert!(!toleration_tolerates(
            &toleration("k", "Equal", "", EFFECT_NO_SCHEDULE),
            &taint("k", "v", EFFECT_NO_SCHEDULE)
        ));
    }

    #[test]
    fn unknown_operator_tolerates_nothing() {
        assert!(!toleration_tolerates(
            &toleration("k", "Gt", "1", ""),
            &taint("k", "1", EFFECT_NO_SCHEDULE)
        ));
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
