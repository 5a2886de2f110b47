//! The model graph: every `sql/**/*.sql` file is a model named by its file stem (files under
//! `sql/tests/` are data tests), its dependencies found from its own `ref()` calls, never from a
//! hand-kept list. Owns discovery, validation (unknown refs, cycles, duplicate names) and
//! selection (`model`, `model+`, `+model`, `tag:name`). Runs nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::template::{self, Parsed};

/// How a model is materialised (`{{ config(materialized='…') }}`, default `view`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Materialized {
    View,
    Table,
    Incremental,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub path: PathBuf,
    pub parsed: Parsed,
    pub materialized: Materialized,
    pub tags: Vec<String>,
    pub refs: Vec<String>,
    /// SHA-256 of the file: the SQL (and config) that builds the table, recorded with it.
    pub sql_sha256: String,
    /// From the `.yml` beside the model: the grain and every column.
    pub doc: Option<super::docs::ModelDoc>,
}

/// A data test: SQL returning the violating rows.
#[derive(Debug, Clone)]
pub struct DataTest {
    pub name: String,
    pub path: PathBuf,
    pub parsed: Parsed,
    /// `error` (blocks the swap) or `warn`.
    pub severity: String,
    /// For a generic test from a `.yml` file: what it checks.
    pub on: Option<super::docs::TestedColumn>,
}

#[derive(Debug, Clone, Default)]
pub struct Project {
    pub models: BTreeMap<String, Model>,
    pub tests: Vec<DataTest>,
    /// `vars:` from `dbt_project.yml`, as `{{ var('…') }}` renders each (one setting read by
    /// every model, dbt's and chiso's builds alike).
    pub vars: BTreeMap<String, String>,
}

/// Reads `vars:` from `sql_dir/dbt_project.yml` (none when the file is absent). Values are
/// scalars, rendered as dbt renders them (`10`, `2000-01-01`).
pub fn load_vars(sql_dir: &Path) -> Result<BTreeMap<String, String>, String> {
    #[derive(serde::Deserialize)]
    struct DbtProject {
        #[serde(default)]
        vars: BTreeMap<String, serde_norway::Value>,
    }
    let path = sql_dir.join("dbt_project.yml");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let project: DbtProject = serde_norway::from_str(&text).map_err(|e| {
        let line = e.location().map_or(0, |l| l.line());
        format!("{}:{line}: {e}", path.display())
    })?;
    project
        .vars
        .into_iter()
        .map(|(k, v)| {
            let text = match &v {
                serde_norway::Value::String(s) => s.clone(),
                serde_norway::Value::Number(n) => n.to_string(),
                serde_norway::Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(format!(
                        "{}: vars.{k}: expected a string, number or boolean",
                        path.display()
                    ))
                }
            };
            Ok((k, text))
        })
        .collect()
}

impl Project {
    /// Reads every model and test under `sql_dir`; all problems are returned together.
    pub fn load(sql_dir: &Path) -> Result<Project, Vec<String>> {
        let files = super::files_with_extension(sql_dir, "sql")
            .map_err(|e| vec![format!("{}: {e}", sql_dir.display())])?;
        let tests_dir = sql_dir.join("tests");
        let mut p = Project {
            vars: load_vars(sql_dir).map_err(|e| vec![e])?,
            ..Project::default()
        };
        let mut errors = Vec::new();
        for path in files {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            let mut parsed = match template::parse(&text) {
                Ok(p) => p,
                Err(e) => {
                    errors.push(format!("{}:{}: {}", path.display(), e.line, e.message));
                    continue;
                }
            };
            // The values a file reads are part of what it is: a changed var rebuilds it.
            let used: Vec<(String, String)> = parsed
                .vars()
                .into_iter()
                .map(|v| {
                    let value = p.vars.get(&v).cloned().unwrap_or_default();
                    (v, value)
                })
                .collect();
            if let Err(e) = parsed.bind_vars(&p.vars) {
                errors.push(format!("{}: {e}", path.display()));
                continue;
            }
            if ["pre_hook", "pre-hook", "post_hook", "post-hook"]
                .iter()
                .flat_map(|k| parsed.config_list(k))
                .any(|h| template::parse(&h).is_ok_and(|h| !h.vars().is_empty()))
            {
                errors.push(format!(
                    "{}: var() in a hook is not supported; use it in the model's SQL",
                    path.display()
                ));
                continue;
            }
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            if path.starts_with(&tests_dir) {
                let severity = parsed.config_str("severity").unwrap_or("error").to_string();
                p.tests.push(DataTest {
                    name,
                    path,
                    parsed,
                    severity,
                    on: None,
                });
                continue;
            }
            let materialized = match parsed.config_str("materialized").unwrap_or("view") {
                "view" => Materialized::View,
                "table" => Materialized::Table,
                "incremental" => Materialized::Incremental,
                other => {
                    errors.push(format!(
                        "{}: materialized={other:?}: expected view, table or incremental",
                        path.display()
                    ));
                    continue;
                }
            };
            if materialized == Materialized::Incremental {
                match parsed.config_str("incremental_strategy").unwrap_or("delete+insert") {
                    "append" => {}
                    "delete+insert" if parsed.config_list("unique_key").is_empty() => {
                        errors.push(format!(
                            "{}: an incremental model needs config(unique_key='…') (or incremental_strategy='append')",
                            path.display()
                        ))
                    }
                    "delete+insert" => {}
                    other => errors.push(format!(
                        "{}: incremental_strategy={other:?}: expected delete+insert or append",
                        path.display()
                    )),
                }
            }
            if let Some(other) = p.models.get(&name) {
                errors.push(format!(
                    "{}: model {name} is also defined in {}; model names are file names and must be unique",
                    path.display(),
                    other.path.display()
                ));
                continue;
            }
            let refs = parsed.refs();
            let tags = parsed.config_list("tags");
            p.models.insert(
                name.clone(),
                Model {
                    name,
                    path,
                    parsed,
                    materialized,
                    tags,
                    refs,
                    sql_sha256: {
                        use sha2::Digest;
                        let mut h = sha2::Sha256::new();
                        h.update(text.as_bytes());
                        for (k, v) in &used {
                            h.update(format!("\n-- var {k} = {v}").as_bytes());
                        }
                        format!("{:x}", h.finalize())
                    },
                    doc: None,
                },
            );
        }
        match super::docs::load(sql_dir) {
            Ok((docs, generic)) => {
                for (file, doc) in docs {
                    match p.models.get_mut(&doc.name) {
                        Some(m) => m.doc = Some(doc),
                        None => errors.push(format!(
                            "{}: documents model {}, which has no .sql file",
                            file.display(),
                            doc.name
                        )),
                    }
                }
                for g in generic {
                    match super::docs::parse_test(&g).and_then(|mut parsed| {
                        parsed
                            .bind_vars(&p.vars)
                            .map_err(|e| format!("{}: {}: {e}", g.file.display(), g.name))?;
                        Ok(parsed)
                    }) {
                        Ok(parsed) => p.tests.push(DataTest {
                            name: g.name,
                            path: g.file,
                            parsed,
                            severity: g.severity,
                            on: Some(g.on),
                        }),
                        Err(e) => errors.push(e),
                    }
                }
            }
            Err(mut e) => errors.append(&mut e),
        }
        for m in p.models.values() {
            for r in &m.refs {
                if !p.models.contains_key(r) {
                    errors.push(format!(
                        "{}: ref('{r}') names no model under {}",
                        m.path.display(),
                        sql_dir.display()
                    ));
                }
            }
        }
        for t in &p.tests {
            for r in t.parsed.refs() {
                if !p.models.contains_key(&r) {
                    errors.push(format!("{}: ref('{r}') names no model", t.path.display()));
                }
            }
        }
        // Every relation a model or test reads goes through ref() or source(): a table named
        // directly (another model, information_schema) is invisible to the graph, so a runner
        // (chiso's or dbt's) may run it before what it reads exists.
        let files = p
            .models
            .values()
            .map(|m| (&m.path, &m.parsed))
            .chain(p.tests.iter().map(|t| (&t.path, &t.parsed)));
        for (path, parsed) in files {
            for name in relations_read_directly(parsed) {
                errors.push(format!(
                    "{}: reads {name} directly; read a model with {{{{ ref('…') }}}} and a lake dataset with {{{{ source('…', '…') }}}}",
                    path.display()
                ));
            }
        }
        if errors.is_empty() {
            if let Err(cycle) = p.order(&p.models.keys().cloned().collect()) {
                errors.push(cycle);
            }
        }
        if errors.is_empty() {
            Ok(p)
        } else {
            Err(errors)
        }
    }

    /// `names` in dependency order (dependencies first), or the cycle found.
    pub fn order(&self, names: &BTreeSet<String>) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        let mut state: BTreeMap<&str, u8> = BTreeMap::new(); // 1 visiting, 2 done
        fn visit<'a>(
            p: &'a Project,
            n: &'a str,
            names: &BTreeSet<String>,
            state: &mut BTreeMap<&'a str, u8>,
            stack: &mut Vec<&'a str>,
            out: &mut Vec<String>,
        ) -> Result<(), String> {
            match state.get(n) {
                Some(2) => return Ok(()),
                Some(1) => {
                    let start = stack.iter().position(|s| *s == n).unwrap_or(0);
                    let mut cycle: Vec<&str> = stack[start..].to_vec();
                    cycle.push(n);
                    return Err(format!(
                        "models refer to each other in a cycle: {}",
                        cycle.join(" -> ")
                    ));
                }
                _ => {}
            }
            state.insert(n, 1);
            stack.push(n);
            for r in &p.models[n].refs {
                visit(p, r, names, state, stack, out)?;
            }
            stack.pop();
            state.insert(n, 2);
            if names.contains(n) {
                out.push(n.to_string());
            }
            Ok(())
        }
        let mut stack = Vec::new();
        for n in names {
            visit(self, n, names, &mut state, &mut stack, &mut out)?;
        }
        Ok(out)
    }

    fn children(&self, name: &str) -> Vec<&str> {
        self.models
            .values()
            .filter(|m| m.refs.iter().any(|r| r == name))
            .map(|m| m.name.as_str())
            .collect()
    }

    /// Models chosen by dbt-style selectors; none selects every model.
    pub fn select(&self, selectors: &[String]) -> Result<BTreeSet<String>, String> {
        if selectors.is_empty() {
            return Ok(self.models.keys().cloned().collect());
        }
        let mut out = BTreeSet::new();
        for sel in selectors.iter().flat_map(|s| s.split_whitespace()) {
            if let Some(tag) = sel.strip_prefix("tag:") {
                let hit: Vec<String> = self
                    .models
                    .values()
                    .filter(|m| m.tags.iter().any(|t| t == tag))
                    .map(|m| m.name.clone())
                    .collect();
                if hit.is_empty() {
                    return Err(format!("--select {sel}: no model has tag {tag:?}"));
                }
                out.extend(hit);
                continue;
            }
            let up = sel.starts_with('+');
            let down = sel.ends_with('+');
            let name = sel.trim_matches('+');
            if !self.models.contains_key(name) {
                return Err(format!("--select {sel}: no model named {name:?}"));
            }
            out.insert(name.to_string());
            if up {
                let mut todo = vec![name.to_string()];
                while let Some(n) = todo.pop() {
                    for r in &self.models[&n].refs {
                        if out.insert(r.clone()) {
                            todo.push(r.clone());
                        }
                    }
                }
            }
            if down {
                let mut todo = vec![name.to_string()];
                while let Some(n) = todo.pop() {
                    for c in self.children(&n) {
                        if out.insert(c.to_string()) {
                            todo.push(c.to_string());
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The relations a model's SQL names after `from`, `join`, `describe` or `summarize` that are
/// neither a `ref()`, a `source()`, `this`, nor a CTE of its own, and the catalog's table
/// functions it calls (`duckdb_columns()`, `pragma_table_info(…)`): tables read behind the
/// graph's back. Other table functions (`read_csv(…)`, `range(…)`) read no relation. Comments
/// and string literals are skipped. (A relation named after a comma, `from a, b`, is not
/// looked for.)
pub fn relations_read_directly(parsed: &Parsed) -> Vec<String> {
    use std::sync::LazyLock;
    static COMMENT: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(r"(?ms)--[^\n]*$|/\*.*?\*/|'(?:[^']|'')*'").expect("valid")
    });
    static CATALOG: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(r"(?i)\b((?:duckdb|pragma)_[a-z_]+)\s*\(").expect("valid")
    });
    static CTE: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(
            r"(?i)\b([a-z_][a-z0-9_]*)\s*(?:\([^()]*\))?\s+as\s+(?:not\s+)?(?:materialized\s+)?\(",
        )
        .expect("valid")
    });
    static READ: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(
            r#"(?i)(\bdistinct\s+)?\b(?:from|join|describe|summarize)\s+("?[a-z_][a-z0-9_]*"?(?:\."?[a-z_][a-z0-9_]*"?)*)\s*(\()?"#,
        )
        .expect("valid")
    });
    /// Renders every `ref()`, `source()` and `this` as one placeholder name.
    struct Placeholder;
    impl template::Resolve for Placeholder {
        fn model(&self, _: &str) -> String {
            " __relation__ ".into()
        }
        fn source(&self, _: &str, _: &str) -> String {
            " __relation__ ".into()
        }
        fn this(&self) -> String {
            " __relation__ ".into()
        }
    }
    // Both renderings, so that each branch of `{% if is_incremental() %}` is read.
    let text = format!(
        "{}\n{}",
        parsed.render(&Placeholder, true),
        parsed.render(&Placeholder, false)
    );
    let text = COMMENT.replace_all(&text, " ");
    let ctes: BTreeSet<String> = CTE
        .captures_iter(&text)
        .map(|c| c[1].to_ascii_lowercase())
        .collect();
    let mut out = Vec::new();
    for c in CATALOG.captures_iter(&text) {
        let name = format!("{}()", c[1].to_ascii_lowercase());
        if !out.contains(&name) {
            out.push(name);
        }
    }
    for c in READ.captures_iter(&text) {
        let name = c[2].to_ascii_lowercase().replace('"', "");
        // `is [not] distinct from x`, a table function, our placeholder, a keyword
        if c.get(1).is_some()
            || c.get(3).is_some()
            || name == "__relation__"
            || ctes.contains(&name)
            || matches!(name.as_str(), "lateral" | "unnest" | "values" | "select")
        {
            continue;
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes a file below `dir`, making folders as needed.
    pub(crate) fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// A relation named directly (not through ref() or source()) is found; CTEs, table
    /// functions, comments, strings and `is distinct from` are not relations.
    #[test]
    fn relations_read_behind_the_graph_are_found() {
        let sql = "{{ config(materialized='table') }}
-- read from the lake, not from anything else
with recursive
a as not materialized (select * from {{ ref('m') }}),
chain(x, y) as (select 1, 2 union all select x, y from chain join a using (x)),
b as (select column_name from information_schema.columns where table_name = 'from t')
select * from b
join range(1, 3) as r(i) on true
left join main.other as o on o.x is not distinct from b.x
left join stray_table using (x)
left join \"quoted_model\" as q using (x)
/* a block comment: select * from commented_out */
left join (select * from pragma_table_info('m')) as p on true
{% if is_incremental() %} where x > (select max(x) from {{ this }}) {% endif %}";
        let parsed = template::parse(sql).unwrap();
        assert_eq!(
            relations_read_directly(&parsed),
            vec![
                "pragma_table_info()",
                "information_schema.columns",
                "main.other",
                "stray_table",
                "quoted_model"
            ]
        );
        let described = template::parse("select * from (describe other_model)").unwrap();
        assert_eq!(relations_read_directly(&described), vec!["other_model"]);
        // The loader names the file.
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "m.sql", "select 1 as x");
        write(
            d.path(),
            "tests/t.sql",
            "select * from information_schema.columns where table_name = 'm'",
        );
        let errors = Project::load(d.path()).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("t.sql: reads information_schema.columns directly")),
            "{errors:?}"
        );
    }

    #[test]
    fn graph_order_and_selection() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "staging/stg_a.sql", "select 1 as x");
        write(
            d.path(),
            "facts/fct_b.sql",
            "{{ config(materialized='table', tags=['core']) }} select * from {{ ref('stg_a') }}",
        );
        write(
            d.path(),
            "index/mart_c.sql",
            "select * from {{ ref('fct_b') }} join {{ ref('stg_a') }} using (x)",
        );
        write(
            d.path(),
            "tests/no_nulls.sql",
            "select * from {{ ref('fct_b') }} where x is null",
        );
        let p = Project::load(d.path()).unwrap();
        assert_eq!(p.tests.len(), 1);
        let all = p.order(&p.select(&[]).unwrap()).unwrap();
        assert_eq!(all, vec!["stg_a", "fct_b", "mart_c"]);
        assert_eq!(
            p.order(&p.select(&["fct_b+".into()]).unwrap()).unwrap(),
            vec!["fct_b", "mart_c"]
        );
        assert_eq!(
            p.order(&p.select(&["+fct_b".into()]).unwrap()).unwrap(),
            vec!["stg_a", "fct_b"]
        );
        assert_eq!(
            p.order(&p.select(&["tag:core".into()]).unwrap()).unwrap(),
            vec!["fct_b"]
        );
        assert!(p
            .select(&["nope".into()])
            .unwrap_err()
            .contains("no model named"));
    }

    #[test]
    fn unknown_refs_and_cycles_are_reported() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.sql", "select * from {{ ref('b') }}");
        write(d.path(), "b.sql", "select * from {{ ref('a') }}");
        write(d.path(), "c.sql", "select * from {{ ref('zz') }}");
        let e = Project::load(d.path()).unwrap_err();
        assert!(
            e.iter().any(|m| m.contains("ref('zz') names no model")),
            "{e:?}"
        );
        std::fs::remove_file(d.path().join("c.sql")).unwrap();
        let e = Project::load(d.path()).unwrap_err();
        assert!(e[0].contains("cycle: a -> b -> a"), "{e:?}");
    }

    #[test]
    fn incremental_models_need_a_key_or_append() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "a.sql",
            "{{ config(materialized='incremental') }} select 1 as x",
        );
        write(d.path(), "b.sql", "{{ config(materialized='incremental', incremental_strategy='merge', unique_key='x') }} select 1 as x");
        write(
            d.path(),
            "c.sql",
            "{{ config(materialized='incremental', incremental_strategy='append') }} select 1 as x",
        );
        write(
            d.path(),
            "e.sql",
            "{{ config(materialized='incremental', unique_key=['x', 'y']) }} select 1 as x, 2 as y",
        );
        let e = Project::load(d.path()).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e.iter()
                .any(|m| m.contains("a.sql") && m.contains("needs config(unique_key")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("b.sql") && m.contains("\"merge\"")),
            "{e:?}"
        );
    }

    #[test]
    fn vars_come_from_dbt_project_and_are_part_of_the_digest() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.sql", "select {{ var('grace_days') }} as g");
        write(
            d.path(),
            "b.sql",
            "{{ config(post_hook=\"select {{ var('grace_days') }}\") }} select 1 as x",
        );
        write(d.path(), "c.sql", "select {{ var('nope') }} as n");
        let project = |vars: &str| {
            write(
                d.path(),
                "dbt_project.yml",
                &format!("name: t\nvars:\n{vars}"),
            );
            Project::load(d.path())
        };
        let e = project("  grace_days: 10\n").unwrap_err();
        assert!(
            e.iter()
                .any(|m| m.contains("b.sql") && m.contains("var() in a hook")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("c.sql") && m.contains("var('nope') is not set")),
            "{e:?}"
        );
        std::fs::remove_file(d.path().join("b.sql")).unwrap();
        std::fs::remove_file(d.path().join("c.sql")).unwrap();
        struct Names;
        impl template::Resolve for Names {
            fn model(&self, name: &str) -> String {
                name.to_string()
            }
            fn source(&self, feed: &str, dataset: &str) -> String {
                format!("{feed}_{dataset}")
            }
            fn this(&self) -> String {
                "this".into()
            }
        }
        let ten = project("  grace_days: 10\n").unwrap();
        assert_eq!(
            ten.models["a"].parsed.render(&Names, false),
            "select 10 as g"
        );
        let twenty = project("  grace_days: 20\n").unwrap();
        assert_ne!(ten.models["a"].sql_sha256, twenty.models["a"].sql_sha256);
        let e = project("  grace_days: [1, 2]\n").unwrap_err();
        assert!(e[0].contains("vars.grace_days"), "{e:?}");
    }
}
