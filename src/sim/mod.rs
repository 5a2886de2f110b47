//! The simulator: a deterministic (seeded) tax administration that serves every feed of SPEC §3
//! over HTTP on 127.0.0.1 with the real field names and protocols, with switchable faults.
//! It is chiso's embedded default source: tests, `chiso demo` and benchmarks use it, and
//! nothing in the product special-cases it.
//!
//! `world` generates records and when each reaches the portal; `server` serves what is visible
//! at the simulator's clock; `generate` writes everything to files. This module owns the
//! simulated data; it must not read the lake or the warehouse.

pub mod calendar;
pub mod catalogue;
pub mod evaluation;
pub mod evaluation_api;
pub mod faults;
pub mod generate;
pub mod names;
pub mod portal;
pub mod server;
pub mod units;
pub mod world;

use std::collections::BTreeMap;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime};
use serde_json::json;

use world::{secs, ts, Entry, Setting};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// Dossiers submitted on an ordinary working day, across all units.
    pub per_day: f64,
    /// Petitions per dossier (the portal's August 2026 ratio is about 0.0013; the default is
    /// higher so that a small world still has petitions to score).
    pub petition_ratio: f64,
    /// First day of dossier history.
    pub from: NaiveDate,
    /// The simulator's clock at start (local wall-clock time).
    pub now: NaiveDateTime,
    /// Simulated seconds per real second (0 freezes the clock).
    pub speed: f64,
    /// Days of activity generated past `now`, revealed as the clock advances.
    pub horizon_days: i64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            per_day: 40.0,
            petition_ratio: 0.01,
            from: NaiveDate::from_ymd_opt(2026, 1, 1).expect("valid"),
            now: crate::time::now_local(),
            speed: 60.0,
            horizon_days: 14,
        }
    }
}

/// The feeds the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SimFeed {
    Dossiers,
    DossierSteps,
    Payments,
    Ratings,
    Petitions,
}

impl SimFeed {
    pub const ALL: [SimFeed; 5] = [
        SimFeed::Dossiers,
        SimFeed::DossierSteps,
        SimFeed::Payments,
        SimFeed::Ratings,
        SimFeed::Petitions,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SimFeed::Dossiers => "dossiers",
            SimFeed::DossierSteps => "dossier_steps",
            SimFeed::Payments => "payments",
            SimFeed::Ratings => "ratings",
            SimFeed::Petitions => "petitions",
        }
    }

    /// DuckDB expressions over a landed file's columns for a record's key and its version, as
    /// the simulator's `distinct_versions` names them: what "the lake holds the simulator's
    /// records" compares.
    pub fn key_version_sql(self) -> (&'static str, &'static str) {
        match self {
            SimFeed::Dossiers => ("MaHoSo", "strftime(ThoiDiemDongBo, '%Y%m%d%H%M%S')"),
            SimFeed::DossierSteps => (
                "MaHoSo || '|' || strftime(ThoiDiemXuLy, '%Y%m%d%H%M%S') || '|' || TrangThai",
                "''",
            ),
            SimFeed::Payments => ("MaThamChieu", "strftime(ThoiGianCapNhat, '%Y%m%d%H%M%S')"),
            SimFeed::Ratings => ("MaHoSo", "strftime(ThoiGianDanhGia, '%Y%m%d%H%M%S')"),
            SimFeed::Petitions => ("MaPAKN", "strftime(NgayCapNhat, '%Y%m%d%H%M%S')"),
        }
    }

    /// Field names used to inject malformed copies: (key field, a timestamp field).
    pub fn fault_fields(self) -> (&'static str, &'static str) {
        match self {
            SimFeed::Dossiers => ("MaHoSo", "ThoiDiemDongBo"),
            SimFeed::DossierSteps => ("MaHoSo", "ThoiDiemXuLy"),
            SimFeed::Payments => ("MaThamChieu", "ThoiGianCapNhat"),
            SimFeed::Ratings => ("MaHoSo", "ThoiGianDanhGia"),
            SimFeed::Petitions => ("MaPAKN", "NgayCapNhat"),
        }
    }
}

/// One national-report row: dossiers a unit received in a month, per the reporting system.
#[derive(Debug, Clone)]
pub struct NationalRow {
    pub visible_at: i64,
    pub unit: String,
    pub period: String,
    pub received: u64,
    pub reported_on: NaiveDate,
}

/// The whole simulated history, sorted for serving.
pub struct World {
    pub config: SimConfig,
    pub setting: Setting,
    /// Per feed, entries sorted by `visible_at` (then generation order).
    pub logs: BTreeMap<SimFeed, Vec<Entry>>,
    pub national: Vec<NationalRow>,
}

impl World {
    /// Generates the world from `config.from` to `config.now + horizon_days`.
    pub fn build(config: SimConfig) -> World {
        let setting = Setting::new(config.seed, config.per_day, config.petition_ratio);
        let mut logs: BTreeMap<SimFeed, Vec<Entry>> =
            SimFeed::ALL.iter().map(|f| (*f, Vec::new())).collect();
        let mut counts: BTreeMap<(usize, String), u64> = BTreeMap::new();
        let end = config.now.date() + Duration::days(config.horizon_days);
        let mut day = config.from;
        while day <= end {
            for j in 0..setting.dossiers_on(day) {
                let d = world::dossier(&setting, day, j);
                if let Some(r) = d.received {
                    *counts
                        .entry((d.unit, format!("{:04}-{:02}", r.year(), r.month())))
                        .or_default() += 1;
                }
                if d.synced {
                    logs.get_mut(&SimFeed::Dossiers)
                        .expect("feed")
                        .extend(d.versions);
                }
                logs.get_mut(&SimFeed::DossierSteps)
                    .expect("feed")
                    .extend(d.steps);
                logs.get_mut(&SimFeed::Payments)
                    .expect("feed")
                    .extend(d.payments);
                logs.get_mut(&SimFeed::Ratings)
                    .expect("feed")
                    .extend(d.rating);
            }
            for j in 0..setting.petitions_on(day) {
                logs.get_mut(&SimFeed::Petitions)
                    .expect("feed")
                    .extend(world::petition(&setting, day, j));
            }
            day += Duration::days(1);
        }
        for log in logs.values_mut() {
            // Stable: equal times keep generation order. Paged feeds are ordered by their
            // watermark, which equals `visible_at` for ratings and petitions.
            log.sort_by(|a, b| {
                a.visible_at
                    .cmp(&b.visible_at)
                    .then_with(|| a.key.cmp(&b.key))
            });
        }
        let national = counts
            .into_iter()
            .map(|((unit, period), received)| {
                let (y, m) = (
                    period[..4].parse::<i32>().unwrap_or(2026),
                    period[5..].parse::<u32>().unwrap_or(1),
                );
                let next = if m == 12 {
                    NaiveDate::from_ymd_opt(y + 1, 1, 1)
                } else {
                    NaiveDate::from_ymd_opt(y, m + 1, 1)
                }
                .expect("valid");
                let reported_on = next + Duration::days(3);
                NationalRow {
                    visible_at: secs(reported_on.and_hms_opt(8, 0, 0).expect("valid")),
                    unit: setting.registry.units[unit].id.clone(),
                    period,
                    received,
                    reported_on,
                }
            })
            .collect();
        World {
            config,
            setting,
            logs,
            national,
        }
    }

    /// Entries of `feed` visible at `now` (a prefix of the log).
    pub fn visible(&self, feed: SimFeed, now: NaiveDateTime) -> &[Entry] {
        let log = &self.logs[&feed];
        let t = secs(now);
        &log[..log.partition_point(|e| e.visible_at <= t)]
    }

    /// The distinct (key, version) pairs visible at `now`: what the lake must hold after dedup.
    pub fn distinct_versions(
        &self,
        feed: SimFeed,
        now: NaiveDateTime,
    ) -> std::collections::BTreeSet<(String, String)> {
        self.visible(feed, now)
            .iter()
            .map(|e| (e.key.clone(), e.version.clone()))
            .collect()
    }

    /// The unit registry (all versions) as the registry feed's JSON array.
    pub fn units_json(&self) -> String {
        self.units_json_on(self.config.now.date())
    }

    /// The registry as its snapshot shows it on `day`: a renamed unit has its new name from the
    /// day of the rename (`units::rename_2026`).
    pub fn units_json_on(&self, day: NaiveDate) -> String {
        let d = |x: NaiveDate| x.format("%Y%m%d").to_string();
        let arr: Vec<serde_json::Value> = self
            .setting
            .registry
            .units
            .iter()
            .map(|u| {
                json!({
                    "MaDonVi": u.id,
                    "TenDonVi": if u.id == units::RENAMED_UNIT && day >= units::rename_2026() {
                        units::RENAMED_TO
                    } else {
                        u.name.as_str()
                    },
                    "MaDonViCha": u.parent,
                    "CapDonVi": u.level,
                    "LoaiDonVi": u.kind,
                    "HieuLucTu": d(u.valid_from),
                    "HieuLucDen": u.valid_to.map(d),
                    "MaDonViKeThua": u.successors,
                    "MaDonViDVCQG": units::portal_department_id(&u.id),
                })
            })
            .collect();
        serde_json::to_string(&arr).expect("serialises")
    }

    /// The procedure catalogue as the catalogue feed's JSON array: procedures announced by `now`.
    pub fn catalogue_json(&self, now: NaiveDateTime) -> String {
        let d = |x: NaiveDate| x.format("%Y%m%d").to_string();
        let arr: Vec<serde_json::Value> = self
            .setting
            .procedures
            .iter()
            .filter(|p| p.announced <= now.date())
            .map(|p| {
                json!({
                    "MaTTHC": p.code,
                    "TENTTHC": p.name,
                    "MaLinhVuc": p.field,
                    "LINHVUC": catalogue::field_name(p.field),
                    "CAPTHUCHIEN": p.level,
                    "MucDoDVC": p.service_level,
                    "DuDieuKienToanTrinh": u8::from(p.eligible_full_online),
                    "KetQuaLaGiay": u8::from(p.paper_result),
                    "ThoiHanGiaiQuyet": p.statutory_days,
                    "CoNghiaVuTaiChinh": u8::from(p.obligation),
                    "PhiLePhi": p.fees.iter().map(|(k, v)| json!({"KenhThucHien": k, "SOTIEN": v})).collect::<Vec<_>>(),
                    "SoQuyetDinhCongBo": p.decision_no,
                    "NgayQuyetDinhCongBo": d(p.announced),
                    "NgayHieuLucCanCu": d(p.legal_effective),
                    "NgayDangTaiCSDLQG": if p.posted <= now.date() { Some(d(p.posted)) } else { None },
                    "SoThanhPhanBatBuocDayDu": p.components_complete,
                    "KetNoiCSDLDanCu": u8::from(p.population_linked),
                    "CoThanhPhanThayTheBangDuLieu": u8::from(p.replaceable_components),
                })
            })
            .collect();
        serde_json::to_string(&arr).expect("serialises")
    }

    /// The calendar feed: special days (holidays, compensatory working days) as CSV.
    pub fn calendar_csv(&self) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(["Ngay", "LoaiNgay", "TenNgay"])
            .expect("in memory");
        for (d, kind, name) in self.setting.cal.special_days() {
            w.write_record([
                d.format("%Y-%m-%d").to_string(),
                kind.code().to_string(),
                name.to_string(),
            ])
            .expect("in memory");
        }
        String::from_utf8(w.into_inner().expect("in memory")).expect("utf-8")
    }

    /// The national report rows published by `now`, as CSV.
    pub fn national_csv(&self, now: NaiveDateTime) -> String {
        let t = secs(now);
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(["MaDonVi", "KyBaoCao", "SoHoSoTiepNhan", "NgayBaoCao"])
            .expect("in memory");
        for r in self.national.iter().filter(|r| r.visible_at <= t) {
            w.write_record([
                r.unit.clone(),
                r.period.clone(),
                r.received.to_string(),
                r.reported_on.format("%Y-%m-%d").to_string(),
            ])
            .expect("in memory");
        }
        String::from_utf8(w.into_inner().expect("in memory")).expect("utf-8")
    }
}

/// Formats a time for logs.
pub fn show(t: NaiveDateTime) -> String {
    ts(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> World {
        World::build(SimConfig {
            seed: 7,
            per_day: 30.0,
            from: NaiveDate::from_ymd_opt(2026, 7, 1).unwrap(),
            now: NaiveDate::from_ymd_opt(2026, 9, 15)
                .unwrap()
                .and_hms_opt(12, 0, 0)
                .unwrap(),
            speed: 0.0,
            ..SimConfig::default()
        })
    }

    #[test]
    fn deterministic_and_window_independent() {
        let a = small();
        let b = small();
        assert_eq!(
            a.logs[&SimFeed::Dossiers].len(),
            b.logs[&SimFeed::Dossiers].len()
        );
        assert_eq!(
            a.logs[&SimFeed::Dossiers][100].json,
            b.logs[&SimFeed::Dossiers][100].json
        );
        // A longer window agrees on the shared days.
        let c = World::build(SimConfig {
            horizon_days: 40,
            ..a.config.clone()
        });
        let day = NaiveDate::from_ymd_opt(2026, 8, 3).unwrap();
        let pick = |w: &World| {
            let mut v: Vec<String> = w.logs[&SimFeed::Dossiers]
                .iter()
                .filter(|e| e.key.contains("-260803-"))
                .map(|e| e.json.clone())
                .collect();
            v.sort();
            v
        };
        assert!(!pick(&a).is_empty(), "dossiers on {day}");
        assert_eq!(pick(&a), pick(&c));
    }

    #[test]
    fn magnitudes_are_realistic() {
        let w = small();
        let now = w.config.now;
        let latest: BTreeMap<&str, serde_json::Value> = w
            .visible(SimFeed::Dossiers, now)
            .iter()
            .map(|e| {
                (
                    e.key.as_str(),
                    serde_json::from_str::<serde_json::Value>(&e.json).unwrap(),
                )
            })
            .collect();
        let n = latest.len() as f64;
        assert!(n > 1000.0, "{n}");
        let share = |f: &dyn Fn(&serde_json::Value) -> bool| {
            latest.values().filter(|v| f(v)).count() as f64 / n
        };
        let online = share(&|v| v["KenhThucHien"] == "2");
        assert!((0.95..=1.0).contains(&online), "online share {online}");
        let obligation = share(&|v| {
            v["DanhSachLePhi"]
                .as_array()
                .is_some_and(|a| a.iter().any(|f| f["Gia"].as_i64() > Some(0)))
        });
        assert!(
            (0.40..=0.65).contains(&obligation),
            "obligation share {obligation}"
        );
        let population = share(&|v| !v["DSKetNoiCSDL"].as_array().unwrap().is_empty());
        assert!(
            (0.30..=0.60).contains(&population),
            "population share {population}"
        );
        // Resends exist: more entries than distinct versions.
        let visible = w.visible(SimFeed::Dossiers, now);
        assert!(visible.len() > w.distinct_versions(SimFeed::Dossiers, now).len());
        assert!(!w.visible(SimFeed::Petitions, now).is_empty());
        assert!(!w
            .national_csv(now)
            .lines()
            .skip(1)
            .collect::<Vec<_>>()
            .is_empty());
    }
}
