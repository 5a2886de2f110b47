//! How a model's `ref()`, `source()` and `this` render: the build file's tables, the lake snapshot's
//! files (or an empty relation of the dataset's columns), and the new-rows tables of a narrowed test.

use super::*;

/// Resolves `ref()` to tables of the build file and `source()` to the lake's Parquet files.
pub struct Relations<'a> {
    pub jobs: &'a [JobConfig],
    /// The committed files `source()` reads (set as variables on the build's connection).
    pub snapshot: &'a LakeSnapshot,
    /// Write the file list into the SQL instead of reading the variable: a view is kept in the
    /// published file and read by other connections, which do not have the variables.
    pub inline_snapshot: bool,
    pub this: String,
    /// Models read as only the rows this build wrote (tests narrowed to new rows).
    pub narrowed: Option<&'a BTreeSet<String>>,
}

impl Resolve for Relations<'_> {
    fn model(&self, name: &str) -> String {
        match self.narrowed {
            Some(n) if n.contains(name) => format!("temp.\"{}\"", new_rows_table(name)),
            _ => format!("\"{name}\""),
        }
    }
    fn source(&self, feed: &str, dataset: &str) -> String {
        match self.jobs.iter().find(|j| j.dataset.feed == feed && j.dataset.name == dataset) {
            Some(j)
                if self
                    .snapshot
                    .get(&j.dataset.key())
                    .is_some_and(|f| !f.is_empty()) =>
            {
                let files = if self.inline_snapshot {
                    let list: Vec<String> = self.snapshot[&j.dataset.key()]
                        .iter()
                        .map(|f| duck::lit(f))
                        .collect();
                    format!("[{}]", list.join(", "))
                } else {
                    format!("getvariable('{}')", snapshot::variable(&j.dataset))
                };
                format!(
                    "read_parquet({files}, hive_partitioning = true, hive_types_autocast = false, union_by_name = true, filename = true, file_row_number = true)"
                )
            }
            // Nothing landed yet (a fresh deployment, a month without petitions): no rows, with
            // the columns the files would have, so that the models over it build and the
            // indicators over it follow their zero-denominator rules.
            Some(j) => empty_relation(&crate::lake::dataset_columns(&j.dataset)),
            None => match crate::config::embedded::builtin_dataset(feed, dataset) {
                // A dataset of the built-in jobs that this project's jobs do not pull (a
                // deployment that has not added the job yet): no rows, as above.
                Some(spec) => empty_relation(&crate::lake::dataset_columns(&spec)),
                // Rendered into SQL that fails with this message if it is ever run.
                None => format!("(SELECT error('source(''{feed}'', ''{dataset}'') is not a dataset of any job in jobs/'))"),
            },
        }
    }
    fn this(&self) -> String {
        format!("\"{}\"", self.this)
    }
}

/// `(SELECT CAST(NULL AS t) AS "c", … WHERE false)`: no rows, typed columns.
pub(super) fn empty_relation(columns: &[(String, &str)]) -> String {
    let cols: Vec<String> = columns
        .iter()
        .map(|(name, ty)| format!("CAST(NULL AS {ty}) AS \"{}\"", name.replace('"', "\"\"")))
        .collect();
    format!("(SELECT {} WHERE false)", cols.join(", "))
}

/// The temporary table holding the rows an incremental model wrote in this build; it lives
/// until the build's connection closes (never in the file).
pub(super) fn new_rows_table(model: &str) -> String {
    format!("__chiso_new_{model}")
}
