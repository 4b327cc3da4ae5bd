//! Expectations that remember which pods a ReplicaSet deleted (upstream's
//! `UIDTrackingControllerExpectations`).
//!
//! A pod deleted gracefully is seen twice: once when it gets its `deletionTimestamp`, once
//! when it is gone. Both mean "the deletion happened", but it must count once. So the
//! deletions a ReplicaSet expects are the UIDs of the pods it deleted, and an observation
//! counts only for a UID still in that set. Creations are plain counts: a created pod is
//! seen as `Added` exactly once.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use crate::expectations::Expectations;

/// Outstanding creations (counted) and deletions (by pod UID) per ReplicaSet key.
#[derive(Debug, Default)]
pub struct Tracking {
    counts: Expectations,
    deletions: Mutex<HashMap<String, HashSet<String>>>,
}

impl Tracking {
    fn deletions(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.deletions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Expects `n` pod creations for `key`, replacing what was expected.
    pub fn expect_creations(&self, key: &str, n: usize) {
        self.deletions().remove(key);
        self.counts.expect(key, to_i64(n), 0);
    }

    /// Expects the pods with `uids` to be deleted for `key`, replacing what was expected.
    pub fn expect_deletions(&self, key: &str, uids: impl IntoIterator<Item = String>) {
        let uids: HashSet<String> = uids.into_iter().collect();
        let n = to_i64(uids.len());
        self.deletions().insert(key.to_string(), uids);
        self.counts.expect(key, 0, n);
    }

    /// Counts `n` creations down: seen in the cache, or failed and never coming.
    pub fn creation_observed(&self, key: &str, n: usize) {
        self.counts.creation_observed(key, to_i64(n));
    }

    /// Counts the deletion of the pod with `uid` down, once, if `key` expected it.
    pub fn deletion_observed(&self, key: &str, uid: &str) {
        let mut deletions = self.deletions();
        if let Some(uids) = deletions.get_mut(key)
            && uids.remove(uid)
        {
            self.counts.deletion_observed(key, 1);
        }
    }

    /// Whether `key` may create or delete: nothing outstanding, or expired.
    pub fn satisfied(&self, key: &str) -> bool {
        self.counts.satisfied(key)
    }

    /// How long until `key`'s outstanding expectations expire; `None` when it may act now.
    pub fn expires_in(&self, key: &str) -> Option<std::time::Duration> {
        self.counts.expires_in(key)
    }

    /// Forgets `key` (its ReplicaSet is gone).
    pub fn forget(&self, key: &str) {
        self.deletions().remove(key);
        self.counts.forget(key);
    }
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deletion_counts_once_however_often_it_is_seen() {
        let t = Tracking::default();
        t.expect_deletions("ns/rs", ["a".to_string(), "b".to_string()]);
        assert!(!t.satisfied("ns/rs"));
        t.deletion_observed("ns/rs", "a"); // deletionTimestamp set
        t.deletion_observed("ns/rs", "a"); // then gone
        t.deletion_observed("ns/rs", "zzz"); // not one of ours
        assert!(!t.satisfied("ns/rs"), "b is still outstanding");
        t.deletion_observed("ns/rs", "b");
        assert!(t.satisfied("ns/rs"));
    }

    #[test]
    fn creations_count_down_and_forgetting_clears() {
        let t = Tracking::default();
        t.expect_creations("ns/rs", 3);
        t.creation_observed("ns/rs", 2);
        assert!(!t.satisfied("ns/rs"));
        t.creation_observed("ns/rs", 1);
        assert!(t.satisfied("ns/rs"));
        t.expect_deletions("ns/rs", ["a".to_string()]);
        t.forget("ns/rs");
        assert!(t.satisfied("ns/rs"));
        t.deletion_observed("ns/rs", "a");
        assert!(t.satisfied("ns/rs"));
    }
}
