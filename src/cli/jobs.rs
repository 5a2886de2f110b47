//! `chiso jobs`: list and check the job files.

use super::*;

pub(crate) async fn jobs(g: &Globals, args: JsonArg) -> anyhow::Result<u8> {
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
        println!(
            "{} job(s), configuration ok",
            jobs.len() + all.builds.len() + all.publishes.len()
        );
    }
    Ok(EXIT_OK)
}
