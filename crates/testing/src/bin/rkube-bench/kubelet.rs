//! `rkube-bench kubelet`: one real node — rkube's own containerd (`scripts/containerd`)
//! and an `rkube-kubelet` process on it — under a real `rkube-apiserver` (release builds).
//!
//! - Pod startup latency as upstream's SLI defines it (stateless pods, image present, no
//!   init containers): from the pod's creation to the pod seen Running by a watch. The
//!   clock starts when the bench sends the create (`creationTimestamp` has one-second
//!   precision) and stops when the bench's own pod watch delivers the first event with
//!   phase Running. Pods are bound with `spec.nodeName`, so no scheduler runs and none of
//!   its time is counted. Batches of `--batch` (30) pods at once until `--pods` (100)
//!   samples exist, each batch deleted (1 s grace) and gone from the API before the next;
//!   then `--pods` pods one at a time, each waited for before the next and left running
//!   (as upstream's density test does, so the last ones start beside 99 others).
//! - The kubelet's and containerd's resident memory (VmRSS) and CPU idle (the node Ready,
//!   no pods), with the first batch running, and with the `--pods` pods running. The
//!   batches come first so that the figure with 30 pods is not the allocator's high-water
//!   mark of 100.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use rkube_client::watcher::{self, Event};
use rkube_client::{Api, Client, DeleteParams, ListParams, WatchStreamExt};
use rkube_testing::{ApiserverProcess, DaemonProcess};
use serde_json::json;
use tokio::sync::mpsc;

use crate::{cpu_share, medians, ms, percentile, rss_kib};

const BUSYBOX: &str = "rkube.local/busybox:1.0";
const NODE: &str = "bench-node";
/// The node's bridge is `rkt<INDEX>` and its pod CIDR `10.88.<INDEX>.0/24`: far from the
/// small indices the kubelet's tests use, so the bench can run beside them.
const INDEX: u8 = 240;
const LABEL: &str = "rkube-bench=kubelet";
/// The kubelet's default `--max-pods`: the most pods the bench runs at once.
const MAX_PODS: usize = 110;
/// How long one pod may take to run, or a batch to go, before the bench gives up.
const POD_DEADLINE: Duration = Duration::from_secs(120);
/// Time for start-up allocations, the first Lease renewal and status sample (every 10 s)
/// to happen before memory is read.
const SETTLE_IDLE: Duration = Duration::from_secs(12);
/// Time for a few PLEG relists (every 1 s) with the pods running before memory is read.
const SETTLE_PODS: Duration = Duration::from_secs(5);

/// The repository root (for `scripts/containerd`), as this binary was built from.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn containerd_script(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new(repo_root().join("scripts/containerd"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .context("running scripts/containerd")?;
    ensure!(
        out.status.success(),
        "scripts/containerd {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// rkube's containerd in a short temp dir and a kubelet on it; stopped when dropped.
struct RealNode {
    dir: tempfile::TempDir,
    kubelet: Option<DaemonProcess>,
}

impl RealNode {
    async fn start(kubelet: &Path, kubeconfig: &Path) -> Result<Self> {
        // Short: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new().prefix("rkb").tempdir_in("/tmp")?;
        let path = dir.path().to_str().context("temp dir path")?.to_string();
        containerd_script(&["start", &path])?;
        let mut node = RealNode { dir, kubelet: None };
        let endpoint = format!("unix://{path}/containerd.sock");
        let root = format!("{path}/kubelet");
        let cni = format!("{path}/cni/net.d");
        let cidr = format!("10.88.{INDEX}.0/24");
        let bridge = format!("rkt{INDEX}");
        node.kubelet = Some(
            DaemonProcess::spawn(
                kubelet,
                kubeconfig,
                &[
                    "--container-runtime-endpoint",
                    &endpoint,
                    "--hostname-override",
                    NODE,
                    "--node-ip",
                    "127.0.0.1",
                    "--root-dir",
                    &root,
                    "--cni-conf-dir",
                    &cni,
                    "--pod-cidr",
                    &cidr,
                    "--cni-bridge",
                    &bridge,
                    "--port",
                    "0",
                ],
            )
            .await?,
        );
        Ok(node)
    }

    fn kubelet_pid(&self) -> Result<u32> {
        self.kubelet
            .as_ref()
            .and_then(DaemonProcess::pid)
            .context("kubelet pid")
    }

    fn containerd_pid(&self) -> Result<u32> {
        let pid = std::fs::read_to_string(self.dir.path().join("containerd.pid"))?;
        Ok(pid.trim().parse()?)
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        self.kubelet.take();
        if let Some(path) = self.dir.path().to_str()
            && let Err(e) = containerd_script(&["stop", path])
        {
            eprintln!("  {e:#}");
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &format!("rkt{INDEX}")])
            .output();
        remove_masquerade_rules();
    }
}

/// Removes the NAT rules and chains the bridge plugin's `ipMasq` made for pods of this
/// node's CIDR that were never torn down through CNI (containers killed by
/// `scripts/containerd stop` after a failed run). Left behind, they make every later
/// iptables call, and so every pod start, slower.
fn remove_masquerade_rules() {
    let prefix = format!("10.88.{INDEX}.");
    let Ok(out) = std::process::Command::new("iptables")
        .args(["-t", "nat", "-L", "POSTROUTING", "--line-numbers", "-n"])
        .output()
    else {
        return;
    };
    // (rule number, its chain) for sources in the CIDR, removed from the last rule up.
    let mut rules: Vec<(u32, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let num = f.first()?.parse().ok()?;
            let chain = f.get(1).filter(|c| c.starts_with("CNI-"))?;
            f.get(4)
                .filter(|src| src.starts_with(&prefix))
                .map(|_| (num, chain.to_string()))
        })
        .collect();
    rules.sort_unstable_by_key(|r| std::cmp::Reverse(r.0));
    for (num, chain) in &rules {
        let iptables = |args: &[&str]| {
            let _ = std::process::Command::new("iptables")
                .args(["-t", "nat"])
                .args(args)
                .output();
        };
        iptables(&["-D", "POSTROUTING", &num.to_string()]);
        iptables(&["-F", chain]);
        iptables(&["-X", chain]);
    }
    if !rules.is_empty() {
        eprintln!(
            "  removed {} leftover NAT rules of {prefix}0/24",
            rules.len()
        );
    }
}

pub(crate) fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Polls `check` every 100 ms until it holds, for at most `deadline`; fails with `what`
/// and the last thing seen.
async fn poll<F, Fut>(what: &str, deadline: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>>>,
{
    let until = Instant::now() + deadline;
    loop {
        let seen = match check().await? {
            None => return Ok(()),
            Some(seen) => seen,
        };
        if Instant::now() >= until {
            bail!("timed out after {deadline:?} waiting for {what}; last seen: {seen}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pod(name: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"rkube-bench": "kubelet"}},
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "sleep", "image": BUSYBOX, "command": ["sleep", "3600"]}],
        },
    }))?)
}

/// The bench's watch of the pods labelled `label` in `default`: sends each pod's name the
/// first time it is seen Running, with when; returns once its first list is done, so no
/// later transition is missed.
async fn watch_running(client: Client, label: &str) -> Result<Running> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
    let api: Api<Pod> = Api::namespaced(client, "default");
    let label = label.to_string();
    let task = tokio::spawn(async move {
        let stream =
            watcher::watcher(api, watcher::Config::default().labels(&label)).default_backoff();
        futures::pin_mut!(stream);
        let mut synced_tx = Some(synced_tx);
        let mut seen = std::collections::HashSet::new();
        while let Some(ev) = stream.next().await {
            let now = Instant::now();
            let pod = match ev {
                Ok(Event::Apply(p) | Event::InitApply(p)) => p,
                Ok(Event::InitDone) => {
                    if let Some(s) = synced_tx.take() {
                        let _ = s.send(());
                    }
                    continue;
                }
                Ok(_) => continue,
                Err(e) => {
                    eprintln!("  pod watch: {e}");
                    continue;
                }
            };
            let running = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|p| p == "Running");
            let name = pod.metadata.name.unwrap_or_default();
            if running && seen.insert(name.clone()) && tx.send((name, now)).is_err() {
                return;
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), synced_rx)
        .await
        .context("the pod watch did not list within 30 s")??;
    Ok(Running {
        rx,
        at: HashMap::new(),
        task,
    })
}

/// Pod names → when first seen Running, filled from [`watch_running`].
pub(crate) struct Running {
    rx: mpsc::UnboundedReceiver<(String, Instant)>,
    at: HashMap<String, Instant>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Running {
    /// Starts the watch of pods labelled `label`.
    pub(crate) async fn watch(client: Client, label: &str) -> Result<Self> {
        watch_running(client, label).await
    }

    /// Waits until every pod of `names` was seen Running, for at most `deadline`.
    pub(crate) async fn wait_for(&mut self, names: &[String], deadline: Duration) -> Result<()> {
        let until = tokio::time::Instant::now() + deadline;
        while let Some(missing) = names.iter().find(|n| !self.at.contains_key(*n)) {
            let missing = missing.clone();
            match tokio::time::timeout_at(until, self.rx.recv()).await {
                Ok(Some((name, at))) => {
                    self.at.insert(name, at);
                }
                Ok(None) => bail!("the pod watch ended"),
                Err(_) => bail!(
                    "pod {missing} not Running within {deadline:?} ({} of {} are)",
                    names.iter().filter(|n| self.at.contains_key(*n)).count(),
                    names.len()
                ),
            }
        }
        Ok(())
    }

    /// Waits until every pod of `names` was seen Running, for at most [`POD_DEADLINE`].
    async fn wait(&mut self, names: &[String]) -> Result<()> {
        self.wait_for(names, POD_DEADLINE).await
    }

    /// From `created` to when `name` was seen Running.
    pub(crate) fn latency(&self, name: &str, created: Instant) -> Result<Duration> {
        let at = self.at.get(name).context("pod not seen running")?;
        Ok(at.saturating_duration_since(created))
    }
}

/// Deletes the bench's pods (1 s grace: `sleep` as PID 1 ignores SIGTERM) and waits until
/// they are gone from the API, which the kubelet confirms only after it removed their
/// containers and sandboxes. Returns how long that took.
async fn delete_all(pods: &Api<Pod>) -> Result<Duration> {
    let t = Instant::now();
    let list = pods.list(&ListParams::default().labels(LABEL)).await?;
    let params = DeleteParams::default().grace_period(1);
    futures::future::try_join_all(list.items.iter().map(|p| {
        let name = p.metadata.name.clone().unwrap_or_default();
        let params = params.clone();
        async move { pods.delete(&name, &params).await }
    }))
    .await?;
    poll("the pods gone", POD_DEADLINE, || async {
        let left = pods.list(&ListParams::default().labels(LABEL)).await?;
        Ok((!left.items.is_empty()).then(|| format!("{} pods left", left.items.len())))
    })
    .await?;
    Ok(t.elapsed())
}

/// A process's resident memory and CPU share (of one core) at one moment.
#[derive(Clone, Copy, Default)]
struct Usage {
    rss_kib: u64,
    cpu_percent: f64,
}

/// The kubelet's and containerd's usage over `window`: CPU over the window, RSS at its end.
async fn usage(node: &RealNode, window: Duration) -> Result<[Usage; 2]> {
    let pids = [node.kubelet_pid()?, node.containerd_pid()?];
    let cpu = cpu_share(&pids, window).await?;
    Ok([
        Usage {
            rss_kib: rss_kib(pids[0])?,
            cpu_percent: cpu[0],
        },
        Usage {
            rss_kib: rss_kib(pids[1])?,
            cpu_percent: cpu[1],
        },
    ])
}

/// One run's figures.
struct Run {
    sequential: Vec<Duration>,
    batch: Vec<Duration>,
    /// Kubelet and containerd, idle.
    idle: [Usage; 2],
    /// Kubelet and containerd with the first batch running.
    loaded: [Usage; 2],
    /// Kubelet and containerd with the `--pods` pods of the one-at-a-time phase running.
    full: [Usage; 2],
}

async fn run_once(apiserver: &Path, kubelet: &Path, pods_n: usize, batch: usize) -> Result<Run> {
    let dir = tempfile::tempdir()?;
    let server = ApiserverProcess::spawn(apiserver, dir.path(), &[]).await?;
    let client = server.client().await?;
    let t = Instant::now();
    let node = RealNode::start(kubelet, &server.kubeconfig()).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    poll("the node Ready", Duration::from_secs(60), || async {
        Ok(match nodes.get_opt(NODE).await? {
            Some(n) if node_ready(&n) => None,
            Some(n) => Some(format!("{:?}", n.status.and_then(|s| s.conditions))),
            None => Some("no Node".into()),
        })
    })
    .await?;
    eprintln!(
        "  containerd and kubelet started, node Ready in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut running = Running::watch(client.clone(), LABEL).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    let idle = usage(&node, SETTLE_IDLE).await?;

    let mut batched = Vec::with_capacity(pods_n.div_ceil(batch) * batch);
    let mut loaded = None;
    for b in 0..pods_n.div_ceil(batch) {
        let names: Vec<String> = (0..batch).map(|i| format!("batch{b}-{i}")).collect();
        let starts = futures::future::try_join_all(names.iter().map(|name| {
            let pods = pods.clone();
            async move {
                let t = Instant::now();
                pods.create(&pod(name)?).await?;
                anyhow::Ok(t)
            }
        }))
        .await?;
        running.wait(&names).await?;
        let mut these = Vec::with_capacity(batch);
        for (name, t) in names.iter().zip(starts) {
            these.push(running.latency(name, t)?);
        }
        these.sort_unstable();
        if loaded.is_none() {
            loaded = Some(usage(&node, SETTLE_PODS).await?);
        }
        let took = delete_all(&pods).await?;
        eprintln!(
            "  batch {b} of {batch}: first Running after {}, median {}, last {}; deleted in {:.1} s; kubelet RSS then {}",
            ms(these[0]),
            ms(these[these.len() / 2]),
            ms(these[these.len() - 1]),
            took.as_secs_f64(),
            mib(rss_kib(node.kubelet_pid()?)?)
        );
        batched.extend(these);
    }
    let mut sequential = Vec::with_capacity(pods_n);
    for i in 0..pods_n {
        let name = format!("seq-{i}");
        let t = Instant::now();
        pods.create(&pod(&name)?).await?;
        running.wait(std::slice::from_ref(&name)).await?;
        sequential.push(running.latency(&name, t)?);
    }
    let full = usage(&node, SETTLE_PODS).await?;
    let took = delete_all(&pods).await?;
    eprintln!(
        "  {pods_n} pods one at a time; deleted in {:.1} s; kubelet RSS then {}",
        took.as_secs_f64(),
        mib(rss_kib(node.kubelet_pid()?)?)
    );

    let loaded = loaded.context("no batch ran")?;
    drop(running);
    drop(node);
    server.terminate().await?;
    sequential.sort_unstable();
    batched.sort_unstable();
    Ok(Run {
        sequential,
        batch: batched,
        idle,
        loaded,
        full,
    })
}

pub(crate) fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// p50, p99 and max of sorted latencies.
pub(crate) fn spread(sorted: &[Duration]) -> [Duration; 3] {
    [
        percentile(sorted, 0.5),
        percentile(sorted, 0.99),
        sorted.last().copied().unwrap_or_default(),
    ]
}

/// Runs the node benchmark `runs` times; prints a latency table and a resource table, each
/// with a row per run and the medians of the per-run figures, and the latency percentiles
/// over every run's samples pooled.
pub async fn kubelet(
    apiserver: &Path,
    kubelet: &Path,
    pods: usize,
    batch: usize,
    runs: usize,
) -> Result<()> {
    ensure!(
        kubelet.exists(),
        "no kubelet binary at {}; build it with cargo build --release -p rkube-kubelet",
        kubelet.display()
    );
    ensure!(pods > 0 && batch > 0, "--pods and --batch must be positive");
    // The kubelet does not refuse pods beyond --max-pods yet; past 253 running pods the
    // node's /24 pod CIDR has no address left and sandboxes fail.
    ensure!(
        pods <= MAX_PODS && batch <= MAX_PODS,
        "--pods and --batch must be at most {MAX_PODS}, the kubelet's --max-pods"
    );
    let mut results = Vec::new();
    for run in 1..=runs.max(1) {
        eprintln!("run {run}");
        results.push(run_once(apiserver, kubelet, pods, batch).await?);
    }
    let batches = pods.div_ceil(batch);
    println!(
        "kubelet: one real node (containerd {}), pods bound by spec.nodeName (no scheduler), \
         busybox `sleep 3600`, image present\n",
        containerd_version()
    );
    println!(
        "pod startup latency, create sent -> Running seen by watch: {batches} batches of \
         {batch} at once ({} samples), then {pods} pods one at a time\n",
        batches * batch
    );
    println!("| run | one at a time p50 | p99 | max | batches p50 | p99 | max |");
    println!("|---|---|---|---|---|---|---|");
    let d = |s: f64| ms(Duration::from_secs_f64(s));
    let mut rows = Vec::new();
    for (run, r) in results.iter().enumerate() {
        let [a, b, c] = spread(&r.sequential);
        let [e, f, g] = spread(&r.batch);
        let row = [a, b, c, e, f, g].map(|x| x.as_secs_f64());
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            run + 1,
            d(row[0]),
            d(row[1]),
            d(row[2]),
            d(row[3]),
            d(row[4]),
            d(row[5])
        );
        rows.push(row);
    }
    let m = medians(&rows);
    println!(
        "| median | {} | {} | {} | {} | {} | {} |",
        d(m[0]),
        d(m[1]),
        d(m[2]),
        d(m[3]),
        d(m[4]),
        d(m[5])
    );
    let mut all_seq: Vec<Duration> = results.iter().flat_map(|r| r.sequential.clone()).collect();
    let mut all_batch: Vec<Duration> = results.iter().flat_map(|r| r.batch.clone()).collect();
    all_seq.sort_unstable();
    all_batch.sort_unstable();
    let [s50, s99, smax] = spread(&all_seq);
    let [b50, b99, bmax] = spread(&all_batch);
    println!(
        "| all runs pooled ({} and {} samples) | {} | {} | {} | {} | {} | {} |\n",
        all_seq.len(),
        all_batch.len(),
        ms(s50),
        ms(s99),
        ms(smax),
        ms(b50),
        ms(b99),
        ms(bmax)
    );
    println!("target: p99 < 1 s\n");

    println!(
        "resources: VmRSS at the end of a window, CPU over it as a share of one core (idle: \
         {} s once the node is Ready; with pods: {} s once they all run)\n",
        SETTLE_IDLE.as_secs(),
        SETTLE_PODS.as_secs()
    );
    for (process, i) in [("kubelet", 0), ("containerd", 1)] {
        println!(
            "| {process}, run | RSS idle | with {batch} pods | with {pods} pods | CPU idle | with {batch} pods | with {pods} pods |"
        );
        println!("|---|---|---|---|---|---|---|");
        let rows: Vec<[f64; 6]> = results
            .iter()
            .map(|r| {
                let [a, b, c] = [r.idle[i], r.loaded[i], r.full[i]];
                [
                    a.rss_kib as f64,
                    b.rss_kib as f64,
                    c.rss_kib as f64,
                    a.cpu_percent,
                    b.cpu_percent,
                    c.cpu_percent,
                ]
            })
            .collect();
        let m = medians(&rows);
        for (label, row) in (1..=rows.len())
            .map(|r| r.to_string())
            .zip(rows.iter())
            .chain(std::iter::once(("median".to_string(), &m)))
        {
            println!(
                "| {label} | {} | {} | {} | {:.1} % | {:.1} % | {:.1} % |",
                mib(row[0] as u64),
                mib(row[1] as u64),
                mib(row[2] as u64),
                row[3],
                row[4],
                row[5]
            );
        }
        println!();
    }
    Ok(())
}

fn containerd_version() -> String {
    std::process::Command::new("containerd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(2)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}
