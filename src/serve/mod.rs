//! `chiso serve`: the daemon. It fires every enabled pull job on its cron schedule, builds the
//! warehouse after pulls that landed rows (debounced), runs the publish jobs
//! ([`publishing`]), and answers `/health`, `/status` and
//! `/metrics` over HTTP, until SIGTERM or SIGINT.
//!
//! One loop owns the state: which job runs, its queue, the build's debounce. Everything else
//! sends it messages: tokio-cron-scheduler's wake-ups (a hint only: the planned times are
//! computed by [`crate::schedule::planned`]), each run's end, each build's end. Each fire is a
//! line in the job's history, claimed before its run starts ([`crate::schedule::history`]);
//! restarting after a kill closes the claims left open as `interrupted`, and the commit log
//! recovers the pull itself, as it does for `chiso run`.

pub mod control;
pub mod http;
pub mod metrics;
mod publishing;
pub mod report;

pub use report::Shared;

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use crate::config::{BuildJobConfig, CatchUp, JobConfig, Jobs, Overlap};
use crate::lake::commit::CommitError;
use crate::models::build::{BuildOptions, BuildSummary};
use crate::pull::{self, PullError, RunContext};
use crate::schedule::planned::local_rfc3339;
use crate::schedule::{DaemonLock, FireEvent, FireHow, FireRecord, History, Schedule};

/// What `serve` needs.
#[derive(Clone)]
pub struct ServeOptions {
    pub warehouse: PathBuf,
    /// Folder of `chiso.toml` (file globs are relative to it).
    pub project_root: PathBuf,
    pub sql_dir: PathBuf,
    pub tz: chrono_tz::Tz,
    pub jobs: Jobs,
    /// Where to answer /health, /status and /metrics (loopback unless told otherwise).
    pub http: Option<SocketAddr>,
    /// How long running runs may go on after a stop is asked for.
    pub grace: Duration,
    /// Fire history older than this is dropped at start.
    pub retention: Duration,
    pub http_client: reqwest::Client,
    /// `[publish]` of chiso.toml, for the publish jobs.
    pub publish: crate::config::PublishConfig,
    /// `CHISO_HTTP_TOKEN`: with it, `/status` and `/metrics` need `Authorization: Bearer`.
    pub http_token: Option<String>,
    /// `--http-public`: answer on a non-loopback address without a token.
    pub http_public: bool,
    /// Where the job files are and how to load them: the daemon then reloads them on SIGHUP,
    /// when they change, and on `chiso jobs reload`.
    pub job_files: Option<control::JobFiles>,
}

/// What the daemon tells whoever watches it (`chiso demo --serve` prints a line per cycle).
#[derive(Debug, Clone)]
pub enum Notice {
    Started {
        http: Option<SocketAddr>,
    },
    PullFinished {
        job: String,
        planned: String,
        outcome: String,
        rows_landed: u64,
        seconds: f64,
    },
    BuildFinished {
        planned: String,
        how: FireHow,
        outcome: String,
        seconds: f64,
        /// Pull runs that landed rows since the previous build started.
        pulls: usize,
        build: Option<BuildSummary>,
        error: Option<String>,
    },
    Stopping,
}

/// Counts over the daemon's life.
#[derive(Debug, Clone, Default)]
pub struct ServeSummary {
    pub fires: u64,
    pub runs: u64,
    pub skipped: u64,
    pub builds: u64,
    /// Runs still going when the grace ran out (recovered at the next start).
    pub cut_short: usize,
}

enum Msg {
    Wake,
    PullDone {
        slot: usize,
        record: FireRecord,
    },
    BuildDone {
        record: FireRecord,
        summary: Option<BuildSummary>,
        busy: bool,
    },
    PublishDone {
        slot: usize,
        record: FireRecord,
        created: bool,
    },
    /// `chiso jobs pause|resume|trigger|reload`, a SIGHUP, a changed job file.
    Control(
        control::Request,
        tokio::sync::oneshot::Sender<control::Reply>,
    ),
}

struct Running {
    planned: DateTime<Utc>,
    how: FireHow,
    task: AbortHandle,
    /// The attempt's own task (a pull), aborted with the fire's.
    attempt: Arc<Mutex<Option<AbortHandle>>>,
}

struct PullSlot {
    job: JobConfig,
    schedule: Schedule,
    history: History,
    /// The newest planned time spoken for (claimed, skipped or queued).
    last_planned: DateTime<Utc>,
    running: Option<Running>,
    queue: VecDeque<(DateTime<Utc>, FireHow)>,
}

struct BuildSlot {
    job: BuildJobConfig,
    schedule: Option<Schedule>,
    history: History,
    last_planned: DateTime<Utc>,
    running: Option<(DateTime<Utc>, FireHow)>,
    /// Pulls that landed rows and no build has started since: the first's and the last's time.
    first_landed: Option<Instant>,
    last_landed: Option<Instant>,
    landed_runs: usize,
    /// `landed_runs` when the running build started (reported when it ends).
    landed_runs_at_start: usize,
    /// A scheduled build found the previous one running: build once it ends.
    again: bool,
}

impl BuildSlot {
    /// Asks for a build: it starts once nothing more has asked for `quiet_period`, or
    /// `max_delay` after the first ask.
    fn ask(&mut self) {
        let now = Instant::now();
        self.first_landed.get_or_insert(now);
        self.last_landed = Some(now);
    }
}

struct Daemon {
    opts: ServeOptions,
    ctx: RunContext,
    pulls: Vec<PullSlot>,
    build: Option<BuildSlot>,
    publishes: Vec<publishing::PublishSlot>,
    tx: mpsc::UnboundedSender<Msg>,
    stop: watch::Receiver<bool>,
    notices: Option<mpsc::UnboundedSender<Notice>>,
    summary: ServeSummary,
    shared: Arc<Shared>,
    /// Jobs paused by `chiso jobs pause` (kept in `_state/_serve/paused.json`).
    paused: std::collections::BTreeSet<String>,
    /// The job files' digests as last loaded.
    loaded_digests: std::collections::BTreeMap<String, String>,
}

/// Runs the daemon until `shutdown` resolves, then stops firing, gives running runs `grace`
/// and returns. Refused when another daemon holds the warehouse.
pub async fn serve(
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
    notices: Option<mpsc::UnboundedSender<Notice>>,
) -> anyhow::Result<ServeSummary> {
    // A URL missing from the environment stops the start, naming file, line and variable.
    crate::config::ensure_urls_set(
        &opts.jobs.pulls,
        &opts.publish.targets,
        opts.jobs.publishes.iter().any(|p| p.enabled && p.push),
    )?;
    if let Some(addr) = opts.http {
        report::check_exposure(addr, opts.http_token.as_deref(), opts.http_public)?;
    }
    let lock = DaemonLock::acquire(&opts.warehouse, opts.http.map(|a| a.to_string()))?;
    let listener = match opts.http {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?,
        ),
        None => None,
    };
    let http_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
    let now = Utc::now();
    let keep_after = local_rfc3339(
        now - chrono::Duration::from_std(opts.retention).unwrap_or(chrono::Duration::days(30)),
        opts.tz,
    );
    let mut pulls = Vec::new();
    for job in opts.jobs.pulls.iter().filter(|j| j.enabled) {
        let schedule = Schedule::new(&job.schedule, opts.tz).map_err(anyhow::Error::msg)?;
        let history = History::new(&opts.warehouse, &job.name);
        let last_planned = recover_history(&history, &keep_after, now)?;
        pulls.push(PullSlot {
            job: job.clone(),
            schedule,
            history,
            last_planned,
            running: None,
            queue: VecDeque::new(),
        });
    }
    let build = match opts.jobs.builds.iter().find(|b| b.enabled) {
        None => None,
        Some(b) => {
            let history = History::new(&opts.warehouse, &b.name);
            let last_planned = recover_history(&history, &keep_after, now)?;
            Some(BuildSlot {
                job: b.clone(),
                schedule: match &b.schedule {
                    Some(s) => Some(Schedule::new(s, opts.tz).map_err(anyhow::Error::msg)?),
                    None => None,
                },
                history,
                last_planned,
                running: None,
                first_landed: None,
                last_landed: None,
                landed_runs: 0,
                landed_runs_at_start: 0,
                again: false,
            })
        }
    };
    let mut publishes = Vec::new();
    for job in opts.jobs.publishes.iter().filter(|j| j.enabled) {
        let history = History::new(&opts.warehouse, &job.name);
        let last_planned = recover_history(&history, &keep_after, now)?;
        publishes.push(publishing::PublishSlot::new(
            job.clone(),
            Schedule::new(&job.schedule, opts.tz).map_err(anyhow::Error::msg)?,
            history,
            last_planned,
            now,
        )?);
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared::new(
        opts.warehouse.clone(),
        opts.jobs.clone(),
        opts.http_token.clone(),
    ));
    let recorder = metrics::handle();
    // The HTTP answers go on through the grace (/health says 503, stopping), and end after.
    let (http_stop_tx, http_stop_rx) = watch::channel(false);
    let server = listener.map(|l| {
        let app = http::router(shared.clone(), recorder.clone());
        let mut stop = http_stop_rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(l, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        })
    });
    // tokio-cron-scheduler wakes the loop at each job's planned times (see schedule::planned
    // for why its word is not taken for which time that is).
    let mut cron = tokio_cron_scheduler::JobScheduler::new()
        .await
        .context("starting tokio-cron-scheduler")?;
    let crons: Vec<String> = pulls
        .iter()
        .map(|p| p.schedule.with_seconds())
        .chain(
            build
                .iter()
                .filter_map(|b| b.schedule.as_ref().map(|s| s.with_seconds())),
        )
        .chain(publishes.iter().map(|p| p.schedule.with_seconds()))
        .collect();
    for expr in crons {
        let tx = tx.clone();
        let job = tokio_cron_scheduler::Job::new_async_tz(expr.as_str(), opts.tz, move |_, _| {
            let tx = tx.clone();
            Box::pin(async move {
                let _ = tx.send(Msg::Wake);
            })
        })
        .with_context(|| format!("tokio-cron-scheduler refused the schedule {expr:?}"))?;
        cron.add(job)
            .await
            .context("adding a job to tokio-cron-scheduler")?;
    }
    cron.start()
        .await
        .context("starting tokio-cron-scheduler")?;
    let ctx = RunContext {
        warehouse: opts.warehouse.clone(),
        project_root: opts.project_root.clone(),
        http: opts.http_client.clone(),
    };
    let control = control::listen(&opts.warehouse, tx.clone())?;
    let files_watch = opts
        .job_files
        .clone()
        .map(|f| control::watch_files(f, tx.clone()));
    let loaded_digests = match &opts.job_files {
        Some(f) => {
            let d = control::digests(&f.dir);
            control::write_loaded(&opts.warehouse, &f.dir, d.clone(), None);
            d
        }
        None => Default::default(),
    };
    let paused = control::read_paused(&opts.warehouse);
    if !paused.is_empty() {
        tracing::warn!(jobs = ?paused, "Paused jobs (`chiso jobs resume NAME` resumes one).");
    }
    let mut d = Daemon {
        opts,
        ctx,
        pulls,
        build,
        publishes,
        tx,
        stop: stop_rx,
        notices,
        summary: ServeSummary::default(),
        shared: shared.clone(),
        paused,
        loaded_digests,
    };
    tracing::info!(
        pid = lock.holder.pid,
        jobs = d.pulls.len(),
        build = d
            .build
            .as_ref()
            .map(|b| b.job.name.as_str())
            .unwrap_or("none"),
        http = http_addr.map(|a| a.to_string()).unwrap_or_default(),
        "Daemon started."
    );
    d.notice(Notice::Started { http: http_addr });
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Freshness is watched beside the loop: collecting the status reads every job's log and
    // the warehouse, and the loop never waits on it.
    let watcher = tokio::spawn(report::watch_freshness(shared.clone()));
    let mut retention_check = Instant::now();
    tokio::pin!(shutdown);
    loop {
        // Besides the one-second tick, wake when the build's debounce ends.
        let debounce_over = d.build_deadline();
        tokio::select! {
            _ = &mut shutdown => break,
            msg = rx.recv() => if let Some(m) = msg { d.handle(m)? },
            _ = tick.tick() => {}
            _ = async {
                match debounce_over {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        shared.beat();
        d.reconcile(Utc::now())?;
        if retention_check.elapsed() >= RETENTION_EVERY {
            retention_check = Instant::now();
            d.compact_histories();
            d.compact_lake();
        }
    }
    // Stopping: no new fires; running runs get the grace.
    shared.stop();
    watcher.abort();
    control.abort();
    if let Some(w) = files_watch {
        w.abort();
    }
    let _ = std::fs::remove_file(control::socket_path(&d.opts.warehouse));
    d.notice(Notice::Stopping);
    let _ = cron.shutdown().await;
    let _ = stop_tx.send(true);
    tracing::info!(
        grace_seconds = d.opts.grace.as_secs_f64(),
        "Stopping: no new fires; waiting for running runs."
    );
    d.drop_queues()?;
    let deadline = tokio::time::Instant::now() + d.opts.grace;
    while d.busy() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(m)) => d.handle(m)?,
            Ok(None) | Err(_) => break,
        }
    }
    d.summary.cut_short = d.cut_short()?;
    let _ = http_stop_tx.send(true);
    if let Some(s) = server {
        let _ = tokio::time::timeout(Duration::from_secs(2), s).await;
    }
    tracing::info!(
        fires = d.summary.fires,
        runs = d.summary.runs,
        builds = d.summary.builds,
        cut_short = d.summary.cut_short,
        "Daemon stopped."
    );
    drop(lock);
    Ok(d.summary)
}

/// The history lines of planned times skipped as misfires, oldest first; the last carries
/// `more`, the missed times beyond those listed.
fn skipped_misfires(
    job: &str,
    times: &[DateTime<Utc>],
    tz: chrono_tz::Tz,
    more: u64,
) -> Vec<FireRecord> {
    let mut lines: Vec<FireRecord> = times
        .iter()
        .map(|t| FireRecord::new(job, &local_rfc3339(*t, tz), FireEvent::SkippedMisfire))
        .collect();
    if let Some(last) = lines.last_mut() {
        last.more = more;
    }
    lines
}

/// How long a run stopped at its timeout may take to stop before it is abandoned as stuck.
const STUCK_AFTER: Duration = Duration::from_secs(5);

/// How often a running daemon drops fire history past the retention (it does at start too).
const RETENTION_EVERY: Duration = Duration::from_secs(6 * 3600);

/// Closes the claims a killed daemon left open, drops history past the retention, and returns
/// the newest planned time the job has spoken for (now, for a job never fired).
fn recover_history(
    history: &History,
    keep_after: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<DateTime<Utc>> {
    let closed = history
        .close_interrupted()
        .with_context(|| format!("recovering {}", history.path().display()))?;
    for c in &closed {
        tracing::warn!(job = %c.job, planned = %c.planned, "A fire's run was cut short when the daemon last stopped; its pull is recovered at its next run.");
        metrics::fire(&c.job, "interrupted");
    }
    history
        .compact(keep_after)
        .with_context(|| format!("compacting {}", history.path().display()))?;
    Ok(history
        .last_planned()?
        .and_then(|p| DateTime::parse_from_rfc3339(&p).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now))
}

impl Daemon {
    /// Drops every job's fire history past the retention, off the loop (the files are small,
    /// but the loop never waits on disk). A line appended meanwhile, by the daemon or by
    /// `chiso run`, is kept: appends and compactions take the history's lock.
    fn compact_histories(&self) {
        let keep_after = local_rfc3339(
            Utc::now()
                - chrono::Duration::from_std(self.opts.retention)
                    .unwrap_or(chrono::Duration::days(30)),
            self.opts.tz,
        );
        let histories: Vec<History> = self
            .pulls
            .iter()
            .map(|p| p.history.clone())
            .chain(self.build.iter().map(|b| b.history.clone()))
            .chain(self.publishes.iter().map(|p| p.history.clone()))
            .collect();
        tokio::task::spawn_blocking(move || {
            for h in histories {
                match h.compact(&keep_after) {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(file = %h.path().display(), dropped = n, "Fire history past the retention dropped.")
                    }
                    Err(e) => {
                        tracing::warn!(file = %h.path().display(), error = %e, "The fire history could not be compacted; the next pass tries again.")
                    }
                }
            }
        });
    }

    /// Rewrites each idle pull job's small lake files older than a day (`chiso compact --all`'s
    /// defaults), off the loop, so that a year of five-minute pulls is not a hundred thousand
    /// files a build lists and a checkpoint keeps. A job whose run starts meanwhile finds its
    /// lock held and records `busy`; its next fire pulls.
    fn compact_lake(&self) {
        let idle: Vec<JobConfig> = self
            .pulls
            .iter()
            .filter(|p| p.running.is_none() && p.queue.is_empty())
            .map(|p| p.job.clone())
            .collect();
        let warehouse = self.opts.warehouse.clone();
        tokio::task::spawn_blocking(move || {
            let published = match crate::models::build::published_compactions(&warehouse) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "Lake compaction skipped: the build records could not be read; the next pass tries again.");
                    return;
                }
            };
            let opts = crate::lake::compact::CompactOptions {
                older_than: chrono::Duration::days(1),
                min_files: 10,
                published_compactions: published,
                dry_run: false,
            };
            for job in idle {
                match crate::lake::compact::compact_job(&warehouse, &job.name, &job.dataset, &opts)
                {
                    Ok(r) if r.partitions.is_empty() && r.deleted_retired == 0 => {}
                    Ok(r) => tracing::info!(
                        job = %job.name,
                        partitions = r.partitions.len(),
                        files = r.partitions.iter().map(|p| p.files).sum::<usize>(),
                        deleted_retired = r.deleted_retired,
                        "Lake compacted."
                    ),
                    Err(e) => {
                        tracing::warn!(job = %job.name, error = %format!("{e:#}"), "Lake compaction of the job failed; the next pass tries again.")
                    }
                }
            }
        });
    }

    fn notice(&self, n: Notice) {
        if let Some(tx) = &self.notices {
            let _ = tx.send(n);
        }
    }

    fn planned_text(&self, t: DateTime<Utc>) -> String {
        local_rfc3339(t, self.opts.tz)
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// When the pending build's debounce ends (the quiet period after the last landing, or
    /// the maximum delay after the first), if a build is pending and none is running.
    fn build_deadline(&self) -> Option<Instant> {
        let b = self.build.as_ref()?;
        if b.running.is_some() {
            return None;
        }
        let (first, last) = (b.first_landed?, b.last_landed?);
        Some((last + b.job.quiet_period).min(first + b.job.max_delay))
    }

    fn busy(&self) -> bool {
        self.pulls.iter().any(|p| p.running.is_some())
            || self.build.as_ref().is_some_and(|b| b.running.is_some())
            || self.publishes.iter().any(|p| p.running.is_some())
    }

    /// Fires every planned time that has come due.
    fn reconcile(&mut self, now: DateTime<Utc>) -> anyhow::Result<()> {
        if self.stopping() {
            return Ok(());
        }
        for i in 0..self.pulls.len() {
            let slot = &self.pulls[i];
            let (due, more) = slot.schedule.due(slot.last_planned, now);
            let Some(newest) = due.last().copied() else {
                continue;
            };
            if !slot.job.enabled || self.is_paused(&slot.job.name) {
                // Paused (or removed by a reload): its planned times pass unfired.
                self.pulls[i].last_planned = newest;
                continue;
            }
            let late = chrono::Duration::from_std(slot.job.run.misfire_after.0)
                .unwrap_or(chrono::Duration::seconds(60));
            self.pulls[i].last_planned = newest;
            let (misfired, on_time): (Vec<_>, Vec<_>) =
                due.into_iter().partition(|t| now - *t > late);
            self.misfires(i, misfired, more)?;
            for t in on_time {
                self.fire(i, t, FireHow::OnTime)?;
            }
        }
        self.reconcile_build(now)?;
        self.reconcile_publishes(now)
    }

    /// Planned times missed (the daemon was down, or far behind), by the job's `catch_up`.
    fn misfires(
        &mut self,
        i: usize,
        misfired: Vec<DateTime<Utc>>,
        more: u64,
    ) -> anyhow::Result<()> {
        if misfired.is_empty() {
            return Ok(());
        }
        let job = self.pulls[i].job.name.clone();
        let policy = self.pulls[i].job.run.catch_up;
        let (run, skip): (Vec<_>, Vec<_>) = match policy {
            CatchUp::Skip => (Vec::new(), misfired),
            CatchUp::All => (misfired, Vec::new()),
            CatchUp::Once => {
                let mut m = misfired;
                let newest = m.pop().expect("not empty");
                (vec![newest], m)
            }
        };
        tracing::warn!(
            job = %job,
            missed = run.len() + skip.len() + more as usize,
            caught_up = run.len(),
            catch_up = ?policy,
            "Fires were missed while the daemon was down or behind."
        );
        let lines = skipped_misfires(&job, &skip, self.opts.tz, more);
        metrics::misses(&job, (run.len() + skip.len()) as u64 + more);
        for _ in &lines {
            metrics::fire(&job, "skipped_misfire");
        }
        self.summary.skipped += lines.len() as u64;
        self.pulls[i].history.append(&lines)?;
        for t in run {
            // Each caught-up fire runs, one after another.
            self.fire(i, t, FireHow::CaughtUp)?;
        }
        Ok(())
    }

    /// One planned time of a pull job: run it, queue it, or record it skipped.
    fn fire(&mut self, i: usize, planned: DateTime<Utc>, how: FireHow) -> anyhow::Result<()> {
        self.summary.fires += 1;
        let text = self.planned_text(planned);
        let slot = &mut self.pulls[i];
        let busy = slot.running.is_some() || !slot.queue.is_empty();
        if !busy {
            return self.start_pull(i, planned, how);
        }
        let queue = slot.job.run.overlap == Overlap::Queue || how == FireHow::CaughtUp;
        if queue && slot.queue.len() >= slot.job.run.max_queued {
            // A bounded queue: a pull reads from its cursor, so the fires already waiting
            // fetch what this one would have.
            let mut r = FireRecord::new(&slot.job.name, &text, FireEvent::SkippedOverlap);
            r.error = Some(format!(
                "{} fires already wait for the running one (max_queued)",
                slot.queue.len()
            ));
            slot.history.append(&[r])?;
            tracing::warn!(job = %slot.job.name, planned = %text, waiting = slot.queue.len(), "Fire skipped: the job's queue is full (max_queued).");
            metrics::fire(&slot.job.name, "skipped_overlap");
            self.summary.skipped += 1;
        } else if queue {
            let mut r = FireRecord::new(&slot.job.name, &text, FireEvent::Claimed);
            r.how = Some(FireHow::Queued);
            slot.history.append(&[r])?;
            slot.queue.push_back((planned, how));
        } else {
            slot.history.append(&[FireRecord::new(
                &slot.job.name,
                &text,
                FireEvent::SkippedOverlap,
            )])?;
            tracing::info!(job = %slot.job.name, planned = %text, "Fire skipped: the job's previous run is still going (overlap = \"skip\").");
            metrics::fire(&slot.job.name, "skipped_overlap");
            self.summary.skipped += 1;
        }
        Ok(())
    }

    fn start_pull(&mut self, i: usize, planned: DateTime<Utc>, how: FireHow) -> anyhow::Result<()> {
        let text = self.planned_text(planned);
        let slot = &mut self.pulls[i];
        let mut claim = FireRecord::new(&slot.job.name, &text, FireEvent::Claimed);
        claim.how = Some(how);
        // On disk before the run starts: a planned time is run once, whatever happens next.
        slot.history.append(&[claim])?;
        self.summary.runs += 1;
        let attempt = Arc::new(Mutex::new(None));
        let task = tokio::spawn(run_fire(
            self.ctx.clone(),
            slot.job.clone(),
            text,
            how,
            attempt.clone(),
            self.stop.clone(),
            self.tx.clone(),
            i,
        ));
        slot.running = Some(Running {
            planned,
            how,
            task: task.abort_handle(),
            attempt,
        });
        Ok(())
    }

    fn handle(&mut self, m: Msg) -> anyhow::Result<()> {
        match m {
            Msg::Wake => Ok(()), // the loop reconciles after every message
            Msg::Control(req, reply) => {
                let answer = self.control(req)?;
                let _ = reply.send(answer);
                Ok(())
            }
            Msg::PublishDone {
                slot,
                record,
                created,
            } => self.publish_done(slot, record, created),
            Msg::PullDone { slot: i, record } => {
                let slot = &mut self.pulls[i];
                slot.running = None;
                slot.history.append(std::slice::from_ref(&record))?;
                metrics::fire(
                    &slot.job.name,
                    if record.how == Some(FireHow::CaughtUp) {
                        "caught_up"
                    } else {
                        "ran"
                    },
                );
                self.notice(Notice::PullFinished {
                    job: record.job.clone(),
                    planned: record.planned.clone(),
                    outcome: record.outcome.clone().unwrap_or_default(),
                    rows_landed: record.rows_landed,
                    seconds: record.seconds.unwrap_or(0.0),
                });
                if record.rows_landed > 0 {
                    if let Some(b) = self.build.as_mut().filter(|b| b.job.after_pulls) {
                        b.ask();
                        b.landed_runs += 1;
                    }
                }
                if !self.stopping() {
                    if let Some((planned, how)) = self.pulls[i].queue.pop_front() {
                        self.start_pull(i, planned, how)?;
                    }
                }
                Ok(())
            }
            Msg::BuildDone {
                record,
                summary,
                busy,
            } => {
                let Some(b) = self.build.as_mut() else {
                    return Ok(());
                };
                b.running = None;
                b.history.append(std::slice::from_ref(&record))?;
                if busy && b.first_landed.is_none() {
                    // Another build (a `chiso build` by hand) held the lock: try again after
                    // the quiet period.
                    b.ask();
                }
                metrics::build(&record, summary.as_ref());
                metrics::fire(&record.job, "ran");
                let how = record.how.unwrap_or(FireHow::Triggered);
                let pulls = std::mem::take(&mut b.landed_runs_at_start);
                self.notice(Notice::BuildFinished {
                    planned: record.planned.clone(),
                    how,
                    outcome: record.outcome.clone().unwrap_or_default(),
                    seconds: record.seconds.unwrap_or(0.0),
                    pulls,
                    build: summary,
                    error: record.error.clone(),
                });
                Ok(())
            }
        }
    }

    /// Scheduled builds, and builds after pulls that landed rows once they have been quiet for
    /// the quiet period (or the maximum delay has passed since the first).
    fn reconcile_build(&mut self, now: DateTime<Utc>) -> anyhow::Result<()> {
        let paused = self
            .build
            .as_ref()
            .is_some_and(|b| self.paused.contains(&b.job.name));
        let Some(b) = self.build.as_mut() else {
            return Ok(());
        };
        if paused {
            // Its planned times pass; pulls' asks wait for the resume.
            if let Some(s) = &b.schedule {
                let (due, _) = s.due(b.last_planned, now);
                if let Some(t) = due.last() {
                    b.last_planned = *t;
                }
            }
            return Ok(());
        }
        let mut scheduled = None;
        if let Some(s) = &b.schedule {
            let (due, more) = s.due(b.last_planned, now);
            if let Some(t) = due.last().copied() {
                b.last_planned = t;
                scheduled = Some(t);
                let lines =
                    skipped_misfires(&b.job.name, &due[..due.len() - 1], self.opts.tz, more);
                for _ in &lines {
                    metrics::fire(&b.job.name, "skipped_misfire");
                }
                b.history.append(&lines)?;
            }
        }
        if b.running.is_some() {
            if let Some(t) = scheduled {
                // Never two builds at once: build again once this one ends.
                b.again = true;
                b.history.append(&[FireRecord::new(
                    &b.job.name,
                    &local_rfc3339(t, self.opts.tz),
                    FireEvent::SkippedOverlap,
                )])?;
                metrics::fire(&b.job.name, "skipped_overlap");
            }
            return Ok(());
        }
        let debounced = match (b.first_landed, b.last_landed) {
            (Some(first), Some(last)) => {
                last.elapsed() >= b.job.quiet_period || first.elapsed() >= b.job.max_delay
            }
            _ => false,
        };
        let start = match scheduled {
            Some(t) => Some((t, FireHow::OnTime)),
            None if debounced || b.again => Some((now, FireHow::Triggered)),
            None => None,
        };
        if let Some((planned, how)) = start {
            b.again = false;
            self.start_build(planned, how)?;
        }
        Ok(())
    }

    fn start_build(&mut self, planned: DateTime<Utc>, how: FireHow) -> anyhow::Result<()> {
        let text = self.planned_text(planned);
        let b = self.build.as_mut().expect("a build job");
        let mut claim = FireRecord::new(&b.job.name, &text, FireEvent::Claimed);
        claim.how = Some(how);
        b.history.append(&[claim])?;
        b.running = Some((planned, how));
        b.first_landed = None;
        b.last_landed = None;
        b.landed_runs_at_start = std::mem::take(&mut b.landed_runs);
        self.summary.builds += 1;
        let warehouse = self.opts.warehouse.clone();
        let sql_dir = self.opts.sql_dir.clone();
        let jobs = self.opts.jobs.pulls.clone();
        let opts = BuildOptions::from_job(&b.job);
        let name = b.job.name.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            let result = tokio::task::spawn_blocking(move || {
                crate::models::build::build(&warehouse, &sql_dir, &jobs, &opts)
            })
            .await;
            let mut record = FireRecord::new(&name, &text, FireEvent::Finished);
            record.how = Some(how);
            record.attempts = 1;
            record.seconds = Some(t0.elapsed().as_secs_f64());
            let (summary, busy) = match result {
                Ok(Ok(r)) => {
                    let s = BuildSummary::of(&r);
                    record.run_ids = vec![r.build_id.clone()];
                    record.outcome = Some(if r.published { "ok" } else { "failed" }.into());
                    record.error = s.error.clone();
                    if r.published {
                        tracing::info!(build_id = %r.build_id, seconds = r.seconds, "Build published.");
                    } else {
                        tracing::error!(build_id = %r.build_id, error = s.error.as_deref().unwrap_or(""), "Build failed; the published warehouse is unchanged. The next pull that lands rows triggers another.");
                    }
                    (Some(s), false)
                }
                Ok(Err(e)) => {
                    let busy = e.chain().any(|c| {
                        matches!(
                            c.downcast_ref::<crate::fs::LockError>(),
                            Some(crate::fs::LockError::Busy(_))
                        )
                    });
                    record.outcome = Some(if busy { "busy" } else { "failed" }.into());
                    record.error = Some(format!("{e:#}"));
                    if busy {
                        tracing::warn!("Build deferred: another build holds the warehouse.");
                    } else {
                        tracing::error!(error = %format!("{e:#}"), "Build failed; the published warehouse is unchanged.");
                    }
                    (None, busy)
                }
                Err(e) => {
                    record.outcome = Some("failed".into());
                    record.error = Some(format!("the build panicked: {e}"));
                    tracing::error!(error = %e, "The build panicked; the published warehouse is unchanged.");
                    (None, false)
                }
            };
            let _ = tx.send(Msg::BuildDone {
                record,
                summary,
                busy,
            });
        });
        Ok(())
    }

    /// At stop, queued fires never start: each claim is closed as interrupted.
    fn drop_queues(&mut self) -> anyhow::Result<()> {
        for slot in &mut self.pulls {
            let lines: Vec<FireRecord> = slot
                .queue
                .drain(..)
                .map(|(t, _)| {
                    let mut r = FireRecord::new(
                        &slot.job.name,
                        &local_rfc3339(t, self.opts.tz),
                        FireEvent::Interrupted,
                    );
                    r.how = Some(FireHow::Queued);
                    r.error = Some("the daemon stopped before it ran".into());
                    r
                })
                .collect();
            slot.history.append(&lines)?;
        }
        Ok(())
    }

    /// After the grace: stops the runs still going and closes their claims.
    fn cut_short(&mut self) -> anyhow::Result<usize> {
        let mut n = 0;
        for slot in &mut self.pulls {
            if let Some(r) = slot.running.take() {
                r.task.abort();
                if let Some(a) = r.attempt.lock().expect("attempt").take() {
                    a.abort();
                }
                let mut rec = FireRecord::new(
                    &slot.job.name,
                    &local_rfc3339(r.planned, self.opts.tz),
                    FireEvent::Interrupted,
                );
                rec.how = Some(r.how);
                rec.error = Some("cut short: the grace period ran out".into());
                slot.history.append(&[rec])?;
                metrics::fire(&slot.job.name, "interrupted");
                tracing::warn!(job = %slot.job.name, "Run cut short at stop; it is recovered at its next run.");
                n += 1;
            }
        }
        for p in &mut self.publishes {
            if let Some((planned, how)) = p.running.take() {
                let mut rec = FireRecord::new(
                    &p.job.name,
                    &local_rfc3339(planned, self.opts.tz),
                    FireEvent::Interrupted,
                );
                rec.how = Some(how);
                rec.error = Some(
                    "cut short: the grace period ran out; the next publish sends what is pending"
                        .into(),
                );
                rec.periods = std::mem::take(&mut p.running_periods);
                if !p.job.provisional {
                    rec.owed = rec.periods.clone();
                }
                p.history.append(&[rec])?;
                metrics::fire(&p.job.name, "interrupted");
                n += 1;
            }
        }
        if let Some(b) = self.build.as_mut() {
            if let Some((planned, how)) = b.running.take() {
                let mut rec = FireRecord::new(
                    &b.job.name,
                    &local_rfc3339(planned, self.opts.tz),
                    FireEvent::Interrupted,
                );
                rec.how = Some(how);
                rec.error = Some(
                    "cut short: the grace period ran out; the published warehouse is unchanged"
                        .into(),
                );
                b.history.append(&[rec])?;
                metrics::fire(&b.job.name, "interrupted");
                n += 1;
            }
        }
        Ok(n)
    }
}

/// One fire of a pull job: the run, and its retries with backoff while it fails; each attempt
/// bounded by the job's timeout. Reports the fire's end to the loop.
#[allow(clippy::too_many_arguments)]
async fn run_fire(
    ctx: RunContext,
    job: JobConfig,
    planned: String,
    how: FireHow,
    attempt_handle: Arc<Mutex<Option<AbortHandle>>>,
    mut stop: watch::Receiver<bool>,
    tx: mpsc::UnboundedSender<Msg>,
    slot: usize,
) {
    let t0 = Instant::now();
    let policy = job.run.clone();
    let mut record = FireRecord::new(&job.name, &planned, FireEvent::Finished);
    record.how = Some(how);
    loop {
        record.attempts += 1;
        let mut run = tokio::spawn({
            let (ctx, job) = (ctx.clone(), job.clone());
            async move { pull::run_job(&ctx, &job).await }
        });
        *attempt_handle.lock().expect("attempt") = Some(run.abort_handle());
        let (outcome, error): (String, Option<String>) = match tokio::time::timeout(
            policy.timeout.0,
            &mut run,
        )
        .await
        {
            Err(_) => {
                run.abort();
                // A run blocked in I/O (a hung disk or mount) cannot be stopped: it is
                // abandoned rather than waited for, so the fire ends and says so.
                match tokio::time::timeout(STUCK_AFTER, &mut run).await {
                    Ok(_) => (
                        "timed_out".into(),
                        Some(format!(
                            "the run took longer than its timeout, {}; it is recovered at its next start",
                            humantime::format_duration(policy.timeout.0)
                        )),
                    ),
                    Err(_) => {
                        metrics::stuck(&job.name);
                        tracing::error!(job = %job.name, timeout = %humantime::format_duration(policy.timeout.0), "A run is stuck in blocking I/O past its timeout and could not be stopped; abandoned. It holds the job's lock until the I/O returns, so the job's next fires find it busy.");
                        (
                            "stuck".into(),
                            Some(format!(
                                "the run took longer than its timeout, {}, and was still blocked {} s after being stopped (in I/O: a hung disk or mount?); abandoned, it holds the job's lock until the I/O returns",
                                humantime::format_duration(policy.timeout.0),
                                STUCK_AFTER.as_secs()
                            )),
                        )
                    }
                }
            }
            Ok(Err(e)) if e.is_panic() => ("failed".into(), Some("the run panicked".into())),
            Ok(Err(_)) => ("failed".into(), Some("the run was cancelled".into())),
            Ok(Ok(Err(PullError::Commit(CommitError::Busy { .. })))) => (
                "busy".into(),
                Some("another run holds the job's lock (a `chiso run` by hand, or a run abandoned as stuck)".into()),
            ),
            Ok(Ok(Err(e))) => ("failed".into(), Some(e.to_string())),
            Ok(Ok(Ok(rep))) => {
                record.run_ids.push(rep.run_id.clone());
                record.rows_landed += rep.totals.rows_landed;
                metrics::run(&rep);
                (rep.outcome.as_str().to_string(), rep.error.clone())
            }
        };
        if outcome != "ok"
            && outcome != "quarantined"
            && record.run_ids.len() < record.attempts as usize
        {
            metrics::run_failed(&job.name, &outcome);
        }
        let retry = matches!(outcome.as_str(), "failed" | "timed_out")
            && record.attempts <= policy.retries
            && !*stop.borrow();
        record.outcome = Some(outcome);
        record.error = error;
        if !retry {
            break;
        }
        let wait = policy.backoff(record.attempts);
        tracing::warn!(
            job = %job.name,
            attempt = record.attempts,
            retry_in_seconds = wait.as_secs_f64(),
            error = record.error.as_deref().unwrap_or(""),
            "Run failed; retrying."
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    *attempt_handle.lock().expect("attempt") = None;
    record.seconds = Some(t0.elapsed().as_secs_f64());
    record.at = crate::time::now_rfc3339_millis();
    let _ = tx.send(Msg::PullDone { slot, record });
}
