//! `Cluster`: a control plane for end-to-end tests — an in-process apiserver (sled store,
//! admin kubeconfig), `rkube-scheduler` and `rkube-controller-manager` processes, fake
//! kubelets ([`FakeNodes`]) and the stock `kubectl`.

use std::path::PathBuf;

use crate::fake_nodes::FakeNodes;
use crate::kubectl::Kubectl;
use crate::{DaemonProcess, TestApiserver, sibling_binary};

/// What a [`Cluster`] runs.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Fake nodes `node-1` .. `node-N`.
    pub nodes: usize,
    /// Whether an `rkube-scheduler` process binds pods.
    pub scheduler: bool,
    /// Whether an `rkube-controller-manager` process runs (without it, a test may run
    /// controllers in-process, e.g. with a manual clock).
    pub controller_manager: bool,
    /// Extra flags of the controller manager (`--leader-elect=false` is always given).
    pub controller_manager_args: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            scheduler: true,
            controller_manager: true,
            controller_manager_args: Vec::new(),
        }
    }
}

/// A running test control plane; everything stops when it is dropped.
pub struct Cluster {
    /// The controller manager process, when asked for.
    pub controller_manager: Option<DaemonProcess>,
    /// The scheduler process, when asked for.
    pub scheduler: Option<DaemonProcess>,
    /// The fake kubelets.
    pub nodes: FakeNodes,
    /// kubectl with the admin kubeconfig.
    pub kubectl: Kubectl,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The apiserver (dropped last).
    pub apiserver: TestApiserver,
}

/// A daemon binary built beside the test, or a panic that says how to build it.
pub fn daemon_binary(name: &str) -> PathBuf {
    let path = sibling_binary(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p {name})",
        path.display()
    );
    path
}

impl Cluster {
    /// Starts a cluster as `options` say and waits until its nodes are registered.
    pub async fn start(options: ClusterOptions) -> Self {
        let apiserver = TestApiserver::start_sled().await;
        let kubeconfig = apiserver
            .running()
            .kubeconfig
            .clone()
            .expect("a sled apiserver writes a kubeconfig");
        let names: Vec<String> = (1..=options.nodes).map(|i| format!("node-{i}")).collect();
        let nodes = FakeNodes::start(apiserver.client(), &names)
            .await
            .expect("fake nodes register");
        let scheduler = if options.scheduler {
            Some(
                DaemonProcess::spawn(
                    &daemon_binary("rkube-scheduler"),
                    &kubeconfig,
                    &["--leader-elect=false"],
                )
                .await
                .expect("the scheduler starts"),
            )
        } else {
            None
        };
        let controller_manager = if options.controller_manager {
            let mut args = vec!["--leader-elect=false"];
            args.extend(options.controller_manager_args.iter().map(String::as_str));
            Some(
                DaemonProcess::spawn(
                    &daemon_binary("rkube-controller-manager"),
                    &kubeconfig,
                    &args,
                )
                .await
                .expect("the controller manager starts"),
            )
        } else {
            None
        };
        Cluster {
            controller_manager,
            scheduler,
            nodes,
            kubectl: Kubectl::new(kubeconfig.clone()),
            kubeconfig,
            apiserver,
        }
    }

    /// A client of the apiserver.
    pub fn client(&self) -> rkube_client::Client {
        self.apiserver.client()
    }
}
