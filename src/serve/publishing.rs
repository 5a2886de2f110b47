//! The daemon's publish jobs (`kind = "publish"`): at each planned time, the period the job
//! names (the previous month, the current month, …, as of the planned time's date in the
//! project zone) is published, and pending pushes are sent again. One run per job at a time; a
//! planned time that finds the job running is skipped; missed ones (the daemon was down) are
//! caught up once, with the newest. A publish that records a revision asks for a build, so the
//! warehouse's `pub_*` tables show it.

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
}

impl Daemon {
    /// Fires the publish jobs whose planned times have come.
    pub(super) fn reconcile_publishes(&mut self, now: DateTime<Utc>) -> anyhow::Result<()> {
        for i in 0..self.publishes.len() {
            let tz = self.opts.tz;
            let slot = &mut self.publishes[i];
            let (due, more) = slot.schedule.due(slot.last_planned, now);
            let Some(newest) = due.last().copied() else {
                continue;
            };
            slot.last_planned = newest;
            // Only the newest is run: publishing the same period twice in a row changes nothing.
            slot.history.append(&super::skipped_misfires(
                &slot.job.name,
                &due[..due.len() - 1],
                tz,
                more,
            ))?;
            if slot.running.is_some() {
                slot.history.append(&[FireRecord::new(
                    &slot.job.name,
                    &local_rfc3339(newest, tz),
                    FireEvent::SkippedOverlap,
                )])?;
                continue;
            }
            let how = if due.len() > 1 || more > 0 {
                FireHow::CaughtUp
            } else {
                FireHow::OnTime
            };
            self.start_publish(i, newest, how)?;
        }
        Ok(())
    }

    fn start_publish(
        &mut self,
        i: usize,
        planned: DateTime<Utc>,
        how: FireHow,
    ) -> anyhow::Result<()> {
        let tz = self.opts.tz;
        let text = local_rfc3339(planned, tz);
        let slot = &mut self.publishes[i];
        let mut claim = FireRecord::new(&slot.job.name, &text, FireEvent::Claimed);
        claim.how = Some(how);
        slot.history.append(&[claim])?;
        slot.running = Some((planned, how));
        self.summary.runs += 1;
        let period =
            publish::choose_period(&slot.job.period, planned.with_timezone(&tz).date_naive());
        let opts = PublishOptions::for_job(&slot.job);
        let (warehouse, jobs, cfg, tx, name) = (
            self.opts.warehouse.clone(),
            self.opts.jobs.pulls.clone(),
            self.opts.publish.clone(),
            self.tx.clone(),
            slot.job.name.clone(),
        );
        tokio::spawn(async move {
            let t0 = Instant::now();
            let result = publish::publish(
                &warehouse,
                &jobs,
                &cfg,
                std::slice::from_ref(&period),
                &opts,
            )
            .await;
            let mut record = FireRecord::new(&name, &text, FireEvent::Finished);
            record.how = Some(how);
            record.attempts = 1;
            record.seconds = Some(t0.elapsed().as_secs_f64());
            let created = match result {
                Ok(r) => {
                    let pending = r.pending_pushes();
                    record.outcome = Some(if pending == 0 { "ok" } else { "push_pending" }.into());
                    if pending > 0 {
                        record.error = Some(format!("{pending} push(es) still pending"));
                    }
                    let p = &r.periods[0];
                    tracing::info!(job = %name, period = %p.period, revision = p.revision, created = p.created, pushes = r.pushes.len(), pending, "Publish job ran.");
                    p.created
                }
                Err(e) if e.downcast_ref::<publish::Held>().is_some() => {
                    // Not final yet, or the guard warns: held, not failed.
                    record.outcome = Some("held".into());
                    record.error = Some(format!("{e:#}"));
                    tracing::warn!(job = %name, period = %period, reason = %format!("{e:#}"), "Publish job held back; nothing was recorded or sent for the period.");
                    false
                }
                Err(e) => {
                    record.outcome = Some("failed".into());
                    record.error = Some(format!("{e:#}"));
                    tracing::error!(job = %name, period = %period, error = %format!("{e:#}"), "Publish job failed; nothing was recorded or sent for the period.");
                    false
                }
            };
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
        slot.history.append(std::slice::from_ref(&record))?;
        super::metrics::fire(&slot.job.name, "ran");
        if created {
            // The warehouse shows a revision after the next build: ask for one.
            if let Some(b) = self.build.as_mut() {
                b.ask();
            }
        }
        Ok(())
    }
}
