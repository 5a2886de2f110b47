//! The portal's published evaluation (Decision 766): `POST <path>/<endpoint>` with the portal's
//! own body, answered `{"code":"OK","data":{…},"message":"OK"}` with HTTP 201 (200 is taken as
//! well). See `PORTAL_EVALUATION_API.md` §2–§4 for the bodies and the two answer families.
//!
//! A run asks, for each endpoint and period of the plan, for the tree's root; then for each
//! child the answer lists (`evaluation[]` or `children[]`), as a root in turn, down `depth`
//! levels. Every endpoint walks the children it lists itself (the portal's inventories differ
//! between endpoints). The metric family is paginated: pages 2.. are asked only when
//! `pagination.totalPages` says so (at most 100), and their rows are joined; a unit seen on two
//! pages is an error.
//!
//! One answer lands as one record: the endpoint, the period, the root asked for, the body sent,
//! the answer's `data` as it came (rows of later pages joined), its SHA-256 and when it was
//! fetched. The cursor is `{"seen": {"<endpoint>|<period>|<root>": "<sha256>"}}`: an answer
//! equal to the last one landed for its key lands nothing, so the lake keeps each version the
//! portal showed once, with the time it was first seen.
//!
//! An envelope whose `code` is not `OK`, an HTML page (a firewall's or a login proxy's) and an
//! answer without the root or child array are errors naming the endpoint; the first two are
//! refusals and are not retried (asking again does not change a firewall's mind).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::http::{utf8, CallError, FeedClient, FeedError};
use super::snapshot::hex;
use super::{After, JsonRecords, Page, Records};
use crate::config::{EvaluationEndpoint, EvaluationParams};
use crate::time::Period;

/// The most pages asked for one answer.
const MAX_PAGES: u64 = 100;

/// One call to make: an endpoint, a period and the unit asked for as root.
#[derive(Debug, Clone)]
struct Ask {
    endpoint: EvaluationEndpoint,
    period: Period,
    root: String,
    level: u8,
}

impl Ask {
    fn key(&self) -> String {
        format!(
            "{}|{}|{}",
            self.endpoint.name(),
            self.period.label(),
            self.root
        )
    }
}

pub struct EvaluationFeed {
    params: EvaluationParams,
    queue: VecDeque<Ask>,
    /// (endpoint, period, root) asked in this run, so a unit listed twice is asked once.
    asked: BTreeSet<String>,
    /// Key → SHA-256 of the answer last landed for it.
    seen: BTreeMap<String, String>,
    /// The first call the portal declined in this run (reported when the others are done).
    declined: Option<FeedError>,
    /// Every call was made; what is left is to report `declined`.
    finished: bool,
}

/// The periods a run asks for: those given, or the current month, quarter and year and each
/// closed one that ended less than `revisit_days` ago (the portal revises closed periods).
pub fn plan(params: &EvaluationParams, today: chrono::NaiveDate) -> Vec<Period> {
    if let Some(list) = &params.periods {
        return list.iter().filter_map(|p| Period::parse(p)).collect();
    }
    let mut out = Vec::new();
    for kind in &params.period_types {
        let mut p = Period::holding(kind.name(), today).expect("a known kind");
        out.push(p);
        loop {
            p = p.previous();
            if (today - p.last_day()).num_days() > i64::from(params.revisit_days) {
                break;
            }
            out.push(p);
        }
    }
    out
}

impl EvaluationFeed {
    pub fn new(params: EvaluationParams, start: Option<Value>) -> Self {
        let seen = start
            .as_ref()
            .and_then(|v| v.get("seen"))
            .and_then(|v| v.as_object())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let periods = plan(&params, crate::time::now_local().date());
        let mut queue = VecDeque::new();
        for endpoint in &params.endpoints {
            for period in &periods {
                queue.push_back(Ask {
                    endpoint: *endpoint,
                    period: *period,
                    root: params.root_department_id.clone(),
                    level: 0,
                });
            }
        }
        EvaluationFeed {
            params,
            queue,
            asked: BTreeSet::new(),
            seen,
            declined: None,
            finished: false,
        }
    }

    /// The next answer as a page of at most one record. A call the portal declines (an
    /// envelope whose code is not OK) is left for the next run and the others go on; the run
    /// then ends with the first such error (every one is logged). Any other failure (a
    /// refusal, the portal down after retries) ends the run at once: a firewall's stop signal
    /// is not to be pushed through.
    pub async fn next_page(&mut self, client: &FeedClient) -> Result<Page, FeedError> {
        loop {
            match self.ask(client).await {
                Err(e) if matches!(e.cause, CallError::Declined(_)) => {
                    tracing::warn!(error = %e, "The portal declined one evaluation call; the others go on.");
                    if self.declined.is_none() {
                        self.declined = Some(e);
                    }
                    if self.queue.is_empty() {
                        self.seen.retain(|k, _| self.asked.contains(k));
                        return Err(self.declined.take().expect("just set"));
                    }
                }
                Ok(page) if page.last && self.declined.is_some() => {
                    // Land this page's record first; the error comes with the next call.
                    let mut page = page;
                    page.last = false;
                    self.finished = true;
                    return Ok(page);
                }
                other => return other,
            }
        }
    }

    async fn ask(&mut self, client: &FeedClient) -> Result<Page, FeedError> {
        if self.finished {
            return Err(self.declined.take().expect("a declined call"));
        }
        let Some(ask) = self.queue.pop_front() else {
            return Ok(self.page(None, "nothing to ask".into()));
        };
        self.asked.insert(ask.key());
        let path = format!("{}/{}", self.params.path.0, ask.endpoint.name());
        let body = request_body(&ask);
        let mut answer = client
            .post_json(&path, &body, |bytes| {
                decode(ask.endpoint, &ask.root, &[], bytes)
            })
            .await?;
        if answer.total_pages > MAX_PAGES {
            tracing::warn!(endpoint = ask.endpoint.name(), period = %ask.period.label(), pages = answer.total_pages, "The answer has more pages than are read; the rows past page {MAX_PAGES} are not landed.");
        }
        let pages = answer.total_pages.min(MAX_PAGES);
        for page in 2..=pages {
            let mut more = body.clone();
            more["currentPage"] = json!(page);
            let before = answer.children.clone();
            let next = client
                .post_json(&path, &more, |bytes| {
                    decode(ask.endpoint, &ask.root, &before, bytes)
                })
                .await?;
            answer.join(next);
        }
        if ask.level < self.params.depth {
            for child in &answer.children {
                let next = Ask {
                    endpoint: ask.endpoint,
                    period: ask.period,
                    root: child.clone(),
                    level: ask.level + 1,
                };
                if !self.asked.contains(&next.key()) {
                    self.asked.insert(next.key());
                    self.queue.push_back(next);
                }
            }
        }
        let data = serde_json::to_string(&answer.data).expect("a JSON value serialises");
        let sha = hex(&Sha256::digest(data.as_bytes()));
        let position = format!(
            "{} {} root {}",
            ask.endpoint.name(),
            ask.period.label(),
            ask.root
        );
        if self.seen.get(&ask.key()) == Some(&sha) {
            let mut page = self.page(None, position);
            page.unchanged = 1;
            return Ok(page);
        }
        self.seen.insert(ask.key(), sha.clone());
        let record = json!({
            "endpoint": ask.endpoint.name(),
            "period": ask.period.label(),
            "period_type": ask.period.kind(),
            "root_department_id": ask.root,
            "request": body,
            "data": answer.data,
            "content_sha256": sha,
            // To the microsecond: two runs a moment apart are two vintages, in order.
            "fetched_at": crate::time::now_local().format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
            "pages": pages.max(1),
        });
        Ok(self.page(Some(record), position))
    }

    /// A page of at most one record; the cursor keeps the answers of the keys still planned.
    fn page(&mut self, record: Option<Value>, position: String) -> Page {
        let last = self.queue.is_empty();
        if last {
            // Keys no longer asked for (a period past its revisits) leave the cursor.
            let asked = &self.asked;
            self.seen.retain(|k, _| asked.contains(k));
        }
        let text = match record {
            Some(r) => format!("[{r}]"),
            None => "[]".into(),
        };
        Page {
            records: Records::Json(JsonRecords::from_array(text).expect("an array")),
            position,
            after: After::Cursor(Some(json!({ "seen": self.seen }))),
            last,
            unchanged: 0,
        }
    }
}

/// The body the portal's page sends (§2.1, §2.2): `timeType`/`year`/`month` or `quarter`, or
/// for satisfaction the period's first and last days; the paging keys but for
/// `service-results`.
fn request_body(ask: &Ask) -> Value {
    let mut body = json!({ "rootDepartmentId": ask.root });
    if ask.endpoint == EvaluationEndpoint::HandlingSatisfaction {
        body["fromDate"] = json!(ask.period.first_day().format("%Y-%m-%d").to_string());
        body["toDate"] = json!(ask.period.last_day().format("%Y-%m-%d").to_string());
    } else {
        body["timeType"] = json!(ask.period.kind());
        match ask.period {
            Period::Month(y, m) => {
                body["year"] = json!(y);
                body["month"] = json!(m);
            }
            Period::Quarter(y, q) => {
                body["year"] = json!(y);
                body["quarter"] = json!(q);
            }
            Period::Year(y) => body["year"] = json!(y),
        }
    }
    if let Some(size) = ask.endpoint.page_size() {
        body["currentPage"] = json!(1);
        body["pageSize"] = json!(size);
    }
    body
}

/// One answer, checked.
#[derive(Debug)]
struct Answer {
    /// The envelope's `data`.
    data: Value,
    /// The units listed under the root.
    children: Vec<String>,
    /// `pagination.totalPages` (1 when absent).
    total_pages: u64,
}

impl Answer {
    /// Adds a later page's rows to this answer's.
    fn join(&mut self, next: Answer) {
        let extra = next
            .data
            .get("evaluation")
            .and_then(|e| e.as_array())
            .cloned()
            .unwrap_or_default();
        self.children.extend(next.children);
        if let Some(list) = self
            .data
            .get_mut("evaluation")
            .and_then(|e| e.as_array_mut())
        {
            list.extend(extra);
        }
    }
}

/// Checks an answer as §3 describes it: the envelope's code, the root (`overview` or `parent`)
/// naming the unit asked for, the rows (`evaluation` or `children`) each with a `departmentId`
/// not on an earlier page (`before`: a unit on two pages means the list moved while it was
/// read, and the page is asked for again).
fn decode(
    endpoint: EvaluationEndpoint,
    root: &str,
    before: &[String],
    bytes: Vec<u8>,
) -> Result<Answer, CallError> {
    let text = utf8(bytes)?;
    let head = text.trim_start();
    if head.starts_with('<') {
        let title = head
            .split_once("<title>")
            .and_then(|(_, t)| t.split_once("</title>"))
            .map(|(t, _)| t.trim().to_string())
            .unwrap_or_else(|| head.chars().take(80).collect());
        return Err(CallError::Refused(format!(
            "{} answered an HTML page ({title:?}), not JSON",
            endpoint.name()
        )));
    }
    let mut v: Value =
        serde_json::from_str(&text).map_err(|e| CallError::Decode(format!("not JSON: {e}")))?;
    let code = v.get("code").and_then(|c| c.as_str()).unwrap_or("");
    if code != "OK" {
        let message = v
            .get("message")
            .map(|m| m.as_str().map(str::to_string).unwrap_or(m.to_string()))
            .unwrap_or_default();
        return Err(CallError::Declined(format!(
            "{} answered code {code:?}: {message}",
            endpoint.name()
        )));
    }
    let data = match v.get_mut("data").map(Value::take) {
        Some(d @ Value::Object(_)) => d,
        _ => {
            return Err(CallError::Decode(format!(
                "{}: `data` is not an object",
                endpoint.name()
            )))
        }
    };
    let (root_field, rows_field) = if data.get("parent").is_some() {
        ("parent", "children")
    } else {
        ("overview", "evaluation")
    };
    let Some(top) = data.get(root_field).filter(|t| t.is_object()) else {
        return Err(CallError::Decode(format!(
            "{}: the answer has neither `overview` nor `parent`",
            endpoint.name()
        )));
    };
    if let Some(id) = top.get("departmentId").and_then(|i| i.as_str()) {
        if id != root {
            return Err(CallError::Decode(format!(
                "{}: the answer is for unit {id}, not {root}",
                endpoint.name()
            )));
        }
    } else if endpoint != EvaluationEndpoint::ServiceResults {
        return Err(CallError::Decode(format!(
            "{}: `{root_field}` has no departmentId",
            endpoint.name()
        )));
    }
    let Some(rows) = data.get(rows_field).and_then(|r| r.as_array()) else {
        return Err(CallError::Decode(format!(
            "{}: the answer has no `{rows_field}` array",
            endpoint.name()
        )));
    };
    let mut children = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        match row.get("departmentId").and_then(|d| d.as_str()) {
            Some(id) if before.iter().any(|b| b == id) => {
                return Err(CallError::Decode(format!(
                    "{}: unit {id} is on two pages of the answer",
                    endpoint.name()
                )))
            }
            Some(id) => children.push(id.to_string()),
            None => {
                return Err(CallError::Decode(format!(
                    "{}: `{rows_field}[{i}]` has no departmentId",
                    endpoint.name()
                )))
            }
        }
    }
    let total_pages = data
        .get("pagination")
        .and_then(|p| p.get("totalPages"))
        .and_then(|t| t.as_u64())
        .unwrap_or(1);
    Ok(Answer {
        data,
        children,
        total_pages,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path as UrlParam, State};
    use axum::http::{header, StatusCode};
    use axum::response::{IntoResponse, Response};
    use serde_json::{json, Value};

    use crate::config::{self, JobConfig, ProjectConfig};
    use crate::pull::{run_job, RunContext};

    const ROOT: &str = "019d2be3-6a88-732b-8b17-b68020c8553a";

    /// The job the tests run: the job file's shape, with the endpoints and depth of each test.
    fn job_text(endpoints: &[&str], depth: u8) -> String {
        let list: Vec<String> = endpoints.iter().map(|e| format!("{e:?}")).collect();
        format!(
            r#"description = "The portal's published evaluation"
schedule = "30 2 * * *"
source = "evaluation"
protocol = "evaluation"

[evaluation]
root_department_id = "{ROOT}"
endpoints = [{}]
depth = {depth}
periods = ["2026-08"]

[retry]
attempts = 3
initial_backoff_ms = 10

[dataset]
feed = "portal"
name = "evaluations"
key = ["endpoint", "period", "root_department_id", "fetched_at"]
timestamp_format = "%Y-%m-%dT%H:%M:%S%.f"
partition = {{ by = "fetched_at", grain = "month", name = "fetched_month" }}
columns = [
  {{ name = "endpoint", type = "string", required = true }},
  {{ name = "period", type = "string", required = true }},
  {{ name = "period_type", type = "string", required = true }},
  {{ name = "root_department_id", type = "string", required = true }},
  {{ name = "request", type = "json" }},
  {{ name = "data", type = "json", required = true }},
  {{ name = "content_sha256", type = "string", required = true }},
  {{ name = "fetched_at", type = "timestamp", required = true }},
  {{ name = "pages", type = "int" }},
]
"#,
            list.join(", ")
        )
    }

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/portal_evaluation")
                .join(name),
        )
        .unwrap()
    }

    type Log = Arc<Mutex<Vec<(String, Value)>>>;

    /// The recorded answers, by endpoint, page and root; a unit below the root gets an answer
    /// of its own family with no children. The trees answer 200, the rest 201, as captured.
    async fn answer(
        State(log): State<Log>,
        UrlParam(endpoint): UrlParam<String>,
        body: String,
    ) -> Response {
        let body: Value = serde_json::from_str(&body).unwrap();
        log.lock().unwrap().push((endpoint.clone(), body.clone()));
        let root = body["rootDepartmentId"].as_str().unwrap_or("").to_string();
        let page = body["currentPage"].as_u64().unwrap_or(1);
        let json = |status: StatusCode, text: String| {
            (
                status,
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                text,
            )
                .into_response()
        };
        let created = StatusCode::CREATED;
        match (endpoint.as_str(), root == ROOT) {
            ("dossier-digitized", _) => json(StatusCode::OK, fixture("error-envelope.json")),
            ("formality-online-payment-tree", _) => (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::CONTENT_TYPE, "text/plain")],
                "Too Many Requests".to_string(),
            )
                .into_response(),
            ("service-results", _) => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/html")],
                fixture("rejected.html"),
            )
                .into_response(),
            ("provide-online-tree", _) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html")],
                fixture("rejected.html"),
            )
                .into_response(),
            ("transparency", true) => json(
                created,
                fixture(&format!("transparency-month-page-{page}.json")),
            ),
            ("handling-satisfaction", true) => {
                json(created, fixture("handling-satisfaction-month.json"))
            }
            ("dvc-progress-tree", true) => {
                json(StatusCode::OK, fixture("dvc-progress-tree-month.json"))
            }
            ("dvc-progress-tree", false) => json(
                StatusCode::OK,
                json!({"code": "OK", "message": "OK", "data": {
                    "parent": {"departmentId": root, "totalReceived": 0, "totalOnTime": 0,
                               "ratio": 0, "totalScore": 0, "totalMaxScore": 20},
                    "children": []}})
                .to_string(),
            ),
            (_, false) => json(
                created,
                json!({"code": "OK", "message": "OK", "data": {
                    "overview": {"departmentId": root, "totalScore": null, "metrics": []},
                    "evaluation": [],
                    "pagination": {"total": 0, "currentPage": 1, "pageSize": 200, "totalPages": 1}}})
                .to_string(),
            ),
            _ => (StatusCode::NOT_FOUND, "no such answer").into_response(),
        }
    }

    struct Portal {
        url: String,
        log: Log,
        task: tokio::task::JoinHandle<()>,
    }

    async fn portal() -> Portal {
        let log: Log = Arc::default();
        let app = axum::Router::new()
            .route(
                "/api/v1/reporting/evaluation/{endpoint}",
                axum::routing::post(answer),
            )
            .with_state(log.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Portal { url, log, task }
    }

    fn job(url: &str, endpoints: &[&str], depth: u8) -> JobConfig {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut project = ProjectConfig::parse(
            &root.join("chiso.toml"),
            &std::fs::read_to_string(root.join("chiso.toml")).unwrap(),
            &|_| None,
        )
        .unwrap();
        project.retarget_sources(url, &config::Secret::new("unused"));
        config::parse_job(
            &root.join("jobs/portal_evaluation.toml"),
            &job_text(endpoints, depth),
            &project,
        )
        .unwrap()
    }

    fn context(warehouse: &std::path::Path) -> RunContext {
        RunContext {
            warehouse: warehouse.to_path_buf(),
            project_root: warehouse.to_path_buf(),
            http: crate::feeds::http::http_client(),
        }
    }

    /// The records landed: (endpoint, root, request, data, pages), by endpoint and root.
    fn landed(
        warehouse: &std::path::Path,
        job: &JobConfig,
    ) -> Vec<(String, String, Value, Value, i64)> {
        let glob = crate::lake::dataset_glob(warehouse, &job.dataset);
        let conn = duckdb::Connection::open_in_memory().unwrap();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT endpoint, root_department_id, request::VARCHAR, data::VARCHAR, pages
                 FROM read_parquet('{glob}', hive_partitioning = true) ORDER BY 1, 2"
            ))
            .unwrap();
        stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                serde_json::from_str(&r.get::<_, String>(2)?).unwrap(),
                serde_json::from_str(&r.get::<_, String>(3)?).unwrap(),
                r.get::<_, i64>(4)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    /// Recorded answers with the real shapes land one record each: the two pages of a
    /// paginated answer joined (and page 2 asked only because `totalPages` said so), a tree
    /// (no pagination) asked once, nulls and data-quality flags kept as they came, HTTP 200
    /// and 201 both taken; each child is asked as a root; an unchanged answer lands nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recorded_answers_land_one_record_each_with_pages_joined_and_nulls_kept() {
        let portal = portal().await;
        let dir = tempfile::tempdir().unwrap();
        let job = job(
            &portal.url,
            &["transparency", "handling-satisfaction", "dvc-progress-tree"],
            1,
        );
        let report = run_job(&context(dir.path()), &job).await.unwrap();
        assert_eq!(report.error, None);
        let calls = portal.log.lock().unwrap().clone();
        let to = |e: &str| -> Vec<Value> {
            calls
                .iter()
                .filter(|(x, _)| x == e)
                .map(|(_, b)| b.clone())
                .collect()
        };
        // transparency: root page 1 and 2, then its two children as roots.
        let t = to("transparency");
        assert_eq!(t.len(), 4, "{t:?}");
        assert_eq!(
            t[0],
            json!({"timeType": "month", "year": 2026, "month": 8, "rootDepartmentId": ROOT,
                   "currentPage": 1, "pageSize": 200})
        );
        assert_eq!(t[1]["currentPage"], 2);
        // satisfaction: the month's first and last days, no timeType.
        let s = to("handling-satisfaction");
        assert_eq!(
            s[0],
            json!({"fromDate": "2026-08-01", "toDate": "2026-08-31", "rootDepartmentId": ROOT,
                   "currentPage": 1, "pageSize": 200})
        );
        assert_eq!(s.len(), 2, "the root and its one child");
        // the tree: no pagination, so no page 2; pageSize 100 as the portal's page sends.
        let d = to("dvc-progress-tree");
        assert_eq!(d.len(), 3, "the root and its two children: {d:?}");
        assert!(d
            .iter()
            .all(|b| b["currentPage"] == 1 && b["pageSize"] == 100));

        let rows = landed(dir.path(), &job);
        assert_eq!(rows.len(), 3 + 2 + 3, "one record per answer: {rows:?}");
        let root_t = rows
            .iter()
            .find(|r| r.0 == "transparency" && r.1 == ROOT)
            .unwrap();
        assert_eq!(root_t.4, 2, "two pages");
        assert_eq!(root_t.2["month"], 8);
        let evaluation = root_t.3["evaluation"].as_array().unwrap();
        assert_eq!(evaluation.len(), 2, "the rows of both pages");
        let metric = |row: &Value, code: &str| -> Value {
            row["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["code"] == code)
                .unwrap()
                .clone()
        };
        let publish = metric(&root_t.3["overview"], "PUBLISH_ON_TIME");
        assert!(publish["ratio"].is_null() && publish["score"].is_null());
        assert_eq!(publish["maxScore"], 6);
        assert_eq!(
            metric(&evaluation[0], "DOSSIER_SYNC")["dataQualityStatus"],
            "NO_NATIONAL_REPORT_DATA"
        );
        let tree = rows
            .iter()
            .find(|r| r.0 == "dvc-progress-tree" && r.1 == ROOT)
            .unwrap();
        assert_eq!(tree.3["children"][1]["totalOnTime"], 486);
        assert!(tree.3["children"][0]["scoreDelta"].is_null());

        // Again: the portal shows the same, so nothing lands.
        let again = run_job(&context(dir.path()), &job).await.unwrap();
        assert_eq!(again.error, None);
        assert_eq!(landed(dir.path(), &job).len(), rows.len());
        portal.task.abort();
    }

    /// An envelope whose code is not OK, a firewall's HTML page (with 200 or an error status)
    /// and HTTP 429 are errors naming the endpoint, asked once (not retried), and the run
    /// reports them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refusal_names_the_endpoint_and_is_not_retried() {
        for (endpoint, said) in [
            ("dossier-digitized", "INTERNAL_SERVER_ERROR"),
            ("provide-online-tree", "Request Rejected"),
            ("formality-online-payment-tree", "HTTP 429"),
            ("service-results", "HTTP 503"),
        ] {
            let portal = portal().await;
            let dir = tempfile::tempdir().unwrap();
            let job = job(&portal.url, &[endpoint], 1);
            let report = run_job(&context(dir.path()), &job).await.unwrap();
            let error = report.error.expect("the run failed");
            assert!(error.contains(endpoint), "{error}");
            assert!(error.contains(said), "{error}");
            assert!(error.contains("after 1 attempt"), "{error}");
            assert_eq!(portal.log.lock().unwrap().len(), 1, "asked once");
            portal.task.abort();
        }
    }

    /// A call the portal declines (its envelope's code is not OK) does not keep the other
    /// endpoints from landing; the run then reports it. A refusal (the firewall) stops the run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_declined_call_leaves_the_others_and_a_refusal_stops_the_run() {
        let portal = portal().await;
        let dir = tempfile::tempdir().unwrap();
        let job = job(&portal.url, &["dossier-digitized", "transparency"], 0);
        let report = run_job(&context(dir.path()), &job).await.unwrap();
        let error = report.error.expect("the declined call is reported");
        assert!(error.contains("dossier-digitized"), "{error}");
        let rows = landed(dir.path(), &job);
        assert_eq!(rows.len(), 1, "transparency landed: {rows:?}");
        assert_eq!(rows[0].0, "transparency");
        portal.task.abort();

        let portal = super::tests::portal().await;
        let dir = tempfile::tempdir().unwrap();
        let refused = self::job(&portal.url, &["provide-online-tree", "transparency"], 0);
        let report = run_job(&context(dir.path()), &refused).await.unwrap();
        assert!(report.error.unwrap().contains("Request Rejected"));
        let calls: Vec<String> = portal
            .log
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.0.clone())
            .collect();
        assert_eq!(
            calls,
            ["provide-online-tree"],
            "nothing asked after a refusal"
        );
        portal.task.abort();
    }

    #[test]
    fn the_plan_asks_for_current_periods_and_closed_ones_for_a_while() {
        let job = job("http://127.0.0.1:1", &["transparency"], 0);
        let crate::config::Protocol::Evaluation(mut p) = job.protocol else {
            panic!("an evaluation job")
        };
        p.periods = None;
        let day = chrono::NaiveDate::from_ymd_opt(2026, 10, 20).unwrap();
        let labels: Vec<String> = super::plan(&p, day).iter().map(|x| x.label()).collect();
        // September and Q3 ended 20 days ago, August 51; July 82 (> 60) and 2025 long ago.
        assert_eq!(
            labels,
            ["2026-10", "2026-09", "2026-08", "2026-Q4", "2026-Q3", "2026"]
        );
    }
}
