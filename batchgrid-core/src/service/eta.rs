//! When a running job should end: its remaining tasks at the rate its tasks have settled since
//! it started. A pure function, so `status`, `watch` and the dashboard show the same figure.

use std::time::Duration;

use crate::analytics::StageProgress;
use crate::scaling::sizing::remaining_tasks;

/// A running job's rate and expected time to finish.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Eta {
    /// Tasks settled (done or failed for good) per second since the job started.
    pub tasks_per_second: f64,
    /// The time the remaining tasks take at that rate.
    pub remaining: Duration,
}

/// The estimate for a job that started at `started_at` (Unix milliseconds) with `stages`, as
/// of `now`; `None` until a task has settled (no rate yet) or once nothing remains. Later map
/// stages whose counts are not known yet count what they will have (`remaining_tasks`); a
/// first stage still being split counts only what is known, so the estimate grows with it.
pub fn estimate(stages: &[StageProgress], started_at: i64, now: i64) -> Option<Eta> {
    let settled: u64 = stages.iter().map(|s| s.done + s.failed).sum();
    let remaining = remaining_tasks(stages);
    let elapsed = u64::try_from(now.saturating_sub(started_at)).ok().filter(|ms| *ms > 0)?;
    if settled == 0 || remaining == 0 {
        return None;
    }
    let tasks_per_second = settled as f64 * 1000.0 / elapsed as f64;
    let remaining = Duration::from_secs_f64(remaining as f64 / tasks_per_second);
    Some(Eta { tasks_per_second, remaining })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::StageKind;

    fn stage(kind: StageKind, expected: Option<u64>, done: u64, failed: u64) -> StageProgress {
        StageProgress { stage: 0, name: "s".into(), kind, expected, done, failed, retrying: 0 }
    }

    #[test]
    fn the_remaining_tasks_at_the_observed_rate() {
        // 100 of 400 settled in 50 s: 2 tasks/s, 300 left, 150 s.
        let stages = [stage(StageKind::Map, Some(400), 90, 10)];
        let eta = estimate(&stages, 0, 50_000).expect("estimate");
        assert!((eta.tasks_per_second - 2.0).abs() < 1e-9);
        assert_eq!(eta.remaining, Duration::from_secs(150));
    }

    #[test]
    fn later_stages_count_what_they_will_have() {
        // Map 100 (all done), map (unopened: 100 to come), reduce (1): 101 left at 1 task/s.
        let stages = [
            stage(StageKind::Map, Some(100), 100, 0),
            stage(StageKind::Map, None, 0, 0),
            stage(StageKind::Reduce, None, 0, 0),
        ];
        assert_eq!(estimate(&stages, 0, 100_000).map(|e| e.remaining), Some(Duration::from_secs(101)));
    }

    #[test]
    fn no_estimate_before_a_rate_or_after_the_end() {
        assert_eq!(estimate(&[stage(StageKind::Map, Some(10), 0, 0)], 0, 5_000), None, "nothing settled yet");
        assert_eq!(estimate(&[stage(StageKind::Map, Some(10), 10, 0)], 0, 5_000), None, "nothing left");
        assert_eq!(estimate(&[stage(StageKind::Map, Some(10), 5, 0)], 5_000, 5_000), None, "no time elapsed");
        assert_eq!(estimate(&[stage(StageKind::Map, Some(10), 5, 0)], 9_000, 5_000), None, "a clock gone back");
    }
}
