//! The daemon's build job: a build after pulls that landed rows, once they have been quiet
//! for `quiet_period` (or `max_delay` after the first), and at its planned times; never two at
//! once (a planned time that finds one running builds again when it ends).

use std::time::Instant;

use chrono::{DateTime, Utc};

use super::slot::{plan, Policy, Slot};
use super::{metrics, Daemon, Msg, Notice};
use crate::config::{BuildJobConfig, CatchUp};
use crate::models::build::{BuildOptions, BuildSummary};
use crate::schedule::{FireEvent, FireHow, FireOutcome, FireRecord};

pub(super) struct BuildSlot {
    pub(super) slot: Slot,
    pub(super) job: BuildJobConfig,
    /// Pulls that landed rows and no build has started since: the first's and the last's time.
    first_landed: Option<Instant>,
    last_landed: Option<Instant>,
    pub(super) landed_runs: usize,
    /// `landed_runs` when the running build started (reported when it ends).
    landed_runs_at_start: usize,
    /// A planned time (or a trigger) found the previous build running: build once it ends.
    pub(super) again: bool,
}

impl BuildSlot {
    pub(super) fn new(slot: Slot, job: BuildJobConfig) -> BuildSlot {
        BuildSlot {
            slot,
            job,
            first_landed: None,
            last_landed: None,
            landed_runs: 0,
            landed_runs_at_start: 0,
            again: false,
        }
    }

    /// Asks for a build: it starts once nothing more has asked for `quiet_period`, or
    /// `max_delay` after the first ask.
    pub(super) fn ask(&mut self) {
        let now = Instant::now();
        self.first_landed.get_or_insert(now);
        self.last_landed = Some(now);
    }

    /// When the pending build's debounce ends (the quiet period after the last landing, or
    /// the maximum delay after the first), if a build is pending and none is running.
    pub(super) fn deadline(&self) -> Option<Instant> {
        if self.slot.running.is_some() {
            return None;
        }
        let (first, last) = (self.first_landed?, self.last_landed?);
        Some((last + self.job.quiet_period).min(first + self.job.max_delay))
    }
}

/// A build catches up the newest of its missed planned times only (an older build would be
/// replaced at once).
const BUILD_POLICY: Policy = Policy {
    catch_up: CatchUp::Once,
    misfire_after: std::time::Duration::from_secs(60),
    newest_only: true,
    within: None,
};

impl Daemon {
    /// Scheduled builds, and builds after pulls that landed rows once they have been quiet for
    /// the quiet period (or the maximum delay has passed since the first).
    pub(super) fn reconcile_build(&mut self, now: DateTime<Utc>) -> anyhow::Result<()> {
        let paused = self
            .build
            .as_ref()
            .is_some_and(|b| self.is_paused(&b.job.name));
        let Some(b) = self.build.as_mut() else {
            return Ok(());
        };
        let (due, more) = b.slot.take_due(now);
        if paused || !b.slot.enabled {
            // Its planned times pass; the pulls' asks wait for the resume.
            return Ok(());
        }
        let plan = plan(&due, more, now, BUILD_POLICY);
        b.slot.skip_misfires(&plan.skipped, plan.more)?;
        let scheduled = plan.run.last().copied();
        if b.slot.running.is_some() {
            if let Some((t, _)) = scheduled {
                // Never two builds at once: build again once this one ends.
                b.again = true;
                b.slot.skip_overlap(t, None, Vec::new())?;
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
            Some(run) => Some(run),
            None if debounced || b.again => Some((now, FireHow::Triggered)),
            None => None,
        };
        if let Some((planned, how)) = start {
            b.again = false;
            self.start_build(planned, how)?;
        }
        Ok(())
    }

    pub(super) fn start_build(
        &mut self,
        planned: DateTime<Utc>,
        how: FireHow,
    ) -> anyhow::Result<()> {
        let b = self.build.as_mut().expect("a build job");
        let text = b.slot.claim(planned, how, Vec::new())?;
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
        let console = self.published.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            let result = tokio::task::spawn_blocking(move || {
                let r = crate::models::build::build(&warehouse, &sql_dir, &jobs, &opts);
                // The console lets go of the file just replaced (this build's spare) before
                // the next build can start.
                if let (Ok(rec), Some(p)) = (&r, &console) {
                    if rec.published {
                        let _ = p.connect();
                    }
                }
                r
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
                    record.outcome = Some(if r.published {
                        FireOutcome::Ok
                    } else {
                        FireOutcome::Failed
                    });
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
                    record.outcome = Some(if busy {
                        FireOutcome::Busy
                    } else {
                        FireOutcome::Failed
                    });
                    record.error = Some(format!("{e:#}"));
                    if busy {
                        tracing::warn!("Build deferred: another build holds the warehouse.");
                    } else {
                        tracing::error!(error = %format!("{e:#}"), "Build failed; the published warehouse is unchanged.");
                    }
                    (None, busy)
                }
                Err(e) => {
                    record.outcome = Some(FireOutcome::Failed);
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

    /// A build ended: recorded and counted; a build another process held off asks again.
    pub(super) fn build_done(
        &mut self,
        record: FireRecord,
        summary: Option<BuildSummary>,
        busy: bool,
    ) -> anyhow::Result<()> {
        let Some(b) = self.build.as_mut() else {
            return Ok(());
        };
        b.slot.finish(&record)?;
        if busy && b.first_landed.is_none() {
            // Another build (a `chiso build` by hand) held the lock: try again after the quiet
            // period.
            b.ask();
        }
        metrics::build(&record, summary.as_ref());
        let how = record.how.unwrap_or(FireHow::Triggered);
        let pulls = std::mem::take(&mut b.landed_runs_at_start);
        self.notice(Notice::BuildFinished {
            planned: record.planned.clone(),
            how,
            outcome: record
                .outcome
                .map(|o| o.as_str())
                .unwrap_or_default()
                .to_string(),
            seconds: record.seconds.unwrap_or(0.0),
            pulls,
            build: summary,
            error: record.error.clone(),
        });
        Ok(())
    }
}
