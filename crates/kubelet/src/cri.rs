//! [`CriRuntime`]: the [`Runtime`] over a real CRI v1 endpoint (containerd's unix socket),
//! and the start-up check that says what is wrong with the runtime instead of crash-looping.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::runtime::{Result, Runtime, RuntimeError, cri};

/// A CRI v1 runtime reached over a unix socket.
#[derive(Clone)]
pub struct CriRuntime {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    endpoint: PathBuf,
}

/// Why the runtime cannot be used, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The endpoint is not a `unix://` path.
    #[error("--container-runtime-endpoint {0:?} must be a unix socket (unix:///path/to.sock)")]
    NotUnix(String),
    /// No socket at the path.
    #[error(
        "no container runtime socket at {0}: is containerd running? (start rkube's own with scripts/containerd start <dir>)"
    )]
    NoSocket(PathBuf),
    /// The socket does not answer CRI v1.
    #[error(
        "the runtime at {path} does not serve CRI v1 ({message}): is containerd's CRI plugin disabled (disabled_plugins = [\"cri\"] in its config.toml)?"
    )]
    NoCri {
        /// The socket.
        path: PathBuf,
        /// The runtime's answer.
        message: String,
    },
    /// The runtime reports itself not ready.
    #[error("the container runtime is not ready: {0}")]
    NotReady(String),
    /// The sandbox image is not present and cannot be pulled.
    #[error(
        "the sandbox (pause) image {image} is not in the runtime: import it (scripts/build-images --import <socket>) and name it as sandbox_image in containerd's config"
    )]
    NoSandboxImage {
        /// The image name.
        image: String,
    },
}

/// Every CRI call but pulls, stops and exec (which have their own) gets upstream's
/// two-minute deadline, so a hung runtime cannot block a worker forever.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

fn deadline<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

fn uid_selector(uid: &str) -> std::collections::HashMap<String, String> {
    std::collections::HashMap::from([
        (crate::runtime::labels::POD_UID.to_string(), uid.to_string()),
        (
            crate::runtime::labels::MANAGED_BY.to_string(),
            crate::runtime::labels::MANAGER.to_string(),
        ),
    ])
}

fn call(op: &'static str) -> impl FnOnce(tonic::Status) -> RuntimeError {
    move |status| {
        if status.code() == tonic::Code::NotFound {
            RuntimeError::NotFound(format!("{op}: {}", status.message()))
        } else {
            RuntimeError::Call {
                op,
                status: Box::new(status),
            }
        }
    }
}

impl CriRuntime {
    /// Connects lazily to `endpoint` (`unix:///run/containerd/containerd.sock` or a plain
    /// path).
    pub fn connect(endpoint: &str) -> Result<Self, EndpointError> {
        let path = match endpoint.strip_prefix("unix://") {
            Some(p) => PathBuf::from(p),
            None if endpoint.starts_with('/') => PathBuf::from(endpoint),
            None => return Err(EndpointError::NotUnix(endpoint.to_string())),
        };
        let socket = path.clone();
        // The URI is required by tonic but unused: every connection goes to the socket.
        let channel = Endpoint::from_static("http://cri.invalid")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }));
        Ok(Self {
            runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            images: ImageServiceClient::new(channel).max_decoding_message_size(64 << 20),
            endpoint: path,
        })
    }

    /// The socket path.
    pub fn endpoint(&self) -> &Path {
        &self.endpoint
    }

    /// Checks that the runtime answers CRI v1 and is ready, and that `sandbox_image` (if
    /// given) is present; returns the runtime's version.
    pub async fn check(
        &self,
        sandbox_image: Option<&str>,
    ) -> Result<cri::VersionResponse, EndpointError> {
        if !self.endpoint.exists() {
            return Err(EndpointError::NoSocket(self.endpoint.clone()));
        }
        let version = self.version().await.map_err(|e| EndpointError::NoCri {
            path: self.endpoint.clone(),
            message: e.message(),
        })?;
        let status = self
            .status()
            .await
            .map_err(|e| EndpointError::NotReady(e.message()))?;
        if let Some(c) = status
            .conditions
            .iter()
            .find(|c| c.r#type == "RuntimeReady" && !c.status)
        {
            return Err(EndpointError::NotReady(format!(
                "{}: {}",
                c.reason, c.message
            )));
        }
        if let Some(image) = sandbox_image {
            match self.image_status(image).await {
                Ok(Some(_)) => {}
                _ => {
                    return Err(EndpointError::NoSandboxImage {
                        image: image.to_string(),
                    });
                }
            }
        }
        Ok(version)
    }
}

impl Runtime for CriRuntime {
    async fn version(&self) -> Result<cri::VersionResponse> {
        let r = self
            .runtime
            .clone()
            .version(deadline(cri::VersionRequest {
                version: "v1".into(),
            }))
            .await
            .map_err(call("Version"))?;
        Ok(r.into_inner())
    }

    async fn status(&self) -> Result<cri::RuntimeStatus> {
        let r = self
            .runtime
            .clone()
            .status(deadline(cri::StatusRequest { verbose: false }))
            .await
            .map_err(call("Status"))?;
        Ok(r.into_inner().status.unwrap_or_default())
    }

    async fn run_pod_sandbox(&self, config: cri::PodSandboxConfig) -> Result<String> {
        let r = self
            .runtime
            .clone()
            .run_pod_sandbox(deadline(cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            }))
            .await
            .map_err(call("RunPodSandbox"))?;
        Ok(r.into_inner().pod_sandbox_id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .stop_pod_sandbox(deadline(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            }))
            .await
            .map_err(call("StopPodSandbox"))?;
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .remove_pod_sandbox(deadline(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            }))
            .await
            .map_err(call("RemovePodSandbox"))?;
        Ok(())
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<cri::PodSandboxStatus> {
        let r = self
            .runtime
            .clone()
            .pod_sandbox_status(deadline(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            }))
            .await
            .map_err(call("PodSandboxStatus"))?;
        r.into_inner()
            .status
            .ok_or_else(|| RuntimeError::NotFound(format!("sandbox {id}")))
    }

    async fn list_pod_sandboxes(&self, pod_uid: Option<&str>) -> Result<Vec<cri::PodSandbox>> {
        let filter = pod_uid.map(|uid| cri::PodSandboxFilter {
            label_selector: uid_selector(uid),
            ..Default::default()
        });
        let r = self
            .runtime
            .clone()
            .list_pod_sandbox(deadline(cri::ListPodSandboxRequest { filter }))
            .await
            .map_err(call("ListPodSandbox"))?;
        Ok(r.into_inner().items)
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
        sandbox_config: cri::PodSandboxConfig,
    ) -> Result<String> {
        let r = self
            .runtime
            .clone()
            .create_container(deadline(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.into(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            }))
            .await
            .map_err(call("CreateContainer"))?;
        Ok(r.into_inner().container_id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .start_container(deadline(cri::StartContainerRequest {
                container_id: id.into(),
            }))
            .await
            .map_err(call("StartContainer"))?;
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout: Duration) -> Result<()> {
        let mut request = tonic::Request::new(cri::StopContainerRequest {
            container_id: id.into(),
            // CRI counts whole seconds; round up so a grace period is never cut short.
            timeout: timeout.as_millis().div_ceil(1000) as i64,
        });
        // The call lasts as long as the grace period; give the transport room beyond it.
        request.set_timeout(timeout + Duration::from_secs(30));
        self.runtime
            .clone()
            .stop_container(request)
            .await
            .map_err(call("StopContainer"))?;
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .remove_container(deadline(cri::RemoveContainerRequest {
                container_id: id.into(),
            }))
            .await
            .map_err(call("RemoveContainer"))?;
        Ok(())
    }

    async fn list_containers(&self, pod_uid: Option<&str>) -> Result<Vec<cri::Container>> {
        let filter = pod_uid.map(|uid| cri::ContainerFilter {
            label_selector: uid_selector(uid),
            ..Default::default()
        });
        let r = self
            .runtime
            .clone()
            .list_containers(deadline(cri::ListContainersRequest { filter }))
            .await
            .map_err(call("ListContainers"))?;
        Ok(r.into_inner().containers)
    }

    async fn container_status(&self, id: &str) -> Result<cri::ContainerStatus> {
        let r = self
            .runtime
            .clone()
            .container_status(deadline(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            }))
            .await
            .map_err(call("ContainerStatus"))?;
        r.into_inner()
            .status
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id}")))
    }

    async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<cri::ExecSyncResponse> {
        let mut request = tonic::Request::new(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd,
            timeout: timeout.as_secs() as i64,
        });
        if !timeout.is_zero() {
            request.set_timeout(timeout + Duration::from_secs(5));
        }
        let r = self
            .runtime
            .clone()
            .exec_sync(request)
            .await
            .map_err(call("ExecSync"))?;
        Ok(r.into_inner())
    }

    async fn exec_url(&self, request: cri::ExecRequest) -> Result<String> {
        let r = self
            .runtime
            .clone()
            .exec(deadline(request))
            .await
            .map_err(call("Exec"))?;
        Ok(r.into_inner().url)
    }

    async fn image_status(&self, image: &str) -> Result<Option<cri::Image>> {
        let r = self
            .images
            .clone()
            .image_status(deadline(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                verbose: false,
            }))
            .await
            .map_err(call("ImageStatus"))?;
        Ok(r.into_inner().image)
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<cri::AuthConfig>,
        sandbox_config: cri::PodSandboxConfig,
    ) -> Result<String> {
        let r = self
            .images
            .clone()
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                auth,
                sandbox_config: Some(sandbox_config),
            })
            .await
            .map_err(call("PullImage"))?;
        Ok(r.into_inner().image_ref)
    }
}
