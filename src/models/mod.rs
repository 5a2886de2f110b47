//! SQL models: DuckDB SQL files under `sql/`, one model per file, written as dbt writes them.
//!
//! `template` parses the Jinja subset they use. (The graph, the builds and the data tests
//! arrive with the warehouse issue.) This module owns reading model files; it never touches
//! the lake's files or the feeds.

pub mod template;
