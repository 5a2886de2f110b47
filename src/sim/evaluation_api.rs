//! The portal's evaluation API as the simulator serves it (PORTAL_EVALUATION_API.md §2–§6):
//! `POST /api/v1/reporting/evaluation/{endpoint}` answers the figures of
//! [`super::evaluation`] for the unit asked for as root and its children, in the metric family
//! (`overview` + `evaluation[]` + `pagination`) or the tree family (`parent` + `children[]`),
//! with the real field names, numbers rounded to 2 decimals and the portal's nulls.
//!
//! **The tax tree's place on the portal is not known** (§9): the simulator assumes the tax units
//! form their own tree, rooted at the central unit, each unit with the `departmentId` the
//! registry carries ([`super::units::portal_department_id`]); `departmentType` is
//! `CENTRAL_AGENCY`, `PROVINCIAL_DEPARTMENT` or `LOCAL_DEPARTMENT` by level.
//!
//! **Divergences** (`portal_divergence` in the faults, `--portal-divergence R`): a seeded share
//! `R` of (unit, ended period) pairs differ from what the records say, the ways the real portal
//! does, each recorded with the difference chiso's reconciliation must report:
//! - `stale_national_report`: DOSSIER_SYNC's denominator from an older national report (counts
//!   differ);
//! - `dossier_in_another_month`: one dossier of another month counted in ON_TIME_HANDLING
//!   (counts differ);
//! - `missing_from_endpoint`: a base unit left out of one endpoint's list (only in chiso);
//! - `other_target`: DOSSIER_RECEIVING_SATISFACTION scored against 100 % rather than 90 % (same
//!   counts, different score), where that changes the score;
//! - `data_quality_flag`: DOSSIER_SYNC flagged `TEMP_NATIONAL_REPORT_DENOMINATOR` (flagged by
//!   the portal).
//!
//! **Revisions**: `POST /_sim/evaluation/revisions` changes a published figure of a unit and
//! period from then on, as the portal revises closed periods silently.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::evaluation::{rule_of, score, Evaluation, Figures, TreeUnit, RULES};
use super::units::portal_department_id;
use crate::time::Period;

/// One difference the simulator put into the portal's figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Divergence {
    pub unit: String,
    pub department_id: String,
    pub period: String,
    /// The indicator (or, for `missing_from_endpoint`, every indicator and group the endpoint
    /// shows for the unit: one row each).
    pub code: String,
    pub kind: String,
    /// The cause chiso's reconciliation must give.
    pub cause: String,
}

/// A figure the portal changed after publishing it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Revision {
    pub unit: String,
    pub period: String,
    pub code: String,
    pub numerator: f64,
    pub denominator: f64,
}

/// The groups, their maxima and the endpoint showing each.
pub const GROUPS: &[(&str, f64, &str)] = &[
    ("CKMB", 18.0, "transparency"),
    ("TDGQ", 20.0, "dvc-progress-tree"),
    ("CLGQ", 12.0, "provide-online-tree"),
    ("TTTT", 10.0, "formality-online-payment-tree"),
    ("MDSH", 22.0, "dossier-digitized"),
    ("MDHL", 18.0, "handling-satisfaction"),
];

/// Vietnamese labels of the metric codes, as the portal names them.
fn label(code: &str) -> &'static str {
    match code {
        "PUBLISH_ON_TIME" => "Tỷ lệ TTHC công bố đúng hạn",
        "PUBLIC_UPDATE_ON_TIME" => "Tỷ lệ TTHC cập nhật, công khai đúng hạn",
        "PUBLIC_CONTENT_FULL" => "Tỷ lệ TTHC công khai đầy đủ nội dung",
        "DOSSIER_SYNC" => "Tỷ lệ hồ sơ đồng bộ lên Cổng DVCQG",
        "PETITION_CLASSIFICATION_TTHC" => "Tỷ lệ PAKN về quy định, thủ tục hành chính",
        "DOSSIER_RECEIVING_SATISFACTION" => "Tỷ lệ hài lòng trong tiếp nhận, giải quyết TTHC",
        "PETITION_PROCESSING_ON_TIME" => "Tỷ lệ PAKN xử lý đúng hạn",
        "PETITION_HANDLING_SATISFACTION" => "Tỷ lệ hài lòng trong xử lý PAKN",
        "PETITION_CLASSIFICATION_STAFF" => "Tỷ lệ PAKN về hành vi cán bộ, công chức, viên chức",
        "ORIGINAL_RESULT_AVAILABLE" => {
            "Tỷ lệ hồ sơ thủ tục hành chính có cấp kết quả giải quyết thủ tục hành chính điện tử"
        }
        "SO_HOA_GIAY_TO_GIAI_QUYET" => "Tỷ lệ hồ sơ thủ tục hành chính thực hiện số hóa hồ sơ",
        "REUSED_DIGITIZED_DATA" => "Tỷ lệ hồ sơ khai thác, sử dụng lại thông tin, dữ liệu số hóa",
        "SYNCED_WITH_DVCQG_PERSONAL_STORAGE" => {
            "Tỷ lệ hồ sơ TTHC được số hóa có kết nối, chia sẻ dữ liệu phục vụ tái sử dụng"
        }
        "CITIZEN_DATA_CONNECTED_DOSSIER" => "Tỷ lệ hồ sơ TTHC có sử dụng thông tin, dữ liệu dân cư",
        "CITIZEN_DATA_CONNECTED_FORMALITY" => {
            "Tỷ lệ TTHC triển khai kết nối, chia sẻ dữ liệu dân cư phục vụ GQ TTHC"
        }
        "ELECTRONIC_CERTIFIED_COPY" => {
            "Tỷ lệ cung cấp dịch vụ chứng thực bản sao điện tử từ bản chính"
        }
        _ => "",
    }
}

/// The metric codes of each metric-family endpoint, in the portal's order.
fn metric_codes(endpoint: &str) -> &'static [&'static str] {
    match endpoint {
        "transparency" => &[
            "PUBLISH_ON_TIME",
            "PUBLIC_UPDATE_ON_TIME",
            "PUBLIC_CONTENT_FULL",
            "DOSSIER_SYNC",
        ],
        "handling-satisfaction" => &[
            "PETITION_CLASSIFICATION_TTHC",
            "DOSSIER_RECEIVING_SATISFACTION",
            "PETITION_PROCESSING_ON_TIME",
            "PETITION_HANDLING_SATISFACTION",
            "PETITION_CLASSIFICATION_STAFF",
        ],
        "dossier-digitized" => &[
            "ORIGINAL_RESULT_AVAILABLE",
            "SO_HOA_GIAY_TO_GIAI_QUYET",
            "REUSED_DIGITIZED_DATA",
            "SYNCED_WITH_DVCQG_PERSONAL_STORAGE",
            "CITIZEN_DATA_CONNECTED_DOSSIER",
            "CITIZEN_DATA_CONNECTED_FORMALITY",
            "ELECTRONIC_CERTIFIED_COPY",
        ],
        _ => &[],
    }
}

/// The indicator codes an endpoint shows at a unit (`as_child`: in a parent's list), or, where
/// it shows none, the group it totals: the finest figures a unit left out of it lacks on the
/// portal (the group and total rows follow from them).
pub fn shown_codes(endpoint: &str, as_child: bool) -> Vec<&'static str> {
    let mut codes: Vec<&'static str> = match endpoint {
        "dvc-progress-tree" => vec!["ON_TIME_HANDLING"],
        "provide-online-tree" if as_child => vec![],
        "provide-online-tree" => vec![
            "ONLINE_SERVICE_PROVIDED",
            "ONLINE_SERVICE_WITH_DOSSIER",
            "ONLINE_DOSSIER_SHARE",
        ],
        "formality-online-payment-tree" => vec![
            "ONLINE_PAYMENT_DOSSIER",
            "ONLINE_PAYMENT_FORMALITY",
            "FEE_FORMALITY_WITH_DOSSIER",
        ],
        e => metric_codes(e).to_vec(),
    };
    if codes.is_empty() {
        if let Some((g, _, _)) = GROUPS.iter().find(|(_, _, e)| *e == endpoint) {
            codes.push(g);
        }
    }
    codes
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn num(x: f64) -> Value {
    let r = round2(x);
    if r.fract() == 0.0 && r.abs() < 1e15 {
        json!(r as i64)
    } else {
        json!(r)
    }
}

fn opt(x: Option<f64>) -> Value {
    x.map_or(Value::Null, num)
}

/// What the portal shows, the divergences applied.
pub struct Portal<'a> {
    pub eval: &'a Evaluation,
    pub divergences: &'a BTreeMap<(String, String), Divergence>,
    pub revisions: &'a [Revision],
}

/// The divergences of a computation: each (unit, ended period) with probability `rate`,
/// seeded, one kind each; kinds that would not change anything there are not recorded.
pub fn divergences(
    eval: &Evaluation,
    seed: u64,
    rate: f64,
) -> BTreeMap<(String, String), Divergence> {
    use sha2::{Digest, Sha256};
    let mut out = BTreeMap::new();
    if rate <= 0.0 {
        return out;
    }
    for (p, ended) in &eval.periods {
        if !ended {
            continue;
        }
        let period = p.label();
        for u in eval.trees.get(&period).into_iter().flatten() {
            let h = Sha256::digest(format!("{seed}|{}|{period}|portal-divergence", u.id));
            let roll =
                u64::from_be_bytes(h[..8].try_into().expect("8 bytes")) as f64 / u64::MAX as f64;
            if roll >= rate {
                continue;
            }
            let pick = h[8] as usize;
            let f = &eval.figures[&(u.id.clone(), period.clone())];
            let endpoints = [
                "transparency",
                "handling-satisfaction",
                "dossier-digitized",
                "dvc-progress-tree",
                "provide-online-tree",
                "formality-online-payment-tree",
            ];
            let (kind, code, cause) = match pick % 5 {
                0 => (
                    "stale_national_report",
                    "DOSSIER_SYNC".to_string(),
                    "counts_differ",
                ),
                1 => (
                    "dossier_in_another_month",
                    "ON_TIME_HANDLING".to_string(),
                    "counts_differ",
                ),
                2 if u.level == 3 => (
                    "missing_from_endpoint",
                    endpoints[h[9] as usize % endpoints.len()].to_string(),
                    "only_in_chiso",
                ),
                3 if other_target_changes(f) => (
                    "other_target",
                    "DOSSIER_RECEIVING_SATISFACTION".to_string(),
                    "same_counts_different_score",
                ),
                _ => (
                    "data_quality_flag",
                    "DOSSIER_SYNC".to_string(),
                    "flagged_by_the_portal",
                ),
            };
            out.insert(
                (u.id.clone(), period.clone()),
                Divergence {
                    unit: u.id.clone(),
                    department_id: portal_department_id(&u.id),
                    period: period.clone(),
                    code,
                    kind: kind.into(),
                    cause: cause.into(),
                },
            );
        }
    }
    out
}

/// DOSSIER_RECEIVING_SATISFACTION against 100 % rather than 90 % changes its shown score.
fn other_target_changes(f: &Figures) -> bool {
    let (n, d) = f.get("DOSSIER_RECEIVING_SATISFACTION");
    // Well clear of the 0.015 the reconciliation allows for rounding.
    d > 0.0 && (6.0f64.min(6.0 * n / d / 0.9) - 6.0f64.min(6.0 * n / d)).abs() > 0.05
}

/// One indicator as the portal shows it at a unit.
struct Shown {
    n: Option<f64>,
    d: Option<f64>,
    ratio: Option<f64>,
    points: Option<f64>,
    max: f64,
    flag: Option<&'static str>,
}

impl Portal<'_> {
    fn figures(&self, unit: &str, period: &str) -> Figures {
        let mut f = self
            .eval
            .figures
            .get(&(unit.to_string(), period.to_string()))
            .cloned()
            .unwrap_or_default();
        for r in self
            .revisions
            .iter()
            .filter(|r| r.unit == unit && r.period == period)
        {
            if let Some(rule) = rule_of(&r.code) {
                f.counts.insert(rule.code, (r.numerator, r.denominator));
            }
        }
        if let Some(d) = self
            .divergences
            .get(&(unit.to_string(), period.to_string()))
        {
            match d.kind.as_str() {
                "stale_national_report" => {
                    let e = f.counts.entry("DOSSIER_SYNC").or_default();
                    e.1 += 3.0;
                }
                "dossier_in_another_month" => {
                    let e = f.counts.entry("ON_TIME_HANDLING").or_default();
                    e.0 += 1.0;
                    e.1 += 1.0;
                }
                _ => {}
            }
        }
        f
    }

    fn divergence(&self, unit: &str, period: &str) -> Option<&Divergence> {
        self.divergences
            .get(&(unit.to_string(), period.to_string()))
    }

    fn shown(&self, unit: &str, period: &str, f: &Figures, code: &str) -> Shown {
        let rule = rule_of(code).expect("a known code");
        let (n, d) = f.get(code);
        let (ratio, mut points) = score(rule, n, d, f.top);
        let div = self.divergence(unit, period);
        if code == "DOSSIER_RECEIVING_SATISFACTION"
            && div.is_some_and(|x| x.kind == "other_target")
            && d > 0.0
        {
            points = Some(6.0f64.min(6.0 * n / d));
        }
        let flag = (code == "DOSSIER_SYNC" && div.is_some_and(|x| x.kind == "data_quality_flag"))
            .then_some("TEMP_NATIONAL_REPORT_DENOMINATOR");
        Shown {
            n: Some(n),
            d: Some(d),
            ratio,
            points,
            max: rule.max,
            flag,
        }
    }

    fn group_points(&self, unit: &str, period: &str, f: &Figures, group: &str) -> f64 {
        RULES
            .iter()
            .filter(|r| r.group == group && r.scored)
            .filter_map(|r| self.shown(unit, period, f, r.code).points)
            .sum()
    }

    fn identity(u: &TreeUnit, root: bool) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("departmentId".into(), json!(portal_department_id(&u.id)));
        m.insert("departmentName".into(), json!(u.name));
        let _ = root;
        m
    }

    fn department_type(u: &TreeUnit) -> &'static str {
        match u.level {
            1 => "CENTRAL_AGENCY",
            2 => "PROVINCIAL_DEPARTMENT",
            _ => "LOCAL_DEPARTMENT",
        }
    }

    /// A metric-family row (overview or evaluation entry).
    fn metric_row(
        &self,
        endpoint: &str,
        u: &TreeUnit,
        period: &str,
        root: bool,
        stt: usize,
    ) -> Value {
        let f = self.figures(&u.id, period);
        let group = GROUPS
            .iter()
            .find(|(_, _, e)| *e == endpoint)
            .expect("a group");
        let mut m = serde_json::Map::new();
        m.insert("stt".into(), json!(stt));
        m.extend(Self::identity(u, root));
        if endpoint == "dossier-digitized" {
            m.insert("departmentCode".into(), json!(u.id));
        }
        m.insert("departmentType".into(), json!(Self::department_type(u)));
        m.insert(
            "departmentLevel".into(),
            json!(if u.level <= 2 { "PROVINCE" } else { "COMMUNE" }),
        );
        m.insert(
            "agencyLevel".into(),
            json!(if root { "level_1" } else { "level_2" }),
        );
        let total = self.group_points(&u.id, period, &f, group.0);
        m.insert("totalScore".into(), num(total));
        m.insert("totalMaxScore".into(), num(group.1));
        m.insert("ratio".into(), num(total / group.1 * 100.0));
        m.insert("scoreDelta".into(), Value::Null);
        let satisfaction = endpoint == "handling-satisfaction";
        let metrics: Vec<Value> = metric_codes(endpoint)
            .iter()
            .map(|code| {
                let s = self.shown(&u.id, period, &f, code);
                let mut x = serde_json::Map::new();
                x.insert("code".into(), json!(code));
                x.insert("name".into(), json!(label(code)));
                if *code == "ELECTRONIC_CERTIFIED_COPY" {
                    // Not applicable to tax units: full marks, no counts (§6).
                    x.insert("numerator".into(), Value::Null);
                    x.insert("denominator".into(), Value::Null);
                    x.insert("ratio".into(), json!(100));
                } else {
                    x.insert("numerator".into(), opt(s.n));
                    x.insert("denominator".into(), opt(s.d));
                    // Satisfaction shows 0 where the others show null (§6).
                    let ratio = match s.ratio {
                        Some(r) => num(r * 100.0),
                        None if satisfaction => json!(0),
                        None => Value::Null,
                    };
                    x.insert("ratio".into(), ratio);
                }
                x.insert("score".into(), opt(s.points));
                x.insert("maxScore".into(), num(s.max));
                if let Some(flag) = s.flag {
                    x.insert("dataQualityStatus".into(), json!(flag));
                    x.insert(
                        "dataQualityMessage".into(),
                        json!("Mẫu số BCQG/GRIS đang dùng số tạm, cần thay bằng dữ liệu crawl hệ thống cũ."),
                    );
                }
                Value::Object(x)
            })
            .collect();
        m.insert("metrics".into(), Value::Array(metrics));
        if satisfaction {
            let (_, petitions) = f.get("PETITION_PROCESSING_ON_TIME");
            m.insert("totalPetitions".into(), num(petitions));
            m.insert("classifiedPetitions".into(), num(petitions));
            m.insert(
                "totalDossiers".into(),
                num(f.get("DOSSIER_RECEIVING_SATISFACTION").1),
            );
            m.insert("averageScore".into(), Value::Null);
        }
        if endpoint == "transparency" && root {
            m.insert("averageScore".into(), Value::Null);
        }
        Value::Object(m)
    }

    /// A tree-family node (parent, or child when `!root`).
    fn tree_node(&self, endpoint: &str, u: &TreeUnit, period: &str, root: bool) -> Value {
        let f = self.figures(&u.id, period);
        let group = GROUPS
            .iter()
            .find(|(_, _, e)| *e == endpoint)
            .expect("a group");
        let total = self.group_points(&u.id, period, &f, group.0);
        let mut m = Self::identity(u, root);
        m.insert("departmentCode".into(), json!(u.id));
        if !root {
            m.insert(
                "level".into(),
                json!(if u.level <= 2 { "PROVINCE" } else { "COMMUNE" }),
            );
        }
        let ratio_of = |n: f64, d: f64| {
            if d > 0.0 {
                num(n / d * 100.0)
            } else {
                json!(0)
            }
        };
        match endpoint {
            "dvc-progress-tree" => {
                let (n, d) = f.get("ON_TIME_HANDLING");
                let (days, finished) = f.get("AVERAGE_HANDLING_DAYS");
                m.insert("totalReceived".into(), num(d));
                m.insert("totalOnTime".into(), num(n));
                if root {
                    m.insert("totalCompleted".into(), json!(f.completed));
                } else {
                    m.insert("totalOverdue".into(), num(d - n));
                }
                m.insert(
                    "avgProcessingDays".into(),
                    if finished > 0.0 {
                        num(days / finished)
                    } else {
                        json!(0)
                    },
                );
                m.insert("ratio".into(), ratio_of(n, d));
                let (s, mx) = if root {
                    ("totalScore", "totalMaxScore")
                } else {
                    ("score", "maxScore")
                };
                m.insert(s.into(), num(total));
                m.insert(mx.into(), num(group.1));
            }
            "provide-online-tree" => {
                m.insert("totalScore".into(), num(total));
                m.insert("totalMaxScore".into(), num(group.1));
                m.insert("ratio".into(), num(total / group.1 * 100.0));
                if root {
                    let (_, authority) = f.get("ONLINE_SERVICE_PROVIDED");
                    let (used, services) = f.get("ONLINE_SERVICE_WITH_DOSSIER");
                    let (online, received) = f.get("ONLINE_DOSSIER_SHARE");
                    m.insert("authorityCount".into(), num(authority));
                    m.insert("partialCount".into(), json!(f.partly_online));
                    m.insert("fullCount".into(), json!(f.full_online));
                    m.insert("onlineDossierCount".into(), num(used));
                    m.insert("onlineServiceTotal".into(), num(services));
                    m.insert("channelOnlineSum".into(), num(online));
                    m.insert(
                        "channelDirectSum".into(),
                        num(f.get("CHANNEL_SHARE_IN_PERSON").0),
                    );
                    m.insert(
                        "channelPostalSum".into(),
                        num(f.get("CHANNEL_SHARE_POSTAL").0),
                    );
                    m.insert("channelTotalSum".into(), num(received));
                }
            }
            _ => {
                let (paid, obligation) = f.get("ONLINE_PAYMENT_DOSSIER");
                let (formality_paid, fee) = f.get("ONLINE_PAYMENT_FORMALITY");
                let (with_list, _) = f.get("FEE_FORMALITY_WITH_DOSSIER");
                m.insert("totalMaxScore".into(), num(group.1));
                m.insert("totalScore".into(), num(total));
                m.insert("ratio".into(), num(total / group.1 * 100.0));
                m.insert("totalDossierOnlinePaymentSuccess".into(), num(paid));
                m.insert("totalDossierFinancialObligation".into(), num(obligation));
                m.insert(
                    "totalDossierOnlineFormalityPaymentSuccess".into(),
                    num(formality_paid),
                );
                m.insert("totalFeeDossierFormalityDistinct".into(), num(fee));
                m.insert("totalFeeDossierFormality".into(), num(with_list));
                m.insert("totalFeeFormality".into(), num(fee));
            }
        }
        if !root {
            m.insert("scoreDelta".into(), Value::Null);
        }
        Value::Object(m)
    }

    fn missing(&self, unit: &str, period: &str, endpoint: &str) -> bool {
        self.divergence(unit, period)
            .is_some_and(|d| d.kind == "missing_from_endpoint" && d.code == endpoint)
    }

    /// The `data` of an answer, or the message of an error envelope.
    pub fn answer(&self, endpoint: &str, body: &Value) -> Result<Value, String> {
        let root_id = body["rootDepartmentId"].as_str().unwrap_or("");
        let period = request_period(endpoint, body)?;
        let label = period.label();
        // A period the portal has not computed (the client's clock ahead of the simulator's,
        // or before its records): the units as of the newest month computed, nothing counted.
        let tree_label = if self.eval.trees.contains_key(&label) {
            label.clone()
        } else {
            self.eval
                .periods
                .iter()
                .filter(|(p, _)| matches!(p, Period::Month(..)))
                .map(|(p, _)| p.label())
                .max()
                .ok_or_else(|| "Không có dữ liệu".to_string())?
        };
        let tree = &self.eval.trees[&tree_label];
        let ids: HashMap<String, &TreeUnit> = tree
            .iter()
            .map(|u| (portal_department_id(&u.id), u))
            .collect();
        let Some(root) = ids.get(root_id) else {
            return Err(format!("Không tìm thấy đơn vị {root_id}"));
        };
        let children: Vec<&TreeUnit> = self
            .eval
            .children(&tree_label, &root.id)
            .into_iter()
            .filter(|c| !self.missing(&c.id, &label, endpoint))
            .collect();
        if endpoint == "service-results" {
            let row = |u: &TreeUnit| {
                let f = self.figures(&u.id, &label);
                let groups: serde_json::Map<String, Value> = GROUPS
                    .iter()
                    .map(|(g, _, _)| (g.to_string(), num(self.group_points(&u.id, &label, &f, g))))
                    .collect();
                let total: f64 = GROUPS
                    .iter()
                    .map(|(g, _, _)| self.group_points(&u.id, &label, &f, g))
                    .sum();
                let mut m = Self::identity(u, false);
                m.insert("departmentCode".into(), json!(u.id));
                m.insert(
                    "childGroup".into(),
                    if u.level == 1 {
                        Value::Null
                    } else {
                        json!("AGENCY")
                    },
                );
                m.insert("totalScore".into(), num(total));
                m.insert("ratio".into(), num(total));
                m.insert("scoreDelta".into(), Value::Null);
                m.insert("groupScores".into(), Value::Object(groups));
                Value::Object(m)
            };
            return Ok(
                json!({ "overview": row(root), "evaluation": children.iter().map(|c| row(c)).collect::<Vec<_>>() }),
            );
        }
        if metric_codes(endpoint).is_empty() {
            let parent = self.tree_node(endpoint, root, &label, true);
            let kids: Vec<Value> = children
                .iter()
                .map(|c| self.tree_node(endpoint, c, &label, false))
                .collect();
            let mut data = json!({ "parent": parent, "children": kids });
            if endpoint != "formality-online-payment-tree" {
                data["monthlyChart"] = json!([]);
            }
            return Ok(data);
        }
        let size = body["pageSize"].as_u64().unwrap_or(200).max(1) as usize;
        let page = body["currentPage"].as_u64().unwrap_or(1).max(1) as usize;
        let total = children.len();
        let rows: Vec<Value> = children
            .iter()
            .enumerate()
            .skip((page - 1) * size)
            .take(size)
            .map(|(i, c)| self.metric_row(endpoint, c, &label, false, i + 1))
            .collect();
        let mut data = json!({
            "overview": self.metric_row(endpoint, root, &label, true, 1),
            "evaluation": rows,
            "pagination": {
                "total": total,
                "currentPage": page,
                "pageSize": size,
                "totalPages": total.div_ceil(size).max(1),
            },
            "source": "simulated reporting_766 collections",
        });
        if endpoint == "transparency" {
            data["monthlyChart"] = json!([]);
        }
        Ok(data)
    }
}

/// The period a body asks for: `timeType`/`year`/`month`|`quarter`, or for satisfaction the
/// inclusive `fromDate`/`toDate` of a whole month, quarter or year.
fn request_period(endpoint: &str, body: &Value) -> Result<Period, String> {
    if endpoint == "handling-satisfaction" {
        let day = |k: &str| {
            body[k]
                .as_str()
                .and_then(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
                .ok_or_else(|| format!("{k} phải là ngày YYYY-MM-DD"))
        };
        let (from, to) = (day("fromDate")?, day("toDate")?);
        return ["month", "quarter", "year"]
            .into_iter()
            .filter_map(|k| Period::holding(k, from))
            .find(|p| p.first_day() == from && p.last_day() == to)
            .ok_or_else(|| "fromDate/toDate không phải một tháng, quý hoặc năm".to_string());
    }
    let year = body["year"].as_i64().ok_or("thiếu year")? as i32;
    match body["timeType"].as_str() {
        Some("month") => {
            let m = body["month"]
                .as_u64()
                .filter(|m| (1..=12).contains(m))
                .ok_or("month không hợp lệ")?;
            Ok(Period::Month(year, m as u32))
        }
        Some("quarter") => {
            let q = body["quarter"]
                .as_u64()
                .filter(|q| (1..=4).contains(q))
                .ok_or("quarter không hợp lệ")?;
            Ok(Period::Quarter(year, q as u32))
        }
        Some("year") => Ok(Period::Year(year)),
        _ => Err("timeType phải là month, quarter hoặc year".into()),
    }
}
