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
pub(super) fn start_build_file(
    published: &Path,
    spare: &Path,
    build_file: &Path,
    threads: usize,
) -> anyhow::Result<(duck::Connection, &'static str)> {
    if published.exists()
        && spare.exists()
        && !has_locks(spare)
        && std::fs::rename(spare, build_file).is_ok()
    {
        match duck::open(build_file, threads) {
            Ok(conn) => return Ok((conn, "spare")),
            Err(e) => {
                tracing::info!(error = %e, "The spare is in use by a reader; copying the published file.");
                let _ = std::fs::rename(build_file, spare);
            }
        }
    }
    let from = if published.exists() {
        std::fs::copy(published, build_file)
            .with_context(|| format!("copying {} to start the build", published.display()))?;
        "copy"
    } else {
        "empty"
    };
    Ok((duck::open(build_file, threads)?, from))
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
