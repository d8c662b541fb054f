//! Cron expressions, parsed by croner: five fields (minute hour day-of-month month
//! day-of-week) or six with seconds first; `L`, `W`, `LW`, `#`, names (`JAN`, `MON`) and
//! `@daily`-style nicknames. A year field is refused: a sixth field is always seconds.
//!
//! `LW` alone in the day-of-month field means the last business day of the month, so it is
//! evaluated here against the calendar (see [`super::calendar`]) rather than by croner, whose
//! `LW` knows weekends but not holidays.

use chrono::NaiveDateTime;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use super::{ScheduleError, ScheduleField};

/// A parsed cron expression.
#[derive(Debug, Clone)]
pub struct CronExpr {
    source: String,
    cron: Cron,
    last_business_day: bool,
}

fn parser() -> CronParser {
    CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build()
}

fn cron_error(source: &str, error: CronError) -> ScheduleError {
    ScheduleError::new(ScheduleField::Cron, format!("`{source}`: {error}"))
}

impl CronExpr {
    /// Parses `text`; the error quotes it and says what croner found wrong.
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let source = text.trim().to_owned();
        // Parsed as written first, so every error is about the user's own text.
        let cron = parser().parse(&source).map_err(|e| cron_error(&source, e))?;
        let fields: Vec<&str> = source.split_whitespace().collect();
        let dom = fields.len().checked_sub(3).and_then(|i| fields.get(i));
        if !dom.is_some_and(|dom| dom.eq_ignore_ascii_case("LW")) {
            return Ok(Self { source, cron, last_business_day: false });
        }
        let dow = fields.last().copied().unwrap_or("*");
        if dow != "*" && dow != "?" {
            return Err(ScheduleError::new(
                ScheduleField::Cron,
                format!("`{source}`: with `LW` (the last business day) the day-of-week field must be `*` or `?`"),
            ));
        }
        // Every day at the expression's times; the schedule keeps only the last business day.
        let mut every_day = fields.clone();
        let dom_index = fields.len() - 3;
        every_day[dom_index] = "*";
        let cron = parser().parse(&every_day.join(" ")).map_err(|e| cron_error(&source, e))?;
        Ok(Self { source, cron, last_business_day: true })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the day-of-month field is `LW`: the last business day of each month.
    pub fn is_last_business_day(&self) -> bool {
        self.last_business_day
    }

    /// The next wall-clock time the expression matches after `from` (at `from` too when
    /// `inclusive`); `None` past croner's horizon (the year 5000) or when nothing ever matches.
    pub fn next_local(&self, from: NaiveDateTime, inclusive: bool) -> Result<Option<NaiveDateTime>, ScheduleError> {
        match self.cron.find_next_occurrence(&from, inclusive) {
            Ok(next) => Ok(Some(next)),
            Err(CronError::TimeSearchLimitExceeded | CronError::InvalidDate | CronError::InvalidTime) => Ok(None),
            Err(error) => Err(cron_error(&self.source, error)),
        }
    }
}

impl std::fmt::Display for CronExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}
