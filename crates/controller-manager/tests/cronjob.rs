//! The CronJob controller end to end, on a manual clock: the CronJob and Job controllers run
//! in this process with `Clock::manual`, the test moves the clock across schedule times and
//! watches Jobs appear with the names, annotations and concurrency a Kubernetes CronJob
//! gives them.
//!
//! The clock starts at the real time, so a CronJob's creation timestamp (written by the
//! apiserver) lies just after it; moving it two minutes guarantees an every-minute schedule
//! fired at least once since the CronJob was created, and only the latest time runs.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Event;
use rkube_client::{Api, ListParams};
use rkube_controller_manager::controllers;
use rkube_controller_manager::informer::Informers;
use rkube_controller_manager::metrics::Metrics;
use rkube_controller_manager::{Clock, Context, Settings, daemon};
use rkube_testing::cluster::{Cluster, ClusterOptions};
use rkube_testing::eventually;
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(40);
const MINUTE: Duration = Duration::from_secs(60);

/// A cluster without a controller-manager process, and the CronJob and Job controllers in
/// this process on a manual clock; they stop when this is dropped.
struct Harness {
    cluster: Cluster,
    clock: Clock,
    stop: watch::Sender<bool>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl Harness {
    async fn start() -> Self {
        let cluster = Cluster::start(ClusterOptions {
            nodes: 2,
            controller_manager: false,
            ..Default::default()
        })
        .await;
        let clock = Clock::manual(Timestamp::now());
        let (stop, stop_rx) = watch::channel(false);
        let ctx = Context {
            client: cluster.client(),
            informers: Arc::new(Informers::default()),
            clock: clock.clone(),
            metrics: Arc::new(Metrics::new()),
            settings: Arc::new(Settings::default()),
            stop: stop_rx,
        };
        let selected =
            controllers::select(&["cronjob".into(), "job".into()]).expect("known controllers");
        tokio::spawn(
            async move { daemon::run(ctx, &selected, Arc::new(AtomicBool::new(true))).await },
        );
        Harness {
            cluster,
            clock,
            stop,
        }
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.cluster.client(), "default")
    }

    async fn cronjob(&self, name: &str) -> CronJob {
        let api: Api<CronJob> = Api::namespaced(self.cluster.client(), "default");
        api.get(name).await.expect("get cronjob")
    }

    /// The names of the Jobs of CronJob `owner`, sorted.
    async fn job_names(&self, owner: &str) -> Result<Vec<String>, String> {
        let list = self
            .jobs()
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let mut names: Vec<String> = list
            .items
            .iter()
            .filter(|j| {
                j.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.kind == "CronJob" && r.name == owner)
            })
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .filter_map(|j| j.metadata.name.clone())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Waits until the Jobs of `owner` are exactly `want`.
    async fn wait_for_jobs(&self, owner: &str, want: &[String]) {
        eventually(
            &format!("jobs {want:?} of cronjob {owner}"),
            WAIT,
            || async {
                let names = self.job_names(owner).await?;
                if names == want {
                    Ok(())
                } else {
                    Err(format!("{names:?}"))
                }
            },
        )
        .await;
    }

    /// Waits until the Job `name` has the true condition `Complete`.
    async fn wait_for_complete(&self, name: &str) {
        eventually(&format!("job {name} complete"), WAIT, || async {
            let job = self.jobs().get(name).await.map_err(|e| e.to_string())?;
            let done = job
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "Complete" && c.status == "True")
                });
            if done {
                Ok(())
            } else {
                Err(format!("{:?}", job.status))
            }
        })
        .await;
    }

    /// Waits until CronJob `name` has no active Job.
    async fn wait_for_idle(&self, name: &str) -> CronJob {
        let api: Api<CronJob> = Api::namespaced(self.cluster.client(), "default");
        eventually(
            &format!("cronjob {name} without active jobs"),
            WAIT,
            || async {
                let cj = api.get(name).await.map_err(|e| e.to_string())?;
                let status = cj.status.clone().unwrap_or_default();
                if status.active.unwrap_or_default().is_empty()
                    && status.last_successful_time.is_some()
                {
                    Ok(cj)
                } else {
                    Err(format!("{:?}", cj.status))
                }
            },
        )
        .await
    }

    /// Waits for an Event with `reason` about CronJob `name`.
    async fn wait_for_event(&self, name: &str, reason: &str) {
        let events: Api<Event> = Api::namespaced(self.cluster.client(), "default");
        eventually(
            &format!("event {reason} for cronjob {name}"),
            WAIT,
            || async {
                let list = events
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let mine: Vec<String> = list
                    .items
                    .iter()
                    .filter(|e| e.involved_object.kind.as_deref() == Some("CronJob"))
                    .filter(|e| e.involved_object.name.as_deref() == Some(name))
                    .filter_map(|e| e.reason.clone())
                    .collect();
                if mine.iter().any(|r| r == reason) {
                    Ok(())
                } else {
                    Err(format!("{mine:?}"))
                }
            },
        )
        .await;
    }

    /// The name of the Job a schedule firing every minute makes at the latest whole minute
    /// of the clock.
    fn current_job(&self, cronjob: &str) -> String {
        format!("{cronjob}-{}", self.clock.now().as_second().div_euclid(60))
    }
}

fn cronjob_yaml(name: &str, spec: &str, annotations: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: CronJob
metadata:
  name: {name}
spec:
  schedule: "* * * * *"
{spec}
  jobTemplate:
    metadata:
      labels:
        from: {name}
    spec:
      template:
        metadata:
          annotations:
{annotations}
        spec:
          restartPolicy: Never
          containers:
          - name: work
            image: registry.local/app:v1
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_start_at_schedule_times_and_old_ones_are_cleaned_up() {
    let h = Harness::start().await;
    h.cluster
        .kubectl
        .apply(&cronjob_yaml(
            "tick",
            "  successfulJobsHistoryLimit: 2",
            "            fake.rkube.io/complete: \"true\"",
        ))
        .await;

    // Two minutes pass; only the latest missed time runs.
    h.clock.advance(2 * MINUTE);
    let first = h.current_job("tick");
    h.wait_for_jobs("tick", std::slice::from_ref(&first)).await;
    let job = h.jobs().get(&first).await.expect("first job");
    let scheduled = job
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("batch.kubernetes.io/cronjob-scheduled-timestamp"))
        .cloned()
        .expect("scheduled-timestamp annotation");
    let minute = h.clock.now().as_second().div_euclid(60) * 60;
    let expected = Timestamp::from_second(minute).expect("time").to_string();
    assert_eq!(scheduled, expected.replace(".0Z", "Z"));
    assert_eq!(
        job.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("from"))
            .map(String::as_str),
        Some("tick")
    );
    h.wait_for_complete(&first).await;
    let cj = h.wait_for_idle("tick").await;
    let status = cj.status.unwrap_or_default();
    assert_eq!(
        status.last_schedule_time.map(|t| t.0.as_second()),
        Some(minute),
        "lastScheduleTime is the scheduled minute"
    );
    h.wait_for_event("tick", "SuccessfulCreate").await;

    // Two more runs; after the third the oldest successful Job is deleted.
    let mut names = vec![first];
    for _ in 0..2 {
        h.clock.advance(MINUTE);
        let next = h.current_job("tick");
        h.wait_for_complete(&next).await;
        names.push(next);
        h.wait_for_idle("tick").await;
    }
    names.remove(0);
    h.wait_for_jobs("tick", &names).await;
    h.wait_for_event("tick", "SuccessfulDelete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_skips_runs_while_a_job_is_active() {
    let h = Harness::start().await;
    // No fake.rkube.io annotation: the pods, and so the Jobs, run until deleted.
    h.cluster
        .kubectl
        .apply(&cronjob_yaml(
            "solo",
            "  concurrencyPolicy: Forbid",
            "            rkube.io/test: \"forbid\"",
        ))
        .await;
    h.clock.advance(2 * MINUTE);
    let first = h.current_job("solo");
    h.wait_for_jobs("solo", std::slice::from_ref(&first)).await;
    eventually(
        "the first job in cronjob solo's active list",
        WAIT,
        || async {
            let cj = h.cronjob("solo").await;
            let active = cj.status.and_then(|s| s.active).unwrap_or_default();
            match active
                .iter()
                .any(|r| r.name.as_deref() == Some(first.as_str()))
            {
                true => Ok(()),
                false => Err(format!("{active:?}")),
            }
        },
    )
    .await;

    h.clock.advance(MINUTE);
    h.wait_for_event("solo", "JobAlreadyActive").await;
    assert_eq!(h.job_names("solo").await.expect("list"), [first]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_deletes_the_active_job_for_the_new_run() {
    let h = Harness::start().await;
    h.cluster
        .kubectl
        .apply(&cronjob_yaml(
            "fresh",
            "  concurrencyPolicy: Replace",
            "            rkube.io/test: \"replace\"",
        ))
        .await;
    h.clock.advance(2 * MINUTE);
    let first = h.current_job("fresh");
    h.wait_for_jobs("fresh", std::slice::from_ref(&first)).await;
    eventually("the first job active", WAIT, || async {
        let cj = h.cronjob("fresh").await;
        let active = cj.status.and_then(|s| s.active).unwrap_or_default();
        if active.len() == 1 {
            Ok(())
        } else {
            Err(format!("{active:?}"))
        }
    })
    .await;

    h.clock.advance(MINUTE);
    let second = h.current_job("fresh");
    h.wait_for_jobs("fresh", std::slice::from_ref(&second))
        .await;
    eventually("only the second job active", WAIT, || async {
        let cj = h.cronjob("fresh").await;
        let active: Vec<String> = cj
            .status
            .and_then(|s| s.active)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| r.name)
            .collect();
        if active == [second.clone()] {
            Ok(())
        } else {
            Err(format!("{active:?}"))
        }
    })
    .await;
    h.wait_for_event("fresh", "SuccessfulDelete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_cronjob_starts_nothing_until_resumed() {
    let h = Harness::start().await;
    h.cluster
        .kubectl
        .apply(&cronjob_yaml(
            "paused",
            "  suspend: true",
            "            fake.rkube.io/complete: \"true\"",
        ))
        .await;
    // Three minutes pass suspended; a Job started in between would be left over.
    h.clock.advance(2 * MINUTE);
    h.clock.advance(MINUTE);
    h.cluster
        .kubectl
        .run(&[
            "patch",
            "cronjob",
            "paused",
            "--type=merge",
            "-p",
            r#"{"spec":{"suspend":false}}"#,
        ])
        .await
        .expect("resume");
    let due = h.current_job("paused");
    h.wait_for_jobs("paused", std::slice::from_ref(&due)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_hundred_missed_runs_are_reported_and_only_the_latest_starts() {
    let h = Harness::start().await;
    h.cluster
        .kubectl
        .apply(&cronjob_yaml(
            "behind",
            "",
            "            fake.rkube.io/complete: \"true\"",
        ))
        .await;
    // The controller manager was "down" for 150 minutes.
    h.clock.advance(150 * MINUTE);
    let latest = h.current_job("behind");
    h.wait_for_jobs("behind", std::slice::from_ref(&latest))
        .await;
    h.wait_for_event("behind", "TooManyMissedTimes").await;
}
