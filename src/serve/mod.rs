//! `chiso serve`: the daemon. It fires every enabled pull job on its cron schedule
//! ([`pulling`]), builds the warehouse after pulls that landed rows, debounced, and on its
//! schedule ([`building`]), runs the publish jobs ([`publishing`]), takes `chiso jobs`
//! requests and reloads changed job files ([`control`]), and answers `/health`, `/status` and
//! `/metrics` over HTTP ([`http`], [`report`]), until SIGTERM or SIGINT.
//!
//! Every job, whatever it runs, is one [`slot::Slot`]: its schedule, its fire history, the
//! newest planned time spoken for, the fire running now; due → misfire → claim → run → finish
//! go through it, and one catch-up policy ([`slot::plan`]) says which missed times run.
//!
//! One loop owns the state: which job runs, its queue, the build's debounce. Everything else
//! sends it messages: tokio-cron-scheduler's wake-ups (a hint only: the planned times are
//! computed by [`crate::schedule::planned`]), each run's end, each build's end, control
//! requests. Each fire is a line in the job's history, claimed before its run starts
//! ([`crate::schedule::history`]); restarting after a kill closes the claims left open as
//! `interrupted`, and the commit log recovers the pull itself, as it does for `chiso run`.

mod building;
pub mod control;
pub mod http;
pub mod metrics;
mod publishing;
mod pulling;
mod reconciling;
pub mod report;
mod slot;

pub use report::Shared;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};

use crate::config::{JobConfig, Jobs};
use crate::models::build::BuildSummary;
use crate::pull::RunContext;
use crate::schedule::planned::local_rfc3339;
use crate::schedule::{DaemonLock, FireHow, FireRecord, History, Schedule};

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
    ReconcileDone {
        slot: usize,
        record: FireRecord,
    },
    /// `chiso jobs pause|resume|trigger|reload`, a SIGHUP, a changed job file.
    Control(
        control::Request,
        tokio::sync::oneshot::Sender<control::Reply>,
    ),
}

struct Daemon {
    opts: ServeOptions,
    ctx: RunContext,
    pulls: Vec<pulling::PullSlot>,
    build: Option<building::BuildSlot>,
    publishes: Vec<publishing::PublishSlot>,
    reconciles: Vec<reconciling::ReconcileSlot>,
    tx: mpsc::UnboundedSender<Msg>,
    stop: watch::Receiver<bool>,
    notices: Option<mpsc::UnboundedSender<Notice>>,
    summary: ServeSummary,
    shared: Arc<Shared>,
    /// The console's hold on the published file, let go of as each build publishes.
    published: Option<Arc<crate::console::published::Published>>,
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
    // A job holds at most its running fire and its queue open (a build or a publication,
    // one at a time, is given the same room).
    let recover = |name: &str,
                   schedule: Option<&crate::config::CronExpr>,
                   max_open: usize|
     -> anyhow::Result<slot::Slot> {
        let schedule = match schedule {
            Some(e) => Some(Schedule::new(e, opts.tz).map_err(anyhow::Error::msg)?),
            None => None,
        };
        slot::Slot::recover(&opts.warehouse, name, schedule, opts.tz, now, max_open)
    };
    let mut pulls = Vec::new();
    for job in opts.jobs.pulls.iter().filter(|j| j.enabled) {
        // (At least the default's room: a queue made shorter since the last stop.)
        let slot = recover(
            &job.name,
            Some(&job.schedule),
            job.run.max_queued.max(10) + 1,
        )?;
        pulls.push(pulling::PullSlot::new(slot, job.clone()));
    }
    let build = match opts.jobs.builds.iter().find(|b| b.enabled) {
        None => None,
        Some(b) => Some(building::BuildSlot::new(
            recover(&b.name, b.schedule.as_ref(), 11)?,
            b.clone(),
        )),
    };
    let mut publishes = Vec::new();
    for job in opts.jobs.publishes.iter().filter(|j| j.enabled) {
        let slot = recover(&job.name, Some(&job.schedule), 11)?;
        publishes.push(publishing::PublishSlot::new(slot, job.clone(), now)?);
    }
    let mut reconciles = Vec::new();
    for job in opts.jobs.reconciles.iter().filter(|j| j.enabled) {
        let slot = recover(&job.name, Some(&job.schedule), 11)?;
        reconciles.push(reconciling::ReconcileSlot {
            slot,
            job: job.clone(),
        });
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
    let published = listener
        .as_ref()
        .map(|_| crate::console::published::Published::new(&opts.warehouse));
    let server = listener.map(|l| {
        let published = published.clone().expect("made with the listener");
        tokio::spawn(crate::console::published::watch(
            published.clone(),
            http_stop_rx.clone(),
        ));
        let console = crate::console::Console::new(
            published,
            shared.clone(),
            http_stop_rx.clone(),
            opts.http_token.as_deref(),
            opts.http_public,
        );
        let app = http::router(shared.clone(), recorder.clone(), console);
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
        .map(|p| &p.slot)
        .chain(build.iter().map(|b| &b.slot))
        .chain(publishes.iter().map(|p| &p.slot))
        .chain(reconciles.iter().map(|r| &r.slot))
        .filter_map(|s| s.schedule.as_ref().map(|s| s.with_seconds()))
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
    let loaded_digests = match &opts.job_files {
        Some(f) => {
            let d = control::digests(&f.dir);
            control::write_loaded(&opts.warehouse, &f.dir, d.clone(), None);
            d
        }
        None => Default::default(),
    };
    let files_watch = opts
        .job_files
        .clone()
        .map(|f| control::watch_files(f, loaded_digests.clone(), tx.clone()));
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
        reconciles,
        tx,
        stop: stop_rx,
        notices,
        summary: ServeSummary::default(),
        shared: shared.clone(),
        published,
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
    // The fire histories past the retention go at start (off the loop: a start reads only
    // their ends) and every RETENTION_EVERY.
    d.compact_histories();
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
    if let Some(c) = control {
        c.abort();
    }
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

/// How often a running daemon drops fire history past the retention (it does at start too).
const RETENTION_EVERY: Duration = Duration::from_secs(6 * 3600);

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
        let histories: Vec<History> = self.slots().map(|s| s.history.clone()).collect();
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
            .filter(|p| p.slot.enabled && p.slot.running.is_none() && p.queue.is_empty())
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

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Every job's slot: pulls, the build, publications.
    fn slots(&self) -> impl Iterator<Item = &slot::Slot> {
        self.pulls
            .iter()
            .map(|p| &p.slot)
            .chain(self.build.iter().map(|b| &b.slot))
            .chain(self.publishes.iter().map(|p| &p.slot))
            .chain(self.reconciles.iter().map(|r| &r.slot))
    }

    fn slots_mut(&mut self) -> impl Iterator<Item = &mut slot::Slot> {
        self.pulls
            .iter_mut()
            .map(|p| &mut p.slot)
            .chain(self.build.iter_mut().map(|b| &mut b.slot))
            .chain(self.publishes.iter_mut().map(|p| &mut p.slot))
            .chain(self.reconciles.iter_mut().map(|r| &mut r.slot))
    }

    /// When the pending build's debounce ends, if one is pending and none is running.
    fn build_deadline(&self) -> Option<Instant> {
        let b = self.build.as_ref()?;
        if !b.slot.enabled || self.is_paused(&b.job.name) {
            // Its asks wait for the resume (a deadline already past would wake the loop at
            // once, again and again).
            return None;
        }
        b.deadline()
    }

    fn busy(&self) -> bool {
        self.slots().any(|s| s.running.is_some())
    }

    /// Fires every planned time that has come due.
    fn reconcile(&mut self, now: DateTime<Utc>) -> anyhow::Result<()> {
        if self.stopping() {
            return Ok(());
        }
        self.reconcile_pulls(now)?;
        self.reconcile_build(now)?;
        self.reconcile_publishes(now)?;
        self.fire_reconcile_jobs(now)
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
            Msg::ReconcileDone { slot, record } => self.reconcile_job_done(slot, record),
            Msg::PullDone { slot: i, record } => self.pull_done(i, record),
            Msg::BuildDone {
                record,
                summary,
                busy,
            } => self.build_done(record, summary, busy),
        }
    }

    /// After the grace: stops the runs still going and closes their claims.
    fn cut_short(&mut self) -> anyhow::Result<usize> {
        let mut n = 0;
        for p in &mut self.pulls {
            p.abort();
            if let Some((planned, how)) = p.slot.running.take() {
                p.slot.interrupt(
                    planned,
                    how,
                    "cut short: the grace period ran out",
                    Vec::new(),
                    Vec::new(),
                )?;
                tracing::warn!(job = %p.job.name, "Run cut short at stop; it is recovered at its next run.");
                n += 1;
            }
        }
        for p in &mut self.publishes {
            if let Some((planned, how)) = p.slot.running.take() {
                let periods = std::mem::take(&mut p.running_periods);
                let owed = if p.job.provisional {
                    Vec::new()
                } else {
                    periods.clone()
                };
                p.slot.interrupt(
                    planned,
                    how,
                    "cut short: the grace period ran out; the next publish sends what is pending",
                    periods,
                    owed,
                )?;
                n += 1;
            }
        }
        for r in &mut self.reconciles {
            if let Some((planned, how)) = r.slot.running.take() {
                r.slot.interrupt(
                    planned,
                    how,
                    "cut short: the grace period ran out",
                    Vec::new(),
                    Vec::new(),
                )?;
                n += 1;
            }
        }
        if let Some(b) = self.build.as_mut() {
            if let Some((planned, how)) = b.slot.running.take() {
                b.slot.interrupt(
                    planned,
                    how,
                    "cut short: the grace period ran out; the published warehouse is unchanged",
                    Vec::new(),
                    Vec::new(),
                )?;
                n += 1;
            }
        }
        Ok(n)
    }
}
