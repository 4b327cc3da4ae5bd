//! The RollingUpdate strategy (upstream's `rolling.go`): grow the new ReplicaSet as far as
//! maxSurge allows, shrink old ones as far as maxUnavailable allows — replicas that are
//! not available first, as they cost no availability — and repeat as pods become
//! available. The decisions are pure functions of the Deployment and its ReplicaSets; the
//! controller applies them one step per reconcile.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use rkube_client::{Action, ObjectRef};

use super::progress::deployment_complete;
use super::replicas::{
    NewReplicasError, active, all_of, by_creation, deployment_replicas, max_unavailable,
    new_rs_new_replicas, replica_count, rs_available, rs_replicas,
};
use super::{DeploymentController, replace_in};
use crate::error::{Error, Result};

/// The new ReplicaSet's next size, `None` when it stays (upstream's
/// `reconcileNewReplicaSet`): down to the Deployment's size if over it, else as far up as
/// maxSurge allows.
pub fn new_replica_set_target(
    d: &Deployment,
    all: &[&ReplicaSet],
    new: &ReplicaSet,
) -> Result<Option<i32>, NewReplicasError> {
    let (want, have) = (deployment_replicas(d), rs_replicas(new));
    if have == want {
        return Ok(None);
    }
    if have > want {
        return Ok(Some(want));
    }
    let target = new_rs_new_replicas(d, all, new)?;
    Ok((target != have).then_some(target))
}

/// The available pods of `rs`, at most its size: right after a scale-down its status may
/// still count pods about to go. The ReplicaSet controller deletes unavailable pods first,
/// so the available ones left are the smaller of the two. (Upstream trips over the stale
/// count with an error and waits; this keeps going within the same bound.)
fn available(rs: &ReplicaSet) -> i32 {
    rs_available(rs).min(rs_replicas(rs))
}

/// The old ReplicaSets' next sizes, as (name, size) for those that shrink, oldest first
/// (upstream's `reconcileOldReplicaSets`).
///
/// At most `all replicas - (replicas - maxUnavailable) - unavailable new replicas` go: first
/// the old replicas that are not available (cleaning those up costs no availability), then
/// available ones while more than `replicas - maxUnavailable` pods are available.
pub fn old_replica_set_targets(
    d: &Deployment,
    all: &[&ReplicaSet],
    old_active: &[&ReplicaSet],
    new: &ReplicaSet,
) -> Vec<(String, i32)> {
    if replica_count(old_active) == 0 {
        return Vec::new();
    }
    let min_available = deployment_replicas(d) - max_unavailable(d);
    let new_unavailable = rs_replicas(new) - available(new);
    let max_scaled_down = replica_count(all) - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Vec::new();
    }
    let mut old: Vec<(&ReplicaSet, i32)> =
        old_active.iter().map(|rs| (*rs, rs_replicas(rs))).collect();
    old.sort_by(|a, b| by_creation(a.0, b.0));

    // Unhealthy replicas first (upstream's `cleanupUnhealthyReplicas`).
    let mut cleaned = 0;
    for (rs, size) in old.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = *size - available(rs);
        if *size == 0 || unhealthy <= 0 {
            continue;
        }
        let n = (max_scaled_down - cleaned).min(unhealthy);
        *size -= n;
        cleaned += n;
    }

    // Then available ones, within maxUnavailable (`scaleDownOldReplicaSetsForRollingUpdate`).
    let available = old.iter().map(|(rs, _)| available(rs)).sum::<i32>() + available(new);
    if available > min_available {
        let total = available - min_available;
        let mut scaled = 0;
        for (_, size) in old.iter_mut() {
            if scaled >= total {
                break;
            }
            if *size == 0 {
                continue;
            }
            let n = (*size).min(total - scaled);
            *size -= n;
            scaled += n;
        }
    }

    old.into_iter()
        .filter(|(rs, size)| *size != rs_replicas(rs))
        .map(|(rs, size)| (rs.metadata.name.clone().unwrap_or_default(), size))
        .collect()
}

impl DeploymentController {
    /// One step of a rolling update (upstream's `rolloutRolling`): scale the new ReplicaSet
    /// up if it can be, else old ones down if they can be; once complete, clean up history.
    pub(super) async fn rollout_rolling(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> Result<Action> {
        let key = ObjectRef::from_obj(d);
        let (new, mut old) = self
            .get_all_replica_sets_and_sync_revision(d, rs_list, true)
            .await?;
        let Some(mut new) = new else {
            return Err(Error::Invalid(format!(
                "deployment {key}: no new replica set"
            )));
        };

        let target = new_replica_set_target(d, &all_of(&old, Some(&new)), &new)
            .map_err(|e| Error::Invalid(format!("deployment {key}: {e}")))?;
        if let Some(target) = target {
            let (scaled, updated) = self
                .scale_replica_set_and_record_event(&new, target, d)
                .await?;
            replace_in(rs_list, updated.clone());
            new = updated;
            if scaled {
                return self
                    .sync_rollout_status(d, &all_of(&old, Some(&new)), Some(&new))
                    .await;
            }
        }

        let targets = {
            let all = all_of(&old, Some(&new));
            let old_refs: Vec<&ReplicaSet> = old.iter().collect();
            old_replica_set_targets(d, &all, &active(&old_refs), &new)
        };
        let mut scaled_down = false;
        for (name, size) in targets {
            let Some(slot) = old
                .iter_mut()
                .find(|rs| rs.metadata.name.as_deref() == Some(name.as_str()))
            else {
                continue;
            };
            let (scaled, updated) = self
                .scale_replica_set_and_record_event(slot, size, d)
                .await?;
            scaled_down |= scaled;
            replace_in(rs_list, updated.clone());
            *slot = updated;
        }
        if !scaled_down && deployment_complete(d, d.status.as_ref()) {
            self.cleanup_deployment(d, &old).await?;
        }
        self.sync_rollout_status(d, &all_of(&old, Some(&new)), Some(&new))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::deployment::tests::{deployment, rolling, rs};

    #[test]
    fn the_new_replica_set_grows_by_surge_and_shrinks_to_size() {
        let d = rolling(deployment("web", 4), "1", "1");
        let old = rs("web-old", 4, 4, "2026-01-01T00:00:00Z");
        let new = rs("web-new", 0, 0, "2026-01-01T00:01:00Z");
        assert_eq!(new_replica_set_target(&d, &[&old, &new], &new), Ok(Some(1)));
        let full = rs("web-new", 4, 4, "2026-01-01T00:01:00Z");
        assert_eq!(new_replica_set_target(&d, &[&full], &full), Ok(None));
        let over = rs("web-new", 6, 6, "2026-01-01T00:01:00Z");
        assert_eq!(new_replica_set_target(&d, &[&over], &over), Ok(Some(4)));
        let at_limit = rs("web-new", 1, 0, "2026-01-01T00:01:00Z");
        assert_eq!(
            new_replica_set_target(&d, &[&old, &at_limit], &at_limit),
            Ok(None),
            "4 old + 1 new is the surge limit"
        );
    }

    #[test]
    fn old_replica_sets_shrink_within_max_unavailable() {
        let d = rolling(deployment("web", 4), "1", "1");
        let old = rs("web-old", 4, 4, "2026-01-01T00:00:00Z");
        let new = rs("web-new", 1, 0, "2026-01-01T00:01:00Z");
        // 5 pods, 3 must stay available, the new one is not: one old may go.
        assert_eq!(
            old_replica_set_targets(&d, &[&old, &new], &[&old], &new),
            [("web-old".to_string(), 3)]
        );
        // The new pod became available: 3 old + 2 new, 5 available, two more may go.
        let old3 = rs("web-old", 3, 3, "2026-01-01T00:00:00Z");
        let new2 = rs("web-new", 2, 2, "2026-01-01T00:01:00Z");
        assert_eq!(
            old_replica_set_targets(&d, &[&old3, &new2], &[&old3], &new2),
            [("web-old".to_string(), 1)]
        );
        // Nothing available on the new side and at the minimum: nothing goes.
        let old3_min = rs("web-old", 3, 3, "2026-01-01T00:00:00Z");
        let new2_none = rs("web-new", 2, 0, "2026-01-01T00:01:00Z");
        assert!(
            old_replica_set_targets(&d, &[&old3_min, &new2_none], &[&old3_min], &new2_none)
                .is_empty()
        );
    }

    #[test]
    fn a_stale_status_after_a_scale_down_does_not_count_twice() {
        // Regression: the old set was just scaled 4 -> 3 and its status still counts 4
        // available. Counting 4 + 2 would scale it to 0 and leave 2 available pods, under
        // the 3 required.
        let d = rolling(deployment("web", 4), "1", "1");
        let mut old = rs("web-old", 3, 4, "2026-01-01T00:00:00Z");
        old.status.as_mut().unwrap().replicas = 4;
        let new = rs("web-new", 2, 2, "2026-01-01T00:01:00Z");
        assert_eq!(
            old_replica_set_targets(&d, &[&old, &new], &[&old], &new),
            [("web-old".to_string(), 1)]
        );
    }

    #[test]
    fn unhealthy_old_replicas_go_first_and_oldest_first() {
        let d = rolling(deployment("web", 10), "3", "2");
        // Two old sets, the older has 2 replicas that are not available.
        let older = rs("web-1", 4, 2, "2026-01-01T00:00:00Z");
        let newer = rs("web-2", 6, 6, "2026-01-01T00:01:00Z");
        let new = rs("web-3", 3, 0, "2026-01-01T00:02:00Z");
        // 13 pods, min available 8, 3 new unavailable: at most 2 may go; the unhealthy two.
        assert_eq!(
            old_replica_set_targets(&d, &[&older, &newer, &new], &[&older, &newer], &new),
            [("web-1".to_string(), 2)]
        );
    }
}
