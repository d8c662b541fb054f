//! How many worker instances the grid needs: a pure function of the work (each active job's
//! remaining tasks and observed task time, the queues' depth), the group (its bounds and
//! current desired capacity) and the environment's settings. Everything that decides sits
//! here, so it is tested without a clock, a queue or an Auto Scaling group.

use std::time::Duration;

use super::warm_up::WarmUp;
use crate::analytics::StageProgress;
use crate::spec::StageKind;

/// The environment's scaling settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizingSettings {
    /// Tasks one instance runs at once (its workers' concurrency).
    pub tasks_per_instance: u32,
    /// The time the group is sized to finish the remaining work in.
    pub target_completion: Duration,
    /// How long no work must remain before the group goes back to its minimum.
    pub scale_in_delay: Duration,
    /// The task time assumed for a job none of whose tasks has finished yet.
    pub assumed_task_time: Duration,
}

impl Default for SizingSettings {
    fn default() -> Self {
        Self {
            tasks_per_instance: 2,
            target_completion: Duration::from_secs(15 * 60),
            scale_in_delay: Duration::from_secs(10 * 60),
            assumed_task_time: Duration::from_secs(60),
        }
    }
}

/// One active job's outstanding work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobWork {
    /// Tasks not yet done or failed for good, as far as they are known.
    pub remaining: u64,
    /// Mean time of the job's finished tasks, once there are some.
    pub mean_task_time: Option<Duration>,
}

/// The Auto Scaling group as it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupState {
    /// The group's minimum size.
    pub min: u32,
    /// The group's maximum size.
    pub max: u32,
    /// The capacity the group is asked to have.
    pub desired: u32,
}

/// Everything the decision depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizingInput {
    /// Each active job's outstanding work.
    pub jobs: Vec<JobWork>,
    /// Messages in the task queues, visible or in flight, and tasks waiting for admission: a
    /// floor under the remaining work while a job's input is still being split (its task
    /// count is not known yet).
    pub queued: u64,
    /// The group.
    pub group: GroupState,
    /// How long no work has remained, or `None` while there is work.
    pub idle_for: Option<Duration>,
    /// A scheduled job's warm-up in force: a floor under the size.
    pub warm_up: Option<WarmUp>,
}

/// What to do with the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Leave the desired capacity as it is.
    Hold {
        /// Why, for the logs.
        reason: String,
    },
    /// Set the desired capacity.
    Set {
        /// The new desired capacity.
        desired: u32,
        /// Why, for the logs.
        reason: String,
    },
}

/// Tasks of a job still to run, from its stages' progress. A stage whose task count is not
/// known yet counts what it will have: a map stage one task per task of the stage before, a
/// reduce stage one; the first stage, while its input is being split, only what is known so far
/// (the queue depth covers the rest).
pub fn remaining_tasks(stages: &[StageProgress]) -> u64 {
    let mut upstream = 0;
    let mut remaining = 0;
    for (index, stage) in stages.iter().enumerate() {
        let total = match (stage.expected, stage.kind) {
            (Some(expected), _) => expected,
            (None, _) if index == 0 => stage.done + stage.failed,
            (None, StageKind::Map) => upstream,
            (None, StageKind::Reduce) => 1,
        };
        remaining += total.saturating_sub(stage.done + stage.failed);
        // Tasks that failed for good feed no task to the next map stage.
        upstream = total.saturating_sub(stage.failed);
    }
    remaining
}

/// Instances needed to finish the work in the target time: the work's total task time spread
/// over `tasks_per_instance` slots an instance, never more instances than there are tasks to
/// keep them busy, and at least one while any task remains.
pub fn instances_needed(jobs: &[JobWork], queued: u64, settings: &SizingSettings) -> u64 {
    let known: u64 = jobs.iter().map(|j| j.remaining).sum();
    let unattributed = queued.saturating_sub(known);
    let tasks = known + unattributed;
    if tasks == 0 {
        return 0;
    }
    let task_millis = |time: Option<Duration>| time.unwrap_or(settings.assumed_task_time).as_millis().max(1);
    let work_millis: u128 = jobs.iter().map(|j| u128::from(j.remaining) * task_millis(j.mean_task_time)).sum::<u128>()
        + u128::from(unattributed) * task_millis(None);
    let slots = u64::from(settings.tasks_per_instance.max(1));
    let slot_millis = u128::from(slots) * settings.target_completion.as_millis().max(1);
    let for_time = u64::try_from(work_millis.div_ceil(slot_millis)).unwrap_or(u64::MAX);
    let for_tasks = tasks.div_ceil(slots);
    for_time.min(for_tasks).max(1)
}

/// The decision: scale out at once when the work needs more instances than the group is asked
/// for; never scale in while work remains (an instance that just finished its task would be
/// replaced minutes later as the next stage's tasks arrive, and busy instances are protected
/// anyway); once no work has remained for the scale-in delay, go back to the minimum.
pub fn decide(input: &SizingInput, settings: &SizingSettings) -> Decision {
    let group = input.group;
    let for_work = instances_needed(&input.jobs, input.queued, settings);
    let needed = match &input.warm_up {
        Some(warm) => for_work.max(warm.instances),
        None => for_work,
    };
    if needed > for_work {
        if let Some(warm) = &input.warm_up {
            let target = u32::try_from(needed).unwrap_or(u32::MAX).clamp(group.min, group.max.max(group.min));
            let reason = format!(
                "warming up for schedule {} firing at {}: {needed} instance(s), as its last run needed",
                warm.schedule,
                warm.fire_time.to_rfc3339()
            );
            return if target > group.desired {
                Decision::Set { desired: target, reason }
            } else {
                Decision::Hold { reason }
            };
        }
    }
    if needed > 0 {
        let target = u32::try_from(needed).unwrap_or(u32::MAX).clamp(group.min, group.max.max(group.min));
        if target > group.desired {
            let capped =
                if u64::from(target) < needed { format!(", capped at max_size {}", group.max) } else { String::new() };
            return Decision::Set {
                desired: target,
                reason: format!("{needed} instance(s) finish the remaining work in the target time{capped}"),
            };
        }
        return Decision::Hold {
            reason: format!("work remains: {needed} instance(s) needed, {} asked for", group.desired),
        };
    }
    match input.idle_for {
        Some(idle) if group.desired > group.min && idle >= settings.scale_in_delay => Decision::Set {
            desired: group.min,
            reason: format!("no work for {}s (scale-in delay {}s)", idle.as_secs(), settings.scale_in_delay.as_secs()),
        },
        _ if group.desired <= group.min => Decision::Hold { reason: "idle at the minimum".into() },
        _ => Decision::Hold { reason: "idle, within the scale-in delay".into() },
    }
}

#[cfg(test)]
mod tests;
