//! Page-number pagination with a JSON POST body, as the portal's reporting API does:
//! `POST <path>` with `{"currentPage":1,"pageSize":500,"tuNgay":"20260801000000"}`, answered
//! with `{"code":"OK","message":"…","data":[…]}`. Used by the ratings and petitions feeds.
//!
//! The cursor is `{"since": "<yyyyMMddHHmmss>"}`: the highest `watermark_column` value landed.
//! The feed returns records updated at or after `since`, oldest first, so a run resumed from a
//! committed watermark misses nothing; records at exactly the watermark come again and
//! staging's dedup drops them. A page shorter than the page size is the last.

use serde_json::{json, Value};

use super::http::{utf8, CallError, FeedClient, FeedError};
use super::{array_field, After, Page, Records};
use crate::config::PagedPostParams;

pub struct PagedPostFeed {
    params: PagedPostParams,
    since: Option<String>,
    page: u64,
}

impl PagedPostFeed {
    pub fn new(params: PagedPostParams, start: Option<Value>) -> Self {
        let since = start
            .as_ref()
            .and_then(|v| v.get("since"))
            .and_then(|v| v.as_str())
            .map(str::to_string);
        PagedPostFeed {
            params,
            since,
            page: 0,
        }
    }

    pub async fn next_page(&mut self, client: &FeedClient) -> Result<Page, FeedError> {
        self.page += 1;
        let p = &self.params;
        let mut body = json!({
            p.page_field.clone(): self.page,
            p.page_size_field.clone(): p.page_size.0,
        });
        if let Some(s) = &self.since {
            body[p.since_field.clone()] = Value::String(s.clone());
        }
        let (code_field, ok_code, records_field) = (
            p.code_field.clone(),
            p.ok_code.clone(),
            p.records_field.clone(),
        );
        let records = client
            .post_json(&p.path.0, &body, move |bytes| {
                let text = utf8(bytes)?;
                let (records, rest) = array_field(&text, &records_field)?;
                let code = match rest.get(&code_field) {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => {
                        return Err(CallError::Decode(format!(
                            "the envelope has no {code_field:?} field"
                        )))
                    }
                };
                if code != ok_code {
                    let message = rest
                        .get("message")
                        .map(|m| {
                            m.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| m.to_string())
                        })
                        .unwrap_or_default();
                    return Err(CallError::Envelope { code, message });
                }
                Ok(records)
            })
            .await?;
        let count = super::count_records(&records);
        Ok(Page {
            records: Records::JsonArray(records),
            position: format!(
                "{}={} page {}",
                p.since_field,
                self.since.as_deref().unwrap_or(""),
                self.page
            ),
            after: After::Watermark,
            last: (count as u64) < p.page_size.0,
        })
    }

    /// The cursor after landing rows whose highest watermark is `watermark`.
    pub fn cursor_for(&self, watermark: Option<&str>, previous: &Option<Value>) -> Option<Value> {
        let prev = previous
            .as_ref()
            .and_then(|v| v.get("since"))
            .and_then(|v| v.as_str());
        match (watermark, prev) {
            (Some(w), Some(p)) if p >= w => previous.clone(),
            (Some(w), _) => Some(json!({ "since": w })),
            (None, _) => previous.clone(),
        }
    }
}
