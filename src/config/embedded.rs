//! The project files built into the binary: the repository's own `chiso.toml` and `jobs/`
//! (`chiso demo` and commands outside a project use them), and the datasets their pull jobs
//! define, which the build reads as empty where a project's own jobs do not define them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::lake::schema::DatasetSpec;

/// The repository's `chiso.toml`.
pub const EMBEDDED_PROJECT: &str = include_str!("../../chiso.toml");
/// Every `jobs/*.toml` of the repository, by file name (listed by `build.rs`).
pub const EMBEDDED_JOBS: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/embedded_jobs.rs"));

/// The dataset a built-in pull job lands in `lake/<feed>/<name>`, if any. A project whose jobs
/// do not pull it (a deployment that has not added the job yet, a test's own job list) builds
/// the models over it from no rows, as for a dataset that has landed nothing, rather than
/// failing.
pub fn builtin_dataset(feed: &str, name: &str) -> Option<DatasetSpec> {
    static DATASETS: OnceLock<Vec<DatasetSpec>> = OnceLock::new();
    DATASETS
        .get_or_init(|| {
            let project = match super::ProjectConfig::parse(
                Path::new("<built-in>/chiso.toml"),
                EMBEDDED_PROJECT,
                &|_| None,
            ) {
                Ok(p) => p,
                Err(_) => return Vec::new(),
            };
            let files: Vec<(PathBuf, String)> = EMBEDDED_JOBS
                .iter()
                .map(|(n, t)| (PathBuf::from("<built-in>/jobs").join(n), t.to_string()))
                .collect();
            super::parse_job_files(&files, &project)
                .map(|jobs| {
                    jobs.pulls
                        .into_iter()
                        .map(|j| (*j.dataset).clone())
                        .collect()
                })
                .unwrap_or_default()
        })
        .iter()
        .find(|d| d.feed == feed && d.name == name)
        .cloned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_built_in_jobs_define_their_datasets() {
        let d = super::builtin_dataset("portal", "evaluations").expect("the evaluation dataset");
        assert!(d.columns.iter().any(|c| c.name == "data"));
        assert!(super::builtin_dataset("portal", "nothing").is_none());
    }
}
