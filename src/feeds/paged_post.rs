//! Page-number pagination with a JSON POST body, as the portal's reporting API does:
//! `POST <path>` with `{"currentPage":1,"pageSize":500,"tuNgay":"20260801000000"}`, answered
//! with `{"code":"OK","message":"…","data":[…]}`. Used by the ratings and petitions feeds.
//!
//! The cursor is `{"since": "<yyyyMMddHHmmss>", "seen": [keys]}`: the highest
//! `watermark_column` value landed and the keys landed at exactly that value. The feed returns
//! records updated at or after `since`, oldest first, so a run resumed from a committed
//! watermark misses nothing; the records at exactly the watermark come again, and those whose
//! key is in `seen` are skipped (counted, not landed). A page shorter than the page size is
//! the last.
//!
//! Pages are walked by the watermark, not by number: each request asks again from the highest
//! value landed so far in the run (page 1), so a record updated while the run reads (it moves
//! to the end, and everything behind it shifts up a place) cannot push an unread record onto a
//! page already read. Only when a whole page lands nothing past the current watermark (more
//! records share one value than a page holds) does the next request ask for the next page of
//! the same value.

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

    /// After a page: ask from `landed` (the run's watermark so far) if it moved past the value
    /// the last request asked from; otherwise the next page of the same value.
    pub fn advance(&mut self, landed: &Watermark) {
        let asked = self
            .since
            .as_deref()
            .and_then(crate::lake::schema::parse_compact_timestamp);
        match landed.micros {
            Some(m) if asked.is_none_or(|a| m > a) => {
                self.since = Some(crate::time::compact(crate::time::from_micros(m)));
                self.page = 0;
            }
            _ => {}
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
                let (records, rest) = array_field(text, &records_field)?;
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
        let count = records.len();
        Ok(Page {
            records: Records::Json(records),
            position: format!(
                "{}={} page {}",
                p.since_field,
                self.since.as_deref().unwrap_or(""),
                self.page
            ),
            after: After::Watermark,
            last: (count as u64) < p.page_size.0,
            unchanged: 0,
        })
    }
}

/// The highest watermark landed and the keys landed at exactly it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watermark {
    /// Local wall-clock microseconds.
    pub micros: Option<i64>,
    pub keys: std::collections::BTreeSet<String>,
}

impl Watermark {
    pub fn from_cursor(cursor: &Option<Value>) -> Watermark {
        let Some(c) = cursor else {
            return Watermark::default();
        };
        let micros = c
            .get("since")
            .and_then(|v| v.as_str())
            .and_then(crate::lake::schema::parse_compact_timestamp);
        let keys = c
            .get("seen")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Watermark { micros, keys }
    }

    /// Records a landed row.
    pub fn observe(&mut self, micros: i64, key: String) {
        match self.micros {
            Some(m) if micros < m => {}
            Some(m) if micros == m => {
                self.keys.insert(key);
            }
            _ => {
                self.micros = Some(micros);
                self.keys.clear();
                self.keys.insert(key);
            }
        }
    }

    pub fn merge(&mut self, other: &Watermark) {
        if let Some(m) = other.micros {
            for k in &other.keys {
                self.observe(m, k.clone());
            }
        }
    }

    /// True when a row at `micros` with `key` was landed by an earlier run.
    pub fn already_landed(&self, micros: i64, key: &str) -> bool {
        self.micros == Some(micros) && self.keys.contains(key)
    }

    pub fn to_cursor(&self) -> Option<Value> {
        self.micros.map(|m| {
            json!({
                "since": crate::time::compact(crate::time::from_micros(m)),
                "seen": self.keys.iter().collect::<Vec<_>>(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_keeps_the_keys_at_its_value() {
        let t = |s: &str| crate::lake::schema::parse_compact_timestamp(s).unwrap();
        let mut w = Watermark::default();
        w.observe(t("20260801000000"), "a".into());
        w.observe(t("20260801000005"), "b".into());
        w.observe(t("20260801000005"), "c".into());
        w.observe(t("20260801000001"), "d".into());
        let c = w.to_cursor();
        assert_eq!(
            c,
            Some(json!({"since": "20260801000005", "seen": ["b", "c"]}))
        );
        let back = Watermark::from_cursor(&c);
        assert!(back.already_landed(t("20260801000005"), "c"));
        assert!(!back.already_landed(t("20260801000005"), "e"));
        assert!(!back.already_landed(t("20260801000006"), "c"));
    }
}
