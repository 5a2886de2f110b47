//! Durable file-system steps shared by the lake, the builds and (later) the daemon: fsync a
//! folder, create folders so that they survive a power cut, write a small file whole, and hold
//! an exclusive lock on a file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// fsync a folder so that a rename or a new entry in it survives a power cut.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents, fsyncing the parent of each folder it creates, so that
/// a new partition folder (and the files renamed into it) survives a power cut.
pub fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durably(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Writes `bytes` to `path` whole: a temporary file, fsynced, renamed, the folder fsynced.
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process (or another handle of this one) holds it.
    #[error("{} is held by another process", .0.display())]
    Busy(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An exclusive lock on a file, released when dropped or when the process dies.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Takes the lock on `path` (created if missing, with its folder), or reports it busy.
    ///
    /// A lock found held is tried again for up to half a second before it counts as busy. The
    /// lock belongs to an open file description, and a process spawned by another thread shares
    /// every descriptor of this one until it execs (descriptors are close-on-exec, but that
    /// happens in the child, later): a run that starts right after another one released the
    /// lock can find it still held for that moment. (The library's tests hit it: a build started
    /// just after the previous one returned, while a parallel test spawned a reader.)
    pub fn acquire(path: &Path) -> Result<FileLock, LockError> {
        Self::acquire_within(path, std::time::Duration::from_millis(500))
    }

    /// Takes the lock on `path`, waiting in the kernel's queue for as long as it is held. For
    /// locks whose holders are bounded by a few writes (polling, as `acquire_within` does, can
    /// be starved by a holder that takes it again and again).
    pub fn acquire_waiting(path: &Path) -> Result<FileLock, LockError> {
        let file = Self::open(path)?;
        file.lock().map_err(|source| LockError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(FileLock { _file: file })
    }

    /// The lock file at `path`, created (with its folder) if missing.
    fn open(path: &Path) -> Result<File, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io)
    }

    /// Takes the lock on `path`, trying again every 50 ms for up to `wait` before it counts as
    /// busy.
    pub fn acquire_within(path: &Path, wait: std::time::Duration) -> Result<FileLock, LockError> {
        use backon::{BlockingRetryable, ConstantBuilder};
        const EVERY: std::time::Duration = std::time::Duration::from_millis(50);
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = Self::open(path)?;
        let try_lock = || match file.try_lock() {
            Ok(()) => Ok(Ok(())),
            Err(std::fs::TryLockError::WouldBlock) => Err(()),
            Err(std::fs::TryLockError::Error(e)) => Ok(Err(e)),
        };
        let held = try_lock
            .retry(
                ConstantBuilder::default()
                    .with_delay(EVERY)
                    .with_max_times((wait.as_millis() / EVERY.as_millis()) as usize),
            )
            .call();
        match held {
            Ok(Ok(())) => Ok(FileLock { _file: file }),
            Ok(Err(e)) => Err(io(e)),
            Err(()) => Err(LockError::Busy(path.to_path_buf())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_nested_folders_and_leaves_existing_ones() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("lake/f/d/month=2026-08");
        create_dir_durably(&deep).unwrap();
        assert!(deep.is_dir());
        std::fs::write(deep.join("x"), "kept").unwrap();
        create_dir_durably(&deep).unwrap();
        create_dir_durably(&root.path().join("lake/f/d/month=2026-09")).unwrap();
        assert_eq!(std::fs::read_to_string(deep.join("x")).unwrap(), "kept");
        assert!(
            create_dir_durably(&deep.join("x/y")).is_err(),
            "a file is in the way"
        );
    }

    #[test]
    fn a_lock_is_held_once_and_released_when_dropped() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("state/x/lock");
        let held = FileLock::acquire(&path).unwrap();
        assert!(matches!(FileLock::acquire(&path), Err(LockError::Busy(_))));
        drop(held);
        FileLock::acquire(&path).unwrap();
    }
}
