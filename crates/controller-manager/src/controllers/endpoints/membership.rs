//! Which pods back which Services, shared by the endpoints and endpointslice controllers
//! (upstream's `pkg/controller/util/endpoint` and `k8s.io/endpointslice/util`).
//!
//! A Service's endpoints are the pods of its namespace that its `spec.selector` matches, as
//! long as they are neither finished nor without an IP. Each service port reaches a pod on
//! the port its `targetPort` names: a number as is, a name resolved against the pod's
//! container ports of the same protocol. Pod changes map to the Services whose endpoints
//! they can change, so both controllers reconcile only those.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rkube_client::ObjectRef;

use crate::informer::{Change, Informer};
use crate::pods;

/// The label the controllers put on the Endpoints and EndpointSlices of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// Whether the IP is an IPv6 address (anything else counts as IPv4, as upstream's
/// `utilnet.IsIPv6String` does).
pub fn is_ipv6(ip: &str) -> bool {
    matches!(ip.parse::<IpAddr>(), Ok(IpAddr::V6(_)))
}

/// The selector of a Service whose endpoints the controllers manage. `None` for
/// `ExternalName` Services and for Services without a selector, whose endpoints are
/// written by someone else. An empty selector counts as none: the Kubernetes API does not
/// keep an empty map apart from an absent one.
pub fn managed_selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// Whether `selector` (a Service's equality selector) matches `labels`.
pub fn selects(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// Whether the Service is headless (`clusterIP: None`). Upstream also treats a Service
/// without a cluster IP as headless; every non-ExternalName Service gets one from the
/// apiserver there, so only `None` is checked here.
pub fn is_headless(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| ip == "None")
}

/// Whether the Service publishes the addresses of pods that are not ready.
pub fn publish_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// The Service's ports (none for a headless Service that declares none).
pub fn service_ports(svc: &Service) -> &[ServicePort] {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default()
}

/// The pod's IPs: `status.podIPs`, or `status.podIP` when the list is empty.
pub fn pod_ips(pod: &Pod) -> Vec<&str> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let ips: Vec<&str> = status
        .pod_ips
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|ip| ip.ip.as_str())
        .filter(|ip| !ip.is_empty())
        .collect();
    if !ips.is_empty() {
        return ips;
    }
    status
        .pod_ip
        .as_deref()
        .filter(|ip| !ip.is_empty())
        .into_iter()
        .collect()
}

/// Whether the pod belongs in a Service's endpoints at all (upstream's
/// `ShouldPodBeInEndpoints`): not finished, with an IP, and not being deleted unless
/// `include_terminating`.
pub fn should_pod_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if pods::is_terminated(pod) || pod_ips(pod).is_empty() {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

/// Whether the endpoint of `pod` carries its hostname: the pod names one and its
/// subdomain is this Service (upstream's `ShouldSetHostname`).
pub fn should_set_hostname(pod: &Pod, svc: &Service) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.hostname.as_deref().is_some_and(|h| !h.is_empty())
        && spec.subdomain.is_some()
        && spec.subdomain == svc.metadata.name
        && pod.metadata.namespace == svc.metadata.namespace
}

/// The pod's hostname when its endpoint for `svc` carries it.
pub fn endpoint_hostname(pod: &Pod, svc: &Service) -> Option<String> {
    if should_set_hostname(pod, svc) {
        pod.spec.as_ref().and_then(|s| s.hostname.clone())
    } else {
        None
    }
}

/// The protocol of a port, `TCP` when unset (the API default).
pub fn protocol(p: Option<&String>) -> &str {
    p.map_or("TCP", String::as_str)
}

/// The pod port a service port reaches (upstream's `podutil.FindPort`): a numeric
/// `targetPort` as is (an unset or zero one means the service port), a named one looked
/// up among the ports of the pod's containers and restartable init containers (sidecars)
/// with the same protocol. `None` when the pod has no such named port.
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let name = match &port.target_port {
        None => return Some(port.port),
        Some(IntOrString::Int(0)) => return Some(port.port),
        Some(IntOrString::Int(n)) => return Some(*n),
        Some(IntOrString::String(s)) => match s.parse::<i32>() {
            Ok(n) => return Some(if n == 0 { port.port } else { n }),
            Err(_) => s,
        },
    };
    let want = protocol(port.protocol.as_ref());
    let spec = pod.spec.as_ref()?;
    let sidecars = spec
        .init_containers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.as_deref().unwrap_or_default())
        .find(|p| p.name.as_deref() == Some(name.as_str()) && protocol(p.protocol.as_ref()) == want)
        .map(|p| p.container_port)
}

/// A reference to the pod, as endpoints name their target.
pub fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// The keys of the Services in `namespace` whose selector matches `labels`.
fn memberships(
    services: &Informer<Service>,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> BTreeSet<ObjectRef> {
    services
        .filter_namespace(namespace, |svc| {
            managed_selector(svc).is_some_and(|sel| selects(sel, labels))
        })
        .iter()
        .map(|svc| ObjectRef::from_obj(&**svc))
        .collect()
}

/// What of a pod its endpoints show, apart from its labels: whether it is being deleted,
/// ready or finished, its IPs, node, hostname and subdomain.
type EndpointView<'a> = (bool, bool, bool, Vec<&'a str>, [Option<&'a str>; 3]);

fn endpoint_view(pod: &Pod) -> EndpointView<'_> {
    let spec = pod.spec.as_ref();
    (
        pod.metadata.deletion_timestamp.is_some(),
        pods::is_ready(pod),
        pods::is_terminated(pod),
        pod_ips(pod),
        [
            spec.and_then(|s| s.node_name.as_deref()),
            spec.and_then(|s| s.hostname.as_deref()),
            spec.and_then(|s| s.subdomain.as_deref()),
        ],
    )
}

/// The Services whose endpoints a pod change can change (upstream's
/// `GetServicesToUpdateOnPodChange`): for an added or deleted pod those selecting it; for
/// an update that touches what endpoints show, those selecting the old or the new pod;
/// when only the labels changed, those that selected one but not the other.
pub fn services_for_pod_change(
    services: &Informer<Service>,
    change: &Change<Pod>,
) -> BTreeSet<ObjectRef> {
    let pod = change.object();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let (old, new) = match change {
        Change::Added(pod) | Change::Deleted(pod) => {
            return memberships(services, namespace, pod.metadata.labels.as_ref());
        }
        Change::Updated { old, new } => (old, new),
    };
    if old.metadata.resource_version.is_some()
        && old.metadata.resource_version == new.metadata.resource_version
    {
        return BTreeSet::new();
    }
    let pod_changed = endpoint_view(old) != endpoint_view(new);
    let labels_changed = old.metadata.labels != new.metadata.labels;
    if !pod_changed && !labels_changed {
        return BTreeSet::new();
    }
    let current = memberships(services, namespace, new.metadata.labels.as_ref());
    if !labels_changed {
        return current;
    }
    let before = memberships(services, namespace, old.metadata.labels.as_ref());
    if pod_changed {
        before.union(&current).cloned().collect()
    } else {
        before.symmetric_difference(&current).cloned().collect()
    }
}

/// Whether a create failed because the namespace is being deleted, where creates keep
/// failing until it is gone (upstream checks the `NamespaceTerminating` cause; the message
/// is checked too, for servers that send no cause).
pub fn is_namespace_terminating(e: &rkube_client::Error) -> bool {
    e.api_error().is_some_and(|err| {
        err.reason == rkube_types::Reason::Forbidden
            && (err
                .causes
                .iter()
                .any(|c| c.reason == "NamespaceTerminating")
                || err.message.contains("because it is being terminated"))
    })
}
