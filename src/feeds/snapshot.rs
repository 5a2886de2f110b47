//! Whole-file snapshots: `GET <path>` returns the full dataset each time, as a JSON array (or
//! an object holding one) or a CSV file with a header. Used by the procedure catalogue, the unit
//! registry, the calendar and the national report.
//!
//! The cursor is `{"sha256": "…"}` of the last landed body: an unchanged file lands nothing, so
//! pulling every few minutes costs no lake space.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::http::{utf8, CallError, FeedClient, FeedError};
use super::{array_field, After, JsonRecords, Page, Records};
use crate::config::{SnapshotFormat, SnapshotParams};

pub struct SnapshotFeed {
    params: SnapshotParams,
    previous: Option<String>,
    start: Option<Value>,
}

impl SnapshotFeed {
    pub fn new(params: SnapshotParams, start: Option<Value>) -> Self {
        let previous = start
            .as_ref()
            .and_then(|v| v.get("sha256"))
            .and_then(|v| v.as_str())
            .map(str::to_string);
        SnapshotFeed {
            params,
            previous,
            start,
        }
    }

    pub async fn next_page(&mut self, client: &FeedClient) -> Result<Page, FeedError> {
        let p = self.params.clone();
        let (records, hash) = client
            .get(&p.path.0, move |bytes| {
                let hash = hex(&Sha256::digest(&bytes));
                let text = utf8(bytes)?;
                let records = match p.format {
                    SnapshotFormat::Csv => {
                        check_csv(&text)?;
                        Records::Csv(text)
                    }
                    SnapshotFormat::Json => match &p.records_field {
                        Some(f) => Records::Json(array_field(text, f)?.0),
                        None => Records::Json(
                            JsonRecords::from_array(text)
                                .map_err(|e| CallError::Decode(format!("not a JSON array: {e}")))?,
                        ),
                    },
                };
                Ok((records, hash))
            })
            .await?;
        let position = format!("snapshot sha256={}", &hash[..12]);
        if self.previous.as_deref() == Some(hash.as_str()) {
            let unchanged = records.count();
            return Ok(Page {
                records: Records::Json(JsonRecords::empty()),
                position,
                after: After::Cursor(self.start.clone()),
                last: true,
                unchanged,
            });
        }
        Ok(Page {
            records,
            position,
            after: After::Cursor(Some(json!({ "sha256": hash }))),
            last: true,
            unchanged: 0,
        })
    }
}

/// A CSV body cut off mid-record is a transport fault, not a malformed record: the last line
/// must end with a newline and the header must be present.
fn check_csv(text: &str) -> Result<(), CallError> {
    if text.trim().is_empty() {
        return Err(CallError::Decode("empty CSV".into()));
    }
    if !text.ends_with('\n') {
        return Err(CallError::Decode(
            "the CSV does not end with a newline (truncated?)".into(),
        ));
    }
    Ok(())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
