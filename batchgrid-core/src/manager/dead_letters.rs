//! Dead letters: tasks whose worker died on every delivery never record their own failure, so
//! the manager records it. The dead-letter queues are shared by every job and are consumed
//! completely on each scan, however many letters they hold: each letter is taken (hidden for a
//! while), recorded, its message parked beside its job (for `job retry` and `job redrive`),
//! then deleted. A crash between recording and deleting brings the letter
//! back after its hold, and recording it again changes nothing, so none is missed or counted
//! twice.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;

use super::{Manager, ManagerError};
use crate::analytics::{AttemptOutcome, AttemptRecord, JobState, TaskRecord};
use crate::db::now_millis;
use crate::queue::{DeadLetter, Receipt, TaskQueue, MAX_BATCH};
use crate::task::{parked_letter_key, TaskMessage};

/// How long a taken letter stays hidden before it can be taken again (if it was not deleted,
/// say because the analytics store failed between taking and recording it): short, as
/// the job waits for it meanwhile.
const DEAD_LETTER_HOLD: Duration = Duration::from_secs(30);

impl Manager {
    /// Records every dead letter no worker recorded as failed, then removes it (a letter of an
    /// ended job is only removed); returns how many letters were consumed.
    pub async fn consume_dead_letters(&self) -> Result<u64, ManagerError> {
        let mut consumed = 0;
        let mut jobs: HashMap<String, Option<JobState>> = HashMap::new();
        for queue in [&self.grid.tasks, &self.grid.chain] {
            loop {
                let letters = queue.take_dead_letters(MAX_BATCH, DEAD_LETTER_HOLD).await?;
                if letters.is_empty() {
                    break;
                }
                consumed += letters.len() as u64;
                let mut records = Vec::new();
                for letter in &letters {
                    if let Some(record) = self.dead_letter_record(letter, &mut jobs).await? {
                        records.push(record);
                    }
                    self.park(letter, &jobs).await?;
                }
                // Recorded before removed: a crash in between brings the letters back.
                self.grid.analytics.record_attempts(&records).await?;
                let receipts: Vec<Receipt> = letters.iter().map(|l| l.receipt.clone()).collect();
                delete(queue.as_ref(), &receipts).await?;
            }
        }
        if consumed > 0 {
            tracing::info!(letters = consumed, "dead letters consumed");
        }
        Ok(consumed)
    }

    /// Keeps the message of a letter of a known job beside the job, before the letter is
    /// removed, for `job retry` and `job redrive` ([`parked_letter_key`]).
    async fn park(&self, letter: &DeadLetter, jobs: &HashMap<String, Option<JobState>>) -> Result<(), ManagerError> {
        let Ok(task) = TaskMessage::decode(&letter.body) else { return Ok(()) };
        if jobs.get(&task.job).is_none_or(Option::is_none) {
            return Ok(());
        }
        let key = parked_letter_key(&task.job, task.stage, &task.task);
        self.grid.store.put(&key, Bytes::from(letter.body.clone())).await?;
        Ok(())
    }

    /// The failure to record for one letter: none for a malformed letter, one of a job that
    /// is unknown or has ended, or a task already recorded as done or failed.
    async fn dead_letter_record(
        &self,
        letter: &DeadLetter,
        jobs: &mut HashMap<String, Option<JobState>>,
    ) -> Result<Option<AttemptRecord>, ManagerError> {
        let Ok(task) = TaskMessage::decode(&letter.body) else {
            tracing::warn!(id = %letter.id, "dropping a malformed dead letter");
            return Ok(None);
        };
        let state = match jobs.get(&task.job) {
            Some(state) => *state,
            None => {
                let state = self.grid.analytics.job(&task.job).await?.map(|j| j.state);
                jobs.insert(task.job.clone(), state);
                state
            }
        };
        if state.is_none_or(JobState::is_terminal) {
            return Ok(None);
        }
        let known = self.grid.analytics.task(&task.job, task.stage, &task.task).await?;
        if known.as_ref().is_some_and(TaskRecord::is_settled) {
            return Ok(None);
        }
        let reason = letter.reason.clone().unwrap_or_else(|| "dead-lettered".into());
        let last = known.and_then(|t| t.last_error).map(|e| format!("; last error: {e}")).unwrap_or_default();
        let now = now_millis();
        Ok(Some(AttemptRecord {
            job_id: task.job,
            stage: task.stage,
            task_id: task.task,
            attempt: letter.receive_count,
            worker_id: "manager".into(),
            started_at: now,
            ended_at: now,
            outcome: AttemptOutcome::Failed,
            exit_status: None,
            bytes_in: 0,
            bytes_out: 0,
            error: Some(format!(
                "{reason} after {} deliveries (its worker never finished it){last}",
                letter.receive_count
            )),
        }))
    }
}

async fn delete(queue: &dyn TaskQueue, receipts: &[Receipt]) -> Result<(), ManagerError> {
    let failures = queue.delete_dead_letters(receipts).await?;
    if !failures.is_empty() {
        // They come back after their hold and are found recorded: harmless, but worth knowing.
        tracing::warn!(?failures, queue = queue.name(), "some dead letters could not be removed");
    }
    Ok(())
}
