//! Forwarding of names outside the cluster zone: the client's query is relayed byte for byte
//! to an upstream resolver and its answer relayed back, over UDP for UDP clients (a truncated
//! answer goes back truncated, and the client retries over TCP) and over TCP for TCP
//! clients.
//!
//! Upstreams are tried in turn, starting at a rotating position so the load spreads; each
//! attempt has its own timeout, and the first answer wins. The default upstreams are the
//! `nameserver` lines of `/etc/resolv.conf`, less any that would point back at this server.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tracing::debug;

/// Why a query could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No upstream resolver is configured.
    #[error("no upstream resolvers configured")]
    NoUpstreams,
    /// The query is too short to carry a DNS header.
    #[error("query of {0} bytes is too short to forward")]
    ShortQuery(usize),
    /// Talking to an upstream failed.
    #[error("upstream {upstream}: {source}")]
    Io {
        /// The upstream.
        upstream: SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// An upstream did not answer in time.
    #[error("upstream {upstream} did not answer within {timeout:?}")]
    Timeout {
        /// The upstream.
        upstream: SocketAddr,
        /// How long it was given.
        timeout: Duration,
    },
    /// An upstream answered with something that is not a DNS answer to the query.
    #[error("upstream {upstream} sent a malformed answer")]
    Malformed {
        /// The upstream.
        upstream: SocketAddr,
    },
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An IPv4 or IPv6 network (`10.244.0.0/16`, `fd00::/8`; a bare address is one host):
/// the clients names may be forwarded for (`--forward-allow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Whether `ip` is in the network. An IPv4 address in IPv6 form (`::ffff:10.0.0.1`,
    /// as a dual-stack socket reports IPv4 peers) counts as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(ip) & mask == u32::from(net) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(net) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses a `--forward-allow` entry.
pub fn parse_network(s: &str) -> std::result::Result<Network, String> {
    let bad = || format!("{s:?} is not an IP network (e.g. 10.244.0.0/16, or one address)");
    let (addr, prefix) = match s.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (s, None),
    };
    let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p.trim().parse::<u8>().map_err(|_| bad())?,
        None => max,
    };
    if prefix > max {
        return Err(bad());
    }
    Ok(Network { addr, prefix })
}

/// How the client asked, and so how the upstream is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Over UDP.
    Udp,
    /// Over TCP (length-prefixed messages).
    Tcp,
}

/// The default time an upstream has to answer one attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Relays queries to upstream resolvers.
#[derive(Debug)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    next: AtomicUsize,
}

impl Forwarder {
    /// A forwarder to `upstreams`, giving each attempt `timeout`.
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Forwarder {
        Forwarder {
            upstreams,
            timeout,
            next: AtomicUsize::new(0),
        }
    }

    /// The upstream resolvers.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Relays `query` (a whole DNS message) and returns the upstream's answer, trying each
    /// upstream once until one answers.
    pub async fn forward(&self, query: &[u8], transport: Transport) -> Result<Vec<u8>> {
        if query.len() < 12 {
            return Err(Error::ShortQuery(query.len()));
        }
        if self.upstreams.is_empty() {
            return Err(Error::NoUpstreams);
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = Error::NoUpstreams;
        for i in 0..self.upstreams.len() {
            let upstream = self.upstreams[(start + i) % self.upstreams.len()];
            let attempt = async {
                match transport {
                    Transport::Udp => exchange_udp(upstream, query).await,
                    Transport::Tcp => exchange_tcp(upstream, query).await,
                }
            };
            let result = match tokio::time::timeout(self.timeout, attempt).await {
                Ok(result) => result,
                Err(_) => Err(Error::Timeout {
                    upstream,
                    timeout: self.timeout,
                }),
            };
            match result {
                Ok(answer) => return Ok(answer),
                Err(e) => {
                    debug!(%upstream, error = %e, "upstream attempt failed");
                    last = e;
                }
            }
        }
        Err(last)
    }
}

/// The largest UDP answer relayed.
const MAX_UDP_ANSWER: usize = 4096;

/// One UDP exchange; answers whose ID differs (late answers to someone else) are skipped.
async fn exchange_udp(upstream: SocketAddr, query: &[u8]) -> Result<Vec<u8>> {
    let io = |source| Error::Io { upstream, source };
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    socket.connect(upstream).await.map_err(io)?;
    socket.send(query).await.map_err(io)?;
    // A UDP answer is at most the EDNS size the client offered, which resolvers cap at
    // 4096 (RFC 6891 suggests it); a bigger datagram is cut and, past 512 bytes anyway,
    // the client retries over TCP. Not 64 KiB per query in flight.
    let mut buf = vec![0u8; MAX_UDP_ANSWER];
    loop {
        let n = socket.recv(&mut buf).await.map_err(io)?;
        if n >= 12 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// One TCP exchange: a length-prefixed query, a length-prefixed answer.
async fn exchange_tcp(upstream: SocketAddr, query: &[u8]) -> Result<Vec<u8>> {
    let io = |source| Error::Io { upstream, source };
    let len = u16::try_from(query.len()).map_err(|_| Error::Malformed { upstream })?;
    let mut stream = TcpStream::connect(upstream).await.map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await.map_err(io)?;
    let len = stream.read_u16().await.map_err(io)?;
    let mut answer = vec![0u8; usize::from(len)];
    stream.read_exact(&mut answer).await.map_err(io)?;
    if answer.len() < 12 || answer[..2] != query[..2] {
        return Err(Error::Malformed { upstream });
    }
    Ok(answer)
}

/// Parses an `--upstream` value: `1.1.1.1`, `1.1.1.1:5353`, `::1` or `[::1]:5353` (port 53
/// when none is given).
pub fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("invalid upstream {s:?} (e.g. 10.0.0.2, 10.0.0.2:53, [fd00::2]:53)"))
}

/// The resolvers named by `nameserver` lines of a resolv.conf, on port 53. Zone indices
/// (`fe80::1%eth0`) are dropped with the address: a socket address cannot name them by
/// interface name.
pub fn resolv_conf_nameservers(contents: &str) -> Vec<SocketAddr> {
    contents
        .lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter_map(|addr| addr.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// `upstreams` less those that are this server listening on `listen`: the same address, or,
/// when listening on every address, a loopback one on the same port. Forwarding to ourselves
/// would loop each query until it timed out.
pub fn without_self(upstreams: Vec<SocketAddr>, listen: SocketAddr) -> Vec<SocketAddr> {
    upstreams
        .into_iter()
        .filter(|u| {
            let same_port = u.port() == listen.port();
            let ours =
                u.ip() == listen.ip() || (listen.ip().is_unspecified() && u.ip().is_loopback());
            !(same_port && ours)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_and_contain() {
        let pods = parse_network("10.244.0.0/16").unwrap();
        assert!(pods.contains("10.244.255.1".parse().unwrap()));
        assert!(!pods.contains("10.245.0.1".parse().unwrap()));
        assert!(pods.contains("::ffff:10.244.0.9".parse().unwrap()));
        assert!(!pods.contains("fd00::1".parse().unwrap()));
        let host = parse_network("192.0.2.1").unwrap();
        assert_eq!(host.to_string(), "192.0.2.1/32");
        assert!(host.contains("192.0.2.1".parse().unwrap()));
        assert!(!host.contains("192.0.2.2".parse().unwrap()));
        let v6 = parse_network("fd00::/8").unwrap();
        assert!(v6.contains("fdff::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        assert!(
            parse_network("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        for bad in ["10.244.0.0/33", "fd00::/129", "pods", "10.244.0.0/x", ""] {
            assert!(parse_network(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn upstream_flags_parse_with_and_without_ports() {
        assert_eq!(
            parse_upstream("10.0.0.2"),
            Ok("10.0.0.2:53".parse().unwrap())
        );
        assert_eq!(
            parse_upstream("10.0.0.2:5353"),
            Ok("10.0.0.2:5353".parse().unwrap())
        );
        assert_eq!(
            parse_upstream("fd00::2"),
            Ok("[fd00::2]:53".parse().unwrap())
        );
        assert_eq!(
            parse_upstream("[fd00::2]:5353"),
            Ok("[fd00::2]:5353".parse().unwrap())
        );
        assert!(
            parse_upstream("dns.example")
                .unwrap_err()
                .contains("invalid")
        );
    }

    #[test]
    fn resolv_conf_nameservers_are_read_and_comments_ignored() {
        let conf = "# generated\nsearch example.com\nnameserver 10.0.0.2\nnameserver fd00::2 # v6\n\
                    ;nameserver 9.9.9.9\nnameserver fe80::1%eth0\noptions ndots:5\nnameserver\n";
        assert_eq!(
            resolv_conf_nameservers(conf),
            vec![
                "10.0.0.2:53".parse().unwrap(),
                "[fd00::2]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn upstreams_pointing_at_ourselves_are_dropped() {
        let ups = vec![
            "127.0.0.1:53".parse().unwrap(),
            "127.0.0.53:53".parse().unwrap(),
            "10.0.0.2:53".parse().unwrap(),
            "127.0.0.1:5353".parse().unwrap(),
        ];
        assert_eq!(
            without_self(ups.clone(), "0.0.0.0:53".parse().unwrap()),
            vec![
                "10.0.0.2:53".parse().unwrap(),
                "127.0.0.1:5353".parse().unwrap()
            ]
        );
        assert_eq!(
            without_self(ups, "10.0.0.2:53".parse().unwrap()),
            vec![
                "127.0.0.1:53".parse().unwrap(),
                "127.0.0.53:53".parse().unwrap(),
                "127.0.0.1:5353".parse().unwrap()
            ]
        );
    }

    /// A UDP "resolver" that echoes each query back with the QR bit set, after first sending
    /// an answer with the wrong ID.
    async fn echo_upstream() -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                let mut answer = buf[..n].to_vec();
                answer[2] |= 0x80;
                let mut wrong = answer.clone();
                wrong[0] ^= 0xff;
                let _ = socket.send_to(&wrong, peer).await;
                let _ = socket.send_to(&answer, peer).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn udp_answers_are_matched_by_id_and_dead_upstreams_skipped() {
        // A bound socket that never answers: the first attempt times out.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo_upstream().await;
        let forwarder = Forwarder::new(
            vec![silent.local_addr().unwrap(), upstream],
            Duration::from_millis(200),
        );
        let query = [0x12, 0x34, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
        for _ in 0..2 {
            let answer = forwarder.forward(&query, Transport::Udp).await.unwrap();
            assert_eq!(answer[..2], query[..2]);
            assert_eq!(answer[2] & 0x80, 0x80);
        }
    }

    #[tokio::test]
    async fn forwarding_without_upstreams_or_with_garbage_fails_cleanly() {
        let forwarder = Forwarder::new(Vec::new(), DEFAULT_TIMEOUT);
        assert!(matches!(
            forwarder.forward(&[0; 12], Transport::Udp).await,
            Err(Error::NoUpstreams)
        ));
        assert!(matches!(
            forwarder.forward(&[0; 3], Transport::Tcp).await,
            Err(Error::ShortQuery(3))
        ));
    }
}
