//! What every job the daemon fires has, whatever it runs (a pull, the build, a publication):
//! one [`Slot`]: its schedule, its fire history, the newest planned time it has spoken for, the
//! fire running now, and whether a reload removed it. The due → misfire → claim → run → finish
//! cycle goes through it, and which missed planned times run is decided by one catch-up
//! [`Policy`] ([`plan`]), so the three kinds cannot drift apart. What a kind runs, and what it
//! keeps besides (a pull's queue, the build's debounce, a final publication's owed periods),
//! lives beside it in `pulling.rs`, `building.rs` and `publishing.rs`.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::metrics;
use crate::config::CatchUp;
use crate::schedule::planned::local_rfc3339;
use crate::schedule::{FireEvent, FireHow, FireRecord, History, Schedule};

pub(super) struct Slot {
    pub(super) name: String,
    /// `None`: a build job run only after pulls (or by `trigger`).
    pub(super) schedule: Option<Schedule>,
    pub(super) history: History,
    /// The newest planned time spoken for (claimed, skipped, queued, or passed while paused).
    pub(super) last_planned: DateTime<Utc>,
    /// The fire running now: its planned time and how it was claimed.
    pub(super) running: Option<(DateTime<Utc>, FireHow)>,
    /// False once a reload removed or disabled the job: it fires no more (its index stays, as
    /// a run's end names its slot by index).
    pub(super) enabled: bool,
    tz: chrono_tz::Tz,
}

/// Which of the planned times that came due run: the one catch-up policy of every job.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    /// For times later than `misfire_after`: run the newest (`once`), all, or none.
    pub(super) catch_up: CatchUp,
    pub(super) misfire_after: Duration,
    /// Only the newest due time can run (a build, a preview: an older one would be replaced
    /// at once); the others are skipped.
    pub(super) newest_only: bool,
    /// Misfires older than this are skipped whatever `catch_up` says (a final publication's
    /// `catch_up_within`); the newest is always kept.
    pub(super) within: Option<Duration>,
}

/// What [`plan`] decided: the times to run (oldest first, each with how), the times skipped as
/// misfires, and how many more were missed beyond those listed.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Plan {
    pub(super) run: Vec<(DateTime<Utc>, FireHow)>,
    pub(super) skipped: Vec<DateTime<Utc>>,
    pub(super) more: u64,
}

/// Splits the due times (oldest first; `more` older ones not listed) by `policy` as of `now`.
pub(super) fn plan(due: &[DateTime<Utc>], more: u64, now: DateTime<Utc>, policy: Policy) -> Plan {
    let Some(&newest) = due.last() else {
        return Plan::default();
    };
    let late =
        chrono::Duration::from_std(policy.misfire_after).unwrap_or(chrono::Duration::seconds(60));
    let how = |t: DateTime<Utc>| {
        if now - t > late {
            FireHow::CaughtUp
        } else {
            FireHow::OnTime
        }
    };
    let mut out = Plan {
        more,
        ..Plan::default()
    };
    if policy.newest_only {
        out.skipped = due[..due.len() - 1].to_vec();
        out.run = vec![(newest, how(newest))];
        return out;
    }
    let oldest = policy
        .within
        .and_then(|w| chrono::Duration::from_std(w).ok())
        .map(|w| now - w);
    let (misfired, on_time): (Vec<_>, Vec<_>) = due.iter().partition(|t| now - **t > late);
    let (kept, dropped): (Vec<_>, Vec<_>) = misfired
        .into_iter()
        .partition(|t| oldest.is_none_or(|o| *t >= o) || *t == newest);
    out.skipped = dropped;
    match policy.catch_up {
        CatchUp::Skip => out.skipped.extend(kept),
        CatchUp::All => out
            .run
            .extend(kept.into_iter().map(|t| (t, FireHow::CaughtUp))),
        CatchUp::Once => {
            if let Some((&last, rest)) = kept.split_last() {
                out.skipped.extend_from_slice(rest);
                out.run.push((last, FireHow::CaughtUp));
            }
        }
    }
    out.skipped.sort();
    out.run
        .extend(on_time.into_iter().map(|t| (t, FireHow::OnTime)));
    out
}

impl Slot {
    /// The slot of a job, after closing the claims a killed daemon left open (at most
    /// `max_open`: its running fire and its queue); it goes on from
    /// the newest planned time its history speaks for (now, for a job never fired). The
    /// history past the retention is dropped by the daemon off its loop, once it started.
    pub(super) fn recover(
        warehouse: &std::path::Path,
        name: &str,
        schedule: Option<Schedule>,
        tz: chrono_tz::Tz,
        now: DateTime<Utc>,
        max_open: usize,
    ) -> anyhow::Result<Slot> {
        let history = History::new(warehouse, name);
        let closed = history
            .close_interrupted(max_open)
            .with_context(|| format!("recovering {}", history.path().display()))?;
        for c in &closed {
            tracing::warn!(job = %c.job, planned = %c.planned, "A fire's run was cut short when the daemon last stopped; it is recovered at its next run.");
            metrics::fire(&c.job, "interrupted");
        }
        let last_planned = history
            .last_planned()?
            .and_then(|p| DateTime::parse_from_rfc3339(&p).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(now);
        Ok(Slot::new(name, schedule, history, last_planned, tz))
    }

    /// A slot that goes on from `last_planned` (a job added by a reload: now).
    pub(super) fn new(
        name: &str,
        schedule: Option<Schedule>,
        history: History,
        last_planned: DateTime<Utc>,
        tz: chrono_tz::Tz,
    ) -> Slot {
        Slot {
            name: name.to_string(),
            schedule,
            history,
            last_planned,
            running: None,
            enabled: true,
            tz,
        }
    }

    /// Takes a reloaded job's schedule and whether it is enabled. A changed schedule starts at
    /// `now`: the times before the reload are not missed.
    pub(super) fn reconfigure(
        &mut self,
        schedule: Option<Schedule>,
        enabled: bool,
        now: DateTime<Utc>,
    ) {
        if self.schedule.as_ref().map(|s| &s.expr) != schedule.as_ref().map(|s| &s.expr) {
            self.last_planned = now;
        }
        self.schedule = schedule;
        self.enabled = enabled;
    }

    pub(super) fn text(&self, t: DateTime<Utc>) -> String {
        local_rfc3339(t, self.tz)
    }

    /// The planned times due since the last one spoken for, up to `now`, which are spoken
    /// for from here on; and how many older ones were missed beyond those listed.
    pub(super) fn take_due(&mut self, now: DateTime<Utc>) -> (Vec<DateTime<Utc>>, u64) {
        let Some(s) = &self.schedule else {
            return (Vec::new(), 0);
        };
        let (due, more) = s.due(self.last_planned, now);
        if let Some(t) = due.last() {
            self.last_planned = *t;
        }
        (due, more)
    }

    /// Records planned times skipped as misfires (the last line carries `more`).
    pub(super) fn skip_misfires(
        &self,
        times: &[DateTime<Utc>],
        more: u64,
    ) -> anyhow::Result<usize> {
        let mut lines: Vec<FireRecord> = times
            .iter()
            .map(|t| FireRecord::new(&self.name, &self.text(*t), FireEvent::SkippedMisfire))
            .collect();
        if let Some(last) = lines.last_mut() {
            last.more = more;
        }
        for _ in &lines {
            metrics::fire(&self.name, "skipped_misfire");
        }
        self.history.append(&lines)?;
        Ok(lines.len())
    }

    /// Records a planned time skipped because the job was running (or its queue full: said
    /// in `error`); a final publication's periods it leaves `owed`.
    pub(super) fn skip_overlap(
        &self,
        planned: DateTime<Utc>,
        error: Option<String>,
        owed: Vec<String>,
    ) -> anyhow::Result<()> {
        let mut r = FireRecord::new(&self.name, &self.text(planned), FireEvent::SkippedOverlap);
        r.error = error;
        r.owed = owed;
        self.history.append(&[r])?;
        metrics::fire(&self.name, "skipped_overlap");
        Ok(())
    }

    /// Claims a planned time (on disk before its run starts, so it runs once whatever happens
    /// next) and marks it running; its text.
    pub(super) fn claim(
        &mut self,
        planned: DateTime<Utc>,
        how: FireHow,
        periods: Vec<String>,
    ) -> anyhow::Result<String> {
        let text = self.text(planned);
        let mut claim = FireRecord::new(&self.name, &text, FireEvent::Claimed);
        claim.how = Some(how);
        claim.periods = periods;
        self.history.append(&[claim])?;
        self.running = Some((planned, how));
        Ok(text)
    }

    /// Claims a planned time that waits for the running fire (`how: queued`).
    pub(super) fn claim_queued(&self, planned: DateTime<Utc>) -> anyhow::Result<()> {
        let mut r = FireRecord::new(&self.name, &self.text(planned), FireEvent::Claimed);
        r.how = Some(FireHow::Queued);
        self.history.append(&[r])?;
        Ok(())
    }

    /// The running fire ended: its line, and what became of it counted.
    pub(super) fn finish(&mut self, record: &FireRecord) -> anyhow::Result<()> {
        self.running = None;
        self.history.append(std::slice::from_ref(record))?;
        metrics::fire(
            &self.name,
            if record.how == Some(FireHow::CaughtUp) {
                "caught_up"
            } else {
                "ran"
            },
        );
        Ok(())
    }

    /// Closes a claim that will not finish (the daemon stops): `interrupted`, with why.
    pub(super) fn interrupt(
        &self,
        planned: DateTime<Utc>,
        how: FireHow,
        error: &str,
        periods: Vec<String>,
        owed: Vec<String>,
    ) -> anyhow::Result<()> {
        let mut r = FireRecord::new(&self.name, &self.text(planned), FireEvent::Interrupted);
        r.how = Some(how);
        r.error = Some(error.to_string());
        r.periods = periods;
        r.owed = owed;
        self.history.append(&[r])?;
        metrics::fire(&self.name, "interrupted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn policy(catch_up: CatchUp) -> Policy {
        Policy {
            catch_up,
            misfire_after: Duration::from_secs(60),
            newest_only: false,
            within: None,
        }
    }

    /// The one catch-up policy, by hand: four times due, the first three missed (more than a
    /// minute late), the last on time.
    #[test]
    fn one_policy_decides_what_runs_after_downtime() {
        let now = at("2026-12-05T10:00:30Z");
        let due = [
            at("2026-12-05T09:57:00Z"),
            at("2026-12-05T09:58:00Z"),
            at("2026-12-05T09:59:00Z"),
            at("2026-12-05T10:00:00Z"),
        ];
        let (c, o) = (FireHow::CaughtUp, FireHow::OnTime);
        // A pull, `once`: the newest missed runs, caught up, then the one on time.
        let p = plan(&due, 7, now, policy(CatchUp::Once));
        assert_eq!(p.run, vec![(due[2], c), (due[3], o)]);
        assert_eq!(p.skipped, vec![due[0], due[1]]);
        assert_eq!(p.more, 7);
        // `all`: every one; `skip`: only the one on time.
        let p = plan(&due, 0, now, policy(CatchUp::All));
        assert_eq!(
            p.run,
            vec![(due[0], c), (due[1], c), (due[2], c), (due[3], o)]
        );
        let p = plan(&due, 0, now, policy(CatchUp::Skip));
        assert_eq!(p.run, vec![(due[3], o)]);
        assert_eq!(p.skipped, due[..3].to_vec());
        // A build or a preview: the newest only.
        let newest = Policy {
            newest_only: true,
            ..policy(CatchUp::Once)
        };
        let p = plan(&due, 0, now, newest);
        assert_eq!(p.run, vec![(due[3], o)]);
        assert_eq!(p.skipped, due[..3].to_vec());
        // A final publication: all, but not those older than `within` (two minutes).
        let final_job = Policy {
            within: Some(Duration::from_secs(120)),
            ..policy(CatchUp::All)
        };
        let p = plan(&due, 0, now, final_job);
        assert_eq!(p.run, vec![(due[2], c), (due[3], o)]);
        assert_eq!(p.skipped, vec![due[0], due[1]]);
        // Nothing due, nothing to do.
        assert_eq!(plan(&[], 0, now, final_job), Plan::default());
    }
}
