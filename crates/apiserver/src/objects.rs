//! The verbs of the Kubernetes API over the store and the watch caches, independent of the
//! face (gRPC now, REST later) that carries them: get, list, watch, create, update, patch,
//! delete, with admission (defaults, system fields, validation) on every write.

mod admission;
pub mod default_tolerations;
pub mod services;

use crate::caches::Caches;
use crate::defaults;
use crate::errors::{self, MODIFIED};
use crate::watch_cache::{ListPage, Subscription, WatchStart};
pub use admission::encode_continue;
use admission::*;
use bytes::Bytes;
use rkube_store::{Error as StoreError, Revision, Store};
use rkube_types::{ApiError, Reason, ResourceInfo, registry};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Objects larger than this are refused with 413 (etcd's limit, which Kubernetes inherits).
pub const MAX_OBJECT_BYTES: usize = rkube_rpc::MAX_OBJECT_BYTES;

/// Lists with at most this many objects are answered in one response whatever `limit` asks:
/// `kubectl get` pages by 500, and its client-side rate limit (5 requests/s after a burst of
/// 10) then spends seconds waiting between pages of a 10,000-object list.
pub const DEFAULT_UNPAGED_LIST_MAX: usize = 20_000;

/// How long a read waits for the watch caches to reach the revision it must reflect.
const CACHE_WAIT: Duration = Duration::from_secs(5);

/// The longest grace period honoured (a century); longer ones are cut to it.
const MAX_GRACE_SECONDS: i64 = 100 * 365 * 24 * 3600;

/// How often an unconditional write retries after losing a compare-and-swap race.
const MAX_RETRIES: usize = 32;

/// Options of list and watch, as in `metav1.ListOptions`.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Label selector, Kubernetes syntax.
    pub label_selector: String,
    /// Field selector, Kubernetes syntax.
    pub field_selector: String,
    /// Page size; 0 for everything.
    pub limit: i64,
    /// Continue token of the previous page.
    pub continue_token: String,
    /// `""`, `"0"` or a revision.
    pub resource_version: String,
    /// `""`, `NotOlderThan` or `Exact`.
    pub resource_version_match: String,
    /// Watch: send bookmarks.
    pub allow_bookmarks: bool,
}

/// What to do with fields the object's type does not have (`fieldValidation`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and warn (Kubernetes' default).
    #[default]
    Warn,
    /// Refuse the request.
    Strict,
}

impl FieldValidation {
    /// Parses the `fieldValidation` query value (empty = the default).
    pub fn parse(value: &str) -> Result<Self, ApiError> {
        match value {
            "" | "Warn" => Ok(FieldValidation::Warn),
            "Ignore" => Ok(FieldValidation::Ignore),
            "Strict" => Ok(FieldValidation::Strict),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation {other:?} is invalid: valid values are Ignore, Warn and Strict"
            ))),
        }
    }
}

/// Options of create, update and patch.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Validate and admit, but store nothing.
    pub dry_run: bool,
    /// The writer's name, for managed fields.
    pub field_manager: String,
    /// Unknown fields: drop, warn or refuse.
    pub field_validation: FieldValidation,
}

/// The outcome of a write: the object as stored, and warnings for the client.
#[derive(Debug, Clone)]
pub struct Written {
    /// Kubernetes JSON of the object after the write.
    pub object: Bytes,
    /// Warnings (`Warning:` headers on REST), e.g. unknown fields dropped.
    pub warnings: Vec<String>,
}

/// Options of delete, as in `metav1.DeleteOptions`.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Delete only if the object has this uid.
    pub uid: Option<String>,
    /// Delete only if the object is at this resourceVersion.
    pub resource_version: Option<String>,
    /// Seconds of grace; `None` for the object's default; 0 to delete now.
    pub grace_period_seconds: Option<i64>,
    /// `""`/`Background`, `Foreground` or `Orphan`.
    pub propagation_policy: String,
    /// Check, but delete nothing.
    pub dry_run: bool,
}

/// Patch formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// RFC 6902.
    Json,
    /// RFC 7386.
    Merge,
    /// Kubernetes' strategic merge patch (merge keys for built-in lists).
    Strategic,
    /// Server-side apply (`application/apply-patch+yaml`).
    Apply,
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Everything but the status (for resources with a status subresource).
    Main,
    /// The status subresource: only the status.
    Status,
}

/// Resolves `group/version/resource` in the registry, or 404 as Kubernetes answers.
pub fn resolve(
    group: &str,
    version: &str,
    resource: &str,
) -> Result<&'static ResourceInfo, ApiError> {
    registry::lookup(group, version, resource).ok_or_else(|| {
        ApiError::new(
            Reason::NotFound,
            format!(
                "the server could not find the requested resource ({})",
                rkube_types::status::qualified(group, resource)
            ),
        )
        .with_details(group, resource, "")
    })
}

/// The API verbs over one store and its caches.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn Store>,
    caches: Arc<Caches>,
    unpaged_list_max: usize,
    default_tolerations: default_tolerations::Seconds,
    services: Arc<services::ServiceAllocator>,
}

impl Objects {
    /// Verbs over `store`, reading through `caches`.
    pub fn new(store: Arc<dyn Store>, caches: Arc<Caches>) -> Self {
        Objects {
            store,
            caches,
            unpaged_list_max: DEFAULT_UNPAGED_LIST_MAX,
            default_tolerations: Default::default(),
            services: Default::default(),
        }
    }

    /// Services get their cluster IPs and node ports from `allocator`.
    pub fn with_service_allocator(mut self, allocator: Arc<services::ServiceAllocator>) -> Self {
        self.services = allocator;
        self
    }

    /// The ClusterIP and NodePort allocation tables.
    pub fn services(&self) -> &Arc<services::ServiceAllocator> {
        &self.services
    }

    /// New pods tolerate the not-ready and unreachable taints for `seconds` unless they say
    /// otherwise.
    pub fn with_default_tolerations(mut self, seconds: default_tolerations::Seconds) -> Self {
        self.default_tolerations = seconds;
        self
    }

    /// Lists of at most `max` objects are answered whole even when a `limit` asks for
    /// pages (see [`DEFAULT_UNPAGED_LIST_MAX`]); 0 always pages.
    pub fn with_unpaged_list_max(mut self, max: usize) -> Self {
        self.unpaged_list_max = max;
        self
    }

    /// The first page of a list: the whole selection when it has at most
    /// `unpaged_list_max` objects, which the API allows ("servers may choose not to support
    /// the limit argument and will return all of the available results") and which makes
    /// the list one consistent snapshot; otherwise pages of `limit`.
    fn first_page(
        &self,
        cache: &crate::watch_cache::WatchCache,
        filter: &crate::watch_cache::Filter,
        limit: usize,
    ) -> ListPage {
        if limit == 0 {
            return cache.list(filter, 0, None, &self.caches.revision);
        }
        let mut page = cache.list(filter, 0, None, &self.caches.revision);
        if page.items.len() <= self.unpaged_list_max.max(limit) {
            return page;
        }
        page.remaining = page.items.len() - limit;
        page.items.truncate(limit);
        page.continue_after = page.items.last().map(|o| o.key.clone());
        page
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The caches.
    pub fn caches(&self) -> &Arc<Caches> {
        &self.caches
    }

    /// The object's Kubernetes JSON.
    pub async fn get(&self, info: &ResourceInfo, ns: &str, name: &str) -> Result<Bytes, ApiError> {
        let key = object_key(info, ns, name)?;
        match self.store.get(&key).await {
            Ok(Some(rec)) => Ok(rec.value),
            Ok(None) => Err(ApiError::not_found(info.group, info.plural, name)),
            Err(e) => Err(errors::from_store(info, name, e)),
        }
    }

    /// A page of the selected objects, from the watch cache.
    pub async fn list(
        &self,
        info: &ResourceInfo,
        ns: &str,
        q: &ListQuery,
    ) -> Result<ListPage, ApiError> {
        let filter = filter(info, ns, q)?;
        let cache = self.cache(info)?;
        let limit = usize::try_from(q.limit.max(0)).unwrap_or(usize::MAX);
        if !q.continue_token.is_empty() {
            if !q.resource_version.is_empty() && q.resource_version != "0" {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let (revision, after) = decode_continue(&q.continue_token)?;
            let mut page = cache.list(&filter, limit, Some(&after), &self.caches.revision);
            page.revision = revision;
            return Ok(page);
        }
        let exact = match q.resource_version_match.as_str() {
            "" | "NotOlderThan" => false,
            "Exact" => true,
            other => {
                return Err(ApiError::bad_request(format!(
                    "unsupported resourceVersionMatch {other:?}: supported values: \"Exact\", \"NotOlderThan\""
                )));
            }
        };
        match q.resource_version.as_str() {
            "" => {
                if exact {
                    return Err(ApiError::bad_request(
                        "resourceVersionMatch is forbidden unless resourceVersion is provided",
                    ));
                }
                self.wait_for_cache(self.store.revision()).await?;
            }
            "0" => {}
            rv => {
                let rv = parse_revision(rv)?;
                self.wait_for_cache(rv).await?;
                let page = self.first_page(cache, &filter, limit);
                if exact && page.revision != rv {
                    return Err(ApiError::expired(format!(
                        "resourceVersion {rv} is not available for an exact list; the current resourceVersion is {}",
                        page.revision
                    )));
                }
                return Ok(page);
            }
        }
        Ok(self.first_page(cache, &filter, limit))
    }

    /// Registers a watch on the watch cache.
    pub async fn watch(
        &self,
        info: &ResourceInfo,
        ns: &str,
        q: &ListQuery,
    ) -> Result<Subscription, ApiError> {
        let filter = filter(info, ns, q)?;
        let cache = self.cache(info)?;
        let start = match q.resource_version.as_str() {
            "" | "0" => WatchStart::Now,
            rv => {
                let rv = parse_revision(rv)?;
                // Events up to `rv` must be in the cache before we pick those after it.
                self.wait_for_cache(rv).await?;
                WatchStart::After(rv)
            }
        };
        cache.watch(filter, start, q.allow_bookmarks, &self.caches.revision)
    }

    /// Creates the object in `body` (namespace from the request when it gives one).
    pub async fn create(
        &self,
        info: &ResourceInfo,
        ns: &str,
        body: &[u8],
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let mut obj = parse_body(info, body)?;
        let meta = metadata_mut(&mut obj);
        let body_ns = str_of(meta.get("namespace")).to_string();
        let ns = if info.namespaced {
            match (ns, body_ns.as_str()) {
                ("", "") => "default".to_string(),
                ("", b) => b.to_string(),
                (r, "") => r.to_string(),
                (r, b) if r == b => r.to_string(),
                (r, b) => return Err(namespace_mismatch(b, r)),
            }
        } else {
            String::new()
        };
        if info.namespaced {
            meta.insert("namespace".into(), ns.clone().into());
        } else {
            meta.remove("namespace");
        }
        let mut name = str_of(meta.get("name")).to_string();
        if name.is_empty() {
            let prefix = str_of(meta.get("generateName"));
            if !prefix.is_empty() {
                name = format!("{prefix}{}", random_suffix());
                meta.insert("name".into(), name.clone().into());
            }
        }
        if !str_of(meta.get("resourceVersion")).is_empty() {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        meta.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
        meta.insert("creationTimestamp".into(), now(0).into());
        meta.insert("generation".into(), 1.into());
        if info.has_status() {
            obj.as_object_mut().map(|o| o.remove("status"));
        }
        defaults::apply(info.group, info.kind, &mut obj);
        if info.group.is_empty() && info.kind == "Pod" {
            obj["status"] = json!({"phase": "Pending", "qosClass": qos_class(&obj)});
            self.admit_priority(&name, &mut obj).await?;
            default_tolerations::admit(&mut obj, self.default_tolerations);
        }
        let (mut obj, warnings) = prune_unknown(info, &name, obj, opts.field_validation)?;
        if obj["metadata"]["managedFields"].is_null() {
            crate::ssa::record_update(info, &json!({}), &mut obj, manager(opts), "", &now(0));
        }
        validate(info, &name, &obj)?;
        if info.namespaced {
            self.check_namespace(info, &ns, &name).await?;
        }
        let reservation = match is_service(info) {
            true => Some(
                self.services
                    .admit(None, &mut obj)
                    .map_err(|r| r.into_api_error(&name))?,
            ),
            false => None,
        };
        check_size(&obj)?;
        if opts.dry_run {
            // Dropping the reservation gives back what the dry run took.
            return Ok(Written {
                object: encode(&obj),
                warnings,
            });
        }
        let key = info.storage_key(&ns, &name);
        let created = self
            .store
            .create(&key, with_revision(obj))
            .await
            .map(|rec| Written {
                object: rec.value,
                warnings,
            })
            .map_err(|e| errors::from_store(info, &name, e))?;
        if let Some(r) = reservation {
            r.commit();
        }
        Ok(created)
    }

    /// Replaces the object (or its status) with `body`.
    pub async fn update(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        body: &[u8],
        part: Part,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let mut new = parse_body(info, body)?;
        let meta = metadata_mut(&mut new);
        match str_of(meta.get("name")) {
            "" => {
                meta.insert("name".into(), name.into());
            }
            n if n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => {}
        }
        if info.namespaced {
            match str_of(meta.get("namespace")) {
                "" => {
                    meta.insert("namespace".into(), ns.into());
                }
                b if b != ns => return Err(namespace_mismatch(b, ns)),
                _ => {}
            }
        }
        let precondition = match str_of(meta.get("resourceVersion")) {
            "" => None,
            rv => Some(parse_revision(rv)?),
        };
        self.guaranteed_write(info, ns, name, precondition, opts, part, false, |old| {
            Ok(admit_update(info, old, new.clone(), part))
        })
        .await
    }

    /// Applies a JSON, merge or strategic merge patch to the object (or its status).
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        kind: PatchKind,
        patch: &[u8],
        part: Part,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        self.patch_with(info, ns, name, kind, patch, part, opts, false)
            .await
    }

    /// Like [`Objects::patch`], with server-side apply's `force` (take over conflicting
    /// fields).
    #[allow(clippy::too_many_arguments)]
    pub async fn patch_with(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        kind: PatchKind,
        patch: &[u8],
        part: Part,
        opts: &WriteOptions,
        force: bool,
    ) -> Result<Written, ApiError> {
        if kind == PatchKind::Apply {
            return self.apply(info, ns, name, patch, part, opts, force).await;
        }
        if patch.len() > MAX_OBJECT_BYTES {
            return Err(too_large());
        }
        let patch: Value = serde_json::from_slice(patch)
            .map_err(|e| ApiError::bad_request(format!("unable to decode patch: {e}")))?;
        let json_patch = match kind {
            PatchKind::Json => Some(
                serde_json::from_value::<json_patch::Patch>(patch.clone())
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?,
            ),
            PatchKind::Merge | PatchKind::Strategic | PatchKind::Apply => {
                if !patch.is_object() {
                    return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                }
                None
            }
        };
        self.guaranteed_write(info, ns, name, None, opts, part, false, |old| {
            let mut doc = old.clone();
            match (&json_patch, kind) {
                (Some(p), _) => apply_json_patch(&mut doc, p)
                    .map_err(|e| e.with_details(info.group, info.plural, name))?,
                (None, PatchKind::Strategic) => {
                    rkube_types::strategic::apply(info, &mut doc, &patch).map_err(|e| {
                        ApiError::bad_request(format!("invalid strategic merge patch: {e}"))
                    })?
                }
                (None, _) => json_patch::merge(&mut doc, &patch),
            }
            if !doc.is_object() || !doc["metadata"].is_object() {
                return Err(ApiError::new(
                    Reason::Invalid,
                    "the patch removed the object's metadata",
                ));
            }
            if doc["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"]
                && !doc["metadata"]["resourceVersion"].is_null()
            {
                return Err(ApiError::conflict(info.group, info.plural, name, MODIFIED));
            }
            Ok(admit_update(info, old, doc, part))
        })
        .await
    }

    /// Server-side apply of the YAML (or JSON) configuration in `body` by
    /// `opts.field_manager`: creates the object if it does not exist.
    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        body: &[u8],
        part: Part,
        opts: &WriteOptions,
        force: bool,
    ) -> Result<Written, ApiError> {
        if body.len() > MAX_OBJECT_BYTES {
            return Err(too_large());
        }
        let mut config = crate::yaml::to_json(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        if !config.is_object() {
            return Err(ApiError::bad_request(
                "the applied configuration must be an object",
            ));
        }
        let api_version = info.api_version();
        if config["apiVersion"].as_str() != Some(api_version.as_str())
            || config["kind"].as_str() != Some(info.kind)
        {
            return Err(ApiError::bad_request(format!(
                "the applied configuration must have apiVersion {api_version:?} and kind {:?}",
                info.kind
            )));
        }
        match config["metadata"]["name"].as_str() {
            Some(n) if n == name => {}
            None | Some("") => {
                metadata_mut(&mut config).insert("name".into(), name.into());
            }
            Some(n) => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        if opts.field_manager.is_empty() {
            return Err(ApiError::bad_request(
                "PATCH, application/apply-patch+yaml requires a fieldManager",
            ));
        }
        let key = object_key(info, ns, name)?;
        for _ in 0..MAX_RETRIES {
            match self.store.get(&key).await {
                Ok(None) => {
                    let created = crate::ssa::apply(
                        info,
                        &json!({"metadata": {}}),
                        &config,
                        &opts.field_manager,
                        force,
                        &now(0),
                    )?;
                    let mut obj = config.clone();
                    metadata_mut(&mut obj).insert(
                        "managedFields".into(),
                        created["metadata"]["managedFields"].clone(),
                    );
                    let body = serde_json::to_vec(&obj).unwrap_or_default();
                    match self.create(info, ns, &body, opts).await {
                        Err(e) if e.reason == Reason::AlreadyExists => continue,
                        other => return other,
                    }
                }
                Ok(Some(_)) => {
                    return self
                        .guaranteed_write(info, ns, name, None, opts, part, true, |old| {
                            let merged = crate::ssa::apply(
                                info,
                                old,
                                &config,
                                &opts.field_manager,
                                force,
                                &now(0),
                            )?;
                            Ok(admit_update(info, old, merged, part))
                        })
                        .await;
                }
                Err(e) => return Err(errors::from_store(info, name, e)),
            }
        }
        Err(ApiError::conflict(info.group, info.plural, name, MODIFIED))
    }

    /// Binds a pod to a node (the `binding` subresource): sets `spec.nodeName` once. With
    /// `uid` (the Binding's `metadata.uid`), only the pod with that UID is bound: a pod
    /// deleted and recreated under the same name answers Conflict, as in Kubernetes.
    pub async fn bind(
        &self,
        ns: &str,
        name: &str,
        node: &str,
        uid: Option<&str>,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let info = registry::lookup("", "v1", "pods")
            .ok_or_else(|| ApiError::internal("pods missing from the registry"))?;
        self.guaranteed_update(info, ns, name, None, opts, |old| {
            if let Some(uid) = uid.filter(|u| !u.is_empty())
                && old["metadata"]["uid"].as_str() != Some(uid)
            {
                return Err(ApiError::conflict(
                    info.group,
                    info.plural,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        old["metadata"]["uid"].as_str().unwrap_or_default()
                    ),
                ));
            }
            let current = old["spec"]["nodeName"].as_str().unwrap_or_default();
            if !current.is_empty() {
                return Err(ApiError::conflict(
                    info.group,
                    info.plural,
                    name,
                    &format!("pod {name} is already assigned to node {current:?}"),
                ));
            }
            if !old["metadata"]["deletionTimestamp"].is_null() {
                return Err(ApiError::conflict(
                    info.group,
                    info.plural,
                    name,
                    &format!("pod {name} is being deleted, cannot be assigned to a host"),
                ));
            }
            let mut new = old.clone();
            new["spec"]["nodeName"] = node.into();
            let conditions = new["status"]
                .as_object_mut()
                .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
            if let Some(Value::Array(list)) = conditions {
                list.retain(|c| c["type"] != "PodScheduled");
                list.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now(0)}));
            }
            Ok(new)
        })
        .await
    }

    /// Deletes the object, gracefully when it has finalizers or a grace period.
    pub async fn delete(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Bytes, ApiError> {
        let key = object_key(info, ns, name)?;
        for _ in 0..MAX_RETRIES {
            let rec = match self.store.get(&key).await {
                Ok(Some(rec)) => rec,
                Ok(None) => return Err(ApiError::not_found(info.group, info.plural, name)),
                Err(e) => return Err(errors::from_store(info, name, e)),
            };
            let old: Value = serde_json::from_slice(&rec.value).unwrap_or_default();
            let meta = &old["metadata"];
            if let Some(uid) = &opts.uid
                && uid != str_of(meta.get("uid"))
            {
                return Err(ApiError::conflict(
                    info.group,
                    info.plural,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        str_of(meta.get("uid"))
                    ),
                ));
            }
            if let Some(rv) = &opts.resource_version
                && rv != &rec.mod_revision.to_string()
            {
                return Err(ApiError::conflict(
                    info.group,
                    info.plural,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        rec.mod_revision
                    ),
                ));
            }
            // Only pods are deleted gracefully; a negative grace means "the default".
            let is_pod = info.group.is_empty() && info.kind == "Pod";
            let grace = match opts.grace_period_seconds.filter(|g| *g >= 0) {
                _ if !is_pod || pod_is_done(&old) => 0,
                Some(g) => g.min(MAX_GRACE_SECONDS),
                None => default_grace(info, &old).clamp(0, MAX_GRACE_SECONDS),
            };
            let mut new = old.clone();
            let finalizer = match opts.propagation_policy.as_str() {
                "Orphan" => Some("orphan"),
                "Foreground" => Some("foregroundDeletion"),
                "" | "Background" => None,
                other => {
                    return Err(ApiError::invalid(
                        info.group,
                        info.kind,
                        info.plural,
                        name,
                        vec![rkube_types::StatusCause::not_supported(
                            "propagationPolicy",
                            other,
                            &["Foreground", "Background", "Orphan"],
                        )],
                    ));
                }
            };
            // The garbage collector's finalizers only matter when something is owned by this
            // object; without dependents, orphaning or foreground deletion is a plain delete
            // (the collector would remove its finalizer at once).
            let finalizer = match finalizer {
                Some(f) if self.has_dependents(str_of(old["metadata"].get("uid"))) => Some(f),
                _ => None,
            };
            let new_meta = metadata_mut(&mut new);
            if let Some(f) = finalizer {
                let list = new_meta.entry("finalizers").or_insert_with(|| json!([]));
                if let Some(list) = list.as_array_mut()
                    && !list.iter().any(|x| x == f)
                {
                    list.push(f.into());
                }
            }
            if !has_finalizers(&new) && grace == 0 {
                if opts.dry_run {
                    return Ok(rec.value);
                }
                match self.store.delete(&key, Some(rec.mod_revision)).await {
                    Ok(gone) => {
                        if is_service(info) {
                            self.services.release(&old);
                        }
                        return Ok(gone.value);
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(errors::from_store(info, name, e)),
                }
            }
            // Graceful: mark the object; the finalizers' owners or the kubelet finish it.
            let new_meta = metadata_mut(&mut new);
            let current_grace = new_meta
                .get("deletionGracePeriodSeconds")
                .and_then(Value::as_i64);
            let marked = new_meta.contains_key("deletionTimestamp");
            if !marked || current_grace.is_some_and(|g| grace < g) {
                new_meta.insert("deletionTimestamp".into(), now(grace).into());
                new_meta.insert("deletionGracePeriodSeconds".into(), grace.into());
                if !marked && let Some(g) = new_meta.get("generation").and_then(Value::as_i64) {
                    new_meta.insert("generation".into(), (g + 1).into());
                }
            }
            if info.group.is_empty() && info.kind == "Namespace" {
                new["status"]["phase"] = "Terminating".into();
            }
            if without_revision(&new) == without_revision(&old) {
                return Ok(rec.value);
            }
            if opts.dry_run {
                return Ok(encode(&new));
            }
            match self
                .store
                .update(&key, Some(rec.mod_revision), with_revision(new))
                .await
            {
                Ok(updated) => return Ok(updated.value),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(errors::from_store(info, name, e)),
            }
        }
        Err(ApiError::conflict(info.group, info.plural, name, MODIFIED))
    }

    /// Whether any cached object names `uid` among its owner references.
    fn has_dependents(&self, uid: &str) -> bool {
        if uid.is_empty() {
            return false;
        }
        self.caches.all().any(|cache| {
            cache.any(|obj| {
                // Cheap byte search first; parse only the candidates.
                memchr_str(&obj.json, uid)
                    && serde_json::from_slice::<Value>(&obj.json).is_ok_and(|v| {
                        v["metadata"]["ownerReferences"]
                            .as_array()
                            .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
                    })
            })
        })
    }

    /// Read, mutate, compare-and-swap; retried on a lost race unless the client gave a
    /// resourceVersion precondition. An object being deleted whose last finalizer goes is
    /// removed.
    async fn guaranteed_update(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        precondition: Option<Revision>,
        opts: &WriteOptions,
        mutate: impl Fn(&Value) -> Result<Value, ApiError>,
    ) -> Result<Written, ApiError> {
        self.guaranteed_write(
            info,
            ns,
            name,
            precondition,
            opts,
            Part::Main,
            false,
            mutate,
        )
        .await
    }

    /// [`Objects::guaranteed_update`] that also says which part is written (for managed
    /// fields) and whether `mutate` is an apply (which keeps managed fields itself).
    #[allow(clippy::too_many_arguments)]
    async fn guaranteed_write(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        precondition: Option<Revision>,
        opts: &WriteOptions,
        part: Part,
        is_apply: bool,
        mutate: impl Fn(&Value) -> Result<Value, ApiError>,
    ) -> Result<Written, ApiError> {
        let key = object_key(info, ns, name)?;
        for _ in 0..MAX_RETRIES {
            let rec = match self.store.get(&key).await {
                Ok(Some(rec)) => rec,
                Ok(None) => return Err(ApiError::not_found(info.group, info.plural, name)),
                Err(e) => return Err(errors::from_store(info, name, e)),
            };
            if let Some(p) = precondition
                && p != rec.mod_revision
            {
                return Err(ApiError::conflict(info.group, info.plural, name, MODIFIED));
            }
            let old: Value = serde_json::from_slice(&rec.value)
                .map_err(|e| ApiError::internal(format!("stored object is corrupt: {e}")))?;
            let new = mutate(&old)?;
            let (mut new, warnings) = prune_unknown(info, name, new, opts.field_validation)?;
            let reservation = match is_service(info) && part == Part::Main {
                true => Some(
                    self.services
                        .admit(Some(&old), &mut new)
                        .map_err(|r| r.into_api_error(name))?,
                ),
                false => None,
            };
            if !is_apply {
                let sub = if part == Part::Status { "status" } else { "" };
                crate::ssa::record_update(info, &old, &mut new, manager(opts), sub, &now(0));
            }
            validate_update(info, name, &old, &new)?;
            check_size(&new)?;
            if without_revision(&new) == without_revision(&old) {
                return Ok(Written {
                    object: rec.value,
                    warnings,
                });
            }
            if opts.dry_run {
                return Ok(Written {
                    object: encode(&new),
                    warnings,
                });
            }
            // As Kubernetes' shouldDeleteDuringUpdate: an object being deleted goes when its
            // last finalizer goes, unless it is still in a grace period (a pod the kubelet
            // has yet to stop).
            let finished = !new["metadata"]["deletionTimestamp"].is_null()
                && !has_finalizers(&new)
                && old["metadata"]["deletionGracePeriodSeconds"]
                    .as_i64()
                    .is_none_or(|g| g == 0);
            let result = if finished {
                let gone = self
                    .store
                    .delete(&key, Some(rec.mod_revision))
                    .await
                    .map(|_| encode(&new));
                if gone.is_ok() && is_service(info) {
                    self.services.release(&old);
                    self.services.release(&new);
                }
                gone
            } else {
                self.store
                    .update(&key, Some(rec.mod_revision), with_revision(new))
                    .await
                    .map(|r| r.value)
            };
            match result {
                Ok(object) => {
                    if let Some(r) = reservation {
                        r.commit();
                    }
                    return Ok(Written { object, warnings });
                }
                Err(StoreError::Conflict { .. }) if precondition.is_none() => continue,
                Err(e) => return Err(errors::from_store(info, name, e)),
            }
        }
        Err(ApiError::conflict(info.group, info.plural, name, MODIFIED))
    }

    fn cache(&self, info: &ResourceInfo) -> Result<&Arc<crate::watch_cache::WatchCache>, ApiError> {
        self.caches
            .cache(info)
            .ok_or_else(|| ApiError::internal(format!("no watch cache for {}", info.plural)))
    }

    async fn wait_for_cache(&self, revision: Revision) -> Result<(), ApiError> {
        if self.caches.revision.wait_for(revision, CACHE_WAIT).await {
            Ok(())
        } else {
            Err(ApiError::new(
                Reason::Timeout,
                format!(
                    "Too large resource version: {revision}, current: {}",
                    self.caches.revision.get()
                ),
            ))
        }
    }

    /// The Priority admission plugin: resolves `spec.priorityClassName` (or the global
    /// default class) into `spec.priority` and `spec.preemptionPolicy`, as Kubernetes does.
    async fn admit_priority(&self, name: &str, pod: &mut Value) -> Result<(), ApiError> {
        let pc_info = registry::lookup("scheduling.k8s.io", "v1", "priorityclasses")
            .ok_or_else(|| ApiError::internal("priorityclasses missing from the registry"))?;
        let forbidden = |message: String| {
            ApiError::new(
                Reason::Forbidden,
                format!("pods {name:?} is forbidden: {message}"),
            )
            .with_details("", "pods", name)
        };
        let class_name = str_of(pod["spec"].get("priorityClassName")).to_string();
        let class: Option<Value> = if class_name.is_empty() {
            // The global default: the smallest value among classes marked globalDefault.
            self.caches.cache(pc_info).and_then(|cache| {
                let page = cache.list(
                    &crate::watch_cache::Filter::default(),
                    0,
                    None,
                    &self.caches.revision,
                );
                page.items
                    .iter()
                    .filter_map(|o| serde_json::from_slice::<Value>(&o.json).ok())
                    .filter(|c| c["globalDefault"] == true)
                    .min_by_key(|c| c["value"].as_i64().unwrap_or(0))
            })
        } else {
            match self.store.get(&pc_info.storage_key("", &class_name)).await {
                Ok(Some(rec)) => Some(serde_json::from_slice(&rec.value).unwrap_or_default()),
                Ok(None) => {
                    return Err(forbidden(format!(
                        "no PriorityClass with name {class_name} was found"
                    )));
                }
                Err(e) => return Err(errors::from_store(pc_info, &class_name, e)),
            }
        };
        let value = class
            .as_ref()
            .and_then(|c| c["value"].as_i64())
            .unwrap_or(0);
        let requested = pod["spec"]["priority"].as_i64();
        if let Some(p) = requested.filter(|p| *p != value) {
            return Err(forbidden(format!(
                "the integer value of priority ({p}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
            )));
        }
        let Some(spec) = pod["spec"].as_object_mut() else {
            return Ok(());
        };
        spec.insert("priority".into(), value.into());
        if let Some(c) = &class {
            if class_name.is_empty() {
                spec.insert("priorityClassName".into(), c["metadata"]["name"].clone());
            }
            let policy = c["preemptionPolicy"]
                .as_str()
                .unwrap_or("PreemptLowerPriority");
            spec.insert("preemptionPolicy".into(), policy.into());
        }
        Ok(())
    }

    async fn check_namespace(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let ns_info = registry::lookup("", "v1", "namespaces")
            .ok_or_else(|| ApiError::internal("namespaces missing from the registry"))?;
        // The store, not the cache: a namespace marked for deletion a moment ago must already
        // refuse new content.
        let phase = match self.store.get(&ns_info.storage_key("", ns)).await {
            Ok(Some(rec)) => {
                let obj: Value = serde_json::from_slice(&rec.value).unwrap_or_default();
                str_of(obj["status"].get("phase")).to_string()
            }
            Ok(None) => return Err(ApiError::not_found("", "namespaces", ns)),
            Err(e) => return Err(errors::from_store(ns_info, ns, e)),
        };
        if phase == "Terminating" {
            return Err(ApiError::new(
                Reason::Forbidden,
                format!(
                    "{} {name:?} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    rkube_types::status::qualified(info.group, info.plural)
                ),
            )
            .with_details(info.group, info.plural, name)
            .with_cause(rkube_types::status::StatusCause::new(
                "NamespaceTerminating",
                "metadata.namespace",
                format!("namespace {ns} is being terminated"),
            )));
        }
        Ok(())
    }
}

/// Whether `info` is core/v1 Services, whose writes allocate cluster IPs and node ports.
fn is_service(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.kind == "Service"
}
