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
use crate::ledger::{self, PUBLISHED, UNCOMPARED};

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
}

/// Why a revision differs from the one before, and what moved.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChangeNote {
    pub previous_revision: i64,
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
            "Changes since revision {}: {}.\n",
            self.previous_revision,
            self.reasons.join("; ")
        );
        for u in &self.units {
            let name = u.unit_name.as_deref().unwrap_or("");
            let delta = match (u.total_from, u.total_to) {
                (Some(a), Some(b)) => format!("{a:.2} → {b:.2} ({:+.2})", b - a),
                (None, Some(b)) => format!("new, {b:.2}"),
                (Some(a), None) => format!("{a:.2}, no longer published"),
                (None, None) => "ranking or status only".to_string(),
            };
            out.push_str(&format!("- {} {name}: total {delta}", u.unit_id));
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
           strftime(data_watermark, '%Y-%m-%d %H:%M:%S') \
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
        })
    })?;
    Ok(rows.next().transpose()?)
}

/// The compared columns of a mart, quoted, or `None` when the ledger's table lacks one of
/// them (a new mart column: the rows differ).
fn compared(conn: &duck::Connection, mart: &str, table: &str) -> anyhow::Result<Option<String>> {
    let current = ledger::columns(conn, Some("wh"), mart)?;
    let kept = ledger::columns(conn, None, table)?;
    let cols: Vec<&String> = current
        .iter()
        .filter(|c| !UNCOMPARED.contains(&c.as_str()))
        .collect();
    if kept.is_empty() || cols.iter().any(|c| !kept.contains(c)) {
        return Ok(None);
    }
    Ok(Some(
        cols.iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", "),
    ))
}

/// Whether the marts' rows of `period` equal those of `revision`, value for value.
pub fn equals(conn: &duck::Connection, period: &str, revision: i64) -> anyhow::Result<bool> {
    for (mart, table, _) in PUBLISHED {
        let Some(cols) = compared(conn, mart, table)? else {
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
    warehouse: &Path,
    jobs: &[JobConfig],
    basis: &Basis,
    previous: &Latest,
    status: &str,
) -> anyhow::Result<ChangeNote> {
    let period = basis.period.as_str();
    let rev = previous.revision;
    let mut units: BTreeMap<String, UnitChange> = BTreeMap::new();
    {
        let mut stmt = conn.prepare(
            "SELECT coalesce(m.unit_id, p.unit_id), coalesce(m.unit_name, p.unit_name), p.total, m.total \
             FROM (SELECT * FROM pub_index_unit_period WHERE period = $1 AND revision = $2) AS p \
             FULL JOIN (SELECT * FROM wh.mart_index_unit_period WHERE period = $1) AS m USING (unit_id) \
             WHERE p.total IS DISTINCT FROM m.total OR p.unit_id IS NULL OR m.unit_id IS NULL",
        )?;
        let rows = stmt.query_map(duckdb::params![period, rev], |r| {
            Ok(UnitChange {
                unit_id: r.get(0)?,
                unit_name: r.get(1)?,
                total_from: r.get(2)?,
                total_to: r.get(3)?,
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
                    indicators: Vec::new(),
                })
                .indicators
                .push(change);
        }
    }
    // Every other unit whose published row differs (rank, change from the previous period).
    let mut reasons = Vec::new();
    if previous.status != status {
        reasons.push(format!("status {} → {status}", previous.status));
    }
    if previous.methodology.as_deref() != Some(basis.methodology.as_str()) {
        reasons.push(format!(
            "methodology changed ({} → {})",
            previous.methodology.as_deref().unwrap_or("-"),
            basis.methodology
        ));
    }
    if previous.sql_digest.as_deref() != Some(basis.sql_digest.as_str()) {
        reasons.push(format!(
            "model SQL changed (digest {} → {})",
            short(previous.sql_digest.as_deref().unwrap_or("-")),
            short(&basis.sql_digest)
        ));
    }
    let landed = landed_between(
        warehouse,
        jobs,
        previous.build_started_at.as_deref(),
        &basis.build_started_at,
    )?;
    if !landed.is_empty() {
        reasons.push(format!(
            "data landed after revision {rev} ({})",
            landed
                .iter()
                .map(|(job, rows)| format!("{job}: {rows} rows"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if reasons.is_empty() {
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
        reasons,
        units,
    })
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
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
        for e in JobState::new(warehouse, &job.name).all()? {
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
            "INSERT INTO pub_revisions VALUES (?, ?, ?, CAST(get_current_timestamp() AS TIMESTAMP) + INTERVAL 7 HOUR, \
               ?, CAST(? AS TIMESTAMP), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        for (mart, table, _) in PUBLISHED {
            conn.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {table} AS SELECT 0::INTEGER AS revision, * FROM wh.{mart} LIMIT 0;"
            ))?;
            let kept = ledger::columns(conn, None, table)?;
            let current = ledger::column_types(conn, Some("wh"), mart)?;
            for (c, ty) in current.iter().filter(|(c, _)| !kept.contains(c)) {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN \"{c}\" {ty};"))?;
            }
            conn.execute(
                &format!(
                    "INSERT INTO {table} BY NAME SELECT ?::INTEGER AS revision, * FROM wh.{mart} WHERE period = ?"
                ),
                duckdb::params![n.revision, b.period],
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
