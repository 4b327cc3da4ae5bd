//! Filter: host ports already used on a node, as upstream's `NodePorts` plugin. Two
//! `(hostIP, protocol, hostPort)` entries conflict when protocol and port are equal and the
//! IPs are equal or either is `0.0.0.0` (every address).

use std::sync::Arc;

use crate::framework::{CycleState, FilterPlugin, Plugin, PreFilterPlugin, Status};
use crate::node_info::{HostPort, NodeInfo, PodInfo};
use crate::snapshot::Snapshot;

/// The plugin's name in configuration.
pub const NAME: &str = "NodePorts";

/// The Filter reason, worded as upstream.
pub const ERR_REASON: &str = "node(s) didn't have free ports for the requested pod ports";

/// The host IP that means every address.
const BIND_ALL: &str = "0.0.0.0";

/// `ip` with upstream's defaults: empty means every address.
fn sanitize_ip(ip: &str) -> &str {
    if ip.is_empty() { BIND_ALL } else { ip }
}

/// `protocol` with upstream's defaults: empty means TCP.
fn sanitize_protocol(protocol: &str) -> &str {
    if protocol.is_empty() { "TCP" } else { protocol }
}

/// Whether two host ports cannot both be bound on one node (upstream's
/// `HostPortInfo.CheckConflict`): same protocol and port, and the same IP or either one
/// binding every address. Port 0 (unset) never conflicts.
pub fn conflicts(want: &HostPort, used: &HostPort) -> bool {
    if want.port <= 0 || want.port != used.port {
        return false;
    }
    if sanitize_protocol(&want.protocol) != sanitize_protocol(&used.protocol) {
        return false;
    }
    let (a, b) = (sanitize_ip(&want.ip), sanitize_ip(&used.ip));
    a == BIND_ALL || b == BIND_ALL || a == b
}

/// Whether every host port the pod wants is free on the node.
pub fn fits(pod: &PodInfo, node: &NodeInfo) -> bool {
    // The node's used ports are few; scanning them avoids building lookup keys per node.
    pod.host_ports
        .iter()
        .all(|want| !node.used_ports.keys().any(|used| conflicts(want, used)))
}

/// The NodePorts plugin. The pod's host ports are precomputed in [`PodInfo::host_ports`],
/// so PreFilter only decides whether Filter runs at all.
#[derive(Debug, Default)]
pub struct NodePorts;

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for NodePorts {
    fn pre_filter(&self, _state: &mut CycleState, pod: &PodInfo, _snapshot: &Snapshot) -> Status {
        if pod.host_ports.is_empty() {
            Status::skip()
        } else {
            Status::success()
        }
    }
}

impl FilterPlugin for NodePorts {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if fits(pod, node) {
            Status::success()
        } else {
            Status::unschedulable(ERR_REASON)
        }
    }
}

/// Builds the plugin; it takes no args.
pub fn new(_args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(NodePorts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testing::{node, pod};
    use k8s_openapi::api::core::v1::{ContainerPort, Pod};

    fn hp(ip: &str, protocol: &str, port: i32) -> HostPort {
        HostPort {
            ip: ip.to_string(),
            protocol: protocol.to_string(),
            port,
        }
    }

    /// A pod asking for these `(hostIP, protocol, hostPort)` ports.
    fn pod_with_ports(name: &str, ports: &[(&str, &str, i32)]) -> PodInfo {
        let mut p: Pod = pod(name).build();
        if let Some(spec) = p.spec.as_mut() {
            spec.containers[0].ports = Some(
                ports
                    .iter()
                    .map(|(ip, protocol, port)| ContainerPort {
                        container_port: *port,
                        host_port: Some(*port),
                        host_ip: (!ip.is_empty()).then(|| ip.to_string()),
                        protocol: (!protocol.is_empty()).then(|| protocol.to_string()),
                        ..Default::default()
                    })
                    .collect(),
            );
        }
        PodInfo::new(Arc::new(p))
    }

    /// A node already running a pod with these ports.
    fn node_using(ports: &[(&str, &str, i32)]) -> NodeInfo {
        let mut n = NodeInfo::new(Arc::new(node("n").build()));
        n.add_pod(Arc::new(pod_with_ports("existing", ports)));
        n
    }

    fn filter(want: &[(&str, &str, i32)], used: &[(&str, &str, i32)]) -> Status {
        NodePorts.filter(
            &CycleState::new(),
            &pod_with_ports("p", want),
            &node_using(used),
        )
    }

    #[test]
    fn pod_without_host_ports_skips_the_filter() {
        let mut state = CycleState::new();
        let p = PodInfo::new(Arc::new(pod("p").build()));
        assert!(
            NodePorts
                .pre_filter(&mut state, &p, &Snapshot::new())
                .is_skip()
        );
        let p = PodInfo::new(Arc::new(pod("p").host_port(80).build()));
        assert!(
            NodePorts
                .pre_filter(&mut state, &p, &Snapshot::new())
                .is_success()
        );
    }

    #[test]
    fn same_port_protocol_and_ip_conflicts_with_upstream_reason() {
        let s = filter(&[("127.0.0.1", "TCP", 8080)], &[("127.0.0.1", "TCP", 8080)]);
        assert_eq!(s.code, Code::Unschedulable);
        assert_eq!(
            s.reasons,
            vec!["node(s) didn't have free ports for the requested pod ports"]
        );
    }

    #[test]
    fn different_port_protocol_or_ip_does_not_conflict() {
        assert!(filter(&[("127.0.0.1", "TCP", 8080)], &[("127.0.0.1", "TCP", 8081)]).is_success());
        assert!(filter(&[("127.0.0.1", "UDP", 8080)], &[("127.0.0.1", "TCP", 8080)]).is_success());
        assert!(filter(&[("127.0.0.1", "TCP", 8080)], &[("127.0.0.2", "TCP", 8080)]).is_success());
    }

    #[test]
    fn any_address_conflicts_with_every_ip_on_the_same_protocol_and_port() {
        // Wanted 0.0.0.0 against a specific IP in use.
        assert!(filter(&[("0.0.0.0", "TCP", 8080)], &[("127.0.0.1", "TCP", 8080)]).is_rejected());
        // A specific IP wanted while 0.0.0.0 is in use.
        assert!(filter(&[("10.0.0.1", "TCP", 8080)], &[("0.0.0.0", "TCP", 8080)]).is_rejected());
        // An unset host IP means 0.0.0.0.
        assert!(filter(&[("", "TCP", 8080)], &[("10.0.0.1", "TCP", 8080)]).is_rejected());
        // But not across protocols.
        assert!(filter(&[("0.0.0.0", "UDP", 8080)], &[("127.0.0.1", "TCP", 8080)]).is_success());
    }

    #[test]
    fn unset_protocol_means_tcp() {
        assert!(filter(&[("", "", 53)], &[("", "TCP", 53)]).is_rejected());
        assert!(filter(&[("", "", 53)], &[("", "UDP", 53)]).is_success());
        assert!(conflicts(&hp("", "", 53), &hp("0.0.0.0", "TCP", 53)));
    }

    #[test]
    fn one_conflicting_port_out_of_several_rejects() {
        let want = [("", "TCP", 80), ("", "TCP", 443)];
        assert!(filter(&want, &[("", "TCP", 443)]).is_rejected());
        assert!(filter(&want, &[("", "TCP", 8443)]).is_success());
    }

    #[test]
    fn port_zero_never_conflicts() {
        assert!(!conflicts(
            &hp("0.0.0.0", "TCP", 0),
            &hp("0.0.0.0", "TCP", 0)
        ));
    }

    #[test]
    fn ports_free_again_after_the_pod_leaves() {
        let mut n = node_using(&[("", "TCP", 80)]);
        let p = pod_with_ports("p", &[("", "TCP", 80)]);
        assert!(NodePorts.filter(&CycleState::new(), &p, &n).is_rejected());
        n.remove_pod("default/existing");
        assert!(NodePorts.filter(&CycleState::new(), &p, &n).is_success());
    }
}
