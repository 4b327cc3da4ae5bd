//! The CronJob controller's decisions about time and history, as plain functions: which
//! schedule time is due and not yet run, when to look again, what the Job of a run is
//! called, and which finished Jobs the history limits delete. These follow upstream's
//! `pkg/controller/cronjob/utils.go`.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::Job;

use super::schedule::{Schedule, minus_seconds};

/// Padding added to every wake-up so a slightly early timer still finds the time due
/// (upstream's `nextScheduleDelta`).
pub const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);

/// More missed runs than this and the controller says so (event `TooManyMissedTimes`).
pub const TOO_MANY_MISSED: i64 = 100;

/// How many runs were missed since the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// None, or exactly the one that is due.
    None,
    /// A few.
    Few,
    /// More than [`TOO_MANY_MISSED`].
    Many,
}

/// A schedule whose times cannot be worked out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// The schedule never fires (e.g. `0 0 30 2 *`).
    #[error("the schedule never fires")]
    NeverFires,
    /// Two consecutive times are less than a second apart.
    #[error("time difference between two schedules is less than 1 second")]
    TooClose,
}

/// The most recent due time, and what it was counted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unmet {
    /// The last schedule time (or the CronJob's creation, or the starting deadline).
    pub earliest: Timestamp,
    /// The latest schedule time after `earliest` that is not after now, if any.
    pub most_recent: Option<Timestamp>,
    /// How many were missed.
    pub missed: Missed,
}

/// A CronJob's schedule and the times it is counted from.
#[derive(Debug, Clone, Copy)]
pub struct Times<'a> {
    /// The parsed `spec.schedule`.
    pub schedule: &'a Schedule,
    /// `spec.timeZone` (UTC when unset).
    pub tz: &'a TimeZone,
    /// `metadata.creationTimestamp`.
    pub created: Timestamp,
    /// `status.lastScheduleTime`.
    pub last_schedule: Option<Timestamp>,
    /// `spec.startingDeadlineSeconds`.
    pub starting_deadline_seconds: Option<i64>,
}

impl Times<'_> {
    fn next(&self, after: Timestamp) -> Result<Timestamp, TimeError> {
        self.schedule
            .next_after(after, self.tz)
            .ok_or(TimeError::NeverFires)
    }

    /// The most recent schedule time not after `now` that has not run yet (upstream's
    /// `mostRecentScheduleTime`). With `include_deadline`, times older than the starting
    /// deadline are not considered at all.
    pub fn most_recent(&self, now: Timestamp, include_deadline: bool) -> Result<Unmet, TimeError> {
        let mut earliest = self.last_schedule.unwrap_or(self.created);
        if include_deadline && let Some(deadline) = self.starting_deadline_seconds {
            let cutoff = minus_seconds(now, deadline);
            if cutoff > earliest {
                earliest = cutoff;
            }
        }
        let unmet = |most_recent, missed| Unmet {
            earliest,
            most_recent,
            missed,
        };
        let t1 = self.next(earliest)?;
        if now < t1 {
            return Ok(unmet(None, Missed::None));
        }
        let t2 = self.next(t1)?;
        if now < t2 {
            return Ok(unmet(Some(t1), Missed::None));
        }
        // Count the missed times roughly by the interval between the first two, then walk
        // the schedule from just before the estimate, as upstream does, so a decades-old
        // last schedule time costs no more than a recent one.
        let between = (t2.duration_since(t1).as_millis() + 500).div_euclid(1000);
        let between = i64::try_from(between).unwrap_or(i64::MAX);
        if between < 1 {
            return Err(TimeError::TooClose);
        }
        let elapsed = now.duration_since(t1).as_secs();
        let missed_count = elapsed / between + 1;
        let back = (missed_count - 2).saturating_mul(between);
        let potential = t1
            .checked_add(SignedDuration::from_secs(back))
            .unwrap_or(t1);
        let mut most_recent = None;
        let mut t = self.next(potential)?;
        while t <= now {
            most_recent = Some(t);
            t = self.next(t)?;
        }
        let missed = if missed_count > TOO_MANY_MISSED {
            Missed::Many
        } else {
            Missed::Few
        };
        Ok(unmet(most_recent, missed))
    }

    /// The schedule time to run now, if any (upstream's `nextScheduleTime`).
    pub fn due(&self, now: Timestamp) -> Result<(Option<Timestamp>, Missed), TimeError> {
        let unmet = self.most_recent(now, true)?;
        Ok((unmet.most_recent.filter(|t| *t <= now), unmet.missed))
    }

    /// How long until the next schedule time after the last one due (upstream's
    /// `nextScheduleTimeDuration`); `None` when the schedule never fires again.
    pub fn requeue_after(&self, now: Timestamp) -> Option<Duration> {
        let base = match self.most_recent(now, false) {
            Err(_) => now,
            Ok(Unmet {
                most_recent: Some(t),
                ..
            }) => t,
            Ok(Unmet { earliest, .. }) => earliest,
        };
        let next = self.schedule.next_after(base, self.tz)?;
        let wait = Duration::try_from(next.duration_since(now)).unwrap_or(Duration::ZERO);
        Some(wait + NEXT_SCHEDULE_DELTA)
    }
}

/// Whether a run scheduled at `scheduled` is past its starting deadline at `now`.
pub fn too_late(
    scheduled: Timestamp,
    starting_deadline_seconds: Option<i64>,
    now: Timestamp,
) -> bool {
    starting_deadline_seconds.is_some_and(|d| {
        scheduled
            .checked_add(SignedDuration::from_secs(d))
            .is_ok_and(|end| end < now)
    })
}

/// The name of the Job of the run at `scheduled`: the CronJob's name and the minutes since
/// the epoch, so one schedule time can never make two Jobs.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// The type of a Job's finished condition: `Complete` or `Failed`, when true.
pub fn finished_type(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

/// The Jobs past `limit` to delete, oldest first (by start time, unstarted last, then by
/// name, as upstream's `byJobStartTime`).
pub fn over_limit<J: Borrow<Job>>(jobs: &[J], limit: i32) -> Vec<&Job> {
    let excess = jobs
        .len()
        .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
    if excess == 0 {
        return Vec::new();
    }
    let mut sorted: Vec<&Job> = jobs.iter().map(Borrow::borrow).collect();
    sorted.sort_by(|a, b| by_start_time(a, b));
    sorted.truncate(excess);
    sorted
}

fn by_start_time(a: &Job, b: &Job) -> Ordering {
    let start = |j: &Job| {
        j.status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0)
    };
    let name = |j: &Job| j.metadata.name.clone().unwrap_or_default();
    match (start(a), start(b)) {
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (sa, sb) if sa == sb => name(a).cmp(&name(b)),
        (sa, sb) => sa.cmp(&sb),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    static UTC: TimeZone = TimeZone::UTC;

    fn times<'a>(schedule: &'a Schedule, last: Option<&str>, deadline: Option<i64>) -> Times<'a> {
        Times {
            schedule,
            tz: &UTC,
            created: ts("2026-01-01T00:00:30Z"),
            last_schedule: last.map(ts),
            starting_deadline_seconds: deadline,
        }
    }

    #[test]
    fn nothing_due_before_the_first_time() {
        let s = Schedule::parse("*/5 * * * *").unwrap();
        let t = times(&s, None, None);
        assert_eq!(
            t.due(ts("2026-01-01T00:04:59Z")).unwrap(),
            (None, Missed::None)
        );
        assert_eq!(
            t.requeue_after(ts("2026-01-01T00:04:00Z")),
            Some(Duration::from_secs(60) + NEXT_SCHEDULE_DELTA)
        );
    }

    #[test]
    fn the_most_recent_missed_time_is_due() {
        let s = Schedule::parse("*/5 * * * *").unwrap();
        let t = times(&s, None, None);
        assert_eq!(
            t.due(ts("2026-01-01T00:05:00Z")).unwrap(),
            (Some(ts("2026-01-01T00:05:00Z")), Missed::None)
        );
        // Three runs missed: only the latest is due.
        assert_eq!(
            t.due(ts("2026-01-01T00:17:00Z")).unwrap(),
            (Some(ts("2026-01-01T00:15:00Z")), Missed::Few)
        );
        // After it ran, the next wake-up is the following time.
        let ran = times(&s, Some("2026-01-01T00:15:00Z"), None);
        assert_eq!(
            ran.due(ts("2026-01-01T00:17:00Z")).unwrap(),
            (None, Missed::None)
        );
        assert_eq!(
            ran.requeue_after(ts("2026-01-01T00:17:00Z")),
            Some(Duration::from_secs(180) + NEXT_SCHEDULE_DELTA)
        );
    }

    #[test]
    fn too_many_missed_times_are_reported_and_the_deadline_bounds_them() {
        let s = Schedule::parse("* * * * *").unwrap();
        let t = times(&s, Some("2026-01-01T00:00:00Z"), None);
        let now = ts("2026-01-02T00:00:30Z");
        assert_eq!(
            t.due(now).unwrap(),
            (Some(ts("2026-01-02T00:00:00Z")), Missed::Many)
        );
        // A starting deadline of 5 minutes means only the last 5 minutes count.
        let bounded = times(&s, Some("2026-01-01T00:00:00Z"), Some(300));
        assert_eq!(
            bounded.due(now).unwrap(),
            (Some(ts("2026-01-02T00:00:00Z")), Missed::Few)
        );
        // With a deadline shorter than the time since the last run, nothing is due.
        let hourly = Schedule::parse("@hourly").unwrap();
        let late = times(&hourly, Some("2026-01-01T00:00:00Z"), Some(60));
        assert_eq!(
            late.due(ts("2026-01-01T01:05:00Z")).unwrap(),
            (None, Missed::None)
        );
        assert!(too_late(
            ts("2026-01-01T01:00:00Z"),
            Some(60),
            ts("2026-01-01T01:05:00Z")
        ));
        assert!(!too_late(
            ts("2026-01-01T01:00:00Z"),
            Some(600),
            ts("2026-01-01T01:05:00Z")
        ));
        assert!(!too_late(
            ts("2026-01-01T01:00:00Z"),
            None,
            ts("2026-01-01T01:05:00Z")
        ));
    }

    #[test]
    fn irregular_schedules_find_the_latest_time() {
        // Weekdays at 09:00; 2026-01-05 is a Monday.
        let s = Schedule::parse("0 9 * * 1-5").unwrap();
        let t = times(&s, Some("2026-01-05T09:00:00Z"), None);
        assert_eq!(
            t.due(ts("2026-01-12T10:00:00Z")).unwrap().0,
            Some(ts("2026-01-12T09:00:00Z"))
        );
        let monthly = Schedule::parse("0 9 1 * *").unwrap();
        let m = times(&monthly, Some("2026-01-01T09:00:00Z"), None);
        assert_eq!(
            m.due(ts("2026-04-01T10:00:00Z")).unwrap().0,
            Some(ts("2026-04-01T09:00:00Z"))
        );
    }

    #[test]
    fn impossible_schedules_are_errors() {
        let s = Schedule::parse("0 0 31 2 *").unwrap();
        let t = times(&s, None, None);
        assert_eq!(
            t.due(ts("2026-06-01T00:00:00Z")),
            Err(TimeError::NeverFires)
        );
        assert_eq!(t.requeue_after(ts("2026-06-01T00:00:00Z")), None);
    }

    #[test]
    fn job_names_count_minutes_since_the_epoch() {
        assert_eq!(
            job_name("hello", ts("2026-01-01T00:05:00Z")),
            "hello-29453765"
        );
        assert_eq!(job_name("hello", ts("1970-01-01T01:00:00Z")), "hello-60");
    }

    fn job(name: &str, start: Option<&str>, finished: Option<&str>) -> Job {
        let mut j = Job::default();
        j.metadata.name = Some(name.into());
        j.status = Some(JobStatus {
            start_time: start.map(|s| Time(ts(s))),
            conditions: finished.map(|t| {
                vec![JobCondition {
                    type_: t.into(),
                    status: "True".into(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        j
    }

    #[test]
    fn history_limits_delete_the_oldest() {
        let jobs = vec![
            job("c", Some("2026-01-01T00:03:00Z"), Some("Complete")),
            job("unstarted", None, Some("Complete")),
            job("a", Some("2026-01-01T00:01:00Z"), Some("Complete")),
            job("b", Some("2026-01-01T00:01:00Z"), Some("Complete")),
        ];
        let names = |limit| -> Vec<String> {
            over_limit(&jobs, limit)
                .iter()
                .map(|j| j.metadata.name.clone().unwrap())
                .collect()
        };
        assert_eq!(names(4), Vec::<String>::new());
        assert_eq!(names(2), ["a", "b"]);
        assert_eq!(names(0), ["a", "b", "c", "unstarted"]);
        assert_eq!(finished_type(&jobs[0]), Some("Complete"));
        assert_eq!(finished_type(&job("x", None, None)), None);
    }
}
