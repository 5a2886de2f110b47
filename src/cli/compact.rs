//! `chiso compact`: rewrite small lake files (`lake::compact`).

use super::*;

#[derive(Args)]
pub(crate) struct CompactArgs {
    /// Jobs whose datasets to compact (file names in jobs/ without .toml).
    pub(crate) jobs: Vec<String>,
    /// Every job's dataset.
    #[arg(long, conflicts_with = "jobs")]
    pub(crate) all: bool,
    /// Only files committed at least this long ago (e.g. 1d, 6h, 30m).
    #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
    pub(crate) older_than: std::time::Duration,
    /// Leave partitions with fewer files than this alone.
    #[arg(long, default_value_t = 10)]
    pub(crate) min_files: usize,
    /// Say what would be done and change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn print_compaction(reports: &[chiso::lake::compact::CompactReport], dry_run: bool) {
    let verb = if dry_run {
        "would compact"
    } else {
        "compacted"
    };
    for r in reports {
        if r.partitions.is_empty() {
            println!("{:<16} {:<24} nothing to compact", r.job, r.dataset);
        }
        for p in &r.partitions {
            println!(
                "{:<16} {:<24} {verb} {:<22} {:>6} files -> 1, {:>10} rows, {} -> {} bytes",
                r.job, r.dataset, p.partition, p.files, p.rows, p.bytes_before, p.bytes_after
            );
        }
        if r.deleted_retired + r.kept_retired > 0 {
            println!(
                "{:<16} {:<24} retired files: {} deleted, {} kept until a build publishes without them",
                r.job, r.dataset, r.deleted_retired, r.kept_retired
            );
        }
    }
}

pub(crate) async fn compact(g: &Globals, args: CompactArgs) -> anyhow::Result<u8> {
    let (project, jobs) = load(&g.config)?;
    let selected = select(&jobs, &args.jobs, args.all)?;
    let warehouse = warehouse_dir(&g.dir, &project);
    let opts = chiso::lake::compact::CompactOptions {
        older_than: chrono::Duration::from_std(args.older_than)?,
        min_files: args.min_files,
        published_compactions: chiso::models::build::published_compactions(&warehouse)?,
        dry_run: args.dry_run,
    };
    let mut reports = Vec::new();
    for job in selected {
        let (w, j, o) = (warehouse.clone(), job.clone(), opts.clone());
        let r = tokio::task::spawn_blocking(move || {
            chiso::lake::compact::compact_job(&w, &j.name, &j.dataset, &o)
        })
        .await?
        .with_context(|| format!("compacting job {}", job.name))?;
        reports.push(r);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        print_compaction(&reports, args.dry_run);
    }
    Ok(EXIT_OK)
}
