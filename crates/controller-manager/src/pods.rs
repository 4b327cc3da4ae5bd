//! What controllers ask about pods: active, ready, available, and new pods from a template.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// Whether the pod counts toward a controller's replicas: not finished and not being
/// deleted.
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !is_terminated(pod)
}

/// Whether the pod has finished (`Succeeded` or `Failed`).
pub fn is_terminated(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// The pod's phase, `Pending` when it has none yet.
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// When the pod's `Ready` condition last turned true, if it is true.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let cond = pod
        .status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    if cond.status != "True" {
        return None;
    }
    Some(
        cond.last_transition_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH),
    )
}

/// Whether the pod's `Ready` condition is true.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Whether the pod has been ready for at least `min_ready_seconds` at `now`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(since) => now
            .since(since)
            .ok()
            .and_then(|d| d.total(jiff::Unit::Second).ok())
            .is_some_and(|s| s >= f64::from(min_ready_seconds)),
    }
}

/// A new pod from `template` in `namespace`, controlled by `owner`, named `name` or, when
/// `name` is `None`, generated from `prefix` (upstream: the owner's name and a dash).
pub fn from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    owner: OwnerReference,
    name: Option<String>,
    prefix: &str,
) -> Pod {
    let source = template.metadata.clone().unwrap_or_default();
    let generate_name = if name.is_none() {
        Some(format!("{prefix}-"))
    } else {
        None
    };
    Pod {
        metadata: ObjectMeta {
            name,
            generate_name,
            namespace: Some(namespace.to_string()),
            labels: source.labels.filter(|l: &BTreeMap<_, _>| !l.is_empty()),
            annotations: source
                .annotations
                .filter(|a: &BTreeMap<_, _>| !a.is_empty()),
            finalizers: source.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ready_pod(since: &str) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(since.parse().unwrap())),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let pod = ready_pod("2026-01-01T00:00:00Z");
        let now: Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
        assert!(is_ready(&pod));
        assert!(is_available(&pod, 0, now));
        assert!(is_available(&pod, 10, now));
        assert!(!is_available(&pod, 11, now));
        assert!(is_active(&pod));
        assert!(!is_available(&Pod::default(), 0, now));
        assert_eq!(phase(&Pod::default()), "Pending");
    }
}
