//! Helpers shared by the integration tests: an in-process simulator on 127.0.0.1 and the
//! repository's own project files aimed at it.
#![allow(dead_code)]

pub mod browser;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chiso::config::{self, JobConfig, ProjectConfig, Secret};
use chiso::sim::faults::Faults;
use chiso::sim::server::{self, SimHandle, SimState};
use chiso::sim::{SimConfig, SimFeed, World};

pub const TOKEN: &str = "test-token-not-a-secret";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A small frozen world: the same records however long a test takes.
pub fn small_world(seed: u64, per_day: f64) -> SimConfig {
    SimConfig {
        seed,
        per_day,
        petition_ratio: 0.02,
        from: chrono::NaiveDate::from_ymd_opt(2026, 6, 1).unwrap(),
        now: chrono::NaiveDate::from_ymd_opt(2026, 9, 10)
            .unwrap()
            .and_hms_opt(10, 0, 0)
            .unwrap(),
        speed: 0.0,
        horizon_days: 14,
    }
}

pub async fn start_sim(cfg: SimConfig, faults: Faults) -> SimHandle {
    let world = tokio::task::spawn_blocking(move || World::build(cfg))
        .await
        .unwrap();
    server::start(SimState::new(world, faults, Some(TOKEN.into())), 0)
        .await
        .unwrap()
}

/// The repository's project, every source pointed at `base_url`.
pub fn project_at(base_url: &str) -> ProjectConfig {
    let mut project = ProjectConfig::parse(
        &repo().join("chiso.toml"),
        &std::fs::read_to_string(repo().join("chiso.toml")).unwrap(),
        &|_| None,
    )
    .unwrap();
    project.retarget_sources(base_url, &Secret::new(TOKEN));
    project
}

/// The repository's project and jobs, every source pointed at `base_url`.
pub fn project_for(base_url: &str) -> (ProjectConfig, Vec<JobConfig>) {
    let project = project_at(base_url);
    let jobs = config::load_jobs(&repo().join("jobs"), &project).unwrap();
    (project, jobs)
}

/// DuckDB rows of a query as strings.
pub fn query(sql: &str) -> Vec<Vec<String>> {
    let conn = chiso::duck::in_memory(2).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let mut rows = stmt.query([]).unwrap();
    let mut out = Vec::new();
    while let Some(r) = rows.next().unwrap() {
        let n = r.as_ref().column_count();
        out.push(
            (0..n)
                .map(|i| r.get::<_, Option<String>>(i).unwrap().unwrap_or_default())
                .collect(),
        );
    }
    out
}

/// SQL expression for a feed's key as the simulator writes it (`|`-joined) and its version.
pub fn key_version_sql(feed: SimFeed) -> (&'static str, &'static str) {
    feed.key_version_sql()
}

pub fn lake_glob(warehouse: &Path, job: &JobConfig) -> String {
    chiso::lake::dataset_glob(warehouse, &job.dataset)
}

/// Distinct (key, version) pairs landed for `feed`, i.e. what staging's dedup keeps.
pub fn landed_versions(
    warehouse: &Path,
    job: &JobConfig,
    feed: SimFeed,
) -> BTreeSet<(String, String)> {
    let (k, v) = key_version_sql(feed);
    let glob = lake_glob(warehouse, job);
    query(&format!(
        "SELECT DISTINCT {k}, {v} FROM read_parquet('{glob}', hive_partitioning = true)"
    ))
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone()))
    .collect()
}

/// How many rows of each (key, version) the lake holds for `feed` (duplicates counted), as
/// `key|version|count` lines in order: a doubled row shows where a set would hide it.
pub fn landed_counts(warehouse: &Path, job: &JobConfig, feed: SimFeed) -> Vec<String> {
    let (k, v) = key_version_sql(feed);
    let glob = lake_glob(warehouse, job);
    query(&format!(
        "SELECT key || '|' || version || '|' || n FROM (SELECT {k} AS key, {v} AS version, count(*) AS n FROM read_parquet('{glob}', hive_partitioning = true) GROUP BY ALL) ORDER BY 1"
    ))
    .into_iter()
    .map(|r| r[0].clone())
    .collect()
}

/// Rows in the lake for a job (all files, duplicates included).
pub fn lake_rows(warehouse: &Path, job: &JobConfig) -> u64 {
    let glob = lake_glob(warehouse, job);
    if glob::glob(&glob).unwrap().next().is_none() {
        return 0;
    }
    query(&format!(
        "SELECT count(*)::VARCHAR FROM read_parquet('{glob}', hive_partitioning = true)"
    ))[0][0]
        .parse()
        .unwrap()
}

pub fn sim_feed(job: &str) -> Option<SimFeed> {
    SimFeed::ALL.into_iter().find(|f| f.name() == job)
}

/// Every (unit, period, indicator) where the drill-down views do not list exactly the records
/// counted in `mart_index_indicator` (DOSSIER_SYNC's denominator may be larger: the national
/// report's count has no records). Empty when the warehouse explains every count.
pub const DRILL_MISMATCHES: &str = "
    with drill as (
        select unit_id, period, indicator, count(*) as d, count(*) filter (where in_numerator) as n
        from drill_indicator_dossiers group by all
        union all
        select unit_id, period, indicator, count(*), count(*) filter (where in_numerator)
        from drill_indicator_petitions group by all
    ),
    drilled as (select distinct indicator from drill),
    marts as (
        select * from mart_index_indicator where indicator in (select indicator from drilled)
    )
    select m.unit_id || ' ' || m.period || ' ' || m.indicator || ': counted '
           || m.numerator || '/' || m.denominator || ', listed '
           || coalesce(dr.n, 0) || '/' || coalesce(dr.d, 0)
    from marts as m
    left join drill as dr using (unit_id, period, indicator)
    where m.numerator <> coalesce(dr.n, 0)
       or (m.indicator <> 'DOSSIER_SYNC' and m.denominator <> coalesce(dr.d, 0))
       or (m.indicator = 'DOSSIER_SYNC' and m.denominator < coalesce(dr.d, 0))
    union all
    select dr.unit_id || ' ' || dr.period || ' ' || dr.indicator || ': listed but not counted'
    from drill as dr
    semi join (select distinct unit_id, period from mart_index_indicator) as up using (unit_id, period)
    anti join marts as m using (unit_id, period, indicator)
    order by 1
";

/// `DRILL_MISMATCHES` run on a warehouse connection.
pub fn drill_mismatches(conn: &duckdb::Connection) -> Vec<String> {
    let mut stmt = conn.prepare(DRILL_MISMATCHES).unwrap();
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows
}

/// The published warehouse of `warehouse`, read-only.
pub fn open(warehouse: &Path) -> duckdb::Connection {
    duckdb::Connection::open_with_flags(
        chiso::models::build::published_path(warehouse),
        duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .unwrap(),
    )
    .unwrap()
}

/// Rows of a query, each as its columns cast to text and joined by `|` (NULL as `∅`).
pub fn rows(conn: &duckdb::Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn
        .prepare(&format!("SELECT CAST(COLUMNS(*) AS VARCHAR) FROM ({sql})"))
        .unwrap();
    let mut out = Vec::new();
    let mut q = stmt.query([]).unwrap();
    while let Some(r) = q.next().unwrap() {
        let cols = r.as_ref().column_count();
        let line: Vec<String> = (0..cols)
            .map(|i| {
                r.get::<_, Option<String>>(i)
                    .unwrap()
                    .unwrap_or_else(|| "∅".into())
            })
            .collect();
        out.push(line.join("|"));
    }
    out
}

/// The rows of `sql` only in `a` and only in `b` (the first five of each), told with the two
/// sides' names; `None` when they hold the same rows. `a` must return some.
pub fn row_differences(
    a: &duckdb::Connection,
    b: &duckdb::Connection,
    sql: &str,
    (side_a, side_b): (&str, &str),
) -> Option<String> {
    let (x, y) = (rows(a, sql), rows(b, sql));
    assert!(!x.is_empty(), "{sql}: no rows in the {side_a} warehouse");
    let only_a: Vec<_> = x.iter().filter(|r| !y.contains(r)).take(5).collect();
    let only_b: Vec<_> = y.iter().filter(|r| !x.contains(r)).take(5).collect();
    (!(only_a.is_empty() && only_b.is_empty()))
        .then(|| format!("only {side_a}: {only_a:#?}\nonly {side_b}: {only_b:#?}"))
}

/// Copies the folder `from` to `to` (created), recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A build of the models in `sql` (the repository's, or a changed copy), off the async
/// workers: its record, published or not.
pub async fn build_record(
    warehouse: &Path,
    sql: &Path,
    jobs: &[JobConfig],
    full_refresh: bool,
) -> chiso::models::build::BuildRecord {
    let (w, sql, j) = (warehouse.to_path_buf(), sql.to_path_buf(), jobs.to_vec());
    tokio::task::spawn_blocking(move || {
        chiso::models::build::build(
            &w,
            &sql,
            &j,
            &chiso::models::build::BuildOptions {
                full_refresh,
                ..Default::default()
            },
        )
    })
    .await
    .unwrap()
    .unwrap()
}

/// Headless, with no connection of its own (no background networking, a proxy that goes
/// nowhere), so that a page that needed the network would show it.
pub const CHROMIUM_FLAGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--proxy-server=127.0.0.1:9",
    "--hide-scrollbars",
];

/// Debian's Chromium, or `None` when it is not installed (then `what` is skipped, with a note),
/// unless `CHISO_REQUIRE_CHROMIUM` is set (CI sets it), which makes that a failure.
pub fn chromium(what: &str) -> Option<&'static str> {
    let bin = ["chromium", "chromium-browser"].into_iter().find(|b| {
        std::process::Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if bin.is_none() {
        assert!(
            std::env::var_os("CHISO_REQUIRE_CHROMIUM").is_none(),
            "CHISO_REQUIRE_CHROMIUM is set but chromium is not installed"
        );
        eprintln!("note: chromium not installed; {what} are skipped (apt-get install chromium)");
    }
    bin
}

/// What headless Chromium made of a page: the DOM after load and a screenshot.
pub struct Rendered {
    pub dom: String,
    pub png: Vec<u8>,
}

/// Renders a local HTML file in Debian's Chromium, headless and kept off the network (the
/// flags that stop its background connections, and a proxy that goes nowhere, so a page that
/// needed the network would show it). `None` when Chromium is not installed, unless
/// `CHISO_REQUIRE_CHROMIUM` is set (CI sets it), which makes that a failure.
pub fn chromium_render(html: &Path) -> Option<Rendered> {
    let bin = chromium("the rendered-page checks")?;
    let profile = tempfile::tempdir().unwrap();
    let shot = profile.path().join("page.png");
    let url = format!("file://{}", html.canonicalize().unwrap().display());
    let run = |extra: &[String]| {
        let out = std::process::Command::new(bin)
            .args(["--window-size=1280,1800"])
            .args(CHROMIUM_FLAGS)
            .arg(format!(
                "--user-data-dir={}",
                profile.path().join("profile").display()
            ))
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let dom = String::from_utf8(run(&["--dump-dom".into()]).stdout).unwrap();
    run(&[format!("--screenshot={}", shot.display())]);
    Some(Rendered {
        dom,
        png: std::fs::read(&shot).unwrap(),
    })
}

/// Whether a PNG screenshot shows something: its share of pixels that are not the page's
/// background white, and how many distinct colours it has.
pub fn png_content(png: &[u8]) -> (f64, usize) {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let inked = pixels
        .iter()
        .filter(|p| p.iter().take(3).any(|c| *c < 240))
        .count();
    let colours: std::collections::BTreeSet<Vec<u8>> = pixels.iter().map(|p| p.to_vec()).collect();
    (inked as f64 / pixels.len() as f64, colours.len())
}

/// Every job once into `warehouse` (each must finish without error), then a build that must
/// publish: a warehouse holding the simulator's state.
pub async fn pull_and_build(warehouse: &Path, jobs: &[JobConfig]) {
    let ctx = chiso::pull::RunContext {
        warehouse: warehouse.to_path_buf(),
        project_root: repo(),
        http: chiso::feeds::http::http_client(),
    };
    for (name, r) in chiso::pull::run_many(&ctx, jobs).await {
        let report = r.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(report.error.is_none(), "{name}: {:?}", report.error);
    }
    let record = build_record(warehouse, &repo().join("sql"), jobs, false).await;
    assert!(record.published, "the build did not publish");
}

// The environment of `chiso.toml`'s sources for running the binary against the simulator.
#[allow(unused_imports)]
pub use chiso::bench::soak::{TOKEN_VARS, URL_VARS};

/// The daemon's options for a test: the repository's models, HTTP on a free loopback port,
/// a day's fire history, `grace` seconds to stop.
pub fn serve_options(
    warehouse: &Path,
    project: &ProjectConfig,
    jobs: &chiso::config::Jobs,
    grace: u64,
) -> chiso::serve::ServeOptions {
    chiso::serve::ServeOptions {
        warehouse: warehouse.to_path_buf(),
        project_root: project.root.clone(),
        sql_dir: repo().join("sql"),
        tz: project.timezone,
        jobs: jobs.clone(),
        http: Some("127.0.0.1:0".parse().unwrap()),
        grace: std::time::Duration::from_secs(grace),
        retention: std::time::Duration::from_secs(86_400),
        http_client: chiso::feeds::http::http_client(),
        publish: project.publish.clone(),
        http_token: None,
        http_public: false,
        job_files: None,
    }
}
