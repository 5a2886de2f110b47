//! Crash safety: `chiso run` is killed with SIGKILL at random points, at least 20 times, then
//! run to completion. No record may be lost, no partial file may be visible to DuckDB's
//! `read_parquet`, no uncommitted file may remain, and after dedup by (key, version) nothing is
//! counted twice.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use chiso::lake::commit::{EntryKind, JobState};
use chiso::sim::faults::Faults;
use chiso::sim::SimFeed;
use common::*;
use rand::{Rng, SeedableRng};

fn write_project(dir: &Path) {
    std::fs::create_dir_all(dir.join("jobs")).unwrap();
    std::fs::copy(repo().join("chiso.toml"), dir.join("chiso.toml")).unwrap();
    // Small pages and frequent commits, so that kills fall between many steps.
    let dossiers = std::fs::read_to_string(repo().join("jobs/dossiers.toml"))
        .unwrap()
        .replace("page_size = 1000", "page_size = 150")
        .replace("commit_every_rows = 100000", "commit_every_rows = 600");
    std::fs::write(dir.join("jobs/dossiers.toml"), dossiers).unwrap();
    let ratings = std::fs::read_to_string(repo().join("jobs/ratings.toml"))
        .unwrap()
        .replace("page_size = 1000", "page_size = 40")
        .replace("[dataset]\n", "[dataset]\ncommit_every_rows = 120\n");
    std::fs::write(dir.join("jobs/ratings.toml"), ratings).unwrap();
}

fn chiso(project: &Path, warehouse: &Path, url: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chiso"));
    c.arg("--config")
        .arg(project.join("chiso.toml"))
        .arg("--dir")
        .arg(warehouse)
        .args(["run", "dossiers", "ratings"])
        .env("CHISO_PORTAL_URL", url)
        .env("CHISO_REPORTING_URL", url)
        .env("CHISO_PORTAL_TOKEN", TOKEN)
        .env("CHISO_REPORTING_PASSWORD", TOKEN)
        .env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Every `*.parquet` file is whole (DuckDB reads them all) and holds only true records.
fn check_visible(
    warehouse: &Path,
    jobs: &[chiso::config::JobConfig],
    truth: &[(SimFeed, std::collections::BTreeSet<(String, String)>)],
) {
    for (job, (feed, t)) in jobs.iter().zip(truth) {
        let glob = lake_glob(warehouse, job);
        if glob::glob(&glob).unwrap().next().is_none() {
            continue;
        }
        let landed = landed_versions(warehouse, job, *feed);
        assert!(
            landed.is_subset(t),
            "{}: a landed record is not one the simulator served",
            job.name
        );
    }
}

#[test]
fn sigkill_at_random_points_loses_and_doubles_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sim = rt.block_on(start_sim(
        small_world(21, 120.0),
        // Every answer takes 15 ms, as over a real network, so a run lasts long enough to be
        // killed many times before it finishes.
        Faults {
            slow_rate: 1.0,
            slow_ms: 15,
            ..Faults::none()
        },
    ));
    let url = sim.base_url();
    let project = tempfile::tempdir().unwrap();
    write_project(project.path());
    let (_, all_jobs) = project_for(&url);
    let jobs: Vec<_> = ["dossiers", "ratings"]
        .iter()
        .map(|n| all_jobs.iter().find(|j| &j.name == n).unwrap().clone())
        .collect();
    let now = sim.state.clock.now();
    let truth: Vec<_> = [SimFeed::Dossiers, SimFeed::Ratings]
        .iter()
        .map(|f| (*f, sim.state.world.distinct_versions(*f, now)))
        .collect();

    // How long a whole run takes (kills come much sooner, so that each restart has work left).
    let scratch = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let st = chiso(project.path(), scratch.path(), &url)
        .status()
        .unwrap();
    assert!(st.success(), "reference run failed: {st}");
    let full = t0.elapsed();
    println!("a whole run takes {:.2}s", full.as_secs_f64());

    let wh = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261127);
    let mut kills = 0;
    let mut attempts = 0;
    while kills < 24 && attempts < 120 {
        attempts += 1;
        let mut child = chiso(project.path(), wh.path(), &url).spawn().unwrap();
        let wait =
            std::time::Duration::from_millis(rng.random_range(20..400)).min(full.mul_f64(0.5));
        std::thread::sleep(wait);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        check_visible(wh.path(), &jobs, &truth);
    }
    assert!(
        kills >= 20,
        "only {kills} kills landed mid-run in {attempts} attempts"
    );

    // Now let it finish.
    let st = chiso(project.path(), wh.path(), &url).status().unwrap();
    assert!(st.success(), "final run failed: {st}");
    for (job, (feed, t)) in jobs.iter().zip(&truth) {
        let landed = landed_versions(wh.path(), job, *feed);
        assert_eq!(landed.len(), t.len(), "{}: lost or extra records", job.name);
        assert!(&landed == t, "{}: landed versions differ", job.name);
        // Counts, not only the set: every version landed as many times as in the quiet
        // reference run (the feed's own resends), none doubled by a crash and its recovery.
        let (counts, reference) = (
            landed_counts(wh.path(), job, *feed),
            landed_counts(scratch.path(), job, *feed),
        );
        let differ: Vec<_> = counts
            .iter()
            .filter(|c| !reference.contains(c))
            .take(5)
            .collect();
        assert!(
            counts == reference,
            "{}: rows per version differ from the quiet run, e.g. {differ:?}",
            job.name
        );
        assert_eq!(
            lake_rows(wh.path(), job),
            lake_rows(scratch.path(), job),
            "{}: rows landed",
            job.name
        );
        // Every file present is named by a commit: nothing uncommitted survives recovery, and
        // the committed row counts add up to what DuckDB reads.
        let state = JobState::new(wh.path(), &job.name);
        let entries = state.all().unwrap();
        let committed: std::collections::BTreeSet<String> = entries
            .iter()
            .flat_map(|e| e.files.iter().map(|f| f.path.clone()))
            .collect();
        let committed_rows: u64 = entries
            .iter()
            .flat_map(|e| e.files.iter().map(|f| f.rows))
            .sum();
        let on_disk: std::collections::BTreeSet<String> =
            glob::glob(&format!("{}/lake/**/*", wh.path().display()))
                .unwrap()
                .filter_map(|p| p.ok())
                .filter(|p| p.is_file())
                .map(|p| p.strip_prefix(wh.path()).unwrap().display().to_string())
                .filter(|p| p.starts_with(&job.dataset.rel_dir()))
                .collect();
        assert_eq!(
            on_disk, committed,
            "{}: files on disk = files committed",
            job.name
        );
        assert_eq!(lake_rows(wh.path(), job), committed_rows, "{}", job.name);
        let interrupted = entries
            .iter()
            .filter(|e| e.kind == EntryKind::Interrupted)
            .count();
        println!(
            "{}: {} commits, {} interrupted runs recovered, {} rows for {} distinct versions",
            job.name,
            entries.len(),
            interrupted,
            committed_rows,
            landed.len()
        );
        assert!(interrupted > 0, "{}: some kill interrupted a run", job.name);
    }
    rt.block_on(sim.stop());
}
