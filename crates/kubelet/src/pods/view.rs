//! What the runtime has for one pod: its sandboxes and container instances, read from CRI
//! by the pod's UID label. Only objects carrying rkube's managed-by label count, so
//! containers someone else started are left alone.

use crate::runtime::{Result, Runtime, annotations, cri, labels};

/// One container instance.
#[derive(Debug, Clone)]
pub struct Instance {
    /// CRI container id.
    pub id: String,
    /// The container's name in the spec.
    pub name: String,
    /// Restart count of this instance (0 for the first).
    pub attempt: u32,
    /// The sandbox it runs in.
    pub sandbox_id: String,
    /// The image the pod spec named when it was created (empty: unknown).
    pub spec_image: String,
    /// Its status.
    pub status: cri::ContainerStatus,
}

impl Instance {
    /// CRI state.
    pub fn state(&self) -> cri::ContainerState {
        cri::ContainerState::try_from(self.status.state)
            .unwrap_or(cri::ContainerState::ContainerUnknown)
    }

    /// Running now.
    pub fn running(&self) -> bool {
        self.state() == cri::ContainerState::ContainerRunning
    }

    /// How long it ran: zero when it never started (a failed start leaves `started_at`
    /// unset), so a container that cannot start still backs off.
    pub fn ran(&self) -> std::time::Duration {
        let s = &self.status;
        if s.started_at > 0 && s.finished_at > s.started_at {
            std::time::Duration::from_nanos((s.finished_at - s.started_at) as u64)
        } else {
            std::time::Duration::ZERO
        }
    }

    /// When it finished, for back-off: its finish time, or its creation when it never ran.
    pub fn finished_at(&self) -> i64 {
        self.status.finished_at.max(self.status.created_at)
    }

    /// Exited (or unknown, which the kubelet treats as exited).
    pub fn exited(&self) -> bool {
        matches!(
            self.state(),
            cri::ContainerState::ContainerExited | cri::ContainerState::ContainerUnknown
        )
    }
}

/// A pod's sandboxes and containers.
#[derive(Debug, Clone, Default)]
pub struct PodView {
    /// Sandboxes, newest first.
    pub sandboxes: Vec<cri::PodSandbox>,
    /// Container instances, newest first.
    pub instances: Vec<Instance>,
}

/// Whether a CRI object carries rkube's labels for pod `uid`.
pub fn owned_by(l: &std::collections::HashMap<String, String>, uid: &str) -> bool {
    l.get(labels::MANAGED_BY).map(String::as_str) == Some(labels::MANAGER)
        && l.get(labels::POD_UID).map(String::as_str) == Some(uid)
}

impl PodView {
    /// Reads the pod's objects from the runtime.
    pub async fn read<R: Runtime>(runtime: &R, uid: &str) -> Result<Self> {
        let mut sandboxes: Vec<cri::PodSandbox> = runtime
            .list_pod_sandboxes(Some(uid))
            .await?
            .into_iter()
            .filter(|s| owned_by(&s.labels, uid))
            .collect();
        sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        let containers: Vec<cri::Container> = runtime
            .list_containers(Some(uid))
            .await?
            .into_iter()
            .filter(|c| owned_by(&c.labels, uid))
            .collect();
        let mut instances = Vec::with_capacity(containers.len());
        for c in containers {
            let status = match runtime.container_status(&c.id).await {
                Ok(s) => s,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            instances.push(Instance {
                name: c
                    .labels
                    .get(labels::CONTAINER_NAME)
                    .cloned()
                    .or_else(|| c.metadata.as_ref().map(|m| m.name.clone()))
                    .unwrap_or_default(),
                attempt: c
                    .annotations
                    .get(annotations::RESTART_COUNT)
                    .and_then(|v| v.parse().ok())
                    .or_else(|| c.metadata.as_ref().map(|m| m.attempt))
                    .unwrap_or(0),
                spec_image: c
                    .annotations
                    .get(annotations::IMAGE)
                    .cloned()
                    .unwrap_or_default(),
                sandbox_id: c.pod_sandbox_id.clone(),
                id: c.id,
                status,
            });
        }
        instances.sort_by(|a, b| {
            b.attempt
                .cmp(&a.attempt)
                .then(b.status.created_at.cmp(&a.status.created_at))
        });
        Ok(Self {
            sandboxes,
            instances,
        })
    }

    /// The newest instance of container `name`.
    pub fn latest(&self, name: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.name == name)
    }

    /// The instance before the newest one.
    pub fn previous(&self, name: &str) -> Option<&Instance> {
        self.instances.iter().filter(|i| i.name == name).nth(1)
    }

    /// The newest sandbox if it is ready.
    pub fn ready_sandbox(&self) -> Option<&cri::PodSandbox> {
        self.sandboxes
            .first()
            .filter(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
    }

    /// The newest sandbox's attempt number.
    pub fn sandbox_attempt(&self) -> Option<u32> {
        self.sandboxes
            .first()
            .and_then(|s| s.metadata.as_ref().map(|m| m.attempt))
    }
}
