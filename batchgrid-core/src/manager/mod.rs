//! The job manager: accepts a job, stages its input in the object store while cutting it into
//! tasks, enqueues them in batches, watches progress, starts reduce stages at their barrier,
//! notices dead letters, and completes the job by copying its results out.
//!
//! The manager is a level-triggered reconciler, in the manner of Kubernetes controllers: each
//! pass reads the job as it is in the analytics store and takes the next idempotent step, so a
//! restarted manager picks up where it left off, whatever state it finds. An infrastructure
//! error (database, queue, object store, network) is reported in the manager's [`Health`] and
//! retried with capped exponential backoff; it never fails a job. A job fails only for its own
//! reasons: tasks failed past their retries, bad input, or its deadline.
//!
//! Rooms: [`split`](self::split) cuts the input into tasks, [`admission`] lets them into the
//! queue by priority and fair share, `reconcile` drives a job pass by pass,
//! `dependencies` holds a job back until the jobs it names (`after:`) have completed,
//! `redrive` sends a job's failed tasks back for another run (`job retry`, `job redrive`),
//! `dead_letters` consumes the dead-letter queues, `stages` is the per-stage watchdog that
//! repairs lost forwards, [`health`] keeps what is failing and since when, [`results`]
//! names the final stage's objects as the job's results, and `pacer` sets how soon the
//! manager looks again between passes, so a stage's end is noticed as it happens.
//! [`quiet`] says when the manager has nothing to do, so its periodic loops leave the
//! analytics store alone and the database may pause.

pub mod admission;
mod dead_letters;
mod dependencies;
pub mod health;
mod pacer;
pub mod quiet;
mod reconcile;
mod redrive;
pub mod results;
mod split;
mod stages;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

pub use self::admission::{allocate, AdmissionPass, AdmissionSettings};
pub use self::health::{Backoff, Health, HealthReport};
pub use self::quiet::{Activity, QuietSettings};
pub use self::redrive::{RedriveFilter, RedriveRefusal, Redriven};
use crate::analytics::{actor, AnalyticsError, JobRecord, JobState, StageProgress, StageRecord};
use crate::db::now_millis;
use crate::grid::Grid;
use crate::queue::QueueError;
use crate::report::JobReport;
use crate::spec::JobSpec;
use crate::split::SplitError;
use crate::store::{ObjectStore, StoreError};
use crate::task::{report_key, spec_key};

/// Batches of ten sent concurrently while enqueueing.
const SEND_CONCURRENCY: usize = 8;
/// Chunks staged ahead of the enqueuer; bounds spool disk and memory.
const SPLIT_AHEAD: usize = 4;
/// How long a health probe waits for the analytics store.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a finished job's report waits for workers' last request counts.
const REQUESTS_SETTLE: Duration = Duration::from_millis(2500);

/// Manager errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// Splitting the input failed.
    #[error(transparent)]
    Split(#[from] SplitError),
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The queue failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The analytics store failed.
    #[error(transparent)]
    Analytics(#[from] AnalyticsError),
    /// Writing results out failed.
    #[error("writing results to {path}: {source}")]
    Output {
        /// Where.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The job's input cannot be read.
    #[error("input {input}: {message}")]
    Input {
        /// The input as given.
        input: String,
        /// What is wrong.
        message: String,
    },
    /// The job asks for more than its grid can honour.
    #[error(transparent)]
    Refused(#[from] crate::spec::SpecError),
    /// The spool directory is unusable.
    #[error("spool directory {path}: {source}")]
    Spool {
        /// Where.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl ManagerError {
    /// Whether the job itself is at fault (its input cannot be read or split, its output
    /// cannot be written), rather than the infrastructure: only such an error fails a job.
    pub fn is_job_fault(&self) -> bool {
        use std::io::ErrorKind::{InvalidData, InvalidInput, NotFound, PermissionDenied};
        match self {
            ManagerError::Input { .. } | ManagerError::Output { .. } | ManagerError::Refused(_) => true,
            ManagerError::Split(SplitError::HeaderTooLong(_) | SplitError::Empty(_)) => true,
            ManagerError::Split(SplitError::Manifest(crate::manifest::ManifestError::Line { .. })) => true,
            ManagerError::Split(SplitError::Store { source: StoreError::NotFound(_), .. }) => true,
            ManagerError::Split(
                SplitError::Io { source, .. }
                | SplitError::Manifest(crate::manifest::ManifestError::Read { source, .. }),
            ) => matches!(source.kind(), NotFound | PermissionDenied | InvalidData | InvalidInput),
            _ => false,
        }
    }

    /// The part of the grid an infrastructure error comes from, as [`Health`] names it.
    pub fn part(&self) -> &'static str {
        match self {
            ManagerError::Analytics(_) => "analytics",
            ManagerError::Queue(_) => "queue",
            ManagerError::Store(_) | ManagerError::Split(SplitError::Store { .. }) => "store",
            ManagerError::Split(_) | ManagerError::Output { .. } | ManagerError::Spool { .. } => "disk",
            ManagerError::Input { .. } | ManagerError::Refused(_) => "input",
        }
    }
}

/// A job's progress as the manager sees it on one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobProgress {
    /// The job's state.
    pub state: JobState,
    /// Per-stage progress.
    pub stages: Vec<StageProgress>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

impl JobProgress {
    /// Tasks done across stages.
    pub fn done(&self) -> u64 {
        self.stages.iter().map(|s| s.done).sum()
    }

    /// Tasks failed across stages.
    pub fn failed(&self) -> u64 {
        self.stages.iter().map(|s| s.failed).sum()
    }

    /// Tasks known so far across stages (a lower bound until every stage's count is known).
    pub fn known_total(&self) -> u64 {
        self.stages.iter().map(|s| s.expected.unwrap_or(s.done + s.failed)).sum()
    }
}

/// Where the grid's instance-hours during a job come from (the worker group's activity on AWS).
#[async_trait::async_trait]
pub trait InstanceUsageSource: Send + Sync {
    /// Instance-hours by type between two Unix-millisecond times.
    async fn usage(&self, from: i64, to: i64) -> Result<Vec<crate::report::InstanceUsage>, String>;
}

/// Opens an object store over a named bucket, for `s3://` inputs.
pub type BucketOpener = Arc<dyn Fn(&str) -> Arc<dyn ObjectStore> + Send + Sync>;

/// The job manager.
#[derive(Clone)]
pub struct Manager {
    grid: Grid,
    spool: PathBuf,
    buckets: Option<BucketOpener>,
    copy_results: bool,
    process_id: String,
    dead_letter_every: Duration,
    instance_usage: Option<Arc<dyn InstanceUsageSource>>,
    /// What a task-hour costs on the worker group, where its instance type's price is known.
    compute_price: Option<crate::metering::ComputePrice>,
    /// The worker group's instances, where there is a group (AWS).
    instances: Option<Arc<dyn crate::scaling::InstanceList>>,
    /// When the dead-letter queues were last read (they are shared by every job).
    last_dead_letter_scan: Arc<Mutex<Option<std::time::Instant>>>,
    health: Health,
    /// What each job's watchdog last found amiss, for its status.
    watchdog_notes: Arc<Mutex<HashMap<String, String>>>,
    /// The admission loop's state, shared by clones so one loop serves every job driven.
    admission: Arc<admission::Admission>,
    admission_settings: AdmissionSettings,
    /// Whether the manager has anything to do, shared by its loops, drivers and API.
    activity: Activity,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager").field("grid", &self.grid).field("spool", &self.spool).finish_non_exhaustive()
    }
}

impl Manager {
    /// A manager for `grid`, spooling chunks under `spool`.
    pub fn new(grid: Grid, spool: impl Into<PathBuf>) -> Self {
        let process_id = format!("manager-{}", ulid::Ulid::new().to_string().to_lowercase());
        Self {
            grid,
            spool: spool.into(),
            buckets: None,
            copy_results: true,
            process_id,
            dead_letter_every: Duration::ZERO,
            instance_usage: None,
            compute_price: None,
            instances: None,
            last_dead_letter_scan: Arc::default(),
            health: Health::default(),
            watchdog_notes: Arc::default(),
            admission: Arc::default(),
            admission_settings: AdmissionSettings::default(),
            activity: Activity::default(),
        }
    }

    /// Lets the loops rest as `settings` say instead of by the defaults (call before cloning).
    pub fn with_quiet(mut self, settings: QuietSettings) -> Self {
        self.activity = Activity::new(settings);
        self
    }

    /// Whether the manager has anything to do; its loops pace themselves by it.
    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Admits tasks as `settings` say instead of by the defaults.
    pub fn with_admission(mut self, settings: AdmissionSettings) -> Self {
        self.admission_settings = settings;
        self
    }

    /// Lets jobs read `s3://` inputs through `opener`.
    pub fn with_buckets(mut self, opener: BucketOpener) -> Self {
        self.buckets = Some(opener);
        self
    }

    /// Reads the dead-letter queues at most this often per job (each read is a billed request
    /// on SQS; the embedded queue's are free, so it reads them every tick).
    pub fn with_dead_letter_scan_every(mut self, every: Duration) -> Self {
        self.dead_letter_every = every;
        self
    }

    /// Prices task time at `price` (the dashboard's cost so far).
    pub fn with_compute_price(mut self, price: crate::metering::ComputePrice) -> Self {
        self.compute_price = Some(price);
        self
    }

    /// Lists the worker group's instances through `list` (the dashboard's grid page).
    pub fn with_instances(mut self, list: Arc<dyn crate::scaling::InstanceList>) -> Self {
        self.instances = Some(list);
        self
    }

    /// The worker group's instances, where there is a group.
    pub fn instances(&self) -> Option<&Arc<dyn crate::scaling::InstanceList>> {
        self.instances.as_ref()
    }

    /// What a task-hour costs, where known.
    pub fn compute_price(&self) -> Option<&crate::metering::ComputePrice> {
        self.compute_price.as_ref()
    }

    /// Adds the grid's instance-hours to every job's report.
    pub fn with_instance_usage(mut self, source: Arc<dyn InstanceUsageSource>) -> Self {
        self.instance_usage = Some(source);
        self
    }

    /// Leaves results in the object store instead of copying them to the job's local output
    /// directory (a manager service, whose users fetch them through its API).
    pub fn keep_results_in_store(mut self) -> Self {
        self.copy_results = false;
        self
    }

    /// The grid this manager drives.
    pub fn grid(&self) -> &Grid {
        &self.grid
    }

    /// Which parts of the grid this manager cannot reach, and since when.
    pub fn health(&self) -> HealthReport {
        self.health.report()
    }

    /// Asks the analytics store a trivial question, so health is current even with no job
    /// running; returns the report.
    pub async fn probe_health(&self) -> HealthReport {
        let probe = tokio::time::timeout(PROBE_TIMEOUT, self.grid.analytics.job("health-probe")).await;
        match probe {
            Ok(Ok(_)) => self.health.recovered("analytics"),
            Ok(Err(error)) => self.health.failed(&error.into()),
            Err(_) => self.health.failed_part("analytics", "no answer within 5s"),
        }
        self.health.report()
    }

    /// The manager's failures per part (analytics, queue, store, disk) since it started.
    pub fn error_counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.health.error_counts()
    }

    /// What the job's watchdog last found amiss (a stalled stage, a repaired forward).
    pub fn watchdog_note(&self, job_id: &str) -> Option<String> {
        self.watchdog_notes.lock().ok().and_then(|notes| notes.get(job_id).cloned())
    }

    /// Records a new job and publishes its spec for the workers; returns its id.
    pub async fn submit(&self, spec: &JobSpec) -> Result<String, ManagerError> {
        // A scheduled job runs only as one of its occurrences (`JobSpec::for_occurrence`).
        spec.refuse_if_scheduled(&spec.name)?;
        spec.check_against_grid(self.grid.tasks.max_receives(), None, &spec.name)?;
        let id = format!("{}-{}", spec.name, ulid::Ulid::new().to_string().to_lowercase());
        let spec_json = serde_json::to_string(spec).unwrap_or_default();
        // Workers read the spec from the store; publish it before any task can reference it.
        self.grid.store.put(&spec_key(&id), Bytes::from(spec_json.clone())).await?;
        let record = JobRecord {
            id: id.clone(),
            name: spec.name.clone(),
            state: JobState::Submitted,
            spec: spec_json,
            submitted_at: now_millis(),
            started_at: None,
            finished_at: None,
            error: None,
        };
        let stages: Vec<StageRecord> = spec
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| StageRecord { stage: i as u32, name: s.name.clone(), kind: s.kind })
            .collect();
        self.grid.analytics.create_job(&record, &stages).await?;
        self.grid.analytics.init_admission(&id, spec.priority).await?;
        tracing::info!(job = %id, priority = spec.priority, "job submitted");
        Ok(id)
    }

    /// Copies the final stage's results to the job's output directory.
    async fn write_results(&self, job_id: &str, spec: &JobSpec) -> Result<u64, ManagerError> {
        let root = &spec.output.path;
        let mut written = 0;
        for (relative, object) in self.result_objects(job_id, spec).await? {
            let target = root.join(relative);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|source| ManagerError::Output { path: parent.to_path_buf(), source })?;
            }
            written += self.grid.store.get_to_file(&object.key, &target).await?;
        }
        Ok(written)
    }

    /// Cancels a job (wins over any concurrent change); workers delete its remaining tasks
    /// unrun. Returns whether it applied: `false` for a job that had already ended.
    pub async fn cancel(&self, job_id: &str) -> Result<bool, ManagerError> {
        let reason = Some("cancelled on request");
        Ok(self.grid.analytics.transition(job_id, JobState::Cancelled, reason, actor::OPERATOR).await?)
    }

    /// Pauses (`true`) or resumes a job that has not ended: while paused, no new task of it
    /// starts (none is admitted, and workers give back those they receive); running tasks
    /// finish. Recorded in its history. Returns whether it changed.
    pub async fn set_paused(&self, job_id: &str, paused: bool) -> Result<bool, ManagerError> {
        Ok(self.grid.analytics.set_paused(job_id, paused, actor::OPERATOR).await?)
    }

    /// Changes the priority of a job that has not ended (from the next admission pass on).
    /// Recorded in its history. Returns whether it changed.
    pub async fn set_priority(&self, job_id: &str, priority: u8) -> Result<bool, ManagerError> {
        Ok(self.grid.analytics.set_priority(job_id, priority, actor::OPERATOR).await?)
    }

    /// Ends a job as failed for a reason of its own (bad input, a spec that cannot be read).
    /// Returns whether it applied.
    pub async fn fail(&self, job_id: &str, reason: &str) -> Result<bool, ManagerError> {
        Ok(self.grid.analytics.transition(job_id, JobState::Failed, Some(reason), actor::MANAGER).await?)
    }

    /// This manager process's id in request accounting.
    pub fn process_id(&self) -> String {
        self.process_id.clone()
    }

    /// The stored report of a finished job, if there is one.
    pub async fn stored_report(&self, job_id: &str) -> Result<Option<JobReport>, ManagerError> {
        match self.grid.store.get(&report_key(job_id)).await {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }
}

/// The default spool directory under a state directory.
pub fn spool_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("spool")
}
