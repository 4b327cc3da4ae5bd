//! A node and its pods in scratch network namespaces, for the integration tests and
//! `rkube-proxy-bench traffic`: the node's namespace is where rkube-proxy's rules go, and
//! each pod is a namespace of its own, linked to the node by a veth pair.
//!
//! Pods are wired as the CNI `ptp` plugin wires them: the node's end of each veth carries
//! the pod network's gateway address (/32) and a /32 route to the pod, and the pod routes
//! everything through that gateway. So all pod traffic, pod to pod included, crosses the
//! node's IP stack and its nftables hooks. (With the `bridge` plugin, traffic between two
//! pods of one node only reaches those hooks through `br_netfilter`, a host-wide module that
//! a test should not load.)

use std::net::Ipv4Addr;

use crate::netns::{Error, ScratchNetns};

/// A namespace linked to the node: a pod, or a host outside the cluster.
#[derive(Debug)]
pub struct Peer {
    netns: ScratchNetns,
    ip: Ipv4Addr,
}

impl Peer {
    /// Its namespace.
    pub fn netns(&self) -> &ScratchNetns {
        &self.netns
    }

    /// Its address (on `eth0`).
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
}

/// The node: a namespace with IP forwarding on, to which pods and outside hosts are linked.
#[derive(Debug)]
pub struct Node {
    netns: ScratchNetns,
    prefix: String,
    gateway: Ipv4Addr,
    links: usize,
}

impl Node {
    /// Creates the namespace `{prefix}-node`. `gateway` is the pod network's gateway
    /// address, which the node puts on each pod's link.
    pub fn create(prefix: &str, gateway: Ipv4Addr) -> Result<Node, Error> {
        let netns = ScratchNetns::create(&format!("{prefix}-node"))?;
        netns.sysctl("net.ipv4.ip_forward", "1")?;
        Ok(Node {
            netns,
            prefix: prefix.to_string(),
            gateway,
            links: 0,
        })
    }

    /// The node's namespace.
    pub fn netns(&self) -> &ScratchNetns {
        &self.netns
    }

    /// The pods' gateway address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// Creates the pod namespace `{prefix}-{tag}` with `ip` on its `eth0`, linked to the
    /// node (`vethN` there).
    pub fn add_pod(&mut self, tag: &str, ip: Ipv4Addr) -> Result<Peer, Error> {
        let pod = ScratchNetns::create(&format!("{}-{tag}", self.prefix))?;
        let veth = format!("veth{}", self.links);
        self.links += 1;
        let gw = self.gateway;
        self.netns.ip(&format!(
            "link add {veth} type veth peer name eth0 netns {}",
            pod.name()
        ))?;
        self.netns.ip(&format!("addr add {gw}/32 dev {veth}"))?;
        self.netns.ip(&format!("link set {veth} up"))?;
        self.netns.ip(&format!("route add {ip}/32 dev {veth}"))?;
        pod.ip(&format!("addr add {ip}/32 dev eth0"))?;
        pod.ip("link set eth0 up")?;
        pod.ip(&format!("route add {gw}/32 dev eth0 scope link"))?;
        pod.ip(&format!("route add default via {gw} dev eth0"))?;
        Ok(Peer { netns: pod, ip })
    }

    /// Creates the namespace `{prefix}-{tag}` for a host outside the cluster, on a subnet
    /// (`/prefix_len`) of its own with the node (`extN` there, address `node_ip`). The node's
    /// default route goes through the host; the host sends `routes` (CIDRs, such as the
    /// Service range) through the node, as a router in front of a cluster may.
    pub fn add_outside_host(
        &mut self,
        tag: &str,
        node_ip: Ipv4Addr,
        host_ip: Ipv4Addr,
        prefix_len: u8,
        routes: &[&str],
    ) -> Result<Peer, Error> {
        let host = ScratchNetns::create(&format!("{}-{tag}", self.prefix))?;
        let ext = format!("ext{}", self.links);
        self.links += 1;
        self.netns.ip(&format!(
            "link add {ext} type veth peer name eth0 netns {}",
            host.name()
        ))?;
        self.netns
            .ip(&format!("addr add {node_ip}/{prefix_len} dev {ext}"))?;
        self.netns.ip(&format!("link set {ext} up"))?;
        self.netns.ip(&format!("route add default via {host_ip}"))?;
        host.ip(&format!("addr add {host_ip}/{prefix_len} dev eth0"))?;
        host.ip("link set eth0 up")?;
        for cidr in routes {
            host.ip(&format!("route add {cidr} via {node_ip}"))?;
        }
        Ok(Peer {
            netns: host,
            ip: host_ip,
        })
    }
}
