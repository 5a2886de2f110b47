//! Local newline-delimited JSON files: dumps from a feed, backfills, and the benchmark input.
//!
//! The cursor is `{"files": {"<path>": "<size>:<mtime>"}}`: a file is landed once, and again
//! only if it changes. A large file is split into byte ranges at line boundaries so that several
//! threads parse it at once; each line is one record.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// A file to land, with the signature that goes into the cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    pub path: PathBuf,
    /// As written in the cursor: relative to the project folder when below it.
    pub key: String,
    pub signature: String,
    pub size: u64,
}

/// Files matching `pattern` (relative to `root`) not landed with the same signature yet.
pub fn new_files(
    root: &Path,
    pattern: &str,
    cursor: &Option<Value>,
) -> Result<Vec<InputFile>, String> {
    let full = if Path::new(pattern).is_absolute() {
        pattern.to_string()
    } else {
        root.join(pattern).display().to_string()
    };
    let seen = cursor
        .as_ref()
        .and_then(|c| c.get("files"))
        .and_then(|f| f.as_object());
    let mut out = Vec::new();
    let mut matched = 0usize;
    let paths = glob::glob(&full).map_err(|e| format!("glob {pattern:?}: {e}"))?;
    for entry in paths {
        let path = entry.map_err(|e| format!("glob {pattern:?}: {e}"))?;
        if !path.is_file() {
            continue;
        }
        matched += 1;
        let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let signature = format!("{}:{}", meta.len(), mtime);
        let key = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        if seen.and_then(|s| s.get(&key)).and_then(|v| v.as_str()) == Some(signature.as_str()) {
            continue;
        }
        out.push(InputFile {
            path,
            key,
            signature,
            size: meta.len(),
        });
    }
    // A pattern that matches no file at all is a misconfiguration (a wrong folder, a relative
    // path read from another place), not "nothing new": say where it looked.
    if matched == 0 {
        return Err(format!("{pattern:?} matches no file (looked for {full})"));
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// The cursor after landing `file` on top of `cursor`.
pub fn cursor_with(cursor: &Option<Value>, file: &InputFile) -> Value {
    let mut files: BTreeMap<String, Value> = cursor
        .as_ref()
        .and_then(|c| c.get("files"))
        .and_then(|f| f.as_object())
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    files.insert(file.key.clone(), Value::String(file.signature.clone()));
    json!({ "files": files })
}

/// Splits `[0, size)` into `n` byte ranges; [`for_each_line`] makes them line-aligned.
pub fn split(size: u64, n: usize) -> Vec<(u64, u64)> {
    let n = n.max(1) as u64;
    let step = size.div_ceil(n).max(1);
    (0..n)
        .map(|i| ((i * step).min(size), ((i + 1) * step).min(size)))
        .filter(|(a, b)| a < b)
        .collect()
}

/// Calls `f(offset, line)` for every line that starts in `[start, end)` (without its newline).
/// A line starting before `end` is read to its end even past `end`.
pub fn for_each_line(
    path: &Path,
    start: u64,
    end: u64,
    mut f: impl FnMut(u64, &[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut file = File::open(path)?;
    let mut pos = start;
    if start > 0 {
        // Own the line that starts at `start` only if the byte before it ends a line.
        file.seek(SeekFrom::Start(start - 1))?;
        let mut reader = BufReader::with_capacity(1 << 16, file.by_ref());
        let mut skipped = Vec::new();
        let n = reader.read_until(b'\n', &mut skipped)? as u64;
        pos = start - 1 + n;
        drop(reader);
        file.seek(SeekFrom::Start(pos))?;
    }
    let mut reader = BufReader::with_capacity(4 << 20, file);
    let mut line = Vec::with_capacity(4096);
    while pos < end {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)? as u64;
        if n == 0 {
            break;
        }
        let offset = pos;
        pos += n;
        let mut body: &[u8] = &line;
        while let [rest @ .., b'\n' | b'\r'] = body {
            body = rest;
        }
        if body.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        f(offset, body)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_line_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.ndjson");
        let lines: Vec<String> = (0..1000)
            .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 37)))
            .collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        for threads in [1, 2, 3, 7, 64] {
            let mut seen = Vec::new();
            for (a, b) in split(size, threads) {
                for_each_line(&path, a, b, |_, l| {
                    seen.push(String::from_utf8(l.to_vec()).unwrap());
                    Ok(())
                })
                .unwrap();
            }
            assert_eq!(seen, lines, "threads={threads}");
        }
    }
}
