//! The command line: the arguments (clap), what every command shares (the project, the
//! warehouse folder, the jobs selected, exit codes, logging), and `dispatch`, which hands each
//! command to its file here, where it calls the library and prints.

mod backfill;
mod bench;
mod build;
mod compact;
mod demo;
mod index;
mod jobs;
mod publish;
mod reconcile;
mod run;
mod serve;
mod sim;
mod snapshot;
mod status;

pub(crate) use std::path::{Path, PathBuf};

pub(crate) use anyhow::Context;
pub(crate) use chrono::{NaiveDate, NaiveDateTime};
pub(crate) use clap::{Args, Parser, Subcommand};

pub(crate) use chiso::config::{self, ProjectConfig};
pub(crate) use chiso::lake::commit::Outcome;
pub(crate) use chiso::models::build::{ModelStatus, TestStatus};
pub(crate) use chiso::pull::{self, RunContext, RunReport};
pub(crate) use chiso::sim::{faults::Faults, SimConfig};

use self::backfill::BackfillArgs;
use self::bench::*;
use self::demo::*;
use self::publish::PublishArgs;
use self::serve::ServeArgs;
use self::sim::*;
use self::status::*;
use build::*;
use compact::*;
use index::*;
use run::*;

/// Exit codes (documented in the README).
pub(crate) const EXIT_OK: u8 = 0;
pub(crate) const EXIT_FAILED: u8 = 1;
pub(crate) const EXIT_CONFIG: u8 = 2;
pub(crate) const EXIT_QUARANTINED: u8 = 3;
/// `chiso publish`: held back by the rules (the period not final yet, the guard's warnings not
/// accepted); nothing recorded or sent for that period.
pub(crate) const EXIT_HELD: u8 = 4;
/// `chiso publish`: recorded, but a push to a portal is still pending (the next publish sends it).
pub(crate) const EXIT_PUSH_PENDING: u8 = 5;
/// `chiso reconcile`: some figure differs from the portal's beyond rounding.
pub(crate) const EXIT_DIFFERENCES: u8 = 4;

/// chiso: scheduled ETL and DuckDB warehouse for the tax administration's service-quality index.
///
/// Pulls the portal's feeds into a Parquet lake (warehouse/lake), never losing or doubling a
/// record. Start with `chiso demo`, which needs no set-up.
#[derive(Parser)]
#[command(name = "chiso", version, about, long_about)]
pub(crate) struct Cli {
    /// Project file (jobs are read from its jobs_dir).
    #[arg(
        long,
        global = true,
        default_value = "chiso.toml",
        env = "CHISO_CONFIG"
    )]
    pub(crate) config: PathBuf,
    /// Warehouse folder (lake, state, exports); overrides chiso.toml's warehouse.dir.
    #[arg(long, global = true, env = "CHISO_DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// More log output (-v info, -vv debug); logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// Log lines as text or as JSON objects (one per line, for a log collector).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "CHISO_LOG_FORMAT"
    )]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run jobs once now: pull their feeds into the lake and commit the cursors.
    ///
    /// Exit status: 0 all ok, 1 a job failed (its earlier pages stay committed), 2 bad
    /// configuration, 3 ok but some records were quarantined (see lake/_quarantine).
    Run(RunArgs),
    /// Show each job's last run, outcome, rows, cursor and data lag.
    Status(StatusArgs),
    /// List the jobs and check every job file (all problems are printed at once); or pause,
    /// resume, trigger or reload jobs on the running daemon (`chiso jobs pause dossiers`).
    Jobs(self::jobs::JobsArgs),
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
    /// Re-pull a window of a cursor feed (from the cursor the job had at --since), then build.
    /// Resumable: after a crash, the same command goes on from its last commit. Never moves the
    /// job's own cursor; the lake's dedup makes re-read records harmless.
    Backfill(BackfillArgs),
    /// The daemon: fire every enabled job on its cron schedule (project time zone), build after
    /// pulls that land rows (debounced), answer /health, /status and /metrics on --http; until
    /// SIGTERM or SIGINT, then give running runs --grace and exit 0. One per warehouse.
    Serve(ServeArgs),
    /// Publish periods of the index from the published warehouse: each becomes revision N in
    /// the ledger (warehouse/publications.duckdb; nothing new when its numbers equal the
    /// latest revision), its files are written under warehouse/exports/<period>/rev-<N>/ (CSV,
    /// JSON, XLSX, an HTML report, manifest.json), and final revisions are sent to the portals
    /// of [publish.targets] (each acknowledged once). Personal data blocks it; the guard's
    /// warnings block a final revision unless --accept.
    ///
    /// Exit status: 0 done, 1 a push is still pending (retried by the next publish), 2 bad
    /// configuration.
    Publish(PublishArgs),
    /// The lake's committed snapshot: per dataset, the Parquet files the commit logs name now
    /// (what a build started now would read; never a file a running pull has not committed).
    /// Other engines (Spark, Trino, Polars, DuckDB) read the same data from this list.
    Snapshot(JsonArg),
    /// Reconcile a period with the portal's published evaluation (Decision 766): every
    /// difference beyond rounding, largest effect on a total first, with its cause (counts
    /// differ, same counts but a different score, only on one side, flagged by the portal) and,
    /// for counts, the query listing the records behind chiso's side; then the figures the
    /// portal revised after publishing them.
    ///
    /// Exit status: 0 every figure agrees within rounding, 4 some differ beyond it.
    Reconcile(self::reconcile::ReconcileArgs),
}

#[derive(Args)]
pub(crate) struct JsonArg {
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

pub(crate) fn init_logging(verbose: u8, default: &str, format: LogFormat) {
    let level = match verbose {
        0 => default,
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("chiso={level},warn")));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => logs.json().flatten_event(true).try_init(),
    };
}

pub(crate) fn warehouse_dir(cli_dir: &Option<PathBuf>, project: &ProjectConfig) -> PathBuf {
    cli_dir
        .clone()
        .unwrap_or_else(|| project.warehouse_dir.clone())
}

pub(crate) fn load(config_path: &Path) -> anyhow::Result<(ProjectConfig, Vec<config::JobConfig>)> {
    load_all(config_path).map(|(p, j)| (p, j.pulls))
}

/// The project and every job kind (pulls and the build job).
pub(crate) fn load_all(config_path: &Path) -> anyhow::Result<(ProjectConfig, config::Jobs)> {
    if !config_path.exists() {
        anyhow::bail!(
            "{} not found (run chiso from the project folder, or pass --config FILE; `chiso demo` needs no project)",
            config_path.display()
        );
    }
    let project = ProjectConfig::load(config_path)?;
    let jobs = config::load_all_jobs(&project.jobs_dir, &project)?;
    Ok((project, jobs))
}

pub(crate) fn select<'a>(
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

/// What every command gets besides its own arguments.
pub(crate) struct Globals {
    /// `--config`: the project file.
    pub(crate) config: PathBuf,
    /// `--dir`: the warehouse folder, when given.
    pub(crate) dir: Option<PathBuf>,
}

/// Runs the command; the exit status on success.
pub(crate) async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let g = Globals {
        config: cli.config,
        dir: cli.dir,
    };
    match cli.command {
        Command::Run(args) => self::run::run(&g, args).await,
        Command::Status(args) => self::status::status(&g, args).await,
        Command::Serve(args) => self::serve::serve(&g, args).await,
        Command::Backfill(args) => self::backfill::backfill(&g, args).await,
        Command::Publish(args) => self::publish::publish(&g, args).await,
        Command::Compact(args) => self::compact::compact(&g, args).await,
        Command::Snapshot(args) => self::snapshot::snapshot(&g, args).await,
        Command::Reconcile(args) => self::reconcile::reconcile(&g, args).await,
        Command::Jobs(args) => self::jobs::jobs(&g, args).await,
        Command::Sim(SimCommand::Serve(a)) => self::sim::serve(&g, a).await,
        Command::Sim(SimCommand::Generate(a)) => self::sim::generate(&g, a).await,
        Command::Demo(a) => self::demo::demo(&g, a).await,
        Command::Build(a) => self::build::build(&g, a).await,
        Command::Test(a) => self::build::test(&g, a).await,
        Command::Index(IndexCommand::Score(a)) => self::index::score(&g, a).await,
        Command::Bench(BenchCommand::Ingest(a)) => self::bench::ingest(&g, a).await,
        Command::Bench(BenchCommand::Build(a)) => self::bench::build(&g, a).await,
        Command::Bench(BenchCommand::Console(a)) => self::bench::console(&g, a).await,
        Command::Bench(BenchCommand::Log(a)) => self::bench::log(&g, a).await,
        Command::Bench(BenchCommand::Freshness(a)) => self::bench::freshness(&g, a).await,
        Command::Bench(BenchCommand::PublicationYear(a)) => {
            self::bench::publication_year(&g, a).await
        }
        Command::Bench(BenchCommand::Year(a)) => self::bench::year(&g, a).await,
        Command::Bench(BenchCommand::Soak(a)) => self::bench::soak(&g, a).await,
        Command::Bench(BenchCommand::BuildOnce(a)) => self::bench::build_once(&g, a).await,
        Command::Bench(BenchCommand::IngestOnce(a)) => self::bench::ingest_once(&g, a).await,
    }
}
