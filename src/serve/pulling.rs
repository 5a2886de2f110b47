//! The daemon's pull jobs: each planned time runs the job's pull (with its retries and
//! backoff, each attempt bounded by its timeout), waits in its bounded queue, or is skipped;
//! a run that lands rows asks for a build.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use super::slot::{plan, Policy, Slot};
use super::{metrics, Daemon, Msg, Notice};
use crate::config::{JobConfig, Overlap};
use crate::lake::commit::CommitError;
use crate::pull::{self, PullError, RunContext};
use crate::schedule::{FireEvent, FireHow, FireOutcome, FireRecord};

/// How long a run stopped at its timeout may take to stop before it is abandoned as stuck.
const STUCK_AFTER: Duration = Duration::from_secs(5);

pub(super) struct PullSlot {
    pub(super) slot: Slot,
    pub(super) job: JobConfig,
    /// Fires waiting for the running one (at most `max_queued`).
    pub(super) queue: VecDeque<(DateTime<Utc>, FireHow)>,
    /// The running fire's task, and its attempt's (aborted with it).
    tasks: Option<(AbortHandle, Arc<Mutex<Option<AbortHandle>>>)>,
}

impl PullSlot {
    pub(super) fn new(slot: Slot, job: JobConfig) -> PullSlot {
        PullSlot {
            slot,
            job,
            queue: VecDeque::new(),
            tasks: None,
        }
    }

    fn policy(&self) -> Policy {
        Policy {
            catch_up: self.job.run.catch_up,
            misfire_after: self.job.run.misfire_after.0,
            newest_only: false,
            within: None,
        }
    }

    /// Stops the running fire's tasks (the grace ran out).
    pub(super) fn abort(&mut self) {
        if let Some((task, attempt)) = self.tasks.take() {
            task.abort();
            if let Some(a) = attempt.lock().expect("attempt").take() {
                a.abort();
            }
        }
    }
}

impl Daemon {
    /// Fires every pull job's planned times that came due, by its catch-up policy.
    pub(super) fn reconcile_pulls(&mut self, now: DateTime<Utc>) -> anyhow::Result<()> {
        for i in 0..self.pulls.len() {
            let paused = self.is_paused(&self.pulls[i].job.name);
            let p = &mut self.pulls[i];
            let (due, more) = p.slot.take_due(now);
            if due.is_empty() || !p.slot.enabled || paused {
                // Paused (or removed by a reload): its planned times pass unfired.
                continue;
            }
            let plan = plan(&due, more, now, p.policy());
            let caught_up = plan
                .run
                .iter()
                .filter(|(_, h)| *h == FireHow::CaughtUp)
                .count();
            if !plan.skipped.is_empty() || caught_up > 0 || more > 0 {
                tracing::warn!(
                    job = %p.job.name,
                    missed = plan.skipped.len() + caught_up + more as usize,
                    caught_up,
                    catch_up = ?p.job.run.catch_up,
                    "Fires were missed while the daemon was down or behind."
                );
                metrics::misses(&p.job.name, (plan.skipped.len() + caught_up) as u64 + more);
            }
            self.summary.skipped += p.slot.skip_misfires(&plan.skipped, plan.more)? as u64;
            for (t, how) in plan.run {
                self.fire(i, t, how)?;
            }
        }
        Ok(())
    }

    /// One planned time of a pull job: run it, queue it, or record it skipped.
    pub(super) fn fire(
        &mut self,
        i: usize,
        planned: DateTime<Utc>,
        how: FireHow,
    ) -> anyhow::Result<()> {
        self.summary.fires += 1;
        let p = &mut self.pulls[i];
        if p.slot.running.is_none() && p.queue.is_empty() {
            return self.start_pull(i, planned, how);
        }
        let text = p.slot.text(planned);
        // Caught-up fires run one after another.
        let queue = p.job.run.overlap == Overlap::Queue || how == FireHow::CaughtUp;
        if queue && p.queue.len() >= p.job.run.max_queued {
            // A bounded queue: a pull reads from its cursor, so the fires already waiting
            // fetch what this one would have.
            let why = format!(
                "{} fires already wait for the running one (max_queued)",
                p.queue.len()
            );
            p.slot.skip_overlap(planned, Some(why), Vec::new())?;
            tracing::warn!(job = %p.job.name, planned = %text, waiting = p.queue.len(), "Fire skipped: the job's queue is full (max_queued).");
            self.summary.skipped += 1;
        } else if queue {
            p.slot.claim_queued(planned)?;
            p.queue.push_back((planned, how));
        } else {
            p.slot.skip_overlap(planned, None, Vec::new())?;
            tracing::info!(job = %p.job.name, planned = %text, "Fire skipped: the job's previous run is still going (overlap = \"skip\").");
            self.summary.skipped += 1;
        }
        Ok(())
    }

    fn start_pull(&mut self, i: usize, planned: DateTime<Utc>, how: FireHow) -> anyhow::Result<()> {
        let p = &mut self.pulls[i];
        let text = p.slot.claim(planned, how, Vec::new())?;
        self.summary.runs += 1;
        let attempt = Arc::new(Mutex::new(None));
        let task = tokio::spawn(run_fire(
            self.ctx.clone(),
            p.job.clone(),
            text,
            how,
            attempt.clone(),
            self.stop.clone(),
            self.tx.clone(),
            i,
        ));
        p.tasks = Some((task.abort_handle(), attempt));
        Ok(())
    }

    /// A pull fire ended: recorded; a run that landed rows asks for a build; the next queued
    /// fire starts.
    pub(super) fn pull_done(&mut self, i: usize, record: FireRecord) -> anyhow::Result<()> {
        let p = &mut self.pulls[i];
        p.tasks = None;
        p.slot.finish(&record)?;
        self.notice(Notice::PullFinished {
            job: record.job.clone(),
            planned: record.planned.clone(),
            outcome: record
                .outcome
                .map(|o| o.as_str())
                .unwrap_or_default()
                .to_string(),
            rows_landed: record.rows_landed,
            seconds: record.seconds.unwrap_or(0.0),
        });
        if record.rows_landed > 0 {
            if let Some(b) = self.build.as_mut().filter(|b| b.job.after_pulls) {
                b.ask();
                b.landed_runs += 1;
            }
        }
        let paused = self.is_paused(&self.pulls[i].job.name);
        let p = &mut self.pulls[i];
        if paused || !p.slot.enabled {
            // Paused or removed meanwhile: the fires waiting never run.
            for (t, _) in p.queue.drain(..) {
                p.slot.interrupt(
                    t,
                    FireHow::Queued,
                    "the job was paused (or removed) before it ran",
                    Vec::new(),
                    Vec::new(),
                )?;
            }
        }
        if !self.stopping() {
            if let Some((planned, how)) = self.pulls[i].queue.pop_front() {
                self.start_pull(i, planned, how)?;
            }
        }
        Ok(())
    }

    /// At stop, queued fires never start: each claim is closed as interrupted.
    pub(super) fn drop_queues(&mut self) -> anyhow::Result<()> {
        for p in &mut self.pulls {
            for (t, _) in p.queue.drain(..) {
                p.slot.interrupt(
                    t,
                    FireHow::Queued,
                    "the daemon stopped before it ran",
                    Vec::new(),
                    Vec::new(),
                )?;
            }
        }
        Ok(())
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
        let (outcome, error): (FireOutcome, Option<String>) = match tokio::time::timeout(
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
                        FireOutcome::TimedOut,
                        Some(format!(
                            "the run took longer than its timeout, {}; it is recovered at its next start",
                            humantime::format_duration(policy.timeout.0)
                        )),
                    ),
                    Err(_) => {
                        super::metrics::stuck(&job.name);
                        tracing::error!(job = %job.name, timeout = %humantime::format_duration(policy.timeout.0), "A run is stuck in blocking I/O past its timeout and could not be stopped; abandoned. It holds the job's lock until the I/O returns, so the job's next fires find it busy.");
                        (
                            FireOutcome::Stuck,
                            Some(format!(
                                "the run took longer than its timeout, {}, and was still blocked {} s after being stopped (in I/O: a hung disk or mount?); abandoned, it holds the job's lock until the I/O returns",
                                humantime::format_duration(policy.timeout.0),
                                STUCK_AFTER.as_secs()
                            )),
                        )
                    }
                }
            }
            Ok(Err(e)) if e.is_panic() => (FireOutcome::Failed, Some("the run panicked".into())),
            Ok(Err(_)) => (FireOutcome::Failed, Some("the run was cancelled".into())),
            Ok(Ok(Err(PullError::Commit(CommitError::Busy { .. })))) => (
                FireOutcome::Busy,
                Some("another run holds the job's lock (a `chiso run` by hand, or a run abandoned as stuck)".into()),
            ),
            Ok(Ok(Err(e))) => (FireOutcome::Failed, Some(e.to_string())),
            Ok(Ok(Ok(rep))) => {
                record.run_ids.push(rep.run_id.clone());
                record.rows_landed += rep.totals.rows_landed;
                super::metrics::run(&rep);
                (rep.outcome.into(), rep.error.clone())
            }
        };
        if !matches!(outcome, FireOutcome::Ok | FireOutcome::Quarantined)
            && record.run_ids.len() < record.attempts as usize
        {
            super::metrics::run_failed(&job.name, outcome.as_str());
        }
        let retry = matches!(outcome, FireOutcome::Failed | FireOutcome::TimedOut)
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
