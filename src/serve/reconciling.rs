//! The daemon's reconcile jobs (`kind = "reconcile"`): at each planned time, the periods the job
//! names (as of the planned time's date in the project zone) are compared with the portal's
//! published evaluation, read from the published warehouse (`chiso reconcile`). The fire's
//! outcome is `ok` when every figure agrees within rounding, `differences` when some do not
//! (their summary in the fire's `error`), `failed` when the warehouse holds no reconciliation
//! of a period. A missed time runs once, with the newest (the warehouse holds one state).

use std::collections::BTreeSet;
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::slot::{plan, Policy, Slot};
use super::{Daemon, Msg};
use crate::config::{CatchUp, ReconcileJobConfig};
use crate::schedule::{FireEvent, FireHow, FireOutcome, FireRecord};

pub(super) struct ReconcileSlot {
    pub(super) slot: Slot,
    pub(super) job: ReconcileJobConfig,
}

const POLICY: Policy = Policy {
    catch_up: CatchUp::Once,
    misfire_after: std::time::Duration::from_secs(60),
    newest_only: true,
    within: None,
};

impl Daemon {
    /// Fires the reconcile jobs whose planned times have come.
    pub(super) fn fire_reconcile_jobs(&mut self, now: DateTime<Utc>) -> anyhow::Result<()> {
        for i in 0..self.reconciles.len() {
            let paused = self.is_paused(&self.reconciles[i].job.name);
            let r = &mut self.reconciles[i];
            let (due, more) = r.slot.take_due(now);
            if paused || !r.slot.enabled || due.is_empty() {
                continue;
            }
            let plan = plan(&due, more, now, POLICY);
            r.slot.skip_misfires(&plan.skipped, plan.more)?;
            let Some(&(newest, how)) = plan.run.last() else {
                continue;
            };
            if r.slot.running.is_some() {
                r.slot.skip_overlap(newest, None, Vec::new())?;
                continue;
            }
            self.start_reconcile_job(i, newest, how)?;
        }
        Ok(())
    }

    pub(super) fn start_reconcile_job(
        &mut self,
        i: usize,
        planned: DateTime<Utc>,
        how: FireHow,
    ) -> anyhow::Result<()> {
        let today = planned.with_timezone(&self.opts.tz).date_naive();
        let r = &mut self.reconciles[i];
        let periods: Vec<String> = r
            .job
            .periods
            .iter()
            .map(|c| crate::publish::choose_period(c, today))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let text = r.slot.claim(planned, how, periods.clone())?;
        self.summary.runs += 1;
        let (warehouse, tx, name) = (
            self.opts.warehouse.clone(),
            self.tx.clone(),
            r.job.name.clone(),
        );
        tokio::spawn(async move {
            let t0 = Instant::now();
            let mut record = FireRecord::new(&name, &text, FireEvent::Finished);
            record.how = Some(how);
            record.attempts = 1;
            record.periods = periods.clone();
            let job = name.clone();
            // Each period on its own: one not pulled yet does not hide another's differences.
            let ran = tokio::task::spawn_blocking(move || {
                let conn = crate::reconcile::open(&warehouse)?;
                Ok::<_, anyhow::Error>(
                    periods
                        .iter()
                        .map(|p| {
                            crate::reconcile::report(&conn, p, crate::reconcile::Level::Indicator)
                                .map_err(|e| format!("{p}: {e:#}"))
                        })
                        .collect::<Vec<_>>(),
                )
            })
            .await;
            let results = match ran {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => vec![Err(format!("{e:#}"))],
                // Recorded, not left running for ever.
                Err(e) => vec![Err(format!("the reconciliation panicked: {e}"))],
            };
            let mut said = Vec::new();
            let (mut failed, mut differ) = (false, false);
            for r in &results {
                match r {
                    Ok(r) => {
                        tracing::info!(job = %job, period = %r.period, compared = r.compared, beyond_rounding = r.beyond(), "Reconcile job ran.");
                        if r.beyond() > 0 {
                            differ = true;
                            said.push(crate::reconcile::summary(r));
                        }
                    }
                    Err(e) => {
                        tracing::error!(job = %job, error = %e, "Reconcile job failed.");
                        failed = true;
                        said.push(e.clone());
                    }
                }
            }
            record.outcome = Some(if failed {
                FireOutcome::Failed
            } else if differ {
                FireOutcome::Differences
            } else {
                FireOutcome::Ok
            });
            if !said.is_empty() {
                record.error = Some(said.join("\n"));
            }
            record.seconds = Some(t0.elapsed().as_secs_f64());
            let _ = tx.send(Msg::ReconcileDone { slot: i, record });
        });
        Ok(())
    }

    pub(super) fn reconcile_job_done(
        &mut self,
        i: usize,
        record: FireRecord,
    ) -> anyhow::Result<()> {
        super::metrics::reconcile(&record);
        self.reconciles[i].slot.finish(&record)
    }
}
