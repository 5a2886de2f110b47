//! `chiso bench soak --minutes N`: the daemon left running on the simulator with per-second
//! schedules, through faults and kills, then checked for what it lost and what it grew.
//!
//! - **The world**: the simulator in this process on 127.0.0.1, its clock running (ten
//!   simulated minutes a second by default), dossiers changing and syncing late.
//! - **The daemon**: `chiso serve` as a child process on a copy of the project whose pulls
//!   fire every 2 s (snapshots every 5 s), whose build follows them, and whose final publish
//!   job publishes `--period` every 20 s to the simulator's three portals (a portal refuses a
//!   fifth of the pushes and answers after 300 ms, so kills land inside pushes).
//! - **Faults**, each minute: a burst of 5xx answers (half of every call, 15 s), slow answers
//!   (3 s on two calls in five, 15 s); every ten minutes every feed is down for two minutes.
//! - **Kills**: SIGKILL every `--kill-every` (± a fifth), the daemon restarted at once. A
//!   publisher also publishes `--period` by hand (`chiso publish --accept`) at a third and
//!   two thirds of the run, as a person would when the guard holds the job's (again every
//!   3 s while it is held because pulls landed after the build it would read).
//! - **Measured** every 5 s from `/proc/<pid>`: the daemon's resident memory and open files.
//!
//! At the end the faults stop, the simulator's clock stops, the daemon runs 30 s more and gets
//! SIGTERM, every pull job runs once more (what the cursors have not reached), and then: the
//! files every cursor feed's commit log names hold exactly the simulator's record versions;
//! every portal stored each final revision once; every final revision in the ledger is
//! acknowledged by every portal.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};

use crate::sim::faults::Faults;
use crate::sim::server::{self, SimState};
use crate::sim::{SimConfig, SimFeed, World};

/// Options of `chiso bench soak`.
pub struct Soak {
    /// Work folder: `project/` and `warehouse/`; emptied first.
    pub dir: PathBuf,
    /// The project folder to copy (`chiso.toml`, `jobs/`, `sql/`).
    pub project: PathBuf,
    /// The `chiso` executable the daemon runs as.
    pub exe: PathBuf,
    pub minutes: f64,
    pub kill_every: Duration,
    pub seed: u64,
    /// Dossiers on an ordinary working day.
    pub per_day: f64,
    /// Simulated seconds per second.
    pub speed: f64,
    /// The final period the publish job publishes.
    pub period: String,
}

/// One daemon process, from its start to its kill (or the final SIGTERM).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Lifetime {
    pub pid: u32,
    pub seconds: f64,
    /// Resident memory and open files 60 s after its start (when it lived that long), and at
    /// its last sample.
    pub rss_kb_at_60s: Option<u64>,
    pub fds_at_60s: Option<u64>,
    pub rss_kb_last: u64,
    pub fds_last: u64,
    pub rss_kb_max: u64,
    pub fds_max: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FeedCheck {
    pub feed: String,
    /// Record versions the simulator served by the end, and those the lake holds.
    pub simulator: usize,
    pub lake: usize,
    pub missing: usize,
    pub extra: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SoakReport {
    pub minutes: f64,
    pub kills: usize,
    pub lifetimes: Vec<Lifetime>,
    /// What the faults did, as `(second, what)`.
    pub faults: Vec<(u64, String)>,
    pub feeds: Vec<FeedCheck>,
    /// `portal period revision` stored, and how many times each was stored (1 is right).
    pub stored: BTreeMap<String, usize>,
    /// Sends answered as duplicates (a push resent after a kill or a lost answer).
    pub duplicates: u32,
    /// Final revisions in the ledger with a receipt not acknowledged at the end.
    pub unacknowledged: Vec<String>,
    /// The hand publications' exit statuses.
    pub hand_publications: Vec<i32>,
    /// The last SIGTERM's exit status and how long it took.
    pub stop_status: i32,
    pub stop_seconds: f64,
}

impl SoakReport {
    /// Nothing lost, nothing stored twice, everything acknowledged, a clean stop.
    pub fn ok(&self) -> bool {
        self.feeds.iter().all(|f| f.missing == 0 && f.extra == 0)
            && !self.stored.is_empty()
            && self.stored.values().all(|&n| n == 1)
            && self.unacknowledged.is_empty()
            && self.stop_status == 0
    }
}

/// The environment variables of `chiso.toml`'s source secrets and URLs, for running the
/// binary against the simulator.
pub const TOKEN_VARS: [&str; 7] = [
    "CHISO_PORTAL_TOKEN",
    "CHISO_PAYMENTS_TOKEN",
    "CHISO_REPORTING_PASSWORD",
    "CHISO_CATALOGUE_TOKEN",
    "CHISO_REGISTRY_TOKEN",
    "CHISO_CALENDAR_TOKEN",
    "CHISO_NATIONAL_REPORT_TOKEN",
];
pub const URL_VARS: [&str; 8] = [
    "CHISO_EVALUATION_URL",
    "CHISO_PORTAL_URL",
    "CHISO_PAYMENTS_URL",
    "CHISO_REPORTING_URL",
    "CHISO_CATALOGUE_URL",
    "CHISO_REGISTRY_URL",
    "CHISO_CALENDAR_URL",
    "CHISO_NATIONAL_REPORT_URL",
];

/// The project with second-level schedules, small pages, frequent commits, a build that
/// follows the pulls quickly and a final publish job every 20 s.
fn write_project(from: &Path, to: &Path, period: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(to.join("jobs"))?;
    std::fs::copy(from.join("chiso.toml"), to.join("chiso.toml"))
        .with_context(|| format!("copying {}", from.join("chiso.toml").display()))?;
    std::os::unix::fs::symlink(from.join("sql"), to.join("sql"))?;
    for e in std::fs::read_dir(from.join("jobs"))? {
        let path = e?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let mut text = std::fs::read_to_string(&path)?;
        let schedule = text
            .lines()
            .find(|l| l.starts_with("schedule = "))
            .map(str::to_string);
        if text.contains("kind = \"reconcile\"") {
            // Not what the soak measures (it reads the published file on its own schedule).
            continue;
        }
        if text.contains("kind = \"publish\"") {
            if text.contains("provisional = true") {
                continue;
            }
            let period_line = text
                .lines()
                .find(|l| l.starts_with("period = "))
                .map(str::to_string)
                .context("the final publish job has no period")?;
            text = text.replace(&period_line, &format!("period = \"{period}\""));
            if let Some(s) = &schedule {
                text = text.replace(s, "schedule = \"*/20 * * * * *\"");
            }
            text = text.replace("retry_every = \"1h\"", "retry_every = \"10s\"");
        } else if text.contains("kind = \"build\"") {
            text = text
                .replace("quiet_period = \"3s\"", "quiet_period = \"1s\"")
                .replace("max_delay = \"30s\"", "max_delay = \"5s\"");
        } else if let Some(s) = &schedule {
            let every = if text.contains("protocol = \"evaluation\"") {
                // The portal's evaluation changes once a simulated day.
                59
            } else if text.contains("protocol = \"snapshot\"") {
                5
            } else {
                2
            };
            text = text
                .replace(s, &format!("schedule = \"*/{every} * * * * *\""))
                .replace("page_size = 1000", "page_size = 150")
                .replace("page_size = 2000", "page_size = 150")
                .replace("commit_every_rows = 100000", "commit_every_rows = 600");
        }
        std::fs::write(to.join("jobs").join(name), text)?;
    }
    Ok(())
}

struct Env {
    exe: PathBuf,
    project: PathBuf,
    warehouse: PathBuf,
    url: String,
    token: String,
}

impl Env {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("--config")
            .arg(self.project.join("chiso.toml"))
            .arg("--dir")
            .arg(&self.warehouse)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for v in URL_VARS {
            c.env(v, &self.url);
        }
        for v in TOKEN_VARS {
            c.env(v, &self.token);
        }
        for t in ["DVCQG", "MOF", "GDT"] {
            c.env(
                format!("CHISO_PUBLISH_{t}_URL"),
                format!("{}/publications/{}", self.url, t.to_lowercase()),
            );
            c.env(format!("CHISO_PUBLISH_{t}_TOKEN"), &self.token);
        }
        c
    }

    fn serve(&self) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.warehouse.with_file_name("serve.log"))?;
        self.command(&["serve"])
            .stderr(log)
            .spawn()
            .context("starting chiso serve")
    }
}

/// Resident memory (kB) and open files of process `pid`.
fn proc_sample(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss, fds))
}

/// What the faults are `t` seconds into the run, and what to call them.
fn faults_at(t: u64) -> (Faults, &'static str) {
    let portal = Faults {
        publish_error_rate: 0.2,
        publish_delay_ms: 300,
        ..Faults::none()
    };
    let (minute, second) = (t / 60, t % 60);
    if minute % 10 == 4 || minute % 10 == 5 {
        return (
            Faults {
                error_rate: 1.0,
                ..portal
            },
            "every feed down",
        );
    }
    match second {
        10..25 => (
            Faults {
                error_rate: 0.5,
                ..portal
            },
            "5xx burst",
        ),
        35..50 => (
            Faults {
                slow_rate: 0.4,
                slow_ms: 3_000,
                ..portal
            },
            "slow answers",
        ),
        _ => (portal, "normal"),
    }
}

pub async fn run(opts: Soak) -> anyhow::Result<SoakReport> {
    if opts.dir.exists() {
        std::fs::remove_dir_all(&opts.dir)
            .with_context(|| format!("emptying {}", opts.dir.display()))?;
    }
    let project = opts.dir.join("project");
    write_project(&opts.project, &project, &opts.period)?;
    let warehouse = opts.dir.join("warehouse");
    std::fs::create_dir_all(&warehouse)?;
    let total = Duration::from_secs_f64(opts.minutes * 60.0);
    let cfg = SimConfig {
        seed: opts.seed,
        per_day: opts.per_day,
        petition_ratio: 0.02,
        from: chrono::NaiveDate::from_ymd_opt(2026, 6, 1).expect("date"),
        // August has passed its grace: final, and still revised by late syncs.
        now: chrono::NaiveDate::from_ymd_opt(2026, 9, 12)
            .and_then(|d| d.and_hms_opt(10, 0, 0))
            .expect("date"),
        speed: opts.speed,
        // Enough simulated days ahead for the run, and a margin.
        horizon_days: ((total.as_secs_f64() * opts.speed / 86_400.0).ceil() as i64 + 2).max(3),
    };
    let token = uuid::Uuid::new_v4().simple().to_string();
    let world = tokio::task::spawn_blocking(move || World::build(cfg))
        .await
        .context("building the simulated world")?;
    let (first, _) = faults_at(0);
    let sim = server::start(SimState::new(world, first, Some(token.clone())), 0)
        .await
        .context("starting the simulator on 127.0.0.1")?;
    let env = Env {
        exe: opts.exe.clone(),
        project: project.clone(),
        warehouse: warehouse.clone(),
        url: sim.base_url(),
        token,
    };

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let t0 = Instant::now();
    let mut child = env.serve()?;
    let mut born = Instant::now();
    let mut lifetimes: Vec<Lifetime> = Vec::new();
    let mut samples: Vec<(f64, u64, u64)> = Vec::new();
    let mut fault_log: Vec<(u64, String)> = Vec::new();
    let mut last_fault = "";
    let kill_every = opts.kill_every.as_secs_f64();
    let mut next_kill = kill_every * rng.random_range(0.8..1.2);
    let mut hand: Vec<i32> = Vec::new();
    let mut hand_tries = 0;
    let mut next_hand = [total.as_secs_f64() / 3.0, 2.0 * total.as_secs_f64() / 3.0];
    let mut next_sample = 0.0;
    let bar = indicatif::ProgressBar::new(total.as_secs());
    bar.set_style(
        indicatif::ProgressStyle::with_template("soak [{bar:40}] {pos}/{len} s {msg}")
            .expect("template"),
    );
    let close = |pid: u32, seconds: f64, samples: &[(f64, u64, u64)]| Lifetime {
        pid,
        seconds,
        rss_kb_at_60s: samples.iter().find(|s| s.0 >= 60.0).map(|s| s.1),
        fds_at_60s: samples.iter().find(|s| s.0 >= 60.0).map(|s| s.2),
        rss_kb_last: samples.last().map_or(0, |s| s.1),
        fds_last: samples.last().map_or(0, |s| s.2),
        rss_kb_max: samples.iter().map(|s| s.1).max().unwrap_or(0),
        fds_max: samples.iter().map(|s| s.2).max().unwrap_or(0),
    };
    while t0.elapsed() < total {
        let t = t0.elapsed().as_secs_f64();
        let (faults, what) = faults_at(t as u64);
        if what != last_fault {
            *sim.state.faults.write().expect("faults lock") = faults;
            fault_log.push((t as u64, what.to_string()));
            last_fault = what;
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the daemon exited by itself ({status}) after {t:.0} s: see {}",
                warehouse.with_file_name("serve.log").display()
            );
        }
        let age = born.elapsed().as_secs_f64();
        if age >= next_sample {
            if let Some((rss, fds)) = proc_sample(child.id()) {
                samples.push((age, rss, fds));
            }
            next_sample = age + 5.0;
        }
        if age >= next_kill {
            child.kill()?; // SIGKILL
            child.wait()?;
            lifetimes.push(close(child.id(), age, &samples));
            samples.clear();
            next_sample = 0.0;
            child = env.serve()?;
            born = Instant::now();
            next_kill = kill_every * rng.random_range(0.8..1.2);
        }
        if let Some(i) = next_hand.iter().position(|&h| t >= h) {
            // Held while pulls keep landing after the build it would read: tried again in
            // 3 s, as a publisher would, up to 20 times (the daemon is killed meanwhile too).
            let st = env
                .command(&[
                    "publish",
                    &opts.period,
                    "--accept",
                    "chiso bench soak: a publisher's hand publication",
                ])
                .status()?;
            let code = st.code().unwrap_or(-1);
            hand_tries += 1;
            if code != 4 || hand_tries >= 20 {
                hand.push(code);
                next_hand[i] = f64::INFINITY;
                hand_tries = 0;
            } else {
                next_hand[i] = t + 3.0;
            }
        }
        bar.set_position(t as u64);
        bar.set_message(format!("{} kills, {what}", lifetimes.len()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bar.finish_and_clear();
    let kills = lifetimes.len();

    // The end: no faults, the clock stopped, the daemon 30 s more, then SIGTERM.
    *sim.state.faults.write().expect("faults lock") = Faults::none();
    fault_log.push((t0.elapsed().as_secs(), "none; the clock stopped".into()));
    let now = sim.state.clock.freeze();
    tokio::time::sleep(Duration::from_secs(30)).await;
    if let Some((rss, fds)) = proc_sample(child.id()) {
        samples.push((born.elapsed().as_secs_f64(), rss, fds));
    }
    let stop = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .context("sending SIGTERM to the daemon")?;
    let status = child.wait()?;
    let stop_seconds = stop.elapsed().as_secs_f64();
    lifetimes.push(close(child.id(), born.elapsed().as_secs_f64(), &samples));
    // What the cursors have not reached yet, and the pending pushes.
    let ran = env.command(&["run", "--all"]).status()?;
    if !ran.success() {
        tracing::warn!(status = %ran, "The last pulls did not all succeed.");
    }
    let published = env
        .command(&[
            "publish",
            &opts.period,
            "--accept",
            "chiso bench soak: the last hand publication",
        ])
        .status()?;
    hand.push(published.code().unwrap_or(-1));

    // Checks.
    let (_, jobs) = crate::demo::load_all_or_embedded(&project.join("chiso.toml"))?;
    let mut feeds = Vec::new();
    for feed in SimFeed::ALL {
        let Some(job) = jobs.pulls.iter().find(|j| j.name == feed.name()) else {
            continue;
        };
        let truth = sim.state.world.distinct_versions(feed, now);
        let landed = landed_versions(&warehouse, job, feed)?;
        feeds.push(FeedCheck {
            feed: feed.name().to_string(),
            simulator: truth.len(),
            lake: landed.len(),
            missing: truth.difference(&landed).count(),
            extra: landed.difference(&truth).count(),
        });
    }
    let received = sim.state.publications();
    let mut stored: BTreeMap<String, usize> = BTreeMap::new();
    for r in &received {
        *stored
            .entry(format!("{} {} r{}", r.portal, r.period, r.revision))
            .or_default() += 1;
    }
    let duplicates = received.iter().map(|r| r.duplicates).sum();
    let unacknowledged = match crate::ledger::open_read_only(&warehouse, Duration::from_secs(10))? {
        None => vec!["no ledger".to_string()],
        Some(conn) => {
            let mut st = conn.prepare(
                "SELECT target || ' ' || period || ' r' || revision || ': ' || status \
                 FROM pub_receipts WHERE status <> 'acknowledged' ORDER BY 1",
            )?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect::<Result<Vec<_>, _>>()?
        }
    };
    sim.stop().await;
    Ok(SoakReport {
        minutes: opts.minutes,
        kills,
        lifetimes,
        faults: fault_log,
        feeds,
        stored,
        duplicates,
        unacknowledged,
        hand_publications: hand,
        stop_status: status.code().unwrap_or(-1),
        stop_seconds,
    })
}

/// The distinct (key, version) pairs in the files the job's commit log names (what a build
/// reads, and staging keeps): a file on disk that no commit names does not count.
fn landed_versions(
    warehouse: &Path,
    job: &crate::config::JobConfig,
    feed: SimFeed,
) -> anyhow::Result<BTreeSet<(String, String)>> {
    let files = crate::lake::commit::JobState::new(warehouse, &job.name).committed_files()?;
    if files.is_empty() {
        return Ok(BTreeSet::new());
    }
    let list: Vec<String> = files
        .iter()
        .map(|f| crate::duck::lit(&warehouse.join(f).display().to_string()))
        .collect();
    let (k, v) = feed.key_version_sql();
    let conn = crate::duck::in_memory(2)?;
    let mut st = conn.prepare(&format!(
        "SELECT DISTINCT ({k})::VARCHAR, ({v})::VARCHAR FROM read_parquet([{}], hive_partitioning = true, union_by_name = true)",
        list.join(", ")
    ))?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
