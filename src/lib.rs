//! chiso: a scheduled ETL and DuckDB warehouse job runner that computes and publishes the
//! service-quality index of Vietnam's tax administration.
//!
//! Modules, each owning one thing:
//! - [`config`]: `chiso.toml` and `jobs/*.toml`, with file:line:field errors;
//! - [`feeds`]: pull protocols (cursor, paged POST, snapshot, file) and HTTP retries;
//! - [`lake`]: Parquet files, quarantine and the commit log that owns cursors;
//! - [`pull`]: one run of a job, from feed to committed lake files;
//! - [`backfill`]: re-pulling a window of a cursor feed without moving the job's cursor;
//! - [`status`]: what the commit logs, the fire history and the builds say about each job;
//! - [`schedule`]: planned fire times, the fire history, the one-daemon lock;
//! - [`serve`]: the daemon (`chiso serve`): fires jobs on their schedules, builds after pulls
//!   that landed rows, and answers /health, /status and /metrics;
//! - [`console`]: the live web console the daemon serves under `/console/` (ranking, unit,
//!   records behind a number, operations), read from the published warehouse;
//! - [`publish`]: revisions of a period's index, their files and the push to the portals;
//!   [`ledger`]: where revisions and receipts are kept (`publications.duckdb`);
//! - [`sim`]: the simulated tax administration, the embedded default source;
//! - [`demo`], [`bench`]: the main job on the embedded default, and benchmarks;
//! - [`duck`], [`time`], [`fs`]: DuckDB connections, wall-clock time and durable file steps
//!   (folder fsync, whole-file writes, file locks), done one way.

pub mod backfill;
pub mod bench;
pub mod config;
pub mod console;
pub mod demo;
pub mod duck;
pub mod feeds;
pub mod fs;
pub mod index;
pub mod lake;
pub mod ledger;
pub mod models;
pub mod publish;
pub mod pull;
pub mod reconcile;
pub mod schedule;
pub mod serve;
pub mod sim;
pub mod status;
pub mod time;
