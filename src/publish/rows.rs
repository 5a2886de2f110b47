//! A revision as it was published: its record and its rows, read back from the ledger. The
//! files ([`super::export`], [`super::report`]) and the portals' payloads ([`super::push`])
//! are all made from this, never from the marts, which move on.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::guard::Warning;
use super::revision::ChangeNote;
use crate::duck;

/// The index groups in the methodology's order: (column, code, Vietnamese name, maximum).
pub const GROUPS: [(&str, &str, &str, f64); 6] = [
    ("ckmb", "CKMB", "Công khai, minh bạch", 18.0),
    ("tdgq", "TDGQ", "Tiến độ giải quyết", 20.0),
    ("clgq", "CLGQ", "Dịch vụ trực tuyến", 12.0),
    ("tttt", "TTTT", "Thanh toán trực tuyến", 10.0),
    ("mdsh", "MDSH", "Mức độ số hóa hồ sơ", 22.0),
    ("mdhl", "MDHL", "Mức độ hài lòng", 18.0),
];

/// A revision's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub period: String,
    pub revision: i64,
    pub status: String,
    pub created_at: String,
    pub methodology: Option<String>,
    pub data_watermark: Option<String>,
    pub sql_digest: Option<String>,
    pub build_id: Option<String>,
    pub previous_revision: Option<i64>,
    pub note: Option<String>,
    pub change_note: Option<ChangeNote>,
    pub warnings: Vec<Warning>,
    pub accepted: Option<String>,
}

/// One unit's row of a revision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UnitRow {
    pub unit_id: String,
    pub unit_name: Option<String>,
    pub unit_level: Option<i64>,
    pub parent_unit_id: Option<String>,
    pub period: String,
    pub ckmb: f64,
    pub tdgq: f64,
    pub clgq: f64,
    pub tttt: f64,
    pub mdsh: f64,
    pub mdhl: f64,
    pub total: f64,
    pub rank_among_siblings: Option<i64>,
    pub change_from_previous: Option<f64>,
    pub status: String,
}

impl UnitRow {
    pub fn group(&self, col: &str) -> f64 {
        match col {
            "ckmb" => self.ckmb,
            "tdgq" => self.tdgq,
            "clgq" => self.clgq,
            "tttt" => self.tttt,
            "mdsh" => self.mdsh,
            _ => self.mdhl,
        }
    }
}

/// One indicator of a unit in a revision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndicatorRow {
    pub unit_id: String,
    pub group_code: Option<String>,
    pub indicator: String,
    pub numerator: Option<f64>,
    pub denominator: Option<f64>,
    pub ratio: Option<f64>,
    pub points: Option<f64>,
    pub max_points: Option<f64>,
}

/// A revision as published: its record and its rows.
#[derive(Debug, Clone)]
pub struct Revision {
    pub meta: Meta,
    pub units: Vec<UnitRow>,
    pub indicators: Vec<IndicatorRow>,
}

impl Revision {
    /// Reads revision `revision` of `period` from the ledger (the connection's main database).
    pub fn load(conn: &duck::Connection, period: &str, revision: i64) -> anyhow::Result<Revision> {
        let meta = conn
            .query_row(
                "SELECT period, revision, status, strftime(created_at, '%Y-%m-%dT%H:%M:%S+07:00'), methodology, \
                   strftime(data_watermark, '%Y-%m-%d %H:%M:%S'), sql_digest, build_id, previous_revision, note, \
                   CAST(change_note AS VARCHAR), CAST(warnings AS VARCHAR), accepted \
                 FROM pub_revisions WHERE period = ? AND revision = ?",
                duckdb::params![period, revision],
                |r| {
                    Ok((
                        Meta {
                            period: r.get(0)?,
                            revision: r.get(1)?,
                            status: r.get(2)?,
                            created_at: r.get(3)?,
                            methodology: r.get(4)?,
                            data_watermark: r.get(5)?,
                            sql_digest: r.get(6)?,
                            build_id: r.get(7)?,
                            previous_revision: r.get(8)?,
                            note: r.get(9)?,
                            change_note: None,
                            warnings: Vec::new(),
                            accepted: r.get(12)?,
                        },
                        r.get::<_, Option<String>>(10)?,
                        r.get::<_, Option<String>>(11)?,
                    ))
                },
            )
            .with_context(|| format!("reading revision {revision} of {period} from the ledger"))?;
        let (mut meta, change, warnings) = meta;
        meta.change_note = change.map(|c| serde_json::from_str(&c)).transpose()?;
        meta.warnings = warnings
            .map(|w| serde_json::from_str(&w))
            .transpose()?
            .unwrap_or_default();
        let mut stmt = conn.prepare(
            "SELECT unit_id, unit_name, unit_level, parent_unit_id, period, ckmb, tdgq, clgq, tttt, mdsh, mdhl, \
               total, rank_among_siblings, change_from_previous, status \
             FROM pub_index_unit_period WHERE period = ? AND revision = ? \
             ORDER BY unit_level, parent_unit_id NULLS FIRST, rank_among_siblings, unit_id",
        )?;
        let units = stmt
            .query_map(duckdb::params![period, revision], |r| {
                Ok(UnitRow {
                    unit_id: r.get(0)?,
                    unit_name: r.get(1)?,
                    unit_level: r.get(2)?,
                    parent_unit_id: r.get(3)?,
                    period: r.get(4)?,
                    ckmb: r.get(5)?,
                    tdgq: r.get(6)?,
                    clgq: r.get(7)?,
                    tttt: r.get(8)?,
                    mdsh: r.get(9)?,
                    mdhl: r.get(10)?,
                    total: r.get(11)?,
                    rank_among_siblings: r.get(12)?,
                    change_from_previous: r.get(13)?,
                    status: r.get(14)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut stmt = conn.prepare(
            "SELECT unit_id, group_code, indicator, numerator, denominator, ratio, points, max_points \
             FROM pub_index_indicator WHERE period = ? AND revision = ? ORDER BY unit_id, group_code, indicator",
        )?;
        let indicators = stmt
            .query_map(duckdb::params![period, revision], |r| {
                Ok(IndicatorRow {
                    unit_id: r.get(0)?,
                    group_code: r.get(1)?,
                    indicator: r.get(2)?,
                    numerator: r.get(3)?,
                    denominator: r.get(4)?,
                    ratio: r.get(5)?,
                    points: r.get(6)?,
                    max_points: r.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Revision {
            meta,
            units,
            indicators,
        })
    }

    /// The unit levels present, in order.
    pub fn levels(&self) -> Vec<i64> {
        let mut l: Vec<i64> = self.units.iter().filter_map(|u| u.unit_level).collect();
        l.sort();
        l.dedup();
        l
    }

    pub fn units_of(&self, level: i64) -> impl Iterator<Item = &UnitRow> {
        self.units
            .iter()
            .filter(move |u| u.unit_level == Some(level))
    }

    /// Indicator rows per unit.
    pub fn indicators_by_unit(&self) -> BTreeMap<&str, Vec<&IndicatorRow>> {
        let mut m: BTreeMap<&str, Vec<&IndicatorRow>> = BTreeMap::new();
        for i in &self.indicators {
            m.entry(i.unit_id.as_str()).or_default().push(i);
        }
        m
    }
}

/// A status as an office writes it.
pub fn status_vi(status: &str) -> &'static str {
    match status {
        "final" => "Chính thức",
        _ => "Tạm tính",
    }
}
