//! The daemon (`chiso serve`) against the simulator on 127.0.0.1, with second-level schedules
//! and the simulator's clock running, so that dossiers change while it runs.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use chiso::config::{CatchUp, CronExpr, HumanDuration, Jobs, Overlap, ProjectConfig};
use chiso::pull::RunContext;
use chiso::schedule::{FireEvent, FireHow, FireRecord, History, Schedule};
use chiso::serve::{Notice, ServeOptions};
use common::*;

/// The repository's jobs with second-level schedules, aimed at `base_url`.
fn fast_jobs(base_url: &str) -> (ProjectConfig, Jobs) {
    let project = project_at(base_url);
    let mut jobs = chiso::config::load_all_jobs(&repo().join("jobs"), &project).unwrap();
    for j in &mut jobs.pulls {
        let every = match j.protocol {
            chiso::config::Protocol::Snapshot(_) => 6,
            _ if j.name == "dossiers" => 1,
            _ => 2,
        };
        j.schedule = CronExpr(format!("*/{every} * * * * *"));
        j.run.misfire_after = HumanDuration(Duration::from_secs(3));
        j.run.catch_up = CatchUp::Once;
        // The dossiers' fires wait for each other; the others skip a fire that finds the
        // previous run still going.
        j.run.overlap = if j.name == "dossiers" {
            Overlap::Queue
        } else {
            Overlap::Skip
        };
        j.run.retry_delay = HumanDuration(Duration::from_millis(200));
    }
    // The repository's publish jobs name periods by today's date, which the simulated world
    // does not reach; `the_daemon_runs_publish_jobs` gives the daemon its own.
    jobs.publishes.clear();
    // Its periods follow the wall clock, not the simulated world's.
    jobs.reconciles.clear();
    let b = jobs
        .builds
        .iter_mut()
        .find(|b| b.enabled)
        .expect("jobs/build.toml");
    b.schedule = None;
    b.quiet_period = Duration::from_secs(2);
    b.max_delay = Duration::from_secs(6);
    (project, jobs)
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Every planned time of `schedule` in (from, until], each with what became of it: the last
/// line of its fire; and the pairs (start, end) of every run.
struct Accounted {
    fates: BTreeMap<DateTime<Utc>, FireRecord>,
    runs: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    finished: Vec<FireRecord>,
}

fn account(records: &[FireRecord]) -> Accounted {
    let mut fates = BTreeMap::new();
    let mut runs = Vec::new();
    let mut started: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut finished = Vec::new();
    for r in records {
        match r.event {
            FireEvent::Claimed if r.how != Some(FireHow::Queued) => {
                started.insert(r.planned.clone(), at(&r.at));
            }
            FireEvent::Finished => {
                let s = started
                    .remove(&r.planned)
                    .unwrap_or_else(|| panic!("{} {} finished unclaimed", r.job, r.planned));
                runs.push((s, at(&r.at)));
                finished.push(r.clone());
            }
            _ => {}
        }
        fates.insert(at(&r.planned), r.clone());
    }
    Accounted {
        fates,
        runs,
        finished,
    }
}

/// Prometheus' own `promtool check metrics` (Debian's `prometheus` package) accepts the text.
/// Without promtool the check is skipped with a note, unless CHISO_REQUIRE_PROMTOOL is set, as
/// `.ci/run` sets it (having installed the package).
fn promtool_accepts(text: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var_os("CHISO_REQUIRE_PROMTOOL").is_none() => {
            eprintln!("note: promtool not found ({e}); /metrics not checked by it (apt-get install prometheus)");
            return;
        }
        Err(e) => panic!("promtool is required (CHISO_REQUIRE_PROMTOOL): {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A minute and a half of the daemon in two parts, with a stop and a restart between them:
/// every planned fire is accounted for (ran, skipped by overlap, caught up or skipped after the
/// downtime), no job's runs overlap, bursts of pulls cause fewer builds, /health, /status and
/// /metrics answer while it runs, a second daemon is refused naming the first, and the index
/// at the end equals a one-off pull and build of the same simulator state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_fires_every_job_and_keeps_the_index_equal_to_a_one_off_build() {
    let mut cfg = small_world(7, 6.0);
    cfg.speed = 3.0 * 3600.0;
    cfg.horizon_days = 20;
    let sim = start_sim(
        cfg,
        chiso::sim::faults::Faults {
            slow_rate: 0.3,
            slow_ms: 2500,
            ..Default::default()
        },
    )
    .await;
    let (project, jobs) = fast_jobs(&sim.base_url());
    let wh = tempfile::tempdir().unwrap();
    let opts = serve_options(wh.path(), &project, &jobs, 30);

    // Part 1: 40 s, slow answers now and then (so fires find their job running).
    let t1 = Utc::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let first = tokio::spawn(chiso::serve::serve(
        opts.clone(),
        tokio::time::sleep(Duration::from_secs(40)),
        Some(tx),
    ));
    let http = match rx.recv().await.unwrap() {
        Notice::Started { http } => http.unwrap(),
        other => panic!("first notice {other:?}"),
    };
    // A second daemon on the same warehouse is refused, naming the first.
    let err = chiso::serve::serve(
        ServeOptions {
            http: None,
            ..opts.clone()
        },
        std::future::ready(()),
        None,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&format!("pid {}", std::process::id())) && err.contains("another chiso serve"),
        "{err}"
    );
    tokio::time::sleep(Duration::from_secs(15)).await;
    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://{http}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let status: serde_json::Value = client
        .get(format!("http://{http}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["daemon"]["pid"], std::process::id());
    assert_eq!(status["jobs"].as_array().unwrap().len(), jobs.pulls.len());
    let metrics = client
        .get(format!("http://{http}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "chiso_runs_total{job=\"dossiers\",outcome=\"ok\"}",
        "chiso_rows_landed_total{job=\"dossiers\"}",
        "chiso_feed_freshness_seconds{job=\"dossiers\"}",
        "chiso_run_duration_seconds_bucket{job=\"dossiers\",le=\"1\"}",
    ] {
        assert!(metrics.contains(name), "{name} not in /metrics:\n{metrics}");
    }
    promtool_accepts(&metrics);
    let part1 = first.await.unwrap().unwrap();
    let t1_end = Utc::now();
    while rx.try_recv().is_ok() {}

    // Down for 7 s: the fires planned meanwhile are misfires (misfire_after 3 s).
    tokio::time::sleep(Duration::from_secs(7)).await;
    *sim.state.faults.write().unwrap() = chiso::sim::faults::Faults::none();

    // Part 2: 25 s of changes, then the simulator's clock stops and the daemon goes on until
    // every job has pulled the stopped state and the published index holds all of it.
    let t2 = Utc::now();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let second = tokio::spawn(chiso::serve::serve(
        opts.clone(),
        async move {
            let _ = stop_rx.await;
        },
        Some(tx),
    ));
    let mut notices = Vec::new();
    let changing = Instant::now();
    while changing.elapsed() < Duration::from_secs(25) {
        if let Ok(Some(n)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            notices.push(n);
        }
    }
    let frozen_at = Utc::now();
    sim.state.clock.freeze();
    // Settled: every job has finished a run that started after the clock stopped, no pull has
    // landed rows for longer than the build's quiet period and maximum delay (so any rows
    // landed have triggered a build that has started since), and no build is running.
    let settle = Instant::now();
    let mut last_landing = Instant::now();
    loop {
        assert!(
            settle.elapsed() < Duration::from_secs(90),
            "the daemon did not settle on the stopped simulator"
        );
        if let Ok(Some(n)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            if matches!(n, Notice::PullFinished { rows_landed, .. } if rows_landed > 0) {
                last_landing = Instant::now();
            }
            notices.push(n);
        }
        let pulled = jobs.pulls.iter().all(|j| {
            notices.iter().any(|n| {
                matches!(n, Notice::PullFinished { job, planned, .. }
                    if job == &j.name && at(planned) > frozen_at + chrono::Duration::seconds(1))
            })
        });
        if !pulled || last_landing.elapsed() < Duration::from_secs(8) {
            continue;
        }
        let building = History::new(wh.path(), "build")
            .tail()
            .unwrap()
            .last()
            .is_some_and(|f| f.event == FireEvent::Claimed);
        if !building {
            break;
        }
    }
    let t2_stop = Utc::now();
    stop_tx.send(()).unwrap();
    let part2 = second.await.unwrap().unwrap();
    assert_eq!(part1.cut_short + part2.cut_short, 0, "the grace was enough");

    // Every planned fire of every job is accounted for, and claimed once.
    let mut landed_pulls = 0;
    let (mut skipped_overlap, mut caught_up, mut skipped_misfire) = (0, 0, 0);
    for j in &jobs.pulls {
        let history = History::new(wh.path(), &j.name);
        let records = std::fs::read_to_string(history.path())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<FireRecord>(l).unwrap())
            .collect::<Vec<_>>();
        let acc = account(&records);
        let schedule = Schedule::new(&j.schedule, project.timezone).unwrap();
        // Planned times from the first daemon's start to the second's stop (those after the
        // first stopped firing are the second's misfires, or on time if it started within
        // misfire_after of them); `gap` are surely misfires.
        let (planned, _) = schedule.due(
            t1 + chrono::Duration::seconds(1),
            t2_stop - chrono::Duration::seconds(1),
        );
        let (gap, _) = schedule.due(t1_end, t2 - chrono::Duration::seconds(4));
        for t in &planned {
            let fate = acc.fates.get(t).unwrap_or_else(|| {
                let near: Vec<String> = records
                    .iter()
                    .filter(|r| (at(&r.planned) - *t).num_seconds().abs() <= 3)
                    .map(|r| format!("{} {:?} {:?} at {}", r.planned, r.event, r.how, r.at))
                    .collect();
                panic!(
                    "{}: the fire planned at {t} is not accounted for (first daemon {t1}..{t1_end}, second {t2}..{t2_stop}); fires near it:\n{}",
                    j.name,
                    near.join("\n")
                )
            });
            assert!(
                matches!(
                    fate.event,
                    FireEvent::Finished | FireEvent::SkippedOverlap | FireEvent::SkippedMisfire
                ) || (fate.event == FireEvent::Interrupted && fate.how == Some(FireHow::Queued)),
                "{}: the fire planned at {t} ended as {fate:?}",
                j.name
            );
        }
        for t in &gap {
            let fate = &acc.fates[t];
            assert!(
                fate.event == FireEvent::SkippedMisfire || fate.how == Some(FireHow::CaughtUp),
                "{}: {t} was planned while no daemon ran, and became {fate:?}",
                j.name
            );
        }
        // Claimed once: one run per planned time.
        let mut per_planned = BTreeMap::new();
        for f in &acc.finished {
            *per_planned.entry(f.planned.clone()).or_insert(0) += 1;
        }
        assert!(
            per_planned.values().all(|n| *n == 1),
            "{}: a planned time ran twice",
            j.name
        );
        // No two runs of the job at once.
        let mut runs = acc.runs.clone();
        runs.sort();
        for w in runs.windows(2) {
            assert!(
                w[1].0 >= w[0].1,
                "{}: a run started at {} while the one started at {} was going until {}",
                j.name,
                w[1].0,
                w[0].0,
                w[0].1
            );
        }
        assert!(
            acc.finished
                .iter()
                .all(|f| f.outcome != Some(chiso::schedule::FireOutcome::Busy)),
            "{}: a fire found its job's lock held",
            j.name
        );
        landed_pulls += acc.finished.iter().filter(|f| f.rows_landed > 0).count();
        skipped_overlap += acc
            .fates
            .values()
            .filter(|f| f.event == FireEvent::SkippedOverlap)
            .count();
        caught_up += acc
            .finished
            .iter()
            .filter(|f| f.how == Some(FireHow::CaughtUp))
            .count();
        skipped_misfire += acc
            .fates
            .values()
            .filter(|f| f.event == FireEvent::SkippedMisfire)
            .count();
    }
    assert!(
        skipped_overlap > 0,
        "no fire found its job running (the slow answers should make some)"
    );
    assert!(
        caught_up > 0 && skipped_misfire > 0,
        "catch_up once: {caught_up} caught up, {skipped_misfire} skipped"
    );
    let builds = part1.builds + part2.builds;
    assert!(
        builds > 0 && (builds as usize) < landed_pulls,
        "{builds} builds for {landed_pulls} pulls that landed rows"
    );
    let _ = notices;

    // The same simulator state, pulled and built once into a fresh warehouse.
    let fresh = tempfile::tempdir().unwrap();
    let ctx = RunContext {
        warehouse: fresh.path().to_path_buf(),
        project_root: repo(),
        http: chiso::feeds::http::http_client(),
    };
    for (name, r) in chiso::pull::run_many(&ctx, &jobs.pulls).await {
        r.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let record = build_record(fresh.path(), &repo().join("sql"), &jobs.pulls, false).await;
    assert!(record.published);
    if let Ok(keep) = std::env::var("CHISO_KEEP_TEST_DIRS") {
        let keep = std::path::PathBuf::from(keep);
        copy_dir(wh.path(), &keep.join("daemon"));
        copy_dir(fresh.path(), &keep.join("once"));
    }
    let (a, b) = (open(wh.path()), open(fresh.path()));
    // The provisional index: the periods still open. (Final periods may differ, rightly: the
    // daemon's lake holds every catalogue snapshot taken while the simulator's catalogue
    // changed, and stg_catalogue__procedures dates a procedure new in a later snapshot from
    // its announcement, where a lake with one snapshot knows it only as always there; so may
    // `change_from_previous`, the change from a final period.)
    let provisional =
        "(SELECT unit_id, period FROM mart_index_unit_period WHERE status = 'provisional')";
    for sql in [
        format!("SELECT * FROM mart_index_indicator WHERE (unit_id, period) IN {provisional} ORDER BY ALL"),
        "SELECT * EXCLUDE (computed_at, change_from_previous) FROM mart_index_unit_period WHERE status = 'provisional' ORDER BY ALL".to_string(),
    ] {
        if let Some(d) = row_differences(&a, &b, &sql, ("the daemon's", "the one-off build's")) {
            panic!("{sql}\n{d}");
        }
    }
    sim.stop().await;
}

/// The daemon runs publish jobs: a provisional preview of September every 2 s records one
/// revision (its later fires find the numbers unchanged) and is never sent; the revision asks
/// for a build, after which the warehouse's `pub_latest_revisions` shows it; a final
/// publication of July that the guard holds back is a failed fire saying why, and sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_publish_jobs() {
    use chiso::config::{PeriodChoice, PublishJobConfig};
    let sim = start_sim(small_world(5, 2.0), chiso::sim::faults::Faults::none()).await;
    let (project, mut jobs) = fast_jobs(&sim.base_url());
    let wh = tempfile::tempdir().unwrap();
    pull_and_build(wh.path(), &jobs.pulls).await;
    for j in &mut jobs.pulls {
        j.enabled = false; // nothing new to pull: the publish jobs alone
    }
    let job = |name: &str, period: &str, provisional: bool| PublishJobConfig {
        name: name.into(),
        file: repo().join("jobs").join(format!("{name}.toml")),
        description: String::new(),
        enabled: true,
        schedule: CronExpr("*/2 * * * * *".into()),
        period: PeriodChoice::Fixed(period.into()),
        provisional,
        push: true,
        retry_every: Duration::from_secs(3600),
        catch_up_within: Duration::from_secs(366 * 86_400),
    };
    jobs.publishes = vec![
        job("preview_september", "2026-09", true),
        job("final_july", "2026-07", false),
    ];
    let mut opts = serve_options(wh.path(), &project, &jobs, 30);
    opts.http = None;
    // A world of 2 dossiers a day: judged at every move (not against chance), its units'
    // swings hold July's final.
    opts.publish.movement_sigmas = 0.0;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(chiso::serve::serve(
        opts,
        async move {
            let _ = stop_rx.await;
        },
        None,
    ));
    let finished = |name: &str| -> Vec<FireRecord> {
        History::new(wh.path(), name)
            .tail()
            .unwrap()
            .into_iter()
            .filter(|r| r.event == FireEvent::Finished)
            .collect()
    };
    let t0 = std::time::Instant::now();
    loop {
        let built = !finished("build").is_empty();
        if finished("preview_september").len() >= 3 && finished("final_july").len() >= 2 && built {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the publish jobs did not run"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop_tx.send(());
    daemon.await.unwrap().unwrap();

    let previews = finished("preview_september");
    assert!(
        previews
            .iter()
            .all(|r| r.outcome == Some(chiso::schedule::FireOutcome::Ok)),
        "{previews:?}"
    );
    // The guard holds the final back (not a failure of chiso's or of a portal's): "held".
    let finals = finished("final_july");
    assert!(
        finals
            .iter()
            .all(|r| r.outcome == Some(chiso::schedule::FireOutcome::Held)
                && r.error.as_deref().is_some_and(|e| e.contains("--accept"))),
        "{finals:?}"
    );
    let ledger = chiso::ledger::open_read_only(wh.path(), Duration::from_secs(5))
        .unwrap()
        .unwrap();
    let revisions: Vec<(String, i64, String)> = {
        let mut stmt = ledger
            .prepare("SELECT period, revision, status FROM pub_revisions ORDER BY 1, 2")
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        rows
    };
    assert_eq!(
        revisions,
        vec![("2026-09".to_string(), 0, "provisional".to_string())]
    );
    assert!(sim.state.publications().is_empty(), "a preview was sent");
    let conn = open(wh.path());
    assert_eq!(
        rows(
            &conn,
            "SELECT period, revision, status FROM pub_latest_previews"
        ),
        vec!["2026-09|0|provisional"]
    );
    sim.stop().await;
}
