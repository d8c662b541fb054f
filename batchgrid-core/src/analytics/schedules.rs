//! Schedules and their occurrences in the analytics store.
//!
//! # Contract
//! - A schedule is keyed by name; `create_schedule` of a name that exists changes nothing and
//!   returns `false`.
//! - An occurrence is keyed by (schedule, fire time). `claim_occurrence` inserts it and returns
//!   `true` only to the one caller whose insert created the row: of two managers claiming the
//!   same occurrence, at the same time or not, exactly one wins, and only the winner fires it.
//! - `move_occurrence` is a compare-and-set on the occurrence's state, so of two managers
//!   taking the same queued occurrence, one moves it.
//! - `advance_watermark` never moves a watermark back: a slower manager's older watermark
//!   does not undo a newer one.
//! - Deleting a schedule deletes its occurrences.
//! - Times are Unix milliseconds.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::AnalyticsError;

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// Unique name.
    pub name: String,
    /// The validated job spec, with its `schedule` block, as JSON.
    pub spec: String,
    /// A paused schedule fires nothing.
    pub paused: bool,
    /// Every fire time at or before this has been dealt with.
    pub watermark: i64,
    /// When it was added.
    pub created_at: i64,
    /// When it last changed (pause, resume).
    pub updated_at: i64,
}

/// What became of an occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OccurrenceState {
    /// Claimed by a manager, not yet submitted.
    Claimed,
    /// Its job was submitted.
    Started,
    /// Waiting for an earlier run to end (`overlap: queue`).
    Queued,
    /// Not run (`overlap: skip`).
    Skipped,
    /// Could not be submitted (its job spec failed for this occurrence, e.g. missing input).
    Failed,
}

impl OccurrenceState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OccurrenceState::Claimed => "claimed",
            OccurrenceState::Started => "started",
            OccurrenceState::Queued => "queued",
            OccurrenceState::Skipped => "skipped",
            OccurrenceState::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Result<Self, AnalyticsError> {
        Ok(match text {
            "claimed" => OccurrenceState::Claimed,
            "started" => OccurrenceState::Started,
            "queued" => OccurrenceState::Queued,
            "skipped" => OccurrenceState::Skipped,
            "failed" => OccurrenceState::Failed,
            other => return Err(AnalyticsError::Corrupt(format!("occurrence state `{other}`"))),
        })
    }
}

/// One occurrence of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OccurrenceRecord {
    /// The schedule's name.
    pub schedule: String,
    /// The fire time (a `trigger`'s is the time it was asked).
    pub fire_time: i64,
    /// What became of it.
    pub state: OccurrenceState,
    /// The job it submitted.
    pub job_id: Option<String>,
    /// Fired by `schedule trigger` rather than the clock.
    pub manual: bool,
    /// Why it was skipped or failed.
    pub reason: Option<String>,
    /// When it was claimed.
    pub created_at: i64,
}

/// Where schedules and occurrences are kept; see the module's contract.
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Adds a schedule; `false` (and no change) if one of that name exists.
    async fn create_schedule(&self, schedule: &ScheduleRecord) -> Result<bool, AnalyticsError>;
    /// One schedule.
    async fn schedule(&self, name: &str) -> Result<Option<ScheduleRecord>, AnalyticsError>;
    /// Every schedule, by name.
    async fn schedules(&self) -> Result<Vec<ScheduleRecord>, AnalyticsError>;
    /// Pauses or resumes a schedule at `now`; resuming moves its watermark to `now`, so fire
    /// times passed while paused are not caught up. `false` if there is no such schedule.
    async fn set_schedule_paused(&self, name: &str, paused: bool, now: i64) -> Result<bool, AnalyticsError>;
    /// Moves a schedule's watermark forward to `to`, never back.
    async fn advance_watermark(&self, name: &str, to: i64) -> Result<(), AnalyticsError>;
    /// Deletes a schedule and its occurrences; `false` if there was none.
    async fn delete_schedule(&self, name: &str) -> Result<bool, AnalyticsError>;
    /// Inserts the occurrence; `true` only if this call created it.
    async fn claim_occurrence(&self, occurrence: &OccurrenceRecord) -> Result<bool, AnalyticsError>;
    /// Moves an occurrence from state `from` to `to` (a compare-and-set: `false`, and no
    /// change, when it is not in `from`), recording its job and why.
    async fn move_occurrence(
        &self,
        schedule: &str,
        fire_time: i64,
        from: OccurrenceState,
        to: OccurrenceState,
        job_id: Option<&str>,
        reason: Option<&str>,
    ) -> Result<bool, AnalyticsError>;
    /// A schedule's occurrences, newest first, at most `limit`.
    async fn occurrences(&self, schedule: &str, limit: u32) -> Result<Vec<OccurrenceRecord>, AnalyticsError>;
}
