//! The published warehouse as the console reads it: one read-only connection to the file
//! published now, shared by the pages (each query on a clone of it), and reopened when a build
//! publishes another file. Only the published file is held: the file a build writes into next
//! (the spare, one build older) is let go as soon as a new one is seen, so the console does
//! not push builds off the spare onto a copy.
//!
//! The watcher ([`watch`]) looks at the file twice a second and tells subscribers the build
//! that published it ([`BuildMark`]): the pages' live refresh is keyed on it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::watch;

use crate::duck;

/// DuckDB's memory limit for the console's reads.
pub const MEMORY_LIMIT: &str = "1GB";

/// How often the watcher looks at the published file.
pub const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Which build published the file the console reads, and how new its data is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct BuildMark {
    /// `_chiso_builds.build_id` of the newest build in the file ("" before any build).
    pub build_id: String,
    /// When that build started, which is when it read the lake: the data's age counts from
    /// it, as `chiso status` counts the index's (RFC 3339, project zone).
    pub data_as_of: Option<String>,
    /// When that build finished.
    pub finished_at: Option<String>,
    /// The newest moment the dossier data reached (`mart_index_unit_period.data_watermark`,
    /// project time).
    pub watermark: Option<String>,
}

impl BuildMark {
    /// Seconds since the build read the lake, as of `now`.
    pub fn age_seconds(&self, now: chrono::DateTime<chrono::Utc>) -> Option<i64> {
        let at = chrono::DateTime::parse_from_rfc3339(self.data_as_of.as_deref()?).ok()?;
        Some((now - at.with_timezone(&chrono::Utc)).num_seconds().max(0))
    }
}

/// The file's identity: a rename over it changes the inode, a rewrite its time or length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileKey {
    ino: u64,
    modified: Option<SystemTime>,
    len: u64,
}

fn key(path: &Path) -> std::io::Result<FileKey> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(FileKey {
        ino: m.ino(),
        modified: m.modified().ok(),
        len: m.len(),
    })
}

struct Open {
    key: FileKey,
    conn: duck::Connection,
    mark: BuildMark,
}

/// The published file, opened read-only, and who is told when it changes.
pub struct Published {
    warehouse: PathBuf,
    path: PathBuf,
    open: Mutex<Option<Open>>,
    tx: watch::Sender<BuildMark>,
}

impl Published {
    pub fn new(warehouse: &Path) -> Arc<Published> {
        Arc::new(Published {
            warehouse: warehouse.to_path_buf(),
            path: crate::models::build::published_path(warehouse),
            open: Mutex::new(None),
            tx: watch::channel(BuildMark::default()).0,
        })
    }

    pub fn warehouse(&self) -> &Path {
        &self.warehouse
    }

    /// Told the build mark whenever the published file changes.
    pub fn subscribe(&self) -> watch::Receiver<BuildMark> {
        self.tx.subscribe()
    }

    /// The mark of the file as last seen.
    pub fn mark(&self) -> BuildMark {
        self.tx.borrow().clone()
    }

    /// A connection to the file published now (reopened first when a build replaced it), and
    /// its build mark. Blocking: call it off the async threads. The daemon calls it right after
    /// each build publishes, before the next build can start: the file just replaced is that
    /// build's spare, and a reader still holding it would make it copy the published file.
    pub fn connect(&self) -> anyhow::Result<(duck::Connection, BuildMark)> {
        let mut open = self.open.lock().expect("published connection");
        let now = key(&self.path).map_err(|e| {
            anyhow::anyhow!(
                "no published warehouse at {} yet ({e}): the first build publishes it",
                self.path.display()
            )
        })?;
        if open.as_ref().map(|o| o.key) != Some(now) {
            // Dropped before the new one opens: the old file is the next build's spare.
            *open = None;
            let conn = duck::open_read_only(&self.path)?;
            // Beside the builds, which have their own limit: the console's queries stay small.
            conn.execute_batch(&format!("SET memory_limit = '{MEMORY_LIMIT}';"))?;
            let mark = read_mark(&conn)?;
            self.tx.send_if_modified(|m| {
                let changed = *m != mark;
                *m = mark.clone();
                changed
            });
            *open = Some(Open {
                key: now,
                conn,
                mark,
            });
        }
        let o = open.as_ref().expect("opened above");
        Ok((o.conn.try_clone()?, o.mark.clone()))
    }
}

fn read_mark(conn: &duck::Connection) -> anyhow::Result<BuildMark> {
    let mut mark = BuildMark::default();
    if duck::table_exists(conn, "_chiso_builds")? {
        let row = conn
            .query_row(
                "SELECT build_id, started_at, finished_at FROM _chiso_builds ORDER BY finished_at DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)),
            )
            .ok();
        if let Some((id, started, finished)) = row {
            mark.build_id = id;
            mark.data_as_of = started;
            mark.finished_at = finished;
        }
    }
    if duck::object_kind(conn, "mart_index_unit_period")?.is_some() {
        mark.watermark = conn.query_row(
            "SELECT strftime(max(data_watermark), '%Y-%m-%d %H:%M') FROM mart_index_unit_period",
            [],
            |r| r.get(0),
        )?;
    }
    Ok(mark)
}

/// Looks at the published file every [`WATCH_EVERY`] until `stop` turns true, reopening it
/// when it changed (which tells the subscribers).
pub async fn watch(published: Arc<Published>, mut stop: watch::Receiver<bool>) {
    loop {
        let p = published.clone();
        match tokio::task::spawn_blocking(move || p.connect().map(|_| ())).await {
            Ok(Ok(())) | Err(_) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %format!("{e:#}"), "The console could not read the published warehouse.")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(WATCH_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
