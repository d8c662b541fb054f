//! The job manager: accepts a job, stages its input in the object store while cutting it into
//! tasks, enqueues them in batches, watches progress, starts reduce stages at their barrier,
//! notices dead letters, and completes the job by copying its results out.
//!
//! The manager keeps no state of its own between ticks: everything it decides is read back from
//! the analytics store, so a restarted manager picks up where it left off.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::analytics::{
    actor, AnalyticsError, AttemptOutcome, AttemptRecord, JobRecord, JobState, StageProgress, StageRecord,
};
use crate::db::now_millis;
use crate::grid::Grid;
use crate::queue::{QueueError, TaskQueue, MAX_BATCH};
use crate::report::JobReport;
use crate::spec::{InputSpec, JobSpec, SplitSpec, StageKind};
use crate::split::{split_input, Chunk, ChunkData, SplitError};
use crate::store::{ObjectMeta, ObjectStore, StoreError};
use crate::task::{
    chunk_task_id, input_key, report_key, spec_key, stage_prefix, TaskMessage, MAX_INLINE_BYTES, REDUCE_TASK_ID,
};

/// Batches of ten sent concurrently while enqueueing.
const SEND_CONCURRENCY: usize = 8;
/// Chunks staged ahead of the enqueuer; bounds spool disk and memory.
const SPLIT_AHEAD: usize = 4;
/// How long a finished job's report waits for workers' last request counts.
const REQUESTS_SETTLE: Duration = Duration::from_millis(2500);
/// Dead letters read per tick.
const DEAD_LETTER_SCAN: usize = 100;

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
    last_dead_letter_scan: Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>,
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
            last_dead_letter_scan: Arc::default(),
        }
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

    /// Records a new job and publishes its spec for the workers; returns its id.
    pub async fn submit(&self, spec: &JobSpec) -> Result<String, ManagerError> {
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
        tracing::info!(job = %id, "job submitted");
        Ok(id)
    }

    /// Stages the input and enqueues the first stage's tasks as the chunks are cut; returns
    /// how many. `on_task` is called with the running count. The job is running from the first
    /// enqueued batch, so workers start before the split ends.
    pub async fn split(&self, job_id: &str, spec: &JobSpec, on_task: impl Fn(u64) + Send) -> Result<u64, ManagerError> {
        self.grid.analytics.transition(job_id, JobState::Splitting, None, actor::MANAGER).await?;
        let spool = self.spool.join(job_id);
        std::fs::create_dir_all(&spool).map_err(|source| ManagerError::Spool { path: spool.clone(), source })?;
        let input = match &spec.input {
            InputSpec::Local(path) => path.clone(),
            InputSpec::S3 { bucket, key } => match self.fetch_input(bucket, key, spec.split, &spool).await {
                Ok(path) => path,
                Err(error) => {
                    let _ = std::fs::remove_dir_all(&spool);
                    return Err(error);
                }
            },
        };
        let input = &input;

        // The splitter is blocking file work; chunks come through a small bounded channel.
        let (chunk_tx, mut chunk_rx) = tokio::sync::mpsc::channel::<Chunk>(SPLIT_AHEAD);
        let splitter = {
            let (input, split, spool) = (input.clone(), spec.split, spool.clone());
            tokio::task::spawn_blocking(move || {
                split_input(&input, split, &spool, |chunk| {
                    chunk_tx.blocking_send(chunk).map_err(|_| SplitError::Stopped("the enqueuer stopped".into()))
                })
            })
        };

        let mut pending: Vec<String> = Vec::with_capacity(MAX_BATCH * SEND_CONCURRENCY);
        let mut staged = 0u64;
        let mut started = false;
        let mut failure: Option<ManagerError> = None;
        while let Some(chunk) = chunk_rx.recv().await {
            let task = chunk_task_id(chunk.index);
            let key = input_key(job_id, &task, &chunk.file_name, spec.split == SplitSpec::PerFile);
            let mut inline = None;
            let result = match chunk.data {
                ChunkData::Memory(bytes) if bytes.len() <= MAX_INLINE_BYTES => match String::from_utf8(bytes) {
                    Ok(text) => {
                        inline = Some(text);
                        Ok(())
                    }
                    Err(not_text) => self.grid.store.put(&key, Bytes::from(not_text.into_bytes())).await,
                },
                ChunkData::Memory(bytes) => self.grid.store.put(&key, Bytes::from(bytes)).await,
                ChunkData::File { path, spooled } => {
                    let stored = self.grid.store.put_file(&key, &path).await.map(|_| ());
                    if spooled {
                        let _ = std::fs::remove_file(&path);
                    }
                    stored
                }
            };
            if let Err(error) = result {
                failure = Some(error.into());
                break;
            }
            pending.push(TaskMessage { job: job_id.to_owned(), stage: 0, task, input: key, data: inline }.encode());
            staged += 1;
            if pending.len() >= MAX_BATCH * SEND_CONCURRENCY {
                if let Err(error) = self.enqueue(&self.grid.tasks, std::mem::take(&mut pending)).await {
                    failure = Some(error);
                    break;
                }
                if !started {
                    started = true;
                    self.grid.analytics.transition(job_id, JobState::Running, None, actor::MANAGER).await?;
                }
                on_task(staged);
            }
        }
        drop(chunk_rx);
        let split_result = splitter.await.map_err(|e| SplitError::Stopped(e.to_string()))?;
        let _ = std::fs::remove_dir_all(&spool);
        if let Some(error) = failure {
            return Err(error);
        }
        let count = split_result?;
        self.enqueue(&self.grid.tasks, pending).await?;
        on_task(staged);
        self.grid.analytics.set_stage_expected(job_id, 0, count).await?;
        if !started {
            self.grid.analytics.transition(job_id, JobState::Running, None, actor::MANAGER).await?;
        }
        tracing::info!(job = %job_id, tasks = count, "split complete");
        Ok(count)
    }

    /// Downloads an `s3://` input into the spool: the one object for a chunked split, every
    /// object under the prefix otherwise (keeping their relative paths). Returns the local path.
    async fn fetch_input(
        &self,
        bucket: &str,
        key: &str,
        split: SplitSpec,
        spool: &Path,
    ) -> Result<PathBuf, ManagerError> {
        let describe = || format!("s3://{bucket}/{key}");
        let Some(opener) = &self.buckets else {
            return Err(ManagerError::Input { input: describe(), message: "s3:// inputs need a grid on AWS".into() });
        };
        let store = opener(bucket);
        let root = spool.join("input");
        let objects: Vec<String> = if split == SplitSpec::PerFile {
            store.list(key).await?.into_iter().map(|o| o.key).filter(|k| !k.ends_with('/')).collect()
        } else {
            vec![key.to_owned()]
        };
        if objects.is_empty() {
            return Err(ManagerError::Input { input: describe(), message: "no objects under this prefix".into() });
        }
        let base = match key.rfind('/') {
            Some(i) => &key[..=i],
            None => "",
        };
        let spool_error = |path: &Path, source| ManagerError::Spool { path: path.to_path_buf(), source };
        let mut single = None;
        for object in &objects {
            let relative = object.strip_prefix(base).unwrap_or(object);
            let target = root.join(relative);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| spool_error(parent, e))?;
            }
            match store.get_to_file(object, &target).await {
                Err(StoreError::NotFound(_)) => {
                    return Err(ManagerError::Input { input: describe(), message: "no such object".into() })
                }
                other => other?,
            };
            single = Some(target);
        }
        // One object named exactly by the key is a file input; anything else a directory.
        Ok(match single {
            Some(path) if objects.len() == 1 && objects[0] == key => path,
            _ => root,
        })
    }

    /// Sends bodies in batches of ten, several batches in flight.
    async fn enqueue(&self, queue: &Arc<dyn TaskQueue>, bodies: Vec<String>) -> Result<(), ManagerError> {
        let batches: Vec<Vec<String>> = bodies.chunks(MAX_BATCH).map(<[String]>::to_vec).collect();
        let mut sends = futures::stream::iter(batches.into_iter().map(|batch| {
            let queue = queue.clone();
            async move { queue.send_batch(&batch).await }
        }))
        .buffer_unordered(SEND_CONCURRENCY);
        while let Some(result) = sends.next().await {
            result?;
        }
        Ok(())
    }

    /// One monitoring step: records dead letters, opens stages whose predecessors finished
    /// (enqueueing reduce tasks), and ends the job when every stage has.
    pub async fn tick(&self, job_id: &str, spec: &JobSpec) -> Result<JobProgress, ManagerError> {
        let Some(job) = self.grid.analytics.job(job_id).await? else {
            return Err(AnalyticsError::JobNotFound(job_id.to_owned()).into());
        };
        if job.state.is_terminal() {
            let stages = self.grid.analytics.stages(job_id).await?;
            return Ok(JobProgress { state: job.state, stages, error: job.error });
        }
        let scan_due = self.last_dead_letter_scan.lock().map_or(true, |mut scans| {
            let due = scans.get(job_id).is_none_or(|at| at.elapsed() >= self.dead_letter_every);
            if due {
                scans.insert(job_id.to_owned(), std::time::Instant::now());
            }
            due
        });
        if scan_due {
            self.collect_dead_letters(job_id).await?;
        }
        let mut stages = self.grid.analytics.stages(job_id).await?;
        let mut state = job.state;
        let mut error = None;

        for index in 0..stages.len() {
            if stages[index].expected.is_none() {
                if index == 0 {
                    break; // Still splitting.
                }
                let previous = stages[index - 1].clone();
                if !previous.is_finished() {
                    break;
                }
                let stage = &spec.stages[index];
                let expected = match stage.kind {
                    // Map tasks have been streaming in; one per done task of the stage before.
                    StageKind::Map => previous.done,
                    StageKind::Reduce if previous.failed > 0 || previous.done == 0 => 0,
                    StageKind::Reduce => {
                        let prior = &spec.stages[index - 1];
                        let message = TaskMessage {
                            job: job_id.to_owned(),
                            stage: index as u32,
                            task: REDUCE_TASK_ID.to_owned(),
                            input: stage_prefix(job_id, (index - 1) as u32, &prior.name),
                            data: None,
                        };
                        self.enqueue(&self.grid.tasks, vec![message.encode()]).await?;
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

        if stages.first().is_some_and(|s| s.expected == Some(0)) {
            error = Some("the input produced no tasks".to_owned());
            state = JobState::Failed;
        } else if stages.iter().all(StageProgress::is_finished) {
            let failed: Vec<String> =
                stages.iter().filter(|s| s.failed > 0).map(|s| format!("{} in `{}`", s.failed, s.name)).collect();
            let skipped: Vec<String> = stages
                .iter()
                .filter(|s| s.kind == StageKind::Reduce && s.expected == Some(0))
                .map(|s| format!("`{}`", s.name))
                .collect();
            if failed.is_empty() && skipped.is_empty() {
                state = JobState::Completed;
            } else {
                state = JobState::Failed;
                let mut reason = format!("failed tasks: {}", failed.join(", "));
                if !skipped.is_empty() {
                    reason.push_str(&format!("; skipped: {}", skipped.join(", ")));
                }
                error = Some(reason);
            }
        }
        if state.is_terminal() {
            if state == JobState::Completed && self.copy_results {
                if let Err(e) = self.write_results(job_id, spec).await {
                    state = JobState::Failed;
                    error = Some(e.to_string());
                }
            }
            self.grid.analytics.transition(job_id, state, error.as_deref(), actor::MANAGER).await?;
            tracing::info!(job = %job_id, %state, "job finished");
        }
        Ok(JobProgress { state, stages, error })
    }

    /// Records dead letters of this job that no worker recorded as failed (a task whose
    /// worker died on every delivery).
    async fn collect_dead_letters(&self, job_id: &str) -> Result<(), ManagerError> {
        for queue in [&self.grid.tasks, &self.grid.chain] {
            let letters = queue.dead_letters(DEAD_LETTER_SCAN).await?;
            let mut records = Vec::new();
            for letter in letters {
                let Ok(task) = TaskMessage::decode(&letter.body) else { continue };
                if task.job != job_id {
                    continue;
                }
                let known = self.grid.analytics.task(job_id, task.stage, &task.task).await?;
                if known.as_ref().is_some_and(|t| t.status == "failed" || t.status == "done") {
                    continue;
                }
                let reason = letter.reason.unwrap_or_else(|| "dead-lettered".into());
                let last = known.and_then(|t| t.last_error).map(|e| format!("; last error: {e}")).unwrap_or_default();
                let now = now_millis();
                records.push(AttemptRecord {
                    job_id: job_id.to_owned(),
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
                });
            }
            self.grid.analytics.record_attempts(&records).await?;
        }
        Ok(())
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

    /// The final stage's results: (path relative to the job's output, object), sorted.
    pub async fn result_objects(
        &self,
        job_id: &str,
        spec: &JobSpec,
    ) -> Result<Vec<(String, ObjectMeta)>, ManagerError> {
        let last = spec.last_stage();
        let stage = &spec.stages[last];
        let prefix = stage_prefix(job_id, last as u32, &stage.name);
        let reduce_prefix = format!("{REDUCE_TASK_ID}/");
        let objects = self.grid.store.list(&prefix).await?;
        Ok(objects
            .into_iter()
            .map(|object| {
                let mut relative = object.key.strip_prefix(&prefix).unwrap_or(&object.key);
                if stage.kind == StageKind::Reduce {
                    relative = relative.strip_prefix(&reduce_prefix).unwrap_or(relative);
                }
                (relative.to_owned(), object)
            })
            .collect())
    }

    /// Marks a job cancelled; workers delete its remaining tasks unrun.
    pub async fn cancel(&self, job_id: &str) -> Result<(), ManagerError> {
        self.grid
            .analytics
            .transition(job_id, JobState::Cancelled, Some("cancelled on request"), actor::OPERATOR)
            .await?;
        Ok(())
    }

    /// Ends a job as failed for a reason outside its tasks (its grid went away).
    pub async fn fail(&self, job_id: &str, reason: &str) -> Result<(), ManagerError> {
        self.grid.analytics.transition(job_id, JobState::Failed, Some(reason), actor::MANAGER).await?;
        Ok(())
    }

    /// Runs a job from submission to its end, reporting progress on every tick.
    pub async fn run(
        &self,
        spec: &JobSpec,
        tick_every: Duration,
        on_progress: impl FnMut(&str, &JobProgress) + Send,
    ) -> Result<JobReport, ManagerError> {
        let job_id = self.submit(spec).await?;
        self.drive(&job_id, spec, true, tick_every, on_progress).await
    }

    /// Drives a submitted job to its end: splits it (unless it already was), ticks until it
    /// ends, and returns its report with the AWS requests made meanwhile. The report is also
    /// stored beside the job's results.
    pub async fn drive(
        &self,
        job_id: &str,
        spec: &JobSpec,
        split: bool,
        tick_every: Duration,
        mut on_progress: impl FnMut(&str, &JobProgress) + Send,
    ) -> Result<JobReport, ManagerError> {
        let job_id = job_id.to_owned();
        let requests_before = self.grid.analytics.request_totals().await?;
        let splitter = split.then(|| {
            let manager = self.clone();
            let (job_id, spec) = (job_id.clone(), spec.clone());
            tokio::spawn(async move { manager.split(&job_id, &spec, |_| {}).await })
        });
        let mut splitter = splitter;
        loop {
            if splitter.as_ref().is_some_and(|s| s.is_finished()) {
                if let Some(handle) = splitter.take() {
                    let outcome = handle.await.map_err(|e| SplitError::Stopped(e.to_string()));
                    if let Some(error) = match outcome {
                        Ok(Ok(_)) => None,
                        Ok(Err(error)) => Some(error.to_string()),
                        Err(error) => Some(error.to_string()),
                    } {
                        self.grid.analytics.transition(&job_id, JobState::Failed, Some(&error), actor::MANAGER).await?;
                    }
                }
            }
            let progress = self.tick(&job_id, spec).await?;
            on_progress(&job_id, &progress);
            if progress.state.is_terminal() {
                break;
            }
            tokio::time::sleep(tick_every).await;
        }
        if let Some(handle) = splitter {
            handle.abort();
        }
        let output = self.copy_results.then_some(spec.output.path.as_path());
        if let Ok(mut scans) = self.last_dead_letter_scan.lock() {
            scans.remove(&job_id);
        }
        if !requests_before.is_empty() || !self.grid.meter.snapshot().is_empty() {
            // Workers publish their request counts every couple of seconds; wait for the last.
            tokio::time::sleep(REQUESTS_SETTLE).await;
        }
        self.grid.publish_requests(&self.process_id()).await;
        let requests_after = self.grid.analytics.request_totals().await?;
        let mut report = JobReport::build(self.grid.analytics.as_ref(), &job_id, output)
            .await?
            .with_requests(&requests_before, &requests_after);
        if let (Some(source), Some(job)) = (&self.instance_usage, self.grid.analytics.job(&job_id).await?) {
            let (from, to) = (job.started_at.unwrap_or(job.submitted_at), job.finished_at.unwrap_or_else(now_millis));
            match source.usage(from, to).await {
                Ok(usage) => report = report.with_instance_usage(usage),
                Err(error) => tracing::warn!(%error, job = %job_id, "could not read the grid's instance-hours"),
            }
        }
        let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
        if let Err(error) = self.grid.store.put(&report_key(&job_id), Bytes::from(json)).await {
            tracing::warn!(%error, job = %job_id, "could not store the job report");
        }
        Ok(report)
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
