//! `chiso jobs`: list and check the job files; pause, resume, trigger and reload jobs on the
//! running daemon (`chiso::serve::control`).

use super::*;

#[derive(Args)]
pub(crate) struct JobsArgs {
    #[command(subcommand)]
    pub(crate) action: Option<JobsAction>,
    /// Print JSON (the list).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Subcommand)]
pub(crate) enum JobsAction {
    /// Stop firing a job on the running daemon (its planned times pass unfired; kept across
    /// restarts) until it is resumed.
    Pause { job: String },
    /// Fire a paused job on its schedule again, from its next planned time.
    Resume { job: String },
    /// Run a job now on the running daemon (a fire planned now, recorded as `triggered`).
    Trigger { job: String },
    /// Load the job files again (as a SIGHUP does): validated first, the old schedules kept
    /// when a file has an error.
    Reload,
}

pub(crate) async fn jobs(g: &Globals, args: JobsArgs) -> anyhow::Result<u8> {
    if let Some(action) = args.action {
        return control(g, action).await;
    }
    let (_, all) = load_all(&g.config)?;
    let jobs = &all.pulls;
    if args.json {
        let v: Vec<serde_json::Value> = jobs
            .iter()
            .map(|j| {
                serde_json::json!({
                    "job": j.name, "file": j.file, "enabled": j.enabled, "schedule": j.schedule.0,
                    "protocol": j.protocol.name(), "source": j.source.as_ref().map(|s| &s.name),
                    "dataset": j.dataset.key(),
                    "description": j.description,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for j in jobs {
            println!(
                "{:<16} {:<14} {:<10} lake/{}/{:<16} {}{}",
                j.name,
                j.schedule.0,
                j.protocol.name(),
                j.dataset.feed,
                j.dataset.name,
                j.description,
                if j.enabled { "" } else { " (disabled)" }
            );
        }
        for b in &all.builds {
            println!(
                "{:<16} {:<14} {:<10} after pulls{}  {}{}",
                b.name,
                b.schedule.as_ref().map_or("-", |s| s.0.as_str()),
                "build",
                if b.after_pulls { "" } else { " off" },
                b.description,
                if b.enabled { "" } else { " (disabled)" }
            );
        }
        for p in &all.publishes {
            println!(
                "{:<16} {:<14} {:<10} {:?}{}  {}{}",
                p.name,
                p.schedule.0,
                "publish",
                p.period,
                if p.provisional { ", provisional" } else { "" },
                p.description,
                if p.enabled { "" } else { " (disabled)" }
            );
        }
        for r in &all.reconciles {
            println!(
                "{:<16} {:<14} {:<10} {:?}  {}{}",
                r.name,
                r.schedule.0,
                "reconcile",
                r.periods,
                r.description,
                if r.enabled { "" } else { " (disabled)" }
            );
        }
        println!(
            "{} job(s), configuration ok",
            jobs.len() + all.builds.len() + all.publishes.len() + all.reconciles.len()
        );
    }
    Ok(EXIT_OK)
}

async fn control(g: &Globals, action: JobsAction) -> anyhow::Result<u8> {
    use chiso::serve::control::{self, Op, Request};
    // Only chiso.toml, for the warehouse: a job file with an error (the daemon refused it and
    // keeps the old schedules) must not keep anyone from pausing or triggering a job.
    let project = config::ProjectConfig::load(&g.config)?;
    let warehouse = warehouse_dir(&g.dir, &project);
    let (op, job) = match action {
        JobsAction::Pause { job } => (Op::Pause, Some(job)),
        JobsAction::Resume { job } => (Op::Resume, Some(job)),
        JobsAction::Trigger { job } => (Op::Trigger, Some(job)),
        JobsAction::Reload => (Op::Reload, None),
    };
    let reply = control::send(
        &warehouse,
        &Request {
            op,
            job,
            by: control::actor(),
        },
    )
    .await?;
    if reply.ok {
        println!("{}", reply.message);
        Ok(EXIT_OK)
    } else {
        eprintln!("chiso: {}", reply.message);
        Ok(EXIT_FAILED)
    }
}
