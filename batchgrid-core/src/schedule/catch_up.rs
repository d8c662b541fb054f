//! Missed fire times: which of the fire times that passed while nothing fired them still fire.
//!
//! The manager keeps, per schedule, a watermark: every fire time at or before it has been dealt
//! with. Each pass it asks [`plan`] about the fire times after the watermark up to now:
//! - `skip`: only a fire time found on time (at most [`ON_TIME`] late) fires; missed ones are
//!   dropped;
//! - `latest` (the default): the latest passed fire time fires if it is within
//!   `catch_up_window` (default one day), the others are dropped;
//! - `all`: every passed fire time within the window fires, oldest first, at most
//!   [`MAX_BATCH`] per pass (the watermark stops at the last one, so the next pass goes on:
//!   nothing is given up after a fixed count of misses).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::{Schedule, ScheduleError};

/// How late a fire time may be found and still count as on time under `skip`: a manager pass
/// runs every few seconds, so a later find means the manager was away.
pub const ON_TIME: Duration = Duration::from_secs(60);

/// The most fire times one pass fires under `all`.
pub const MAX_BATCH: usize = 100;

/// The default `catch_up_window`.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// What happens to fire times missed while the manager was away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Missed fire times are dropped.
    Skip,
    /// The latest missed fire time fires, if within the window.
    #[default]
    Latest,
    /// Every missed fire time within the window fires, oldest first.
    All,
}

/// A catch-up policy and its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchUpPolicy {
    /// Which missed fire times fire.
    pub mode: CatchUp,
    /// How old a missed fire time may be and still fire.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Default for CatchUpPolicy {
    fn default() -> Self {
        Self { mode: CatchUp::default(), window: DEFAULT_WINDOW }
    }
}

/// What one pass fires, and where the next pass starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Fire times to fire now, oldest first.
    pub fire: Vec<DateTime<Tz>>,
    /// Every fire time at or before this has been dealt with (fired or dropped).
    pub watermark: DateTime<Utc>,
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

/// The fire times of `schedule` in `(watermark, now]` that fire under `policy`.
pub fn plan(
    schedule: &Schedule,
    policy: &CatchUpPolicy,
    watermark: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Plan, ScheduleError> {
    if now <= watermark {
        return Ok(Plan { fire: Vec::new(), watermark });
    }
    let lookback = match policy.mode {
        CatchUp::Skip => ON_TIME,
        CatchUp::Latest | CatchUp::All => policy.window,
    };
    let oldest = now.checked_sub_signed(delta(lookback)).unwrap_or(DateTime::<Utc>::MIN_UTC);
    // Fire times before the oldest that may fire are dropped without being listed.
    let from = oldest.checked_sub_signed(TimeDelta::nanoseconds(1)).map_or(watermark, |o| o.max(watermark));
    match policy.mode {
        CatchUp::Skip | CatchUp::Latest => {
            let fire = latest_due(schedule, from, now)?.into_iter().collect();
            Ok(Plan { fire, watermark: now })
        }
        CatchUp::All => {
            let mut fire = Vec::new();
            for time in schedule.iter_after(from) {
                let time = time?;
                if time.with_timezone(&Utc) > now {
                    return Ok(Plan { fire, watermark: now });
                }
                fire.push(time);
                if fire.len() == MAX_BATCH {
                    return Ok(Plan { fire, watermark: time.with_timezone(&Utc) });
                }
            }
            Ok(Plan { fire, watermark: now })
        }
    }
}

/// The latest fire time in `(from, now]`. Searched backwards from `now` in doubling steps, so a
/// dense expression (every second) over a long window costs a few searches, not one per time.
fn latest_due(
    schedule: &Schedule,
    from: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Tz>>, ScheduleError> {
    let mut step = TimeDelta::seconds(1);
    loop {
        let start = now.checked_sub_signed(step).map_or(from, |s| s.max(from));
        let mut latest = None;
        for time in schedule.iter_after(start) {
            let time = time?;
            if time.with_timezone(&Utc) > now {
                break;
            }
            latest = Some(time);
        }
        if latest.is_some() || start == from {
            return Ok(latest);
        }
        step = step.checked_mul(2).unwrap_or(TimeDelta::MAX);
    }
}
