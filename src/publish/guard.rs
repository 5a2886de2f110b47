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
//! from the previous period; a feed's data has not reached the period's end plus the grace
//! days; a unit that had dossiers in the previous period has none.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{bail, Context};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::config::{JobConfig, PublishConfig};
use crate::duck;
use crate::ledger;
use crate::models::snapshot;
use duckdb::OptionalExt;

/// Units listed in a warning shown to a person (all are kept in the ledger and the manifest).
const SHOWN: usize = 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Warning {
    /// `stale_warehouse`, `moved`, `incomplete_feed`, `units_without_dossiers`, or the note
    /// `not_judged`.
    pub kind: String,
    pub message: String,
    #[serde(default)]
    pub units: Vec<String>,
    /// Whether it blocks a final revision unless accepted. A note (`not_judged`: units whose
    /// move chance explains) is shown and recorded and blocks nothing.
    #[serde(default = "blocks")]
    pub blocking: bool,
}

fn blocks() -> bool {
    true
}

impl Warning {
    /// One line: the message and the first units.
    pub fn line(&self) -> String {
        if self.units.is_empty() {
            return self.message.clone();
        }
        let more = self.units.len().saturating_sub(SHOWN);
        format!(
            "{}: {}{}",
            self.message,
            self.units[..self.units.len().min(SHOWN)].join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )
    }
}

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
    let previous_period: Option<String> = conn
        .query_row(
            "SELECT previous_period FROM wh.int_period_judgement WHERE period = ?",
            [period],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    if let Some(prev) = &previous_period {
        out.extend(movement(
            conn,
            &candidate,
            published_previous.as_ref(),
            prev,
            cfg,
            period,
        )?);
    }
    // The grace and the feeds still short of it, as the build judged the period
    // (int_period_judgement, var grace_days): one rule for the status and for this warning.
    let (final_from, grace_days, previous): (String, i64, Option<String>) = conn
        .query_row(
            "SELECT strftime(final_from, '%Y-%m-%d %H:%M'), grace_days, previous_period \
             FROM wh.int_period_judgement WHERE period = ?",
            [period],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
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
    if let Some(prev) = previous {
        // A unit the registry keeps at the period's end that received quiet_floor dossiers or
        // more and then none: not chance. One that received a few and then none may be; it is
        // counted in the note, not judged. A unit the registry closed has no row in the
        // period: not looked for (its dossiers go to its successor or its parent).
        let floor = quiet_floor(cfg.movement_sigmas);
        let gone: Vec<(String, i64)> = {
            let mut stmt = conn.prepare(
                "SELECT p.unit_id, CAST(p.denominator AS BIGINT) FROM wh.mart_index_indicator AS p \
                 SEMI JOIN wh.mart_index_unit_period AS u ON u.unit_id = p.unit_id AND u.period = $1 \
                 LEFT JOIN wh.mart_index_indicator AS c \
                   ON c.unit_id = p.unit_id AND c.indicator = p.indicator AND c.period = $1 \
                 WHERE p.period = $2 AND p.indicator = 'ONLINE_DOSSIER_SHARE' AND p.denominator > 0 \
                   AND coalesce(c.denominator, 0) = 0 \
                 ORDER BY 1",
            )?;
            let rows = stmt.query_map([period, prev.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let (judged, few): (Vec<_>, Vec<_>) = gone.into_iter().partition(|(_, n)| *n >= floor);
        if !judged.is_empty() {
            out.push(Warning {
                kind: "units_without_dossiers".into(),
                message: format!(
                    "{} unit(s) received {floor} or more dossiers in {prev} and none in {period}",
                    judged.len()
                ),
                units: judged
                    .into_iter()
                    .map(|(u, n)| format!("{u} ({n})"))
                    .collect(),
                blocking: true,
            });
        }
        if !few.is_empty() {
            out.push(Warning {
                kind: "not_judged".into(),
                message: format!(
                    "{} small unit(s) received fewer than {floor} dossiers in {prev} and none in {period}: not judged, as so few can fall to none by chance",
                    few.len()
                ),
                units: few.into_iter().map(|(u, n)| format!("{u} ({n})")).collect(),
                blocking: false,
            });
        }
    }
    Ok(out)
}

/// The smallest count whose fall to zero chance does not explain, at `sigmas`: a count of `n`
/// (Poisson, mean `n`) is 0 with probability e^-n, judged when that is rarer than a move
/// beyond `sigmas` standard errors (the normal tail, ½ erfc(z/√2)). 7 at 3 sigmas (e^-7 =
/// 0.09 % against 0.13 %); 1 at 0, which judges every fall.
pub fn quiet_floor(sigmas: f64) -> i64 {
    let tail = 0.5 * libm::erfc(sigmas / std::f64::consts::SQRT_2);
    ((-tail.ln()).floor() as i64).saturating_add(1)
}

/// The units whose total moved more than `max_change_points` from the previous period beyond
/// what chance allows (a blocking `moved` warning), and those whose move chance or an empty
/// count explains (a `not_judged` note that blocks nothing).
///
/// A unit's move is judged like for like: the points of the indicators it was scored on in
/// both periods (denominator above 0 in both, or [`quiet_floor`] and more in one and none in
/// the other: a count that large falling to zero is news, not chance; except procedures to
/// announce, which come in batches, so a month with none is not news). An indicator with
/// nothing to score in one period (no procedure to announce, a handful of petitions and then
/// none) moves a unit's total by its whole maximum and says nothing about its service.
/// The move must also exceed `movement_sigmas` times its sampling spread: each indicator's
/// points are `max × ratio / target` of a proportion of `denominator` records, whose variance
/// is `(max / target)² × p (1 − p) / n`, with `p` taken as `(x + 1) / (n + 2)` so that 0 of 2
/// is not certainty; the spread is the root of the sum over both periods' indicators.
fn movement(
    conn: &duck::Connection,
    candidate: &str,
    published_previous: Option<&(String, i64)>,
    prev: &str,
    cfg: &PublishConfig,
    period: &str,
) -> anyhow::Result<Vec<Warning>> {
    // The previous period's counts as published, when it was (the change is against those).
    let previous_rows = match published_previous {
        Some((p, rev)) => format!(
            "SELECT * FROM pub_index_indicator WHERE period = {} AND revision = {rev}",
            duck::lit(p)
        ),
        None => format!(
            "SELECT * FROM wh.mart_index_indicator WHERE period = {}",
            duck::lit(prev)
        ),
    };
    let sql = format!(
        "WITH cand AS ({candidate}), \
         counted AS ( \
           SELECT i.*, coalesce(m.period_attribution, '') AS attribution, CASE WHEN i.points IS NOT NULL AND i.max_points > 0 AND i.denominator > 0 AND m.target > 0 \
             THEN power(i.max_points / m.target, 2) * ((i.numerator + 1) / (i.denominator + 2)) \
                  * (1 - (i.numerator + 1) / (i.denominator + 2)) / i.denominator ELSE 0 END AS variance \
           FROM (SELECT unit_id, indicator, methodology, numerator, denominator, points, max_points, 'now' AS side \
                   FROM wh.mart_index_indicator WHERE period = $1 \
                 UNION ALL \
                 SELECT unit_id, indicator, methodology, numerator, denominator, points, max_points, 'before' \
                   FROM ({previous_rows})) AS i \
           LEFT JOIN wh.methodology AS m ON m.methodology = i.methodology AND m.indicator = i.indicator), \
         paired AS ( \
           SELECT a.unit_id, \
             (coalesce(a.denominator, 0) > 0 AND coalesce(b.denominator, 0) > 0) \
               OR (a.attribution <> 'announcement' \
                   AND greatest(coalesce(a.denominator, 0), coalesce(b.denominator, 0)) >= $3 \
                   AND least(coalesce(a.denominator, 0), coalesce(b.denominator, 0)) = 0) AS alike, \
             coalesce(a.points, 0) - coalesce(b.points, 0) AS moved, a.variance + b.variance AS variance \
           FROM counted AS a JOIN counted AS b \
             ON b.unit_id = a.unit_id AND b.indicator = a.indicator AND a.side = 'now' AND b.side = 'before'), \
         per_unit AS ( \
           SELECT unit_id, coalesce(sum(moved) FILTER (alike), 0) AS alike_move, \
                  sqrt(coalesce(sum(variance) FILTER (alike), 0)) AS spread \
           FROM paired GROUP BY unit_id) \
         SELECT c.unit_id, c.change_from_previous, coalesce(u.alike_move, c.change_from_previous), coalesce(u.spread, 0) \
         FROM cand AS c LEFT JOIN per_unit AS u USING (unit_id) \
         WHERE abs(c.change_from_previous) > $2 \
         ORDER BY abs(c.change_from_previous) DESC, c.unit_id"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(
        duckdb::params![
            period,
            cfg.max_change_points,
            quiet_floor(cfg.movement_sigmas)
        ],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, f64>(1)?,
                r.get::<_, f64>(2)?,
                r.get::<_, f64>(3)?,
            ))
        },
    )?;
    let (mut moved, mut chance, mut empty) = (Vec::new(), Vec::new(), Vec::new());
    for row in rows {
        let (unit, change, alike, spread) = row?;
        if alike.abs() <= cfg.max_change_points {
            empty.push(format!("{unit} ({change:+.2}; like for like {alike:+.2})"));
        } else if alike.abs() <= cfg.movement_sigmas * spread {
            chance.push(format!("{unit} ({change:+.2}; spread ±{spread:.2})"));
        } else {
            moved.push(format!("{unit} ({change:+.2})"));
        }
    }
    let mut out = Vec::new();
    if !moved.is_empty() {
        out.push(Warning {
            kind: "moved".into(),
            message: format!(
                "{} unit(s) moved more than {} points from {prev} on the indicators scored in both periods, beyond {} times the sampling spread of their counts",
                moved.len(),
                cfg.max_change_points,
                cfg.movement_sigmas
            ),
            units: moved,
            blocking: true,
        });
    }
    if !chance.is_empty() || !empty.is_empty() {
        let mut why = Vec::new();
        if !chance.is_empty() {
            why.push(format!(
                "{} within {} times the sampling spread of their few records",
                chance.len(),
                cfg.movement_sigmas
            ));
        }
        if !empty.is_empty() {
            why.push(format!(
                "{} by indicators with nothing to score in one of the periods (no procedure to announce, no petition)",
                empty.len()
            ));
        }
        out.push(Warning {
            kind: "not_judged".into(),
            message: format!(
                "{} unit(s) moved more than {} points from {prev} as chance allows, not judged: {}",
                chance.len() + empty.len(),
                cfg.max_change_points,
                why.join("; ")
            ),
            units: chance.into_iter().chain(empty).collect(),
            blocking: false,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quiet_floor_is_where_a_fall_to_zero_is_rarer_than_the_sigmas() {
        // e^-6 = 0.25 % and e^-7 = 0.09 % against the 3-sigma tail of 0.135 %: 7.
        assert_eq!(quiet_floor(3.0), 7);
        // 2 sigmas, 2.28 %: e^-3 = 4.98 %, e^-4 = 1.83 %: 4.
        assert_eq!(quiet_floor(2.0), 4);
        // 0 judges every fall.
        assert_eq!(quiet_floor(0.0), 1);
        assert!(quiet_floor(1e6) > 1_000_000);
    }

    /// Four units each move more than 15 points from 2026-09 to 2026-10 on ON_TIME_HANDLING
    /// (max 20, target 1). Worked by hand:
    /// - BIG, 380 of 400 then 60 of 400: 20 × (0.15 − 0.95) = −16 points. p̃ = 381/402 and
    ///   61/402, variance 400 × (0.9478 × 0.0522 / 400 + 0.1517 × 0.8483 / 400) = 0.1782,
    ///   spread 0.42: −16 is 38 spreads. Judged: `moved`.
    /// - SMALL, 2 of 2 then 0 of 2: −20 points. p̃ = 3/4 and 1/4, variance 400 × (0.1875 / 2)
    ///   × 2 = 75, spread 8.66; 3 spreads are 25.98 > 20: chance. A note.
    /// - EMPTY, 3 of 3 then no dossier (the `zero` rule gives 0 points): −20 points, all from
    ///   an indicator with nothing to score in October, whose 3 September dossiers are fewer
    ///   than the floor of 7; like for like it moved 0. A note.
    /// - BATCH, 15 procedures announced then none (16 points, then not scored): −16 points
    ///   from a batch of announcements; not news at any floor. A note.
    ///
    /// At `movement_sigmas = 0` every move on records is judged: the first three are `moved`.
    #[test]
    fn a_move_is_judged_beyond_the_spread_of_its_counts_and_like_for_like() {
        let conn = duck::in_memory(1).unwrap();
        conn.execute_batch(
            "ATTACH ':memory:' AS wh;
             CREATE TABLE wh.methodology AS SELECT 'm' AS methodology, 'ON_TIME_HANDLING' AS indicator, 1.0::DOUBLE AS target, 'handled_or_open' AS period_attribution
               UNION ALL SELECT 'm', 'ANNOUNCED', 1.0, 'announcement';
             CREATE TABLE wh.mart_index_indicator (unit_id VARCHAR, period VARCHAR, indicator VARCHAR, methodology VARCHAR,
               numerator DOUBLE, denominator DOUBLE, points DOUBLE, max_points DOUBLE);
             INSERT INTO wh.mart_index_indicator VALUES
               ('BIG', '2026-09', 'ON_TIME_HANDLING', 'm', 380, 400, 19, 20),
               ('BIG', '2026-10', 'ON_TIME_HANDLING', 'm', 60, 400, 3, 20),
               ('SMALL', '2026-09', 'ON_TIME_HANDLING', 'm', 2, 2, 20, 20),
               ('SMALL', '2026-10', 'ON_TIME_HANDLING', 'm', 0, 2, 0, 20),
               ('EMPTY', '2026-09', 'ON_TIME_HANDLING', 'm', 3, 3, 20, 20),
               ('EMPTY', '2026-10', 'ON_TIME_HANDLING', 'm', 0, 0, 0, 20),
               ('STILL', '2026-09', 'ON_TIME_HANDLING', 'm', 9, 10, 18, 20),
               ('STILL', '2026-10', 'ON_TIME_HANDLING', 'm', 8, 10, 16, 20),
               ('BATCH', '2026-09', 'ANNOUNCED', 'm', 15, 15, 16, 16),
               ('BATCH', '2026-10', 'ANNOUNCED', 'm', 0, 0, NULL, 16);",
        )
        .unwrap();
        let candidate = "SELECT * FROM (VALUES ('BIG', -16.0), ('SMALL', -20.0), ('EMPTY', -20.0), ('STILL', -2.0), ('BATCH', -16.0)) \
                         AS t(unit_id, change_from_previous) WHERE $1 = '2026-10'";
        let judge = |sigmas: f64| {
            let cfg = PublishConfig {
                movement_sigmas: sigmas,
                ..PublishConfig::default()
            };
            movement(&conn, candidate, None, "2026-09", &cfg, "2026-10").unwrap()
        };
        let w = judge(3.0);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!((w[0].kind.as_str(), w[0].blocking), ("moved", true));
        assert_eq!(w[0].units, vec!["BIG (-16.00)"]);
        assert_eq!((w[1].kind.as_str(), w[1].blocking), ("not_judged", false));
        assert_eq!(
            w[1].units,
            vec![
                "SMALL (-20.00; spread ±8.66)",
                "EMPTY (-20.00; like for like +0.00)",
                "BATCH (-16.00; like for like +0.00)"
            ]
        );
        assert!(
            w[1].message
                .contains("3 unit(s) moved more than 15 points from 2026-09 as chance allows")
                && w[1]
                    .message
                    .contains("1 within 3 times the sampling spread")
                && w[1]
                    .message
                    .contains("2 by indicators with nothing to score"),
            "{}",
            w[1].message
        );
        // At 0 every move on records is judged; a batch of announcements, then none, is not.
        let w = judge(0.0);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].kind, "moved");
        assert_eq!(
            w[0].units,
            vec!["EMPTY (-20.00)", "SMALL (-20.00)", "BIG (-16.00)"]
        );
        assert_eq!(w[1].units, vec!["BATCH (-16.00; like for like +0.00)"]);
    }
}
