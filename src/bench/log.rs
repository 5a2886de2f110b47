//! `chiso bench log`: what the lake's commit log costs as a dataset's history grows. A run of a
//! job appends one entry per chunk; a pull every five minutes is 105 120 entries a year. At each
//! step this times one more commit (what a pull pays: reading the newest entry, writing and
//! fsyncing the next, and now and then a checkpoint of the log) and the snapshot a build reads
//! (`models::snapshot::read`: the checkpoint and the entries after it), and the fold of the log
//! `chiso status` reads (`JobState::summary`, also from the checkpoint). The Delta Lake side of the same measurement is `tools/delta-probe`
//! (docs/scaling.md).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use crate::lake::commit::{CommitEntry, EntryKind, JobState, Outcome, RunTotals};
use crate::lake::parquet::LandedFile;

pub struct LogBench {
    /// Entries to append (one data file each).
    pub entries: u64,
    pub work_dir: PathBuf,
}

/// One step: the history's length, the mean time per commit since the previous step, and the
/// time to read the snapshot.
#[derive(Debug, Clone)]
pub struct LogStep {
    pub entries: u64,
    pub ms_per_commit: f64,
    pub ms_snapshot: f64,
    /// Folding the log for `chiso status` (`JobState::summary`).
    pub ms_status: f64,
    pub files: usize,
}

/// Appends `entries` commits to a fresh job log under `work_dir` and measures at 10, 20, 50, 100…
pub fn run(opts: &LogBench) -> anyhow::Result<Vec<LogStep>> {
    let dir = &opts.work_dir;
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let state = JobState::new(dir, "bench_log");
    let lock = state.lock()?;
    let mut steps = Vec::new();
    let (mut cursor, mut step_start, mut since) = (None, 0u64, Instant::now());
    for i in 0..opts.entries {
        let next = Some(serde_json::json!(format!("{:020}", i + 1)));
        let entry = CommitEntry {
            seq: 0,
            job: "bench_log".into(),
            run_id: format!("{:032x}", i),
            kind: EntryKind::Finished,
            chunk: 0,
            started_at: crate::time::now_rfc3339(),
            committed_at: crate::time::now_rfc3339(),
            outcome: Some(Outcome::Ok),
            cursor_before: cursor.clone(),
            cursor_after: next.clone(),
            files: vec![LandedFile {
                path: format!(
                    "lake/bench/log/sync_month=2026-09/part-{:032x}-c0000-001.parquet",
                    i
                ),
                rows: 500,
                bytes: 60_000,
                partition: "sync_month=2026-09".into(),
            }],
            quarantine_files: Vec::new(),
            totals: RunTotals::default(),
            watermark: Some("20260910120000".into()),
            error: None,
            stamped_through: Some(i as i64),
            retired: Vec::new(),
            backfill: None,
        };
        state.commit(&lock, entry, &cursor)?;
        // As a run's end does.
        state.checkpoint(&lock)?;
        cursor = next;
        let done = i + 1;
        if done == opts.entries || (done >= 10 && is_step(done)) {
            let ms_per_commit = since.elapsed().as_secs_f64() * 1000.0 / (done - step_start) as f64;
            let t = Instant::now();
            let files = state.committed_files()?.len();
            let ms_snapshot = t.elapsed().as_secs_f64() * 1000.0;
            let t = Instant::now();
            state.summary()?;
            let ms_status = t.elapsed().as_secs_f64() * 1000.0;
            steps.push(LogStep {
                entries: done,
                ms_per_commit,
                ms_snapshot,
                ms_status,
                files,
            });
            step_start = done;
            since = Instant::now();
        }
    }
    Ok(steps)
}

/// The same rows scanned from more and more files: what a lake of small landings costs a build
/// that reads it whole.
#[derive(Debug, Clone)]
pub struct ScanStep {
    pub files: u64,
    pub rows: u64,
    /// Reading every row (a full build).
    pub ms_scan: f64,
    /// Selecting what landed after the newest stamp, when nothing did (an incremental build).
    pub ms_nothing_new: f64,
}

/// Writes `rows` dossier-like rows (24 columns) as 1, 10, 100… up to `max_files` ZSTD Parquet
/// files under `work_dir/scan`, and times DuckDB reading them through a file list, as a build's
/// `source()` does: every row, and the rows landed after a stamp none passes, as an incremental
/// model asks when nothing is new (the mean of three scans after a warm-up).
pub fn scan(
    work_dir: &std::path::Path,
    rows: u64,
    max_files: u64,
    threads: usize,
) -> anyhow::Result<Vec<ScanStep>> {
    let conn = crate::duck::in_memory(threads)?;
    let mut out = Vec::new();
    let mut files = 1;
    while files <= max_files {
        let dir = work_dir.join("scan").join(files.to_string());
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let target = crate::duck::lit(&dir.display().to_string());
        conn.execute_batch(&format!(
            "COPY (SELECT i % {files} AS part, 'HS-' || i AS MaHoSo, (i % 997)::VARCHAR AS MaTTHC, \
             TIMESTAMP '2026-01-01' + to_seconds(i % 31536000) AS ThoiDiemDongBo, \
             (i % 10)::VARCHAR AS TrangThaiHoSo, TIMESTAMP '2026-01-01' + to_microseconds(i) AS _ingested_at, \
             {cols} FROM range({rows}) t(i)) \
             TO {target} (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (part), WRITE_PARTITION_COLUMNS false)",
            cols = (0..20).map(|c| format!("md5((i * {}) :: VARCHAR) AS c{c}", c + 1)).collect::<Vec<_>>().join(", ")
        ))?;
        let list: Vec<String> = glob::glob(&format!("{}/*/*.parquet", dir.display()))?
            .filter_map(Result::ok)
            .map(|p| crate::duck::lit(&p.display().to_string()))
            .collect();
        let sql = format!(
            "SELECT count(*), count(DISTINCT MaHoSo), max(ThoiDiemDongBo) FROM read_parquet([{}])",
            list.join(", ")
        );
        let incremental = format!(
            "SELECT count(*) FROM read_parquet([{}]) WHERE _ingested_at > TIMESTAMP '2100-01-01'",
            list.join(", ")
        );
        let ms = |sql: &str| -> anyhow::Result<f64> {
            conn.execute_batch(sql)?;
            let t = Instant::now();
            for _ in 0..3 {
                conn.execute_batch(sql)?;
            }
            Ok(t.elapsed().as_secs_f64() * 1000.0 / 3.0)
        };
        out.push(ScanStep {
            files: list.len() as u64,
            rows,
            ms_scan: ms(&sql)?,
            ms_nothing_new: ms(&incremental)?,
        });
        std::fs::remove_dir_all(&dir)?;
        files *= 10;
    }
    Ok(out)
}

/// 10, 20, 50, 100, 200, 500, 1000, …
fn is_step(n: u64) -> bool {
    let mut p = 1;
    while p * 10 <= n {
        p *= 10;
    }
    n.is_multiple_of(p) && matches!(n / p, 1 | 2 | 5)
}
