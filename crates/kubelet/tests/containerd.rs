//! The kubelet on real containerd: pods run, serve, log, exec, restart, back off, probe,
//! terminate gracefully, mount configMaps and secrets, pull from a registry, survive a
//! kubelet restart, and a Deployment through the whole control plane leaves no sandboxes.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use rkube_client::{Api, DeleteParams, Patch, PostParams};
use rkube_kubelet::runtime::{Runtime, labels};
use rkube_testing::{TestApiserver, eventually, try_eventually, where_pods_stand};
use serde_json::{Value, json};
use support::RealNode;

const BUSYBOX: &str = "rkube.local/busybox:1.0";

async fn apiserver() -> (TestApiserver, std::path::PathBuf) {
    let api = TestApiserver::start_sled().await;
    let kubeconfig = api.running().kubeconfig.clone().unwrap();
    (api, kubeconfig)
}

async fn create_pod(api: &Api<Pod>, pod: Value) -> Pod {
    let pod: Pod = serde_json::from_value(pod).unwrap();
    api.create_with(&pod, &PostParams::default()).await.unwrap()
}

fn status(p: &Pod) -> Value {
    serde_json::to_value(p.status.clone().unwrap_or_default()).unwrap()
}

fn container(p: &Pod, i: usize) -> Value {
    status(p)["containerStatuses"][i].clone()
}

fn ready(p: &Pod) -> bool {
    status(p)["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

async fn wait_pod<F: Fn(&Pod) -> bool>(
    api: &Api<Pod>,
    name: &str,
    what: &str,
    timeout: Duration,
    f: F,
) -> Pod {
    eventually(what, timeout, || async {
        let p = api.get(name).await.map_err(|e| e.to_string())?;
        if f(&p) {
            Ok(p)
        } else {
            Err(status(&p).to_string())
        }
    })
    .await
}

async fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new("/usr/bin/kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn http_get(ip: &str, port: u16) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((ip, port))
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .await
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_pod_runs_serves_logs_execs_and_restarts() {
    let _serial = support::SERIAL.lock().await;
    let (server, kubeconfig) = apiserver().await;
    let node = RealNode::start(&kubeconfig, "real-1", 1).await;
    let client = server.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(
        &serde_json::from_value(json!({"metadata": {"name": "web"},
        "data": {"index.html": "hello from a configmap\n", "greeting": "hi"}}))
        .unwrap(),
    )
    .await
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    secrets
        .create(
            &serde_json::from_value(json!({"metadata": {"name": "web"},
            "stringData": {"password": "s3cret"}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create_pod(&pods, json!({
        "metadata": {"name": "web"},
        "spec": {
            "nodeName": "real-1",
            "containers": [{
                "name": "web", "image": BUSYBOX,
                "command": ["sh", "-c", "echo started $(GREETING) $PASSWORD; exec httpd -f -vv -p 8080 -h /www"],
                "env": [
                    {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "web", "key": "greeting"}}},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "web", "key": "password"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
                ],
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                "volumeMounts": [{"name": "www", "mountPath": "/www"},
                                 {"name": "secret", "mountPath": "/etc/secret"}]
            }],
            "volumes": [{"name": "www", "configMap": {"name": "web"}},
                        {"name": "secret", "secret": {"secretName": "web"}}]
        }
    }))
    .await;
    create_pod(
        &pods,
        json!({"metadata": {"name": "orphan"}, "spec": {"nodeName": "real-1",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": BUSYBOX, "command": ["sleep", "3600"]}]}}),
    )
    .await;
    let pod = wait_pod(
        &pods,
        "web",
        "the web pod Running and Ready",
        Duration::from_secs(60),
        |p| status(p)["phase"] == "Running" && ready(p),
    )
    .await;
    let ip = status(&pod)["podIP"].as_str().unwrap().to_string();
    assert!(
        ip.starts_with("10.88.1."),
        "pod IP {ip} is on the node's pod CIDR"
    );
    assert_eq!(status(&pod)["hostIP"], "127.0.0.1");
    let page = http_get(&ip, 8080).await.unwrap();
    assert!(
        page.contains("hello from a configmap"),
        "the host reaches the pod: {page}"
    );

    // Cluster DNS settings from --cluster-dns and --cluster-domain.
    let (code, resolv, _) = kubectl(
        &kubeconfig,
        &["exec", "web", "--", "cat", "/etc/resolv.conf"],
    )
    .await;
    assert_eq!(code, 0);
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("ndots:5"), "{resolv}");

    // An updated ConfigMap reaches the running container's volume (--sync-frequency 2s).
    cms.patch(
        "web",
        &Patch::Merge(json!({"data": {"index.html": "updated content\n"}})),
    )
    .await
    .unwrap();
    eventually(
        "the updated ConfigMap served",
        Duration::from_secs(60),
        || {
            let ip = ip.clone();
            async move {
                let page = http_get(&ip, 8080).await?;
                if page.contains("updated content") {
                    Ok(())
                } else {
                    Err(page)
                }
            }
        },
    )
    .await;

    // Logs, through the apiserver and the kubelet.
    let (code, out, err) = kubectl(&kubeconfig, &["logs", "web"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("started hi s3cret"), "logs: {out}");
    // Follow: a new request shows up in the followed stream.
    let mut follow = tokio::process::Command::new("/usr/bin/kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["logs", "-f", "web"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = follow.stdout.take().unwrap();
    let reader = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while !seen.contains("/followed-path") {
            let n = stdout.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        seen
    });
    eventually(
        "a request to show in `kubectl logs -f`",
        Duration::from_secs(20),
        || {
            let ip = ip.clone();
            let done = reader.is_finished();
            async move {
                if done {
                    return Ok(());
                }
                let _ = tokio::net::TcpStream::connect((ip.as_str(), 8080))
                    .await
                    .map(|mut s| {
                        tokio::spawn(async move {
                            use tokio::io::AsyncWriteExt;
                            let _ = s.write_all(b"GET /followed-path HTTP/1.0\r\n\r\n").await;
                        })
                    });
                Err("not yet".to_string())
            }
        },
    )
    .await;
    let followed = reader.await.unwrap();
    assert!(followed.contains("/followed-path"), "followed: {followed}");
    drop(follow);

    // Exec, with the command's exit code.
    let (code, out, _) = kubectl(
        &kubeconfig,
        &["exec", "web", "--", "cat", "/etc/secret/password"],
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "s3cret"));
    let (code, _, _) = kubectl(&kubeconfig, &["exec", "web", "--", "sh", "-c", "exit 3"]).await;
    // Interactive: stdin reaches the command through containerd's streaming server.
    let mut interactive = tokio::process::Command::new("/usr/bin/kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "exec",
            "-i",
            "web",
            "--",
            "sh",
            "-c",
            "read line; echo got $line; exit 4",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = interactive.stdin.take().unwrap();
        stdin.write_all(b"hello\n").await.unwrap();
        // Keep stdin open: the command ends on its own after one line.
        let out = tokio::time::timeout(Duration::from_secs(30), interactive.wait_with_output())
            .await
            .expect("interactive exec ends")
            .unwrap();
        drop(stdin);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "got hello\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(4));
    }
    assert_eq!(code, 3, "kubectl exec returns the command's exit code");

    // Killing the container's process restarts it, counting the restart.
    let id = container(&pod, 0)["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("containerd://")
        .to_string();
    let pid = node
        .container_pid(&id)
        .expect("the container's task has a pid");
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let pod = wait_pod(
        &pods,
        "web",
        "the killed container restarted",
        Duration::from_secs(30),
        |p| {
            container(p, 0)["restartCount"] == 1
                && container(p, 0)["state"]["running"].is_object()
                && ready(p)
        },
    )
    .await;
    assert_eq!(
        container(&pod, 0)["lastState"]["terminated"]["exitCode"],
        137
    );
    let (code, out, _) = kubectl(&kubeconfig, &["logs", "web", "--previous"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("started hi"), "previous logs: {out}");

    // Restarting the kubelet adopts the running container, cleans up after a pod deleted
    // while it was down, and leaves alone a sandbox it did not create.
    let mut node = node;
    wait_pod(
        &pods,
        "orphan",
        "the orphan pod running",
        Duration::from_secs(30),
        |p| status(p)["phase"] == "Running",
    )
    .await;
    assert_eq!(node.sandboxes().await, 2);
    node.kill_kubelet().await;
    pods.delete("orphan", &DeleteParams::immediate())
        .await
        .unwrap();
    let foreign = node
        .cri()
        .run_pod_sandbox(support::foreign_sandbox_config())
        .await
        .unwrap();
    node.start_kubelet().await;
    eventually(
        "the orphan's sandbox removed",
        Duration::from_secs(30),
        || async {
            match node.sandboxes().await {
                1 => Ok(()),
                n => Err(format!("{n} rkube sandboxes")),
            }
        },
    )
    .await;
    let before = container(&pod, 0)["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("containerd://")
        .to_string();
    let running: Vec<String> = node
        .cri()
        .list_containers(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.state == 1 && c.labels.contains_key(labels::MANAGED_BY))
        .map(|c| c.id)
        .collect();
    assert_eq!(
        running,
        [before],
        "the web container was adopted, not recreated"
    );
    let p = pods.get("web").await.unwrap();
    assert_eq!(
        container(&p, 0)["restartCount"],
        1,
        "the restart count carries over"
    );
    let cri = node.cri();
    let foreign_status = cri.pod_sandbox_status(&foreign).await.unwrap();
    assert_eq!(
        foreign_status.state, 0,
        "the foreign sandbox is still ready"
    );
    cri.stop_pod_sandbox(&foreign).await.unwrap();
    cri.remove_pod_sandbox(&foreign).await.unwrap();

    // A deleted pod is gone, and so are its sandbox and containers.
    let (code, _, err) = kubectl(
        &kubeconfig,
        &["delete", "pod", "web", "--wait=true", "--timeout=60s"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    eventually("no sandboxes left", Duration::from_secs(20), || async {
        match node.sandboxes().await {
            0 => Ok(()),
            n => Err(format!("{n} sandboxes")),
        }
    })
    .await;
    drop(node);
    server.shutdown().await;
}

fn waiting_reason(p: &Pod, i: usize) -> String {
    container(p, i)["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loops_back_off_and_probes_restart_or_unready() {
    let _serial = support::SERIAL.lock().await;
    let (server, kubeconfig) = apiserver().await;
    let _node = RealNode::start(&kubeconfig, "real-2", 2).await;
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let pod = |name: &str, container: Value| {
        json!({"metadata": {"name": name}, "spec": {"nodeName": "real-2",
            "terminationGracePeriodSeconds": 1, "containers": [container]}})
    };
    create_pod(
        &pods,
        pod(
            "crash",
            json!({"name": "c", "image": BUSYBOX,
        "command": ["sh", "-c", "echo bye; exit 1"]}),
        ),
    )
    .await;
    create_pod(
        &pods,
        json!({"metadata": {"name": "deadline"}, "spec": {"nodeName": "real-2",
            "activeDeadlineSeconds": 3, "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": BUSYBOX, "command": ["sleep", "3600"]}]}}),
    )
    .await;
    create_pod(
        &pods,
        pod(
            "nope",
            json!({"name": "c", "image": BUSYBOX, "command": ["/nope"]}),
        ),
    )
    .await;
    create_pod(
        &pods,
        pod(
            "live",
            json!({"name": "c", "image": BUSYBOX,
        "command": ["sh", "-c", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; exec sleep 3600"],
        "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]},
                          "periodSeconds": 1, "failureThreshold": 1}}),
        ),
    )
    .await;
    create_pod(
        &pods,
        pod(
            "unready",
            json!({"name": "c", "image": BUSYBOX,
        "command": ["sleep", "3600"],
        "readinessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1}}),
        ),
    )
    .await;

    // Exit 1 under restartPolicy Always: restarted at once, then after 10 s, then 20 s.
    let p = wait_pod(
        &pods,
        "crash",
        "CrashLoopBackOff after 10s",
        Duration::from_secs(30),
        |p| {
            waiting_reason(p, 0) == "CrashLoopBackOff"
                && container(p, 0)["state"]["waiting"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("back-off 10s")
        },
    )
    .await;
    assert_eq!(container(&p, 0)["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(status(&p)["phase"], "Running");
    let p = wait_pod(
        &pods,
        "crash",
        "the back-off to grow to 20s",
        Duration::from_secs(30),
        |p| {
            container(p, 0)["state"]["waiting"]["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("back-off 20s")
        },
    )
    .await;
    assert!(container(&p, 0)["restartCount"].as_i64().unwrap() >= 2);

    // A command that cannot start backs off too (regression: a start failure leaves no
    // start time, which once read as a long run and reset the back-off every time).
    let p = wait_pod(
        &pods,
        "nope",
        "CrashLoopBackOff for a missing command",
        Duration::from_secs(30),
        |p| waiting_reason(p, 0) == "CrashLoopBackOff",
    )
    .await;
    assert!(
        container(&p, 0)["restartCount"].as_i64().unwrap() <= 2,
        "{}",
        status(&p)
    );

    // activeDeadlineSeconds fails the pod.
    let p = wait_pod(
        &pods,
        "deadline",
        "DeadlineExceeded",
        Duration::from_secs(30),
        |p| status(p)["phase"] == "Failed",
    )
    .await;
    assert_eq!(status(&p)["reason"], "DeadlineExceeded");

    // A failing liveness probe restarts the container.
    wait_pod(
        &pods,
        "live",
        "a liveness restart",
        Duration::from_secs(30),
        |p| container(p, 0)["restartCount"].as_i64().unwrap_or(0) >= 1,
    )
    .await;

    // A failing readiness probe keeps the pod NotReady, running, never restarted.
    let p = wait_pod(
        &pods,
        "unready",
        "the unready pod running",
        Duration::from_secs(30),
        |p| container(p, 0)["state"]["running"].is_object(),
    )
    .await;
    assert!(!ready(&p));
    let cond = status(&p)["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap();
    assert_eq!(cond["reason"], "ContainersNotReady");
    // By now (over 20 s of probing in this test) a liveness-like restart would have shown.
    assert_eq!(container(&p, 0)["restartCount"], 0);
    assert_eq!(container(&p, 0)["ready"], false);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_runs_pre_stop_then_sigterm_and_kills_at_the_end_of_the_grace_period() {
    let _serial = support::SERIAL.lock().await;
    let (server, kubeconfig) = apiserver().await;
    let node = RealNode::start(&kubeconfig, "real-3", 3).await;
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let host = node.dir.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    create_pod(&pods, json!({"metadata": {"name": "polite"}, "spec": {
        "nodeName": "real-3", "terminationGracePeriodSeconds": 20,
        "containers": [{"name": "c", "image": BUSYBOX,
            "command": ["sh", "-c", "trap 'echo term >> /host/log; exit 0' TERM; while true; do sleep 0.2; done"],
            "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo prestop >> /host/log"]}}},
            "volumeMounts": [{"name": "host", "mountPath": "/host"}]}],
        "volumes": [{"name": "host", "hostPath": {"path": host.to_str().unwrap(), "type": "Directory"}}]}})).await;
    create_pod(
        &pods,
        json!({"metadata": {"name": "stubborn"}, "spec": {
        "nodeName": "real-3", "terminationGracePeriodSeconds": 4,
        "containers": [{"name": "c", "image": BUSYBOX,
            "command": ["sh", "-c", "trap '' TERM; while true; do sleep 0.2; done"]}]}}),
    )
    .await;
    for name in ["polite", "stubborn"] {
        wait_pod(&pods, name, "running", Duration::from_secs(60), |p| {
            status(p)["phase"] == "Running"
        })
        .await;
    }

    let started = std::time::Instant::now();
    let (code, _, err) = kubectl(&kubeconfig, &["delete", "pod", "polite", "--timeout=60s"]).await;
    assert_eq!(code, 0, "{err}");
    let polite = started.elapsed();
    assert!(
        polite < Duration::from_secs(15),
        "a pod that exits on SIGTERM is gone well within its grace period: {polite:?}"
    );
    let log = std::fs::read_to_string(host.join("log")).unwrap();
    assert_eq!(log, "prestop\nterm\n", "preStop runs, then SIGTERM");

    let started = std::time::Instant::now();
    let (code, _, err) =
        kubectl(&kubeconfig, &["delete", "pod", "stubborn", "--timeout=60s"]).await;
    assert_eq!(code, 0, "{err}");
    let stubborn = started.elapsed();
    assert!(
        stubborn >= Duration::from_millis(3500) && stubborn < Duration::from_secs(12),
        "a pod ignoring SIGTERM is killed at the end of its 4 s grace period: {stubborn:?}"
    );
    assert_eq!(node.containers().await, (0, 0));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_pulled_from_a_registry_and_missing_ones_back_off() {
    let _serial = support::SERIAL.lock().await;
    let (server, kubeconfig) = apiserver().await;
    let node = RealNode::start(&kubeconfig, "real-4", 4).await;
    let registry = support::Registry::start(node.dir.path());
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    create_pod(
        &pods,
        json!({"metadata": {"name": "pulled"}, "spec": {"nodeName": "real-4",
        "containers": [{"name": "c", "image": registry.image(), "imagePullPolicy": "Always",
                        "command": ["sleep", "3600"]}]}}),
    )
    .await;
    create_pod(
        &pods,
        json!({"metadata": {"name": "missing"}, "spec": {"nodeName": "real-4",
        "containers": [{"name": "c", "image": "127.0.0.1:5000/rkube/missing:1"}]}}),
    )
    .await;
    let p = wait_pod(
        &pods,
        "pulled",
        "the pulled image running",
        Duration::from_secs(60),
        |p| status(p)["phase"] == "Running",
    )
    .await;
    let image_id = container(&p, 0)["imageID"].as_str().unwrap().to_string();
    assert!(image_id.contains("sha256:"), "imageID {image_id}");
    // A failed pull shows ErrImagePull, then ImagePullBackOff while the back-off runs;
    // when it ends the pull is tried again (ErrImagePull) and backs off again. The first
    // ErrImagePull may pass before this test looks (it waited for the other pod first), so
    // the cycle is followed from the back-off on.
    let reason = |want: &'static str| move |p: &Pod| waiting_reason(p, 0) == want;
    wait_pod(
        &pods,
        "missing",
        "ImagePullBackOff",
        Duration::from_secs(30),
        reason("ImagePullBackOff"),
    )
    .await;
    let p = wait_pod(
        &pods,
        "missing",
        "ErrImagePull on the retry",
        Duration::from_secs(30),
        reason("ErrImagePull"),
    )
    .await;
    let message = container(&p, 0)["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        message.contains("127.0.0.1:5000/rkube/missing:1"),
        "{message}"
    );
    let p = wait_pod(
        &pods,
        "missing",
        "ImagePullBackOff again",
        Duration::from_secs(30),
        reason("ImagePullBackOff"),
    )
    .await;
    assert_eq!(status(&p)["phase"], "Pending");
    assert_eq!(
        container(&p, 0)["state"]["waiting"]["message"],
        "Back-off pulling image \"127.0.0.1:5000/rkube/missing:1\""
    );
    drop(registry);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_of_20_runs_20_containers_and_scaling_to_0_leaves_no_sandboxes() {
    let _serial = support::SERIAL.lock().await;
    let cluster = rkube_testing::cluster::Cluster::start(rkube_testing::cluster::ClusterOptions {
        nodes: 0,
        controller_manager_args: vec!["--cluster-cidr=10.89.0.0/16".into()],
        ..Default::default()
    })
    .await;
    // No --pod-cidr: the CNI configuration follows the podCIDR node IPAM assigns.
    let node = RealNode::start_with(&cluster.kubeconfig, "real-5", 5, None).await;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let nodes: Api<Node> = Api::all(cluster.client());
    // The node turns Ready once the CNI configuration for its assigned podCIDR is loaded;
    // the pods come after, so this test is about the kubelet, not about how fast the
    // scheduler retries pods a not-ready taint turned away.
    let node_ready = try_eventually(
        "node real-5 Ready, untainted, with a podCIDR",
        Duration::from_secs(60),
        || async {
            let n = serde_json::to_value(nodes.get("real-5").await.map_err(|e| e.to_string())?)
                .unwrap();
            let ready = n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            if ready && n["spec"]["taints"].is_null() && n["spec"]["podCIDR"].is_string() {
                Ok(())
            } else {
                Err(format!(
                    "ready {ready}, taints {}, podCIDR {}",
                    n["spec"]["taints"], n["spec"]["podCIDR"]
                ))
            }
        },
    )
    .await;
    if let Err(e) = node_ready {
        panic!(
            "{e}\n{}",
            where_pods_stand(&cluster.client(), "default", "real-5").await
        );
    }
    let out = cluster
        .kubectl
        .apply(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: sleepers, namespace: default}
spec:
  replicas: 20
  selector: {matchLabels: {app: sleepers}}
  template:
    metadata: {labels: {app: sleepers}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: c, image: "rkube.local/busybox:1.0", command: [sleep, "3600"]}
"#,
        )
        .await;
    assert!(out.contains("created"), "{out}");
    let running = try_eventually(
        "20 running containers",
        Duration::from_secs(120),
        || async {
            match node.containers().await {
                (20, 20) => Ok(()),
                seen => Err(format!(
                    "containers (running, all) = {seen:?}, sandboxes {}",
                    node.sandboxes().await
                )),
            }
        },
    )
    .await;
    if let Err(e) = running {
        panic!(
            "{e}\n{}",
            where_pods_stand(&cluster.client(), "default", "real-5").await
        );
    }
    eventually(
        "20 running pods with IPs from the node's podCIDR",
        Duration::from_secs(30),
        || async {
            let list = pods
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let ips: Vec<String> = list
                .items
                .iter()
                .filter(|p| status(p)["phase"] == "Running")
                .map(|p| status(p)["podIP"].as_str().unwrap_or("").to_string())
                .collect();
            if ips.len() == 20 && ips.iter().all(|ip| ip.starts_with("10.89.")) {
                Ok(())
            } else {
                Err(format!("running pod IPs {ips:?}"))
            }
        },
    )
    .await;
    cluster
        .kubectl
        .run(&["scale", "deployment/sleepers", "--replicas=0"])
        .await
        .unwrap();
    eventually(
        "no sandboxes or containers left",
        Duration::from_secs(120),
        || async {
            let n = (node.sandboxes().await, node.containers().await);
            let left = pods
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
            if n == (0, (0, 0)) && left == 0 {
                Ok(())
            } else {
                Err(format!("sandboxes, containers = {n:?}, pods {left}"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_runtime_is_reported_clearly_and_the_kubelet_keeps_waiting() {
    let (server, kubeconfig) = apiserver().await;
    let mut kubelet = rkube_testing::DaemonProcess::spawn(
        &rkube_testing::cluster::daemon_binary("rkube-kubelet"),
        &kubeconfig,
        &[
            "--container-runtime-endpoint",
            "unix:///tmp/rkube-no-such.sock",
            "--hostname-override",
            "nowhere",
            "--root-dir",
            "/tmp/rkube-no-such-root",
            "--port",
            "0",
        ],
    )
    .await
    .unwrap();
    let body = eventually(
        "/readyz to name the missing socket",
        Duration::from_secs(10),
        || async {
            let body = support::http_body(kubelet.http_addr, "/readyz").await?;
            if body.contains("no container runtime socket at /tmp/rkube-no-such.sock") {
                Ok(body)
            } else {
                Err(body)
            }
        },
    )
    .await;
    assert!(body.contains("is containerd running"), "{body}");
    assert!(
        kubelet.is_running(),
        "the kubelet waits for the runtime instead of exiting"
    );
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(server.client());
    assert!(
        nodes.get_opt("nowhere").await.unwrap().is_none(),
        "no node registers without a runtime"
    );
    let _ = std::fs::remove_dir_all("/tmp/rkube-no-such-root");
    server.shutdown().await;
}
