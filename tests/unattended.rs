//! The daemon left alone (issue 23): a slow feed fills no unbounded queue, the status is
//! collected once a second however many ask, `/health` says 503 while the daemon stops, and a
//! pull blocked in I/O past its timeout is reported stuck rather than shown running for ever.
//! The simulator runs on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use chiso::config::{CronExpr, HumanDuration, JobConfig, Jobs, Overlap, ProjectConfig};
use chiso::schedule::{FireEvent, FireHow, FireRecord, History};
use chiso::serve::{Notice, ServeOptions};
use chiso::sim::faults::Faults;
use common::*;

/// One pull job of the repository's, every second, and nothing else.
fn one_job(base_url: &str, name: &str) -> (ProjectConfig, Jobs, JobConfig) {
    let project = project_at(base_url);
    let all = chiso::config::load_all_jobs(&repo().join("jobs"), &project).unwrap();
    let mut job = all
        .pulls
        .into_iter()
        .find(|j| j.name == name)
        .unwrap_or_else(|| panic!("jobs/{name}.toml"));
    job.schedule = CronExpr("* * * * * *".into());
    job.run.misfire_after = HumanDuration(Duration::from_secs(3));
    job.run.retries = 0;
    let jobs = Jobs {
        pulls: vec![job.clone()],
        builds: Vec::new(),
        publishes: Vec::new(),
        reconciles: Vec::new(),
    };
    (project, jobs, job)
}

/// The daemon started in the background: its address, the way to stop it, and its end.
struct Running {
    http: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<anyhow::Result<chiso::serve::ServeSummary>>,
}

async fn start(opts: ServeOptions) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let done = tokio::spawn(chiso::serve::serve(
        opts,
        async move {
            let _ = stopped.await;
        },
        Some(tx),
    ));
    let http = match rx.recv().await.unwrap() {
        Notice::Started { http } => http.unwrap(),
        other => panic!("first notice {other:?}"),
    };
    // Keep draining notices so the channel never fills.
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    Running { http, stop, done }
}

/// The value of a counter in Prometheus text, summed over the lines whose labels contain all
/// of `labels`.
fn counter(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(client: &reqwest::Client, http: std::net::SocketAddr) -> String {
    client
        .get(format!("http://{http}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A feed that answers after three seconds, a job firing every second with `overlap =
/// "queue"` and `max_queued = 2`: at most two fires wait, the others are recorded skipped and
/// counted (before: the queue grew by one a second for as long as the feed was slow). Forty
/// `/status` requests at once cost at most a collection or two, not forty, and each is
/// answered (200, or 503 "busy" past the sixteen served at once). While the daemon stops,
/// `/health` answers 503 "stopping" (before: the server closed at once, and a probe got a
/// refused connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_feed_fills_a_bounded_queue_and_the_status_is_collected_once_a_second() {
    let sim = start_sim(
        small_world(23, 20.0),
        Faults {
            slow_rate: 1.0,
            slow_ms: 3000,
            ..Faults::none()
        },
    )
    .await;
    let (project, mut jobs, _) = one_job(&sim.base_url(), "dossiers");
    let job = &mut jobs.pulls[0];
    job.run.overlap = Overlap::Queue;
    job.run.max_queued = 2;
    job.run.timeout = HumanDuration(Duration::from_secs(120));
    let wh = tempfile::tempdir().unwrap();
    let d = start(serve_options(wh.path(), &project, &jobs, 3)).await;
    let client = reqwest::Client::new();
    tokio::time::sleep(Duration::from_secs(7)).await;

    let before = counter(
        &metrics(&client, d.http).await,
        "chiso_status_collections_total",
        &[],
    );
    let asks = (0..40).map(|_| {
        let (c, url) = (client.clone(), format!("http://{}/status", d.http));
        tokio::spawn(async move { c.get(url).send().await.unwrap().status().as_u16() })
    });
    let mut answers = Vec::new();
    for a in asks {
        answers.push(a.await.unwrap());
    }
    let after = counter(
        &metrics(&client, d.http).await,
        "chiso_status_collections_total",
        &[],
    );
    assert!(
        answers.iter().all(|s| *s == 200 || *s == 503),
        "{answers:?}"
    );
    assert!(
        answers.iter().filter(|s| **s == 200).count() >= 16,
        "{answers:?}"
    );
    // The /metrics scrape after them may collect once more; another test's daemon in this
    // process may collect too.
    assert!(
        after - before <= 4.0,
        "{} collections for 40 requests and a scrape",
        after - before
    );
    let text = metrics(&client, d.http).await;
    let skipped = counter(
        &text,
        "chiso_fires_total",
        &["job=\"dossiers\"", "event=\"skipped_overlap\""],
    );
    assert!(skipped >= 1.0, "no skipped fire counted:\n{text}");

    let _ = d.stop.send(());
    // The running pull has the grace (3 s); meanwhile the daemon answers, and says 503.
    let mut health = None;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(2) {
        if let Ok(r) = client.get(format!("http://{}/health", d.http)).send().await {
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            if status == 503 {
                health = Some(body);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = health.expect("/health never answered 503 while the daemon stopped");
    assert!(health.contains("stopping"), "{health}");
    d.done.await.unwrap().unwrap();

    let records = History::new(wh.path(), "dossiers").tail().unwrap();
    let queued = |r: &&FireRecord| r.event == FireEvent::Claimed && r.how == Some(FireHow::Queued);
    let full: Vec<&FireRecord> = records
        .iter()
        .filter(|r| {
            r.event == FireEvent::SkippedOverlap
                && r.error.as_deref().is_some_and(|e| e.contains("max_queued"))
        })
        .collect();
    assert!(!full.is_empty(), "no fire skipped for a full queue");
    // The queue never held more than two: a queued claim waits until its planned time is
    // claimed to run (or closed at the stop).
    let mut waiting = std::collections::BTreeSet::new();
    let mut most = 0usize;
    for r in &records {
        if queued(&r) {
            waiting.insert(r.planned.clone());
        } else {
            waiting.remove(&r.planned);
        }
        most = most.max(waiting.len());
    }
    assert!(most <= 2, "{most} fires waited at once: {records:#?}");
    sim.stop().await;
}

/// A pull whose state write blocks in the kernel, as on a hung disk or mount: the run marker's
/// temporary file is a FIFO nobody reads, so `open` blocks inside the runtime's blocking
/// section, where no abort reaches. At its timeout (2 s) the run is stopped, and 5 s later,
/// still blocked, abandoned: the fire ends `stuck`, counted, and the job's next fire finds its
/// lock held, `busy` (before: the daemon waited on it for ever, the fire stayed `claimed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_blocked_in_io_past_its_timeout_is_reported_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let wh = dir.path().join("warehouse");
    let state = wh.join("_state/dossiers");
    std::fs::create_dir_all(&state).unwrap();
    let fifo = state.join("running.json.tmp");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // However the test ends, the blocked open is let go (a reader opens the FIFO without
    // waiting), or the runtime would wait for it for ever.
    let _release = Release(fifo.clone());
    // The feed is never reached: the run blocks before its first call.
    let (project, mut jobs, _) = one_job("http://127.0.0.1:9", "dossiers");
    let job = &mut jobs.pulls[0];
    job.run.timeout = HumanDuration(Duration::from_secs(2));
    job.run.overlap = Overlap::Skip;
    let d = start(serve_options(&wh, &project, &jobs, 1)).await;
    let history = History::new(&wh, "dossiers");
    let t0 = Instant::now();
    let stuck = loop {
        let records = history.tail().unwrap();
        if let Some(r) = records.iter().find(|r| {
            r.event == FireEvent::Finished && r.outcome == Some(chiso::schedule::FireOutcome::Stuck)
        }) {
            break r.clone();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no stuck fire after 20 s: {records:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        stuck.error.as_deref().unwrap_or("").contains("blocked"),
        "{stuck:?}"
    );
    // The next fire finds the stuck run's lock: busy, and it ends (it does not wait either).
    let t1 = Instant::now();
    loop {
        let records = history.tail().unwrap();
        if records.iter().any(|r| {
            r.event == FireEvent::Finished && r.outcome == Some(chiso::schedule::FireOutcome::Busy)
        }) {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(10),
            "no busy fire after the stuck one: {records:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let text = metrics(&reqwest::Client::new(), d.http).await;
    assert!(
        counter(&text, "chiso_runs_stuck_total", &["job=\"dossiers\""]) >= 1.0,
        "{text}"
    );
    // The status names it as an open failure while it holds the job.
    let status: serde_json::Value = reqwest::get(format!("http://{}/status", d.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let failures = status["failures"].as_array().unwrap();
    assert!(
        failures.iter().any(|f| f["what"] == "job dossiers"
            && f["error"].as_str().unwrap_or("").contains("blocked")),
        "{failures:?}"
    );
    let _ = d.stop.send(());
    d.done.await.unwrap().unwrap();
}

/// Opens a FIFO for reading without waiting when dropped, which lets a writer blocked in
/// `open` go on.
struct Release(std::path::PathBuf);

impl Drop for Release {
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        const O_NONBLOCK: i32 = 0o4000;
        let _ = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(O_NONBLOCK)
            .open(&self.0);
    }
}

/// A test of a job's fire history.
type Seen = Box<dyn Fn(&[FireRecord]) -> bool>;

/// Schedules managed while the daemon runs: `trigger` runs a job now (recorded `triggered`),
/// `pause` stops its fires (kept in the status), an edited job file is picked up within
/// seconds (a `changed` line says so), `resume` fires it again on the new schedule, and an
/// edit with an error keeps the old schedule, the error said by `reload` and by the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_paused_resumed_triggered_and_rescheduled_on_a_running_daemon() {
    use chiso::serve::control::{self, JobFiles, Op, Request};
    let sim = start_sim(small_world(29, 5.0), Faults::none()).await;
    let project = project_at(&sim.base_url());
    let dir = tempfile::tempdir().unwrap();
    let jobs_dir = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs_dir).unwrap();
    let original = std::fs::read_to_string(repo().join("jobs/units.toml")).unwrap();
    let with_schedule =
        |s: &str| original.replace("schedule = \"0 1 * * *\"", &format!("schedule = \"{s}\""));
    assert_ne!(
        with_schedule("x"),
        original,
        "jobs/units.toml's schedule line"
    );
    let file = jobs_dir.join("units.toml");
    // Once a year: it fires only when told to.
    std::fs::write(&file, with_schedule("0 0 1 1 *")).unwrap();
    // A build after pulls that land rows, which the test pauses first.
    std::fs::write(
        jobs_dir.join("build.toml"),
        "kind = \"build\"\nafter_pulls = true\nquiet_period = \"1s\"\nmax_delay = \"2s\"\n",
    )
    .unwrap();
    let load = {
        let (project, dir) = (project.clone(), jobs_dir.clone());
        move || chiso::config::load_all_jobs(&dir, &project).map_err(|e| e.to_string())
    };
    let jobs = load().unwrap();
    let wh = dir.path().join("warehouse");
    let mut opts = serve_options(&wh, &project, &jobs, 5);
    opts.job_files = Some(JobFiles {
        dir: jobs_dir.clone(),
        load: std::sync::Arc::new(load),
    });
    let d = start(opts).await;
    let history = History::new(&wh, "units");
    let ask = |op: Op, job: Option<&str>| {
        let wh = wh.clone();
        let req = Request {
            op,
            job: job.map(str::to_string),
            by: "tester".into(),
        };
        async move { control::send(&wh, &req).await.unwrap() }
    };
    let wait_for = |what: &'static str, pred: Seen| {
        let history = history.clone();
        async move {
            let t0 = Instant::now();
            loop {
                let records = history.tail().unwrap();
                if pred(&records) {
                    return records;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(15),
                    "{what} not seen in 15 s: {records:#?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    let r = ask(Op::Pause, Some("build")).await;
    assert!(r.ok, "{r:?}");
    let r = ask(Op::Trigger, Some("nope")).await;
    assert!(!r.ok && r.message.contains("units"), "{r:?}");
    let r = ask(Op::Trigger, Some("units")).await;
    assert!(r.ok, "{r:?}");
    wait_for(
        "the triggered run",
        Box::new(|rs| {
            rs.iter().any(|r| {
                r.event == FireEvent::Finished
                    && r.how == Some(FireHow::Triggered)
                    && r.outcome == Some(chiso::schedule::FireOutcome::Ok)
            })
        }),
    )
    .await;

    // The run landed rows and asked for a build, which waits for the resume without waking
    // the loop (before: its debounce deadline, already past, woke the loop at once, again and
    // again: a core spinning for as long as the build stayed paused).
    let cpu = cpu_seconds();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = cpu_seconds() - cpu;
    assert!(spent < 0.6, "{spent:.2} s of CPU in 2 s while idle");

    let r = ask(Op::Pause, Some("units")).await;
    assert!(r.ok, "{r:?}");
    let status = chiso::status::collect_report(&wh, &jobs).unwrap();
    assert_eq!(
        status.paused,
        vec!["build".to_string(), "units".to_string()]
    );
    // Every second now: picked up from the file, but paused.
    std::fs::write(&file, with_schedule("* * * * * *")).unwrap();
    let records = wait_for(
        "the reschedule",
        Box::new(|rs| {
            rs.iter().any(|r| {
                r.event == FireEvent::Changed
                    && r.note
                        .as_deref()
                        .is_some_and(|n| n.contains("rescheduled 0 0 1 1 * -> * * * * * *"))
            })
        }),
    )
    .await;
    let changed_at = records.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let records = history.tail().unwrap();
    assert!(
        records[changed_at..]
            .iter()
            .all(|r| r.event != FireEvent::Claimed),
        "a paused job fired: {:#?}",
        &records[changed_at..]
    );

    let r = ask(Op::Resume, Some("units")).await;
    assert!(r.ok, "{r:?}");
    let resumed_at = history.tail().unwrap().len();
    let records = wait_for(
        "fires after the resume",
        Box::new(move |rs| {
            rs.len() > resumed_at
                && rs[resumed_at..]
                    .iter()
                    .filter(|r| r.event == FireEvent::Claimed && r.how == Some(FireHow::OnTime))
                    .count()
                    >= 2
        }),
    )
    .await;
    assert!(records
        .iter()
        .any(|r| r.event == FireEvent::Changed && r.note.as_deref() == Some("resumed by tester")));

    // A broken edit: the old schedule (every second) goes on, and the error is said.
    std::fs::write(&file, with_schedule("every second please")).unwrap();
    let r = ask(Op::Reload, None).await;
    assert!(!r.ok && r.message.contains("units.toml"), "{r:?}");
    let broken_at = history.tail().unwrap().len();
    wait_for(
        "fires on the old schedule after the broken edit",
        Box::new(move |rs| {
            rs.len() > broken_at
                && rs[broken_at..]
                    .iter()
                    .filter(|r| r.event == FireEvent::Claimed)
                    .count()
                    >= 2
        }),
    )
    .await;
    let status = chiso::status::collect_report(&wh, &jobs).unwrap();
    assert_eq!(status.paused, vec!["build".to_string()]);
    assert!(
        History::new(&wh, "build")
            .tail()
            .unwrap()
            .iter()
            .all(|r| r.event == FireEvent::Changed),
        "a paused build ran"
    );
    let changes = status.job_changes.expect("pending changes");
    assert_eq!(changes.files, vec!["units.toml".to_string()]);
    assert!(
        changes
            .error
            .as_deref()
            .unwrap_or("")
            .contains("units.toml"),
        "{changes:?}"
    );
    // The file removed: the job fires no more, and its history says so.
    std::fs::remove_file(&file).unwrap();
    let r = ask(Op::Reload, None).await;
    assert!(r.ok && r.message.contains("units removed"), "{r:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let removed_at = history.tail().unwrap().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let records = history.tail().unwrap();
    assert!(
        records[removed_at..]
            .iter()
            .all(|r| r.event != FireEvent::Claimed),
        "a removed job fired: {:#?}",
        &records[removed_at..]
    );
    assert!(records
        .iter()
        .any(|r| r.event == FireEvent::Changed && r.note.as_deref() == Some("removed by tester")));
    let _ = d.stop.send(());
    d.done.await.unwrap().unwrap();
    sim.stop().await;
}

/// CPU seconds this process has used (user and system), from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime), counted from the state (field 3).
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}
