//! The DNS wire protocol on UDP and TCP: queries are decoded with `hickory-proto`, answered
//! from the zone [`Snapshot`] or relayed to the upstream resolvers, and encoded back.
//!
//! - UDP: one receive loop; each query is answered on a task of its own, at most
//!   [`MAX_IN_FLIGHT`] at once. Past that the server answers SERVFAIL at once rather than
//!   queueing without bound. Answers larger than the client can take (512 bytes, or its
//!   EDNS payload size) are sent truncated, and the client retries over TCP.
//! - TCP: length-prefixed messages, several per connection, at most
//!   [`MAX_TCP_CONNECTIONS`] connections; idle connections are closed after
//!   [`TCP_IDLE_TIMEOUT`].
//!
//! Answers from the zone are authoritative (AA set); NXDOMAIN and NODATA carry the zone's
//! SOA in the authority section so resolvers cache them for the TTL.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData as WireData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::forward::{Forwarder, Network, Transport};
use crate::metrics::{Metrics, Source};
use crate::records::{Answer, RData, Rr};
use crate::zone::ZoneReader;

/// Queries answered concurrently over UDP before the server sheds load.
pub const MAX_IN_FLIGHT: usize = 4096;

/// TCP connections served at once; more are closed on accept.
pub const MAX_TCP_CONNECTIONS: usize = 512;

/// How long a TCP connection may sit without a query.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest UDP answer this server sends, whatever the client's EDNS says (the DNS flag
/// day 2020 value, which avoids IP fragmentation).
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket could not be bound.
    #[error("binding {addr} ({proto}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// `udp` or `tcp`.
        proto: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Answers DNS messages: from the zone, or through the forwarder.
#[derive(Debug)]
pub struct Resolver {
    zone: ZoneReader,
    forwarder: Forwarder,
    metrics: Arc<Metrics>,
    forward_allow: Vec<Network>,
}

impl Resolver {
    /// A resolver answering from `zone` and forwarding the rest through `forwarder`.
    pub fn new(zone: ZoneReader, forwarder: Forwarder, metrics: Arc<Metrics>) -> Resolver {
        Resolver {
            zone,
            forwarder,
            metrics,
            forward_allow: Vec::new(),
        }
    }

    /// Forwards names outside the zone only for clients in `networks` (none: for every
    /// client); the others get REFUSED, as a resolver's `allow-recursion` does. Names in
    /// the zone are answered for everyone.
    pub fn forward_only_for(mut self, networks: Vec<Network>) -> Resolver {
        self.forward_allow = networks;
        self
    }

    /// The answer to `packet` received over `transport` from `client`, or `None` when it
    /// deserves none (too short to carry an ID, or itself a response).
    pub async fn answer(
        &self,
        packet: &[u8],
        transport: Transport,
        client: IpAddr,
    ) -> Option<Vec<u8>> {
        let started = Instant::now();
        let request = match Message::from_vec(packet) {
            Ok(request) => request,
            Err(e) => {
                debug!(error = %e, "undecodable query");
                let id = u16::from_be_bytes([*packet.first()?, *packet.get(1)?]);
                let reply = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
                self.observe("other", ResponseCode::FormErr, Source::Cluster, started);
                return reply.to_vec().ok();
            }
        };
        if request.metadata.message_type != MessageType::Query {
            return None;
        }
        let query = match (request.metadata.op_code, request.queries.as_slice()) {
            (OpCode::Query, [query]) => query.clone(),
            (OpCode::Query, _) => {
                return Some(self.error(&request, ResponseCode::FormErr, started));
            }
            _ => return Some(self.error(&request, ResponseCode::NotImp, started)),
        };
        let qtype = query.query_type();
        let snapshot = self.zone.current();
        let answer = snapshot.lookup(&query.name().to_ascii(), qtype);
        if answer == Answer::Forward {
            if !self.forward_allow.is_empty()
                && !self.forward_allow.iter().any(|n| n.contains(client))
            {
                debug!(%client, name = %query.name(), "not forwarding for this client");
                return Some(self.error(&request, ResponseCode::Refused, started));
            }
            return Some(self.forward(&request, packet, transport, started).await);
        }
        // Before the caches have listed, the zone is empty: an authoritative NXDOMAIN would
        // be cached by clients and end their search list. SERVFAIL makes them retry, as
        // CoreDNS answers until its caches have synced.
        if !self.zone.is_synced() {
            return Some(self.error(&request, ResponseCode::ServFail, started));
        }
        let mut reply = reply_to(&request);
        reply.metadata.authoritative = true;
        // An ExternalName pointing outside the zone: resolve the target upstream, as CoreDNS
        // does, because stub resolvers (glibc, musl) do not chase a bare CNAME themselves.
        let external = match &answer {
            Answer::Records { answers, .. }
                if !matches!(qtype, RecordType::CNAME | RecordType::ANY) =>
            {
                match answers.last().map(|rr| &rr.data) {
                    Some(RData::Cname(target)) if !snapshot.in_zone(target) => Some(target.clone()),
                    _ => None,
                }
            }
            _ => None,
        };
        let chased = match external {
            Some(target) => self.chase(&target, qtype).await,
            None => Vec::new(),
        };
        let result = match answer {
            Answer::Records {
                answers,
                additionals,
            } => to_wire(&query, &answers).and_then(|answers| {
                reply.answers = answers;
                reply.answers.extend(chased);
                reply.additionals = to_wire(&query, &additionals)?;
                Ok(ResponseCode::NoError)
            }),
            Answer::NoData | Answer::NxDomain => to_wire(&query, &[snapshot.soa()]).map(|soa| {
                reply.authorities = soa;
                if answer == Answer::NxDomain {
                    ResponseCode::NXDomain
                } else {
                    ResponseCode::NoError
                }
            }),
            Answer::Forward => Ok(ResponseCode::ServFail),
        };
        let rcode = match result {
            Ok(rcode) => rcode,
            Err(e) => {
                // A record this server cannot encode (an ExternalName that is no DNS name,
                // say) fails this query, not the server.
                warn!(name = %query.name(), error = %e, "cannot encode answer");
                return Some(self.error(&request, ResponseCode::ServFail, started));
            }
        };
        reply.metadata.response_code = rcode;
        self.observe(qtype_label(qtype), rcode, Source::Cluster, started);
        encode(reply, transport, udp_limit(&request))
    }

    /// The upstream's answer records for `target` (outside the zone); none when it fails,
    /// which leaves the client the CNAME alone.
    async fn chase(&self, target: &str, qtype: RecordType) -> Vec<Record> {
        let Ok(name) = Name::from_ascii(format!("{target}.")) else {
            return Vec::new();
        };
        let mut message = Message::query();
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(name, qtype));
        let Ok(packet) = message.to_vec() else {
            return Vec::new();
        };
        let mut answer = self.forwarder.forward(&packet, Transport::Udp).await;
        if let Ok(bytes) = &answer
            && bytes.get(2).is_some_and(|flags| flags & 0x02 != 0)
        {
            answer = self.forwarder.forward(&packet, Transport::Tcp).await;
        }
        match answer.map(|bytes| Message::from_vec(&bytes)) {
            Ok(Ok(reply)) => reply.answers,
            Ok(Err(e)) => {
                debug!(target, error = %e, "undecodable upstream answer for an external name");
                Vec::new()
            }
            Err(e) => {
                debug!(target, error = %e, "cannot resolve an external name upstream");
                Vec::new()
            }
        }
    }

    async fn forward(
        &self,
        request: &Message,
        packet: &[u8],
        transport: Transport,
        started: Instant,
    ) -> Vec<u8> {
        let qtype = request
            .queries
            .first()
            .map_or("other", |q| qtype_label(q.query_type()));
        match self.forwarder.forward(packet, transport).await {
            Ok(answer) => {
                let rcode = ResponseCode::from_low(answer.get(3).map_or(2, |b| b & 0x0f));
                self.observe(qtype, rcode, Source::Forward, started);
                answer
            }
            Err(e) => {
                let name = request.queries.first().map(|q| q.name().to_ascii());
                warn!(name = name.as_deref().unwrap_or_default(), error = %e, "forwarding failed");
                let mut reply = reply_to(request);
                reply.metadata.response_code = ResponseCode::ServFail;
                self.observe(qtype, ResponseCode::ServFail, Source::Forward, started);
                reply.to_vec().unwrap_or_default()
            }
        }
    }

    fn error(&self, request: &Message, rcode: ResponseCode, started: Instant) -> Vec<u8> {
        let mut reply = reply_to(request);
        reply.metadata.response_code = rcode;
        let qtype = request
            .queries
            .first()
            .map_or("other", |q| qtype_label(q.query_type()));
        self.observe(qtype, rcode, Source::Cluster, started);
        reply.to_vec().unwrap_or_default()
    }

    fn observe(&self, qtype: &str, rcode: ResponseCode, source: Source, started: Instant) {
        self.metrics.observe_query(
            qtype,
            rcode_label(rcode),
            source,
            started.elapsed().as_secs_f64(),
        );
    }
}

/// An empty reply to `request`: its ID, question, RD bit and EDNS presence.
fn reply_to(request: &Message) -> Message {
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.checking_disabled = request.metadata.checking_disabled;
    reply.add_queries(request.queries.iter().cloned());
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD);
        reply.set_edns(edns);
    }
    reply
}

/// The largest UDP answer `request`'s sender takes.
fn udp_limit(request: &Message) -> usize {
    let limit = request
        .edns
        .as_ref()
        .map_or(512, |e| e.max_payload().clamp(512, MAX_UDP_PAYLOAD));
    usize::from(limit)
}

/// Encodes `reply`; over UDP, one too large for `limit` goes out empty with TC set.
fn encode(reply: Message, transport: Transport, limit: usize) -> Option<Vec<u8>> {
    let bytes = match reply.to_vec() {
        Ok(bytes) => bytes,
        Err(e) => {
            warn!(error = %e, "cannot encode reply");
            let mut failed = Message::error_msg(
                reply.metadata.id,
                reply.metadata.op_code,
                ResponseCode::ServFail,
            );
            failed.add_queries(reply.queries.iter().cloned());
            return failed.to_vec().ok();
        }
    };
    if transport == Transport::Udp && bytes.len() > limit {
        return reply.truncate().to_vec().ok();
    }
    Some(bytes)
}

/// The records in wire form; owner names equal to the question keep its spelling (clients
/// that randomise case check it).
fn to_wire(query: &Query, records: &[Rr]) -> Result<Vec<Record>, hickory_proto::ProtoError> {
    let asked = query
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    records
        .iter()
        .map(|rr| {
            let name = if rr.name == asked {
                query.name().clone()
            } else {
                fqdn(&rr.name)?
            };
            let data = match &rr.data {
                RData::A(ip) => WireData::A(A(*ip)),
                RData::Aaaa(ip) => WireData::AAAA(AAAA(*ip)),
                RData::Cname(target) => WireData::CNAME(CNAME(fqdn(target)?)),
                RData::Ptr(target) => WireData::PTR(PTR(fqdn(target)?)),
                RData::Txt(text) => WireData::TXT(TXT::new(vec![text.clone()])),
                RData::Srv {
                    priority,
                    weight,
                    port,
                    target,
                } => WireData::SRV(SRV::new(*priority, *weight, *port, fqdn(target)?)),
                RData::Soa {
                    mname,
                    rname,
                    serial,
                    minimum,
                } => WireData::SOA(SOA::new(
                    fqdn(mname)?,
                    fqdn(rname)?,
                    *serial,
                    7200,
                    1800,
                    86400,
                    *minimum,
                )),
            };
            Ok(Record::from_rdata(name, rr.ttl, data))
        })
        .collect()
}

fn fqdn(name: &str) -> Result<Name, hickory_proto::ProtoError> {
    Name::from_ascii(format!("{name}."))
}

/// A bounded label for a query type.
fn qtype_label(qtype: RecordType) -> &'static str {
    match qtype {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::SRV => "SRV",
        RecordType::PTR => "PTR",
        RecordType::CNAME => "CNAME",
        RecordType::TXT => "TXT",
        RecordType::SOA => "SOA",
        RecordType::NS => "NS",
        RecordType::MX => "MX",
        RecordType::ANY => "ANY",
        RecordType::HTTPS => "HTTPS",
        _ => "other",
    }
}

fn rcode_label(rcode: ResponseCode) -> &'static str {
    match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        _ => "other",
    }
}

/// The bound UDP socket and TCP listener, on one address.
#[derive(Debug)]
pub struct Sockets {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl Sockets {
    /// Binds UDP and TCP on `addr`; with port 0, both on the same free port.
    pub async fn bind(addr: SocketAddr) -> Result<Sockets> {
        let mut attempts = 0;
        loop {
            let udp = UdpSocket::bind(addr).await.map_err(|source| Error::Bind {
                addr,
                proto: "udp",
                source,
            })?;
            let bound = udp.local_addr().map_err(|source| Error::Bind {
                addr,
                proto: "udp",
                source,
            })?;
            match TcpListener::bind(bound).await {
                Ok(tcp) => return Ok(Sockets { udp, tcp }),
                // The free UDP port may be taken on TCP: pick another.
                Err(_) if addr.port() == 0 && attempts < 16 => attempts += 1,
                Err(source) => {
                    return Err(Error::Bind {
                        addr: bound,
                        proto: "tcp",
                        source,
                    });
                }
            }
        }
    }

    /// The address both listen on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }
}

/// Serves `sockets` with `resolver` until `stop`; the returned tasks end once in-flight
/// queries are answered.
pub fn serve(
    sockets: Sockets,
    resolver: Arc<Resolver>,
    stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let Sockets { udp, tcp } = sockets;
    vec![
        tokio::spawn(serve_udp(Arc::new(udp), resolver.clone(), stop.clone())),
        tokio::spawn(serve_tcp(tcp, resolver, stop)),
    ]
}

async fn serve_udp(
    socket: Arc<UdpSocket>,
    resolver: Arc<Resolver>,
    mut stop: watch::Receiver<bool>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, peer) = tokio::select! {
            () = crate::stopped(&mut stop) => break,
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(e) => {
                    // ICMP errors of earlier sends surface here on some systems; keep going.
                    debug!(error = %e, "udp receive failed");
                    continue;
                }
            },
        };
        let packet = buf[..n].to_vec();
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            warn!(%peer, limit = MAX_IN_FLIGHT, "too many queries in flight, shedding");
            if let Ok(request) = Message::from_vec(&packet) {
                let mut reply = reply_to(&request);
                reply.metadata.response_code = ResponseCode::ServFail;
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
            continue;
        };
        let socket = socket.clone();
        let resolver = resolver.clone();
        tokio::spawn(async move {
            if let Some(reply) = resolver.answer(&packet, Transport::Udp, peer.ip()).await
                && let Err(e) = socket.send_to(&reply, peer).await
            {
                debug!(%peer, error = %e, "udp send failed");
            }
            drop(permit);
        });
    }
    // Drain: every permit back means every in-flight query was answered.
    let _ = in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
}

async fn serve_tcp(
    listener: TcpListener,
    resolver: Arc<Resolver>,
    mut stop: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            () = crate::stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "tcp accept failed");
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            warn!(%peer, limit = MAX_TCP_CONNECTIONS, "too many tcp connections, closing");
            continue;
        };
        let resolver = resolver.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, peer.ip(), &resolver, stop).await {
                debug!(%peer, error = %e, "tcp connection ended");
            }
            drop(permit);
        });
    }
    let _ = connections.acquire_many(MAX_TCP_CONNECTIONS as u32).await;
}

/// Answers the queries of one TCP connection until it closes, idles, or the server stops.
async fn serve_connection(
    mut stream: TcpStream,
    client: IpAddr,
    resolver: &Resolver,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    loop {
        let len = tokio::select! {
            () = crate::stopped(&mut stop) => return Ok(()),
            len = tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_u16()) => match len {
                Ok(Ok(len)) => len,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(()),
            },
        };
        let mut packet = vec![0u8; usize::from(len)];
        tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut packet))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "query body timed out")
            })??;
        let Some(reply) = resolver.answer(&packet, Transport::Tcp, client).await else {
            continue;
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            continue;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        stream.write_all(&framed).await?;
    }
}

#[cfg(test)]
mod tests;
