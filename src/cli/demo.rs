//! `chiso demo`: the main job on the embedded default.

use super::*;

#[derive(Args)]
pub(crate) struct DemoArgs {
    #[command(flatten)]
    pub(crate) world: WorldArgs,
    /// Keep going: the daemon on the simulator, whose clock runs so dossiers keep changing;
    /// pulls every few seconds, a build after each burst, a line per build; until SIGTERM or
    /// Ctrl-C.
    #[arg(long)]
    pub(crate) serve: bool,
    /// With --serve: answer /health, /status and /metrics here.
    #[arg(long, requires = "serve")]
    pub(crate) http: Option<std::net::SocketAddr>,
    /// With --serve: simulated seconds per real second.
    #[arg(long, default_value_t = 300.0, requires = "serve")]
    pub(crate) speed: f64,
    /// With --serve: seconds between pulls of the changing feeds.
    #[arg(long, default_value_t = 5, requires = "serve")]
    pub(crate) every: u32,
    /// With --serve: how long running runs may finish after SIGTERM.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, requires = "serve")]
    pub(crate) grace: std::time::Duration,
}

pub(crate) fn print_ranking(r: &chiso::demo::Ranking, month: chiso::demo::Month) {
    match month {
        chiso::demo::Month::LatestComplete => println!(
            "\nService-quality index, {} ({}), provinces, top {}:",
            r.period,
            r.status,
            r.rows.len()
        ),
        chiso::demo::Month::Current => println!(
            "\nThe month in progress, {} (provisional, judged as of {}: open dossiers due later count as on time), top {}:",
            r.period,
            r.judged_as_of,
            r.rows.len()
        ),
    }
    println!(
        "{:>3}  {:<28} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7} {:>8}",
        "#", "UNIT", "CKMB", "TDGQ", "CLGQ", "TTTT", "MDSH", "MDHL", "TOTAL", "DOSSIERS"
    );
    for (i, row) in r.rows.iter().enumerate() {
        let s = row.scores;
        println!(
            "{:>3}  {:<28} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>7.2} {:>8}",
            i + 1,
            row.unit_name,
            s[0],
            s[1],
            s[2],
            s[3],
            s[4],
            s[5],
            s[6],
            row.dossiers
        );
    }
}

pub(crate) async fn demo(g: &Globals, a: DemoArgs) -> anyhow::Result<u8> {
    if a.serve {
        return demo_serve(g, a).await;
    }
    let (project, all) = chiso::demo::load_all_or_embedded(&g.config)?;
    let build_opts =
        chiso::models::build::BuildOptions::for_project(&project.storage_version, &all);
    let jobs = all.pulls.clone();
    let warehouse = warehouse_dir(&g.dir, &project);
    let sql_dir = project.root.join("sql");
    let build_jobs = jobs.clone();
    let cfg = a.world.config(0.0)?;
    println!(
        "chiso demo: simulator (seed {}, {} dossiers per working day, {} to {}) on 127.0.0.1, warehouse {}",
        cfg.seed,
        cfg.per_day,
        cfg.from,
        cfg.now.format("%Y-%m-%d %H:%M"),
        warehouse.display()
    );
    let t0 = std::time::Instant::now();
    let result = chiso::demo::run(project.clone(), jobs, warehouse.clone(), cfg).await?;
    println!(
        "Pulled every feed once from {} ({} dossiers in the simulated portal) in {:.1}s:\n",
        result.sim_url,
        result.dossiers_in_world,
        t0.elapsed().as_secs_f64()
    );
    print_reports(&result.reports, Some(&result.served));
    let mismatched: Vec<&RunReport> = result
        .reports
        .iter()
        .filter(|r| {
            result.served.get(&r.job).is_some_and(|s| {
                s.served_records
                    != r.totals.rows_landed + r.totals.rows_quarantined + r.totals.rows_skipped
            })
        })
        .collect();
    let skipped: u64 = result.reports.iter().map(|r| r.totals.rows_skipped).sum();
    if mismatched.is_empty() && skipped == 0 {
        println!("\nEvery record served was landed or quarantined (served = landed + quarantined for every feed).");
    } else if mismatched.is_empty() {
        println!("\nEvery record served was landed, quarantined, or skipped as already landed (served = landed + quarantined + skipped for every feed; a paged feed asks again from its watermark and skips the records it already has).");
    } else {
        for r in &mismatched {
            println!(
                "\nMISMATCH {}: served {:?}, landed {} + quarantined {} + skipped {}",
                r.job,
                result.served.get(&r.job),
                r.totals.rows_landed,
                r.totals.rows_quarantined,
                r.totals.rows_skipped
            );
        }
    }
    // Build the warehouse and show the latest month's ranking, when the project has models.
    let mut build_failed = false;
    if sql_dir.is_dir() && mismatched.is_empty() {
        let (w, s, j) = (warehouse.clone(), sql_dir.clone(), build_jobs);
        let record = tokio::task::spawn_blocking(move || {
            chiso::models::build::build(&w, &s, &j, &build_opts)
        })
        .await??;
        let passed = record
            .tests
            .iter()
            .filter(|t| t.status == TestStatus::Pass)
            .count();
        println!(
            "\nBuilt the warehouse: {} models, {} of {} data tests passed, {:.1}s{}",
            record.models.len(),
            passed,
            record.tests.len(),
            record.seconds,
            if record.published {
                format!(" -> {}", record.published_path.display())
            } else {
                " (NOT published)".into()
            }
        );
        build_failed = !record.published;
        if record.published {
            // The month leadership discusses, then the one in progress, judged as of
            // the data (thin early in a month: the dossier counts show why).
            let mut latest = None;
            for month in [
                chiso::demo::Month::LatestComplete,
                chiso::demo::Month::Current,
            ] {
                if let Some(r) = chiso::demo::ranking(&warehouse, month, 10)? {
                    print_ranking(&r, month);
                    if month == chiso::demo::Month::LatestComplete {
                        latest = Some(r.period.clone());
                    }
                }
            }
            // The same month as the portal publishes it (Decision 766), beside chiso's.
            if let Some(period) = &latest {
                reconciliation(&warehouse, period);
            }
            // The month leadership discusses, as a publication preview: the files an office
            // sends and the report, never sent anywhere (`chiso publish` sends final ones).
            if let Some(period) = latest {
                preview(&project, &warehouse, &all, &period).await?;
            }
        } else {
            for m in record
                .models
                .iter()
                .filter(|m| m.status == ModelStatus::Error)
            {
                println!("error in {}: {}", m.model, m.error.as_deref().unwrap_or(""));
            }
        }
    }
    println!(
        "\nNext: chiso status --dir {d}   |   duckdb -c \"SELECT TrangThaiHoSo, count(*) FROM read_parquet('{d}/lake/portal/dossiers/*/*.parquet', hive_partitioning=true) GROUP BY 1 ORDER BY 1\"",
        d = warehouse.display()
    );
    Ok(if !mismatched.is_empty() || build_failed {
        EXIT_FAILED
    } else {
        exit_code(&result.reports)
    })
}

/// `chiso demo --serve`: a line per build while the daemon runs on the simulator.
async fn demo_serve(g: &Globals, a: DemoArgs) -> anyhow::Result<u8> {
    use super::serve::{exit_now, print_summary, stop_signal};
    use chiso::serve::Notice;
    let (project, jobs) = chiso::demo::load_all_or_embedded(&g.config)?;
    let warehouse = warehouse_dir(&g.dir, &project);
    let cfg = a.world.config(a.speed)?;
    println!(
        "chiso demo --serve: simulator (seed {}, {} dossiers per working day, clock from {} at {}x) and the daemon on warehouse {}; Ctrl-C stops.",
        cfg.seed,
        cfg.per_day,
        cfg.now.format("%Y-%m-%d %H:%M"),
        a.speed,
        warehouse.display()
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let demo = chiso::demo::ServeDemo {
        warehouse: warehouse.clone(),
        sim: cfg,
        http: a.http,
        grace: a.grace,
        pull_every: a.every,
    };
    let printer = tokio::spawn(async move {
        let (mut rows, mut runs, mut cycle) = (0u64, 0usize, 0usize);
        while let Some(n) = rx.recv().await {
            match n {
                Notice::Started { http } => {
                    println!(
                        "Daemon started{}; pulls every {}s, a build after each burst of pulls.",
                        http.map(|h| format!(
                            " (console http://{h}/console/; /status, /metrics, /health)"
                        ))
                        .unwrap_or_default(),
                        a.every
                    );
                }
                Notice::PullFinished {
                    job,
                    outcome,
                    rows_landed,
                    ..
                } => {
                    runs += 1;
                    rows += rows_landed;
                    if outcome != "ok" && outcome != "quarantined" {
                        println!("  pull {job}: {outcome}");
                    }
                }
                Notice::BuildFinished {
                    outcome,
                    seconds,
                    build: summary,
                    error,
                    ..
                } => {
                    cycle += 1;
                    let when = chiso::time::now_local().format("%H:%M:%S");
                    if outcome != "ok" {
                        println!("{when} cycle {cycle}: pulled {rows} rows in {runs} runs; build {outcome}: {}", error.unwrap_or_default());
                    } else {
                        let age = summary
                            .as_ref()
                            .and_then(|b| chiso::time::parse_rfc3339_local(&b.started_at))
                            .map(|t| {
                                (chiso::time::now_local() - t).num_milliseconds() as f64 / 1000.0
                            })
                            .unwrap_or(f64::NAN);
                        let top = chiso::demo::ranking(&warehouse, chiso::demo::Month::Current, 1)
                            .ok()
                            .flatten()
                            .and_then(|r| {
                                r.rows.first().map(|u| {
                                    format!(
                                        "; {} provisional, first {} {:.2}",
                                        r.period, u.unit_name, u.scores[6]
                                    )
                                })
                            })
                            .unwrap_or_default();
                        println!("{when} cycle {cycle}: pulled {rows} rows in {runs} runs, built in {seconds:.1}s, index age {age:.1}s{top}");
                    }
                    rows = 0;
                    runs = 0;
                }
                Notice::Stopping => {
                    println!("Stopping: no new fires; running runs get the grace period.")
                }
            }
        }
    });
    let (summary, sim_url) = chiso::demo::serve(project, jobs, demo, stop_signal(), tx).await?;
    let _ = printer.await;
    println!("Simulator was {sim_url}.");
    print_summary(&summary);
    exit_now(EXIT_OK)
}

/// Publishes `period` as a provisional preview, builds so that the warehouse's publication
/// views show it, and says where its report is.
async fn preview(
    project: &config::ProjectConfig,
    warehouse: &Path,
    jobs: &config::Jobs,
    period: &str,
) -> anyhow::Result<()> {
    let opts = chiso::publish::PublishOptions {
        provisional: true,
        push: false,
        ..Default::default()
    };
    match chiso::publish::publish(
        warehouse,
        &jobs.pulls,
        &project.publish,
        &[period.to_string()],
        &opts,
    )
    .await
    {
        Ok(r) => {
            let p = &r.periods[0];
            println!(
                "\nA publication preview of {} ({}never sent; finals are numbered apart): {}",
                p.period,
                if p.created { "" } else { "unchanged, " },
                p.folder.join("report.html").display()
            );
            if p.created {
                super::publish::build_to_show(project, warehouse, jobs).await?;
            }
        }
        Err(e) => println!("\nNo publication preview of {period}: {e:#}"),
    }
    Ok(())
}

/// The reconciliation summary of `period` with the simulated portal's published evaluation.
fn reconciliation(warehouse: &std::path::Path, period: &str) {
    let report = chiso::reconcile::open(warehouse)
        .and_then(|c| chiso::reconcile::report(&c, period, chiso::reconcile::Level::Indicator));
    match report {
        Ok(r) => {
            println!("\n{}", chiso::reconcile::summary(&r));
            if r.beyond() > 0 {
                println!(
                    "  (the portal computes at 02:00 each day; records that reached it since are in chiso's figures, not yet in its own)\n  \
                     The differences, largest effect first, with the records behind each: chiso reconcile {period} --dir {}",
                    warehouse.display()
                );
            }
        }
        Err(e) => println!("\nNo reconciliation of {period} with the portal: {e:#}"),
    }
}
