//! Pulls over real HTTP on 127.0.0.1 from the in-process simulator: counts reconcile for every
//! feed, faults are retried and reported, and a failed feed loses nothing.

mod common;

use std::time::Duration;

use chiso::config::{Attempts, Millis};
use chiso::lake::commit::Outcome;
use chiso::pull::{run_job, RunContext, RunReport};
use chiso::sim::faults::Faults;
use chiso::sim::SimFeed;
use common::*;

async fn run_all(ctx: &RunContext, jobs: &[chiso::config::JobConfig]) -> Vec<RunReport> {
    let mut out = Vec::new();
    for job in jobs {
        out.push(
            run_job(ctx, job)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", job.name)),
        );
    }
    out
}

fn ctx(dir: &std::path::Path) -> RunContext {
    RunContext {
        warehouse: dir.to_path_buf(),
        project_root: repo(),
        http: chiso::feeds::http::http_client(),
    }
}

/// The jobs that pull records (the portal's published evaluation lands one record per answer,
/// which the simulator does not count as records served).
fn record_feeds(jobs: Vec<chiso::config::JobConfig>) -> Vec<chiso::config::JobConfig> {
    jobs.into_iter()
        .filter(|j| !matches!(j.protocol, chiso::config::Protocol::Evaluation(_)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_feed_reconciles_with_the_simulator() {
    let cfg = small_world(11, 60.0);
    let sim = start_sim(cfg, Faults::none()).await;
    let jobs = record_feeds(project_for(&sim.base_url()).1);
    let dir = tempfile::tempdir().unwrap();
    let reports = run_all(&ctx(dir.path()), &jobs).await;
    let served = sim.state.stats();
    let now = sim.state.clock.now();
    for (job, r) in jobs.iter().zip(&reports) {
        assert_eq!(r.outcome, Outcome::Ok, "{}: {:?}", job.name, r.error);
        let s = &served[&job.name];
        // Served = landed + quarantined.
        assert_eq!(
            s.served_records,
            r.totals.rows_landed + r.totals.rows_quarantined + r.totals.rows_skipped,
            "{}",
            job.name
        );
        assert_eq!(r.totals.rows_quarantined, 0, "{}", job.name);
        // The lake holds exactly what was landed.
        assert_eq!(
            lake_rows(dir.path(), job),
            r.totals.rows_landed,
            "{}",
            job.name
        );
        assert!(r.totals.rows_landed > 0, "{} landed nothing", job.name);
        // After dedup by (key, version): the simulator's distinct records.
        let mut distinct = String::from("(snapshot)");
        if let Some(feed) = sim_feed(&job.name) {
            let truth = sim.state.world.distinct_versions(feed, now);
            let landed = landed_versions(dir.path(), job, feed);
            assert_eq!(landed.len(), truth.len(), "{}", job.name);
            assert!(
                landed == truth,
                "{}: landed versions differ from the simulator's",
                job.name
            );
            distinct = format!("{} = simulator's {}", landed.len(), truth.len());
        }
        println!(
            "{:<16} served {:>7} landed {:>7} quarantined 0  distinct (key, version) {distinct}",
            job.name, s.served_records, r.totals.rows_landed
        );
    }
    // Resends exist in the dossier feed, so the lake has more rows than distinct versions.
    let dossiers = jobs.iter().find(|j| j.name == "dossiers").unwrap();
    assert!(
        lake_rows(dir.path(), dossiers)
            > landed_versions(dir.path(), dossiers, SimFeed::Dossiers).len() as u64
    );

    // A second run finds nothing new: cursors hold and snapshots are unchanged. The paged feeds'
    // lower bound is inclusive (tuNgay >= watermark), so the records at exactly the watermark
    // come again; the cursor remembers their keys and they are skipped, not landed twice.
    let again = run_all(&ctx(dir.path()), &jobs).await;
    let served_again = sim.state.stats();
    for (job, r) in jobs.iter().zip(&again) {
        assert_eq!(r.outcome, Outcome::Ok);
        assert_eq!(r.totals.rows_landed, 0, "{} landed again", r.job);
        let served = served_again[&job.name].served_records - served[&job.name].served_records;
        assert_eq!(
            served,
            r.totals.rows_skipped + r.totals.rows_quarantined,
            "{}",
            r.job
        );
        if matches!(job.protocol, chiso::config::Protocol::PagedPost(_)) {
            assert!(
                r.totals.rows_skipped >= 1,
                "{}: the watermark's records come again",
                r.job
            );
        }
    }
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_retried_reported_and_lose_nothing() {
    let cfg = small_world(12, 30.0);
    let faults = Faults {
        error_rate: 0.15,
        slow_rate: 0.05,
        slow_ms: 1500,
        truncate_rate: 0.1,
        malformed_rate: 0.01,
        ..Faults::none()
    };
    let sim = start_sim(cfg, faults).await;
    let (mut project, jobs) = project_for(&sim.base_url());
    let jobs = record_feeds(jobs);
    for s in project.sources.values_mut() {
        s.timeout = Duration::from_millis(700);
    }
    let jobs: Vec<_> = jobs
        .into_iter()
        .map(|mut j| {
            j.source = j.source.as_ref().map(|s| project.sources[&s.name].clone());
            j.retry.attempts = Attempts(12);
            j.retry.initial_backoff_ms = Millis(5);
            j.retry.max_backoff_ms = Millis(50);
            j
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let reports = run_all(&ctx(dir.path()), &jobs).await;
    let served = sim.state.stats();
    let now = sim.state.clock.now();
    let mut retries = 0;
    let mut quarantined = 0;
    for (job, r) in jobs.iter().zip(&reports) {
        assert_ne!(r.outcome, Outcome::Failed, "{}: {:?}", job.name, r.error);
        let s = &served[&job.name];
        assert_eq!(
            s.served_records,
            r.totals.rows_landed + r.totals.rows_quarantined + r.totals.rows_skipped,
            "{}",
            job.name
        );
        assert_eq!(
            s.malformed_served, r.totals.rows_quarantined,
            "{}: every malformed record quarantined",
            job.name
        );
        if let Some(feed) = sim_feed(&job.name) {
            assert!(
                landed_versions(dir.path(), job, feed)
                    == sim.state.world.distinct_versions(feed, now),
                "{}",
                job.name
            );
        }
        retries += r.totals.retries;
        quarantined += r.totals.rows_quarantined;
    }
    let faults_seen: u64 = served
        .values()
        .map(|s| s.errors + s.truncated + s.slow)
        .sum();
    assert!(
        faults_seen > 0 && retries > 0,
        "faults {faults_seen}, retries {retries}"
    );
    assert!(quarantined > 0);
    // Quarantined records keep their raw text and reason.
    let glob = format!(
        "{}/lake/_quarantine/portal__dossiers/*/*.parquet",
        dir.path().display()
    );
    let rows = query(&format!(
        "SELECT reason, raw, position FROM read_parquet('{glob}') LIMIT 5"
    ));
    assert!(!rows.is_empty());
    for r in rows {
        assert!(
            r[0].contains("MaHoSo") || r[0].contains("ThoiDiemDongBo"),
            "reason {:?}",
            r[0]
        );
        assert!(r[1].starts_with('{'), "raw {:?}", r[1]);
        assert!(r[2].starts_with("since="), "position {:?}", r[2]);
    }
    println!("retries {retries}, faults injected {faults_seen}, quarantined {quarantined}");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_feed_is_reported_and_the_next_run_catches_up() {
    let cfg = small_world(13, 30.0);
    let sim = start_sim(cfg, Faults::none()).await;
    let (_, jobs) = project_for(&sim.base_url());
    let mut job = jobs.into_iter().find(|j| j.name == "dossiers").unwrap();
    job.retry.attempts = Attempts(3);
    job.retry.initial_backoff_ms = Millis(5);
    job.retry.max_backoff_ms = Millis(20);
    let dir = tempfile::tempdir().unwrap();

    *sim.state.faults.write().unwrap() = Faults {
        error_rate: 1.0,
        ..Faults::none()
    };
    let r = run_job(&ctx(dir.path()), &job).await.unwrap();
    assert_eq!(r.outcome, Outcome::Failed);
    let e = r.error.unwrap();
    assert!(
        e.contains("job dossiers")
            && e.contains("/portal/dossiers")
            && e.contains("503")
            && e.contains("after 3 attempt"),
        "{e}"
    );
    assert_eq!(r.totals.retries, 2);
    assert_eq!(lake_rows(dir.path(), &job), 0);

    *sim.state.faults.write().unwrap() = Faults::none();
    let r = run_job(&ctx(dir.path()), &job).await.unwrap();
    assert_eq!(r.outcome, Outcome::Ok);
    let now = sim.state.clock.now();
    assert!(
        landed_versions(dir.path(), &job, SimFeed::Dossiers)
            == sim.state.world.distinct_versions(SimFeed::Dossiers, now)
    );

    // Wrong credentials are not retried and say what to check.
    let mut bad = job.clone();
    bad.source.as_mut().unwrap().auth =
        chiso::config::Auth::Bearer(chiso::config::Secret::new("zz-bad-token-zz"));
    let r = run_job(&ctx(dir.path()), &bad).await.unwrap();
    let e = r.error.unwrap();
    assert!(
        e.contains("401") && e.contains("after 1 attempt") && e.contains("credentials"),
        "{e}"
    );
    assert!(
        !e.contains("zz-bad-token-zz"),
        "the token never appears in errors: {e}"
    );
    sim.stop().await;
}

/// A paged feed whose records change while a run reads it (the simulator's `moving_records`:
/// at every page after the first, the earliest record not moved yet gets a new update time and
/// moves to the end, so everything behind it shifts up a place). Walking pages by number then
/// skips a record for good; walking by the watermark lands every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_feed_changing_while_read_loses_nothing() {
    let cfg = small_world(21, 20.0);
    let faults = Faults {
        moving_records: true,
        ..Faults::none()
    };
    let sim = start_sim(cfg, faults).await;
    let (_, jobs) = project_for(&sim.base_url());
    let mut job = jobs.into_iter().find(|j| j.name == "ratings").unwrap();
    if let chiso::config::Protocol::PagedPost(p) = &mut job.protocol {
        p.page_size = chiso::config::PageSize(25);
    }
    let dir = tempfile::tempdir().unwrap();
    let r = run_job(&ctx(dir.path()), &job).await.unwrap();
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.error);
    assert!(
        r.totals.pages > 10,
        "{} pages: the test needs many",
        r.totals.pages
    );
    let served = sim.state.stats();
    let s = &served[&job.name];
    assert_eq!(
        s.served_records,
        r.totals.rows_landed + r.totals.rows_quarantined + r.totals.rows_skipped
    );
    // Every rating the simulator holds now (the moved ones included) is in the lake.
    let now = sim.state.clock.now();
    let held: std::collections::BTreeSet<String> = sim
        .state
        .world
        .visible(SimFeed::Ratings, now)
        .iter()
        .map(|e| e.key.clone())
        .collect();
    let landed: std::collections::BTreeSet<String> = query(&format!(
        "SELECT DISTINCT MaHoSo FROM read_parquet('{}')",
        lake_glob(dir.path(), &job)
    ))
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    let lost: Vec<&String> = held.difference(&landed).collect();
    assert!(held.len() > 100, "{} ratings", held.len());
    assert!(
        lost.is_empty(),
        "{} of {} ratings lost: {lost:?}",
        lost.len(),
        held.len()
    );
    sim.stop().await;
}

/// One job's panic is that job's failure: the other jobs of the same run complete and land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_panics_and_the_others_complete() {
    let sim = start_sim(small_world(5, 10.0), Faults::none()).await;
    let (_, jobs) = project_for(&sim.base_url());
    let dir = tempfile::tempdir().unwrap();
    let context = ctx(dir.path());
    let results = chiso::pull::run_each(&jobs, move |job| {
        let context = context.clone();
        async move {
            if job.name == "ratings" {
                panic!("a bug in the ratings job");
            }
            run_job(&context, &job).await
        }
    })
    .await;
    assert_eq!(results.len(), jobs.len());
    for (name, r) in &results {
        if name == "ratings" {
            let e = r.as_ref().unwrap_err();
            assert!(e.contains("panicked: a bug in the ratings job"), "{e}");
        } else {
            let report = r.as_ref().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(report.outcome, Outcome::Ok, "{name}");
        }
    }
    let dossiers = jobs.iter().find(|j| j.name == "dossiers").unwrap();
    assert!(lake_rows(dir.path(), dossiers) > 0);
    sim.stop().await;
}

/// Every run's landing stamps (`_ingested_at`) come after every stamp of the runs committed
/// before it, however quickly the runs follow each other: the incremental staging models read
/// what landed after the newest stamp they hold, so a run stamped equal to (or before) one a
/// build already read would be skipped for good. Runs that start within the second of the
/// previous commit used to reuse that run's stamps (the floor was the commit time, written to
/// the second, while stamps had been pushed past it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_run_lands_after_every_earlier_run() {
    let mut cfg = small_world(7, 20.0);
    cfg.speed = 6.0 * 3600.0;
    let sim = start_sim(cfg, Faults::none()).await;
    let (_, jobs) = project_for(&sim.base_url());
    let dossiers = jobs.iter().find(|j| j.name == "dossiers").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let context = ctx(dir.path());
    let mut runs = Vec::new();
    for _ in 0..8 {
        let report = run_job(&context, dossiers).await.unwrap();
        assert_eq!(report.outcome, Outcome::Ok);
        runs.push(report.run_id.clone());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let glob = lake_glob(dir.path(), dossiers);
    let stamps = query(&format!(
        "SELECT _run_id, min(_ingested_at)::VARCHAR, max(_ingested_at)::VARCHAR FROM read_parquet('{glob}') GROUP BY ALL"
    ));
    let by_run = |id: &str| stamps.iter().find(|r| r[0] == id).cloned();
    let landed: Vec<_> = runs.iter().filter_map(|r| by_run(r)).collect();
    assert!(landed.len() >= 4, "only {} runs landed rows", landed.len());
    for w in landed.windows(2) {
        assert!(
            w[1][1] > w[0][2],
            "run {} landed from {} but run {} before it landed up to {}",
            w[1][0],
            w[1][1],
            w[0][0],
            w[0][2]
        );
    }
    sim.stop().await;
}
