//! The proxy's view of one Service: from a `core/v1` Service, the `discovery.k8s.io/v1`
//! EndpointSlices labelled with its name and this node's name to one [`ServicePort`] per
//! port, with everything the rules need and nothing else. Pure: no I/O.
//!
//! IPv4 only: IPv6 cluster IPs, external IPs and EndpointSlices (`addressType: IPv6` or
//! `FQDN`) are ignored, as a single-stack IPv4 kube-proxy ignores them.
//!
//! Endpoint selection follows upstream's `CategorizeEndpoints` (pkg/proxy/topology.go),
//! without topology hints: Cluster policy uses the ready endpoints and, when there are
//! none, the serving-and-terminating ones ("terminating fallback"); Local policy does the
//! same among this node's endpoints.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Upstream's default ClientIP affinity timeout: three hours.
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10_800;

/// A Service's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ServiceKey {
    /// The key `namespace/name`.
    pub fn new(namespace: &str, name: &str) -> Self {
        ServiceKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A transport protocol a Service port can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Parses a Kubernetes protocol name (`TCP`, `UDP`, `SCTP`); `None` for others.
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The nftables (and chain name) spelling: `tcp`, `udp`, `sctp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One port of one Service: upstream's `ServicePortName`. Ordered by namespace, name, port
/// name and protocol, so one Service's ports are adjacent in a sorted map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    /// The Service.
    pub service: ServiceKey,
    /// The port's name (empty for a Service's only, unnamed port).
    pub port: String,
    /// The port's protocol.
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.service.namespace,
            self.service.name,
            self.protocol.as_str(),
            self.port
        )
    }
}

/// One backend of a Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// The backend's address.
    pub ip: Ipv4Addr,
    /// The backend's port.
    pub port: u16,
    /// `conditions.ready` (absent counts as true, as upstream reads it).
    pub ready: bool,
    /// `conditions.serving` (absent counts as true).
    pub serving: bool,
    /// `conditions.terminating` (absent counts as false).
    pub terminating: bool,
    /// Whether the endpoint's `nodeName` is this node.
    pub local: bool,
    /// Whether the endpoint has no `nodeName` (hand-written slices): it may be a pod of
    /// this node all the same.
    pub unplaced: bool,
}

/// Everything the rules of one Service port depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Which port of which Service.
    pub name: ServicePortName,
    /// The IPv4 cluster IP.
    pub cluster_ip: Ipv4Addr,
    /// The Service port.
    pub port: u16,
    /// The node port, for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
    /// `spec.externalIPs` (IPv4 ones), sorted and without duplicates.
    pub external_ips: Vec<Ipv4Addr>,
    /// `Some(timeout in seconds)` for `sessionAffinity: ClientIP`.
    pub affinity_timeout: Option<u32>,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local` (only meaningful when externally reachable).
    pub external_local: bool,
    /// Every endpoint of the port, sorted, one per address and port.
    pub endpoints: Vec<Endpoint>,
}

/// The endpoints one Service port's rules use, upstream's `CategorizeEndpoints`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Categorized {
    /// The endpoints Cluster traffic policy sends to.
    pub cluster: Vec<Endpoint>,
    /// The endpoints Local traffic policy sends to (all on this node).
    pub local: Vec<Endpoint>,
    /// Every endpoint some rule may send to.
    pub reachable: Vec<Endpoint>,
    /// Whether the Service port has a usable endpoint anywhere in the cluster.
    pub has_any: bool,
}

impl ServicePort {
    /// Whether NodePort or external IP traffic reaches this port.
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty()
    }

    /// Whether some traffic uses Cluster policy: internal traffic with Cluster policy, or
    /// any external traffic (with Local policy, pods and the node itself still short-circuit
    /// to the cluster endpoints).
    pub fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_local || self.externally_accessible()
    }

    /// Whether some traffic uses Local policy.
    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_local || (self.external_local && self.externally_accessible())
    }

    /// Splits the endpoints by traffic policy, with the terminating fallback.
    pub fn categorize(&self) -> Categorized {
        let mut out = Categorized::default();
        let eps = &self.endpoints;
        if self.uses_cluster_endpoints() {
            out.cluster = eps.iter().filter(|e| e.ready).cloned().collect();
            if out.cluster.is_empty() {
                out.cluster = eps
                    .iter()
                    .filter(|e| e.serving && e.terminating)
                    .cloned()
                    .collect();
            }
            out.has_any = !out.cluster.is_empty();
        }
        if !self.uses_local_endpoints() {
            out.reachable = out.cluster.clone();
            return out;
        }
        let usable = |e: &&Endpoint| e.ready || (e.serving && e.terminating);
        out.has_any |= eps.iter().any(|e| usable(&e));
        let local_ready: Vec<Endpoint> =
            eps.iter().filter(|e| e.local && e.ready).cloned().collect();
        let fallback = local_ready.is_empty();
        out.local = if fallback {
            eps.iter()
                .filter(|e| e.local && e.serving && e.terminating)
                .cloned()
                .collect()
        } else {
            local_ready
        };
        if !self.uses_cluster_endpoints() {
            out.reachable = out.local.clone();
            return out;
        }
        // Ready local endpoints are all among the cluster ones; terminating ones may not be.
        let mut reachable = out.cluster.clone();
        if fallback {
            for e in &out.local {
                if !reachable.contains(e) {
                    reachable.push(e.clone());
                }
            }
            reachable.sort();
        }
        out.reachable = reachable;
        out
    }
}

/// Whether the proxy handles `service` at all: not ExternalName, not headless, with an
/// IPv4 cluster IP.
pub fn cluster_ip(service: &Service) -> Option<Ipv4Addr> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    let mut candidates: Vec<&str> = Vec::new();
    if let Some(ips) = &spec.cluster_ips {
        candidates.extend(ips.iter().map(String::as_str));
    }
    if let Some(ip) = &spec.cluster_ip {
        candidates.push(ip);
    }
    candidates.into_iter().find_map(|ip| ip.parse().ok())
}

/// The Service ports of `service` with their endpoints from `slices` (the EndpointSlices
/// labelled with its name), as seen from the node `node`. Empty for Services the proxy
/// does not handle; ports with an unknown protocol are skipped.
pub fn service_ports<'a>(
    service: &Service,
    slices: impl IntoIterator<Item = &'a EndpointSlice> + Clone,
    node: &str,
) -> Vec<ServicePort> {
    let Some(cluster_ip) = cluster_ip(service) else {
        return Vec::new();
    };
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    let key = ServiceKey::new(
        service.metadata.namespace.as_deref().unwrap_or("default"),
        service.metadata.name.as_deref().unwrap_or_default(),
    );
    let mut external_ips: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    external_ips.sort();
    external_ips.dedup();
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|&t| t > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_SECONDS)
    });
    let node_ports_allowed = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");

    let mut out = Vec::new();
    for port in spec.ports.iter().flatten() {
        let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
            continue;
        };
        let Ok(number) = u16::try_from(port.port) else {
            continue;
        };
        let port_name = port.name.clone().unwrap_or_default();
        let node_port = port
            .node_port
            .filter(|_| node_ports_allowed)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|&p| p > 0);
        let endpoints = endpoints_for(slices.clone(), &port_name, protocol, node);
        out.push(ServicePort {
            name: ServicePortName {
                service: key.clone(),
                port: port_name,
                protocol,
            },
            cluster_ip,
            port: number,
            node_port,
            external_ips: external_ips.clone(),
            affinity_timeout,
            internal_local,
            external_local,
            endpoints,
        });
    }
    out
}

/// The endpoints of the port named `port_name` with `protocol` across `slices`, sorted and
/// deduplicated by address and port (one endpoint may sit in two slices while they are
/// being rebalanced; the first seen wins, as upstream keeps one).
fn endpoints_for<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port_name: &str,
    protocol: Protocol,
    node: &str,
) -> Vec<Endpoint> {
    let mut found: BTreeMap<(Ipv4Addr, u16), Endpoint> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(port) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == port_name
                && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
        }) else {
            continue;
        };
        let Some(number) = port.port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for ep in &slice.endpoints {
            let conditions = ep.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(true);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            let local = ep.node_name.as_deref() == Some(node);
            let unplaced = ep.node_name.is_none();
            // Upstream uses an endpoint's first address only.
            let Some(ip) = ep
                .addresses
                .first()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            found.entry((ip, number)).or_insert(Endpoint {
                ip,
                port: number,
                ready,
                serving,
                terminating,
                local,
                unplaced,
            });
        }
    }
    found.into_values().collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ClientIPConfig, ServicePort as K8sServicePort, ServiceSpec, SessionAffinityConfig,
    };
    use k8s_openapi::api::discovery::v1::{
        Endpoint as K8sEndpoint, EndpointConditions, EndpointPort,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// A ClusterIP Service `ns/name` with one TCP port `port` named `port_name`.
    pub(crate) fn service(ns: &str, name: &str, ip: &str, port_name: &str, port: i32) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                cluster_ips: Some(vec![ip.into()]),
                type_: Some("ClusterIP".into()),
                ports: Some(vec![K8sServicePort {
                    name: (!port_name.is_empty()).then(|| port_name.to_string()),
                    port,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// `(ip, node, ready, serving, terminating)`.
    pub(crate) type Ep<'a> = (&'a str, &'a str, bool, bool, bool);

    /// An IPv4 EndpointSlice of Service `ns/svc` with one TCP port.
    pub(crate) fn slice(
        ns: &str,
        svc: &str,
        slice_name: &str,
        port_name: &str,
        port: i32,
        eps: &[Ep<'_>],
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(slice_name.into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: eps
                .iter()
                .map(|(ip, node, ready, serving, terminating)| K8sEndpoint {
                    addresses: vec![ip.to_string()],
                    node_name: Some(node.to_string()),
                    conditions: Some(EndpointConditions {
                        ready: Some(*ready),
                        serving: Some(*serving),
                        terminating: Some(*terminating),
                    }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: Some(port_name.into()),
                port: Some(port),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        }
    }

    fn ips(eps: &[Endpoint]) -> Vec<String> {
        eps.iter().map(|e| e.ip.to_string()).collect()
    }

    #[test]
    fn a_cluster_ip_service_gets_its_ready_endpoints() {
        let svc = service("ns", "web", "10.96.0.10", "http", 80);
        let s = slice(
            "ns",
            "web",
            "web-1",
            "http",
            8080,
            &[
                ("10.244.1.2", "n1", true, true, false),
                ("10.244.2.2", "n2", false, false, false),
            ],
        );
        let ports = service_ports(&svc, [&s], "n1");
        assert_eq!(ports.len(), 1);
        let p = &ports[0];
        assert_eq!(p.name.to_string(), "ns/web/tcp/http");
        assert_eq!(p.cluster_ip, Ipv4Addr::new(10, 96, 0, 10));
        assert_eq!(p.port, 80);
        assert_eq!(p.node_port, None);
        assert_eq!(p.endpoints.len(), 2);
        assert!(p.endpoints[0].local && p.endpoints[0].port == 8080);
        let c = p.categorize();
        assert_eq!(ips(&c.cluster), ["10.244.1.2"]);
        assert!(c.local.is_empty());
        assert_eq!(ips(&c.reachable), ["10.244.1.2"]);
        assert!(c.has_any);
    }

    #[test]
    fn headless_external_name_and_ipv6_services_are_skipped() {
        let mut headless = service("ns", "h", "None", "", 80);
        headless.spec.as_mut().unwrap().cluster_ips = Some(vec!["None".into()]);
        assert!(service_ports(&headless, [], "n1").is_empty());
        let mut ext = service("ns", "e", "10.96.0.1", "", 80);
        ext.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        assert!(service_ports(&ext, [], "n1").is_empty());
        let mut v6 = service("ns", "v6", "fd00::1", "", 80);
        v6.spec.as_mut().unwrap().cluster_ips = Some(vec!["fd00::1".into()]);
        assert!(service_ports(&v6, [], "n1").is_empty());
        let mut dual = service("ns", "d", "fd00::1", "", 80);
        dual.spec.as_mut().unwrap().cluster_ips = Some(vec!["fd00::1".into(), "10.96.0.3".into()]);
        assert_eq!(
            service_ports(&dual, [], "n1")[0].cluster_ip,
            Ipv4Addr::new(10, 96, 0, 3)
        );
    }

    #[test]
    fn terminating_endpoints_are_a_fallback_only() {
        let svc = service("ns", "web", "10.96.0.10", "", 80);
        let eps = [
            ("10.244.1.2", "n1", false, true, true),
            ("10.244.1.3", "n1", false, false, true),
        ];
        let s = slice("ns", "web", "web-1", "", 8080, &eps);
        let c = service_ports(&svc, [&s], "n1")[0].categorize();
        assert_eq!(ips(&c.cluster), ["10.244.1.2"], "serving+terminating only");
        assert!(c.has_any);

        let mut eps2 = eps.to_vec();
        eps2.push(("10.244.2.9", "n2", true, true, false));
        let s = slice("ns", "web", "web-1", "", 8080, &eps2);
        let c = service_ports(&svc, [&s], "n1")[0].categorize();
        assert_eq!(ips(&c.cluster), ["10.244.2.9"], "a ready endpoint wins");
    }

    #[test]
    fn local_policies_pick_this_nodes_endpoints_with_their_own_fallback() {
        let mut svc = service("ns", "web", "10.96.0.10", "", 80);
        {
            let spec = svc.spec.as_mut().unwrap();
            spec.type_ = Some("NodePort".into());
            spec.external_traffic_policy = Some("Local".into());
            spec.ports.as_mut().unwrap()[0].node_port = Some(30080);
        }
        let s = slice(
            "ns",
            "web",
            "web-1",
            "",
            8080,
            &[
                ("10.244.1.2", "n1", false, true, true),
                ("10.244.2.2", "n2", true, true, false),
            ],
        );
        let p = &service_ports(&svc, [&s], "n1")[0];
        assert_eq!(p.node_port, Some(30080));
        assert!(p.external_local && !p.internal_local);
        let c = p.categorize();
        assert_eq!(ips(&c.cluster), ["10.244.2.2"]);
        assert_eq!(ips(&c.local), ["10.244.1.2"], "local terminating fallback");
        assert_eq!(ips(&c.reachable), ["10.244.1.2", "10.244.2.2"]);

        svc.spec.as_mut().unwrap().internal_traffic_policy = Some("Local".into());
        svc.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        let p = &service_ports(&svc, [&s], "n2")[0];
        assert_eq!(
            p.node_port, None,
            "node ports only for NodePort and LoadBalancer"
        );
        let c = p.categorize();
        assert!(c.cluster.is_empty());
        assert_eq!(ips(&c.local), ["10.244.2.2"]);
        assert_eq!(ips(&c.reachable), ["10.244.2.2"]);
    }

    #[test]
    fn affinity_timeout_defaults_to_three_hours() {
        let mut svc = service("ns", "web", "10.96.0.10", "", 80);
        svc.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
        assert_eq!(
            service_ports(&svc, [], "n1")[0].affinity_timeout,
            Some(10_800)
        );
        svc.spec.as_mut().unwrap().session_affinity_config = Some(SessionAffinityConfig {
            client_ip: Some(ClientIPConfig {
                timeout_seconds: Some(60),
            }),
        });
        assert_eq!(service_ports(&svc, [], "n1")[0].affinity_timeout, Some(60));
    }

    #[test]
    fn slices_of_other_ports_and_duplicate_endpoints_are_ignored() {
        let svc = service("ns", "web", "10.96.0.10", "http", 80);
        let other = slice(
            "ns",
            "web",
            "web-1",
            "metrics",
            9090,
            &[("10.244.1.2", "n1", true, true, false)],
        );
        let a = slice(
            "ns",
            "web",
            "web-2",
            "http",
            8080,
            &[("10.244.1.3", "n1", true, true, false)],
        );
        let b = slice(
            "ns",
            "web",
            "web-3",
            "http",
            8080,
            &[("10.244.1.3", "n1", true, true, false)],
        );
        let p = &service_ports(&svc, [&other, &a, &b], "n1")[0];
        assert_eq!(ips(&p.endpoints), ["10.244.1.3"]);
    }
}
