//! `chiso bench year`: what a year of the default schedules leaves in the warehouse, and what
//! each recurring operation costs on it against a fresh warehouse.
//!
//! Both warehouses start from the same pulls of the simulator (its clock stopped, on
//! 127.0.0.1). Then each is aged through the code that writes the state in production, by the
//! job files' own schedules ending at the same moment: "fresh" by one day of them, "year" by
//! `days`. So both end with the same live files (the last day's small files and one compacted
//! file per folder) and differ by their history:
//! - every pull job's commit log: one commit per planned time (a dossiers pull every five
//!   minutes is 105,120 a year), each naming the small file such a pull lands, the daemon's
//!   compaction every six hours of the files older than a day, a checkpoint at each run's end
//!   (`JobState::commit`, `JobState::checkpoint`; see [`commit_year`]);
//! - every job's fire history: a claimed and a finished line per planned time (the build's
//!   every five minutes, as pulls landing rows trigger it), then the daemon's retention
//!   (`History::append`, `History::compact`);
//! - a build record every five minutes, up to `RECORDS_KEPT` + 100, in `_state/builds/` and in
//!   the warehouse's build tables; then real builds (which prune both);
//! - a preview of the world's month for both, and for the year a final revision of every
//!   closed month (`publish`).
//!
//! Measured on both, the median of `repeat`: a pull that finds nothing new (reading the log,
//! committing, checkpointing), the snapshot a build reads, `chiso status`'s collection, the
//! daemon's start-up (to its `Started` notice) and an uncached `/status`, a preview
//! publication, what a compaction of the dossiers dataset decides (a dry run). Then the size
//! of every state file of the year's warehouse, by kind, against its bound (docs/daemon.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};

use super::publication::build_published;
use crate::config::{self, ProjectConfig, Secret};
use crate::lake::commit::{CommitEntry, EntryKind, JobState, Outcome, RunTotals};
use crate::lake::parquet::LandedFile;
use crate::models::build::BuildOptions;
use crate::publish::{self, PublishOptions};
use crate::pull::{self, RunContext};
use crate::schedule::history::{FireEvent, FireHow, FireOutcome, FireRecord, History};
use crate::schedule::planned::{local_rfc3339, Schedule};
use crate::serve::{Notice, ServeOptions};
use crate::sim::faults::Faults;
use crate::sim::server::{self, SimState};
use crate::sim::World;

/// Options of `chiso bench year`.
pub struct YearBench {
    /// Work folder: `project/`, `fresh/` and `year/`; emptied first.
    pub dir: PathBuf,
    pub sql_dir: PathBuf,
    pub project: ProjectConfig,
    pub jobs: config::Jobs,
    /// Days of schedules to age the warehouse by.
    pub days: u32,
    /// Dossiers in the simulated world.
    pub dossiers: u64,
    pub seed: u64,
    /// Build threads.
    pub threads: usize,
    /// Times each operation is measured (the median is reported).
    pub repeat: usize,
    /// The daemon's fire-history retention.
    pub retention_days: u32,
}

/// One operation, fresh and after a year.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OpRow {
    pub op: String,
    pub fresh_ms: f64,
    pub year_ms: f64,
}

impl OpRow {
    pub fn ratio(&self) -> f64 {
        self.year_ms / self.fresh_ms.max(1e-9)
    }
}

/// One kind of state file in the year's warehouse.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StateRow {
    pub what: String,
    pub files: u64,
    pub largest_bytes: u64,
    pub total_bytes: u64,
    pub bound: String,
}

/// What the year wrote.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Aged {
    pub commits: u64,
    pub compactions: u64,
    pub fire_lines_written: u64,
    pub fire_lines_kept: u64,
    pub build_records_written: u64,
    pub finals: Vec<String>,
    pub seconds: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct YearReport {
    pub days: u32,
    pub aged: Aged,
    pub ops: Vec<OpRow>,
    pub state: Vec<StateRow>,
}

/// The daemon's compaction cadence, and the files a pull lands between two.
const COMPACT_EVERY: chrono::Duration = chrono::Duration::hours(6);

pub async fn run(mut opts: YearBench) -> anyhow::Result<YearReport> {
    if opts.dir.exists() {
        std::fs::remove_dir_all(&opts.dir)
            .with_context(|| format!("emptying {}", opts.dir.display()))?;
    }
    let root = opts.dir.join("project");
    super::publication::copy_dir(&opts.sql_dir, &root.join("sql"))?;
    let sim = super::sim_config(opts.dossiers, opts.seed);
    let month = sim.now.format("%Y-%m").to_string();
    let world = tokio::task::spawn_blocking(move || World::build(sim))
        .await
        .context("building the simulated world")?;
    let token = uuid::Uuid::new_v4().simple().to_string();
    let handle = server::start(SimState::new(world, Faults::none(), Some(token.clone())), 0)
        .await
        .context("starting the simulator on 127.0.0.1")?;
    opts.project
        .retarget_sources(&handle.base_url(), &Secret::new(token));
    for j in &mut opts.jobs.pulls {
        if let Some(s) = &j.source {
            j.source = opts.project.sources.get(&s.name).cloned();
        }
    }
    opts.jobs
        .pulls
        .retain(|j| j.enabled && !matches!(j.protocol, config::Protocol::File(_)));
    let mut build_opts = BuildOptions::for_project(&opts.project.storage_version, &opts.jobs);
    build_opts.threads = opts.threads;
    let preview = PublishOptions {
        provisional: true,
        ..Default::default()
    };

    // Both warehouses start from the same pulls; "fresh" is then a day of the schedules,
    // "year" `days` of them, ending at the same moment with the same live files (the last
    // day's small files and one compacted file per folder).
    eprintln!("every pull once");
    let base = opts.dir.join("base");
    std::fs::create_dir_all(&base)?;
    let ctx = |w: &Path| RunContext {
        warehouse: w.to_path_buf(),
        project_root: root.clone(),
        http: crate::feeds::http::http_client(),
    };
    for (name, r) in pull::run_many(&ctx(&base), &opts.jobs.pulls).await {
        r.map_err(anyhow::Error::msg)
            .with_context(|| format!("pulling {name}"))?;
    }
    let (fresh, year) = (opts.dir.join("fresh"), opts.dir.join("year"));
    super::publication::copy_dir(&base, &fresh)?;
    super::publication::copy_dir(&base, &year)?;
    std::fs::remove_dir_all(&base)?;
    let until = chrono::Utc::now();
    eprintln!("fresh: a day of the schedules");
    age(&opts, &fresh, 1, until).await?;
    let t = Instant::now();
    eprintln!("a year: {} days of the schedules", opts.days);
    let mut aged = age(&opts, &year, opts.days, until).await?;
    let cfg = opts.project.publish.clone();
    for (w, days) in [(&fresh, 1), (&year, opts.days)] {
        build_published(w, &root.join("sql"), &opts.jobs.pulls, &build_opts).await?;
        let n = add_build_records(w, days, until)?;
        if days == opts.days {
            aged.build_records_written = n;
        }
        publish::publish(
            w,
            &opts.jobs.pulls,
            &cfg,
            std::slice::from_ref(&month),
            &preview,
        )
        .await
        .with_context(|| format!("publishing a preview of {month}"))?;
    }
    // The year's finals: every closed month of the world.
    for m in closed_months(&month)? {
        let o = PublishOptions {
            accept: Some("chiso bench year".into()),
            ..Default::default()
        };
        let r = publish::publish(&year, &opts.jobs.pulls, &cfg, std::slice::from_ref(&m), &o)
            .await
            .with_context(|| format!("publishing {m} as final"))?;
        aged.finals.extend(
            r.periods
                .iter()
                .filter(|p| p.created)
                .map(|p| format!("{} r{}", p.period, p.revision)),
        );
    }
    // The next build copies the ledger (and prunes the build records and tables).
    for w in [&fresh, &year] {
        build_published(w, &root.join("sql"), &opts.jobs.pulls, &build_opts).await?;
    }
    aged.seconds = t.elapsed().as_secs_f64();

    let mut ops: Vec<OpRow> = Vec::new();
    let mut measure = |op: &str, f: f64, y: f64| {
        eprintln!("{op}: fresh {f:.1} ms, a year {y:.1} ms");
        ops.push(OpRow {
            op: op.into(),
            fresh_ms: f,
            year_ms: y,
        });
    };
    let dossiers = opts
        .jobs
        .pulls
        .iter()
        .find(|j| j.name == "dossiers")
        .context("the project has no dossiers job")?
        .clone();
    let n = opts.repeat.max(1);
    for (label, w) in [("fresh", &fresh), ("year", &year)] {
        // Warm the page cache and let the first run land what the simulator still had.
        pull::run_job(&ctx(w), &dossiers)
            .await
            .with_context(|| format!("{label}: pulling dossiers"))?;
    }
    let mut pulls = [0.0; 2];
    for (i, w) in [&fresh, &year].into_iter().enumerate() {
        pulls[i] = median_async(n, || async {
            pull::run_job(&ctx(w), &dossiers).await?;
            Ok(())
        })
        .await?;
    }
    measure(
        "a pull that finds nothing new (dossiers)",
        pulls[0],
        pulls[1],
    );
    let (f, y) = both(n, &fresh, &year, |w| {
        crate::models::snapshot::read(w, &opts.jobs.pulls).map(|_| ())
    })?;
    measure("the snapshot a build reads (every dataset)", f, y);
    let (f, y) = both(n, &fresh, &year, |w| {
        crate::status::collect_report(w, &opts.jobs).map(|_| ())
    })?;
    measure("`chiso status` (collecting the report)", f, y);
    let mut daemon = [(0.0, 0.0); 2];
    for (i, w) in [&fresh, &year].into_iter().enumerate() {
        daemon[i] = daemon_costs(&opts, &root, w, n).await?;
    }
    measure(
        "daemon start-up (to its Started notice)",
        daemon[0].0,
        daemon[1].0,
    );
    measure("`/status`, uncached", daemon[0].1, daemon[1].1);
    let mut publishes = [0.0; 2];
    for (i, w) in [&fresh, &year].into_iter().enumerate() {
        publishes[i] = median_async(n, || async {
            publish::publish(
                w,
                &opts.jobs.pulls,
                &cfg,
                std::slice::from_ref(&month),
                &preview,
            )
            .await?;
            Ok(())
        })
        .await?;
    }
    measure(
        &format!("a preview publication ({month})"),
        publishes[0],
        publishes[1],
    );
    let (f, y) = both(n, &fresh, &year, |w| {
        let o = crate::lake::compact::CompactOptions {
            older_than: chrono::Duration::zero(),
            min_files: 10,
            published_compactions: crate::models::build::published_compactions(w)?,
            // What it decides (the state it reads); the rewrite costs what the rows do.
            dry_run: true,
        };
        crate::lake::compact::compact_job(w, &dossiers.name, &dossiers.dataset, &o).map(|_| ())
    })?;
    measure(
        "a compaction of the dossiers dataset (deciding: a dry run)",
        f,
        y,
    );
    handle.stop().await;
    Ok(YearReport {
        days: opts.days,
        aged,
        ops,
        state: state_files(&year, &opts)?,
    })
}

/// The months of 2026 before `month` (the world's first year).
fn closed_months(month: &str) -> anyhow::Result<Vec<String>> {
    let last: u32 = month[5..].parse().context("month")?;
    Ok((1..last)
        .map(|m| format!("{}-{m:02}", &month[..4]))
        .collect())
}

/// Every planned time of `expr` in `[from, until)`.
fn planned(
    expr: &config::CronExpr,
    tz: chrono_tz::Tz,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> anyhow::Result<Vec<DateTime<Utc>>> {
    let s = Schedule::new(expr, tz).map_err(anyhow::Error::msg)?;
    let mut out = Vec::new();
    let mut t = from;
    while let Some(n) = s.next_after(t) {
        if n >= until {
            break;
        }
        out.push(n);
        t = n;
    }
    Ok(out)
}

/// Ages the warehouse at `w` by `days` of schedules ending at `until`.
async fn age(opts: &YearBench, w: &Path, days: u32, until: DateTime<Utc>) -> anyhow::Result<Aged> {
    let from = until - chrono::Duration::days(i64::from(days));
    let tz = opts.project.timezone;
    let mut aged = Aged::default();

    // Commit logs: each job on its own thread (the commits are fsync-bound).
    eprintln!("a year: commit logs of {} pull jobs", opts.jobs.pulls.len());
    let mut work = Vec::new();
    for j in &opts.jobs.pulls {
        work.push((j.clone(), planned(&j.schedule, tz, from, until)?));
    }
    let total: u64 = work.iter().map(|(_, p)| p.len() as u64).sum();
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("commits [{bar:40}] {pos}/{len}, {per_sec}, {eta}")
            .expect("template"),
    );
    let counts = std::thread::scope(|s| {
        let handles: Vec<_> = work
            .iter()
            .map(|(job, times)| {
                let bar = bar.clone();
                s.spawn(move || commit_year(w, job, times, &bar))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a commit thread panicked"))
            .collect::<Vec<_>>()
    });
    bar.finish_and_clear();
    for c in counts {
        let (commits, compactions) = c?;
        aged.commits += commits;
        aged.compactions += compactions;
    }

    // Fire histories, then the daemon's retention.
    eprintln!("a year: fire histories");
    let keep_after = local_rfc3339(
        until - chrono::Duration::days(i64::from(opts.retention_days)),
        tz,
    );
    let every_five = config::CronExpr("*/5 * * * *".into());
    let mut schedules: Vec<(String, config::CronExpr, FireHow)> = opts
        .jobs
        .pulls
        .iter()
        .map(|j| (j.name.clone(), j.schedule.clone(), FireHow::OnTime))
        .collect();
    for b in opts.jobs.builds.iter().filter(|b| b.enabled) {
        // Pulls landing rows trigger a build after each five-minute pull.
        schedules.push((b.name.clone(), every_five.clone(), FireHow::Triggered));
    }
    for p in opts.jobs.publishes.iter().filter(|p| p.enabled) {
        schedules.push((p.name.clone(), p.schedule.clone(), FireHow::OnTime));
    }
    let fires = crate::schedule::history::fires_dir(w);
    std::fs::create_dir_all(&fires).with_context(|| format!("creating {}", fires.display()))?;
    for (name, expr, how) in schedules {
        let history = History::new(w, &name);
        let times = planned(&expr, tz, from, until)?;
        for chunk in times.chunks(5_000) {
            let mut lines = Vec::with_capacity(chunk.len() * 2);
            for t in chunk {
                let planned = local_rfc3339(*t, tz);
                let mut claimed = FireRecord::new(&name, &planned, FireEvent::Claimed);
                claimed.how = Some(how);
                claimed.at = local_rfc3339(*t, tz);
                let mut done = FireRecord::new(&name, &planned, FireEvent::Finished);
                done.how = Some(how);
                done.at = local_rfc3339(*t + chrono::Duration::seconds(2), tz);
                done.outcome = Some(FireOutcome::Ok);
                done.run_ids = vec![uuid::Uuid::new_v4().simple().to_string()];
                done.attempts = 1;
                done.rows_landed = 12;
                done.seconds = Some(1.2);
                lines.push(claimed);
                lines.push(done);
            }
            history
                .append(&lines)
                .with_context(|| format!("appending to {}", history.path().display()))?;
            aged.fire_lines_written += lines.len() as u64;
        }
        if times.is_empty() {
            continue;
        }
        history
            .compact(&keep_after)
            .with_context(|| format!("compacting {}", history.path().display()))?;
        aged.fire_lines_kept += std::fs::read(history.path())
            .with_context(|| format!("reading {}", history.path().display()))?
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as u64;
    }

    Ok(aged)
}

/// Build records before the real one, a build every five minutes over `days` (at most
/// `RECORDS_KEPT` + 100), in `_state/builds/` and in the warehouse files' build tables (the
/// next build prunes both). Returns how many.
fn add_build_records(w: &Path, days: u32, until: DateTime<Utc>) -> anyhow::Result<u64> {
    let from = until - chrono::Duration::days(i64::from(days));
    eprintln!("build records of {days} days");
    let builds = w.join("_state/builds");
    let fresh_record = crate::models::files_with_extension(&builds, "json")?
        .pop()
        .context("the fresh warehouse has no build record")?;
    let body: serde_json::Value = serde_json::from_slice(&std::fs::read(&fresh_record)?)?;
    let n = (u64::from(days) * 288).min(crate::models::build::RECORDS_KEPT as u64 + 100);
    let mut ids = Vec::new();
    for i in 0..n {
        let at = from + chrono::Duration::seconds((i as i64) * 300);
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            at.timestamp() as u64,
            at.timestamp_subsec_nanos(),
        );
        let id = uuid::Uuid::new_v7(ts).simple().to_string();
        let mut r = body.clone();
        r["build_id"] = serde_json::json!(id);
        std::fs::write(builds.join(format!("{id}.json")), serde_json::to_vec(&r)?)?;
        ids.push(id);
    }
    let list = ids
        .iter()
        .map(|i| crate::duck::lit(i))
        .collect::<Vec<_>>()
        .join("), (");
    for file in crate::models::files_with_extension(w, "duckdb")? {
        if file.file_name().is_some_and(|f| f == "publications.duckdb") {
            continue;
        }
        let conn = crate::duck::open(&file, 1)?;
        let has: i64 = conn.query_row(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = '_chiso_builds'",
            [],
            |r| r.get(0),
        )?;
        if has == 0 {
            continue;
        }
        conn.execute_batch(&format!(
            "CREATE TEMP TABLE ids(id VARCHAR); INSERT INTO ids VALUES ({list});
             INSERT INTO _chiso_model_runs SELECT ids.id, m.model, m.materialized, m.status, m.rows, m.seconds, m.error
               FROM ids, (SELECT * FROM _chiso_model_runs WHERE build_id = (SELECT max(build_id) FROM _chiso_builds)) m;
             INSERT INTO _chiso_builds SELECT ids.id, b.started_at, b.finished_at, b.seconds, false, b.models, b.tests_failed
               FROM ids, (SELECT * FROM _chiso_builds WHERE build_id = (SELECT max(build_id) FROM _chiso_builds)) b;"
        ))?;
    }
    Ok(n)
}

/// One job's commits over `times`, as its pulls and the daemon's compaction leave them. A
/// feed pulled by cursor or pages lands one small file a pull (a hard link to the smallest file
/// its real pull landed, in the same folder: the same rows again, which staging keeps once); every six
/// hours the files older than a day and the previous compacted file are retired for one new
/// compacted file (a link too), and deleted, as compaction does once a build has published
/// without them. A snapshot feed lands nothing while its source is unchanged. The cursor is
/// carried unchanged, the checkpoint written at each run's end. Returns the commits and the
/// compactions.
fn commit_year(
    w: &Path,
    job: &config::JobConfig,
    times: &[DateTime<Utc>],
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<(u64, u64)> {
    let state = JobState::new(w, &job.name);
    let lock = state.lock()?;
    let cursor = state.cursor()?;
    let real: Option<LandedFile> = match job.protocol {
        config::Protocol::Snapshot(_) => None,
        // The smallest: what a five-minute pull lands is small.
        _ => state
            .snapshot_landed()?
            .landed
            .and_then(|l| l.into_iter().min_by_key(|f| f.file.bytes))
            .map(|l| l.file),
    };
    let (mut commits, mut compactions) = (0u64, 0u64);
    let mut pending: Vec<(DateTime<Utc>, String)> = Vec::new();
    let mut compacted: Option<String> = None;
    let mut last_compaction = times.first().copied().unwrap_or_else(Utc::now);
    let entry = |at: DateTime<Utc>, kind, files: Vec<LandedFile>, retired: Vec<String>| {
        let stamp = local_rfc3339(at, crate::time::TZ);
        CommitEntry {
            seq: 0,
            job: job.name.clone(),
            run_id: uuid::Uuid::new_v4().simple().to_string(),
            kind,
            chunk: 0,
            started_at: stamp.clone(),
            committed_at: stamp,
            outcome: (kind == EntryKind::Finished).then_some(Outcome::Ok),
            cursor_before: cursor.clone(),
            cursor_after: cursor.clone(),
            files,
            quarantine_files: Vec::new(),
            totals: RunTotals::default(),
            watermark: None,
            error: None,
            stamped_through: None,
            retired,
            backfill: None,
        }
    };
    // A link to the real file, named `name`, as a landed file.
    let link = |name: String| -> anyhow::Result<Option<LandedFile>> {
        let Some(r) = &real else {
            return Ok(None);
        };
        let folder = Path::new(&r.path).parent().unwrap_or(Path::new(""));
        let path = folder.join(name).display().to_string();
        std::fs::hard_link(w.join(&r.path), w.join(&path))
            .with_context(|| format!("linking {path}"))?;
        Ok(Some(LandedFile { path, ..r.clone() }))
    };
    for (i, &at) in times.iter().enumerate() {
        let file = link(format!("part-year{i:08}-c0000-001.parquet"))?;
        if let Some(f) = &file {
            pending.push((at, f.path.clone()));
        }
        state.commit(
            &lock,
            entry(
                at,
                EntryKind::Finished,
                file.into_iter().collect(),
                Vec::new(),
            ),
            &cursor,
        )?;
        commits += 1;
        if at - last_compaction >= COMPACT_EVERY {
            let day_ago = at - chrono::Duration::days(1);
            let mut retired: Vec<String> = pending
                .iter()
                .filter(|(t, _)| *t < day_ago)
                .map(|(_, p)| p.clone())
                .collect();
            if retired.len() >= 10 {
                pending.retain(|(t, _)| *t >= day_ago);
                retired.extend(compacted.take());
                let made = link(format!("compacted-year{compactions:06}.parquet"))?;
                compacted = made.as_ref().map(|f| f.path.clone());
                state.commit(
                    &lock,
                    entry(
                        at,
                        EntryKind::Compaction,
                        made.into_iter().collect(),
                        retired.clone(),
                    ),
                    &cursor,
                )?;
                for f in &retired {
                    std::fs::remove_file(w.join(f)).with_context(|| format!("removing {f}"))?;
                }
                compactions += 1;
            }
            last_compaction = at;
        }
        state.checkpoint(&lock)?;
        bar.inc(1);
    }
    Ok((commits, compactions))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median time of `n` calls of `f` on each warehouse, in milliseconds.
fn both(
    n: usize,
    fresh: &Path,
    year: &Path,
    f: impl Fn(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<(f64, f64)> {
    let mut out = [0.0; 2];
    for (i, w) in [fresh, year].into_iter().enumerate() {
        f(w)?;
        let mut v = Vec::new();
        for _ in 0..n {
            let t = Instant::now();
            f(w)?;
            v.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        out[i] = median(v);
    }
    Ok((out[0], out[1]))
}

async fn median_async<F, Fut>(n: usize, f: F) -> anyhow::Result<f64>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut v = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        f().await?;
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(median(v))
}

/// The daemon on `w` (the job files' schedules, HTTP on 127.0.0.1), `n` times: the median
/// time to its `Started` notice, and of `/status` asked once its cache is stale.
async fn daemon_costs(
    opts: &YearBench,
    root: &Path,
    w: &Path,
    n: usize,
) -> anyhow::Result<(f64, f64)> {
    let (mut starts, mut statuses) = (Vec::new(), Vec::new());
    let client = reqwest::Client::new();
    for _ in 0..n {
        let serve_opts = ServeOptions {
            warehouse: w.to_path_buf(),
            project_root: root.to_path_buf(),
            sql_dir: root.join("sql"),
            tz: opts.project.timezone,
            jobs: opts.jobs.clone(),
            http: Some("127.0.0.1:0".parse().expect("address")),
            grace: Duration::from_secs(30),
            retention: Duration::from_secs(u64::from(opts.retention_days) * 86_400),
            http_client: crate::feeds::http::http_client(),
            publish: opts.project.publish.clone(),
            http_token: None,
            http_public: false,
            job_files: None,
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let t = Instant::now();
        let daemon = tokio::spawn(crate::serve::serve(
            serve_opts,
            async move {
                let _ = stop_rx.await;
            },
            Some(tx),
        ));
        let addr = loop {
            match rx.recv().await {
                Some(Notice::Started { http }) => break http.context("no HTTP address")?,
                Some(_) => {}
                None => {
                    daemon.await??;
                    bail!("the daemon stopped before it started");
                }
            }
        };
        starts.push(t.elapsed().as_secs_f64() * 1000.0);
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(1_100)).await;
            let t = Instant::now();
            let r = client
                .get(format!("http://{addr}/status"))
                .send()
                .await?
                .error_for_status()?;
            r.bytes().await?;
            statuses.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let _ = stop_tx.send(());
        daemon.await??;
    }
    Ok((median(starts), median(statuses)))
}

/// Every state file of the warehouse at `w`, by kind, with its bound.
fn state_files(w: &Path, opts: &YearBench) -> anyhow::Result<Vec<StateRow>> {
    let mut kinds: BTreeMap<&'static str, (u64, u64, u64)> = BTreeMap::new();
    let state = w.join("_state");
    let mut stack = vec![state.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)?.flatten() {
            let m = e.metadata()?;
            if m.is_dir() {
                stack.push(e.path());
                continue;
            }
            let rel = e.path().strip_prefix(&state)?.display().to_string();
            let kind = if rel.starts_with("builds/") {
                "_state/builds/<id>.json"
            } else if rel.starts_with("_serve/fires/") {
                "_state/_serve/fires/<job>.jsonl"
            } else if rel.starts_with("_serve/") {
                "_state/_serve/ (other)"
            } else if rel.contains("/log/archive/") {
                "_state/<job>/log/archive/<first>-<last>.jsonl"
            } else if rel.contains("/log/") {
                "_state/<job>/log/<seq>.json"
            } else if rel.ends_with("/checkpoint.json") {
                "_state/<job>/checkpoint.json"
            } else {
                "_state/ (other)"
            };
            let k = kinds.entry(kind).or_default();
            k.0 += 1;
            k.1 = k.1.max(m.len());
            k.2 += m.len();
        }
    }
    let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut rows: Vec<StateRow> = kinds
        .into_iter()
        .map(|(what, (files, largest, total))| StateRow {
            what: what.into(),
            files,
            largest_bytes: largest,
            total_bytes: total,
            bound: bound(what, opts),
        })
        .collect();
    for (what, path, b) in [
        (
            "publications.duckdb",
            w.join("publications.duckdb"),
            "every final revision (by design); a preview replaces its period's",
        ),
        (
            "chiso.duckdb",
            crate::models::build::published_path(w),
            "the marts; build tables keep the newest 1,000 builds",
        ),
    ] {
        let s = size(path);
        rows.push(StateRow {
            what: what.into(),
            files: 1,
            largest_bytes: s,
            total_bytes: s,
            bound: b.into(),
        });
    }
    let (bytes, files) = super::publication::tree_size(&w.join("exports"));
    rows.push(StateRow {
        what: "exports/".into(),
        files: files as u64,
        largest_bytes: 0,
        total_bytes: bytes,
        bound: "the files of every final revision; a preview replaces its period's".into(),
    });
    Ok(rows)
}

fn bound(kind: &str, opts: &YearBench) -> String {
    match kind {
        "_state/builds/<id>.json" => format!(
            "the newest {} and the newest published one",
            crate::models::build::RECORDS_KEPT
        ),
        "_state/_serve/fires/<job>.jsonl" => {
            format!("lines of the last {} days", opts.retention_days)
        }
        "_state/<job>/log/archive/<first>-<last>.jsonl" => {
            "one per 1,000 commits; past 400 days, only entries naming a live file".into()
        }
        "_state/<job>/log/<seq>.json" => "at most 1,000 per job".into(),
        "_state/<job>/checkpoint.json" => "live files and retired files still on disk".into(),
        _ => "one file each".into(),
    }
}
