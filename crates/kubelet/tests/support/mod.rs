//! A real node for tests: rkube's own containerd (`scripts/containerd`), started in a temp
//! dir, and an `rkube-kubelet` process using it, with its own bridge and pod CIDR so tests
//! can run side by side. Everything is stopped when dropped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use rkube_kubelet::cri::CriRuntime;
use rkube_kubelet::runtime::{Runtime, labels};
use rkube_testing::{DaemonProcess, cluster::daemon_binary};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Fails the test with a clear message when this machine cannot run containers.
pub fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            })
        })
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "the kubelet tests run real containers through containerd and need root (scripts/test runs them as root)"
    );
}

/// Real-node tests run one at a time: they share the host's network namespace (bridges,
/// routes, iptables) and two cores.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One node: containerd and a kubelet.
pub struct RealNode {
    /// The node's name.
    pub name: String,
    /// containerd's directory.
    pub dir: tempfile::TempDir,
    /// containerd's socket.
    pub socket: PathBuf,
    /// The kubelet process (None while stopped).
    pub kubelet: Option<DaemonProcess>,
    /// The kubelet's root dir.
    pub root: PathBuf,
    /// The bridge.
    pub bridge: String,
    /// The pod CIDR given by flag (None: the Node's podCIDR from node IPAM).
    pub cidr: Option<String>,
    kubeconfig: PathBuf,
}

fn script(args: &[&str]) -> String {
    let out = std::process::Command::new(repo_root().join("scripts").join(args[0]))
        .args(&args[1..])
        .current_dir(repo_root())
        .output()
        .expect("scripts run");
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl RealNode {
    /// Starts containerd and a kubelet named `name`; `index` picks the bridge and CIDR.
    pub async fn start(kubeconfig: &Path, name: &str, index: u8) -> Self {
        Self::start_with(kubeconfig, name, index, Some(format!("10.88.{index}.0/24"))).await
    }

    /// Starts a node whose pod CIDR comes from the Node object when `cidr` is None.
    pub async fn start_with(
        kubeconfig: &Path,
        name: &str,
        index: u8,
        cidr: Option<String>,
    ) -> Self {
        require_root();
        // Short paths: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("rkn")
            .tempdir_in("/tmp")
            .unwrap();
        script(&["containerd", "start", dir.path().to_str().unwrap()]);
        let socket = dir.path().join("containerd.sock");
        let mut node = RealNode {
            name: name.to_string(),
            root: dir.path().join("kubelet"),
            bridge: format!("rkt{index}"),
            cidr,
            socket,
            dir,
            kubelet: None,
            kubeconfig: kubeconfig.to_path_buf(),
        };
        node.start_kubelet().await;
        node
    }

    /// (Re)starts the kubelet process.
    pub async fn start_kubelet(&mut self) {
        let endpoint = format!("unix://{}", self.socket.display());
        let conf = self.dir.path().join("cni/net.d");
        let mut extra: Vec<&str> = Vec::new();
        if let Some(cidr) = &self.cidr {
            extra.extend(["--pod-cidr", cidr]);
        }
        let kubelet = DaemonProcess::spawn(
            &daemon_binary("rkube-kubelet"),
            &self.kubeconfig,
            &[
                &extra[..],
                &[
                    "--container-runtime-endpoint",
                    &endpoint,
                    "--hostname-override",
                    &self.name,
                    "--node-ip",
                    "127.0.0.1",
                    "--root-dir",
                    self.root.to_str().unwrap(),
                    "--cni-conf-dir",
                    conf.to_str().unwrap(),
                    "--cni-bridge",
                    &self.bridge,
                    "--port",
                    "0",
                    "--cluster-dns",
                    "10.96.0.10",
                    "--sync-frequency",
                    "2s",
                ],
            ]
            .concat(),
        )
        .await
        .expect("the kubelet starts");
        self.kubelet = Some(kubelet);
    }

    /// Kills the kubelet (SIGKILL): containers keep running.
    pub async fn kill_kubelet(&mut self) {
        if let Some(k) = self.kubelet.take() {
            k.kill().await.unwrap();
        }
    }

    /// A CRI client of this node's containerd.
    pub fn cri(&self) -> CriRuntime {
        CriRuntime::connect(&format!("unix://{}", self.socket.display())).unwrap()
    }

    /// rkube's containers by state: (running, all).
    pub async fn containers(&self) -> (usize, usize) {
        let all = self.cri().list_containers(None).await.unwrap();
        let ours: Vec<_> = all
            .iter()
            .filter(|c| {
                c.labels.get(labels::MANAGED_BY).map(String::as_str) == Some(labels::MANAGER)
            })
            .collect();
        let running = ours.iter().filter(|c| c.state == 1).count();
        (running, ours.len())
    }

    /// rkube's sandboxes.
    pub async fn sandboxes(&self) -> usize {
        self.cri()
            .list_pod_sandboxes(None)
            .await
            .unwrap()
            .iter()
            .filter(|s| {
                s.labels.get(labels::MANAGED_BY).map(String::as_str) == Some(labels::MANAGER)
            })
            .count()
    }

    /// The host pid of the container's main process (through `ctr`).
    pub fn container_pid(&self, container_id: &str) -> Option<u32> {
        let out = std::process::Command::new("ctr")
            .args([
                "--address",
                self.socket.to_str().unwrap(),
                "-n",
                "k8s.io",
                "tasks",
                "ls",
            ])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next()? == container_id).then(|| f.next()?.parse().ok())?
        })
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        self.kubelet.take();
        let _ = std::process::Command::new(repo_root().join("scripts/containerd"))
            .args(["stop", self.dir.path().to_str().unwrap()])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// Waits up to `timeout` for `f` to return Some, polling.
pub const POLL: Duration = Duration::from_millis(200);

/// The body of `GET path` on a plain-HTTP address, whatever the status.
pub async fn http_body(addr: std::net::SocketAddr, path: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .await
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Debian's docker-registry on 127.0.0.1:5000 with the busybox image pushed
/// (`scripts/registry`); stopped when dropped.
pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    /// Starts it with its data under `parent`.
    pub fn start(parent: &Path) -> Self {
        let dir = parent.join("registry");
        script(&["registry", "start", dir.to_str().unwrap()]);
        Registry { dir }
    }

    /// The pushed image.
    pub fn image(&self) -> &'static str {
        "127.0.0.1:5000/rkube/busybox:pull"
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = std::process::Command::new(repo_root().join("scripts/registry"))
            .args(["stop", self.dir.to_str().unwrap()])
            .output();
    }
}

/// A host-network sandbox without rkube's labels, as another CRI client would make.
pub fn foreign_sandbox_config() -> rkube_kubelet::runtime::cri::PodSandboxConfig {
    use rkube_kubelet::runtime::cri;
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "foreign".into(),
            uid: "foreign-uid".into(),
            namespace: "elsewhere".into(),
            attempt: 0,
        }),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
