//! The subset of dbt's Jinja that chiso models use, parsed without a template engine:
//! `{{ ref('model') }}`, `{{ source('feed', 'dataset') }}`, `{{ config(…) }}` (its `pre_hook`
//! strings are templates too), `{{ this }}`, `{{ var('name') }}` (a value from `vars:` in
//! `dbt_project.yml`, bound by [`Parsed::bind_vars`]),
//! `{% if is_incremental() %} … {% else %} … {% endif %}` and `{# comments #}`. Anything else is an error
//! naming the file and line, so a model that parses here means the same under dbt-duckdb.
//!
//! Owns parsing and rendering of one file's text; knows nothing of DuckDB or the graph.

use std::collections::BTreeMap;
use std::fmt;

/// A value in `config(…)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigValue {
    Str(String),
    List(Vec<String>),
    Bool(bool),
}

/// One piece of a parsed model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Text(String),
    Ref(String),
    Source(String, String),
    This,
    /// `{{ var('name') }}`: replaced by the value's text once the project's vars are bound.
    Var(String),
    /// The first branch when the model is built incrementally on top of an existing table,
    /// the second (`{% else %}`, maybe empty) otherwise.
    IfIncremental(Vec<Segment>, Vec<Segment>),
}

/// A parsed model file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    pub segments: Vec<Segment>,
    pub config: BTreeMap<String, ConfigValue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl Parsed {
    /// Models this one reads, in order of first use.
    pub fn refs(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.segments, &mut |s| {
            if let Segment::Ref(r) = s {
                if !out.contains(r) {
                    out.push(r.clone());
                }
            }
        });
        out
    }

    /// Lake datasets this model reads.
    pub fn sources(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        walk(&self.segments, &mut |s| {
            if let Segment::Source(a, b) = s {
                let v = (a.clone(), b.clone());
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        });
        out
    }

    /// Project variables this file reads (`var('…')`), in order of first use.
    pub fn vars(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.segments, &mut |s| {
            if let Segment::Var(v) = s {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
        });
        out
    }

    /// Replaces every `var('…')` by its value's text, as dbt renders `{{ var('…') }}`; a name
    /// `vars` does not hold is an error naming it.
    pub fn bind_vars(&mut self, vars: &BTreeMap<String, String>) -> Result<(), String> {
        fn bind(segs: &mut [Segment], vars: &BTreeMap<String, String>) -> Result<(), String> {
            for s in segs.iter_mut() {
                match s {
                    Segment::Var(name) => match vars.get(name.as_str()) {
                        Some(v) => *s = Segment::Text(v.clone()),
                        None => {
                            return Err(format!(
                                "var('{name}') is not set under vars: in dbt_project.yml (set: {})",
                                if vars.is_empty() {
                                    "none".to_string()
                                } else {
                                    vars.keys().cloned().collect::<Vec<_>>().join(", ")
                                }
                            ))
                        }
                    },
                    Segment::IfIncremental(then, other) => {
                        bind(then, vars)?;
                        bind(other, vars)?
                    }
                    _ => {}
                }
            }
            Ok(())
        }
        bind(&mut self.segments, vars)
    }

    pub fn config_str(&self, key: &str) -> Option<&str> {
        match self.config.get(key) {
            Some(ConfigValue::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn config_list(&self, key: &str) -> Vec<String> {
        match self.config.get(key) {
            Some(ConfigValue::List(l)) => l.clone(),
            Some(ConfigValue::Str(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    }

    /// The SQL text with references resolved.
    pub fn render(&self, r: &dyn Resolve, incremental: bool) -> String {
        let mut out = String::new();
        render_into(&self.segments, r, incremental, &mut out);
        out
    }
}

/// How references become SQL.
pub trait Resolve {
    fn model(&self, name: &str) -> String;
    fn source(&self, feed: &str, dataset: &str) -> String;
    fn this(&self) -> String;
}

fn walk(segs: &[Segment], f: &mut dyn FnMut(&Segment)) {
    for s in segs {
        f(s);
        if let Segment::IfIncremental(then, other) = s {
            walk(then, f);
            walk(other, f);
        }
    }
}

fn render_into(segs: &[Segment], r: &dyn Resolve, incremental: bool, out: &mut String) {
    for s in segs {
        match s {
            Segment::Text(t) => out.push_str(t),
            Segment::Ref(m) => out.push_str(&r.model(m)),
            Segment::Source(a, b) => out.push_str(&r.source(a, b)),
            Segment::This => out.push_str(&r.this()),
            // Unbound (a file parsed outside a project): left as written, so DuckDB names it.
            Segment::Var(v) => out.push_str(&format!("var('{v}')")),
            Segment::IfIncremental(then, other) => {
                let branch = if incremental { then } else { other };
                render_into(branch, r, incremental, out)
            }
        }
    }
}

fn line_of(text: &str, pos: usize) -> usize {
    text[..pos.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// Parses a model's text.
pub fn parse(text: &str) -> Result<Parsed, TemplateError> {
    let mut parsed = Parsed::default();
    // Stack of open `if is_incremental()` blocks: each holds the segments before it, where it
    // started, and its first branch once `{% else %}` was seen.
    let mut stack: Vec<(Vec<Segment>, usize, Option<Vec<Segment>>)> = Vec::new();
    let mut current: Vec<Segment> = Vec::new();
    let mut pos = 0;
    let err = |at: usize, message: String| TemplateError {
        line: line_of(text, at),
        message,
    };
    while pos < text.len() {
        let rest = &text[pos..];
        let next = ["{{", "{%", "{#"]
            .iter()
            .filter_map(|m| rest.find(m).map(|i| (i, *m)))
            .min_by_key(|(i, _)| *i);
        let Some((i, marker)) = next else {
            current.push(Segment::Text(rest.to_string()));
            break;
        };
        if i > 0 {
            current.push(Segment::Text(rest[..i].to_string()));
        }
        let start = pos + i;
        let close = match marker {
            "{{" => "}}",
            "{%" => "%}",
            _ => "#}",
        };
        let inner_start = start + 2;
        // `}}` inside a quoted string (a hook in `config(pre_hook="… {{ this }} …")`) does not
        // close the expression.
        let found = if marker == "{{" {
            find_unquoted(&text[inner_start..], close)
        } else {
            text[inner_start..].find(close)
        };
        let Some(end) = found else {
            return Err(err(start, format!("{marker} is never closed with {close}")));
        };
        let inner = text[inner_start..inner_start + end]
            .trim()
            .trim_matches('-')
            .trim();
        pos = inner_start + end + 2;
        match marker {
            "{#" => {}
            "{{" => {
                let (name, args) = call(inner).map_err(|m| err(start, m))?;
                match (name.as_str(), args.len()) {
                    ("ref", 1) => current.push(Segment::Ref(arg_str(&args[0]).map_err(|m| err(start, m))?)),
                    ("source", 2) => current.push(Segment::Source(
                        arg_str(&args[0]).map_err(|m| err(start, m))?,
                        arg_str(&args[1]).map_err(|m| err(start, m))?,
                    )),
                    ("this", 0) if !inner.contains('(') => current.push(Segment::This),
                    ("var", 1) => current.push(Segment::Var(arg_str(&args[0]).map_err(|m| err(start, m))?)),
                    ("config", _) => {
                        for a in &args {
                            let (k, v) = a
                                .split_once('=')
                                .ok_or_else(|| err(start, format!("config argument {a:?} is not key=value")))?;
                            let v = config_value(v.trim()).map_err(|m| err(start, m))?;
                            parsed.config.insert(k.trim().to_string(), v);
                        }
                    }
                    _ => {
                        return Err(err(
                            start,
                            format!("unsupported template expression {{{{ {inner} }}}}: chiso models use ref(), source(), var(), config() and this"),
                        ))
                    }
                }
            }
            _ => {
                let compact: String = inner.split_whitespace().collect::<Vec<_>>().join(" ");
                match compact.as_str() {
                    "if is_incremental()" => {
                        stack.push((std::mem::take(&mut current), start, None));
                    }
                    "else" => match stack.last_mut() {
                        Some((_, _, then @ None)) => *then = Some(std::mem::take(&mut current)),
                        Some(_) => return Err(err(start, "a second {% else %} in one {% if %}".into())),
                        None => return Err(err(start, "{% else %} without {% if is_incremental() %}".into())),
                    },
                    "endif" => {
                        let Some((mut outer, _, then)) = stack.pop() else {
                            return Err(err(start, "{% endif %} without {% if is_incremental() %}".into()));
                        };
                        let last = std::mem::take(&mut current);
                        outer.push(match then {
                            Some(then) => Segment::IfIncremental(then, last),
                            None => Segment::IfIncremental(last, Vec::new()),
                        });
                        current = outer;
                    }
                    other => {
                        return Err(err(
                            start,
                            format!("unsupported template tag {{% {other} %}}: only {{% if is_incremental() %}} … {{% else %}} … {{% endif %}}"),
                        ))
                    }
                }
            }
        }
    }
    if let Some((_, at, _)) = stack.last() {
        return Err(err(
            *at,
            "{% if is_incremental() %} is never closed with {% endif %}".into(),
        ));
    }
    parsed.segments = current;
    Ok(parsed)
}

/// Splits `name(arg, arg)` into the name and raw arguments (commas inside quotes or brackets
/// do not split).
fn call(expr: &str) -> Result<(String, Vec<String>), String> {
    let Some(open) = expr.find('(') else {
        return Ok((expr.trim().to_string(), Vec::new()));
    };
    if !expr.trim_end().ends_with(')') {
        return Err(format!("{expr:?} is not a call"));
    }
    let name = expr[..open].trim().to_string();
    let inner = &expr[open + 1..expr.trim_end().len() - 1];
    let mut args = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut cur = String::new();
    for c in inner.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c)
            }
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                cur.push(c)
            }
            (None, '[' | '(') => {
                depth += 1;
                cur.push(c)
            }
            (None, ']' | ')') => {
                depth -= 1;
                cur.push(c)
            }
            (None, ',') if depth == 0 => args.push(std::mem::take(&mut cur).trim().to_string()),
            (None, c) => cur.push(c),
        }
    }
    if quote.is_some() {
        return Err(format!("unterminated string in {expr:?}"));
    }
    if !cur.trim().is_empty() {
        args.push(cur.trim().to_string());
    }
    Ok((name, args))
}

fn arg_str(a: &str) -> Result<String, String> {
    let a = a.trim();
    for q in ['\'', '"'] {
        if a.len() >= 2 && a.starts_with(q) && a.ends_with(q) {
            return Ok(a[1..a.len() - 1].to_string());
        }
    }
    Err(format!("{a} must be a quoted string"))
}

/// The first `pat` in `text` outside single- or double-quoted strings.
fn find_unquoted(text: &str, pat: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if text[i..].starts_with(pat) => return Some(i),
            None => {}
        }
    }
    None
}

fn config_value(v: &str) -> Result<ConfigValue, String> {
    match v {
        "true" | "True" => return Ok(ConfigValue::Bool(true)),
        "false" | "False" => return Ok(ConfigValue::Bool(false)),
        _ => {}
    }
    if v.starts_with('[') && v.ends_with(']') {
        // Items split like call arguments: commas inside quotes do not split.
        let (_, items) = call(&format!("list({})", &v[1..v.len() - 1]))?;
        let items = items
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(arg_str)
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(ConfigValue::List(items));
    }
    arg_str(v).map(ConfigValue::Str)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct R;
    impl Resolve for R {
        fn model(&self, name: &str) -> String {
            format!("main.{name}")
        }
        fn source(&self, feed: &str, dataset: &str) -> String {
            format!("lake_{feed}_{dataset}")
        }
        fn this(&self) -> String {
            "main.me".into()
        }
    }

    #[test]
    fn parses_refs_sources_config_and_incremental_blocks() {
        let text = "{{ config(materialized='incremental', unique_key='dossier_id', tags=['index', 'daily']) }}\n\
                    {# a comment #}\n\
                    select * from {{ ref('stg_portal__dossiers') }} d join {{ source(\"portal\", 'dossiers') }} s using (x)\n\
                    {% if is_incremental() %} where t > (select max(t) from {{ this }}) {% endif %}\n";
        let p = parse(text).unwrap();
        assert_eq!(p.refs(), vec!["stg_portal__dossiers"]);
        assert_eq!(
            p.sources(),
            vec![("portal".to_string(), "dossiers".to_string())]
        );
        assert_eq!(p.config_str("materialized"), Some("incremental"));
        assert_eq!(p.config_list("tags"), vec!["index", "daily"]);
        let full = p.render(&R, false);
        assert!(full.contains("from main.stg_portal__dossiers d join lake_portal_dossiers s"));
        assert!(!full.contains("where t >"));
        let inc = p.render(&R, true);
        assert!(inc.contains("where t > (select max(t) from main.me)"));
    }

    #[test]
    fn hooks_may_hold_templates_and_commas() {
        let p = parse(
            "{{ config(materialized='incremental', unique_key='k', pre_hook=[\"{% if is_incremental() %}SET VARIABLE a = (SELECT coalesce(max(t), 0) FROM {{ this }}){% endif %}\", 'SELECT 1']) }}select 1",
        )
        .unwrap();
        let hooks = p.config_list("pre_hook");
        assert_eq!(hooks.len(), 2, "{hooks:?}");
        let h = parse(&hooks[0]).unwrap();
        assert_eq!(
            h.render(&R, true),
            "SET VARIABLE a = (SELECT coalesce(max(t), 0) FROM main.me)"
        );
        assert_eq!(h.render(&R, false), "");
        assert_eq!(p.render(&R, true), "select 1");
    }

    #[test]
    fn else_branch_renders_on_full_builds_only() {
        let p =
            parse("a {% if is_incremental() %}inc {{ this }}{% else %}full{% endif %} b").unwrap();
        assert_eq!(p.render(&R, true), "a inc main.me b");
        assert_eq!(p.render(&R, false), "a full b");
        let e = parse("x\n{% else %}").unwrap_err();
        assert!(e.message.contains("without"), "{e}");
        let e = parse("{% if is_incremental() %}a{% else %}b\n{% else %}c{% endif %}").unwrap_err();
        assert_eq!(e.line, 2);
    }

    #[test]
    fn vars_render_their_value_once_bound() {
        let mut p = parse(
            "select {{ var('grace_days') }} {% if is_incremental() %}{{ var('since') }}{% endif %}",
        )
        .unwrap();
        assert_eq!(p.vars(), vec!["grace_days", "since"]);
        let mut vars = BTreeMap::from([("grace_days".to_string(), "10".to_string())]);
        let e = p.clone().bind_vars(&vars).unwrap_err();
        assert!(
            e.contains("var('since') is not set") && e.contains("grace_days"),
            "{e}"
        );
        vars.insert("since".into(), "2000-01-01".into());
        p.bind_vars(&vars).unwrap();
        assert_eq!(p.render(&R, true), "select 10 2000-01-01");
        assert_eq!(p.render(&R, false), "select 10 ");
        assert!(p.vars().is_empty());
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("select 1\n{{ env_var('x') }}").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("unsupported template expression"), "{e}");
        let e = parse("select\n\n{% if is_incremental() %} x").unwrap_err();
        assert_eq!(e.line, 3);
        let e = parse("{{ ref(stg) }}").unwrap_err();
        assert!(e.message.contains("quoted string"), "{e}");
    }
}
