//! The container runtime as the kubelet sees it: the CRI v1 operations it uses, as a trait
//! so the pod workers run unchanged over containerd ([`crate::cri::CriRuntime`]) and over the
//! simulated runtime of hollow nodes. The messages are CRI's own (`k8s_cri::v1`).

use std::future::Future;
use std::time::Duration;

pub use k8s_cri::v1 as cri;

/// Labels rkube puts on every sandbox and container, as upstream's kubelet does, so a
/// restarted kubelet finds what it created and leaves everything else alone.
pub mod labels {
    /// The pod's name.
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    /// The pod's namespace.
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    /// The pod's UID.
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    /// The container's name in the pod spec.
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    /// Marks objects created by rkube's kubelet (value `rkube-kubelet`).
    pub const MANAGED_BY: &str = "io.rkube.managed-by";
    /// The value of [`MANAGED_BY`].
    pub const MANAGER: &str = "rkube-kubelet";
}

/// Annotations rkube puts on containers: what it needs to know after a restart.
pub mod annotations {
    /// How many times the container was restarted before this instance.
    pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
    /// The pod's `terminationGracePeriodSeconds` when the container was created.
    pub const TERMINATION_GRACE: &str = "io.kubernetes.pod.terminationGracePeriod";
    /// `init` for init containers, `regular` for the others.
    pub const KIND: &str = "io.rkube.container.kind";
    /// The image the pod spec named when the instance was created (a changed image
    /// restarts the container, as upstream's changed container definition does).
    pub const IMAGE: &str = "io.rkube.container.image";
}

/// A failed runtime call.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime answered with an error status.
    #[error("{op}: {status}")]
    Call {
        /// The CRI operation.
        op: &'static str,
        /// The gRPC status the runtime returned.
        #[source]
        status: Box<tonic::Status>,
    },
    /// The object does not exist (any more).
    #[error("{0} not found")]
    NotFound(String),
    /// The runtime cannot be reached or is misconfigured.
    #[error("{0}")]
    Unavailable(String),
}

impl RuntimeError {
    /// Whether this says the object does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            RuntimeError::NotFound(_) => true,
            RuntimeError::Call { status, .. } => status.code() == tonic::Code::NotFound,
            RuntimeError::Unavailable(_) => false,
        }
    }

    /// The runtime's own message, without the operation prefix.
    pub fn message(&self) -> String {
        match self {
            RuntimeError::Call { status, .. } => status.message().to_string(),
            other => other.to_string(),
        }
    }
}

/// The result of a runtime call.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// The CRI operations the kubelet uses. Cloning is cheap (a shared connection).
pub trait Runtime: Clone + Send + Sync + 'static {
    /// The runtime's name and CRI version.
    fn version(&self) -> impl Future<Output = Result<cri::VersionResponse>> + Send;
    /// The runtime's conditions (RuntimeReady, NetworkReady).
    fn status(&self) -> impl Future<Output = Result<cri::RuntimeStatus>> + Send;

    /// Creates and starts a sandbox; returns its id.
    fn run_pod_sandbox(
        &self,
        config: cri::PodSandboxConfig,
    ) -> impl Future<Output = Result<String>> + Send;
    /// Stops a sandbox and every container in it (idempotent).
    fn stop_pod_sandbox(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// Removes a stopped sandbox (idempotent).
    fn remove_pod_sandbox(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// One sandbox's status (state, IP).
    fn pod_sandbox_status(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<cri::PodSandboxStatus>> + Send;
    /// Every sandbox, or those of pod `pod_uid` (by its label).
    fn list_pod_sandboxes(
        &self,
        pod_uid: Option<&str>,
    ) -> impl Future<Output = Result<Vec<cri::PodSandbox>>> + Send;

    /// Creates a container in a sandbox; returns its id.
    fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
        sandbox_config: cri::PodSandboxConfig,
    ) -> impl Future<Output = Result<String>> + Send;
    /// Starts a created container.
    fn start_container(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// Stops a container: SIGTERM, then SIGKILL after `timeout` (idempotent).
    fn stop_container(
        &self,
        id: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Removes a container (idempotent).
    fn remove_container(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// Every container, or those of pod `pod_uid` (by its label).
    fn list_containers(
        &self,
        pod_uid: Option<&str>,
    ) -> impl Future<Output = Result<Vec<cri::Container>>> + Send;
    /// One container's status (state, exit code, reason, log path).
    fn container_status(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<cri::ContainerStatus>> + Send;
    /// Runs a command in a container and waits for it (`timeout` zero: no limit).
    fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> impl Future<Output = Result<cri::ExecSyncResponse>> + Send;

    /// Prepares a streaming exec (stdin, a TTY): the URL of the runtime's streaming server
    /// that serves it (WebSocket `v4.channel.k8s.io` or SPDY).
    fn exec_url(&self, request: cri::ExecRequest) -> impl Future<Output = Result<String>> + Send;

    /// The image if present, with its id.
    fn image_status(&self, image: &str) -> impl Future<Output = Result<Option<cri::Image>>> + Send;
    /// Pulls an image; returns its reference (the image id).
    fn pull_image(
        &self,
        image: &str,
        auth: Option<cri::AuthConfig>,
        sandbox_config: cri::PodSandboxConfig,
    ) -> impl Future<Output = Result<String>> + Send;
}
