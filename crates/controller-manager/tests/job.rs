//! The Job controller end to end: Jobs applied with kubectl run their pods on the test
//! cluster's fake kubelets (which end pods as their `fake.rkube.io/*` annotations say) and
//! finish as Kubernetes Jobs do.
//!
//! Tests that need retries run the Job controller in-process with a pod failure backoff of
//! 200 ms instead of upstream's 10 s; the others use the `rkube-controller-manager` process.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use rkube_client::{Api, ListParams};
use rkube_controller_manager::controllers::job::{self, JobConfig};
use rkube_controller_manager::controllers::{Descriptor, Running};
use rkube_controller_manager::informer::Informers;
use rkube_controller_manager::metrics::Metrics;
use rkube_controller_manager::{Clock, Context, Settings, daemon};
use rkube_testing::cluster::{Cluster, ClusterOptions};
use rkube_testing::eventually;
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(40);
const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";

fn fast_job_controller(ctx: &Context) -> Running {
    job::start_with(
        ctx,
        JobConfig {
            pod_failure_backoff: Duration::from_millis(200),
            max_pod_failure_backoff: Duration::from_secs(2),
        },
    )
}

static FAST_JOB: Descriptor = Descriptor {
    name: "job-controller",
    alias: "job",
    default_enabled: true,
    start: fast_job_controller,
};

/// Runs the Job controller with a short backoff in this process until dropped.
struct InProcess {
    stop: watch::Sender<bool>,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

fn run_fast_job_controller(cluster: &Cluster) -> InProcess {
    let (stop, stop_rx) = watch::channel(false);
    let ctx = Context {
        client: cluster.client(),
        informers: Arc::new(Informers::default()),
        clock: Clock::system(),
        metrics: Arc::new(Metrics::new()),
        settings: Arc::new(Settings::default()),
        stop: stop_rx,
    };
    tokio::spawn(async move {
        daemon::run(ctx, &[&FAST_JOB], Arc::new(AtomicBool::new(true))).await;
    });
    InProcess { stop }
}

fn job_yaml(name: &str, spec: &str, annotations: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
{spec}
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

fn condition<'a>(
    job: &'a Job,
    type_: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// Waits until the Job has the true condition `type_`, and returns it.
async fn wait_for_condition(cluster: &Cluster, name: &str, type_: &str) -> Job {
    let jobs: Api<Job> = Api::namespaced(cluster.client(), "default");
    eventually(&format!("job {name} {type_}"), WAIT, || async {
        let job = jobs.get(name).await.map_err(|e| e.to_string())?;
        match condition(&job, type_) {
            Some(_) => Ok(job),
            None => Err(format!("status {:?}", job.status)),
        }
    })
    .await
}

async fn pods_of(cluster: &Cluster, job: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    pods.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
        .expect("list pods")
        .items
}

/// Waits for an Event with `reason` about the Job `name`.
async fn wait_for_event(cluster: &Cluster, name: &str, reason: &str) -> Event {
    let events: Api<Event> = Api::namespaced(cluster.client(), "default");
    eventually(&format!("event {reason} for job {name}"), WAIT, || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let reasons: Vec<String> = list
            .items
            .iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .filter_map(|e| e.reason.clone())
            .collect();
        list.items
            .into_iter()
            .find(|e| {
                e.involved_object.name.as_deref() == Some(name)
                    && e.involved_object.kind.as_deref() == Some("Job")
                    && e.reason.as_deref() == Some(reason)
            })
            .ok_or_else(|| format!("events of {name}: {reasons:?}"))
    })
    .await
}

fn succeeded_failed(job: &Job) -> (i32, i32) {
    let status = job.status.clone().unwrap_or_default();
    (status.succeeded.unwrap_or(0), status.failed.unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_its_completions_two_at_a_time_and_completes() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    cluster
        .kubectl
        .apply(&job_yaml(
            "three",
            "  completions: 3\n  parallelism: 2",
            "        fake.rkube.io/complete: \"true\"",
        ))
        .await;
    // kubectl's own wait sees the condition as Kubernetes writes it.
    cluster
        .kubectl
        .run(&[
            "wait",
            "--for=condition=complete",
            "job/three",
            "--timeout=40s",
        ])
        .await
        .expect("kubectl wait --for=condition=complete returns");

    let job = wait_for_condition(&cluster, "three", "Complete").await;
    let status = job.status.clone().unwrap_or_default();
    assert_eq!(succeeded_failed(&job), (3, 0), "{status:?}");
    assert!(
        condition(&job, "SuccessCriteriaMet").is_some(),
        "{status:?}"
    );
    assert_eq!(status.active.unwrap_or(0), 0);
    assert_eq!(status.ready, Some(0));
    let (start, done) = (
        status.start_time.expect("startTime"),
        status.completion_time.expect("completionTime"),
    );
    assert!(
        start.0 <= done.0,
        "started {start:?} after completing {done:?}"
    );
    let uncounted = status.uncounted_terminated_pods.unwrap_or_default();
    assert!(
        uncounted.succeeded.unwrap_or_default().is_empty()
            && uncounted.failed.unwrap_or_default().is_empty()
    );

    // Exactly the completions ran, labelled like upstream, and every one was counted (its
    // tracking finalizer is gone).
    let pods = pods_of(&cluster, "three").await;
    assert_eq!(
        pods.len(),
        3,
        "{:?}",
        pods.iter().map(|p| &p.metadata.name).collect::<Vec<_>>()
    );
    let uid = job.metadata.uid.clone().unwrap_or_default();
    for pod in &pods {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("batch.kubernetes.io/controller-uid"), Some(&uid));
        assert_eq!(labels.get("controller-uid"), Some(&uid));
        assert_eq!(labels.get("job-name").map(String::as_str), Some("three"));
        assert!(
            pod.metadata
                .name
                .as_deref()
                .unwrap_or_default()
                .starts_with("three-")
        );
        let finalizers = pod.metadata.finalizers.clone().unwrap_or_default();
        assert!(
            !finalizers.iter().any(|f| f == TRACKING_FINALIZER),
            "{finalizers:?}"
        );
        assert_eq!(rkube_controller_manager::pods::phase(pod), "Succeeded");
    }
    wait_for_event(&cluster, "three", "SuccessfulCreate").await;
    wait_for_event(&cluster, "three", "Completed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_pods_are_replaced_after_a_backoff_until_one_succeeds() {
    let cluster = Cluster::start(ClusterOptions {
        controller_manager: false,
        ..Default::default()
    })
    .await;
    let _controller = run_fast_job_controller(&cluster);
    cluster
        .kubectl
        .apply(&job_yaml(
            "flaky",
            "  backoffLimit: 6",
            "        fake.rkube.io/fail-first: \"2\"",
        ))
        .await;
    let job = wait_for_condition(&cluster, "flaky", "Complete").await;
    assert_eq!(succeeded_failed(&job), (1, 2), "{:?}", job.status);
    let pods = pods_of(&cluster, "flaky").await;
    let phases: Vec<&str> = pods
        .iter()
        .map(rkube_controller_manager::pods::phase)
        .collect();
    assert_eq!(pods.len(), 3, "{phases:?}");
    assert_eq!(
        phases.iter().filter(|p| **p == "Failed").count(),
        2,
        "{phases:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_backoff_limit_fails() {
    let cluster = Cluster::start(ClusterOptions {
        controller_manager: false,
        ..Default::default()
    })
    .await;
    let _controller = run_fast_job_controller(&cluster);
    cluster
        .kubectl
        .apply(&job_yaml(
            "doomed",
            "  backoffLimit: 1",
            "        fake.rkube.io/fail-first: \"5\"",
        ))
        .await;
    let job = wait_for_condition(&cluster, "doomed", "Failed").await;
    let failed = condition(&job, "Failed").expect("Failed condition");
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert!(
        condition(&job, "FailureTarget").is_some(),
        "{:?}",
        job.status
    );
    assert!(condition(&job, "Complete").is_none());
    // backoffLimit 1: the second failure fails the Job, and no third pod is made.
    assert_eq!(succeeded_failed(&job), (0, 2), "{:?}", job.status);
    assert_eq!(pods_of(&cluster, "doomed").await.len(), 2);
    wait_for_event(&cluster, "doomed", "BackoffLimitExceeded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexed_job_runs_one_pod_per_index() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    cluster
        .kubectl
        .apply(&job_yaml(
            "idx",
            "  completions: 3\n  parallelism: 3\n  completionMode: Indexed",
            "        fake.rkube.io/complete: \"true\"",
        ))
        .await;
    let job = wait_for_condition(&cluster, "idx", "Complete").await;
    let status = job.status.clone().unwrap_or_default();
    assert_eq!(status.succeeded, Some(3));
    assert_eq!(status.completed_indexes.as_deref(), Some("0-2"));
    let mut indexes: Vec<String> = Vec::new();
    for pod in pods_of(&cluster, "idx").await {
        let index = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("batch.kubernetes.io/job-completion-index"))
            .cloned()
            .expect("completion index annotation");
        let label = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("batch.kubernetes.io/job-completion-index"));
        assert_eq!(label, Some(&index));
        let spec = pod.spec.clone().unwrap_or_default();
        assert_eq!(spec.hostname, Some(format!("idx-{index}")));
        assert!(
            pod.metadata
                .name
                .as_deref()
                .unwrap_or_default()
                .starts_with(&format!("idx-{index}-")),
            "{:?}",
            pod.metadata.name
        );
        let env = spec.containers[0].env.clone().unwrap_or_default();
        assert!(
            env.iter().any(|e| e.name == "JOB_COMPLETION_INDEX"),
            "{env:?}"
        );
        indexes.push(index);
    }
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_active_deadline_fails_and_loses_its_pods() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    // No fake.rkube.io annotation: the pods run until deleted.
    cluster
        .kubectl
        .apply(&job_yaml(
            "slow",
            "  parallelism: 2\n  completions: 4\n  activeDeadlineSeconds: 3",
            "        rkube.io/test: \"deadline\"",
        ))
        .await;
    eventually("two pods of job slow running", WAIT, || async {
        let running = pods_of(&cluster, "slow")
            .await
            .iter()
            .filter(|p| rkube_controller_manager::pods::is_ready(p))
            .count();
        if running == 2 {
            Ok(())
        } else {
            Err(format!("{running} ready"))
        }
    })
    .await;
    let job = wait_for_condition(&cluster, "slow", "Failed").await;
    let failed = condition(&job, "Failed").expect("Failed condition");
    assert_eq!(failed.reason.as_deref(), Some("DeadlineExceeded"));
    let status = job.status.clone().unwrap_or_default();
    assert_eq!(status.active.unwrap_or(0), 0, "{status:?}");
    assert_eq!(
        status.failed,
        Some(2),
        "the deleted pods count as failed: {status:?}"
    );
    // Failed is set only once the deleted pods are gone.
    assert!(pods_of(&cluster, "slow").await.is_empty());
    wait_for_event(&cluster, "slow", "DeadlineExceeded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_job_runs_once_resumed() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    cluster
        .kubectl
        .apply(&job_yaml(
            "later",
            "  suspend: true",
            "        fake.rkube.io/complete: \"true\"",
        ))
        .await;
    let job = wait_for_condition(&cluster, "later", "Suspended").await;
    let status = job.status.clone().unwrap_or_default();
    assert!(
        status.start_time.is_none(),
        "a suspended job has not started: {status:?}"
    );
    assert!(pods_of(&cluster, "later").await.is_empty());
    cluster
        .kubectl
        .run(&[
            "patch",
            "job",
            "later",
            "--type=merge",
            "-p",
            r#"{"spec":{"suspend":false}}"#,
        ])
        .await
        .expect("resume");
    let job = wait_for_condition(&cluster, "later", "Complete").await;
    let suspended = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Suspended"))
        .cloned()
        .expect("Suspended condition");
    assert_eq!(
        (suspended.status.as_str(), suspended.reason.as_deref()),
        ("False", Some("JobResumed"))
    );
    assert_eq!(succeeded_failed(&job), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_is_deleted_after_its_ttl() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    cluster
        .kubectl
        .apply(&job_yaml(
            "brief",
            // completionTime has second precision, so the Job may be visible as Complete
            // for as little as ttl - 1 s: 3 s leaves the test 2 s to see it.
            "  ttlSecondsAfterFinished: 3",
            "        fake.rkube.io/complete: \"true\"",
        ))
        .await;
    let job = wait_for_condition(&cluster, "brief", "Complete").await;
    let done = job
        .status
        .and_then(|s| s.completion_time)
        .expect("completionTime")
        .0;
    let jobs: Api<Job> = Api::namespaced(cluster.client(), "default");
    eventually("job brief deleted after its ttl", WAIT, || async {
        match jobs.get_opt("brief").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(j) => Err(format!("still there: {:?}", j.metadata.deletion_timestamp)),
        }
    })
    .await;
    let elapsed = jiff::Timestamp::now().duration_since(done);
    assert!(
        elapsed >= jiff::SignedDuration::from_secs(3),
        "deleted {elapsed:?} after finishing"
    );
}
