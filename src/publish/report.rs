//! The HTML report a leader opens: one self-contained file (styles inline, charts as inline
//! SVG drawn by plotters, the page from a minijinja template, `report.html`), which renders
//! with no network: the ranking per level, a chart per group, the distribution of totals, the
//! movers since the previous period, per unit the indicators that cost it the most points,
//! and the change note of a revision after the first.

use anyhow::Context;
use plotters::prelude::*;
use serde::Serialize;

use super::rows::{status_vi, Revision, UnitRow, GROUPS};

const TEMPLATE: &str = include_str!("report.html");

/// What the template shows.
#[derive(Serialize)]
struct Page<'a> {
    period: &'a str,
    revision: i64,
    previous_revision: Option<i64>,
    status: &'a str,
    status_vi: &'static str,
    methodology: Option<&'a str>,
    data_watermark: Option<&'a str>,
    created_at: &'a str,
    sql_digest: Option<&'a str>,
    build_id: Option<&'a str>,
    chiso_version: &'static str,
    unit_count: usize,
    change_note: Option<Note>,
    warnings: &'a [super::guard::Warning],
    accepted: Option<&'a str>,
    chart_level: i64,
    totals_chart: String,
    group_charts: Vec<GroupChart>,
    movers: Vec<Mover>,
    levels: Vec<Level>,
    groups: Vec<serde_json::Value>,
}

#[derive(Serialize)]
struct GroupChart {
    code: &'static str,
    name: &'static str,
    max: f64,
    svg: String,
}

#[derive(Serialize)]
struct Level {
    level: i64,
    units: Vec<UnitLine>,
}

#[derive(Serialize)]
struct UnitLine {
    unit_id: String,
    unit_name: String,
    parent: String,
    rank: String,
    groups: Vec<String>,
    total: String,
    change: String,
    direction: &'static str,
    costly: Vec<String>,
}

#[derive(Serialize)]
struct Mover {
    unit_id: String,
    unit_name: String,
    total: String,
    change: String,
    direction: &'static str,
}

#[derive(Serialize)]
struct NoteUnit {
    unit_id: String,
    unit_name: String,
    total: String,
    indicators: Vec<String>,
}

#[derive(Serialize)]
struct Note {
    previous_revision: i64,
    reasons: Vec<String>,
    units: Vec<NoteUnit>,
}

fn two(v: f64) -> String {
    format!("{v:.2}")
}

fn signed(v: Option<f64>) -> (String, &'static str) {
    match v {
        Some(c) if c > 0.0 => (format!("{c:+.2}"), "up"),
        Some(c) if c < 0.0 => (format!("{c:+.2}"), "down"),
        Some(c) => (format!("{c:.2}"), ""),
        None => ("—".into(), ""),
    }
}

/// A histogram of `values` over `0..max` in `bins` bars, as an SVG element.
fn histogram(values: &[f64], max: f64, bins: usize, x_label: &str) -> anyhow::Result<String> {
    let width = max / bins as f64;
    let mut counts = vec![0u32; bins];
    for v in values {
        let i = ((v / width).floor().max(0.0) as usize).min(bins - 1);
        counts[i] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(0).max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (420, 220)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(8)
            .x_label_area_size(34)
            .y_label_area_size(36)
            .build_cartesian_2d(0f64..max, 0u32..top + top / 8 + 1)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(x_label)
            .y_desc("Số đơn vị")
            .label_style(("sans-serif", 11))
            .draw()?;
        chart.draw_series(counts.iter().enumerate().map(|(i, c)| {
            let x0 = i as f64 * width;
            Rectangle::new(
                [(x0 + width * 0.05, 0), (x0 + width * 0.95, *c)],
                RGBColor(0x1f, 0x5f, 0xa8).filled(),
            )
        }))?;
        root.present()?;
    }
    Ok(svg)
}

pub fn render(rev: &Revision) -> anyhow::Result<String> {
    // Charts are drawn over the deepest level (the base units), the one leaders compare.
    let chart_level = rev.levels().last().copied().unwrap_or(1);
    let base: Vec<_> = rev.units_of(chart_level).collect();
    let totals: Vec<f64> = base.iter().map(|u| u.total).collect();
    let totals_chart = histogram(&totals, 100.0, 20, "Tổng điểm")?;
    let mut group_charts = Vec::new();
    for (col, code, name, max) in GROUPS {
        let values: Vec<f64> = base.iter().map(|u| u.group(col)).collect();
        group_charts.push(GroupChart {
            code,
            name,
            max,
            svg: histogram(&values, max, 10, "Điểm")?,
        });
    }
    let by_unit = rev.indicators_by_unit();
    let levels: Vec<Level> = rev
        .levels()
        .into_iter()
        .map(|level| Level {
            level,
            units: rev
                .units_of(level)
                .map(|u| {
                    let (change, direction) = signed(u.change_from_previous);
                    let mut lost: Vec<(f64, &str)> = by_unit
                        .get(u.unit_id.as_str())
                        .map(|is| {
                            is.iter()
                                .filter_map(|i| {
                                    let lost = i.max_points? - i.points?;
                                    (lost > 0.005).then_some((lost, i.indicator.as_str()))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    lost.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
                    UnitLine {
                        unit_id: u.unit_id.clone(),
                        unit_name: u.unit_name.clone().unwrap_or_default(),
                        parent: u.parent_unit_id.clone().unwrap_or_default(),
                        rank: u
                            .rank_among_siblings
                            .map(|r| r.to_string())
                            .unwrap_or_default(),
                        groups: GROUPS.iter().map(|(c, ..)| two(u.group(c))).collect(),
                        total: two(u.total),
                        change,
                        direction,
                        costly: lost
                            .iter()
                            .take(3)
                            .map(|(l, i)| format!("{i} (−{l:.2})"))
                            .collect(),
                    }
                })
                .collect(),
        })
        .collect();
    let mut moved: Vec<_> = base
        .iter()
        .filter(|u| u.change_from_previous.is_some_and(|c| c != 0.0))
        .collect();
    moved.sort_by(|a, b| {
        let c = |u: &&&UnitRow| u.change_from_previous.unwrap_or(0.0).abs();
        c(b).total_cmp(&c(a)).then(a.unit_id.cmp(&b.unit_id))
    });
    let movers: Vec<Mover> = moved
        .iter()
        .take(10)
        .map(|u| {
            let (change, direction) = signed(u.change_from_previous);
            Mover {
                unit_id: u.unit_id.clone(),
                unit_name: u.unit_name.clone().unwrap_or_default(),
                total: two(u.total),
                change,
                direction,
            }
        })
        .collect();
    let note = rev.meta.change_note.as_ref().map(|n| Note {
        previous_revision: n.previous_revision,
        reasons: n.reasons.clone(),
        units: n
            .units
            .iter()
            .map(|u| NoteUnit {
                unit_id: u.unit_id.clone(),
                unit_name: u.unit_name.clone().unwrap_or_default(),
                total: match (u.total_from, u.total_to) {
                    (Some(a), Some(b)) => format!("{a:.2} → {b:.2} ({:+.2})", b - a),
                    (None, Some(b)) => format!("mới, {b:.2}"),
                    (Some(a), None) => format!("{a:.2}, không còn công bố"),
                    (None, None) => "chỉ thay đổi xếp hạng".into(),
                },
                indicators: u
                    .indicators
                    .iter()
                    .map(|i| {
                        format!(
                            "{}: {} → {}",
                            i.indicator,
                            i.from.as_deref().unwrap_or("—"),
                            i.to.as_deref().unwrap_or("—")
                        )
                    })
                    .collect(),
            })
            .collect(),
    });
    let groups: Vec<_> = GROUPS
        .iter()
        .map(|(_, code, ..)| serde_json::json!({ "code": code }))
        .collect();
    let mut env = minijinja::Environment::new();
    env.add_template("report.html", TEMPLATE)
        .context("the report template")?;
    let m = &rev.meta;
    let page = Page {
        period: &m.period,
        revision: m.revision,
        previous_revision: m.previous_revision,
        status: &m.status,
        status_vi: status_vi(&m.status),
        methodology: m.methodology.as_deref(),
        data_watermark: m.data_watermark.as_deref(),
        created_at: &m.created_at,
        sql_digest: m.sql_digest.as_deref().map(|d| &d[..d.len().min(12)]),
        build_id: m.build_id.as_deref(),
        chiso_version: env!("CARGO_PKG_VERSION"),
        unit_count: rev.units.len(),
        change_note: note,
        warnings: &m.warnings,
        accepted: m.accepted.as_deref(),
        chart_level,
        totals_chart,
        group_charts,
        movers,
        levels,
        groups,
    };
    let html = env
        .get_template("report.html")?
        .render(minijinja::value::Serde(&page))
        .context("rendering the report")?;
    Ok(html)
}
