//! Which model columns hold personal data: the job files' `personal = true` columns, followed
//! through the models that rename them, and the columns a model's `.yml` marks
//! `meta: {personal: true}`. Each build records them in the warehouse
//! (`_chiso_personal_columns`), where the publish guard reads them: a published column named
//! like any of them blocks a publication, whatever the staging models called it.
//!
//! Following a rename reads the model's SQL a select item per line: a line that names a
//! personal column before ` as alias` makes `alias` personal (`NguoiGui as sender_name`,
//! `trim(s.sender_name) as sender`), until no new name appears. A rename that spans lines is
//! not followed: mark its column `meta: {personal: true}` in the model's `.yml`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use regex::Regex;

use super::project::Project;
use crate::config::JobConfig;
use crate::duck;

/// (model, column, why): every personal column of the project's models.
pub fn columns(project: &Project, jobs: &[JobConfig]) -> Vec<(String, String, String)> {
    // Lower-cased name -> where it came from.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for j in jobs {
        for c in j.dataset.columns.iter().filter(|c| c.personal) {
            names
                .entry(c.name.to_lowercase())
                .or_insert_with(|| format!("{}.{} (personal = true)", j.name, c.name));
        }
    }
    let mut out: Vec<(String, String, String)> = Vec::new();
    for (name, m) in &project.models {
        for c in m.doc.iter().flat_map(|d| d.columns.iter()) {
            if c.is_personal() {
                let why = format!("{name}.{} (meta: personal)", c.name);
                names.entry(c.name.to_lowercase()).or_insert(why.clone());
                out.push((name.clone(), c.name.clone(), why));
            }
        }
    }
    let texts: Vec<(&String, String)> = project
        .models
        .iter()
        .filter_map(|(n, m)| std::fs::read_to_string(&m.path).ok().map(|t| (n, t)))
        .collect();
    loop {
        let mut added = Vec::new();
        for (model, text) in &texts {
            for (alias, from) in renames(text) {
                let key = alias.to_lowercase();
                if names.contains_key(&key) {
                    continue;
                }
                if let Some(origin) = from.iter().find_map(|w| names.get(&w.to_lowercase())) {
                    added.push((
                        (*model).clone(),
                        alias.clone(),
                        format!("renamed from {origin}"),
                    ));
                }
            }
        }
        if added.is_empty() {
            break;
        }
        for (model, alias, why) in added {
            if names.insert(alias.to_lowercase(), why.clone()).is_none() {
                out.push((model, alias, why));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `(alias, the column renamed)` for each line of `sql` whose select item is a rename: a
/// column (qualified or quoted, possibly under one text function such as `trim(…)` or a cast)
/// `as alias`. An aggregate or an expression of several columns (`count(distinct x) as n`,
/// `coalesce(x, unit_id) as unit_id`) is not a rename and is not followed.
fn renames(sql: &str) -> Vec<(String, Vec<String>)> {
    static AS: OnceLock<Regex> = OnceLock::new();
    static WORD: OnceLock<Regex> = OnceLock::new();
    let as_ = AS.get_or_init(|| {
        Regex::new(
            r#"(?i)^((?:trim|ltrim|rtrim|upper|lower|nfc_normalize|strip_accents|cast|try_cast)?\s*\(?\s*"?[A-Za-z_][A-Za-z0-9_]*"?(?:\s*\.\s*"?[A-Za-z_][A-Za-z0-9_]*"?)?(?:\s+as\s+[A-Za-z]+)?\s*\)?)\s+as\s+"?([A-Za-z_][A-Za-z0-9_]*)"?\s*,?\s*(--.*)?$"#,
        )
        .expect("valid pattern")
    });
    let word = WORD.get_or_init(|| Regex::new(r"[A-Za-z_][A-Za-z0-9_]*").expect("valid pattern"));
    sql.lines()
        .filter_map(|l| {
            let c = as_.captures(l.trim())?;
            let before = c.get(1)?.as_str();
            let words = word
                .find_iter(before)
                .map(|m| m.as_str().to_string())
                .collect();
            Some((c[2].to_string(), words))
        })
        .collect()
}

/// Writes `_chiso_personal_columns` into the build file `conn` writes.
pub fn record(
    conn: &duck::Connection,
    project: &Project,
    jobs: &[JobConfig],
) -> anyhow::Result<()> {
    conn.execute_batch(
        "CREATE OR REPLACE TABLE _chiso_personal_columns (model VARCHAR, column_name VARCHAR, origin VARCHAR);",
    )?;
    let mut insert = conn.prepare("INSERT INTO _chiso_personal_columns VALUES (?, ?, ?)")?;
    for (m, c, why) in columns(project, jobs) {
        insert.execute([&m, &c, &why])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rename_is_read_a_select_item_per_line() {
        let sql = "select\n    NguoiGui as sender_name,\n    trim(s.sender_name) AS \"sender\", -- kept\n    MaDonVi as unit_id,\n    count(distinct officer_name) as officers,\n    coalesce(officer_name, unit_id) as unit_id\nfrom x";
        let r = renames(sql);
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!(r[0].0, "sender_name");
        assert_eq!(r[0].1, vec!["NguoiGui"]);
        assert_eq!(r[1].0, "sender");
        assert!(r[1].1.contains(&"sender_name".to_string()));
        assert_eq!(r[2].0, "unit_id");
    }
}
