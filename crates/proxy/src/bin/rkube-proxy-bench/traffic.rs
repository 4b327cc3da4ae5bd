//! `rkube-proxy-bench traffic`: HTTP requests per second and latency from one pod to
//! another, through a ClusterIP and directly to the pod IP, in one run.
//!
//! It builds a node with two pods in scratch network namespaces
//! ([`rkube_proxy::testbed`]), loads into the node the rules that the real generator makes
//! for one Service (a ClusterIP whose only endpoint is the server pod), and re-executes
//! itself inside the pods: `serve`, a hyper HTTP/1.1 server answering a fixed body, and
//! `load`, which keeps C connections busy for T seconds, either reusing each connection
//! (keep-alive) or opening a new one per request. Runs alternate between the pod IP and
//! the ClusterIP, in ABBA order over the rounds so that drift (the machine's other load)
//! hits both alike, and the medians are printed as a markdown table.
//!
//! Both targets cross the same path (client pod → node's forwarding and conntrack → server
//! pod); the ClusterIP adds the Service lookup and the DNAT.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::pin::pin;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use hyper::body::Body as _;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use rkube_proxy::model::{Endpoint, Protocol, ServiceKey, ServicePort, ServicePortName};
use rkube_proxy::netns::ScratchNetns;
use rkube_proxy::nft::Nft;
use rkube_proxy::ruleset::{Config, Existing, PortRules, Ruleset};
use rkube_proxy::testbed::Node;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::time::Instant;

/// The pod network's gateway, on the node.
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
/// The client pod.
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
/// The server pod, the Service's only endpoint.
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 3);
/// The server's container port.
const POD_PORT: u16 = 8080;
/// The Service.
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The Service port.
const SERVICE_PORT: u16 = 80;

/// `rkube-proxy-bench traffic`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds per run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Concurrent connections, each with one request in flight at a time.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Rounds; each one runs both connection modes against both targets.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Bytes in each response body.
    #[arg(long, default_value_t = 64)]
    body_bytes: usize,
    /// Seconds of load, not reported, against each target before the first round.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Which connection modes to run (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "keep-alive,new-connection"
    )]
    reuse: Vec<Reuse>,
}

/// `rkube-proxy-bench serve` (hidden): the server pod's HTTP server. It says `listening`
/// on standard output once it accepts connections, and exits when standard input closes.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Where to listen.
    #[arg(long)]
    listen: SocketAddr,
    /// Bytes in each response body.
    #[arg(long, default_value_t = 64)]
    body_bytes: usize,
}

/// `rkube-proxy-bench load` (hidden): the client pod's load generator. It prints one line,
/// `requests=N errors=N elapsed_ns=N p50_ns=N p99_ns=N cpu_ns=N` (its own CPU time).
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// The server (or Service) address.
    #[arg(long)]
    target: SocketAddr,
    /// Concurrent connections.
    #[arg(long)]
    connections: usize,
    /// Seconds to run.
    #[arg(long)]
    seconds: f64,
    /// Whether connections are reused.
    #[arg(long, value_enum)]
    reuse: Reuse,
}

/// How the load generator uses connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Reuse {
    /// HTTP keep-alive: one connection per client, many requests on it.
    KeepAlive,
    /// A new TCP connection for every request.
    NewConnection,
}

impl Reuse {
    fn arg(self) -> &'static str {
        match self {
            Reuse::KeepAlive => "keep-alive",
            Reuse::NewConnection => "new-connection",
        }
    }
}

/// Where the load goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// The server pod's IP.
    Pod,
    /// The Service's ClusterIP.
    ClusterIp,
}

impl Target {
    fn addr(self) -> SocketAddr {
        match self {
            Target::Pod => (SERVER_IP, POD_PORT).into(),
            Target::ClusterIp => (CLUSTER_IP, SERVICE_PORT).into(),
        }
    }

    /// The client's ephemeral ports for this target. Disjoint halves, because the node's
    /// conntrack keeps closed connections for 120 s (TIME-WAIT): a ClusterIP connection
    /// from a port that an earlier direct connection used has the same reply tuple
    /// (pod:8080 → client:port), and NAT must evict the old entry first (the `found`
    /// counter). A real client does not alternate like this; the benchmark should not
    /// charge it to the ClusterIP.
    fn ports(self) -> &'static str {
        match self {
            Target::Pod => "1024 33279",
            Target::ClusterIp => "33280 65535",
        }
    }

    fn label(self) -> String {
        match self {
            Target::Pod => format!("pod IP `{}`", self.addr()),
            Target::ClusterIp => format!("ClusterIP `{}`", self.addr()),
        }
    }
}

/// One load run, as `load` reports it.
#[derive(Debug, Clone, Copy)]
struct Run {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    /// CPU time of the client and server processes, kernel time included (with tick-based
    /// accounting, the softirq work of sending through the veths and the node's netfilter
    /// is charged to the sender).
    cpu: Duration,
}

impl Run {
    fn cpu_per_request(&self) -> Duration {
        self.cpu / u32::try_from(self.requests.max(1)).unwrap_or(u32::MAX)
    }

    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn parse(line: &str) -> anyhow::Result<Run> {
        let mut fields = BTreeMap::new();
        for kv in line.split_whitespace() {
            let (k, v) = kv.split_once('=').context("a key=value field")?;
            let v: u64 = v.parse().with_context(|| format!("field {k}"))?;
            fields.insert(k, v);
        }
        let get = |k: &str| {
            fields
                .get(k)
                .copied()
                .with_context(|| format!("no {k} in {line:?}"))
        };
        Ok(Run {
            requests: get("requests")?,
            errors: get("errors")?,
            elapsed: Duration::from_nanos(get("elapsed_ns")?),
            p50: Duration::from_nanos(get("p50_ns")?),
            p99: Duration::from_nanos(get("p99_ns")?),
            cpu: Duration::from_nanos(get("cpu_ns")?),
        })
    }
}

/// Runs the benchmark; Ctrl-C stops it and still removes the namespaces.
pub async fn run(args: Args) -> anyhow::Result<()> {
    tokio::select! {
        r = bench(&args) => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}

async fn bench(args: &Args) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding this program")?;
    let prefix = format!("rkube-proxy-bench-{}", std::process::id());
    // Dropped in reverse order: the processes are killed before their namespaces go.
    let mut node = Node::create(&prefix, GATEWAY)
        .context("creating the node's network namespace (root needed)")?;
    let server = node
        .add_pod("server", SERVER_IP)
        .context("creating the server pod")?;
    let client = node
        .add_pod("client", CLIENT_IP)
        .context("creating the client pod")?;
    // A new connection per request opens tens of thousands of connections per run: let
    // the client reuse its ports in TIME-WAIT (see also `Target::ports`).
    client.netns().sysctl("net.ipv4.tcp_tw_reuse", "1")?;

    let config = Config {
        cluster_cidr: "10.244.0.0/16".parse().context("cluster CIDR")?,
        service_cidr: "10.96.0.0/12".parse().context("service CIDR")?,
    };
    let port = service_port();
    let ruleset = Ruleset::from_ports([(port.name.clone(), PortRules::generate(&port, &config))]);
    let script = ruleset.full_sync(&config, &Existing::default()).script;
    Nft::in_netns(node.netns().name())
        .apply(&script)
        .await
        .context("loading the Service's rules into the node")?;

    let mut server_process = Command::new("ip")
        .args(["netns", "exec", server.netns().name()])
        .arg(&exe)
        .args(["serve", "--listen", &format!("0.0.0.0:{POD_PORT}")])
        .args(["--body-bytes", &args.body_bytes.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the server in the server pod")?;
    // `ip netns exec` execs the program: this is the server's pid.
    let server_pid = server_process.id().context("the server's pid")?;
    let stdout = server_process
        .stdout
        .take()
        .context("the server's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .context("the server did not start within 10 s")?
        .context("reading the server's output")?;
    if !first.as_deref().is_some_and(|l| l.starts_with("listening")) {
        bail!("the server did not start: it said {first:?}");
    }

    let targets = [Target::Pod, Target::ClusterIp];
    let modes = args.reuse.clone();
    if args.warmup > 0.0 {
        for &reuse in &modes {
            for target in targets {
                let run = load_in(client.netns(), &exe, target, reuse, 1, args.warmup).await?;
                if run.requests == 0 || run.errors > 0 {
                    bail!(
                        "warm-up {} against the {} failed: {} requests, {} errors",
                        reuse.arg(),
                        target.label(),
                        run.requests,
                        run.errors
                    );
                }
            }
        }
    }

    let mut runs: BTreeMap<(Reuse, Target), Vec<Run>> = BTreeMap::new();
    for round in 0..args.rounds.max(1) {
        for &reuse in &modes {
            let mut order = targets;
            if round % 2 == 1 {
                order.reverse();
            }
            for target in order {
                let entries = node
                    .netns()
                    .exec("cat", &["/proc/sys/net/netfilter/nf_conntrack_count"])
                    .unwrap_or_default();
                let before = conntrack_stats(node.netns());
                let server_cpu = process_cpu(server_pid);
                let mut run = load_in(
                    client.netns(),
                    &exe,
                    target,
                    reuse,
                    args.connections,
                    args.seconds,
                )
                .await?;
                run.cpu += process_cpu(server_pid).saturating_sub(server_cpu);
                let after = conntrack_stats(node.netns());
                let ct: Vec<String> = after
                    .iter()
                    .filter(|(k, _)| CONNTRACK_TROUBLE.contains(&k.as_str()))
                    .map(|(k, v)| (k, v.saturating_sub(before.get(k).copied().unwrap_or(0))))
                    .filter(|(_, v)| *v > 0)
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect();
                eprintln!(
                    "round {} {:<14} {:<28} {:>9.0} req/s  p50 {:>8}  p99 {:>8}  CPU/request {:>8}  errors {}{}",
                    round + 1,
                    reuse.arg(),
                    target.label(),
                    run.rate(),
                    micros(run.p50),
                    micros(run.p99),
                    micros1(run.cpu_per_request()),
                    run.errors,
                    if ct.is_empty() {
                        format!("  conntrack entries before {}", entries.trim())
                    } else {
                        format!(
                            "  conntrack entries before {}, {}",
                            entries.trim(),
                            ct.join(", ")
                        )
                    }
                );
                runs.entry((reuse, target)).or_default().push(run);
            }
        }
    }
    drop(server_process);

    print_table(args, &runs).await;
    Ok(())
}

/// The Service: `bench/web`, port 80 → the server pod's 8080.
fn service_port() -> ServicePort {
    ServicePort {
        name: ServicePortName {
            service: ServiceKey::new("bench", "web"),
            port: "http".into(),
            protocol: Protocol::Tcp,
        },
        cluster_ip: CLUSTER_IP,
        port: SERVICE_PORT,
        node_port: None,
        external_ips: Vec::new(),
        affinity_timeout: None,
        internal_local: false,
        external_local: false,
        endpoints: vec![Endpoint {
            ip: SERVER_IP,
            port: POD_PORT,
            ready: true,
            serving: true,
            terminating: false,
            local: true,
            unplaced: false,
        }],
    }
}

/// The node's conntrack counters worth a look: packets dropped or not tracked, and
/// (`found`) new connections whose tuple was taken by an older entry.
const CONNTRACK_TROUBLE: [&str; 6] = [
    "invalid",
    "insert_failed",
    "drop",
    "early_drop",
    "clashres",
    "found",
];

/// The node's conntrack statistics (`/proc/net/stat/nf_conntrack`, per namespace), summed
/// over CPUs; empty when they cannot be read.
fn conntrack_stats(node: &ScratchNetns) -> BTreeMap<String, u64> {
    let mut sums = BTreeMap::new();
    let Ok(text) = node.exec("cat", &["/proc/net/stat/nf_conntrack"]) else {
        return sums;
    };
    let mut lines = text.lines();
    let names: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    for line in lines {
        for (name, hex) in names.iter().zip(line.split_whitespace()) {
            let v = u64::from_str_radix(hex, 16).unwrap_or(0);
            // `entries` is a gauge, repeated on every row.
            if *name != "entries" {
                *sums.entry((*name).to_string()).or_insert(0) += v;
            }
        }
    }
    sums
}

/// The CPU time (user and system) that process `pid` has used, all threads; zero when it
/// cannot be read.
fn process_cpu(pid: u32) -> Duration {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command name: state is field 3, utime 14, stime 15.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks: u64 =
                fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            // USER_HZ is 100 on every Linux architecture rkube runs on.
            Some(Duration::from_millis(ticks * 10))
        })
        .unwrap_or_default()
}

/// Runs `load` inside the client pod.
async fn load_in(
    client: &ScratchNetns,
    exe: &Path,
    target: Target,
    reuse: Reuse,
    connections: usize,
    seconds: f64,
) -> anyhow::Result<Run> {
    client.sysctl("net.ipv4.ip_local_port_range", target.ports())?;
    let child = Command::new("ip")
        .args(["netns", "exec", client.name()])
        .arg(exe)
        .args(["load", "--target", &target.addr().to_string()])
        .args(["--connections", &connections.to_string()])
        .args(["--seconds", &seconds.to_string()])
        .args(["--reuse", reuse.arg()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the load generator in the client pod")?;
    let limit = Duration::from_secs_f64(seconds) + Duration::from_secs(30);
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .with_context(|| format!("the load generator ran longer than {limit:?}"))?
        .context("running the load generator")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "the load generator failed ({}): {}",
            out.status,
            stderr.trim()
        );
    }
    if !stderr.trim().is_empty() {
        eprintln!("load generator: {}", stderr.trim());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Run::parse(stdout.lines().last().unwrap_or_default())
        .with_context(|| format!("reading the load generator's report {stdout:?}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn micros1(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// `12345.6` → `12,346`.
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

async fn version(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output().await {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Err(e) => format!("({program}: {e})"),
    }
}

async fn print_table(args: &Args, runs: &BTreeMap<(Reuse, Target), Vec<Run>>) {
    let kernel = version("uname", &["-r"]).await;
    let nft = version("nft", &["-v"]).await;
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "Kernel {kernel}, {nft}, {cpus} CPUs. {} connections, {} s per run, {} rounds \
         (medians), {}-byte bodies.",
        args.connections,
        args.seconds,
        args.rounds.max(1),
        args.body_bytes
    );
    println!();
    println!(
        "| connections | target | requests/s | p50 | p99 | CPU/request | errors | ClusterIP / pod IP: requests/s (per round), CPU/request |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &reuse in &args.reuse {
        let rate = |target| {
            median(
                runs.get(&(reuse, target))
                    .map(|v| v.iter().map(Run::rate).collect())
                    .unwrap_or_default(),
            )
        };
        let direct = rate(Target::Pod);
        for target in [Target::Pod, Target::ClusterIp] {
            let Some(list) = runs.get(&(reuse, target)) else {
                continue;
            };
            let p = |f: fn(&Run) -> Duration| {
                Duration::from_secs_f64(median(list.iter().map(|r| f(r).as_secs_f64()).collect()))
            };
            let cpu = p(Run::cpu_per_request);
            let ratio = if target == Target::ClusterIp {
                // Also the spread of the per-round ratios (each against its own round's
                // direct run).
                let per_round: Vec<f64> = list
                    .iter()
                    .zip(runs.get(&(reuse, Target::Pod)).into_iter().flatten())
                    .map(|(c, d)| c.rate() / d.rate().max(1e-9) * 100.0)
                    .collect();
                let lo = per_round.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = per_round.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let direct_cpu = runs
                    .get(&(reuse, Target::Pod))
                    .map(|v| {
                        median(
                            v.iter()
                                .map(|r| r.cpu_per_request().as_secs_f64())
                                .collect(),
                        )
                    })
                    .unwrap_or_default();
                format!(
                    "**{:.1}%** ({lo:.1}–{hi:.1}%), {:.1}%",
                    rate(target) / direct.max(1e-9) * 100.0,
                    cpu.as_secs_f64() / direct_cpu.max(1e-12) * 100.0
                )
            } else {
                String::new()
            };
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {ratio} |",
                reuse.arg(),
                target.label(),
                thousands(rate(target)),
                micros(p(|r| r.p50)),
                micros(p(|r| r.p99)),
                micros1(cpu),
                list.iter().map(|r| r.errors).sum::<u64>()
            );
        }
    }
}

/// The server: answers every request with the same body, until standard input closes.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let body = "x".repeat(args.body_bytes);
    println!("listening on {}", listener.local_addr()?);
    // The parent holds our stdin: when it goes away, so do we.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_request| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(hyper::Response::new(body)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// What one connection task saw.
#[derive(Debug, Default)]
struct Tally {
    /// Latency of each completed request, in nanoseconds.
    latencies: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn ok(&mut self, latency: Duration) {
        self.latencies
            .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    async fn error(&mut self, e: anyhow::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{e:#}"));
        }
        // Do not spin when the target refuses everything.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The load generator: `connections` tasks, each with one request in flight, until
/// `seconds` have passed.
pub async fn load(args: LoadArgs) -> anyhow::Result<()> {
    let cpu_start = process_cpu(std::process::id());
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.seconds);
    let tasks: Vec<_> = (0..args.connections.max(1))
        .map(|_| {
            tokio::spawn(async move {
                let mut tally = Tally::default();
                match args.reuse {
                    Reuse::KeepAlive => keep_alive(args.target, end, &mut tally).await,
                    Reuse::NewConnection => new_connections(args.target, end, &mut tally).await,
                }
                tally
            })
        })
        .collect();
    let mut all = Tally::default();
    for task in tasks {
        let tally = task.await.context("a connection task")?;
        all.latencies.extend(tally.latencies);
        all.errors += tally.errors;
        all.first_error = all.first_error.or(tally.first_error);
    }
    let elapsed = start.elapsed();
    let cpu = process_cpu(std::process::id()).saturating_sub(cpu_start);
    all.latencies.sort_unstable();
    let quantile = |q: f64| {
        let n = all.latencies.len();
        if n == 0 {
            return 0;
        }
        let i = ((n as f64 * q) as usize).min(n - 1);
        all.latencies[i]
    };
    if let Some(e) = &all.first_error {
        eprintln!("{} errors, the first: {e}", all.errors);
    }
    println!(
        "requests={} errors={} elapsed_ns={} p50_ns={} p99_ns={} cpu_ns={}",
        all.latencies.len(),
        all.errors,
        elapsed.as_nanos(),
        quantile(0.50),
        quantile(0.99),
        cpu.as_nanos()
    );
    Ok(())
}

type Client = (SendRequest<String>, Connection<TokioIo<TcpStream>, String>);

async fn connect(target: SocketAddr) -> anyhow::Result<Client> {
    let stream = TcpStream::connect(target)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    stream.set_nodelay(true)?;
    Ok(hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?)
}

/// Sends `GET /` and reads the whole response.
async fn request(sender: &mut SendRequest<String>, target: SocketAddr) -> anyhow::Result<()> {
    sender.ready().await?;
    let request = hyper::Request::get("/")
        .header(hyper::header::HOST, target.to_string())
        .body(String::new())?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        bail!("status {}", response.status());
    }
    let mut body = pin!(response.into_body());
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        frame?;
    }
    Ok(())
}

/// Many requests per connection; a new connection only after an error.
async fn keep_alive(target: SocketAddr, end: Instant, tally: &mut Tally) {
    while Instant::now() < end {
        let (mut sender, connection) = match connect(target).await {
            Ok(c) => c,
            Err(e) => {
                tally.error(e).await;
                continue;
            }
        };
        let connection = tokio::spawn(connection);
        while Instant::now() < end {
            let t = Instant::now();
            match request(&mut sender, target).await {
                Ok(()) => tally.ok(t.elapsed()),
                Err(e) => {
                    tally.error(e).await;
                    break;
                }
            }
        }
        drop(sender);
        let _ = connection.await;
    }
}

/// One request per connection: connect, send, read the response, close. The latency
/// includes the TCP handshake.
async fn new_connections(target: SocketAddr, end: Instant, tally: &mut Tally) {
    while Instant::now() < end {
        let t = Instant::now();
        let result = async {
            let (mut sender, connection) = connect(target).await?;
            let exchange = async move {
                let r = request(&mut sender, target).await;
                // The response is in: this is the request's latency. Dropping the
                // sender lets the connection close.
                (r, t.elapsed())
            };
            let ((r, latency), _) = tokio::join!(exchange, connection);
            r.map(|()| latency)
        }
        .await;
        match result {
            Ok(latency) => tally.ok(latency),
            Err(e) => tally.error(e).await,
        }
    }
}
