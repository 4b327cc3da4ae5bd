//! The pod network reconciler against a real kernel: routes, the nftables masquerade table
//! and the iptables forward chain, programmed in fresh network namespaces (each removed by
//! a drop guard). Most tests give `reconcile` the Nodes directly; the last runs the
//! kubelet's watch loop against an in-process apiserver. Needs root (`ip netns`), as CI
//! runs it, and busybox (`ping`) for the traffic test.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus};
use rkube_client::{Api, DeleteParams, Patch};
use rkube_kubelet::network::netfilter::{FORWARD_CHAIN, Forward, TABLE};
use rkube_kubelet::network::{Host, PodNetwork, Report, reconcile};
use rkube_testing::{TestApiserver, eventually};

fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:")
                    .and_then(|v| v.split_whitespace().next().map(str::to_string))
            })
        })
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "the pod network tests create network namespaces, routes and nftables tables and need root (scripts/test runs them as root)"
    );
}

/// A network namespace, deleted (with everything in it) when dropped.
struct Netns {
    name: String,
}

impl Netns {
    /// A namespace with only `lo`, up.
    fn empty() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "rkube-net-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.cmd("ip link set lo up");
        ns
    }

    /// A namespace with an uplink at 172.30.0.1/24.
    fn new() -> Self {
        let ns = Netns::empty();
        // The uplink other nodes are reachable on (a veth pair: no dummy module here).
        ns.cmd("ip link add uplink0 type veth peer name uplink1");
        ns.cmd("ip addr add 172.30.0.1/24 dev uplink0");
        ns.cmd("ip link set uplink1 up");
        ns.cmd("ip link set uplink0 up");
        ns
    }

    fn host(&self) -> Host {
        Host::netns(&self.name)
    }

    /// Runs `line` (words split on whitespace) in the namespace; panics with its stderr
    /// when it fails.
    fn cmd(&self, line: &str) -> String {
        self.exec(&line.split_whitespace().collect::<Vec<_>>())
    }

    /// Runs `args` in the namespace; panics with its stderr when it fails.
    fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", self.name.as_str()];
        all.extend(args);
        sh(&all)
    }

    /// The IPv4 routes of the main table, as (dst, gateway, protocol) sorted.
    fn routes(&self) -> Vec<(String, String, String)> {
        let json = self.cmd("ip -4 -j route show table main");
        let v: serde_json::Value = serde_json::from_str(&json).expect("ip -j route prints json");
        let mut out: Vec<(String, String, String)> = v
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let field = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                (field("dst"), field("gateway"), field("protocol"))
            })
            .collect();
        out.sort();
        out
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn node(name: &str, cidr: Option<&str>, ip: &str) -> Node {
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    n.spec = Some(NodeSpec {
        pod_cidr: cidr.map(Into::into),
        pod_cidrs: cidr.map(|c| vec![c.into()]),
        ..Default::default()
    });
    n.status = Some(NodeStatus {
        addresses: Some(vec![NodeAddress {
            type_: "InternalIP".into(),
            address: ip.into(),
        }]),
        ..Default::default()
    });
    n
}

fn pod_network(ns: &Netns) -> PodNetwork {
    PodNetwork {
        host: ns.host(),
        node_name: "a".into(),
        node_ip: Some(Ipv4Addr::new(172, 30, 0, 1)),
        cluster_cidr: "10.244.0.0/16".parse().unwrap(),
        pod_cidr: None,
    }
}

fn route(dst: &str, gw: &str, proto: &str) -> (String, String, String) {
    (dst.into(), gw.into(), proto.into())
}

#[tokio::test]
async fn routes_follow_nodes_and_leave_other_protocols_alone() {
    require_root();
    let ns = Netns::new();
    // Someone else's routes: one elsewhere, one on a pod CIDR a node will claim.
    ns.cmd("ip route add 10.250.0.0/24 via 172.30.0.9 proto static");
    ns.cmd("ip route add 10.244.5.0/24 via 172.30.0.9 proto bird");
    // Ours: a node that left, and one whose node changed its address.
    ns.cmd("ip route add 10.244.9.0/24 via 172.30.0.9 proto 66");
    ns.cmd("ip route add 10.244.2.0/24 via 172.30.0.99 proto 66");
    let net = pod_network(&ns);

    let nodes = vec![
        node("a", Some("10.244.0.0/24"), "172.30.0.1"),
        node("b", Some("10.244.1.0/24"), "172.30.0.2"),
        node("c", Some("10.244.2.0/24"), "172.30.0.3"),
        node("d", None, "172.30.0.4"),
        node("e", Some("10.244.5.0/24"), "172.30.0.5"),
    ];
    let report = reconcile(&net, &nodes).await.expect("reconcile");
    assert_eq!(
        (report.added, report.replaced, report.deleted, report.failed),
        (1, 1, 1, 1),
        "expected b added, c replaced, the stale route deleted and e refused (a bird route has its cidr): {report:?}"
    );
    let base = [
        route("10.244.5.0/24", "172.30.0.9", "bird"),
        route("10.250.0.0/24", "172.30.0.9", "static"),
        route("172.30.0.0/24", "", "kernel"),
    ];
    let mut want = vec![
        route("10.244.1.0/24", "172.30.0.2", "66"),
        route("10.244.2.0/24", "172.30.0.3", "66"),
    ];
    want.extend(base.iter().cloned());
    want.sort();
    assert_eq!(ns.routes(), want);

    // b leaves, c moves, e goes: the routes follow, nothing else changes.
    let nodes = vec![
        node("a", Some("10.244.0.0/24"), "172.30.0.1"),
        node("c", Some("10.244.2.0/24"), "172.30.0.4"),
    ];
    let report = reconcile(&net, &nodes).await.expect("second reconcile");
    assert_eq!(
        (report.added, report.replaced, report.deleted, report.failed),
        (0, 1, 1, 0),
        "{report:?}"
    );
    let mut want = vec![route("10.244.2.0/24", "172.30.0.4", "66")];
    want.extend(base.iter().cloned());
    want.sort();
    assert_eq!(ns.routes(), want);

    // Converged: nothing to do.
    let report = reconcile(&net, &nodes).await.expect("third reconcile");
    assert_eq!(
        (report.added, report.replaced, report.deleted, report.failed),
        (0, 0, 0, 0),
        "{report:?}"
    );
    assert_eq!(ns.routes(), want);
}

#[tokio::test]
async fn masquerade_forward_chain_and_ip_forwarding() {
    require_root();
    let ns = Netns::new();
    // Docker's FORWARD policy (this machine's), and forwarding off.
    ns.cmd("iptables -w 5 -P FORWARD DROP");
    ns.exec(&["sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"]);
    let net = PodNetwork {
        pod_cidr: Some("10.88.0.0/24".parse().unwrap()),
        ..pod_network(&ns)
    };
    // No node IPAM: the node's only pod CIDR is the flag's, outside the cluster CIDR.
    let nodes = vec![node("a", None, "172.30.0.1")];

    let report: Report = reconcile(&net, &nodes).await.expect("reconcile");
    assert!(report.enabled_forwarding, "{report:?}");
    assert_eq!(report.forward, Some(Forward::Accepting), "{report:?}");
    assert_eq!(ns.cmd("cat /proc/sys/net/ipv4/ip_forward").trim(), "1");

    let table = ns.cmd(&format!("nft list table ip {TABLE}"));
    let rules: Vec<&str> = table
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("ip "))
        .collect();
    assert_eq!(
        rules.len(),
        4,
        "expected four postrouting rules, table is:\n{table}"
    );
    assert!(
        table.contains("type nat hook postrouting priority srcnat; policy accept;"),
        "{table}"
    );
    assert!(
        rules[0].starts_with("ip saddr { 10.88.0.0/24, 10.244.0.0/16 } ip daddr { 10.88.0.0/24, 10.244.0.0/16 } return"),
        "{table}"
    );
    assert!(
        rules[1].contains("ip daddr != 224.0.0.0/4 masquerade fully-random"),
        "{table}"
    );
    assert!(rules[2].contains("ip daddr 10.88.0.0/24 return"), "{table}");
    assert!(rules[3].contains("masquerade fully-random"), "{table}");

    let forward = ns.cmd("iptables -w 5 -S FORWARD");
    assert!(
        forward.contains(&format!("-A FORWARD -j {FORWARD_CHAIN}")),
        "{forward}"
    );
    let chain = ns.cmd(&format!("iptables -w 5 -S {FORWARD_CHAIN}"));
    for rule in [
        "-s 10.88.0.0/24 -j ACCEPT",
        "-d 10.88.0.0/24 -j ACCEPT",
        "-s 10.244.0.0/16 -j ACCEPT",
        "-d 10.244.0.0/16 -j ACCEPT",
    ] {
        assert!(chain.contains(rule), "expected {rule:?} in:\n{chain}");
    }

    // Again, after node IPAM gave the node a CIDR inside the cluster CIDR: the table and
    // the chain are rewritten, not added to.
    let nodes = vec![node("a", Some("10.244.7.0/24"), "172.30.0.1")];
    let report = reconcile(&net, &nodes).await.expect("second reconcile");
    assert!(!report.enabled_forwarding, "{report:?}");
    let table = ns.cmd(&format!("nft list table ip {TABLE}"));
    assert_eq!(table.matches("masquerade").count(), 2, "{table}");
    assert!(!table.contains("10.88.0.0"), "{table}");
    assert!(table.contains("ip daddr 10.244.7.0/24 return"), "{table}");
    let forward = ns.cmd("iptables -w 5 -S FORWARD");
    assert_eq!(
        forward.matches(FORWARD_CHAIN).count(),
        1,
        "one jump only:\n{forward}"
    );
    let chain = ns.cmd(&format!("iptables -w 5 -S {FORWARD_CHAIN}"));
    assert_eq!(chain.matches("-j ACCEPT").count(), 2, "{chain}");
}

#[tokio::test]
async fn an_accepting_forward_chain_is_left_alone() {
    require_root();
    let ns = Netns::new();
    let report = reconcile(&pod_network(&ns), &[node("a", None, "172.30.0.1")])
        .await
        .expect("reconcile");
    assert_eq!(report.forward, Some(Forward::NotNeeded), "{report:?}");
    let forward = ns.cmd("iptables -w 5 -S FORWARD");
    assert!(!forward.contains(FORWARD_CHAIN), "{forward}");
}

/// Connects `a` and `b` with a veth pair named `a_if` (in `a`) and `b_if` (in `b`).
fn link(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    let line = format!(
        "ip link add {a_if} netns {} type veth peer name {b_if} netns {}",
        a.name, b.name
    );
    sh(&line.split_whitespace().collect::<Vec<_>>());
    a.cmd(&format!("ip link set {a_if} up"));
    b.cmd(&format!("ip link set {b_if} up"));
}

/// How many packets the `probe` table of `ns` counted (see [`probe`]).
fn probed(ns: &Netns) -> u64 {
    let table = ns.cmd("nft list table ip probe");
    table
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in:\n{table}"))
}

/// Counts packets from `saddr` arriving in `ns`.
fn probe(ns: &Netns, saddr: &str) {
    let rules = format!(
        "table ip probe {{\n\tchain input {{\n\t\ttype filter hook input priority filter; policy accept;\n\t\tip saddr {saddr} icmp type echo-request counter\n\t}}\n}}\n"
    );
    ns.exec(&["sh", "-c", &format!("echo '{rules}' | nft -f -")]);
}

/// A node: `uplink0` at `ip` on the LAN of `lan`, a bridge `rkube0` at `.1` of `cidr`'s
/// /24 and one pod at `.2` behind it, as the CNI bridge plugin would make it.
fn node_host(lan: &Netns, lan_if: &str, ip: &str, net: &str) -> (Netns, Netns) {
    let host = Netns::empty();
    link(&host, "uplink0", lan, lan_if);
    lan.cmd(&format!("ip link set {lan_if} master lan0"));
    host.cmd(&format!("ip addr add {ip}/24 dev uplink0"));
    host.cmd("ip route add default via 172.30.0.100");
    host.cmd("ip link add rkube0 type bridge");
    host.cmd(&format!("ip addr add {net}.1/24 dev rkube0"));
    host.cmd("ip link set rkube0 up");
    let pod = Netns::empty();
    link(&host, "veth0", &pod, "eth0");
    host.cmd("ip link set veth0 master rkube0");
    pod.cmd(&format!("ip addr add {net}.2/24 dev eth0"));
    pod.cmd(&format!("ip route add default via {net}.1"));
    (host, pod)
}

fn ping(from: &Netns, to: &str) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", &from.name, "busybox", "ping", "-c", "1", "-W", "2", to,
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Two nodes on one LAN with a host outside the cluster on it; node a drops forwarded
/// traffic by default, as Docker makes hosts do. Pods reach each other across the nodes
/// with their own addresses, and the outside host sees pod traffic from node a's address.
#[tokio::test]
async fn pods_reach_other_nodes_pods_unnated_and_the_outside_masqueraded() {
    require_root();
    let lan = Netns::empty();
    lan.cmd("ip link add lan0 type bridge");
    lan.cmd("ip addr add 172.30.0.100/24 dev lan0");
    lan.cmd("ip link set lan0 up");
    let (host_a, pod_a) = node_host(&lan, "a0", "172.30.0.1", "10.244.1");
    let (host_b, pod_b) = node_host(&lan, "b0", "172.30.0.2", "10.244.2");
    host_a.cmd("iptables -w 5 -P FORWARD DROP");
    let nodes = vec![
        node("a", Some("10.244.1.0/24"), "172.30.0.1"),
        node("b", Some("10.244.2.0/24"), "172.30.0.2"),
    ];
    for (host, name, ip) in [
        (&host_a, "a", [172, 30, 0, 1]),
        (&host_b, "b", [172, 30, 0, 2]),
    ] {
        let net = PodNetwork {
            host: host.host(),
            node_name: name.into(),
            node_ip: Some(Ipv4Addr::from(ip)),
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            pod_cidr: None,
        };
        let report = reconcile(&net, &nodes).await.expect("reconcile");
        assert_eq!(
            (report.added, report.failed),
            (1, 0),
            "node {name}: {report:?}"
        );
    }

    probe(&pod_b, "10.244.1.2");
    assert!(
        ping(&pod_a, "10.244.2.2"),
        "pod a could not reach pod b on the other node; node a's routes:\n{}\nforward chain:\n{}",
        host_a.cmd("ip route"),
        host_a.cmd("iptables -w 5 -S FORWARD")
    );
    assert_eq!(probed(&pod_b), 1, "pod b should see pod a's own address");

    probe(&lan, "172.30.0.1");
    assert!(
        ping(&pod_a, "172.30.0.100"),
        "pod a could not reach the outside host"
    );
    assert_eq!(
        probed(&lan),
        1,
        "the outside host should see pod a's traffic from node a's address"
    );
}

/// Creates Node `name` with pod CIDR `cidr` and InternalIP `ip` in the apiserver.
async fn create_node(api: &Api<Node>, name: &str, cidr: &str, ip: &str) {
    let n = node(name, Some(cidr), ip);
    let status = serde_json::json!({"status": serde_json::to_value(&n.status).unwrap()});
    api.create(&n).await.expect("create node");
    api.patch_status(name, &Patch::Merge(status))
        .await
        .expect("node status");
}

/// The kubelet's loop: routes appear as Nodes join, follow an address change and go when
/// the Node is deleted; and it stops on the shutdown signal.
#[tokio::test]
async fn the_reconciler_follows_node_events() {
    require_root();
    let ns = Netns::new();
    let apiserver = TestApiserver::start().await;
    let nodes: Api<Node> = Api::all(apiserver.client());
    create_node(&nodes, "a", "10.244.0.0/24", "172.30.0.1").await;
    create_node(&nodes, "b", "10.244.1.0/24", "172.30.0.2").await;

    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(rkube_kubelet::network::run(
        apiserver.client(),
        pod_network(&ns),
        stop,
    ));
    let ours = |ns: &Netns| -> Vec<(String, String, String)> {
        ns.routes().into_iter().filter(|r| r.2 == "66").collect()
    };
    let expect = |want: Vec<(String, String, String)>| {
        let ns = &ns;
        async move {
            eventually(&format!("routes {want:?}"), Duration::from_secs(10), || {
                let want = want.clone();
                async move {
                    let got = ours(ns);
                    if got == want {
                        Ok(())
                    } else {
                        Err(format!("{got:?}"))
                    }
                }
            })
            .await
        }
    };
    expect(vec![route("10.244.1.0/24", "172.30.0.2", "66")]).await;

    create_node(&nodes, "c", "10.244.2.0/24", "172.30.0.3").await;
    expect(vec![
        route("10.244.1.0/24", "172.30.0.2", "66"),
        route("10.244.2.0/24", "172.30.0.3", "66"),
    ])
    .await;

    let moved = serde_json::json!({"status": {"addresses": [{"type": "InternalIP", "address": "172.30.0.5"}]}});
    nodes
        .patch_status("c", &Patch::Merge(moved))
        .await
        .expect("move node c");
    nodes
        .delete("b", &DeleteParams::default())
        .await
        .expect("delete node b");
    expect(vec![route("10.244.2.0/24", "172.30.0.5", "66")]).await;

    stop_tx.send(true).expect("the loop listens");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the loop stops on shutdown")
        .expect("the loop does not panic");
}
