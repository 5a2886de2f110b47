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
    /// `error` (blocks the publication) or `warn`, from the test's `config: {severity: …}`.
    pub severity: String,
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

/// One generic test made from a `.yml` entry: its name, SQL and severity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestSql {
    pub name: String,
    /// What it checks: `unique`, `not_null`, … on `column` (a model's test: its column_name).
    pub kind: String,
    pub column: String,
    pub sql: String,
    pub severity: String,
}

/// The SQL of one test on `model`.`column` (a column's test), or on `model` with the
/// `column_name` its arguments give (a model's test, as dbt writes `unique: {column_name: …}`
/// under the model's own `data_tests:`; the column name may be an expression), or why it cannot
/// be made. dbt's test configs are honoured: `config: {severity: warn}` (or `severity:` beside
/// the arguments, as older dbt wrote it) makes the test a warning, and `config: {where: …}`
/// tests only the model's rows that match.
pub fn test_sql(model: &str, column: Option<&str>, spec: &TestSpec) -> Result<TestSql, String> {
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
    let config = |name: &str| {
        args.and_then(|a| {
            a.get("config")
                .and_then(|x| x.get(name))
                .or_else(|| a.get(name))
        })
    };
    let severity = match config("severity") {
        None => "error".to_string(),
        Some(v) => match v.as_str().map(str::to_ascii_lowercase).as_deref() {
            Some(s @ ("warn" | "error")) => s.to_string(),
            _ => return Err(format!("severity must be warn or error, not {v:?}")),
        },
    };
    let (c, column_label) = match column {
        Some(col) => (ident(col), col.to_string()),
        None => {
            let expr = arg("column_name")
                .and_then(|v| v.as_str())
                .ok_or("a model's test needs column_name (the column or expression it tests)")?;
            // a name from the expression: its words joined by `_`
            let label = expr
                .split(|ch: char| !ch.is_ascii_alphanumeric() && ch != '_')
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join("_")
                .to_ascii_lowercase();
            (expr.to_string(), label)
        }
    };
    let m = match config("where") {
        None => format!("{{{{ ref('{model}') }}}}"),
        Some(w) => {
            let w = w
                .as_str()
                .ok_or("where must be a SQL condition (a string)")?;
            format!("(select * from {{{{ ref('{model}') }}}} where {w})")
        }
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
    Ok(TestSql {
        name: format!("{kind}_{model}_{column_label}"),
        kind: kind.to_string(),
        column: column_label,
        sql,
        severity,
    })
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
            // The model's own tests (dbt's model-level `data_tests:`), then each column's.
            let specs = m.data_tests.iter().map(|s| (None, s)).chain(
                m.columns
                    .iter()
                    .flat_map(|c| c.data_tests.iter().map(move |s| (Some(c.name.as_str()), s))),
            );
            for (column, spec) in specs {
                match test_sql(&m.name, column, spec) {
                    Ok(t) => tests.push(GenericTest {
                        on: TestedColumn {
                            kind: t.kind,
                            model: m.name.clone(),
                            column: t.column,
                        },
                        name: t.name,
                        file: path.clone(),
                        sql: t.sql,
                        severity: t.severity,
                    }),
                    Err(e) => errors.push(match column {
                        Some(col) => {
                            format!("{}: model {} column {col}: {e}", path.display(), m.name)
                        }
                        None => format!("{}: model {}: {e}", path.display(), m.name),
                    }),
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
        let t = test_sql("m", Some("x"), &spec[0]).unwrap();
        assert_eq!(
            (t.name.as_str(), t.severity.as_str()),
            ("unique_m_x", "error")
        );
        assert!(t.sql.contains("group by \"x\" having count(*) > 1"));
        let t = test_sql("m", Some("x"), &spec[1]).unwrap();
        assert!(t.sql.ends_with("not in ('a', 'b''c', 3)"), "{}", t.sql);
        let t = test_sql("m", Some("x"), &spec[2]).unwrap();
        assert!(
            t.sql.contains(
                "{{ ref('dim_units') }} as parent where parent.\"unit_id\" = child.\"x\""
            ),
            "{}",
            t.sql
        );
        assert!(test_sql("m", Some("x"), &TestSpec::Name("uniq".into()))
            .unwrap_err()
            .contains("unknown test"));
        // dbt 1.10's form: arguments nested under `arguments:`.
        let spec: Vec<TestSpec> =
            serde_norway::from_str("- accepted_values:\n    arguments:\n      values: [a, b]\n")
                .unwrap();
        let t = test_sql("m", Some("x"), &spec[0]).unwrap();
        assert!(t.sql.ends_with("not in ('a', 'b')"), "{}", t.sql);
    }

    /// dbt's test configs: `severity` (under `config:` or, as older dbt wrote it, beside the
    /// arguments) and `where`; and a model's own tests, on the column or expression their
    /// `column_name` gives.
    #[test]
    fn test_configs_and_model_tests_are_read_as_dbt_reads_them() {
        let spec: Vec<TestSpec> = serde_norway::from_str(
            "- not_null:\n    config:\n      severity: warn\n      where: \"period > '2026'\"\n\
             - unique:\n    severity: WARN\n\
             - unique:\n    arguments:\n      column_name: \"unit_id || '-' || period\"\n\
             - not_null:\n    config:\n      severity: sometimes\n",
        )
        .unwrap();
        let t = test_sql("m", Some("x"), &spec[0]).unwrap();
        assert_eq!(t.severity, "warn");
        assert_eq!(
            t.sql,
            "select * from (select * from {{ ref('m') }} where period > '2026') where \"x\" is null"
        );
        assert_eq!(test_sql("m", Some("x"), &spec[1]).unwrap().severity, "warn");
        let t = test_sql("m", None, &spec[2]).unwrap();
        assert_eq!(t.name, "unique_m_unit_id_period");
        assert!(
            t.sql
                .starts_with("select unit_id || '-' || period from {{ ref('m') }}"),
            "{}",
            t.sql
        );
        assert!(test_sql("m", None, &TestSpec::Name("unique".into()))
            .unwrap_err()
            .contains("column_name"));
        assert!(test_sql("m", Some("x"), &spec[3])
            .unwrap_err()
            .contains("severity must be warn or error"));
        // Loaded from a .yml file: the model's test is a test of the project, with its severity.
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("m.yml"),
            "version: 2\nmodels:\n  - name: m\n    data_tests:\n      - unique:\n          arguments:\n            column_name: a\n          config:\n            severity: warn\n    columns:\n      - name: a\n        data_tests: [not_null]\n",
        )
        .unwrap();
        let (_, tests) = load(d.path()).unwrap();
        let got: Vec<(&str, &str)> = tests
            .iter()
            .map(|t| (t.name.as_str(), t.severity.as_str()))
            .collect();
        assert_eq!(got, vec![("unique_m_a", "warn"), ("not_null_m_a", "error")]);
    }
}
