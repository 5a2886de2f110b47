//! The data tests: run over all rows or only the rows an incremental model wrote, their
//! samples, and the tests of the published warehouse (`chiso test`).

use super::*;

/// What lets a build check only the rows it wrote: the models built incrementally, and the
/// tests (name and SQL) the starting file's rows passed when it was built.
pub(super) struct Narrowing<'a> {
    pub(super) built_incrementally: &'a BTreeSet<String>,
    pub(super) passed_before: &'a BTreeSet<(String, String)>,
}

impl Narrowing<'_> {
    /// Whether `t` needs to read only the new rows of its model: the kept rows passed the same
    /// test (same SQL) in the build that made the starting file, and the test is about single
    /// rows (`not_null`, `accepted_values`), or about the key a delete+insert model replaces
    /// rows by (`unique`: the rows it replaced are gone, so only the new rows can collide).
    /// `relationships` always reads everything: its parent may have lost rows.
    fn narrows(
        &self,
        project: &Project,
        t: &crate::models::project::DataTest,
        full_sql: &str,
    ) -> bool {
        let Some(on) = &t.on else { return false };
        if !self.built_incrementally.contains(&on.model)
            || !self
                .passed_before
                .contains(&(t.name.clone(), sql_digest(full_sql)))
        {
            return false;
        }
        let m = &project.models[&on.model];
        match on.kind.as_str() {
            "not_null" | "accepted_values" => true,
            "unique" => {
                m.parsed
                    .config_str("incremental_strategy")
                    .unwrap_or("delete+insert")
                    == "delete+insert"
                    && m.parsed.config_list("unique_key") == [on.column.clone()]
            }
            _ => false,
        }
    }
}

pub(super) fn sql_digest(sql: &str) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(sql.as_bytes()))
}

/// The tests the rows of this file passed when it was built (none for a new file).
pub(super) fn tests_passed_in(
    conn: &duck::Connection,
) -> anyhow::Result<BTreeSet<(String, String)>> {
    if !duck::table_exists(conn, "_chiso_tests_passed")? {
        return Ok(BTreeSet::new());
    }
    let mut stmt = conn.prepare("SELECT test, sql_sha256 FROM _chiso_tests_passed")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Records which tests the file's rows pass, for the next build's narrowed tests.
pub(super) fn record_tests_passed(
    conn: &duck::Connection,
    tests: &[TestRun],
) -> anyhow::Result<()> {
    conn.execute_batch(
        "CREATE OR REPLACE TABLE _chiso_tests_passed (test VARCHAR, sql_sha256 VARCHAR);",
    )?;
    let mut insert = conn.prepare("INSERT INTO _chiso_tests_passed VALUES (?, ?)")?;
    for t in tests.iter().filter(|t| t.status == TestStatus::Pass) {
        insert.execute(duckdb::params![t.test, t.sql_sha256])?;
    }
    Ok(())
}

pub(super) fn run_tests(
    conn: &duck::Connection,
    project: &Project,
    jobs: &[JobConfig],
    snapshot: &LakeSnapshot,
    selected: &BTreeSet<String>,
    failed: &BTreeSet<String>,
    narrowing: Option<&Narrowing<'_>>,
) -> anyhow::Result<Vec<TestRun>> {
    let mut out = Vec::new();
    // The sources the selected models read: a test that reads sources only (no model) runs
    // when a model reading one of them is selected, as its staging model would.
    let selected_sources: BTreeSet<(String, String)> = project
        .models
        .values()
        .filter(|m| selected.contains(&m.name))
        .flat_map(|m| m.parsed.sources())
        .collect();
    for t in &project.tests {
        let refs = t.parsed.refs();
        // A test runs when it reads a selected model (or, reading no model, a source a selected
        // model reads), and all it reads built.
        let reads_selected = if refs.is_empty() {
            t.parsed
                .sources()
                .iter()
                .any(|s| selected_sources.contains(s))
        } else {
            refs.iter().any(|r| selected.contains(r))
        };
        if !reads_selected || refs.iter().any(|r| failed.contains(r)) {
            continue;
        }
        let mut rel = Relations {
            jobs,
            snapshot,
            inline_snapshot: false,
            this: t.name.clone(),
            narrowed: None,
        };
        let full_sql = t.parsed.render(&rel, false);
        let narrowed = narrowing.is_some_and(|n| n.narrows(project, t, &full_sql));
        let sql = if narrowed {
            rel.narrowed = narrowing.map(|n| n.built_incrementally);
            t.parsed.render(&rel, false)
        } else {
            full_sql.clone()
        };
        let t0 = Instant::now();
        profile_into(conn, &format!("_tests/{}", t.name))?;
        let res: Result<i64, _> =
            conn.query_row(&format!("SELECT count(*) FROM ({sql})"), [], |r| r.get(0));
        profile_done(conn)?;
        let seconds = t0.elapsed().as_secs_f64();
        let (status, failures, error) = match res {
            Ok(0) => (TestStatus::Pass, 0, None),
            Ok(n) if t.severity == "warn" => (TestStatus::Warn, n as u64, None),
            Ok(n) => (TestStatus::Fail, n as u64, None),
            Err(e) => (
                TestStatus::Error,
                0,
                Some(format!("{}: {e}", t.path.display())),
            ),
        };
        if status == TestStatus::Fail {
            tracing::error!(test = %t.name, failures, "Data test failed; the build is not published.");
        }
        let sample = if failures > 0 {
            sample_rows(conn, &sql).unwrap_or_else(|e| vec![format!("(could not list them: {e})")])
        } else {
            vec![]
        };
        out.push(TestRun {
            test: t.name.clone(),
            severity: t.severity.clone(),
            status,
            failures,
            seconds,
            error,
            rows_checked: if narrowed { "new" } else { "all" }.into(),
            sql_sha256: sql_digest(&full_sql),
            sample,
        });
    }
    Ok(out)
}

/// The first five rows a test's SQL returns, each as a JSON object.
pub(super) fn sample_rows(conn: &duck::Connection, sql: &str) -> anyhow::Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT CAST(to_json(t) AS VARCHAR) FROM ({sql}) AS t LIMIT 5"
    ))?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// `chiso test`: the data tests against the published warehouse, read-only.
pub fn test_published(
    warehouse: &Path,
    sql_dir: &Path,
    jobs: &[JobConfig],
    select: &[String],
) -> anyhow::Result<Vec<TestRun>> {
    let published = published_path(warehouse);
    if !published.exists() {
        bail!(
            "{} does not exist yet; run `chiso build` first",
            published.display()
        );
    }
    let project = Project::load(sql_dir).map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?;
    let selected = project.select(select).map_err(|e| anyhow::anyhow!(e))?;
    let conn = duckdb::Connection::open_with_flags(
        &published,
        duckdb::Config::default().access_mode(duckdb::AccessMode::ReadOnly)?,
    )?;
    conn.execute_batch(duck::SAFE_SETTINGS)?;
    let snapshot = snapshot::read(warehouse, jobs)?;
    snapshot::set_variables(&conn, jobs, &snapshot)?;
    run_tests(
        &conn,
        &project,
        jobs,
        &snapshot,
        &selected,
        &BTreeSet::new(),
        None,
    )
}
