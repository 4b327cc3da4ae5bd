//! Finding the runtime's instances of a pod's container, by the labels the kubelet puts on
//! every container it creates: the current one (for logs and exec) and the one before it
//! (for `logs --previous`).

use crate::runtime::{Runtime, RuntimeError, annotations, cri, labels};

/// The instances of one container of one pod.
#[derive(Debug)]
pub struct Instances {
    /// Instances of the pod's newest incarnation (by UID), lowest restart count first.
    instances: Vec<Instance>,
}

/// One instance of a container.
#[derive(Debug, Clone)]
pub struct Instance {
    /// The runtime's container id.
    pub id: String,
    /// How many restarts came before this instance.
    pub restart_count: u64,
    /// Whether it is running.
    pub running: bool,
    /// When it was created (ns since the epoch).
    pub created_at: i64,
}

impl Instances {
    /// The instances of container `container` of pod `namespace/pod` that the runtime has.
    pub async fn find<R: Runtime>(
        runtime: &R,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<Self, RuntimeError> {
        let all = runtime.list_containers(None).await?;
        Ok(Self::select(all, namespace, pod, container))
    }

    /// The instances among `all`.
    fn select(all: Vec<cri::Container>, namespace: &str, pod: &str, container: &str) -> Self {
        let label = |c: &cri::Container, key: &str| c.labels.get(key).cloned().unwrap_or_default();
        let mut matching: Vec<cri::Container> = all
            .into_iter()
            .filter(|c| {
                label(c, labels::MANAGED_BY) == labels::MANAGER
                    && label(c, labels::POD_NAMESPACE) == namespace
                    && label(c, labels::POD_NAME) == pod
                    && label(c, labels::CONTAINER_NAME) == container
            })
            .collect();
        // A pod deleted and created again under the same name may still have containers of
        // the old one: only the newest incarnation counts.
        let newest_uid = matching
            .iter()
            .max_by_key(|c| c.created_at)
            .map(|c| label(c, labels::POD_UID));
        if let Some(uid) = newest_uid {
            matching.retain(|c| label(c, labels::POD_UID) == uid);
        }
        let mut instances: Vec<Instance> = matching
            .into_iter()
            .map(|c| {
                let restart_count = c
                    .annotations
                    .get(annotations::RESTART_COUNT)
                    .and_then(|n| n.parse().ok())
                    .or_else(|| c.metadata.as_ref().map(|m| u64::from(m.attempt)))
                    .unwrap_or(0);
                Instance {
                    running: c.state == cri::ContainerState::ContainerRunning as i32,
                    restart_count,
                    created_at: c.created_at,
                    id: c.id,
                }
            })
            .collect();
        instances.sort_by_key(|i| (i.restart_count, i.created_at));
        Instances { instances }
    }

    /// Whether there is no instance at all.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// The instance logs and exec are about: the running one (the newest, should there be
    /// two), else the one with the highest restart count.
    pub fn current(&self) -> Option<&Instance> {
        self.instances
            .iter()
            .rev()
            .find(|i| i.running)
            .or_else(|| self.instances.last())
    }

    /// The instance before the current one: the highest restart count below it.
    pub fn previous(&self) -> Option<&Instance> {
        let current = self.current()?;
        self.instances
            .iter()
            .rev()
            .find(|i| i.restart_count < current.restart_count && i.id != current.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn container(
        id: &str,
        uid: &str,
        name: &str,
        restarts: u64,
        state: cri::ContainerState,
        created: i64,
    ) -> cri::Container {
        cri::Container {
            id: id.into(),
            state: state as i32,
            created_at: created,
            labels: HashMap::from([
                (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
                (labels::POD_NAMESPACE.to_string(), "ns".to_string()),
                (labels::POD_NAME.to_string(), "p".to_string()),
                (labels::POD_UID.to_string(), uid.to_string()),
                (labels::CONTAINER_NAME.to_string(), name.to_string()),
            ]),
            annotations: HashMap::from([(
                annotations::RESTART_COUNT.to_string(),
                restarts.to_string(),
            )]),
            ..Default::default()
        }
    }

    use cri::ContainerState::{ContainerExited as Exited, ContainerRunning as Running};

    #[test]
    fn the_running_instance_is_current_and_the_one_before_is_previous() {
        let all = vec![
            container("a0", "u", "app", 0, Exited, 1),
            container("a2", "u", "app", 2, Running, 3),
            container("a1", "u", "app", 1, Exited, 2),
            container("s0", "u", "sidecar", 5, Running, 1),
        ];
        let found = Instances::select(all, "ns", "p", "app");
        assert_eq!(found.current().map(|i| i.id.as_str()), Some("a2"));
        assert_eq!(found.previous().map(|i| i.id.as_str()), Some("a1"));
    }

    #[test]
    fn without_a_running_instance_the_latest_is_current() {
        let all = vec![
            container("a3", "u", "app", 3, Exited, 4),
            container("a4", "u", "app", 4, Exited, 5),
        ];
        let found = Instances::select(all, "ns", "p", "app");
        assert_eq!(found.current().map(|i| i.id.as_str()), Some("a4"));
        assert_eq!(found.previous().map(|i| i.id.as_str()), Some("a3"));
        let single = Instances::select(
            vec![container("a0", "u", "app", 0, Running, 1)],
            "ns",
            "p",
            "app",
        );
        assert!(single.previous().is_none());
        assert!(Instances::select(Vec::new(), "ns", "p", "app").is_empty());
    }

    #[test]
    fn only_the_newest_pod_incarnation_counts() {
        let all = vec![
            container("old", "u1", "app", 7, Running, 1),
            container("new", "u2", "app", 0, Running, 10),
        ];
        let found = Instances::select(all, "ns", "p", "app");
        assert_eq!(found.current().map(|i| i.id.as_str()), Some("new"));
        assert!(found.previous().is_none());
    }

    #[test]
    fn containers_of_others_are_ignored() {
        let mut foreign = container("x", "u", "app", 0, Running, 1);
        foreign.labels.remove(labels::MANAGED_BY);
        let found = Instances::select(vec![foreign], "ns", "p", "app");
        assert!(found.is_empty());
    }
}
