//! The connection to an rkube apiserver's gRPC face.
//!
//! A [`Client`] is a cheap, cloneable handle on one HTTP/2 channel; every [`Api`](crate::Api)
//! built from it shares that channel. The channel reconnects by itself after a failure,
//! and HTTP/2 keep-alive pings make a dead server show up as an error on open watch streams
//! instead of a silent hang.

use std::sync::Arc;
use std::time::Duration;

use rkube_rpc::ResourcesClient;
use tonic::transport::{Channel, Endpoint};

use crate::config::ClientConfig;
use crate::error::{Error, Result};

/// How long to wait for a TCP connection before failing the call.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often to ping an idle connection, so a dead peer is noticed.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// How long a ping may go unanswered before the connection counts as dead.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle on the apiserver; clone it freely.
#[derive(Clone, Debug)]
pub struct Client {
    rpc: ResourcesClient<Channel>,
    default_namespace: Arc<str>,
}

impl Client {
    /// A client for the apiserver at `endpoint`, e.g. `http://127.0.0.1:6443` (a bare
    /// `host:port` means plain HTTP/2), connected now: fails with [`Error::Transport`] if
    /// the server cannot be reached. Later the channel reconnects by itself.
    pub async fn connect(endpoint: &str) -> Result<Client> {
        let endpoint = endpoint_for(endpoint)?;
        ensure_runtime()?;
        Ok(Client::from_channel(endpoint.connect().await?))
    }

    /// Like [`Client::connect`], but the connection is made on the first call, so this
    /// succeeds while the server is still down (daemons started before the apiserver).
    /// Must be called inside a Tokio runtime.
    pub fn connect_lazy(endpoint: &str) -> Result<Client> {
        let endpoint = endpoint_for(endpoint)?;
        ensure_runtime()?;
        Ok(Client::from_channel(endpoint.connect_lazy()))
    }

    /// A client for the apiserver `config` describes (TLS with its CA and client
    /// certificate), connected now.
    pub async fn connect_with(config: &ClientConfig) -> Result<Client> {
        let endpoint = config.apply_tls(endpoint_for(&config.endpoint)?)?;
        ensure_runtime()?;
        let client = Client::from_channel(endpoint.connect().await?);
        Ok(match &config.namespace {
            Some(ns) => client.with_default_namespace(ns),
            None => client,
        })
    }

    /// Like [`Client::connect_with`], connecting on the first call.
    pub fn connect_lazy_with(config: &ClientConfig) -> Result<Client> {
        let endpoint = config.apply_tls(endpoint_for(&config.endpoint)?)?;
        ensure_runtime()?;
        let client = Client::from_channel(endpoint.connect_lazy());
        Ok(match &config.namespace {
            Some(ns) => client.with_default_namespace(ns),
            None => client,
        })
    }

    /// A client over an existing channel (custom TLS, a unix socket, an in-process server).
    pub fn from_channel(channel: Channel) -> Client {
        let rpc = ResourcesClient::new(channel)
            .max_decoding_message_size(rkube_rpc::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(rkube_rpc::MAX_MESSAGE_BYTES);
        Client {
            rpc,
            default_namespace: Arc::from("default"),
        }
    }

    /// Sets the namespace [`Api::default_namespaced`](crate::Api::default_namespaced) uses
    /// (`default` unless changed).
    pub fn with_default_namespace(mut self, namespace: &str) -> Client {
        self.default_namespace = Arc::from(namespace);
        self
    }

    /// The namespace [`Api::default_namespaced`](crate::Api::default_namespaced) uses.
    pub fn default_namespace(&self) -> &str {
        &self.default_namespace
    }

    /// The generated gRPC client, for calls this crate does not wrap.
    pub fn rpc(&self) -> ResourcesClient<Channel> {
        self.rpc.clone()
    }
}

/// The endpoint for `address`, with the connection settings every client uses.
fn endpoint_for(address: &str) -> Result<Endpoint> {
    let uri = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    Ok(Endpoint::from_shared(uri)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

/// A channel spawns its connection task with `tokio::spawn`, which panics outside a runtime.
fn ensure_runtime() -> Result<()> {
    tokio::runtime::Handle::try_current()
        .map(|_| ())
        .map_err(|_| Error::NoRuntime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_outside_a_runtime_is_an_error_not_a_panic() {
        assert!(matches!(
            Client::connect_lazy("http://127.0.0.1:6443"),
            Err(Error::NoRuntime)
        ));
        let eager = futures::executor::block_on(Client::connect("http://127.0.0.1:6443"));
        assert!(matches!(eager, Err(Error::NoRuntime)));
    }

    #[test]
    fn connect_rejects_a_bad_address() {
        assert!(matches!(
            Client::connect_lazy("http://bad host:6443"),
            Err(Error::Transport(_))
        ));
    }

    #[tokio::test]
    async fn eager_connect_fails_without_a_server() {
        let err = Client::connect("127.0.0.1:1")
            .await
            .expect_err("nothing listens on port 1");
        assert!(matches!(err, Error::Transport(_)), "{err}");
    }

    #[tokio::test]
    async fn connect_lazy_succeeds_without_a_server() {
        let client = Client::connect_lazy("127.0.0.1:1").expect("lazy connect never fails");
        assert_eq!(client.default_namespace(), "default");
        let client = client.with_default_namespace("kube-system");
        assert_eq!(client.default_namespace(), "kube-system");
    }
}
