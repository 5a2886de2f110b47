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

pub use crate::config::embedded::{EMBEDDED_JOBS, EMBEDDED_PROJECT};

/// Loads the project at `config_path`, or the embedded one if that file does not exist.
pub fn load_project_or_embedded(
    config_path: &Path,
) -> anyhow::Result<(ProjectConfig, Vec<config::JobConfig>)> {
    load_all_or_embedded(config_path).map(|(p, j)| (p, j.pulls))
}

/// Loads the project at `config_path` with every job kind, or the embedded one if that file
/// does not exist.
pub fn load_all_or_embedded(config_path: &Path) -> anyhow::Result<(ProjectConfig, config::Jobs)> {
    if config_path.exists() {
        let project = ProjectConfig::load(config_path)?;
        let jobs = config::load_all_jobs(&project.jobs_dir, &project)?;
        return Ok((project, jobs));
    }
    embedded_all()
}

/// The project files built into the binary.
pub fn embedded_project() -> anyhow::Result<(ProjectConfig, Vec<config::JobConfig>)> {
    embedded_all().map(|(p, j)| (p, j.pulls))
}

/// The project files built into the binary, every job kind.
pub fn embedded_all() -> anyhow::Result<(ProjectConfig, config::Jobs)> {
    let project =
        ProjectConfig::parse(Path::new("<built-in>/chiso.toml"), EMBEDDED_PROJECT, &|k| {
            std::env::var(k).ok()
        })?;
    let files: Vec<(PathBuf, String)> = EMBEDDED_JOBS
        .iter()
        .map(|(name, text)| {
            (
                PathBuf::from("<built-in>/jobs").join(name),
                text.to_string(),
            )
        })
        .collect();
    let jobs = config::parse_job_files(&files, &project)?;
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
    pub unit_name: String,
    /// CKMB, TDGQ, CLGQ, TTTT, MDSH, MDHL, total.
    pub scores: [f64; 7],
    /// Dossiers received or handled in the period (ON_TIME_HANDLING's denominator).
    pub dossiers: f64,
}

/// A month's provincial ranking, best first.
#[derive(Debug, Clone)]
pub struct Ranking {
    pub period: String,
    pub status: String,
    /// The moment the month was judged at: its end, or the data watermark while it runs.
    pub judged_as_of: String,
    pub rows: Vec<RankRow>,
}

/// Which month `ranking` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Month {
    /// The latest month that has ended by the data watermark (the one leadership discusses).
    LatestComplete,
    /// The month the data watermark is in, judged as of it (provisional).
    Current,
}

/// The provincial ranking of a month from the published warehouse, best first, `None` when
/// there is no such month.
pub fn ranking(warehouse: &Path, month: Month, n: usize) -> anyhow::Result<Option<Ranking>> {
    let conn = duckdb::Connection::open_with_flags(
        crate::models::build::published_path(warehouse),
        duckdb::Config::default().access_mode(duckdb::AccessMode::ReadOnly)?,
    )?;
    conn.execute_batch(crate::duck::SAFE_SETTINGS)?;
    // A month has ended when it was judged at its end, not at the watermark.
    let ended = "judged_as_of >= strptime(period, '%Y-%m') + INTERVAL 1 MONTH";
    let which = match month {
        Month::LatestComplete => ended.to_string(),
        Month::Current => format!("NOT ({ended})"),
    };
    let mut stmt = conn.prepare(&format!(
        "WITH months AS (
             SELECT * FROM mart_index_unit_period
             WHERE period_type = 'month' AND unit_level = 2 AND {which}
         )
         SELECT m.period, m.status, strftime(m.judged_as_of, '%Y-%m-%d %H:%M'), m.unit_name,
                m.ckmb, m.tdgq, m.clgq, m.tttt, m.mdsh, m.mdhl, m.total, coalesce(i.denominator, 0)
         FROM months AS m
         LEFT JOIN mart_index_indicator AS i
             ON i.unit_id = m.unit_id AND i.period = m.period AND i.indicator = 'ON_TIME_HANDLING'
         WHERE m.period = (SELECT max(period) FROM months)
         ORDER BY m.total DESC, m.unit_name
         LIMIT ?"
    ))?;
    let mut head: Option<(String, String, String)> = None;
    let rows = stmt
        .query_map([n as i64], |r| {
            Ok((
                (r.get::<_, String>(0)?, r.get(1)?, r.get(2)?),
                RankRow {
                    unit_name: r.get(3)?,
                    scores: [
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                        r.get(9)?,
                        r.get(10)?,
                    ],
                    dossiers: r.get(11)?,
                },
            ))
        })?
        .map(|x| {
            x.map(|(h, row)| {
                head.get_or_insert(h);
                row
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(head.map(|(period, status, judged_as_of)| Ranking {
        period,
        status,
        judged_as_of,
        rows,
    }))
}

/// Runs the demo: simulator up, every enabled job once, simulator down.
pub async fn run(
    mut project: ProjectConfig,
    jobs: Vec<config::JobConfig>,
    warehouse: PathBuf,
    sim: SimConfig,
) -> anyhow::Result<DemoResult> {
    let token = uuid::Uuid::new_v4().simple().to_string();
    let sim_today = sim.now.date();
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
            at_simulated_day(&mut j, sim_today);
            j
        })
        .collect();
    let ctx = RunContext {
        warehouse: warehouse.clone(),
        project_root: project.root.clone(),
        http: crate::feeds::http::http_client(),
    };
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for (name, r) in pull::run_many(&ctx, &jobs).await {
        match r {
            Ok(report) => reports.push(report),
            Err(e) => failures.push(format!("{name}: {e}")),
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

/// How `chiso demo --serve` runs the daemon.
pub struct ServeDemo {
    pub warehouse: PathBuf,
    pub sim: SimConfig,
    pub http: Option<std::net::SocketAddr>,
    pub grace: std::time::Duration,
    /// Seconds between pulls of the feeds that change (cursor and paged feeds); the snapshot
    /// feeds are pulled every six times that.
    pub pull_every: u32,
}

/// `chiso demo --serve`: the simulator in-process with its clock running, and the daemon on
/// it with second-level schedules, until `shutdown`. The simulator's URL is returned through
/// `started` once it listens.
pub async fn serve(
    mut project: ProjectConfig,
    mut jobs: config::Jobs,
    demo: ServeDemo,
    shutdown: impl std::future::Future<Output = ()>,
    notices: tokio::sync::mpsc::UnboundedSender<crate::serve::Notice>,
) -> anyhow::Result<(crate::serve::ServeSummary, String)> {
    let token = uuid::Uuid::new_v4().simple().to_string();
    let sim = demo.sim.clone();
    let world = tokio::task::spawn_blocking(move || World::build(sim))
        .await
        .context("building the simulated world")?;
    let handle = server::start(SimState::new(world, Faults::none(), Some(token.clone())), 0)
        .await
        .context("starting the simulator on 127.0.0.1")?;
    project.retarget_sources(&handle.base_url(), &Secret::new(token));
    let every = demo.pull_every.clamp(1, 59);
    let snapshot_every = (every * 6).min(59);
    let sim_today = demo.sim.now.date();
    // Reconcile the simulator's previous month every minute.
    for r in &mut jobs.reconciles {
        r.periods = vec![config::PeriodChoice::Fixed(
            crate::time::Period::holding("month", sim_today)
                .expect("a month")
                .previous()
                .label(),
        )];
        r.schedule = config::CronExpr("30 * * * * *".into());
    }
    jobs.pulls = jobs
        .pulls
        .into_iter()
        .filter(|j| j.enabled && !matches!(j.protocol, config::Protocol::File(_)))
        .map(|mut j| {
            if let Some(s) = &j.source {
                j.source = project.sources.get(&s.name).cloned();
            }
            at_simulated_day(&mut j, sim_today);
            let secs = match j.protocol {
                config::Protocol::Snapshot(_) | config::Protocol::Evaluation(_) => snapshot_every,
                _ => every,
            };
            j.schedule = config::CronExpr(format!("*/{secs} * * * * *"));
            j
        })
        .collect();
    // The build follows the pulls closely; no nightly build in a demo.
    let quiet = std::time::Duration::from_secs(2);
    match jobs.builds.iter_mut().find(|b| b.enabled) {
        Some(b) => {
            b.schedule = None;
            b.after_pulls = true;
            b.quiet_period = quiet;
            b.max_delay = std::time::Duration::from_secs(u64::from(every) * 3);
        }
        None => jobs.builds.push(config::BuildJobConfig {
            name: "build".into(),
            file: PathBuf::from("<built-in>/jobs/build.toml"),
            description: "Build the warehouse".into(),
            enabled: true,
            after_pulls: true,
            quiet_period: quiet,
            max_delay: std::time::Duration::from_secs(u64::from(every) * 3),
            schedule: None,
            select: Vec::new(),
            threads: 0,
            memory_limit: None,
            freshness_target: None,
            storage_version: project.storage_version.clone(),
            timeout: None,
        }),
    }
    if !project.root.join("sql").is_dir() {
        // Outside a project (the built-in one has no models): pulls only.
        jobs.builds.clear();
    }
    let sim_url = handle.base_url();
    let opts = crate::serve::ServeOptions {
        warehouse: demo.warehouse,
        project_root: project.root.clone(),
        sql_dir: project.root.join("sql"),
        tz: project.timezone,
        jobs,
        http: demo.http,
        grace: demo.grace,
        retention: std::time::Duration::from_secs(90 * 86_400),
        http_client: crate::feeds::http::http_client(),
        publish: project.publish.clone(),
        http_token: std::env::var("CHISO_HTTP_TOKEN").ok(),
        http_public: false,
        job_files: None,
    };
    let result = crate::serve::serve(opts, shutdown, Some(notices)).await;
    handle.stop().await;
    Ok((result?, sim_url))
}

/// The portal's evaluation is asked for the periods of the simulator's day (its plan follows
/// the wall clock, and `--now` may set the simulator's elsewhere).
fn at_simulated_day(job: &mut config::JobConfig, today: chrono::NaiveDate) {
    if let config::Protocol::Evaluation(p) = &mut job.protocol {
        if p.periods.is_none() {
            p.periods = Some(
                crate::feeds::evaluation::plan(p, today)
                    .iter()
                    .map(|x| x.label())
                    .collect(),
            );
        }
    }
}
