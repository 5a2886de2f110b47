//! `chiso reconcile PERIOD`: the portal's published evaluation beside chiso's index.

use super::*;

#[derive(Args)]
pub(crate) struct ReconcileArgs {
    /// The period: a month (2026-08), a quarter (2026-Q3) or a year (2026); `latest` for the
    /// newest ended month the portal's evaluation was pulled for.
    pub(crate) period: String,
    /// Which rows to list: the indicators that explain the differences (default), the group
    /// scores, the totals, or all.
    #[arg(long, value_enum, default_value = "indicator")]
    pub(crate) level: chiso::reconcile::Level,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Differences listed (the JSON has all).
    #[arg(long, default_value_t = 40)]
    pub(crate) limit: usize,
}

/// Exit status 0 when every figure agrees within rounding, 4 when some differ beyond it.
pub(crate) async fn reconcile(g: &Globals, a: ReconcileArgs) -> anyhow::Result<u8> {
    let (project, _) = chiso::demo::load_project_or_embedded(&g.config)?;
    let warehouse = warehouse_dir(&g.dir, &project);
    let conn = chiso::reconcile::open(&warehouse)?;
    let period = if a.period == "latest" {
        chiso::reconcile::latest_ended_month(&conn)?
            .context("the portal's evaluation has not been pulled for an ended month yet")?
    } else {
        chiso::config::publish::parse_period(&a.period).map_err(anyhow::Error::msg)?
    };
    let report = chiso::reconcile::report(&conn, &period, a.level)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", chiso::reconcile::render(&report, a.limit));
    }
    Ok(if report.beyond() > 0 {
        EXIT_DIFFERENCES
    } else {
        EXIT_OK
    })
}
