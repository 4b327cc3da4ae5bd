//! `GET|POST /exec/{namespace}/{pod}/{container}?command=...`: a command run in a container,
//! for `kubectl exec`, over a WebSocket speaking Kubernetes' channel protocol
//! (`v5.channel.k8s.io`, or `v4.channel.k8s.io`).
//!
//! Each binary message starts with its channel: 0 stdin, 1 stdout, 2 stderr, 3 the final
//! status (a `metav1.Status` as JSON), 4 terminal resizes; in v5 the client may also send
//! 255 + channel to close its side of a channel. The command runs through the runtime's
//! `ExecSync`: its output is sent once it has ended, then its status, then the socket is
//! closed normally. Interactive sessions (stdin or a TTY) need CRI's streaming `Exec`,
//! which the runtime does not offer yet: they get a clear failure status instead.
//!
//! Errors found before the upgrade (no such container, not running, bad query) are
//! `Status` objects with their HTTP code, as upstream's streaming server answers; kubectl
//! prints their message.

use super::instances::Instances;
use super::logs::parse_bool;
use super::{MAX_STREAMS, Shared};
use crate::runtime::Runtime;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, BytesMut};
use rkube_types::{ApiError, Reason};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, watch};

/// The subprotocols served, preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// Channel of the command's standard output.
const STDOUT: u8 = 1;
/// Channel of the command's standard error.
const STDERR: u8 = 2;
/// Channel of the final status.
const STATUS: u8 = 3;
/// Output is sent in messages of at most this size.
const FRAME: usize = 32 * 1024;
/// How long the client has to answer our close before the connection is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// What an exec request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecQuery {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// Whether the client sends standard input.
    pub stdin: bool,
    /// Whether the client wants standard output.
    pub stdout: bool,
    /// Whether the client wants standard error.
    pub stderr: bool,
    /// Whether the command gets a terminal.
    pub tty: bool,
}

impl ExecQuery {
    /// Parses the query; the streams are spelled as kubectl sends them to the apiserver
    /// (`stdin`, `stdout`, `stderr`) or as the apiserver sends them on (`input`, `output`,
    /// `error`).
    pub fn parse(query: &str) -> Result<Self, ApiError> {
        let mut q = ExecQuery::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let flag = || parse_bool(&key, &value).map_err(ApiError::bad_request);
            match key.as_ref() {
                "command" => q.command.push(value.into_owned()),
                "stdin" | "input" => q.stdin = flag()?,
                "stdout" | "output" => q.stdout = flag()?,
                "stderr" | "error" => q.stderr = flag()?,
                "tty" => q.tty = flag()?,
                _ => {}
            }
        }
        if q.command.is_empty() {
            return Err(ApiError::bad_request(
                "you must specify at least one command for the container",
            ));
        }
        if !(q.stdin || q.stdout || q.stderr) {
            return Err(ApiError::bad_request(
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        if q.tty {
            // As upstream: a terminal merges standard error into standard output.
            q.stderr = false;
        }
        Ok(q)
    }
}

fn status_error(err: &ApiError) -> Response {
    tracing::debug!(code = err.code(), message = %err.message, "exec request refused");
    let code = StatusCode::from_u16(err.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        serde_json::to_vec(&err.to_status()).unwrap_or_default(),
    )
        .into_response()
}

/// The handler.
pub(super) async fn exec<R: Runtime>(
    State(shared): State<Shared<R>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let query = match ExecQuery::parse(query.as_deref().unwrap_or_default()) {
        Ok(q) => q,
        Err(e) => return status_error(&e),
    };
    let instances = match Instances::find(&shared.runtime, &namespace, &pod, &container).await {
        Ok(found) => found,
        Err(e) => return status_error(&ApiError::internal(e.message())),
    };
    let Some(target) = instances.current().cloned() else {
        return status_error(&ApiError::new(
            Reason::NotFound,
            format!("container not found ({container:?})"),
        ));
    };
    if !target.running {
        return status_error(&ApiError::bad_request(format!(
            "container {container:?} in pod {pod:?} is not running"
        )));
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            let wanted = headers
                .get(header::UPGRADE)
                .and_then(|u| u.to_str().ok())
                .unwrap_or_default();
            let message = if wanted.to_ascii_lowercase().starts_with("spdy") {
                format!(
                    "this kubelet serves exec over WebSocket ({}) only, not SPDY",
                    PROTOCOLS.join(", ")
                )
            } else {
                format!("Upgrade request required: {rejection}")
            };
            return status_error(&ApiError::bad_request(message));
        }
    };
    let upgrade = upgrade.protocols(PROTOCOLS);
    if upgrade.selected_protocol().is_none() {
        let offered: Vec<String> = upgrade
            .requested_protocols()
            .filter_map(|p| p.to_str().ok().map(str::to_string))
            .collect();
        return status_error(&ApiError::bad_request(format!(
            "requested protocol(s) are not supported: {offered:?}; supports {PROTOCOLS:?}"
        )));
    }
    let Ok(permit) = shared.streams.clone().try_acquire_owned() else {
        return status_error(&ApiError::new(
            Reason::TooManyRequests,
            format!("too many log and exec streams open (at most {MAX_STREAMS}); retry later"),
        ));
    };
    let runtime = shared.runtime.clone();
    let stopping = shared.stopping();
    tracing::debug!(pod = %format!("{namespace}/{pod}"), container, command = ?query.command, "exec");
    upgrade
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "exec upgrade failed"))
        .on_upgrade(move |socket| session(socket, runtime, target.id, query, stopping, permit))
}

/// One exec session on an upgraded connection.
async fn session<R: Runtime>(
    mut socket: WebSocket,
    runtime: R,
    container_id: String,
    query: ExecQuery,
    mut stopping: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let status = if query.stdin || query.tty {
        match interactive(&mut socket, &runtime, &container_id, &query, &mut stopping).await {
            // The runtime's streaming server sent the status and closed: so do we.
            Ok(()) => {
                close(socket).await;
                return;
            }
            Err(status) => status,
        }
    } else {
        let command = query.command.clone();
        let exec = runtime.exec_sync(&container_id, command, Duration::ZERO);
        tokio::pin!(exec);
        let result = loop {
            tokio::select! {
                result = &mut exec => break Some(result),
                message = socket.recv() => match message {
                    // The client left: nobody to tell the result.
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    // Close signals of stdin, resizes; pings are answered by the socket.
                    Some(Ok(_)) => {}
                },
                _ = stopping.wait_for(|s| *s) => break None,
            }
        };
        match result {
            None => failure(Reason::ServiceUnavailable, "the kubelet is shutting down"),
            Some(Ok(response)) => {
                if query.stdout && !send_channel(&mut socket, STDOUT, &response.stdout).await {
                    return;
                }
                if query.stderr && !send_channel(&mut socket, STDERR, &response.stderr).await {
                    return;
                }
                exit_status(&query.command, response.exit_code)
            }
            Some(Err(e)) => {
                tracing::debug!(container = %container_id, error = %e, "exec failed");
                internal_error(&format!(
                    "error executing command in container: {}",
                    e.message()
                ))
            }
        }
    };
    let body = serde_json::to_vec(&status).unwrap_or_default();
    if !send_channel(&mut socket, STATUS, &body).await {
        return;
    }
    close(socket).await;
}

/// The channel on which a v5 client says it closed its stdin (no v4 equivalent).
const CLOSE_STREAM: u8 = 255;

/// An interactive session (stdin, a TTY): the runtime's streaming server runs it (CRI
/// `Exec`), and this relays WebSocket messages between the client and that server, which
/// speaks `v4.channel.k8s.io` — the same framing as v5 but for v5's stream-close signal,
/// which is dropped (so a closed stdin is not passed on; a TTY session ends with the
/// shell). Returns the status to send when the session could not be set up.
async fn interactive<R: Runtime>(
    socket: &mut WebSocket,
    runtime: &R,
    container_id: &str,
    query: &ExecQuery,
    stopping: &mut watch::Receiver<bool>,
) -> Result<(), Value> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Upstream;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let request = crate::runtime::cri::ExecRequest {
        container_id: container_id.to_string(),
        cmd: query.command.clone(),
        tty: query.tty,
        stdin: query.stdin,
        stdout: query.stdout,
        stderr: query.stderr && !query.tty,
    };
    let url = runtime.exec_url(request).await.map_err(|e| {
        internal_error(&format!(
            "error executing command in container: {}",
            e.message()
        ))
    })?;
    let ws_url = url
        .replacen("http://", "ws://", 1)
        .replacen("https://", "wss://", 1);
    let mut upstream_request = ws_url
        .as_str()
        .into_client_request()
        .map_err(|e| internal_error(&format!("bad streaming URL {url}: {e}")))?;
    upstream_request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("v4.channel.k8s.io"),
    );
    let host = upstream_request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let tcp = tokio::net::TcpStream::connect(&host).await.map_err(|e| {
        internal_error(&format!(
            "connecting to the runtime's streaming server {host}: {e}"
        ))
    })?;
    let (mut upstream, _) = tokio_tungstenite::client_async(upstream_request, tcp)
        .await
        .map_err(|e| {
            internal_error(&format!(
                "the runtime's streaming server refused the session: {e}"
            ))
        })?;
    loop {
        tokio::select! {
            from_client = socket.recv() => match from_client {
                Some(Ok(Message::Binary(data))) => {
                    if data.first() == Some(&CLOSE_STREAM) {
                        continue;
                    }
                    if upstream.send(Upstream::Binary(data)).await.is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    if upstream.send(Upstream::Text(text.as_str().into())).await.is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                // The client left: end the runtime's session too.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    let _ = upstream.close(None).await;
                    return Ok(());
                }
            },
            from_runtime = upstream.next() => match from_runtime {
                Some(Ok(Upstream::Binary(data))) => {
                    if socket.send(Message::Binary(data)).await.is_err() {
                        let _ = upstream.close(None).await;
                        return Ok(());
                    }
                }
                Some(Ok(Upstream::Text(text))) => {
                    if socket.send(Message::Text(text.as_str().into())).await.is_err() {
                        let _ = upstream.close(None).await;
                        return Ok(());
                    }
                }
                Some(Ok(Upstream::Ping(_) | Upstream::Pong(_) | Upstream::Frame(_))) => {}
                Some(Ok(Upstream::Close(_))) | None | Some(Err(_)) => return Ok(()),
            },
            _ = async { let _ = stopping.wait_for(|s| *s).await; } => {
                let _ = upstream.close(None).await;
                return Err(failure(Reason::ServiceUnavailable, "the kubelet is shutting down"));
            }
        }
    }
}

/// Sends `data` on `channel`, in frames; false if the client is gone.
async fn send_channel(socket: &mut WebSocket, channel: u8, data: &[u8]) -> bool {
    if data.is_empty() && channel != STATUS {
        return true;
    }
    for piece in data.chunks(FRAME) {
        let mut frame = BytesMut::with_capacity(piece.len() + 1);
        frame.put_u8(channel);
        frame.put_slice(piece);
        if socket.send(Message::Binary(frame.freeze())).await.is_err() {
            return false;
        }
    }
    true
}

/// Closes the socket normally (clients take any other close as an error), waiting a
/// little for the client's answer.
async fn close(mut socket: WebSocket) {
    let frame = CloseFrame {
        code: close_code::NORMAL,
        reason: "".into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// The status of a command that ended with `code`, as upstream's: success, or a failure
/// whose cause carries the exit code (kubectl exits with it).
pub fn exit_status(command: &[String], code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    let message = format!(
        "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
        command.join(" ")
    );
    if !(0..=255).contains(&code) {
        // Not an exit code a client can take as its own.
        return internal_error(&message);
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// A failure status with `reason`.
fn failure(reason: Reason, message: &str) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason.as_str(),
        "code": reason.code(),
    })
}

/// An internal error status, as upstream's `NewInternalError`.
fn internal_error(message: &str) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {message}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_in_both_spellings() {
        let q = ExecQuery::parse("command=sh&command=-c&command=exit%203&stdout=true&stderr=1")
            .expect("valid");
        assert_eq!(q.command, ["sh", "-c", "exit 3"]);
        assert!(q.stdout && q.stderr && !q.stdin && !q.tty);
        let q = ExecQuery::parse("command=ls&input=1&output=1&error=1&tty=1").expect("valid");
        assert!(q.stdin && q.stdout && q.tty);
        assert!(!q.stderr, "a terminal merges stderr into stdout");
    }

    #[test]
    fn queries_without_command_or_streams_are_refused() {
        let e = ExecQuery::parse("stdout=true").expect_err("no command");
        assert_eq!(e.code(), 400);
        let e = ExecQuery::parse("command=ls").expect_err("no streams");
        assert!(e.message.contains("at least 1 of stdin"), "{e}");
        let e = ExecQuery::parse("command=ls&stdout=maybe").expect_err("bad bool");
        assert!(e.message.contains("not a boolean"), "{e}");
    }

    #[test]
    fn exit_statuses_have_upstream_shape() {
        assert_eq!(
            exit_status(&["true".into()], 0),
            json!({"metadata": {}, "status": "Success"})
        );
        assert_eq!(
            exit_status(&["sh".into(), "-c".into(), "exit 2".into()], 2),
            json!({
                "metadata": {},
                "status": "Failure",
                "message": "command terminated with non-zero exit code: error executing command [sh -c exit 2], exit code 2",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": "2"}]},
            })
        );
        assert_eq!(exit_status(&["x".into()], -1)["reason"], "InternalError");
    }
}
