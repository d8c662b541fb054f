//! Retry and redrive: a job's failed tasks sent back for another run, into the same job.
//! `job retry` takes every failed task of a failed job; `job redrive` those a filter picks
//! (stage, task, error text), of a failed or a running job.
//!
//! A failed task's message is in one of two places: still in a dead-letter queue, or, once the
//! manager has consumed it, parked beside the job in the object store
//! ([`crate::task::parked_letter_key`]). The first are moved back with the queue's selective
//! redrive, the others sent again from their parked copy (a later stage's task, whose input is
//! deterministic, is rebuilt if it has none). Each picked task goes from `failed` to
//! `retrying` before anything is sent, in the transaction that reopens the job and records the
//! action in its history, so the job waits for the new runs; each run is counted once, as
//! progress is an upsert per task.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::reconcile::reduce_message;
use super::{Manager, ManagerError};
use crate::analytics::{actor, AnalyticsError, AttemptOutcome, AttemptRecord, JobState, TaskRecord};
use crate::db::now_millis;
use crate::queue::DeadLetter;
use crate::spec::{JobSpec, StageKind};
use crate::store::StoreError;
use crate::task::{output_prefix, parked_letter_key, TaskMessage};

/// How long a dead letter looked at by a redrive and not picked stays hidden.
const REDRIVE_HOLD: Duration = Duration::from_secs(5);

/// Which failed tasks a redrive takes; every one when empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedriveFilter {
    /// Only this stage (its position).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<u32>,
    /// Only this task id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Only tasks whose last error contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RedriveFilter {
    /// Whether the filter picks `task`.
    pub fn picks(&self, task: &TaskRecord) -> bool {
        self.stage.is_none_or(|stage| task.stage == stage)
            && self.task.as_ref().is_none_or(|id| task.task_id == *id)
            && self.error.as_ref().is_none_or(|text| task.last_error.as_deref().is_some_and(|e| e.contains(text)))
    }

    /// The filter in words, for the job's history.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(stage) = self.stage {
            parts.push(format!("stage {stage}"));
        }
        if let Some(task) = &self.task {
            parts.push(format!("task {task}"));
        }
        if let Some(error) = &self.error {
            parts.push(format!("error containing `{error}`"));
        }
        if parts.is_empty() {
            "every failed task".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// What a retry or a redrive did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redriven {
    /// The job.
    pub job_id: String,
    /// Failed tasks sent back for another run.
    pub tasks: u64,
    /// Of which moved back from a dead-letter queue.
    pub from_dead_letters: u64,
    /// Of which sent again from their parked message (or rebuilt).
    pub resent: u64,
    /// Tasks picked whose message could be found nowhere: recorded failed again, with why.
    pub lost: Vec<String>,
}

/// Why a retry or redrive was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedriveRefusal {
    /// The job is not failed (retry), or neither failed nor running (redrive).
    State(JobState),
    /// No failed task matches.
    NothingToRun,
}

impl Manager {
    /// Sends the failed tasks of `job_id` that `filter` picks back for another run, reopening
    /// a failed job; `action` (`retry`, `redrive`) names it in the job's history. A retry
    /// (`only_failed_jobs`) takes only a job that has failed.
    pub async fn redrive_tasks(
        &self,
        job_id: &str,
        filter: &RedriveFilter,
        action: &str,
        only_failed_jobs: bool,
    ) -> Result<Result<Redriven, RedriveRefusal>, ManagerError> {
        let analytics = &self.grid.analytics;
        let job = analytics.job(job_id).await?.ok_or_else(|| AnalyticsError::JobNotFound(job_id.to_owned()))?;
        let allowed = if only_failed_jobs {
            job.state == JobState::Failed
        } else {
            matches!(job.state, JobState::Failed | JobState::Running)
        };
        if !allowed {
            return Ok(Err(RedriveRefusal::State(job.state)));
        }
        let picked: Vec<TaskRecord> =
            analytics.failed_tasks(job_id).await?.into_iter().filter(|task| filter.picks(task)).collect();
        if picked.is_empty() {
            return Ok(Err(RedriveRefusal::NothingToRun));
        }
        let spec: JobSpec = serde_json::from_str(&job.spec)
            .map_err(|e| AnalyticsError::Corrupt(format!("job {job_id}: stored spec: {e}")))?;
        let keys: Vec<(u32, String)> = picked.iter().map(|t| (t.stage, t.task_id.clone())).collect();
        let reason = format!("{action}: {} failed task(s), {}", keys.len(), filter.describe());
        let Some(reopened) = analytics.reopen_tasks(job_id, &keys, &reason, actor::OPERATOR).await? else {
            // It changed meanwhile (ended, or a cancel won).
            let state = analytics.job(job_id).await?.map_or(job.state, |j| j.state);
            return Ok(Err(RedriveRefusal::State(state)));
        };
        tracing::info!(job = %job_id, tasks = reopened, "{reason}");
        if job.state.is_terminal() {
            // Workers drop the tasks of a job they last saw ended: wait until every cache has
            // read the job's new state before sending any.
            tokio::time::sleep(crate::worker::JOB_STATE_TTL + Duration::from_millis(500)).await;
        }
        let wanted: HashSet<(u32, String)> = keys.iter().cloned().collect();
        let mut outcome = Redriven { job_id: job_id.to_owned(), tasks: reopened, ..Redriven::default() };
        let moved = self.redrive_dead_letters(job_id, &wanted).await?;
        outcome.from_dead_letters = moved.len() as u64;
        let (mut to_tasks, mut to_chain) = (Vec::new(), Vec::new());
        let mut lost = Vec::new();
        for task in picked.iter().filter(|t| !moved.contains(&(t.stage, t.task_id.clone()))) {
            match self.message_for(job_id, &spec, task).await? {
                Some(body)
                    if spec.stages.get(task.stage as usize).is_some_and(|s| s.kind == StageKind::Map)
                        && task.stage > 0 =>
                {
                    to_chain.push(body)
                }
                Some(body) => to_tasks.push(body),
                None => lost.push(task),
            }
        }
        outcome.resent = (to_tasks.len() + to_chain.len()) as u64;
        self.enqueue(&self.grid.tasks, to_tasks).await?;
        self.enqueue(&self.grid.chain, to_chain).await?;
        if !lost.is_empty() {
            // Reopened but with nothing to run: failed again, or the job would wait forever.
            let now = now_millis();
            let records: Vec<AttemptRecord> = lost
                .iter()
                .map(|task| AttemptRecord {
                    job_id: job_id.to_owned(),
                    stage: task.stage,
                    task_id: task.task_id.clone(),
                    attempt: task.attempts.saturating_add(1),
                    worker_id: "manager".into(),
                    started_at: now,
                    ended_at: now,
                    outcome: AttemptOutcome::Failed,
                    exit_status: None,
                    bytes_in: 0,
                    bytes_out: 0,
                    error: Some(format!("{action}: its message is gone from the dead-letter queue and the store")),
                })
                .collect();
            self.grid.analytics.record_attempts(&records).await?;
            outcome.lost = lost.iter().map(|t| format!("stage {} task {}", t.stage, t.task_id)).collect();
        }
        Ok(Ok(outcome))
    }

    /// Moves the job's letters of `wanted` tasks from both dead-letter queues back to their
    /// queues; returns the tasks moved.
    async fn redrive_dead_letters(
        &self,
        job_id: &str,
        wanted: &HashSet<(u32, String)>,
    ) -> Result<HashSet<(u32, String)>, ManagerError> {
        let moved = Mutex::new(HashSet::new());
        let select = |letter: &DeadLetter| {
            let Ok(task) = TaskMessage::decode(&letter.body) else { return false };
            let key = (task.stage, task.task);
            if task.job != job_id || !wanted.contains(&key) {
                return false;
            }
            // One letter per task: a second (an older failure's) is left where it is.
            moved.lock().is_ok_and(|mut moved| moved.insert(key))
        };
        for queue in [&self.grid.tasks, &self.grid.chain] {
            queue.redrive_matching(&select, REDRIVE_HOLD).await?;
        }
        Ok(moved.into_inner().unwrap_or_default())
    }

    /// The message that runs `task` again: its parked letter, or for a later stage's task, whose
    /// input is the stage before's output, one rebuilt; `None` for a first-stage task without
    /// a parked letter (its input was cut by the split, and only its message names it).
    async fn message_for(
        &self,
        job_id: &str,
        spec: &JobSpec,
        task: &TaskRecord,
    ) -> Result<Option<String>, ManagerError> {
        match self.grid.store.get(&parked_letter_key(job_id, task.stage, &task.task_id)).await {
            Ok(bytes) => return Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
            Err(StoreError::NotFound(_)) => {}
            Err(error) => return Err(error.into()),
        }
        let index = task.stage as usize;
        let Some(stage) = spec.stages.get(index) else { return Ok(None) };
        if index == 0 {
            return Ok(None);
        }
        Ok(Some(match stage.kind {
            StageKind::Reduce => reduce_message(job_id, spec, index),
            StageKind::Map => {
                let previous = &spec.stages[index - 1];
                TaskMessage {
                    job: job_id.to_owned(),
                    stage: task.stage,
                    task: task.task_id.clone(),
                    input: output_prefix(job_id, task.stage - 1, &previous.name, &task.task_id),
                    data: None,
                    range: None,
                    object: None,
                }
                .encode()
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(stage: u32, id: &str, error: &str) -> TaskRecord {
        TaskRecord {
            job_id: "j".into(),
            stage,
            task_id: id.into(),
            status: "failed".into(),
            attempts: 1,
            worker_id: None,
            last_error: Some(error.into()),
            duration_ms: None,
        }
    }

    #[test]
    fn a_filter_picks_by_stage_task_and_error_text() {
        let all = RedriveFilter::default();
        assert!(all.picks(&task(1, "000002", "exit status 3")));
        assert_eq!(all.describe(), "every failed task");
        let filter = RedriveFilter { stage: Some(1), task: None, error: Some("timed out".into()) };
        assert!(filter.picks(&task(1, "000002", "timed out after 5s")));
        assert!(!filter.picks(&task(0, "000002", "timed out after 5s")), "another stage");
        assert!(!filter.picks(&task(1, "000002", "exit status 3")), "another error");
        let one = RedriveFilter { task: Some("000007".into()), ..RedriveFilter::default() };
        assert!(one.picks(&task(0, "000007", "x")) && !one.picks(&task(0, "000008", "x")));
        assert_eq!(filter.describe(), "stage 1, error containing `timed out`");
    }
}
