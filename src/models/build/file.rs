//! The build file's life: where it starts from (the spare, a copy of the published file, or
//! empty) and the published file's path.

use super::*;

pub fn published_path(warehouse: &Path) -> PathBuf {
    warehouse.join("chiso.duckdb")
}

/// Opens the file a build writes into. Preferably the spare: the file published before the
/// current one, which the last build kept. It is one build behind (incremental models catch
/// up by their own watermarks, tables and views are rebuilt) and costs no copy, but it can
/// only be taken when no reader still has it open: DuckDB then refuses the write lock and the
/// build starts from a copy of the published file instead, as it does when there is no spare.
///
/// A selective build (`use_spare` false: `--select`) never starts from the spare: the models it
/// does not run would be published one build back. It starts from a copy of the published file.
///
/// A new file is written in `storage_version` (DuckDB keeps a file's version when it opens it
/// again, so the spare and copies keep it too); a published file of another version is not
/// built upon: the build starts empty, in the version asked for.
pub(super) fn start_build_file(
    published: &Path,
    spare: &Path,
    build_file: &Path,
    threads: usize,
    storage_version: Option<&str>,
    use_spare: bool,
) -> anyhow::Result<(duck::Connection, &'static str)> {
    let same_version = |conn: &duck::Connection| match storage_version {
        None => true,
        Some(v) => file_storage_version(conn).is_some_and(|f| f.trim_end_matches('+') == v),
    };
    if use_spare
        && published.exists()
        && spare.exists()
        && !has_locks(spare)
        && std::fs::rename(spare, build_file).is_ok()
    {
        match duck::open(build_file, threads) {
            Ok(conn) if same_version(&conn) => return Ok((conn, "spare")),
            Ok(conn) => {
                drop(conn);
                let _ = std::fs::rename(build_file, spare);
            }
            Err(e) => {
                tracing::info!(error = %e, "The spare is in use by a reader; copying the published file.");
                let _ = std::fs::rename(build_file, spare);
            }
        }
    }
    if published.exists() {
        std::fs::copy(published, build_file)
            .with_context(|| format!("copying {} to start the build", published.display()))?;
        let conn = duck::open(build_file, threads)?;
        if same_version(&conn) {
            return Ok((conn, "copy"));
        }
        tracing::info!(
            found = file_storage_version(&conn).unwrap_or_default(),
            wanted = storage_version.unwrap_or_default(),
            "The published file has another storage version: building from empty."
        );
        drop(conn);
        std::fs::remove_file(build_file)
            .with_context(|| format!("removing {}", build_file.display()))?;
    }
    if let Some(v) = storage_version {
        // Created in the version asked for; opened again below, it keeps it.
        let c = duck::in_memory(1)?;
        c.execute_batch(&format!(
            "ATTACH {} AS chiso_new (STORAGE_VERSION {}); DETACH chiso_new;",
            duck::lit(&build_file.display().to_string()),
            duck::lit(v)
        ))
        .with_context(|| format!("creating {} in storage version {v}", build_file.display()))?;
    }
    Ok((duck::open(build_file, threads)?, "empty"))
}

/// The storage version of the connection's database file, as DuckDB reports it (`v1.4.0+`).
pub fn file_storage_version(conn: &duck::Connection) -> Option<String> {
    conn.query_row(
        "SELECT tags['storage_version'] FROM duckdb_databases() WHERE database_name = current_database()",
        [],
        |r| r.get::<_, Option<String>>(0),
    )
    .ok()
    .flatten()
}

/// Whether any process (this one included) holds a lock on `path`, by `/proc/locks`: a DuckDB
/// reader keeps a lock on its file for as long as it is open. DuckDB's own refusal to open a
/// locked file does not see readers in this same process, so this is checked first. When the
/// answer is unknown, the file counts as locked.
pub(super) fn has_locks(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(ino) = std::fs::metadata(path).map(|m| m.ino()) else {
        return true;
    };
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
        return true;
    };
    // `1: POSIX  ADVISORY  READ 1234 fd:01:5678 0 EOF`: the sixth field is major:minor:inode.
    locks.lines().any(|l| {
        l.split_whitespace()
            .find(|f| f.matches(':').count() == 2)
            .and_then(|f| f.rsplit(':').next())
            .and_then(|i| i.parse::<u64>().ok())
            == Some(ino)
    })
}
