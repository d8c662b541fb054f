//! Schedules: when a job fires, evaluated as pure functions of a clock the caller passes in.
//!
//! - [`expr`]: cron expressions (`L`, `W`, `LW`, `#`, an optional seconds field) through croner.
//! - [`zone`]: from a wall-clock fire time to an instant, the daylight-saving rules.
//! - [`calendar`]: excluded dates and holiday files; the business days `LW` rolls back over.
//! - [`catch_up`]: which missed fire times fire after the manager was away.
//! - [`overlap`]: what a fire time does while the previous run is still going.
//! - [`vars`]: `{period}`, `{date}` and `{fire_time}` of an occurrence, substituted into a job.
//!
//! [`Schedule`] ties the first three together: its fire times are the wall-clock times the
//! expression matches in the schedule's zone, on dates the calendar allows, each resolved to
//! one instant by [`zone::resolve`].

pub mod calendar;
pub mod catch_up;
pub mod expr;
pub mod overlap;
pub mod vars;
pub mod zone;

#[cfg(test)]
mod tests;

use std::fmt;

pub use chrono;
use chrono::{DateTime, Days, NaiveDateTime, NaiveTime, Utc};
pub use chrono_tz;
use chrono_tz::Tz;

pub use calendar::Calendar;
pub use catch_up::{CatchUp, CatchUpPolicy};
pub use expr::CronExpr;
pub use overlap::{Overlap, OverlapDecision};

/// The part of a schedule a problem was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScheduleField {
    /// The cron expression.
    Cron,
    /// The IANA time zone.
    Tz,
    /// Excluded dates or a holiday file.
    Exclude,
    /// A start time such as `--from`.
    From,
}

impl fmt::Display for ScheduleField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScheduleField::Cron => "cron",
            ScheduleField::Tz => "tz",
            ScheduleField::Exclude => "exclude",
            ScheduleField::From => "from",
        })
    }
}

/// A schedule that cannot be evaluated, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ScheduleError {
    /// Which part of the schedule is wrong.
    pub field: ScheduleField,
    /// What is wrong with it (a holiday file's problems start with `FILE:LINE:`).
    pub message: String,
}

impl ScheduleError {
    pub(crate) fn new(field: ScheduleField, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}

/// Parses an IANA zone name such as `Europe/Paris`.
pub fn parse_zone(name: &str) -> Result<Tz, ScheduleError> {
    name.trim().parse::<Tz>().map_err(|_| {
        ScheduleError::new(
            ScheduleField::Tz,
            format!("`{name}` is not an IANA time zone (such as Europe/Paris or UTC)"),
        )
    })
}

/// Parses an RFC 3339 time with its offset, such as `2026-11-30T02:00:00+01:00`.
pub fn parse_instant(text: &str) -> Result<DateTime<Utc>, ScheduleError> {
    DateTime::parse_from_rfc3339(text.trim()).map(|t| t.with_timezone(&Utc)).map_err(|e| {
        ScheduleError::new(
            ScheduleField::From,
            format!("`{text}` is not an RFC 3339 time with an offset (such as 2026-11-30T02:00:00+01:00): {e}"),
        )
    })
}

/// How many matching wall-clock times one search may pass over (excluded dates, or the second
/// pass of an autumn repeat) before it gives up: far more than any real calendar needs.
const MAX_SEARCH_STEPS: usize = 100_000;

/// A cron expression in a zone, on a business calendar.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: CronExpr,
    zone: Tz,
    calendar: Calendar,
}

impl Schedule {
    /// A schedule firing at the times `expr` matches in `zone`, on the dates `calendar` allows.
    pub fn new(expr: CronExpr, zone: Tz, calendar: Calendar) -> Self {
        Self { expr, zone, calendar }
    }

    /// The schedule's zone.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first fire time strictly after `after`; `None` when the expression never fires again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Result<Option<DateTime<Tz>>, ScheduleError> {
        let mut cursor = after.with_timezone(&self.zone).naive_local();
        let mut inclusive = false;
        for _ in 0..MAX_SEARCH_STEPS {
            let Some(candidate) = self.expr.next_local(cursor, inclusive)? else { return Ok(None) };
            if !self.date_allowed(candidate) {
                // Nothing on this date fires: go on from the next midnight.
                let Some(next_day) = candidate.date().checked_add_days(Days::new(1)) else { return Ok(None) };
                (cursor, inclusive) = (next_day.and_time(NaiveTime::MIN), true);
                continue;
            }
            let instant = zone::resolve(self.zone, candidate)?;
            // In the second pass of an autumn repeat, wall-clock times already fired in the
            // first pass resolve to the past: each fires once, so they are passed over.
            if instant.with_timezone(&Utc) > after {
                return Ok(Some(instant));
            }
            (cursor, inclusive) = (candidate, false);
        }
        Err(ScheduleError::new(
            ScheduleField::Cron,
            format!("no fire time found within {MAX_SEARCH_STEPS} candidates; does the calendar exclude every match?"),
        ))
    }

    /// The fire times strictly after `after`, in order (an error ends the sequence).
    pub fn iter_after(&self, after: DateTime<Utc>) -> impl Iterator<Item = Result<DateTime<Tz>, ScheduleError>> + '_ {
        let mut cursor = Some(after);
        std::iter::from_fn(move || {
            let from = cursor.take()?;
            match self.next_after(from) {
                Ok(Some(time)) => {
                    cursor = Some(time.with_timezone(&Utc));
                    Some(Ok(time))
                }
                Ok(None) => None,
                Err(error) => Some(Err(error)),
            }
        })
    }

    fn date_allowed(&self, local: NaiveDateTime) -> bool {
        let date = local.date();
        if self.expr.is_last_business_day() {
            self.calendar.last_business_day_of_month(date) == Some(date)
        } else {
            !self.calendar.is_excluded(date)
        }
    }
}
