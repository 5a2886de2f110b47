//! The daemon's HTTP answers (axum): `/health` (200 while the scheduler loop goes round, 503
//! with the reason otherwise), `/status` (the JSON of `chiso status --json`) and `/metrics`
//! (Prometheus text format).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use super::Shared;

#[derive(Clone)]
struct App {
    shared: Arc<Shared>,
    metrics: PrometheusHandle,
}

pub fn router(shared: Arc<Shared>, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/metrics", get(metrics_text))
        .with_state(App { shared, metrics })
}

async fn health(State(app): State<App>) -> Response {
    match app.shared.health() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn report(app: &App) -> Result<crate::status::StatusReport, Response> {
    let shared = app.shared.clone();
    match tokio::task::spawn_blocking(move || {
        crate::status::collect_report(&shared.warehouse, &shared.jobs)
    })
    .await
    {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err((StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response()),
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()),
    }
}

async fn status(State(app): State<App>) -> Response {
    match report(&app).await {
        Ok(r) => axum::Json(r).into_response(),
        Err(resp) => resp,
    }
}

async fn metrics_text(State(app): State<App>) -> Response {
    // The gauges read the state as of this scrape.
    if let Ok(r) = report(&app).await {
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
