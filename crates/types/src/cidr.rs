//! IPv4 CIDRs, as the pod network and Services need them: parsed from Node objects, flags
//! and `ip route`, normalized to their network address, compared for containment, and
//! printed the way `ip` and `nft` print them. Shared by the kubelet and rkube-proxy.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// A string that is not an IPv4 CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Not `address/length`.
    #[error("invalid CIDR {0:?} (e.g. 10.244.0.0/16)")]
    Syntax(String),
    /// The address part is not an IPv4 address.
    #[error("invalid IPv4 address in CIDR {0:?}")]
    Address(String),
    /// The prefix length is not a number from 0 to 32.
    #[error("invalid prefix length in CIDR {0:?} (0 to 32)")]
    Length(String),
}

/// An IPv4 network: an address with its host bits cleared, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    len: u8,
}

impl Ipv4Cidr {
    /// The network of `addr`/`len` (host bits of `addr` cleared); `None` when `len` > 32.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        (len <= 32).then(|| Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(addr) & Self::mask(len)),
            len,
        })
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    fn mask(len: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
    }

    /// Whether `ip` is in this network.
    pub fn contains_addr(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask(self.len) == u32::from(self.addr)
    }

    /// Whether `other` lies wholly inside this network (or equals it).
    pub fn contains(&self, other: &Ipv4Cidr) -> bool {
        other.len >= self.len && self.contains_addr(other.addr)
    }

    /// Parses the way `ip -j route` prints destinations: `default`, a bare address (a /32)
    /// or `address/length`.
    pub fn parse_route_dst(s: &str) -> Result<Self, CidrError> {
        match s {
            "default" => Ok(Ipv4Cidr {
                addr: Ipv4Addr::UNSPECIFIED,
                len: 0,
            }),
            s if !s.contains('/') => s
                .parse::<Ipv4Addr>()
                .map(|addr| Ipv4Cidr { addr, len: 32 })
                .map_err(|_| CidrError::Address(s.to_string())),
            s => s.parse(),
        }
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| CidrError::Syntax(s.to_string()))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| CidrError::Address(s.to_string()))?;
        let len: u8 = len.parse().map_err(|_| CidrError::Length(s.to_string()))?;
        Ipv4Cidr::new(addr, len).ok_or_else(|| CidrError::Length(s.to_string()))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// `cidrs` without the ones inside another one of the list, sorted: the smallest list that
/// covers the same addresses (CIDRs are either nested or disjoint, never partly
/// overlapping, so this is exact). nftables rejects overlapping elements of an interval
/// set.
pub fn minimal_cover(cidrs: impl IntoIterator<Item = Ipv4Cidr>) -> Vec<Ipv4Cidr> {
    let mut all: Vec<Ipv4Cidr> = cidrs.into_iter().collect();
    // Wider networks first, so each one is kept before the ones it holds are considered.
    all.sort_by_key(|c| (c.len, c.addr));
    let mut out: Vec<Ipv4Cidr> = Vec::new();
    for c in all {
        if !out.iter().any(|kept| kept.contains(&c)) {
            out.push(c);
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_normalizes() {
        assert_eq!(c("10.244.1.7/24").to_string(), "10.244.1.0/24");
        assert_eq!(c("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(c("1.2.3.4/32").to_string(), "1.2.3.4/32");
        assert!(matches!(
            "10.0.0.0".parse::<Ipv4Cidr>(),
            Err(CidrError::Syntax(_))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Ipv4Cidr>(),
            Err(CidrError::Length(_))
        ));
        assert!(matches!(
            "fd00::/64".parse::<Ipv4Cidr>(),
            Err(CidrError::Address(_))
        ));
        assert!(matches!(
            "10.0.0.0/x".parse::<Ipv4Cidr>(),
            Err(CidrError::Length(_))
        ));
    }

    #[test]
    fn parses_route_destinations() {
        assert_eq!(
            Ipv4Cidr::parse_route_dst("default").unwrap(),
            c("0.0.0.0/0")
        );
        assert_eq!(
            Ipv4Cidr::parse_route_dst("10.1.2.3").unwrap(),
            c("10.1.2.3/32")
        );
        assert_eq!(
            Ipv4Cidr::parse_route_dst("10.244.2.0/24").unwrap(),
            c("10.244.2.0/24")
        );
    }

    #[test]
    fn containment() {
        assert!(c("10.244.0.0/16").contains(&c("10.244.3.0/24")));
        assert!(c("10.244.0.0/16").contains(&c("10.244.0.0/16")));
        assert!(!c("10.244.3.0/24").contains(&c("10.244.0.0/16")));
        assert!(!c("10.244.0.0/16").contains(&c("10.88.0.0/24")));
        assert!(c("0.0.0.0/0").contains(&c("10.88.0.0/24")));
        assert!(c("10.244.0.0/16").contains_addr(Ipv4Addr::new(10, 244, 9, 9)));
    }

    #[test]
    fn minimal_cover_drops_nested_networks() {
        let got = minimal_cover([
            c("10.244.1.0/24"),
            c("10.88.0.0/24"),
            c("10.244.0.0/16"),
            c("10.88.0.0/24"),
        ]);
        assert_eq!(got, vec![c("10.88.0.0/24"), c("10.244.0.0/16")]);
    }
}
