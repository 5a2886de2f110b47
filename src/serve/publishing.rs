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

use super::{Daemon, Msg};
use crate::config::PublishJobConfig;
use crate::publish::{self, PublishOptions};
use crate::schedule::planned::local_rfc3339;
use crate::schedule::{FireEvent, FireHow, FireRecord, History, Schedule};

pub(super) struct PublishSlot {
    pub(super) job: PublishJobConfig,
    pub(super) schedule: Schedule,
    pub(super) history: History,
    pub(super) last_planned: DateTime<Utc>,
    pub(super) running: Option<(DateTime<Utc>, FireHow)>,
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
        job: PublishJobConfig,
        schedule: Schedule,
        history: History,
        last_planned: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<PublishSlot> {
        let (owed, push_pending): (BTreeSet<String>, bool) = if job.provisional {
            (BTreeSet::new(), false)
        } else {
            let tail = history.tail()?;
            let last_push_pending = tail
                .iter()
                .rev()
                .find(|r| r.event == FireEvent::Finished)
                .is_some_and(|r| r.outcome.as_deref() == Some("push_pending"));
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
            job,
            schedule,
            history,
            last_planned,
            running: None,
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
}

impl Daemon {
    /// Fires the publish jobs whose planned times have come, and tries again what a final job
    /// owes.
    pub(super) fn reconcile_publishes(&mut self, now: DateTime<Utc>) -> anyhow::Result<()> {
        for i in 0..self.publishes.len() {
            let tz = self.opts.tz;
            let paused = self.paused.contains(&self.publishes[i].job.name);
            let slot = &mut self.publishes[i];
            let (due, more) = slot.schedule.due(slot.last_planned, now);
            if paused || !slot.job.enabled {
                // Its planned times pass unfired; what it owes waits for the resume.
                if let Some(t) = due.last() {
                    slot.last_planned = *t;
                }
                continue;
            }
            let Some(newest) = due.last().copied() else {
                // No planned time: what is owed, once its retry time has come.
                if slot.running.is_none()
                    && (!slot.owed.is_empty() || slot.push_pending)
                    && slot.retry_at.is_some_and(|t| t <= now)
                {
                    let periods: Vec<String> = slot.owed.iter().cloned().collect();
                    let planned = slot.last_planned;
                    self.start_publish(i, planned, FireHow::Retry, periods)?;
                }
                continue;
            };
            slot.last_planned = newest;
            let day = |t: DateTime<Utc>| t.with_timezone(&tz).date_naive();
            let periods: Vec<String> = if slot.job.provisional {
                // A preview: only the newest (an older preview would be replaced at once).
                let lines =
                    super::skipped_misfires(&slot.job.name, &due[..due.len() - 1], tz, more);
                for _ in &lines {
                    super::metrics::fire(&slot.job.name, "skipped_misfire");
                }
                slot.history.append(&lines)?;
                vec![publish::choose_period(&slot.job.period, day(newest))]
            } else {
                // A final: the period of every due time (two missed 11ths are two months)
                // within `catch_up_within`, and those still owed.
                let oldest = now
                    - chrono::Duration::from_std(slot.job.catch_up_within)
                        .unwrap_or(chrono::Duration::days(366));
                let (kept, dropped): (Vec<DateTime<Utc>>, Vec<DateTime<Utc>>) =
                    due.iter().partition(|t| **t >= oldest || **t == newest);
                if !dropped.is_empty() || more > 0 {
                    tracing::warn!(job = %slot.job.name, skipped = dropped.len() as u64 + more, "Missed planned times older than catch_up_within are skipped; publish their periods by hand if they are wanted.");
                    let lines = super::skipped_misfires(&slot.job.name, &dropped, tz, more);
                    for _ in &lines {
                        super::metrics::fire(&slot.job.name, "skipped_misfire");
                    }
                    slot.history.append(&lines)?;
                }
                let mut all = slot.owed.clone();
                all.extend(
                    kept.iter()
                        .map(|t| publish::choose_period(&slot.job.period, day(*t))),
                );
                all.into_iter().collect()
            };
            if slot.running.is_some() {
                let mut skipped = FireRecord::new(
                    &slot.job.name,
                    &local_rfc3339(newest, tz),
                    FireEvent::SkippedOverlap,
                );
                if !slot.job.provisional {
                    // Owed, so the run after this one publishes them.
                    skipped.owed = periods.clone();
                    slot.owed.extend(periods);
                    slot.retry_at.get_or_insert(now);
                }
                slot.history.append(&[skipped])?;
                super::metrics::fire(&slot.job.name, "skipped_overlap");
                continue;
            }
            let how = if due.len() > 1 || more > 0 {
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
        let tz = self.opts.tz;
        let text = local_rfc3339(planned, tz);
        let slot = &mut self.publishes[i];
        let mut claim = FireRecord::new(&slot.job.name, &text, FireEvent::Claimed);
        claim.how = Some(how);
        claim.periods = periods.clone();
        slot.history.append(&[claim])?;
        slot.running = Some((planned, how));
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
            record.outcome = Some(
                if !failed.is_empty() {
                    "failed"
                } else if !held.is_empty() {
                    "held"
                } else if pending > 0 {
                    "push_pending"
                } else {
                    "ok"
                }
                .into(),
            );
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
        slot.running = None;
        slot.running_periods.clear();
        slot.history.append(std::slice::from_ref(&record))?;
        for p in &record.periods {
            slot.owed.remove(p);
        }
        slot.owed.extend(record.owed.iter().cloned());
        slot.push_pending =
            !slot.job.provisional && record.outcome.as_deref() == Some("push_pending");
        if slot.owed.is_empty() && !slot.push_pending {
            slot.retry_at = None;
            slot.retries = 0;
        } else {
            slot.retry_at = Some(slot.next_retry(Utc::now()));
            if record.how == Some(FireHow::Retry) {
                slot.retries += 1;
            }
        }
        super::metrics::fire(&slot.job.name, "ran");
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
