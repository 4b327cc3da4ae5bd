//! The Kubernetes REST face: discovery, and every verb on every registered resource under
//! `/api/v1` and `/apis/{group}/{version}`, over the same [`Objects`] as the gRPC face.
//!
//! Responses are Kubernetes JSON; lists and watch events are assembled from the stored bytes
//! without re-serializing the objects; `Accept: ...;as=Table` gets a `meta.k8s.io/v1` Table
//! for `kubectl get`. Errors are `metav1.Status` objects with the HTTP code of their reason.

mod discovery;
mod pod_proxy;
mod protobuf;
mod subresources;

pub use discovery::KUBERNETES_MINOR;

use crate::metrics::Metrics;
use crate::objects::{
    self, DeleteOptions, FieldValidation, ListQuery, Objects, Part, PatchKind, WriteOptions,
    Written,
};
use crate::watch_cache::{WatchItem, WatchType};
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use rkube_types::printers::{self, IncludeObject};
use rkube_types::{ApiError, Reason, ResourceInfo, registry};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Longest a REST watch lasts without `timeoutSeconds` (Kubernetes picks 30–60 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// What the REST handlers share.
#[derive(Clone)]
pub struct RestState {
    objects: Objects,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    server_address: String,
}

/// The REST routes, to merge beside the gRPC ones.
pub fn router(
    objects: Objects,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    server_address: String,
) -> Router {
    let state = RestState {
        objects,
        metrics,
        shutdown,
        server_address,
    };
    Router::new()
        .route("/version", get(|| async { json_ok(&discovery::version()) }))
        .route(
            "/openapi/v3",
            get(|| async { json_bytes(StatusCode::OK, crate::openapi::root()) }),
        )
        .route(
            "/openapi/v3/{*path}",
            get(
                |axum::extract::Path(path): axum::extract::Path<String>| async move {
                    match crate::openapi::document(&path) {
                        Some(doc) => json_bytes(StatusCode::OK, doc),
                        None => error_response(&ApiError::new(
                            Reason::NotFound,
                            format!("no OpenAPI document for {path:?}"),
                        )),
                    }
                },
            ),
        )
        .route("/api", any(handle))
        .route("/api/{*rest}", any(handle))
        .route("/apis", any(handle))
        .route("/apis/{*rest}", any(handle))
        // Served by the pod's kubelet; their own routes, as exec upgrades the connection.
        .merge(pod_proxy::routes())
        // Room for one object at the limit (and some), so oversized bodies get our 413.
        .layer(axum::extract::DefaultBodyLimit::max(
            2 * objects::MAX_OBJECT_BYTES + 64 * 1024,
        ))
        .with_state(state)
}

/// Where a request path points.
enum Target {
    /// All objects of a resource (in one namespace, or in all when `ns` is empty).
    Collection {
        info: &'static ResourceInfo,
        ns: String,
    },
    /// One object.
    Object {
        info: &'static ResourceInfo,
        ns: String,
        name: String,
    },
    /// `POST /api/v1/namespaces/{ns}/bindings`: the older way to bind a pod, named in the body.
    Bindings { ns: String },
    /// A subresource of one object.
    Sub {
        info: &'static ResourceInfo,
        ns: String,
        name: String,
        sub: String,
    },
}

/// Parses `/api/v1/...` and `/apis/{group}/{version}/...` into a discovery document or a
/// target.
fn route(path: &str) -> Result<Result<Target, Value>, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let not_found = || {
        ApiError::new(
            Reason::NotFound,
            "the server could not find the requested resource",
        )
    };
    let (group, version, rest) = match segments.as_slice() {
        ["api"] => return Ok(Err(Value::Null)),
        ["apis"] => return Ok(Err(discovery::api_groups())),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group] => return discovery::api_group(group).map(Err).ok_or_else(not_found),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(not_found()),
    };
    let lookup = |plural: &str| {
        registry::lookup(group, version, plural).ok_or_else(|| {
            ApiError::new(
                Reason::NotFound,
                format!(
                    "the server could not find the requested resource ({})",
                    rkube_types::status::qualified(group, plural)
                ),
            )
        })
    };
    let owned = |s: &str| s.to_string();
    let target = match rest {
        ["namespaces", ns, "bindings"] if group.is_empty() => Target::Bindings { ns: owned(ns) },
        [] => {
            return discovery::resource_list(group, version)
                .map(Err)
                .ok_or_else(not_found);
        }
        ["namespaces", ns, plural, tail @ ..]
            if registry::lookup(group, version, plural).is_some_and(|i| i.namespaced) =>
        {
            let info = lookup(plural)?;
            match tail {
                [] => Target::Collection {
                    info,
                    ns: owned(ns),
                },
                [name] => Target::Object {
                    info,
                    ns: owned(ns),
                    name: owned(name),
                },
                [name, sub] => Target::Sub {
                    info,
                    ns: owned(ns),
                    name: owned(name),
                    sub: owned(sub),
                },
                _ => return Err(not_found()),
            }
        }
        [plural, tail @ ..] => {
            let info = lookup(plural)?;
            match tail {
                [] => Target::Collection {
                    info,
                    ns: String::new(),
                },
                [_, ..] if info.namespaced => return Err(not_found()),
                [name] => Target::Object {
                    info,
                    ns: String::new(),
                    name: owned(name),
                },
                [name, sub] => Target::Sub {
                    info,
                    ns: String::new(),
                    name: owned(name),
                    sub: owned(sub),
                },
                _ => return Err(not_found()),
            }
        }
    };
    Ok(Ok(target))
}

type Params = HashMap<String, String>;

fn param<'a>(params: &'a Params, key: &str) -> &'a str {
    params.get(key).map(String::as_str).unwrap_or_default()
}

/// A boolean query parameter; Go's strconv.ParseBool spellings (Python sends `True`).
fn flag(params: &Params, key: &str) -> bool {
    matches!(
        param(params, key),
        "true" | "True" | "TRUE" | "t" | "T" | "1"
    )
}

/// The Table request in an Accept header, if any.
fn wants_table(headers: &HeaderMap, params: &Params) -> Option<IncludeObject> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .unwrap_or_default();
    if !accept.split(',').any(|part| part.contains("as=Table")) {
        return None;
    }
    Some(match param(params, "includeObject") {
        "None" => IncludeObject::None,
        "Object" => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    })
}

fn json_ok(value: &Value) -> Response {
    json_bytes(
        StatusCode::OK,
        Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
    )
}

fn json_bytes(code: StatusCode, body: Bytes) -> Response {
    (
        code,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// A Kubernetes error as a `Status` response.
pub fn error_response(err: &ApiError) -> Response {
    let code = StatusCode::from_u16(err.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_bytes(
        code,
        Bytes::from(serde_json::to_vec(&err.to_status()).unwrap_or_default()),
    )
}

fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "'"));
        if let Ok(v) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    response
}

fn success_status(details: Value) -> Value {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Success", "details": details,
    })
}

fn now_seconds() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn verb_of(method: &Method, target: &Target, watching: bool) -> &'static str {
    match (method.as_str(), target) {
        ("GET", Target::Collection { .. }) if watching => "watch",
        ("GET", Target::Collection { .. }) => "list",
        ("GET", _) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", Target::Collection { .. }) => "deletecollection",
        ("DELETE", _) => "delete",
        _ => "other",
    }
}

async fn handle(
    State(state): State<RestState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let mut params = match query {
        Ok(Query(params)) => params,
        Err(e) => return error_response(&ApiError::bad_request(format!("invalid query: {e}"))),
    };
    let body = match body {
        Ok(body) => body,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error_response(&ApiError::too_large(format!(
                "Request entity too large: limit is {}",
                objects::MAX_OBJECT_BYTES
            )));
        }
        Err(e) => return error_response(&ApiError::bad_request(format!("invalid body: {e}"))),
    };
    let start = Instant::now();
    if param(&params, "fieldManager").is_empty() {
        // As Kubernetes: without a fieldManager, writes are recorded under the client's
        // name from its User-Agent (`kubectl/v1.32.0 (...)` → `kubectl`).
        let agent = headers
            .get(header::USER_AGENT)
            .and_then(|a| a.to_str().ok())
            .and_then(|a| a.split('/').next())
            .filter(|a| !a.is_empty())
            .unwrap_or("unknown");
        params.insert("fieldManager".into(), agent.chars().take(128).collect());
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .unwrap_or_default();
    if matches!(uri.path().trim_end_matches('/'), "/api" | "/apis")
        && discovery::wants_aggregated(accept)
    {
        let doc = discovery::aggregated(uri.path().trim_end_matches('/') == "/api");
        return (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE),
            )],
            serde_json::to_vec(&doc).unwrap_or_default(),
        )
            .into_response();
    }
    let target = match route(uri.path()) {
        Ok(Ok(target)) => target,
        Ok(Err(Value::Null)) => return json_ok(&discovery::api_versions(&state.server_address)),
        Ok(Err(doc)) => return json_ok(&doc),
        Err(e) => return error_response(&e),
    };
    let watching = flag(&params, "watch");
    let verb = verb_of(&method, &target, watching);
    let resource = match &target {
        Target::Collection { info, .. } | Target::Object { info, .. } => info.plural.to_string(),
        // Only known subresources become label values: a client must not grow the metrics.
        Target::Sub { info, sub, .. } if info.has_subresource(sub) => {
            format!("{}/{sub}", info.plural)
        }
        Target::Sub { info, .. } => format!("{}/unknown", info.plural),
        Target::Bindings { .. } => "bindings".to_string(),
    };
    let response = match dispatch(&state, &method, target, &headers, &params, body, watching).await
    {
        Ok(response) => response,
        Err(e) => error_response(&e),
    };
    state.metrics.observe_request(
        verb,
        &resource,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}

fn write_options(params: &Params) -> Result<WriteOptions, ApiError> {
    let dry_run = match param(params, "dryRun") {
        "" => false,
        "All" => true,
        other => {
            return Err(ApiError::bad_request(format!(
                "unsupported dryRun value {other:?}: supported values: \"All\""
            )));
        }
    };
    Ok(WriteOptions {
        dry_run,
        field_manager: param(params, "fieldManager").to_string(),
        field_validation: FieldValidation::parse(param(params, "fieldValidation"))?,
    })
}

fn list_query(params: &Params) -> Result<ListQuery, ApiError> {
    let limit = match param(params, "limit") {
        "" => 0,
        l => l
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
    };
    Ok(ListQuery {
        label_selector: param(params, "labelSelector").to_string(),
        field_selector: param(params, "fieldSelector").to_string(),
        limit,
        continue_token: param(params, "continue").to_string(),
        resource_version: param(params, "resourceVersion").to_string(),
        resource_version_match: param(params, "resourceVersionMatch").to_string(),
        allow_bookmarks: flag(params, "allowWatchBookmarks"),
    })
}

/// DeleteOptions from the body (kubectl sends one) and the query.
fn delete_options(params: &Params, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let from_body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("unable to decode DeleteOptions: {e}")))?
    };
    let grace = match param(params, "gracePeriodSeconds") {
        "" => from_body["gracePeriodSeconds"].as_i64(),
        g => Some(
            g.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?,
        ),
    };
    let mut propagation = match param(params, "propagationPolicy") {
        "" => from_body["propagationPolicy"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        p => p.to_string(),
    };
    let orphan = match param(params, "orphanDependents") {
        "" => from_body["orphanDependents"].as_bool(),
        o => Some(o == "true"),
    };
    if propagation.is_empty() && orphan == Some(true) {
        propagation = "Orphan".into();
    }
    let pre = &from_body["preconditions"];
    let dry_run = match param(params, "dryRun") {
        "" => from_body["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "All")),
        "All" => true,
        other => {
            return Err(ApiError::bad_request(format!(
                "unsupported dryRun value {other:?}: supported values: \"All\""
            )));
        }
    };
    Ok(DeleteOptions {
        uid: pre["uid"].as_str().map(str::to_string),
        resource_version: pre["resourceVersion"].as_str().map(str::to_string),
        grace_period_seconds: grace,
        propagation_policy: propagation,
        dry_run,
    })
}

fn patch_kind(headers: &HeaderMap) -> Result<PatchKind, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or_default();
    let ct = ct.split(';').next().unwrap_or_default().trim();
    match ct {
        "application/json-patch+json" => Ok(PatchKind::Json),
        "application/merge-patch+json" => Ok(PatchKind::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(PatchKind::Apply),
        other => Err(ApiError::new(
            Reason::UnsupportedMediaType,
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
            ),
        )),
    }
}

/// A request body as JSON: YAML bodies (`application/yaml`) are converted.
fn json_body(headers: &HeaderMap, body: Bytes) -> Result<Bytes, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or_default();
    if ct.starts_with("application/yaml") {
        let value = crate::yaml::to_json(&body)
            .map_err(|e| ApiError::bad_request(format!("unable to decode YAML body: {e}")))?;
        return Ok(Bytes::from(serde_json::to_vec(&value).unwrap_or_default()));
    }
    if ct.starts_with("application/vnd.kubernetes.protobuf") {
        let value = protobuf::decode(&body)?;
        return Ok(Bytes::from(serde_json::to_vec(&value).unwrap_or_default()));
    }
    Ok(body)
}

fn object_response(
    code: StatusCode,
    written: Written,
    table: Option<IncludeObject>,
    info: &ResourceInfo,
) -> Response {
    let response = match table {
        Some(include) => match serde_json::from_slice::<Value>(&written.object) {
            Ok(obj) => {
                let rv = obj["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                json_ok(&printers::table(
                    info,
                    &[obj],
                    now_seconds(),
                    include,
                    &rv,
                    "",
                    None,
                ))
            }
            Err(_) => json_bytes(code, written.object),
        },
        None => json_bytes(code, written.object),
    };
    let mut response = with_warnings(response, &written.warnings);
    *response.status_mut() = code;
    response
}

/// A GET of one object (or of its status), as JSON or as a one-row Table.
async fn read_response(
    state: &RestState,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    table: Option<IncludeObject>,
) -> Result<Response, ApiError> {
    let object = state.objects.get(info, ns, name).await?;
    let written = Written {
        object,
        warnings: Vec::new(),
    };
    Ok(object_response(StatusCode::OK, written, table, info))
}

#[allow(clippy::too_many_arguments)]
async fn dispatch(
    state: &RestState,
    method: &Method,
    target: Target,
    headers: &HeaderMap,
    params: &Params,
    body: Bytes,
    watching: bool,
) -> Result<Response, ApiError> {
    let objects = &state.objects;
    let table = wants_table(headers, params);
    match target {
        Target::Collection { info, ns }
            if info.namespaced
                && ns.is_empty()
                && matches!(*method, Method::POST | Method::DELETE) =>
        {
            // As upstream: namespaced objects are created and deleted inside a namespace.
            Err(method_not_allowed(method))
        }
        Target::Collection { info, ns } => match *method {
            Method::GET if watching => watch(state, info, &ns, params, table).await,
            Method::GET => {
                let q = list_query(params)?;
                let page = objects.list(info, &ns, &q).await?;
                let token = page
                    .continue_after
                    .as_deref()
                    .map(|k| objects::encode_continue(page.revision, k))
                    .unwrap_or_default();
                let remaining = (page.remaining > 0).then_some(page.remaining as i64);
                if let Some(include) = table {
                    let items: Vec<Value> = page
                        .items
                        .iter()
                        .filter_map(|o| serde_json::from_slice(&o.json).ok())
                        .collect();
                    let rv = page.revision.to_string();
                    return Ok(json_ok(&printers::table(
                        info,
                        &items,
                        now_seconds(),
                        include,
                        &rv,
                        &token,
                        remaining,
                    )));
                }
                Ok(json_bytes(
                    StatusCode::OK,
                    list_body(
                        info,
                        page.revision,
                        &token,
                        remaining,
                        page.items.iter().map(|o| &o.json),
                    ),
                ))
            }
            Method::POST => {
                let body = json_body(headers, body)?;
                let written = objects
                    .create(info, &ns, &body, &write_options(params)?)
                    .await?;
                Ok(object_response(StatusCode::CREATED, written, table, info))
            }
            Method::DELETE => {
                let q = list_query(params)?;
                let opts = delete_options(params, &body)?;
                let page = objects.list(info, &ns, &q).await?;
                let mut deleted = Vec::new();
                for obj in page.items {
                    match objects.delete(info, &obj.namespace, &obj.name, &opts).await {
                        Ok(bytes) => deleted.push(bytes),
                        Err(e) if e.reason == Reason::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(json_bytes(
                    StatusCode::OK,
                    list_body(
                        info,
                        objects.caches().revision.get(),
                        "",
                        None,
                        deleted.iter(),
                    ),
                ))
            }
            _ => Err(method_not_allowed(method)),
        },
        Target::Object { info, ns, name } => match *method {
            Method::GET => read_response(state, info, &ns, &name, table).await,
            Method::PUT => {
                let body = json_body(headers, body)?;
                let written = objects
                    .update(info, &ns, &name, &body, Part::Main, &write_options(params)?)
                    .await?;
                Ok(object_response(StatusCode::OK, written, table, info))
            }
            Method::PATCH => {
                let kind = patch_kind(headers)?;
                let written = objects
                    .patch_with(
                        info,
                        &ns,
                        &name,
                        kind,
                        &body,
                        Part::Main,
                        &write_options(params)?,
                        flag(params, "force"),
                    )
                    .await?;
                Ok(object_response(StatusCode::OK, written, table, info))
            }
            Method::DELETE => {
                let opts = delete_options(params, &body)?;
                let bytes = objects.delete(info, &ns, &name, &opts).await?;
                Ok(json_bytes(StatusCode::OK, bytes))
            }
            _ => Err(method_not_allowed(method)),
        },
        Target::Bindings { ns } if *method == Method::POST => {
            let binding: Value = serde_json::from_slice(&json_body(headers, body.clone())?)
                .map_err(|e| ApiError::bad_request(format!("unable to decode Binding: {e}")))?;
            let name = binding["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let info = registry::lookup("", "v1", "pods")
                .ok_or_else(|| ApiError::internal("pods missing from the registry"))?;
            subresources::dispatch(
                state, method, info, &ns, &name, "binding", headers, params, body,
            )
            .await
        }
        Target::Bindings { .. } => Err(method_not_allowed(method)),
        Target::Sub {
            info,
            ns,
            name,
            sub,
        } => {
            subresources::dispatch(state, method, info, &ns, &name, &sub, headers, params, body)
                .await
        }
    }
}

fn method_not_allowed(method: &Method) -> ApiError {
    ApiError::new(
        Reason::MethodNotAllowed,
        format!("the server does not allow this method on the requested resource ({method})"),
    )
}

/// A `{Kind}List` assembled from stored object bytes, without re-serializing them.
fn list_body<'a>(
    info: &ResourceInfo,
    revision: u64,
    continue_token: &str,
    remaining: Option<i64>,
    items: impl Iterator<Item = &'a Bytes>,
) -> Bytes {
    let mut meta = serde_json::json!({"resourceVersion": revision.to_string()});
    if !continue_token.is_empty() {
        meta["continue"] = continue_token.into();
    }
    if let Some(r) = remaining {
        meta["remainingItemCount"] = r.into();
    }
    let mut out = BytesMut::new();
    out.put_slice(
        format!(
            "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
            info.kind,
            info.api_version(),
            meta
        )
        .as_bytes(),
    );
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(item);
    }
    out.put_slice(b"]}");
    out.freeze()
}

/// One watch event line: `{"type":...,"object":...}\n`, reusing the object's bytes.
fn event_line(kind: &str, object: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(object.len() + 32);
    out.put_slice(b"{\"type\":\"");
    out.put_slice(kind.as_bytes());
    out.put_slice(b"\",\"object\":");
    out.put_slice(object);
    out.put_slice(b"}\n");
    out.freeze()
}

async fn watch(
    state: &RestState,
    info: &'static ResourceInfo,
    ns: &str,
    params: &Params,
    table: Option<IncludeObject>,
) -> Result<Response, ApiError> {
    let q = list_query(params)?;
    let timeout = match param(params, "timeoutSeconds") {
        "" => DEFAULT_WATCH_TIMEOUT,
        t => Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
    };
    let subscription = state.objects.watch(info, ns, &q).await?;
    let mut shutdown = state.shutdown.clone();
    let end = async move {
        tokio::select! {
            _ = tokio::time::sleep(timeout) => {}
            _ = shutdown.wait_for(|s| *s) => {}
        }
    };
    let stream = subscription
        .into_stream()
        .filter_map(move |item: WatchItem| {
            let line = match table {
                None => Some(event_line(item.kind.as_str(), &item.object)),
                // Bookmarks are not rows; Table watchers do not get them.
                Some(_) if item.kind == WatchType::Bookmark => None,
                Some(include) => serde_json::from_slice::<Value>(&item.object)
                    .ok()
                    .map(|obj| {
                        let rv = item.revision.to_string();
                        let t =
                            printers::table(info, &[obj], now_seconds(), include, &rv, "", None);
                        event_line(
                            item.kind.as_str(),
                            &serde_json::to_vec(&t).unwrap_or_default(),
                        )
                    }),
            };
            futures::future::ready(line.map(Ok::<_, std::convert::Infallible>))
        })
        .take_until(Box::pin(end));
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Body::from_stream(stream),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> Target {
        match route(path) {
            Ok(Ok(t)) => t,
            Ok(Err(doc)) => panic!("{path}: a discovery document, not a target: {doc}"),
            Err(e) => panic!("{path}: {e}"),
        }
    }

    #[test]
    fn paths_route_to_collections_objects_and_subresources() {
        match target("/api/v1/namespaces/demo/pods") {
            Target::Collection { info, ns } => {
                assert_eq!((info.plural, ns.as_str()), ("pods", "demo"))
            }
            _ => panic!("namespaced collection"),
        }
        match target("/apis/apps/v1/namespaces/demo/deployments/web/scale") {
            Target::Sub {
                info,
                ns,
                name,
                sub,
            } => {
                assert_eq!(
                    (info.plural, ns.as_str(), name.as_str(), sub.as_str()),
                    ("deployments", "demo", "web", "scale")
                )
            }
            _ => panic!("subresource"),
        }
        // A namespace's own subresource, not a collection inside it.
        match target("/api/v1/namespaces/demo/status") {
            Target::Sub {
                info, name, sub, ..
            } => assert_eq!(
                (info.plural, name.as_str(), sub.as_str()),
                ("namespaces", "demo", "status")
            ),
            _ => panic!("namespace status"),
        }
        match target("/api/v1/namespaces/demo") {
            Target::Object { info, name, .. } => {
                assert_eq!((info.plural, name.as_str()), ("namespaces", "demo"))
            }
            _ => panic!("namespace object"),
        }
        match target("/api/v1/pods") {
            Target::Collection { ns, .. } => assert!(ns.is_empty(), "all namespaces"),
            _ => panic!("cluster-wide list"),
        }
        assert!(matches!(
            target("/api/v1/namespaces/demo/bindings"),
            Target::Bindings { .. }
        ));
    }

    #[test]
    fn unknown_paths_are_404_not_panics() {
        for path in [
            "/api/v1/widgets",
            "/apis/nope.example.com/v1/things",
            "/api/v1/pods/web",
            "/api/v1/namespaces/demo/pods/a/b/c",
            "/apis/apps",
            "/api/v2",
        ] {
            match route(path) {
                Err(e) => assert_eq!(e.code(), 404, "{path}"),
                Ok(Ok(_)) => panic!("{path}: routed"),
                Ok(Err(doc)) if path == "/apis/apps" => assert_eq!(doc["kind"], "APIGroup"),
                Ok(Err(doc)) => panic!("{path}: {doc}"),
            }
        }
    }

    #[test]
    fn list_bodies_embed_the_stored_bytes() {
        let info = registry::lookup("", "v1", "configmaps").expect("registered");
        let items = [
            Bytes::from_static(b"{\"a\":1}"),
            Bytes::from_static(b"{\"b\":2}"),
        ];
        let body = list_body(info, 7, "tok", Some(3), items.iter());
        let v: Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(v["kind"], "ConfigMapList");
        assert_eq!(v["metadata"]["resourceVersion"], "7");
        assert_eq!(v["metadata"]["continue"], "tok");
        assert_eq!(v["metadata"]["remainingItemCount"], 3);
        assert_eq!(v["items"][1]["b"], 2);
        let line = event_line("ADDED", b"{\"x\":true}");
        assert_eq!(&line[..], b"{\"type\":\"ADDED\",\"object\":{\"x\":true}}\n");
    }
}
