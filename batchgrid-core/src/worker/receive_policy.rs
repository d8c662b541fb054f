//! How many messages a worker asks for in one receive, from the task time it observes.
//!
//! SQS bills per request, and a receive or an acknowledgement costs the same whether it carries
//! one message or ten. Short tasks therefore want full batches: ask for ten and keep the ones
//! that cannot start yet in a prefetch buffer. Long tasks want the opposite: a prefetched message
//! waits on a busy worker while another may be idle, and their requests per second are few
//! anyway, so ask only for the free slots. The prefetch depth follows the observed task time: as
//! many messages as the worker's slots start within a short hold budget, which is also well
//! inside the visibility timeout (held messages are heartbeated, but a wait that long means the
//! message would have started sooner elsewhere).
//!
//! An explicit prefetch (`--prefetch`) overrides the adaptation. Until a task has been timed the
//! depth is the worker's concurrency, as it was before the policy existed: a new worker does not
//! grab a whole batch of tasks whose length it does not know.
//!
//! A worker reads two queues (new tasks, and the next stage's); [`long_polled`] says which one a
//! receive waits on. The other is only looked at, without waiting.

use std::time::{Duration, Instant};

use crate::queue::MAX_BATCH;

/// The longest a prefetched message should wait for a slot.
const MAX_HOLD: Duration = Duration::from_secs(1);
/// Weight of the newest task time in the running average: recent tasks count most, and one
/// outlier moves the average by a fifth.
const NEW_WEIGHT: f64 = 0.2;

/// After this long without a delivery from either queue a worker counts as idle.
const IDLE_AFTER: Duration = Duration::from_secs(5);

/// Which of a worker's two queues (`0`: new tasks, `1`: the next stage's) a receive long-polls,
/// from when each last delivered and which one the previous receive long-polled: the one that
/// delivered last, so that a worker busy on one stage does not wait out a long poll on an empty
/// queue while its work arrives on the other. When both deliver they take turns (the one looked
/// at first delivers, and so is waited on next). An idle worker alternates, so each receive is a
/// single long poll: the other queue came back empty a moment ago and is not looked at again.
pub(crate) fn long_polled(last_delivered: [Option<Instant>; 2], previous: usize, now: Instant) -> usize {
    let recent = |at: Option<Instant>| at.filter(|at| now.saturating_duration_since(*at) < IDLE_AFTER);
    match (recent(last_delivered[0]), recent(last_delivered[1])) {
        (Some(tasks), Some(chain)) => usize::from(chain > tasks),
        (Some(_), None) => 0,
        (None, Some(_)) => 1,
        (None, None) => 1 - previous.min(1),
    }
}

/// The receive batch size and prefetch depth of one worker.
#[derive(Debug, Clone)]
pub(crate) struct ReceivePolicy {
    concurrency: usize,
    /// An explicit prefetch depth, which the observed task time does not change.
    fixed: Option<usize>,
    /// How long a prefetched message may wait for a slot.
    hold: Duration,
    /// Running average of how long a task holds a slot; `None` until one has been timed.
    task_time: Option<Duration>,
}

impl ReceivePolicy {
    /// A policy for `concurrency` slots; `prefetch` fixes the depth, `None` adapts it.
    pub(crate) fn new(concurrency: usize, prefetch: Option<usize>, visibility: Duration) -> Self {
        // A quarter of the visibility timeout leaves the heartbeat (every third of it) room to
        // renew a waiting message long before it could reappear.
        Self { concurrency: concurrency.max(1), fixed: prefetch, hold: MAX_HOLD.min(visibility / 4), task_time: None }
    }

    /// Notes how long one task held its slot.
    pub(crate) fn observe(&mut self, took: Duration) {
        self.task_time = Some(match self.task_time {
            None => took,
            Some(average) => average.mul_f64(1.0 - NEW_WEIGHT) + took.mul_f64(NEW_WEIGHT),
        });
    }

    /// Messages to hold beyond the free slots.
    pub(crate) fn prefetch(&self) -> usize {
        if let Some(fixed) = self.fixed {
            return fixed;
        }
        let Some(task_time) = self.task_time else { return self.concurrency };
        // The slots start `concurrency` tasks per task time; the hold budget covers this many.
        let startable = self.hold.as_secs_f64() * self.concurrency as f64 / task_time.as_secs_f64().max(1e-6);
        // Beyond a full batch a deeper buffer saves nothing: the worker refills it only when empty.
        startable.floor().min(MAX_BATCH as f64) as usize
    }

    /// How many messages to ask for when `free` slots are free: at least one, at most a batch.
    pub(crate) fn want(&self, free: usize) -> usize {
        (free + self.prefetch()).clamp(1, MAX_BATCH)
    }

    /// The running average task time, if any task has been timed.
    #[cfg(test)]
    fn task_time(&self) -> Option<Duration> {
        self.task_time
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VISIBILITY: Duration = Duration::from_secs(30);

    fn after(policy: &mut ReceivePolicy, took: Duration, times: usize) {
        for _ in 0..times {
            policy.observe(took);
        }
    }

    #[test]
    fn before_any_task_is_timed_the_depth_is_the_concurrency() {
        let policy = ReceivePolicy::new(2, None, VISIBILITY);
        assert_eq!(policy.prefetch(), 2);
        assert_eq!(policy.want(2), 4);
    }

    #[test]
    fn short_tasks_ask_for_a_full_batch() {
        let mut policy = ReceivePolicy::new(2, None, VISIBILITY);
        after(&mut policy, Duration::from_micros(300), 3);
        assert_eq!(policy.prefetch(), MAX_BATCH);
        assert_eq!(policy.want(1), MAX_BATCH);
        assert_eq!(policy.want(2), MAX_BATCH, "never more than SQS returns in one receive");
    }

    #[test]
    fn long_tasks_ask_only_for_free_slots() {
        let mut policy = ReceivePolicy::new(4, None, VISIBILITY);
        after(&mut policy, Duration::from_secs(20), 3);
        assert_eq!(policy.prefetch(), 0);
        assert_eq!(policy.want(1), 1);
        assert_eq!(policy.want(3), 3);
    }

    #[test]
    fn the_depth_is_what_the_slots_start_within_the_hold_budget() {
        let mut policy = ReceivePolicy::new(2, None, VISIBILITY);
        // Two slots of 400 ms tasks start five tasks a second.
        after(&mut policy, Duration::from_millis(400), 1);
        assert_eq!(policy.prefetch(), 5);
        assert_eq!(policy.want(1), 6);
    }

    #[test]
    fn a_short_visibility_timeout_bounds_the_hold() {
        let mut policy = ReceivePolicy::new(1, None, Duration::from_secs(2));
        after(&mut policy, Duration::from_millis(100), 1);
        // Half a second of waiting at most, not a full second: five, not ten.
        assert_eq!(policy.prefetch(), 5);
    }

    #[test]
    fn the_average_follows_a_change_in_task_time() {
        let mut policy = ReceivePolicy::new(2, None, VISIBILITY);
        after(&mut policy, Duration::from_millis(1), 20);
        assert_eq!(policy.prefetch(), MAX_BATCH);
        after(&mut policy, Duration::from_secs(10), 20);
        assert_eq!(policy.prefetch(), 0, "tasks became long: {:?}", policy.task_time());
        after(&mut policy, Duration::from_millis(1), 30);
        assert_eq!(policy.prefetch(), MAX_BATCH, "and short again: {:?}", policy.task_time());
    }

    #[test]
    fn one_slow_task_among_short_ones_does_not_empty_the_buffer() {
        let mut policy = ReceivePolicy::new(2, None, VISIBILITY);
        after(&mut policy, Duration::from_millis(2), 10);
        policy.observe(Duration::from_millis(500));
        assert_eq!(policy.prefetch(), MAX_BATCH, "{:?}", policy.task_time());
    }

    #[test]
    fn an_explicit_prefetch_is_kept() {
        let mut policy = ReceivePolicy::new(10, Some(10), VISIBILITY);
        after(&mut policy, Duration::from_secs(60), 3);
        assert_eq!(policy.prefetch(), 10);
        assert_eq!(policy.want(1), MAX_BATCH);
        let mut none = ReceivePolicy::new(2, Some(0), VISIBILITY);
        after(&mut none, Duration::from_micros(1), 3);
        assert_eq!(none.want(1), 1, "prefetch 0 holds only what it runs");
    }

    #[test]
    fn the_queue_that_delivered_last_is_waited_on() {
        let now = Instant::now();
        let ago = |ms: u64| Some(now - Duration::from_millis(ms));
        for previous in [0, 1] {
            assert_eq!(long_polled([ago(10), None], previous, now), 0, "a one-stage job: the task queue");
            assert_eq!(long_polled([None, ago(10)], previous, now), 1);
            assert_eq!(long_polled([ago(500), ago(10)], previous, now), 1, "the later of two");
            assert_eq!(long_polled([ago(10), ago(500)], previous, now), 0);
        }
    }

    #[test]
    fn an_idle_worker_alternates_its_long_polls() {
        let now = Instant::now();
        let ago = |secs: u64| Some(now - Duration::from_secs(secs));
        assert_eq!(long_polled([None, None], 1, now), 0, "a new worker starts on the task queue");
        assert_eq!(long_polled([None, None], 0, now), 1);
        assert_eq!(long_polled([ago(60), ago(30)], 1, now), 0, "nothing for a while");
        assert_eq!(long_polled([ago(60), ago(30)], 0, now), 1);
        assert_eq!(long_polled([ago(60), ago(1)], 1, now), 1, "the next stage is still delivering");
    }

    #[test]
    fn a_worker_with_no_free_slot_still_asks_for_one() {
        let policy = ReceivePolicy::new(1, Some(0), VISIBILITY);
        assert_eq!(policy.want(0), 1);
    }
}
