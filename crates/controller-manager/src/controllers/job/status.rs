//! A Job's conditions and the decisions behind them: finished or not, past the backoff
//! limit, past the active deadline, due for deletion after `ttlSecondsAfterFinished`.
//!
//! As in Kubernetes 1.32 (with `JobPodReplacementPolicy` on), a Job that meets its
//! completions first gets `SuccessCriteriaMet` and one that fails first gets
//! `FailureTarget` (reason `BackoffLimitExceeded` or `DeadlineExceeded`); the terminal
//! `Complete` or `Failed` condition follows once no pod of the Job is still terminating.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The Job finished successfully.
pub const COMPLETE: &str = "Complete";
/// The Job failed.
pub const FAILED: &str = "Failed";
/// The Job will fail once its pods are gone.
pub const FAILURE_TARGET: &str = "FailureTarget";
/// The Job will complete once its pods are gone.
pub const SUCCESS_CRITERIA_MET: &str = "SuccessCriteriaMet";
/// The Job is suspended (`True`) or was and is resumed (`False`).
pub const SUSPENDED: &str = "Suspended";

/// Reason of a Job that failed more pods than `backoffLimit` allows.
pub const BACKOFF_LIMIT_EXCEEDED: &str = "BackoffLimitExceeded";
/// Reason of a Job that ran longer than `activeDeadlineSeconds`.
pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";

/// `spec.backoffLimit` when unset (the API default).
pub const DEFAULT_BACKOFF_LIMIT: i32 = 6;

/// The value of `spec.managedBy` that means this controller.
pub const MANAGED_BY_JOB_CONTROLLER: &str = "kubernetes.io/job-controller";

/// The condition of `type_`, if the Job has one.
pub fn condition<'a>(job: &'a Job, type_: &str) -> Option<&'a JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is true.
pub fn has_true(job: &Job, type_: &str) -> bool {
    condition(job, type_).is_some_and(|c| c.status == "True")
}

/// The true `Complete` or `Failed` condition of a finished Job.
pub fn finished(job: &Job) -> Option<&JobCondition> {
    [COMPLETE, FAILED]
        .into_iter()
        .filter_map(|t| condition(job, t))
        .find(|c| c.status == "True")
}

/// A new condition at `now`.
pub fn new_condition(type_: &str, reason: &str, message: &str, now: Timestamp) -> JobCondition {
    JobCondition {
        type_: type_.to_string(),
        status: "True".to_string(),
        reason: Some(reason.to_string()).filter(|r| !r.is_empty()),
        message: Some(message.to_string()).filter(|m| !m.is_empty()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets the condition of `type_` to `status` (adding it unless `status` is `False`);
/// whether anything changed (upstream's `ensureJobConditionStatus`).
pub fn ensure_condition(
    conditions: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    let mut wanted = new_condition(type_, reason, message, now);
    wanted.status = status.to_string();
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        let same = c.status == status
            && c.reason.as_deref().unwrap_or_default() == reason
            && c.message.as_deref().unwrap_or_default() == message;
        if !same {
            *c = wanted;
        }
        return !same;
    }
    if status == "False" {
        return false;
    }
    conditions.push(wanted);
    true
}

/// Whether `spec.suspend` is true.
pub fn suspended(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.suspend) == Some(true)
}

/// Whether only failed pods are replaced (`podReplacementPolicy: Failed`, the default with a
/// pod failure policy); otherwise terminating pods are replaced too.
pub fn only_replace_failed_pods(job: &Job) -> bool {
    let spec = job.spec.as_ref();
    match spec.and_then(|s| s.pod_replacement_policy.as_deref()) {
        Some(policy) => policy == "Failed",
        None => spec.is_some_and(|s| s.pod_failure_policy.is_some()),
    }
}

/// Whether the pod counts as failed: it is `Failed`, or (unless only failed pods are
/// replaced) it is being deleted before it succeeded.
pub fn is_pod_failed(pod: &Pod, job: &Job) -> bool {
    let phase = crate::pods::phase(pod);
    if phase == "Failed" {
        return true;
    }
    if only_replace_failed_pods(job) {
        return false;
    }
    pod.metadata.deletion_timestamp.is_some() && phase != "Succeeded"
}

/// The effective `spec.backoffLimit`.
pub fn backoff_limit(job: &Job) -> i32 {
    job.spec
        .as_ref()
        .and_then(|s| s.backoff_limit)
        .unwrap_or(DEFAULT_BACKOFF_LIMIT)
}

/// With `restartPolicy: OnFailure` failures are container restarts: whether the running
/// pods restarted containers more than the backoff limit allows.
pub fn past_backoff_limit_on_failure(job: &Job, pods: &[std::sync::Arc<Pod>]) -> bool {
    let restart_policy = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.restart_policy.as_deref());
    if restart_policy != Some("OnFailure") {
        return false;
    }
    let restarts: i64 = pods
        .iter()
        .filter(|p| matches!(crate::pods::phase(p), "Running" | "Pending"))
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .map(|c| i64::from(c.restart_count))
        .sum();
    let limit = i64::from(backoff_limit(job));
    if limit == 0 {
        restarts > 0
    } else {
        restarts >= limit
    }
}

/// How long the Job may still run before `activeDeadlineSeconds` (zero once past);
/// `None` without a deadline, a start time, or while suspended.
pub fn active_deadline_left(job: &Job, now: Timestamp) -> Option<Duration> {
    let seconds = job.spec.as_ref()?.active_deadline_seconds?;
    let start = job.status.as_ref()?.start_time.as_ref()?.0;
    if suspended(job) {
        return None;
    }
    let end = start
        .checked_add(SignedDuration::from_secs(seconds))
        .unwrap_or(Timestamp::MAX);
    Some(Duration::try_from(end.duration_since(now)).unwrap_or(Duration::ZERO))
}

/// When a finished Job with `ttlSecondsAfterFinished` is to be deleted: its finish time
/// (the terminal condition's transition) plus the TTL. `None` when it has no TTL, is not
/// finished, or is being deleted already.
pub fn expires_at(job: &Job) -> Option<Timestamp> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    if job.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let finished_at = finished(job)?.last_transition_time.as_ref()?.0;
    Some(
        finished_at
            .checked_add(SignedDuration::from_secs(i64::from(ttl)))
            .unwrap_or(Timestamp::MAX),
    )
}

/// Where a running Job is heading (upstream's `syncJob`): a Job with `SuccessCriteriaMet`
/// keeps it; one with `FailureTarget` is to get `Failed` with its reason; one with more
/// than `backoffLimit` failed pods (`failed` counts them all), or restarts past it, or past
/// its active deadline, gets `FailureTarget`. Also returns when the deadline is next due.
pub fn finishing(
    job: &Job,
    pods: &[std::sync::Arc<Pod>],
    failed: i32,
    now: Timestamp,
) -> (Option<JobCondition>, Option<Duration>) {
    if let Some(met) = condition(job, SUCCESS_CRITERIA_MET).filter(|c| c.status == "True") {
        return (Some(met.clone()), None);
    }
    if let Some(target) = condition(job, FAILURE_TARGET).filter(|c| c.status == "True") {
        let failed = new_condition(
            FAILED,
            target.reason.as_deref().unwrap_or_default(),
            target.message.as_deref().unwrap_or_default(),
            now,
        );
        return (Some(failed), None);
    }
    if failed > backoff_limit(job) || past_backoff_limit_on_failure(job, pods) {
        let target = new_condition(
            FAILURE_TARGET,
            BACKOFF_LIMIT_EXCEEDED,
            "Job has reached the specified backoff limit",
            now,
        );
        return (Some(target), None);
    }
    match active_deadline_left(job, now) {
        Some(left) if left.is_zero() => {
            let target = new_condition(
                FAILURE_TARGET,
                DEADLINE_EXCEEDED,
                "Job was active longer than specified deadline",
                now,
            );
            (Some(target), None)
        }
        left => (None, left),
    }
}

/// Adds the terminal condition once nothing is left to count and no pod is terminating
/// (upstream's `enactJobFinished`); whether the Job finished now.
pub fn enact_finished(
    status: &mut JobStatus,
    finishing: Option<&JobCondition>,
    terminating: i32,
    now: Timestamp,
) -> bool {
    let Some(cond) = finishing else {
        return false;
    };
    let uncounted = status.uncounted_terminated_pods.as_ref().map_or(0, |u| {
        u.succeeded.as_ref().map_or(0, Vec::len) + u.failed.as_ref().map_or(0, Vec::len)
    });
    if uncounted > 0 || terminating > 0 {
        return false;
    }
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    ensure_condition(
        conditions,
        &cond.type_,
        &cond.status,
        cond.reason.as_deref().unwrap_or_default(),
        cond.message.as_deref().unwrap_or_default(),
        now,
    );
    if cond.type_ == COMPLETE {
        status.completion_time = cond.last_transition_time.clone();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobSpec, JobStatus};
    use k8s_openapi::api::core::v1::{ContainerStatus, PodSpec, PodStatus, PodTemplateSpec};
    use std::sync::Arc;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn job(spec: JobSpec, status: JobStatus) -> Job {
        Job {
            spec: Some(spec),
            status: Some(status),
            ..Default::default()
        }
    }

    #[test]
    fn conditions_are_added_once_and_updated_on_change() {
        let now = ts("2026-01-01T00:00:00Z");
        let later = ts("2026-01-01T00:01:00Z");
        let mut list = Vec::new();
        assert!(!ensure_condition(
            &mut list,
            SUSPENDED,
            "False",
            "JobResumed",
            "Job resumed",
            now
        ));
        assert!(list.is_empty(), "nothing to False is not a change");
        assert!(ensure_condition(
            &mut list,
            SUSPENDED,
            "True",
            "JobSuspended",
            "Job suspended",
            now
        ));
        assert!(!ensure_condition(
            &mut list,
            SUSPENDED,
            "True",
            "JobSuspended",
            "Job suspended",
            later
        ));
        assert_eq!(list[0].last_transition_time, Some(Time(now)));
        assert!(ensure_condition(
            &mut list,
            SUSPENDED,
            "False",
            "JobResumed",
            "Job resumed",
            later
        ));
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].status, "False");
        assert_eq!(list[0].last_transition_time, Some(Time(later)));
    }

    #[test]
    fn finished_means_a_true_terminal_condition() {
        let now = ts("2026-01-01T00:00:00Z");
        let mut j = job(JobSpec::default(), JobStatus::default());
        assert!(finished(&j).is_none());
        j.status.as_mut().unwrap().conditions = Some(vec![new_condition(
            FAILURE_TARGET,
            BACKOFF_LIMIT_EXCEEDED,
            "",
            now,
        )]);
        assert!(
            finished(&j).is_none(),
            "an interim condition is not finished"
        );
        j.status.as_mut().unwrap().conditions = Some(vec![new_condition(COMPLETE, "", "", now)]);
        assert_eq!(finished(&j).map(|c| c.type_.as_str()), Some(COMPLETE));
    }

    #[test]
    fn deleted_pods_count_as_failed_unless_only_failed_pods_are_replaced() {
        let mut pod = Pod {
            status: Some(PodStatus {
                phase: Some("Running".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut j = job(JobSpec::default(), JobStatus::default());
        assert!(!is_pod_failed(&pod, &j));
        pod.metadata.deletion_timestamp = Some(Time(ts("2026-01-01T00:00:00Z")));
        assert!(is_pod_failed(&pod, &j));
        j.spec.as_mut().unwrap().pod_replacement_policy = Some("Failed".into());
        assert!(!is_pod_failed(&pod, &j));
        pod.status.as_mut().unwrap().phase = Some("Failed".into());
        assert!(is_pod_failed(&pod, &j));
    }

    #[test]
    fn restarts_count_against_the_limit_with_on_failure() {
        let spec = |limit| JobSpec {
            backoff_limit: Some(limit),
            template: PodTemplateSpec {
                spec: Some(PodSpec {
                    restart_policy: Some("OnFailure".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let pod = |restarts| {
            Arc::new(Pod {
                status: Some(PodStatus {
                    phase: Some("Running".into()),
                    container_statuses: Some(vec![ContainerStatus {
                        restart_count: restarts,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let j = job(spec(2), JobStatus::default());
        assert!(!past_backoff_limit_on_failure(&j, &[pod(1)]));
        assert!(past_backoff_limit_on_failure(&j, &[pod(1), pod(1)]));
        let zero = job(spec(0), JobStatus::default());
        assert!(past_backoff_limit_on_failure(&zero, &[pod(1)]));
        assert!(!past_backoff_limit_on_failure(&zero, &[pod(0)]));
    }

    #[test]
    fn active_deadline_counts_from_the_start_time() {
        let start = ts("2026-01-01T00:00:00Z");
        let mut j = job(
            JobSpec {
                active_deadline_seconds: Some(30),
                ..Default::default()
            },
            JobStatus {
                start_time: Some(Time(start)),
                ..Default::default()
            },
        );
        assert_eq!(
            active_deadline_left(&j, ts("2026-01-01T00:00:10Z")),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            active_deadline_left(&j, ts("2026-01-01T00:01:00Z")),
            Some(Duration::ZERO)
        );
        j.spec.as_mut().unwrap().suspend = Some(true);
        assert_eq!(active_deadline_left(&j, ts("2026-01-01T00:01:00Z")), None);
    }

    #[test]
    fn ttl_counts_from_the_finish() {
        let done = ts("2026-01-01T00:00:00Z");
        let mut j = job(
            JobSpec {
                ttl_seconds_after_finished: Some(100),
                ..Default::default()
            },
            JobStatus::default(),
        );
        assert_eq!(expires_at(&j), None, "not finished");
        j.status.as_mut().unwrap().conditions = Some(vec![new_condition(FAILED, "x", "y", done)]);
        assert_eq!(expires_at(&j), Some(ts("2026-01-01T00:01:40Z")));
        j.metadata.deletion_timestamp = Some(Time(done));
        assert_eq!(expires_at(&j), None, "already being deleted");
    }
    #[test]
    fn a_running_job_heads_for_failure_past_its_limits() {
        let now = ts("2026-01-01T00:01:00Z");
        let mut j = job(
            JobSpec {
                backoff_limit: Some(1),
                active_deadline_seconds: Some(100),
                ..Default::default()
            },
            JobStatus {
                start_time: Some(Time(ts("2026-01-01T00:00:00Z"))),
                ..Default::default()
            },
        );
        let (cond, requeue) = finishing(&j, &[], 1, now);
        assert!(cond.is_none(), "one failure is within a backoff limit of 1");
        assert_eq!(
            requeue,
            Some(Duration::from_secs(40)),
            "the deadline is due in 40 s"
        );

        let (cond, _) = finishing(&j, &[], 2, now);
        let cond = cond.unwrap();
        assert_eq!(
            (cond.type_.as_str(), cond.reason.as_deref()),
            (FAILURE_TARGET, Some(BACKOFF_LIMIT_EXCEEDED))
        );

        let (cond, _) = finishing(&j, &[], 0, ts("2026-01-01T00:01:40Z"));
        let cond = cond.unwrap();
        assert_eq!(
            (cond.type_.as_str(), cond.reason.as_deref()),
            (FAILURE_TARGET, Some(DEADLINE_EXCEEDED))
        );

        // The interim condition written before turns into the terminal one.
        j.status.as_mut().unwrap().conditions = Some(vec![cond]);
        let (cond, _) = finishing(&j, &[], 0, now);
        let cond = cond.unwrap();
        assert_eq!(
            (cond.type_.as_str(), cond.reason.as_deref()),
            (FAILED, Some(DEADLINE_EXCEEDED))
        );

        j.status.as_mut().unwrap().conditions = Some(vec![new_condition(
            SUCCESS_CRITERIA_MET,
            "CompletionsReached",
            "",
            now,
        )]);
        let (cond, _) = finishing(&j, &[], 5, now);
        assert_eq!(
            cond.unwrap().type_,
            SUCCESS_CRITERIA_MET,
            "success is not undone"
        );
    }

    #[test]
    fn finishing_waits_for_uncounted_and_terminating_pods() {
        let now = ts("2026-01-01T00:00:00Z");
        let complete = new_condition(COMPLETE, "CompletionsReached", "", now);
        let mut s = JobStatus {
            uncounted_terminated_pods: Some(k8s_openapi::api::batch::v1::UncountedTerminatedPods {
                succeeded: Some(vec!["u".into()]),
                failed: None,
            }),
            ..Default::default()
        };
        assert!(!enact_finished(&mut s, Some(&complete), 0, now));
        s.uncounted_terminated_pods = None;
        assert!(
            !enact_finished(&mut s, Some(&complete), 1, now),
            "a pod is terminating"
        );
        assert!(!enact_finished(&mut s, None, 0, now));
        assert!(enact_finished(&mut s, Some(&complete), 0, now));
        assert_eq!(s.completion_time, Some(Time(now)));
        assert_eq!(s.conditions.as_ref().unwrap()[0].type_, COMPLETE);
    }
}
