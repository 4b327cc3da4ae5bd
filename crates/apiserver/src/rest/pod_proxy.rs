//! `pods/log` and `pods/exec`: subresources served by the kubelet of the pod's node, which
//! the apiserver proxies to, as upstream's does.
//!
//! The pod is read (404 if it does not exist), its container chosen (the only one, or the
//! `container` parameter, which must name one of the pod's: 400 otherwise, with upstream's
//! messages), then its node's kubelet found from the Node ([`KubeletEndpoint::of_node`]).
//! A log is streamed through as the kubelet sends it (`kubectl logs -f`); the kubelet's
//! errors become `Status` objects with its code and text. For exec, the upgrade request is
//! forwarded with its `Upgrade`, `Connection` and `Sec-WebSocket-*` headers; once the
//! kubelet switched protocols, the two upgraded connections are spliced byte for byte, so
//! any streaming protocol passes (WebSocket channels, SPDY). A kubelet that does not
//! switch has its answer passed back as it is.

use super::{RestState, error_response};
use crate::kubelet_client::{self, KubeletEndpoint};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use rkube_types::{ApiError, Reason, StatusCause, registry};
use serde_json::Value;
use std::time::Instant;

/// The most of a kubelet's error answer that is read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The routes, ahead of the generic REST ones.
pub(super) fn routes() -> Router<RestState> {
    Router::new()
        .route("/api/v1/namespaces/{namespace}/pods/{name}/log", any(log))
        .route("/api/v1/namespaces/{namespace}/pods/{name}/exec", any(exec))
}

/// The query as ordered pairs (`command` repeats).
fn pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A boolean parameter: Go's `strconv.ParseBool` spellings.
fn flag(pairs: &[(String, String)], key: &str) -> Result<bool, ApiError> {
    match first(pairs, key) {
        None | Some("") => Ok(false),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(other) => Err(ApiError::bad_request(format!(
            "invalid value {other:?} for {key}: not a boolean"
        ))),
    }
}

fn integer(pairs: &[(String, String)], key: &str) -> Result<Option<i64>, ApiError> {
    first(pairs, key)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("invalid value {v:?} for {key}: not an integer"))
            })
        })
        .transpose()
}

/// A path segment, percent-encoded.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn container_names(pod: &Value, field: &str) -> Vec<String> {
    pod["spec"][field]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The container a request is about, as upstream's apiserver picks it.
fn pick_container(pod: &Value, name: &str, requested: &str) -> Result<String, ApiError> {
    let containers = container_names(pod, "containers");
    if requested.is_empty() {
        return match containers.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}"
            ))),
            _ => {
                let init = container_names(pod, "initContainers");
                let mut message = format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                );
                if !init.is_empty() {
                    message.push_str(&format!(
                        " or one of the init containers: [{}]",
                        init.join(" ")
                    ));
                }
                Err(ApiError::bad_request(message))
            }
        };
    }
    let known = containers
        .iter()
        .chain(&container_names(pod, "initContainers"))
        .chain(&container_names(pod, "ephemeralContainers"))
        .any(|c| c == requested);
    if known {
        Ok(requested.to_string())
    } else {
        Err(ApiError::bad_request(format!(
            "container {requested} is not valid for pod {name}"
        )))
    }
}

/// The pod `ns/name`, parsed.
async fn read_pod(state: &RestState, ns: &str, name: &str) -> Result<Value, ApiError> {
    let info = registry::lookup("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods missing from the registry"))?;
    let bytes = state.objects.get(info, ns, name).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::internal(format!("stored pod is corrupt: {e}")))
}

/// Where the kubelet of node `node` serves.
async fn kubelet_of(state: &RestState, node: &str) -> Result<KubeletEndpoint, ApiError> {
    let info = registry::lookup("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes missing from the registry"))?;
    let bytes = state.objects.get(info, "", node).await?;
    let node: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::internal(format!("stored node is corrupt: {e}")))?;
    KubeletEndpoint::of_node(&node)
}

fn observe(state: &RestState, verb: &str, resource: &str, response: &Response, start: Instant) {
    state.metrics.observe_request(
        verb,
        resource,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
}

/// `GET .../pods/{name}/log`.
async fn log(
    State(state): State<RestState>,
    Path((ns, name)): Path<(String, String)>,
    method: Method,
    RawQuery(query): RawQuery,
) -> Response {
    let start = Instant::now();
    let response = if method == Method::GET {
        proxy_log(&state, &ns, &name, &pairs(query.as_deref()))
            .await
            .unwrap_or_else(|e| error_response(&e))
    } else {
        error_response(&super::method_not_allowed(&method))
    };
    observe(&state, "get", "pods/log", &response, start);
    response
}

/// The kubelet's query for a log request (upstream's `PodLogOptions`), validated.
fn log_query(pairs: &[(String, String)], name: &str) -> Result<String, ApiError> {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for key in ["follow", "previous", "timestamps"] {
        if flag(pairs, key)? {
            out.append_pair(key, "true");
        }
    }
    let mut causes = Vec::new();
    let since_seconds = integer(pairs, "sinceSeconds")?;
    let since_time = first(pairs, "sinceTime").filter(|t| !t.is_empty());
    if let Some(t) = since_time {
        let parsed: jiff::Timestamp = t.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid value {t:?} for sinceTime: not an RFC 3339 time"
            ))
        })?;
        out.append_pair(
            "sinceTime",
            &parsed.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        );
    }
    match since_seconds {
        Some(_) if since_time.is_some() => causes.push(StatusCause::forbidden(
            "",
            "at most one of `sinceTime` or `sinceSeconds` may be specified",
        )),
        Some(s) if s < 1 => causes.push(StatusCause::new(
            "FieldValueInvalid",
            "sinceSeconds",
            format!("Invalid value: {s}: must be greater than 0"),
        )),
        Some(s) => {
            out.append_pair("sinceSeconds", &s.to_string());
        }
        None => {}
    }
    if let Some(n) = integer(pairs, "tailLines")? {
        if n < 0 {
            causes.push(StatusCause::new(
                "FieldValueInvalid",
                "tailLines",
                format!("Invalid value: {n}: must be greater than or equal to 0"),
            ));
        }
        out.append_pair("tailLines", &n.to_string());
    }
    if let Some(n) = integer(pairs, "limitBytes")? {
        if n < 1 {
            causes.push(StatusCause::new(
                "FieldValueInvalid",
                "limitBytes",
                format!("Invalid value: {n}: must be greater than 0"),
            ));
        }
        out.append_pair("limitBytes", &n.to_string());
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("", "PodLogOptions", "pods", name, causes));
    }
    Ok(out.finish())
}

async fn proxy_log(
    state: &RestState,
    ns: &str,
    name: &str,
    pairs: &[(String, String)],
) -> Result<Response, ApiError> {
    let kubelet_query = log_query(pairs, name)?;
    let pod = read_pod(state, ns, name).await?;
    let container = pick_container(&pod, name, first(pairs, "container").unwrap_or_default())?;
    let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node.is_empty() {
        // As upstream: a pod not yet on a node has an empty log.
        return Ok(text_response(StatusCode::OK, Body::empty()));
    }
    let endpoint = kubelet_of(state, node).await?;
    let mut path = format!(
        "/containerLogs/{}/{}/{}",
        segment(ns),
        segment(name),
        segment(&container)
    );
    if !kubelet_query.is_empty() {
        path = format!("{path}?{kubelet_query}");
    }
    let request = hyper::Request::get(&path)
        .body(Body::empty())
        .map_err(|e| ApiError::internal(format!("kubelet request: {e}")))?;
    let response = kubelet_client::send(&endpoint, request)
        .await
        .map_err(|e| {
            tracing::debug!(node, error = %e, "kubelet log request failed");
            ApiError::new(
                Reason::InternalError,
                format!("Get {:?}: {e}", endpoint.url(&path)),
            )
        })?;
    let code = response.status();
    if !code.is_success() {
        let body = read_limited(response.into_body()).await;
        return Err(kubelet_client::error_from_response(code.as_u16(), &body));
    }
    let mut shutdown = state.shutdown.clone();
    let stream = Body::new(response.into_body())
        .into_data_stream()
        .take_until(Box::pin(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        }));
    Ok(text_response(StatusCode::OK, Body::from_stream(stream)))
}

fn text_response(code: StatusCode, body: Body) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        body,
    )
        .into_response()
}

/// Up to [`MAX_ERROR_BODY`] bytes of a body (what could be read).
async fn read_limited(body: hyper::body::Incoming) -> bytes::Bytes {
    let mut out = bytes::BytesMut::new();
    let mut stream = Body::new(body).into_data_stream();
    let read = async {
        while let Some(Ok(chunk)) = stream.next().await {
            let room = MAX_ERROR_BODY - out.len();
            out.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if out.len() >= MAX_ERROR_BODY {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), read).await;
    out.freeze()
}

/// `GET|POST .../pods/{name}/exec`.
async fn exec(
    State(state): State<RestState>,
    Path((ns, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    let start = Instant::now();
    let response = if matches!(*request.method(), Method::GET | Method::POST) {
        proxy_exec(&state, &ns, &name, request)
            .await
            .unwrap_or_else(|e| error_response(&e))
    } else {
        error_response(&super::method_not_allowed(request.method()))
    };
    observe(&state, "connect", "pods/exec", &response, start);
    response
}

/// The kubelet's query for an exec request, as upstream's apiserver spells it.
fn exec_query(pairs: &[(String, String)]) -> Result<String, ApiError> {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (param, kubelet) in [
        ("stdin", "input"),
        ("stdout", "output"),
        ("stderr", "error"),
        ("tty", "tty"),
    ] {
        if flag(pairs, param)? {
            out.append_pair(kubelet, "1");
        }
    }
    for (_, command) in pairs.iter().filter(|(k, _)| k == "command") {
        out.append_pair("command", command);
    }
    Ok(out.finish())
}

/// Whether a request header goes on to the kubelet: everything but what names this hop.
fn forwarded(name: &header::HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host"
            | "authorization"
            | "proxy-authorization"
            | "proxy-connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "content-length"
    )
}

async fn proxy_exec(
    state: &RestState,
    ns: &str,
    name: &str,
    request: Request,
) -> Result<Response, ApiError> {
    let (mut parts, _body) = request.into_parts();
    let pairs: Vec<(String, String)> = pairs(parts.uri.query());
    let kubelet_query = exec_query(&pairs)?;
    let pod = read_pod(state, ns, name).await?;
    let container = pick_container(&pod, name, first(&pairs, "container").unwrap_or_default())?;
    let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    if !parts.headers.contains_key(header::UPGRADE) {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let Some(client_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return Err(ApiError::bad_request(
            "exec needs a connection that can be upgraded (HTTP/1.1)",
        ));
    };
    let endpoint = kubelet_of(state, node).await?;
    let path = format!(
        "/exec/{}/{}/{}?{kubelet_query}",
        segment(ns),
        segment(name),
        segment(&container)
    );
    let mut forward = hyper::Request::builder()
        .method(parts.method.clone())
        .uri(&path)
        .body(Body::empty())
        .map_err(|e| ApiError::internal(format!("kubelet request: {e}")))?;
    copy_headers(&parts.headers, forward.headers_mut());
    let mut response = kubelet_client::send(&endpoint, forward)
        .await
        .map_err(|e| {
            tracing::debug!(node, error = %e, "kubelet exec request failed");
            ApiError::internal(format!("error dialing backend: {e}"))
        })?;
    let code = response.status();
    if code != StatusCode::SWITCHING_PROTOCOLS {
        let headers = response.headers().clone();
        // Passed back as it is: kubectl reads the kubelet's Status.
        let mut passed = Response::new(Body::new(response.into_body()));
        *passed.status_mut() = code;
        for (name, value) in &headers {
            if forwarded(name) && *name != header::CONNECTION && *name != header::UPGRADE {
                passed.headers_mut().append(name.clone(), value.clone());
            }
        }
        return Ok(passed);
    }
    let kubelet_upgrade = hyper::upgrade::on(&mut response);
    let mut switched = Response::new(Body::empty());
    *switched.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    // With `Connection` and `Upgrade`, which make the switch.
    copy_headers(response.headers(), switched.headers_mut());
    let mut shutdown = state.shutdown.clone();
    let pod_key = format!("{ns}/{name}");
    tokio::spawn(async move {
        let (client, kubelet) = match tokio::try_join!(client_upgrade, kubelet_upgrade) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(pod = %pod_key, error = %e, "exec upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut kubelet = TokioIo::new(kubelet);
        tokio::select! {
            result = tokio::io::copy_bidirectional(&mut client, &mut kubelet) => {
                if let Err(e) = result {
                    tracing::debug!(pod = %pod_key, error = %e, "exec stream ended with an error");
                }
            }
            _ = shutdown.wait_for(|s| *s) => {
                tracing::debug!(pod = %pod_key, "exec stream closed at shutdown");
            }
        }
    });
    Ok(switched)
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if forwarded(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(query: &str) -> Vec<(String, String)> {
        pairs(Some(query))
    }

    #[test]
    fn containers_are_picked_as_upstream() {
        let pod = json!({"spec": {
            "containers": [{"name": "a"}, {"name": "b"}],
            "initContainers": [{"name": "init"}],
        }});
        let e = pick_container(&pod, "p", "").expect_err("ambiguous");
        assert_eq!(
            e.message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [init]"
        );
        assert_eq!(e.code(), 400);
        assert_eq!(pick_container(&pod, "p", "init").expect("init"), "init");
        let e = pick_container(&pod, "p", "c").expect_err("unknown");
        assert_eq!(e.message, "container c is not valid for pod p");
        let single = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(pick_container(&single, "p", "").expect("only"), "only");
    }

    #[test]
    fn log_options_are_validated_and_passed_on() {
        assert_eq!(
            log_query(&p("container=c&follow=true&tailLines=10&timestamps=1"), "p").expect("valid"),
            "follow=true&timestamps=true&tailLines=10"
        );
        assert_eq!(
            log_query(&p("sinceTime=2024-05-01T10:00:00%2B02:00"), "p").expect("valid"),
            "sinceTime=2024-05-01T08%3A00%3A00Z"
        );
        let e = log_query(&p("tailLines=-1&limitBytes=0"), "p").expect_err("invalid");
        assert_eq!(e.code(), 422);
        assert!(
            e.message.starts_with("PodLogOptions \"p\" is invalid"),
            "{e}"
        );
        let e =
            log_query(&p("sinceSeconds=5&sinceTime=2024-05-01T10:00:00Z"), "p").expect_err("both");
        assert!(e.message.contains("at most one of"), "{e}");
        assert_eq!(
            log_query(&p("follow=perhaps"), "p")
                .expect_err("bool")
                .code(),
            400
        );
    }

    #[test]
    fn exec_options_use_the_kubelet_spelling() {
        assert_eq!(
            exec_query(&p(
                "command=sh&command=-c&command=exit+3&stdout=true&stderr=true&container=c"
            ))
            .expect("valid"),
            "output=1&error=1&command=sh&command=-c&command=exit+3"
        );
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
