//! Building the warehouse: run the selected models in dependency order into a build file, run
//! the data tests, and only if every model built and no blocking test failed, replace
//! `warehouse/chiso.duckdb` with the build file in one rename.
//!
//! Guarantees: BI tools reading `chiso.duckdb` never see a half-built model (they keep the file
//! they opened, even across a swap) and never hold a lock a build needs (the build writes
//! another file). One build at a time (lock `_state/_build/lock`). Every build leaves a record:
//! `_state/builds/<id>.json`, and the tables `_chiso_builds` / `_chiso_model_runs` in the
//! published file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use serde::Serialize;

use super::project::{Materialized, Project};
use super::reuse;
use super::snapshot::{self, LakeSnapshot};
use super::template::Resolve;
use crate::config::JobConfig;
use crate::duck;
use crate::fs::{sync_dir, write_durably, FileLock};
use crate::time;

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub select: Vec<String>,
    /// Rebuild incremental models from scratch.
    pub full_refresh: bool,
    /// DuckDB threads (0: DuckDB's default).
    pub threads: usize,
    /// DuckDB's `memory_limit` for the build (e.g. `3GB`); DuckDB spills to disk beyond it.
    /// `None`: DuckDB's default (80% of RAM).
    pub memory_limit: Option<String>,
}

/// What became of a model in a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelStatus {
    /// Built.
    Ok,
    /// A table kept: nothing it reads changed.
    Unchanged,
    /// Its SQL failed.
    Error,
    /// Not run: a model upstream failed.
    Skipped,
}

impl ModelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelStatus::Ok => "ok",
            ModelStatus::Unchanged => "unchanged",
            ModelStatus::Error => "error",
            ModelStatus::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for ModelStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What a data test found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TestStatus {
    /// No rows.
    Pass,
    /// Rows, and the test blocks publication (severity `error`).
    Fail,
    /// Rows, reported only (severity `warn`).
    Warn,
    /// The test's SQL failed.
    Error,
}

impl TestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TestStatus::Pass => "pass",
            TestStatus::Fail => "fail",
            TestStatus::Warn => "warn",
            TestStatus::Error => "error",
        }
    }

    /// A failure that keeps the build from publishing.
    pub fn blocks(self) -> bool {
        matches!(self, TestStatus::Fail | TestStatus::Error)
    }
}

impl std::fmt::Display for TestStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelRun {
    pub model: String,
    pub materialized: String,
    pub status: ModelStatus,
    pub rows: Option<u64>,
    pub seconds: f64,
    pub error: Option<String>,
    /// Why an incremental model was rebuilt from scratch although its table was kept: its SQL
    /// changed since the starting file was built, or that of a model upstream did (kept rows
    /// were computed by other SQL), or the file does not say which SQL built it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuilt_because: Option<String>,
}

impl ModelRun {
    /// Built, or kept because nothing it reads changed.
    pub fn succeeded(&self) -> bool {
        matches!(self.status, ModelStatus::Ok | ModelStatus::Unchanged)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TestRun {
    pub test: String,
    pub severity: String,
    pub status: TestStatus,
    pub failures: u64,
    pub seconds: f64,
    pub error: Option<String>,
    /// `all` rows of the models it reads, or only the `new` rows an incremental model wrote
    /// (the kept rows passed the same test in the build that made them).
    pub rows_checked: String,
    /// SHA-256 of the test's SQL over all rows: a changed test is run over all rows again.
    pub sql_sha256: String,
    /// Up to five of the rows it found, each as JSON (a failed or warning test): what to fix,
    /// without rerunning its SQL.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub sample: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildRecord {
    pub build_id: String,
    pub started_at: String,
    pub finished_at: String,
    pub seconds: f64,
    pub models: Vec<ModelRun>,
    pub tests: Vec<TestRun>,
    /// The build file replaced `chiso.duckdb`.
    pub published: bool,
    pub published_path: PathBuf,
    /// What the build file started as: `spare` (the file published before the current one),
    /// `copy` (of the published file: the spare was missing or held by a reader) or `empty`.
    pub started_from: String,
    /// Datasets (`feed/dataset`) with no file in the lake when the build started: read as
    /// empty, so their indicators follow the zero-denominator rules.
    pub sources_without_data: Vec<String>,
    /// Per dataset, how many compactions the lake had when the build read it (files they
    /// retired are not read by this build; `chiso compact` deletes them once it is published).
    pub lake_compactions: BTreeMap<String, u64>,
}

impl BuildRecord {
    pub fn ok(&self) -> bool {
        self.published
    }
}

/// Resolves `ref()` to tables of the build file and `source()` to the lake's Parquet files.
pub struct Relations<'a> {
    pub warehouse: &'a Path,
    pub jobs: &'a [JobConfig],
    /// The committed files `source()` reads (set as variables on the build's connection).
    pub snapshot: &'a LakeSnapshot,
    /// Write the file list into the SQL instead of reading the variable: a view is kept in the
    /// published file and read by other connections, which do not have the variables.
    pub inline_snapshot: bool,
    pub this: String,
    /// Models read as only the rows this build wrote (tests narrowed to new rows).
    pub narrowed: Option<&'a BTreeSet<String>>,
}

impl Resolve for Relations<'_> {
    fn model(&self, name: &str) -> String {
        match self.narrowed {
            Some(n) if n.contains(name) => format!("temp.\"{}\"", new_rows_table(name)),
            _ => format!("\"{name}\""),
        }
    }
    fn source(&self, feed: &str, dataset: &str) -> String {
        match self.jobs.iter().find(|j| j.dataset.feed == feed && j.dataset.name == dataset) {
            Some(j)
                if self
                    .snapshot
                    .get(&j.dataset.key())
                    .is_some_and(|f| !f.is_empty()) =>
            {
                let files = if self.inline_snapshot {
                    let list: Vec<String> = self.snapshot[&j.dataset.key()]
                        .iter()
                        .map(|f| duck::lit(f))
                        .collect();
                    format!("[{}]", list.join(", "))
                } else {
                    format!("getvariable('{}')", snapshot::variable(&j.dataset))
                };
                format!(
                    "read_parquet({files}, hive_partitioning = true, hive_types_autocast = false, union_by_name = true, filename = true, file_row_number = true)"
                )
            }
            // Nothing landed yet (a fresh deployment, a month without petitions): no rows, with
            // the columns the files would have, so that the models over it build and the
            // indicators over it follow their zero-denominator rules.
            Some(j) => empty_relation(&crate::lake::dataset_columns(&j.dataset)),
            // Rendered into SQL that fails with this message if it is ever run.
            None => format!("(SELECT error('source(''{feed}'', ''{dataset}'') is not a dataset of any job in jobs/'))"),
        }
    }
    fn this(&self) -> String {
        format!("\"{}\"", self.this)
    }
}

/// `(SELECT CAST(NULL AS t) AS "c", … WHERE false)`: no rows, typed columns.
fn empty_relation(columns: &[(String, &str)]) -> String {
    let cols: Vec<String> = columns
        .iter()
        .map(|(name, ty)| format!("CAST(NULL AS {ty}) AS \"{}\"", name.replace('"', "\"\"")))
        .collect();
    format!("(SELECT {} WHERE false)", cols.join(", "))
}

/// The temporary table holding the rows an incremental model wrote in this build; it lives
/// until the build's connection closes (never in the file).
fn new_rows_table(model: &str) -> String {
    format!("__chiso_new_{model}")
}

pub fn published_path(warehouse: &Path) -> PathBuf {
    warehouse.join("chiso.duckdb")
}

/// Drops `name` if it exists as the other kind of object (a model changed materialisation).
fn drop_if_other_kind(conn: &duck::Connection, name: &str, want_view: bool) -> anyhow::Result<()> {
    match (duck::object_kind(conn, name)?.as_deref(), want_view) {
        (Some("BASE TABLE"), true) => conn.execute_batch(&format!("DROP TABLE \"{name}\""))?,
        (Some("VIEW"), false) => conn.execute_batch(&format!("DROP VIEW \"{name}\""))?,
        _ => {}
    }
    Ok(())
}

/// CHISO_PROFILE_DIR=dir: DuckDB's JSON profile of the statements that follow goes to
/// `dir/<stem>.json`, until `profile_done`.
fn profile_into(conn: &duck::Connection, stem: &str) -> anyhow::Result<()> {
    let Some(dir) = std::env::var_os("CHISO_PROFILE_DIR") else {
        return Ok(());
    };
    let file = Path::new(&dir).join(format!("{stem}.json"));
    // DuckDB fails every later statement without a message when it cannot write there.
    std::fs::create_dir_all(file.parent().unwrap_or(Path::new(&dir)))
        .with_context(|| format!("CHISO_PROFILE_DIR={}", Path::new(&dir).display()))?;
    conn.execute_batch(&format!(
        "PRAGMA enable_profiling = 'json'; PRAGMA profiling_output = {};",
        duck::lit(&file.display().to_string())
    ))?;
    Ok(())
}

/// Ends what `profile_into` started, so that the runner's own queries after a statement (row
/// counts, content tokens, the next model's checks) do not overwrite its profile.
fn profile_done(conn: &duck::Connection) -> anyhow::Result<()> {
    if std::env::var_os("CHISO_PROFILE_DIR").is_some() {
        conn.execute_batch("PRAGMA disable_profiling;")?;
    }
    Ok(())
}

/// Runs `sql` with its profile in `<stem>.json` under CHISO_PROFILE_DIR (each model's statement,
/// each statement of an incremental model's, each hook, the final checkpoint; each data test's
/// goes to `_tests/<test>.json`); profiling ends with it, whether it succeeded or not.
fn execute_profiled(conn: &duck::Connection, stem: &str, sql: &str) -> anyhow::Result<()> {
    profile_into(conn, stem)?;
    let result = conn.execute_batch(sql);
    profile_done(conn)?;
    Ok(result?)
}

fn materialize(
    conn: &duck::Connection,
    project: &Project,
    name: &str,
    rel: &Relations<'_>,
    full_refresh: bool,
) -> anyhow::Result<Option<Materialization>> {
    let m = &project.models[name];
    let q = |s: &str| format!("\"{s}\"");
    let create_table = |sql: String| -> anyhow::Result<()> {
        drop_if_other_kind(conn, name, false)?;
        execute_profiled(
            conn,
            name,
            &format!("CREATE OR REPLACE TABLE {} AS {sql}", q(name)),
        )
    };
    // dbt's `pre_hook`: statements run before the model, rendered like it (e.g. `SET VARIABLE`
    // a watermark, so that the model's filter is a constant DuckDB can push into the scan).
    let incremental = m.materialized == Materialized::Incremental
        && !full_refresh
        && duck::table_exists(conn, name)?;
    run_hooks(conn, m, "pre_hook", rel, incremental)?;
    let mut new_rows = None;
    match m.materialized {
        Materialized::View => {
            let sql = m.parsed.render(rel, false);
            drop_if_other_kind(conn, name, true)?;
            execute_profiled(
                conn,
                name,
                &format!("CREATE OR REPLACE VIEW {} AS {sql}", q(name)),
            )?;
            return Ok(None);
        }
        Materialized::Table => create_table(m.parsed.render(rel, false))?,
        Materialized::Incremental => {
            if !incremental {
                create_table(m.parsed.render(rel, false))?;
            } else {
                let sql = m.parsed.render(rel, true);
                let tmp = new_rows_table(name);
                // delete+insert: the new rows replace the kept rows of the same unique key (one
                // column or several); append: the new rows are added.
                let keys = m.parsed.config_list("unique_key");
                // The key need not be unique among the new rows (a model can replace whole
                // months, as dbt's delete+insert allows): the keys are deduplicated first, or
                // the delete would join every kept row to every new row of its key.
                let delete = match m.parsed.config_str("incremental_strategy") {
                    Some("append") => String::new(),
                    _ => format!(
                        "DELETE FROM {n} USING (SELECT DISTINCT {cols} FROM {t}) AS __keys WHERE {on}",
                        n = q(name),
                        t = q(&tmp),
                        cols = keys.iter().map(|k| q(k)).collect::<Vec<_>>().join(", "),
                        on = keys
                            .iter()
                            .map(|k| format!(
                                "{n}.{k} IS NOT DISTINCT FROM __keys.{k}",
                                n = q(name),
                                k = q(k)
                            ))
                            .collect::<Vec<_>>()
                            .join(" AND ")
                    ),
                };
                // The new rows stay in the temporary table for the data tests. Each statement
                // gets its own profile (CHISO_PROFILE_DIR keeps the last statement's only).
                let statements = [
                    (
                        "new",
                        format!("CREATE OR REPLACE TEMP TABLE {} AS {sql}", q(&tmp)),
                    ),
                    ("delete", delete),
                    (
                        "insert",
                        format!("INSERT INTO {} BY NAME SELECT * FROM {}", q(name), q(&tmp)),
                    ),
                ];
                for (step, sql) in statements.iter().filter(|(_, s)| !s.is_empty()) {
                    execute_profiled(conn, &format!("{name}.{step}"), sql)?;
                }
                let n: i64 =
                    conn.query_row(&format!("SELECT count(*) FROM temp.{}", q(&tmp)), [], |r| {
                        r.get(0)
                    })?;
                new_rows = Some(n as u64);
            }
        }
    }
    // dbt's `post_hook`: statements run after the model, rendered like it (`fct_dossiers`
    // keeps the table of steps that landed before their dossier with one).
    run_hooks(conn, m, "post_hook", rel, incremental)?;
    let rows: i64 = conn.query_row(&format!("SELECT count(*) FROM {}", q(name)), [], |r| {
        r.get(0)
    })?;
    Ok(Some(Materialization {
        rows: rows as u64,
        incremental,
        new_rows,
    }))
}

/// Runs a model's `pre_hook` or `post_hook` statements (dbt also spells them `pre-hook`,
/// `post-hook`), each rendered as the model is; profiles go to `<model>.<kind>.json` (DuckDB
/// writes none for `SET VARIABLE`).
fn run_hooks(
    conn: &duck::Connection,
    m: &super::project::Model,
    kind: &str,
    rel: &Relations<'_>,
    incremental: bool,
) -> anyhow::Result<()> {
    let name = &m.name;
    let mut hooks = m.parsed.config_list(kind);
    hooks.extend(m.parsed.config_list(&kind.replace('_', "-")));
    for hook in hooks {
        let sql = super::template::parse(&hook)
            .map_err(|e| anyhow::anyhow!("{kind} of {name}: {e}"))?
            .render(rel, incremental);
        if !sql.trim().is_empty() {
            execute_profiled(conn, &format!("{name}.{kind}"), &sql)
                .with_context(|| format!("{kind} of {name}: {sql}"))?;
        }
    }
    Ok(())
}

struct Materialization {
    rows: u64,
    /// Built incrementally: its new rows are in `new_rows_table(model)`.
    incremental: bool,
    /// How many rows an incremental build wrote (none: it replaced nothing).
    new_rows: Option<u64>,
}

/// Opens the file a build writes into. Preferably the spare: the file published before the
/// current one, which the last build kept. It is one build behind (incremental models catch
/// up by their own watermarks, tables and views are rebuilt) and costs no copy, but it can
/// only be taken when no reader still has it open: DuckDB then refuses the write lock and the
/// build starts from a copy of the published file instead, as it does when there is no spare.
fn start_build_file(
    published: &Path,
    spare: &Path,
    build_file: &Path,
    threads: usize,
) -> anyhow::Result<(duck::Connection, &'static str)> {
    if published.exists()
        && spare.exists()
        && !has_locks(spare)
        && std::fs::rename(spare, build_file).is_ok()
    {
        match duck::open(build_file, threads) {
            Ok(conn) => return Ok((conn, "spare")),
            Err(e) => {
                tracing::info!(error = %e, "The spare is in use by a reader; copying the published file.");
                let _ = std::fs::rename(build_file, spare);
            }
        }
    }
    let from = if published.exists() {
        std::fs::copy(published, build_file)
            .with_context(|| format!("copying {} to start the build", published.display()))?;
        "copy"
    } else {
        "empty"
    };
    Ok((duck::open(build_file, threads)?, from))
}

/// Whether any process (this one included) holds a lock on `path`, by `/proc/locks`: a DuckDB
/// reader keeps a lock on its file for as long as it is open. DuckDB's own refusal to open a
/// locked file does not see readers in this same process, so this is checked first. When the
/// answer is unknown, the file counts as locked.
fn has_locks(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(ino) = std::fs::metadata(path).map(|m| m.ino()) else {
        return true;
    };
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
        return true;
    };
    // `1: POSIX  ADVISORY  READ 1234 fd:01:5678 0 EOF`: the sixth field is major:minor:inode.
    locks.lines().any(|l| {
        l.split_whitespace()
            .find(|f| f.matches(':').count() == 2)
            .and_then(|f| f.rsplit(':').next())
            .and_then(|i| i.parse::<u64>().ok())
            == Some(ino)
    })
}

/// Builds the selected models and publishes the result if everything passed.
pub fn build(
    warehouse: &Path,
    sql_dir: &Path,
    jobs: &[JobConfig],
    opts: &BuildOptions,
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
    let (conn, started_from) = start_build_file(&published, &spare, &build_file, opts.threads)?;
    tracing::info!(build_id = %build_id, started_from, "Build started.");
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
        if let Some(up) = m.refs.iter().find(|r| failed.contains(*r)) {
            failed.insert(name.clone());
            models.push(ModelRun {
                model: name.clone(),
                materialized,
                status: ModelStatus::Skipped,
                rows: None,
                seconds: 0.0,
                error: Some(format!("upstream model {up} failed")),
                rebuilt_because: None,
            });
            continue;
        }
        let rel = Relations {
            warehouse,
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
    let tests = run_tests(
        &conn,
        &project,
        warehouse,
        jobs,
        &snapshot,
        &selected,
        &failed,
        Some(&narrowing),
    )?;
    record_tests_passed(&conn, &tests)?;
    record_model_sql(&conn, &project, &models)?;
    record_compactions(&conn, &lake.compactions)?;
    reuse::save(&conn, &states)?;
    let blocking = tests.iter().any(|t| t.status.blocks());
    let ok = failed.is_empty() && !blocking;
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
    save_record(&conn, &record)?;
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
    let dir = warehouse.join("_state/builds");
    write_durably(
        &dir.join(format!("{}.json", record.build_id)),
        &serde_json::to_vec_pretty(&record)?,
    )?;
    Ok(record)
}

/// Per dataset, how many compactions the newest published build had read (from
/// `_state/builds/`, named by time-ordered ids, so only the newest records are read); empty
/// before the first published build.
pub fn published_compactions(warehouse: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    let dir = warehouse.join("_state/builds");
    let mut names: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    names.sort();
    for path in names.iter().rev() {
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("reading {}", path.display()))?;
        if v["published"].as_bool() == Some(true) {
            return Ok(serde_json::from_value(v["lake_compactions"].clone()).unwrap_or_default());
        }
    }
    Ok(BTreeMap::new())
}

/// The models whose kept rows were computed by other SQL than the current files, with why:
/// a model whose file changed since the starting file was built, and everything downstream
/// of it (dbt's `state:modified+`). A file that does not record its models' SQL (built before
/// chiso recorded it) makes every model stale. Incremental models among them are rebuilt
/// from scratch; tables and views are rebuilt anyway.
fn stale_models(
    conn: &duck::Connection,
    project: &Project,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if !duck::table_exists(conn, "_chiso_model_sql")? {
        for name in project.models.keys() {
            out.insert(
                name.clone(),
                "the warehouse does not record which SQL built it".to_string(),
            );
        }
        return Ok(out);
    }
    let mut stmt = conn.prepare("SELECT model, sql_sha256 FROM _chiso_model_sql")?;
    let stored: BTreeMap<String, String> = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<Result<_, _>>()?;
    for (name, m) in &project.models {
        if stored.get(name).is_some_and(|h| *h != m.sql_sha256) {
            for down in project
                .select(&[format!("{name}+")])
                .map_err(|e| anyhow::anyhow!(e))?
            {
                let why = if down == *name {
                    "its SQL changed".to_string()
                } else {
                    format!("the SQL of {name}, upstream, changed")
                };
                out.entry(down).or_insert(why);
            }
        }
    }
    Ok(out)
}

/// The models to rebuild from scratch because a dataset they read (directly or upstream) was
/// compacted since the starting file was built: incremental tables keep each row's lineage
/// (`lake_file`, `lake_row`), which then names files the compaction retired.
fn compacted_since_built(
    conn: &duck::Connection,
    project: &Project,
    jobs: &[JobConfig],
    now: &BTreeMap<String, u64>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut recorded = BTreeMap::new();
    if duck::table_exists(conn, "_chiso_lake_compactions")? {
        let mut stmt = conn.prepare("SELECT dataset, compactions FROM _chiso_lake_compactions")?;
        recorded = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })?
            .collect::<Result<_, _>>()?;
    }
    let mut out = BTreeMap::new();
    for (name, m) in &project.models {
        for (feed, dataset) in m.parsed.sources() {
            let Some(job) = jobs
                .iter()
                .find(|j| j.dataset.feed == feed && j.dataset.name == dataset)
            else {
                continue;
            };
            let key = job.dataset.key();
            let (before, after) = (
                recorded.get(&key).copied().unwrap_or(0),
                now.get(&key).copied().unwrap_or(0),
            );
            if after > before {
                for down in project
                    .select(&[format!("{name}+")])
                    .map_err(|e| anyhow::anyhow!(e))?
                {
                    out.entry(down).or_insert_with(|| {
                        format!("lake dataset {key} was compacted since it was built")
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Records how many compactions each dataset had when this build read it.
fn record_compactions(conn: &duck::Connection, now: &BTreeMap<String, u64>) -> anyhow::Result<()> {
    conn.execute_batch(
        "CREATE OR REPLACE TABLE _chiso_lake_compactions (dataset VARCHAR, compactions BIGINT);",
    )?;
    let mut insert = conn.prepare("INSERT INTO _chiso_lake_compactions VALUES (?, ?)")?;
    for (dataset, n) in now {
        insert.execute(duckdb::params![dataset, *n as i64])?;
    }
    Ok(())
}

/// Records the SQL each model was built with (its file's digest), for the next build.
fn record_model_sql(
    conn: &duck::Connection,
    project: &Project,
    models: &[ModelRun],
) -> anyhow::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _chiso_model_sql (model VARCHAR, sql_sha256 VARCHAR);",
    )?;
    for run in models.iter().filter(|r| r.status == ModelStatus::Ok) {
        conn.execute("DELETE FROM _chiso_model_sql WHERE model = ?", [&run.model])?;
        conn.execute(
            "INSERT INTO _chiso_model_sql VALUES (?, ?)",
            [&run.model, &project.models[&run.model].sql_sha256],
        )?;
    }
    Ok(())
}

/// What lets a build check only the rows it wrote: the models built incrementally, and the
/// tests (name and SQL) the starting file's rows passed when it was built.
struct Narrowing<'a> {
    built_incrementally: &'a BTreeSet<String>,
    passed_before: &'a BTreeSet<(String, String)>,
}

impl Narrowing<'_> {
    /// Whether `t` needs to read only the new rows of its model: the kept rows passed the same
    /// test (same SQL) in the build that made the starting file, and the test is about single
    /// rows (`not_null`, `accepted_values`), or about the key a delete+insert model replaces
    /// rows by (`unique`: the rows it replaced are gone, so only the new rows can collide).
    /// `relationships` always reads everything: its parent may have lost rows.
    fn narrows(&self, project: &Project, t: &super::project::DataTest, full_sql: &str) -> bool {
        let Some(on) = &t.on else { return false };
        if !self.built_incrementally.contains(&on.model)
            || !self
                .passed_before
                .contains(&(t.name.clone(), sql_digest(full_sql)))
        {
            return false;
        }
        let m = &project.models[&on.model];
        match on.kind.as_str() {
            "not_null" | "accepted_values" => true,
            "unique" => {
                m.parsed
                    .config_str("incremental_strategy")
                    .unwrap_or("delete+insert")
                    == "delete+insert"
                    && m.parsed.config_list("unique_key") == [on.column.clone()]
            }
            _ => false,
        }
    }
}

fn sql_digest(sql: &str) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(sql.as_bytes()))
}

/// The tests the rows of this file passed when it was built (none for a new file).
fn tests_passed_in(conn: &duck::Connection) -> anyhow::Result<BTreeSet<(String, String)>> {
    if !duck::table_exists(conn, "_chiso_tests_passed")? {
        return Ok(BTreeSet::new());
    }
    let mut stmt = conn.prepare("SELECT test, sql_sha256 FROM _chiso_tests_passed")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Records which tests the file's rows pass, for the next build's narrowed tests.
fn record_tests_passed(conn: &duck::Connection, tests: &[TestRun]) -> anyhow::Result<()> {
    conn.execute_batch(
        "CREATE OR REPLACE TABLE _chiso_tests_passed (test VARCHAR, sql_sha256 VARCHAR);",
    )?;
    let mut insert = conn.prepare("INSERT INTO _chiso_tests_passed VALUES (?, ?)")?;
    for t in tests.iter().filter(|t| t.status == TestStatus::Pass) {
        insert.execute(duckdb::params![t.test, t.sql_sha256])?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_tests(
    conn: &duck::Connection,
    project: &Project,
    warehouse: &Path,
    jobs: &[JobConfig],
    snapshot: &LakeSnapshot,
    selected: &BTreeSet<String>,
    failed: &BTreeSet<String>,
    narrowing: Option<&Narrowing<'_>>,
) -> anyhow::Result<Vec<TestRun>> {
    let mut out = Vec::new();
    for t in &project.tests {
        let refs = t.parsed.refs();
        // A test runs when it reads a selected model, and all it reads built.
        if !refs.iter().any(|r| selected.contains(r)) || refs.iter().any(|r| failed.contains(r)) {
            continue;
        }
        let mut rel = Relations {
            warehouse,
            jobs,
            snapshot,
            inline_snapshot: false,
            this: t.name.clone(),
            narrowed: None,
        };
        let full_sql = t.parsed.render(&rel, false);
        let narrowed = narrowing.is_some_and(|n| n.narrows(project, t, &full_sql));
        let sql = if narrowed {
            rel.narrowed = narrowing.map(|n| n.built_incrementally);
            t.parsed.render(&rel, false)
        } else {
            full_sql.clone()
        };
        let t0 = Instant::now();
        profile_into(conn, &format!("_tests/{}", t.name))?;
        let res: Result<i64, _> =
            conn.query_row(&format!("SELECT count(*) FROM ({sql})"), [], |r| r.get(0));
        profile_done(conn)?;
        let seconds = t0.elapsed().as_secs_f64();
        let (status, failures, error) = match res {
            Ok(0) => (TestStatus::Pass, 0, None),
            Ok(n) if t.severity == "warn" => (TestStatus::Warn, n as u64, None),
            Ok(n) => (TestStatus::Fail, n as u64, None),
            Err(e) => (
                TestStatus::Error,
                0,
                Some(format!("{}: {e}", t.path.display())),
            ),
        };
        if status == TestStatus::Fail {
            tracing::error!(test = %t.name, failures, "Data test failed; the build is not published.");
        }
        let sample = if failures > 0 {
            sample_rows(conn, &sql).unwrap_or_else(|e| vec![format!("(could not list them: {e})")])
        } else {
            vec![]
        };
        out.push(TestRun {
            test: t.name.clone(),
            severity: t.severity.clone(),
            status,
            failures,
            seconds,
            error,
            rows_checked: if narrowed { "new" } else { "all" }.into(),
            sql_sha256: sql_digest(&full_sql),
            sample,
        });
    }
    Ok(out)
}

/// The first five rows a test's SQL returns, each as a JSON object.
fn sample_rows(conn: &duck::Connection, sql: &str) -> anyhow::Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT CAST(to_json(t) AS VARCHAR) FROM ({sql}) AS t LIMIT 5"
    ))?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn save_record(conn: &duck::Connection, r: &BuildRecord) -> anyhow::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _chiso_builds (build_id VARCHAR, started_at VARCHAR, finished_at VARCHAR, \
           seconds DOUBLE, published BOOLEAN, models INTEGER, tests_failed INTEGER);
         CREATE TABLE IF NOT EXISTS _chiso_model_runs (build_id VARCHAR, model VARCHAR, materialized VARCHAR, \
           status VARCHAR, rows BIGINT, seconds DOUBLE, error VARCHAR);",
    )?;
    let failed = r.tests.iter().filter(|t| t.status.blocks()).count() as i64;
    conn.execute(
        "INSERT INTO _chiso_builds VALUES (?, ?, ?, ?, ?, ?, ?)",
        duckdb::params![
            r.build_id,
            r.started_at,
            r.finished_at,
            r.seconds,
            r.published,
            r.models.len() as i64,
            failed
        ],
    )?;
    for m in &r.models {
        conn.execute(
            "INSERT INTO _chiso_model_runs VALUES (?, ?, ?, ?, ?, ?, ?)",
            duckdb::params![
                r.build_id,
                m.model,
                m.materialized,
                m.status.as_str(),
                m.rows.map(|x| x as i64),
                m.seconds,
                m.error
            ],
        )?;
    }
    Ok(())
}

/// `chiso test`: the data tests against the published warehouse, read-only.
pub fn test_published(
    warehouse: &Path,
    sql_dir: &Path,
    jobs: &[JobConfig],
    select: &[String],
) -> anyhow::Result<Vec<TestRun>> {
    let published = published_path(warehouse);
    if !published.exists() {
        bail!(
            "{} does not exist yet; run `chiso build` first",
            published.display()
        );
    }
    let project = Project::load(sql_dir).map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?;
    let selected = project.select(select).map_err(|e| anyhow::anyhow!(e))?;
    let conn = duckdb::Connection::open_with_flags(
        &published,
        duckdb::Config::default().access_mode(duckdb::AccessMode::ReadOnly)?,
    )?;
    conn.execute_batch(duck::SAFE_SETTINGS)?;
    let snapshot = snapshot::read(warehouse, jobs)?;
    snapshot::set_variables(&conn, jobs, &snapshot)?;
    run_tests(
        &conn,
        &project,
        warehouse,
        jobs,
        &snapshot,
        &selected,
        &BTreeSet::new(),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::super::project::tests::write;
    use super::*;

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
