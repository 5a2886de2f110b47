//! Made-up Vietnamese personal names, ID numbers and phone numbers for the simulator's
//! applicants and officers. They look real so that tests can prove none of them is published.

use rand::Rng;

const HO: &[&str] = &[
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ",
    "Hồ", "Ngô", "Dương", "Lý", "Đinh", "Trịnh", "Mai", "Tạ",
];
const DEM: &[&str] = &[
    "Văn", "Thị", "Hữu", "Đức", "Minh", "Thu", "Ngọc", "Quang", "Thanh", "Xuân", "Hoài", "Gia",
];
const TEN: &[&str] = &[
    "An", "Bình", "Cường", "Dũng", "Giang", "Hà", "Hải", "Hạnh", "Hòa", "Hùng", "Hương", "Khoa",
    "Lan", "Linh", "Long", "Mai", "Nam", "Nga", "Phong", "Phúc", "Quân", "Sơn", "Tâm", "Thảo",
    "Trang", "Tuấn", "Vân", "Việt", "Yến", "Thắng",
];
const CONG_TY: &[&str] = &[
    "Công ty TNHH Thương mại",
    "Công ty Cổ phần Đầu tư",
    "Công ty TNHH Xây dựng",
    "Công ty Cổ phần Dịch vụ",
    "Hợp tác xã Nông nghiệp",
    "Công ty TNHH Sản xuất",
];
const THUONG_HIEU: &[&str] = &[
    "Hoàng Long",
    "Phú Thịnh",
    "Minh Anh",
    "Sao Việt",
    "Thành Đạt",
    "An Phát",
    "Hòa Bình",
    "Đại Dương",
    "Kim Ngân",
    "Bình Minh",
];

pub fn person<R: Rng>(rng: &mut R) -> String {
    format!(
        "{} {} {}",
        HO[rng.random_range(0..HO.len())],
        DEM[rng.random_range(0..DEM.len())],
        TEN[rng.random_range(0..TEN.len())]
    )
}

pub fn company<R: Rng>(rng: &mut R) -> String {
    format!(
        "{} {}",
        CONG_TY[rng.random_range(0..CONG_TY.len())],
        THUONG_HIEU[rng.random_range(0..THUONG_HIEU.len())]
    )
}

/// A 12-digit citizen ID (căn cước) number.
pub fn citizen_id<R: Rng>(rng: &mut R) -> String {
    format!(
        "0{:02}{}{:08}",
        rng.random_range(1..97),
        rng.random_range(0..4),
        rng.random_range(0..100_000_000u32)
    )
}

/// A 10-digit enterprise tax code.
pub fn tax_code<R: Rng>(rng: &mut R) -> String {
    format!("0{:09}", rng.random_range(100_000_000..999_999_999u32))
}
