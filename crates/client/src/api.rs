//! [`Api<K>`]: typed calls on one resource, optionally within one namespace.
//!
//! Objects travel as Kubernetes JSON, the encoding `k8s-openapi` types serialize to, so an
//! `Api<Pod>` is `k8s_openapi::api::core::v1::Pod` in and out. For resources without a Rust
//! type, [`Api::dynamic`] gives an `Api<serde_json::Value>` (or any serde type) over a
//! resource named at run time.

use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use rkube_rpc::v1;
use rkube_types::ApiError;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::params::{DeleteParams, ListParams, Patch, PostParams, WatchParams};

/// Typed access to one resource, in one namespace or across all of them.
pub struct Api<K> {
    client: Client,
    resource: v1::ResourceRef,
    // `fn() -> K`: an `Api<K>` holds no `K`, so it is Send + Sync whatever `K` is.
    _kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Api<K> {
    fn clone(&self) -> Self {
        Api {
            client: self.client.clone(),
            resource: self.resource.clone(),
            _kind: PhantomData,
        }
    }
}

impl<K> fmt::Debug for Api<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("group", &self.resource.group)
            .field("version", &self.resource.version)
            .field("resource", &self.resource.resource)
            .field("namespace", &self.resource.namespace)
            .finish()
    }
}

/// One page of a list: the objects and where the list stands.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectList<K> {
    /// The objects of this page.
    pub items: Vec<K>,
    /// The revision the list was served at; a watch started from it misses nothing.
    pub resource_version: String,
    /// Pass to [`ListParams::continue_token`] for the next page; empty on the last page.
    pub continue_token: String,
    /// How many objects are left after this page, when the server knows.
    pub remaining_item_count: Option<i64>,
}

/// One event of a watch stream (`metav1.WatchEvent`).
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent<K> {
    /// The object was created (or existed when the watch started from an old revision).
    Added(K),
    /// The object changed.
    Modified(K),
    /// The object was deleted; this is its last state.
    Deleted(K),
    /// Nothing changed, but the watch has reached `resource_version`.
    Bookmark {
        /// The revision reached.
        resource_version: String,
    },
    /// The server ended the watch with an error, e.g. 410 Expired when the revision asked for
    /// is no longer kept.
    Error(ApiError),
}

impl<K> Api<K>
where
    K: k8s_openapi::Resource,
{
    /// The resource within `namespace`.
    pub fn namespaced(client: Client, namespace: &str) -> Self
    where
        K: k8s_openapi::Resource<Scope = NamespaceResourceScope>,
    {
        Self::for_namespace(client, namespace)
    }

    /// The resource within the client's default namespace.
    pub fn default_namespaced(client: Client) -> Self
    where
        K: k8s_openapi::Resource<Scope = NamespaceResourceScope>,
    {
        let namespace = client.default_namespace().to_string();
        Self::for_namespace(client, &namespace)
    }

    /// A cluster-scoped resource, or a namespaced one across all namespaces (then only list
    /// and watch make sense).
    pub fn all(client: Client) -> Self {
        Self::for_namespace(client, "")
    }

    fn for_namespace(client: Client, namespace: &str) -> Self {
        Api {
            client,
            resource: v1::ResourceRef::new(K::GROUP, K::VERSION, K::URL_PATH_SEGMENT, namespace),
            _kind: PhantomData,
        }
    }
}

impl<K> Api<K>
where
    K: Serialize + DeserializeOwned + Send + 'static,
{
    /// Any resource, named at run time: `group` (empty for the core group), `version`, the
    /// plural `resource` and a `namespace` (empty for cluster scope or all namespaces). With
    /// `K = serde_json::Value` this reaches resources that have no Rust type.
    pub fn dynamic(
        client: Client,
        group: &str,
        version: &str,
        resource: &str,
        namespace: &str,
    ) -> Self {
        Api {
            client,
            resource: v1::ResourceRef::new(group, version, resource, namespace),
            _kind: PhantomData,
        }
    }

    /// The namespace this handle works in; `None` for cluster scope or all namespaces.
    pub fn namespace(&self) -> Option<&str> {
        Some(self.resource.namespace.as_str()).filter(|ns| !ns.is_empty())
    }

    /// The client underneath.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The object called `name`.
    pub async fn get(&self, name: &str) -> Result<K> {
        let req = v1::GetRequest {
            resource: Some(self.resource.clone()),
            name: name.to_string(),
        };
        let resp = self.client.rpc().get(req).await?;
        decode(&resp.into_inner().object)
    }

    /// The object called `name`, or `None` if there is none.
    pub async fn get_opt(&self, name: &str) -> Result<Option<K>> {
        match self.get(name).await {
            Ok(obj) => Ok(Some(obj)),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// One page of objects (all of them unless `params.limit` is set).
    pub async fn list(&self, params: &ListParams) -> Result<ObjectList<K>> {
        let req = v1::ListRequest {
            resource: Some(self.resource.clone()),
            options: Some(params.to_options()),
        };
        let resp = self.client.rpc().list(req).await?.into_inner();
        let items = resp
            .items
            .iter()
            .map(|raw| decode(raw))
            .collect::<Result<Vec<K>>>()?;
        Ok(ObjectList {
            items,
            resource_version: resp.resource_version,
            continue_token: resp.continue_token,
            remaining_item_count: resp.remaining_item_count,
        })
    }

    /// Changes after `resource_version` (`""`: the current state as ADDED events, then
    /// changes). The stream ends when the server closes it; errors on the way are items.
    /// A 410 on start comes back as `Err` with [`Error::is_expired`].
    pub async fn watch(
        &self,
        params: &WatchParams,
        resource_version: &str,
    ) -> Result<impl Stream<Item = Result<WatchEvent<K>>> + Send + 'static> {
        let req = v1::WatchRequest {
            resource: Some(self.resource.clone()),
            options: Some(params.to_options(resource_version)),
        };
        let stream = self.client.rpc().watch(req).await?.into_inner();
        Ok(stream.map(|item| match item {
            Ok(raw) => decode_event(raw),
            Err(status) => Err(Error::from(status)),
        }))
    }

    /// Creates `obj`; returns it as stored.
    pub async fn create(&self, obj: &K) -> Result<K> {
        self.create_with(obj, &PostParams::default()).await
    }

    /// Creates `obj` with options.
    pub async fn create_with(&self, obj: &K, params: &PostParams) -> Result<K> {
        let req = v1::CreateRequest {
            resource: Some(self.resource.clone()),
            object: encode(obj)?,
            dry_run: params.dry_run,
            field_manager: params.field_manager.clone().unwrap_or_default(),
            subresource: String::new(),
        };
        let resp = self.client.rpc().create(req).await?;
        decode(&resp.into_inner().object)
    }

    /// Binds the pod `name` (with UID `uid`, when given) to `node` through the `binding`
    /// subresource (what a scheduler does); fails with Conflict if the pod is already bound,
    /// being deleted, or has another UID.
    pub async fn bind(&self, name: &str, uid: Option<&str>, node: &str) -> Result<K> {
        let binding = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "uid": uid},
            "target": {"kind": "Node", "name": node},
        });
        let req = v1::CreateRequest {
            resource: Some(self.resource.clone()),
            object: encode(&binding)?,
            subresource: "binding".to_string(),
            ..Default::default()
        };
        let resp = self.client.rpc().create(req).await?;
        decode(&resp.into_inner().object)
    }

    /// Replaces the object `name` with `obj` (status is ignored). With
    /// `metadata.resourceVersion` set, this fails with Conflict if someone changed it since.
    pub async fn replace(&self, name: &str, obj: &K) -> Result<K> {
        self.replace_with(name, obj, &PostParams::default()).await
    }

    /// [`Api::replace`] with options.
    pub async fn replace_with(&self, name: &str, obj: &K, params: &PostParams) -> Result<K> {
        let req = self.update_request(name, obj, params)?;
        let resp = self.client.rpc().update(req).await?;
        decode(&resp.into_inner().object)
    }

    /// Replaces the status of the object `name` with `obj`'s (the rest is ignored).
    pub async fn replace_status(&self, name: &str, obj: &K) -> Result<K> {
        self.replace_status_with(name, obj, &PostParams::default())
            .await
    }

    /// [`Api::replace_status`] with options.
    pub async fn replace_status_with(&self, name: &str, obj: &K, params: &PostParams) -> Result<K> {
        let req = self.update_request(name, obj, params)?;
        let resp = self.client.rpc().update_status(req).await?;
        decode(&resp.into_inner().object)
    }

    /// Patches the object `name`.
    pub async fn patch(&self, name: &str, patch: &Patch) -> Result<K> {
        self.patch_with(name, patch, "", &PostParams::default())
            .await
    }

    /// Patches the status of the object `name`.
    pub async fn patch_status(&self, name: &str, patch: &Patch) -> Result<K> {
        self.patch_with(name, patch, "status", &PostParams::default())
            .await
    }

    /// Patches the object `name` or one of its subresources (`""` or `"status"`), with
    /// options.
    pub async fn patch_with(
        &self,
        name: &str,
        patch: &Patch,
        subresource: &str,
        params: &PostParams,
    ) -> Result<K> {
        let req = v1::PatchRequest {
            resource: Some(self.resource.clone()),
            name: name.to_string(),
            patch_type: patch.patch_type() as i32,
            patch: encode(patch.body())?,
            subresource: subresource.to_string(),
            dry_run: params.dry_run,
            field_manager: params.field_manager.clone().unwrap_or_default(),
        };
        let resp = self.client.rpc().patch(req).await?;
        decode(&resp.into_inner().object)
    }

    /// Deletes the object `name`; returns it as it is after the call (gone, or marked for
    /// deletion while finalizers or a grace period run).
    pub async fn delete(&self, name: &str, params: &DeleteParams) -> Result<K> {
        let req = params.to_request(self.resource.clone(), name);
        let resp = self.client.rpc().delete(req).await?;
        decode(&resp.into_inner().object)
    }

    fn update_request(
        &self,
        name: &str,
        obj: &K,
        params: &PostParams,
    ) -> Result<v1::UpdateRequest> {
        Ok(v1::UpdateRequest {
            resource: Some(self.resource.clone()),
            name: name.to_string(),
            object: encode(obj)?,
            dry_run: params.dry_run,
            field_manager: params.field_manager.clone().unwrap_or_default(),
        })
    }
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(Error::Encode)
}

fn decode<K: DeserializeOwned>(raw: &[u8]) -> Result<K> {
    serde_json::from_slice(raw).map_err(Error::Decode)
}

/// Only what a BOOKMARK object carries.
#[derive(serde::Deserialize)]
struct BookmarkObject {
    metadata: BookmarkMeta,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct BookmarkMeta {
    #[serde(default)]
    resource_version: String,
}

/// Decodes one event from the wire.
pub(crate) fn decode_event<K: DeserializeOwned>(raw: v1::WatchEvent) -> Result<WatchEvent<K>> {
    Ok(match raw.r#type.as_str() {
        "ADDED" => WatchEvent::Added(decode(&raw.object)?),
        "MODIFIED" => WatchEvent::Modified(decode(&raw.object)?),
        "DELETED" => WatchEvent::Deleted(decode(&raw.object)?),
        "BOOKMARK" => {
            let resource_version = if raw.resource_version.is_empty() {
                decode::<BookmarkObject>(&raw.object)?
                    .metadata
                    .resource_version
            } else {
                raw.resource_version
            };
            WatchEvent::Bookmark { resource_version }
        }
        "ERROR" => {
            let status: serde_json::Value = decode(&raw.object)?;
            WatchEvent::Error(ApiError::from_status(&status).unwrap_or_else(|| {
                ApiError::internal(format!("watch error event without a status: {status}"))
            }))
        }
        other => return Err(Error::UnknownEventType(other.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, Node};
    use rkube_types::Reason;

    fn raw(kind: &str, object: serde_json::Value, rv: &str) -> v1::WatchEvent {
        v1::WatchEvent {
            r#type: kind.to_string(),
            object: Bytes::from(serde_json::to_vec(&object).expect("json")),
            resource_version: rv.to_string(),
        }
    }

    fn config_map_json(name: &str, rv: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": rv},
            "data": {"k": "v"},
        })
    }

    #[test]
    fn decodes_object_events() {
        let ev =
            decode_event::<ConfigMap>(raw("ADDED", config_map_json("a", "5"), "5")).expect("added");
        let WatchEvent::Added(cm) = ev else {
            panic!("expected Added, got {ev:?}")
        };
        assert_eq!(cm.metadata.name.as_deref(), Some("a"));
        assert_eq!(cm.metadata.resource_version.as_deref(), Some("5"));
        assert_eq!(
            cm.data.and_then(|d| d.get("k").cloned()).as_deref(),
            Some("v")
        );

        let ev = decode_event::<ConfigMap>(raw("MODIFIED", config_map_json("a", "6"), "6"));
        assert!(matches!(ev, Ok(WatchEvent::Modified(_))));
        let ev = decode_event::<ConfigMap>(raw("DELETED", config_map_json("a", "7"), "7"));
        assert!(matches!(ev, Ok(WatchEvent::Deleted(_))));
    }

    #[test]
    fn decodes_bookmarks_from_the_event_or_the_object() {
        let object = serde_json::json!({"kind": "ConfigMap", "apiVersion": "v1",
            "metadata": {"resourceVersion": "12"}});
        let ev = decode_event::<ConfigMap>(raw("BOOKMARK", object.clone(), "12"));
        assert_eq!(
            ev.expect("bookmark"),
            WatchEvent::Bookmark {
                resource_version: "12".into()
            }
        );
        let ev = decode_event::<ConfigMap>(raw("BOOKMARK", object, ""));
        assert_eq!(
            ev.expect("bookmark"),
            WatchEvent::Bookmark {
                resource_version: "12".into()
            }
        );
    }

    #[test]
    fn decodes_error_events_as_api_errors() {
        let status = ApiError::expired("too old resource version: 1 (50)").to_status();
        let ev = decode_event::<ConfigMap>(raw("ERROR", status, "")).expect("error event");
        let WatchEvent::Error(err) = ev else {
            panic!("expected Error, got {ev:?}")
        };
        assert_eq!(err.reason, Reason::Expired);
        assert_eq!(err.code(), 410);

        // A Status with only a code still maps to the right reason.
        let status = serde_json::json!({"kind": "Status", "code": 410});
        let ev = decode_event::<ConfigMap>(raw("ERROR", status, "")).expect("error event");
        assert!(matches!(ev, WatchEvent::Error(e) if e.reason == Reason::Expired));
    }

    #[test]
    fn bad_events_are_errors_not_panics() {
        let ev = decode_event::<ConfigMap>(raw("SURPRISE", serde_json::json!({}), ""));
        assert!(matches!(ev, Err(Error::UnknownEventType(t)) if t == "SURPRISE"));

        let bad = v1::WatchEvent {
            r#type: "ADDED".into(),
            object: Bytes::from_static(b"{not json"),
            resource_version: String::new(),
        };
        assert!(matches!(
            decode_event::<ConfigMap>(bad),
            Err(Error::Decode(_))
        ));

        let wrong_shape = raw("ADDED", serde_json::json!({"metadata": 5}), "");
        assert!(matches!(
            decode_event::<ConfigMap>(wrong_shape),
            Err(Error::Decode(_))
        ));
    }

    #[tokio::test]
    async fn resource_refs_follow_the_type() {
        let client = Client::connect_lazy("http://127.0.0.1:1").expect("client");
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
        assert_eq!(
            api.resource,
            v1::ResourceRef::new("", "v1", "configmaps", "kube-system")
        );
        assert_eq!(api.namespace(), Some("kube-system"));

        let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
        assert_eq!(api.namespace(), Some("default"));

        let api: Api<Node> = Api::all(client.clone());
        assert_eq!(api.resource, v1::ResourceRef::new("", "v1", "nodes", ""));
        assert_eq!(api.namespace(), None);

        let api: Api<k8s_openapi::api::apps::v1::Deployment> = Api::all(client.clone());
        assert_eq!(api.resource.group, "apps");
        assert_eq!(api.resource.resource, "deployments");

        let api: Api<serde_json::Value> =
            Api::dynamic(client, "example.com", "v1", "widgets", "ns");
        assert_eq!(
            api.resource,
            v1::ResourceRef::new("example.com", "v1", "widgets", "ns")
        );
    }

    #[tokio::test]
    async fn calls_to_an_unreachable_server_fail_cleanly() {
        let client = Client::connect_lazy("http://127.0.0.1:1").expect("client");
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        let err = api.get("x").await.expect_err("nothing listens on port 1");
        assert_eq!(err.reason(), Some(Reason::ServiceUnavailable), "{err}");
    }
}
