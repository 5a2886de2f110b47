//! Publication: `chiso publish PERIOD [--provisional]` freezes a period's index as a revision
//! in the ledger (`warehouse/publications.duckdb`, [`crate::ledger`]), writes its files under
//! `warehouse/exports/<period>/rev-<N>/`, and sends final revisions to the portals.
//!
//! - A period whose numbers equal its latest revision gets no new revision and sends nothing.
//! - A final revision is never changed: when late data or a methodology change moves a final
//!   period, the warehouse's `pub_revision_pending` (and `chiso status`) say so, and the next
//!   publish of the period writes revision N+1 with a change note.
//! - The guard ([`guard`]) runs before anything is written or sent: personal data blocks every
//!   publication; warnings block a final one unless accepted.
//! - A provisional revision is a preview: written like any other, never sent.
//!
//! Steps: [`revision`] (compare, change note, record), [`guard`], [`rows`] (a revision read
//! back), [`export`] and [`report`] (the files), [`push`] (the portals).

pub mod chance;
pub mod export;
pub mod guard;
pub mod push;
pub mod report;
pub mod revision;
pub mod rows;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{Datelike, NaiveDate};
use serde::Serialize;

use crate::config::{JobConfig, PeriodChoice, PublishConfig};
use crate::duck;
use crate::fs::FileLock;
use crate::ledger;
use crate::models::build::published_path;

pub use push::PushOutcome;
pub use revision::ChangeNote;

#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// A preview: recorded and written, marked provisional, never sent; warnings do not block.
    pub provisional: bool,
    /// Accepts the guard's warnings for a final revision, with the reason (recorded).
    pub accept: Option<String>,
    /// A note kept with the revision.
    pub note: Option<String>,
    /// Send the final revisions still pending to the targets (a provisional revision never is).
    pub push: bool,
    /// Revise a final period closed to routine revisions (`[publish] revision_policy`): the
    /// correction of an error, with its reason (recorded; reason code `correction`).
    pub correction: Option<String>,
}

/// A publication the rules held back, not an error of chiso's or of a portal's: the period is
/// not final yet, or the guard's warnings were not accepted. `chiso publish` exits 4 on it.
#[derive(Debug)]
pub struct Held {
    /// Why, for a person.
    pub text: String,
    /// The periods held back (the others asked for were recorded and sent).
    pub periods: Vec<String>,
    /// Why, for a program: every reason the periods were held for.
    pub reasons: Vec<HeldFor>,
}

/// Why a period was held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldFor {
    /// Not final yet: a feed's data has not passed the period's end plus the grace.
    NotFinal,
    /// The guard's warnings, not accepted.
    Guard,
    /// Closed to routine revisions by the revision policy: a correction is needed.
    Closed,
    /// The methodology version a final revision used was changed in place.
    MethodologyChanged,
}

impl Held {
    pub(crate) fn one(period: &str, why: HeldFor, text: String) -> Held {
        Held {
            text,
            periods: vec![period.to_string()],
            reasons: vec![why],
        }
    }
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Held {}

/// What became of one period.
#[derive(Debug, Clone, Serialize)]
pub struct PeriodOutcome {
    pub period: String,
    /// The revision that now stands for the period.
    pub revision: i64,
    pub status: String,
    /// A new revision was recorded (false: the numbers equal the latest revision).
    pub created: bool,
    pub folder: PathBuf,
    pub change_note: Option<ChangeNote>,
    pub warnings: Vec<guard::Warning>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PublishReport {
    pub periods: Vec<PeriodOutcome>,
    pub pushes: Vec<PushOutcome>,
}

impl PublishReport {
    /// Pushes still pending after this publish.
    pub fn pending_pushes(&self) -> usize {
        self.pushes.iter().filter(|p| !p.acknowledged).count()
    }
}

/// Checks a period name: `2026-10`, `2026-Q4` or `2026`.
pub fn parse_period(s: &str) -> anyhow::Result<String> {
    crate::config::publish::parse_period(s).map_err(anyhow::Error::msg)
}

impl PublishOptions {
    /// What a publish job (`kind = "publish"`) asks for, by `chiso run` or `chiso serve`.
    pub fn for_job(job: &crate::config::PublishJobConfig) -> PublishOptions {
        PublishOptions {
            provisional: job.provisional,
            accept: None,
            note: Some(format!("publish job {}", job.name)),
            push: job.push,
            // A job never corrects a closed period: that takes a person and a reason.
            correction: None,
        }
    }
}

/// The period a publish job means on `today` (project time zone).
pub fn choose_period(choice: &PeriodChoice, today: NaiveDate) -> String {
    let (y, m) = (today.year(), today.month());
    let q = (m - 1) / 3 + 1;
    match choice {
        PeriodChoice::CurrentMonth => format!("{y}-{m:02}"),
        PeriodChoice::PreviousMonth if m == 1 => format!("{}-12", y - 1),
        PeriodChoice::PreviousMonth => format!("{y}-{:02}", m - 1),
        PeriodChoice::CurrentQuarter => format!("{y}-Q{q}"),
        PeriodChoice::PreviousQuarter if q == 1 => format!("{}-Q4", y - 1),
        PeriodChoice::PreviousQuarter => format!("{y}-Q{}", q - 1),
        PeriodChoice::CurrentYear => format!("{y}"),
        PeriodChoice::PreviousYear => format!("{}", y - 1),
        PeriodChoice::Fixed(p) => p.clone(),
    }
}

/// Publishes `periods` from the published warehouse, then sends what is pending (unless a
/// preview). One publish at a time per warehouse.
pub async fn publish(
    warehouse: &Path,
    jobs: &[JobConfig],
    cfg: &PublishConfig,
    periods: &[String],
    opts: &PublishOptions,
) -> anyhow::Result<PublishReport> {
    // A target whose URL is missing from the environment is a configuration error, before
    // anything is recorded (never a push to the demo's loopback default).
    crate::config::ensure_urls_set(&[], &cfg.targets, opts.push)?;
    let _lock = lock(warehouse).await?;
    let outcomes = {
        let (w, j, c, p, o) = (
            warehouse.to_path_buf(),
            jobs.to_vec(),
            cfg.clone(),
            periods.to_vec(),
            opts.clone(),
        );
        tokio::task::spawn_blocking(move || record_periods(&w, &j, &c, &p, &o)).await?
    };
    // Pending pushes are of final revisions only (a provisional one has no receipts), so a
    // scheduled preview also sends what an earlier final publication left pending, even when
    // recording its own period failed.
    let outcomes = match outcomes {
        Ok(o) => o,
        Err(e) if opts.push => {
            let sent = push::push_pending(warehouse, &cfg.targets).await;
            return Err(match sent {
                Ok(p) => {
                    let pending = p.iter().filter(|p| !p.acknowledged).count();
                    e.context(format!(
                        "nothing was recorded; the pending pushes were sent ({} acknowledged, {pending} still pending)",
                        p.len() - pending
                    ))
                }
                Err(p) => e.context(format!(
                    "nothing was recorded, and sending the pending pushes failed too: {p:#}"
                )),
            });
        }
        Err(e) => return Err(e),
    };
    let (outcomes, held) = outcomes;
    let pushes = if opts.push {
        push::push_pending(warehouse, &cfg.targets).await?
    } else {
        Vec::new()
    };
    // A period held back does not hold the others: they are recorded and sent, then the hold
    // is the answer (exit 4), saying what was recorded meanwhile.
    if !held.is_empty() {
        let mut reasons: Vec<HeldFor> = Vec::new();
        let mut periods = Vec::new();
        let mut texts = Vec::new();
        for (period, text, why) in held {
            periods.push(period);
            texts.push(text);
            for w in why {
                if !reasons.contains(&w) {
                    reasons.push(w);
                }
            }
        }
        let mut text = texts.join("\n");
        let recorded: Vec<String> = outcomes
            .iter()
            .filter(|o| o.created)
            .map(|o| format!("{} revision {} ({})", o.period, o.revision, o.status))
            .collect();
        if !recorded.is_empty() {
            text.push_str(&format!("\nRecorded meanwhile: {}.", recorded.join(", ")));
        }
        let pending = pushes.iter().filter(|p| !p.acknowledged).count();
        if pending > 0 {
            text.push_str(&format!("\n{pending} push(es) still pending."));
        }
        return Err(Held {
            text,
            periods,
            reasons,
        }
        .into());
    }
    Ok(PublishReport {
        periods: outcomes,
        pushes,
    })
}

/// How long a publish waits for the one running on the same warehouse (two scheduled publish
/// jobs planned for the same minute, a publisher's `chiso publish` during the daemon's preview).
pub const LOCK_WAIT: Duration = Duration::from_secs(600);

/// One publish at a time per warehouse: takes the publish lock, waiting up to [`LOCK_WAIT`] for
/// a publish that holds it.
async fn lock(warehouse: &Path) -> anyhow::Result<FileLock> {
    use crate::fs::LockError;
    // Busy only after the wait; any other error is the lock file's own (its folder, its disk).
    let explained = |e: LockError| {
        let why = match &e {
            LockError::Busy(_) => format!(
                "another chiso publish has been running on this warehouse for over {} s",
                LOCK_WAIT.as_secs()
            ),
            LockError::Io { .. } => "taking the publish lock".to_string(),
        };
        anyhow::Error::from(e).context(why)
    };
    let path = warehouse.join("_state/_publish/lock");
    match FileLock::acquire(&path) {
        Ok(held) => return Ok(held),
        Err(LockError::Busy(_)) => {}
        Err(e) => return Err(explained(e)),
    }
    tracing::info!(lock = %path.display(), "Another publish is running on this warehouse; waiting for it.");
    tokio::task::spawn_blocking(move || FileLock::acquire_within(&path, LOCK_WAIT))
        .await?
        .map_err(explained)
}

/// What `record_periods` did: the periods recorded (or found unchanged), and those held back
/// with why.
type Recorded = (Vec<PeriodOutcome>, Vec<(String, String, Vec<HeldFor>)>);

fn record_periods(
    warehouse: &Path,
    jobs: &[JobConfig],
    cfg: &PublishConfig,
    periods: &[String],
    opts: &PublishOptions,
) -> anyhow::Result<Recorded> {
    let published = published_path(warehouse);
    if !published.exists() {
        bail!(
            "{} does not exist: build the warehouse first (chiso build)",
            published.display()
        );
    }
    let conn = ledger::open(warehouse, Duration::from_secs(30))?;
    conn.execute_batch(&format!(
        "ATTACH {} AS wh (READ_ONLY);",
        duck::lit(&published.display().to_string())
    ))
    .with_context(|| format!("opening {}", published.display()))?;
    let duckdb_version: String = conn.query_row("SELECT version()", [], |r| r.get(0))?;
    let mut out = Vec::new();
    let mut held = Vec::new();
    for period in periods {
        match record_period(&conn, warehouse, jobs, cfg, period, opts, &duckdb_version) {
            Ok(o) => out.push(o),
            Err(e) if e.downcast_ref::<Held>().is_some() => {
                let reasons = e.downcast_ref::<Held>().map(|h| h.reasons.clone());
                held.push((
                    period.clone(),
                    format!("{e:#}"),
                    reasons.unwrap_or_default(),
                ))
            }
            Err(e) => return Err(e),
        }
    }
    // Folders a crash left unwritten (the ledger is written first).
    let mut stmt = conn.prepare(
        "SELECT period, revision, strftime(created_at, '%Y-%m-%dT%H:%M:%S+07:00') FROM pub_revisions ORDER BY 1, 2",
    )?;
    let all: Vec<(String, i64, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut previews: std::collections::BTreeMap<String, Option<PathBuf>> = Default::default();
    for (period, rev, created_at) in all {
        let folder = export::folder(warehouse, &period, rev, &created_at);
        if !folder.join("manifest.json").exists() {
            let r = export::Revision::load(&conn, &period, rev)?;
            export::ensure(warehouse, &r, &duckdb_version)?;
        }
        let keep = previews.entry(period).or_default();
        if rev == revision::PREVIEW {
            *keep = Some(folder);
        }
    }
    // Preview folders the ledger no longer holds (a crash between a commit and the pruning).
    for (period, keep) in previews {
        if let Err(e) = export::prune_previews(warehouse, &period, keep.as_deref()) {
            tracing::warn!(period, error = %format!("{e:#}"), "An older preview's folder could not be removed; the next publish tries again.");
        }
    }
    Ok((out, held))
}

fn record_period(
    conn: &duck::Connection,
    warehouse: &Path,
    jobs: &[JobConfig],
    cfg: &PublishConfig,
    period: &str,
    opts: &PublishOptions,
    duckdb_version: &str,
) -> anyhow::Result<PeriodOutcome> {
    let basis = revision::basis(conn, period)?;
    let status = if opts.provisional {
        "provisional"
    } else {
        "final"
    };
    if !opts.provisional && basis.mart_status != "final" {
        let waiting: String = conn
            .query_row(
                "SELECT array_to_string(feeds_waiting, ', ') FROM wh.int_period_judgement WHERE period = ?",
                [period],
                |r| r.get(0),
            )
            .unwrap_or_default();
        return Err(Held::one(
            period,
            HeldFor::NotFinal,
            format!(
            "{period} is still provisional: not every feed's data has passed the period's end plus the grace days (waiting for: {}); `chiso publish {period} --provisional` writes a preview",
            if waiting.is_empty() { "the next build" } else { waiting.as_str() }
        ),
        )
        .into());
    }
    // Finals are compared with the latest final, a preview with the period's preview.
    let latest_final = revision::latest(conn, period, "final")?;
    if opts.provisional {
        if let Some(l) = &latest_final {
            bail!(
                "{period} is published final (revision {}); a provisional preview would not replace it: publish it without --provisional to record a correction",
                l.revision
            );
        }
    }
    let latest = if opts.provisional {
        revision::latest(conn, period, "provisional")?
    } else {
        latest_final
    };
    if let Some(l) = &latest {
        if revision::equals(conn, period, l.revision, opts.correction.is_some())? {
            tracing::info!(
                period,
                revision = l.revision,
                status = l.status,
                "Unchanged since its latest revision (or preview): nothing new recorded."
            );
            let meta = export::Revision::load(conn, period, l.revision)?.meta;
            return Ok(PeriodOutcome {
                period: period.to_string(),
                revision: l.revision,
                status: l.status.clone(),
                created: false,
                folder: export::folder_of(warehouse, &meta),
                change_note: None,
                warnings: Vec::new(),
            });
        }
    }
    if !opts.provisional {
        revision::check_methodology_unchanged(conn, &basis)?;
        // A period past its revision window is revised only as an explicit correction.
        if let Some(l) = &latest {
            if let Some(until) = revision::closed_since(conn, period, cfg.revision_policy)? {
                if opts.correction.is_none() {
                    return Err(Held::one(
                        period,
                        HeldFor::Closed,
                        format!(
                            "{period} moved since final revision {}, but it is closed to routine revisions since {until} (revision_policy: open for a while after its revision 1); `chiso publish {period} --correction \"reason\"` records revision {} as the correction of an error",
                            l.revision,
                            l.revision + 1
                        ),
                    )
                    .into());
                }
            }
        }
    }
    guard::personal_data(conn, warehouse, jobs, period)?;
    let warnings = guard::warnings(conn, warehouse, jobs, cfg, &basis)?;
    if status == "final" && warnings.iter().any(|w| w.blocking) && opts.accept.is_none() {
        let list: Vec<String> = warnings
            .iter()
            .filter(|w| w.blocking)
            .map(|w| format!("- {}", w.line()))
            .collect();
        return Err(Held::one(
            period,
            HeldFor::Guard,
            format!(
            "{period} was not published: the guard warns\n{}\nCheck them, then publish with --accept \"reason\" (recorded with the revision), or publish a preview with --provisional.",
            list.join("\n")
        ),
        )
        .into());
    }
    // A final's change note is against the previous final; a preview has none.
    let change = latest
        .as_ref()
        .filter(|_| status == "final")
        .map(|l| {
            revision::change_note(conn, &basis, l, status).map(|mut c| {
                if let Some(why) = &opts.correction {
                    c.reason_codes.insert(0, "correction".into());
                    c.reason_codes.sort();
                    c.reasons
                        .insert(0, format!("correction of an error: {why}"));
                }
                c
            })
        })
        .transpose()?;
    if let Some(c) = &change {
        guard::check_text(conn, warehouse, jobs, "the change note", &c.text())?;
    }
    for (what, text) in [
        ("the --accept reason", opts.accept.as_deref()),
        ("the --note", opts.note.as_deref()),
        ("the --correction reason", opts.correction.as_deref()),
    ] {
        if let Some(t) = text {
            guard::check_text(conn, warehouse, jobs, what, t)?;
        }
    }
    let number = if opts.provisional {
        revision::PREVIEW
    } else {
        latest.as_ref().map_or(1, |l| l.revision + 1)
    };
    let dropped = revision::record(
        conn,
        &revision::NewRevision {
            basis: &basis,
            revision: number,
            status,
            previous: latest
                .as_ref()
                .filter(|_| status == "final")
                .map(|l| l.revision),
            note: opts.note.as_deref(),
            change: change.as_ref(),
            warnings: &warnings,
            accepted: opts.accept.as_deref(),
            targets: &cfg.targets,
            policy: cfg.revision_policy,
            correction: opts.correction.as_deref(),
        },
    )?;
    tracing::info!(period, revision = number, status, "Revision recorded.");
    // Folders of provisional revisions an older chiso numbered among the finals go with their
    // rows; a folder already under this revision's name is another's (such a preview, or a
    // preview made the same second) and is replaced.
    let rev = export::Revision::load(conn, period, number)?;
    let dir = export::folder_of(warehouse, &rev.meta);
    for old in dropped
        .iter()
        .map(|n| export::revision_dir(warehouse, period, *n))
        .chain([dir.clone()])
    {
        if old.exists() {
            std::fs::remove_dir_all(&old).with_context(|| {
                format!("removing {}, written for another revision", old.display())
            })?;
        }
    }
    let folder = export::ensure(warehouse, &rev, duckdb_version)?;
    // The older preview's files go with it (all of them once the period is final).
    if let Err(e) = export::prune_previews(
        warehouse,
        period,
        (number == revision::PREVIEW).then_some(folder.as_path()),
    ) {
        tracing::warn!(period, error = %format!("{e:#}"), "An older preview's folder could not be removed; the next publish tries again.");
    }
    Ok(PeriodOutcome {
        period: period.to_string(),
        revision: number,
        status: status.to_string(),
        created: true,
        folder,
        change_note: change,
        warnings,
    })
}
