//! What the Operations page reads besides the status report: the last builds with their tests
//! (`_state/builds/`), each portal's receipts and the release calendar (the published
//! warehouse's `pub_receipts` and `pub_release_calendar`), and the fires of the last 24 hours
//! (the fire histories).

use std::path::Path;

use chrono::{DateTime, Duration, FixedOffset};
use serde::Serialize;

use crate::duck;
use crate::models::build::{recent_builds, TestStatus};
use crate::schedule::{FireEvent, History};

/// A build and its tests.
#[derive(Debug, Clone, Serialize)]
pub struct BuildLine {
    pub build_id: String,
    pub started_at: String,
    pub seconds: f64,
    pub published: bool,
    pub models: usize,
    pub models_failed: usize,
    pub tests_passed: usize,
    pub tests_warned: usize,
    pub tests_failed: usize,
    /// The tests that did not pass (name and status).
    pub not_passed: Vec<(String, String)>,
}

pub fn builds(warehouse: &Path, n: usize) -> anyhow::Result<Vec<BuildLine>> {
    Ok(recent_builds(warehouse, n)?
        .into_iter()
        .map(|b| {
            let count = |s: TestStatus| b.tests.iter().filter(|t| t.status == s).count();
            BuildLine {
                started_at: b.started_at.clone(),
                seconds: b.seconds,
                published: b.published,
                models: b.models.len(),
                models_failed: b
                    .models
                    .iter()
                    .filter(|m| m.status == crate::models::build::ModelStatus::Error)
                    .count(),
                tests_passed: count(TestStatus::Pass),
                tests_warned: count(TestStatus::Warn),
                tests_failed: count(TestStatus::Fail) + count(TestStatus::Error),
                not_passed: b
                    .tests
                    .iter()
                    .filter(|t| t.status != TestStatus::Pass)
                    .map(|t| (t.test.clone(), t.status.as_str().to_string()))
                    .collect(),
                build_id: b.build_id,
            }
        })
        .collect())
}

/// What one portal acknowledged of a revision, or still owes.
#[derive(Debug, Clone, Serialize)]
pub struct Receipt {
    pub target: String,
    pub period: String,
    pub revision: i64,
    pub status: String,
    pub attempts: i64,
    pub acknowledged_at: Option<String>,
    pub receipt: Option<String>,
    pub last_error: Option<String>,
}

/// The newest receipts, as of the published build.
pub fn receipts(conn: &duck::Connection) -> anyhow::Result<Vec<Receipt>> {
    if !duck::table_exists(conn, "pub_receipts")? {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT target, period, revision, status, attempts,
                strftime(acknowledged_at, '%Y-%m-%d %H:%M'), portal_receipt, last_error
         FROM pub_receipts ORDER BY period DESC, revision DESC, target LIMIT 40",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Receipt {
            target: r.get(0)?,
            period: r.get(1)?,
            revision: r.get(2)?,
            status: r.get(3)?,
            attempts: r.get(4)?,
            acknowledged_at: r.get(5)?,
            receipt: r.get(6)?,
            last_error: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A period of the release calendar.
#[derive(Debug, Clone, Serialize)]
pub struct CalendarLine {
    pub period: String,
    pub period_type: String,
    pub status: String,
    pub publishable_from: Option<String>,
    pub feeds_waiting: Option<String>,
    pub latest_revision: Option<i64>,
    pub open_until: Option<String>,
    pub publication: String,
}

pub fn calendar(conn: &duck::Connection) -> anyhow::Result<Vec<CalendarLine>> {
    if duck::object_kind(conn, "pub_release_calendar")?.is_none() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT period, period_type, status, CAST(publishable_from AS VARCHAR),
                CAST(feeds_waiting AS VARCHAR), latest_revision,
                strftime(open_until, '%Y-%m-%d'), publication
         FROM pub_release_calendar ORDER BY starts_on DESC, period_type LIMIT 24",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(CalendarLine {
            period: r.get(0)?,
            period_type: r.get(1)?,
            status: r.get(2)?,
            publishable_from: r.get(3)?,
            feeds_waiting: r.get(4)?,
            latest_revision: r.get(5)?,
            open_until: r.get(6)?,
            publication: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A finished fire in the last day.
#[derive(Debug, Clone, Serialize)]
pub struct Fire {
    pub job: String,
    /// Hours before now (0 to 24).
    pub hours_ago: f64,
    pub outcome: String,
}

/// The fires of `jobs` that finished in the 24 hours before `now`, oldest first.
pub fn last_day(
    warehouse: &Path,
    jobs: &[String],
    now: DateTime<FixedOffset>,
) -> anyhow::Result<Vec<Fire>> {
    let since = now - Duration::hours(24);
    let mut out = Vec::new();
    for job in jobs {
        let older = |r: &crate::schedule::FireRecord| {
            DateTime::parse_from_rfc3339(&r.at).is_ok_and(|t| t < since)
        };
        let records = History::new(warehouse, job)
            .tail_until(|rs| rs.first().is_some_and(older))
            .unwrap_or_default();
        for r in records {
            if r.event != FireEvent::Finished {
                continue;
            }
            let Ok(at) = DateTime::parse_from_rfc3339(&r.at) else {
                continue;
            };
            if at < since || at > now {
                continue;
            }
            out.push(Fire {
                job: job.clone(),
                hours_ago: (now - at).num_milliseconds() as f64 / 3_600_000.0,
                outcome: r
                    .outcome
                    .map(|o| o.as_str())
                    .unwrap_or("unknown")
                    .to_string(),
            });
        }
    }
    out.sort_by(|a, b| b.hours_ago.total_cmp(&a.hours_ago));
    Ok(out)
}
