//! The kubelet's Node: what the machine offers (capacity, and allocatable after
//! `--kube-reserved`/`--system-reserved`), registration, the Lease in `kube-node-lease`
//! renewed every 10 s, and the node conditions, written only when they change (and at
//! least every five minutes, as upstream's `nodeStatusReportFrequency`).

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use rkube_client::{Api, Client, Patch};
use rkube_types::quantity::Quantity;
use serde_json::{Value, json};
use tokio::sync::watch;

/// How often the Lease is renewed (upstream: a quarter of its 40 s duration).
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
/// The Lease duration written into the Lease.
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// How often conditions are sampled.
pub const STATUS_CHECK: Duration = Duration::from_secs(10);
/// How often they are sampled while the node is not Ready (at start, before the CNI
/// configuration is loaded; upstream's fast node status updates), so it turns Ready within
/// a second of becoming able to run pods rather than ten.
pub const NOT_READY_CHECK: Duration = Duration::from_secs(1);
/// How often node status is written even without a change.
pub const STATUS_REPORT: Duration = Duration::from_secs(300);

/// What the machine offers and what it runs.
#[derive(Debug, Clone)]
pub struct MachineInfo {
    /// CPU cores.
    pub cpus: u64,
    /// Memory in bytes.
    pub memory: u64,
    /// The kubelet root directory's file system size in bytes.
    pub ephemeral_storage: u64,
    /// The most pods the kubelet runs (`--max-pods`).
    pub max_pods: u64,
    /// `uname -r`.
    pub kernel: String,
    /// `/etc/os-release` PRETTY_NAME.
    pub os_image: String,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// This boot's id.
    pub boot_id: String,
    /// `amd64`, `arm64`, ...
    pub arch: String,
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The Kubernetes name of the machine's architecture.
pub fn go_arch() -> String {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
    .to_string()
}

/// Total memory from `/proc/meminfo` and the like.
pub fn meminfo(field: &str) -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    info.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// Size and available bytes of the file system holding `path`, from `df`.
pub fn disk_usage(path: &std::path::Path) -> Option<(u64, u64)> {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=size,avail"])
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().nth(1)?;
    let mut fields = line.split_whitespace();
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

impl MachineInfo {
    /// Reads this machine.
    pub fn read(root_dir: &std::path::Path, max_pods: u64) -> Self {
        let os_image = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("PRETTY_NAME=")
                        .map(|v| v.trim_matches('"').to_string())
                })
            })
            .unwrap_or_else(|| "Linux".into());
        Self {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get() as u64)
                .unwrap_or(1),
            memory: meminfo("MemTotal").unwrap_or(0),
            ephemeral_storage: disk_usage(root_dir).map(|(size, _)| size).unwrap_or(0),
            max_pods,
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            os_image,
            machine_id: read_trim("/etc/machine-id"),
            boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
            arch: go_arch(),
        }
    }

    /// What a hollow node reports: a plausible machine that exists nowhere.
    pub fn hollow(cpus: u64, memory: u64, max_pods: u64) -> Self {
        Self {
            cpus,
            memory,
            ephemeral_storage: 100 << 30,
            max_pods,
            kernel: "hollow".into(),
            os_image: "rkube hollow node".into(),
            machine_id: String::new(),
            boot_id: String::new(),
            arch: go_arch(),
        }
    }

    /// Capacity as the Node reports it.
    pub fn capacity(&self) -> BTreeMap<String, Quantity> {
        BTreeMap::from([
            ("cpu".into(), Quantity::from_value(self.cpus as i64)),
            ("memory".into(), Quantity::from_value(self.memory as i64)),
            (
                "ephemeral-storage".into(),
                Quantity::from_value(self.ephemeral_storage as i64),
            ),
            ("pods".into(), Quantity::from_value(self.max_pods as i64)),
        ])
    }
}

/// Parses `--kube-reserved`/`--system-reserved`: `cpu=100m,memory=256Mi`.
pub fn parse_reserved(s: &str) -> Result<BTreeMap<String, Quantity>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not resource=quantity (e.g. cpu=100m)"))?;
        if !matches!(k, "cpu" | "memory" | "ephemeral-storage" | "pid") {
            return Err(format!(
                "unknown resource {k:?} (cpu, memory, ephemeral-storage or pid)"
            ));
        }
        let q = Quantity::parse(v).map_err(|e| format!("{k}={v}: {e}"))?;
        if q.is_negative() {
            return Err(format!("{k}={v}: must not be negative"));
        }
        out.insert(k.to_string(), q);
    }
    Ok(out)
}

/// Capacity minus the reservations, never below zero (upstream's allocatable; the hard
/// eviction threshold for memory, 100Mi, is subtracted too).
pub fn allocatable(
    capacity: &BTreeMap<String, Quantity>,
    reserved: &[&BTreeMap<String, Quantity>],
) -> BTreeMap<String, Quantity> {
    let mut out = capacity.clone();
    for (k, v) in out.iter_mut() {
        for r in reserved {
            if let Some(q) = r.get(k) {
                *v = v.checked_sub(q).unwrap_or_else(Quantity::zero);
            }
        }
        if k == "memory" {
            *v = v
                .checked_sub(&Quantity::from_value(100 << 20))
                .unwrap_or_else(Quantity::zero);
        }
        if v.is_negative() {
            *v = Quantity::zero();
        }
    }
    out
}

/// What the kubelet registers.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The node's name.
    pub name: String,
    /// Labels beyond the well-known ones (`--node-labels`).
    pub labels: BTreeMap<String, String>,
    /// The InternalIP.
    pub internal_ip: String,
    /// The kubelet's HTTPS port (0: none, as for hollow nodes).
    pub kubelet_port: u16,
    /// The machine.
    pub machine: MachineInfo,
    /// Allocatable resources.
    pub allocatable: BTreeMap<String, Quantity>,
    /// The runtime's `name://version`.
    pub runtime_version: String,
    /// Taints to register with (`--register-with-taints`).
    pub taints: Vec<Value>,
}

/// The pressure and readiness the node reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Conditions {
    /// Memory is short.
    pub memory_pressure: bool,
    /// The root file system is nearly full.
    pub disk_pressure: bool,
    /// Process ids are nearly exhausted.
    pub pid_pressure: bool,
    /// Why the node is not ready (the runtime or the network), if it is not.
    pub not_ready: Option<&'static str>,
}

impl Conditions {
    /// Samples this machine: memory available under 100Mi, root file system under 10 %
    /// free, or processes above 90 % of `pid_max`.
    pub fn sample(root_dir: &std::path::Path) -> Self {
        let memory_pressure = meminfo("MemAvailable").is_some_and(|a| a < 100 << 20);
        let disk_pressure =
            disk_usage(root_dir).is_some_and(|(size, avail)| size > 0 && avail * 10 < size);
        let pid_max: u64 = read_trim("/proc/sys/kernel/pid_max").parse().unwrap_or(0);
        let procs = std::fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .bytes()
                            .all(|b| b.is_ascii_digit())
                    })
                    .count() as u64
            })
            .unwrap_or(0);
        Self {
            memory_pressure,
            disk_pressure,
            pid_pressure: pid_max > 0 && procs * 10 > pid_max * 9,
            not_ready: None,
        }
    }

    fn to_json(self, now: &str, previous: Option<&Node>) -> Value {
        let old = |t: &str| -> Option<(String, String)> {
            previous?
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == t)
                .map(|c| {
                    (
                        c.status.clone(),
                        c.last_transition_time
                            .as_ref()
                            .map(|t| t.0.to_string())
                            .unwrap_or_default(),
                    )
                })
        };
        let cond = |t: &str, on: bool, reason: &str, message: &str| {
            let status = if on { "True" } else { "False" };
            let transition = match old(t) {
                Some((s, at)) if s == status && !at.is_empty() => at,
                _ => now.to_string(),
            };
            json!({"type": t, "status": status, "reason": reason, "message": message,
                   "lastHeartbeatTime": now, "lastTransitionTime": transition})
        };
        let pressure = |t: &str, on: bool, yes: &str, no: &str, what: &str| {
            if on {
                cond(t, true, yes, &format!("kubelet has {what} pressure"))
            } else {
                cond(t, false, no, &format!("kubelet has no {what} pressure"))
            }
        };
        json!([
            pressure(
                "MemoryPressure",
                self.memory_pressure,
                "KubeletHasInsufficientMemory",
                "KubeletHasSufficientMemory",
                "memory"
            ),
            pressure(
                "DiskPressure",
                self.disk_pressure,
                "KubeletHasDiskPressure",
                "KubeletHasNoDiskPressure",
                "disk"
            ),
            pressure(
                "PIDPressure",
                self.pid_pressure,
                "KubeletHasInsufficientPID",
                "KubeletHasSufficientPID",
                "PID"
            ),
            match self.not_ready {
                None => cond(
                    "Ready",
                    true,
                    "KubeletReady",
                    "kubelet is posting ready status"
                ),
                Some(why) => cond("Ready", false, "KubeletNotReady", why),
            },
        ])
    }
}

fn quantities(m: &BTreeMap<String, Quantity>) -> Value {
    m.iter()
        .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The version this kubelet reports.
pub const KUBELET_VERSION: &str = concat!("v1.32.0-rkube.", env!("CARGO_PKG_VERSION"));

/// Registers the Node (or takes over the existing one of the same name) and writes its
/// status; returns the Node as stored.
pub async fn register(
    client: &Client,
    spec: &NodeSpec,
    conditions: Conditions,
) -> rkube_client::Result<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut labels = spec.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), spec.name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), spec.machine.arch.clone());
    labels.insert("beta.kubernetes.io/os".into(), "linux".into());
    labels.insert("beta.kubernetes.io/arch".into(), spec.machine.arch.clone());
    let mut node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": spec.name, "labels": labels},
    });
    if !spec.taints.is_empty() {
        node["spec"] = json!({"taints": spec.taints});
    }
    let node: Node = serde_json::from_value(node).map_err(rkube_client::Error::Encode)?;
    let existing = match nodes.create(&node).await {
        Ok(n) => Some(n),
        Err(e) if e.is_already_exists() => {
            // Keep what others set (pod CIDR, taints), refresh our labels.
            nodes
                .patch(
                    &spec.name,
                    &Patch::Merge(json!({"metadata": {"labels": labels}})),
                )
                .await
                .ok()
        }
        Err(e) => return Err(e),
    };
    write_status(client, spec, conditions, existing.as_ref()).await
}

/// Writes the whole node status: capacity, allocatable, conditions, addresses, info.
pub async fn write_status(
    client: &Client,
    spec: &NodeSpec,
    conditions: Conditions,
    previous: Option<&Node>,
) -> rkube_client::Result<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = Timestamp::now().to_string();
    let m = &spec.machine;
    let status = json!({"status": {
        "capacity": quantities(&m.capacity()),
        "allocatable": quantities(&spec.allocatable),
        "conditions": conditions.to_json(&now, previous),
        "addresses": [
            {"type": "InternalIP", "address": spec.internal_ip},
            {"type": "Hostname", "address": spec.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": spec.kubelet_port}},
        "nodeInfo": {
            "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": KUBELET_VERSION,
            "containerRuntimeVersion": spec.runtime_version, "operatingSystem": "linux",
            "architecture": m.arch, "osImage": m.os_image, "kernelVersion": m.kernel,
            "machineID": m.machine_id, "systemUUID": m.machine_id, "bootID": m.boot_id,
        },
    }});
    nodes.patch_status(&spec.name, &Patch::Merge(status)).await
}

/// Renews (or creates) the node's Lease.
pub async fn renew_lease(client: &Client, node: &str, node_uid: &str) -> rkube_client::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let t = Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let patch = json!({"spec": {"renewTime": t, "holderIdentity": node,
                                "leaseDurationSeconds": LEASE_DURATION_SECONDS}});
    match leases.patch(node, &Patch::Merge(patch.clone())).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => {
            let mut lease = patch;
            lease["metadata"] = json!({"name": node, "namespace": "kube-node-lease",
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node,
                                     "uid": node_uid}]});
            let lease: Lease =
                serde_json::from_value(lease).map_err(rkube_client::Error::Encode)?;
            match leases.create(&lease).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_already_exists() => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Keeps the Lease fresh until `shutdown` turns true.
pub async fn run_lease(
    client: Client,
    node: String,
    node_uid: String,
    period: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = renew_lease(&client, &node, &node_uid).await {
            tracing::warn!(node, error = %e, "lease renewal failed");
        }
    }
}

/// Samples conditions every [`STATUS_CHECK`] with `sample` and writes node status when
/// they change, or every [`STATUS_REPORT`].
pub async fn run_status<F>(
    client: Client,
    spec: NodeSpec,
    mut last: Conditions,
    mut previous: Option<Node>,
    mut sample: F,
    mut shutdown: watch::Receiver<bool>,
) where
    F: AsyncFnMut() -> Conditions + Send,
{
    let mut tick = tokio::time::interval(STATUS_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written = tokio::time::Instant::now();
    loop {
        let not_ready = last.not_ready.is_some();
        tokio::select! {
            _ = tick.tick(), if !not_ready => {}
            _ = tokio::time::sleep(NOT_READY_CHECK), if not_ready => {}
            _ = shutdown.changed() => return,
        }
        let now = sample().await;
        if now == last && written.elapsed() < STATUS_REPORT {
            continue;
        }
        if now != last {
            tracing::info!(node = spec.name, conditions = ?now, "node conditions changed");
        }
        match write_status(&client, &spec, now, previous.as_ref()).await {
            Ok(node) => {
                last = now;
                written = tokio::time::Instant::now();
                previous = Some(node);
            }
            Err(e) => tracing::warn!(node = spec.name, error = %e, "node status update failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_flags_parse_and_subtract() {
        let kube = parse_reserved("cpu=500m,memory=1Gi").unwrap();
        let system = parse_reserved("memory=512Mi").unwrap();
        let cap = BTreeMap::from([
            ("cpu".to_string(), Quantity::parse("2").unwrap()),
            ("memory".to_string(), Quantity::parse("4Gi").unwrap()),
            ("pods".to_string(), Quantity::parse("110").unwrap()),
        ]);
        let alloc = allocatable(&cap, &[&kube, &system]);
        assert_eq!(alloc["cpu"], Quantity::parse("1500m").unwrap());
        // 4Gi - 1Gi - 512Mi - 100Mi (hard eviction threshold)
        assert_eq!(alloc["memory"], Quantity::parse("2460Mi").unwrap());
        assert_eq!(alloc["pods"], Quantity::parse("110").unwrap());
        assert!(parse_reserved("gpu=1").is_err());
        assert!(parse_reserved("cpu").is_err());
        assert!(parse_reserved("cpu=-1").is_err());
    }

    #[test]
    fn reservations_larger_than_capacity_give_zero() {
        let cap = BTreeMap::from([("cpu".to_string(), Quantity::parse("1").unwrap())]);
        let r = parse_reserved("cpu=2").unwrap();
        assert!(allocatable(&cap, &[&r])["cpu"].is_zero());
    }

    #[test]
    fn conditions_keep_transition_time_while_unchanged() {
        let first = Conditions::default().to_json("2026-01-01T00:00:00Z", None);
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "status": {"conditions": first}
        }))
        .unwrap();
        let pressured = Conditions {
            memory_pressure: true,
            ..Default::default()
        };
        let next = pressured.to_json("2026-01-01T00:01:00Z", Some(&node));
        let by_type = |t: &str| {
            next.as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == t)
                .unwrap()
                .clone()
        };
        assert_eq!(by_type("MemoryPressure")["status"], "True");
        assert_eq!(
            by_type("MemoryPressure")["lastTransitionTime"],
            "2026-01-01T00:01:00Z"
        );
        assert_eq!(
            by_type("Ready")["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(
            by_type("Ready")["lastHeartbeatTime"],
            "2026-01-01T00:01:00Z"
        );
    }
}
