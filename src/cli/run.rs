//! `chiso run`: pull jobs now, and the run reports `run` and `demo` print.

use super::*;

#[derive(Args)]
pub(crate) struct RunArgs {
    /// Jobs to run (file names in jobs/ without .toml).
    pub(crate) jobs: Vec<String>,
    /// Run every enabled job.
    #[arg(long, conflicts_with = "jobs")]
    pub(crate) all: bool,
    /// Print the run reports as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn exit_code(reports: &[RunReport]) -> u8 {
    if reports.iter().any(|r| r.outcome == Outcome::Failed) {
        EXIT_FAILED
    } else if reports.iter().any(|r| r.outcome == Outcome::Quarantined) {
        EXIT_QUARANTINED
    } else {
        EXIT_OK
    }
}

pub(crate) fn print_reports(
    reports: &[RunReport],
    served: Option<&std::collections::BTreeMap<String, chiso::sim::server::FeedStats>>,
) {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING);
    let mut header = vec!["JOB", "DATASET", "OUTCOME"];
    if served.is_some() {
        header.push("SERVED");
    }
    header.extend(["RECEIVED", "LANDED", "QUARANTINED"]);
    // Records an earlier run already landed (paged feeds re-read their watermark's records).
    let any_skipped = reports.iter().any(|r| r.totals.rows_skipped > 0);
    if any_skipped {
        header.push("SKIPPED");
    }
    header.extend(["FILES", "MiB", "RETRIES", "SECONDS"]);
    t.set_header(header);
    for r in reports {
        let mut row = vec![
            r.job.clone(),
            format!("lake/{}/{}", r.feed, r.dataset),
            r.outcome.as_str().to_string(),
        ];
        if let Some(s) = served {
            row.push(
                s.get(&r.job)
                    .map_or("-".into(), |s| s.served_records.to_string()),
            );
        }
        row.extend([
            r.totals.rows_in.to_string(),
            r.totals.rows_landed.to_string(),
            r.totals.rows_quarantined.to_string(),
        ]);
        if any_skipped {
            row.push(r.totals.rows_skipped.to_string());
        }
        row.extend([
            r.totals.files.to_string(),
            format!("{:.1}", r.totals.bytes as f64 / 1048576.0),
            r.totals.retries.to_string(),
            format!("{:.2}", r.seconds),
        ]);
        t.add_row(row);
    }
    println!("{t}");
    for r in reports {
        if let Some(e) = &r.error {
            println!("{}: {e}", r.job);
        }
        if let Some(run) = &r.recovered_run {
            println!("{}: recovered interrupted run {run} first", r.job);
        }
    }
}

pub(crate) async fn run(g: &Globals, mut args: RunArgs) -> anyhow::Result<u8> {
    let (project, all) = load_all(&g.config)?;
    // Publish jobs named here run first (by name only: --all runs the pulls).
    let publishes: Vec<config::PublishJobConfig> = all
        .publishes
        .iter()
        .filter(|p| args.jobs.contains(&p.name))
        .cloned()
        .collect();
    args.jobs
        .retain(|n| !publishes.iter().any(|p| &p.name == n));
    let mut failed_publish = false;
    for job in &publishes {
        match self::publish::run_publish_job(g, &project, &all, job).await {
            Ok(report) => {
                self::publish::print_report(&report);
                failed_publish |= report.pending_pushes() > 0;
            }
            Err(e) => {
                eprintln!("chiso: job {}: {e:#}", job.name);
                failed_publish = true;
            }
        }
    }
    if !publishes.is_empty() && args.jobs.is_empty() && !args.all {
        return Ok(if failed_publish { EXIT_FAILED } else { EXIT_OK });
    }
    let jobs = all.pulls.clone();
    let selected = select(&jobs, &args.jobs, args.all)?;
    let ctx = RunContext {
        warehouse: warehouse_dir(&g.dir, &project),
        project_root: project.root.clone(),
        http: chiso::feeds::http::http_client(),
    };
    let selected: Vec<config::JobConfig> = selected.into_iter().cloned().collect();
    config::ensure_urls_set(&selected, &[], false)?;
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for (name, r) in pull::run_many(&ctx, &selected).await {
        match r {
            Ok(rep) => {
                // The run shows in the job's history beside the daemon's fires.
                if let Err(e) = chiso::schedule::history::record_manual(&ctx.warehouse, &rep) {
                    eprintln!("chiso: job {name}: recording the run in its history: {e}");
                }
                reports.push(rep)
            }
            Err(e) => errors.push(format!("job {name}: {e}")),
        }
    }
    reports.sort_by(|a, b| a.job.cmp(&b.job));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        print_reports(&reports, None);
    }
    for e in &errors {
        eprintln!("chiso: {e}");
    }
    Ok(if errors.is_empty() && !failed_publish {
        exit_code(&reports)
    } else {
        EXIT_FAILED
    })
}
