//! The daemon's Prometheus metrics, recorded with the `metrics` crate and rendered by
//! `metrics-exporter-prometheus` on `/metrics`. Every name starts with `chiso_`. Counters and
//! histograms move as fires, runs and builds end; the gauges of freshness and last success are
//! set from the status report at each scrape (and every 10 s by the loop).

use std::sync::OnceLock;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::models::build::BuildSummary;
use crate::pull::RunReport;
use crate::schedule::FireRecord;
use crate::status::StatusReport;

/// Run durations, from a quick snapshot pull to a long first pull.
const RUN_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];
/// Build durations.
const BUILD_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

/// The process's recorder (installed once; daemons in one process, as in tests, share it).
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("chiso_run_duration_seconds".into()),
                    RUN_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("chiso_build_duration_seconds".into()),
                        BUILD_BUCKETS,
                    )
                })
                .expect("bucket lists are not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!("chiso_fires_total", "Scheduled fires of pull, build and publish jobs by job and what became of them (ran, caught_up, skipped_overlap, skipped_misfire, interrupted).");
    describe_counter!("chiso_reconciles_total", "Fires of reconcile jobs by job and outcome: ok (every figure within rounding), differences, failed.");
    describe_gauge!("chiso_reconciliation_figures", "Figures of the newest ended month compared with the portal's published evaluation (chiso reconcile; chiso status names the month).");
    describe_gauge!(
        "chiso_reconciliation_beyond_rounding",
        "Figures of that month on which chiso and the portal differ beyond rounding, by cause."
    );
    describe_gauge!(
        "chiso_reconciliation_portal_revisions",
        "Figures of that month the portal changed after first publishing them."
    );
    describe_counter!(
        "chiso_status_collections_total",
        "Status reports collected (each /status or /metrics reuses one for a second)."
    );
    describe_counter!(
        "chiso_runs_stuck_total",
        "Pull fires abandoned: still blocked in I/O after being stopped at their timeout (the job's lock stays held until the I/O returns)."
    );
    describe_counter!("chiso_schedule_misses_total", "Planned fires missed while the daemon was down or behind (run once, all, or skipped by catch_up).");
    describe_counter!(
        "chiso_runs_total",
        "Pull runs by job and outcome (ok, quarantined, failed, timed_out, busy)."
    );
    describe_histogram!(
        "chiso_run_duration_seconds",
        Unit::Seconds,
        "Duration of pull runs."
    );
    describe_counter!(
        "chiso_publishes_total",
        "Publish job fires by job and outcome (ok, push_pending, held, failed)."
    );
    describe_gauge!(
        "chiso_publication_periods_owed",
        "Periods a final publish job has not published yet (held, failed, a push pending); tried again every retry_every."
    );
    describe_counter!("chiso_rows_landed_total", "Rows landed in the lake by job.");
    describe_counter!("chiso_rows_quarantined_total", "Rows quarantined by job.");
    describe_gauge!(
        "chiso_publication_revisions_pending",
        "Final periods whose numbers moved since their latest final revision (publish them again)."
    );
    describe_gauge!(
        "chiso_publication_pushes_pending",
        "Pushes of final revisions to the portals not acknowledged yet."
    );
    describe_gauge!(
        "chiso_last_success_timestamp_seconds",
        Unit::Seconds,
        "Unix time of each job's newest run that did not fail."
    );
    describe_gauge!(
        "chiso_feed_freshness_seconds",
        Unit::Seconds,
        "Age of each feed's newest landed record."
    );
    describe_gauge!(
        "chiso_feed_freshness_breach",
        "1 when a feed is older than its freshness target."
    );
    describe_gauge!(
        "chiso_index_freshness_seconds",
        Unit::Seconds,
        "Age of the published warehouse's data (since its build read the lake)."
    );
    describe_gauge!(
        "chiso_index_freshness_breach",
        "1 when the published index is older than its freshness target."
    );
    describe_counter!(
        "chiso_builds_total",
        "Builds by outcome (ok, failed, busy)."
    );
    describe_histogram!(
        "chiso_build_duration_seconds",
        Unit::Seconds,
        "Duration of builds."
    );
    describe_gauge!(
        "chiso_data_tests_failed",
        "Blocking data tests failed by the newest build."
    );
    describe_gauge!(
        "chiso_open_failures",
        "Jobs whose last run failed, plus 1 if the newest build did not publish."
    );
}

/// The daemon collected the status report (for /status, /metrics or its freshness check).
pub fn status_collected() {
    counter!("chiso_status_collections_total").increment(1);
}

/// A pull fire was abandoned: still blocked (in I/O) well after it was stopped at its timeout.
pub fn stuck(job: &str) {
    counter!("chiso_runs_stuck_total", "job" => job.to_string()).increment(1);
}

pub fn fire(job: &str, event: &'static str) {
    counter!("chiso_fires_total", "job" => job.to_string(), "event" => event).increment(1);
}

/// A publish fire ended: its outcome (ok, push_pending, held, failed), and the periods its job
/// still owes.
pub fn publish(record: &FireRecord, owed: usize) {
    let outcome = record.outcome.map_or("failed", |o| o.as_str());
    counter!("chiso_publishes_total", "job" => record.job.clone(), "outcome" => outcome)
        .increment(1);
    periods_owed(&record.job, owed);
}

pub fn periods_owed(job: &str, owed: usize) {
    gauge!("chiso_publication_periods_owed", "job" => job.to_string()).set(owed as f64);
}

pub fn misses(job: &str, n: u64) {
    counter!("chiso_schedule_misses_total", "job" => job.to_string()).increment(n);
}

pub fn run(r: &RunReport) {
    let job = r.job.clone();
    counter!("chiso_runs_total", "job" => job.clone(), "outcome" => r.outcome.as_str())
        .increment(1);
    histogram!("chiso_run_duration_seconds", "job" => job.clone()).record(r.seconds);
    counter!("chiso_rows_landed_total", "job" => job.clone()).increment(r.totals.rows_landed);
    counter!("chiso_rows_quarantined_total", "job" => job).increment(r.totals.rows_quarantined);
}

/// A fire's attempt that produced no run report (timed out, busy, could not start).
pub fn run_failed(job: &str, outcome: &str) {
    counter!("chiso_runs_total", "job" => job.to_string(), "outcome" => outcome.to_string())
        .increment(1);
}

pub fn build(record: &FireRecord, summary: Option<&BuildSummary>) {
    let outcome = record.outcome.map_or("failed", |o| o.as_str());
    counter!("chiso_builds_total", "outcome" => outcome).increment(1);
    if let Some(s) = summary {
        histogram!("chiso_build_duration_seconds").record(s.seconds);
        gauge!("chiso_data_tests_failed").set(s.tests_failed as f64);
    }
}

/// A reconcile job's fire ended: counted by outcome (ok, differences, failed).
pub fn reconcile(record: &FireRecord) {
    let outcome = record.outcome.map_or("unknown", |o| o.as_str());
    counter!("chiso_reconciles_total", "job" => record.job.clone(), "outcome" => outcome)
        .increment(1);
}

/// Sets the gauges from a status report.
pub fn refresh(r: &StatusReport) {
    for j in &r.jobs {
        if let Some(a) = j.freshness_seconds {
            gauge!("chiso_feed_freshness_seconds", "job" => j.job.clone()).set(a as f64);
        }
        gauge!("chiso_feed_freshness_breach", "job" => j.job.clone()).set(if j.freshness_breach {
            1.0
        } else {
            0.0
        });
        if let Some(t) = j
            .last_success_at
            .as_deref()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        {
            gauge!("chiso_last_success_timestamp_seconds", "job" => j.job.clone())
                .set(t.timestamp() as f64);
        }
    }
    if let Some(a) = r.index.age_seconds {
        gauge!("chiso_index_freshness_seconds").set(a as f64);
    }
    gauge!("chiso_index_freshness_breach").set(if r.index.freshness_breach { 1.0 } else { 0.0 });
    gauge!("chiso_open_failures").set(r.failures.len() as f64);
    gauge!("chiso_publication_revisions_pending").set(
        r.publications
            .revisions_pending
            .iter()
            .filter(|p| p.revisable)
            .count() as f64,
    );
    if let Some(n) = r.publications.pushes_pending {
        gauge!("chiso_publication_pushes_pending").set(n as f64);
    }
    if let Some(x) = &r.publications.reconciliation {
        // No period label: the gauges are the newest ended month's (a label per month would
        // keep last month's series exported beside this one's).
        gauge!("chiso_reconciliation_figures").set(x.compared as f64);
        for cause in [
            "counts_differ",
            "same_counts_different_score",
            "only_on_the_portal",
            "only_in_chiso",
            "not_scored_on_the_portal",
            "flagged_by_the_portal",
        ] {
            let n = x.beyond_rounding.get(cause).copied().unwrap_or(0);
            gauge!("chiso_reconciliation_beyond_rounding", "cause" => cause).set(n as f64);
        }
        gauge!("chiso_reconciliation_portal_revisions").set(x.portal_revisions as f64);
    }
}
