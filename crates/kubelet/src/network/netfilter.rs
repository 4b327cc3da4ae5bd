//! Packet filtering and NAT for the pod network.
//!
//! - Masquerade, in nftables table `ip rkube-podnet` of the kubelet's own, rewritten whole
//!   and atomically (`nft -f -`: `add table`, `flush table` and the content in one
//!   transaction). The rules are flannel's (`--ip-masq`): pod to pod is never NATed, so a
//!   server sees its client pod's address on every node; pod to anything else is
//!   masqueraded to the node's address (multicast excepted); and anything from outside the
//!   pod network headed to another node's pods is masqueraded too, so the far node can
//!   answer it (this node's own pods see the real source).
//! - Forwarding. An accept in a table of ours cannot undo a drop in another table's chain
//!   at the same hook (every base chain sees the packet; a drop in any of them is final).
//!   Docker sets the iptables `filter FORWARD` policy to DROP, and with `br_netfilter`
//!   loaded even pod-to-pod traffic on one bridge passes that chain. So, only where that
//!   chain drops, the kubelet keeps an iptables chain of its own, [`FORWARD_CHAIN`], jumped
//!   to first from `FORWARD`, accepting traffic from and to the pod network (as flannel's
//!   `FLANNEL-FWD` does). It goes through the `iptables` command, which is the variant
//!   (nft or legacy) Docker and the rest of the host use.
//! - IP forwarding, without which nothing leaves the node's bridge.

use std::fmt::Write as _;

use super::{Host, Result};
use rkube_types::cidr::Ipv4Cidr;

/// The kubelet's nftables table (family `ip`).
pub const TABLE: &str = "rkube-podnet";

/// The kubelet's iptables chain in the `filter` table, jumped to from `FORWARD`.
pub const FORWARD_CHAIN: &str = "RKUBE-PODNET";

/// Multicast is never masqueraded (as flannel).
const MULTICAST: &str = "224.0.0.0/4";

fn set_of(cidrs: &[Ipv4Cidr]) -> String {
    let items: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
    format!("{{ {} }}", items.join(", "))
}

/// The `nft -f` input that makes table [`TABLE`] masquerade as the module documentation
/// says. `pod_cidrs` is every pod network (the cluster CIDR and any node pod CIDR outside
/// it), without nested entries (see [`rkube_types::cidr::minimal_cover`]); `own_cidr` is this
/// node's pod CIDR, when known.
pub fn ruleset(pod_cidrs: &[Ipv4Cidr], own_cidr: Option<Ipv4Cidr>) -> String {
    let pods = set_of(pod_cidrs);
    let mut s = String::new();
    let _ = writeln!(s, "add table ip {TABLE}");
    let _ = writeln!(s, "flush table ip {TABLE}");
    let _ = writeln!(s, "table ip {TABLE} {{");
    let _ = writeln!(s, "\tchain postrouting {{");
    let _ = writeln!(
        s,
        "\t\ttype nat hook postrouting priority srcnat; policy accept;"
    );
    if pod_cidrs.is_empty() {
        let _ = writeln!(s, "\t}}");
        let _ = writeln!(s, "}}");
        return s;
    }
    let _ = writeln!(
        s,
        "\t\tip saddr {pods} ip daddr {pods} return comment \"pod to pod: no nat\""
    );
    let _ = writeln!(
        s,
        "\t\tip saddr {pods} ip daddr != {MULTICAST} masquerade fully-random comment \"pod to outside the pod network\""
    );
    if let Some(own) = own_cidr {
        let _ = writeln!(
            s,
            "\t\tip saddr != {pods} ip daddr {own} return comment \"to this node's pods: keep the source\""
        );
    }
    let _ = writeln!(
        s,
        "\t\tip saddr != {pods} ip daddr {pods} masquerade fully-random comment \"to other nodes' pods: answerable source\""
    );
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(s, "}}");
    s
}

/// Applies `text` (from [`ruleset`]) in one `nft` transaction.
pub async fn apply_ruleset(host: &Host, text: &str) -> Result<()> {
    host.run("nft", &["-f", "-"], Some(text)).await.map(drop)
}

/// The `iptables-restore --noflush` input that sets [`FORWARD_CHAIN`] to accept traffic
/// from and to `pod_cidrs` (declaring the chain empties it first).
pub fn forward_rules(pod_cidrs: &[Ipv4Cidr]) -> String {
    let mut s = String::from("*filter\n");
    let _ = writeln!(s, ":{FORWARD_CHAIN} - [0:0]");
    for c in pod_cidrs {
        let _ = writeln!(s, "-A {FORWARD_CHAIN} -s {c} -j ACCEPT");
        let _ = writeln!(s, "-A {FORWARD_CHAIN} -d {c} -j ACCEPT");
    }
    s.push_str("COMMIT\n");
    s
}

/// Whether `iptables -S FORWARD` output shows a chain that drops what it does not accept
/// (Docker's and ufw's DROP policy, a final DROP or REJECT rule), or one that already
/// jumps to ours (kept up to date once installed).
pub fn forward_needs_accept(listing: &str) -> bool {
    listing.lines().any(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        matches!(words.as_slice(), ["-P", "FORWARD", "DROP"])
            || (words.first() == Some(&"-A")
                && words
                    .windows(2)
                    .any(|w| w[0] == "-j" && matches!(w[1], "DROP" | "REJECT" | FORWARD_CHAIN)))
    })
}

/// What [`ensure_forward`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// No `iptables` command on this host: nothing to do and nothing it could do.
    NoIptables,
    /// The `filter FORWARD` chain accepts by default: left alone.
    NotNeeded,
    /// [`FORWARD_CHAIN`] is in place and jumped to.
    Accepting,
}

/// Keeps [`FORWARD_CHAIN`] accepting the pod network where `filter FORWARD` would drop it.
pub async fn ensure_forward(host: &Host, pod_cidrs: &[Ipv4Cidr]) -> Result<Forward> {
    let listing = match host
        .run("iptables", &["-w", "5", "-S", "FORWARD"], None)
        .await
    {
        Ok(l) => l,
        Err(e) if e.is_not_found() => return Ok(Forward::NoIptables),
        Err(e) => return Err(e),
    };
    if !forward_needs_accept(&listing) {
        return Ok(Forward::NotNeeded);
    }
    host.run(
        "iptables-restore",
        &["-w", "5", "--noflush"],
        Some(&forward_rules(pod_cidrs)),
    )
    .await?;
    let jump = ["-w", "5", "-C", "FORWARD", "-j", FORWARD_CHAIN];
    if !host.succeeds("iptables", &jump).await? {
        host.run(
            "iptables",
            &["-w", "5", "-I", "FORWARD", "1", "-j", FORWARD_CHAIN],
            None,
        )
        .await?;
        tracing::info!(
            chain = FORWARD_CHAIN,
            "the forward chain drops by default; accepting pod traffic in it"
        );
    }
    Ok(Forward::Accepting)
}

/// The sysctl file of IPv4 forwarding (per network namespace).
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Turns IPv4 forwarding on if it is off; true when it was off. The bridge plugin turns
/// it on at the first pod (`isGateway`), but routed traffic to other nodes' pods needs it
/// before that, and someone may turn it off.
pub async fn ensure_ip_forward(host: &Host) -> Result<bool> {
    if host.run("cat", &[IP_FORWARD], None).await?.trim() == "1" {
        return Ok(false);
    }
    host.run("tee", &[IP_FORWARD], Some("1\n")).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn ruleset_masquerades_like_flannel() {
        let text = ruleset(
            &[c("10.88.0.0/24"), c("10.244.0.0/16")],
            Some(c("10.244.3.0/24")),
        );
        let expected = "\
add table ip rkube-podnet
flush table ip rkube-podnet
table ip rkube-podnet {
\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tip saddr { 10.88.0.0/24, 10.244.0.0/16 } ip daddr { 10.88.0.0/24, 10.244.0.0/16 } return comment \"pod to pod: no nat\"
\t\tip saddr { 10.88.0.0/24, 10.244.0.0/16 } ip daddr != 224.0.0.0/4 masquerade fully-random comment \"pod to outside the pod network\"
\t\tip saddr != { 10.88.0.0/24, 10.244.0.0/16 } ip daddr 10.244.3.0/24 return comment \"to this node's pods: keep the source\"
\t\tip saddr != { 10.88.0.0/24, 10.244.0.0/16 } ip daddr { 10.88.0.0/24, 10.244.0.0/16 } masquerade fully-random comment \"to other nodes' pods: answerable source\"
\t}
}
";
        assert_eq!(text, expected);
    }

    #[test]
    fn ruleset_without_own_cidr_or_networks() {
        let text = ruleset(&[c("10.244.0.0/16")], None);
        assert!(!text.contains("keep the source"), "{text}");
        assert_eq!(text.matches("masquerade").count(), 2, "{text}");
        // Nothing to masquerade: an empty chain, still replacing whatever was there.
        let empty = ruleset(&[], None);
        assert!(empty.contains("flush table ip rkube-podnet"), "{empty}");
        assert!(!empty.contains("masquerade"), "{empty}");
    }

    #[test]
    fn forward_rules_accept_both_directions() {
        assert_eq!(
            forward_rules(&[c("10.244.0.0/16")]),
            "*filter\n:RKUBE-PODNET - [0:0]\n-A RKUBE-PODNET -s 10.244.0.0/16 -j ACCEPT\n-A RKUBE-PODNET -d 10.244.0.0/16 -j ACCEPT\nCOMMIT\n"
        );
    }

    #[test]
    fn forward_needs_accept_where_the_chain_drops() {
        // Docker's (this machine's) FORWARD chain.
        let docker = "-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n";
        assert!(forward_needs_accept(docker));
        assert!(!forward_needs_accept("-P FORWARD ACCEPT\n"));
        assert!(forward_needs_accept(
            "-P FORWARD ACCEPT\n-A FORWARD -j REJECT --reject-with icmp-host-prohibited\n"
        ));
        assert!(forward_needs_accept(
            "-P FORWARD ACCEPT\n-A FORWARD -j RKUBE-PODNET\n"
        ));
        assert!(!forward_needs_accept(
            "-P FORWARD ACCEPT\n-A FORWARD -j DOCKER-USER\n"
        ));
    }
}
