//! One run of a job: pull pages from its feed, decode records, land Parquet files, commit.
//!
//! The run takes the job's lock, recovers what a crashed run left, then loops: fetch a page
//! (retried by `feeds::http`), decode its records (malformed ones go to quarantine with their
//! reason, the rest land), and every `commit_every_rows` rows land the files and commit them
//! with the cursor after the last page they hold. A feed that fails for good ends the run as
//! `failed`, after committing every whole page already pulled. This module orchestrates; it
//! writes no file itself (`lake::parquet`) and never moves a cursor by hand (`lake::commit`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde_json::{json, Value};

use crate::config::{JobConfig, Protocol};
use crate::feeds::paged_post::Watermark;
use crate::feeds::{self, After, FeedClient, Puller, Records};
use crate::lake::commit::{
    BackfillMark, CommitEntry, CommitError, EntryKind, JobState, Outcome, Recovery, RunTotals,
};
use crate::lake::parquet::{DatasetWriter, LandedFile, StagedFile};
use crate::lake::schema::{DatasetSpec, RecordDecoder, Row};
use crate::lake::{self, quarantine_spec};
use crate::time;

/// What a run needs from its surroundings.
#[derive(Clone)]
pub struct RunContext {
    pub warehouse: PathBuf,
    /// Folder of `chiso.toml` (file globs are relative to it).
    pub project_root: PathBuf,
    pub http: reqwest::Client,
}

/// The result of one run, as printed by `chiso run` and `chiso demo`.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub job: String,
    pub feed: String,
    pub dataset: String,
    pub run_id: String,
    pub outcome: Outcome,
    pub totals: RunTotals,
    pub cursor_before: Option<Value>,
    pub cursor_after: Option<Value>,
    pub watermark: Option<String>,
    pub seconds: f64,
    pub error: Option<String>,
    /// Set when the previous run had been interrupted and was cleaned up first.
    pub recovered_run: Option<String>,
}

/// A backfill's run (`chiso backfill`): re-pulls a cursor feed from `start` and commits its
/// chunks like a run's, with its own position beside them (`BackfillMark`) and the job's cursor
/// carried forward unchanged: the scheduled runs go on from where they were.
#[derive(Clone)]
pub struct BackfillRun {
    pub id: String,
    /// Where the feed starts: the position the window begins at, or where this backfill got to
    /// before it was interrupted.
    pub start: Option<Value>,
    /// The run ends after the page that passes this version time (local microseconds).
    pub until: Option<i64>,
    /// Told the rows read so far after each page (a progress bar).
    pub progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error("job {job}: writing the lake under {dir}: {source}")]
    Lake {
        job: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("job {job}: {message}")]
    Input { job: String, message: String },
}

/// Decoding and writing state for one chunk (the rows between two commits).
struct Chunk {
    data: DatasetWriter,
    quarantine: DatasetWriter,
    decoder: RecordDecoder,
    qdecoder: RecordDecoder,
    rows_in: u64,
    landed: u64,
    quarantined: u64,
    /// Rows an earlier run already landed (paged_post records at the committed watermark).
    skipped: u64,
    /// The watermark column (paged_post), the watermark reached in this chunk, and the one the
    /// run started from (whose keys are skipped).
    watermark_col: Option<usize>,
    watermark: Watermark,
    skip: Watermark,
    /// Highest version value in this chunk, for status.
    version_max: Option<i64>,
}

struct ChunkNames<'a> {
    warehouse: &'a Path,
    spec: &'a Arc<DatasetSpec>,
    qspec: &'a Arc<DatasetSpec>,
    run_id: &'a str,
}

impl Chunk {
    fn new(
        n: &ChunkNames<'_>,
        chunk: u32,
        suffix: &str,
        watermark_col: Option<usize>,
        skip: Watermark,
    ) -> Chunk {
        let stem = format!("part-{}-c{chunk:04}{suffix}", n.run_id);
        Chunk {
            data: DatasetWriter::new(n.spec.clone(), n.warehouse, n.spec.rel_dir(), stem.clone()),
            quarantine: DatasetWriter::new(
                n.qspec.clone(),
                n.warehouse,
                lake::quarantine_rel(n.spec),
                format!("q-{}-c{chunk:04}{suffix}", n.run_id),
            )
            .with_max_buffered_bytes(16 << 20),
            decoder: RecordDecoder::new(n.spec.clone()),
            qdecoder: RecordDecoder::new(n.qspec.clone()),
            rows_in: 0,
            landed: 0,
            quarantined: 0,
            skipped: 0,
            watermark_col,
            watermark: Watermark::default(),
            skip,
            version_max: None,
        }
    }

    fn rows(&self) -> u64 {
        self.landed + self.quarantined + self.skipped
    }

    /// Decodes one JSON record text; lands it or quarantines it.
    fn record(
        &mut self,
        text: &str,
        position: &str,
        job: &str,
        run_id: &str,
        now: i64,
    ) -> std::io::Result<()> {
        let decoded = self.decoder.decode_json(text).map_err(|m| m.0);
        self.accept(decoded, text, position, job, run_id, now)
    }

    /// Lands a decoded row, or quarantines its raw text with the reason it failed.
    fn accept(
        &mut self,
        decoded: Result<Row<'_>, String>,
        raw: &str,
        position: &str,
        job: &str,
        run_id: &str,
        now: i64,
    ) -> std::io::Result<()> {
        self.rows_in += 1;
        match decoded {
            Ok(row) => {
                if let Some(us) = self.watermark_col.and_then(|c| row.micros(c)) {
                    let key = row.key_string(self.decoder.spec());
                    if self.skip.already_landed(us, &key) {
                        self.skipped += 1;
                        return Ok(());
                    }
                    self.watermark.observe(us, key);
                }
                self.version_max = max_opt(self.version_max, row.version_micros);
                self.data.push(row, run_id, now)?;
                self.landed += 1;
                Ok(())
            }
            Err(why) => self.quarantine(raw, &why, position, job, run_id, now),
        }
    }

    fn quarantine(
        &mut self,
        raw: &str,
        reason: &str,
        position: &str,
        job: &str,
        run_id: &str,
        now: i64,
    ) -> std::io::Result<()> {
        let spec = self.decoder.spec();
        let q = json!({
            "job": job,
            "dataset": spec.key(),
            "received_at": time::compact(time::from_micros(now)),
            "position": position,
            "reason": reason,
            "raw": raw,
        })
        .to_string();
        let row = self
            .qdecoder
            .decode_json(&q)
            .expect("quarantine rows follow the quarantine schema");
        self.quarantine.push(row, run_id, now)?;
        self.quarantined += 1;
        Ok(())
    }

    /// Decodes a page's records.
    fn page(
        &mut self,
        records: &Records,
        position: &str,
        job: &str,
        run_id: &str,
        now: i64,
    ) -> std::io::Result<()> {
        match records {
            Records::Json(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.record(item, &format!("{position} #{i}"), job, run_id, now)?;
                }
            }
            Records::Csv(text) => {
                let mut reader = csv::ReaderBuilder::new()
                    .flexible(true)
                    .from_reader(text.as_bytes());
                let headers = reader.headers().map_err(std::io::Error::other)?.clone();
                let mapping = self.decoder.csv_mapping(&headers);
                let mut record = csv::StringRecord::new();
                let mut starts = Vec::new();
                let mut rows = Vec::new();
                loop {
                    match reader.read_record(&mut record) {
                        Ok(true) => {
                            starts.push(record.position().map_or(0, |p| p.byte() as usize));
                            rows.push(Ok(record.clone()));
                        }
                        Ok(false) => break,
                        Err(e) => {
                            let at = e.position().map_or(text.len(), |p| p.byte() as usize);
                            starts.push(at);
                            rows.push(Err(e.to_string()));
                        }
                    }
                }
                for (i, row) in rows.iter().enumerate() {
                    let end = starts.get(i + 1).copied().unwrap_or(text.len());
                    let raw = text.get(starts[i]..end).unwrap_or("").trim_end();
                    let position = format!("{position} line {}", i + 2);
                    let decoded = match row {
                        Ok(r) => self
                            .decoder
                            .decode_fields(&mapping, r, &headers)
                            .map_err(|m| m.0),
                        Err(e) => Err(format!("unreadable CSV row: {e}")),
                    };
                    self.accept(decoded, raw, &position, job, run_id, now)?;
                }
            }
        }
        Ok(())
    }

    /// Closes the chunk's files (still temporary).
    fn finish(self) -> std::io::Result<FinishedChunk> {
        let stats = ChunkStats {
            rows_in: self.rows_in,
            landed: self.landed,
            quarantined: self.quarantined,
            skipped: self.skipped,
            version_max: self.version_max,
        };
        Ok((self.data.finish()?, self.quarantine.finish()?, stats))
    }
}

/// A chunk's data files, quarantine files and counts, all still temporary.
type FinishedChunk = (Vec<StagedFile>, Vec<StagedFile>, ChunkStats);

#[derive(Debug, Default, Clone, Copy)]
struct ChunkStats {
    rows_in: u64,
    landed: u64,
    quarantined: u64,
    skipped: u64,
    version_max: Option<i64>,
}

impl ChunkStats {
    fn add(&mut self, o: &ChunkStats) {
        self.rows_in += o.rows_in;
        self.landed += o.landed;
        self.quarantined += o.quarantined;
        self.skipped += o.skipped;
        self.version_max = max_opt(self.version_max, o.version_max);
    }
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The run in progress: the lock, the log, and the totals.
/// Landing stamps (`_ingested_at`) that never go back within a dataset: each is the wall clock,
/// or just after the previous stamp when the clock has stepped back (NTP, a VM resumed). The
/// incremental models select what landed after the newest stamp they hold, so a stamp earlier
/// than one already committed would hide its rows for good.
pub struct LandingClock(std::sync::atomic::AtomicI64);

impl LandingClock {
    /// A clock whose stamps come after `floor` (microseconds).
    pub fn after(floor: i64) -> LandingClock {
        LandingClock(std::sync::atomic::AtomicI64::new(floor))
    }

    /// The newest stamp given (or the floor, before the first).
    pub fn last(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The next stamp: now, or one microsecond after the last one if now is not later.
    pub fn next(&self) -> i64 {
        self.next_at(time::micros(time::now_local()))
    }

    fn next_at(&self, now: i64) -> i64 {
        use std::sync::atomic::Ordering;
        let mut last = self.0.load(Ordering::SeqCst);
        loop {
            let stamp = now.max(last + 1);
            match self
                .0
                .compare_exchange(last, stamp, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return stamp,
                Err(seen) => last = seen,
            }
        }
    }
}

struct Run<'a> {
    job: &'a JobConfig,
    /// Stamps for the rows this run lands.
    clock: LandingClock,
    state: JobState,
    lock: crate::lake::commit::JobLock,
    run_id: String,
    started_at: String,
    cursor_before: Option<Value>,
    /// The feed's position after the last commit (a backfill's own position).
    committed: Option<Value>,
    /// The job's cursor, which a backfill's commits carry forward unchanged.
    job_cursor: Option<Value>,
    backfill: Option<BackfillRun>,
    totals: RunTotals,
    chunk_no: u32,
    version_max: Option<i64>,
}

impl Run<'_> {
    fn land(&self, staged: Vec<StagedFile>) -> Result<Vec<LandedFile>, PullError> {
        staged
            .into_iter()
            .map(|s| s.land())
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|source| self.lake_err(source))
    }

    fn lake_err(&self, source: std::io::Error) -> PullError {
        PullError::Lake {
            job: self.job.name.clone(),
            dir: PathBuf::from(self.job.dataset.rel_dir()),
            source,
        }
    }

    /// Lands a finished chunk and commits it with `cursor`.
    fn commit_chunk(
        &mut self,
        finished: FinishedChunk,
        cursor: Option<Value>,
        kind: EntryKind,
        outcome: Option<Outcome>,
        error: Option<String>,
    ) -> Result<(), PullError> {
        let (data, quarantine, stats) = finished;
        let files = self.land(data)?;
        let quarantine_files = self.land(quarantine)?;
        self.totals.rows_in += stats.rows_in;
        self.totals.rows_landed += stats.landed;
        self.totals.rows_quarantined += stats.quarantined;
        self.totals.rows_skipped += stats.skipped;
        self.totals.files += (files.len() + quarantine_files.len()) as u64;
        self.totals.bytes += files
            .iter()
            .chain(&quarantine_files)
            .map(|f| f.bytes)
            .sum::<u64>();
        self.version_max = max_opt(self.version_max, stats.version_max);
        let entry = CommitEntry {
            seq: 0,
            job: self.job.name.clone(),
            run_id: self.run_id.clone(),
            kind,
            chunk: self.chunk_no,
            started_at: self.started_at.clone(),
            committed_at: time::now_rfc3339(),
            outcome,
            cursor_before: self.cursor_before.clone(),
            cursor_after: cursor.clone(),
            files,
            quarantine_files,
            totals: self.totals.clone(),
            watermark: self
                .version_max
                .map(|us| time::compact(time::from_micros(us))),
            error,
            stamped_through: Some(self.clock.last()),
            retired: Vec::new(),
            backfill: None,
        };
        let (entry, expected) = match &self.backfill {
            None => (entry, &self.committed),
            Some(b) => (
                CommitEntry {
                    cursor_after: self.job_cursor.clone(),
                    backfill: Some(BackfillMark {
                        id: b.id.clone(),
                        cursor: cursor.clone(),
                    }),
                    ..entry
                },
                &self.job_cursor,
            ),
        };
        self.state.commit(&self.lock, entry, expected)?;
        self.committed = cursor;
        self.chunk_no += 1;
        Ok(())
    }

    fn report(
        &self,
        outcome: Outcome,
        error: Option<String>,
        t0: Instant,
        recovery: &Recovery,
    ) -> RunReport {
        RunReport {
            job: self.job.name.clone(),
            feed: self.job.dataset.feed.clone(),
            dataset: self.job.dataset.name.clone(),
            run_id: self.run_id.clone(),
            outcome,
            totals: self.totals.clone(),
            cursor_before: self.cursor_before.clone(),
            cursor_after: self.committed.clone(),
            watermark: self
                .version_max
                .map(|us| time::compact(time::from_micros(us))),
            seconds: t0.elapsed().as_secs_f64(),
            error,
            recovered_run: recovery.run_id.clone(),
        }
    }
}

fn outcome_of(totals: &RunTotals, failed: bool) -> Outcome {
    if failed {
        Outcome::Failed
    } else if totals.rows_quarantined > 0 {
        Outcome::Quarantined
    } else {
        Outcome::Ok
    }
}

/// Runs every job of `jobs` once, side by side: each job's report, or why it could not run.
/// One job's failure, or its panic, is its own: the others run to the end (a scheduler and
/// `chiso run --all` alike).
pub async fn run_many(
    ctx: &RunContext,
    jobs: &[JobConfig],
) -> Vec<(String, Result<RunReport, String>)> {
    let ctx = ctx.clone();
    run_each(jobs, move |job| {
        let ctx = ctx.clone();
        async move { run_job(&ctx, &job).await }
    })
    .await
}

/// `run_many` over any run function: each job in a task of its own, results in job order; a
/// panicking task becomes that job's error.
pub async fn run_each<F, Fut>(
    jobs: &[JobConfig],
    run: F,
) -> Vec<(String, Result<RunReport, String>)>
where
    F: Fn(JobConfig) -> Fut,
    Fut: std::future::Future<Output = Result<RunReport, PullError>> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut names = std::collections::HashMap::new();
    for job in jobs {
        let handle = set.spawn(run(job.clone()));
        names.insert(handle.id(), job.name.clone());
    }
    let mut out = Vec::new();
    while let Some(joined) = set.join_next_with_id().await {
        match joined {
            Ok((id, result)) => {
                out.push((names[&id].clone(), result.map_err(|e| e.to_string())));
            }
            Err(e) => {
                let name = names[&e.id()].clone();
                let why = if e.is_panic() {
                    let panic = e.into_panic();
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "no message".into());
                    format!("the run panicked: {message}")
                } else {
                    "the run was cancelled".to_string()
                };
                tracing::error!(error = %why, "A job's run ended abnormally; the other jobs go on.");
                out.push((name, Err(why)));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The stamp a run's rows must come after: the newest stamp the dataset committed, or nothing
/// before the first commit.
fn run_floor(state: &JobState) -> Result<i64, PullError> {
    let Some(latest) = state.latest()? else {
        return Ok(i64::MIN + 1);
    };
    // Logs written before `stamped_through` give only the commit time, to the second; their
    // stamps could run up to a second past the previous commit, so two seconds past the last
    // one is after every row they committed.
    Ok(latest.stamped_through.unwrap_or_else(|| {
        time::parse_rfc3339_local(&latest.committed_at)
            .map(|t| time::micros(t) + 2_000_000)
            .unwrap_or(i64::MIN + 1)
    }))
}

/// Runs `job` once. A feed failure is reported in the `RunReport` (outcome `failed`); an
/// `Err` means the run could not start or the lake could not be written.
pub async fn run_job(ctx: &RunContext, job: &JobConfig) -> Result<RunReport, PullError> {
    run_job_as(ctx, job, None).await
}

/// Runs a backfill of `job` (a cursor feed): see [`BackfillRun`].
pub async fn backfill_job(
    ctx: &RunContext,
    job: &JobConfig,
    backfill: BackfillRun,
) -> Result<RunReport, PullError> {
    backfill_possible(job)?;
    run_job_as(ctx, job, Some(backfill)).await
}

/// Whether `job` can be backfilled: a cursor feed.
pub fn backfill_possible(job: &JobConfig) -> Result<(), PullError> {
    if matches!(job.protocol, Protocol::Cursor(_)) {
        return Ok(());
    }
    Err(PullError::Input {
        job: job.name.clone(),
        message: format!(
            "a backfill re-pulls a cursor feed; this job's protocol is {} (snapshot feeds are whole at every run; paged feeds re-read from their watermark)",
            job.protocol.name()
        ),
    })
}

async fn run_job_as(
    ctx: &RunContext,
    job: &JobConfig,
    backfill: Option<BackfillRun>,
) -> Result<RunReport, PullError> {
    let t0 = Instant::now();
    let state = JobState::new(&ctx.warehouse, &job.name);
    let spec = job.dataset.clone();
    let qspec = quarantine_spec(&spec);
    // Taking the lock (which may wait half a second), recovery and the run's first entry touch
    // the disk and fsync: off the async workers, which other jobs' requests share.
    let (lock, recovery) = tokio::task::block_in_place(|| {
        let lock = state.lock()?;
        let recovery = state.recover(
            &lock,
            &lake::job_dirs(&ctx.warehouse, &spec),
            &time::now_rfc3339(),
        )?;
        Ok::<_, PullError>((lock, recovery))
    })?;
    if let Some(r) = &recovery.run_id {
        tracing::warn!(
            job = %job.name,
            run_id = %r,
            removed_files = recovery.removed_uncommitted,
            "Previous run was interrupted; removed its uncommitted files, pulling again from the committed cursor."
        );
    }
    let cursor0 = state.cursor()?;
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let started_at = time::now_rfc3339();
    tokio::task::block_in_place(|| state.begin_run(&lock, &run_id, &started_at))?;
    // Stamps start after the newest stamp the dataset committed.
    let floor = run_floor(&state)?;
    let start = match &backfill {
        Some(b) => b.start.clone(),
        None => cursor0.clone(),
    };
    let mut run = Run {
        job,
        clock: LandingClock::after(floor),
        state,
        lock,
        run_id: run_id.clone(),
        started_at,
        cursor_before: start.clone(),
        committed: start,
        job_cursor: cursor0.clone(),
        backfill,
        totals: RunTotals::default(),
        chunk_no: 0,
        version_max: None,
    };
    tracing::info!(job = %job.name, run_id = %run_id, protocol = job.protocol.name(), "Run started.");
    let names = ChunkNames {
        warehouse: &ctx.warehouse,
        spec: &spec,
        qspec: &qspec,
        run_id: &run_id,
    };
    let result = match &job.protocol {
        // Local files are read and parsed by threads of their own; the run waits off the async
        // workers.
        Protocol::File(p) => tokio::task::block_in_place(|| {
            run_files(ctx, &mut run, &names, p.glob.as_str(), p.threads.0 as usize)
        }),
        _ => run_http(ctx, &mut run, &names).await,
    };
    let report = match result {
        Ok(error) => {
            let outcome = outcome_of(&run.totals, error.is_some());
            run.report(outcome, error, t0, &recovery)
        }
        Err(e) => return Err(e),
    };
    // Sum the log up now and then, so that commits and snapshots stay flat as runs accumulate;
    // it only saves reading, so a failure is reported and the run stands.
    if let Err(e) = tokio::task::block_in_place(|| run.state.checkpoint(&run.lock)) {
        tracing::warn!(job = %job.name, error = %e, "Could not write a checkpoint of the commit log.");
    }
    run.state.end_run(&run.lock)?;
    match report.outcome {
        Outcome::Failed => tracing::error!(
            job = %job.name, run_id = %run_id,
            error = report.error.as_deref().unwrap_or(""),
            rows_landed = report.totals.rows_landed,
            "Run failed; what was pulled before the failure is committed."
        ),
        _ => tracing::info!(
            job = %job.name, run_id = %run_id,
            rows_landed = report.totals.rows_landed,
            rows_quarantined = report.totals.rows_quarantined,
            seconds = report.seconds,
            "Run finished."
        ),
    }
    Ok(report)
}

/// The page loop of HTTP protocols. Returns the feed error, if the feed failed.
async fn run_http(
    ctx: &RunContext,
    run: &mut Run<'_>,
    names: &ChunkNames<'_>,
) -> Result<Option<String>, PullError> {
    let job = run.job;
    let source = job.source.clone().ok_or_else(|| PullError::Input {
        job: job.name.clone(),
        message: "no source configured".into(),
    })?;
    let mut client = FeedClient::new(ctx.http.clone(), source, job.retry.clone(), &job.name);
    if matches!(job.protocol, Protocol::Evaluation(_)) {
        client = client.refusing();
    }
    let mut puller = Puller::for_job(job, run.committed.clone()).expect("HTTP protocol");
    let watermark_col = match &job.protocol {
        Protocol::PagedPost(p) => job.dataset.column(&p.watermark_column).map(|(i, _)| i),
        _ => None,
    };
    // The committed watermark: its keys are skipped; the run's own watermark grows from it.
    let start = Watermark::from_cursor(&run.committed);
    let mut watermark = start.clone();
    let mut chunk = Chunk::new(names, run.chunk_no, "", watermark_col, start.clone());
    // Cursor after the last page decoded into `chunk`.
    let mut cursor = run.committed.clone();
    let mut failure = None;
    loop {
        let page = match puller.next_page(&client).await {
            Ok(p) => p,
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        };
        run.totals.pages += 1;
        chunk.rows_in += page.unchanged;
        chunk.skipped += page.unchanged;
        tokio::task::block_in_place(|| {
            chunk.page(
                &page.records,
                &page.position,
                &job.name,
                &run.run_id,
                run.clock.next(),
            )
        })
        .map_err(|e| run.lake_err(e))?;
        cursor = match &page.after {
            After::Cursor(c) => c.clone(),
            After::Watermark => {
                watermark.merge(&chunk.watermark);
                // The next request asks from here, and skips what landed at it.
                puller.advance(&watermark);
                chunk.skip = watermark.clone();
                watermark.to_cursor().or(cursor)
            }
        };
        // A backfill ends past its window (the rest is the scheduled runs' to pull).
        let mut last = page.last;
        if let Some(b) = &run.backfill {
            if let Some(progress) = &b.progress {
                progress(run.totals.rows_in + chunk.rows_in);
            }
            let newest = max_opt(run.version_max, chunk.version_max);
            last |= b.until.zip(newest).is_some_and(|(u, v)| v > u);
        }
        if chunk.rows() >= job.dataset.commit_every_rows as u64 && !last {
            let finished =
                tokio::task::block_in_place(|| chunk.finish()).map_err(|e| run.lake_err(e))?;
            run.totals.retries = client.retries();
            tokio::task::block_in_place(|| {
                run.commit_chunk(finished, cursor.clone(), EntryKind::Checkpoint, None, None)
            })?;
            chunk = Chunk::new(names, run.chunk_no, "", watermark_col, watermark.clone());
        }
        if last {
            break;
        }
    }
    run.totals.retries = client.retries();
    let finished = tokio::task::block_in_place(|| chunk.finish()).map_err(|e| run.lake_err(e))?;
    let mut totals = run.totals.clone();
    totals.rows_quarantined += finished.2.quarantined;
    let outcome = outcome_of(&totals, failure.is_some());
    tokio::task::block_in_place(|| {
        run.commit_chunk(
            finished,
            cursor,
            EntryKind::Finished,
            Some(outcome),
            failure.clone(),
        )
    })?;
    Ok(failure)
}

/// Lands local NDJSON files, each split across `threads` parser threads.
fn run_files(
    ctx: &RunContext,
    run: &mut Run<'_>,
    names: &ChunkNames<'_>,
    glob: &str,
    threads: usize,
) -> Result<Option<String>, PullError> {
    let job = run.job;
    let files =
        feeds::file::new_files(&ctx.project_root, glob, &run.committed).map_err(|message| {
            PullError::Input {
                job: job.name.clone(),
                message,
            }
        })?;
    if files.is_empty() {
        let cursor = run.committed.clone();
        run.commit_chunk(
            (vec![], vec![], ChunkStats::default()),
            cursor,
            EntryKind::Finished,
            Some(Outcome::Ok),
            None,
        )?;
        return Ok(None);
    }
    let n = files.len();
    for (i, file) in files.iter().enumerate() {
        let ranges = feeds::file::split(file.size, threads);
        let chunk_no = run.chunk_no;
        let results: Vec<std::io::Result<FinishedChunk>> = std::thread::scope(|s| {
            let handles: Vec<_> = ranges
                .iter()
                .enumerate()
                .map(|(t, &(a, b))| {
                    let run_id = run.run_id.as_str();
                    let job_name = job.name.as_str();
                    let clock = &run.clock;
                    s.spawn(move || {
                        let mut chunk = Chunk::new(
                            names,
                            chunk_no,
                            &format!("-t{t}"),
                            None,
                            Watermark::default(),
                        );
                        let now = clock.next();
                        feeds::file::for_each_line(&file.path, a, b, |offset, line| {
                            let position = format!("{}@{offset}", file.key);
                            match std::str::from_utf8(line) {
                                Ok(text) => chunk.record(text, &position, job_name, run_id, now),
                                Err(e) => {
                                    let raw = String::from_utf8_lossy(line);
                                    let why = Err(format!("not UTF-8: {e}"));
                                    chunk.accept(why, &raw, &position, job_name, run_id, now)
                                }
                            }
                        })?;
                        chunk.finish()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("parser thread panicked"))
                .collect()
        });
        let mut data = Vec::new();
        let mut quarantine = Vec::new();
        let mut stats = ChunkStats::default();
        for r in results {
            let (d, q, s) = r.map_err(|e| PullError::Input {
                job: job.name.clone(),
                message: format!("reading {}: {e}", file.path.display()),
            })?;
            data.extend(d);
            quarantine.extend(q);
            stats.add(&s);
        }
        let cursor = Some(feeds::file::cursor_with(&run.committed, file));
        let last = i + 1 == n;
        let mut totals = run.totals.clone();
        totals.rows_quarantined += stats.quarantined;
        let (kind, outcome) = if last {
            (EntryKind::Finished, Some(outcome_of(&totals, false)))
        } else {
            (EntryKind::Checkpoint, None)
        };
        run.commit_chunk((data, quarantine, stats), cursor, kind, outcome, None)?;
    }
    Ok(None)
}

#[cfg(test)]
mod landing_clock_tests {
    use super::LandingClock;

    #[test]
    fn stamps_never_go_back() {
        let clock = LandingClock::after(1_000);
        assert_eq!(clock.next_at(5_000), 5_000);
        // The wall clock steps back: the stamp still comes after the last one.
        assert_eq!(clock.next_at(2_000), 5_001);
        assert_eq!(clock.next_at(2_000), 5_002);
        assert_eq!(clock.next_at(9_000), 9_000);
        // A run starting after a commit stamped later than its clock says.
        assert_eq!(LandingClock::after(10_000).next_at(3_000), 10_001);
    }
}
