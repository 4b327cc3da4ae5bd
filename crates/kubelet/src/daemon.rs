//! Wiring: a real node (CRI runtime, node registration, lease, conditions, CNI config,
//! pod network, pod watch, pod workers, the :10250 server) and hollow nodes (many
//! simulated nodes over one shared pod watch).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use rkube_client::watcher::{self, Event};
use rkube_client::{Api, Client, WatchStreamExt};
use rkube_types::quantity::Quantity;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::cri::CriRuntime;
use crate::hollow::HollowRuntime;
use crate::node::{self, Conditions, MachineInfo, NodeSpec};
use crate::pods::{self, NodeContext, PodEvent};
use crate::runtime::Runtime;

/// Settings of a real node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The node's name.
    pub name: String,
    /// The InternalIP.
    pub node_ip: String,
    /// `--root-dir`: volumes under `pods/`, logs under `logs/`.
    pub root_dir: PathBuf,
    /// `--node-labels`.
    pub labels: BTreeMap<String, String>,
    /// `--kube-reserved` and `--system-reserved`, summed.
    pub reserved: Vec<BTreeMap<String, Quantity>>,
    /// `--max-pods`.
    pub max_pods: u64,
    /// `--cluster-dns`.
    pub cluster_dns: Vec<String>,
    /// `--cluster-domain`.
    pub cluster_domain: String,
    /// Where to write the CNI conflist (none: leave networking alone).
    pub cni_conf_dir: Option<PathBuf>,
    /// The pod CIDR when the Node has none (node IPAM off).
    pub pod_cidr: Option<String>,
    /// The bridge name.
    pub cni_bridge: String,
    /// `--cluster-cidr`: the pod network of the cluster, for routes and masquerade (kept
    /// only when `cni_conf_dir` is set).
    pub cluster_cidr: crate::network::Ipv4Cidr,
    /// The kubelet server's port (0: none).
    pub port: u16,
    /// The PLEG relist period.
    pub relist: Duration,
    /// `--register-with-taints` as JSON taints.
    pub taints: Vec<serde_json::Value>,
    /// `--sync-frequency`: how often volume contents are refreshed.
    pub sync_frequency: Duration,
}

/// Forwards the watch of pods bound to `node` to the pod manager.
async fn watch_pods(
    client: Client,
    node: String,
    tx: mpsc::Sender<PodEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let stream = watcher::watcher(api, config)
        .default_backoff()
        .map(|e| e.map(|e| e.map(watcher::strip_managed_fields)));
    futures::pin_mut!(stream);
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = shutdown.changed() => return,
        };
        let Some(event) = event else { return };
        let event = match event {
            Ok(Event::Apply(p) | Event::InitApply(p)) => PodEvent::Apply(Box::new(p)),
            Ok(Event::Delete(p)) => PodEvent::Deleted(Box::new(p)),
            Ok(Event::InitDone) => PodEvent::Synced,
            Ok(Event::Init) => PodEvent::ListStart,
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed");
                continue;
            }
        };
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

/// Writes the CNI config whenever the Node's pod CIDR appears or changes.
async fn watch_pod_cidr(client: Client, opts: NodeOptions, mut shutdown: watch::Receiver<bool>) {
    let Some(conf_dir) = opts.cni_conf_dir.clone() else {
        return;
    };
    let ipam = opts.root_dir.join("cni/networks");
    if let Some(cidr) = &opts.pod_cidr {
        match crate::cni::write(&conf_dir, cidr, &opts.cni_bridge, &ipam).await {
            Ok(true) => {
                tracing::info!(pod_cidr = %cidr, dir = %conf_dir.display(), "wrote the CNI configuration")
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "writing the CNI configuration failed"),
        }
    }
    let api: Api<Node> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", opts.name));
    let stream = watcher::watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = shutdown.changed() => return,
        };
        let Some(event) = event else { return };
        let Ok(Event::Apply(node) | Event::InitApply(node)) = event else {
            continue;
        };
        let Some(cidr) = node.spec.and_then(|s| s.pod_cidr) else {
            continue;
        };
        if opts.pod_cidr.is_some() && opts.pod_cidr.as_deref() != Some(cidr.as_str()) {
            tracing::warn!(node_cidr = %cidr, flag = ?opts.pod_cidr, "--pod-cidr differs from the Node's podCIDR; using the Node's");
        }
        match crate::cni::write(&conf_dir, &cidr, &opts.cni_bridge, &ipam).await {
            Ok(true) => {
                tracing::info!(pod_cidr = %cidr, dir = %conf_dir.display(), "wrote the CNI configuration")
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "writing the CNI configuration failed"),
        }
    }
}

/// Runs a real node until `shutdown`.
pub async fn run_node(
    client: Client,
    runtime: CriRuntime,
    opts: NodeOptions,
    health: Arc<crate::health::Health>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), crate::runtime::RuntimeError> {
    let version = runtime.version().await?;
    let machine = MachineInfo::read(&opts.root_dir, opts.max_pods);
    let reserved: Vec<&BTreeMap<String, Quantity>> = opts.reserved.iter().collect();
    let allocatable = node::allocatable(&machine.capacity(), &reserved);
    let spec = NodeSpec {
        name: opts.name.clone(),
        labels: opts.labels.clone(),
        internal_ip: opts.node_ip.clone(),
        kubelet_port: opts.port,
        machine: machine.clone(),
        allocatable: allocatable.clone(),
        runtime_version: format!("{}://{}", version.runtime_name, version.runtime_version),
        taints: opts.taints.clone(),
    };
    let root = opts.root_dir.clone();
    let sample_runtime = runtime.clone();
    let sample = move || {
        let root = root.clone();
        let runtime = sample_runtime.clone();
        async move {
            let sampled = tokio::task::spawn_blocking(move || Conditions::sample(&root)).await;
            let mut c = sampled.unwrap_or_default();
            match runtime.status().await {
                Ok(s) => {
                    if let Some(bad) = s
                        .conditions
                        .iter()
                        .find(|c| !c.status && c.r#type == "RuntimeReady")
                    {
                        tracing::warn!(reason = %bad.reason, message = %bad.message, "container runtime not ready");
                        c.not_ready = Some("container runtime is down");
                    } else if s
                        .conditions
                        .iter()
                        .any(|c| !c.status && c.r#type == "NetworkReady")
                    {
                        c.not_ready = Some(
                            "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized",
                        );
                    }
                }
                Err(_) => c.not_ready = Some("container runtime is down"),
            }
            c
        }
    };
    // The CNI configuration from --pod-cidr first, so the node registers Ready.
    if let (Some(dir), Some(cidr)) = (&opts.cni_conf_dir, &opts.pod_cidr)
        && let Err(e) = crate::cni::write(
            dir,
            cidr,
            &opts.cni_bridge,
            &opts.root_dir.join("cni/networks"),
        )
        .await
    {
        tracing::error!(error = %e, "writing the CNI configuration failed");
    }
    let sample_fn = sample.clone();
    let first = sample_fn().await;
    let registered = loop {
        match node::register(&client, &spec, first).await {
            Ok(n) => break n,
            Err(e) => {
                tracing::warn!(node = %opts.name, error = %e, "node registration failed, retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    tracing::info!(node = %opts.name, ip = %opts.node_ip, runtime = %spec.runtime_version, "node registered");
    let node_uid = registered.metadata.uid.clone().unwrap_or_default();
    health
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::spawn(node::run_lease(
        client.clone(),
        opts.name.clone(),
        node_uid,
        node::LEASE_RENEW,
        shutdown.clone(),
    ));
    tokio::spawn(node::run_status(
        client.clone(),
        spec.clone(),
        first,
        Some(registered.clone()),
        async move || sample().await,
        shutdown.clone(),
    ));
    tokio::spawn(watch_pod_cidr(
        client.clone(),
        opts.clone(),
        shutdown.clone(),
    ));
    // The kubelet that writes the CNI configuration also keeps the network between nodes.
    if opts.cni_conf_dir.is_some() {
        let net = crate::network::PodNetwork {
            host: crate::network::Host::current(),
            node_name: opts.name.clone(),
            node_ip: opts.node_ip.parse().ok(),
            cluster_cidr: opts.cluster_cidr,
            pod_cidr: opts.pod_cidr.as_deref().and_then(|c| c.parse().ok()),
        };
        tokio::spawn(crate::network::run(client.clone(), net, shutdown.clone()));
    }

    let ctx = Arc::new(NodeContext {
        client: client.clone(),
        runtime: runtime.clone(),
        node_name: opts.name.clone(),
        host_ip: opts.node_ip.clone(),
        spec: pods::spec::SpecContext {
            log_dir: opts.root_dir.join("logs"),
            cluster_dns: opts.cluster_dns.clone(),
            cluster_domain: opts.cluster_domain.clone(),
        },
        pods_dir: opts.root_dir.join("pods"),
        allocatable,
        memory_capacity: machine.memory,
        runtime_name: version.runtime_name.clone(),
        simulated: false,
        sync_frequency: opts.sync_frequency,
        max_pods: opts.max_pods as usize,
    });
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(watch_pods(client, opts.name.clone(), tx, shutdown.clone()));
    pods::run(ctx, rx, Some(opts.relist), shutdown).await;
    Ok(())
}

/// Settings of a hollow-node process.
#[derive(Debug, Clone)]
pub struct HollowOptions {
    /// How many nodes.
    pub nodes: u32,
    /// Node names are `<prefix><index>`.
    pub prefix: String,
    /// Delay between StartContainer and running.
    pub start_delay: Duration,
    /// Simulated CPUs per node.
    pub cpus: u64,
    /// Simulated memory per node.
    pub memory: u64,
    /// Pods per node.
    pub max_pods: u64,
    /// Lease renewal period.
    pub lease_period: Duration,
}

/// Runs `opts.nodes` hollow nodes until `shutdown`: each registers, keeps its Lease and
/// runs its pods through the real pod workers over a [`HollowRuntime`]; one pod watch
/// feeds them all.
pub async fn run_hollow(client: Client, opts: HollowOptions, shutdown: watch::Receiver<bool>) {
    let machine = MachineInfo::hollow(opts.cpus, opts.memory, opts.max_pods);
    let allocatable = node::allocatable(&machine.capacity(), &[]);
    let mut senders: HashMap<String, mpsc::Sender<PodEvent>> = HashMap::new();
    let permits = Arc::new(Semaphore::new(32));
    let mut registrations = Vec::new();
    for i in 0..opts.nodes {
        let name = format!("{}{i}", opts.prefix);
        let runtime = HollowRuntime::new(i, opts.start_delay);
        let ip = format!("10.{}.{}.{}", 64 + (i >> 16) % 64, (i >> 8) % 256, i % 256);
        let spec = NodeSpec {
            name: name.clone(),
            labels: BTreeMap::from([("rkube.io/hollow".to_string(), "true".to_string())]),
            internal_ip: ip.clone(),
            kubelet_port: 0,
            machine: machine.clone(),
            allocatable: allocatable.clone(),
            runtime_version: "hollow://0.1.0".into(),
            taints: vec![],
        };
        let ctx = Arc::new(NodeContext {
            client: client.clone(),
            runtime,
            node_name: name.clone(),
            host_ip: ip,
            spec: pods::spec::SpecContext::default(),
            pods_dir: PathBuf::new(),
            allocatable: allocatable.clone(),
            memory_capacity: opts.memory,
            runtime_name: "hollow".into(),
            simulated: true,
            sync_frequency: crate::pods::worker::VOLUME_REFRESH,
            max_pods: opts.max_pods as usize,
        });
        let (tx, rx) = mpsc::channel(64);
        senders.insert(name.clone(), tx);
        tokio::spawn(pods::run(ctx, rx, None, shutdown.clone()));
        let client = client.clone();
        let permits = permits.clone();
        let shutdown = shutdown.clone();
        let lease_period = opts.lease_period;
        registrations.push(tokio::spawn(async move {
            let node = {
                let _permit = permits.acquire().await;
                loop {
                    match node::register(&client, &spec, Conditions::default()).await {
                        Ok(n) => break n,
                        Err(e) => {
                            tracing::warn!(node = %spec.name, error = %e, "hollow node registration failed, retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            };
            let uid = node.metadata.uid.unwrap_or_default();
            // Spread the renewals over the period instead of all at once.
            let offset = lease_period.mul_f64((i as f64 * 0.618_033_988_7) % 1.0);
            tokio::time::sleep(offset).await;
            node::run_lease(client, spec.name.clone(), uid, lease_period, shutdown).await;
        }));
    }
    tracing::info!(nodes = opts.nodes, "hollow nodes started");

    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields("spec.nodeName!=");
    let stream = watcher::watcher(api, config)
        .default_backoff()
        .map(|e| e.map(|e| e.map(watcher::strip_managed_fields)));
    futures::pin_mut!(stream);
    let mut shutdown = shutdown;
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = shutdown.changed() => break,
        };
        let Some(event) = event else { break };
        match event {
            Ok(Event::Apply(p) | Event::InitApply(p)) => {
                let node = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default();
                if let Some(tx) = senders.get(&node) {
                    let _ = tx.send(PodEvent::Apply(Box::new(p))).await;
                }
            }
            Ok(Event::Delete(p)) => {
                let node = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default();
                if let Some(tx) = senders.get(&node) {
                    let _ = tx.send(PodEvent::Deleted(Box::new(p))).await;
                }
            }
            Ok(Event::InitDone) => {
                for tx in senders.values() {
                    let _ = tx.send(PodEvent::Synced).await;
                }
            }
            Ok(Event::Init) => {
                for tx in senders.values() {
                    let _ = tx.send(PodEvent::ListStart).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "pod watch failed"),
        }
    }
    for r in registrations {
        r.abort();
    }
}
