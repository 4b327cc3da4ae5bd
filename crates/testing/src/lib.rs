//! Test harness shared by rkube's crates: an in-process apiserver on `127.0.0.1:0`, an
//! apiserver started as a real process (for crash tests and benchmarks), and waiting helpers
//! that fail with what was expected and what was seen.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

pub use rkube_apiserver::Options;

/// An apiserver running inside the test process.
pub struct TestApiserver {
    running: Option<rkube_apiserver::Running>,
    client: rkube_client::Client,
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
        let client = rkube_client::Client::connect(&running.endpoint())
            .await
            .expect("client connects");
        TestApiserver {
            running: Some(running),
            client,
            _dir: dir,
        }
    }

    /// A client of this apiserver.
    pub fn client(&self) -> rkube_client::Client {
        self.client.clone()
    }

    /// The gRPC endpoint.
    pub fn endpoint(&self) -> String {
        self.running().endpoint()
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
        let mut child = tokio::process::Command::new(binary)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--port", "0", "--log-level", "warn"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .map_err(|_| anyhow::anyhow!("apiserver did not report its address within 60s"))??
            .ok_or_else(|| anyhow::anyhow!("apiserver exited before listening"))?;
        let addr = line
            .strip_prefix("listening on ")
            .ok_or_else(|| anyhow::anyhow!("unexpected first line {line:?}"))?
            .parse()?;
        Ok(ApiserverProcess {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// The gRPC endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
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

/// The `rkube-apiserver` binary built beside the running executable (tests and benches live
/// in the same target directory).
pub fn apiserver_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    // Test binaries live in target/<profile>/deps.
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("rkube-apiserver")
}

/// A plain HTTP/1.1 GET of `path` (health and metrics endpoints); returns the status code
/// and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await?;
    let mut raw = String::new();
    conn.read_to_string(&mut raw).await?;
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status line in {raw:?}"))?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// The value of an unlabelled metric in a Prometheus text exposition.
pub fn metric_value(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Polls `check` until it returns `Some`, or fails after `timeout` saying what was awaited
/// and what `check` last saw (via `describe`).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
