//! The `chiso` command line: argument parsing, logging, exit codes and printing. Everything it
//! does is done by the library modules; this file only wires them to the terminal.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use chrono::{NaiveDate, NaiveDateTime};
use clap::{Args, Parser, Subcommand};

use chiso::config::{self, ProjectConfig};
use chiso::lake::commit::Outcome;
use chiso::models::build::{ModelStatus, TestStatus};
use chiso::pull::{self, RunContext, RunReport};
use chiso::sim::{self, faults::Faults, SimConfig};
use chiso::{bench, demo, status};

/// Exit codes (documented in the README).
const EXIT_OK: u8 = 0;
const EXIT_FAILED: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_QUARANTINED: u8 = 3;

/// chiso: scheduled ETL and DuckDB warehouse for the tax administration's service-quality index.
///
/// Pulls the portal's feeds into a Parquet lake (warehouse/lake), never losing or doubling a
/// record. Start with `chiso demo`, which needs no set-up.
#[derive(Parser)]
#[command(name = "chiso", version, about, long_about)]
struct Cli {
    /// Project file (jobs are read from its jobs_dir).
    #[arg(
        long,
        global = true,
        default_value = "chiso.toml",
        env = "CHISO_CONFIG"
    )]
    config: PathBuf,
    /// Warehouse folder (lake, state, exports); overrides chiso.toml's warehouse.dir.
    #[arg(long, global = true, env = "CHISO_DIR")]
    dir: Option<PathBuf>,
    /// More log output (-v info, -vv debug); logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run jobs once now: pull their feeds into the lake and commit the cursors.
    ///
    /// Exit status: 0 all ok, 1 a job failed (its earlier pages stay committed), 2 bad
    /// configuration, 3 ok but some records were quarantined (see lake/_quarantine).
    Run(RunArgs),
    /// Show each job's last run, outcome, rows, cursor and data lag.
    Status(StatusArgs),
    /// List the jobs and check every job file (all problems are printed at once).
    Jobs(JsonArg),
    /// Run the simulator of the tax administration's feeds (the embedded default source).
    #[command(subcommand)]
    Sim(SimCommand),
    /// The main job on the embedded default: start the simulator in-process, run every pull
    /// once into --dir (default warehouse/), and print what landed per feed.
    Demo(DemoArgs),
    /// Benchmarks that anyone can rerun.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The service-quality index.
    #[command(subcommand)]
    Index(IndexCommand),
    /// Build the warehouse: run the SQL models under sql/ in dependency order into a build
    /// file, run the data tests, and replace warehouse/chiso.duckdb only if all passed.
    ///
    /// Exit status: 0 published, 1 a model or a blocking test failed (the published file is
    /// unchanged; the failed build is kept as chiso.failed.duckdb for inspection).
    Build(BuildArgs),
    /// Run the data tests against the published warehouse (read-only).
    Test(TestArgs),
    /// Rewrite the many small files of each partition, older than --older-than, as one file
    /// (committed like a landing; rows unchanged), and delete the files earlier compactions
    /// retired once a build has published without them. Builds after a compaction rebuild the
    /// incremental models that read the dataset.
    Compact(CompactArgs),
    /// The lake's committed snapshot: per dataset, the Parquet files the commit logs name now
    /// (what a build started now would read; never a file a running pull has not committed).
    /// Other engines (Spark, Trino, Polars, DuckDB) read the same data from this list.
    Snapshot(JsonArg),
}

#[derive(Args)]
struct BuildArgs {
    /// dbt-style selectors: model, model+ (and downstream), +model (and upstream), tag:name.
    #[arg(long, num_args = 1..)]
    select: Vec<String>,
    /// Rebuild incremental models from scratch.
    #[arg(long)]
    full_refresh: bool,
    /// DuckDB threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// DuckDB memory limit for the build, e.g. 3GB (it spills to disk beyond it); default
    /// DuckDB's (80% of RAM).
    #[arg(long)]
    memory_limit: Option<String>,
    /// Print the build record as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TestArgs {
    /// Only tests reading these models (selectors as for build).
    #[arg(long, num_args = 1..)]
    select: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum IndexCommand {
    /// Score given counts without a warehouse, with the warehouse's own scoring SQL.
    ///
    /// Input CSV header: unit_id,period,indicator,numerator,denominator (indicator = the
    /// SPEC §4 code; period 2026-08, 2026-Q3 or 2026). Output CSV on stdout:
    /// unit_id,period,indicator,numerator,denominator,ratio,points,max_points, then per unit and
    /// period one GROUP:<code> row per group and a TOTAL row. Points at full precision; a
    /// not-scored indicator has empty ratio and points; indicators absent from the input are
    /// not scored.
    Score(IndexScoreArgs),
}

#[derive(Args)]
struct IndexScoreArgs {
    /// Counts CSV file ("-" reads standard input).
    #[arg(long)]
    counts: PathBuf,
    /// Methodology version (default: the version in force for each period).
    #[arg(long)]
    methodology: Option<String>,
}

#[derive(Args)]
struct RunArgs {
    /// Jobs to run (file names in jobs/ without .toml).
    jobs: Vec<String>,
    /// Run every enabled job.
    #[arg(long, conflicts_with = "jobs")]
    all: bool,
    /// Print the run reports as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CompactArgs {
    /// Jobs whose datasets to compact (file names in jobs/ without .toml).
    jobs: Vec<String>,
    /// Every job's dataset.
    #[arg(long, conflicts_with = "jobs")]
    all: bool,
    /// Only files committed at least this long ago (e.g. 1d, 6h, 30m).
    #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
    older_than: std::time::Duration,
    /// Leave partitions with fewer files than this alone.
    #[arg(long, default_value_t = 10)]
    min_files: usize,
    /// Say what would be done and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct StatusArgs {
    /// Only these jobs.
    jobs: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct JsonArg {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
struct WorldArgs {
    /// Seed: the same seed gives the same world.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Dossiers submitted on an ordinary working day, across all units.
    #[arg(long, default_value_t = 40.0)]
    scale: f64,
    /// First day of dossier history (YYYY-MM-DD).
    #[arg(long, default_value = "2026-01-01")]
    from: NaiveDate,
    /// The simulator's clock at start, local time (YYYY-MM-DDTHH:MM:SS); default now.
    #[arg(long)]
    now: Option<NaiveDateTime>,
    /// Petitions per dossier.
    #[arg(long, default_value_t = 0.01)]
    petition_ratio: f64,
}

impl WorldArgs {
    fn config(&self, speed: f64) -> anyhow::Result<SimConfig> {
        let now = self.now.unwrap_or_else(chiso::time::now_local);
        if self.from > now.date() {
            anyhow::bail!("--from {} is after --now {}", self.from, now);
        }
        if !(self.scale > 0.0 && self.scale <= 1_000_000.0) {
            anyhow::bail!(
                "--scale {} must be between 0 and 1000000 dossiers per working day",
                self.scale
            );
        }
        Ok(SimConfig {
            seed: self.seed,
            per_day: self.scale,
            petition_ratio: self.petition_ratio,
            from: self.from,
            now,
            speed,
            horizon_days: 14,
        })
    }
}

#[derive(Subcommand)]
enum SimCommand {
    /// Serve every feed on 127.0.0.1 (Ctrl-C to stop). The token, if any, is read from the
    /// environment variable named by --token-env.
    Serve(SimServeArgs),
    /// Write the simulated feeds to files (NDJSON, JSON, CSV) for benchmarks and file jobs.
    Generate(SimGenerateArgs),
}

#[derive(Args)]
struct SimServeArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8610)]
    port: u16,
    #[command(flatten)]
    world: WorldArgs,
    /// Simulated seconds per real second (0 freezes the clock).
    #[arg(long, default_value_t = 60.0)]
    speed: f64,
    /// Environment variable holding the token clients must send (unset: no auth).
    #[arg(long, default_value = "CHISO_SIM_TOKEN")]
    token_env: String,
    /// Share of requests answered 503.
    #[arg(long, default_value_t = 0.0)]
    fault_5xx: f64,
    /// Share of requests answered slowly (--slow-ms later).
    #[arg(long, default_value_t = 0.0)]
    fault_slow: f64,
    #[arg(long, default_value_t = 5000)]
    slow_ms: u64,
    /// Share of answers cut off half-way.
    #[arg(long, default_value_t = 0.0)]
    fault_truncate: f64,
    /// Malformed records mixed in, per record served.
    #[arg(long, default_value_t = 0.0)]
    fault_malformed: f64,
    /// The paged feeds serve current records only and move one to the end at every page after
    /// the first, as a live API whose records change while a client reads it.
    #[arg(long)]
    moving_records: bool,
}

#[derive(Args)]
struct SimGenerateArgs {
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    world: WorldArgs,
    /// Stop after this many dossiers (sets --scale to spread them over --from..--now).
    #[arg(long)]
    dossiers: Option<u64>,
    /// Generator threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

#[derive(Args)]
struct DemoArgs {
    #[command(flatten)]
    world: WorldArgs,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Dossier records/s from a local NDJSON feed file into the lake, chiso vs DuckDB's
    /// read_json → COPY (FORMAT parquet), same threads, same ZSTD, same partitioning.
    Ingest(BenchIngestArgs),
    /// One engine of `bench ingest` (run by it in a child process).
    #[command(hide = true)]
    IngestOnce(BenchOnceArgs),
    /// Warehouse build time and peak memory on a lake of simulated dossiers: full build, then
    /// an incremental build after a batch of changed dossiers, optionally dbt-duckdb on the
    /// same models and lake.
    Build(BenchBuildArgs),
    /// One build of `bench build` (run by it in a child process).
    #[command(hide = true)]
    BuildOnce(BenchBuildOnceArgs),
    /// The lake's commit log as a dataset's history grows: time per commit (what a pull pays)
    /// and to read the snapshot (what a build pays), at 10, 20, 50, 100… entries.
    Log(BenchLogArgs),
}

#[derive(Args)]
struct BenchLogArgs {
    /// Entries to append (a pull every 5 minutes makes 105 120 a year).
    #[arg(long, default_value_t = 20_000)]
    entries: u64,
    /// Folder for the log (cleared first).
    #[arg(long, default_value = "bench-log")]
    work_dir: PathBuf,
    /// Also scan the same rows from 1, 10, 100… up to this many Parquet files (0: skip).
    #[arg(long, default_value_t = 10_000)]
    scan_files: u64,
    /// Rows for the scan.
    #[arg(long, default_value_t = 1_000_000)]
    scan_rows: u64,
}

#[derive(Args)]
struct BenchBuildArgs {
    /// Dossiers in the lake (each has several versions and steps).
    #[arg(long, default_value_t = 1_000_000)]
    dossiers: u64,
    /// DuckDB threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Folder for the prepared lake (reused between runs) and the runs.
    #[arg(long, default_value = "target/bench")]
    work_dir: PathBuf,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Dossiers changed before the incremental build.
    #[arg(long, default_value_t = 10_000)]
    changed: u64,
    /// DuckDB memory limit of every build.
    #[arg(long, default_value = "3GB")]
    memory_limit: String,
    /// Also run `dbt build` with dbt-duckdb from this executable (e.g. .venv/bin/dbt).
    #[arg(long)]
    dbt: Option<PathBuf>,
}

#[derive(Args)]
struct BenchBuildOnceArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    sql: PathBuf,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long)]
    memory_limit: String,
    #[arg(long)]
    full_refresh: bool,
}

#[derive(Args)]
struct BenchIngestArgs {
    /// Dossiers to generate (each has several versions: records > dossiers).
    #[arg(long, default_value_t = 1_000_000)]
    dossiers: u64,
    /// Threads for both engines.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Folder for the generated input and the outputs (input is reused between runs).
    #[arg(long, default_value = "target/bench")]
    work_dir: PathBuf,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Keep the landed outputs.
    #[arg(long)]
    keep: bool,
    /// DuckDB's memory_limit for its run (chiso's target is 1 GiB; pass e.g. 20GB to see
    /// DuckDB unconstrained).
    #[arg(long, default_value = "1GB")]
    duckdb_memory_limit: String,
}

#[derive(Args)]
struct BenchOnceArgs {
    #[arg(long)]
    engine: String,
    #[arg(long)]
    input: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value = "1GB")]
    duckdb_memory_limit: String,
}

fn init_logging(verbose: u8, default: &str) {
    let level = match verbose {
        0 => default,
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("chiso={level},warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// jemalloc for Rust and, through its unprefixed `malloc`, for the bundled DuckDB: with glibc's
/// allocator the same 10 M-dossier build spent a third longer, much of it in the kernel.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Run(_) | Command::Sim(_) => "info",
        _ => "warn",
    };
    init_logging(cli.verbose, default_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if let Some(c) = e.downcast_ref::<config::ConfigErrors>() {
                eprint!("chiso: {c}");
                return ExitCode::from(EXIT_CONFIG);
            }
            eprintln!("chiso: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn warehouse_dir(cli_dir: &Option<PathBuf>, project: &ProjectConfig) -> PathBuf {
    cli_dir
        .clone()
        .unwrap_or_else(|| project.warehouse_dir.clone())
}

fn load(config_path: &Path) -> anyhow::Result<(ProjectConfig, Vec<config::JobConfig>)> {
    if !config_path.exists() {
        anyhow::bail!(
            "{} not found (run chiso from the project folder, or pass --config FILE; `chiso demo` needs no project)",
            config_path.display()
        );
    }
    let project = ProjectConfig::load(config_path)?;
    let jobs = config::load_jobs(&project.jobs_dir, &project)?;
    Ok((project, jobs))
}

fn select<'a>(
    jobs: &'a [config::JobConfig],
    names: &[String],
    all: bool,
) -> anyhow::Result<Vec<&'a config::JobConfig>> {
    if all || names.is_empty() {
        if !all && names.is_empty() {
            anyhow::bail!(
                "name the jobs to run, or pass --all (jobs: {})",
                jobs.iter()
                    .map(|j| j.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        return Ok(jobs.iter().filter(|j| j.enabled).collect());
    }
    names
        .iter()
        .map(|n| {
            jobs.iter().find(|j| &j.name == n).with_context(|| {
                format!(
                    "no job {n:?} (jobs: {})",
                    jobs.iter()
                        .map(|j| j.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        })
        .collect()
}

fn print_ranking(r: &demo::Ranking, month: demo::Month) {
    match month {
        demo::Month::LatestComplete => println!(
            "\nService-quality index, {} ({}), provinces, top {}:",
            r.period,
            r.status,
            r.rows.len()
        ),
        demo::Month::Current => println!(
            "\nThe month in progress, {} (provisional, judged as of {}: open dossiers due later count as on time), top {}:",
            r.period,
            r.judged_as_of,
            r.rows.len()
        ),
    }
    println!(
        "{:>3}  {:<28} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7} {:>8}",
        "#", "UNIT", "CKMB", "TDGQ", "CLGQ", "TTTT", "MDSH", "MDHL", "TOTAL", "DOSSIERS"
    );
    for (i, row) in r.rows.iter().enumerate() {
        let s = row.scores;
        println!(
            "{:>3}  {:<28} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>7.2} {:>8}",
            i + 1,
            row.unit_name,
            s[0],
            s[1],
            s[2],
            s[3],
            s[4],
            s[5],
            s[6],
            row.dossiers
        );
    }
}

fn print_compaction(reports: &[chiso::lake::compact::CompactReport], dry_run: bool) {
    let verb = if dry_run {
        "would compact"
    } else {
        "compacted"
    };
    for r in reports {
        if r.partitions.is_empty() {
            println!("{:<16} {:<24} nothing to compact", r.job, r.dataset);
        }
        for p in &r.partitions {
            println!(
                "{:<16} {:<24} {verb} {:<22} {:>6} files -> 1, {:>10} rows, {} -> {} bytes",
                r.job, r.dataset, p.partition, p.files, p.rows, p.bytes_before, p.bytes_after
            );
        }
        if r.deleted_retired + r.kept_retired > 0 {
            println!(
                "{:<16} {:<24} retired files: {} deleted, {} kept until a build publishes without them",
                r.job, r.dataset, r.deleted_retired, r.kept_retired
            );
        }
    }
}

fn print_build(r: &chiso::models::build::BuildRecord) {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING);
    t.set_header(vec!["MODEL", "MATERIALIZED", "STATUS", "ROWS", "SECONDS"]);
    for m in &r.models {
        t.add_row(vec![
            m.model.clone(),
            m.materialized.clone(),
            m.status.to_string(),
            m.rows.map_or(String::new(), |n| n.to_string()),
            format!("{:.2}", m.seconds),
        ]);
    }
    println!("{t}");
    for m in r.models.iter().filter(|m| m.status == ModelStatus::Error) {
        println!("error in {}: {}", m.model, m.error.as_deref().unwrap_or(""));
    }
    for x in r.tests.iter().filter(|x| x.status != TestStatus::Pass) {
        println!(
            "test {} {}: {} violating rows{}",
            x.test,
            x.status,
            x.failures,
            x.error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
        for row in &x.sample {
            println!("    {row}");
        }
    }
    if !r.sources_without_data.is_empty() {
        println!(
            "No data yet (read as empty; their indicators follow the zero-denominator rules): {}",
            r.sources_without_data.join(", ")
        );
    }
    let passed = r
        .tests
        .iter()
        .filter(|x| x.status == TestStatus::Pass)
        .count();
    let unchanged = r
        .models
        .iter()
        .filter(|m| m.status == ModelStatus::Unchanged)
        .count();
    println!(
        "{} models{}, {} of {} data tests passed, {:.1}s",
        r.models.len(),
        if unchanged > 0 {
            format!(" ({unchanged} unchanged: nothing they read changed)")
        } else {
            String::new()
        },
        passed,
        r.tests.len(),
        r.seconds
    );
    if r.published {
        println!("Published {}", r.published_path.display());
    } else {
        println!(
            "NOT published: {} is unchanged; the failed build is kept as chiso.failed.duckdb",
            r.published_path.display()
        );
    }
}

fn exit_code(reports: &[RunReport]) -> u8 {
    if reports.iter().any(|r| r.outcome == Outcome::Failed) {
        EXIT_FAILED
    } else if reports.iter().any(|r| r.outcome == Outcome::Quarantined) {
        EXIT_QUARANTINED
    } else {
        EXIT_OK
    }
}

fn print_reports(
    reports: &[RunReport],
    served: Option<&std::collections::BTreeMap<String, sim::server::FeedStats>>,
) {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING);
    let mut header = vec!["JOB", "DATASET", "OUTCOME"];
    if served.is_some() {
        header.push("SERVED");
    }
    header.extend(["RECEIVED", "LANDED", "QUARANTINED"]);
    // Records an earlier run already landed (paged feeds re-read their watermark's records).
    let any_skipped = reports.iter().any(|r| r.totals.rows_skipped > 0);
    if any_skipped {
        header.push("SKIPPED");
    }
    header.extend(["FILES", "MiB", "RETRIES", "SECONDS"]);
    t.set_header(header);
    for r in reports {
        let mut row = vec![
            r.job.clone(),
            format!("lake/{}/{}", r.feed, r.dataset),
            r.outcome.as_str().to_string(),
        ];
        if let Some(s) = served {
            row.push(
                s.get(&r.job)
                    .map_or("-".into(), |s| s.served_records.to_string()),
            );
        }
        row.extend([
            r.totals.rows_in.to_string(),
            r.totals.rows_landed.to_string(),
            r.totals.rows_quarantined.to_string(),
        ]);
        if any_skipped {
            row.push(r.totals.rows_skipped.to_string());
        }
        row.extend([
            r.totals.files.to_string(),
            format!("{:.1}", r.totals.bytes as f64 / 1048576.0),
            r.totals.retries.to_string(),
            format!("{:.2}", r.seconds),
        ]);
        t.add_row(row);
    }
    println!("{t}");
    for r in reports {
        if let Some(e) = &r.error {
            println!("{}: {e}", r.job);
        }
        if let Some(run) = &r.recovered_run {
            println!("{}: recovered interrupted run {run} first", r.job);
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Run(args) => {
            let (project, jobs) = load(&cli.config)?;
            let selected = select(&jobs, &args.jobs, args.all)?;
            let ctx = RunContext {
                warehouse: warehouse_dir(&cli.dir, &project),
                project_root: project.root.clone(),
                http: chiso::feeds::http::http_client(),
            };
            let selected: Vec<config::JobConfig> = selected.into_iter().cloned().collect();
            let mut reports = Vec::new();
            let mut errors = Vec::new();
            for (name, r) in pull::run_many(&ctx, &selected).await {
                match r {
                    Ok(rep) => reports.push(rep),
                    Err(e) => errors.push(format!("job {name}: {e}")),
                }
            }
            reports.sort_by(|a, b| a.job.cmp(&b.job));
            if args.json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                print_reports(&reports, None);
            }
            for e in &errors {
                eprintln!("chiso: {e}");
            }
            Ok(if errors.is_empty() {
                exit_code(&reports)
            } else {
                EXIT_FAILED
            })
        }
        Command::Status(args) => {
            // Outside a project (e.g. after `chiso demo` in an empty folder) the built-in
            // project's jobs are the ones to report on.
            let (project, jobs) = demo::load_project_or_embedded(&cli.config)?;
            let jobs: Vec<config::JobConfig> = if args.jobs.is_empty() {
                jobs
            } else {
                select(&jobs, &args.jobs, false)?
                    .into_iter()
                    .cloned()
                    .collect()
            };
            let st = status::collect(&warehouse_dir(&cli.dir, &project), &jobs)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                println!("{}", status::render(&st));
            }
            Ok(EXIT_OK)
        }
        Command::Compact(args) => {
            let (project, jobs) = load(&cli.config)?;
            let selected = select(&jobs, &args.jobs, args.all)?;
            let warehouse = warehouse_dir(&cli.dir, &project);
            let opts = chiso::lake::compact::CompactOptions {
                older_than: chrono::Duration::from_std(args.older_than)?,
                min_files: args.min_files,
                published_compactions: chiso::models::build::published_compactions(&warehouse)?,
                dry_run: args.dry_run,
            };
            let mut reports = Vec::new();
            for job in selected {
                let (w, j, o) = (warehouse.clone(), job.clone(), opts.clone());
                let r = tokio::task::spawn_blocking(move || {
                    chiso::lake::compact::compact_job(&w, &j.name, &j.dataset, &o)
                })
                .await?
                .with_context(|| format!("compacting job {}", job.name))?;
                reports.push(r);
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                print_compaction(&reports, args.dry_run);
            }
            Ok(EXIT_OK)
        }
        Command::Snapshot(args) => {
            let (project, jobs) = demo::load_project_or_embedded(&cli.config)?;
            // Absolute paths: the list is read by other programs from other folders.
            let warehouse = std::path::absolute(warehouse_dir(&cli.dir, &project))?;
            let snapshot = chiso::models::snapshot::read(&warehouse, &jobs)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&snapshot)?);
            } else {
                for (dataset, files) in &snapshot {
                    println!("{dataset:<28} {:>7} file(s)", files.len());
                }
            }
            Ok(EXIT_OK)
        }
        Command::Jobs(args) => {
            let (_, jobs) = load(&cli.config)?;
            if args.json {
                let v: Vec<serde_json::Value> = jobs
                    .iter()
                    .map(|j| {
                        serde_json::json!({
                            "job": j.name, "file": j.file, "enabled": j.enabled, "schedule": j.schedule.0,
                            "protocol": j.protocol.name(), "source": j.source.as_ref().map(|s| &s.name),
                            "dataset": j.dataset.key(),
                            "description": j.description,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for j in &jobs {
                    println!(
                        "{:<16} {:<14} {:<10} lake/{}/{:<16} {}{}",
                        j.name,
                        j.schedule.0,
                        j.protocol.name(),
                        j.dataset.feed,
                        j.dataset.name,
                        j.description,
                        if j.enabled { "" } else { " (disabled)" }
                    );
                }
                println!("{} job(s), configuration ok", jobs.len());
            }
            Ok(EXIT_OK)
        }
        Command::Sim(SimCommand::Serve(a)) => {
            let faults = Faults {
                error_rate: a.fault_5xx,
                slow_rate: a.fault_slow,
                slow_ms: a.slow_ms,
                truncate_rate: a.fault_truncate,
                malformed_rate: a.fault_malformed,
                moving_records: a.moving_records,
            };
            faults
                .validate()
                .map_err(|e| anyhow::anyhow!("--fault-…: {e}"))?;
            let cfg = a.world.config(a.speed)?;
            eprintln!(
                "Building the simulated world (seed {}, {} dossiers per working day from {}) ...",
                cfg.seed, cfg.per_day, cfg.from
            );
            let world = tokio::task::spawn_blocking(move || sim::World::build(cfg)).await?;
            let token = std::env::var(&a.token_env).ok().filter(|t| !t.is_empty());
            let auth = if token.is_some() {
                format!("token from ${}", a.token_env)
            } else {
                "no auth".into()
            };
            let handle =
                sim::server::start(sim::server::SimState::new(world, faults, token), a.port)
                    .await
                    .with_context(|| format!("binding 127.0.0.1:{}", a.port))?;
            println!(
                "chiso simulator serving on {} ({auth}); Ctrl-C to stop",
                handle.base_url()
            );
            println!("  GET  /portal/dossiers?since=&limit=   GET /portal/dossier-steps   GET /payments/transactions");
            println!("  POST /reporting/ratings   POST /reporting/petitions   GET /_sim/stats   POST /_sim/faults");
            println!("  GET  /catalogue/procedures.json  /registry/units.json  /calendar/days.csv  /reports/national/received.csv");
            tokio::signal::ctrl_c().await?;
            handle.stop().await;
            Ok(EXIT_OK)
        }
        Command::Sim(SimCommand::Generate(a)) => {
            let mut cfg = a.world.config(0.0)?;
            if let Some(n) = a.dossiers {
                cfg.per_day = sim::generate::per_day_for(n, cfg.from, cfg.now.date());
            }
            let t0 = std::time::Instant::now();
            let out = a.out.clone();
            let threads = a.threads;
            let max = a.dossiers;
            let manifest = tokio::task::spawn_blocking(move || {
                sim::generate::generate(&cfg, &out, max, threads)
            })
            .await??;
            println!("{}", serde_json::to_string_pretty(&manifest)?);
            eprintln!(
                "Wrote {} dossiers to {} in {:.1}s",
                manifest.dossiers,
                a.out.display(),
                t0.elapsed().as_secs_f64()
            );
            Ok(EXIT_OK)
        }
        Command::Demo(a) => {
            let (project, jobs) = demo::load_project_or_embedded(&cli.config)?;
            let warehouse = warehouse_dir(&cli.dir, &project);
            let sql_dir = project.root.join("sql");
            let build_jobs = jobs.clone();
            let cfg = a.world.config(0.0)?;
            println!(
                "chiso demo: simulator (seed {}, {} dossiers per working day, {} to {}) on 127.0.0.1, warehouse {}",
                cfg.seed,
                cfg.per_day,
                cfg.from,
                cfg.now.format("%Y-%m-%d %H:%M"),
                warehouse.display()
            );
            let t0 = std::time::Instant::now();
            let result = demo::run(project, jobs, warehouse.clone(), cfg).await?;
            println!(
                "Pulled every feed once from {} ({} dossiers in the simulated portal) in {:.1}s:\n",
                result.sim_url,
                result.dossiers_in_world,
                t0.elapsed().as_secs_f64()
            );
            print_reports(&result.reports, Some(&result.served));
            let mismatched: Vec<&RunReport> = result
                .reports
                .iter()
                .filter(|r| {
                    result.served.get(&r.job).is_some_and(|s| {
                        s.served_records
                            != r.totals.rows_landed
                                + r.totals.rows_quarantined
                                + r.totals.rows_skipped
                    })
                })
                .collect();
            let skipped: u64 = result.reports.iter().map(|r| r.totals.rows_skipped).sum();
            if mismatched.is_empty() && skipped == 0 {
                println!("\nEvery record served was landed or quarantined (served = landed + quarantined for every feed).");
            } else if mismatched.is_empty() {
                println!("\nEvery record served was landed, quarantined, or skipped as already landed by an earlier run (served = landed + quarantined + skipped for every feed).");
            } else {
                for r in &mismatched {
                    println!(
                        "\nMISMATCH {}: served {:?}, landed {} + quarantined {} + skipped {}",
                        r.job,
                        result.served.get(&r.job),
                        r.totals.rows_landed,
                        r.totals.rows_quarantined,
                        r.totals.rows_skipped
                    );
                }
            }
            // Build the warehouse and show the latest month's ranking, when the project has models.
            let mut build_failed = false;
            if sql_dir.is_dir() && mismatched.is_empty() {
                let (w, s, j) = (warehouse.clone(), sql_dir.clone(), build_jobs);
                let record = tokio::task::spawn_blocking(move || {
                    chiso::models::build::build(
                        &w,
                        &s,
                        &j,
                        &chiso::models::build::BuildOptions::default(),
                    )
                })
                .await??;
                let passed = record
                    .tests
                    .iter()
                    .filter(|t| t.status == TestStatus::Pass)
                    .count();
                println!(
                    "\nBuilt the warehouse: {} models, {} of {} data tests passed, {:.1}s{}",
                    record.models.len(),
                    passed,
                    record.tests.len(),
                    record.seconds,
                    if record.published {
                        format!(" -> {}", record.published_path.display())
                    } else {
                        " (NOT published)".into()
                    }
                );
                build_failed = !record.published;
                if record.published {
                    // The month leadership discusses, then the one in progress, judged as of
                    // the data (thin early in a month: the dossier counts show why).
                    for month in [demo::Month::LatestComplete, demo::Month::Current] {
                        if let Some(r) = demo::ranking(&warehouse, month, 10)? {
                            print_ranking(&r, month);
                        }
                    }
                } else {
                    for m in record
                        .models
                        .iter()
                        .filter(|m| m.status == ModelStatus::Error)
                    {
                        println!("error in {}: {}", m.model, m.error.as_deref().unwrap_or(""));
                    }
                }
            }
            println!(
                "\nNext: chiso status --dir {d}   |   duckdb -c \"SELECT TrangThaiHoSo, count(*) FROM read_parquet('{d}/lake/portal/dossiers/*/*.parquet', hive_partitioning=true) GROUP BY 1 ORDER BY 1\"",
                d = warehouse.display()
            );
            Ok(if !mismatched.is_empty() || build_failed {
                EXIT_FAILED
            } else {
                exit_code(&result.reports)
            })
        }
        Command::Build(a) => {
            let (project, jobs) = demo::load_project_or_embedded(&cli.config)?;
            let warehouse = warehouse_dir(&cli.dir, &project);
            let sql_dir = project.root.join("sql");
            if !sql_dir.is_dir() {
                anyhow::bail!(
                    "{} not found: run chiso build from the project folder",
                    sql_dir.display()
                );
            }
            let opts = chiso::models::build::BuildOptions {
                select: a.select,
                full_refresh: a.full_refresh,
                threads: a.threads,
                memory_limit: a.memory_limit,
            };
            let record = tokio::task::spawn_blocking(move || {
                chiso::models::build::build(&warehouse, &sql_dir, &jobs, &opts)
            })
            .await??;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&record)?);
            } else {
                print_build(&record);
            }
            Ok(if record.published {
                EXIT_OK
            } else {
                EXIT_FAILED
            })
        }
        Command::Test(a) => {
            let (project, jobs) = demo::load_project_or_embedded(&cli.config)?;
            let warehouse = warehouse_dir(&cli.dir, &project);
            let sql_dir = project.root.join("sql");
            let tests = tokio::task::spawn_blocking(move || {
                chiso::models::build::test_published(&warehouse, &sql_dir, &jobs, &a.select)
            })
            .await??;
            let failed = tests.iter().filter(|t| t.status.blocks()).count();
            if a.json {
                println!("{}", serde_json::to_string_pretty(&tests)?);
            } else {
                for t in tests.iter().filter(|t| t.status != TestStatus::Pass) {
                    println!(
                        "{:<5} {} ({} rows){}",
                        t.status,
                        t.test,
                        t.failures,
                        t.error
                            .as_deref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    );
                }
                println!("{} passed, {} failed", tests.len() - failed, failed);
            }
            Ok(if failed == 0 { EXIT_OK } else { EXIT_FAILED })
        }
        Command::Index(IndexCommand::Score(a)) => {
            let (text, name) = if a.counts.as_os_str() == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                (s, "<stdin>".to_string())
            } else {
                (
                    std::fs::read_to_string(&a.counts)
                        .with_context(|| format!("reading {}", a.counts.display()))?,
                    a.counts.display().to_string(),
                )
            };
            // The project's methodology files when run inside a project, else the built-in ones.
            let root = cli
                .config
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let methodologies = chiso::index::Methodologies::load(&root.join("sql/methodology"))?;
            let out = chiso::index::score(&text, &name, &methodologies, a.methodology.as_deref())?;
            print!("{out}");
            Ok(EXIT_OK)
        }
        Command::Bench(BenchCommand::Ingest(a)) => {
            let opts = bench::IngestBench {
                dossiers: a.dossiers,
                threads: a.threads,
                work_dir: a.work_dir,
                seed: a.seed,
                keep: a.keep,
                duckdb_memory_limit: a.duckdb_memory_limit,
            };
            tokio::task::spawn_blocking(move || bench::ingest(&opts)).await??;
            Ok(EXIT_OK)
        }
        Command::Bench(BenchCommand::Build(a)) => {
            let (project, _) = demo::load_project_or_embedded(&cli.config)?;
            let opts = bench::build::BuildBench {
                dossiers: a.dossiers,
                seed: a.seed,
                threads: a.threads,
                work_dir: a.work_dir,
                changed: a.changed,
                memory_limit: a.memory_limit,
                sql_dir: project.root.join("sql"),
                dbt: a.dbt,
            };
            bench::build::run(&opts).await?;
            Ok(EXIT_OK)
        }
        Command::Bench(BenchCommand::Log(a)) => {
            let opts = bench::log::LogBench {
                entries: a.entries,
                work_dir: std::env::current_dir()?.join(&a.work_dir),
            };
            let steps = tokio::task::spawn_blocking(move || bench::log::run(&opts)).await??;
            println!("| entries | ms per commit (last step) | ms to read the snapshot | files |");
            println!("|---:|---:|---:|---:|");
            for s in steps {
                println!(
                    "| {} | {:.2} | {:.1} | {} |",
                    s.entries, s.ms_per_commit, s.ms_snapshot, s.files
                );
            }
            if a.scan_files > 0 {
                let dir = std::env::current_dir()?.join(&a.work_dir);
                let (rows, max) = (a.scan_rows, a.scan_files);
                let steps =
                    tokio::task::spawn_blocking(move || bench::log::scan(&dir, rows, max, 2))
                        .await??;
                println!();
                println!("| files | rows | ms to read every row | ms to find nothing new |");
                println!("|---:|---:|---:|---:|");
                for s in steps {
                    println!(
                        "| {} | {} | {:.0} | {:.0} |",
                        s.files, s.rows, s.ms_scan, s.ms_nothing_new
                    );
                }
            }
            Ok(EXIT_OK)
        }
        Command::Bench(BenchCommand::BuildOnce(a)) => {
            let m = tokio::task::spawn_blocking(move || {
                bench::build::measure_build(
                    &a.dir,
                    &a.sql,
                    a.threads,
                    &a.memory_limit,
                    a.full_refresh,
                )
            })
            .await??;
            println!("{}", serde_json::to_string(&m)?);
            Ok(EXIT_OK)
        }
        Command::Bench(BenchCommand::IngestOnce(a)) => {
            let m = match a.engine.as_str() {
                "chiso" => bench::measure_chiso(&a.input, &a.out, a.threads).await?,
                "duckdb" => {
                    let (i, o, t, m) = (
                        a.input.clone(),
                        a.out.clone(),
                        a.threads,
                        a.duckdb_memory_limit.clone(),
                    );
                    tokio::task::spawn_blocking(move || bench::measure_duckdb(&i, &o, t, &m))
                        .await??
                }
                other => anyhow::bail!("--engine {other:?}: expected chiso or duckdb"),
            };
            println!("{}", serde_json::to_string(&m)?);
            Ok(EXIT_OK)
        }
    }
}
