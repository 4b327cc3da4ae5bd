use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::{Instant, advance};

use super::*;
use crate::plugins::{
    inter_pod_affinity, node_affinity, node_name, node_ports, node_resources, node_unschedulable,
    pod_topology_spread, taint_toleration,
};
use crate::testing::pod;

const SEC: Duration = Duration::from_secs(1);

/// PrioritySort: higher priority first, then earlier arrival.
fn priority_less() -> Less {
    Arc::new(|a: &PodInfo, a_added: u64, b: &PodInfo, b_added: u64| {
        a.priority > b.priority || (a.priority == b.priority && a_added < b_added)
    })
}

fn queue() -> SchedulingQueue {
    SchedulingQueue::new(priority_less(), SEC, 10 * SEC)
}

fn info(name: &str) -> Arc<PodInfo> {
    Arc::new(PodInfo::new(Arc::new(pod(name).build())))
}

fn info_with_priority(name: &str, priority: i32) -> Arc<PodInfo> {
    Arc::new(PodInfo::new(Arc::new(pod(name).priority(priority).build())))
}

fn info_with_label(name: &str, value: &str) -> Arc<PodInfo> {
    Arc::new(PodInfo::new(Arc::new(pod(name).label("v", value).build())))
}

/// The same pod with only its status changed, as after the scheduler's own
/// `PodScheduled=False` condition write.
fn info_status_only(name: &str) -> Arc<PodInfo> {
    let mut p = pod(name).build();
    p.status = Some(k8s_openapi::api::core::v1::PodStatus {
        phase: Some("Pending".to_string()),
        ..Default::default()
    });
    Arc::new(PodInfo::new(Arc::new(p)))
}

fn key(name: &str) -> String {
    format!("default/{name}")
}

fn rejected(mut pod: QueuedPod, plugins: &[&'static str]) -> QueuedPod {
    pod.unschedulable_plugins = plugins.iter().copied().collect();
    pod
}

/// Which sub-queue holds `name`, for assertions.
fn place(q: &SchedulingQueue, name: &str) -> &'static str {
    let inner = q.lock();
    inner.check_invariants();
    match inner.pods.get(&key(name)).map(|e| &e.slot) {
        None => "absent",
        Some(Slot::Active(_)) => "active",
        Some(Slot::Backoff { .. }) => "backoff",
        Some(Slot::Unschedulable { .. }) => "unschedulable",
        Some(Slot::InFlight(f)) if f.deleted => "in flight, deleted",
        Some(Slot::InFlight(_)) => "in flight",
    }
}

fn pop_now(q: &SchedulingQueue) -> QueuedPod {
    match q.try_pop() {
        Some(p) => p,
        None => panic!("expected a pod in active, lengths {:?}", q.lengths()),
    }
}

fn popped_names(q: &SchedulingQueue) -> Vec<String> {
    std::iter::from_fn(|| q.try_pop().map(|p| p.info.name.clone())).collect()
}

/// Pops `name` and hands it back unschedulable, rejected by `plugins`.
fn make_unschedulable(q: &SchedulingQueue, name: &str, plugins: &[&'static str]) {
    q.add(info(name));
    let p = pop_now(q);
    assert_eq!(p.info.name, name);
    q.add_unschedulable(rejected(p, plugins));
    assert_eq!(place(q, name), "unschedulable");
}

#[tokio::test(start_paused = true)]
async fn pops_higher_priority_first_then_fifo() {
    let q = queue();
    q.add(info_with_priority("low-1", 1));
    q.add(info_with_priority("high-1", 10));
    q.add(info_with_priority("low-2", 1));
    q.add(info_with_priority("high-2", 10));
    q.add(info_with_priority("mid", 5));
    assert_eq!(
        popped_names(&q),
        ["high-1", "high-2", "mid", "low-1", "low-2"]
    );
}

#[tokio::test(start_paused = true)]
async fn pop_counts_attempts_and_marks_in_flight() {
    let q = queue();
    q.add(info("a"));
    let p = pop_now(&q);
    assert_eq!(p.attempts, 1);
    assert_eq!(p.initial_attempt, Some(Instant::now()));
    assert_eq!(q.lengths().in_flight, 1);
    assert!(q.contains(&key("a")));
    advance(SEC).await;
    q.add_backoff(p);
    advance(SEC).await;
    q.flush(Instant::now());
    let again = pop_now(&q);
    assert_eq!(again.attempts, 2);
    // The first attempt's time is kept for the end-to-end latency metric.
    assert_eq!(again.initial_attempt, Some(Instant::now() - 2 * SEC));
}

#[test]
fn backoff_doubles_per_attempt_and_is_capped() {
    let max = 10 * SEC;
    let got: Vec<Duration> = (0..7).map(|a| backoff_duration(a, SEC, max)).collect();
    assert_eq!(
        got,
        [0, 1, 2, 4, 8, 10, 10].map(Duration::from_secs).to_vec()
    );
    // No overflow for absurd attempt counts.
    assert_eq!(backoff_duration(u32::MAX, SEC, max), max);
    assert_eq!(
        backoff_duration(40, Duration::from_secs(u64::MAX / 4), Duration::MAX),
        Duration::MAX
    );
}

#[tokio::test(start_paused = true)]
async fn backoff_counts_from_the_last_failure_and_doubles() {
    let q = queue();
    q.add(info("a"));
    for (attempt, secs) in (1..=6u32).zip([1, 2, 4, 8, 10, 10]) {
        let p = pop_now(&q);
        assert_eq!(p.attempts, attempt);
        advance(3 * SEC).await; // a long cycle: backoff counts from its end
        q.add_backoff(p);
        let backoff = Duration::from_secs(secs);
        advance(backoff - Duration::from_millis(1)).await;
        q.flush(Instant::now());
        assert_eq!(
            place(&q, "a"),
            "backoff",
            "attempt {attempt}: still backing off just before {secs}s"
        );
        advance(Duration::from_millis(1)).await;
        q.flush(Instant::now());
        assert_eq!(
            place(&q, "a"),
            "active",
            "attempt {attempt}: backoff of {secs}s over"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn pop_waits_until_a_pod_is_added() {
    let q = queue();
    let waiter = tokio::spawn({
        let q = q.clone();
        async move { q.pop().await }
    });
    tokio::task::yield_now().await;
    advance(SEC).await;
    assert!(!waiter.is_finished(), "pop returned with active empty");
    q.add(info("a"));
    let got = tokio::time::timeout(SEC, waiter).await;
    let name = got
        .ok()
        .and_then(|r| r.ok())
        .flatten()
        .map(|p| p.info.name.clone());
    assert_eq!(name.as_deref(), Some("a"));
}

#[tokio::test(start_paused = true)]
async fn one_flush_wakes_every_waiting_pop() {
    let q = queue();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move { q.pop().await })
        })
        .collect();
    tokio::task::yield_now().await;
    for name in ["a", "b", "c"] {
        q.add(info(name));
        let p = pop_now(&q);
        q.add_backoff(p);
    }
    advance(SEC).await;
    // Three pods reach active in one flush, which notifies once; the waiters pass it on.
    q.flush(Instant::now());
    let mut names = Vec::new();
    for w in waiters {
        let got = tokio::time::timeout(SEC, w).await;
        if let Some(p) = got.ok().and_then(|r| r.ok()).flatten() {
            names.push(p.info.name.clone());
        }
    }
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);
}

#[tokio::test(start_paused = true)]
async fn close_wakes_pop_with_none() {
    let q = queue();
    let waiter = tokio::spawn({
        let q = q.clone();
        async move { q.pop().await }
    });
    tokio::task::yield_now().await;
    q.close();
    let got = tokio::time::timeout(SEC, waiter).await;
    assert!(
        matches!(got, Ok(Ok(None))),
        "pop after close: expected None"
    );
    q.add(info("a"));
    assert!(
        q.pop().await.is_none(),
        "pop on a closed queue returns None"
    );
}

#[tokio::test(start_paused = true)]
async fn interesting_event_moves_unschedulable_pod() {
    let q = queue();
    make_unschedulable(&q, "a", &[node_resources::NAME]);
    // A new bound pod takes resources: it cannot help a pod that did not fit.
    q.on_event(ClusterEvent::AssignedPodAdd);
    assert_eq!(place(&q, "a"), "unschedulable");
    q.on_event(ClusterEvent::NodeUpdate {
        allocatable: false,
        labels: true,
        taints: true,
        unschedulable: true,
    });
    assert_eq!(place(&q, "a"), "unschedulable");
    // A deleted bound pod frees resources; the pod failed just now, so it backs off.
    q.on_event(ClusterEvent::AssignedPodDelete);
    assert_eq!(place(&q, "a"), "backoff");
    advance(SEC).await;
    q.flush(Instant::now());
    assert_eq!(place(&q, "a"), "active");
}

#[tokio::test(start_paused = true)]
async fn event_after_backoff_moves_pod_straight_to_active() {
    let q = queue();
    make_unschedulable(&q, "a", &[taint_toleration::NAME]);
    advance(2 * SEC).await;
    q.on_event(ClusterEvent::NodeUpdate {
        allocatable: false,
        labels: false,
        taints: true,
        unschedulable: false,
    });
    assert_eq!(place(&q, "a"), "active");
}

#[tokio::test(start_paused = true)]
async fn node_update_moves_only_pods_of_interested_plugins() {
    let q = queue();
    make_unschedulable(&q, "fit", &[node_resources::NAME]);
    make_unschedulable(&q, "affinity", &[node_affinity::NAME]);
    make_unschedulable(&q, "taint", &[taint_toleration::NAME]);
    make_unschedulable(&q, "cordon", &[node_unschedulable::NAME]);
    make_unschedulable(&q, "spread", &[pod_topology_spread::NAME]);
    make_unschedulable(&q, "ports", &[node_ports::NAME]);
    advance(20 * SEC).await;
    let update = |allocatable, labels, taints, unschedulable| ClusterEvent::NodeUpdate {
        allocatable,
        labels,
        taints,
        unschedulable,
    };
    q.on_event(update(false, false, false, false));
    assert_eq!(
        q.lengths().unschedulable,
        6,
        "a no-op node update moves nothing"
    );
    q.on_event(update(false, false, false, true));
    assert_eq!(place(&q, "cordon"), "active");
    assert_eq!(place(&q, "taint"), "unschedulable");
    q.on_event(update(true, false, false, false));
    assert_eq!(place(&q, "fit"), "active");
    assert_eq!(place(&q, "affinity"), "unschedulable");
    q.on_event(update(false, true, false, false));
    assert_eq!(place(&q, "affinity"), "active");
    assert_eq!(place(&q, "spread"), "active");
    assert_eq!(place(&q, "taint"), "unschedulable");
    q.on_event(update(false, false, true, false));
    assert_eq!(place(&q, "taint"), "active");
    // Node updates never free host ports.
    assert_eq!(place(&q, "ports"), "unschedulable");
    q.on_event(ClusterEvent::NodeDelete);
    assert_eq!(place(&q, "ports"), "unschedulable");
    q.on_event(ClusterEvent::AssignedPodDelete);
    assert_eq!(place(&q, "ports"), "active");
}

#[tokio::test(start_paused = true)]
async fn pod_rejected_by_several_plugins_moves_once() {
    let q = queue();
    make_unschedulable(
        &q,
        "a",
        &[inter_pod_affinity::NAME, pod_topology_spread::NAME],
    );
    q.on_event(ClusterEvent::AssignedPodAdd);
    assert_eq!(q.lengths().backoff, 1);
    assert_eq!(place(&q, "a"), "backoff");
}

#[tokio::test(start_paused = true)]
async fn other_plugins_move_only_on_node_add_or_forced() {
    let q = queue();
    make_unschedulable(&q, "a", &[node_name::NAME]);
    make_unschedulable(&q, "b", &["ExampleOutOfTree"]);
    for event in [
        ClusterEvent::NodeDelete,
        ClusterEvent::AssignedPodAdd,
        ClusterEvent::AssignedPodUpdate,
        ClusterEvent::AssignedPodDelete,
        ClusterEvent::NodeUpdate {
            allocatable: true,
            labels: true,
            taints: true,
            unschedulable: true,
        },
    ] {
        q.on_event(event);
        assert_eq!(q.lengths().unschedulable, 2, "{event:?} moved a pod");
    }
    q.on_event(ClusterEvent::NodeAdd);
    assert_eq!(q.lengths().unschedulable, 0);
    make_unschedulable(&q, "c", &["ExampleOutOfTree"]);
    q.on_event(ClusterEvent::Forced);
    assert_eq!(place(&q, "c"), "backoff");
}

#[tokio::test(start_paused = true)]
async fn pod_without_rejecting_plugins_goes_to_backoff() {
    let q = queue();
    q.add(info("a"));
    let p = pop_now(&q);
    q.add_unschedulable(p);
    assert_eq!(place(&q, "a"), "backoff");
}

#[tokio::test(start_paused = true)]
async fn move_request_while_in_flight_sends_pod_to_backoff() {
    // Upstream's moveRequestCycle: a node added while the pod's cycle ran may fit it, so
    // parking it until the next event would strand it.
    let q = queue();
    q.add(info("a"));
    let p = pop_now(&q);
    q.on_event(ClusterEvent::NodeAdd);
    q.add_unschedulable(rejected(p, &[node_resources::NAME]));
    assert_eq!(place(&q, "a"), "backoff");
}

#[tokio::test(start_paused = true)]
async fn uninteresting_event_while_in_flight_keeps_pod_unschedulable() {
    let q = queue();
    q.add(info("a"));
    let p = pop_now(&q);
    q.on_event(ClusterEvent::AssignedPodAdd);
    q.add_unschedulable(rejected(p, &[node_resources::NAME]));
    assert_eq!(place(&q, "a"), "unschedulable");
}

#[tokio::test(start_paused = true)]
async fn events_before_the_pop_do_not_count_as_in_flight() {
    let q = queue();
    q.add(info("a"));
    q.on_event(ClusterEvent::NodeAdd);
    let p = pop_now(&q);
    q.add_unschedulable(rejected(p, &[node_resources::NAME]));
    assert_eq!(place(&q, "a"), "unschedulable");
    // Nor do events of an earlier flight.
    q.on_event(ClusterEvent::NodeAdd);
    advance(SEC).await;
    q.flush(Instant::now());
    let p = pop_now(&q);
    q.add_unschedulable(rejected(p, &[node_resources::NAME]));
    assert_eq!(place(&q, "a"), "unschedulable");
}

#[tokio::test(start_paused = true)]
async fn unschedulable_pod_is_retried_after_five_minutes() {
    let q = queue();
    make_unschedulable(&q, "a", &[node_affinity::NAME]);
    let start = Instant::now();
    q.flush(start + POD_MAX_IN_UNSCHEDULABLE_PODS_DURATION);
    assert_eq!(place(&q, "a"), "unschedulable", "exactly five minutes");
    q.flush(start + POD_MAX_IN_UNSCHEDULABLE_PODS_DURATION + Duration::from_millis(1));
    assert_eq!(place(&q, "a"), "active");
}

#[tokio::test(start_paused = true)]
async fn run_flusher_moves_pods_until_shutdown() {
    let q = queue();
    make_unschedulable(&q, "parked", &[node_affinity::NAME]);
    q.add(info("a"));
    let p = pop_now(&q);
    q.add_backoff(p);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let flusher = tokio::spawn({
        let q = q.clone();
        async move {
            q.run_flusher(async {
                let _ = stopped.await;
            })
            .await
        }
    });
    let popped = tokio::time::timeout(2 * SEC, q.pop()).await;
    assert_eq!(
        popped
            .ok()
            .flatten()
            .map(|p| p.info.name.clone())
            .as_deref(),
        Some("a"),
        "the flusher moves a pod out of backoff within a second of its expiry"
    );
    let popped = tokio::time::timeout(5 * 60 * SEC + 2 * SEC, q.pop()).await;
    assert_eq!(
        popped
            .ok()
            .flatten()
            .map(|p| p.info.name.clone())
            .as_deref(),
        Some("parked")
    );
    let _ = stop.send(());
    assert!(tokio::time::timeout(SEC, flusher).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn delete_removes_pod_from_each_sub_queue() {
    let q = queue();
    make_unschedulable(&q, "parked", &[node_affinity::NAME]);
    q.add(info("backing-off"));
    let p = pop_now(&q);
    q.add_backoff(p);
    q.add(info("flying"));
    let flying = pop_now(&q);
    q.add(info("active"));
    q.add(info("kept"));
    assert_eq!(place(&q, "backing-off"), "backoff");
    assert_eq!(place(&q, "active"), "active");
    for name in ["active", "backing-off", "flying", "parked"] {
        q.delete(&key(name));
        assert!(!q.contains(&key(name)), "{name} still known after delete");
    }
    assert_eq!(place(&q, "flying"), "in flight, deleted");
    // The deleted in-flight pod is dropped when its cycle hands it back.
    q.add_unschedulable(rejected(flying, &[node_affinity::NAME]));
    assert_eq!(place(&q, "flying"), "absent");
    assert_eq!(
        q.lengths(),
        QueueLengths {
            active: 1,
            ..Default::default()
        }
    );
    assert_eq!(popped_names(&q), ["kept"]);
    q.delete(&key("never-added"));
}

#[tokio::test(start_paused = true)]
async fn deleted_in_flight_pod_handed_back_to_backoff_is_dropped() {
    let q = queue();
    q.add(info("a"));
    let p = pop_now(&q);
    q.delete(&key("a"));
    assert_eq!(
        q.lengths().in_flight,
        1,
        "still in flight until its cycle ends"
    );
    q.add_backoff(p);
    assert_eq!(q.lengths(), QueueLengths::default());
}

#[tokio::test(start_paused = true)]
async fn update_replaces_pod_in_active() {
    let q = queue();
    q.add(info_with_label("a", "1"));
    q.add(info("b"));
    q.update(info_with_label("a", "2"));
    assert_eq!(q.lengths().active, 2);
    let p = pop_now(&q);
    assert_eq!(p.info.labels.get("v").map(String::as_str), Some("2"));
    // The update keeps the pod's place in line.
    assert_eq!(p.info.name, "a");
    assert_eq!(popped_names(&q), ["b"]);
}

#[tokio::test(start_paused = true)]
async fn update_in_active_follows_a_changed_sort_key() {
    let q = queue();
    q.add(info_with_priority("a", 1));
    q.add(info_with_priority("b", 5));
    q.update(info_with_priority("a", 10));
    assert_eq!(popped_names(&q), ["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn update_keeps_backoff_pod_backing_off() {
    let q = queue();
    q.add(info_with_label("a", "1"));
    let p = pop_now(&q);
    q.add_backoff(p);
    q.update(info_with_label("a", "2"));
    assert_eq!(place(&q, "a"), "backoff");
    advance(SEC).await;
    q.flush(Instant::now());
    let p = pop_now(&q);
    assert_eq!(p.info.labels.get("v").map(String::as_str), Some("2"));
}

#[tokio::test(start_paused = true)]
async fn update_moves_unschedulable_pod_only_when_spec_or_labels_change() {
    let q = queue();
    make_unschedulable(&q, "a", &[node_affinity::NAME]);
    // The scheduler's own status write must not requeue the pod.
    q.update(info_status_only("a"));
    assert_eq!(place(&q, "a"), "unschedulable");
    q.update(info_with_label("a", "2"));
    assert_eq!(place(&q, "a"), "backoff", "failed just now: backs off");

    make_unschedulable(&q, "b", &[node_affinity::NAME]);
    advance(2 * SEC).await;
    q.update(info_with_label("b", "2"));
    assert_eq!(place(&q, "b"), "active", "backoff over: straight to active");
}

#[tokio::test(start_paused = true)]
async fn update_while_in_flight_is_used_when_the_pod_comes_back() {
    let q = queue();
    q.add(info_with_label("a", "1"));
    let p = pop_now(&q);
    q.update(info_with_label("a", "2"));
    assert_eq!(
        q.lengths().in_flight,
        1,
        "the update does not queue a second copy"
    );
    assert_eq!(q.lengths().active, 0);
    q.add_unschedulable(rejected(p, &[node_affinity::NAME]));
    // The pod changed while it was being scheduled: retry it instead of parking it.
    assert_eq!(place(&q, "a"), "backoff");
    advance(SEC).await;
    q.flush(Instant::now());
    let p = pop_now(&q);
    assert_eq!(p.info.labels.get("v").map(String::as_str), Some("2"));
}

#[tokio::test(start_paused = true)]
async fn status_only_update_while_in_flight_does_not_count_as_a_move() {
    let q = queue();
    q.add(info("a"));
    let p = pop_now(&q);
    q.update(info_status_only("a"));
    q.add_unschedulable(rejected(p, &[node_affinity::NAME]));
    assert_eq!(place(&q, "a"), "unschedulable");
}

#[tokio::test(start_paused = true)]
async fn update_of_unknown_pod_adds_it() {
    let q = queue();
    q.update(info("a"));
    assert_eq!(place(&q, "a"), "active");
}

#[tokio::test(start_paused = true)]
async fn adding_a_known_pod_does_not_duplicate_it() {
    let q = queue();
    q.add(info("a"));
    q.add(info("a"));
    assert_eq!(q.lengths().active, 1);
    let p = pop_now(&q);
    q.add(info("a"));
    assert_eq!(q.lengths().active, 0);
    q.add_backoff(p);
    q.add(info("a"));
    assert_eq!(place(&q, "a"), "backoff");
}

#[tokio::test(start_paused = true)]
async fn pod_recreated_while_in_flight_is_kept() {
    let q = queue();
    q.add(info("a"));
    let p = pop_now(&q);
    q.delete(&key("a"));
    q.add(info_with_label("a", "new"));
    assert!(q.contains(&key("a")));
    q.add_unschedulable(rejected(p, &[node_affinity::NAME]));
    assert_eq!(place(&q, "a"), "backoff");
}

#[tokio::test(start_paused = true)]
async fn done_forgets_the_pod_and_is_harmless_after_a_hand_back() {
    let q = queue();
    q.add(info("a"));
    q.add(info("b"));
    let a = pop_now(&q);
    q.done(a.key());
    assert!(!q.contains(&key("a")));
    let b = pop_now(&q);
    q.add_backoff(b);
    q.done(&key("b"));
    assert_eq!(place(&q, "b"), "backoff");
    q.done(&key("never-added"));
}

#[tokio::test(start_paused = true)]
async fn handing_back_a_queued_pod_is_ignored() {
    let q = queue();
    q.add(info("a"));
    let p = pop_now(&q);
    q.add_backoff(p.clone());
    q.add_unschedulable(rejected(p, &[node_affinity::NAME]));
    assert_eq!(place(&q, "a"), "backoff");
    assert_eq!(q.lengths().unschedulable, 0);
}

#[tokio::test(start_paused = true)]
async fn repeated_updates_in_active_do_not_grow_the_heap() {
    let q = queue();
    q.add(info("a"));
    for i in 0..10_000 {
        q.update(info_with_label("a", &i.to_string()));
    }
    let heap = q.lock().active.len();
    assert!(heap <= 130, "heap holds {heap} items for one pod");
    assert_eq!(popped_names(&q), ["a"]);
}

#[test]
fn event_interest_matches_the_documented_table() {
    let set = |names: &[&str]| PluginSet::of(names.iter().copied());
    assert_eq!(
        event_interest(ClusterEvent::AssignedPodDelete),
        set(&[
            node_resources::NAME,
            node_ports::NAME,
            inter_pod_affinity::NAME,
            pod_topology_spread::NAME,
            crate::plugins::default_preemption::NAME,
        ])
    );
    assert_eq!(
        event_interest(ClusterEvent::NodeDelete),
        set(&[pod_topology_spread::NAME])
    );
    assert!(event_interest(ClusterEvent::NodeAdd).intersects(set(&["AnythingElse"])));
    assert!(!event_interest(ClusterEvent::AssignedPodAdd).intersects(set(&["AnythingElse"])));
    assert!(
        event_interest(ClusterEvent::NodeUpdate {
            allocatable: true,
            labels: false,
            taints: false,
            unschedulable: false
        })
        .intersects(set(&[node_resources::BALANCED_NAME]))
    );
}

/// One step of the property test; pod and held-pod indexes wrap around.
#[derive(Debug, Clone)]
enum Op {
    Add(u8),
    Update(u8, bool),
    Delete(u8),
    Pop,
    Unschedulable(u8, u16),
    Backoff(u8),
    Done(u8),
    Event(u8),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..8u8).prop_map(Op::Add),
        2 => (0..8u8, any::<bool>()).prop_map(|(k, c)| Op::Update(k, c)),
        2 => (0..8u8).prop_map(Op::Delete),
        4 => Just(Op::Pop),
        3 => (any::<u8>(), any::<u16>()).prop_map(|(i, m)| Op::Unschedulable(i, m)),
        2 => any::<u8>().prop_map(Op::Backoff),
        1 => any::<u8>().prop_map(Op::Done),
        2 => (0..7u8).prop_map(Op::Event),
        2 => (0..400u16).prop_map(Op::Advance),
    ]
}

const EVENTS: [ClusterEvent; 7] = [
    ClusterEvent::NodeAdd,
    ClusterEvent::NodeUpdate {
        allocatable: true,
        labels: false,
        taints: false,
        unschedulable: false,
    },
    ClusterEvent::NodeDelete,
    ClusterEvent::AssignedPodAdd,
    ClusterEvent::AssignedPodUpdate,
    ClusterEvent::AssignedPodDelete,
    ClusterEvent::Forced,
];

const PLUGINS: [&str; 8] = [
    node_resources::NAME,
    node_affinity::NAME,
    inter_pod_affinity::NAME,
    pod_topology_spread::NAME,
    taint_toleration::NAME,
    node_unschedulable::NAME,
    node_ports::NAME,
    node_name::NAME,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every added pod that was neither deleted nor bound is in exactly one sub-queue or
    /// in flight, and pop never returns a deleted pod or one already in flight.
    #[test]
    fn no_pod_is_lost_or_duplicated(ops in proptest::collection::vec(op(), 1..120)) {
        let mut q = Inner::new(priority_less(), SEC, 10 * SEC);
        let mut now = Instant::now();
        let mut live: BTreeSet<String> = BTreeSet::new();
        let mut held: Vec<QueuedPod> = Vec::new();
        let mut version = 0u32;
        let name = |k: u8| format!("p{k}");
        for op in ops {
            match op {
                Op::Add(k) => {
                    q.add(info(&name(k)), now);
                    live.insert(key(&name(k)));
                }
                Op::Update(k, changed) => {
                    let pod = if changed {
                        version += 1;
                        info_with_label(&name(k), &version.to_string())
                    } else {
                        info_status_only(&name(k))
                    };
                    q.update(pod, now);
                    live.insert(key(&name(k)));
                }
                Op::Delete(k) => {
                    q.delete(&key(&name(k)));
                    live.remove(&key(&name(k)));
                }
                Op::Pop => {
                    if let Some(p) = q.pop_active(now) {
                        prop_assert!(live.contains(p.key()), "popped deleted {}", p.key());
                        prop_assert!(
                            !held.iter().any(|h| h.key() == p.key()),
                            "popped {} twice", p.key()
                        );
                        held.push(p);
                    }
                }
                Op::Unschedulable(i, mask) if !held.is_empty() => {
                    let p = held.remove(usize::from(i) % held.len());
                    let plugins = PLUGINS
                        .iter()
                        .enumerate()
                        .filter(|(b, _)| mask & (1 << b) != 0)
                        .map(|(_, n)| *n)
                        .collect();
                    q.add_unschedulable(QueuedPod { unschedulable_plugins: plugins, ..p }, now);
                }
                Op::Backoff(i) if !held.is_empty() => {
                    let p = held.remove(usize::from(i) % held.len());
                    q.add_backoff(p, now);
                }
                Op::Done(i) if !held.is_empty() => {
                    let p = held.remove(usize::from(i) % held.len());
                    q.done(p.key());
                    live.remove(p.key());
                }
                Op::Event(e) => q.on_event(EVENTS[usize::from(e) % EVENTS.len()], now),
                Op::Advance(secs) => {
                    now += Duration::from_secs(u64::from(secs));
                    q.flush(now);
                }
                Op::Unschedulable(..) | Op::Backoff(_) | Op::Done(_) => {}
            }
            q.check_invariants();
            for k in (0..8).map(|k| key(&name(k))) {
                prop_assert_eq!(q.contains(&k), live.contains(&k), "{} known", k);
            }
            let lengths = q.lengths();
            prop_assert_eq!(lengths.in_flight, held.len());
            let queued = live.iter().filter(|k| !held.iter().any(|h| h.key() == k.as_str()));
            prop_assert_eq!(
                lengths.active + lengths.backoff + lengths.unschedulable,
                queued.count()
            );
        }
        // Draining: hand every held pod back, wait out every backoff and the five-minute
        // flush, and every live pod comes out of active exactly once.
        for p in held.drain(..) {
            q.add_backoff(p, now);
        }
        now += POD_MAX_IN_UNSCHEDULABLE_PODS_DURATION + 20 * SEC;
        q.flush(now);
        now += 20 * SEC;
        q.flush(now);
        let mut popped = Vec::new();
        while let Some(p) = q.pop_active(now) {
            popped.push(p.key().to_string());
        }
        popped.sort();
        prop_assert_eq!(popped, live.into_iter().collect::<Vec<_>>());
    }
}
