//! The `k8s-openapi` type of every kind in the registry, as one list for the code that must
//! dispatch from a [`ResourceInfo`](crate::ResourceInfo) to a Rust type (decoding,
//! normalizing, schema generation).

/// Calls `$callback!` with the type path of every registered kind, comma-separated. The
/// callback is usually a local `macro_rules!` that compares each type's
/// `k8s_openapi::Resource::{GROUP, KIND}` with a `ResourceInfo` and acts on the match.
#[macro_export]
macro_rules! for_each_kind {
    ($callback:ident) => {
        $callback!(
            $crate::k8s_openapi::api::core::v1::Namespace,
            $crate::k8s_openapi::api::core::v1::Pod,
            $crate::k8s_openapi::api::core::v1::Node,
            $crate::k8s_openapi::api::core::v1::Service,
            $crate::k8s_openapi::api::core::v1::Endpoints,
            $crate::k8s_openapi::api::core::v1::ConfigMap,
            $crate::k8s_openapi::api::core::v1::Secret,
            $crate::k8s_openapi::api::core::v1::ServiceAccount,
            $crate::k8s_openapi::api::core::v1::Event,
            $crate::k8s_openapi::api::core::v1::LimitRange,
            $crate::k8s_openapi::api::core::v1::ResourceQuota,
            $crate::k8s_openapi::api::core::v1::PersistentVolume,
            $crate::k8s_openapi::api::core::v1::PersistentVolumeClaim,
            $crate::k8s_openapi::api::core::v1::ReplicationController,
            $crate::k8s_openapi::api::core::v1::PodTemplate,
            $crate::k8s_openapi::api::apps::v1::Deployment,
            $crate::k8s_openapi::api::apps::v1::ReplicaSet,
            $crate::k8s_openapi::api::apps::v1::DaemonSet,
            $crate::k8s_openapi::api::apps::v1::StatefulSet,
            $crate::k8s_openapi::api::apps::v1::ControllerRevision,
            $crate::k8s_openapi::api::batch::v1::Job,
            $crate::k8s_openapi::api::batch::v1::CronJob,
            $crate::k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler,
            $crate::k8s_openapi::api::coordination::v1::Lease,
            $crate::k8s_openapi::api::discovery::v1::EndpointSlice,
            $crate::k8s_openapi::api::rbac::v1::Role,
            $crate::k8s_openapi::api::rbac::v1::RoleBinding,
            $crate::k8s_openapi::api::rbac::v1::ClusterRole,
            $crate::k8s_openapi::api::rbac::v1::ClusterRoleBinding,
            $crate::k8s_openapi::api::events::v1::Event,
            $crate::k8s_openapi::api::policy::v1::PodDisruptionBudget,
            $crate::k8s_openapi::api::scheduling::v1::PriorityClass,
            $crate::k8s_openapi::api::networking::v1::Ingress,
            $crate::k8s_openapi::api::networking::v1::NetworkPolicy,
            $crate::k8s_openapi::api::networking::v1::IngressClass,
            $crate::k8s_openapi::api::storage::v1::StorageClass
        )
    };
}

#[cfg(test)]
mod tests {
    use crate::registry;

    #[test]
    fn every_registered_kind_has_a_type_and_no_type_is_unregistered() {
        macro_rules! pairs {
            ($($ty:ty),* $(,)?) => {
                vec![$((
                    <$ty as k8s_openapi::Resource>::GROUP,
                    <$ty as k8s_openapi::Resource>::KIND,
                )),*]
            };
        }
        let types: Vec<(&str, &str)> = crate::for_each_kind!(pairs);
        for info in registry::all() {
            assert!(
                types.contains(&(info.group, info.kind)),
                "{}/{} has no type in for_each_kind!",
                info.group,
                info.kind
            );
        }
        assert_eq!(types.len(), registry::all().len(), "no extra types");
    }
}
