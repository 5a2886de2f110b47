//! `chiso build` and `chiso test`: the warehouse and its data tests.

use super::*;

#[derive(Args)]
pub(crate) struct BuildArgs {
    /// dbt-style selectors: model, model+ (and downstream), +model (and upstream), tag:name.
    #[arg(long, num_args = 1..)]
    pub(crate) select: Vec<String>,
    /// Rebuild incremental models from scratch.
    #[arg(long)]
    pub(crate) full_refresh: bool,
    /// DuckDB threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub(crate) threads: usize,
    /// DuckDB memory limit for the build, e.g. 3GB (it spills to disk beyond it); default
    /// DuckDB's (80% of RAM).
    #[arg(long)]
    pub(crate) memory_limit: Option<String>,
    /// Interrupt the build if it runs longer than this (e.g. 30m); it then fails and the
    /// published warehouse stays as it was.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) timeout: Option<std::time::Duration>,
    /// Print the build record as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct TestArgs {
    /// Only tests reading these models (selectors as for build).
    #[arg(long, num_args = 1..)]
    pub(crate) select: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn print_build(r: &chiso::models::build::BuildRecord) {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING);
    t.set_header(vec!["MODEL", "MATERIALIZED", "STATUS", "ROWS", "SECONDS"]);
    for m in &r.models {
        t.add_row(vec![
            m.model.clone(),
            m.materialized.clone(),
            m.status.to_string(),
            m.rows.map_or(String::new(), |n| n.to_string()),
            format!("{:.2}", m.seconds),
        ]);
    }
    println!("{t}");
    for m in r.models.iter().filter(|m| m.status == ModelStatus::Error) {
        println!("error in {}: {}", m.model, m.error.as_deref().unwrap_or(""));
    }
    for x in r.tests.iter().filter(|x| x.status != TestStatus::Pass) {
        println!(
            "test {} {}: {} violating rows{}",
            x.test,
            x.status,
            x.failures,
            x.error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
        for row in &x.sample {
            println!("    {row}");
        }
    }
    if !r.sources_without_data.is_empty() {
        println!(
            "No data yet (read as empty; their indicators follow the zero-denominator rules): {}",
            r.sources_without_data.join(", ")
        );
    }
    let passed = r
        .tests
        .iter()
        .filter(|x| x.status == TestStatus::Pass)
        .count();
    let unchanged = r
        .models
        .iter()
        .filter(|m| m.status == ModelStatus::Unchanged)
        .count();
    println!(
        "{} models{}, {} of {} data tests passed, {:.1}s",
        r.models.len(),
        if unchanged > 0 {
            format!(" ({unchanged} unchanged: nothing they read changed)")
        } else {
            String::new()
        },
        passed,
        r.tests.len(),
        r.seconds
    );
    if r.published {
        println!("Published {}", r.published_path.display());
    } else {
        println!(
            "NOT published: {} is unchanged; the failed build is kept as chiso.failed.duckdb",
            r.published_path.display()
        );
    }
}

pub(crate) async fn build(g: &Globals, a: BuildArgs) -> anyhow::Result<u8> {
    let (project, all) = chiso::demo::load_all_or_embedded(&g.config)?;
    let warehouse = warehouse_dir(&g.dir, &project);
    let sql_dir = project.root.join("sql");
    if !sql_dir.is_dir() {
        anyhow::bail!(
            "{} not found: run chiso build from the project folder",
            sql_dir.display()
        );
    }
    // jobs/build.toml's settings, each overridden by its flag when given.
    let mut opts = chiso::models::build::BuildOptions::for_project(&project.storage_version, &all);
    if !a.select.is_empty() {
        opts.select = a.select;
    }
    opts.full_refresh = a.full_refresh;
    if a.threads > 0 {
        opts.threads = a.threads;
    }
    if a.memory_limit.is_some() {
        opts.memory_limit = a.memory_limit;
    }
    if a.timeout.is_some() {
        opts.timeout = a.timeout;
    }
    let jobs = all.pulls;
    let record = tokio::task::spawn_blocking(move || {
        chiso::models::build::build(&warehouse, &sql_dir, &jobs, &opts)
    })
    .await??;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        print_build(&record);
    }
    Ok(if record.published {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}

pub(crate) async fn test(g: &Globals, a: TestArgs) -> anyhow::Result<u8> {
    let (project, jobs) = chiso::demo::load_project_or_embedded(&g.config)?;
    let warehouse = warehouse_dir(&g.dir, &project);
    let sql_dir = project.root.join("sql");
    let tests = tokio::task::spawn_blocking(move || {
        chiso::models::build::test_published(&warehouse, &sql_dir, &jobs, &a.select)
    })
    .await??;
    let failed = tests.iter().filter(|t| t.status.blocks()).count();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&tests)?);
    } else {
        for t in tests.iter().filter(|t| t.status != TestStatus::Pass) {
            println!(
                "{:<5} {} ({} rows){}",
                t.status,
                t.test,
                t.failures,
                t.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
        println!("{} passed, {} failed", tests.len() - failed, failed);
    }
    Ok(if failed == 0 { EXIT_OK } else { EXIT_FAILED })
}
