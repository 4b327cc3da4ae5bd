//! Subresources over REST: `status`, `scale` (deployments, replicasets, statefulsets,
//! replicationcontrollers), `binding` and `eviction` (pods). `log` and `exec` are proxied to
//! the kubelet by [`super::pod_proxy`]; `attach` and `portforward` are not served yet.

use super::{
    Params, RestState, flag, json_body, json_bytes, json_ok, method_not_allowed, object_response,
    patch_kind, read_response, success_status, wants_table, write_options,
};
use crate::objects::{DeleteOptions, Part, PatchKind, Written};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use rkube_types::{ApiError, Reason, ResourceInfo};
use serde_json::{Value, json};

#[allow(clippy::too_many_arguments)]
pub(super) async fn dispatch(
    state: &RestState,
    method: &Method,
    info: &'static ResourceInfo,
    ns: &str,
    name: &str,
    sub: &str,
    headers: &HeaderMap,
    params: &Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !info.has_subresource(sub) {
        return Err(ApiError::new(
            Reason::NotFound,
            format!(
                "the server could not find the requested resource ({}/{sub})",
                info.plural
            ),
        ));
    }
    let objects = &state.objects;
    let table = wants_table(headers, params);
    match (sub, method.as_str()) {
        ("status", "GET") => read_response(state, info, ns, name, table).await,
        ("status", "PUT") => {
            let body = json_body(headers, body)?;
            let written = objects
                .update(info, ns, name, &body, Part::Status, &write_options(params)?)
                .await?;
            Ok(object_response(StatusCode::OK, written, None, info))
        }
        ("status", "PATCH") => {
            let written = objects
                .patch_with(
                    info,
                    ns,
                    name,
                    patch_kind(headers)?,
                    &body,
                    Part::Status,
                    &write_options(params)?,
                    flag(params, "force"),
                )
                .await?;
            Ok(object_response(StatusCode::OK, written, None, info))
        }
        ("scale", "GET") => {
            let object = objects.get(info, ns, name).await?;
            Ok(json_ok(&scale_of(info, &parse(&object)?)))
        }
        ("scale", "PUT") | ("scale", "PATCH") => {
            let current = parse(&objects.get(info, ns, name).await?)?;
            let scale = scale_of(info, &current);
            let wanted = if method == Method::PUT {
                let body: Value = serde_json::from_slice(&json_body(headers, body)?)
                    .map_err(|e| ApiError::bad_request(format!("unable to decode Scale: {e}")))?;
                if let Some(rv) = body["metadata"]["resourceVersion"].as_str()
                    && !rv.is_empty()
                    && Some(rv) != current["metadata"]["resourceVersion"].as_str()
                {
                    return Err(ApiError::conflict(
                        info.group,
                        info.plural,
                        name,
                        crate::errors::MODIFIED,
                    ));
                }
                body
            } else {
                let mut doc = scale.clone();
                let patch: Value = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("unable to decode patch: {e}")))?;
                match patch_kind(headers)? {
                    PatchKind::Json => {
                        let p: json_patch::Patch = serde_json::from_value(patch).map_err(|e| {
                            ApiError::bad_request(format!("invalid JSON patch: {e}"))
                        })?;
                        json_patch::patch(&mut doc, &p).map_err(|e| {
                            ApiError::new(Reason::Invalid, format!("unable to apply patch: {e}"))
                        })?;
                    }
                    _ => json_patch::merge(&mut doc, &patch),
                }
                doc
            };
            let replicas = wanted["spec"]["replicas"].as_i64().ok_or_else(|| {
                ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    info.plural,
                    name,
                    vec![rkube_types::StatusCause::required("spec.replicas")],
                )
            })?;
            if replicas < 0 || replicas > i64::from(i32::MAX) {
                return Err(ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    info.plural,
                    name,
                    vec![rkube_types::StatusCause::invalid(
                        "spec.replicas",
                        &replicas.to_string(),
                        "must be greater than or equal to 0",
                    )],
                ));
            }
            let patch = json!({"spec": {"replicas": replicas}});
            let written = merge_patch(state, info, ns, name, &patch, params).await?;
            Ok(json_ok(&scale_of(info, &parse(&written.object)?)))
        }
        ("binding", "POST") => {
            let binding: Value = serde_json::from_slice(&json_body(headers, body)?)
                .map_err(|e| ApiError::bad_request(format!("unable to decode Binding: {e}")))?;
            let node = binding["target"]["name"].as_str().unwrap_or_default();
            if node.is_empty() {
                return Err(ApiError::invalid(
                    "",
                    "Binding",
                    "bindings",
                    name,
                    vec![rkube_types::StatusCause::required("target.name")],
                ));
            }
            let uid = binding["metadata"]["uid"].as_str();
            objects
                .bind(ns, name, node, uid, &write_options(params)?)
                .await?;
            Ok(json_bytes(
                StatusCode::CREATED,
                Bytes::from(
                    serde_json::to_vec(&success_status(json!({"name": name, "kind": "pods"})))
                        .unwrap_or_default(),
                ),
            ))
        }
        ("eviction", "POST") => {
            let eviction: Value = serde_json::from_slice(&json_body(headers, body)?)
                .map_err(|e| ApiError::bad_request(format!("unable to decode Eviction: {e}")))?;
            let opts = &eviction["deleteOptions"];
            let delete = DeleteOptions {
                uid: opts["preconditions"]["uid"].as_str().map(str::to_string),
                resource_version: opts["preconditions"]["resourceVersion"]
                    .as_str()
                    .map(str::to_string),
                grace_period_seconds: opts["gracePeriodSeconds"].as_i64(),
                propagation_policy: opts["propagationPolicy"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                dry_run: write_options(params)?.dry_run
                    || opts["dryRun"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|v| v == "All")),
            };
            // PodDisruptionBudgets are not consulted yet (a later issue: the disruption
            // controller keeps their status, eviction then refuses with 429).
            objects.delete(info, ns, name, &delete).await?;
            Ok(json_bytes(
                StatusCode::CREATED,
                Bytes::from(
                    serde_json::to_vec(&success_status(json!({"name": name, "kind": "pods"})))
                        .unwrap_or_default(),
                ),
            ))
        }
        ("finalize", "PUT") => {
            // The namespace controller's call: spec.finalizers only.
            let body: Value = serde_json::from_slice(&json_body(headers, body)?)
                .map_err(|e| ApiError::bad_request(format!("unable to decode Namespace: {e}")))?;
            let patch = json!({"spec": {"finalizers": body["spec"]["finalizers"].clone()}});
            let written = merge_patch(state, info, ns, name, &patch, params).await?;
            Ok(object_response(StatusCode::OK, written, None, info))
        }
        (_, "GET" | "PUT" | "PATCH" | "POST") => Err(ApiError::new(
            Reason::ServiceUnavailable,
            format!("{}/{sub} is not served by rkube yet", info.plural),
        )),
        _ => Err(method_not_allowed(method)),
    }
}

/// A merge patch of the main resource on behalf of a subresource write.
async fn merge_patch(
    state: &RestState,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    patch: &Value,
    params: &Params,
) -> Result<Written, ApiError> {
    let body = serde_json::to_vec(patch).unwrap_or_default();
    state
        .objects
        .patch(
            info,
            ns,
            name,
            PatchKind::Merge,
            &body,
            Part::Main,
            &write_options(params)?,
        )
        .await
}

fn parse(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::internal(format!("stored object is corrupt: {e}")))
}

/// The `autoscaling/v1` Scale of a workload.
fn scale_of(info: &ResourceInfo, obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let selector = match &obj["spec"]["selector"] {
        Value::Object(sel)
            if sel.contains_key("matchLabels") || sel.contains_key("matchExpressions") =>
        {
            serde_json::from_value(Value::Object(sel.clone()))
                .ok()
                .and_then(|s| rkube_types::selector::LabelSelector::from_api(&s).ok())
                .map(|s| s.to_string())
                .unwrap_or_default()
        }
        // ReplicationControllers have a plain map.
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    };
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(if info.kind == "StatefulSet" { 1 } else { 0 })},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}
