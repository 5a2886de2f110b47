//! Sending final revisions to the portals (`[publish.targets.<name>]`): an HTTP POST per
//! (target, period, revision) with an idempotency key, retried with backoff; the portal's
//! answer recorded as a receipt in the ledger. A push that fails stays pending and is sent
//! again by the next publish (or the scheduler's); a revision a target acknowledged is never
//! sent to it again. A crash between the POST and its receipt sends the same key again, which
//! the portal answers as a duplicate: each portal stores each revision once.
//!
//! Never wrong about delivery:
//! - redirects are not followed (a 302 to a login page would turn the POST into a GET whose 200
//!   is no receipt); a 3xx is an error naming where it pointed, and the push stays pending;
//! - a receipt is recorded only from the portal's own answer: a 2xx whose body is a JSON object
//!   with a `receipt`, or a 409 (already stored) with a JSON body;
//! - only the newest final revision of a period is sent to a target: an older one still
//!   pending is `superseded` (recorded, never sent), so a portal never receives revision 1
//!   after revision 2;
//! - the idempotency key carries the payload's digest, so a key is never reused for other
//!   bytes; it is made when the revision is recorded, kept in `pub_receipts`, and every
//!   attempt sends that key.

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
    /// The key sent: target, period, revision and the payload's digest.
    pub idempotency_key: String,
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

/// The client pushes are sent with: the shared settings, and no redirect followed.
fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .user_agent(concat!("chiso/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the HTTP client builds with static settings")
    })
}

/// Sends every pending receipt of a configured target; returns what became of each. A pending
/// receipt with a newer final revision of its period for the same target is superseded first.
pub async fn push_pending(
    warehouse: &Path,
    targets: &[TargetConfig],
) -> anyhow::Result<Vec<PushOutcome>> {
    let http = client();
    // The ledger is read and written on a blocking thread: opening it waits (sleeping) while
    // another process holds it, which must not stall the async workers the daemon runs on.
    let (pending, revisions) = blocking(warehouse, pending_receipts).await?;
    let mut out = Vec::new();
    for (target_name, period, rev, key) in pending {
        let Some(target) = targets.iter().find(|t| t.name == target_name) else {
            tracing::warn!(target = %target_name, period = %period, revision = rev, "A pending push names a target no longer in chiso.toml; left pending.");
            continue;
        };
        let revision = &revisions[&(period.clone(), rev)];
        let outcome = send(http, target, revision, &key).await?;
        let recorded = outcome.clone();
        blocking(warehouse, move |w| record(w, &recorded)).await?;
        if outcome.acknowledged {
            tracing::info!(target = %outcome.target, period = %outcome.period, revision = rev, duplicate = outcome.duplicate, attempts = outcome.attempts, "Publication acknowledged.");
        } else {
            tracing::warn!(target = %outcome.target, period = %outcome.period, revision = rev, attempts = outcome.attempts, error = outcome.error.as_deref().unwrap_or(""), "Publication not acknowledged; it stays pending.");
        }
        out.push(outcome);
    }
    Ok(out)
}

/// Runs `f` on the warehouse on a blocking thread.
async fn blocking<T: Send + 'static>(
    warehouse: &Path,
    f: impl FnOnce(&Path) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let w = warehouse.to_path_buf();
    tokio::task::spawn_blocking(move || f(&w)).await?
}

type Pending = (
    Vec<(String, String, i64, String)>,
    BTreeMap<(String, i64), Revision>,
);

/// Supersedes what newer revisions replace, then reads the pending receipts and the
/// revisions they send.
fn pending_receipts(warehouse: &Path) -> anyhow::Result<Pending> {
    supersede(warehouse)?;
    {
        let Some(conn) = ledger::open_read_only(warehouse, Duration::from_secs(30))? else {
            return Ok(Default::default());
        };
        if !crate::duck::table_exists(&conn, "pub_receipts")? {
            return Ok(Default::default());
        }
        let mut stmt = conn.prepare(
            "SELECT target, period, revision, idempotency_key FROM pub_receipts WHERE status = 'pending' \
             ORDER BY period, revision, target",
        )?;
        let pending: Vec<(String, String, i64, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        let mut revisions: BTreeMap<(String, i64), Revision> = BTreeMap::new();
        for (_, period, rev, _) in &pending {
            if let std::collections::btree_map::Entry::Vacant(e) =
                revisions.entry((period.clone(), *rev))
            {
                e.insert(Revision::load(&conn, period, *rev)?);
            }
        }
        Ok((pending, revisions))
    }
}

/// Sends `rev` to `target` under `key`, the key recorded with the receipt (made from the
/// payload when the revision was recorded): every attempt of a push, across crashes and
/// upgrades, carries the same key, so the portal stores it once.
async fn send(
    http: &reqwest::Client,
    target: &TargetConfig,
    rev: &Revision,
    key: &str,
) -> anyhow::Result<PushOutcome> {
    let (body, content_type) = payload(rev, target)?;
    let key = key.to_string();
    if !key.ends_with(&content_digest(&body)) {
        tracing::warn!(target = %target.name, period = %rev.meta.period, revision = rev.meta.revision, key = %key, "The payload differs from the one the key was made from (recorded by another chiso version?); sent under the recorded key, which the portal may already hold.");
    }
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
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.unwrap_or_default();
        answer(&target.url, status, location.as_deref(), &text)
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
    Ok(match result.map(|r| (r, key.clone())) {
        Ok(((receipt, duplicate), key)) => PushOutcome {
            target: target.name.clone(),
            period: rev.meta.period.clone(),
            revision: rev.meta.revision,
            idempotency_key: key,
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
            idempotency_key: key,
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
            &format!(
                "UPDATE pub_receipts SET status = 'acknowledged', attempts = attempts + ?, last_error = NULL, \
                   acknowledged_at = {now}, portal_receipt = ?, duplicate = ? \
                 WHERE target = ? AND period = ? AND revision = ?",
                now = crate::time::now_sql()
            ),
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

/// The first 16 hex digits of the payload's SHA-256: the part of the idempotency key that ties
/// it to these bytes.
pub fn content_digest(body: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(body))[..16].to_string()
}

/// What the portal's answer means: `(receipt, duplicate)` when it is the portal's own
/// acknowledgement, else why not (and whether trying again may help).
fn answer(
    url: &str,
    status: reqwest::StatusCode,
    location: Option<&str>,
    text: &str,
) -> Result<(Option<String>, bool), SendError> {
    let shown = || text.chars().take(200).collect::<String>();
    if status.is_redirection() {
        return Err(SendError {
            message: format!(
                "{url} answered {status}, a redirect to {}: not followed (a publication is acknowledged only by the portal's own answer; check the target's url)",
                location.unwrap_or("nowhere")
            ),
            retryable: false,
        });
    }
    if status.is_success() || status == reqwest::StatusCode::CONFLICT {
        let v: Option<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(text).ok();
        let receipt = v
            .as_ref()
            .and_then(|o| o.get("receipt"))
            .and_then(|r| r.as_str())
            .map(str::to_string);
        let duplicate = status == reqwest::StatusCode::CONFLICT
            || v.as_ref()
                .and_then(|o| o.get("duplicate"))
                .and_then(|d| d.as_bool())
                == Some(true);
        let said_duplicate = v
            .as_ref()
            .and_then(|o| o.get("duplicate"))
            .and_then(|d| d.as_bool())
            == Some(true);
        return match (&v, &receipt) {
            (Some(_), Some(_)) => Ok((receipt, duplicate)),
            // A 409 is "already stored" only when the portal says so; otherwise (a key still
            // being processed, say) the push stays pending and is sent again.
            (Some(_), None) if status == reqwest::StatusCode::CONFLICT && said_duplicate => {
                Ok((None, true))
            }
            (Some(_), None) if status == reqwest::StatusCode::CONFLICT => Err(SendError {
                message: format!(
                    "{url} answered {status} without a receipt or \"duplicate\": true (not yet stored?): {}",
                    shown()
                ),
                retryable: true,
            }),
            _ => Err(SendError {
                message: format!(
                    "{url} answered {status} without a receipt (expected a JSON object with \"receipt\"): {}",
                    shown()
                ),
                retryable: false,
            }),
        };
    }
    Err(SendError {
        message: format!("{url} answered {status}: {}", shown()),
        retryable: status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS,
    })
}

/// Marks `superseded` every pending receipt whose target has a newer final revision of the
/// same period recorded: only the newest figures are sent, and never after newer ones.
fn supersede(warehouse: &Path) -> anyhow::Result<()> {
    if !ledger::path(warehouse).exists() {
        return Ok(());
    }
    let conn = ledger::open(warehouse, Duration::from_secs(30))?;
    let n = conn.execute(
        "UPDATE pub_receipts AS r SET status = 'superseded', \
           last_error = 'superseded by revision ' || ( \
             SELECT max(n.revision) FROM pub_receipts AS n \
             WHERE n.target = r.target AND n.period = r.period AND n.revision > r.revision) \
         WHERE r.status = 'pending' AND EXISTS ( \
           SELECT 1 FROM pub_receipts AS n \
           WHERE n.target = r.target AND n.period = r.period AND n.revision > r.revision)",
        [],
    )?;
    if n > 0 {
        tracing::info!(
            receipts = n,
            "Pending pushes superseded by a newer revision of their period; not sent."
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    /// Sending pending pushes while another process holds the ledger waits for it on a
    /// blocking thread: a single-threaded runtime's other tasks go on ticking meanwhile
    /// (before: the wait slept on the async worker, and a ticker every 10 ms stood still for
    /// the 1.5 s the ledger was held).
    #[test]
    fn waiting_for_the_ledger_never_stalls_the_async_workers() {
        let wh = tempfile::tempdir().unwrap();
        drop(ledger::open(wh.path(), Duration::from_secs(5)).unwrap());
        // DuckDB locks its file with fcntl; so does Python's lockf.
        let mut holder = std::process::Command::new("python3")
            .args([
                "-c",
                "import fcntl,sys,time\nf=open(sys.argv[1],'r+')\nfcntl.lockf(f,fcntl.LOCK_EX)\nprint('held',flush=True)\ntime.sleep(1.5)",
            ])
            .arg(ledger::path(wh.path()))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "held");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ticks = Arc::new(AtomicU64::new(0));
        let t0 = std::time::Instant::now();
        let sent = rt.block_on({
            let ticks = ticks.clone();
            async move {
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        ticks.fetch_add(1, Ordering::Relaxed);
                    }
                });
                push_pending(wh.path(), &[]).await
            }
        });
        let waited = t0.elapsed();
        holder.wait().unwrap();
        assert!(sent.unwrap().is_empty());
        assert!(
            waited >= Duration::from_millis(1000),
            "the ledger was not held: {waited:?}"
        );
        let n = ticks.load(Ordering::Relaxed);
        assert!(n >= 50, "{n} ticks in {waited:?}");
    }
}
