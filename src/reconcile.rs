//! Reconciliation with the portal's published evaluation: what `chiso reconcile`, the demo and
//! the status (`chiso status`, `/status`, `/metrics`) read from `mart_reconciliation` and
//! `mart_portal_vintages` in the published warehouse (read-only). See docs/reconciliation.md.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The dossier indicators `drill_indicator_dossiers` lists the records of.
pub const DOSSIER_DRILLS: &[&str] = &[
    "DOSSIER_SYNC",
    "ON_TIME_HANDLING",
    "ONLINE_DOSSIER_SHARE",
    "ONLINE_PAYMENT_DOSSIER",
    "ORIGINAL_RESULT_AVAILABLE",
    "SO_HOA_GIAY_TO_GIAI_QUYET",
    "REUSED_DIGITIZED_DATA",
    "SYNCED_WITH_DVCQG_PERSONAL_STORAGE",
    "CITIZEN_DATA_CONNECTED_DOSSIER",
    "DOSSIER_RECEIVING_SATISFACTION",
];

/// The petition indicators `drill_indicator_petitions` lists the records of.
pub const PETITION_DRILLS: &[&str] = &[
    "PETITION_PROCESSING_ON_TIME",
    "PETITION_HANDLING_SATISFACTION",
    "PETITION_CLASSIFICATION_TTHC",
    "PETITION_CLASSIFICATION_STAFF",
];

/// Which rows a report lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The rows that explain the others: indicators (and a group where the portal shows none
    /// of its indicators).
    Indicator,
    /// Group scores.
    Group,
    /// Totals.
    Total,
    /// Every level.
    All,
}

/// One figure on which the portal and chiso differ (or the portal flags).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Difference {
    pub unit_id: Option<String>,
    pub department_id: Option<String>,
    pub unit_name: Option<String>,
    pub code: String,
    pub level: String,
    pub cause: String,
    pub within_rounding: bool,
    pub portal_numerator: Option<f64>,
    pub portal_denominator: Option<f64>,
    pub portal_score: Option<f64>,
    pub data_quality_status: Option<String>,
    pub chiso_numerator: Option<f64>,
    pub chiso_denominator: Option<f64>,
    pub chiso_score: Option<f64>,
    /// The difference it makes to the unit's total, in points, as far as the portal shows it
    /// (the figure's score difference, or its group's).
    pub effect: f64,
    /// For counts that differ: the query listing the records behind chiso's side.
    pub drill_down: Option<String>,
}

/// A figure the portal changed after first publishing it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Revision {
    pub unit_id: Option<String>,
    pub department_id: String,
    pub code: String,
    pub vintage: i64,
    pub first_seen_at: String,
    pub previous_numerator: Option<f64>,
    pub previous_denominator: Option<f64>,
    pub previous_score: Option<f64>,
    pub numerator: Option<f64>,
    pub denominator: Option<f64>,
    pub score: Option<f64>,
}

/// A period's reconciliation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub period: String,
    /// The period had ended when the portal's figures were fetched (else provisional).
    pub ended: bool,
    pub fetched_at: Option<String>,
    /// Figures compared, and those within rounding.
    pub compared: u64,
    pub agreeing: u64,
    /// Rows beyond rounding, by cause (every level).
    pub beyond_rounding: BTreeMap<String, u64>,
    /// Rows the portal flags (within rounding or not).
    pub flagged: u64,
    /// The rows of the level asked for that do not agree, largest effect first.
    pub differences: Vec<Difference>,
    pub revisions: Vec<Revision>,
}

impl Report {
    /// Figures beyond rounding, at every level.
    pub fn beyond(&self) -> u64 {
        self.beyond_rounding.values().sum()
    }
}

fn opt_f(r: &duckdb::Row<'_>, i: usize) -> duckdb::Result<Option<f64>> {
    r.get::<_, Option<f64>>(i)
}

/// The periods the portal's evaluation was pulled for, newest first, with whether each had
/// ended (month, quarter and year names sort apart; the caller picks).
pub fn periods(conn: &duckdb::Connection) -> anyhow::Result<Vec<(String, String, bool)>> {
    let mut stmt = conn.prepare(
        "select period, any_value(period_type), bool_and(is_ended) from mart_reconciliation
         group by period order by max(portal_fetched_at) desc, period desc",
    )?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Opens the published warehouse read-only.
pub fn open(warehouse: &Path) -> anyhow::Result<duckdb::Connection> {
    let path = crate::models::build::published_path(warehouse);
    if !path.exists() {
        anyhow::bail!(
            "{} does not exist: build the warehouse first (chiso build)",
            path.display()
        );
    }
    crate::duck::open_read_only(&path)
        .with_context(|| format!("opening {} read-only", path.display()))
}

/// Whether the published warehouse has the reconciliation (a warehouse built before the
/// portal's evaluation was pulled has not).
pub fn available(conn: &duckdb::Connection) -> bool {
    conn.query_row(
        "select count(*) from information_schema.tables where table_name = 'mart_reconciliation'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .is_ok_and(|n| n > 0)
}

/// The reconciliation of `period` at `level`.
pub fn report(conn: &duckdb::Connection, period: &str, level: Level) -> anyhow::Result<Report> {
    if !available(conn) {
        anyhow::bail!(
            "the warehouse has no mart_reconciliation: pull the portal's evaluation (chiso run portal_evaluation) and build"
        );
    }
    let (compared, agreeing, flagged, ended, fetched_at): (
        i64,
        i64,
        i64,
        Option<bool>,
        Option<String>,
    ) = conn.query_row(
        "select count(*), count(*) filter (where is_within_rounding and cause = 'agrees'),
                    count(*) filter (where cause = 'flagged_by_the_portal'), bool_and(is_ended),
                    strftime(max(portal_fetched_at), '%Y-%m-%d %H:%M')
             from mart_reconciliation where period = ?",
        [period],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    )?;
    if compared == 0 {
        let known: Vec<String> = periods(conn)?.into_iter().map(|p| p.0).collect();
        anyhow::bail!(
            "no reconciliation for {period}: the portal's evaluation was not pulled for it (pulled: {})",
            if known.is_empty() { "none".into() } else { known.join(", ") }
        );
    }
    let beyond_rounding = beyond_by_cause(conn, period)?;
    let filter = match level {
        Level::Indicator => "m.is_root_cause",
        Level::Group => "m.level = 'group'",
        Level::Total => "m.level = 'total'",
        Level::All => "true",
    };
    let sql = format!(
        "with groups as (select indicator, any_value(group_code) as group_code from methodology group by all)
         select m.unit_id, m.department_id, m.unit_name, m.code, m.level, m.cause, m.is_within_rounding,
                m.portal_numerator, m.portal_denominator, m.portal_score, m.data_quality_status,
                m.chiso_numerator, m.chiso_denominator, m.chiso_score,
                abs(coalesce(m.score_difference, g.score_difference, 0)) as effect
         from mart_reconciliation as m
         left join groups as gi on gi.indicator = m.code
         left join mart_reconciliation as g
            on g.level = 'group' and g.department_id = m.department_id and g.period = m.period
            and g.code = gi.group_code
         where m.period = ? and m.cause <> 'agrees' and {filter}
         order by effect desc, m.cause, m.unit_id nulls last, m.code"
    );
    let mut stmt = conn.prepare(&sql)?;
    let differences = stmt
        .query_map([period], |r| {
            let unit_id: Option<String> = r.get(0)?;
            let code: String = r.get(3)?;
            let cause: String = r.get(5)?;
            let drill_down = match (&unit_id, cause.as_str()) {
                (Some(u), "counts_differ") if DOSSIER_DRILLS.contains(&code.as_str()) => Some(format!(
                    "select * from drill_indicator_dossiers where unit_id = {} and period = {} and indicator = {} order by in_numerator, dossier_id",
                    crate::duck::lit(u), crate::duck::lit(period), crate::duck::lit(&code)
                )),
                (Some(u), "counts_differ") if PETITION_DRILLS.contains(&code.as_str()) => Some(format!(
                    "select * from drill_indicator_petitions where unit_id = {} and period = {} and indicator = {} order by in_numerator, petition_id",
                    crate::duck::lit(u), crate::duck::lit(period), crate::duck::lit(&code)
                )),
                _ => None,
            };
            Ok(Difference {
                unit_id,
                department_id: r.get(1)?,
                unit_name: r.get(2)?,
                code,
                level: r.get(4)?,
                cause,
                within_rounding: r.get(6)?,
                portal_numerator: opt_f(r, 7)?,
                portal_denominator: opt_f(r, 8)?,
                portal_score: opt_f(r, 9)?,
                data_quality_status: r.get(10)?,
                chiso_numerator: opt_f(r, 11)?,
                chiso_denominator: opt_f(r, 12)?,
                chiso_score: opt_f(r, 13)?,
                effect: r.get::<_, Option<f64>>(14)?.unwrap_or(0.0),
                drill_down,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut stmt = conn.prepare(
        "select unit_id, department_id, code, vintage, strftime(first_seen_at, '%Y-%m-%d %H:%M'),
                previous_numerator, previous_denominator, previous_score, numerator, denominator, score
         from mart_portal_vintages where period = ? and is_revision
         order by first_seen_at, department_id, code",
    )?;
    let revisions = stmt
        .query_map([period], |r| {
            Ok(Revision {
                unit_id: r.get(0)?,
                department_id: r.get(1)?,
                code: r.get(2)?,
                vintage: r.get(3)?,
                first_seen_at: r.get(4)?,
                previous_numerator: opt_f(r, 5)?,
                previous_denominator: opt_f(r, 6)?,
                previous_score: opt_f(r, 7)?,
                numerator: opt_f(r, 8)?,
                denominator: opt_f(r, 9)?,
                score: opt_f(r, 10)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Report {
        period: period.to_string(),
        ended: ended.unwrap_or(false),
        fetched_at,
        compared: compared as u64,
        agreeing: agreeing as u64,
        beyond_rounding,
        flagged: flagged as u64,
        differences,
        revisions,
    })
}

/// A period's figures beyond rounding, by cause (every level).
fn beyond_by_cause(
    conn: &duckdb::Connection,
    period: &str,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut stmt = conn.prepare(
        "select cause, count(*) from mart_reconciliation
         where period = ? and not is_within_rounding group by cause",
    )?;
    let rows = stmt.query_map([period], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest ended month the portal's evaluation was pulled for.
pub fn latest_ended_month(conn: &duckdb::Connection) -> anyhow::Result<Option<String>> {
    Ok(periods(conn)?
        .into_iter()
        .filter(|(_, kind, ended)| kind == "month" && *ended)
        .map(|(p, _, _)| p)
        .max())
}

fn count(n: Option<f64>) -> String {
    n.map_or("–".into(), |x| format!("{x}"))
}

fn points(x: Option<f64>) -> String {
    x.map_or("–".into(), |x| format!("{x:.2}"))
}

/// The cause in words.
pub fn cause_words(cause: &str) -> &str {
    match cause {
        "counts_differ" => "counts differ",
        "same_counts_different_score" => "same counts, different score",
        "only_on_the_portal" => "only on the portal",
        "only_in_chiso" => "only in chiso",
        "not_scored_on_the_portal" => "not scored on the portal",
        "flagged_by_the_portal" => "flagged by the portal",
        other => other,
    }
}

/// A short summary: one line of totals and one of causes.
pub fn summary(r: &Report) -> String {
    let state = if r.ended { "ended" } else { "provisional" };
    let mut s = format!(
        "Reconciliation of {} with the portal's published evaluation ({state}, fetched {}): {} figures, {} agree within rounding, {} beyond rounding",
        r.period,
        r.fetched_at.as_deref().unwrap_or("–"),
        r.compared,
        r.agreeing,
        r.beyond()
    );
    if r.flagged > 0 {
        s.push_str(&format!(", {} flagged by the portal", r.flagged));
    }
    if !r.beyond_rounding.is_empty() {
        let causes: Vec<String> = r
            .beyond_rounding
            .iter()
            .map(|(c, n)| format!("{} {n}", cause_words(c)))
            .collect();
        s.push_str(&format!(
            "\n  beyond rounding by cause: {}",
            causes.join(", ")
        ));
    }
    if !r.revisions.is_empty() {
        s.push_str(&format!(
            "\n  the portal revised {} figure(s) of {} after publishing them",
            r.revisions.len(),
            r.period
        ));
    }
    s
}

/// The full text report: the summary, the differences (at most `limit`), the revisions.
pub fn render(r: &Report, limit: usize) -> String {
    let mut s = summary(r);
    s.push('\n');
    if !r.differences.is_empty() {
        s.push_str(&format!(
            "\n{:<10} {:<34} {:<32} {:<28} {:>17} {:>17} {:>7}\n",
            "unit", "name", "code", "cause", "portal", "chiso", "effect"
        ));
        for d in r.differences.iter().take(limit) {
            let side = |n: Option<f64>, den: Option<f64>, sc: Option<f64>| {
                if n.is_some() || den.is_some() {
                    format!("{}/{} {}", count(n), count(den), points(sc))
                } else {
                    points(sc)
                }
            };
            let name: String = d
                .unit_name
                .clone()
                .unwrap_or_default()
                .chars()
                .take(34)
                .collect();
            let mut cause = cause_words(&d.cause).to_string();
            if let Some(flag) = &d.data_quality_status {
                cause = format!("{cause} ({flag})");
            }
            s.push_str(&format!(
                "{:<10} {:<34} {:<32} {:<28} {:>17} {:>17} {:>7.2}\n",
                d.unit_id.as_deref().unwrap_or("?"),
                name,
                d.code,
                cause,
                side(d.portal_numerator, d.portal_denominator, d.portal_score),
                side(d.chiso_numerator, d.chiso_denominator, d.chiso_score),
                d.effect
            ));
            if let Some(q) = &d.drill_down {
                s.push_str(&format!("           records behind chiso's side: {q}\n"));
            }
        }
        if r.differences.len() > limit {
            s.push_str(&format!(
                "… and {} more (--limit, or --json for all)\n",
                r.differences.len() - limit
            ));
        }
    }
    if !r.revisions.is_empty() {
        s.push_str(&format!(
            "\nRevisions the portal made to {} after publishing it:\n",
            r.period
        ));
        for v in &r.revisions {
            s.push_str(&format!(
                "  {} {} {}: {}/{} {} → {}/{} {} (seen {}, vintage {})\n",
                v.unit_id.as_deref().unwrap_or("?"),
                v.department_id,
                v.code,
                count(v.previous_numerator),
                count(v.previous_denominator),
                points(v.previous_score),
                count(v.numerator),
                count(v.denominator),
                points(v.score),
                v.first_seen_at,
                v.vintage
            ));
        }
    }
    s
}

/// The last reconciliation as `chiso status`, `/status` and `/metrics` show it: the newest
/// ended month the portal's evaluation was pulled for, counted (no rows listed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusSummary {
    pub period: String,
    pub fetched_at: Option<String>,
    pub compared: u64,
    pub agreeing: u64,
    /// Figures beyond rounding, by cause (every level).
    pub beyond_rounding: BTreeMap<String, u64>,
    pub flagged: u64,
    /// Figures the portal changed after first publishing them, in that month.
    pub portal_revisions: u64,
}

/// The last reconciliation's summary, `None` when the warehouse has none yet.
pub fn status(conn: &duckdb::Connection) -> anyhow::Result<Option<StatusSummary>> {
    if !available(conn) {
        return Ok(None);
    }
    let Some(period) = latest_ended_month(conn)? else {
        return Ok(None);
    };
    let (compared, agreeing, flagged, fetched_at): (i64, i64, i64, Option<String>) = conn
        .query_row(
            "select count(*), count(*) filter (where is_within_rounding and cause = 'agrees'),
                count(*) filter (where cause = 'flagged_by_the_portal'),
                strftime(max(portal_fetched_at), '%Y-%m-%dT%H:%M:%S')
         from mart_reconciliation where period = ?",
            [&period],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
    let beyond_rounding = beyond_by_cause(conn, &period)?;
    let portal_revisions: i64 = conn.query_row(
        "select count(*) from mart_portal_vintages where period = ? and is_revision",
        [&period],
        |r| r.get(0),
    )?;
    Ok(Some(StatusSummary {
        period,
        fetched_at,
        compared: compared as u64,
        agreeing: agreeing as u64,
        beyond_rounding,
        flagged: flagged as u64,
        portal_revisions: portal_revisions as u64,
    }))
}
