//! `rkube-dns`: the cluster DNS server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use rkube_client::cli::{init_logging, parse_duration, shutdown_signal};
use rkube_client::{Client, ClientConfig};
use rkube_dns::forward::{
    Network, parse_network, parse_upstream, resolv_conf_nameservers, without_self,
};
use rkube_dns::{Options, records};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// How long shutdown waits for in-flight queries before exiting anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Answers DNS for Services, endpoints and pods under the cluster domain from informer
/// caches, and relays other names to upstream resolvers.
#[derive(Debug, Parser)]
#[command(name = "rkube-dns", version)]
struct Args {
    /// Kubeconfig naming the apiserver and the credentials to use.
    #[arg(
        long,
        env = "RKUBE_KUBECONFIG",
        default_value = ".rkube/apiserver/kubeconfig"
    )]
    kubeconfig: PathBuf,
    /// The cluster domain answered from the caches.
    #[arg(long, env = "RKUBE_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Where DNS queries are answered, on UDP and TCP.
    #[arg(long, env = "RKUBE_DNS_LISTEN", default_value = "0.0.0.0:53")]
    listen: SocketAddr,
    /// Resolvers for names outside the cluster domain (comma-separated, `ip` or `ip:port`);
    /// default: the `nameserver` lines of `--resolv-conf`, less any pointing at this server.
    #[arg(long, env = "RKUBE_DNS_UPSTREAM", value_delimiter = ',', value_parser = parse_upstream)]
    upstream: Vec<SocketAddr>,
    /// The resolv.conf read for upstreams when `--upstream` is not given.
    #[arg(
        long,
        env = "RKUBE_DNS_RESOLV_CONF",
        default_value = "/etc/resolv.conf"
    )]
    resolv_conf: PathBuf,
    /// How long an upstream has to answer before the next one is tried.
    #[arg(long, env = "RKUBE_DNS_FORWARD_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    forward_timeout: Duration,
    /// Forward names outside the cluster domain only for clients in these networks
    /// (comma-separated CIDRs or addresses); others get REFUSED. Default: every client,
    /// which suits a server only the cluster can reach.
    #[arg(long, env = "RKUBE_DNS_FORWARD_ALLOW", value_delimiter = ',', value_parser = parse_network)]
    forward_allow: Vec<Network>,
    /// The TTL of the cluster's records, in seconds (CoreDNS's default is 5).
    #[arg(long, env = "RKUBE_DNS_TTL", default_value_t = records::DEFAULT_TTL)]
    ttl: u32,
    /// Where `/healthz`, `/readyz` and `/metrics` are served (plain HTTP); 9153 is CoreDNS's
    /// metrics port.
    #[arg(
        long,
        env = "RKUBE_DNS_HEALTH_BIND_ADDRESS",
        default_value = "127.0.0.1:9153"
    )]
    health_bind_address: SocketAddr,
    /// Publish this server as the cluster's DNS Service: the address pods reach it at (an
    /// address of this machine); the Service gets `--service-ip`, port 53 to the port of
    /// `--listen`. Without it nothing is published (the Service is someone else's).
    #[arg(long, env = "RKUBE_DNS_PUBLISH_ADDRESS")]
    publish_address: Option<std::net::IpAddr>,
    /// The cluster IP of the published Service (upstream's convention: the tenth address
    /// of the service range).
    #[arg(long, env = "RKUBE_DNS_SERVICE_IP", default_value = "10.96.0.10")]
    service_ip: std::net::IpAddr,
    /// The published Service, `namespace/name`.
    #[arg(
        long,
        env = "RKUBE_DNS_SERVICE",
        default_value = "kube-system/kube-dns"
    )]
    service: String,
    /// Log format: `text` or `json`.
    #[arg(long, env = "RKUBE_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("rkube-dns: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(&args.log_format)?;
    let domain = args.cluster_domain.trim_matches('.').to_ascii_lowercase();
    if domain.is_empty() || invalid_domain(&domain) {
        bail!(
            "--cluster-domain {:?} is not a DNS name",
            args.cluster_domain
        );
    }
    let upstreams = if args.upstream.is_empty() {
        match std::fs::read_to_string(&args.resolv_conf) {
            Ok(contents) => without_self(resolv_conf_nameservers(&contents), args.listen),
            Err(e) => {
                warn!(path = %args.resolv_conf.display(), error = %e, "cannot read resolv.conf");
                Vec::new()
            }
        }
    } else {
        args.upstream.clone()
    };
    if upstreams.is_empty() {
        warn!("no upstream resolvers: names outside the cluster domain will get SERVFAIL");
    }

    let client_config = ClientConfig::from_kubeconfig(&args.kubeconfig)
        .with_context(|| format!("reading the kubeconfig {}", args.kubeconfig.display()))?;
    let client =
        Client::connect_lazy_with(&client_config).context("connecting to the apiserver")?;

    let publication = match args.publish_address {
        None => None,
        Some(ip) => {
            let Some((namespace, name)) = args.service.split_once('/') else {
                bail!("--service {:?} is not namespace/name", args.service);
            };
            Some(rkube_dns::publish::Publication {
                namespace: namespace.to_string(),
                name: name.to_string(),
                cluster_ip: args.service_ip,
                endpoint: SocketAddr::new(ip, args.listen.port()),
            })
        }
    };
    let (stop_tx, stop) = watch::channel(false);
    let health = tokio::net::TcpListener::bind(args.health_bind_address)
        .await
        .with_context(|| format!("binding {}", args.health_bind_address))?;
    let options = Options {
        listen: args.listen,
        cluster_domain: domain.clone(),
        ttl: args.ttl,
        upstreams: upstreams.clone(),
        forward_timeout: args.forward_timeout,
        forward_allow: args.forward_allow.clone(),
    };
    let running = rkube_dns::start(&client, &options, stop.clone())
        .await
        .context("starting the dns server")?;
    let health_addr = health.local_addr()?;
    info!(
        listen = %running.addr,
        health = %health_addr,
        domain = %domain,
        upstreams = ?upstreams,
        forward_allow = ?args.forward_allow.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ttl = args.ttl,
        "serving dns"
    );
    // Published only once the zone is served: pods sent here before would be told that
    // nothing exists.
    let publisher = publication.map(|p| {
        let zone = running.zone.clone();
        let (client, mut stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = zone.wait_synced() => p.run(client, stop).await,
                _ = rkube_dns::stopped(&mut stop) => {}
            }
        })
    });
    let http = tokio::spawn(rkube_dns::http::serve(
        health,
        running.zone.clone(),
        running.metrics.clone(),
        stop.clone(),
    ));

    shutdown_signal().await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, running.wait())
        .await
        .is_err()
    {
        warn!(grace = ?SHUTDOWN_GRACE, "in-flight queries still running, exiting anyway");
    }
    debug!("dns tasks ended");
    let _ = http.await;
    if let Some(p) = publisher {
        let _ = p.await;
    }
    debug!("http server ended");
    Ok(())
}

/// Whether `domain` is not a valid DNS name (labels of 1–63 letters, digits and hyphens).
fn invalid_domain(domain: &str) -> bool {
    domain.split('.').any(|label| {
        label.is_empty()
            || label.len() > 63
            || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_domains_must_be_dns_names() {
        assert!(!invalid_domain("cluster.local"));
        assert!(!invalid_domain("k8s-1.example"));
        assert!(invalid_domain("cluster..local"));
        assert!(invalid_domain("clu ster.local"));
        assert!(invalid_domain(&"a".repeat(64)));
    }

    #[test]
    fn flags_have_the_documented_defaults() {
        let args = Args::try_parse_from(["rkube-dns"]).unwrap();
        assert_eq!(args.listen, "0.0.0.0:53".parse().unwrap());
        assert_eq!(args.cluster_domain, "cluster.local");
        assert_eq!(args.ttl, 5);
        assert_eq!(args.health_bind_address, "127.0.0.1:9153".parse().unwrap());
        assert!(args.upstream.is_empty());
        assert!(
            args.forward_allow.is_empty(),
            "forwards for everyone by default"
        );
        let args = Args::try_parse_from(["rkube-dns", "--forward-allow", "10.88.0.0/24,192.0.2.1"])
            .unwrap();
        let allowed: Vec<String> = args.forward_allow.iter().map(ToString::to_string).collect();
        assert_eq!(allowed, ["10.88.0.0/24", "192.0.2.1/32"]);
        assert!(Args::try_parse_from(["rkube-dns", "--forward-allow", "pods"]).is_err());
        let args =
            Args::try_parse_from(["rkube-dns", "--upstream", "10.0.0.2,[fd00::2]:5353"]).unwrap();
        assert_eq!(
            args.upstream,
            vec![
                "10.0.0.2:53".parse().unwrap(),
                "[fd00::2]:5353".parse().unwrap()
            ]
        );
    }
}
