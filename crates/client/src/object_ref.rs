//! [`ObjectRef`]: the `namespace/name` key of an object, used by caches and work queues.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Names one object of a known resource: its namespace (none for cluster-scoped objects) and
/// its name. Displays as `namespace/name`, or `name` alone, as Kubernetes keys objects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// The namespace; `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
}

impl ObjectRef {
    /// A cluster-scoped object called `name`.
    pub fn new(name: &str) -> Self {
        ObjectRef {
            namespace: None,
            name: name.to_string(),
        }
    }

    /// The object called `name` in `namespace`; an empty namespace means cluster scope.
    pub fn namespaced(namespace: &str, name: &str) -> Self {
        ObjectRef {
            namespace: Some(namespace.to_string()).filter(|ns| !ns.is_empty()),
            name: name.to_string(),
        }
    }

    /// The key of `obj`, from its metadata (an object without a name gets an empty one).
    pub fn from_obj<K>(obj: &K) -> Self
    where
        K: k8s_openapi::Metadata<Ty = ObjectMeta>,
    {
        Self::from_meta(obj.metadata())
    }

    /// The key of the object with metadata `meta`.
    pub fn from_meta(meta: &ObjectMeta) -> Self {
        ObjectRef {
            namespace: meta.namespace.clone().filter(|ns| !ns.is_empty()),
            name: meta.name.clone().unwrap_or_default(),
        }
    }

    /// Parses `namespace/name` or `name`, the form [`Display`](fmt::Display) writes.
    pub fn parse(key: &str) -> Self {
        match key.split_once('/') {
            Some((namespace, name)) => Self::namespaced(namespace, name),
            None => Self::new(key),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{namespace}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Node, Pod};

    #[test]
    fn keys_come_from_metadata() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        pod.metadata.namespace = Some("prod".into());
        let key = ObjectRef::from_obj(&pod);
        assert_eq!(key, ObjectRef::namespaced("prod", "web"));
        assert_eq!(key.to_string(), "prod/web");

        let mut node = Node::default();
        node.metadata.name = Some("n1".into());
        let key = ObjectRef::from_obj(&node);
        assert_eq!(key, ObjectRef::new("n1"));
        assert_eq!(key.to_string(), "n1");
    }

    #[test]
    fn display_and_parse_round_trip() {
        for key in [ObjectRef::namespaced("a", "b"), ObjectRef::new("c")] {
            assert_eq!(ObjectRef::parse(&key.to_string()), key);
        }
        assert_eq!(ObjectRef::namespaced("", "x"), ObjectRef::new("x"));
    }
}
