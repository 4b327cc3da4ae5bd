//! Replica arithmetic of Deployments over their ReplicaSets (upstream's `deployment/util`):
//! sizes and counts, maxSurge and maxUnavailable, which ReplicaSet is the new one, how far
//! the new one may grow, and the proportions of a scaling event.

use std::cmp::Ordering;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::hash::equal_ignore_hash;
use super::history::max_replicas_annotation;

/// The `RollingUpdate` strategy type.
pub const ROLLING_UPDATE: &str = "RollingUpdate";
/// The `Recreate` strategy type.
pub const RECREATE: &str = "Recreate";

/// An unusable `maxSurge` or `maxUnavailable` (validation normally keeps them out).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntOrPercentError {
    /// A string that is not a percentage.
    #[error("invalid value for IntOrString {0:?}: invalid type: string is not a percentage")]
    NotAPercentage(String),
    /// A percentage whose number does not parse.
    #[error("invalid value for IntOrString {0:?}: not a number")]
    NotANumber(String),
}

/// `spec.replicas` of a Deployment (defaulted to 1, as the apiserver does).
pub fn deployment_replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// `spec.replicas` of a ReplicaSet (defaulted to 1, as the apiserver does).
pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// `status.replicas` of a ReplicaSet: the pods it has.
pub fn rs_actual(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map(|s| s.replicas).unwrap_or(0)
}

/// `status.readyReplicas` of a ReplicaSet.
pub fn rs_ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

/// `status.availableReplicas` of a ReplicaSet.
pub fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// The strategy type, `RollingUpdate` when unset (the apiserver's default).
pub fn strategy_type(d: &Deployment) -> &str {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .unwrap_or(ROLLING_UPDATE)
}

/// Whether the Deployment rolls out with `RollingUpdate`.
pub fn is_rolling_update(d: &Deployment) -> bool {
    strategy_type(d) == ROLLING_UPDATE
}

/// Resolves an int or a percentage of `total`, rounding percentages up or down
/// (upstream's `intstr.GetScaledValueFromIntOrPercent`).
pub fn scaled_value(
    value: &IntOrString,
    total: i32,
    round_up: bool,
) -> Result<i32, IntOrPercentError> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let number = s
                .strip_suffix('%')
                .ok_or_else(|| IntOrPercentError::NotAPercentage(s.clone()))?;
            let percent: i64 = number
                .parse()
                .map_err(|_| IntOrPercentError::NotANumber(s.clone()))?;
            let scaled = percent.saturating_mul(i64::from(total));
            let value = if round_up {
                scaled.div_euclid(100) + i64::from(scaled.rem_euclid(100) != 0)
            } else {
                scaled.div_euclid(100)
            };
            Ok(i32::try_from(value).unwrap_or(i32::MAX))
        }
    }
}

/// maxSurge and maxUnavailable of `desired` replicas resolved together: surge rounds up,
/// unavailability down, and when both come to zero one pod may be unavailable, so that a
/// rollout can always proceed (upstream's `ResolveFenceposts`).
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), IntOrPercentError> {
    let zero = IntOrString::Int(0);
    let surge = scaled_value(max_surge.unwrap_or(&zero), desired, true)?;
    let mut unavailable = scaled_value(max_unavailable.unwrap_or(&zero), desired, false)?;
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Ok((surge, unavailable))
}

fn fenceposts(d: &Deployment) -> (i32, i32) {
    let rolling = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    // Validation rejects bad values; upstream treats them as zero here too.
    resolve_fenceposts(
        rolling.and_then(|r| r.max_surge.as_ref()),
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        deployment_replicas(d),
    )
    .unwrap_or((0, 0))
}

/// How many pods over `spec.replicas` a rolling Deployment may run (0 for Recreate).
pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling_update(d) {
        return 0;
    }
    // Never negative, and never so large that `replicas + surge` overflows.
    let room = i32::MAX - deployment_replicas(d).max(0);
    fenceposts(d).0.clamp(0, room)
}

/// How many of `spec.replicas` may be unavailable during a rolling update (0 for Recreate
/// or zero replicas; at most `spec.replicas`).
pub fn max_unavailable(d: &Deployment) -> i32 {
    let replicas = deployment_replicas(d);
    if !is_rolling_update(d) || replicas == 0 {
        return 0;
    }
    fenceposts(d).1.clamp(0, replicas)
}

/// The sum of `spec.replicas` of `rss`.
pub fn replica_count(rss: &[&ReplicaSet]) -> i32 {
    rss.iter().map(|rs| rs_replicas(rs)).sum()
}

/// The sum of `status.replicas` of `rss`.
pub fn actual_replica_count(rss: &[&ReplicaSet]) -> i32 {
    rss.iter().map(|rs| rs_actual(rs)).sum()
}

/// The sum of `status.readyReplicas` of `rss`.
pub fn ready_replica_count(rss: &[&ReplicaSet]) -> i32 {
    rss.iter().map(|rs| rs_ready(rs)).sum()
}

/// The sum of `status.availableReplicas` of `rss`.
pub fn available_replica_count(rss: &[&ReplicaSet]) -> i32 {
    rss.iter().map(|rs| rs_available(rs)).sum()
}

/// `old` and, when there is one, `new`, as one list.
pub fn all_of<'a>(old: &'a [ReplicaSet], new: Option<&'a ReplicaSet>) -> Vec<&'a ReplicaSet> {
    old.iter().chain(new).collect()
}

/// The ReplicaSets with a non-zero `spec.replicas`.
pub fn active<'a>(rss: &[&'a ReplicaSet]) -> Vec<&'a ReplicaSet> {
    rss.iter()
        .copied()
        .filter(|rs| rs_replicas(rs) > 0)
        .collect()
}

/// Oldest first, then by name (upstream's `ReplicaSetsByCreationTimestamp`).
pub fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let ts = |rs: &ReplicaSet| rs.metadata.creation_timestamp.as_ref().map(|t| t.0);
    ts(a)
        .cmp(&ts(b))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Largest first; of equal size, the newer first (upstream's `ReplicaSetsBySizeNewer`,
/// the order replicas are added in).
pub fn by_size_newer(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b)
        .cmp(&rs_replicas(a))
        .then_with(|| by_creation(b, a))
}

/// Largest first; of equal size, the older first (upstream's `ReplicaSetsBySizeOlder`,
/// the order replicas are removed in).
pub fn by_size_older(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b)
        .cmp(&rs_replicas(a))
        .then_with(|| by_creation(a, b))
}

/// The ReplicaSet whose template is the Deployment's, the oldest if several are (upstream's
/// `FindNewReplicaSet`).
pub fn find_new_replica_set<'a>(d: &Deployment, rss: &'a [ReplicaSet]) -> Option<&'a ReplicaSet> {
    let template = &d.spec.as_ref()?.template;
    let mut sorted: Vec<&ReplicaSet> = rss.iter().collect();
    sorted.sort_by(|a, b| by_creation(a, b));
    sorted.into_iter().find(|rs| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| equal_ignore_hash(t, template))
    })
}

/// The only active ReplicaSet, or the newest one when none is active; `None` when several
/// are active and a scaling event has to be spread over them (upstream's
/// `FindActiveOrLatest`).
pub fn find_active_or_latest<'a>(
    new: Option<&'a ReplicaSet>,
    old: &[&'a ReplicaSet],
) -> Option<&'a ReplicaSet> {
    let mut old = old.to_vec();
    old.sort_by(|a, b| by_creation(b, a));
    let mut all = old.clone();
    all.extend(new);
    let all = active(&all);
    match all.len() {
        0 => new.or_else(|| old.first().copied()),
        1 => Some(all[0]),
        _ => None,
    }
}

/// How large the new ReplicaSet may be now (upstream's `NewRSNewReplicas`): with
/// RollingUpdate, as large as maxSurge lets the total grow but no larger than the
/// Deployment; with Recreate, the Deployment's size.
pub fn new_rs_new_replicas(
    d: &Deployment,
    all: &[&ReplicaSet],
    new: &ReplicaSet,
) -> Result<i32, NewReplicasError> {
    let replicas = deployment_replicas(d);
    match strategy_type(d) {
        ROLLING_UPDATE => {
            let surge = d
                .spec
                .as_ref()
                .and_then(|s| s.strategy.as_ref())
                .and_then(|s| s.rolling_update.as_ref())
                .and_then(|r| r.max_surge.clone())
                .unwrap_or(IntOrString::Int(0));
            let surge = scaled_value(&surge, replicas, true)?;
            let current = replica_count(all);
            let max_total = replicas.saturating_add(surge);
            let have = rs_replicas(new);
            if current >= max_total {
                return Ok(have);
            }
            Ok(have + (max_total - current).min(replicas - have))
        }
        RECREATE => Ok(replicas),
        other => Err(NewReplicasError::UnknownStrategy(other.to_string())),
    }
}

/// Why the new ReplicaSet's size cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NewReplicasError {
    /// maxSurge does not resolve.
    #[error(transparent)]
    Surge(#[from] IntOrPercentError),
    /// A strategy type other than RollingUpdate and Recreate.
    #[error("deployment type {0:?} isn't supported")]
    UnknownStrategy(String),
}

/// Whether the new ReplicaSet holds the whole Deployment: its size, its desired-replicas
/// annotation and its available pods all equal `spec.replicas` (upstream's `IsSaturated`).
pub fn is_saturated(d: &Deployment, rs: Option<&ReplicaSet>) -> bool {
    let Some(rs) = rs else { return false };
    let replicas = deployment_replicas(d);
    super::history::desired_replicas_annotation(rs) == Some(replicas)
        && rs_replicas(rs) == replicas
        && rs_available(rs) == replicas
}

/// The share of `to_add` (negative: to remove) that `rs` takes in a proportional scaling,
/// given `added` already handed out (upstream's `GetProportion`).
pub fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = replica_set_fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// How much `rs` would grow or shrink to keep its share of the Deployment at its new size,
/// from the max-replicas annotation written at the previous size (upstream's
/// `getReplicaSetFraction`).
fn replica_set_fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    let replicas = deployment_replicas(d);
    if replicas == 0 {
        return -rs_replicas(rs);
    }
    let deployment_replicas = replicas + max_surge(d);
    let annotated = max_replicas_annotation(rs).unwrap_or_else(|| {
        // Without the annotation, the Deployment's current size; the min/max in
        // `proportion` still keeps the result within bounds.
        d.status
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or_default()
    });
    if annotated == 0 {
        return 0;
    }
    let size = f64::from(rs_replicas(rs)) * f64::from(deployment_replicas) / f64::from(annotated);
    // Go's math.Round: half away from zero, as f64::round.
    (size.round() as i32) - rs_replicas(rs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::deployment::tests::{deployment, rolling, rs};

    #[test]
    fn percentages_round_surge_up_and_unavailability_down() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled_value(&pct("25%"), 10, true), Ok(3));
        assert_eq!(scaled_value(&pct("25%"), 10, false), Ok(2));
        assert_eq!(scaled_value(&pct("100%"), 7, false), Ok(7));
        assert_eq!(scaled_value(&IntOrString::Int(4), 10, true), Ok(4));
        assert_eq!(
            scaled_value(&pct("25"), 10, true),
            Err(IntOrPercentError::NotAPercentage("25".into()))
        );
        assert!(scaled_value(&pct("x%"), 10, true).is_err());
    }

    #[test]
    fn fenceposts_never_both_zero() {
        let pct = |s: &str| IntOrString::String(s.into());
        // Upstream's table: 1% of 2 rounds down to 0 unavailable, 0% surge: one may go.
        assert_eq!(
            resolve_fenceposts(Some(&pct("0%")), Some(&pct("1%")), 2),
            Ok((0, 1))
        );
        assert_eq!(
            resolve_fenceposts(Some(&pct("1%")), Some(&pct("25%")), 2),
            Ok((1, 0))
        );
        assert_eq!(
            resolve_fenceposts(Some(&pct("25%")), Some(&pct("25%")), 4),
            Ok((1, 1))
        );
        assert_eq!(resolve_fenceposts(None, None, 3), Ok((0, 1)));
    }

    #[test]
    fn surge_and_unavailability_of_deployments() {
        let d = rolling(deployment("web", 10), "25%", "25%");
        assert_eq!((max_surge(&d), max_unavailable(&d)), (3, 2));
        let d = rolling(deployment("web", 2), "0", "100%");
        assert_eq!(max_unavailable(&d), 2, "at most the replicas");
        let mut d = rolling(deployment("web", 0), "1", "1");
        assert_eq!(max_unavailable(&d), 0, "zero replicas");
        d.spec.as_mut().unwrap().strategy.as_mut().unwrap().type_ = Some(RECREATE.into());
        assert_eq!((max_surge(&d), max_unavailable(&d)), (0, 0));
    }

    #[test]
    fn the_new_replica_set_grows_within_surge() {
        let d = rolling(deployment("web", 4), "1", "1");
        let old = rs("web-old", 4, 4, "2026-01-01T00:00:00Z");
        let new = rs("web-new", 0, 0, "2026-01-01T00:01:00Z");
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), Ok(1));
        let old3 = rs("web-old", 3, 3, "2026-01-01T00:00:00Z");
        let new1 = rs("web-new", 1, 0, "2026-01-01T00:01:00Z");
        assert_eq!(new_rs_new_replicas(&d, &[&old3, &new1], &new1), Ok(2));
        let new2 = rs("web-new", 2, 0, "2026-01-01T00:01:00Z");
        assert_eq!(
            new_rs_new_replicas(&d, &[&old3, &new2], &new2),
            Ok(2),
            "at the surge limit"
        );
        let alone = rs("web-new", 3, 3, "2026-01-01T00:01:00Z");
        assert_eq!(
            new_rs_new_replicas(&d, &[&alone], &alone),
            Ok(4),
            "never over the Deployment's size"
        );
        let mut recreate = d.clone();
        recreate
            .spec
            .as_mut()
            .unwrap()
            .strategy
            .as_mut()
            .unwrap()
            .type_ = Some(RECREATE.into());
        assert_eq!(new_rs_new_replicas(&recreate, &[&old, &new], &new), Ok(4));
    }

    #[test]
    fn the_new_replica_set_is_the_oldest_with_the_template() {
        let d = deployment("web", 3);
        let mut other = rs("web-a", 1, 1, "2026-01-01T00:00:00Z");
        other.spec.as_mut().unwrap().template = Some(
            crate::controllers::deployment::tests::template("registry.local/app:v0"),
        );
        let first = rs("web-b", 1, 1, "2026-01-01T00:01:00Z");
        let second = rs("web-c", 1, 1, "2026-01-01T00:02:00Z");
        let list = vec![second.clone(), other, first.clone()];
        assert_eq!(
            find_new_replica_set(&d, &list).and_then(|r| r.metadata.name.clone()),
            first.metadata.name
        );
    }

    #[test]
    fn active_or_latest() {
        let a = rs("a", 0, 0, "2026-01-01T00:00:00Z");
        let b = rs("b", 0, 0, "2026-01-01T00:01:00Z");
        let c = rs("c", 2, 2, "2026-01-01T00:02:00Z");
        let name = |r: Option<&ReplicaSet>| r.and_then(|r| r.metadata.name.clone());
        assert_eq!(
            name(find_active_or_latest(None, &[&a, &b])),
            Some("b".into())
        );
        assert_eq!(
            name(find_active_or_latest(Some(&c), &[&a, &b])),
            Some("c".into())
        );
        let d = rs("d", 1, 1, "2026-01-01T00:03:00Z");
        assert_eq!(find_active_or_latest(Some(&c), &[&d]), None);
    }

    #[test]
    fn proportions_follow_the_max_replicas_annotation() {
        // Scaled from 10 (+3 surge = 13 annotated) to 20 (+5 = 25): a set of 8 becomes 15.
        let d = rolling(deployment("web", 20), "25%", "25%");
        let mut big = rs("big", 8, 8, "2026-01-01T00:00:00Z");
        crate::controllers::deployment::history::set_replicas_annotations(&mut big, 10, 13);
        assert_eq!(proportion(&big, &d, 12, 0), 7);
        assert_eq!(
            proportion(&big, &d, 5, 0),
            5,
            "capped by what is left to add"
        );
        assert_eq!(proportion(&big, &d, 12, 12), 0);
        let empty = rs("empty", 0, 0, "2026-01-01T00:00:00Z");
        assert_eq!(proportion(&empty, &d, 12, 0), 0, "never up from zero");
        let zero = rolling(deployment("web", 0), "25%", "25%");
        assert_eq!(proportion(&big, &zero, -13, 0), -8, "to zero: all of it");
    }

    #[test]
    fn saturation_needs_size_annotation_and_availability() {
        let d = deployment("web", 3);
        let mut new = rs("web-new", 3, 3, "2026-01-01T00:00:00Z");
        assert!(!is_saturated(&d, Some(&new)), "no annotation");
        crate::controllers::deployment::history::set_replicas_annotations(&mut new, 3, 4);
        assert!(is_saturated(&d, Some(&new)));
        new.status.as_mut().unwrap().available_replicas = Some(2);
        assert!(!is_saturated(&d, Some(&new)));
        assert!(!is_saturated(&d, None));
    }
}
