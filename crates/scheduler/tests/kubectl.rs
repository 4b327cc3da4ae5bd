//! The scheduler end to end, driven the way users drive it: a real apiserver, a real
//! `rkube-scheduler` process, and the stock `kubectl` creating nodes and pods and reading
//! back where they landed and the events that explain why.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rkube_testing::{DaemonProcess, TestApiserver, eventually};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(60);

struct Kubectl {
    kubeconfig: PathBuf,
}

impl Kubectl {
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("kubectl not runnable: {e}"))?;
        if let Some(mut input) = child.stdin.take() {
            if let Some(text) = stdin {
                input
                    .write_all(text.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            drop(input);
        }
        let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    async fn apply(&self, yaml: &str) {
        self.run(&["apply", "-f", "-"], Some(yaml))
            .await
            .expect("kubectl apply");
    }

    /// Creates a node and sets its allocatable through the status subresource, as a
    /// kubelet would.
    async fn node(&self, name: &str, labels: &[(&str, &str)], taint: Option<&str>, cpu: &str) {
        let mut label_lines = format!("    kubernetes.io/hostname: {name}\n");
        for (k, v) in labels {
            label_lines.push_str(&format!("    {k}: {v}\n"));
        }
        let taints = match taint {
            Some(t) => {
                let (kv, effect) = t.split_once(':').expect("key=value:effect");
                let (k, v) = kv.split_once('=').expect("key=value");
                format!("spec:\n  taints:\n  - key: {k}\n    value: {v}\n    effect: {effect}\n")
            }
            None => String::new(),
        };
        self.apply(&format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n{label_lines}{taints}"
        ))
        .await;
        let status = format!(
            r#"{{"status":{{"allocatable":{{"cpu":"{cpu}","memory":"8Gi","pods":"110"}},"capacity":{{"cpu":"{cpu}","memory":"8Gi","pods":"110"}}}}}}"#
        );
        self.run(
            &[
                "patch",
                "node",
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status,
            ],
            None,
        )
        .await
        .expect("kubectl patch node status");
    }

    async fn pod_json(&self, name: &str) -> Result<Value, String> {
        let out = self.run(&["get", "pod", name, "-o", "json"], None).await?;
        serde_json::from_str(&out).map_err(|e| e.to_string())
    }

    async fn wait_bound(&self, name: &str) -> String {
        eventually(&format!("pod {name} bound to a node"), WAIT, || async {
            let pod = self.pod_json(name).await?;
            match pod["spec"]["nodeName"].as_str() {
                Some(node) if !node.is_empty() => Ok(node.to_string()),
                _ => Err(format!(
                    "unbound; conditions {}",
                    pod["status"]["conditions"]
                )),
            }
        })
        .await
    }

    /// Waits for an event about `pod` with `reason` whose message contains `text`.
    async fn wait_event(&self, pod: &str, reason: &str, text: &str) -> String {
        eventually(
            &format!("a {reason} event for {pod} containing {text:?}"),
            WAIT,
            || async {
                let selector = format!("involvedObject.name={pod}");
                let out = self
                    .run(
                        &["get", "events", "--field-selector", &selector, "-o", "json"],
                        None,
                    )
                    .await?;
                let list: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
                let messages: Vec<String> = list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|e| e["reason"] == reason)
                    .filter_map(|e| e["message"].as_str().map(str::to_string))
                    .collect();
                messages
                    .iter()
                    .find(|m| m.contains(text))
                    .cloned()
                    .ok_or_else(|| format!("{reason} events: {messages:?}"))
            },
        )
        .await
    }
}

fn pod_yaml(name: &str, body: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n{body}")
}

fn scheduler_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rkube-scheduler"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_users_see_pods_placed_by_the_rules() {
    let server = TestApiserver::start_sled().await;
    let kubeconfig = server
        .running()
        .kubeconfig
        .clone()
        .expect("a sled apiserver writes a kubeconfig");
    let k = Kubectl {
        kubeconfig: kubeconfig.clone(),
    };
    let scheduler =
        DaemonProcess::spawn(scheduler_binary(), &kubeconfig, &["--leader-elect=false"])
            .await
            .expect("scheduler starts");

    let zone = "topology.kubernetes.io/zone";
    k.node("node-a", &[(zone, "z1"), ("disk", "ssd")], None, "4")
        .await;
    k.node("node-b", &[(zone, "z1")], None, "4").await;
    k.node(
        "node-c",
        &[(zone, "z2")],
        Some("dedicated=gpu:NoSchedule"),
        "4",
    )
    .await;
    k.node("node-d", &[(zone, "z2")], None, "4").await;

    // nodeSelector.
    k.apply(&pod_yaml(
        "ssd",
        "spec:\n  nodeSelector:\n    disk: ssd\n  containers:\n  - name: c\n    image: docker.io/library/busybox:latest\n",
    ))
    .await;
    assert_eq!(k.wait_bound("ssd").await, "node-a");
    k.wait_event(
        "ssd",
        "Scheduled",
        "Successfully assigned default/ssd to node-a",
    )
    .await;

    // A taint keeps out pods that do not tolerate it, with upstream's summary.
    k.apply(&pod_yaml(
        "no-toleration",
        "spec:\n  nodeSelector:\n    kubernetes.io/hostname: node-c\n  containers:\n  - name: c\n    image: docker.io/library/busybox:latest\n",
    ))
    .await;
    k.wait_event(
        "no-toleration",
        "FailedScheduling",
        "0/4 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 3 node(s) didn't match Pod's node affinity/selector.",
    )
    .await;
    let pod = k.pod_json("no-toleration").await.expect("pod");
    let scheduled = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "PodScheduled")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (scheduled["status"].as_str(), scheduled["reason"].as_str()),
        (Some("False"), Some("Unschedulable")),
        "PodScheduled condition: {scheduled}"
    );
    k.apply(&pod_yaml(
        "tolerates",
        "spec:\n  nodeSelector:\n    kubernetes.io/hostname: node-c\n  tolerations:\n  - key: dedicated\n    operator: Equal\n    value: gpu\n    effect: NoSchedule\n  containers:\n  - name: c\n    image: docker.io/library/busybox:latest\n",
    ))
    .await;
    assert_eq!(k.wait_bound("tolerates").await, "node-c");

    // Required anti-affinity per host: one web pod per untainted node, the fourth waits.
    let web = "  labels:\n    app: web\nspec:\n  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector:\n          matchLabels:\n            app: web\n        topologyKey: kubernetes.io/hostname\n  containers:\n  - name: c\n    image: docker.io/library/busybox:latest\n";
    let mut hosts = Vec::new();
    for i in 0..3 {
        k.apply(&pod_yaml(&format!("web-{i}"), web)).await;
        hosts.push(k.wait_bound(&format!("web-{i}")).await);
    }
    hosts.sort();
    assert_eq!(hosts, ["node-a", "node-b", "node-d"]);
    k.apply(&pod_yaml("web-3", web)).await;
    k.wait_event(
        "web-3",
        "FailedScheduling",
        "0/4 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 3 node(s) didn't match pod anti-affinity rules.",
    )
    .await;
    // A fitting node appears: the waiting pod goes there.
    k.node("node-e", &[(zone, "z3")], None, "4").await;
    assert_eq!(k.wait_bound("web-3").await, "node-e");

    // Spread over zones with maxSkew 1 (every node tolerated, so every zone counts).
    let spread = "  labels:\n    app: spread\nspec:\n  tolerations:\n  - operator: Exists\n  topologySpreadConstraints:\n  - maxSkew: 1\n    topologyKey: topology.kubernetes.io/zone\n    whenUnsatisfiable: DoNotSchedule\n    labelSelector:\n      matchLabels:\n        app: spread\n  containers:\n  - name: c\n    image: docker.io/library/busybox:latest\n";
    let mut per_zone = std::collections::BTreeMap::<String, i32>::new();
    for i in 0..6 {
        k.apply(&pod_yaml(&format!("spread-{i}"), spread)).await;
        let node = k.wait_bound(&format!("spread-{i}")).await;
        let z = match node.as_str() {
            "node-a" | "node-b" => "z1",
            "node-c" | "node-d" => "z2",
            _ => "z3",
        };
        *per_zone.entry(z.to_string()).or_default() += 1;
        let counts: Vec<i32> = ["z1", "z2", "z3"]
            .iter()
            .map(|z| per_zone.get(*z).copied().unwrap_or(0))
            .collect();
        let skew = counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0);
        assert!(skew <= 1, "zone counts {counts:?} after spread-{i}");
    }

    // Too big for every node, until a big one joins.
    k.apply(&pod_yaml(
        "big",
        "spec:\n  containers:\n  - name: c\n    image: docker.io/library/busybox:latest\n    resources:\n      requests:\n        cpu: \"6\"\n",
    ))
    .await;
    k.wait_event(
        "big",
        "FailedScheduling",
        "0/5 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 4 Insufficient cpu.",
    )
    .await;
    k.node("node-big", &[(zone, "z3")], None, "8").await;
    assert_eq!(k.wait_bound("big").await, "node-big");

    // Preemption: a full pool node, a low-priority pod on it, a high-priority pod that
    // needs its room.
    k.node("node-pool", &[("pool", "p")], None, "2").await;
    k.apply("apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: high\nvalue: 1000\n")
        .await;
    let pool_pod = |name: &str, class: &str| {
        pod_yaml(
            name,
            &format!(
                "spec:\n{class}  terminationGracePeriodSeconds: 0\n  nodeSelector:\n    pool: p\n  containers:\n  - name: c\n    image: docker.io/library/busybox:latest\n    resources:\n      requests:\n        cpu: \"2\"\n"
            ),
        )
    };
    k.apply(&pool_pod("low", "")).await;
    assert_eq!(k.wait_bound("low").await, "node-pool");
    k.apply(&pool_pod("high", "  priorityClassName: high\n"))
        .await;
    let high = k.pod_json("high").await.expect("high");
    assert_eq!(
        high["spec"]["priority"], 1000,
        "priority admission resolved the class"
    );
    k.wait_event("low", "Preempted", "on node node-pool").await;
    assert_eq!(k.wait_bound("high").await, "node-pool");
    eventually("the victim deleted", WAIT, || async {
        match k.pod_json("low").await {
            Err(e) if e.contains("NotFound") => Ok(()),
            Err(e) => Err(e),
            Ok(p) => Err(format!(
                "still there: deletionTimestamp {}",
                p["metadata"]["deletionTimestamp"]
            )),
        }
    })
    .await;

    // Health, readiness and the metrics a scheduler dashboard reads.
    assert_eq!(scheduler.http_get("/healthz").await.expect("healthz"), "ok");
    assert_eq!(scheduler.http_get("/readyz").await.expect("readyz"), "ok");
    let metrics = scheduler.http_get("/metrics").await.expect("metrics");
    for needle in [
        "scheduler_schedule_attempts_total{result=\"scheduled\",profile=\"default-scheduler\"}",
        "scheduler_schedule_attempts_total{result=\"unschedulable\",profile=\"default-scheduler\"}",
        "scheduler_pod_scheduling_sli_duration_seconds_bucket",
        "scheduler_pending_pods{queue=\"unschedulable\"}",
        "scheduler_preemption_victims_count 1",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle:?}:\n{metrics}"
        );
    }

    server.shutdown().await;
}
