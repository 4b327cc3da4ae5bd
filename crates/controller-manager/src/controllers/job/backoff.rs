//! The delay before a Job replaces failed pods (upstream's `backoff_utils.go`): the base
//! (10 s) after the first failure since the last success, doubling with each further one, at
//! most the maximum, counted from when the last failed pod finished. A success resets it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

/// What the controller remembers of a Job's failures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackoffRecord {
    /// Pods failed since the last one succeeded.
    pub failures_after_last_success: u32,
    /// When the last of them finished.
    pub last_failure_time: Option<Timestamp>,
}

impl BackoffRecord {
    /// The record after newly finished pods: failures add up until a pod succeeds; only the
    /// failures that finished after the last success count.
    pub fn after(self, new_succeeded: &[&Pod], new_failed: &[&Pod]) -> Self {
        let mut failed: Vec<Timestamp> = new_failed.iter().map(|p| finished_time(p)).collect();
        failed.sort_unstable();
        let last_success = new_succeeded.iter().map(|p| finished_time(p)).max();
        match last_success {
            None => match failed.last() {
                None => self,
                Some(last) => BackoffRecord {
                    failures_after_last_success: self.failures_after_last_success
                        + u32::try_from(failed.len()).unwrap_or(u32::MAX),
                    last_failure_time: Some(*last),
                },
            },
            Some(success) => {
                let after: Vec<Timestamp> = failed.into_iter().filter(|t| *t > success).collect();
                BackoffRecord {
                    failures_after_last_success: u32::try_from(after.len()).unwrap_or(u32::MAX),
                    last_failure_time: after.last().copied(),
                }
            }
        }
    }

    /// How long to wait at `now` before creating pods again: `base` doubled for each failure
    /// after the first, at most `max`, minus the time since the last failure.
    pub fn remaining(&self, now: Timestamp, base: Duration, max: Duration) -> Duration {
        let (n, Some(last)) = (self.failures_after_last_success, self.last_failure_time) else {
            return Duration::ZERO;
        };
        if n == 0 {
            return Duration::ZERO;
        }
        let mut delay = base;
        for _ in 1..n {
            delay = delay.saturating_mul(2);
            if delay >= max {
                delay = max;
                break;
            }
        }
        let delay = delay.min(max);
        let elapsed = Duration::try_from(now.duration_since(last)).unwrap_or(Duration::ZERO);
        delay.saturating_sub(elapsed)
    }
}

/// When a pod finished: its containers' last termination, else when it stopped being
/// ready, else its deletion, else its creation (upstream's `getFinishedTime`).
pub fn finished_time(pod: &Pod) -> Timestamp {
    let status = pod.status.as_ref();
    let containers = status
        .into_iter()
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    if let Some(t) = containers {
        return t;
    }
    let not_ready = status
        .and_then(|s| s.conditions.as_deref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready" && c.status == "False"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0);
    not_ready
        .or(pod.metadata.deletion_timestamp.as_ref().map(|t| t.0))
        .or(pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Backoff records by Job key.
#[derive(Debug, Default)]
pub struct BackoffStore {
    records: Mutex<HashMap<String, BackoffRecord>>,
}

impl BackoffStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BackoffRecord>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The record of `key` (empty when none).
    pub fn get(&self, key: &str) -> BackoffRecord {
        self.lock().get(key).copied().unwrap_or_default()
    }

    /// Stores the record of `key`.
    pub fn set(&self, key: &str, record: BackoffRecord) {
        self.lock().insert(key.to_string(), record);
    }

    /// Forgets `key` (its Job finished or is gone).
    pub fn remove(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const BASE: Duration = Duration::from_secs(10);
    const MAX: Duration = Duration::from_secs(360);

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn finished_at(at: &str) -> Pod {
        Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            finished_at: Some(Time(ts(at))),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn record(n: u32, last: &str) -> BackoffRecord {
        BackoffRecord {
            failures_after_last_success: n,
            last_failure_time: Some(ts(last)),
        }
    }

    #[test]
    fn delay_doubles_from_ten_seconds_up_to_six_minutes() {
        let last = "2026-01-01T00:00:00Z";
        let now = ts(last);
        let delays: Vec<u64> = (0..=8)
            .map(|n| record(n, last).remaining(now, BASE, MAX).as_secs())
            .collect();
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 320, 360, 360]);
        // Counted from the last failure.
        assert_eq!(
            record(2, last).remaining(ts("2026-01-01T00:00:15Z"), BASE, MAX),
            Duration::from_secs(5)
        );
        assert_eq!(
            record(2, last).remaining(ts("2026-01-01T00:01:00Z"), BASE, MAX),
            Duration::ZERO
        );
        assert_eq!(
            BackoffRecord::default().remaining(now, BASE, MAX),
            Duration::ZERO
        );
    }

    #[test]
    fn failures_add_up_until_a_success() {
        let f1 = finished_at("2026-01-01T00:00:01Z");
        let f2 = finished_at("2026-01-01T00:00:05Z");
        let s = finished_at("2026-01-01T00:00:03Z");
        let r = BackoffRecord::default().after(&[], &[&f2, &f1]);
        assert_eq!(r, record(2, "2026-01-01T00:00:05Z"));
        let r = r.after(&[], &[&f1]);
        assert_eq!(r.failures_after_last_success, 3);
        // Only the failure after the success counts.
        let r = r.after(&[&s], &[&f1, &f2]);
        assert_eq!(r, record(1, "2026-01-01T00:00:05Z"));
        assert_eq!(r.after(&[&s], &[]), BackoffRecord::default());
        assert_eq!(r.after(&[], &[]), r);
    }

    #[test]
    fn finish_time_falls_back_to_deletion_then_creation() {
        let mut p = Pod::default();
        p.metadata.creation_timestamp = Some(Time(ts("2026-01-01T00:00:00Z")));
        assert_eq!(finished_time(&p), ts("2026-01-01T00:00:00Z"));
        p.metadata.deletion_timestamp = Some(Time(ts("2026-01-01T00:01:00Z")));
        assert_eq!(finished_time(&p), ts("2026-01-01T00:01:00Z"));
        assert_eq!(
            finished_time(&finished_at("2026-01-01T00:02:00Z")),
            ts("2026-01-01T00:02:00Z")
        );
    }
}
