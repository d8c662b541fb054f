//! The analytics store: job state, progress, attempts and worker statistics.
//!
//! # Contract
//! - Task progress is recorded only through `record_attempts`, an upsert keyed by
//!   (job, stage, task): a task whose attempt is recorded twice, or that runs twice, counts once.
//!   The first success wins and is never undone; a later success turns `failed` into `done`
//!   (a redriven dead letter that then succeeds).
//! - An attempt is keyed by (job, stage, task, attempt number); recording it again changes
//!   nothing.
//! - `stages` reports, per stage, how many tasks are done, failed and retrying, and how many are
//!   expected once that is known.
//! - Times are Unix milliseconds.

pub mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use sqlite::SqliteAnalytics;

use crate::spec::StageKind;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted, not yet started.
    Submitted,
    /// Input being staged and cut into tasks.
    Splitting,
    /// Tasks running.
    Running,
    /// Every task of every stage done.
    Completed,
    /// Some task failed for good, or the job could not start.
    Failed,
    /// Stopped on request.
    Cancelled,
}

impl JobState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Submitted => "submitted",
            JobState::Splitting => "splitting",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "submitted" => JobState::Submitted,
            "splitting" => JobState::Splitting,
            "running" => JobState::Running,
            "completed" => JobState::Completed,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }

    /// Whether the job has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed | JobState::Cancelled)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Unique id.
    pub id: String,
    /// The spec's name.
    pub name: String,
    /// Current state.
    pub state: JobState,
    /// The validated spec as JSON.
    pub spec: String,
    /// When it was submitted.
    pub submitted_at: i64,
    /// When it started running.
    pub started_at: Option<i64>,
    /// When it ended.
    pub finished_at: Option<i64>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// A stage as declared when the job is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageRecord {
    /// Position in the job.
    pub stage: u32,
    /// Name from the spec.
    pub name: String,
    /// Map or reduce.
    pub kind: StageKind,
}

/// A stage's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageProgress {
    /// Position in the job.
    pub stage: u32,
    /// Name from the spec.
    pub name: String,
    /// Map or reduce.
    pub kind: StageKind,
    /// Tasks the stage will have, once known.
    pub expected: Option<u64>,
    /// Tasks done.
    pub done: u64,
    /// Tasks failed for good.
    pub failed: u64,
    /// Tasks that failed at least once and are waiting for another attempt.
    pub retrying: u64,
}

impl StageProgress {
    /// Whether every expected task is done or failed.
    pub fn is_finished(&self) -> bool {
        self.expected.is_some_and(|n| self.done + self.failed >= n)
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The task is done.
    Succeeded,
    /// Failed; it will be tried again.
    Retrying,
    /// Failed for the last time; the task is dead-lettered.
    Failed,
}

impl AttemptOutcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Retrying => "retrying",
            AttemptOutcome::Failed => "failed",
        }
    }

    fn task_status(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "done",
            AttemptOutcome::Retrying => "retrying",
            AttemptOutcome::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "succeeded" => AttemptOutcome::Succeeded,
            "retrying" => AttemptOutcome::Retrying,
            "failed" => AttemptOutcome::Failed,
            _ => return None,
        })
    }
}

/// One finished attempt at a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Job id.
    pub job_id: String,
    /// Stage position.
    pub stage: u32,
    /// Task id within the stage.
    pub task_id: String,
    /// Delivery number, from 1.
    pub attempt: u32,
    /// Which worker ran it.
    pub worker_id: String,
    /// Start time.
    pub started_at: i64,
    /// End time.
    pub ended_at: i64,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// A command's exit status, when it has one.
    pub exit_status: Option<i32>,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Error text for failures.
    pub error: Option<String>,
}

/// A task's current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Job id.
    pub job_id: String,
    /// Stage position.
    pub stage: u32,
    /// Task id.
    pub task_id: String,
    /// `retrying`, `done` or `failed`.
    pub status: String,
    /// Attempts so far.
    pub attempts: u32,
    /// Worker of the latest recorded attempt.
    pub worker_id: Option<String>,
    /// Error of the latest failed attempt.
    pub last_error: Option<String>,
    /// Duration of the recorded attempt.
    pub duration_ms: Option<i64>,
}

/// A worker and what it has done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Unique id.
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// When it started.
    pub started_at: i64,
    /// Its latest heartbeat.
    pub last_seen: i64,
    /// `running`, `draining` or `stopped`.
    pub state: String,
    /// Attempts it finished successfully.
    pub tasks_done: u64,
    /// Attempts that failed.
    pub tasks_failed: u64,
}

/// Totals for a job's report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptTotals {
    /// Attempts recorded.
    pub attempts: u64,
    /// Of which failed (retried or final).
    pub failed_attempts: u64,
    /// Bytes read by successful attempts.
    pub bytes_in: u64,
    /// Bytes written by successful attempts.
    pub bytes_out: u64,
}

/// Analytics store errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnalyticsError {
    /// No job with this id.
    #[error("job `{0}` not found")]
    JobNotFound(String),
    /// A stored value could not be read back.
    #[error("corrupt analytics record: {0}")]
    Corrupt(String),
    /// The backend failed.
    #[error("analytics store: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<sqlx::Error> for AnalyticsError {
    fn from(error: sqlx::Error) -> Self {
        AnalyticsError::Backend(Box::new(error))
    }
}

/// Progress and statistics storage; see the module docs for the contract.
#[async_trait]
pub trait AnalyticsStore: Send + Sync + std::fmt::Debug {
    /// Records a new job and its stages (idempotent for the same id).
    async fn create_job(&self, job: &JobRecord, stages: &[StageRecord]) -> Result<(), AnalyticsError>;
    /// Moves a job to `state`, stamping start and end times.
    async fn set_job_state(&self, job_id: &str, state: JobState, error: Option<&str>) -> Result<(), AnalyticsError>;
    /// Records how many tasks a stage will have.
    async fn set_stage_expected(&self, job_id: &str, stage: u32, expected: u64) -> Result<(), AnalyticsError>;
    /// One job.
    async fn job(&self, job_id: &str) -> Result<Option<JobRecord>, AnalyticsError>;
    /// Every job, newest first.
    async fn jobs(&self) -> Result<Vec<JobRecord>, AnalyticsError>;
    /// Progress of every stage of a job, in order.
    async fn stages(&self, job_id: &str) -> Result<Vec<StageProgress>, AnalyticsError>;
    /// Records finished attempts and upserts their tasks' progress, in one transaction.
    async fn record_attempts(&self, attempts: &[AttemptRecord]) -> Result<(), AnalyticsError>;
    /// One task's state.
    async fn task(&self, job_id: &str, stage: u32, task_id: &str) -> Result<Option<TaskRecord>, AnalyticsError>;
    /// Tasks of a job that failed for good.
    async fn failed_tasks(&self, job_id: &str) -> Result<Vec<TaskRecord>, AnalyticsError>;
    /// Every recorded attempt at one task, in order.
    async fn attempts(&self, job_id: &str, stage: u32, task_id: &str) -> Result<Vec<AttemptRecord>, AnalyticsError>;
    /// Durations in milliseconds of the job's done tasks, ascending.
    async fn task_durations(&self, job_id: &str) -> Result<Vec<u64>, AnalyticsError>;
    /// Attempt and byte totals for a job.
    async fn attempt_totals(&self, job_id: &str) -> Result<AttemptTotals, AnalyticsError>;
    /// Records a worker's existence and state (insert or update).
    async fn upsert_worker(&self, worker: &WorkerRecord) -> Result<(), AnalyticsError>;
    /// Every known worker.
    async fn workers(&self) -> Result<Vec<WorkerRecord>, AnalyticsError>;
}
