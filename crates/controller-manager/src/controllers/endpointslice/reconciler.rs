//! The EndpointSlice reconciler (upstream's `k8s.io/endpointslice` `Reconciler`), pure: from a
//! Service, the pods its selector matches and its current slices it plans which slices to
//! create, update and delete. [`super`] carries the plan out.
//!
//! The plan changes as little as it can, as upstream's does:
//!
//! 1. Endpoints are grouped by address type and by their set of ports ("port map": pods
//!    lacking a named `targetPort` have fewer ports and land in slices of their own).
//! 2. Within a port map, each existing slice keeps the endpoints still desired, updated in
//!    place; a slice that lost all of them is deleted; one whose endpoints and labels are
//!    unchanged is not touched. So a pod that changes rewrites only the slice holding it.
//! 3. New endpoints first fill the slices already being updated (fullest first), then the
//!    unchanged slice that they fit in most tightly, and only then new slices of at most
//!    [`MAX_ENDPOINTS_PER_SLICE`] endpoints.
//! 4. A Service with no endpoints keeps one empty "placeholder" slice per address type.
//! 5. A slice to create and a slice to delete of the same address type become one update
//!    of the slice that would have been deleted.
//!
//! Unlike upstream, which picks endpoints from hash sets, every choice here is made in a
//! fixed order (endpoints by address and target, slices by size and then name), so the same
//! input always gives the same plan. Topology hints and trafficDistribution are not
//! implemented.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::controllers::endpoints::membership::{
    HEADLESS_LABEL, endpoint_hostname, find_port, is_headless, is_ipv6, pod_ips, pod_reference,
    protocol, publish_not_ready, service_ports, should_pod_be_in_endpoints,
};
use crate::ownership::owner_reference;
use crate::pods;

/// The most endpoints the controller puts in one slice (upstream's default
/// `--max-endpoints-per-slice`).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// The `managed-by` value of the slices this controller owns.
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// The label naming a slice's Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// The label naming the controller that manages a slice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";

/// The node label endpoints take their zone from.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

/// What a node lookup found: `None` when the node is unknown, else its zone (if labelled).
pub type NodeZone = Option<Option<String>>;

/// The writes that bring a Service's slices to the desired state.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    /// New slices (named by `generateName`).
    pub create: Vec<EndpointSlice>,
    /// Changed slices, carrying the resourceVersion they were read at.
    pub update: Vec<EndpointSlice>,
    /// Slices to delete.
    pub delete: Vec<Arc<EndpointSlice>>,
    /// Nodes named by selected pods that are not known; their pods were left out.
    pub missing_nodes: BTreeSet<String>,
}

impl Plan {
    /// Whether the plan writes nothing.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// Whether the slice is managed by this controller.
pub fn managed_by_controller(slice: &EndpointSlice) -> bool {
    label(slice, LABEL_MANAGED_BY) == Some(MANAGED_BY)
}

/// The value of one of the slice's labels.
pub fn label<'a>(slice: &'a EndpointSlice, key: &str) -> Option<&'a str> {
    slice.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// Whether the slice has an owner reference to `svc` (upstream's `ownedBy`).
pub fn owned_by(slice: &EndpointSlice, svc: &Service) -> bool {
    let uid = svc.metadata.uid.as_deref().unwrap_or_default();
    slice
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|r| r.uid == uid && r.kind == "Service" && r.api_version == "v1")
}

/// The address types the Service's slices carry (upstream's `getAddressTypesForService`):
/// its `ipFamilies`, else the family of its cluster IP, else IPv4. (Upstream gives a
/// headless Service without `ipFamilies` both types; here it gets IPv4, so no empty IPv6
/// placeholder appears beside every such Service.)
pub fn address_types(svc: &Service) -> BTreeSet<&'static str> {
    let spec = svc.spec.as_ref();
    let mut types: BTreeSet<&'static str> = spec
        .and_then(|s| s.ip_families.as_deref())
        .unwrap_or_default()
        .iter()
        .filter_map(|f| match f.as_str() {
            "IPv4" => Some("IPv4"),
            "IPv6" => Some("IPv6"),
            _ => None,
        })
        .collect();
    if types.is_empty() {
        let v6 = spec
            .and_then(|s| s.cluster_ip.as_deref())
            .is_some_and(|ip| ip != "None" && is_ipv6(ip));
        types.insert(if v6 { "IPv6" } else { "IPv4" });
    }
    types
}

/// The labels of the Service's slices (upstream's `setEndpointSliceLabels`): the Service's
/// labels except the reserved ones, the headless label for a headless Service, and the
/// service-name and managed-by labels.
pub fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = svc
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| {
            ![LABEL_SERVICE_NAME, LABEL_MANAGED_BY, HEADLESS_LABEL].contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels.insert(
        LABEL_SERVICE_NAME.into(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    labels
}

/// The slice ports of `pod` for `svc` (upstream's `getEndpointPorts`): one per service port
/// the pod has, named as the service port.
pub fn endpoint_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    service_ports(svc)
        .iter()
        .filter_map(|port| {
            let number = find_port(pod, port)?;
            Some(EndpointPort {
                name: Some(port.name.clone().unwrap_or_default()),
                port: Some(number),
                protocol: Some(protocol(port.protocol.as_ref()).to_string()),
                app_protocol: port.app_protocol.clone(),
            })
        })
        .collect()
}

/// A set of ports, order aside: what slices are grouped by.
type PortMapKey = Vec<(String, Option<i32>, String, Option<String>)>;

fn port_map_key(ports: &[EndpointPort]) -> PortMapKey {
    let mut key: PortMapKey = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port,
                protocol(p.protocol.as_ref()).to_string(),
                p.app_protocol.clone(),
            )
        })
        .collect();
    key.sort();
    key
}

/// An endpoint's identity (upstream's endpoint hash): its addresses, hostname and target.
type EndpointKey = (Vec<String>, Option<String>, Option<String>, Option<String>);

fn endpoint_key(ep: &Endpoint) -> EndpointKey {
    let mut addresses = ep.addresses.clone();
    addresses.sort();
    let target = ep.target_ref.as_ref();
    (
        addresses,
        ep.hostname.clone(),
        target.and_then(|r| r.namespace.clone()),
        target.and_then(|r| r.name.clone()),
    )
}

/// Whether two endpoints with the same identity differ in what else they say (upstream's
/// `EndpointsEqualBeyondHash`).
fn equal_beyond_key(a: &Endpoint, b: &Endpoint) -> bool {
    let cond = |e: &Endpoint| {
        let c = e.conditions.clone().unwrap_or_default();
        (c.ready, c.serving, c.terminating)
    };
    let target = |e: &Endpoint| {
        e.target_ref.clone().map(|mut r| {
            r.resource_version = None;
            r
        })
    };
    a.node_name == b.node_name
        && a.zone == b.zone
        && cond(a) == cond(b)
        && a.hints == b.hints
        && target(a) == target(b)
}

/// The slice endpoint of `pod` (upstream's `podToEndpoint`): serving when the pod is ready,
/// terminating when it is being deleted, ready when serving and not terminating (always,
/// when the Service publishes not-ready addresses).
pub fn pod_endpoint(
    pod: &Pod,
    zone: Option<String>,
    svc: &Service,
    address_type: &str,
) -> Endpoint {
    let serving = pods::is_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let ready = publish_not_ready(svc) || (serving && !terminating);
    let want_v6 = address_type == "IPv6";
    Endpoint {
        addresses: pod_ips(pod)
            .into_iter()
            .filter(|ip| is_ipv6(ip) == want_v6)
            .map(str::to_string)
            .collect(),
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: endpoint_hostname(pod, svc),
        node_name: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        target_ref: Some(pod_reference(pod)),
        zone: zone.filter(|z| !z.is_empty()),
        ..Default::default()
    }
}

/// A new, empty slice of `svc` with `ports` and `address_type` (upstream's
/// `newEndpointSlice`).
pub fn new_slice(svc: &Service, ports: Vec<EndpointPort>, address_type: &str) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "{}-",
                svc.metadata.name.as_deref().unwrap_or_default()
            )),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(slice_labels(svc)),
            owner_references: Some(vec![owner_reference(svc)]),
            ..Default::default()
        },
        address_type: address_type.to_string(),
        endpoints: Vec::new(),
        ports: Some(ports),
    }
}

/// Plans the writes that make `existing` (the slices labelled for `svc` and managed by this
/// controller) hold the endpoints of `pods` (those `svc` selects), at most `max` per slice.
/// `node` looks up the zone of a node by name.
pub fn plan(
    svc: &Service,
    pods: &[Arc<Pod>],
    existing: &[Arc<EndpointSlice>],
    node: &dyn Fn(&str) -> NodeZone,
    max: usize,
) -> Plan {
    let types = address_types(svc);
    let mut plan = Plan::default();
    let mut by_type: BTreeMap<&str, Vec<Arc<EndpointSlice>>> = BTreeMap::new();
    let mut unsupported = Vec::new();
    for slice in existing {
        match types.get(slice.address_type.as_str()) {
            Some(t) => by_type.entry(t).or_default().push(slice.clone()),
            None => unsupported.push(slice.clone()),
        }
    }
    for address_type in &types {
        let existing = by_type.remove(address_type).unwrap_or_default();
        let typed = plan_address_type(
            svc,
            pods,
            &existing,
            address_type,
            node,
            max,
            &mut plan.missing_nodes,
        );
        plan.create.extend(typed.create);
        plan.update.extend(typed.update);
        plan.delete.extend(typed.delete);
    }
    plan.delete.extend(unsupported);
    plan
}

/// Upstream's `reconcileByAddressType` followed by the create-to-update folding of
/// `finalize`.
fn plan_address_type(
    svc: &Service,
    pods: &[Arc<Pod>],
    existing: &[Arc<EndpointSlice>],
    address_type: &str,
    node: &dyn Fn(&str) -> NodeZone,
    max: usize,
    missing_nodes: &mut BTreeSet<String>,
) -> Plan {
    let mut plan = Plan::default();
    let mut existing_by_ports: BTreeMap<PortMapKey, Vec<Arc<EndpointSlice>>> = BTreeMap::new();
    for slice in existing {
        if owned_by(slice, svc) {
            let key = port_map_key(slice.ports.as_deref().unwrap_or_default());
            existing_by_ports
                .entry(key)
                .or_default()
                .push(slice.clone());
        } else {
            plan.delete.push(slice.clone());
        }
    }

    let mut desired: BTreeMap<PortMapKey, (Vec<EndpointPort>, BTreeMap<EndpointKey, Endpoint>)> =
        BTreeMap::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, true) {
            continue;
        }
        let ports = endpoint_ports(svc, pod);
        let group = desired
            .entry(port_map_key(&ports))
            .or_insert_with(|| (ports, BTreeMap::new()));
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or_default();
        let zone = if node_name.is_empty() {
            None
        } else {
            match node(node_name) {
                Some(zone) => zone,
                // Left out until its node is known, unless the Service publishes every
                // address regardless.
                None if !publish_not_ready(svc) => {
                    missing_nodes.insert(node_name.to_string());
                    continue;
                }
                None => None,
            }
        };
        let endpoint = pod_endpoint(pod, zone, svc, address_type);
        if !endpoint.addresses.is_empty() {
            group.1.insert(endpoint_key(&endpoint), endpoint);
        }
    }

    for (key, (ports, endpoints)) in desired.iter_mut() {
        let slices = existing_by_ports
            .get(key)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let by_ports = plan_port_map(svc, slices, endpoints, ports, address_type, max);
        plan.create.extend(by_ports.create);
        plan.update.extend(by_ports.update);
        plan.delete.extend(by_ports.delete);
    }
    for (key, slices) in existing_by_ports {
        if !desired.contains_key(&key) {
            plan.delete.extend(slices);
        }
    }

    // A Service without endpoints keeps one empty placeholder slice.
    if existing.len() == plan.delete.len() && plan.create.is_empty() {
        let placeholder = new_slice(svc, Vec::new(), address_type);
        if plan.delete.len() == 1 && same_placeholder(&plan.delete[0], &placeholder) {
            plan.delete.clear();
        } else {
            plan.create.push(placeholder);
        }
    }

    // Turn creates into updates of slices that would be deleted.
    let mut i = 0;
    while i < plan.delete.len() {
        let doomed = &plan.delete[i];
        if doomed.address_type == address_type && owned_by(doomed, svc) {
            let Some(mut slice) = plan.create.pop() else {
                break;
            };
            slice.metadata.name = doomed.metadata.name.clone();
            slice.metadata.uid = doomed.metadata.uid.clone();
            slice.metadata.resource_version = doomed.metadata.resource_version.clone();
            plan.update.push(slice);
            plan.delete.remove(i);
        } else {
            i += 1;
        }
    }
    plan
}

/// Whether `slice` is already the placeholder `placeholder` describes (upstream compares
/// namespace, labels, address type, endpoints and ports).
fn same_placeholder(slice: &EndpointSlice, placeholder: &EndpointSlice) -> bool {
    slice.metadata.namespace == placeholder.metadata.namespace
        && slice.metadata.labels.clone().unwrap_or_default()
            == placeholder.metadata.labels.clone().unwrap_or_default()
        && slice.address_type == placeholder.address_type
        && slice.endpoints.is_empty()
        && slice.ports.as_deref().unwrap_or_default().is_empty()
}

/// Upstream's `reconcileByPortMapping`: the writes for the slices of one port map.
fn plan_port_map(
    svc: &Service,
    existing: &[Arc<EndpointSlice>],
    desired: &mut BTreeMap<EndpointKey, Endpoint>,
    ports: &[EndpointPort],
    address_type: &str,
    max: usize,
) -> Plan {
    let labels = slice_labels(svc);
    let mut plan = Plan::default();
    let mut to_update: Vec<EndpointSlice> = Vec::new();
    let mut unchanged: Vec<Arc<EndpointSlice>> = Vec::new();

    // 1. Keep what is still desired in each slice, updated.
    for slice in existing {
        let mut kept = Vec::with_capacity(slice.endpoints.len());
        let mut changed = false;
        for endpoint in &slice.endpoints {
            if let Some(want) = desired.remove(&endpoint_key(endpoint)) {
                changed |= !equal_beyond_key(&want, endpoint);
                kept.push(want);
            }
        }
        let labels_changed = slice.metadata.labels.as_ref() != Some(&labels);
        if changed || kept.len() != slice.endpoints.len() {
            if kept.is_empty() {
                plan.delete.push(slice.clone());
            } else {
                let mut slice = (**slice).clone();
                slice.endpoints = kept;
                slice.metadata.labels = Some(labels.clone());
                to_update.push(slice);
            }
        } else if labels_changed {
            let mut slice = (**slice).clone();
            slice.metadata.labels = Some(labels.clone());
            to_update.push(slice);
        } else {
            unchanged.push(slice.clone());
        }
    }

    // 2. Fill the slices being updated anyway, fullest first.
    if !desired.is_empty() && !to_update.is_empty() {
        to_update.sort_by(|a, b| {
            b.endpoints
                .len()
                .cmp(&a.endpoints.len())
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        });
        for slice in &mut to_update {
            fill(slice, desired, max);
        }
    }

    // 3. Put what is left in the unchanged slice it fits best, or in new slices.
    unchanged.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    while !desired.is_empty() {
        let target = if desired.len() < max {
            slice_to_fill(&unchanged, desired.len(), max)
        } else {
            None
        };
        match target {
            Some(index) => {
                let mut slice = (*unchanged.remove(index)).clone();
                fill(&mut slice, desired, max);
                to_update.push(slice);
            }
            None => {
                let mut slice = new_slice(svc, ports.to_vec(), address_type);
                fill(&mut slice, desired, max);
                plan.create.push(slice);
            }
        }
    }
    plan.update = to_update;
    plan
}

/// Moves desired endpoints into `slice` until it holds `max`.
fn fill(slice: &mut EndpointSlice, desired: &mut BTreeMap<EndpointKey, Endpoint>, max: usize) {
    while slice.endpoints.len() < max {
        let Some((_, endpoint)) = desired.pop_first() else {
            return;
        };
        slice.endpoints.push(endpoint);
    }
}

/// The slice `count` more endpoints fit in with the least room to spare (upstream's
/// `getSliceToFill`).
fn slice_to_fill(slices: &[Arc<EndpointSlice>], count: usize, max: usize) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, slice) in slices.iter().enumerate() {
        let Some(spare) = max.checked_sub(count + slice.endpoints.len()) else {
            continue;
        };
        if best.is_none_or(|(_, least)| spare < least) {
            best = Some((i, spare));
            if spare == 0 {
                break;
            }
        }
    }
    best.map(|(i, _)| i)
}
