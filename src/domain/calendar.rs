//! The working calendar: office hours, working days, public holidays and make-up working
//! days. Staff must receive an online dossier within 8 working hours of its submission, and
//! a procedure's duration in working days skips weekends and holidays: both are counted here.
//!
//! The shipped holidays (`[calendar]` in config/default.toml) follow the Labour Code 2019:
//! Art. 112(1) gives 1/1, Tết (5 days), Hùng Kings' day (10/3 lunar), 30/4, 1/5, and 2/9 with
//! the day before or after it; Art. 112(3) lets the Prime Minister fix each year's Tết days and
//! 2/9's companion; Art. 111(3) moves a holiday that falls on a weekly rest day to the next
//! working day. The civil service's swaps (a weekday off, made up on a Saturday) come from the
//! Prime Minister's notice for the year.

use std::collections::BTreeSet;

use jiff::civil::{Date, DateTime, Time, Weekday};

/// Office hours, the working days of the week, holidays and make-up working days.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    /// The working periods of a working day, in order, not overlapping.
    pub periods: Vec<(Time, Time)>,
    /// Monday = 0 .. Sunday = 6.
    pub weekdays: [bool; 7],
    pub holidays: BTreeSet<Date>,
    /// Days worked although the weekday is not (a swapped Saturday).
    pub make_up_days: BTreeSet<Date>,
}

/// 2026, as the Prime Minister approved it (Tết 16–20/2, the 9-day break 14–22/2; 2/1 and 31/8
/// swapped to Saturdays 10/1 and 22/8; Hùng Kings' day on Sunday 26/4 moved to Monday 27/4).
/// 2027 as the rule gives it, until the notice for 2027 is out: Tết 5/2 and 8–11/2 (the new
/// year on Saturday 6/2), Hùng Kings' day Friday 16/4, 1/5 on Saturday moved to Monday 3/5,
/// 2/9 with Friday 3/9. Ngày Văn hóa Việt Nam (24/11) is not a holiday until the Labour Code
/// says so: add it under `calendar.holidays` if it becomes one.
pub const DEFAULT_HOLIDAYS: &[&str] = &[
    "2026-01-01",
    "2026-01-02",
    "2026-02-16",
    "2026-02-17",
    "2026-02-18",
    "2026-02-19",
    "2026-02-20",
    "2026-04-27",
    "2026-04-30",
    "2026-05-01",
    "2026-08-31",
    "2026-09-01",
    "2026-09-02",
    "2027-01-01",
    "2027-02-05",
    "2027-02-08",
    "2027-02-09",
    "2027-02-10",
    "2027-02-11",
    "2027-04-16",
    "2027-04-30",
    "2027-05-03",
    "2027-09-02",
    "2027-09-03",
];

/// The Saturdays worked in exchange for a swapped weekday off.
pub const DEFAULT_MAKE_UP_DAYS: &[&str] = &["2026-01-10", "2026-08-22"];

/// The civil service's office hours (Decree 24/2014 leaves them to each province; most keep these).
pub const DEFAULT_OFFICE_HOURS: &[&str] = &["07:30-11:30", "13:00-17:00"];

impl Calendar {
    /// The shipped calendar: office hours, Monday to Friday, the 2026 and 2027 holidays.
    pub fn official() -> Calendar {
        let dates = |list: &[&str]| list.iter().filter_map(|d| d.parse().ok()).collect();
        Calendar {
            periods: DEFAULT_OFFICE_HOURS.iter().filter_map(|p| parse_period(p).ok()).collect(),
            weekdays: [true, true, true, true, true, false, false],
            holidays: dates(DEFAULT_HOLIDAYS),
            make_up_days: dates(DEFAULT_MAKE_UP_DAYS),
        }
    }

    pub fn is_working_day(&self, d: Date) -> bool {
        self.make_up_days.contains(&d)
            || (self.weekdays[d.weekday().to_monday_zero_offset() as usize] && !self.holidays.contains(&d))
    }

    /// The moment `hours` working hours after `from`: a start outside office hours counts from
    /// the next working period. None past a year of searching (a calendar with no working time).
    pub fn add_working_hours(&self, from: DateTime, hours: f64) -> Option<DateTime> {
        let mut left = jiff::SignedDuration::from_secs_f64(hours.max(0.0) * 3600.0);
        let mut day = from.date();
        for _ in 0..=400 {
            if self.is_working_day(day) {
                for (start, end) in &self.periods {
                    let (start, end) = (day.to_datetime(*start), day.to_datetime(*end));
                    if from >= end {
                        continue;
                    }
                    let begin = start.max(from);
                    let available = end.duration_since(begin);
                    if left <= available {
                        return begin.checked_add(left).ok();
                    }
                    left -= available;
                }
            }
            day = day.tomorrow().ok()?;
        }
        None
    }

    /// `days` working days after `from` (whole days skip non-working days; the fraction is
    /// counted in calendar time), for a procedure's duration in working days.
    pub fn add_working_days(&self, from: DateTime, days: f64) -> Option<DateTime> {
        let whole = days.trunc().max(0.0) as u32;
        let mut at = from;
        let mut counted = 0;
        while counted < whole {
            at = at.checked_add(jiff::Span::new().days(1)).ok()?;
            if self.is_working_day(at.date()) {
                counted += 1;
            }
        }
        at.checked_add(jiff::SignedDuration::from_secs_f64(days.fract() * 86_400.0)).ok()
    }
}

/// `"07:30-11:30"`: one working period.
pub fn parse_period(s: &str) -> Result<(Time, Time), crate::i18n::Message> {
    let bad = || crate::i18n::Message::new("cfg-period-invalid").text("value", format!("{s:?}"));
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let time = |t: &str| Time::strptime("%H:%M", t.trim()).map_err(|_| bad());
    let (a, b) = (time(a)?, time(b)?);
    if b <= a {
        return Err(crate::i18n::Message::new("cfg-period-backwards").text("value", format!("{s:?}")));
    }
    Ok((a, b))
}

/// `"mon"` .. `"sun"`.
pub fn parse_weekday(s: &str) -> Option<Weekday> {
    Some(match s.trim().to_ascii_lowercase().as_str() {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime {
        s.parse().unwrap()
    }

    fn receipt_due(submitted: &str) -> DateTime {
        Calendar::official().add_working_hours(at(submitted), 8.0).unwrap()
    }

    #[test]
    fn eight_working_hours_from_friday_afternoon_end_on_monday() {
        // Half an hour on Friday, seven and a half on Monday.
        assert_eq!(receipt_due("2026-11-20T16:30"), at("2026-11-23T16:30"));
    }

    #[test]
    fn a_night_submission_counts_from_the_next_morning() {
        assert_eq!(receipt_due("2026-11-17T22:00"), at("2026-11-18T17:00"));
        assert_eq!(receipt_due("2026-11-18T03:00"), at("2026-11-18T17:00"));
        // At lunch: from 13:00, four hours that afternoon and four the next morning.
        assert_eq!(receipt_due("2026-11-18T12:00"), at("2026-11-19T11:30"));
    }

    #[test]
    fn holidays_and_the_weekend_are_skipped() {
        // Wednesday 29/4/2026 at 10:00: 5.5 hours that day; 30/4, 1/5 and the weekend off.
        assert_eq!(receipt_due("2026-04-29T10:00"), at("2026-05-04T10:00"));
        // A submission on a holiday counts from the next working morning.
        assert_eq!(receipt_due("2026-09-02T09:00"), at("2026-09-03T17:00"));
    }

    #[test]
    fn tet_2026_is_a_nine_day_break() {
        // Friday 13/2 at 15:00: two hours; 14–22/2 off; Monday 23/2 the other six.
        assert_eq!(receipt_due("2026-02-13T15:00"), at("2026-02-23T15:00"));
        let c = Calendar::official();
        for d in ["2026-02-16", "2026-02-20", "2027-02-08"] {
            assert!(!c.is_working_day(d.parse().unwrap()), "{d}");
        }
    }

    #[test]
    fn a_make_up_saturday_is_worked() {
        let c = Calendar::official();
        assert!(c.is_working_day("2026-01-10".parse().unwrap()));
        assert!(!c.is_working_day("2026-01-17".parse().unwrap()));
        // Friday 9/1/2026 at 16:00: one hour, then seven on Saturday 10/1.
        assert_eq!(receipt_due("2026-01-09T16:00"), at("2026-01-10T16:00"));
    }

    #[test]
    fn working_days_skip_weekends_and_holidays() {
        let c = Calendar::official();
        // Three working days from Wednesday 29/4/2026: 4/5, 5/5, 6/5.
        assert_eq!(c.add_working_days(at("2026-04-29T09:00"), 3.0), Some(at("2026-05-06T09:00")));
    }

    #[test]
    fn periods_and_weekdays_are_checked() {
        assert!(parse_period("07:30-11:30").is_ok());
        assert!(parse_period("11:30-07:30").is_err());
        assert!(parse_period("7h30").is_err());
        assert_eq!(parse_weekday("Sat"), Some(Weekday::Saturday));
        assert_eq!(parse_weekday("saturday"), None);
        let none = Calendar { periods: vec![], ..Calendar::official() };
        assert_eq!(none.add_working_hours(at("2026-01-05T08:00"), 8.0), None);
    }
}
