//! `chiso status`: per job, the last run, its outcome and rows, the committed cursor and how far
//! behind the data is. Reads only the commit logs; never takes a job's lock for longer than a
//! check, never writes.

use serde::Serialize;
use serde_json::Value;

use crate::config::JobConfig;
use crate::lake::commit::{CommitError, EntryKind, JobState, Outcome};
use crate::time;

#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub job: String,
    pub enabled: bool,
    pub schedule: String,
    pub protocol: String,
    /// `feed/dataset` in the lake.
    pub dataset: String,
    /// A run holds the job's lock right now.
    pub running: bool,
    pub last_run: Option<LastRun>,
    /// When the newest run that did not fail or get interrupted finished.
    pub last_success_at: Option<String>,
    pub cursor: Option<Value>,
    /// Newest version time landed (the feed's own clock, `yyyyMMddHHmmss`).
    pub watermark: Option<String>,
    /// Seconds from the watermark to now (how stale the data is), when there is a watermark.
    pub lag_seconds: Option<i64>,
    /// Rows landed and quarantined by all runs.
    pub rows_landed_total: u64,
    pub rows_quarantined_total: u64,
    /// The commit log names at least one data file. Without any, builds read the dataset as
    /// empty and the indicators over it follow their zero-denominator rules.
    pub has_data: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    pub run_id: String,
    pub started_at: String,
    pub finished_at: String,
    pub outcome: Option<Outcome>,
    pub rows_in: u64,
    pub rows_landed: u64,
    pub rows_quarantined: u64,
    pub retries: u64,
    pub error: Option<String>,
}

/// Status of each job, reading `warehouse/_state/`.
pub fn collect(
    warehouse: &std::path::Path,
    jobs: &[JobConfig],
) -> Result<Vec<JobStatus>, CommitError> {
    let now = time::now_local();
    let mut out = Vec::new();
    for job in jobs {
        let state = JobState::new(warehouse, &job.name);
        let entries = state.all()?;
        // Compactions are maintenance, not runs of the job.
        let runs: Vec<_> = entries
            .iter()
            .filter(|e| e.kind != EntryKind::Compaction)
            .collect();
        let last = runs
            .iter()
            .rev()
            .find(|e| e.kind != EntryKind::Checkpoint)
            .or(runs.last())
            .copied();
        let last_success = entries
            .iter()
            .rev()
            .find(|e| matches!(e.outcome, Some(Outcome::Ok | Outcome::Quarantined)));
        // A run's totals are cumulative: sum the last entry of each run.
        let mut landed = 0;
        let mut quarantined = 0;
        for (i, e) in entries.iter().enumerate() {
            let next_same = entries.get(i + 1).is_some_and(|n| n.run_id == e.run_id);
            if !next_same {
                landed += e.totals.rows_landed;
                quarantined += e.totals.rows_quarantined;
            }
        }
        let watermark = entries.iter().rev().find_map(|e| e.watermark.clone());
        let lag_seconds = watermark.as_deref().and_then(|w| {
            chrono::NaiveDateTime::parse_from_str(w, "%Y%m%d%H%M%S")
                .ok()
                .map(|t| (now - t).num_seconds())
        });
        out.push(JobStatus {
            job: job.name.clone(),
            enabled: job.enabled,
            schedule: job.schedule.0.clone(),
            protocol: job.protocol.name().to_string(),
            dataset: job.dataset.key(),
            running: state.is_running(),
            last_run: last.map(|e| LastRun {
                run_id: e.run_id.clone(),
                started_at: e.started_at.clone(),
                finished_at: e.committed_at.clone(),
                outcome: e.outcome,
                rows_in: e.totals.rows_in,
                rows_landed: e.totals.rows_landed,
                rows_quarantined: e.totals.rows_quarantined,
                retries: e.totals.retries,
                error: e.error.clone(),
            }),
            last_success_at: last_success.map(|e| e.committed_at.clone()),
            cursor: entries.last().and_then(|e| e.cursor_after.clone()),
            watermark,
            lag_seconds,
            rows_landed_total: landed,
            rows_quarantined_total: quarantined,
            has_data: entries.iter().any(|e| !e.files.is_empty()),
        });
    }
    Ok(out)
}

fn human_duration(secs: i64) -> String {
    let (sign, s) = if secs < 0 { ("-", -secs) } else { ("", secs) };
    let text = match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    };
    format!("{sign}{text}")
}

fn short_cursor(c: &Option<Value>) -> String {
    let s = match c {
        None => return "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    if s.chars().count() > 28 {
        format!("{}…", s.chars().take(27).collect::<String>())
    } else {
        s
    }
}

/// The table printed by `chiso status`.
pub fn render(statuses: &[JobStatus]) -> String {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING);
    t.set_header(vec![
        "JOB",
        "DATASET",
        "LAST RUN",
        "OUTCOME",
        "LANDED",
        "QUARANT.",
        "RETRIES",
        "CURSOR",
        "WATERMARK",
        "LAG",
    ]);
    let now = time::now_local();
    for s in statuses {
        let (when, outcome, landed, quarantined, retries) = match &s.last_run {
            None => (
                "never".to_string(),
                "-".to_string(),
                String::new(),
                String::new(),
                String::new(),
            ),
            Some(r) => {
                let ago = time::parse_rfc3339_local(&r.finished_at)
                    .map(|t| format!("{} ago", human_duration((now - t).num_seconds())))
                    .unwrap_or_else(|| r.finished_at.clone());
                let outcome = if s.running {
                    "running".to_string()
                } else {
                    r.outcome.map_or("-", |o| o.as_str()).to_string()
                };
                (
                    ago,
                    outcome,
                    r.rows_landed.to_string(),
                    r.rows_quarantined.to_string(),
                    r.retries.to_string(),
                )
            }
        };
        t.add_row(vec![
            if s.enabled {
                s.job.clone()
            } else {
                format!("{} (disabled)", s.job)
            },
            s.dataset.clone(),
            when,
            outcome,
            landed,
            quarantined,
            retries,
            short_cursor(&s.cursor),
            s.watermark.clone().unwrap_or_else(|| "-".into()),
            s.lag_seconds
                .map(human_duration)
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut out = t.to_string();
    let empty: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.has_data)
        .map(|s| s.dataset.as_str())
        .collect();
    if !empty.is_empty() {
        out.push_str(&format!(
            "\nNo data yet: {} (builds read them as empty; their indicators follow the zero-denominator rules)",
            empty.join(", ")
        ));
    }
    for s in statuses {
        if let Some(LastRun {
            error: Some(e),
            outcome: Some(Outcome::Failed | Outcome::Interrupted),
            ..
        }) = &s.last_run
        {
            out.push_str(&format!("\n{}: {e}", s.job));
        }
    }
    out
}
