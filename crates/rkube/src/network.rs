//! What the node's network daemons leave on the host, removed by `rkube down`: the
//! kubelet's pod network (its nftables table, its iptables forward chain and its routes to
//! other nodes' pod CIDRs) and rkube-proxy's table (through `rkube-proxy --cleanup`). Each
//! name is the one the daemon owns; nothing else is touched.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

/// The kubelet's nftables table (crates/kubelet `network::netfilter::TABLE`).
pub const PODNET_TABLE: &str = "rkube-podnet";
/// The kubelet's iptables chain in `filter` (crates/kubelet `FORWARD_CHAIN`).
pub const PODNET_CHAIN: &str = "RKUBE-PODNET";
/// The route protocol of the kubelet's routes (crates/kubelet `ROUTE_PROTOCOL`).
pub const ROUTE_PROTOCOL: &str = "66";
/// rkube-proxy's nftables table.
pub const PROXY_TABLE: &str = "rkube-proxy";

fn quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether nftables table `ip NAME` exists.
pub fn has_table(name: &str) -> bool {
    quiet("nft", &["list", "table", "ip", name])
}

/// Removes the kubelet's pod network rules and routes; true when something was there.
pub fn remove_pod_network() -> bool {
    let mut removed = false;
    if has_table(PODNET_TABLE) {
        removed |= quiet("nft", &["delete", "table", "ip", PODNET_TABLE]);
    }
    if quiet("iptables", &["-w", "5", "-S", PODNET_CHAIN]) {
        while quiet(
            "iptables",
            &["-w", "5", "-D", "FORWARD", "-j", PODNET_CHAIN],
        ) {}
        quiet("iptables", &["-w", "5", "-F", PODNET_CHAIN]);
        removed |= quiet("iptables", &["-w", "5", "-X", PODNET_CHAIN]);
    }
    let routes = Command::new("ip")
        .args(["-4", "route", "show", "proto", ROUTE_PROTOCOL])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    if routes {
        removed |= quiet(
            "ip",
            &[
                "-4",
                "route",
                "flush",
                "table",
                "main",
                "proto",
                ROUTE_PROTOCOL,
            ],
        );
    }
    removed
}

/// Runs `rkube-proxy --cleanup` from `bin_dir`; true when its table was there.
pub fn remove_proxy_rules(bin_dir: &Path) -> anyhow::Result<bool> {
    if !has_table(PROXY_TABLE) {
        return Ok(false);
    }
    let proxy = bin_dir.join("rkube-proxy");
    let out = Command::new(&proxy)
        .arg("--cleanup")
        .output()
        .with_context(|| format!("running {} --cleanup", proxy.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "{} --cleanup failed: {}",
            proxy.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(true)
}
