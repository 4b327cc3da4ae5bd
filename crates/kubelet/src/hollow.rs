//! Hollow nodes: a simulated runtime, named as the fake it is, for scale tests of the
//! control plane. Sandboxes get made-up IPs, images are always present, and a started
//! container becomes running after a configurable delay and runs until stopped. Everything
//! above the runtime — registration, leases, pod workers, status — is the real kubelet code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::runtime::{Result, Runtime, RuntimeError, cri, labels};

/// A container's sandbox, labels and annotations.
type Owner = (String, HashMap<String, String>, HashMap<String, String>);

#[derive(Default)]
struct State {
    next: u64,
    sandboxes: HashMap<String, (cri::PodSandbox, String)>,
    containers: HashMap<String, cri::ContainerStatus>,
    /// Container id → (sandbox id, labels, annotations).
    owners: HashMap<String, Owner>,
}

/// The simulated runtime of one hollow node.
#[derive(Clone)]
pub struct HollowRuntime {
    state: Arc<Mutex<State>>,
    start_delay: Duration,
    /// The node's index, for distinct made-up pod IPs.
    node_index: u32,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl HollowRuntime {
    /// A runtime whose containers run `start_delay` after StartContainer.
    pub fn new(node_index: u32, start_delay: Duration) -> Self {
        Self {
            state: Arc::default(),
            start_delay,
            node_index,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many containers are running (for tests and benchmarks).
    pub fn running_containers(&self) -> usize {
        self.lock()
            .containers
            .values()
            .filter(|c| c.state == cri::ContainerState::ContainerRunning as i32)
            .count()
    }
}

impl Runtime for HollowRuntime {
    async fn version(&self) -> Result<cri::VersionResponse> {
        Ok(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "hollow".into(),
            runtime_version: "0.1.0".into(),
            runtime_api_version: "v1".into(),
        })
    }

    async fn status(&self) -> Result<cri::RuntimeStatus> {
        Ok(cri::RuntimeStatus {
            conditions: ["RuntimeReady", "NetworkReady"]
                .iter()
                .map(|t| cri::RuntimeCondition {
                    r#type: t.to_string(),
                    status: true,
                    ..Default::default()
                })
                .collect(),
        })
    }

    async fn run_pod_sandbox(&self, config: cri::PodSandboxConfig) -> Result<String> {
        let mut s = self.lock();
        s.next += 1;
        let n = s.next;
        let id = format!("hollow-sandbox-{n}");
        // 10.128.0.0/9 spread over nodes: 16 bits of node, 15 bits of pod.
        let ip = format!(
            "10.{}.{}.{}",
            128 + (self.node_index >> 8) % 128,
            self.node_index % 256,
            n % 250 + 2
        );
        let sandbox = cri::PodSandbox {
            id: id.clone(),
            metadata: config.metadata,
            state: cri::PodSandboxState::SandboxReady as i32,
            created_at: now(),
            labels: config.labels,
            annotations: config.annotations,
            runtime_handler: String::new(),
        };
        s.sandboxes.insert(id.clone(), (sandbox, ip));
        Ok(id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut s = self.lock();
        if let Some((sb, _)) = s.sandboxes.get_mut(id) {
            sb.state = cri::PodSandboxState::SandboxNotready as i32;
        }
        let t = now();
        let in_sandbox: Vec<String> = s
            .owners
            .iter()
            .filter(|(_, (sb, _, _))| sb == id)
            .map(|(c, _)| c.clone())
            .collect();
        for c in in_sandbox {
            if let Some(st) = s.containers.get_mut(&c)
                && st.state == cri::ContainerState::ContainerRunning as i32
            {
                st.state = cri::ContainerState::ContainerExited as i32;
                st.finished_at = t;
                st.exit_code = 137;
                st.reason = "Error".into();
            }
        }
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut s = self.lock();
        s.sandboxes.remove(id);
        let gone: Vec<String> = s
            .owners
            .iter()
            .filter(|(_, (sb, _, _))| sb == id)
            .map(|(c, _)| c.clone())
            .collect();
        for c in gone {
            s.owners.remove(&c);
            s.containers.remove(&c);
        }
        Ok(())
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<cri::PodSandboxStatus> {
        let s = self.lock();
        let (sb, ip) = s
            .sandboxes
            .get(id)
            .ok_or_else(|| RuntimeError::NotFound(format!("sandbox {id}")))?;
        Ok(cri::PodSandboxStatus {
            id: sb.id.clone(),
            metadata: sb.metadata.clone(),
            state: sb.state,
            created_at: sb.created_at,
            network: Some(cri::PodSandboxNetworkStatus {
                ip: ip.clone(),
                ..Default::default()
            }),
            labels: sb.labels.clone(),
            annotations: sb.annotations.clone(),
            ..Default::default()
        })
    }

    async fn list_pod_sandboxes(&self, pod_uid: Option<&str>) -> Result<Vec<cri::PodSandbox>> {
        Ok(self
            .lock()
            .sandboxes
            .values()
            .filter(|(s, _)| {
                pod_uid.is_none_or(|u| s.labels.get(labels::POD_UID).map(String::as_str) == Some(u))
            })
            .map(|(s, _)| s.clone())
            .collect())
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
        _sandbox_config: cri::PodSandboxConfig,
    ) -> Result<String> {
        let mut s = self.lock();
        if !s.sandboxes.contains_key(sandbox_id) {
            return Err(RuntimeError::NotFound(format!("sandbox {sandbox_id}")));
        }
        s.next += 1;
        let id = format!("hollow-container-{}", s.next);
        let status = cri::ContainerStatus {
            id: id.clone(),
            metadata: config.metadata.clone(),
            state: cri::ContainerState::ContainerCreated as i32,
            created_at: now(),
            image: config.image.clone(),
            image_ref: config.image.map(|i| i.image).unwrap_or_default(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            ..Default::default()
        };
        s.containers.insert(id.clone(), status);
        s.owners.insert(
            id.clone(),
            (sandbox_id.to_string(), config.labels, config.annotations),
        );
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        if !self.lock().containers.contains_key(id) {
            return Err(RuntimeError::NotFound(format!("container {id}")));
        }
        tokio::time::sleep(self.start_delay).await;
        let mut s = self.lock();
        let st = s
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id}")))?;
        st.state = cri::ContainerState::ContainerRunning as i32;
        st.started_at = now();
        Ok(())
    }

    async fn stop_container(&self, id: &str, _timeout: Duration) -> Result<()> {
        let mut s = self.lock();
        if let Some(st) = s.containers.get_mut(id)
            && st.state != cri::ContainerState::ContainerExited as i32
        {
            st.state = cri::ContainerState::ContainerExited as i32;
            st.finished_at = now();
            // A hollow container stops at SIGTERM, as a well-behaved process does.
            st.exit_code = 0;
            st.reason = "Completed".into();
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        let mut s = self.lock();
        s.containers.remove(id);
        s.owners.remove(id);
        Ok(())
    }

    async fn list_containers(&self, pod_uid: Option<&str>) -> Result<Vec<cri::Container>> {
        let s = self.lock();
        Ok(s.containers
            .values()
            .filter(|st| {
                pod_uid
                    .is_none_or(|u| st.labels.get(labels::POD_UID).map(String::as_str) == Some(u))
            })
            .map(|st| cri::Container {
                id: st.id.clone(),
                pod_sandbox_id: s
                    .owners
                    .get(&st.id)
                    .map(|o| o.0.clone())
                    .unwrap_or_default(),
                metadata: st.metadata.clone(),
                image: st.image.clone(),
                image_ref: st.image_ref.clone(),
                state: st.state,
                created_at: st.created_at,
                labels: st.labels.clone(),
                annotations: st.annotations.clone(),
                ..Default::default()
            })
            .collect())
    }

    async fn container_status(&self, id: &str) -> Result<cri::ContainerStatus> {
        self.lock()
            .containers
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id}")))
    }

    async fn exec_sync(
        &self,
        _id: &str,
        _cmd: Vec<String>,
        _timeout: Duration,
    ) -> Result<cri::ExecSyncResponse> {
        Ok(cri::ExecSyncResponse::default())
    }

    async fn exec_url(&self, _request: cri::ExecRequest) -> Result<String> {
        Err(RuntimeError::Unavailable(
            "a hollow node runs no processes to attach to".into(),
        ))
    }

    async fn image_status(&self, image: &str) -> Result<Option<cri::Image>> {
        Ok(Some(cri::Image {
            id: image.to_string(),
            repo_tags: vec![image.to_string()],
            ..Default::default()
        }))
    }

    async fn pull_image(
        &self,
        image: &str,
        _auth: Option<cri::AuthConfig>,
        _sandbox_config: cri::PodSandboxConfig,
    ) -> Result<String> {
        Ok(image.to_string())
    }
}
