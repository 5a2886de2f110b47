//! SQL models: DuckDB SQL files under `sql/`, one model per file, written as dbt writes them.
//!
//! `template` parses the Jinja subset they use; `project` finds the models, their dependency
//! graph (from their own `ref()` calls) and the selection. (Builds into the warehouse file and
//! the data-test run arrive next.) This module owns reading model files; it never touches the
//! lake's files or the feeds.

pub mod project;
pub mod template;
