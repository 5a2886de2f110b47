//! The simulator's procedure catalogue (CSDL quốc gia về TTHC): 100 tax procedures, 50 kinds at
//! two levels (provincial and base), with service level, fees, statutory time limits, the
//! announcement decision and its timing, and the completeness of the seven mandatory components.

use chrono::{Duration, NaiveDate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::calendar::Calendar;

/// (name, field code, statutory working days, financial obligation?, relative volume)
#[rustfmt::skip]
const KINDS: &[(&str, &str, u32, bool, f64)] = &[
    ("Đăng ký thuế lần đầu đối với tổ chức kinh tế", "DKT", 3, false, 1.0),
    ("Đăng ký thuế lần đầu đối với hộ kinh doanh, cá nhân kinh doanh", "DKT", 3, false, 2.0),
    ("Đăng ký thuế lần đầu đối với cá nhân không kinh doanh", "DKT", 3, false, 3.0),
    ("Thay đổi thông tin đăng ký thuế", "DKT", 3, false, 3.0),
    ("Chấm dứt hiệu lực mã số thuế", "DKT", 10, false, 0.6),
    ("Khôi phục mã số thuế", "DKT", 3, false, 0.3),
    ("Tạm ngừng hoạt động, kinh doanh", "DKT", 3, false, 0.6),
    ("Khai thuế giá trị gia tăng", "KKT", 3, true, 3.0),
    ("Khai thuế thu nhập doanh nghiệp", "KKT", 1, true, 1.5),
    ("Khai thuế thu nhập cá nhân đối với tổ chức trả thu nhập", "KKT", 1, true, 2.0),
    ("Khai quyết toán thuế thu nhập cá nhân đối với cá nhân trực tiếp quyết toán", "KKT", 5, false, 2.5),
    ("Khai thuế đối với hộ kinh doanh nộp thuế theo phương pháp khoán", "KKT", 5, true, 1.5),
    ("Khai lệ phí trước bạ nhà, đất", "TB", 5, true, 9.0),
    ("Khai lệ phí trước bạ phương tiện giao thông", "TB", 3, true, 6.0),
    ("Khai thuế sử dụng đất phi nông nghiệp", "DAT", 10, true, 2.0),
    ("Khai tiền sử dụng đất", "DAT", 10, true, 3.0),
    ("Khai tiền thuê đất, thuê mặt nước", "DAT", 10, true, 1.0),
    ("Khai thuế tài nguyên", "KKT", 1, true, 0.3),
    ("Khai phí bảo vệ môi trường đối với khai thác khoáng sản", "KKT", 1, true, 0.3),
    ("Khai thuế tiêu thụ đặc biệt", "KKT", 1, true, 0.3),
    ("Hoàn thuế giá trị gia tăng đối với dự án đầu tư", "HT", 40, false, 0.2),
    ("Hoàn thuế giá trị gia tăng đối với hàng hóa, dịch vụ xuất khẩu", "HT", 6, false, 0.4),
    ("Hoàn thuế thu nhập cá nhân", "HT", 6, false, 1.5),
    ("Hoàn thuế theo Điều ước quốc tế", "HT", 40, false, 0.05),
    ("Miễn thuế, giảm thuế theo quy định", "MG", 30, false, 0.5),
    ("Miễn, giảm tiền thuê đất, thuê mặt nước", "MG", 30, false, 0.3),
    ("Miễn, giảm tiền sử dụng đất", "MG", 30, false, 0.3),
    ("Gia hạn nộp thuế", "NT", 10, false, 0.4),
    ("Nộp dần tiền thuế nợ", "NT", 10, false, 0.2),
    ("Xóa nợ tiền thuế, tiền chậm nộp, tiền phạt", "NT", 30, false, 0.05),
    ("Không tính tiền chậm nộp", "NT", 10, false, 0.1),
    ("Xác nhận việc thực hiện nghĩa vụ thuế", "XN", 5, false, 1.0),
    ("Xác nhận số thuế đã nộp ngân sách nhà nước", "XN", 5, false, 0.6),
    ("Cấp giấy chứng nhận cư trú", "XN", 5, false, 0.1),
    ("Đăng ký sử dụng hóa đơn điện tử", "HD", 1, false, 1.5),
    ("Thay đổi thông tin sử dụng hóa đơn điện tử", "HD", 1, false, 0.8),
    ("Cấp hóa đơn điện tử có mã của cơ quan thuế theo từng lần phát sinh", "HD", 1, true, 0.8),
    ("Báo cáo tình hình sử dụng biên lai", "HD", 1, false, 0.3),
    ("Thông báo hóa đơn điện tử có sai sót", "HD", 1, false, 0.5),
    ("Đăng ký người phụ thuộc giảm trừ gia cảnh", "DKT", 3, false, 1.5),
    ("Đăng ký cấp mã số thuế cho người phụ thuộc", "DKT", 3, false, 1.0),
    ("Đề nghị xử lý số tiền thuế, tiền chậm nộp, tiền phạt nộp thừa", "NT", 5, false, 0.4),
    ("Bù trừ số tiền thuế nộp thừa", "NT", 5, false, 0.2),
    ("Điều chỉnh thông tin nộp ngân sách nhà nước", "NT", 5, false, 0.4),
    ("Khai bổ sung hồ sơ khai thuế", "KKT", 1, true, 1.0),
    ("Đăng ký giao dịch điện tử với cơ quan thuế", "DKT", 1, false, 0.8),
    ("Khai thuế đối với cá nhân cho thuê tài sản", "KKT", 3, true, 1.2),
    ("Khai thuế thu nhập cá nhân đối với chuyển nhượng bất động sản", "TB", 5, true, 4.0),
    ("Khai thuế đối với nhận thừa kế, quà tặng là bất động sản", "TB", 5, true, 1.5),
    ("Khai thuế đối với hoạt động kinh doanh thương mại điện tử", "KKT", 1, true, 0.8),
];

const FIELDS: &[(&str, &str)] = &[
    ("DKT", "Đăng ký thuế"),
    ("KKT", "Khai thuế"),
    ("TB", "Lệ phí trước bạ và thuế chuyển nhượng"),
    ("DAT", "Thuế, thu về đất"),
    ("HT", "Hoàn thuế"),
    ("MG", "Miễn, giảm thuế"),
    ("NT", "Nộp thuế, nợ thuế"),
    ("XN", "Xác nhận nghĩa vụ thuế"),
    ("HD", "Hóa đơn"),
];

pub fn field_name(code: &str) -> &'static str {
    FIELDS
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("Thuế", |(_, n)| n)
}

#[derive(Debug, Clone)]
pub struct Procedure {
    pub code: String,
    pub name: String,
    pub field: &'static str,
    /// `Cấp Tỉnh` (handled by provincial units) or `Cấp Cơ sở`.
    pub level: &'static str,
    /// TOAN_TRINH (full online), MOT_PHAN (partly online) or KHONG (not online).
    pub service_level: &'static str,
    pub eligible_full_online: bool,
    pub paper_result: bool,
    pub statutory_days: u32,
    /// Dossiers carry a financial obligation (fees, duties, tax due).
    pub obligation: bool,
    /// Fee per channel in the catalogue (in-person, online); empty for no fee.
    pub fees: Vec<(&'static str, i64)>,
    pub decision_no: String,
    pub announced: NaiveDate,
    pub legal_effective: NaiveDate,
    pub posted: NaiveDate,
    /// Of the seven mandatory components, how many are filled in.
    pub components_complete: u8,
    pub population_linked: bool,
    pub replaceable_components: bool,
    pub weight: f64,
}

pub fn build(seed: u64, cal: &Calendar) -> Vec<Procedure> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_0002);
    let mut out = Vec::new();
    let base = NaiveDate::from_ymd_opt(2025, 1, 6).expect("valid");
    for (lvl, level) in ["Cấp Tỉnh", "Cấp Cơ sở"].iter().enumerate() {
        for (k, (name, field, days, obligation, volume)) in KINDS.iter().enumerate() {
            let n = lvl * KINDS.len() + k;
            let service_level = match rng.random_range(0..100) {
                0..=69 => "TOAN_TRINH",
                70..=97 => "MOT_PHAN",
                _ => "KHONG",
            };
            // Announced somewhere in 2025–2026; most at least 20 working days before the legal
            // basis takes effect, some late; posted within 10 working days, some late.
            let announced = base + Duration::days(rng.random_range(0..640));
            let lead = if rng.random_bool(0.85) {
                rng.random_range(20..45)
            } else {
                rng.random_range(0..19)
            };
            let legal_effective = cal
                .add_working_days(announced.and_hms_opt(0, 0, 0).expect("valid"), lead)
                .date();
            let post_lag = if rng.random_bool(0.88) {
                rng.random_range(1..10)
            } else {
                rng.random_range(11..25)
            };
            let posted = cal
                .add_working_days(announced.and_hms_opt(0, 0, 0).expect("valid"), post_lag)
                .date();
            let fee = if *obligation && rng.random_bool(0.6) {
                let amount = [50_000i64, 100_000, 200_000, 500_000][rng.random_range(0..4)];
                vec![("1", amount), ("2", amount / 2)]
            } else {
                vec![]
            };
            out.push(Procedure {
                code: format!("{}.{:06}", 1 + lvl, 10_000 + n * 37),
                name: name.to_string(),
                field,
                level,
                service_level,
                eligible_full_online: service_level == "TOAN_TRINH" || rng.random_bool(0.3),
                paper_result: rng.random_bool(0.75),
                statutory_days: *days,
                obligation: *obligation,
                fees: fee,
                decision_no: format!("{}/QĐ-BTC", 100 + rng.random_range(0..3000)),
                announced,
                legal_effective,
                posted,
                components_complete: if rng.random_bool(0.97) {
                    7
                } else {
                    rng.random_range(4..7)
                },
                population_linked: rng.random_bool(0.47),
                replaceable_components: rng.random_bool(0.3),
                weight: *volume * if lvl == 0 { 0.25 } else { 1.0 },
            });
        }
    }
    out
}
