//! A period's candidate revision (the published warehouse's mart rows for it), how it compares
//! with the period's latest revision, the change note against the previous one, and recording
//! it in the ledger.
//!
//! The connection's main database is the ledger; the published warehouse is attached
//! read-only as `wh`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{JobConfig, TargetConfig};
use crate::duck;
use crate::lake::commit::JobState;
use crate::ledger::{self, PUBLISHED};
use duckdb::OptionalExt;

/// The revision number of a period's preview. Finals are numbered 1, 2, … among themselves
/// (revision 1 is the first official figure); a period has at most one preview, the newest,
/// replaced by the next and deleted once the period is published final.
pub const PREVIEW: i64 = 0;

/// What a revision rests on, read from the published warehouse.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Basis {
    pub period: String,
    /// `final` once the data passed the period's end plus the grace days, else `provisional`.
    pub mart_status: String,
    pub methodology: String,
    pub data_watermark: Option<String>,
    pub sql_digest: String,
    pub build_id: String,
    pub build_started_at: String,
    pub units: i64,
}

/// The latest revision of a period.
#[derive(Debug, Clone)]
pub struct Latest {
    pub revision: i64,
    pub status: String,
    pub methodology: Option<String>,
    pub sql_digest: Option<String>,
    pub build_id: Option<String>,
    pub build_started_at: Option<String>,
    pub data_watermark: Option<String>,
    /// The lake position its build read, as pinned (JSON; absent in older ledgers).
    pub lake_position: Option<String>,
}

impl Latest {
    /// When the build of this revision had read each job's dataset up to (a local timestamp),
    /// from its pinned lake position; any job not pinned, from when that build started.
    fn read_through(&self, job: &str) -> Option<String> {
        let pinned = self
            .lake_position
            .as_deref()
            .and_then(|j| serde_json::from_str::<Vec<serde_json::Value>>(j).ok())
            .and_then(|list| {
                list.into_iter().find_map(|p| {
                    (p["job"] == job)
                        .then(|| p["stamped_through"].as_str().map(String::from))
                        .flatten()
                })
            });
        pinned.or_else(|| {
            self.build_started_at
                .as_deref()
                .map(|s| s.chars().take(19).collect())
        })
    }
}

/// Why a revision differs from the one before, and what moved.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChangeNote {
    pub previous_revision: i64,
    /// Why, in a word each, sorted: `late_data` (records touching the period landed after the
    /// previous revision's build), `registry` (the unit tree, names, the procedure catalogue or
    /// the calendar changed), `methodology` (another methodology version), `recomputation`
    /// (the models' SQL changed, or the same data and SQL rebuilt), `correction` (an explicit
    /// correction of an error).
    #[serde(default)]
    pub reason_codes: Vec<String>,
    pub reasons: Vec<String>,
    pub units: Vec<UnitChange>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UnitChange {
    pub unit_id: String,
    pub unit_name: Option<String>,
    /// Totals before and after (`None`: the unit was not in that revision).
    pub total_from: Option<f64>,
    pub total_to: Option<f64>,
    /// Rank among siblings before and after.
    #[serde(default)]
    pub rank_from: Option<i64>,
    #[serde(default)]
    pub rank_to: Option<i64>,
    /// What else of its published row moved: `name`, `place in the tree`, `status`, `change
    /// from the previous period`.
    #[serde(default)]
    pub also: Vec<String>,
    pub indicators: Vec<IndicatorChange>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndicatorChange {
    pub indicator: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub points_from: Option<f64>,
    pub points_to: Option<f64>,
}

impl ChangeNote {
    /// The note as a reader wants it: the reasons, then each unit's move and its indicators.
    pub fn text(&self) -> String {
        let mut out = format!(
            "Changes since revision {} [{}]: {}.\n",
            self.previous_revision,
            self.reason_codes.join(", "),
            self.reasons.join("; ")
        );
        for u in &self.units {
            let name = u.unit_name.as_deref().unwrap_or("");
            let delta = match (u.total_from, u.total_to) {
                (Some(a), Some(b)) => format!("{a:.2} → {b:.2} ({:+.2})", b - a),
                (None, Some(b)) => format!("new, {b:.2}"),
                (Some(a), None) => format!("{a:.2}, no longer published"),
                (None, None) => "unchanged".to_string(),
            };
            out.push_str(&format!("- {} {name}: total {delta}", u.unit_id));
            if let (Some(a), Some(b)) = (u.rank_from, u.rank_to) {
                if a != b {
                    out.push_str(&format!("; rank {a} → {b}"));
                }
            }
            if !u.also.is_empty() {
                out.push_str(&format!("; {} moved", u.also.join(", ")));
            }
            let inds: Vec<String> = u
                .indicators
                .iter()
                .map(|i| {
                    let pts = match (i.points_from, i.points_to) {
                        (Some(a), Some(b)) => format!(", {:+.2} points", b - a),
                        _ => String::new(),
                    };
                    format!(
                        "{} {} → {}{pts}",
                        i.indicator,
                        i.from.as_deref().unwrap_or("-"),
                        i.to.as_deref().unwrap_or("-")
                    )
                })
                .collect();
            if !inds.is_empty() {
                out.push_str(&format!("; {}", inds.join(", ")));
            }
            out.push('\n');
        }
        out
    }
}

/// Reads what the published warehouse holds for `period`, or says which periods it has.
pub fn basis(conn: &duck::Connection, period: &str) -> anyhow::Result<Basis> {
    let row: (i64, Option<String>, Option<String>, Option<String>) = conn.query_row(
        "SELECT count(*), max(status), max(methodology), strftime(max(data_watermark), '%Y-%m-%d %H:%M:%S') \
         FROM wh.mart_index_unit_period WHERE period = ?",
        [period],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    ).context("reading mart_index_unit_period from the published warehouse")?;
    if row.0 == 0 {
        let mut stmt = conn.prepare(
            "SELECT string_agg(DISTINCT period, ', ' ORDER BY period) FROM wh.mart_index_unit_period",
        )?;
        let have: Option<String> = stmt.query_row([], |r| r.get(0))?;
        bail!(
            "period {period} has no rows in the published warehouse's mart_index_unit_period (it has: {})",
            have.unwrap_or_else(|| "none: build first".into())
        );
    }
    // `provisional` sorts after `final`: one provisional row makes the period provisional.
    let mart_status = row.1.unwrap_or_default();
    let (build_id, build_started_at): (String, String) = conn
        .query_row(
            "SELECT build_id, started_at FROM wh._chiso_builds WHERE published \
             ORDER BY finished_at DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .context("reading the published build's record (_chiso_builds)")?;
    Ok(Basis {
        period: period.to_string(),
        mart_status,
        methodology: row.2.unwrap_or_default(),
        data_watermark: row.3,
        sql_digest: sql_digest(conn)?,
        build_id,
        build_started_at,
        units: row.0,
    })
}

/// SHA-256 over every model's name and SQL digest, as the published build recorded them.
fn sql_digest(conn: &duck::Connection) -> anyhow::Result<String> {
    let mut stmt =
        conn.prepare("SELECT model, sql_sha256 FROM wh._chiso_model_sql ORDER BY model")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut h = Sha256::new();
    for row in rows {
        let (m, d) = row?;
        h.update(format!("{m}:{d}\n"));
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The period's latest final revision (`final`), or its preview (`provisional`).
pub fn latest(
    conn: &duck::Connection,
    period: &str,
    status: &str,
) -> anyhow::Result<Option<Latest>> {
    let mut stmt = conn.prepare(
        "SELECT revision, status, methodology, sql_digest, build_id, build_started_at, \
           strftime(data_watermark, '%Y-%m-%d %H:%M:%S'), CAST(lake_position AS VARCHAR) \
         FROM pub_revisions WHERE period = ? AND status = ? \
           AND (revision = 0) = (status = 'provisional') \
         ORDER BY revision DESC LIMIT 1",
    )?;
    let mut rows = stmt.query_map([period, status], |r| {
        Ok(Latest {
            revision: r.get(0)?,
            status: r.get(1)?,
            methodology: r.get(2)?,
            sql_digest: r.get(3)?,
            build_id: r.get(4)?,
            build_started_at: r.get(5)?,
            data_watermark: r.get(6)?,
            lake_position: r.get(7)?,
        })
    })?;
    Ok(rows.next().transpose()?)
}

/// The compared columns of a mart (its measures, [`ledger::MEASURES`], and its key), quoted,
/// or `None` when the ledger's table lacks a measure (one added to the list: the rows differ).
fn compared(
    conn: &duck::Connection,
    mart: &str,
    table: &str,
    presentation: bool,
) -> anyhow::Result<Option<String>> {
    let current = ledger::columns(conn, Some("wh"), mart)?;
    let kept = ledger::columns(conn, None, table)?;
    let key = PUBLISHED
        .iter()
        .find(|(m, _, _)| *m == mart)
        .map_or(&[][..], |(_, _, k)| *k);
    // With the presentation: the name too (a correction of a misspelt name).
    let extra: &[&str] = if presentation && mart == "mart_index_unit_period" {
        &["unit_name"]
    } else {
        &[]
    };
    let cols: Vec<&str> = key
        .iter()
        .copied()
        .chain(
            ledger::measures(mart)
                .iter()
                .chain(extra)
                .copied()
                .filter(|c| current.iter().any(|x| x == c)),
        )
        .collect();
    if kept.is_empty() || cols.iter().any(|c| !kept.iter().any(|k| k == c)) {
        return Ok(None);
    }
    Ok(Some(
        cols.iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", "),
    ))
}

/// The period before `period` (`int_period_judgement.previous_period`) and its latest final
/// revision, when it has one: what a revision's change from the previous period is against.
pub fn published_previous(
    conn: &duck::Connection,
    period: &str,
) -> anyhow::Result<Option<(String, i64)>> {
    let Some(previous) = previous_period(conn, period)? else {
        return Ok(None);
    };
    Ok(latest(conn, &previous, "final")?.map(|l| (previous, l.revision)))
}

/// The period before `period` as the build judged it (`int_period_judgement`), if any.
pub fn previous_period(conn: &duck::Connection, period: &str) -> anyhow::Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT previous_period FROM wh.int_period_judgement WHERE period = ?",
            [period],
            |r| r.get(0),
        )
        .optional()?
        .flatten())
}

/// The unit rows a revision of the period (`$1`) publishes: the mart's, with the change from
/// the previous period taken against the previous period's latest final revision when it has
/// one (what was published, not what the mart now says of it; a unit it did not publish has
/// none), else the mart's.
pub fn candidate_units(previous: Option<&(String, i64)>) -> String {
    match previous {
        None => "SELECT * FROM wh.mart_index_unit_period WHERE period = $1".to_string(),
        Some((p, rev)) => format!(
            "SELECT m.* REPLACE (m.total - pp.total AS change_from_previous) \
             FROM wh.mart_index_unit_period AS m \
             LEFT JOIN (SELECT unit_id, total FROM pub_index_unit_period WHERE period = {} AND revision = {rev}) AS pp \
               USING (unit_id) \
             WHERE m.period = $1",
            duck::lit(p)
        ),
    }
}

/// Whether the marts' rows of `period` equal those of `revision`, measure for measure (and,
/// with `presentation`, name for name: a correction may fix a name).
pub fn equals(
    conn: &duck::Connection,
    period: &str,
    revision: i64,
    presentation: bool,
) -> anyhow::Result<bool> {
    for (mart, table, _) in PUBLISHED {
        let Some(cols) = compared(conn, mart, table, presentation)? else {
            return Ok(false);
        };
        let cur = format!("SELECT {cols} FROM wh.{mart} WHERE period = $1");
        let old = format!("SELECT {cols} FROM {table} WHERE period = $1 AND revision = $2");
        let differing: i64 = conn.query_row(
            &format!(
                "SELECT count(*) FROM (({cur} EXCEPT ALL {old}) UNION ALL ({old} EXCEPT ALL {cur}))"
            ),
            duckdb::params![period, revision],
            |r| r.get(0),
        )?;
        if differing > 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What moved between `previous` (a revision in the ledger) and the marts' rows now, and why.
pub fn change_note(
    conn: &duck::Connection,
    basis: &Basis,
    previous: &Latest,
    status: &str,
) -> anyhow::Result<ChangeNote> {
    let period = basis.period.as_str();
    let rev = previous.revision;
    let mut units: BTreeMap<String, UnitChange> = BTreeMap::new();
    // Every unit whose published row moves: its total, its rank, its name or place in the tree,
    // its status, its change from the previous period (taken against what was published of
    // it, as the revision will carry it), or it appears or goes.
    let candidate = candidate_units(published_previous(conn, period)?.as_ref());
    {
        let mut stmt = conn.prepare(&format!(
            "SELECT coalesce(m.unit_id, p.unit_id), coalesce(m.unit_name, p.unit_name), p.total, m.total, \
               p.rank_among_siblings, m.rank_among_siblings, \
               p.unit_name IS DISTINCT FROM m.unit_name, \
               p.parent_unit_id IS DISTINCT FROM m.parent_unit_id OR p.unit_level IS DISTINCT FROM m.unit_level, \
               p.status IS DISTINCT FROM m.status, \
               round(p.change_from_previous, 9) IS DISTINCT FROM round(m.change_from_previous, 9), \
               p.unit_id IS NOT NULL AND m.unit_id IS NOT NULL \
             FROM (SELECT * FROM pub_index_unit_period WHERE period = $1 AND revision = $2) AS p \
             FULL JOIN ({candidate}) AS m USING (unit_id) \
             WHERE p.unit_id IS NULL OR m.unit_id IS NULL OR p.total IS DISTINCT FROM m.total \
                OR p.rank_among_siblings IS DISTINCT FROM m.rank_among_siblings \
                OR p.unit_name IS DISTINCT FROM m.unit_name OR p.parent_unit_id IS DISTINCT FROM m.parent_unit_id \
                OR p.unit_level IS DISTINCT FROM m.unit_level OR p.status IS DISTINCT FROM m.status \
                OR round(p.change_from_previous, 9) IS DISTINCT FROM round(m.change_from_previous, 9)"
        ))?;
        let rows = stmt.query_map(duckdb::params![period, rev], |r| {
            let both: bool = r.get(10)?;
            let (from, to): (Option<f64>, Option<f64>) = (r.get(2)?, r.get(3)?);
            let same = from.is_some() && from == to;
            let mut also = Vec::new();
            for (i, what) in [
                (6, "name"),
                (7, "place in the tree"),
                (8, "status"),
                (9, "change from the previous period"),
            ] {
                // A total that moved moves its change from the previous period too.
                if both && r.get::<_, bool>(i)? && (i != 9 || same) {
                    also.push(what.to_string());
                }
            }
            Ok(UnitChange {
                unit_id: r.get(0)?,
                unit_name: r.get(1)?,
                // A total that did not move is not shown as a move.
                total_from: if same { None } else { from },
                total_to: if same { None } else { to },
                rank_from: r.get(4)?,
                rank_to: r.get(5)?,
                also,
                indicators: Vec::new(),
            })
        })?;
        for u in rows {
            let u = u?;
            units.insert(u.unit_id.clone(), u);
        }
    }
    {
        let nd = |side: &str| {
            format!(
                "CASE WHEN {side}.indicator IS NULL THEN NULL ELSE \
                   coalesce(cast({side}.numerator AS VARCHAR), '-') || '/' || coalesce(cast({side}.denominator AS VARCHAR), '-') END"
            )
        };
        let sql = format!(
            "SELECT coalesce(m.unit_id, p.unit_id), coalesce(m.indicator, p.indicator), {pf}, {mf}, p.points, m.points \
             FROM (SELECT * FROM pub_index_indicator WHERE period = $1 AND revision = $2) AS p \
             FULL JOIN (SELECT * FROM wh.mart_index_indicator WHERE period = $1) AS m USING (unit_id, indicator) \
             WHERE p.numerator IS DISTINCT FROM m.numerator OR p.denominator IS DISTINCT FROM m.denominator \
                OR p.points IS DISTINCT FROM m.points OR p.indicator IS NULL OR m.indicator IS NULL \
             ORDER BY 1, 2",
            pf = nd("p"),
            mf = nd("m"),
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(duckdb::params![period, rev], |r| {
            Ok((
                r.get::<_, String>(0)?,
                IndicatorChange {
                    indicator: r.get(1)?,
                    from: r.get(2)?,
                    to: r.get(3)?,
                    points_from: r.get(4)?,
                    points_to: r.get(5)?,
                },
            ))
        })?;
        for row in rows {
            let (unit, change) = row?;
            units
                .entry(unit.clone())
                .or_insert_with(|| UnitChange {
                    unit_id: unit,
                    unit_name: None,
                    total_from: None,
                    total_to: None,
                    rank_from: None,
                    rank_to: None,
                    also: Vec::new(),
                    indicators: Vec::new(),
                })
                .indicators
                .push(change);
        }
    }
    let mut reasons = Vec::new();
    let mut codes = std::collections::BTreeSet::new();
    if previous.status != status {
        reasons.push(format!("status {} → {status}", previous.status));
    }
    if previous.methodology.as_deref() != Some(basis.methodology.as_str()) {
        codes.insert("methodology");
        reasons.push(format!(
            "methodology changed ({} → {})",
            previous.methodology.as_deref().unwrap_or("-"),
            basis.methodology
        ));
    }
    if previous.sql_digest.as_deref() != Some(basis.sql_digest.as_str()) {
        codes.insert("recomputation");
        reasons.push(format!(
            "model SQL changed (digest {} → {})",
            short(previous.sql_digest.as_deref().unwrap_or("-")),
            short(&basis.sql_digest)
        ));
    }
    // Late data: the records behind the period's numbers that landed after the previous
    // revision's build read the lake (not every row landed since, most of which is about
    // other periods).
    let touching = landed_touching(conn, period, previous)?;
    let late: Vec<String> = touching
        .iter()
        .filter(|(what, n)| *n > 0 && !what.starts_with("registry"))
        .map(|(what, n)| format!("{what}: {n}"))
        .collect();
    if !late.is_empty() {
        codes.insert("late_data");
        reasons.push(format!(
            "records of {period} landed after revision {rev} ({})",
            late.join(", ")
        ));
    }
    // The registries: the unit tree (a unit appearing, going, renamed or moved), the
    // procedure catalogue and the calendar the period's dossiers were judged with.
    let tree_moved = units.values().any(|u| {
        (u.total_from.is_none() != u.total_to.is_none())
            || u.also
                .iter()
                .any(|a| a == "name" || a == "place in the tree")
    });
    let references: Vec<String> = touching
        .iter()
        .filter(|(what, n)| *n > 0 && what.starts_with("registry"))
        .map(|(what, n)| format!("{what}: {n}"))
        .collect();
    if tree_moved || !references.is_empty() {
        codes.insert("registry");
        let mut what = references;
        if tree_moved {
            what.push("the unit tree".to_string());
        }
        reasons.push(format!("registries changed ({})", what.join(", ")));
    }
    if codes.is_empty() {
        codes.insert("recomputation");
        reasons.push("rebuilt from the same data and SQL".to_string());
    }
    let mut units: Vec<UnitChange> = units.into_values().collect();
    units.sort_by(|a, b| {
        // The largest move first, to the sixth decimal (sums of doubles differ further down).
        let d = |u: &UnitChange| {
            ((u.total_to.unwrap_or(0.0) - u.total_from.unwrap_or(0.0)).abs() * 1e6).round() as i64
        };
        d(b).cmp(&d(a)).then_with(|| a.unit_id.cmp(&b.unit_id))
    });
    Ok(ChangeNote {
        previous_revision: rev,
        reason_codes: codes.into_iter().map(String::from).collect(),
        reasons,
        units,
    })
}

/// A digest as the change note shows it: `sha256:` and its first 12 hex digits (the guard
/// does not read it as a number).
fn short(digest: &str) -> String {
    format!("sha256:{}", &digest[..digest.len().min(12)])
}

/// The records behind `period`'s numbers that landed after the build of `previous` read the
/// lake (each dataset's pinned position; for a revision pinned before positions were kept,
/// when its build started), as the published warehouse holds them: per kind, the dossiers
/// counted in the period whose newest version, steps, rating or payment landed since, the
/// petitions counted in it that landed since, and (`registry …`) the dossiers judged with a
/// catalogue entry or a calendar landed since.
pub fn landed_touching(
    conn: &duck::Connection,
    period: &str,
    previous: &Latest,
) -> anyhow::Result<Vec<(String, u64)>> {
    let since = |job: &str| {
        previous
            .read_through(job)
            .unwrap_or_else(|| "0001-01-01 00:00:00".into())
    };
    let row: (i64, i64, i64, i64, i64) = conn.query_row(
        "WITH d AS (SELECT * FROM wh.fct_dossiers WHERE dossier_id IN \
           (SELECT dossier_id FROM wh.drill_indicator_dossiers WHERE period = $1)) \
         SELECT count(*) FILTER (version_loaded_at > CAST($2 AS TIMESTAMP)), \
           count(*) FILTER (steps_loaded_at > CAST($3 AS TIMESTAMP)), \
           count(*) FILTER (rating_loaded_at > CAST($4 AS TIMESTAMP)), \
           count(*) FILTER (payment_loaded_at > CAST($5 AS TIMESTAMP)), \
           count(*) FILTER (catalogue_loaded_at > CAST($6 AS TIMESTAMP)) \
         FROM d",
        duckdb::params![
            period,
            since("dossiers"),
            since("dossier_steps"),
            since("ratings"),
            since("payments"),
            since("catalogue")
        ],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    )?;
    // Rows of one job's dataset touching the period (`$1`) and landed since (`$2`).
    let count = |job: &str, sql: &str| -> anyhow::Result<i64> {
        Ok(conn.query_row(sql, [period, since(job).as_str()], |r| r.get(0))?)
    };
    let petitions = count(
        "petitions",
        "SELECT count(*) FROM wh.stg_reporting__petitions WHERE loaded_at > CAST($2 AS TIMESTAMP) \
           AND petition_id IN (SELECT petition_id FROM wh.drill_indicator_petitions WHERE period = $1)",
    )?;
    // The national report's rows for the period's months (DOSSIER_SYNC's denominator), and
    // the calendar's days from the period's start to three months after its end (the
    // deadlines of its dossiers).
    let national = count(
        "national_report",
        "SELECT count(*) FROM wh.stg_national_report__received AS n, wh.int_period_judgement AS j \
         WHERE j.period = $1 AND n.loaded_at > CAST($2 AS TIMESTAMP) \
           AND n.period >= strftime(j.starts_on, '%Y-%m') AND n.period < strftime(j.ends_before, '%Y-%m')",
    )?;
    let calendar = count(
        "calendar",
        "SELECT count(*) FROM wh.stg_calendar__days AS c, wh.int_period_judgement AS j \
         WHERE j.period = $1 AND c.loaded_at > CAST($2 AS TIMESTAMP) \
           AND c.calendar_date >= j.starts_on AND c.calendar_date < j.ends_before + INTERVAL 3 MONTH",
    )?;
    Ok([
        ("dossiers with a newer version", row.0),
        ("dossiers with steps", row.1),
        ("dossiers with a rating", row.2),
        ("dossiers with a payment", row.3),
        ("petitions", petitions),
        ("national report rows", national),
        (
            "registry: dossiers judged with a newer catalogue entry",
            row.4,
        ),
        ("registry: calendar days", calendar),
    ]
    .into_iter()
    .map(|(what, n)| (what.to_string(), n as u64))
    .collect())
}

/// Rows landed per job by the commit-log entries after the lake position the published build
/// read (`_chiso_lake_position`), or `None` when that build recorded none.
pub(super) fn landed_after_position(
    conn: &duck::Connection,
    warehouse: &Path,
    jobs: &[JobConfig],
) -> anyhow::Result<Option<Vec<(String, u64)>>> {
    if !duck::attached_table_exists(conn, "wh", "_chiso_lake_position")? {
        return Ok(None);
    }
    let mut stmt = conn.prepare("SELECT job, seq FROM wh._chiso_lake_position")?;
    let read: BTreeMap<String, i64> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for job in jobs {
        // A job the build did not read: everything it committed is after.
        let after = read.get(&job.name).copied().unwrap_or(0).max(0) as u64;
        let rows: u64 = JobState::new(warehouse, &job.name)
            .after(after)?
            .iter()
            .map(|e| e.totals.rows_landed)
            .sum();
        if rows > 0 {
            out.push((job.name.clone(), rows));
        }
    }
    Ok(Some(out))
}

/// Rows landed per job by commits after `from` (exclusive; all when `None`) up to `to`
/// (RFC 3339 times; commits are stamped the same way).
pub(super) fn landed_between(
    warehouse: &Path,
    jobs: &[JobConfig],
    from: Option<&str>,
    to: &str,
) -> anyhow::Result<Vec<(String, u64)>> {
    let parse = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
    let (from, to) = (from.and_then(parse), parse(to));
    let mut out = Vec::new();
    for job in jobs {
        let mut rows = 0u64;
        let state = JobState::new(warehouse, &job.name);
        let entries = match from {
            Some(f) => state.back_to_first(&|e| parse(&e.committed_at).is_some_and(|t| t <= f))?,
            None => state.all()?,
        };
        for e in entries {
            let Some(at) = parse(&e.committed_at) else {
                continue;
            };
            if from.is_some_and(|f| at <= f) || to.is_some_and(|t| at > t) {
                continue;
            }
            rows += e.totals.rows_landed;
        }
        if rows > 0 {
            out.push((job.name.clone(), rows));
        }
    }
    Ok(out)
}

/// Pins what revision `rev` of the period was made from: the lake position the build read
/// (per dataset: job, newest log entry, newest landing stamp), each model's SQL digest, and
/// the rows of the methodology version it used.
fn pin(conn: &duck::Connection, b: &Basis, rev: i64) -> anyhow::Result<()> {
    let json_or_null = |table: &str, sql: &str| -> anyhow::Result<String> {
        Ok(if duck::attached_table_exists(conn, "wh", table)? {
            format!("({sql})")
        } else {
            "NULL::JSON".to_string()
        })
    };
    let position = json_or_null(
        "_chiso_lake_position",
        "SELECT to_json(list({'dataset': dataset, 'job': job, 'seq': seq, 'stamped_through': stamped_through} ORDER BY dataset)) FROM wh._chiso_lake_position",
    )?;
    let digests = json_or_null(
        "_chiso_model_sql",
        "SELECT to_json(list({'model': model, 'sql_sha256': sql_sha256} ORDER BY model)) FROM wh._chiso_model_sql",
    )?;
    let rows = json_or_null(
        "methodology",
        &format!("SELECT {SCORING} FROM wh.methodology AS m WHERE m.methodology = $3"),
    )?;
    conn.execute(
        &format!(
            "UPDATE pub_revisions SET lake_position = {position}, model_digests = {digests}, methodology_rows = {rows} \
             WHERE period = $1 AND revision = $2"
        ),
        duckdb::params![b.period, rev, b.methodology],
    )?;
    Ok(())
}

/// The methodology rows as pinned and compared: what scores (a group's name or an indicator's
/// wording may be fixed without a new version).
const SCORING: &str = "to_json(list({'effective_from': m.effective_from, 'group_code': m.group_code, \
    'group_max': m.group_max, 'indicator': m.indicator, 'max_points': m.max_points, 'target': m.target, \
    'zero_denominator': m.zero_denominator, 'applies_to': m.applies_to, \
    'period_attribution': m.period_attribution, 'scored': m.scored, 'window_hours': m.window_hours} \
    ORDER BY m.indicator))";

/// A methodology version is immutable once a final revision used it: what scores in its rows
/// now must be what every final revision of that version pinned (a change is a new version).
/// Held, not failed: the other periods of the same publish go on.
pub fn check_methodology_unchanged(conn: &duck::Connection, b: &Basis) -> anyhow::Result<()> {
    let changed: Option<(String, i64)> = conn
        .query_row(
            &format!("WITH now AS (SELECT {SCORING} AS rows FROM wh.methodology AS m WHERE m.methodology = $1) \
             SELECT r.period, r.revision FROM pub_revisions AS r, now \
             WHERE r.status = 'final' AND r.methodology = $1 AND r.methodology_rows IS NOT NULL \
               AND CAST(r.methodology_rows AS VARCHAR) <> CAST(now.rows AS VARCHAR) \
             ORDER BY r.created_at LIMIT 1"),
            [&b.methodology],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((period, rev)) = changed {
        return Err(super::Held::one(
            &b.period,
            super::HeldFor::MethodologyChanged,
            format!(
                "{}: methodology {} was changed after final revision {rev} of {period} used it: a published methodology version is immutable; give the new rows a new version (with its effective_from) in sql/methodology/, and build",
                b.period, b.methodology
            ),
        )
        .into());
    }
    Ok(())
}

/// What a new revision records besides its rows.
pub struct NewRevision<'a> {
    pub basis: &'a Basis,
    pub revision: i64,
    pub status: &'a str,
    pub previous: Option<i64>,
    pub note: Option<&'a str>,
    pub change: Option<&'a ChangeNote>,
    pub warnings: &'a [super::guard::Warning],
    pub accepted: Option<&'a str>,
    pub targets: &'a [TargetConfig],
    /// The revision policy a final is recorded under (its period's window runs from revision 1).
    pub policy: crate::config::RevisionPolicy,
    pub correction: Option<&'a str>,
}

/// When the period's revision window closed, if it has: the latest final revision's
/// `open_until` (a revision recorded before the policy was kept: revision 1's time plus the
/// policy in force now); `None` while open, or when no policy bounds it.
pub fn closed_since(
    conn: &duck::Connection,
    period: &str,
    policy: crate::config::RevisionPolicy,
) -> anyhow::Result<Option<String>> {
    let now_policy = match policy {
        crate::config::RevisionPolicy::Always => "NULL::TIMESTAMP".to_string(),
        crate::config::RevisionPolicy::Months(m) => format!(
            "(SELECT min(created_at) FROM pub_revisions WHERE period = $1 AND status = 'final') + INTERVAL {m} MONTH"
        ),
    };
    let until: Option<String> = conn
        .query_row(
            &format!(
                "SELECT strftime(CASE WHEN revision_policy IS NULL THEN {now_policy} ELSE open_until END, '%Y-%m-%d %H:%M') \
                 FROM pub_revisions WHERE period = $1 AND status = 'final' \
                   AND (CASE WHEN revision_policy IS NULL THEN {now_policy} ELSE open_until END) <= {now} \
                   AND revision = (SELECT max(revision) FROM pub_revisions WHERE period = $1 AND status = 'final')",
                now = crate::time::now_sql()
            ),
            [period],
            |r| r.get(0),
        )
        .optional()?;
    Ok(until)
}

/// Records revision `n.revision` of the period, its rows and (final only) a pending receipt
/// per target, in one transaction. Returns the provisional revisions numbered among the finals
/// (by an older chiso) it deleted, whose folders go too.
pub fn record(conn: &duck::Connection, n: &NewRevision<'_>) -> anyhow::Result<Vec<i64>> {
    let b = n.basis;
    let mut stmt = conn.prepare(
        "SELECT revision FROM pub_revisions WHERE period = ? AND status = 'provisional' AND revision <> 0",
    )?;
    let dropped: Vec<i64> = stmt
        .query_map([&b.period], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let previous = published_previous(conn, &b.period)?;
    conn.execute_batch("BEGIN TRANSACTION;")?;
    let done = (|| -> anyhow::Result<()> {
        // One preview per period, and none once it is final: the preview recorded before (and
        // any provisional revision numbered among the finals by an older chiso) goes.
        let provisional =
            "SELECT revision FROM pub_revisions WHERE period = ? AND status = 'provisional'";
        for (_, table, _) in PUBLISHED {
            if duck::table_exists(conn, table)? {
                conn.execute(
                    &format!(
                        "DELETE FROM {table} WHERE period = ? AND revision IN ({provisional})"
                    ),
                    duckdb::params![b.period, b.period],
                )?;
            }
        }
        conn.execute(
            "DELETE FROM pub_revisions WHERE period = ? AND status = 'provisional'",
            [&b.period],
        )?;
        conn.execute(
            &format!(
            "INSERT INTO pub_revisions (period, revision, status, created_at, methodology, data_watermark, \
               sql_digest, build_id, build_started_at, previous_revision, units, note, change_note, warnings, \
               accepted, chiso_version) \
             VALUES (?, ?, ?, {now}, \
               ?, CAST(? AS TIMESTAMP), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                now = crate::time::now_sql()
            ),
            duckdb::params![
                b.period,
                n.revision,
                n.status,
                b.methodology,
                b.data_watermark,
                b.sql_digest,
                b.build_id,
                b.build_started_at,
                n.previous,
                b.units,
                n.note,
                n.change.map(serde_json::to_string).transpose()?,
                serde_json::to_string(n.warnings)?,
                n.accepted,
                env!("CARGO_PKG_VERSION"),
            ],
        )?;
        pin(conn, b, n.revision)?;
        if n.status == "final" {
            // The window runs from the period's revision 1.
            let until = match n.policy {
                crate::config::RevisionPolicy::Always => "NULL::TIMESTAMP".to_string(),
                crate::config::RevisionPolicy::Months(m) => format!(
                    "(SELECT min(created_at) FROM pub_revisions WHERE period = $1 AND status = 'final') + INTERVAL {m} MONTH"
                ),
            };
            conn.execute(
                &format!(
                    "UPDATE pub_revisions SET revision_policy = $3, open_until = {until}, correction = $4 \
                     WHERE period = $1 AND revision = $2"
                ),
                duckdb::params![b.period, n.revision, n.policy.text(), n.correction],
            )?;
        }
        for (mart, table, _) in PUBLISHED {
            conn.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {table} AS SELECT 0::INTEGER AS revision, * FROM wh.{mart} LIMIT 0;"
            ))?;
            let kept = ledger::columns(conn, None, table)?;
            let current = ledger::column_types(conn, Some("wh"), mart)?;
            for (c, ty) in current.iter().filter(|(c, _)| !kept.contains(c)) {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN \"{c}\" {ty};"))?;
            }
            // The unit rows carry their change from the previous period as published.
            let rows = if mart == "mart_index_unit_period" {
                candidate_units(previous.as_ref())
            } else {
                format!("SELECT * FROM wh.{mart} WHERE period = $1")
            };
            conn.execute(
                &format!(
                    "INSERT INTO {table} BY NAME SELECT $2::INTEGER AS revision, * FROM ({rows})"
                ),
                duckdb::params![b.period, n.revision],
            )?;
        }
        if n.status == "final" && !n.targets.is_empty() {
            // The key of each push, from the payload it will carry (the push recomputes it and
            // keeps the one it sent).
            let rows = super::rows::Revision::load(conn, &b.period, n.revision)?;
            for t in n.targets {
                let (body, _) = super::push::payload(&rows, t)?;
                conn.execute(
                    "INSERT INTO pub_receipts VALUES (?, ?, ?, ?, 'pending', 0, NULL, NULL, NULL, NULL)",
                    duckdb::params![
                        t.name,
                        b.period,
                        n.revision,
                        ledger::idempotency_key(
                            &t.name,
                            &b.period,
                            n.revision,
                            &super::push::content_digest(&body)
                        )
                    ],
                )?;
            }
        }
        Ok(())
    })();
    match done {
        Ok(()) => {
            conn.execute_batch("COMMIT;")?;
            Ok(dropped)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK;");
            Err(e)
        }
    }
}
