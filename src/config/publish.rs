//! Publication settings: `[publish]` in chiso.toml (the guard's thresholds and the portals a
//! final revision is sent to, `[publish.targets.<name>]`) and the publish job kind
//! (`kind = "publish"` in a job file), which `chiso run` and `chiso serve` run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{interpolate, is_environment_reference, ConfigError, CronExpr, Secret, Source};

/// `[publish]` of chiso.toml.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct PublishSection {
    /// A unit's total moving more than this many points from the previous period is a
    /// warning that blocks a final publication unless accepted. Default 15.
    max_change_points: Option<f64>,
    /// A move is judged only beyond this many times the sampling spread of the unit's counts
    /// in both periods (a base unit with a handful of dossiers swings by tens of points by
    /// chance); moves within it are a note that blocks nothing. Default 3.
    movement_sigmas: Option<Spanned<f64>>,
    /// Moved to `vars: grace_days` in the SQL folder's `dbt_project.yml`, read by the models
    /// and, through the warehouse, by the guard: kept here only to say so.
    grace_days: Option<Spanned<toml::Value>>,
    /// How long a final period stays open to routine revisions after its first final
    /// revision: `"3 months"` (the default), or `"always"`. After it, only
    /// `chiso publish --correction "reason"` revises the period.
    revision_policy: Option<Spanned<String>>,
    #[serde(default)]
    targets: BTreeMap<String, Spanned<TargetSection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetSection {
    /// Where a revision is POSTed, `${VAR:-default}` allowed.
    url: Spanned<String>,
    /// Bearer token; from the environment only (`${VAR}`).
    token: Option<Spanned<String>>,
    /// `json` (default: the revision with its indicator detail) or `csv` (units only).
    #[serde(default)]
    format: PushFormat,
    /// Unit levels sent (1 central, 2 provincial, 3 base). Default all.
    levels: Option<Vec<i64>>,
    /// Seconds per request. Default 30.
    timeout_secs: Option<u64>,
    /// Tries per push within one publish (with backoff between). Default 4.
    attempts: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PushFormat {
    #[default]
    Json,
    Csv,
}

/// The resolved `[publish]` settings.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    pub max_change_points: f64,
    pub movement_sigmas: f64,
    pub targets: Vec<TargetConfig>,
    pub revision_policy: RevisionPolicy,
}

/// How long a final period stays open to routine revisions (late data, a recomputation)
/// after its first final revision; after it, only an explicit correction revises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevisionPolicy {
    /// Revised whenever its numbers move.
    Always,
    /// Open for this many months after revision 1.
    Months(u32),
}

impl Default for RevisionPolicy {
    fn default() -> Self {
        RevisionPolicy::Months(3)
    }
}

impl RevisionPolicy {
    /// `"3 months"`, `"1 month"`, `"always"`.
    pub fn parse(s: &str) -> Result<RevisionPolicy, String> {
        let t = s.trim().to_lowercase();
        if t == "always" {
            return Ok(RevisionPolicy::Always);
        }
        let mut parts = t.split_whitespace();
        match (parts.next().map(str::parse::<u32>), parts.next(), parts.next()) {
            (Some(Ok(n)), Some("month" | "months"), None) if n > 0 => Ok(RevisionPolicy::Months(n)),
            _ => Err(format!(
                "revision_policy {s:?}: expected \"N months\" (a final period stays open to routine revisions for N months after its first final revision) or \"always\""
            )),
        }
    }

    /// The policy as the ledger keeps it with a revision (`3 months`, `always`).
    pub fn text(&self) -> String {
        match self {
            RevisionPolicy::Always => "always".into(),
            RevisionPolicy::Months(1) => "1 month".into(),
            RevisionPolicy::Months(n) => format!("{n} months"),
        }
    }
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            max_change_points: 15.0,
            movement_sigmas: 3.0,
            targets: Vec::new(),
            revision_policy: RevisionPolicy::default(),
        }
    }
}

/// A portal a final revision is sent to.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub name: String,
    pub url: String,
    /// Set when `url` is its `${VAR:-default}` default because VAR is not set: the error a
    /// push fails with (only `chiso demo` retargets it).
    pub unset: Option<ConfigError>,
    pub token: Secret,
    pub format: PushFormat,
    pub levels: Vec<i64>,
    pub timeout: Duration,
    pub attempts: u32,
}

impl PublishSection {
    pub(super) fn resolve(
        self,
        src: &Source<'_>,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<ConfigError>,
    ) -> PublishConfig {
        let defaults = PublishConfig::default();
        if let Some(g) = &self.grace_days {
            errors.push(src.at(
                Some(g.span()),
                "publish.grace_days has moved to `vars: grace_days` in the SQL folder's dbt_project.yml: one setting, read by the models (a period is final once every feed passed it) and by the publish guard through the warehouse; remove it here",
            ));
        }
        let mut targets = Vec::new();
        for (name, section) in self.targets {
            let t = section.into_inner();
            let url = interpolate(t.url.get_ref(), env).unwrap_or_else(|msg| {
                errors.push(src.at(
                    Some(t.url.span()),
                    format!("publish.targets.{name}.url: {msg}"),
                ));
                String::new()
            });
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                errors.push(src.at(
                    Some(t.url.span()),
                    format!(
                        "publish.targets.{name}.url: {url:?} must start with http:// or https://"
                    ),
                ));
            }
            let token = match &t.token {
                None => Secret::default(),
                Some(v) if !is_environment_reference(v.get_ref()) => {
                    errors.push(src.at(
                        Some(v.span()),
                        format!(
                            "publish.targets.{name}.token: secrets are read from the environment; write \"${{CHISO_PUBLISH_{}_TOKEN}}\" and export that variable",
                            name.to_uppercase()
                        ),
                    ));
                    Secret::default()
                }
                Some(v) => Secret::new(interpolate(v.get_ref(), env).unwrap_or_default()),
            };
            let levels = t.levels.unwrap_or_else(|| vec![1, 2, 3]);
            if levels.is_empty() || levels.iter().any(|l| !(1..=4).contains(l)) {
                errors.push(src.at(
                    None,
                    format!("publish.targets.{name}.levels {levels:?}: expected levels 1 to 4"),
                ));
            }
            targets.push(TargetConfig {
                unset: super::defaulted_variable(t.url.get_ref(), env).map(|var| {
                    super::url_default_error(
                        src,
                        t.url.span(),
                        &format!("publish.targets.{name}.url"),
                        &var,
                        &url,
                    )
                }),
                name,
                url,
                token,
                format: t.format,
                levels,
                timeout: Duration::from_secs(t.timeout_secs.unwrap_or(30)),
                attempts: t.attempts.unwrap_or(4).max(1),
            });
        }
        let revision_policy = match &self.revision_policy {
            None => RevisionPolicy::default(),
            Some(p) => RevisionPolicy::parse(p.get_ref()).unwrap_or_else(|msg| {
                errors.push(src.at(Some(p.span()), format!("publish.{msg}")));
                RevisionPolicy::default()
            }),
        };
        let movement_sigmas = match &self.movement_sigmas {
            None => defaults.movement_sigmas,
            Some(z) if *z.get_ref() >= 0.0 && z.get_ref().is_finite() => *z.get_ref(),
            Some(z) => {
                errors.push(src.at(
                    Some(z.span()),
                    format!(
                        "publish.movement_sigmas = {}: expected a number of standard errors, 0 or more (0 judges every move)",
                        z.get_ref()
                    ),
                ));
                defaults.movement_sigmas
            }
        };
        PublishConfig {
            max_change_points: self.max_change_points.unwrap_or(defaults.max_change_points),
            movement_sigmas,
            targets,
            revision_policy,
        }
    }
}

/// Which period a publish job publishes: relative to the day it runs (project time zone), or
/// a period named outright (`"2026"`: the year, published when its data is final).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodChoice {
    PreviousMonth,
    CurrentMonth,
    PreviousQuarter,
    CurrentQuarter,
    PreviousYear,
    CurrentYear,
    Fixed(String),
}

impl<'de> Deserialize<'de> for PeriodChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "previous_month" => PeriodChoice::PreviousMonth,
            "current_month" => PeriodChoice::CurrentMonth,
            "previous_quarter" => PeriodChoice::PreviousQuarter,
            "current_quarter" => PeriodChoice::CurrentQuarter,
            "previous_year" => PeriodChoice::PreviousYear,
            "current_year" => PeriodChoice::CurrentYear,
            other => PeriodChoice::Fixed(parse_period(other).map_err(serde::de::Error::custom)?),
        })
    }
}

/// Checks a period name: `2026-10` (a month), `2026-Q4` (a quarter) or `2026` (a year).
pub fn parse_period(s: &str) -> Result<String, String> {
    let year = |y: &str| y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit());
    let ok = match s.len() {
        4 => year(s),
        7 if &s[4..6] == "-Q" => year(&s[..4]) && matches!(&s[6..], "1" | "2" | "3" | "4"),
        7 => {
            year(&s[..4])
                && &s[4..5] == "-"
                && s[5..].parse::<u32>().is_ok_and(|m| (1..=12).contains(&m))
        }
        _ => false,
    };
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a period: expected a month (2026-10), a quarter (2026-Q4) or a year (2026), \
             or in a job file previous_month, current_month, previous_quarter, current_quarter, previous_year, current_year"
        ))
    }
}

/// A publish job (`kind = "publish"`): publishes a period on a schedule, e.g. the previous
/// month as final on the 11th, or the current month as a provisional preview every day.
#[derive(Debug, Clone)]
pub struct PublishJobConfig {
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    pub enabled: bool,
    pub schedule: CronExpr,
    pub period: PeriodChoice,
    pub provisional: bool,
    /// Send to the targets after recording (final revisions only). Default true.
    pub push: bool,
    /// A final job's periods that were not published (held, failed, interrupted, a push still
    /// pending) are tried again this long after (default 1 h) until they are, by the daemon.
    pub retry_every: Duration,
    /// A final job catches up the missed planned times this recent (default 366 days); older
    /// ones are recorded as skipped misfires (a job switched off on purpose for a year).
    pub catch_up_within: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishJobFile {
    #[allow(dead_code)]
    kind: String,
    description: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    schedule: CronExpr,
    period: PeriodChoice,
    #[serde(default)]
    provisional: bool,
    #[serde(default = "yes")]
    push: bool,
    retry_every: Option<super::HumanDuration>,
    catch_up_within: Option<super::HumanDuration>,
}

fn yes() -> bool {
    true
}

/// How long a final publish job waits before trying its unpublished periods again (doubled
/// after each retry that leaves them unpublished, up to a day).
pub const DEFAULT_RETRY_EVERY: Duration = Duration::from_secs(3600);

/// How far back a final publish job catches up missed planned times.
pub const DEFAULT_CATCH_UP_WITHIN: Duration = Duration::from_secs(366 * 86_400);

pub(super) fn parse_publish_job(
    path: &Path,
    src: &Source<'_>,
) -> Result<PublishJobConfig, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let name = super::job_name(src, &mut errors);
    let file: PublishJobFile = match toml::from_str(src.text) {
        Ok(f) => f,
        Err(e) => {
            errors.push(src.toml_error(e));
            return Err(errors);
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(PublishJobConfig {
        name,
        file: path.to_path_buf(),
        description: file.description.unwrap_or_default(),
        enabled: file.enabled,
        schedule: file.schedule,
        period: file.period,
        provisional: file.provisional,
        push: file.push,
        retry_every: file
            .retry_every
            .map_or(DEFAULT_RETRY_EVERY, |d| d.0.max(Duration::from_secs(1))),
        catch_up_within: file
            .catch_up_within
            .map_or(DEFAULT_CATCH_UP_WITHIN, |d| d.0),
    })
}
