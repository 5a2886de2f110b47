//! `chiso sim serve` and `chiso sim generate`: the simulated feeds.

use super::*;

#[derive(Args, Clone)]
pub(crate) struct WorldArgs {
    /// Seed: the same seed gives the same world.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// Dossiers submitted on an ordinary working day, across all units. The default, 200,
    /// gives a base unit about 12 dossiers a month, enough that chance moves its total by
    /// about 10 points a month rather than 24 (docs/publication.md, "Warnings").
    #[arg(long, default_value_t = 200.0)]
    pub(crate) scale: f64,
    /// First day of dossier history (YYYY-MM-DD).
    #[arg(long, default_value = "2026-01-01")]
    pub(crate) from: NaiveDate,
    /// The simulator's clock at start, local time (YYYY-MM-DDTHH:MM:SS); default now.
    #[arg(long)]
    pub(crate) now: Option<NaiveDateTime>,
    /// Petitions per dossier.
    #[arg(long, default_value_t = 0.01)]
    pub(crate) petition_ratio: f64,
}

impl WorldArgs {
    pub(crate) fn config(&self, speed: f64) -> anyhow::Result<SimConfig> {
        let now = self.now.unwrap_or_else(chiso::time::now_local);
        if self.from > now.date() {
            anyhow::bail!("--from {} is after --now {}", self.from, now);
        }
        if !(self.scale > 0.0 && self.scale <= 1_000_000.0) {
            anyhow::bail!(
                "--scale {} must be between 0 and 1000000 dossiers per working day",
                self.scale
            );
        }
        Ok(SimConfig {
            seed: self.seed,
            per_day: self.scale,
            petition_ratio: self.petition_ratio,
            from: self.from,
            now,
            speed,
            horizon_days: 14,
        })
    }
}

#[derive(Subcommand)]
pub(crate) enum SimCommand {
    /// Serve every feed on 127.0.0.1 (Ctrl-C to stop). The token, if any, is read from the
    /// environment variable named by --token-env.
    Serve(SimServeArgs),
    /// Write the simulated feeds to files (NDJSON, JSON, CSV) for benchmarks and file jobs.
    Generate(SimGenerateArgs),
}

#[derive(Args)]
pub(crate) struct SimServeArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8610)]
    pub(crate) port: u16,
    #[command(flatten)]
    pub(crate) world: WorldArgs,
    /// Simulated seconds per real second (0 freezes the clock).
    #[arg(long, default_value_t = 60.0)]
    pub(crate) speed: f64,
    /// Environment variable holding the token clients must send (unset: no auth).
    #[arg(long, default_value = "CHISO_SIM_TOKEN")]
    pub(crate) token_env: String,
    /// Share of requests answered 503.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) fault_5xx: f64,
    /// Share of requests answered slowly (--slow-ms later).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) fault_slow: f64,
    #[arg(long, default_value_t = 5000)]
    pub(crate) slow_ms: u64,
    /// Share of answers cut off half-way.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) fault_truncate: f64,
    /// Malformed records mixed in, per record served.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) fault_malformed: f64,
    /// The paged feeds serve current records only and move one to the end at every page after
    /// the first, as a live API whose records change while a client reads it.
    #[arg(long)]
    pub(crate) moving_records: bool,
    /// Share of publications the simulated portals refuse with 503.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) fault_publish: f64,
    /// Share of (unit, ended period) pairs whose published evaluation (the portal's Decision
    /// 766 API) differs from the records, seeded; `GET /_sim/evaluation/divergences` lists them.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) portal_divergence: f64,
}

#[derive(Args)]
pub(crate) struct SimGenerateArgs {
    /// Output folder.
    #[arg(long)]
    pub(crate) out: PathBuf,
    #[command(flatten)]
    pub(crate) world: WorldArgs,
    /// Stop after this many dossiers (sets --scale to spread them over --from..--now).
    #[arg(long)]
    pub(crate) dossiers: Option<u64>,
    /// Generator threads.
    #[arg(long, default_value_t = 2)]
    pub(crate) threads: usize,
}

pub(crate) async fn serve(_g: &Globals, a: SimServeArgs) -> anyhow::Result<u8> {
    let faults = Faults {
        error_rate: a.fault_5xx,
        slow_rate: a.fault_slow,
        slow_ms: a.slow_ms,
        truncate_rate: a.fault_truncate,
        malformed_rate: a.fault_malformed,
        moving_records: a.moving_records,
        publish_error_rate: a.fault_publish,
        publish_lost_rate: 0.0,
        publish_redirect_rate: 0.0,
        publish_delay_ms: 0,
        portal_divergence: a.portal_divergence,
    };
    faults
        .validate()
        .map_err(|e| anyhow::anyhow!("--fault-…: {e}"))?;
    let cfg = a.world.config(a.speed)?;
    eprintln!(
        "Building the simulated world (seed {}, {} dossiers per working day from {}) ...",
        cfg.seed, cfg.per_day, cfg.from
    );
    let world = tokio::task::spawn_blocking(move || chiso::sim::World::build(cfg)).await?;
    let token = std::env::var(&a.token_env).ok().filter(|t| !t.is_empty());
    let auth = if token.is_some() {
        format!("token from ${}", a.token_env)
    } else {
        "no auth".into()
    };
    let handle = chiso::sim::server::start(
        chiso::sim::server::SimState::new(world, faults, token),
        a.port,
    )
    .await
    .with_context(|| format!("binding 127.0.0.1:{}", a.port))?;
    println!(
        "chiso simulator serving on {} ({auth}); Ctrl-C to stop",
        handle.base_url()
    );
    println!("  GET  /portal/dossiers?since=&limit=   GET /portal/dossier-steps   GET /payments/transactions");
    println!("  POST /reporting/ratings   POST /reporting/petitions   GET /_sim/stats   POST /_sim/faults");
    println!("  GET  /catalogue/procedures.json  /registry/units.json  /calendar/days.csv  /reports/national/received.csv");
    tokio::signal::ctrl_c().await?;
    handle.stop().await;
    Ok(EXIT_OK)
}

pub(crate) async fn generate(_g: &Globals, a: SimGenerateArgs) -> anyhow::Result<u8> {
    let mut cfg = a.world.config(0.0)?;
    if let Some(n) = a.dossiers {
        cfg.per_day = chiso::sim::generate::per_day_for(n, cfg.from, cfg.now.date());
    }
    let t0 = std::time::Instant::now();
    let out = a.out.clone();
    let threads = a.threads;
    let max = a.dossiers;
    let manifest = tokio::task::spawn_blocking(move || {
        chiso::sim::generate::generate(&cfg, &out, max, threads)
    })
    .await??;
    println!("{}", serde_json::to_string_pretty(&manifest)?);
    eprintln!(
        "Wrote {} dossiers to {} in {:.1}s",
        manifest.dossiers,
        a.out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(EXIT_OK)
}
