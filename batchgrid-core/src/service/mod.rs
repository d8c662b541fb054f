//! The job manager as a long-running service: jobs arrive through an HTTP API ([`api`]), each
//! is driven to its end by its own task, and jobs a previous manager process left unfinished
//! (submitted, splitting or running) are picked up again at start; `schedules` fires scheduled
//! jobs' occurrences and `once` the one-off runs (`submit --at`); `control` retries and redrives
//! a job's failed tasks; `dependencies` resolves the jobs a job waits for (`after:`). [`client`] is the other end of the API;
//! [`compare`] fetches the reports `batchgrid report --compare` sets side by side; [`download`]
//! fetches a job's results into a directory, [`path_encoding`] puts their names in URLs;
//! [`loops`] starts the periodic loops (schedules, samples, autoscaler) of a manager service.

pub mod api;
pub mod client;
pub mod compare;
mod control;
pub mod dashboard;
mod dependencies;
pub mod download;
pub mod eta;
pub mod loops;
pub mod metrics;
mod once;
pub mod path_encoding;
mod schedules;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::analytics::{actor, HistoryEntry, JobRecord, JobState, StageProgress};
use crate::manager::{HealthReport, Manager, ManagerError};
use crate::spec::{parse_job_with_policy, InputPolicy, JobSpec, Overrides, SpecError};

pub use once::{parse_at, Deferred};
pub use schedules::ScheduleStatus;

/// A job as the API reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    /// Job id.
    pub id: String,
    /// The spec's name.
    pub name: String,
    /// Current state.
    pub state: JobState,
    /// Submission time, Unix milliseconds.
    pub submitted_at: i64,
    /// Start time.
    pub started_at: Option<i64>,
    /// End time.
    pub finished_at: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
    /// Per-stage progress (empty in listings).
    #[serde(default)]
    pub stages: Vec<StageProgress>,
    /// What the manager's watchdog last found amiss with the job's stages, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchdog: Option<String>,
    /// 0..=100, higher first (listings show the default).
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// Whether the job is paused.
    #[serde(default)]
    pub paused: bool,
    /// First-stage tasks waiting for admission to the queue.
    #[serde(default)]
    pub pending: u64,
    /// Tasks settled per second since the job started (a running job with a settled task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_per_second: Option<f64>,
    /// Seconds its remaining tasks take at that rate ([`eta::estimate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
}

fn default_priority() -> u8 {
    crate::analytics::DEFAULT_PRIORITY
}

impl JobStatus {
    fn of(job: JobRecord, stages: Vec<StageProgress>) -> Self {
        Self {
            id: job.id,
            name: job.name,
            state: job.state,
            submitted_at: job.submitted_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            error: job.error,
            stages,
            watchdog: None,
            priority: default_priority(),
            paused: false,
            pending: 0,
            tasks_per_second: None,
            eta_seconds: None,
        }
    }
}

/// Service errors, each with the HTTP status the API answers with.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The submitted job is invalid.
    #[error(transparent)]
    BadJob(#[from] SpecError),
    /// No such job.
    #[error("job `{0}` not found")]
    NotFound(String),
    /// The job has ended and cannot be changed.
    #[error("job `{id}` has already ended ({state})")]
    Ended {
        /// Job id.
        id: String,
        /// Its final state.
        state: JobState,
    },
    /// The action does not apply to the job as it is (retry of a running job, nothing to run).
    #[error("{0}")]
    Refused(String),
    /// A request's value is out of range.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The grid failed.
    #[error(transparent)]
    Manager(#[from] ManagerError),
}

impl From<crate::analytics::AnalyticsError> for ServiceError {
    fn from(error: crate::analytics::AnalyticsError) -> Self {
        ServiceError::Manager(error.into())
    }
}

/// The manager service: accepts jobs and drives each to its end.
#[derive(Debug)]
pub struct JobService {
    manager: Manager,
    tick: Duration,
    /// Where relative paths in submitted jobs resolve (the manager's working directory).
    base_dir: PathBuf,
    /// Which inputs submissions may name (on AWS: only the grid's raw bucket).
    input_policy: InputPolicy,
    running: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
}

impl JobService {
    /// A service over `manager`, checking progress every `tick`, admitting the inputs
    /// `input_policy` allows (a manager on AWS passes [`InputPolicy::RawBucket`]).
    pub fn new(manager: Manager, tick: Duration, base_dir: PathBuf, input_policy: InputPolicy) -> Arc<Self> {
        Arc::new(Self { manager, tick, base_dir, input_policy, running: Mutex::new(HashMap::new()) })
    }

    /// The manager behind the service.
    pub fn manager(&self) -> &Manager {
        &self.manager
    }

    /// Picks up every job a previous manager process left unfinished, whatever its state: the
    /// reconciler finds where each one is (a split cut short is split again; its tasks count
    /// once). A job whose stored spec cannot be read fails, as nothing could ever run it.
    pub async fn resume(self: &Arc<Self>) -> Result<usize, ServiceError> {
        let analytics = &self.manager.grid().analytics;
        // A manager restarted while the database is away waits for it rather than exiting.
        let jobs = self.manager.retrying("listing unfinished jobs", || analytics.active_jobs()).await?;
        let mut resumed = 0;
        for job in jobs {
            match serde_json::from_str::<JobSpec>(&job.spec) {
                Ok(spec) => {
                    self.start(job.id.clone(), spec);
                    resumed += 1;
                }
                Err(error) => {
                    let reason = format!("stored spec unreadable after a manager restart: {error}");
                    analytics.transition(&job.id, JobState::Failed, Some(&reason), actor::MANAGER).await?;
                }
            }
        }
        Ok(resumed)
    }

    /// Validates and submits a job document (YAML or JSON); nothing is recorded or enqueued
    /// for an invalid one.
    pub async fn submit(
        self: &Arc<Self>,
        text: &str,
        origin: &str,
        overrides: &Overrides,
    ) -> Result<String, ServiceError> {
        // The policy is checked inside parsing, before any local path is resolved.
        let mut spec = parse_job_with_policy(text, origin, &self.base_dir, overrides, &self.input_policy)?;
        // Checked here too (the manager checks every submission) to name the line in `text`.
        spec.check_against_grid(self.manager.grid().tasks.max_receives(), Some(text), origin)?;
        let after_text = overrides.after.is_empty().then_some(text);
        self.resolve_after(&mut spec, &dependencies::AfterOrigin { origin, text: after_text }).await?;
        let id = self.manager.submit(&spec).await?;
        self.start(id.clone(), spec);
        Ok(id)
    }

    fn start(self: &Arc<Self>, id: String, spec: JobSpec) {
        let service = self.clone();
        let job_id = id.clone();
        let handle = tokio::spawn(async move {
            // The driver retries infrastructure errors itself; its one error is a job that
            // vanished, which nothing can drive.
            match service.manager.drive(&job_id, &spec, service.tick, |_, _| {}).await {
                Ok(report) => tracing::info!(job = %job_id, state = %report.state, "job ended"),
                Err(error) => tracing::error!(job = %job_id, %error, "job driver stopped"),
            }
            if let Ok(mut running) = service.running.lock() {
                running.remove(&job_id);
            }
        });
        if let Ok(mut running) = self.running.lock() {
            running.insert(id, handle);
        }
    }

    /// Every job, newest first.
    pub async fn jobs(&self) -> Result<Vec<JobStatus>, ServiceError> {
        let jobs = self.manager.grid().analytics.jobs().await?;
        Ok(jobs.into_iter().map(|job| JobStatus::of(job, Vec::new())).collect())
    }

    /// One job with its per-stage progress.
    pub async fn status(&self, id: &str) -> Result<JobStatus, ServiceError> {
        let analytics = &self.manager.grid().analytics;
        let job = analytics.job(id).await?.ok_or_else(|| ServiceError::NotFound(id.to_owned()))?;
        let stages = analytics.stages(id).await?;
        let mut status = JobStatus::of(job, stages);
        status.watchdog = self.manager.watchdog_note(id);
        if let Some(admission) = analytics.admission(id).await? {
            (status.priority, status.paused, status.pending) =
                (admission.priority, admission.paused, admission.pending);
        }
        if let (false, Some(started_at)) = (status.state.is_terminal(), status.started_at) {
            if let Some(eta) = eta::estimate(&status.stages, started_at, crate::db::now_millis()) {
                status.tasks_per_second = Some(eta.tasks_per_second);
                status.eta_seconds = Some(eta.remaining.as_secs());
            }
        }
        Ok(status)
    }

    /// Pauses (`true`) or resumes a job that has not ended; pausing a paused job (or resuming
    /// a running one) changes nothing and is no error.
    pub async fn set_paused(&self, id: &str, paused: bool) -> Result<(), ServiceError> {
        self.live(id).await?;
        if !self.manager.set_paused(id, paused).await? {
            // Already so, or it ended meanwhile: only the latter is an error.
            self.live(id).await?;
        }
        Ok(())
    }

    /// Changes the priority of a job that has not ended.
    pub async fn set_priority(&self, id: &str, priority: u8) -> Result<(), ServiceError> {
        let max = crate::analytics::MAX_PRIORITY;
        if priority > max {
            return Err(ServiceError::Invalid {
                field: "priority".into(),
                message: format!("{priority}: must be between 0 and {max} (higher runs first)"),
            });
        }
        self.live(id).await?;
        if !self.manager.set_priority(id, priority).await? {
            self.live(id).await?;
        }
        Ok(())
    }

    /// `NotFound` for an unknown job, `Ended` for one that has ended.
    async fn live(&self, id: &str) -> Result<(), ServiceError> {
        let state = self.state(id).await?;
        if state.is_terminal() {
            return Err(ServiceError::Ended { id: id.to_owned(), state });
        }
        Ok(())
    }

    /// The manager's health: which parts of the grid it cannot reach, and since when.
    pub async fn health(&self) -> HealthReport {
        self.manager.probe_health().await
    }

    /// A job's history: every state change with its time, reason and actor.
    pub async fn history(&self, id: &str) -> Result<Vec<HistoryEntry>, ServiceError> {
        self.state(id).await?;
        Ok(self.manager.grid().analytics.history(id).await?)
    }

    /// One task's captured `stream` (`stdout` or `stderr`), as stored by the worker that ran
    /// it last (at most [`crate::processor::command::LOG_CAP`] bytes and a note). A task whose
    /// stream was empty, or that ran a processor rather than a command, has none.
    pub async fn task_log(
        &self,
        id: &str,
        stage: &str,
        task: &str,
        stream: &str,
    ) -> Result<bytes::Bytes, ServiceError> {
        let analytics = &self.manager.grid().analytics;
        let job = analytics.job(id).await?.ok_or_else(|| ServiceError::NotFound(id.to_owned()))?;
        let missing = || ServiceError::NotFound(format!("{id}: stage `{stage}`, task `{task}`, {stream}"));
        let name = match stream {
            "stdout" => crate::processor::command::LOG_STREAMS[0],
            "stderr" => crate::processor::command::LOG_STREAMS[1],
            _ => return Err(missing()),
        };
        // Task ids are generated (digits, or `all` for a reduce): anything else names no task,
        // and must not reach the store as a key.
        if task.is_empty() || !task.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(missing());
        }
        let spec: JobSpec = serde_json::from_str(&job.spec).map_err(|_| missing())?;
        let index = spec.stages.iter().position(|s| s.name == stage).ok_or_else(missing)?;
        let key = format!("{}{name}", crate::task::log_prefix(id, index as u32, stage, task));
        match self.manager.grid().store.get(&key).await {
            Ok(bytes) => Ok(bytes),
            Err(crate::store::StoreError::NotFound(_)) => Err(missing()),
            Err(error) => Err(ServiceError::Manager(error.into())),
        }
    }

    /// Cancels a job that has not ended.
    pub async fn cancel(&self, id: &str) -> Result<(), ServiceError> {
        let state = self.state(id).await?;
        if state.is_terminal() || !self.manager.cancel(id).await? {
            // Ended before the cancel (or while it was on its way): the guarded change refused.
            let state = self.state(id).await?;
            return Err(ServiceError::Ended { id: id.to_owned(), state });
        }
        Ok(())
    }

    /// A job's state alone (no stage progress), or `NotFound`.
    async fn state(&self, id: &str) -> Result<JobState, ServiceError> {
        let job = self.manager.grid().analytics.job(id).await?;
        Ok(job.ok_or_else(|| ServiceError::NotFound(id.to_owned()))?.state)
    }

    /// Jobs being driven by this process.
    pub fn active(&self) -> usize {
        self.running.lock().map(|r| r.len()).unwrap_or(0)
    }
}
