//! Time for printed cells: RFC 3339 timestamps read and written without a date library, and
//! Kubernetes' `duration.HumanDuration`, which AGE-style columns show.
//!
//! Dates convert with Howard Hinnant's `days_from_civil` / `civil_from_days` algorithms on
//! the proleptic Gregorian calendar, so Go's zero time (year 1) works like any other.

use std::fmt::Write;

/// Nanoseconds per second.
const NANOS_PER_SEC: i128 = 1_000_000_000;
/// Seconds per day.
const SECS_PER_DAY: i64 = 86_400;
/// Go's zero `time.Time`, `0001-01-01T00:00:00Z`, in Unix seconds: Kubernetes treats it as
/// "no timestamp".
const GO_ZERO_SECS: i64 = -62_135_596_800;

/// An instant: seconds since the Unix epoch plus a fraction in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Timestamp {
    secs: i64,
    nanos: u32,
}

impl Timestamp {
    /// A whole-second instant.
    pub(crate) fn from_unix(secs: i64) -> Self {
        Timestamp { secs, nanos: 0 }
    }

    /// Go's zero time, which Kubernetes stores for "no timestamp".
    pub(crate) fn zero() -> Self {
        Timestamp::from_unix(GO_ZERO_SECS)
    }

    /// Parses RFC 3339 as `metav1.Time` and `metav1.MicroTime` accept it:
    /// `2006-01-02T15:04:05Z`, with optional fractional seconds and a `Z` or `±hh:mm` zone.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        let num = |from: usize, len: usize| -> Option<i64> {
            let digits = b.get(from..from + len)?;
            digits.iter().try_fold(0i64, |acc, &d| {
                d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
            })
        };
        let at = |i: usize, c: u8| b.get(i) == Some(&c);
        if !(at(4, b'-') && at(7, b'-') && (at(10, b'T') || at(10, b't'))) {
            return None;
        }
        if !(at(13, b':') && at(16, b':')) {
            return None;
        }
        let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
        let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        let mut pos = 19;
        let mut nanos: u32 = 0;
        if at(pos, b'.') || at(pos, b',') {
            pos += 1;
            let start = pos;
            while b.get(pos).is_some_and(u8::is_ascii_digit) {
                pos += 1;
            }
            if pos == start {
                return None;
            }
            // Keep nanosecond precision; further digits cannot change a printed duration.
            for (i, &d) in b[start..pos].iter().take(9).enumerate() {
                nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
            }
        }
        let offset = match b.get(pos) {
            Some(b'Z' | b'z') if pos + 1 == b.len() => 0,
            Some(&sign @ (b'+' | b'-')) if pos + 6 == b.len() && at(pos + 3, b':') => {
                let (oh, om) = (num(pos + 1, 2)?, num(pos + 4, 2)?);
                if oh > 23 || om > 59 {
                    return None;
                }
                let offset = oh * 3600 + om * 60;
                if sign == b'-' { -offset } else { offset }
            }
            _ => return None,
        };
        let days = days_from_civil(year, month, day);
        let secs = days * SECS_PER_DAY + hour * 3600 + minute * 60 + second - offset;
        Some(Timestamp { secs, nanos })
    }

    /// Whether this is Go's zero time, which Kubernetes prints as `<unknown>`.
    pub(crate) fn is_zero(&self) -> bool {
        self.secs == GO_ZERO_SECS && self.nanos == 0
    }

    /// Nanoseconds since the Unix epoch.
    fn as_nanos(&self) -> i128 {
        i128::from(self.secs) * NANOS_PER_SEC + i128::from(self.nanos)
    }

    /// `self - earlier` in nanoseconds.
    pub(crate) fn nanos_since(&self, earlier: &Timestamp) -> i128 {
        self.as_nanos() - earlier.as_nanos()
    }

    /// RFC 3339 in UTC with whole seconds, as Go's `t.UTC().Format(time.RFC3339)`.
    pub(crate) fn to_rfc3339(self) -> String {
        let days = self.secs.div_euclid(SECS_PER_DAY);
        let rem = self.secs.rem_euclid(SECS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let mut out = String::with_capacity(20);
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        );
        out
    }
}

/// The elapsed time from `ts` to `now` (Unix seconds) as Kubernetes' printers show it
/// (`translateTimestampSince`): `<unknown>` without a timestamp.
pub(crate) fn since(ts: Option<Timestamp>, now: i64) -> String {
    match ts {
        Some(ts) if !ts.is_zero() => {
            human_duration_nanos(Timestamp::from_unix(now).nanos_since(&ts))
        }
        _ => "<unknown>".to_string(),
    }
}

/// Kubernetes' `duration.HumanDuration` of a duration in nanoseconds: about two significant
/// figures (`59s`, `119s`, `2m`, `9m59s`, `10m`, `3h`, `7h59m`, `47h`, `2d`, `7d23h`, `729d`,
/// `2y`, `7y364d`, `8y`); a little negative is `0s` (clock skew), more is `<invalid>`.
pub(crate) fn human_duration_nanos(d: i128) -> String {
    const MINUTE: i128 = 60 * NANOS_PER_SEC;
    const HOUR: i128 = 60 * MINUTE;
    // Go's int(d.Seconds()) truncates toward zero, as Rust's division does.
    let seconds = d / NANOS_PER_SEC;
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = d / MINUTE;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = d / HOUR;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = hours / 24 % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Whether `year` is a Gregorian leap year.
fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// The number of days in a month (1–12) of a year.
fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> i64 {
        Timestamp::parse(s).expect(s).secs
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(secs("1970-01-01T00:00:00Z"), 0);
        assert_eq!(secs("2026-11-22T01:00:00Z"), 1_795_309_200);
        assert_eq!(secs("2000-02-29T12:00:00Z"), 951_825_600);
        assert_eq!(secs("2026-11-22T03:00:00+02:00"), 1_795_309_200);
        assert_eq!(secs("2026-11-21T23:30:00-01:30"), 1_795_309_200);
        assert_eq!(secs("0001-01-01T00:00:00Z"), GO_ZERO_SECS);
        let micro = Timestamp::parse("2026-11-22T01:00:00.250000Z").unwrap();
        assert_eq!((micro.secs, micro.nanos), (1_795_309_200, 250_000_000));
    }

    #[test]
    fn rejects_malformed_timestamps() {
        for bad in [
            "",
            "2026-11-22",
            "2026-11-22T01:00:00",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T01:00:00.Z",
            "2026-11-22T01:00:00Zjunk",
            "2026-11-22T01:00:00+0200",
            "২০২৬-11-22T01:00:00Z",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_rfc3339_in_utc() {
        for s in [
            "1970-01-01T00:00:00Z",
            "2026-11-22T01:00:00Z",
            "2000-02-29T23:59:59Z",
            "1969-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
        ] {
            assert_eq!(Timestamp::parse(s).unwrap().to_rfc3339(), s);
        }
        let shifted = Timestamp::parse("2026-11-22T03:00:00.5+02:00").unwrap();
        assert_eq!(shifted.to_rfc3339(), "2026-11-22T01:00:00Z");
    }

    #[test]
    fn civil_round_trips() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn since_counts_fractions_like_go() {
        let ts = Timestamp::parse("2026-11-22T01:00:00.5Z");
        // 59.5 s truncates to 59 s.
        assert_eq!(since(ts, 1_795_309_260), "59s");
        assert_eq!(since(None, 0), "<unknown>");
        assert_eq!(
            since(Timestamp::parse("0001-01-01T00:00:00Z"), 0),
            "<unknown>"
        );
    }
}
