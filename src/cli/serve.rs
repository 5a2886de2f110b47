//! `chiso serve`: the daemon, until SIGTERM or SIGINT.

use super::*;

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Answer /health, /status and /metrics on this address (e.g. 127.0.0.1:9464).
    #[arg(long, env = "CHISO_HTTP")]
    pub(crate) http: Option<std::net::SocketAddr>,
    /// How long running runs may go on after SIGTERM before they are cut short (and recovered
    /// at the next start).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) grace: std::time::Duration,
    /// Answer on a non-loopback --http address without a token (CHISO_HTTP_TOKEN): only where
    /// the address is already protected (a private network, a proxy that authenticates).
    #[arg(long)]
    pub(crate) http_public: bool,
    /// Fire history older than this is dropped at start (never needed for recovery).
    #[arg(long, default_value = "90days", value_parser = humantime::parse_duration)]
    pub(crate) retention: std::time::Duration,
}

/// Resolves at the first SIGTERM or SIGINT.
pub(crate) async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("a SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping."),
        _ = int.recv() => tracing::info!("SIGINT: stopping."),
    }
}

pub(crate) fn print_summary(s: &chiso::serve::ServeSummary) {
    println!(
        "chiso serve stopped: {} fires ({} runs, {} skipped), {} builds{}",
        s.fires,
        s.runs,
        s.skipped,
        s.builds,
        if s.cut_short > 0 {
            format!(
                ", {} cut short at the end of the grace (recovered at the next start)",
                s.cut_short
            )
        } else {
            String::new()
        }
    );
}

pub(crate) async fn serve(g: &Globals, a: ServeArgs) -> anyhow::Result<u8> {
    let (project, jobs) = load_all(&g.config)?;
    // The daemon reloads the job files on SIGHUP, when they change and on `chiso jobs reload`.
    let job_files = {
        let project = project.clone();
        chiso::serve::control::JobFiles {
            dir: project.jobs_dir.clone(),
            load: std::sync::Arc::new(move || {
                chiso::config::load_all_jobs(&project.jobs_dir, &project).map_err(|e| e.to_string())
            }),
        }
    };
    let opts = chiso::serve::ServeOptions {
        warehouse: warehouse_dir(&g.dir, &project),
        project_root: project.root.clone(),
        sql_dir: project.root.join("sql"),
        tz: project.timezone,
        jobs,
        http: a.http,
        grace: a.grace,
        retention: a.retention,
        http_client: chiso::feeds::http::http_client(),
        publish: project.publish.clone(),
        http_token: std::env::var("CHISO_HTTP_TOKEN").ok(),
        http_public: a.http_public,
        job_files: Some(job_files),
    };
    match chiso::serve::serve(opts, stop_signal(), None).await {
        Ok(summary) => {
            print_summary(&summary);
            exit_now(EXIT_OK)
        }
        Err(e) => {
            // Exit now, so a supervisor restarts the daemon: returning would drop the runtime,
            // which waits for a running build (a blocking task) before the process ends.
            tracing::error!(error = %format!("{e:#}"), "The daemon stopped on an error.");
            eprintln!("chiso: {e:#}");
            exit_now(EXIT_FAILED)
        }
    }
}

/// Exits without waiting for a build cut short at the end of the grace (a blocking task the
/// runtime would otherwise wait for): the published warehouse is unchanged by it.
pub(crate) fn exit_now(code: u8) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(code.into())
}
