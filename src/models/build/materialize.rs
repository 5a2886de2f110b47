//! Running one model: a table, a view or an incremental table (with its hooks), profiled when
//! `CHISO_PROFILE_DIR` is set.

use super::*;

/// Drops `name` if it exists as the other kind of object (a model changed materialisation).
pub(super) fn drop_if_other_kind(
    conn: &duck::Connection,
    name: &str,
    want_view: bool,
) -> anyhow::Result<()> {
    match (duck::object_kind(conn, name)?.as_deref(), want_view) {
        (Some("BASE TABLE"), true) => conn.execute_batch(&format!("DROP TABLE \"{name}\""))?,
        (Some("VIEW"), false) => conn.execute_batch(&format!("DROP VIEW \"{name}\""))?,
        _ => {}
    }
    Ok(())
}

/// CHISO_PROFILE_DIR=dir: DuckDB's JSON profile of the statements that follow goes to
/// `dir/<stem>.json`, until `profile_done`.
pub(super) fn profile_into(conn: &duck::Connection, stem: &str) -> anyhow::Result<()> {
    let Some(dir) = std::env::var_os("CHISO_PROFILE_DIR") else {
        return Ok(());
    };
    let file = Path::new(&dir).join(format!("{stem}.json"));
    // DuckDB fails every later statement without a message when it cannot write there.
    std::fs::create_dir_all(file.parent().unwrap_or(Path::new(&dir)))
        .with_context(|| format!("CHISO_PROFILE_DIR={}", Path::new(&dir).display()))?;
    conn.execute_batch(&format!(
        "PRAGMA enable_profiling = 'json'; PRAGMA profiling_output = {};",
        duck::lit(&file.display().to_string())
    ))?;
    Ok(())
}

/// Ends what `profile_into` started, so that the runner's own queries after a statement (row
/// counts, content tokens, the next model's checks) do not overwrite its profile.
pub(super) fn profile_done(conn: &duck::Connection) -> anyhow::Result<()> {
    if std::env::var_os("CHISO_PROFILE_DIR").is_some() {
        conn.execute_batch("PRAGMA disable_profiling;")?;
    }
    Ok(())
}

/// Runs `sql` with its profile in `<stem>.json` under CHISO_PROFILE_DIR (each model's statement,
/// each statement of an incremental model's, each hook, the final checkpoint; each data test's
/// goes to `_tests/<test>.json`); profiling ends with it, whether it succeeded or not.
pub(super) fn execute_profiled(
    conn: &duck::Connection,
    stem: &str,
    sql: &str,
) -> anyhow::Result<()> {
    profile_into(conn, stem)?;
    let result = conn.execute_batch(sql);
    profile_done(conn)?;
    Ok(result?)
}

pub(super) fn materialize(
    conn: &duck::Connection,
    project: &Project,
    name: &str,
    rel: &Relations<'_>,
    full_refresh: bool,
) -> anyhow::Result<Option<Materialization>> {
    let m = &project.models[name];
    let q = |s: &str| format!("\"{s}\"");
    let create_table = |sql: String| -> anyhow::Result<()> {
        drop_if_other_kind(conn, name, false)?;
        execute_profiled(
            conn,
            name,
            &format!("CREATE OR REPLACE TABLE {} AS {sql}", q(name)),
        )
    };
    // dbt's `pre_hook`: statements run before the model, rendered like it (e.g. `SET VARIABLE`
    // a watermark, so that the model's filter is a constant DuckDB can push into the scan).
    let incremental = m.materialized == Materialized::Incremental
        && !full_refresh
        && duck::table_exists(conn, name)?;
    run_hooks(conn, m, "pre_hook", rel, incremental)?;
    let mut new_rows = None;
    match m.materialized {
        Materialized::View => {
            let sql = m.parsed.render(rel, false);
            drop_if_other_kind(conn, name, true)?;
            execute_profiled(
                conn,
                name,
                &format!("CREATE OR REPLACE VIEW {} AS {sql}", q(name)),
            )?;
            return Ok(None);
        }
        Materialized::Table => create_table(m.parsed.render(rel, false))?,
        Materialized::Incremental => {
            if !incremental {
                create_table(m.parsed.render(rel, false))?;
            } else {
                let sql = m.parsed.render(rel, true);
                let tmp = new_rows_table(name);
                // delete+insert: the new rows replace the kept rows of the same unique key (one
                // column or several); append: the new rows are added.
                let keys = m.parsed.config_list("unique_key");
                // The key need not be unique among the new rows (a model can replace whole
                // months, as dbt's delete+insert allows): the keys are deduplicated first, or
                // the delete would join every kept row to every new row of its key.
                let delete = match m.parsed.config_str("incremental_strategy") {
                    Some("append") => String::new(),
                    _ => format!(
                        "DELETE FROM {n} USING (SELECT DISTINCT {cols} FROM {t}) AS __keys WHERE {on}",
                        n = q(name),
                        t = q(&tmp),
                        cols = keys.iter().map(|k| q(k)).collect::<Vec<_>>().join(", "),
                        on = keys
                            .iter()
                            .map(|k| format!(
                                "{n}.{k} IS NOT DISTINCT FROM __keys.{k}",
                                n = q(name),
                                k = q(k)
                            ))
                            .collect::<Vec<_>>()
                            .join(" AND ")
                    ),
                };
                // The new rows stay in the temporary table for the data tests. Each statement
                // gets its own profile (CHISO_PROFILE_DIR keeps the last statement's only).
                let statements = [
                    (
                        "new",
                        format!("CREATE OR REPLACE TEMP TABLE {} AS {sql}", q(&tmp)),
                    ),
                    ("delete", delete),
                    (
                        "insert",
                        format!("INSERT INTO {} BY NAME SELECT * FROM {}", q(name), q(&tmp)),
                    ),
                ];
                for (step, sql) in statements.iter().filter(|(_, s)| !s.is_empty()) {
                    execute_profiled(conn, &format!("{name}.{step}"), sql)?;
                }
                let n: i64 =
                    conn.query_row(&format!("SELECT count(*) FROM temp.{}", q(&tmp)), [], |r| {
                        r.get(0)
                    })?;
                new_rows = Some(n as u64);
            }
        }
    }
    // dbt's `post_hook`: statements run after the model, rendered like it (`fct_dossiers`
    // keeps the table of steps that landed before their dossier with one).
    run_hooks(conn, m, "post_hook", rel, incremental)?;
    let rows: i64 = conn.query_row(&format!("SELECT count(*) FROM {}", q(name)), [], |r| {
        r.get(0)
    })?;
    Ok(Some(Materialization {
        rows: rows as u64,
        incremental,
        new_rows,
    }))
}

/// Runs a model's `pre_hook` or `post_hook` statements (dbt also spells them `pre-hook`,
/// `post-hook`), each rendered as the model is; profiles go to `<model>.<kind>.json` (DuckDB
/// writes none for `SET VARIABLE`).
pub(super) fn run_hooks(
    conn: &duck::Connection,
    m: &crate::models::project::Model,
    kind: &str,
    rel: &Relations<'_>,
    incremental: bool,
) -> anyhow::Result<()> {
    let name = &m.name;
    let mut hooks = m.parsed.config_list(kind);
    hooks.extend(m.parsed.config_list(&kind.replace('_', "-")));
    for hook in hooks {
        let sql = crate::models::template::parse(&hook)
            .map_err(|e| anyhow::anyhow!("{kind} of {name}: {e}"))?
            .render(rel, incremental);
        if !sql.trim().is_empty() {
            execute_profiled(conn, &format!("{name}.{kind}"), &sql)
                .with_context(|| format!("{kind} of {name}: {sql}"))?;
        }
    }
    Ok(())
}

pub(super) struct Materialization {
    pub(super) rows: u64,
    /// Built incrementally: its new rows are in `new_rows_table(model)`.
    pub(super) incremental: bool,
    /// How many rows an incremental build wrote (none: it replaced nothing).
    pub(super) new_rows: Option<u64>,
}
