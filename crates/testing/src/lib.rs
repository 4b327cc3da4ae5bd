//! Test harness shared by rkube's crates: an in-process apiserver on `127.0.0.1:0`, an
//! apiserver started as a real process (for crash tests and benchmarks), and waiting helpers
//! that fail with what was expected and what was seen.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

pub mod cluster;
pub mod fake_nodes;
pub mod kubectl;

pub use cluster::{Cluster, ClusterOptions};
pub use fake_nodes::FakeNodes;
pub use kubectl::Kubectl;

pub use rkube_apiserver::Options;

/// An apiserver running inside the test process.
pub struct TestApiserver {
    running: Option<rkube_apiserver::Running>,
    client: rkube_client::Client,
    config: rkube_client::ClientConfig,
    _dir: Option<tempfile::TempDir>,
}

impl TestApiserver {
    /// An apiserver with an in-memory store.
    pub async fn start() -> Self {
        Self::start_with(Options::default(), false).await
    }

    /// An apiserver with a sled store in a temporary directory.
    pub async fn start_sled() -> Self {
        Self::start_with(Options::default(), true).await
    }

    /// An apiserver with `options` (the port and data dir are chosen here).
    pub async fn start_with(mut options: Options, sled: bool) -> Self {
        let dir = if sled {
            let dir = tempfile::tempdir().expect("temp dir");
            options.data_dir = Some(dir.path().to_path_buf());
            Some(dir)
        } else {
            options.data_dir = None;
            None
        };
        options.port = 0;
        options.shutdown_grace = Duration::from_secs(2);
        let running = rkube_apiserver::start(options)
            .await
            .expect("apiserver starts");
        let config = rkube_client::ClientConfig::new(
            &running.endpoint(),
            Some(running.tls.ca_pem.clone()),
            running
                .tls
                .admin_cert_pem
                .clone()
                .zip(running.tls.admin_key_pem.clone()),
        );
        let client = rkube_client::Client::connect_with(&config)
            .await
            .expect("client connects");
        TestApiserver {
            running: Some(running),
            client,
            config,
            _dir: dir,
        }
    }

    /// A client of this apiserver.
    pub fn client(&self) -> rkube_client::Client {
        self.client.clone()
    }

    /// The endpoint (`https://127.0.0.1:port`).
    pub fn endpoint(&self) -> String {
        self.running().endpoint()
    }

    /// A client on a connection of its own.
    pub async fn new_client(&self) -> rkube_client::Client {
        rkube_client::Client::connect_with(&self.config)
            .await
            .expect("client connects")
    }

    /// A raw gRPC client (over the same TLS channel), for requests the typed API cannot
    /// make (malformed bodies, ...).
    pub fn grpc(&self) -> rkube_rpc::ResourcesClient<tonic::transport::Channel> {
        self.client.rpc()
    }

    /// The running server.
    pub fn running(&self) -> &rkube_apiserver::Running {
        self.running.as_ref().expect("running until shutdown")
    }

    /// Stops the server gracefully.
    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

/// An `rkube-apiserver` process.
pub struct ApiserverProcess {
    child: tokio::process::Child,
    /// The address it listens on.
    pub addr: std::net::SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
}

impl ApiserverProcess {
    /// Starts `binary` on `data_dir`, on a free port, with `extra` flags; returns once it
    /// listens.
    pub async fn spawn(binary: &Path, data_dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::spawn_on_port(binary, data_dir, 0, extra).await
    }

    /// Starts `binary` on `data_dir` listening on `port` (0: a free one), with `extra`
    /// flags; returns once it listens. Restarting on the port and data dir of a stopped
    /// apiserver brings back the same endpoint, CA and kubeconfig, so clients and daemons
    /// of the old process can reconnect without being told anything.
    pub async fn spawn_on_port(
        binary: &Path,
        data_dir: &Path,
        port: u16,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new(binary)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--port", &port.to_string(), "--log-level", "warn"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let addr = reported_address(&mut child, "apiserver", "listening on ").await?;
        Ok(ApiserverProcess {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// The endpoint.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The cluster CA the apiserver made in its data dir.
    pub fn ca_pem(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.data_dir.join("pki/ca.crt"))?)
    }

    /// The admin kubeconfig the apiserver wrote into its data dir.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }

    /// A client using the admin kubeconfig.
    pub async fn client(&self) -> anyhow::Result<rkube_client::Client> {
        let config = rkube_client::ClientConfig::from_kubeconfig(&self.kubeconfig())?;
        Ok(rkube_client::Client::connect_with(&config).await?)
    }

    /// A raw gRPC client using the admin kubeconfig.
    pub async fn grpc(
        &self,
    ) -> anyhow::Result<rkube_rpc::ResourcesClient<tonic::transport::Channel>> {
        Ok(self.client().await?.rpc())
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// SIGTERM, and wait for a clean exit.
    pub async fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await?;
        }
        Ok(tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??)
    }
}

/// The address a daemon prints as the first line of its stdout (`{prefix}ADDR`), waited
/// for up to 60 s.
async fn reported_address(
    child: &mut tokio::process::Child,
    daemon: &str,
    prefix: &str,
) -> anyhow::Result<std::net::SocketAddr> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .map_err(|_| anyhow::anyhow!("{daemon} did not report its address within 60s"))??
        .ok_or_else(|| anyhow::anyhow!("{daemon} exited before reporting its address"))?;
    Ok(line
        .strip_prefix(prefix)
        .ok_or_else(|| anyhow::anyhow!("unexpected first line {line:?}"))?
        .parse()?)
}

/// The `rkube-apiserver` binary built beside the running executable (tests and benches live
/// in the same target directory).
pub fn apiserver_binary() -> PathBuf {
    sibling_binary("rkube-apiserver")
}

/// The binary `name` built beside the running executable.
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    // Test binaries live in target/<profile>/deps.
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

/// A daemon process (`rkube-scheduler`, `rkube-controller-manager`) that serves
/// `/healthz` and `/metrics` and prints `serving health and metrics on ADDR` first; killed
/// when dropped.
pub struct DaemonProcess {
    child: tokio::process::Child,
    /// Where it serves `/healthz` and `/metrics`.
    pub http_addr: std::net::SocketAddr,
}

impl DaemonProcess {
    /// Starts `binary` with `kubeconfig`, its HTTP endpoints on a free port, and `extra`
    /// flags; returns once it serves them.
    pub async fn spawn(binary: &Path, kubeconfig: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new(binary)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--bind-address", "127.0.0.1:0"])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let http_addr =
            reported_address(&mut child, "daemon", "serving health and metrics on ").await?;
        Ok(DaemonProcess { child, http_addr })
    }

    /// The body of `GET path` on its HTTP endpoint.
    pub async fn http_get(&self, path: &str) -> anyhow::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(self.http_addr).await?;
        conn.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut response = String::new();
        conn.read_to_string(&mut response).await?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("malformed response"))?;
        if !head.starts_with("HTTP/1.1 200") {
            anyhow::bail!("GET {path}: {head}");
        }
        Ok(body.to_string())
    }

    /// SIGKILL, and wait for the process to be gone.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// One keep-alive HTTPS/1.1 connection, for REST requests in tests and benchmarks.
pub struct HttpsConn {
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    addr: std::net::SocketAddr,
    buf: Vec<u8>,
}

impl HttpsConn {
    /// Connects to `addr`, trusting `ca_pem`, presenting `identity` (PEM cert, key) if given.
    pub async fn connect(
        addr: std::net::SocketAddr,
        ca_pem: &str,
        identity: Option<(&str, &str)>,
    ) -> anyhow::Result<Self> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert?)?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((cert, key)) => builder.with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>()?,
                PrivateKeyDer::from_pem_slice(key.as_bytes())?,
            )?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let stream = connector
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await?;
        Ok(HttpsConn {
            stream,
            addr,
            buf: Vec::new(),
        })
    }

    /// Sends one request and reads its response (Content-Length bodies): status and body.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        self.stream.write_all(head.as_bytes()).await?;
        self.stream.write_all(body).await?;
        self.stream.flush().await?;
        let header_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "connection closed before the response headers");
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&self.buf[..header_end]).into_owned();
        let code: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no status line in {head:?}"))?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .ok_or_else(|| anyhow::anyhow!("no content-length in {head:?}"))?;
        while self.buf.len() < header_end + length {
            let mut chunk = [0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "connection closed inside the response body");
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let body = self.buf[header_end..header_end + length].to_vec();
        self.buf.drain(..header_end + length);
        Ok((code, body))
    }
}

/// An HTTPS GET of `path` (health and metrics endpoints), trusting `ca_pem`; returns the
/// status code and the body.
pub async fn https_get(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    path: &str,
) -> anyhow::Result<(u16, String)> {
    let mut conn = HttpsConn::connect(addr, ca_pem, None).await?;
    let (code, body) = conn.request("GET", path, &[], &[]).await?;
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

/// The value of an unlabelled metric in a Prometheus text exposition.
pub fn metric_value(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Polls `check` until it returns `Ok`, or fails after `timeout` saying what was awaited
/// and what `check` last saw (its last `Err`).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    match try_eventually(what, timeout, check).await {
        Ok(value) => value,
        Err(e) => panic!("{e}"),
    }
}

/// [`eventually`] that returns the timeout as an error (saying what was awaited and what
/// `check` last saw) instead of panicking, so the caller can add what it knows.
pub async fn try_eventually<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(value) => return Ok(value),
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "timed out after {timeout:?} waiting for {what}; last seen: {last}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Where the pods of `namespace` stand, for a failed wait on a real node to print: `node`'s
/// podCIDR, taints and conditions; each pod's phase, node, the scheduler's last word and its
/// containers' states; and the namespace's latest events.
pub async fn where_pods_stand(
    client: &rkube_client::Client,
    namespace: &str,
    node: &str,
) -> String {
    use k8s_openapi::api::core::v1::{Event, Node, Pod};
    use rkube_client::Api;
    use serde_json::Value;

    let mut out = String::new();
    match Api::<Node>::all(client.clone()).get(node).await {
        Ok(n) => {
            let n = serde_json::to_value(n).unwrap_or_default();
            let conditions: Vec<String> = n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| format!("{}={}", c["type"], c["status"]))
                .collect();
            out.push_str(&format!(
                "node {node}: podCIDR {}, taints {}, conditions {conditions:?}\n",
                n["spec"]["podCIDR"], n["spec"]["taints"]
            ));
        }
        Err(e) => out.push_str(&format!("node {node}: {e}\n")),
    }
    match Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&Default::default())
        .await
    {
        Ok(list) => {
            for p in &list.items {
                let v = serde_json::to_value(p).unwrap_or_default();
                let scheduled = v["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["type"] == "PodScheduled")
                    .map(|c| format!("{} {} {}", c["status"], c["reason"], c["message"]))
                    .unwrap_or_default();
                let containers: Vec<String> = v["status"]["containerStatuses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| format!("{}: ready={} {}", c["name"], c["ready"], c["state"]))
                    .collect();
                out.push_str(&format!(
                    "pod {}: {} on {} (scheduled: {scheduled}) {containers:?}\n",
                    v["metadata"]["name"], v["status"]["phase"], v["spec"]["nodeName"]
                ));
            }
        }
        Err(e) => out.push_str(&format!("pods: {e}\n")),
    }
    match Api::<Event>::namespaced(client.clone(), namespace)
        .list(&Default::default())
        .await
    {
        Ok(list) => {
            let mut events: Vec<Value> = list
                .items
                .iter()
                .map(|e| serde_json::to_value(e).unwrap_or_default())
                .collect();
            let time = |e: &Value| {
                e["lastTimestamp"]
                    .as_str()
                    .or(e["eventTime"].as_str())
                    .unwrap_or("")
                    .to_string()
            };
            events.sort_by_key(time);
            for e in &events[events.len().saturating_sub(20)..] {
                out.push_str(&format!(
                    "event {} {} {}/{}: {}\n",
                    time(e),
                    e["reason"],
                    e["involvedObject"]["kind"],
                    e["involvedObject"]["name"],
                    e["message"]
                ));
            }
        }
        Err(e) => out.push_str(&format!("events: {e}\n")),
    }
    out
}
