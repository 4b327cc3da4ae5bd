//! `rkube-proxy`: programs this node's nftables (`table ip rkube-proxy`) from Services and
//! EndpointSlices, or (with `--cleanup`) deletes that table and exits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use rkube_client::cli::{init_logging, parse_duration, shutdown_signal};
use rkube_client::{Client, ClientConfig};
use rkube_proxy::daemon::{self, Health, Settings};
use rkube_proxy::metrics::Metrics;
use rkube_proxy::nft::Nft;
use rkube_proxy::ruleset::{Config, Ipv4Cidr};
use tokio::sync::watch;
use tracing::info;

/// Turns Services and EndpointSlices into nftables rules on this node, like kube-proxy's
/// nftables mode (IPv4).
#[derive(Debug, Parser)]
#[command(name = "rkube-proxy", version)]
struct Args {
    /// Kubeconfig naming the apiserver and the credentials to use.
    #[arg(
        long,
        env = "RKUBE_KUBECONFIG",
        default_value = ".rkube/apiserver/kubeconfig"
    )]
    kubeconfig: PathBuf,
    /// The apiserver's address (e.g. `https://127.0.0.1:6443`), instead of the one in the
    /// kubeconfig (whose credentials are still used).
    #[arg(long, env = "RKUBE_SERVER")]
    server: Option<String>,
    /// This node's name: endpoints whose `nodeName` it is are local (default: the host
    /// name).
    #[arg(long, visible_alias = "node-name", env = "RKUBE_NODE_NAME")]
    hostname_override: Option<String>,
    /// The pod network: cluster-IP traffic from outside it is masqueraded.
    #[arg(long, env = "RKUBE_CLUSTER_CIDR", default_value = "10.244.0.0/16")]
    cluster_cidr: Ipv4Cidr,
    /// The apiserver's service range: cluster-IP traffic from outside the pod network is
    /// masqueraded.
    #[arg(
        long,
        env = "RKUBE_SERVICE_CLUSTER_IP_RANGE",
        default_value = "10.96.0.0/12"
    )]
    service_cluster_ip_range: Ipv4Cidr,
    /// The least time between two syncs; changes within it are applied together.
    #[arg(long, env = "RKUBE_PROXY_MIN_SYNC_PERIOD", default_value = "1s", value_parser = parse_duration)]
    min_sync_period: Duration,
    /// How often the whole table is rewritten although nothing changed, to undo drift.
    #[arg(long, env = "RKUBE_PROXY_SYNC_PERIOD", default_value = "30s", value_parser = parse_duration)]
    sync_period: Duration,
    /// Delete rkube-proxy's nftables table (if any) and exit.
    #[arg(long, env = "RKUBE_PROXY_CLEANUP", default_value_t = false)]
    cleanup: bool,
    /// Where `/healthz`, `/readyz` and `/metrics` are served (plain HTTP).
    #[arg(
        long,
        env = "RKUBE_PROXY_METRICS_BIND_ADDRESS",
        default_value = "127.0.0.1:10249"
    )]
    metrics_bind_address: SocketAddr,
    /// The nft program to run.
    #[arg(long, env = "RKUBE_PROXY_NFT", default_value = "nft")]
    nft: String,
    /// Log format: `text` or `json`.
    #[arg(long, env = "RKUBE_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("rkube-proxy: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(&args.log_format)?;
    let nft = Nft::with_program(&args.nft);
    if args.cleanup {
        let deleted = nft.cleanup().await.context("deleting the nftables table")?;
        if deleted {
            info!("deleted table ip rkube-proxy");
        } else {
            info!("no table ip rkube-proxy to delete");
        }
        return Ok(());
    }
    if args.min_sync_period > args.sync_period {
        bail!(
            "--min-sync-period ({:?}) must not exceed --sync-period ({:?})",
            args.min_sync_period,
            args.sync_period
        );
    }
    let node = args.hostname_override.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_lowercase())
            .unwrap_or_else(|_| "localhost".into())
    });

    let mut client_config = ClientConfig::from_kubeconfig(&args.kubeconfig)
        .with_context(|| format!("reading the kubeconfig {}", args.kubeconfig.display()))?;
    if let Some(server) = &args.server {
        client_config.endpoint = server.clone();
    }
    let client =
        Client::connect_lazy_with(&client_config).context("connecting to the apiserver")?;

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(args.sync_period * 2));
    let (stop_tx, stop) = watch::channel(false);
    let listener = daemon::bind_http(args.metrics_bind_address)
        .await
        .with_context(|| format!("binding {}", args.metrics_bind_address))?;
    println!("serving health and metrics on {}", listener.local_addr()?);
    let http = tokio::spawn(daemon::serve_http(
        listener,
        metrics.clone(),
        health.clone(),
        stop.clone(),
    ));
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutting down; the rules stay in place");
        let _ = stop_tx.send(true);
    });

    info!(
        node = %node,
        cluster_cidr = %args.cluster_cidr,
        service_cidr = %args.service_cluster_ip_range,
        min_sync_period_ms = args.min_sync_period.as_millis() as u64,
        sync_period_s = args.sync_period.as_secs(),
        "starting"
    );
    let settings = Settings {
        node,
        config: Config {
            cluster_cidr: args.cluster_cidr,
            service_cidr: args.service_cluster_ip_range,
        },
        min_sync_period: args.min_sync_period,
        sync_period: args.sync_period,
        nft,
    };
    daemon::run(client, settings, metrics, health, stop).await;
    let _ = http.await;
    Ok(())
}
