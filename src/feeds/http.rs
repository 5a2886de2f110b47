//! HTTP calls to a feed: authentication, timeouts, retries with exponential backoff and jitter,
//! and one clear final error naming the job, the URL and the cause.
//!
//! The answer is decoded inside the retry loop, so a truncated body is retried like a 503. The
//! token never appears in a URL, a log line or an error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use serde_json::Value;

use crate::config::{Auth, RetryParams, SourceConfig};

/// Why one feed call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status { status: u16, body: String },
    #[error("{0}")]
    Transport(String),
    #[error("the answer could not be decoded: {0}")]
    Decode(String),
    #[error("the feed answered code {code:?}: {message}")]
    Envelope { code: String, message: String },
    /// The source refused the call in a way asking again will not change: an HTML page (a
    /// firewall's, a login proxy's) where JSON was due, or an envelope whose code says no.
    #[error("refused: {0}")]
    Refused(String),
    /// The source answered this call with an error of its own (an envelope whose code is not
    /// OK): this call failed, others may not; asking again at once would answer the same.
    #[error("declined: {0}")]
    Declined(String),
    #[error("the answer is larger than {limit} bytes (lower the job's page size)")]
    TooLarge { limit: usize },
}

/// The largest answer read into memory: a page beyond it is refused rather than exhausting the
/// process (a daemon runs many jobs side by side).
pub const MAX_BODY_BYTES: usize = 256 << 20;

impl CallError {
    /// 5xx, 408, 429, transport failures and undecodable (e.g. truncated) answers are retried;
    /// other 4xx are not: asking again will not fix a bad token or path.
    pub fn is_retryable(&self) -> bool {
        match self {
            CallError::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            CallError::Transport(_) | CallError::Decode(_) | CallError::Envelope { .. } => true,
            CallError::TooLarge { .. } | CallError::Refused(_) | CallError::Declined(_) => false,
        }
    }

    fn hint(&self) -> &'static str {
        match self {
            CallError::Status { status: 401 | 403, .. } => {
                " (check the credentials: the source's token/username/password come from the environment variables named in chiso.toml)"
            }
            CallError::Status { status: 404, .. } => {
                " (check the job's path and the source's base_url)"
            }
            CallError::Transport(_) => " (is the feed reachable? check the source's base_url)",
            CallError::Refused(_) => " (not retried: asking again would be refused the same way)",
            _ => "",
        }
    }
}

/// A feed call that failed for good.
#[derive(Debug, thiserror::Error)]
#[error("job {job}: {method} {url} failed after {attempts} attempt(s): {cause}{hint}")]
pub struct FeedError {
    pub job: String,
    pub method: &'static str,
    pub url: String,
    pub attempts: u64,
    pub cause: CallError,
    hint: &'static str,
}

/// A client for one job's source.
pub struct FeedClient {
    client: reqwest::Client,
    source: SourceConfig,
    retry: RetryParams,
    job: String,
    retries: AtomicU64,
    /// 401, 403 and 429, and an HTML page with any error status, are refusals (stop signals,
    /// not retried), as for a public API behind a firewall.
    refusals: bool,
}

impl FeedClient {
    pub fn new(
        client: reqwest::Client,
        source: SourceConfig,
        retry: RetryParams,
        job: &str,
    ) -> Self {
        FeedClient {
            client,
            source,
            retry,
            job: job.to_string(),
            retries: AtomicU64::new(0),
            refusals: false,
        }
    }

    /// A client for which 401, 403, 429 and HTML error pages are refusals, never retried (a
    /// firewall's answers: asking again only makes it angrier).
    pub fn refusing(mut self) -> Self {
        self.refusals = true;
        self
    }

    /// Calls that failed and were tried again, since the client was made.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.source.base_url, path_and_query)
    }

    /// GET `path_and_query`, decoding the body with `decode`; retried as configured.
    pub async fn get<T>(
        &self,
        path_and_query: &str,
        decode: impl Fn(Vec<u8>) -> Result<T, CallError>,
    ) -> Result<T, FeedError> {
        self.call("GET", path_and_query, None, decode).await
    }

    /// POST a JSON body to `path`, decoding the answer with `decode`; retried as configured.
    pub async fn post_json<T>(
        &self,
        path: &str,
        body: &Value,
        decode: impl Fn(Vec<u8>) -> Result<T, CallError>,
    ) -> Result<T, FeedError> {
        self.call("POST", path, Some(body), decode).await
    }

    async fn call<T>(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&Value>,
        decode: impl Fn(Vec<u8>) -> Result<T, CallError>,
    ) -> Result<T, FeedError> {
        let url = self.url(path);
        let attempts = AtomicU64::new(0);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.retry.initial_backoff_ms.0))
            .with_max_delay(Duration::from_millis(self.retry.max_backoff_ms.0))
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.retry.attempts.0.saturating_sub(1) as usize);
        let (attempts_ref, url_ref, decode_ref) = (&attempts, url.as_str(), &decode);
        let once = || async move {
            attempts_ref.fetch_add(1, Ordering::Relaxed);
            let bytes = self.send(method, url_ref, body).await?;
            decode_ref(bytes)
        };
        once.retry(backoff)
            .when(|e: &CallError| e.is_retryable())
            .notify(|e: &CallError, wait: Duration| {
                self.retries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    job = %self.job,
                    url = %url,
                    error = %e,
                    retry_in_ms = wait.as_millis() as u64,
                    "Feed call failed; retrying."
                );
            })
            .await
            .map_err(|cause| FeedError {
                job: self.job.clone(),
                method,
                url: url.clone(),
                attempts: attempts.load(Ordering::Relaxed),
                hint: cause.hint(),
                cause,
            })
    }

    async fn send(
        &self,
        method: &str,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Vec<u8>, CallError> {
        let mut req = match method {
            "POST" => self.client.post(url),
            _ => self.client.get(url),
        };
        req = req.timeout(self.source.timeout);
        req = match &self.source.auth {
            Auth::None => req,
            Auth::Bearer(token) if token.is_empty() => req,
            Auth::Bearer(token) => req.bearer_auth(token.expose()),
            Auth::Basic { username, password } => req.basic_auth(username, Some(password.expose())),
        };
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| CallError::Transport(describe(&e)))?;
        let status = resp.status();
        let bytes = read_capped(resp, MAX_BODY_BYTES).await?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            let excerpt: String = text.chars().take(200).collect();
            if self.refusals
                && (matches!(status.as_u16(), 401 | 403 | 429)
                    || text.trim_start().starts_with('<'))
            {
                return Err(CallError::Refused(format!(
                    "HTTP {}: {}",
                    status.as_u16(),
                    excerpt.trim()
                )));
            }
            return Err(CallError::Status {
                status: status.as_u16(),
                body: excerpt.trim().to_string(),
            });
        }
        Ok(bytes)
    }
}

/// The answer's body, refused past `limit` bytes (by its Content-Length, or as it streams).
async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, CallError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(CallError::TooLarge { limit });
    }
    let mut body = Vec::with_capacity(resp.content_length().unwrap_or(0) as usize);
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| CallError::Transport(describe(&e)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(CallError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A reqwest error with its chain of causes, without the URL (which the caller reports once).
fn describe(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else if e.is_body() || e.is_decode() {
        "the body was cut off or unreadable".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// The shared HTTP client (connection pool, rustls, gzip).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("chiso/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("the HTTP client builds with static settings")
}

/// Decodes UTF-8 bytes or says why not.
pub fn utf8(bytes: Vec<u8>) -> Result<String, CallError> {
    String::from_utf8(bytes).map_err(|e| CallError::Decode(format!("not UTF-8: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_past_the_limit_is_refused_and_not_retried() {
        let app =
            axum::Router::new().route("/big", axum::routing::get(|| async { "x".repeat(10_000) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/big", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let client = reqwest::Client::new();
        let small = read_capped(client.get(&url).send().await.unwrap(), 1_000).await;
        assert!(
            matches!(small, Err(CallError::TooLarge { limit: 1_000 })),
            "{small:?}"
        );
        assert!(!small.unwrap_err().is_retryable());
        let whole = read_capped(client.get(&url).send().await.unwrap(), 1 << 20)
            .await
            .unwrap();
        assert_eq!(whole.len(), 10_000);
        server.abort();
    }
}
