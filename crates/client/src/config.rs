//! Where the apiserver is and how to trust it and be trusted: the endpoint, the CA and the
//! client certificate, from values or from a kubeconfig file.

use crate::error::{Error, Result};
use base64::Engine;
use serde::Deserialize;
use std::path::Path;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Connection settings of a [`Client`](crate::Client).
#[derive(Clone, Default)]
pub struct ClientConfig {
    /// `https://host:port` (or `http://` for a server without TLS).
    pub endpoint: String,
    /// PEM of the CA that signed the server's certificate.
    pub ca_pem: Option<String>,
    /// PEM client certificate and key.
    pub identity: Option<(String, String)>,
    /// Namespace for [`Api::default_namespaced`](crate::Api::default_namespaced).
    pub namespace: Option<String>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoint", &self.endpoint)
            .field("ca", &self.ca_pem.is_some())
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(rename = "current-context", default)]
    current_context: String,
    #[serde(default)]
    clusters: Vec<Named<Cluster>>,
    #[serde(default)]
    contexts: Vec<Named<Context>>,
    #[serde(default)]
    users: Vec<Named<User>>,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "context", alias = "user")]
    value: T,
}

#[derive(Deserialize)]
struct Cluster {
    server: String,
    #[serde(rename = "certificate-authority-data", default)]
    ca_data: Option<String>,
    #[serde(rename = "certificate-authority", default)]
    ca_file: Option<String>,
}

#[derive(Deserialize)]
struct Context {
    cluster: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Deserialize, Default)]
struct User {
    #[serde(rename = "client-certificate-data", default)]
    cert_data: Option<String>,
    #[serde(rename = "client-key-data", default)]
    key_data: Option<String>,
    #[serde(rename = "client-certificate", default)]
    cert_file: Option<String>,
    #[serde(rename = "client-key", default)]
    key_file: Option<String>,
}

fn config_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Config(format!("{}: {message}", path.display()))
}

impl ClientConfig {
    /// Settings for `endpoint` trusting `ca_pem`, presenting `identity` if given.
    pub fn new(endpoint: &str, ca_pem: Option<String>, identity: Option<(String, String)>) -> Self {
        ClientConfig {
            endpoint: endpoint.to_string(),
            ca_pem,
            identity,
            namespace: None,
        }
    }

    /// Reads the current context of a kubeconfig file, as kubectl does (inline `-data`
    /// fields or file paths relative to the kubeconfig).
    pub fn from_kubeconfig(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| config_error(path, e))?;
        let kc: Kubeconfig = serde_norway::from_str(&text).map_err(|e| config_error(path, e))?;
        let context = kc
            .contexts
            .iter()
            .find(|c| c.name == kc.current_context)
            .or(kc.contexts.first())
            .ok_or_else(|| config_error(path, "no context"))?;
        let cluster = kc
            .clusters
            .iter()
            .find(|c| c.name == context.value.cluster)
            .ok_or_else(|| config_error(path, format!("no cluster {:?}", context.value.cluster)))?;
        let user = kc.users.iter().find(|u| u.name == context.value.user);
        let dir = path.parent().unwrap_or(Path::new("."));
        let load = |data: &Option<String>, file: &Option<String>| -> Result<Option<String>> {
            if let Some(data) = data {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|e| config_error(path, e))?;
                return String::from_utf8(raw)
                    .map(Some)
                    .map_err(|e| config_error(path, e));
            }
            if let Some(file) = file {
                return std::fs::read_to_string(dir.join(file))
                    .map(Some)
                    .map_err(|e| config_error(path, format!("{file}: {e}")));
            }
            Ok(None)
        };
        let ca_pem = load(&cluster.value.ca_data, &cluster.value.ca_file)?;
        let identity = match user {
            Some(u) => match (
                load(&u.value.cert_data, &u.value.cert_file)?,
                load(&u.value.key_data, &u.value.key_file)?,
            ) {
                (Some(c), Some(k)) => Some((c, k)),
                _ => None,
            },
            None => None,
        };
        Ok(ClientConfig {
            endpoint: cluster.value.server.clone(),
            ca_pem,
            identity,
            namespace: context.value.namespace.clone(),
        })
    }

    /// Applies the TLS settings to `endpoint`.
    pub(crate) fn apply_tls(&self, endpoint: Endpoint) -> Result<Endpoint> {
        if !self.endpoint.starts_with("https://") {
            return Ok(endpoint);
        }
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &self.ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Ok(endpoint.tls_config(tls)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inline_kubeconfig() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: {}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n    namespace: team\ncurrent-context: x\nusers:\n- name: u\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64("CA"),
            b64("CERT"),
            b64("KEY")
        );
        let dir = std::env::temp_dir().join(format!("rkube-kc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("kubeconfig");
        std::fs::write(&path, text).expect("write");
        let cfg = ClientConfig::from_kubeconfig(&path).expect("parses");
        assert_eq!(cfg.endpoint, "https://127.0.0.1:6443");
        assert_eq!(cfg.ca_pem.as_deref(), Some("CA"));
        assert_eq!(cfg.identity, Some(("CERT".into(), "KEY".into())));
        assert_eq!(cfg.namespace.as_deref(), Some("team"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_kubeconfig_without_contexts_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("rkube-kc-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("kubeconfig");
        std::fs::write(&path, "apiVersion: v1\nkind: Config\n").expect("write");
        let err = ClientConfig::from_kubeconfig(&path).expect_err("no context");
        assert!(err.to_string().contains("no context"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
