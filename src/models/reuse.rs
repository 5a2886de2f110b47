//! Keeping a table model's rows when nothing it reads has changed since they were computed.
//!
//! The build file records, per model, a digest of its inputs when it was built (`inputs`: its
//! rendered SQL, the content of each model it refs, the files of each lake dataset it reads)
//! and a token of its own content (`content`). A table model whose inputs digest is the one
//! recorded is not rebuilt: its rows are what the same SQL made from the same inputs. This is
//! dbt's `state:modified+` extended to data: a build after a landing of dossiers rebuilds what
//! reads dossiers, not the units' roll-up or the petitions fact.
//!
//! Content tokens: a table of up to [`HASHED_ROWS`] rows is identified by its row count and
//! the sum of its rows' hashes (so a table rebuilt to the same rows, like the methodology read
//! from its CSV files, does not make its readers rebuild); a larger table by the build that
//! wrote it; an incremental model keeps its token when it wrote no rows; a view's content is
//! its inputs. Each build file carries its own records, so a build starting from the spare
//! (one build behind) compares with what that file holds.
//!
//! A model that reads anything else (the clock, files, variables set by hooks, random
//! numbers), or has hooks, is rebuilt at every build.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::template::{Parsed, Segment};
use crate::config::JobConfig;
use crate::duck;

/// Tables up to this many rows get a content token from their rows (about 15 ms for the
/// 433,000 rows of the units' roll-up here, 0.1-0.18 s for a million rows of the 50-column
/// facts, which are incremental and whose readers rebuild anyway); larger ones are
/// identified by the build that wrote them.
const HASHED_ROWS: u64 = 500_000;

/// SQL that reads something other than the model's refs and sources (matched in the model's
/// own text, lower-cased; a match in a comment only costs a rebuild).
const OUTSIDE_INPUTS: &[&str] = &[
    "now()",
    "current_date",
    "current_time",
    "current_setting",
    "today()",
    "get_current_",
    "random()",
    "uuid()",
    "gen_random_uuid",
    "getvariable",
    "read_csv",
    "read_json",
    "read_parquet",
    "read_text",
    "read_blob",
    "glob(",
    "attach",
];

/// What the build file recorded about a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelState {
    /// Digest of the inputs the model was built from (empty: never reused).
    pub inputs: String,
    /// Token of the model's content, read by the models downstream.
    pub content: String,
}

const TABLE: &str = "_chiso_model_state";

pub fn load(conn: &duck::Connection) -> anyhow::Result<BTreeMap<String, ModelState>> {
    if !crate::duck::table_exists(conn, TABLE)? {
        return Ok(BTreeMap::new());
    }
    let mut stmt = conn.prepare(&format!("SELECT model, inputs, content FROM {TABLE}"))?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            ModelState {
                inputs: r.get(1)?,
                content: r.get(2)?,
            },
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn save(conn: &duck::Connection, states: &BTreeMap<String, ModelState>) -> anyhow::Result<()> {
    conn.execute_batch(&format!(
        "CREATE OR REPLACE TABLE {TABLE} (model VARCHAR, inputs VARCHAR, content VARCHAR);"
    ))?;
    let mut insert = conn.prepare(&format!("INSERT INTO {TABLE} VALUES (?, ?, ?)"))?;
    for (model, s) in states {
        insert.execute(duckdb::params![model, s.inputs, s.content])?;
    }
    Ok(())
}

/// Whether the model reads something its refs and sources do not cover, or runs hooks (before
/// or after it).
pub fn reads_outside_inputs(parsed: &Parsed) -> bool {
    if ["pre_hook", "pre-hook", "post_hook", "post-hook"]
        .iter()
        .any(|k| !parsed.config_list(k).is_empty())
    {
        return true;
    }
    let mut text = String::new();
    collect_text(&parsed.segments, &mut text);
    let text = text.to_lowercase();
    OUTSIDE_INPUTS.iter().any(|f| text.contains(f))
}

fn collect_text(segs: &[Segment], out: &mut String) {
    for s in segs {
        match s {
            Segment::Text(t) => out.push_str(t),
            Segment::IfIncremental(a, b) => {
                collect_text(a, out);
                collect_text(b, out);
            }
            _ => {}
        }
    }
}

/// Digest of what a model reads: its rendered SQL, the content token of each model it refs
/// and the files of each dataset it reads. `None` when an input cannot be identified (a ref
/// without a token, a dataset that no job lands, a folder that cannot be listed).
pub fn inputs_digest(
    sql: &str,
    refs: &[String],
    content: &BTreeMap<String, String>,
    sources: &[(String, String)],
    snapshot: &super::snapshot::LakeSnapshot,
    jobs: &[JobConfig],
) -> Option<String> {
    let mut h = Sha256::new();
    h.update(sql.as_bytes());
    let mut refs: Vec<&String> = refs.iter().collect();
    refs.sort();
    for r in refs {
        h.update(format!("\nref {r} {}", content.get(r)?).as_bytes());
    }
    let mut sources = sources.to_vec();
    sources.sort();
    for (feed, dataset) in &sources {
        let job = jobs
            .iter()
            .find(|j| j.dataset.feed == *feed && j.dataset.name == *dataset)?;
        // The committed files the build reads (lake files are written whole and never changed
        // in place, so a new landing or a compaction changes this list).
        h.update(format!("\nsource {feed}.{dataset}\n").as_bytes());
        for f in snapshot.get(&job.dataset.key())? {
            h.update(f.as_bytes());
            h.update(b"\n");
        }
    }
    Some(format!("{:x}", h.finalize()))
}

/// The content token of a table just written by build `build_id` (see the module's notes).
pub fn table_token(
    conn: &duck::Connection,
    name: &str,
    rows: u64,
    build_id: &str,
) -> anyhow::Result<String> {
    if rows > HASHED_ROWS {
        return Ok(format!("build {build_id}"));
    }
    let sum: String = conn.query_row(
        &format!("SELECT CAST(coalesce(sum(hash(t)::HUGEINT), 0) AS VARCHAR) FROM \"{name}\" AS t"),
        [],
        |r| r.get(0),
    )?;
    Ok(format!("rows {rows} hash {sum}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_files_variables_and_hooks_are_outside_inputs() {
        let p = |s: &str| super::super::template::parse(s).unwrap();
        assert!(!reads_outside_inputs(&p(
            "select * from {{ ref('a') }} join {{ source('f', 'd') }} using (x)"
        )));
        assert!(reads_outside_inputs(&p("select now() as t")));
        assert!(reads_outside_inputs(&p("select CURRENT_DATE as t")));
        assert!(reads_outside_inputs(&p(
            "select * from read_csv('m/*.csv')"
        )));
        assert!(reads_outside_inputs(&p("select getvariable('x')")));
        assert!(reads_outside_inputs(&p(
            "{{ config(materialized='table', pre_hook=\"SET VARIABLE x = 1\") }} select 1"
        )));
        // Inside an incremental branch too.
        assert!(reads_outside_inputs(&p(
            "select 1 {% if is_incremental() %} where t > now() {% endif %}"
        )));
    }
}
