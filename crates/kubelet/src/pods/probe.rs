//! Probes (liveness, readiness, startup) and lifecycle hooks (postStart, preStop): exec
//! through the runtime, httpGet and tcpSocket against the pod's IP, sleep. A prober is one
//! task per probe of a running container instance; it records results in [`ProbeState`]
//! and pokes the pod worker when one changes.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::api::core::v1::{
    ExecAction, HTTPGetAction, LifecycleHandler, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::runtime::Runtime;

/// What a probe or hook found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It passed.
    Success,
    /// It failed, with a message for events and status.
    Failure(String),
}

/// Where httpGet/tcpSocket actions connect when they name no host.
#[derive(Debug, Clone)]
pub struct Target {
    /// The pod's IP.
    pub pod_ip: String,
    /// True for hollow nodes: network actions succeed without connecting.
    pub simulated: bool,
}

fn port_number(port: &IntOrString, c: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

async fn exec<R: Runtime>(runtime: &R, id: &str, a: &ExecAction, timeout: Duration) -> Outcome {
    let cmd = a.command.clone().unwrap_or_default();
    match runtime.exec_sync(id, cmd, timeout).await {
        Ok(r) if r.exit_code == 0 => Outcome::Success,
        Ok(r) => Outcome::Failure(format!(
            "command exited with {}: {}",
            r.exit_code,
            String::from_utf8_lossy(&r.stdout).trim()
        )),
        Err(e) => Outcome::Failure(e.message()),
    }
}

async fn http_get(a: &HTTPGetAction, c: &Container, target: &Target, timeout: Duration) -> Outcome {
    if target.simulated {
        return Outcome::Success;
    }
    let Some(port) = port_number(&a.port, c) else {
        return Outcome::Failure(format!("invalid port {:?}", a.port));
    };
    let host = a.host.clone().unwrap_or_else(|| target.pod_ip.clone());
    let path = a.path.clone().unwrap_or_else(|| "/".into());
    if a.scheme.as_deref() == Some("HTTPS") {
        // A TLS probe needs a client that skips verification; until then an HTTPS probe
        // checks that the port accepts connections.
        return tcp(&host, port, timeout).await;
    }
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\nConnection: close\r\n"
        );
        for h in a.http_headers.iter().flatten() {
            req.push_str(&format!("{}: {}\r\n", h.name, h.value));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = [0u8; 64];
        let mut n = 0;
        while n < 12 {
            let k = s.read(&mut buf[n..]).await?;
            if k == 0 {
                break;
            }
            n += k;
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Outcome::Failure(format!(
            "Get \"http://{host}:{port}{path}\": context deadline exceeded"
        )),
        Ok(Err(e)) => Outcome::Failure(format!("Get \"http://{host}:{port}{path}\": {e}")),
        Ok(Ok(head)) => {
            let code: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            if (200..400).contains(&code) {
                Outcome::Success
            } else {
                Outcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
            }
        }
    }
}

async fn tcp(host: &str, port: u16, timeout: Duration) -> Outcome {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Outcome::Success,
        Ok(Err(e)) => Outcome::Failure(format!("dial tcp {host}:{port}: {e}")),
        Err(_) => Outcome::Failure(format!("dial tcp {host}:{port}: i/o timeout")),
    }
}

async fn tcp_socket(
    a: &TCPSocketAction,
    c: &Container,
    target: &Target,
    timeout: Duration,
) -> Outcome {
    if target.simulated {
        return Outcome::Success;
    }
    let Some(port) = port_number(&a.port, c) else {
        return Outcome::Failure(format!("invalid port {:?}", a.port));
    };
    let host = a.host.clone().unwrap_or_else(|| target.pod_ip.clone());
    tcp(&host, port, timeout).await
}

/// Runs one probe once.
pub async fn run_probe<R: Runtime>(
    runtime: &R,
    container_id: &str,
    c: &Container,
    probe: &Probe,
    target: &Target,
) -> Outcome {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(a) = &probe.exec {
        exec(runtime, container_id, a, timeout).await
    } else if let Some(a) = &probe.http_get {
        http_get(a, c, target, timeout).await
    } else if let Some(a) = &probe.tcp_socket {
        tcp_socket(a, c, target, timeout).await
    } else if probe.grpc.is_some() {
        // gRPC health probes are not implemented yet; failing them would restart healthy
        // containers forever, so they pass (docs/kubelet.md says so).
        Outcome::Success
    } else {
        Outcome::Failure("probe has no handler (exec, httpGet, tcpSocket)".into())
    }
}

/// Runs a lifecycle hook within `budget`.
pub async fn run_hook<R: Runtime>(
    runtime: &R,
    container_id: &str,
    c: &Container,
    hook: &LifecycleHandler,
    target: &Target,
    budget: Duration,
) -> Outcome {
    if let Some(a) = &hook.exec {
        exec(runtime, container_id, a, budget).await
    } else if let Some(a) = &hook.http_get {
        http_get(a, c, target, budget).await
    } else if let Some(a) = &hook.tcp_socket {
        tcp_socket(a, c, target, budget).await
    } else if let Some(s) = &hook.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(budget)).await;
        Outcome::Success
    } else {
        Outcome::Failure("hook has no handler".into())
    }
}

/// The probe results of one container instance.
#[derive(Debug, Clone, Default)]
pub struct ProbeState {
    /// The startup probe passed (or there is none).
    pub started: bool,
    /// The readiness probe passes (or there is none and the container started).
    pub ready: bool,
    /// The liveness or startup probe failed past its threshold: restart the container.
    pub restart: Option<String>,
}

/// Probers of one container instance; dropping it stops them.
pub struct Probers {
    /// The container instance probed.
    pub container_id: String,
    state: Arc<Mutex<ProbeState>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Probers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Which {
    Startup,
    Liveness,
    Readiness,
}

impl Probers {
    /// Starts the probes of container `c` running as `container_id`.
    pub fn start<R: Runtime>(
        runtime: R,
        container_id: &str,
        started_at: i64,
        c: &Container,
        target: Target,
        poke: Arc<Notify>,
    ) -> Self {
        let state = Arc::new(Mutex::new(ProbeState {
            started: c.startup_probe.is_none(),
            ready: c.readiness_probe.is_none() && c.startup_probe.is_none(),
            restart: None,
        }));
        let mut tasks = Vec::new();
        for (which, probe) in [
            (Which::Startup, &c.startup_probe),
            (Which::Liveness, &c.liveness_probe),
            (Which::Readiness, &c.readiness_probe),
        ] {
            let Some(probe) = probe.clone() else { continue };
            tasks.push(tokio::spawn(prober(
                runtime.clone(),
                container_id.to_string(),
                started_at,
                c.clone(),
                probe,
                which,
                target.clone(),
                state.clone(),
                poke.clone(),
            )));
        }
        Self {
            container_id: container_id.to_string(),
            state,
            tasks,
        }
    }

    /// The current results.
    pub fn state(&self) -> ProbeState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[allow(clippy::too_many_arguments)]
async fn prober<R: Runtime>(
    runtime: R,
    id: String,
    started_at: i64,
    c: Container,
    probe: Probe,
    which: Which,
    target: Target,
    state: Arc<Mutex<ProbeState>>,
    poke: Arc<Notify>,
) {
    let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
    let success_threshold = probe.success_threshold.unwrap_or(1).max(1);
    let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
    let lock = |s: &Arc<Mutex<ProbeState>>| -> ProbeState {
        s.lock().unwrap_or_else(PoisonError::into_inner).clone()
    };
    // The initial delay counts from the container's start, so a container adopted by a
    // restarted kubelet is not held back (nor reported unready) again.
    let initial = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let running_for = Duration::from_nanos((now - started_at).max(0) as u64);
    tokio::time::sleep(initial.saturating_sub(running_for)).await;
    let (mut successes, mut failures) = (0, 0);
    loop {
        if which != Which::Startup && !lock(&state).started {
            tokio::time::sleep(Duration::from_millis(500).min(period)).await;
            continue;
        }
        let outcome = run_probe(&runtime, &id, &c, &probe, &target).await;
        let changed = {
            let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
            match &outcome {
                Outcome::Success => {
                    successes += 1;
                    failures = 0;
                }
                Outcome::Failure(_) => {
                    failures += 1;
                    successes = 0;
                }
            }
            let before = s.clone();
            match (which, &outcome) {
                (Which::Startup, Outcome::Success) if successes >= success_threshold => {
                    s.started = true;
                    if c.readiness_probe.is_none() {
                        s.ready = true;
                    }
                }
                (Which::Readiness, Outcome::Success) if successes >= success_threshold => {
                    s.ready = true
                }
                (Which::Readiness, Outcome::Failure(_)) if failures >= failure_threshold => {
                    s.ready = false
                }
                (Which::Liveness | Which::Startup, Outcome::Failure(m))
                    if failures >= failure_threshold =>
                {
                    let kind = if which == Which::Startup {
                        "Startup"
                    } else {
                        "Liveness"
                    };
                    tracing::info!(container = %c.name, id, probe = kind, message = %m, "probe failed, container will be restarted");
                    s.restart = Some(format!(
                        "Container {} failed {} probe, will be restarted",
                        c.name,
                        kind.to_lowercase()
                    ));
                }
                _ => {}
            }
            before.started != s.started || before.ready != s.ready || before.restart != s.restart
        };
        if changed {
            poke.notify_one();
        }
        let s = lock(&state);
        if s.restart.is_some() || (which == Which::Startup && s.started) {
            return;
        }
        tokio::time::sleep(period).await;
    }
}
