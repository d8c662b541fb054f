//! How soon the manager looks at a job again between reconcile passes. A stage's end opens the
//! next stage (a reduce's barrier) or ends the job, and should be noticed as it happens, not a
//! tick later; yet a look per finished task would load the store for nothing. So between passes
//! the manager reads the job's stage counts (one small read) at a pace set by how soon the open
//! stage should finish: its remaining tasks at the rate tasks have been settling, looked at
//! four times over that span, never less often than every [`NEAR_END_LOOK`] once only a few
//! tasks are left (any of them may be the last), never more often than every [`FASTEST_LOOK`].

use std::time::{Duration, Instant};

use crate::analytics::StageProgress;

/// The shortest pause between looks.
pub(super) const FASTEST_LOOK: Duration = Duration::from_millis(5);
/// The longest pause between looks while only a few tasks of the open stage remain: each
/// look is one indexed read of a few rows, so even on PostgreSQL this is cheap next to the
/// tasks it waits for.
pub(super) const NEAR_END_LOOK: Duration = Duration::from_millis(20);
/// At most this many remaining tasks is "a few".
const FEW_LEFT: u64 = 16;
/// How long settling must have been observed before its rate is trusted.
const RATE_WINDOW: Duration = Duration::from_millis(50);

/// Paces the looks between passes for one job.
#[derive(Debug, Default)]
pub(super) struct Pacer {
    /// The open stage, when it was first seen open, and its settled tasks then.
    since: Option<(u32, Instant, u64)>,
}

impl Pacer {
    /// The pause before the next look at `stages`, seen at `now`; at most `tick`.
    pub(super) fn pause(&mut self, now: Instant, stages: &[StageProgress], tick: Duration) -> Duration {
        let Some(open) = stages.iter().find(|s| !s.is_finished()) else { return tick.min(FASTEST_LOOK) };
        let Some(expected) = open.expected else {
            // Being split, or waiting for a pass to open it: the split's end and the pass wake
            // the manager themselves.
            self.since = None;
            return tick;
        };
        let settled = open.done + open.failed;
        let remaining = expected.saturating_sub(settled);
        let (_, first_seen, settled_then) = match self.since {
            Some(since) if since.0 == open.stage => since,
            _ => *self.since.insert((open.stage, now, settled)),
        };
        let observed = now.saturating_duration_since(first_seen);
        let gained = settled.saturating_sub(settled_then);
        let mut pause = if observed >= RATE_WINDOW && gained > 0 {
            // Remaining tasks at the observed rate, looked at four times over.
            let eta = observed.mul_f64(remaining as f64 / gained as f64);
            eta / 4
        } else {
            tick
        };
        if remaining <= FEW_LEFT {
            pause = pause.min(NEAR_END_LOOK);
        }
        pause.clamp(FASTEST_LOOK.min(tick), tick)
    }
}

/// How many of `stages` have finished: the count whose change calls for a pass.
pub(super) fn finished_stages(stages: &[StageProgress]) -> usize {
    stages.iter().filter(|s| s.is_finished()).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::StageKind;

    fn stage(stage: u32, expected: Option<u64>, done: u64) -> StageProgress {
        StageProgress { stage, name: format!("s{stage}"), kind: StageKind::Map, expected, done, failed: 0, retrying: 0 }
    }

    const TICK: Duration = Duration::from_secs(2);

    #[test]
    fn a_stage_far_from_its_end_is_looked_at_once_a_tick() {
        let mut pacer = Pacer::default();
        let t0 = Instant::now();
        assert_eq!(pacer.pause(t0, &[stage(0, Some(10_000), 0)], TICK), TICK);
        // 100 tasks a second with 9,000 left: 90 s away.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(pacer.pause(later, &[stage(0, Some(10_000), 1_000)], TICK), TICK);
    }

    #[test]
    fn the_pace_quickens_as_the_expected_end_nears() {
        let mut pacer = Pacer::default();
        let t0 = Instant::now();
        pacer.pause(t0, &[stage(0, Some(1_000), 0)], TICK);
        // 100 tasks a second, 200 left: 2 s away, looked at every 0.5 s.
        let pause = pacer.pause(t0 + Duration::from_secs(8), &[stage(0, Some(1_000), 800)], TICK);
        assert_eq!(pause, Duration::from_millis(500));
        // 40 left: 0.4 s away, every 0.1 s.
        let pause = pacer.pause(t0 + Duration::from_millis(9_600), &[stage(0, Some(1_000), 960)], TICK);
        assert_eq!(pause, Duration::from_millis(100));
    }

    #[test]
    fn a_few_tasks_left_are_looked_at_often_whatever_the_rate() {
        let mut pacer = Pacer::default();
        let t0 = Instant::now();
        // A reduce: one task, no rate yet.
        let stages = [stage(0, Some(20), 20), stage(1, Some(1), 0)];
        assert_eq!(pacer.pause(t0, &stages, TICK), NEAR_END_LOOK);
        // Slow tasks: one a minute, three left; still every NEAR_END_LOOK.
        let mut pacer = Pacer::default();
        pacer.pause(t0, &[stage(0, Some(10), 5)], TICK);
        let pause = pacer.pause(t0 + Duration::from_secs(120), &[stage(0, Some(10), 7)], TICK);
        assert_eq!(pause, NEAR_END_LOOK);
    }

    #[test]
    fn never_faster_than_the_fastest_look_nor_slower_than_the_tick() {
        let mut pacer = Pacer::default();
        let t0 = Instant::now();
        pacer.pause(t0, &[stage(0, Some(100_000), 0)], TICK);
        // A thousand tasks a millisecond: the end is microseconds away.
        let pause = pacer.pause(t0 + Duration::from_millis(60), &[stage(0, Some(100_000), 99_990)], TICK);
        assert_eq!(pause, FASTEST_LOOK);
        // A tick shorter than the fastest look is the tick.
        let short = Duration::from_millis(5);
        assert_eq!(Pacer::default().pause(t0, &[stage(0, Some(3), 0)], short), short);
    }

    #[test]
    fn a_stage_being_split_waits_for_the_split_to_say_so() {
        let mut pacer = Pacer::default();
        assert_eq!(pacer.pause(Instant::now(), &[stage(0, None, 40)], TICK), TICK);
    }

    #[test]
    fn the_rate_restarts_with_each_stage() {
        let mut pacer = Pacer::default();
        let t0 = Instant::now();
        pacer.pause(t0, &[stage(0, Some(100), 0)], TICK);
        pacer.pause(t0 + Duration::from_secs(1), &[stage(0, Some(100), 50)], TICK);
        // Stage 1 opens with 1,000 tasks: no rate yet for it, so a tick.
        let stages = [stage(0, Some(100), 100), stage(1, Some(1_000), 0)];
        assert_eq!(pacer.pause(t0 + Duration::from_secs(2), &stages, TICK), TICK);
    }

    #[test]
    fn finished_stages_counts_only_those_with_every_task_settled() {
        let stages = [stage(0, Some(2), 2), stage(1, Some(3), 2), stage(2, None, 0)];
        assert_eq!(finished_stages(&stages), 1);
    }
}
