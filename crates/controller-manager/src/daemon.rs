//! The daemon around the controllers: building them, starting the shared informers, and the
//! HTTP endpoints (`/healthz`, `/readyz`, `/metrics`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::context::Context;
use crate::controllers::Descriptor;
use crate::metrics::Metrics;

/// Runs `controllers` until the context's stop signal: builds each (subscribing its
/// handlers), starts the informers they asked for, waits until every informer has listed
/// (clearing `syncing`), then runs their workers.
pub async fn run(ctx: Context, controllers: &[&Descriptor], syncing: Arc<AtomicBool>) {
    syncing.store(true, Ordering::Relaxed);
    let running: Vec<_> = controllers
        .iter()
        .map(|d| {
            info!(controller = d.name, "starting controller");
            (d.start)(&ctx)
        })
        .collect();
    let informers = ctx.informers.start(&ctx.client, &ctx.stop);
    let mut stop = ctx.stop.clone();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(20));
    while !ctx.informers.all_synced() {
        tokio::select! {
            () = crate::stopped(&mut stop) => return,
            _ = tick.tick() => {}
        }
    }
    info!("informers synced, running controllers");
    syncing.store(false, Ordering::Relaxed);
    futures::future::join_all(running).await;
    for informer in informers {
        informer.abort();
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `listener` until `stop`. `/readyz`
/// answers 503 while the leader's informers have not listed yet (`syncing`).
pub async fn serve_http(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    syncing: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let syncing = syncing.load(Ordering::Relaxed);
                async move {
                    if syncing {
                        (StatusCode::SERVICE_UNAVAILABLE, "informers not synced")
                    } else {
                        (StatusCode::OK, "ok")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        );
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            crate::stopped(&mut stop).await;
        })
        .await
}

/// Binds the HTTP endpoints' listener.
pub async fn bind_http(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
