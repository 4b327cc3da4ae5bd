//! The subsets of a Service's Endpoints: one address per selected pod and service port,
//! repacked so that addresses offering the same ports share a subset (upstream's
//! `RepackSubsets`), and truncated to [`MAX_CAPACITY`] addresses as upstream does.
//!
//! Everything here is pure and deterministic: the same pods give the same subsets in the
//! same order, so comparing them with the stored Endpoints tells whether a write is needed.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Pod, Service};

use super::membership::{
    endpoint_hostname, find_port, is_headless, is_ipv6, pod_ips, pod_reference, publish_not_ready,
    service_ports, should_pod_be_in_endpoints,
};
use crate::pods;

/// The most addresses one Endpoints object holds (upstream's `maxCapacity`); past it the
/// controller truncates and sets [`OVER_CAPACITY_ANNOTATION`].
pub const MAX_CAPACITY: usize = 1000;

/// Set on an Endpoints object whose addresses were truncated to [`MAX_CAPACITY`].
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";

/// The address of `pod` in `svc`'s Endpoints (upstream's `podToEndpointAddressForService`):
/// the pod IP of the Service's IP family (its first `ipFamilies` entry; else the family of
/// its cluster IP; else, for a headless Service, of the pod's first IP), with the pod's node
/// and a reference to it. `None` when the pod has no IP of that family.
pub fn pod_address(svc: &Service, pod: &Pod) -> Option<EndpointAddress> {
    let ips = pod_ips(pod);
    let spec = svc.spec.as_ref();
    let want_v6 = match spec
        .and_then(|s| s.ip_families.as_deref())
        .and_then(<[_]>::first)
    {
        Some(family) => family == "IPv6",
        None => match spec.and_then(|s| s.cluster_ip.as_deref()) {
            Some(ip) if !ip.is_empty() && ip != "None" => is_ipv6(ip),
            _ => ips.first().is_some_and(|ip| is_ipv6(ip)),
        },
    };
    let ip = ips.into_iter().find(|ip| is_ipv6(ip) == want_v6)?;
    Some(EndpointAddress {
        ip: ip.to_string(),
        hostname: endpoint_hostname(pod, svc),
        node_name: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        target_ref: Some(pod_reference(pod)),
    })
}

/// The Endpoints subsets of `svc` over `pods` (the pods its selector matches), repacked
/// and truncated: ready pods as addresses, the others as not-ready addresses (all ready
/// when the Service publishes not-ready addresses, which also keeps terminating pods).
/// Pods without a container port a named `targetPort` names are left out of that port.
pub fn desired_subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let tolerate = publish_not_ready(svc);
    let ports = service_ports(svc);
    let mut subsets = Vec::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, tolerate) {
            continue;
        }
        let Some(address) = pod_address(svc, pod) else {
            continue;
        };
        let ready = tolerate || pods::is_ready(pod);
        let subset = |port: Option<EndpointPort>| {
            let (addresses, not_ready) = if ready {
                (Some(vec![address.clone()]), None)
            } else {
                (None, Some(vec![address.clone()]))
            };
            EndpointSubset {
                addresses,
                not_ready_addresses: not_ready,
                ports: port.map(|p| vec![p]),
            }
        };
        if ports.is_empty() {
            // Headless Services may have no ports; their addresses are listed without.
            if is_headless(svc) {
                subsets.push(subset(None));
            }
            continue;
        }
        for port in ports {
            let Some(number) = find_port(pod, port) else {
                continue;
            };
            subsets.push(subset(Some(EndpointPort {
                name: port.name.clone().filter(|n| !n.is_empty()),
                port: number,
                protocol: Some(super::membership::protocol(port.protocol.as_ref()).to_string()),
                app_protocol: port.app_protocol.clone(),
            })));
        }
    }
    repack_subsets(&subsets)
}

/// An address's identity in a repack: its IP and the UID of its target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct AddressKey {
    ip: String,
    uid: String,
}

/// A port's identity and sort order in a repack. `port == -1` stands for "no ports", so
/// addresses of subsets without ports survive the repack.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PortKey {
    name: Option<String>,
    port: i32,
    protocol: Option<String>,
    app_protocol: Option<String>,
}

impl PortKey {
    const NONE: PortKey = PortKey {
        name: None,
        port: -1,
        protocol: None,
        app_protocol: None,
    };

    fn of(p: &EndpointPort) -> Self {
        PortKey {
            name: p.name.clone().filter(|n| !n.is_empty()),
            port: p.port,
            protocol: p.protocol.clone(),
            app_protocol: p.app_protocol.clone(),
        }
    }

    fn to_port(&self) -> EndpointPort {
        EndpointPort {
            name: self.name.clone(),
            port: self.port,
            protocol: self.protocol.clone(),
            app_protocol: self.app_protocol.clone(),
        }
    }
}

fn address_key(a: &EndpointAddress) -> AddressKey {
    AddressKey {
        ip: a.ip.clone(),
        uid: a
            .target_ref
            .as_ref()
            .and_then(|r| r.uid.clone())
            .unwrap_or_default(),
    }
}

/// Regroups subsets so that each distinct set of (address, readiness) pairs appears once
/// with every port it offers (upstream's `RepackSubsets`). An address that is ready on a
/// port in one subset and not ready on it in another is not ready there. The result is
/// sorted: subsets by their addresses, addresses by IP and target UID, ports by name,
/// number and protocol.
pub fn repack_subsets(subsets: &[EndpointSubset]) -> Vec<EndpointSubset> {
    let mut addresses: BTreeMap<AddressKey, EndpointAddress> = BTreeMap::new();
    let mut by_port: BTreeMap<PortKey, BTreeMap<AddressKey, bool>> = BTreeMap::new();
    for subset in subsets {
        let ports: Vec<PortKey> = match subset.ports.as_deref() {
            None | Some([]) => vec![PortKey::NONE],
            Some(ports) => ports.iter().map(PortKey::of).collect(),
        };
        let listed = [
            (subset.addresses.as_deref().unwrap_or_default(), true),
            (
                subset.not_ready_addresses.as_deref().unwrap_or_default(),
                false,
            ),
        ];
        for port in &ports {
            for (list, ready) in listed {
                for address in list {
                    let key = address_key(address);
                    addresses
                        .entry(key.clone())
                        .or_insert_with(|| address.clone());
                    let set = by_port.entry(port.clone()).or_default();
                    // Not ready always wins over ready.
                    let was = set.entry(key).or_insert(ready);
                    *was = *was && ready;
                }
            }
        }
    }
    // Addresses (with readiness) → the ports they all offer.
    let mut by_addresses: BTreeMap<BTreeMap<AddressKey, bool>, Vec<PortKey>> = BTreeMap::new();
    for (port, set) in by_port {
        let ports = by_addresses.entry(set).or_default();
        if port.port > 0 {
            ports.push(port);
        }
    }
    by_addresses
        .into_iter()
        .map(|(set, ports)| {
            let pick = |ready: bool| {
                let list: Vec<EndpointAddress> = set
                    .iter()
                    .filter(|(_, r)| **r == ready)
                    .filter_map(|(k, _)| addresses.get(k).cloned())
                    .collect();
                (!list.is_empty()).then_some(list)
            };
            EndpointSubset {
                addresses: pick(true),
                not_ready_addresses: pick(false),
                ports: (!ports.is_empty()).then(|| ports.iter().map(PortKey::to_port).collect()),
            }
        })
        .collect()
}

fn count(list: &Option<Vec<EndpointAddress>>) -> usize {
    list.as_ref().map_or(0, Vec::len)
}

/// Cuts `subsets` down to [`MAX_CAPACITY`] addresses as upstream's `truncateEndpoints`
/// does: not-ready addresses go first; if the ready ones alone are too many, every
/// not-ready address goes and each subset keeps a share of ready ones proportional to its
/// size. Returns whether anything was cut.
pub fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let ready: usize = subsets.iter().map(|s| count(&s.addresses)).sum();
    let not_ready: usize = subsets.iter().map(|s| count(&s.not_ready_addresses)).sum();
    if ready + not_ready <= MAX_CAPACITY {
        return false;
    }
    let truncate_ready = ready > MAX_CAPACITY;
    let (max, total) = if truncate_ready {
        (MAX_CAPACITY, ready)
    } else {
        (MAX_CAPACITY - ready, not_ready)
    };
    let mut room = max;
    for subset in subsets.iter_mut() {
        let list = if truncate_ready {
            subset.not_ready_addresses = None;
            &mut subset.addresses
        } else {
            &mut subset.not_ready_addresses
        };
        let here = count(list);
        // Each subset's share, rounded up; the last ones get what is left.
        let share = (here * max).div_ceil(total.max(1)).min(room);
        if let Some(addresses) = list.as_mut() {
            addresses.truncate(share);
        }
        if list.as_ref().is_some_and(Vec::is_empty) {
            *list = None;
        }
        room -= count(list);
    }
    true
}

/// `subsets` in the form they are compared in: target references without a
/// resourceVersion and empty lists as absent ones, so a stored object that differs only
/// in how the server wrote it compares equal.
pub fn normalized(subsets: Option<&[EndpointSubset]>) -> Vec<EndpointSubset> {
    let clean = |list: &Option<Vec<EndpointAddress>>| {
        list.as_ref().filter(|l| !l.is_empty()).map(|l| {
            l.iter()
                .cloned()
                .map(|mut a| {
                    if let Some(r) = a.target_ref.as_mut() {
                        r.resource_version = None;
                    }
                    a
                })
                .collect()
        })
    };
    subsets
        .unwrap_or_default()
        .iter()
        .map(|s| EndpointSubset {
            addresses: clean(&s.addresses),
            not_ready_addresses: clean(&s.not_ready_addresses),
            ports: s.ports.clone().filter(|p| !p.is_empty()),
        })
        .collect()
}
