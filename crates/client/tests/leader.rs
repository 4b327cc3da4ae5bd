//! Leader election and event recording against a real in-process apiserver: one leader at a
//! time, takeover after the lease expires, immediate takeover after a release, and Events
//! aggregated by count.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rkube_client::{
    Api, Client, EventType, LeaderElectionConfig, LeaderElector, ListParams, Recorder,
    object_reference,
};
use rkube_testing::{TestApiserver, eventually};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(20);

fn config(name: &str, identity: &str, lease: Duration) -> LeaderElectionConfig {
    LeaderElectionConfig {
        lease_duration: lease,
        renew_deadline: Duration::from_millis(500),
        retry_period: Duration::from_millis(100),
        ..LeaderElectionConfig::new("default", name, identity)
    }
}

/// Who is leading right now, and whether two ever led at once.
#[derive(Default)]
struct Leaders {
    current: Mutex<BTreeSet<String>>,
    overlap: AtomicBool,
}

impl Leaders {
    fn now(&self) -> BTreeSet<String> {
        self.current.lock().expect("lock").clone()
    }
}

/// Removes its identity from the leaders when `lead` ends, also when it is dropped.
struct Leading(Arc<Leaders>, String);

impl Drop for Leading {
    fn drop(&mut self) {
        self.0.current.lock().expect("lock").remove(&self.1);
    }
}

/// Runs a candidate in a task; returns its shutdown trigger and the task.
fn candidate(
    client: Client,
    config: LeaderElectionConfig,
    leaders: &Arc<Leaders>,
) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let (shutdown, stop) = oneshot::channel::<()>();
    let leaders = leaders.clone();
    let identity = config.identity.clone();
    let elector = LeaderElector::new(client, config);
    let task = tokio::spawn(elector.run(
        move |mut token| async move {
            {
                let mut current = leaders.current.lock().expect("lock");
                if !current.is_empty() {
                    leaders.overlap.store(true, Ordering::SeqCst);
                }
                current.insert(identity.clone());
            }
            let _leading = Leading(leaders, identity);
            // Errs only if the elector is gone, which also means stop.
            let _ = token.wait_for(|lost| *lost).await;
        },
        async move {
            let _ = stop.await;
        },
    ));
    (shutdown, task)
}

async fn one_leader(leaders: &Leaders, what: &str) -> String {
    eventually(what, WAIT, || async {
        let now = leaders.now();
        match now.len() {
            1 => Ok(now.into_iter().next().unwrap_or_default()),
            _ => Err(format!("leaders {now:?}")),
        }
    })
    .await
}

async fn lease_holder(api: &Api<Lease>, name: &str) -> (String, i32) {
    let lease = api.get(name).await.expect("get lease");
    let spec = lease.spec.unwrap_or_default();
    (
        spec.holder_identity.unwrap_or_default(),
        spec.lease_transitions.unwrap_or(0),
    )
}

#[tokio::test]
async fn only_one_candidate_wins_a_race_for_a_new_lease() {
    let server = TestApiserver::start().await;
    for round in 0..5 {
        let name = format!("race-{round}");
        let a = LeaderElector::new(server.new_client().await, config(&name, "a", WAIT));
        let b = LeaderElector::new(server.new_client().await, config(&name, "b", WAIT));
        let (won_a, won_b) = tokio::join!(a.try_acquire_or_renew(), b.try_acquire_or_renew());
        let (won_a, won_b) = (won_a.expect("a"), won_b.expect("b"));
        assert!(
            won_a != won_b,
            "round {round}: a won {won_a}, b won {won_b}"
        );
        // The holder renews; the other stays out while the lease is fresh.
        let (holder, other) = if won_a { (&a, &b) } else { (&b, &a) };
        assert!(holder.try_acquire_or_renew().await.expect("renew"));
        assert!(!other.try_acquire_or_renew().await.expect("retry"));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn the_other_candidate_takes_over_when_the_leader_stops_renewing() {
    let server = TestApiserver::start().await;
    let leaders = Arc::new(Leaders::default());
    let lease = Duration::from_secs(1);
    let (_stop_a, task_a) = candidate(
        server.new_client().await,
        config("ctl", "a", lease),
        &leaders,
    );
    let (_stop_b, task_b) = candidate(
        server.new_client().await,
        config("ctl", "b", lease),
        &leaders,
    );

    let first = one_leader(&leaders, "a first leader").await;
    let api: Api<Lease> = Api::namespaced(server.client(), "default");
    let (holder, transitions) = lease_holder(&api, "ctl").await;
    assert_eq!(holder, first);

    // The leader dies without releasing: the lease must run out before the other leads.
    let (dead, survivor, other) = if first == "a" {
        (task_a, task_b, "b")
    } else {
        (task_b, task_a, "a")
    };
    dead.abort();
    let _ = dead.await;
    let second = one_leader(&leaders, "the other candidate to take over").await;
    assert_eq!(second, other);
    eventually("the lease to name the new holder", WAIT, || async {
        match lease_holder(&api, "ctl").await {
            (holder, t) if holder == other && t > transitions => Ok(()),
            seen => Err(format!("holder and transitions {seen:?}")),
        }
    })
    .await;
    assert!(
        !leaders.overlap.load(Ordering::SeqCst),
        "two candidates led at once"
    );
    survivor.abort();
    server.shutdown().await;
}

#[tokio::test]
async fn releasing_on_shutdown_lets_the_other_take_over_at_once() {
    let server = TestApiserver::start().await;
    let leaders = Arc::new(Leaders::default());
    // Long enough that a takeover within WAIT can only come from the release.
    let lease = Duration::from_secs(60);
    let (stop_a, task_a) = candidate(
        server.new_client().await,
        config("sched", "a", lease),
        &leaders,
    );
    assert_eq!(one_leader(&leaders, "a to lead").await, "a");
    let (_stop_b, task_b) = candidate(
        server.new_client().await,
        config("sched", "b", lease),
        &leaders,
    );

    stop_a.send(()).expect("a still running");
    tokio::time::timeout(WAIT, task_a)
        .await
        .expect("a stops after shutdown")
        .expect("a's task");
    let api: Api<Lease> = Api::namespaced(server.client(), "default");
    assert_eq!(
        one_leader(&leaders, "b to lead after the release").await,
        "b"
    );
    assert_eq!(lease_holder(&api, "sched").await.0, "b");
    assert!(
        !leaders.overlap.load(Ordering::SeqCst),
        "two candidates led at once"
    );
    task_b.abort();
    server.shutdown().await;
}

#[tokio::test]
async fn a_repeated_event_is_counted_on_one_event() {
    let server = TestApiserver::start().await;
    let configmaps: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let target = configmaps
        .create(&ConfigMap {
            metadata: ObjectMeta {
                name: Some("settings".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .expect("create configmap");
    let reference = object_reference(&target);
    let recorder = Recorder::new(server.client(), "test-controller");
    for _ in 0..2 {
        recorder
            .publish(&reference, EventType::Normal, "Synced", "all good")
            .await;
    }
    recorder
        .publish(&reference, EventType::Warning, "Failed", "not so good")
        .await;

    let events: Api<Event> = Api::namespaced(server.client(), "default");
    let list = events.list(&ListParams::default()).await.expect("list");
    let summary: Vec<_> = list
        .items
        .iter()
        .map(|e| {
            (
                e.reason.clone().unwrap_or_default(),
                e.count.unwrap_or(0),
                e.type_.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(summary.len(), 2, "events: {summary:?}");
    assert!(
        summary.contains(&("Synced".into(), 2, "Normal".into())),
        "events: {summary:?}"
    );
    assert!(
        summary.contains(&("Failed".into(), 1, "Warning".into())),
        "events: {summary:?}"
    );
    let synced = list
        .items
        .iter()
        .find(|e| e.reason.as_deref() == Some("Synced"))
        .expect("synced event");
    assert_eq!(synced.involved_object.name.as_deref(), Some("settings"));
    assert_eq!(synced.involved_object.kind.as_deref(), Some("ConfigMap"));
    assert_eq!(
        synced.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("test-controller")
    );
    assert!(
        synced
            .metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("settings."))
    );
    assert!(synced.first_timestamp.is_some() && synced.last_timestamp.is_some());
    server.shutdown().await;
}
