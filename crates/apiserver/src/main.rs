//! The `rkube-apiserver` binary: flags, logging, signals.

use anyhow::Context;

// Allocation is the largest single cost on the write path (JSON values and object copies:
// malloc and free took 17% of the CPU of a REST create load with glibc's allocator).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use clap::{Parser, ValueEnum};
use rkube_apiserver::objects::{default_tolerations, services};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The default of both toleration flags (upstream's).
const DEFAULT_TOLERATION_SECONDS: u32 = default_tolerations::DEFAULT_TOLERATION_SECONDS as u32;

/// Log output formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// rkube-apiserver: keeps the cluster state and serves the API.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Directory for the store (created if missing).
    #[arg(
        long,
        env = "RKUBE_DATA_DIR",
        default_value = "/var/lib/rkube/apiserver"
    )]
    data_dir: PathBuf,
    /// Keep everything in memory instead of --data-dir (for trying things out; lost on exit).
    #[arg(long, env = "RKUBE_IN_MEMORY")]
    in_memory: bool,
    /// Address to listen on.
    #[arg(long, env = "RKUBE_BIND_ADDRESS", default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// Port for gRPC and the HTTP endpoints; 0 picks a free port.
    #[arg(long, env = "RKUBE_PORT", default_value_t = 6443)]
    port: u16,
    /// Log format.
    #[arg(long, env = "RKUBE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `rkube_apiserver=debug`.
    #[arg(long, env = "RKUBE_LOG", default_value = "info")]
    log_level: String,
    /// Events per resource kept for watchers resuming from an older resourceVersion.
    #[arg(long, env = "RKUBE_WATCH_CACHE_SIZE", default_value_t = 10_000)]
    watch_cache_size: usize,
    /// Events a watcher may have waiting before it is closed as too slow.
    #[arg(long, env = "RKUBE_WATCHER_BUFFER", default_value_t = 1_000)]
    watcher_buffer: usize,
    /// Seconds between bookmarks to watchers that ask for them.
    #[arg(long, env = "RKUBE_BOOKMARK_INTERVAL", default_value_t = 10)]
    bookmark_interval: u64,
    /// Seconds between compactions of the store's change log.
    #[arg(long, env = "RKUBE_COMPACTION_INTERVAL", default_value_t = 60)]
    compaction_interval: u64,
    /// Serving certificate (PEM); by default one is made with the cluster CA.
    #[arg(long, env = "RKUBE_TLS_CERT_FILE", requires = "tls_private_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// Key of --tls-cert-file (PEM).
    #[arg(long, env = "RKUBE_TLS_PRIVATE_KEY_FILE", requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// CA whose client certificates are accepted; by default the cluster CA.
    #[arg(long, env = "RKUBE_CLIENT_CA_FILE")]
    client_ca_file: Option<PathBuf>,
    /// Extra names (DNS names or IP addresses) of the generated serving certificate, e.g.
    /// the apiserver's name on a container network; repeatable or comma-separated.
    #[arg(long = "tls-san", env = "RKUBE_TLS_SAN", value_delimiter = ',')]
    tls_sans: Vec<String>,
    /// Seconds a new pod tolerates its node's `node.kubernetes.io/not-ready` NoExecute
    /// taint, unless it says otherwise (the DefaultTolerationSeconds admission).
    #[arg(long, env = "RKUBE_DEFAULT_NOT_READY_TOLERATION_SECONDS", default_value_t = DEFAULT_TOLERATION_SECONDS)]
    default_not_ready_toleration_seconds: u32,
    /// Seconds a new pod tolerates its node's `node.kubernetes.io/unreachable` NoExecute
    /// taint, unless it says otherwise.
    #[arg(long, env = "RKUBE_DEFAULT_UNREACHABLE_TOLERATION_SECONDS", default_value_t = DEFAULT_TOLERATION_SECONDS)]
    default_unreachable_toleration_seconds: u32,
    /// Lists with at most this many objects are answered whole, ignoring `limit` (as the
    /// API allows); 0 always honours `limit`.
    #[arg(long, env = "RKUBE_UNPAGED_LIST_MAX", default_value_t = rkube_apiserver::objects::DEFAULT_UNPAGED_LIST_MAX)]
    unpaged_list_max: usize,
    /// Revisions of change log each compaction keeps.
    #[arg(long, env = "RKUBE_COMPACTION_RETAIN", default_value_t = 10_000)]
    compaction_retain: u64,
    /// The IPv4 range Services' cluster IPs come from (between /12 and /29); the first
    /// address is the `kubernetes` Service's.
    #[arg(long, env = "RKUBE_SERVICE_CLUSTER_IP_RANGE", default_value = services::DEFAULT_SERVICE_CIDR, value_parser = services::ServiceCidr::parse)]
    service_cluster_ip_range: services::ServiceCidr,
    /// The ports NodePort Services get their node ports from, `first-last`.
    #[arg(long, env = "RKUBE_SERVICE_NODE_PORT_RANGE", default_value = "30000-32767", value_parser = services::parse_port_range)]
    service_node_port_range: std::ops::RangeInclusive<u16>,
    /// The address the `kubernetes` Service's endpoints point at (default: --bind-address
    /// unless it is unspecified, else the source address of the default route).
    #[arg(long, env = "RKUBE_ADVERTISE_ADDRESS")]
    advertise_address: Option<IpAddr>,
}

fn init_logging(args: &Args) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("invalid --log-level {:?}", args.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.bookmark_interval == 0 || args.compaction_interval == 0 {
        anyhow::bail!("--bookmark-interval and --compaction-interval must be at least 1 second");
    }
    let data_dir = if args.in_memory {
        None
    } else {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("cannot create --data-dir {}", args.data_dir.display()))?;
        Some(args.data_dir.clone())
    };
    let options = rkube_apiserver::Options {
        data_dir,
        bind_address: args.bind_address,
        port: args.port,
        watch_cache_size: args.watch_cache_size,
        watcher_buffer: args.watcher_buffer,
        bookmark_interval: Duration::from_secs(args.bookmark_interval),
        compaction_interval: Duration::from_secs(args.compaction_interval),
        compaction_retain: args.compaction_retain,
        unpaged_list_max: args.unpaged_list_max,
        tls: rkube_apiserver::tls::TlsOptions {
            cert_file: args.tls_cert_file.clone(),
            key_file: args.tls_private_key_file.clone(),
            client_ca_file: args.client_ca_file.clone(),
            sans: args.tls_sans.clone(),
        },
        default_tolerations: default_tolerations::Seconds {
            not_ready: args.default_not_ready_toleration_seconds.into(),
            unreachable: args.default_unreachable_toleration_seconds.into(),
        },
        service_cidr: args.service_cluster_ip_range,
        node_ports: args.service_node_port_range.clone(),
        advertise_address: args.advertise_address,
        ..Default::default()
    };
    let mut running = rkube_apiserver::start(options).await?;
    // The listening address on stdout, for scripts and tests that start us on port 0.
    println!("listening on {}", running.addr);
    if let Some(kubeconfig) = &running.kubeconfig {
        tracing::info!(path = %kubeconfig.display(), "admin kubeconfig written");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        result = running.wait() => {
            result.context("server failed")?;
            return Ok(());
        }
    }
    running.shutdown().await;
    Ok(())
}

fn main() {
    let args = Args::parse();
    if let Err(e) = init_logging(&args) {
        eprintln!("rkube-apiserver: {e:#}");
        std::process::exit(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rkube-apiserver: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(args)) {
        eprintln!("rkube-apiserver: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_sans_repeat_and_split_on_commas() {
        let args = Args::try_parse_from([
            "rkube-apiserver",
            "--tls-san=apiserver",
            "--tls-san",
            "10.0.0.1,rkube.example",
        ])
        .expect("parse");
        assert_eq!(args.tls_sans, ["apiserver", "10.0.0.1", "rkube.example"]);
        let none = Args::try_parse_from(["rkube-apiserver"]).expect("parse");
        assert!(none.tls_sans.is_empty());
    }

    #[test]
    fn toleration_seconds_default_to_upstreams_300_and_refuse_negatives() {
        let args = Args::try_parse_from(["rkube-apiserver"]).expect("parse");
        assert_eq!(args.default_not_ready_toleration_seconds, 300);
        assert_eq!(args.default_unreachable_toleration_seconds, 300);
        let args = Args::try_parse_from([
            "rkube-apiserver",
            "--default-not-ready-toleration-seconds=10",
            "--default-unreachable-toleration-seconds=0",
        ])
        .expect("parse");
        assert_eq!(args.default_not_ready_toleration_seconds, 10);
        assert_eq!(args.default_unreachable_toleration_seconds, 0);
        assert!(
            Args::try_parse_from([
                "rkube-apiserver",
                "--default-unreachable-toleration-seconds=-1"
            ])
            .is_err()
        );
    }
}
