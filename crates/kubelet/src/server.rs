//! The kubelet's HTTPS server (port 10250 by default), which the apiserver proxies
//! `kubectl logs` and `kubectl exec` to, with upstream's paths:
//!
//! - `GET /containerLogs/{namespace}/{pod}/{container}`: the container's log
//!   ([`logs`]: `follow`, `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`,
//!   `previous`, `limitBytes`);
//! - `GET|POST /exec/{namespace}/{pod}/{container}`: a command run in the container over a
//!   WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`) ([`exec`]);
//! - `GET /healthz`.
//!
//! Containers are found through the runtime by the labels the kubelet puts on them, so the
//! server needs nothing but a [`Runtime`].
//!
//! Nobody is authenticated yet: whoever reaches the port can read logs and run commands
//! (upstream's kubelet checks client certificates and asks the apiserver to authorize).
//! That, and the apiserver verifying this server's certificate (self-signed by
//! [`self_signed_tls`] for now), comes with the cluster's security work.

mod cri_log;
mod exec;
mod instances;
mod logs;

pub use cri_log::{CriLine, FormatOptions, LogFormatter, ParseError, Stream, parse_line};
pub use logs::LogQuery;

use crate::runtime::Runtime;
use axum::Router;
use axum::routing::{any, get};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

/// Log and exec streams open at once at most; past that, requests get 429.
pub const MAX_STREAMS: usize = 512;
/// How long shutdown waits for open connections before closing them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Open connections at most; further clients wait to be accepted.
const MAX_CONNECTIONS: usize = 1_024;

/// What the handlers share.
struct Inner<R> {
    runtime: R,
    /// Set when the server stops: follows and exec sessions end.
    stop: watch::Sender<bool>,
    /// One permit per open log or exec stream.
    streams: Arc<Semaphore>,
}

/// The handlers' state: cheap to clone.
struct Shared<R>(Arc<Inner<R>>);

impl<R> Clone for Shared<R> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<R> std::ops::Deref for Shared<R> {
    type Target = Inner<R>;
    fn deref(&self) -> &Inner<R> {
        &self.0
    }
}

impl<R> Inner<R> {
    /// A receiver that turns true when the server stops.
    fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }
}

/// The kubelet's HTTP API over a runtime: its routes, and a way to end its open streams.
pub struct KubeletServer<R: Runtime> {
    shared: Shared<R>,
}

impl<R: Runtime> KubeletServer<R> {
    /// A server for the containers of `runtime`.
    pub fn new(runtime: R) -> Self {
        let (stop, _) = watch::channel(false);
        KubeletServer {
            shared: Shared(Arc::new(Inner {
                runtime,
                stop,
                streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            })),
        }
    }

    /// The routes (plain HTTP; [`serve`] puts them behind TLS).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/containerLogs/{namespace}/{pod}/{container}",
                get(logs::container_logs::<R>),
            )
            .route("/exec/{namespace}/{pod}/{container}", any(exec::exec::<R>))
            .with_state(self.shared.clone())
    }

    /// Ends the open log follows and exec sessions (at shutdown).
    pub fn stop(&self) {
        self.shared.stop.send_replace(true);
    }
}

/// Serves the kubelet API of `runtime` over TLS on `listener` until `shutdown` completes;
/// then ends open streams and waits up to a few seconds for connections to finish.
pub async fn serve<R: Runtime>(
    runtime: R,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let server = KubeletServer::new(runtime);
    let router = server.router();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut shutdown = std::pin::pin!(shutdown);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(address = %addr, "kubelet server listening");
    }
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
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
            _ = &mut shutdown => break,
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
                        tracing::debug!(%peer, error = %e, "kubelet server TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "kubelet server TLS handshake timed out");
                        return;
                    }
                };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "kubelet server connection ended with an error");
            }
        });
    }
    drop(listener);
    server.stop();
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("kubelet server connections still open after the grace period; closing");
    }
    tracing::info!("kubelet server stopped");
    Ok(())
}

/// Why the serving certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Generating the key or certificate failed.
    #[error("generating the kubelet serving certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("kubelet TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A TLS configuration with a fresh self-signed certificate for `node_name`, `localhost`
/// and `ips` (as upstream's kubelet makes without `--tls-cert-file`), HTTP/1.1 only (exec
/// upgrades the connection).
pub fn self_signed_tls(
    node_name: &str,
    ips: &[IpAddr],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let mut names = vec!["localhost".to_string()];
    if !node_name.is_empty() && node_name != "localhost" {
        names.insert(0, node_name.to_string());
    }
    let mut params = CertificateParams::new(names)?;
    for ip in ips {
        if !ip.is_unspecified() && !params.subject_alt_names.contains(&SanType::IpAddress(*ip)) {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
    }
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{node_name}@rkube-kubelet"));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = jiff::Timestamp::now().as_second();
    params.not_before = rcgen::date_time_ymd(year_of(now - 86_400), 1, 1);
    params.not_after = rcgen::date_time_ymd(year_of(now) + 2, 1, 1);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The calendar year (UTC) of a Unix time.
fn year_of(seconds: i64) -> i32 {
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).year().into())
        .unwrap_or(2025)
}

#[cfg(test)]
mod tests;
