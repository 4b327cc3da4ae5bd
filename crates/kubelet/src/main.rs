//! `rkube-kubelet`: runs the pods bound to this node through containerd's CRI, or (with
//! `--hollow-nodes N`) N simulated nodes for scale tests.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use rkube_client::cli::{init_logging, parse_duration, shutdown_signal};
use rkube_client::{Client, ClientConfig};
use rkube_kubelet::cri::CriRuntime;
use rkube_kubelet::daemon::{self, HollowOptions, NodeOptions};
use rkube_kubelet::health::Health;
use rkube_kubelet::network::Ipv4Cidr;
use rkube_kubelet::node;
use rkube_types::quantity::Quantity;
use tokio::sync::watch;
use tracing::{error, info};

/// Runs the pods bound to this node as containers through CRI, and reports node and pod
/// status.
#[derive(Debug, Parser)]
#[command(name = "rkube-kubelet", version)]
struct Args {
    /// Kubeconfig naming the apiserver and the credentials to use.
    #[arg(
        long,
        env = "RKUBE_KUBECONFIG",
        default_value = ".rkube/apiserver/kubeconfig"
    )]
    kubeconfig: PathBuf,
    /// The CRI endpoint (a unix socket).
    #[arg(
        long,
        env = "RKUBE_CONTAINER_RUNTIME_ENDPOINT",
        default_value = "unix:///run/containerd/containerd.sock"
    )]
    container_runtime_endpoint: String,
    /// The node's name (default: the host name).
    #[arg(long, visible_alias = "node-name", env = "RKUBE_NODE_NAME")]
    hostname_override: Option<String>,
    /// The node's InternalIP (default: the source address of the default route).
    #[arg(long, env = "RKUBE_NODE_IP")]
    node_ip: Option<IpAddr>,
    /// Where pod volumes (`pods/`) and container logs (`logs/`) live.
    #[arg(long, env = "RKUBE_ROOT_DIR", default_value = "/var/lib/rkube-kubelet")]
    root_dir: PathBuf,
    /// Extra node labels: `key=value,...`.
    #[arg(long, env = "RKUBE_NODE_LABELS", default_value = "")]
    node_labels: String,
    /// Taints to register the node with: `key=value:Effect,...`.
    #[arg(long, env = "RKUBE_REGISTER_WITH_TAINTS", default_value = "")]
    register_with_taints: String,
    /// Resources reserved for Kubernetes daemons: `cpu=100m,memory=256Mi`.
    #[arg(long, env = "RKUBE_KUBE_RESERVED", default_value = "")]
    kube_reserved: String,
    /// Resources reserved for the operating system: `cpu=100m,memory=256Mi`.
    #[arg(long, env = "RKUBE_SYSTEM_RESERVED", default_value = "")]
    system_reserved: String,
    /// The most pods this node runs.
    #[arg(long, env = "RKUBE_MAX_PODS", default_value_t = 110)]
    max_pods: u64,
    /// Cluster DNS server IPs for pods with dnsPolicy ClusterFirst (comma-separated).
    #[arg(long, env = "RKUBE_CLUSTER_DNS", value_delimiter = ',')]
    cluster_dns: Vec<IpAddr>,
    /// The cluster's DNS domain.
    #[arg(long, env = "RKUBE_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Where to write the CNI configuration for the node's pod CIDR (containerd's CNI
    /// conf_dir); without it the kubelet leaves pod networking to the runtime's config.
    #[arg(long, env = "RKUBE_CNI_CONF_DIR")]
    cni_conf_dir: Option<PathBuf>,
    /// The pod CIDR to use until the Node has one (node IPAM assigns it).
    #[arg(long, env = "RKUBE_POD_CIDR")]
    pod_cidr: Option<String>,
    /// The bridge the CNI configuration attaches pods to.
    #[arg(long, env = "RKUBE_CNI_BRIDGE", default_value = "rkube0")]
    cni_bridge: String,
    /// The pod network of the whole cluster (the controller-manager's `--cluster-cidr`):
    /// pod traffic inside it is never NATed, traffic leaving it is masqueraded. Used with
    /// `--cni-conf-dir`, when the kubelet keeps the pod network (routes to other nodes'
    /// pod CIDRs, masquerade); IPv4.
    #[arg(long, env = "RKUBE_CLUSTER_CIDR", default_value = "10.244.0.0/16")]
    cluster_cidr: Ipv4Cidr,
    /// The sandbox (pause) image the runtime is configured with; checked at start.
    #[arg(
        long,
        env = "RKUBE_POD_INFRA_CONTAINER_IMAGE",
        default_value = "rkube.local/pause:1.0"
    )]
    pod_infra_container_image: String,
    /// The address of the kubelet's HTTPS server (logs, exec).
    #[arg(long, env = "RKUBE_KUBELET_ADDRESS", default_value = "0.0.0.0")]
    address: IpAddr,
    /// The kubelet's HTTPS port (0: pick a free one).
    #[arg(long, env = "RKUBE_KUBELET_PORT", default_value_t = 10250)]
    port: u16,
    /// How often the runtime is relisted to notice container changes (PLEG).
    #[arg(long, env = "RKUBE_RELIST_PERIOD", default_value = "1s", value_parser = parse_duration)]
    relist_period: Duration,
    /// How often configMap, secret and projected volumes are rewritten from the API (their
    /// updates reach running containers within this period and a resync).
    #[arg(long, env = "RKUBE_SYNC_FREQUENCY", default_value = "30s", value_parser = parse_duration)]
    sync_frequency: Duration,
    /// Run N hollow (simulated) nodes in this process instead of a real one.
    #[arg(long, env = "RKUBE_HOLLOW_NODES")]
    hollow_nodes: Option<u32>,
    /// Hollow node names are this prefix and an index.
    #[arg(long, env = "RKUBE_HOLLOW_NODE_PREFIX", default_value = "hollow-")]
    hollow_node_prefix: String,
    /// How long a hollow container takes to start.
    #[arg(long, env = "RKUBE_HOLLOW_START_DELAY", default_value = "100ms", value_parser = parse_duration)]
    hollow_start_delay: Duration,
    /// CPUs each hollow node reports.
    #[arg(long, env = "RKUBE_HOLLOW_CPU", default_value_t = 8)]
    hollow_cpu: u64,
    /// Memory each hollow node reports (a quantity).
    #[arg(long, env = "RKUBE_HOLLOW_MEMORY", default_value = "32Gi")]
    hollow_memory: String,
    /// How often nodes renew their Lease.
    #[arg(long, env = "RKUBE_NODE_LEASE_RENEW", default_value = "10s", value_parser = parse_duration)]
    node_lease_renew: Duration,
    /// Where `/healthz`, `/readyz` and `/metrics` are served (plain HTTP).
    #[arg(
        long,
        env = "RKUBE_KUBELET_BIND_ADDRESS",
        default_value = "127.0.0.1:10248"
    )]
    bind_address: SocketAddr,
    /// Log format: `text` or `json`.
    #[arg(long, env = "RKUBE_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("rkube-kubelet: {e:#}");
        std::process::exit(1);
    }
}

fn parse_labels(s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("--node-labels: {part:?} is not key=value"))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

fn parse_taints(s: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (kv, effect) = part
            .rsplit_once(':')
            .with_context(|| format!("--register-with-taints: {part:?} is not key=value:Effect"))?;
        if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            bail!(
                "--register-with-taints: effect {effect:?} must be NoSchedule, PreferNoSchedule or NoExecute"
            );
        }
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        out.push(serde_json::json!({"key": key, "value": value, "effect": effect}));
    }
    Ok(out)
}

/// The source address of the default route, as upstream picks the node IP.
fn default_node_ip() -> Option<IpAddr> {
    let out = std::process::Command::new("ip")
        .args(["-4", "route", "get", "1.1.1.1"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "src" {
            return words.next()?.parse().ok();
        }
    }
    None
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(&args.log_format)?;
    let labels = parse_labels(&args.node_labels)?;
    let taints = parse_taints(&args.register_with_taints)?;
    let kube_reserved = node::parse_reserved(&args.kube_reserved)
        .map_err(|e| anyhow::anyhow!("--kube-reserved: {e}"))?;
    let system_reserved = node::parse_reserved(&args.system_reserved)
        .map_err(|e| anyhow::anyhow!("--system-reserved: {e}"))?;
    let hollow_memory = Quantity::parse(&args.hollow_memory)
        .map_err(|e| anyhow::anyhow!("--hollow-memory: {e}"))?;

    let client_config = ClientConfig::from_kubeconfig(&args.kubeconfig)
        .with_context(|| format!("reading the kubeconfig {}", args.kubeconfig.display()))?;
    let client =
        Client::connect_lazy_with(&client_config).context("connecting to the apiserver")?;
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutting down");
        let _ = stop_tx.send(true);
    });

    let health = Arc::new(Health::default());
    health.set_problem("starting");
    let http = tokio::net::TcpListener::bind(args.bind_address)
        .await
        .with_context(|| format!("binding {}", args.bind_address))?;
    println!("serving health and metrics on {}", http.local_addr()?);
    tokio::spawn(rkube_kubelet::health::serve(
        http,
        health.clone(),
        stop.clone(),
    ));

    if let Some(n) = args.hollow_nodes {
        let opts = HollowOptions {
            nodes: n,
            prefix: args.hollow_node_prefix.clone(),
            start_delay: args.hollow_start_delay,
            cpus: args.hollow_cpu,
            memory: hollow_memory.value().max(0) as u64,
            max_pods: args.max_pods,
            lease_period: args.node_lease_renew,
        };
        info!(nodes = n, "running hollow nodes");
        health
            .ready
            .store(true, std::sync::atomic::Ordering::Relaxed);
        daemon::run_hollow(client, opts, stop).await;
        return Ok(());
    }

    let name = args.hostname_override.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_lowercase())
            .unwrap_or_else(|_| "localhost".into())
    });
    let node_ip = args
        .node_ip
        .or_else(default_node_ip)
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    std::fs::create_dir_all(&args.root_dir)
        .with_context(|| format!("creating --root-dir {}", args.root_dir.display()))?;

    let runtime = CriRuntime::connect(&args.container_runtime_endpoint)?;
    // A runtime that is not usable yet is reported, clearly, until it is: the kubelet
    // does not exit (and crash-loop) over it.
    let mut stopped = stop.clone();
    let mut reported = None;
    let version = loop {
        match runtime.check(Some(&args.pod_infra_container_image)).await {
            Ok(v) => break v,
            Err(e) => {
                let msg = e.to_string();
                health.set_problem(&msg);
                if reported.as_deref() != Some(msg.as_str()) {
                    error!("{msg}");
                    eprintln!("rkube-kubelet: {msg}");
                    reported = Some(msg);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stopped.changed() => return Ok(()),
        }
    };
    info!(runtime = %version.runtime_name, version = %version.runtime_version, cri = %version.runtime_api_version, "container runtime ready");

    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.address, args.port))
        .await
        .with_context(|| {
            format!(
                "binding the kubelet server on {}:{}",
                args.address, args.port
            )
        })?;
    let port = listener.local_addr()?.port();
    let tls =
        rkube_kubelet::server::self_signed_tls(&name, &[node_ip, IpAddr::from([127, 0, 0, 1])])?;
    let mut server_stop = stop.clone();
    let server = tokio::spawn(rkube_kubelet::server::serve(
        runtime.clone(),
        listener,
        tls,
        async move {
            let _ = server_stop.wait_for(|s| *s).await;
        },
    ));

    let opts = NodeOptions {
        name,
        node_ip: node_ip.to_string(),
        root_dir: args.root_dir.clone(),
        labels,
        reserved: vec![kube_reserved, system_reserved],
        max_pods: args.max_pods,
        cluster_dns: args.cluster_dns.iter().map(|ip| ip.to_string()).collect(),
        cluster_domain: args.cluster_domain.clone(),
        cni_conf_dir: args.cni_conf_dir.clone(),
        pod_cidr: args.pod_cidr.clone(),
        cni_bridge: args.cni_bridge.clone(),
        cluster_cidr: args.cluster_cidr,
        port,
        relist: args.relist_period,
        taints,
        sync_frequency: args.sync_frequency,
    };
    daemon::run_node(client, runtime, opts, health, stop).await?;
    let _ = server.await;
    Ok(())
}
