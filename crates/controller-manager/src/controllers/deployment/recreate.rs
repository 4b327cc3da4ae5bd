//! The Recreate strategy (upstream's `recreate.go`): scale every old ReplicaSet to zero,
//! wait until none of their pods is left running (terminating pods count as running), and
//! only then create the new ReplicaSet at full size.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use rkube_client::{Action, ObjectRef};

use super::progress::deployment_complete;
use super::replicas::{actual_replica_count, all_of, deployment_replicas, rs_replicas};
use super::{DeploymentController, replace_in};
use crate::error::{Error, Result};

/// Whether an old ReplicaSet still has pods (by its status) or any pod of a ReplicaSet
/// other than the new one has not finished (upstream's `oldPodsRunning`).
pub fn old_pods_running(
    new: Option<&ReplicaSet>,
    old: &[&ReplicaSet],
    pods: &HashMap<String, Vec<Arc<Pod>>>,
) -> bool {
    if actual_replica_count(old) > 0 {
        return true;
    }
    let new_uid = new.and_then(|rs| rs.metadata.uid.as_deref());
    pods.iter()
        .filter(|(uid, _)| Some(uid.as_str()) != new_uid)
        .flat_map(|(_, pods)| pods)
        .any(|pod| !crate::pods::is_terminated(pod))
}

impl DeploymentController {
    /// One step of a Recreate rollout (upstream's `rolloutRecreate`).
    pub(super) async fn rollout_recreate(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
        pods: &HashMap<String, Vec<Arc<Pod>>>,
    ) -> Result<Action> {
        // No new ReplicaSet yet: creating it now would scale up before the old are down.
        let (new, mut old) = self
            .get_all_replica_sets_and_sync_revision(d, rs_list, false)
            .await?;

        let mut scaled_down = false;
        for rs in old.iter_mut().filter(|rs| rs_replicas(rs) > 0) {
            let (scaled, updated) = self.scale_replica_set_and_record_event(rs, 0, d).await?;
            if scaled {
                replace_in(rs_list, updated.clone());
                *rs = updated;
                scaled_down = true;
            }
        }
        if scaled_down {
            return self
                .sync_rollout_status(d, &all_of(&old, new.as_ref()), new.as_ref())
                .await;
        }

        if old_pods_running(new.as_ref(), &old.iter().collect::<Vec<_>>(), pods) {
            return self
                .sync_rollout_status(d, &all_of(&old, new.as_ref()), new.as_ref())
                .await;
        }

        let (new, old) = match new {
            Some(new) => (new, old),
            None => {
                let (new, old) = self
                    .get_all_replica_sets_and_sync_revision(d, rs_list, true)
                    .await?;
                let Some(new) = new else {
                    let key = ObjectRef::from_obj(d);
                    return Err(Error::Invalid(format!(
                        "deployment {key}: no new replica set"
                    )));
                };
                (new, old)
            }
        };
        let (_, new) = self
            .scale_replica_set_and_record_event(&new, deployment_replicas(d), d)
            .await?;
        replace_in(rs_list, new.clone());

        if deployment_complete(d, d.status.as_ref()) {
            self.cleanup_deployment(d, &old).await?;
        }
        self.sync_rollout_status(d, &all_of(&old, Some(&new)), Some(&new))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::deployment::tests::rs;
    use k8s_openapi::api::core::v1::PodStatus;

    fn pod(phase: &str) -> Arc<Pod> {
        Arc::new(Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn old_pods_hold_up_the_new_replica_set() {
        let old = rs("web-old", 0, 0, "2026-01-01T00:00:00Z");
        let new = rs("web-new", 0, 0, "2026-01-01T00:01:00Z");
        let mut pods = HashMap::new();
        assert!(!old_pods_running(Some(&new), &[&old], &pods));

        pods.insert("uid-web-old".to_string(), vec![pod("Running")]);
        assert!(
            old_pods_running(Some(&new), &[&old], &pods),
            "a running old pod"
        );
        pods.insert(
            "uid-web-old".to_string(),
            vec![pod("Succeeded"), pod("Failed")],
        );
        assert!(
            !old_pods_running(Some(&new), &[&old], &pods),
            "finished pods do not count"
        );
        pods.insert("uid-web-new".to_string(), vec![pod("Running")]);
        assert!(
            !old_pods_running(Some(&new), &[&old], &pods),
            "new pods do not count"
        );

        let mut reporting = old.clone();
        reporting.status.as_mut().unwrap().replicas = 1;
        assert!(
            old_pods_running(Some(&new), &[&reporting], &HashMap::new()),
            "the old ReplicaSet still counts a pod"
        );
    }
}
