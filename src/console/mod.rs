//! The live console (`/console/` beside `/health`, `/status` and `/metrics` of `chiso serve
//! --http`): server-rendered pages over the published warehouse, read-only.
//!
//! - **Ranking** (`/console/ranking?level=&period=`): a level's units in a period, its state;
//! - **Unit** (`/console/unit/{unit}?period=&kind=`): groups and indicators, what cost points,
//!   its history across periods, its children, its published revisions;
//! - **Records** (`/console/records/{unit}/{period}/{indicator}`, `.../csv`): the dossiers or
//!   petitions behind a count, paged, as CSV too;
//! - **Operations** (`/console/operations`): jobs, freshness, builds and their tests,
//!   publications and receipts, the release calendar, the day's fires.
//!
//! Pages are minijinja templates (`templates/`) with plotters SVG inline; the one script
//! (`live.js`, served from here) listens to `/console/events` (server-sent events keyed on the
//! build id) and, when a build publishes, fetches the page again and replaces only the parts
//! that changed. Nothing is fetched from outside the machine (the pages' Content Security
//! Policy allows only this server).
//!
//! Access follows `/status`: with `CHISO_HTTP_TOKEN` set, a reader gives the token (the
//! `Authorization: Bearer` header, or the login form's cookie); officer names on the records
//! page are shown only then. Nothing about applicants is ever shown.

mod access;
pub mod chart;
pub mod operations;
pub mod published;
pub mod queries;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};

use crate::status::StatusReport;
pub use access::cookie_value;
use access::{login, login_form, Reader};
use published::{BuildMark, Published};
use queries::{Drill, Which};

/// Records per page of the records page.
pub const PAGE_SIZE: u64 = 50;

/// Console pages (and CSVs) served at once; one more is answered 503 at once.
pub const MAX_PAGES_IN_FLIGHT: usize = 8;

/// Live-refresh streams open at once (each browser tab holds one).
pub const MAX_STREAMS: usize = 64;

/// Only this server: no script, style, image or connection from anywhere else.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; \
img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// What the console needs of the daemon: its status report and its access rule.
pub trait Daemon: Send + Sync + 'static {
    fn report(
        &self,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<Arc<StatusReport>>> + Send + '_>>;
    /// Whether a credential (an `Authorization` header's value) may read; true for anyone
    /// without a token.
    fn authorised(&self, authorization: Option<&str>) -> bool;
    fn has_token(&self) -> bool;
}

/// The console's state.
pub struct Console {
    warehouse: PathBuf,
    published: Arc<Published>,
    daemon: Arc<dyn Daemon>,
    env: minijinja::Environment<'static>,
    streams: AtomicUsize,
    /// Turns true when the server stops: the live streams end then.
    stop: tokio::sync::watch::Receiver<bool>,
    /// Answer requests naming any host (a token is set, or `--http-public`); otherwise only
    /// loopback names, so that a web page elsewhere cannot read the console through a name
    /// rebound to 127.0.0.1.
    any_host: bool,
    /// The sign-in cookie's value, with a token.
    cookie: Option<String>,
}

impl Console {
    /// The console of `published`'s warehouse; `stop` ends its live streams.
    pub fn new(
        published: Arc<Published>,
        daemon: Arc<dyn Daemon>,
        stop: tokio::sync::watch::Receiver<bool>,
        token: Option<&str>,
        public: bool,
    ) -> Arc<Console> {
        let token = token.filter(|t| !t.is_empty());
        Arc::new(Console {
            any_host: public || token.is_some(),
            cookie: token.map(cookie_value),
            warehouse: published.warehouse().to_path_buf(),
            published,
            daemon,
            env: templates(),
            streams: AtomicUsize::new(0),
            stop,
        })
    }
}

fn templates() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    for (name, text) in [
        ("layout.html", include_str!("templates/layout.html")),
        ("ranking.html", include_str!("templates/ranking.html")),
        ("unit.html", include_str!("templates/unit.html")),
        ("records.html", include_str!("templates/records.html")),
        ("operations.html", include_str!("templates/operations.html")),
        ("login.html", include_str!("templates/login.html")),
        ("error.html", include_str!("templates/error.html")),
        ("_period.html", include_str!("templates/_period.html")),
        ("_state.html", include_str!("templates/_state.html")),
        ("_fire.html", include_str!("templates/_fire.html")),
    ] {
        env.add_template(name, text)
            .unwrap_or_else(|e| panic!("console template {name}: {e}"));
    }
    env.add_filter("two", |v: Option<f64>| match v {
        Some(v) => format!("{v:.2}"),
        None => "—".into(),
    });
    env.add_filter("signed", |v: Option<f64>| match v {
        Some(v) if v.abs() < 0.005 => "0.00".to_string(),
        Some(v) => format!("{v:+.2}"),
        None => "—".into(),
    });
    env.add_filter("num", |v: Option<f64>| match v {
        Some(v) if v.fract() == 0.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
        None => "—".into(),
    });
    env.add_filter("pct", |v: Option<f64>| match v {
        Some(v) => format!("{:.1}%", v * 100.0),
        None => "—".into(),
    });
    env
}

/// The console's routes, under `/console`. `pages` wraps the routes that read the warehouse
/// (the daemon's concurrency limit); the event stream and the script are outside it.
pub fn router(console: Arc<Console>, pages: impl FnOnce(Router) -> Router) -> Router {
    let reading = Router::new()
        .route("/console/ranking", get(ranking))
        .route("/console/unit/{unit}", get(unit))
        .route("/console/records/{unit}/{period}/{indicator}", get(records))
        .route(
            "/console/records/{unit}/{period}/{indicator}/csv",
            get(records_csv),
        )
        .route("/console/operations", get(operations))
        .with_state(console.clone());
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/ranking") }),
        )
        .route(
            "/console/",
            get(|| async { Redirect::to("/console/ranking") }),
        )
        .route("/console/events", get(events))
        .route("/console/live.js", get(live_js))
        .route("/console/login", get(login_form).post(login))
        .with_state(console)
        .merge(pages(reading))
}

/// What every page's layout shows.
#[derive(Serialize)]
struct Frame<'a> {
    title: String,
    nav: &'a str,
    mark: BuildMark,
    age_seconds: Option<i64>,
    /// Seconds between refreshes regardless of builds (Operations), 0 for none.
    refresh_every: u32,
}

fn frame(title: String, nav: &str, mark: BuildMark) -> Frame<'_> {
    Frame {
        age_seconds: mark.age_seconds(chrono::Utc::now()),
        title,
        nav,
        mark,
        refresh_every: 0,
    }
}

fn html(body: String) -> Response {
    let mut r = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response();
    // Record-level pages: never kept by a cache on the way.
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    r
}

/// Runs `page` on a blocking thread with a connection to the published warehouse; an error
/// becomes the error page.
async fn render<F>(console: Arc<Console>, page: F) -> Response
where
    F: FnOnce(&Console, &crate::duck::Connection, BuildMark) -> anyhow::Result<Option<String>>
        + Send
        + 'static,
{
    let c = console.clone();
    let done = tokio::task::spawn_blocking(move || {
        let (conn, mark) = c.published.connect()?;
        page(&c, &conn, mark)
    })
    .await;
    let (status, body) = match done {
        Ok(Ok(Some(body))) => return html(body),
        Ok(Ok(None)) => (
            StatusCode::NOT_FOUND,
            "Không tìm thấy (not found).".to_string(),
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "A console page failed.");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "Không đọc được kho dữ liệu đã công bố (the published warehouse could not be read; the daemon's log says why).".to_string(),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "A console page panicked.");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Lỗi nội bộ (internal error; the daemon's log says why).".to_string(),
            )
        }
    };
    let page = console
        .env
        .get_template("error.html")
        .and_then(|t| {
            t.render(minijinja::context! {
                frame => minijinja::value::Serde(frame("Lỗi".into(), "", console.published.mark())),
                message => body,
            })
        })
        .unwrap_or_else(|e| e.to_string());
    (status, html(page)).into_response()
}

fn page_html(console: &Console, name: &str, ctx: impl Serialize) -> anyhow::Result<String> {
    Ok(console
        .env
        .get_template(name)?
        .render(minijinja::value::Serde(ctx))?)
}

#[derive(Deserialize, Default)]
struct RankingQuery {
    level: Option<String>,
    period: Option<String>,
}

async fn ranking(
    State(console): State<Arc<Console>>,
    _reader: Reader,
    Query(q): Query<RankingQuery>,
) -> Response {
    render(console, move |c, conn, mark| {
        let periods = queries::periods(conn)?;
        let Some(choice) = queries::choose(&periods, q.period.as_deref()) else {
            if q.period.is_some() {
                return Ok(None);
            }
            anyhow::bail!("the published warehouse has no index yet: the first build that has data publishes it");
        };
        let level = match q.level.as_deref() {
            Some(l @ ("2" | "3" | "other")) => l.to_string(),
            _ => "2".into(),
        };
        let rows = queries::ranking(conn, &choice.period, &level)?;
        let state = queries::period_state(conn, &choice)?;
        let level_name = queries::LEVELS
            .iter()
            .find(|(l, _)| *l == level)
            .map(|(_, n)| *n)
            .unwrap_or_default();
        page_html(
            c,
            "ranking.html",
            serde_json::json!({
                "frame": frame(format!("Xếp hạng — {level_name} — kỳ {}", choice.period), "ranking", mark),
                "levels": queries::LEVELS,
                "level": level,
                "periods": periods,
                "choice": choice,
                "state": state,
                "groups": queries::groups(),
                "rows": rows,
            }),
        )
        .map(Some)
    })
    .await
}

#[derive(Deserialize, Default)]
struct UnitQuery {
    period: Option<String>,
    kind: Option<String>,
}

async fn unit(
    State(console): State<Arc<Console>>,
    _reader: Reader,
    Path(unit_id): Path<String>,
    Query(q): Query<UnitQuery>,
) -> Response {
    render(console, move |c, conn, mark| {
        let periods = queries::periods(conn)?;
        let Some(choice) = queries::choose(&periods, q.period.as_deref()) else {
            return Ok(None);
        };
        let Some(head) = queries::unit_head(conn, &unit_id, &choice.period)? else {
            return Ok(None);
        };
        let kind = match q.kind.as_deref() {
            Some(k @ ("month" | "quarter" | "year")) => k.to_string(),
            _ => "month".into(),
        };
        let indicators = queries::indicators(conn, &unit_id, &choice.period)?;
        let mut costly: Vec<&queries::IndicatorLine> =
            indicators.iter().filter(|i| i.lost >= 0.005).collect();
        costly.sort_by(|a, b| b.lost.total_cmp(&a.lost));
        costly.truncate(5);
        let history = queries::history(conn, &unit_id, &kind)?;
        let chart = chart::history(&history)?;
        let state = queries::period_state(conn, &choice)?;
        page_html(
            c,
            "unit.html",
            serde_json::json!({
                "frame": frame(format!("{} — kỳ {}", head.unit_name, choice.period), "unit", mark),
                "head": head,
                "periods": periods,
                "choice": choice,
                "state": state,
                "kind": kind,
                "groups": queries::groups(),
                "colours": chart::group_colours(),
                "indicators": indicators,
                "costly": costly,
                "history": history,
                "chart": chart,
                "children": queries::children(conn, &unit_id, &choice.period)?,
                "revisions": queries::unit_revisions(conn, &unit_id)?,
            }),
        )
        .map(Some)
    })
    .await
}

#[derive(Deserialize, Default)]
struct RecordsQuery {
    #[serde(default)]
    which: Which,
    page: Option<u64>,
}

async fn records(
    State(console): State<Arc<Console>>,
    reader: Reader,
    Path((unit_id, period, indicator)): Path<(String, String, String)>,
    Query(q): Query<RecordsQuery>,
) -> Response {
    render(console, move |c, conn, mark| {
        let Some(head) = queries::unit_head(conn, &unit_id, &period)? else {
            return Ok(None);
        };
        let Some(line) = queries::indicators(conn, &unit_id, &period)?
            .into_iter()
            .find(|i| i.indicator == indicator)
        else {
            return Ok(None);
        };
        let page = q.page.unwrap_or(1).clamp(1, 1_000_000_000);
        let found = match line.drill {
            Some(drill) => Some(queries::records(
                conn,
                drill,
                head.parent_unit_id.is_none(),
                &unit_id,
                &period,
                &indicator,
                q.which,
                Some((PAGE_SIZE, (page - 1) * PAGE_SIZE)),
                reader.officer,
            )?),
            None => None,
        };
        let pages = found
            .as_ref()
            .map(|f| f.matching.div_ceil(PAGE_SIZE).max(1))
            .unwrap_or(1);
        page_html(
            c,
            "records.html",
            serde_json::json!({
                "frame": frame(format!("{} — {} — kỳ {period}", head.unit_name, indicator), "records", mark),
                "head": head,
                "period": period,
                "line": line,
                "found": found,
                "which": q.which,
                "page": page,
                "pages": pages,
                "page_size": PAGE_SIZE,
                "officer": reader.officer,
            }),
        )
        .map(Some)
    })
    .await
}

async fn records_csv(
    State(console): State<Arc<Console>>,
    reader: Reader,
    Path((unit_id, period, indicator)): Path<(String, String, String)>,
    Query(q): Query<RecordsQuery>,
) -> Response {
    let Some(drill) = Drill::of(&indicator) else {
        return (
            StatusCode::NOT_FOUND,
            format!("{indicator} has no records to list\n"),
        )
            .into_response();
    };
    let c = console.clone();
    let name = format!("{unit_id}_{period}_{indicator}.csv");
    let done = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u8>> {
        let (conn, _) = c.published.connect()?;
        let top = queries::unit_head(&conn, &unit_id, &period)?
            .is_some_and(|h| h.parent_unit_id.is_none());
        let found = queries::records(
            &conn,
            drill,
            top,
            &unit_id,
            &period,
            &indicator,
            q.which,
            None,
            reader.officer,
        )?;
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut head = vec![
            "id",
            "in_numerator",
            "handling_unit_id",
            match drill {
                Drill::Dossiers => "procedure_code",
                Drill::Petitions => "category",
            },
            "received_at",
            "due_at",
            "finished_at",
            "status",
            "why",
        ];
        if reader.officer {
            head.push("officer");
        }
        w.write_record(&head)?;
        for r in &found.rows {
            let mut line = vec![
                r.id.clone(),
                r.in_numerator.to_string(),
                r.handling_unit_id.clone().unwrap_or_default(),
                r.what.clone().unwrap_or_default(),
                r.received_at.clone().unwrap_or_default(),
                r.due_at.clone().unwrap_or_default(),
                r.finished_at.clone().unwrap_or_default(),
                r.status.clone().unwrap_or_default(),
                r.why.clone(),
            ];
            if reader.officer {
                line.push(r.officer.clone().unwrap_or_default());
            }
            // A spreadsheet would run a cell that starts like a formula.
            for cell in &mut line {
                if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
                    cell.insert(0, '\'');
                }
            }
            w.write_record(&line)?;
        }
        Ok(w.into_inner()?)
    })
    .await;
    match done {
        Ok(Ok(bytes)) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"{}\"",
                        name.replace(['"', '\\'], "_")
                    ),
                ),
                (header::CACHE_CONTROL, "no-store".to_string()),
            ],
            bytes,
        )
            .into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "A console CSV failed.");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the published warehouse could not be read; the daemon's log says why\n",
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "A console CSV panicked.");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}

async fn operations(State(console): State<Arc<Console>>, _reader: Reader) -> Response {
    let report = match console.daemon.report().await {
        Ok(r) => r,
        Err(e) => {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}\n")).into_response();
        }
    };
    render(console, move |c, conn, mark| {
        let mut jobs: Vec<String> = report.jobs.iter().map(|j| j.job.clone()).collect();
        jobs.extend(report.build.iter().map(|b| b.job.clone()));
        jobs.extend(report.publish_jobs.iter().map(|p| p.job.clone()));
        jobs.extend(report.reconcile_jobs.iter().map(|r| r.job.clone()));
        let now = chrono::Utc::now().fixed_offset();
        let fires = operations::last_day(&c.warehouse, &jobs, now)?;
        let timeline = chart::timeline(&jobs, &fires)?;
        let mut f = frame("Vận hành".into(), "operations", mark);
        f.refresh_every = 10;
        page_html(
            c,
            "operations.html",
            serde_json::json!({
                "frame": f,
                "report": report.as_ref(),
                "builds": operations::builds(&c.warehouse, 8)?,
                "receipts": operations::receipts(conn)?,
                "calendar": operations::calendar(conn)?,
                "timeline": timeline,
                "fires": fires.len(),
                "failed_fires": fires.iter().filter(|f| f.outcome != "ok").count(),
            }),
        )
        .map(Some)
    })
    .await
}

/// One stream per open page: the build mark now, then each time a build publishes.
async fn events(State(console): State<Arc<Console>>, _reader: Reader) -> Response {
    if console.streams.fetch_add(1, Ordering::SeqCst) >= MAX_STREAMS {
        console.streams.fetch_sub(1, Ordering::SeqCst);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "busy: too many live pages open\n",
        )
            .into_response();
    }
    struct Held(Arc<Console>);
    impl Drop for Held {
        fn drop(&mut self) {
            self.0.streams.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let rx = console.published.subscribe();
    let mut stop = console.stop.clone();
    let held = Held(console);
    let stream =
        futures_util::stream::unfold((rx, held, true), |(mut rx, held, first)| async move {
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let mark = rx.borrow_and_update().clone();
            let event = Event::default()
                .event("build")
                .id(mark.build_id.clone())
                .json_data(&mark)
                .unwrap_or_default();
            Some((Ok::<_, std::convert::Infallible>(event), (rx, held, false)))
        });
    // Ends when the server stops (an open page would otherwise hold up its shutdown).
    let stream = futures_util::StreamExt::take_until(stream, async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn live_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("templates/live.js"),
    )
        .into_response()
}
