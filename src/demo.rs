//! `chiso demo`: the main job on the embedded default. Starts the simulator in-process on an
//! ephemeral 127.0.0.1 port, runs every enabled job once into the warehouse folder, and prints
//! what landed per feed next to what the simulator served. No network, no set-up: when run
//! outside a project folder it uses the project files built into the binary.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::{self, ProjectConfig, Secret};
use crate::pull::{self, RunContext, RunReport};
use crate::sim::server::{self, SimState};
use crate::sim::{faults::Faults, SimConfig, World};

/// The project files built into the binary (the repository's own `chiso.toml` and `jobs/`).
pub const EMBEDDED_PROJECT: &str = include_str!("../chiso.toml");
pub const EMBEDDED_JOBS: &[(&str, &str)] = &[
    ("calendar.toml", include_str!("../jobs/calendar.toml")),
    ("catalogue.toml", include_str!("../jobs/catalogue.toml")),
    (
        "dossier_steps.toml",
        include_str!("../jobs/dossier_steps.toml"),
    ),
    ("dossiers.toml", include_str!("../jobs/dossiers.toml")),
    (
        "national_report.toml",
        include_str!("../jobs/national_report.toml"),
    ),
    ("payments.toml", include_str!("../jobs/payments.toml")),
    ("petitions.toml", include_str!("../jobs/petitions.toml")),
    ("ratings.toml", include_str!("../jobs/ratings.toml")),
    ("units.toml", include_str!("../jobs/units.toml")),
];

/// Loads the project at `config_path`, or the embedded one if that file does not exist.
pub fn load_project_or_embedded(
    config_path: &Path,
) -> anyhow::Result<(ProjectConfig, Vec<config::JobConfig>)> {
    if config_path.exists() {
        let project = ProjectConfig::load(config_path)?;
        let jobs = config::load_jobs(&project.jobs_dir, &project)?;
        return Ok((project, jobs));
    }
    embedded_project()
}

/// The project files built into the binary.
pub fn embedded_project() -> anyhow::Result<(ProjectConfig, Vec<config::JobConfig>)> {
    let project =
        ProjectConfig::parse(Path::new("<built-in>/chiso.toml"), EMBEDDED_PROJECT, &|k| {
            std::env::var(k).ok()
        })?;
    let mut jobs = Vec::new();
    let mut errors = Vec::new();
    for (name, text) in EMBEDDED_JOBS {
        match config::parse_job(&PathBuf::from("<built-in>/jobs").join(name), text, &project) {
            Ok(j) => jobs.push(j),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if !errors.is_empty() {
        return Err(config::ConfigErrors(errors).into());
    }
    Ok((project, jobs))
}

/// What `chiso demo` did, per job.
pub struct DemoResult {
    pub reports: Vec<RunReport>,
    pub served: std::collections::BTreeMap<String, server::FeedStats>,
    pub sim_url: String,
    pub dossiers_in_world: usize,
}

/// One line of the demo's ranking.
#[derive(Debug, Clone)]
pub struct RankRow {
    pub period: String,
    pub status: String,
    pub unit_name: String,
    pub scores: [f64; 7],
}

/// The latest month's provincial ranking from the published warehouse, best first.
pub fn latest_ranking(warehouse: &Path, n: usize) -> anyhow::Result<Vec<RankRow>> {
    let conn = duckdb::Connection::open_with_flags(
        crate::models::build::published_path(warehouse),
        duckdb::Config::default().access_mode(duckdb::AccessMode::ReadOnly)?,
    )?;
    conn.execute_batch(crate::duck::SAFE_SETTINGS)?;
    let mut stmt = conn.prepare(
        "SELECT period, status, unit_name, ckmb, tdgq, clgq, tttt, mdsh, mdhl, total
         FROM mart_index_unit_period
         WHERE period_type = 'month' AND unit_level = 2
           AND period = (SELECT max(period) FROM mart_index_unit_period WHERE period_type = 'month')
         ORDER BY total DESC, unit_name
         LIMIT ?",
    )?;
    let rows = stmt
        .query_map([n as i64], |r| {
            Ok(RankRow {
                period: r.get(0)?,
                status: r.get(1)?,
                unit_name: r.get(2)?,
                scores: [
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                ],
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Runs the demo: simulator up, every enabled job once, simulator down.
pub async fn run(
    mut project: ProjectConfig,
    jobs: Vec<config::JobConfig>,
    warehouse: PathBuf,
    sim: SimConfig,
) -> anyhow::Result<DemoResult> {
    let token = uuid::Uuid::new_v4().simple().to_string();
    let world = tokio::task::spawn_blocking(move || World::build(sim))
        .await
        .context("building the simulated world")?;
    let dossiers_in_world = {
        let now = world.config.now;
        world
            .distinct_versions(crate::sim::SimFeed::Dossiers, now)
            .iter()
            .map(|(k, _)| k)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    let handle = server::start(SimState::new(world, Faults::none(), Some(token.clone())), 0)
        .await
        .context("starting the simulator on 127.0.0.1")?;
    project.retarget_sources(&handle.base_url(), &Secret::new(token));
    // Re-resolve each job's source after retargeting.
    let jobs: Vec<config::JobConfig> = jobs
        .into_iter()
        .filter(|j| j.enabled && !matches!(j.protocol, config::Protocol::File(_)))
        .map(|mut j| {
            if let Some(s) = &j.source {
                j.source = project.sources.get(&s.name).cloned();
            }
            j
        })
        .collect();
    let ctx = RunContext {
        warehouse: warehouse.clone(),
        project_root: project.root.clone(),
        http: crate::feeds::http::http_client(),
    };
    let mut set = tokio::task::JoinSet::new();
    for job in jobs {
        let ctx = ctx.clone();
        set.spawn(async move {
            let name = job.name.clone();
            (name, pull::run_job(&ctx, &job).await)
        });
    }
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    while let Some(r) = set.join_next().await {
        match r.context("a job task panicked")? {
            (_, Ok(report)) => reports.push(report),
            (name, Err(e)) => failures.push(format!("{name}: {e}")),
        }
    }
    let served = handle.state.stats();
    let sim_url = handle.base_url();
    handle.stop().await;
    if !failures.is_empty() {
        anyhow::bail!("{}", failures.join("\n"));
    }
    reports.sort_by(|a, b| a.job.cmp(&b.job));
    Ok(DemoResult {
        reports,
        served,
        sim_url,
        dossiers_in_world,
    })
}
