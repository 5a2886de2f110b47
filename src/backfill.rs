//! `chiso backfill JOB --since TIME [--until TIME]`: re-pull a window of a cursor feed.
//!
//! A cursor is opaque, so a time is turned into a position with the job's own commit log: the
//! window starts at the cursor the job had committed at `--since` (the newest entry committed
//! then or before; the feed's beginning if there is none), so every record the portal made
//! visible after that time is read again. The run lands like any other (the lake's dedup by
//! key and version makes the re-read records harmless) but never moves the job's cursor.
//!
//! Each backfill has a record, `_state/<job>/backfills/<id>.json`: who asked, the window, where
//! it started, and when it finished. Its position is committed with its chunks, so running the
//! same command again after a crash resumes from there rather than from the start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::JobConfig;
use crate::lake::commit::JobState;
use crate::pull::{self, BackfillRun, RunContext, RunReport};
use crate::time;

/// A backfill as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackfillRecord {
    pub id: String,
    pub job: String,
    /// The window, local time (`YYYY-MM-DD HH:MM:SS`).
    pub since: String,
    pub until: Option<String>,
    /// Who asked: `$CHISO_ACTOR`, else `$USER`, else "unknown".
    pub requested_by: String,
    pub requested_at: String,
    /// The cursor the window starts from (none: the feed's beginning).
    pub start_cursor: Option<Value>,
    /// Rows the job's runs read from that position on: what the backfill expects to read.
    pub expected_rows: u64,
    /// `running` (or interrupted: run the same command to resume), `done`, `failed`.
    pub status: String,
    /// Its runs with a committed chunk, interrupted ones included.
    pub runs: Vec<String>,
    /// Rows its runs read and landed, as committed.
    pub rows_read: u64,
    pub rows_landed: u64,
    pub finished_at: Option<String>,
}

fn dir(warehouse: &Path, job: &str) -> PathBuf {
    warehouse.join("_state").join(job).join("backfills")
}

fn save(warehouse: &Path, r: &BackfillRecord) -> anyhow::Result<()> {
    let path = dir(warehouse, &r.job).join(format!("{}.json", r.id));
    crate::fs::write_durably(&path, &serde_json::to_vec_pretty(r)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Every backfill of `job`, oldest first.
pub fn list(warehouse: &Path, job: &str) -> anyhow::Result<Vec<BackfillRecord>> {
    let d = dir(warehouse, job);
    let mut out = Vec::new();
    for path in crate::models::files_with_extension(&d, "json")
        .with_context(|| format!("listing {}", d.display()))?
    {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        out.push(
            serde_json::from_slice::<BackfillRecord>(&bytes)
                .with_context(|| format!("reading {}", path.display()))?,
        );
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// The window as asked.
#[derive(Debug, Clone)]
pub struct Window {
    pub since: NaiveDateTime,
    pub until: Option<NaiveDateTime>,
}

fn fmt(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Starts a backfill of `window`, or finds the unfinished one of the same window to resume.
/// An unfinished backfill of another window is an error naming it.
pub fn start(
    warehouse: &Path,
    job: &JobConfig,
    window: &Window,
    requested_by: &str,
) -> anyhow::Result<BackfillRecord> {
    pull::backfill_possible(job)?;
    if let Some(u) = window.until {
        if u <= window.since {
            anyhow::bail!(
                "--until {} is not after --since {}",
                fmt(u),
                fmt(window.since)
            );
        }
    }
    let (since, until) = (fmt(window.since), window.until.map(fmt));
    for r in list(warehouse, &job.name)? {
        if r.status == "done" {
            continue;
        }
        if r.since == since && r.until == until {
            tracing::info!(job = %job.name, backfill = %r.id, "Resuming the unfinished backfill of this window.");
            return Ok(r);
        }
        anyhow::bail!(
            "job {}: backfill {} (since {}, until {}) is unfinished; run it again with the same window to finish it first",
            job.name,
            r.id,
            r.since,
            r.until.as_deref().unwrap_or("the end")
        );
    }
    // The cursor the job had at `since`: the newest entry committed then, a backfill's aside.
    let state = JobState::new(warehouse, &job.name);
    let before_since = |e: &crate::lake::commit::CommitEntry| {
        e.backfill.is_none()
            && time::parse_rfc3339_local(&e.committed_at).is_some_and(|t| t <= window.since)
    };
    let entries = state.back_to_first(&before_since)?;
    let at = entries.iter().rposition(before_since);
    let start_cursor = at.and_then(|i| entries[i].cursor_after.clone());
    let expected_rows = entries
        .iter()
        .skip(at.map_or(0, |i| i + 1))
        .filter(|e| e.backfill.is_none())
        .map(|e| e.files.iter().map(|f| f.rows).sum::<u64>())
        .sum();
    let record = BackfillRecord {
        id: uuid::Uuid::now_v7().simple().to_string(),
        job: job.name.clone(),
        since,
        until,
        requested_by: requested_by.to_string(),
        requested_at: time::now_rfc3339(),
        start_cursor,
        expected_rows,
        status: "running".into(),
        runs: Vec::new(),
        rows_read: 0,
        rows_landed: 0,
        finished_at: None,
    };
    save(warehouse, &record)?;
    Ok(record)
}

/// What the backfill has committed so far, read from the job's commit log in one pass.
struct Committed {
    /// Per run (in order), the rows read and landed by its last committed chunk.
    runs: Vec<(String, u64, u64)>,
    /// Where it resumes: its last committed position, or its start.
    position: Option<Value>,
}

fn committed(warehouse: &Path, record: &BackfillRecord) -> anyhow::Result<Committed> {
    // Its chunks were committed after it was requested.
    let requested = time::parse_rfc3339_local(&record.requested_at);
    let entries = JobState::new(warehouse, &record.job).back_to_first(&|e| {
        requested.is_some_and(|r| time::parse_rfc3339_local(&e.committed_at).is_some_and(|t| t < r))
    })?;
    let mut out = Committed {
        runs: Vec::new(),
        position: record.start_cursor.clone(),
    };
    for e in &entries {
        let Some(mark) = e.backfill.as_ref().filter(|b| b.id == record.id) else {
            continue;
        };
        out.position = mark.cursor.clone();
        match out.runs.last_mut() {
            Some(last) if last.0 == e.run_id => {
                (last.1, last.2) = (e.totals.rows_in, e.totals.rows_landed)
            }
            _ => out
                .runs
                .push((e.run_id.clone(), e.totals.rows_in, e.totals.rows_landed)),
        }
    }
    Ok(out)
}

/// Runs (or resumes) the backfill to its end; `progress` is told the rows read so far
/// (those of earlier, interrupted runs included).
pub async fn run(
    ctx: &RunContext,
    job: &JobConfig,
    mut record: BackfillRecord,
    progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
) -> anyhow::Result<(BackfillRecord, RunReport)> {
    let warehouse = ctx.warehouse.clone();
    let so_far = committed(&warehouse, &record)?;
    let (start, before) = (
        so_far.position,
        so_far.runs.iter().map(|r| r.1).sum::<u64>(),
    );
    let until = record
        .until
        .as_deref()
        .and_then(|u| NaiveDateTime::parse_from_str(u, "%Y-%m-%d %H:%M:%S").ok())
        .map(time::micros);
    let report = pull::backfill_job(
        ctx,
        job,
        BackfillRun {
            id: record.id.clone(),
            start,
            until,
            progress: progress
                .map(|p| Arc::new(move |n: u64| p(before + n)) as Arc<dyn Fn(u64) + Send + Sync>),
        },
    )
    .await?;
    // Every run's committed part, the interrupted ones' included.
    let runs = committed(&warehouse, &record)?.runs;
    record.runs = runs.iter().map(|r| r.0.clone()).collect();
    record.rows_read = runs.iter().map(|r| r.1).sum();
    record.rows_landed = runs.iter().map(|r| r.2).sum();
    if report.outcome == crate::lake::commit::Outcome::Failed {
        record.status = "failed".into();
    } else {
        record.status = "done".into();
        record.finished_at = Some(time::now_rfc3339());
    }
    save(&warehouse, &record)?;
    Ok((record, report))
}
