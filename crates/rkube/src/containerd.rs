//! rkube's own containerd instance: its config, root, state and socket under the data dir,
//! apart from any containerd that Docker or the system runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::join_all;
use rkube_kubelet::cri::CriRuntime;
use rkube_kubelet::runtime::{Runtime, annotations, labels};

use crate::layout::Layout;
use crate::process;

/// The configuration template shared with `scripts/containerd-config`.
const CONFIG_TEMPLATE: &str = include_str!("../../../deploy/containerd/config.toml");

/// The sandbox image containerd is configured with.
pub const PAUSE_IMAGE: &str = "rkube.local/pause:1.0";

/// The images imported at start: (archive in the images dir, name). The first is required.
const IMAGES: [(&str, &str); 2] = [
    ("pause.tar", PAUSE_IMAGE),
    ("busybox.tar", "rkube.local/busybox:1.0"),
];

/// The most time containers get between SIGTERM and SIGKILL when `rkube down` removes
/// them (their pod's terminationGracePeriodSeconds if shorter), as a node shutdown's.
pub const CONTAINER_STOP_GRACE: Duration = Duration::from_secs(10);

/// The configuration of the instance in `dir`: everything it keeps is under `dir`, laid
/// out as `scripts/containerd` lays it out.
pub fn config(dir: &Path) -> String {
    let path = |sub: &str| dir.join(sub).display().to_string();
    CONFIG_TEMPLATE
        .replace("{root}", &path("root"))
        .replace("{state}", &path("state"))
        .replace("{socket}", &path("containerd.sock"))
        .replace("{cni_conf}", &path("cni/net.d"))
        .replace("{certs}", &path("certs.d"))
}

/// Says what is missing for containerd to run pods here, if anything.
pub fn check_prerequisites() -> anyhow::Result<()> {
    for (tool, package) in [
        ("containerd", "containerd"),
        ("ctr", "containerd"),
        ("runc", "runc"),
    ] {
        if which(tool).is_none() {
            anyhow::bail!(
                "{tool} is missing: install the {package} package (scripts/install-deps does)"
            );
        }
    }
    if !Path::new("/usr/lib/cni/bridge").exists() {
        anyhow::bail!(
            "the CNI plugins are missing from /usr/lib/cni: install containernetworking-plugins (scripts/install-deps does)"
        );
    }
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// Starts the instance (unless it runs already) and imports the images from `images`.
pub async fn start(layout: &Layout, images: &Path) -> anyhow::Result<()> {
    let dir = layout.containerd();
    let socket = layout.containerd_socket();
    // A unix socket path must fit in sun_path (108 bytes), ".ttrpc" suffix included.
    if socket.as_os_str().len() + 6 >= 108 {
        anyhow::bail!(
            "{} is too long a path for containerd's sockets: choose a shorter --data-dir",
            dir.display()
        );
    }
    let pid_file = layout.pid_file("containerd");
    if process::running(&pid_file, "containerd").is_none() {
        for sub in ["root", "state", "cni/net.d"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config(&dir))
            .with_context(|| format!("writing {}", config_path.display()))?;
        for stale in [socket.clone(), dir.join("containerd.sock.ttrpc")] {
            let _ = std::fs::remove_file(stale);
        }
        let log = layout.log("containerd");
        let mut child = process::spawn(
            Path::new("containerd"),
            &["--config".into(), config_path.into()],
            &log,
            &pid_file,
        )?;
        let runtime = CriRuntime::connect(&socket.display().to_string())?;
        let start = Instant::now();
        loop {
            if socket.exists() && runtime.version().await.is_ok() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "containerd exited ({status}) while starting; its log ({}) ends:\n{}",
                    log.display(),
                    process::tail(&log, 15)
                );
            }
            if start.elapsed() > Duration::from_secs(30) {
                anyhow::bail!(
                    "containerd did not answer on {} within 30 s; its log is {}",
                    socket.display(),
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    import_images(&socket, images).await?;
    let runtime = CriRuntime::connect(&socket.display().to_string())?;
    runtime
        .check(Some(PAUSE_IMAGE))
        .await
        .with_context(|| format!("containerd at {}", socket.display()))?;
    Ok(())
}

/// Imports the images' archives (made by `scripts/build-images`) under their names.
async fn import_images(socket: &Path, images: &Path) -> anyhow::Result<()> {
    for (i, (archive, name)) in IMAGES.iter().enumerate() {
        let path = images.join(archive);
        if !path.exists() {
            if i == 0 {
                anyhow::bail!(
                    "no sandbox image archive at {}: build it with scripts/build-images (or point --images-dir at it)",
                    path.display()
                );
            }
            eprintln!(
                "rkube: no {} (so no {name} image): scripts/build-images makes it",
                path.display()
            );
            continue;
        }
        let base = name.rsplit_once(':').map_or(*name, |(base, _)| base);
        let out = tokio::process::Command::new("ctr")
            .arg("--address")
            .arg(socket)
            .args(["-n", "k8s.io", "images", "import", "--base-name", base])
            .arg(&path)
            .output()
            .await
            .context("running ctr")?;
        if !out.status.success() {
            anyhow::bail!(
                "importing {} into containerd failed: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

/// Stops and removes every sandbox and container the kubelet made (the kubelet must be
/// stopped first, or it starts them again): containers get SIGTERM and their pod's grace
/// period, at most [`CONTAINER_STOP_GRACE`], before SIGKILL, and removing the sandboxes
/// releases their pod IPs through CNI. Returns how many sandboxes were removed.
pub async fn remove_pods(socket: &Path) -> anyhow::Result<usize> {
    let runtime = CriRuntime::connect(&socket.display().to_string())?;
    let ours = |l: &std::collections::HashMap<String, String>| {
        l.get(labels::MANAGED_BY).map(String::as_str) == Some(labels::MANAGER)
    };
    let containers = runtime.list_containers(None).await?;
    let stops = containers
        .iter()
        .filter(|c| ours(&c.labels) && c.state == 1)
        .map(|c| {
            let grace = c
                .annotations
                .get(annotations::TERMINATION_GRACE)
                .and_then(|g| g.parse().ok())
                .map_or(CONTAINER_STOP_GRACE, |g| {
                    Duration::from_secs(g).min(CONTAINER_STOP_GRACE)
                });
            runtime.stop_container(&c.id, grace)
        });
    for r in join_all(stops).await {
        r.context("stopping a container")?;
    }
    let sandboxes = runtime.list_pod_sandboxes(None).await?;
    // All at once, as the containers: one at a time took 0.25 s a sandbox (CNI DEL).
    let removals = sandboxes.iter().filter(|s| ours(&s.labels)).map(|s| async {
        runtime.stop_pod_sandbox(&s.id).await?;
        runtime.remove_pod_sandbox(&s.id).await
    });
    let results = join_all(removals).await;
    let removed = results.len();
    for r in results {
        r.context("removing a pod sandbox")?;
    }
    Ok(removed)
}

/// Stops the instance: its pods first (see [`remove_pods`]), then containerd itself; shims
/// it left are killed.
pub async fn stop(layout: &Layout) -> anyhow::Result<()> {
    let socket = layout.containerd_socket();
    if let Some(pid) = process::running(&layout.pid_file("containerd"), "containerd") {
        match remove_pods(&socket).await {
            Ok(0) => {}
            Ok(n) => println!("rkube: removed {n} pod sandboxes"),
            Err(e) => eprintln!("rkube: removing pods through CRI failed: {e:#}"),
        }
        process::stop(pid, "containerd", Duration::from_secs(10)).await?;
    }
    // Shims outlive containerd by design: kill those of this instance.
    let needle = format!("-address\0{}\0", socket.display());
    for pid in pids_whose_cmdline_contains(needle.as_bytes()) {
        process::signal(pid, rustix::process::Signal::KILL)?;
    }
    Ok(())
}

fn pids_whose_cmdline_contains(needle: &[u8]) -> Vec<u32> {
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

/// Mount points under `dir` (deepest first), from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(dir) && p != dir)
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mount_path(field: &str) -> PathBuf {
    let mut out = Vec::with_capacity(field.len());
    let b = field.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(String::from_utf8_lossy(&out).into_owned())
}

/// Unmounts everything mounted under `dir` (pod volumes, sandbox namespaces, container
/// root filesystems), lazily.
pub fn unmount_under(dir: &Path) -> anyhow::Result<()> {
    for m in mounts_under(dir) {
        let status = std::process::Command::new("umount")
            .arg("-l")
            .arg(&m)
            .status()
            .context("running umount")?;
        if !status.success() {
            anyhow::bail!("umount -l {} failed", m.display());
        }
    }
    Ok(())
}

/// Deletes the node's pod bridge once no interface is attached to it (all sandboxes gone),
/// so a stopped node leaves no interface, address or route behind; the CNI bridge plugin
/// makes it again for the next pod. Returns whether it was deleted: not when it does not
/// exist or something else is still attached to it.
pub fn remove_bridge(name: &str) -> anyhow::Result<bool> {
    let ports = match std::fs::read_dir(Path::new("/sys/class/net").join(name).join("brif")) {
        Ok(ports) => ports.count(),
        // Not there, or not a bridge: not ours to delete.
        Err(_) => return Ok(false),
    };
    if ports > 0 {
        return Ok(false);
    }
    let out = std::process::Command::new("ip")
        .args(["link", "del", name])
        .output()
        .context("running ip")?;
    if !out.status.success() {
        anyhow::bail!(
            "deleting the bridge {name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_puts_everything_under_the_instance_dir() {
        let c = config(Path::new("/data/containerd"));
        assert!(!c.contains('{'), "{c}");
        assert!(c.contains("root = \"/data/containerd/root\""), "{c}");
        assert!(
            c.contains("address = \"/data/containerd/containerd.sock\""),
            "{c}"
        );
        assert!(
            c.contains("sandbox_image = \"rkube.local/pause:1.0\""),
            "{c}"
        );
        assert!(c.contains("restrict_oom_score_adj = true"), "{c}");
        assert!(
            c.contains("conf_dir = \"/data/containerd/cni/net.d\""),
            "{c}"
        );
    }

    #[test]
    fn the_config_is_what_scripts_containerd_writes() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/containerd-config");
        let d = "/data/containerd";
        let out = std::process::Command::new(script)
            .args([
                format!("{d}/root"),
                format!("{d}/state"),
                format!("{d}/containerd.sock"),
                format!("{d}/cni/net.d"),
                format!("{d}/certs.d"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8(out.stdout).unwrap(), config(Path::new(d)));
    }

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path("/a\\040b/c"), PathBuf::from("/a b/c"));
        assert_eq!(unescape_mount_path("/plain"), PathBuf::from("/plain"));
    }

    #[test]
    fn mounts_under_a_dir_without_mounts_are_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(mounts_under(dir.path()).is_empty());
        assert!(!mounts_under(Path::new("/")).contains(&PathBuf::from("/")));
    }
}
