//! `rkube`: a local cluster on this machine. `rkube up` starts rkube's own containerd, the
//! apiserver, scheduler, controller manager and kubelet as separate processes under one
//! data dir and returns once the node is Ready; `rkube status` shows them; `rkube down`
//! stops them.

mod containerd;
mod daemons;
mod layout;
mod network;
mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use daemons::Daemon;
use layout::{Layout, Settings};

/// rkube: a local Kubernetes-compatible cluster on this machine.
#[derive(Debug, Parser)]
#[command(name = "rkube", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the cluster in the data dir (or resume it) and wait until it is ready.
    Up(UpArgs),
    /// Show each daemon's pid, health and log file.
    Status(DataDir),
    /// Stop the cluster: pods, daemons and containerd.
    Down(DownArgs),
}

#[derive(Debug, Args)]
struct DataDir {
    /// Where the cluster keeps everything: store, kubeconfig, containerd, logs.
    #[arg(long, default_value = ".rkube")]
    data_dir: PathBuf,
}

#[derive(Debug, Args)]
struct UpArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Stay attached; Ctrl-C stops the cluster.
    #[arg(long)]
    foreground: bool,
    /// Simulated nodes to add (a kubelet process of their own; 0 for none).
    #[arg(long)]
    hollow_nodes: Option<u32>,
    /// The apiserver's port (on 127.0.0.1), on first start.
    #[arg(long, default_value_t = 6443)]
    port: u16,
    /// Pick free ports for every daemon instead of the upstream defaults (6443, 10259,
    /// 10257, 10248, 10250), on first start; for clusters side by side.
    #[arg(long)]
    free_ports: bool,
    /// This machine's node name, on first start (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// The node's pod CIDR, on first start.
    #[arg(long, default_value = "10.88.0.0/24")]
    pod_cidr: String,
    /// The node's CNI bridge, on first start.
    #[arg(long, default_value = "rkube0")]
    cni_bridge: String,
    /// Where the daemons' binaries are (default: beside this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where the image archives of `scripts/build-images` are (default: `images` beside the
    /// binaries' directory, i.e. target/images for target/release).
    #[arg(long)]
    images_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct DownArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Also delete the data dir: every object, certificate and log.
    #[arg(long)]
    purge: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rkube: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up(args).await,
            Command::Status(dir) => status(&dir.data_dir).await,
            Command::Down(args) => down(&args.dir.data_dir, args.purge).await,
        }
    });
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("rkube: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A free port on 127.0.0.1 (free when asked; the daemon binds it a moment later).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The settings of a first start.
fn first_settings(args: &UpArgs) -> anyhow::Result<Settings> {
    let local = |port: u16| -> anyhow::Result<SocketAddr> {
        let port = if args.free_ports { free_port()? } else { port };
        Ok(SocketAddr::from(([127, 0, 0, 1], port)))
    };
    Ok(Settings {
        apiserver_port: if args.free_ports {
            free_port()?
        } else {
            args.port
        },
        scheduler_health: local(10259)?,
        controller_manager_health: local(10257)?,
        real_node: is_root(),
        node_name: args.node_name.clone().unwrap_or_else(host_name),
        kubelet_health: local(10248)?,
        kubelet_port: if args.free_ports { free_port()? } else { 10250 },
        pod_cidr: args.pod_cidr.clone(),
        cni_bridge: args.cni_bridge.clone(),
        hollow_nodes: args.hollow_nodes.unwrap_or(0),
        hollow_health: local(10247)?,
        proxy_health: local(10249)?,
        dns_port: if args.free_ports {
            free_port()?
        } else {
            layout::DEFAULT_DNS_PORT
        },
        dns_health: local(9153)?,
    })
}

async fn up(args: UpArgs) -> anyhow::Result<bool> {
    let started = Instant::now();
    let layout = Layout::new(&args.dir.data_dir)?;
    let (mut settings, resumed) = match Settings::load(&layout)? {
        Some(s) => (s, true),
        None => (first_settings(&args)?, false),
    };
    if let Some(n) = args.hollow_nodes {
        settings.hollow_nodes = n;
    }
    if settings.real_node && !is_root() {
        anyhow::bail!(
            "the cluster in {} runs a node on this machine (containerd and a kubelet), which needs root: run rkube up as root",
            layout.root.display()
        );
    }
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the rkube binary has no directory")?
            .to_path_buf(),
    };
    let wanted = Daemon::wanted(&settings);
    for d in &wanted {
        let path = bin_dir.join(d.binary());
        if !path.is_file() {
            anyhow::bail!(
                "{} is missing: build the daemons first (cargo build --release -p rkube-apiserver -p rkube-scheduler -p rkube-controller-manager -p rkube-kubelet -p rkube-proxy -p rkube-dns -p rkube) or pass --bin-dir",
                path.display()
            );
        }
    }
    if args.foreground
        && let Some(d) = wanted
            .iter()
            .find(|d| process::running(&layout.pid_file(d.name()), d.binary()).is_some())
    {
        anyhow::bail!(
            "the {} of this cluster runs already: rkube up --foreground starts a stopped cluster (rkube down first)",
            d.name()
        );
    }
    settings.save(&layout)?;
    println!(
        "rkube: {} the cluster in {}",
        if resumed { "resuming" } else { "creating" },
        layout.root.display()
    );
    if !settings.real_node {
        println!(
            "rkube: not root, so no containerd and no kubelet on this machine: pods stay Pending{}",
            if settings.hollow_nodes > 0 {
                " unless they land on a hollow node"
            } else {
                " (run rkube up as root for a real node, or add --hollow-nodes N)"
            }
        );
    }
    if settings.real_node {
        containerd::check_prerequisites()?;
        let images = match &args.images_dir {
            Some(d) => d.clone(),
            None => bin_dir
                .parent()
                .map_or_else(|| bin_dir.join("images"), |p| p.join("images")),
        };
        containerd::start(&layout, &images).await?;
        println!(
            "rkube: containerd ready on {}",
            layout.containerd_socket().display()
        );
    }

    let node_ip = daemons::node_ip();
    let mut children = Vec::new();
    for d in wanted {
        let pid_file = layout.pid_file(d.name());
        let mut child = None;
        match process::running(&pid_file, d.binary()) {
            Some(pid) => println!("rkube: {} runs already (pid {pid})", d.name()),
            None => {
                let c = process::spawn(
                    &bin_dir.join(d.binary()),
                    &d.args(&layout, &settings, node_ip),
                    &layout.log(d.name()),
                    &pid_file,
                )?;
                child = Some(c);
            }
        }
        wait_ready(d, &layout, &settings, child.as_mut()).await?;
        println!("rkube: {} ready", d.name());
        if let Some(c) = child {
            children.push((d, c));
        }
    }
    wait_nodes(&layout, &settings).await?;
    let kubeconfig = layout.kubeconfig();
    println!(
        "rkube: cluster ready in {:.1} s\n\n  export KUBECONFIG={}\n  kubectl get nodes -o wide\n  kubectl create deployment web --image=rkube.local/busybox:1.0 --replicas=2 -- httpd -f -p 8080\n\n{}",
        started.elapsed().as_secs_f64(),
        kubeconfig.display(),
        if args.foreground {
            "Ctrl-C stops the cluster."
        } else {
            "rkube status shows the daemons and their logs; rkube down stops them."
        }
    );
    if !args.foreground {
        return Ok(true);
    }
    let exited = wait_for_stop(&mut children).await?;
    let ok = down(&layout.root, false).await?;
    Ok(ok && exited.is_none())
}

/// Waits until `d` is ready: 60 s, or less if its process exits.
async fn wait_ready(
    d: Daemon,
    layout: &Layout,
    settings: &Settings,
    mut child: Option<&mut tokio::process::Child>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let log = layout.log(d.name());
    loop {
        let why = match d.ready(layout, settings).await {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        if let Some(c) = child.as_deref_mut()
            && let Some(status) = c.try_wait()?
        {
            anyhow::bail!(
                "{} exited ({status}) while starting; its log ({}) ends:\n{}",
                d.name(),
                log.display(),
                process::tail(&log, 15)
            );
        }
        if start.elapsed() > Duration::from_secs(60) {
            anyhow::bail!(
                "{} is not ready after 60 s: {why}; its log is {} (rkube down stops what started)",
                d.name(),
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the real node and every hollow node are Ready.
async fn wait_nodes(layout: &Layout, settings: &Settings) -> anyhow::Result<()> {
    let client = daemons::client(layout)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to the apiserver: {e}"))?;
    let start = Instant::now();
    // Hollow nodes register at about 1,000 a second here; allow for a slow machine.
    let deadline =
        Duration::from_secs(90) + Duration::from_millis(u64::from(settings.hollow_nodes) * 5);
    loop {
        let mut waiting = Vec::new();
        if settings.real_node {
            match daemons::ready_nodes(&client, &settings.node_name).await {
                Ok((1, 1)) => {}
                Ok(_) => waiting.push(format!(
                    "node {} is not Ready and untainted",
                    settings.node_name
                )),
                Err(e) => waiting.push(e),
            }
        }
        if settings.hollow_nodes > 0 {
            match daemons::ready_nodes(&client, "hollow-").await {
                Ok((ready, _)) if ready >= settings.hollow_nodes as usize => {}
                Ok((ready, _)) => waiting.push(format!(
                    "{ready} of {} hollow nodes Ready and untainted",
                    settings.hollow_nodes
                )),
                Err(e) => waiting.push(e),
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if start.elapsed() > deadline {
            anyhow::bail!(
                "{} after {} s (kubelet logs: {})",
                waiting.join("; "),
                deadline.as_secs(),
                layout.log("kubelet").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// In the foreground: waits for Ctrl-C or SIGTERM, or for a daemon to exit (returned).
async fn wait_for_stop(
    children: &mut [(Daemon, tokio::process::Child)],
) -> anyhow::Result<Option<Daemon>> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let exits = futures::future::select_all(
        children
            .iter_mut()
            .map(|(d, c)| Box::pin(async move { (*d, c.wait().await) })),
    );
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {
            println!("\nrkube: stopping");
            Ok(None)
        }
        _ = term.recv() => Ok(None),
        ((d, status), _, _) = exits => {
            eprintln!("rkube: {} exited ({}); stopping the cluster", d.name(), status.map_or_else(|e| e.to_string(), |s| s.to_string()));
            Ok(Some(d))
        }
    }
}

async fn status(data_dir: &Path) -> anyhow::Result<bool> {
    let layout = Layout::new(data_dir)?;
    let Some(settings) = Settings::load(&layout)? else {
        anyhow::bail!(
            "no cluster in {} (rkube up creates one)",
            layout.root.display()
        );
    };
    println!(
        "cluster in {} (kubeconfig {})",
        layout.root.display(),
        layout.kubeconfig().display()
    );
    println!("{:<20} {:<8} {:<40} LOG", "DAEMON", "PID", "HEALTH");
    let mut all_well = true;
    let row = |name: &str, pid: Option<u32>, health: String, log: PathBuf| {
        let pid = pid.map_or_else(|| "-".to_string(), |p| p.to_string());
        println!("{name:<20} {pid:<8} {health:<40} {}", log.display());
    };
    if settings.real_node {
        let pid = process::running(&layout.pid_file("containerd"), "containerd");
        all_well &= pid.is_some();
        let health = if pid.is_some() { "running" } else { "stopped" };
        row("containerd", pid, health.into(), layout.log("containerd"));
    }
    for d in Daemon::wanted(&settings) {
        let pid = process::running(&layout.pid_file(d.name()), d.binary());
        let health = match pid {
            None => "stopped".to_string(),
            Some(_) => match d.ready(&layout, &settings).await {
                Ok(()) => "ready".to_string(),
                Err(why) => format!("not ready: {why}"),
            },
        };
        all_well &= health == "ready";
        row(d.name(), pid, health, layout.log(d.name()));
    }
    Ok(all_well)
}

async fn down(data_dir: &Path, purge: bool) -> anyhow::Result<bool> {
    let layout = Layout::new(data_dir)?;
    let Some(settings) = Settings::load(&layout)? else {
        println!("rkube: no cluster in {}", layout.root.display());
        return Ok(true);
    };
    if settings.real_node && !is_root() {
        anyhow::bail!(
            "the cluster in {} runs a node on this machine, which needs root to stop: run rkube down as root",
            layout.root.display()
        );
    }
    for d in Daemon::STOP_ORDER {
        let pid_file = layout.pid_file(d.name());
        if let Some(pid) = process::running(&pid_file, d.binary()) {
            let killed = process::stop(pid, d.binary(), Duration::from_secs(30)).await?;
            println!(
                "rkube: {} stopped{}",
                d.name(),
                if killed { " (killed after 30 s)" } else { "" }
            );
        }
        let _ = std::fs::remove_file(&pid_file);
        // With the kubelet gone, its pods can go without being started again.
        if d == Daemon::Kubelet && settings.real_node {
            containerd::stop(&layout).await?;
            let _ = std::fs::remove_file(layout.pid_file("containerd"));
            println!("rkube: containerd stopped");
            if containerd::remove_bridge(&settings.cni_bridge)? {
                println!("rkube: bridge {} removed", settings.cni_bridge);
            }
            if network::remove_pod_network() {
                println!("rkube: pod network rules and routes removed");
            }
        }
        if d == Daemon::Proxy && settings.real_node {
            let bin_dir = std::env::current_exe()?
                .parent()
                .context("the rkube binary has no directory")?
                .to_path_buf();
            if network::remove_proxy_rules(&bin_dir)? {
                println!("rkube: service rules removed (rkube-proxy --cleanup)");
            }
        }
    }
    containerd::unmount_under(&layout.root)?;
    if purge {
        std::fs::remove_dir_all(&layout.root)
            .with_context(|| format!("removing {}", layout.root.display()))?;
        println!("rkube: removed {}", layout.root.display());
    }
    Ok(true)
}
