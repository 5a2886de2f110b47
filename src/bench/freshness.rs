//! `chiso bench freshness --dossiers N`: how long a changed dossier takes to reach the index.
//!
//! 1. The lake of `chiso bench build` (N dossiers of history, prepared once per size and seed)
//!    is copied (hard links), built in full, then built once more with nothing new (as the
//!    schedule would have, leaving the spare file an incremental build starts from).
//! 2. The dossiers job moves from the benchmark's file landings onto the portal's cursor feed:
//!    a simulator on 127.0.0.1 that serves no dossiers but those added to it, one at a time,
//!    through its control route (`SimState::inject`, `POST /_sim/records/dossiers`).
//! 3. The daemon runs in this process: the dossiers job on a `--every`-second schedule (the
//!    other jobs' data is in the lake, and they are disabled), the build job with the given
//!    quiet period and maximum delay.
//! 4. `--changes` times, after a random pause (so that changes fall anywhere in the schedule's
//!    cycle): a new version of an open dossier received in the last 30 days, which finishes
//!    it (`write_changes`), is added at the simulator, and `warehouse/chiso.duckdb` is read
//!    after each build ends until `fct_dossiers` holds that version (reading it every 50 ms
//!    took CPU from the build being measured: 10 M builds ran 8.5–12 s then).
//!
//! Each change's time, from the moment the simulator has the new version to the moment it is
//! readable, is split into: waiting for the pull (until the simulator first serves it), the
//! pull (until the run that read it committed), the debounce (until the build started), the
//! build, and the publication (until a reader sees it: the rename, and this poll).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};

use super::build::{prepare_lake, write_changes, BuildBench};
use crate::config::{CronExpr, Jobs, Secret};
use crate::models::build::{build, BuildOptions};
use crate::serve::{Notice, ServeOptions};
use crate::sim::faults::Faults;
use crate::sim::server::{self, SimState};

/// Options of `chiso bench freshness`.
pub struct FreshnessBench {
    /// The history's lake (prepared as `bench build` prepares it), the builds' threads, memory
    /// limit and storage version, the models.
    pub lake: BuildBench,
    pub changes: u64,
    /// The dossiers job's schedule, every this many seconds.
    pub every: u32,
    pub quiet: Duration,
    pub max_delay: Duration,
}

/// One change, timed (seconds).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Change {
    pub dossier: String,
    pub total: f64,
    pub wait_for_pull: f64,
    pub pull: f64,
    pub debounce: f64,
    pub build: f64,
    pub publish: f64,
    /// The unit's provisional total moved.
    pub score_moved: bool,
}

struct Stamped {
    at: Instant,
    notice: Notice,
}

/// The unit of `dossier` and its provisional total for the month in progress, as published.
fn unit_total(warehouse: &std::path::Path, dossier: &str) -> anyhow::Result<Option<(String, f64)>> {
    let conn = crate::duck::open_read_only(&crate::models::build::published_path(warehouse))?;
    let mut stmt = conn.prepare(
        "SELECT m.unit_id, m.total FROM fct_dossiers f JOIN mart_index_unit_period m
           ON m.unit_id = f.unit_id AND m.period = '2026-11'
         WHERE f.dossier_id = ?",
    )?;
    let mut rows = stmt.query([dossier])?;
    Ok(match rows.next()? {
        Some(r) => Some((r.get(0)?, r.get(1)?)),
        None => None,
    })
}

/// Whether the published warehouse holds `dossier` at version `synced_at` (`yyyyMMddHHmmss`).
fn readable(warehouse: &std::path::Path, dossier: &str, synced_at: &str) -> bool {
    let Ok(conn) = crate::duck::open_read_only(&crate::models::build::published_path(warehouse))
    else {
        return false;
    };
    conn.query_row(
        "SELECT count(*) FROM fct_dossiers WHERE dossier_id = ? AND strftime(synced_at, '%Y%m%d%H%M%S') = ?",
        [dossier, synced_at],
        |r| r.get::<_, i64>(0),
    )
    .is_ok_and(|n| n == 1)
}

fn finished_builds(log: &Mutex<Vec<Stamped>>) -> usize {
    log.lock()
        .expect("log")
        .iter()
        .filter(|s| matches!(s.notice, Notice::BuildFinished { .. }))
        .count()
}

pub async fn run(opts: &FreshnessBench) -> anyhow::Result<Vec<Change>> {
    let lake_opts = &opts.lake;
    eprintln!("Preparing the lake of {} dossiers ...", lake_opts.dossiers);
    let lake = prepare_lake(lake_opts).await?;
    let run = lake_opts
        .work_dir
        .join(format!("fresh-{}-s{}", lake_opts.dossiers, lake_opts.seed));
    super::hard_link_copy(&lake, &run)?;
    let (mut project, all) = crate::demo::embedded_all()?;
    let build_opts = |full| BuildOptions {
        select: Vec::new(),
        full_refresh: full,
        threads: lake_opts.threads,
        memory_limit: Some(lake_opts.memory_limit.clone()),
        storage_version: lake_opts.storage(),
        timeout: None,
    };
    for (label, full) in [("Full build", true), ("Build with nothing new", false)] {
        eprintln!("{label} ...");
        let (w, s, j, o) = (
            run.clone(),
            lake_opts.sql_dir.clone(),
            all.pulls.clone(),
            build_opts(full),
        );
        let r = tokio::task::spawn_blocking(move || build(&w, &s, &j, &o)).await??;
        if !r.published {
            bail!("the {label} did not publish");
        }
        eprintln!("  {:.1} s", r.seconds);
    }
    // The changes, as the portal would send them: open dossiers that finish (their new
    // version becomes the current one; a dossier re-sent unchanged would change nothing).
    let changes_file = lake_opts.work_dir.join("freshness-changes.ndjson");
    write_changes(&run, &changes_file, opts.changes * 20, lake_opts.seed)?;
    let changes: Vec<String> = std::fs::read_to_string(&changes_file)?
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|v| v["NgayKetThucXuLy"] == "20261127120000")
        })
        .take(opts.changes as usize)
        .map(str::to_string)
        .collect();
    let _ = std::fs::remove_file(&changes_file);
    if (changes.len() as u64) < opts.changes {
        bail!(
            "only {} open dossiers to finish among the recent ones; ask for fewer --changes",
            changes.len()
        );
    }
    // The dossiers job goes on from the start of the simulator's cursor feed.
    {
        let state = crate::lake::commit::JobState::new(&run, "dossiers");
        let lock = state.lock()?;
        let cursor = state.cursor()?;
        let now = crate::time::now_rfc3339();
        state.commit(
            &lock,
            crate::lake::commit::CommitEntry {
                seq: 0,
                job: "dossiers".into(),
                run_id: "freshness-bench-cursor-feed".into(),
                kind: crate::lake::commit::EntryKind::Finished,
                chunk: 0,
                started_at: now.clone(),
                committed_at: now,
                outcome: Some(crate::lake::commit::Outcome::Ok),
                cursor_before: cursor.clone(),
                cursor_after: None,
                files: Vec::new(),
                quarantine_files: Vec::new(),
                totals: Default::default(),
                watermark: None,
                error: None,
                stamped_through: None,
                retired: Vec::new(),
                backfill: None,
            },
            &cursor,
        )?;
    }
    let config = super::sim_config(lake_opts.dossiers, lake_opts.seed);
    let token = uuid::Uuid::new_v4().simple().to_string();
    let world = crate::sim::generate::snapshot_world(&config, Default::default());
    let sim = server::start(SimState::new(world, Faults::none(), Some(token.clone())), 0)
        .await
        .context("starting the simulator on 127.0.0.1")?;
    project.retarget_sources(&sim.base_url(), &Secret::new(token));
    let mut jobs = Jobs {
        pulls: all.pulls,
        builds: all.builds,
        publishes: Vec::new(),
        reconciles: Vec::new(),
    };
    for j in &mut jobs.pulls {
        if let Some(s) = &j.source {
            j.source = project.sources.get(&s.name).cloned();
        }
        j.enabled = j.name == "dossiers";
        j.schedule = CronExpr(format!("*/{} * * * * *", opts.every.clamp(1, 59)));
    }
    let b = jobs
        .builds
        .iter_mut()
        .find(|b| b.enabled)
        .context("no build job in jobs/")?;
    b.schedule = None;
    b.quiet_period = opts.quiet;
    b.max_delay = opts.max_delay.max(opts.quiet);
    b.threads = lake_opts.threads;
    b.memory_limit = Some(lake_opts.memory_limit.clone());
    b.storage_version = lake_opts.storage();
    let serve_opts = ServeOptions {
        warehouse: run.clone(),
        project_root: std::env::current_dir()?,
        sql_dir: lake_opts.sql_dir.clone(),
        tz: project.timezone,
        jobs,
        http: None,
        grace: Duration::from_secs(60),
        retention: Duration::from_secs(86_400),
        http_client: crate::feeds::http::http_client(),
        publish: Default::default(),
        http_token: None,
        http_public: false,
        job_files: None,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(crate::serve::serve(
        serve_opts,
        async move {
            let _ = stop_rx.await;
        },
        Some(tx),
    ));
    let log: Arc<Mutex<Vec<Stamped>>> = Arc::default();
    let collector = {
        let log = log.clone();
        tokio::spawn(async move {
            while let Some(notice) = rx.recv().await {
                log.lock().expect("log").push(Stamped {
                    at: Instant::now(),
                    notice,
                });
            }
        })
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(lake_opts.seed);
    let mut out = Vec::new();
    for (i, line) in changes.iter().enumerate() {
        let pause = rng.random_range(0..u64::from(opts.every) * 1000);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let v: serde_json::Value = serde_json::from_str(line)?;
        let dossier = v["MaHoSo"].as_str().unwrap_or_default().to_string();
        let version = v["ThoiDiemDongBo"].as_str().unwrap_or_default().to_string();
        let before = {
            let (w, d) = (run.clone(), dossier.clone());
            tokio::task::spawn_blocking(move || unit_total(&w, &d)).await??
        };
        let mut seen = finished_builds(&log);
        let added = sim
            .state
            .inject(crate::sim::SimFeed::Dossiers, line)
            .map_err(anyhow::Error::msg)?;
        let t0 = added.added;
        // The file changes only when a build publishes: look after each build ends (opening
        // it every few milliseconds took CPU from the build being measured).
        loop {
            let builds = finished_builds(&log);
            if builds > seen {
                seen = builds;
                let (w, d, ver) = (run.clone(), dossier.clone(), version.clone());
                if tokio::task::spawn_blocking(move || readable(&w, &d, &ver)).await? {
                    break;
                }
            }
            if t0.elapsed() > Duration::from_secs(300) {
                bail!("change {i} ({dossier}) not readable after 300 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let t_read = Instant::now();
        let served = *added.first_served.get().context("read but never served")?;
        // The dossiers run that read it: the first to finish after it was served, having
        // landed rows; the build: the first to finish after that run, having started after it.
        let (pull_end, build_start, build_end) = {
            let log = log.lock().expect("log");
            let pull_end = log
                .iter()
                .find_map(|s| match &s.notice {
                    Notice::PullFinished { rows_landed, .. }
                        if s.at >= served && *rows_landed > 0 =>
                    {
                        Some(s.at)
                    }
                    _ => None,
                })
                .context("no pull finished after the change was served")?;
            let (b_start, b_end) = log
                .iter()
                .find_map(|s| match &s.notice {
                    Notice::BuildFinished {
                        seconds, outcome, ..
                    } if outcome == "ok"
                        && s.at >= pull_end
                        && s.at
                            .checked_sub(Duration::from_secs_f64(*seconds))
                            .is_some_and(|st| st >= pull_end) =>
                    {
                        Some((s.at - Duration::from_secs_f64(*seconds), s.at))
                    }
                    _ => None,
                })
                .context("no build started after the pull")?;
            (pull_end, b_start, b_end)
        };
        let after = {
            let (w, d) = (run.clone(), dossier.clone());
            tokio::task::spawn_blocking(move || unit_total(&w, &d)).await??
        };
        let secs = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64();
        let c = Change {
            dossier: dossier.clone(),
            total: secs(t0, t_read),
            wait_for_pull: secs(t0, served),
            pull: secs(served, pull_end),
            debounce: secs(pull_end, build_start),
            build: secs(build_start, build_end),
            publish: secs(build_end, t_read),
            score_moved: before.map(|b| b.1) != after.map(|a| a.1),
        };
        eprintln!(
            "  change {:>2}: {:.1} s (wait {:.1}, pull {:.2}, debounce {:.1}, build {:.1}, publish {:.2}){}",
            i + 1,
            c.total,
            c.wait_for_pull,
            c.pull,
            c.debounce,
            c.build,
            c.publish,
            if c.score_moved { ", the unit's total moved" } else { "" }
        );
        out.push(c);
    }
    let _ = stop_tx.send(());
    daemon.await??;
    let _ = collector.await;
    sim.stop().await;
    Ok(out)
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The table: p50 and p95 (nearest rank) of the total and of each part.
pub fn print_table(opts: &FreshnessBench, changes: &[Change]) {
    println!(
        "\nFreshness at {} dossiers: {} changes, pulls every {} s, build quiet period {:?}, max delay {:?}\n",
        opts.lake.dossiers,
        changes.len(),
        opts.every,
        opts.quiet,
        opts.max_delay
    );
    println!("| part | p50 s | p95 s | max s |");
    println!("|---|---:|---:|---:|");
    type Part = (&'static str, fn(&Change) -> f64);
    let parts: [Part; 6] = [
        ("wait for the pull", |c| c.wait_for_pull),
        ("pull", |c| c.pull),
        ("debounce", |c| c.debounce),
        ("build", |c| c.build),
        ("publish (rename, and a reader sees it)", |c| c.publish),
        (
            "**total: change at the simulator → readable in chiso.duckdb**",
            |c| c.total,
        ),
    ];
    for (name, f) in parts {
        let v: Vec<f64> = changes.iter().map(f).collect();
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} |",
            percentile(v.clone(), 50.0),
            percentile(v.clone(), 95.0),
            v.iter().cloned().fold(f64::NAN, f64::max)
        );
    }
    println!(
        "\nThe unit's provisional total moved for {} of {} changes.",
        changes.iter().filter(|c| c.score_moved).count(),
        changes.len()
    );
}
