//! SQL models: DuckDB SQL files under `sql/`, one model per file, written as dbt writes them.
//!
//! `template` parses the Jinja subset they use; `project` finds the models, their dependency
//! graph (from their own `ref()` calls) and the selection; `build` runs them into a build file,
//! runs the data tests and swaps the file in; `snapshot` is the lake's committed files a build
//! reads; `reuse` decides which table models can keep
//! their rows because nothing they read changed. (`chiso build`/`chiso test` are wired to the
//! command line once the staging → facts → index models exist.) This module owns reading and
//! running model files; it never touches the lake's files or the feeds.

pub mod build;
pub mod docs;
pub mod personal;
pub mod project;
pub mod reuse;
pub mod snapshot;
pub mod template;

use std::path::{Path, PathBuf};

/// Files below `dir` whose extension is `ext`, sorted; a missing folder has none.
pub(crate) fn files_with_extension(dir: &Path, ext: &str) -> std::io::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for e in rd {
            let e = e?;
            let p = e.path();
            // The entry's type from the listing (no stat per file: `_state/builds/` holds a
            // thousand records); a link is followed.
            let dir = match e.file_type() {
                Ok(ft) if ft.is_symlink() => p.is_dir(),
                Ok(ft) => ft.is_dir(),
                // A file removed while the folder is listed (a record pruned meanwhile).
                Err(_) => p.is_dir(),
            };
            if dir {
                walk(&p, ext, out)?;
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, ext, &mut out)?;
    out.sort();
    Ok(out)
}
