//! `chiso jobs`: list and check the job files.

use super::*;

pub(crate) async fn jobs(g: &Globals, args: JsonArg) -> anyhow::Result<u8> {
    let (_, jobs) = load(&g.config)?;
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
        for j in &jobs {
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
        println!("{} job(s), configuration ok", jobs.len());
    }
    Ok(EXIT_OK)
}
