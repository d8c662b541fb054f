//! Admission records in the analytics store: each job's priority and pause flag, and the tasks
//! waiting to be admitted to the queue (see [`crate::manager`]'s admission).
//!
//! # Contract
//! - A pending task is keyed by (job, stage, task). `add_pending` adds only tasks not known yet
//!   (pending or admitted), so a split run again adds nothing twice.
//! - `next_pending` returns a job's pending tasks, later stages first (tasks given back while
//!   their job was paused), then first-stage tasks in `seq` order; it changes nothing.
//! - `mark_admitted` moves pending tasks to admitted and returns how many it moved: of two
//!   managers marking the same tasks, each task is counted by one. A first-stage task stays
//!   known as admitted; a later-stage one is forgotten.
//! - `return_pending` makes a task pending again (admitted or unknown; a pending one stays).
//! - `requeue_unsettled` makes every admitted first-stage task that has no done or failed
//!   record pending again: tasks lost from the queue.
//! - The counters of [`JobAdmission`] stay exact under all of these, from any number of
//!   processes at once: they move in the same transaction as the rows they count.
//! - `set_paused` and `set_priority` change only a job that has not ended, and each change is
//!   an entry in the job's history, with the job's state as both `from` and `to`. Setting what
//!   is already set changes nothing and records nothing.
//! - `clear_pending` forgets an ended job's tasks.
//!
//! Pausing is a flag here, not a [`super::JobState`]: see there why.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::AnalyticsError;

/// The priority of a job that names none: the middle, so jobs can be put before or after it.
pub const DEFAULT_PRIORITY: u8 = 50;
/// The highest priority.
pub const MAX_PRIORITY: u8 = 100;

/// A task waiting to be admitted to the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTask {
    /// Stage position (0 unless a later-stage task was given back).
    pub stage: u32,
    /// Task id within the stage.
    pub task_id: String,
    /// Order within the job's first stage: the chunk's position in the input.
    pub seq: u64,
    /// The queue message, as it will be sent.
    pub body: String,
}

/// One job's admission figures, as the manager reads them every pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobAdmission {
    /// Job id.
    pub job_id: String,
    /// 0..=100, higher first.
    pub priority: u8,
    /// Whether the job is paused.
    pub paused: bool,
    /// Tasks waiting to be admitted.
    pub pending: u64,
    /// First-stage tasks admitted (sent to the queue) so far.
    pub admitted: u64,
    /// First-stage tasks done or failed for good.
    pub settled: u64,
    /// When the job was submitted, Unix milliseconds (ties are broken by it).
    pub submitted_at: i64,
}

impl JobAdmission {
    /// First-stage tasks admitted and not yet settled: queued, running, or waiting to retry.
    pub fn outstanding(&self) -> u64 {
        self.admitted.saturating_sub(self.settled)
    }
}

/// Where pending tasks and each job's priority and pause flag are kept; see the module docs.
#[async_trait]
pub trait AdmissionStore: Send + Sync {
    /// Records a new job's priority (an existing record is kept).
    async fn init_admission(&self, job_id: &str, priority: u8) -> Result<(), AnalyticsError>;
    /// Adds tasks as pending, skipping those already known; returns how many were added.
    async fn add_pending(&self, job_id: &str, tasks: &[PendingTask]) -> Result<u64, AnalyticsError>;
    /// Makes one task pending again (a worker gave it back).
    async fn return_pending(&self, job_id: &str, task: &PendingTask) -> Result<(), AnalyticsError>;
    /// Up to `max` of a job's pending tasks, later stages first, then in `seq` order.
    async fn next_pending(&self, job_id: &str, max: usize) -> Result<Vec<PendingTask>, AnalyticsError>;
    /// Marks (stage, task) pairs of a job admitted; returns how many were pending.
    async fn mark_admitted(&self, job_id: &str, tasks: &[(u32, String)]) -> Result<u64, AnalyticsError>;
    /// The figures of every job that has not ended, oldest first.
    async fn admissions(&self) -> Result<Vec<JobAdmission>, AnalyticsError>;
    /// One job's figures; `None` for an unknown job.
    async fn admission(&self, job_id: &str) -> Result<Option<JobAdmission>, AnalyticsError>;
    /// Pauses or resumes a job that has not ended, recording it in its history; whether it
    /// changed. An unknown job is an error.
    async fn set_paused(&self, job_id: &str, paused: bool, actor: &str) -> Result<bool, AnalyticsError>;
    /// Sets the priority of a job that has not ended, recording it in its history; whether
    /// it changed. An unknown job is an error.
    async fn set_priority(&self, job_id: &str, priority: u8, actor: &str) -> Result<bool, AnalyticsError>;
    /// Makes admitted first-stage tasks without a settled record pending again; how many.
    async fn requeue_unsettled(&self, job_id: &str) -> Result<u64, AnalyticsError>;
    /// Forgets a job's pending and admitted tasks.
    async fn clear_pending(&self, job_id: &str) -> Result<(), AnalyticsError>;
}

/// The history reason of a pause or resume.
pub(crate) fn pause_reason(paused: bool) -> &'static str {
    if paused {
        "paused: no new task starts until resumed"
    } else {
        "resumed"
    }
}

/// The history reason of a priority change.
pub(crate) fn priority_reason(from: i64, to: u8) -> String {
    format!("priority {from} -> {to}")
}

/// A stored priority, clamped into range.
pub(crate) fn stored_priority(value: i64) -> u8 {
    u8::try_from(value.clamp(0, i64::from(MAX_PRIORITY))).unwrap_or(DEFAULT_PRIORITY)
}
