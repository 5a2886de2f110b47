//! Feeds: how a job pulls pages of records from a source, one protocol per file.
//!
//! - `cursor`: GET with `since`/`next_cursor` pagination (portal dossiers, steps, payments).
//! - `paged_post`: POST with page numbers and the `{"code":"OK","data":…}` envelope (the
//!   portal's reporting API: ratings, petitions).
//! - `snapshot`: a whole JSON or CSV file each run (catalogue, unit registry, calendar,
//!   national report).
//! - `evaluation`: the portal's published evaluation (Decision 766), one record per answer, for
//!   reconciliation.
//! - `file`: local newline-delimited JSON files (backfills, benchmarks); see `pull`.
//!
//! A protocol turns a cursor into a [`Page`]: records and the cursor after them. It does not
//! decode records, write files or commit cursors (`lake` and `pull` do).

pub mod cursor;
pub mod evaluation;
pub mod file;
pub mod http;
pub mod paged_post;
pub mod snapshot;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::config::{JobConfig, Protocol};
pub use http::{FeedClient, FeedError};

/// The records of one page.
#[derive(Debug)]
pub enum Records {
    /// JSON records, each found once in the answer's text.
    Json(JsonRecords),
    /// A CSV document with a header row.
    Csv(String),
}

/// The records of a JSON answer: the answer's text and where each record lies in it. The answer
/// is read once to find them (envelope and array together); each record is then decoded once,
/// from its own slice, by the lake's decoder.
#[derive(Debug, Default)]
pub struct JsonRecords {
    text: String,
    items: Vec<std::ops::Range<usize>>,
}

impl JsonRecords {
    /// A page with no records.
    pub fn empty() -> JsonRecords {
        JsonRecords::default()
    }

    /// The records of an answer that is a JSON array.
    pub fn from_array(text: String) -> Result<JsonRecords, serde_json::Error> {
        let items = {
            let raw: Vec<&RawValue> = serde_json::from_str(&text)?;
            ranges_in(&text, &raw)
        };
        Ok(JsonRecords { text, items })
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Each record's JSON text, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.items.iter().map(|r| &self.text[r.clone()])
    }
}

impl Records {
    /// How many records the page holds (CSV rows are counted by parsing them).
    pub fn count(&self) -> u64 {
        match self {
            Records::Json(j) => j.len() as u64,
            Records::Csv(text) => {
                csv::Reader::from_reader(text.as_bytes()).records().count() as u64
            }
        }
    }
}

/// Where each raw value borrowed from `text` lies in it.
fn ranges_in(text: &str, raw: &[&RawValue]) -> Vec<std::ops::Range<usize>> {
    let base = text.as_ptr() as usize;
    raw.iter()
        .map(|v| {
            let start = v.get().as_ptr() as usize - base;
            start..start + v.get().len()
        })
        .collect()
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
    Evaluation(evaluation::EvaluationFeed),
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
            Protocol::Evaluation(p) => {
                Puller::Evaluation(evaluation::EvaluationFeed::new(p.clone(), start))
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
            Puller::Evaluation(f) => f.next_page(client).await,
        }
    }
}

/// The records in `field` of a JSON object answer, and the envelope's other (small) fields, in
/// one reading of the text. A `null` field is no records; anything but an array is an error.
pub(crate) fn array_field(
    text: String,
    field: &str,
) -> Result<(JsonRecords, serde_json::Map<String, Value>), http::CallError> {
    let (items, rest) = {
        let mut de = serde_json::Deserializer::from_str(&text);
        let (raw, rest) = serde::de::DeserializeSeed::deserialize(Envelope { field }, &mut de)
            .and_then(|v| de.end().map(|_| v))
            .map_err(|e| http::CallError::Decode(format!("not a JSON object: {e}")))?;
        let raw = raw
            .ok_or_else(|| http::CallError::Decode(format!("the answer has no {field:?} field")))?;
        (ranges_in(&text, &raw.unwrap_or_default()), rest)
    };
    Ok((JsonRecords { text, items }, rest))
}

/// Reads an envelope object: the records field as borrowed raw records (found, and null or not),
/// the other fields of under 4 KiB as values.
struct Envelope<'f> {
    field: &'f str,
}

type EnvelopeParts<'de> = (
    Option<Option<Vec<&'de RawValue>>>,
    serde_json::Map<String, Value>,
);

impl<'de> serde::de::DeserializeSeed<'de> for Envelope<'_> {
    type Value = EnvelopeParts<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Envelope<'_> {
    type Value = EnvelopeParts<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "an object with a {:?} array", self.field)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        let (mut records, mut rest) = (None, serde_json::Map::new());
        while let Some(key) = map.next_key::<String>()? {
            if key == self.field {
                let items: Option<Vec<&'de RawValue>> = map.next_value().map_err(|e| {
                    A::Error::custom(format!("{:?} is not an array ({e})", self.field))
                })?;
                records = Some(items);
            } else {
                let v: &'de RawValue = map.next_value()?;
                if v.get().len() < 4096 {
                    rest.insert(key, serde_json::from_str(v.get()).unwrap_or(Value::Null));
                }
            }
        }
        Ok((records, rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_is_read_once_into_records_and_its_other_fields() {
        let text = r#"{"code":"OK","data":[{"a":1},{"b":"x,]"} , {"c":[1,2]}],"next":"c2","big":"#
            .to_string()
            + &format!("\"{}\"}}", "x".repeat(5000));
        let (records, rest) = array_field(text, "data").unwrap();
        assert_eq!(
            records.iter().collect::<Vec<_>>(),
            [r#"{"a":1}"#, r#"{"b":"x,]"}"#, r#"{"c":[1,2]}"#]
        );
        assert_eq!(rest["code"], "OK");
        assert_eq!(rest["next"], "c2");
        assert!(
            !rest.contains_key("big"),
            "fields of 4 KiB or more are not kept"
        );
    }

    #[test]
    fn an_envelope_without_records_or_with_something_else_is_named() {
        let (none, _) = array_field(r#"{"data":null,"code":"OK"}"#.into(), "data").unwrap();
        assert!(none.is_empty());
        let e = array_field(r#"{"code":"OK"}"#.into(), "data").unwrap_err();
        assert!(e.to_string().contains(r#"no "data" field"#), "{e}");
        let e = array_field(r#"{"data":{"a":1}}"#.into(), "data").unwrap_err();
        assert!(e.to_string().contains(r#""data" is not an array"#), "{e}");
        let e = array_field(r#"[{"a":1}]"#.into(), "data").unwrap_err();
        assert!(e.to_string().contains("not a JSON object"), "{e}");
        let e = array_field(r#"{"data":[]} trailing"#.into(), "data").unwrap_err();
        assert!(e.to_string().contains("not a JSON object"), "{e}");
    }

    #[test]
    fn a_bare_array_gives_its_records() {
        let r = JsonRecords::from_array(r#" [ {"a":1}, {"a":2} ] "#.into()).unwrap();
        assert_eq!(r.iter().collect::<Vec<_>>(), [r#"{"a":1}"#, r#"{"a":2}"#]);
        assert_eq!(Records::Json(r).count(), 2);
        assert!(JsonRecords::from_array(r#"{"a":1}"#.into()).is_err());
    }
}
