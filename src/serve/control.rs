//! Managing the running daemon's schedules, as Airflow and Dagster users do, without stopping
//! it: `chiso jobs pause NAME`, `resume NAME`, `trigger NAME` (run now, recorded as
//! `triggered`) and `reload` speak to it over a Unix socket in the warehouse
//! (`_state/_serve/control.sock`, one JSON line each way; only who can write the warehouse can
//! reach it). Job files are reloaded on SIGHUP and when they change (checked every
//! [`FILES_EVERY`]): validated first; a file with an error keeps the old schedule, and the
//! error is logged, answered and shown by `chiso status` until the file is fixed. Each change
//! is a `changed` line in the job's fire history. Paused jobs stay paused across restarts
//! (`_state/_serve/paused.json`); a paused job's planned times pass unfired and unrecorded, and
//! it goes on from the next one when resumed (`trigger` runs it now; a final publication's
//! period passed while paused is not owed: publish it by hand). A rescheduled job starts its
//! new schedule at the reload: times before it are not missed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use super::slot::Slot;
use super::{Daemon, Msg};
use crate::config::Jobs;
pub(super) use crate::schedule::changes::{digests, paused_path, write_loaded};
pub use crate::schedule::changes::{pending_changes, read_paused, PendingChanges};
use crate::schedule::{FireHow, FireRecord, History, Schedule};

/// How often the job files are checked for changes.
pub const FILES_EVERY: Duration = Duration::from_secs(2);

/// Loads the project's jobs again (from `jobs_dir`), or says what is wrong with the files.
pub type Loader = Arc<dyn Fn() -> Result<Jobs, String> + Send + Sync>;

/// Where the job files are, and how to load them: given, the daemon reloads them.
#[derive(Clone)]
pub struct JobFiles {
    pub dir: PathBuf,
    pub load: Loader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Pause,
    Resume,
    Trigger,
    Reload,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub op: Op,
    #[serde(default)]
    pub job: Option<String>,
    /// Who asked (`$CHISO_ACTOR`, else `$USER`), written to the history.
    pub by: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    pub message: String,
}

impl Reply {
    fn ok(message: String) -> Reply {
        Reply { ok: true, message }
    }
    fn no(message: String) -> Reply {
        Reply { ok: false, message }
    }
}

pub fn socket_path(warehouse: &Path) -> PathBuf {
    warehouse.join("_state/_serve/control.sock")
}

/// Who is asking: `$CHISO_ACTOR`, else `$USER`.
pub fn actor() -> String {
    std::env::var("CHISO_ACTOR")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Sends `req` to the daemon running on `warehouse`; its answer.
pub async fn send(warehouse: &Path, req: &Request) -> anyhow::Result<Reply> {
    let path = socket_path(warehouse);
    let stream = tokio::net::UnixStream::connect(&path)
        .await
        .with_context(|| {
            format!(
                "no daemon answers on {}: is `chiso serve` running on this warehouse?",
                path.display()
            )
        })?;
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    w.write_all(line.as_bytes()).await?;
    let mut answer = String::new();
    tokio::time::timeout(
        Duration::from_secs(60),
        BufReader::new(r).read_line(&mut answer),
    )
    .await
    .context("the daemon did not answer within 60 s")??;
    serde_json::from_str(&answer).with_context(|| format!("the daemon answered {answer:?}"))
}

/// Answers requests on the control socket until the daemon stops (the task is aborted).
pub(super) fn listen(
    warehouse: &Path,
    tx: mpsc::UnboundedSender<Msg>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let path = socket_path(warehouse);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // The daemon holds the warehouse's lock: a socket file left here is a dead daemon's.
    let _ = std::fs::remove_file(&path);
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            // (A warehouse path too long for a socket address, say: the daemon runs without.)
            tracing::warn!(socket = %path.display(), error = %e, "No control socket: `chiso jobs pause|resume|trigger|reload` cannot reach this daemon (SIGHUP and edited job files still reload it).");
            return Ok(None);
        }
    };
    Ok(Some(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut line = String::new();
                let read = tokio::time::timeout(
                    Duration::from_secs(5),
                    BufReader::new(r.take(64 * 1024)).read_line(&mut line),
                )
                .await;
                let reply = match (read, serde_json::from_str::<Request>(&line)) {
                    (Ok(Ok(_)), Ok(req)) => {
                        let (rtx, rrx) = oneshot::channel();
                        if tx.send(Msg::Control(req, rtx)).is_err() {
                            Reply::no("the daemon is stopping".into())
                        } else {
                            rrx.await
                                .unwrap_or_else(|_| Reply::no("the daemon is stopping".into()))
                        }
                    }
                    (_, Err(e)) => Reply::no(format!("not a request: {e}")),
                    (Ok(Err(e)), _) => Reply::no(format!("reading the request: {e}")),
                    (Err(_), _) => Reply::no("no request within 5 s".into()),
                };
                let mut out = serde_json::to_string(&reply).unwrap_or_default();
                out.push('\n');
                let _ = w.write_all(out.as_bytes()).await;
            });
        }
    })))
}

/// Sends a reload to the loop at each SIGHUP, and whenever the job files' digests differ from
/// `seen` (those loaded at start, then the last seen).
pub(super) fn watch_files(
    files: JobFiles,
    mut seen: BTreeMap<String, String>,
    tx: mpsc::UnboundedSender<Msg>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup()).ok();
        let dir = files.dir.clone();
        let mut every = tokio::time::interval(FILES_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let by = tokio::select! {
                _ = async {
                    match hup.as_mut() {
                        Some(h) => { h.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => "SIGHUP",
                _ = every.tick() => {
                    let now = tokio::task::spawn_blocking({
                        let dir = dir.clone();
                        move || digests(&dir)
                    })
                    .await
                    .unwrap_or_default();
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    "a job file changed"
                }
            };
            let (rtx, _) = oneshot::channel();
            let req = Request {
                op: Op::Reload,
                job: None,
                by: by.into(),
            };
            if tx.send(Msg::Control(req, rtx)).is_err() {
                return;
            }
        }
    })
}

impl Daemon {
    pub(super) fn is_paused(&self, job: &str) -> bool {
        self.paused.contains(job)
    }

    /// Answers a control request.
    pub(super) fn control(&mut self, req: Request) -> anyhow::Result<Reply> {
        if req.op == Op::Reload {
            return self.reload(&req.by);
        }
        let Some(name) = req.job.clone() else {
            return Ok(Reply::no(format!("{:?} needs a job name", req.op)));
        };
        if !self.has_job(&name) {
            return Ok(Reply::no(format!(
                "no enabled job {name:?} in this daemon (jobs: {})",
                self.job_names().join(", ")
            )));
        }
        match req.op {
            Op::Pause | Op::Resume => {
                let pause = req.op == Op::Pause;
                let changed = if pause {
                    self.paused.insert(name.clone())
                } else {
                    self.paused.remove(&name)
                };
                if !changed {
                    return Ok(Reply::ok(format!(
                        "{name} was already {}",
                        if pause {
                            "paused"
                        } else {
                            "running on schedule"
                        }
                    )));
                }
                crate::fs::write_durably(
                    &paused_path(&self.opts.warehouse),
                    &serde_json::to_vec(&self.paused)?,
                )
                .context("recording the paused jobs")?;
                let what = if pause { "paused" } else { "resumed" };
                self.history_of(&name)
                    .append(&[FireRecord::changed(&name, format!("{what} by {}", req.by))])?;
                tracing::info!(job = %name, by = %req.by, "Job {what}.");
                Ok(Reply::ok(if pause {
                    format!("{name} paused: its planned times pass unfired until `chiso jobs resume {name}`")
                } else {
                    format!("{name} resumed: it fires from its next planned time")
                }))
            }
            Op::Trigger => self.trigger(&name, &req.by),
            Op::Reload => unreachable!(),
        }
    }

    fn job_names(&self) -> Vec<String> {
        self.slots()
            .filter(|s| s.enabled)
            .map(|s| s.name.clone())
            .collect()
    }

    fn has_job(&self, name: &str) -> bool {
        self.job_names().iter().any(|n| n == name)
    }

    fn history_of(&self, name: &str) -> History {
        match self.slots().find(|s| s.name == name) {
            Some(s) => s.history.clone(),
            None => History::new(&self.opts.warehouse, name),
        }
    }

    /// Runs the job now, as a fire planned now and claimed `triggered`.
    fn trigger(&mut self, name: &str, by: &str) -> anyhow::Result<Reply> {
        let now = Utc::now();
        if let Some(i) = self.pulls.iter().position(|p| p.job.name == name) {
            let p = &self.pulls[i];
            if p.slot.running.is_some() {
                if p.job.run.overlap == crate::config::Overlap::Skip {
                    return Ok(Reply::no(format!(
                        "{name} is running now (overlap = \"skip\"): trigger it again when it ends"
                    )));
                }
                if p.queue.len() >= p.job.run.max_queued {
                    return Ok(Reply::no(format!(
                        "{name} is running now and {} fires wait (max_queued): trigger it again later",
                        p.queue.len()
                    )));
                }
                self.fire(i, now, FireHow::Triggered)?;
                return Ok(Reply::ok(format!(
                    "{name} is running now: the triggered fire waits for it (recorded as `queued`)"
                )));
            }
            self.fire(i, now, FireHow::Triggered)?;
        } else if self.build.as_ref().is_some_and(|b| b.job.name == name) {
            let b = self.build.as_mut().expect("the build job");
            if b.slot.running.is_some() {
                b.again = true;
                return Ok(Reply::ok(format!(
                    "{name} is building now: it builds again when this build ends"
                )));
            }
            self.start_build(now, FireHow::Triggered)?;
        } else if let Some(i) = self.publishes.iter().position(|p| p.job.name == name) {
            let slot = &self.publishes[i];
            if slot.slot.running.is_some() {
                return Ok(Reply::no(format!(
                    "{name} is publishing now; trigger it again when it ends"
                )));
            }
            let today = now.with_timezone(&self.opts.tz).date_naive();
            let mut periods: BTreeSet<String> = slot.owed.clone();
            periods.insert(crate::publish::choose_period(&slot.job.period, today));
            self.start_publish(i, now, FireHow::Triggered, periods.into_iter().collect())?;
        } else if let Some(i) = self.reconciles.iter().position(|r| r.job.name == name) {
            if self.reconciles[i].slot.running.is_some() {
                return Ok(Reply::no(format!(
                    "{name} is reconciling now; trigger it again when it ends"
                )));
            }
            self.start_reconcile_job(i, now, FireHow::Triggered)?;
        }
        tracing::info!(job = %name, by = %by, "Job triggered.");
        Ok(Reply::ok(format!(
            "{name} triggered: a fire planned now, recorded as `triggered`"
        )))
    }

    /// Loads the job files again and applies what changed: a changed job takes its new
    /// settings and schedule (a run going on ends with the old ones), a new job fires from
    /// its next planned time, a removed or disabled one fires no more. A file with an error
    /// changes nothing.
    fn reload(&mut self, by: &str) -> anyhow::Result<Reply> {
        let Some(files) = self.opts.job_files.clone() else {
            return Ok(Reply::no(
                "this daemon was not started from job files (chiso demo): nothing to reload".into(),
            ));
        };
        let loaded = (files.load)().and_then(|jobs| {
            // Every schedule must parse before anything changes.
            for expr in jobs
                .pulls
                .iter()
                .map(|j| &j.schedule)
                .chain(jobs.publishes.iter().map(|p| &p.schedule))
                .chain(jobs.reconciles.iter().map(|r| &r.schedule))
                .chain(jobs.builds.iter().filter_map(|b| b.schedule.as_ref()))
            {
                Schedule::new(expr, self.opts.tz)?;
            }
            // A source whose URL is missing from the environment, as at start.
            crate::config::ensure_urls_set(
                &jobs.pulls,
                &self.opts.publish.targets,
                jobs.publishes.iter().any(|p| p.enabled && p.push),
            )
            .map_err(|e| e.to_string())?;
            Ok(jobs)
        });
        let digests = digests(&files.dir);
        let jobs = match loaded {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(by = %by, error = %e, "The job files were not reloaded: the daemon keeps the schedules it has.");
                write_loaded(
                    &self.opts.warehouse,
                    &files.dir,
                    self.loaded_digests.clone(),
                    Some(e.clone()),
                );
                return Ok(Reply::no(format!(
                    "not reloaded; the daemon keeps the schedules it has:\n{e}"
                )));
            }
        };
        let notes = self.apply(jobs, by)?;
        self.loaded_digests = digests.clone();
        write_loaded(&self.opts.warehouse, &files.dir, digests, None);
        tracing::info!(by = %by, changes = notes.len(), "Job files reloaded.");
        Ok(Reply::ok(if notes.is_empty() {
            "reloaded: nothing changed".into()
        } else {
            format!("reloaded: {}", notes.join("; "))
        }))
    }

    fn apply(&mut self, jobs: Jobs, by: &str) -> anyhow::Result<Vec<String>> {
        let tz = self.opts.tz;
        let now = Utc::now();
        let mut notes = Vec::new();
        let differs =
            |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
        let schedule = |e: &crate::config::CronExpr| -> anyhow::Result<Schedule> {
            Schedule::new(e, tz).map_err(anyhow::Error::msg)
        };
        let new_slot =
            |d: &Daemon, name: &str, e: &crate::config::CronExpr| -> anyhow::Result<Slot> {
                Ok(Slot::new(
                    name,
                    Some(schedule(e)?),
                    History::new(&d.opts.warehouse, name),
                    now,
                    tz,
                ))
            };
        for job in &jobs.pulls {
            match self.pulls.iter().position(|p| p.job.name == job.name) {
                Some(i)
                    if differs(&self.pulls[i].job, job)
                        || self.pulls[i].slot.enabled != job.enabled =>
                {
                    let old = self.pulls[i].job.schedule.0.clone();
                    let p = &mut self.pulls[i];
                    p.slot
                        .reconfigure(Some(schedule(&job.schedule)?), job.enabled, now);
                    p.job = job.clone();
                    let what = describe(&old, &job.schedule.0, job.enabled);
                    self.changed(&mut notes, by, &job.name, what)?;
                }
                Some(_) => {}
                None if job.enabled => {
                    let slot = new_slot(self, &job.name, &job.schedule)?;
                    self.pulls
                        .push(super::pulling::PullSlot::new(slot, job.clone()));
                    let what = format!("added (schedule {})", job.schedule.0);
                    self.changed(&mut notes, by, &job.name, what)?;
                }
                None => {}
            }
        }
        // The build job: changed in place; removed or disabled, it builds no more; a new or
        // renamed one is applied at the next start (its history and slot are its name's).
        let new_build = jobs.builds.iter().find(|b| b.enabled);
        let current = self
            .build
            .as_ref()
            .map(|b| (b.job.name.clone(), b.slot.enabled, format!("{:?}", b.job)));
        match (current, new_build) {
            (Some((name, enabled, old)), Some(n)) if name == n.name => {
                if old != format!("{n:?}") || !enabled {
                    let b = self.build.as_mut().expect("the build job");
                    let s = match &n.schedule {
                        Some(s) => Some(schedule(s)?),
                        None => None,
                    };
                    b.slot.reconfigure(s, true, now);
                    b.job = n.clone();
                    self.changed(&mut notes, by, &name, "reloaded".into())?;
                }
            }
            // Removed, disabled or renamed (the old one is removed below).
            (_, Some(n)) => notes.push(format!(
                "{} (a new build job) is applied at the next start of the daemon",
                n.name
            )),
            (_, None) => {}
        }
        for job in &jobs.publishes {
            match self.publishes.iter().position(|p| p.job.name == job.name) {
                Some(i)
                    if differs(&self.publishes[i].job, job)
                        || self.publishes[i].slot.enabled != job.enabled =>
                {
                    let old = self.publishes[i].job.schedule.0.clone();
                    let p = &mut self.publishes[i];
                    p.slot
                        .reconfigure(Some(schedule(&job.schedule)?), job.enabled, now);
                    p.job = job.clone();
                    let what = describe(&old, &job.schedule.0, job.enabled);
                    self.changed(&mut notes, by, &job.name, what)?;
                }
                Some(_) => {}
                None if job.enabled => {
                    let slot = new_slot(self, &job.name, &job.schedule)?;
                    self.publishes.push(super::publishing::PublishSlot::new(
                        slot,
                        job.clone(),
                        now,
                    )?);
                    let what = format!("added (schedule {})", job.schedule.0);
                    self.changed(&mut notes, by, &job.name, what)?;
                }
                None => {}
            }
        }
        for job in &jobs.reconciles {
            match self.reconciles.iter().position(|r| r.job.name == job.name) {
                Some(i)
                    if self.reconciles[i].job != *job
                        || self.reconciles[i].slot.enabled != job.enabled =>
                {
                    let old = self.reconciles[i].job.schedule.0.clone();
                    let r = &mut self.reconciles[i];
                    r.slot
                        .reconfigure(Some(schedule(&job.schedule)?), job.enabled, now);
                    r.job = job.clone();
                    let what = describe(&old, &job.schedule.0, job.enabled);
                    self.changed(&mut notes, by, &job.name, what)?;
                }
                Some(_) => {}
                None if job.enabled => {
                    let slot = new_slot(self, &job.name, &job.schedule)?;
                    self.reconciles.push(super::reconciling::ReconcileSlot {
                        slot,
                        job: job.clone(),
                    });
                    let what = format!("added (schedule {})", job.schedule.0);
                    self.changed(&mut notes, by, &job.name, what)?;
                }
                None => {}
            }
        }
        // A job no longer in the files (or no longer enabled there), whatever its kind, fires
        // no more. Slots are never dropped: a run's end names its slot by index.
        let kept: BTreeSet<&str> = jobs
            .pulls
            .iter()
            .map(|j| j.name.as_str())
            .chain(
                jobs.builds
                    .iter()
                    .filter(|b| b.enabled)
                    .map(|b| b.name.as_str()),
            )
            .chain(jobs.publishes.iter().map(|p| p.name.as_str()))
            .chain(jobs.reconciles.iter().map(|r| r.name.as_str()))
            .collect();
        let removed: Vec<String> = self
            .slots()
            .filter(|s| s.enabled && !kept.contains(s.name.as_str()))
            .map(|s| s.name.clone())
            .collect();
        for name in removed {
            self.slots_mut()
                .filter(|s| s.name == name)
                .for_each(|s| s.enabled = false);
            self.changed(&mut notes, by, &name, "removed".into())?;
        }
        self.shared.set_jobs(jobs.clone());
        self.opts.jobs = jobs;
        Ok(notes)
    }

    /// Writes a `changed` line to the job's history, and says it in `notes`.
    fn changed(
        &self,
        notes: &mut Vec<String>,
        by: &str,
        job: &str,
        what: String,
    ) -> anyhow::Result<()> {
        self.history_of(job)
            .append(&[FireRecord::changed(job, format!("{what} by {by}"))])?;
        notes.push(format!("{job} {what}"));
        Ok(())
    }
}

fn describe(old: &str, new: &str, enabled: bool) -> String {
    if !enabled {
        "disabled".into()
    } else if old != new {
        format!("rescheduled {old} -> {new}")
    } else {
        "reloaded (settings changed)".into()
    }
}
