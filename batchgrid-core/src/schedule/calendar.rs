//! Business calendars: dates on which a schedule does not fire.
//!
//! A calendar is a set of excluded dates, given inline (`exclude: [2026-12-24]`) or in holiday
//! files: one `YYYY-MM-DD` per line, `#` starts a comment, blank lines are ignored. Dates are
//! the schedule's local dates.
//!
//! The rules, for a fire time on local date D:
//! - D excluded: the fire time is dropped (nothing moves), for every expression but `LW`;
//! - `LW` (day-of-month field alone): fires on the month's last business day, the last day of
//!   the month that is Monday to Friday and not excluded. A holiday on the last weekday rolls
//!   the run back to the business day before it, within the month; a month with no business
//!   day at all does not fire.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{Datelike, Days, NaiveDate, Weekday};

use super::{ScheduleError, ScheduleField};

/// Largest holiday file read: a calendar, not data.
const MAX_HOLIDAY_FILE_BYTES: u64 = 1024 * 1024;

/// Excluded dates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calendar {
    excluded: BTreeSet<NaiveDate>,
}

/// Parses one `YYYY-MM-DD` date.
pub fn parse_date(text: &str) -> Result<NaiveDate, String> {
    let text = text.trim();
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .filter(|_| text.len() == 10)
        .ok_or_else(|| format!("`{text}` is not a date (YYYY-MM-DD)"))
}

impl Calendar {
    /// A calendar excluding `dates`.
    pub fn from_dates(dates: impl IntoIterator<Item = NaiveDate>) -> Self {
        Self { excluded: dates.into_iter().collect() }
    }

    /// Adds one excluded date.
    pub fn exclude(&mut self, date: NaiveDate) {
        self.excluded.insert(date);
    }

    /// Adds the dates of a holiday file's text; errors start with `ORIGIN:LINE:`.
    pub fn add_holidays(&mut self, text: &str, origin: &str) -> Result<(), ScheduleError> {
        for (index, line) in text.lines().enumerate() {
            let content = line.split('#').next().unwrap_or_default().trim();
            if content.is_empty() {
                continue;
            }
            let date = parse_date(content).map_err(|message| {
                ScheduleError::new(ScheduleField::Exclude, format!("{origin}:{}: {message}", index + 1))
            })?;
            self.excluded.insert(date);
        }
        Ok(())
    }

    /// Reads a holiday file and adds its dates.
    pub fn add_holiday_file(&mut self, path: &Path) -> Result<(), ScheduleError> {
        let origin = path.display().to_string();
        let fail = |message: String| ScheduleError::new(ScheduleField::Exclude, format!("{origin}: {message}"));
        let metadata = std::fs::metadata(path).map_err(|e| fail(format!("cannot read holiday file: {e}")))?;
        if metadata.len() > MAX_HOLIDAY_FILE_BYTES {
            return Err(fail(format!("holiday file exceeds {MAX_HOLIDAY_FILE_BYTES} bytes")));
        }
        let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read holiday file: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|_| fail("holiday file is not UTF-8".into()))?;
        self.add_holidays(&text, &origin)
    }

    /// Whether `date` is excluded.
    pub fn is_excluded(&self, date: NaiveDate) -> bool {
        self.excluded.contains(&date)
    }

    /// Monday to Friday and not excluded.
    pub fn is_business_day(&self, date: NaiveDate) -> bool {
        !matches!(date.weekday(), Weekday::Sat | Weekday::Sun) && !self.is_excluded(date)
    }

    /// The last business day of the month `date` falls in, if the month has one.
    pub fn last_business_day_of_month(&self, date: NaiveDate) -> Option<NaiveDate> {
        let first = date.with_day(1)?;
        let last = first.checked_add_months(chrono::Months::new(1))?.checked_sub_days(Days::new(1))?;
        let mut day = last;
        while day >= first {
            if self.is_business_day(day) {
                return Some(day);
            }
            day = day.pred_opt()?;
        }
        None
    }

    /// The excluded dates, in order.
    pub fn dates(&self) -> impl Iterator<Item = NaiveDate> + '_ {
        self.excluded.iter().copied()
    }
}
