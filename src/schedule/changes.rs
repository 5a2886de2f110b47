//! What the daemon keeps about its jobs besides their fires: the jobs paused by `chiso jobs
//! pause` (`_state/_serve/paused.json`), and which job files it loaded
//! (`_state/_serve/jobs.json`), so that `chiso status` shows the paused jobs and the files
//! changed since (not loaded yet, or refused with the error said).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub(crate) fn paused_path(warehouse: &Path) -> PathBuf {
    warehouse.join("_state/_serve/paused.json")
}

fn loaded_path(warehouse: &Path) -> PathBuf {
    warehouse.join("_state/_serve/jobs.json")
}

/// The jobs paused on this warehouse (kept across restarts).
pub fn read_paused(warehouse: &Path) -> BTreeSet<String> {
    std::fs::read(paused_path(warehouse))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// What the daemon loaded from the job files: each file's digest, and the error of the last
/// reload that was refused (its files are not loaded).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Loaded {
    pub dir: PathBuf,
    pub files: BTreeMap<String, String>,
    pub error: Option<String>,
}

/// Each `*.toml` in `dir` and the SHA-256 of its bytes.
pub fn digests(dir: &Path) -> BTreeMap<String, String> {
    use sha2::{Digest, Sha256};
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".toml") {
            if let Ok(bytes) = std::fs::read(e.path()) {
                out.insert(name, format!("{:x}", Sha256::digest(&bytes)));
            }
        }
    }
    out
}

/// What `chiso status` shows of the daemon's job files: the files changed since it loaded
/// them (not loaded yet, or refused), and why the last reload was refused.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PendingChanges {
    pub files: Vec<String>,
    pub error: Option<String>,
}

pub fn pending_changes(warehouse: &Path) -> Option<PendingChanges> {
    let loaded: Loaded =
        serde_json::from_slice(&std::fs::read(loaded_path(warehouse)).ok()?).ok()?;
    let now = digests(&loaded.dir);
    let mut files: Vec<String> = now
        .iter()
        .filter(|(f, d)| loaded.files.get(*f) != Some(d))
        .map(|(f, _)| f.clone())
        .collect();
    files.extend(
        loaded
            .files
            .keys()
            .filter(|f| !now.contains_key(*f))
            .cloned(),
    );
    Some(PendingChanges {
        files,
        error: loaded.error,
    })
}

/// Records what the daemon loaded (for `chiso status`).
pub fn write_loaded(
    warehouse: &Path,
    dir: &Path,
    files: BTreeMap<String, String>,
    error: Option<String>,
) {
    let loaded = Loaded {
        dir: dir.to_path_buf(),
        files,
        error,
    };
    if let Err(e) = crate::fs::write_durably(
        &loaded_path(warehouse),
        &serde_json::to_vec_pretty(&loaded).unwrap_or_default(),
    ) {
        tracing::warn!(error = %e, "Could not record which job files the daemon loaded.");
    }
}
