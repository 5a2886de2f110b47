//! `chiso bench console`: the console's page latency on a warehouse of N simulated dossiers
//! while builds run. The lake of `bench build` (prepared once, reused), a full build, then the
//! daemon's HTTP answers (`/console/…` and `/status`, the same router `chiso serve` mounts) on
//! 127.0.0.1 while child processes build the warehouse again and again (full and incremental
//! builds in turn); each page kind is asked for in turn over a sample of levels, periods,
//! units, indicators and record pages, one request at a time, and timed from the request to
//! the last byte.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use super::build::{child_args, prepare_lake, run_child, BuildBench};
use crate::duck;

/// One page kind's latencies.
#[derive(Debug, Clone, Serialize)]
pub struct PageLatency {
    pub page: String,
    pub requests: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
    /// Requests answered while a build was running.
    pub during_builds: usize,
    /// The three slowest requests (ms, path), slowest first; the path ends in " (first on a
    /// new build)" when the console read a build the request before it did not.
    pub slowest: Vec<(f64, String)>,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The URLs asked for, per page kind, from the published warehouse.
fn targets(run: &Path) -> anyhow::Result<Vec<(&'static str, Vec<String>)>> {
    let conn = duck::open_read_only(&crate::models::build::published_path(run))?;
    let list = |sql: &str| -> anyhow::Result<Vec<Vec<String>>> {
        let mut stmt = conn.prepare(sql)?;
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| r.get::<_, String>(i))
                    .collect::<Result<Vec<_>, _>>()
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    };
    let periods = list(
        "SELECT period FROM (SELECT DISTINCT period, period_type FROM mart_index_unit_period)
         ORDER BY period_type = 'month' DESC, period DESC LIMIT 8",
    )?;
    let mut ranking = Vec::new();
    for p in &periods {
        for level in ["2", "3", "other"] {
            ranking.push(format!("/console/ranking?level={level}&period={}", p[0]));
        }
    }
    // The largest units first: provinces and base units of the newest ended months.
    let units = list(
        "SELECT unit_id, period FROM mart_index_unit_period
         WHERE period_type = 'month' AND unit_level IN (2, 3)
         ORDER BY period DESC, unit_level, total DESC LIMIT 24",
    )?;
    let unit = units
        .iter()
        .map(|u| format!("/console/unit/{}?period={}", u[0], u[1]))
        .collect();
    // Record pages (the first, a middle and the last) of the largest units of each level: base
    // units and provinces in the newest months, the whole administration in its busiest month,
    // quarter and year (up to every dossier of the year). The pages are counted from the records
    // listed, not the mart's denominator: DOSSIER_SYNC's may be the national report's, larger,
    // and its last page would be past the records (an empty page, cheaper than a real one).
    let record_pages = |sql: &str| -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        for c in list(sql)? {
            conn.execute_batch(&format!(
                "SET VARIABLE drill_period = {};",
                duck::lit(&c[1])
            ))?;
            let n: i64 = conn.query_row(
                "SELECT count(*) FROM drill_indicator_dossiers WHERE unit_id = ? AND period = ? AND indicator = ?",
                duckdb::params![c[0], c[1], c[2]],
                |r| r.get(0),
            )?;
            conn.execute_batch("RESET VARIABLE drill_period;")?;
            let pages = (n as u64).div_ceil(crate::console::PAGE_SIZE).max(1);
            for page in [1, pages.div_ceil(2), pages] {
                out.push(format!(
                    "/console/records/{}/{}/{}?page={page}",
                    c[0], c[1], c[2]
                ));
            }
        }
        Ok(out)
    };
    let counts = |level: &str, periods: &str, order: &str, n: usize| {
        format!(
            "SELECT i.unit_id, i.period, i.indicator
             FROM mart_index_indicator AS i JOIN mart_index_unit_period AS u USING (unit_id, period)
             WHERE i.indicator IN ('ON_TIME_HANDLING', 'DOSSIER_SYNC', 'SO_HOA_GIAY_TO_GIAI_QUYET')
               AND i.denominator > 0 AND {level} AND {periods}
             ORDER BY {order} LIMIT {n}"
        )
    };
    let month = "u.period_type = 'month'";
    let newest = "i.period DESC, i.denominator DESC";
    let base = record_pages(&counts("u.unit_level = 3", month, newest, 8))?;
    let province = record_pages(&counts("u.unit_level = 2", month, newest, 8))?;
    // the largest numbers of the top: its busiest month, quarter and year
    let mut whole = Vec::new();
    for kind in ["month", "quarter", "year"] {
        let kind = format!("u.period_type = '{kind}'");
        whole.extend(record_pages(&counts(
            "u.parent_unit_id IS NULL",
            &kind,
            "i.denominator DESC, i.period DESC",
            3,
        ))?);
    }
    let operations = vec!["/console/operations".to_string()];
    if ranking.is_empty() || base.is_empty() || whole.is_empty() {
        bail!("the warehouse has no index to ask for");
    }
    Ok(vec![
        ("ranking", ranking),
        ("unit", unit),
        ("records, base unit", base),
        ("records, province", province),
        ("records, whole", whole),
        ("operations", operations),
    ])
}

/// Runs the benchmark: `per_page` requests of each page kind.
pub async fn run(opts: &BuildBench, per_page: usize) -> anyhow::Result<Vec<PageLatency>> {
    eprintln!("Preparing the lake of {} dossiers ...", opts.dossiers);
    let lake = prepare_lake(opts).await?;
    let run = opts
        .work_dir
        .join(format!("console-{}-s{}", opts.dossiers, opts.seed));
    super::hard_link_copy(&lake, &run)?;
    eprintln!("Full build ...");
    run_child(&child_args(opts, &run, true))?;

    // The daemon's HTTP answers, as `chiso serve` mounts them, over this warehouse.
    let (_, jobs) = crate::demo::embedded_all()?;
    let shared = Arc::new(crate::serve::report::Shared::new(run.clone(), jobs, None));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let published = crate::console::published::Published::new(&run);
    tokio::spawn(crate::console::published::watch(
        published.clone(),
        stop_rx.clone(),
    ));
    let console = crate::console::Console::new(
        published.clone(),
        shared.clone(),
        stop_rx.clone(),
        None,
        false,
    );
    let app = crate::serve::http::router(shared, crate::serve::metrics::handle(), console);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .await;
    });
    let targets = targets(&run)?;

    // Builds, one after another, full and incremental in turn, in child processes.
    let building = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let builds = Arc::new(AtomicUsize::new(0));
    let builder = {
        let (building, done, builds) = (building.clone(), done.clone(), builds.clone());
        let args: Vec<Vec<String>> =
            vec![child_args(opts, &run, true), child_args(opts, &run, false)];
        std::thread::spawn(move || -> anyhow::Result<()> {
            let mut i = 0;
            while !done.load(Ordering::SeqCst) {
                building.store(true, Ordering::SeqCst);
                let r = run_child(&args[i % 2]);
                building.store(false, Ordering::SeqCst);
                r?;
                builds.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
            Ok(())
        })
    };
    // Let the first build get going before the first request.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut out = Vec::new();
    let mut build_seen = published.mark().build_id;
    for (page, urls) in &targets {
        let mut times = Vec::with_capacity(per_page);
        let mut by_url = Vec::with_capacity(per_page);
        let mut during = 0;
        for i in 0..per_page {
            let url = format!("{base}{}", urls[i % urls.len()]);
            let was_building = building.load(Ordering::SeqCst);

            let t0 = Instant::now();
            let resp = client.get(&url).send().await.with_context(|| url.clone())?;
            let status = resp.status();
            let body = resp.bytes().await?;
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            if !status.is_success() {
                bail!("{url}: {status}: {}", String::from_utf8_lossy(&body));
            }
            if was_building || building.load(Ordering::SeqCst) {
                during += 1;
            }
            times.push(ms);
            // The console reopens the file when its watcher or a request sees it replaced.
            let build = published.mark().build_id;
            let first_on_new_build = build != build_seen;
            build_seen = build;
            let path = &urls[i % urls.len()];
            by_url.push((
                ms,
                if first_on_new_build {
                    format!("{path} (first on a new build)")
                } else {
                    path.clone()
                },
            ));
        }
        times.sort_by(f64::total_cmp);
        by_url.sort_by(|a, b| b.0.total_cmp(&a.0));
        by_url.truncate(3);
        out.push(PageLatency {
            page: page.to_string(),
            requests: times.len(),
            p50_ms: quantile(&times, 0.5),
            p95_ms: quantile(&times, 0.95),
            max_ms: times.last().copied().unwrap_or(f64::NAN),
            during_builds: during,
            slowest: by_url,
        });
        eprintln!("{page}: {} requests", times.len());
    }
    done.store(true, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    let built = tokio::task::spawn_blocking(move || builder.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the build thread panicked"))?;
    built.context("a build during the benchmark failed")?;
    let _ = server.await;
    println!(
        "\nConsole benchmark: {} dossiers, {} requests per page, one at a time, {} builds ran meanwhile (full and incremental in turn)",
        opts.dossiers,
        per_page,
        builds.load(Ordering::SeqCst)
    );
    println!(
        "{:<20} {:>9} {:>9} {:>9} {:>9} {:>14}",
        "page", "requests", "p50 ms", "p95 ms", "max ms", "during builds"
    );
    for p in &out {
        println!(
            "{:<20} {:>9} {:>9.1} {:>9.1} {:>9.1} {:>14}",
            p.page, p.requests, p.p50_ms, p.p95_ms, p.max_ms, p.during_builds
        );
    }
    println!("\nThe slowest requests of each page:");
    for p in &out {
        for (ms, path) in &p.slowest {
            println!("{:<20} {ms:>9.1}  {path}", p.page);
        }
    }
    Ok(out)
}
