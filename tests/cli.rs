//! The command line as a user meets it: the demo on the embedded default, configuration errors
//! with file, line and field, and exit codes.

use std::process::Command;
use std::time::{Duration, Instant};

fn chiso() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chiso"))
}

/// A DuckDB 1.x CLI (`CHISO_DUCKDB1_CLI`, else `duckdb` on the PATH if it is 1.x; PyPI's
/// `duckdb-cli==1.5.6` is one) opens the published file read-only and reads the marts and the
/// publication views (`chiso demo`'s preview and one more). Without
/// one the check is skipped with a note, unless CHISO_REQUIRE_DUCKDB1 is set, as `.ci/run` sets
/// it (having installed one).
fn duckdb1_reads_the_marts(published: &std::path::Path) {
    let cli = std::env::var("CHISO_DUCKDB1_CLI").unwrap_or_else(|_| "duckdb".into());
    let version = Command::new(&cli)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .filter(|v| v.starts_with("v1."));
    let Some(version) = version else {
        assert!(
            std::env::var_os("CHISO_REQUIRE_DUCKDB1").is_none(),
            "CHISO_REQUIRE_DUCKDB1 is set but {cli} is not a DuckDB 1.x CLI"
        );
        eprintln!("note: no DuckDB 1.x CLI ({cli}); the published file's format is not checked with one (pip install duckdb-cli==1.5.6)");
        return;
    };
    let out = Command::new(&cli)
        .arg("-readonly")
        .arg(published)
        .arg("-csv")
        .arg("-c")
        .arg("SELECT (SELECT count(*) FROM mart_index_unit_period) || ',' || (SELECT count(*) FROM mart_index_indicator) || ',' || (SELECT count(*) FROM mart_index_unit_period WHERE total BETWEEN 0 AND 100) || ',' || (SELECT count(*) FROM pub_latest_previews) || ',' || (SELECT count(*) FROM pub_latest_preview_index_unit_period) || ',' || (SELECT count(*) FROM pub_revision_pending) AS n")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "DuckDB {version} could not read {}: {text}{}",
        published.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let counts: Vec<u64> = text
        .lines()
        .last()
        .unwrap_or("")
        .trim_matches('"')
        .split(',')
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    assert!(
        counts.len() == 6
            && counts[0] > 0
            && counts[1] > 0
            && counts[2] == counts[0]
            && counts[3] >= 1
            && counts[4] > 0,
        "DuckDB {version} read {text}"
    );
}

#[test]
fn demo_runs_every_feed_and_reconciles() {
    let dir = tempfile::tempdir().unwrap();
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("chiso.toml");
    let out = chiso()
        .current_dir(dir.path())
        .arg("--config")
        .arg(&config)
        // Logs as JSON lines, as a log collector takes them (stdout is the report either way).
        .args(["--log-format", "json", "-v"])
        .args([
            "demo",
            "--dir",
            "wh",
            "--now",
            "2026-09-10T10:00:00",
            "--from",
            "2026-07-01",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stdout}\n{stderr}");
    let logs: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let finished: Vec<_> = logs
        .iter()
        .filter(|l| l["message"] == "Run finished.")
        .collect();
    assert_eq!(finished.len(), 10, "{stderr}");
    assert!(finished
        .iter()
        .all(|l| l["level"] == "INFO" && l["job"].is_string() && l["run_id"].is_string()));
    for job in [
        "dossiers",
        "dossier_steps",
        "payments",
        "ratings",
        "petitions",
        "catalogue",
        "units",
        "calendar",
        "national_report",
        "portal_evaluation",
    ] {
        assert!(stdout.contains(job), "{job} missing from:\n{stdout}");
    }
    // Served = landed + quarantined (+ skipped: a paged feed asks again from its watermark
    // and skips what it already has) for every feed, never a mismatch.
    assert!(
        stdout.contains("served = landed + quarantined for every feed")
            || stdout.contains("served = landed + quarantined + skipped for every feed"),
        "{stdout}"
    );
    assert!(!stdout.contains("MISMATCH"), "{stdout}");
    assert!(dir.path().join("wh/lake/portal/dossiers").is_dir());
    // The ranking of the latest month that has ended, then the month in progress, judged as of
    // the data (the simulator's clock stops at --now) with its dossier counts.
    assert!(
        stdout.contains("Service-quality index, 2026-08 (provisional), provinces, top 10:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("The month in progress, 2026-09 (provisional, judged as of 2026-09-10"),
        "{stdout}"
    );
    assert!(stdout.contains("DOSSIERS"), "{stdout}");
    // The same month beside the simulated portal's own published evaluation.
    assert!(
        stdout.contains(
            "Reconciliation of 2026-08 with the portal's published evaluation (ended, fetched "
        ),
        "{stdout}"
    );
    // The latest complete month as a publication preview, which the published warehouse's
    // publication views already show (the demo builds after recording it).
    assert!(
        stdout
            .contains("A publication preview of 2026-08 (never sent; finals are numbered apart): "),
        "{stdout}"
    );
    let previews: Vec<(String, i64, String)> =
        chiso::duck::open_read_only(&dir.path().join("wh/chiso.duckdb"))
            .unwrap()
            .prepare("SELECT period, revision, status FROM pub_latest_previews")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    assert_eq!(
        previews,
        vec![("2026-08".to_string(), 0, "provisional".to_string())],
        "the demo's preview is not in the published warehouse"
    );

    // status reads what the demo committed (the built-in project is used outside a project).
    let st = chiso()
        .current_dir(dir.path())
        .args(["status", "--dir", "wh", "--json"])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let dossiers = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "dossiers")
        .unwrap();
    assert_eq!(dossiers["last_run"]["outcome"], "ok");
    assert!(dossiers["rows_landed_total"].as_u64().unwrap() > 1000);
    assert!(
        dossiers["watermark"]
            .as_str()
            .unwrap()
            .starts_with("202609"),
        "{dossiers}"
    );

    // The committed snapshot, as another engine would take it: every dossier row the status
    // counts is in the files it lists, and nothing else.
    let snap = chiso()
        .current_dir(dir.path())
        .args(["snapshot", "--dir", "wh", "--json"])
        .output()
        .unwrap();
    assert!(
        snap.status.success(),
        "{}",
        String::from_utf8_lossy(&snap.stderr)
    );
    let snap: std::collections::BTreeMap<String, Vec<String>> =
        serde_json::from_slice(&snap.stdout).unwrap();
    let files = &snap["portal/dossiers"];
    assert!(!files.is_empty());
    let list: Vec<String> = files.iter().map(|f| format!("'{f}'")).collect();
    let conn = duckdb::Connection::open_in_memory().unwrap();
    let rows: u64 = conn
        .query_row(
            &format!("SELECT count(*) FROM read_parquet([{}])", list.join(", ")),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, dossiers["rows_landed_total"].as_u64().unwrap());

    // Build the warehouse from what the demo landed, with the repository's models, then test it.
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("chiso.toml");
    let wh = dir.path().join("wh");
    // A relative --dir, as a newcomer types it.
    let b = chiso()
        .current_dir(dir.path())
        .arg("--config")
        .arg(&config)
        .args(["--dir", "wh"])
        .arg("build")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&b.stdout);
    assert!(
        b.status.success(),
        "build failed: {out}\n{}",
        String::from_utf8_lossy(&b.stderr)
    );
    assert!(
        out.contains("Published") && out.contains("int_indicator_points"),
        "{out}"
    );
    assert!(wh.join("chiso.duckdb").exists());
    let t = chiso()
        .arg("--config")
        .arg(&config)
        .arg("--dir")
        .arg(&wh)
        .arg("test")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&t.stdout);
    assert!(
        t.status.success() && out.contains(" passed, 0 failed"),
        "{out}"
    );
    // A preview publication (and the build after it) puts the pub_* tables and views in the
    // published file.
    let month: String = chiso::duck::open_read_only(&wh.join("chiso.duckdb"))
        .unwrap()
        .query_row(
            "SELECT max(period) FROM mart_index_unit_period WHERE period_type = 'month'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let p = chiso()
        .arg("--config")
        .arg(&config)
        .arg("--dir")
        .arg(&wh)
        .args(["publish", &month, "--provisional"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&p.stdout);
    assert!(
        p.status.success()
            && out.contains(&format!(
                "{month} preview (provisional, never sent) recorded"
            )),
        "{out}\n{}",
        String::from_utf8_lossy(&p.stderr)
    );
    // The published file opens in a DuckDB 1.x client, read-only, marts, publications and all.
    duckdb1_reads_the_marts(&wh.join("chiso.duckdb"));

    // CHISO_PROFILE_DIR: each file holds the statement it is named after, not a query the
    // runner ran after it (row counts and reuse tokens used to overwrite the models' files).
    let prof = dir.path().join("prof");
    let p = chiso()
        .env("CHISO_PROFILE_DIR", &prof)
        .arg("--config")
        .arg(&config)
        .arg("--dir")
        .arg(&wh)
        .args(["build", "--full-refresh"])
        .output()
        .unwrap();
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    let read = |name: &str| {
        std::fs::read_to_string(prof.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    for table in ["int_indicator_counts.json", "fct_dossiers.json"] {
        assert!(read(table).contains("CREATE_TABLE_AS"), "{table}");
    }
    assert!(read("int_dossier_steps_before_their_dossier.json").contains("CREATE_TABLE_AS"));
    assert!(read("_tests/accepted_values_fct_dossiers_due_source.json").contains("due_source"));
    assert!(read("_checkpoint.json").contains("CHECKPOINT"));
}

#[test]
fn config_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(repo.join("chiso.toml"), dir.path().join("chiso.toml")).unwrap();
    std::fs::create_dir(dir.path().join("jobs")).unwrap();
    let petitions = std::fs::read_to_string(repo.join("jobs/petitions.toml")).unwrap();
    let line = petitions
        .lines()
        .position(|l| l.starts_with("page_size"))
        .unwrap()
        + 1;
    std::fs::write(
        dir.path().join("jobs/petitions.toml"),
        petitions.replace("page_size = 500", "page_size = 0"),
    )
    .unwrap();
    let ratings = std::fs::read_to_string(repo.join("jobs/ratings.toml")).unwrap();
    std::fs::write(
        dir.path().join("jobs/ratings.toml"),
        ratings.replace("protocol = \"paged_post\"", "protocol = \"paged\""),
    )
    .unwrap();
    let out = chiso()
        .current_dir(dir.path())
        .args(["run", "--all"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 configuration problems"), "{err}");
    assert!(
        err.contains(&format!(
            "petitions.toml:{line}: page_size = 0: page size must be between 1 and 10000"
        )),
        "{err}"
    );
    assert!(
        err.contains("ratings.toml:") && err.contains("unknown protocol \"paged\""),
        "{err}"
    );

    let ok = chiso().current_dir(repo).args(["jobs"]).output().unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("14 job(s), configuration ok"));
}

/// `chiso bench ingest` with a relative work folder, as the README runs it from a fresh clone:
/// both engines land every generated record (the file job used to resolve the relative input
/// against `/` and land nothing).
#[test]
fn bench_ingest_runs_with_a_relative_work_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = chiso()
        .current_dir(dir.path())
        .args([
            "bench",
            "ingest",
            "--dossiers",
            "2000",
            "--work-dir",
            "target/bench",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench ingest failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("chiso") && stdout.contains("duckdb"),
        "{stdout}"
    );
}

/// Ten weeks of publication replayed day by day (`chiso bench publication-year`, the same
/// command the year's figures in docs/publication.md come from, on a shorter span): daily
/// previews, the final job from the 11th, the monthly release revising what moved, a new
/// methodology version on 2026-06-20 effective from May (after May's revision 1), the
/// simulator's registry rename of 2026-06-15. Finals are numbered 1, 2, … per period and every
/// portal gets each exactly once, in order; previews stay one per open period; the ledger
/// grows with final revisions only; May's revision 2 says "methodology"; every pending
/// revision has its reason codes; the vintage macro answers what was published when.
#[test]
fn ten_weeks_of_publication_number_finals_apart_and_keep_the_ledger_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("chiso.toml");
    let out = chiso()
        .current_dir(dir.path())
        .arg("--config")
        .arg(&config)
        .args([
            "bench",
            "publication-year",
            "--work-dir",
            "year",
            "--scale",
            "40",
            "--from",
            "2026-05-01",
            "--until",
            "2026-07-12",
            "--methodology-on",
            "2026-06-20",
            // The portals refuse 30 % of pushes, lose the answer to 5 % after storing them and
            // redirect 10 % to a login page.
            "--portal-error-rate",
            "0.3",
            "--portal-lost-rate",
            "0.05",
            "--portal-redirect-rate",
            "0.1",
            "--json",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let json = &stdout[stdout.find("\n{").expect("the JSON report") + 1..];
    let r: serde_json::Value = serde_json::from_str(json).unwrap();
    let periods = r["periods"].as_array().unwrap();
    let by_period = |p: &str| {
        periods
            .iter()
            .find(|x| x["period"] == p)
            .unwrap_or_else(|| panic!("no finals of {p}: {stdout}"))
    };
    for p in periods {
        let revisions: Vec<i64> = p["revisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(
            revisions,
            (1..=revisions.len() as i64).collect::<Vec<_>>(),
            "{p}"
        );
        // Each portal: every final it got, once, in order, never one superseded before it was
        // delivered; what the ledger says was acknowledged it has; the newest revision is
        // acknowledged or still pending (a push's answer lost on the last day).
        let receipts = p["receipts"].as_object().unwrap();
        assert_eq!(receipts.len(), 3, "three targets: {p}");
        for (target, list) in receipts {
            let got: Vec<i64> = p["received"][target]
                .as_array()
                .map(|a| a.iter().map(|v| v.as_i64().unwrap()).collect())
                .unwrap_or_default();
            assert!(
                got.windows(2).all(|w| w[0] < w[1]),
                "{target} got {got:?}: {p}"
            );
            let status = |rev: i64| -> String {
                list.as_array()
                    .unwrap()
                    .iter()
                    .find(|x| x[0] == rev)
                    .map(|x| x[1].as_str().unwrap().to_string())
                    .unwrap_or_else(|| panic!("{target} has no receipt of {rev}: {p}"))
            };
            for &rev in &revisions {
                let s = status(rev);
                match s.as_str() {
                    "acknowledged" => assert!(got.contains(&rev), "{target} {rev}: {p}"),
                    // Recorded while an older one was pending: the older is never sent
                    // after it (a push whose answer was lost may have been stored before).
                    "superseded" => assert!(rev < *revisions.last().unwrap(), "{target}: {p}"),
                    "pending" => assert_eq!(rev, *revisions.last().unwrap(), "{target}: {p}"),
                    other => panic!("{target} {rev} {other}: {p}"),
                }
            }
            assert!(
                got.iter().all(|r| revisions.contains(r)),
                "{target} got a revision the ledger does not have: {p}"
            );
        }
    }
    // May: revision 1 on 06-11 under dvcqg-2026, revision 2 at the July release under the
    // new version; June final on 07-11.
    let may = by_period("2026-05");
    assert!(may["revisions"].as_array().unwrap().len() >= 2, "{may}");
    assert!(
        may["reason_codes"][1]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "methodology"),
        "{may}"
    );
    // Every revision after the first says why, with the reason codes of the ledger.
    let known = [
        "late_data",
        "registry",
        "methodology",
        "recomputation",
        "correction",
    ];
    for p in periods {
        for codes in p["reason_codes"].as_array().unwrap().iter().skip(1) {
            let codes = codes.as_array().unwrap();
            assert!(!codes.is_empty(), "{p}");
            assert!(
                codes.iter().all(|c| known.contains(&c.as_str().unwrap())),
                "{p}"
            );
        }
    }
    // Previews: one per period not yet final, pruned with their folders; every day has one
    // once the month has data (the first days of May, a holiday and a weekend, have none).
    let months = r["months"].as_array().unwrap();
    for (i, m) in months.iter().enumerate() {
        assert!(
            (1..=2).contains(&m["previews_kept"].as_i64().unwrap()),
            "{m}"
        );
        assert!(
            (1..=2).contains(&m["preview_folders"].as_u64().unwrap()),
            "{m}"
        );
        let failures = m["preview_failures"].as_u64().unwrap();
        assert!(if i == 0 { failures <= 5 } else { failures == 0 }, "{m}");
    }
    // A stable world: the guard never holds a final by chance (waiting a day or two for the
    // month's last petitions to sync is finality, not the guard: `waiting_days`).
    let held: u64 = months
        .iter()
        .map(|m| m["held_days"].as_u64().unwrap())
        .sum();
    assert_eq!(held, 0, "finals held by the guard: {stdout}");
    // The ledger grows by final revisions only: at most (finals + 2 previews) revisions'
    // rows, a revision's rows being what the first month's one preview holds.
    let per_revision = months[0]["ledger_rows"].as_i64().unwrap();
    let finals: i64 = periods
        .iter()
        .map(|p| p["revisions"].as_array().unwrap().len() as i64)
        .sum();
    let last = months.last().unwrap()["ledger_rows"].as_i64().unwrap();
    assert!(
        last <= (finals + 2) * per_revision * 11 / 10,
        "{last} rows for {finals} finals at {per_revision} a revision"
    );
    // The registry rename shows in what was published after it.
    assert_eq!(
        r["renamed_unit"][1], "Thuế cơ sở 1 Hà Nội (Ba Đình - Hoàn Kiếm)",
        "{}",
        r["renamed_unit"]
    );
    // Vintages: just after May's revision 1, revision 1; at the end, May's latest.
    let vintages = r["vintages"].as_array().unwrap();
    assert!(vintages.len() >= 2, "{vintages:?}");
    assert_eq!(vintages[0]["revision"], 1, "{vintages:?}");
    assert_eq!(
        vintages.last().unwrap()["revision"].as_i64().unwrap(),
        may["revisions"].as_array().unwrap().len() as i64,
        "{vintages:?}"
    );
    assert!(stdout.contains("PORTALS GOT"), "{stdout}");
}

/// The daemon exits at once on an error, even while a build runs, so a supervisor restarts it
/// (before: it released its lock, then waited for the build inside the runtime's shutdown).
/// A project whose only job is a build every second, of one model that takes about twenty
/// seconds: once the first build runs and a second fire has been skipped (and counted in
/// `chiso_fires_total`), the build's fire history becomes a folder, so the next skipped fire
/// cannot be written: the daemon must exit within a few seconds, with the error.
#[test]
fn the_daemon_exits_at_once_on_an_error_while_a_build_runs() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("jobs")).unwrap();
    std::fs::create_dir_all(root.join("sql/models")).unwrap();
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("chiso.toml"),
        root.join("chiso.toml"),
    )
    .unwrap();
    std::fs::write(
        root.join("jobs/build.toml"),
        "kind = \"build\"\nafter_pulls = false\nschedule = \"* * * * * *\"\n",
    )
    .unwrap();
    std::fs::write(
        root.join("sql/dbt_project.yml"),
        "name: slow\nversion: \"0.1.0\"\nconfig-version: 2\nprofile: chiso\nmodel-paths: [\"models\"]\n",
    )
    .unwrap();
    std::fs::write(
        root.join("sql/models/slow.sql"),
        "{{ config(materialized='table') }}\nselect sum(i % 7) as s from range(3000000000) t(i)\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut daemon = chiso()
        .current_dir(root)
        .args(["--config", "chiso.toml", "serve", "--http"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let history = root.join("warehouse/_state/_serve/fires/build.jsonl");
    let t0 = Instant::now();
    let metrics = || -> String {
        use std::io::Write;
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return String::new();
        };
        let _ = write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        );
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text
    };
    // The first build runs, and a fire that found it running is counted.
    loop {
        let text = metrics();
        let skipped = text.lines().any(|l| {
            l.starts_with("chiso_fires_total{")
                && l.contains("job=\"build\"")
                && l.contains("event=\"skipped_overlap\"")
        });
        let claimed = std::fs::read_to_string(&history)
            .unwrap_or_default()
            .contains("\"claimed\"");
        if skipped && claimed {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "no build running with a skipped fire counted:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::rename(&history, history.with_extension("moved")).unwrap();
    std::fs::create_dir(&history).unwrap();
    let broken = Instant::now();
    let status = loop {
        if let Some(s) = daemon.try_wait().unwrap() {
            break s;
        }
        if broken.elapsed() > Duration::from_secs(30) {
            let _ = daemon.kill();
            panic!("the daemon was still running 30 s after the error");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = broken.elapsed();
    let mut stderr = String::new();
    daemon
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("build.jsonl"), "{stderr}");
    assert!(
        took < Duration::from_secs(5),
        "the daemon took {took:?} to exit after the error (the build takes ~20 s):\n{stderr}"
    );
}
