//! Dataset schemas and record decoding: from a feed's JSON object or CSV row to typed Arrow
//! columns, or to a quarantine reason.
//!
//! Owns the mapping of the job file's column types to Arrow types and the rules that make a
//! record malformed (missing required field, unparsable timestamp, wrong shape). Field names
//! stay the feed's own (`MaHoSo`); renaming happens in staging SQL, never here. It does not
//! write files (that is `lake::parquet`) and knows nothing of HTTP or cursors.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{Datelike, NaiveDate, NaiveDateTime};
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Type of a dataset column, as written in job files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// Text; numbers are accepted and kept as their text (codes are strings).
    String,
    /// 64-bit integer; numeric strings are accepted.
    Int,
    /// 64-bit float; numeric strings are accepted.
    Float,
    /// true/false, 0/1, "0"/"1".
    Bool,
    /// Local wall-clock time (Asia/Ho_Chi_Minh) in the dataset's timestamp format, stored as a
    /// DuckDB `TIMESTAMP` without zone.
    Timestamp,
    /// `yyyyMMdd`, `yyyy-MM-dd`, or a timestamp (its date).
    Date,
    /// Any JSON value (arrays of components, fee lists…), kept as JSON text.
    Json,
}

impl ColumnType {
    fn arrow(self) -> DataType {
        match self {
            ColumnType::String | ColumnType::Json => DataType::Utf8,
            ColumnType::Int => DataType::Int64,
            ColumnType::Float => DataType::Float64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            ColumnType::Date => DataType::Date32,
        }
    }

    /// DuckDB type name, for `read_json(columns = …)` and docs.
    pub fn duckdb(self) -> &'static str {
        match self {
            ColumnType::String => "VARCHAR",
            ColumnType::Json => "JSON",
            ColumnType::Int => "BIGINT",
            ColumnType::Float => "DOUBLE",
            ColumnType::Bool => "BOOLEAN",
            ColumnType::Timestamp => "TIMESTAMP",
            ColumnType::Date => "DATE",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpec {
    pub name: String,
    pub ty: ColumnType,
    pub required: bool,
    pub personal: bool,
}

/// Partition folder grain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grain {
    Day,
    Month,
    Year,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    /// Index of the timestamp/date column; `None` partitions by `_ingested_at`.
    pub column: Option<usize>,
    pub grain: Grain,
    /// Folder key, e.g. `sync_month`.
    pub name: String,
}

impl PartitionSpec {
    /// Partition value for a day number (days since 1970-01-01).
    pub fn value_for_day(&self, day: i32) -> String {
        let d = NaiveDate::from_num_days_from_ce_opt(day + UNIX_EPOCH_CE).unwrap_or_default();
        match self.grain {
            Grain::Day => d.format("%Y-%m-%d").to_string(),
            Grain::Month => format!("{:04}-{:02}", d.year(), d.month()),
            Grain::Year => format!("{:04}", d.year()),
        }
    }

    /// A compact key for the partition of a day: equal keys, equal folders.
    pub fn key_for_day(&self, day: i32) -> i32 {
        match self.grain {
            Grain::Day => day,
            Grain::Month | Grain::Year => {
                let d =
                    NaiveDate::from_num_days_from_ce_opt(day + UNIX_EPOCH_CE).unwrap_or_default();
                let first = match self.grain {
                    Grain::Month => NaiveDate::from_ymd_opt(d.year(), d.month(), 1),
                    _ => NaiveDate::from_ymd_opt(d.year(), 1, 1),
                }
                .unwrap_or_default();
                first.num_days_from_ce() - UNIX_EPOCH_CE
            }
        }
    }
}

pub const UNIX_EPOCH_CE: i32 = 719_163;

/// Everything the lake needs to know about one dataset.
#[derive(Debug, Clone)]
pub struct DatasetSpec {
    pub feed: String,
    pub name: String,
    pub columns: Vec<ColumnSpec>,
    pub key: Vec<String>,
    pub version: Option<String>,
    pub partition: PartitionSpec,
    pub commit_every_rows: usize,
    pub row_group_rows: usize,
    pub timestamp_format: String,
    /// Arrow schema of the files: the columns, then `_run_id`, `_ingested_at`, `_extra`.
    pub schema: SchemaRef,
    index: HashMap<String, usize>,
    compact_ts: bool,
}

impl DatasetSpec {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        feed: String,
        name: String,
        columns: Vec<ColumnSpec>,
        key: Vec<String>,
        version: Option<String>,
        partition: PartitionSpec,
        commit_every_rows: usize,
        row_group_rows: usize,
        timestamp_format: String,
    ) -> DatasetSpec {
        let mut fields: Vec<Field> = columns
            .iter()
            .map(|c| Field::new(&c.name, c.ty.arrow(), !c.required))
            .collect();
        fields.push(Field::new("_run_id", DataType::Utf8, false));
        fields.push(Field::new(
            "_ingested_at",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ));
        fields.push(Field::new("_extra", DataType::Utf8, true));
        let index = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let compact_ts = timestamp_format == "%Y%m%d%H%M%S";
        DatasetSpec {
            feed,
            name,
            schema: Arc::new(Schema::new(fields)),
            columns,
            key,
            version,
            partition,
            commit_every_rows,
            row_group_rows,
            timestamp_format,
            index,
            compact_ts,
        }
    }

    pub fn column(&self, name: &str) -> Option<(usize, &ColumnSpec)> {
        self.index.get(name).map(|&i| (i, &self.columns[i]))
    }

    /// `<feed>/<name>`: how reports, builds and status name the dataset.
    pub fn key(&self) -> String {
        format!("{}/{}", self.feed, self.name)
    }

    /// `lake/<feed>/<name>` relative to the warehouse.
    pub fn rel_dir(&self) -> String {
        format!("lake/{}/{}", self.feed, self.name)
    }

    /// DuckDB `columns = {…}` struct literal for `read_json`.
    pub fn duckdb_columns(&self) -> String {
        let parts: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("'{}': '{}'", c.name, c.ty.duckdb()))
            .collect();
        format!("{{{}}}", parts.join(", "))
    }

    /// Parses a timestamp in the dataset's format to microseconds since the epoch (wall clock).
    pub fn parse_timestamp(&self, s: &str) -> Option<i64> {
        if self.compact_ts {
            parse_compact_timestamp(s)
        } else {
            NaiveDateTime::parse_from_str(s, &self.timestamp_format)
                .ok()
                .map(|t| t.and_utc().timestamp_micros())
        }
    }
}

/// Parses `yyyyMMddHHmmss` quickly and strictly (every field in range).
pub fn parse_compact_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 14 || !b.iter().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let n = |i: usize, len: usize| -> u32 {
        b[i..i + len]
            .iter()
            .fold(0u32, |acc, c| acc * 10 + (c - b'0') as u32)
    };
    let (y, mo, d, h, mi, se) = (n(0, 4), n(4, 2), n(6, 2), n(8, 2), n(10, 2), n(12, 2));
    if h > 23 || mi > 59 || se > 59 {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(y as i32, mo, d)?;
    let days = (date.num_days_from_ce() - UNIX_EPOCH_CE) as i64;
    Some((days * 86_400 + (h * 3600 + mi * 60 + se) as i64) * 1_000_000)
}

fn parse_date(s: &str) -> Option<i32> {
    let d = match s.len() {
        8 => NaiveDate::parse_from_str(s, "%Y%m%d").ok()?,
        10 => NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?,
        14 => {
            let us = parse_compact_timestamp(s)?;
            return Some(us.div_euclid(86_400_000_000) as i32);
        }
        _ => return None,
    };
    Some(d.num_days_from_ce() - UNIX_EPOCH_CE)
}

// ------------------------------------------------------------------------------------------
// Raw cells: what a field held before typing

/// A field as it came from the feed, before conversion to the column type.
#[derive(Debug, Clone, PartialEq)]
pub enum RawCell<'a> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(Cow<'a, str>),
    /// JSON array or object text (also any value of a `json` column).
    Json(&'a str),
}

/// A typed cell ready for a builder.
#[derive(Debug, Clone, PartialEq)]
enum Cell<'a> {
    Null,
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Micros(i64),
    Day(i32),
}

/// Why a record was quarantined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn describe(raw: &RawCell<'_>) -> String {
    let s = match raw {
        RawCell::Null => "null".to_string(),
        RawCell::Bool(b) => b.to_string(),
        RawCell::I64(v) => v.to_string(),
        RawCell::U64(v) => v.to_string(),
        RawCell::F64(v) => v.to_string(),
        RawCell::Str(s) => format!("{s:?}"),
        RawCell::Json(j) => j.to_string(),
    };
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s
    }
}

fn convert<'a>(
    spec: &DatasetSpec,
    col: &ColumnSpec,
    raw: RawCell<'a>,
) -> Result<Cell<'a>, Malformed> {
    let bad = |what: &str, raw: &RawCell<'_>| {
        Malformed(format!("{}: {} is not {what}", col.name, describe(raw)))
    };
    let cell = match (col.ty, raw) {
        (_, RawCell::Null) => Cell::Null,
        (ColumnType::Json, RawCell::Json(j)) => Cell::Str(Cow::Borrowed(j)),
        (ColumnType::Json, RawCell::Str(s)) => {
            // A JSON column given as a string value: keep the JSON text of that string.
            Cell::Str(Cow::Owned(serde_json::to_string(&s).unwrap_or_default()))
        }
        (ColumnType::Json, other) => Cell::Str(Cow::Owned(describe(&other))),
        (_, RawCell::Str(s)) if s.is_empty() && col.ty != ColumnType::String => Cell::Null,
        (ColumnType::String, RawCell::Str(s)) => Cell::Str(s),
        (ColumnType::String, RawCell::I64(v)) => Cell::Str(Cow::Owned(v.to_string())),
        (ColumnType::String, RawCell::U64(v)) => Cell::Str(Cow::Owned(v.to_string())),
        (ColumnType::String, RawCell::F64(v)) => Cell::Str(Cow::Owned(v.to_string())),
        (ColumnType::Int, RawCell::I64(v)) => Cell::Int(v),
        (ColumnType::Int, r @ RawCell::U64(v)) => {
            Cell::Int(i64::try_from(v).map_err(|_| bad("a 64-bit integer", &r))?)
        }
        (ColumnType::Int, RawCell::F64(v)) if v.fract() == 0.0 && v.abs() < 9.0e15 => {
            Cell::Int(v as i64)
        }
        (ColumnType::Int, r @ RawCell::Str(_)) => {
            let RawCell::Str(s) = &r else { unreachable!() };
            Cell::Int(s.trim().parse().map_err(|_| bad("an integer", &r))?)
        }
        (ColumnType::Float, RawCell::F64(v)) => Cell::Float(v),
        (ColumnType::Float, RawCell::I64(v)) => Cell::Float(v as f64),
        (ColumnType::Float, RawCell::U64(v)) => Cell::Float(v as f64),
        (ColumnType::Float, r @ RawCell::Str(_)) => {
            let RawCell::Str(s) = &r else { unreachable!() };
            Cell::Float(s.trim().parse().map_err(|_| bad("a number", &r))?)
        }
        (ColumnType::Bool, RawCell::Bool(b)) => Cell::Bool(b),
        (ColumnType::Bool, RawCell::I64(0)) | (ColumnType::Bool, RawCell::U64(0)) => {
            Cell::Bool(false)
        }
        (ColumnType::Bool, RawCell::I64(1)) | (ColumnType::Bool, RawCell::U64(1)) => {
            Cell::Bool(true)
        }
        (ColumnType::Bool, r @ RawCell::Str(_)) => {
            let RawCell::Str(s) = &r else { unreachable!() };
            match s.trim() {
                "1" | "true" | "TRUE" | "True" => Cell::Bool(true),
                "0" | "false" | "FALSE" | "False" => Cell::Bool(false),
                _ => return Err(bad("a boolean (0/1, true/false)", &r)),
            }
        }
        (ColumnType::Timestamp, r @ RawCell::Str(_)) => {
            let RawCell::Str(s) = &r else { unreachable!() };
            Cell::Micros(
                spec.parse_timestamp(s)
                    .ok_or_else(|| bad(&format!("a timestamp in {}", spec.timestamp_format), &r))?,
            )
        }
        (ColumnType::Timestamp, r @ RawCell::I64(v)) if spec.compact_ts => Cell::Micros(
            parse_compact_timestamp(&v.to_string())
                .ok_or_else(|| bad("a yyyyMMddHHmmss timestamp", &r))?,
        ),
        (ColumnType::Date, r @ RawCell::Str(_)) => {
            let RawCell::Str(s) = &r else { unreachable!() };
            Cell::Day(parse_date(s).ok_or_else(|| bad("a date (yyyyMMdd or yyyy-MM-dd)", &r))?)
        }
        (ColumnType::Date, r @ RawCell::I64(v)) => {
            Cell::Day(parse_date(&v.to_string()).ok_or_else(|| bad("a date (yyyyMMdd)", &r))?)
        }
        (ty, r) => {
            return Err(bad(
                match ty {
                    ColumnType::String => "a string",
                    ColumnType::Int => "an integer",
                    ColumnType::Float => "a number",
                    ColumnType::Bool => "a boolean",
                    ColumnType::Timestamp => "a timestamp string",
                    ColumnType::Date => "a date string",
                    ColumnType::Json => "JSON",
                },
                &r,
            ))
        }
    };
    if matches!(cell, Cell::Null) && col.required {
        return Err(Malformed(format!(
            "{}: required field is null or empty",
            col.name
        )));
    }
    Ok(cell)
}

// ------------------------------------------------------------------------------------------
// Decoding one JSON object

struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Reads one value of a non-JSON column as a RawCell. Arrays and objects are consumed and
/// marked, as they are never valid for a scalar column.
struct RawSeed;

impl<'de> DeserializeSeed<'de> for RawSeed {
    type Value = RawCell<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawCell<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(RawCell::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(RawCell::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(RawCell::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(RawCell::I64(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(RawCell::U64(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(RawCell::F64(v))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(RawCell::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawCell::Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(RawCell::Str(Cow::Owned(v)))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(RawCell::Json("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
                Ok(RawCell::Json("an object"))
            }
        }
        d.deserialize_any(V)
    }
}

/// Decodes JSON records of one dataset into typed rows. Reused across records so that the
/// per-record work allocates nothing in the common case.
pub struct RecordDecoder {
    spec: Arc<DatasetSpec>,
    /// Column order of the previous record: most feeds send keys in a fixed order, so the next
    /// record's k-th key is checked against it before the hash lookup.
    last_order: Vec<usize>,
}

/// One decoded row, borrowed from the input text.
pub struct Row<'a> {
    cells: Vec<Cell<'a>>,
    /// Fields the dataset does not declare, as a JSON object text.
    extra: Option<String>,
    /// Partition day (days since epoch) when partitioned by a column.
    pub part_day: Option<i32>,
    /// The version column's value (microseconds) when it is a timestamp, for watermarks.
    pub version_micros: Option<i64>,
}

impl RecordDecoder {
    pub fn new(spec: Arc<DatasetSpec>) -> Self {
        RecordDecoder {
            last_order: Vec::with_capacity(spec.columns.len()),
            spec,
        }
    }

    pub fn spec(&self) -> &Arc<DatasetSpec> {
        &self.spec
    }

    /// Decodes one JSON object text.
    pub fn decode_json<'a>(&mut self, text: &'a str) -> Result<Row<'a>, Malformed> {
        let n = self.spec.columns.len();
        let mut raws: Vec<Option<RawCell<'a>>> = vec![None; n];
        let mut extra: Vec<(Cow<'a, str>, &'a str)> = Vec::new();
        let mut order: Vec<usize> = Vec::with_capacity(n);
        {
            let mut de = serde_json::Deserializer::from_str(text);
            let visitor = ObjectVisitor {
                spec: &self.spec,
                last_order: &self.last_order,
                raws: &mut raws,
                extra: &mut extra,
                order: &mut order,
            };
            de::Deserializer::deserialize_map(&mut de, visitor)
                .map_err(|e| Malformed(format!("not a JSON object: {e}")))?;
            de.end()
                .map_err(|e| Malformed(format!("trailing characters after the record: {e}")))?;
        }
        if order.len() == n || self.last_order.is_empty() {
            self.last_order = order;
        }
        let extra = if extra.is_empty() {
            None
        } else {
            let mut s = String::from("{");
            for (i, (k, v)) in extra.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(&serde_json::to_string(k.as_ref()).unwrap_or_default());
                s.push(':');
                s.push_str(v);
            }
            s.push('}');
            Some(s)
        };
        self.finish_row(raws, extra)
    }

    /// Decodes one CSV row given as (header index → column index) and field texts.
    pub fn decode_fields<'a>(
        &mut self,
        mapping: &[Option<usize>],
        fields: &'a csv::StringRecord,
        headers: &csv::StringRecord,
    ) -> Result<Row<'a>, Malformed> {
        let n = self.spec.columns.len();
        let mut raws: Vec<Option<RawCell<'a>>> = vec![None; n];
        let mut extra = serde_json::Map::new();
        if fields.len() != headers.len() {
            return Err(Malformed(format!(
                "row has {} fields, the header has {}",
                fields.len(),
                headers.len()
            )));
        }
        for (i, f) in fields.iter().enumerate() {
            match mapping.get(i).copied().flatten() {
                Some(c) => {
                    raws[c] = Some(if f.is_empty() {
                        RawCell::Null
                    } else {
                        RawCell::Str(Cow::Borrowed(f))
                    })
                }
                None => {
                    extra.insert(
                        headers[i].to_string(),
                        serde_json::Value::String(f.to_string()),
                    );
                }
            }
        }
        let extra = if extra.is_empty() {
            None
        } else {
            Some(serde_json::Value::Object(extra).to_string())
        };
        self.finish_row(raws, extra)
    }

    /// Maps a CSV header to column indexes (unknown headers go to `_extra`).
    pub fn csv_mapping(&self, headers: &csv::StringRecord) -> Vec<Option<usize>> {
        headers
            .iter()
            .map(|h| {
                self.spec
                    .index
                    .get(h.trim_start_matches('\u{feff}'))
                    .copied()
            })
            .collect()
    }

    fn finish_row<'a>(
        &self,
        raws: Vec<Option<RawCell<'a>>>,
        extra: Option<String>,
    ) -> Result<Row<'a>, Malformed> {
        let spec = &self.spec;
        let mut cells = Vec::with_capacity(raws.len());
        for (col, raw) in spec.columns.iter().zip(raws) {
            let cell = match raw {
                None if col.required => {
                    return Err(Malformed(format!(
                        "{}: required field is missing",
                        col.name
                    )))
                }
                None => Cell::Null,
                Some(r) => convert(spec, col, r)?,
            };
            cells.push(cell);
        }
        let part_day = spec.partition.column.and_then(|i| match cells[i] {
            Cell::Micros(us) => Some(us.div_euclid(86_400_000_000) as i32),
            Cell::Day(d) => Some(d),
            _ => None,
        });
        let version_micros = spec
            .version
            .as_ref()
            .and_then(|v| spec.index.get(v))
            .and_then(|&i| match cells[i] {
                Cell::Micros(us) => Some(us),
                _ => None,
            });
        Ok(Row {
            cells,
            extra,
            part_day,
            version_micros,
        })
    }
}

impl Row<'_> {
    /// The record's key as text, `|`-joined (timestamps as `yyyyMMddHHmmss`).
    pub fn key_string(&self, spec: &DatasetSpec) -> String {
        let mut out = String::new();
        for (n, k) in spec.key.iter().enumerate() {
            if n > 0 {
                out.push('|');
            }
            match spec.index.get(k).and_then(|&i| self.cells.get(i)) {
                Some(Cell::Str(s)) => out.push_str(s),
                Some(Cell::Int(v)) => out.push_str(&v.to_string()),
                Some(Cell::Float(v)) => out.push_str(&v.to_string()),
                Some(Cell::Bool(v)) => out.push_str(&v.to_string()),
                Some(Cell::Micros(us)) => out.push_str(
                    &chrono::DateTime::from_timestamp_micros(*us)
                        .unwrap_or_default()
                        .format("%Y%m%d%H%M%S")
                        .to_string(),
                ),
                Some(Cell::Day(d)) => out.push_str(
                    &NaiveDate::from_num_days_from_ce_opt(d + UNIX_EPOCH_CE)
                        .unwrap_or_default()
                        .to_string(),
                ),
                Some(Cell::Null) | None => {}
            }
        }
        out
    }

    /// Microseconds of a timestamp column, if set.
    pub fn micros(&self, col: usize) -> Option<i64> {
        match self.cells.get(col) {
            Some(Cell::Micros(us)) => Some(*us),
            _ => None,
        }
    }
}

struct ObjectVisitor<'s, 'a> {
    spec: &'s DatasetSpec,
    last_order: &'s [usize],
    raws: &'s mut Vec<Option<RawCell<'a>>>,
    extra: &'s mut Vec<(Cow<'a, str>, &'a str)>,
    order: &'s mut Vec<usize>,
}

impl<'de> Visitor<'de> for ObjectVisitor<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        let mut k = 0usize;
        while let Some(key) = map.next_key::<CowStr<'de>>()? {
            let key = key.0;
            let predicted = self
                .last_order
                .get(k)
                .copied()
                .filter(|&i| self.spec.columns[i].name == key);
            k += 1;
            let idx = predicted.or_else(|| self.spec.index.get(key.as_ref()).copied());
            match idx {
                Some(i) => {
                    let raw = if self.spec.columns[i].ty == ColumnType::Json {
                        let v: &'de RawValue = map.next_value()?;
                        if v.get() == "null" {
                            RawCell::Null
                        } else {
                            RawCell::Json(v.get())
                        }
                    } else {
                        map.next_value_seed(RawSeed)?
                    };
                    if self.raws[i].is_some() {
                        return Err(de::Error::custom(format!("field {key} appears twice")));
                    }
                    self.raws[i] = Some(raw);
                    self.order.push(i);
                }
                None => {
                    let v: &'de RawValue = map.next_value()?;
                    self.extra.push((key, v.get()));
                }
            }
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------
// Building Arrow batches

enum ColBuilder {
    Str(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Ts(TimestampMicrosecondBuilder),
    Date(Date32Builder),
}

/// Accumulates decoded rows of one dataset into an Arrow batch.
pub struct BatchBuilder {
    spec: Arc<DatasetSpec>,
    cols: Vec<ColBuilder>,
    run_id: StringBuilder,
    ingested_at: TimestampMicrosecondBuilder,
    extra: StringBuilder,
    rows: usize,
    /// Rough byte size of the buffered values, for memory bounds.
    bytes: usize,
}

impl BatchBuilder {
    pub fn new(spec: Arc<DatasetSpec>, capacity: usize) -> Self {
        let cols = spec
            .columns
            .iter()
            .map(|c| match c.ty {
                ColumnType::String | ColumnType::Json => {
                    ColBuilder::Str(StringBuilder::with_capacity(capacity, capacity * 16))
                }
                ColumnType::Int => ColBuilder::Int(Int64Builder::with_capacity(capacity)),
                ColumnType::Float => ColBuilder::Float(Float64Builder::with_capacity(capacity)),
                ColumnType::Bool => ColBuilder::Bool(BooleanBuilder::with_capacity(capacity)),
                ColumnType::Timestamp => {
                    ColBuilder::Ts(TimestampMicrosecondBuilder::with_capacity(capacity))
                }
                ColumnType::Date => ColBuilder::Date(Date32Builder::with_capacity(capacity)),
            })
            .collect();
        BatchBuilder {
            spec,
            cols,
            run_id: StringBuilder::with_capacity(capacity, capacity * 36),
            ingested_at: TimestampMicrosecondBuilder::with_capacity(capacity),
            extra: StringBuilder::new(),
            rows: 0,
            bytes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn approx_bytes(&self) -> usize {
        self.bytes
    }

    /// Appends a decoded row. `ingested_at` is wall-clock microseconds (Asia/Ho_Chi_Minh).
    pub fn push(&mut self, row: Row<'_>, run_id: &str, ingested_at: i64) {
        for (b, cell) in self.cols.iter_mut().zip(row.cells) {
            match (b, cell) {
                (ColBuilder::Str(b), Cell::Str(s)) => {
                    self.bytes += s.len();
                    b.append_value(s.as_ref())
                }
                (ColBuilder::Str(b), Cell::Null) => b.append_null(),
                (ColBuilder::Int(b), Cell::Int(v)) => b.append_value(v),
                (ColBuilder::Int(b), _) => b.append_null(),
                (ColBuilder::Float(b), Cell::Float(v)) => b.append_value(v),
                (ColBuilder::Float(b), _) => b.append_null(),
                (ColBuilder::Bool(b), Cell::Bool(v)) => b.append_value(v),
                (ColBuilder::Bool(b), _) => b.append_null(),
                (ColBuilder::Ts(b), Cell::Micros(v)) => b.append_value(v),
                (ColBuilder::Ts(b), _) => b.append_null(),
                (ColBuilder::Date(b), Cell::Day(v)) => b.append_value(v),
                (ColBuilder::Date(b), _) => b.append_null(),
                (ColBuilder::Str(b), _) => b.append_null(),
            }
        }
        self.bytes += 8 * self.cols.len() + run_id.len();
        self.run_id.append_value(run_id);
        self.ingested_at.append_value(ingested_at);
        match row.extra {
            Some(e) => {
                self.bytes += e.len();
                self.extra.append_value(e)
            }
            None => self.extra.append_null(),
        }
        self.rows += 1;
    }

    /// Takes the buffered rows as a batch, leaving the builder empty.
    pub fn finish(&mut self) -> RecordBatch {
        let mut arrays: Vec<ArrayRef> = self
            .cols
            .iter_mut()
            .map(|b| -> ArrayRef {
                match b {
                    ColBuilder::Str(b) => Arc::new(b.finish()),
                    ColBuilder::Int(b) => Arc::new(b.finish()),
                    ColBuilder::Float(b) => Arc::new(b.finish()),
                    ColBuilder::Bool(b) => Arc::new(b.finish()),
                    ColBuilder::Ts(b) => Arc::new(b.finish()),
                    ColBuilder::Date(b) => Arc::new(b.finish()),
                }
            })
            .collect();
        arrays.push(Arc::new(self.run_id.finish()));
        arrays.push(Arc::new(self.ingested_at.finish()));
        arrays.push(Arc::new(self.extra.finish()));
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(self.spec.schema.clone(), arrays)
            .expect("builders follow the dataset schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, StringArray, TimestampMicrosecondArray};

    fn spec() -> Arc<DatasetSpec> {
        let cols = vec![
            ColumnSpec {
                name: "MaHoSo".into(),
                ty: ColumnType::String,
                required: true,
                personal: false,
            },
            ColumnSpec {
                name: "KenhThucHien".into(),
                ty: ColumnType::String,
                required: false,
                personal: false,
            },
            ColumnSpec {
                name: "SoLuong".into(),
                ty: ColumnType::Int,
                required: false,
                personal: false,
            },
            ColumnSpec {
                name: "NgayHenTra".into(),
                ty: ColumnType::Timestamp,
                required: false,
                personal: false,
            },
            ColumnSpec {
                name: "TaiLieuNop".into(),
                ty: ColumnType::Json,
                required: false,
                personal: false,
            },
            ColumnSpec {
                name: "ThoiDiemDongBo".into(),
                ty: ColumnType::Timestamp,
                required: true,
                personal: false,
            },
        ];
        Arc::new(DatasetSpec::new(
            "portal".into(),
            "dossiers".into(),
            cols,
            vec!["MaHoSo".into()],
            Some("ThoiDiemDongBo".into()),
            PartitionSpec {
                column: Some(5),
                grain: Grain::Month,
                name: "sync_month".into(),
            },
            1000,
            1000,
            "%Y%m%d%H%M%S".into(),
        ))
    }

    #[test]
    fn compact_timestamps_are_strict() {
        assert_eq!(parse_compact_timestamp("19700101000001"), Some(1_000_000));
        assert_eq!(
            parse_compact_timestamp("20260815093000"),
            Some(
                NaiveDateTime::parse_from_str("20260815093000", "%Y%m%d%H%M%S")
                    .unwrap()
                    .and_utc()
                    .timestamp_micros()
            )
        );
        for bad in [
            "20261315093000",
            "20260230093000",
            "20260815243000",
            "2026081509300",
            "2026-08-15 09:30",
        ] {
            assert_eq!(parse_compact_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn decodes_and_builds() {
        let s = spec();
        let mut d = RecordDecoder::new(s.clone());
        let mut b = BatchBuilder::new(s.clone(), 4);
        let rec = r#"{"MaHoSo":"H1","KenhThucHien":2,"SoLuong":"7","NgayHenTra":"20260820170000","TaiLieuNop":[{"DuocSoHoa":1}],"ThoiDiemDongBo":"20260815093000","Khac":"x"}"#;
        let row = d.decode_json(rec).unwrap();
        assert_eq!(s.partition.value_for_day(row.part_day.unwrap()), "2026-08");
        b.push(row, "run1", 0);
        let batch = b.finish();
        assert_eq!(batch.num_rows(), 1);
        let kenh = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(kenh.value(0), "2", "numeric codes are kept as text");
        let docs = batch
            .column(4)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(docs.value(0), r#"[{"DuocSoHoa":1}]"#);
        let extra = batch
            .column(8)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(extra.value(0), r#"{"Khac":"x"}"#);
        let due = batch
            .column(3)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        assert!(!due.is_null(0));
    }

    #[test]
    fn malformed_records_say_why() {
        let mut d = RecordDecoder::new(spec());
        let cases = [
            (
                r#"{"KenhThucHien":"2","ThoiDiemDongBo":"20260815093000"}"#,
                "MaHoSo: required field is missing",
            ),
            (
                r#"{"MaHoSo":"H1","ThoiDiemDongBo":"2026-13-45"}"#,
                "ThoiDiemDongBo: \"2026-13-45\" is not a timestamp",
            ),
            (
                r#"{"MaHoSo":"H1","NgayHenTra":"20261345000000","ThoiDiemDongBo":"20260815093000"}"#,
                "NgayHenTra: \"20261345000000\" is not a timestamp",
            ),
            (
                r#"{"MaHoSo":["H1"],"ThoiDiemDongBo":"20260815093000"}"#,
                "MaHoSo: an array is not a string",
            ),
            (
                r#"{"MaHoSo":"H1","SoLuong":"bảy","ThoiDiemDongBo":"20260815093000"}"#,
                "SoLuong: \"bảy\" is not an integer",
            ),
            (
                r#"{"MaHoSo":"H1","ThoiDiemDongBo":"20260815093000""#,
                "not a JSON object",
            ),
            (r#"[1,2]"#, "not a JSON object"),
            (
                r#"{"MaHoSo":"H1","MaHoSo":"H2","ThoiDiemDongBo":"20260815093000"}"#,
                "appears twice",
            ),
        ];
        for (rec, why) in cases {
            let e = d
                .decode_json(rec)
                .err()
                .unwrap_or_else(|| panic!("{rec} should fail"));
            assert!(e.0.contains(why), "{rec}: got {e}, want {why}");
        }
        // Good records still decode after bad ones.
        assert!(d
            .decode_json(r#"{"MaHoSo":"H9","ThoiDiemDongBo":"20260815093000"}"#)
            .is_ok());
    }

    #[test]
    fn key_order_prediction_survives_reordering() {
        let mut d = RecordDecoder::new(spec());
        let a = r#"{"MaHoSo":"H1","ThoiDiemDongBo":"20260815093000","SoLuong":1}"#;
        let b = r#"{"SoLuong":2,"ThoiDiemDongBo":"20260815093001","MaHoSo":"H2"}"#;
        assert!(d.decode_json(a).is_ok());
        let row = d.decode_json(b).unwrap();
        assert_eq!(row.micros(5), parse_compact_timestamp("20260815093001"));
    }
}
