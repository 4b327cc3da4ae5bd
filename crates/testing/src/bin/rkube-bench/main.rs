//! `rkube-bench`: benchmarks of the apiserver as a real process over gRPC.
//!
//! - `creates`: durable creates per second and p50/p99 latency at 1, 16 and 256 clients;
//! - `watch`: delay from a write's acknowledgement to its event at each of 1,000 watchers;
//! - `memory`: resident memory idle with an empty store, and with 10,000 pods stored;
//! - `scheduling`: the scheduler_perf scenarios through a real apiserver and scheduler;
//! - `controllers`: a Deployment of 1,000 replicas created and rolled out through the real
//!   daemons, and the controller manager's memory with 10,000 pods;
//! - `kubelet`: pod startup latency and the kubelet's memory on one real node (containerd);
//! - `hollow`: one `rkube-kubelet --hollow-nodes N` process: registration time and memory
//!   per node, and pods run on the hollow nodes;
//! - `up`: the launcher, `rkube up`, as root: time to a Ready node on a fresh data dir and
//!   on resume, and each daemon's memory idle and with 100 pods.
//!
//! Build with `cargo build --release -p rkube-apiserver -p rkube-testing` and run
//! `target/release/rkube-bench all` (see `docs/benchmarks.md`).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use rkube_rpc::ResourcesClient;
use rkube_rpc::v1::{self, ResourceRef};
use rkube_testing::ApiserverProcess;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

mod controllers;
mod hollow;
mod kubelet;
mod scheduling;
mod up;

#[derive(Parser)]
#[command(about = "Benchmarks of rkube-apiserver")]
struct Args {
    /// The apiserver binary; by default the one beside this binary.
    #[arg(long)]
    apiserver: Option<PathBuf>,
    /// Seconds each create run lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Runs per create configuration; the table shows medians across runs.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Clone, Copy)]
enum What {
    /// Durable creates at 1, 16 and 256 concurrent clients.
    Creates,
    /// Watch fan-out delay across 1,000 watchers.
    Watch,
    /// Resident memory, idle and with 10,000 pods.
    Memory,
    /// REST: `kubectl get pods -A` over 10,000 pods, and REST creates at 100 clients.
    Rest,
    /// Pods bound per second and scheduling latency (scheduler_perf scenarios), through a
    /// real rkube-apiserver and rkube-scheduler.
    Scheduling {
        /// Nodes in the cluster.
        #[arg(long, default_value_t = 5000)]
        nodes: usize,
        /// Pods to schedule.
        #[arg(long, default_value_t = 10000)]
        pods: usize,
        /// Which pods.
        #[arg(long, value_enum, default_value_t = scheduling::Scenario::Basic)]
        scenario: scheduling::Scenario,
    },
    /// A Deployment of `replicas` created and rolled out through a real apiserver,
    /// scheduler and controller manager on fake nodes; the controller manager's memory
    /// with `memory_pods` pods.
    Controllers {
        /// Fake nodes in the cluster.
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// Replicas of the Deployment.
        #[arg(long, default_value_t = 1000)]
        replicas: usize,
        /// Pods in the cluster when memory is measured.
        #[arg(long, default_value_t = 10000)]
        memory_pods: usize,
    },
    /// Pod startup latency (create to Running seen by watch) and the kubelet's memory on
    /// one real node: rkube's containerd (`scripts/containerd`, as root) and an
    /// `rkube-kubelet` process; pods bound by `spec.nodeName`.
    Kubelet {
        /// Pods created one at a time, each waited for; also the samples the batches reach.
        #[arg(long, default_value_t = 100)]
        pods: usize,
        /// Pods created at once in each batch.
        #[arg(long, default_value_t = 30)]
        batch: usize,
    },
    /// One `rkube-kubelet --hollow-nodes N` process: time until N Nodes are Ready, its
    /// memory per node, and `pods` pods (one per node, by `spec.nodeName`) until Running.
    Hollow {
        /// Hollow nodes.
        #[arg(long, default_value_t = 5000)]
        nodes: usize,
        /// Pods to run afterwards, one per node (0: none).
        #[arg(long, default_value_t = 1000)]
        pods: usize,
        /// Seconds to wait for all nodes to be Ready.
        #[arg(long, default_value_t = 600)]
        register_timeout: u64,
    },
    /// The launcher (the release `rkube` beside this binary, as root): `rkube up` to a
    /// Ready node on a fresh data dir and on resume, and the memory of each daemon and of
    /// containerd idle and with `pods` pods running.
    Up {
        /// Runs, each a first start and a resume (this subcommand's own; the top-level
        /// `--runs` does not apply).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Pods of the Deployment when memory is read with a workload (at most 110, the
        /// kubelet's --max-pods).
        #[arg(long, default_value_t = 100)]
        pods: usize,
    },
    /// All of the above but scheduling, controllers, kubelet, hollow and up.
    All,
}

fn cms(ns: &str) -> Option<ResourceRef> {
    Some(ResourceRef::new("", "v1", "configmaps", ns))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// `n` clients, each on a connection of its own.
async fn channels(server: &ApiserverProcess, n: usize) -> Result<Vec<ResourcesClient<Channel>>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(server.grpc().await?);
    }
    Ok(out)
}

async fn start(binary: &Path) -> Result<(ApiserverProcess, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let server = ApiserverProcess::spawn(binary, dir.path(), &[]).await?;
    Ok((server, dir))
}

/// One create run: (creates/s, p50, p99, writes per flush).
async fn create_run(
    binary: &Path,
    clients: usize,
    seconds: u64,
) -> Result<(f64, Duration, Duration, f64)> {
    let (server, _dir) = start(binary).await?;
    let conns = channels(&server, 32.min(clients)).await?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for id in 0..clients {
        let mut c = conns[id % conns.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("c{id}-{i}")}, "data": {"k": "v"}});
                let t = Instant::now();
                c.create(v1::CreateRequest {
                    resource: cms("default"),
                    object: serde_json::to_vec(&body).unwrap_or_default().into(),
                    ..Default::default()
                })
                .await
                .context("create")?;
                lat.push(t.elapsed());
                i += 1;
            }
            anyhow::Ok(lat)
        }));
    }
    let (all, elapsed) = gather(tasks).await?;
    let (_, metrics) = rkube_testing::https_get(server.addr, &server.ca_pem()?, "/metrics").await?;
    let flushes =
        rkube_testing::metric_value(&metrics, "rkube_apiserver_store_flushes").unwrap_or(0.0);
    let writes = rkube_testing::metric_value(&metrics, "rkube_apiserver_store_flushed_writes")
        .unwrap_or(0.0);
    server.terminate().await?;
    Ok((
        all.len() as f64 / elapsed,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        writes / flushes.max(1.0),
    ))
}

type LatencyTask = tokio::task::JoinHandle<Result<Vec<Duration>>>;

/// Waits for the load tasks: every latency, sorted, and the seconds the wait took (the
/// tasks run until a shared deadline, so this is the run's length).
async fn gather(tasks: Vec<LatencyTask>) -> Result<(Vec<Duration>, f64)> {
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    Ok((all, elapsed))
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// The median of each column of `rows`.
fn medians<const N: usize>(rows: &[[f64; N]]) -> [f64; N] {
    std::array::from_fn(|c| median_f64(rows.iter().map(|r| r[c]).collect()))
}

async fn creates(binary: &Path, seconds: u64, runs: usize) -> Result<()> {
    println!("## durable creates (sled, group commit): median of {runs} runs of {seconds} s\n");
    println!(
        "| clients | creates/s | p50 | p99 | writes per flush | creates/s vs 1 client |\n|---|---|---|---|---|---|"
    );
    let mut base = None;
    for clients in [1usize, 16, 256] {
        let mut results = Vec::new();
        for _ in 0..runs.max(1) {
            results.push(create_run(binary, clients, seconds).await?);
        }
        let rate = median_f64(results.iter().map(|r| r.0).collect());
        let p50 = median_f64(results.iter().map(|r| r.1.as_secs_f64()).collect());
        let p99 = median_f64(results.iter().map(|r| r.2.as_secs_f64()).collect());
        let per_flush = median_f64(results.iter().map(|r| r.3).collect());
        let base_rate = *base.get_or_insert(rate);
        println!(
            "| {clients} | {rate:.0} | {} | {} | {per_flush:.1} | {:.2}x |",
            ms(Duration::from_secs_f64(p50)),
            ms(Duration::from_secs_f64(p99)),
            rate / base_rate
        );
    }
    println!();
    Ok(())
}

async fn watch(binary: &Path) -> Result<()> {
    const WATCHERS: usize = 1000;
    const EVENTS: usize = 200;
    let (server, _dir) = start(binary).await?;
    let mut writer = server.grpc().await?;
    let seed = writer
        .create(v1::CreateRequest {
            resource: cms("default"),
            object: serde_json::to_vec(
                &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "seed"}}),
            )?
            .into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let seed: serde_json::Value = serde_json::from_slice(&seed.object)?;
    let rv = seed["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let conns = channels(&server, 10).await?;
    let mut watchers = Vec::new();
    for i in 0..WATCHERS {
        let mut c = conns[i % conns.len()].clone();
        let mut stream = c
            .watch(v1::WatchRequest {
                resource: cms("default"),
                options: Some(v1::ListOptions {
                    resource_version: rv.clone(),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner();
        watchers.push(tokio::spawn(async move {
            let mut seen = Vec::with_capacity(EVENTS);
            while seen.len() < EVENTS {
                match stream.next().await {
                    Some(Ok(ev)) if ev.r#type != "BOOKMARK" => {
                        seen.push((ev.resource_version, Instant::now()))
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            seen
        }));
    }
    let mut acked: HashMap<String, Instant> = HashMap::new();
    for i in 0..EVENTS {
        let resp = writer
            .create(v1::CreateRequest {
                resource: cms("default"),
                object: serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("w{i}")}}))?
                    .into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let at = Instant::now();
        let v: serde_json::Value = serde_json::from_slice(&resp.object)?;
        acked.insert(
            v["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            at,
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut delays = Vec::new();
    let mut complete = 0;
    for w in watchers {
        let seen = w.await?;
        if seen.len() == EVENTS {
            complete += 1;
        }
        for (rv, at) in seen {
            if let Some(ack) = acked.get(&rv) {
                delays.push(at.saturating_duration_since(*ack));
            }
        }
    }
    delays.sort_unstable();
    println!("## watch fan-out: {WATCHERS} watchers, {EVENTS} creates 10 ms apart\n");
    println!(
        "| watchers complete | deliveries | p50 delay | p99 delay | max |\n|---|---|---|---|---|"
    );
    println!(
        "| {complete}/{WATCHERS} | {} | {} | {} | {} |\n",
        delays.len(),
        ms(percentile(&delays, 0.5)),
        ms(percentile(&delays, 0.99)),
        ms(delays.last().copied().unwrap_or_default())
    );
    server.terminate().await?;
    Ok(())
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmRSS")
}

/// CPU time a process has used so far (user and system), from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(") ").context("/proc/pid/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()?
        + fields.get(12).context("stime")?.parse::<u64>()?;
    Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

/// The share of one core that each of `pids` uses over `window` (100 % is one core busy).
async fn cpu_share(pids: &[u32], window: Duration) -> Result<Vec<f64>> {
    let before = pids
        .iter()
        .map(|p| cpu_time(*p))
        .collect::<Result<Vec<_>>>()?;
    let t = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = t.elapsed().as_secs_f64();
    pids.iter()
        .zip(before)
        .map(|(p, b)| Ok((cpu_time(*p)? - b).as_secs_f64() / elapsed * 100.0))
        .collect()
}

async fn memory(binary: &Path) -> Result<()> {
    const PODS: usize = 10_000;
    let (server, _dir) = start(binary).await?;
    let pid = server.pid().context("pid")?;
    tokio::time::sleep(Duration::from_secs(2)).await; // let start-up allocations settle
    let idle = rss_kib(pid)?;
    let created = create_pods(&server, PODS).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = rss_kib(pid)?;
    println!("## resident memory of rkube-apiserver\n");
    println!("| state | RSS |\n|---|---|");
    println!("| idle, empty store | {:.1} MiB |", idle as f64 / 1024.0);
    println!(
        "| {} pods stored | {:.1} MiB |\n",
        created,
        loaded as f64 / 1024.0
    );
    server.terminate().await?;
    Ok(())
}

/// Creates about `n` pods (64 writers) spread over 100 nodes; returns how many.
async fn create_pods(server: &ApiserverProcess, n: usize) -> Result<usize> {
    let conns = channels(server, 8).await?;
    let per_task = n / 64;
    let mut tasks = Vec::new();
    for t in 0..64 {
        let mut c = conns[t % conns.len()].clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_task {
                let pod = json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("pod-{t}-{i}"), "labels": {"app": format!("app-{}", i % 50)}},
                    "spec": {"nodeName": format!("node-{}", i % 100), "containers": [{
                        "name": "app", "image": "docker.io/library/nginx:1.27",
                        "ports": [{"containerPort": 80}],
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}});
                c.create(v1::CreateRequest {
                    resource: Some(ResourceRef::new("", "v1", "pods", "default")),
                    object: serde_json::to_vec(&pod).unwrap_or_default().into(),
                    ..Default::default()
                })
                .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(per_task * 64)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

async fn rest(binary: &Path, seconds: u64) -> Result<()> {
    const PODS: usize = 10_000;
    const RUNS: usize = 5;
    let (server, _dir) = start(binary).await?;
    let created = create_pods(&server, PODS).await?;
    let ca = server.ca_pem()?;
    let kubeconfig = server.kubeconfig();

    let mut kubectl = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let out = tokio::process::Command::new("/usr/bin/kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", "pods", "-A"])
            .output()
            .await?;
        kubectl.push(t.elapsed());
        anyhow::ensure!(
            out.status.success(),
            "kubectl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows = out.stdout.iter().filter(|b| **b == b'\n').count();
        anyhow::ensure!(
            rows == created + 1,
            "kubectl printed {rows} lines for {created} pods"
        );
    }
    let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    let mut conn = rkube_testing::HttpsConn::connect(server.addr, &ca, None).await?;
    let mut full = Vec::new();
    let mut paged = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let (code, _) = conn
            .request("GET", "/api/v1/pods", &[("Accept", table)], &[])
            .await?;
        full.push(t.elapsed());
        anyhow::ensure!(code == 200, "list returned {code}");
        // kubectl's own pattern: pages of 500.
        let t = Instant::now();
        let mut token = String::new();
        loop {
            let path = format!("/api/v1/pods?limit=500&continue={token}");
            let (code, body) = conn
                .request("GET", &path, &[("Accept", table)], &[])
                .await?;
            anyhow::ensure!(code == 200, "paged list returned {code}");
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            token = v["metadata"]["continue"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if token.is_empty() {
                break;
            }
        }
        paged.push(t.elapsed());
    }
    println!("## REST: kubectl get pods -A with {created} pods ({RUNS} runs, medians)\n");
    println!("| what | median |\n|---|---|");
    println!(
        "| `kubectl get pods -A`, wall time | {} |",
        ms(median(kubectl))
    );
    println!(
        "| server: one Table list of all pods (one request) | {} |",
        ms(median(full))
    );
    println!(
        "| server: Table list with limit=500 (and continue), as kubectl asks | {} |\n",
        ms(median(paged))
    );
    server.terminate().await?;

    let (server, _dir) = start(binary).await?;
    let ca = server.ca_pem()?;
    let clients = 100;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for id in 0..clients {
        let mut conn = rkube_testing::HttpsConn::connect(server.addr, &ca, None).await?;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let body = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("r{id}-{i}")}, "data": {"k": "v"}}))?;
                let t = Instant::now();
                let (code, _) = conn
                    .request(
                        "POST",
                        "/api/v1/namespaces/default/configmaps",
                        &[("Content-Type", "application/json")],
                        &body,
                    )
                    .await?;
                lat.push(t.elapsed());
                anyhow::ensure!(code == 201, "create returned {code}");
                i += 1;
            }
            anyhow::Ok(lat)
        }));
    }
    let (all, elapsed) = gather(tasks).await?;
    println!("## REST creates (HTTPS/1.1 keep-alive), {clients} clients, {seconds} s\n");
    println!("| creates/s | p50 | p99 |\n|---|---|---|");
    println!(
        "| {:.0} | {} | {} |\n",
        all.len() as f64 / elapsed,
        ms(percentile(&all, 0.5)),
        ms(percentile(&all, 0.99))
    );
    server.terminate().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let binary = args
        .apiserver
        .clone()
        .unwrap_or_else(rkube_testing::apiserver_binary);
    anyhow::ensure!(
        binary.exists(),
        "no apiserver binary at {}; build it with cargo build --release -p rkube-apiserver",
        binary.display()
    );
    match args.what {
        What::Creates => creates(&binary, args.seconds, args.runs).await?,
        What::Watch => watch(&binary).await?,
        What::Memory => memory(&binary).await?,
        What::Rest => rest(&binary, args.seconds).await?,
        What::Scheduling {
            nodes,
            pods,
            scenario,
        } => {
            let scheduler = rkube_testing::sibling_binary("rkube-scheduler");
            scheduling::scheduling(&binary, &scheduler, nodes, pods, scenario, args.runs).await?
        }
        What::Controllers {
            nodes,
            replicas,
            memory_pods,
        } => {
            let scheduler = rkube_testing::sibling_binary("rkube-scheduler");
            let controller_manager = rkube_testing::sibling_binary("rkube-controller-manager");
            let binaries = controllers::Binaries {
                apiserver: &binary,
                scheduler: &scheduler,
                controller_manager: &controller_manager,
            };
            controllers::controllers(&binaries, nodes, replicas, memory_pods, args.runs).await?
        }
        What::Kubelet { pods, batch } => {
            let kubelet = rkube_testing::sibling_binary("rkube-kubelet");
            kubelet::kubelet(&binary, &kubelet, pods, batch, args.runs).await?
        }
        What::Hollow {
            nodes,
            pods,
            register_timeout,
        } => {
            let kubelet = rkube_testing::sibling_binary("rkube-kubelet");
            hollow::hollow(
                &binary,
                &kubelet,
                nodes,
                pods,
                Duration::from_secs(register_timeout),
                args.runs,
            )
            .await?
        }
        What::Up { runs, pods } => {
            up::up(&rkube_testing::sibling_binary("rkube"), runs, pods).await?
        }
        What::All => {
            memory(&binary).await?;
            creates(&binary, args.seconds, args.runs).await?;
            watch(&binary).await?;
            rest(&binary, args.seconds).await?;
        }
    }
    Ok(())
}
