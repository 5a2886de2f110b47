//! The live console, as a person sees it: `chiso demo --serve` runs (the simulator and the
//! daemon, the binary itself), headless Chromium opens every page over 127.0.0.1, and what it
//! shows is checked against the published warehouse: a row per unit of a level, a point per
//! period on a unit's history, and, for every indicator of a sample unit, the records listed
//! equal to the mart's numerator and denominator. Screenshots are checked not blank, every
//! request the browser made stays on 127.0.0.1, and the publish guard's personal-data scan
//! reads every page's text. Then the jobs go on, and an open ranking page takes the new build
//! within seconds, without reloading.
//!
//! `CHISO_SCREENSHOTS_DIR=docs/console cargo test --release --test console` refreshes the
//! screenshots docs/console.md shows.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::browser::{Browser, Page};
use serde_json::Value;

fn chiso(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chiso"));
    c.current_dir(dir)
        .arg("--config")
        .arg(common::repo().join("chiso.toml"))
        .env_remove("CHISO_HTTP_TOKEN");
    c
}

/// `chiso demo --serve` on 127.0.0.1 and the address it answers on.
fn start_demo(dir: &Path) -> (Child, String) {
    let mut child = chiso(dir)
        .args([
            "demo",
            "--serve",
            "--http",
            "127.0.0.1:0",
            "--dir",
            "wh",
            "--now",
            "2026-09-10T10:00:00",
            "--from",
            "2026-06-01",
            "--every",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("the demo ended before it started")
            .unwrap();
        if let Some(rest) = line.split("console http://").nth(1) {
            break format!("http://{}", rest.split('/').next().unwrap());
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A GET with optional headers: status and body.
fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    runtime().block_on(async {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut req = client.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        match req.send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    })
}

/// The published file's identity: it changes when a build publishes.
fn published_key(warehouse: &Path) -> Option<(u64, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(chiso::models::build::published_path(warehouse)).ok()?;
    Some((m.ino(), m.modified().ok()?))
}

fn count(conn: &duckdb::Connection, sql: &str, params: &[&dyn duckdb::ToSql]) -> i64 {
    conn.query_row(sql, params, |r| r.get(0)).unwrap()
}

/// What a page's text holds that the guard calls personal, if anything.
fn guard_scan(warehouse: &Path, pages: &[(String, String)]) {
    let project = chiso::config::ProjectConfig::parse(
        &common::repo().join("chiso.toml"),
        &std::fs::read_to_string(common::repo().join("chiso.toml")).unwrap(),
        &|_| None,
    )
    .unwrap();
    let jobs = chiso::config::load_jobs(&common::repo().join("jobs"), &project).unwrap();
    // As the publisher's connection has it: the published warehouse attached as `wh`.
    let conn = chiso::duck::in_memory(2).unwrap();
    conn.execute_batch(&format!(
        "ATTACH {} AS wh (READ_ONLY)",
        chiso::duck::lit(
            &chiso::models::build::published_path(warehouse)
                .display()
                .to_string()
        )
    ))
    .unwrap();
    for (what, text) in pages {
        chiso::publish::guard::check_text(&conn, warehouse, &jobs, what, text)
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
    }
}

fn save_screenshot(name: &str, png: &[u8]) {
    let (inked, colours) = common::png_content(png);
    assert!(
        inked > 0.02 && colours > 8,
        "the screenshot of {name} looks blank ({inked:.3} inked, {colours} colours)"
    );
    let mut dirs = vec![PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console")];
    if let Some(d) = std::env::var_os("CHISO_SCREENSHOTS_DIR") {
        dirs.push(PathBuf::from(d));
    }
    for d in dirs {
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("{name}.png")), png).unwrap();
    }
}

/// Opens `path` and keeps its text for the guard.
fn visit(b: &mut Browser, page: &Page, base: &str, path: &str, texts: &mut Vec<(String, String)>) {
    b.open(page, &format!("{base}{path}"));
    let text = b.eval(page, "document.body.innerText");
    texts.push((
        format!("the console page {path}"),
        text.as_str().unwrap_or_default().to_string(),
    ));
    let title = b.eval(page, "document.title");
    assert!(
        !title.as_str().unwrap_or("").starts_with("Lỗi"),
        "{path}: {}",
        texts.last().unwrap().1
    );
}

/// A records page's counts: listed numerator and denominator, then the mart's.
fn counts(b: &mut Browser, page: &Page) -> Vec<f64> {
    let v = b.eval(
        page,
        "(d => [d.listedNumerator, d.listedDenominator, d.numerator, d.denominator].map(Number))(document.getElementById('counts').dataset)",
    );
    serde_json::from_value(v).unwrap()
}

fn jobs_of(base: &str) -> Vec<String> {
    let (code, body) = get(&format!("{base}/status"), &[]);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job"].as_str().unwrap().to_string())
        .collect()
}

fn jobs_cli(dir: &Path, action: &str, job: &str) {
    let out = chiso(dir)
        .args(["jobs", action, job, "--dir", "wh"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chiso jobs {action} {job}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_console_shows_the_warehouse_and_follows_its_builds() {
    // Without Chromium (and without CHISO_REQUIRE_CHROMIUM, which CI sets) only the access
    // checks below run.
    let browser = Browser::launch();
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("wh");
    let (daemon, base) = start_demo(dir.path());

    // The first build publishes; then the pulls are paused and the warehouse settles, so
    // that what the pages show can be compared with it.
    let end = Instant::now() + Duration::from_secs(300);
    while get(&format!("{base}/console/ranking"), &[]).0 != 200 {
        assert!(Instant::now() < end, "no ranking within 5 minutes");
        std::thread::sleep(Duration::from_millis(500));
    }
    // Without a token, only requests naming this machine: a web page elsewhere cannot read
    // the console through a name rebound to 127.0.0.1.
    assert_eq!(
        get(
            &format!("{base}/console/ranking"),
            &[("Host", "rebound.example")]
        )
        .0,
        421
    );
    if let Some(mut b) = browser {
        let jobs = jobs_of(&base);
        for j in &jobs {
            jobs_cli(dir.path(), "pause", j);
        }
        let mut key = published_key(&warehouse);
        let mut since = Instant::now();
        while since.elapsed() < Duration::from_secs(12) {
            std::thread::sleep(Duration::from_millis(250));
            let now = published_key(&warehouse);
            if now != key {
                (key, since) = (now, Instant::now());
            }
            assert!(Instant::now() < end, "the warehouse did not settle");
        }
        let conn = common::open(&warehouse);
        let page = b.page();
        let mut texts = Vec::new();

        // Ranking: a row per unit of each level, the month in progress first in the picker.
        visit(&mut b, &page, &base, "/console/ranking", &mut texts);
        let period = b.eval(&page, "document.getElementById('ranking').dataset.period");
        let period = period.as_str().unwrap().to_string();
        let first = b.eval(
            &page,
            "document.querySelector('#period option').textContent",
        );
        assert!(
            first.as_str().unwrap().contains("đang diễn ra"),
            "the month in progress comes first: {first}"
        );
        assert_eq!(
            period, "2026-09",
            "the picker opens on the month in progress"
        );
        save_screenshot("ranking", &b.screenshot(&page));
        for (level, filter) in [
            ("2", "unit_level = 2"),
            ("3", "unit_level = 3"),
            ("other", "coalesce(unit_level, 0) NOT IN (2, 3)"),
        ] {
            visit(
                &mut b,
                &page,
                &base,
                &format!("/console/ranking?level={level}&period=2026-08"),
                &mut texts,
            );
            let shown = b.eval(
                &page,
                "document.querySelectorAll('#ranking tr.unit').length",
            );
            let expected = count(
                &conn,
                &format!(
                "SELECT count(*) FROM mart_index_unit_period WHERE period = '2026-08' AND {filter}"
            ),
                &[],
            );
            assert_eq!(shown.as_i64().unwrap(), expected, "level {level}");
            if level != "other" {
                assert!(expected > 0, "level {level} has units");
            }
        }

        // Unit: the best province of August, its history with a point per month.
        let unit: String = conn
        .query_row(
            "SELECT unit_id FROM mart_index_unit_period WHERE period = '2026-08' AND unit_level = 2
             ORDER BY total DESC, unit_id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
        visit(
            &mut b,
            &page,
            &base,
            &format!("/console/unit/{unit}?period=2026-08"),
            &mut texts,
        );
        save_screenshot("unit", &b.screenshot(&page));
        let points = b.eval(
            &page,
            "document.querySelectorAll('#history svg circle').length",
        );
        let months = count(
        &conn,
        "SELECT count(*) FROM mart_index_unit_period WHERE unit_id = ? AND period_type = 'month'",
        &[&unit],
    );
        assert!(months >= 3, "{months} months");
        assert_eq!(points.as_i64().unwrap(), months, "a point per month");
        let indicators = b.eval(
        &page,
        "[...document.querySelectorAll('#indicators tr[data-indicator]')].map(r => [r.dataset.indicator, !!r.querySelector('a.drill')])",
    );
        let indicators = indicators.as_array().unwrap().clone();
        let in_mart = count(
            &conn,
            "SELECT count(*) FROM mart_index_indicator WHERE unit_id = ? AND period = '2026-08'",
            &[&unit],
        );
        assert_eq!(indicators.len() as i64, in_mart, "a row per indicator");
        let children = b.eval(
            &page,
            "document.querySelectorAll('#children tr[data-unit]').length",
        );
        assert_eq!(
        children.as_i64().unwrap(),
        count(
            &conn,
            "SELECT count(*) FROM mart_index_unit_period WHERE parent_unit_id = ? AND period = '2026-08'",
            &[&unit]
        )
    );

        // Records: for every indicator with records, the listed counts are the mart's.
        let mut drilled = 0;
        let mut paged = false;
        for ind in &indicators {
            let (code, has_drill) = (ind[0].as_str().unwrap(), ind[1].as_bool().unwrap());
            let path = format!("/console/records/{unit}/2026-08/{code}");
            visit(&mut b, &page, &base, &path, &mut texts);
            if !has_drill {
                assert_eq!(
                    b.eval(&page, "!!document.getElementById('no-records')"),
                    true
                );
                continue;
            }
            drilled += 1;
            let (num, den): (f64, f64) = conn
            .query_row(
                "SELECT numerator, denominator FROM mart_index_indicator WHERE unit_id = ? AND period = '2026-08' AND indicator = ?",
                duckdb::params![unit, code],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
            let l = counts(&mut b, &page);
            assert_eq!(
                (l[2], l[3]),
                (num, den),
                "{code}: the page's counts are the mart's"
            );
            assert_eq!(l[0], num, "{code}: the records in the numerator");
            if code == "DOSSIER_SYNC" {
                // The national report's count may be larger; it has no records to list.
                assert!(l[1] <= den, "{code}: {} listed, {den} counted", l[1]);
            } else {
                assert_eq!(l[1], den, "{code}: the records in the denominator");
            }
            let rows = b.eval(
                &page,
                "document.querySelectorAll('#records tr.record').length",
            );
            assert_eq!(
                rows.as_f64().unwrap(),
                l[1].min(50.0),
                "{code}: a page of 50"
            );
            // The CSV lists them all (a header line, then a line per record).
            let (status, csv) = get(&format!("{base}{path}/csv"), &[]);
            assert_eq!(status, 200);
            assert_eq!(csv.lines().count() as f64 - 1.0, l[1], "{code}: the CSV");
            assert!(!csv.lines().next().unwrap().contains("officer"));
            texts.push((format!("the CSV of {code}"), csv));
            if l[1] > 50.0 && !paged {
                paged = true;
                save_screenshot("records", &b.screenshot(&page));
                visit(
                    &mut b,
                    &page,
                    &base,
                    &format!("{path}?which=out&page=2"),
                    &mut texts,
                );
                let out = l[1] - l[0];
                let rows = b.eval(
                    &page,
                    "document.querySelectorAll('#records tr.record.out').length",
                );
                assert_eq!(rows.as_f64().unwrap(), (out - 50.0).clamp(0.0, 50.0));
            }
        }
        assert!(drilled >= 8, "{drilled} indicators with records");
        assert!(paged, "an indicator with more than a page of records");

        // The top of the tree (scoped by the period alone), against the mart too.
        let root: String = conn
            .query_row(
                "SELECT unit_id FROM mart_index_unit_period WHERE period = '2026-08' AND parent_unit_id IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        visit(
            &mut b,
            &page,
            &base,
            &format!("/console/records/{root}/2026-08/ON_TIME_HANDLING"),
            &mut texts,
        );
        let l = counts(&mut b, &page);
        assert_eq!((l[0], l[1]), (l[2], l[3]), "{root}: listed = counted");
        assert!(l[1] > 0.0);

        // The drill-down view scoped (as the console reads it) lists exactly what it lists
        // unscoped, for a base unit, a province and the top, in a month, a quarter and a year;
        // a filter on another unit or period than the scope lists nothing.
        let base_unit: String = conn
            .query_row(
                "SELECT unit_id FROM mart_index_unit_period WHERE period = '2026-08' AND parent_unit_id = ? ORDER BY total LIMIT 1",
                [&unit],
                |r| r.get(0),
            )
            .unwrap();
        let per = |c: &duckdb::Connection, u: &str, p: &str| -> Vec<String> {
            common::rows(
                c,
                &format!(
                    // every column of each row, the dossier's as well as the count's
                    "SELECT CAST(d AS VARCHAR) FROM drill_indicator_dossiers AS d
                     WHERE d.unit_id = {} AND d.period = {} ORDER BY 1",
                    chiso::duck::lit(u),
                    chiso::duck::lit(p)
                ),
            )
        };
        let scoped = common::open(&warehouse);
        for u in [&base_unit, &unit, &root] {
            for p in ["2026-08", "2026-Q3", "2026"] {
                let all = per(&conn, u, p);
                scoped
                    .execute_batch(&format!(
                        "SET VARIABLE drill_period = {}; SET VARIABLE drill_unit_id = {};",
                        chiso::duck::lit(p),
                        chiso::duck::lit(u)
                    ))
                    .unwrap();
                assert_eq!(
                    per(&scoped, u, p),
                    all,
                    "{u} {p}, scoped by unit and period"
                );
                scoped
                    .execute_batch("RESET VARIABLE drill_unit_id;")
                    .unwrap();
                assert_eq!(per(&scoped, u, p), all, "{u} {p}, scoped by the period");
                assert!(!all.is_empty(), "{u} {p}");
            }
        }
        scoped
            .execute_batch(
                "SET VARIABLE drill_period = '2026-08'; SET VARIABLE drill_unit_id = 'nobody';",
            )
            .unwrap();
        assert!(per(&scoped, &unit, "2026-08").is_empty());
        assert!(per(&scoped, &root, "2026-Q3").is_empty());
        drop(scoped);

        // Operations: every job, the day's fires, the builds with their tests.
        visit(&mut b, &page, &base, "/console/operations", &mut texts);
        save_screenshot("operations", &b.screenshot(&page));
        let shown: Vec<String> = serde_json::from_value(b.eval(
            &page,
            "[...document.querySelectorAll('#jobs tr.job')].map(r => r.dataset.job)",
        ))
        .unwrap();
        assert_eq!(shown, jobs);
        let fires = b.eval(
            &page,
            "Number(document.getElementById('timeline').dataset.fires)",
        );
        assert!(fires.as_f64().unwrap() > 0.0);
        let builds = b.eval(
            &page,
            "document.querySelectorAll('#builds tr.build').length",
        );
        assert!(builds.as_i64().unwrap() >= 1);

        // Nothing personal on any page; no request left 127.0.0.1.
        guard_scan(&warehouse, &texts);
        drop(conn);

        // Live: an open ranking page takes the next build within seconds, without reloading.
        visit(&mut b, &page, &base, "/console/ranking", &mut texts);
        b.eval(
            &page,
            "window.__kept = document.getElementById('levels'); 1",
        );
        let before = b.eval(&page, "document.body.dataset.build");
        let key = published_key(&warehouse);
        for j in &jobs {
            jobs_cli(dir.path(), "resume", j);
        }
        let end = Instant::now() + Duration::from_secs(180);
        let mut published_at = None;
        let shown_at = loop {
            assert!(
                Instant::now() < end,
                "no build reached the page within 3 minutes"
            );
            if published_at.is_none() && published_key(&warehouse) != key {
                published_at = Some(Instant::now());
            }
            if b.eval(&page, "document.body.dataset.build") != before {
                break Instant::now();
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let published_at = published_at.unwrap_or(shown_at);
        let lag = shown_at.saturating_duration_since(published_at);
        eprintln!("the ranking page showed the new build {lag:?} after it was published");
        assert!(lag < Duration::from_secs(5), "{lag:?}");
        assert_eq!(
            b.eval(&page, "window.__kept === document.getElementById('levels')"),
            true,
            "the page was not reloaded"
        );
        b.eval(&page, "1");
        let requests = b.requests().to_vec();
        assert!(requests.iter().any(|u| u.ends_with("/console/events")));
        for u in &requests {
            assert!(
                u.starts_with(&format!("{base}/")) || u == "about:blank" || u.starts_with("data:"),
                "a request left 127.0.0.1: {u}"
            );
        }
    }
    stop(daemon);

    // With a token: a reader without it is sent to sign in (a page) or refused (a script);
    // with it (the header, or the sign-in form's cookie), officer names show.
    runtime().block_on(with_a_token(&warehouse));
}

async fn with_a_token(warehouse: &Path) {
    use std::sync::Arc;
    // A unit with late dossiers in August.
    let unit: String = common::open(warehouse)
        .query_row(
            "SELECT unit_id FROM mart_index_indicator WHERE period = '2026-08'
               AND indicator = 'ON_TIME_HANDLING' AND denominator > numerator
             ORDER BY denominator - numerator DESC, unit_id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let (_, jobs) = chiso::demo::embedded_all().unwrap();
    let token = "console-test-token";
    let shared = Arc::new(chiso::serve::report::Shared::new(
        warehouse.to_path_buf(),
        jobs,
        Some(token.into()),
    ));
    let (_stop, stop) = tokio::sync::watch::channel(false);
    let console = chiso::console::Console::new(
        chiso::console::published::Published::new(warehouse),
        shared.clone(),
        stop,
        Some(token),
        false,
    );
    let app = chiso::serve::http::router(shared, chiso::serve::metrics::handle(), console);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let path = format!("{base}/console/records/{unit}/2026-08/ON_TIME_HANDLING?which=out");
    let r = client.get(&path).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .get(&path)
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/login");
    let r = client
        .get(format!("{base}/console/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .get(&path)
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Only loopback names without a token; with one, any (the token decides).
    let r = client
        .get(&path)
        .header("Host", "console.example")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = client.get(&path).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "private, no-store");
    let page = r.text().await.unwrap();
    assert!(page.contains("Cán bộ xử lý"), "the officer column");
    // The officer of a listed dossier's last step, as the steps hold it.
    let conn = common::open(warehouse);
    let ids: Vec<String> = page
        .split("data-id=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(str::to_string)
        .collect();
    assert!(!ids.is_empty(), "late dossiers listed");
    let mut officers = Vec::new();
    for id in &ids {
        let o: Option<String> = conn
            .query_row(
                "SELECT arg_max(officer_name, stepped_at) FROM stg_portal__dossier_steps WHERE dossier_id = ?",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        officers.extend(o);
    }
    assert!(!officers.is_empty(), "steps with officers");
    for o in &officers {
        assert!(page.contains(o.as_str()), "{o}");
    }
    let officer = officers[0].clone();

    // The sign-in form: a wrong token is refused, the right one sets the cookie.
    let r = client
        .post(format!("{base}/console/login"))
        .form(&[("token", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    let r = client
        .post(format!("{base}/console/login"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        !cookie.contains(token),
        "the cookie is not the token: {cookie}"
    );
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let csv = client
        .get(format!(
            "{base}/console/records/{unit}/2026-08/ON_TIME_HANDLING/csv?which=out"
        ))
        .header("Cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    let csv = csv.text().await.unwrap();
    assert!(csv.lines().next().unwrap().ends_with(",officer"), "{csv}");
    assert!(csv.contains(&officer));
}
