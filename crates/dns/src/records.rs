//! The cluster's DNS records as a pure lookup: a [`Snapshot`] built from the cached Services
//! and EndpointSlices answers a query name and type with records, NXDOMAIN, NODATA, or "not
//! ours, forward it".
//!
//! The names follow the Kubernetes DNS specification (schema 1.1.0) and CoreDNS's
//! `kubernetes` plugin where the specification is silent:
//!
//! - `<svc>.<ns>.svc.<zone>`: A/AAAA of the ClusterIPs; for a headless Service, of its ready
//!   endpoints; for an ExternalName Service, a CNAME to `spec.externalName`.
//! - `<hostname>.<svc>.<ns>.svc.<zone>`: A/AAAA of one endpoint of a headless Service, named
//!   by its `hostname` or, without one, by its address with dashes (`10-0-0-7`).
//! - `_<port>._<proto>.<svc>.<ns>.svc.<zone>`: SRV per named port, targeting the Service name
//!   (ClusterIP) or each ready endpoint's name (headless), with the targets' addresses as
//!   additional records.
//! - `<a-b-c-d>.<ns>.pod.<zone>`: A `a.b.c.d`, unverified (CoreDNS `pods insecure`).
//! - `dns-version.<zone>`: TXT `1.1.0`.
//! - PTR under `in-addr.arpa` / `ip6.arpa` for ClusterIPs and headless endpoints; other
//!   reverse names are forwarded.
//!
//! A name inside the zone that matches nothing is NXDOMAIN; a name that exists with no record
//! of the asked type is NODATA. Names are compared case-insensitively.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::RecordType;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The TTL of every record, in seconds: CoreDNS's `kubernetes` plugin default.
pub const DEFAULT_TTL: u32 = 5;

/// The version of the Kubernetes DNS schema served at `dns-version.<zone>`.
pub const SCHEMA_VERSION: &str = "1.1.0";

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One resource record of an answer. Names are lowercase and without the trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rr {
    /// The owner name.
    pub name: String,
    /// Time to live, in seconds.
    pub ttl: u32,
    /// The record's data.
    pub data: RData,
}

/// The data of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// An alias to another name.
    Cname(String),
    /// A service location.
    Srv {
        /// Lower is preferred.
        priority: u16,
        /// Relative weight among records of the same priority.
        weight: u16,
        /// The port.
        port: u16,
        /// The host that serves it.
        target: String,
    },
    /// A reverse pointer to a name.
    Ptr(String),
    /// A text record of one string.
    Txt(String),
    /// The zone's start of authority (sent with negative answers).
    Soa {
        /// The primary name server.
        mname: String,
        /// The responsible mailbox, as a name.
        rname: String,
        /// The zone's serial.
        serial: u32,
        /// Negative-caching TTL.
        minimum: u32,
    },
}

impl RData {
    /// The record type of this data.
    pub fn record_type(&self) -> RecordType {
        match self {
            RData::A(_) => RecordType::A,
            RData::Aaaa(_) => RecordType::AAAA,
            RData::Cname(_) => RecordType::CNAME,
            RData::Srv { .. } => RecordType::SRV,
            RData::Ptr(_) => RecordType::PTR,
            RData::Txt(_) => RecordType::TXT,
            RData::Soa { .. } => RecordType::SOA,
        }
    }
}

/// What a query gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The name exists and has records of the asked type (or a CNAME).
    Records {
        /// The answer section.
        answers: Vec<Rr>,
        /// The additional section (addresses of SRV targets).
        additionals: Vec<Rr>,
    },
    /// The name exists but has no record of the asked type.
    NoData,
    /// The name does not exist in the cluster zone.
    NxDomain,
    /// The name is not the cluster's: ask the upstream resolvers.
    Forward,
}

impl Answer {
    fn records(answers: Vec<Rr>) -> Answer {
        Self::with_additionals(answers, Vec::new())
    }

    fn with_additionals(answers: Vec<Rr>, additionals: Vec<Rr>) -> Answer {
        if answers.is_empty() {
            Answer::NoData
        } else {
            Answer::Records {
                answers,
                additionals,
            }
        }
    }
}

/// A named port of a Service or of an endpoint, as SRV records publish it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct NamedPort {
    /// Lowercase port name.
    name: String,
    /// Lowercase protocol (`tcp`, `udp`, `sctp`).
    protocol: String,
    port: u16,
}

/// One ready endpoint address of a headless Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Endpoint {
    /// Its label under the Service name: the `hostname`, or the dashed address.
    label: String,
    ip: IpAddr,
    /// The named ports of its slice.
    ports: Vec<NamedPort>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// ClusterIP, NodePort or LoadBalancer: its cluster IPs.
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: the ready endpoints.
    Headless(Vec<Endpoint>),
    /// An alias (lowercase, without the trailing dot).
    ExternalName(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceEntry {
    kind: Kind,
    /// Named ports from the Service spec (used for ClusterIP SRV records).
    ports: Vec<NamedPort>,
}

/// An immutable view of the cluster's names, rebuilt whenever the caches change.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The cluster domain, lowercase, without dots at either end.
    zone: String,
    ttl: u32,
    /// `(namespace, name)` → Service.
    services: HashMap<(String, String), ServiceEntry>,
    /// Namespaces that have at least one Service (their `<ns>.svc.<zone>` exists).
    namespaces: HashSet<String>,
    /// Address → names that point back at it.
    reverse: HashMap<IpAddr, BTreeSet<String>>,
    /// Serial of the zone's SOA: bumped by the caller per rebuild.
    serial: u32,
}

impl Snapshot {
    /// An empty zone `zone` (e.g. `cluster.local`) whose records live `ttl` seconds.
    pub fn empty(zone: &str, ttl: u32) -> Snapshot {
        Snapshot {
            zone: normalize(zone),
            ttl,
            services: HashMap::new(),
            namespaces: HashSet::new(),
            reverse: HashMap::new(),
            serial: 1,
        }
    }

    /// The zone built from `services` and `slices`, with SOA serial `serial`.
    pub fn build<'a>(
        zone: &str,
        ttl: u32,
        serial: u32,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Snapshot {
        let mut snapshot = Snapshot::empty(zone, ttl);
        snapshot.serial = serial;
        let mut by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let (Some(ns), Some(svc)) = (
                slice.metadata.namespace.as_deref(),
                slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL)),
            ) else {
                continue;
            };
            by_service
                .entry((ns.to_ascii_lowercase(), svc.to_ascii_lowercase()))
                .or_default()
                .push(slice);
        }
        for svc in services {
            let (Some(ns), Some(name)) = (
                svc.metadata.namespace.as_deref(),
                svc.metadata.name.as_deref(),
            ) else {
                continue;
            };
            let key = (ns.to_ascii_lowercase(), name.to_ascii_lowercase());
            let slices = by_service.get(&key).map(Vec::as_slice).unwrap_or_default();
            let entry = service_entry(svc, slices);
            snapshot.namespaces.insert(key.0.clone());
            let fqdn = format!("{}.{}.svc.{}", key.1, key.0, snapshot.zone);
            match &entry.kind {
                Kind::ClusterIp(ips) => {
                    for ip in ips {
                        snapshot
                            .reverse
                            .entry(*ip)
                            .or_default()
                            .insert(fqdn.clone());
                    }
                }
                Kind::Headless(endpoints) => {
                    for ep in endpoints {
                        snapshot
                            .reverse
                            .entry(ep.ip)
                            .or_default()
                            .insert(format!("{}.{fqdn}", ep.label));
                    }
                }
                Kind::ExternalName(_) => {}
            }
            snapshot.services.insert(key, entry);
        }
        snapshot
    }

    /// The cluster domain.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// How many Services the zone holds.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// Whether `name` (any case, trailing dot or not) is the zone or inside it.
    pub fn in_zone(&self, name: &str) -> bool {
        relative_to(&normalize(name), &self.zone).is_some()
    }

    /// The zone's SOA record, for the authority section of negative answers.
    pub fn soa(&self) -> Rr {
        Rr {
            name: self.zone.clone(),
            ttl: self.ttl,
            data: RData::Soa {
                mname: format!("ns.dns.{}", self.zone),
                rname: format!("hostmaster.{}", self.zone),
                serial: self.serial,
                minimum: self.ttl,
            },
        }
    }

    /// Answers `qtype` for `name` (any case, trailing dot or not).
    pub fn lookup(&self, name: &str, qtype: RecordType) -> Answer {
        let name = normalize(name);
        if let Some(rel) = relative_to(&name, &self.zone) {
            let labels: Vec<&str> = if rel.is_empty() {
                Vec::new()
            } else {
                rel.rsplit('.').collect()
            };
            return self.lookup_in_zone(&name, &labels, qtype, 0);
        }
        if let Some(ip) = parse_reverse(&name) {
            return match self.reverse.get(&ip) {
                Some(targets) if qtype == RecordType::PTR => Answer::records(
                    targets
                        .iter()
                        .map(|t| self.rr(&name, RData::Ptr(t.clone())))
                        .collect(),
                ),
                Some(_) => Answer::NoData,
                None => Answer::Forward,
            };
        }
        Answer::Forward
    }

    /// `labels` are the name's labels under the zone, outermost first (`svc`, `ns`, name).
    fn lookup_in_zone(&self, name: &str, labels: &[&str], qtype: RecordType, depth: u8) -> Answer {
        match labels {
            [] => match qtype {
                RecordType::SOA => Answer::records(vec![self.soa()]),
                _ => Answer::NoData,
            },
            ["dns-version"] => match qtype {
                RecordType::TXT => {
                    Answer::records(vec![self.rr(name, RData::Txt(SCHEMA_VERSION.to_string()))])
                }
                _ => Answer::NoData,
            },
            ["svc"] | ["pod"] => Answer::NoData,
            ["svc", ns] => {
                if self.namespaces.contains(*ns) {
                    Answer::NoData
                } else {
                    Answer::NxDomain
                }
            }
            ["svc", ns, svc] => match self.services.get(&(ns.to_string(), svc.to_string())) {
                Some(entry) => self.service_records(name, entry, qtype, depth),
                None => Answer::NxDomain,
            },
            ["svc", ns, svc, label] => {
                let Some(entry) = self.services.get(&(ns.to_string(), svc.to_string())) else {
                    return Answer::NxDomain;
                };
                match &entry.kind {
                    Kind::Headless(endpoints) => {
                        let mine: Vec<&Endpoint> =
                            endpoints.iter().filter(|ep| ep.label == *label).collect();
                        if mine.is_empty() {
                            // `_tcp.<svc>...`: an empty non-terminal above SRV names.
                            if self.has_protocol(entry, label) {
                                return Answer::NoData;
                            }
                            return Answer::NxDomain;
                        }
                        Answer::records(
                            mine.iter()
                                .filter_map(|ep| self.address_rr(name, ep.ip, qtype))
                                .collect(),
                        )
                    }
                    _ if self.has_protocol(entry, label) => Answer::NoData,
                    _ => Answer::NxDomain,
                }
            }
            ["svc", ns, svc, proto, port] => {
                let Some(entry) = self.services.get(&(ns.to_string(), svc.to_string())) else {
                    return Answer::NxDomain;
                };
                let (Some(proto), Some(port)) = (proto.strip_prefix('_'), port.strip_prefix('_'))
                else {
                    return Answer::NxDomain;
                };
                let service_name = format!("{svc}.{ns}.svc.{}", self.zone);
                let (answers, additionals) =
                    self.srv_records(name, &service_name, entry, Some((port, proto)));
                if answers.is_empty() {
                    return Answer::NxDomain;
                }
                if qtype == RecordType::SRV {
                    Answer::with_additionals(answers, additionals)
                } else {
                    Answer::NoData
                }
            }
            ["pod", _ns, ip] => match parse_dashed_ip(ip) {
                Some(ip) => Answer::records(self.address_rr(name, ip, qtype).into_iter().collect()),
                None => Answer::NxDomain,
            },
            _ => Answer::NxDomain,
        }
    }

    fn service_records(
        &self,
        name: &str,
        entry: &ServiceEntry,
        qtype: RecordType,
        depth: u8,
    ) -> Answer {
        match &entry.kind {
            Kind::ExternalName(target) => {
                let cname = self.rr(name, RData::Cname(target.clone()));
                if qtype == RecordType::CNAME {
                    return Answer::records(vec![cname]);
                }
                let mut answers = vec![cname];
                let mut additionals = Vec::new();
                // A target inside the zone is resolved here, as CoreDNS does; one outside is
                // left to the client's resolver, which follows the CNAME. The depth bound
                // stops ExternalName Services that alias each other in a loop.
                if depth < 8
                    && let Some(rel) = relative_to(target, &self.zone)
                {
                    let labels: Vec<&str> = if rel.is_empty() {
                        Vec::new()
                    } else {
                        rel.rsplit('.').collect()
                    };
                    if let Answer::Records {
                        answers: more,
                        additionals: extra,
                    } = self.lookup_in_zone(target, &labels, qtype, depth + 1)
                    {
                        answers.extend(more);
                        additionals.extend(extra);
                    }
                }
                Answer::with_additionals(answers, additionals)
            }
            Kind::ClusterIp(ips) => match qtype {
                RecordType::SRV => {
                    let (answers, additionals) = self.srv_records(name, name, entry, None);
                    Answer::with_additionals(answers, additionals)
                }
                _ => Answer::records(
                    ips.iter()
                        .filter_map(|ip| self.address_rr(name, *ip, qtype))
                        .collect(),
                ),
            },
            Kind::Headless(endpoints) => match qtype {
                RecordType::SRV => {
                    let (answers, additionals) = self.srv_records(name, name, entry, None);
                    Answer::with_additionals(answers, additionals)
                }
                _ => {
                    let ips: BTreeSet<IpAddr> = endpoints.iter().map(|ep| ep.ip).collect();
                    Answer::records(
                        ips.into_iter()
                            .filter_map(|ip| self.address_rr(name, ip, qtype))
                            .collect(),
                    )
                }
            },
        }
    }

    /// SRV records of `entry`'s named ports (only `(port, proto)` when given), owned by
    /// `name`, and the addresses of their targets.
    fn srv_records(
        &self,
        name: &str,
        service_name: &str,
        entry: &ServiceEntry,
        only: Option<(&str, &str)>,
    ) -> (Vec<Rr>, Vec<Rr>) {
        let wanted =
            |p: &NamedPort| only.is_none_or(|(port, proto)| p.name == port && p.protocol == proto);
        let mut targets: Vec<(u16, String, Option<IpAddr>)> = Vec::new();
        match &entry.kind {
            Kind::ClusterIp(_) => {
                for p in entry.ports.iter().filter(|p| wanted(p)) {
                    targets.push((p.port, service_name.to_string(), None));
                }
            }
            Kind::Headless(endpoints) => {
                for ep in endpoints {
                    for p in ep.ports.iter().filter(|p| wanted(p)) {
                        targets.push((p.port, format!("{}.{service_name}", ep.label), Some(ep.ip)));
                    }
                }
            }
            Kind::ExternalName(_) => {}
        }
        targets.sort();
        targets.dedup();
        // CoreDNS's weights: every record priority 0, the weights sharing 100.
        let weight = u16::try_from(100 / targets.len().max(1)).unwrap_or(100);
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        let mut seen = HashSet::new();
        for (port, target, ip) in targets {
            answers.push(self.rr(
                name,
                RData::Srv {
                    priority: 0,
                    weight,
                    port,
                    target: target.clone(),
                },
            ));
            if !seen.insert(target.clone()) {
                continue;
            }
            match (ip, &entry.kind) {
                (Some(ip), _) => additionals.push(self.address_record(&target, ip)),
                (None, Kind::ClusterIp(ips)) => {
                    additionals.extend(ips.iter().map(|ip| self.address_record(&target, *ip)));
                }
                _ => {}
            }
        }
        (answers, additionals)
    }

    /// Whether `label` is `_<proto>` of one of `entry`'s named ports.
    fn has_protocol(&self, entry: &ServiceEntry, label: &str) -> bool {
        let Some(proto) = label.strip_prefix('_') else {
            return false;
        };
        let mut ports = entry.ports.iter();
        let mut endpoint_ports = match &entry.kind {
            Kind::Headless(eps) => eps.iter().flat_map(|ep| ep.ports.iter()).collect(),
            _ => Vec::new(),
        }
        .into_iter();
        ports.any(|p| p.protocol == proto) || endpoint_ports.any(|p| p.protocol == proto)
    }

    /// An A or AAAA record of `ip` when it is of the asked type.
    fn address_rr(&self, name: &str, ip: IpAddr, qtype: RecordType) -> Option<Rr> {
        match (ip, qtype) {
            (IpAddr::V4(_), RecordType::A) | (IpAddr::V6(_), RecordType::AAAA) => {
                Some(self.address_record(name, ip))
            }
            _ => None,
        }
    }

    fn address_record(&self, name: &str, ip: IpAddr) -> Rr {
        match ip {
            IpAddr::V4(v4) => self.rr(name, RData::A(v4)),
            IpAddr::V6(v6) => self.rr(name, RData::Aaaa(v6)),
        }
    }

    fn rr(&self, name: &str, data: RData) -> Rr {
        Rr {
            name: name.to_string(),
            ttl: self.ttl,
            data,
        }
    }
}

/// The DNS entry of `svc`, given the EndpointSlices labelled with its name.
fn service_entry(svc: &Service, slices: &[&EndpointSlice]) -> ServiceEntry {
    let spec = svc.spec.clone().unwrap_or_default();
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| named_port(p.name.as_deref(), p.protocol.as_deref(), i64::from(p.port)))
        .collect();
    if spec.type_.as_deref() == Some("ExternalName") {
        let target = normalize(spec.external_name.as_deref().unwrap_or_default());
        return ServiceEntry {
            kind: if target.is_empty() {
                Kind::ClusterIp(Vec::new())
            } else {
                Kind::ExternalName(target)
            },
            ports,
        };
    }
    let cluster_ips: Vec<&str> = match spec.cluster_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        _ => spec.cluster_ip.as_deref().into_iter().collect(),
    };
    if cluster_ips.iter().any(|ip| ip.eq_ignore_ascii_case("none")) {
        let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
        return ServiceEntry {
            kind: Kind::Headless(endpoints(slices, publish_not_ready)),
            ports,
        };
    }
    ServiceEntry {
        kind: Kind::ClusterIp(
            cluster_ips
                .iter()
                .filter_map(|ip| ip.parse().ok())
                .collect(),
        ),
        ports,
    }
}

/// The ready endpoint addresses of `slices` (all of them when `publish_not_ready`), each
/// once, in a stable order.
fn endpoints(slices: &[&EndpointSlice], publish_not_ready: bool) -> Vec<Endpoint> {
    let mut out = BTreeSet::new();
    for slice in slices {
        let ports: Vec<NamedPort> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                named_port(p.name.as_deref(), p.protocol.as_deref(), i64::from(p.port?))
            })
            .collect();
        for ep in &slice.endpoints {
            // A missing `ready` condition means ready (the API's documented default).
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready && !publish_not_ready {
                continue;
            }
            let hostname = ep
                .hostname
                .as_deref()
                .filter(|h| !h.is_empty())
                .map(str::to_ascii_lowercase);
            for addr in &ep.addresses {
                // FQDN slices (and garbage) have no address to publish.
                let Ok(ip) = addr.parse::<IpAddr>() else {
                    continue;
                };
                out.insert(Endpoint {
                    label: hostname.clone().unwrap_or_else(|| dashed_ip(ip)),
                    ip,
                    ports: ports.clone(),
                });
            }
        }
    }
    out.into_iter().collect()
}

/// A port that SRV records publish: named, with a valid number.
fn named_port(name: Option<&str>, protocol: Option<&str>, port: i64) -> Option<NamedPort> {
    let name = name.filter(|n| !n.is_empty())?;
    Some(NamedPort {
        name: name.to_ascii_lowercase(),
        protocol: protocol.unwrap_or("TCP").to_ascii_lowercase(),
        port: u16::try_from(port).ok().filter(|p| *p != 0)?,
    })
}

/// `10.0.0.7` → `10-0-0-7`; `fd00::7` → `fd00--7` (CoreDNS's endpoint names).
pub fn dashed_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// `10-0-0-7` → `10.0.0.7`, `fd00--7` → `fd00::7`; `None` for anything else.
fn parse_dashed_ip(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>()
        && label.matches('-').count() == 3
    {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The address a reverse name (`7.0.0.10.in-addr.arpa`, or 32 nibbles under `ip6.arpa`)
/// stands for.
fn parse_reverse(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut octets: Vec<u8> = Vec::with_capacity(4);
        for label in rest.rsplit('.') {
            // No leading zeros or signs: `010` is not the label of 10.
            if label.is_empty() || (label.len() > 1 && label.starts_with('0')) {
                return None;
            }
            octets.push(label.parse().ok()?);
        }
        let octets: [u8; 4] = octets.try_into().ok()?;
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let mut value: u128 = 0;
    let mut count = 0;
    for label in rest.rsplit('.') {
        let mut chars = label.chars();
        let (Some(c), None) = (chars.next(), chars.next()) else {
            return None;
        };
        value = (value << 4) | u128::from(c.to_digit(16)?);
        count += 1;
    }
    (count == 32).then(|| IpAddr::V6(Ipv6Addr::from(value)))
}

/// Lowercase, without dots at either end.
fn normalize(name: &str) -> String {
    name.trim_matches('.').to_ascii_lowercase()
}

/// The part of `name` under `zone` (`""` for the zone itself); `None` outside it.
fn relative_to<'a>(name: &'a str, zone: &str) -> Option<&'a str> {
    if name == zone {
        return Some("");
    }
    name.strip_suffix(zone)?.strip_suffix('.')
}

#[cfg(test)]
mod tests;
