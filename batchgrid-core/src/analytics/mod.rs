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
//!   expected once that is known. The counters stay exact when several processes record
//!   attempts at the same time.
//! - Request counts are a process's cumulative totals, keyed by (process, service, operation):
//!   `record_requests` keeps the larger of the stored and the reported count, so a late or
//!   repeated report never lowers it. `request_totals` sums them over every process, one entry
//!   per (service, operation), sorted by service then operation in byte order.
//! - A job's state changes only through `transition`, a compare-and-set on its current state:
//!   a state is entered only from the states [`JobState::allowed_from`] names, so terminal states
//!   are never left and a cancel, allowed from every live state, wins over any concurrent
//!   change. Each applied transition appends an entry to the job's `history` in the same
//!   transaction; a refused one changes nothing and returns `false`. The one way back from an
//!   end is `reopen_tasks`, an operator's retry of a failed job's failed tasks, recorded too.
//! - `worker_activity` groups every attempt of a job, whatever its outcome, by worker and by
//!   the slots it started and ended in (its offset from `start` divided by the slot width,
//!   rounded toward zero), with the sums of those offsets: aggregated by the database, so a
//!   long job's report reads about workers x slots rows, not every attempt.
//! - Times are Unix milliseconds.

pub mod admission;
#[cfg(feature = "postgres")]
pub mod credentials;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod rollup;
pub mod running;
pub mod schedules;
pub mod sqlite;
#[cfg(feature = "postgres")]
pub mod tls;

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use admission::{AdmissionStore, JobAdmission, PendingTask, DEFAULT_PRIORITY, MAX_PRIORITY};
#[cfg(feature = "postgres")]
pub use postgres::{PgAnalytics, PoolSettings, DEFAULT_IDLE_TIMEOUT};
pub use rollup::{StageTimes, TimeHistogram};
pub use running::{RunningTask, MAX_RUNNING_RECORDED};
pub use schedules::{OccurrenceRecord, OccurrenceState, ScheduleRecord, ScheduleStore};
pub use sqlite::SqliteAnalytics;

use crate::spec::StageKind;

/// Where a job is in its life.
///
/// Paused is not one of these: it is a flag beside the state ([`AdmissionStore::set_paused`]).
/// A job may be paused while it is still being split or while it runs, and resuming must
/// leave it in whichever it was; the transitions underneath (a split finishing, a deadline, a
/// cancel, which wins over a pause) go on as they are, and every reader of the state (workers,
/// the autoscaler, `active_jobs`) keeps its meaning. A state would need to remember where it
/// came from and would refuse those transitions meanwhile.
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
    /// Every state, in the order a job goes through them (a list's filters, `/metrics`).
    pub const ALL: [JobState; 6] = [
        JobState::Submitted,
        JobState::Splitting,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

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

    /// The states a job may enter `self` from. No terminal state is listed anywhere, so an
    /// ended job stays ended; `cancelled` and `failed` may be entered from every live state.
    pub fn allowed_from(self) -> &'static [JobState] {
        use JobState::*;
        match self {
            Submitted => &[],
            Splitting => &[Submitted],
            Running => &[Submitted, Splitting],
            Completed => &[Running],
            Failed | Cancelled => &[Submitted, Splitting, Running],
        }
    }

    /// Whether a job in `self` may move to `to`.
    pub fn can_move_to(self, to: JobState) -> bool {
        to.allowed_from().contains(&self)
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

/// One entry of a job's history: a state change, with who asked for it and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Position in the job's history, from 1.
    pub seq: u64,
    /// When, Unix milliseconds.
    pub at: i64,
    /// The state left; `None` for the submission.
    pub from: Option<JobState>,
    /// The state entered.
    pub to: JobState,
    /// Why, where given.
    pub reason: Option<String>,
    /// Who asked: `manager`, `operator`, ...
    pub actor: String,
}

/// Who changes a job's state, as recorded in its history.
pub mod actor {
    /// The manager's reconciler.
    pub const MANAGER: &str = "manager";
    /// A person, through the API or the CLI.
    pub const OPERATOR: &str = "operator";
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

impl TaskRecord {
    /// Whether the task has ended for good, done or failed (not waiting for a retry).
    pub fn is_settled(&self) -> bool {
        self.status == "done" || self.status == "failed"
    }
}

/// A worker and what it has done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Tasks it held (running or about to run) at its last heartbeat.
    #[serde(default)]
    pub current_tasks: u32,
    /// Tasks it was running at its last heartbeat, the longest running first (at most
    /// [`MAX_RUNNING_RECORDED`]).
    #[serde(default)]
    pub running: Vec<RunningTask>,
}

/// The grid at one moment: the dashboard's queue depth and workers over time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GridSample {
    /// When (Unix milliseconds).
    pub at: i64,
    /// Messages waiting in the queues.
    pub visible: u64,
    /// Messages received and not yet deleted, or delayed.
    pub in_flight: u64,
    /// Dead letters.
    pub dead: u64,
    /// Workers alive (a heartbeat within the last minute, not stopped).
    pub workers: u64,
    /// Tasks those workers held.
    pub tasks_held: u64,
}

/// The most jobs one list reads.
pub const MAX_JOBS_LISTED: u32 = 500;

/// Which jobs a list shows, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobQuery {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs whose name holds this (case-insensitive).
    pub name: Option<String>,
    /// At most this many (capped at [`MAX_JOBS_LISTED`]).
    pub limit: u32,
}

impl JobQuery {
    /// The `LIKE` pattern of the name filter: lower case, with the pattern's own characters
    /// escaped by `\\` (a name may hold `%` or `_`).
    fn name_pattern(&self) -> Option<String> {
        self.name.as_deref().filter(|name| !name.is_empty()).map(|name| {
            let mut pattern = String::from("%");
            for c in name.to_lowercase().chars() {
                if matches!(c, '%' | '_' | '\\') {
                    pattern.push('\\');
                }
                pattern.push(c);
            }
            pattern.push('%');
            pattern
        })
    }

    /// The limit, capped.
    fn capped_limit(&self) -> i64 {
        i64::from(self.limit.min(MAX_JOBS_LISTED))
    }
}

/// A page of jobs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobList {
    /// Jobs matching the query, in all.
    pub total: u64,
    /// The newest of them, up to the limit.
    pub jobs: Vec<JobRecord>,
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

/// When a job's attempts ran, summed by the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptSpans {
    /// The first attempt's start, Unix milliseconds (`None` before any attempt).
    pub first_start: Option<i64>,
    /// The last attempt's end, Unix milliseconds.
    pub last_end: Option<i64>,
    /// Milliseconds between the two during which no attempt was running.
    pub gaps_ms: u64,
}

/// How many requests one process made to one operation of one service, or, from
/// [`AnalyticsStore::request_totals`], every process together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCount {
    /// The service called, as the SDK names it, e.g. `S3`.
    pub service: String,
    /// The operation called, e.g. `GetObject`.
    pub operation: String,
    /// Requests made (each transmitted attempt counts).
    pub count: u64,
}

/// One worker's attempts at a job that started in one time slot and ended in another, summed:
/// what [`AnalyticsStore::worker_activity`] returns, so a job of a million attempts comes back
/// as about workers x slots rows and the report can still place every busy millisecond.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerActivity {
    /// The worker.
    pub worker_id: String,
    /// Slot the attempts started in: `(started_at - start) / slot_ms`, rounded toward zero.
    pub start_slot: i64,
    /// Slot they ended in, likewise.
    pub end_slot: i64,
    /// How many attempts.
    pub attempts: u64,
    /// Sum of their start times as milliseconds after `start` (offsets, so the sum of a
    /// million Unix times cannot overflow).
    pub started_sum: i64,
    /// Sum of their end times, likewise.
    pub ended_sum: i64,
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
    /// The database's schema is older than this build's (a process that may not migrate).
    #[error(
        "the analytics database's schema is at migration {found}, this build needs {needed}: the job manager \
         applies migrations when it starts"
    )]
    SchemaBehind {
        /// The latest migration applied.
        found: i64,
        /// The latest migration this build has.
        needed: i64,
    },
}

impl From<sqlx::Error> for AnalyticsError {
    fn from(error: sqlx::Error) -> Self {
        AnalyticsError::Backend(Box::new(error))
    }
}

/// Progress and statistics storage, schedules ([`ScheduleStore`]) and admission
/// ([`AdmissionStore`]) included; see the module docs for the contract.
#[async_trait]
pub trait AnalyticsStore: ScheduleStore + AdmissionStore + Send + Sync + std::fmt::Debug {
    /// Records a new job and its stages (idempotent for the same id).
    async fn create_job(&self, job: &JobRecord, stages: &[StageRecord]) -> Result<(), AnalyticsError>;
    /// Moves a job to `to` if its current state allows it (compare-and-set), stamping start and
    /// end times, keeping `reason` as the job's error when it fails or is cancelled, and
    /// recording the change in its history, all in one transaction. Returns whether it applied;
    /// an unknown job is an error.
    async fn transition(
        &self,
        job_id: &str,
        to: JobState,
        reason: Option<&str>,
        actor: &str,
    ) -> Result<bool, AnalyticsError>;
    /// Sends failed tasks back for another run (`job retry`, `job redrive`): each of `tasks`
    /// (stage, task id) that is `failed` becomes `retrying`, its stage's counters moved with
    /// it; a failed job becomes running again, its end and error cleared; a running job stays
    /// running. One history entry (`reason`, `actor`) records it, all in one transaction, the
    /// job's state compare-and-set as in `transition`. Returns how many tasks were reopened, or
    /// `None`, with nothing changed, for a job neither failed nor running; an unknown job is
    /// an error.
    async fn reopen_tasks(
        &self,
        job_id: &str,
        tasks: &[(u32, String)],
        reason: &str,
        actor: &str,
    ) -> Result<Option<u64>, AnalyticsError>;
    /// A job's history, oldest first.
    async fn history(&self, job_id: &str) -> Result<Vec<HistoryEntry>, AnalyticsError>;
    /// Every recorded task of one stage with its status (`retrying`, `done`, `failed`).
    async fn task_statuses(&self, job_id: &str, stage: u32) -> Result<Vec<(String, String)>, AnalyticsError>;
    /// Records how many tasks a stage will have.
    async fn set_stage_expected(&self, job_id: &str, stage: u32, expected: u64) -> Result<(), AnalyticsError>;
    /// One job.
    async fn job(&self, job_id: &str) -> Result<Option<JobRecord>, AnalyticsError>;
    /// Every job, newest first.
    async fn jobs(&self) -> Result<Vec<JobRecord>, AnalyticsError>;
    /// Jobs that have not ended (submitted, splitting, running), oldest first: what the
    /// autoscaler and a restarted manager look at, without reading a year of history.
    async fn active_jobs(&self) -> Result<Vec<JobRecord>, AnalyticsError>;
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
    /// End times (Unix milliseconds) of the job's succeeded attempts, ascending: the
    /// dashboard's tasks-over-time chart.
    async fn completion_times(&self, job_id: &str) -> Result<Vec<i64>, AnalyticsError>;
    /// Mean duration in milliseconds of the job's done tasks, without reading each (the
    /// autoscaler asks every few seconds); `None` before any is done.
    async fn mean_task_millis(&self, job_id: &str) -> Result<Option<u64>, AnalyticsError>;
    /// Attempt and byte totals for a job.
    async fn attempt_totals(&self, job_id: &str) -> Result<AttemptTotals, AnalyticsError>;
    /// When the job's attempts ran: the first start, the last end, and the time between
    /// them that no attempt covered (the report's waiting time).
    async fn attempt_spans(&self, job_id: &str) -> Result<AttemptSpans, AnalyticsError>;
    /// Records a worker's existence and state (insert or update).
    async fn upsert_worker(&self, worker: &WorkerRecord) -> Result<(), AnalyticsError>;
    /// Every known worker.
    async fn workers(&self) -> Result<Vec<WorkerRecord>, AnalyticsError>;
    /// Asks a worker to drain (`worker drain`): take no new task, exit after its current
    /// ones. The first request's time is kept; `false` if no such worker is known.
    async fn request_drain(&self, worker_id: &str, at: i64) -> Result<bool, AnalyticsError>;
    /// Whether a drain of this worker has been asked for (the worker polls it).
    async fn drain_requested(&self, worker_id: &str) -> Result<bool, AnalyticsError>;
    /// Records a process's cumulative request counts; a count lower than the stored one (or a
    /// lower duplicate within `counts`) changes nothing.
    async fn record_requests(&self, process_id: &str, counts: &[RequestCount]) -> Result<(), AnalyticsError>;
    /// Request counts summed over every process, sorted by service then operation.
    async fn request_totals(&self) -> Result<Vec<RequestCount>, AnalyticsError>;
    /// The newest `query.limit` jobs in `query.state` whose name holds `query.name`
    /// (case-insensitive), and how many match in all: the dashboard's list, without reading
    /// every job.
    async fn job_list(&self, query: &JobQuery) -> Result<JobList, AnalyticsError>;
    /// Progress of every stage of each of `job_ids` (at most [`MAX_JOBS_LISTED`]), in one read.
    async fn stages_of(&self, job_ids: &[String]) -> Result<HashMap<String, Vec<StageProgress>>, AnalyticsError>;
    /// Per stage, in order, the task-time distribution of its done tasks, from the rollups.
    async fn task_times(&self, job_id: &str) -> Result<Vec<StageTimes>, AnalyticsError>;
    /// Tasks done per second, from the rollups: (the second's start, tasks), ascending,
    /// seconds without any left out.
    async fn completions(&self, job_id: &str) -> Result<Vec<(i64, u64)>, AnalyticsError>;
    /// Summed task time in milliseconds of the done tasks of each of `job_ids`, from the
    /// rollups (the dashboard's cost so far); a job with none has no entry.
    async fn task_ms_of(&self, job_ids: &[String]) -> Result<HashMap<String, u64>, AnalyticsError>;
    /// Records a sample of the grid (a later one at the same time replaces it) and forgets
    /// those taken before `forget_before`.
    async fn record_grid_sample(&self, sample: &GridSample, forget_before: i64) -> Result<(), AnalyticsError>;
    /// The samples taken since `since`, oldest first.
    async fn grid_samples(&self, since: i64) -> Result<Vec<GridSample>, AnalyticsError>;
    /// Every attempt at the job (whatever its outcome), grouped by worker and by the slots of
    /// `slot_ms` (positive) after `start` in which it started and ended; in no particular order.
    async fn worker_activity(
        &self,
        job_id: &str,
        start: i64,
        slot_ms: i64,
    ) -> Result<Vec<WorkerActivity>, AnalyticsError>;
}

/// How many times a transition re-reads a state that changed under it. States only move
/// forward (at most four steps), so a few rounds always settle.
const TRANSITION_ROUNDS: usize = 6;

/// What a transition to `to` writes besides the state: (started_at, finished_at, error).
fn transition_stamps(to: JobState, reason: Option<&str>, now: i64) -> (Option<i64>, Option<i64>, Option<&str>) {
    let started = (to == JobState::Running).then_some(now);
    let finished = to.is_terminal().then_some(now);
    let error = matches!(to, JobState::Failed | JobState::Cancelled).then_some(reason).flatten();
    (started, finished, error)
}

/// Whether `job retry` or `job redrive` may reopen a job in `state`: a failed one, to run its
/// failed tasks again, or a running one (a dead letter redriven while the job goes on).
fn reopenable(state: JobState) -> bool {
    matches!(state, JobState::Failed | JobState::Running)
}

pub(crate) fn parse_state(text: &str) -> Result<JobState, AnalyticsError> {
    JobState::parse(text).ok_or_else(|| AnalyticsError::Corrupt(format!("job state `{text}`")))
}

// Helpers both backends share: the stored names, integer conversions, and the decisions taken
// before any SQL runs, so the two dialects cannot drift apart on them.

fn kind_str(kind: StageKind) -> &'static str {
    match kind {
        StageKind::Map => "map",
        StageKind::Reduce => "reduce",
    }
}

fn parse_kind(text: &str) -> Result<StageKind, AnalyticsError> {
    match text {
        "map" => Ok(StageKind::Map),
        "reduce" => Ok(StageKind::Reduce),
        other => Err(AnalyticsError::Corrupt(format!("stage kind `{other}`"))),
    }
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn to_u32(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// A count as a stored `BIGINT`, saturating.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// When one batch names the same task twice, the record that must win: done over failed over
/// retrying, then the later one.
fn rank(outcome: AttemptOutcome) -> u8 {
    match outcome {
        AttemptOutcome::Succeeded => 2,
        AttemptOutcome::Failed => 1,
        AttemptOutcome::Retrying => 0,
    }
}

/// Position of a status in a `[done, failed, retrying]` counter triple.
fn counter_index(status: &str) -> Option<usize> {
    match status {
        "done" => Some(0),
        "failed" => Some(1),
        "retrying" => Some(2),
        _ => None,
    }
}

/// One record per task, the one that must win within this batch, grouped by (job, stage) and
/// sorted, so every backend writes (and locks) rows in the same order.
fn winners_by_stage(attempts: &[AttemptRecord]) -> BTreeMap<(&str, u32), Vec<&AttemptRecord>> {
    let mut winners: HashMap<(&str, u32, &str), &AttemptRecord> = HashMap::new();
    for attempt in attempts {
        let key = (attempt.job_id.as_str(), attempt.stage, attempt.task_id.as_str());
        match winners.get(&key) {
            Some(current) if rank(current.outcome) > rank(attempt.outcome) => {}
            _ => {
                winners.insert(key, attempt);
            }
        }
    }
    let mut groups: BTreeMap<(&str, u32), Vec<&AttemptRecord>> = BTreeMap::new();
    for ((job_id, stage, _), attempt) in winners {
        groups.entry((job_id, stage)).or_default().push(attempt);
    }
    for members in groups.values_mut() {
        members.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    }
    groups
}

/// What a batch adds to one worker's row.
#[derive(Debug, Default, Clone, Copy)]
struct WorkerTally {
    done: i64,
    failed: i64,
    last_seen: i64,
}

/// Per worker, in id order (the order row locks are taken in).
fn worker_tallies(attempts: &[AttemptRecord]) -> BTreeMap<&str, WorkerTally> {
    let mut tallies: BTreeMap<&str, WorkerTally> = BTreeMap::new();
    for attempt in attempts {
        let entry = tallies.entry(attempt.worker_id.as_str()).or_default();
        if attempt.outcome == AttemptOutcome::Succeeded {
            entry.done += 1;
        } else {
            entry.failed += 1;
        }
        entry.last_seen = entry.last_seen.max(attempt.ended_at);
    }
    tallies
}

/// How a stage's `[done, failed, retrying]` counters move when `members` (one record per task)
/// are upserted over tasks whose current statuses are `current`: a task leaves its status and
/// enters its new one, except that `done` is final. The records that make a task done are
/// pushed to `newly_done`, for the rollups.
fn status_delta<'a>(
    members: &[&'a AttemptRecord],
    current: &HashMap<String, String>,
    newly_done: &mut Vec<&'a AttemptRecord>,
) -> [i64; 3] {
    let mut delta = [0i64; 3];
    for task in members {
        let old = current.get(&task.task_id).map(String::as_str);
        if old == Some("done") {
            continue;
        }
        if task.outcome == AttemptOutcome::Succeeded {
            newly_done.push(task);
        }
        if let Some(i) = old.and_then(counter_index) {
            delta[i] -= 1;
        }
        if let Some(i) = counter_index(task.outcome.task_status()) {
            delta[i] += 1;
        }
    }
    delta
}

/// One count per (service, operation), the largest when `counts` repeats one (a single upsert
/// statement may not name a row twice), sorted so concurrent writers lock rows in one order.
fn merged_request_counts(counts: &[RequestCount]) -> Vec<(&str, &str, i64)> {
    let mut merged: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for count in counts {
        let entry = merged.entry((count.service.as_str(), count.operation.as_str())).or_default();
        *entry = (*entry).max(to_i64(count.count));
    }
    merged.into_iter().map(|((service, operation), count)| (service, operation, count)).collect()
}
