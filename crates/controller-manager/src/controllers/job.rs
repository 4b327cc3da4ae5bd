//! The Job controller (upstream's `job-controller`, `pkg/controller/job/job_controller.go`),
//! with upstream's TTL-after-finished controller folded in.
//!
//! A reconcile of a Job:
//! - claims its pods (adopting orphans that match its selector, releasing those that no
//!   longer do) with [`Claimant`]. The selector is `spec.selector`, or — when the apiserver
//!   did not generate one — `batch.kubernetes.io/controller-uid=<uid>`, and pods get the
//!   `controller-uid`/`job-name` labels (both forms) as upstream's apiserver would add them
//!   to the template;
//! - counts finished pods exactly once through the `batch.kubernetes.io/job-tracking` pod
//!   finalizer and `status.uncountedTerminatedPods` ([`tracking`]);
//! - decides whether the Job failed (more failed pods than `backoffLimit`, container restarts
//!   past it with `restartPolicy: OnFailure`, or `activeDeadlineSeconds` passed): it then
//!   gets `FailureTarget`, its active pods are deleted, and `Failed` follows once none is
//!   terminating; events `BackoffLimitExceeded`/`DeadlineExceeded`;
//! - otherwise keeps `min(parallelism, completions left)` pods active: creates the missing
//!   ones (in slow-start batches; after failures only once the [`backoff`] delay passed —
//!   10 s doubling to 6 min), or deletes the surplus; for `Indexed` Jobs one pod per pending
//!   completion index ([`indexed`]); a suspended Job has none (condition `Suspended`);
//! - marks it `SuccessCriteriaMet` and then `Complete` once `completions` pods succeeded;
//! - writes `status` (`active`, `ready`, `terminating`, `succeeded`, `failed`, `startTime`,
//!   `completionTime`, `completedIndexes`, conditions) only when it changed.
//!
//! A finished Job with `ttlSecondsAfterFinished` is deleted (propagation Background) that
//! long after it finished. Pods whose Job is gone or finished lose their tracking finalizer
//! through a second queue (upstream's orphan-pod queue). Pod failure policies, success
//! policies and per-index backoff limits are not implemented.
//!
//! The pod failure backoff base comes from `--job-pod-failure-backoff` (10 s by default, as
//! upstream), so tests can lower it; in-process tests use [`start_with`].

pub mod backoff;
mod hooks;
pub mod indexed;
pub mod manage;
pub mod own_writes;
mod pod_control;
pub mod status;
pub mod tracking;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use rkube_client::{
    Action, Api, DeleteParams, EventType, ObjectRef, PropagationPolicy, Recorder, WorkQueue,
    object_reference,
};
use tracing::{debug, info};

use crate::context::Context;
use crate::controllers::{self, Running};
use crate::error::{Error, Result};
use crate::expectations::{Expectations, earliest};
use crate::informer::{Informer, Object};
use crate::ownership::{Claimant, controller_ref, is_controlled_by};
use backoff::{BackoffRecord, BackoffStore};
use hooks::Hooks;
use indexed::Intervals;
use manage::has_tracking_finalizer;
use own_writes::OwnWrites;
use status::{COMPLETE, FAILED, FAILURE_TARGET, SUCCESS_CRITERIA_MET, SUSPENDED};
use tracking::{FinalizerExpectations, Uncounted};

/// Upstream's name, used for the work queue and as the source of Events.
pub const NAME: &str = "job-controller";

/// The queue of pods whose tracking finalizer may have to go although no Job syncs them.
const ORPHAN_QUEUE: &str = "job-orphan-pod";

/// Upstream's first delay before replacing failed pods.
pub const DEFAULT_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(10);

/// The longest delay before replacing failed pods (the documented six minutes).
pub const MAX_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(6 * 60);

/// Tunables of the Job controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobConfig {
    /// The delay after the first pod failure; it doubles with each further one.
    pub pod_failure_backoff: Duration,
    /// The cap of that delay.
    pub max_pod_failure_backoff: Duration,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            pod_failure_backoff: DEFAULT_POD_FAILURE_BACKOFF,
            max_pod_failure_backoff: MAX_POD_FAILURE_BACKOFF,
        }
    }
}

/// Subscribes the controller to the informers and returns its workers.
pub fn start(ctx: &Context) -> Running {
    let config = JobConfig {
        pod_failure_backoff: ctx.settings.job_pod_failure_backoff,
        ..JobConfig::default()
    };
    start_with(ctx, config)
}

/// [`start`] with explicit tunables.
pub fn start_with(ctx: &Context, config: JobConfig) -> Running {
    let jobs = ctx.informer::<Job>();
    let pods = ctx.informer::<Pod>();
    let queue = WorkQueue::new();
    let orphans = WorkQueue::new();
    let expectations = Arc::new(Expectations::new());
    let finalizers = Arc::new(FinalizerExpectations::default());
    let hooks = Hooks {
        jobs: jobs.clone(),
        pods: pods.clone(),
        queue: queue.clone(),
        orphans: orphans.clone(),
        expectations: expectations.clone(),
        finalizers: finalizers.clone(),
    };
    {
        let hooks = hooks.clone();
        pods.subscribe(move |change| hooks.on_pod(change));
    }
    jobs.subscribe(move |change| hooks.on_job(change));

    let controller = Arc::new(JobController {
        ctx: ctx.clone(),
        config,
        recorder: ctx.recorder(NAME),
        jobs: jobs.clone(),
        pods,
        expectations,
        finalizers,
        backoff: BackoffStore::default(),
        writes: OwnWrites::default(),
    });
    // Deadlines and TTLs are measured on the context's clock: re-check when it jumps.
    let wake = requeue_on_clock_change(ctx, jobs, queue.clone(), |job: &Job| {
        status::finished(job).is_none() || status::expires_at(job).is_some()
    });
    let sync = controller.clone();
    let workers = controllers::run_queue(ctx, NAME, queue, move |key| {
        let controller = sync.clone();
        async move { controller.reconcile(key).await }
    });
    let orphan_workers = controllers::run_queue(ctx, ORPHAN_QUEUE, orphans, move |key| {
        let controller = controller.clone();
        async move { controller.release_orphan(key).await }
    });
    Box::pin(async move {
        futures::join!(workers, orphan_workers, wake);
    })
}

/// Re-adds the objects of `informer` that `wanted` accepts whenever a manual clock is
/// moved, so time-based decisions are re-made at once; runs until the context stops.
pub(crate) fn requeue_on_clock_change<K: Object>(
    ctx: &Context,
    informer: Informer<K>,
    queue: WorkQueue<ObjectRef>,
    wanted: impl Fn(&K) -> bool + Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let mut moves = ctx.clock.subscribe();
    let mut stop = ctx.stop.clone();
    async move {
        loop {
            tokio::select! {
                () = moves.next() => {
                    for obj in informer.list() {
                        if wanted(&obj) {
                            queue.add(ObjectRef::from_obj(&*obj));
                        }
                    }
                }
                () = crate::stopped(&mut stop) => return,
            }
        }
    }
}

fn uid_of(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

fn name_of(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or_default()
}

/// Whether `reference` names a batch/v1 Job.
fn is_job_ref(reference: &OwnerReference) -> bool {
    reference.kind == "Job" && reference.api_version == "batch/v1"
}

/// `spec.managedBy` when it names another controller.
fn managed_by_other(job: &Job) -> Option<&str> {
    job.spec
        .as_ref()?
        .managed_by
        .as_deref()
        .filter(|m| *m != status::MANAGED_BY_JOB_CONTROLLER)
}

/// Whether a patch failed because the object changed since it was read: a conflict, or
/// a JSON patch `test` that no longer holds.
fn changed_since(e: &rkube_client::Error) -> bool {
    e.is_conflict() || e.reason() == Some(rkube_types::Reason::Invalid)
}

fn nonzero(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

struct JobController {
    ctx: Context,
    config: JobConfig,
    recorder: Recorder,
    jobs: Informer<Job>,
    pods: Informer<Pod>,
    expectations: Arc<Expectations>,
    finalizers: Arc<FinalizerExpectations>,
    backoff: BackoffStore,
    writes: OwnWrites,
}

/// What `manage` did.
#[derive(Debug, Default)]
struct Managed {
    /// Active pods now.
    active: i32,
    /// Pods deleted.
    deleted: i32,
    /// Of them, ready ones.
    deleted_ready: i32,
    /// When to look again (pod failure backoff).
    requeue: Option<Duration>,
    /// The first error.
    error: Option<Error>,
}

/// What one sync works from.
struct Observed<'a> {
    key: &'a str,
    pods: &'a [Arc<Pod>],
    expected_removals: &'a HashSet<String>,
    prev_succeeded_indexes: Intervals,
    succeeded_indexes: Intervals,
    record: BackoffRecord,
    terminating: i32,
}

impl JobController {
    fn job_api(&self, job: &Job) -> Api<Job> {
        Api::namespaced(
            self.ctx.client.clone(),
            job.metadata.namespace.as_deref().unwrap_or_default(),
        )
    }

    fn pod_api(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.ctx.client.clone(), namespace)
    }

    async fn event(&self, job: &Job, type_: EventType, reason: &str, message: &str) {
        self.recorder
            .publish(&object_reference(job), type_, reason, message)
            .await;
    }

    async fn reconcile(&self, key: ObjectRef) -> Result<Action> {
        let namespace = key.namespace.clone().unwrap_or_default();
        let key_s = key.to_string();
        let Some(shared) = self.jobs.get(&namespace, &key.name) else {
            self.expectations.forget(&key_s);
            self.finalizers.forget(&key_s);
            self.backoff.remove(&key_s);
            self.writes.forget(&key_s);
            return Ok(Action::Done);
        };
        if self
            .writes
            .is_stale(&key_s, shared.metadata.resource_version.as_deref())
        {
            // Our last status write is on its way to the cache and will bring the key back.
            debug!(job = %key, "cached job older than its last status write, waiting");
            return Ok(Action::Done);
        }
        if let Some(manager) = managed_by_other(&shared) {
            debug!(job = %key, manager, "skipping a job managed by another controller");
            return Ok(Action::Done);
        }
        if status::finished(&shared).is_some() {
            self.backoff.remove(&key_s);
            return self.expire(&shared).await;
        }
        let mode = shared
            .spec
            .as_ref()
            .and_then(|s| s.completion_mode.as_deref());
        if !matches!(mode, None | Some("NonIndexed" | "Indexed")) {
            self.event(
                &shared,
                EventType::Warning,
                "UnknownCompletionMode",
                "Skipped Job sync because completion mode is unknown",
            )
            .await;
            return Ok(Action::Done);
        }
        if !manage::selector_matches_template(&shared)? {
            // Upstream's apiserver refuses such a Job; pods it made would be released at
            // once and replaced forever.
            self.event(
                &shared,
                EventType::Warning,
                "SelectorMismatch",
                "`selector` does not match template `labels`: no pods are created",
            )
            .await;
            return Ok(Action::Done);
        }
        self.sync(&key_s, &shared).await
    }

    /// Deletes a finished Job once its `ttlSecondsAfterFinished` passed (upstream's
    /// ttl-after-finished controller), or asks to come back then.
    async fn expire(&self, job: &Job) -> Result<Action> {
        let Some(at) = status::expires_at(job) else {
            return Ok(Action::Done);
        };
        let left = self.ctx.clock.until(at);
        if !left.is_zero() {
            return Ok(Action::RequeueAfter(left));
        }
        let meta = &job.metadata;
        let mut params = DeleteParams::default().propagation(PropagationPolicy::Background);
        if let Some(uid) = &meta.uid {
            params = params.uid(uid);
        }
        if let Some(rv) = &meta.resource_version {
            params = params.resource_version(rv);
        }
        let name = meta.name.as_deref().unwrap_or_default();
        match self.job_api(job).delete(name, &params).await {
            Ok(_) => info!(job = %ObjectRef::from_obj(job), "deleted finished job after its ttl"),
            // Gone, or changed since: the change brings it back here.
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Action::Done)
    }

    /// Removes the tracking finalizer of a pod no Job will count any more.
    async fn release_orphan(&self, key: ObjectRef) -> Result<Action> {
        let namespace = key.namespace.clone().unwrap_or_default();
        let Some(pod) = self.pods.get(&namespace, &key.name) else {
            return Ok(Action::Done);
        };
        let Some(patch) = manage::remove_finalizer_patch(&pod) else {
            return Ok(Action::Done);
        };
        if let Some(reference) = controller_ref(&pod.metadata) {
            if !is_job_ref(reference) {
                return Ok(Action::Done);
            }
            let job = self
                .jobs
                .get(&namespace, &reference.name)
                .filter(|j| j.metadata.uid.as_deref() == Some(reference.uid.as_str()));
            if let Some(job) = job
                && (managed_by_other(&job).is_some() || status::finished(&job).is_none())
            {
                // Its Job syncs it (or another controller does).
                return Ok(Action::Done);
            }
        }
        match self.pod_api(&namespace).patch(&key.name, &patch).await {
            Ok(_) => Ok(Action::Done),
            // Gone, or its finalizers changed since the cached copy (the patch's test
            // failed): the pod's next event brings it back if it still holds ours.
            Err(e) if e.is_not_found() || changed_since(&e) => Ok(Action::Done),
            Err(e) => Err(e.into()),
        }
    }

    /// The pods the Job controls after claiming; adopted pods get the tracking finalizer.
    async fn pods_for_job(&self, job: &Job) -> Result<Vec<Arc<Pod>>> {
        let namespace = job.metadata.namespace.as_deref().unwrap_or_default();
        let uid = job.metadata.uid.as_deref().unwrap_or_default();
        let selector = manage::selector(job)?;
        let candidates = self.pods.list_namespace(namespace);
        let owned: HashSet<String> = candidates
            .iter()
            .filter(|p| is_controlled_by(&p.metadata, uid))
            .map(|p| uid_of(p).to_string())
            .collect();
        let claimed = Claimant::new(job, selector)
            .claim(&self.ctx.client, candidates)
            .await?;
        let mut pods = Vec::with_capacity(claimed.len());
        for pod in claimed {
            if owned.contains(uid_of(&pod)) || has_tracking_finalizer(&pod) {
                pods.push(pod);
                continue;
            }
            // Adopted just now: track it like the pods the Job made.
            let patch = manage::add_finalizer_patch(&pod);
            match self.pod_api(namespace).patch(name_of(&pod), &patch).await {
                Ok(tracked) => pods.push(Arc::new(tracked)),
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(pods)
    }

    /// Upstream's `syncJob` for a Job that is not finished.
    async fn sync(&self, key: &str, shared: &Job) -> Result<Action> {
        let now = self.ctx.clock.now();
        let mut job = shared.clone();
        job.status
            .get_or_insert_with(Default::default)
            .uncounted_terminated_pods
            .get_or_insert_with(Default::default);
        // Read before the pods, so a pod that arrives in between is seen next time.
        let satisfied = self.expectations.satisfied(key);
        let pods = self.pods_for_job(&job).await?;
        let active: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| crate::pods::is_active(p))
            .cloned()
            .collect();
        let expected_removals = self.finalizers.expected(key);
        let uncounted = Uncounted::of(job.status.as_ref());
        let mut terminating = count(
            pods.iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_some() && !crate::pods::is_terminated(p)
                })
                .count(),
        );
        let mut ready = count(active.iter().filter(|p| crate::pods::is_ready(p)).count());
        let (new_succeeded, new_failed) =
            tracking::new_finished_pods(&job, &pods, &uncounted, &expected_removals);
        let current = job.status.clone().unwrap_or_default();
        let mut succeeded = current.succeeded.unwrap_or(0)
            + count(new_succeeded.len())
            + count(uncounted.succeeded.len());
        let failed =
            current.failed.unwrap_or(0) + count(new_failed.len()) + count(uncounted.failed.len());
        let suspended = status::suspended(&job);
        let mut start_changed = false;
        if current.start_time.is_none() && !suspended {
            job.status.get_or_insert_with(Default::default).start_time = Some(Time(now));
            start_changed = true;
        }
        let record = self.backoff.get(key).after(&new_succeeded, &new_failed);

        let (mut finishing, mut requeue) = status::finishing(&job, &pods, failed, now);

        let completions = manage::completions(&job);
        let (prev_succeeded_indexes, succeeded_indexes) = if manage::is_indexed(&job) {
            let (prev, now_succeeded) = indexed::succeeded_indexes(
                current.completed_indexes.as_deref().unwrap_or_default(),
                completions.unwrap_or(0),
                &pods,
                has_tracking_finalizer,
            );
            succeeded = now_succeeded.total();
            (prev, now_succeeded)
        } else {
            (Intervals::default(), Intervals::default())
        };

        let mut observed = Observed {
            key,
            pods: &pods,
            expected_removals: &expected_removals,
            prev_succeeded_indexes,
            succeeded_indexes,
            record,
            terminating,
        };
        let mut suspend_changed = false;
        let mut active_count = count(active.len());
        let mut manage_error = None;
        if finishing.is_some() {
            let (deleted_ready, deleted, error) = self.delete_pods(&job, None, &active).await;
            if deleted != active_count || !satisfied {
                // Pods may still be on their way; finish once they are all seen.
                finishing = None;
            }
            active_count -= deleted;
            terminating += deleted;
            ready -= deleted_ready;
            manage_error = error;
        } else {
            let mut managed = false;
            if satisfied && job.metadata.deletion_timestamp.is_none() {
                let m = self.manage(&job, &active, succeeded, &observed, now).await;
                active_count = m.active;
                terminating += m.deleted;
                ready -= m.deleted_ready;
                requeue = earliest(requeue, m.requeue);
                manage_error = m.error;
                managed = true;
            }
            let complete = match completions {
                None => succeeded > 0 && active_count == 0,
                Some(c) => succeeded >= c && active_count == 0,
            };
            if complete {
                finishing = Some(status::new_condition(
                    SUCCESS_CRITERIA_MET,
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now,
                ));
            } else if managed {
                let conditions = job
                    .status
                    .get_or_insert_with(Default::default)
                    .conditions
                    .get_or_insert_with(Vec::new);
                if suspended {
                    if status::ensure_condition(
                        conditions,
                        SUSPENDED,
                        "True",
                        "JobSuspended",
                        "Job suspended",
                        now,
                    ) {
                        suspend_changed = true;
                        self.event(shared, EventType::Normal, "Suspended", "Job suspended")
                            .await;
                    }
                } else if status::ensure_condition(
                    conditions,
                    SUSPENDED,
                    "False",
                    "JobResumed",
                    "Job resumed",
                    now,
                ) {
                    suspend_changed = true;
                    self.event(shared, EventType::Normal, "Resumed", "Job resumed")
                        .await;
                    // activeDeadlineSeconds counts the time the Job is continuously active.
                    job.status.get_or_insert_with(Default::default).start_time = Some(Time(now));
                }
            }
            if let Some(conditions) = job.status.as_mut().and_then(|s| s.conditions.as_mut())
                && conditions.is_empty()
            {
                job.status.get_or_insert_with(Default::default).conditions = None;
            }
        }

        let status = job.status.get_or_insert_with(Default::default);
        let needs_flush = suspend_changed
            || start_changed
            || status.active.unwrap_or(0) != active_count
            || status.ready != Some(ready)
            || status.terminating != Some(terminating);
        status.active = nonzero(active_count);
        status.ready = Some(ready);
        status.terminating = Some(terminating);
        observed.terminating = terminating;
        self.track(job, &observed, finishing, needs_flush, now)
            .await?;
        if let Some(error) = manage_error {
            return Err(error);
        }
        // After `manage`, so expectations it just set are covered too.
        let requeue = earliest(requeue, self.expectations.expires_in(key));
        Ok(requeue.map_or(Action::Done, Action::RequeueAfter))
    }

    /// Upstream's `manageJob`: deletes surplus pods or creates missing ones.
    async fn manage(
        &self,
        job: &Job,
        active: &[Arc<Pod>],
        succeeded: i32,
        observed: &Observed<'_>,
        now: jiff::Timestamp,
    ) -> Managed {
        let key = observed.key;
        let active_count = count(active.len());
        if status::suspended(job) {
            let doomed = manage::pods_for_removal(job, active, active.len());
            return self.delete_surplus(job, key, &doomed, active_count).await;
        }
        let want = manage::want_active(job, active_count, succeeded);
        let surplus = usize::try_from(active_count - want).unwrap_or(0);
        let mut doomed = manage::pods_for_removal(job, active, surplus);
        doomed.truncate(manage::MAX_POD_CHANGES_PER_SYNC);
        if !doomed.is_empty() {
            // Deleting takes precedence over creating in one sync, as upstream.
            return self.delete_surplus(job, key, &doomed, active_count).await;
        }
        let terminating = if status::only_replace_failed_pods(job) {
            observed.terminating
        } else {
            0
        };
        let missing = want - terminating - active_count;
        let idle = Managed {
            active: active_count,
            ..Default::default()
        };
        let Ok(missing) = usize::try_from(missing) else {
            return idle;
        };
        if missing == 0 {
            return idle;
        }
        let wait = observed.record.remaining(
            now,
            self.config.pod_failure_backoff,
            self.config.max_pod_failure_backoff,
        );
        if !wait.is_zero() {
            debug!(job = key, ?wait, "waiting for the pod failure backoff");
            return Managed {
                requeue: Some(wait),
                ..idle
            };
        }
        let missing = missing.min(manage::MAX_POD_CHANGES_PER_SYNC);
        let indexes: Vec<Option<i32>> = if manage::is_indexed(job) {
            indexed::first_pending(
                active,
                &observed.succeeded_indexes,
                missing,
                manage::completions(job).unwrap_or(0),
            )
            .into_iter()
            .map(Some)
            .collect()
        } else {
            vec![None; missing]
        };
        if indexes.is_empty() {
            return idle;
        }
        self.expectations
            .expect(key, i64::try_from(indexes.len()).unwrap_or(i64::MAX), 0);
        let template = manage::pod_template(job);
        let (created, error) = self.create_pods(job, key, &template, &indexes).await;
        Managed {
            active: active_count + created,
            error,
            ..Default::default()
        }
    }

    async fn delete_surplus(
        &self,
        job: &Job,
        key: &str,
        doomed: &[Arc<Pod>],
        active: i32,
    ) -> Managed {
        self.expectations
            .expect(key, 0, i64::try_from(doomed.len()).unwrap_or(i64::MAX));
        let (deleted_ready, deleted, error) = self.delete_pods(job, Some(key), doomed).await;
        Managed {
            active: active - deleted,
            deleted,
            deleted_ready,
            requeue: None,
            error,
        }
    }

    /// Upstream's `trackJobStatusAndRemoveFinalizers`: records newly finished pods as
    /// uncounted, removes their finalizers, counts them, and finishes the Job when due.
    async fn track(
        &self,
        mut job: Job,
        observed: &Observed<'_>,
        finishing: Option<JobCondition>,
        mut needs_flush: bool,
        now: jiff::Timestamp,
    ) -> Result<()> {
        let key = observed.key;
        let mut with_finalizer: HashSet<String> = observed
            .pods
            .iter()
            .filter(|p| {
                has_tracking_finalizer(p) && !observed.expected_removals.contains(uid_of(p))
            })
            .map(|p| uid_of(p).to_string())
            .collect();
        let mut status = job.status.take().unwrap_or_default();
        if tracking::count_released(&mut status, &with_finalizer) {
            needs_flush = true;
        }
        let plan = tracking::plan(
            &job,
            &mut status,
            observed.pods,
            observed.expected_removals,
            finishing.as_ref(),
            &observed.prev_succeeded_indexes,
        );
        needs_flush |= plan.changed;
        if manage::is_indexed(&job) {
            let indexes = observed
                .succeeded_indexes
                .with_indexes(plan.new_succeeded_indexes.iter().copied());
            let text = indexes.to_string();
            if status.completed_indexes.as_deref().unwrap_or_default() != text {
                needs_flush = true;
            }
            status.succeeded = nonzero(indexes.total());
            status.completed_indexes = Some(text).filter(|t| !t.is_empty());
        }
        let mut finishing = finishing;
        if let Some(interim) = finishing.clone() {
            let conditions = status.conditions.get_or_insert_with(Vec::new);
            let reason = interim.reason.as_deref().unwrap_or_default();
            let message = interim.message.as_deref().unwrap_or_default();
            if interim.type_ == FAILURE_TARGET {
                conditions.push(interim.clone());
                needs_flush = true;
                finishing = Some(status::new_condition(FAILED, reason, message, now));
            } else if interim.type_ == SUCCESS_CRITERIA_MET {
                if !conditions.iter().any(|c| c.type_ == SUCCESS_CRITERIA_MET) {
                    conditions.push(interim.clone());
                    needs_flush = true;
                }
                finishing = Some(status::new_condition(COMPLETE, reason, message, now));
            }
        }
        job.status = Some(status);

        if needs_flush {
            job = self.write_status(&job).await?;
            self.backoff.set(key, observed.record);
            needs_flush = false;
        }
        let mut release_error = None;
        if !plan.release.is_empty() {
            let (released, error) = self.release_pods(key, &plan.release).await;
            for uid in released {
                with_finalizer.remove(&uid);
            }
            release_error = error;
        }
        if tracking::count_released(
            job.status.get_or_insert_with(Default::default),
            &with_finalizer,
        ) {
            needs_flush = true;
        }
        if let Some(error) = release_error {
            if needs_flush {
                self.write_status(&job).await?;
            }
            return Err(error);
        }
        let finished = !plan.reached_max
            && status::enact_finished(
                job.status.get_or_insert_with(Default::default),
                finishing.as_ref(),
                observed.terminating,
                now,
            );
        if finished || needs_flush {
            job = self.write_status(&job).await?;
        }
        if finished && let Some(condition) = &finishing {
            self.record_finished(&job, condition).await;
        }
        Ok(())
    }

    async fn write_status(&self, job: &Job) -> Result<Job> {
        let name = job.metadata.name.as_deref().unwrap_or_default();
        let written = self.job_api(job).replace_status(name, job).await?;
        self.writes.wrote(
            &ObjectRef::from_obj(job).to_string(),
            written.metadata.resource_version.as_deref(),
        );
        Ok(written)
    }

    async fn record_finished(&self, job: &Job, condition: &JobCondition) {
        if condition.type_ == COMPLETE {
            let succeeded = job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0);
            if manage::completions(job).is_some_and(|c| succeeded > c) {
                self.event(
                    job,
                    EventType::Warning,
                    "TooManySucceededPods",
                    "Too many succeeded pods running after completion count reached",
                )
                .await;
            }
            self.event(job, EventType::Normal, "Completed", "Job completed")
                .await;
        } else {
            self.event(
                job,
                EventType::Warning,
                condition.reason.as_deref().unwrap_or(FAILED),
                condition.message.as_deref().unwrap_or_default(),
            )
            .await;
        }
    }
}
