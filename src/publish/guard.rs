//! The guard a revision passes before anything is written or sent.
//!
//! Personal data blocks every publication, provisional or not: no published column may be named
//! like a column the job files declare `personal = true` or one the models made of it
//! ([`crate::models::personal`]: renamed, or marked `meta: {personal: true}`); no published
//! string (a text column, or any string inside a list, struct, map or JSON column; the note,
//! the acceptance reason and the change note) may hold a value of such a column from the lake
//! (applicant names and ID numbers, officer names, petitioners), compared trimmed, in Unicode
//! NFC and in any case, nor anything shaped like an ID number (also in groups, or ending a
//! sentence), a phone number or an e-mail address.
//!
//! Warnings block a final publication unless accepted (`--accept "reason"`, recorded in the
//! manifest and the ledger): the warehouse is stale (the last build failed, or rows landed
//! after the build it holds read the lake); a unit's total moved more than `max_change_points`
//! from the previous period beyond what chance allows; a feed's data has not reached the
//! period's end plus the grace days; a unit's dossiers fell further than chance allows, alone
//! or with many others at once; a unit is missing and the registry does not close it
//! ([`super::chance`]). Moves and falls that chance explains are notes that block nothing.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{bail, Context};
use regex::Regex;

use crate::config::{JobConfig, PublishConfig};
use crate::duck;
use crate::ledger;
use crate::models::snapshot;
use duckdb::OptionalExt;

pub use super::chance::Warning;

/// Where each published mart's columns end up.
fn files_of(mart: &str) -> &'static str {
    if mart == "mart_index_unit_period" {
        "units-level-N.csv, units-level-N.json, index.xlsx, report.html and the portals' payloads"
    } else {
        "indicators-level-N.csv, units-level-N.json, index.xlsx, report.html and the portals' payloads"
    }
}

/// A personal value shown in an error: its first character and its length, never the value.
fn masked(v: &str) -> String {
    let first: String = v.chars().take(1).collect();
    format!("{first}… ({} characters)", v.chars().count())
}

struct Pattern {
    what: &'static str,
    re: Regex,
}

fn patterns() -> &'static [Pattern] {
    static P: OnceLock<Vec<Pattern>> = OnceLock::new();
    P.get_or_init(|| {
        let p = |what, re: &str| Pattern {
            what,
            re: Regex::new(re).expect("valid pattern"),
        };
        vec![
            p(
                "an e-mail address",
                r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+",
            ),
            // Nine or twelve digits, not inside a longer number or a decimal; a dot after them
            // ends a sentence unless a digit follows.
            p(
                "an ID number (9 or 12 digits)",
                r"(^|[^0-9.])([0-9]{12}|[0-9]{9})($|[^0-9.]|\.($|[^0-9]))",
            ),
            // A citizen ID written in groups: 0123 4567 8901, 012.345.678.901, 012-345-678-901.
            p(
                "an ID number (12 digits in groups)",
                r"(^|[^0-9.])([0-9]{4}[ .-][0-9]{4}[ .-][0-9]{4}|[0-9]{3}[ .-][0-9]{3}[ .-][0-9]{3}[ .-][0-9]{3})($|[^0-9]|\.($|[^0-9]))",
            ),
            // An old 9-digit ID written with spaces (dots would be an amount: 123.456.789 đồng).
            p(
                "an ID number (9 digits in groups)",
                r"(^|[^0-9. ]|[^0-9.] )[0-9]{3} [0-9]{3} [0-9]{3}($|[^0-9 ]| [^0-9])",
            ),
            p(
                "a phone number",
                r"(^|[^0-9.]|[A-Za-z]\.)(\+84|0)[0-9]{9,10}($|[^0-9])",
            ),
            // 0912 345 678, 091.234.5678, +84 912-345-678.
            p(
                "a phone number",
                r"(^|[^0-9.]|[A-Za-z]\.)(\+84 ?|0)[0-9]{2,3}[ .-][0-9]{3}[ .-][0-9]{3,4}($|[^0-9])",
            ),
        ]
    })
}

/// The first pattern `text` matches, if any.
fn pattern_in(text: &str) -> Option<&'static Pattern> {
    patterns().iter().find(|p| p.re.is_match(text))
}

/// How the guard compares text with the lake's personal values: trimmed, Unicode NFC, lower
/// case (a name typed in capitals, or in decomposed form, is the same name).
fn normalised(sql: &str) -> String {
    format!("lower(nfc_normalize(trim({sql})))")
}

/// Checks free text that will be published (a change note, an acceptance reason, a note)
/// against the patterns and the lake's personal values (NFC, any case). Digests chiso writes
/// itself (`sha256:…`) are not read as numbers.
pub fn check_text(
    conn: &duck::Connection,
    warehouse: &Path,
    jobs: &[JobConfig],
    what: &str,
    text: &str,
) -> anyhow::Result<()> {
    static DIGEST: OnceLock<Regex> = OnceLock::new();
    let digest = DIGEST.get_or_init(|| Regex::new(r"sha256:[0-9a-f]+").expect("valid pattern"));
    let text = digest.replace_all(text, "sha256:…");
    let text = text.as_ref();
    if let Some(p) = pattern_in(text) {
        bail!(
            "personal data would be published: {what} holds {}; nothing was written or sent",
            p.what
        );
    }
    load_personal_values(conn, warehouse, jobs)?;
    if let Some((origin, v)) = personal_value_in(conn, "SELECT $1 AS s", &[&text])? {
        bail!(
            "personal data would be published: {what} holds a value of {origin}, declared personal = true: {}; nothing was written or sent",
            masked(&v)
        );
    }
    Ok(())
}

/// The first lake personal value among the strings `leaves` (a query with a column `s`)
/// select: equal to a value, or containing a word-like one long enough not to be a common
/// word. Returns (origin, value).
fn personal_value_in(
    conn: &duck::Connection,
    leaves: &str,
    params: &[&dyn duckdb::ToSql],
) -> anyhow::Result<Option<(String, String)>> {
    let n = normalised("l.s");
    Ok(conn
        .query_row(
            &format!(
                "WITH d AS (SELECT DISTINCT {n} AS c FROM ({leaves}) AS l WHERE l.s IS NOT NULL), \
                 hit AS ( \
                   (SELECT p.origin, p.v FROM d JOIN chiso_personal AS p ON d.c = p.v LIMIT 1) \
                   UNION ALL \
                   (SELECT p.origin, p.v FROM d JOIN chiso_personal_words AS p ON contains(d.c, p.v) LIMIT 1) \
                   UNION ALL \
                   (SELECT p.origin, p.v FROM (SELECT unnest(regexp_extract_all(d.c, '[0-9]{{9,}}')) AS n FROM d) AS x \
                      JOIN chiso_personal AS p ON x.n = p.v LIMIT 1)) \
                 SELECT origin, v FROM hit LIMIT 1"
            ),
            params,
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// A column type that can carry text: strings, JSON, and lists, structs, maps and unions
/// of anything (their string leaves are scanned).
fn text_bearing(ty: &str) -> Option<bool> {
    let ty = ty.to_ascii_uppercase();
    // Strings, and whole numbers (an ID number stored as one): scanned as written.
    if ty == "VARCHAR"
        || [
            "TINYINT",
            "SMALLINT",
            "INTEGER",
            "BIGINT",
            "HUGEINT",
            "UTINYINT",
            "USMALLINT",
            "UINTEGER",
            "UBIGINT",
            "UHUGEINT",
        ]
        .contains(&ty.as_str())
        || ty.starts_with("DECIMAL")
        || ty.starts_with("ENUM")
    {
        return Some(true);
    }
    (ty.contains("VARCHAR")
        || ty.starts_with("JSON")
        || ty.starts_with("STRUCT")
        || ty.starts_with("MAP")
        || ty.starts_with("UNION")
        || ty.ends_with("[]")
        || ty.ends_with(']'))
    .then_some(false)
}

/// The personal column names: the job files' `personal = true` columns, and the model
/// columns the build found personal (renamed from one, or marked `meta: {personal: true}`).
fn personal_columns(
    conn: &duck::Connection,
    jobs: &[JobConfig],
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = jobs
        .iter()
        .flat_map(|j| {
            j.dataset
                .columns
                .iter()
                .filter(|c| c.personal)
                .map(move |c| {
                    (
                        c.name.clone(),
                        format!("{}.{}, declared personal = true", j.name, c.name),
                    )
                })
        })
        .collect();
    if duck::attached_table_exists(conn, "wh", "_chiso_personal_columns")? {
        let mut stmt =
            conn.prepare("SELECT column_name, model || '.' || column_name || ', ' || origin FROM wh._chiso_personal_columns")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        for r in rows {
            out.push(r?);
        }
    }
    Ok(out)
}

/// Personal data in the rows of `period` the marts would publish: an error naming the column,
/// the unit and the files, or nothing.
pub fn personal_data(
    conn: &duck::Connection,
    warehouse: &Path,
    jobs: &[JobConfig],
    period: &str,
) -> anyhow::Result<()> {
    let personal_columns = personal_columns(conn, jobs)?;
    for (mart, _, _) in ledger::PUBLISHED {
        for col in ledger::columns(conn, Some("wh"), mart)? {
            if let Some((_, why)) = personal_columns
                .iter()
                .find(|(pc, _)| pc.eq_ignore_ascii_case(&col))
            {
                bail!(
                    "personal data would be published: column {col} of {mart} is named like {why}; it would go into {}; nothing was written or sent",
                    files_of(mart)
                );
            }
        }
    }
    load_personal_values(conn, warehouse, jobs)?;
    for (mart, _, _) in ledger::PUBLISHED {
        for (col, ty) in ledger::column_types(conn, Some("wh"), mart)? {
            let Some(plain) = text_bearing(&ty) else {
                continue;
            };
            // Every string the column holds for the period, with its unit: the value itself,
            // or each string leaf of a list, struct, map or JSON value.
            let leaves = if plain {
                format!(
                    "SELECT unit_id AS u, CAST(\"{col}\" AS VARCHAR) AS s FROM wh.{mart} WHERE period = $1"
                )
            } else {
                // Every scalar inside, and every key (a map's or a JSON object's).
                format!(
                    "SELECT m.unit_id AS u, t.value ->> '$' AS s FROM wh.{mart} AS m, json_tree(to_json(m.\"{col}\")) AS t \
                     WHERE m.period = $1 AND t.type NOT IN ('OBJECT', 'ARRAY') \
                     UNION ALL \
                     SELECT m.unit_id AS u, t.key AS s FROM wh.{mart} AS m, json_tree(to_json(m.\"{col}\")) AS t \
                     WHERE m.period = $1 AND t.key IS NOT NULL"
                )
            };
            if let Some((origin, v)) = personal_value_in(conn, &leaves, &[&period])? {
                let unit: Option<String> = conn
                    .query_row(
                        &format!(
                            "SELECT min(u) FROM ({leaves}) AS l WHERE contains({}, $2)",
                            normalised("l.s")
                        ),
                        duckdb::params![period, v],
                        |r| r.get(0),
                    )
                    .unwrap_or(None);
                bail!(
                    "personal data would be published: column {col} of {mart} (unit {}, period {period}) holds a value of {origin}, declared personal = true: {}; it would go into {}; nothing was written or sent",
                    unit.as_deref().unwrap_or("?"),
                    masked(&v),
                    files_of(mart)
                );
            }
            let mut stmt = conn.prepare(&format!(
                "SELECT DISTINCT u, nfc_normalize(s) FROM ({leaves}) AS l WHERE s IS NOT NULL"
            ))?;
            let values: Vec<(String, String)> = stmt
                .query_map([period], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            for (unit, v) in values {
                if let Some(p) = pattern_in(&v) {
                    bail!(
                        "personal data would be published: column {col} of {mart} (unit {unit}, period {period}) holds {}: {}; it would go into {}; nothing was written or sent",
                        p.what,
                        masked(&v),
                        files_of(mart)
                    );
                }
            }
        }
    }
    Ok(())
}

/// The lake's personal values (`chiso_personal`, normalised as [`normalised`] says) and the
/// word-like ones among them (`chiso_personal_words`), as temporary tables of `conn`, from the
/// files committed when first asked: a publish of several periods reads the lake once.
fn load_personal_values(
    conn: &duck::Connection,
    warehouse: &Path,
    jobs: &[JobConfig],
) -> anyhow::Result<()> {
    let loaded: bool = conn.query_row(
        "SELECT count(*) > 0 FROM duckdb_tables() WHERE temporary AND table_name = 'chiso_personal_words'",
        [],
        |r| r.get(0),
    )?;
    if loaded {
        return Ok(());
    }
    conn.execute_batch("CREATE OR REPLACE TEMP TABLE chiso_personal (v VARCHAR, origin VARCHAR);")?;
    // The ledger's connection runs on one thread; reading eleven million versions and steps
    // for their distinct personal values is the guard's main cost, and both cores help.
    conn.execute_batch("SET threads = 2;")?;
    let lake = snapshot::read(warehouse, jobs)?;
    for job in jobs {
        let files = lake.get(&job.dataset.key()).cloned().unwrap_or_default();
        if files.is_empty() {
            continue;
        }
        let list = files
            .iter()
            .map(|f| duck::lit(f))
            .collect::<Vec<_>>()
            .join(", ");
        for c in job.dataset.columns.iter().filter(|c| c.personal) {
            // Distinct values first, then normalised: a million distinct ID numbers, not
            // eleven million versions and steps, go through NFC.
            let v = normalised("r.raw");
            conn.execute_batch(&format!(
                "INSERT INTO chiso_personal SELECT DISTINCT {v}, {origin} \
                 FROM (SELECT DISTINCT CAST(\"{col}\" AS VARCHAR) AS raw \
                       FROM read_parquet([{list}], union_by_name = true) WHERE \"{col}\" IS NOT NULL) AS r \
                 WHERE length({v}) >= 3;",
                col = c.name,
                origin = duck::lit(&format!("{}.{}", job.name, c.name)),
            ))
            .with_context(|| format!("reading {}.{} from the lake", job.name, c.name))?;
        }
    }
    // Looked for inside longer text: names of 8 characters or more — but no name that is part
    // of a unit's name in the registry (a person named like a district would otherwise block
    // every publication of that unit). Numbers of 9 digits or more (a tax code, an ID) are
    // found inside text by taking its digit runs and joining them with the values (a hash
    // join; a containment test of a million ID numbers against every string costs seconds).
    conn.execute_batch(&format!(
        "CREATE OR REPLACE TEMP TABLE chiso_personal_words AS SELECT DISTINCT v, origin FROM chiso_personal \
         WHERE length(v) >= 8 AND NOT regexp_full_match(v, '[0-9 .+()-]+');
         SET threads = 1;
         DELETE FROM chiso_personal_words AS p WHERE EXISTS \
           (SELECT 1 FROM (SELECT DISTINCT {n} AS n FROM wh.dim_units WHERE unit_name IS NOT NULL) AS u \
            WHERE contains(u.n, p.v));",
        n = normalised("unit_name")
    ))?;
    Ok(())
}

/// The warnings a final publication of `period` must have accepted.
pub fn warnings(
    conn: &duck::Connection,
    warehouse: &Path,
    jobs: &[JobConfig],
    cfg: &PublishConfig,
    basis: &super::revision::Basis,
) -> anyhow::Result<Vec<Warning>> {
    let period = basis.period.as_str();
    let mut out = Vec::new();
    // Never freeze from a stale warehouse: the last build failed (the warehouse is the build
    // before it), or rows landed after the published build read the lake.
    let (newest, published) = crate::models::build::latest_builds(warehouse)?;
    if let Some(n) = newest.filter(|n| !n.published) {
        out.push(Warning {
            kind: "stale_warehouse".into(),
            message: format!(
                "the last build ({}, started {}) failed ({}); the warehouse is the build before it ({}): fix and build first",
                n.build_id,
                n.started_at,
                n.error.as_deref().unwrap_or("see chiso status"),
                published.map_or_else(|| basis.build_id.clone(), |p| p.build_id)
            ),
            units: Vec::new(),
            blocking: true,
        });
    }
    // Rows committed after the lake position the build read (its log entries past the one
    // it recorded); a warehouse built before positions were recorded: after its start.
    let landed = match super::revision::landed_after_position(conn, warehouse, jobs)? {
        Some(l) => l,
        None => super::revision::landed_between(
            warehouse,
            jobs,
            Some(&basis.build_started_at),
            &crate::time::now_rfc3339(),
        )?,
    };
    if !landed.is_empty() {
        out.push(Warning {
            kind: "stale_warehouse".into(),
            message: format!(
                "rows landed after the build this reads ({}, started {}): {}; build first",
                basis.build_id,
                basis.build_started_at,
                landed
                    .iter()
                    .map(|(job, rows)| format!("{job} {rows}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            units: Vec::new(),
            blocking: true,
        });
    }
    let units_where = |sql: &str, params: &[&dyn duckdb::ToSql]| -> anyhow::Result<Vec<String>> {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map(params, |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    };
    // The change as the revision would publish it: against the previous period as published.
    let published_previous = super::revision::published_previous(conn, period)?;
    let candidate = super::revision::candidate_units(published_previous.as_ref());
    let previous_period = super::revision::previous_period(conn, period)?;
    let units: i64 = conn.query_row(
        "SELECT count(*) FROM wh.mart_index_unit_period WHERE period = ?",
        [period],
        |r| r.get(0),
    )?;
    let chance = super::chance::Chance::new(cfg.movement_sigmas, units);
    if let Some(prev) = &previous_period {
        out.extend(super::chance::movement(
            conn,
            &candidate,
            published_previous.as_ref(),
            prev,
            cfg,
            &chance,
            period,
        )?);
    }
    // The grace and the feeds still short of it, as the build judged the period
    // (int_period_judgement, var grace_days): one rule for the status and for this warning.
    let (final_from, grace_days): (String, i64) = conn
        .query_row(
            "SELECT strftime(final_from, '%Y-%m-%d %H:%M'), grace_days \
             FROM wh.int_period_judgement WHERE period = ?",
            [period],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .context("reading the period's grace from int_period_judgement")?;
    let short = units_where(
        "SELECT f.feed || ' (' || coalesce('data to ' || strftime(f.data_through, '%Y-%m-%d %H:%M'), 'no data') \
           || CASE WHEN f.waits_for_grace THEN '' ELSE '; needs the report of the period''s last month' END || ')' \
         FROM wh.int_period_judgement AS j, unnest(j.feeds_waiting) AS w(feed) \
         JOIN wh.int_feed_watermarks AS f ON f.feed = w.feed \
         WHERE j.period = ? ORDER BY f.feed",
        &[&period],
    )?;
    if !short.is_empty() {
        out.push(Warning {
            kind: "incomplete_feed".into(),
            message: format!(
                "feeds whose data has not reached the period's end plus {grace_days} days ({final_from}): {}",
                short.join(", ")
            ),
            units: Vec::new(),
            blocking: true,
        });
    }
    if let Some(prev) = previous_period {
        // Dossier counts that fell further than chance allows, units missing from the period.
        out.extend(super::chance::counts(conn, period, &prev, &chance)?);
    }
    Ok(out)
}
