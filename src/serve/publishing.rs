//! The daemon's publish jobs (`kind = "publish"`): at each planned time, the period the job
//! names (the previous month, the current month, …, as of the planned time's date in the
//! project zone) is published, and pending pushes are sent again. One run per job at a time; a
//! planned time that finds the job running is skipped (a final job's periods stay owed).
//!
//! A preview job catches up missed times once, with the newest. A final job publishes the
//! period of every missed time within `catch_up_within`, one period at a time (one that fails
//! does not keep the others back). Its periods that were not published (held by the rules, a
//! failure, a daemon cut short) are owed: its history keeps them, and the daemon tries them
//! again after `retry_every` (doubled after each retry that leaves them owed, up to a day, so a
//! period held for weeks adds a few history lines a day) and with each fire, until they are; a
//! push left pending is sent again by the same retry, without recording anything. A publish
//! that records a revision asks for a build, so the warehouse's `pub_*` tables show it.

use std::collections::BTreeSet;
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::slot::{plan, Policy, Slot};
use super::{Daemon, Msg};
use crate::config::{CatchUp, PublishJobConfig};
use crate::publish::{self, PublishOptions};
use crate::schedule::{FireEvent, FireHow, FireOutcome, FireRecord};

pub(super) struct PublishSlot {
    pub(super) slot: Slot,
    pub(super) job: PublishJobConfig,
    /// The periods the running fire publishes.
    pub(super) running_periods: Vec<String>,
    /// A final job's periods not published yet (held, failed, interrupted): tried again at
    /// `retry_at`, and with every fire of the job until they are.
    pub(super) owed: BTreeSet<String>,
    /// The job's last fire left a push pending: the retry sends it (without recording).
    pub(super) push_pending: bool,
    pub(super) retry_at: Option<DateTime<Utc>>,
    /// Retries in a row that left something owed: the wait doubles with each, up to a day.
    pub(super) retries: u32,
}

/// The longest wait between two retries of a final job.
const MAX_RETRY_WAIT: std::time::Duration = std::time::Duration::from_secs(86_400);

impl PublishSlot {
    pub(super) fn new(
        slot: Slot,
        job: PublishJobConfig,
        now: DateTime<Utc>,
    ) -> anyhow::Result<PublishSlot> {
        let (owed, push_pending): (BTreeSet<String>, bool) = if job.provisional {
            (BTreeSet::new(), false)
        } else {
            let tail = slot.history.tail()?;
            let last_push_pending = tail
                .iter()
                .rev()
                .find(|r| r.event == FireEvent::Finished)
                .is_some_and(|r| r.outcome == Some(FireOutcome::PushPending));
            (
                crate::schedule::history::owed_after(&tail)
                    .into_iter()
                    .collect(),
                last_push_pending,
            )
        };
        if !owed.is_empty() {
            tracing::warn!(job = %job.name, periods = ?owed, "Periods this final publish job has not published yet; trying them again now.");
        }
        let retry_at = (!owed.is_empty() || push_pending).then_some(now);
        super::metrics::periods_owed(&job.name, owed.len());
        Ok(PublishSlot {
            slot,
            job,
            running_periods: Vec::new(),
            owed,
            push_pending,
            retry_at,
            retries: 0,
        })
    }

    /// When to try again after a fire that left something owed: `retry_every`, doubled for
    /// each retry in a row before, up to a day.
    fn next_retry(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let wait = self
            .job
            .retry_every
            .saturating_mul(1u32 << self.retries.min(16))
            .min(MAX_RETRY_WAIT.max(self.job.retry_every));
        now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1))
    }

    /// A preview runs the newest of its missed times only (an older preview would be replaced
    /// at once); a final job the period of every missed time within `catch_up_within`.
    fn policy(&self) -> Policy {
        Policy {
            catch_up: if self.job.provisional {
                CatchUp::Once
            } else {
                CatchUp::All
            },
            misfire_after: std::time::Duration::from_secs(60),
            newest_only: self.job.provisional,
            within: (!self.job.provisional).then_some(self.job.catch_up_within),
        }
    }
}

impl Daemon {
    /// Fires the publish jobs whose planned times have come, and tries again what a final job
    /// owes.
    pub(super) fn reconcile_publishes(&mut self, now: DateTime<Utc>) -> anyhow::Result<()> {
        for i in 0..self.publishes.len() {
            let tz = self.opts.tz;
            let paused = self.is_paused(&self.publishes[i].job.name);
            let p = &mut self.publishes[i];
            let (due, more) = p.slot.take_due(now);
            if paused || !p.slot.enabled {
                // Its planned times pass unfired; what it owes waits for the resume.
                continue;
            }
            if due.is_empty() {
                // No planned time: what is owed, once its retry time has come.
                if p.slot.running.is_none()
                    && (!p.owed.is_empty() || p.push_pending)
                    && p.retry_at.is_some_and(|t| t <= now)
                {
                    let periods: Vec<String> = p.owed.iter().cloned().collect();
                    let planned = p.slot.last_planned;
                    self.start_publish(i, planned, FireHow::Retry, periods)?;
                }
                continue;
            }
            let plan = plan(&due, more, now, p.policy());
            if !p.job.provisional && (!plan.skipped.is_empty() || plan.more > 0) {
                tracing::warn!(job = %p.job.name, skipped = plan.skipped.len() as u64 + plan.more, "Missed planned times older than catch_up_within are skipped; publish their periods by hand if they are wanted.");
            }
            p.slot.skip_misfires(&plan.skipped, plan.more)?;
            let Some(&(newest, _)) = plan.run.last() else {
                continue;
            };
            let day = |t: DateTime<Utc>| t.with_timezone(&tz).date_naive();
            // A final: the period of every time kept (two missed 11ths are two months), and
            // those still owed.
            let mut periods = p.owed.clone();
            if p.job.provisional {
                periods.clear();
            }
            periods.extend(
                plan.run
                    .iter()
                    .map(|(t, _)| publish::choose_period(&p.job.period, day(*t))),
            );
            let periods: Vec<String> = periods.into_iter().collect();
            if p.slot.running.is_some() {
                let mut owed = Vec::new();
                if !p.job.provisional {
                    // Owed, so the run after this one publishes them.
                    owed = periods.clone();
                    p.owed.extend(periods);
                    p.retry_at.get_or_insert(now);
                }
                p.slot.skip_overlap(newest, None, owed)?;
                continue;
            }
            let how = if plan.run.iter().any(|(_, h)| *h == FireHow::CaughtUp) || plan.more > 0 {
                FireHow::CaughtUp
            } else {
                FireHow::OnTime
            };
            self.start_publish(i, newest, how, periods)?;
        }
        Ok(())
    }

    pub(super) fn start_publish(
        &mut self,
        i: usize,
        planned: DateTime<Utc>,
        how: FireHow,
        periods: Vec<String>,
    ) -> anyhow::Result<()> {
        let slot = &mut self.publishes[i];
        let text = slot.slot.claim(planned, how, periods.clone())?;
        slot.running_periods = periods.clone();
        self.summary.runs += 1;
        let opts = PublishOptions::for_job(&slot.job);
        let final_job = !slot.job.provisional;
        let (warehouse, jobs, cfg, tx, name) = (
            self.opts.warehouse.clone(),
            self.opts.jobs.pulls.clone(),
            self.opts.publish.clone(),
            self.tx.clone(),
            slot.job.name.clone(),
        );
        tokio::spawn(async move {
            let t0 = Instant::now();
            // A final job publishes its periods one at a time, so that one that fails (or is
            // held) does not keep the others from being published; none asked for (a retry of
            // pending pushes): the pushes alone.
            let groups: Vec<Vec<String>> = if final_job && !periods.is_empty() {
                periods.iter().map(|p| vec![p.clone()]).collect()
            } else {
                vec![periods.clone()]
            };
            let (mut created, mut owed) = (false, BTreeSet::new());
            let (mut held, mut failed, mut pending) = (Vec::new(), Vec::new(), 0usize);
            for group in &groups {
                match publish::publish(&warehouse, &jobs, &cfg, group, &opts).await {
                    Ok(r) => {
                        pending = r.pending_pushes();
                        for p in &r.periods {
                            tracing::info!(job = %name, period = %p.period, revision = p.revision, created = p.created, pending, "Publish job ran.");
                        }
                        created |= r.periods.iter().any(|p| p.created);
                    }
                    Err(e) => match e.downcast_ref::<publish::Held>() {
                        // Not final yet, or the guard warns: held, not failed.
                        Some(h) => {
                            tracing::warn!(job = %name, periods = ?h.periods, reason = %format!("{e:#}"), "Publish job held back; nothing was recorded or sent for the periods held.");
                            created |= h.periods.len() < group.len();
                            owed.extend(h.periods.iter().cloned());
                            held.push(format!("{e:#}"));
                        }
                        None => {
                            tracing::error!(job = %name, periods = ?group, error = %format!("{e:#}"), "Publish job failed; nothing was recorded for the periods.");
                            owed.extend(group.iter().cloned());
                            failed.push(format!("{e:#}"));
                        }
                    },
                }
            }
            let mut record = FireRecord::new(&name, &text, FireEvent::Finished);
            record.how = Some(how);
            record.attempts = 1;
            record.seconds = Some(t0.elapsed().as_secs_f64());
            record.outcome = Some(if !failed.is_empty() {
                FireOutcome::Failed
            } else if !held.is_empty() {
                FireOutcome::Held
            } else if pending > 0 {
                FireOutcome::PushPending
            } else {
                FireOutcome::Ok
            });
            let mut said: Vec<String> = failed.into_iter().chain(held).collect();
            if pending > 0 {
                said.push(format!("{pending} push(es) still pending"));
            }
            if !said.is_empty() {
                record.error = Some(said.join("\n"));
            }
            record.periods = periods;
            if final_job {
                record.owed = owed.into_iter().collect();
            }
            let _ = tx.send(Msg::PublishDone {
                slot: i,
                record,
                created,
            });
        });
        Ok(())
    }

    pub(super) fn publish_done(
        &mut self,
        i: usize,
        record: FireRecord,
        created: bool,
    ) -> anyhow::Result<()> {
        let slot = &mut self.publishes[i];
        slot.running_periods.clear();
        slot.slot.finish(&record)?;
        for p in &record.periods {
            slot.owed.remove(p);
        }
        slot.owed.extend(record.owed.iter().cloned());
        slot.push_pending =
            !slot.job.provisional && record.outcome == Some(FireOutcome::PushPending);
        if slot.owed.is_empty() && !slot.push_pending {
            slot.retry_at = None;
            slot.retries = 0;
        } else {
            slot.retry_at = Some(slot.next_retry(Utc::now()));
            if record.how == Some(FireHow::Retry) {
                slot.retries += 1;
            }
        }
        super::metrics::publish(&record, slot.owed.len());
        if created {
            // The warehouse shows a revision after the next build: ask for one.
            if let Some(b) = self.build.as_mut() {
                b.ask();
            }
        }
        Ok(())
    }
}
