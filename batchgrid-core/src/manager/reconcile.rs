//! Driving a job: one reconcile pass after another until the job ends. Each pass reads the job
//! as it is and takes the next idempotent step (split, record dead letters, open stages at
//! their barrier, repair what the watchdog finds, end the job); running it twice, or after a
//! crash, is harmless. A pass that fails on the infrastructure is retried after a capped
//! exponential backoff and reported in the manager's health; it never fails the job.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;

use super::dependencies::Upstream;
use super::health::Backoff;
use super::pacer::{finished_stages, Pacer};
use super::stages::Watchdog;
use super::{JobProgress, Manager, ManagerError, REQUESTS_SETTLE};
use crate::analytics::{actor, AnalyticsError, JobRecord, JobState, StageProgress};
use crate::db::{millis, now_millis};
use crate::report::JobReport;
use crate::spec::{JobSpec, StageKind};
use crate::task::{report_key, stage_prefix, TaskMessage, REDUCE_TASK_ID};

/// What one pass found and what the driver should do next.
pub(super) struct Pass {
    /// The job's progress after the pass.
    pub progress: JobProgress,
    /// Whether the job's input still has to be (or be again) split into tasks.
    pub needs_split: bool,
}

impl Manager {
    /// Runs a job from submission to its end, reporting progress on every tick.
    pub async fn run(
        &self,
        spec: &JobSpec,
        tick_every: Duration,
        on_progress: impl FnMut(&str, &JobProgress) + Send,
    ) -> Result<JobReport, ManagerError> {
        let job_id = self.retrying("submitting the job", || self.submit(spec)).await?;
        self.drive(&job_id, spec, tick_every, on_progress).await
    }

    /// Drives a job to its end, whatever state it is in (a restarted manager calls this for
    /// every job not yet ended): splits it if its tasks are not all known yet, reconciles it
    /// every `tick_every`, and returns its report with the AWS requests made meanwhile. The
    /// report is also stored beside the job's results. Infrastructure errors are retried, never
    /// returned; the only error is a job that does not exist.
    pub async fn drive(
        &self,
        job_id: &str,
        spec: &JobSpec,
        tick_every: Duration,
        mut on_progress: impl FnMut(&str, &JobProgress) + Send,
    ) -> Result<JobReport, ManagerError> {
        // The manager is busy while it drives a job; the guard's end wakes its loops.
        let _busy = self.activity.job_started();
        let requests_before = self.retrying("reading request counts", || self.grid.analytics.request_totals()).await?;
        // The job's first-stage tasks go through admission while it is driven.
        let _admitting = self.admitting();
        let mut splitter: Option<JoinHandle<Result<u64, ManagerError>>> = None;
        let mut split_backoff = Backoff::default();
        let mut split_not_before = tokio::time::Instant::now();
        let mut backoff = Backoff::default();
        let mut watchdog = Watchdog::default();
        let mut pacer = Pacer::default();
        // Rung by the splitter as it ends, so the pass that follows it comes at once.
        let split_ended = std::sync::Arc::new(tokio::sync::Notify::new());
        loop {
            if let Some(handle) = splitter.take_if(|s| s.is_finished()) {
                match handle.await {
                    Ok(Ok(_)) => split_backoff.reset(),
                    Ok(Err(error)) if error.is_job_fault() => {
                        tracing::warn!(job = %job_id, %error, "the job's input is unusable");
                        let reason = error.to_string();
                        self.retrying("failing the job", || self.fail(job_id, &reason)).await?;
                    }
                    Ok(Err(error)) => {
                        let delay = split_backoff.next_delay();
                        self.health.failed(&error);
                        tracing::warn!(job = %job_id, %error, retry_in = ?delay, "split interrupted; it will start again");
                        split_not_before = tokio::time::Instant::now() + delay;
                    }
                    Err(error) => {
                        tracing::error!(job = %job_id, %error, "the splitter stopped; it will start again");
                        split_not_before = tokio::time::Instant::now() + split_backoff.next_delay();
                    }
                }
            }
            match self.reconcile(job_id, spec, &mut watchdog).await {
                Ok(pass) => {
                    self.health.pass_succeeded();
                    backoff.reset();
                    on_progress(job_id, &pass.progress);
                    if pass.progress.state.is_terminal() {
                        break;
                    }
                    if pass.needs_split && splitter.is_none() && tokio::time::Instant::now() >= split_not_before {
                        let manager = self.clone();
                        let (job_id, spec, ended) = (job_id.to_owned(), spec.clone(), split_ended.clone());
                        splitter = Some(tokio::spawn(async move {
                            let split = manager.split(&job_id, &spec, |_| {}).await;
                            ended.notify_one();
                            split
                        }));
                    }
                    self.until_next_pass(job_id, &pass.progress.stages, tick_every, &mut pacer, &split_ended).await;
                }
                Err(ManagerError::Analytics(AnalyticsError::JobNotFound(id))) => {
                    return Err(AnalyticsError::JobNotFound(id).into());
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    self.health.failed(&error);
                    tracing::warn!(job = %job_id, %error, retry_in = ?delay, "reconcile pass failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
        if let Some(handle) = splitter {
            handle.abort();
        }
        self.set_note(job_id, None);
        // Nothing of an ended job is admitted again; its pending rows only take space.
        self.retrying("forgetting pending tasks", || self.grid.analytics.clear_pending(job_id)).await?;
        if !requests_before.is_empty() || !self.grid.meter.snapshot().is_empty() {
            // Workers publish their request counts every couple of seconds; wait for the last.
            tokio::time::sleep(REQUESTS_SETTLE).await;
        }
        self.grid.publish_requests(&self.process_id()).await;
        let requests_after = self.retrying("reading request counts", || self.grid.analytics.request_totals()).await?;
        let output = self.copy_results.then_some(spec.output.path.as_path());
        let report = self
            .retrying("building the job report", || async {
                Ok::<_, ManagerError>(
                    JobReport::build(self.grid.analytics.as_ref(), job_id, output)
                        .await?
                        .with_requests(&requests_before, &requests_after),
                )
            })
            .await?;
        let report = self.add_instance_usage(job_id, report).await;
        let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
        if let Err(error) = self.grid.store.put(&report_key(job_id), Bytes::from(json)).await {
            tracing::warn!(%error, job = %job_id, "could not store the job report");
        }
        Ok(report)
    }

    /// Waits until the next pass is due: a stage of the job has finished (looked for at the
    /// pacer's pace), the split has ended, or `tick` has passed since the last pass.
    async fn until_next_pass(
        &self,
        job_id: &str,
        stages: &[StageProgress],
        tick: Duration,
        pacer: &mut Pacer,
        split_ended: &tokio::sync::Notify,
    ) {
        let due = tokio::time::Instant::now() + tick;
        let finished = finished_stages(stages);
        let mut seen = stages.to_vec();
        loop {
            let now = tokio::time::Instant::now();
            let pause = pacer.pause(now.into_std(), &seen, tick).min(due.saturating_duration_since(now));
            tokio::select! {
                () = split_ended.notified() => return,
                () = tokio::time::sleep(pause) => {}
            }
            if tokio::time::Instant::now() >= due {
                return;
            }
            match self.grid.analytics.stages(job_id).await {
                Ok(stages) if finished_stages(&stages) == finished => seen = stages,
                // A stage finished (the pass opens the next or ends the job), or the store
                // failed (the pass reports it).
                _ => return,
            }
        }
    }

    /// Adds the grid's instance-hours during the job, when they can be read.
    async fn add_instance_usage(&self, job_id: &str, report: JobReport) -> JobReport {
        let Some(source) = &self.instance_usage else { return report };
        let Ok(Some(job)) = self.grid.analytics.job(job_id).await else { return report };
        let (from, to) = (job.started_at.unwrap_or(job.submitted_at), job.finished_at.unwrap_or_else(now_millis));
        match source.usage(from, to).await {
            Ok(usage) => report.with_instance_usage(usage),
            Err(error) => {
                tracing::warn!(%error, job = %job_id, "could not read the grid's instance-hours");
                report
            }
        }
    }

    /// Runs `operation` until it succeeds, pausing with backoff and reporting health between
    /// tries; an unknown job is the one error returned, as no retry can help it.
    pub(crate) async fn retrying<T, E, F, Fut>(&self, what: &str, mut operation: F) -> Result<T, ManagerError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Into<ManagerError>,
    {
        let mut backoff = Backoff::default();
        loop {
            match operation().await.map_err(Into::into) {
                Ok(value) => return Ok(value),
                Err(ManagerError::Analytics(AnalyticsError::JobNotFound(id))) => {
                    return Err(AnalyticsError::JobNotFound(id).into())
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    self.health.failed(&error);
                    tracing::warn!(%error, retry_in = ?delay, "{what} failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One reconcile pass, the step [`Manager::drive`] repeats; public for embedders that drive
    /// jobs themselves. Its errors are the infrastructure's: retry it.
    pub async fn tick(&self, job_id: &str, spec: &JobSpec) -> Result<JobProgress, ManagerError> {
        Ok(self.reconcile(job_id, spec, &mut Watchdog::default()).await?.progress)
    }

    pub(super) async fn reconcile(
        &self,
        job_id: &str,
        spec: &JobSpec,
        watchdog: &mut Watchdog,
    ) -> Result<Pass, ManagerError> {
        let analytics = &self.grid.analytics;
        let Some(mut job) = analytics.job(job_id).await? else {
            return Err(AnalyticsError::JobNotFound(job_id.to_owned()).into());
        };
        if !job.state.is_terminal() {
            if let Some(reason) = deadline_passed(&job, spec) {
                analytics.transition(job_id, JobState::Failed, Some(&reason), actor::MANAGER).await?;
                job = analytics.job(job_id).await?.unwrap_or(job);
            }
        }
        if job.state.is_terminal() {
            let stages = analytics.stages(job_id).await?;
            return Ok(Pass {
                progress: JobProgress { state: job.state, stages, error: job.error },
                needs_split: false,
            });
        }
        if job.state == JobState::Submitted && !spec.after.is_empty() {
            match self.upstream(spec).await? {
                Upstream::Ready => {}
                Upstream::Waiting(on) => {
                    // Not split, not enqueued: nothing of the job exists in the queues yet.
                    self.set_note(job_id, Some(format!("waiting for upstream job `{on}` (after:)")));
                    let stages = analytics.stages(job_id).await?;
                    let progress = JobProgress { state: job.state, stages, error: None };
                    return Ok(Pass { progress, needs_split: false });
                }
                Upstream::Failed(reason) => {
                    analytics.transition(job_id, JobState::Failed, Some(&reason), actor::MANAGER).await?;
                    let stored = analytics.job(job_id).await?.unwrap_or(job);
                    let stages = analytics.stages(job_id).await?;
                    let progress = JobProgress { state: stored.state, stages, error: stored.error };
                    return Ok(Pass { progress, needs_split: false });
                }
            }
            self.set_note(job_id, None);
        }
        if self.dead_letter_scan_due() {
            self.consume_dead_letters().await?;
        }
        let mut stages = analytics.stages(job_id).await?;
        // Level-triggered: the first stage's size is written only once the split has finished,
        // so a job without it needs splitting, whatever its state and whoever split it before.
        let mut needs_split = stages.first().is_some_and(|s| s.expected.is_none());
        let stop_at = spec.stop_stage(&stages);
        let considered = taking_part(&stages, stop_at);
        self.open_stages(job_id, spec, &mut stages, considered).await?;
        self.watch_stages(job_id, spec, &stages, watchdog).await?;
        needs_split |= std::mem::take(&mut watchdog.resplit);

        let (mut state, mut error) = (job.state, None);
        if stages.first().is_some_and(|s| s.expected == Some(0)) {
            error = Some("the input produced no tasks".to_owned());
            state = JobState::Failed;
        } else if stages[..considered].iter().all(StageProgress::is_finished) {
            (state, error) = verdict(&stages, stop_at);
        }
        if state.is_terminal() {
            if state == JobState::Completed && self.copy_results {
                if let Err(e) = self.write_results(job_id, spec).await {
                    if !e.is_job_fault() {
                        return Err(e);
                    }
                    state = JobState::Failed;
                    error = Some(e.to_string());
                }
            }
            let applied = analytics.transition(job_id, state, error.as_deref(), actor::MANAGER).await?;
            if applied {
                tracing::info!(job = %job_id, %state, "job finished");
            } else {
                // Something else ended it first (a cancel): report what is stored.
                let stored = analytics.job(job_id).await?.unwrap_or(job);
                (state, error) = (stored.state, stored.error);
            }
        }
        Ok(Pass { progress: JobProgress { state, stages, error }, needs_split })
    }

    /// Opens each stage whose predecessor has finished: a map stage's size is the done tasks
    /// before it (they have been streaming in); a reduce stage gets its one task, enqueued
    /// before its size is recorded so that a crash in between enqueues it again rather than
    /// never (the reduce task is deterministic and counted once).
    async fn open_stages(
        &self,
        job_id: &str,
        spec: &JobSpec,
        stages: &mut [StageProgress],
        considered: usize,
    ) -> Result<(), ManagerError> {
        for index in 0..considered {
            if stages[index].expected.is_none() {
                if index == 0 {
                    break; // Still splitting.
                }
                let previous = stages[index - 1].clone();
                if !previous.is_finished() {
                    break;
                }
                let expected = match spec.stages[index].kind {
                    StageKind::Map => previous.done,
                    // Never over partial data: any failed task before it skips the reduce.
                    StageKind::Reduce if stages[..index].iter().any(|s| s.failed > 0) || previous.done == 0 => 0,
                    StageKind::Reduce => {
                        self.enqueue(&self.grid.tasks, vec![reduce_message(job_id, spec, index)]).await?;
                        1
                    }
                };
                self.grid.analytics.set_stage_expected(job_id, index as u32, expected).await?;
                stages[index].expected = Some(expected);
            }
            if !stages[index].is_finished() {
                break;
            }
        }
        Ok(())
    }

    fn dead_letter_scan_due(&self) -> bool {
        self.last_dead_letter_scan.lock().map_or(true, |mut last| {
            let due = last.is_none_or(|at| at.elapsed() >= self.dead_letter_every);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        })
    }
}

/// The reduce stage `index`'s one task: every output of the stage before it.
pub(super) fn reduce_message(job_id: &str, spec: &JobSpec, index: usize) -> String {
    let prior = &spec.stages[index - 1];
    TaskMessage {
        job: job_id.to_owned(),
        stage: index as u32,
        task: REDUCE_TASK_ID.to_owned(),
        input: stage_prefix(job_id, (index - 1) as u32, &prior.name),
        data: None,
        range: None,
        object: None,
    }
    .encode()
}

/// Why the job is past its deadline, if it is.
fn deadline_passed(job: &JobRecord, spec: &JobSpec) -> Option<String> {
    let deadline = spec.deadline?;
    let limit = job.submitted_at.saturating_add(millis(deadline));
    (now_millis() > limit)
        .then(|| format!("deadline of {} after submission passed", humantime::format_duration(deadline)))
}

/// How many stages take part in the job now: all, or with a stage that stopped the rest
/// ([`JobSpec::stop_stage`]) the stages up to it; the job ends once those have drained.
fn taking_part(stages: &[StageProgress], stop_at: Option<usize>) -> usize {
    stop_at.map_or(stages.len(), |failed| failed + 1)
}

/// How a job ends once the stages taking part have all finished.
fn verdict(stages: &[StageProgress], stop_at: Option<usize>) -> (JobState, Option<String>) {
    let considered = taking_part(stages, stop_at);
    let failed: Vec<String> =
        stages.iter().filter(|s| s.failed > 0).map(|s| format!("{} in `{}`", s.failed, s.name)).collect();
    let mut skipped: Vec<String> = stages[..considered]
        .iter()
        .filter(|s| s.kind == StageKind::Reduce && s.expected == Some(0))
        .map(|s| format!("`{}` (a reduce does not run over partial data)", s.name))
        .collect();
    if let Some(failed_stage) = stop_at.filter(|&f| f + 1 < stages.len()) {
        let names: Vec<String> = stages[failed_stage + 1..].iter().map(|s| format!("`{}`", s.name)).collect();
        skipped.push(format!(
            "{} (stage `{}` has failed tasks; on_stage_failure: stop)",
            names.join(", "),
            stages[failed_stage].name
        ));
    }
    if failed.is_empty() && skipped.is_empty() {
        return (JobState::Completed, None);
    }
    let mut reason = format!("failed tasks: {}", failed.join(", "));
    if !skipped.is_empty() {
        reason.push_str(&format!("; skipped: {}", skipped.join(", ")));
    }
    (JobState::Failed, Some(reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::AnalyticsError;
    use crate::queue::QueueError;
    use crate::split::SplitError;

    fn stage(kind: StageKind, expected: u64, done: u64, failed: u64) -> StageProgress {
        StageProgress { stage: 0, name: "s".into(), kind, expected: Some(expected), done, failed, retrying: 0 }
    }

    #[test]
    fn only_the_job_s_own_faults_can_fail_it() {
        let infrastructure: Vec<ManagerError> = vec![
            AnalyticsError::Backend("pool timed out".into()).into(),
            QueueError::Backend { queue: "q".into(), source: "throttled".into() }.into(),
            SplitError::Io { context: "writing a chunk".into(), source: std::io::Error::other("disk full") }.into(),
        ];
        for error in &infrastructure {
            assert!(!error.is_job_fault(), "{error} must be retried, not fail the job");
        }
        let own: Vec<ManagerError> = vec![
            ManagerError::Input { input: "s3://b/k".into(), message: "no such object".into() },
            SplitError::Io { context: "reading input".into(), source: std::io::ErrorKind::NotFound.into() }.into(),
            SplitError::HeaderTooLong("in.csv".into()).into(),
        ];
        for error in &own {
            assert!(error.is_job_fault(), "{error} is the job's own");
        }
        assert_eq!(infrastructure[0].part(), "analytics");
        assert_eq!(infrastructure[1].part(), "queue");
    }

    #[test]
    fn a_job_fails_for_failed_tasks_and_skipped_reduces_only() {
        let done = [stage(StageKind::Map, 3, 3, 0), stage(StageKind::Reduce, 1, 1, 0)];
        assert_eq!(verdict(&done, None), (JobState::Completed, None));
        let failed = [stage(StageKind::Map, 3, 2, 1), stage(StageKind::Reduce, 0, 0, 0)];
        let (state, reason) = verdict(&failed, None);
        assert_eq!(state, JobState::Failed);
        let reason = reason.expect("a reason");
        assert!(reason.contains("1 in `s`") && reason.contains("skipped"), "{reason}");
    }

    #[test]
    fn the_deadline_counts_from_submission() {
        let spec_with = |deadline: Option<Duration>| {
            let mut spec: JobSpec = serde_json::from_value(serde_json::json!({
                "name": "d", "input": {"local": "/in"}, "split": "per_file", "stages": [],
                "output": {"path": "/out"}, "retry": {"max_attempts": 1, "backoff": "1s", "max_backoff": "1s"},
            }))
            .expect("spec");
            spec.deadline = deadline;
            spec
        };
        let job = |submitted_at| JobRecord {
            id: "j".into(),
            name: "d".into(),
            state: JobState::Running,
            spec: String::new(),
            submitted_at,
            started_at: None,
            finished_at: None,
            error: None,
        };
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(deadline_passed(&job(now_millis()), &spec_with(hour)), None);
        let reason = deadline_passed(&job(now_millis() - 3_601_000), &spec_with(hour)).expect("passed");
        assert!(reason.contains("deadline of 1h"), "{reason}");
        assert_eq!(deadline_passed(&job(0), &spec_with(None)), None, "no deadline, no limit");
    }
}
