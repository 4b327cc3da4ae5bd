//! The stable identity of a StatefulSet's pods (upstream's `stateful_set_utils.go`): the
//! name `<set>-<ordinal>`, the labels `statefulset.kubernetes.io/pod-name` and
//! `apps.kubernetes.io/pod-index`, `hostname` and `subdomain` (the governing service), and one
//! PersistentVolumeClaim per `volumeClaimTemplates` entry named `<claim>-<set>-<ordinal>`.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::controllers::history::CONTROLLER_REVISION_HASH_LABEL;
use crate::ownership::owner_reference;
use crate::pods;

/// The label with a stateful pod's name (so a Service can select one pod).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label with a stateful pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// The set name and ordinal in a pod name `<set>-<ordinal>` (upstream's
/// `getParentNameAndOrdinal`: the ordinal is the trailing digits after the last dash).
pub fn parent_and_ordinal(name: &str) -> Option<(&str, i32)> {
    let (parent, digits) = name.rsplit_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, digits.parse().ok()?))
}

/// A pod's ordinal, if its name has one.
pub fn ordinal(pod: &Pod) -> Option<i32> {
    parent_and_ordinal(pod.metadata.name.as_deref()?).map(|(_, o)| o)
}

/// The name of `set`'s pod with `ordinal`.
pub fn pod_name(set: &str, ordinal: i32) -> String {
    format!("{set}-{ordinal}")
}

/// The name of the claim from template `claim` for `set`'s pod with `ordinal`.
pub fn claim_name(claim: &str, set: &str, ordinal: i32) -> String {
    format!("{claim}-{set}-{ordinal}")
}

fn set_name(set: &StatefulSet) -> &str {
    set.metadata.name.as_deref().unwrap_or_default()
}

/// Whether `pod`'s name makes it one of `set`'s pods.
pub fn is_member_of(set: &StatefulSet, pod: &Pod) -> bool {
    pod.metadata
        .name
        .as_deref()
        .and_then(parent_and_ordinal)
        .is_some_and(|(parent, _)| parent == set_name(set))
}

/// `spec.replicas` (default 1).
pub fn replicas(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0)
}

/// The first ordinal (`spec.ordinals.start`, default 0).
pub fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.ordinals.as_ref())
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0)
}

/// The governing service's name (`spec.serviceName`).
pub fn service_name(set: &StatefulSet) -> &str {
    set.spec
        .as_ref()
        .and_then(|s| s.service_name.as_deref())
        .unwrap_or_default()
}

/// The revision a pod was made from (its `controller-revision-hash` label).
pub fn revision_of(pod: &Pod) -> &str {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(CONTROLLER_REVISION_HASH_LABEL))
        .map_or("", String::as_str)
}

/// Whether the pod has its identity: name, namespace and identity labels of its ordinal
/// (upstream's `identityMatches`).
pub fn identity_matches(set: &StatefulSet, pod: &Pod) -> bool {
    let Some((parent, ordinal)) = pod.metadata.name.as_deref().and_then(parent_and_ordinal) else {
        return false;
    };
    let name = pod_name(set_name(set), ordinal);
    let label = |k: &str| pod.metadata.labels.as_ref().and_then(|l| l.get(k));
    parent == set_name(set)
        && pod.metadata.name.as_deref() == Some(name.as_str())
        && pod.metadata.namespace == set.metadata.namespace
        && label(POD_NAME_LABEL) == Some(&name)
        && label(POD_INDEX_LABEL) == Some(&ordinal.to_string())
}

/// The claim templates of `set`.
pub fn claim_templates(set: &StatefulSet) -> &[PersistentVolumeClaim] {
    set.spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_deref())
        .unwrap_or_default()
}

/// Whether the pod mounts every claim of the set's templates under the template's name
/// (upstream's `storageMatches`).
pub fn storage_matches(set: &StatefulSet, pod: &Pod) -> bool {
    let Some(ordinal) = ordinal(pod) else {
        return false;
    };
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    claim_templates(set).iter().all(|template| {
        let template_name = template.metadata.name.as_deref().unwrap_or_default();
        let wanted = claim_name(template_name, set_name(set), ordinal);
        volumes.iter().any(|v| {
            v.name == template_name
                && v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == wanted)
        })
    })
}

/// Whether `policy` of `persistentVolumeClaimRetentionPolicy` is `Delete`.
fn retention_deletes(
    set: &StatefulSet,
    when: fn(
        &k8s_openapi::api::apps::v1::StatefulSetPersistentVolumeClaimRetentionPolicy,
    ) -> Option<&String>,
) -> bool {
    set.spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref())
        .and_then(when)
        .is_some_and(|p| p == "Delete")
}

/// Whether the claims go with the set (`whenDeleted: Delete`).
pub fn claims_deleted_with_set(set: &StatefulSet) -> bool {
    retention_deletes(set, |p| p.when_deleted.as_ref())
}

/// Whether the claims of condemned pods go with them (`whenScaled: Delete`).
pub fn claims_deleted_on_scale_down(set: &StatefulSet) -> bool {
    retention_deletes(set, |p| p.when_scaled.as_ref())
}

/// A non-controlling owner reference (claims are owned, not controlled, by the set or pod,
/// so the garbage collector deletes them after their owner).
fn plain_owner(mut owner: OwnerReference) -> OwnerReference {
    owner.controller = None;
    owner.block_owner_deletion = Some(true);
    owner
}

/// The claims of `set`'s pod with `ordinal`: each template renamed `<claim>-<set>-<ordinal>`,
/// labelled with the template's labels and the set's `matchLabels`, and owned by the set
/// under `whenDeleted: Delete`.
pub fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let match_labels = set
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    claim_templates(set)
        .iter()
        .map(|template| {
            let mut claim = template.clone();
            let template_name = template.metadata.name.clone().unwrap_or_default();
            let mut labels: BTreeMap<String, String> =
                template.metadata.labels.clone().unwrap_or_default();
            labels.extend(match_labels.clone());
            claim.metadata = ObjectMeta {
                name: Some(claim_name(&template_name, set_name(set), ordinal)),
                namespace: set.metadata.namespace.clone(),
                labels: Some(labels),
                annotations: template.metadata.annotations.clone(),
                owner_references: claims_deleted_with_set(set)
                    .then(|| vec![plain_owner(owner_reference(set))]),
                ..Default::default()
            };
            claim.status = None;
            claim
        })
        .collect()
}

/// A pod owner reference for a claim whose pod is scaled away under `whenScaled: Delete`.
pub fn claim_owner_for_pod(pod: &Pod) -> OwnerReference {
    plain_owner(owner_reference(pod))
}

/// A new pod of `set` with `ordinal`, from `template` at revision `revision` (upstream's
/// `newStatefulSetPod` + `setPodRevision`): its identity, `hostname` and `subdomain`, and a
/// volume per claim template.
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, ordinal: i32, revision: &str) -> Pod {
    let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod_name(set_name(set), ordinal);
    let mut pod = pods::from_template(
        template,
        namespace,
        owner_reference(set),
        Some(name.clone()),
        set_name(set),
    );
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), revision.into());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.hostname = Some(name);
    let service = service_name(set);
    if !service.is_empty() {
        spec.subdomain = Some(service.to_string());
    }
    let claims = claim_templates(set);
    if !claims.is_empty() {
        let mut volumes: Vec<Volume> = claims
            .iter()
            .map(|t| {
                let template_name = t.metadata.name.clone().unwrap_or_default();
                Volume {
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim_name(&template_name, set_name(set), ordinal),
                        read_only: None,
                    }),
                    name: template_name,
                    ..Default::default()
                }
            })
            .collect();
        let names: Vec<String> = volumes.iter().map(|v| v.name.clone()).collect();
        volumes.extend(
            spec.volumes
                .take()
                .unwrap_or_default()
                .into_iter()
                .filter(|v| !names.contains(&v.name)),
        );
        spec.volumes = Some(volumes);
    }
    pod
}

/// Whether the pod is Running and Ready (upstream's `isRunningAndReady`).
pub fn is_running_and_ready(pod: &Pod) -> bool {
    pods::phase(pod) == "Running" && pods::is_ready(pod)
}

/// Whether the pod is Running and has been Ready for `min_ready_seconds`.
pub fn is_running_and_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    pods::phase(pod) == "Running" && pods::is_available(pod, min_ready_seconds, now)
}

/// Whether the pod is being deleted.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Sorts pods by ordinal, highest first.
pub fn sort_descending(pods: &mut [Arc<Pod>]) {
    pods.sort_by_key(|p| std::cmp::Reverse(ordinal(p).unwrap_or(-1)));
}
