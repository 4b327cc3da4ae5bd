//! The gRPC face: `rkube.v1.Resources` over [`Objects`], with per-request metrics.

use crate::metrics::Metrics;
use crate::objects::{
    self, DeleteOptions, FieldValidation, ListQuery, Objects, Part, PatchKind, WriteOptions,
    Written,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use rkube_rpc::v1;
use rkube_types::{ApiError, ResourceInfo};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// The gRPC service.
#[derive(Clone)]
pub struct GrpcService {
    objects: Objects,
    metrics: Arc<Metrics>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl GrpcService {
    /// A service over `objects`; open watches end when `shutdown` turns true.
    pub fn new(
        objects: Objects,
        metrics: Arc<Metrics>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        GrpcService {
            objects,
            metrics,
            shutdown,
        }
    }

    fn observe<T>(&self, verb: &str, resource: &str, start: Instant, result: &Result<T, ApiError>) {
        let code = match result {
            Ok(_) => 200,
            Err(e) => e.code(),
        };
        self.metrics
            .observe_request(verb, resource, code, start.elapsed().as_secs_f64());
    }
}

fn target(r: Option<&v1::ResourceRef>) -> Result<(&'static ResourceInfo, String), ApiError> {
    let r = r.ok_or_else(|| ApiError::bad_request("resource is required"))?;
    let info = objects::resolve(&r.group, &r.version, &r.resource)?;
    Ok((
        info,
        if info.namespaced {
            r.namespace.clone()
        } else {
            String::new()
        },
    ))
}

fn query(o: Option<v1::ListOptions>) -> ListQuery {
    let o = o.unwrap_or_default();
    ListQuery {
        label_selector: o.label_selector,
        field_selector: o.field_selector,
        limit: o.limit,
        continue_token: o.continue_token,
        resource_version: o.resource_version,
        resource_version_match: o.resource_version_match,
        allow_bookmarks: o.allow_watch_bookmarks,
    }
}

fn written(result: Result<Written, ApiError>) -> Result<Response<v1::ObjectResponse>, Status> {
    object(result.map(|w| w.object))
}

fn object(result: Result<bytes::Bytes, ApiError>) -> Result<Response<v1::ObjectResponse>, Status> {
    result
        .map(|object| Response::new(v1::ObjectResponse { object }))
        .map_err(|e| rkube_rpc::to_grpc(&e))
}

fn resource_name(r: Option<&v1::ResourceRef>) -> String {
    r.map(|r| r.resource.clone()).unwrap_or_default()
}

#[tonic::async_trait]
impl rkube_rpc::Resources for GrpcService {
    async fn get(
        &self,
        request: Request<v1::GetRequest>,
    ) -> Result<Response<v1::ObjectResponse>, Status> {
        let start = Instant::now();
        let req = request.into_inner();
        let result = async {
            let (info, ns) = target(req.resource.as_ref())?;
            self.objects.get(info, &ns, &req.name).await
        }
        .await;
        self.observe("get", &resource_name(req.resource.as_ref()), start, &result);
        object(result)
    }

    async fn list(
        &self,
        request: Request<v1::ListRequest>,
    ) -> Result<Response<v1::ListResponse>, Status> {
        let start = Instant::now();
        let req = request.into_inner();
        let resource = resource_name(req.resource.as_ref());
        let result = async {
            let (info, ns) = target(req.resource.as_ref())?;
            self.objects.list(info, &ns, &query(req.options)).await
        }
        .await;
        self.observe("list", &resource, start, &result);
        let page = result.map_err(|e| rkube_rpc::to_grpc(&e))?;
        Ok(Response::new(v1::ListResponse {
            items: page.items.iter().map(|o| o.json.clone()).collect(),
            resource_version: page.revision.to_string(),
            continue_token: page
                .continue_after
                .map(|k| objects::encode_continue(page.revision, &k))
                .unwrap_or_default(),
            remaining_item_count: (page.remaining > 0).then_some(page.remaining as i64),
        }))
    }

    type WatchStream = BoxStream<'static, Result<v1::WatchEvent, Status>>;

    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let start = Instant::now();
        let req = request.into_inner();
        let timeout = req
            .options
            .as_ref()
            .map(|o| o.timeout_seconds)
            .unwrap_or_default();
        let resource = resource_name(req.resource.as_ref());
        let result = async {
            let (info, ns) = target(req.resource.as_ref())?;
            self.objects.watch(info, &ns, &query(req.options)).await
        }
        .await;
        self.observe("watch", &resource, start, &result);
        let subscription = result.map_err(|e| rkube_rpc::to_grpc(&e))?;
        let mut shutdown = self.shutdown.clone();
        let end = async move {
            let deadline = async {
                if timeout > 0 {
                    tokio::time::sleep(Duration::from_secs(timeout as u64)).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = deadline => {}
                _ = shutdown.wait_for(|s| *s) => {}
            }
        };
        let stream = subscription
            .into_stream()
            .map(|item| {
                Ok(v1::WatchEvent {
                    r#type: item.kind.as_str().to_string(),
                    object: item.object,
                    resource_version: item.revision.to_string(),
                })
            })
            .take_until(Box::pin(end))
            .boxed();
        Ok(Response::new(stream))
    }

    async fn create(
        &self,
        request: Request<v1::CreateRequest>,
    ) -> Result<Response<v1::ObjectResponse>, Status> {
        let start = Instant::now();
        let req = request.into_inner();
        let result = async {
            let (info, ns) = target(req.resource.as_ref())?;
            let opts = WriteOptions {
                dry_run: req.dry_run,
                field_manager: req.field_manager.clone(),
                // Daemons send typed objects; unknown fields are dropped quietly.
                field_validation: FieldValidation::Ignore,
            };
            match req.subresource.as_str() {
                "" => self.objects.create(info, &ns, &req.object, &opts).await,
                "binding" if info.group.is_empty() && info.plural == "pods" => {
                    let (name, node, uid) = binding_target(&req.object)?;
                    self.objects
                        .bind(&ns, &name, &node, uid.as_deref(), &opts)
                        .await
                }
                other => Err(ApiError::not_found(
                    info.group,
                    &format!("{}/{other}", info.plural),
                    "",
                )),
            }
        }
        .await;
        self.observe(
            "create",
            &resource_name(req.resource.as_ref()),
            start,
            &result,
        );
        written(result)
    }

    async fn update(
        &self,
        request: Request<v1::UpdateRequest>,
    ) -> Result<Response<v1::ObjectResponse>, Status> {
        self.update_part(request.into_inner(), Part::Main).await
    }

    async fn update_status(
        &self,
        request: Request<v1::UpdateRequest>,
    ) -> Result<Response<v1::ObjectResponse>, Status> {
        self.update_part(request.into_inner(), Part::Status).await
    }

    async fn patch(
        &self,
        request: Request<v1::PatchRequest>,
    ) -> Result<Response<v1::ObjectResponse>, Status> {
        let start = Instant::now();
        let req = request.into_inner();
        let result = async {
            let (info, ns) = target(req.resource.as_ref())?;
            let kind = match v1::PatchType::try_from(req.patch_type) {
                Ok(v1::PatchType::Json) => PatchKind::Json,
                Ok(v1::PatchType::Merge) => PatchKind::Merge,
                _ => {
                    return Err(ApiError::new(
                        rkube_types::Reason::UnsupportedMediaType,
                        "patch type must be JSON or MERGE",
                    ));
                }
            };
            let mut patch = req.patch.clone();
            let part = match req.subresource.as_str() {
                "" => Part::Main,
                "status" if info.has_status() => Part::Status,
                "finalize" if info.has_subresource("finalize") => {
                    patch = finalize_patch(kind, &req.patch)?;
                    Part::Main
                }
                other => {
                    return Err(ApiError::not_found(
                        info.group,
                        &format!("{}/{other}", info.plural),
                        &req.name,
                    ));
                }
            };
            let opts = WriteOptions {
                dry_run: req.dry_run,
                field_manager: req.field_manager.clone(),
                // Daemons send typed objects; unknown fields are dropped quietly.
                field_validation: FieldValidation::Ignore,
            };
            self.objects
                .patch(info, &ns, &req.name, kind, &patch, part, &opts)
                .await
        }
        .await;
        self.observe(
            "patch",
            &resource_name(req.resource.as_ref()),
            start,
            &result,
        );
        written(result)
    }

    async fn delete(
        &self,
        request: Request<v1::DeleteRequest>,
    ) -> Result<Response<v1::ObjectResponse>, Status> {
        let start = Instant::now();
        let req = request.into_inner();
        let result = async {
            let (info, ns) = target(req.resource.as_ref())?;
            let pre = req.preconditions.clone().unwrap_or_default();
            let opts = DeleteOptions {
                uid: pre.uid,
                resource_version: pre.resource_version,
                grace_period_seconds: req.grace_period_seconds,
                propagation_policy: req.propagation_policy.clone(),
                dry_run: req.dry_run,
            };
            self.objects.delete(info, &ns, &req.name, &opts).await
        }
        .await;
        self.observe(
            "delete",
            &resource_name(req.resource.as_ref()),
            start,
            &result,
        );
        object(result)
    }
}

impl GrpcService {
    async fn update_part(
        &self,
        req: v1::UpdateRequest,
        part: Part,
    ) -> Result<Response<v1::ObjectResponse>, Status> {
        let start = Instant::now();
        let verb = if part == Part::Status {
            "update_status"
        } else {
            "update"
        };
        let result = async {
            let (info, ns) = target(req.resource.as_ref())?;
            if part == Part::Status && !info.has_status() {
                return Err(ApiError::not_found(
                    info.group,
                    &format!("{}/status", info.plural),
                    &req.name,
                ));
            }
            let opts = WriteOptions {
                dry_run: req.dry_run,
                field_manager: req.field_manager.clone(),
                // Daemons send typed objects; unknown fields are dropped quietly.
                field_validation: FieldValidation::Ignore,
            };
            self.objects
                .update(info, &ns, &req.name, &req.object, part, &opts)
                .await
        }
        .await;
        self.observe(verb, &resource_name(req.resource.as_ref()), start, &result);
        written(result)
    }
}

/// A `namespaces/{name}/finalize` write as a merge patch of the namespace that touches
/// `spec.finalizers` only (and keeps a `metadata.resourceVersion` precondition), as the
/// REST face's `PUT .../finalize` does; the namespace is deleted when its last finalizer
/// goes. Only merge patches are accepted.
fn finalize_patch(kind: PatchKind, body: &[u8]) -> Result<bytes::Bytes, ApiError> {
    if kind != PatchKind::Merge {
        return Err(ApiError::bad_request(
            "namespaces/finalize takes a merge patch of spec.finalizers",
        ));
    }
    let patch: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("unable to decode patch: {e}")))?;
    let Some(finalizers) = patch["spec"].get("finalizers") else {
        return Err(ApiError::bad_request(
            "namespaces/finalize takes a merge patch of spec.finalizers",
        ));
    };
    let mut only = serde_json::json!({"spec": {"finalizers": finalizers}});
    if let Some(rv) = patch["metadata"].get("resourceVersion") {
        only["metadata"] = serde_json::json!({"resourceVersion": rv});
    }
    Ok(serde_json::to_vec(&only).unwrap_or_default().into())
}

/// The pod name, the node and the pod UID (if given) of a v1 `Binding` body; 422 without a
/// name or a target.
fn binding_target(body: &[u8]) -> Result<(String, String, Option<String>), ApiError> {
    let binding: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("unable to decode Binding: {e}")))?;
    let name = binding["metadata"]["name"].as_str().unwrap_or_default();
    let node = binding["target"]["name"].as_str().unwrap_or_default();
    let mut causes = Vec::new();
    if name.is_empty() {
        causes.push(rkube_types::StatusCause::required("metadata.name"));
    }
    if node.is_empty() {
        causes.push(rkube_types::StatusCause::required("target.name"));
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("", "Binding", "bindings", name, causes));
    }
    let uid = binding["metadata"]["uid"].as_str().map(str::to_string);
    Ok((name.to_string(), node.to_string(), uid))
}
