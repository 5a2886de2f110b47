//! One daemon per warehouse: `_state/_serve/lock` held for the daemon's life, and beside it
//! `daemon.json` naming the holder (pid, start time, HTTP address), so that a second
//! `chiso serve` is refused with an error that says who holds the warehouse.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fs::{FileLock, LockError};

/// Who holds a warehouse's daemon lock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub started_at: String,
    #[serde(default)]
    pub http: Option<String>,
    #[serde(default)]
    pub version: String,
}

/// Why the daemon could not start on a warehouse.
#[derive(Debug, thiserror::Error)]
pub enum DaemonLockError {
    #[error("another chiso serve holds {warehouse} (pid {}, started {}{}); stop it first", holder.pid, holder.started_at, holder.http.as_deref().map(|h| format!(", http {h}")).unwrap_or_default())]
    Held { warehouse: PathBuf, holder: Holder },
    #[error("another chiso serve holds {0} (its daemon.json could not be read)")]
    HeldUnknown(PathBuf),
    #[error("taking the daemon lock: {0}")]
    Io(#[from] LockError),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The daemon's lock, released when dropped or when the process dies.
#[derive(Debug)]
pub struct DaemonLock {
    _lock: FileLock,
    pub holder: Holder,
}

fn serve_dir(warehouse: &Path) -> PathBuf {
    warehouse.join("_state/_serve")
}

/// Who holds the daemon lock of `warehouse` now (reading `daemon.json`), if anyone.
pub fn current_holder(warehouse: &Path) -> Option<Holder> {
    let lock_path = serve_dir(warehouse).join("lock");
    if !lock_path.exists() {
        return None;
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&lock_path)
        .ok()?;
    match f.try_lock() {
        Ok(()) => None, // free (released when `f` closes)
        Err(_) => std::fs::read(serve_dir(warehouse).join("daemon.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok()),
    }
}

impl DaemonLock {
    pub fn acquire(warehouse: &Path, http: Option<String>) -> Result<DaemonLock, DaemonLockError> {
        let dir = serve_dir(warehouse);
        let lock = match FileLock::acquire(&dir.join("lock")) {
            Ok(l) => l,
            Err(LockError::Busy(_)) => {
                return Err(
                    match std::fs::read(dir.join("daemon.json"))
                        .ok()
                        .and_then(|b| serde_json::from_slice::<Holder>(&b).ok())
                    {
                        Some(holder) => DaemonLockError::Held {
                            warehouse: warehouse.to_path_buf(),
                            holder,
                        },
                        None => DaemonLockError::HeldUnknown(warehouse.to_path_buf()),
                    },
                )
            }
            Err(e) => return Err(e.into()),
        };
        let holder = Holder {
            pid: std::process::id(),
            started_at: crate::time::now_rfc3339(),
            http,
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let path = dir.join("daemon.json");
        crate::fs::write_durably(&path, &serde_json::to_vec_pretty(&holder).expect("json"))
            .map_err(|source| DaemonLockError::Write { path, source })?;
        Ok(DaemonLock {
            _lock: lock,
            holder,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_daemon_is_told_who_holds_the_warehouse() {
        let wh = tempfile::tempdir().unwrap();
        let first = DaemonLock::acquire(wh.path(), Some("127.0.0.1:9000".into())).unwrap();
        let err = DaemonLock::acquire(wh.path(), None).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id()))
                && text.contains(&first.holder.started_at)
                && text.contains("127.0.0.1:9000"),
            "{text}"
        );
        assert_eq!(current_holder(wh.path()), Some(first.holder.clone()));
        drop(first);
        assert_eq!(current_holder(wh.path()), None);
        DaemonLock::acquire(wh.path(), None).unwrap();
    }
}
