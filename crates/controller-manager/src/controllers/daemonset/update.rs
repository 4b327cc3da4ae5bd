//! The DaemonSet rolling update (upstream's `rollingUpdate` in `pkg/controller/daemon/update.go`).
//!
//! Without surge, old pods are deleted while no more than `maxUnavailable` nodes lack an
//! available pod, and the core loop then creates their replacements; an old pod that is not
//! available is replaced at once. With `maxSurge`, a new pod is created beside an old one on
//! up to `maxSurge` nodes, and the old pod is deleted once the new one is available.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::controllers::history::CONTROLLER_REVISION_HASH_LABEL;
use crate::pods;

/// The label with the template generation a daemon pod was created from.
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

/// `value` (a count or a percentage of `total`) as a count, rounding a percentage up or
/// down (upstream's `GetScaledValueFromIntOrPercent`); `None` reads as 0.
pub fn scaled_value(
    value: Option<&IntOrString>,
    total: i32,
    round_up: bool,
) -> Result<i32, String> {
    match value {
        None => Ok(0),
        Some(IntOrString::Int(n)) => Ok(*n),
        Some(IntOrString::String(s)) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let scaled = percent * i64::from(total);
            let value = if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            };
            i32::try_from(value).map_err(|_| format!("{s} of {total} is out of range"))
        }
    }
}

/// Whether `ds` rolls out with `RollingUpdate` (the default).
pub fn is_rolling_update(ds: &DaemonSet) -> bool {
    ds.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

/// `maxSurge` and `maxUnavailable` of `ds` for `desired` nodes (upstream's `SurgeCount`,
/// `UnavailableCount` and `updatedDesiredNodeCounts`): both 0 for `OnDelete`;
/// `maxUnavailable` defaults to 1 and becomes 1 when both would be 0.
pub fn surge_and_unavailable(ds: &DaemonSet, desired: i32) -> Result<(i32, i32), String> {
    if !is_rolling_update(ds) {
        return Ok((0, 0));
    }
    let rolling = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let one = IntOrString::Int(1);
    let (surge, unavailable) = match rolling {
        None => (None, Some(&one)),
        Some(r) => (
            r.max_surge.as_ref(),
            Some(r.max_unavailable.as_ref().unwrap_or(&one)),
        ),
    };
    let surge = scaled_value(surge, desired, true)?;
    let mut unavailable = scaled_value(unavailable, desired, true)?;
    if desired > 0 && surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Ok((surge, unavailable))
}

/// Whether `ds` may run two pods on a node during an update (upstream's `AllowsSurge`).
pub fn allows_surge(ds: &DaemonSet) -> bool {
    surge_and_unavailable(ds, 1).is_ok_and(|(surge, _)| surge > 0)
}

/// Whether `pod` runs the current template: its hash label is `hash`, or its template
/// generation label is `generation` (upstream's `IsPodUpdated`).
pub fn is_pod_updated(pod: &Pod, hash: &str, generation: Option<i64>) -> bool {
    let label = |k: &str| pod.metadata.labels.as_ref().and_then(|l| l.get(k));
    let hash_matches =
        !hash.is_empty() && label(CONTROLLER_REVISION_HASH_LABEL).map(String::as_str) == Some(hash);
    let generation_matches = generation.is_some_and(|g| {
        label(TEMPLATE_GENERATION_LABEL).map(String::as_str) == Some(&g.to_string())
    });
    hash_matches || generation_matches
}

/// The new and old pod among a node's live pods; `None` when there are several of either
/// (the core loop prunes them first) — upstream's `findUpdatedPodsOnNode`.
#[allow(clippy::type_complexity)]
pub fn updated_pods_on_node<'a>(
    pods: &'a [Arc<Pod>],
    hash: &str,
    generation: Option<i64>,
) -> Option<(Option<&'a Arc<Pod>>, Option<&'a Arc<Pod>>)> {
    let mut new = None;
    let mut old = None;
    for pod in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let slot = if is_pod_updated(pod, hash, generation) {
            &mut new
        } else {
            &mut old
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(pod);
    }
    Some((new, old))
}

/// What one round of the rolling update does.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RollingActions {
    /// Old pods to delete, by name.
    pub delete: Vec<String>,
    /// Nodes to create a new pod on (surge only).
    pub create_on: Vec<String>,
}

/// Inputs of [`rolling_update`] besides the pods.
#[derive(Debug, Clone, Copy)]
pub struct RollingContext<'a> {
    /// `maxSurge` as a count.
    pub max_surge: i32,
    /// `maxUnavailable` as a count.
    pub max_unavailable: i32,
    /// Nodes that should run a daemon pod.
    pub desired: i32,
    /// The current revision's hash.
    pub hash: &'a str,
    /// The DaemonSet's template generation.
    pub generation: Option<i64>,
    /// The DaemonSet's `minReadySeconds`.
    pub min_ready_seconds: i32,
    /// Now.
    pub now: Timestamp,
}

/// One round of the rolling update over `node_to_pods` (every node with daemon pods, and
/// every node that should run one, possibly with none); `should_run` says whether a node
/// should run a daemon pod.
pub fn rolling_update(
    ctx: RollingContext<'_>,
    node_to_pods: &BTreeMap<String, Vec<Arc<Pod>>>,
    should_run: impl Fn(&str) -> bool,
) -> RollingActions {
    let available = |p: &Pod| pods::is_available(p, ctx.min_ready_seconds, ctx.now);
    let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    let mut out = RollingActions::default();
    if ctx.max_surge == 0 {
        let mut unavailable = 0;
        let mut replacements = Vec::new();
        let mut candidates = Vec::new();
        for pods in node_to_pods.values() {
            let Some((new, old)) = updated_pods_on_node(pods, ctx.hash, ctx.generation) else {
                // Excess pods: the core loop cleans up; count the node as unavailable.
                unavailable += 1;
                continue;
            };
            match (new, old) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some(new), None) => {
                    if !available(new) {
                        unavailable += 1;
                    }
                }
                (None, Some(old)) => {
                    if !available(old) {
                        replacements.push(name(old));
                        unavailable += 1;
                    } else if unavailable < ctx.max_unavailable {
                        candidates.push(name(old));
                    }
                }
            }
        }
        let room = usize::try_from(ctx.max_unavailable - unavailable)
            .unwrap_or(0)
            .min(candidates.len());
        out.delete = replacements;
        out.delete.extend(candidates.into_iter().take(room));
        return out;
    }

    let mut surging = 0;
    let mut num_available = 0;
    let mut allowed_new = Vec::new();
    let mut candidate_new = Vec::new();
    let mut should_not_run = Vec::new();
    for (node, pods) in node_to_pods {
        let Some((new, old)) = updated_pods_on_node(pods, ctx.hash, ctx.generation) else {
            surging += 1;
            continue;
        };
        if let Some(pod) = old.or(new)
            && available(pod)
        {
            num_available += 1;
        }
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) => {
                if !available(old) {
                    if should_run(node) {
                        allowed_new.push(node.clone());
                    } else {
                        out.delete.push(name(old));
                    }
                } else if !should_run(node) {
                    should_not_run.push(name(old));
                } else if surging < ctx.max_surge {
                    candidate_new.push(node.clone());
                }
            }
            (Some(new), Some(old)) => {
                if available(new) {
                    out.delete.push(name(old));
                } else {
                    surging += 1;
                }
            }
        }
    }
    // Pods on nodes that no longer qualify go only once enough pods elsewhere are available.
    let deletable = usize::try_from(num_available - ctx.desired).unwrap_or(0);
    out.delete
        .extend(should_not_run.into_iter().take(deletable));
    let room = usize::try_from(ctx.max_surge - surging)
        .unwrap_or(0)
        .min(candidate_new.len());
    out.create_on = allowed_new;
    out.create_on.extend(candidate_new.into_iter().take(room));
    out
}
