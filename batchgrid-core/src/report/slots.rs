//! The report's time axis and throughput: a job's run cut into at most [`MAX_SLOTS`] equal
//! slots (enough for a chart's width, small enough to store with every report), and the tasks
//! done in each.

use serde::{Deserialize, Serialize};

/// At most this many slots, whatever the job's length.
pub const MAX_SLOTS: u64 = 120;

/// Equal time slots from `start` covering a job's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots {
    /// Start of the first slot, Unix milliseconds.
    pub start: i64,
    /// Width of a slot in milliseconds, at least 1.
    pub width: u64,
    /// How many slots, at least 1.
    pub count: usize,
}

impl Slots {
    /// The fewest slots of a whole number of milliseconds, at most [`MAX_SLOTS`], that cover
    /// `start` to `end` (an empty or reversed span gets one slot of a millisecond).
    pub fn over(start: i64, end: i64) -> Self {
        let span = u64::try_from(end.saturating_sub(start)).unwrap_or(0).max(1);
        let width = span.div_ceil(MAX_SLOTS).max(1);
        let count = usize::try_from(span.div_ceil(width)).unwrap_or(1).max(1);
        Self { start, width, count }
    }

    /// The slot holding `time`; a time outside the span (a worker's clock ahead of or behind
    /// the manager's) counts in the first or the last slot.
    pub fn index(&self, time: i64) -> usize {
        let offset = u64::try_from(time.saturating_sub(self.start)).unwrap_or(0);
        usize::try_from(offset / self.width).unwrap_or(usize::MAX).min(self.count - 1)
    }

    /// Clamps a slot number computed elsewhere (the analytics store's) into the span.
    pub fn clamp(&self, slot: i64) -> usize {
        usize::try_from(slot.max(0)).unwrap_or(usize::MAX).min(self.count - 1)
    }
}

/// Tasks done per slot over the job's run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throughput {
    /// Start of the first slot (the job's submission), Unix milliseconds.
    pub start_ms: i64,
    /// Width of each slot in milliseconds.
    pub slot_ms: u64,
    /// Succeeded attempts that ended in each slot.
    pub done: Vec<u64>,
}

impl Throughput {
    /// Counts `completions` (Unix milliseconds, any order) into `slots`.
    pub fn count(slots: &Slots, completions: &[i64]) -> Self {
        let mut done = vec![0; slots.count];
        for &time in completions {
            done[slots.index(time)] += 1;
        }
        Self { start_ms: slots.start, slot_ms: slots.width, done }
    }

    /// Whether there is nothing to draw (a report stored before throughput was kept, or a
    /// job that did nothing).
    pub fn is_empty(&self) -> bool {
        self.done.iter().all(|&n| n == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cover_the_span_and_never_exceed_the_maximum() {
        for span in [0, 1, 119, 120, 121, 1_000, 3_600_000, 86_400_000 + 7] {
            let slots = Slots::over(5_000, 5_000 + span);
            assert!(slots.count as u64 <= MAX_SLOTS, "{span}: {slots:?}");
            assert!(slots.count as u64 * slots.width >= span as u64, "{span}: {slots:?} covers the span");
            assert!((slots.count as u64 - 1) * slots.width < (span as u64).max(1), "{span}: no empty slot at the end");
        }
        assert_eq!(Slots::over(10, 0), Slots { start: 10, width: 1, count: 1 }, "a reversed span");
    }

    #[test]
    fn every_completion_lands_in_exactly_one_slot() {
        let slots = Slots::over(1_000, 13_000);
        assert_eq!((slots.width, slots.count), (100, 120));
        let times = [1_000, 1_099, 1_100, 7_000, 12_999, 13_000, 500, 99_000];
        let throughput = Throughput::count(&slots, &times);
        assert_eq!(throughput.done.len(), 120);
        assert_eq!(throughput.done.iter().sum::<u64>(), times.len() as u64, "sums match");
        assert_eq!(throughput.done[0], 3, "1,000, 1,099 and the early 500");
        assert_eq!(throughput.done[1], 1);
        assert_eq!(throughput.done[60], 1);
        assert_eq!(throughput.done[119], 3, "12,999, the end itself, and the late 99,000");
        assert!(!throughput.is_empty());
        assert!(Throughput::count(&slots, &[]).is_empty());
        assert!(Throughput::default().is_empty(), "an old report's");
    }
}
