//! `rkube-controller-manager`: runs the control loops.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use rkube_client::cli::{default_identity, init_logging, parse_duration, shutdown_signal};
use rkube_client::{Client, ClientConfig, LeaderElectionConfig, LeaderElector};
use rkube_controller_manager::controllers;
use rkube_controller_manager::daemon;
use rkube_controller_manager::informer::Informers;
use rkube_controller_manager::metrics::Metrics;
use rkube_controller_manager::{Clock, Context, Settings};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// Runs the controllers that keep workloads, Services, namespaces and nodes converged.
#[derive(Debug, Parser)]
#[command(name = "rkube-controller-manager", version)]
struct Args {
    /// Kubeconfig naming the apiserver and the credentials to use.
    #[arg(
        long,
        env = "RKUBE_KUBECONFIG",
        default_value = ".rkube/apiserver/kubeconfig"
    )]
    kubeconfig: PathBuf,
    /// The controllers to run: `*` for all, a name to enable one, `-name` to disable one
    /// (comma-separated; e.g. `*,-cronjob`).
    #[arg(
        long,
        env = "RKUBE_CONTROLLERS",
        default_value = "*",
        value_delimiter = ','
    )]
    controllers: Vec<String>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served (plain HTTP).
    #[arg(
        long,
        env = "RKUBE_CONTROLLER_MANAGER_BIND_ADDRESS",
        default_value = "127.0.0.1:10257"
    )]
    bind_address: SocketAddr,
    /// Concurrent reconciles per controller.
    #[arg(long, env = "RKUBE_CONCURRENT_SYNCS", default_value_t = 5)]
    concurrent_syncs: usize,
    /// How long a node may go without a heartbeat before it is marked NotReady/Unknown.
    #[arg(long, env = "RKUBE_NODE_MONITOR_GRACE_PERIOD", default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: Duration,
    /// How long a newly registered node has to post its first heartbeat.
    #[arg(long, env = "RKUBE_NODE_STARTUP_GRACE_PERIOD", default_value = "60s", value_parser = parse_duration)]
    node_startup_grace_period: Duration,
    /// How often every node's health is re-checked although nothing changed.
    #[arg(long, env = "RKUBE_NODE_MONITOR_PERIOD", default_value = "5s", value_parser = parse_duration)]
    node_monitor_period: Duration,
    /// The delay before a Job's first failed pod is replaced; it doubles per failure, up to
    /// 6 minutes (rkube's flag: upstream fixes it at 10 s).
    #[arg(long, env = "RKUBE_JOB_POD_FAILURE_BACKOFF", default_value = "10s", value_parser = parse_duration)]
    job_pod_failure_backoff: Duration,
    /// The CIDR pod CIDRs are allocated from (e.g. `10.244.0.0/16`); without it nodes get
    /// none.
    #[arg(long, env = "RKUBE_CLUSTER_CIDR", value_parser = parse_cidr)]
    cluster_cidr: Option<(IpAddr, u8)>,
    /// The prefix length of each node's pod CIDR.
    #[arg(long, env = "RKUBE_NODE_CIDR_MASK_SIZE", default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Terminated pods kept before the oldest are deleted.
    #[arg(
        long,
        env = "RKUBE_TERMINATED_POD_GC_THRESHOLD",
        default_value_t = 12_500
    )]
    terminated_pod_gc_threshold: usize,
    /// Take a Lease before running the controllers, so only one of several replicas acts.
    #[arg(long, env = "RKUBE_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// How long a Lease lasts without renewal before another replica takes it.
    #[arg(long, env = "RKUBE_LEADER_ELECT_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    leader_elect_lease_duration: Duration,
    /// How long the leader keeps retrying a failing renewal before it gives up.
    #[arg(long, env = "RKUBE_LEADER_ELECT_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    leader_elect_renew_deadline: Duration,
    /// The pause between attempts to acquire or renew the Lease.
    #[arg(long, env = "RKUBE_LEADER_ELECT_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    leader_elect_retry_period: Duration,
    /// This replica's identity in the Lease; default: host name, process id and start time.
    #[arg(long, env = "RKUBE_CONTROLLER_MANAGER_IDENTITY")]
    identity: Option<String>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "RKUBE_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

/// Parses `10.244.0.0/16` (IPv4 or IPv6).
fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (ip, len) = s
        .split_once('/')
        .ok_or_else(|| format!("invalid CIDR {s:?} (e.g. 10.244.0.0/16)"))?;
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("invalid address in CIDR {s:?}"))?;
    let len: u8 = len
        .parse()
        .map_err(|_| format!("invalid prefix length in CIDR {s:?}"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(format!("prefix length {len} in {s:?} is over {max}"));
    }
    Ok((ip, len))
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("rkube-controller-manager: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(&args.log_format)?;
    let selected = controllers::select(&args.controllers)?;
    for note in controllers::ignored(&args.controllers) {
        warn!("--controllers: {note}");
    }
    if let Some((ip, len)) = args.cluster_cidr {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if args.node_cidr_mask_size < len || args.node_cidr_mask_size > max {
            bail!(
                "--node-cidr-mask-size {} must be between the cluster CIDR's prefix {len} and {max}",
                args.node_cidr_mask_size
            );
        }
    }
    let mut election = LeaderElectionConfig::new(
        "kube-system",
        "kube-controller-manager",
        &args.identity.clone().unwrap_or_else(default_identity),
    );
    election.lease_duration = args.leader_elect_lease_duration;
    election.renew_deadline = args.leader_elect_renew_deadline;
    election.retry_period = args.leader_elect_retry_period;
    if args.leader_elect {
        election.validate().context("leader election settings")?;
    }

    let client_config = ClientConfig::from_kubeconfig(&args.kubeconfig)
        .with_context(|| format!("reading the kubeconfig {}", args.kubeconfig.display()))?;
    let client =
        Client::connect_lazy_with(&client_config).context("connecting to the apiserver")?;
    let settings = Arc::new(Settings {
        workers: args.concurrent_syncs.max(1),
        node_monitor_grace_period: args.node_monitor_grace_period,
        node_startup_grace_period: args.node_startup_grace_period,
        node_monitor_period: args.node_monitor_period.max(Duration::from_millis(100)),
        job_pod_failure_backoff: args.job_pod_failure_backoff,
        cluster_cidr: args.cluster_cidr,
        node_cidr_mask_size: args.node_cidr_mask_size,
        terminated_pod_gc_threshold: args.terminated_pod_gc_threshold,
    });

    let metrics = Arc::new(Metrics::new());
    let (stop_tx, stop) = watch::channel(false);
    let listener = daemon::bind_http(args.bind_address)
        .await
        .with_context(|| format!("binding {}", args.bind_address))?;
    let addr = listener.local_addr()?;
    println!("serving health and metrics on {addr}");
    let syncing = Arc::new(AtomicBool::new(false));
    let http = tokio::spawn(daemon::serve_http(
        listener,
        metrics.clone(),
        syncing.clone(),
        stop.clone(),
    ));
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutting down");
        let _ = stop_tx.send(true);
    });

    let control = {
        let client = client.clone();
        move |stop: watch::Receiver<bool>| {
            let ctx = Context {
                client,
                informers: Arc::new(Informers::default()),
                clock: Clock::system(),
                metrics,
                settings,
                stop,
            };
            async move { daemon::run(ctx, &selected, syncing).await }
        }
    };
    if args.leader_elect {
        info!(lease = %election.name, identity = %election.identity, "waiting for leadership");
        let elector = LeaderElector::new(client, election);
        let mut stopped = stop.clone();
        let lost = tokio::spawn(async move {
            elector
                .run(control, async move {
                    rkube_controller_manager::stopped(&mut stopped).await;
                })
                .await;
        });
        let _ = lost.await;
        if !*stop.borrow() {
            error!("leader election lost");
            bail!("leader election lost");
        }
    } else {
        control(stop.clone()).await;
    }
    let _ = http.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_cidr("10.244.0.0/16"),
            Ok(("10.244.0.0".parse().unwrap(), 16))
        );
        assert_eq!(parse_cidr("fd00::/48"), Ok(("fd00::".parse().unwrap(), 48)));
        assert!(
            parse_cidr("10.244.0.0")
                .unwrap_err()
                .contains("invalid CIDR")
        );
        assert!(parse_cidr("10.244.0.0/33").unwrap_err().contains("over 32"));
        assert!(parse_cidr("nope/8").is_err());
    }
}
