//! The daemon's publish jobs (`kind = "publish"`): at each planned time, the period the job
//! names (the previous month, the current month, …, as of the planned time's date in the
//! project zone) is published, and pending pushes are sent again. One run per job at a time; a
//! planned time that finds the job running is skipped (a final job's periods stay owed); a
//! preview job catches up missed times once, with the newest; a final job publishes the period
//! of every missed time. A final job's periods that were not published (held by the rules, a
//! failure, a push still pending, a daemon cut short) are owed: its history keeps them, and the
//! daemon tries them again every `retry_every` (and with each fire) until they are. A publish
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
    /// A final job's periods not published yet (held, failed, interrupted, a push pending):
    /// tried again at `retry_at`, and with every fire of the job until they are.
    pub(super) owed: BTreeSet<String>,
    pub(super) retry_at: Option<DateTime<Utc>>,
}

impl PublishSlot {
    pub(super) fn new(
        job: PublishJobConfig,
        schedule: Schedule,
        history: History,
        last_planned: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<PublishSlot> {
        let owed: BTreeSet<String> = if job.provisional {
            BTreeSet::new()
        } else {
            history.owed()?.into_iter().collect()
        };
        if !owed.is_empty() {
            tracing::warn!(job = %job.name, periods = ?owed, "Periods this final publish job has not published yet; trying them again now.");
        }
        let retry_at = (!owed.is_empty()).then_some(now);
        super::metrics::periods_owed(&job.name, owed.len());
        Ok(PublishSlot {
            job,
            schedule,
            history,
            last_planned,
            running: None,
            running_periods: Vec::new(),
            owed,
            retry_at,
        })
    }
}

impl Daemon {
    /// Fires the publish jobs whose planned times have come, and tries again the periods a
    /// final job owes.
    pub(super) fn reconcile_publishes(&mut self, now: DateTime<Utc>) -> anyhow::Result<()> {
        for i in 0..self.publishes.len() {
            let tz = self.opts.tz;
            let slot = &mut self.publishes[i];
            let (due, more) = slot.schedule.due(slot.last_planned, now);
            let Some(newest) = due.last().copied() else {
                // No planned time: the periods owed, once their retry time has come.
                if slot.running.is_none()
                    && !slot.owed.is_empty()
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
                slot.history.append(&super::skipped_misfires(
                    &slot.job.name,
                    &due[..due.len() - 1],
                    tz,
                    more,
                ))?;
                vec![publish::choose_period(&slot.job.period, day(newest))]
            } else {
                // A final: every period a due time names (two missed 11ths are two months),
                // and those still owed.
                let mut all = slot.owed.clone();
                all.extend(
                    due.iter()
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

    fn start_publish(
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
            let result = publish::publish(&warehouse, &jobs, &cfg, &periods, &opts).await;
            let mut record = FireRecord::new(&name, &text, FireEvent::Finished);
            record.how = Some(how);
            record.attempts = 1;
            record.seconds = Some(t0.elapsed().as_secs_f64());
            let (created, owed) = match result {
                Ok(r) => {
                    let pending: BTreeSet<String> = r
                        .pushes
                        .iter()
                        .filter(|p| !p.acknowledged)
                        .map(|p| p.period.clone())
                        .collect();
                    record.outcome = Some(
                        if pending.is_empty() {
                            "ok"
                        } else {
                            "push_pending"
                        }
                        .into(),
                    );
                    if !pending.is_empty() {
                        record.error =
                            Some(format!("{} push(es) still pending", r.pending_pushes()));
                    }
                    for p in &r.periods {
                        tracing::info!(job = %name, period = %p.period, revision = p.revision, created = p.created, pushes = r.pushes.len(), pending = pending.len(), "Publish job ran.");
                    }
                    (r.periods.iter().any(|p| p.created), pending)
                }
                Err(e) => match e.downcast_ref::<publish::Held>() {
                    // Not final yet, or the guard warns: held, not failed.
                    Some(held) => {
                        record.outcome = Some("held".into());
                        record.error = Some(format!("{e:#}"));
                        tracing::warn!(job = %name, periods = ?held.periods, reason = %format!("{e:#}"), "Publish job held back; nothing was recorded or sent for the periods held.");
                        // The others were recorded (a build shows them).
                        (
                            held.periods.len() < periods.len(),
                            held.periods.iter().cloned().collect(),
                        )
                    }
                    None => {
                        record.outcome = Some("failed".into());
                        record.error = Some(format!("{e:#}"));
                        tracing::error!(job = %name, periods = ?periods, error = %format!("{e:#}"), "Publish job failed; nothing was recorded for the periods.");
                        (false, periods.iter().cloned().collect())
                    }
                },
            };
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
        slot.retry_at = (!slot.owed.is_empty()).then(|| {
            Utc::now() + chrono::Duration::from_std(slot.job.retry_every).unwrap_or_default()
        });
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
