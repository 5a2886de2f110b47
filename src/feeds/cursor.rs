//! Cursor pagination: `GET <path>?since=<cursor>&limit=<n>`, answered with
//! `{"data":[…],"next_cursor":"…"}`. Used by the portal's dossier, processing-step and payment
//! feeds. The cursor is opaque: chiso stores what the feed returned and sends it back. A page
//! shorter than the page size, or whose `next_cursor` is null, absent or unchanged, is the
//! last one of the run.

use serde_json::Value;

use super::http::{utf8, CallError, FeedClient, FeedError};
use super::{array_field, After, Page, Records};
use crate::config::CursorParams;

pub struct CursorFeed {
    params: CursorParams,
    cursor: Option<Value>,
}

impl CursorFeed {
    pub fn new(params: CursorParams, start: Option<Value>) -> Self {
        CursorFeed {
            params,
            cursor: start,
        }
    }

    pub async fn next_page(&mut self, client: &FeedClient) -> Result<Page, FeedError> {
        let p = &self.params;
        let mut query = format!("{}?{}={}", p.path.0, p.limit_param, p.page_size.0);
        let since = match &self.cursor {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        };
        if let Some(s) = &since {
            query.push_str(&format!("&{}={}", p.since_param, urlencode(s)));
        }
        let (records_field, next_field) = (p.records_field.clone(), p.next_cursor_field.clone());
        let (records, next) = client
            .get(&query, move |bytes| {
                let text = utf8(bytes)?;
                let (records, rest) = array_field(text, &records_field)?;
                let next = match rest.get(&next_field) {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) if s.is_empty() => None,
                    Some(v @ (Value::String(_) | Value::Number(_))) => Some(v.clone()),
                    Some(other) => {
                        return Err(CallError::Decode(format!(
                            "{next_field:?} must be a string or number, found {other}"
                        )))
                    }
                };
                Ok((records, next))
            })
            .await?;
        let position = format!("{}={}", p.since_param, since.as_deref().unwrap_or(""));
        // A short page, or a cursor that does not move, means the feed has no more for now.
        let last = next.is_none() || next == self.cursor || (records.len() as u64) < p.page_size.0;
        let after = if next.is_some() {
            next.clone()
        } else {
            self.cursor.clone()
        };
        self.cursor = after.clone();
        Ok(Page {
            records: Records::Json(records),
            position,
            after: After::Cursor(after),
            last,
            unchanged: 0,
        })
    }
}

/// Percent-encodes a query value (cursors are usually plain digits or base64).
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
