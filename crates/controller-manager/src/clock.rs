//! The controllers' wall clock: the system's, or a manual one that tests move.
//!
//! Controllers that act on wall-clock time (CronJob schedules, node heartbeats, Job
//! deadlines, minReadySeconds, rollout deadlines) read [`Clock::now`] instead of the system
//! time, and those that wait for a moment also wake up on the moves of a
//! [`Clock::subscribe`] receiver, so a test can jump a manual clock forward and see the effect
//! at once instead of waiting.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

/// A wall clock.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<Manual>>,
}

#[derive(Debug)]
struct Manual {
    now: Mutex<Timestamp>,
    moved: watch::Sender<u64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock { manual: None }
    }

    /// A clock that stands at `start` until [`Clock::advance`] moves it.
    pub fn manual(start: Timestamp) -> Self {
        Clock {
            manual: Some(Arc::new(Manual {
                now: Mutex::new(start),
                moved: watch::Sender::new(0),
            })),
        }
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        match &self.manual {
            None => Timestamp::now(),
            Some(m) => *m.now.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Moves a manual clock forward by `by` (does nothing to the system clock).
    pub fn advance(&self, by: Duration) {
        if let Some(m) = &self.manual {
            {
                let mut now = m.now.lock().unwrap_or_else(PoisonError::into_inner);
                *now = now
                    .checked_add(SignedDuration::try_from(by).unwrap_or(SignedDuration::MAX))
                    .unwrap_or(Timestamp::MAX);
            }
            m.moved.send_modify(|n| *n += 1);
        }
    }

    /// A receiver of the moves of a manual clock from now on. A move made while its owner
    /// is busy is kept until the next [`Moves::next`], so none is missed between two waits.
    pub fn subscribe(&self) -> Moves {
        Moves {
            rx: self.manual.as_ref().map(|m| m.moved.subscribe()),
        }
    }

    /// How long from now until `at` (zero when it has passed).
    pub fn until(&self, at: Timestamp) -> Duration {
        let left = at.duration_since(self.now());
        Duration::try_from(left).unwrap_or(Duration::ZERO)
    }

    /// How long ago `at` was (zero when it is in the future).
    pub fn since(&self, at: Timestamp) -> Duration {
        let ago = self.now().duration_since(at);
        Duration::try_from(ago).unwrap_or(Duration::ZERO)
    }
}

/// The moves of a manual clock, from [`Clock::subscribe`].
#[derive(Debug)]
pub struct Moves {
    rx: Option<watch::Receiver<u64>>,
}

impl Moves {
    /// Completes when the clock has moved since the last call (or since the subscription);
    /// never for the system clock.
    pub async fn next(&mut self) {
        let moved = match &mut self.rx {
            Some(rx) => rx.changed().await.is_ok(),
            None => false,
        };
        if !moved {
            // The system clock, or a manual one gone: nothing will ever move.
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_moves_only_when_told_and_says_so() {
        let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let clock = Clock::manual(start);
        assert_eq!(clock.now(), start);
        let mut moves = clock.subscribe();
        // A move while nobody waits is still seen by the next wait.
        clock.advance(Duration::from_secs(30));
        moves.next().await;
        let waiter = tokio::spawn(async move {
            moves.next().await;
            moves
        });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(60));
        let mut moves = waiter.await.unwrap();
        assert_eq!(clock.since(start), Duration::from_secs(90));
        assert_eq!(clock.until(start), Duration::ZERO);
        let no_move = tokio::time::timeout(Duration::from_millis(1), moves.next()).await;
        assert!(no_move.is_err(), "every move was consumed");
    }
}
