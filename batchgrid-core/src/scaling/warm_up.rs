//! Warm-up before a scheduled job (`schedule.warm_up: 10m`): for that long before a fire time the
//! group is held at the size the schedule's previous run needed at its start, so month-end's
//! first tasks find instances booted instead of waiting minutes for them. A pure function of
//! the schedules, the clock and the sizing settings, like the rest of the sizing.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::sizing::{instances_needed, JobWork, SizingSettings};
use crate::schedule::Schedule;

/// A schedule that asks for warm-up.
#[derive(Debug, Clone)]
pub struct WarmSchedule {
    /// The schedule's name (for the logs).
    pub name: String,
    /// When it fires.
    pub schedule: Schedule,
    /// How long before a fire time to raise the group.
    pub warm_up: Duration,
    /// The work of its previous run as it started (all its tasks, their mean time), if it ran.
    pub last_run: Option<JobWork>,
}

/// A warm-up in force: the least size the group should have now, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmUp {
    /// Instances to hold at least.
    pub instances: u64,
    /// The schedule warming up.
    pub schedule: String,
    /// Its coming fire time.
    pub fire_time: DateTime<Utc>,
}

/// The largest warm-up in force at `now`: a schedule whose next fire time is at most its
/// `warm_up` away. Its size is what the previous run's whole work needs in the target time
/// (one instance when it never ran).
pub fn warm_up_at(schedules: &[WarmSchedule], now: DateTime<Utc>, settings: &SizingSettings) -> Option<WarmUp> {
    largest(schedules.iter().filter_map(|warm| due(warm, now).map(|fire_time| (warm, fire_time))), settings)
}

/// The fire time `warm` is warming up for at `now`, if it is inside its window. A schedule
/// whose expression cannot be evaluated is passed over: the manager's firing reports that error.
pub fn due(warm: &WarmSchedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let fire_time = warm.schedule.next_after(now).ok().flatten()?.with_timezone(&Utc);
    let lead = (fire_time - now).to_std().ok()?;
    (lead <= warm.warm_up).then_some(fire_time)
}

/// The largest of the warm-ups of schedules already found [`due`], with their fire times.
pub fn largest<'a>(
    due: impl IntoIterator<Item = (&'a WarmSchedule, DateTime<Utc>)>,
    settings: &SizingSettings,
) -> Option<WarmUp> {
    due.into_iter()
        .map(|(warm, fire_time)| {
            let instances = warm.last_run.map_or(1, |work| instances_needed(&[work], 0, settings).max(1));
            WarmUp { instances, schedule: warm.name.clone(), fire_time }
        })
        .max_by_key(|warm| warm.instances)
}

#[cfg(test)]
mod tests;
