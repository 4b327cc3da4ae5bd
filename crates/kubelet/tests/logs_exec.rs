//! `kubectl logs` and `kubectl exec` end to end: the stock kubectl against an in-process
//! apiserver, which proxies to the kubelet server of a Node, running in the test over a fake
//! runtime. The fake (named as one) stands in for containerd: it serves log files written
//! by the test in CRI format and answers `ExecSync`, so everything but the containers
//! themselves is real: kubectl, the apiserver's proxy, TLS, the WebSocket upgrade, the
//! kubelet's handlers.

use k8s_openapi::api::core::v1::{Node, Pod};
use rkube_client::{Api, Patch};
use rkube_kubelet::runtime::{Result, Runtime, RuntimeError, annotations, cri, labels};
use rkube_kubelet::server;
use rkube_testing::TestApiserver;
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// A runtime that only knows a list of containers and their log files.
#[derive(Clone, Default)]
struct FakeRuntime {
    state: Arc<Mutex<FakeState>>,
}

#[derive(Default)]
struct FakeState {
    containers: Vec<cri::Container>,
    logs: HashMap<String, PathBuf>,
}

impl FakeRuntime {
    fn add(&self, pod: &str, id: &str, name: &str, restarts: u32, running: bool, log: &Path) {
        let state = if running {
            cri::ContainerState::ContainerRunning
        } else {
            cri::ContainerState::ContainerExited
        };
        let mut s = self.state.lock().expect("lock");
        s.containers.push(cri::Container {
            id: id.into(),
            state: state as i32,
            created_at: i64::from(restarts),
            labels: HashMap::from([
                (labels::MANAGED_BY.into(), labels::MANAGER.into()),
                (labels::POD_NAMESPACE.into(), "default".into()),
                (labels::POD_NAME.into(), pod.into()),
                (labels::POD_UID.into(), format!("uid-{pod}")),
                (labels::CONTAINER_NAME.into(), name.into()),
            ]),
            annotations: HashMap::from([(annotations::RESTART_COUNT.into(), restarts.to_string())]),
            ..Default::default()
        });
        s.logs.insert(id.into(), log.to_path_buf());
    }

    fn exit(&self, id: &str) {
        let mut s = self.state.lock().expect("lock");
        for c in s.containers.iter_mut().filter(|c| c.id == id) {
            c.state = cri::ContainerState::ContainerExited as i32;
        }
    }
}

fn unsupported<T>() -> Result<T> {
    Err(RuntimeError::Unavailable("not in the fake runtime".into()))
}

impl Runtime for FakeRuntime {
    async fn version(&self) -> Result<cri::VersionResponse> {
        unsupported()
    }
    async fn status(&self) -> Result<cri::RuntimeStatus> {
        unsupported()
    }
    async fn run_pod_sandbox(&self, _: cri::PodSandboxConfig) -> Result<String> {
        unsupported()
    }
    async fn stop_pod_sandbox(&self, _: &str) -> Result<()> {
        unsupported()
    }
    async fn remove_pod_sandbox(&self, _: &str) -> Result<()> {
        unsupported()
    }
    async fn pod_sandbox_status(&self, _: &str) -> Result<cri::PodSandboxStatus> {
        unsupported()
    }
    async fn list_pod_sandboxes(&self, _pod_uid: Option<&str>) -> Result<Vec<cri::PodSandbox>> {
        unsupported()
    }
    async fn create_container(
        &self,
        _: &str,
        _: cri::ContainerConfig,
        _: cri::PodSandboxConfig,
    ) -> Result<String> {
        unsupported()
    }
    async fn start_container(&self, _: &str) -> Result<()> {
        unsupported()
    }
    async fn stop_container(&self, _: &str, _: Duration) -> Result<()> {
        unsupported()
    }
    async fn remove_container(&self, _: &str) -> Result<()> {
        unsupported()
    }
    async fn list_containers(&self, _pod_uid: Option<&str>) -> Result<Vec<cri::Container>> {
        Ok(self.state.lock().expect("lock").containers.clone())
    }
    async fn container_status(&self, id: &str) -> Result<cri::ContainerStatus> {
        let s = self.state.lock().expect("lock");
        let c = s
            .containers
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id}")))?;
        Ok(cri::ContainerStatus {
            id: id.into(),
            state: c.state,
            log_path: s
                .logs
                .get(id)
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            ..Default::default()
        })
    }
    async fn exec_sync(
        &self,
        _: &str,
        cmd: Vec<String>,
        _: Duration,
    ) -> Result<cri::ExecSyncResponse> {
        // `sh -c 'exit N'` prints to both streams and exits N; `echo` echoes.
        match cmd
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["sh", "-c", script] if script.starts_with("exit ") => Ok(cri::ExecSyncResponse {
                stdout: b"out\n".to_vec(),
                stderr: b"err\n".to_vec(),
                exit_code: script[5..].trim().parse().unwrap_or(1),
            }),
            ["echo", rest @ ..] => Ok(cri::ExecSyncResponse {
                stdout: format!("{}\n", rest.join(" ")).into_bytes(),
                ..Default::default()
            }),
            other => Err(RuntimeError::Unavailable(format!(
                "exec: {other:?}: executable file not found in $PATH"
            ))),
        }
    }
    async fn exec_url(&self, _request: cri::ExecRequest) -> Result<String> {
        Err(RuntimeError::Unavailable(
            "the fake runtime has no streaming server".into(),
        ))
    }

    async fn image_status(&self, _: &str) -> Result<Option<cri::Image>> {
        unsupported()
    }
    async fn pull_image(
        &self,
        _: &str,
        _: Option<cri::AuthConfig>,
        _: cri::PodSandboxConfig,
    ) -> Result<String> {
        unsupported()
    }
}

fn append(path: &Path, lines: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    f.write_all(lines.as_bytes()).expect("write log");
}

/// What one kubectl run did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn kubectl(kubeconfig: &Path, args: &[&str]) -> Run {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish within 60s"))
    .expect("kubectl runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A cluster of one apiserver and one node, whose kubelet server runs over the fake.
struct Setup {
    apiserver: TestApiserver,
    kubeconfig: PathBuf,
    runtime: FakeRuntime,
    dir: tempfile::TempDir,
    stop_kubelet: Option<tokio::sync::oneshot::Sender<()>>,
    kubelet: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn setup() -> Setup {
    let apiserver = TestApiserver::start_sled().await;
    let kubeconfig = apiserver
        .running()
        .kubeconfig
        .clone()
        .expect("a sled apiserver writes a kubeconfig");
    let runtime = FakeRuntime::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let tls = server::self_signed_tls("node-a", &["127.0.0.1".parse().expect("ip")])
        .expect("serving certificate");
    let (stop_kubelet, stopped) = tokio::sync::oneshot::channel::<()>();
    let kubelet = tokio::spawn(server::serve(runtime.clone(), listener, tls, async {
        let _ = stopped.await;
    }));

    let client = apiserver.client();
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "node-a"}})).expect("node");
    nodes.create(&node).await.expect("create node");
    nodes
        .patch_status(
            "node-a",
            &Patch::Merge(json!({"status": {
                "addresses": [
                    {"type": "Hostname", "address": "node-a.invalid"},
                    {"type": "InternalIP", "address": "127.0.0.1"},
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            }})),
        )
        .await
        .expect("node status");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    for (name, node) in [("web", "node-a"), ("pending", "")] {
        let mut spec = json!({"containers": [
            {"name": "app", "image": "busybox"},
            {"name": "side", "image": "busybox"},
        ]});
        if !node.is_empty() {
            spec["nodeName"] = node.into();
        }
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("pod");
        pods.create(&pod).await.expect("create pod");
    }
    pods.patch_status(
        "web",
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .expect("pod status");
    let dir = tempfile::tempdir().expect("temp dir");
    Setup {
        apiserver,
        kubeconfig,
        runtime,
        dir,
        stop_kubelet: Some(stop_kubelet),
        kubelet,
    }
}

impl Setup {
    async fn teardown(mut self) {
        if let Some(stop) = self.stop_kubelet.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.kubelet)
            .await
            .expect("the kubelet server stops")
            .expect("task")
            .expect("serve");
        self.apiserver.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_through_the_apiserver() {
    let s = setup().await;
    let k = s.kubeconfig.as_path();
    let old = s.dir.path().join("app-0.log");
    let new = s.dir.path().join("app-1.log");
    append(
        &old,
        "2024-05-01T09:00:00.000000000Z stderr F panic: boom\n",
    );
    append(
        &new,
        "2024-05-01T10:00:00.500000000Z stdout F one\n\
         2024-05-01T10:00:01.000000000Z stdout P t\n\
         2024-05-01T10:00:01.000000001Z stdout F wo\n",
    );
    s.runtime.add("web", "app-0", "app", 0, false, &old);
    s.runtime.add("web", "app-1", "app", 1, true, &new);
    s.runtime.add("web", "side-0", "side", 0, true, &new);

    let run = kubectl(k, &["logs", "web", "-c", "app"]).await;
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "one\ntwo\n"),
        "{run:?}"
    );
    // Without -c, kubectl picks the first container and says so.
    let run = kubectl(k, &["logs", "web"]).await;
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "one\ntwo\n"),
        "{run:?}"
    );
    let run = kubectl(k, &["logs", "web", "-c", "app", "--tail=1", "--timestamps"]).await;
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "2024-05-01T10:00:01Z two\n"),
        "{run:?}"
    );
    let run = kubectl(k, &["logs", "web", "-c", "app", "--previous"]).await;
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "panic: boom\n"),
        "{run:?}"
    );
    let run = kubectl(k, &["logs", "web", "-c", "side", "--previous"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains(r#"previous terminated container "side" in pod "web" not found"#),
        "{run:?}"
    );
    let run = kubectl(k, &["logs", "web", "-c", "nope"]).await;
    assert!(
        run.code == 1
            && run
                .stderr
                .contains("container nope is not valid for pod web"),
        "{run:?}"
    );
    let run = kubectl(k, &["logs", "missing"]).await;
    assert!(
        run.code == 1 && run.stderr.contains(r#"pods "missing" not found"#),
        "{run:?}"
    );
    // The raw API without a container, for a pod of two.
    let run = kubectl(
        k,
        &["get", "--raw", "/api/v1/namespaces/default/pods/web/log"],
    )
    .await;
    assert!(
        run.code == 1
            && run.stderr.contains(
                "a container name must be specified for pod web, choose one of: [app side]"
            ),
        "{run:?}"
    );
    // A pod not on a node yet has an empty log, as upstream.
    let run = kubectl(k, &["logs", "pending", "-c", "app"]).await;
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{run:?}");

    // -f streams what is appended, and ends once the container stopped.
    let mut follow = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(k)
        .args(["logs", "-f", "web", "-c", "app"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl logs -f");
    let mut lines = BufReader::new(follow.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    let mut expect_line = async |wanted: &str| {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .unwrap_or_else(|_| {
                panic!("no {wanted:?} from kubectl logs -f within 20s; saw {seen:?}")
            })
            .expect("read")
            .unwrap_or_else(|| panic!("kubectl logs -f ended before {wanted:?}; saw {seen:?}"));
        seen.push(line.clone());
        assert_eq!(line, wanted, "saw {seen:?}");
    };
    expect_line("one").await;
    expect_line("two").await;
    append(&new, "2024-05-01T10:00:02Z stdout F three\n");
    expect_line("three").await;
    append(&new, "2024-05-01T10:00:03Z stderr F four\n");
    expect_line("four").await;
    s.runtime.exit("app-1");
    let status = tokio::time::timeout(Duration::from_secs(20), follow.wait())
        .await
        .expect("kubectl logs -f ends within 20s of the container stopping")
        .expect("wait");
    assert!(status.success(), "kubectl logs -f: {status}");
    s.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_through_the_apiserver() {
    let s = setup().await;
    let k = s.kubeconfig.as_path();
    let log = s.dir.path().join("app-0.log");
    s.runtime.add("web", "app-0", "app", 0, true, &log);
    s.runtime.add("web", "side-0", "side", 0, false, &log);

    let run = kubectl(
        k,
        &["exec", "web", "-c", "app", "--", "echo", "hello", "world"],
    )
    .await;
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "hello world\n"),
        "{run:?}"
    );
    let run = kubectl(k, &["exec", "web", "-c", "app", "--", "sh", "-c", "exit 3"]).await;
    assert_eq!((run.code, run.stdout.as_str()), (3, "out\n"), "{run:?}");
    assert!(run.stderr.contains("err\n"), "{run:?}");
    assert!(
        run.stderr.contains("command terminated with exit code 3"),
        "{run:?}"
    );
    // The runtime's own failure.
    let run = kubectl(k, &["exec", "web", "-c", "app", "--", "nope"]).await;
    assert!(
        run.code == 1 && run.stderr.contains("executable file not found"),
        "{run:?}"
    );
    // Interactive sessions need the runtime's streaming server, which this fake lacks.
    let run = kubectl(k, &["exec", "-i", "web", "-c", "app", "--", "cat"]).await;
    assert!(
        run.code == 1 && run.stderr.contains("no streaming server"),
        "{run:?}"
    );
    // A stopped container, an unscheduled pod, an unknown container.
    let run = kubectl(k, &["exec", "web", "-c", "side", "--", "echo"]).await;
    assert!(
        run.code == 1
            && run
                .stderr
                .contains(r#"container "side" in pod "web" is not running"#),
        "{run:?}"
    );
    let run = kubectl(k, &["exec", "pending", "-c", "app", "--", "echo"]).await;
    assert!(
        run.code == 1
            && run
                .stderr
                .contains("pod pending does not have a host assigned"),
        "{run:?}"
    );
    let run = kubectl(k, &["exec", "web", "-c", "nope", "--", "echo"]).await;
    assert!(run.code == 1, "{run:?}");
    s.teardown().await;
}
