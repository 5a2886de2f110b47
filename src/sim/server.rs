//! The simulator's HTTP server (axum, 127.0.0.1 only).
//!
//! | route | protocol | feed |
//! |---|---|---|
//! | `GET /portal/dossiers?since=&limit=` | cursor | dossier versions (SPEC 3.1) |
//! | `GET /portal/dossier-steps?since=&limit=` | cursor | processing steps (QuaTrinhXuLy) |
//! | `GET /payments/transactions?since=&limit=` | cursor | online payments (3.5) |
//! | `POST /reporting/ratings` | paged_post | satisfaction ratings (3.3) |
//! | `POST /reporting/petitions` | paged_post | petitions, PAKN (3.4) |
//! | `GET /catalogue/procedures.json` | snapshot | procedure catalogue (3.2) |
//! | `GET /registry/units.json` | snapshot | unit registry (§2) |
//! | `GET /calendar/days.csv` | snapshot | holidays and compensatory working days (3.7) |
//! | `GET /reports/national/received.csv` | snapshot | national report (3.6) |
//! | `POST /publications/{portal}` (Idempotency-Key) | publication | a portal receiving a revision ([`super::portal`]) |
//! | `GET /_sim/stats`, `POST /_sim/faults`, `GET /_sim/health`, `POST /_sim/records/{feed}` (add a record to a cursor feed: a changed dossier), `GET /_sim/publications` | control | |
//!
//! Records become visible as the simulator's clock passes the time they reach the portal.
//! When a token is set, feed routes need `Authorization: Bearer <token>` or basic credentials
//! whose password is the token.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{Duration, NaiveDateTime};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::faults::{corrupt, Dice, Fault, Faults};
use super::world::{secs, ts, Entry};
use super::{SimFeed, World};

/// The simulator's clock: `start_sim` advanced by `speed` simulated seconds per real second,
/// until frozen (tests freeze it to compare two pulls of the same state).
#[derive(Debug, Clone)]
pub struct Clock {
    start_real: Instant,
    start_sim: NaiveDateTime,
    speed: f64,
    frozen: Arc<std::sync::Mutex<Option<NaiveDateTime>>>,
}

impl Clock {
    pub fn new(start_sim: NaiveDateTime, speed: f64) -> Clock {
        Clock {
            start_real: Instant::now(),
            start_sim,
            speed,
            frozen: Arc::default(),
        }
    }

    pub fn now(&self) -> NaiveDateTime {
        if let Some(t) = *self.frozen.lock().expect("clock") {
            return t;
        }
        let elapsed = self.start_real.elapsed().as_secs_f64() * self.speed;
        self.start_sim + Duration::milliseconds((elapsed * 1000.0) as i64)
    }

    /// Stops the clock at `t` (before or after where it is): the feeds serve what is visible
    /// then, until it is set again (`chiso bench publication-year` walks a year day by day).
    pub fn set(&self, t: NaiveDateTime) {
        *self.frozen.lock().expect("clock") = Some(t);
    }

    /// Stops the clock where it is now: what the feeds serve stops changing.
    pub fn freeze(&self) -> NaiveDateTime {
        let mut f = self.frozen.lock().expect("clock");
        if f.is_none() {
            let elapsed = self.start_real.elapsed().as_secs_f64() * self.speed;
            *f = Some(self.start_sim + Duration::milliseconds((elapsed * 1000.0) as i64));
        }
        f.expect("set")
    }
}

/// Per-feed counters, for reconciliation: every record in a complete 200 answer counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FeedStats {
    pub requests: u64,
    pub served_records: u64,
    pub malformed_served: u64,
    pub errors: u64,
    pub truncated: u64,
    pub slow: u64,
}

/// A record added while the simulator runs (`POST /_sim/records/{feed}`, or
/// [`SimState::inject`]): served after the world's visible records of its cursor feed, in the
/// order added, with the time it was first served (the freshness benchmark's start).
pub struct Injected {
    pub entry: Entry,
    pub added: Instant,
    pub first_served: std::sync::OnceLock<Instant>,
}

pub struct SimState {
    pub world: World,
    /// Records added at run time, per cursor feed.
    pub injected: Mutex<BTreeMap<&'static str, Vec<Arc<Injected>>>>,
    pub clock: Clock,
    pub faults: RwLock<Faults>,
    dice: Dice,
    /// What the simulated portals received (`POST /publications/{portal}`).
    pub portals: Mutex<super::portal::Portals>,
    pub stats: Mutex<BTreeMap<String, FeedStats>>,
    /// `moving_records`: (feed, key) → the update time (seconds) the record was moved to.
    moved: Mutex<BTreeMap<(&'static str, String), i64>>,
    /// The portal's last evaluation (computed at 02:00 of the simulated day, once) and the
    /// figures it changed since (`POST /_sim/evaluation/revisions`).
    evaluation: Mutex<Option<Arc<Computed>>>,
    revisions: Mutex<Vec<super::evaluation_api::Revision>>,
    token: Option<String>,
    calendar_csv: String,
}

impl SimState {
    pub fn new(world: World, faults: Faults, token: Option<String>) -> SimState {
        let clock = Clock::new(world.config.now, world.config.speed);
        SimState {
            dice: Dice::new(world.config.seed),
            moved: Mutex::new(BTreeMap::new()),
            calendar_csv: world.calendar_csv(),
            world,
            injected: Mutex::new(BTreeMap::new()),
            clock,
            faults: RwLock::new(faults),
            stats: Mutex::new(BTreeMap::new()),
            portals: Mutex::default(),
            evaluation: Mutex::new(None),
            revisions: Mutex::new(Vec::new()),
            token: token.filter(|t| !t.is_empty()),
        }
    }

    /// Adds a record (the feed's JSON, one object) to a cursor feed: a new version of a dossier,
    /// say. It is served from now on after the world's records; the handle tells when it was
    /// first served.
    pub fn inject(&self, feed: SimFeed, json: &str) -> Result<Arc<Injected>, String> {
        if !matches!(
            feed,
            SimFeed::Dossiers | SimFeed::DossierSteps | SimFeed::Payments
        ) {
            return Err(format!("{} is not a cursor feed", feed.name()));
        }
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("not a JSON record: {e}"))?;
        let (key, version) = feed.fault_fields();
        let text = |f: &str| match &v[f] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        if text(key).is_empty() {
            return Err(format!("the record has no {key}"));
        }
        let injected = Arc::new(Injected {
            entry: Entry {
                visible_at: super::world::secs(self.clock.now()),
                key: text(key),
                version: text(version),
                json: serde_json::to_string(&v).expect("json"),
                event: 0,
            },
            added: Instant::now(),
            first_served: std::sync::OnceLock::new(),
        });
        self.injected
            .lock()
            .expect("injected lock")
            .entry(feed.name())
            .or_default()
            .push(injected.clone());
        Ok(injected)
    }

    fn injected_for(&self, feed: SimFeed) -> Vec<Arc<Injected>> {
        self.injected
            .lock()
            .expect("injected lock")
            .get(feed.name())
            .cloned()
            .unwrap_or_default()
    }

    pub fn stats(&self) -> BTreeMap<String, FeedStats> {
        self.stats.lock().expect("stats lock").clone()
    }

    fn count(&self, feed: &str, f: impl FnOnce(&mut FeedStats)) {
        let mut s = self.stats.lock().expect("stats lock");
        f(s.entry(feed.to_string()).or_default());
    }

    fn authorised(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        if let Some(b) = value.strip_prefix("Bearer ") {
            return b == token;
        }
        if let Some(b) = value.strip_prefix("Basic ") {
            use base64::Engine;
            if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b.trim()) {
                if let Ok(s) = String::from_utf8(raw) {
                    return s.split_once(':').is_some_and(|(_, p)| p == token);
                }
            }
        }
        false
    }
}

type Shared = Arc<SimState>;

/// A running simulator.
pub struct SimHandle {
    pub addr: SocketAddr,
    pub state: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits for the server task.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// Serves `state` on 127.0.0.1:`port` (0 picks a free port).
pub async fn start(state: SimState, port: u16) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(state);
    let app = router(state.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok(SimHandle {
        addr,
        state,
        shutdown: Some(tx),
        task: Some(task),
    })
}

pub fn router(state: Shared) -> Router {
    Router::new()
        .route(
            "/portal/dossiers",
            get(|s: State<Shared>, h: HeaderMap, q: Query<CursorQuery>| {
                cursor_feed(s, h, q, SimFeed::Dossiers)
            }),
        )
        .route(
            "/portal/dossier-steps",
            get(|s: State<Shared>, h: HeaderMap, q: Query<CursorQuery>| {
                cursor_feed(s, h, q, SimFeed::DossierSteps)
            }),
        )
        .route(
            "/payments/transactions",
            get(|s: State<Shared>, h: HeaderMap, q: Query<CursorQuery>| {
                cursor_feed(s, h, q, SimFeed::Payments)
            }),
        )
        .route(
            "/reporting/ratings",
            post(|s: State<Shared>, h: HeaderMap, b: String| paged_feed(s, h, b, SimFeed::Ratings)),
        )
        .route(
            "/reporting/petitions",
            post(|s: State<Shared>, h: HeaderMap, b: String| {
                paged_feed(s, h, b, SimFeed::Petitions)
            }),
        )
        .route(
            "/registry/units.json",
            get(|s: State<Shared>, h: HeaderMap| snapshot(s, h, "units")),
        )
        .route(
            "/catalogue/procedures.json",
            get(|s: State<Shared>, h: HeaderMap| snapshot(s, h, "catalogue")),
        )
        .route(
            "/calendar/days.csv",
            get(|s: State<Shared>, h: HeaderMap| snapshot(s, h, "calendar")),
        )
        .route(
            "/reports/national/received.csv",
            get(|s: State<Shared>, h: HeaderMap| snapshot(s, h, "national_report")),
        )
        .route("/_sim/health", get(|| async { "ok" }))
        .route("/_sim/stats", get(stats))
        .route("/_sim/faults", post(set_faults).get(get_faults))
        .route("/_sim/records/{feed}", post(add_record))
        .route("/publications/{portal}", post(receive_publication))
        .route("/_sim/publications", get(list_publications))
        .route(
            "/api/v1/reporting/evaluation/{endpoint}",
            post(evaluation_answer),
        )
        .route("/_sim/evaluation/divergences", get(evaluation_divergences))
        .route(
            "/_sim/evaluation/revisions",
            post(add_revision).get(list_revisions),
        )
        .with_state(state)
}

#[derive(Debug, Deserialize)]
pub struct CursorQuery {
    since: Option<String>,
    limit: Option<usize>,
}

fn json_response(body: String) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Applies the request's fault to a finished body; counts records only for whole answers.
async fn deliver(
    state: &SimState,
    feed: &str,
    content_type: &'static str,
    body: String,
    records: u64,
    malformed: u64,
    fault: Fault,
) -> Response {
    match fault {
        Fault::Error => {
            state.count(feed, |s| s.errors += 1);
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "simulated fault: service unavailable",
            )
                .into_response();
        }
        Fault::Truncate => {
            state.count(feed, |s| s.truncated += 1);
            // Announce the whole length, send half, then drop the connection: what a client
            // sees when a proxy or the network cuts an answer short.
            let full = body.len();
            let half = bytes::Bytes::from(body.into_bytes()).slice(..full / 2);
            let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
                vec![Ok(half), Err(std::io::Error::other("simulated cut"))];
            return Response::builder()
                .header(header::CONTENT_TYPE, content_type)
                .header(header::CONTENT_LENGTH, full)
                .body(Body::from_stream(futures_util::stream::iter(chunks)))
                .expect("valid response");
        }
        Fault::Slow(ms) => {
            state.count(feed, |s| s.slow += 1);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        Fault::None => {}
    }
    state.count(feed, |s| {
        s.served_records += records;
        s.malformed_served += malformed;
    });
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .expect("valid response")
}

fn unauthorised() -> Response {
    (StatusCode::UNAUTHORIZED, "missing or wrong credentials").into_response()
}

/// Serialises `entries` as a JSON array, mixing in malformed copies per the fault settings.
fn records_array(
    entries: &[Entry],
    feed: SimFeed,
    malformed_rate: f64,
    rng: &mut impl Rng,
) -> (String, u64, u64) {
    let mut out =
        String::with_capacity(entries.iter().map(|e| e.json.len() + 1).sum::<usize>() + 2);
    out.push('[');
    let mut n = 0u64;
    let mut bad = 0u64;
    let (key, tsf) = feed.fault_fields();
    let mut chacha = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(rng.random());
    for e in entries {
        if n > 0 {
            out.push(',');
        }
        out.push_str(&e.json);
        n += 1;
        if malformed_rate > 0.0 && chacha.random_bool(malformed_rate) {
            out.push(',');
            out.push_str(&corrupt(&e.json, key, tsf, &mut chacha));
            n += 1;
            bad += 1;
        }
    }
    out.push(']');
    (out, n, bad)
}

async fn cursor_feed(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<CursorQuery>,
    feed: SimFeed,
) -> Response {
    let name = feed.name();
    state.count(name, |s| s.requests += 1);
    if !state.authorised(&headers) {
        return unauthorised();
    }
    let since: usize = match q.since.as_deref() {
        None | Some("") => 0,
        Some(s) => match s.parse() {
            Ok(v) => v,
            Err(_) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("since={s:?} is not a cursor from this feed"),
                )
                    .into_response()
            }
        },
    };
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let now = state.clock.now();
    let visible = state.world.visible(feed, now);
    let injected = state.injected_for(feed);
    let total = visible.len() + injected.len();
    let start = since.min(total);
    let end = (start + limit).min(total);
    let envelope = |array: String| format!("{{\"data\":{array},\"next_cursor\":\"{end}\"}}");
    if injected.is_empty() {
        return serve_records(&state, feed, &visible[start..end], envelope).await;
    }
    // The world's records, then those added at run time (positions stay put: the clock of a
    // simulator that takes records is frozen).
    let mut page: Vec<Entry> = visible[start.min(visible.len())..end.min(visible.len())].to_vec();
    for i in start.max(visible.len())..end {
        let added = &injected[i - visible.len()];
        added.first_served.get_or_init(Instant::now);
        page.push(added.entry.clone());
    }
    serve_records(&state, feed, &page, envelope).await
}

/// `POST /_sim/records/{feed}`: adds the JSON record in the body to a cursor feed.
async fn add_record(
    State(state): State<Shared>,
    axum::extract::Path(feed): axum::extract::Path<String>,
    body: String,
) -> Response {
    let Some(feed) = SimFeed::ALL.iter().copied().find(|f| f.name() == feed) else {
        return (StatusCode::NOT_FOUND, format!("no feed {feed:?}")).into_response();
    };
    match state.inject(feed, &body) {
        Ok(added) => Json(serde_json::json!({
            "feed": feed.name(),
            "key": added.entry.key,
            "version": added.entry.version,
        }))
        .into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

/// Draws the request's fault, serialises `entries` (with malformed copies mixed in as set) and
/// wraps the array in the feed's envelope.
async fn serve_records(
    state: &SimState,
    feed: SimFeed,
    entries: &[Entry],
    envelope: impl FnOnce(String) -> String,
) -> Response {
    let faults = state.faults.read().expect("faults lock").clone();
    let mut rng = state.dice.next();
    let fault = Dice::decide(&faults, &mut rng);
    let (array, n, bad) = records_array(entries, feed, faults.malformed_rate, &mut rng);
    let body = envelope(array);
    deliver(
        state,
        feed.name(),
        "application/json; charset=utf-8",
        body,
        n,
        bad,
        fault,
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PagedBody {
    current_page: Option<usize>,
    page_size: Option<usize>,
    tu_ngay: Option<String>,
}

async fn paged_feed(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: String,
    feed: SimFeed,
) -> Response {
    let name = feed.name();
    state.count(name, |s| s.requests += 1);
    if !state.authorised(&headers) {
        return unauthorised();
    }
    let envelope_error = |message: String| {
        json_response(
            serde_json::json!({ "code": "ERR_BAD_REQUEST", "message": message, "data": null })
                .to_string(),
        )
    };
    let req: PagedBody = match serde_json::from_str(&body) {
        Ok(b) => b,
        Err(e) => return envelope_error(format!("body is not valid: {e}")),
    };
    let page = req.current_page.unwrap_or(1).max(1);
    let size = req.page_size.unwrap_or(100).clamp(1, 10_000);
    let since = match req.tu_ngay.as_deref() {
        None | Some("") => i64::MIN,
        Some(s) => match NaiveDateTime::parse_from_str(s, "%Y%m%d%H%M%S") {
            Ok(t) => secs(t),
            Err(_) => return envelope_error(format!("tuNgay {s:?} is not yyyyMMddHHmmss")),
        },
    };
    let now = state.clock.now();
    let visible = state.world.visible(feed, now);
    if state.faults.read().expect("faults lock").moving_records {
        let current = moving_records(&state, feed, visible, since, page);
        let start = ((page - 1) * size).min(current.len());
        let end = (start + size).min(current.len());
        let total = current.len();
        return serve_records(&state, feed, &current[start..end], |array| {
            format!(
                "{{\"code\":\"OK\",\"message\":\"Thành công\",\"total\":{total},\"data\":{array}}}"
            )
        })
        .await;
    }
    let from = visible.partition_point(|e| e.visible_at < since);
    let matching = &visible[from..];
    let start = ((page - 1) * size).min(matching.len());
    let end = (start + size).min(matching.len());
    let total = matching.len();
    serve_records(&state, feed, &matching[start..end], |array| {
        format!("{{\"code\":\"OK\",\"message\":\"Thành công\",\"total\":{total},\"data\":{array}}}")
    })
    .await
}

/// `moving_records`: each key's current version (a moved record carries its new update time),
/// at or after `since`, oldest first by update time. A request for a page after the first first
/// moves the earliest record not moved yet to just after the newest one.
fn moving_records(
    state: &SimState,
    feed: SimFeed,
    visible: &[Entry],
    since: i64,
    page: usize,
) -> Vec<Entry> {
    let (_, time_field) = feed.fault_fields();
    // A record's time is its update time (the version), which the client pages by.
    let mut current: BTreeMap<String, Entry> = BTreeMap::new();
    for e in visible {
        let mut e = e.clone();
        if let Ok(t) = NaiveDateTime::parse_from_str(&e.version, "%Y%m%d%H%M%S") {
            e.visible_at = secs(t);
        }
        current.insert(e.key.clone(), e);
    }
    let mut moved = state.moved.lock().expect("moved lock");
    for ((f, key), at) in moved.iter() {
        if *f != feed.name() {
            continue;
        }
        if let Some(e) = current.get_mut(key) {
            let mut v: serde_json::Value = serde_json::from_str(&e.json).expect("simulated JSON");
            let stamp = chrono::DateTime::from_timestamp(*at, 0)
                .expect("valid time")
                .naive_utc()
                .format("%Y%m%d%H%M%S")
                .to_string();
            v[time_field] = serde_json::Value::String(stamp.clone());
            e.json = v.to_string();
            e.version = stamp;
            e.visible_at = *at;
        }
    }
    if page > 1 {
        let newest = current.values().map(|e| e.visible_at).max().unwrap_or(0);
        let first = current
            .values()
            .filter(|e| !moved.contains_key(&(feed.name(), e.key.clone())))
            .min_by_key(|e| (e.visible_at, e.key.clone()))
            .map(|e| e.key.clone());
        if let Some(key) = first {
            let at = newest + 1;
            moved.insert((feed.name(), key.clone()), at);
            drop(moved);
            return moving_records(state, feed, visible, since, 1);
        }
    }
    let mut rows: Vec<Entry> = current
        .into_values()
        .filter(|e| e.visible_at >= since)
        .collect();
    rows.sort_by(|a, b| a.visible_at.cmp(&b.visible_at).then(a.key.cmp(&b.key)));
    rows
}

async fn snapshot(
    State(state): State<Shared>,
    headers: HeaderMap,
    which: &'static str,
) -> Response {
    state.count(which, |s| s.requests += 1);
    if !state.authorised(&headers) {
        return unauthorised();
    }
    let now = state.clock.now();
    let (body, ct) = match which {
        "units" => (
            state.world.units_json_on(state.clock.now().date()),
            "application/json; charset=utf-8",
        ),
        "catalogue" => (
            state.world.catalogue_json(now),
            "application/json; charset=utf-8",
        ),
        "calendar" => (state.calendar_csv.clone(), "text/csv; charset=utf-8"),
        _ => (state.world.national_csv(now), "text/csv; charset=utf-8"),
    };
    let records = match ct {
        "text/csv; charset=utf-8" => body.lines().count().saturating_sub(1) as u64,
        _ => serde_json::from_str::<Vec<&serde_json::value::RawValue>>(&body)
            .map_or(0, |v| v.len() as u64),
    };
    let faults = state.faults.read().expect("faults lock").clone();
    let mut rng = state.dice.next();
    let fault = Dice::decide(&faults, &mut rng);
    deliver(&state, which, ct, body, records, 0, fault).await
}

#[derive(Serialize)]
struct StatsBody {
    now: String,
    feeds: BTreeMap<String, FeedStats>,
}

async fn stats(State(state): State<Shared>) -> Json<serde_json::Value> {
    Json(
        serde_json::to_value(StatsBody {
            now: ts(state.clock.now()),
            feeds: state.stats(),
        })
        .expect("serialises"),
    )
}

async fn get_faults(State(state): State<Shared>) -> Json<Faults> {
    Json(state.faults.read().expect("faults lock").clone())
}

async fn set_faults(State(state): State<Shared>, Json(f): Json<Faults>) -> Response {
    if let Err(e) = f.validate() {
        return (StatusCode::BAD_REQUEST, e).into_response();
    }
    *state.faults.write().expect("faults lock") = f.clone();
    Json(f).into_response()
}

impl SimState {
    /// What the simulated portals received so far.
    pub fn publications(&self) -> Vec<super::portal::Received> {
        self.portals.lock().expect("portals lock").received.clone()
    }
}

/// `POST /publications/{portal}`: a portal receiving a revision ([`super::portal`]).
async fn receive_publication(
    State(state): State<Shared>,
    axum::extract::Path(portal): axum::extract::Path<String>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    use super::portal::{Answer, Arrival};
    if !state.authorised(&headers) {
        return unauthorised();
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let key = header("idempotency-key");
    if key.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "an Idempotency-Key header is required",
        )
            .into_response();
    }
    let faults = state.faults.read().expect("faults lock").clone();
    let roll: f64 = state.dice.next().random();
    let (period, revision, content_type) = (
        header("x-chiso-period"),
        header("x-chiso-revision"),
        header("content-type"),
    );
    let answer = state.portals.lock().expect("portals lock").receive(
        &Arrival {
            portal: &portal,
            key: &key,
            period: &period,
            revision: &revision,
            content_type: &content_type,
            body: &body,
        },
        &faults,
        roll,
    );
    if answer == Answer::Redirected {
        return (
            StatusCode::FOUND,
            [(axum::http::header::LOCATION, "/login?next=/publications")],
            "",
        )
            .into_response();
    }
    let Answer::Stored {
        receipt,
        duplicate,
        lost,
    } = answer
    else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "simulated fault: portal unavailable",
        )
            .into_response();
    };
    if faults.publish_delay_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(faults.publish_delay_ms)).await;
    }
    if lost {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "simulated fault: answer lost",
        )
            .into_response();
    }
    let status = if duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (
        status,
        Json(serde_json::json!({ "receipt": receipt, "duplicate": duplicate })),
    )
        .into_response()
}

async fn list_publications(State(state): State<Shared>) -> Response {
    Json(state.portals.lock().expect("portals lock").listing()).into_response()
}

/// The portal's evaluation as of one computation, with its divergences.
pub struct Computed {
    pub as_of: NaiveDateTime,
    pub divergence_rate: f64,
    pub eval: super::evaluation::Evaluation,
    pub divergences: BTreeMap<(String, String), super::evaluation_api::Divergence>,
}

impl SimState {
    /// The portal's evaluation as of its last computation (02:00 of the simulated day),
    /// computed once per day and divergence setting.
    pub fn evaluation(&self) -> Arc<Computed> {
        let at = super::evaluation::as_of(self.clock.now());
        let rate = self.faults.read().expect("faults lock").portal_divergence;
        let mut slot = self.evaluation.lock().expect("evaluation lock");
        if let Some(c) = slot.as_ref() {
            if c.as_of == at && c.divergence_rate == rate {
                return c.clone();
            }
        }
        let eval = super::evaluation::compute(&self.world, at);
        let divergences = super::evaluation_api::divergences(&eval, self.world.config.seed, rate);
        let c = Arc::new(Computed {
            as_of: at,
            divergence_rate: rate,
            eval,
            divergences,
        });
        *slot = Some(c.clone());
        c
    }
}

/// `POST /api/v1/reporting/evaluation/{endpoint}`: public, no token (as the portal's). HTTP
/// 201 with the `{"code":"OK","data":…,"message":"OK"}` envelope; a body it cannot read is
/// answered with an envelope whose code is not OK.
async fn evaluation_answer(
    State(state): State<Shared>,
    axum::extract::Path(endpoint): axum::extract::Path<String>,
    body: String,
) -> Response {
    const ENDPOINTS: [&str; 7] = [
        "transparency",
        "handling-satisfaction",
        "dossier-digitized",
        "dvc-progress-tree",
        "provide-online-tree",
        "formality-online-payment-tree",
        "service-results",
    ];
    if !ENDPOINTS.contains(&endpoint.as_str()) {
        return (StatusCode::NOT_FOUND, "no such endpoint").into_response();
    }
    state.count(&format!("evaluation/{endpoint}"), |s| s.requests += 1);
    let answer = tokio::task::spawn_blocking(move || {
        let body: serde_json::Value = match serde_json::from_str(&body) {
            Ok(v) => v,
            Err(e) => return Err(format!("Dữ liệu gửi lên không hợp lệ: {e}")),
        };
        let computed = state.evaluation();
        let revisions = state.revisions.lock().expect("revisions lock").clone();
        let portal = super::evaluation_api::Portal {
            eval: &computed.eval,
            divergences: &computed.divergences,
            revisions: &revisions,
        };
        portal.answer(&endpoint, &body)
    })
    .await
    .unwrap_or_else(|e| Err(format!("lỗi hệ thống: {e}")));
    let envelope = match answer {
        Ok(data) => serde_json::json!({"code": "OK", "data": data, "message": "OK"}),
        Err(message) => {
            serde_json::json!({"code": "BAD_REQUEST", "data": null, "message": message})
        }
    };
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        envelope.to_string(),
    )
        .into_response()
}

/// `GET /_sim/evaluation/divergences`: what the portal's current evaluation was made to
/// differ in (the truth a reconciliation is checked against).
async fn evaluation_divergences(State(state): State<Shared>) -> Response {
    let computed = tokio::task::spawn_blocking(move || state.evaluation())
        .await
        .expect("the evaluation computes");
    let list: Vec<_> = computed.divergences.values().cloned().collect();
    Json(serde_json::json!({
        "as_of": super::world::ts(computed.as_of),
        "rate": computed.divergence_rate,
        "divergences": list,
    }))
    .into_response()
}

/// `POST /_sim/evaluation/revisions`: the portal changes a published figure (a unit, period
/// and indicator's numerator and denominator) from now on, silently.
async fn add_revision(
    State(state): State<Shared>,
    Json(r): Json<super::evaluation_api::Revision>,
) -> Response {
    if super::evaluation::rule_of(&r.code).is_none() {
        return (
            StatusCode::BAD_REQUEST,
            format!("unknown indicator {}", r.code),
        )
            .into_response();
    }
    state
        .revisions
        .lock()
        .expect("revisions lock")
        .push(r.clone());
    Json(r).into_response()
}

async fn list_revisions(State(state): State<Shared>) -> Response {
    Json(state.revisions.lock().expect("revisions lock").clone()).into_response()
}
