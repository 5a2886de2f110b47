//! The reconcile job kind (`kind = "reconcile"` in a job file): at each planned time, the daemon
//! compares the periods the job names with the portal's published evaluation, from the
//! published warehouse (`chiso reconcile`, docs/reconciliation.md), and records the outcome in
//! the job's fire history: `ok` when every figure agrees within rounding, `differences` when
//! some do not (the summary in the fire's error), `failed` when the warehouse holds no
//! reconciliation of a period yet.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, CronExpr, PeriodChoice, Source};

/// A reconcile job.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconcileJobConfig {
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    pub enabled: bool,
    pub schedule: CronExpr,
    /// The periods compared at each fire, as of the planned time's date (default: the previous
    /// month).
    pub periods: Vec<PeriodChoice>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconcileJobFile {
    #[allow(dead_code)]
    kind: String,
    description: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    schedule: CronExpr,
    #[serde(default = "previous_month")]
    periods: Vec<PeriodChoice>,
}

fn yes() -> bool {
    true
}

fn previous_month() -> Vec<PeriodChoice> {
    vec![PeriodChoice::PreviousMonth]
}

pub(super) fn parse_reconcile_job(
    path: &Path,
    src: &Source<'_>,
) -> Result<ReconcileJobConfig, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let name = super::job_name(src, &mut errors);
    let file: ReconcileJobFile = match toml::from_str(src.text) {
        Ok(f) => f,
        Err(e) => {
            errors.push(src.toml_error(e));
            return Err(errors);
        }
    };
    if file.periods.is_empty() {
        errors.push(src.at(None, "periods = [] names no period to reconcile"));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ReconcileJobConfig {
        name,
        file: path.to_path_buf(),
        description: file.description.unwrap_or_default(),
        enabled: file.enabled,
        schedule: file.schedule,
        periods: file.periods,
    })
}
