//! What a fire time does while a run of the same schedule is still going.
//!
//! - `skip` (the default): the occurrence is recorded as skipped and does not run;
//! - `queue`: it waits, and starts when every earlier run has ended (queued occurrences start
//!   one at a time, oldest first);
//! - `cancel_previous`: the running ones are cancelled and it starts;
//! - `allow`: it starts beside them.

use serde::{Deserialize, Serialize};

/// The overlap policy of a schedule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Do not run while a previous run is going.
    #[default]
    Skip,
    /// Run after the previous runs end.
    Queue,
    /// Cancel the previous runs, then run.
    CancelPrevious,
    /// Run beside the previous runs.
    Allow,
}

/// What to do with an occurrence that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlapDecision<J> {
    /// Submit its job now.
    Start,
    /// Record it as skipped; no job.
    Skip,
    /// Keep it waiting until the runs ahead of it have ended.
    Queue,
    /// Cancel these running jobs, then submit.
    CancelThenStart(Vec<J>),
}

/// Decides for an occurrence that is due, given the schedule's jobs still running (`running`)
/// and its occurrences already waiting (`queued`).
pub fn decide<J: Clone>(policy: Overlap, running: &[J], queued: usize) -> OverlapDecision<J> {
    if running.is_empty() && queued == 0 {
        return OverlapDecision::Start;
    }
    match policy {
        Overlap::Skip if running.is_empty() => OverlapDecision::Start,
        Overlap::Skip => OverlapDecision::Skip,
        // Behind the runs and behind the occurrences already waiting: order is kept.
        Overlap::Queue => OverlapDecision::Queue,
        Overlap::CancelPrevious if running.is_empty() => OverlapDecision::Start,
        Overlap::CancelPrevious => OverlapDecision::CancelThenStart(running.to_vec()),
        Overlap::Allow => OverlapDecision::Start,
    }
}

/// Whether the oldest waiting occurrence may start now: only once no run is going.
pub fn may_start_queued(running: usize) -> bool {
    running == 0
}
