//! The CronJob controller (upstream's `cronjob-controller`, `cronjob_controllerv2.go`):
//! creates a Job from a CronJob's `jobTemplate` each time its schedule fires.
//!
//! Each reconcile of a CronJob:
//! - deletes the oldest finished Jobs past `successfulJobsHistoryLimit` and
//!   `failedJobsHistoryLimit` (propagation Background, so the garbage collector removes
//!   their pods);
//! - keeps `status.active` in step with the Jobs it controls (finished Jobs leave it, Jobs
//!   that disappeared too) and `status.lastSuccessfulTime` with the latest completion;
//! - unless suspended or being deleted, finds the most recent schedule time that is due and
//!   not yet run ([`plan::Times::due`]: only the latest of several missed times runs, and
//!   none older than `startingDeadlineSeconds`; over 100 missed times is reported as
//!   `TooManyMissedTimes`), applies `concurrencyPolicy` (`Forbid` skips the run while a
//!   Job is active, `Replace` deletes the active Jobs first), and creates the Job
//!   `<cronjob>-<minutes since the epoch>` with the annotation
//!   `batch.kubernetes.io/cronjob-scheduled-timestamp` (the name makes a second creation for
//!   the same time fail, so a crash between creating the Job and recording it is harmless);
//! - asks to be reconciled again just after the next schedule time.
//!
//! Time comes from the context's [`Clock`](crate::Clock); when a manual clock is moved every
//! CronJob is reconciled at once. Schedules are read in `spec.timeZone` (any IANA name the
//! system's time zone database knows); without one, in UTC — upstream uses the
//! controller-manager's local zone, which is UTC in the usual container deployments. The
//! schedule syntax is in [`schedule`].

pub mod plan;
pub use rkube_types::cron as schedule;

use std::collections::HashSet;
use std::sync::Arc;

use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use rkube_client::{
    Action, Api, DeleteParams, EventType, ObjectRef, PropagationPolicy, Recorder, WorkQueue,
    object_reference,
};
use tracing::{debug, info};

use crate::context::Context;
use crate::controllers::job::own_writes::OwnWrites;
use crate::controllers::job::requeue_on_clock_change;
use crate::controllers::{self, Running};
use crate::error::Result;
use crate::informer::{Change, Informer};
use crate::ownership::{controller_ref, is_controlled_by, owner_reference};
use plan::{Missed, Times};
use schedule::{Schedule, rfc3339_in};

/// Upstream's name, used for the work queue and as the source of Events.
pub const NAME: &str = "cronjob-controller";

/// The annotation on a Job that records the schedule time it was created for.
pub const SCHEDULED_TIMESTAMP_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// Subscribes the controller to the informers and returns its workers.
pub fn start(ctx: &Context) -> Running {
    let cronjobs = ctx.informer::<CronJob>();
    let jobs = ctx.informer::<Job>();
    let queue = WorkQueue::new();
    {
        let queue = queue.clone();
        cronjobs.subscribe(move |change| queue.add(ObjectRef::from_obj(&**change.object())));
    }
    {
        let queue = queue.clone();
        jobs.subscribe(move |change: &Change<Job>| {
            // A Job's owner, and on a change of owner the previous one too.
            for job in [Some(change.object()), change.old()].into_iter().flatten() {
                if let Some(owner) = cronjob_owner(job) {
                    queue.add(owner);
                }
            }
        });
    }
    let controller = Arc::new(CronJobController {
        ctx: ctx.clone(),
        recorder: ctx.recorder(NAME),
        cronjobs: cronjobs.clone(),
        jobs,
        writes: OwnWrites::default(),
    });
    let wake = requeue_on_clock_change(ctx, cronjobs, queue.clone(), |_| true);
    let workers = controllers::run_queue(ctx, NAME, queue, move |key| {
        let controller = controller.clone();
        async move { controller.reconcile(key).await }
    });
    Box::pin(async move {
        futures::join!(workers, wake);
    })
}

/// The CronJob controlling `job`, if one does.
fn cronjob_owner(job: &Job) -> Option<ObjectRef> {
    let owner = controller_ref(&job.metadata)?;
    (owner.kind == "CronJob" && owner.api_version == "batch/v1").then(|| {
        ObjectRef::namespaced(
            job.metadata.namespace.as_deref().unwrap_or_default(),
            &owner.name,
        )
    })
}

struct CronJobController {
    ctx: Context,
    recorder: Recorder,
    cronjobs: Informer<CronJob>,
    jobs: Informer<Job>,
    writes: OwnWrites,
}

fn status_mut(cj: &mut CronJob) -> &mut CronJobStatus {
    cj.status.get_or_insert_with(Default::default)
}

fn active(cj: &CronJob) -> &[ObjectReference] {
    cj.status
        .as_ref()
        .and_then(|s| s.active.as_deref())
        .unwrap_or_default()
}

fn in_active(cj: &CronJob, uid: &str) -> bool {
    active(cj).iter().any(|r| r.uid.as_deref() == Some(uid))
}

fn remove_from_active(cj: &mut CronJob, uid: &str) {
    let status = status_mut(cj);
    if let Some(list) = &mut status.active {
        list.retain(|r| r.uid.as_deref() != Some(uid));
        if list.is_empty() {
            status.active = None;
        }
    }
}

fn name_of<K: k8s_openapi::Metadata<Ty = ObjectMeta>>(obj: &K) -> &str {
    obj.metadata().name.as_deref().unwrap_or_default()
}

fn uid_of<K: k8s_openapi::Metadata<Ty = ObjectMeta>>(obj: &K) -> &str {
    obj.metadata().uid.as_deref().unwrap_or_default()
}

/// The Job that runs `cj` for `scheduled`.
pub fn job_for_run(cj: &CronJob, scheduled: jiff::Timestamp, tz: &TimeZone) -> Job {
    let template = cj.spec.as_ref().map(|s| &s.job_template);
    let meta = template
        .and_then(|t| t.metadata.clone())
        .unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP_ANNOTATION.to_string(),
        rfc3339_in(scheduled, tz),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(plan::job_name(name_of(cj), scheduled)),
            namespace: cj.metadata.namespace.clone(),
            labels: meta.labels.filter(|l| !l.is_empty()),
            annotations: Some(annotations),
            owner_references: Some(vec![owner_reference(cj)]),
            ..Default::default()
        },
        spec: template.and_then(|t| t.spec.clone()),
        status: None,
    }
}

impl CronJobController {
    fn cronjob_api(&self, namespace: &str) -> Api<CronJob> {
        Api::namespaced(self.ctx.client.clone(), namespace)
    }

    fn job_api(&self, namespace: &str) -> Api<Job> {
        Api::namespaced(self.ctx.client.clone(), namespace)
    }

    async fn event(&self, cj: &CronJob, type_: EventType, reason: &str, message: &str) {
        self.recorder
            .publish(&object_reference(cj), type_, reason, message)
            .await;
    }

    async fn reconcile(&self, key: ObjectRef) -> Result<Action> {
        let namespace = key.namespace.clone().unwrap_or_default();
        let key_s = key.to_string();
        let Some(shared) = self.cronjobs.get(&namespace, &key.name) else {
            self.writes.forget(&key_s);
            return Ok(Action::Done);
        };
        if self
            .writes
            .is_stale(&key_s, shared.metadata.resource_version.as_deref())
        {
            // Our last status write is on its way to the cache and will bring the key back.
            debug!(cronjob = %key, "cached cronjob older than its last status write, waiting");
            return Ok(Action::Done);
        }
        let uid = uid_of(&*shared).to_string();
        let jobs = self
            .jobs
            .filter_namespace(&namespace, |j| is_controlled_by(&j.metadata, &uid));
        let mut cj = (*shared).clone();
        let mut update = self.delete_past_history_limits(&mut cj, &jobs).await;
        let outcome = self.sync(&mut cj, &jobs, &mut update).await;
        if update {
            let written = self
                .cronjob_api(&namespace)
                .replace_status(&key.name, &cj)
                .await?;
            self.writes
                .wrote(&key_s, written.metadata.resource_version.as_deref());
        }
        match outcome? {
            Some(after) => Ok(Action::RequeueAfter(after)),
            None => Ok(Action::Done),
        }
    }

    /// Deletes the oldest finished Jobs past the history limits; whether `status` changed.
    async fn delete_past_history_limits(&self, cj: &mut CronJob, jobs: &[Arc<Job>]) -> bool {
        let Some(spec) = cj.spec.clone() else {
            return false;
        };
        let mut update = false;
        for (kind, limit) in [
            ("Complete", spec.successful_jobs_history_limit),
            ("Failed", spec.failed_jobs_history_limit),
        ] {
            let Some(limit) = limit else { continue };
            let finished: Vec<&Job> = jobs
                .iter()
                .map(|j| &**j)
                .filter(|j| plan::finished_type(j) == Some(kind))
                .collect();
            for job in plan::over_limit(&finished, limit) {
                if self.delete_job(cj, job).await {
                    update = true;
                }
            }
        }
        update
    }

    /// Deletes `job` (its pods in the background) and forgets it; whether it is gone.
    async fn delete_job(&self, cj: &mut CronJob, job: &Job) -> bool {
        let namespace = job.metadata.namespace.as_deref().unwrap_or_default();
        let params = DeleteParams::default().propagation(PropagationPolicy::Background);
        match self.job_api(namespace).delete(name_of(job), &params).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                let message = format!("Deleted job: {e}");
                self.event(cj, EventType::Warning, "FailedDelete", &message)
                    .await;
                return false;
            }
        }
        remove_from_active(cj, uid_of(job));
        let message = format!("Deleted job {}", name_of(job));
        self.event(cj, EventType::Normal, "SuccessfulDelete", &message)
            .await;
        true
    }

    /// Upstream's `syncCronJob`: tracks the Jobs and starts the one that is due. Returns
    /// when to look again; sets `update` when `cj.status` changed.
    async fn sync(
        &self,
        cj: &mut CronJob,
        jobs: &[Arc<Job>],
        update: &mut bool,
    ) -> Result<Option<std::time::Duration>> {
        let now = self.ctx.clock.now();
        let namespace = cj.metadata.namespace.clone().unwrap_or_default();
        let name = name_of(cj).to_string();

        let children: HashSet<&str> = jobs.iter().map(|j| uid_of(&**j)).collect();
        for job in jobs {
            let uid = uid_of(&**job);
            let finished = plan::finished_type(job);
            let found = in_active(cj, uid);
            if !found && finished.is_none() {
                // The cache may be behind our own status write: ask the apiserver.
                let fresh = self.cronjob_api(&namespace).get(&name).await?;
                if in_active(&fresh, uid) {
                    *cj = fresh;
                    continue;
                }
                let message = format!(
                    "Saw a job that the controller did not create or forgot: {}",
                    name_of(&**job)
                );
                self.event(cj, EventType::Warning, "UnexpectedJob", &message)
                    .await;
            } else if found && let Some(condition) = finished {
                remove_from_active(cj, uid);
                let message = format!(
                    "Saw completed job: {}, condition: {condition}",
                    name_of(&**job)
                );
                self.event(cj, EventType::Normal, "SawCompletedJob", &message)
                    .await;
                *update = true;
            }
            if finished == Some("Complete") {
                let completed = job.status.as_ref().and_then(|s| s.completion_time.clone());
                let status = status_mut(cj);
                if let Some(completed) = completed
                    && status
                        .last_successful_time
                        .as_ref()
                        .is_none_or(|t| completed.0 > t.0)
                {
                    status.last_successful_time = Some(completed);
                    *update = true;
                }
            }
        }

        // An active Job that no longer exists must not keep the CronJob active forever.
        let missing: Vec<ObjectReference> = active(cj)
            .iter()
            .filter(|r| !children.contains(r.uid.as_deref().unwrap_or_default()))
            .cloned()
            .collect();
        for r in missing {
            let job_name = r.name.clone().unwrap_or_default();
            match self.job_api(&namespace).get_opt(&job_name).await? {
                Some(job) if Some(uid_of(&job)) == r.uid.as_deref() => {}
                _ => {
                    let message = format!("Active job went missing: {job_name}");
                    self.event(cj, EventType::Normal, "MissingJob", &message)
                        .await;
                    remove_from_active(cj, r.uid.as_deref().unwrap_or_default());
                    *update = true;
                }
            }
        }

        if cj.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let Some(spec) = cj.spec.clone() else {
            return Ok(None);
        };
        let tz = match spec.time_zone.as_deref() {
            None => TimeZone::UTC,
            Some(zone) => match TimeZone::get(zone) {
                Ok(tz) => tz,
                Err(e) => {
                    let message = format!("invalid timeZone: {zone:?}: {e}");
                    self.event(cj, EventType::Warning, "UnknownTimeZone", &message)
                        .await;
                    return Ok(None);
                }
            },
        };
        if spec.suspend == Some(true) {
            debug!(cronjob = %name, "not starting job because the cronjob is suspended");
            return Ok(None);
        }
        let schedule = match Schedule::parse(&spec.schedule) {
            Ok(s) => s,
            Err(e) => {
                let message = format!("unparseable schedule: {:?} : {e}", spec.schedule);
                self.event(cj, EventType::Warning, "UnparseableSchedule", &message)
                    .await;
                return Ok(None);
            }
        };
        let created = cj.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
        let last_schedule = cj
            .status
            .as_ref()
            .and_then(|s| s.last_schedule_time.as_ref())
            .map(|t| t.0);
        let times = Times {
            schedule: &schedule,
            tz: &tz,
            created,
            last_schedule,
            starting_deadline_seconds: spec.starting_deadline_seconds,
        };
        let (due, missed) = match times.due(now) {
            Ok(due) => due,
            Err(e) => {
                let message = format!("invalid schedule: {} : {e}", spec.schedule);
                self.event(cj, EventType::Warning, "InvalidSchedule", &message)
                    .await;
                return Ok(None);
            }
        };
        let Some(scheduled) = due else {
            return Ok(times.requeue_after(now));
        };
        if missed == Missed::Many {
            self.event(
                cj,
                EventType::Warning,
                "TooManyMissedTimes",
                "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew",
            )
            .await;
            info!(cronjob = %name, "too many missed times");
        }
        if plan::too_late(scheduled, spec.starting_deadline_seconds, now) {
            let at = scheduled
                .to_zoned(TimeZone::UTC)
                .strftime("%a, %d %b %Y %H:%M:%S %z")
                .to_string();
            let message = format!("Missed scheduled time to start a job: {at}");
            self.event(cj, EventType::Warning, "MissSchedule", &message)
                .await;
            return Ok(times.requeue_after(now));
        }
        let job_name = plan::job_name(&name, scheduled);
        if active(cj)
            .iter()
            .any(|r| r.name.as_deref() == Some(job_name.as_str()))
            || last_schedule == Some(scheduled)
        {
            debug!(cronjob = %name, "the scheduled time is already processed");
            return Ok(times.requeue_after(now));
        }
        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
        if policy == "Forbid" && !active(cj).is_empty() {
            self.event(
                cj,
                EventType::Normal,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid",
            )
            .await;
            return Ok(times.requeue_after(now));
        }
        if policy == "Replace" {
            for r in active(cj).to_vec() {
                let running = r.name.as_deref().unwrap_or_default();
                match self.job_api(&namespace).get_opt(running).await? {
                    Some(job) => {
                        if !self.delete_job(cj, &job).await {
                            return Err(crate::Error::Invalid(format!(
                                "could not replace job {namespace}/{running}"
                            )));
                        }
                    }
                    None => remove_from_active(cj, r.uid.as_deref().unwrap_or_default()),
                }
                *update = true;
            }
        }

        let request = job_for_run(cj, scheduled, &tz);
        let job = match self.job_api(&namespace).create(&request).await {
            Ok(job) => {
                let message = format!("Created job {job_name}");
                self.event(cj, EventType::Normal, "SuccessfulCreate", &message)
                    .await;
                job
            }
            Err(e) if e.is_already_exists() => {
                // Created before, by us (and the status write was lost) or by someone else.
                let job = self.job_api(&namespace).get(&job_name).await?;
                if !is_controlled_by(&job.metadata, uid_of(cj)) || in_active(cj, uid_of(&job)) {
                    return Ok(times.requeue_after(now));
                }
                info!(cronjob = %name, job = %job_name, "job already exists");
                job
            }
            Err(e) => {
                let message = format!("Error creating job: {e}");
                self.event(cj, EventType::Warning, "FailedCreate", &message)
                    .await;
                return Err(e.into());
            }
        };
        let status = status_mut(cj);
        status
            .active
            .get_or_insert_with(Vec::new)
            .push(object_reference(&job));
        status.last_schedule_time = Some(Time(scheduled));
        *update = true;
        let times = Times {
            last_schedule: Some(scheduled),
            ..times
        };
        Ok(times.requeue_after(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{CronJobSpec, JobSpec, JobTemplateSpec};
    use std::collections::BTreeMap;

    #[test]
    fn jobs_are_named_and_annotated_for_their_schedule_time() {
        let mut cj = CronJob::default();
        cj.metadata.name = Some("report".into());
        cj.metadata.namespace = Some("ns".into());
        cj.metadata.uid = Some("cj-uid".into());
        cj.spec = Some(CronJobSpec {
            schedule: "*/5 * * * *".into(),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(BTreeMap::from([("app".into(), "report".into())])),
                    ..Default::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(2),
                    ..Default::default()
                }),
            },
            ..Default::default()
        });
        let at: jiff::Timestamp = "2026-01-01T00:05:00Z".parse().unwrap();
        let job = job_for_run(&cj, at, &TimeZone::UTC);
        assert_eq!(job.metadata.name.as_deref(), Some("report-29453765"));
        assert_eq!(job.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(
            job.metadata.annotations.as_ref().unwrap()[SCHEDULED_TIMESTAMP_ANNOTATION],
            "2026-01-01T00:05:00Z"
        );
        assert_eq!(job.metadata.labels.as_ref().unwrap()["app"], "report");
        assert!(is_controlled_by(&job.metadata, "cj-uid"));
        assert_eq!(job.spec.unwrap().backoff_limit, Some(2));
    }

    #[test]
    fn only_cronjob_owners_are_requeued() {
        let mut cj = CronJob::default();
        cj.metadata.name = Some("report".into());
        cj.metadata.uid = Some("u".into());
        let mut job = Job::default();
        job.metadata.namespace = Some("ns".into());
        assert_eq!(cronjob_owner(&job), None);
        job.metadata.owner_references = Some(vec![owner_reference(&cj)]);
        assert_eq!(
            cronjob_owner(&job),
            Some(ObjectRef::namespaced("ns", "report"))
        );
    }
}
