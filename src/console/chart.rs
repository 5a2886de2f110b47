//! The console's charts, as inline SVG drawn by plotters (as the publication report's are): a
//! unit's total and groups across its periods, and the day's fires on a timeline.

use plotters::prelude::*;

use super::operations::Fire;
use super::queries::HistoryPoint;
use crate::publish::rows::GROUPS;

/// The total's colour; each group has its own beside it.
const TOTAL: RGBColor = RGBColor(0xc8, 0x10, 0x2e);
const GROUP_COLOURS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x5f, 0xa8),
    RGBColor(0x2e, 0x8b, 0x57),
    RGBColor(0x8e, 0x44, 0xad),
    RGBColor(0xd3, 0x8b, 0x00),
    RGBColor(0x00, 0x8b, 0x8b),
    RGBColor(0x6d, 0x4c, 0x41),
];

/// The colours of the groups, for the legend (`#rrggbb`).
pub fn group_colours() -> Vec<String> {
    GROUP_COLOURS
        .iter()
        .map(|c| format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2))
        .collect()
}

/// The total (of 100, left axis, a point per period) and the six groups (each as a share of
/// its maximum, in %, lines) across `points`, oldest first.
pub fn history(points: &[HistoryPoint]) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 300)).into_drawing_area();
        root.fill(&WHITE)?;
        let n = points.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(40)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..100f64)?;
        let labels: Vec<String> = points.iter().map(|p| p.period.clone()).collect();
        let step = (n / 12).max(1);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n.min(13))
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() > 1e-6 || i < 0.0 {
                    return String::new();
                }
                let i = i as usize;
                if i.is_multiple_of(step) {
                    labels.get(i).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("Điểm / % điểm tối đa")
            .label_style(("sans-serif", 11))
            .draw()?;
        for (g, colour) in GROUP_COLOURS.iter().enumerate() {
            let max = GROUPS[g].3;
            chart.draw_series(LineSeries::new(
                points
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (i as f64, 100.0 * p.groups[g] / max)),
                colour.stroke_width(1),
            ))?;
        }
        chart.draw_series(LineSeries::new(
            points.iter().enumerate().map(|(i, p)| (i as f64, p.total)),
            TOTAL.stroke_width(3),
        ))?;
        // One point per period: the total, the only circles drawn.
        chart.draw_series(
            points
                .iter()
                .enumerate()
                .map(|(i, p)| Circle::new((i as f64, p.total), 4, TOTAL.filled())),
        )?;
        root.present()?;
    }
    Ok(svg)
}

fn outcome_colour(outcome: &str) -> RGBColor {
    match outcome {
        "ok" => RGBColor(0x2e, 0x8b, 0x57),
        "quarantined" | "differences" | "held" | "push_pending" | "busy" => {
            RGBColor(0xd3, 0x8b, 0x00)
        }
        _ => RGBColor(0xb0, 0x00, 0x20),
    }
}

/// The fires of the last day, one row per job (`jobs`, top to bottom), 24 hours ago on the
/// left and now on the right, coloured by outcome.
pub fn timeline(jobs: &[String], fires: &[Fire]) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let rows = jobs.len().max(1);
        let height = 40 + 22 * rows as u32;
        let root = SVGBackend::with_string(&mut svg, (900, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(8)
            .margin_right(40)
            .x_label_area_size(26)
            .y_label_area_size(150)
            .build_cartesian_2d(-24f64..0f64, -0.5f64..(rows as f64 - 0.5))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_labels(13)
            .x_label_formatter(&|h| {
                if h.abs() < 1e-9 {
                    "bây giờ".into()
                } else {
                    format!("{h:.0} giờ")
                }
            })
            .y_labels(rows)
            .y_label_formatter(&|y| {
                let i = y.round();
                if (y - i).abs() > 1e-6 || i < 0.0 {
                    return String::new();
                }
                jobs.get(rows - 1 - i as usize).cloned().unwrap_or_default()
            })
            .label_style(("sans-serif", 11))
            .draw()?;
        for f in fires {
            let Some(row) = jobs.iter().position(|j| *j == f.job) else {
                continue;
            };
            let y = (rows - 1 - row) as f64;
            let x = -f.hours_ago;
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x - 0.04, y - 0.3), (x + 0.04, y + 0.3)],
                outcome_colour(&f.outcome).filled(),
            )))?;
        }
        root.present()?;
    }
    Ok(svg)
}
