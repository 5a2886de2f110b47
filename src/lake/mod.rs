//! The Parquet lake: raw, append-only, immutable files under `warehouse/lake/`.
//!
//! Layout: `lake/<feed>/<dataset>/<partition>=<value>/part-<run>-c<chunk>-<n>.parquet`, and
//! malformed records in `lake/_quarantine/<feed>__<dataset>/received_date=<day>/…` with the raw
//! text and the reason. `schema` decodes records, `parquet` writes files, `commit` records them
//! and the cursor. This module owns the layout; it does not fetch anything.

pub mod commit;
pub mod compact;
pub mod parquet;
pub mod schema;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use schema::{ColumnSpec, ColumnType, DatasetSpec, Grain, PartitionSpec};

/// Quarantine folder of a dataset, relative to the warehouse.
pub fn quarantine_rel(spec: &DatasetSpec) -> String {
    format!("lake/_quarantine/{}__{}", spec.feed, spec.name)
}

/// The folders a job writes into (dataset and quarantine), absolute.
pub fn job_dirs(warehouse: &Path, spec: &DatasetSpec) -> Vec<PathBuf> {
    vec![
        warehouse.join(spec.rel_dir()),
        warehouse.join(quarantine_rel(spec)),
    ]
}

/// Schema of quarantine files: one row per rejected record.
pub fn quarantine_spec(spec: &DatasetSpec) -> Arc<DatasetSpec> {
    let col = |name: &str, ty, required| ColumnSpec {
        name: name.into(),
        ty,
        required,
        personal: false,
    };
    Arc::new(DatasetSpec::new(
        spec.feed.clone(),
        format!("{}__quarantine", spec.name),
        vec![
            col("job", ColumnType::String, true),
            col("dataset", ColumnType::String, true),
            col("received_at", ColumnType::Timestamp, true),
            // Where the record was: page cursor / file and record number.
            col("position", ColumnType::String, true),
            col("reason", ColumnType::String, true),
            // The record exactly as received (it may hold personal data: never published).
            ColumnSpec {
                name: "raw".into(),
                ty: ColumnType::String,
                required: true,
                personal: true,
            },
        ],
        vec!["job".into(), "position".into()],
        None,
        PartitionSpec {
            column: Some(2),
            grain: Grain::Day,
            name: "received_date".into(),
        },
        spec.commit_every_rows,
        65_536,
        "%Y%m%d%H%M%S".into(),
    ))
}

/// The lake glob of a dataset for DuckDB's `read_parquet` (hive partitioned, one level).
pub fn dataset_glob(warehouse: &Path, spec: &DatasetSpec) -> String {
    format!("{}/*/*.parquet", warehouse.join(spec.rel_dir()).display())
}

/// The columns `read_parquet(<the dataset's files>, hive_partitioning, filename,
/// file_row_number)` gives a dataset, as DuckDB `(name, type)`: its declared columns as the files store them
/// (JSON as text), the lineage columns, the partition folder's key (text), the file name and
/// the row number. A dataset with no file yet reads as no rows of these columns.
pub fn dataset_columns(spec: &DatasetSpec) -> Vec<(String, &'static str)> {
    let mut cols: Vec<(String, &'static str)> = spec
        .columns
        .iter()
        .map(|c| {
            let ty = match c.ty {
                ColumnType::Json => ColumnType::String.duckdb(),
                other => other.duckdb(),
            };
            (c.name.clone(), ty)
        })
        .collect();
    cols.push(("_run_id".into(), "VARCHAR"));
    cols.push(("_ingested_at".into(), "TIMESTAMP"));
    cols.push(("_extra".into(), "VARCHAR"));
    cols.push((spec.partition.name.clone(), "VARCHAR"));
    cols.push(("filename".into(), "VARCHAR"));
    cols.push(("file_row_number".into(), "BIGINT"));
    cols
}
