//! Where a local cluster keeps its files, and the settings it was first started with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The file that marks a directory as an rkube data dir and holds its [`Settings`].
pub const SETTINGS_FILE: &str = "cluster.json";

/// The files of one cluster under its data dir.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The data dir (absolute).
    pub root: PathBuf,
}

impl Layout {
    /// The layout under `root`, made absolute.
    pub fn new(root: &Path) -> anyhow::Result<Self> {
        let root = if root.is_absolute() {
            root.to_path_buf()
        } else {
            std::env::current_dir()
                .context("the current directory")?
                .join(root)
        };
        Ok(Layout { root })
    }

    /// The settings file.
    pub fn settings(&self) -> PathBuf {
        self.root.join(SETTINGS_FILE)
    }

    /// The apiserver's data dir (its store, certificates and the admin kubeconfig).
    pub fn apiserver(&self) -> PathBuf {
        self.root.join("apiserver")
    }

    /// The admin kubeconfig the apiserver writes.
    pub fn kubeconfig(&self) -> PathBuf {
        self.apiserver().join("kubeconfig")
    }

    /// rkube's own containerd instance.
    pub fn containerd(&self) -> PathBuf {
        self.root.join("containerd")
    }

    /// The containerd socket.
    pub fn containerd_socket(&self) -> PathBuf {
        self.containerd().join("containerd.sock")
    }

    /// The kubelet's root dir (volumes, logs).
    pub fn kubelet(&self) -> PathBuf {
        self.root.join("kubelet")
    }

    /// The hollow-node kubelet's root dir.
    pub fn hollow_kubelet(&self) -> PathBuf {
        self.root.join("hollow-kubelet")
    }

    /// The log file of `daemon`.
    pub fn log(&self, daemon: &str) -> PathBuf {
        self.root.join("logs").join(format!("{daemon}.log"))
    }

    /// The pid file of `daemon`.
    pub fn pid_file(&self, daemon: &str) -> PathBuf {
        self.root.join("run").join(format!("{daemon}.pid"))
    }
}

/// What a cluster was first started with; later `rkube up`s resume with the same.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// The apiserver's port on 127.0.0.1.
    pub apiserver_port: u16,
    /// The scheduler's health and metrics address.
    pub scheduler_health: SocketAddr,
    /// The controller manager's health and metrics address.
    pub controller_manager_health: SocketAddr,
    /// Whether this machine runs a real node (containerd and a kubelet): as root only.
    pub real_node: bool,
    /// The real node's name.
    pub node_name: String,
    /// The real kubelet's health address.
    pub kubelet_health: SocketAddr,
    /// The real kubelet's HTTPS port (logs, exec).
    pub kubelet_port: u16,
    /// The real node's pod CIDR.
    pub pod_cidr: String,
    /// The real node's CNI bridge.
    pub cni_bridge: String,
    /// Simulated nodes, in a kubelet process of their own (0: none).
    pub hollow_nodes: u32,
    /// The hollow-node kubelet's health address.
    pub hollow_health: SocketAddr,
    /// rkube-proxy's health and metrics address (clusters made before it existed get
    /// upstream's port).
    #[serde(default = "default_proxy_health")]
    pub proxy_health: SocketAddr,
    /// The port rkube-dns answers on, on every address of this machine; pods reach it as
    /// the `kube-dns` Service's 53.
    #[serde(default = "default_dns_port")]
    pub dns_port: u16,
    /// rkube-dns's health and metrics address.
    #[serde(default = "default_dns_health")]
    pub dns_health: SocketAddr,
}

fn default_proxy_health() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10249))
}

fn default_dns_port() -> u16 {
    DEFAULT_DNS_PORT
}

fn default_dns_health() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9153))
}

/// rkube-dns's port unless `--free-ports` picks one: not 53, which the machine's own
/// resolver may hold.
pub const DEFAULT_DNS_PORT: u16 = 10053;

/// The cluster DNS Service's address: upstream's convention, the tenth of the default
/// service range.
pub const CLUSTER_DNS: &str = "10.96.0.10";

impl Settings {
    /// Reads the settings of the cluster in `layout`, if it has been started before.
    pub fn load(layout: &Layout) -> anyhow::Result<Option<Self>> {
        let path = layout.settings();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not an rkube settings file", path.display()))
                .map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the settings into `layout` (creating the data dir).
    pub fn save(&self, layout: &Layout) -> anyhow::Result<()> {
        std::fs::create_dir_all(&layout.root)
            .with_context(|| format!("creating {}", layout.root.display()))?;
        let path = layout.settings();
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path()).unwrap();
        assert_eq!(Settings::load(&layout).unwrap(), None);
        let s = Settings {
            apiserver_port: 6443,
            scheduler_health: "127.0.0.1:10259".parse().unwrap(),
            controller_manager_health: "127.0.0.1:10257".parse().unwrap(),
            real_node: true,
            node_name: "box".into(),
            kubelet_health: "127.0.0.1:10248".parse().unwrap(),
            kubelet_port: 10250,
            pod_cidr: "10.88.0.0/24".into(),
            cni_bridge: "rkube0".into(),
            hollow_nodes: 3,
            hollow_health: "127.0.0.1:10247".parse().unwrap(),
            proxy_health: "127.0.0.1:10249".parse().unwrap(),
            dns_port: 10053,
            dns_health: "127.0.0.1:9153".parse().unwrap(),
        };
        s.save(&layout).unwrap();
        assert_eq!(Settings::load(&layout).unwrap(), Some(s.clone()));
        // A cluster made before rkube-proxy and rkube-dns existed resumes with defaults.
        let mut old = serde_json::to_value(&s).unwrap();
        for field in ["proxyHealth", "dnsPort", "dnsHealth"] {
            old.as_object_mut().unwrap().remove(field);
        }
        std::fs::write(layout.settings(), old.to_string()).unwrap();
        assert_eq!(Settings::load(&layout).unwrap(), Some(s));
        std::fs::write(layout.settings(), "not json").unwrap();
        let err = Settings::load(&layout).unwrap_err();
        assert!(
            format!("{err:#}").contains("is not an rkube settings file"),
            "{err:#}"
        );
    }

    #[test]
    fn a_relative_data_dir_is_made_absolute() {
        let layout = Layout::new(Path::new(".rkube")).unwrap();
        assert!(layout.root.is_absolute());
        assert!(layout.root.ends_with(".rkube"));
        assert!(layout.kubeconfig().ends_with(".rkube/apiserver/kubeconfig"));
    }
}
