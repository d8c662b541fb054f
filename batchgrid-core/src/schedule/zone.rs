//! From a wall-clock fire time to the instant it fires: the daylight-saving rules.
//!
//! A fire time fires at the first instant whose wall clock, in the schedule's zone, shows that
//! time or later. So:
//! - an ordinary time fires at that time;
//! - a time in the spring gap (02:30 on the night clocks jump from 02:00 to 03:00) fires once,
//!   right after the gap (03:00 new time); several gap times of one expression fire as one;
//! - a time in the autumn repeat (02:30 on the night clocks go back from 03:00 to 02:00) fires
//!   once, in the first pass (02:30 summer time), never again in the second.
//!
//! croner's own zone handling treats expressions with `*` or steps in a time field differently
//! (those fire twice in the repeat), which is the double run the schedule must not make; so
//! croner only matches wall-clock times here, and this module maps them to instants for every
//! expression alike.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone};
use chrono_tz::Tz;

use super::{ScheduleError, ScheduleField};

/// The longest gap searched for: a whole day, as when Samoa skipped 30 December 2011.
const MAX_GAP_MINUTES: i64 = 48 * 60;

/// The first instant whose wall clock in `zone` shows `local` or later.
pub fn resolve(zone: Tz, local: NaiveDateTime) -> Result<DateTime<Tz>, ScheduleError> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(time) => Ok(time),
        LocalResult::Ambiguous(first, second) => Ok(first.min(second)),
        LocalResult::None => end_of_gap(zone, local).ok_or_else(|| {
            ScheduleError::new(
                ScheduleField::Tz,
                format!("{local} does not exist in {zone} and no end of its gap was found"),
            )
        }),
    }
}

/// The instant clocks jump over `local`: the first minute past the gap that exists, then back
/// second by second to the transition itself (old zones moved at odd seconds).
fn end_of_gap(zone: Tz, local: NaiveDateTime) -> Option<DateTime<Tz>> {
    let one_second = TimeDelta::seconds(1);
    for minutes in 1..=MAX_GAP_MINUTES {
        let probe = local.checked_add_signed(TimeDelta::minutes(minutes))?;
        let Some(mut time) = zone.from_local_datetime(&probe).earliest() else { continue };
        for _ in 0..60 {
            let earlier = time.checked_sub_signed(one_second)?;
            if earlier.naive_local() < local {
                break;
            }
            time = earlier;
        }
        return Some(time);
    }
    None
}
