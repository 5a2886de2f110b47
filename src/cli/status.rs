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
    let (project, jobs) = chiso::demo::load_project_or_embedded(&g.config)?;
    let jobs: Vec<config::JobConfig> = if args.jobs.is_empty() {
        jobs
    } else {
        select(&jobs, &args.jobs, false)?
            .into_iter()
            .cloned()
            .collect()
    };
    let st = chiso::status::collect(&warehouse_dir(&g.dir, &project), &jobs)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        println!("{}", chiso::status::render(&st));
    }
    Ok(EXIT_OK)
}
