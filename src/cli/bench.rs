//! `chiso bench`: benchmarks that anyone can rerun.

use super::*;

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
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
    /// The console's page latency (p50, p95 per page kind, record pages paged) on a warehouse
    /// of N dossiers while builds run, full and incremental in turn.
    Console(BenchConsoleArgs),
    /// One build of `bench build` (run by it in a child process).
    #[command(hide = true)]
    BuildOnce(BenchBuildOnceArgs),
    /// The lake's commit log as a dataset's history grows: time per commit (what a pull pays)
    /// and to read the snapshot (what a build pays), at 10, 20, 50, 100… entries.
    Log(BenchLogArgs),
    /// Freshness: with N dossiers of history pulled and built and the daemon running, change
    /// dossiers at the simulator one at a time and time each until it is readable in
    /// warehouse/chiso.duckdb, split into wait for the pull, pull, debounce, build, publish.
    Freshness(BenchFreshnessArgs),
    /// A year of publication replayed in minutes on the simulator, day by day: pulls, a
    /// build, the preview job, the final job from the 11th, a publisher's routine revisions
    /// on Mondays, a methodology change, a registry rename; then what the ledger, the
    /// exports and the warehouse hold month by month, each period's finals and what the
    /// portal received, what is pending and why, and the vintages at three moments.
    PublicationYear(BenchPublicationYearArgs),
    /// A year of the default schedules' state (commit logs, compactions, fire histories,
    /// build records, a year of finals), and what each recurring operation costs on it
    /// against a fresh warehouse: a pull, a build's snapshot read, `chiso status`, the
    /// daemon's start-up and /status, a publication, a compaction; then every state file's
    /// size against its bound.
    Year(BenchYearArgs),
    /// The daemon left running on the simulator with per-second schedules, through faults
    /// (5xx bursts, every feed down for two minutes, slow answers) and a SIGKILL every few
    /// minutes; then nothing lost (the lake equals the simulator), each final revision stored
    /// once by each portal, and the daemon's memory and open files over its lifetimes.
    Soak(BenchSoakArgs),
}

#[derive(Args)]
pub(crate) struct BenchSoakArgs {
    /// How long to run.
    #[arg(long, default_value_t = 30.0)]
    pub(crate) minutes: f64,
    /// SIGKILL the daemon this often (± a fifth), in seconds.
    #[arg(long, default_value_t = 180)]
    pub(crate) kill_every: u64,
    /// Work folder (emptied first).
    #[arg(long, default_value = "target/bench/soak")]
    pub(crate) work_dir: PathBuf,
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// Dossiers on an ordinary working day.
    #[arg(long, default_value_t = 60.0)]
    pub(crate) scale: f64,
    /// Simulated seconds per second.
    #[arg(long, default_value_t = 120.0)]
    pub(crate) speed: f64,
    /// The final period the publish job publishes (the world's months are 2026-06 to -09).
    #[arg(long, default_value = "2026-08")]
    pub(crate) period: String,
    /// Print the report as JSON too.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) async fn soak(g: &Globals, a: BenchSoakArgs) -> anyhow::Result<u8> {
    let (project, _) = chiso::demo::load_all_or_embedded(&g.config)?;
    if !project.root.join("sql").is_dir() || !project.root.join("jobs").is_dir() {
        anyhow::bail!("run chiso bench soak from the project folder (it copies jobs/ and sql/)");
    }
    let opts = chiso::bench::soak::Soak {
        dir: std::env::current_dir()?.join(&a.work_dir),
        project: std::path::absolute(&project.root)?,
        exe: std::env::current_exe()?,
        minutes: a.minutes,
        kill_every: std::time::Duration::from_secs(a.kill_every.max(10)),
        seed: a.seed,
        per_day: a.scale,
        speed: a.speed,
        period: chiso::publish::parse_period(&a.period)?,
    };
    let r = chiso::bench::soak::run(opts).await?;
    println!(
        "{:.0} minutes, {} kills; the last SIGTERM: exit {} in {:.1} s",
        r.minutes, r.kills, r.stop_status, r.stop_seconds
    );
    println!();
    println!("| daemon | lived (s) | RSS at 60 s | RSS last | RSS max | open files at 60 s | last | max |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, l) in r.lifetimes.iter().enumerate() {
        let mb = |kb: u64| format!("{:.1} MB", kb as f64 / 1024.0);
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            i + 1,
            l.seconds,
            l.rss_kb_at_60s.map_or("-".into(), mb),
            mb(l.rss_kb_last),
            mb(l.rss_kb_max),
            l.fds_at_60s.map_or("-".into(), |n| n.to_string()),
            l.fds_last,
            l.fds_max
        );
    }
    println!();
    println!("| feed | simulator | lake | missing | extra |");
    println!("|---|---:|---:|---:|---:|");
    for f in &r.feeds {
        println!(
            "| {} | {} | {} | {} | {} |",
            f.feed, f.simulator, f.lake, f.missing, f.extra
        );
    }
    println!();
    let twice: Vec<&String> = r
        .stored
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(k, _)| k)
        .collect();
    println!(
        "Portals stored {} final revisions ({}), {} more than once; {} sends answered as duplicates; unacknowledged at the end: {}; hand publications exited {:?}.",
        r.stored.len(),
        r.stored.keys().cloned().collect::<Vec<_>>().join(", "),
        twice.len(),
        r.duplicates,
        if r.unacknowledged.is_empty() { "none".to_string() } else { r.unacknowledged.join(", ") },
        r.hand_publications
    );
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    }
    Ok(if r.ok() { EXIT_OK } else { EXIT_FAILED })
}

#[derive(Args)]
pub(crate) struct BenchYearArgs {
    /// Work folder (emptied first).
    #[arg(long, default_value = "target/bench/year")]
    pub(crate) work_dir: PathBuf,
    /// Days of schedules to age the warehouse by.
    #[arg(long, default_value_t = 365)]
    pub(crate) days: u32,
    /// Dossiers in the simulated world.
    #[arg(long, default_value_t = 50_000)]
    pub(crate) dossiers: u64,
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// Build threads.
    #[arg(long, default_value_t = 2)]
    pub(crate) threads: usize,
    /// Times each operation is measured (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub(crate) repeat: usize,
    /// Print the report as JSON too.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) async fn year(g: &Globals, a: BenchYearArgs) -> anyhow::Result<u8> {
    let (project, jobs) = chiso::demo::load_all_or_embedded(&g.config)?;
    let sql_dir = project.root.join("sql");
    if !sql_dir.is_dir() {
        anyhow::bail!("run chiso bench year from the project folder (it builds sql/)");
    }
    let opts = chiso::bench::year::YearBench {
        dir: std::env::current_dir()?.join(&a.work_dir),
        sql_dir,
        project,
        jobs,
        days: a.days,
        dossiers: a.dossiers,
        seed: a.seed,
        threads: a.threads,
        repeat: a.repeat,
        retention_days: 90,
    };
    let r = chiso::bench::year::run(opts).await?;
    let a_ = &r.aged;
    println!(
        "A year ({} days) written in {:.0} s: {} commits and {} compactions, {} fire-history lines ({} kept), {} build records, finals {}",
        r.days,
        a_.seconds,
        a_.commits,
        a_.compactions,
        a_.fire_lines_written,
        a_.fire_lines_kept,
        a_.build_records_written,
        a_.finals.join(", ")
    );
    println!();
    println!("| operation | fresh (ms) | after a year (ms) | ratio |");
    println!("|---|---:|---:|---:|");
    for o in &r.ops {
        println!(
            "| {} | {:.1} | {:.1} | {:.2}× |",
            o.op,
            o.fresh_ms,
            o.year_ms,
            o.ratio()
        );
    }
    println!();
    println!("| state file | files | largest | total | bound |");
    println!("|---|---:|---:|---:|---|");
    for s in &r.state {
        println!(
            "| `{}` | {} | {} | {} | {} |",
            s.what,
            s.files,
            chiso::bench::human_bytes(s.largest_bytes),
            chiso::bench::human_bytes(s.total_bytes),
            s.bound
        );
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    }
    Ok(EXIT_OK)
}

#[derive(Args)]
pub(crate) struct BenchPublicationYearArgs {
    /// Work folder (emptied first).
    #[arg(long, default_value = "target/bench/publication-year")]
    pub(crate) work_dir: PathBuf,
    /// Dossiers on an ordinary working day.
    #[arg(long, default_value_t = 40.0)]
    pub(crate) scale: f64,
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// The world's first day (the first simulated day is the next).
    #[arg(long, default_value = "2026-01-01")]
    pub(crate) from: NaiveDate,
    /// The last simulated day (the 11th publishes the month before as final).
    #[arg(long, default_value = "2027-01-11")]
    pub(crate) until: NaiveDate,
    /// The day a new methodology version is announced, effective from the month before.
    #[arg(long, default_value = "2026-08-20")]
    pub(crate) methodology_on: NaiveDate,
    /// Build threads.
    #[arg(long, default_value_t = 2)]
    pub(crate) threads: usize,
    /// Share of pushes the simulated portals refuse (503).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) portal_error_rate: f64,
    /// Share of pushes stored whose answer is lost (503 after storing).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) portal_lost_rate: f64,
    /// Share of pushes answered 302 to a login page, not stored.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) portal_redirect_rate: f64,
    /// Print the report as JSON too.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) async fn publication_year(
    g: &Globals,
    a: BenchPublicationYearArgs,
) -> anyhow::Result<u8> {
    let (project, jobs) = chiso::demo::load_all_or_embedded(&g.config)?;
    let sql_dir = project.root.join("sql");
    if !sql_dir.is_dir() {
        anyhow::bail!("run chiso bench publication-year from the project folder (it builds sql/)");
    }
    let opts = chiso::bench::publication::PublicationYear {
        dir: std::env::current_dir()?.join(&a.work_dir),
        sql_dir,
        project,
        jobs,
        per_day: a.scale,
        seed: a.seed,
        from: a.from,
        until: a.until,
        methodology_on: a.methodology_on,
        threads: a.threads,
        portal_faults: {
            let f = chiso::sim::faults::Faults {
                publish_error_rate: a.portal_error_rate,
                publish_lost_rate: a.portal_lost_rate,
                publish_redirect_rate: a.portal_redirect_rate,
                ..Default::default()
            };
            f.validate().map_err(anyhow::Error::msg)?;
            f
        },
    };
    let report = chiso::bench::publication::run(opts).await?;
    chiso::bench::publication::print(&report);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(EXIT_OK)
}

/// What the benchmarks on simulated dossiers share.
#[derive(Args)]
pub(crate) struct BenchDataArgs {
    /// Dossiers of simulated history (each has several versions and steps).
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) dossiers: u64,
    /// Threads (chiso's and DuckDB's).
    #[arg(long, default_value_t = 2)]
    pub(crate) threads: usize,
    /// Work folder: the generated input or prepared lake (reused between runs) and the runs.
    #[arg(long, default_value = "target/bench")]
    pub(crate) work_dir: PathBuf,
    /// Seed of the simulated world.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
}

#[derive(Args)]
pub(crate) struct BenchFreshnessArgs {
    /// The history: the lake of `bench build`, prepared once per size and seed.
    #[command(flatten)]
    pub(crate) data: BenchDataArgs,
    /// Dossiers changed, one at a time.
    #[arg(long, default_value_t = 20)]
    pub(crate) changes: u64,
    /// The dossiers job's schedule: every this many seconds.
    #[arg(long, default_value_t = 5)]
    pub(crate) every: u32,
    /// The build job's quiet period.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) quiet: std::time::Duration,
    /// The build job's maximum delay.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) max_delay: std::time::Duration,
    /// DuckDB memory limit of every build.
    #[arg(long, default_value = "3GB")]
    pub(crate) memory_limit: String,
    /// Print the changes as JSON too.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) async fn freshness(g: &Globals, a: BenchFreshnessArgs) -> anyhow::Result<u8> {
    let (project, _) = chiso::demo::load_project_or_embedded(&g.config)?;
    let sql_dir = project.root.join("sql");
    if !sql_dir.is_dir() {
        anyhow::bail!("run chiso bench freshness from the project folder (it builds sql/)");
    }
    let opts = chiso::bench::freshness::FreshnessBench {
        lake: chiso::bench::build::BuildBench {
            dossiers: a.data.dossiers,
            seed: a.data.seed,
            threads: a.data.threads,
            work_dir: std::env::current_dir()?.join(&a.data.work_dir),
            changed: a.changes,
            memory_limit: a.memory_limit,
            storage_version: project
                .storage_version
                .clone()
                .unwrap_or_else(|| "latest".into()),
            sql_dir,
            dbt: None,
        },
        changes: a.changes,
        every: a.every,
        quiet: a.quiet,
        max_delay: a.max_delay,
    };
    let changes = chiso::bench::freshness::run(&opts).await?;
    chiso::bench::freshness::print_table(&opts, &changes);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&changes)?);
    }
    Ok(EXIT_OK)
}

#[derive(Args)]
pub(crate) struct BenchLogArgs {
    /// Entries to append (a pull every 5 minutes makes 105 120 a year).
    #[arg(long, default_value_t = 20_000)]
    pub(crate) entries: u64,
    /// Folder for the log (cleared first).
    #[arg(long, default_value = "bench-log")]
    pub(crate) work_dir: PathBuf,
    /// Also scan the same rows from 1, 10, 100… up to this many Parquet files (0: skip).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) scan_files: u64,
    /// Rows for the scan.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) scan_rows: u64,
}

/// The warehouse file's storage format in the build and console benchmarks.
const BENCH_STORAGE_VERSION: &str = "v1.4.0";

#[derive(Args)]
pub(crate) struct BenchBuildArgs {
    #[command(flatten)]
    pub(crate) data: BenchDataArgs,
    /// Dossiers changed before the incremental build.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) changed: u64,
    /// DuckDB memory limit of every build.
    #[arg(long, default_value = "3GB")]
    pub(crate) memory_limit: String,
    /// Storage format of the warehouse file (`latest`: this DuckDB's newest).
    #[arg(long, default_value = BENCH_STORAGE_VERSION)]
    pub(crate) storage_version: String,
    /// Also run `dbt build` with dbt-duckdb from this executable (e.g. .venv/bin/dbt).
    #[arg(long)]
    pub(crate) dbt: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct BenchConsoleArgs {
    #[command(flatten)]
    pub(crate) data: BenchDataArgs,
    /// Requests of each page kind.
    #[arg(long, default_value_t = 100)]
    pub(crate) requests: usize,
    /// DuckDB memory limit of every build.
    #[arg(long, default_value = "3GB")]
    pub(crate) memory_limit: String,
}

#[derive(Args)]
pub(crate) struct BenchBuildOnceArgs {
    #[arg(long)]
    pub(crate) dir: PathBuf,
    #[arg(long)]
    pub(crate) sql: PathBuf,
    #[arg(long, default_value_t = 2)]
    pub(crate) threads: usize,
    #[arg(long)]
    pub(crate) memory_limit: String,
    #[arg(long)]
    pub(crate) full_refresh: bool,
    #[arg(long, default_value = "v1.4.0")]
    pub(crate) storage_version: String,
}

#[derive(Args)]
pub(crate) struct BenchIngestArgs {
    #[command(flatten)]
    pub(crate) data: BenchDataArgs,
    /// Keep the landed outputs.
    #[arg(long)]
    pub(crate) keep: bool,
    /// DuckDB's memory_limit for its run (chiso's target is 1 GiB; pass e.g. 20GB to see
    /// DuckDB unconstrained).
    #[arg(long, default_value = "1GB")]
    pub(crate) duckdb_memory_limit: String,
}

#[derive(Args)]
pub(crate) struct BenchOnceArgs {
    #[arg(long)]
    pub(crate) engine: String,
    #[arg(long)]
    pub(crate) input: PathBuf,
    #[arg(long)]
    pub(crate) out: PathBuf,
    #[arg(long, default_value_t = 2)]
    pub(crate) threads: usize,
    #[arg(long, default_value = "1GB")]
    pub(crate) duckdb_memory_limit: String,
}

pub(crate) async fn ingest(_g: &Globals, a: BenchIngestArgs) -> anyhow::Result<u8> {
    let opts = chiso::bench::IngestBench {
        dossiers: a.data.dossiers,
        threads: a.data.threads,
        work_dir: a.data.work_dir,
        seed: a.data.seed,
        keep: a.keep,
        duckdb_memory_limit: a.duckdb_memory_limit,
    };
    tokio::task::spawn_blocking(move || chiso::bench::ingest(&opts)).await??;
    Ok(EXIT_OK)
}

pub(crate) async fn build(g: &Globals, a: BenchBuildArgs) -> anyhow::Result<u8> {
    let (project, _) = chiso::demo::load_project_or_embedded(&g.config)?;
    let opts = chiso::bench::build::BuildBench {
        dossiers: a.data.dossiers,
        seed: a.data.seed,
        threads: a.data.threads,
        work_dir: a.data.work_dir,
        changed: a.changed,
        memory_limit: a.memory_limit,
        storage_version: a.storage_version,
        sql_dir: project.root.join("sql"),
        dbt: a.dbt,
    };
    chiso::bench::build::run(&opts).await?;
    Ok(EXIT_OK)
}

pub(crate) async fn console(g: &Globals, a: BenchConsoleArgs) -> anyhow::Result<u8> {
    let (project, _) = chiso::demo::load_project_or_embedded(&g.config)?;
    let opts = chiso::bench::build::BuildBench {
        dossiers: a.data.dossiers,
        seed: a.data.seed,
        threads: a.data.threads,
        work_dir: a.data.work_dir,
        changed: 0,
        memory_limit: a.memory_limit,
        storage_version: BENCH_STORAGE_VERSION.into(),
        sql_dir: project.root.join("sql"),
        dbt: None,
    };
    chiso::bench::console::run(&opts, a.requests).await?;
    Ok(EXIT_OK)
}

pub(crate) async fn log(_g: &Globals, a: BenchLogArgs) -> anyhow::Result<u8> {
    let opts = chiso::bench::log::LogBench {
        entries: a.entries,
        work_dir: std::env::current_dir()?.join(&a.work_dir),
    };
    let steps = tokio::task::spawn_blocking(move || chiso::bench::log::run(&opts)).await??;
    println!("| entries | ms per commit (last step) | ms to read the snapshot | ms to fold the log for status | files |");
    println!("|---:|---:|---:|---:|---:|");
    for s in steps {
        println!(
            "| {} | {:.2} | {:.1} | {:.1} | {} |",
            s.entries, s.ms_per_commit, s.ms_snapshot, s.ms_status, s.files
        );
    }
    if a.scan_files > 0 {
        let dir = std::env::current_dir()?.join(&a.work_dir);
        let (rows, max) = (a.scan_rows, a.scan_files);
        let steps =
            tokio::task::spawn_blocking(move || chiso::bench::log::scan(&dir, rows, max, 2))
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

pub(crate) async fn build_once(_g: &Globals, a: BenchBuildOnceArgs) -> anyhow::Result<u8> {
    let m = tokio::task::spawn_blocking(move || {
        chiso::bench::build::measure_build(
            &a.dir,
            &a.sql,
            a.threads,
            &a.memory_limit,
            a.full_refresh,
            Some(a.storage_version.as_str()).filter(|v| *v != "latest"),
        )
    })
    .await??;
    println!("{}", serde_json::to_string(&m)?);
    Ok(EXIT_OK)
}

pub(crate) async fn ingest_once(_g: &Globals, a: BenchOnceArgs) -> anyhow::Result<u8> {
    let m = match a.engine.as_str() {
        "chiso" => chiso::bench::measure_chiso(&a.input, &a.out, a.threads).await?,
        "duckdb" => {
            let (i, o, t, m) = (
                a.input.clone(),
                a.out.clone(),
                a.threads,
                a.duckdb_memory_limit.clone(),
            );
            tokio::task::spawn_blocking(move || chiso::bench::measure_duckdb(&i, &o, t, &m))
                .await??
        }
        other => anyhow::bail!("--engine {other:?}: expected chiso or duckdb"),
    };
    println!("{}", serde_json::to_string(&m)?);
    Ok(EXIT_OK)
}
