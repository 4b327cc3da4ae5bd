//! The kubelet server over a fake runtime (named as one: it stands in for containerd, which
//! these tests do not need) that serves log files from a temp dir and answers `ExecSync`.

use super::*;
use crate::runtime::{RuntimeError, annotations, cri, labels};
use futures::StreamExt;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, protocol::Message};

/// A runtime that only knows a list of containers and their log files.
#[derive(Clone, Default)]
struct FakeRuntime {
    state: Arc<Mutex<FakeState>>,
}

#[derive(Default)]
struct FakeState {
    containers: Vec<cri::Container>,
    logs: HashMap<String, PathBuf>,
    execs: Vec<Vec<String>>,
}

impl FakeRuntime {
    fn add(&self, id: &str, name: &str, restarts: u32, running: bool, log: &Path) {
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
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt: restarts,
            }),
            labels: HashMap::from([
                (labels::MANAGED_BY.into(), labels::MANAGER.into()),
                (labels::POD_NAMESPACE.into(), "ns".into()),
                (labels::POD_NAME.into(), "p".into()),
                (labels::POD_UID.into(), "uid-1".into()),
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

fn unsupported<T>() -> crate::runtime::Result<T> {
    Err(RuntimeError::Unavailable("not in the fake runtime".into()))
}

impl Runtime for FakeRuntime {
    async fn version(&self) -> crate::runtime::Result<cri::VersionResponse> {
        unsupported()
    }
    async fn status(&self) -> crate::runtime::Result<cri::RuntimeStatus> {
        unsupported()
    }
    async fn run_pod_sandbox(&self, _: cri::PodSandboxConfig) -> crate::runtime::Result<String> {
        unsupported()
    }
    async fn stop_pod_sandbox(&self, _: &str) -> crate::runtime::Result<()> {
        unsupported()
    }
    async fn remove_pod_sandbox(&self, _: &str) -> crate::runtime::Result<()> {
        unsupported()
    }
    async fn pod_sandbox_status(&self, _: &str) -> crate::runtime::Result<cri::PodSandboxStatus> {
        unsupported()
    }
    async fn list_pod_sandboxes(
        &self,
        _pod_uid: Option<&str>,
    ) -> crate::runtime::Result<Vec<cri::PodSandbox>> {
        unsupported()
    }
    async fn create_container(
        &self,
        _: &str,
        _: cri::ContainerConfig,
        _: cri::PodSandboxConfig,
    ) -> crate::runtime::Result<String> {
        unsupported()
    }
    async fn start_container(&self, _: &str) -> crate::runtime::Result<()> {
        unsupported()
    }
    async fn stop_container(&self, _: &str, _: Duration) -> crate::runtime::Result<()> {
        unsupported()
    }
    async fn remove_container(&self, _: &str) -> crate::runtime::Result<()> {
        unsupported()
    }
    async fn list_containers(
        &self,
        _pod_uid: Option<&str>,
    ) -> crate::runtime::Result<Vec<cri::Container>> {
        Ok(self.state.lock().expect("lock").containers.clone())
    }
    async fn container_status(&self, id: &str) -> crate::runtime::Result<cri::ContainerStatus> {
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
    ) -> crate::runtime::Result<cri::ExecSyncResponse> {
        self.state.lock().expect("lock").execs.push(cmd.clone());
        // `sh -c 'exit N'` exits N; `echo ...` prints; anything else fails in the runtime.
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
            _ => Err(RuntimeError::Unavailable(
                "executable file not found in $PATH".into(),
            )),
        }
    }
    async fn exec_url(&self, _request: cri::ExecRequest) -> crate::runtime::Result<String> {
        Err(RuntimeError::Unavailable(
            "the fake runtime has no streaming server".into(),
        ))
    }

    async fn image_status(&self, _: &str) -> crate::runtime::Result<Option<cri::Image>> {
        unsupported()
    }
    async fn pull_image(
        &self,
        _: &str,
        _: Option<cri::AuthConfig>,
        _: cri::PodSandboxConfig,
    ) -> crate::runtime::Result<String> {
        unsupported()
    }
}

/// Serves `server` over plain HTTP on loopback.
async fn serve_plain(server: &KubeletServer<FakeRuntime>) -> std::net::SocketAddr {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = server.router();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = hyper_util::service::TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// `GET path`: the status and the body as a stream of chunks.
async fn get(
    addr: std::net::SocketAddr,
    path: &str,
) -> (u16, futures::stream::BoxStream<'static, Bytes>) {
    use hyper_util::rt::TokioIo;
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header("host", "kubelet")
        .body(axum::body::Body::empty())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let code = response.status().as_u16();
    let body = axum::body::Body::new(response.into_body())
        .into_data_stream()
        .map(|chunk| chunk.expect("body chunk"))
        .boxed();
    (code, body)
}

async fn get_text(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let (code, body) = get(addr, path).await;
    let chunks: Vec<Bytes> = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .unwrap_or_else(|_| panic!("GET {path}: the body did not end within 10s"));
    (code, String::from_utf8_lossy(&chunks.concat()).into_owned())
}

use bytes::Bytes;

fn append(path: &Path, lines: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    f.write_all(lines.as_bytes()).expect("write log");
}

const LOG: &str = "\
2024-05-01T10:00:00.100000000Z stdout F one
2024-05-01T10:00:01.000000000Z stderr P tw
2024-05-01T10:00:01.500000000Z stderr F o
2024-05-01T10:00:02.000000000Z stdout F three
";

struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    runtime: FakeRuntime,
    server: KubeletServer<FakeRuntime>,
    addr: std::net::SocketAddr,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_path_buf();
    let runtime = FakeRuntime::default();
    let server = KubeletServer::new(runtime.clone());
    let addr = serve_plain(&server).await;
    Setup {
        _dir: dir,
        dir: path,
        runtime,
        server,
        addr,
    }
}

#[tokio::test]
async fn logs_are_served_with_tail_timestamps_and_limits() {
    let s = setup().await;
    let log = s.dir.join("app-1.log");
    append(&log, LOG);
    s.runtime.add("app-1", "app", 1, true, &log);
    let (code, text) = get_text(s.addr, "/containerLogs/ns/p/app").await;
    assert_eq!((code, text.as_str()), (200, "one\ntwo\nthree\n"));
    let (_, text) = get_text(
        s.addr,
        "/containerLogs/ns/p/app?tailLines=2&timestamps=true",
    )
    .await;
    assert_eq!(
        text,
        "2024-05-01T10:00:01Z two\n2024-05-01T10:00:02Z three\n"
    );
    let (_, text) = get_text(
        s.addr,
        "/containerLogs/ns/p/app?sinceTime=2024-05-01T10%3A00%3A01Z",
    )
    .await;
    assert_eq!(text, "two\nthree\n");
    let (_, text) = get_text(s.addr, "/containerLogs/ns/p/app?limitBytes=5").await;
    assert_eq!(text, "one\nt");
    let (code, text) = get_text(s.addr, "/containerLogs/ns/p/app?tailLines=-3").await;
    assert_eq!(code, 400, "{text}");
}

#[tokio::test]
async fn previous_is_the_instance_before_and_missing_ones_are_400() {
    let s = setup().await;
    let old = s.dir.join("app-0.log");
    let new = s.dir.join("app-1.log");
    append(&old, "2024-05-01T09:00:00Z stdout F crashed\n");
    append(&new, LOG);
    s.runtime.add("app-0", "app", 0, false, &old);
    s.runtime.add("app-1", "app", 1, true, &new);
    let (code, text) = get_text(s.addr, "/containerLogs/ns/p/app?previous=true").await;
    assert_eq!((code, text.as_str()), (200, "crashed\n"));
    s.runtime.add("side-0", "side", 0, true, &new);
    let (code, text) = get_text(s.addr, "/containerLogs/ns/p/side?previous=true").await;
    assert_eq!(
        (code, text.as_str()),
        (
            400,
            r#"previous terminated container "side" in pod "p" not found"#
        )
    );
    let (code, text) = get_text(s.addr, "/containerLogs/ns/p/nope").await;
    assert_eq!(
        (code, text.as_str()),
        (
            400,
            r#"container "nope" in pod "p" is waiting to start: ContainerCreating"#
        )
    );
}

/// Reads the body until it has produced `wanted` (in total), failing after 10 s with what
/// it did produce.
async fn read_until(
    body: &mut futures::stream::BoxStream<'static, Bytes>,
    seen: &mut String,
    wanted: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(wanted) {
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(chunk)) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(None) => panic!("the stream ended before {wanted:?}; it sent {seen:?}"),
            Err(_) => panic!("no {wanted:?} within 10s; the stream sent {seen:?}"),
        }
    }
}

#[tokio::test]
async fn follow_streams_growth_rotation_and_ends_when_the_container_stops() {
    let s = setup().await;
    let log = s.dir.join("app-0.log");
    append(&log, LOG);
    s.runtime.add("app-0", "app", 0, true, &log);
    let (code, mut body) = get(s.addr, "/containerLogs/ns/p/app?follow=true&tailLines=1").await;
    assert_eq!(code, 200);
    let mut seen = String::new();
    read_until(&mut body, &mut seen, "three\n").await;
    assert_eq!(seen, "three\n", "tailLines=1 then follow");
    append(&log, "2024-05-01T10:00:03Z stdout P fou\n");
    append(&log, "2024-05-01T10:00:03Z stdout F r\n");
    read_until(&mut body, &mut seen, "four\n").await;
    // Rotation: the file is renamed away and a new one written at the path.
    std::fs::rename(&log, s.dir.join("app-0.log.1")).expect("rotate");
    append(&log, "2024-05-01T10:00:04Z stdout F five\n");
    read_until(&mut body, &mut seen, "five\n").await;
    assert_eq!(seen, "three\nfour\nfive\n");
    // The container stops after a last line: the stream sends it and ends.
    append(&log, "2024-05-01T10:00:05Z stdout F six\n");
    s.runtime.exit("app-0");
    let rest: Vec<Bytes> = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the follow ends once the container stopped and the log is idle");
    seen.push_str(&String::from_utf8_lossy(&rest.concat()));
    assert_eq!(seen, "three\nfour\nfive\nsix\n");
}

#[tokio::test]
async fn follow_ends_when_the_server_stops() {
    let s = setup().await;
    let log = s.dir.join("app-0.log");
    append(&log, LOG);
    s.runtime.add("app-0", "app", 0, true, &log);
    let (_, mut body) = get(s.addr, "/containerLogs/ns/p/app?follow=true").await;
    let mut seen = String::new();
    read_until(&mut body, &mut seen, "three\n").await;
    s.server.stop();
    let ended = tokio::time::timeout(Duration::from_secs(10), body.collect::<Vec<_>>()).await;
    assert!(ended.is_ok(), "the follow did not end after stop()");
}

#[tokio::test]
async fn follow_ends_when_the_client_goes_away() {
    let s = setup().await;
    let log = s.dir.join("app-0.log");
    append(&log, LOG);
    s.runtime.add("app-0", "app", 0, true, &log);
    let (_, mut body) = get(s.addr, "/containerLogs/ns/p/app?follow=true").await;
    let mut seen = String::new();
    read_until(&mut body, &mut seen, "three\n").await;
    assert_eq!(s.server.shared.streams.available_permits(), MAX_STREAMS - 1);
    drop(body);
    // The follow notices at its next look at the file, and gives its stream slot back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.server.shared.streams.available_permits() != MAX_STREAMS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the follow still holds its slot 10s after the client left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens an exec WebSocket; the response code if the upgrade was refused.
async fn exec_ws(
    addr: std::net::SocketAddr,
    query: &str,
    protocols: &str,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
        String,
    ),
    (u16, String),
> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("ws://{addr}/exec/ns/p/app?{query}")
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocols.parse().expect("header"));
    match tokio_tungstenite::client_async(request, tcp).await {
        Ok((ws, response)) => {
            let protocol = response
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|p| p.to_str().ok())
                .unwrap_or_default()
                .to_string();
            Ok((ws, protocol))
        }
        Err(tungstenite::Error::Http(response)) => Err((
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Err(e) => panic!("websocket: {e}"),
    }
}

/// Everything the server sent, by channel, until it closed normally.
async fn exec_output(
    mut ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) -> HashMap<u8, String> {
    let mut channels: HashMap<u8, String> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no close within 10s; got {channels:?}"));
        match message {
            Some(Ok(Message::Binary(frame))) => {
                let (channel, data) = frame.split_first().expect("a channel byte");
                channels
                    .entry(*channel)
                    .or_default()
                    .push_str(&String::from_utf8_lossy(data));
            }
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map(|f| u16::from(f.code));
                assert_eq!(code, Some(1000), "a normal close; got {channels:?}");
                let _ = ws.close(None).await;
                return channels;
            }
            Some(Ok(other)) => panic!("unexpected message {other:?}"),
            Some(Err(e)) => panic!("websocket error {e}; got {channels:?}"),
            None => panic!("closed without a close frame; got {channels:?}"),
        }
    }
}

#[tokio::test]
async fn exec_sends_output_and_the_exit_status() {
    let s = setup().await;
    let log = s.dir.join("app-0.log");
    s.runtime.add("app-0", "app", 0, true, &log);
    let (ws, protocol) = exec_ws(
        s.addr,
        "command=echo&command=hello&command=world&stdout=true&stderr=true",
        "v5.channel.k8s.io, v4.channel.k8s.io",
    )
    .await
    .expect("upgraded");
    assert_eq!(protocol, "v5.channel.k8s.io");
    let out = exec_output(ws).await;
    assert_eq!(out.get(&1).map(String::as_str), Some("hello world\n"));
    assert_eq!(
        out.get(&3).map(String::as_str),
        Some(r#"{"metadata":{},"status":"Success"}"#)
    );

    let (ws, protocol) = exec_ws(
        s.addr,
        "command=sh&command=-c&command=exit%203&output=1&error=1",
        "v4.channel.k8s.io",
    )
    .await
    .expect("upgraded");
    assert_eq!(protocol, "v4.channel.k8s.io");
    let out = exec_output(ws).await;
    assert_eq!(out.get(&1).map(String::as_str), Some("out\n"));
    assert_eq!(out.get(&2).map(String::as_str), Some("err\n"));
    let status: serde_json::Value = serde_json::from_str(&out[&3]).expect("status JSON");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
    assert_eq!(
        s.runtime.state.lock().expect("lock").execs[1],
        ["sh", "-c", "exit 3"]
    );
}

#[tokio::test]
async fn exec_failures_are_statuses() {
    let s = setup().await;
    let log = s.dir.join("app-0.log");
    s.runtime.add("app-0", "app", 0, true, &log);
    // The runtime cannot run it.
    let (ws, _) = exec_ws(s.addr, "command=nope&stdout=true", "v5.channel.k8s.io")
        .await
        .expect("upgraded");
    let status: serde_json::Value =
        serde_json::from_str(&exec_output(ws).await[&3]).expect("status JSON");
    assert_eq!(status["reason"], "InternalError");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("executable file not found")),
        "{status}"
    );
    // Interactive sessions go to the runtime's streaming server; this fake has none.
    let (ws, _) = exec_ws(
        s.addr,
        "command=sh&stdin=true&stdout=true&tty=true",
        "v5.channel.k8s.io",
    )
    .await
    .expect("upgraded");
    let status: serde_json::Value =
        serde_json::from_str(&exec_output(ws).await[&3]).expect("status JSON");
    assert_eq!(status["status"], "Failure");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("the fake runtime has no streaming server")),
        "{status}"
    );
    // Unknown protocols, stopped and unknown containers: refused before the upgrade.
    let (code, body) = exec_ws(s.addr, "command=ls&stdout=true", "base64.channel.k8s.io")
        .await
        .expect_err("no common protocol");
    assert_eq!(code, 400, "{body}");
    s.runtime.exit("app-0");
    let (code, body) = exec_ws(s.addr, "command=ls&stdout=true", "v5.channel.k8s.io")
        .await
        .expect_err("not running");
    assert_eq!(code, 400, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(
        status["message"],
        r#"container "app" in pod "p" is not running"#
    );
    let (code, _) = get_text(s.addr, "/exec/ns/p/other?command=ls&stdout=true").await;
    assert_eq!(code, 404);
}

/// Accepts any server certificate: the test's server is self-signed.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[tokio::test]
async fn serve_speaks_tls_and_stops_on_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tls = self_signed_tls("node-a", &["127.0.0.1".parse().expect("ip")]).expect("tls");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(FakeRuntime::default(), listener, tls, async {
        let _ = stopped.await;
    }));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut tls = connector
        .connect("node-a".try_into().expect("name"), tcp)
        .await
        .expect("handshake");
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: node-a\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    tls.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok"), "{response}");
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve returns after shutdown")
        .expect("task")
        .expect("serve ok");
}
