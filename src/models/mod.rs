//! SQL models: DuckDB SQL files under `sql/`, one model per file, written as dbt writes them.
//!
//! `template` parses the Jinja subset they use; `project` finds the models, their dependency
//! graph (from their own `ref()` calls) and the selection; `build` runs them into a build file,
//! runs the data tests and swaps the file in. (`chiso build`/`chiso test` are wired to the
//! command line once the staging → facts → index models exist.) This module owns reading and
//! running model files; it never touches the lake's files or the feeds.

pub mod build;
pub mod docs;
pub mod project;
pub mod template;
