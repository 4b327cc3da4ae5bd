//! The resourceVersion a controller last wrote per object, so a reconcile never acts on a
//! cached copy older than its own last write.
//!
//! After the Job controller writes a status (say, counting a succeeded pod whose finalizer it
//! then removed), a pod event can trigger the next reconcile before the Job's own watch
//! event arrives. Working from the older status, it would see one success fewer and create
//! a pod too many. Skipping such reconciles is safe: the watch event of the write brings
//! the key back. (Upstream narrows the same window by delaying pod-triggered syncs by a
//! second.) rkube's resourceVersions are the store's revision numbers, so they compare as
//! integers; one that does not parse is never considered stale.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// Last written resourceVersions by object key.
#[derive(Debug, Default)]
pub struct OwnWrites {
    map: Mutex<HashMap<String, u64>>,
}

fn revision(rv: Option<&str>) -> Option<u64> {
    rv?.parse().ok()
}

impl OwnWrites {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that the controller wrote `key` and got back `rv`.
    pub fn wrote(&self, key: &str, rv: Option<&str>) {
        if let Some(rv) = revision(rv) {
            let mut map = self.lock();
            let last = map.entry(key.to_string()).or_default();
            *last = (*last).max(rv);
        }
    }

    /// Whether a cached copy of `key` at `rv` predates the controller's last write.
    pub fn is_stale(&self, key: &str, rv: Option<&str>) -> bool {
        match (self.lock().get(key), revision(rv)) {
            (Some(written), Some(cached)) => cached < *written,
            _ => false,
        }
    }

    /// Forgets `key` (the object is gone).
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_older_than_the_last_write_are_stale() {
        let w = OwnWrites::default();
        assert!(!w.is_stale("ns/a", Some("5")), "nothing written yet");
        w.wrote("ns/a", Some("10"));
        w.wrote("ns/a", Some("8"));
        assert!(w.is_stale("ns/a", Some("9")));
        assert!(!w.is_stale("ns/a", Some("10")));
        assert!(!w.is_stale("ns/a", Some("11")));
        assert!(!w.is_stale("ns/a", Some("opaque")));
        assert!(!w.is_stale("ns/b", Some("1")));
        w.forget("ns/a");
        assert!(!w.is_stale("ns/a", Some("9")));
    }
}
