//! Which incremental models must be rebuilt from scratch: their SQL (or one upstream) changed,
//! or a dataset they read was compacted, since the starting file was built.

use super::*;

/// The models whose kept rows were computed by other SQL than the current files, with why:
/// a model whose file changed since the starting file was built, and everything downstream
/// of it (dbt's `state:modified+`). A file that does not record its models' SQL (built before
/// chiso recorded it) makes every model stale. Incremental models among them are rebuilt
/// from scratch; tables and views are rebuilt anyway.
pub(super) fn stale_models(
    conn: &duck::Connection,
    project: &Project,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if !duck::table_exists(conn, "_chiso_model_sql")? {
        for name in project.models.keys() {
            out.insert(
                name.clone(),
                "the warehouse does not record which SQL built it".to_string(),
            );
        }
        return Ok(out);
    }
    let mut stmt = conn.prepare("SELECT model, sql_sha256 FROM _chiso_model_sql")?;
    let stored: BTreeMap<String, String> = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<Result<_, _>>()?;
    for (name, m) in &project.models {
        if stored.get(name).is_some_and(|h| *h != m.sql_sha256) {
            for down in with_downstream(project, name)? {
                let why = if down == *name {
                    "its SQL changed".to_string()
                } else {
                    format!("the SQL of {name}, upstream, changed")
                };
                out.entry(down).or_insert(why);
            }
        }
    }
    Ok(out)
}

/// The models to rebuild from scratch because a dataset they read (directly or upstream) was
/// compacted since the starting file was built: incremental tables keep each row's lineage
/// (`lake_file`, `lake_row`), which then names files the compaction retired.
pub(super) fn compacted_since_built(
    conn: &duck::Connection,
    project: &Project,
    jobs: &[JobConfig],
    now: &BTreeMap<String, u64>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut recorded = BTreeMap::new();
    if duck::table_exists(conn, "_chiso_lake_compactions")? {
        let mut stmt = conn.prepare("SELECT dataset, compactions FROM _chiso_lake_compactions")?;
        recorded = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })?
            .collect::<Result<_, _>>()?;
    }
    let mut out = BTreeMap::new();
    for (name, m) in &project.models {
        for (feed, dataset) in m.parsed.sources() {
            let Some(job) = jobs
                .iter()
                .find(|j| j.dataset.feed == feed && j.dataset.name == dataset)
            else {
                continue;
            };
            let key = job.dataset.key();
            let (before, after) = (
                recorded.get(&key).copied().unwrap_or(0),
                now.get(&key).copied().unwrap_or(0),
            );
            if after > before {
                for down in with_downstream(project, name)? {
                    out.entry(down).or_insert_with(|| {
                        format!("lake dataset {key} was compacted since it was built")
                    });
                }
            }
        }
    }
    Ok(out)
}

/// `name` and every model downstream of it (the selector `name+`).
fn with_downstream(project: &Project, name: &str) -> anyhow::Result<BTreeSet<String>> {
    project
        .select(&[format!("{name}+")])
        .map_err(|e| anyhow::anyhow!(e))
}

/// Records how many compactions each dataset had when this build read it.
pub(super) fn record_compactions(
    conn: &duck::Connection,
    now: &BTreeMap<String, u64>,
) -> anyhow::Result<()> {
    conn.execute_batch(
        "CREATE OR REPLACE TABLE _chiso_lake_compactions (dataset VARCHAR, compactions BIGINT);",
    )?;
    let mut insert = conn.prepare("INSERT INTO _chiso_lake_compactions VALUES (?, ?)")?;
    for (dataset, n) in now {
        insert.execute(duckdb::params![dataset, *n as i64])?;
    }
    Ok(())
}

/// Records the lake position the build read (`_chiso_lake_position`: per dataset, its job,
/// the newest commit-log entry and the newest landing stamp, as a local timestamp): rows with
/// a later `_ingested_at` landed after this build's snapshot. A revision pins it.
pub(super) fn record_lake_position(
    conn: &duck::Connection,
    positions: &std::collections::BTreeMap<String, (String, u64, Option<i64>)>,
) -> anyhow::Result<()> {
    conn.execute_batch(
        "CREATE OR REPLACE TABLE _chiso_lake_position (dataset VARCHAR, job VARCHAR, seq BIGINT, stamped_through TIMESTAMP);",
    )?;
    let mut insert = conn.prepare(
        "INSERT INTO _chiso_lake_position VALUES (?, ?, ?, make_timestamp(CAST(? AS BIGINT)))",
    )?;
    for (dataset, (job, seq, stamp)) in positions {
        // A dataset with nothing stamped yet carries a floor far before any time: none.
        let stamp = stamp.filter(|s| (0..253_402_300_800_000_000).contains(s));
        insert.execute(duckdb::params![dataset, job, *seq as i64, stamp])?;
    }
    Ok(())
}

/// Records the SQL each model was built with (its file's digest), for the next build.
pub(super) fn record_model_sql(
    conn: &duck::Connection,
    project: &Project,
    models: &[ModelRun],
) -> anyhow::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _chiso_model_sql (model VARCHAR, sql_sha256 VARCHAR);",
    )?;
    for run in models.iter().filter(|r| r.status == ModelStatus::Ok) {
        conn.execute("DELETE FROM _chiso_model_sql WHERE model = ?", [&run.model])?;
        conn.execute(
            "INSERT INTO _chiso_model_sql VALUES (?, ?)",
            [&run.model, &project.models[&run.model].sql_sha256],
        )?;
    }
    Ok(())
}
