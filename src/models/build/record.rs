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

/// `_state/builds/latest`: the newest build's id and the newest published one's, written after
/// each record, so that compaction and `chiso status` read two records rather than list the
/// thousand kept (the listing is the fallback when it is missing or names a record gone).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub(super) struct Latest {
    pub newest: String,
    pub published: Option<String>,
}

fn latest_path(warehouse: &Path) -> PathBuf {
    builds_dir(warehouse).join("latest")
}

/// Records `r` as the newest build (and the newest published one when it published).
pub(super) fn write_latest(warehouse: &Path, r: &BuildRecord) -> anyhow::Result<()> {
    let published = if r.published {
        Some(r.build_id.clone())
    } else {
        match read_latest(warehouse) {
            Some(l) => l.published,
            None => newest_published(&record_files(warehouse)?)?
                .and_then(|(_, v)| v["build_id"].as_str().map(str::to_string)),
        }
    };
    let latest = Latest {
        newest: r.build_id.clone(),
        published,
    };
    let path = latest_path(warehouse);
    crate::fs::write_durably(&path, &serde_json::to_vec(&latest)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn read_latest(warehouse: &Path) -> Option<Latest> {
    serde_json::from_slice(&std::fs::read(latest_path(warehouse)).ok()?).ok()
}

fn read_record(warehouse: &Path, id: &str) -> Option<BuildRecord> {
    let bytes = std::fs::read(builds_dir(warehouse).join(format!("{id}.json"))).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Per dataset, how many compactions the newest published build had read (from
/// `_state/builds/latest`, else from the records, named by time-ordered ids, newest first);
/// empty before the first published build.
pub fn published_compactions(warehouse: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    if let Some(l) = read_latest(warehouse) {
        match &l.published {
            None => return Ok(BTreeMap::new()),
            Some(id) => {
                if let Some(r) = read_record(warehouse, id) {
                    return Ok(r.lake_compactions);
                }
            }
        }
    }
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

/// The newest `n` builds' records, newest first (records being written, or of an older
/// layout, are passed over).
pub fn recent_builds(warehouse: &Path, n: usize) -> anyhow::Result<Vec<BuildRecord>> {
    let names = record_files(warehouse)?;
    Ok(names
        .iter()
        .rev()
        .filter_map(|p| serde_json::from_slice::<BuildRecord>(&std::fs::read(p).ok()?).ok())
        .take(n)
        .collect())
}

/// The newest build and the newest published build (which may be the same), from
/// `_state/builds/` (newest first by their time-ordered ids; reads until it has both).
pub fn latest_builds(
    warehouse: &Path,
) -> anyhow::Result<(Option<BuildSummary>, Option<BuildSummary>)> {
    if let Some(l) = read_latest(warehouse) {
        let newest = read_record(warehouse, &l.newest);
        let published = match &l.published {
            None => Some(None),
            Some(id) if *id == l.newest => newest.as_ref().map(|r| Some(BuildSummary::of(r))),
            Some(id) => read_record(warehouse, id).map(|r| Some(BuildSummary::of(&r))),
        };
        if let (Some(n), Some(p)) = (newest, published) {
            return Ok((Some(BuildSummary::of(&n)), p));
        }
    }
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

/// Writes the build's rows into `_chiso_builds` and `_chiso_model_runs` (carried from build to
/// build in the warehouse file), keeping the newest `keep` builds' rows and the newest
/// published one's, as `_state/builds/` keeps their records. (Before, the tables grew by a
/// build's rows every build: a year of a build every five minutes is 105,120 builds and some
/// six million model runs in the file BI tools open.)
pub(super) fn save_record(
    conn: &duck::Connection,
    r: &BuildRecord,
    keep: usize,
) -> anyhow::Result<()> {
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
    let old = format!(
        "SELECT build_id FROM _chiso_builds \
         WHERE build_id < (SELECT build_id FROM _chiso_builds ORDER BY build_id DESC \
                           LIMIT 1 OFFSET {offset}) \
           AND build_id IS DISTINCT FROM (SELECT max(build_id) FROM _chiso_builds WHERE published)",
        offset = keep.saturating_sub(1)
    );
    conn.execute_batch(&format!(
        "DELETE FROM _chiso_model_runs WHERE build_id IN ({old}); \
         DELETE FROM _chiso_builds WHERE build_id IN ({old});"
    ))?;
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

    /// `_state/builds/latest` names the newest build and the newest published one: a build
    /// that failed keeps the published one it names; a pointer to a record gone falls back
    /// to the listing.
    #[test]
    fn the_latest_builds_are_read_from_their_pointer_and_else_from_the_records() {
        let wh = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(builds_dir(wh.path())).unwrap();
        let save = |id: &str, published: bool, compactions: u64| {
            let r: BuildRecord = serde_json::from_value(serde_json::json!({
                "build_id": id, "started_at": "", "finished_at": "", "seconds": 1.0,
                "models": [], "tests": [], "published": published, "published_path": "",
                "started_from": "empty", "sources_without_data": [],
                "lake_compactions": { "f/d": compactions }
            }))
            .unwrap();
            std::fs::write(
                builds_dir(wh.path()).join(format!("{id}.json")),
                serde_json::to_vec(&r).unwrap(),
            )
            .unwrap();
            write_latest(wh.path(), &r).unwrap();
        };
        save("b1", true, 1);
        save("b2", false, 2);
        let ids = |(n, p): (Option<BuildSummary>, Option<BuildSummary>)| {
            (n.map(|b| b.build_id), p.map(|b| b.build_id))
        };
        assert_eq!(
            ids(latest_builds(wh.path()).unwrap()),
            (Some("b2".into()), Some("b1".into()))
        );
        assert_eq!(published_compactions(wh.path()).unwrap()["f/d"], 1);
        let latest = read_latest(wh.path()).unwrap();
        assert_eq!(latest.published.as_deref(), Some("b1"));
        // A pointer naming a record that is gone: the records are listed.
        std::fs::remove_file(builds_dir(wh.path()).join("b2.json")).unwrap();
        assert_eq!(
            ids(latest_builds(wh.path()).unwrap()),
            (Some("b1".into()), Some("b1".into()))
        );
    }

    /// The warehouse's build tables keep what `_state/builds/` keeps: eight builds, the
    /// second published, three kept: the newest three and the published one (before: all
    /// eight, and a year of builds every five minutes in the file BI tools open).
    #[test]
    fn the_build_tables_keep_the_newest_builds_and_the_newest_published_one() {
        let conn = crate::duck::in_memory(1).unwrap();
        let record = |i: usize, published: bool| BuildRecord {
            build_id: format!("b{i}"),
            started_at: String::new(),
            finished_at: String::new(),
            seconds: 1.0,
            models: vec![ModelRun {
                model: "m".into(),
                materialized: "table".into(),
                status: ModelStatus::Ok,
                rows: Some(1),
                seconds: 0.1,
                error: None,
                rebuilt_because: None,
            }],
            tests: Vec::new(),
            published,
            published_path: PathBuf::new(),
            started_from: "empty".into(),
            sources_without_data: Vec::new(),
            lake_compactions: BTreeMap::new(),
        };
        let ids = |table: &str| -> Vec<String> {
            let mut st = conn
                .prepare(&format!("SELECT build_id FROM {table} ORDER BY build_id"))
                .unwrap();
            st.query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        for i in 0..8 {
            save_record(&conn, &record(i, i == 1), 3).unwrap();
        }
        assert_eq!(ids("_chiso_builds"), ["b1", "b5", "b6", "b7"]);
        assert_eq!(ids("_chiso_model_runs"), ["b1", "b5", "b6", "b7"]);
        save_record(&conn, &record(8, true), 3).unwrap();
        assert_eq!(ids("_chiso_builds"), ["b6", "b7", "b8"]);
    }
}
