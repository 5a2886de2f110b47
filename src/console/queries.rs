//! What the console's pages read from the published warehouse: the marts (`mart_index_*`), the
//! records behind a count (`drill_indicator_*`), and what was published (`pub_*`). Every query
//! names its unit, period and indicator as parameters, never as SQL text.

use duckdb::params;
use serde::Serialize;

use crate::duck;
use crate::publish::rows::GROUPS;
use crate::reconcile::{DOSSIER_DRILLS, PETITION_DRILLS};

/// The levels the ranking is shown by.
pub const LEVELS: [(&str, &str); 3] = [
    ("2", "Thuế tỉnh, thành phố"),
    ("3", "Thuế cơ sở"),
    ("other", "Cơ quan khác"),
];

fn level_filter(level: &str) -> &'static str {
    match level {
        "2" => "unit_level = 2",
        "3" => "unit_level = 3",
        _ => "coalesce(unit_level, 0) NOT IN (2, 3)",
    }
}

/// A period the picker offers.
#[derive(Debug, Clone, Serialize)]
pub struct PeriodChoice {
    pub period: String,
    pub kind: String,
    /// Not ended: judged as of the data watermark.
    pub live: bool,
    pub judged_as_of: String,
}

/// Every period the index has, the ones in progress first (month, quarter, year), then the
/// ended months, quarters and years, newest first.
pub fn periods(conn: &duck::Connection) -> anyhow::Result<Vec<PeriodChoice>> {
    // Whether a period is live is int_period_judgement's word, as the marts take it.
    let mut stmt = conn.prepare(
        "SELECT m.period, any_value(m.period_type), coalesce(bool_or(j.is_live), false),
                strftime(max(m.judged_as_of), '%Y-%m-%d %H:%M')
         FROM mart_index_unit_period AS m LEFT JOIN int_period_judgement AS j USING (period)
         GROUP BY m.period",
    )?;
    let mut out: Vec<PeriodChoice> = stmt
        .query_map([], |r| {
            Ok(PeriodChoice {
                period: r.get(0)?,
                kind: r.get(1)?,
                live: r.get(2)?,
                judged_as_of: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
            })
        })?
        .collect::<Result<_, _>>()?;
    let kind_order = |k: &str| match k {
        "month" => 0,
        "quarter" => 1,
        _ => 2,
    };
    out.sort_by(|a, b| {
        (!a.live, kind_order(&a.kind))
            .cmp(&(!b.live, kind_order(&b.kind)))
            .then_with(|| b.period.cmp(&a.period))
    });
    Ok(out)
}

/// The period asked for, or the first offered (the month in progress) when none was.
pub fn choose(periods: &[PeriodChoice], asked: Option<&str>) -> Option<PeriodChoice> {
    match asked {
        Some(p) => periods.iter().find(|c| c.period == p),
        None => periods.first(),
    }
    .cloned()
}

/// Where a period stands: running, provisional or final, and what was published of it.
#[derive(Debug, Clone, Serialize)]
pub struct PeriodState {
    pub live: bool,
    pub status: String,
    pub judged_as_of: String,
    /// The latest final revision published.
    pub published_revision: Option<i64>,
    /// The numbers moved since that revision (`pub_revision_pending`).
    pub revision_pending: bool,
}

pub fn period_state(conn: &duck::Connection, choice: &PeriodChoice) -> anyhow::Result<PeriodState> {
    let status: String = conn.query_row(
        "SELECT coalesce(max(status), 'provisional') FROM mart_index_unit_period WHERE period = ?",
        [&choice.period],
        |r| r.get(0),
    )?;
    let published_revision = if duck::table_exists(conn, "pub_revisions")? {
        conn.query_row(
            "SELECT max(revision) FROM pub_revisions WHERE period = ? AND status = 'final'",
            [&choice.period],
            |r| r.get(0),
        )?
    } else {
        None
    };
    Ok(PeriodState {
        live: choice.live,
        status,
        judged_as_of: choice.judged_as_of.clone(),
        published_revision,
        revision_pending: !pending_units(conn, &choice.period)?.is_empty(),
    })
}

/// The units of `period` whose numbers moved since its latest final revision.
pub fn pending_units(conn: &duck::Connection, period: &str) -> anyhow::Result<Vec<String>> {
    if duck::object_kind(conn, "pub_revision_pending")?.is_none() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT DISTINCT unit_id FROM pub_revision_pending WHERE period = ? AND unit_id IS NOT NULL",
    )?;
    let rows = stmt.query_map([period], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A unit's line of the ranking.
#[derive(Debug, Clone, Serialize)]
pub struct RankRow {
    pub unit_id: String,
    pub unit_name: String,
    pub parent_name: String,
    pub groups: Vec<f64>,
    pub total: f64,
    /// Among the units of the level shown (same total as published, same rank).
    pub rank: i64,
    pub change: Option<f64>,
    pub pending: bool,
}

/// The units of a level in `period`, best first.
pub fn ranking(conn: &duck::Connection, period: &str, level: &str) -> anyhow::Result<Vec<RankRow>> {
    let pending = pending_units(conn, period)?;
    let mut stmt = conn.prepare(&format!(
        "WITH p AS (SELECT * FROM mart_index_unit_period WHERE period = ? AND {}),
              names AS (SELECT unit_id, unit_name FROM mart_index_unit_period WHERE period = ?)
         SELECT p.unit_id, coalesce(p.unit_name, p.unit_id), coalesce(n.unit_name, ''),
                p.ckmb, p.tdgq, p.clgq, p.tttt, p.mdsh, p.mdhl, p.total,
                rank() OVER (ORDER BY CAST(printf('%.2f', p.total) AS DOUBLE) DESC), p.change_from_previous
         FROM p LEFT JOIN names AS n ON n.unit_id = p.parent_unit_id
         ORDER BY 11, 2",
        level_filter(level)
    ))?;
    let rows = stmt.query_map(params![period, period], |r| {
        let unit_id: String = r.get(0)?;
        Ok(RankRow {
            pending: pending.contains(&unit_id),
            unit_id,
            unit_name: r.get(1)?,
            parent_name: r.get(2)?,
            groups: (3..9).map(|i| r.get(i)).collect::<Result<_, _>>()?,
            total: r.get(9)?,
            rank: r.get(10)?,
            change: r.get(11)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A unit in a period: its groups and total, where it stands.
#[derive(Debug, Clone, Serialize)]
pub struct UnitHead {
    pub unit_id: String,
    pub unit_name: String,
    pub unit_level: Option<i64>,
    pub parent_unit_id: Option<String>,
    pub parent_name: Option<String>,
    pub groups: Vec<f64>,
    pub total: f64,
    pub rank_among_siblings: Option<i64>,
    pub change: Option<f64>,
    pub status: String,
    pub methodology: Option<String>,
    pub judged_as_of: Option<String>,
}

pub fn unit_head(
    conn: &duck::Connection,
    unit_id: &str,
    period: &str,
) -> anyhow::Result<Option<UnitHead>> {
    let mut stmt = conn.prepare(
        "SELECT u.unit_id, coalesce(u.unit_name, u.unit_id), u.unit_level, u.parent_unit_id, p.unit_name,
                u.ckmb, u.tdgq, u.clgq, u.tttt, u.mdsh, u.mdhl, u.total, u.rank_among_siblings,
                u.change_from_previous, u.status, u.methodology,
                strftime(u.judged_as_of, '%Y-%m-%d %H:%M')
         FROM mart_index_unit_period AS u
         LEFT JOIN mart_index_unit_period AS p ON p.unit_id = u.parent_unit_id AND p.period = u.period
         WHERE u.unit_id = ? AND u.period = ?",
    )?;
    let mut rows = stmt.query_map(params![unit_id, period], |r| {
        Ok(UnitHead {
            unit_id: r.get(0)?,
            unit_name: r.get(1)?,
            unit_level: r.get(2)?,
            parent_unit_id: r.get(3)?,
            parent_name: r.get(4)?,
            groups: (5..11).map(|i| r.get(i)).collect::<Result<_, _>>()?,
            total: r.get(11)?,
            rank_among_siblings: r.get(12)?,
            change: r.get(13)?,
            status: r.get(14)?,
            methodology: r.get(15)?,
            judged_as_of: r.get(16)?,
        })
    })?;
    Ok(rows.next().transpose()?)
}

/// Which records a count is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Drill {
    Dossiers,
    Petitions,
}

impl Drill {
    pub fn of(indicator: &str) -> Option<Drill> {
        if DOSSIER_DRILLS.contains(&indicator) {
            Some(Drill::Dossiers)
        } else if PETITION_DRILLS.contains(&indicator) {
            Some(Drill::Petitions)
        } else {
            None
        }
    }
}

/// One indicator of a unit in a period.
#[derive(Debug, Clone, Serialize)]
pub struct IndicatorLine {
    pub group_code: String,
    pub indicator: String,
    pub numerator: Option<f64>,
    pub denominator: Option<f64>,
    pub ratio: Option<f64>,
    pub points: Option<f64>,
    pub max_points: Option<f64>,
    /// Points it could have earned and did not.
    pub lost: f64,
    pub numerator_means: Option<String>,
    pub denominator_means: Option<String>,
    pub drill: Option<Drill>,
}

pub fn indicators(
    conn: &duck::Connection,
    unit_id: &str,
    period: &str,
) -> anyhow::Result<Vec<IndicatorLine>> {
    let described = duck::object_kind(conn, "methodology")?.is_some();
    let means = if described {
        "LEFT JOIN (SELECT methodology, indicator, arg_max(numerator, effective_from) AS num,
                           arg_max(denominator, effective_from) AS den
                    FROM methodology GROUP BY ALL) AS m
           ON m.methodology = i.methodology AND m.indicator = i.indicator"
    } else {
        "LEFT JOIN (SELECT NULL AS methodology, NULL AS indicator, NULL AS num, NULL AS den) AS m ON false"
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT coalesce(i.group_code, ''), i.indicator, CAST(i.numerator AS DOUBLE),
                CAST(i.denominator AS DOUBLE), CAST(i.ratio AS DOUBLE), CAST(i.points AS DOUBLE),
                CAST(i.max_points AS DOUBLE), m.num, m.den
         FROM mart_index_indicator AS i {means}
         WHERE i.unit_id = ? AND i.period = ?
         ORDER BY CASE i.group_code {group_order} ELSE {last} END, i.indicator",
        // the methodology's order of the groups, as the report and the charts show them
        group_order = GROUPS
            .iter()
            .enumerate()
            .map(|(k, (_, code, ..))| format!("WHEN {} THEN {k}", duck::lit(code)))
            .collect::<Vec<_>>()
            .join(" "),
        last = GROUPS.len(),
    ))?;
    let rows = stmt.query_map(params![unit_id, period], |r| {
        let indicator: String = r.get(1)?;
        let points: Option<f64> = r.get(5)?;
        let max_points: Option<f64> = r.get(6)?;
        Ok(IndicatorLine {
            group_code: r.get(0)?,
            drill: Drill::of(&indicator),
            indicator,
            numerator: r.get(2)?,
            denominator: r.get(3)?,
            ratio: r.get(4)?,
            lost: match (points, max_points) {
                (Some(p), Some(m)) => (m - p).max(0.0),
                _ => 0.0,
            },
            points,
            max_points,
            numerator_means: r.get(7)?,
            denominator_means: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A unit's total and groups in one period of its history.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryPoint {
    pub period: String,
    pub groups: Vec<f64>,
    pub total: f64,
}

/// Every period of `kind` the unit has, oldest first.
pub fn history(
    conn: &duck::Connection,
    unit_id: &str,
    kind: &str,
) -> anyhow::Result<Vec<HistoryPoint>> {
    let mut stmt = conn.prepare(
        "SELECT period, ckmb, tdgq, clgq, tttt, mdsh, mdhl, total FROM mart_index_unit_period
         WHERE unit_id = ? AND period_type = ? ORDER BY period",
    )?;
    let rows = stmt.query_map(params![unit_id, kind], |r| {
        Ok(HistoryPoint {
            period: r.get(0)?,
            groups: (1..7).map(|i| r.get(i)).collect::<Result<_, _>>()?,
            total: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A unit under another in a period.
#[derive(Debug, Clone, Serialize)]
pub struct Child {
    pub unit_id: String,
    pub unit_name: String,
    pub total: f64,
    pub rank: Option<i64>,
    pub change: Option<f64>,
}

pub fn children(
    conn: &duck::Connection,
    unit_id: &str,
    period: &str,
) -> anyhow::Result<Vec<Child>> {
    let mut stmt = conn.prepare(
        "SELECT unit_id, coalesce(unit_name, unit_id), total, rank_among_siblings, change_from_previous
         FROM mart_index_unit_period WHERE parent_unit_id = ? AND period = ?
         ORDER BY total DESC, 2",
    )?;
    let rows = stmt.query_map(params![unit_id, period], |r| {
        Ok(Child {
            unit_id: r.get(0)?,
            unit_name: r.get(1)?,
            total: r.get(2)?,
            rank: r.get(3)?,
            change: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A published revision of a unit's figures.
#[derive(Debug, Clone, Serialize)]
pub struct UnitRevision {
    pub period: String,
    pub revision: i64,
    pub status: String,
    pub created_at: String,
    pub total: f64,
    /// The latest final revision of its period, and the numbers moved since.
    pub pending: bool,
}

pub fn unit_revisions(conn: &duck::Connection, unit_id: &str) -> anyhow::Result<Vec<UnitRevision>> {
    if !duck::table_exists(conn, "pub_index_unit_period")?
        || !duck::table_exists(conn, "pub_revisions")?
    {
        return Ok(Vec::new());
    }
    let pending = if duck::object_kind(conn, "pub_revision_pending")?.is_some() {
        "EXISTS (SELECT 1 FROM pub_revision_pending AS x WHERE x.period = u.period AND x.unit_id = u.unit_id AND x.revision = u.revision)"
    } else {
        "false"
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT u.period, u.revision, r.status, strftime(r.created_at, '%Y-%m-%d %H:%M'), u.total, {pending}
         FROM pub_index_unit_period AS u JOIN pub_revisions AS r USING (period, revision)
         WHERE u.unit_id = ? ORDER BY r.created_at DESC LIMIT 60"
    ))?;
    let rows = stmt.query_map([unit_id], |r| {
        Ok(UnitRevision {
            period: r.get(0)?,
            revision: r.get(1)?,
            status: r.get(2)?,
            created_at: r.get(3)?,
            total: r.get(4)?,
            pending: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Which records of a count a page lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Which {
    #[default]
    All,
    /// In the numerator.
    In,
    /// In the denominator only.
    Out,
}

impl Which {
    /// The condition on `listed.n` (in the numerator).
    fn sql(self) -> &'static str {
        match self {
            Which::All => "true",
            Which::In => "n",
            Which::Out => "NOT n",
        }
    }
}

/// One record behind a count. Nothing about the applicant; the officer who handled it last
/// only for a reader holding the console's token.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub id: String,
    pub in_numerator: bool,
    pub handling_unit_id: Option<String>,
    /// The procedure (dossiers) or the category (petitions).
    pub what: Option<String>,
    pub received_at: Option<String>,
    pub due_at: Option<String>,
    pub finished_at: Option<String>,
    pub status: Option<String>,
    pub why: String,
    pub officer: Option<String>,
}

/// The records of a count: how many in the denominator and the numerator, and a page of them.
#[derive(Debug, Clone, Serialize)]
pub struct Records {
    pub denominator: u64,
    pub numerator: u64,
    /// Of the filter asked for.
    pub matching: u64,
    pub rows: Vec<Record>,
}

/// A drill-down view's records as `listed` names them.
fn drill_select(drill: Drill) -> &'static str {
    match drill {
        Drill::Dossiers => {
            "SELECT dossier_id AS id, coalesce(in_numerator, false) AS n, handling_unit_id AS unit,
                    procedure_code AS what, received_at, due_at, finished_at,
                    CAST(status AS VARCHAR) AS status
             FROM drill_indicator_dossiers"
        }
        Drill::Petitions => {
            "SELECT petition_id AS id, coalesce(in_numerator, false) AS n, handling_unit_id AS unit,
                    category AS what, first_received_at AS received_at, resolve_due_at AS due_at,
                    handled_at AS finished_at, NULL::VARCHAR AS status
             FROM drill_indicator_petitions"
        }
    }
}

/// Why a record is in the numerator of `indicator` or only in its denominator.
pub fn why(indicator: &str, in_numerator: bool) -> &'static str {
    match (indicator, in_numerator) {
        ("DOSSIER_SYNC", true) => "đồng bộ trạng thái đúng thời hạn",
        ("DOSSIER_SYNC", false) => "trạng thái đồng bộ trễ hoặc chưa đồng bộ",
        ("ON_TIME_HANDLING" | "PETITION_PROCESSING_ON_TIME", true) => "đúng hạn",
        ("ON_TIME_HANDLING" | "PETITION_PROCESSING_ON_TIME", false) => "quá hạn",
        ("ONLINE_DOSSIER_SHARE", true) => "nộp trực tuyến",
        ("ONLINE_DOSSIER_SHARE", false) => "không nộp trực tuyến",
        ("ONLINE_PAYMENT_DOSSIER", true) => "thanh toán trực tuyến",
        ("ONLINE_PAYMENT_DOSSIER", false) => "có nghĩa vụ tài chính, không thanh toán trực tuyến",
        ("ORIGINAL_RESULT_AVAILABLE", true) => "có kết quả điện tử",
        ("ORIGINAL_RESULT_AVAILABLE", false) => "không có kết quả điện tử",
        ("SO_HOA_GIAY_TO_GIAI_QUYET", true) => "được số hóa",
        ("SO_HOA_GIAY_TO_GIAI_QUYET", false) => "chưa số hóa",
        ("REUSED_DIGITIZED_DATA", true) => "tái sử dụng dữ liệu số",
        ("REUSED_DIGITIZED_DATA", false) => "không tái sử dụng dữ liệu số",
        ("SYNCED_WITH_DVCQG_PERSONAL_STORAGE", true) => "đồng bộ kho dữ liệu cá nhân",
        ("SYNCED_WITH_DVCQG_PERSONAL_STORAGE", false) => "không đồng bộ kho dữ liệu cá nhân",
        ("CITIZEN_DATA_CONNECTED_DOSSIER", true) => "khai thác CSDL quốc gia về dân cư",
        ("CITIZEN_DATA_CONNECTED_DOSSIER", false) => "không khai thác CSDL dân cư",
        ("DOSSIER_RECEIVING_SATISFACTION" | "PETITION_HANDLING_SATISFACTION", true) => "hài lòng",
        ("DOSSIER_RECEIVING_SATISFACTION" | "PETITION_HANDLING_SATISFACTION", false) => {
            "không hài lòng, trễ hạn hoặc phản ánh lại"
        }
        ("PETITION_CLASSIFICATION_TTHC", true) => "phản ánh về quy định, thủ tục",
        ("PETITION_CLASSIFICATION_STAFF", true) => "phản ánh về cán bộ",
        (_, true) => "thuộc tử số",
        (_, false) => "chỉ thuộc mẫu số",
    }
}

/// The records behind `indicator` of `unit_id` in `period`: counts, and `limit` of them from
/// `offset` (all with `limit` `None`: the CSV). `top`: the unit is at the top of the tree (it
/// has every unit under it). `officers` adds the officer of each record's last processing step.
#[allow(clippy::too_many_arguments)]
pub fn records(
    conn: &duck::Connection,
    drill: Drill,
    top: bool,
    unit_id: &str,
    period: &str,
    indicator: &str,
    which: Which,
    page: Option<(u64, u64)>,
    officers: bool,
) -> anyhow::Result<Records> {
    // One statement: the view is read once for the counts and the page.
    //
    // A page is found without sorting every record listed (the whole administration's year
    // lists about a million): the records are counted by day of receipt, and only the days the
    // page falls in are sorted, each record numbered from the count of the days before it.
    // Without a page (the CSV), every record, sorted. The day of a record without a receipt
    // time is 'infinity', last, as `ORDER BY received_at` puts NULLs last.
    let day = "coalesce(date_trunc('day', received_at), 'infinity'::TIMESTAMP)";
    let shown = match page {
        Some((limit, offset)) => format!(
            "days AS (
                 SELECT {day} AS day, count(*) AS c FROM listed WHERE {which} GROUP BY ALL
             ),
             days_before AS (
                 SELECT day, c, sum(c) OVER (ORDER BY day ROWS UNBOUNDED PRECEDING) - c AS counted_before
                 FROM days
             ),
             span AS (
                 SELECT min(day) AS first_day, max(day) AS last_day, min(counted_before) AS counted_before
                 FROM days_before WHERE counted_before < {end} AND counted_before + c > {offset}
             ),
             shown AS (
                 SELECT l.*, span.counted_before + row_number() OVER (ORDER BY l.received_at, l.id) - 1 AS position
                 FROM listed AS l, span
                 WHERE {which} AND {day} BETWEEN span.first_day AND span.last_day
                 QUALIFY position >= {offset} AND position < {end}
             )",
            which = which.sql(),
            end = offset + limit,
        ),
        None => format!(
            "shown AS (SELECT * FROM listed WHERE {which})",
            which = which.sql()
        ),
    };
    // Scoped to the unit and period (see sql/drilldown/drill_indicator_dossiers.sql): only
    // the dossiers that can be among them are read. The connection is this request's own.
    // A unit at the top of the tree has every unit under it: the period alone scopes it.
    conn.execute_batch(&format!(
        "SET VARIABLE drill_period = {}; {}",
        duck::lit(period),
        if top {
            "RESET VARIABLE drill_unit_id;".to_string()
        } else {
            format!("SET VARIABLE drill_unit_id = {};", duck::lit(unit_id))
        }
    ))?;
    // The officer of each shown dossier's last processing step, for a reader with the token.
    let with_officers = officers
        && drill == Drill::Dossiers
        && duck::object_kind(conn, "stg_portal__dossier_steps")?.is_some();
    let (officer_cte, officer_join, officer_col) = if with_officers {
        (
            ",
         officers AS (
             SELECT dossier_id AS id, arg_max(officer_name, stepped_at) AS officer
             FROM stg_portal__dossier_steps WHERE dossier_id IN (SELECT id FROM shown) GROUP BY ALL
         )",
            "LEFT JOIN officers AS o ON o.id = s.id",
            "o.officer",
        )
    } else {
        ("", "", "NULL::VARCHAR")
    };
    let mut stmt = conn.prepare(&format!(
        "WITH listed AS MATERIALIZED (
             {select} WHERE unit_id = ? AND period = ? AND indicator = ?
         ),
         counts AS (
             SELECT count(*) AS d, count(*) FILTER (WHERE n) AS nn, count(*) FILTER (WHERE {which}) AS m
             FROM listed
         ),
         {shown}{officer_cte}
         SELECT c.d, c.nn, c.m, s.id, s.n, s.unit, s.what,
                strftime(s.received_at, '%Y-%m-%d %H:%M'), strftime(s.due_at, '%Y-%m-%d %H:%M'),
                strftime(s.finished_at, '%Y-%m-%d %H:%M'), s.status, {officer_col}
         FROM counts AS c LEFT JOIN shown AS s ON true {officer_join}
         ORDER BY s.received_at, s.id",
        select = drill_select(drill),
        which = which.sql(),
    ))?;
    let (mut denominator, mut numerator, mut matching) = (0i64, 0i64, 0i64);
    let mut rows: Vec<Record> = Vec::new();
    let mut result = stmt.query(params![unit_id, period, indicator])?;
    while let Some(r) = result.next()? {
        (denominator, numerator, matching) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let Some(id) = r.get::<_, Option<String>>(3)? else {
            continue;
        };
        let in_numerator: bool = r.get(4)?;
        rows.push(Record {
            id,
            in_numerator,
            handling_unit_id: r.get(5)?,
            what: r.get(6)?,
            received_at: r.get(7)?,
            due_at: r.get(8)?,
            finished_at: r.get(9)?,
            status: r.get(10)?,
            why: why(indicator, in_numerator).to_string(),
            officer: r.get(11)?,
        });
    }
    drop(result);
    drop(stmt);
    conn.execute_batch("RESET VARIABLE drill_unit_id; RESET VARIABLE drill_period;")?;
    Ok(Records {
        denominator: denominator as u64,
        numerator: numerator as u64,
        matching: matching as u64,
        rows,
    })
}

/// The group names and maxima, in the methodology's order (for the templates).
pub fn groups() -> Vec<serde_json::Value> {
    GROUPS
        .iter()
        .map(|(col, code, name, max)| {
            serde_json::json!({ "col": col, "code": code, "name": name, "max": max })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages found by day of receipt list, one after another, exactly the records the CSV lists
    /// sorted: days that hold many pages, pages that span days, records without a receipt time
    /// (last), each filter.
    #[test]
    fn pages_tile_the_sorted_records() {
        let conn = duck::in_memory(2).unwrap();
        // 1,000 records: 7 without a receipt time; 400 on 3 August, 8 a minute (eight pages of
        // ties); one each on 5 to 8 August (the page after them spans five days); the other 589
        // over 10 to 18 August. Every third is in the numerator; ids are out of order.
        conn.execute_batch(
            "CREATE TABLE drill_indicator_dossiers AS
             SELECT 'U' AS unit_id, '2026-08' AS period, 'ON_TIME_HANDLING' AS indicator,
                    printf('D%05d', (i * 7919) % 1000) AS dossier_id,
                    (i % 3 = 0) AS in_numerator, 'U1' AS handling_unit_id, 'P' AS procedure_code,
                    CASE WHEN i < 7 THEN NULL
                         WHEN i < 407 THEN TIMESTAMP '2026-08-03 08:00' + to_minutes(i % 50)
                         WHEN i < 411 THEN TIMESTAMP '2026-08-05 00:00' + to_days(i - 407)
                         ELSE TIMESTAMP '2026-08-10 00:00' + to_seconds((i * 104729) % 777600)
                    END AS received_at,
                    NULL::TIMESTAMP AS due_at, NULL::TIMESTAMP AS finished_at, 'ok' AS status
             FROM range(1000) AS t(i)",
        )
        .unwrap();
        let ids = |which, page| {
            records(
                &conn,
                Drill::Dossiers,
                false,
                "U",
                "2026-08",
                "ON_TIME_HANDLING",
                which,
                page,
                false,
            )
            .unwrap()
        };
        for which in [Which::All, Which::In, Which::Out] {
            let all = ids(which, None);
            assert_eq!(all.denominator, 1000);
            assert_eq!(all.numerator, 334);
            assert_eq!(all.rows.len() as u64, all.matching);
            assert!(all.rows.last().unwrap().received_at.is_none());
            let mut paged = Vec::new();
            for page in 0..=all.matching.div_ceil(50) {
                let p = ids(which, Some((50, page * 50)));
                assert_eq!((p.denominator, p.matching), (all.denominator, all.matching));
                let want = (all.matching.saturating_sub(page * 50)).min(50);
                assert_eq!(p.rows.len() as u64, want, "{which:?} page {page}");
                paged.extend(p.rows.into_iter().map(|r| r.id));
            }
            let sorted: Vec<String> = all.rows.into_iter().map(|r| r.id).collect();
            assert_eq!(paged, sorted, "{which:?}");
        }
    }
}
