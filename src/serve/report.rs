//! What the daemon shares with its HTTP answers and its freshness watcher: the loop's
//! heartbeat, whether it is stopping, and the status report, collected off the loop, one
//! collection at a time, and reused for [`STATUS_FRESH`] (a burst of `/status` and `/metrics`
//! requests, or a scraper every second, costs one collection a second at most).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Jobs;
use crate::status::StatusReport;

/// A collected status report is served again for this long.
pub const STATUS_FRESH: Duration = Duration::from_secs(1);

/// How often the watcher checks freshness (and sets the gauges).
pub const WATCH_EVERY: Duration = Duration::from_secs(10);

/// The newest status report and when it was collected.
type Cached = Option<(Instant, Arc<StatusReport>)>;

/// State shared with the HTTP handlers and the watcher.
pub struct Shared {
    pub warehouse: PathBuf,
    /// The jobs as the daemon has them now (a reload replaces them).
    jobs: std::sync::RwLock<Jobs>,
    /// When the loop last went round (it goes round at least once a second).
    heartbeat: Mutex<Instant>,
    stopping: AtomicBool,
    /// The newest report and when it was collected; the lock is held while one is collected.
    report: Arc<tokio::sync::Mutex<Cached>>,
    /// With a token, `/status` and `/metrics` answer only `Authorization: Bearer <token>`.
    token: Option<String>,
}

impl Shared {
    pub fn new(warehouse: PathBuf, jobs: Jobs, token: Option<String>) -> Shared {
        Shared {
            warehouse,
            jobs: std::sync::RwLock::new(jobs),
            heartbeat: Mutex::new(Instant::now()),
            stopping: false.into(),
            report: Arc::new(tokio::sync::Mutex::new(None)),
            token: token.filter(|t| !t.is_empty()),
        }
    }

    /// `Ok` while the loop is alive; why not otherwise.
    pub fn health(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err("stopping: no new fires".into());
        }
        let age = self.heartbeat.lock().expect("heartbeat").elapsed();
        if age > Duration::from_secs(5) {
            return Err(format!(
                "the scheduler loop has not gone round for {:.0}s",
                age.as_secs_f64()
            ));
        }
        Ok(())
    }

    pub fn jobs(&self) -> Jobs {
        self.jobs.read().expect("jobs").clone()
    }

    pub(super) fn set_jobs(&self, jobs: Jobs) {
        *self.jobs.write().expect("jobs") = jobs;
    }

    pub(super) fn beat(&self) {
        *self.heartbeat.lock().expect("heartbeat") = Instant::now();
    }

    pub(super) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Whether reading needs a token.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether a request's `Authorization` header may read `/status` and `/metrics`.
    pub fn authorised(&self, authorization: Option<&str>) -> bool {
        use sha2::{Digest, Sha256};
        let Some(token) = &self.token else {
            return true;
        };
        let given = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("");
        // Compared as digests: the time taken says nothing about how much of it matched.
        Sha256::digest(given.as_bytes()) == Sha256::digest(token.as_bytes())
    }

    /// The status report: the one collected less than [`STATUS_FRESH`] ago, or a new one,
    /// collected on a blocking thread while other callers wait for it.
    pub async fn report(&self) -> anyhow::Result<Arc<StatusReport>> {
        let mut held = self.report.clone().lock_owned().await;
        if let Some((at, r)) = held.as_ref() {
            if at.elapsed() < STATUS_FRESH {
                return Ok(r.clone());
            }
        }
        let (warehouse, jobs) = (self.warehouse.clone(), self.jobs());
        // The collection owns the lock and the cache: a caller that gives up (a client that
        // hung up) leaves it to finish and be reused, rather than to run beside the next one.
        tokio::spawn(async move {
            let r = tokio::task::spawn_blocking(move || {
                crate::status::collect_report(&warehouse, &jobs)
            })
            .await??;
            super::metrics::status_collected();
            let r = Arc::new(r);
            *held = Some((Instant::now(), r.clone()));
            anyhow::Ok(r)
        })
        .await?
    }
}

/// Every [`WATCH_EVERY`]: sets the gauges from the report and warns once when a feed or the
/// index breaches its freshness target. Runs beside the loop, which never waits for it.
pub(super) async fn watch_freshness(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(WATCH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut breaches = BTreeSet::new();
    loop {
        every.tick().await;
        match shared.report().await {
            Ok(r) => {
                super::metrics::refresh(&r);
                breaches = warn_new_breaches(&r, &breaches);
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "The status could not be collected for the freshness check; trying again.")
            }
        }
    }
}

/// Warns of each breach not in `before`; returns the breaches now.
fn warn_new_breaches(report: &StatusReport, before: &BTreeSet<String>) -> BTreeSet<String> {
    let mut now = BTreeSet::new();
    for j in report.jobs.iter().filter(|j| j.freshness_breach) {
        let key = format!("job {}", j.job);
        if !before.contains(&key) {
            tracing::warn!(job = %j.job, age_seconds = j.freshness_seconds, target_seconds = j.freshness_target_seconds, "Feed freshness target breached.");
        }
        now.insert(key);
    }
    if report.index.freshness_breach {
        if !before.contains("index") {
            tracing::warn!(
                age_seconds = report.index.age_seconds,
                target_seconds = report.index.freshness_target_seconds,
                "Index freshness target breached."
            );
        }
        now.insert("index".into());
    }
    now
}

/// `--http` on an address other than loopback answers anyone who can reach it: it needs a
/// token (`CHISO_HTTP_TOKEN`) or an explicit `--http-public`.
pub fn check_exposure(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    public: bool,
) -> anyhow::Result<()> {
    if addr.ip().is_loopback() || public || token.is_some_and(|t| !t.is_empty()) {
        return Ok(());
    }
    anyhow::bail!(
        "--http {addr} is not a loopback address: anyone who reaches it could read the daemon's status; \
         set CHISO_HTTP_TOKEN (requests then need `Authorization: Bearer <token>`), or pass --http-public \
         if the address is already protected"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_address_needs_a_token_or_the_public_flag() {
        let lo: std::net::SocketAddr = "127.0.0.1:9464".parse().unwrap();
        let any: std::net::SocketAddr = "0.0.0.0:9464".parse().unwrap();
        let v6: std::net::SocketAddr = "[::1]:9464".parse().unwrap();
        assert!(check_exposure(lo, None, false).is_ok());
        assert!(check_exposure(v6, None, false).is_ok());
        let e = check_exposure(any, None, false).unwrap_err().to_string();
        assert!(
            e.contains("CHISO_HTTP_TOKEN") && e.contains("--http-public"),
            "{e}"
        );
        assert!(check_exposure(any, Some(""), false).is_err());
        assert!(check_exposure(any, Some("s3cret"), false).is_ok());
        assert!(check_exposure(any, None, true).is_ok());
        let s = Shared::new(PathBuf::new(), Jobs::default(), Some("s3cret".into()));
        assert!(s.authorised(Some("Bearer s3cret")));
        assert!(!s.authorised(Some("Bearer s3cre")));
        assert!(!s.authorised(Some("s3cret")));
        assert!(!s.authorised(None));
        let open = Shared::new(PathBuf::new(), Jobs::default(), None);
        assert!(open.authorised(None));
    }
}
