//! The daemon killed: `chiso serve` gets SIGKILL during pulls and during builds, and
//! `chiso backfill` during its re-pull, at least 20 kills in all, each followed by a restart.
//! After every kill the published warehouse opens and passes `chiso test`; the backfill
//! finishes from where it stopped; at the end the lake holds exactly the simulator's records
//! (the warehouse's staging one row per record version, none lost, none doubled), and a
//! SIGTERM stops the daemon with exit status 0 within its grace, while a second daemon on the
//! warehouse is refused naming the first.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chiso::schedule::{FireEvent, History};
use chiso::sim::faults::Faults;
use chiso::sim::SimFeed;
use common::*;
use rand::{Rng, SeedableRng};

/// The repository's project with second-level schedules, small pages and frequent commits.
fn write_project(dir: &Path) {
    std::fs::create_dir_all(dir.join("jobs")).unwrap();
    std::fs::copy(repo().join("chiso.toml"), dir.join("chiso.toml")).unwrap();
    std::os::unix::fs::symlink(repo().join("sql"), dir.join("sql")).unwrap();
    for e in std::fs::read_dir(repo().join("jobs")).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let mut text = std::fs::read_to_string(&path).unwrap();
        if text.contains("kind = \"publish\"")
            || text.contains("kind = \"reconcile\"")
            || text.contains("protocol = \"evaluation\"")
        {
            // Publication is not what this test kills (tests/publish.rs does), nor the
            // reconciliation with the portal's published evaluation.
            continue;
        }
        if name == "build.toml" {
            text = text
                .replace("quiet_period = \"3s\"", "quiet_period = \"1s\"")
                .replace("max_delay = \"30s\"", "max_delay = \"3s\"");
        } else {
            let schedule = text
                .lines()
                .find(|l| l.starts_with("schedule = "))
                .unwrap()
                .to_string();
            let every = if text.contains("protocol = \"snapshot\"") {
                5
            } else {
                2
            };
            text = text
                .replace(&schedule, &format!("schedule = \"*/{every} * * * * *\""))
                .replace("page_size = 1000", "page_size = 150")
                .replace("page_size = 2000", "page_size = 150")
                .replace("commit_every_rows = 100000", "commit_every_rows = 600");
        }
        std::fs::write(dir.join("jobs").join(name), text).unwrap();
    }
}

fn chiso(project: &Path, warehouse: &Path, url: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chiso"));
    c.arg("--config")
        .arg(project.join("chiso.toml"))
        .arg("--dir")
        .arg(warehouse)
        .args(args)
        .env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for v in URL_VARS {
        c.env(v, url);
    }
    for v in TOKEN_VARS {
        c.env(v, TOKEN);
    }
    c
}

/// A pull of process `pid` holds some job's lock (its `running.json` marker names the pid; a
/// marker a killed run left names another until the job's next run recovers it).
fn pulling(warehouse: &Path, pid: u32) -> bool {
    glob::glob(&format!("{}/_state/*/running.json", warehouse.display()))
        .unwrap()
        .filter_map(|p| p.ok())
        .filter_map(|p| std::fs::read(p).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .any(|v| v["pid"] == pid)
}

/// The daemon's build history ends with a claim: a build is running.
fn building(warehouse: &Path) -> bool {
    History::new(warehouse, "build")
        .tail()
        .unwrap()
        .last()
        .is_some_and(|f| f.event == FireEvent::Claimed)
}

/// Waits until `cond` holds (or `limit` passes); whether it held.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

fn sigkill(child: &mut Child) {
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// The published warehouse opens and passes its data tests (when one has been published).
fn published_passes(project: &Path, warehouse: &Path, url: &str, after: &str) {
    if !warehouse.join("chiso.duckdb").exists() {
        return;
    }
    let out = chiso(project, warehouse, url, &["test"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "after {after}: chiso test failed\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigkill_the_daemon_and_a_backfill_and_lose_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = small_world(23, 60.0);
    cfg.speed = 2.0 * 3600.0;
    cfg.horizon_days = 20;
    // Every answer takes 40 ms, as over a slow network, so that pulls last long enough to be
    // killed in.
    let sim = rt.block_on(start_sim(
        cfg,
        Faults {
            slow_rate: 1.0,
            slow_ms: 40,
            ..Faults::none()
        },
    ));
    let url = sim.base_url();
    let project = tempfile::tempdir().unwrap();
    write_project(project.path());
    let wh = tempfile::tempdir().unwrap();
    let serve = |wh: &Path| chiso(project.path(), wh, &url, &["serve"]);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261202);

    // The daemon, killed 20 times: half while a pull holds a job's lock, half while a build
    // runs (waiting for one, up to a limit), each after a random delay.
    let (mut during_pull, mut during_build, mut kills) = (0, 0, 0);
    for i in 0..20 {
        let mut child = serve(wh.path()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1500)));
        let pid = child.id();
        if i % 2 == 1 {
            wait_for(Duration::from_secs(12), || building(wh.path()));
            std::thread::sleep(Duration::from_millis(rng.random_range(0..150)));
        } else {
            wait_for(Duration::from_secs(6), || pulling(wh.path(), pid));
        }
        let (p, b) = (pulling(wh.path(), pid), building(wh.path()));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the daemon exited by itself"
        );
        sigkill(&mut child);
        kills += 1;
        during_pull += usize::from(p);
        during_build += usize::from(b);
        published_passes(project.path(), wh.path(), &url, &format!("kill {kills}"));
    }
    println!(
        "{kills} kills of the daemon: {during_pull} during a pull, {during_build} during a build"
    );
    assert!(
        during_pull >= 5 && during_build >= 3,
        "{during_pull} kills during pulls, {during_build} during builds"
    );

    // The simulator's clock stops; a backfill of the dossiers from the beginning of the lake,
    // killed three times, then run to its end.
    let now = sim.state.clock.freeze();
    let since = chiso::time::now_local() - chrono::Duration::hours(1);
    let since = since.format("%Y-%m-%d %H:%M:%S").to_string();
    let backfill = || {
        chiso(
            project.path(),
            wh.path(),
            &url,
            &["backfill", "dossiers", "--since", &since, "--no-build"],
        )
    };
    let mut backfill_kills = 0;
    let mut attempts = 0;
    while backfill_kills < 3 && attempts < 20 {
        attempts += 1;
        let mut child = backfill().spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(400..1500)));
        if child.try_wait().unwrap().is_none() {
            sigkill(&mut child);
            backfill_kills += 1;
            kills += 1;
            published_passes(
                project.path(),
                wh.path(),
                &url,
                &format!("backfill kill {backfill_kills}"),
            );
        }
    }
    assert_eq!(
        backfill_kills, 3,
        "the backfill finished before it could be killed three times"
    );
    let st = backfill().status().unwrap();
    assert!(st.success(), "the backfill did not finish: {st}");
    let records = chiso::backfill::list(wh.path(), "dossiers").unwrap();
    assert_eq!(records.len(), 1, "one backfill, resumed: {records:#?}");
    let bf = &records[0];
    assert_eq!(bf.status, "done");
    assert!(bf.runs.len() >= 2, "resumed across runs: {bf:#?}");
    // Resumed from its committed position, not from the start: what its runs read adds up to
    // the window once, plus at most a chunk and a page re-read per kill.
    let entries = chiso::lake::commit::JobState::new(wh.path(), "dossiers")
        .all()
        .unwrap();
    let mut read_by_run = std::collections::BTreeMap::new();
    for e in entries
        .iter()
        .filter(|e| e.backfill.as_ref().is_some_and(|b| b.id == bf.id))
    {
        read_by_run.insert(e.run_id.clone(), e.totals.rows_in);
    }
    let committed_reads: u64 = read_by_run.values().sum();
    assert!(
        committed_reads <= bf.expected_rows + 3 * 750,
        "the backfill's runs read {committed_reads} records for a window of {}",
        bf.expected_rows
    );
    assert!(
        committed_reads >= bf.expected_rows,
        "{committed_reads} < {}",
        bf.expected_rows
    );
    // The job's own cursor did not move back.
    let latest = entries.last().unwrap();
    assert_eq!(
        latest.cursor_after,
        entries
            .iter()
            .rev()
            .find(|e| e.backfill.is_none())
            .unwrap()
            .cursor_after
    );

    // Then the daemon runs clean until every job has pulled the stopped simulator and a build
    // has published all of it; a second daemon is refused; SIGTERM stops it with status 0.
    let mut daemon = serve(wh.path()).spawn().unwrap();
    let settled = wait_for(Duration::from_secs(90), || {
        // The jobs the daemon runs (write_project leaves the portal's evaluation out).
        let (_, mut jobs) = project_for(&url);
        jobs.retain(|j| !matches!(j.protocol, chiso::config::Protocol::Evaluation(_)));
        let report = chiso::status::collect_report(
            wh.path(),
            &chiso::config::Jobs {
                pulls: jobs,
                ..Default::default()
            },
        )
        .unwrap();
        let cutoff = chiso::time::now_local() - chrono::Duration::seconds(8);
        let quiet = report.jobs.iter().all(|j| {
            j.newest_landing_at
                .as_deref()
                .and_then(chiso::time::parse_rfc3339_local)
                .is_none_or(|t| t < cutoff)
                && j.last_run.as_ref().is_some_and(|r| {
                    chiso::time::parse_rfc3339_local(&r.started_at).is_some_and(|t| t > cutoff)
                })
        });
        quiet
            && !report.index.landed_since
            && !building(wh.path())
            && report.index.published_build.is_some()
    });
    assert!(
        settled,
        "the daemon did not settle on the stopped simulator"
    );
    let second = serve(wh.path()).stderr(Stdio::piped()).output().unwrap();
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success() && said.contains(&format!("pid {}", daemon.id())),
        "a second daemon: {:?} {said}",
        second.status
    );
    let t0 = Instant::now();
    unsafe {
        assert_eq!(libc_kill(daemon.id() as i32, 15), 0);
    }
    let status = daemon.wait().unwrap();
    assert!(status.success(), "SIGTERM: {status}");
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "stopped in {:?} (grace 30 s)",
        t0.elapsed()
    );
    published_passes(project.path(), wh.path(), &url, "the last stop");

    // The lake holds exactly the simulator's records; staging one row per version.
    let (_, jobs) = project_for(&url);
    for (name, feed) in [
        ("dossiers", SimFeed::Dossiers),
        ("dossier_steps", SimFeed::DossierSteps),
        ("payments", SimFeed::Payments),
        ("ratings", SimFeed::Ratings),
        ("petitions", SimFeed::Petitions),
    ] {
        let job = jobs.iter().find(|j| j.name == name).unwrap();
        let truth = sim.state.world.distinct_versions(feed, now);
        let landed = landed_versions(wh.path(), job, feed);
        assert_eq!(landed.len(), truth.len(), "{name}: lost or extra records");
        assert!(
            landed == truth,
            "{name}: landed versions differ from the simulator's"
        );
    }
    let conn = open(wh.path());
    let staged: Vec<String> = rows(&conn, "SELECT count(*), count(DISTINCT (dossier_id, synced_at)) FROM stg_portal__dossier_versions");
    let truth = sim
        .state
        .world
        .distinct_versions(SimFeed::Dossiers, now)
        .len();
    assert_eq!(
        staged,
        vec![format!("{truth}|{truth}")],
        "dossier versions in staging"
    );
    println!("{kills} kills in all; {truth} dossier versions, each once");
    rt.block_on(sim.stop());
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
