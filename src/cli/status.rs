//! `chiso status`: what the commit logs say about each job.

use super::*;

#[derive(Args)]
pub(crate) struct StatusArgs {
    /// Only these jobs.
    pub(crate) jobs: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) async fn status(g: &Globals, args: StatusArgs) -> anyhow::Result<u8> {
    // Outside a project (e.g. after `chiso demo` in an empty folder) the built-in
    // project's jobs are the ones to report on.
    let (project, mut jobs) = chiso::demo::load_all_or_embedded(&g.config)?;
    if !args.jobs.is_empty() {
        jobs.pulls = select(&jobs.pulls, &args.jobs, false)?
            .into_iter()
            .cloned()
            .collect();
    }
    let warehouse = warehouse_dir(&g.dir, &project);
    let report =
        tokio::task::spawn_blocking(move || chiso::status::collect_report(&warehouse, &jobs))
            .await??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", chiso::status::render_report(&report));
    }
    Ok(EXIT_OK)
}
