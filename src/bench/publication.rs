//! `chiso bench publication-year`: a year of publication replayed in minutes, to measure what a
//! year of it leaves behind and to show that it stays right.
//!
//! The simulator (its own world: late syncs, the 2026-06-15 rename of a base unit, the
//! 2026-10-01 closure of another) runs on 127.0.0.1 with its clock stopped; this process's
//! clock is simulated too ([`crate::time::simulate`]), so landing stamps, revision times and
//! the revision policy follow the simulated days. Every simulated day at 07:00:
//!
//! 1. the clocks are set to the day, and every pull job runs once (as the schedule would have
//!    pulled through the day);
//! 2. the warehouse is built (incrementally, as the daemon builds);
//! 3. the `publish_preview` job publishes the current month as a preview (and sends any push
//!    still pending);
//! 4. from the 11th, the `publish_final` job publishes the previous month as final; a period
//!    it could not publish (held: not final yet, or the guard warns) is owed and tried again
//!    the next day, as the job's `retry_every` would;
//! 5. at the same monthly release (the 11th), every final period `pub_revision_pending` lists
//!    as still open to routine revisions (late data, a new methodology) is revised;
//! 6. on the methodology day, a new methodology version (`dvcqg-2026b`, effective from the
//!    month before the announcement, with a stricter online-share target) is added to the
//!    project's copy of `sql/methodology/`.
//!
//! At the end of every month: the ledger's, the exports' and the warehouse's size and rows;
//! at the end: every period's final revisions (numbered 1, 2, … and each sent once to the
//! portal, in order), what is pending and why, and what `pub_index_unit_period_as_of` says was
//! published of one period at three moments.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime};

use crate::config::{self, PeriodChoice, ProjectConfig, Secret};
use crate::models::build::{build, BuildOptions};
use crate::publish::{self, PublishOptions};
use crate::pull::{self, RunContext};
use crate::sim::faults::Faults;
use crate::sim::server::{self, SimState};
use crate::sim::{SimConfig, World};

/// Options of `chiso bench publication-year`.
pub struct PublicationYear {
    /// Work folder: `project/` (a copy of the project's `sql/`) and `warehouse/`; emptied first.
    pub dir: PathBuf,
    pub sql_dir: PathBuf,
    pub project: ProjectConfig,
    pub jobs: config::Jobs,
    /// Dossiers on an ordinary working day.
    pub per_day: f64,
    pub seed: u64,
    /// The world's first day; the first simulated day is the next one.
    pub from: NaiveDate,
    /// The last simulated day.
    pub until: NaiveDate,
    /// The day the new methodology version is announced (effective from the month before).
    pub methodology_on: NaiveDate,
    /// Build threads.
    pub threads: usize,
    /// The simulated portals' faults (refusals, answers lost after storing, redirects to a
    /// login page): pushes left pending are sent by the next publish.
    pub portal_faults: Faults,
}

/// What a month of publication left behind, measured on its last simulated day.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MonthRow {
    pub month: String,
    /// Final revisions recorded during the month (`2026-02 r1`).
    pub finals: Vec<String>,
    /// Preview revisions kept in the ledger, and preview folders under `exports/`.
    pub previews_kept: i64,
    pub preview_folders: usize,
    pub ledger_bytes: u64,
    pub ledger_rows: i64,
    pub exports_bytes: u64,
    pub exports_files: usize,
    pub warehouse_bytes: u64,
    /// Days a final due was held by the guard (owed and retried).
    pub held_days: u32,
    /// Days a final due waited for its period to become final (a feed's data short of the
    /// period's end plus the grace: sparse petitions).
    pub waiting_days: u32,
    /// Days the preview job failed (nothing to preview yet).
    pub preview_failures: u32,
}

/// A period's final revisions at the end, and what the portal received of it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeriodFinals {
    pub period: String,
    pub revisions: Vec<i64>,
    pub reason_codes: Vec<Vec<String>>,
    /// Revisions each simulated portal stored, in the order it received them.
    pub received: BTreeMap<String, Vec<i64>>,
    /// The ledger's receipts per target: (revision, `acknowledged`, `pending` or
    /// `superseded`).
    pub receipts: BTreeMap<String, Vec<(i64, String)>>,
}

/// What `pub_index_unit_period_as_of(ts)` answers for the root unit of one period.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Vintage {
    pub asked_at: String,
    pub period: String,
    pub revision: Option<i64>,
    pub total: Option<f64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct YearReport {
    pub months: Vec<MonthRow>,
    pub periods: Vec<PeriodFinals>,
    pub pending: Vec<crate::ledger::Pending>,
    pub vintages: Vec<Vintage>,
    pub days: u32,
    pub seconds: f64,
    /// The simulated portal: requests it refused or answered as duplicates.
    pub portal_duplicates: u32,
    /// The registry rename as the last final revision of a later period publishes it.
    pub renamed_unit: Option<(String, String)>,
}

fn at_seven(d: NaiveDate) -> NaiveDateTime {
    d.and_time(NaiveTime::from_hms_opt(7, 0, 0).expect("valid"))
}

/// Bytes and files under `dir` (0 when missing).
pub(super) fn tree_size(dir: &Path) -> (u64, usize) {
    let mut bytes = 0;
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => {
                    bytes += m.len();
                    files += 1;
                }
                Err(_) => {}
            }
        }
    }
    (bytes, files)
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// The new methodology version: `dvcqg-2026` with the online-share target raised from 0.5
/// to 0.6, effective from `effective` (`YYYY-MM`).
fn new_methodology(sql_dir: &Path, effective: &str) -> anyhow::Result<()> {
    let from = sql_dir.join("methodology/dvcqg-2026.csv");
    let text =
        std::fs::read_to_string(&from).with_context(|| format!("reading {}", from.display()))?;
    let mut rdr = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let headers = rdr.headers()?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("{} has no column {name}", from.display()))
    };
    let (m, eff, ind, target) = (
        col("methodology")?,
        col("effective_from")?,
        col("indicator")?,
        col("target")?,
    );
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(&headers)?;
    for rec in rdr.records() {
        let rec = rec?;
        let row: Vec<String> = rec
            .iter()
            .enumerate()
            .map(|(i, v)| match i {
                i if i == m => "dvcqg-2026b".to_string(),
                i if i == eff => effective.to_string(),
                i if i == target && &rec[ind] == "ONLINE_DOSSIER_SHARE" => "0.6".to_string(),
                _ => v.to_string(),
            })
            .collect();
        out.write_record(&row)?;
    }
    std::fs::write(
        sql_dir.join("methodology/dvcqg-2026b.csv"),
        out.into_inner()?,
    )?;
    Ok(())
}

pub(super) fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), &target)?;
        }
    }
    Ok(())
}

/// A build of `w` that must publish: an error names the models that failed.
pub(super) async fn build_published(
    w: &Path,
    sql: &Path,
    pulls: &[config::JobConfig],
    o: &BuildOptions,
) -> anyhow::Result<()> {
    let (w, s, j, o) = (
        w.to_path_buf(),
        sql.to_path_buf(),
        pulls.to_vec(),
        o.clone(),
    );
    let record = tokio::task::spawn_blocking(move || build(&w, &s, &j, &o)).await??;
    if !record.published {
        let why: Vec<String> = record
            .models
            .iter()
            .filter_map(|m| m.error.as_ref().map(|e| format!("{}: {e}", m.model)))
            .collect();
        bail!("the build was not published: {}", why.join("; "));
    }
    Ok(())
}

fn publish_job(
    jobs: &config::Jobs,
    provisional: bool,
) -> anyhow::Result<&config::PublishJobConfig> {
    jobs.publishes
        .iter()
        .find(|j| j.provisional == provisional)
        .with_context(|| {
            format!(
                "the project has no {} publish job (jobs/publish_{}.toml)",
                if provisional { "preview" } else { "final" },
                if provisional { "preview" } else { "final" }
            )
        })
}

/// Runs the year. The process clock is simulated for its length and restored after.
pub async fn run(opts: PublicationYear) -> anyhow::Result<YearReport> {
    let result = run_inner(opts).await;
    crate::time::simulate(None);
    result
}

async fn run_inner(mut opts: PublicationYear) -> anyhow::Result<YearReport> {
    let t0 = std::time::Instant::now();
    if opts.until <= opts.from {
        bail!("--until {} is not after --from {}", opts.until, opts.from);
    }
    if opts.dir.exists() {
        std::fs::remove_dir_all(&opts.dir)
            .with_context(|| format!("emptying {}", opts.dir.display()))?;
    }
    let sql_dir = opts.dir.join("project/sql");
    copy_dir(&opts.sql_dir, &sql_dir)?;
    let warehouse = opts.dir.join("warehouse");
    std::fs::create_dir_all(&warehouse)?;
    let preview_job = publish_job(&opts.jobs, true)?.clone();
    let final_job = publish_job(&opts.jobs, false)?.clone();

    // The world to the last day plus a month of late syncs; its clock walks from the start.
    let sim = SimConfig {
        seed: opts.seed,
        per_day: opts.per_day,
        from: opts.from,
        now: at_seven(opts.until),
        speed: 0.0,
        horizon_days: 0,
        ..SimConfig::default()
    };
    let world = tokio::task::spawn_blocking(move || World::build(sim))
        .await
        .context("building the simulated world")?;
    let token = uuid::Uuid::new_v4().simple().to_string();
    let handle = server::start(
        SimState::new(world, opts.portal_faults.clone(), Some(token.clone())),
        0,
    )
    .await
    .context("starting the simulator on 127.0.0.1")?;
    opts.project
        .retarget_sources(&handle.base_url(), &Secret::new(token));
    let pulls: Vec<config::JobConfig> = opts
        .jobs
        .pulls
        .iter()
        // The portal's published evaluation is not what this measures (and would be pulled
        // and recomputed for each replayed day).
        .filter(|j| {
            j.enabled
                && !matches!(
                    j.protocol,
                    config::Protocol::File(_) | config::Protocol::Evaluation(_)
                )
        })
        .cloned()
        .map(|mut j| {
            if let Some(s) = &j.source {
                j.source = opts.project.sources.get(&s.name).cloned();
            }
            j
        })
        .collect();
    let cfg = opts.project.publish.clone();
    let ctx = RunContext {
        warehouse: warehouse.clone(),
        project_root: opts.dir.join("project"),
        http: crate::feeds::http::http_client(),
    };
    let build_opts = BuildOptions {
        select: Vec::new(),
        full_refresh: false,
        threads: opts.threads,
        memory_limit: None,
        storage_version: opts.project.storage_version.clone(),
        timeout: None,
    };

    let mut months: Vec<MonthRow> = Vec::new();
    let mut owed: BTreeSet<String> = BTreeSet::new();
    let mut finals_this_month: Vec<String> = Vec::new();
    let mut held_days = 0u32;
    let mut preview_failures = 0u32;
    let mut waiting_days = 0u32;
    let mut days = 0u32;
    let mut day = opts.from + Duration::days(1);
    let progress = indicatif::ProgressBar::new((opts.until - opts.from).num_days() as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} days, {elapsed}")
            .expect("template"),
    );
    while day <= opts.until {
        let now = at_seven(day);
        crate::time::simulate(Some(now));
        handle.state.clock.set(now);
        progress.set_message(day.to_string());
        if day == opts.methodology_on {
            let effective = (day - Duration::days(day.day() as i64))
                .format("%Y-%m")
                .to_string();
            new_methodology(&sql_dir, &effective)?;
        }
        for (name, r) in pull::run_many(&ctx, &pulls).await {
            if let Err(e) = r {
                bail!("{day}: the pull {name} failed: {e}");
            }
        }
        build_published(&warehouse, &sql_dir, &pulls, &build_opts)
            .await
            .with_context(|| format!("{day}"))?;
        // The preview job: the current month.
        let current = publish::choose_period(&PeriodChoice::CurrentMonth, day);
        // (A day with nothing to preview yet fails, as the job's fire would.)
        if let Err(e) = publish::publish(
            &warehouse,
            &pulls,
            &cfg,
            std::slice::from_ref(&current),
            &PublishOptions::for_job(&preview_job),
        )
        .await
        {
            tracing::info!(%day, error = %format!("{e:#}"), "The preview failed.");
            preview_failures += 1;
        }
        // The final job: the previous month from the 11th; what it could not publish is owed.
        let first_month = opts.from.format("%Y-%m").to_string();
        if day.day() == 11 {
            let previous = publish::choose_period(&PeriodChoice::PreviousMonth, day);
            if previous >= first_month {
                owed.insert(previous);
            }
        }
        // The monthly release revises, with the new final, every earlier final period still
        // open to routine revisions whose numbers moved (as statistics offices revise at
        // their releases, not whenever a number twitches).
        let mut revise: Vec<String> = Vec::new();
        if day.day() == 11 {
            let conn =
                crate::duck::open_read_only(&crate::models::build::published_path(&warehouse))?;
            conn.execute_batch(&format!(
                "SET VARIABLE chiso_now = {};",
                crate::time::now_sql()
            ))?;
            revise = crate::ledger::pending(&conn)?
                .into_iter()
                .filter(|p| p.revisable)
                .map(|p| p.period)
                .collect();
        }
        let (mut held_today, mut waiting_today) = (false, false);
        for period in owed.clone().into_iter().chain(revise) {
            let mut o = PublishOptions::for_job(&final_job);
            if !owed.contains(&period) {
                o.note = Some("routine revision by the publisher (pub_revision_pending)".into());
            }
            match publish::publish(&warehouse, &pulls, &cfg, std::slice::from_ref(&period), &o)
                .await
            {
                Ok(r) => {
                    owed.remove(&period);
                    for p in r.periods.iter().filter(|p| p.created) {
                        finals_this_month.push(format!("{} r{}", p.period, p.revision));
                    }
                }
                Err(e) if e.downcast_ref::<publish::Held>().is_some() => {
                    let by_guard = e
                        .downcast_ref::<publish::Held>()
                        .is_some_and(|h| h.reasons.contains(&publish::HeldFor::Guard));
                    if owed.contains(&period) {
                        if by_guard {
                            held_today = true;
                        } else {
                            waiting_today = true;
                        }
                    }
                    tracing::info!(%day, %period, reason = %format!("{e:#}"), "Held.");
                }
                Err(e) => return Err(e.context(format!("{day}: publishing {period}"))),
            }
        }
        held_days += u32::from(held_today);
        waiting_days += u32::from(waiting_today);
        days += 1;
        progress.inc(1);
        let next = day + Duration::days(1);
        if next.month() != day.month() || next > opts.until {
            let mut row = measure(
                &warehouse,
                &day.format("%Y-%m").to_string(),
                finals_this_month.split_off(0),
                held_days,
            )?;
            row.preview_failures = preview_failures;
            row.waiting_days = waiting_days;
            months.push(row);
            held_days = 0;
            preview_failures = 0;
            waiting_days = 0;
        }
        day = next;
    }
    progress.finish_and_clear();

    // The end: finals per period and what the portal received, what is pending, vintages.
    let ledger_conn =
        crate::ledger::open_read_only(&warehouse, std::time::Duration::from_secs(30))?
            .context("no ledger was written")?;
    let mut finals: BTreeMap<String, (Vec<i64>, Vec<Vec<String>>)> = BTreeMap::new();
    {
        let mut stmt = ledger_conn.prepare(
            "SELECT period, revision, coalesce(CAST(json_extract(change_note, '$.reason_codes') AS VARCHAR[]), []) \
             FROM pub_revisions WHERE status = 'final' ORDER BY period, revision",
        )?;
        let rows = stmt.query_map([], |r| {
            let codes: duckdb::types::Value = r.get(2)?;
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                crate::ledger::strings(codes),
            ))
        })?;
        for row in rows {
            let (p, rev, codes) = row?;
            let e = finals.entry(p).or_default();
            e.0.push(rev);
            e.1.push(codes);
        }
    }
    let mut receipts: BTreeMap<String, BTreeMap<String, Vec<(i64, String)>>> = BTreeMap::new();
    {
        let mut stmt = ledger_conn.prepare(
            "SELECT period, target, revision, status FROM pub_receipts ORDER BY period, target, revision",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        for row in rows {
            let (period, target, rev, status) = row?;
            receipts
                .entry(period)
                .or_default()
                .entry(target)
                .or_default()
                .push((rev, status));
        }
    }
    let (received, portal_duplicates) = {
        let portals = handle.state.portals.lock().expect("portals");
        let mut by: BTreeMap<String, BTreeMap<String, Vec<i64>>> = BTreeMap::new();
        for r in &portals.received {
            by.entry(r.period.clone())
                .or_default()
                .entry(r.portal.clone())
                .or_default()
                .push(r.revision.parse().unwrap_or(-1));
        }
        (
            by,
            portals.received.iter().map(|r| r.duplicates).sum::<u32>(),
        )
    };
    handle.stop().await;
    let periods = finals
        .into_iter()
        .map(|(period, (revisions, reason_codes))| PeriodFinals {
            received: received.get(&period).cloned().unwrap_or_default(),
            receipts: receipts.remove(&period).unwrap_or_default(),
            period,
            revisions,
            reason_codes,
        })
        .collect::<Vec<_>>();
    let conn = crate::duck::open_read_only(&crate::models::build::published_path(&warehouse))?;
    conn.execute_batch(&format!(
        "SET VARIABLE chiso_now = {};",
        crate::time::now_sql()
    ))?;
    let pending = crate::ledger::pending(&conn)?;
    // The period with the most final revisions, asked about at its first revision, halfway
    // and at the end.
    let mut vintages = Vec::new();
    if let Some(p) = periods
        .iter()
        .max_by_key(|p| (p.revisions.len(), std::cmp::Reverse(p.period.clone())))
    {
        let times: Vec<String> = {
            let mut stmt = ledger_conn.prepare(
                "SELECT strftime(created_at + INTERVAL 1 MINUTE, '%Y-%m-%d %H:%M:%S') FROM pub_revisions \
                 WHERE period = ? AND status = 'final' ORDER BY revision",
            )?;
            let rows = stmt.query_map([&p.period], |r| r.get::<_, String>(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut asked = vec![times.first().cloned(), times.get(times.len() / 2).cloned()];
        asked.push(Some(
            crate::time::now_local()
                .format("%Y-%m-%d %H:%M:%S")
                .to_string(),
        ));
        let asked: Vec<String> = asked
            .into_iter()
            .flatten()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for ts in asked {
            let row: Option<(i64, f64)> = {
                use duckdb::OptionalExt;
                conn.query_row(
                    "SELECT revision, total FROM pub_index_unit_period_as_of(CAST(? AS TIMESTAMP)) \
                     WHERE period = ? AND unit_level = 1",
                    duckdb::params![ts, p.period],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?
            };
            vintages.push(Vintage {
                asked_at: ts,
                period: p.period.clone(),
                revision: row.map(|r| r.0),
                total: row.map(|r| r.1),
            });
        }
    }
    let renamed_unit = {
        use duckdb::OptionalExt;
        conn.query_row(
            "SELECT period || ' r' || revision, unit_name FROM pub_latest_index_unit_period WHERE unit_id = ? \
             ORDER BY period DESC LIMIT 1",
            [crate::sim::units::RENAMED_UNIT],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        )
        .optional()
        .unwrap_or(None)
    };
    Ok(YearReport {
        months,
        periods,
        pending,
        vintages,
        days,
        seconds: t0.elapsed().as_secs_f64(),
        portal_duplicates,
        renamed_unit,
    })
}

fn measure(
    warehouse: &Path,
    month: &str,
    finals: Vec<String>,
    held_days: u32,
) -> anyhow::Result<MonthRow> {
    let ledger_file = warehouse.join(crate::ledger::FILE);
    let ledger_bytes =
        file_size(&ledger_file) + file_size(&ledger_file.with_extension("duckdb.wal"));
    let (previews_kept, ledger_rows) =
        match crate::ledger::open_read_only(warehouse, std::time::Duration::from_secs(30))? {
            None => (0, 0),
            Some(conn) => {
                let previews: i64 = conn.query_row(
                    "SELECT count(*) FROM pub_revisions WHERE status = 'provisional'",
                    [],
                    |r| r.get(0),
                )?;
                let mut rows = 0i64;
                for t in crate::ledger::TABLES {
                    if crate::duck::object_kind(&conn, t)?.is_some() {
                        rows += conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| {
                            r.get::<_, i64>(0)
                        })?;
                    }
                }
                (previews, rows)
            }
        };
    let exports = warehouse.join("exports");
    let (exports_bytes, exports_files) = tree_size(&exports);
    let preview_folders = std::fs::read_dir(&exports)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|p| std::fs::read_dir(p.path()).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with("preview-"))
        .count();
    let published = crate::models::build::published_path(warehouse);
    Ok(MonthRow {
        month: month.to_string(),
        finals,
        previews_kept,
        preview_folders,
        ledger_bytes,
        ledger_rows,
        exports_bytes,
        exports_files,
        warehouse_bytes: file_size(&published),
        held_days,
        waiting_days: 0,
        preview_failures: 0,
    })
}

/// The report as tables.
pub fn print(r: &YearReport) {
    let mib = |b: u64| b as f64 / 1_048_576.0;
    println!(
        "A year of publication: {} simulated days in {:.0} s.\n",
        r.days, r.seconds
    );
    println!(
        "{:<8} {:<28} {:>8} {:>8} {:>10} {:>11} {:>11} {:>7} {:>13} {:>5} {:>7}",
        "MONTH",
        "FINALS RECORDED",
        "PREVIEWS",
        "FOLDERS",
        "LEDGER MiB",
        "LEDGER ROWS",
        "EXPORTS MiB",
        "FILES",
        "WAREHOUSE MiB",
        "HELD",
        "WAITING"
    );
    for m in &r.months {
        println!(
            "{:<8} {:<28} {:>8} {:>8} {:>10.2} {:>11} {:>11.2} {:>7} {:>13.1} {:>5} {:>7}",
            m.month,
            if m.finals.is_empty() {
                "-".to_string()
            } else {
                m.finals.join(", ")
            },
            m.previews_kept,
            m.preview_folders,
            mib(m.ledger_bytes),
            m.ledger_rows,
            mib(m.exports_bytes),
            m.exports_files,
            mib(m.warehouse_bytes),
            m.held_days,
            m.waiting_days
        );
    }
    println!(
        "\n{:<8} {:<16} {:<22} REASON CODES (revision 2 on)",
        "PERIOD", "FINALS", "PORTALS GOT"
    );
    for p in &r.periods {
        let list = |v: &[i64]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let got: BTreeSet<&Vec<i64>> = p.received.values().collect();
        let got = match got.len() {
            0 => "-".to_string(),
            1 => format!(
                "{} (each of {})",
                list(got.first().expect("one")),
                p.received.len()
            ),
            _ => p
                .received
                .iter()
                .map(|(portal, v)| format!("{portal} {}", list(v)))
                .collect::<Vec<_>>()
                .join("; "),
        };
        let superseded = p
            .receipts
            .values()
            .flatten()
            .filter(|(_, s)| s == "superseded")
            .count();
        let got = if superseded > 0 {
            format!("{got}, {superseded} superseded")
        } else {
            got
        };
        println!(
            "{:<8} {:<16} {:<22} {}",
            p.period,
            list(&p.revisions),
            got,
            p.reason_codes
                .iter()
                .skip(1)
                .map(|c| c.join("+"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    if r.pending.is_empty() {
        println!("\nPending revisions at the end: none.");
    } else {
        println!("\nPending revisions at the end:");
        for p in &r.pending {
            println!(
                "  {} (after revision {}): {} unit(s), {}; {}",
                p.period,
                p.revision,
                p.units.len(),
                p.reason_codes.join(", "),
                if p.revisable {
                    format!(
                        "open to routine revision until {}",
                        p.open_until.as_deref().unwrap_or("always")
                    )
                } else {
                    format!(
                        "closed since {} (corrections only)",
                        p.open_until.as_deref().unwrap_or("?")
                    )
                }
            );
        }
    }
    println!(
        "\nWhat had been published, pub_index_unit_period_as_of(ts), the whole administration:"
    );
    for v in &r.vintages {
        println!(
            "  as of {}: {} {}",
            v.asked_at,
            v.period,
            match (v.revision, v.total) {
                (Some(rev), Some(t)) => format!("revision {rev}, total {t:.2}"),
                _ => "nothing published yet".into(),
            }
        );
    }
    if let Some((rev, name)) = &r.renamed_unit {
        println!(
            "\nThe registry rename of {} (2026-06-15): its latest final row ({rev}) is named {name:?}.",
            crate::sim::units::RENAMED_UNIT
        );
    }
    println!("Portal answers marked duplicate: {}.", r.portal_duplicates);
}
