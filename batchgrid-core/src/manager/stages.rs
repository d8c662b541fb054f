//! The per-stage watchdog. A running stage expects `expected` tasks; each is done, failed,
//! queued or in flight. When the queues hold nothing (or the stage has not moved for
//! [`STALL_AFTER`]) and tasks are still missing, they are lost, and waiting would be forever:
//! the watchdog says so (log and job status) and repairs what it can. The case it repairs is a
//! worker that died after recording a task done but before forwarding it to the next map stage,
//! on its last allowed delivery: the next stage's task is re-sent from the done task before it
//! (keys are deterministic and progress is counted once, so a needless re-send is harmless).
//! First-stage tasks lost (a message deleted whose record a database crash then lost) are
//! admitted again from the pending-task store, or, when it does not know them, re-sent by
//! splitting the input again. A job whose tasks still wait for admission, or that is paused, is
//! not examined: it is waiting its turn, and nothing of it is lost.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::reconcile::reduce_message;
use super::{Manager, ManagerError};
use crate::analytics::StageProgress;
use crate::spec::{JobSpec, StageKind};
use crate::task::{output_prefix, TaskMessage, REDUCE_TASK_ID};

/// A stage that has not moved for this long is examined even while the (shared) queues hold
/// other jobs' messages.
const STALL_AFTER: Duration = Duration::from_secs(120);
/// Empty queues must be seen this many passes in a row, at least [`QUIET_FOR`] apart in all,
/// before tasks are declared lost: queue depths are approximate on SQS.
const QUIET_PASSES: u32 = 3;
/// See [`QUIET_PASSES`].
const QUIET_FOR: Duration = Duration::from_secs(2);
/// After acting (or reporting), the watchdog waits this long for things to move before it acts
/// again: a re-send needs time to run, a redelivery time to come.
const ACT_EVERY: Duration = Duration::from_secs(30);

/// What the watchdog remembers between passes of one job.
#[derive(Debug)]
pub(super) struct Watchdog {
    counters: Vec<(u64, u64, u64)>,
    moved_at: Instant,
    quiet_passes: u32,
    quiet_since: Option<Instant>,
    /// When it last acted, while nothing has moved since.
    acted_at: Option<Instant>,
    /// Set when first-stage tasks are lost: the split is run again (it is idempotent).
    pub(super) resplit: bool,
}

impl Default for Watchdog {
    fn default() -> Self {
        Self {
            counters: Vec::new(),
            moved_at: Instant::now(),
            quiet_passes: 0,
            quiet_since: None,
            acted_at: None,
            resplit: false,
        }
    }
}

impl Manager {
    /// Compares each running stage's expected tasks with done + failed + queued + in flight,
    /// and reports or repairs the difference.
    pub(super) async fn watch_stages(
        &self,
        job_id: &str,
        spec: &JobSpec,
        stages: &[StageProgress],
        watchdog: &mut Watchdog,
    ) -> Result<(), ManagerError> {
        let counters: Vec<(u64, u64, u64)> = stages.iter().map(|s| (s.done, s.failed, s.retrying)).collect();
        if counters != watchdog.counters {
            watchdog.counters = counters;
            watchdog.moved_at = Instant::now();
            watchdog.quiet_passes = 0;
            watchdog.quiet_since = None;
            watchdog.acted_at = None;
            self.set_note(job_id, None);
        }
        let admission = self.grid.analytics.admission(job_id).await?;
        if admission.is_some_and(|a| a.paused || a.pending > 0) {
            // Waiting its turn (or paused): no progress is expected, and nothing is lost.
            watchdog.moved_at = Instant::now();
            watchdog.quiet_passes = 0;
            watchdog.quiet_since = None;
            return Ok(());
        }
        // The first stage still open; stages after it have not started.
        let Some((index, stage)) = stages.iter().enumerate().find(|(_, s)| !s.is_finished()) else {
            return Ok(());
        };
        let Some(expected) = stage.expected else { return Ok(()) }; // Still splitting.
        let missing = expected.saturating_sub(stage.done + stage.failed);
        let (tasks, chain) = tokio::try_join!(self.grid.tasks.depth(), self.grid.chain.depth())?;
        let outstanding = tasks.visible + tasks.in_flight + chain.visible + chain.in_flight;
        if outstanding == 0 {
            watchdog.quiet_passes += 1;
            watchdog.quiet_since.get_or_insert_with(Instant::now);
        } else {
            watchdog.quiet_passes = 0;
            watchdog.quiet_since = None;
        }
        let quiet =
            watchdog.quiet_passes >= QUIET_PASSES && watchdog.quiet_since.is_some_and(|t| t.elapsed() >= QUIET_FOR);
        let recently_acted = watchdog.acted_at.is_some_and(|t| t.elapsed() < ACT_EVERY);
        if recently_acted || !(quiet || watchdog.moved_at.elapsed() >= STALL_AFTER) {
            return Ok(());
        }
        let dead = tasks.dead + chain.dead;
        let mut note = format!(
            "stage `{}`: expected {expected}, done {} + failed {} + queued or in flight {outstanding} (all queues), \
             {dead} dead-lettered not yet recorded",
            stage.name, stage.done, stage.failed
        );
        let resent = match (index, stage.kind) {
            (0, _) => {
                // Admitted tasks with no record go back to admission; if the store knows none
                // (the job was split straight into the queue), splitting again re-sends them
                // all, and those already done run again and count once.
                let requeued =
                    if self.admission.is_active() { self.grid.analytics.requeue_unsettled(job_id).await? } else { 0 };
                if requeued == 0 {
                    watchdog.resplit = true;
                }
                requeued
            }
            (_, StageKind::Map) => self.reforward(job_id, spec, index).await?,
            (_, StageKind::Reduce) => {
                let known = self.grid.analytics.task(job_id, index as u32, REDUCE_TASK_ID).await?;
                if known.is_some_and(|t| t.is_settled()) {
                    0
                } else {
                    self.enqueue(&self.grid.tasks, vec![reduce_message(job_id, spec, index)]).await?;
                    1
                }
            }
        };
        if index == 0 && resent > 0 {
            note.push_str(&format!("; {missing} task(s) lost: {resent} admitted again"));
        } else if index == 0 {
            note.push_str(&format!("; {missing} task(s) lost: splitting the input again"));
        } else if resent > 0 {
            note.push_str(&format!("; re-sent {resent} lost task(s)"));
        } else {
            note.push_str("; tasks missing and none to re-send, waiting for redeliveries");
        }
        tracing::warn!(job = %job_id, "watchdog: {note}");
        self.set_note(job_id, Some(note));
        // Give the repair (or the redeliveries) time before acting again.
        watchdog.acted_at = Some(Instant::now());
        watchdog.quiet_passes = 0;
        watchdog.quiet_since = None;
        Ok(())
    }

    /// Re-sends to map stage `index` every task done in the stage before it that the stage has
    /// no record of; returns how many.
    async fn reforward(&self, job_id: &str, spec: &JobSpec, index: usize) -> Result<u64, ManagerError> {
        let analytics = &self.grid.analytics;
        let known: HashSet<String> =
            analytics.task_statuses(job_id, index as u32).await?.into_iter().map(|(task, _)| task).collect();
        let previous = &spec.stages[index - 1];
        let bodies: Vec<String> = analytics
            .task_statuses(job_id, (index - 1) as u32)
            .await?
            .into_iter()
            .filter(|(task, status)| status == "done" && !known.contains(task))
            .map(|(task, _)| {
                TaskMessage {
                    job: job_id.to_owned(),
                    stage: index as u32,
                    input: output_prefix(job_id, (index - 1) as u32, &previous.name, &task),
                    task,
                    data: None,
                    range: None,
                    object: None,
                }
                .encode()
            })
            .collect();
        let count = bodies.len() as u64;
        if count > 0 {
            self.enqueue(&self.grid.chain, bodies).await?;
        }
        Ok(count)
    }

    pub(super) fn set_note(&self, job_id: &str, note: Option<String>) {
        if let Ok(mut notes) = self.watchdog_notes.lock() {
            match note {
                Some(note) => notes.insert(job_id.to_owned(), note),
                None => notes.remove(job_id),
            };
        }
    }
}
