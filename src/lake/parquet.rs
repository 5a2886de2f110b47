//! Writing Parquet files into the lake: decoded rows in, durable whole files out.
//!
//! A [`DatasetWriter`] buffers rows per hive partition, writes ZSTD-compressed row groups to a
//! temporary file (`….parquet.tmp`, which no `*.parquet` glob matches), and hands back
//! [`StagedFile`]s; [`StagedFile::land`] fsyncs nothing further, renames the file to its final
//! name and fsyncs the folder, giving a [`LandedFile`]. A crash leaves either a `.tmp` file
//! (removed by recovery) or a whole file. This module knows nothing of cursors or commits:
//! `lake::commit` decides when landed files count.

use crate::fs::{create_dir_durably, sync_dir};
use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::{Deserialize, Serialize};

use super::schema::{BatchBuilder, DatasetSpec, Row};

/// A complete Parquet file under its temporary name, synced to disk.
#[derive(Debug)]
pub struct StagedFile {
    tmp: PathBuf,
    dest: PathBuf,
    /// Final path relative to the warehouse folder.
    pub rel: String,
    pub rows: u64,
    pub bytes: u64,
    pub partition: String,
}

/// A file under its final name, as recorded in a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandedFile {
    /// Path relative to the warehouse folder.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// Partition folder, e.g. `sync_month=2026-08`.
    pub partition: String,
}

impl StagedFile {
    /// Renames the file to its final name and fsyncs the folder.
    pub fn land(self) -> std::io::Result<LandedFile> {
        std::fs::rename(&self.tmp, &self.dest)?;
        if let Some(dir) = self.dest.parent() {
            sync_dir(dir)?;
        }
        Ok(LandedFile {
            path: self.rel,
            rows: self.rows,
            bytes: self.bytes,
            partition: self.partition,
        })
    }

    /// Removes the temporary file (a run that gives up before landing).
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Parquet writer settings used for every lake file.
pub fn writer_properties(row_group_rows: usize) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("valid level"),
        ))
        .set_max_row_group_row_count(Some(row_group_rows.max(1024)))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_created_by(format!("chiso {}", env!("CARGO_PKG_VERSION")))
        .build()
}

struct OpenFile {
    writer: ArrowWriter<BufWriter<File>>,
    tmp: PathBuf,
    dest: PathBuf,
    rel: String,
    rows: u64,
}

struct Part {
    value: String,
    builder: BatchBuilder,
    file: Option<OpenFile>,
}

/// Buffers rows of one dataset per partition and writes them as Parquet row groups.
pub struct DatasetWriter {
    spec: Arc<DatasetSpec>,
    warehouse: PathBuf,
    /// Dataset folder relative to the warehouse, e.g. `lake/portal/dossiers`.
    base_rel: String,
    /// File name stem, e.g. `part-<run>-c0003`.
    stem: String,
    props: WriterProperties,
    parts: HashMap<i32, Part>,
    buffered_bytes: usize,
    max_buffered_bytes: usize,
    files_opened: usize,
    rows: u64,
}

impl DatasetWriter {
    /// `base_rel` is the dataset folder relative to `warehouse`; files are named
    /// `<stem>-<n>.parquet`.
    pub fn new(spec: Arc<DatasetSpec>, warehouse: &Path, base_rel: String, stem: String) -> Self {
        DatasetWriter {
            props: writer_properties(spec.row_group_rows),
            spec,
            warehouse: warehouse.to_path_buf(),
            base_rel,
            stem,
            parts: HashMap::new(),
            buffered_bytes: 0,
            max_buffered_bytes: 192 << 20,
            files_opened: 0,
            rows: 0,
        }
    }

    /// Caps the bytes buffered across partitions before the largest is written out.
    pub fn with_max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_bytes = bytes;
        self
    }

    /// Rows pushed since the writer was made.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Adds a row; `ingested_at` is local wall-clock microseconds.
    pub fn push(&mut self, row: Row<'_>, run_id: &str, ingested_at: i64) -> std::io::Result<()> {
        let day = row
            .part_day
            .unwrap_or_else(|| ingested_at.div_euclid(86_400_000_000) as i32);
        let key = self.spec.partition.key_for_day(day);
        let spec = &self.spec;
        let part = self.parts.entry(key).or_insert_with(|| Part {
            value: spec.partition.value_for_day(day),
            builder: BatchBuilder::new(spec.clone(), 1024),
            file: None,
        });
        let before = part.builder.approx_bytes();
        part.builder.push(row, run_id, ingested_at);
        self.buffered_bytes += part.builder.approx_bytes() - before;
        self.rows += 1;
        if part.builder.len() >= self.spec.row_group_rows {
            self.flush_part(key)?;
        }
        while self.buffered_bytes > self.max_buffered_bytes {
            let largest = self
                .parts
                .iter()
                .max_by_key(|(_, p)| p.builder.approx_bytes())
                .map(|(k, _)| *k);
            match largest {
                Some(k) if self.parts[&k].builder.approx_bytes() > 0 => self.flush_part(k)?,
                _ => break,
            }
        }
        Ok(())
    }

    fn flush_part(&mut self, key: i32) -> std::io::Result<()> {
        let part = self.parts.get_mut(&key).expect("partition exists");
        if part.builder.is_empty() {
            return Ok(());
        }
        self.buffered_bytes -= part.builder.approx_bytes().min(self.buffered_bytes);
        let batch = part.builder.finish();
        if part.file.is_none() {
            let dir_rel = format!(
                "{}/{}={}",
                self.base_rel, self.spec.partition.name, part.value
            );
            let dir = self.warehouse.join(&dir_rel);
            create_dir_durably(&dir)?;
            self.files_opened += 1;
            let name = format!("{}-{:03}.parquet", self.stem, self.files_opened);
            let dest = dir.join(&name);
            let tmp = dir.join(format!("{name}.tmp"));
            let f = File::create(&tmp)?;
            let writer = ArrowWriter::try_new(
                BufWriter::with_capacity(1 << 20, f),
                self.spec.schema.clone(),
                Some(self.props.clone()),
            )
            .map_err(std::io::Error::other)?;
            part.file = Some(OpenFile {
                writer,
                tmp,
                dest,
                rel: format!("{dir_rel}/{name}"),
                rows: 0,
            });
        }
        let file = part.file.as_mut().expect("opened above");
        file.rows += batch.num_rows() as u64;
        file.writer.write(&batch).map_err(std::io::Error::other)?;
        // One batch, one row group: the writer then holds no buffered rows.
        file.writer.flush().map_err(std::io::Error::other)?;
        Ok(())
    }

    /// Writes everything buffered, closes and fsyncs every file; nothing is visible yet.
    pub fn finish(mut self) -> std::io::Result<Vec<StagedFile>> {
        let keys: Vec<i32> = self.parts.keys().copied().collect();
        for k in &keys {
            self.flush_part(*k)?;
        }
        let mut staged = Vec::new();
        let mut parts: Vec<(i32, Part)> = self.parts.drain().collect();
        parts.sort_by_key(|(k, _)| *k);
        for (_, part) in parts {
            let Some(f) = part.file else { continue };
            let buf = f.writer.into_inner().map_err(std::io::Error::other)?;
            let file = buf.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            let bytes = file.metadata()?.len();
            staged.push(StagedFile {
                tmp: f.tmp,
                dest: f.dest,
                rel: f.rel,
                rows: f.rows,
                bytes,
                partition: format!("{}={}", self.spec.partition.name, part.value),
            });
        }
        Ok(staged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::schema::{ColumnSpec, ColumnType, Grain, PartitionSpec, RecordDecoder};

    #[test]
    fn writes_partitioned_files_only_visible_after_landing() {
        let spec = Arc::new(DatasetSpec::new(
            "f".into(),
            "d".into(),
            vec![
                ColumnSpec {
                    name: "K".into(),
                    ty: ColumnType::String,
                    required: true,
                    personal: false,
                },
                ColumnSpec {
                    name: "T".into(),
                    ty: ColumnType::Timestamp,
                    required: true,
                    personal: false,
                },
            ],
            vec!["K".into()],
            None,
            PartitionSpec {
                column: Some(1),
                grain: Grain::Month,
                name: "m".into(),
            },
            10,
            2,
            "%Y%m%d%H%M%S".into(),
        ));
        let dir = tempfile::tempdir().unwrap();
        let mut w = DatasetWriter::new(
            spec.clone(),
            dir.path(),
            "lake/f/d".into(),
            "part-r1-c0000".into(),
        );
        let mut dec = RecordDecoder::new(spec);
        for (k, t) in [
            ("a", "20260101000000"),
            ("b", "20260102000000"),
            ("c", "20260201000000"),
            ("d", "20260103000000"),
        ] {
            let text = format!(r#"{{"K":"{k}","T":"{t}"}}"#);
            let row = dec.decode_json(&text).unwrap();
            w.push(row, "r1", 0).unwrap();
        }
        let staged = w.finish().unwrap();
        assert_eq!(staged.len(), 2);
        assert_eq!(staged.iter().map(|s| s.rows).sum::<u64>(), 4);
        for s in &staged {
            assert!(s.tmp.exists() && !s.dest.exists());
        }
        let landed: Vec<LandedFile> = staged.into_iter().map(|s| s.land().unwrap()).collect();
        assert_eq!(landed[0].partition, "m=2026-01");
        assert!(landed[0]
            .path
            .starts_with("lake/f/d/m=2026-01/part-r1-c0000-"));
        assert!(dir.path().join(&landed[0].path).exists());
        let f = File::open(dir.path().join(&landed[0].path)).unwrap();
        let reader = parquet::file::reader::SerializedFileReader::new(f).unwrap();
        use parquet::file::reader::FileReader;
        assert_eq!(reader.metadata().file_metadata().num_rows(), 3);
        assert_eq!(
            reader.metadata().num_row_groups(),
            2,
            "row groups of at most 2 rows"
        );
    }
}
