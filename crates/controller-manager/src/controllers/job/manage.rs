//! How many pods a Job wants and what they look like (upstream's `manageJob` and the
//! apiserver's Job selector generation): the selector and labels, the pod template with the
//! tracking finalizer (and, for Indexed Jobs, the completion index annotation, label,
//! environment variable and hostname), the number of active pods wanted, and which active
//! pods go first when there are too many.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodTemplateSpec};
use rkube_types::selector::LabelSelector;
use serde_json::json;

use super::indexed::{self, COMPLETION_INDEX_ANNOTATION, COMPLETION_INDEX_ENV};
use crate::error::{Error, Result};

/// The finalizer that keeps a finished pod until the Job has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";

/// The label with the Job's UID on its pods (and its generated selector).
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The label with the Job's name on its pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// The pre-1.27 form of [`CONTROLLER_UID_LABEL`], still written.
pub const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
/// The pre-1.27 form of [`JOB_NAME_LABEL`], still written.
pub const LEGACY_JOB_NAME_LABEL: &str = "job-name";

/// The most pods one sync creates or deletes (upstream's `MaxPodCreateDeletePerSync`).
pub const MAX_POD_CHANGES_PER_SYNC: usize = 500;

/// Whether the Job's `completionMode` is `Indexed`.
pub fn is_indexed(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.completion_mode.as_deref()) == Some("Indexed")
}

/// `spec.completions`, `None` for a work-queue Job.
pub fn completions(job: &Job) -> Option<i32> {
    job.spec.as_ref()?.completions
}

/// `spec.parallelism` (1 when unset, as the API defaults it).
pub fn parallelism(job: &Job) -> i32 {
    job.spec
        .as_ref()
        .and_then(|s| s.parallelism)
        .unwrap_or(1)
        .max(0)
}

/// Whether the selector and labels are generated (`manualSelector` is not true).
fn generated_selector(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.manual_selector) != Some(true)
}

/// The Job's selector: `spec.selector`, or — when the apiserver did not generate one — the
/// one upstream's apiserver would, `batch.kubernetes.io/controller-uid=<uid>`.
pub fn selector(job: &Job) -> Result<LabelSelector> {
    let invalid = |e: rkube_types::selector::SelectorError| {
        Error::Invalid(format!("invalid selector of job: {e}"))
    };
    match job.spec.as_ref().and_then(|s| s.selector.as_ref()) {
        Some(selector) => LabelSelector::from_api(selector).map_err(invalid),
        None => {
            let uid = job.metadata.uid.clone().unwrap_or_default();
            LabelSelector::from_labels(&BTreeMap::from([(CONTROLLER_UID_LABEL.to_string(), uid)]))
                .map_err(invalid)
        }
    }
}

/// Whether the Job's pods, made from [`pod_template`], match its [`selector`].
pub fn selector_matches_template(job: &Job) -> Result<bool> {
    let labels = pod_template(job)
        .metadata
        .and_then(|m| m.labels)
        .unwrap_or_default();
    let selector = selector(job)?;
    Ok(!selector.is_everything() && selector.matches(&labels))
}

/// The template the Job's pods are made from: `spec.template` with the generated labels
/// (unless `manualSelector`), the tracking finalizer and, for an Indexed Job, the
/// `JOB_COMPLETION_INDEX` variable in every container.
pub fn pod_template(job: &Job) -> PodTemplateSpec {
    let mut template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let meta = template.metadata.get_or_insert_with(Default::default);
    if generated_selector(job) {
        let name = job.metadata.name.clone().unwrap_or_default();
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let labels = meta.labels.get_or_insert_with(BTreeMap::new);
        for (key, value) in [
            (LEGACY_JOB_NAME_LABEL, &name),
            (JOB_NAME_LABEL, &name),
            (LEGACY_CONTROLLER_UID_LABEL, &uid),
            (CONTROLLER_UID_LABEL, &uid),
        ] {
            labels
                .entry(key.to_string())
                .or_insert_with(|| value.clone());
        }
    }
    let finalizers = meta.finalizers.get_or_insert_with(Vec::new);
    if !finalizers.iter().any(|f| f == TRACKING_FINALIZER) {
        finalizers.push(TRACKING_FINALIZER.to_string());
    }
    if is_indexed(job)
        && let Some(spec) = template.spec.as_mut()
    {
        let containers = spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten());
        for container in containers {
            let env = container.env.get_or_insert_with(Vec::new);
            if !env.iter().any(|e| e.name == COMPLETION_INDEX_ENV) {
                env.push(EnvVar {
                    name: COMPLETION_INDEX_ENV.to_string(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            api_version: None,
                            field_path: format!(
                                "metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"
                            ),
                        }),
                        ..Default::default()
                    }),
                });
            }
        }
    }
    template
}

/// The template of the pod for completion index `index`: annotated and labelled with it,
/// with hostname `<job>-<index>`.
pub fn indexed_pod_template(
    template: &PodTemplateSpec,
    job_name: &str,
    index: i32,
) -> PodTemplateSpec {
    let mut template = template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(COMPLETION_INDEX_ANNOTATION.to_string(), index.to_string());
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(COMPLETION_INDEX_ANNOTATION.to_string(), index.to_string());
    if let Some(spec) = template.spec.as_mut() {
        spec.hostname = Some(format!("{job_name}-{index}"));
    }
    template
}

/// The prefix of generated pod names (a dash follows): `<job>` or `<job>-<index>`, cut so
/// the generated name stays within 63 characters.
pub fn pod_name_prefix(job_name: &str, index: Option<i32>) -> String {
    // 63 characters minus the 5 random ones the apiserver appends, minus the dash.
    const MAX_PREFIX: usize = 63 - 5 - 1;
    let suffix = index.map(|i| format!("-{i}")).unwrap_or_default();
    let room = MAX_PREFIX.saturating_sub(suffix.len());
    let mut name: String = job_name.chars().take(room).collect();
    name.push_str(&suffix);
    name
}

/// How many pods should be active (upstream's `wantActive`): `parallelism`, but never more
/// than the completions left; for a work-queue Job, `parallelism` until one pod succeeded,
/// then whatever is still running.
pub fn want_active(job: &Job, active: i32, succeeded: i32) -> i32 {
    let parallelism = parallelism(job);
    match completions(job) {
        None if succeeded > 0 => active,
        None => parallelism,
        Some(completions) => (completions - succeeded).clamp(0, parallelism),
    }
}

fn phase_rank(pod: &Pod) -> u8 {
    match crate::pods::phase(pod) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    }
}

fn max_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
}

/// Orders pods so the ones to delete first come first (upstream's `ActivePods`):
/// unscheduled before scheduled, pending before running, not ready before ready, ready for
/// less time before longer, more restarts before fewer, newer before older.
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let node = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
    };
    let (na, nb) = (node(a), node(b));
    if na != nb && (na.is_none() || nb.is_none()) {
        return if na.is_none() {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    let by_phase = phase_rank(a).cmp(&phase_rank(b));
    if by_phase != Ordering::Equal {
        return by_phase;
    }
    let (ra, rb) = (crate::pods::ready_since(a), crate::pods::ready_since(b));
    match (ra, rb) {
        (None, Some(_)) => return Ordering::Less,
        (Some(_), None) => return Ordering::Greater,
        // Ready more recently first.
        (Some(ta), Some(tb)) if ta != tb => return tb.cmp(&ta),
        _ => {}
    }
    let by_restarts = max_restarts(b).cmp(&max_restarts(a));
    if by_restarts != Ordering::Equal {
        return by_restarts;
    }
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    match (created(a), created(b)) {
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (ca, cb) => cb.cmp(&ca),
    }
}

/// The active pods to delete: for an Indexed Job those with a missing, out-of-range or
/// repeated index first; then, up to `at_least`, in [`deletion_order`].
pub fn pods_for_removal(job: &Job, active: &[Arc<Pod>], at_least: usize) -> Vec<Arc<Pod>> {
    let (mut remove, mut rest) = if is_indexed(job) {
        indexed::duplicated_or_invalid(active, completions(job).unwrap_or(0), deletion_order)
    } else {
        (Vec::new(), active.to_vec())
    };
    if remove.len() < at_least {
        rest.sort_by(|a, b| deletion_order(a, b));
        let more = (at_least - remove.len()).min(rest.len());
        remove.extend(rest.drain(..more));
    }
    remove
}

/// Whether the pod still carries the tracking finalizer.
pub fn has_tracking_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .as_deref()
        .is_some_and(|f| f.iter().any(|f| f == TRACKING_FINALIZER))
}

/// A JSON patch removing the tracking finalizer from `pod`, failing if the finalizers
/// changed since (`None` when it has none).
pub fn remove_finalizer_patch(pod: &Pod) -> Option<rkube_client::Patch> {
    let finalizers = pod.metadata.finalizers.as_deref()?;
    let i = finalizers.iter().position(|f| f == TRACKING_FINALIZER)?;
    let path = format!("/metadata/finalizers/{i}");
    Some(rkube_client::Patch::Json(json!([
        {"op": "test", "path": path, "value": TRACKING_FINALIZER},
        {"op": "remove", "path": path},
    ])))
}

/// A JSON patch adding the tracking finalizer to `pod` (an adopted one).
pub fn add_finalizer_patch(pod: &Pod) -> rkube_client::Patch {
    let op = match pod.metadata.finalizers.as_deref() {
        Some(list) if !list.is_empty() => {
            json!({"op": "add", "path": "/metadata/finalizers/-", "value": TRACKING_FINALIZER})
        }
        _ => json!({"op": "add", "path": "/metadata/finalizers", "value": [TRACKING_FINALIZER]}),
    };
    rkube_client::Patch::Json(json!([op]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::api::core::v1::{Container, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelector as ApiSelector, ObjectMeta, Time,
    };

    fn job(spec: JobSpec) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("pi".into()),
                uid: Some("uid-1".into()),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        }
    }

    fn template() -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "pi".into())])),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn generated_selector_and_labels_match_upstream() {
        let j = job(JobSpec {
            template: template(),
            ..Default::default()
        });
        let t = pod_template(&j);
        let meta = t.metadata.unwrap();
        let labels = meta.labels.unwrap();
        assert_eq!(labels[CONTROLLER_UID_LABEL], "uid-1");
        assert_eq!(labels[LEGACY_CONTROLLER_UID_LABEL], "uid-1");
        assert_eq!(labels[JOB_NAME_LABEL], "pi");
        assert_eq!(labels[LEGACY_JOB_NAME_LABEL], "pi");
        assert_eq!(labels["app"], "pi");
        assert_eq!(meta.finalizers.unwrap(), [TRACKING_FINALIZER]);
        let sel = selector(&j).unwrap();
        assert!(sel.matches(&labels));
        let mut other = labels.clone();
        other.insert(CONTROLLER_UID_LABEL.into(), "uid-2".into());
        assert!(!sel.matches(&other), "only this job's pods");

        // A manual selector is used as it is, and no labels are added.
        let manual = job(JobSpec {
            manual_selector: Some(true),
            selector: Some(ApiSelector {
                match_labels: Some(BTreeMap::from([("app".into(), "pi".into())])),
                ..Default::default()
            }),
            template: template(),
            ..Default::default()
        });
        let labels = pod_template(&manual).metadata.unwrap().labels.unwrap();
        assert_eq!(labels.len(), 1);
        assert!(selector(&manual).unwrap().matches(&labels));
        assert!(selector_matches_template(&manual).unwrap());
        assert!(selector_matches_template(&j).unwrap());
        let mut mismatch = manual.clone();
        let spec = mismatch.spec.as_mut().unwrap();
        spec.selector.as_mut().unwrap().match_labels =
            Some(BTreeMap::from([("app".into(), "other".into())]));
        assert!(!selector_matches_template(&mismatch).unwrap());
    }

    #[test]
    fn indexed_pods_carry_their_index() {
        let j = job(JobSpec {
            completion_mode: Some("Indexed".into()),
            template: template(),
            ..Default::default()
        });
        let t = indexed_pod_template(&pod_template(&j), "pi", 3);
        let meta = t.metadata.unwrap();
        assert_eq!(meta.annotations.unwrap()[COMPLETION_INDEX_ANNOTATION], "3");
        assert_eq!(meta.labels.unwrap()[COMPLETION_INDEX_ANNOTATION], "3");
        let spec = t.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("pi-3"));
        let env = spec.containers[0].env.as_ref().unwrap();
        assert_eq!(env[0].name, COMPLETION_INDEX_ENV);
        assert_eq!(
            env[0]
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        );
        assert_eq!(pod_name_prefix("pi", Some(3)), "pi-3");
        assert_eq!(pod_name_prefix("pi", None), "pi");
        let long = "x".repeat(70);
        assert_eq!(pod_name_prefix(&long, Some(12)).len(), 57);
        assert!(pod_name_prefix(&long, Some(12)).ends_with("-12"));
    }

    #[test]
    fn wanted_pods_follow_parallelism_and_remaining_completions() {
        let j = |completions, parallelism| {
            job(JobSpec {
                completions,
                parallelism: Some(parallelism),
                ..Default::default()
            })
        };
        assert_eq!(want_active(&j(Some(3), 2), 0, 0), 2);
        assert_eq!(want_active(&j(Some(3), 2), 2, 2), 1);
        assert_eq!(want_active(&j(Some(3), 2), 0, 3), 0);
        assert_eq!(want_active(&j(Some(3), 2), 0, 5), 0);
        assert_eq!(want_active(&j(None, 4), 1, 0), 4);
        assert_eq!(
            want_active(&j(None, 4), 1, 1),
            1,
            "work queue: no new pods after a success"
        );
    }

    fn pod(name: &str, node: Option<&str>, phase: &str, ready_at: Option<&str>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(Into::into),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready_at.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(t.parse::<Timestamp>().unwrap())),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn removal_prefers_pods_that_did_the_least() {
        let j = job(JobSpec::default());
        let pods = vec![
            pod(
                "ready-long",
                Some("n"),
                "Running",
                Some("2026-01-01T00:00:00Z"),
            ),
            pod(
                "ready-recent",
                Some("n"),
                "Running",
                Some("2026-01-01T00:05:00Z"),
            ),
            pod("running", Some("n"), "Running", None),
            pod("pending", Some("n"), "Pending", None),
            pod("unscheduled", None, "Pending", None),
        ];
        let names: Vec<String> = pods_for_removal(&j, &pods, 5)
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "unscheduled",
                "pending",
                "running",
                "ready-recent",
                "ready-long"
            ]
        );
        assert_eq!(pods_for_removal(&j, &pods, 1).len(), 1);
        assert!(pods_for_removal(&j, &pods, 0).is_empty());
    }

    #[test]
    fn finalizer_patches_test_before_removing() {
        let mut p = Pod::default();
        assert!(remove_finalizer_patch(&p).is_none());
        assert_eq!(
            add_finalizer_patch(&p),
            rkube_client::Patch::Json(
                json!([{"op": "add", "path": "/metadata/finalizers", "value": [TRACKING_FINALIZER]}])
            )
        );
        p.metadata.finalizers = Some(vec!["other".into(), TRACKING_FINALIZER.into()]);
        assert!(has_tracking_finalizer(&p));
        assert_eq!(
            remove_finalizer_patch(&p),
            Some(rkube_client::Patch::Json(json!([
                {"op": "test", "path": "/metadata/finalizers/1", "value": TRACKING_FINALIZER},
                {"op": "remove", "path": "/metadata/finalizers/1"},
            ])))
        );
    }
}
