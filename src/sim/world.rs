//! The simulated world: every dossier, processing step, payment, rating and petition of the
//! tax administration, generated day by day from a seed, with the time each record reaches the
//! portal. The server shows what is visible at its clock; `sim generate` writes it all to files.
//!
//! Generation is keyed by (seed, day, index): a day's records do not depend on the window's
//! length, so two worlds with the same seed agree on every day they share.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::calendar::Calendar;
use super::catalogue::{self, Procedure};
use super::names;
use super::units::Registry;

/// One record as the feed serves it, with when it becomes visible.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Local wall-clock seconds since the epoch at which the portal has it.
    pub visible_at: i64,
    /// Record key, `|`-joined when composite.
    pub key: String,
    /// Version value (the dataset's version column, `yyyyMMddHHmmss`), empty for append-only.
    pub version: String,
    pub json: String,
    /// Place of the version among its dossier's events (the truth of which version is current,
    /// whatever order they arrive in); 0 for other feeds.
    pub event: u32,
}

pub fn secs(t: NaiveDateTime) -> i64 {
    t.and_utc().timestamp()
}

pub fn ts(t: NaiveDateTime) -> String {
    t.format("%Y%m%d%H%M%S").to_string()
}

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    // splitmix64 over the three words
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Everything that does not change day by day.
pub struct Setting {
    pub seed: u64,
    pub cal: Calendar,
    pub registry: Registry,
    pub procedures: Vec<Procedure>,
    /// Cumulative procedure weights per level: [provincial, base].
    proc_cum: [(Vec<usize>, Vec<f64>); 2],
    /// Handler units and cumulative weights per era (before 381, between, after 1378, after the
    /// 2026 closure of a base unit).
    eras: [(Vec<usize>, Vec<f64>); 4],
    /// Dossiers received per day on an ordinary working day.
    pub per_day: f64,
    /// Petitions per dossier.
    pub petition_ratio: f64,
}

/// Relative dossier volume of a day: working days 1 (1.3 from the 15th to the 20th, when
/// declarations cluster), days off 0.08.
pub fn day_factor(cal: &Calendar, day: NaiveDate) -> f64 {
    if !cal.is_working_day(day) {
        0.08
    } else if (15..=20).contains(&day.day()) {
        1.3
    } else {
        1.0
    }
}

fn pick(cum: &[f64], rng: &mut ChaCha8Rng) -> usize {
    let total = *cum.last().unwrap_or(&1.0);
    let x = rng.random::<f64>() * total;
    cum.partition_point(|&c| c < x)
        .min(cum.len().saturating_sub(1))
}

impl Setting {
    pub fn new(seed: u64, per_day: f64, petition_ratio: f64) -> Setting {
        let cal = Calendar::vietnam();
        let registry = Registry::build(seed);
        let procedures = catalogue::build(seed, &cal);
        let by_level = |level: &str| {
            let mut idx = Vec::new();
            let mut cum = Vec::new();
            let mut total = 0.0;
            for (i, p) in procedures.iter().enumerate() {
                if p.level == level {
                    total += p.weight;
                    idx.push(i);
                    cum.push(total);
                }
            }
            (idx, cum)
        };
        let proc_cum = [by_level("Cấp Tỉnh"), by_level("Cấp Cơ sở")];
        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd).expect("valid");
        let eras = [
            registry.handlers_on(d(2025, 1, 15)),
            registry.handlers_on(d(2025, 5, 15)),
            registry.handlers_on(d(2026, 1, 15)),
            registry.handlers_on(super::units::closure_2026()),
        ];
        Setting {
            seed,
            cal,
            registry,
            procedures,
            proc_cum,
            eras,
            per_day,
            petition_ratio,
        }
    }

    fn era(&self, day: NaiveDate) -> &(Vec<usize>, Vec<f64>) {
        if day < super::units::reorg_381() {
            &self.eras[0]
        } else if day < super::units::reorg_1378() {
            &self.eras[1]
        } else if day < super::units::closure_2026() {
            &self.eras[2]
        } else {
            &self.eras[3]
        }
    }

    /// How many dossiers are submitted on `day`.
    pub fn dossiers_on(&self, day: NaiveDate) -> u32 {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, 1, day.num_days_from_ce() as u64));
        let factor = day_factor(&self.cal, day);
        let noise = 0.85 + 0.3 * rng.random::<f64>();
        (self.per_day * factor * noise).round() as u32
    }

    /// How many petitions are received on `day`.
    pub fn petitions_on(&self, day: NaiveDate) -> u32 {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, 2, day.num_days_from_ce() as u64));
        let mean = self.per_day
            * self.petition_ratio
            * if self.cal.is_working_day(day) {
                1.0
            } else {
                0.3
            };
        // Bernoulli sum: small means stay integer and reproducible.
        let whole = mean.floor() as u32;
        whole + u32::from(rng.random_bool((mean - mean.floor()).clamp(0.0, 1.0)))
    }
}

// ------------------------------------------------------------------------------------------
// Dossiers

#[derive(Serialize, Clone)]
#[allow(non_snake_case)]
struct TaiLieu {
    MaThanhPhanHoSo: String,
    DuocSoHoa: u8,
    DuocTaiSuDung: u8,
    DuocLayTuKhoDMQG: u8,
}

#[derive(Serialize, Clone)]
#[allow(non_snake_case)]
struct LePhi {
    MaPhiLePhi: &'static str,
    Gia: i64,
}

#[derive(Serialize, Clone)]
#[allow(non_snake_case)]
struct BoSung {
    NgayBoSung: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    NgayTiepNhanBoSung: Option<String>,
    NgayHenTraTruoc: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    NgayHenTraMoi: Option<String>,
}

#[derive(Serialize, Clone)]
#[allow(non_snake_case)]
struct KetQua {
    MaGiayToKetQua: String,
    DuongDanTepTinKetQua: String,
}

#[derive(Serialize, Clone)]
#[allow(non_snake_case)]
struct KetNoi {
    MaCSDL: &'static str,
}

#[derive(Serialize, Clone)]
#[allow(non_snake_case)]
struct Dossier {
    MaHoSo: String,
    MaTTHC: String,
    TenTTHC: String,
    MaLinhVuc: &'static str,
    KenhThucHien: &'static str,
    ChuHoSo: String,
    SoGiayToChuHoSo: String,
    LoaiDoiTuong: &'static str,
    NgayNopHoSo: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    NgayTiepNhan: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    NgayHenTra: Option<String>,
    TrangThaiHoSo: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    NgayTra: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    NgayKetThucXuLy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    NgayTuChoi: Option<String>,
    DonViXuLy: String,
    HoSoCoThanhPhanSoHoa: u8,
    DuocThanhToanTrucTuyen: u8,
    TaiLieuNop: Vec<TaiLieu>,
    DanhSachLePhi: Vec<LePhi>,
    DanhSachHoSoBoSung: Vec<BoSung>,
    DanhSachGiayToKetQua: Vec<KetQua>,
    DSKetNoiCSDL: Vec<KetNoi>,
    ThoiDiemDongBo: String,
}

#[derive(Serialize)]
#[allow(non_snake_case)]
struct Step<'a> {
    MaHoSo: &'a str,
    NguoiXuLy: String,
    ChucDanh: &'static str,
    ThoiDiemXuLy: String,
    PhongBanXuLy: &'static str,
    NoiDungXuLy: &'static str,
    TrangThai: &'static str,
    NgayBatDau: String,
    NgayKetThucTheoQuyDinh: String,
}

#[derive(Serialize)]
#[allow(non_snake_case)]
struct Rating<'a> {
    MaHoSo: &'a str,
    MaDonVi: &'a str,
    MucDoHaiLong: &'static str,
    CoKhieuNai: u8,
    ThoiGianDanhGia: String,
}

#[derive(Serialize)]
#[allow(non_snake_case)]
struct Payment<'a> {
    MaHoSo: &'a str,
    MaThamChieu: String,
    SoTien: i64,
    TrangThaiThanhToan: &'static str,
    KenhThanhToan: &'static str,
    ThoiGianCapNhat: String,
}

/// All records one dossier produces.
#[derive(Default)]
pub struct DossierOut {
    pub versions: Vec<Entry>,
    pub steps: Vec<Entry>,
    pub payments: Vec<Entry>,
    pub rating: Option<Entry>,
    /// Handler unit index and receipt time (for the national report).
    pub unit: usize,
    pub received: Option<NaiveDateTime>,
    /// False for the few dossiers never synced to the portal.
    pub synced: bool,
}

fn rand_time(rng: &mut ChaCha8Rng, day: NaiveDate, from_h: u32, to_h: u32) -> NaiveDateTime {
    let s = rng.random_range(from_h * 3600..to_h * 3600);
    day.and_hms_opt(s / 3600, (s / 60) % 60, s % 60)
        .expect("valid")
}

fn add_secs(t: NaiveDateTime, s: i64) -> NaiveDateTime {
    t + Duration::seconds(s)
}

const STEP_ROLES: &[(&str, &str)] = &[
    ("Chuyên viên", "Bộ phận Một cửa"),
    ("Chuyên viên", "Đội Kê khai - Kế toán thuế"),
    ("Phó Đội trưởng", "Đội Quản lý thuế"),
    ("Đội trưởng", "Đội Quản lý thuế"),
];

/// Generates dossier `j` submitted on `day`.
pub fn dossier(s: &Setting, day: NaiveDate, j: u32) -> DossierOut {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(
        s.seed,
        3 + ((day.num_days_from_ce() as u64) << 20),
        j as u64,
    ));
    let (units, cum) = s.era(day);
    let ui = units[pick(cum, &mut rng)];
    let unit = &s.registry.units[ui];
    let profile = &s.registry.profiles[unit.lineage];
    let lvl = if unit.level == 2 { 0 } else { 1 };
    // A dossier is of a procedure announced by its day (the catalogue lists no other): the
    // procedure drawn, or the next announced one of its level (no further draw, so the rest of
    // the dossier's draws are the same).
    let (idx, cum) = &s.proc_cum[lvl];
    let mut k = pick(cum, &mut rng);
    for _ in 0..idx.len() {
        if s.procedures[idx[k]].announced <= day {
            break;
        }
        k = (k + 1) % idx.len();
    }
    let pi = idx[k];
    let proc_ = &s.procedures[pi];
    let cal = &s.cal;

    let online_ok = proc_.service_level != "KHONG";
    let channel = if online_ok && rng.random_bool(0.99) {
        "2"
    } else if rng.random_bool(0.8) {
        "1"
    } else {
        "3"
    };
    let submit = if channel == "2" {
        rand_time(&mut rng, day, 6, 23)
    } else {
        cal.next_office_time(rand_time(&mut rng, day, 7, 17))
    };
    let received = if channel == "2" {
        cal.next_office_time(add_secs(submit, rng.random_range(300..5400)))
    } else {
        submit
    };
    let id = format!(
        "{}-{:02}{:02}{:02}-{:05}",
        unit.id,
        day.year() % 100,
        day.month(),
        day.day(),
        j
    );
    let business = rng.random_bool(0.38);
    let (owner, owner_id, kind) = if business {
        (names::company(&mut rng), names::tax_code(&mut rng), "2")
    } else if rng.random_bool(0.97) {
        (names::person(&mut rng), names::citizen_id(&mut rng), "1")
    } else {
        (names::person(&mut rng), names::citizen_id(&mut rng), "4")
    };
    let digitised = rng.random_bool(profile.digitise);
    let components = rng.random_range(2..=4);
    let replaced = proc_.replaceable_components && rng.random_bool(0.07);
    let docs: Vec<TaiLieu> = (0..components)
        .map(|c| TaiLieu {
            MaThanhPhanHoSo: format!("{}.TP{}", proc_.code, c + 1),
            DuocSoHoa: u8::from(digitised || rng.random_bool(0.25)),
            DuocTaiSuDung: if replaced && c == 0 {
                if rng.random_bool(0.7) {
                    1
                } else {
                    2
                }
            } else {
                0
            },
            DuocLayTuKhoDMQG: u8::from(digitised && rng.random_bool(0.5)),
        })
        .collect();
    let fees: Vec<LePhi> = if proc_.obligation && rng.random_bool(0.93) {
        let amount = if rng.random_bool(0.1) {
            0
        } else {
            (rng.random_range(100u64..50_000) * 1000) as i64
        };
        vec![LePhi {
            MaPhiLePhi: if proc_.field == "TB" { "LPTB" } else { "THUE" },
            Gia: amount,
        }]
    } else {
        vec![]
    };
    let population = if proc_.population_linked {
        rng.random_bool(0.75)
    } else {
        rng.random_bool(0.05)
    };
    let links = if population {
        vec![KetNoi { MaCSDL: "CSDLQGDC" }]
    } else {
        vec![]
    };
    let mut due = cal.add_working_days(received, proc_.statutory_days);

    let mut rec = Dossier {
        MaHoSo: id.clone(),
        MaTTHC: proc_.code.clone(),
        TenTTHC: proc_.name.clone(),
        MaLinhVuc: proc_.field,
        KenhThucHien: channel,
        ChuHoSo: owner,
        SoGiayToChuHoSo: owner_id,
        LoaiDoiTuong: kind,
        NgayNopHoSo: ts(submit),
        NgayTiepNhan: None,
        NgayHenTra: None,
        TrangThaiHoSo: "1",
        NgayTra: None,
        NgayKetThucXuLy: None,
        NgayTuChoi: None,
        DonViXuLy: unit.id.clone(),
        HoSoCoThanhPhanSoHoa: u8::from(digitised),
        DuocThanhToanTrucTuyen: 0,
        TaiLieuNop: docs,
        DanhSachLePhi: fees,
        DanhSachHoSoBoSung: vec![],
        DanhSachGiayToKetQua: vec![],
        DSKetNoiCSDL: links,
        ThoiDiemDongBo: String::new(),
    };

    // The dossier's events: (time, status), each producing a version and a processing step.
    let mut events: Vec<(NaiveDateTime, &'static str, Dossier)> = Vec::new();
    let mut out = DossierOut {
        unit: ui,
        received: Some(received),
        synced: !rng.random_bool(0.01),
        ..Default::default()
    };
    let mut push = |t: NaiveDateTime, status: &'static str, rec: &mut Dossier| {
        rec.TrangThaiHoSo = status;
        events.push((t, status, rec.clone()));
    };
    if channel == "2" {
        push(submit, "1", &mut rec);
    }
    rec.NgayTiepNhan = Some(ts(received));
    rec.NgayHenTra = Some(ts(due));
    push(received, "2", &mut rec);
    let u: f64 = rng.random();
    if u < 0.02 {
        let t = cal.next_office_time(add_secs(received, rng.random_range(1800..2 * 86_400)));
        rec.NgayTuChoi = Some(ts(t));
        push(t, "3", &mut rec);
    } else {
        let mut t = cal.next_office_time(add_secs(received, rng.random_range(600..14_400)));
        push(t, "4", &mut rec);
        let span = (secs(due) - secs(received)).max(3600);
        // Supplements: 10% of dossiers, a fifth of those twice (which makes them late).
        let supplements = if rng.random_bool(0.10) {
            if rng.random_bool(0.2) {
                2
            } else {
                1
            }
        } else {
            0
        };
        for _ in 0..supplements {
            let ask = cal.next_office_time(add_secs(
                t,
                (span as f64 * rng.random_range(0.1..0.4)) as i64,
            ));
            rec.DanhSachHoSoBoSung.push(BoSung {
                NgayBoSung: ts(ask),
                NgayTiepNhanBoSung: None,
                NgayHenTraTruoc: ts(due),
                NgayHenTraMoi: None,
            });
            push(ask, "5", &mut rec);
            let answer = cal.next_office_time(add_secs(ask, rng.random_range(86_400..6 * 86_400)));
            let waited = cal.working_days_between(ask.date(), answer.date()) as u32;
            due = cal.add_working_days(due, waited);
            if let Some(b) = rec.DanhSachHoSoBoSung.last_mut() {
                b.NgayTiepNhanBoSung = Some(ts(answer));
                b.NgayHenTraMoi = Some(ts(due));
            }
            rec.NgayHenTra = Some(ts(due));
            push(answer, "4", &mut rec);
            t = answer;
        }
        let end_kind: f64 = rng.random();
        let on_time = supplements < 2 && rng.random_bool(profile.on_time);
        let remaining = (secs(due) - secs(t)).max(1800);
        let finish = if on_time {
            let share = (profile.speed * rng.random_range(0.5..1.3)).min(0.97);
            add_secs(t, (remaining as f64 * share) as i64 + 60)
        } else {
            let late_days = rng.random_range(1..=1 + (12.0 * (1.0 - profile.on_time)) as u32);
            cal.next_office_time(add_secs(
                cal.add_working_days(due, late_days),
                rng.random_range(0..20_000),
            ))
        };
        let finish = finish.max(add_secs(t, 120));
        // Financial obligation: asked part-way, paid online by most.
        let charge: i64 = rec.DanhSachLePhi.iter().map(|f| f.Gia).sum();
        if charge > 0 && end_kind >= 0.02 {
            let t6 = add_secs(t, ((secs(finish) - secs(t)) as f64 * 0.3) as i64 + 60);
            push(t6, "6", &mut rec);
            if channel == "2" && rng.random_bool(0.84) {
                let mut at = add_secs(t6, rng.random_range(120..3600));
                let attempts = if rng.random_bool(0.04) { 2 } else { 1 };
                for a in 0..attempts {
                    let reference = format!("TT{}{:02}", id.replace('-', ""), a);
                    let pay = |status: &'static str, at: NaiveDateTime| {
                        let p = Payment {
                            MaHoSo: &id,
                            MaThamChieu: reference.clone(),
                            SoTien: charge,
                            TrangThaiThanhToan: status,
                            KenhThanhToan: "PAYGOV",
                            ThoiGianCapNhat: ts(at),
                        };
                        Entry {
                            visible_at: secs(at) + 30,
                            key: reference.clone(),
                            version: ts(at),
                            json: serde_json::to_string(&p).expect("serialises"),
                            event: 0,
                        }
                    };
                    out.payments.push(pay("1", at));
                    at = add_secs(at, rng.random_range(30..1800));
                    let last = a + 1 == attempts;
                    out.payments.push(pay(if last { "2" } else { "4" }, at));
                    if last && rng.random_bool(0.005) {
                        out.payments.push(pay(
                            "3",
                            add_secs(at, rng.random_range(86_400..10 * 86_400)),
                        ));
                    }
                    at = add_secs(at, 300);
                }
                rec.DuocThanhToanTrucTuyen = 1;
                push(
                    at.min(add_secs(finish, -60)).max(add_secs(t6, 60)),
                    "4",
                    &mut rec,
                );
            }
        }
        if end_kind < 0.01 {
            push(finish, "7", &mut rec);
        } else if end_kind < 0.02 {
            push(finish, "8", &mut rec);
        } else {
            rec.NgayKetThucXuLy = Some(ts(finish));
            let electronic = rng.random_bool(profile.e_result);
            rec.DanhSachGiayToKetQua = vec![KetQua {
                MaGiayToKetQua: format!("KQ.{id}"),
                DuongDanTepTinKetQua: if electronic {
                    format!("https://dichvucong.gov.vn/ketqua/{id}.pdf")
                } else {
                    String::new()
                },
            }];
            push(finish, "9", &mut rec);
            let returned = if electronic {
                add_secs(finish, rng.random_range(60..3600))
            } else {
                cal.next_office_time(add_secs(finish, rng.random_range(3600..3 * 86_400)))
            };
            rec.NgayTra = Some(ts(returned));
            push(returned, "10", &mut rec);
            if rng.random_bool(0.45) {
                let late = finish > due;
                let unhappy = rng.random_bool(0.06 + if late { 0.35 } else { 0.0 });
                let at = add_secs(returned, rng.random_range(600..3 * 86_400));
                let r = Rating {
                    MaHoSo: &id,
                    MaDonVi: &unit.id,
                    MucDoHaiLong: if unhappy {
                        "3"
                    } else if rng.random_bool(0.55) {
                        "1"
                    } else {
                        "2"
                    },
                    CoKhieuNai: u8::from(rng.random_bool(if unhappy { 0.15 } else { 0.005 })),
                    ThoiGianDanhGia: ts(at),
                };
                out.rating = Some(Entry {
                    visible_at: secs(at),
                    key: id.clone(),
                    version: ts(at),
                    json: serde_json::to_string(&r).expect("serialises"),
                    event: 0,
                });
            }
        }
    }

    // Versions reach the portal after a sync delay; late syncs reorder them, which is how a
    // status appears to go backwards.
    let mut last_sync = 0i64;
    let mut prev_time = submit;
    for (k, (t, status, mut v)) in events.into_iter().enumerate() {
        let delay = if rng.random_bool(profile.sync_late) {
            rng.random_range(25 * 3600..80 * 3600)
        } else {
            rng.random_range(20..40 * 60)
        };
        let mut sync = secs(t) + delay;
        if sync == last_sync {
            sync += 1;
        }
        last_sync = sync;
        let sync_t = chrono::DateTime::from_timestamp(sync, 0)
            .expect("valid")
            .naive_utc();
        v.ThoiDiemDongBo = ts(sync_t);
        let json = serde_json::to_string(&v).expect("serialises");
        out.versions.push(Entry {
            visible_at: sync,
            key: id.clone(),
            version: v.ThoiDiemDongBo.clone(),
            json,
            event: k as u32,
        });
        if k > 0 || channel != "2" {
            let (role, dept) = STEP_ROLES[rng.random_range(0..STEP_ROLES.len())];
            let step = Step {
                MaHoSo: &id,
                NguoiXuLy: names::person(&mut rng),
                ChucDanh: role,
                ThoiDiemXuLy: ts(t),
                PhongBanXuLy: dept,
                NoiDungXuLy: match status {
                    "2" => "Tiếp nhận hồ sơ",
                    "3" => "Từ chối tiếp nhận hồ sơ",
                    "4" => "Xử lý hồ sơ",
                    "5" => "Yêu cầu bổ sung hồ sơ",
                    "6" => "Thông báo nghĩa vụ tài chính",
                    "7" => "Công dân rút hồ sơ",
                    "8" => "Dừng xử lý hồ sơ",
                    "9" => "Hoàn thành xử lý",
                    _ => "Trả kết quả",
                },
                TrangThai: status,
                NgayBatDau: ts(prev_time),
                NgayKetThucTheoQuyDinh: ts(due),
            };
            out.steps.push(Entry {
                visible_at: secs(t) + 300,
                key: format!("{id}|{}|{status}", ts(t)),
                version: String::new(),
                json: serde_json::to_string(&step).expect("serialises"),
                event: 0,
            });
        }
        prev_time = t;
    }
    // Resends: the portal sometimes delivers the same version again, late.
    let n = out.versions.len();
    for k in 0..n {
        if rng.random_bool(0.03) {
            let mut again = out.versions[k].clone();
            again.visible_at += rng.random_range(3600..48 * 3600);
            out.versions.push(again);
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// Petitions

#[derive(Serialize, Clone)]
#[allow(non_snake_case)]
struct HistoryItem {
    TrangThai: &'static str,
    ThoiDiem: String,
}

#[derive(Serialize, Clone)]
#[allow(non_snake_case)]
struct Petition {
    MaPAKN: String,
    MaDonVi: String,
    PhanLoai: &'static str,
    TieuDe: &'static str,
    NguoiGui: String,
    NgayTiepNhan: String,
    TrangThai: &'static str,
    LichSuXuLy: Vec<HistoryItem>,
    SoLuotThich: u32,
    SoLuotKhongThich: u32,
    PhanAnhLai: u8,
    NgayCapNhat: String,
}

const TITLES: &[(&str, &str)] = &[
    ("1", "Thủ tục hoàn thuế thu nhập cá nhân kéo dài"),
    ("1", "Hướng dẫn kê khai lệ phí trước bạ chưa rõ"),
    ("1", "Đề nghị đơn giản hóa hồ sơ đăng ký thuế"),
    ("1", "Hệ thống nộp thuế điện tử báo lỗi"),
    ("2", "Cán bộ tiếp nhận hồ sơ chậm trễ"),
    ("2", "Thái độ phục vụ chưa đúng mực"),
    ("3", "Góp ý về giờ làm việc của bộ phận một cửa"),
];

/// Generates petition `j` received on `day`: one entry per status change.
pub fn petition(s: &Setting, day: NaiveDate, j: u32) -> Vec<Entry> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(
        s.seed,
        4 + ((day.num_days_from_ce() as u64) << 20),
        j as u64,
    ));
    let (units, cum) = s.era(day);
    let ui = units[pick(cum, &mut rng)];
    let unit = &s.registry.units[ui];
    let profile = &s.registry.profiles[unit.lineage];
    let cal = &s.cal;
    let category = match rng.random_range(0..100) {
        0..=71 => "1",
        72..=96 => "2",
        _ => "3",
    };
    let titles: Vec<&str> = TITLES
        .iter()
        .filter(|(c, _)| *c == category)
        .map(|(_, t)| *t)
        .collect();
    let received = rand_time(&mut rng, day, 6, 23);
    let start = cal.next_office_time(received);
    let on_time = rng.random_bool(profile.petition_on_time);
    let within = |wd: u32, rng: &mut ChaCha8Rng| -> NaiveDateTime {
        if on_time {
            let end = cal.add_working_days(start, wd);
            add_secs(
                start,
                ((secs(end) - secs(start)) as f64 * rng.random_range(0.1..0.95)) as i64,
            )
        } else {
            cal.next_office_time(add_secs(
                cal.add_working_days(start, wd),
                rng.random_range(86_400..8 * 86_400),
            ))
        }
    };
    let mut p = Petition {
        MaPAKN: format!(
            "PAKN-{:02}{:02}{:02}-{:04}",
            day.year() % 100,
            day.month(),
            day.day(),
            j
        ),
        MaDonVi: unit.id.clone(),
        PhanLoai: category,
        TieuDe: titles[rng.random_range(0..titles.len())],
        NguoiGui: names::person(&mut rng),
        NgayTiepNhan: ts(received),
        TrangThai: "MOI",
        LichSuXuLy: vec![HistoryItem {
            TrangThai: "MOI",
            ThoiDiem: ts(received),
        }],
        SoLuotThich: 0,
        SoLuotKhongThich: 0,
        PhanAnhLai: 0,
        NgayCapNhat: ts(received),
    };
    let mut out = Vec::new();
    let mut emit = |p: &mut Petition, status: &'static str, t: NaiveDateTime| {
        p.TrangThai = status;
        p.NgayCapNhat = ts(t);
        if status != p.LichSuXuLy.last().map_or("", |h| h.TrangThai) {
            p.LichSuXuLy.push(HistoryItem {
                TrangThai: status,
                ThoiDiem: ts(t),
            });
        }
        out.push(Entry {
            visible_at: secs(t),
            key: p.MaPAKN.clone(),
            version: p.NgayCapNhat.clone(),
            json: serde_json::to_string(p).expect("serialises"),
            event: 0,
        });
    };
    emit(&mut p, "MOI", received);
    if rng.random_bool(0.08) {
        let t = within(2, &mut rng);
        emit(&mut p, "TU_CHOI", t);
        return out;
    }
    let mut t = start;
    if rng.random_bool(0.2) {
        t = within(5, &mut rng);
        emit(&mut p, "YEU_CAU_BO_SUNG", t);
    }
    let resolved = within(15, &mut rng).max(add_secs(t, 3600));
    emit(&mut p, "DA_GIAI_QUYET", resolved);
    let published = cal.next_office_time(add_secs(
        resolved,
        rng.random_range(600..if on_time { 86_400 } else { 5 * 86_400 }),
    ));
    emit(&mut p, "DA_CONG_KHAI", published);
    // Reactions come in over the following days.
    let unhappy = rng.random_bool(if on_time { 0.3 } else { 0.6 });
    p.SoLuotThich = rng.random_range(0..20);
    p.SoLuotKhongThich = if unhappy {
        p.SoLuotThich + rng.random_range(1..15)
    } else {
        rng.random_range(0..=p.SoLuotThich)
    };
    p.PhanAnhLai = u8::from(unhappy && rng.random_bool(0.3));
    let later = add_secs(published, rng.random_range(86_400..7 * 86_400));
    emit(&mut p, "DA_CONG_KHAI", later);
    out
}
