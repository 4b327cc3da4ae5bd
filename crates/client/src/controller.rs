//! The controller runner: workers that take keys from a [`WorkQueue`] and reconcile them.
//!
//! Controllers are level-triggered: event handlers only add keys to the queue, and
//! `reconcile(key)` reads desired and actual state (from caches) and acts. The runner owns
//! what is common to all of them:
//!
//! - `workers` tasks, each looping take a key → reconcile → settle it: on success the key's
//!   backoff is forgotten (and it is re-added after a delay if asked), on failure it is
//!   re-added with its per-key exponential backoff. The queue guarantees that no two workers
//!   hold one key.
//! - A panicking reconcile counts as a failure; the worker and the key carry on.
//! - Graceful shutdown: when the shutdown future completes, workers take no new keys and the
//!   queue shuts down; reconciles in flight get a grace period to finish, then are dropped.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, error, warn};

use crate::workqueue::WorkQueue;

/// How long in-flight reconciles may take to finish after shutdown, unless set otherwise.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);

/// What a successful reconcile asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing: the key comes back when something changes.
    Done,
    /// Reconcile the key again after this long, e.g. to re-check a timeout.
    RequeueAfter(Duration),
}

/// Runs reconciles for the keys of one work queue.
pub struct Controller<K> {
    queue: WorkQueue<K>,
    workers: usize,
    grace_period: Duration,
}

impl<K> Controller<K>
where
    K: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static,
{
    /// A runner with `workers` concurrent reconciles (at least one) over `queue`.
    pub fn new(queue: WorkQueue<K>, workers: usize) -> Self {
        Controller {
            queue,
            workers: workers.max(1),
            grace_period: DEFAULT_GRACE_PERIOD,
        }
    }

    /// How long in-flight reconciles may run on after shutdown (default 30 s).
    pub fn grace_period(mut self, grace_period: Duration) -> Self {
        self.grace_period = grace_period;
        self
    }

    /// The queue the workers take keys from; event handlers add to it.
    pub fn queue(&self) -> &WorkQueue<K> {
        &self.queue
    }

    /// Reconciles keys until `shutdown` completes (or the queue is shut down and empty),
    /// then stops as the module documentation describes and returns.
    pub async fn run<F, Fut, E>(self, reconcile: F, shutdown: impl Future<Output = ()>)
    where
        F: Fn(K) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let reconcile = Arc::new(reconcile);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut workers = JoinSet::new();
        for _ in 0..self.workers {
            workers.spawn(worker(
                self.queue.clone(),
                Arc::clone(&reconcile),
                stop_rx.clone(),
            ));
        }

        tokio::select! {
            () = shutdown => debug!("controller shutting down"),
            () = join_all(&mut workers) => {
                debug!("work queue shut down, workers finished");
                return;
            }
        }

        stop_tx.send_replace(true);
        self.queue.shutdown();
        let finished = tokio::time::timeout(self.grace_period, join_all(&mut workers)).await;
        if finished.is_err() {
            warn!(
                grace_period = ?self.grace_period,
                in_flight = workers.len(),
                "reconciles did not finish within the grace period, dropping them"
            );
            workers.shutdown().await;
        }
    }
}

async fn join_all(workers: &mut JoinSet<()>) {
    while let Some(result) = workers.join_next().await {
        if let Err(err) = result
            && err.is_panic()
        {
            // Reconcile panics are caught in the worker; this is a bug in the runner itself.
            error!(error = %err, "controller worker panicked");
        }
    }
}

async fn worker<K, F, Fut, E>(
    queue: WorkQueue<K>,
    reconcile: Arc<F>,
    mut stop: watch::Receiver<bool>,
) where
    K: Clone + Eq + Hash + fmt::Debug,
    F: Fn(K) -> Fut,
    Fut: Future<Output = Result<Action, E>>,
    E: fmt::Display,
{
    loop {
        if *stop.borrow() {
            return;
        }
        let key = tokio::select! {
            biased;
            _ = stop.changed() => return,
            key = queue.get() => key,
        };
        let Some(key) = key else { return };

        let outcome = AssertUnwindSafe(reconcile(key.clone()))
            .catch_unwind()
            .await;
        match outcome {
            Ok(Ok(Action::Done)) => queue.forget(&key),
            Ok(Ok(Action::RequeueAfter(delay))) => {
                queue.forget(&key);
                queue.add_after(key.clone(), delay);
            }
            Ok(Err(e)) => {
                warn!(key = ?key, error = %e, retries = queue.num_requeues(&key), "reconcile failed");
                queue.add_rate_limited(key.clone());
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                error!(key = ?key, panic = %message, "reconcile panicked");
                queue.add_rate_limited(key.clone());
            }
        }
        queue.done(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::time::Instant;

    type Log = Arc<Mutex<Vec<(&'static str, u128)>>>;

    fn record(log: &Log, key: &'static str, start: Instant) {
        log.lock().unwrap().push((key, start.elapsed().as_millis()));
    }

    #[tokio::test(start_paused = true)]
    async fn reconciles_each_key_and_stops_on_shutdown() {
        let queue = WorkQueue::new();
        queue.add("a");
        queue.add("b");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runner = tokio::spawn({
            let seen = seen.clone();
            Controller::new(queue.clone(), 2).run(
                move |key: &'static str| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().unwrap().push(key);
                        Ok::<_, String>(Action::Done)
                    }
                },
                async move {
                    let _ = stopped.await;
                },
            )
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut keys = seen.lock().unwrap().clone();
        keys.sort();
        assert_eq!(keys, ["a", "b"]);

        stop.send(()).expect("runner alive");
        tokio::time::timeout(Duration::from_secs(1), runner)
            .await
            .expect("runner stopped")
            .expect("runner task");
        assert!(queue.is_shutting_down());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_success_forgets() {
        let queue = WorkQueue::new();
        queue.add("a");
        let start = Instant::now();
        let log: Log = Arc::default();
        let attempts = Arc::new(AtomicUsize::new(0));
        let runner = tokio::spawn({
            let (log, attempts) = (log.clone(), attempts.clone());
            Controller::new(queue.clone(), 1).run(
                move |key| {
                    let (log, attempts) = (log.clone(), attempts.clone());
                    async move {
                        record(&log, key, start);
                        if attempts.fetch_add(1, Ordering::SeqCst) < 3 {
                            Err("not yet")
                        } else {
                            Ok(Action::Done)
                        }
                    }
                },
                std::future::pending(),
            )
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        // 5 ms, 10 ms, 20 ms of backoff between the attempts.
        assert_eq!(
            *log.lock().unwrap(),
            [("a", 0), ("a", 5), ("a", 15), ("a", 35)]
        );
        assert_eq!(queue.num_requeues(&"a"), 0, "success forgets the failures");
        runner.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn requeue_after_comes_back_on_time() {
        let queue = WorkQueue::new();
        queue.add("a");
        let start = Instant::now();
        let log: Log = Arc::default();
        let runner = tokio::spawn({
            let log = log.clone();
            Controller::new(queue.clone(), 1).run(
                move |key| {
                    let log = log.clone();
                    async move {
                        record(&log, key, start);
                        Ok::<_, String>(Action::RequeueAfter(Duration::from_millis(250)))
                    }
                },
                std::future::pending(),
            )
        });
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(*log.lock().unwrap(), [("a", 0), ("a", 250), ("a", 500)]);
        runner.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_reconcile_is_retried_not_fatal() {
        let queue = WorkQueue::new();
        queue.add("boom");
        queue.add("fine");
        let calls = Arc::new(Mutex::new(HashMap::<&str, usize>::new()));
        let runner = tokio::spawn({
            let calls = calls.clone();
            Controller::new(queue.clone(), 1).run(
                move |key: &'static str| {
                    let calls = calls.clone();
                    async move {
                        let n = {
                            let mut calls = calls.lock().unwrap();
                            let n = calls.entry(key).or_default();
                            *n += 1;
                            *n
                        };
                        if key == "boom" && n == 1 {
                            panic!("reconcile bug");
                        }
                        Ok::<_, String>(Action::Done)
                    }
                },
                std::future::pending(),
            )
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.get("boom"), Some(&2), "{calls:?}");
        assert_eq!(calls.get("fine"), Some(&1), "{calls:?}");
        runner.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_lets_in_flight_reconciles_finish_within_the_grace_period() {
        let queue = WorkQueue::new();
        queue.add("slow");
        queue.add("queued");
        let finished = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let start = Instant::now();
        let runner = tokio::spawn({
            let finished = finished.clone();
            Controller::new(queue.clone(), 1)
                .grace_period(Duration::from_secs(5))
                .run(
                    move |key: &'static str| {
                        let finished = finished.clone();
                        async move {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                            finished.lock().unwrap().push(key);
                            Ok::<_, String>(Action::Done)
                        }
                    },
                    async move {
                        let _ = stopped.await;
                    },
                )
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.send(()).expect("runner alive");
        runner.await.expect("runner");
        // The in-flight reconcile finished; the queued key was not started.
        assert_eq!(*finished.lock().unwrap(), ["slow"]);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_drops_reconciles_that_outlive_the_grace_period() {
        let queue = WorkQueue::new();
        queue.add("stuck");
        let start = Instant::now();
        let finished = Arc::new(AtomicUsize::new(0));
        Controller::new(queue.clone(), 3)
            .grace_period(Duration::from_secs(1))
            .run(
                {
                    let finished = finished.clone();
                    move |_key: &'static str| {
                        let finished = finished.clone();
                        async move {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            finished.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, String>(Action::Done)
                        }
                    }
                },
                tokio::time::sleep(Duration::from_secs(2)),
            )
            .await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        assert_eq!(finished.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn run_returns_when_the_queue_is_shut_down_elsewhere() {
        let queue = WorkQueue::<u32>::new();
        queue.add(1);
        queue.shutdown();
        let done = Arc::new(AtomicUsize::new(0));
        let counter = done.clone();
        Controller::new(queue, 2)
            .run(
                move |_key| {
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, String>(Action::Done)
                    }
                },
                std::future::pending(),
            )
            .await;
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }
}
