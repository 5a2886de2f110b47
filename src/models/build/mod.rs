//! Building the warehouse: run the selected models in dependency order into a build file, run
//! the data tests, and only if every model built and no blocking test failed, replace
//! `warehouse/chiso.duckdb` with the build file in one rename.
//!
//! Guarantees: BI tools reading `chiso.duckdb` never see a half-built model (they keep the file
//! they opened, even across a swap) and never hold a lock a build needs (the build writes
//! another file). One build at a time (lock `_state/_build/lock`). Every build leaves a record:
//! `_state/builds/<id>.json`, and the tables `_chiso_builds` / `_chiso_model_runs` in the
//! published file.

use super::project::{Materialized, Project};
use super::reuse;
use super::snapshot::{self, LakeSnapshot};
use super::template::Resolve;
use crate::config::JobConfig;
use crate::duck;
use crate::fs::{sync_dir, write_durably, FileLock};
use crate::time;
use anyhow::{bail, Context};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod data_tests;
mod file;
mod materialize;
mod record;
mod relations;
mod staleness;

pub use data_tests::test_published;
pub use file::published_path;
pub use record::{
    latest_builds, published_compactions, recent_builds, BuildRecord, BuildSummary, ModelRun,
    ModelStatus, TestRun, TestStatus, RECORDS_KEPT,
};

use data_tests::*;
use file::*;
use materialize::*;
use record::save_record;
use relations::*;
use staleness::*;

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub select: Vec<String>,
    /// Rebuild incremental models from scratch.
    pub full_refresh: bool,
    /// DuckDB threads (0: DuckDB's default).
    pub threads: usize,
    /// DuckDB's `memory_limit` for the build (e.g. `3GB`); DuckDB spills to disk beyond it.
    /// `None`: DuckDB's default (80% of RAM).
    pub memory_limit: Option<String>,
    /// The storage format of the published file (`v1.4.0`: DuckDB 1.4 and later read it;
    /// `None`: this DuckDB's newest, which 1.x clients refuse).
    pub storage_version: Option<String>,
    /// Interrupt the build's models and tests once it has run this long: it then fails and
    /// does not publish.
    pub timeout: Option<Duration>,
}

/// The storage format published by default: the oldest the models need, so that DuckDB 1.x
/// clients (the CLI, Node, .NET and Go bindings, BI tools built on them) open the warehouse.
pub const DEFAULT_STORAGE_VERSION: &str = "v1.4.0";

impl BuildOptions {
    /// What the project's build job (`jobs/build.toml`) says: its models, threads, memory
    /// limit and timeout, and the storage format; the defaults when it has none. Every build
    /// (the daemon's, `chiso build` by hand, after a backfill or a publication, the demo's)
    /// starts from here, so none ignores the job's limits.
    pub fn for_project(storage_version: &Option<String>, jobs: &crate::config::Jobs) -> Self {
        match jobs.builds.iter().find(|b| b.enabled) {
            Some(job) => Self::from_job(job),
            None => BuildOptions {
                storage_version: storage_version.clone(),
                ..Default::default()
            },
        }
    }

    /// The build job's settings.
    pub fn from_job(job: &crate::config::BuildJobConfig) -> Self {
        BuildOptions {
            select: job.select.clone(),
            full_refresh: false,
            threads: job.threads,
            memory_limit: job.memory_limit.clone(),
            storage_version: job.storage_version.clone(),
            timeout: job.timeout,
        }
    }
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            select: Vec::new(),
            full_refresh: false,
            threads: 0,
            memory_limit: None,
            storage_version: Some(DEFAULT_STORAGE_VERSION.to_string()),
            timeout: None,
        }
    }
}

/// Interrupts the build's connection once the build has run for its timeout: the query
/// running then fails, and the build runs nothing more. Stopped when dropped.
struct Watchdog {
    fired: Arc<AtomicBool>,
    timeout: Option<Duration>,
    _stop: Option<std::sync::mpsc::Sender<()>>,
}

impl Watchdog {
    fn start(
        conn: &duck::Connection,
        timeout: Option<Duration>,
        started: Instant,
        fired: &Arc<AtomicBool>,
    ) -> Watchdog {
        let fired = fired.clone();
        let Some(timeout) = timeout else {
            return Watchdog {
                fired,
                timeout,
                _stop: None,
            };
        };
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (handle, flag) = (conn.interrupt_handle(), fired.clone());
        let left = timeout.saturating_sub(started.elapsed());
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(left) {
                flag.store(true, Ordering::SeqCst);
                handle.interrupt();
            }
        });
        Watchdog {
            fired,
            timeout: Some(timeout),
            _stop: Some(stop),
        }
    }

    /// Why the build stopped, once the timeout has passed.
    fn fired(&self) -> Option<String> {
        let t = self.timeout.filter(|_| self.fired.load(Ordering::SeqCst))?;
        Some(Watchdog::message(t))
    }

    fn message(timeout: Duration) -> String {
        format!(
            "the build ran over its timeout of {} and was interrupted",
            humantime::format_duration(timeout)
        )
    }
}

/// Builds the selected models and publishes the result if everything passed.
pub fn build(
    warehouse: &Path,
    sql_dir: &Path,
    jobs: &[JobConfig],
    opts: &BuildOptions,
) -> anyhow::Result<BuildRecord> {
    let fired = Arc::new(AtomicBool::new(false));
    build_watched(warehouse, sql_dir, jobs, opts, &fired).map_err(|e| {
        // Interrupted outside the models (reading the lake, the data tests' bookkeeping, …).
        match opts.timeout.filter(|_| fired.load(Ordering::SeqCst)) {
            Some(t) => e.context(Watchdog::message(t)),
            None => e,
        }
    })
}

fn build_watched(
    warehouse: &Path,
    sql_dir: &Path,
    jobs: &[JobConfig],
    opts: &BuildOptions,
    fired: &Arc<AtomicBool>,
) -> anyhow::Result<BuildRecord> {
    let t0 = Instant::now();
    let started_at = time::now_rfc3339();
    let build_id = uuid::Uuid::now_v7().simple().to_string();
    let project = Project::load(sql_dir).map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?;
    let selected = project
        .select(&opts.select)
        .map_err(|e| anyhow::anyhow!(e))?;
    let order = project.order(&selected).map_err(|e| anyhow::anyhow!(e))?;
    std::fs::create_dir_all(warehouse)?;
    // Lake paths in the SQL are absolute: relative ones would resolve against the
    // file_search_path set below, not the current folder.
    let warehouse_abs = std::fs::canonicalize(warehouse)
        .with_context(|| format!("resolving {}", warehouse.display()))?;
    let warehouse = warehouse_abs.as_path();
    // One build at a time per warehouse (a `LockError::Busy` says another is running).
    let _lock = FileLock::acquire(&warehouse.join("_state/_build/lock"))
        .context("another build is running")?;

    let published = published_path(warehouse);
    let build_file = warehouse.join("chiso.build.duckdb");
    for stale in [build_file.clone(), warehouse.join("chiso.build.duckdb.wal")] {
        let _ = std::fs::remove_file(stale);
    }
    let spare = warehouse.join("chiso.spare.duckdb");
    // A selective build starts from the published file: the models it does not run are
    // published as they are now, not as the spare has them, one build back.
    let (conn, started_from) = start_build_file(
        &published,
        &spare,
        &build_file,
        opts.threads,
        opts.storage_version.as_deref(),
        opts.select.is_empty(),
    )?;
    tracing::info!(build_id = %build_id, started_from, "Build started.");
    let watchdog = Watchdog::start(&conn, opts.timeout, t0, fired);
    // What the build reads of the lake: the files committed now, whatever lands meanwhile.
    let lake = snapshot::read_lake(warehouse, jobs)?;
    let snapshot = lake.files;
    snapshot::set_variables(&conn, jobs, &snapshot)?;
    let sources_without_data: Vec<String> = snapshot
        .iter()
        .filter(|(_, files)| files.is_empty())
        .map(|(dataset, _)| dataset.clone())
        .collect();
    // Relative paths in models (e.g. `methodology/*.csv`) are relative to the sql/ folder.
    let sql_abs = std::fs::canonicalize(sql_dir).unwrap_or_else(|_| sql_dir.to_path_buf());
    conn.execute_batch(&format!(
        "SET file_search_path = {};",
        duck::lit(&sql_abs.display().to_string())
    ))?;
    // Tables have no row order (every model orders what it needs); not keeping the order of
    // inserts lets DuckDB write in parallel.
    conn.execute_batch("SET preserve_insertion_order = false;")?;
    // One checkpoint, at the end of the build (before the swap), instead of one whenever the
    // write-ahead log passes DuckDB's 16 MB default: mid-build checkpoints rewrote tables the
    // build was still changing (1 M-dossier incremental build: 4.5 s -> 3.8 s; the model that
    // crossed the threshold took 1.8 s instead of 0.14 s).
    conn.execute_batch("SET checkpoint_threshold = '8GB';")?;
    if let Some(limit) = &opts.memory_limit {
        conn.execute_batch(&format!("SET memory_limit = {};", duck::lit(limit)))
            .with_context(|| format!("memory limit {limit:?}"))?;
    }
    let passed_before = tests_passed_in(&conn)?;
    let mut rebuild = stale_models(&conn, &project)?;
    for (model, why) in compacted_since_built(&conn, &project, jobs, &lake.compactions)? {
        rebuild.entry(model).or_insert(why);
    }
    // What this file's tables were built from, and the content token of every model.
    let mut states = reuse::load(&conn)?;
    let mut content: BTreeMap<String, String> = states
        .iter()
        .map(|(k, v)| (k.clone(), v.content.clone()))
        .collect();
    let mut models: Vec<ModelRun> = Vec::new();
    let mut failed: BTreeSet<String> = BTreeSet::new();
    let mut built_incrementally: BTreeSet<String> = BTreeSet::new();
    for name in &order {
        let m = &project.models[name];
        let materialized = match m.materialized {
            Materialized::View => "view",
            Materialized::Table => "table",
            Materialized::Incremental => "incremental",
        }
        .to_string();
        let skipped = match (
            watchdog.fired(),
            m.refs.iter().find(|r| failed.contains(*r)),
        ) {
            (Some(why), _) => Some(format!("not run: {why}")),
            (None, Some(up)) => Some(format!("upstream model {up} failed")),
            (None, None) => None,
        };
        if let Some(why) = skipped {
            failed.insert(name.clone());
            models.push(ModelRun {
                model: name.clone(),
                materialized,
                status: ModelStatus::Skipped,
                rows: None,
                seconds: 0.0,
                error: Some(why),
                rebuilt_because: None,
            });
            continue;
        }
        let rel = Relations {
            jobs,
            snapshot: &snapshot,
            inline_snapshot: m.materialized == Materialized::View,
            this: name.clone(),
            narrowed: None,
        };
        let t = Instant::now();
        // Kept tables need it, and views take it as their content; an incremental model's
        // content comes from the rows it writes, so its inputs are not listed.
        let inputs = if m.materialized == Materialized::Incremental
            || reuse::reads_outside_inputs(&m.parsed)
        {
            None
        } else {
            reuse::inputs_digest(
                &m.parsed.render(&rel, false),
                &m.refs,
                &content,
                &m.parsed.sources(),
                &snapshot,
                jobs,
            )
        };
        if m.materialized == Materialized::Table
            && !opts.full_refresh
            && !rebuild.contains_key(name)
            && inputs.is_some()
            && states.get(name).map(|s| &s.inputs) == inputs.as_ref()
            && duck::table_exists(&conn, name)?
        {
            // Its rows are what the same SQL made from the same inputs.
            let rows: i64 =
                conn.query_row(&format!("SELECT count(*) FROM \"{name}\""), [], |r| {
                    r.get(0)
                })?;
            models.push(ModelRun {
                model: name.clone(),
                materialized,
                status: ModelStatus::Unchanged,
                rows: Some(rows as u64),
                seconds: t.elapsed().as_secs_f64(),
                error: None,
                rebuilt_because: None,
            });
            continue;
        }
        let because = rebuild.get(name).filter(|_| {
            !opts.full_refresh
                && m.materialized == Materialized::Incremental
                && duck::table_exists(&conn, name).unwrap_or(false)
        });
        if let Some(why) = because {
            tracing::info!(model = %name, why = %why, "Rebuilding an incremental model from scratch.");
        }
        let result = materialize(
            &conn,
            &project,
            name,
            &rel,
            opts.full_refresh || because.is_some(),
        );
        let seconds = t.elapsed().as_secs_f64();
        match result {
            Ok(made) => {
                if made.as_ref().is_some_and(|m| m.incremental) {
                    built_incrementally.insert(name.clone());
                }
                let token = match &made {
                    // An incremental model that wrote nothing is as it was.
                    Some(x) if x.new_rows == Some(0) && content.contains_key(name) => {
                        content[name].clone()
                    }
                    Some(x) => reuse::table_token(&conn, name, x.rows, &build_id)?,
                    // A view is what it reads.
                    None => inputs
                        .clone()
                        .unwrap_or_else(|| format!("build {build_id}")),
                };
                content.insert(name.clone(), token.clone());
                states.insert(
                    name.clone(),
                    reuse::ModelState {
                        inputs: inputs.clone().unwrap_or_default(),
                        content: token,
                    },
                );
                models.push(ModelRun {
                    model: name.clone(),
                    materialized,
                    status: ModelStatus::Ok,
                    rows: made.map(|m| m.rows),
                    seconds,
                    error: None,
                    rebuilt_because: because.cloned(),
                })
            }
            Err(e) => {
                failed.insert(name.clone());
                let e = match watchdog.fired() {
                    Some(why) => format!("{why} ({e})"),
                    None => e.to_string(),
                };
                tracing::error!(model = %name, file = %m.path.display(), error = %e, "Model failed.");
                models.push(ModelRun {
                    model: name.clone(),
                    materialized,
                    status: ModelStatus::Error,
                    rows: None,
                    seconds,
                    error: Some(format!("{}: {e}", m.path.display())),
                    rebuilt_because: because.cloned(),
                });
            }
        }
    }
    let narrowing = Narrowing {
        built_incrementally: &built_incrementally,
        passed_before: &passed_before,
    };
    // A build past its timeout fails whatever its tests say: they are not run.
    let mut tests = match watchdog.fired() {
        Some(_) => Vec::new(),
        None => run_tests(
            &conn,
            &project,
            jobs,
            &snapshot,
            &selected,
            &failed,
            Some(&narrowing),
        )?,
    };
    let timed_out = watchdog.fired();
    drop(watchdog);
    if let Some(why) = &timed_out {
        tracing::error!(error = %why, "Build interrupted; the published warehouse stays as it was.");
        for t in tests.iter_mut().filter(|t| t.status == TestStatus::Error) {
            t.error = Some(format!("{why} ({})", t.error.as_deref().unwrap_or("")));
        }
    }
    record_tests_passed(&conn, &tests)?;
    record_model_sql(&conn, &project, &models)?;
    crate::models::personal::record(&conn, &project, jobs)?;
    // What was published (revisions, receipts), beside the marts for BI tools.
    if let Err(e) = crate::ledger::copy_into(&conn, warehouse) {
        tracing::error!(error = %format!("{e:#}"), "Copying the publication ledger into the warehouse failed; the previous copy stays.");
    }
    record_compactions(&conn, &lake.compactions)?;
    staleness::record_lake_position(&conn, &lake.positions)?;
    reuse::save(&conn, &states)?;
    let blocking = tests.iter().any(|t| t.status.blocks());
    let ok = failed.is_empty() && !blocking && timed_out.is_none();
    let mut record = BuildRecord {
        build_id,
        started_at,
        finished_at: String::new(),
        seconds: 0.0,
        models,
        tests,
        published: false,
        published_path: published.clone(),
        started_from: started_from.to_string(),
        sources_without_data,
        lake_compactions: lake.compactions.clone(),
    };
    record.finished_at = time::now_rfc3339();
    record.seconds = t0.elapsed().as_secs_f64();
    record.published = ok;
    save_record(&conn, &record, record::RECORDS_KEPT)?;
    let t_checkpoint = Instant::now();
    execute_profiled(&conn, "_checkpoint", "CHECKPOINT;")?;
    drop(conn);
    let checkpoint_seconds = t_checkpoint.elapsed().as_secs_f64();
    if ok {
        let t_sync = Instant::now();
        std::fs::File::open(&build_file)?.sync_all()?;
        tracing::info!(
            checkpoint_seconds,
            sync_seconds = t_sync.elapsed().as_secs_f64(),
            "Build file checkpointed and synced."
        );
        // The file being replaced stays as the spare the next build starts from (a second
        // name for it, so that `chiso.duckdb` never goes missing).
        let _ = std::fs::remove_file(&spare);
        if published.exists() {
            std::fs::hard_link(&published, &spare)
                .with_context(|| format!("keeping {} as the spare", published.display()))?;
        }
        std::fs::rename(&build_file, &published)
            .with_context(|| format!("publishing {}", published.display()))?;
        sync_dir(warehouse)?;
    } else {
        let kept = warehouse.join("chiso.failed.duckdb");
        let _ = std::fs::rename(&build_file, &kept);
    }
    write_durably(
        &record::builds_dir(warehouse).join(format!("{}.json", record.build_id)),
        &serde_json::to_vec_pretty(&record)?,
    )?;
    if let Err(e) = record::write_latest(warehouse, &record) {
        // Readers fall back to listing the records when it names one gone; the next build
        // writes it again.
        tracing::warn!(error = %format!("{e:#}"), "The pointer to the newest builds was not written.");
    }
    match record::prune_records(warehouse, record::RECORDS_KEPT) {
        Ok(0) => {}
        Ok(n) => tracing::debug!(removed = n, "Old build records removed."),
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "Old build records were not removed."),
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::project::tests::write;

    /// A read-only DuckDB connection held by another process: this test binary, run on the
    /// ignored `hold_reader` below. POSIX locks are per process, so a reader in the building
    /// process itself would not show.
    struct Reader {
        child: std::process::Child,
        out: std::io::BufReader<std::process::ChildStdout>,
    }

    impl Reader {
        fn start(db: &Path) -> Reader {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "models::build::tests::hold_reader",
                    "--ignored",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env("CHISO_HOLD_DB", db)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let out = std::io::BufReader::new(child.stdout.take().unwrap());
            Reader { child, out }
        }

        /// Asks the reader to count the rows of `c` in the view it opened.
        fn count(&mut self) -> i64 {
            use std::io::{BufRead, Write};
            writeln!(self.child.stdin.as_mut().unwrap(), "count").unwrap();
            let mut line = String::new();
            loop {
                line.clear();
                assert!(
                    self.out.read_line(&mut line).unwrap() > 0,
                    "the reader exited"
                );
                // The first answer follows libtest's `test … ` on the same line.
                if let Some(n) = line
                    .trim()
                    .rsplit("rows ")
                    .next()
                    .filter(|_| line.contains("rows "))
                {
                    return n.parse().unwrap();
                }
            }
        }

        fn stop(mut self) {
            drop(self.child.stdin.take());
            assert!(self.child.wait().unwrap().success());
        }
    }

    /// Not a test on its own: the reader process of `Reader`.
    #[test]
    #[ignore]
    fn hold_reader() {
        use std::io::{BufRead, Write};
        let Ok(db) = std::env::var("CHISO_HOLD_DB") else {
            return;
        };
        let conn = duckdb::Connection::open_with_flags(
            &db,
            duckdb::Config::default()
                .access_mode(duckdb::AccessMode::ReadOnly)
                .unwrap(),
        )
        .unwrap();
        for line in std::io::stdin().lock().lines() {
            if line.unwrap() == "count" {
                let n: i64 = conn
                    .query_row("select count(*) from c", [], |r| r.get(0))
                    .unwrap();
                println!("rows {n}");
                std::io::stdout().flush().unwrap();
            }
        }
    }

    #[test]
    fn a_build_over_its_timeout_is_interrupted_and_publishes_nothing() {
        let wh = tempfile::tempdir().unwrap();
        let sql = tempfile::tempdir().unwrap();
        write(
            sql.path(),
            "a.sql",
            "{{ config(materialized='table') }} select 1 as x",
        );
        write(
            sql.path(),
            "a.yml",
            "version: 2\nmodels:\n  - name: a\n    description: One row.\n    columns:\n      - name: x\n        description: one\n        data_tests: [not_null]\n",
        );
        let first = build(wh.path(), sql.path(), &[], &BuildOptions::default()).unwrap();
        assert!(first.published);
        assert_eq!(first.tests.len(), 1, "{:?}", first.tests);
        // A model that runs for about a minute (40 billion rows summed; 2 billion take 2.7 s
        // on 2 cores), one that reads it and one that does not.
        write(
            sql.path(),
            "slow.sql",
            "{{ config(materialized='table') }} select sum(i) as n from range(40000000000) t(i)",
        );
        write(
            sql.path(),
            "after_slow.sql",
            "{{ config(materialized='table') }} select n from {{ ref('slow') }}",
        );
        write(
            sql.path(),
            "z_alone.sql",
            "{{ config(materialized='table') }} select 2 as y",
        );
        // Long enough for the steps before the models on a loaded machine (an interrupt there
        // fails the build with an error rather than a record).
        let opts = BuildOptions {
            timeout: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        let t0 = Instant::now();
        let r = build(wh.path(), sql.path(), &[], &opts).unwrap();
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "not interrupted: {:?}",
            t0.elapsed()
        );
        assert!(!r.published);
        assert!(r.tests.is_empty(), "tests ran after the timeout");
        let run = |name: &str| r.models.iter().find(|m| m.model == name).unwrap();
        assert_eq!(run("slow").status, ModelStatus::Error);
        let why = run("slow").error.clone().unwrap();
        assert!(why.contains("ran over its timeout of 5s"), "{why}");
        assert_eq!(run("after_slow").status, ModelStatus::Skipped);
        // Built before the slow model, or skipped after it: never a published half.
        assert!(matches!(
            run("z_alone").status,
            ModelStatus::Ok | ModelStatus::Skipped
        ));
        assert!(BuildSummary::of(&r)
            .error
            .unwrap()
            .contains("ran over its timeout"));
        let conn = duckdb::Connection::open(published_path(wh.path())).unwrap();
        assert!(!duck::table_exists(&conn, "slow").unwrap());
        drop(conn);
        // Without the slow model, the next build publishes.
        std::fs::remove_file(sql.path().join("slow.sql")).unwrap();
        std::fs::remove_file(sql.path().join("after_slow.sql")).unwrap();
        assert!(build(wh.path(), sql.path(), &[], &opts).unwrap().published);
    }

    #[test]
    fn builds_start_from_the_spare_when_no_reader_holds_it() {
        let wh = tempfile::tempdir().unwrap();
        let sql = tempfile::tempdir().unwrap();
        write(
            sql.path(),
            "src.sql",
            "{{ config(materialized='table') }} select range as x from range(3)",
        );
        // Appends the rows of src not yet kept: after any number of builds, one row per x.
        write(
            sql.path(),
            "inc.sql",
            "{{ config(materialized='incremental', unique_key='x') }} select x from {{ ref('src') }} {% if is_incremental() %} where x > (select max(x) from {{ this }}) {% endif %}",
        );
        let froms: Vec<String> = (0..4)
            .map(|i| {
                write(
                    sql.path(),
                    "src.sql",
                    &format!(
                        "{{{{ config(materialized='table') }}}} select range as x from range({})",
                        3 + i
                    ),
                );
                let r = build(wh.path(), sql.path(), &[], &BuildOptions::default()).unwrap();
                assert!(r.published, "{r:?}");
                r.started_from
            })
            .collect();
        assert_eq!(froms, vec!["empty", "copy", "spare", "spare"]);
        let conn = duckdb::Connection::open(published_path(wh.path())).unwrap();
        let (n, d): (i64, i64) = conn
            .query_row("select count(*), count(distinct x) from inc", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((n, d), (6, 6), "the spare, one build behind, caught up");
    }

    #[test]
    fn tests_on_an_incremental_model_check_only_its_new_rows_once_the_kept_rows_passed() {
        let wh = tempfile::tempdir().unwrap();
        let sql = tempfile::tempdir().unwrap();
        // `src` stands in for the lake: each build appends the next rows.
        write(
            sql.path(),
            "src.sql",
            "{{ config(materialized='table') }} select * from read_csv('rows.csv')",
        );
        write(
            sql.path(),
            "m.sql",
            "{{ config(materialized='incremental', unique_key='k') }} select k, v, w from {{ ref('src') }} \
             {% if is_incremental() %} where k > (select max(k) from {{ this }}) {% endif %}",
        );
        let yml = |values: &str| {
            format!(
                "version: 2\nmodels:\n  - name: m\n    description: One row per k.\n    columns:\n      - name: k\n        description: key\n        data_tests: [unique, not_null]\n      - name: v\n        description: value\n        data_tests:\n          - accepted_values:\n              arguments:\n                values: [{values}]\n      - name: w\n        description: other\n        data_tests: [unique]\n"
            )
        };
        write(sql.path(), "m.yml", &yml("a, b"));
        write(sql.path(), "rows.csv", "k,v,w\n1,a,1\n2,b,2\n");
        let checked = |r: &BuildRecord| -> Vec<(String, String, String)> {
            r.tests
                .iter()
                .map(|t| (t.test.clone(), t.rows_checked.clone(), t.status.to_string()))
                .collect()
        };
        let r = build(wh.path(), sql.path(), &[], &BuildOptions::default()).unwrap();
        assert!(r.published, "{r:?}");
        assert!(checked(&r)
            .iter()
            .all(|(_, rows, st)| rows == "all" && st == "pass"));

        // Incremental: row-wise tests and the uniqueness of the replaced key read the new
        // rows; `unique` on another column still reads all of them.
        write(sql.path(), "rows.csv", "k,v,w\n1,a,1\n2,b,2\n3,a,3\n");
        let r = build(wh.path(), sql.path(), &[], &BuildOptions::default()).unwrap();
        assert!(r.published, "{r:?}");
        let c = checked(&r);
        let rows_of = |c: &[(String, String, String)], name: &str| {
            c.iter().find(|t| t.0 == name).unwrap().1.clone()
        };
        assert_eq!(rows_of(&c, "unique_m_k"), "new");
        assert_eq!(rows_of(&c, "not_null_m_k"), "new");
        assert_eq!(rows_of(&c, "accepted_values_m_v"), "new");
        assert_eq!(rows_of(&c, "unique_m_w"), "all");

        // A bad new row still fails its test.
        write(
            sql.path(),
            "rows.csv",
            "k,v,w\n1,a,1\n2,b,2\n3,a,3\n4,z,4\n",
        );
        let accepted_values = |r: &BuildRecord| {
            let t = r
                .tests
                .iter()
                .find(|t| t.test == "accepted_values_m_v")
                .unwrap();
            (t.rows_checked.clone(), t.status.to_string(), t.failures)
        };
        let r = build(wh.path(), sql.path(), &[], &BuildOptions::default()).unwrap();
        assert!(!r.published);
        assert_eq!(accepted_values(&r), ("new".into(), "fail".into(), 1));

        // A changed test reads every row again, kept ones included: `b` (row 2) is no longer
        // accepted.
        write(
            sql.path(),
            "rows.csv",
            "k,v,w\n1,a,1\n2,b,2\n3,a,3\n4,a,4\n",
        );
        write(sql.path(), "m.yml", &yml("a"));
        let r = build(wh.path(), sql.path(), &[], &BuildOptions::default()).unwrap();
        assert!(!r.published);
        assert_eq!(accepted_values(&r), ("all".into(), "fail".into(), 1));
    }

    #[test]
    fn an_incremental_model_whose_sql_changed_is_rebuilt_with_what_depends_on_it() {
        let wh = tempfile::tempdir().unwrap();
        let sql = tempfile::tempdir().unwrap();
        write(
            sql.path(),
            "a.sql",
            "{{ config(materialized='table') }} select range as x from range(5)",
        );
        let inc = |name: &str, body: &str| {
            write(
                sql.path(),
                &format!("{name}.sql"),
                &format!(
                    "{{{{ config(materialized='incremental', unique_key='x') }}}} {body} \
                     {{% if is_incremental() %}} where x > (select max(x) from {{{{ this }}}}) {{% endif %}}"
                ),
            )
        };
        inc("b", "select x, x * 10 as y from {{ ref('a') }}");
        inc("c", "select * from {{ ref('b') }}");
        let r = build(wh.path(), sql.path(), &[], &BuildOptions::default()).unwrap();
        assert!(r.published, "{r:?}");
        let why = |r: &BuildRecord, m: &str| {
            r.models
                .iter()
                .find(|x| x.model == m)
                .unwrap()
                .rebuilt_because
                .clone()
        };
        // Unchanged: incremental, nothing rebuilt.
        let r = build(wh.path(), sql.path(), &[], &BuildOptions::default()).unwrap();
        assert!(r.published, "{r:?}");
        assert_eq!((why(&r, "b"), why(&r, "c")), (None, None));

        // b gains a column: its kept rows (and c's, made from them) were computed by other SQL.
        // Incrementally, b would only add new rows (none here) and c would fail on the new
        // column; both are rebuilt from scratch.
        inc(
            "b",
            "select x, x * 10 as y, x * 100 as z from {{ ref('a') }}",
        );
        let r = build(wh.path(), sql.path(), &[], &BuildOptions::default()).unwrap();
        assert!(r.published, "{r:?}");
        assert_eq!(why(&r, "b").as_deref(), Some("its SQL changed"));
        assert_eq!(
            why(&r, "c").as_deref(),
            Some("the SQL of b, upstream, changed")
        );
        let conn = duck::open(&published_path(wh.path()), 1).unwrap();
        let z: i64 = conn
            .query_row("SELECT sum(z) FROM c", [], |r| r.get(0))
            .unwrap();
        assert_eq!(z, 1000);
        drop(conn);

        // A warehouse that does not say which SQL built it (made before chiso recorded it; no
        // spare, so the build starts from a copy of it).
        let conn = duck::open(&published_path(wh.path()), 1).unwrap();
        conn.execute_batch("DROP TABLE _chiso_model_sql").unwrap();
        drop(conn);
        std::fs::remove_file(wh.path().join("chiso.spare.duckdb")).unwrap();
        let r = build(wh.path(), sql.path(), &[], &BuildOptions::default()).unwrap();
        assert!(r.published, "{r:?}");
        assert!(why(&r, "c").unwrap().contains("does not record"));
    }

    #[test]
    fn builds_publish_atomically_and_failures_keep_the_old_file() {
        let wh = tempfile::tempdir().unwrap();
        let sql = tempfile::tempdir().unwrap();
        write(
            sql.path(),
            "a.sql",
            "{{ config(materialized='table') }} select range as x from range(5)",
        );
        write(sql.path(), "b.sql", "select x * 2 as y from {{ ref('a') }}");
        write(
            sql.path(),
            "c.sql",
            "{{ config(materialized='incremental', unique_key='x') }} select x, x * 10 as z from {{ ref('a') }} {% if is_incremental() %} where x >= 3 {% endif %}",
        );
        write(
            sql.path(),
            "tests/y_even.sql",
            "select * from {{ ref('b') }} where y % 2 <> 0",
        );
        let r = build(wh.path(), sql.path(), &[], &BuildOptions::default()).unwrap();
        assert!(r.published, "{r:?}");
        assert_eq!(
            r.models
                .iter()
                .map(|m| m.status.as_str())
                .collect::<Vec<_>>(),
            vec!["ok"; 3]
        );
        assert_eq!(r.tests[0].status, TestStatus::Pass);

        // A reader in another process (as a BI tool would be) opened on the published file
        // keeps its view across the next builds, and they never wait for it.
        let mut reader = Reader::start(&published_path(wh.path()));
        assert_eq!(reader.count(), 5);

        // The incremental model only reprocesses x >= 3 and keeps the rest.
        let r = build(wh.path(), sql.path(), &[], &BuildOptions::default()).unwrap();
        assert!(r.published, "{r:?}");
        assert_eq!(r.started_from, "copy");
        assert_eq!(
            r.models.iter().find(|m| m.model == "c").unwrap().rows,
            Some(5)
        );

        // A failing test blocks publication; the published file stays as it was.
        write(
            sql.path(),
            "tests/y_even.sql",
            "select * from {{ ref('b') }} where y % 2 = 0",
        );
        let before = std::fs::read(published_path(wh.path())).unwrap();
        let r = build(wh.path(), sql.path(), &[], &BuildOptions::default()).unwrap();
        assert!(!r.published);
        // The spare is the file the reader holds: it is not written to.
        assert_eq!(r.started_from, "copy");
        assert_eq!(r.tests[0].status, TestStatus::Fail);
        assert_eq!(r.tests[0].failures, 5);
        assert_eq!(std::fs::read(published_path(wh.path())).unwrap(), before);
        assert_eq!(reader.count(), 5, "the old reader still works");
        reader.stop();

        // A broken model fails, its children are skipped, nothing is published.
        write(
            sql.path(),
            "tests/y_even.sql",
            "select * from {{ ref('b') }} where y % 2 <> 0",
        );
        write(
            sql.path(),
            "a.sql",
            "{{ config(materialized='table') }} select nope from range(5)",
        );
        let r = build(wh.path(), sql.path(), &[], &BuildOptions::default()).unwrap();
        assert!(!r.published);
        let status: Vec<(&str, &str)> = r
            .models
            .iter()
            .map(|m| (m.model.as_str(), m.status.as_str()))
            .collect();
        assert_eq!(
            status,
            vec![("a", "error"), ("b", "skipped"), ("c", "skipped")]
        );
        assert!(r.models[0].error.as_ref().unwrap().contains("a.sql"));
        assert!(wh.path().join("_state/builds").read_dir().unwrap().count() >= 4);
    }

    #[test]
    fn a_table_whose_inputs_did_not_change_keeps_its_rows() {
        let wh = tempfile::tempdir().unwrap();
        let sql = tempfile::tempdir().unwrap();
        write(sql.path(), "data.csv", "v\n1\n2\n");
        // Reads a file: rebuilt at every build, but its content decides for its readers.
        write(
            sql.path(),
            "raw.sql",
            "{{ config(materialized='table') }} select * from read_csv('data.csv')",
        );
        write(
            sql.path(),
            "total.sql",
            "{{ config(materialized='table') }} select sum(v) as s from {{ ref('raw') }}",
        );
        write(
            sql.path(),
            "stamped.sql",
            "{{ config(materialized='table') }} select s, now() as at from {{ ref('total') }}",
        );
        let run = |opts: &BuildOptions| {
            let r = build(wh.path(), sql.path(), &[], opts).unwrap();
            assert!(r.published, "{r:?}");
            let status = |m: &str| {
                r.models
                    .iter()
                    .find(|x| x.model == m)
                    .unwrap()
                    .status
                    .to_string()
            };
            let conn = duck::open(&published_path(wh.path()), 1).unwrap();
            let s: i64 = conn
                .query_row("SELECT s FROM stamped", [], |r| r.get(0))
                .unwrap();
            (
                status("raw"),
                status("total"),
                status("stamped"),
                s,
                r.started_from,
            )
        };
        let default = BuildOptions::default();
        let ok = || "ok".to_string();
        let unchanged = || "unchanged".to_string();
        assert_eq!(run(&default), (ok(), ok(), ok(), 3, "empty".into()));
        // Nothing changed: `total` keeps its rows; `stamped` reads the clock.
        assert_eq!(run(&default), (ok(), unchanged(), ok(), 3, "copy".into()));
        write(sql.path(), "data.csv", "v\n1\n2\n3\n");
        assert_eq!(run(&default), (ok(), ok(), ok(), 6, "spare".into()));
        // This build starts from the file of two builds ago (the spare), made from the old
        // data: what it recorded, not what the last build saw, decides.
        assert_eq!(run(&default), (ok(), ok(), ok(), 6, "spare".into()));
        assert_eq!(run(&default), (ok(), unchanged(), ok(), 6, "spare".into()));
        let full = BuildOptions {
            full_refresh: true,
            ..BuildOptions::default()
        };
        assert_eq!(run(&full), (ok(), ok(), ok(), 6, "spare".into()));
    }
}
