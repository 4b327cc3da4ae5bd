//! `rkube-bench hollow`: one `rkube-kubelet --hollow-nodes N` process (release build)
//! against a real `rkube-apiserver`. Hollow nodes run the real kubelet code — registration,
//! Leases, pod workers, status — over a simulated runtime.
//!
//! - Registration: from the kubelet's spawn to all N Nodes Ready, as a Node watch in the
//!   bench sees them (then checked with one list); a list of N Nodes polled in a loop would
//!   load the apiserver more than the kubelet does.
//! - Memory: the kubelet's VmRSS once every node has renewed its Lease at least once
//!   ([`SETTLE`] after the last node is Ready); per node as (RSS at N − RSS of the same
//!   process with one hollow node) / (N − 1), the baseline measured the same way first,
//!   against an apiserver of its own. The apiserver's RSS at N nodes beside it.
//! - Pods: `--pods` pods (one per node, bound by `spec.nodeName`, no scheduler) created by
//!   32 concurrent clients; time from the first create to the last pod seen Running, and
//!   each pod's create-to-Running latency (containers run `--hollow-start-delay`, 100 ms by
//!   default, after StartContainer).

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use rkube_client::watcher::{self, Event};
use rkube_client::{Api, Client, ListParams, WatchStreamExt};
use rkube_testing::{ApiserverProcess, DaemonProcess};
use serde_json::json;
use tokio::sync::watch;

use crate::kubelet::{Running, mib, node_ready, spread};
use crate::{cpu_share, medians, ms, rss_kib};

const HOLLOW_LABEL: &str = "rkube.io/hollow=true";
const POD_LABEL: &str = "rkube-bench=hollow";
/// One Lease renewal period (10 s) and some, so every node's Lease exists.
const SETTLE: Duration = Duration::from_secs(12);
/// The window steady-state CPU is measured over: one Lease period.
const STEADY: Duration = Duration::from_secs(10);

/// Nodes registered and Ready, as the bench's Node watch sees them.
#[derive(Debug, Clone, Copy, Default)]
struct Registered {
    nodes: usize,
    ready: usize,
}

/// Watches the hollow Nodes; returns once the first list is done, with the watch task
/// (to abort).
async fn watch_nodes(
    client: Client,
) -> Result<(watch::Receiver<Registered>, tokio::task::JoinHandle<()>)> {
    let (tx, rx) = watch::channel(Registered::default());
    let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
    let api: Api<Node> = Api::all(client);
    let task = tokio::spawn(async move {
        let stream = watcher::watcher(api, watcher::Config::default().labels(HOLLOW_LABEL))
            .default_backoff();
        futures::pin_mut!(stream);
        let mut synced_tx = Some(synced_tx);
        let mut nodes = HashSet::new();
        let mut ready = HashSet::new();
        while let Some(ev) = stream.next().await {
            let node = match ev {
                Ok(Event::Apply(n) | Event::InitApply(n)) => n,
                Ok(Event::InitDone) => {
                    if let Some(s) = synced_tx.take() {
                        let _ = s.send(());
                    }
                    continue;
                }
                Ok(_) => continue,
                Err(e) => {
                    eprintln!("  node watch: {e}");
                    continue;
                }
            };
            let name = node.metadata.name.clone().unwrap_or_default();
            if node_ready(&node) {
                ready.insert(name.clone());
            } else {
                ready.remove(&name);
            }
            nodes.insert(name);
            let now = Registered {
                nodes: nodes.len(),
                ready: ready.len(),
            };
            if tx.send(now).is_err() {
                return;
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), synced_rx)
        .await
        .context("the node watch did not list within 30 s")??;
    Ok((rx, task))
}

/// One run's figures.
struct Run {
    register: Duration,
    kubelet_kib: u64,
    apiserver_kib: u64,
    leases: usize,
    /// Kubelet and apiserver CPU (share of one core) in the steady state: Leases renewed
    /// every 10 s, nothing else happening.
    steady_cpu: [f64; 2],
    pods: Option<PodsRun>,
}

struct PodsRun {
    pods: usize,
    all_running: Duration,
    latencies: Vec<Duration>,
    kubelet_kib: u64,
}

fn pod_object(i: usize, nodes: usize) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("hpod-{i}"), "labels": {"rkube-bench": "hollow"}},
        "spec": {
            "nodeName": format!("hollow-{}", i % nodes),
            "containers": [{"name": "pause", "image": "rkube.local/pause:1.0"}],
        },
    })
}

async fn run_once(
    apiserver: &Path,
    kubelet: &Path,
    nodes: usize,
    pods: usize,
    register_timeout: Duration,
) -> Result<Run> {
    let dir = tempfile::tempdir()?;
    let server = ApiserverProcess::spawn(apiserver, dir.path(), &[]).await?;
    let client = server.client().await?;
    let (mut seen, node_watch) = watch_nodes(client.clone()).await?;
    let n = nodes.to_string();
    let t0 = Instant::now();
    let mut hollow =
        DaemonProcess::spawn(kubelet, &server.kubeconfig(), &["--hollow-nodes", &n]).await?;
    let pid = hollow.pid().context("kubelet pid")?;
    let deadline = t0 + register_timeout;
    let mut last_report = t0;
    loop {
        let now = *seen.borrow_and_update();
        if now.ready >= nodes {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "  {:.0} s: {} nodes registered, {} Ready; kubelet RSS {}, apiserver RSS {}",
                t0.elapsed().as_secs_f64(),
                now.nodes,
                now.ready,
                rss_kib(pid).map(mib).unwrap_or_else(|e| e.to_string()),
                server
                    .pid()
                    .and_then(|p| rss_kib(p).ok())
                    .map(mib)
                    .unwrap_or_default()
            );
        }
        if !hollow.is_running() {
            bail!(
                "the hollow kubelet exited after {:.1} s with {} of {nodes} nodes registered, {} Ready",
                t0.elapsed().as_secs_f64(),
                now.nodes,
                now.ready
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "{} of {nodes} nodes registered and {} Ready after {register_timeout:?}; kubelet RSS {}",
                now.nodes,
                now.ready,
                rss_kib(pid).map(mib).unwrap_or_default()
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), seen.changed()).await;
    }
    let register = t0.elapsed();
    node_watch.abort();
    let api: Api<Node> = Api::all(client.clone());
    let listed = api
        .list(&ListParams::default().labels(HOLLOW_LABEL))
        .await?;
    let listed_ready = listed.items.iter().filter(|n| node_ready(n)).count();
    ensure!(
        listed_ready == nodes,
        "the watch saw {nodes} Ready nodes but a list has {listed_ready} of {}",
        listed.items.len()
    );
    eprintln!(
        "  {nodes} hollow nodes Ready in {:.1} s ({:.0} nodes/s)",
        register.as_secs_f64(),
        nodes as f64 / register.as_secs_f64()
    );
    tokio::time::sleep(SETTLE).await;
    ensure!(
        hollow.is_running(),
        "the hollow kubelet exited after registering"
    );
    let kubelet_kib = rss_kib(pid)?;
    let apiserver_pid = server.pid().context("apiserver pid")?;
    let apiserver_kib = rss_kib(apiserver_pid)?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let leases = leases.list(&ListParams::default()).await?.items.len();
    let cpu = cpu_share(&[pid, apiserver_pid], STEADY).await?;
    let steady_cpu = [cpu[0], cpu[1]];

    let pods = if pods == 0 {
        None
    } else {
        let mut running = Running::watch(client.clone(), POD_LABEL).await?;
        let t = Instant::now();
        let starts = crate::scheduling::create_all(
            &server,
            pods,
            "pods",
            move |i| pod_object(i, nodes),
            None,
        )
        .await?;
        let names: Vec<String> = (0..pods).map(|i| format!("hpod-{i}")).collect();
        running.wait_for(&names, Duration::from_secs(600)).await?;
        let mut latencies = Vec::with_capacity(pods);
        let mut last = t;
        for (name, start) in names.iter().zip(&starts) {
            let latency = running.latency(name, *start)?;
            latencies.push(latency);
            last = last.max(*start + latency);
        }
        latencies.sort_unstable();
        drop(running);
        tokio::time::sleep(Duration::from_secs(5)).await;
        Some(PodsRun {
            pods,
            all_running: last.duration_since(t),
            latencies,
            kubelet_kib: rss_kib(pid)?,
        })
    };
    drop(hollow);
    server.terminate().await?;
    Ok(Run {
        register,
        kubelet_kib,
        apiserver_kib,
        leases,
        steady_cpu,
        pods,
    })
}

/// Measures the one-node baseline, then runs `nodes` hollow nodes `runs` times; prints a
/// table of registration and memory and one of the pods, each with a row per run and the
/// medians.
pub async fn hollow(
    apiserver: &Path,
    kubelet: &Path,
    nodes: usize,
    pods: usize,
    register_timeout: Duration,
    runs: usize,
) -> Result<()> {
    ensure!(
        kubelet.exists(),
        "no kubelet binary at {}; build it with cargo build --release -p rkube-kubelet",
        kubelet.display()
    );
    ensure!(nodes >= 2, "--nodes must be at least 2");
    let pods = pods.min(nodes);
    eprintln!("baseline: 1 hollow node");
    let base = run_once(apiserver, kubelet, 1, 0, register_timeout).await?;
    let mut results = Vec::new();
    for run in 1..=runs.max(1) {
        eprintln!("run {run}: {nodes} hollow nodes");
        let r = run_once(apiserver, kubelet, nodes, pods, register_timeout).await?;
        if let Some(p) = &r.pods {
            ensure!(p.pods == pods, "ran {} pods of {pods}", p.pods);
        }
        results.push(r);
    }
    println!(
        "hollow: one rkube-kubelet --hollow-nodes {nodes}; the same process with \
         --hollow-nodes 1: RSS {}, CPU {:.1} %\n",
        mib(base.kubelet_kib),
        base.steady_cpu[0]
    );
    println!(
        "registration (spawn -> all Ready, seen by watch); RSS {} s after; CPU over the next \
         {} s (a Lease period), as a share of one core\n",
        SETTLE.as_secs(),
        STEADY.as_secs()
    );
    println!(
        "| run | all {nodes} Ready | nodes/s | kubelet RSS | per node, (RSS - RSS at 1) / {} | Leases | kubelet CPU | apiserver RSS | apiserver CPU |",
        nodes - 1
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let rows: Vec<[f64; 6]> = results
        .iter()
        .map(|r| {
            [
                r.register.as_secs_f64(),
                r.kubelet_kib as f64,
                (r.kubelet_kib as f64 - base.kubelet_kib as f64) / (nodes - 1) as f64,
                r.steady_cpu[0],
                r.apiserver_kib as f64,
                r.steady_cpu[1],
            ]
        })
        .collect();
    let m = medians(&rows);
    for (i, (label, row)) in (1..=rows.len())
        .map(|r| r.to_string())
        .zip(rows.iter())
        .chain(std::iter::once(("median".to_string(), &m)))
        .enumerate()
    {
        let leases = results
            .get(i)
            .map(|r| r.leases.to_string())
            .unwrap_or_default();
        println!(
            "| {label} | {:.2} s | {:.0} | {} | {:.1} KiB | {leases} | {:.1} % | {} | {:.1} % |",
            row[0],
            nodes as f64 / row[0],
            mib(row[1] as u64),
            row[2],
            row[3],
            mib(row[4] as u64),
            row[5]
        );
    }
    if pods == 0 {
        return Ok(());
    }
    println!(
        "\n{pods} pods, one per node by spec.nodeName, created by 32 clients: first create -> \
         last Running seen by watch; per pod create sent -> Running seen; kubelet RSS 5 s after\n"
    );
    println!("| run | all Running | p50 | p99 | max | kubelet RSS |");
    println!("|---|---|---|---|---|---|");
    let rows: Vec<[f64; 5]> = results
        .iter()
        .filter_map(|r| r.pods.as_ref())
        .map(|p| {
            let [a, b, c] = spread(&p.latencies);
            [
                p.all_running.as_secs_f64(),
                a.as_secs_f64(),
                b.as_secs_f64(),
                c.as_secs_f64(),
                p.kubelet_kib as f64,
            ]
        })
        .collect();
    let m = medians(&rows);
    let d = |s: f64| ms(Duration::from_secs_f64(s));
    for (label, row) in (1..=rows.len())
        .map(|r| r.to_string())
        .zip(rows.iter())
        .chain(std::iter::once(("median".to_string(), &m)))
    {
        println!(
            "| {label} | {:.2} s | {} | {} | {} | {} |",
            row[0],
            d(row[1]),
            d(row[2]),
            d(row[3]),
            mib(row[4] as u64)
        );
    }
    Ok(())
}
