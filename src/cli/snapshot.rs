//! `chiso snapshot`: the lake's committed files, for other engines.

use super::*;

pub(crate) async fn snapshot(g: &Globals, args: JsonArg) -> anyhow::Result<u8> {
    let (project, jobs) = chiso::demo::load_project_or_embedded(&g.config)?;
    // Absolute paths: the list is read by other programs from other folders.
    let warehouse = std::path::absolute(warehouse_dir(&g.dir, &project))?;
    let snapshot = chiso::models::snapshot::read(&warehouse, &jobs)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&snapshot)?);
    } else {
        for (dataset, files) in &snapshot {
            println!("{dataset:<28} {:>7} file(s)", files.len());
        }
    }
    Ok(EXIT_OK)
}
