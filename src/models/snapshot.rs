//! The lake as a build reads it: per dataset (`feed/name`), the absolute paths of the files the
//! commit logs name when the build starts. A build never sees a file a running pull has landed
//! but not committed (nor one recovery will remove), nor half of a chunk. Tables read the list
//! from a DuckDB variable set on the build's connection; views, kept in the published file and
//! read by other connections, get it written into their SQL.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;

use crate::config::JobConfig;
use crate::duck;
use crate::lake::commit::JobState;
use crate::lake::schema::DatasetSpec;

/// Dataset key (`DatasetSpec::key`) → the absolute paths of its committed files.
pub type LakeSnapshot = BTreeMap<String, Vec<String>>;

/// The lake as a build starts from it: the files, and per dataset how many compactions have
/// retired files so far (a build compares it with the count its starting file recorded).
#[derive(Debug, Clone, Default)]
pub struct Lake {
    pub files: LakeSnapshot,
    pub compactions: BTreeMap<String, u64>,
    /// Per dataset, the lake position read: (job, the newest log entry, its landing stamp).
    pub positions: BTreeMap<String, (String, u64, Option<i64>)>,
}

/// Reads the commit logs of `jobs`: the committed files.
pub fn read(warehouse: &Path, jobs: &[JobConfig]) -> anyhow::Result<LakeSnapshot> {
    Ok(read_lake(warehouse, jobs)?.files)
}

/// Reads the commit logs of `jobs`: the committed files and the compactions.
pub fn read_lake(warehouse: &Path, jobs: &[JobConfig]) -> anyhow::Result<Lake> {
    let mut lake = Lake::default();
    for job in jobs {
        let log = JobState::new(warehouse, &job.name)
            .snapshot()
            .with_context(|| format!("reading the commit log of job {}", job.name))?;
        lake.files.insert(
            job.dataset.key(),
            log.files
                .iter()
                .map(|f| warehouse.join(f).display().to_string())
                .collect(),
        );
        lake.compactions.insert(job.dataset.key(), log.compactions);
        lake.positions.insert(
            job.dataset.key(),
            (job.name.clone(), log.seq, log.stamped_through),
        );
    }
    Ok(lake)
}

/// The DuckDB variable holding a dataset's file list.
pub fn variable(spec: &DatasetSpec) -> String {
    let clean = |s: &str| {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect::<String>()
    };
    format!("chiso_lake_{}__{}", clean(&spec.feed), clean(&spec.name))
}

/// Sets one variable per dataset with files to the list `source()` reads.
pub fn set_variables(
    conn: &duck::Connection,
    jobs: &[JobConfig],
    snapshot: &LakeSnapshot,
) -> anyhow::Result<()> {
    for job in jobs {
        let Some(files) = snapshot.get(&job.dataset.key()).filter(|f| !f.is_empty()) else {
            continue;
        };
        let list: Vec<String> = files.iter().map(|f| duck::lit(f)).collect();
        conn.execute_batch(&format!(
            "SET VARIABLE {} = [{}];",
            variable(&job.dataset),
            list.join(", ")
        ))?;
    }
    Ok(())
}
