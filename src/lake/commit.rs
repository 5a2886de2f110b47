//! The commit log of a job: the only code that advances a feed cursor.
//!
//! Each job has `warehouse/_state/<job>/` holding `log/<seq>.json` entries. An entry records the
//! files a chunk of a run landed, the run's totals so far, and the cursor after the chunk. An
//! entry is written to a temporary file, fsynced, and hard-linked to its numbered name, which
//! fails if the number is taken: an entry is created whole or not at all, and never twice.
//!
//! Guarantees, after a crash at any point:
//! - the lake holds nothing of a chunk, or whole files of it (see `lake::parquet`);
//! - the cursor never runs ahead of durable data: files are landed before the entry naming them
//!   and the new cursor is written;
//! - files landed by a run that crashed before committing them are removed by [`JobState::recover`]
//!   when the job next runs, and their records are pulled again from the committed cursor, so
//!   nothing is lost; a record pulled twice (a feed resend) is told apart by staging's dedup on
//!   (key, version).
//!
//! One writer per job is enforced with an OS file lock held for the whole run.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::parquet::LandedFile;
use crate::fs::{sync_dir, write_durably, FileLock, LockError};

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(
        "job {job} is already running (lock {path} is held); wait for it or check `chiso status`"
    )]
    Busy { job: String, path: PathBuf },
    #[error("job {job}: the stored cursor moved during the run (expected {expected}, found {found}); another writer committed — run `chiso status {job}` and retry")]
    CursorMoved {
        job: String,
        expected: String,
        found: String,
    },
    #[error("job {job}: commit {seq} already exists; another writer committed at the same time")]
    Conflict { job: String, seq: u64 },
    #[error("job {job}: state file {path}: {source}")]
    Io {
        job: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("job {job}: state file {path} is not a valid commit: {source}")]
    Corrupt {
        job: String,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// What an entry marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A chunk of a run that goes on.
    Checkpoint,
    /// The last entry of a run.
    Finished,
    /// Written by recovery for a run that crashed or was killed.
    Interrupted,
    /// A compaction (`lake::compact`): its files replace the ones it retires, row for row.
    Compaction,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Everything pulled landed.
    Ok,
    /// Everything pulled landed or was quarantined, and some records were quarantined.
    Quarantined,
    /// The feed failed after retries; what landed before is committed.
    Failed,
    /// The process died; recovery removed uncommitted files.
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Quarantined => "quarantined",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// Totals of a run so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTotals {
    /// Records received from the feed.
    pub rows_in: u64,
    pub rows_landed: u64,
    pub rows_quarantined: u64,
    /// Records an earlier run had landed, received again and not landed twice (paged feeds
    /// re-read the records at their watermark).
    #[serde(default)]
    pub rows_skipped: u64,
    pub pages: u64,
    /// Feed calls that failed and were retried.
    pub retries: u64,
    pub files: u64,
    pub bytes: u64,
}

/// One entry of the log (`_state/<job>/log/<seq>.json`): a run record and a cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitEntry {
    pub seq: u64,
    pub job: String,
    pub run_id: String,
    pub kind: EntryKind,
    /// Chunk number within the run (0-based).
    pub chunk: u32,
    /// Local time (Asia/Ho_Chi_Minh, RFC 3339).
    pub started_at: String,
    pub committed_at: String,
    pub outcome: Option<Outcome>,
    /// The cursor the run started from, and the one after this chunk.
    pub cursor_before: Option<Value>,
    pub cursor_after: Option<Value>,
    pub files: Vec<LandedFile>,
    pub quarantine_files: Vec<LandedFile>,
    pub totals: RunTotals,
    /// Highest version value landed by the run (the feed's own time), if the dataset has one.
    pub watermark: Option<String>,
    pub error: Option<String>,
    /// The newest landing stamp (`_ingested_at`, microseconds, local time) of any row committed
    /// so far in the dataset: the next run stamps after it. Carried forward by entries that land
    /// nothing; absent in logs written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamped_through: Option<i64>,
    /// Files of earlier entries this one replaces (a compaction): no longer in the snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<String>,
    /// Set by a backfill's chunks: its own position. `cursor_after` of such an entry is the
    /// job's cursor carried forward unchanged, so a backfill never moves the job back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<BackfillMark>,
}

/// Where a backfill (`chiso backfill`) has got to, committed with its chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackfillMark {
    pub id: String,
    /// The feed's cursor after the chunk: a resumed backfill starts from here.
    pub cursor: Option<Value>,
}

/// A run's end writes a checkpoint of the log when it committed (see `JobState::checkpoint`);
/// the entries a checkpoint covers leave `log/` for one bundle of `log/archive/` once this many
/// wait there.
pub const ARCHIVE_EVERY: u64 = 1000;

/// Archived log bundles older than this are deleted at a checkpoint, unless they name a live
/// file (compaction still needs when it landed).
pub const ARCHIVE_KEEP: std::time::Duration = std::time::Duration::from_secs(400 * 86_400);

/// The log summed up to entry `seq`: what a snapshot needs, so that reading the dataset's state
/// reads this file and the entries after it, not the whole history.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LogCheckpoint {
    seq: u64,
    files: Vec<String>,
    compactions: u64,
    retired: Vec<(String, u64)>,
    /// What `chiso status` needs, up to `seq` (absent in checkpoints written before it).
    #[serde(default)]
    summary: Option<LogSummary>,
    /// Each live file as it landed, in `files`' order (absent in checkpoints written before
    /// it): compaction groups them by when they landed without reading the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    landed: Option<Vec<LiveFile>>,
    /// The oldest entry that may still be in `log/` (the newest one its last archiving kept):
    /// the entries from it up to `seq` wait there for their bundle.
    #[serde(default)]
    log_from: u64,
}

/// A live file and when the entry that named it committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveFile {
    #[serde(flatten)]
    pub file: LandedFile,
    pub committed_at: String,
}

/// The log folded into what `chiso status` reports, so that status reads a checkpoint and the
/// entries after it rather than a year of runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogSummary {
    pub entries: u64,
    /// The newest entry that ended a run (finished or interrupted; compactions are
    /// maintenance, not runs), and the newest entry of a run of any kind; files left out.
    last_ended: Option<CommitEntry>,
    last_entry: Option<CommitEntry>,
    /// When the newest run that did not fail or get interrupted committed.
    pub last_success_at: Option<String>,
    /// The newest version time landed, over every run (a backfill never moves it back).
    pub watermark: Option<String>,
    /// When the newest entry that landed files (not a compaction) committed.
    pub newest_landing_at: Option<String>,
    pub has_data: bool,
    /// Rows landed and quarantined by runs before the current one, and by the current one.
    rows_landed_before: u64,
    rows_quarantined_before: u64,
    current_run: Option<String>,
    current_landed: u64,
    current_quarantined: u64,
}

/// Whether an entry's watermark (`%Y%m%d%H%M%S`, local time) is more than a day after the
/// entry's commit time (RFC 3339).
fn from_the_future(e: &CommitEntry) -> bool {
    let (Some(w), Some(at)) = (
        e.watermark.as_deref(),
        crate::time::parse_rfc3339_local(&e.committed_at),
    ) else {
        return false;
    };
    w > crate::time::compact(at + chrono::Duration::days(1)).as_str()
}

impl LogSummary {
    /// Adds an entry (in log order).
    pub fn fold(&mut self, e: &CommitEntry) {
        self.entries += 1;
        // A run's totals are cumulative: count the last entry of each run.
        if self.current_run.as_deref() != Some(e.run_id.as_str()) {
            self.rows_landed_before += self.current_landed;
            self.rows_quarantined_before += self.current_quarantined;
            self.current_run = Some(e.run_id.clone());
        }
        self.current_landed = e.totals.rows_landed;
        self.current_quarantined = e.totals.rows_quarantined;
        if e.kind != EntryKind::Compaction {
            let lean = CommitEntry {
                files: Vec::new(),
                quarantine_files: Vec::new(),
                ..e.clone()
            };
            if e.kind != EntryKind::Checkpoint {
                self.last_ended = Some(lean.clone());
            }
            self.last_entry = Some(lean);
            if !e.files.is_empty() {
                self.newest_landing_at = Some(e.committed_at.clone());
            }
        }
        if matches!(e.outcome, Some(Outcome::Ok | Outcome::Quarantined)) {
            self.last_success_at = Some(e.committed_at.clone());
        }
        // The newest version time landed by any run: a backfill of older data lands older
        // versions and must not move it back. A version time more than a day after the
        // entry's own commit is a bad record, not the feed's reach: it never sets it.
        if e.watermark > self.watermark && !from_the_future(e) {
            self.watermark = e.watermark.clone();
        }
        self.has_data |= !e.files.is_empty();
    }

    /// The last run: the newest that ended, else the newest entry of one (a first run going).
    pub fn last_run(&self) -> Option<&CommitEntry> {
        self.last_ended.as_ref().or(self.last_entry.as_ref())
    }

    pub fn rows_landed(&self) -> u64 {
        self.rows_landed_before + self.current_landed
    }

    pub fn rows_quarantined(&self) -> u64 {
        self.rows_quarantined_before + self.current_quarantined
    }
}

/// The dataset as the commit log has it now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSnapshot {
    /// The live data files, relative to the warehouse, in commit order.
    pub files: Vec<String>,
    /// How many compactions retired files so far (a build that read fewer holds lineage, file
    /// and row, that points at retired files).
    pub compactions: u64,
    /// Retired files, with the number of the compaction that retired them (1, 2, …).
    pub retired: Vec<(String, u64)>,
    /// The newest entry read, and the newest landing stamp committed up to it (microseconds,
    /// local time; `None` before any commit, or in logs written before stamps were kept): the
    /// lake position this snapshot is.
    pub seq: u64,
    pub stamped_through: Option<i64>,
    /// Each live file as it landed, in `files`' order; `None` when a checkpoint written by an
    /// earlier version does not say (the next checkpoint does).
    pub landed: Option<Vec<LiveFile>>,
}

/// The state folder of one job.
#[derive(Debug, Clone)]
pub struct JobState {
    job: String,
    dir: PathBuf,
}

/// Held while a run owns the job; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct JobLock {
    _lock: FileLock,
}

/// What recovery found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The run that had been interrupted, if any.
    pub run_id: Option<String>,
    pub removed_tmp: usize,
    pub removed_uncommitted: usize,
}

impl JobState {
    pub fn new(warehouse: &Path, job: &str) -> JobState {
        JobState {
            job: job.to_string(),
            dir: warehouse.join("_state").join(job),
        }
    }

    fn io(&self, path: &Path, source: std::io::Error) -> CommitError {
        CommitError::Io {
            job: self.job.clone(),
            path: path.to_path_buf(),
            source,
        }
    }

    fn log_dir(&self) -> PathBuf {
        self.dir.join("log")
    }

    fn running_path(&self) -> PathBuf {
        self.dir.join("running.json")
    }

    /// Takes the job's lock (`fs::FileLock`: retried for half a second), or reports the job busy.
    pub fn lock(&self) -> Result<JobLock, CommitError> {
        std::fs::create_dir_all(self.log_dir()).map_err(|e| self.io(&self.log_dir(), e))?;
        match FileLock::acquire(&self.dir.join("lock")) {
            Ok(lock) => Ok(JobLock { _lock: lock }),
            Err(LockError::Busy(path)) => Err(CommitError::Busy {
                job: self.job.clone(),
                path,
            }),
            Err(LockError::Io { path, source }) => Err(self.io(&path, source)),
        }
    }

    /// True while a run holds the job's lock.
    ///
    /// Reads the running marker, checks that the process it names is alive, and that the
    /// job's lock is held: a run the daemon aborted at its timeout leaves its marker (its
    /// next start recovers its files from it) in a process that lives on, and must not show
    /// as running for ever. The lock is tested with a shared lock taken and dropped at once;
    /// a run starting in that instant retries its own for half a second.
    pub fn is_running(&self) -> bool {
        let Ok(bytes) = std::fs::read(self.running_path()) else {
            return false;
        };
        let alive = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["pid"].as_u64())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        alive && self.lock_held()
    }

    /// True while something holds the job's lock (a run, or a run the daemon abandoned
    /// blocked in I/O): tested with a shared lock taken and dropped at once.
    pub fn lock_held(&self) -> bool {
        match File::open(self.dir.join("lock")) {
            Err(_) => false,
            Ok(f) => matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)),
        }
    }

    /// Sequence numbers present in the log, ascending.
    pub fn seqs(&self) -> Result<Vec<u64>, CommitError> {
        let dir = self.log_dir();
        seqs_in(&dir).map_err(|e| self.io(&dir, e))
    }

    /// The entries in `log/` after `after`, oldest first, found by looking for `after + 1`,
    /// `after + 2`, … (each commit takes the newest entry's number plus one) rather than by
    /// listing `log/`, where up to [`ARCHIVE_EVERY`] entries wait for their bundle. With no
    /// checkpoint (`after` 0), `log/` is listed.
    fn seqs_after(&self, after: u64) -> Result<Vec<u64>, CommitError> {
        if after == 0 {
            return self.seqs();
        }
        let mut out = Vec::new();
        while self.has(after + 1 + out.len() as u64)? {
            out.push(after + 1 + out.len() as u64);
        }
        Ok(out)
    }

    /// Whether entry `seq` is in `log/`.
    fn has(&self, seq: u64) -> Result<bool, CommitError> {
        let path = self.log_dir().join(format!("{seq:020}.json"));
        match std::fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.io(&path, e)),
        }
    }

    /// The newest entry's number: the checkpoint's newest (which stays in `log/`) and the
    /// entries after it; `log/` listed when there is no checkpoint or its entry is gone.
    fn newest_seq(&self) -> Result<Option<u64>, CommitError> {
        if let Some(cp) = self.read_checkpoint()? {
            if cp.seq > 0 && self.has(cp.seq)? {
                return Ok(Some(
                    self.seqs_after(cp.seq)?.last().copied().unwrap_or(cp.seq),
                ));
            }
        }
        Ok(self.seqs()?.last().copied())
    }

    pub fn read(&self, seq: u64) -> Result<CommitEntry, CommitError> {
        self.read_at(&self.log_dir().join(format!("{seq:020}.json")))
    }

    fn read_at(&self, path: &Path) -> Result<CommitEntry, CommitError> {
        let path = path.to_path_buf();
        let bytes = std::fs::read(&path).map_err(|e| self.io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|source| CommitError::Corrupt {
            job: self.job.clone(),
            path,
            source,
        })
    }

    /// The newest entry (read again when a checkpoint moved it after it was listed).
    pub fn latest(&self) -> Result<Option<CommitEntry>, CommitError> {
        self.consistently(|| match self.newest_seq()? {
            Some(s) => self.read(s).map(Some),
            None => Ok(None),
        })
    }

    /// Every entry, oldest first (those a checkpoint moved to `log/archive/` included).
    pub fn all(&self) -> Result<Vec<CommitEntry>, CommitError> {
        self.consistently(|| self.all_once())
    }

    /// Runs `read` (which reads the checkpoint and the entries after it) until no checkpoint
    /// moved the log under it. Readers take no lock: a writer's checkpoint writes
    /// `checkpoint.json` and then, every [`ARCHIVE_EVERY`] entries, moves the entries it
    /// covers into a bundle of `log/archive/`, so a read that took the old checkpoint and
    /// then listed `log/` would miss up to that many entries, and one that listed an entry
    /// could find it gone. The read is repeated when `log/archive/` changed between its start
    /// and its end (a bundle is written there before any entry leaves `log/`), or when an
    /// entry it listed was moved. A checkpoint that moves nothing changes no answer: the
    /// entries after the old one are all still in `log/`.
    fn consistently<T>(&self, read: impl Fn() -> Result<T, CommitError>) -> Result<T, CommitError> {
        let mut tries = 0;
        loop {
            let before = self.archive_generation();
            let result = read();
            let moved = match &result {
                Err(CommitError::Io { source, .. }) => {
                    source.kind() == std::io::ErrorKind::NotFound
                }
                _ => false,
            };
            if !moved && self.archive_generation() == before {
                return result;
            }
            tries += 1;
            if tries >= 100 {
                // A checkpoint every ARCHIVE_EVERY commits cannot move it a hundred times
                // in a row; report what the last read said.
                return result;
            }
        }
    }

    /// The state of `log/archive/` (device, inode, modification time), or `None` before the
    /// first bundle: writing, rewriting or removing a bundle changes it.
    fn archive_generation(&self) -> Option<(u64, u64, i64, i64)> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(self.archive_dir())
            .ok()
            .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec()))
    }

    /// Entries leave `log/` only after the bundle holding them is in `log/archive/`: listing
    /// `log/` first and the archive second sees every entry present when the first listing
    /// was taken (one archived between the two is in a bundle). An entry listed in `log/` and
    /// archived before it is read is looked for in the bundles, which are listed after it
    /// went. Reads bundles from the newest back and stops after the first holding an entry
    /// `enough` accepts (never, for every entry) once every such moved entry was found.
    ///
    /// (Before, a moved entry made the whole read start again, and a hundred fresh starts
    /// could all land inside one checkpoint's removal of a thousand entries on a loaded disk:
    /// CI saw `all` fail with the `NotFound`.)
    fn back_to(
        &self,
        enough: &dyn Fn(&CommitEntry) -> bool,
    ) -> Result<Vec<CommitEntry>, CommitError> {
        let archive = self.archive_dir();
        let listed = self.seqs()?;
        let mut out: std::collections::BTreeMap<u64, CommitEntry> = Default::default();
        let mut moved = std::collections::BTreeSet::new();
        let mut done = false;
        for &seq in listed.iter().rev() {
            let e = match self.read(seq) {
                Ok(e) => e,
                Err(CommitError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    moved.insert(seq);
                    continue;
                }
                Err(e) => return Err(e),
            };
            done |= enough(&e);
            out.insert(seq, e);
            if done {
                break;
            }
        }
        if !done || !moved.is_empty() {
            let found = done;
            done = false;
            // Entries archived one file each, by earlier versions.
            let single = seqs_in(&archive).map_err(|e| self.io(&archive, e))?;
            let mut bundles = bundles_in(&archive).map_err(|e| self.io(&archive, e))?;
            bundles.reverse();
            let mut singles = single.into_iter().rev().peekable();
            for (first, _, path) in bundles {
                while let Some(seq) = singles.next_if(|&s| s > first) {
                    out.entry(seq)
                        .or_insert(self.read_at(&archive.join(format!("{seq:020}.json")))?);
                }
                let entries = self.read_bundle(&path)?;
                let stop = entries.iter().any(enough);
                for e in entries {
                    moved.remove(&e.seq);
                    out.entry(e.seq).or_insert(e);
                }
                if (found || stop) && moved.is_empty() {
                    done = true;
                    break;
                }
            }
            if !done {
                for seq in singles {
                    out.entry(seq)
                        .or_insert(self.read_at(&archive.join(format!("{seq:020}.json")))?);
                }
            }
        }
        Ok(out.into_values().collect())
    }

    /// Every entry, oldest first.
    fn all_once(&self) -> Result<Vec<CommitEntry>, CommitError> {
        self.back_to(&|_| false)
    }

    /// The entries after `seq`, oldest first (reading only the archive bundles that hold them).
    pub fn after(&self, seq: u64) -> Result<Vec<CommitEntry>, CommitError> {
        let mut out = self.consistently(|| self.back_to(&|e| e.seq <= seq))?;
        out.retain(|e| e.seq > seq);
        Ok(out)
    }

    /// The newest entries, oldest first, back to (at least) the newest one `enough` accepts:
    /// reading stops after the first archive bundle holding one (all entries when none does).
    pub fn back_to_first(
        &self,
        enough: &dyn Fn(&CommitEntry) -> bool,
    ) -> Result<Vec<CommitEntry>, CommitError> {
        self.consistently(|| self.back_to(enough))
    }

    fn archive_dir(&self) -> PathBuf {
        self.log_dir().join("archive")
    }

    fn checkpoint_path(&self) -> PathBuf {
        self.dir.join("checkpoint.json")
    }

    fn read_checkpoint(&self) -> Result<Option<LogCheckpoint>, CommitError> {
        let path = self.checkpoint_path();
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| CommitError::Corrupt {
                        job: self.job.clone(),
                        path,
                        source,
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(&path, e)),
        }
    }

    /// Sums the log up to its newest entry when anything was committed since the last
    /// checkpoint: writes `checkpoint.json` (the live files, the compactions and retired files,
    /// the status summary), so that commits, snapshots and `chiso status` read it and the few
    /// entries after it, whatever the history's length. Once [`ARCHIVE_EVERY`] entries it
    /// covers wait in `log/`, it moves them (all but the newest) into one bundle of
    /// `log/archive/`. Run under the job's lock, at the end of a run. Entries the checkpoint
    /// covers that are still in `log/` (waiting for the bundle, or left by a crash between
    /// the two steps) are skipped by the readers. Returns whether it wrote one.
    ///
    /// (Before, it wrote one only every [`ARCHIVE_EVERY`] entries, and every read went through
    /// the up to a thousand entries after it: `chiso bench year` measured a build's snapshot
    /// read at 130 times, and a compaction at 40 times, their cost on a fresh warehouse.)
    pub fn checkpoint(&self, _lock: &JobLock) -> Result<bool, CommitError> {
        let Some(last) = self.newest_seq()? else {
            return Ok(false);
        };
        let (since, log_from) = self
            .read_checkpoint()?
            .map_or((0, 0), |c| (c.seq, c.log_from));
        if last <= since {
            return Ok(false);
        }
        let archive_now = last.saturating_sub(log_from) >= ARCHIVE_EVERY;
        let snap = self.snapshot_landed()?;
        let summary = self.summary()?;
        // A retired file compaction has deleted needs no more mention: the list holds only
        // those still on disk (kept because a published build reads them), so it stays small.
        let warehouse = self.warehouse();
        let retired: Vec<(String, u64)> = snap
            .retired
            .into_iter()
            .filter(|(f, _)| warehouse.join(f).exists())
            .collect();
        let live: HashSet<String> = snap.files.iter().cloned().collect();
        let cp = LogCheckpoint {
            seq: last,
            files: snap.files,
            compactions: snap.compactions,
            retired,
            summary: Some(summary),
            landed: snap.landed,
            log_from: if archive_now { last } else { log_from },
        };
        let path = self.checkpoint_path();
        write_durably(
            &path,
            &serde_json::to_vec(&cp).expect("checkpoints serialise"),
        )
        .map_err(|e| self.io(&path, e))?;
        // The entries it covers go into one bundle, one entry a line, written durably before
        // they leave `log/` (a crash between the two leaves copies the readers take once).
        if !archive_now {
            return Ok(true);
        }
        let (log, archive) = (self.log_dir(), self.archive_dir());
        let covered: Vec<u64> = self.seqs()?.into_iter().filter(|&s| s < last).collect();
        // Entries archived one file each (by versions before bundles) go into one bundle too.
        let singles = seqs_in(&archive).map_err(|e| self.io(&archive, e))?;
        std::fs::create_dir_all(&archive).map_err(|e| self.io(&archive, e))?;
        self.bundle(&log, &covered)?;
        self.bundle(&archive, &singles)?;
        self.prune_archive(&live)?;
        Ok(true)
    }

    /// Moves the entries `seqs` (files `<seq>.json` in `from`) into one bundle of the archive,
    /// written durably before they are removed: a crash between the two leaves copies the
    /// readers take once.
    fn bundle(&self, from: &Path, seqs: &[u64]) -> Result<(), CommitError> {
        let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else {
            return Ok(());
        };
        let entries = seqs
            .iter()
            .map(|seq| self.read_at(&from.join(format!("{seq:020}.json"))))
            .collect::<Result<Vec<_>, _>>()?;
        let bundle = self
            .archive_dir()
            .join(format!("{first:020}-{last:020}.jsonl"));
        self.write_bundle(&bundle, entries.iter())?;
        for seq in seqs {
            let f = from.join(format!("{seq:020}.json"));
            std::fs::remove_file(&f).map_err(|e| self.io(&f, e))?;
        }
        sync_dir(from).map_err(|e| self.io(from, e))
    }

    /// Writes `entries` as a bundle, one JSON line each, durably (replacing what was there).
    fn write_bundle<'a>(
        &self,
        path: &Path,
        entries: impl Iterator<Item = &'a CommitEntry>,
    ) -> Result<(), CommitError> {
        let mut lines = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut lines, e).expect("entries serialise");
            lines.push(b'\n');
        }
        write_durably(path, &lines).map_err(|e| self.io(path, e))
    }

    /// Deletes archived bundles older than [`ARCHIVE_KEEP`] that name no live file: what
    /// compaction, backfills and change notes read of the log is newer, or names a live file.
    /// Returns how many it deleted.
    fn prune_archive(&self, live: &HashSet<String>) -> Result<usize, CommitError> {
        let archive = self.archive_dir();
        let cutoff = crate::time::now_local()
            - chrono::Duration::from_std(ARCHIVE_KEEP).unwrap_or(chrono::Duration::days(400));
        let mut deleted = 0;
        for (_, _, path) in bundles_in(&archive).map_err(|e| self.io(&archive, e))? {
            let entries = self.read_bundle(&path)?;
            let old = entries.iter().all(|e| {
                crate::time::parse_rfc3339_local(&e.committed_at).is_some_and(|t| t < cutoff)
            });
            if !old {
                // Bundles are in commit order: the rest are newer.
                break;
            }
            let total = entries.len();
            let kept: Vec<&CommitEntry> = entries
                .iter()
                .filter(|e| e.files.iter().any(|f| live.contains(&f.path)))
                .collect();
            if kept.is_empty() {
                std::fs::remove_file(&path).map_err(|e| self.io(&path, e))?;
                deleted += 1;
            } else if kept.len() < total {
                // Only the entries of live files: a closed month's compacted file is live for
                // ever, and compaction reads when it landed.
                self.write_bundle(&path, kept.into_iter())?;
            }
        }
        if deleted > 0 {
            sync_dir(&archive).map_err(|e| self.io(&archive, e))?;
        }
        Ok(deleted)
    }

    fn read_bundle(&self, path: &Path) -> Result<Vec<CommitEntry>, CommitError> {
        let bytes = std::fs::read(path).map_err(|e| self.io(path, e))?;
        bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice(l).map_err(|source| CommitError::Corrupt {
                    job: self.job.clone(),
                    path: path.to_path_buf(),
                    source,
                })
            })
            .collect()
    }

    /// The warehouse this job's state belongs to (`<warehouse>/_state/<job>`).
    fn warehouse(&self) -> PathBuf {
        self.dir
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// The data files the commit log names, relative to the warehouse, in commit order: what a
    /// reader may see of the dataset (a running pull's files are not among them until their
    /// chunk commits; an interrupted run's are removed by the next run; a compaction's retired
    /// files are replaced by its own).
    pub fn committed_files(&self) -> Result<Vec<String>, CommitError> {
        Ok(self.snapshot()?.files)
    }

    /// The live files, the compactions so far and the files they retired.
    pub fn snapshot(&self) -> Result<LogSnapshot, CommitError> {
        self.consistently(|| self.snapshot_once())
    }

    /// The snapshot with each live file as it landed, read from every entry (archived ones
    /// included) when the checkpoint was written by a version before that list.
    pub fn snapshot_landed(&self) -> Result<LogSnapshot, CommitError> {
        let mut snap = self.snapshot()?;
        if snap.landed.is_none() {
            let live: HashSet<&String> = snap.files.iter().collect();
            let mut seen: HashSet<String> = HashSet::new();
            let mut landed: Vec<LiveFile> = Vec::new();
            for e in self.all()? {
                for f in e.files {
                    if live.contains(&f.path) && seen.insert(f.path.clone()) {
                        landed.push(LiveFile {
                            file: f,
                            committed_at: e.committed_at.clone(),
                        });
                    }
                }
            }
            snap.landed = Some(landed);
        }
        Ok(snap)
    }

    fn snapshot_once(&self) -> Result<LogSnapshot, CommitError> {
        let mut out = LogSnapshot::default();
        let mut seen = HashSet::new();
        let mut retired = HashSet::new();
        let mut after = 0;
        out.landed = Some(Vec::new());
        if let Some(cp) = self.read_checkpoint()? {
            seen.extend(cp.files.iter().cloned());
            out.landed = cp.landed.filter(|l| l.len() == cp.files.len());
            retired.extend(cp.retired.iter().map(|(f, _)| f.clone()));
            out.stamped_through = cp
                .summary
                .as_ref()
                .and_then(|s| s.last_entry.as_ref())
                .and_then(|e| e.stamped_through);
            (out.files, out.compactions, out.retired) = (cp.files, cp.compactions, cp.retired);
            after = cp.seq;
        }
        out.seq = after;
        for seq in self.seqs_after(after)? {
            let e = self.read(seq)?;
            out.seq = seq;
            if e.stamped_through.is_some() {
                out.stamped_through = e.stamped_through;
            }
            if !e.retired.is_empty() {
                out.compactions += 1;
                for f in &e.retired {
                    retired.insert(f.clone());
                    out.retired.push((f.clone(), out.compactions));
                }
            }
            for f in e.files {
                if seen.insert(f.path.clone()) {
                    out.files.push(f.path.clone());
                    if let Some(l) = &mut out.landed {
                        l.push(LiveFile {
                            file: f,
                            committed_at: e.committed_at.clone(),
                        });
                    }
                }
            }
        }
        out.files.retain(|f| !retired.contains(f));
        if let Some(l) = &mut out.landed {
            l.retain(|f| !retired.contains(&f.file.path));
        }
        Ok(out)
    }

    /// The log folded for `chiso status`: the checkpoint's summary and the entries after it
    /// (every entry, archived ones included, when the checkpoint predates summaries).
    pub fn summary(&self) -> Result<LogSummary, CommitError> {
        self.consistently(|| self.summary_once())
    }

    fn summary_once(&self) -> Result<LogSummary, CommitError> {
        let cp = self.read_checkpoint()?;
        let (mut out, after) = match cp {
            Some(LogCheckpoint {
                seq,
                summary: Some(s),
                ..
            }) => (s, seq),
            Some(_) => {
                let mut out = LogSummary::default();
                for e in self.all()? {
                    out.fold(&e);
                }
                return Ok(out);
            }
            None => (LogSummary::default(), 0),
        };
        for seq in self.seqs_after(after)? {
            out.fold(&self.read(seq)?);
        }
        Ok(out)
    }

    /// The committed cursor: the newest entry's `cursor_after`.
    pub fn cursor(&self) -> Result<Option<Value>, CommitError> {
        Ok(self.latest()?.and_then(|e| e.cursor_after))
    }

    /// Records that `run_id` has begun, so that recovery can find its files after a crash.
    pub fn begin_run(
        &self,
        _lock: &JobLock,
        run_id: &str,
        started_at: &str,
    ) -> Result<(), CommitError> {
        let body = serde_json::json!({
            "run_id": run_id,
            "started_at": started_at,
            "pid": std::process::id(),
        });
        write_durably(&self.running_path(), body.to_string().as_bytes())
            .map_err(|e| self.io(&self.running_path(), e))
    }

    /// Clears the running marker after the run's last entry.
    pub fn end_run(&self, _lock: &JobLock) -> Result<(), CommitError> {
        match std::fs::remove_file(self.running_path()) {
            Ok(()) => sync_dir(&self.dir).map_err(|e| self.io(&self.dir, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(&self.running_path(), e)),
        }
    }

    /// Appends an entry as the next sequence number. `expected_cursor` is the cursor the chunk
    /// started from; if the log moved meanwhile the commit is refused.
    pub fn commit(
        &self,
        _lock: &JobLock,
        mut entry: CommitEntry,
        expected_cursor: &Option<Value>,
    ) -> Result<u64, CommitError> {
        let latest = self.latest()?;
        let found = latest.as_ref().and_then(|e| e.cursor_after.clone());
        if &found != expected_cursor {
            return Err(CommitError::CursorMoved {
                job: self.job.clone(),
                expected: show(expected_cursor),
                found: show(&found),
            });
        }
        let seq = latest.as_ref().map_or(1, |e| e.seq + 1);
        entry.seq = seq;
        entry.stamped_through = entry
            .stamped_through
            .max(latest.and_then(|e| e.stamped_through));
        let dir = self.log_dir();
        std::fs::create_dir_all(&dir).map_err(|e| self.io(&dir, e))?;
        let path = dir.join(format!("{seq:020}.json"));
        let tmp = dir.join(format!(".{seq:020}.{}.tmp", std::process::id()));
        let body = serde_json::to_vec_pretty(&entry).expect("entries serialise");
        {
            let mut f = File::create(&tmp).map_err(|e| self.io(&tmp, e))?;
            f.write_all(&body).map_err(|e| self.io(&tmp, e))?;
            f.sync_all().map_err(|e| self.io(&tmp, e))?;
        }
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(CommitError::Conflict {
                    job: self.job.clone(),
                    seq,
                })
            }
            Err(e) => return Err(self.io(&path, e)),
        }
        sync_dir(&dir).map_err(|e| self.io(&dir, e))?;
        Ok(seq)
    }

    /// After a crash: removes temporary files and files of the interrupted run that no entry
    /// names, under each of `dataset_dirs`, and records the interruption in the log.
    pub fn recover(
        &self,
        lock: &JobLock,
        dataset_dirs: &[PathBuf],
        now: &str,
    ) -> Result<Recovery, CommitError> {
        let mut rec = Recovery::default();
        let running = match std::fs::read(self.running_path()) {
            Ok(b) => serde_json::from_slice::<Value>(&b).ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.io(&self.running_path(), e)),
        };
        // Stale temporary files of any earlier run go first.
        for d in dataset_dirs {
            rec.removed_tmp +=
                remove_matching(d, &|name| name.ends_with(".tmp")).map_err(|e| self.io(d, e))?;
        }
        let Some(running) = running else {
            return Ok(rec);
        };
        let run_id = running["run_id"].as_str().unwrap_or_default().to_string();
        let started_at = running["started_at"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if run_id.is_empty() {
            return self.end_run(lock).map(|_| rec);
        }
        // Entries of the interrupted run are the newest ones.
        let mut committed: HashSet<String> = HashSet::new();
        let mut last_of_run: Option<CommitEntry> = None;
        for seq in self.seqs()?.into_iter().rev() {
            let e = self.read(seq)?;
            if e.run_id != run_id {
                break;
            }
            committed.extend(e.files.iter().map(|f| file_name(&f.path)));
            committed.extend(e.quarantine_files.iter().map(|f| file_name(&f.path)));
            if last_of_run.is_none() {
                last_of_run = Some(e);
            }
        }
        let finished = last_of_run
            .as_ref()
            .is_some_and(|e| e.kind != EntryKind::Checkpoint);
        let marker = format!("-{run_id}-");
        for d in dataset_dirs {
            rec.removed_uncommitted += remove_matching(d, &|name| {
                name.ends_with(".parquet") && name.contains(&marker) && !committed.contains(name)
            })
            .map_err(|e| self.io(d, e))?;
        }
        if !finished {
            let cursor = self.cursor()?;
            let totals = last_of_run
                .as_ref()
                .map(|e| e.totals.clone())
                .unwrap_or_default();
            let entry = CommitEntry {
                seq: 0,
                job: self.job.clone(),
                run_id: run_id.clone(),
                kind: EntryKind::Interrupted,
                chunk: last_of_run.as_ref().map_or(0, |e| e.chunk + 1),
                started_at,
                committed_at: now.to_string(),
                outcome: Some(Outcome::Interrupted),
                cursor_before: cursor.clone(),
                cursor_after: cursor.clone(),
                files: Vec::new(),
                quarantine_files: Vec::new(),
                totals,
                watermark: last_of_run.as_ref().and_then(|e| e.watermark.clone()),
                error: Some(format!(
                    "the run was interrupted; {} uncommitted file(s) removed, its records are pulled again from the committed cursor",
                    rec.removed_uncommitted
                )),
                stamped_through: None,
                retired: Vec::new(),
            backfill: None,
            };
            self.commit(lock, entry, &cursor)?;
        }
        rec.run_id = Some(run_id);
        self.end_run(lock)?;
        Ok(rec)
    }
}

fn show(v: &Option<Value>) -> String {
    v.as_ref()
        .map_or_else(|| "none".to_string(), |v| v.to_string())
}

fn file_name(rel: &str) -> String {
    rel.rsplit('/').next().unwrap_or(rel).to_string()
}

/// Sequence numbers of the entries in `dir`, ascending; a missing folder has none.
/// The archive's bundles (`<first>-<last>.jsonl`), oldest first.
fn bundles_in(dir: &Path) -> std::io::Result<Vec<(u64, u64, PathBuf)>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out: Vec<(u64, u64, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let (a, b) = name.to_str()?.strip_suffix(".jsonl")?.split_once('-')?;
            Some((a.parse().ok()?, b.parse().ok()?, e.path()))
        })
        .collect();
    out.sort();
    Ok(out)
}

fn seqs_in(dir: &Path) -> std::io::Result<Vec<u64>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut seqs: Vec<u64> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            name.strip_suffix(".json")?.parse().ok()
        })
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// Removes files below `dir` whose names match; returns how many. A missing folder is empty.
fn remove_matching(dir: &Path, pred: &dyn Fn(&str) -> bool) -> std::io::Result<usize> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut n = 0;
    let mut touched = false;
    for entry in rd {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            n += remove_matching(&path, pred)?;
        } else if entry.file_name().to_str().is_some_and(pred) {
            std::fs::remove_file(&path)?;
            touched = true;
            n += 1;
        }
    }
    if touched {
        sync_dir(dir)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(run: &str, kind: EntryKind, cursor: i64, files: Vec<&str>) -> CommitEntry {
        CommitEntry {
            seq: 0,
            job: "j".into(),
            run_id: run.into(),
            kind,
            chunk: 0,
            started_at: "t".into(),
            committed_at: "t".into(),
            outcome: None,
            cursor_before: None,
            cursor_after: Some(Value::from(cursor)),
            files: files
                .into_iter()
                .map(|p| LandedFile {
                    path: p.into(),
                    rows: 1,
                    bytes: 1,
                    partition: "p=1".into(),
                })
                .collect(),
            quarantine_files: vec![],
            totals: RunTotals::default(),
            watermark: None,
            error: None,
            stamped_through: None,
            retired: Vec::new(),
            backfill: None,
        }
    }

    #[test]
    fn commits_are_sequential_and_check_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let st = JobState::new(dir.path(), "j");
        let lock = st.lock().unwrap();
        assert!(
            matches!(st.lock(), Err(CommitError::Busy { .. })),
            "one writer per job"
        );
        assert_eq!(
            st.commit(&lock, entry("r1", EntryKind::Checkpoint, 5, vec![]), &None)
                .unwrap(),
            1
        );
        assert_eq!(st.cursor().unwrap(), Some(Value::from(5)));
        let err = st
            .commit(&lock, entry("r1", EntryKind::Finished, 9, vec![]), &None)
            .unwrap_err();
        assert!(matches!(err, CommitError::CursorMoved { .. }), "{err}");
        assert_eq!(
            st.commit(
                &lock,
                entry("r1", EntryKind::Finished, 9, vec![]),
                &Some(Value::from(5))
            )
            .unwrap(),
            2
        );
        st.begin_run(&lock, "r1", "t").unwrap();
        assert!(st.is_running(), "this process holds the run");
        st.end_run(&lock).unwrap();
        assert!(!st.is_running());
        drop(lock);
    }

    #[test]
    fn recovery_removes_uncommitted_files_of_the_crashed_run_only() {
        let dir = tempfile::tempdir().unwrap();
        let ds = dir.path().join("lake/f/d/p=1");
        std::fs::create_dir_all(&ds).unwrap();
        let st = JobState::new(dir.path(), "j");
        let lock = st.lock().unwrap();
        for name in [
            "part-old-c0000-001.parquet",
            "part-r2-c0000-001.parquet",
            "part-r2-c0001-001.parquet",
            "part-r2-c0002-001.parquet.tmp",
        ] {
            std::fs::write(ds.join(name), b"x").unwrap();
        }
        st.commit(
            &lock,
            entry(
                "old",
                EntryKind::Finished,
                1,
                vec!["lake/f/d/p=1/part-old-c0000-001.parquet"],
            ),
            &None,
        )
        .unwrap();
        st.begin_run(&lock, "r2", "t").unwrap();
        st.commit(
            &lock,
            entry(
                "r2",
                EntryKind::Checkpoint,
                2,
                vec!["lake/f/d/p=1/part-r2-c0000-001.parquet"],
            ),
            &Some(Value::from(1)),
        )
        .unwrap();
        // crash here: chunk 1 landed but not committed, chunk 2 still temporary
        drop(lock);
        let lock = st.lock().unwrap();
        let rec = st
            .recover(&lock, &[dir.path().join("lake/f/d")], "t2")
            .unwrap();
        assert_eq!(rec.run_id.as_deref(), Some("r2"));
        assert_eq!((rec.removed_tmp, rec.removed_uncommitted), (1, 1));
        let mut left: Vec<String> = std::fs::read_dir(&ds)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec!["part-old-c0000-001.parquet", "part-r2-c0000-001.parquet"]
        );
        let last = st.latest().unwrap().unwrap();
        assert_eq!(last.kind, EntryKind::Interrupted);
        assert_eq!(
            last.cursor_after,
            Some(Value::from(2)),
            "cursor stays at the last commit"
        );
        // Nothing more to recover the second time.
        let again = st
            .recover(&lock, &[dir.path().join("lake/f/d")], "t3")
            .unwrap();
        assert_eq!(again, Recovery::default());
    }

    /// A checkpoint sums the log up: the snapshot, the newest entry and every entry (status
    /// reads them) are what they were without it; the log folder keeps only the newest entry
    /// and what came after; a crash between writing the checkpoint and moving the entries it
    /// covers changes nothing either.
    #[test]
    fn a_checkpoint_changes_no_answer_and_keeps_the_log_short() {
        let wh = tempfile::tempdir().unwrap();
        let st = JobState::new(wh.path(), "j");
        let lock = st.lock().unwrap();
        let n = ARCHIVE_EVERY + 5;
        let mut cursor = None;
        for i in 1..=n {
            let f1 = format!("lake/f/d/p=1/part-{i}-a.parquet");
            let f2 = format!("lake/f/d/p=1/part-{i}-b.parquet");
            let mut e = entry(
                &format!("r{i}"),
                EntryKind::Finished,
                i as i64,
                vec![&f1, &f2],
            );
            e.totals.rows_landed = 2;
            e.outcome = Some(Outcome::Ok);
            e.committed_at = format!("t{i:05}");
            if i % 7 == 0 {
                e.watermark = Some(format!("w{i:05}"));
            }
            if i == 500 {
                // a compaction retiring the first 100 entries' files
                e.kind = EntryKind::Compaction;
                e.files.truncate(1);
                e.retired = (1..=100)
                    .flat_map(|k| {
                        [
                            format!("lake/f/d/p=1/part-{k}-a.parquet"),
                            format!("lake/f/d/p=1/part-{k}-b.parquet"),
                        ]
                    })
                    .collect();
            }
            st.commit(&lock, e, &cursor).unwrap();
            cursor = Some(Value::from(i as i64));
        }
        let (snap, all, latest) = (
            st.snapshot().unwrap(),
            st.all().unwrap(),
            st.latest().unwrap(),
        );
        assert_eq!(snap.compactions, 1);
        assert_eq!(snap.files.len() as u64, 2 * n - 200 - 1);
        // The status summary folds every entry; from the checkpoint it must say the same.
        let folded = |entries: &[CommitEntry]| {
            let mut s = LogSummary::default();
            entries.iter().for_each(|e| s.fold(e));
            s
        };
        let summary = st.summary().unwrap();
        assert_eq!(summary, folded(&all));
        assert_eq!(summary.rows_landed(), 2 * n);
        assert_eq!(
            summary.last_run().map(|e| e.run_id.as_str()),
            Some(format!("r{n}").as_str())
        );
        assert_eq!(
            summary.watermark.as_deref(),
            Some(format!("w{:05}", n / 7 * 7).as_str())
        );
        assert!(st.checkpoint(&lock).unwrap());
        assert_eq!(st.summary().unwrap(), summary);
        assert!(!st.checkpoint(&lock).unwrap(), "not due again yet");
        assert_eq!(
            st.seqs().unwrap(),
            vec![n],
            "only the newest entry stays in log/"
        );
        // The same snapshot, but for the retired files compaction deleted (none of them is
        // on disk here): they are no longer listed.
        assert_eq!(
            st.snapshot().unwrap(),
            LogSnapshot {
                retired: Vec::new(),
                ..snap.clone()
            }
        );
        assert_eq!(st.latest().unwrap().map(|e| e.seq), latest.map(|e| e.seq));
        assert_eq!(
            st.all().unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(),
            all.iter().map(|e| e.seq).collect::<Vec<_>>()
        );
        // The next commits go on from there, and the snapshot reads them after the checkpoint.
        let e = entry(
            "r-next",
            EntryKind::Finished,
            0,
            vec!["lake/f/d/p=1/next.parquet"],
        );
        assert_eq!(st.commit(&lock, e, &cursor).unwrap(), n + 1);
        let mut with_next = snap.files.clone();
        with_next.push("lake/f/d/p=1/next.parquet".into());
        assert_eq!(st.snapshot().unwrap().files, with_next);
        // The entries it covers are one bundle in the archive, not a file each.
        let bundles = bundles_in(&st.archive_dir()).unwrap();
        assert_eq!(
            bundles.iter().map(|(a, b, _)| (*a, *b)).collect::<Vec<_>>(),
            vec![(1, n - 1)]
        );
        // Reading back to an entry reads only what it needs, and what is after it.
        assert_eq!(
            st.after(n - 3)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            vec![n - 2, n - 1, n, n + 1]
        );
        // A crash after the bundle was written but before the entries left `log/`: put some
        // back.
        let log = st.log_dir();
        for seq in [3u64, 600, n - 1] {
            let e = all.iter().find(|e| e.seq == seq).unwrap();
            std::fs::write(
                log.join(format!("{seq:020}.json")),
                serde_json::to_vec_pretty(e).unwrap(),
            )
            .unwrap();
        }
        assert_eq!(st.snapshot().unwrap().files, with_next);
        assert_eq!(st.all().unwrap().len() as u64, n + 1);
        assert_eq!(st.summary().unwrap(), folded(&st.all().unwrap()));
    }

    /// Every run's end checkpoints the log, so a reader reads the checkpoint and no entry
    /// before it, wherever the log is in its cycle of `ARCHIVE_EVERY` (before: a checkpoint
    /// every 1,000 entries, and up to 999 entries read by every snapshot, commit and status);
    /// the entries wait in `log/` until 1,000 of them go to one bundle. A checkpoint of an
    /// earlier version (no `landed`, no `log_from`) is read, and the next one says when each
    /// live file landed.
    #[test]
    fn each_run_end_checkpoints_and_the_archive_takes_a_thousand_at_a_time() {
        let wh = tempfile::tempdir().unwrap();
        let st = JobState::new(wh.path(), "j");
        let lock = st.lock().unwrap();
        let mut cursor = None;
        let commit = |i: u64, cursor: &mut Option<Value>| {
            let f = format!("lake/f/d/p=1/part-{i}.parquet");
            let mut e = entry(&format!("r{i}"), EntryKind::Finished, i as i64, vec![&f]);
            e.committed_at = format!("2026-12-01T00:00:{:02}+07:00", i % 60);
            st.commit(&lock, e, cursor).unwrap();
            *cursor = Some(Value::from(i as i64));
        };
        for i in 1..=5 {
            commit(i, &mut cursor);
            assert!(st.checkpoint(&lock).unwrap(), "run {i}'s end checkpoints");
            assert_eq!(st.read_checkpoint().unwrap().unwrap().seq, i);
        }
        assert!(!st.checkpoint(&lock).unwrap(), "nothing new: no checkpoint");
        assert_eq!(st.seqs().unwrap().len(), 5, "the entries wait in log/");
        let snap = st.snapshot().unwrap();
        assert_eq!(snap.files.len(), 5);
        let landed = snap.landed.clone().unwrap();
        assert_eq!(
            landed
                .iter()
                .map(|l| l.file.path.clone())
                .collect::<Vec<_>>(),
            snap.files
        );
        assert_eq!(landed[4].committed_at, "2026-12-01T00:00:05+07:00");
        // An earlier version's checkpoint: no `landed`, no `log_from`.
        let path = st.checkpoint_path();
        let mut old: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        old.as_object_mut().unwrap().remove("landed");
        old.as_object_mut().unwrap().remove("log_from");
        std::fs::write(&path, old.to_string()).unwrap();
        assert_eq!(st.snapshot().unwrap().landed, None);
        assert_eq!(st.snapshot_landed().unwrap().landed, Some(landed));
        assert_eq!(st.latest().unwrap().unwrap().seq, 5);
        for i in 6..=ARCHIVE_EVERY {
            commit(i, &mut cursor);
            st.checkpoint(&lock).unwrap();
            assert_eq!(st.latest().unwrap().unwrap().seq, i);
        }
        // The thousandth entry moved the ones before it into one bundle.
        assert_eq!(st.seqs().unwrap(), vec![ARCHIVE_EVERY]);
        assert_eq!(bundles_in(&st.archive_dir()).unwrap().len(), 1);
        assert_eq!(st.all().unwrap().len() as u64, ARCHIVE_EVERY);
        assert_eq!(
            st.snapshot().unwrap().landed.unwrap().len() as u64,
            ARCHIVE_EVERY
        );
        // The next 999 wait in log/; the 1,000th after the archiving moves them.
        for i in ARCHIVE_EVERY + 1..2 * ARCHIVE_EVERY {
            commit(i, &mut cursor);
            st.checkpoint(&lock).unwrap();
        }
        assert_eq!(st.seqs().unwrap().len() as u64, ARCHIVE_EVERY);
        commit(2 * ARCHIVE_EVERY, &mut cursor);
        st.checkpoint(&lock).unwrap();
        assert_eq!(st.seqs().unwrap(), vec![2 * ARCHIVE_EVERY]);
        assert_eq!(bundles_in(&st.archive_dir()).unwrap().len(), 2);
    }

    /// A year of commits leaves bounded state: the checkpoint lists only retired files still
    /// on disk (before: every file any compaction ever retired, for ever), the archive holds
    /// one bundle per checkpoint (before: a file per entry), and bundles past `ARCHIVE_KEEP`
    /// that name no live file are deleted (before: kept for ever).
    #[test]
    fn a_years_log_stays_bounded() {
        let wh = tempfile::tempdir().unwrap();
        let st = JobState::new(wh.path(), "j");
        let lock = st.lock().unwrap();
        let old = crate::time::now_local() - chrono::Duration::days(500);
        let stamp = |t: chrono::NaiveDateTime| t.format("%Y-%m-%dT%H:%M:%S+07:00").to_string();
        // One file the compaction at 2000 retires and a published build still reads: kept on
        // disk.
        let keep = wh.path().join("lake/f/d/p=1/part-1950.parquet");
        std::fs::create_dir_all(keep.parent().unwrap()).unwrap();
        std::fs::write(keep, b"x").unwrap();
        let mut cursor = None;
        let total = 4 * ARCHIVE_EVERY;
        for i in 1..=total {
            let f = format!("lake/f/d/p=1/part-{i}.parquet");
            let mut e = entry(&format!("r{i}"), EntryKind::Finished, i as i64, vec![&f]);
            // The first three thousand commits are 500 days old, the rest recent.
            let at = if i <= 3 * ARCHIVE_EVERY {
                old + chrono::Duration::minutes(i as i64)
            } else {
                crate::time::now_local()
            };
            e.committed_at = stamp(at);
            if i % 100 == 0 {
                // A compaction of the hundred before: their files retired (and deleted), its
                // own file live. Up to 2000 each also retires the one before it (one partition);
                // after, each leaves the one before live (a month closed).
                e.kind = EntryKind::Compaction;
                let from = if i <= 2000 { i - 100 } else { i - 99 };
                e.retired = (from..i)
                    .map(|k| format!("lake/f/d/p=1/part-{k}.parquet"))
                    .collect();
            }
            st.commit(&lock, e, &cursor).unwrap();
            cursor = Some(Value::from(i as i64));
            st.checkpoint(&lock).unwrap();
        }
        let cp = st.read_checkpoint().unwrap().unwrap();
        assert_eq!(cp.compactions, 40);
        assert_eq!(
            cp.retired,
            vec![("lake/f/d/p=1/part-1950.parquet".to_string(), 20)],
            "only the retired file still on disk is listed"
        );
        let bundles: Vec<(u64, u64)> = bundles_in(&st.archive_dir())
            .unwrap()
            .into_iter()
            .map(|(a, b, _)| (a, b))
            .collect();
        // The first two bundles were old and named no live file: deleted. The third is old,
        // and keeps only its entries naming a live file (the compactions at 2000, 2100, …,
        // 2900), so compaction can still find when they landed. The fourth is recent.
        assert_eq!(bundles, vec![(2000, 2999), (3000, 3999)]);
        assert_eq!(std::fs::read_dir(st.archive_dir()).unwrap().count(), 2);
        let all = st.all().unwrap();
        let seqs: Vec<u64> = all.iter().map(|e| e.seq).take(11).collect();
        assert_eq!(
            seqs,
            vec![2000, 2100, 2200, 2300, 2400, 2500, 2600, 2700, 2800, 2900, 3000]
        );
        assert_eq!(all.len(), 10 + 1000 + 1);
        let snap = st.snapshot().unwrap();
        assert!(snap
            .files
            .contains(&"lake/f/d/p=1/part-2000.parquet".to_string()));
        assert!(!snap
            .files
            .contains(&"lake/f/d/p=1/part-1900.parquet".to_string()));
    }

    /// Entries an earlier version archived a file each are bundled at the next checkpoint,
    /// and read the same before and after.
    #[test]
    fn entries_archived_a_file_each_are_bundled() {
        let wh = tempfile::tempdir().unwrap();
        let st = JobState::new(wh.path(), "j");
        let lock = st.lock().unwrap();
        let mut cursor = None;
        for i in 1..=ARCHIVE_EVERY {
            let f = format!("lake/f/d/p=1/part-{i}.parquet");
            let e = entry(&format!("r{i}"), EntryKind::Finished, i as i64, vec![&f]);
            st.commit(&lock, e, &cursor).unwrap();
            cursor = Some(Value::from(i as i64));
        }
        // The old layout: the first three moved to log/archive/ one file each.
        std::fs::create_dir_all(st.archive_dir()).unwrap();
        for seq in 1..=3u64 {
            let name = format!("{seq:020}.json");
            std::fs::rename(st.log_dir().join(&name), st.archive_dir().join(&name)).unwrap();
        }
        let before = st.all().unwrap();
        assert_eq!(before.len() as u64, ARCHIVE_EVERY);
        assert!(st.checkpoint(&lock).unwrap());
        assert!(seqs_in(&st.archive_dir()).unwrap().is_empty());
        let bundles: Vec<(u64, u64)> = bundles_in(&st.archive_dir())
            .unwrap()
            .into_iter()
            .map(|(a, b, _)| (a, b))
            .collect();
        assert_eq!(bundles, vec![(1, 3), (4, ARCHIVE_EVERY - 1)]);
        let after = st.all().unwrap();
        assert_eq!(
            after.iter().map(|e| e.seq).collect::<Vec<_>>(),
            before.iter().map(|e| e.seq).collect::<Vec<_>>()
        );
    }

    /// A reader never sees a dataset shrink while a writer commits and checkpoints: one thread
    /// commits (a file each) and checkpoints in a loop, others read snapshots and every entry
    /// (`all`) as fast as they can; each answer holds at least as many files as the one before
    /// and never an error. Before: a snapshot read the checkpoint, then listed `log/`; a
    /// checkpoint written and archived between the two hid up to 999 entries' files, and
    /// `all` could miss an entry moved between its two listings or fail to read one.
    #[test]
    fn snapshots_never_miss_a_commit_while_checkpoints_archive_the_log() {
        let wh = tempfile::tempdir().unwrap();
        let st = JobState::new(wh.path(), "j");
        let total = 3 * ARCHIVE_EVERY + 10;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (st, done) = (st.clone(), done.clone());
            std::thread::spawn(move || {
                let lock = st.lock().unwrap();
                let mut cursor = None;
                for i in 1..=total {
                    let f = format!("lake/f/d/p=1/part-{i}.parquet");
                    let e = entry(&format!("r{i}"), EntryKind::Finished, i as i64, vec![&f]);
                    st.commit(&lock, e, &cursor).unwrap();
                    cursor = Some(Value::from(i as i64));
                    st.checkpoint(&lock).unwrap();
                }
                done.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        };
        let reader = |all: bool| {
            let (st, done) = (st.clone(), done.clone());
            std::thread::spawn(move || {
                let (mut last, mut reads) = (0usize, 0u64);
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let n = if all {
                        st.all().unwrap_or_else(|e| panic!("all: {e}")).len()
                    } else {
                        st.snapshot()
                            .unwrap_or_else(|e| panic!("snapshot: {e}"))
                            .files
                            .len()
                    };
                    assert!(
                        n >= last,
                        "{} went from {last} to {n}",
                        if all { "all" } else { "snapshot" }
                    );
                    last = n;
                    reads += 1;
                }
                reads
            })
        };
        let (snapshots, alls) = (reader(false), reader(true));
        writer.join().unwrap();
        let (s, a) = (snapshots.join().unwrap(), alls.join().unwrap());
        assert!(s > 10 && a > 10, "{s} snapshots and {a} reads of the log");
        assert_eq!(st.snapshot().unwrap().files.len() as u64, total);
        assert_eq!(st.all().unwrap().len() as u64, total);
    }

    /// A feed's watermark is the newest version landed by any run: a backfill of an older
    /// window lands older versions after the newest ones (before: the last run's, so the
    /// status said the feed had gone back months).
    #[test]
    fn a_backfill_never_moves_the_watermark_back() {
        let mut s = LogSummary::default();
        for w in ["20261201080000", "20261205080000", "20260301080000"] {
            let mut e = entry("r", EntryKind::Finished, 1, vec![]);
            e.watermark = Some(w.into());
            s.fold(&e);
        }
        assert_eq!(s.watermark.as_deref(), Some("20261205080000"));
        // A record versioned in 2099 landed on 2026-12-06 is not the feed's reach.
        let mut e = entry("r", EntryKind::Finished, 1, vec![]);
        e.watermark = Some("20991231000000".into());
        e.committed_at = "2026-12-06T08:00:00+07:00".into();
        s.fold(&e);
        assert_eq!(s.watermark.as_deref(), Some("20261205080000"));
    }

    /// A run the daemon aborted at its timeout (its task dropped, the lock released) leaves its
    /// marker in a process that lives on: not running (before: shown running for ever).
    #[test]
    fn a_run_whose_lock_was_released_is_not_running() {
        let wh = tempfile::tempdir().unwrap();
        let st = JobState::new(wh.path(), "j");
        let lock = st.lock().unwrap();
        st.begin_run(&lock, "r1", "t").unwrap();
        assert!(st.is_running());
        drop(lock); // aborted: the marker stays for recovery, the lock goes
                    // (A child process another test spawns holds a copy of the lock's descriptor until it
                    // execs: give it a moment.)
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while st.is_running() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!st.is_running());
        let again = st.lock().expect("nobody holds it");
        assert!(
            st.is_running(),
            "a new run holds it (its marker is the old one until it begins)"
        );
        drop(again);
    }
}
