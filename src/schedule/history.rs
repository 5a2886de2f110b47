//! The daemon's history of fires: `_state/_serve/fires/<job>.jsonl`, one JSON line per event,
//! appended and fsynced. A fire is keyed by (job, planned time): a `claimed` line is written
//! before its run starts, so a planned time is run at most once, across restarts too; `finished`
//! follows the run; a fire that does not run is one `skipped` line (overlap, or a misfire after
//! downtime); a claim left without an end by a killed daemon is closed as `interrupted` at the
//! next start. Readers take the file's tail only, so `chiso status` stays flat as a year of
//! fires accumulates; lines older than the retention are dropped at the daemon's start and
//! every six hours while it runs (recovery reads only the newest claim). Appends and
//! compactions take the file's lock (`<job>.jsonl.lock`), so a line `chiso run` appends while
//! the daemon compacts is kept; readers decode line by line, leniently, so neither a tail that
//! begins inside a character nor a line a kill tore inside one stops the daemon.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What happened to a fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FireEvent {
    /// The fire's run is about to start (or waits in the job's queue).
    Claimed,
    /// Its run ended (see `outcome`).
    Finished,
    /// It found its job running and `overlap = "skip"`.
    SkippedOverlap,
    /// It was missed while the daemon was down and `catch_up` did not run it.
    SkippedMisfire,
    /// Claimed, but the daemon stopped before its run ended (SIGKILL, or grace over).
    Interrupted,
    /// The job itself changed while the daemon ran (`note`: paused, resumed, its file
    /// reloaded, added or removed); `planned` is when. Speaks for no planned time.
    Changed,
}

/// What became of a finished fire (written as its snake_case name, as before it was typed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FireOutcome {
    Ok,
    /// Landed, and some records were quarantined.
    Quarantined,
    Failed,
    /// An attempt ran past its timeout and was stopped.
    TimedOut,
    /// Stopped at its timeout, still blocked in I/O: abandoned (it holds the job's lock).
    Stuck,
    /// Another run held the job's lock (or another build the warehouse's).
    Busy,
    /// A run by hand that was interrupted.
    Interrupted,
    /// A publication held back by the rules.
    Held,
    /// Published, a push to a portal not acknowledged yet.
    PushPending,
    /// A reconciliation found figures that differ from the portal's beyond rounding.
    Differences,
    /// A value this version does not know (a newer one wrote it): the line is still read.
    #[serde(other)]
    Unknown,
}

impl FireOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            FireOutcome::Ok => "ok",
            FireOutcome::Quarantined => "quarantined",
            FireOutcome::Failed => "failed",
            FireOutcome::TimedOut => "timed_out",
            FireOutcome::Stuck => "stuck",
            FireOutcome::Busy => "busy",
            FireOutcome::Interrupted => "interrupted",
            FireOutcome::Held => "held",
            FireOutcome::PushPending => "push_pending",
            FireOutcome::Differences => "differences",
            FireOutcome::Unknown => "unknown",
        }
    }
}

impl From<crate::lake::commit::Outcome> for FireOutcome {
    fn from(o: crate::lake::commit::Outcome) -> Self {
        use crate::lake::commit::Outcome;
        match o {
            Outcome::Ok => FireOutcome::Ok,
            Outcome::Quarantined => FireOutcome::Quarantined,
            Outcome::Failed => FireOutcome::Failed,
            Outcome::Interrupted => FireOutcome::Interrupted,
        }
    }
}

/// How a fire came to be claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FireHow {
    /// At its planned time (within `misfire_after`).
    OnTime,
    /// A misfire run by `catch_up` after downtime.
    CaughtUp,
    /// Waited for the run before it (`overlap = "queue"`).
    Queued,
    /// A build triggered by pulls that landed rows (planned time: when it was started).
    Triggered,
    /// A final publish job's periods tried again after a fire that did not publish them
    /// (planned time: the fire's).
    Retry,
    /// Not a fire: a run started by hand (`chiso run`, `chiso backfill`), recorded so that the
    /// history shows every run of the job; `planned` is when it started. Never counts as a
    /// planned time spoken for.
    Manual,
}

/// One line of a job's fire history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FireRecord {
    pub job: String,
    /// The planned time, RFC 3339 in the project's zone: the fire's key with `job`.
    pub planned: String,
    pub event: FireEvent,
    /// When the line was written (RFC 3339 with milliseconds, project zone).
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub how: Option<FireHow>,
    /// The runs (one per attempt) of a finished fire; the build id of a build.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub run_ids: Vec<String>,
    /// What became of a finished fire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<FireOutcome>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub rows_landed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Misfires skipped or caught up beyond the planned times listed (`MAX_LISTED`).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub more: u64,
    /// A publish fire: the periods it publishes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub periods: Vec<String>,
    /// A final publish fire that ended: the periods still not published (held, failed, a push
    /// pending, or cut short), which the daemon tries again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owed: Vec<String>,
    /// A `changed` line: what changed, and who asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

impl FireRecord {
    pub fn new(job: &str, planned: &str, event: FireEvent) -> FireRecord {
        FireRecord {
            job: job.to_string(),
            planned: planned.to_string(),
            event,
            at: crate::time::now_rfc3339_millis(),
            how: None,
            run_ids: Vec::new(),
            outcome: None,
            attempts: 0,
            rows_landed: 0,
            seconds: None,
            error: None,
            more: 0,
            periods: Vec::new(),
            owed: Vec::new(),
            note: None,
        }
    }

    /// A `changed` line: `note` says what changed and who asked.
    pub fn changed(job: &str, note: String) -> FireRecord {
        let now = crate::time::now_rfc3339_millis();
        let mut r = FireRecord::new(job, &now, FireEvent::Changed);
        r.note = Some(note);
        r
    }
}

/// Records a run started by hand (`chiso run`, `chiso backfill`) in its job's history, beside
/// the daemon's fires: one `finished` line, appended whole (the daemon may be appending too).
pub fn record_manual(warehouse: &Path, report: &crate::pull::RunReport) -> std::io::Result<()> {
    let started =
        chrono::Utc::now() - chrono::Duration::milliseconds((report.seconds * 1000.0) as i64);
    let planned = started
        .with_timezone(&crate::time::TZ)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false);
    let mut r = FireRecord::new(&report.job, &planned, FireEvent::Finished);
    r.how = Some(FireHow::Manual);
    r.run_ids = vec![report.run_id.clone()];
    r.outcome = Some(report.outcome.into());
    r.attempts = 1;
    r.rows_landed = report.totals.rows_landed;
    r.seconds = Some(report.seconds);
    r.error = report.error.clone();
    History::new(warehouse, &report.job).append(&[r])
}

/// The fires folder of a warehouse.
pub fn fires_dir(warehouse: &Path) -> PathBuf {
    warehouse.join("_state/_serve/fires")
}

/// A job's fire history file.
#[derive(Debug, Clone)]
pub struct History {
    path: PathBuf,
}

/// How much of a file's end `tail` reads: far more than the lines a status or a recovery needs.
const TAIL_BYTES: u64 = 256 * 1024;

impl History {
    pub fn new(warehouse: &Path, job: &str) -> History {
        History {
            path: fires_dir(warehouse).join(format!("{job}.jsonl")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lock an append and a compaction take (`<job>.jsonl.lock`), so that a compaction
    /// (which rewrites the file) never drops a line appended meanwhile by another process.
    /// Each holds it only for a few writes: an append for its line, a compaction to copy what
    /// was appended since it read the file and to rename.
    fn lock_path(&self) -> PathBuf {
        self.path.with_extension("jsonl.lock")
    }

    /// A compaction's try at the lock: one that finds it held for `wait` gives up until next
    /// time.
    fn lock(&self, wait: std::time::Duration) -> std::io::Result<Option<crate::fs::FileLock>> {
        match crate::fs::FileLock::acquire_within(&self.lock_path(), wait) {
            Ok(l) => Ok(Some(l)),
            Err(crate::fs::LockError::Busy(_)) => Ok(None),
            Err(crate::fs::LockError::Io { source, .. }) => Err(source),
        }
    }

    /// Appends records and fsyncs them (a claim must be on disk before its run starts). An
    /// error names the file.
    pub fn append(&self, records: &[FireRecord]) -> std::io::Result<()> {
        self.append_unnamed(records).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("appending to the fire history {}: {e}", self.path.display()),
            )
        })
    }

    fn append_unnamed(&self, records: &[FireRecord]) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            crate::fs::create_dir_durably(dir)?;
        }
        // An append waits its turn in the kernel's queue. (Before, it polled for 5 s and then
        // appended without the lock: a compaction retaking the lock again and again on a loaded
        // disk starved it, and the line went to the file the compaction then renamed over.)
        let _lock =
            crate::fs::FileLock::acquire_waiting(&self.lock_path()).map_err(|e| match e {
                crate::fs::LockError::Io { source, .. } => source,
                busy => std::io::Error::other(busy.to_string()),
            })?;
        let mut f = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)?;
        let mut text = String::new();
        // A line torn by a kill mid-write is ended first, so that the next one stands alone.
        let len = f.metadata()?.len();
        if len > 0 {
            f.seek(SeekFrom::Start(len - 1))?;
            let mut last = [0u8; 1];
            f.read_exact(&mut last)?;
            if last[0] != b'\n' {
                text.push('\n');
            }
        }
        for r in records {
            text.push_str(&serde_json::to_string(r).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        // Appended at the end whatever the position the read left (O_APPEND).
        f.write_all(text.as_bytes())?;
        f.sync_data()
    }

    /// The newest records (those in the file's last 256 KiB), oldest first. The bytes are cut
    /// at newlines and each line decoded on its own, leniently: the tail may begin inside a
    /// character, and a kill may tear a line anywhere (even inside a character); such lines
    /// are skipped, never the whole history.
    pub fn tail(&self) -> std::io::Result<Vec<FireRecord>> {
        self.tail_until(|_| false)
    }

    /// The newest records, oldest first: the file's last 4 KiB, then 16 and 64 KiB, up to the
    /// last 256 KiB as [`Self::tail`] reads, until `enough` accepts what was read. What a status or
    /// a start reads then does not grow with the history kept (a day of a five-minute job's
    /// fires is some 150 KB).
    pub fn tail_until(
        &self,
        enough: impl Fn(&[FireRecord]) -> bool,
    ) -> std::io::Result<Vec<FireRecord>> {
        let mut f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        let mut window = 4 * 1024;
        loop {
            let window_now = window.min(TAIL_BYTES);
            let start = len.saturating_sub(window_now);
            f.seek(SeekFrom::Start(start))?;
            let mut bytes = Vec::new();
            (&mut f).take(window_now).read_to_end(&mut bytes)?;
            let mut lines = bytes.split(|b| *b == b'\n');
            if start > 0 {
                lines.next(); // most likely cut
            }
            let records: Vec<FireRecord> = lines.filter_map(parse_line).collect();
            if start == 0 || window_now == TAIL_BYTES || enough(&records) {
                return Ok(records);
            }
            window *= 4;
        }
    }

    /// The newest planned time the job has a record of (claimed, skipped or otherwise): fires
    /// up to it are spoken for. A `changed` line speaks for the times before it (they passed
    /// while the job was paused, or under its old schedule).
    pub fn last_planned(&self) -> std::io::Result<Option<String>> {
        Ok(self
            .tail_until(|rs| rs.iter().any(|r| r.how != Some(FireHow::Manual)))?
            .into_iter()
            .filter(|r| r.how != Some(FireHow::Manual))
            .map(|r| r.planned)
            .max_by(|a, b| by_time(a, b)))
    }

    /// A final publish job's periods not published yet, as its history says: each fire that
    /// ended replaces the periods it tried by the ones it left owed; a fire skipped while the
    /// job ran adds its own.
    pub fn owed(&self) -> std::io::Result<Vec<String>> {
        Ok(owed_after(&self.tail()?))
    }

    /// Claims that never ended (the daemon died): closes each with an `interrupted` line and
    /// returns them. A job runs its fires one at a time and in order, so the claims still
    /// open are the newest `max_open` claim lines at most (the running fire's and its queue's:
    /// a queued fire's second claim, when it starts, is the newest of its two): the file is
    /// read back to one claim line more than that, or to the newest claim when its run
    /// finished, not through the whole tail.
    pub fn close_interrupted(&self, max_open: usize) -> std::io::Result<Vec<FireRecord>> {
        let tail = self.tail_until(|rs| {
            let claims: Vec<&FireRecord> = rs
                .iter()
                .filter(|r| r.event == FireEvent::Claimed && r.how != Some(FireHow::Manual))
                .collect();
            let Some(newest) = claims.last() else {
                return false;
            };
            // The newest claim's run finished: it ran after every claim before it ended (an
            // `interrupted` line does not say as much: a stop closes the queue's claims while
            // the running fire goes on through the grace).
            let newest_finished = rs
                .iter()
                .any(|r| r.planned == newest.planned && r.event == FireEvent::Finished);
            newest_finished || claims.len() > max_open
        })?;
        let mut open: Vec<&FireRecord> = Vec::new();
        for r in &tail {
            match r.event {
                // A queued fire's second claim, when it started, replaces its first.
                FireEvent::Claimed => {
                    open.retain(|c| c.planned != r.planned);
                    open.push(r)
                }
                FireEvent::Finished | FireEvent::Interrupted => {
                    open.retain(|c| c.planned != r.planned)
                }
                _ => {}
            }
        }
        let closed: Vec<FireRecord> = open
            .into_iter()
            .map(|c| {
                let mut r = FireRecord::new(&c.job, &c.planned, FireEvent::Interrupted);
                r.how = c.how;
                r.periods = c.periods.clone();
                r.owed = c.periods.clone();
                r.error = Some("the daemon stopped before the run ended".into());
                r
            })
            .collect();
        self.append(&closed)?;
        Ok(closed)
    }

    /// Drops lines recorded before `keep_after` (RFC 3339), keeping at least the newest line.
    /// Returns how many were dropped.
    pub fn compact(&self, keep_after: &str) -> std::io::Result<usize> {
        if !self.path.exists() {
            return Ok(0);
        }
        // Read and rewritten without the lock; then, under it, what was appended since the read
        // is copied to the new file before it is renamed over the old: nothing appended
        // meanwhile is lost, and appenders wait only for that copy.
        let mut bytes = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        // Whole lines only: an append may be writing the last one as this reads (appends take
        // the lock, this read does not); what follows the last newline is copied with what
        // comes after, under the lock.
        bytes.truncate(bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1));
        let lines: Vec<&[u8]> = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let keep: Vec<&[u8]> = lines
            .iter()
            .enumerate()
            .filter(|(i, l)| {
                *i + 1 == lines.len()
                    || parse_line(l).is_some_and(|r| by_time(&r.at, keep_after).is_ge())
            })
            .map(|(_, l)| *l)
            .collect();
        let dropped = lines.len() - keep.len();
        if dropped > 0 {
            let mut body = keep.join(&b'\n');
            body.push(b'\n');
            let tmp = self.path.with_extension("jsonl.tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            let Some(_lock) = self.lock(std::time::Duration::from_secs(30))? else {
                // Appenders kept it for 30 s: leave the file as it is, try next time.
                drop(f);
                std::fs::remove_file(&tmp)?;
                return Ok(0);
            };
            let mut now = std::fs::File::open(&self.path)?;
            now.seek(SeekFrom::Start(bytes.len() as u64))?;
            let mut since = Vec::new();
            now.read_to_end(&mut since)?;
            f.write_all(&since)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            crate::fs::sync_dir(self.path.parent().unwrap_or(Path::new(".")))?;
        }
        Ok(dropped)
    }
}

/// One line of a history file, decoded leniently (a torn or cut line is not a record).
fn parse_line(line: &[u8]) -> Option<FireRecord> {
    serde_json::from_str(&String::from_utf8_lossy(line)).ok()
}

/// Orders RFC 3339 times by the instant they name (strings of one zone also sort as text, but
/// a record written with another offset must not confuse the order).
/// The periods owed after `records` (oldest first); see [`History::owed`].
pub fn owed_after(records: &[FireRecord]) -> Vec<String> {
    let mut owed = std::collections::BTreeSet::new();
    for r in records {
        match r.event {
            FireEvent::Finished | FireEvent::Interrupted => {
                for p in &r.periods {
                    owed.remove(p);
                }
                owed.extend(r.owed.iter().cloned());
            }
            FireEvent::SkippedOverlap | FireEvent::SkippedMisfire => {
                owed.extend(r.owed.iter().cloned())
            }
            FireEvent::Claimed | FireEvent::Changed => {}
        }
    }
    owed.into_iter().collect()
}

pub fn by_time(a: &str, b: &str) -> std::cmp::Ordering {
    match (
        chrono::DateTime::parse_from_rfc3339(a),
        chrono::DateTime::parse_from_rfc3339(b),
    ) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Typed outcomes are written as the strings they were before, and a line with one this
    /// version does not know is still read (a lost line would reopen a claim).
    #[test]
    fn outcomes_read_and_write_as_before() {
        let line = |o: &str| {
            format!(
                r#"{{"job":"j","planned":"2026-12-01T08:00:00+07:00","event":"finished","at":"2026-12-01T08:00:01.000+07:00","outcome":"{o}"}}"#
            )
        };
        for (text, o) in [
            ("ok", FireOutcome::Ok),
            ("timed_out", FireOutcome::TimedOut),
            ("push_pending", FireOutcome::PushPending),
            ("stuck", FireOutcome::Stuck),
            ("from_a_newer_version", FireOutcome::Unknown),
        ] {
            let r = parse_line(line(text).as_bytes()).expect(text);
            assert_eq!(r.outcome, Some(o), "{text}");
            if o != FireOutcome::Unknown {
                let back = serde_json::to_string(&r).unwrap();
                assert!(back.contains(&format!(r#""outcome":"{text}""#)), "{back}");
                assert_eq!(o.as_str(), text);
            }
        }
    }

    /// A long history ending with a running fire and a queue of three, with a finished fire
    /// interleaved: the four open claims are found and closed, whatever the queue's room, and
    /// a start reads the end of the file only (a fire ended after the claims before it).
    #[test]
    fn the_open_claims_are_the_newest_and_are_found_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::new(dir.path(), "dossiers");
        let at = |i: u32| format!("2026-12-02T{:02}:{:02}:00+07:00", 8 + i / 60, i % 60);
        let mut lines = Vec::new();
        for i in 0..600 {
            lines.push(FireRecord::new("dossiers", &at(i), FireEvent::Claimed));
            lines.push(FireRecord::new("dossiers", &at(i), FireEvent::Finished));
        }
        h.append(&lines).unwrap();
        assert!(std::fs::metadata(h.path()).unwrap().len() > 64 * 1024);
        // Nothing open: nothing closed.
        assert!(h.close_interrupted(10).unwrap().is_empty());
        h.append(&[
            FireRecord::new("dossiers", &at(600), FireEvent::Claimed),
            FireRecord::new("dossiers", &at(601), FireEvent::Claimed),
            FireRecord::new("dossiers", &at(602), FireEvent::Claimed),
            FireRecord::new("dossiers", &at(603), FireEvent::Claimed),
        ])
        .unwrap();
        let closed = h.close_interrupted(10).unwrap();
        let planned: Vec<String> = closed.iter().map(|c| c.planned.clone()).collect();
        assert_eq!(planned, [at(600), at(601), at(602), at(603)]);
        assert!(h.close_interrupted(10).unwrap().is_empty(), "closed once");
        // Killed in a stop's grace: the queue's ten claims closed `interrupted` (and skip
        // lines after them), the running fire's claim, older, still open. Its second claim
        // (it had waited in the queue) is the one closed, once.
        let mut lines = vec![FireRecord::new("dossiers", &at(700), FireEvent::Claimed)];
        for i in 701..711 {
            lines.push(FireRecord::new("dossiers", &at(i), FireEvent::Claimed));
        }
        lines.push(FireRecord::new("dossiers", &at(700), FireEvent::Claimed));
        for i in 711..720 {
            lines.push(FireRecord::new(
                "dossiers",
                &at(i),
                FireEvent::SkippedOverlap,
            ));
        }
        for i in 701..711 {
            lines.push(FireRecord::new("dossiers", &at(i), FireEvent::Interrupted));
        }
        h.append(&lines).unwrap();
        let closed = h.close_interrupted(11).unwrap();
        let planned: Vec<String> = closed.iter().map(|c| c.planned.clone()).collect();
        assert_eq!(planned, [at(700)]);
    }

    #[test]
    fn claims_are_closed_once_and_the_tail_survives_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::new(dir.path(), "dossiers");
        let p1 = "2026-12-02T08:00:00+07:00";
        let p2 = "2026-12-02T08:05:00+07:00";
        h.append(&[FireRecord::new("dossiers", p1, FireEvent::Claimed)])
            .unwrap();
        h.append(&[FireRecord::new("dossiers", p1, FireEvent::Finished)])
            .unwrap();
        h.append(&[FireRecord::new("dossiers", p2, FireEvent::Claimed)])
            .unwrap();
        // a kill in the middle of a line
        std::fs::OpenOptions::new()
            .append(true)
            .open(h.path())
            .unwrap()
            .write_all(b"{\"job\":\"dossiers\",\"plan")
            .unwrap();
        assert_eq!(h.last_planned().unwrap().as_deref(), Some(p2));
        // A run by hand, later than every fire, is in the history but speaks for no fire.
        let mut manual = FireRecord::new(
            "dossiers",
            "2026-12-02T09:00:00.500+07:00",
            FireEvent::Finished,
        );
        manual.how = Some(FireHow::Manual);
        h.append(&[manual]).unwrap();
        assert_eq!(h.last_planned().unwrap().as_deref(), Some(p2));
        let closed = h.close_interrupted(10).unwrap();
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].planned, p2);
        assert!(h.close_interrupted(10).unwrap().is_empty(), "closed once");
        let events: Vec<FireEvent> = h.tail().unwrap().iter().map(|r| r.event).collect();
        assert_eq!(
            events,
            [
                FireEvent::Claimed,
                FireEvent::Finished,
                FireEvent::Claimed,
                FireEvent::Finished,
                FireEvent::Interrupted
            ]
        );
        // Retention: everything is older than a time far ahead (the torn line goes too), but
        // the newest line stays.
        assert_eq!(h.compact("2099-01-01T00:00:00+07:00").unwrap(), 5);
        assert_eq!(h.tail().unwrap().len(), 1);
        assert_eq!(h.last_planned().unwrap().as_deref(), Some(p2));
    }

    fn record(planned: &str, error: &str) -> FireRecord {
        let mut r = FireRecord::new("dossiers", planned, FireEvent::Finished);
        r.error = Some(error.to_string());
        r
    }

    /// The tail's 256 KiB may begin inside a Vietnamese character, and a kill may tear a line
    /// inside one: both are read (before: the strict UTF-8 decode of the tail failed, `serve`
    /// could not start, and a `Restart=on-failure` unit looped).
    #[test]
    fn a_tail_cut_inside_a_character_and_a_line_torn_inside_one_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::new(dir.path(), "dossiers");
        // A long line of three-byte characters, then short lines; the last one's padding is
        // chosen so that the tail starts on a continuation byte of the long line.
        let long = record("2026-12-01T08:00:00+07:00", &"ệ".repeat(120_000));
        let mut pad = 0;
        loop {
            std::fs::remove_file(h.path()).ok();
            h.append(std::slice::from_ref(&long)).unwrap();
            for i in 0..100 {
                let planned = format!("2026-12-02T08:{:02}:00+07:00", i % 60);
                let tail = if i == 99 {
                    "x".repeat(pad)
                } else {
                    String::new()
                };
                h.append(&[record(&planned, &format!("lỗi kết nối {tail}"))])
                    .unwrap();
            }
            let bytes = std::fs::read(h.path()).unwrap();
            let start = bytes.len() - TAIL_BYTES as usize;
            if (0x80..0xC0).contains(&bytes[start]) {
                break;
            }
            pad += 1;
        }
        assert_eq!(h.tail().unwrap().len(), 100);
        // A kill inside "ệ" (its first two bytes of three), then the daemon appends again.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(h.path())
            .unwrap();
        f.write_all(b"{\"job\":\"dossiers\",\"error\":\"l\xe1\xbb")
            .unwrap();
        drop(f);
        let later = "2026-12-03T08:00:00+07:00";
        h.append(&[record(later, "lỗi")]).unwrap();
        let tail = h.tail().unwrap();
        assert_eq!(tail.len(), 101);
        assert_eq!(h.last_planned().unwrap().as_deref(), Some(later));
        // Retention reads the same bytes.
        assert!(h.compact("2026-01-01T00:00:00+07:00").is_ok());
        assert_eq!(h.tail().unwrap().len(), 101);
    }

    /// Retention while lines are appended (the daemon compacts; `chiso run` appends by hand):
    /// no line appended meanwhile is lost (before: the compaction read the file, wrote the
    /// lines it kept to a new one and renamed it over the old, dropping what came between).
    #[test]
    fn retention_never_loses_a_line_appended_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::new(dir.path(), "dossiers");
        let n = 400;
        let writer = {
            let h = h.clone();
            std::thread::spawn(move || {
                for i in 0..n {
                    let planned = format!("2026-12-02T08:00:{:02}.{i:03}+07:00", i % 60);
                    h.append(&[record(&planned, "appended")]).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            })
        };
        // Each compaction drops one old line (so it rewrites the file) and keeps the rest.
        let mut old = record("2001-01-01T08:00:00+07:00", "old");
        old.at = "2001-01-01T08:00:00.000+07:00".into();
        let mut compactions = 0;
        while !writer.is_finished() {
            h.append(&[old.clone()]).unwrap();
            compactions += h.compact("2002-01-01T00:00:00+07:00").unwrap();
        }
        writer.join().unwrap();
        assert!(compactions >= 5, "{compactions} compactions");
        let appended = h
            .tail()
            .unwrap()
            .iter()
            .filter(|r| r.error.as_deref() == Some("appended"))
            .count();
        assert_eq!(appended, n);
    }
}
