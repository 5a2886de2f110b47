//! `chiso bench build`: the warehouse build (every model of `sql/` and every data test) timed
//! on a lake of `chiso sim generate` data, full and incremental, and the same models run by
//! dbt-duckdb side by side.
//!
//! 1. The lake is prepared once per size and seed (`<work>/warehouse-<N>-s<seed>`, reused):
//!    the simulator's feeds are generated month by month (a month of 10 million dossiers is
//!    6 GB of NDJSON; the whole would not fit on disk), each month landed by the real `file`
//!    jobs and deleted; the snapshots (units, catalogue, calendar, national report) are landed
//!    by the real snapshot jobs from a snapshot-only simulator on 127.0.0.1.
//! 2. Each run works on a hard-linked copy of that lake (`cp -al`: lake files are never
//!    modified in place), so reruns start from the same state.
//! 3. Full build (`--full-refresh`, no published warehouse), in a child process so that peak
//!    memory is its own; then a batch of changed dossiers (new versions of dossiers received
//!    in the last 30 days: open ones finish, the others are re-sent) landed by the dossiers
//!    job; then an incremental build. Between the two, a build with nothing new, as the
//!    schedule's previous run: the first build after a full one has no spare file and copies
//!    the published one (measured and printed too); the measured incremental build then starts
//!    from the spare, as scheduled builds do.
//! 4. With `--dbt`: `dbt build` of the same `sql/` folder with dbt-duckdb, same threads and
//!    memory limit, on the same lake.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::{Datelike, Duration, NaiveDate};
use serde::{Deserialize, Serialize};

use super::file_job;
use crate::config::{JobConfig, Protocol, Secret};
use crate::duck;
use crate::models::build::{build, BuildOptions, TestStatus};
use crate::pull::{self, RunContext};
use crate::sim::faults::Faults;
use crate::sim::generate::{generate_days, snapshot_world, ReceivedCounts};
use crate::sim::server::{self, SimState};

/// Options of `chiso bench build`.
pub struct BuildBench {
    pub dossiers: u64,
    pub seed: u64,
    pub threads: usize,
    pub work_dir: PathBuf,
    /// Dossiers changed between the full and the incremental build.
    pub changed: u64,
    /// DuckDB memory limit of the builds (chiso and dbt alike).
    pub memory_limit: String,
    /// Storage format of the warehouse file (`latest`: this DuckDB's newest).
    pub storage_version: String,
    pub sql_dir: PathBuf,
    /// Also run `dbt build` with this dbt executable (dbt-duckdb installed beside it).
    pub dbt: Option<PathBuf>,
}

impl BuildBench {
    /// The storage version the builds ask for (`latest`: none, DuckDB's newest).
    pub fn storage(&self) -> Option<String> {
        Some(self.storage_version.clone()).filter(|v| v != "latest")
    }
}

/// One timed build, printed as JSON by the child process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildMeasurement {
    pub label: String,
    pub seconds: f64,
    pub models_seconds: f64,
    pub tests_seconds: f64,
    pub models: usize,
    pub tests: usize,
    pub tests_passed: usize,
    pub peak_rss_bytes: u64,
    pub published: bool,
    /// What the build file started as (`empty`, `copy`, `spare`; dbt: empty).
    pub started_from: String,
    /// The slowest models, `name seconds`.
    pub slowest: Vec<(String, f64)>,
}

/// Child process: one build of `warehouse`, measured.
pub fn measure_build(
    warehouse: &Path,
    sql_dir: &Path,
    threads: usize,
    memory_limit: &str,
    full_refresh: bool,
    storage_version: Option<&str>,
) -> anyhow::Result<BuildMeasurement> {
    let (_, jobs) = crate::demo::embedded_project()?;
    let opts = BuildOptions {
        select: vec![],
        full_refresh,
        threads,
        memory_limit: Some(memory_limit.to_string()),
        storage_version: storage_version.map(str::to_string),
        timeout: None,
    };
    let t0 = Instant::now();
    let record = build(warehouse, sql_dir, &jobs, &opts)?;
    let seconds = t0.elapsed().as_secs_f64();
    if let Some(m) = record.models.iter().find(|m| !m.succeeded()) {
        bail!(
            "model {} {}: {}",
            m.model,
            m.status,
            m.error.as_deref().unwrap_or("")
        );
    }
    let mut slowest: Vec<(String, f64)> = record
        .models
        .iter()
        .map(|m| (m.model.clone(), m.seconds))
        .collect();
    slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
    slowest.truncate(6);
    Ok(BuildMeasurement {
        label: if full_refresh { "full" } else { "incremental" }.into(),
        seconds,
        models_seconds: record.models.iter().map(|m| m.seconds).sum(),
        tests_seconds: record.tests.iter().map(|t| t.seconds).sum(),
        models: record.models.len(),
        tests: record.tests.len(),
        tests_passed: record
            .tests
            .iter()
            .filter(|t| t.status == TestStatus::Pass)
            .count(),
        peak_rss_bytes: super::peak_rss_bytes(),
        published: record.published,
        started_from: record.started_from.clone(),
        slowest,
    })
}

async fn land(ctx: &RunContext, job: &JobConfig) -> anyhow::Result<u64> {
    let report = pull::run_job(ctx, job).await?;
    if let Some(e) = report.error {
        bail!("job {}: {e}", job.name);
    }
    if report.totals.rows_quarantined > 0 {
        bail!(
            "job {}: {} records quarantined",
            job.name,
            report.totals.rows_quarantined
        );
    }
    Ok(report.totals.rows_landed)
}

/// The prepared lake for `opts` (generated and landed on first use).
pub async fn prepare_lake(opts: &BuildBench) -> anyhow::Result<PathBuf> {
    let lake = opts
        .work_dir
        .join(format!("warehouse-{}-s{}", opts.dossiers, opts.seed));
    let marker = lake.join("bench-lake.json");
    if marker.exists() {
        return Ok(lake);
    }
    let _ = std::fs::remove_dir_all(&lake);
    std::fs::create_dir_all(&lake)?;
    let config = super::sim_config(opts.dossiers, opts.seed);
    let ctx = RunContext {
        warehouse: lake.clone(),
        // relative paths (a relative --work-dir) resolve against the working folder
        project_root: std::env::current_dir()?,
        http: crate::feeds::http::http_client(),
    };
    let gen_dir = opts.work_dir.join("gen-chunk");
    let mut counts = ReceivedCounts::new();
    let mut landed: std::collections::BTreeMap<String, u64> = Default::default();
    let mut total = 0u64;
    let mut first = config.from;
    let t0 = Instant::now();
    while first <= config.now.date() && total < opts.dossiers {
        let next_month = if first.month() == 12 {
            NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
        } else {
            NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
        }
        .expect("valid");
        let last = next_month - Duration::days(1);
        let _ = std::fs::remove_dir_all(&gen_dir);
        let (cfg, dir, remaining, threads) = (
            config.clone(),
            gen_dir.clone(),
            opts.dossiers - total,
            opts.threads.max(2),
        );
        let (manifest, c) = tokio::task::spawn_blocking(move || {
            generate_days(&cfg, &dir, first, last, Some(remaining), threads)
        })
        .await??;
        total += manifest.dossiers;
        for (k, v) in c {
            *counts.entry(k).or_default() += v;
        }
        for (job, rel) in [
            ("dossiers", "portal/dossiers.ndjson"),
            ("dossier_steps", "portal/dossier_steps.ndjson"),
            ("payments", "payments/payments.ndjson"),
            ("ratings", "reporting/ratings.ndjson"),
            ("petitions", "reporting/petitions.ndjson"),
        ] {
            let n = land(&ctx, &file_job(job, &gen_dir.join(rel), opts.threads)?).await?;
            *landed.entry(job.to_string()).or_default() += n;
        }
        eprintln!(
            "  {} .. {}: {} dossiers so far, {:.0} s",
            first,
            last,
            total,
            t0.elapsed().as_secs_f64()
        );
        first = next_month;
    }
    let _ = std::fs::remove_dir_all(&gen_dir);
    // Snapshots through the real snapshot jobs, from a simulator serving only them.
    let token = uuid::Uuid::new_v4().simple().to_string();
    let world = snapshot_world(&config, counts);
    let handle = server::start(SimState::new(world, Faults::none(), Some(token.clone())), 0)
        .await
        .context("starting the snapshot simulator on 127.0.0.1")?;
    let (mut project, jobs) = crate::demo::embedded_project()?;
    project.retarget_sources(&handle.base_url(), &Secret::new(token));
    for mut job in jobs
        .into_iter()
        .filter(|j| matches!(j.protocol, Protocol::Snapshot(_)))
    {
        if let Some(s) = &job.source {
            job.source = project.sources.get(&s.name).cloned();
        }
        let n = land(&ctx, &job).await?;
        landed.insert(job.name.clone(), n);
    }
    handle.stop().await;
    std::fs::write(
        &marker,
        serde_json::to_vec_pretty(&serde_json::json!({
            "dossiers": total,
            "records_landed": landed,
            "seconds": t0.elapsed().as_secs_f64(),
        }))?,
    )?;
    Ok(lake)
}

/// New versions of `n` dossiers received in the 30 days before the simulator's `now`, written
/// as the portal would send them: open dossiers are processed, the others re-sent unchanged.
pub(super) fn write_changes(run: &Path, out: &Path, n: u64, seed: u64) -> anyhow::Result<u64> {
    let job = file_job("dossiers", out, 1)?;
    let now = "2026-11-27 12:00:00";
    let select: Vec<String> = job
        .dataset
        .columns
        .iter()
        .map(|c| {
            let name = c.name.as_str();
            let ts = |e: &str| format!("strftime({e}, '%Y%m%d%H%M%S') AS {name}");
            match name {
                "TrangThaiHoSo" => {
                    "CASE WHEN TrangThaiHoSo IN ('1','2','4','5','6') THEN '9' ELSE TrangThaiHoSo END AS TrangThaiHoSo".to_string()
                }
                "NgayKetThucXuLy" => ts(&format!(
                    "CASE WHEN TrangThaiHoSo IN ('1','2','4','5','6') THEN TIMESTAMP '{now}' ELSE NgayKetThucXuLy END"
                )),
                "ThoiDiemDongBo" => ts(&format!("TIMESTAMP '{now}' + INTERVAL 1 HOUR")),
                _ => match c.ty.duckdb() {
                    "TIMESTAMP" => ts(name),
                    "JSON" => format!("json({name}) AS {name}"),
                    _ => name.to_string(),
                },
            }
        })
        .collect();
    let conn = duck::in_memory(2)?;
    let glob = format!("{}/lake/portal/dossiers/*/*.parquet", run.display());
    let sql = format!(
        "COPY (
           WITH latest AS (
             SELECT * FROM read_parquet({glob}, hive_partitioning = true, union_by_name = true)
             WHERE NgayTiepNhan >= TIMESTAMP '{now}' - INTERVAL 30 DAY
             QUALIFY row_number() OVER (PARTITION BY MaHoSo ORDER BY ThoiDiemDongBo DESC) = 1
           ),
           picked AS (SELECT * FROM latest ORDER BY hash(MaHoSo || '{seed}') LIMIT {n})
           SELECT {cols} FROM picked
         ) TO {out} (FORMAT json)",
        glob = duck::lit(&glob),
        cols = select.join(", "),
        out = duck::lit(&out.display().to_string()),
    );
    Ok(conn.execute(&sql, [])? as u64)
}

pub(super) fn run_child(args: &[String]) -> anyhow::Result<BuildMeasurement> {
    let mut child = Command::new(std::env::current_exe()?);
    child.args(args);
    super::child_measurement(child, "build")
}

pub(super) fn child_args(opts: &BuildBench, run: &Path, full: bool) -> Vec<String> {
    let mut a = vec![
        "bench".to_string(),
        "build-once".into(),
        "--dir".into(),
        run.display().to_string(),
        "--sql".into(),
        opts.sql_dir.display().to_string(),
        "--threads".into(),
        opts.threads.to_string(),
        "--memory-limit".into(),
        opts.memory_limit.clone(),
        "--storage-version".into(),
        opts.storage_version.clone(),
    ];
    if full {
        a.push("--full-refresh".into());
    }
    a
}

/// `dbt build` of the same models with dbt-duckdb on the same lake, timed; peak memory from
/// GNU time's maximum resident set when available.
fn run_dbt(opts: &BuildBench, dbt: &Path, run: &Path) -> anyhow::Result<BuildMeasurement> {
    let dir = opts.work_dir.join("dbt");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let sql_abs = std::fs::canonicalize(&opts.sql_dir)?;
    let db = dir.join("chiso-dbt.duckdb");
    std::fs::write(
        dir.join("profiles.yml"),
        format!(
            "chiso:\n  target: bench\n  outputs:\n    bench:\n      type: duckdb\n      path: {db}\n      threads: {t}\n      settings:\n        memory_limit: '{m}'\n        threads: {t}\n        file_search_path: '{sql}'\n",
            db = db.display(),
            t = opts.threads,
            m = opts.memory_limit,
            sql = sql_abs.display(),
        ),
    )?;
    let lake = std::fs::canonicalize(run.join("lake"))?;
    let time_bin = Path::new("/usr/bin/time");
    let mut cmd = if time_bin.exists() {
        let mut c = Command::new(time_bin);
        c.arg("-f").arg("chiso-bench-maxrss-kb=%M").arg(dbt);
        c
    } else {
        Command::new(dbt)
    };
    cmd.current_dir(&sql_abs)
        .args(["build", "--profiles-dir"])
        .arg(&dir)
        .arg("--target-path")
        .arg(dir.join("target"))
        .arg("--log-path")
        .arg(dir.join("logs"))
        .env("CHISO_LAKE", &lake)
        .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false");
    let t0 = Instant::now();
    let output = cmd.output().context("running dbt")?;
    let seconds = t0.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("dbt build failed:\n{stdout}\n{stderr}");
    }
    let peak_kb: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("chiso-bench-maxrss-kb="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    // dbt's own record: per node, its kind, status and execution time.
    let results: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("target/run_results.json")).context("dbt's run_results.json")?,
    )?;
    let (mut models, mut tests, mut passed, mut models_s, mut tests_s) = (0, 0, 0, 0.0, 0.0);
    for r in results["results"].as_array().into_iter().flatten() {
        let id = r["unique_id"].as_str().unwrap_or("");
        let secs = r["execution_time"].as_f64().unwrap_or(0.0);
        if id.starts_with("model.") {
            models += 1;
            models_s += secs;
        } else if id.starts_with("test.") {
            tests += 1;
            tests_s += secs;
            if r["status"] == "pass" {
                passed += 1;
            }
        }
    }
    Ok(BuildMeasurement {
        label: "dbt-duckdb full".into(),
        seconds,
        models_seconds: models_s,
        tests_seconds: tests_s,
        models,
        tests,
        tests_passed: passed,
        peak_rss_bytes: peak_kb * 1024,
        published: true,
        started_from: "empty".into(),
        slowest: vec![],
    })
}

/// Parent: prepares the lake, runs full, changes, incremental (and dbt), prints the table.
pub async fn run(opts: &BuildBench) -> anyhow::Result<Vec<BuildMeasurement>> {
    eprintln!("Preparing the lake of {} dossiers ...", opts.dossiers);
    let lake = prepare_lake(opts).await?;
    let run = opts
        .work_dir
        .join(format!("run-{}-s{}", opts.dossiers, opts.seed));
    super::hard_link_copy(&lake, &run)?;
    let mut out = Vec::new();
    eprintln!("Full build ...");
    out.push(run_child(&child_args(opts, &run, true))?);
    // The schedule's previous build: nothing new, and no spare yet, so it copies the published
    // file. It leaves the full build's file as the spare the measured build starts from.
    eprintln!("Incremental build with nothing new ...");
    let mut idle = run_child(&child_args(opts, &run, false))?;
    idle.label = "incremental, nothing new".into();
    out.push(idle);
    let changes = opts.work_dir.join("changes.ndjson");
    let changed = write_changes(&run, &changes, opts.changed, opts.seed)?;
    let ctx = RunContext {
        warehouse: run.clone(),
        // relative paths (a relative --work-dir) resolve against the working folder
        project_root: std::env::current_dir()?,
        http: crate::feeds::http::http_client(),
    };
    let landed = land(&ctx, &file_job("dossiers", &changes, opts.threads)?).await?;
    eprintln!(
        "{changed} changed dossiers written, {landed} versions landed; incremental build ..."
    );
    let mut inc = run_child(&child_args(opts, &run, false))?;
    inc.label = format!("incremental after {changed} changed dossiers");
    out.push(inc);
    // A failed dbt run is reported after chiso's own figures, never instead of them.
    let mut dbt_failure = None;
    if let Some(dbt) = &opts.dbt {
        eprintln!("dbt-duckdb build ...");
        match run_dbt(opts, dbt, &lake) {
            Ok(m) => out.push(m),
            Err(e) => dbt_failure = Some(e),
        }
    }
    let _ = std::fs::remove_file(&changes);
    print_table(opts, &out);
    if let Some(e) = dbt_failure {
        println!("\ndbt-duckdb: {e:#}");
        return Err(e.context("dbt-duckdb's build failed (chiso's figures are above)"));
    }
    Ok(out)
}

fn print_table(opts: &BuildBench, ms: &[BuildMeasurement]) {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "\nBuild benchmark: {} dossiers, {} thread(s), DuckDB memory_limit {}, storage version {}",
        opts.dossiers, opts.threads, opts.memory_limit, opts.storage_version
    );
    println!(
        "{:<42} {:>9} {:>9} {:>9} {:>7} {:>13}",
        "build", "seconds", "models s", "tests s", "tests", "peak RSS MiB"
    );
    for m in ms {
        println!(
            "{:<42} {:>9.2} {:>9.2} {:>9.2} {:>7} {:>13.0}",
            m.label,
            m.seconds,
            m.models_seconds,
            m.tests_seconds,
            format!("{}/{}", m.tests_passed, m.tests),
            mib(m.peak_rss_bytes)
        );
    }
    if let Some(full) = ms.first() {
        for m in &ms[1..] {
            println!(
                "{}: {:.1}% of the full build's time (build file started as: {})",
                m.label,
                100.0 * m.seconds / full.seconds,
                m.started_from
            );
        }
        for m in ms {
            if !m.slowest.is_empty() {
                let s: Vec<String> = m
                    .slowest
                    .iter()
                    .map(|(n, s)| format!("{n} {s:.2}"))
                    .collect();
                println!("slowest models ({}): {}", m.label, s.join(", "));
            }
        }
    }
}
