//! `rkube-dns-bench`: load for a DNS server. N concurrent clients each send one UDP query at
//! a time for a name and report queries per second, latency percentiles and response codes.
//!
//! `--server` points it at a running server; without it, the bench serves a synthetic zone
//! of `--synthetic-services` Services in-process (no apiserver needed) and measures that.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rkube_client::cli::parse_duration;
use rkube_dns::forward::Forwarder;
use rkube_dns::metrics::Metrics;
use rkube_dns::records::Snapshot;
use rkube_dns::server::{self, Resolver, Sockets};
use rkube_dns::zone::ZoneReader;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::Instant;

/// Measures a DNS server's query rate and latency.
#[derive(Debug, Parser)]
#[command(name = "rkube-dns-bench", version)]
struct Args {
    /// The server to query; default: a synthetic zone served in-process.
    #[arg(long)]
    server: Option<SocketAddr>,
    /// The name to ask for.
    #[arg(long, default_value = "svc-0.default.svc.cluster.local")]
    name: String,
    /// The record type to ask for (A, AAAA, SRV, PTR, TXT, ...).
    #[arg(long = "type", default_value = "A")]
    qtype: String,
    /// Concurrent clients, each with one query outstanding.
    #[arg(long, short = 'c', default_value_t = 8)]
    concurrency: usize,
    /// How long to send queries.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// How long one query may wait for its answer before it counts as lost.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    timeout: Duration,
    /// Services in the synthetic zone (only without `--server`).
    #[arg(long, default_value_t = 1000)]
    synthetic_services: usize,
}

/// What one client saw.
#[derive(Debug, Default)]
struct Tally {
    latencies: Vec<Duration>,
    rcodes: BTreeMap<String, u64>,
    lost: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let qtype: RecordType = args
        .qtype
        .to_ascii_uppercase()
        .parse()
        .with_context(|| format!("unknown record type {:?}", args.qtype))?;
    let name = Name::from_ascii(format!("{}.", args.name.trim_end_matches('.')))
        .with_context(|| format!("invalid name {:?}", args.name))?;

    let (stop_tx, stop) = watch::channel(false);
    let (server, tasks) = match args.server {
        Some(server) => (server, Vec::new()),
        None => {
            let sockets = Sockets::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            let addr = sockets.local_addr()?;
            let resolver = Arc::new(Resolver::new(
                ZoneReader::fixed(synthetic_zone(args.synthetic_services)),
                Forwarder::new(Vec::new(), Duration::from_secs(1)),
                Arc::new(Metrics::new()),
            ));
            println!(
                "serving a synthetic zone of {} services on {addr}",
                args.synthetic_services
            );
            (addr, server::serve(sockets, resolver, stop))
        }
    };

    let deadline = Instant::now() + args.duration;
    let started = Instant::now();
    let clients: Vec<_> = (0..args.concurrency.max(1))
        .map(|i| {
            let query = Query::query(name.clone(), qtype);
            tokio::spawn(client(server, query, i, deadline, args.timeout))
        })
        .collect();
    let mut total = Tally::default();
    for c in clients {
        let tally = c.await??;
        total.latencies.extend(tally.latencies);
        total.lost += tally.lost;
        for (rcode, n) in tally.rcodes {
            *total.rcodes.entry(rcode).or_default() += n;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }

    total.latencies.sort();
    let answered = total.latencies.len();
    let pct = |p: f64| {
        let i = ((answered as f64 * p).ceil() as usize).clamp(1, answered.max(1)) - 1;
        total
            .latencies
            .get(i)
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    println!(
        "server={server} name={} type={qtype} clients={} duration={elapsed:.1}s",
        args.name, args.concurrency
    );
    println!(
        "answered={answered} lost={} qps={:.0} p50={:.0}us p99={:.0}us max={:.0}us",
        total.lost,
        answered as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        pct(1.0),
    );
    println!("rcodes={:?}", total.rcodes);
    if answered == 0 {
        anyhow::bail!("no query was answered");
    }
    Ok(())
}

/// One client: sends `query` and waits for its answer, again and again until `deadline`.
async fn client(
    server: SocketAddr,
    query: Query,
    index: usize,
    deadline: Instant,
    timeout: Duration,
) -> anyhow::Result<Tally> {
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    let mut tally = Tally::default();
    let mut buf = vec![0u8; 65_535];
    let mut id = u16::try_from(index % 64).unwrap_or(0) << 10;
    while Instant::now() < deadline {
        id = id.wrapping_add(1);
        let mut message = Message::query();
        message.metadata.id = id;
        message.metadata.recursion_desired = true;
        message.add_query(query.clone());
        let bytes = message.to_vec()?;
        let sent = Instant::now();
        socket.send(&bytes).await?;
        let answer = tokio::time::timeout(timeout, async {
            loop {
                let n = socket.recv(&mut buf).await?;
                if n >= 4 && buf[..2] == id.to_be_bytes() {
                    return Ok::<_, std::io::Error>(ResponseCode::from_low(buf[3] & 0x0f));
                }
            }
        })
        .await;
        match answer {
            Ok(Ok(rcode)) => {
                tally.latencies.push(sent.elapsed());
                *tally.rcodes.entry(rcode_name(rcode)).or_default() += 1;
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => tally.lost += 1,
        }
    }
    Ok(tally)
}

/// The mnemonic of `rcode` (`NOERROR`, `NXDOMAIN`, ...).
fn rcode_name(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::NoError => "NOERROR".to_string(),
        ResponseCode::FormErr => "FORMERR".to_string(),
        ResponseCode::ServFail => "SERVFAIL".to_string(),
        ResponseCode::NXDomain => "NXDOMAIN".to_string(),
        ResponseCode::NotImp => "NOTIMP".to_string(),
        ResponseCode::Refused => "REFUSED".to_string(),
        other => format!("RCODE{}", u16::from(other)),
    }
}

/// `count` ClusterIP Services `svc-<i>` in `default`.
fn synthetic_zone(count: usize) -> Snapshot {
    let services: Vec<Service> = (0..count)
        .map(|i| Service {
            metadata: ObjectMeta {
                namespace: Some("default".to_string()),
                name: Some(format!("svc-{i}")),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(format!("10.96.{}.{}", (i / 250) % 250, i % 250 + 1)),
                ..Default::default()
            }),
            status: None,
        })
        .collect();
    Snapshot::build(
        "cluster.local",
        rkube_dns::records::DEFAULT_TTL,
        1,
        &services,
        &[],
    )
}
