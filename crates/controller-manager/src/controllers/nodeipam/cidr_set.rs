//! A set of equal-sized subnets carved from one cluster CIDR, each free or taken (upstream's
//! `cidrset.CidrSet`), for IPv4 and IPv6.
//!
//! Subnets are numbered from the start of the cluster CIDR. Allocation goes round-robin, as
//! upstream's: the search starts after the subnet handed out last, so a subnet just released
//! is not handed out again at once (a node deleted and another created a moment later do not
//! share a CIDR while routes to the old one may linger).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The most subnets a cluster CIDR may be divided into: at most 16 bits between the two
/// prefix lengths, as upstream's `clusterSubnetMaxDiff`.
pub const MAX_SUBNET_BITS: u8 = 16;

/// Why a CIDR set cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrSetError {
    /// The node mask is shorter than the cluster's or longer than an address.
    #[error(
        "node CIDR mask size /{node} does not fit in the cluster CIDR /{cluster} ({bits}-bit addresses)"
    )]
    MaskOutOfRange {
        /// The cluster CIDR's prefix length.
        cluster: u8,
        /// The node CIDR prefix length.
        node: u8,
        /// Bits in an address of the family.
        bits: u8,
    },
    /// The node mask would make more than 2^16 subnets.
    #[error(
        "node CIDR mask size /{node} makes more than 2^{MAX_SUBNET_BITS} subnets of the cluster CIDR /{cluster}"
    )]
    TooManySubnets {
        /// The cluster CIDR's prefix length.
        cluster: u8,
        /// The node CIDR prefix length.
        node: u8,
    },
}

/// A CIDR: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The first address.
    pub ip: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

impl Cidr {
    /// Parses `10.244.1.0/24` or `fd00:1::/64`; `None` when it is no CIDR.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, prefix) = s.split_once('/')?;
        let ip: IpAddr = ip.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        (prefix <= bits(ip)).then_some(Cidr { ip, prefix })
    }
}

fn bits(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The mask of the host part of a `prefix` in a `bits`-bit address.
fn host_mask(bits: u8, prefix: u8) -> u128 {
    let host = u32::from(bits - prefix);
    1u128.checked_shl(host).map_or(u128::MAX, |v| v - 1)
}

/// Subnets of one cluster CIDR, each taken or free.
#[derive(Debug, Clone)]
pub struct CidrSet {
    v4: bool,
    /// The cluster CIDR's first address.
    base: u128,
    cluster_prefix: u8,
    node_prefix: u8,
    taken: Vec<bool>,
    used: usize,
    /// Where the next search starts.
    next: usize,
}

impl CidrSet {
    /// The subnets of `/node_prefix` in `cluster` (host bits of its address are ignored).
    pub fn new(cluster: Cidr, node_prefix: u8) -> Result<Self, CidrSetError> {
        let bits = bits(cluster.ip);
        if node_prefix < cluster.prefix || node_prefix > bits {
            return Err(CidrSetError::MaskOutOfRange {
                cluster: cluster.prefix,
                node: node_prefix,
                bits,
            });
        }
        if node_prefix - cluster.prefix > MAX_SUBNET_BITS {
            return Err(CidrSetError::TooManySubnets {
                cluster: cluster.prefix,
                node: node_prefix,
            });
        }
        let count = 1usize << (node_prefix - cluster.prefix);
        Ok(CidrSet {
            v4: cluster.ip.is_ipv4(),
            base: to_u128(cluster.ip) & !host_mask(bits, cluster.prefix),
            cluster_prefix: cluster.prefix,
            node_prefix,
            taken: vec![false; count],
            used: 0,
            next: 0,
        })
    }

    fn bits(&self) -> u8 {
        if self.v4 { 32 } else { 128 }
    }

    /// How many subnets there are.
    pub fn capacity(&self) -> usize {
        self.taken.len()
    }

    /// How many subnets are taken.
    pub fn used(&self) -> usize {
        self.used
    }

    /// The subnet numbered `index`.
    pub fn cidr(&self, index: usize) -> Cidr {
        let shift = u32::from(self.bits() - self.node_prefix);
        let offset = (index as u128).checked_shl(shift).unwrap_or(0);
        let addr = self.base | offset;
        let ip = if self.v4 {
            // The address came from an IPv4 base and an offset inside it: it fits in 32 bits.
            IpAddr::V4(Ipv4Addr::from(u32::try_from(addr).unwrap_or(u32::MAX)))
        } else {
            IpAddr::V6(Ipv6Addr::from(addr))
        };
        Cidr {
            ip,
            prefix: self.node_prefix,
        }
    }

    /// The number of `cidr` in this set; `None` when it is not one of its subnets (another
    /// family or size, outside the cluster CIDR, or not aligned).
    pub fn index_of(&self, cidr: Cidr) -> Option<usize> {
        if cidr.ip.is_ipv4() != self.v4 || cidr.prefix != self.node_prefix {
            return None;
        }
        let bits = self.bits();
        let addr = to_u128(cidr.ip);
        if addr & !host_mask(bits, self.cluster_prefix) != self.base {
            return None;
        }
        if addr & host_mask(bits, self.node_prefix) != 0 {
            return None;
        }
        let index = (addr - self.base)
            .checked_shr(u32::from(bits - self.node_prefix))
            .unwrap_or(0);
        usize::try_from(index)
            .ok()
            .filter(|i| *i < self.taken.len())
    }

    /// Takes the next free subnet; `None` when all are taken.
    pub fn allocate(&mut self) -> Option<usize> {
        let count = self.taken.len();
        let index = (0..count)
            .map(|i| (self.next + i) % count)
            .find(|i| !self.taken[*i])?;
        self.taken[index] = true;
        self.used += 1;
        self.next = (index + 1) % count;
        Some(index)
    }

    /// Marks subnet `index` taken (an existing node's); false if it already was.
    pub fn occupy(&mut self, index: usize) -> bool {
        match self.taken.get_mut(index) {
            Some(taken) if !*taken => {
                *taken = true;
                self.used += 1;
                true
            }
            _ => false,
        }
    }

    /// Frees subnet `index`.
    pub fn release(&mut self, index: usize) {
        if let Some(taken) = self.taken.get_mut(index)
            && *taken
        {
            *taken = false;
            self.used -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).expect("cidr")
    }

    /// Allocates the next subnet, which must exist.
    fn next(set: &mut CidrSet, why: &str) -> String {
        let index = set.allocate().expect(why);
        set.cidr(index).to_string()
    }

    #[test]
    fn ipv4_subnets_are_handed_out_in_order_until_exhausted_and_reused_after_release() {
        let mut set = CidrSet::new(cidr("10.244.0.0/22"), 24).expect("set");
        assert_eq!(set.capacity(), 4);
        let got: Vec<String> = (0..4).map(|_| next(&mut set, "free")).collect();
        assert_eq!(
            got,
            [
                "10.244.0.0/24",
                "10.244.1.0/24",
                "10.244.2.0/24",
                "10.244.3.0/24"
            ]
        );
        assert_eq!(set.allocate(), None, "exhausted");
        assert_eq!(set.used(), 4);
        set.release(set.index_of(cidr("10.244.2.0/24")).expect("member"));
        assert_eq!(set.used(), 3);
        assert_eq!(next(&mut set, "released one"), "10.244.2.0/24");
        assert_eq!(set.allocate(), None);
    }

    #[test]
    fn allocation_is_round_robin_and_skips_occupied_subnets() {
        let mut set = CidrSet::new(cidr("10.0.0.0/16"), 24).expect("set");
        assert!(set.occupy(0));
        assert!(set.occupy(1));
        assert!(!set.occupy(1), "occupied twice");
        assert_eq!(set.allocate(), Some(2));
        set.release(0);
        assert_eq!(
            set.allocate(),
            Some(3),
            "a released subnet waits for its turn"
        );
        assert_eq!(set.capacity(), 256);
    }

    #[test]
    fn ipv6_subnets_and_membership() {
        let mut set = CidrSet::new(cidr("fd00:10:244::/56"), 64).expect("set");
        assert_eq!(set.capacity(), 256);
        assert_eq!(next(&mut set, "free"), "fd00:10:244::/64");
        assert_eq!(next(&mut set, "free"), "fd00:10:244:1::/64");
        assert_eq!(set.index_of(cidr("fd00:10:244:ff::/64")), Some(255));
        assert_eq!(set.index_of(cidr("fd00:10:245::/64")), None, "outside");
        assert_eq!(set.index_of(cidr("fd00:10:244::/65")), None, "other size");
        assert_eq!(set.index_of(cidr("10.244.0.0/24")), None, "other family");
    }

    #[test]
    fn ipv4_membership_and_host_bits() {
        // Host bits of the cluster CIDR are ignored, as a parsed network would drop them.
        let set = CidrSet::new(cidr("10.244.7.1/16"), 24).expect("set");
        assert_eq!(set.cidr(0).to_string(), "10.244.0.0/24");
        assert_eq!(set.index_of(cidr("10.244.255.0/24")), Some(255));
        assert_eq!(set.index_of(cidr("10.244.3.128/24")), None, "not aligned");
        assert_eq!(set.index_of(cidr("10.245.0.0/24")), None, "outside");
        assert_eq!(Cidr::parse("10.0.0.0/33"), None);
        assert_eq!(Cidr::parse("nope/8"), None);
    }

    #[test]
    fn bad_masks_are_refused() {
        assert!(matches!(
            CidrSet::new(cidr("10.0.0.0/16"), 8),
            Err(CidrSetError::MaskOutOfRange { .. })
        ));
        assert!(matches!(
            CidrSet::new(cidr("10.0.0.0/8"), 25),
            Err(CidrSetError::TooManySubnets { .. })
        ));
        let whole = CidrSet::new(cidr("10.0.0.0/24"), 24).expect("one subnet");
        assert_eq!(whole.capacity(), 1);
        let single_host = CidrSet::new(cidr("fd00::/120"), 128).expect("single addresses");
        assert_eq!(single_host.cidr(255).to_string(), "fd00::ff/128");
    }
}
