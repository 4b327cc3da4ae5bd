//! `rkube-bench scheduling`: upstream's scheduler_perf scenarios end to end. A real
//! `rkube-apiserver` and a real `rkube-scheduler` (release builds); the bench creates the
//! nodes, then creates the pods as fast as the apiserver takes them while a watch records
//! when each pod is seen bound. Latency is from the start of a pod's create call to its
//! binding observed by watch; throughput is pods bound per second over the whole run.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use rkube_rpc::v1::{self, ResourceRef};
use rkube_testing::{ApiserverProcess, DaemonProcess};
use serde_json::{Value, json};

use crate::{median_f64, ms, percentile};

/// Which pods the scenario creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// SchedulingBasic: pods requesting 100m CPU and 500Mi memory.
    Basic,
    /// SchedulingPodAntiAffinity: pods in groups whose members repel each other per host
    /// (groups of at most half the nodes, so every pod fits).
    AntiAffinity,
    /// Topology spreading: pods spread over 10 zones with maxSkew 1 (DoNotSchedule).
    Spread,
}

const ZONES: usize = 10;
const CREATORS: usize = 32;

fn node_object(i: usize) -> Value {
    let name = format!("node-{i}");
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": format!("zone-{}", i % ZONES),
        }},
    })
}

fn pod_object(i: usize, scenario: Scenario, groups: usize) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i}"), "labels": {"app": "bench"}},
        "spec": {"containers": [{
            "name": "pause", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}},
        }]},
    });
    match scenario {
        Scenario::Basic => {}
        Scenario::AntiAffinity => {
            let group = format!("g{}", i % groups);
            pod["metadata"]["labels"]["group"] = group.clone().into();
            pod["spec"]["affinity"] = json!({"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": {"matchLabels": {"group": group}},
                    "topologyKey": "kubernetes.io/hostname",
                }],
            }});
        }
        Scenario::Spread => {
            pod["spec"]["topologySpreadConstraints"] = json!([{
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": "bench"}},
            }]);
        }
    }
    pod
}

fn resource(resource: &str, ns: &str) -> Option<ResourceRef> {
    Some(ResourceRef::new("", "v1", resource, ns))
}

/// Creates `n` objects with `CREATORS` concurrent clients; `make(i)` builds object `i`,
/// `then(i)` optionally patches its status afterwards. Returns each object's create start.
pub(crate) async fn create_all(
    server: &ApiserverProcess,
    n: usize,
    kind: &'static str,
    make: impl Fn(usize) -> Value + Send + Sync + 'static,
    status: Option<Value>,
) -> Result<Vec<Instant>> {
    let make = Arc::new(make);
    let starts = Arc::new(Mutex::new(vec![None; n]));
    let mut tasks = Vec::new();
    for worker in 0..CREATORS {
        let mut c = server.grpc().await?;
        let make = make.clone();
        let starts = starts.clone();
        let status = status.clone();
        tasks.push(tokio::spawn(async move {
            let ns = if kind == "nodes" { "" } else { "default" };
            let mut i = worker;
            while i < n {
                let obj = make(i);
                let name = obj["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let t = Instant::now();
                c.create(v1::CreateRequest {
                    resource: resource(kind, ns),
                    object: serde_json::to_vec(&obj)?.into(),
                    ..Default::default()
                })
                .await
                .with_context(|| format!("create {name}"))?;
                if let Some(s) = &status {
                    c.patch(v1::PatchRequest {
                        resource: resource(kind, ns),
                        name: name.clone(),
                        patch: serde_json::to_vec(s)?.into(),
                        patch_type: v1::PatchType::Merge as i32,
                        subresource: "status".into(),
                        ..Default::default()
                    })
                    .await
                    .with_context(|| format!("status of {name}"))?;
                }
                starts.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(t);
                i += CREATORS;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let starts = starts.lock().unwrap_or_else(|e| e.into_inner());
    starts
        .iter()
        .map(|s| s.ok_or_else(|| anyhow::anyhow!("an object was not created")))
        .collect()
}

/// One run's figures.
struct Run {
    pods_per_second: f64,
    p50: Duration,
    p99: Duration,
    create_rate: f64,
    attempt_avg: Duration,
}

async fn run_once(
    apiserver: &Path,
    scheduler: &Path,
    nodes: usize,
    pods: usize,
    scenario: Scenario,
) -> Result<Run> {
    let dir = tempfile::tempdir()?;
    let server = ApiserverProcess::spawn(apiserver, dir.path(), &[]).await?;
    let node_status = json!({"status": {
        "allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"},
        "capacity": {"cpu": "4", "memory": "32Gi", "pods": "110"},
    }});
    let t = Instant::now();
    create_all(&server, nodes, "nodes", node_object, Some(node_status)).await?;
    eprintln!(
        "  {nodes} nodes created in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let sched =
        DaemonProcess::spawn(scheduler, &server.kubeconfig(), &["--leader-elect=false"]).await?;

    // Watch for bindings from before the first pod exists.
    let bound: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Instant>();
    let watcher = {
        let mut c = server.grpc().await?;
        let bound = bound.clone();
        tokio::spawn(async move {
            let mut stream = c
                .watch(v1::WatchRequest {
                    resource: resource("pods", "default"),
                    options: Some(v1::ListOptions {
                        resource_version: "0".into(),
                        ..Default::default()
                    }),
                })
                .await?
                .into_inner();
            let mut done_tx = Some(done_tx);
            while let Some(ev) = stream.next().await {
                let ev = ev?;
                let now = Instant::now();
                let Ok(pod) = serde_json::from_slice::<Value>(&ev.object) else {
                    continue;
                };
                if pod["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty())
                {
                    let name = pod["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let mut b = bound.lock().unwrap_or_else(|e| e.into_inner());
                    b.entry(name).or_insert(now);
                    if b.len() == pods
                        && let Some(tx) = done_tx.take()
                    {
                        let _ = tx.send(now);
                    }
                }
            }
            anyhow::Ok(())
        })
    };

    let groups = pods.div_ceil((nodes / 2).max(1));
    let t0 = Instant::now();
    let starts = create_all(
        &server,
        pods,
        "pods",
        move |i| pod_object(i, scenario, groups),
        None,
    )
    .await?;
    let created = t0.elapsed();
    let last = tokio::time::timeout(Duration::from_secs(1800), done_rx)
        .await
        .context("pods not all bound within 30 minutes")??;
    watcher.abort();
    let elapsed = last.duration_since(t0).as_secs_f64();
    let mut latencies: Vec<Duration> = {
        let bound = bound.lock().unwrap_or_else(|e| e.into_inner());
        (0..pods)
            .filter_map(|i| {
                let at = bound.get(&format!("pod-{i}"))?;
                Some(at.saturating_duration_since(starts[i]))
            })
            .collect()
    };
    latencies.sort_unstable();
    let metrics = sched.http_get("/metrics").await.unwrap_or_default();
    let sum = metric(
        &metrics,
        "scheduler_scheduling_attempt_duration_seconds_sum",
    );
    let count = metric(
        &metrics,
        "scheduler_scheduling_attempt_duration_seconds_count",
    );
    drop(sched);
    server.terminate().await?;
    Ok(Run {
        pods_per_second: pods as f64 / elapsed,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        create_rate: pods as f64 / created.as_secs_f64(),
        attempt_avg: Duration::from_secs_f64(sum / count.max(1.0)),
    })
}

/// Sums a metric's samples over all label sets.
fn metric(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs the scenario `runs` times and prints a table row per run and the medians.
pub async fn scheduling(
    apiserver: &Path,
    scheduler: &Path,
    nodes: usize,
    pods: usize,
    scenario: Scenario,
    runs: usize,
) -> Result<()> {
    anyhow::ensure!(
        scheduler.exists(),
        "no scheduler binary at {}; build it with cargo build --release -p rkube-scheduler",
        scheduler.display()
    );
    println!("scheduling {scenario:?}: {nodes} nodes, {pods} pods");
    println!("| run | pods/s | p50 | p99 | pods created/s | scheduling cycle, mean |");
    println!("|---|---|---|---|---|---|");
    let mut rates = Vec::new();
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    for run in 1..=runs {
        let r = run_once(apiserver, scheduler, nodes, pods, scenario).await?;
        println!(
            "| {run} | {:.0} | {} | {} | {:.0} | {:.1} µs |",
            r.pods_per_second,
            ms(r.p50),
            ms(r.p99),
            r.create_rate,
            r.attempt_avg.as_secs_f64() * 1e6
        );
        rates.push(r.pods_per_second);
        p50s.push(r.p50.as_secs_f64());
        p99s.push(r.p99.as_secs_f64());
    }
    println!(
        "| median | {:.0} | {} | {} | | |",
        median_f64(rates),
        ms(Duration::from_secs_f64(median_f64(p50s))),
        ms(Duration::from_secs_f64(median_f64(p99s)))
    );
    Ok(())
}
