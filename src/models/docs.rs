//! Model documentation and generic tests from the `.yml` files beside the models, in dbt's
//! format: a description that states the grain, every column with its description, and
//! `data_tests` (`unique`, `not_null`, `accepted_values`, `relationships`) turned into SQL that
//! returns the violating rows. Owns reading those files; runs nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::template;

#[derive(Debug, Deserialize)]
struct YmlFile {
    #[serde(default)]
    models: Vec<ModelDoc>,
}

/// A model's documentation.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelDoc {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub columns: Vec<ColumnDoc>,
    #[serde(default, alias = "tests")]
    pub data_tests: Vec<TestSpec>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ColumnDoc {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, alias = "tests")]
    pub data_tests: Vec<TestSpec>,
    /// dbt's free-form `meta`; chiso reads `personal: true` (names, ID numbers, phones,
    /// officers: never in anything published).
    #[serde(default)]
    pub meta: BTreeMap<String, serde_norway::Value>,
}

impl ColumnDoc {
    /// Marked `meta: {personal: true}`.
    pub fn is_personal(&self) -> bool {
        self.meta.get("personal").and_then(|v| v.as_bool()) == Some(true)
    }
}

/// `unique`, or `{accepted_values: {values: […]}}`, as dbt writes them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TestSpec {
    Name(String),
    Configured(BTreeMap<String, serde_norway::Value>),
}

/// A generic test rendered to SQL (with `ref()` left for the builder to resolve).
#[derive(Debug, Clone)]
pub struct GenericTest {
    pub name: String,
    pub file: PathBuf,
    pub sql: String,
    /// What it checks: the test (`unique`, `not_null`, …), the model and the column.
    pub on: TestedColumn,
}

/// The generic test, model and column behind a test from a `.yml` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestedColumn {
    pub kind: String,
    pub model: String,
    pub column: String,
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn literal(v: &serde_norway::Value) -> Option<String> {
    match v {
        serde_norway::Value::String(s) => Some(format!("'{}'", s.replace('\'', "''"))),
        serde_norway::Value::Number(n) => Some(n.to_string()),
        serde_norway::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The SQL of one test on `model`.`column`, or why it cannot be made.
pub fn test_sql(model: &str, column: &str, spec: &TestSpec) -> Result<(String, String), String> {
    let m = format!("{{{{ ref('{model}') }}}}");
    let c = ident(column);
    let (kind, args) = match spec {
        TestSpec::Name(n) => (n.as_str(), None),
        TestSpec::Configured(map) if map.len() == 1 => {
            let (k, v) = map.iter().next().expect("one entry");
            (k.as_str(), Some(v))
        }
        TestSpec::Configured(_) => return Err("a test is a name or a map with one entry".into()),
    };
    // dbt 1.10 nests a generic test's arguments under `arguments:`; older projects put them
    // beside the test's name. Both are read.
    let arg = |name: &str| {
        args.and_then(|a| {
            a.get("arguments")
                .and_then(|x| x.get(name))
                .or_else(|| a.get(name))
        })
    };
    let sql = match kind {
        "unique" => {
            format!("select {c} from {m} where {c} is not null group by {c} having count(*) > 1")
        }
        "not_null" => format!("select * from {m} where {c} is null"),
        "accepted_values" => {
            let values = arg("values")
                .and_then(|v| v.as_sequence())
                .ok_or("accepted_values needs values: [...]")?;
            let list: Vec<String> = values
                .iter()
                .map(literal)
                .collect::<Option<_>>()
                .ok_or("accepted values must be scalars")?;
            format!(
                "select * from {m} where {c} is not null and {c} not in ({})",
                list.join(", ")
            )
        }
        "relationships" => {
            let to = arg("to")
                .and_then(|v| v.as_str())
                .ok_or("relationships needs to: ref('model')")?;
            let field = arg("field")
                .and_then(|v| v.as_str())
                .ok_or("relationships needs field")?;
            let to_model = to
                .trim()
                .strip_prefix("ref(")
                .and_then(|s| s.strip_suffix(')'))
                .map(|s| s.trim().trim_matches(|q| q == '\'' || q == '"'))
                .ok_or("relationships to: must be ref('model')")?;
            format!(
                "select * from {m} as child where child.{c} is not null and not exists \
                 (select 1 from {{{{ ref('{to_model}') }}}} as parent where parent.{f} = child.{c})",
                f = ident(field)
            )
        }
        other => {
            return Err(format!(
            "unknown test {other:?}: expected unique, not_null, accepted_values or relationships"
        ))
        }
    };
    Ok((format!("{kind}_{model}_{column}"), sql))
}

/// Model docs with the file each came from, and the generic tests they declare.
pub type Loaded = (Vec<(PathBuf, ModelDoc)>, Vec<GenericTest>);

/// Reads every `*.yml` under `dir` (except `dbt_project.yml`): model docs and their tests.
pub fn load(dir: &Path) -> Result<Loaded, Vec<String>> {
    let files: Vec<PathBuf> = super::files_with_extension(dir, "yml")
        .map_err(|e| vec![format!("{}: {e}", dir.display())])?
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "dbt_project.yml"))
        .collect();
    let mut docs = Vec::new();
    let mut tests = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        let file: YmlFile = match serde_norway::from_str(&text) {
            Ok(f) => f,
            Err(e) => {
                let line = e.location().map_or(0, |l| l.line());
                errors.push(format!("{}:{line}: {e}", path.display()));
                continue;
            }
        };
        for m in file.models {
            for col in &m.columns {
                for spec in &col.data_tests {
                    match test_sql(&m.name, &col.name, spec) {
                        Ok((name, sql)) => tests.push(GenericTest {
                            on: TestedColumn {
                                kind: name
                                    .strip_suffix(&format!("_{}_{}", m.name, col.name))
                                    .unwrap_or(&name)
                                    .to_string(),
                                model: m.name.clone(),
                                column: col.name.clone(),
                            },
                            name,
                            file: path.clone(),
                            sql,
                        }),
                        Err(e) => errors.push(format!(
                            "{}: model {} column {}: {e}",
                            path.display(),
                            m.name,
                            col.name
                        )),
                    }
                }
            }
            docs.push((path.clone(), m));
        }
    }
    if errors.is_empty() {
        Ok((docs, tests))
    } else {
        Err(errors)
    }
}

/// Parses a generic test's SQL as a model template (it holds `ref()` calls).
pub fn parse_test(t: &GenericTest) -> Result<template::Parsed, String> {
    template::parse(&t.sql).map_err(|e| format!("{}: {}: {e}", t.file.display(), t.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_tests_become_sql() {
        let spec: Vec<TestSpec> = serde_norway::from_str(
            "- unique\n- accepted_values:\n    values: [a, 'b''c', 3]\n- relationships:\n    to: ref('dim_units')\n    field: unit_id\n",
        )
        .unwrap();
        let (n, sql) = test_sql("m", "x", &spec[0]).unwrap();
        assert_eq!(n, "unique_m_x");
        assert!(sql.contains("group by \"x\" having count(*) > 1"));
        let (_, sql) = test_sql("m", "x", &spec[1]).unwrap();
        assert!(sql.ends_with("not in ('a', 'b''c', 3)"), "{sql}");
        let (_, sql) = test_sql("m", "x", &spec[2]).unwrap();
        assert!(
            sql.contains("{{ ref('dim_units') }} as parent where parent.\"unit_id\" = child.\"x\""),
            "{sql}"
        );
        assert!(test_sql("m", "x", &TestSpec::Name("uniq".into()))
            .unwrap_err()
            .contains("unknown test"));
        // dbt 1.10's form: arguments nested under `arguments:`.
        let spec: Vec<TestSpec> =
            serde_norway::from_str("- accepted_values:\n    arguments:\n      values: [a, b]\n")
                .unwrap();
        let (_, sql) = test_sql("m", "x", &spec[0]).unwrap();
        assert!(sql.ends_with("not in ('a', 'b')"), "{sql}");
    }
}
