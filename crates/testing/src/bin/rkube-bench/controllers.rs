//! `rkube-bench controllers`: the controller manager end to end. A real `rkube-apiserver`,
//! `rkube-scheduler` and `rkube-controller-manager` (release builds), and [`FakeNodes`] in
//! this process standing in for kubelets (they mark bound pods Running and Ready through
//! the status subresource, so the figures include those writes).
//!
//! - a Deployment of `--replicas` (1,000): time from its create to every pod created, to
//!   every pod bound, and to the Deployment reporting all replicas available;
//! - a rolling update of it (a new image, default 25 % surge and unavailability): time
//!   until the rollout is complete (what `kubectl rollout status` waits for);
//! - the controller manager's resident memory once `--memory-pods` (10,000) pods exist, in
//!   Deployments of `--replicas` each.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use rkube_client::{Api, Client, ListParams, Patch};
use rkube_testing::{ApiserverProcess, DaemonProcess, FakeNodes};
use serde_json::json;

use crate::{median_f64, rss_kib};

const POLL: Duration = Duration::from_millis(50);
const DEADLINE: Duration = Duration::from_secs(1800);

fn deployment(name: &str, replicas: usize, image: &str) -> Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "app", "image": image,
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                }]},
            },
        },
    }))?)
}

/// Polls `check` until it holds; returns when it first did.
async fn until<F, Fut>(what: &str, mut check: F) -> Result<Instant>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if check().await? {
            return Ok(Instant::now());
        }
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Pods of `app` that exist, and those bound to a node.
async fn pod_counts(client: &Client, app: &str) -> Result<(usize, usize)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let list = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?;
    let live: Vec<&Pod> = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let bound = live
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
        .count();
    Ok((live.len(), bound))
}

/// Whether the Deployment's rollout is complete, as `kubectl rollout status` decides.
fn rolled_out(d: &Deployment, replicas: usize) -> bool {
    let (Some(spec_gen), Some(status)) = (d.metadata.generation, d.status.as_ref()) else {
        return false;
    };
    let n = i32::try_from(replicas).unwrap_or(i32::MAX);
    status.observed_generation.unwrap_or(0) >= spec_gen
        && status.updated_replicas.unwrap_or(0) == n
        && status.replicas.unwrap_or(0) == n
        && status.available_replicas.unwrap_or(0) == n
}

struct Run {
    created: Duration,
    bound: Duration,
    available: Duration,
    rollout: Duration,
}

async fn run_once(
    binaries: &Binaries<'_>,
    nodes: usize,
    replicas: usize,
    memory_pods: Option<usize>,
) -> Result<(Run, Option<Memory>)> {
    let dir = tempfile::tempdir()?;
    let server = ApiserverProcess::spawn(binaries.apiserver, dir.path(), &[]).await?;
    let client = server.client().await?;
    let names: Vec<String> = (1..=nodes).map(|i| format!("node-{i}")).collect();
    let fake = FakeNodes::start(client.clone(), &names).await?;
    let kubeconfig = server.kubeconfig();
    let sched =
        DaemonProcess::spawn(binaries.scheduler, &kubeconfig, &["--leader-elect=false"]).await?;
    let cm = DaemonProcess::spawn(
        binaries.controller_manager,
        &kubeconfig,
        &["--leader-elect=false"],
    )
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");

    let t0 = Instant::now();
    deployments
        .create(&deployment("web", replicas, "registry.local/app:v1")?)
        .await?;
    let created = until("all pods created", || async {
        Ok(pod_counts(&client, "web").await?.0 >= replicas)
    })
    .await?;
    let bound = until("all pods bound", || async {
        Ok(pod_counts(&client, "web").await?.1 >= replicas)
    })
    .await?;
    let available = until("all replicas available", || async {
        Ok(rolled_out(&deployments.get("web").await?, replicas))
    })
    .await?;

    let t1 = Instant::now();
    // Only the image changes (as `kubectl set image`); requests and defaults stay.
    let patch = json!([{"op": "replace", "path": "/spec/template/spec/containers/0/image",
        "value": "registry.local/app:v2"}]);
    deployments.patch("web", &Patch::Json(patch)).await?;
    let rolled = until("the rolling update complete", || async {
        Ok(rolled_out(&deployments.get("web").await?, replicas))
    })
    .await?;
    let run = Run {
        created: created.duration_since(t0),
        bound: bound.duration_since(t0),
        available: available.duration_since(t0),
        rollout: rolled.duration_since(t1),
    };

    let memory = match memory_pods {
        None => None,
        Some(total) => {
            let more = total.div_ceil(replicas).saturating_sub(1);
            for i in 0..more {
                deployments
                    .create(&deployment(
                        &format!("mem-{i}"),
                        replicas,
                        "registry.local/app:v1",
                    )?)
                    .await?;
            }
            for i in 0..more {
                let name = format!("mem-{i}");
                until(&format!("{name} available"), || async {
                    Ok(rolled_out(&deployments.get(&name).await?, replicas))
                })
                .await?;
            }
            let pods: Api<Pod> = Api::all(client.clone());
            let count = pods.list(&ListParams::default()).await?.items.len();
            Some(Memory {
                pods: count,
                controller_manager_kib: rss_kib(cm.pid().context("controller manager pid")?)?,
                scheduler_kib: rss_kib(sched.pid().context("scheduler pid")?)?,
            })
        }
    };
    drop(fake);
    drop(cm);
    drop(sched);
    server.terminate().await?;
    Ok((run, memory))
}

struct Memory {
    pods: usize,
    controller_manager_kib: u64,
    scheduler_kib: u64,
}

/// The daemon binaries the bench runs.
pub struct Binaries<'a> {
    /// `rkube-apiserver`.
    pub apiserver: &'a Path,
    /// `rkube-scheduler`.
    pub scheduler: &'a Path,
    /// `rkube-controller-manager`.
    pub controller_manager: &'a Path,
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Runs the Deployment scenario `runs` times (the last one also measures memory) and
/// prints a table row per run and the medians.
pub async fn controllers(
    binaries: &Binaries<'_>,
    nodes: usize,
    replicas: usize,
    memory_pods: usize,
    runs: usize,
) -> Result<()> {
    for (name, path) in [
        ("rkube-scheduler", binaries.scheduler),
        ("rkube-controller-manager", binaries.controller_manager),
    ] {
        ensure!(
            path.exists(),
            "no {name} binary at {}; build it with cargo build --release -p {name}",
            path.display()
        );
    }
    println!("controllers: a Deployment of {replicas} replicas on {nodes} fake nodes");
    println!("| run | all pods created | all bound | all available | rolling update complete |");
    println!("|---|---|---|---|---|");
    let mut cols: [Vec<f64>; 4] = Default::default();
    let mut memory = None;
    for run in 1..=runs.max(1) {
        let last = run == runs.max(1);
        let (r, m) = run_once(binaries, nodes, replicas, last.then_some(memory_pods)).await?;
        println!(
            "| {run} | {} | {} | {} | {} |",
            secs(r.created),
            secs(r.bound),
            secs(r.available),
            secs(r.rollout)
        );
        for (col, d) in cols
            .iter_mut()
            .zip([r.created, r.bound, r.available, r.rollout])
        {
            col.push(d.as_secs_f64());
        }
        memory = m.or(memory);
    }
    let [a, b, c, d] = cols.map(median_f64);
    println!(
        "| median | {} | {} | {} | {} |",
        secs(Duration::from_secs_f64(a)),
        secs(Duration::from_secs_f64(b)),
        secs(Duration::from_secs_f64(c)),
        secs(Duration::from_secs_f64(d))
    );
    if let Some(m) = memory {
        println!(
            "resident memory with {} pods: controller manager {:.1} MiB, scheduler {:.1} MiB",
            m.pods,
            m.controller_manager_kib as f64 / 1024.0,
            m.scheduler_kib as f64 / 1024.0
        );
    }
    Ok(())
}
