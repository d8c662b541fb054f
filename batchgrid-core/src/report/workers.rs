//! The per-worker timeline: each worker's busy time in each of the report's time slots,
//! spread exactly from the analytics store's per-slot sums, for at most [`MAX_WORKERS`]
//! workers (the busiest); the others are summed into one row so a page of a thousand-instance
//! run stays small.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::slots::Slots;
use crate::analytics::WorkerActivity;

/// At most this many workers get a row of their own.
pub const MAX_WORKERS: usize = 64;

/// One worker's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRow {
    /// The worker.
    pub worker_id: String,
    /// Attempts it ran (started) during the job.
    pub attempts: u64,
    /// Milliseconds spent running attempts in each slot (above the slot's width when it ran
    /// several at once).
    pub busy_ms: Vec<u64>,
}

/// The workers beyond [`MAX_WORKERS`], summed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherWorkers {
    /// How many workers.
    pub workers: u64,
    /// Attempts they ran.
    pub attempts: u64,
    /// Their busy milliseconds in each slot, summed.
    pub busy_ms: Vec<u64>,
}

/// Busy time per worker and slot over the job's run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerTimeline {
    /// Width of each slot in milliseconds (the throughput's slots).
    pub slot_ms: u64,
    /// The busiest workers, by id.
    pub workers: Vec<WorkerRow>,
    /// Everyone else, when there were more than [`MAX_WORKERS`].
    pub others: Option<OtherWorkers>,
}

impl WorkerTimeline {
    /// Spreads the store's per-slot sums (`activity`, computed with `slots`' start and width)
    /// over the slots: the attempts of a group that started and ended in one slot add their
    /// durations to it; those that crossed slots fill the slots between and add the parts
    /// before their first slot's end and after their last slot's start. Every attempt's
    /// time is counted once, in the slots it ran in.
    pub fn spread(slots: &Slots, activity: &[WorkerActivity]) -> Self {
        let width = i64::try_from(slots.width).unwrap_or(i64::MAX);
        let mut rows: BTreeMap<&str, WorkerRow> = BTreeMap::new();
        for group in activity {
            let row = rows.entry(&group.worker_id).or_insert_with(|| WorkerRow {
                worker_id: group.worker_id.clone(),
                attempts: 0,
                busy_ms: vec![0; slots.count],
            });
            row.attempts += group.attempts;
            let n = i64::try_from(group.attempts).unwrap_or(i64::MAX);
            let (first, last) = (slots.clamp(group.start_slot), slots.clamp(group.end_slot));
            let add = |busy: &mut Vec<u64>, slot: usize, ms: i64| busy[slot] += u64::try_from(ms).unwrap_or(0);
            if last <= first {
                add(&mut row.busy_ms, first, group.ended_sum - group.started_sum);
                continue;
            }
            let slot_start = |slot: usize| i64::try_from(slot).unwrap_or(i64::MAX).saturating_mul(width);
            add(&mut row.busy_ms, first, n.saturating_mul(slot_start(first + 1)) - group.started_sum);
            for slot in first + 1..last {
                add(&mut row.busy_ms, slot, n.saturating_mul(width));
            }
            add(&mut row.busy_ms, last, group.ended_sum - n.saturating_mul(slot_start(last)));
        }
        let mut rows: Vec<WorkerRow> = rows.into_values().collect();
        // The busiest first, to keep; ties by id so the choice is stable.
        rows.sort_by(|a, b| busy(b).cmp(&busy(a)).then_with(|| a.worker_id.cmp(&b.worker_id)));
        let rest = rows.split_off(rows.len().min(MAX_WORKERS));
        rows.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        let others = (!rest.is_empty()).then(|| OtherWorkers {
            workers: rest.len() as u64,
            attempts: rest.iter().map(|r| r.attempts).sum(),
            busy_ms: (0..slots.count).map(|slot| rest.iter().map(|r| r.busy_ms[slot]).sum()).collect(),
        });
        Self { slot_ms: slots.width, workers: rows, others }
    }

    /// Whether there is nothing to draw.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }
}

fn busy(row: &WorkerRow) -> u64 {
    row.busy_ms.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the store's GROUP BY returns for these (worker, started, ended) spans.
    fn grouped(slots: &Slots, spans: &[(&str, i64, i64)]) -> Vec<WorkerActivity> {
        let width = slots.width as i64;
        let mut groups: BTreeMap<(String, i64, i64), WorkerActivity> = BTreeMap::new();
        for &(worker, started, ended) in spans {
            let (s, e) = ((started - slots.start) / width, (ended - slots.start) / width);
            let group = groups.entry((worker.to_owned(), s, e)).or_insert_with(|| WorkerActivity {
                worker_id: worker.to_owned(),
                start_slot: s,
                end_slot: e,
                attempts: 0,
                started_sum: 0,
                ended_sum: 0,
            });
            group.attempts += 1;
            group.started_sum += started - slots.start;
            group.ended_sum += ended - slots.start;
        }
        groups.into_values().collect()
    }

    #[test]
    fn every_busy_millisecond_lands_in_the_slot_it_ran_in() {
        let slots = Slots::over(0, 1_000);
        assert_eq!((slots.width, slots.count), (9, 112));
        let spans = [("w1", 0, 5), ("w1", 3, 9), ("w1", 4, 30), ("w2", 100, 991), ("w2", 17, 19), ("w1", 8, 10)];
        let timeline = WorkerTimeline::spread(&slots, &grouped(&slots, &spans));
        assert_eq!(timeline.workers.len(), 2);
        for row in &timeline.workers {
            let expected: i64 = spans.iter().filter(|s| s.0 == row.worker_id).map(|s| s.2 - s.1).sum();
            assert_eq!(busy(row) as i64, expected, "{}: sums match", row.worker_id);
            assert_eq!(row.busy_ms.len(), slots.count);
        }
        // Slot by slot, against a millisecond-by-millisecond count.
        for row in &timeline.workers {
            for (slot, &ms) in row.busy_ms.iter().enumerate() {
                let (low, high) = (slot as i64 * 9, (slot as i64 + 1) * 9);
                let expected: i64 =
                    spans.iter().filter(|s| s.0 == row.worker_id).map(|s| (s.2.min(high) - s.1.max(low)).max(0)).sum();
                assert_eq!(ms as i64, expected, "{} slot {slot}", row.worker_id);
            }
        }
        assert_eq!(timeline.workers[0].attempts, 4);
        assert!(timeline.others.is_none());
    }

    #[test]
    fn workers_beyond_the_limit_are_summed() {
        let slots = Slots::over(0, 100);
        let names: Vec<String> = (0..MAX_WORKERS + 6).map(|i| format!("w{i:03}")).collect();
        // Worker i is busy i + 1 ms, so the six least busy are the ones summed.
        let spans: Vec<(&str, i64, i64)> =
            names.iter().enumerate().map(|(i, n)| (n.as_str(), 0, i as i64 + 1)).collect();
        let timeline = WorkerTimeline::spread(&slots, &grouped(&slots, &spans));
        assert_eq!(timeline.workers.len(), MAX_WORKERS);
        assert_eq!(timeline.workers.first().map(|r| r.worker_id.as_str()), Some("w006"));
        let others = timeline.others.expect("summed");
        assert_eq!((others.workers, others.attempts), (6, 6));
        assert_eq!(others.busy_ms.iter().sum::<u64>(), 1 + 2 + 3 + 4 + 5 + 6);
        let total: u64 = timeline.workers.iter().map(busy).sum::<u64>() + others.busy_ms.iter().sum::<u64>();
        assert_eq!(total as i64, spans.iter().map(|s| s.2 - s.1).sum::<i64>(), "sums match");
        assert!(WorkerTimeline::spread(&slots, &[]).is_empty());
    }
}
