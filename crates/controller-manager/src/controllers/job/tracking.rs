//! Counting finished pods exactly once, with the `batch.kubernetes.io/job-tracking` pod
//! finalizer (upstream's "job tracking with finalizers", the only mode since 1.26).
//!
//! Every pod the controller creates carries the finalizer, so a finished pod cannot vanish
//! before it is counted. Counting takes three steps, each durable before the next:
//! 1. the UIDs of newly finished pods go into `status.uncountedTerminatedPods`
//!    (written to the Job);
//! 2. their finalizers are removed;
//! 3. UIDs of pods that no longer carry the finalizer (or no longer exist) move from the
//!    uncounted lists to `status.succeeded`/`status.failed` (written again).
//!
//! A crash between any two steps repeats at most the next one. Between the removal of a
//! finalizer and seeing it gone in the cache, [`FinalizerExpectations`] keep a stale cache
//! from counting the pod again. Indexed Jobs count successes by index
//! (`completedIndexes`), which needs no UIDs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::batch::v1::{JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;

use super::indexed::{Intervals, completion_index};
use super::manage::{completions, has_tracking_finalizer, is_indexed};
use super::status::{SUCCESS_CRITERIA_MET, is_pod_failed};

/// At most this many UIDs are held in `uncountedTerminatedPods` at once, keeping the status
/// small and one big Job from starving others (upstream's `MaxUncountedPods`).
pub const MAX_UNCOUNTED_PODS: usize = 500;

/// Per Job, the pods whose finalizer removal was sent but not yet seen.
#[derive(Debug, Default)]
pub struct FinalizerExpectations {
    map: Mutex<HashMap<String, HashSet<String>>>,
}

impl FinalizerExpectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Expects the finalizers of `uids` to be removed for Job `key`.
    pub fn expect(&self, key: &str, uids: impl IntoIterator<Item = String>) {
        self.lock().entry(key.to_string()).or_default().extend(uids);
    }

    /// The removal for pod `uid` was seen (or will not come).
    pub fn observed(&self, key: &str, uid: &str) {
        let mut map = self.lock();
        if let Some(set) = map.get_mut(key) {
            set.remove(uid);
            if set.is_empty() {
                map.remove(key);
            }
        }
    }

    /// The UIDs still expected for `key`.
    pub fn expected(&self, key: &str) -> HashSet<String> {
        self.lock().get(key).cloned().unwrap_or_default()
    }

    /// Forgets `key`.
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

/// The UIDs in a status's `uncountedTerminatedPods`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uncounted {
    /// Succeeded, not yet in `status.succeeded`.
    pub succeeded: HashSet<String>,
    /// Failed, not yet in `status.failed`.
    pub failed: HashSet<String>,
}

impl Uncounted {
    /// The sets of `status`.
    pub fn of(status: Option<&JobStatus>) -> Self {
        let u = status.and_then(|s| s.uncounted_terminated_pods.as_ref());
        let set = |l: Option<&Vec<String>>| l.into_iter().flatten().cloned().collect();
        Uncounted {
            succeeded: set(u.and_then(|u| u.succeeded.as_ref())),
            failed: set(u.and_then(|u| u.failed.as_ref())),
        }
    }
}

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

/// Whether the pod's index is valid for an Indexed Job (always true otherwise).
fn valid_index(job: &Job, pod: &Pod) -> bool {
    !is_indexed(job) || completion_index(pod).is_some_and(|i| i < completions(job).unwrap_or(0))
}

/// Pods that finished and are not counted in any way yet: they still carry the finalizer,
/// are in no uncounted list and no finalizer removal is pending (upstream's
/// `getNewFinishedPods`). Returns (succeeded, failed).
pub fn new_finished_pods<'a>(
    job: &Job,
    pods: &'a [Arc<Pod>],
    uncounted: &Uncounted,
    expected_removals: &HashSet<String>,
) -> (Vec<&'a Pod>, Vec<&'a Pod>) {
    let fresh = |p: &&Arc<Pod>| {
        has_tracking_finalizer(p) && !expected_removals.contains(uid(p)) && valid_index(job, p)
    };
    let succeeded = pods
        .iter()
        .filter(fresh)
        .filter(|p| !uncounted.succeeded.contains(uid(p)))
        .filter(|p| crate::pods::phase(p) == "Succeeded")
        .map(|p| &**p)
        .collect();
    let failed = pods
        .iter()
        .filter(fresh)
        .filter(|p| !uncounted.failed.contains(uid(p)))
        .filter(|p| is_pod_failed(p, job))
        .map(|p| &**p)
        .collect();
    (succeeded, failed)
}

/// Moves the UIDs of pods that no longer hold a finalizer (in `with_finalizer`) from the
/// uncounted lists to the counters; whether anything moved.
pub fn count_released(status: &mut JobStatus, with_finalizer: &HashSet<String>) -> bool {
    let uncounted = status
        .uncounted_terminated_pods
        .get_or_insert_with(UncountedTerminatedPods::default);
    let mut moved = false;
    for (list, counter) in [
        (&mut uncounted.succeeded, &mut status.succeeded),
        (&mut uncounted.failed, &mut status.failed),
    ] {
        let Some(uids) = list.as_mut() else { continue };
        let before = uids.len();
        uids.retain(|u| with_finalizer.contains(u));
        let released = before - uids.len();
        if released > 0 {
            moved = true;
            let n = i32::try_from(released).unwrap_or(i32::MAX);
            *counter = Some(counter.unwrap_or(0).saturating_add(n)).filter(|c| *c != 0);
        }
        if uids.is_empty() {
            *list = None;
        }
    }
    moved
}

/// What a sync does about the finished pods.
#[derive(Debug, Default)]
pub struct Plan {
    /// Pods whose finalizer is removed now.
    pub release: Vec<Arc<Pod>>,
    /// Indexes of Indexed Jobs that succeeded since the status was written.
    pub new_succeeded_indexes: Vec<i32>,
    /// Whether the status changed (new uncounted UIDs or indexes).
    pub changed: bool,
    /// Whether [`MAX_UNCOUNTED_PODS`] stopped the scan (more next time).
    pub reached_max: bool,
}

/// Decides which pods to count and release (upstream's `trackJobStatusAndRemoveFinalizers`
/// before its writes), adding new uncounted UIDs to `status`. A pod is released when it
/// succeeded, failed, or everything is ending (the Job is being deleted or has its finish
/// condition); when the Job fails, every pod that has not succeeded counts as failed.
pub fn plan(
    job: &Job,
    status: &mut JobStatus,
    pods: &[Arc<Pod>],
    expected_removals: &HashSet<String>,
    finishing: Option<&JobCondition>,
    prev_succeeded_indexes: &Intervals,
) -> Plan {
    let indexed = is_indexed(job);
    let completions = completions(job).unwrap_or(0);
    let before = Uncounted::of(Some(status));
    let uncounted = status
        .uncounted_terminated_pods
        .get_or_insert_with(UncountedTerminatedPods::default);
    let job_deleting = job.metadata.deletion_timestamp.is_some();
    let failing = finishing.is_some_and(|c| c.type_ != SUCCESS_CRITERIA_MET);
    let mut out = Plan::default();
    let mut sorted: Vec<&Arc<Pod>> = pods.iter().collect();
    if indexed {
        sorted.sort_by_key(|p| completion_index(p).unwrap_or(-1));
    }
    let mut new_uncounted = 0;
    for pod in sorted {
        let pod_uid = uid(pod);
        if !has_tracking_finalizer(pod) || expected_removals.contains(pod_uid) {
            continue;
        }
        let failed = is_pod_failed(pod, job);
        let succeeded = crate::pods::phase(pod) == "Succeeded";
        if !(job_deleting || finishing.is_some() || succeeded || failed) {
            continue;
        }
        out.release.push(pod.clone());
        if succeeded && !before.failed.contains(pod_uid) {
            if indexed {
                if let Some(i) = completion_index(pod).filter(|i| *i < completions)
                    && !prev_succeeded_indexes.has(i)
                {
                    out.new_succeeded_indexes.push(i);
                    out.changed = true;
                }
            } else if !before.succeeded.contains(pod_uid) {
                uncounted
                    .succeeded
                    .get_or_insert_with(Vec::new)
                    .push(pod_uid.to_string());
                new_uncounted += 1;
                out.changed = true;
            }
        } else if (failed || failing) && !before.failed.contains(pod_uid) && valid_index(job, pod) {
            uncounted
                .failed
                .get_or_insert_with(Vec::new)
                .push(pod_uid.to_string());
            new_uncounted += 1;
            out.changed = true;
        }
        let held = before.succeeded.len() + before.failed.len() + new_uncounted;
        if out.new_succeeded_indexes.len() + held >= MAX_UNCOUNTED_PODS {
            out.reached_max = true;
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::manage::TRACKING_FINALIZER;
    use super::super::status::{FAILURE_TARGET, new_condition};
    use super::*;
    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::api::core::v1::PodStatus;

    fn pod(uid: &str, phase: &str, finalizer: bool) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.uid = Some(uid.into());
        if finalizer {
            p.metadata.finalizers = Some(vec![TRACKING_FINALIZER.into()]);
        }
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        Arc::new(p)
    }

    fn job() -> Job {
        Job {
            spec: Some(JobSpec {
                completions: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn finished_pods_are_counted_once_through_the_uncounted_lists() {
        let job = job();
        let pods = vec![
            pod("s1", "Succeeded", true),
            pod("f1", "Failed", true),
            pod("r1", "Running", true),
            pod("old", "Succeeded", false),
        ];
        let mut status = JobStatus::default();
        let none = HashSet::new();
        let (s, f) = new_finished_pods(&job, &pods, &Uncounted::of(Some(&status)), &none);
        assert_eq!((s.len(), f.len()), (1, 1));

        // Step 1: the finished pods become uncounted and are released; the running one not.
        let p = plan(&job, &mut status, &pods, &none, None, &Intervals::default());
        assert!(p.changed);
        let released: Vec<&str> = p.release.iter().map(|p| uid(p)).collect();
        assert_eq!(released, ["s1", "f1"]);
        let u = Uncounted::of(Some(&status));
        assert!(u.succeeded.contains("s1") && u.failed.contains("f1"));
        // Not new any more.
        let (s, f) = new_finished_pods(&job, &pods, &u, &none);
        assert!(s.is_empty() && f.is_empty());

        // Step 3: with the finalizers gone (only r1 holds one), they are counted.
        let with_finalizer = HashSet::from(["r1".to_string()]);
        assert!(count_released(&mut status, &with_finalizer));
        assert_eq!((status.succeeded, status.failed), (Some(1), Some(1)));
        assert_eq!(Uncounted::of(Some(&status)), Uncounted::default());
        assert!(
            !count_released(&mut status, &with_finalizer),
            "nothing twice"
        );

        // A pending removal hides a pod whose cached copy still has the finalizer.
        let pending = HashSet::from(["s1".to_string(), "f1".to_string()]);
        let p = plan(
            &job,
            &mut status,
            &pods,
            &pending,
            None,
            &Intervals::default(),
        );
        assert!(!p.changed && p.release.is_empty());
    }

    #[test]
    fn a_failing_job_counts_unfinished_pods_as_failed() {
        let job = job();
        let pods = vec![pod("r1", "Running", true), pod("s1", "Succeeded", true)];
        let mut status = JobStatus::default();
        let target = new_condition(
            FAILURE_TARGET,
            "BackoffLimitExceeded",
            "",
            jiff::Timestamp::UNIX_EPOCH,
        );
        let p = plan(
            &job,
            &mut status,
            &pods,
            &HashSet::new(),
            Some(&target),
            &Intervals::default(),
        );
        assert_eq!(p.release.len(), 2);
        let u = Uncounted::of(Some(&status));
        assert!(u.failed.contains("r1"));
        assert!(u.succeeded.contains("s1"));
    }

    #[test]
    fn indexed_successes_are_counted_by_index() {
        let mut job = job();
        job.spec.as_mut().unwrap().completion_mode = Some("Indexed".into());
        let with_index = |uid: &str, i: &str, phase: &str| {
            let mut p = (*pod(uid, phase, true)).clone();
            p.metadata.annotations = Some(
                [(
                    super::super::indexed::COMPLETION_INDEX_ANNOTATION.to_string(),
                    i.to_string(),
                )]
                .into(),
            );
            Arc::new(p)
        };
        let pods = vec![
            with_index("a", "2", "Succeeded"),
            with_index("b", "0", "Succeeded"),
            with_index("c", "1", "Succeeded"),
        ];
        let mut status = JobStatus::default();
        let prev = Intervals::parse("1", 3);
        let p = plan(&job, &mut status, &pods, &HashSet::new(), None, &prev);
        assert_eq!(p.new_succeeded_indexes, [0, 2]);
        assert_eq!(p.release.len(), 3);
        assert_eq!(
            Uncounted::of(Some(&status)),
            Uncounted::default(),
            "no UIDs for indexes"
        );
    }
}
