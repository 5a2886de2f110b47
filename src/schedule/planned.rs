//! When each job is planned to fire, in the project's time zone.
//!
//! tokio-cron-scheduler wakes the daemon when a job's schedule comes due, but the daemon does
//! not take the crate's word for *which* planned time that is, nor trust it to wake it at all:
//! its time-zone schedules have been reported firing at UTC times, or twice (its issues #105,
//! #107); it computes a time-zone job's offset once, when the job is made; it reads
//! day-of-month and day-of-week as "and" where cron reads "or". So the planned times are
//! computed here, with croner, from the last planned time the job claimed; a wake-up only says
//! "look now", the daemon's own one-second tick looks as well, and each (job, planned time) is
//! claimed once in the history, so a double or early wake-up runs nothing twice and a missed
//! one is caught within a second. (croner, which computes them, has its own trap: its
//! iterator skips every other second of a per-second schedule, and the times it finds keep the
//! fraction of a second they started from; both are worked around and tested here.)

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::config::CronExpr;

/// A parsed schedule in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    tz: Tz,
    pub expr: String,
}

/// At most this many planned times are listed at once (a seconds schedule after a long
/// downtime); the rest are counted.
pub const MAX_LISTED: usize = 10_000;

/// Older planned times are counted up to this many (then the count is a lower bound).
pub const MAX_COUNTED: u64 = 10_000_000;

impl Schedule {
    pub fn new(expr: &CronExpr, tz: Tz) -> Result<Schedule, String> {
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(&expr.0)
            .map_err(|e| format!("schedule {:?}: {e}", expr.0))?;
        Ok(Schedule {
            cron,
            tz,
            expr: expr.0.clone(),
        })
    }

    /// Planned times after `after` up to `until` (exclusive of `after`, inclusive of
    /// `until`), oldest first: the newest `MAX_LISTED` of them, and how many older ones there
    /// were besides. The last time listed is always the newest due, however many there were,
    /// so a caller that records it as spoken for never sees the older ones again (listing the
    /// oldest instead made a long downtime come back as "missed" batch after batch, each run
    /// "once"). Past `MAX_COUNTED` older times the count stops and jumps to the last day.
    pub fn due(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> (Vec<DateTime<Utc>>, u64) {
        let mut out = std::collections::VecDeque::new();
        let mut more = 0u64;
        // One find_next_occurrence after another: croner's own iterator (3.0.1) skips every
        // other second of a per-second schedule (the unit test below).
        let mut from = whole_second(after);
        let mut jumped = false;
        while let Some(t) = self.next_after(from) {
            from = t;
            if t > until {
                break;
            }
            out.push_back(t);
            if out.len() > MAX_LISTED {
                out.pop_front();
                more += 1;
                if more >= MAX_COUNTED && !jumped {
                    // Counting every second of months is not worth the time: the count is
                    // "at least", and the listed times are the last day's.
                    jumped = true;
                    let day_before = until - chrono::Duration::days(1);
                    if day_before > from {
                        out.clear();
                        from = whole_second(day_before);
                    }
                }
            }
        }
        (out.into(), more)
    }

    /// The first planned time after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&whole_second(after).with_timezone(&self.tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The cron expression with seconds first, as tokio-cron-scheduler wants it.
    pub fn with_seconds(&self) -> String {
        CronExpr(self.expr.clone()).with_seconds()
    }

    pub fn tz(&self) -> Tz {
        self.tz
    }
}

/// `t` without its fraction of a second: croner keeps the fraction of the time it starts from
/// in every time it finds, and a planned time is a whole second.
fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// A planned time as the project's wall clock reads it, e.g. `2026-12-02T08:05:00+07:00`.
pub fn local_rfc3339(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// Parses a time written in the project's time zone (`2026-12-02T08:05:00+07:00`, or a naive
/// `2026-12-02 08:05:00` read in `tz`).
pub fn parse_time(s: &str, tz: Tz) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, f) {
            return tz
                .from_local_datetime(&n)
                .single()
                .map(|t| t.with_timezone(&Utc));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn planned_times_are_wall_clock_times_in_the_project_zone() {
        let hcm = chrono_tz::Asia::Ho_Chi_Minh;
        // 08:00 every day in Ho Chi Minh City is 01:00 UTC.
        let s = Schedule::new(&CronExpr("0 8 * * *".into()), hcm).unwrap();
        let (due, more) = s.due(at("2026-12-01T00:00:00Z"), at("2026-12-03T00:00:00Z"));
        assert_eq!(
            due,
            vec![at("2026-12-01T01:00:00Z"), at("2026-12-02T01:00:00Z")]
        );
        assert_eq!(more, 0);
        assert_eq!(local_rfc3339(due[0], hcm), "2026-12-01T08:00:00+07:00");
        // The first of the month at 00:30 local is the last day of the previous month in UTC.
        let m = Schedule::new(&CronExpr("30 0 1 * *".into()), hcm).unwrap();
        assert_eq!(
            m.next_after(at("2026-12-15T00:00:00Z")),
            Some(at("2026-12-31T17:30:00Z"))
        );
        // Planned times are whole seconds, whatever fraction `after` has.
        let half = at("2026-12-01T00:59:59.5Z");
        assert_eq!(s.next_after(half), Some(at("2026-12-01T01:00:00Z")));
        // Seconds schedules; `after` is excluded and `until` included.
        let e = Schedule::new(&CronExpr("*/5 * * * * *".into()), hcm).unwrap();
        let (due, _) = e.due(at("2026-12-01T00:00:00Z"), at("2026-12-01T00:00:15Z"));
        assert_eq!(due.len(), 3);
        assert_eq!(due[2], at("2026-12-01T00:00:15Z"));
        for every_second in ["* * * * * *", "*/1 * * * * *"] {
            let e = Schedule::new(&CronExpr(every_second.into()), hcm).unwrap();
            let (due, _) = e.due(at("2026-12-01T00:00:00Z"), at("2026-12-01T00:00:10Z"));
            assert_eq!(due.len(), 10, "{every_second}: {due:?}");
        }
        // A long downtime of a per-second job: the newest MAX_LISTED times are listed, the
        // last of them the newest due, and the older ones counted, so one pass speaks for
        // every missed time (the oldest 10,000 came back first, and the rest on the next pass).
        let e = Schedule::new(&CronExpr("* * * * * *".into()), hcm).unwrap();
        let (due, more) = e.due(at("2026-12-01T00:00:00Z"), at("2026-12-01T07:00:00Z"));
        assert_eq!(due.len(), MAX_LISTED);
        assert_eq!(more, 7 * 3600 - MAX_LISTED as u64);
        assert_eq!(due.last(), Some(&at("2026-12-01T07:00:00Z")));
        assert_eq!(
            due[0],
            at("2026-12-01T07:00:00Z") - chrono::Duration::seconds(9_999)
        );
        let (again, _) = e.due(*due.last().unwrap(), at("2026-12-01T07:00:00Z"));
        assert!(again.is_empty(), "nothing is due twice: {again:?}");
        assert_eq!(
            parse_time("2026-12-02 08:05:00", hcm),
            Some(at("2026-12-02T01:05:00Z"))
        );
    }

    /// What tokio-cron-scheduler itself plans for a time-zone job (its issue #105 reported an
    /// 08:00 Asia/Shanghai job firing at 00:00 and 08:00 UTC). The daemon does not depend on
    /// it being right, but this says whether it is, with the version in Cargo.lock.
    #[tokio::test]
    async fn tokio_cron_scheduler_plans_a_zone_schedule_at_the_zone_time() {
        use tokio_cron_scheduler::{Job, JobScheduler};
        let hcm = chrono_tz::Asia::Ho_Chi_Minh;
        let mut sched = JobScheduler::new().await.unwrap();
        let job = Job::new_async_tz("0 0 8 * * *", hcm, |_, _| Box::pin(async {})).unwrap();
        let id = sched.add(job).await.unwrap();
        let next = sched.next_tick_for_job(id).await.unwrap().unwrap();
        let ours = Schedule::new(&CronExpr("0 8 * * *".into()), hcm)
            .unwrap()
            .next_after(Utc::now())
            .unwrap();
        assert_eq!(
            next, ours,
            "the crate plans {next}, the zone's 08:00 is {ours}"
        );
    }
}
