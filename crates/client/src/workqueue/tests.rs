//! The work queue: unit tests with paused time, and property tests of its invariants.

use std::sync::atomic::{AtomicU64, Ordering};

use futures::FutureExt;
use proptest::prelude::*;

use super::*;

/// `get` if an item is ready now.
fn try_get<T: Clone + Eq + Hash>(q: &WorkQueue<T>) -> Option<T> {
    q.get().now_or_never().flatten()
}

#[test]
fn adds_are_deduplicated() {
    let q = WorkQueue::new();
    q.add("a");
    q.add("a");
    q.add("b");
    q.add("a");
    assert_eq!(q.len(), 2);
    assert_eq!(try_get(&q), Some("a"));
    assert_eq!(try_get(&q), Some("b"));
    assert_eq!(try_get(&q), None);
    assert!(q.is_empty());
}

#[test]
fn an_item_held_by_a_worker_is_requeued_once_when_done() {
    let q = WorkQueue::new();
    q.add("a");
    assert_eq!(try_get(&q), Some("a"));
    // Changed while held: not handed out again until done.
    q.add("a");
    q.add("a");
    assert_eq!(q.len(), 0);
    assert_eq!(try_get(&q), None);
    q.done(&"a");
    assert_eq!(q.len(), 1);
    assert_eq!(try_get(&q), Some("a"));
    q.done(&"a");
    assert_eq!(try_get(&q), None);
}

#[test]
fn done_for_an_item_not_held_changes_nothing() {
    let q = WorkQueue::new();
    q.add("a");
    q.done(&"a");
    q.done(&"b");
    assert_eq!(q.len(), 1);
    assert_eq!(try_get(&q), Some("a"));
    assert_eq!(try_get(&q), None);
}

#[tokio::test(start_paused = true)]
async fn get_waits_for_an_add() {
    let q = WorkQueue::new();
    let getter = tokio::spawn({
        let q = q.clone();
        async move { q.get().await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!getter.is_finished());
    q.add(7);
    assert_eq!(getter.await.expect("getter"), Some(7));
}

#[tokio::test(start_paused = true)]
async fn add_after_waits_for_its_time() {
    let q = WorkQueue::new();
    let start = Instant::now();
    q.add_after("a", Duration::from_millis(100));
    assert_eq!(q.len(), 0);
    assert_eq!(q.get().await, Some("a"));
    assert_eq!(start.elapsed(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn add_after_keeps_the_earlier_time() {
    let q = WorkQueue::new();
    let start = Instant::now();
    q.add_after("a", Duration::from_secs(1));
    q.add_after("a", Duration::from_millis(100));
    q.add_after("a", Duration::from_secs(5));
    assert_eq!(q.get().await, Some("a"));
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    q.done(&"a");
    // The replaced one-second timer does not fire.
    let again = tokio::time::timeout(Duration::from_secs(10), q.get()).await;
    assert!(again.is_err(), "unexpected second delivery: {again:?}");
}

#[tokio::test(start_paused = true)]
async fn an_earlier_add_after_wakes_a_sleeping_getter() {
    let q = WorkQueue::new();
    let start = Instant::now();
    q.add_after("late", Duration::from_secs(10));
    let getter = tokio::spawn({
        let q = q.clone();
        async move { q.get().await }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    q.add_after("soon", Duration::from_secs(1));
    assert_eq!(getter.await.expect("getter"), Some("soon"));
    assert_eq!(start.elapsed(), Duration::from_millis(1001));
    assert_eq!(q.get().await, Some("late"));
    assert_eq!(start.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn several_due_items_reach_several_getters() {
    let q = WorkQueue::new();
    for i in 0..3 {
        q.add_after(i, Duration::from_millis(50));
    }
    let getters: Vec<_> = (0..3)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move { q.get().await })
        })
        .collect();
    let mut got = Vec::new();
    for getter in getters {
        got.push(getter.await.expect("getter").expect("an item"));
    }
    got.sort();
    assert_eq!(got, [0, 1, 2]);
}

#[test]
fn backoff_doubles_and_caps_without_overflow() {
    let base = DEFAULT_BASE_DELAY;
    let max = DEFAULT_MAX_DELAY;
    assert_eq!(backoff_delay(base, max, 0), Duration::from_millis(5));
    assert_eq!(backoff_delay(base, max, 1), Duration::from_millis(10));
    assert_eq!(backoff_delay(base, max, 2), Duration::from_millis(20));
    assert_eq!(backoff_delay(base, max, 17), Duration::from_millis(655_360));
    // 5 ms * 2^18 = 1310.72 s > 1000 s.
    assert_eq!(backoff_delay(base, max, 18), max);
    assert_eq!(backoff_delay(base, max, 31), max);
    assert_eq!(backoff_delay(base, max, 32), max);
    assert_eq!(backoff_delay(base, max, u32::MAX), max);
}

#[tokio::test(start_paused = true)]
async fn rate_limited_adds_back_off_until_forgotten() {
    let q = WorkQueue::with_backoff(Duration::from_millis(5), Duration::from_millis(40));
    let mut delays = Vec::new();
    for _ in 0..6 {
        let start = Instant::now();
        q.add_rate_limited("a");
        assert_eq!(q.get().await, Some("a"));
        q.done(&"a");
        delays.push(start.elapsed().as_millis());
    }
    assert_eq!(delays, [5, 10, 20, 40, 40, 40]);
    assert_eq!(q.num_requeues(&"a"), 6);
    assert_eq!(q.num_requeues(&"b"), 0);

    q.forget(&"a");
    assert_eq!(q.num_requeues(&"a"), 0);
    let start = Instant::now();
    q.add_rate_limited("a");
    assert_eq!(q.get().await, Some("a"));
    assert_eq!(start.elapsed(), Duration::from_millis(5));
}

#[tokio::test(start_paused = true)]
async fn shutdown_hands_out_what_is_queued_then_none() {
    let q = WorkQueue::new();
    q.add("a");
    q.add("b");
    q.add_after("later", Duration::from_millis(10));
    q.shutdown();
    assert!(q.is_shutting_down());
    q.add("c");
    q.add_after("d", Duration::from_millis(1));
    q.add_rate_limited("e");
    assert_eq!(q.get().await, Some("a"));
    assert_eq!(q.get().await, Some("b"));
    assert_eq!(q.get().await, None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(q.get().await, None);
}

#[tokio::test(start_paused = true)]
async fn shutdown_wakes_every_waiting_getter() {
    let q = WorkQueue::<u32>::new();
    q.add_after(1, Duration::from_secs(60));
    let getters: Vec<_> = (0..3)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move { q.get().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1)).await;
    q.shutdown();
    for getter in getters {
        assert_eq!(getter.await.expect("getter"), None);
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_with_drain_waits_for_held_items() {
    let q = WorkQueue::new();
    q.add("a");
    q.add("b");
    assert_eq!(q.get().await, Some("a"));
    // Changed while held: it will come around once more.
    q.add("a");

    let drain = tokio::spawn({
        let q = q.clone();
        async move { q.shutdown_with_drain().await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!drain.is_finished(), "drained while `a` was still held");

    q.done(&"a");
    assert_eq!(q.get().await, Some("b"));
    q.done(&"b");
    assert_eq!(q.get().await, Some("a"));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!drain.is_finished(), "drained while `a` was held again");
    q.done(&"a");
    assert_eq!(q.get().await, None);
    tokio::time::timeout(Duration::from_secs(1), drain)
        .await
        .expect("drain finished after the last done")
        .expect("drain task");
}

#[tokio::test(start_paused = true)]
async fn shutdown_with_drain_of_an_idle_queue_returns_at_once() {
    let q = WorkQueue::<u8>::new();
    q.shutdown_with_drain().await;
    assert_eq!(q.get().await, None);
}

/// The reference: client-go's queue, as plainly as it can be written.
#[derive(Default)]
struct Model {
    queue: VecDeque<u8>,
    dirty: HashSet<u8>,
    processing: HashSet<u8>,
}

impl Model {
    fn add(&mut self, item: u8) {
        if self.dirty.insert(item) && !self.processing.contains(&item) {
            self.queue.push_back(item);
        }
    }

    fn get(&mut self) -> Option<u8> {
        let item = self.queue.pop_front()?;
        self.dirty.remove(&item);
        self.processing.insert(item);
        Some(item)
    }

    fn done(&mut self, item: u8) {
        if self.processing.remove(&item) && self.dirty.contains(&item) {
            self.queue.push_back(item);
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Add(u8),
    Get,
    /// Done for the n-th held item (modulo how many are held).
    Done(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..6).prop_map(Op::Add),
        2 => Just(Op::Get),
        2 => any::<usize>().prop_map(Op::Done),
    ]
}

proptest! {
    /// Any sequence of add/get/done behaves as the reference does, and no item is ever
    /// handed out while it is held.
    #[test]
    fn matches_the_model_and_never_hands_out_a_held_item(ops in prop::collection::vec(op(), 0..200)) {
        let q = WorkQueue::new();
        let mut model = Model::default();
        let mut held: Vec<u8> = Vec::new();
        for op in ops {
            match op {
                Op::Add(item) => {
                    q.add(item);
                    model.add(item);
                }
                Op::Get => {
                    let got = try_get(&q);
                    prop_assert_eq!(got, model.get());
                    if let Some(item) = got {
                        prop_assert!(!held.contains(&item), "{} handed out twice", item);
                        held.push(item);
                    }
                }
                Op::Done(n) => {
                    if !held.is_empty() {
                        let item = held.remove(n % held.len());
                        q.done(&item);
                        model.done(item);
                    }
                }
            }
            prop_assert_eq!(q.len(), model.queue.len());
        }

        // Shut down and drain: everything dirty comes out exactly once more.
        q.shutdown();
        for item in held.drain(..) {
            q.done(&item);
            model.done(item);
        }
        let mut rest = Vec::new();
        while let Some(item) = try_get(&q) {
            q.done(&item);
            rest.push(item);
        }
        let expected: Vec<u8> = model.queue.iter().copied().collect();
        prop_assert_eq!(rest, expected);
        prop_assert_eq!(q.get().now_or_never(), Some(None));
    }

    /// Concurrent workers never hold one key at once, and every add is followed by a
    /// processing of its key that started after it (no change is lost).
    #[test]
    fn workers_never_share_a_key_and_lose_no_add(
        adds in prop::collection::vec((0u8..5, 0u8..4), 1..60),
        work in prop::collection::vec(0u8..4, 1..8),
        workers in 1usize..5,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        let outcome: Result<(), String> = rt.block_on(async move {
            let q = WorkQueue::new();
            let clock = Arc::new(AtomicU64::new(0));
            let holding = Arc::new(Mutex::new(HashSet::new()));
            // Per key: the tick of its last add, and of the last processing start.
            let last_add = Arc::new(Mutex::new(HashMap::<u8, u64>::new()));
            let last_start = Arc::new(Mutex::new(HashMap::<u8, u64>::new()));
            let violation = Arc::new(Mutex::new(None::<String>));

            let mut tasks = Vec::new();
            for w in 0..workers {
                let (q, clock, holding, last_start, violation) = (
                    q.clone(), clock.clone(), holding.clone(), last_start.clone(), violation.clone(),
                );
                let work = work.clone();
                tasks.push(tokio::spawn(async move {
                    let mut round = w;
                    while let Some(key) = q.get().await {
                        let tick = clock.fetch_add(1, Ordering::SeqCst);
                        if !holding.lock().unwrap().insert(key) {
                            *violation.lock().unwrap() = Some(format!("key {key} held twice"));
                        }
                        last_start.lock().unwrap().insert(key, tick);
                        for _ in 0..work[round % work.len()] {
                            tokio::task::yield_now().await;
                        }
                        round += 1;
                        holding.lock().unwrap().remove(&key);
                        q.done(&key);
                    }
                }));
            }

            for (key, pause) in adds {
                let tick = clock.fetch_add(1, Ordering::SeqCst);
                last_add.lock().unwrap().insert(key, tick);
                q.add(key);
                for _ in 0..pause {
                    tokio::task::yield_now().await;
                }
            }
            q.shutdown_with_drain().await;
            for task in tasks {
                task.await.map_err(|e| e.to_string())?;
            }

            if let Some(v) = violation.lock().unwrap().take() {
                return Err(v);
            }
            let starts = last_start.lock().unwrap();
            for (key, added) in last_add.lock().unwrap().iter() {
                match starts.get(key) {
                    Some(started) if started > added => {}
                    other => {
                        return Err(format!(
                            "key {key} added at tick {added}, last processing started at {other:?}"
                        ))
                    }
                }
            }
            Ok(())
        });
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}
