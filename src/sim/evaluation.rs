//! The simulated portal's own evaluation (Decision 766): what it computes from the records it
//! holds, by SPEC §4, independently of chiso's models (a second implementation: where the two
//! disagree with no divergence injected, one of them misreads the methodology).
//!
//! The portal computes at about 02:00 each day ([`as_of`]) from the records that had reached it
//! by then: dossier versions, processing steps, payments, ratings, petitions, the national
//! report, the catalogue and the registry as the simulator serves them. A period that has
//! ended is judged at its end; the month, quarter and year that run are judged as of the
//! computation (chiso judges those as of its data watermark, so only ended periods are
//! expected to agree).
//!
//! Units as chiso rolls them up (SPEC §2): a period's tree is the units valid on its last day;
//! the records of a unit no longer valid count under its single successor, or its parent (a
//! closure, a split); every unit sums the units below it. The catalogue counts are those of
//! the catalogue the portal holds when it computes (the methodology's "as of now").

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime};
use serde_json::Value;

use super::world::secs;
use super::{SimFeed, World};
use crate::time::Period;

/// The portal's sync window for DOSSIER_SYNC, in hours.
pub const SYNC_WINDOW_HOURS: f64 = 24.0;

/// One indicator of the portal's methodology: group, maximum, target, what a zero
/// denominator earns, to which units it applies, and whether it is scored.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub code: &'static str,
    pub group: &'static str,
    pub max: f64,
    pub target: f64,
    pub zero: Zero,
    pub applies: Applies,
    pub scored: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zero {
    NotScored,
    Nothing,
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    All,
    Top,
    Communes,
}

const fn rule(
    code: &'static str,
    group: &'static str,
    max: f64,
    target: f64,
    zero: Zero,
    applies: Applies,
    scored: bool,
) -> Rule {
    Rule {
        code,
        group,
        max,
        target,
        zero,
        applies,
        scored,
    }
}

/// The portal's methodology (SPEC §4).
pub const RULES: &[Rule] = &[
    rule(
        "PUBLISH_ON_TIME",
        "CKMB",
        6.0,
        1.0,
        Zero::NotScored,
        Applies::All,
        true,
    ),
    rule(
        "PUBLIC_UPDATE_ON_TIME",
        "CKMB",
        4.0,
        1.0,
        Zero::NotScored,
        Applies::All,
        true,
    ),
    rule(
        "PUBLIC_CONTENT_FULL",
        "CKMB",
        2.0,
        1.0,
        Zero::NotScored,
        Applies::All,
        true,
    ),
    rule(
        "DOSSIER_SYNC",
        "CKMB",
        6.0,
        1.0,
        Zero::NotScored,
        Applies::All,
        true,
    ),
    rule(
        "ON_TIME_HANDLING",
        "TDGQ",
        20.0,
        1.0,
        Zero::Nothing,
        Applies::All,
        true,
    ),
    rule(
        "ONLINE_SERVICE_PROVIDED",
        "CLGQ",
        2.0,
        0.8,
        Zero::Nothing,
        Applies::Top,
        true,
    ),
    rule(
        "ONLINE_SERVICE_WITH_DOSSIER",
        "CLGQ",
        4.0,
        1.0,
        Zero::Nothing,
        Applies::All,
        true,
    ),
    rule(
        "ONLINE_DOSSIER_SHARE",
        "CLGQ",
        6.0,
        0.5,
        Zero::Nothing,
        Applies::All,
        true,
    ),
    rule(
        "ONLINE_PAYMENT_DOSSIER",
        "TTTT",
        6.0,
        1.0,
        Zero::Nothing,
        Applies::All,
        true,
    ),
    rule(
        "ONLINE_PAYMENT_FORMALITY",
        "TTTT",
        2.0,
        0.8,
        Zero::Nothing,
        Applies::All,
        true,
    ),
    rule(
        "FEE_FORMALITY_WITH_DOSSIER",
        "TTTT",
        2.0,
        0.8,
        Zero::Nothing,
        Applies::All,
        true,
    ),
    rule(
        "ORIGINAL_RESULT_AVAILABLE",
        "MDSH",
        6.0,
        1.0,
        Zero::NotScored,
        Applies::All,
        true,
    ),
    rule(
        "SO_HOA_GIAY_TO_GIAI_QUYET",
        "MDSH",
        4.0,
        1.0,
        Zero::NotScored,
        Applies::All,
        true,
    ),
    rule(
        "ELECTRONIC_CERTIFIED_COPY",
        "MDSH",
        2.0,
        1.0,
        Zero::NotScored,
        Applies::Communes,
        true,
    ),
    rule(
        "REUSED_DIGITIZED_DATA",
        "MDSH",
        2.0,
        0.8,
        Zero::NotScored,
        Applies::All,
        true,
    ),
    rule(
        "SYNCED_WITH_DVCQG_PERSONAL_STORAGE",
        "MDSH",
        4.0,
        1.0,
        Zero::NotScored,
        Applies::All,
        true,
    ),
    rule(
        "CITIZEN_DATA_CONNECTED_DOSSIER",
        "MDSH",
        2.0,
        1.0,
        Zero::NotScored,
        Applies::All,
        true,
    ),
    rule(
        "CITIZEN_DATA_CONNECTED_FORMALITY",
        "MDSH",
        2.0,
        1.0,
        Zero::NotScored,
        Applies::All,
        true,
    ),
    rule(
        "PETITION_PROCESSING_ON_TIME",
        "MDHL",
        6.0,
        1.0,
        Zero::Full,
        Applies::All,
        true,
    ),
    rule(
        "PETITION_HANDLING_SATISFACTION",
        "MDHL",
        6.0,
        1.0,
        Zero::Full,
        Applies::All,
        true,
    ),
    rule(
        "DOSSIER_RECEIVING_SATISFACTION",
        "MDHL",
        6.0,
        0.9,
        Zero::Nothing,
        Applies::All,
        true,
    ),
    rule(
        "PETITION_CLASSIFICATION_TTHC",
        "MDHL",
        0.0,
        1.0,
        Zero::NotScored,
        Applies::All,
        false,
    ),
    rule(
        "PETITION_CLASSIFICATION_STAFF",
        "MDHL",
        0.0,
        1.0,
        Zero::NotScored,
        Applies::All,
        false,
    ),
    rule(
        "AVERAGE_HANDLING_DAYS",
        "TDGQ",
        0.0,
        1.0,
        Zero::NotScored,
        Applies::All,
        false,
    ),
];

pub fn rule_of(code: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.code == code)
}

/// An indicator's ratio and points for `n` of `d` at a unit (`top`: the top of the tree).
pub fn score(r: &Rule, n: f64, d: f64, top: bool) -> (Option<f64>, Option<f64>) {
    if r.applies == Applies::Communes {
        return (None, Some(r.max));
    }
    let ratio = (d > 0.0).then(|| n / d);
    if !r.scored {
        return (ratio, None);
    }
    let points = if r.applies == Applies::Top && !top {
        Some(0.0)
    } else if let Some(x) = ratio {
        Some(r.max.min(r.max * x / r.target))
    } else {
        match r.zero {
            Zero::NotScored => None,
            Zero::Nothing => Some(0.0),
            Zero::Full => Some(r.max),
        }
    };
    (ratio, points)
}

/// When the portal last computed: 02:00 of `now`'s day, or of the day before.
pub fn as_of(now: NaiveDateTime) -> NaiveDateTime {
    let two = NaiveTime::from_hms_opt(2, 0, 0).expect("valid");
    let day = if now.time() >= two {
        now.date()
    } else {
        now.date() - Duration::days(1)
    };
    day.and_time(two)
}

/// One unit and period as the portal computed it.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Indicator → (numerator, denominator).
    pub counts: BTreeMap<&'static str, (f64, f64)>,
    pub top: bool,
    /// Dossiers whose handling ended in the period (the progress tree's `totalCompleted`).
    pub completed: u64,
    /// Procedures of its level offered fully / partly online (`fullCount`, `partialCount`).
    pub full_online: u64,
    pub partly_online: u64,
}

impl Figures {
    pub fn get(&self, code: &str) -> (f64, f64) {
        self.counts.get(code).copied().unwrap_or((0.0, 0.0))
    }
}

/// A unit of a period's tree.
#[derive(Debug, Clone)]
pub struct TreeUnit {
    pub id: String,
    pub name: String,
    pub level: u8,
    pub parent: Option<String>,
}

/// Everything the portal computed at one time.
#[derive(Debug, Default)]
pub struct Evaluation {
    pub as_of: Option<NaiveDateTime>,
    /// (unit, period) → figures.
    pub figures: BTreeMap<(String, String), Figures>,
    /// period → its tree (units valid on its judging day).
    pub trees: BTreeMap<String, Vec<TreeUnit>>,
    /// Periods computed, with whether they had ended.
    pub periods: Vec<(Period, bool)>,
}

impl Evaluation {
    pub fn unit(&self, period: &str, id: &str) -> Option<&TreeUnit> {
        self.trees.get(period)?.iter().find(|u| u.id == id)
    }

    pub fn children(&self, period: &str, id: &str) -> Vec<&TreeUnit> {
        self.trees
            .get(period)
            .map(|t| {
                t.iter()
                    .filter(|u| u.parent.as_deref() == Some(id))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn parse_ts(v: &Value) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(v.as_str()?, "%Y%m%d%H%M%S").ok()
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(|x| x.as_str()).unwrap_or("")
}

/// Working-day numbers (dim_working_days): a day off carries the number of the working day
/// before it; `n` working days after a moment are the working day numbered its day's number
/// plus `n`, at the same time of day.
struct WorkingDays {
    first: NaiveDate,
    number: Vec<i64>,
    day_of: HashMap<i64, NaiveDate>,
}

impl WorkingDays {
    fn new(world: &World) -> WorkingDays {
        let first = NaiveDate::from_ymd_opt(2023, 1, 1).expect("valid");
        let last = NaiveDate::from_ymd_opt(2032, 12, 31).expect("valid");
        let mut number = Vec::new();
        let mut day_of = HashMap::new();
        let mut n = 0;
        let mut d = first;
        while d <= last {
            if world.setting.cal.is_working_day(d) {
                n += 1;
                day_of.insert(n, d);
            }
            number.push(n);
            d += Duration::days(1);
        }
        WorkingDays {
            first,
            number,
            day_of,
        }
    }

    fn number(&self, d: NaiveDate) -> i64 {
        let i = (d - self.first)
            .num_days()
            .clamp(0, self.number.len() as i64 - 1);
        self.number[i as usize]
    }

    fn add(&self, t: NaiveDateTime, n: i64) -> Option<NaiveDateTime> {
        Some(
            self.day_of
                .get(&(self.number(t.date()) + n))?
                .and_time(t.time()),
        )
    }
}

/// What the portal knows of one dossier.
#[derive(Debug, Default)]
struct Dossier {
    unit: String,
    procedure: String,
    channel: String,
    status: String,
    received: Option<NaiveDateTime>,
    finished: Option<NaiveDateTime>,
    late_since: Option<NaiveDateTime>,
    fee_total: i64,
    has_fee_list: bool,
    paid_online: bool,
    electronic_result: bool,
    digitised: bool,
    reused: bool,
    store: bool,
    population: bool,
    rated_unsatisfied: bool,
    /// Status changes (steps): (status, time).
    steps: Vec<(String, NaiveDateTime)>,
    /// Each version's (status, time it reached the portal).
    syncs: Vec<(String, NaiveDateTime)>,
}

impl Dossier {
    fn withdrawn(&self) -> bool {
        self.status == "7"
    }

    /// DOSSIER_SYNC's verdict for the receipt period of `kind`: the moment it fails (a change
    /// in the period that did not reach the portal within the window; the receipt when the
    /// period holds no change), or `None` when every change arrived in time.
    fn sync_fails_at(&self, kind: &str) -> Option<NaiveDateTime> {
        let received = self.received?;
        let same = |t: NaiveDateTime| match kind {
            "month" => t.year() == received.year() && t.month() == received.month(),
            "quarter" => {
                t.year() == received.year() && (t.month() - 1) / 3 == (received.month() - 1) / 3
            }
            _ => t.year() == received.year(),
        };
        let mut changes = 0;
        let mut failing: Option<NaiveDateTime> = None;
        for (status, at) in &self.steps {
            if !same(*at) {
                continue;
            }
            changes += 1;
            let arrived = self
                .syncs
                .iter()
                .filter(|(s, synced)| s == status && synced >= at)
                .map(|(_, synced)| *synced)
                .min();
            let in_time =
                arrived.is_some_and(|a| (secs(a) - secs(*at)) as f64 / 3600.0 <= SYNC_WINDOW_HOURS);
            if !in_time {
                failing = Some(failing.map_or(*at, |f| f.min(*at)));
            }
        }
        if changes == 0 {
            return Some(received);
        }
        failing.map(|f| f + Duration::seconds((SYNC_WINDOW_HOURS * 3600.0) as i64))
    }
}

/// What the portal knows of one petition.
#[derive(Debug)]
struct Petition {
    unit: String,
    category: String,
    received: NaiveDateTime,
    handled: Option<NaiveDateTime>,
    late_since: Option<NaiveDateTime>,
    disliked: bool,
    re_raised: bool,
}

/// The latest visible JSON of each key of `feed` by `pick` (the highest value wins).
fn latest<K: Ord + Clone>(
    world: &World,
    feed: SimFeed,
    at: NaiveDateTime,
    order: impl Fn(&super::world::Entry) -> K,
) -> BTreeMap<String, (K, Value)> {
    let mut out: BTreeMap<String, (K, Value)> = BTreeMap::new();
    for e in world.visible(feed, at) {
        let k = order(e);
        if out.get(&e.key).is_some_and(|(old, _)| *old >= k) {
            continue;
        }
        if let Ok(v) = serde_json::from_str::<Value>(&e.json) {
            out.insert(e.key.clone(), (k, v));
        }
    }
    out
}

fn dossiers(world: &World, at: NaiveDateTime) -> Vec<Dossier> {
    // The current version: the dossier's latest event (the simulator's truth of which is
    // current, whatever order the versions arrived in).
    let current = latest(world, SimFeed::Dossiers, at, |e| e.event);
    let mut syncs: HashMap<String, Vec<(String, NaiveDateTime)>> = HashMap::new();
    for e in world.visible(SimFeed::Dossiers, at) {
        if let Ok(v) = serde_json::from_str::<Value>(&e.json) {
            if let Some(t) = parse_ts(&v["ThoiDiemDongBo"]) {
                syncs
                    .entry(e.key.clone())
                    .or_default()
                    .push((str_of(&v, "TrangThaiHoSo").to_string(), t));
            }
        }
    }
    let mut steps: HashMap<String, Vec<(String, NaiveDateTime)>> = HashMap::new();
    for e in world.visible(SimFeed::DossierSteps, at) {
        if let Ok(v) = serde_json::from_str::<Value>(&e.json) {
            if let Some(t) = parse_ts(&v["ThoiDiemXuLy"]) {
                steps
                    .entry(str_of(&v, "MaHoSo").to_string())
                    .or_default()
                    .push((str_of(&v, "TrangThai").to_string(), t));
            }
        }
    }
    // Payments: paid when one of its payments is paid now (latest status per reference).
    let payments = latest(world, SimFeed::Payments, at, |e| e.version.clone());
    let mut paid: HashMap<String, bool> = HashMap::new();
    for (_, (_, v)) in payments {
        let e = paid.entry(str_of(&v, "MaHoSo").to_string()).or_default();
        *e |= str_of(&v, "TrangThaiThanhToan") == "2";
    }
    let ratings = latest(world, SimFeed::Ratings, at, |e| e.version.clone());
    let mut out = Vec::with_capacity(current.len());
    for (id, (_, v)) in current {
        let supplements = v["DanhSachHoSoBoSung"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let sup = |i: usize, k: &str| supplements.get(i).and_then(|s| parse_ts(&s[k]));
        let fees = v["DanhSachLePhi"].as_array().cloned().unwrap_or_default();
        let mut d = Dossier {
            unit: str_of(&v, "DonViXuLy").to_string(),
            procedure: str_of(&v, "MaTTHC").to_string(),
            channel: str_of(&v, "KenhThucHien").to_string(),
            status: str_of(&v, "TrangThaiHoSo").to_string(),
            received: parse_ts(&v["NgayTiepNhan"]),
            fee_total: fees.iter().map(|f| f["Gia"].as_i64().unwrap_or(0)).sum(),
            has_fee_list: !fees.is_empty(),
            paid_online: paid
                .get(&id)
                .copied()
                .unwrap_or(v["DuocThanhToanTrucTuyen"].as_i64() == Some(1)),
            electronic_result: v["DanhSachGiayToKetQua"].as_array().is_some_and(|r| {
                r.iter()
                    .any(|x| !str_of(x, "DuongDanTepTinKetQua").is_empty())
            }),
            digitised: v["HoSoCoThanhPhanSoHoa"].as_i64() == Some(1),
            reused: v["TaiLieuNop"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|x| matches!(x["DuocTaiSuDung"].as_i64(), Some(1) | Some(2)))
            }),
            store: v["TaiLieuNop"]
                .as_array()
                .is_some_and(|c| c.iter().any(|x| x["DuocLayTuKhoDMQG"].as_i64() == Some(1))),
            population: v["DSKetNoiCSDL"]
                .as_array()
                .is_some_and(|c| c.iter().any(|x| str_of(x, "MaCSDL") == "CSDLQGDC")),
            rated_unsatisfied: ratings.get(&id).is_some_and(|(_, r)| {
                str_of(r, "MucDoHaiLong") == "3" || r["CoKhieuNai"].as_i64() == Some(1)
            }),
            steps: steps.remove(&id).unwrap_or_default(),
            syncs: syncs.remove(&id).unwrap_or_default(),
            ..Default::default()
        };
        let stopped = d
            .steps
            .iter()
            .filter(|(s, _)| s == "8")
            .map(|(_, t)| *t)
            .min();
        d.finished = [
            parse_ts(&v["NgayKetThucXuLy"]),
            parse_ts(&v["NgayTra"]),
            stopped,
            parse_ts(&v["NgayTuChoi"]),
        ]
        .into_iter()
        .flatten()
        .min();
        // ON_TIME_HANDLING's verdict as a moment (SPEC §4): the deadline (stopped while the
        // first supplement is awaited, moved by its wait once it arrived), or the second
        // supplement request when earlier; none when handling ended by then or withdrawn.
        let due = parse_ts(&v["NgayHenTra"]);
        let due_before = sup(0, "NgayHenTraTruoc").or(due);
        let deadline = match (supplements.len(), sup(0, "NgayBoSung")) {
            (0, _) | (_, None) => due_before,
            (_, Some(asked)) if due_before.is_some_and(|b| asked >= b) => due_before,
            _ if sup(0, "NgayTiepNhanBoSung").is_none() => None,
            _ => sup(0, "NgayHenTraMoi").or(due),
        };
        let late_from = if supplements.len() > 1 {
            let second = sup(1, "NgayBoSung").or(sup(0, "NgayBoSung")).or(d.received);
            match (deadline, second) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        } else {
            deadline
        };
        d.late_since = if d.withdrawn() {
            None
        } else {
            match (d.finished, late_from) {
                (Some(f), Some(l)) if f <= l => None,
                (Some(_), None) => None,
                (_, l) => l,
            }
        };
        out.push(d);
    }
    out
}

fn petitions(world: &World, at: NaiveDateTime, wd: &WorkingDays) -> Vec<Petition> {
    let current = latest(world, SimFeed::Petitions, at, |e| e.version.clone());
    let mut out = Vec::new();
    for (_, (_, v)) in current {
        let Some(received) = parse_ts(&v["NgayTiepNhan"]) else {
            continue;
        };
        let history = v["LichSuXuLy"].as_array().cloned().unwrap_or_default();
        let first = |code: &str| {
            history
                .iter()
                .filter(|h| str_of(h, "TrangThai") == code)
                .filter_map(|h| parse_ts(&h["ThoiDiem"]))
                .min()
        };
        let refused = first("TU_CHOI");
        let info = first("YEU_CAU_BO_SUNG");
        let resolved = first("DA_GIAI_QUYET");
        let published = first("DA_CONG_KHAI");
        let refuse_due = wd.add(received, 2);
        let info_due = wd.add(received, 5);
        let resolve_due = wd.add(received, 15);
        let publish_due = resolved.and_then(|r| wd.add(r, 2));
        let min_opt = |xs: [Option<NaiveDateTime>; 3]| xs.into_iter().flatten().min();
        let late_since = if let Some(r) = refused {
            if refuse_due.is_some_and(|d| r > d) {
                Some(resolve_due.map_or(r, |d| r.min(d)))
            } else {
                None
            }
        } else if let Some(r) = resolved {
            min_opt([
                resolve_due.filter(|d| r > *d),
                info.filter(|i| info_due.is_some_and(|d| *i > d)).map(|_| r),
                match published {
                    Some(p) if publish_due.is_some_and(|d| p <= d) => None,
                    _ => publish_due,
                },
            ])
        } else {
            resolve_due
        };
        let likes = v["SoLuotThich"].as_i64().unwrap_or(0);
        let dislikes = v["SoLuotKhongThich"].as_i64().unwrap_or(0);
        out.push(Petition {
            unit: str_of(&v, "MaDonVi").to_string(),
            category: str_of(&v, "PhanLoai").to_string(),
            received,
            handled: refused.or(resolved),
            late_since,
            disliked: dislikes > likes,
            re_raised: v["PhanAnhLai"].as_i64() == Some(1),
        });
    }
    out
}

/// A period's judging day and moment: its last day and its end, or the computation's day and
/// moment while it runs.
fn judging(p: &Period, at: NaiveDateTime) -> (NaiveDate, NaiveDateTime, bool) {
    let end = (p.last_day() + Duration::days(1))
        .and_hms_opt(0, 0, 0)
        .expect("valid");
    if end <= at {
        (p.last_day(), end, true)
    } else {
        (at.date(), at, false)
    }
}

/// The periods from the world's first month to the one `at` is in.
fn periods(world: &World, at: NaiveDateTime) -> Vec<Period> {
    let mut out = Vec::new();
    // From the January of the year before the first day of history: the portal answers for
    // any recent period (with nothing counted before the records begin).
    let first = NaiveDate::from_ymd_opt(world.config.from.year() - 1, 1, 1).expect("valid");
    let mut m = Period::holding("month", first).expect("month");
    let last = Period::holding("month", at.date()).expect("month");
    loop {
        out.push(m);
        if let Period::Month(_, mm) = m {
            if mm % 3 == 0 || m == last {
                let q = Period::holding("quarter", m.first_day()).expect("quarter");
                if !out.contains(&q) {
                    out.push(q);
                }
            }
            if mm == 12 || m == last {
                out.push(Period::Year(m.first_day().year()));
            }
        }
        if m == last {
            break;
        }
        m = Period::holding("month", m.last_day() + Duration::days(1)).expect("month");
    }
    out
}

/// The tree of a period and where each unit's records count: unit → the units its records
/// count for (its carrier, then the carrier's ancestors).
struct Tree {
    units: Vec<TreeUnit>,
    rollup: HashMap<String, Vec<String>>,
}

fn tree(world: &World, day: NaiveDate) -> Tree {
    // The version of each unit in force on `day` (those not yet created are absent).
    let mut existed: BTreeMap<&str, &super::units::Unit> = BTreeMap::new();
    for u in &world.setting.registry.units {
        if u.valid_from <= day
            && existed
                .get(u.id.as_str())
                .is_none_or(|o| o.valid_from < u.valid_from)
        {
            existed.insert(&u.id, u);
        }
    }
    let valid = |id: &str| {
        existed
            .get(id)
            .is_some_and(|u| u.valid_to.is_none_or(|t| t >= day))
    };
    let carrier = |id: &str| -> Option<String> {
        let mut at = id.to_string();
        let mut seen = BTreeSet::new();
        loop {
            if valid(&at) {
                return Some(at);
            }
            if !seen.insert(at.clone()) {
                return None;
            }
            let u = existed.get(at.as_str())?;
            at = if u.successors.len() == 1 && existed.contains_key(u.successors[0].as_str()) {
                u.successors[0].clone()
            } else {
                u.parent.clone()?
            };
        }
    };
    let mut rollup = HashMap::new();
    for id in existed.keys() {
        let Some(c) = carrier(id) else { continue };
        let mut chain = vec![c.clone()];
        let mut at = c;
        while let Some(parent) = existed.get(at.as_str()).and_then(|u| u.parent.clone()) {
            let Some(pc) = carrier(&parent) else { break };
            if chain.contains(&pc) {
                break;
            }
            chain.push(pc.clone());
            at = pc;
        }
        rollup.insert(id.to_string(), chain);
    }
    let units = existed
        .values()
        .filter(|u| valid(&u.id))
        .map(|u| TreeUnit {
            id: u.id.clone(),
            name: if u.id == super::units::RENAMED_UNIT && day >= super::units::rename_2026() {
                super::units::RENAMED_TO.to_string()
            } else {
                u.name.clone()
            },
            level: u.level,
            parent: u.parent.clone(),
        })
        .collect();
    Tree { units, rollup }
}

/// What one unit's own records add to a period.
#[derive(Debug, Default, Clone)]
struct Own {
    c: BTreeMap<&'static str, (f64, f64)>,
    completed: u64,
}

impl Own {
    fn add(&mut self, code: &'static str, n: f64, d: f64) {
        let e = self.c.entry(code).or_default();
        e.0 += n;
        e.1 += d;
    }
}

/// Computes the portal's evaluation as of `at` (see [`as_of`]).
pub fn compute(world: &World, at: NaiveDateTime) -> Evaluation {
    let wd = WorkingDays::new(world);
    let dossiers = dossiers(world, at);
    let petitions = petitions(world, at, &wd);
    let procs: BTreeMap<&str, &super::catalogue::Procedure> = world
        .setting
        .procedures
        .iter()
        .filter(|p| p.announced <= at.date())
        .map(|p| (p.code.as_str(), p))
        .collect();
    // Dossiers received per (unit, month) by the portal's records and by the national report.
    let mut portal_month: HashMap<(String, String), f64> = HashMap::new();
    for d in &dossiers {
        if let Some(r) = d.received {
            *portal_month
                .entry((
                    d.unit.clone(),
                    Period::holding("month", r.date()).expect("m").label(),
                ))
                .or_default() += 1.0;
        }
    }
    let mut national_month: HashMap<(String, String), f64> = HashMap::new();
    let t = secs(at);
    for n in world.national.iter().filter(|n| n.visible_at <= t) {
        *national_month
            .entry((n.unit.clone(), n.period.clone()))
            .or_default() += n.received as f64;
    }
    let mut eval = Evaluation {
        as_of: Some(at),
        ..Default::default()
    };
    for p in periods(world, at) {
        let (day, judge, ended) = judging(&p, at);
        let (start, end) = (
            p.first_day().and_hms_opt(0, 0, 0).expect("valid"),
            (p.last_day() + Duration::days(1))
                .and_hms_opt(0, 0, 0)
                .expect("valid"),
        );
        let inside = |t: Option<NaiveDateTime>| t.is_some_and(|t| t >= start && t < end);
        let tree = tree(world, day);
        let label = p.label();
        let mut own: HashMap<String, Own> = HashMap::new();
        // Procedures each carrier's own dossiers used: (carrier, code) → (online, paid, all
        // with a fee list).
        let mut used: HashMap<(String, String), (bool, bool, bool)> = HashMap::new();
        for d in &dossiers {
            let received_in = inside(d.received);
            let finished_in = inside(d.finished);
            if !received_in && !finished_in {
                continue;
            }
            let Some(chain) = tree.rollup.get(&d.unit) else {
                continue;
            };
            let o = own.entry(d.unit.clone()).or_default();
            let late = d.late_since.is_some_and(|l| l < judge);
            if received_in {
                let proc_ = procs.get(d.procedure.as_str());
                let paper = proc_.is_some_and(|p| p.paper_result);
                let replaceable = proc_.is_some_and(|p| p.replaceable_components);
                let with_result = d.finished.is_some() && matches!(d.status.as_str(), "9" | "10");
                let online = d.channel == "2";
                let obligation = d.fee_total > 0;
                let b = |x: bool| f64::from(u8::from(x));
                o.add("ONLINE_DOSSIER_SHARE", b(online), 1.0);
                o.add("CHANNEL_SHARE_IN_PERSON", b(d.channel == "1"), 1.0);
                o.add("CHANNEL_SHARE_POSTAL", b(d.channel == "3"), 1.0);
                o.add(
                    "ONLINE_PAYMENT_DOSSIER",
                    b(obligation && d.paid_online),
                    b(obligation),
                );
                o.add(
                    "ORIGINAL_RESULT_AVAILABLE",
                    b(with_result && paper && d.electronic_result),
                    b(with_result && paper),
                );
                o.add("SO_HOA_GIAY_TO_GIAI_QUYET", b(d.digitised), 1.0);
                o.add(
                    "REUSED_DIGITIZED_DATA",
                    b(replaceable && d.reused),
                    b(replaceable),
                );
                o.add(
                    "SYNCED_WITH_DVCQG_PERSONAL_STORAGE",
                    b(online && (d.store || d.electronic_result)),
                    b(online),
                );
                o.add("CITIZEN_DATA_CONNECTED_DOSSIER", b(d.population), 1.0);
                let synced = match d.sync_fails_at(p.kind()) {
                    None => true,
                    Some(f) => !ended && f >= judge,
                };
                o.add("DOSSIER_SYNC", b(synced), 0.0);
                let satisfied = !d.rated_unsatisfied && (!late || d.withdrawn());
                o.add("DOSSIER_RECEIVING_SATISFACTION", b(satisfied), 1.0);
                let u = used
                    .entry((chain[0].clone(), d.procedure.clone()))
                    .or_insert((false, false, true));
                u.0 |= online;
                u.1 |= d.paid_online;
                u.2 &= d.has_fee_list;
            }
            if let (false, Some(received)) = (d.withdrawn(), d.received) {
                o.add("ON_TIME_HANDLING", b_(!late), 1.0);
                if let (true, Some(finished)) = (finished_in, d.finished) {
                    let days = wd.number(finished.date()) - wd.number(received.date());
                    o.add("AVERAGE_HANDLING_DAYS", days as f64, 1.0);
                    o.completed += 1;
                }
            }
        }
        for x in &petitions {
            if !(x.received >= start && x.received < end) {
                continue;
            }
            let o = own.entry(x.unit.clone()).or_default();
            let late = x.late_since.is_some_and(|l| l < judge);
            let handled = x.handled.is_some_and(|h| h < judge);
            o.add("PETITION_PROCESSING_ON_TIME", b_(!late), 1.0);
            o.add(
                "PETITION_HANDLING_SATISFACTION",
                b_(handled && !(x.disliked || x.re_raised || late)),
                b_(handled),
            );
            o.add("PETITION_CLASSIFICATION_TTHC", b_(x.category == "1"), 1.0);
            o.add("PETITION_CLASSIFICATION_STAFF", b_(x.category == "2"), 1.0);
        }
        // DOSSIER_SYNC's denominator: per unit and month the larger of the two counts.
        let mut m = Period::holding("month", p.first_day()).expect("month");
        loop {
            let ml = m.label();
            let units: BTreeSet<&String> = portal_month
                .keys()
                .chain(national_month.keys())
                .filter(|(_, mo)| *mo == ml)
                .map(|(u, _)| u)
                .collect();
            for u in units {
                let k = (u.clone(), ml.clone());
                let den = portal_month
                    .get(&k)
                    .copied()
                    .unwrap_or(0.0)
                    .max(national_month.get(&k).copied().unwrap_or(0.0));
                own.entry(u.clone())
                    .or_default()
                    .add("DOSSIER_SYNC", 0.0, den);
            }
            if m.last_day() >= p.last_day() {
                break;
            }
            m = Period::holding("month", m.last_day() + Duration::days(1)).expect("month");
        }
        // Roll each unit's own counts up its chain.
        let mut rolled: HashMap<String, Own> = HashMap::new();
        for (unit, o) in &own {
            let Some(chain) = tree.rollup.get(unit) else {
                continue;
            };
            for c in chain {
                let r = rolled.entry(c.clone()).or_default();
                for (code, (n, d)) in &o.c {
                    r.add(code, *n, *d);
                }
                r.completed += o.completed;
            }
        }
        // Procedures of each level in the catalogue, counted per valid unit of that level and
        // summed up the tree, with the procedures each unit's own dossiers used.
        let level_of = |p: &super::catalogue::Procedure| match p.level {
            "Cấp Tỉnh" => Some(2u8),
            "Cấp Cơ sở" => Some(3u8),
            _ => None,
        };
        for owner in &tree.units {
            if owner.level != 2 && owner.level != 3 {
                continue;
            }
            let mut o = Own::default();
            let (mut full, mut partly) = (0u64, 0u64);
            for pr in procs
                .values()
                .filter(|pr| level_of(pr) == Some(owner.level))
            {
                let b = |x: bool| f64::from(u8::from(x));
                let online = matches!(pr.service_level, "TOAN_TRINH" | "MOT_PHAN");
                full += u64::from(pr.service_level == "TOAN_TRINH");
                partly += u64::from(pr.service_level == "MOT_PHAN");
                let fee = !pr.fees.is_empty();
                let announced = pr.announced >= p.first_day() && pr.announced <= p.last_day();
                let on_time = wd.number(pr.announced) + 20 <= wd.number(pr.legal_effective);
                let posted =
                    pr.posted <= at.date() && wd.number(pr.posted) <= wd.number(pr.announced) + 10;
                let (u_online, u_paid, u_list) = used
                    .get(&(owner.id.clone(), pr.code.clone()))
                    .copied()
                    .map_or((false, false, false), |x| x);
                o.add("PUBLISH_ON_TIME", b(announced && on_time), b(announced));
                o.add(
                    "PUBLIC_UPDATE_ON_TIME",
                    b(announced && posted),
                    b(announced),
                );
                o.add("PUBLIC_CONTENT_FULL", b(pr.components_complete == 7), 1.0);
                o.add("ONLINE_SERVICE_PROVIDED", b(online), 1.0);
                o.add(
                    "ONLINE_SERVICE_WITH_DOSSIER",
                    b(online && u_online),
                    b(online),
                );
                o.add("ONLINE_PAYMENT_FORMALITY", b(fee && u_paid), b(fee));
                o.add("FEE_FORMALITY_WITH_DOSSIER", b(fee && u_list), b(fee));
                o.add(
                    "CITIZEN_DATA_CONNECTED_FORMALITY",
                    b(pr.population_linked),
                    1.0,
                );
            }
            // Counted for the owner and every unit above it; so are fullCount and partialCount.
            for c in tree.rollup.get(&owner.id).into_iter().flatten() {
                let r = rolled.entry(c.clone()).or_default();
                for (code, (n, d)) in &o.c {
                    r.add(code, *n, *d);
                }
                let f = eval.figures.entry((c.clone(), label.clone())).or_default();
                f.full_online += full;
                f.partly_online += partly;
            }
        }
        for u in &tree.units {
            let r = rolled.remove(&u.id).unwrap_or_default();
            let f = eval
                .figures
                .entry((u.id.clone(), label.clone()))
                .or_default();
            f.top = u.parent.is_none();
            f.completed = r.completed;
            for rule in RULES {
                let (n, d) = r.c.get(rule.code).copied().unwrap_or((0.0, 0.0));
                f.counts.insert(rule.code, (n, d));
            }
            for code in ["CHANNEL_SHARE_IN_PERSON", "CHANNEL_SHARE_POSTAL"] {
                f.counts
                    .insert(code, r.c.get(code).copied().unwrap_or((0.0, 0.0)));
            }
        }
        eval.trees.insert(label, tree.units);
        eval.periods.push((p, ended));
    }
    eval
}

fn b_(x: bool) -> f64 {
    f64::from(u8::from(x))
}
