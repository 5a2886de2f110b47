//! Compaction: the many small files that frequent pulls leave in a partition, rewritten as one.
//!
//! A five-minute pull lands a file per run, and a build pays for every file it lists, whatever
//! the file holds (about a quarter of a millisecond each, even to find nothing new:
//! docs/scaling.md). Compaction rewrites the committed files of a partition that are older than
//! a cutoff into one ZSTD Parquet file, rows ordered by landing and otherwise unchanged (their
//! `_run_id` and `_ingested_at` stay, so no incremental model reads them again), and commits it
//! as one log entry that adds the new file and retires the old ones. It holds the job's lock,
//! so it never runs beside a pull of the same job, and it goes through the same recovery: a
//! compaction cut short leaves only files that the next run of the job removes.
//!
//! Retired files stay on disk until a build that read the lake after their compaction has
//! published (the published warehouse's views and lineage name the files it read; each build
//! records how many compactions of each dataset it read); a later compaction deletes them then. Builds see that a dataset was compacted and rebuild the incremental
//! models that read it, whose lineage (`lake_file`, `lake_row`) named the retired files.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};

use super::commit::{CommitEntry, EntryKind, JobState, RunTotals};
use super::parquet::LandedFile;
use super::schema::DatasetSpec;
use crate::fs::sync_dir;
use crate::{duck, time};

/// What to compact.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Only files committed at least this long ago (a partition still being written keeps its
    /// newest files until they are this old).
    pub older_than: chrono::Duration,
    /// Fewer files than this in a partition are left alone.
    pub min_files: usize,
    /// Per dataset, how many compactions the published warehouse had read when it was built:
    /// files those compactions retired are named by nothing published, and are deleted.
    pub published_compactions: BTreeMap<String, u64>,
    /// Say what would be done, do nothing.
    pub dry_run: bool,
}

/// One partition rewritten.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionCompaction {
    pub partition: String,
    pub files: usize,
    pub rows: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// The new file, relative to the warehouse (empty in a dry run).
    pub file: String,
}

/// What a compaction of one job's dataset did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompactReport {
    pub job: String,
    pub dataset: String,
    pub partitions: Vec<PartitionCompaction>,
    /// Retired files deleted now, and retired files kept because no build has published since.
    pub deleted_retired: usize,
    pub kept_retired: usize,
}

/// Compacts `dataset`, which job `job` lands.
pub fn compact_job(
    warehouse: &Path,
    job: &str,
    dataset: &DatasetSpec,
    opts: &CompactOptions,
) -> anyhow::Result<CompactReport> {
    let state = JobState::new(warehouse, job);
    let lock = state.lock()?;
    state.recover(
        &lock,
        &super::job_dirs(warehouse, dataset),
        &time::now_rfc3339(),
    )?;
    let mut report = CompactReport {
        job: job.to_string(),
        dataset: dataset.key(),
        partitions: Vec::new(),
        deleted_retired: 0,
        kept_retired: 0,
    };
    // Each live file as it landed: from the checkpoint and the entries after it.
    let mut log = state.snapshot_landed()?;
    let landed = log.landed.take().unwrap_or_default();
    let cutoff = time::now_local() - opts.older_than;
    // The live files old enough, by partition folder, in commit order.
    let mut groups: BTreeMap<String, Vec<LandedFile>> = BTreeMap::new();
    for l in landed {
        let Some(at) = time::parse_rfc3339_local(&l.committed_at) else {
            continue;
        };
        if at > cutoff {
            continue;
        }
        let folder = Path::new(&l.file.path)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        groups.entry(folder).or_default().push(l.file);
    }
    groups.retain(|_, files| files.len() >= opts.min_files.max(2));
    if !groups.is_empty() && !opts.dry_run {
        let run_id = uuid::Uuid::now_v7().simple().to_string();
        let started_at = time::now_rfc3339();
        state.begin_run(&lock, &run_id, &started_at)?;
        let conn = duck::in_memory(2)?;
        let mut added = Vec::new();
        let mut retired = Vec::new();
        for (folder, files) in &groups {
            let (made, done) = rewrite(&conn, warehouse, folder, files, &run_id)?;
            retired.extend(files.iter().map(|f| f.path.clone()));
            log.retired
                .extend(files.iter().map(|f| (f.path.clone(), log.compactions + 1)));
            report.partitions.push(done);
            added.push(made);
        }
        let cursor = state.cursor()?;
        let entry = CommitEntry {
            seq: 0,
            job: job.to_string(),
            run_id: run_id.clone(),
            kind: EntryKind::Compaction,
            chunk: 0,
            started_at,
            committed_at: time::now_rfc3339(),
            outcome: None,
            cursor_before: cursor.clone(),
            cursor_after: cursor.clone(),
            files: added,
            quarantine_files: Vec::new(),
            totals: RunTotals::default(),
            watermark: None,
            error: None,
            stamped_through: None,
            retired,
            backfill: None,
        };
        state.commit(&lock, entry, &cursor)?;
        state.checkpoint(&lock)?;
        state.end_run(&lock)?;
    } else {
        for (folder, files) in &groups {
            report.partitions.push(PartitionCompaction {
                partition: partition_of(folder),
                files: files.len(),
                rows: files.iter().map(|f| f.rows).sum(),
                bytes_before: files.iter().map(|f| f.bytes).sum(),
                bytes_after: 0,
                file: String::new(),
            });
        }
    }
    // Retired files nothing published reads any more.
    let published = opts
        .published_compactions
        .get(&dataset.key())
        .copied()
        .unwrap_or(0);
    // Every compaction's retired files, this one's included (numbered after the others).
    for (path, compaction) in log.retired {
        let file = warehouse.join(&path);
        if !file.exists() {
            continue;
        }
        let safe = compaction <= published;
        if safe && !opts.dry_run {
            std::fs::remove_file(&file).with_context(|| format!("deleting {}", file.display()))?;
            if let Some(dir) = file.parent() {
                sync_dir(dir).with_context(|| format!("syncing {}", dir.display()))?;
            }
            report.deleted_retired += 1;
        } else {
            report.kept_retired += 1;
        }
    }
    Ok(report)
}

fn partition_of(folder: &str) -> String {
    Path::new(folder)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Writes the rows of `files` (one partition folder) as one file of run `run_id`: written as
/// `.tmp`, its rows counted against the inputs', fsynced, renamed, the folder fsynced.
fn rewrite(
    conn: &duck::Connection,
    warehouse: &Path,
    folder: &str,
    files: &[LandedFile],
    run_id: &str,
) -> anyhow::Result<(LandedFile, PartitionCompaction)> {
    let list: Vec<String> = files
        .iter()
        .map(|f| duck::lit(&warehouse.join(&f.path).display().to_string()))
        .collect();
    // The files as they are: no partition column from the folder (it stays in the path), every
    // column any of them has (a job file that gained a column), in landing order.
    let read = format!(
        "read_parquet([{}], hive_partitioning = false, union_by_name = true)",
        list.join(", ")
    );
    let rows_in: i64 = conn.query_row(&format!("SELECT count(*) FROM {read}"), [], |r| r.get(0))?;
    let name = format!("part-{run_id}-c0000-001.parquet");
    let rel = format!("{folder}/{name}");
    let dest = warehouse.join(&rel);
    let tmp = warehouse.join(format!("{rel}.tmp"));
    conn.execute_batch(&format!(
        "COPY (SELECT * FROM {read} ORDER BY _ingested_at) TO {} (FORMAT parquet, COMPRESSION zstd)",
        duck::lit(&tmp.display().to_string())
    ))
    .with_context(|| format!("rewriting {} files of {folder}", files.len()))?;
    let rows_out: i64 = conn.query_row(
        &format!(
            "SELECT count(*) FROM read_parquet({}, hive_partitioning = false)",
            duck::lit(&tmp.display().to_string())
        ),
        [],
        |r| r.get(0),
    )?;
    if rows_out != rows_in {
        let _ = std::fs::remove_file(&tmp);
        bail!("compacting {folder}: wrote {rows_out} rows of {rows_in}; nothing was changed");
    }
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, &dest).with_context(|| format!("renaming {}", tmp.display()))?;
    let dir = dest.parent().expect("a partition folder");
    sync_dir(dir).with_context(|| format!("syncing {}", dir.display()))?;
    let bytes = std::fs::metadata(&dest)?.len();
    let partition = partition_of(folder);
    Ok((
        LandedFile {
            path: rel.clone(),
            rows: rows_out as u64,
            bytes,
            partition: partition.clone(),
        },
        PartitionCompaction {
            partition,
            files: files.len(),
            rows: rows_out as u64,
            bytes_before: files.iter().map(|f| f.bytes).sum(),
            bytes_after: bytes,
            file: rel,
        },
    ))
}
