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

pub fn router(shared: Arc<Shared>, metrics: PrometheusHandle) -> Router {
    let app = App { shared, metrics };
    // /health is outside the limit: a probe must hear from the loop even while slow
    // collections hold every slot.
    let limited = Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics_text))
        .with_state(app.clone())
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "busy: too many requests at once\n",
                    )
                }))
                .load_shed()
                .concurrency_limit(MAX_IN_FLIGHT),
        );
    Router::new()
        .route("/health", get(health))
        .with_state(app)
        .merge(limited)
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
