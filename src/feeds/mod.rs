//! Feeds: how a job pulls pages of records from a source, one protocol per file.
//!
//! - `cursor`: GET with `since`/`next_cursor` pagination (portal dossiers, steps, payments).
//! - `paged_post`: POST with page numbers and the `{"code":"OK","data":…}` envelope (the
//!   portal's reporting API: ratings, petitions).
//! - `snapshot`: a whole JSON or CSV file each run (catalogue, unit registry, calendar,
//!   national report).
//! - `file`: local newline-delimited JSON files (backfills, benchmarks); see `pull`.
//!
//! A protocol turns a cursor into a [`Page`]: records and the cursor after them. It does not
//! decode records, write files or commit cursors (`lake` and `pull` do).

pub mod cursor;
pub mod file;
pub mod http;
pub mod paged_post;
pub mod snapshot;

use serde_json::Value;

use crate::config::{JobConfig, Protocol};
pub use http::{FeedClient, FeedError};

/// The records of one page.
#[derive(Debug)]
pub enum Records {
    /// A JSON array of objects, as text.
    JsonArray(String),
    /// A CSV document with a header row.
    Csv(String),
}

/// What comes after a page.
#[derive(Debug, Clone, PartialEq)]
pub enum After {
    /// This cursor is committed with the page's records.
    Cursor(Option<Value>),
    /// The cursor is the highest watermark landed (paged_post, see `paged_post::Watermark`).
    Watermark,
}

/// One page of a pull.
#[derive(Debug)]
pub struct Page {
    pub records: Records,
    /// Where the page came from, for quarantine rows (`since=123`, `page 4`).
    pub position: String,
    pub after: After,
    /// No further page in this run.
    pub last: bool,
    /// Records received but not passed on because an earlier run landed them (an unchanged
    /// snapshot).
    pub unchanged: u64,
}

/// A protocol's pull state for one run.
pub enum Puller {
    Cursor(cursor::CursorFeed),
    PagedPost(paged_post::PagedPostFeed),
    Snapshot(snapshot::SnapshotFeed),
}

impl Puller {
    /// The puller for an HTTP job (`None` for `protocol = "file"`).
    pub fn for_job(job: &JobConfig, start: Option<Value>) -> Option<Puller> {
        Some(match &job.protocol {
            Protocol::Cursor(p) => Puller::Cursor(cursor::CursorFeed::new(p.clone(), start)),
            Protocol::PagedPost(p) => {
                Puller::PagedPost(paged_post::PagedPostFeed::new(p.clone(), start))
            }
            Protocol::Snapshot(p) => {
                Puller::Snapshot(snapshot::SnapshotFeed::new(p.clone(), start))
            }
            Protocol::File(_) => return None,
        })
    }

    /// Tells a watermark-paged feed how far the run has landed (others ignore it).
    pub fn advance(&mut self, landed: &paged_post::Watermark) {
        if let Puller::PagedPost(f) = self {
            f.advance(landed);
        }
    }

    /// Fetches the next page.
    pub async fn next_page(&mut self, client: &FeedClient) -> Result<Page, FeedError> {
        match self {
            Puller::Cursor(f) => f.next_page(client).await,
            Puller::PagedPost(f) => f.next_page(client).await,
            Puller::Snapshot(f) => f.next_page(client).await,
        }
    }
}

/// Extracts the array in `field` of a JSON object answer, checking that it is an array of
/// objects-or-anything (records are checked one by one later).
pub(crate) fn array_field(
    text: &str,
    field: &str,
) -> Result<(String, serde_json::Map<String, Value>), http::CallError> {
    use serde_json::value::RawValue;
    let obj: std::collections::HashMap<String, &RawValue> = serde_json::from_str(text)
        .map_err(|e| http::CallError::Decode(format!("not a JSON object: {e}")))?;
    let mut rest = serde_json::Map::new();
    let mut records = None;
    for (k, v) in obj {
        if k == field {
            records = Some(v.get());
        } else if v.get().len() < 4096 {
            rest.insert(k, serde_json::from_str(v.get()).unwrap_or(Value::Null));
        }
    }
    let records = records
        .ok_or_else(|| http::CallError::Decode(format!("the answer has no {field:?} field")))?;
    if !records.trim_start().starts_with('[') {
        if records.trim() == "null" {
            return Ok(("[]".to_string(), rest));
        }
        return Err(http::CallError::Decode(format!(
            "{field:?} is not an array"
        )));
    }
    Ok((records.to_string(), rest))
}

/// Number of elements of a JSON array text (0 when it is not one).
pub(crate) fn count_records(array: &str) -> usize {
    serde_json::from_str::<Vec<&serde_json::value::RawValue>>(array)
        .map(|v| v.len())
        .unwrap_or(0)
}
