//! Rollups of done tasks, kept beside the task rows so a page never scans a job's tasks: the
//! task-time distribution per stage on log-spaced buckets, and tasks done per second.
//!
//! `record_attempts` adds a task to both in the same transaction that makes it `done` (and
//! only then: `done` is final, so a task is counted once). A job of a million tasks is then
//! read in a few hundred rows (its buckets) and one row per second it ran.
//!
//! Buckets are those of an HDR histogram with 8 sub-buckets per power of two: exact below
//! 16 ms, and at most 1/8 wide above, so a percentile read from them is within about 6%.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::AttemptRecord;

/// Width of a completion slot in milliseconds: tasks done per second over time.
pub const SLOT_MS: i64 = 1000;

/// Sub-buckets per power of two (a power of two itself).
const SUB_BUCKETS: u64 = 8;
/// log2 of [`SUB_BUCKETS`].
const SUB_BITS: u32 = 3;

/// The bucket of a task time in milliseconds.
pub fn bucket_of(ms: u64) -> u32 {
    if ms < 2 * SUB_BUCKETS {
        return ms as u32;
    }
    let exponent = 63 - ms.leading_zeros(); // >= SUB_BITS + 1
    let sub = (ms >> (exponent - SUB_BITS)) & (SUB_BUCKETS - 1);
    (exponent - SUB_BITS + 1) * SUB_BUCKETS as u32 + sub as u32
}

/// The times a bucket holds: `[low, high)` in milliseconds.
pub fn bucket_bounds(bucket: u32) -> (u64, u64) {
    let bucket = u64::from(bucket);
    if bucket < 2 * SUB_BUCKETS {
        return (bucket, bucket + 1);
    }
    let shift = (bucket / SUB_BUCKETS - 1).min(64);
    let sub = bucket % SUB_BUCKETS;
    // In u128: the top bucket's end is 2^64.
    let edge = |at: u64| u64::try_from(u128::from(at) << shift).unwrap_or(u64::MAX);
    (edge(SUB_BUCKETS + sub), edge(SUB_BUCKETS + sub + 1))
}

/// A task-time distribution: tasks and their summed time per bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeHistogram {
    /// bucket → (tasks, summed milliseconds).
    pub buckets: BTreeMap<u32, (u64, u64)>,
}

impl TimeHistogram {
    /// The histogram of exact durations (the report's, built once from every task).
    pub fn of(durations_ms: &[u64]) -> Self {
        let mut histogram = Self::default();
        for &ms in durations_ms {
            histogram.add(bucket_of(ms), 1, ms);
        }
        histogram
    }

    /// Adds `tasks` tasks of `total_ms` to a bucket.
    pub fn add(&mut self, bucket: u32, tasks: u64, total_ms: u64) {
        let entry = self.buckets.entry(bucket).or_default();
        entry.0 += tasks;
        entry.1 += total_ms;
    }

    /// Adds every bucket of `other` (a job's stages into the job's).
    pub fn merge(&mut self, other: &TimeHistogram) {
        for (&bucket, &(tasks, total)) in &other.buckets {
            self.add(bucket, tasks, total);
        }
    }

    /// Tasks counted.
    pub fn count(&self) -> u64 {
        self.buckets.values().map(|&(tasks, _)| tasks).sum()
    }

    /// Their summed time in milliseconds.
    pub fn sum_ms(&self) -> u64 {
        self.buckets.values().map(|&(_, total)| total).sum()
    }

    /// The time below which a fraction `q` of the tasks finished, interpolated within its
    /// bucket (exact below 16 ms); `None` when empty.
    pub fn percentile(&self, q: f64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        // The rank of the task sought, 1-based, as Percentiles::of_sorted picks it.
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for (&bucket, &(tasks, _)) in &self.buckets {
            if seen + tasks >= rank {
                let (low, high) = bucket_bounds(bucket);
                if high - low == 1 {
                    return Some(low);
                }
                let within = (rank - seen) as f64 / tasks as f64;
                return Some(low + ((high - low) as f64 * within) as u64);
            }
            seen += tasks;
        }
        None
    }

    /// The upper end of the highest bucket holding a task (exact below 16 ms).
    pub fn max_ms(&self) -> Option<u64> {
        self.buckets.keys().next_back().map(|&bucket| {
            let (low, high) = bucket_bounds(bucket);
            if high - low == 1 {
                low
            } else {
                high
            }
        })
    }

    /// Tasks that took at most `bound_ms` (whole buckets only: one that straddles the bound
    /// counts above it), for a Prometheus `le` bucket.
    pub fn at_most(&self, bound_ms: u64) -> u64 {
        self.buckets
            .iter()
            .filter(|(&bucket, _)| bucket_bounds(bucket).1 <= bound_ms.saturating_add(1))
            .map(|(_, &(tasks, _))| tasks)
            .sum()
    }
}

/// One stage's distribution.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageTimes {
    /// The stage's position.
    pub stage: u32,
    /// Its done tasks' times.
    pub histogram: TimeHistogram,
}

/// Bucket rows `(stage, bucket, tasks, summed ms)`, ordered by stage, grouped into each
/// stage's histogram: what both stores' `task_times` return.
pub(crate) fn group_by_stage(rows: impl IntoIterator<Item = (u32, u32, u64, u64)>) -> Vec<StageTimes> {
    let mut times: Vec<StageTimes> = Vec::new();
    for (stage, bucket, tasks, total_ms) in rows {
        if times.last().map(|t| t.stage) != Some(stage) {
            times.push(StageTimes { stage, histogram: TimeHistogram::default() });
        }
        if let Some(last) = times.last_mut() {
            last.histogram.add(bucket, tasks, total_ms);
        }
    }
    times
}

/// What a batch adds to the rollups, from the attempts that make tasks `done`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RollupDelta<'a> {
    /// (job, stage, bucket) → (tasks, summed milliseconds), in key order (the lock order).
    pub buckets: BTreeMap<(&'a str, u32, u32), (i64, i64)>,
    /// (job, slot start) → tasks.
    pub slots: BTreeMap<(&'a str, i64), i64>,
}

impl<'a> RollupDelta<'a> {
    /// Counts each newly done task once.
    pub fn of(newly_done: &[&'a AttemptRecord]) -> Self {
        let mut delta = Self::default();
        for attempt in newly_done {
            let ms = u64::try_from(attempt.ended_at - attempt.started_at).unwrap_or(0);
            let bucket = delta.buckets.entry((attempt.job_id.as_str(), attempt.stage, bucket_of(ms))).or_default();
            bucket.0 += 1;
            bucket.1 += i64::try_from(ms).unwrap_or(i64::MAX);
            *delta.slots.entry((attempt.job_id.as_str(), slot_of(attempt.ended_at))).or_default() += 1;
        }
        delta
    }
}

/// The start of the slot holding `at` (Unix milliseconds).
pub fn slot_of(at: i64) -> i64 {
    at.div_euclid(SLOT_MS) * SLOT_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_line_without_gaps() {
        let mut expected_low = 0;
        for bucket in 0..400 {
            let (low, high) = bucket_bounds(bucket);
            assert_eq!(low, expected_low, "bucket {bucket} starts where the one before ended");
            assert!(high > low);
            assert_eq!(bucket_of(low), bucket, "{low} ms");
            assert_eq!(bucket_of(high - 1), bucket, "{} ms", high - 1);
            // At most an eighth wide, past the exact ones.
            assert!(low < 16 || (high - low) * 8 <= low, "bucket {bucket}: {low}..{high}");
            expected_low = high;
            if high >= 1 << 50 {
                break;
            }
        }
        assert_eq!(bucket_of(u64::MAX), bucket_of(u64::MAX - 1), "the largest time has a bucket");
    }

    #[test]
    fn percentiles_from_buckets_are_within_an_eighth() {
        let durations: Vec<u64> = (1..=10_000u64).map(|i| i * 37 % 50_000 + 1).collect();
        let mut sorted = durations.clone();
        sorted.sort_unstable();
        let histogram = TimeHistogram::of(&durations);
        assert_eq!(histogram.count(), 10_000);
        assert_eq!(histogram.sum_ms(), durations.iter().sum::<u64>());
        for q in [0.5, 0.9, 0.99, 1.0] {
            let exact = crate::report::Percentiles::of_sorted(&sorted);
            let exact = match q {
                0.5 => exact.p50,
                0.9 => exact.p90,
                0.99 => exact.p99,
                _ => exact.max,
            };
            let estimate = histogram.percentile(q).unwrap_or(0);
            let error = (estimate as f64 - exact as f64).abs() / exact as f64;
            assert!(error <= 0.125, "p{q}: {estimate} vs {exact}");
        }
        assert_eq!(TimeHistogram::default().percentile(0.5), None);
        assert_eq!(TimeHistogram::of(&[3, 3, 7]).percentile(1.0), Some(7), "exact below 16 ms");
    }

    #[test]
    fn prometheus_buckets_count_whole_buckets() {
        let histogram = TimeHistogram::of(&[50, 99, 100, 2_000]);
        // 96..104 straddles 100: counted above it.
        assert_eq!(histogram.at_most(100), 1);
        assert_eq!(histogram.at_most(2_500), 4);
    }

    #[test]
    fn a_batch_counts_each_done_task_in_its_bucket_and_second() {
        let attempt = |task: &str, started: i64, ended: i64| AttemptRecord {
            job_id: "j".into(),
            stage: 0,
            task_id: task.into(),
            attempt: 1,
            worker_id: "w".into(),
            started_at: started,
            ended_at: ended,
            outcome: super::super::AttemptOutcome::Succeeded,
            exit_status: Some(0),
            bytes_in: 0,
            bytes_out: 0,
            error: None,
        };
        let (a, b, c) = (attempt("a", 1_000, 1_100), attempt("b", 1_500, 1_600), attempt("c", 0, 2_500));
        let delta = RollupDelta::of(&[&a, &b, &c]);
        assert_eq!(delta.slots, BTreeMap::from([(("j", 1_000), 2), (("j", 2_000), 1)]));
        assert_eq!(delta.buckets[&("j", 0, bucket_of(100))], (2, 200));
        assert_eq!(delta.buckets[&("j", 0, bucket_of(2_500))], (1, 2_500));
        assert_eq!(slot_of(-1), -1_000, "times before 1970 still land in a slot");
    }
}
