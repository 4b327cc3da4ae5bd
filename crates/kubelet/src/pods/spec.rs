//! Pod and container specs turned into CRI configurations: the sandbox (hostname, DNS,
//! host ports, namespaces, sysctls) and each container (command, resources, security
//! context, labels and annotations the kubelet finds its containers by).

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use rkube_types::quantity::Quantity;

use crate::runtime::{annotations, cri, labels};

/// Node-wide settings the specs need.
#[derive(Debug, Clone, Default)]
pub struct SpecContext {
    /// Where sandboxes keep their container logs (`<dir>/<ns>_<name>_<uid>`).
    pub log_dir: std::path::PathBuf,
    /// `--cluster-dns`.
    pub cluster_dns: Vec<String>,
    /// `--cluster-domain`.
    pub cluster_domain: String,
}

fn spec(pod: &Pod) -> &PodSpec {
    static EMPTY: std::sync::OnceLock<PodSpec> = std::sync::OnceLock::new();
    pod.spec
        .as_ref()
        .unwrap_or_else(|| EMPTY.get_or_init(PodSpec::default))
}

/// The pod's namespace, name and uid.
pub fn pod_key(pod: &Pod) -> (&str, &str, &str) {
    (
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default(),
    )
}

/// The sandbox's log directory.
pub fn log_directory(ctx: &SpecContext, pod: &Pod) -> std::path::PathBuf {
    let (ns, name, uid) = pod_key(pod);
    ctx.log_dir.join(format!("{ns}_{name}_{uid}"))
}

fn namespace_options(spec: &PodSpec) -> cri::NamespaceOption {
    let mode = |host: Option<bool>, otherwise: cri::NamespaceMode| {
        if host == Some(true) {
            cri::NamespaceMode::Node as i32
        } else {
            otherwise as i32
        }
    };
    cri::NamespaceOption {
        network: mode(spec.host_network, cri::NamespaceMode::Pod),
        pid: mode(
            spec.host_pid,
            if spec.share_process_namespace == Some(true) {
                cri::NamespaceMode::Pod
            } else {
                cri::NamespaceMode::Container
            },
        ),
        ipc: mode(spec.host_ipc, cri::NamespaceMode::Pod),
        ..Default::default()
    }
}

/// The pod's DNS settings; `None` leaves the runtime to copy the host's resolv.conf.
pub fn dns_config(ctx: &SpecContext, pod: &Pod) -> Option<cri::DnsConfig> {
    let spec = spec(pod);
    let (ns, _, _) = pod_key(pod);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let host_network = spec.host_network == Some(true);
    let cluster = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    } && !ctx.cluster_dns.is_empty();
    let mut config = if cluster {
        let d = &ctx.cluster_domain;
        cri::DnsConfig {
            servers: ctx.cluster_dns.clone(),
            searches: vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()],
            options: vec!["ndots:5".into()],
        }
    } else if policy == "None" {
        cri::DnsConfig::default()
    } else {
        return extra_dns(spec, None);
    };
    if let Some(extra) = &spec.dns_config {
        config
            .servers
            .extend(extra.nameservers.clone().unwrap_or_default());
        config
            .searches
            .extend(extra.searches.clone().unwrap_or_default());
        for o in extra.options.clone().unwrap_or_default() {
            let Some(name) = o.name else { continue };
            config
                .options
                .retain(|x| x.split(':').next() != Some(name.as_str()));
            config.options.push(match o.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    Some(config)
}

fn extra_dns(spec: &PodSpec, _: Option<()>) -> Option<cri::DnsConfig> {
    let extra = spec.dns_config.as_ref()?;
    Some(cri::DnsConfig {
        servers: extra.nameservers.clone().unwrap_or_default(),
        searches: extra.searches.clone().unwrap_or_default(),
        options: extra
            .options
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|o| {
                Some(match o.value {
                    Some(v) => format!("{}:{v}", o.name?),
                    None => o.name?,
                })
            })
            .collect(),
    })
    .filter(|c| !c.servers.is_empty())
}

/// Labels identifying the pod on a sandbox or container.
pub fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let (ns, name, uid) = pod_key(pod);
    HashMap::from([
        (labels::POD_NAME.to_string(), name.to_string()),
        (labels::POD_NAMESPACE.to_string(), ns.to_string()),
        (labels::POD_UID.to_string(), uid.to_string()),
        (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
    ])
}

/// The sandbox configuration of `pod`'s `attempt`-th sandbox.
pub fn sandbox_config(ctx: &SpecContext, pod: &Pod, attempt: u32) -> cri::PodSandboxConfig {
    let spec = spec(pod);
    let (ns, name, uid) = pod_key(pod);
    let host_network = spec.host_network == Some(true);
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.extend(pod_labels(pod));
    let hostname = if host_network {
        // A host-network sandbox has no UTS namespace to name.
        String::new()
    } else {
        let h = spec.hostname.clone().unwrap_or_else(|| name.to_string());
        h.chars()
            .take(63)
            .collect::<String>()
            .trim_end_matches(['-', '.'])
            .to_string()
    };
    let port_mappings = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.is_some_and(|h| h > 0))
        .map(|p| cri::PortMapping {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => cri::Protocol::Udp as i32,
                Some("SCTP") => cri::Protocol::Sctp as i32,
                _ => cri::Protocol::Tcp as i32,
            },
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or_default(),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let psc = spec.security_context.clone().unwrap_or_default();
    let privileged = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| {
            c.security_context
                .as_ref()
                .and_then(|s| s.privileged)
                .unwrap_or(false)
        });
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_string(),
            uid: uid.to_string(),
            namespace: ns.to_string(),
            attempt,
        }),
        hostname,
        log_directory: log_directory(ctx, pod).to_string_lossy().into_owned(),
        dns_config: dns_config(ctx, pod),
        port_mappings,
        labels,
        annotations: pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: String::new(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(spec)),
                run_as_user: psc.run_as_user.map(|value| cri::Int64Value { value }),
                run_as_group: psc.run_as_group.map(|value| cri::Int64Value { value }),
                supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
                privileged,
                ..Default::default()
            }),
            sysctls: psc
                .sysctls
                .unwrap_or_default()
                .into_iter()
                .map(|s| (s.name, s.value))
                .collect(),
            ..Default::default()
        }),
        windows: None,
    }
}

fn quantity(
    m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    k: &str,
) -> Option<Quantity> {
    Quantity::parse(&m?.get(k)?.0).ok()
}

/// Upstream's QoS class of a pod.
pub fn qos_class(pod: &Pod) -> &'static str {
    let spec = spec(pod);
    let all: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &all {
        let r = c.resources.clone().unwrap_or_default();
        for k in ["cpu", "memory"] {
            let req = quantity(r.requests.as_ref(), k);
            let lim = quantity(r.limits.as_ref(), k);
            if req.as_ref().is_some_and(|q| !q.is_zero())
                || lim.as_ref().is_some_and(|q| !q.is_zero())
            {
                any = true;
            }
            match (req, lim) {
                (Some(a), Some(b)) if a == b => {}
                (None, Some(_)) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// CRI Linux resources from requests and limits, as upstream computes them.
pub fn resources(pod: &Pod, c: &Container, memory_capacity: u64) -> cri::LinuxContainerResources {
    let r = c.resources.clone().unwrap_or_default();
    let cpu_req = quantity(r.requests.as_ref(), "cpu");
    let cpu_lim = quantity(r.limits.as_ref(), "cpu");
    let mem_req = quantity(r.requests.as_ref(), "memory");
    let mem_lim = quantity(r.limits.as_ref(), "memory");
    let shares_from = cpu_req.or(cpu_lim);
    let cpu_shares = shares_from
        .map(|q| (q.milli_value() * 1024 / 1000).max(2))
        .unwrap_or(2);
    let (cpu_period, cpu_quota) = match &cpu_lim {
        Some(q) if !q.is_zero() => (100_000, (q.milli_value() * 100).max(1000)),
        _ => (0, 0),
    };
    let oom_score_adj = match qos_class(pod) {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => {
            let req = mem_req.map(|q| q.value()).unwrap_or(0).max(0) as i128;
            let cap = memory_capacity.max(1) as i128;
            (1000 - (1000 * req) / cap).clamp(3, 999) as i64
        }
    };
    cri::LinuxContainerResources {
        cpu_period,
        cpu_quota,
        cpu_shares,
        memory_limit_in_bytes: mem_lim.map(|q| q.value()).unwrap_or(0),
        oom_score_adj,
        ..Default::default()
    }
}

/// Upstream's default masked and read-only paths for unprivileged containers.
const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READ_ONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The container's security context, the pod's merged under it.
pub fn security_context(pod: &Pod, c: &Container) -> cri::LinuxContainerSecurityContext {
    let spec = spec(pod);
    let psc = spec.security_context.clone().unwrap_or_default();
    let csc = c.security_context.clone().unwrap_or_default();
    let privileged = csc.privileged == Some(true);
    let caps = csc.capabilities.clone().unwrap_or_default();
    let mut groups = psc.supplemental_groups.clone().unwrap_or_default();
    if let Some(fs) = psc.fs_group {
        groups.push(fs);
    }
    cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            add_capabilities: caps.add.unwrap_or_default(),
            drop_capabilities: caps.drop.unwrap_or_default(),
            ..Default::default()
        }),
        privileged,
        namespace_options: Some(namespace_options(spec)),
        run_as_user: csc
            .run_as_user
            .or(psc.run_as_user)
            .map(|value| cri::Int64Value { value }),
        run_as_group: csc
            .run_as_group
            .or(psc.run_as_group)
            .map(|value| cri::Int64Value { value }),
        readonly_rootfs: csc.read_only_root_filesystem == Some(true),
        supplemental_groups: groups,
        no_new_privs: csc.allow_privilege_escalation == Some(false),
        masked_paths: if privileged {
            vec![]
        } else {
            MASKED.iter().map(|s| s.to_string()).collect()
        },
        readonly_paths: if privileged {
            vec![]
        } else {
            READ_ONLY.iter().map(|s| s.to_string()).collect()
        },
        ..Default::default()
    }
}

/// What the container is in the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An init container.
    Init,
    /// A regular container.
    Regular,
}

/// The inputs resolved per start: env, mounts and the image.
pub struct Resolved {
    /// The environment.
    pub envs: Vec<cri::KeyValue>,
    /// Volume mounts.
    pub mounts: Vec<cri::Mount>,
    /// The image to run.
    pub image: String,
}

/// Expands `$(VAR)` in command and args against the container's environment, as upstream
/// (`$$` is a literal `$`; unknown references stay as written).
pub fn expand(s: &str, env: &HashMap<&str, &str>) -> String {
    crate::env::expand(s, |name| match env.get(name) {
        Some(v) => v.to_string(),
        None => format!("$({name})"),
    })
}

/// The container configuration of `c`'s `attempt`-th instance.
#[allow(clippy::too_many_arguments)]
pub fn container_config(
    pod: &Pod,
    c: &Container,
    kind: Kind,
    attempt: u32,
    resolved: Resolved,
    memory_capacity: u64,
) -> cri::ContainerConfig {
    let env: HashMap<&str, &str> = resolved
        .envs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_str()))
        .collect();
    let command = c
        .command
        .iter()
        .flatten()
        .map(|s| expand(s, &env))
        .collect();
    let args = c.args.iter().flatten().map(|s| expand(s, &env)).collect();
    let mut labels = pod_labels(pod);
    labels.insert(labels::CONTAINER_NAME.into(), c.name.clone());
    let grace = spec(pod).termination_grace_period_seconds.unwrap_or(30);
    let annotations = HashMap::from([
        (annotations::RESTART_COUNT.to_string(), attempt.to_string()),
        (
            annotations::TERMINATION_GRACE.to_string(),
            grace.to_string(),
        ),
        (
            annotations::IMAGE.to_string(),
            c.image.clone().unwrap_or_default(),
        ),
        (
            annotations::KIND.to_string(),
            match kind {
                Kind::Init => "init",
                Kind::Regular => "regular",
            }
            .to_string(),
        ),
    ]);
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt,
        }),
        image: Some(cri::ImageSpec {
            image: resolved.image,
            ..Default::default()
        }),
        command,
        args,
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: resolved.envs,
        mounts: resolved.mounts,
        labels,
        annotations,
        log_path: format!("{}/{attempt}.log", c.name),
        stdin: c.stdin == Some(true),
        stdin_once: c.stdin_once == Some(true),
        tty: c.tty == Some(true),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(resources(pod, c, memory_capacity)),
            security_context: Some(security_context(pod, c)),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn expansion_follows_upstream_rules() {
        let env = HashMap::from([("A", "x"), ("B", "y")]);
        assert_eq!(expand("$(A)-$(B)", &env), "x-y");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$(C)", &env), "$(C)");
        assert_eq!(expand("a$", &env), "a$");
        assert_eq!(expand("$(A", &env), "$(A");
        assert_eq!(expand("é$(A)", &env), "éx");
    }

    #[test]
    fn cluster_dns_for_cluster_first_pods_only() {
        let ctx = SpecContext {
            cluster_dns: vec!["10.96.0.10".into()],
            cluster_domain: "cluster.local".into(),
            ..Default::default()
        };
        let p = pod(json!({"metadata": {"name": "p", "namespace": "ns"},
                           "spec": {"containers": []}}));
        let d = dns_config(&ctx, &p).unwrap();
        assert_eq!(d.servers, ["10.96.0.10"]);
        assert_eq!(d.searches[0], "ns.svc.cluster.local");
        assert_eq!(d.options, ["ndots:5"]);
        let host = pod(json!({"metadata": {"name": "p"},
                              "spec": {"hostNetwork": true, "containers": []}}));
        assert!(dns_config(&ctx, &host).is_none());
        let default = pod(json!({"metadata": {"name": "p"},
                                 "spec": {"dnsPolicy": "Default", "containers": []}}));
        assert!(dns_config(&ctx, &default).is_none());
        let none = pod(json!({"metadata": {"name": "p"},
            "spec": {"dnsPolicy": "None", "containers": [],
                     "dnsConfig": {"nameservers": ["1.2.3.4"], "options": [{"name": "ndots", "value": "2"}]}}}));
        let d = dns_config(&ctx, &none).unwrap();
        assert_eq!(d.servers, ["1.2.3.4"]);
        assert_eq!(d.options, ["ndots:2"]);
    }

    #[test]
    fn resources_follow_upstream_arithmetic() {
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"},
                                        "limits": {"cpu": "500m", "memory": "128Mi"}}}]}}));
        let r = resources(&p, &p.spec.as_ref().unwrap().containers[0], 1 << 30);
        assert_eq!(r.cpu_shares, 256);
        assert_eq!(r.cpu_period, 100_000);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.memory_limit_in_bytes, 128 << 20);
        assert_eq!(qos_class(&p), "Burstable");
        assert_eq!(r.oom_score_adj, 1000 - 1000 * 64 / 1024);
        let be = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}));
        let r = resources(&be, &be.spec.as_ref().unwrap().containers[0], 1 << 30);
        assert_eq!((r.cpu_shares, r.cpu_quota, r.oom_score_adj), (2, 0, 1000));
        let g = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}}));
        assert_eq!(qos_class(&g), "Guaranteed");
    }

    #[test]
    fn security_context_merges_pod_and_container() {
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {
            "securityContext": {"runAsUser": 1000, "runAsGroup": 2000, "fsGroup": 3000},
            "containers": [{"name": "c", "securityContext": {
                "runAsUser": 65534, "readOnlyRootFilesystem": true,
                "allowPrivilegeEscalation": false,
                "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}}}]}}));
        let s = security_context(&p, &p.spec.as_ref().unwrap().containers[0]);
        assert_eq!(s.run_as_user.unwrap().value, 65534);
        assert_eq!(s.run_as_group.unwrap().value, 2000);
        assert!(s.readonly_rootfs && s.no_new_privs && !s.privileged);
        assert_eq!(s.supplemental_groups, [3000]);
        assert_eq!(s.capabilities.unwrap().add_capabilities, ["NET_ADMIN"]);
        assert!(s.masked_paths.contains(&"/proc/kcore".to_string()));
    }

    #[test]
    fn sandbox_has_host_ports_and_pod_labels() {
        let p = pod(
            json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u1",
                                        "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "ports": [
                {"containerPort": 80, "hostPort": 8080}, {"containerPort": 81}]}]}}),
        );
        let ctx = SpecContext::default();
        let s = sandbox_config(&ctx, &p, 1);
        assert_eq!(s.port_mappings.len(), 1);
        assert_eq!(s.port_mappings[0].host_port, 8080);
        assert_eq!(s.labels[labels::POD_UID], "u1");
        assert_eq!(s.labels["app"], "web");
        assert_eq!(s.hostname, "web");
        assert_eq!(s.metadata.unwrap().attempt, 1);
    }
}
