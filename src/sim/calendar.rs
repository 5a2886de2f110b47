//! The simulator's Vietnamese working calendar: weekends, public holidays (Tết Dương lịch, Tết
//! Nguyên đán, Giỗ Tổ Hùng Vương, 30/4–1/5, Quốc khánh) and compensatory working Saturdays, for
//! 2024–2027 as announced (later years repeat the fixed-date holidays only). Used to set due
//! dates and is served as the calendar feed.

use std::collections::BTreeMap;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Weekday};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayKind {
    /// A public holiday (or a day off given in exchange).
    Holiday,
    /// A Saturday or Sunday worked in exchange for a day off.
    CompensatoryWorkday,
}

impl DayKind {
    pub fn code(self) -> &'static str {
        match self {
            DayKind::Holiday => "NGAY_NGHI",
            DayKind::CompensatoryWorkday => "NGAY_LAM_BU",
        }
    }
}

pub struct Calendar {
    days: BTreeMap<NaiveDate, (DayKind, &'static str)>,
}

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).expect("valid calendar date")
}

impl Calendar {
    pub fn vietnam() -> Calendar {
        use DayKind::*;
        let mut days = BTreeMap::new();
        let mut range = |from: NaiveDate, to: NaiveDate, name: &'static str| {
            let mut x = from;
            while x <= to {
                days.insert(x, (Holiday, name));
                x += Duration::days(1);
            }
        };
        const TET_DL: &str = "Tết Dương lịch";
        const TET: &str = "Tết Nguyên đán";
        const GIO_TO: &str = "Giỗ Tổ Hùng Vương";
        const GP: &str = "Ngày Giải phóng miền Nam, Quốc tế Lao động";
        const QK: &str = "Quốc khánh";
        // 2024
        range(d(2024, 1, 1), d(2024, 1, 1), TET_DL);
        range(d(2024, 2, 8), d(2024, 2, 14), TET);
        range(d(2024, 4, 18), d(2024, 4, 18), GIO_TO);
        range(d(2024, 4, 29), d(2024, 5, 1), GP);
        range(d(2024, 8, 31), d(2024, 9, 3), QK);
        // 2025
        range(d(2025, 1, 1), d(2025, 1, 1), TET_DL);
        range(d(2025, 1, 25), d(2025, 2, 2), TET);
        range(d(2025, 4, 7), d(2025, 4, 7), GIO_TO);
        range(d(2025, 4, 30), d(2025, 5, 4), GP);
        range(d(2025, 8, 30), d(2025, 9, 2), QK);
        // 2026
        range(d(2026, 1, 1), d(2026, 1, 1), TET_DL);
        range(d(2026, 2, 14), d(2026, 2, 22), TET);
        range(d(2026, 4, 27), d(2026, 4, 27), GIO_TO);
        range(d(2026, 4, 30), d(2026, 5, 1), GP);
        range(d(2026, 9, 1), d(2026, 9, 2), QK);
        // 2027
        range(d(2027, 1, 1), d(2027, 1, 1), TET_DL);
        range(d(2027, 2, 4), d(2027, 2, 10), TET);
        range(d(2027, 4, 16), d(2027, 4, 16), GIO_TO);
        range(d(2027, 4, 30), d(2027, 5, 3), GP);
        range(d(2027, 9, 2), d(2027, 9, 3), QK);
        for y in 2028..=2030 {
            range(d(y, 1, 1), d(y, 1, 1), TET_DL);
            range(d(y, 4, 30), d(y, 5, 1), GP);
            range(d(y, 9, 1), d(y, 9, 2), QK);
        }
        for (date, name) in [
            (d(2024, 5, 4), "Làm bù cho ngày 29/4/2024"),
            (d(2025, 4, 26), "Làm bù cho ngày 2/5/2025"),
            (d(2026, 1, 10), "Làm bù cho ngày nghỉ Tết Nguyên đán 2026"),
        ] {
            days.insert(date, (CompensatoryWorkday, name));
        }
        Calendar { days }
    }

    pub fn is_working_day(&self, date: NaiveDate) -> bool {
        match self.days.get(&date) {
            Some((DayKind::Holiday, _)) => false,
            Some((DayKind::CompensatoryWorkday, _)) => true,
            None => !matches!(date.weekday(), Weekday::Sat | Weekday::Sun),
        }
    }

    /// The time `n` working days after `t` (same time of day; a start on a day off counts from
    /// the next working day).
    pub fn add_working_days(&self, t: NaiveDateTime, n: u32) -> NaiveDateTime {
        let mut date = t.date();
        let mut left = n;
        while left > 0 {
            date += Duration::days(1);
            if self.is_working_day(date) {
                left -= 1;
            }
        }
        date.and_time(t.time())
    }

    /// The next working-hours moment at or after `t` (07:30–17:00 on a working day).
    pub fn next_office_time(&self, t: NaiveDateTime) -> NaiveDateTime {
        let open = chrono::NaiveTime::from_hms_opt(7, 30, 0).expect("valid");
        let close = chrono::NaiveTime::from_hms_opt(17, 0, 0).expect("valid");
        let mut date = t.date();
        let mut time = t.time();
        loop {
            if self.is_working_day(date) && time < close {
                return date.and_time(time.max(open));
            }
            date += Duration::days(1);
            time = open;
        }
    }

    /// Working days from `a` to `b` (0 when `b` is not after `a`).
    pub fn working_days_between(&self, a: NaiveDate, b: NaiveDate) -> i64 {
        let mut n = 0;
        let mut x = a;
        while x < b {
            x += Duration::days(1);
            if self.is_working_day(x) {
                n += 1;
            }
        }
        n
    }

    /// The special days, for the calendar feed.
    pub fn special_days(&self) -> impl Iterator<Item = (NaiveDate, DayKind, &'static str)> + '_ {
        self.days.iter().map(|(d, (k, n))| (*d, *k, *n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_days_skip_weekends_and_tet() {
        let c = Calendar::vietnam();
        // Friday 2026-02-13 + 1 working day: Tết runs 14–22 Feb, so Monday 23 Feb.
        let t = d(2026, 2, 13).and_hms_opt(9, 0, 0).unwrap();
        assert_eq!(c.add_working_days(t, 1).date(), d(2026, 2, 23));
        // A compensatory Saturday is a working day.
        assert!(c.is_working_day(d(2025, 4, 26)));
        assert!(!c.is_working_day(d(2025, 9, 1)));
        assert_eq!(c.working_days_between(d(2026, 8, 3), d(2026, 8, 10)), 5);
    }
}
