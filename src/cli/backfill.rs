//! `chiso backfill`: re-pull a window of a cursor feed, then build.

use super::*;

#[derive(Args)]
pub(crate) struct BackfillArgs {
    /// The job (a cursor feed).
    pub(crate) job: String,
    /// Re-read everything the feed made visible after this local time (YYYY-MM-DD[ HH:MM[:SS]]).
    #[arg(long, value_parser = parse_local)]
    pub(crate) since: NaiveDateTime,
    /// Stop after the page that passes this version time (default: the feed's end).
    #[arg(long, value_parser = parse_local)]
    pub(crate) until: Option<NaiveDateTime>,
    /// Do not build the warehouse afterwards.
    #[arg(long)]
    pub(crate) no_build: bool,
    /// Print the backfill record as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

fn parse_local(s: &str) -> Result<NaiveDateTime, String> {
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(t);
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight"))
        .map_err(|_| format!("{s:?}: expected a local time like 2026-11-30 or 2026-11-30 08:00"))
}

pub(crate) async fn backfill(g: &Globals, a: BackfillArgs) -> anyhow::Result<u8> {
    let (project, all) = load_all(&g.config)?;
    let build_opts =
        chiso::models::build::BuildOptions::for_project(&project.storage_version, &all);
    let jobs = all.pulls;
    let job = select(&jobs, std::slice::from_ref(&a.job), false)?[0].clone();
    config::ensure_urls_set(std::slice::from_ref(&job), &[], false)?;
    let warehouse = warehouse_dir(&g.dir, &project);
    let who = std::env::var("CHISO_ACTOR")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    let window = chiso::backfill::Window {
        since: a.since,
        until: a.until,
    };
    let record = {
        let (w, j) = (warehouse.clone(), job.clone());
        tokio::task::spawn_blocking(move || chiso::backfill::start(&w, &j, &window, &who)).await??
    };
    let resumed = !record.runs.is_empty();
    eprintln!(
        "Backfill {} of job {} from {} to {}{} (about {} records, asked by {})",
        record.id,
        job.name,
        record.since,
        record.until.as_deref().unwrap_or("the feed's end"),
        if resumed { ", resuming" } else { "" },
        record.expected_rows,
        record.requested_by
    );
    let bar = indicatif::ProgressBar::new(record.expected_rows.max(1));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {wide_bar} {pos}/{len} records  {per_sec}  ETA {eta}",
        )
        .expect("template"),
    );
    let progress = {
        let bar = bar.clone();
        std::sync::Arc::new(move |n: u64| {
            if n > bar.length().unwrap_or(0) {
                bar.set_length(n);
            }
            bar.set_position(n);
        }) as std::sync::Arc<dyn Fn(u64) + Send + Sync>
    };
    let ctx = RunContext {
        warehouse: warehouse.clone(),
        project_root: project.root.clone(),
        http: chiso::feeds::http::http_client(),
    };
    let t0 = std::time::Instant::now();
    let (record, report) = chiso::backfill::run(&ctx, &job, record, Some(progress)).await?;
    bar.finish_and_clear();
    if let Err(e) = chiso::schedule::history::record_manual(&warehouse, &report) {
        eprintln!("chiso: recording the backfill's run in the job's history: {e}");
    }
    let secs = t0.elapsed().as_secs_f64();
    let mut code = exit_code(std::slice::from_ref(&report));
    let mut built = None;
    if record.status == "done" && !a.no_build {
        let sql_dir = project.root.join("sql");
        if sql_dir.is_dir() {
            let (w, j) = (warehouse.clone(), jobs.clone());
            let b = tokio::task::spawn_blocking(move || {
                chiso::models::build::build(&w, &sql_dir, &j, &build_opts)
            })
            .await??;
            if !b.published {
                code = EXIT_FAILED;
            }
            built = Some(chiso::models::build::BuildSummary::of(&b));
        }
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"backfill": record, "run": report, "build": built})
            )?
        );
    } else {
        println!(
            "Backfill {} {}: read {} records and landed {} rows in {:.1}s, {:.0} records/s (staging keeps one row per key and version, so records read again change nothing){}",
            record.id,
            record.status,
            record.rows_read,
            record.rows_landed,
            secs,
            report.totals.rows_in as f64 / secs.max(1e-9),
            report.error.as_deref().map(|e| format!("; {e} (run the same command to resume)")).unwrap_or_default()
        );
        match &built {
            Some(b) if b.published => println!("Built and published in {:.1}s.", b.seconds),
            Some(b) => println!(
                "The build did not publish: {}",
                b.error.as_deref().unwrap_or("")
            ),
            None => {}
        }
    }
    Ok(code)
}
