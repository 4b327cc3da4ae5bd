//! The nftables program: from [`ServicePort`]s to the text `nft -f -` reads, as a full
//! sync or as the difference to what was programmed before. Pure: no I/O.
//!
//! The layout is upstream kube-proxy's nftables mode (pkg/proxy/nftables/proxier.go), in
//! one table of rkube's own, `table ip rkube-proxy` (IPv4 only), without its per-endpoint
//! chains (see [`balance`] for why):
//!
//! ```text
//! nat-prerouting, nat-output (dstnat)  ─ jump services
//! services: to the service range from outside the pod network: mark 0x4000
//!           ip daddr . meta l4proto . th dport vmap @service-ips
//!           fib daddr type local, not 127/8: meta l4proto . th dport vmap @service-nodeports
//! service-ips / service-nodeports ─▶ service-… | local-… (cluster IP, by traffic policy)
//!                                 └▶ external-… (external IPs and node ports)
//! service-… / local-…: [ip saddr @affinity-… update @affinity-… dnat to IP:port]*
//!                      numgen random mod N 0 [update @affinity-…] dnat to IP:port, …
//! filter-input, filter-forward (dstnat-10), filter-output-post-dnat (dstnat+10):
//!   ct state new jump endpoints-check ─ vmap @no-endpoint-services / @no-endpoint-nodeports
//!   ─▶ goto reject-chain (`reject`: ICMP port unreachable) or drop (Local policy, no
//!   local endpoint)
//! nat-postrouting (srcnat) ─ DNATed to itself (source . destination in @hairpin): mark
//!                          ─ jump masquerading: packets marked 0x4000 are masqueraded
//! ```
//!
//! Per-Service chains are named `<kind>-<hash>-<namespace>/<name>/<protocol>/<port name>`
//! (affinity sets are `affinity-<hash>-…__<ip>/<port>`), with an 8-character FNV-1a
//! hash as upstream puts a SHA-256 prefix there: readable, and unique even if truncated.
//! The affinity set's hash also covers the timeout, so a changed timeout makes a new set
//! instead of an `add set` that conflicts with the old definition.
//!
//! A [`Ruleset`] is what was programmed. [`Ruleset::full_sync`] rewrites everything in one
//! transaction without deleting the table (`add table` + `flush table` + everything), so
//! there is never a moment without rules and conntrack's NAT state keeps established
//! connections working; affinity sets keep their entries (flushing a table flushes rules,
//! not set elements). [`Ruleset::update`] records one Service port's new rules in a
//! [`Transaction`] that touches only the chains, sets and elements that changed.
//!
//! Chains that are no longer used are flushed at once but deleted later
//! ([`Transaction::stale_chains`]): on kernels before 6.2 a chain stays referenced for a
//! moment after the map element pointing at it is gone, and deleting it fails.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::model::{Endpoint, ServiceKey, ServicePort, ServicePortName};

/// The nftables family of the table.
pub const FAMILY: &str = "ip";
/// The name of rkube-proxy's table.
pub const TABLE: &str = "rkube-proxy";
/// The packet mark bit that asks `masquerading` to SNAT (upstream's default bit 14).
pub const MASQUERADE_MARK: u32 = 0x4000;

const SERVICES_CHAIN: &str = "services";
const ENDPOINTS_CHECK_CHAIN: &str = "endpoints-check";
const REJECT_CHAIN: &str = "reject-chain";
const MARK_MASQ_CHAIN: &str = "mark-for-masquerade";
const MASQUERADING_CHAIN: &str = "masquerading";

/// Elements per `add element` statement in a full sync, to keep lines reasonable.
const ELEMENTS_PER_STATEMENT: usize = 1000;

/// The CIDR type of `--cluster-cidr` and `--service-cluster-ip-range`.
pub use rkube_types::cidr::Ipv4Cidr;

/// What the rules depend on besides the Services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The pod network: traffic to a cluster IP from outside it is masqueraded, and pod
    /// traffic to an external IP or node port of an `externalTrafficPolicy: Local` Service
    /// short-circuits to the cluster endpoints (upstream's local traffic detector).
    pub cluster_cidr: Ipv4Cidr,
    /// The apiserver's `--service-cluster-ip-range`: traffic to it from outside the pod
    /// network is masqueraded, with one rule where upstream has one in every service chain.
    pub service_cidr: Ipv4Cidr,
}

/// One of the maps and sets Service ports put elements in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Collection {
    /// `ip daddr . meta l4proto . th dport` → the Service's chain: cluster and external IPs.
    ServiceIps,
    /// `meta l4proto . th dport` → the Service's external chain: node ports.
    ServiceNodePorts,
    /// Like `ServiceIps`, for ports without endpoints: reject or drop, in the filter hooks.
    NoEndpointServices,
    /// Like `ServiceNodePorts`, for node ports without endpoints.
    NoEndpointNodePorts,
    /// A set of `endpoint IP . endpoint IP`: after DNAT, a packet whose source and
    /// destination are the same endpoint is hairpin traffic and is masqueraded (upstream
    /// marks it in every endpoint chain).
    Hairpin,
}

impl Collection {
    /// Every map and set, in the order the skeleton declares them.
    pub const ALL: [Collection; 5] = [
        Collection::ServiceIps,
        Collection::ServiceNodePorts,
        Collection::NoEndpointServices,
        Collection::NoEndpointNodePorts,
        Collection::Hairpin,
    ];

    /// The map's or set's name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Collection::ServiceIps => "service-ips",
            Collection::ServiceNodePorts => "service-nodeports",
            Collection::NoEndpointServices => "no-endpoint-services",
            Collection::NoEndpointNodePorts => "no-endpoint-nodeports",
            Collection::Hairpin => "hairpin",
        }
    }

    /// Whether elements map to a verdict (a map) or stand alone (a set).
    pub fn is_map(self) -> bool {
        match self {
            Collection::ServiceIps
            | Collection::ServiceNodePorts
            | Collection::NoEndpointServices
            | Collection::NoEndpointNodePorts => true,
            Collection::Hairpin => false,
        }
    }

    fn key_type(self) -> &'static str {
        match self {
            Collection::ServiceIps | Collection::NoEndpointServices => {
                "ipv4_addr . inet_proto . inet_service"
            }
            Collection::ServiceNodePorts | Collection::NoEndpointNodePorts => {
                "inet_proto . inet_service"
            }
            Collection::Hairpin => "ipv4_addr . ipv4_addr",
        }
    }

    /// `add map …`/`add set …` and the matching `flush`, as the skeleton declares it.
    fn declare(self, s: &mut String) {
        let (kind, data) = if self.is_map() {
            ("map", " : verdict")
        } else {
            ("set", "")
        };
        let _ = writeln!(
            s,
            "add {kind} {FAMILY} {TABLE} {} {{ type {}{data}; }}",
            self.name(),
            self.key_type()
        );
        let _ = writeln!(s, "flush {kind} {FAMILY} {TABLE} {}", self.name());
    }
}

/// An element's identity: the map or set and the key as nft spells it
/// (`10.96.0.1 . tcp . 80`). The value is the verdict for maps, empty for sets.
pub type ElementKey = (Collection, String);

/// Everything one Service port puts in the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortRules {
    /// Chain name → its rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Affinity set name → its timeout in seconds.
    pub sets: BTreeMap<String, u32>,
    /// Element → verdict (`goto service-…`, `drop`); empty for a set's element.
    pub elements: BTreeMap<ElementKey, String>,
}

impl PortRules {
    /// The rules of `port` (see the module documentation for the shape).
    pub fn generate(port: &ServicePort, config: &Config) -> PortRules {
        let mut out = PortRules::default();
        let name = &port.name;
        let proto = name.protocol.as_str();
        let base = port_chain_base(name);
        let cluster_chain = format!("service-{base}");
        let local_chain = format!("local-{base}");
        let external_chain = format!("external-{base}");
        let cidr = config.cluster_cidr;
        let categorized = port.categorize();

        for ep in &categorized.reachable {
            if let Some(timeout) = port.affinity_timeout {
                out.sets.insert(affinity_set(name, ep, timeout), timeout);
            }
            // A pod can meet itself only on its own node (or an endpoint without a
            // `nodeName` may be one of this node's), or through another node's node port
            // or external IP of an `externalTrafficPolicy: Local` Service, which does not
            // masquerade pod traffic.
            if ep.local || ep.unplaced || (port.external_local && port.externally_accessible()) {
                out.elements.insert(
                    (Collection::Hairpin, format!("{0} . {0}", ep.ip)),
                    String::new(),
                );
            }
        }

        let uses_cluster_chain = !categorized.cluster.is_empty() && port.uses_cluster_endpoints();
        if uses_cluster_chain {
            out.chains
                .insert(cluster_chain.clone(), balance(port, &categorized.cluster));
        }
        if !categorized.local.is_empty() && port.uses_local_endpoints() {
            out.chains
                .insert(local_chain.clone(), balance(port, &categorized.local));
        }

        let has_any = categorized.has_any;
        let (internal_chain, has_internal) = if port.internal_local {
            (&local_chain, !categorized.local.is_empty())
        } else {
            (&cluster_chain, has_any)
        };
        let (external_policy_chain, has_external) = if port.external_local {
            (&local_chain, !categorized.local.is_empty())
        } else {
            (&cluster_chain, has_any)
        };
        // Upstream: no endpoints at all rejects; endpoints elsewhere only (Local policy)
        // drops what was not short-circuited.
        let filter_verdict = if has_any {
            "drop".to_string()
        } else {
            format!("goto {REJECT_CHAIN}")
        };

        if has_any && port.externally_accessible() {
            let mut rules = Vec::new();
            if !port.external_local {
                rules.push(format!("jump {MARK_MASQ_CHAIN}"));
            } else if uses_cluster_chain {
                // Pods and the node itself reach the Service as if through an outside
                // load balancer: not subject to the Local policy.
                rules.push(format!("ip saddr {cidr} goto {cluster_chain}"));
                rules.push(format!("fib saddr type local jump {MARK_MASQ_CHAIN}"));
                rules.push(format!("fib saddr type local goto {cluster_chain}"));
            }
            if has_external {
                rules.push(format!("goto {external_policy_chain}"));
            }
            out.chains.insert(external_chain.clone(), rules);
        }

        if has_internal && !config.service_cidr.contains_addr(port.cluster_ip) {
            // Outside `--service-cluster-ip-range` (the flag and the apiserver disagree,
            // or the range changed), the skeleton's masquerade rule misses this cluster
            // IP: upstream's own rule, in the chain.
            if let Some(rules) = out.chains.get_mut(internal_chain) {
                rules.insert(
                    0,
                    format!(
                        "ip daddr {} {proto} dport {} ip saddr != {cidr} jump {MARK_MASQ_CHAIN}",
                        port.cluster_ip, port.port
                    ),
                );
            }
        }

        let ip_key = |ip: Ipv4Addr| format!("{ip} . {proto} . {}", port.port);
        if has_internal {
            out.elements.insert(
                (Collection::ServiceIps, ip_key(port.cluster_ip)),
                format!("goto {internal_chain}"),
            );
        } else {
            out.elements.insert(
                (Collection::NoEndpointServices, ip_key(port.cluster_ip)),
                filter_verdict.clone(),
            );
        }
        for ip in &port.external_ips {
            if has_any {
                out.elements.insert(
                    (Collection::ServiceIps, ip_key(*ip)),
                    format!("goto {external_chain}"),
                );
            }
            if !has_external {
                out.elements.insert(
                    (Collection::NoEndpointServices, ip_key(*ip)),
                    filter_verdict.clone(),
                );
            }
        }
        if let Some(node_port) = port.node_port {
            let key = format!("{proto} . {node_port}");
            if has_any {
                out.elements.insert(
                    (Collection::ServiceNodePorts, key.clone()),
                    format!("goto {external_chain}"),
                );
            }
            if !has_external {
                out.elements
                    .insert((Collection::NoEndpointNodePorts, key), filter_verdict);
            }
        }
        out
    }

    /// How many rules the port's chains hold.
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(Vec::len).sum()
    }
}

/// The load-balancing rules of a service or local chain, which DNAT themselves: with
/// affinity, one rule per endpoint for the clients it has seen; then iptables mode's
/// cascade, `numgen random mod N 0 … dnat to e1`, `numgen random mod N-1 0 … dnat to e2`,
/// …, `dnat to eN`, where each rule takes its endpoint with probability 1/(endpoints
/// left), which is a uniform choice.
///
/// Not upstream's `numgen random mod N vmap { 0 : goto endpoint-…, … }` over one chain
/// per endpoint: the kernel names every anonymous map by scanning the table's sets, so
/// 10,000 of them take minutes to load, and `nft` reads every chain of the table before
/// each transaction, so 40,000 endpoint chains cost a quarter of a second per change
/// (docs/benchmarks.md). A named map per Service is no better (`nft` handles named sets
/// slowly), nor one shared `numgen … offset K map @backends` (the kernel walks a map's
/// elements for every rule that binds it).
fn balance(port: &ServicePort, endpoints: &[Endpoint]) -> Vec<String> {
    let name = &port.name;
    let proto = name.protocol.as_str();
    let mut rules = Vec::new();
    let remember = |ep: &Endpoint| match port.affinity_timeout {
        Some(timeout) => format!(
            "update @{} {{ ip saddr }} ",
            affinity_set(name, ep, timeout)
        ),
        None => String::new(),
    };
    if let Some(timeout) = port.affinity_timeout {
        for ep in endpoints {
            rules.push(format!(
                "ip saddr @{} meta l4proto {proto} {}dnat to {}:{}",
                affinity_set(name, ep, timeout),
                remember(ep),
                ep.ip,
                ep.port
            ));
        }
    }
    let n = endpoints.len();
    for (i, ep) in endpoints.iter().enumerate() {
        let pick = if n - i > 1 {
            format!("numgen random mod {} 0 ", n - i)
        } else {
            String::new()
        };
        rules.push(format!(
            "{pick}meta l4proto {proto} {}dnat to {}:{}",
            remember(ep),
            ep.ip,
            ep.port
        ));
    }
    rules
}

/// FNV-1a, 64 bits: a hash that never changes between Rust releases, since chain names
/// outlive the process.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `<8 base32 characters of the hash of s>-<s>`.
fn hashed(s: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let h = fnv1a(s);
    let mut out = String::with_capacity(9 + s.len());
    for i in 0..8 {
        let idx = (h >> (59 - 5 * i)) & 31;
        out.push(char::from(ALPHABET[idx as usize]));
    }
    out.push('-');
    out.push_str(s);
    out
}

fn port_chain_base(name: &ServicePortName) -> String {
    hashed(&name.to_string())
}

fn endpoint_id(name: &ServicePortName, ep: &Endpoint) -> String {
    format!("{name}__{}/{}", ep.ip, ep.port)
}

/// The set of client addresses that stick to `ep` for `timeout` seconds.
pub fn affinity_set(name: &ServicePortName, ep: &Endpoint, timeout: u32) -> String {
    let id = endpoint_id(name, ep);
    let hash = hashed(&format!("{id}@{timeout}"));
    format!("affinity-{}-{id}", &hash[..8])
}

/// Whether `chain` is a per-Service chain (the fixed ones have no `/`).
pub fn is_service_chain(chain: &str) -> bool {
    chain.contains('/')
}

/// Whether `set` is an affinity set.
pub fn is_affinity_set(set: &str) -> bool {
    set.starts_with("affinity-")
}

/// The chains and sets (maps excluded) a table holds, from `nft list chains` and
/// `nft list sets`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    /// Chain names.
    pub chains: Vec<String>,
    /// Set names (maps excluded).
    pub sets: Vec<String>,
}

/// The script of a full sync and the chains it left unused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The text for `nft -f -`.
    pub script: String,
    /// Service chains it flushed and no longer uses: delete them later.
    pub stale_chains: Vec<String>,
}

/// What is programmed (or about to be): every Service port's rules, and which port's
/// element wins where two claim the same key (two Services with one external IP and port;
/// the first in name order wins, the other's element waits until it is free).
#[derive(Debug, Clone, Default)]
pub struct Ruleset {
    ports: BTreeMap<ServicePortName, Arc<PortRules>>,
    claims: BTreeMap<ElementKey, Claims>,
    chains: HashSet<String>,
    rules: usize,
}

/// The ports that want one element, with their values, in name order. Nearly always one:
/// a vector, as a map per element made a full sync of 10,000 Services allocate 30 MB.
#[derive(Debug, Clone, Default)]
struct Claims(Vec<(ServicePortName, String)>);

impl Claims {
    fn set(&mut self, name: &ServicePortName, value: &str) {
        match self.0.binary_search_by(|(n, _)| n.cmp(name)) {
            Ok(i) => value.clone_into(&mut self.0[i].1),
            Err(i) => self.0.insert(i, (name.clone(), value.to_string())),
        }
    }

    fn remove(&mut self, name: &ServicePortName) {
        if let Ok(i) = self.0.binary_search_by(|(n, _)| n.cmp(name)) {
            self.0.remove(i);
        }
    }

    /// The value that is programmed: the first claimant's.
    fn winner(&self) -> Option<&String> {
        self.0.first().map(|(_, v)| v)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Ruleset {
    /// A ruleset of `ports`, as a full sync would program it.
    pub fn from_ports(ports: impl IntoIterator<Item = (ServicePortName, PortRules)>) -> Self {
        let mut out = Ruleset::default();
        for (name, rules) in ports {
            if out.ports.contains_key(&name) {
                out.update(name, Some(rules), &mut Transaction::default());
                continue;
            }
            // What `update` does for a new port, without recording a transaction nobody
            // reads: a full sync of 10,000 Services spent most of its time there.
            out.chains.extend(rules.chains.keys().cloned());
            for (key, verdict) in &rules.elements {
                out.claims
                    .entry(key.clone())
                    .or_default()
                    .set(&name, verdict);
            }
            out.rules += rules.rule_count();
            out.ports.insert(name, Arc::new(rules));
        }
        out
    }

    /// The Service ports of `service` that have rules.
    pub fn ports_of<'a>(
        &'a self,
        service: &'a ServiceKey,
    ) -> impl Iterator<Item = &'a ServicePortName> + 'a {
        self.ports
            .range(
                ServicePortName {
                    service: service.clone(),
                    port: String::new(),
                    protocol: crate::model::Protocol::Tcp,
                }..,
            )
            .map(|(name, _)| name)
            .take_while(move |name| &name.service == service)
    }

    /// The rules of one Service port.
    pub fn port(&self, name: &ServicePortName) -> Option<&PortRules> {
        self.ports.get(name).map(|r| &**r)
    }

    /// How many Service ports have rules.
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// Whether no Service port has rules.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// Whether a Service port uses `chain`.
    pub fn has_chain(&self, chain: &str) -> bool {
        self.chains.contains(chain)
    }

    /// How many rules the per-Service chains hold.
    pub fn rule_count(&self) -> usize {
        self.rules
    }

    /// How many map and set elements are programmed.
    pub fn element_count(&self) -> usize {
        self.claims.len()
    }

    /// The verdict of an element: the first claimant's.
    fn effective(&self, key: &ElementKey) -> Option<&String> {
        self.claims.get(key).and_then(Claims::winner)
    }

    /// Replaces the rules of `name` (`None`: the port is gone) and records in `tx` what
    /// must change in the table. A port whose rules did not change adds nothing.
    pub fn update(&mut self, name: ServicePortName, new: Option<PortRules>, tx: &mut Transaction) {
        let old = self.ports.remove(&name);
        if old.as_deref() == new.as_ref() {
            if let Some(old) = old {
                self.ports.insert(name, old);
            }
            return;
        }
        let empty = PortRules::default();
        let o = old.as_deref().unwrap_or(&empty);
        let n = new.as_ref().unwrap_or(&empty);

        for (chain, rules) in &n.chains {
            match o.chains.get(chain) {
                None => {
                    tx.add_chains.push(chain.clone());
                    tx.rules.push((chain.clone(), rules.clone()));
                    self.chains.insert(chain.clone());
                }
                Some(before) if before != rules => {
                    tx.flush_chains.push(chain.clone());
                    tx.rules.push((chain.clone(), rules.clone()));
                }
                Some(_) => {}
            }
        }
        for chain in o.chains.keys() {
            if !n.chains.contains_key(chain) {
                tx.flush_chains.push(chain.clone());
                tx.stale_chains.push(chain.clone());
                self.chains.remove(chain);
            }
        }
        for (set, timeout) in &n.sets {
            if !o.sets.contains_key(set) {
                tx.add_sets.push((set.clone(), *timeout));
            }
        }
        for set in o.sets.keys() {
            if !n.sets.contains_key(set) {
                tx.delete_sets.push(set.clone());
            }
        }
        let keys: BTreeSet<&ElementKey> = o.elements.keys().chain(n.elements.keys()).collect();
        for key in keys {
            if !tx.elements_before.contains_key(key) {
                tx.elements_before
                    .insert(key.clone(), self.effective(key).cloned());
            }
            match n.elements.get(key) {
                Some(verdict) => {
                    self.claims
                        .entry(key.clone())
                        .or_default()
                        .set(&name, verdict);
                }
                None => {
                    if let Some(claims) = self.claims.get_mut(key) {
                        claims.remove(&name);
                        if claims.is_empty() {
                            self.claims.remove(key);
                        }
                    }
                }
            }
        }
        self.rules = self.rules - o.rule_count() + n.rule_count();
        if let Some(new) = new {
            self.ports.insert(name, Arc::new(new));
        }
    }

    /// The script that makes the table exactly this ruleset, in one transaction, and the
    /// chains of `existing` (the table's current content) it leaves unused.
    pub fn full_sync(&self, config: &Config, existing: &Existing) -> Plan {
        // Sized up front: growing a 7 MB string by doubling copied it a dozen times.
        let prefix = format!("add rule {FAMILY} {TABLE}  \n").len();
        let size: usize = self
            .ports
            .values()
            .flat_map(|rules| rules.chains.iter())
            .map(|(chain, rules)| {
                64 + chain.len()
                    + rules
                        .iter()
                        .map(|r| prefix + chain.len() + r.len())
                        .sum::<usize>()
            })
            .sum();
        let mut s = String::with_capacity(size + 128 * self.claims.len() + 8192);
        skeleton(&mut s, config);
        let mut sets = BTreeMap::new();
        for rules in self.ports.values() {
            sets.extend(rules.sets.iter());
        }
        for (set, timeout) in &sets {
            add_set(&mut s, set, **timeout);
        }
        for set in &existing.sets {
            if is_affinity_set(set) && !sets.contains_key(set) {
                let _ = writeln!(s, "delete set {FAMILY} {TABLE} {set}");
            }
        }
        for rules in self.ports.values() {
            for chain in rules.chains.keys() {
                let _ = writeln!(s, "add chain {FAMILY} {TABLE} {chain}");
            }
        }
        for rules in self.ports.values() {
            for (chain, rules) in &rules.chains {
                for rule in rules {
                    let _ = writeln!(s, "add rule {FAMILY} {TABLE} {chain} {rule}");
                }
            }
        }
        for map in Collection::ALL {
            let elements = self
                .claims
                .iter()
                .filter(|((m, _), _)| *m == map)
                .filter_map(|((_, key), claims)| Some((key, claims.winner()?)));
            add_elements(&mut s, map, elements);
        }
        let stale_chains = existing
            .chains
            .iter()
            .filter(|c| is_service_chain(c) && !self.chains.contains(*c))
            .cloned()
            .collect();
        Plan {
            script: s,
            stale_chains,
        }
    }
}

/// The changes to the table that [`Ruleset::update`] calls collected.
#[derive(Debug, Clone, Default)]
pub struct Transaction {
    add_sets: Vec<(String, u32)>,
    add_chains: Vec<String>,
    flush_chains: Vec<String>,
    delete_sets: Vec<String>,
    rules: Vec<(String, Vec<String>)>,
    stale_chains: Vec<String>,
    elements_before: BTreeMap<ElementKey, Option<String>>,
}

impl Transaction {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.add_sets.is_empty()
            && self.add_chains.is_empty()
            && self.flush_chains.is_empty()
            && self.delete_sets.is_empty()
            && self.rules.is_empty()
            && self.elements_before.is_empty()
    }

    /// Chains this transaction empties and no Service port uses any more: delete them
    /// once the kernel has let go of them (a second later).
    pub fn stale_chains(&self) -> &[String] {
        &self.stale_chains
    }

    /// The script for `nft -f -`, given `ruleset` after the updates. Empty when nothing
    /// changed in the table (an element claimed by another port first, say).
    pub fn script(&self, ruleset: &Ruleset) -> String {
        let mut s = String::new();
        for (set, timeout) in &self.add_sets {
            add_set(&mut s, set, *timeout);
        }
        for chain in &self.add_chains {
            let _ = writeln!(s, "add chain {FAMILY} {TABLE} {chain}");
        }
        for chain in &self.flush_chains {
            let _ = writeln!(s, "flush chain {FAMILY} {TABLE} {chain}");
        }
        for set in &self.delete_sets {
            let _ = writeln!(s, "delete set {FAMILY} {TABLE} {set}");
        }
        for (chain, rules) in &self.rules {
            for rule in rules {
                let _ = writeln!(s, "add rule {FAMILY} {TABLE} {chain} {rule}");
            }
        }
        let mut deletes: BTreeMap<Collection, Vec<&str>> = BTreeMap::new();
        let mut adds: BTreeMap<Collection, Vec<(&String, &String)>> = BTreeMap::new();
        for (key, before) in &self.elements_before {
            let after = ruleset.effective(key);
            if before.as_ref() == after {
                continue;
            }
            if before.is_some() {
                deletes.entry(key.0).or_default().push(&key.1);
            }
            if let Some(after) = after {
                adds.entry(key.0).or_default().push((&key.1, after));
            }
        }
        for (map, keys) in deletes {
            for chunk in keys.chunks(ELEMENTS_PER_STATEMENT) {
                let _ = writeln!(
                    s,
                    "delete element {FAMILY} {TABLE} {} {{ {} }}",
                    map.name(),
                    chunk.join(", ")
                );
            }
        }
        for (map, elements) in adds {
            add_elements(&mut s, map, elements.into_iter());
        }
        s
    }
}

fn add_set(s: &mut String, set: &str, timeout: u32) {
    let _ = writeln!(
        s,
        "add set {FAMILY} {TABLE} {set} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}"
    );
}

fn add_elements<'a>(
    s: &mut String,
    map: Collection,
    elements: impl Iterator<Item = (&'a String, &'a String)>,
) {
    let mut elements = elements.peekable();
    while elements.peek().is_some() {
        let _ = write!(s, "add element {FAMILY} {TABLE} {} {{ ", map.name());
        for (i, (key, verdict)) in elements.by_ref().take(ELEMENTS_PER_STATEMENT).enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            if map.is_map() {
                let _ = write!(s, "{key} : {verdict}");
            } else {
                s.push_str(key);
            }
        }
        s.push_str(" }\n");
    }
}

/// The fixed part of the table, re-created by every full sync: `add table` then
/// `flush table` (every rule goes; chains, sets and their elements stay), base chains,
/// the dispatch chains, maps and sets, and masquerading.
fn skeleton(s: &mut String, config: &Config) {
    let t = format!("{FAMILY} {TABLE}");
    let _ = writeln!(s, "add table {t} {{ comment \"rules for rkube-proxy\"; }}");
    let _ = writeln!(s, "flush table {t}");
    // (name, type, hook, priority): numeric priorities, as nft 1.0.6 accepts the named
    // ones only on some hooks. dstnat is -100, srcnat 100.
    let base = [
        ("filter-input", "filter", "input", -110),
        ("filter-forward", "filter", "forward", -110),
        ("filter-output-post-dnat", "filter", "output", -90),
        ("nat-prerouting", "nat", "prerouting", -100),
        ("nat-output", "nat", "output", -100),
        ("nat-postrouting", "nat", "postrouting", 100),
    ];
    for (name, kind, hook, priority) in base {
        let _ = writeln!(
            s,
            "add chain {t} {name} {{ type {kind} hook {hook} priority {priority}; policy accept; }}"
        );
    }
    for chain in [
        SERVICES_CHAIN,
        ENDPOINTS_CHECK_CHAIN,
        REJECT_CHAIN,
        MARK_MASQ_CHAIN,
        MASQUERADING_CHAIN,
    ] {
        let _ = writeln!(s, "add chain {t} {chain}");
    }
    for collection in Collection::ALL {
        collection.declare(s);
    }
    let rules = [
        (
            "filter-input",
            format!("ct state new jump {ENDPOINTS_CHECK_CHAIN}"),
        ),
        (
            "filter-forward",
            format!("ct state new jump {ENDPOINTS_CHECK_CHAIN}"),
        ),
        (
            "filter-output-post-dnat",
            format!("ct state new jump {ENDPOINTS_CHECK_CHAIN}"),
        ),
        ("nat-prerouting", format!("jump {SERVICES_CHAIN}")),
        ("nat-output", format!("jump {SERVICES_CHAIN}")),
        (
            "nat-postrouting",
            format!(
                "ct status dnat ip saddr . ip daddr @{} jump {MARK_MASQ_CHAIN}",
                Collection::Hairpin.name()
            ),
        ),
        ("nat-postrouting", format!("jump {MASQUERADING_CHAIN}")),
        (
            MARK_MASQ_CHAIN,
            format!("meta mark set meta mark or {MASQUERADE_MARK:#x}"),
        ),
        (
            MASQUERADING_CHAIN,
            format!("meta mark & {MASQUERADE_MARK:#x} == 0 return"),
        ),
        (
            MASQUERADING_CHAIN,
            format!("meta mark set meta mark xor {MASQUERADE_MARK:#x}"),
        ),
        (MASQUERADING_CHAIN, "masquerade fully-random".to_string()),
        (REJECT_CHAIN, "reject".to_string()),
        (
            ENDPOINTS_CHECK_CHAIN,
            format!(
                "ip daddr . meta l4proto . th dport vmap @{}",
                Collection::NoEndpointServices.name()
            ),
        ),
        (
            ENDPOINTS_CHECK_CHAIN,
            format!(
                "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @{}",
                Collection::NoEndpointNodePorts.name()
            ),
        ),
        (
            SERVICES_CHAIN,
            // Traffic to a cluster IP from outside the pod network (the node itself, or a
            // host routing the service range here) may leave the node: masquerade it.
            format!(
                "ip daddr {} ip saddr != {} jump {MARK_MASQ_CHAIN}",
                config.service_cidr, config.cluster_cidr
            ),
        ),
        (
            SERVICES_CHAIN,
            format!(
                "ip daddr . meta l4proto . th dport vmap @{}",
                Collection::ServiceIps.name()
            ),
        ),
        (
            SERVICES_CHAIN,
            format!(
                "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @{}",
                Collection::ServiceNodePorts.name()
            ),
        ),
    ];
    for (chain, rule) in rules {
        let _ = writeln!(s, "add rule {t} {chain} {rule}");
    }
}

#[cfg(test)]
mod tests;
