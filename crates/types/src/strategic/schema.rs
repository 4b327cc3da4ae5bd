//! The patch strategy of each field: which lists merge, and by which key, as the
//! `patchStrategy` and `patchMergeKey` tags of the Kubernetes Go types say.
//!
//! The table is keyed by the type that contains a field rather than by full paths, so that a
//! pod template merges the same way in a Deployment, a Job or a CronJob's job template. A walk
//! starts at the kind's top level ([`Schema::top`]) and steps one field at a time
//! ([`Schema::child`]); anything the table does not know is [`Schema::Unknown`], where maps
//! merge and lists are replaced, the defaults of strategic merge patch.

use crate::registry::ResourceInfo;

/// A node of the schema walk: the type of the JSON object being merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Schema {
    /// A type without merging lists below it, or one the table does not know.
    Unknown,
    /// The top level of an object whose only known part is its metadata.
    Object,
    /// The top level of a `v1` Pod.
    Pod,
    /// The top level of a `v1` Service.
    Service,
    /// The top level of a `v1` Node.
    Node,
    /// The top level of a `v1` Namespace.
    Namespace,
    /// The top level of a `v1` PersistentVolumeClaim (also a StatefulSet's claim template).
    PersistentVolumeClaim,
    /// The top level of a `v1` ServiceAccount.
    ServiceAccount,
    /// The top level of a `v1` ReplicationController.
    ReplicationController,
    /// The top level of a `v1` PodTemplate.
    PodTemplate,
    /// The top level of an `apps/v1` Deployment.
    Deployment,
    /// The top level of an `apps/v1` ReplicaSet.
    ReplicaSet,
    /// The top level of an `apps/v1` StatefulSet.
    StatefulSet,
    /// The top level of an `apps/v1` DaemonSet.
    DaemonSet,
    /// The top level of a `batch/v1` Job.
    Job,
    /// The top level of a `batch/v1` CronJob.
    CronJob,
    /// The top level of an `autoscaling/v2` HorizontalPodAutoscaler.
    HorizontalPodAutoscaler,
    /// The top level of a `policy/v1` PodDisruptionBudget.
    PodDisruptionBudget,
    /// `ObjectMeta`.
    ObjectMeta,
    /// `PodTemplateSpec`.
    PodTemplateSpec,
    /// `PodSpec`.
    PodSpec,
    /// `Container`, also used for `EphemeralContainer` (same tags on the same fields).
    Container,
    /// `PodStatus`.
    PodStatus,
    /// `ServiceSpec`.
    ServiceSpec,
    /// `NodeSpec`.
    NodeSpec,
    /// `NodeStatus`.
    NodeStatus,
    /// `DeploymentSpec`.
    DeploymentSpec,
    /// `DeploymentStrategy`: tagged `retainKeys`, which needs no table entry because the
    /// `$retainKeys` directive the client sends carries the keys.
    DeploymentStrategy,
    /// `ReplicaSetSpec`.
    ReplicaSetSpec,
    /// `StatefulSetSpec`.
    StatefulSetSpec,
    /// `DaemonSetSpec`.
    DaemonSetSpec,
    /// `JobSpec`.
    JobSpec,
    /// `JobTemplateSpec`.
    JobTemplateSpec,
    /// `CronJobSpec`.
    CronJobSpec,
    /// `ReplicationControllerSpec`.
    ReplicationControllerSpec,
    /// A status whose only merging list is `conditions`, keyed by `type`: DeploymentStatus,
    /// ReplicaSetStatus, StatefulSetStatus, DaemonSetStatus, JobStatus, NamespaceStatus,
    /// PersistentVolumeClaimStatus, ReplicationControllerStatus, ServiceStatus,
    /// HorizontalPodAutoscalerStatus and PodDisruptionBudgetStatus.
    ConditionsStatus,
}

/// How a list field combines with the list in a patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ListStrategy {
    /// The patch's list replaces the original (no `patchStrategy`).
    Replace,
    /// A list of primitives that unions with the patch's (`patchStrategy:"merge"` without a
    /// key, e.g. `metadata.finalizers`).
    MergePrimitive,
    /// A list of objects merged item by item, matched by this key.
    MergeByKey(&'static str),
}

use ListStrategy::{MergeByKey, MergePrimitive, Replace};

impl Schema {
    /// The top level of an object of `info`'s kind.
    pub(super) fn top(info: &ResourceInfo) -> Schema {
        match (info.group, info.kind) {
            ("", "Pod") => Schema::Pod,
            ("", "Service") => Schema::Service,
            ("", "Node") => Schema::Node,
            ("", "Namespace") => Schema::Namespace,
            ("", "PersistentVolumeClaim") => Schema::PersistentVolumeClaim,
            ("", "ServiceAccount") => Schema::ServiceAccount,
            ("", "ReplicationController") => Schema::ReplicationController,
            ("", "PodTemplate") => Schema::PodTemplate,
            ("apps", "Deployment") => Schema::Deployment,
            ("apps", "ReplicaSet") => Schema::ReplicaSet,
            ("apps", "StatefulSet") => Schema::StatefulSet,
            ("apps", "DaemonSet") => Schema::DaemonSet,
            ("batch", "Job") => Schema::Job,
            ("batch", "CronJob") => Schema::CronJob,
            ("autoscaling", "HorizontalPodAutoscaler") => Schema::HorizontalPodAutoscaler,
            ("policy", "PodDisruptionBudget") => Schema::PodDisruptionBudget,
            _ => Schema::Object,
        }
    }

    /// Whether this node is the top level of an object (so `metadata` is an `ObjectMeta`).
    fn is_top(self) -> bool {
        matches!(
            self,
            Schema::Object
                | Schema::Pod
                | Schema::Service
                | Schema::Node
                | Schema::Namespace
                | Schema::PersistentVolumeClaim
                | Schema::ServiceAccount
                | Schema::ReplicationController
                | Schema::PodTemplate
                | Schema::Deployment
                | Schema::ReplicaSet
                | Schema::StatefulSet
                | Schema::DaemonSet
                | Schema::Job
                | Schema::CronJob
                | Schema::HorizontalPodAutoscaler
                | Schema::PodDisruptionBudget
        )
    }

    /// The schema of `field` of this type and, if it is a list, how it merges (for a list
    /// the schema is that of its items).
    pub(super) fn child(self, field: &str) -> (Schema, ListStrategy) {
        if field == "metadata" && self.is_top() {
            return (Schema::ObjectMeta, Replace);
        }
        let schema = |schema| (schema, Replace);
        let by_key = |key| (Schema::Unknown, MergeByKey(key));
        match (self, field) {
            // Top levels.
            (Schema::Pod, "spec") => schema(Schema::PodSpec),
            (Schema::Pod, "status") => schema(Schema::PodStatus),
            (Schema::Service, "spec") => schema(Schema::ServiceSpec),
            (Schema::Node, "spec") => schema(Schema::NodeSpec),
            (Schema::Node, "status") => schema(Schema::NodeStatus),
            (Schema::ServiceAccount, "secrets") => by_key("name"),
            (Schema::ReplicationController, "spec") => schema(Schema::ReplicationControllerSpec),
            (Schema::PodTemplate, "template") => schema(Schema::PodTemplateSpec),
            (Schema::Deployment, "spec") => schema(Schema::DeploymentSpec),
            (Schema::ReplicaSet, "spec") => schema(Schema::ReplicaSetSpec),
            (Schema::StatefulSet, "spec") => schema(Schema::StatefulSetSpec),
            (Schema::DaemonSet, "spec") => schema(Schema::DaemonSetSpec),
            (Schema::Job, "spec") => schema(Schema::JobSpec),
            (Schema::CronJob, "spec") => schema(Schema::CronJobSpec),
            (
                Schema::Service
                | Schema::Namespace
                | Schema::PersistentVolumeClaim
                | Schema::ReplicationController
                | Schema::Deployment
                | Schema::ReplicaSet
                | Schema::StatefulSet
                | Schema::DaemonSet
                | Schema::Job
                | Schema::HorizontalPodAutoscaler
                | Schema::PodDisruptionBudget,
                "status",
            ) => schema(Schema::ConditionsStatus),

            (Schema::ObjectMeta, "finalizers") => (Schema::Unknown, MergePrimitive),
            (Schema::ObjectMeta, "ownerReferences") => by_key("uid"),

            // Workloads down to their pod templates.
            (Schema::DeploymentSpec, "strategy") => schema(Schema::DeploymentStrategy),
            (
                Schema::DeploymentSpec
                | Schema::ReplicaSetSpec
                | Schema::StatefulSetSpec
                | Schema::DaemonSetSpec
                | Schema::JobSpec
                | Schema::ReplicationControllerSpec,
                "template",
            ) => schema(Schema::PodTemplateSpec),
            (Schema::StatefulSetSpec, "volumeClaimTemplates") => {
                (Schema::PersistentVolumeClaim, Replace)
            }
            (Schema::CronJobSpec, "jobTemplate") => schema(Schema::JobTemplateSpec),
            (Schema::JobTemplateSpec, "metadata") => schema(Schema::ObjectMeta),
            (Schema::JobTemplateSpec, "spec") => schema(Schema::JobSpec),
            (Schema::PodTemplateSpec, "metadata") => schema(Schema::ObjectMeta),
            (Schema::PodTemplateSpec, "spec") => schema(Schema::PodSpec),

            // Pods.
            (Schema::PodSpec, "containers" | "initContainers" | "ephemeralContainers") => {
                (Schema::Container, MergeByKey("name"))
            }
            (Schema::PodSpec, "volumes" | "imagePullSecrets" | "resourceClaims") => by_key("name"),
            (Schema::PodSpec, "schedulingGates") => by_key("name"),
            (Schema::PodSpec, "hostAliases") => by_key("ip"),
            (Schema::PodSpec, "topologySpreadConstraints") => by_key("topologyKey"),
            (Schema::Container, "env") => by_key("name"),
            (Schema::Container, "ports") => by_key("containerPort"),
            (Schema::Container, "volumeMounts") => by_key("mountPath"),
            (Schema::Container, "volumeDevices") => by_key("devicePath"),
            (Schema::Container, "resizePolicy") => by_key("resourceName"),
            (Schema::PodStatus, "conditions") => by_key("type"),
            (Schema::PodStatus, "podIPs" | "hostIPs") => by_key("ip"),
            (Schema::PodStatus, "resourceClaimStatuses") => by_key("name"),

            // Services and nodes.
            (Schema::ServiceSpec, "ports") => by_key("port"),
            (Schema::NodeSpec, "podCIDRs") => (Schema::Unknown, MergePrimitive),
            (Schema::NodeStatus, "conditions" | "addresses") => by_key("type"),

            (Schema::ConditionsStatus, "conditions") => by_key("type"),

            _ => (Schema::Unknown, Replace),
        }
    }
}
