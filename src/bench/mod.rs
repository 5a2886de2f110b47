//! `chiso bench ingest`: dossier records per second from a local feed file into the lake,
//! side by side with DuckDB's own `read_json` → `COPY … (FORMAT parquet)` on the same file, the
//! same thread count, the same compression (ZSTD) and the same partitioning. Each engine runs in
//! its own child process so that peak memory (VmHWM) is measured per engine.
//!
//! The chiso side is the product path: a `protocol = "file"` job landing the file through
//! `pull::run_job` (decode, validate, quarantine, Parquet, fsync, commit).

pub mod build;
pub mod console;
pub mod freshness;
pub mod log;
pub mod publication;
pub mod soak;
pub mod year;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::config::{FileParams, JobConfig, Protocol, Threads};
use crate::duck;
use crate::pull::{self, RunContext};
use crate::sim::{self, SimConfig};

/// One engine's measurement, printed as JSON by the child process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    pub engine: String,
    pub records: u64,
    pub quarantined: u64,
    pub seconds: f64,
    pub peak_rss_bytes: u64,
    pub output_bytes: u64,
    pub files: u64,
}

/// Peak resident memory of this process, from /proc/self/status.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn dir_size(dir: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut files = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                let (b, f) = dir_size(&p);
                bytes += b;
                files += f;
            } else if p.extension().is_some_and(|x| x == "parquet") {
                bytes += e.metadata().map_or(0, |m| m.len());
                files += 1;
            }
        }
    }
    (bytes, files)
}

/// A copy of a prepared lake made of hard links (`cp -al`: lake files are never modified in
/// place), so that each run starts from the same state; `to` is replaced.
pub fn hard_link_copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(to);
    let st = Command::new("cp").arg("-al").arg(from).arg(to).status()?;
    if !st.success() {
        anyhow::bail!("cp -al {} {} failed", from.display(), to.display());
    }
    Ok(())
}

/// The frozen simulated world both benchmarks generate from: 2026-01-01 to 2026-11-27 noon,
/// about `dossiers` dossiers spread over its working days.
pub fn sim_config(dossiers: u64, seed: u64) -> SimConfig {
    let now = chrono::NaiveDate::from_ymd_opt(2026, 11, 27)
        .and_then(|d| d.and_hms_opt(12, 0, 0))
        .expect("valid");
    let from = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).expect("valid");
    SimConfig {
        seed,
        per_day: sim::generate::per_day_for(dossiers, from, now.date()),
        from,
        now,
        speed: 0.0,
        ..SimConfig::default()
    }
}

/// Runs a benchmark child process (this executable) and reads the measurement it prints as
/// its last JSON line, so that each measurement has its own process and peak memory.
pub fn child_measurement<T: serde::de::DeserializeOwned>(
    mut child: Command,
    what: &str,
) -> anyhow::Result<T> {
    // With RUST_LOG set, the child's log goes to the terminal as it runs (its timings: open,
    // checkpoint, publish); otherwise it is kept for the error message.
    if std::env::var_os("RUST_LOG").is_some() {
        child.stderr(std::process::Stdio::inherit());
    }
    let output = child
        .output()
        .with_context(|| format!("running the {what} child"))?;
    if !output.status.success() {
        bail!(
            "the {what} run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(
        output
            .stdout
            .split(|b| *b == b'\n')
            .rfind(|l| l.starts_with(b"{"))
            .unwrap_or(b"{}"),
    )
    .with_context(|| {
        format!(
            "reading the {what} measurement: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// A job of the built-in project turned into a `file` job over `input` (the real decode,
/// quarantine, Parquet and commit path, with local NDJSON instead of HTTP).
pub fn file_job(name: &str, input: &Path, threads: usize) -> anyhow::Result<JobConfig> {
    let (_, jobs) = crate::demo::embedded_project()?;
    let mut job = jobs
        .into_iter()
        .find(|j| j.name == name)
        .with_context(|| format!("the built-in project has a {name} job"))?;
    job.protocol = Protocol::File(FileParams {
        glob: input.display().to_string(),
        threads: Threads(threads as u64),
    });
    job.source = None;
    Ok(job)
}

/// The dossier job of the built-in project, turned into a file job over `input`.
pub fn dossier_file_job(input: &Path, threads: usize) -> anyhow::Result<JobConfig> {
    let mut job = file_job("dossiers", input, threads)?;
    job.name = "bench_dossiers".into();
    Ok(job)
}

/// Child process: lands `input` with chiso into `out`.
pub async fn measure_chiso(
    input: &Path,
    out: &Path,
    threads: usize,
) -> anyhow::Result<Measurement> {
    let job = dossier_file_job(input, threads)?;
    let ctx = RunContext {
        warehouse: out.to_path_buf(),
        // A relative input resolves against the working folder, as on the command line.
        project_root: std::env::current_dir()?,
        http: crate::feeds::http::http_client(),
    };
    let t0 = Instant::now();
    let report = pull::run_job(&ctx, &job).await?;
    let seconds = t0.elapsed().as_secs_f64();
    if let Some(e) = report.error {
        bail!("the chiso run failed: {e}");
    }
    let (output_bytes, files) = dir_size(&out.join("lake"));
    Ok(Measurement {
        engine: "chiso".into(),
        records: report.totals.rows_landed,
        quarantined: report.totals.rows_quarantined,
        seconds,
        peak_rss_bytes: peak_rss_bytes(),
        output_bytes,
        files,
    })
}

/// Child process: lands `input` with DuckDB's `read_json` → `COPY … (FORMAT parquet)`.
pub fn measure_duckdb(
    input: &Path,
    out: &Path,
    threads: usize,
    memory_limit: &str,
) -> anyhow::Result<Measurement> {
    let job = dossier_file_job(input, threads)?;
    let spec = &job.dataset;
    let conn = duck::in_memory(threads)?;
    conn.execute_batch(&format!(
        "SET memory_limit = {}; SET preserve_insertion_order = false;",
        duck::lit(memory_limit)
    ))?;
    let part = spec
        .partition
        .column
        .map(|i| spec.columns[i].name.clone())
        .context("partitioned by a column")?;
    let dest = out.join("lake").join(&spec.feed).join(&spec.name);
    std::fs::create_dir_all(&dest)?;
    let sql = format!(
        "COPY (SELECT *, strftime({part}, '%Y-%m') AS {pname} \
               FROM read_json({input}, format = 'newline_delimited', columns = {cols}, \
                              timestampformat = '%Y%m%d%H%M%S', maximum_object_size = 16777216)) \
         TO {dest} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {rg}, PARTITION_BY ({pname}), OVERWRITE_OR_IGNORE)",
        part = part,
        pname = spec.partition.name,
        input = duck::lit(&input.display().to_string()),
        cols = spec.duckdb_columns(),
        dest = duck::lit(&dest.display().to_string()),
        rg = spec.row_group_rows,
    );
    let t0 = Instant::now();
    let rows = conn.execute(&sql, [])?;
    let seconds = t0.elapsed().as_secs_f64();
    let (output_bytes, files) = dir_size(&dest);
    Ok(Measurement {
        engine: "duckdb".into(),
        records: rows as u64,
        quarantined: 0,
        seconds,
        peak_rss_bytes: peak_rss_bytes(),
        output_bytes,
        files,
    })
}

/// Records the generator wrote for `name` (its `manifest.json`).
fn generated_records(input_dir: &Path, name: &str) -> anyhow::Result<u64> {
    let path = input_dir.join("manifest.json");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))?;
    manifest["records"][name]
        .as_u64()
        .with_context(|| format!("{}: no record count for {name}", path.display()))
}

/// Options of `chiso bench ingest`.
pub struct IngestBench {
    pub dossiers: u64,
    pub threads: usize,
    pub work_dir: PathBuf,
    pub seed: u64,
    pub keep: bool,
    /// DuckDB's `memory_limit` (default 1GB, the bound chiso is held to).
    pub duckdb_memory_limit: String,
}

/// Parent: generates the input once (cached by size and seed), runs both engines in child
/// processes, checks they landed the same records, and prints the table.
pub fn ingest(opts: &IngestBench) -> anyhow::Result<Vec<Measurement>> {
    // Children run with the same working folder, but every path handed to them is absolute.
    let work_dir = std::path::absolute(&opts.work_dir)
        .with_context(|| format!("--work-dir {}", opts.work_dir.display()))?;
    let input_dir = work_dir.join(format!("input-{}-s{}", opts.dossiers, opts.seed));
    let input = input_dir.join("portal/dossiers.ndjson");
    if !input_dir.join("manifest.json").exists() {
        eprintln!(
            "Generating {} dossiers into {} ...",
            opts.dossiers,
            input_dir.display()
        );
        let config = sim_config(opts.dossiers, opts.seed);
        sim::generate::generate(
            &config,
            &input_dir,
            Some(opts.dossiers),
            opts.threads.max(2),
        )?;
    }
    let size = std::fs::metadata(&input)
        .with_context(|| format!("reading {}", input.display()))?
        .len();
    let generated = generated_records(&input_dir, "dossiers")?;
    let exe = std::env::current_exe()?;
    let mut results = Vec::new();
    for engine in ["duckdb", "chiso"] {
        let out = work_dir.join(format!("out-{engine}"));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out)?;
        // Both engines read the file warm from the page cache: read it once first.
        std::io::copy(&mut std::fs::File::open(&input)?, &mut std::io::sink())?;
        let mut child = Command::new(&exe);
        child
            .args([
                "bench",
                "ingest-once",
                "--engine",
                engine,
                "--threads",
                &opts.threads.to_string(),
            ])
            .arg("--input")
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .args(["--duckdb-memory-limit", &opts.duckdb_memory_limit]);
        let m: Measurement = child_measurement(child, engine)?;
        // Every generated record must have landed or been quarantined: a shortfall is a
        // failed benchmark, said here rather than by a later query.
        if m.records + m.quarantined != generated {
            bail!(
                "{engine} landed {} and quarantined {} of the {generated} records generated in {}",
                m.records,
                m.quarantined,
                input.display()
            );
        }
        results.push((m, out));
    }
    // Both must have landed the same rows.
    let conn = duck::in_memory(opts.threads)?;
    let mut counts = Vec::new();
    for (_, out) in &results {
        let glob = format!("{}/lake/portal/dossiers/*/*.parquet", out.display());
        let n: i64 = conn.query_row(
            &format!(
                "SELECT count(*) FROM read_parquet({}, hive_partitioning = true)",
                duck::lit(&glob)
            ),
            [],
            |r| r.get(0),
        )?;
        counts.push(n);
    }
    if counts[0] != counts[1] {
        bail!(
            "the engines landed different row counts: duckdb {} vs chiso {}",
            counts[0],
            counts[1]
        );
    }
    if !opts.keep {
        for (_, out) in &results {
            let _ = std::fs::remove_dir_all(out);
        }
    }
    let ms: Vec<Measurement> = results.into_iter().map(|(m, _)| m).collect();
    print_table(&ms, size, opts);
    Ok(ms)
}

fn print_table(ms: &[Measurement], input_bytes: u64, opts: &IngestBench) {
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "\nIngest benchmark: {} dossiers ({} records, {:.0} MiB NDJSON), {} thread(s), ZSTD, partitioned by month, DuckDB memory_limit {}",
        opts.dossiers,
        ms.first().map_or(0, |m| m.records),
        mb(input_bytes),
        opts.threads,
        opts.duckdb_memory_limit
    );
    println!(
        "{:<8} {:>10} {:>9} {:>12} {:>9} {:>13} {:>11} {:>6}",
        "engine", "records", "seconds", "records/s", "MiB/s", "peak RSS MiB", "output MiB", "files"
    );
    for m in ms {
        println!(
            "{:<8} {:>10} {:>9.2} {:>12.0} {:>9.1} {:>13.0} {:>11.1} {:>6}",
            m.engine,
            m.records,
            m.seconds,
            m.records as f64 / m.seconds,
            mb(input_bytes) / m.seconds,
            mb(m.peak_rss_bytes),
            mb(m.output_bytes),
            m.files
        );
    }
    if let (Some(d), Some(c)) = (
        ms.iter().find(|m| m.engine == "duckdb"),
        ms.iter().find(|m| m.engine == "chiso"),
    ) {
        println!(
            "ratio chiso/duckdb throughput: {:.2} (target >= 1.0); chiso peak memory {:.0} MiB (target < 1024)",
            d.seconds / c.seconds,
            mb(c.peak_rss_bytes)
        );
    }
}

/// `1.2 MB`, `840 kB`, `12 B` (decimal units, as the tables in docs/benchmarks.md).
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.1} GB", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.0} kB", n as f64 / 1e3),
        n => format!("{n} B"),
    }
}
