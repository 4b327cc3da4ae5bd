//! Service admission: ClusterIPs from the service CIDR (`--service-cluster-ip-range`) and
//! NodePorts from the node-port range (`--service-node-port-range`), as Kubernetes' service
//! REST storage allocates them.
//!
//! The allocation tables live in memory and are rebuilt from the stored Services when the
//! apiserver starts ([`ServiceAllocator::repair`]). A write reserves what it needs before it
//! is stored and gives it back if the write fails, and a deleted Service gives back what it
//! held once the delete is stored; so a crash between the two can never leak an address or
//! a port, because the next start rebuilds the tables from what was acknowledged. The
//! repair pass reports Services whose address or port is outside the configured ranges or
//! held twice.
//!
//! Only single-stack IPv4 is supported: `ipFamilies` is `[IPv4]` and `ipFamilyPolicy`
//! `SingleStack` on every Service with a cluster IP.
//!
//! As upstream (KEP-3070, KEP-3668), the lower part of each range is kept for explicit
//! requests: automatic allocation takes from the upper part first, so well-known addresses
//! such as the cluster DNS's tenth address stay free for whoever asks for them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::sync::Mutex;

use rkube_types::{ApiError, Reason, StatusCause};
use serde_json::{Value, json};

/// The default service CIDR, as Kubernetes'.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";

/// The default node-port range, as Kubernetes'.
pub const DEFAULT_NODE_PORT_RANGE: RangeInclusive<u16> = 30000..=32767;

/// Why a range given on the command line is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RangeError {
    /// Not `a.b.c.d/len`, or not IPv4.
    #[error("{0:?} is not an IPv4 CIDR (e.g. 10.96.0.0/12)")]
    Cidr(String),
    /// Fewer than 8 addresses, or more than 2^20 (upstream's limits for IPv4).
    #[error("{0:?} must hold between 8 and 2^20 addresses (a prefix length between /12 and /29)")]
    CidrSize(String),
    /// Not `first-last`.
    #[error("{0:?} is not a port range (e.g. 30000-32767)")]
    Ports(String),
}

/// A service CIDR: the addresses between the network and broadcast addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCidr {
    network: u32,
    prefix: u8,
}

impl ServiceCidr {
    /// Parses `a.b.c.d/len`.
    pub fn parse(s: &str) -> Result<Self, RangeError> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| RangeError::Cidr(s.into()))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| RangeError::Cidr(s.into()))?;
        let prefix: u8 = len.parse().map_err(|_| RangeError::Cidr(s.into()))?;
        if !(12..=29).contains(&prefix) {
            return Err(RangeError::CidrSize(s.into()));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(ServiceCidr {
            network: u32::from(ip) & mask,
            prefix,
        })
    }

    /// How many addresses can be handed out (without network and broadcast).
    pub fn size(&self) -> u32 {
        (1u32 << (32 - self.prefix)) - 2
    }

    /// The `n`th usable address, from 0 (network + 1).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 1 + n)
    }

    /// The offset of `ip` among the usable addresses, if it is one.
    fn offset(&self, ip: Ipv4Addr) -> Option<u32> {
        let ip = u32::from(ip);
        let n = ip.checked_sub(self.network + 1)?;
        (n < self.size()).then_some(n)
    }

    /// The first usable address: the `kubernetes` Service's.
    pub fn first(&self) -> Ipv4Addr {
        self.nth(0)
    }
}

impl std::fmt::Display for ServiceCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }
}

/// Parses `first-last` (as `--service-node-port-range`; a single port is a range of one).
pub fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, RangeError> {
    let err = || RangeError::Ports(s.into());
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a.trim().parse().map_err(|_| err())?;
    let b: u16 = b.trim().parse().map_err(|_| err())?;
    if a == 0 || a > b {
        return Err(err());
    }
    Ok(a..=b)
}

/// The size of the part of a range kept for explicit requests: upstream's
/// `min(max(16, size/16), cap)`.
fn static_band(size: u32, cap: u32) -> u32 {
    (size / 16).max(16).min(cap).min(size)
}

/// One allocation table: offsets in a range, each held by a Service UID.
#[derive(Debug, Default)]
struct Table {
    held: BTreeMap<u32, String>,
}

/// The outcome of taking a value.
#[derive(Debug, PartialEq, Eq)]
enum Taken {
    /// Newly taken by this owner.
    New(u32),
    /// Already held by this owner.
    Kept(u32),
}

impl Table {
    /// Takes `offset` for `owner`; None when someone else holds it.
    fn take(&mut self, offset: u32, owner: &str) -> Option<Taken> {
        match self.held.get(&offset) {
            Some(o) if o == owner => Some(Taken::Kept(offset)),
            Some(_) => None,
            None => {
                self.held.insert(offset, owner.to_string());
                Some(Taken::New(offset))
            }
        }
    }

    /// Takes a free offset in `0..size`, trying `band_start..size` first from a random
    /// point, then `0..band_start`.
    fn take_any(&mut self, size: u32, band_start: u32, owner: &str, seed: u32) -> Option<u32> {
        let upper = size - band_start;
        let found = (upper > 0)
            .then(|| Self::free_in(&self.held, band_start, upper, seed % upper))
            .flatten()
            .or_else(|| Self::free_in(&self.held, 0, band_start, 0))?;
        self.held.insert(found, owner.to_string());
        Some(found)
    }

    /// A free offset in `start..start + len`, scanning from `start + from` and wrapping.
    fn free_in(held: &BTreeMap<u32, String>, start: u32, len: u32, from: u32) -> Option<u32> {
        if len == 0 {
            return None;
        }
        let scan = |lo: u32, hi: u32| {
            let mut want = lo;
            for (&o, _) in held.range(lo..hi) {
                if o != want {
                    return Some(want);
                }
                want = o + 1;
            }
            (want < hi).then_some(want)
        };
        scan(start + from, start + len).or_else(|| scan(start, start + from))
    }

    /// Gives `offset` back if `owner` holds it.
    fn release(&mut self, offset: u32, owner: &str) {
        if self.held.get(&offset).is_some_and(|o| o == owner) {
            self.held.remove(&offset);
        }
    }
}

#[derive(Debug, Default)]
struct Tables {
    ips: Table,
    ports: Table,
}

/// The ClusterIP and NodePort allocation tables of one apiserver.
#[derive(Debug)]
pub struct ServiceAllocator {
    cidr: ServiceCidr,
    ports: RangeInclusive<u16>,
    tables: Mutex<Tables>,
}

/// What a write's admission found wrong.
#[derive(Debug, Default)]
struct Problems {
    invalid: Vec<StatusCause>,
    exhausted: Option<String>,
}

/// What a Service holds: its cluster IP and node ports.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Holdings {
    ip: Option<Ipv4Addr>,
    ports: BTreeSet<u16>,
}

/// What the repair pass found wrong with the stored Services.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// Addresses and ports taken in the tables.
    pub ips: usize,
    /// Node ports taken.
    pub ports: usize,
    /// `namespace/name: problem` for each Service whose address or port could not be taken.
    pub problems: Vec<String>,
}

impl Default for ServiceAllocator {
    fn default() -> Self {
        ServiceAllocator::new(
            ServiceCidr::parse(DEFAULT_SERVICE_CIDR).expect("the default CIDR parses"),
            DEFAULT_NODE_PORT_RANGE,
        )
    }
}

impl ServiceAllocator {
    /// Empty tables over `cidr` and `ports`.
    pub fn new(cidr: ServiceCidr, ports: RangeInclusive<u16>) -> Self {
        ServiceAllocator {
            cidr,
            ports,
            tables: Mutex::new(Tables::default()),
        }
    }

    /// The service CIDR.
    pub fn cidr(&self) -> ServiceCidr {
        self.cidr
    }

    /// The node-port range.
    pub fn node_ports(&self) -> RangeInclusive<u16> {
        self.ports.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn port_count(&self) -> u32 {
        u32::from(*self.ports.end()) - u32::from(*self.ports.start()) + 1
    }

    /// Rebuilds the tables from the stored Services, oldest first so that of two Services
    /// holding the same address the older keeps it.
    pub fn repair(&self, services: &[Value]) -> RepairReport {
        let mut sorted: Vec<&Value> = services.iter().collect();
        sorted.sort_by(|a, b| {
            let key = |v: &Value| {
                (
                    v["metadata"]["creationTimestamp"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    v["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    v["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            };
            key(a).cmp(&key(b))
        });
        let mut tables = self.lock();
        *tables = Tables::default();
        let mut report = RepairReport::default();
        for svc in sorted {
            let who = format!(
                "{}/{}",
                svc["metadata"]["namespace"].as_str().unwrap_or_default(),
                svc["metadata"]["name"].as_str().unwrap_or_default()
            );
            let owner = svc["metadata"]["uid"].as_str().unwrap_or_default();
            if let Some(ip) = cluster_ip_of(svc) {
                match ip.parse::<Ipv4Addr>().ok() {
                    None => report
                        .problems
                        .push(format!("{who}: cluster IP {ip:?} is not an IPv4 address")),
                    Some(addr) => match self.cidr.offset(addr) {
                        None => report.problems.push(format!(
                            "{who}: cluster IP {addr} is not within the service CIDR {}; recreate the Service to give it a valid one",
                            self.cidr
                        )),
                        Some(o) => match tables.ips.take(o, owner) {
                            Some(_) => report.ips += 1,
                            None => report.problems.push(format!(
                                "{who}: cluster IP {addr} is already held by an older Service; recreate the Service"
                            )),
                        },
                    },
                }
            }
            for port in node_ports_of(svc) {
                match self.port_offset(port) {
                    None => report.problems.push(format!(
                        "{who}: node port {port} is not within the range {}-{}",
                        self.ports.start(),
                        self.ports.end()
                    )),
                    Some(o) => match tables.ports.take(o, owner) {
                        Some(Taken::New(_)) => report.ports += 1,
                        Some(Taken::Kept(_)) => {}
                        None => report.problems.push(format!(
                            "{who}: node port {port} is already held by an older Service"
                        )),
                    },
                }
            }
        }
        report
    }

    fn port_offset(&self, port: u16) -> Option<u32> {
        self.ports
            .contains(&port)
            .then(|| u32::from(port) - u32::from(*self.ports.start()))
    }

    /// Admits a Service write: fills and checks `spec.clusterIP(s)` and node ports of `new`
    /// (a create when `old` is None), taking what it needs. The reservation gives back what
    /// it took when dropped, unless [`Reservation::commit`] is called once the write is
    /// stored (which also gives back what `old` held and `new` no longer does).
    pub fn admit<'a>(
        &'a self,
        old: Option<&Value>,
        new: &mut Value,
    ) -> Result<Reservation<'a>, Refusal> {
        let owner = new["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut reservation = Reservation {
            allocator: self,
            owner,
            taken: Holdings::default(),
            release: Holdings::default(),
            committed: false,
        };
        let old_holdings = old.map(|o| self.holdings(o)).unwrap_or_default();
        let mut causes = Problems::default();
        let spec = match new.get_mut("spec") {
            Some(s) if s.is_object() => s,
            _ => return Ok(reservation),
        };
        let service_type = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
        let old_spec = old.map(|o| &o["spec"]);
        self.admit_cluster_ip(&mut reservation, &service_type, old_spec, spec, &mut causes);
        self.admit_node_ports(&mut reservation, &service_type, old_spec, spec, &mut causes);
        if let Some(message) = causes.exhausted {
            return Err(Refusal::Exhausted(message));
        }
        if !causes.invalid.is_empty() {
            return Err(Refusal::Invalid(causes.invalid));
        }
        let now = self.holdings(new);
        reservation.release = Holdings {
            ip: old_holdings.ip.filter(|ip| now.ip != Some(*ip)),
            ports: old_holdings.ports.difference(&now.ports).copied().collect(),
        };
        Ok(reservation)
    }

    /// What a stored Service holds in this allocator's ranges.
    fn holdings(&self, svc: &Value) -> Holdings {
        Holdings {
            ip: cluster_ip_of(svc)
                .and_then(|ip| ip.parse().ok())
                .filter(|ip| self.cidr.offset(*ip).is_some()),
            ports: node_ports_of(svc)
                .filter(|p| self.ports.contains(p))
                .collect(),
        }
    }

    fn admit_cluster_ip(
        &self,
        r: &mut Reservation<'_>,
        service_type: &str,
        old_spec: Option<&Value>,
        spec: &mut Value,
        causes: &mut Problems,
    ) {
        let old_ip = old_spec
            .and_then(|s| s["clusterIP"].as_str())
            .filter(|ip| !ip.is_empty())
            .map(str::to_string);
        let mut ip = spec["clusterIP"].as_str().unwrap_or_default().to_string();
        let ips: Vec<String> = spec["clusterIPs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        if service_type == "ExternalName" {
            // Changing to ExternalName drops the address the Service had (Kubernetes'
            // dropTypeDependentFields); a new one may not be asked for.
            if ip.is_empty() || Some(&ip) == old_ip.as_ref() {
                if let Some(o) = spec.as_object_mut() {
                    for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                        o.remove(f);
                    }
                }
            } else {
                causes.invalid.push(StatusCause::forbidden(
                    "spec.clusterIP",
                    "may not be set when `type` is 'ExternalName'",
                ));
            }
            return;
        }
        if ips.len() > 1 {
            causes.invalid.push(StatusCause::invalid(
                "spec.clusterIPs",
                &ips.join(","),
                "only single-stack IPv4 Services are supported",
            ));
            return;
        }
        if spec["ipFamilyPolicy"]
            .as_str()
            .is_some_and(|p| p == "RequireDualStack")
        {
            causes.invalid.push(StatusCause::invalid(
                "spec.ipFamilyPolicy",
                "RequireDualStack",
                "only single-stack IPv4 Services are supported",
            ));
            return;
        }
        if let Some(families) = spec["ipFamilies"].as_array()
            && families.iter().any(|f| f != "IPv4")
        {
            causes.invalid.push(StatusCause::invalid(
                "spec.ipFamilies",
                &families
                    .iter()
                    .map(|f| f.as_str().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(","),
                "only single-stack IPv4 Services are supported",
            ));
            return;
        }
        match (ip.is_empty(), ips.first()) {
            (true, Some(first)) => ip = first.clone(),
            (false, Some(first)) if first != &ip => {
                causes.invalid.push(StatusCause::invalid(
                    "spec.clusterIPs[0]",
                    first,
                    "must match `clusterIP` when both are specified",
                ));
                return;
            }
            _ => {}
        }
        if ip == "None" && matches!(service_type, "NodePort" | "LoadBalancer") {
            causes.invalid.push(StatusCause::invalid(
                "spec.clusterIPs[0]",
                "None",
                "may not be set to 'None' for LoadBalancer services or NodePort",
            ));
            return;
        }
        let was_external = old_spec.is_some_and(|s| s["type"] == "ExternalName");
        match old_ip.filter(|_| !was_external) {
            // An update: the address is kept, and an empty one (a PUT without it) means
            // "keep it".
            Some(old) => {
                if ip.is_empty() {
                    ip = old;
                } else if ip != old {
                    causes.invalid.push(StatusCause::invalid(
                        "spec.clusterIPs[0]",
                        &ip,
                        "may not change once set",
                    ));
                    return;
                }
            }
            None if ip == "None" => {}
            None => match self.take_ip(r, &ip) {
                Ok(taken) => ip = taken.to_string(),
                Err(Ok(cause)) => {
                    causes.invalid.push(cause);
                    return;
                }
                Err(Err(message)) => {
                    causes.exhausted = Some(message);
                    return;
                }
            },
        }
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
        if spec["ipFamilies"].is_null() && ip != "None" {
            spec["ipFamilies"] = json!(["IPv4"]);
        }
        if spec["ipFamilyPolicy"].is_null() {
            spec["ipFamilyPolicy"] = json!("SingleStack");
        }
    }

    /// Takes `ip` (or any free address when empty) for the reservation's owner.
    /// Errors are `Ok(cause)` for a refused request, `Err(message)` when the range is full.
    fn take_ip(
        &self,
        r: &mut Reservation<'_>,
        ip: &str,
    ) -> Result<Ipv4Addr, Result<StatusCause, String>> {
        let mut tables = self.lock();
        if ip.is_empty() {
            let size = self.cidr.size();
            let band = static_band(size, 256);
            return match tables.ips.take_any(size, band, &r.owner, random_u32()) {
                Some(o) => {
                    let addr = self.cidr.nth(o);
                    r.taken.ip = Some(addr);
                    Ok(addr)
                }
                None => Err(Err(format!(
                    "failed to allocate a service IP: the range {} is full",
                    self.cidr
                ))),
            };
        }
        let bad = |detail: String| Ok(StatusCause::invalid("spec.clusterIPs[0]", ip, detail));
        let addr: Ipv4Addr = ip.parse().map_err(|_| {
            bad("must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".into())
        })?;
        let offset = self.cidr.offset(addr).ok_or_else(|| {
            bad(format!(
                "failed to allocate IP {addr}: the provided IP ({addr}) is not in the valid range. The range of valid IPs is {}",
                self.cidr
            ))
        })?;
        match tables.ips.take(offset, &r.owner) {
            Some(Taken::New(_)) => {
                r.taken.ip = Some(addr);
                Ok(addr)
            }
            Some(Taken::Kept(_)) => Ok(addr),
            None => Err(bad(format!(
                "failed to allocate IP {addr}: provided IP is already allocated"
            ))),
        }
    }

    fn admit_node_ports(
        &self,
        r: &mut Reservation<'_>,
        service_type: &str,
        old_spec: Option<&Value>,
        spec: &mut Value,
        causes: &mut Problems,
    ) {
        // NodePort and LoadBalancer Services may have node ports; a LoadBalancer with
        // `allocateLoadBalancerNodePorts: false` keeps and honours them but gets none
        // automatically.
        let needs_ports = matches!(service_type, "NodePort" | "LoadBalancer");
        let auto_ports = match service_type {
            "NodePort" => true,
            "LoadBalancer" => spec["allocateLoadBalancerNodePorts"].as_bool() != Some(false),
            _ => false,
        };
        if matches!(service_type, "NodePort" | "LoadBalancer") {
            if spec["externalTrafficPolicy"].is_null() {
                spec["externalTrafficPolicy"] = json!("Cluster");
            }
        } else if service_type == "ExternalName" {
            spec.as_object_mut()
                .map(|o| o.remove("externalTrafficPolicy"));
        }
        // The node ports the old Service had, by (port, protocol).
        let old_ports: BTreeMap<(i64, String), u16> = old_spec
            .and_then(|s| s["ports"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let np = p["nodePort"].as_u64().filter(|n| *n > 0)?;
                Some(((port_key(p)), u16::try_from(np).ok()?))
            })
            .collect();
        let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) else {
            return;
        };
        // Ports of this Service that share a port number share the node port.
        let mut by_number: BTreeMap<i64, u16> = BTreeMap::new();
        let mut used: BTreeSet<(u16, String)> = BTreeSet::new();
        for (i, p) in ports.iter_mut().enumerate() {
            let at = format!("spec.ports[{i}].nodePort");
            let asked = p["nodePort"].as_i64().unwrap_or(0);
            let key = port_key(p);
            if !needs_ports {
                if asked == 0 {
                    continue;
                }
                if old_ports.get(&key).map(|n| i64::from(*n)) == Some(asked) {
                    // The type changed away from NodePort: the port goes with it.
                    p.as_object_mut().map(|o| o.remove("nodePort"));
                } else {
                    causes.invalid.push(StatusCause::forbidden(
                        at,
                        format!("may not be used when `type` is '{service_type}'"),
                    ));
                }
                continue;
            }
            let wanted = match asked {
                0 => old_ports
                    .get(&key)
                    .copied()
                    .or_else(|| by_number.get(&key.0).copied()),
                n => match u16::try_from(n) {
                    Ok(n) => Some(n),
                    Err(_) => {
                        causes.invalid.push(StatusCause::new(
                            "FieldValueInvalid",
                            &at,
                            format!("Invalid value: {n}: must be between 1 and 65535, inclusive"),
                        ));
                        continue;
                    }
                },
            };
            let port = match wanted {
                None if !auto_ports => continue,
                Some(n) => match self.take_port(r, n) {
                    Ok(n) => n,
                    Err(detail) => {
                        causes.invalid.push(StatusCause::new(
                            "FieldValueInvalid",
                            &at,
                            format!("Invalid value: {n}: {detail}"),
                        ));
                        continue;
                    }
                },
                None => match self.take_any_port(r) {
                    Some(n) => n,
                    None => {
                        causes.exhausted = Some(format!(
                            "failed to allocate a nodePort: the range {}-{} is full",
                            self.ports.start(),
                            self.ports.end()
                        ));
                        continue;
                    }
                },
            };
            if !used.insert((port, key.1.clone())) {
                causes
                    .invalid
                    .push(StatusCause::duplicate(at, &port.to_string()));
                continue;
            }
            by_number.entry(key.0).or_insert(port);
            p["nodePort"] = json!(port);
        }
    }

    fn take_port(&self, r: &mut Reservation<'_>, port: u16) -> Result<u16, String> {
        let offset = self.port_offset(port).ok_or_else(|| {
            format!(
                "provided port is not in the valid range. The range of valid ports is {}-{}",
                self.ports.start(),
                self.ports.end()
            )
        })?;
        match self.lock().ports.take(offset, &r.owner) {
            Some(Taken::New(_)) => {
                r.taken.ports.insert(port);
                Ok(port)
            }
            Some(Taken::Kept(_)) => Ok(port),
            None => Err("provided port is already allocated".into()),
        }
    }

    fn take_any_port(&self, r: &mut Reservation<'_>) -> Option<u16> {
        let size = self.port_count();
        let band = static_band(size, 128);
        let o = self
            .lock()
            .ports
            .take_any(size, band, &r.owner, random_u32())?;
        let port = u16::try_from(u32::from(*self.ports.start()) + o).ok()?;
        r.taken.ports.insert(port);
        Some(port)
    }

    /// Gives back what a deleted Service held.
    pub fn release(&self, svc: &Value) {
        let owner = svc["metadata"]["uid"].as_str().unwrap_or_default();
        let holdings = self.holdings(svc);
        self.give_back(owner, &holdings);
    }

    fn give_back(&self, owner: &str, holdings: &Holdings) {
        let mut tables = self.lock();
        if let Some(o) = holdings.ip.and_then(|ip| self.cidr.offset(ip)) {
            tables.ips.release(o, owner);
        }
        for port in &holdings.ports {
            if let Some(o) = self.port_offset(*port) {
                tables.ports.release(o, owner);
            }
        }
    }

    /// How many addresses and ports are taken.
    pub fn in_use(&self) -> (usize, usize) {
        let tables = self.lock();
        (tables.ips.held.len(), tables.ports.held.len())
    }

    /// Whether `ip` is taken.
    pub fn holds_ip(&self, ip: Ipv4Addr) -> bool {
        self.cidr
            .offset(ip)
            .is_some_and(|o| self.lock().ips.held.contains_key(&o))
    }
}

/// What one Service write took from the tables; given back when dropped uncommitted.
#[derive(Debug)]
pub struct Reservation<'a> {
    allocator: &'a ServiceAllocator,
    owner: String,
    taken: Holdings,
    release: Holdings,
    committed: bool,
}

impl Reservation<'_> {
    /// The write is stored: keep what was taken, give back what the old object held and
    /// the new one does not.
    pub fn commit(mut self) {
        self.committed = true;
        self.allocator.give_back(&self.owner, &self.release);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.allocator.give_back(&self.owner, &self.taken);
        }
    }
}

/// The `(port, protocol)` a service port is known by.
fn port_key(p: &Value) -> (i64, String) {
    (
        p["port"].as_i64().unwrap_or(0),
        p["protocol"].as_str().unwrap_or("TCP").to_string(),
    )
}

/// A Service's cluster IP, unless it has none or is headless.
fn cluster_ip_of(svc: &Value) -> Option<&str> {
    if svc["spec"]["type"] == "ExternalName" {
        return None;
    }
    svc["spec"]["clusterIP"]
        .as_str()
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

/// A Service's node ports.
fn node_ports_of(svc: &Value) -> impl Iterator<Item = u16> + '_ {
    svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodePort"].as_u64())
        .filter_map(|n| u16::try_from(n).ok())
        .filter(|n| *n > 0)
}

fn random_u32() -> u32 {
    (uuid::Uuid::new_v4().as_u128() & 0xffff_ffff) as u32
}

/// Why a Service write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Fields at fault (422 Invalid).
    Invalid(Vec<StatusCause>),
    /// A range has nothing left (500, as upstream answers "range is full").
    Exhausted(String),
}

impl Refusal {
    /// The Kubernetes error for a Service named `name`.
    pub fn into_api_error(self, name: &str) -> ApiError {
        match self {
            Refusal::Invalid(causes) => ApiError::invalid("", "Service", "services", name, causes),
            Refusal::Exhausted(message) => ApiError::new(
                Reason::InternalError,
                format!("Internal error occurred: {message}"),
            ),
        }
    }
}

#[cfg(test)]
mod tests;
