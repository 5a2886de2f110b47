//! The service-quality index: methodology versions (data files under `sql/methodology/`) and
//! `chiso index score`, which scores given counts with the warehouse's own scoring SQL
//! (`sql/index/int_indicator_points.sql`) in an in-memory DuckDB.
//!
//! Owns reading methodology files and the counts CSV format; the scoring rules themselves live
//! in the SQL file, never here.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::duck;
use crate::models::template::{self, Resolve};

/// Methodology files built into the binary (used when no `sql/methodology/` folder is found).
pub const EMBEDDED_METHODOLOGIES: &[(&str, &str)] = &[(
    "dvcqg-2026.csv",
    include_str!("../../sql/methodology/dvcqg-2026.csv"),
)];

/// The scoring model, built into the binary.
pub const POINTS_SQL: &str = include_str!("../../sql/index/int_indicator_points.sql");

/// One indicator of a methodology version (one row of its CSV file).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IndicatorRule {
    pub methodology: String,
    /// First period (`YYYY-MM`) the version applies to.
    pub effective_from: String,
    pub group_code: String,
    pub group_name: String,
    pub group_max: f64,
    pub indicator: String,
    pub max_points: f64,
    /// Empty for indicators shown but not scored.
    pub target: Option<f64>,
    /// `not_scored`, `zero` or `full`.
    pub zero_denominator: String,
    /// `all`, `top` (top of a unit tree only) or `communes` (not applicable to tax units).
    pub applies_to: String,
    /// `receipt`, `handled_or_open`, `announcement`, `first_receipt` or `as_of_now`.
    pub period_attribution: String,
    pub scored: bool,
    pub numerator: String,
    pub denominator: String,
    /// DOSSIER_SYNC's sync window: a status change counts as synced in time when it reached
    /// the portal within this many hours (SPEC §4: a parameter, default 24, which an empty
    /// cell means). Empty for every other indicator.
    pub window_hours: Option<f64>,
}

/// All methodology versions.
#[derive(Debug, Clone, Default)]
pub struct Methodologies {
    pub rules: Vec<IndicatorRule>,
}

impl Methodologies {
    /// Reads every `*.csv` in `dir`, or the built-in versions if `dir` does not exist.
    pub fn load(dir: &Path) -> anyhow::Result<Methodologies> {
        if !dir.is_dir() {
            return Self::embedded();
        }
        let mut paths: Vec<_> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "csv"))
            .collect();
        paths.sort();
        let mut files = Vec::new();
        for p in paths {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            files.push((p.display().to_string(), text));
        }
        Self::parse(files)
    }

    /// The versions built into the binary.
    pub fn embedded() -> anyhow::Result<Methodologies> {
        Self::parse(
            EMBEDDED_METHODOLOGIES
                .iter()
                .map(|(name, text)| {
                    (
                        format!("<built-in>/sql/methodology/{name}"),
                        text.to_string(),
                    )
                })
                .collect(),
        )
    }

    /// Parses (file name, CSV text) pairs and checks them.
    fn parse(files: Vec<(String, String)>) -> anyhow::Result<Methodologies> {
        let mut rules = Vec::new();
        for (name, text) in files {
            let mut r = csv::Reader::from_reader(text.as_bytes());
            for (i, row) in r.deserialize::<IndicatorRule>().enumerate() {
                let rule =
                    row.with_context(|| format!("{name}:{}: not a methodology row", i + 2))?;
                validate_rule(&rule)
                    .with_context(|| format!("{name}:{}: {}", i + 2, rule.indicator))?;
                rules.push(rule);
            }
        }
        let mut seen = HashSet::new();
        let mut groups: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
        for r in &rules {
            if !seen.insert((r.methodology.clone(), r.indicator.clone())) {
                bail!("methodology {} lists {} twice", r.methodology, r.indicator);
            }
            let g = groups
                .entry((r.methodology.clone(), r.group_code.clone()))
                .or_insert((0.0, r.group_max));
            g.0 += r.max_points;
        }
        for ((m, g), (sum, max)) in groups {
            if (sum - max).abs() > 1e-9 {
                bail!("methodology {m}: the indicators of group {g} add up to {sum}, not its group_max {max}");
            }
        }
        Ok(Methodologies { rules })
    }

    pub fn versions(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .rules
            .iter()
            .map(|r| (r.methodology.clone(), r.effective_from.clone()))
            .collect();
        v.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        v.dedup();
        v
    }

    /// The version in force for a period: the latest whose `effective_from` is not after the
    /// period's first month.
    pub fn for_period(&self, period: &Period) -> Option<String> {
        let first = period.first_month();
        self.versions()
            .into_iter()
            .rev()
            .find(|(_, from)| from.as_str() <= first.as_str())
            .map(|(m, _)| m)
    }

    pub fn rules_of(&self, methodology: &str) -> Vec<&IndicatorRule> {
        self.rules
            .iter()
            .filter(|r| r.methodology == methodology)
            .collect()
    }
}

fn validate_rule(r: &IndicatorRule) -> anyhow::Result<()> {
    if !matches!(r.zero_denominator.as_str(), "not_scored" | "zero" | "full") {
        bail!(
            "zero_denominator {:?}: expected not_scored, zero or full",
            r.zero_denominator
        );
    }
    if !matches!(r.applies_to.as_str(), "all" | "top" | "communes") {
        bail!(
            "applies_to {:?}: expected all, top or communes",
            r.applies_to
        );
    }
    if r.scored && !r.target.is_some_and(|t| t > 0.0) {
        bail!("a scored indicator needs a target above 0");
    }
    if r.max_points < 0.0 || r.max_points > r.group_max {
        bail!(
            "max_points {} must be between 0 and the group's {}",
            r.max_points,
            r.group_max
        );
    }
    match (r.indicator.as_str(), r.window_hours) {
        ("DOSSIER_SYNC", Some(h)) if !(h > 0.0 && h.fract() == 0.0) => {
            bail!("window_hours {h}: the sync window is a whole number of hours above 0")
        }
        ("DOSSIER_SYNC", _) => {}
        (_, Some(_)) => bail!("window_hours is DOSSIER_SYNC's parameter only"),
        (_, None) => {}
    }
    if Period::parse(&r.effective_from).is_none_or(|p| !matches!(p, Period::Month(..))) {
        bail!(
            "effective_from {:?} must be a month, YYYY-MM",
            r.effective_from
        );
    }
    Ok(())
}

pub use crate::time::Period;

/// One row of a counts file.
#[derive(Debug, Clone, PartialEq)]
pub struct CountRow {
    pub line: usize,
    pub unit_id: String,
    pub period: String,
    pub indicator: String,
    pub numerator: f64,
    pub denominator: f64,
    pub numerator_text: String,
    pub denominator_text: String,
}

fn count(text: &str, what: &str, line: usize, source: &str) -> anyhow::Result<f64> {
    let v: f64 = text
        .trim()
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .with_context(|| format!("{source}:{line}: {what} {text:?} is not a number"))?;
    if v < 0.0 {
        bail!("{source}:{line}: {what} {text} is negative; counts are 0 or more");
    }
    Ok(v)
}

/// Reads `unit_id,period,indicator,numerator,denominator` rows, checking each against `known`
/// indicators; every error names the line.
pub fn read_counts(
    text: &str,
    source: &str,
    known: &HashSet<String>,
) -> anyhow::Result<Vec<CountRow>> {
    let mut r = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let header: Vec<String> = r
        .headers()?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
        .collect();
    let want = ["unit_id", "period", "indicator", "numerator", "denominator"];
    if header != want {
        bail!(
            "{source}:1: the header must be {}; found {}",
            want.join(","),
            header.join(",")
        );
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, rec) in r.records().enumerate() {
        let line = i + 2;
        let rec = rec.with_context(|| format!("{source}:{line}: unreadable CSV row"))?;
        if rec.len() != 5 {
            bail!(
                "{source}:{line}: {} fields, expected 5 ({})",
                rec.len(),
                want.join(",")
            );
        }
        let unit_id = rec[0].trim().to_string();
        if unit_id.is_empty() {
            bail!("{source}:{line}: unit_id is empty");
        }
        let period = rec[1].trim().to_string();
        if Period::parse(&period).is_none() {
            bail!("{source}:{line}: period {period:?} must be YYYY-MM, YYYY-QN or YYYY");
        }
        let indicator = rec[2].trim().to_string();
        if !known.contains(&indicator) {
            let mut k: Vec<&String> = known.iter().collect();
            k.sort();
            bail!(
                "{source}:{line}: unknown indicator {indicator:?} (the methodology has {})",
                k.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        let numerator = count(&rec[3], "numerator", line, source)?;
        let denominator = count(&rec[4], "denominator", line, source)?;
        if !seen.insert((unit_id.clone(), period.clone(), indicator.clone())) {
            bail!("{source}:{line}: {unit_id} {period} {indicator} is given twice");
        }
        out.push(CountRow {
            line,
            unit_id,
            period,
            indicator,
            numerator,
            denominator,
            numerator_text: rec[3].trim().to_string(),
            denominator_text: rec[4].trim().to_string(),
        });
    }
    Ok(out)
}

struct Tables;

impl Resolve for Tables {
    fn model(&self, name: &str) -> String {
        format!("\"{name}\"")
    }
    fn source(&self, feed: &str, dataset: &str) -> String {
        format!("\"{feed}__{dataset}\"")
    }
    fn this(&self) -> String {
        "\"int_indicator_points\"".into()
    }
}

fn num(v: Option<f64>) -> String {
    match v {
        None => String::new(),
        Some(x) => format!("{x}"),
    }
}

/// Scores `counts` (CSV text) and returns the output CSV. `methodology` forces a version;
/// otherwise each period uses the version in force.
pub fn score(
    counts_text: &str,
    source: &str,
    methodologies: &Methodologies,
    methodology: Option<&str>,
) -> anyhow::Result<String> {
    if let Some(m) = methodology {
        if methodologies.rules_of(m).is_empty() {
            let v: Vec<String> = methodologies
                .versions()
                .into_iter()
                .map(|(m, _)| m)
                .collect();
            bail!("unknown methodology {m:?} (known: {})", v.join(", "));
        }
    }
    let known: HashSet<String> = methodologies
        .rules
        .iter()
        .map(|r| r.indicator.clone())
        .collect();
    let rows = read_counts(counts_text, source, &known)?;
    let conn = duck::in_memory(1)?;
    conn.execute_batch(
        "CREATE TABLE int_indicator_counts (unit_id VARCHAR, period VARCHAR, indicator VARCHAR, \
           numerator DOUBLE, denominator DOUBLE, is_top BOOLEAN, methodology VARCHAR);
         CREATE TABLE methodology (methodology VARCHAR, effective_from VARCHAR, group_code VARCHAR, \
           group_name VARCHAR, group_max DOUBLE, indicator VARCHAR, max_points DOUBLE, target DOUBLE, \
           zero_denominator VARCHAR, applies_to VARCHAR, period_attribution VARCHAR, scored BOOLEAN, \
           numerator VARCHAR, denominator VARCHAR);",
    )?;
    {
        let mut app = conn.appender("methodology")?;
        for r in &methodologies.rules {
            app.append_row(duckdb::params![
                r.methodology,
                r.effective_from,
                r.group_code,
                r.group_name,
                r.group_max,
                r.indicator,
                r.max_points,
                r.target,
                r.zero_denominator,
                r.applies_to,
                r.period_attribution,
                r.scored,
                r.numerator,
                r.denominator
            ])?;
        }
    }
    let mut texts: BTreeMap<(String, String, String), (String, String)> = BTreeMap::new();
    {
        let mut app = conn.appender("int_indicator_counts")?;
        for c in &rows {
            let period = Period::parse(&c.period).expect("checked");
            let m = match methodology {
                Some(m) => m.to_string(),
                None => methodologies.for_period(&period).with_context(|| {
                    format!(
                        "{source}:{}: no methodology is in force for {}",
                        c.line, c.period
                    )
                })?,
            };
            if !methodologies
                .rules_of(&m)
                .iter()
                .any(|r| r.indicator == c.indicator)
            {
                bail!(
                    "{source}:{}: indicator {} is not part of methodology {m}",
                    c.line,
                    c.indicator
                );
            }
            app.append_row(duckdb::params![
                c.unit_id,
                c.period,
                c.indicator,
                c.numerator,
                c.denominator,
                Option::<bool>::None,
                m
            ])?;
            texts.insert(
                (c.unit_id.clone(), c.period.clone(), c.indicator.clone()),
                (c.numerator_text.clone(), c.denominator_text.clone()),
            );
        }
    }
    let sql = template::parse(POINTS_SQL)
        .map_err(|e| anyhow::anyhow!("sql/index/int_indicator_points.sql: {e}"))?
        .render(&Tables, false);
    conn.execute_batch(&format!("CREATE TABLE int_indicator_points AS {sql}"))?;

    // Indicator rows in methodology order, then the groups and the total of each unit and period.
    let mut out =
        String::from("unit_id,period,indicator,numerator,denominator,ratio,points,max_points\n");
    let mut stmt = conn.prepare(
        "WITH order_of AS (SELECT methodology, indicator, rowid AS pos FROM methodology)
         SELECT p.unit_id, p.period, p.indicator, p.numerator, p.denominator, p.ratio, p.points, p.max_points
         FROM int_indicator_points p JOIN order_of o USING (methodology, indicator)
         ORDER BY p.unit_id, p.period, o.pos",
    )?;
    let mut groups_stmt = conn.prepare(
        "WITH groups AS (
             SELECT methodology, group_code, any_value(group_max) AS group_max, min(rowid) AS pos
             FROM methodology GROUP BY methodology, group_code),
         up AS (SELECT DISTINCT unit_id, period, methodology FROM int_indicator_points)
         SELECT up.unit_id, up.period, g.group_code, coalesce(sum(p.points), 0) AS points, g.group_max
         FROM up JOIN groups g USING (methodology)
         LEFT JOIN int_indicator_points p
           ON p.unit_id = up.unit_id AND p.period = up.period AND p.group_code = g.group_code
         GROUP BY up.unit_id, up.period, g.group_code, g.group_max, g.pos
         ORDER BY up.unit_id, up.period, g.pos",
    )?;
    type Row = (
        String,
        String,
        String,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        f64,
    );
    let indicator_rows: Vec<Row> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let group_rows: Vec<(String, String, String, f64, f64)> = groups_stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    let mut keys: Vec<(String, String)> = indicator_rows
        .iter()
        .map(|r| (r.0.clone(), r.1.clone()))
        .collect();
    keys.dedup();
    for (unit, period) in keys {
        for r in indicator_rows
            .iter()
            .filter(|r| r.0 == unit && r.1 == period)
        {
            let (nt, dt) = texts
                .get(&(r.0.clone(), r.1.clone(), r.2.clone()))
                .cloned()
                .unwrap_or_else(|| (num(r.3), num(r.4)));
            w.write_record([
                &r.0,
                &r.1,
                &r.2,
                &nt,
                &dt,
                &num(r.5),
                &num(r.6),
                &num(Some(r.7)),
            ])?;
        }
        let mut total = 0.0;
        let mut total_max = 0.0;
        for g in group_rows.iter().filter(|g| g.0 == unit && g.1 == period) {
            total += g.3;
            total_max += g.4;
            w.write_record([
                &g.0,
                &g.1,
                &format!("GROUP:{}", g.2),
                "",
                "",
                "",
                &num(Some(g.3)),
                &num(Some(g.4)),
            ])?;
        }
        w.write_record([
            &unit,
            &period,
            "TOTAL",
            "",
            "",
            "",
            &num(Some(total)),
            &num(Some(total_max)),
        ])?;
    }
    out.push_str(&String::from_utf8(
        w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?,
    )?);
    Ok(out)
}

#[cfg(test)]
mod tests;
