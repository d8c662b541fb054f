//! The full task-time distribution in log-spaced buckets: task times span milliseconds to
//! hours, so equal-width bins would put nearly every task in the first one. The bounds are
//! fixed (six a decade, 1, 1.5, 2, 3, 5, 7 times a power of ten), so the buckets of two runs
//! line up without rebinning.

use serde::{Deserialize, Serialize};

/// Decades of bounds from 1 ms: the last bucket starts at 7 x 10^8 ms, about eight days,
/// beyond any task.
const DECADES: u32 = 9;

/// Tasks whose time fell in `[low_ms, high_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeBucket {
    /// Lower bound in milliseconds, included.
    pub low_ms: u64,
    /// Upper bound in milliseconds, excluded (`u64::MAX` for the last bucket).
    pub high_ms: u64,
    /// Done tasks in the bucket.
    pub count: u64,
}

/// Every bucket's lower bound, ascending, from 0.
pub fn bounds() -> Vec<u64> {
    let mut bounds = vec![0];
    for decade in 0..DECADES {
        let power = 10u64.pow(decade);
        for tenths in [10, 15, 20, 30, 50, 70] {
            // 1.5 ms is no whole bound: it rounds down onto 1 and is dropped as a duplicate.
            let bound = tenths * power / 10;
            if bounds.last().is_some_and(|&last| last < bound) {
                bounds.push(bound);
            }
        }
    }
    bounds
}

/// The buckets of `durations_ms` (any order), from the first non-empty one to the last,
/// empty ones between included so a chart's axis has no gap; none when there are no tasks.
pub fn histogram(durations_ms: &[u64]) -> Vec<TimeBucket> {
    let bounds = bounds();
    let mut counts = vec![0u64; bounds.len()];
    for &value in durations_ms {
        // Bounds start at 0, so every value has a bucket.
        let bucket = bounds.partition_point(|&low| low <= value).saturating_sub(1);
        counts[bucket] += 1;
    }
    let (Some(first), Some(last)) = (counts.iter().position(|&n| n > 0), counts.iter().rposition(|&n| n > 0)) else {
        return Vec::new();
    };
    (first..=last)
        .map(|i| TimeBucket {
            low_ms: bounds[i],
            high_ms: bounds.get(i + 1).copied().unwrap_or(u64::MAX),
            count: counts[i],
        })
        .collect()
}

/// Two runs' buckets on one axis: every bucket from the lowest of either to the highest,
/// with each run's count (0 where it had none). For drawing a comparison.
pub fn aligned(after: &[TimeBucket], before: &[TimeBucket]) -> Vec<(TimeBucket, u64)> {
    let lows = after.iter().chain(before).map(|b| b.low_ms);
    let (Some(low), Some(high)) = (lows.clone().min(), lows.max()) else {
        return Vec::new();
    };
    let count_in = |buckets: &[TimeBucket], low_ms| buckets.iter().find(|b| b.low_ms == low_ms).map_or(0, |b| b.count);
    let bounds = bounds();
    bounds
        .iter()
        .enumerate()
        .filter(|(_, &b)| b >= low && b <= high)
        .map(|(i, &low_ms)| {
            let high_ms = bounds.get(i + 1).copied().unwrap_or(u64::MAX);
            (TimeBucket { low_ms, high_ms, count: count_in(after, low_ms) }, count_in(before, low_ms))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_log_spaced_and_ascending() {
        let bounds = bounds();
        assert_eq!(bounds[..12], [0, 1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70]);
        assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(bounds.last(), Some(&700_000_000));
    }

    #[test]
    fn every_task_lands_in_exactly_one_bucket() {
        let durations = [0, 1, 1, 2, 14, 15, 16, 999, 1_000, 3_600_000, u64::MAX];
        let buckets = histogram(&durations);
        assert_eq!(buckets.iter().map(|b| b.count).sum::<u64>(), durations.len() as u64, "sums match");
        for &value in &durations {
            let holding = buckets.iter().filter(|b| b.low_ms <= value && (value < b.high_ms || b.high_ms == u64::MAX));
            assert_eq!(holding.count(), 1, "{value} in one bucket");
        }
        assert!(buckets.windows(2).all(|w| w[0].high_ms == w[1].low_ms), "contiguous");
        let at = |low| buckets.iter().find(|b| b.low_ms == low).map(|b| b.count);
        assert_eq!((at(0), at(1), at(10), at(15), at(700)), (Some(1), Some(2), Some(1), Some(2), Some(1)));
        assert_eq!(buckets.last().map(|b| (b.high_ms, b.count)), Some((u64::MAX, 1)));
    }

    #[test]
    fn the_buckets_run_from_the_first_task_to_the_last() {
        let buckets = histogram(&[120, 4_000]);
        assert_eq!(buckets.first().map(|b| (b.low_ms, b.high_ms)), Some((100, 150)));
        assert_eq!(buckets.last().map(|b| (b.low_ms, b.high_ms)), Some((3_000, 5_000)));
        assert_eq!(buckets.iter().filter(|b| b.count > 0).count(), 2);
        assert!(histogram(&[]).is_empty());
    }

    #[test]
    fn two_runs_line_up() {
        let after = histogram(&[120, 130]);
        let before = histogram(&[40, 2_000]);
        let both = aligned(&after, &before);
        assert_eq!(both.first().map(|(b, _)| b.low_ms), Some(30));
        assert_eq!(both.last().map(|(b, _)| b.low_ms), Some(2_000));
        assert_eq!(both.iter().map(|(b, _)| b.count).sum::<u64>(), 2);
        assert_eq!(both.iter().map(|(_, before)| before).sum::<u64>(), 2);
        assert!(aligned(&[], &[]).is_empty());
    }
}
