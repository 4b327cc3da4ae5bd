//! The HTTP endpoints: `/healthz` (the process is up), `/readyz` (the caches have listed and
//! the cluster zone is being served) and `/metrics` (Prometheus text).

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::zone::ZoneReader;

/// Serves the endpoints on `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    zone: ZoneReader,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    rkube_client::health::Endpoints {
        healthz: rkube_client::health::always(),
        readyz: Arc::new(move || match zone.is_synced() {
            true => Ok(()),
            false => Err("caches not synced".into()),
        }),
        metrics: Arc::new(move || metrics.render()),
    }
    .serve(listener, stop)
    .await
}
