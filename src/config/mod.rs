//! Project and job configuration: `chiso.toml` and `jobs/*.toml`.
//!
//! Owns reading, environment interpolation and validation of configuration files. Every problem
//! is reported with the file, the line and the field, and all problems of all job files are
//! collected before anything runs (`jobs/petitions.toml:7: page_size = 0: must be between 1 and
//! 1000`). It does not open connections, touch the lake or know how a protocol pulls.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

use crate::lake::schema::{ColumnSpec, ColumnType, DatasetSpec, Grain, PartitionSpec};

pub mod daemon;
pub mod embedded;
pub mod publish;
pub mod reconcile;
pub use daemon::{BuildJobConfig, CatchUp, HumanDuration, JobKind, Overlap, RunPolicy};
pub use publish::{
    PeriodChoice, PublishConfig, PublishJobConfig, PushFormat, RevisionPolicy, TargetConfig,
};
pub use reconcile::ReconcileJobConfig;

/// A configuration problem at a place in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line, 0 when the problem concerns the whole file.
    pub line: usize,
    /// The offending line's text, trimmed (empty when unknown).
    pub snippet: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        match (self.line, self.snippet.is_empty()) {
            (0, _) => write!(f, "{file}: {}", self.message),
            (l, true) => write!(f, "{file}:{l}: {}", self.message),
            (l, false) => write!(f, "{file}:{l}: {}: {}", self.snippet, self.message),
        }
    }
}

/// Every problem found while loading, in file order.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} configuration problem{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Text of one file with helpers to turn byte spans into located errors.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn at(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigError {
        let (line, snippet) = match span {
            Some(r) => {
                let start = r.start.min(self.text.len());
                let line = self.text[..start].bytes().filter(|b| *b == b'\n').count() + 1;
                let snippet = self
                    .text
                    .lines()
                    .nth(line - 1)
                    .unwrap_or("")
                    .trim()
                    .to_string();
                (line, snippet)
            }
            None => (0, String::new()),
        };
        ConfigError {
            file: self.path.to_path_buf(),
            line,
            snippet,
            message: message.into(),
        }
    }

    fn toml_error(&self, e: toml::de::Error) -> ConfigError {
        // toml's message already names the field for unknown/missing keys and our validators
        // name it themselves; the span gives the line.
        let msg = e.message().trim().replace('\n', " ");
        self.at(e.span(), msg)
    }
}

// ------------------------------------------------------------------------------------------
// Environment interpolation

/// Replaces `${VAR}` and `${VAR:-default}` with the environment's values. A variable that is not
/// set and has no default is an error naming it; `$$` is a literal `$`.
pub fn interpolate(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let end = body
            .find('}')
            .ok_or_else(|| format!("unterminated ${{…}} in {value:?}"))?;
        let expr = &body[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad variable name {name:?} in ${{{expr}}}"));
        }
        match (env(name), default) {
            (Some(v), _) if !v.is_empty() || default.is_none() => out.push_str(&v),
            (_, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
                ))
            }
            (Some(v), None) => out.push_str(&v),
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The variable of a `${VAR:-http://127.0.0.1…}` in `value` (a loopback default: the
/// simulator's) that is not set (or empty), so that its default stands.
fn defaulted_variable(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            rest = stripped; // `$$`: a literal `$`
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            rest = after;
            continue;
        };
        let end = body.find('}')?;
        if let Some((name, default)) = body[..end].split_once(":-") {
            // Only a loopback default is the simulator's; a real address given as the
            // default is the operator's choice.
            let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
                .iter()
                .any(|l| default.starts_with(l));
            if loopback && env(name).is_none_or(|v| v.is_empty()) {
                return Some(name.to_string());
            }
        }
        rest = &body[end + 1..];
    }
    None
}

/// The error a URL that fell back on its default gives when a command uses it: the defaults
/// in the repository's `chiso.toml` are the simulator's loopback address, which only
/// `chiso demo` (which points every URL at its own simulator) may use; a production run with
/// a variable missing must not send to, or read from, whatever listens there.
fn url_default_error(
    src: &Source<'_>,
    span: Range<usize>,
    field: &str,
    variable: &str,
    url: &str,
) -> ConfigError {
    src.at(
        Some(span),
        format!(
            "{field}: {variable} is not set, and its default ({url}) is only for `chiso demo`; export {variable} with the real address (to use `chiso sim`, export that default itself)"
        ),
    )
}

/// Fails with every URL that `jobs` (their sources) and, when `push`, the publish `targets`
/// would use from a `${VAR:-default}` default: a configuration error naming the file, the
/// line and the variable, before anything is read or sent.
pub fn ensure_urls_set(
    jobs: &[JobConfig],
    targets: &[TargetConfig],
    push: bool,
) -> Result<(), ConfigErrors> {
    let mut errors: Vec<ConfigError> = Vec::new();
    for j in jobs.iter().filter(|j| j.enabled) {
        if let Some(e) = j.source.as_ref().and_then(|s| s.unset.clone()) {
            if !errors.contains(&e) {
                errors.push(e);
            }
        }
    }
    if push {
        errors.extend(targets.iter().filter_map(|t| t.unset.clone()));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

// ------------------------------------------------------------------------------------------
// Validated scalar types: a bad value fails inside deserialisation, so toml reports its span.

macro_rules! bounded_u64 {
    ($name:ident, $lo:expr, $hi:expr, $what:expr) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name(pub u64);
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = i64::deserialize(d)?;
                if !($lo..=$hi).contains(&v) {
                    return Err(de::Error::custom(format!(
                        "{} must be between {} and {}, found {}",
                        $what, $lo, $hi, v
                    )));
                }
                Ok($name(v as u64))
            }
        }
    };
}

bounded_u64!(PageSize, 1, 10_000, "page size");
bounded_u64!(Seconds, 1, 3_600, "seconds");
bounded_u64!(Attempts, 1, 20, "attempts");
bounded_u64!(Millis, 1, 600_000, "milliseconds");
bounded_u64!(RowCount, 1, 100_000_000, "row count");
bounded_u64!(Threads, 1, 256, "threads");

/// A cron expression (5 fields, or 6 with seconds first), checked when loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr(pub String);

impl CronExpr {
    /// The 6-field form (seconds first) that tokio-cron-scheduler expects.
    pub fn with_seconds(&self) -> String {
        if self.0.split_whitespace().count() == 5 {
            format!("0 {}", self.0)
        } else {
            self.0.clone()
        }
    }
}

impl<'de> Deserialize<'de> for CronExpr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let fields = s.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(de::Error::custom(format!(
                "schedule {s:?} is not a cron expression: expected 5 fields (minute hour day month weekday) or 6 with seconds first"
            )));
        }
        croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(&s)
            .map_err(|e| de::Error::custom(format!("schedule {s:?}: {e}")))?;
        Ok(CronExpr(s))
    }
}

/// A URL path beginning with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlPath(pub String);

impl<'de> Deserialize<'de> for UrlPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if !s.starts_with('/') {
            return Err(de::Error::custom(format!("path {s:?} must start with '/'")));
        }
        Ok(UrlPath(s))
    }
}

/// A lower-case identifier used in lake paths and SQL (`[a-z][a-z0-9_]*`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ident(pub String);

impl<'de> Deserialize<'de> for Ident {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if !is_ident(&s) {
            return Err(de::Error::custom(format!(
                "{s:?} must be lower-case letters, digits and single '_' between them, starting with a letter"
            )));
        }
        Ok(Ident(s))
    }
}

/// `[a-z][a-z0-9_]*`, at most 64 characters, with no `__` and no trailing `_`: a feed and a
/// dataset name joined by `__` (the quarantine folder `<feed>__<dataset>`) then name one pair
/// only.
pub fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 64
        && !s.contains("__")
        && !s.ends_with('_')
}

/// Names chiso's own state folders take under `_state/` (the build records): no job may.
pub const RESERVED_JOB_NAMES: &[&str] = &["builds"];

// ------------------------------------------------------------------------------------------
// chiso.toml

/// `chiso.toml`: where the warehouse is, the time zone, and the feeds' endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectFile {
    #[serde(default)]
    warehouse: WarehouseSection,
    #[serde(default)]
    sources: BTreeMap<String, Spanned<SourceSection>>,
    #[serde(default)]
    publish: publish::PublishSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WarehouseSection {
    /// Warehouse folder, relative to the project folder. Default `warehouse`.
    #[serde(default = "default_warehouse_dir")]
    dir: String,
    /// Time zone of feed timestamps and periods. Only `Asia/Ho_Chi_Minh` is supported.
    #[serde(default = "default_tz")]
    timezone: Spanned<String>,
    /// Folder of job files, relative to the project folder. Default `jobs`.
    #[serde(default = "default_jobs_dir")]
    jobs_dir: String,
    /// Storage format of the published `chiso.duckdb`: `v1.4.0` (default: DuckDB 1.4 and
    /// later, 1.x clients included, open it) or `latest` (this DuckDB's newest).
    storage_version: Option<Spanned<String>>,
}

impl Default for WarehouseSection {
    fn default() -> Self {
        WarehouseSection {
            dir: default_warehouse_dir(),
            timezone: Spanned::new(0..0, default_tz_str()),
            jobs_dir: default_jobs_dir(),
            storage_version: None,
        }
    }
}

fn default_warehouse_dir() -> String {
    "warehouse".into()
}
fn default_jobs_dir() -> String {
    "jobs".into()
}
fn default_tz_str() -> String {
    "Asia/Ho_Chi_Minh".into()
}
fn default_tz() -> Spanned<String> {
    Spanned::new(0..0, default_tz_str())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceSection {
    /// Base URL, `${VAR:-default}` allowed.
    base_url: Spanned<String>,
    /// `none`, `bearer` or `basic`. Default `none`.
    #[serde(default)]
    auth: AuthKind,
    /// Bearer token; must come from the environment (`${VAR}`), never be written in the file.
    token: Option<Spanned<String>>,
    /// Basic-auth user, `${VAR}` allowed.
    username: Option<Spanned<String>>,
    /// Basic-auth password; must come from the environment.
    password: Option<Spanned<String>>,
    /// Per-request timeout in seconds. Default 30.
    timeout_secs: Option<Seconds>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    #[default]
    None,
    Bearer,
    Basic,
}

/// Whether a secret's text only names an environment variable: empty, `${VAR}`, or `${VAR:-}`
/// (an empty default). Anything else, a literal default `${VAR:-abc}` included, would put the
/// secret itself in the file.
fn is_environment_reference(text: &str) -> bool {
    if text.is_empty() {
        return true;
    }
    let Some(inner) = text.strip_prefix("${").and_then(|t| t.strip_suffix('}')) else {
        return false;
    };
    let name = match inner.split_once(":-") {
        Some((name, "")) => name,
        Some(_) => return false,
        None => inner,
    };
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A secret read from the environment. Its `Debug` never shows the value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("Secret(<empty>)")
        } else {
            f.write_str("Secret(<redacted>)")
        }
    }
}

/// How to authenticate to a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    Bearer(Secret),
    Basic { username: String, password: Secret },
}

/// One feed endpoint, resolved from `chiso.toml`.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: String,
    pub base_url: String,
    /// Set when `base_url` is its `${VAR:-default}` default because VAR is not set: the
    /// error a run that uses the source fails with (only `chiso demo` retargets it).
    pub unset: Option<ConfigError>,
    pub auth: Auth,
    pub timeout: std::time::Duration,
}

/// The resolved project configuration.
#[derive(Debug, Clone)]
pub struct ProjectConfig {
    /// Folder holding `chiso.toml` (paths in it are relative to this).
    pub root: PathBuf,
    pub file: PathBuf,
    pub warehouse_dir: PathBuf,
    pub jobs_dir: PathBuf,
    pub timezone: chrono_tz::Tz,
    pub sources: BTreeMap<String, SourceConfig>,
    /// The published file's storage format (`None`: DuckDB's newest).
    pub storage_version: Option<String>,
    /// `[publish]`: the guard's thresholds and the portals final revisions are sent to.
    pub publish: PublishConfig,
}

impl ProjectConfig {
    /// Loads `chiso.toml` from `path`, reading secrets from the process environment.
    pub fn load(path: &Path) -> Result<ProjectConfig, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: 0,
                snippet: String::new(),
                message: format!("cannot read the project file: {e} (run chiso from the project folder or pass --config)"),
            }])
        })?;
        Self::parse(path, &text, &process_env)
    }

    /// Parses project configuration text; `env` supplies environment variables.
    pub fn parse(
        path: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ProjectConfig, ConfigErrors> {
        let src = Source { path, text };
        let file: ProjectFile =
            toml::from_str(text).map_err(|e| ConfigErrors(vec![src.toml_error(e)]))?;
        let mut errors = Vec::new();
        let root = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_path_buf()
                }
            })
            .unwrap_or_else(|| PathBuf::from("."));
        let timezone = match file.warehouse.timezone.get_ref().parse::<chrono_tz::Tz>() {
            Ok(tz) if tz == chrono_tz::Asia::Ho_Chi_Minh => tz,
            Ok(_) | Err(_) => {
                errors.push(src.at(
                    Some(file.warehouse.timezone.span()),
                    format!(
                        "timezone {:?}: only \"Asia/Ho_Chi_Minh\" is supported (feed timestamps are Vietnamese wall-clock time)",
                        file.warehouse.timezone.get_ref()
                    ),
                ));
                chrono_tz::Asia::Ho_Chi_Minh
            }
        };
        let storage_version = match &file.warehouse.storage_version {
            None => Some(crate::models::build::DEFAULT_STORAGE_VERSION.to_string()),
            Some(v) if v.get_ref() == "latest" => None,
            Some(v) => {
                let ok = v.get_ref().strip_prefix('v').is_some_and(|rest| {
                    let parts: Vec<&str> = rest.split('.').collect();
                    parts.len() == 3
                        && parts
                            .iter()
                            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                });
                if !ok {
                    errors.push(src.at(
                        Some(v.span()),
                        format!(
                            "warehouse.storage_version {:?}: expected a DuckDB version like \"v1.4.0\", or \"latest\"",
                            v.get_ref()
                        ),
                    ));
                }
                Some(v.get_ref().clone())
            }
        };
        let publish = file.publish.resolve(&src, env, &mut errors);
        let mut sources = BTreeMap::new();
        for (name, section) in file.sources {
            let span = section.span();
            let s = section.into_inner();
            let interp = |v: &Spanned<String>, field: &str| -> Result<String, ConfigError> {
                interpolate(v.get_ref(), env)
                    .map_err(|msg| src.at(Some(v.span()), format!("sources.{name}.{field}: {msg}")))
            };
            let base_url = interp(&s.base_url, "base_url").unwrap_or_else(|e| {
                errors.push(e);
                String::new()
            });
            if !(base_url.is_empty()
                || base_url.starts_with("http://")
                || base_url.starts_with("https://"))
            {
                errors.push(src.at(
                    Some(s.base_url.span()),
                    format!(
                        "sources.{name}.base_url: {base_url:?} must start with http:// or https://"
                    ),
                ));
            }
            let secret_from_env = |v: &Option<Spanned<String>>,
                                   field: &str|
             -> Result<Secret, ConfigError> {
                let Some(v) = v else {
                    return Ok(Secret::default());
                };
                if !is_environment_reference(v.get_ref()) {
                    return Err(src.at(
                        Some(v.span()),
                        format!(
                            "sources.{name}.{field}: secrets are read from the environment; write \"${{CHISO_{}_{}}}\" and export that variable (a default other than empty, ${{X:-…}}, is a secret written in the file)",
                            name.to_uppercase(),
                            field.to_uppercase()
                        ),
                    ));
                }
                interp(v, field).map(Secret)
            };
            let token = secret_from_env(&s.token, "token").unwrap_or_else(|e| {
                errors.push(e);
                Secret::default()
            });
            let password = secret_from_env(&s.password, "password").unwrap_or_else(|e| {
                errors.push(e);
                Secret::default()
            });
            let username = match &s.username {
                None => String::new(),
                Some(u) => interp(u, "username").unwrap_or_else(|e| {
                    errors.push(e);
                    String::new()
                }),
            };
            let auth = match s.auth {
                AuthKind::None => Auth::None,
                AuthKind::Bearer => Auth::Bearer(token),
                AuthKind::Basic => {
                    if s.username.is_none() {
                        errors.push(src.at(
                            Some(span.clone()),
                            format!("sources.{name}: auth = \"basic\" needs username and password"),
                        ));
                    }
                    Auth::Basic { username, password }
                }
            };
            sources.insert(
                name.clone(),
                SourceConfig {
                    unset: defaulted_variable(s.base_url.get_ref(), env).map(|var| {
                        url_default_error(
                            &src,
                            s.base_url.span(),
                            &format!("sources.{name}.base_url"),
                            &var,
                            &base_url,
                        )
                    }),
                    name,
                    base_url: base_url.trim_end_matches('/').to_string(),
                    auth,
                    timeout: std::time::Duration::from_secs(s.timeout_secs.map_or(30, |t| t.0)),
                },
            );
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(ProjectConfig {
            warehouse_dir: root.join(&file.warehouse.dir),
            jobs_dir: root.join(&file.warehouse.jobs_dir),
            root,
            file: path.to_path_buf(),
            timezone,
            sources,
            storage_version,
            publish,
        })
    }

    /// Points every source at `base_url`, with `token` as the bearer token or basic password
    /// (used by `chiso demo` and tests to aim the whole project at an in-process simulator).
    pub fn retarget_sources(&mut self, base_url: &str, token: &Secret) {
        self.retarget_targets(base_url, token);
        for s in self.sources.values_mut() {
            s.base_url = base_url.trim_end_matches('/').to_string();
            s.unset = None;
            s.auth = match &s.auth {
                Auth::None => Auth::None,
                Auth::Bearer(_) => Auth::Bearer(token.clone()),
                Auth::Basic { username, .. } => Auth::Basic {
                    username: username.clone(),
                    password: token.clone(),
                },
            };
        }
    }
}

impl ProjectConfig {
    /// Points every publication target at `base_url`, keeping each URL's path (the simulator
    /// receives publications as the portals would), with `token` as its bearer token.
    pub fn retarget_targets(&mut self, base_url: &str, token: &Secret) {
        for t in &mut self.publish.targets {
            let path = reqwest::Url::parse(&t.url)
                .map(|u| u.path().to_string())
                .unwrap_or_default();
            t.url = format!("{}{}", base_url.trim_end_matches('/'), path);
            t.token = token.clone();
            t.unset = None;
        }
    }
}

// ------------------------------------------------------------------------------------------
// jobs/*.toml

/// One job file. Exactly one protocol section, named like `protocol`, must be present.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    /// `pull` (the default); `build` files are read by `daemon::parse_build_job`.
    #[allow(dead_code)]
    kind: Option<String>,
    /// What the job pulls, for `chiso status` and the README.
    description: Option<String>,
    /// Cron expression in the project time zone (Asia/Ho_Chi_Minh).
    schedule: CronExpr,
    /// `false` keeps the job out of `run --all` and the schedule. Default `true`.
    #[serde(default = "yes")]
    enabled: bool,
    /// Name of a `[sources.NAME]` in chiso.toml (not used by `protocol = "file"`).
    source: Option<Spanned<String>>,
    /// `cursor`, `paged_post`, `snapshot` or `file`.
    protocol: Spanned<String>,
    cursor: Option<CursorParams>,
    paged_post: Option<PagedPostParams>,
    snapshot: Option<SnapshotParams>,
    evaluation: Option<EvaluationParams>,
    file: Option<FileParams>,
    #[serde(default)]
    retry: RetryParams,
    /// How the daemon runs the job's fires.
    #[serde(default)]
    run: RunPolicy,
    /// The newest landed record older than this is a freshness breach (status, metrics, log).
    freshness_target: Option<HumanDuration>,
    dataset: DatasetSection,
}

fn yes() -> bool {
    true
}

/// `[cursor]`: GET `path?since=CURSOR&limit=N`, answer `{"data":[…],"next_cursor":"…"}`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CursorParams {
    /// URL path below the source's base URL.
    pub path: UrlPath,
    /// Records per request. Default 1000.
    #[serde(default = "default_page")]
    pub page_size: PageSize,
    /// Query parameter carrying the cursor. Default `since`.
    #[serde(default = "since")]
    pub since_param: String,
    /// Query parameter carrying the page size. Default `limit`.
    #[serde(default = "limit")]
    pub limit_param: String,
    /// Field of the answer holding the records. Default `data`.
    #[serde(default = "data")]
    pub records_field: String,
    /// Field of the answer holding the next cursor (null or absent: no more). Default `next_cursor`.
    #[serde(default = "next_cursor")]
    pub next_cursor_field: String,
}

/// `[paged_post]`: POST `path` with `{"currentPage":P,"pageSize":N,<since_field>:WATERMARK}`,
/// answer `{"code":"OK","data":[…]}`. The cursor is the highest `watermark_column` landed.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PagedPostParams {
    pub path: UrlPath,
    /// Records per page. Default 1000.
    #[serde(default = "default_page")]
    pub page_size: PageSize,
    /// Body field for the page number (1-based). Default `currentPage`.
    #[serde(default = "current_page")]
    pub page_field: String,
    /// Body field for the page size. Default `pageSize`.
    #[serde(default = "page_size_field")]
    pub page_size_field: String,
    /// Body field for the lower bound (inclusive) of the watermark. Default `tuNgay`.
    #[serde(default = "tu_ngay")]
    pub since_field: String,
    /// Dataset column (a timestamp) whose highest landed value is the next lower bound.
    pub watermark_column: String,
    /// Envelope field with the status code. Default `code`.
    #[serde(default = "code")]
    pub code_field: String,
    /// Value of `code_field` meaning success. Default `OK`.
    #[serde(default = "ok")]
    pub ok_code: String,
    /// Envelope field with the records. Default `data`.
    #[serde(default = "data")]
    pub records_field: String,
}

/// `[evaluation]`: the portal's published evaluation (Decision 766,
/// `PORTAL_EVALUATION_API.md`): for each endpoint and period, `POST <path>/<endpoint>` with the
/// portal's body for the tree's root, then for each child it lists, down `depth` levels. Each
/// distinct answer lands as one record (an unchanged answer lands nothing), so the lake holds
/// every version the portal showed.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EvaluationParams {
    /// Path of the evaluation API below the source's base URL. Default
    /// `/api/v1/reporting/evaluation`.
    #[serde(default = "evaluation_path")]
    pub path: UrlPath,
    /// The portal's department id (`departmentId`) of the tree's root.
    pub root_department_id: String,
    /// The endpoints pulled. Default: all seven (`transparency`, `handling-satisfaction`,
    /// `dossier-digitized`, `dvc-progress-tree`, `provide-online-tree`,
    /// `formality-online-payment-tree`, `service-results`).
    #[serde(default = "all_endpoints")]
    pub endpoints: Vec<EvaluationEndpoint>,
    /// Levels below the root whose units are asked for as roots in turn (their children are
    /// the next level). Default 1: the root and its children's own subtrees.
    #[serde(default = "one_level")]
    pub depth: u8,
    /// Period types pulled. Default month, quarter and year.
    #[serde(default = "all_period_types")]
    pub period_types: Vec<PeriodType>,
    /// Closed periods are pulled again for this many days after they end (the portal revises
    /// them silently). Default 60.
    #[serde(default = "revisit_days")]
    pub revisit_days: u32,
    /// These periods only (`2026-08`, `2026-Q3`, `2026`), instead of the current ones and the
    /// recently closed ones.
    #[serde(default, deserialize_with = "periods_list")]
    pub periods: Option<Vec<String>>,
}

/// One endpoint of the portal's evaluation API.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum EvaluationEndpoint {
    Transparency,
    HandlingSatisfaction,
    DossierDigitized,
    DvcProgressTree,
    ProvideOnlineTree,
    FormalityOnlinePaymentTree,
    ServiceResults,
}

impl EvaluationEndpoint {
    pub const ALL: [EvaluationEndpoint; 7] = [
        EvaluationEndpoint::Transparency,
        EvaluationEndpoint::HandlingSatisfaction,
        EvaluationEndpoint::DossierDigitized,
        EvaluationEndpoint::DvcProgressTree,
        EvaluationEndpoint::ProvideOnlineTree,
        EvaluationEndpoint::FormalityOnlinePaymentTree,
        EvaluationEndpoint::ServiceResults,
    ];

    /// The path segment.
    pub fn name(self) -> &'static str {
        match self {
            EvaluationEndpoint::Transparency => "transparency",
            EvaluationEndpoint::HandlingSatisfaction => "handling-satisfaction",
            EvaluationEndpoint::DossierDigitized => "dossier-digitized",
            EvaluationEndpoint::DvcProgressTree => "dvc-progress-tree",
            EvaluationEndpoint::ProvideOnlineTree => "provide-online-tree",
            EvaluationEndpoint::FormalityOnlinePaymentTree => "formality-online-payment-tree",
            EvaluationEndpoint::ServiceResults => "service-results",
        }
    }

    pub fn parse(s: &str) -> Option<EvaluationEndpoint> {
        Self::ALL.into_iter().find(|e| e.name() == s)
    }

    /// The metric family (`overview` + `evaluation[]` with `metrics[]`, paginated); else the
    /// tree family (`parent` + `children[]`) or `service-results` (`overview` + `evaluation[]`).
    pub fn is_metric(self) -> bool {
        matches!(
            self,
            EvaluationEndpoint::Transparency
                | EvaluationEndpoint::HandlingSatisfaction
                | EvaluationEndpoint::DossierDigitized
        )
    }

    /// The page size the portal's own page sends.
    pub fn page_size(self) -> Option<u32> {
        match self {
            EvaluationEndpoint::DvcProgressTree
            | EvaluationEndpoint::FormalityOnlinePaymentTree => Some(100),
            EvaluationEndpoint::ServiceResults => None,
            _ => Some(200),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PeriodType {
    Month,
    Quarter,
    Year,
}

impl PeriodType {
    pub fn name(self) -> &'static str {
        match self {
            PeriodType::Month => "month",
            PeriodType::Quarter => "quarter",
            PeriodType::Year => "year",
        }
    }
}

fn evaluation_path() -> UrlPath {
    UrlPath("/api/v1/reporting/evaluation".into())
}

fn all_endpoints() -> Vec<EvaluationEndpoint> {
    EvaluationEndpoint::ALL.to_vec()
}

fn one_level() -> u8 {
    1
}

fn all_period_types() -> Vec<PeriodType> {
    vec![PeriodType::Month, PeriodType::Quarter, PeriodType::Year]
}

fn revisit_days() -> u32 {
    60
}

fn periods_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    list.into_iter()
        .map(|p| publish::parse_period(&p).map_err(de::Error::custom))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `[snapshot]`: GET a whole file (JSON array or CSV) each run; an unchanged file lands nothing.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SnapshotParams {
    pub path: UrlPath,
    /// `json` (an array, or an object with `records_field`) or `csv` (header row). Default `json`.
    #[serde(default)]
    pub format: SnapshotFormat,
    /// For JSON objects: the field holding the array. Default: the body is the array.
    pub records_field: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotFormat {
    #[default]
    Json,
    Csv,
}

/// `[file]`: lands local newline-delimited JSON files (dumps, backfills, benchmarks). Each file
/// is landed once; the cursor remembers which (by path, size and modification time).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileParams {
    /// Glob, relative to the project folder (`*` and `?` within one path segment).
    pub glob: String,
    /// Parser threads per file. Default 2.
    #[serde(default = "two_threads")]
    pub threads: Threads,
}

/// `[retry]`: exponential backoff with jitter for failed feed calls.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetryParams {
    /// Attempts in all, the first included. Default 6.
    #[serde(default = "six")]
    pub attempts: Attempts,
    /// First backoff in milliseconds. Default 250.
    #[serde(default = "ms250")]
    pub initial_backoff_ms: Millis,
    /// Longest backoff in milliseconds. Default 10000.
    #[serde(default = "ms10000")]
    pub max_backoff_ms: Millis,
}

impl Default for RetryParams {
    fn default() -> Self {
        RetryParams {
            attempts: six(),
            initial_backoff_ms: ms250(),
            max_backoff_ms: ms10000(),
        }
    }
}

fn default_page() -> PageSize {
    PageSize(1000)
}
fn two_threads() -> Threads {
    Threads(2)
}
fn six() -> Attempts {
    Attempts(6)
}
fn ms250() -> Millis {
    Millis(250)
}
fn ms10000() -> Millis {
    Millis(10_000)
}
fn since() -> String {
    "since".into()
}
fn limit() -> String {
    "limit".into()
}
fn data() -> String {
    "data".into()
}
fn next_cursor() -> String {
    "next_cursor".into()
}
fn current_page() -> String {
    "currentPage".into()
}
fn page_size_field() -> String {
    "pageSize".into()
}
fn tu_ngay() -> String {
    "tuNgay".into()
}
fn code() -> String {
    "code".into()
}
fn ok() -> String {
    "OK".into()
}

/// `[dataset]`: where and how records land.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetSection {
    /// Feed (source system) folder in the lake: `lake/<feed>/<name>/`.
    feed: Ident,
    /// Dataset name: `lake/<feed>/<name>/`.
    name: Ident,
    /// Columns forming the record key (portal names).
    key: Spanned<Vec<String>>,
    /// Column ordering versions of one key (staging keeps the latest); none for append-only feeds.
    version: Option<Spanned<String>>,
    /// Hive partitioning of the dataset.
    partition: Spanned<PartitionSection>,
    /// Rows landed between two commits of a long pull (a crash loses at most this much work).
    /// Default 100000.
    #[serde(default = "commit_rows")]
    commit_every_rows: RowCount,
    /// Rows per Parquet row group. Default 65536.
    #[serde(default = "row_group_rows")]
    row_group_rows: RowCount,
    /// Timestamp format of `timestamp` columns (chrono syntax). Default `%Y%m%d%H%M%S`.
    #[serde(default)]
    timestamp_format: Option<String>,
    columns: Vec<Spanned<ColumnSection>>,
}

fn commit_rows() -> RowCount {
    RowCount(100_000)
}
fn row_group_rows() -> RowCount {
    RowCount(65_536)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionSection {
    /// A timestamp or date column, or `_ingested_at` (the time the record was pulled).
    by: String,
    /// `day`, `month` or `year`.
    grain: Grain,
    /// Folder key, as in `sync_month=2026-08`.
    name: Ident,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnSection {
    /// The feed's field name, kept as is in the lake.
    name: String,
    #[serde(rename = "type")]
    ty: ColumnType,
    /// A record without this field is quarantined. Default false.
    #[serde(default)]
    required: bool,
    /// Personal data (names, ID numbers, phones): never published.
    #[serde(default)]
    personal: bool,
}

/// How a job pulls: the protocol section of its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    Cursor(CursorParams),
    PagedPost(PagedPostParams),
    Snapshot(SnapshotParams),
    Evaluation(EvaluationParams),
    File(FileParams),
}

impl Protocol {
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::Cursor(_) => "cursor",
            Protocol::PagedPost(_) => "paged_post",
            Protocol::Snapshot(_) => "snapshot",
            Protocol::Evaluation(_) => "evaluation",
            Protocol::File(_) => "file",
        }
    }
}

/// A validated job.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// The file stem: `jobs/dossiers.toml` is job `dossiers`.
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    pub schedule: CronExpr,
    pub enabled: bool,
    pub source: Option<SourceConfig>,
    pub protocol: Protocol,
    pub retry: RetryParams,
    /// How the daemon runs its fires (`[run]`).
    pub run: RunPolicy,
    pub freshness_target: Option<std::time::Duration>,
    pub dataset: std::sync::Arc<DatasetSpec>,
}

/// Every job of a project: the pulls and the build jobs.
#[derive(Debug, Clone, Default)]
pub struct Jobs {
    pub pulls: Vec<JobConfig>,
    pub builds: Vec<BuildJobConfig>,
    pub publishes: Vec<PublishJobConfig>,
    pub reconciles: Vec<ReconcileJobConfig>,
}

/// Loads every `*.toml` in `dir`, returning the pull jobs or every problem found in any job file
/// (build jobs are checked too).
pub fn load_jobs(dir: &Path, project: &ProjectConfig) -> Result<Vec<JobConfig>, ConfigErrors> {
    load_all_jobs(dir, project).map(|j| j.pulls)
}

/// Loads every `*.toml` in `dir`: all jobs, or every problem found in any of them.
pub fn load_all_jobs(dir: &Path, project: &ProjectConfig) -> Result<Jobs, ConfigErrors> {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) => {
            return Err(ConfigErrors(vec![ConfigError {
                file: dir.to_path_buf(),
                line: 0,
                snippet: String::new(),
                message: format!("cannot read the jobs folder: {e}"),
            }]))
        }
    };
    paths.sort();
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => files.push((path, text)),
            Err(e) => errors.push(ConfigError {
                file: path.clone(),
                line: 0,
                snippet: String::new(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    match parse_job_files(&files, project) {
        Ok(jobs) if errors.is_empty() => Ok(jobs),
        Ok(_) => Err(ConfigErrors(errors)),
        Err(ConfigErrors(mut more)) => {
            errors.append(&mut more);
            Err(ConfigErrors(errors))
        }
    }
}

/// Parses job files given as (path, text): all jobs, or every problem found in any of them.
pub fn parse_job_files(
    files: &[(PathBuf, String)],
    project: &ProjectConfig,
) -> Result<Jobs, ConfigErrors> {
    let mut jobs = Jobs::default();
    let mut errors = Vec::new();
    for (path, text) in files {
        let src = Source { path, text };
        match daemon::job_kind(&src) {
            Ok(JobKind::Pull) => match parse_job(path, text, project) {
                Ok(job) => jobs.pulls.push(job),
                Err(mut es) => errors.append(&mut es),
            },
            Ok(JobKind::Build) => match daemon::parse_build_job(path, &src) {
                Ok(mut job) => {
                    job.storage_version = project.storage_version.clone();
                    jobs.builds.push(job)
                }
                Err(mut es) => errors.append(&mut es),
            },
            Ok(JobKind::Publish) => match publish::parse_publish_job(path, &src) {
                Ok(job) => jobs.publishes.push(job),
                Err(mut es) => errors.append(&mut es),
            },
            Ok(JobKind::Reconcile) => match reconcile::parse_reconcile_job(path, &src) {
                Ok(job) => jobs.reconciles.push(job),
                Err(mut es) => errors.append(&mut es),
            },
            Err(e) => errors.push(e),
        }
    }
    if jobs.builds.iter().filter(|b| b.enabled).count() > 1 {
        errors.push(ConfigError {
            file: jobs.builds[1].file.clone(),
            line: 0,
            snippet: String::new(),
            message: format!(
                "build job {} is the second enabled build job ({} is the first): a warehouse has one",
                jobs.builds[1].name, jobs.builds[0].name
            ),
        });
    }
    // Two jobs may not land in the same dataset: the lake has one writer per dataset.
    let mut claims: BTreeMap<(String, String), &JobConfig> = BTreeMap::new();
    for job in &jobs.pulls {
        let claim = (job.dataset.feed.clone(), job.dataset.name.clone());
        if let Some(other) = claims.get(&claim) {
            errors.push(ConfigError {
                file: job.file.clone(),
                line: 0,
                snippet: String::new(),
                message: format!(
                    "dataset lake/{}/{} is already claimed by job {} ({}): one job per dataset",
                    claim.0,
                    claim.1,
                    other.name,
                    other.file.display()
                ),
            });
        } else {
            claims.insert(claim, job);
        }
    }
    if errors.is_empty() {
        Ok(jobs)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// A job's name, its file's stem; an error when it is not an identifier.
fn job_name(src: &Source<'_>, errors: &mut Vec<ConfigError>) -> String {
    let name = src
        .path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    if !is_ident(&name) {
        errors.push(src.at(
            None,
            format!("job name {name:?} (the file name) must be lower-case letters, digits and single '_' between them"),
        ));
    } else if RESERVED_JOB_NAMES.contains(&name.as_str()) {
        errors.push(src.at(
            None,
            format!("job name {name:?} (the file name) is reserved: _state/{name}/ holds chiso's own records; rename the file"),
        ));
    }
    name
}

/// Parses and validates one job file.
pub fn parse_job(
    path: &Path,
    text: &str,
    project: &ProjectConfig,
) -> Result<JobConfig, Vec<ConfigError>> {
    let src = Source { path, text };
    let mut errors = Vec::new();
    let name = job_name(&src, &mut errors);
    let file: JobFile = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            errors.push(src.toml_error(e));
            return Err(errors);
        }
    };

    let sections = [
        ("cursor", file.cursor.is_some()),
        ("paged_post", file.paged_post.is_some()),
        ("snapshot", file.snapshot.is_some()),
        ("evaluation", file.evaluation.is_some()),
        ("file", file.file.is_some()),
    ];
    let proto_name = file.protocol.get_ref().as_str();
    let protocol = match (
        proto_name,
        file.cursor,
        file.paged_post,
        file.snapshot,
        file.evaluation,
        file.file,
    ) {
        ("cursor", Some(p), ..) => Some(Protocol::Cursor(p)),
        ("paged_post", _, Some(p), ..) => Some(Protocol::PagedPost(p)),
        ("snapshot", _, _, Some(p), ..) => Some(Protocol::Snapshot(p)),
        ("evaluation", _, _, _, Some(p), _) => Some(Protocol::Evaluation(p)),
        ("file", _, _, _, _, Some(p)) => Some(Protocol::File(p)),
        (other, ..) => {
            let msg = if sections.iter().any(|(n, _)| *n == other) {
                format!("protocol = {other:?} needs a [{other}] section")
            } else {
                format!(
                    "unknown protocol {other:?}: expected \"cursor\", \"paged_post\", \"snapshot\", \"evaluation\" or \"file\""
                )
            };
            errors.push(src.at(Some(file.protocol.span()), msg));
            None
        }
    };
    let known = sections.iter().any(|(n, _)| *n == proto_name);
    for (section, present) in sections {
        if known && present && section != proto_name {
            errors.push(src.at(
                Some(file.protocol.span()),
                format!("[{section}] is given but protocol = {proto_name:?}; remove one of them"),
            ));
        }
    }

    let source = match (&file.source, proto_name) {
        (None, "file") => None,
        (None, _) => {
            errors.push(src.at(
                Some(file.protocol.span()),
                format!(
                    "protocol {proto_name:?} needs source = \"NAME\" naming a [sources.NAME] of {}",
                    project.file.display()
                ),
            ));
            None
        }
        (Some(s), _) => match project.sources.get(s.get_ref()) {
            Some(c) => Some(c.clone()),
            None => {
                let known: Vec<&str> = project.sources.keys().map(|k| k.as_str()).collect();
                errors.push(src.at(
                    Some(s.span()),
                    format!(
                        "source {:?} is not defined in {} (defined: {})",
                        s.get_ref(),
                        project.file.display(),
                        known.join(", ")
                    ),
                ));
                None
            }
        },
    };

    let dataset = build_dataset(&src, file.dataset, &mut errors);
    if let (Some(Protocol::PagedPost(p)), Some(ds)) = (&protocol, &dataset) {
        match ds.column(&p.watermark_column) {
            Some((_, c)) if c.ty == ColumnType::Timestamp => {}
            _ => errors.push(src.at(
                None,
                format!(
                    "[paged_post] watermark_column {:?} must be a timestamp column of [dataset]",
                    p.watermark_column
                ),
            )),
        }
    }
    if file.retry.initial_backoff_ms.0 > file.retry.max_backoff_ms.0 {
        errors.push(src.at(
            None,
            "[retry] initial_backoff_ms must not exceed max_backoff_ms",
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(JobConfig {
        description: file.description.unwrap_or_default(),
        file: path.to_path_buf(),
        name,
        schedule: file.schedule,
        enabled: file.enabled,
        source,
        protocol: protocol.expect("checked above"),
        retry: file.retry,
        run: file.run,
        freshness_target: file.freshness_target.map(|d| d.0),
        dataset: std::sync::Arc::new(dataset.expect("checked above")),
    })
}

fn build_dataset(
    src: &Source<'_>,
    d: DatasetSection,
    errors: &mut Vec<ConfigError>,
) -> Option<DatasetSpec> {
    let before = errors.len();
    let mut columns: Vec<ColumnSpec> = Vec::new();
    for c in &d.columns {
        let span = c.span();
        let c = c.get_ref();
        if c.name.is_empty() || c.name.starts_with('_') {
            errors.push(src.at(
                Some(span.clone()),
                format!("column name {:?}: must not be empty or start with '_' (reserved for chiso's own columns)", c.name),
            ));
        }
        if columns.iter().any(|x| x.name == c.name) {
            errors.push(src.at(
                Some(span.clone()),
                format!("column {:?} is listed twice", c.name),
            ));
        }
        columns.push(ColumnSpec {
            name: c.name.clone(),
            ty: c.ty,
            required: c.required,
            personal: c.personal,
        });
    }
    if columns.is_empty() {
        errors.push(src.at(None, "[dataset] needs at least one column"));
    }
    for k in d.key.get_ref() {
        match columns.iter_mut().find(|c| &c.name == k) {
            Some(c) => c.required = true,
            None => errors.push(src.at(
                Some(d.key.span()),
                format!("key column {k:?} is not among the dataset's columns"),
            )),
        }
    }
    if d.key.get_ref().is_empty() {
        errors.push(src.at(Some(d.key.span()), "key must name at least one column"));
    }
    if let Some(v) = &d.version {
        match columns.iter_mut().find(|c| &c.name == v.get_ref()) {
            Some(c) => c.required = true,
            None => errors.push(src.at(
                Some(v.span()),
                format!(
                    "version column {:?} is not among the dataset's columns",
                    v.get_ref()
                ),
            )),
        }
    }
    let p = d.partition.get_ref();
    let by = if p.by == "_ingested_at" {
        None
    } else {
        match columns.iter().position(|c| c.name == p.by) {
            Some(i) if matches!(columns[i].ty, ColumnType::Timestamp | ColumnType::Date) => {
                columns[i].required = true;
                Some(i)
            }
            Some(_) => {
                errors.push(src.at(
                    Some(d.partition.span()),
                    format!(
                        "partition column {:?} must be a timestamp or date column",
                        p.by
                    ),
                ));
                None
            }
            None => {
                errors.push(src.at(
                    Some(d.partition.span()),
                    format!("partition column {:?} is not among the dataset's columns (or use \"_ingested_at\")", p.by),
                ));
                None
            }
        }
    };
    if columns.iter().any(|c| c.name == p.name.0) {
        errors.push(src.at(
            Some(d.partition.span()),
            format!("partition name {:?} clashes with a column name", p.name.0),
        ));
    }
    let timestamp_format = d
        .timestamp_format
        .clone()
        .unwrap_or_else(|| "%Y%m%d%H%M%S".to_string());
    if errors.len() > before {
        return None;
    }
    Some(DatasetSpec::new(
        d.feed.0,
        d.name.0,
        columns,
        d.key.into_inner(),
        d.version.map(|v| v.into_inner()),
        PartitionSpec {
            column: by,
            grain: p.grain,
            name: p.name.0.clone(),
        },
        d.commit_every_rows.0 as usize,
        d.row_group_rows.0 as usize,
        timestamp_format,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> ProjectConfig {
        let text = r#"
[warehouse]
dir = "warehouse"

[sources.portal]
base_url = "${PORTAL_URL:-http://127.0.0.1:8610}"
auth = "bearer"
token = "${PORTAL_TOKEN:-}"
"#;
        ProjectConfig::parse(Path::new("chiso.toml"), text, &|_| None).unwrap()
    }

    const GOOD: &str = r#"
schedule = "*/5 * * * *"
source = "portal"
protocol = "cursor"

[cursor]
path = "/portal/dossiers"
page_size = 500

[dataset]
feed = "portal"
name = "dossiers"
key = ["MaHoSo"]
version = "ThoiDiemDongBo"
partition = { by = "ThoiDiemDongBo", grain = "month", name = "sync_month" }
columns = [
  { name = "MaHoSo", type = "string" },
  { name = "ThoiDiemDongBo", type = "timestamp" },
]
"#;

    #[test]
    fn good_job_parses() {
        let job = parse_job(Path::new("jobs/dossiers.toml"), GOOD, &project()).unwrap();
        assert_eq!(job.name, "dossiers");
        assert_eq!(job.protocol.name(), "cursor");
        assert_eq!(job.dataset.key, vec!["MaHoSo".to_string()]);
        assert!(job.dataset.columns[0].required, "key columns are required");
        assert_eq!(job.schedule.with_seconds(), "0 */5 * * * *");
    }

    /// A pull job named `builds` would share `_state/builds/` with the build records and lose
    /// its commit log to their pruning; feed `a__b` with dataset `c` and feed `a` with dataset
    /// `b__c` would share the quarantine folder `a__b__c`. Both are refused, naming the file.
    #[test]
    fn internal_names_and_colliding_quarantine_folders_are_refused() {
        let errs = parse_job(Path::new("jobs/builds.toml"), GOOD, &project()).unwrap_err();
        let e = errs[0].to_string();
        assert!(e.starts_with("jobs/builds.toml"), "{e}");
        assert!(
            e.contains("reserved") && e.contains("_state/builds/"),
            "{e}"
        );
        let doubled = GOOD.replace("feed = \"portal\"", "feed = \"por__tal\"");
        let errs = parse_job(Path::new("jobs/dossiers.toml"), &doubled, &project()).unwrap_err();
        let e = errs[0].to_string();
        assert!(e.contains("por__tal") && e.contains("single '_'"), "{e}");
        let trailing = GOOD.replace("name = \"dossiers\"", "name = \"dossiers_\"");
        assert!(parse_job(Path::new("jobs/dossiers.toml"), &trailing, &project()).is_err());
        assert!(is_ident("dossier_steps") && !is_ident("a__b") && !is_ident("a_"));
    }

    #[test]
    fn the_grace_is_not_a_publish_setting_any_more() {
        let text = "[publish]\nmax_change_points = 15\ngrace_days = 10\n";
        let errs = ProjectConfig::parse(Path::new("chiso.toml"), text, &|_| None).unwrap_err();
        let e = errs.0[0].to_string();
        assert!(e.starts_with("chiso.toml:3: "), "{e}");
        assert!(
            e.contains("vars: grace_days") && e.contains("dbt_project.yml"),
            "{e}"
        );
    }

    #[test]
    fn movement_sigmas_is_a_number_of_standard_errors() {
        let text = "[publish]\nmax_change_points = 15\nmovement_sigmas = -1.5\n";
        let errs = ProjectConfig::parse(Path::new("chiso.toml"), text, &|_| None).unwrap_err();
        let e = errs.0[0].to_string();
        assert!(e.starts_with("chiso.toml:3: "), "{e}");
        assert!(e.contains("publish.movement_sigmas = -1.5"), "{e}");
        let ok = "[publish]\nmovement_sigmas = 2\n";
        let cfg = ProjectConfig::parse(Path::new("chiso.toml"), ok, &|_| None).unwrap();
        assert_eq!(cfg.publish.movement_sigmas, 2.0);
    }

    /// The repository's `chiso.toml` gives every URL the simulator's loopback address as its
    /// default: a run that would use one because its variable is missing is a configuration
    /// error naming file, line and variable (before: a production run quietly read from, and
    /// pushed to, whatever listened on 127.0.0.1:8610). Set variables, and the demo's
    /// retargeting, clear it.
    #[test]
    fn the_simulator_default_urls_are_for_the_demo_only() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/chiso.toml")).unwrap();
        let unset = ProjectConfig::parse(Path::new("chiso.toml"), &text, &|_| None).unwrap();
        let portal = &unset.sources["portal"];
        let job = JobConfig {
            source: Some(portal.clone()),
            ..parse_job(Path::new("jobs/petitions.toml"), GOOD, &project()).unwrap()
        };
        let e = ensure_urls_set(std::slice::from_ref(&job), &[], false)
            .unwrap_err()
            .to_string();
        let line = text
            .lines()
            .position(|l| l.starts_with("base_url = \"${CHISO_PORTAL_URL"))
            .unwrap()
            + 1;
        assert!(
            e.contains(&format!("chiso.toml:{line}: "))
                && e.contains("sources.portal.base_url: CHISO_PORTAL_URL is not set")
                && e.contains("only for `chiso demo`"),
            "{e}"
        );
        // Pushing needs every target's URL; not pushing needs none.
        let e = ensure_urls_set(&[], &unset.publish.targets, true)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("3 configuration problems"), "{e}");
        assert!(e.contains("CHISO_PUBLISH_DVCQG_URL is not set"), "{e}");
        assert!(ensure_urls_set(&[], &unset.publish.targets, false).is_ok());
        // Set (and not empty): the address given.
        let set = ProjectConfig::parse(Path::new("chiso.toml"), &text, &|k| {
            k.ends_with("_URL")
                .then(|| "https://example.invalid".to_string())
        })
        .unwrap();
        assert!(set.sources.values().all(|s| s.unset.is_none()));
        assert!(set.publish.targets.iter().all(|t| t.unset.is_none()));
        let empty =
            ProjectConfig::parse(Path::new("chiso.toml"), &text, &|_| Some(String::new())).unwrap();
        assert!(empty.sources["portal"].unset.is_some());
        // A real address as the default is the operator's choice; `$${…}` is literal text.
        let env = |_: &str| None;
        assert!(defaulted_variable("${X:-https://dvc.example.vn}", &env).is_none());
        assert!(defaulted_variable("$${X:-http://127.0.0.1:1}", &env).is_none());
        assert_eq!(
            defaulted_variable("${X:-http://localhost:1}/a", &env).as_deref(),
            Some("X")
        );
        // The demo points everything at its own simulator.
        let mut demo = unset.clone();
        demo.retarget_sources("http://127.0.0.1:40000", &Secret::new("t"));
        assert!(demo.sources.values().all(|s| s.unset.is_none()));
        assert!(demo.publish.targets.iter().all(|t| t.unset.is_none()));
    }

    #[test]
    fn bad_value_names_file_line_and_field() {
        let text = GOOD.replace("page_size = 500", "page_size = 0");
        let errs = parse_job(Path::new("jobs/petitions.toml"), &text, &project()).unwrap_err();
        assert_eq!(errs.len(), 1);
        let e = errs[0].to_string();
        assert!(
            e.starts_with("jobs/petitions.toml:8: page_size = 0: "),
            "got {e}"
        );
        assert!(e.contains("between 1 and 10000"), "got {e}");
    }

    #[test]
    fn unknown_key_is_an_error_with_line() {
        let text = GOOD.replace("page_size = 500", "page_size = 500\npage_sise = 3");
        let errs = parse_job(Path::new("jobs/x.toml"), &text, &project()).unwrap_err();
        let e = errs[0].to_string();
        assert!(e.starts_with("jobs/x.toml:9: page_sise = 3: "), "got {e}");
        assert!(e.contains("unknown field `page_sise`"), "got {e}");
    }

    #[test]
    fn bad_cron_and_unknown_source_are_reported() {
        let text = GOOD
            .replace("*/5 * * * *", "*/5 * * *")
            .replace("source = \"portal\"", "source = \"portl\"");
        let errs = parse_job(Path::new("jobs/x.toml"), &text, &project()).unwrap_err();
        assert!(errs[0].to_string().contains("jobs/x.toml:2:"), "{:?}", errs);
        assert!(errs[0].to_string().contains("cron"), "{:?}", errs);
        // The cron error stops deserialisation; fix it and the source error shows.
        let text = GOOD.replace("source = \"portal\"", "source = \"portl\"");
        let errs = parse_job(Path::new("jobs/x.toml"), &text, &project()).unwrap_err();
        let e = errs[0].to_string();
        assert!(
            e.starts_with("jobs/x.toml:3: source = \"portl\": "),
            "got {e}"
        );
        assert!(e.contains("defined: portal"), "got {e}");
    }

    #[test]
    fn key_must_be_a_column() {
        let text = GOOD.replace("key = [\"MaHoSo\"]", "key = [\"MaHoSoX\"]");
        let errs = parse_job(Path::new("jobs/x.toml"), &text, &project()).unwrap_err();
        let e = errs[0].to_string();
        assert!(e.contains(":13: key = [\"MaHoSoX\"]"), "got {e}");
    }

    #[test]
    fn interpolation() {
        let env = |k: &str| match k {
            "A" => Some("x".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(interpolate("${A}/y", &env).unwrap(), "x/y");
        assert_eq!(interpolate("${B:-d}", &env).unwrap(), "d");
        assert_eq!(interpolate("${EMPTY:-d}", &env).unwrap(), "d");
        assert_eq!(interpolate("$$A", &env).unwrap(), "$A");
        assert!(interpolate("${B}", &env)
            .unwrap_err()
            .contains("B is not set"));
    }

    #[test]
    fn secrets_must_come_from_env() {
        let text = r#"
[sources.portal]
base_url = "http://127.0.0.1:1"
auth = "bearer"
token = "abc123"
"#;
        let errs = ProjectConfig::parse(Path::new("chiso.toml"), text, &|_| None).unwrap_err();
        let e = errs.0[0].to_string();
        assert!(
            e.starts_with("chiso.toml:5: token = \"abc123\": "),
            "got {e}"
        );
        assert!(!format!("{:?}", Secret::new("abc123")).contains("abc123"));
        // A literal default, or text around the reference, is a secret in the file too.
        for token in ["${CHISO_TOKEN:-abc123}", "Bearer ${CHISO_TOKEN}", "abc${X}"] {
            let text = format!(
                "[sources.portal]\nbase_url = \"http://127.0.0.1:1\"\nauth = \"bearer\"\ntoken = \"{token}\"\n"
            );
            let errs = ProjectConfig::parse(Path::new("chiso.toml"), &text, &|_| None).unwrap_err();
            assert!(
                errs.0[0]
                    .to_string()
                    .contains("secrets are read from the environment"),
                "{token}: {errs}"
            );
        }
        for token in ["${CHISO_TOKEN}", "${CHISO_TOKEN:-}", ""] {
            assert!(is_environment_reference(token), "{token}");
        }
    }

    #[test]
    fn a_build_job_timeout_is_a_duration_or_an_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let build =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/build.toml"))
                .unwrap()
                .replace("timeout = \"1h\"", "timeout = \"90m\"");
        std::fs::write(dir.path().join("build.toml"), &build).unwrap();
        let jobs = load_all_jobs(dir.path(), &project()).unwrap();
        assert_eq!(
            jobs.builds[0].timeout,
            Some(std::time::Duration::from_secs(5400))
        );
        std::fs::write(
            dir.path().join("build.toml"),
            build.replace("timeout = \"90m\"", "timeout = \"soon\""),
        )
        .unwrap();
        let e = load_all_jobs(dir.path(), &project())
            .unwrap_err()
            .to_string();
        let line = build
            .lines()
            .position(|l| l.starts_with("timeout"))
            .unwrap()
            + 1;
        assert!(e.contains(&format!("build.toml:{line}")), "{e}");
        assert!(e.contains("timeout") && e.contains("not a duration"), "{e}");
    }

    #[test]
    fn two_jobs_cannot_claim_one_dataset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), GOOD).unwrap();
        std::fs::write(dir.path().join("b.toml"), GOOD).unwrap();
        let errs = load_jobs(dir.path(), &project()).unwrap_err();
        assert!(
            errs.to_string().contains("already claimed by job a"),
            "{errs}"
        );
    }
}
