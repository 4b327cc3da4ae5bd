//! Objects reduced to their metadata, for the controllers that must see every kind (the
//! garbage collector, the namespace controller) without caching every object whole.
//!
//! [`PartialObjectMeta<K>`] decodes any object of kind `K` into its `metadata` alone, the
//! rest of the JSON skipped while decoding, so an `Informer<PartialObjectMeta<Pod>>` watches
//! pods and caches only their names, owners, finalizers and deletion marks (upstream's
//! metadata-only informers over `PartialObjectMetadata`). It names `K`'s resource, so the
//! shared informers list and watch the right one; [`PartialObjectMeta`] without a kind
//! (`K = ()`) is the same shape for resources chosen at run time through `Api::dynamic`.

use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::Deserializer;
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

/// The metadata of an object of kind `K`, without the rest of it.
pub struct PartialObjectMeta<K = ()> {
    /// The object's metadata.
    pub metadata: ObjectMeta,
    // `fn() -> K`: holds no `K`, so it is Send + Sync + Clone whatever `K` is.
    _kind: PhantomData<fn() -> K>,
}

impl<K> PartialObjectMeta<K> {
    /// The metadata `metadata` as an object of kind `K`.
    pub fn new(metadata: ObjectMeta) -> Self {
        PartialObjectMeta {
            metadata,
            _kind: PhantomData,
        }
    }
}

impl<K> Clone for PartialObjectMeta<K> {
    fn clone(&self) -> Self {
        Self::new(self.metadata.clone())
    }
}

impl<K> fmt::Debug for PartialObjectMeta<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartialObjectMeta")
            .field("metadata", &self.metadata)
            .finish()
    }
}

impl<K> PartialEq for PartialObjectMeta<K> {
    fn eq(&self, other: &Self) -> bool {
        self.metadata == other.metadata
    }
}

impl<K> Default for PartialObjectMeta<K> {
    fn default() -> Self {
        Self::new(ObjectMeta::default())
    }
}

impl<K: k8s_openapi::Resource> k8s_openapi::Resource for PartialObjectMeta<K> {
    const API_VERSION: &'static str = K::API_VERSION;
    const GROUP: &'static str = K::GROUP;
    const KIND: &'static str = K::KIND;
    const VERSION: &'static str = K::VERSION;
    const URL_PATH_SEGMENT: &'static str = K::URL_PATH_SEGMENT;
    type Scope = K::Scope;
}

impl<K: k8s_openapi::Resource> k8s_openapi::Metadata for PartialObjectMeta<K> {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl<K> Serialize for PartialObjectMeta<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("PartialObjectMeta", 1)?;
        s.serialize_field("metadata", &self.metadata)?;
        s.end()
    }
}

impl<'de, K> Deserialize<'de> for PartialObjectMeta<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Every other field (kind, spec, status...) is skipped without being built.
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            metadata: ObjectMeta,
        }
        Raw::deserialize(deserializer).map(|raw| Self::new(raw.metadata))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::informer::Object;
    use k8s_openapi::Resource;
    use k8s_openapi::api::core::v1::Pod;

    fn is_object<T: Object>() {}

    #[test]
    fn decodes_only_the_metadata_of_a_full_object() {
        let pod = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web-1",
                "namespace": "prod",
                "uid": "u1",
                "finalizers": ["example.com/keep"],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web", "uid": "rs1", "controller": true}],
            },
            "spec": {"containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running"},
        });
        let meta: PartialObjectMeta<Pod> = serde_json::from_value(pod).expect("decodes");
        assert_eq!(meta.metadata.name.as_deref(), Some("web-1"));
        assert_eq!(
            meta.metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
        assert_eq!(
            serde_json::to_value(&meta).expect("encodes"),
            serde_json::json!({"metadata": serde_json::to_value(&meta.metadata).unwrap()}),
            "only the metadata is kept"
        );
        // A dynamic resource's metadata decodes the same way.
        let any: PartialObjectMeta = serde_json::from_value(serde_json::json!({"x": 1}))
            .expect("an object without metadata decodes");
        assert_eq!(any, PartialObjectMeta::default());
    }

    #[test]
    fn names_the_resource_of_its_kind() {
        is_object::<PartialObjectMeta<Pod>>();
        assert_eq!(PartialObjectMeta::<Pod>::URL_PATH_SEGMENT, "pods");
        assert_eq!(PartialObjectMeta::<Pod>::KIND, "Pod");
        assert_eq!(PartialObjectMeta::<Pod>::API_VERSION, "v1");
    }
}
