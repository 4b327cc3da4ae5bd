//! rkube's cluster DNS, like CoreDNS's `kubernetes` plugin: Service, endpoint and pod names
//! under the cluster domain are answered from informer caches of Services and
//! EndpointSlices; every other name is relayed to upstream resolvers.
//!
//! - [`records`]: the pure lookup over a zone [`Snapshot`](records::Snapshot).
//! - [`zone`]: the caches that keep the snapshot current.
//! - [`server`]: the DNS wire protocol on UDP and TCP.
//! - [`forward`]: the relay to the upstream resolvers.
//! - [`http`]: `/healthz`, `/readyz` and `/metrics`.
//! - [`publish`]: the `kube-dns` Service and EndpointSlice of a server run as a daemon.
//! - [`metrics`]: what `/metrics` shows.
//!
//! [`start`] runs all of it, as `rkube-dns` does and tests do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rkube_client::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub mod forward;
pub mod http;
pub mod metrics;
pub mod publish;
pub mod records;
pub mod server;
pub mod zone;

use forward::Forwarder;
use metrics::Metrics;
use server::{Resolver, Sockets};
use zone::ZoneReader;

/// What the DNS server serves and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to answer queries, on UDP and TCP (port 0: a free port).
    pub listen: SocketAddr,
    /// The cluster domain, e.g. `cluster.local`.
    pub cluster_domain: String,
    /// The TTL of the cluster's records, in seconds.
    pub ttl: u32,
    /// The resolvers names outside the cluster domain are relayed to.
    pub upstreams: Vec<SocketAddr>,
    /// How long an upstream has to answer one attempt.
    pub forward_timeout: Duration,
    /// The clients names outside the cluster domain are forwarded for; empty: everyone.
    pub forward_allow: Vec<forward::Network>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([0, 0, 0, 0], 53)),
            cluster_domain: "cluster.local".to_string(),
            ttl: records::DEFAULT_TTL,
            upstreams: Vec::new(),
            forward_timeout: forward::DEFAULT_TIMEOUT,
            forward_allow: Vec::new(),
        }
    }
}

/// A started DNS server.
#[derive(Debug)]
pub struct Running {
    /// The address queries are answered on (UDP and TCP).
    pub addr: SocketAddr,
    /// The zone being served.
    pub zone: ZoneReader,
    /// The server's metrics.
    pub metrics: Arc<Metrics>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Waits until every task has ended (after `stop`, once in-flight queries are answered).
    pub async fn wait(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Binds the DNS sockets, starts the caches of `client` and serves until `stop` turns true.
pub async fn start(
    client: &Client,
    options: &Options,
    stop: watch::Receiver<bool>,
) -> Result<Running, server::Error> {
    let sockets = Sockets::bind(options.listen).await?;
    let addr = sockets.local_addr().map_err(|source| server::Error::Bind {
        addr: options.listen,
        proto: "udp",
        source,
    })?;
    let metrics = Arc::new(Metrics::new());
    let (zone, mut tasks) = zone::start(
        client,
        &options.cluster_domain,
        options.ttl,
        metrics.clone(),
        stop.clone(),
    );
    let resolver = Arc::new(
        Resolver::new(
            zone.clone(),
            Forwarder::new(options.upstreams.clone(), options.forward_timeout),
            metrics.clone(),
        )
        .forward_only_for(options.forward_allow.clone()),
    );
    tasks.extend(server::serve(sockets, resolver, stop));
    Ok(Running {
        addr,
        zone,
        metrics,
        tasks,
    })
}

/// Completes once `stop` is true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
