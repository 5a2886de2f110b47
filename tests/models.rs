//! The staging, dimension and fact models build from a lake pulled from the simulator and match it:
//! one row per distinct current record, with the current version chosen by the state it
//! describes even when versions arrive out of order.

mod common;

use std::collections::BTreeMap;

use chiso::models::build::{build, published_path, BuildOptions, TestStatus};
use chiso::pull::{run_job, RunContext};
use chiso::sim::faults::Faults;
use chiso::sim::SimFeed;
use common::*;

fn scalar(conn: &duckdb::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warehouse_builds_from_the_simulator_and_matches_it() {
    let sim = start_sim(small_world(31, 50.0), Faults::none()).await;
    let (_, jobs) = project_for(&sim.base_url());
    let wh = tempfile::tempdir().unwrap();
    let ctx = RunContext {
        warehouse: wh.path().to_path_buf(),
        project_root: repo(),
        http: chiso::feeds::http::http_client(),
    };
    for job in &jobs {
        run_job(&ctx, job).await.unwrap();
    }
    // The repository's sql/ folder, as a project would have it.
    let sql = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("sql"), sql.path());
    let w = wh.path().to_path_buf();
    let s = sql.path().to_path_buf();
    let jobs2 = jobs.clone();
    let record =
        tokio::task::spawn_blocking(move || build(&w, &s, &jobs2, &BuildOptions::default()))
            .await
            .unwrap()
            .unwrap();
    assert!(
        record.published,
        "{:#?}",
        record
            .models
            .iter()
            .filter(|m| !m.succeeded())
            .collect::<Vec<_>>()
    );

    // Every generic test of the .yml files ran and passed.
    assert!(record.tests.len() >= 30, "{} tests", record.tests.len());
    let failing: Vec<_> = record
        .tests
        .iter()
        .filter(|t| t.status != TestStatus::Pass)
        .collect();
    assert!(failing.is_empty(), "{failing:#?}");

    let conn = duckdb::Connection::open_with_flags(
        published_path(wh.path()),
        duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .unwrap(),
    )
    .unwrap();
    let world = &sim.state.world;
    let now = sim.state.clock.now();
    let distinct_keys = |f: SimFeed| {
        world
            .visible(f, now)
            .iter()
            .map(|e| e.key.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .len() as i64
    };

    // Snapshots: the latest snapshot, one row per record.
    assert_eq!(
        scalar(&conn, "select count(*) from stg_registry__units"),
        world.setting.registry.units.len() as i64
    );
    assert_eq!(
        scalar(&conn, "select count(*) from stg_calendar__days"),
        world.setting.cal.special_days().count() as i64
    );
    assert_eq!(
        scalar(
            &conn,
            "select count(*) from stg_catalogue__procedures where is_current"
        ),
        world
            .setting
            .procedures
            .iter()
            .filter(|p| p.announced <= now.date())
            .count() as i64
    );
    assert_eq!(
        scalar(&conn, "select count(*) from stg_national_report__received"),
        world.national_csv(now).lines().count() as i64 - 1
    );
    // Versioned feeds: one row per key.
    for (table, feed) in [
        ("stg_portal__dossiers", SimFeed::Dossiers),
        ("stg_portal__dossier_steps", SimFeed::DossierSteps),
        ("stg_payments__payments", SimFeed::Payments),
        ("stg_reporting__ratings", SimFeed::Ratings),
        ("stg_reporting__petitions", SimFeed::Petitions),
    ] {
        assert_eq!(
            scalar(&conn, &format!("select count(*) from {table}")),
            distinct_keys(feed),
            "{table}"
        );
    }

    // The current dossier version is the one describing the latest event, even when a late
    // sync delivered an older version after it.
    let mut truth: BTreeMap<String, (u32, String)> = BTreeMap::new();
    let mut reordered = 0;
    // Entries come in arrival order: the last one per dossier is what arrived last.
    let mut last_arrival: BTreeMap<String, u32> = BTreeMap::new();
    for e in world.visible(SimFeed::Dossiers, now) {
        let status = serde_json::from_str::<serde_json::Value>(&e.json).unwrap()["TrangThaiHoSo"]
            .as_str()
            .unwrap()
            .to_string();
        let t = truth
            .entry(e.key.clone())
            .or_insert((e.event, status.clone()));
        if e.event >= t.0 {
            *t = (e.event, status);
        }
        last_arrival.insert(e.key.clone(), e.event);
    }
    for (k, ev) in &last_arrival {
        if truth[k].0 != *ev {
            reordered += 1;
        }
    }
    let mut stmt = conn
        .prepare("select dossier_id, status_code from stg_portal__dossiers")
        .unwrap();
    let got: BTreeMap<String, String> = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let wrong: Vec<_> = truth
        .iter()
        .filter(|(k, (_, s))| got.get(*k) != Some(s))
        .take(5)
        .collect();
    assert!(wrong.is_empty(), "current status differs for {wrong:?}");
    println!(
        "{} dossiers, {} whose last-arrived version is not the current one",
        truth.len(),
        reordered
    );
    assert!(reordered > 0, "the simulator reorders some versions");

    // Facts: one row per dossier; every finished dossier has its end; lateness is realistic.
    assert_eq!(
        scalar(&conn, "select count(*) from fct_dossiers"),
        distinct_keys(SimFeed::Dossiers)
    );
    // …and one row per distinct dossier of the lake, each pointing at the lake record of its
    // current version (same dossier, same status).
    let lake_dossiers = format!(
        "read_parquet('{}/lake/portal/dossiers/*/*.parquet', hive_partitioning = true, union_by_name = true, filename = true, file_row_number = true)",
        wh.path().display()
    );
    assert_eq!(
        scalar(&conn, "select count(*) from fct_dossiers"),
        scalar(
            &conn,
            &format!("select count(distinct MaHoSo) from {lake_dossiers}")
        )
    );
    assert_eq!(
        scalar(
            &conn,
            &format!(
                "select count(*) from fct_dossiers as f
                 left join {lake_dossiers} as l on l.filename = f.lake_file and l.file_row_number = f.lake_row
                 where l.MaHoSo is distinct from f.dossier_id or l.TrangThaiHoSo is distinct from f.status_code"
            )
        ),
        0
    );
    assert_eq!(
        scalar(&conn, "select count(*) from fct_dossiers where status_code in ('3', '9', '10') and finished_at is null"),
        0
    );
    assert_eq!(
        scalar(
            &conn,
            "select count(*) from fct_dossiers where received_at is not null and due_at is null"
        ),
        0
    );
    let late_share: f64 = conn
        .query_row(
            "select avg(is_late::int) from fct_dossiers where is_late is not null",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!((0.1..0.45).contains(&late_share), "late share {late_share}");
    let obligation: f64 = conn
        .query_row(
            "select avg(has_financial_obligation::int) from fct_dossiers",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        (0.4..0.65).contains(&obligation),
        "obligation share {obligation}"
    );
    println!("late share {late_share:.3}, financial obligation share {obligation:.3}");

    // Every version once, and petitions with realistic timeliness.
    assert_eq!(
        scalar(&conn, "select count(*) from stg_portal__dossier_versions"),
        world.distinct_versions(SimFeed::Dossiers, now).len() as i64
    );
    assert_eq!(
        scalar(&conn, "select count(*) from fct_petitions"),
        distinct_keys(SimFeed::Petitions)
    );
    let on_time: f64 = conn
        .query_row(
            "select avg((late_since is null)::int) from fct_petitions where is_handled",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        (0.4..0.97).contains(&on_time),
        "petitions handled on time {on_time}"
    );
    println!("petitions handled on time {on_time:.3}");

    // Calendar: August 2026 has 21 working days; Tết 2026 (14–22 Feb) none.
    assert_eq!(
        scalar(&conn, "select count(*) from dim_calendar where is_working_day and calendar_date between '2026-08-01' and '2026-08-31'"),
        21
    );
    assert_eq!(
        scalar(&conn, "select count(*) from dim_calendar where is_working_day and calendar_date between '2026-02-14' and '2026-02-22'"),
        0
    );
    // Roll-up: the top unit counts every dossier received in the month; a province counts its
    // own and its base units'.
    let all_aug = scalar(
        &conn,
        "select count(*) from fct_dossiers where received_at >= '2026-08-01' and received_at < '2026-09-01'",
    );
    assert_eq!(
        scalar(&conn, "select denominator::bigint from int_indicator_counts where unit_id = 'CT' and period = '2026-08' and indicator = 'ONLINE_DOSSIER_SHARE'"),
        all_aug
    );
    let province: String = conn
        .query_row(
            "select unit_id from int_indicator_counts where period = '2026-08' and indicator = 'ONLINE_DOSSIER_SHARE' and unit_id like 'TP__' order by denominator desc limit 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        scalar(&conn, &format!("select denominator::bigint from int_indicator_counts where unit_id = '{province}' and period = '2026-08' and indicator = 'ONLINE_DOSSIER_SHARE'")),
        scalar(&conn, &format!(
            "select count(*) from fct_dossiers f join dim_units u using (unit_id)
             where f.received_at >= '2026-08-01' and f.received_at < '2026-09-01'
               and (f.unit_id = '{province}' or u.parent_unit_id = '{province}')"
        ))
    );
    // A quarter sums its months for receipt-based counts.
    assert_eq!(
        scalar(&conn, "select denominator::bigint from int_indicator_counts where unit_id = 'CT' and period = '2026-Q3' and indicator = 'ONLINE_DOSSIER_SHARE'"),
        scalar(&conn, "select sum(denominator)::bigint from int_indicator_counts where unit_id = 'CT' and period in ('2026-07', '2026-08', '2026-09') and indicator = 'ONLINE_DOSSIER_SHARE'")
    );
    // The warehouse and `chiso index score` agree on the top unit's August points.
    let mut stmt = conn
        .prepare("select unit_id, period, indicator, numerator, denominator from int_indicator_counts where unit_id = 'CT' and period = '2026-08' order by indicator")
        .unwrap();
    let mut csv_text = String::from("unit_id,period,indicator,numerator,denominator\n");
    for row in stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, f64>(3)?,
                r.get::<_, f64>(4)?,
            ))
        })
        .unwrap()
    {
        let (u, p, i, n, d) = row.unwrap();
        csv_text.push_str(&format!("{u},{p},{i},{n},{d}\n"));
    }
    let scored = chiso::index::score(
        &csv_text,
        "counts",
        &chiso::index::Methodologies::load(&repo().join("sql/methodology")).unwrap(),
        None,
    )
    .unwrap();
    let cli_total: f64 = scored
        .lines()
        .find(|l| l.contains(",TOTAL,"))
        .unwrap()
        .split(',')
        .nth(6)
        .unwrap()
        .parse()
        .unwrap();
    let wh_total: f64 = conn
        .query_row("select sum(points) from int_indicator_points where unit_id = 'CT' and period = '2026-08'", [], |r| r.get(0))
        .unwrap();
    assert!(
        (cli_total - wh_total).abs() < 1e-9,
        "cli {cli_total} vs warehouse {wh_total}"
    );
    assert!((0.0..=100.0).contains(&wh_total));
    println!("top unit, 2026-08: {all_aug} dossiers received, total {wh_total:.2} of 100; largest province {province}");

    // Reconciliation at every level: each unit's total in the mart equals what
    // `chiso index score` gives for that unit's counts (a parent's counts are the sums of its
    // children's and its own). ONLINE_SERVICE_PROVIDED is scored at the top only, so it is
    // left out of the counts of the other units (absent = not scored = 0 points, as below
    // the top).
    for period in ["2026-08", "2026-Q3"] {
        let mut stmt = conn
            .prepare("select unit_id, period, indicator, numerator, denominator from int_indicator_counts where period = ? and (is_top or indicator <> 'ONLINE_SERVICE_PROVIDED') order by unit_id, indicator")
            .unwrap();
        let mut text = String::from("unit_id,period,indicator,numerator,denominator\n");
        for row in stmt
            .query_map([period], |r| {
                Ok(format!(
                    "{},{},{},{},{}\n",
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, f64>(3)?,
                    r.get::<_, f64>(4)?
                ))
            })
            .unwrap()
        {
            text.push_str(&row.unwrap());
        }
        let scored = chiso::index::score(
            &text,
            "counts",
            &chiso::index::Methodologies::load(&repo().join("sql/methodology")).unwrap(),
            None,
        )
        .unwrap();
        let mut units = 0;
        for line in scored.lines().filter(|l| l.contains(",TOTAL,")) {
            let f: Vec<&str> = line.split(',').collect();
            let cli: f64 = f[6].parse().unwrap();
            let wh: f64 = conn
                .query_row(
                    "select total from mart_index_unit_period where unit_id = ? and period = ?",
                    [f[0], f[1]],
                    |r| r.get(0),
                )
                .unwrap();
            assert!(
                (cli - wh).abs() < 1e-9,
                "{} {}: cli {cli} vs warehouse {wh}",
                f[0],
                f[1]
            );
            units += 1;
        }
        assert!(units > 300, "{units} units scored for {period}");
        println!("{period}: {units} units, every total equal to chiso index score of its counts");
    }
    // The average handling time per procedure partitions AVERAGE_HANDLING_DAYS: for every unit
    // (every level) and period, its days and dossiers summed over procedures are the
    // indicator's numerator and denominator, and it has rows for more than one procedure.
    assert_eq!(
        scalar(
            &conn,
            "select count(*) from (
               select unit_id, period, sum(handling_working_days) as days, sum(finished) as n
               from mart_handling_time_by_procedure group by all
             ) as p
             full join (
               select unit_id, period, numerator as days, denominator as n
               from mart_index_indicator
               where indicator = 'AVERAGE_HANDLING_DAYS' and denominator > 0
             ) as i using (unit_id, period)
             where p.days is distinct from i.days or p.n is distinct from i.n"
        ),
        0
    );
    assert!(
        scalar(
            &conn,
            "select count(distinct procedure_code) from mart_handling_time_by_procedure where unit_id = 'CT' and period = '2026-08'"
        ) > 1
    );

    // Every count is explained by the records the drill-down views list.
    let mismatches = drill_mismatches(&conn);
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));

    // Drill-down: every late dossier is listed once, most with the step that was open at due.
    assert_eq!(
        scalar(&conn, "select count(*) from drill_late_dossiers"),
        scalar(&conn, "select count(*) from fct_dossiers where is_late")
    );
    assert_eq!(
        scalar(&conn, "select count(distinct dossier_id) from drill_late_dossiers where dossier_id is not null"),
        scalar(&conn, "select count(*) from fct_dossiers where is_late")
    );
    assert!(
        scalar(
            &conn,
            "select count(*) from drill_late_dossiers where officer_name is not null"
        ) > 0
    );

    // Periods: 84 months, 28 quarters, 7 years; Q3 2026 runs July to September.
    assert_eq!(
        scalar(&conn, "select count(*) from dim_periods"),
        84 + 28 + 7
    );
    assert_eq!(
        scalar(&conn, "select count(*) from dim_periods where period = '2026-Q3' and starts_on = '2026-07-01' and ends_before = '2026-10-01'"),
        1
    );
    // Units: the tree since 2025-07 has Cục Thuế, 34 provinces and the base units.
    assert_eq!(
        scalar(
            &conn,
            "select count(*) from dim_units where is_current and unit_kind = 'THUE_TINH'"
        ),
        34
    );
    assert_eq!(
        scalar(
            &conn,
            "select count(*) from dim_units where is_current and is_top_level"
        ),
        1
    );
    // Every ended unit names its successors, but the base unit the simulator closes in 2026.
    let closed = rows(
        &conn,
        "select unit_id, valid_to from dim_units where not is_current and len(successor_unit_ids) = 0",
    );
    assert_eq!(
        closed,
        vec![format!("{}|2026-09-30", chiso::sim::units::CLOSED_UNIT)]
    );

    // Every unit carries its department id on the portal, as the registry gives it (what joins
    // the portal's published evaluation to chiso's units).
    let ids = rows(
        &conn,
        "select distinct unit_id || '|' || coalesce(portal_department_id, 'null') from dim_units order by 1",
    );
    assert!(ids.len() > 400, "{}", ids.len());
    for row in &ids {
        let (unit, id) = row.split_once('|').unwrap();
        assert_eq!(id, chiso::sim::units::portal_department_id(unit), "{unit}");
    }

    // The simulated portal's own evaluation (a second implementation of SPEC §4 over the
    // records it holds) equals chiso's counts on every unit, ended period and indicator.
    let eval = chiso::sim::evaluation::compute(world, now);
    let mut chiso_counts: BTreeMap<(String, String, String), (f64, f64)> = BTreeMap::new();
    {
        let mut stmt = conn
            .prepare("select unit_id, period, indicator, coalesce(numerator, 0), coalesce(denominator, 0) from mart_index_indicator")
            .unwrap();
        for r in stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, f64>(3)?,
                    r.get::<_, f64>(4)?,
                ))
            })
            .unwrap()
        {
            let (u, p, i, n, d) = r.unwrap();
            chiso_counts.insert((u, p, i), (n, d));
        }
    }
    let mut differences = Vec::new();
    let mut compared = 0;
    // The periods chiso reports (from the first month with a dossier; the portal answers for
    // earlier ones too, with nothing counted but the catalogue).
    let reported: std::collections::BTreeSet<String> =
        chiso_counts.keys().map(|(_, p, _)| p.clone()).collect();
    for ((unit, period), f) in &eval.figures {
        if !eval
            .periods
            .iter()
            .any(|(p, ended)| *ended && p.label() == *period)
            || !reported.contains(period)
        {
            continue;
        }
        for (code, (n, d)) in &f.counts {
            compared += 1;
            let theirs = chiso_counts
                .get(&(unit.clone(), period.clone(), code.to_string()))
                .copied();
            if theirs != Some((*n, *d)) && !(theirs.is_none() && *n == 0.0 && *d == 0.0) {
                differences.push(format!(
                    "{unit} {period} {code}: portal {n}/{d}, chiso {theirs:?}"
                ));
            }
        }
    }
    assert!(compared > 1000, "{compared}");
    assert!(
        differences.is_empty(),
        "{} of {compared} differ:\n{}",
        differences.len(),
        differences
            .iter()
            .take(60)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Every model is documented: its grain, and exactly its columns.
    let project = chiso::models::project::Project::load(sql.path()).unwrap();
    for m in project.models.values() {
        let doc = m
            .doc
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no .yml", m.name));
        assert!(
            doc.description.trim().starts_with("One row per"),
            "{}: the description states the grain",
            m.name
        );
        let mut stmt = conn
            .prepare("select column_name from information_schema.columns where table_name = ? order by ordinal_position")
            .unwrap();
        let actual: Vec<String> = stmt
            .query_map([&m.name], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let documented: Vec<String> = doc.columns.iter().map(|c| c.name.clone()).collect();
        assert_eq!(actual, documented, "{}: documented columns", m.name);
        // Officer names are personal wherever they appear, and no mart (what BI tools and
        // publication read) has a personal column.
        for c in &doc.columns {
            if c.name == "officer_name" {
                assert!(
                    c.is_personal(),
                    "{}.{} is not marked personal",
                    m.name,
                    c.name
                );
            }
            if m.name.starts_with("mart_") {
                assert!(
                    !c.is_personal(),
                    "{}.{} is personal in a mart",
                    m.name,
                    c.name
                );
            }
        }
        assert!(
            doc.columns.iter().all(|c| !c.description.is_empty()),
            "{}",
            m.name
        );
    }
    sim.stop().await;
}

/// A world whose clock stands at the portal's 02:00 computation, so that chiso's data and the
/// portal's are of the same moment.
fn world_at_portal_time(seed: u64) -> chiso::sim::SimConfig {
    let mut cfg = small_world(seed, 40.0);
    cfg.now = chrono::NaiveDate::from_ymd_opt(2026, 9, 10)
        .unwrap()
        .and_hms_opt(2, 0, 0)
        .unwrap();
    cfg
}

/// The repository's jobs against `url`, the evaluation job asking for the world's periods
/// (its rolling plan follows the wall clock, not the simulator's).
fn jobs_for_world(url: &str) -> Vec<chiso::config::JobConfig> {
    jobs_asking(
        url,
        &[
            "2026-06", "2026-07", "2026-08", "2026-09", "2026-Q2", "2026-Q3", "2026",
        ],
    )
}

fn jobs_asking(url: &str, periods: &[&str]) -> Vec<chiso::config::JobConfig> {
    let (_, mut jobs) = project_for(url);
    for j in &mut jobs {
        if let chiso::config::Protocol::Evaluation(p) = &mut j.protocol {
            p.periods = Some(periods.iter().map(|p| p.to_string()).collect());
        }
    }
    jobs
}

/// (department, period, code, cause) of the rows of mart_reconciliation that explain a
/// difference, in ended periods.
fn reported_differences(
    conn: &duckdb::Connection,
) -> std::collections::BTreeSet<(String, String, String, String)> {
    let mut stmt = conn
        .prepare(
            "select coalesce(department_id, unit_id), period, code, cause from mart_reconciliation
             where is_ended and is_root_cause and cause <> 'agrees'",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn open_published(w: &std::path::Path) -> duckdb::Connection {
    duckdb::Connection::open_with_flags(
        published_path(w),
        duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .unwrap(),
    )
    .unwrap()
}

/// With no divergence, the portal's published evaluation (pulled over HTTP through the
/// evaluation protocol, flattened by the models) and chiso's index agree within rounding on
/// every unit, ended period (months, quarters; null and zero cases included) and code; with
/// divergences injected, over three seeds, the reconciliation reports exactly the injected
/// differences with the cause each calls for (precision and recall 100 %).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciliation_finds_exactly_what_the_portal_was_made_to_differ_in() {
    for (seed, rate) in [(7, 0.0), (7, 0.08), (19, 0.08), (23, 0.08)] {
        let faults = Faults {
            portal_divergence: rate,
            ..Faults::none()
        };
        let sim = start_sim(world_at_portal_time(seed), faults).await;
        let jobs = jobs_for_world(&sim.base_url());
        let wh = tempfile::tempdir().unwrap();
        pull_and_build(wh.path(), &jobs).await;
        let conn = open_published(wh.path());
        let count = |sql: &str| scalar(&conn, sql);
        let ended = count("select count(*) from mart_reconciliation where is_ended");
        assert!(ended > 5_000, "{ended} rows in ended periods");
        // Every kind of row is there: null and zero denominators, groups, totals, quarters.
        assert!(count("select count(*) from mart_reconciliation where is_ended and level = 'indicator' and portal_denominator = 0 and portal_score is null") > 0);
        assert!(count("select count(*) from mart_reconciliation where is_ended and code = 'TOTAL' and period = '2026-Q2'") > 30);
        let pulled = ["2026-06", "2026-07", "2026-08", "2026-Q2"];
        let truth: std::collections::BTreeSet<(String, String, String, String)> = {
            let c = sim.state.evaluation();
            c.divergences
                .values()
                .filter(|d| pulled.contains(&d.period.as_str()))
                .flat_map(|d| {
                    let codes: Vec<String> = if d.kind == "missing_from_endpoint" {
                        chiso::sim::evaluation_api::shown_codes(&d.code, true)
                            .into_iter()
                            .map(String::from)
                            .collect()
                    } else {
                        vec![d.code.clone()]
                    };
                    codes.into_iter().map(move |code| {
                        (
                            d.department_id.clone(),
                            d.period.clone(),
                            code,
                            d.cause.clone(),
                        )
                    })
                })
                .collect()
        };
        let found = reported_differences(&conn);
        if rate == 0.0 {
            assert!(truth.is_empty());
            let beyond: Vec<String> = {
                let mut stmt = conn
                    .prepare("select unit_id || ' ' || period || ' ' || code || ' ' || cause from mart_reconciliation where is_ended and not is_within_rounding limit 20")
                    .unwrap();
                stmt.query_map([], |r| r.get(0))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            };
            assert!(
                beyond.is_empty(),
                "differences with no divergence: {beyond:#?}"
            );
        } else {
            assert!(truth.len() >= 10, "seed {seed}: {} injected", truth.len());
            let kinds: std::collections::BTreeSet<&str> =
                truth.iter().map(|t| t.3.as_str()).collect();
            assert!(kinds.len() >= 4, "seed {seed}: causes {kinds:?}");
            let missed: Vec<_> = truth.difference(&found).collect();
            let extra: Vec<_> = found.difference(&truth).collect();
            assert!(
                missed.is_empty() && extra.is_empty(),
                "seed {seed}: {} injected, {} found; missed {missed:#?}; not injected {extra:#?}",
                truth.len(),
                found.len()
            );
        }
        // `chiso reconcile` says the same: exit 0 when all agrees, 4 with the differences, each
        // count difference with a query listing the records behind chiso's side.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_chiso"))
            .args(["reconcile", "2026-08", "--json", "--dir"])
            .arg(wh.path())
            .current_dir(repo())
            .output()
            .unwrap();
        let report: chiso::reconcile::Report = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        let august: Vec<_> = truth.iter().filter(|t| t.1 == "2026-08").collect();
        assert_eq!(report.differences.len(), august.len());
        assert_eq!(out.status.code(), Some(if rate == 0.0 { 0 } else { 4 }));
        let drills = report
            .differences
            .iter()
            .filter(|d| d.drill_down.is_some())
            .count();
        assert!(
            rate == 0.0 || drills > 0,
            "no count difference to drill into"
        );
        for d in report.differences.iter().filter(|d| d.drill_down.is_some()) {
            let q = d.drill_down.as_deref().unwrap();
            let (n, den): (f64, f64) = conn
                .query_row(
                    &format!("select count(*) filter (where in_numerator), count(*) from ({q})"),
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            assert_eq!(
                (Some(n), Some(den)),
                (d.chiso_numerator, d.chiso_denominator),
                "{q}"
            );
        }
        eprintln!(
            "seed {seed}, divergence {rate}: {ended} rows in ended periods; {} differences injected, {} reported",
            truth.len(),
            found.len()
        );
        sim.stop().await;
    }
}

/// The portal revises a closed period silently, days later: the next pull lands the changed
/// answer, mart_portal_vintages records the figure's second vintage with its before and after,
/// and mart_reconciliation reports the difference it now makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_revision_of_a_closed_period_is_a_vintage_with_its_before_and_after() {
    let sim = start_sim(world_at_portal_time(7), Faults::none()).await;
    let jobs = jobs_for_world(&sim.base_url());
    let wh = tempfile::tempdir().unwrap();
    pull_and_build(wh.path(), &jobs).await;
    let root = chiso::sim::units::portal_department_id("CT");
    let before: (f64, f64) = {
        let conn = open_published(wh.path());
        conn.query_row(
            "select numerator, denominator from mart_portal_vintages where department_id = ? and period = '2026-08' and code = 'ON_TIME_HANDLING' and vintage = 1",
            [&root],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    // Days later the portal's August goes up by 40 dossiers handled on time.
    let revised = serde_json::json!({"unit": "CT", "period": "2026-08", "code": "ON_TIME_HANDLING",
        "numerator": before.0 + 40.0, "denominator": before.1});
    let answer = reqwest::Client::new()
        .post(format!("{}/_sim/evaluation/revisions", sim.base_url()))
        .json(&revised)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
    let evaluation = jobs.iter().find(|j| j.name == "portal_evaluation").unwrap();
    let ctx = RunContext {
        warehouse: wh.path().to_path_buf(),
        project_root: repo(),
        http: chiso::feeds::http::http_client(),
    };
    let report = run_job(&ctx, evaluation).await.unwrap();
    assert_eq!(report.error, None);
    assert!(
        report.totals.rows_landed >= 2,
        "the changed answers land: {:?}",
        report.totals
    );
    let record = build_record(wh.path(), &repo().join("sql"), &jobs, false).await;
    assert!(record.published);
    let conn = open_published(wh.path());
    let (vintage, prev_n, n, prev_score, score): (i64, f64, f64, f64, f64) = conn
        .query_row(
            "select vintage, previous_numerator, numerator, previous_score, score from mart_portal_vintages
             where department_id = ? and period = '2026-08' and code = 'TDGQ' and vintage = 2",
            [&root],
            |r| Ok((r.get(0)?, r.get(1).unwrap_or(0.0), r.get(2).unwrap_or(0.0), r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(vintage, 2);
    assert!(score > prev_score, "TDGQ {prev_score} → {score}");
    assert_eq!((prev_n, n), (0.0, 0.0), "a group has no counts");
    let (prev_n, n): (f64, f64) = conn
        .query_row(
            "select previous_numerator, numerator from mart_portal_vintages
             where department_id = ? and period = '2026-08' and code = 'ON_TIME_HANDLING' and vintage = 2",
            [&root],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((prev_n, n), (before.0, before.0 + 40.0));
    // Nothing else changed: one new vintage per figure the revision moved (the indicator, its
    // group, the total), and the reconciliation now reports the indicator's counts.
    let changed = rows(
        &conn,
        "select code from mart_portal_vintages where vintage > 1 and is_revision order by code",
    );
    assert_eq!(changed, ["ON_TIME_HANDLING", "TDGQ", "TOTAL"]);
    let cause: String = conn
        .query_row(
            "select cause from mart_reconciliation where department_id = ? and period = '2026-08' and code = 'ON_TIME_HANDLING'",
            [&root],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(cause, "counts_differ");
    // `chiso reconcile` reports it, with its before and after.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chiso"))
        .args(["reconcile", "2026-08", "--json", "--dir"])
        .arg(wh.path())
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let report: chiso::reconcile::Report = serde_json::from_slice(&out.stdout).unwrap();
    let r = report
        .revisions
        .iter()
        .find(|r| r.code == "ON_TIME_HANDLING")
        .expect("the revision is reported");
    assert_eq!(
        (r.previous_numerator, r.numerator, r.unit_id.as_deref()),
        (Some(before.0), Some(before.0 + 40.0), Some("CT"))
    );
    // The daemon's reconcile job, triggered, records the differences as its fire's outcome.
    let project = project_at(&sim.base_url());
    let fire = reconcile_job_fire(wh.path(), &project, "2026-08", true).await;
    assert_eq!(
        fire.outcome,
        Some(chiso::schedule::FireOutcome::Differences),
        "{fire:?}"
    );
    assert!(
        fire.error
            .as_deref()
            .is_some_and(|e| e.contains("Reconciliation of 2026-08") && e.contains("counts differ")),
        "{fire:?}"
    );
    assert_eq!(fire.periods, ["2026-08"]);
    sim.stop().await;
}

/// Runs the daemon on `warehouse` with one reconcile job for `period`, fired by its schedule
/// (every second) or, with `scheduled` false, once a year and triggered; returns its first
/// finished fire.
async fn reconcile_job_fire(
    warehouse: &std::path::Path,
    project: &chiso::config::ProjectConfig,
    period: &str,
    scheduled: bool,
) -> chiso::schedule::FireRecord {
    use chiso::serve::control::{self, Op, Request};
    let dir = tempfile::tempdir().unwrap();
    let schedule = if scheduled {
        "* * * * * *"
    } else {
        "0 0 1 1 *"
    };
    std::fs::write(
        dir.path().join("reconcile.toml"),
        format!("kind = \"reconcile\"\nschedule = \"{schedule}\"\nperiods = [\"{period}\"]\n"),
    )
    .unwrap();
    let all = chiso::config::load_all_jobs(dir.path(), project).unwrap();
    assert_eq!(all.reconciles.len(), 1);
    let opts = serve_options(warehouse, project, &all, 5);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let daemon = tokio::spawn(chiso::serve::serve(
        opts,
        async move {
            let _ = stopped.await;
        },
        Some(tx),
    ));
    assert!(matches!(
        rx.recv().await.unwrap(),
        chiso::serve::Notice::Started { .. }
    ));
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    if !scheduled {
        let reply = control::send(
            warehouse,
            &Request {
                op: Op::Trigger,
                job: Some("reconcile".into()),
                by: "tester".into(),
            },
        )
        .await
        .unwrap();
        assert!(reply.ok, "{reply:?}");
    }
    let history = chiso::schedule::History::new(warehouse, "reconcile");
    let t0 = std::time::Instant::now();
    let fire = loop {
        if let Some(f) = history
            .tail()
            .unwrap()
            .into_iter()
            .find(|f| f.event == chiso::schedule::FireEvent::Finished)
        {
            break f;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(30), "no fire");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        fire.how,
        Some(if scheduled {
            chiso::schedule::FireHow::OnTime
        } else {
            chiso::schedule::FireHow::Triggered
        })
    );
    let _ = stop.send(());
    daemon.await.unwrap().unwrap();
    fire
}

/// A year that has ended agrees as its months and quarter do; `chiso status` shows the newest
/// ended month's reconciliation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_and_chiso_agree_on_a_year_that_has_ended() {
    let mut cfg = small_world(11, 40.0);
    // (In the past: `is_ended` reads chiso's clock, which no test moves.)
    cfg.from = chrono::NaiveDate::from_ymd_opt(2025, 11, 1).unwrap();
    cfg.now = chrono::NaiveDate::from_ymd_opt(2026, 1, 4)
        .unwrap()
        .and_hms_opt(2, 0, 0)
        .unwrap();
    let sim = start_sim(cfg, Faults::none()).await;
    let jobs = jobs_asking(
        &sim.base_url(),
        &["2025-11", "2025-12", "2025-Q4", "2025", "2026-01"],
    );
    let wh = tempfile::tempdir().unwrap();
    pull_and_build(wh.path(), &jobs).await;
    let conn = open_published(wh.path());
    let ended = |period: &str| {
        scalar(
            &conn,
            &format!(
                "select count(*) from mart_reconciliation where is_ended and period = '{period}'"
            ),
        )
    };
    for period in ["2025-11", "2025-12", "2025-Q4", "2025"] {
        assert!(ended(period) > 1_000, "{period}: {}", ended(period));
    }
    let beyond = rows(
        &conn,
        "select unit_id || ' ' || period || ' ' || code || ' ' || cause from mart_reconciliation where is_ended and not is_within_rounding limit 20",
    );
    assert!(beyond.is_empty(), "{beyond:#?}");
    // The year's totals are compared, and agree.
    assert!(
        scalar(
            &conn,
            "select count(*) from mart_reconciliation where period = '2025' and code = 'TOTAL' and cause = 'agrees'"
        ) > 30
    );
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_chiso"))
        .args(["status", "--json", "--dir"])
        .arg(wh.path())
        .current_dir(repo())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let r = &v["publications"]["reconciliation"];
    // The newest month ended by chiso's clock (January 2026, judged by both as of the
    // simulator's 02:00 of the 4th).
    assert_eq!(r["period"], "2026-01", "{r}");
    assert!(r["compared"].as_u64().unwrap() > 1_000, "{r}");
    assert_eq!(r["beyond_rounding"], serde_json::json!({}), "{r}");
    // The daemon's reconcile job finds nothing to report.
    let fire = reconcile_job_fire(wh.path(), &project_at(&sim.base_url()), "2025-12", false).await;
    assert_eq!(
        fire.outcome,
        Some(chiso::schedule::FireOutcome::Ok),
        "{fire:?}"
    );
    sim.stop().await;
}
