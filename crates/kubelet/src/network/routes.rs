//! host-gw routes: one route `<podCIDR> via <InternalIP>` in the main table for every other
//! node, tagged with [`ROUTE_PROTOCOL`] so the kubelet knows its own routes and never
//! touches anyone else's. Planning (desired against installed) is pure; applying it spawns
//! `ip`.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;
use serde::Deserialize;

use super::{Error, Host, Result};
use rkube_types::cidr::Ipv4Cidr;

/// The route protocol (`ip route ... proto 66`) of the routes the kubelet installs. The
/// numbers named in iproute2's `rt_protos` are taken by kernels and routing daemons
/// (kernel 2, boot 3, static 4, bird 12, babel 42, openr 99, bgp 186, ...); 66 is not.
pub const ROUTE_PROTOCOL: u8 = 66;

/// A route the kubelet wants: `dst via via`, to reach the pods of `node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredRoute {
    /// The node's pod CIDR.
    pub dst: Ipv4Cidr,
    /// The node's InternalIP.
    pub via: Ipv4Addr,
    /// The node's name, for logs.
    pub node: String,
}

/// A route of protocol [`ROUTE_PROTOCOL`] found in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledRoute {
    /// Its destination.
    pub dst: Ipv4Cidr,
    /// Its gateway (none for device routes and multipath routes).
    pub gateway: Option<Ipv4Addr>,
    /// Its metric (0 when `ip` prints none).
    pub metric: u32,
}

/// What to change so the installed routes become the desired ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePlan {
    /// Routes to add: no route of ours has their destination.
    pub add: Vec<DesiredRoute>,
    /// Routes of ours (metric 0) whose gateway is wrong, to replace in place.
    pub replace: Vec<DesiredRoute>,
    /// Routes of ours nobody wants any more (node gone, pod CIDR changed) or duplicates.
    pub delete: Vec<InstalledRoute>,
}

impl RoutePlan {
    /// Whether nothing needs to change.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.replace.is_empty() && self.delete.is_empty()
    }
}

/// The first IPv4 pod CIDR of `node` (`spec.podCIDRs`, else `spec.podCIDR`).
pub fn node_pod_cidr(node: &Node) -> Option<Ipv4Cidr> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidrs
        .iter()
        .flatten()
        .chain(spec.pod_cidr.iter())
        .find_map(|c| c.parse().ok())
}

/// The first IPv4 `InternalIP` of `node`.
pub fn node_internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
}

/// The routes this node wants: one per other node that has an IPv4 pod CIDR and an IPv4
/// InternalIP. Skipped: this node (`self_name`), nodes at this node's own address
/// `self_ip` (several nodes on one machine, as in tests: the pods are on local bridges
/// already), and pod CIDRs that overlap `own_cidr` (a route would hide this node's
/// bridge). When two nodes claim one pod CIDR, the first by name wins.
pub fn desired_routes<N: Borrow<Node>>(
    nodes: &[N],
    self_name: &str,
    self_ip: Option<Ipv4Addr>,
    own_cidr: Option<Ipv4Cidr>,
) -> BTreeMap<Ipv4Cidr, DesiredRoute> {
    let mut sorted: Vec<&Node> = nodes.iter().map(Borrow::borrow).collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out: BTreeMap<Ipv4Cidr, DesiredRoute> = BTreeMap::new();
    for node in sorted {
        let name = node.metadata.name.clone().unwrap_or_default();
        if name == self_name {
            continue;
        }
        let (Some(dst), Some(via)) = (node_pod_cidr(node), node_internal_ip(node)) else {
            continue;
        };
        if Some(via) == self_ip
            || own_cidr.is_some_and(|own| own.contains(&dst) || dst.contains(&own))
        {
            continue;
        }
        if let Some(first) = out.get(&dst) {
            tracing::debug!(node = %name, other = %first.node, pod_cidr = %dst, "two nodes have one pod cidr; routing to the first");
            continue;
        }
        out.insert(
            dst,
            DesiredRoute {
                dst,
                via,
                node: name,
            },
        );
    }
    out
}

/// Compares `desired` with the `installed` routes of our protocol.
pub fn plan(desired: &BTreeMap<Ipv4Cidr, DesiredRoute>, installed: &[InstalledRoute]) -> RoutePlan {
    let mut out = RoutePlan::default();
    let mut by_dst: BTreeMap<Ipv4Cidr, Vec<&InstalledRoute>> = BTreeMap::new();
    for r in installed {
        by_dst.entry(r.dst).or_default().push(r);
    }
    for (dst, routes) in &by_dst {
        let Some(want) = desired.get(dst) else {
            out.delete.extend(routes.iter().map(|r| (*r).clone()));
            continue;
        };
        // Ours go in with metric 0: keep the one that matches, or replace the metric-0 one
        // in place; any other route of ours to this destination is a leftover.
        let exact = routes
            .iter()
            .position(|r| r.metric == 0 && r.gateway == Some(want.via));
        let metric0 = routes.iter().position(|r| r.metric == 0);
        match (exact, metric0) {
            (Some(_), _) => {}
            (None, Some(_)) => out.replace.push(want.clone()),
            (None, None) => out.add.push(want.clone()),
        }
        let keep = exact.or(metric0);
        out.delete.extend(
            routes
                .iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != keep)
                .map(|(_, r)| (*r).clone()),
        );
    }
    out.add.extend(
        desired
            .iter()
            .filter(|(dst, _)| !by_dst.contains_key(dst))
            .map(|(_, r)| r.clone()),
    );
    out
}

/// One route as `ip -j route` prints it.
#[derive(Debug, Deserialize)]
struct IpRoute {
    dst: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    metric: Option<u32>,
}

/// Parses `ip -4 -j route show` output; entries that are not IPv4 routes are skipped.
pub fn parse_installed(json: &str) -> std::result::Result<Vec<InstalledRoute>, serde_json::Error> {
    // `ip -j` prints nothing at all (not `[]`) on some versions when there is no route.
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    let routes: Vec<IpRoute> = serde_json::from_str(json)?;
    Ok(routes
        .into_iter()
        .filter_map(|r| {
            Some(InstalledRoute {
                dst: Ipv4Cidr::parse_route_dst(&r.dst).ok()?,
                gateway: r.gateway.and_then(|g| g.parse().ok()),
                metric: r.metric.unwrap_or(0),
            })
        })
        .collect())
}

/// The routes of protocol [`ROUTE_PROTOCOL`] in the main table of `host`.
pub async fn list(host: &Host) -> Result<Vec<InstalledRoute>> {
    let proto = ROUTE_PROTOCOL.to_string();
    let args = [
        "-4", "-j", "route", "show", "table", "main", "proto", &proto,
    ];
    let out = host.run("ip", &args, None).await?;
    parse_installed(&out).map_err(|source| Error::Output {
        command: host.describe("ip", &args),
        source,
    })
}

/// Adds (`replace` false: fails when any route, ours or not, has the key) or replaces one
/// of ours in place.
pub async fn install(host: &Host, route: &DesiredRoute, replace: bool) -> Result<()> {
    let (dst, via, proto) = (
        route.dst.to_string(),
        route.via.to_string(),
        ROUTE_PROTOCOL.to_string(),
    );
    let verb = if replace { "replace" } else { "add" };
    host.run(
        "ip",
        &[
            "-4", "route", verb, &dst, "via", &via, "proto", &proto, "table", "main",
        ],
        None,
    )
    .await
    .map(drop)
}

/// Deletes one of ours; naming the protocol makes the kernel match only routes of it.
pub async fn remove(host: &Host, route: &InstalledRoute) -> Result<()> {
    let (dst, proto, metric) = (
        route.dst.to_string(),
        ROUTE_PROTOCOL.to_string(),
        route.metric.to_string(),
    );
    let gateway = route.gateway.map(|g| g.to_string());
    let mut args = vec![
        "-4", "route", "del", &dst, "proto", &proto, "table", "main", "metric", &metric,
    ];
    if let Some(g) = &gateway {
        args.extend(["via", g.as_str()]);
    }
    host.run("ip", &args, None).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};

    fn c(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn node(name: &str, cidr: Option<&str>, internal_ip: Option<&str>) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n.spec = Some(NodeSpec {
            pod_cidr: cidr.map(Into::into),
            pod_cidrs: cidr.map(|c| vec![c.into()]),
            ..Default::default()
        });
        let mut addresses = vec![NodeAddress {
            type_: "Hostname".into(),
            address: name.into(),
        }];
        if let Some(a) = internal_ip {
            addresses.push(NodeAddress {
                type_: "InternalIP".into(),
                address: a.into(),
            });
        }
        n.status = Some(NodeStatus {
            addresses: Some(addresses),
            ..Default::default()
        });
        n
    }

    fn want(dst: &str, via: &str, node: &str) -> DesiredRoute {
        DesiredRoute {
            dst: c(dst),
            via: ip(via),
            node: node.into(),
        }
    }

    fn have(dst: &str, via: Option<&str>, metric: u32) -> InstalledRoute {
        InstalledRoute {
            dst: c(dst),
            gateway: via.map(ip),
            metric,
        }
    }

    #[test]
    fn desired_routes_cover_other_nodes_with_cidr_and_ip() {
        let nodes = vec![
            node("a", Some("10.244.0.0/24"), Some("172.18.0.2")),
            node("b", Some("10.244.1.0/24"), Some("172.18.0.3")),
            node("c", None, Some("172.18.0.4")),
            node("d", Some("10.244.3.0/24"), None),
            node("e", Some("fd00:1::/64"), Some("172.18.0.6")),
            node("f", Some("10.244.5.0/24"), Some("fd00::6")),
            // Same machine as "a" (tests run several nodes on one host).
            node("g", Some("10.244.6.0/24"), Some("172.18.0.2")),
            // Overlaps a's own pod CIDR.
            node("h", Some("10.244.0.0/16"), Some("172.18.0.8")),
            // Claims b's CIDR: b wins by name.
            node("i", Some("10.244.1.0/24"), Some("172.18.0.9")),
        ];
        let got = desired_routes(
            &nodes,
            "a",
            Some(ip("172.18.0.2")),
            Some(c("10.244.0.0/24")),
        );
        assert_eq!(
            got.into_values().collect::<Vec<_>>(),
            vec![want("10.244.1.0/24", "172.18.0.3", "b")]
        );
    }

    #[test]
    fn dual_stack_nodes_route_their_ipv4_cidr() {
        let mut n = node("b", None, Some("172.18.0.3"));
        if let Some(spec) = n.spec.as_mut() {
            spec.pod_cidrs = Some(vec!["fd00:1::/64".into(), "10.244.1.0/24".into()]);
        }
        assert_eq!(node_pod_cidr(&n), Some(c("10.244.1.0/24")));
    }

    #[test]
    fn plan_adds_replaces_and_deletes() {
        let desired: BTreeMap<_, _> = [
            want("10.244.1.0/24", "172.18.0.3", "b"),
            want("10.244.2.0/24", "172.18.0.4", "c"),
            want("10.244.3.0/24", "172.18.0.5", "d"),
        ]
        .into_iter()
        .map(|r| (r.dst, r))
        .collect();
        let installed = vec![
            // Right.
            have("10.244.1.0/24", Some("172.18.0.3"), 0),
            // Wrong gateway: node c changed its address.
            have("10.244.2.0/24", Some("172.18.0.99"), 0),
            // A node that left.
            have("10.244.9.0/24", Some("172.18.0.10"), 0),
            // A leftover of ours with another metric beside the right one.
            have("10.244.1.0/24", Some("172.18.0.3"), 100),
        ];
        let p = plan(&desired, &installed);
        assert_eq!(p.add, vec![want("10.244.3.0/24", "172.18.0.5", "d")]);
        assert_eq!(p.replace, vec![want("10.244.2.0/24", "172.18.0.4", "c")]);
        assert_eq!(
            p.delete,
            vec![
                have("10.244.1.0/24", Some("172.18.0.3"), 100),
                have("10.244.9.0/24", Some("172.18.0.10"), 0),
            ]
        );
    }

    #[test]
    fn plan_adds_when_only_another_metric_is_ours() {
        let desired: BTreeMap<_, _> = [want("10.244.1.0/24", "172.18.0.3", "b")]
            .into_iter()
            .map(|r| (r.dst, r))
            .collect();
        let p = plan(&desired, &[have("10.244.1.0/24", None, 5)]);
        assert_eq!(p.add, desired.values().cloned().collect::<Vec<_>>());
        assert!(p.replace.is_empty());
        assert_eq!(p.delete, vec![have("10.244.1.0/24", None, 5)]);
    }

    #[test]
    fn plan_of_converged_state_is_empty() {
        let desired: BTreeMap<_, _> = [want("10.244.1.0/24", "172.18.0.3", "b")]
            .into_iter()
            .map(|r| (r.dst, r))
            .collect();
        assert!(plan(&desired, &[have("10.244.1.0/24", Some("172.18.0.3"), 0)]).is_empty());
        assert!(plan(&BTreeMap::new(), &[]).is_empty());
        assert_eq!(
            plan(
                &BTreeMap::new(),
                &[have("10.244.1.0/24", Some("172.18.0.3"), 0)]
            )
            .delete,
            vec![have("10.244.1.0/24", Some("172.18.0.3"), 0)]
        );
    }

    #[test]
    fn parses_ip_json() {
        let json = r#"[{"dst":"10.244.1.0/24","gateway":"172.18.0.3","dev":"eth0","protocol":"66","flags":[]},
            {"dst":"10.1.2.3","gateway":"172.18.0.4","dev":"eth0","protocol":"66","metric":7,"flags":[]},
            {"dst":"default","dev":"eth0","protocol":"66","flags":[]},
            {"dst":"10.9.0.0/16","protocol":"66","nexthops":[{"gateway":"172.18.0.5","dev":"eth0"}]}]"#;
        assert_eq!(
            parse_installed(json).unwrap(),
            vec![
                have("10.244.1.0/24", Some("172.18.0.3"), 0),
                have("10.1.2.3/32", Some("172.18.0.4"), 7),
                have("0.0.0.0/0", None, 0),
                have("10.9.0.0/16", None, 0),
            ]
        );
        assert_eq!(parse_installed("").unwrap(), vec![]);
        assert_eq!(parse_installed("[]\n").unwrap(), vec![]);
        assert!(parse_installed("{").is_err());
    }
}
