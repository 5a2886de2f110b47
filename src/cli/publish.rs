//! `chiso publish`: record periods as revisions, write their files, send them to the portals;
//! and `chiso run` of a publish job.

use super::*;
use chiso::publish::{PublishOptions, PublishReport};

#[derive(Args)]
pub(crate) struct PublishArgs {
    /// Periods: 2026-10 (a month), 2026-Q4 (a quarter), 2026 (a year).
    #[arg(required = true)]
    pub(crate) periods: Vec<String>,
    /// A preview: written under exports/ and kept as a provisional revision, never sent;
    /// the guard's warnings are reported and do not block it.
    #[arg(long)]
    pub(crate) provisional: bool,
    /// Publish final despite the guard's warnings, for this reason (kept in the ledger and
    /// the manifest).
    #[arg(long, value_name = "REASON")]
    pub(crate) accept: Option<String>,
    /// A note kept with the revision.
    #[arg(long)]
    pub(crate) note: Option<String>,
    /// Revise a final period closed to routine revisions (`[publish] revision_policy`), as
    /// the correction of an error, for this reason (kept; reason code `correction`).
    #[arg(long, value_name = "REASON")]
    pub(crate) correction: Option<String>,
    /// Record and write, but do not send to the portals (pending pushes wait for the next
    /// publish).
    #[arg(long)]
    pub(crate) no_push: bool,
    /// Do not rebuild the warehouse afterwards (the revision shows in pub_* tables at the next
    /// build).
    #[arg(long)]
    pub(crate) no_build: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) async fn publish(g: &Globals, a: PublishArgs) -> anyhow::Result<u8> {
    let (project, jobs) = load_all(&g.config)?;
    let periods = a
        .periods
        .iter()
        .map(|p| chiso::publish::parse_period(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opts = PublishOptions {
        provisional: a.provisional,
        accept: a.accept,
        note: a.note,
        // A preview by hand sends nothing at all, not even what is pending.
        push: !a.no_push && !a.provisional,
        correction: a.correction,
    };
    let report = run_publish(g, &project, &jobs, &periods, &opts, !a.no_build).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(if report.pending_pushes() > 0 {
        EXIT_PUSH_PENDING
    } else {
        EXIT_OK
    })
}

/// Publishes, then (if anything new was recorded) builds, so that the warehouse's pub_* tables
/// show it.
pub(crate) async fn run_publish(
    g: &Globals,
    project: &ProjectConfig,
    jobs: &config::Jobs,
    periods: &[String],
    opts: &PublishOptions,
    build_after: bool,
) -> anyhow::Result<PublishReport> {
    let warehouse = warehouse_dir(&g.dir, project);
    let report =
        chiso::publish::publish(&warehouse, &jobs.pulls, &project.publish, periods, opts).await?;
    if build_after && report.periods.iter().any(|p| p.created) {
        build_to_show(project, &warehouse, jobs).await?;
    }
    Ok(report)
}

/// The build after a new revision, so that the warehouse's pub_* tables show it; a build that
/// fails or cannot run is said on stderr (the revision stands, and shows after the next build).
pub(crate) async fn build_to_show(
    project: &ProjectConfig,
    warehouse: &std::path::Path,
    jobs: &config::Jobs,
) -> anyhow::Result<()> {
    let (warehouse, sql_dir, pulls) = (
        warehouse.to_path_buf(),
        project.root.join("sql"),
        jobs.pulls.clone(),
    );
    let opts = chiso::models::build::BuildOptions::for_project(&project.storage_version, jobs);
    let record = tokio::task::spawn_blocking(move || {
        chiso::models::build::build(&warehouse, &sql_dir, &pulls, &opts)
    })
    .await?;
    match record {
        Ok(r) if r.published => {}
        Ok(_) => eprintln!("chiso: the build after publishing failed; the warehouse shows the new revision after the next build"),
        Err(e) => eprintln!("chiso: the build after publishing did not run ({e:#}); the warehouse shows the new revision after the next build"),
    }
    Ok(())
}

pub(crate) fn print_report(r: &PublishReport) {
    for p in &r.periods {
        let what = if p.revision == chiso::publish::revision::PREVIEW {
            "preview (provisional, never sent)".to_string()
        } else {
            format!("revision {} ({})", p.revision, p.status)
        };
        if p.created {
            println!(
                "{} {what} recorded; files in {}",
                p.period,
                p.folder.display()
            );
        } else {
            println!(
                "{} unchanged since its {what}: nothing new recorded",
                p.period
            );
        }
        for w in &p.warnings {
            if w.blocking {
                println!("  warning: {}", w.line());
            } else {
                println!("  note: {} (the units are in the manifest)", w.message);
            }
        }
        if let Some(c) = &p.change_note {
            for line in c.text().lines() {
                println!("  {line}");
            }
        }
    }
    for x in &r.pushes {
        let what = if x.acknowledged {
            format!(
                "acknowledged{} (receipt {})",
                if x.duplicate { " as a duplicate" } else { "" },
                x.receipt.as_deref().unwrap_or("-")
            )
        } else {
            format!(
                "NOT acknowledged, stays pending: {}",
                x.error.as_deref().unwrap_or("")
            )
        };
        println!(
            "push {} {} rev {}: {what} after {} attempt(s)",
            x.target, x.period, x.revision, x.attempts
        );
    }
}

/// `chiso run` of a publish job: the period its rule names today.
pub(crate) async fn run_publish_job(
    g: &Globals,
    project: &ProjectConfig,
    jobs: &config::Jobs,
    job: &config::PublishJobConfig,
) -> anyhow::Result<PublishReport> {
    let today = chiso::time::now_local().date();
    let period = chiso::publish::choose_period(&job.period, today);
    run_publish(
        g,
        project,
        jobs,
        &[period],
        &PublishOptions::for_job(job),
        true,
    )
    .await
}
