//! The simulator's unit registry: the tax administration's tree and its 2025 reorganisations.
//!
//! - until 2025-02-28: Tổng cục Thuế → 63 Cục Thuế (provinces) → Chi cục Thuế (districts);
//! - 2025-03-01 (Decision 381/QĐ-BTC): Cục Thuế → 20 Chi cục Thuế khu vực → Đội Thuế liên huyện;
//! - from 2025-07-01 (Decision 1378/QĐ-CT): Cục Thuế → 34 Thuế tỉnh/thành phố → Thuế cơ sở;
//! - 2026-06-15: one base unit of Hà Nội is renamed (same code, new name: the registry's
//!   snapshot shows the new name from that day);
//! - 2026-10-01: one base unit of Cao Bằng closes with no successor (its area is served by the
//!   province from then on): the dossiers it had open finish after it closed.
//!
//! Every unit has validity dates and successor ids (SCD type 2 in the warehouse). The grouping of
//! provinces into the 20 regions and the district counts are made up; the 34 provinces and the
//! provinces merged into each are the real 2025 ones.

use chrono::NaiveDate;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The 34 provinces since 2025-07 and the pre-2025 provinces merged into each.
pub const PROVINCES: &[(&str, &[&str])] = &[
    ("An Giang", &["An Giang", "Kiên Giang"]),
    ("Bắc Ninh", &["Bắc Ninh", "Bắc Giang"]),
    ("Cà Mau", &["Cà Mau", "Bạc Liêu"]),
    ("Cần Thơ", &["Cần Thơ", "Sóc Trăng", "Hậu Giang"]),
    ("Cao Bằng", &["Cao Bằng"]),
    ("Đà Nẵng", &["Đà Nẵng", "Quảng Nam"]),
    ("Đắk Lắk", &["Đắk Lắk", "Phú Yên"]),
    ("Điện Biên", &["Điện Biên"]),
    ("Đồng Nai", &["Đồng Nai", "Bình Phước"]),
    ("Đồng Tháp", &["Đồng Tháp", "Tiền Giang"]),
    ("Gia Lai", &["Gia Lai", "Bình Định"]),
    ("Hà Nội", &["Hà Nội"]),
    ("Hà Tĩnh", &["Hà Tĩnh"]),
    ("Hải Phòng", &["Hải Phòng", "Hải Dương"]),
    (
        "Hồ Chí Minh",
        &["Hồ Chí Minh", "Bình Dương", "Bà Rịa - Vũng Tàu"],
    ),
    ("Huế", &["Thừa Thiên Huế"]),
    ("Hưng Yên", &["Hưng Yên", "Thái Bình"]),
    ("Khánh Hòa", &["Khánh Hòa", "Ninh Thuận"]),
    ("Lai Châu", &["Lai Châu"]),
    ("Lâm Đồng", &["Lâm Đồng", "Đắk Nông", "Bình Thuận"]),
    ("Lạng Sơn", &["Lạng Sơn"]),
    ("Lào Cai", &["Lào Cai", "Yên Bái"]),
    ("Nghệ An", &["Nghệ An"]),
    ("Ninh Bình", &["Ninh Bình", "Hà Nam", "Nam Định"]),
    ("Phú Thọ", &["Phú Thọ", "Vĩnh Phúc", "Hòa Bình"]),
    ("Quảng Ngãi", &["Quảng Ngãi", "Kon Tum"]),
    ("Quảng Ninh", &["Quảng Ninh"]),
    ("Quảng Trị", &["Quảng Trị", "Quảng Bình"]),
    ("Sơn La", &["Sơn La"]),
    ("Tây Ninh", &["Tây Ninh", "Long An"]),
    ("Thái Nguyên", &["Thái Nguyên", "Bắc Kạn"]),
    ("Thanh Hóa", &["Thanh Hóa"]),
    ("Tuyên Quang", &["Tuyên Quang", "Hà Giang"]),
    ("Vĩnh Long", &["Vĩnh Long", "Bến Tre", "Trà Vinh"]),
];

const ROMAN: &[&str] = &[
    "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII", "XIII", "XIV", "XV",
    "XVI", "XVII", "XVIII", "XIX", "XX",
];

pub fn reorg_381() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 3, 1).expect("valid")
}
pub fn reorg_1378() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 7, 1).expect("valid")
}
/// The day the closed base unit (`CLOSED_UNIT`) no longer exists.
pub fn closure_2026() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 10, 1).expect("valid")
}
/// The base unit that closes on `closure_2026()` with no successor.
pub const CLOSED_UNIT: &str = "TP05-02";
/// The day `RENAMED_UNIT` takes the name `RENAMED_TO`.
pub fn rename_2026() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 6, 15).expect("valid")
}
/// The base unit renamed on `rename_2026()`, keeping its code.
pub const RENAMED_UNIT: &str = "TP12-01";
pub const RENAMED_TO: &str = "Thuế cơ sở 1 Hà Nội (Ba Đình - Hoàn Kiếm)";
pub fn registry_start() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 1, 1).expect("valid")
}

/// The unit's department id on the National Public Service Portal (`departmentId` in the
/// portal's evaluation API, a UUID): what the registry carries so that chiso can join the
/// portal's published figures to its own units. Derived from the unit's code alone, so it is
/// the same in every simulated world (a job file can name the root's).
///
/// The simulator's assumption (PORTAL_EVALUATION_API.md §9 leaves it open): the tax units form
/// their own tree on the portal, rooted at the central unit, with the tax administration's own
/// levels below it.
pub fn portal_department_id(unit_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("dvcqg-department:{unit_id}").as_bytes());
    let x: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// One version of a unit in the registry.
#[derive(Debug, Clone)]
pub struct Unit {
    pub id: String,
    pub name: String,
    pub parent: Option<String>,
    /// 1 central, 2 provincial/regional, 3 base.
    pub level: u8,
    pub kind: &'static str,
    pub valid_from: NaiveDate,
    /// Last day of validity (inclusive), `None` while current.
    pub valid_to: Option<NaiveDate>,
    pub successors: Vec<String>,
    /// Index of the service profile shared along a line of succession.
    pub lineage: usize,
    /// Relative dossier volume.
    pub weight: f64,
}

impl Unit {
    pub fn valid_on(&self, d: NaiveDate) -> bool {
        self.valid_from <= d && self.valid_to.is_none_or(|t| d <= t)
    }
}

/// How well a line of units serves: drawn once per lineage.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Probability a dossier is handled by its due date.
    pub on_time: f64,
    /// Typical handling time as a share of the statutory time.
    pub speed: f64,
    /// Probability a status change reaches the portal more than a day late.
    pub sync_late: f64,
    /// Probability a dossier is digitised into the owner's store.
    pub digitise: f64,
    /// Probability of an electronic result.
    pub e_result: f64,
    /// Probability a petition is handled on time.
    pub petition_on_time: f64,
}

pub struct Registry {
    pub units: Vec<Unit>,
    pub profiles: Vec<Profile>,
}

fn profile(rng: &mut ChaCha8Rng) -> Profile {
    // A quality score in [0, 1]; most units are decent, a few are poor (SPEC §4: some units score
    // 6 of 20 on progress, others 19).
    let q: f64 = {
        let a: f64 = rng.random();
        let b: f64 = rng.random();
        (0.1 + 0.9 * a.max(b)).min(1.0)
    };
    Profile {
        on_time: (0.28 + 0.70 * q).min(0.98),
        speed: 0.6 + (1.0 - q) * 0.6 + rng.random::<f64>() * 0.2,
        sync_late: (0.01 + (1.0 - q) * 0.12).min(0.2),
        digitise: (0.04 + 0.16 * rng.random::<f64>()).min(0.3),
        e_result: 0.5 + 0.3 * q,
        petition_on_time: 0.45 + 0.5 * q,
    }
}

impl Registry {
    pub fn build(seed: u64) -> Registry {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_0001);
        let r381 = reorg_381();
        let r1378 = reorg_1378();
        let day_before = |d: NaiveDate| d.pred_opt().expect("valid");
        let mut units = Vec::new();
        let mut profiles = Vec::new();

        // Old provinces in the order of the new ones they merge into.
        let mut old: Vec<(usize, &str)> = Vec::new();
        for (k, (_, parts)) in PROVINCES.iter().enumerate() {
            for p in *parts {
                old.push((k, p));
            }
        }
        debug_assert_eq!(old.len(), 63);
        // 20 regions: consecutive runs of old provinces (3 or 4 each).
        let region_of = |i: usize| -> usize { i * 20 / old.len() };

        units.push(Unit {
            id: "TCT".into(),
            name: "Tổng cục Thuế".into(),
            parent: None,
            level: 1,
            kind: "TONG_CUC_THUE",
            valid_from: registry_start(),
            valid_to: Some(day_before(r381)),
            successors: vec!["CT".into()],
            lineage: 0,
            weight: 0.0,
        });
        units.push(Unit {
            id: "CT".into(),
            name: "Cục Thuế".into(),
            parent: None,
            level: 1,
            kind: "CUC_THUE",
            valid_from: r381,
            valid_to: None,
            successors: vec![],
            lineage: 0,
            weight: 0.0,
        });
        profiles.push(profile(&mut rng));

        // New provinces and regions first, so that successor ids are known.
        let prov_id = |k: usize| format!("TP{:02}", k + 1);
        let region_id = |r: usize| format!("KV{:02}", r + 1);
        let mut team_counter = [0usize; 20];
        let mut base_counter = vec![0usize; PROVINCES.len()];
        let mut province_lineage = vec![usize::MAX; PROVINCES.len()];
        let mut region_lineage = [usize::MAX; 20];
        let mut region_successors: Vec<Vec<String>> = vec![Vec::new(); 20];

        for (i, (k, name)) in old.iter().enumerate() {
            let r = region_of(i);
            if !region_successors[r].contains(&prov_id(*k)) {
                region_successors[r].push(prov_id(*k));
            }
            if province_lineage[*k] == usize::MAX {
                province_lineage[*k] = profiles.len();
                profiles.push(profile(&mut rng));
            }
            if region_lineage[r] == usize::MAX {
                region_lineage[r] = province_lineage[*k];
            }
            let big = matches!(*name, "Hà Nội" | "Hồ Chí Minh");
            let pweight = if big {
                8.0
            } else {
                0.6 + rng.random::<f64>() * 1.6
            };
            let old_id = format!("T{:02}", i + 1);
            units.push(Unit {
                id: old_id.clone(),
                name: format!("Cục Thuế {}", name),
                parent: Some("TCT".into()),
                level: 2,
                kind: "CUC_THUE_TINH",
                valid_from: registry_start(),
                valid_to: Some(day_before(r381)),
                successors: vec![region_id(r)],
                lineage: province_lineage[*k],
                weight: pweight * 0.25,
            });
            // Districts, paired into inter-district teams (2025-03) that become base units
            // (2025-07) of the new province.
            let districts = if big {
                rng.random_range(20..28)
            } else {
                rng.random_range(6..14)
            };
            let mut dnum = 0;
            while dnum < districts {
                let pair = if dnum + 1 < districts { 2 } else { 1 };
                team_counter[r] += 1;
                base_counter[*k] += 1;
                let team_id = format!("{}-{:02}", region_id(r), team_counter[r]);
                let base_id = format!("{}-{:02}", prov_id(*k), base_counter[*k]);
                let lineage = profiles.len();
                profiles.push(profile(&mut rng));
                let w = pweight * (0.5 + rng.random::<f64>());
                for j in 0..pair {
                    units.push(Unit {
                        id: format!("{old_id}-{:02}", dnum + j + 1),
                        name: format!("Chi cục Thuế {} số {}", name, dnum + j + 1),
                        parent: Some(old_id.clone()),
                        level: 3,
                        kind: "CHI_CUC_THUE",
                        valid_from: registry_start(),
                        valid_to: Some(day_before(r381)),
                        successors: vec![team_id.clone()],
                        lineage,
                        weight: w / pair as f64,
                    });
                }
                units.push(Unit {
                    id: team_id.clone(),
                    name: format!(
                        "Đội Thuế liên huyện {} số {} (khu vực {})",
                        name, team_counter[r], ROMAN[r]
                    ),
                    parent: Some(region_id(r)),
                    level: 3,
                    kind: "DOI_THUE_LIEN_HUYEN",
                    valid_from: r381,
                    valid_to: Some(day_before(r1378)),
                    successors: vec![base_id.clone()],
                    lineage,
                    weight: w,
                });
                units.push(Unit {
                    id: base_id,
                    name: format!("Thuế cơ sở {} {}", base_counter[*k], PROVINCES[*k].0),
                    parent: Some(prov_id(*k)),
                    level: 3,
                    kind: "THUE_CO_SO",
                    valid_from: r1378,
                    valid_to: None,
                    successors: vec![],
                    lineage,
                    weight: w,
                });
                dnum += pair;
            }
        }
        for r in 0..20 {
            let w: f64 = units
                .iter()
                .filter(|u| u.kind == "CUC_THUE_TINH" && u.successors[0] == region_id(r))
                .map(|u| u.weight)
                .sum();
            units.push(Unit {
                id: region_id(r),
                name: format!("Chi cục Thuế khu vực {}", ROMAN[r]),
                parent: Some("CT".into()),
                level: 2,
                kind: "CHI_CUC_THUE_KHU_VUC",
                valid_from: r381,
                valid_to: Some(day_before(r1378)),
                successors: region_successors[r].clone(),
                lineage: region_lineage[r],
                weight: w,
            });
        }
        for (k, (name, _)) in PROVINCES.iter().enumerate() {
            let w: f64 = units
                .iter()
                .filter(|u| {
                    u.kind == "CUC_THUE_TINH"
                        && PROVINCES[k]
                            .1
                            .iter()
                            .any(|p| u.name == format!("Cục Thuế {p}"))
                })
                .map(|u| u.weight)
                .sum();
            let kind_name = if matches!(
                *name,
                "Hà Nội" | "Hồ Chí Minh" | "Hải Phòng" | "Đà Nẵng" | "Cần Thơ" | "Huế"
            ) {
                "Thuế thành phố"
            } else {
                "Thuế tỉnh"
            };
            units.push(Unit {
                id: prov_id(k),
                name: format!("{kind_name} {name}"),
                parent: Some("CT".into()),
                level: 2,
                kind: "THUE_TINH",
                valid_from: r1378,
                valid_to: None,
                successors: vec![],
                lineage: province_lineage[k],
                weight: w,
            });
        }
        // A base unit closes with no successor (the province serves its area from then on).
        if let Some(u) = units.iter_mut().find(|u| u.id == CLOSED_UNIT) {
            u.valid_to = Some(day_before(closure_2026()));
        }
        Registry { units, profiles }
    }

    /// Units that handle dossiers on `date` (levels 2 and 3), with cumulative weights.
    pub fn handlers_on(&self, date: NaiveDate) -> (Vec<usize>, Vec<f64>) {
        let mut idx = Vec::new();
        let mut cum = Vec::new();
        let mut total = 0.0;
        for (i, u) in self.units.iter().enumerate() {
            if u.level >= 2 && u.valid_on(date) && u.weight > 0.0 {
                total += u.weight;
                idx.push(i);
                cum.push(total);
            }
        }
        (idx, cum)
    }

    /// The provincial-level unit of a unit (itself when level 2).
    pub fn province_of(&self, i: usize) -> usize {
        let u = &self.units[i];
        if u.level <= 2 {
            return i;
        }
        let parent = u.parent.as_deref().unwrap_or_default();
        self.units.iter().position(|p| p.id == parent).unwrap_or(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_has_the_2025_shape() {
        let r = Registry::build(7);
        let on = |d: NaiveDate, kind: &str| {
            r.units
                .iter()
                .filter(|u| u.kind == kind && u.valid_on(d))
                .count()
        };
        let before = NaiveDate::from_ymd_opt(2025, 1, 15).unwrap();
        let mid = NaiveDate::from_ymd_opt(2025, 5, 15).unwrap();
        let after = NaiveDate::from_ymd_opt(2026, 8, 1).unwrap();
        assert_eq!(on(before, "CUC_THUE_TINH"), 63);
        assert_eq!(on(mid, "CHI_CUC_THUE_KHU_VUC"), 20);
        assert_eq!(on(after, "THUE_TINH"), 34);
        let base = on(after, "THUE_CO_SO");
        assert!(
            (300..=420).contains(&base),
            "about 350 base units, got {base}"
        );
        assert_eq!(
            on(mid, "DOI_THUE_LIEN_HUYEN"),
            base,
            "teams become base units one to one"
        );
        // One base unit closes in 2026 with no successor.
        let closed: Vec<&Unit> = r
            .units
            .iter()
            .filter(|u| u.valid_to.is_some() && u.successors.is_empty())
            .collect();
        assert_eq!(closed.len(), 1);
        assert_eq!(
            (closed[0].id.as_str(), closed[0].kind, closed[0].valid_to),
            (CLOSED_UNIT, "THUE_CO_SO", closure_2026().pred_opt())
        );
        assert!(!closed[0].valid_on(closure_2026()));
        // Every other ended unit names successors that exist and start the next day.
        for u in &r.units {
            if let Some(to) = u.valid_to.filter(|_| u.id != CLOSED_UNIT) {
                assert!(!u.successors.is_empty(), "{} has no successor", u.id);
                for s in &u.successors {
                    let succ = r
                        .units
                        .iter()
                        .find(|x| &x.id == s)
                        .expect("successor exists");
                    assert_eq!(succ.valid_from, to.succ_opt().unwrap(), "{} -> {}", u.id, s);
                }
            }
        }
    }
}
