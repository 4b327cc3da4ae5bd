//! `rkube-bench up`: the launcher as a user runs it — the release `rkube` beside this
//! binary, as root, so the node is real (rkube's own containerd and a kubelet).
//!
//! Each run makes a fresh data dir under /tmp (short: unix socket paths are limited to
//! 108 bytes) and:
//!
//! 1. times `rkube up` on it (a first start: certificates, store, containerd and its
//!    images, every daemon, until the node is Ready and `rkube up` returns), and when each
//!    daemon was ready, from the lines `rkube up` prints;
//! 2. reads each daemon's and containerd's resident memory (VmRSS) once the cluster has
//!    been up for 20 s, and their CPU share over the 10 s before that;
//! 3. times `rkube down` (no pods), then `rkube up` again on the same data dir (a resume);
//! 4. creates a Deployment of `--pods` (100) busybox `sleep 3600` replicas, waits until all
//!    are Running, and reads memory and CPU again over the next 10 s, containerd's shims
//!    included;
//! 5. times `rkube down` with the pods, then `rkube down --purge`.
//!
//! The cluster uses free ports, the bridge `rkt200` and pod CIDR 10.88.200.0/24, so it
//! runs beside the tests' clusters. It is stopped and purged also when a run fails or the
//! bench is interrupted; the daemons' logs of a failed run are kept in
//! `/tmp/rkube-bench-up-logs`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use rkube_client::{Api, Client, ClientConfig, ListParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::{cpu_share, median, median_f64, rss_kib};

const NODE: &str = "bench-up";
const POD_CIDR: &str = "10.88.200.0/24";
const BRIDGE: &str = "rkt200";
const APP: &str = "bench-up-sleep";
const BUSYBOX: &str = "rkube.local/busybox:1.0";
/// The kubelet's default `--max-pods`, which `rkube up` keeps.
const MAX_PODS: usize = 110;
/// How long the cluster has been up when its idle memory is read.
const IDLE: Duration = Duration::from_secs(20);
/// The window CPU is measured over, ending when memory is read.
const CPU_WINDOW: Duration = Duration::from_secs(10);
/// `rkube up` gives each daemon 60 s and the node 90 s; more than that is a hang.
const UP_DEADLINE: Duration = Duration::from_secs(300);
const DOWN_DEADLINE: Duration = Duration::from_secs(120);
const PODS_DEADLINE: Duration = Duration::from_secs(600);
/// Where the daemons' logs of a failed run are copied before the data dir is purged.
const LOGS_KEPT: &str = "/tmp/rkube-bench-up-logs";

/// The processes whose memory is read, by pid file (`<data dir>/run/<name>.pid`): the
/// control plane first.
const PROCESSES: [&str; 5] = [
    "apiserver",
    "scheduler",
    "controller-manager",
    "kubelet",
    "containerd",
];
/// How many of [`PROCESSES`] are the control plane.
const CONTROL_PLANE: usize = 3;

/// The readiness steps `rkube up` reports (`rkube: <step> ready…`), in order, and how the
/// table names them.
const STEPS: [(&str, &str); 5] = [
    ("containerd", "containerd answers, images imported"),
    ("apiserver", "apiserver ready"),
    ("scheduler", "scheduler ready"),
    ("controller-manager", "controller manager ready"),
    ("kubelet", "kubelet ready"),
];

/// One `rkube up`: its wall time (until it returned, the node Ready) and when each step of
/// [`STEPS`] was reported, both from the spawn.
struct UpTime {
    total: Duration,
    steps: Vec<(String, Duration)>,
}

impl UpTime {
    fn step(&self, name: &str) -> Option<Duration> {
        self.steps.iter().find(|(n, _)| n == name).map(|(_, d)| *d)
    }
}

/// Memory and CPU of [`PROCESSES`] (same order) and of containerd's shims at one moment.
struct Sample {
    rss_kib: [u64; 5],
    cpu_percent: [f64; 5],
    shims: usize,
    /// The shims' VmRSS summed: each counts the pages of the shim binary they share.
    shims_kib: u64,
    /// The shims' proportional set size summed: shared pages divided among them.
    shims_pss_kib: u64,
}

impl Sample {
    fn control_plane_kib(&self) -> u64 {
        self.rss_kib[..CONTROL_PLANE].iter().sum()
    }

    fn all_kib(&self) -> u64 {
        self.rss_kib.iter().sum()
    }
}

/// One run's figures.
struct Run {
    fresh: UpTime,
    resume: UpTime,
    down_idle: Duration,
    down_pods: Duration,
    pods_running: Duration,
    idle: Sample,
    loaded: Sample,
}

/// A cluster of `rkube up` in a temp dir of its own; stopped and purged when dropped
/// unless [`Cluster::purge`] did it.
struct Cluster {
    rkube: PathBuf,
    images: PathBuf,
    /// The temp dir that holds the data dir (kept on disk: `rkube down --purge` removes
    /// the data dir once it has unmounted what containerd mounted under it).
    parent: PathBuf,
    data_dir: PathBuf,
    purged: bool,
}

impl Cluster {
    fn new(rkube: &Path, images: &Path) -> Result<Self> {
        let parent = tempfile::Builder::new()
            .prefix("rkbu")
            .tempdir_in("/tmp")?
            .keep();
        Ok(Cluster {
            rkube: rkube.to_path_buf(),
            images: images.to_path_buf(),
            data_dir: parent.join("d"),
            parent,
            purged: false,
        })
    }

    /// Runs `rkube up` and waits until it returns (the node Ready).
    async fn up(&self) -> Result<UpTime> {
        let started = Instant::now();
        let mut child = tokio::process::Command::new(&self.rkube)
            .arg("up")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--free-ports", "--node-name", NODE, "--pod-cidr", POD_CIDR])
            .args(["--cni-bridge", BRIDGE, "--images-dir"])
            .arg(&self.images)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.rkube.display()))?;
        let mut stderr = child.stderr.take().context("rkube up stderr")?;
        let errors = tokio::spawn(async move {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s).await;
            s
        });
        let mut lines = BufReader::new(child.stdout.take().context("rkube up stdout")?).lines();
        let mut printed = Vec::new();
        let mut steps = Vec::new();
        let read = async {
            while let Some(line) = lines.next_line().await? {
                let at = started.elapsed();
                if let Some((step, _)) = line
                    .strip_prefix("rkube: ")
                    .and_then(|rest| rest.split_once(" ready"))
                    && step != "cluster"
                {
                    steps.push((step.to_string(), at));
                }
                printed.push(line);
            }
            anyhow::Ok(child.wait().await?)
        };
        let status = match tokio::time::timeout(UP_DEADLINE, read).await {
            Ok(status) => status?,
            Err(_) => bail!(
                "rkube up did not return within {UP_DEADLINE:?}; it printed:\n{}",
                printed.join("\n")
            ),
        };
        let total = started.elapsed();
        let errors = errors.await.unwrap_or_default();
        ensure!(
            status.success(),
            "rkube up failed ({status}):\n{}\n{}",
            printed.join("\n"),
            errors.trim()
        );
        Ok(UpTime { total, steps })
    }

    /// Runs `rkube down` (with `--purge` if asked); returns how long it took.
    async fn down(&mut self, purge: bool) -> Result<Duration> {
        let started = Instant::now();
        let mut cmd = tokio::process::Command::new(&self.rkube);
        cmd.arg("down").arg("--data-dir").arg(&self.data_dir);
        if purge {
            cmd.arg("--purge");
        }
        let out = tokio::time::timeout(DOWN_DEADLINE, cmd.kill_on_drop(true).output())
            .await
            .with_context(|| format!("rkube down did not return within {DOWN_DEADLINE:?}"))?
            .context("running rkube down")?;
        let took = started.elapsed();
        ensure!(
            out.status.success(),
            "rkube down failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(took)
    }

    /// `rkube down --purge`, then removes what the cluster left on the host: the temp dir
    /// and the bridge.
    async fn purge(mut self) -> Result<()> {
        self.down(true).await?;
        self.purged = true;
        remove_leftovers(&self.parent);
        Ok(())
    }

    /// A client with the cluster's admin kubeconfig.
    async fn client(&self) -> Result<Client> {
        let kubeconfig = self.data_dir.join("apiserver/kubeconfig");
        let config = ClientConfig::from_kubeconfig(&kubeconfig)?;
        Ok(Client::connect_with(&config).await?)
    }

    fn pid(&self, process: &str) -> Result<u32> {
        let file = self.data_dir.join("run").join(format!("{process}.pid"));
        let pid = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        pid.trim()
            .parse()
            .with_context(|| format!("{} holds no pid", file.display()))
    }

    /// Memory of [`PROCESSES`] and the shims at the end of `CPU_WINDOW`, CPU over it.
    async fn sample(&self) -> Result<Sample> {
        let pids = PROCESSES
            .iter()
            .map(|p| self.pid(p))
            .collect::<Result<Vec<_>>>()?;
        let cpu = cpu_share(&pids, CPU_WINDOW).await?;
        let mut rss = [0; 5];
        for (r, pid) in rss.iter_mut().zip(&pids) {
            *r = rss_kib(*pid)?;
        }
        let socket = self.data_dir.join("containerd/containerd.sock");
        let shims = shim_pids(&socket);
        Ok(Sample {
            rss_kib: rss,
            cpu_percent: std::array::from_fn(|i| cpu[i]),
            shims: shims.len(),
            shims_kib: shims.iter().filter_map(|p| rss_kib(*p).ok()).sum(),
            shims_pss_kib: shims.iter().filter_map(|p| pss_kib(*p)).sum(),
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.purged {
            return;
        }
        keep_logs(&self.data_dir.join("logs"));
        match std::process::Command::new(&self.rkube)
            .arg("down")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--purge")
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "  rkube down --purge failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("  running rkube down --purge: {e}"),
        }
        remove_leftovers(&self.parent);
    }
}

/// Copies the logs of a failed run out of the data dir before it is purged.
fn keep_logs(logs: &Path) {
    let Ok(entries) = std::fs::read_dir(logs) else {
        return;
    };
    let kept = Path::new(LOGS_KEPT);
    let _ = std::fs::remove_dir_all(kept);
    if std::fs::create_dir_all(kept).is_err() {
        return;
    }
    for e in entries.flatten() {
        let _ = std::fs::copy(e.path(), kept.join(e.file_name()));
    }
    eprintln!("  the daemons' logs of the failed run are in {LOGS_KEPT}");
}

/// The (empty) temp dir and the bridge, which outlive `rkube down --purge`.
fn remove_leftovers(parent: &Path) {
    let _ = std::fs::remove_dir(parent);
    let _ = std::process::Command::new("ip")
        .args(["link", "del", BRIDGE])
        .output();
}

/// containerd's shims of the instance whose socket is `socket`, found by their command
/// line as `rkube down` finds them.
fn shim_pids(socket: &Path) -> Vec<u32> {
    let needle = format!("-address\0{}\0", socket.display());
    let needle = needle.as_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

/// The proportional set size of `pid` (`Pss` in `/proc/<pid>/smaps_rollup`).
fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

fn deployment(replicas: usize) -> Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": APP},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": APP}},
            "template": {
                "metadata": {"labels": {"app": APP}},
                "spec": {
                    // `sleep` as PID 1 ignores SIGTERM: do not make `rkube down` wait 10 s.
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "sleep", "image": BUSYBOX, "command": ["sleep", "3600"]}],
                },
            },
        },
    }))?)
}

/// Creates the Deployment of `replicas` and waits until as many of its pods are Running;
/// returns how long that took.
async fn run_pods(client: &Client, replicas: usize) -> Result<Duration> {
    let started = Instant::now();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments.create(&deployment(replicas)?).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let selector = format!("app={APP}");
    loop {
        let list = pods.list(&ListParams::default().labels(&selector)).await?;
        let phase = |p: &Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "no phase".into())
        };
        let running = list.items.iter().filter(|p| phase(p) == "Running").count();
        if running >= replicas {
            return Ok(started.elapsed());
        }
        if started.elapsed() > PODS_DEADLINE {
            let mut phases = std::collections::BTreeMap::<String, usize>::new();
            for p in &list.items {
                *phases.entry(phase(p)).or_default() += 1;
            }
            bail!(
                "{running} of {replicas} pods Running after {PODS_DEADLINE:?}; pods by phase: {phases:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn run_once(rkube: &Path, images: &Path, pods: usize) -> Result<Run> {
    let mut cluster = Cluster::new(rkube, images)?;
    let fresh = cluster.up().await?;
    eprintln!("  first start: {}", secs(fresh.total));
    tokio::time::sleep(IDLE - CPU_WINDOW).await;
    let idle = cluster.sample().await?;
    let down_idle = cluster.down(false).await?;
    let resume = cluster.up().await?;
    eprintln!(
        "  down: {}, resume: {}",
        secs(down_idle),
        secs(resume.total)
    );
    let client = cluster.client().await?;
    let pods_running = run_pods(&client, pods).await?;
    eprintln!("  {pods} pods Running after {}", secs(pods_running));
    let loaded = cluster.sample().await?;
    drop(client);
    let down_pods = cluster.down(false).await?;
    eprintln!("  down with {pods} pods: {}", secs(down_pods));
    cluster.purge().await?;
    Ok(Run {
        fresh,
        resume,
        down_idle,
        down_pods,
        pods_running,
        idle,
        loaded,
    })
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Decimal megabytes, as the targets are given.
fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

fn median_kib(v: impl Iterator<Item = u64>) -> u64 {
    median_f64(v.map(|k| k as f64).collect()) as u64
}

/// The median, min and max of `v`.
fn spread(v: &[Duration]) -> (Duration, Duration, Duration) {
    let min = v.iter().min().copied().unwrap_or_default();
    let max = v.iter().max().copied().unwrap_or_default();
    (median(v.to_vec()), min, max)
}

/// Runs the launcher's benchmark `runs` times with `pods` pods and prints the tables.
pub(crate) async fn up(rkube: &Path, runs: usize, pods: usize) -> Result<()> {
    ensure!(is_root(), "rkube-bench up runs a real node: run it as root");
    ensure!(
        rkube.is_file(),
        "no rkube binary at {}; build it with cargo build --release -p rkube -p rkube-apiserver -p rkube-scheduler -p rkube-controller-manager -p rkube-kubelet",
        rkube.display()
    );
    ensure!(
        (1..=MAX_PODS).contains(&pods),
        "--pods must be 1 to {MAX_PODS} (the kubelet's --max-pods)"
    );
    // Where `rkube up` looks by default: `images` beside target/release.
    let images = rkube
        .parent()
        .and_then(Path::parent)
        .context("the rkube binary's directory")?
        .join("images");
    ensure!(
        images.join("busybox.tar").is_file(),
        "no {}: build the images with scripts/build-images",
        images.join("busybox.tar").display()
    );
    let runs = runs.max(1);
    println!(
        "up: {} (as root), {}, {pods} pods of {BUSYBOX}",
        rkube.display(),
        plural(runs, "run")
    );
    let mut results = Vec::new();
    for i in 1..=runs {
        eprintln!("run {i} of {runs}");
        let run = tokio::select! {
            r = run_once(rkube, &images, pods) => r?,
            _ = tokio::signal::ctrl_c() => bail!("interrupted; the cluster was stopped and purged"),
        };
        results.push(run);
    }
    print_times(&results, pods);
    print_memory(&results, pods);
    Ok(())
}

fn print_times(runs: &[Run], pods: usize) {
    let n = runs.len();
    println!("\n## rkube up to a Ready node ({})\n", plural(n, "run"));
    println!(
        "| run | first start | resume | down, no pods | down, {pods} pods | {pods} pods Running |\n|---|---|---|---|---|---|"
    );
    for (i, r) in runs.iter().enumerate() {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            i + 1,
            secs(r.fresh.total),
            secs(r.resume.total),
            secs(r.down_idle),
            secs(r.down_pods),
            secs(r.pods_running)
        );
    }
    let columns: [Vec<Duration>; 5] = [
        runs.iter().map(|r| r.fresh.total).collect(),
        runs.iter().map(|r| r.resume.total).collect(),
        runs.iter().map(|r| r.down_idle).collect(),
        runs.iter().map(|r| r.down_pods).collect(),
        runs.iter().map(|r| r.pods_running).collect(),
    ];
    let spreads = columns.map(|c| spread(&c));
    let row = |f: &dyn Fn(&(Duration, Duration, Duration)) -> String| {
        spreads.iter().map(f).collect::<Vec<_>>().join(" | ")
    };
    println!(
        "| **median** | {} |",
        row(&|s| format!("**{}**", secs(s.0)))
    );
    println!(
        "| min–max | {} |",
        row(&|s| format!("{:.2}–{:.2} s", s.1.as_secs_f64(), s.2.as_secs_f64()))
    );

    println!("\n### When each step was done (median time since rkube up started)\n");
    println!("| step | first start | resume |\n|---|---|---|");
    let step = |pick: fn(&Run) -> &UpTime, name: &str| {
        let v: Vec<Duration> = runs.iter().filter_map(|r| pick(r).step(name)).collect();
        if v.is_empty() {
            "-".to_string()
        } else {
            secs(median(v))
        }
    };
    for (name, label) in STEPS {
        println!(
            "| {label} | {} | {} |",
            step(|r| &r.fresh, name),
            step(|r| &r.resume, name)
        );
    }
    println!(
        "| node Ready, rkube up returned | {} | {} |",
        secs(spreads[0].0),
        secs(spreads[1].0)
    );
}

fn print_memory(runs: &[Run], pods: usize) {
    let n = runs.len();
    println!(
        "\n## Resident memory (VmRSS) and CPU (share of one core over 10 s), medians of {}\n",
        plural(n, "run")
    );
    println!(
        "| process | RSS idle (20 s up) | with {pods} pods | CPU idle | with {pods} pods |\n|---|---|---|---|---|"
    );
    let rss =
        |pick: fn(&Run) -> &Sample, i: usize| median_kib(runs.iter().map(|r| pick(r).rss_kib[i]));
    let cpu = |pick: fn(&Run) -> &Sample, i: usize| {
        median_f64(runs.iter().map(|r| pick(r).cpu_percent[i]).collect())
    };
    let names = [
        "rkube-apiserver",
        "rkube-scheduler",
        "rkube-controller-manager",
        "rkube-kubelet",
        "containerd",
    ];
    for (i, name) in names.iter().enumerate() {
        if i == CONTROL_PLANE {
            let idle = median_kib(runs.iter().map(|r| r.idle.control_plane_kib()));
            let loaded = median_kib(runs.iter().map(|r| r.loaded.control_plane_kib()));
            let cpu_sum = |pick: fn(&Run) -> &Sample| {
                median_f64(
                    runs.iter()
                        .map(|r| pick(r).cpu_percent[..CONTROL_PLANE].iter().sum())
                        .collect(),
                )
            };
            println!(
                "| **control plane** (apiserver + scheduler + controller manager) | **{}** | **{}** | {:.1} % | {:.1} % |",
                mib(idle),
                mib(loaded),
                cpu_sum(|r| &r.idle),
                cpu_sum(|r| &r.loaded)
            );
        }
        println!(
            "| {name} | {} | {} | {:.1} % | {:.1} % |",
            mib(rss(|r| &r.idle, i)),
            mib(rss(|r| &r.loaded, i)),
            cpu(|r| &r.idle, i),
            cpu(|r| &r.loaded, i)
        );
    }
    let shims = median_f64(runs.iter().map(|r| r.loaded.shims as f64).collect());
    println!(
        "| containerd shims ({shims:.0} with {pods} pods): RSS summed, PSS summed | {} | {}, PSS {} | | |",
        mib(median_kib(runs.iter().map(|r| r.idle.shims_kib))),
        mib(median_kib(runs.iter().map(|r| r.loaded.shims_kib))),
        mib(median_kib(runs.iter().map(|r| r.loaded.shims_pss_kib)))
    );
    let all_idle = median_kib(runs.iter().map(|r| r.idle.all_kib()));
    let all_loaded = median_kib(runs.iter().map(|r| r.loaded.all_kib()));
    println!(
        "| **all of rkube** (control plane, kubelet, containerd; no shims) | **{}** | **{}** | | |",
        mib(all_idle),
        mib(all_loaded)
    );

    let cp: Vec<u64> = runs.iter().map(|r| r.idle.control_plane_kib()).collect();
    let cp_idle = median_kib(cp.iter().copied());
    let cp_loaded = median_kib(runs.iter().map(|r| r.loaded.control_plane_kib()));
    println!(
        "\ncontrol plane idle: {:.1} MB median ({:.1}–{:.1} MB over {}): {:.2} of the 100 MB target ({})",
        mb(cp_idle),
        mb(cp.iter().copied().min().unwrap_or_default()),
        mb(cp.iter().copied().max().unwrap_or_default()),
        plural(n, "run"),
        mb(cp_idle) / 100.0,
        if mb(cp_idle) < 100.0 {
            "met"
        } else {
            "not met"
        }
    );
    println!(
        "vs k0s (~510 MB idle): control plane {:.2}x, all of rkube {:.2}x; vs k3s server (~1.6 GB with a workload): control plane with {pods} pods {:.3}x, all of rkube with {pods} pods {:.3}x",
        mb(cp_idle) / 510.0,
        mb(all_idle) / 510.0,
        mb(cp_loaded) / 1600.0,
        mb(all_loaded) / 1600.0
    );
}
