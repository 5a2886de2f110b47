//! `chiso sim generate`: the simulated world written to files, for benchmarks and for loading
//! with `protocol = "file"` jobs. Records are those visible at the simulator's `now`, in
//! generation order (day by day), one JSON object per line.
//!
//! Layout of the output folder:
//! `portal/dossiers.ndjson`, `portal/dossier_steps.ndjson`, `payments/payments.ndjson`,
//! `reporting/ratings.ndjson`, `reporting/petitions.ndjson`, `catalogue/procedures.json`,
//! `registry/units.json`, `calendar/days.csv`, `reports/national_report.csv`, `manifest.json`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use chrono::{Datelike, Duration, NaiveDate};
use serde::Serialize;

use super::world::{self, secs, Entry, Setting};
use super::{NationalRow, SimConfig, World};

#[derive(Debug, Default, Clone, Serialize)]
pub struct Manifest {
    pub seed: u64,
    pub from: String,
    pub now: String,
    pub dossiers: u64,
    /// Records (lines) written per file.
    pub records: BTreeMap<String, u64>,
    /// Bytes written per file.
    pub bytes: BTreeMap<String, u64>,
}

/// How many dossiers per ordinary working day give about `target` dossiers in the window.
pub fn per_day_for(target: u64, from: NaiveDate, to: NaiveDate) -> f64 {
    let cal = super::calendar::Calendar::vietnam();
    let mut weight = 0.0f64;
    let mut d = from;
    while d <= to {
        weight += world::day_factor(&cal, d);
        d += Duration::days(1);
    }
    (target as f64 / weight.max(1.0)).max(0.01)
}

struct Outputs {
    files: BTreeMap<&'static str, BufWriter<File>>,
    manifest: Manifest,
}

impl Outputs {
    fn write(&mut self, name: &'static str, entries: &[Entry], now: i64) -> std::io::Result<()> {
        let w = self.files.get_mut(name).expect("opened");
        let mut n = 0;
        let mut bytes = 0;
        for e in entries.iter().filter(|e| e.visible_at <= now) {
            w.write_all(e.json.as_bytes())?;
            w.write_all(b"\n")?;
            n += 1;
            bytes += e.json.len() as u64 + 1;
        }
        *self.manifest.records.entry(name.to_string()).or_default() += n;
        *self.manifest.bytes.entry(name.to_string()).or_default() += bytes;
        Ok(())
    }
}

/// Dossiers received per (unit index, month `YYYY-MM`): what the national report counts.
pub type ReceivedCounts = BTreeMap<(usize, String), u64>;

/// Writes the world of `config` to `out`, with at most `max_dossiers` dossiers if given.
pub fn generate(
    config: &SimConfig,
    out: &Path,
    max_dossiers: Option<u64>,
    threads: usize,
) -> std::io::Result<Manifest> {
    let (manifest, counts) = generate_days(
        config,
        out,
        config.from,
        config.now.date(),
        max_dossiers,
        threads,
    )?;
    write_snapshots(config, out, counts)?;
    std::fs::write(
        out.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).expect("serialises"),
    )?;
    Ok(manifest)
}

/// Writes the record feeds of the days `first..=last` (dossiers submitted and petitions
/// raised on those days, with every version visible at `config.now`) to `out`, and returns
/// the dossiers received per unit and month. A day's records do not depend on the window, so
/// consecutive windows together give the same records as one window over all the days.
pub fn generate_days(
    config: &SimConfig,
    out: &Path,
    first: NaiveDate,
    last: NaiveDate,
    max_dossiers: Option<u64>,
    threads: usize,
) -> std::io::Result<(Manifest, ReceivedCounts)> {
    let setting = Setting::new(config.seed, config.per_day, config.petition_ratio);
    let names: [(&'static str, &str); 5] = [
        ("dossiers", "portal/dossiers.ndjson"),
        ("dossier_steps", "portal/dossier_steps.ndjson"),
        ("payments", "payments/payments.ndjson"),
        ("ratings", "reporting/ratings.ndjson"),
        ("petitions", "reporting/petitions.ndjson"),
    ];
    let mut files = BTreeMap::new();
    for (k, rel) in names {
        let p = out.join(rel);
        std::fs::create_dir_all(p.parent().expect("has parent"))?;
        files.insert(k, BufWriter::with_capacity(1 << 20, File::create(p)?));
    }
    let mut o = Outputs {
        files,
        manifest: Manifest {
            seed: config.seed,
            from: first.to_string(),
            now: world::ts(config.now),
            ..Default::default()
        },
    };
    let now = secs(config.now);
    let mut counts = ReceivedCounts::new();
    // Days with their dossier counts, cut at `max_dossiers`.
    let mut days: Vec<(NaiveDate, u32)> = Vec::new();
    let mut total = 0u64;
    let mut d = first;
    while d <= last.min(config.now.date()) {
        let mut n = setting.dossiers_on(d) as u64;
        if let Some(m) = max_dossiers {
            n = n.min(m.saturating_sub(total));
        }
        total += n;
        days.push((d, n as u32));
        d += Duration::days(1);
        if max_dossiers.is_some_and(|m| total >= m) {
            break;
        }
    }
    type DayOut = (Vec<world::DossierOut>, Vec<Entry>);
    for group in days.chunks(threads.max(1)) {
        let results: Vec<DayOut> = std::thread::scope(|s| {
            let hs: Vec<_> = group
                .iter()
                .map(|&(day, n)| {
                    let setting = &setting;
                    s.spawn(move || {
                        let ds: Vec<world::DossierOut> =
                            (0..n).map(|j| world::dossier(setting, day, j)).collect();
                        let ps: Vec<Entry> = (0..setting.petitions_on(day))
                            .flat_map(|j| world::petition(setting, day, j))
                            .collect();
                        (ds, ps)
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("generator thread"))
                .collect()
        });
        for (ds, ps) in results {
            for d in ds {
                o.manifest.dossiers += 1;
                if let Some(r) = d.received {
                    *counts
                        .entry((d.unit, format!("{:04}-{:02}", r.year(), r.month())))
                        .or_default() += 1;
                }
                if d.synced {
                    o.write("dossiers", &d.versions, now)?;
                }
                o.write("dossier_steps", &d.steps, now)?;
                o.write("payments", &d.payments, now)?;
                if let Some(r) = &d.rating {
                    o.write("ratings", std::slice::from_ref(r), now)?;
                }
            }
            o.write("petitions", &ps, now)?;
        }
    }
    for (_, mut w) in std::mem::take(&mut o.files) {
        w.flush()?;
    }
    Ok((o.manifest, counts))
}

/// Writes the snapshot files (catalogue, units, calendar, and the national report of `counts`)
/// to `out`. Snapshots come from a world with no dossiers: only the national report depends
/// on them.
pub fn write_snapshots(
    config: &SimConfig,
    out: &Path,
    counts: ReceivedCounts,
) -> std::io::Result<()> {
    let empty = snapshot_world(config, counts);
    let snapshots: [(&str, String); 4] = [
        (
            "catalogue/procedures.json",
            empty.catalogue_json(config.now),
        ),
        ("registry/units.json", empty.units_json()),
        ("calendar/days.csv", empty.calendar_csv()),
        (
            "reports/national_report.csv",
            empty.national_csv(config.now),
        ),
    ];
    for (rel, body) in snapshots {
        let p = out.join(rel);
        std::fs::create_dir_all(p.parent().expect("has parent"))?;
        std::fs::write(p, body)?;
    }
    Ok(())
}

/// A world with the registry, catalogue and calendar of `config`, no record feeds, and the
/// national report of `counts`: what a snapshot-only simulator serves.
pub fn snapshot_world(config: &SimConfig, counts: ReceivedCounts) -> World {
    let setting = Setting::new(config.seed, config.per_day, config.petition_ratio);
    World {
        config: config.clone(),
        setting: Setting::new(config.seed, 0.0, 0.0),
        logs: super::SimFeed::ALL
            .iter()
            .map(|f| (*f, Vec::new()))
            .collect(),
        national: counts
            .into_iter()
            .map(|((unit, period), received)| NationalRow {
                visible_at: 0,
                unit: setting.registry.units[unit].id.clone(),
                period,
                received,
                reported_on: config.now.date(),
            })
            .collect(),
    }
}
