//! Sending final revisions to the portals (`[publish.targets.<name>]`): an HTTP POST per
//! (target, period, revision) with an idempotency key, retried with backoff; the portal's
//! answer recorded as a receipt in the ledger. A push that fails stays pending and is sent
//! again by the next publish (or the scheduler's); a revision a target acknowledged is never
//! sent to it again. A crash between the POST and its receipt sends the same key again, which
//! the portal answers as a duplicate: each portal stores each revision once.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use serde::Serialize;

use super::export::{units_csv, units_json};
use super::rows::Revision;
use crate::config::{PushFormat, TargetConfig};
use crate::ledger;

pub use crate::ledger::idempotency_key;

#[derive(Debug, Clone, Serialize)]
pub struct PushOutcome {
    pub target: String,
    pub period: String,
    pub revision: i64,
    pub attempts: u32,
    /// The portal acknowledged it (now, or as a duplicate of an earlier send).
    pub acknowledged: bool,
    pub duplicate: bool,
    pub receipt: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug)]
struct SendError {
    message: String,
    retryable: bool,
}

/// The body a target receives for a revision, and its content type.
pub fn payload(rev: &Revision, target: &TargetConfig) -> anyhow::Result<(Vec<u8>, &'static str)> {
    Ok(match target.format {
        PushFormat::Json => (
            serde_json::to_vec(&units_json(rev, &target.levels))?,
            "application/json",
        ),
        PushFormat::Csv => (units_csv(rev, &target.levels)?, "text/csv; charset=utf-8"),
    })
}

/// Sends every pending receipt of a configured target; returns what became of each.
pub async fn push_pending(
    warehouse: &Path,
    targets: &[TargetConfig],
    http: &reqwest::Client,
) -> anyhow::Result<Vec<PushOutcome>> {
    let (pending, revisions) = {
        let Some(conn) = ledger::open_read_only(warehouse, Duration::from_secs(30))? else {
            return Ok(Vec::new());
        };
        if !crate::duck::table_exists(&conn, "pub_receipts")? {
            return Ok(Vec::new());
        }
        let mut stmt = conn.prepare(
            "SELECT target, period, revision FROM pub_receipts WHERE status <> 'acknowledged' \
             ORDER BY period, revision, target",
        )?;
        let pending: Vec<(String, String, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        let mut revisions: BTreeMap<(String, i64), Revision> = BTreeMap::new();
        for (_, period, rev) in &pending {
            if let std::collections::btree_map::Entry::Vacant(e) =
                revisions.entry((period.clone(), *rev))
            {
                e.insert(Revision::load(&conn, period, *rev)?);
            }
        }
        (pending, revisions)
    };
    let mut out = Vec::new();
    for (target_name, period, rev) in pending {
        let Some(target) = targets.iter().find(|t| t.name == target_name) else {
            tracing::warn!(target = %target_name, period = %period, revision = rev, "A pending push names a target no longer in chiso.toml; left pending.");
            continue;
        };
        let revision = &revisions[&(period.clone(), rev)];
        let outcome = send(http, target, revision).await?;
        record(warehouse, &outcome)?;
        if outcome.acknowledged {
            tracing::info!(target = %outcome.target, period = %outcome.period, revision = rev, duplicate = outcome.duplicate, attempts = outcome.attempts, "Publication acknowledged.");
        } else {
            tracing::warn!(target = %outcome.target, period = %outcome.period, revision = rev, attempts = outcome.attempts, error = outcome.error.as_deref().unwrap_or(""), "Publication not acknowledged; it stays pending.");
        }
        out.push(outcome);
    }
    Ok(out)
}

async fn send(
    http: &reqwest::Client,
    target: &TargetConfig,
    rev: &Revision,
) -> anyhow::Result<PushOutcome> {
    let (body, content_type) = payload(rev, target)?;
    let key = idempotency_key(&target.name, &rev.meta.period, rev.meta.revision);
    let attempts = AtomicU32::new(0);
    let call = || async {
        attempts.fetch_add(1, Ordering::Relaxed);
        let mut req = http
            .post(&target.url)
            .timeout(target.timeout)
            .header("Idempotency-Key", &key)
            .header("Content-Type", content_type)
            .header("X-Chiso-Period", &rev.meta.period)
            .header("X-Chiso-Revision", rev.meta.revision.to_string())
            .body(body.clone());
        if !target.token.is_empty() {
            req = req.bearer_auth(target.token.expose());
        }
        let resp = req.send().await.map_err(|e| SendError {
            message: format!("{}: {e}", target.url),
            retryable: true,
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status.is_success() || status == reqwest::StatusCode::CONFLICT {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            return Ok((
                v["receipt"].as_str().map(str::to_string),
                status == reqwest::StatusCode::CONFLICT || v["duplicate"].as_bool() == Some(true),
            ));
        }
        Err(SendError {
            message: format!(
                "{} answered {status}: {}",
                target.url,
                text.chars().take(200).collect::<String>()
            ),
            retryable: status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS,
        })
    };
    let result = call
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(10))
                .with_max_times(target.attempts.saturating_sub(1) as usize)
                .with_jitter(),
        )
        .when(|e: &SendError| e.retryable)
        .await;
    let tries = attempts.load(Ordering::Relaxed);
    Ok(match result {
        Ok((receipt, duplicate)) => PushOutcome {
            target: target.name.clone(),
            period: rev.meta.period.clone(),
            revision: rev.meta.revision,
            attempts: tries,
            acknowledged: true,
            duplicate,
            receipt,
            error: None,
        },
        Err(e) => PushOutcome {
            target: target.name.clone(),
            period: rev.meta.period.clone(),
            revision: rev.meta.revision,
            attempts: tries,
            acknowledged: false,
            duplicate: false,
            receipt: None,
            error: Some(e.message),
        },
    })
}

fn record(warehouse: &Path, o: &PushOutcome) -> anyhow::Result<()> {
    let conn = ledger::open(warehouse, Duration::from_secs(30))?;
    if o.acknowledged {
        conn.execute(
            "UPDATE pub_receipts SET status = 'acknowledged', attempts = attempts + ?, last_error = NULL, \
               acknowledged_at = CAST(get_current_timestamp() AS TIMESTAMP) + INTERVAL 7 HOUR, \
               portal_receipt = ?, duplicate = ? \
             WHERE target = ? AND period = ? AND revision = ?",
            duckdb::params![o.attempts, o.receipt, o.duplicate, o.target, o.period, o.revision],
        )?;
    } else {
        conn.execute(
            "UPDATE pub_receipts SET status = 'pending', attempts = attempts + ?, last_error = ? \
             WHERE target = ? AND period = ? AND revision = ?",
            duckdb::params![o.attempts, o.error, o.target, o.period, o.revision],
        )?;
    }
    Ok(())
}
