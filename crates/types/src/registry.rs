//! The resource registry: every API resource rkube serves, with the facts the API server,
//! the store and kubectl-style name resolution need about it.
//!
//! Group, version, kind, plural and scope come from the `k8s_openapi::Resource` constants of
//! the matching Rust type, so they cannot be mistyped here; this module adds what
//! `k8s-openapi` does not know (singular and short names, subresources, categories, the
//! naming rule) in one static table.

use k8s_openapi::api::{
    apps, autoscaling, batch, coordination, core, discovery, events, networking, policy, rbac,
    scheduling, storage,
};
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope, Resource};

/// Static facts about one API resource (one group/version/plural).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResourceInfo {
    /// API group; `""` for the core group.
    pub group: &'static str,
    /// API version within the group, e.g. `v1`.
    pub version: &'static str,
    /// Kind of the objects, e.g. `Pod`.
    pub kind: &'static str,
    /// Plural resource name used in URLs, e.g. `pods`.
    pub plural: &'static str,
    /// Singular resource name, e.g. `pod`.
    pub singular: &'static str,
    /// kubectl short names, e.g. `["po"]`.
    pub short_names: &'static [&'static str],
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Subresources served below an object, e.g. `["status", "scale"]`.
    pub subresources: &'static [&'static str],
    /// kubectl categories, e.g. `["all"]`.
    pub categories: &'static [&'static str],
}

/// Which syntax the names of a resource's objects must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameRule {
    /// An RFC 1123 label: at most 63 lowercase alphanumerics or `-` (namespaces, services).
    Dns1123Label,
    /// An RFC 1123 subdomain: dot-separated labels, at most 253 characters (most kinds).
    Dns1123Subdomain,
    /// Anything usable as one URL path segment: not `.` or `..`, no `/` or `%` (RBAC kinds).
    PathSegment,
}

impl ResourceInfo {
    /// The `apiVersion` of the objects: `v1` in the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether the resource serves the subresource `name` (e.g. `status`, `scale`).
    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.contains(&name)
    }

    /// Whether the resource has a `status` subresource, so that writes to the main resource
    /// ignore status and writes to `status` ignore everything else.
    pub fn has_status(&self) -> bool {
        self.has_subresource("status")
    }

    /// The store key prefix of all objects of this resource:
    /// `/registry/{group or "core"}/{plural}/`.
    pub fn storage_prefix(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        format!("/registry/{group}/{}/", self.plural)
    }

    /// The store key of one object: `prefix + "{namespace}/{name}"` for namespaced resources,
    /// `prefix + name` for cluster-scoped ones (where `namespace` is ignored).
    pub fn storage_key(&self, namespace: &str, name: &str) -> String {
        if self.namespaced {
            format!("{}{namespace}/{name}", self.storage_prefix())
        } else {
            format!("{}{name}", self.storage_prefix())
        }
    }

    /// The store key prefix of the objects in one namespace: `prefix + "{namespace}/"`.
    /// For cluster-scoped resources this is the resource prefix itself.
    pub fn storage_namespace_prefix(&self, namespace: &str) -> String {
        if self.namespaced {
            format!("{}{namespace}/", self.storage_prefix())
        } else {
            self.storage_prefix()
        }
    }

    /// The syntax object names of this resource must follow, as Kubernetes validates them.
    pub fn name_rule(&self) -> NameRule {
        match (self.group, self.plural) {
            // Kubernetes validates service names as DNS-1035 labels, which is stricter still
            // (no leading digit); `validation::validate_object` applies that extra rule.
            ("", "namespaces" | "services") => NameRule::Dns1123Label,
            ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
            _ => NameRule::Dns1123Subdomain,
        }
    }

    /// Whether `name` names this resource the way kubectl accepts it: plural, singular,
    /// short name or kind, compared case-insensitively.
    fn is_called(&self, name: &str) -> bool {
        self.plural.eq_ignore_ascii_case(name)
            || self.singular.eq_ignore_ascii_case(name)
            || self.kind.eq_ignore_ascii_case(name)
            || self
                .short_names
                .iter()
                .any(|s| s.eq_ignore_ascii_case(name))
    }
}

/// Maps a `k8s_openapi` scope marker type to "is namespaced".
trait ScopeIsNamespaced {
    const NAMESPACED: bool;
}

impl ScopeIsNamespaced for NamespaceResourceScope {
    const NAMESPACED: bool = true;
}

impl ScopeIsNamespaced for ClusterResourceScope {
    const NAMESPACED: bool = false;
}

/// Builds a [`ResourceInfo`] from a `k8s_openapi` type plus the facts it does not carry.
macro_rules! resource {
    (
        $ty:ty,
        singular: $singular:literal,
        short: [$($short:literal),* $(,)?],
        sub: [$($sub:literal),* $(,)?],
        categories: [$($cat:literal),* $(,)?] $(,)?
    ) => {
        ResourceInfo {
            group: <$ty as Resource>::GROUP,
            version: <$ty as Resource>::VERSION,
            kind: <$ty as Resource>::KIND,
            plural: <$ty as Resource>::URL_PATH_SEGMENT,
            singular: $singular,
            short_names: &[$($short),*],
            namespaced: <<$ty as Resource>::Scope as ScopeIsNamespaced>::NAMESPACED,
            subresources: &[$($sub),*],
            categories: &[$($cat),*],
        }
    };
}

/// The registry. Order matters for [`resolve`]: the first match wins, so the core group
/// comes first (as kubectl prefers `events` over `events.events.k8s.io`).
static RESOURCES: &[ResourceInfo] = &[
    // core/v1
    resource!(core::v1::Namespace, singular: "namespace", short: ["ns"],
        sub: ["status", "finalize"], categories: []),
    resource!(core::v1::Pod, singular: "pod", short: ["po"],
        sub: ["status", "binding", "eviction", "log", "exec", "attach", "portforward",
              "ephemeralcontainers"],
        categories: ["all"]),
    resource!(core::v1::Node, singular: "node", short: ["no"],
        sub: ["status", "proxy"], categories: []),
    resource!(core::v1::Service, singular: "service", short: ["svc"],
        sub: ["status", "proxy"], categories: ["all"]),
    resource!(core::v1::Endpoints, singular: "endpoints", short: ["ep"],
        sub: [], categories: []),
    resource!(core::v1::ConfigMap, singular: "configmap", short: ["cm"],
        sub: [], categories: []),
    resource!(core::v1::Secret, singular: "secret", short: [],
        sub: [], categories: []),
    resource!(core::v1::ServiceAccount, singular: "serviceaccount", short: ["sa"],
        sub: ["token"], categories: []),
    resource!(core::v1::Event, singular: "event", short: ["ev"],
        sub: [], categories: []),
    resource!(core::v1::LimitRange, singular: "limitrange", short: ["limits"],
        sub: [], categories: []),
    resource!(core::v1::ResourceQuota, singular: "resourcequota", short: ["quota"],
        sub: ["status"], categories: []),
    resource!(core::v1::PersistentVolume, singular: "persistentvolume", short: ["pv"],
        sub: ["status"], categories: []),
    resource!(core::v1::PersistentVolumeClaim, singular: "persistentvolumeclaim", short: ["pvc"],
        sub: ["status"], categories: []),
    resource!(core::v1::ReplicationController, singular: "replicationcontroller", short: ["rc"],
        sub: ["status", "scale"], categories: ["all"]),
    resource!(core::v1::PodTemplate, singular: "podtemplate", short: [],
        sub: [], categories: []),
    // apps/v1
    resource!(apps::v1::Deployment, singular: "deployment", short: ["deploy"],
        sub: ["status", "scale"], categories: ["all"]),
    resource!(apps::v1::ReplicaSet, singular: "replicaset", short: ["rs"],
        sub: ["status", "scale"], categories: ["all"]),
    resource!(apps::v1::DaemonSet, singular: "daemonset", short: ["ds"],
        sub: ["status"], categories: ["all"]),
    resource!(apps::v1::StatefulSet, singular: "statefulset", short: ["sts"],
        sub: ["status", "scale"], categories: ["all"]),
    resource!(apps::v1::ControllerRevision, singular: "controllerrevision", short: [],
        sub: [], categories: []),
    // batch/v1
    resource!(batch::v1::Job, singular: "job", short: [],
        sub: ["status"], categories: ["all"]),
    resource!(batch::v1::CronJob, singular: "cronjob", short: ["cj"],
        sub: ["status"], categories: ["all"]),
    // autoscaling/v2
    resource!(autoscaling::v2::HorizontalPodAutoscaler, singular: "horizontalpodautoscaler",
        short: ["hpa"], sub: ["status"], categories: ["all"]),
    // coordination.k8s.io/v1
    resource!(coordination::v1::Lease, singular: "lease", short: [],
        sub: [], categories: []),
    // discovery.k8s.io/v1
    resource!(discovery::v1::EndpointSlice, singular: "endpointslice", short: [],
        sub: [], categories: []),
    // rbac.authorization.k8s.io/v1
    resource!(rbac::v1::Role, singular: "role", short: [],
        sub: [], categories: []),
    resource!(rbac::v1::RoleBinding, singular: "rolebinding", short: [],
        sub: [], categories: []),
    resource!(rbac::v1::ClusterRole, singular: "clusterrole", short: [],
        sub: [], categories: []),
    resource!(rbac::v1::ClusterRoleBinding, singular: "clusterrolebinding", short: [],
        sub: [], categories: []),
    // events.k8s.io/v1
    resource!(events::v1::Event, singular: "event", short: ["ev"],
        sub: [], categories: []),
    // policy/v1
    resource!(policy::v1::PodDisruptionBudget, singular: "poddisruptionbudget", short: ["pdb"],
        sub: ["status"], categories: []),
    // scheduling.k8s.io/v1
    resource!(scheduling::v1::PriorityClass, singular: "priorityclass", short: ["pc"],
        sub: [], categories: []),
    // networking.k8s.io/v1
    resource!(networking::v1::Ingress, singular: "ingress", short: ["ing"],
        sub: ["status"], categories: []),
    resource!(networking::v1::NetworkPolicy, singular: "networkpolicy", short: ["netpol"],
        sub: [], categories: []),
    resource!(networking::v1::IngressClass, singular: "ingressclass", short: [],
        sub: [], categories: []),
    // storage.k8s.io/v1
    resource!(storage::v1::StorageClass, singular: "storageclass", short: ["sc"],
        sub: [], categories: []),
];

/// Every resource rkube serves, core group first.
pub fn all() -> &'static [ResourceInfo] {
    RESOURCES
}

/// The resource with this group (`""` for core), version and plural.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource whose objects have this `apiVersion` (`v1`, `apps/v1`) and `kind`.
pub fn lookup_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    let (group, version) = split_api_version(api_version);
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// Splits an `apiVersion` into group and version: `apps/v1` → (`apps`, `v1`), `v1` → (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

/// Resolves a resource name the way kubectl does: plural, singular, short name or kind,
/// case-insensitively, optionally qualified as `name.group` or `name.version.group`
/// (`deployments.apps`, `deploy.v1.apps`, `events.events.k8s.io`). Without a group, the
/// core group wins over others with the same name.
pub fn resolve(name: &str) -> Option<&'static ResourceInfo> {
    if let Some(found) = RESOURCES.iter().find(|r| r.is_called(name)) {
        return Some(found);
    }
    let (resource, qualifier) = name.split_once('.')?;
    // `name.group`
    if let Some(found) = RESOURCES
        .iter()
        .find(|r| r.is_called(resource) && r.group.eq_ignore_ascii_case(qualifier))
    {
        return Some(found);
    }
    // `name.version.group`, or `name.version` for the core group
    let (version, group) = qualifier.split_once('.').unwrap_or((qualifier, ""));
    RESOURCES.iter().find(|r| {
        r.is_called(resource)
            && r.version.eq_ignore_ascii_case(version)
            && r.group.eq_ignore_ascii_case(group)
    })
}

/// The registry entry of a `k8s_openapi` resource type, if rkube serves it.
pub fn for_type<K: Resource>() -> Option<&'static ResourceInfo> {
    lookup(K::GROUP, K::VERSION, K::URL_PATH_SEGMENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn entries_are_unique_and_consistent() {
        let mut seen = BTreeSet::new();
        for r in all() {
            assert!(
                seen.insert((r.group, r.version, r.plural)),
                "duplicate entry {}/{}",
                r.api_version(),
                r.plural
            );
            assert_eq!(r.singular, r.kind.to_lowercase(), "singular of {}", r.kind);
            assert_eq!(lookup(r.group, r.version, r.plural), Some(r));
            assert_eq!(lookup_kind(&r.api_version(), r.kind), Some(r));
        }
    }

    #[test]
    fn core_pod_facts() {
        let pods = lookup("", "v1", "pods").expect("pods registered");
        assert_eq!(pods.kind, "Pod");
        assert_eq!(pods.api_version(), "v1");
        assert!(pods.namespaced);
        assert!(pods.has_status());
        assert!(pods.has_subresource("binding"));
        assert!(!pods.has_subresource("scale"));
        assert_eq!(pods.storage_prefix(), "/registry/core/pods/");
        assert_eq!(
            pods.storage_key("default", "web"),
            "/registry/core/pods/default/web"
        );
        assert_eq!(
            pods.storage_namespace_prefix("default"),
            "/registry/core/pods/default/"
        );
        assert_eq!(pods.name_rule(), NameRule::Dns1123Subdomain);
        assert_eq!(pods.categories, &["all"]);
    }

    #[test]
    fn cluster_scoped_keys_have_no_namespace() {
        let nodes = lookup("", "v1", "nodes").expect("nodes registered");
        assert!(!nodes.namespaced);
        assert_eq!(
            nodes.storage_key("ignored", "n1"),
            "/registry/core/nodes/n1"
        );
        let crb = lookup("rbac.authorization.k8s.io", "v1", "clusterrolebindings")
            .expect("clusterrolebindings registered");
        assert_eq!(
            crb.storage_key("", "admin"),
            "/registry/rbac.authorization.k8s.io/clusterrolebindings/admin"
        );
        assert_eq!(crb.name_rule(), NameRule::PathSegment);
    }

    #[test]
    fn deployments_have_scale_and_apps_version() {
        let d = for_type::<apps::v1::Deployment>().expect("deployments registered");
        assert_eq!(d.api_version(), "apps/v1");
        assert!(d.has_subresource("scale"));
        assert_eq!(d.storage_prefix(), "/registry/apps/deployments/");
    }

    #[test]
    fn name_rules() {
        assert_eq!(
            resolve("ns").map(|r| r.name_rule()),
            Some(NameRule::Dns1123Label)
        );
        assert_eq!(
            resolve("svc").map(|r| r.name_rule()),
            Some(NameRule::Dns1123Label)
        );
        assert_eq!(
            resolve("roles").map(|r| r.name_rule()),
            Some(NameRule::PathSegment)
        );
        assert_eq!(
            resolve("cm").map(|r| r.name_rule()),
            Some(NameRule::Dns1123Subdomain)
        );
    }

    #[test]
    fn resolve_names_like_kubectl() {
        let plural = |n: &str| resolve(n).map(|r| (r.group, r.plural));
        assert_eq!(plural("po"), Some(("", "pods")));
        assert_eq!(plural("Pod"), Some(("", "pods")));
        assert_eq!(plural("PODS"), Some(("", "pods")));
        assert_eq!(plural("deploy"), Some(("apps", "deployments")));
        assert_eq!(plural("deployments.apps"), Some(("apps", "deployments")));
        assert_eq!(plural("deploy.v1.apps"), Some(("apps", "deployments")));
        assert_eq!(plural("pods.v1"), Some(("", "pods")));
        assert_eq!(plural("ev"), Some(("", "events")));
        assert_eq!(plural("events"), Some(("", "events")));
        assert_eq!(
            plural("events.events.k8s.io"),
            Some(("events.k8s.io", "events"))
        );
        assert_eq!(
            plural("netpol"),
            Some(("networking.k8s.io", "networkpolicies"))
        );
        assert_eq!(plural("cj"), Some(("batch", "cronjobs")));
        assert_eq!(plural("limits"), Some(("", "limitranges")));
        assert_eq!(plural("quota"), Some(("", "resourcequotas")));
        assert_eq!(plural("endpoints"), Some(("", "endpoints")));
        assert_eq!(plural("nosuchthing"), None);
        assert_eq!(plural("deployments.batch"), None);
        assert_eq!(plural(""), None);
    }

    #[test]
    fn lookup_kind_distinguishes_groups() {
        let core = lookup_kind("v1", "Event").expect("core events");
        let new = lookup_kind("events.k8s.io/v1", "Event").expect("events.k8s.io events");
        assert_eq!(core.group, "");
        assert_eq!(new.group, "events.k8s.io");
        assert!(lookup_kind("apps/v1beta1", "Deployment").is_none());
        assert!(lookup_kind("v1", "Deployment").is_none());
    }

    #[test]
    fn required_resources_are_present() {
        for (group, plural) in [
            ("", "namespaces"),
            ("", "pods"),
            ("", "nodes"),
            ("", "services"),
            ("", "endpoints"),
            ("", "configmaps"),
            ("", "secrets"),
            ("", "serviceaccounts"),
            ("", "events"),
            ("", "limitranges"),
            ("", "resourcequotas"),
            ("", "persistentvolumes"),
            ("", "persistentvolumeclaims"),
            ("", "replicationcontrollers"),
            ("", "podtemplates"),
            ("apps", "deployments"),
            ("apps", "replicasets"),
            ("apps", "daemonsets"),
            ("apps", "statefulsets"),
            ("apps", "controllerrevisions"),
            ("batch", "jobs"),
            ("batch", "cronjobs"),
            ("coordination.k8s.io", "leases"),
            ("discovery.k8s.io", "endpointslices"),
            ("rbac.authorization.k8s.io", "roles"),
            ("rbac.authorization.k8s.io", "rolebindings"),
            ("rbac.authorization.k8s.io", "clusterroles"),
            ("rbac.authorization.k8s.io", "clusterrolebindings"),
            ("events.k8s.io", "events"),
            ("policy", "poddisruptionbudgets"),
            ("scheduling.k8s.io", "priorityclasses"),
            ("networking.k8s.io", "ingresses"),
            ("networking.k8s.io", "networkpolicies"),
            ("networking.k8s.io", "ingressclasses"),
            ("storage.k8s.io", "storageclasses"),
        ] {
            assert!(
                lookup(group, "v1", plural).is_some(),
                "{group}/{plural} missing"
            );
        }
    }
}
