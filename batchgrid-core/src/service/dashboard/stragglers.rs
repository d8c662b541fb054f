//! Stragglers: a job's tasks that have been running far longer than their stage usually takes,
//! found from the running tasks the workers' heartbeats report (so at most one heartbeat old).

use std::time::Duration;

use crate::analytics::{StageTimes, WorkerRecord};
use crate::worker::HEARTBEAT_PERIOD;

/// A task is a straggler once it has run more than this many times its stage's p99.
pub const FACTOR: u64 = 2;
/// Done tasks a stage needs before its p99 is trusted: with fewer, one slow task is the p99.
pub const MIN_DONE: u64 = 20;
/// A worker whose last heartbeat is older than this is presumed gone, and what it last
/// reported running is ignored (its tasks come back to the queue and run elsewhere).
pub const STALE_AFTER: Duration = Duration::from_secs(3 * HEARTBEAT_PERIOD.as_secs());

/// A task running far longer than its stage's p99.
#[derive(Debug, Clone, PartialEq)]
pub struct Straggler<'a> {
    /// Its stage's position.
    pub stage: u32,
    /// Its id within the stage.
    pub task_id: &'a str,
    /// The worker running it.
    pub worker_id: &'a str,
    /// How long it has been running, in milliseconds.
    pub running_ms: u64,
    /// Its stage's p99 over the done tasks, in milliseconds.
    pub p99_ms: u64,
    /// `running_ms` over `p99_ms`.
    pub ratio: f64,
}

/// The stragglers of `job_id` at `now`: tasks reported running by a worker that is neither
/// stopped nor stale, of a stage with at least [`MIN_DONE`] done tasks, that have run more than
/// [`FACTOR`] times the stage's p99 (exactly that much is not yet one). The most behind first.
pub fn stragglers<'a>(job_id: &str, workers: &'a [WorkerRecord], times: &[StageTimes], now: i64) -> Vec<Straggler<'a>> {
    let stale_ms = i64::try_from(STALE_AFTER.as_millis()).unwrap_or(i64::MAX);
    let p99_of = |stage: u32| {
        let histogram = &times.iter().find(|t| t.stage == stage)?.histogram;
        (histogram.count() >= MIN_DONE).then(|| histogram.percentile(0.99)).flatten()
    };
    let mut found: Vec<Straggler<'a>> = workers
        .iter()
        .filter(|worker| worker.state != "stopped" && now.saturating_sub(worker.last_seen) <= stale_ms)
        .flat_map(|worker| worker.running.iter().map(move |task| (worker, task)))
        .filter(|(_, task)| task.job_id == job_id)
        .filter_map(|(worker, task)| {
            let p99_ms = p99_of(task.stage)?;
            let running_ms = u64::try_from(now.saturating_sub(task.started_at)).unwrap_or(0);
            (running_ms > p99_ms.saturating_mul(FACTOR)).then(|| Straggler {
                stage: task.stage,
                task_id: &task.task_id,
                worker_id: &worker.id,
                running_ms,
                p99_ms,
                // A stage of sub-millisecond tasks has a p99 of 0: count it as 1 ms.
                ratio: running_ms as f64 / p99_ms.max(1) as f64,
            })
        })
        .collect();
    found.sort_by(|a, b| b.ratio.total_cmp(&a.ratio).then_with(|| (a.stage, a.task_id).cmp(&(b.stage, b.task_id))));
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::{RunningTask, TimeHistogram};

    const NOW: i64 = 1_000_000_000;

    /// Stage 0 with `done` tasks of exactly 1,000 ms (exact enough: p99 within its bucket).
    fn times(done: usize) -> Vec<StageTimes> {
        vec![StageTimes { stage: 0, histogram: TimeHistogram::of(&vec![1_000; done]) }]
    }

    fn worker(id: &str, state: &str, last_seen: i64, running: &[(&str, u32, &str, i64)]) -> WorkerRecord {
        WorkerRecord {
            id: id.into(),
            host: "h".into(),
            pid: 1,
            started_at: 0,
            last_seen,
            state: state.into(),
            tasks_done: 0,
            tasks_failed: 0,
            current_tasks: u32::try_from(running.len()).unwrap_or(0),
            running: running
                .iter()
                .map(|&(job, stage, task, started_at)| RunningTask {
                    job_id: job.into(),
                    stage,
                    task_id: task.into(),
                    started_at,
                })
                .collect(),
        }
    }

    fn p99(times: &[StageTimes]) -> i64 {
        times[0].histogram.percentile(0.99).and_then(|p| i64::try_from(p).ok()).expect("p99")
    }

    #[test]
    fn exactly_twice_the_p99_is_not_a_straggler_a_millisecond_more_is() {
        let times = times(20);
        let p99 = p99(&times);
        let workers = [worker(
            "w1",
            "running",
            NOW,
            &[("j", 0, "at-2x", NOW - 2 * p99), ("j", 0, "past-2x", NOW - 2 * p99 - 1), ("j", 0, "quick", NOW - 10)],
        )];
        let found = stragglers("j", &workers, &times, NOW);
        assert_eq!(found.len(), 1, "{found:?}");
        let straggler = &found[0];
        assert_eq!((straggler.task_id, straggler.worker_id, straggler.stage), ("past-2x", "w1", 0));
        assert_eq!(straggler.running_ms, u64::try_from(2 * p99 + 1).expect("positive"));
        assert_eq!(straggler.p99_ms, u64::try_from(p99).expect("positive"));
        assert!(straggler.ratio > 2.0 && straggler.ratio < 2.01, "{}", straggler.ratio);
    }

    #[test]
    fn too_few_done_tasks_means_no_stragglers() {
        let workers = [worker("w1", "running", NOW, &[("j", 0, "slow", 0)])];
        assert!(stragglers("j", &workers, &times(MIN_DONE as usize - 1), NOW).is_empty());
        assert!(stragglers("j", &workers, &[], NOW).is_empty(), "a stage with no done task");
        assert_eq!(stragglers("j", &workers, &times(MIN_DONE as usize), NOW).len(), 1);
    }

    #[test]
    fn stopped_and_stale_workers_are_ignored() {
        let times = times(50);
        let stale = NOW - i64::try_from(STALE_AFTER.as_millis()).expect("small") - 1;
        let workers = [
            worker("stopped", "stopped", NOW, &[("j", 0, "a", 0)]),
            worker("stale", "running", stale, &[("j", 0, "b", 0)]),
            worker("draining", "draining", NOW - 1_000, &[("j", 0, "c", 0)]),
        ];
        let found = stragglers("j", &workers, &times, NOW);
        assert_eq!(found.iter().map(|s| s.worker_id).collect::<Vec<_>>(), vec!["draining"]);
    }

    #[test]
    fn only_this_jobs_tasks_the_most_behind_first() {
        let times = times(50);
        let workers = [
            worker("w1", "running", NOW, &[("other", 0, "x", 0), ("j", 0, "later", NOW - 10_000)]),
            worker("w2", "running", NOW, &[("j", 0, "earlier", NOW - 50_000), ("j", 3, "no-stage-times", 0)]),
        ];
        let found = stragglers("j", &workers, &times, NOW);
        assert_eq!(found.iter().map(|s| s.task_id).collect::<Vec<_>>(), vec!["earlier", "later"]);
    }
}
