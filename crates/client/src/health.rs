//! The HTTP endpoints every daemon serves beside its work, on a plain-HTTP listener of its
//! own: `/healthz` (the process can do its work), `/readyz` (it is ready to be relied on:
//! caches listed, first sync done) and `/metrics` (Prometheus text). Each daemon says what
//! its checks are; the serving is the same everywhere.

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A check: Ok, or why not (the 503's body).
pub type Check = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Renders the metrics in the Prometheus text format.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// What a daemon's endpoints answer.
#[derive(Clone)]
pub struct Endpoints {
    /// `/healthz`.
    pub healthz: Check,
    /// `/readyz`.
    pub readyz: Check,
    /// `/metrics`.
    pub metrics: Render,
}

/// A check that always passes: a process that answers at all is healthy.
pub fn always() -> Check {
    Arc::new(|| Ok(()))
}

fn answer(check: &Check) -> (StatusCode, String) {
    match check() {
        Ok(()) => (StatusCode::OK, "ok".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

impl Endpoints {
    /// The three routes.
    pub fn router(self) -> Router {
        let Endpoints {
            healthz,
            readyz,
            metrics,
        } = self;
        Router::new()
            .route(
                "/healthz",
                get(move || std::future::ready(answer(&healthz))),
            )
            .route("/readyz", get(move || std::future::ready(answer(&readyz))))
            .route(
                "/metrics",
                get(move || {
                    std::future::ready((
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        metrics(),
                    ))
                }),
            )
    }

    /// Serves the endpoints on `listener` until `stop` turns true (or its sender goes).
    pub async fn serve(
        self,
        listener: TcpListener,
        mut stop: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn checks_decide_the_status_and_metrics_are_rendered() {
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ready.clone();
        let endpoints = Endpoints {
            healthz: always(),
            readyz: Arc::new(move || {
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    Ok(())
                } else {
                    Err("caches not synced".into())
                }
            }),
            metrics: Arc::new(|| "up 1\n".to_string()),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop) = watch::channel(false);
        let server = tokio::spawn(endpoints.serve(listener, stop));
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.0 200"));
        let not_ready = get(addr, "/readyz").await;
        assert!(not_ready.starts_with("HTTP/1.0 503"), "{not_ready}");
        assert!(not_ready.ends_with("caches not synced"), "{not_ready}");
        ready.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.0 200"));
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.contains("text/plain; version=0.0.4"), "{metrics}");
        assert!(metrics.ends_with("up 1\n"), "{metrics}");
        stop_tx.send(true).unwrap();
        server.await.unwrap().unwrap();
    }
}
