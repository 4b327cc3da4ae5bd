//! The work queue controllers take keys from, with client-go's semantics.
//!
//! - An item is queued at most once, however often it is added before a worker takes it.
//! - An item a worker holds (between [`WorkQueue::get`] and [`WorkQueue::done`]) is never
//!   handed to another worker; adds meanwhile mark it dirty, and `done` queues it again. So a
//!   reconcile never runs twice at once for one key, and never misses a change.
//! - [`WorkQueue::add_after`] queues an item later; [`WorkQueue::add_rate_limited`] does so
//!   with a per-item delay that doubles on each failure until [`WorkQueue::forget`].
//! - [`WorkQueue::shutdown`] refuses new items; workers still get what was queued, then
//!   `None`.
//!
//! Delayed items need no timer task: whoever waits in `get` sleeps until the earliest one is
//! due and moves the due ones into the queue. Time is `tokio::time`, so tests can pause it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// First delay of [`WorkQueue::add_rate_limited`], as client-go's default controller limiter.
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(5);
/// Longest delay of [`WorkQueue::add_rate_limited`], as client-go's default controller limiter.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(1000);

/// A delay so long it means "not in this process's lifetime"; bounds `Instant` arithmetic.
const FAR_FUTURE: Duration = Duration::from_secs(365 * 24 * 3600);

/// A deduplicating, rate-limited queue of keys; clones share one queue.
pub struct WorkQueue<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for WorkQueue<T> {
    fn clone(&self) -> Self {
        WorkQueue {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<T> {
    state: Mutex<State<T>>,
    /// Wakes a getter when an item is queued, all of them on shutdown or a new earliest timer.
    ready: Notify,
    /// Wakes `shutdown_with_drain` when the last held item is done.
    drained: Notify,
    base_delay: Duration,
    max_delay: Duration,
}

struct State<T> {
    /// Items ready for a worker, oldest first.
    queue: VecDeque<T>,
    /// Items that need processing: queued, or held and changed since they were taken.
    dirty: HashSet<T>,
    /// Items a worker holds.
    processing: HashSet<T>,
    /// Items to be added later, with the time they are due.
    waiting: HashMap<T, Instant>,
    /// Due times of `waiting`, earliest on top, with a sequence number into `timer_items`.
    /// Entries whose time no longer matches `waiting` are stale and skipped.
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_items: HashMap<u64, T>,
    next_timer: u64,
    /// Failures in a row per item, for `add_rate_limited`.
    failures: HashMap<T, u32>,
    shutting_down: bool,
}

impl<T: Clone + Eq + Hash> Default for WorkQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone + Eq + Hash> WorkQueue<T> {
    /// An empty queue with client-go's default per-item backoff (5 ms doubling to 1000 s).
    pub fn new() -> Self {
        Self::with_backoff(DEFAULT_BASE_DELAY, DEFAULT_MAX_DELAY)
    }

    /// An empty queue whose [`add_rate_limited`](Self::add_rate_limited) waits `base`, then
    /// twice as long after each further failure, at most `max`.
    pub fn with_backoff(base: Duration, max: Duration) -> Self {
        WorkQueue {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    dirty: HashSet::new(),
                    processing: HashSet::new(),
                    waiting: HashMap::new(),
                    timers: BinaryHeap::new(),
                    timer_items: HashMap::new(),
                    next_timer: 0,
                    failures: HashMap::new(),
                    shutting_down: false,
                }),
                ready: Notify::new(),
                drained: Notify::new(),
                base_delay: base,
                max_delay: max,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Every critical section leaves the state consistent, so a poisoned lock is usable.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `item` unless it is queued already; if a worker holds it, it is queued again
    /// when that worker is done. Ignored after shutdown.
    pub fn add(&self, item: T) {
        let queued = self.lock().add(item);
        if queued {
            self.inner.ready.notify_one();
        }
    }

    /// Adds `item` once `delay` has passed. An item already waiting keeps the earlier time.
    pub fn add_after(&self, item: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(item);
        }
        let now = Instant::now();
        let due = now + delay.min(FAR_FUTURE);
        let earliest_moved = {
            let mut state = self.lock();
            if state.shutting_down {
                return;
            }
            if state.waiting.get(&item).is_some_and(|&at| at <= due) {
                return;
            }
            let earliest = state.next_due();
            state.schedule(item, due);
            earliest.is_none_or(|at| due < at)
        };
        if earliest_moved {
            // Getters sleep until the earliest due time; let them look again.
            self.inner.ready.notify_waiters();
        }
    }

    /// Adds `item` after its backoff: the base delay after the first failure, doubling with
    /// each further one, up to the maximum, until [`forget`](Self::forget).
    pub fn add_rate_limited(&self, item: T) {
        let delay = {
            let mut state = self.lock();
            if state.shutting_down {
                return;
            }
            let failures = state.failures.entry(item.clone()).or_insert(0);
            let delay = backoff_delay(self.inner.base_delay, self.inner.max_delay, *failures);
            *failures = failures.saturating_add(1);
            delay
        };
        self.add_after(item, delay);
    }

    /// Clears the failures of `item`: its next rate-limited add waits the base delay again.
    pub fn forget(&self, item: &T) {
        self.lock().failures.remove(item);
    }

    /// How many rate-limited adds `item` had since it was last forgotten.
    pub fn num_requeues(&self, item: &T) -> u32 {
        self.lock().failures.get(item).copied().unwrap_or(0)
    }

    /// Waits for an item and hands it to the caller, who must call [`done`](Self::done) with
    /// it when finished. `None` once the queue is shut down and empty.
    pub async fn get(&self) -> Option<T> {
        loop {
            // Registered before looking, so an add between the look and the wait wakes us.
            let mut notified = pin!(self.inner.ready.notified());
            notified.as_mut().enable();
            let due = {
                let mut state = self.lock();
                state.promote_due(Instant::now());
                if let Some(item) = state.queue.pop_front() {
                    state.dirty.remove(&item);
                    state.processing.insert(item.clone());
                    let more = !state.queue.is_empty();
                    drop(state);
                    if more {
                        // Pass the baton: several items may have become due at once.
                        self.inner.ready.notify_one();
                    }
                    return Some(item);
                }
                if state.shutting_down {
                    return None;
                }
                state.next_due()
            };
            match due {
                Some(at) => {
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks `item` finished; if it was added while held, it is queued again.
    pub fn done(&self, item: &T) {
        let (requeued, drained) = {
            let mut state = self.lock();
            if !state.processing.remove(item) {
                return;
            }
            let requeued = state.dirty.contains(item);
            if requeued {
                state.queue.push_back(item.clone());
            }
            (
                requeued,
                state.processing.is_empty() && state.queue.is_empty(),
            )
        };
        if requeued {
            self.inner.ready.notify_one();
        }
        if drained {
            self.inner.drained.notify_waiters();
        }
    }

    /// Items ready for a worker (not those held or waiting for their time).
    pub fn len(&self) -> usize {
        let mut state = self.lock();
        state.promote_due(Instant::now());
        state.queue.len()
    }

    /// Whether no item is ready for a worker.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses new items and drops those waiting for their time; workers still get the
    /// queued ones, then `None`.
    pub fn shutdown(&self) {
        {
            let mut state = self.lock();
            state.shutting_down = true;
            state.waiting.clear();
            state.timers.clear();
            state.timer_items.clear();
        }
        self.inner.ready.notify_waiters();
        self.inner.drained.notify_waiters();
    }

    /// [`shutdown`](Self::shutdown), then waits until every queued item has been taken and
    /// every held one is done. Needs running workers; bound it with a timeout.
    pub async fn shutdown_with_drain(&self) {
        self.shutdown();
        loop {
            let mut notified = pin!(self.inner.drained.notified());
            notified.as_mut().enable();
            {
                let state = self.lock();
                if state.processing.is_empty() && state.queue.is_empty() {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.lock().shutting_down
    }
}

impl<T: Clone + Eq + Hash> State<T> {
    /// Queues `item` as `WorkQueue::add` describes; true if it entered the queue.
    fn add(&mut self, item: T) -> bool {
        if self.shutting_down || self.dirty.contains(&item) {
            return false;
        }
        self.dirty.insert(item.clone());
        if self.processing.contains(&item) {
            return false;
        }
        self.queue.push_back(item);
        true
    }

    fn schedule(&mut self, item: T, due: Instant) {
        let seq = self.next_timer;
        self.next_timer = self.next_timer.wrapping_add(1);
        self.timers.push(Reverse((due, seq)));
        self.timer_items.insert(seq, item.clone());
        self.waiting.insert(item, due);
    }

    /// The earliest time a waiting item is due.
    fn next_due(&mut self) -> Option<Instant> {
        // Stale entries on top would make getters wake for nothing; drop them first.
        while let Some(&Reverse((due, seq))) = self.timers.peek() {
            let live = self
                .timer_items
                .get(&seq)
                .is_some_and(|item| self.waiting.get(item) == Some(&due));
            if live {
                return Some(due);
            }
            self.timers.pop();
            self.timer_items.remove(&seq);
        }
        None
    }

    /// Moves the waiting items due by `now` into the queue.
    fn promote_due(&mut self, now: Instant) {
        while let Some(due) = self.next_due() {
            if due > now {
                break;
            }
            let Some(Reverse((_, seq))) = self.timers.pop() else {
                break;
            };
            if let Some(item) = self.timer_items.remove(&seq) {
                self.waiting.remove(&item);
                self.add(item);
            }
        }
    }
}

/// `base * 2^failures`, at most `max`, without overflow.
fn backoff_delay(base: Duration, max: Duration, failures: u32) -> Duration {
    1u32.checked_shl(failures)
        .and_then(|factor| base.checked_mul(factor))
        .map_or(max, |delay| delay.min(max))
}

#[cfg(test)]
mod tests;
