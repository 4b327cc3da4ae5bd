//! `rkube up`, `status` and `down` on this machine, as root: rkube's own containerd and
//! every daemon as a process, a Deployment of busybox httpd served from its pod IPs, a down
//! that leaves nothing running or mounted and no sandbox in containerd, and an up that
//! resumes the same cluster.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use rkube_kubelet::cri::CriRuntime;
use rkube_kubelet::runtime::{Runtime, labels};
use rkube_testing::kubectl::Kubectl;
use rkube_testing::{eventually, try_eventually, where_pods_stand};
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn require_root() {
    assert!(
        is_root(),
        "rkube up runs containerd and a kubelet and needs root (scripts/test runs this as root)"
    );
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|v| v.split_whitespace().next() == Some("0"))
            })
        })
        .unwrap_or(false)
}

/// The daemons beside the rkube binary must be current: `cargo test --workspace` builds
/// them; `cargo test -p rkube` alone does not.
fn require_daemons(bin_dir: &Path) {
    for d in [
        "rkube-apiserver",
        "rkube-scheduler",
        "rkube-controller-manager",
        "rkube-kubelet",
        "rkube-proxy",
        "rkube-dns",
    ] {
        assert!(
            bin_dir.join(d).exists(),
            "{} is missing: cargo build -p {d} first",
            bin_dir.join(d).display()
        );
    }
}

struct Rkube {
    data: PathBuf,
    bin: PathBuf,
    images: PathBuf,
}

impl Rkube {
    async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(args).arg("--data-dir").arg(&self.data);
        if args[0] == "up" {
            cmd.args([
                "--free-ports",
                "--node-name",
                NODE,
                "--pod-cidr",
                "10.88.100.0/24",
                "--cni-bridge",
                "rkt100",
                "--images-dir",
            ])
            .arg(&self.images);
        }
        cmd.output().await.expect("rkube runs")
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "rkube {args:?} failed:\n{text}");
        text
    }
}

/// Stops the cluster when the test ends, failed or not, before its temp dir goes: a failed
/// test must not leave containerd, the daemons and their containers running.
struct DownOnDrop<'a>(&'a Rkube);

impl Drop for DownOnDrop<'_> {
    fn drop(&mut self) {
        if self.0.data.exists() {
            let _ = std::process::Command::new(&self.0.bin)
                .args(["down", "--purge", "--data-dir"])
                .arg(&self.0.data)
                .output();
        }
    }
}

/// Processes whose command line mentions `dir` (daemons, containerd, its shims).
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&needle).then_some(cmdline)
        })
        .collect()
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&needle))
        .map(str::to_string)
        .collect()
}

/// rkube's sandboxes and containers in the stopped instance's store: containerd started
/// alone on the instance's config, asked through CRI, and stopped again.
async fn sandboxes_left(data: &Path) -> (usize, usize) {
    let dir = data.join("containerd");
    let mut containerd = tokio::process::Command::new("containerd")
        .arg("--config")
        .arg(dir.join("config.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let runtime = CriRuntime::connect(&dir.join("containerd.sock").display().to_string()).unwrap();
    let ours = |l: &std::collections::HashMap<String, String>| {
        l.get(labels::MANAGED_BY).map(String::as_str) == Some(labels::MANAGER)
    };
    let found = eventually("containerd answers", Duration::from_secs(30), || async {
        let sandboxes = runtime
            .list_pod_sandboxes(None)
            .await
            .map_err(|e| e.to_string())?;
        let containers = runtime
            .list_containers(None)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((
            sandboxes.iter().filter(|s| ours(&s.labels)).count(),
            containers.iter().filter(|c| ours(&c.labels)).count(),
        ))
    })
    .await;
    containerd.kill().await.unwrap();
    found
}

/// The node's name.
const NODE: &str = "rkube-up-test";

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: httpd
        image: rkube.local/busybox:1.0
        command: [sh, -c, "echo hello from $(hostname) > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"]
        readinessProbe:
          httpGet: {path: /index.html, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: client
    image: rkube.local/busybox:1.0
    command: [sleep, "3600"]
"#;

/// Waits until the web Deployment's 3 pods are Running and Ready and each answers on its
/// pod IP (after a resume the API shows the old IPs until the kubelet has restarted the
/// pods); returns the IPs.
async fn serving_web_pods(kubectl: &Kubectl, data: &Path) -> Vec<String> {
    let serving = try_eventually("3 web pods serving", Duration::from_secs(90), || async {
        let pods = kubectl
            .run(&["get", "pods", "-l", "app=web", "-o", "json"])
            .await?;
        let pods: Value = serde_json::from_str(&pods).map_err(|e| e.to_string())?;
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        let ready: Vec<String> = items
            .iter()
            .filter(|p| {
                p["status"]["phase"] == "Running"
                    && p["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .map(|p| p["status"]["podIP"].as_str().unwrap_or("").to_string())
            .collect();
        if ready.len() != 3 || items.len() != 3 {
            return Err(format!("{} of {} pods ready", ready.len(), items.len()));
        }
        for ip in &ready {
            let body = http_get(ip).await.map_err(|e| format!("{ip}: {e}"))?;
            if !body.contains("hello from web-") {
                return Err(format!("{ip} answered {body:?}"));
            }
        }
        Ok(ready)
    })
    .await;
    match serving {
        Ok(ips) => ips,
        Err(e) => panic!("{e}\n{}", where_things_stand(data).await),
    }
}

/// The web Service answers on its ClusterIP from this machine, and from a pod its name
/// resolves to the ClusterIP (through rkube-dns behind the kube-dns Service) which
/// answers (through rkube-proxy).
async fn services_answer(kubectl: &Kubectl, data: &Path) {
    let svc = kubectl.json(&["get", "svc", "web"]).await;
    let cluster_ip = svc["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let by_ip = try_eventually(
        "the web Service on its ClusterIP",
        Duration::from_secs(30),
        || async {
            let body = http_get_port(&cluster_ip, 80)
                .await
                .map_err(|e| format!("{cluster_ip}:80: {e}"))?;
            body.contains("hello from web-")
                .then_some(())
                .ok_or_else(|| format!("{cluster_ip}:80 answered {body:?}"))
        },
    )
    .await;
    let by_name = match by_ip {
        Err(e) => Err(e),
        Ok(()) => {
            // busybox 1.35's wget crashes with -T: `timeout` bounds it instead.
            try_eventually(
                "the web Service by name from a pod",
                Duration::from_secs(60),
                || async {
                    let name = "web.default.svc.cluster.local";
                    let answer = kubectl
                        .run(&["exec", "client", "--", "nslookup", name])
                        .await?;
                    if !answer.contains(&format!("Address: {cluster_ip}")) {
                        return Err(format!("nslookup {name} answered {answer:?}"));
                    }
                    let url = format!("http://{cluster_ip}/index.html");
                    let body = kubectl
                        .run(&[
                            "exec", "client", "--", "timeout", "5", "wget", "-q", "-O", "-", &url,
                        ])
                        .await?;
                    body.contains("hello from web-")
                        .then_some(())
                        .ok_or_else(|| format!("{url} answered {body:?}"))
                },
            )
            .await
        }
    };
    if let Err(e) = by_name {
        panic!("{e}\n{}", where_things_stand(data).await);
    }
}

/// The nftables tables of rkube's daemons still on this machine.
fn nft_tables_of_rkube() -> Vec<String> {
    let out = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("rkube-proxy") || l.contains("rkube-podnet"))
        .map(str::to_string)
        .collect()
}

/// What a failed wait should show: where the pods stand (the node, each pod, the events)
/// and the end of every daemon's log.
async fn where_things_stand(data: &Path) -> String {
    let config = rkube_client::ClientConfig::from_kubeconfig(&data.join("apiserver/kubeconfig"));
    let client = match config {
        Ok(config) => rkube_client::Client::connect_with(&config).await,
        Err(e) => Err(e),
    };
    let mut out = match client {
        Ok(client) => where_pods_stand(&client, "default", NODE).await,
        Err(e) => format!("no client: {e}\n"),
    };
    let logs = data.join("logs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&logs)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        out.push_str(&format!("--- last 40 lines of {}\n{tail}\n", f.display()));
    }
    out
}

/// `GET /index.html` from `ip`:8080, within 3 s (a stale pod IP can take a minute to
/// refuse).
async fn http_get(ip: &str) -> std::io::Result<String> {
    http_get_port(ip, 8080).await
}

/// `GET /index.html` from `ip`:`port`, within 3 s.
async fn http_get_port(ip: &str, port: u16) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect((ip, port)).await?;
        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await?;
        let mut body = String::new();
        s.read_to_string(&mut body).await?;
        Ok(body)
    };
    tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_a_deployment_down_leaves_nothing_and_up_resumes_it() {
    require_root();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_rkube"));
    require_daemons(bin.parent().unwrap());
    let images = repo_root().join("target/images");
    let built = std::process::Command::new(repo_root().join("scripts/build-images"))
        .env("RKUBE_IMAGES_DIR", &images)
        .current_dir(repo_root())
        .status()
        .unwrap();
    assert!(built.success(), "scripts/build-images failed");
    // Short: containerd's socket path must fit in 108 bytes.
    let tmp = tempfile::Builder::new()
        .prefix("rku")
        .tempdir_in("/tmp")
        .unwrap();
    let data = tmp.path().join("d");
    let rkube = Rkube {
        data: data.clone(),
        bin,
        images,
    };
    let _down = DownOnDrop(&rkube);

    let out = rkube.ok(&["up"]).await;
    assert!(out.contains("rkube: cluster ready in"), "{out}");
    assert!(out.contains("export KUBECONFIG="), "{out}");
    let status = rkube.ok(&["status"]).await;
    for d in [
        "containerd",
        "apiserver",
        "scheduler",
        "controller-manager",
        "kubelet",
        "proxy",
        "dns",
    ] {
        let line = status
            .lines()
            .find(|l| l.starts_with(d))
            .unwrap_or_else(|| panic!("no {d} in:\n{status}"));
        assert!(
            line.contains("ready") || (d == "containerd" && line.contains("running")),
            "{status}"
        );
    }

    let kubectl = Kubectl::new(data.join("apiserver/kubeconfig"));
    let node = kubectl.json(&["get", "node", NODE]).await;
    assert_eq!(
        node["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .split("://")
            .next(),
        Some("containerd")
    );
    let out = kubectl.apply(WEB).await;
    assert!(out.contains("created"), "{out}");
    let ips = serving_web_pods(&kubectl, &data).await;
    assert!(ips.iter().all(|ip| ip.starts_with("10.88.100.")), "{ips:?}");
    services_answer(&kubectl, &data).await;

    assert!(
        Path::new("/sys/class/net/rkt100").exists(),
        "the pods' bridge"
    );
    let out = rkube.ok(&["down"]).await;
    assert!(out.contains("removed 4 pod sandboxes"), "{out}");
    assert!(out.contains("bridge rkt100 removed"), "{out}");
    assert!(out.contains("service rules removed"), "{out}");
    assert!(
        out.contains("pod network rules and routes removed"),
        "{out}"
    );
    assert_eq!(nft_tables_of_rkube(), Vec::<String>::new());
    assert!(
        !Path::new("/sys/class/net/rkt100").exists(),
        "down leaves the bridge"
    );
    assert_eq!(processes_under(&data), Vec::<String>::new());
    assert_eq!(mounts_under(&data), Vec::<String>::new());
    let status = rkube.run(&["status"]).await;
    assert!(
        !status.status.success(),
        "status of a stopped cluster fails"
    );
    assert_eq!(sandboxes_left(&data).await, (0, 0));

    // Up again: the same cluster, with its Deployment, serving again.
    let out = rkube.ok(&["up"]).await;
    assert!(out.contains("resuming the cluster"), "{out}");
    let deploy = kubectl.json(&["get", "deployment", "web"]).await;
    assert_eq!(deploy["spec"]["replicas"], 3);
    serving_web_pods(&kubectl, &data).await;

    services_answer(&kubectl, &data).await;

    rkube.ok(&["down", "--purge"]).await;
    assert!(!data.exists(), "--purge removes the data dir");
    assert_eq!(nft_tables_of_rkube(), Vec::<String>::new());
    assert!(
        !Path::new("/sys/class/net/rkt100").exists(),
        "down leaves the bridge"
    );
    assert_eq!(processes_under(&data), Vec::<String>::new());
    assert_eq!(mounts_under(&data), Vec::<String>::new());
}
