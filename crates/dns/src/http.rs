//! The HTTP endpoints: `/healthz` (the process is up), `/readyz` (the caches have listed and
//! the cluster zone is being served) and `/metrics` (Prometheus text).

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::zone::ZoneReader;

/// Serves the endpoints on `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    zone: ZoneReader,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let synced = zone.is_synced();
                async move {
                    if synced {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
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
        .with_graceful_shutdown(async move { crate::stopped(&mut stop).await })
        .await
}
