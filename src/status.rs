//! `chiso status`: per job, the last run, its outcome and rows, the committed cursor, how far
//! behind the data is, the schedule (next fire, the last fires and what became of them) and the
//! feed's freshness; the last build; the index's freshness (the published warehouse); open
//! failures; and the daemon holding the warehouse, if one does. Reads the commit logs, the
//! fire histories' tails and the build records; never takes a job's lock for longer than a
//! check, never writes.

use serde::Serialize;
use serde_json::Value;

use crate::config::{BuildJobConfig, JobConfig, Jobs};
use crate::lake::commit::{CommitError, JobState, Outcome};
use crate::models::build::BuildSummary;
use crate::schedule::{FireRecord, History, Holder, Schedule};
use crate::time;

/// Fires listed per job.
pub const LAST_FIRES: usize = 5;

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
    /// Something holds the job's lock (a run, or one the daemon abandoned as stuck).
    pub lock_held: bool,
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
    /// The schedule's next planned time (project zone), if the job is enabled.
    pub next_fire: Option<String>,
    /// The daemon's last fires of the job and what became of them, oldest first.
    pub last_fires: Vec<FireRecord>,
    /// When the newest landed record landed (the last commit that landed files).
    pub newest_landing_at: Option<String>,
    /// Seconds since then: the feed's freshness.
    pub freshness_seconds: Option<i64>,
    pub freshness_target_seconds: Option<u64>,
    /// Older than its target (or no data at all while a target is set).
    pub freshness_breach: bool,
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
        // The checkpoint's summary and the entries after it: flat as runs accumulate.
        let summary = state.summary()?;
        let last = summary.last_run();
        let watermark = summary.watermark.clone();
        let newest_landing = summary
            .newest_landing_at
            .as_deref()
            .and_then(time::parse_rfc3339_local);
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
            lock_held: state.lock_held(),
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
            last_success_at: summary.last_success_at.clone(),
            cursor: state.cursor()?,
            watermark,
            lag_seconds,
            rows_landed_total: summary.rows_landed(),
            rows_quarantined_total: summary.rows_quarantined(),
            has_data: summary.has_data,
            next_fire: next_fire(job.enabled, &job.schedule),
            last_fires: last_fires(warehouse, &job.name),
            freshness_seconds: newest_landing.map(|t| (now - t).num_seconds()),
            newest_landing_at: summary.newest_landing_at.clone(),
            freshness_target_seconds: job.freshness_target.map(|d| d.as_secs()),
            freshness_breach: breach(
                newest_landing.map(|t| (now - t).num_seconds()),
                job.freshness_target,
            ),
        });
    }
    Ok(out)
}

fn next_fire(enabled: bool, schedule: &crate::config::CronExpr) -> Option<String> {
    if !enabled {
        return None;
    }
    let s = Schedule::new(schedule, time::TZ).ok()?;
    s.next_after(chrono::Utc::now())
        .map(|t| crate::schedule::planned::local_rfc3339(t, time::TZ))
}

/// The newest fires, one record each: the last line written for its planned time.
fn last_fires(warehouse: &std::path::Path, job: &str) -> Vec<FireRecord> {
    let distinct = |rs: &[FireRecord]| {
        rs.iter()
            .map(|r| r.planned.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len()
            > LAST_FIRES
    };
    let tail = History::new(warehouse, job)
        .tail_until(distinct)
        .unwrap_or_default();
    let mut out: Vec<FireRecord> = Vec::new();
    for r in tail.into_iter().rev() {
        if !out.iter().any(|o| o.planned == r.planned) {
            out.push(r);
            if out.len() == LAST_FIRES {
                break;
            }
        }
    }
    out.reverse();
    out
}

fn breach(age: Option<i64>, target: Option<std::time::Duration>) -> bool {
    match (age, target) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(a), Some(t)) => a > t.as_secs() as i64,
    }
}

/// The build job as status reports it.
#[derive(Debug, Clone, Serialize)]
pub struct BuildJobStatus {
    pub job: String,
    pub enabled: bool,
    pub schedule: Option<String>,
    pub next_fire: Option<String>,
    pub after_pulls: bool,
    pub quiet_period_seconds: f64,
    pub max_delay_seconds: f64,
    pub last_fires: Vec<FireRecord>,
}

/// A publish job as status reports it.
#[derive(Debug, Clone, Serialize)]
pub struct PublishJobStatus {
    pub job: String,
    pub enabled: bool,
    pub schedule: String,
    pub period: crate::config::PeriodChoice,
    pub provisional: bool,
    pub next_fire: Option<String>,
    pub last_fires: Vec<FireRecord>,
    /// A final job's periods not published yet (held, failed, interrupted, a push pending),
    /// which the daemon tries again every `retry_every_seconds`.
    pub owed: Vec<String>,
    pub retry_every_seconds: u64,
}

/// A reconcile job as status reports it.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileJobStatus {
    pub job: String,
    pub enabled: bool,
    pub schedule: String,
    pub periods: Vec<crate::config::PeriodChoice>,
    pub next_fire: Option<String>,
    pub last_fires: Vec<FireRecord>,
}

/// The index as the published warehouse holds it.
#[derive(Debug, Clone, Serialize)]
pub struct IndexStatus {
    pub published_path: String,
    /// The newest build, published or not.
    pub last_build: Option<BuildSummary>,
    /// The build that made the published file.
    pub published_build: Option<BuildSummary>,
    /// The published file holds every record landed before this time (when its build read the
    /// lake's committed snapshot).
    pub data_as_of: Option<String>,
    /// Seconds since `data_as_of`: the index's freshness.
    pub age_seconds: Option<i64>,
    pub freshness_target_seconds: Option<u64>,
    pub freshness_breach: bool,
    /// Rows landed after the second of `data_as_of`, which the next build will add.
    pub landed_since: bool,
}

/// The job's newest fire that ran (fires that found the lock held, `busy`, ran nothing), if it
/// ended `stuck` (abandoned, blocked in I/O) and the job's lock is still held.
fn stuck(s: &JobStatus) -> Option<&FireRecord> {
    let last = s.last_fires.iter().rev().find(|f| {
        f.event == crate::schedule::FireEvent::Finished
            && f.outcome != Some(crate::schedule::FireOutcome::Busy)
    })?;
    (s.lock_held && last.outcome == Some(crate::schedule::FireOutcome::Stuck)).then_some(last)
}

/// Something failing now: a job whose last run failed, or a build that did not publish.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// `job NAME` or `build`.
    pub what: String,
    pub at: String,
    pub error: String,
}

/// Everything `chiso status --json` and the daemon's /status report.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub generated_at: String,
    pub timezone: String,
    /// The daemon holding the warehouse now, if any.
    pub daemon: Option<Holder>,
    pub jobs: Vec<JobStatus>,
    pub build: Option<BuildJobStatus>,
    pub publish_jobs: Vec<PublishJobStatus>,
    pub reconcile_jobs: Vec<ReconcileJobStatus>,
    pub index: IndexStatus,
    pub publications: PublicationStatus,
    pub failures: Vec<Failure>,
    /// Jobs paused with `chiso jobs pause` (the daemon fires them no more until resumed).
    pub paused: Vec<String>,
    /// Job files changed since the daemon loaded them (not picked up yet, or refused: `error`).
    pub job_changes: Option<crate::schedule::changes::PendingChanges>,
}

/// What was published, as the published warehouse and the ledger say.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PublicationStatus {
    /// Final periods whose numbers moved since their latest final revision (as of the
    /// published build): the next `chiso publish` of each writes a new revision.
    pub revisions_pending: Vec<crate::ledger::Pending>,
    /// Pushes to the portals not acknowledged yet (`None`: no ledger, or it was busy).
    pub pushes_pending: Option<u64>,
    /// The latest revision per period: (period, revision, status).
    pub latest: Vec<(String, i64, String)>,
    /// The newest ended month's reconciliation with the portal's published evaluation
    /// (`chiso reconcile`), as of the published build.
    pub reconciliation: Option<crate::reconcile::StatusSummary>,
}

fn publication_status(warehouse: &std::path::Path) -> PublicationStatus {
    let mut st = PublicationStatus::default();
    let published = crate::models::build::published_path(warehouse);
    if published.exists() {
        match crate::duck::open_read_only(&published).map_err(anyhow::Error::from) {
            Ok(c) => {
                match crate::ledger::pending(&c) {
                    Ok(p) => st.revisions_pending = p,
                    Err(e) => {
                        tracing::warn!(error = %e, "Reading pub_revision_pending from the published warehouse failed.")
                    }
                }
                match crate::reconcile::status(&c) {
                    Ok(r) => st.reconciliation = r,
                    Err(e) => {
                        tracing::warn!(error = %e, "Reading mart_reconciliation from the published warehouse failed.")
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "Opening the published warehouse for the publication status failed.")
            }
        }
    }
    if let Ok(Some(conn)) =
        crate::ledger::open_read_only(warehouse, std::time::Duration::from_secs(2))
    {
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).ok();
        st.pushes_pending =
            count("SELECT count(*) FROM pub_receipts WHERE status = 'pending'").map(|n| n as u64);
        if let Ok(mut stmt) = conn.prepare(
            "SELECT period, max(revision), arg_max(status, revision) FROM pub_revisions GROUP BY period ORDER BY period",
        ) {
            if let Ok(rows) = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))) {
                st.latest = rows.filter_map(Result::ok).collect();
            }
        }
    }
    st
}

/// The whole status of a warehouse.
pub fn collect_report(warehouse: &std::path::Path, jobs: &Jobs) -> anyhow::Result<StatusReport> {
    let statuses = collect(warehouse, &jobs.pulls)?;
    let build_job: Option<&BuildJobConfig> = jobs
        .builds
        .iter()
        .find(|b| b.enabled)
        .or(jobs.builds.first());
    let build = build_job.map(|b| BuildJobStatus {
        job: b.name.clone(),
        enabled: b.enabled,
        schedule: b.schedule.as_ref().map(|s| s.0.clone()),
        next_fire: b.schedule.as_ref().and_then(|s| next_fire(b.enabled, s)),
        after_pulls: b.after_pulls,
        quiet_period_seconds: b.quiet_period.as_secs_f64(),
        max_delay_seconds: b.max_delay.as_secs_f64(),
        last_fires: last_fires(warehouse, &b.name),
    });
    let (last_build, published_build) = crate::models::build::latest_builds(warehouse)?;
    let now = time::now_local();
    let data_as_of = published_build.as_ref().map(|b| b.started_at.clone());
    let age_seconds = data_as_of
        .as_deref()
        .and_then(time::parse_rfc3339_local)
        .map(|t| (now - t).num_seconds());
    let target = build_job.and_then(|b| b.freshness_target);
    let landed_since = match data_as_of.as_deref().and_then(time::parse_rfc3339_local) {
        None => statuses.iter().any(|s| s.has_data),
        Some(asof) => statuses.iter().any(|s| {
            s.newest_landing_at
                .as_deref()
                .and_then(time::parse_rfc3339_local)
                .is_some_and(|t| t > asof)
        }),
    };
    let index = IndexStatus {
        published_path: crate::models::build::published_path(warehouse)
            .display()
            .to_string(),
        last_build: last_build.clone(),
        published_build,
        data_as_of,
        age_seconds,
        freshness_target_seconds: target.map(|d| d.as_secs()),
        freshness_breach: breach(age_seconds, target),
        landed_since,
    };
    let mut failures = Vec::new();
    for s in &statuses {
        if let Some(r) = &s.last_run {
            if matches!(r.outcome, Some(Outcome::Failed)) {
                failures.push(Failure {
                    what: format!("job {}", s.job),
                    at: r.finished_at.clone(),
                    error: r.error.clone().unwrap_or_default(),
                });
            }
        }
        // A run the daemon abandoned, blocked in I/O, that still holds the job: nothing of the
        // job runs until the I/O returns (or the process is restarted).
        if let Some(f) = stuck(s) {
            failures.push(Failure {
                what: format!("job {}", s.job),
                at: f.at.clone(),
                error: f.error.clone().unwrap_or_default(),
            });
        }
    }
    let publish_jobs: Vec<PublishJobStatus> = jobs
        .publishes
        .iter()
        .map(|j| {
            let history = History::new(warehouse, &j.name);
            PublishJobStatus {
                job: j.name.clone(),
                enabled: j.enabled,
                schedule: j.schedule.0.clone(),
                period: j.period.clone(),
                provisional: j.provisional,
                next_fire: next_fire(j.enabled, &j.schedule),
                last_fires: last_fires(warehouse, &j.name),
                owed: if j.provisional {
                    Vec::new()
                } else {
                    history.owed().unwrap_or_default()
                },
                retry_every_seconds: j.retry_every.as_secs(),
            }
        })
        .collect();
    for p in &publish_jobs {
        let last = p
            .last_fires
            .iter()
            .rev()
            .find(|f| f.event != crate::schedule::FireEvent::Claimed);
        // A preview that failed, or a final job that owes periods: someone has to look.
        let open = match last {
            Some(f) if f.outcome == Some(crate::schedule::FireOutcome::Failed) => true,
            _ => !p.owed.is_empty(),
        };
        if let (true, Some(f)) = (open, last) {
            let owed = if p.owed.is_empty() {
                String::new()
            } else {
                format!(
                    "owes {} ({}): ",
                    p.owed.join(", "),
                    f.outcome.map_or("interrupted", |o| o.as_str())
                )
            };
            failures.push(Failure {
                what: format!("publish job {}", p.job),
                at: f.at.clone(),
                error: format!("{owed}{}", f.error.clone().unwrap_or_default()),
            });
        }
    }
    let reconcile_jobs: Vec<ReconcileJobStatus> = jobs
        .reconciles
        .iter()
        .map(|j| ReconcileJobStatus {
            job: j.name.clone(),
            enabled: j.enabled,
            schedule: j.schedule.0.clone(),
            periods: j.periods.clone(),
            next_fire: next_fire(j.enabled, &j.schedule),
            last_fires: last_fires(warehouse, &j.name),
        })
        .collect();
    // A reconciliation that could not run (differences are a result, not a failure).
    for r in &reconcile_jobs {
        let last = r
            .last_fires
            .iter()
            .rev()
            .find(|f| f.event == crate::schedule::FireEvent::Finished);
        if let Some(f) = last.filter(|f| f.outcome == Some(crate::schedule::FireOutcome::Failed)) {
            failures.push(Failure {
                what: format!("reconcile job {}", r.job),
                at: f.at.clone(),
                error: f.error.clone().unwrap_or_default(),
            });
        }
    }
    if let Some(b) = last_build.filter(|b| !b.published) {
        failures.push(Failure {
            what: "build".into(),
            at: b.finished_at.clone(),
            error: b.error.clone().unwrap_or_else(|| "not published".into()),
        });
    }
    Ok(StatusReport {
        generated_at: time::now_rfc3339(),
        timezone: time::TZ.name().to_string(),
        daemon: crate::schedule::lock::current_holder(warehouse),
        jobs: statuses,
        build,
        publish_jobs,
        reconcile_jobs,
        index,
        publications: publication_status(warehouse),
        failures,
        paused: crate::schedule::changes::read_paused(warehouse)
            .into_iter()
            .collect(),
        job_changes: crate::schedule::changes::pending_changes(warehouse)
            .filter(|c| !c.files.is_empty() || c.error.is_some()),
    })
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
                let outcome = if stuck(s).is_some() {
                    "stuck".to_string()
                } else if s.running {
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

fn fire_text(f: &FireRecord) -> String {
    use crate::schedule::FireEvent;
    let when = chrono::DateTime::parse_from_rfc3339(&f.planned)
        .map(|t| t.format("%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| f.planned.clone());
    let what = match f.event {
        FireEvent::Claimed => "running".to_string(),
        FireEvent::Finished => {
            let caught = match f.how {
                Some(crate::schedule::FireHow::CaughtUp) => " (caught up)",
                Some(crate::schedule::FireHow::Manual) => " (by hand)",
                Some(crate::schedule::FireHow::Retry) => " (retry)",
                _ => "",
            };
            format!("{}{caught}", f.outcome.map_or("ran", |o| o.as_str()))
        }
        FireEvent::SkippedOverlap => "skipped: still running".into(),
        FireEvent::SkippedMisfire => "skipped: missed while down".into(),
        FireEvent::Interrupted => "interrupted".into(),
        FireEvent::Changed => f.note.clone().unwrap_or_else(|| "changed".into()),
    };
    format!("{when} {what}")
}

/// The text printed by `chiso status`: the jobs' table, then the schedule, the build, the
/// index and what is failing.
pub fn render_report(r: &StatusReport) -> String {
    let mut out = render(&r.jobs);
    out.push_str("\n\n");
    match &r.daemon {
        Some(d) => out.push_str(&format!(
            "Daemon: chiso serve pid {} since {}{}\n",
            d.pid,
            d.started_at,
            d.http
                .as_deref()
                .map(|h| format!(", http://{h}"))
                .unwrap_or_default()
        )),
        None => out.push_str("Daemon: not running (start it with `chiso serve`)\n"),
    }
    if !r.paused.is_empty() {
        out.push_str(&format!(
            "Paused: {} (`chiso jobs resume NAME`)\n",
            r.paused.join(", ")
        ));
    }
    if let Some(c) = &r.job_changes {
        out.push_str(&format!(
            "Job files changed since the daemon loaded them: {}\n",
            c.files.join(", ")
        ));
        if let Some(e) = &c.error {
            out.push_str(&format!(
                "  not loaded (the daemon keeps the old schedules):\n  {}\n",
                e.trim_end().replace('\n', "\n  ")
            ));
        }
    }
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING);
    t.set_header(vec![
        "JOB",
        "SCHEDULE",
        "NEXT FIRE",
        "FRESHNESS",
        "LAST FIRES",
    ]);
    let now = chrono::Utc::now();
    let until = |next: &Option<String>| {
        next.as_deref()
            .and_then(|n| chrono::DateTime::parse_from_rfc3339(n).ok())
            .map(|n| {
                format!(
                    "in {}",
                    human_duration((n.with_timezone(&chrono::Utc) - now).num_seconds())
                )
            })
            .unwrap_or_else(|| "-".into())
    };
    for s in &r.jobs {
        let fresh = match (s.freshness_seconds, s.freshness_breach) {
            (Some(a), true) => format!(
                "{} (target {}) BREACH",
                human_duration(a),
                human_duration(s.freshness_target_seconds.unwrap_or(0) as i64)
            ),
            (None, true) => "no data (target set) BREACH".into(),
            (Some(a), false) => human_duration(a),
            (None, false) => "-".into(),
        };
        t.add_row(vec![
            s.job.clone(),
            s.schedule.clone(),
            until(&s.next_fire),
            fresh,
            s.last_fires
                .iter()
                .rev()
                .take(3)
                .map(fire_text)
                .collect::<Vec<_>>()
                .join("; "),
        ]);
    }
    if let Some(b) = &r.build {
        t.add_row(vec![
            format!("{} (build)", b.job),
            b.schedule.clone().unwrap_or_else(|| "after pulls".into()),
            until(&b.next_fire),
            String::new(),
            b.last_fires
                .iter()
                .rev()
                .take(3)
                .map(fire_text)
                .collect::<Vec<_>>()
                .join("; "),
        ]);
    }
    for p in &r.publish_jobs {
        let owed = if p.owed.is_empty() {
            String::new()
        } else {
            format!("owes {}; ", p.owed.join(", "))
        };
        t.add_row(vec![
            format!(
                "{} (publish{})",
                p.job,
                if p.provisional { " preview" } else { " final" }
            ),
            p.schedule.clone(),
            until(&p.next_fire),
            String::new(),
            format!(
                "{owed}{}",
                p.last_fires
                    .iter()
                    .rev()
                    .take(3)
                    .map(fire_text)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ]);
    }
    for c in &r.reconcile_jobs {
        t.add_row(vec![
            format!("{} (reconcile)", c.job),
            c.schedule.clone(),
            until(&c.next_fire),
            String::new(),
            c.last_fires
                .iter()
                .rev()
                .take(3)
                .map(fire_text)
                .collect::<Vec<_>>()
                .join("; "),
        ]);
    }
    out.push_str(&t.to_string());
    out.push('\n');
    // What a reconcile job's last fire found, when it found differences.
    for c in &r.reconcile_jobs {
        let last = c
            .last_fires
            .iter()
            .rev()
            .find(|f| f.event == crate::schedule::FireEvent::Finished);
        if let Some(f) =
            last.filter(|f| f.outcome == Some(crate::schedule::FireOutcome::Differences))
        {
            out.push_str(&format!(
                "Reconcile job {}, fire of {}: {}\n",
                c.job,
                f.planned,
                f.error.as_deref().unwrap_or("").replace('\n', "\n  ")
            ));
        }
    }
    let i = &r.index;
    match &i.published_build {
        None => out.push_str(&format!(
            "Index: nothing published yet ({} does not exist; run `chiso build`)\n",
            i.published_path
        )),
        Some(b) => out.push_str(&format!(
            "Index: {} from build {} ({:.1}s); holds what landed before {} ({} ago){}{}\n",
            i.published_path,
            b.build_id,
            b.seconds,
            b.started_at,
            human_duration(i.age_seconds.unwrap_or(0)),
            if i.landed_since {
                "; newer rows have landed since"
            } else {
                ""
            },
            if i.freshness_breach {
                format!(
                    " BREACH (target {})",
                    human_duration(i.freshness_target_seconds.unwrap_or(0) as i64)
                )
            } else {
                String::new()
            }
        )),
    }
    let p = &r.publications;
    if !p.latest.is_empty() {
        out.push_str(&format!(
            "Publications: {}{}\n",
            p.latest
                .iter()
                .map(|(period, rev, status)| {
                    if *rev == crate::publish::revision::PREVIEW {
                        format!("{period} preview ({status})")
                    } else {
                        format!("{period} rev {rev} ({status})")
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
            match p.pushes_pending {
                Some(n) if n > 0 => format!("; {n} push(es) to the portals pending"),
                _ => String::new(),
            }
        ));
    }
    if let Some(r) = &p.reconciliation {
        let beyond: u64 = r.beyond_rounding.values().sum();
        let causes: Vec<String> = r
            .beyond_rounding
            .iter()
            .map(|(c, n)| format!("{} {n}", crate::reconcile::cause_words(c)))
            .collect();
        out.push_str(&format!(
            "Reconciliation with the portal, {} (fetched {}): {} figures, {} beyond rounding{}{}{}\n",
            r.period,
            r.fetched_at.as_deref().unwrap_or("-"),
            r.compared,
            beyond,
            if causes.is_empty() { String::new() } else { format!(" ({})", causes.join(", ")) },
            if r.portal_revisions > 0 {
                format!("; the portal revised {} figure(s) after publishing them", r.portal_revisions)
            } else {
                String::new()
            },
            if beyond > 0 {
                format!("; `chiso reconcile {}` lists them", r.period)
            } else {
                String::new()
            }
        ));
    }
    for x in &p.revisions_pending {
        let shown: Vec<&str> = x.units.iter().take(20).map(String::as_str).collect();
        let how = if x.revisable {
            format!(
                "`chiso publish {}` records revision {}",
                x.period,
                x.revision + 1
            )
        } else {
            format!(
                "closed to routine revisions since {} (revision_policy): `chiso publish {} --correction \"reason\"` records revision {}",
                x.open_until.as_deref().unwrap_or("?"),
                x.period,
                x.revision + 1
            )
        };
        out.push_str(&format!(
            "Revision pending: {} (final revision {} published) moved [{}] for {} unit(s): {}{}; {how}\n",
            x.period,
            x.revision,
            x.reason_codes.join(", "),
            x.units.len(),
            shown.join(", "),
            if x.units.len() > shown.len() {
                format!(" and {} more", x.units.len() - shown.len())
            } else {
                String::new()
            },
        ));
    }
    if r.failures.is_empty() {
        out.push_str("Failing: nothing\n");
    } else {
        for f in &r.failures {
            out.push_str(&format!(
                "Failing: {} since {}: {}\n",
                f.what, f.at, f.error
            ));
        }
    }
    out
}
