//! Time in chiso: every feed timestamp is Vietnamese wall-clock time (Asia/Ho_Chi_Minh,
//! UTC+7 all year), stored as a zone-less `TIMESTAMP`. This module is the one place that turns
//! the system clock into that wall-clock time; DuckDB never does zone arithmetic (the bundled
//! build has no ICU).

use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;

pub const TZ: Tz = chrono_tz::Asia::Ho_Chi_Minh;

/// A simulated clock: the local time it was set to, and when (it runs on from there at the
/// real pace, so stamps taken a moment apart stay apart and in order).
static SIMULATED: std::sync::RwLock<Option<(NaiveDateTime, std::time::Instant)>> =
    std::sync::RwLock::new(None);

/// Sets this process's clock to local time `at` (running on from there), or back to the
/// system clock with `None`. Only `chiso bench publication-year` sets it, to replay a year of
/// landings and publications in minutes: landing stamps, build and revision times and the
/// revision policy then follow the simulated days. Nothing else does.
pub fn simulate(at: Option<NaiveDateTime>) {
    *SIMULATED.write().expect("clock") = at.map(|t| (t, std::time::Instant::now()));
}

/// Now, as UTC (the system clock, or the simulated one).
pub fn now_utc() -> DateTime<Utc> {
    match *SIMULATED.read().expect("clock") {
        None => Utc::now(),
        Some((t, set)) => {
            let local = t + chrono::Duration::from_std(set.elapsed()).unwrap_or_default();
            local.and_utc() - chrono::Duration::hours(7)
        }
    }
}

/// Now, as local wall-clock time.
pub fn now_local() -> NaiveDateTime {
    now_utc().with_timezone(&TZ).naive_local()
}

/// Now, as RFC 3339 with the +07:00 offset (for state files and reports).
pub fn now_rfc3339() -> String {
    now_utc()
        .with_timezone(&TZ)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// Now, as RFC 3339 with milliseconds and the +07:00 offset (for the daemon's fire history,
/// where runs a second apart must be told apart).
pub fn now_rfc3339_millis() -> String {
    now_utc()
        .with_timezone(&TZ)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

/// Now as a DuckDB `TIMESTAMP` literal of local wall-clock time (what the ledger records).
pub fn now_sql() -> String {
    format!(
        "TIMESTAMP '{}'",
        now_local().format("%Y-%m-%d %H:%M:%S%.6f")
    )
}

/// Local wall-clock microseconds since 1970-01-01 00:00 (the lake's `TIMESTAMP` encoding).
pub fn micros(t: NaiveDateTime) -> i64 {
    t.and_utc().timestamp_micros()
}

/// `yyyyMMddHHmmss`, the feeds' own format.
pub fn compact(t: NaiveDateTime) -> String {
    t.format("%Y%m%d%H%M%S").to_string()
}

/// Inverse of [`micros`].
pub fn from_micros(us: i64) -> NaiveDateTime {
    DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .naive_utc()
}

/// Parses RFC 3339 (as written by [`now_rfc3339`]) into local wall-clock time.
pub fn parse_rfc3339_local(s: &str) -> Option<NaiveDateTime> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&TZ).naive_local())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_roundtrip() {
        let t = NaiveDateTime::parse_from_str("20260815093000", "%Y%m%d%H%M%S").unwrap();
        assert_eq!(from_micros(micros(t)), t);
        assert_eq!(compact(t), "20260815093000");
        let p = parse_rfc3339_local("2026-08-15T02:30:00+00:00").unwrap();
        assert_eq!(p, t, "UTC 02:30 is 09:30 in Vietnam");
    }
}
