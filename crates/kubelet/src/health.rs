//! The kubelet's plain-HTTP health endpoint (upstream's healthz port, 10248): `/healthz`,
//! `/readyz` (ready once the runtime answers and the node is registered) and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the health endpoint reports.
#[derive(Debug, Default)]
pub struct Health {
    /// The runtime answered and the node is registered.
    pub ready: AtomicBool,
    /// Pods with a worker.
    pub pod_workers: AtomicI64,
    /// Why the node is not ready yet.
    pub problem: std::sync::Mutex<String>,
}

impl Health {
    /// Records a problem that keeps the kubelet from being ready.
    pub fn set_problem(&self, problem: &str) {
        *self
            .problem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = problem.into();
    }

    fn render(&self) -> String {
        format!(
            "# HELP rkube_kubelet_ready Whether the runtime answers and the node is registered.\n\
             # TYPE rkube_kubelet_ready gauge\nrkube_kubelet_ready {}\n\
             # HELP rkube_kubelet_pod_workers Pods with a worker.\n\
             # TYPE rkube_kubelet_pod_workers gauge\nrkube_kubelet_pod_workers {}\n",
            u8::from(self.ready.load(Ordering::Relaxed)),
            self.pod_workers.load(Ordering::Relaxed)
        )
    }
}

/// Serves the endpoints on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let ready = health.clone();
    rkube_client::health::Endpoints {
        healthz: rkube_client::health::always(),
        readyz: Arc::new(move || match ready.ready.load(Ordering::Relaxed) {
            true => Ok(()),
            false => Err(ready
                .problem
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()),
        }),
        metrics: Arc::new(move || health.render()),
    }
    .serve(listener, stop)
    .await
}
