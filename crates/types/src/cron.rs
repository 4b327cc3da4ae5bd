//! Cron schedules as CronJobs write them, and the next time one fires: the apiserver
//! validates `spec.schedule` with it, and the CronJob controller plans runs with it.
//!
//! The syntax is upstream's (`robfig/cron`'s `ParseStandard`): five fields — minute (0-59),
//! hour (0-23), day of month (1-31), month (1-12 or `jan`-`dec`) and day of week (0-6 or
//! `sun`-`sat`, Sunday is 0) — each a comma-separated list of `*` (or `?`), a value, a
//! range `a-b`, optionally stepped (`*/15`, `1-30/2`, and `5/10` meaning `5-max/10`); the
//! descriptors `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`) and
//! `@hourly`; and `@every <duration>` (`@every 1h30m`). Names and descriptors are
//! case-insensitive. As in cron, when both day fields are restricted a day matches if
//! either does; when one of them is `*`, both must.
//!
//! A `CRON_TZ=` or `TZ=` prefix is refused: Kubernetes rejects it since 1.27 in favour of
//! `spec.timeZone`, which [`Schedule::next_after`] takes as a [`TimeZone`].

use std::fmt;
use std::time::Duration;

use jiff::civil;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

/// How far ahead a schedule is searched before it is declared never to fire (`robfig/cron`
/// gives up after five years too).
const SEARCH_YEARS: i16 = 5;

/// Marks a field written as `*` (or `?`, or `*/1`): the day-of-month/day-of-week rule
/// depends on it.
const STAR: u64 = 1 << 63;

/// A schedule that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Nothing but blanks.
    #[error("empty schedule")]
    Empty,
    /// Not five fields.
    #[error(
        "expected 5 fields (minute hour day-of-month month day-of-week), found {found} in {schedule:?}"
    )]
    FieldCount {
        /// How many fields there were.
        found: usize,
        /// The schedule.
        schedule: String,
    },
    /// An `@` word that is not a descriptor.
    #[error(
        "unrecognized descriptor {0:?} (known: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly, @every <duration>)"
    )]
    UnknownDescriptor(String),
    /// One field is wrong.
    #[error("{field} field {expr:?}: {problem}")]
    Field {
        /// Which field (`minute`, `hour`, ...).
        field: &'static str,
        /// The field's text.
        expr: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A `CRON_TZ=` or `TZ=` prefix.
    #[error("CRON_TZ or TZ in the schedule is not supported: set spec.timeZone instead")]
    TimeZonePrefix,
    /// `@every` with a duration that does not parse.
    #[error("invalid duration {0:?} in @every (e.g. 90s, 5m, 1h30m)")]
    Every(String),
}

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Five cron fields.
    Cron(Fields),
    /// `@every <duration>`: fires every interval, counted from the previous time.
    Every(Duration),
}

/// The five fields as bit sets (bit `n` set: value `n` matches; [`STAR`] marks `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
}

struct Bounds {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
}

const MINUTE: Bounds = Bounds {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Bounds = Bounds {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Bounds = Bounds {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DOW: Bounds = Bounds {
    name: "day-of-week",
    min: 0,
    max: 6,
    names: &[
        ("sun", 0),
        ("mon", 1),
        ("tue", 2),
        ("wed", 3),
        ("thu", 4),
        ("fri", 5),
        ("sat", 6),
    ],
};

impl std::str::FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Schedule::parse(s)
    }
}

impl Schedule {
    /// Parses a CronJob's `spec.schedule`.
    pub fn parse(schedule: &str) -> Result<Schedule, ScheduleError> {
        let trimmed = schedule.trim();
        if trimmed.is_empty() {
            return Err(ScheduleError::Empty);
        }
        if trimmed.starts_with("TZ=") || trimmed.starts_with("CRON_TZ=") {
            return Err(ScheduleError::TimeZonePrefix);
        }
        if let Some(word) = trimmed.strip_prefix('@') {
            let lower = word.to_ascii_lowercase();
            if let Some(every) = lower.strip_prefix("every") {
                let every = every.trim();
                return parse_go_duration(every)
                    .map(|d| Schedule::Every(every_interval(d)))
                    .ok_or_else(|| ScheduleError::Every(every.to_string()));
            }
            let fields = match lower.as_str() {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                _ => return Err(ScheduleError::UnknownDescriptor(trimmed.to_string())),
            };
            return Schedule::parse(fields);
        }
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(ScheduleError::FieldCount {
                found: fields.len(),
                schedule: schedule.to_string(),
            });
        }
        Ok(Schedule::Cron(Fields {
            minute: parse_field(fields[0], &MINUTE)?,
            hour: parse_field(fields[1], &HOUR)?,
            dom: parse_field(fields[2], &DOM)?,
            month: parse_field(fields[3], &MONTH)?,
            dow: parse_field(fields[4], &DOW)?,
        }))
    }

    /// The first time strictly after `after` at which the schedule fires, reading the
    /// fields as wall-clock time in `tz`; `None` if it never does within five years (e.g.
    /// `0 0 30 2 *`). Times that fall in a daylight-saving gap fire at the first instant
    /// after the gap.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        match self {
            Schedule::Every(every) => {
                let start = after.as_second();
                let every = i64::try_from(every.as_secs()).ok()?;
                Timestamp::from_second(start.checked_add(every)?).ok()
            }
            Schedule::Cron(fields) => fields.next_after(after, tz),
        }
    }
}

impl Fields {
    fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = tz.to_datetime(after);
        // Every field has whole minutes, so the first candidate is the next whole minute.
        let mut t = local
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let limit = local.year().checked_add(SEARCH_YEARS)?;
        while t.year() <= limit {
            if !has(self.month, t.month()) {
                t = t
                    .first_of_month()
                    .start_of_day()
                    .checked_add(1.month())
                    .ok()?;
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t
                    .date()
                    .tomorrow()
                    .ok()?
                    .to_datetime(civil::Time::midnight());
                continue;
            }
            if !has(self.hour, t.hour()) {
                t = t
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if !has(self.minute, t.minute()) {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            match tz.to_ambiguous_zoned(t).compatible() {
                Ok(zoned) if zoned.timestamp() > after => return Some(zoned.timestamp()),
                // A repeated wall-clock time (daylight saving ended) that is not after
                // `after` any more.
                _ => t = t.checked_add(1.minute()).ok()?,
            }
        }
        None
    }

    fn day_matches(&self, date: civil::Date) -> bool {
        let dom = has(self.dom, date.day());
        let dow = has(self.dow, date.weekday().to_sunday_zero_offset());
        if self.dom & STAR != 0 || self.dow & STAR != 0 {
            dom && dow
        } else {
            dom || dow
        }
    }
}

fn has(bits: u64, value: i8) -> bool {
    u32::try_from(value).is_ok_and(|v| bits & (1 << v) != 0)
}

/// `@every`'s interval: at least a second, whole seconds (as `robfig/cron`).
fn every_interval(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs().max(1))
}

fn parse_field(expr: &str, bounds: &Bounds) -> Result<u64, ScheduleError> {
    let mut bits = 0;
    for part in expr.split(',') {
        bits |= parse_range(part, bounds).map_err(|problem| ScheduleError::Field {
            field: bounds.name,
            expr: expr.to_string(),
            problem,
        })?;
    }
    Ok(bits)
}

fn parse_range(expr: &str, b: &Bounds) -> Result<u64, String> {
    let mut range_and_step = expr.split('/');
    let range = range_and_step.next().unwrap_or_default();
    let step = range_and_step.next();
    if range_and_step.next().is_some() {
        return Err(format!("too many slashes in {expr:?}"));
    }
    let mut low_high = range.split('-');
    let low = low_high.next().unwrap_or_default();
    let high = low_high.next();
    if low_high.next().is_some() {
        return Err(format!("too many hyphens in {range:?}"));
    }
    let (start, mut end, mut extra) = if low == "*" || low == "?" {
        if high.is_some() {
            return Err(format!("{range:?}: a range cannot start with {low}"));
        }
        (b.min, b.max, STAR)
    } else {
        let start = value(low, b)?;
        let end = match high {
            Some(h) => value(h, b)?,
            None => start,
        };
        (start, end, 0)
    };
    let step = match step {
        None => 1,
        Some(s) => {
            let step: u32 = s
                .parse()
                .map_err(|_| format!("step {s:?} is not a number"))?;
            if step == 0 {
                return Err("step must be a positive number".into());
            }
            // `N/step` means `N-max/step`.
            if high.is_none() && extra == 0 {
                end = b.max;
            }
            if step > 1 {
                extra = 0;
            }
            step
        }
    };
    if start < b.min {
        return Err(format!("{start} is below the minimum {}", b.min));
    }
    if end > b.max {
        return Err(format!("{end} is above the maximum {}", b.max));
    }
    if start > end {
        return Err(format!("range start {start} is after its end {end}"));
    }
    let mut bits = extra;
    let mut v = start;
    while v <= end {
        bits |= 1 << v;
        // A step as large as u32::MAX must end the loop, not overflow.
        match v.checked_add(step) {
            Some(next) => v = next,
            None => break,
        }
    }
    Ok(bits)
}

fn value(text: &str, b: &Bounds) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some((_, v)) = b.names.iter().find(|(n, _)| *n == lower) {
        return Ok(*v);
    }
    text.parse().map_err(|_| {
        if b.names.is_empty() {
            format!("{text:?} is not a number")
        } else {
            let names: Vec<&str> = b.names.iter().map(|(n, _)| *n).collect();
            format!("{text:?} is not a number or one of {}", names.join(", "))
        }
    })
}

/// Parses Go's duration syntax (`90s`, `1h30m`, `1.5h`, `500ms`) as `@every` takes it.
fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

impl fmt::Display for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |bits: u64| -> String {
            if bits & STAR != 0 {
                return "*".into();
            }
            (0..63)
                .filter(|v| bits & (1 << v) != 0)
                .map(|v: u32| v.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        write!(
            f,
            "{} {} {} {} {}",
            show(self.minute),
            show(self.hour),
            show(self.dom),
            show(self.month),
            show(self.dow)
        )
    }
}

/// `at` as RFC 3339 in `tz`, the way Go's `time.RFC3339` writes it (`Z` for UTC).
pub fn rfc3339_in(at: Timestamp, tz: &TimeZone) -> String {
    let zoned = at.to_zoned(tz.clone());
    let offset = zoned.offset();
    let base = zoned.datetime().strftime("%Y-%m-%dT%H:%M:%S").to_string();
    if offset.seconds() == 0 {
        format!("{base}Z")
    } else {
        let secs = offset.seconds();
        let sign = if secs < 0 { '-' } else { '+' };
        let secs = secs.unsigned_abs();
        format!("{base}{sign}{:02}:{:02}", secs / 3600, (secs % 3600) / 60)
    }
}

/// `at` minus `seconds` (saturating at the ends of time).
pub fn minus_seconds(at: Timestamp, seconds: i64) -> Timestamp {
    at.checked_sub(SignedDuration::from_secs(seconds))
        .unwrap_or(Timestamp::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(schedule: &str, after: &str) -> Timestamp {
        Schedule::parse(schedule)
            .unwrap()
            .next_after(ts(after), &TimeZone::UTC)
            .unwrap()
    }

    fn fields(schedule: &str) -> String {
        match Schedule::parse(schedule).unwrap() {
            Schedule::Cron(f) => f.to_string(),
            other => panic!("not cron fields: {other:?}"),
        }
    }

    #[test]
    fn parses_lists_ranges_steps_and_names() {
        assert_eq!(fields("* * * * *"), "* * * * *");
        assert_eq!(
            fields("*/15 0-6/2 1,15 jan-MAR mon-fri"),
            "0,15,30,45 0,2,4,6 1,15 1,2,3 1,2,3,4,5"
        );
        assert_eq!(fields("5/20 9 ? * SUN"), "5,25,45 9 * * 0");
        assert_eq!(fields("0 0 1 1 *"), fields("@yearly"));
        assert_eq!(fields("@ANNUALLY"), fields("@yearly"));
        assert_eq!(fields("@monthly"), "0 0 1 * *");
        assert_eq!(fields("@weekly"), "0 0 * * 0");
        assert_eq!(fields("@midnight"), fields("@daily"));
        assert_eq!(fields("@hourly"), "0 * * * *");
        assert_eq!(fields("  1,2  3 4 5 6  "), "1,2 3 4 5 6");
        assert_eq!(
            Schedule::parse("@every 1h30m").unwrap(),
            Schedule::Every(Duration::from_secs(5400))
        );
        assert_eq!(
            Schedule::parse("@every 200ms").unwrap(),
            Schedule::Every(Duration::from_secs(1)),
            "at least a second"
        );
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        let err = |s: &str| Schedule::parse(s).unwrap_err().to_string();
        assert_eq!(err(""), "empty schedule");
        assert!(
            err("* * * *").contains("expected 5 fields"),
            "{}",
            err("* * * *")
        );
        assert!(err("* * * * * *").contains("found 6"));
        assert_eq!(
            err("60 * * * *"),
            r#"minute field "60": 60 is above the maximum 59"#
        );
        assert_eq!(
            err("* * 0 * *"),
            r#"day-of-month field "0": 0 is below the minimum 1"#
        );
        assert!(err("* * * * 7").contains("7 is above the maximum 6"));
        assert!(err("* * * foo *").contains(r#""foo" is not a number or one of jan"#));
        assert!(err("*/0 * * * *").contains("step must be a positive number"));
        assert!(
            Schedule::parse("59/4294967295 * * * *").is_ok(),
            "the largest step selects one value and does not overflow"
        );
        assert!(err("5-1 * * * *").contains("range start 5 is after its end 1"));
        assert!(err("1-2-3 * * * *").contains("too many hyphens"));
        assert!(err("*/2/3 * * * *").contains("too many slashes"));
        assert!(err("x * * * *").contains(r#""x" is not a number"#));
        assert!(err("@fortnightly").contains("unrecognized descriptor"));
        assert!(err("@every soon").contains("invalid duration"));
        assert_eq!(
            Schedule::parse("CRON_TZ=Europe/Paris 0 * * * *"),
            Err(ScheduleError::TimeZonePrefix)
        );
        assert_eq!(
            Schedule::parse("TZ=UTC 0 * * * *"),
            Err(ScheduleError::TimeZonePrefix)
        );
    }

    #[test]
    fn next_time_is_strictly_after() {
        assert_eq!(
            next("* * * * *", "2026-01-01T10:00:00Z"),
            ts("2026-01-01T10:01:00Z")
        );
        assert_eq!(
            next("* * * * *", "2026-01-01T10:00:59.9Z"),
            ts("2026-01-01T10:01:00Z")
        );
        assert_eq!(
            next("*/5 * * * *", "2026-01-01T10:03:00Z"),
            ts("2026-01-01T10:05:00Z")
        );
        assert_eq!(
            next("30 9 * * *", "2026-01-01T10:00:00Z"),
            ts("2026-01-02T09:30:00Z")
        );
        assert_eq!(
            next("@hourly", "2026-12-31T23:59:00Z"),
            ts("2027-01-01T00:00:00Z")
        );
        assert_eq!(
            next("0 0 29 2 *", "2026-03-01T00:00:00Z"),
            ts("2028-02-29T00:00:00Z"),
            "the next leap day"
        );
        assert_eq!(
            next("@every 90s", "2026-01-01T10:00:00.5Z"),
            ts("2026-01-01T10:01:30Z")
        );
    }

    #[test]
    fn restricted_day_fields_match_either_day() {
        // 2026-01-01 is a Thursday. Both restricted: the 15th OR any Monday.
        assert_eq!(
            next("0 0 15 * mon", "2026-01-01T00:00:00Z"),
            ts("2026-01-05T00:00:00Z")
        );
        // Day of week `*`: both must match, so only the 15th.
        assert_eq!(
            next("0 0 15 * *", "2026-01-01T00:00:00Z"),
            ts("2026-01-15T00:00:00Z")
        );
        // Day of month `*`: only Mondays.
        assert_eq!(
            next("0 0 * * 1", "2026-01-06T00:00:00Z"),
            ts("2026-01-12T00:00:00Z")
        );
        // `*/1` counts as `*`, `*/2` does not: odd days OR Sundays.
        assert_eq!(
            next("0 0 */2 * 0", "2026-01-01T00:00:00Z"),
            ts("2026-01-03T00:00:00Z")
        );
    }

    #[test]
    fn impossible_schedules_never_fire() {
        let s = Schedule::parse("0 0 30 2 *").unwrap();
        assert_eq!(
            s.next_after(ts("2026-01-01T00:00:00Z"), &TimeZone::UTC),
            None
        );
    }

    #[test]
    fn time_zones_shift_the_fields_and_skip_gaps() {
        let ny = TimeZone::get("America/New_York").unwrap();
        let s = Schedule::parse("0 9 * * *").unwrap();
        assert_eq!(
            s.next_after(ts("2026-01-01T00:00:00Z"), &ny),
            Some(ts("2026-01-01T14:00:00Z")),
            "09:00 EST"
        );
        assert_eq!(
            s.next_after(ts("2026-07-01T00:00:00Z"), &ny),
            Some(ts("2026-07-01T13:00:00Z")),
            "09:00 EDT"
        );
        // 2026-03-08 02:30 does not exist in New York: it fires right after the gap.
        let gap = Schedule::parse("30 2 * * *").unwrap();
        assert_eq!(
            gap.next_after(ts("2026-03-08T05:00:00Z"), &ny),
            Some(ts("2026-03-08T07:30:00Z"))
        );
        assert_eq!(
            rfc3339_in(ts("2026-01-01T14:00:00Z"), &ny),
            "2026-01-01T09:00:00-05:00"
        );
        assert_eq!(
            rfc3339_in(ts("2026-01-01T14:00:00Z"), &TimeZone::UTC),
            "2026-01-01T14:00:00Z"
        );
    }
}
