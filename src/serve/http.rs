//! The daemon's HTTP answers (axum): `/health` (200 while the scheduler loop goes round, 503
//! with the reason otherwise, stopping included), `/status` (the JSON of `chiso status
//! --json`) and `/metrics` (Prometheus text format). The status is collected off the loop and
//! reused for a second ([`super::report`]); at most [`MAX_IN_FLIGHT`] requests are served at
//! once, and one more is answered 503 at once rather than queued. With a token, `/status` and
//! `/metrics` need `Authorization: Bearer <token>`; `/health` says only whether the loop is
//! alive, and answers anyone (a probe has no token).

use std::sync::Arc;

use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;

use super::Shared;

/// Requests served at once.
pub const MAX_IN_FLIGHT: usize = 16;

#[derive(Clone)]
struct App {
    shared: Arc<Shared>,
    metrics: PrometheusHandle,
}

pub fn router(
    shared: Arc<Shared>,
    metrics: PrometheusHandle,
    console: Arc<crate::console::Console>,
) -> Router {
    let app = App { shared, metrics };
    // /status and /metrics have their limit, the console's pages theirs: open pages that all
    // refresh after a build never take a Prometheus scrape's place.
    let limited = |r: Router, most: usize| {
        let limit = tower::limit::GlobalConcurrencyLimitLayer::new(most);
        r.layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "busy: too many requests at once\n",
                    )
                }))
                .load_shed()
                .layer(limit),
        )
    };
    // /health is outside the limit: a probe must hear from the loop even while slow
    // collections hold every slot. So are the console's live streams (each open page holds
    // one; they have their own limit).
    let answers = limited(
        Router::new()
            .route("/status", get(status))
            .route("/metrics", get(metrics_text))
            .with_state(app.clone()),
        MAX_IN_FLIGHT,
    );
    Router::new()
        .route("/health", get(health))
        .with_state(app)
        .merge(answers)
        .merge(crate::console::router(console, |r| {
            limited(r, crate::console::MAX_PAGES_IN_FLIGHT)
        }))
}

impl crate::console::Daemon for Shared {
    fn report(
        &self,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = anyhow::Result<Arc<crate::status::StatusReport>>>
                + Send
                + '_,
        >,
    > {
        Box::pin(Shared::report(self))
    }

    fn authorised(&self, authorization: Option<&str>) -> bool {
        Shared::authorised(self, authorization)
    }

    fn has_token(&self) -> bool {
        Shared::has_token(self)
    }
}

async fn health(State(app): State<App>) -> Response {
    match app.shared.health() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

fn refused(headers: &HeaderMap, app: &App) -> Option<Response> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    (!app.shared.authorised(auth)).then(|| {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required (CHISO_HTTP_TOKEN)\n",
        )
            .into_response()
    })
}

async fn status(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&headers, &app) {
        return r;
    }
    match app.shared.report().await {
        Ok(r) => axum::Json(r.as_ref()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response(),
    }
}

async fn metrics_text(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&headers, &app) {
        return r;
    }
    // The gauges read the state as of this scrape (or of the report a second old).
    if let Ok(r) = app.shared.report().await {
        super::metrics::refresh(&r);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}
