//! The daemon around the controllers: building them, starting the shared informers, and the
//! HTTP endpoints (`/healthz`, `/readyz`, `/metrics`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::context::Context;
use crate::controllers::Descriptor;
use crate::metrics::Metrics;

/// How often the wait for the first lists reports the informers still listing.
const UNSYNCED_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

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
    let waiting_since = tokio::time::Instant::now();
    let mut last_report = waiting_since;
    while !ctx.informers.all_synced() {
        tokio::select! {
            () = crate::stopped(&mut stop) => return,
            _ = tick.tick() => {}
        }
        // An informer that cannot list (a resource the apiserver refuses, say) holds every
        // controller back; say which, rather than waiting in silence.
        if last_report.elapsed() >= UNSYNCED_REPORT_EVERY {
            last_report = tokio::time::Instant::now();
            warn!(
                waited_s = waiting_since.elapsed().as_secs(),
                kinds = ?ctx.informers.unsynced(),
                "still waiting for informers to list"
            );
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
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    rkube_client::health::Endpoints {
        healthz: rkube_client::health::always(),
        readyz: Arc::new(move || match syncing.load(Ordering::Relaxed) {
            true => Err("informers not synced".into()),
            false => Ok(()),
        }),
        metrics: Arc::new(move || metrics.render()),
    }
    .serve(listener, stop)
    .await
}

/// Binds the HTTP endpoints' listener.
pub async fn bind_http(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
