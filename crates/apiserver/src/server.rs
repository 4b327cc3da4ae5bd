//! Starting and stopping the apiserver: the store, the watch caches and their tasks, the
//! bootstrap namespaces, and one listener serving gRPC and the HTTP endpoints.

use crate::caches::Caches;
use crate::grpc::GrpcService;
use crate::metrics::Metrics;
use crate::objects::services::{ServiceAllocator, ServiceCidr};
use crate::objects::{Objects, WriteOptions};
use crate::tls::{self, TlsMaterial, TlsOptions};
use axum::Router;
use axum::routing::get;
use rkube_store::{MemoryStore, SledOptions, SledStore, Store};
use rkube_types::{Reason, registry};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Open client connections at most; further clients wait to be accepted.
const MAX_CONNECTIONS: usize = 8_192;

/// Namespaces every cluster has from its first start.
pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// How the apiserver runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the sled database lives; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// Address to listen on.
    pub bind_address: IpAddr,
    /// Port to listen on; 0 picks a free one.
    pub port: u16,
    /// Events each resource's watch cache keeps for watchers resuming from the past.
    pub watch_cache_size: usize,
    /// Events a watcher may have waiting before it is closed as too slow.
    pub watcher_buffer: usize,
    /// How often watchers that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// How often the store's change log is compacted.
    pub compaction_interval: Duration,
    /// How many revisions of change log the compaction keeps.
    pub compaction_retain: u64,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    /// Certificates: generated under the data dir unless files are given.
    pub tls: TlsOptions,
    /// Lists of at most this many objects ignore `limit` and come whole (0: always page).
    pub unpaged_list_max: usize,
    /// Seconds new pods tolerate the not-ready and unreachable NoExecute taints unless they
    /// say otherwise (DefaultTolerationSeconds admission).
    pub default_tolerations: crate::objects::default_tolerations::Seconds,
    /// The range Services' cluster IPs come from.
    pub service_cidr: ServiceCidr,
    /// The range of node ports.
    pub node_ports: std::ops::RangeInclusive<u16>,
    /// The address the `kubernetes` Service's endpoints name (see [`advertise_address`]).
    pub advertise_address: Option<IpAddr>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            data_dir: None,
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 6443,
            watch_cache_size: 10_000,
            watcher_buffer: 1_000,
            bookmark_interval: Duration::from_secs(10),
            compaction_interval: Duration::from_secs(60),
            compaction_retain: 10_000,
            shutdown_grace: Duration::from_secs(10),
            tls: TlsOptions::default(),
            unpaged_list_max: crate::objects::DEFAULT_UNPAGED_LIST_MAX,
            default_tolerations: Default::default(),
            service_cidr: ServiceCidr::parse(crate::objects::services::DEFAULT_SERVICE_CIDR)
                .expect("the default service CIDR parses"),
            node_ports: crate::objects::services::DEFAULT_NODE_PORT_RANGE,
            advertise_address: None,
        }
    }
}

/// Why the apiserver could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened or read.
    #[error("cannot open the store at {path}")]
    Store {
        /// The data directory.
        path: String,
        /// The cause.
        #[source]
        source: rkube_store::Error,
    },
    /// The listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The certificates could not be loaded or made.
    #[error("TLS setup failed")]
    Tls(#[from] tls::TlsError),
    /// A system namespace could not be created.
    #[error("cannot create namespace {name}: {source}")]
    Bootstrap {
        /// The namespace.
        name: String,
        /// The cause.
        source: rkube_types::ApiError,
    },
}

/// A running apiserver.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The certificates it serves with, and the admin client certificate.
    pub tls: TlsMaterial,
    /// Where the admin kubeconfig was written (with a data dir).
    pub kubeconfig: Option<PathBuf>,
    objects: Objects,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    tasks: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl Running {
    /// The API verbs, for in-process callers.
    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    /// The endpoint, e.g. `https://127.0.0.1:6443` (an unspecified bind address is reached
    /// through loopback).
    pub fn endpoint(&self) -> String {
        endpoint(self.addr)
    }

    /// Stops accepting, ends watches, waits for requests in flight up to the grace period,
    /// then stops the background tasks and closes the store.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let mut server = self.server;
        if tokio::time::timeout(self.grace, &mut server).await.is_err() {
            tracing::warn!("requests still in flight after the grace period; stopping anyway");
            server.abort();
        }
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
        drop(self.objects);
        tracing::info!("apiserver stopped");
    }

    /// Waits until the server stops by itself (it does not, unless it fails).
    pub async fn wait(&mut self) -> std::io::Result<()> {
        match (&mut self.server).await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Opens the store, loads the caches, creates the system namespaces and starts serving.
pub async fn start(options: Options) -> Result<Running, StartError> {
    let store: Arc<dyn Store> = match &options.data_dir {
        Some(dir) => {
            let path = dir.join("store");
            let store =
                SledStore::open(&SledOptions::new(&path)).map_err(|source| StartError::Store {
                    path: path.display().to_string(),
                    source,
                })?;
            Arc::new(store)
        }
        None => Arc::new(MemoryStore::new()),
    };
    let metrics = Arc::new(Metrics::new());
    let store_err = |source| StartError::Store {
        path: options
            .data_dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "memory".into()),
        source,
    };
    let caches = Arc::new(
        Caches::load(
            store.as_ref(),
            options.watch_cache_size,
            options.watcher_buffer,
            metrics.clone(),
        )
        .await
        .map_err(store_err)?,
    );
    let (shutdown, shutdown_rx) = watch::channel(false);
    let tasks = vec![
        tokio::spawn(
            caches
                .clone()
                .run_dispatcher(store.clone(), shutdown_rx.clone()),
        ),
        tokio::spawn(
            caches
                .clone()
                .run_bookmarks(options.bookmark_interval, shutdown_rx.clone()),
        ),
        tokio::spawn(run_compactor(
            store.clone(),
            caches.clone(),
            options.compaction_interval,
            options.compaction_retain,
        )),
    ];
    let allocator = Arc::new(ServiceAllocator::new(
        options.service_cidr,
        options.node_ports.clone(),
    ));
    repair_service_allocations(store.as_ref(), &allocator)
        .await
        .map_err(store_err)?;
    let objects = Objects::new(store, caches)
        .with_unpaged_list_max(options.unpaged_list_max)
        .with_default_tolerations(options.default_tolerations)
        .with_service_allocator(allocator);
    bootstrap(&objects).await?;

    let addr = SocketAddr::new(options.bind_address, options.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let advertise = advertise_address(options.advertise_address, options.bind_address).await;
    if let Err(e) = publish_kubernetes_service(&objects, advertise, addr.port()).await {
        tracing::warn!(error = %e, "cannot publish the kubernetes service");
    }
    let material = tls::load_or_create(
        options.data_dir.as_deref(),
        options.bind_address,
        &options.tls,
    )?;
    let kubeconfig = match &options.data_dir {
        Some(dir) => {
            let path = dir.join("kubeconfig");
            tls::write_kubeconfig(&path, &material, &endpoint(addr))?;
            Some(path)
        }
        None => None,
    };
    // Beyond loopback, only holders of a certificate from the cluster CA get in, until
    // authentication and RBAC land.
    let require_client_cert = !options.bind_address.is_loopback();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(tls::server_config(&material, require_client_cert)?);
    let grpc = GrpcService::new(objects.clone(), metrics.clone(), shutdown_rx.clone());
    let rest = crate::rest::router(
        objects.clone(),
        metrics.clone(),
        shutdown_rx.clone(),
        addr.to_string(),
    );
    let router = router(grpc, metrics, objects.store().clone(), shutdown_rx.clone()).merge(rest);
    let server = tokio::spawn(serve_tls(listener, acceptor, router, shutdown_rx.clone()));
    tracing::info!(address = %addr, "apiserver listening");
    Ok(Running {
        addr,
        tls: material,
        kubeconfig,
        objects,
        shutdown,
        server,
        tasks,
        grace: options.shutdown_grace,
    })
}

fn endpoint(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("https://{}", SocketAddr::new(ip, addr.port()))
}

/// Accepts TLS connections and serves each with HTTP/2 or HTTP/1.1 (by ALPN) until
/// `shutdown`; then waits for the open connections to finish their requests.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // A client that stops mid-headers is dropped; idle HTTP/2 peers are pinged.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        // Daemons multiplex many watches over one connection.
        .max_concurrent_streams(1_000)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    // Bounded connections: past the cap, accepting waits instead of growing without bound.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

fn router(
    grpc: GrpcService,
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    shutdown: watch::Receiver<bool>,
) -> Router {
    let server = rkube_rpc::ResourcesServer::new(grpc)
        // A request carries at most one object (or patch): room for one at the limit, so an
        // oversized one gets its 413 from admission, and no more.
        .max_decoding_message_size(2 * rkube_rpc::MAX_OBJECT_BYTES + 64 * 1024)
        .max_encoding_message_size(rkube_rpc::MAX_MESSAGE_BYTES);
    let grpc_routes = tonic::service::Routes::new(server).into_axum_router();
    let ready = shutdown.clone();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let stopping = *ready.borrow();
                async move {
                    if stopping {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "shutting down")
                    } else {
                        (axum::http::StatusCode::OK, "ok")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = metrics.render(store.flush_stats());
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        )
        .merge(grpc_routes)
}

/// Creates the system namespaces and priority classes that do not exist yet.
async fn bootstrap(objects: &Objects) -> Result<(), StartError> {
    for name in SYSTEM_NAMESPACES {
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name},
        });
        create_if_absent(objects, "", "namespaces", name, &body).await?;
    }
    // The two system priority classes Kubernetes creates at start.
    for (name, value, description) in [
        (
            "system-node-critical",
            2_000_001_000,
            "Used for system critical pods that must not be moved from their current node.",
        ),
        (
            "system-cluster-critical",
            2_000_000_000,
            "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
        ),
    ] {
        let body = serde_json::json!({
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
            "description": description,
        });
        create_if_absent(objects, "scheduling.k8s.io", "priorityclasses", name, &body).await?;
    }
    Ok(())
}

/// Rebuilds the ClusterIP and NodePort tables from the stored Services: nothing allocated
/// is lost or leaked across a crash, since the tables are made from what was acknowledged.
async fn repair_service_allocations(
    store: &dyn Store,
    allocator: &ServiceAllocator,
) -> Result<(), rkube_store::Error> {
    let Some(info) = registry::lookup("", "v1", "services") else {
        return Ok(());
    };
    let (records, _) = store.list(&info.storage_prefix()).await?;
    let services: Vec<serde_json::Value> = records
        .iter()
        .filter_map(|r| serde_json::from_slice(&r.value).ok())
        .collect();
    let report = allocator.repair(&services);
    for problem in &report.problems {
        tracing::warn!(problem = %problem, "service allocation repair");
    }
    tracing::info!(
        services = services.len(),
        cluster_ips = report.ips,
        node_ports = report.ports,
        range = %allocator.cidr(),
        "service allocations rebuilt"
    );
    Ok(())
}

/// The address the `kubernetes` Service's endpoints name: the flag, else the bind address
/// unless unspecified, else the source address of the default route (as upstream picks
/// it), else loopback.
pub async fn advertise_address(flag: Option<IpAddr>, bind: IpAddr) -> IpAddr {
    if let Some(ip) = flag {
        return ip;
    }
    if !bind.is_unspecified() {
        return bind;
    }
    default_route_source()
        .await
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The address this machine sends from towards the internet: "connecting" a UDP socket
/// makes the kernel pick a route and a source address, and sends nothing (so no `ip`
/// command is needed, which container images may lack).
async fn default_route_source() -> Option<IpAddr> {
    let socket = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .await
        .ok()?;
    socket.connect((Ipv4Addr::new(1, 1, 1, 1), 53)).await.ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// The `kubernetes` Service in `default` at the first address of the service range, port
/// 443 to the apiserver's `port`, with an Endpoints and an EndpointSlice naming `address`
/// (rewritten at every start, as upstream's endpoint reconciler does).
async fn publish_kubernetes_service(
    objects: &Objects,
    address: IpAddr,
    port: u16,
) -> Result<(), rkube_types::ApiError> {
    use serde_json::json;
    let lookup = |group: &str, version: &str, resource: &str| {
        registry::lookup(group, version, resource).ok_or_else(|| {
            rkube_types::ApiError::internal(format!("{resource} missing from the registry"))
        })
    };
    let opts = WriteOptions {
        field_manager: "rkube-apiserver".into(),
        ..Default::default()
    };
    let first = objects.services().cidr().first().to_string();
    let ports = json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]);
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": first, "ports": ports, "sessionAffinity": "None"},
    });
    let services = lookup("", "v1", "services")?;
    match objects.get(services, "default", "kubernetes").await {
        Err(e) if e.reason == Reason::NotFound => {
            let body = serde_json::to_vec(&service).unwrap_or_default();
            objects.create(services, "default", &body, &opts).await?;
            tracing::info!(cluster_ip = %first, "created the kubernetes service");
        }
        Err(e) => return Err(e),
        Ok(stored) => {
            let stored: serde_json::Value = serde_json::from_slice(&stored).unwrap_or_default();
            if stored["spec"]["ports"] != ports {
                let patch = json!({"spec": {"ports": ports}});
                objects
                    .patch(
                        services,
                        "default",
                        "kubernetes",
                        crate::objects::PatchKind::Merge,
                        &serde_json::to_vec(&patch).unwrap_or_default(),
                        crate::objects::Part::Main,
                        &opts,
                    )
                    .await?;
            }
        }
    }
    let endpoint_ports = json!([{"name": "https", "port": port, "protocol": "TCP"}]);
    let endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": address.to_string()}], "ports": endpoint_ports}],
    });
    put(objects, lookup("", "v1", "endpoints")?, &endpoints, &opts).await?;
    let family = if address.is_ipv4() { "IPv4" } else { "IPv6" };
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": family,
        "endpoints": [{"addresses": [address.to_string()], "conditions": {"ready": true}}],
        "ports": endpoint_ports,
    });
    put(
        objects,
        lookup("discovery.k8s.io", "v1", "endpointslices")?,
        &slice,
        &opts,
    )
    .await
}

/// Creates `body` in `default`, or replaces what is stored under its name.
async fn put(
    objects: &Objects,
    info: &'static rkube_types::ResourceInfo,
    body: &serde_json::Value,
    opts: &WriteOptions,
) -> Result<(), rkube_types::ApiError> {
    let name = body["metadata"]["name"].as_str().unwrap_or_default();
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    match objects.create(info, "default", &bytes, opts).await {
        Err(e) if e.reason == Reason::AlreadyExists => objects
            .update(
                info,
                "default",
                name,
                &bytes,
                crate::objects::Part::Main,
                opts,
            )
            .await
            .map(|_| ()),
        other => other.map(|_| ()),
    }
}

/// Creates the cluster-scoped object `body` (a `group`/`resource` named `name`) unless it
/// exists.
async fn create_if_absent(
    objects: &Objects,
    group: &str,
    resource: &str,
    name: &str,
    body: &serde_json::Value,
) -> Result<(), StartError> {
    let Some(info) = registry::lookup(group, "v1", resource) else {
        return Ok(());
    };
    let body = serde_json::to_vec(body).unwrap_or_default();
    match objects
        .create(info, "", &body, &WriteOptions::default())
        .await
    {
        Ok(_) => tracing::info!(resource, name, "created system object"),
        Err(e) if e.reason == Reason::AlreadyExists => {}
        Err(source) => {
            return Err(StartError::Bootstrap {
                name: name.to_string(),
                source,
            });
        }
    }
    Ok(())
}

/// Compacts the store's change log every `interval`, keeping `retain` revisions and never
/// going past what the watch caches have applied.
async fn run_compactor(
    store: Arc<dyn Store>,
    caches: Arc<Caches>,
    interval: Duration,
    retain: u64,
) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        let floor = store
            .revision()
            .saturating_sub(retain)
            .min(caches.revision.get());
        if floor > store.compacted()
            && let Err(e) = store.compact(floor).await
        {
            tracing::warn!(error = %e, floor, "compaction failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_advertised_address_is_the_flag_else_the_bind_address_else_a_routed_one() {
        let flag: IpAddr = "192.0.2.9".parse().unwrap();
        let bind: IpAddr = "192.0.2.10".parse().unwrap();
        assert_eq!(advertise_address(Some(flag), bind).await, flag);
        assert_eq!(advertise_address(None, bind).await, bind);
        let picked = advertise_address(None, IpAddr::V4(Ipv4Addr::UNSPECIFIED)).await;
        assert!(!picked.is_unspecified(), "{picked}");
        // Where the machine has a default route, its source address; else loopback.
        match default_route_source().await {
            Some(source) => assert_eq!(picked, source),
            None => assert_eq!(picked, IpAddr::V4(Ipv4Addr::LOCALHOST)),
        }
    }
}
