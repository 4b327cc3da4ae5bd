//! Expectations: what a controller has asked the apiserver to create or delete and not yet
//! seen in its informer cache.
//!
//! A controller that creates 500 pods sees them arrive one watch event at a time; if it
//! reconciled in between from the cache alone it would create them again. So before acting
//! it records how many creations and deletions it expects, the pod handlers count them down
//! as they are observed, and the controller acts only when its expectations are satisfied
//! (or have expired, so a lost event cannot wedge it). This is upstream's
//! `ControllerExpectations`, keyed by the controller's `namespace/name`.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How long expectations hold before the controller acts anyway (upstream: 5 minutes).
pub const EXPECTATIONS_TTL: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone, Copy)]
struct Expected {
    adds: i64,
    dels: i64,
    set_at: Instant,
}

/// Outstanding creations and deletions per controller key.
#[derive(Debug, Default)]
pub struct Expectations {
    map: Mutex<HashMap<String, Expected>>,
}

impl Expectations {
    /// No expectations.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expected>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Expects `adds` creations and `dels` deletions for `key`, replacing what was expected.
    pub fn expect(&self, key: &str, adds: i64, dels: i64) {
        self.lock().insert(
            key.to_string(),
            Expected {
                adds,
                dels,
                set_at: Instant::now(),
            },
        );
    }

    /// Counts `n` creations down (an informer saw them, or they failed and will not come).
    pub fn creation_observed(&self, key: &str, n: i64) {
        if let Some(e) = self.lock().get_mut(key) {
            e.adds -= n;
        }
    }

    /// Counts `n` deletions down.
    pub fn deletion_observed(&self, key: &str, n: i64) {
        if let Some(e) = self.lock().get_mut(key) {
            e.dels -= n;
        }
    }

    /// Whether `key` may act: nothing outstanding, nothing recorded, or expired.
    pub fn satisfied(&self, key: &str) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(e) => (e.adds <= 0 && e.dels <= 0) || e.set_at.elapsed() > EXPECTATIONS_TTL,
        }
    }

    /// How long until `key`'s outstanding expectations expire; `None` when it may act now.
    /// A controller that finds itself unsatisfied requeues for then, so a lost watch event
    /// delays it by the TTL at most instead of wedging it until the next change.
    pub fn expires_in(&self, key: &str) -> Option<Duration> {
        let e = *self.lock().get(key)?;
        if e.adds <= 0 && e.dels <= 0 {
            return None;
        }
        let elapsed = e.set_at.elapsed();
        // The same comparison as `satisfied`; just past the expiry, so the requeued
        // reconcile finds them expired.
        (elapsed <= EXPECTATIONS_TTL).then(|| EXPECTATIONS_TTL - elapsed + Duration::from_millis(1))
    }

    /// Forgets `key` (its controller is gone).
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

/// The earlier of two optional delays.
pub fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn satisfied_when_observed_or_expired() {
        let e = Expectations::new();
        assert!(e.satisfied("ns/rs"));
        e.expect("ns/rs", 2, 1);
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs", 1);
        e.creation_observed("ns/rs", 1);
        assert!(!e.satisfied("ns/rs"), "a deletion is still outstanding");
        e.deletion_observed("ns/rs", 1);
        assert!(e.satisfied("ns/rs"));

        e.expect("ns/other", 5, 0);
        assert_eq!(e.expires_in("ns/rs"), None, "satisfied");
        let left = e.expires_in("ns/other").expect("outstanding");
        assert!(
            left > EXPECTATIONS_TTL - Duration::from_secs(1)
                && left <= EXPECTATIONS_TTL + Duration::from_secs(1)
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        let later = e.expires_in("ns/other").expect("still outstanding");
        assert!(later < left, "the wait shrinks as time passes");
        tokio::time::advance(later).await;
        assert!(
            e.satisfied("ns/other"),
            "a reconcile requeued for then may act"
        );
        assert_eq!(e.expires_in("ns/other"), None);
        e.expect("ns/other", 5, 0);
        tokio::time::advance(EXPECTATIONS_TTL + Duration::from_secs(1)).await;
        assert!(e.satisfied("ns/other"), "expired expectations do not wedge");
        e.forget("ns/other");
        assert!(e.satisfied("ns/other"));
    }
}
