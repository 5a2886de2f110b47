//! What a build leaves: the record of each model and data test, the build record (written to
//! `_state/builds/<id>.json` and the published file), and what the newest published build read.

use super::*;

/// What became of a model in a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelStatus {
    /// Built.
    Ok,
    /// A table kept: nothing it reads changed.
    Unchanged,
    /// Its SQL failed.
    Error,
    /// Not run: a model upstream failed.
    Skipped,
}

impl ModelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelStatus::Ok => "ok",
            ModelStatus::Unchanged => "unchanged",
            ModelStatus::Error => "error",
            ModelStatus::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for ModelStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What a data test found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestStatus {
    /// No rows.
    Pass,
    /// Rows, and the test blocks publication (severity `error`).
    Fail,
    /// Rows, reported only (severity `warn`).
    Warn,
    /// The test's SQL failed.
    Error,
}

impl TestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TestStatus::Pass => "pass",
            TestStatus::Fail => "fail",
            TestStatus::Warn => "warn",
            TestStatus::Error => "error",
        }
    }

    /// A failure that keeps the build from publishing.
    pub fn blocks(self) -> bool {
        matches!(self, TestStatus::Fail | TestStatus::Error)
    }
}

impl std::fmt::Display for TestStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ModelRun {
    pub model: String,
    pub materialized: String,
    pub status: ModelStatus,
    pub rows: Option<u64>,
    pub seconds: f64,
    pub error: Option<String>,
    /// Why an incremental model was rebuilt from scratch although its table was kept: its SQL
    /// changed since the starting file was built, or that of a model upstream did (kept rows
    /// were computed by other SQL), or the file does not say which SQL built it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuilt_because: Option<String>,
}

impl ModelRun {
    /// Built, or kept because nothing it reads changed.
    pub fn succeeded(&self) -> bool {
        matches!(self.status, ModelStatus::Ok | ModelStatus::Unchanged)
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct TestRun {
    pub test: String,
    pub severity: String,
    pub status: TestStatus,
    pub failures: u64,
    pub seconds: f64,
    pub error: Option<String>,
    /// `all` rows of the models it reads, or only the `new` rows an incremental model wrote
    /// (the kept rows passed the same test in the build that made them).
    pub rows_checked: String,
    /// SHA-256 of the test's SQL over all rows: a changed test is run over all rows again.
    pub sql_sha256: String,
    /// Up to five of the rows it found, each as JSON (a failed or warning test): what to fix,
    /// without rerunning its SQL.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub sample: Vec<String>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct BuildRecord {
    pub build_id: String,
    pub started_at: String,
    pub finished_at: String,
    pub seconds: f64,
    pub models: Vec<ModelRun>,
    pub tests: Vec<TestRun>,
    /// The build file replaced `chiso.duckdb`.
    pub published: bool,
    pub published_path: PathBuf,
    /// What the build file started as: `spare` (the file published before the current one),
    /// `copy` (of the published file: the spare was missing or held by a reader) or `empty`.
    pub started_from: String,
    /// Datasets (`feed/dataset`) with no file in the lake when the build started: read as
    /// empty, so their indicators follow the zero-denominator rules.
    pub sources_without_data: Vec<String>,
    /// Per dataset, how many compactions the lake had when the build read it (files they
    /// retired are not read by this build; `chiso compact` deletes them once it is published).
    pub lake_compactions: BTreeMap<String, u64>,
}

impl BuildRecord {
    pub fn ok(&self) -> bool {
        self.published
    }
}

/// Where each build leaves its record, `<build id>.json`.
pub(super) fn builds_dir(warehouse: &Path) -> PathBuf {
    warehouse.join("_state/builds")
}

/// How many build records `_state/builds/` keeps: the newest ones, and the newest published
/// one whatever its age (compaction and `chiso status` read it). A record is a few tens of
/// kilobytes; a daemon building every minute writes 1,440 a day.
pub const RECORDS_KEPT: usize = 1000;

/// The records in `_state/builds/`, oldest first (their ids are time-ordered).
fn record_files(warehouse: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = builds_dir(warehouse);
    crate::models::files_with_extension(&dir, "json")
        .with_context(|| format!("listing {}", dir.display()))
}

/// The newest published build's record among `names` (oldest first), read as JSON.
fn newest_published(names: &[PathBuf]) -> anyhow::Result<Option<(usize, serde_json::Value)>> {
    for (i, path) in names.iter().enumerate().rev() {
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("reading {}", path.display()))?;
        if v["published"].as_bool() == Some(true) {
            return Ok(Some((i, v)));
        }
    }
    Ok(None)
}

/// Per dataset, how many compactions the newest published build had read (from
/// `_state/builds/`, named by time-ordered ids, so only the newest records are read); empty
/// before the first published build.
pub fn published_compactions(warehouse: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    Ok(match newest_published(&record_files(warehouse)?)? {
        Some((_, v)) => serde_json::from_value(v["lake_compactions"].clone()).unwrap_or_default(),
        None => BTreeMap::new(),
    })
}

/// Removes the build records older than the newest `keep`, except the newest published one
/// (compaction and `chiso status` read it); returns how many were removed.
pub(super) fn prune_records(warehouse: &Path, keep: usize) -> anyhow::Result<usize> {
    let names = record_files(warehouse)?;
    if names.len() <= keep {
        return Ok(0);
    }
    let old = names.len() - keep;
    let spared = newest_published(&names)?.map(|(i, _)| i);
    let mut removed = 0;
    for (i, path) in names[..old].iter().enumerate() {
        if Some(i) != spared {
            std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// A build as `chiso status` and the daemon report it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BuildSummary {
    pub build_id: String,
    pub started_at: String,
    pub finished_at: String,
    pub seconds: f64,
    pub published: bool,
    pub models: usize,
    pub models_failed: usize,
    pub tests_failed: usize,
    /// The first model error, or the first blocking test, of a build that did not publish.
    pub error: Option<String>,
}

impl BuildSummary {
    pub fn of(r: &BuildRecord) -> BuildSummary {
        let failed_model = r.models.iter().find(|m| m.status == ModelStatus::Error);
        let failed_test = r.tests.iter().find(|t| t.status.blocks());
        BuildSummary {
            build_id: r.build_id.clone(),
            started_at: r.started_at.clone(),
            finished_at: r.finished_at.clone(),
            seconds: r.seconds,
            published: r.published,
            models: r.models.len(),
            models_failed: r
                .models
                .iter()
                .filter(|m| m.status == ModelStatus::Error)
                .count(),
            tests_failed: r.tests.iter().filter(|t| t.status.blocks()).count(),
            error: failed_model
                .map(|m| format!("model {}: {}", m.model, m.error.as_deref().unwrap_or("")))
                .or_else(|| {
                    failed_test.map(|t| match (t.status, &t.error) {
                        (TestStatus::Error, Some(e)) => format!("data test {}: {e}", t.test),
                        _ => format!("data test {} failed ({} rows)", t.test, t.failures),
                    })
                }),
        }
    }
}

/// The newest build and the newest published build (which may be the same), from
/// `_state/builds/` (newest first by their time-ordered ids; reads until it has both).
pub fn latest_builds(
    warehouse: &Path,
) -> anyhow::Result<(Option<BuildSummary>, Option<BuildSummary>)> {
    let names = record_files(warehouse)?;
    let mut newest = None;
    for path in names.iter().rev() {
        let Ok(r) = std::fs::read(path)
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(serde_json::from_slice::<BuildRecord>(&b)?))
        else {
            continue; // a record being written, or of an older layout
        };
        let summary = BuildSummary::of(&r);
        if newest.is_none() {
            newest = Some(summary.clone());
        }
        if summary.published {
            return Ok((newest, Some(summary)));
        }
    }
    Ok((newest, None))
}

pub(super) fn save_record(conn: &duck::Connection, r: &BuildRecord) -> anyhow::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _chiso_builds (build_id VARCHAR, started_at VARCHAR, finished_at VARCHAR, \
           seconds DOUBLE, published BOOLEAN, models INTEGER, tests_failed INTEGER);
         CREATE TABLE IF NOT EXISTS _chiso_model_runs (build_id VARCHAR, model VARCHAR, materialized VARCHAR, \
           status VARCHAR, rows BIGINT, seconds DOUBLE, error VARCHAR);",
    )?;
    let failed = r.tests.iter().filter(|t| t.status.blocks()).count() as i64;
    conn.execute(
        "INSERT INTO _chiso_builds VALUES (?, ?, ?, ?, ?, ?, ?)",
        duckdb::params![
            r.build_id,
            r.started_at,
            r.finished_at,
            r.seconds,
            r.published,
            r.models.len() as i64,
            failed
        ],
    )?;
    for m in &r.models {
        conn.execute(
            "INSERT INTO _chiso_model_runs VALUES (?, ?, ?, ?, ?, ?, ?)",
            duckdb::params![
                r.build_id,
                m.model,
                m.materialized,
                m.status.as_str(),
                m.rows.map(|x| x as i64),
                m.seconds,
                m.error
            ],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_records_go_but_the_newest_published_one_stays() {
        let wh = tempfile::tempdir().unwrap();
        let dir = builds_dir(wh.path());
        std::fs::create_dir_all(&dir).unwrap();
        // Eight builds, oldest first; only the second published.
        for i in 0..8 {
            let body = serde_json::json!({ "published": i == 1, "lake_compactions": { "d": i } });
            std::fs::write(dir.join(format!("b{i}.json")), body.to_string()).unwrap();
        }
        let left = || -> Vec<String> {
            record_files(wh.path())
                .unwrap()
                .iter()
                .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(prune_records(wh.path(), 3).unwrap(), 4);
        assert_eq!(left(), ["b1", "b5", "b6", "b7"]);
        assert_eq!(published_compactions(wh.path()).unwrap()["d"], 1);
        // Under the limit: nothing goes.
        assert_eq!(prune_records(wh.path(), 4).unwrap(), 0);
        // A newer published build: the old published one goes too.
        std::fs::write(dir.join("b8.json"), r#"{"published": true}"#).unwrap();
        assert_eq!(prune_records(wh.path(), 3).unwrap(), 2);
        assert_eq!(left(), ["b6", "b7", "b8"]);
    }
}
