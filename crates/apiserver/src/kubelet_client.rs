//! The apiserver's client of kubelets, for the pod subresources served by the node
//! (`log`, `exec`): where a node's kubelet listens, and one HTTPS/1.1 connection per
//! request to it (HTTP/1.1 so that exec can upgrade the connection).
//!
//! The kubelet's serving certificate is not verified yet: kubelets make their own
//! self-signed one, and nothing signs kubelet certificates with the cluster CA yet. The
//! handshake signatures are still checked (the peer holds the key of the certificate it
//! shows), but anyone who can answer on a node's address can pose as its kubelet.
//! Verifying kubelet serving certificates comes with the cluster's security work.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rkube_types::{ApiError, Reason};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::Value;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The port of a kubelet whose Node does not say (`daemonEndpoints.kubeletEndpoint.port`).
pub const DEFAULT_KUBELET_PORT: u16 = 10250;
/// How long connecting to a kubelet (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a kubelet may take to answer with its response head.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a node's kubelet serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletEndpoint {
    /// The address (an IP or a host name) from the Node's `status.addresses`.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl KubeletEndpoint {
    /// The endpoint of the kubelet of the Node `node` (its JSON): the first InternalIP,
    /// else Hostname, else ExternalIP, InternalDNS, ExternalDNS; the port of
    /// `status.daemonEndpoints.kubeletEndpoint`, or 10250.
    pub fn of_node(node: &Value) -> Result<Self, ApiError> {
        let addresses = node["status"]["addresses"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let host = [
            "InternalIP",
            "Hostname",
            "ExternalIP",
            "InternalDNS",
            "ExternalDNS",
        ]
        .iter()
        .find_map(|kind| {
            addresses
                .iter()
                .filter(|a| a["type"] == *kind)
                .filter_map(|a| a["address"].as_str())
                .find(|a| !a.is_empty())
        })
        .ok_or_else(|| {
            let known: Vec<String> = addresses
                .iter()
                .map(|a| {
                    format!(
                        "{{{} {}}}",
                        a["type"].as_str().unwrap_or_default(),
                        a["address"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            ApiError::internal(format!(
                "no preferred addresses found; known addresses: [{}]",
                known.join(" ")
            ))
        })?;
        let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .unwrap_or(DEFAULT_KUBELET_PORT);
        Ok(KubeletEndpoint {
            host: host.to_string(),
            port,
        })
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The `https://` URL of `path_and_query` on this kubelet.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("https://{}{path_and_query}", self.authority())
    }
}

/// Accepts any certificate the kubelet shows (see the module doc), but checks that the
/// handshake was signed with its key.
#[derive(Debug)]
struct UnverifiedKubeletCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for UnverifiedKubeletCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS client configuration for kubelets, made once.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, ApiError> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(UnverifiedKubeletCert(provider)))
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
        .map_err(|e| ApiError::internal(format!("kubelet TLS client: {e}")))
}

/// Why a request to a kubelet failed before it answered.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// The TCP connection or the TLS handshake failed.
    #[error("dial {authority}: {source}")]
    Dial {
        /// `host:port`.
        authority: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("{0}")]
    Http(#[from] hyper::Error),
    /// The kubelet did not answer in time.
    #[error("the kubelet did not answer within {0:?}")]
    Timeout(Duration),
    /// The request could not be built (a bad address).
    #[error("invalid request: {0}")]
    Request(String),
}

/// Sends `request` (its URI a path and query) to the kubelet at `endpoint` over a new
/// HTTPS/1.1 connection, which serves upgrades; its response head, the body streaming.
pub async fn send(
    endpoint: &KubeletEndpoint,
    mut request: hyper::Request<axum::body::Body>,
) -> Result<hyper::Response<Incoming>, KubeletError> {
    let authority = endpoint.authority();
    let dial = |source| KubeletError::Dial {
        authority: authority.clone(),
        source,
    };
    let config = tls_config().map_err(|e| dial(std::io::Error::other(e.message)))?;
    let server_name = ServerName::try_from(endpoint.host.clone())
        .map_err(|e| KubeletError::Request(format!("kubelet address {:?}: {e}", endpoint.host)))?;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(dial)?;
        let _ = tcp.set_nodelay(true);
        tokio_rustls::TlsConnector::from(config)
            .connect(server_name, tcp)
            .await
            .map_err(dial)
    };
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| KubeletError::Timeout(CONNECT_TIMEOUT))??;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "kubelet connection ended with an error");
        }
    });
    if let Ok(host) = authority.parse() {
        request.headers_mut().insert(hyper::header::HOST, host);
    }
    tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| KubeletError::Timeout(RESPONSE_TIMEOUT))?
        .map_err(KubeletError::Http)
}

/// The Kubernetes error for a kubelet's non-2xx answer: its `Status` if it sent one, else
/// its text as the message (as upstream's apiserver reads a kubelet's errors).
pub fn error_from_response(code: u16, body: &Bytes) -> ApiError {
    if let Ok(status) = serde_json::from_slice::<Value>(body)
        && status["kind"] == "Status"
        && let Some(err) = ApiError::from_status(&status)
    {
        return err;
    }
    let text = String::from_utf8_lossy(body).trim().to_string();
    match code {
        400 => ApiError::bad_request(text),
        404 => ApiError::new(
            Reason::NotFound,
            if text.is_empty() {
                "the server could not find the requested resource".to_string()
            } else {
                text
            },
        ),
        500 => ApiError::internal(text),
        429 => ApiError::new(Reason::TooManyRequests, text),
        503 => ApiError::new(Reason::ServiceUnavailable, text),
        _ => ApiError::new(
            Reason::InternalError,
            if text.is_empty() {
                format!(
                    "the kubelet responded with the status code {code} but did not return more information"
                )
            } else {
                text
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_endpoint_prefers_internal_ip_and_the_node_port() {
        let node = json!({"status": {
            "addresses": [
                {"type": "Hostname", "address": "node-a"},
                {"type": "InternalIP", "address": "10.0.0.5"},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10260}},
        }});
        let e = KubeletEndpoint::of_node(&node).expect("endpoint");
        assert_eq!(e.url("/healthz"), "https://10.0.0.5:10260/healthz");
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "node-a"}]}});
        assert_eq!(
            KubeletEndpoint::of_node(&node)
                .expect("endpoint")
                .authority(),
            "node-a:10250"
        );
        let node = json!({"status": {"addresses": [{"type": "InternalIP", "address": "fd00::5"}]}});
        assert_eq!(
            KubeletEndpoint::of_node(&node)
                .expect("endpoint")
                .authority(),
            "[fd00::5]:10250"
        );
        let err = KubeletEndpoint::of_node(&json!({"status": {}})).expect_err("no address");
        assert_eq!(err.code(), 500);
        assert!(
            err.message.contains("no preferred addresses found"),
            "{err}"
        );
    }

    #[test]
    fn kubelet_errors_keep_their_text_and_code() {
        let e = error_from_response(400, &Bytes::from_static(b"container \"c\" is terminated"));
        assert_eq!(
            (e.code(), e.message.as_str()),
            (400, "container \"c\" is terminated")
        );
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "container not found (\"c\")", "reason": "NotFound", "code": 404});
        let e = error_from_response(404, &Bytes::from(status.to_string()));
        assert_eq!(
            (e.code(), e.message.as_str()),
            (404, "container not found (\"c\")")
        );
        assert_eq!(error_from_response(502, &Bytes::new()).code(), 500);
    }
}
