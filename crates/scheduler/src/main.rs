//! `rkube-scheduler`: binds pending pods to nodes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use rkube_client::cli::{default_identity, init_logging, parse_duration, shutdown_signal};
use rkube_client::{Client, ClientConfig, LeaderElectionConfig, LeaderElector};
use rkube_scheduler::config::SchedulerConfig;
use rkube_scheduler::daemon;
use rkube_scheduler::metrics::Metrics;
use tokio::sync::watch;
use tracing::{error, info};

/// Binds every pending pod whose schedulerName is one of its profiles to a node that can run
/// it.
#[derive(Debug, Parser)]
#[command(name = "rkube-scheduler", version)]
struct Args {
    /// Kubeconfig naming the apiserver and the credentials to use.
    #[arg(
        long,
        env = "RKUBE_KUBECONFIG",
        default_value = ".rkube/apiserver/kubeconfig"
    )]
    kubeconfig: PathBuf,
    /// A KubeSchedulerConfiguration file (kubescheduler.config.k8s.io/v1); without it one
    /// profile, `default-scheduler`, with the default plugins.
    #[arg(long, env = "RKUBE_SCHEDULER_CONFIG")]
    config: Option<PathBuf>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served (plain HTTP).
    #[arg(
        long,
        env = "RKUBE_SCHEDULER_BIND_ADDRESS",
        default_value = "127.0.0.1:10259"
    )]
    bind_address: SocketAddr,
    /// Take a Lease before scheduling, so only one of several replicas is active (default
    /// true; overrides the configuration file's `leaderElection.leaderElect`).
    #[arg(long, env = "RKUBE_LEADER_ELECT", action = clap::ArgAction::Set)]
    leader_elect: Option<bool>,
    /// How long a Lease lasts without renewal before another replica takes it (e.g. `15s`).
    #[arg(long, env = "RKUBE_LEADER_ELECT_LEASE_DURATION", value_parser = parse_duration)]
    leader_elect_lease_duration: Option<Duration>,
    /// How long the leader keeps retrying a failing renewal before it gives up (e.g. `10s`).
    #[arg(long, env = "RKUBE_LEADER_ELECT_RENEW_DEADLINE", value_parser = parse_duration)]
    leader_elect_renew_deadline: Option<Duration>,
    /// The pause between attempts to acquire or renew the Lease (e.g. `2s`).
    #[arg(long, env = "RKUBE_LEADER_ELECT_RETRY_PERIOD", value_parser = parse_duration)]
    leader_elect_retry_period: Option<Duration>,
    /// The Lease's name.
    #[arg(long, env = "RKUBE_LEADER_ELECT_RESOURCE_NAME")]
    leader_elect_resource_name: Option<String>,
    /// The Lease's namespace.
    #[arg(long, env = "RKUBE_LEADER_ELECT_RESOURCE_NAMESPACE")]
    leader_elect_resource_namespace: Option<String>,
    /// This replica's identity in the Lease; default: host name, process id and start time.
    #[arg(long, env = "RKUBE_SCHEDULER_IDENTITY")]
    identity: Option<String>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "RKUBE_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("rkube-scheduler: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(&args.log_format)?;
    let config = match &args.config {
        Some(path) => SchedulerConfig::load(path)
            .with_context(|| format!("reading the configuration {}", path.display()))?,
        None => SchedulerConfig::default(),
    };
    let profiles = config
        .build_profiles()
        .context("building the scheduling profiles")?;

    let mut election = LeaderElectionConfig::new(
        "kube-system",
        "kube-scheduler",
        &args.identity.clone().unwrap_or_else(default_identity),
    );
    let mut leader_elect = true;
    if let Some(le) = &config.leader_election {
        leader_elect = le.leader_elect;
        election.lease_duration = le.lease_duration;
        election.renew_deadline = le.renew_deadline;
        election.retry_period = le.retry_period;
        election.name = le.resource_name.clone();
        election.namespace = le.resource_namespace.clone();
    }
    if let Some(elect) = args.leader_elect {
        leader_elect = elect;
    }
    if let Some(d) = args.leader_elect_lease_duration {
        election.lease_duration = d;
    }
    if let Some(d) = args.leader_elect_renew_deadline {
        election.renew_deadline = d;
    }
    if let Some(d) = args.leader_elect_retry_period {
        election.retry_period = d;
    }
    if let Some(n) = &args.leader_elect_resource_name {
        election.name = n.clone();
    }
    if let Some(n) = &args.leader_elect_resource_namespace {
        election.namespace = n.clone();
    }
    if leader_elect {
        election.validate().context("leader election settings")?;
    }

    let client_config = ClientConfig::from_kubeconfig(&args.kubeconfig)
        .with_context(|| format!("reading the kubeconfig {}", args.kubeconfig.display()))?;
    let client =
        Client::connect_lazy_with(&client_config).context("connecting to the apiserver")?;

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

    let schedule = {
        let client = client.clone();
        let (initial, max) = (config.pod_initial_backoff, config.pod_max_backoff);
        move |stop: watch::Receiver<bool>| {
            daemon::run(client, profiles, initial, max, metrics, syncing, stop)
        }
    };
    if leader_elect {
        info!(lease = %election.name, identity = %election.identity, "waiting for leadership");
        let elector = LeaderElector::new(client, election);
        let mut stopped = stop.clone();
        let lost = tokio::spawn(async move {
            elector
                .run(schedule, async move {
                    rkube_scheduler::stopped(&mut stopped).await;
                })
                .await;
        });
        let _ = lost.await;
        if !*stop.borrow() {
            error!("leader election lost");
            bail!("leader election lost");
        }
    } else {
        schedule(stop.clone()).await;
    }
    let _ = http.await;
    Ok(())
}
