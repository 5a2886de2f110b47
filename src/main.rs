//! The `chiso` binary: parses the command line and runs it (`cli`); the work is done by the
//! library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

/// jemalloc for Rust and, through its unprefixed `malloc`, for the bundled DuckDB: with glibc's
/// allocator the same 10 M-dossier build spent a third longer, much of it in the kernel.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Run(_) | Command::Sim(_) | Command::Serve(_) | Command::Backfill(_) => "info",
        _ => "warn",
    };
    cli::init_logging(cli.verbose, default_level, cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    match runtime.block_on(cli::dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if let Some(c) = e.downcast_ref::<chiso::config::ConfigErrors>() {
                eprint!("chiso: {c}");
                return ExitCode::from(cli::EXIT_CONFIG);
            }
            if e.downcast_ref::<chiso::publish::Held>().is_some() {
                eprintln!("chiso: {e:#}");
                return ExitCode::from(cli::EXIT_HELD);
            }
            eprintln!("chiso: {e:#}");
            ExitCode::from(cli::EXIT_FAILED)
        }
    }
}
