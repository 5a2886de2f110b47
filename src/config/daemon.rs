//! What the daemon (`chiso serve`) reads from the job files: how a pull job's scheduled fires
//! behave (`[run]`: overlap, catch-up after downtime, timeout, retries; `freshness_target`), and
//! the build job kind (`kind = "build"`), which builds the warehouse after pulls that landed
//! rows, debounced.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use super::{ConfigError, CronExpr, Source};

/// A duration written as humans do, `"30s"`, `"15m"`, `"1h 30m"` (humantime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                de::Error::custom(format!(
                    "{s:?} is not a duration like \"30s\" or \"15m\": {e}"
                ))
            })
    }
}

/// What a fire does when it finds its job still running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Recorded as skipped; the running run goes on alone.
    #[default]
    Skip,
    /// Waits, and runs when the running run ends (one after another, never side by side).
    Queue,
}

/// What the daemon does with the fires it missed while it was down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// One run for all of them (the newest planned time), before any fire due now; the others
    /// are recorded as skipped.
    #[default]
    Once,
    /// A run for each, one after another.
    All,
    /// None: all are recorded as skipped.
    Skip,
}

/// `[run]` of a pull job: how the daemon runs its fires.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RunPolicy {
    /// `skip` (default) or `queue`.
    #[serde(default)]
    pub overlap: Overlap,
    /// `once` (default), `all` or `skip`.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// A run still going after this long is stopped (recovered like a crash at its next
    /// start) and counts as failed. Default 30m.
    #[serde(default = "thirty_minutes")]
    pub timeout: HumanDuration,
    /// Runs again after a failed run (on top of the HTTP retries of each call). Default 2.
    #[serde(default = "two")]
    pub retries: u32,
    /// Wait before the first retry; doubled for each next one. Default 30s.
    #[serde(default = "thirty_seconds")]
    pub retry_delay: HumanDuration,
    /// A fire this late (the daemon was down, or busy) is a misfire, handled by `catch_up`.
    /// Default 1m.
    #[serde(default = "one_minute")]
    pub misfire_after: HumanDuration,
    /// With `overlap = "queue"` (and for fires caught up by `catch_up = "all"`), at most this
    /// many fires wait; one more is recorded as skipped. Default 10.
    #[serde(default = "ten")]
    pub max_queued: usize,
}

impl Default for RunPolicy {
    fn default() -> Self {
        RunPolicy {
            overlap: Overlap::default(),
            catch_up: CatchUp::default(),
            timeout: thirty_minutes(),
            retries: two(),
            retry_delay: thirty_seconds(),
            misfire_after: one_minute(),
            max_queued: ten(),
        }
    }
}

fn ten() -> usize {
    10
}

impl RunPolicy {
    /// The wait before retry `n` (1-based): `retry_delay` doubled per retry, at most an hour.
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(1).min(12);
        (self.retry_delay.0 * factor).min(Duration::from_secs(3600))
    }
}

fn thirty_minutes() -> HumanDuration {
    HumanDuration(Duration::from_secs(1800))
}
fn thirty_seconds() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn one_minute() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn two() -> u32 {
    2
}

/// What kind of job a file describes (`kind = …`, `pull` when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Pull,
    Build,
    Publish,
    Reconcile,
}

#[derive(Deserialize)]
struct KindOnly {
    kind: Option<toml::Spanned<String>>,
}

/// Reads only `kind` from a job file's text; an unknown kind is an error naming its line.
pub(super) fn job_kind(src: &Source<'_>) -> Result<JobKind, ConfigError> {
    let peek: KindOnly = toml::from_str(src.text).map_err(|e| src.toml_error(e))?;
    match peek.kind {
        None => Ok(JobKind::Pull),
        Some(k) => match k.get_ref().as_str() {
            "pull" => Ok(JobKind::Pull),
            "build" => Ok(JobKind::Build),
            "publish" => Ok(JobKind::Publish),
            "reconcile" => Ok(JobKind::Reconcile),
            other => Err(src.at(
                Some(k.span()),
                format!(
                    "kind {other:?}: expected \"pull\" (the default), \"build\", \"publish\" or \"reconcile\""
                ),
            )),
        },
    }
}

/// A build job (`kind = "build"`): builds the warehouse after pulls that landed rows, once
/// they have been quiet for `quiet_period` or `max_delay` after the first of them, whichever
/// comes first; and on `schedule`, if given. Never two builds at once.
#[derive(Debug, Clone)]
pub struct BuildJobConfig {
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    pub enabled: bool,
    pub after_pulls: bool,
    pub quiet_period: Duration,
    pub max_delay: Duration,
    pub schedule: Option<CronExpr>,
    pub select: Vec<String>,
    pub threads: usize,
    pub memory_limit: Option<String>,
    /// The published warehouse's data older than this is a freshness breach.
    pub freshness_target: Option<Duration>,
    /// The published file's storage format (chiso.toml's `warehouse.storage_version`).
    pub storage_version: Option<String>,
    /// A build running longer is interrupted and fails (the published warehouse stays).
    pub timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildJobFile {
    #[allow(dead_code)]
    kind: String,
    description: Option<String>,
    /// `false` keeps the daemon from building. Default `true`.
    #[serde(default = "yes")]
    enabled: bool,
    /// Build after pulls that landed rows. Default `true`.
    #[serde(default = "yes")]
    after_pulls: bool,
    /// Build once no pull has landed rows for this long. Default 5s.
    #[serde(default = "five_seconds")]
    quiet_period: HumanDuration,
    /// …or this long after the first pull that landed rows, if pulls keep landing. Default 1m.
    #[serde(default = "one_minute")]
    max_delay: HumanDuration,
    /// Also build on this cron schedule (project time zone), e.g. a nightly build.
    schedule: Option<CronExpr>,
    /// Models to build (dbt-style selectors); all when empty.
    #[serde(default)]
    select: Vec<String>,
    /// DuckDB threads (0: all cores).
    #[serde(default)]
    threads: usize,
    /// DuckDB memory limit for the build, e.g. "3GB".
    memory_limit: Option<String>,
    /// Target for the index's freshness (age of the published warehouse's data).
    freshness_target: Option<HumanDuration>,
    /// Interrupt a build running longer than this, e.g. "1h" (none when absent).
    timeout: Option<HumanDuration>,
}

fn yes() -> bool {
    true
}
fn five_seconds() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

pub(super) fn parse_build_job(
    path: &Path,
    src: &Source<'_>,
) -> Result<BuildJobConfig, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let name = super::job_name(src, &mut errors);
    let file: BuildJobFile = match toml::from_str(src.text) {
        Ok(f) => f,
        Err(e) => {
            errors.push(src.toml_error(e));
            return Err(errors);
        }
    };
    if file.quiet_period.0 > file.max_delay.0 {
        errors.push(src.at(None, "quiet_period must not exceed max_delay"));
    }
    if !file.after_pulls && file.schedule.is_none() && file.enabled {
        errors.push(src.at(
            None,
            "a build job needs after_pulls = true or a schedule, or it never builds",
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(BuildJobConfig {
        name,
        file: path.to_path_buf(),
        description: file.description.unwrap_or_default(),
        enabled: file.enabled,
        after_pulls: file.after_pulls,
        quiet_period: file.quiet_period.0,
        max_delay: file.max_delay.0,
        schedule: file.schedule,
        select: file.select,
        threads: file.threads,
        memory_limit: file.memory_limit,
        freshness_target: file.freshness_target.map(|d| d.0),
        storage_version: Some(crate::models::build::DEFAULT_STORAGE_VERSION.to_string()),
        timeout: file.timeout.map(|d| d.0),
    })
}
