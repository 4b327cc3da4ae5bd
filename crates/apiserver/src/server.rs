//! Starting and stopping the apiserver: the store, the watch caches and their tasks, the
//! bootstrap namespaces, and one listener serving gRPC and the HTTP endpoints.

use crate::caches::Caches;
use crate::grpc::GrpcService;
use crate::metrics::Metrics;
use crate::objects::{Objects, WriteOptions};
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

    /// The gRPC endpoint, e.g. `http://127.0.0.1:6443`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
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
    let mut tasks = vec![
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
    let objects = Objects::new(store, caches);
    bootstrap(&objects).await?;

    let addr = SocketAddr::new(options.bind_address, options.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let grpc = GrpcService::new(objects.clone(), metrics.clone(), shutdown_rx.clone());
    let router = router(grpc, metrics, objects.store().clone(), shutdown_rx.clone());
    let mut stop = shutdown_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    });
    tasks.shrink_to_fit();
    tracing::info!(address = %addr, "apiserver listening");
    Ok(Running {
        addr,
        objects,
        shutdown,
        server,
        tasks,
        grace: options.shutdown_grace,
    })
}

fn router(
    grpc: GrpcService,
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    shutdown: watch::Receiver<bool>,
) -> Router {
    let server = rkube_rpc::ResourcesServer::new(grpc)
        .max_decoding_message_size(rkube_rpc::MAX_MESSAGE_BYTES)
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

/// Creates the system namespaces that do not exist yet.
async fn bootstrap(objects: &Objects) -> Result<(), StartError> {
    let Some(info) = registry::lookup("", "v1", "namespaces") else {
        return Ok(());
    };
    for name in SYSTEM_NAMESPACES {
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name},
        });
        let body = serde_json::to_vec(&body).unwrap_or_default();
        match objects
            .create(info, "", &body, &WriteOptions::default())
            .await
        {
            Ok(_) => tracing::info!(namespace = name, "created system namespace"),
            Err(e) if e.reason == Reason::AlreadyExists => {}
            Err(source) => {
                return Err(StartError::Bootstrap {
                    name: name.to_string(),
                    source,
                });
            }
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
