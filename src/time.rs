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

/// A reporting period: `2026-08`, `2026-Q3` or `2026`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Month(i32, u32),
    Quarter(i32, u32),
    Year(i32),
}

impl Period {
    pub fn parse(s: &str) -> Option<Period> {
        let year = |y: &str| -> Option<i32> {
            (y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit()))
                .then(|| y.parse().ok())
                .flatten()
        };
        match s.len() {
            4 => Some(Period::Year(year(s)?)),
            7 if &s[4..6] == "-Q" => {
                let q: u32 = s[6..].parse().ok()?;
                (1..=4)
                    .contains(&q)
                    .then_some(Period::Quarter(year(&s[..4])?, q))
            }
            7 if &s[4..5] == "-" => {
                let m: u32 = s[5..].parse().ok()?;
                (s[5..].bytes().all(|b| b.is_ascii_digit()) && (1..=12).contains(&m))
                    .then_some(Period::Month(year(&s[..4])?, m))
            }
            _ => None,
        }
    }

    /// `YYYY-MM` of the period's first month.
    pub fn first_month(&self) -> String {
        match *self {
            Period::Month(y, m) => format!("{y:04}-{m:02}"),
            Period::Quarter(y, q) => format!("{y:04}-{:02}", (q - 1) * 3 + 1),
            Period::Year(y) => format!("{y:04}-01"),
        }
    }
    /// The period's name: `2026-08`, `2026-Q3`, `2026`.
    pub fn label(&self) -> String {
        match *self {
            Period::Month(y, m) => format!("{y:04}-{m:02}"),
            Period::Quarter(y, q) => format!("{y:04}-Q{q}"),
            Period::Year(y) => format!("{y:04}"),
        }
    }

    /// `month`, `quarter` or `year`.
    pub fn kind(&self) -> &'static str {
        match self {
            Period::Month(..) => "month",
            Period::Quarter(..) => "quarter",
            Period::Year(..) => "year",
        }
    }

    /// Its first day.
    pub fn first_day(&self) -> chrono::NaiveDate {
        let (y, m) = match *self {
            Period::Month(y, m) => (y, m),
            Period::Quarter(y, q) => (y, (q - 1) * 3 + 1),
            Period::Year(y) => (y, 1),
        };
        chrono::NaiveDate::from_ymd_opt(y, m, 1).expect("a period starts on a valid day")
    }

    /// Its last day (inclusive).
    pub fn last_day(&self) -> chrono::NaiveDate {
        let months = match self {
            Period::Month(..) => 1,
            Period::Quarter(..) => 3,
            Period::Year(..) => 12,
        };
        self.first_day() + chrono::Months::new(months) - chrono::Days::new(1)
    }

    /// The period of type `kind` (`month`, `quarter`, `year`) holding `day`.
    pub fn holding(kind: &str, day: chrono::NaiveDate) -> Option<Period> {
        use chrono::Datelike;
        let (y, m) = (day.year(), day.month());
        match kind {
            "month" => Some(Period::Month(y, m)),
            "quarter" => Some(Period::Quarter(y, (m - 1) / 3 + 1)),
            "year" => Some(Period::Year(y)),
            _ => None,
        }
    }

    /// The period of the same type just before this one.
    pub fn previous(&self) -> Period {
        Period::holding(self.kind(), self.first_day() - chrono::Days::new(1)).expect("a known kind")
    }
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
