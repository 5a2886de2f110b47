//! `chiso index score`: score given counts with the warehouse's scoring SQL.

use super::*;

#[derive(Subcommand)]
pub(crate) enum IndexCommand {
    /// Score given counts without a warehouse, with the warehouse's own scoring SQL.
    ///
    /// Input CSV header: unit_id,period,indicator,numerator,denominator (indicator = the
    /// SPEC §4 code; period 2026-08, 2026-Q3 or 2026). Output CSV on stdout:
    /// unit_id,period,indicator,numerator,denominator,ratio,points,max_points, then per unit and
    /// period one GROUP:<code> row per group and a TOTAL row. Points at full precision; a
    /// not-scored indicator has empty ratio and points; indicators absent from the input are
    /// not scored.
    Score(IndexScoreArgs),
}

#[derive(Args)]
pub(crate) struct IndexScoreArgs {
    /// Counts CSV file ("-" reads standard input).
    #[arg(long)]
    pub(crate) counts: PathBuf,
    /// Methodology version (default: the version in force for each period).
    #[arg(long)]
    pub(crate) methodology: Option<String>,
}

pub(crate) async fn score(g: &Globals, a: IndexScoreArgs) -> anyhow::Result<u8> {
    let (text, name) = if a.counts.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        (s, "<stdin>".to_string())
    } else {
        (
            std::fs::read_to_string(&a.counts)
                .with_context(|| format!("reading {}", a.counts.display()))?,
            a.counts.display().to_string(),
        )
    };
    // The project's methodology files when run inside a project, else the built-in ones.
    let root = g
        .config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let methodologies = chiso::index::Methodologies::load(&root.join("sql/methodology"))?;
    let out = chiso::index::score(&text, &name, &methodologies, a.methodology.as_deref())?;
    print!("{out}");
    Ok(EXIT_OK)
}
