//! The worker: receives tasks, runs up to `concurrency` at once, keeps their messages
//! invisible with a heartbeat while they run, and then, in this order, records the attempt,
//! forwards the result to the next stage and acknowledges the message. A crash between any two
//! steps repeats work but never loses it, and repeated work lands on the same keys and rows.
//!
//! Four loops share the work: the receive loop (which owns the concurrency limit, and asks for
//! as many messages as its receive policy says the observed task time warrants), one
//! heartbeat loop for all held messages (batched, as SQS wants; it talks to the queue only, so a
//! stalled database cannot delay it), a liveness loop that records the worker in the database,
//! and the completer, which batches the bookkeeping of finished tasks. On shutdown the worker stops receiving, lets
//! running tasks finish until the drain deadline, releases what is left so other workers pick it
//! up at once, and exits.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::analytics::{
    AnalyticsError, AttemptOutcome, AttemptRecord, JobState, PendingTask, RunningTask, WorkerRecord,
};
use crate::db::now_millis;
use crate::grid::Grid;
use crate::processor::command::CommandProcessor;
use crate::processor::sandbox::TaskSandbox;
use crate::processor::{Processor, ProcessorRegistry, TaskContext, TaskFailure, TaskOutput};
use crate::queue::{QueueMessage, Receipt, TaskQueue, MAX_BATCH};
use crate::scratch::{reused_input_name, ScratchSlots};
use crate::spec::{JobSpec, StageFailurePolicy, StageKind, StageRun};
use crate::task::{output_prefix, spec_key, TaskMessage};
use crate::task_role::{TaskCredentials, TaskRole};

mod receive_policy;

use receive_policy::ReceivePolicy;

/// How often a worker re-reads a job's state and pause flag (to notice a cancel or a pause:
/// no new task of a paused job may start 2 s after the pause, and a task already received
/// is checked against this when it would start).
pub(crate) const JOB_STATE_TTL: Duration = Duration::from_secs(1);
/// When a task of a paused job cannot be given back to admission (the store is down), how
/// long the queue hides it before it is looked at again.
const PAUSED_RETRY_DELAY: Duration = Duration::from_secs(5);
/// How often a worker records that it is alive (with the tasks it is running).
const WORKER_HEARTBEAT: Duration = Duration::from_secs(5);
/// How often a worker publishes its AWS request counts, so a job's report includes them.
const REQUESTS_EVERY: Duration = Duration::from_secs(2);
/// The longest between two heartbeats of a healthy worker: the liveness loop wakes every
/// [`REQUESTS_EVERY`] and records once [`WORKER_HEARTBEAT`] has passed, so every 6 s. A
/// worker's running tasks, as the dashboard sees them, are at most this old.
pub const HEARTBEAT_PERIOD: Duration =
    Duration::from_secs(WORKER_HEARTBEAT.as_secs().div_ceil(REQUESTS_EVERY.as_secs()) * REQUESTS_EVERY.as_secs());
/// How long a queue that came back empty is not probed again ahead of the long poll.
const EMPTY_PROBE_BACKOFF: Duration = Duration::from_secs(1);
/// How long finished tasks are held while their attempts cannot be recorded (the analytics
/// store is down or stalled) before they are left to be redelivered.
const RECORD_PATIENCE: Duration = Duration::from_secs(10 * 60);
/// Delay before retrying a task whose job spec could not be read.
const SPEC_RETRY_DELAY: Duration = Duration::from_secs(5);

/// How a worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Unique id, recorded with every attempt.
    pub id: String,
    /// Tasks run at once.
    pub concurrency: usize,
    /// Visibility timeout a message gets on receive and on every heartbeat.
    pub visibility: Duration,
    /// Longest wait of one long poll.
    pub poll_wait: Duration,
    /// On shutdown, how long running tasks may take before they are given up and released.
    pub drain_deadline: Duration,
    /// Where tasks get their scratch directories.
    pub scratch_dir: PathBuf,
    /// Messages received ahead of free slots, to receive in fuller batches. `None` (the default)
    /// adapts it to the observed task time (the worker's receive policy): a full batch for short
    /// tasks, only the free slots for long ones, whose prefetched messages would wait here
    /// while other workers may be idle.
    pub prefetch: Option<usize>,
    /// How long the completer waits for more finished tasks before recording and deleting, so
    /// acknowledgements go out in fuller batches (each batch is one request on SQS); it does
    /// not wait while no other task is running.
    pub completion_linger: Duration,
    /// How task commands are confined.
    pub sandbox: Arc<TaskSandbox>,
    /// The role whose credentials tasks get (`None`: tasks get no AWS credentials).
    pub task_role: Option<Arc<TaskRole>>,
    /// Opens the buckets `s3://` inputs are in, whose byte ranges tasks read (AWS grids).
    pub input_buckets: Option<crate::store::Buckets>,
}

impl WorkerSettings {
    /// Defaults: one task per core, adaptive prefetch, 30 s visibility, 1 s polls, 30 s drain.
    pub fn new(id: impl Into<String>, scratch_dir: PathBuf) -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Self {
            id: id.into(),
            concurrency: cores,
            prefetch: None,
            visibility: Duration::from_secs(30),
            poll_wait: Duration::from_secs(1),
            drain_deadline: Duration::from_secs(30),
            completion_linger: Duration::from_millis(50),
            scratch_dir,
            sandbox: Arc::default(),
            task_role: None,
            input_buckets: None,
        }
    }
}

/// A worker's tally when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Tasks that succeeded.
    pub succeeded: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// Tasks given back to the queue at shutdown.
    pub released: u64,
}

/// Worker errors: only failures to start; task and backend trouble while running is logged and
/// handled by redelivery.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The scratch directory is unusable.
    #[error("scratch directory {path}: {source}")]
    Scratch {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The worker could not register itself.
    #[error(transparent)]
    Analytics(#[from] crate::analytics::AnalyticsError),
}

/// A generated worker id: host, process and a random suffix.
pub fn default_worker_id() -> String {
    let host = hostname();
    let suffix = ulid::Ulid::new().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[suffix.len() - 6..].to_lowercase())
}

/// A worker id made safe as a directory name.
fn sanitize(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// This machine's name, read once per worker.
fn hostname() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    if host.is_empty() {
        "localhost".to_owned()
    } else {
        host
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    Tasks,
    Chain,
}

#[derive(Debug)]
enum Action {
    Delete,
    Retry(Duration),
    DeadLetter(String),
}

#[derive(Debug)]
struct Completion {
    source: Source,
    message_id: String,
    receipt: Receipt,
    attempt: Option<AttemptRecord>,
    forward: Option<String>,
    action: Action,
}

/// What [`receive_policy::long_polled`] decides from, by queue (tasks, chain).
#[derive(Debug)]
struct Polls {
    /// When each queue last delivered messages.
    delivered: [Option<Instant>; 2],
    /// The queue the previous receive long-polled.
    long_polled: usize,
}

type Held = Arc<Mutex<HashMap<(Source, String), Receipt>>>;

/// Where a byte-range task's chunk was read to.
enum RangeChunk {
    /// Into memory (an object's range).
    Memory(Vec<u8>),
    /// Into this scratch file (a local file's range, copied by the kernel).
    File(PathBuf),
}

/// The tasks running now, by message: what the heartbeat reports.
type Running = Mutex<HashMap<(Source, String), RunningTask>>;

/// Removes a task from the running ones when its run ends, however it ends: a task stopped at
/// the drain deadline is dropped, not completed.
struct RunningGuard<'a> {
    running: &'a Running,
    key: (Source, String),
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut running) = self.running.lock() {
            running.remove(&self.key);
        }
    }
}

struct CachedJob {
    view: JobView,
    /// When the state and the failed stages were last read from the store.
    checked: Instant,
}

/// What a worker knows of a job when it takes one of its tasks.
#[derive(Clone)]
struct JobView {
    spec: Arc<JobSpec>,
    /// One per stage; a missing processor is the reason a task of that stage fails.
    processors: StageProcessors,
    state: JobState,
    /// Whether the job is paused: its tasks are given back, not run.
    paused: bool,
    /// With `on_stage_failure: stop`, the first stage known to have a task failed for good.
    stopped_at: Option<u32>,
}

impl JobView {
    /// Remembers that `stage` has a task failed for good; the earliest such stage stops the rest.
    fn note_failed_stage(&mut self, stage: u32) {
        self.stopped_at = Some(self.stopped_at.map_or(stage, |known| known.min(stage)));
    }
}

type StageProcessors = Arc<Vec<Result<Arc<dyn Processor>, TaskFailure>>>;

/// A worker bound to a grid.
pub struct Worker {
    settings: WorkerSettings,
    grid: Grid,
    registry: Arc<ProcessorRegistry>,
    jobs: tokio::sync::Mutex<HashMap<String, CachedJob>>,
    held: Held,
    /// The held messages whose task is executing, with when it started.
    running: Running,
    scratch: Arc<ScratchSlots>,
    host: String,
    /// A drain deadline sooner than the configured one (a spot interruption's).
    drain_by: Mutex<Option<Instant>>,
    /// When each queue (tasks, chain) last answered a receive with nothing.
    last_empty: Mutex<[Option<Instant>; 2]>,
    /// Which queue to long-poll next, from what the receives so far found.
    polls: Mutex<Polls>,
    /// How many messages a receive asks for, from the task time observed so far.
    policy: Mutex<ReceivePolicy>,
}

impl Worker {
    /// A worker for `grid` running the processors in `registry`.
    pub fn new(settings: WorkerSettings, grid: Grid, registry: ProcessorRegistry) -> Arc<Self> {
        // Absolute: commands run inside their slot and get paths under it.
        let scratch_root = std::path::absolute(&settings.scratch_dir).unwrap_or_else(|_| settings.scratch_dir.clone());
        let scratch = ScratchSlots::new(scratch_root.join(sanitize(&settings.id)), settings.sandbox.clone());
        let policy = ReceivePolicy::new(settings.concurrency, settings.prefetch, settings.visibility);
        Arc::new(Self {
            settings,
            grid,
            registry: Arc::new(registry),
            jobs: tokio::sync::Mutex::new(HashMap::new()),
            held: Arc::new(Mutex::new(HashMap::new())),
            running: Mutex::new(HashMap::new()),
            scratch,
            host: hostname(),
            drain_by: Mutex::new(None),
            last_empty: Mutex::new([None, None]),
            polls: Mutex::new(Polls { delivered: [None, None], long_polled: Source::Chain as usize }),
            policy: Mutex::new(policy),
        })
    }

    /// Messages this worker holds: running, or received and waiting for a slot. Zero means idle.
    pub fn held_count(&self) -> usize {
        self.held.lock().map(|h| h.len()).unwrap_or(0)
    }

    /// Makes the coming (or current) drain end no later than `limit` from now: tasks still
    /// running then are stopped and released to other workers.
    pub fn drain_within(&self, limit: Duration) {
        if let Ok(mut drain_by) = self.drain_by.lock() {
            let at = Instant::now() + limit;
            *drain_by = Some(drain_by.map_or(at, |earlier| earlier.min(at)));
        }
    }

    /// This worker's id.
    pub fn id(&self) -> &str {
        &self.settings.id
    }

    fn queue(&self, source: Source) -> &Arc<dyn TaskQueue> {
        match source {
            Source::Tasks => &self.grid.tasks,
            Source::Chain => &self.grid.chain,
        }
    }

    fn hold(&self, source: Source, message: &QueueMessage) {
        if let Ok(mut held) = self.held.lock() {
            held.insert((source, message.id.clone()), message.receipt.clone());
        }
    }

    /// Notes that the task of a held message is executing, until the guard is dropped.
    fn start_running(&self, source: Source, message_id: &str, task: RunningTask) -> RunningGuard<'_> {
        let key = (source, message_id.to_owned());
        if let Ok(mut running) = self.running.lock() {
            running.insert(key.clone(), task);
        }
        RunningGuard { running: &self.running, key }
    }

    /// The tasks executing now, for the heartbeat.
    fn running_now(&self) -> Vec<RunningTask> {
        self.running.lock().map(|r| r.values().cloned().collect()).unwrap_or_default()
    }

    fn unhold(&self, source: Source, id: &str) {
        if let Ok(mut held) = self.held.lock() {
            held.remove(&(source, id.to_owned()));
        }
    }

    async fn record_self(&self, state: &str, started_at: i64) {
        let record = WorkerRecord {
            id: self.settings.id.clone(),
            host: self.host.clone(),
            pid: std::process::id(),
            started_at,
            last_seen: now_millis(),
            state: state.to_owned(),
            tasks_done: 0,
            tasks_failed: 0,
            current_tasks: u32::try_from(self.held_count()).unwrap_or(u32::MAX),
            // The store keeps the longest running (the cap): stragglers are among them.
            running: self.running_now(),
        };
        if let Err(error) = self.grid.analytics.upsert_worker(&record).await {
            tracing::warn!(%error, "could not record worker state");
        }
    }

    /// Runs until `shutdown` resolves, then drains and returns.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) -> Result<WorkerStats, WorkerError> {
        std::fs::create_dir_all(&self.settings.scratch_dir)
            .map_err(|source| WorkerError::Scratch { path: self.settings.scratch_dir.clone(), source })?;
        let started_at = now_millis();
        self.record_self("running", started_at).await;
        tracing::info!(worker = %self.settings.id, concurrency = self.settings.concurrency, "worker started");

        let (done_tx, done_rx) = mpsc::unbounded_channel::<Completion>();
        let stats = Arc::new(Mutex::new(WorkerStats::default()));
        let completer = tokio::spawn(self.clone().complete(done_rx, stats.clone()));
        let heartbeat_stop = Arc::new(tokio::sync::Notify::new());
        let heartbeat = tokio::spawn(self.clone().renew(heartbeat_stop.clone()));
        let alive_stop = Arc::new(tokio::sync::Notify::new());
        let alive = tokio::spawn(self.clone().alive(alive_stop.clone(), started_at));

        let mut running = JoinSet::new();
        let permits = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        tokio::pin!(shutdown);
        // Received but not yet started: at most `prefetch` beyond the free permits, held (and
        // heartbeated) like running tasks, released at once on shutdown.
        let mut buffered: VecDeque<(Source, QueueMessage)> = VecDeque::new();
        loop {
            while running.try_join_next().is_some() {}
            let permit = tokio::select! {
                biased;
                () = &mut shutdown => break,
                permit = permits.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
            };
            if buffered.is_empty() {
                // The permit just taken is a free slot too.
                let free = permits.available_permits() + 1;
                let want = self.policy.lock().map(|p| p.want(free)).unwrap_or(free.min(MAX_BATCH));
                match self.receive_any(want, &mut shutdown).await {
                    Some(received) => {
                        for (source, message) in received {
                            self.hold(source, &message);
                            buffered.push_back((source, message));
                        }
                    }
                    None => break,
                }
            }
            let Some((source, message)) = buffered.pop_front() else { continue };
            let worker = self.clone();
            let done = done_tx.clone();
            running.spawn(async move {
                let started = Instant::now();
                let completion = worker.handle(source, message).await;
                if let Ok(mut policy) = worker.policy.lock() {
                    policy.observe(started.elapsed());
                }
                // The completer outlives every task; a send error means we are shutting down.
                let _ = done.send(completion);
                drop(permit);
            });
        }
        // Received but never started: other workers can start them now rather than after a drain.
        let unstarted: Vec<((Source, String), Receipt)> = buffered
            .into_iter()
            .filter_map(|(source, message)| {
                let key = (source, message.id.clone());
                self.held.lock().ok().and_then(|mut held| held.remove(&key)).map(|receipt| (key, receipt))
            })
            .collect();
        let released_early = self.release(unstarted).await;

        // Drain: let running tasks finish until the deadline, then give the rest back.
        self.record_self("draining", started_at).await;
        let in_flight = running.len();
        let mut drain = self.settings.drain_deadline;
        if let Some(by) = self.drain_by.lock().ok().and_then(|d| *d) {
            drain = drain.min(by.saturating_duration_since(Instant::now()));
        }
        if in_flight > 0 || released_early > 0 {
            tracing::info!(in_flight, released_early, deadline = ?drain, "draining");
        }
        let deadline = tokio::time::sleep(drain);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = running.join_next() => if next.is_none() { break },
                () = &mut deadline => {
                    tracing::warn!(remaining = running.len(), "drain deadline reached; releasing tasks");
                    running.shutdown().await;
                    break;
                }
            }
        }
        drop(done_tx);
        if let Err(error) = completer.await {
            tracing::error!(%error, "completer failed");
        }
        let released = self.release_held().await;
        heartbeat_stop.notify_one();
        let _ = heartbeat.await;
        alive_stop.notify_one();
        let _ = alive.await;
        self.scratch.remove();
        self.record_self("stopped", started_at).await;
        // The liveness loop published every couple of seconds; this is the final count.
        self.grid.publish_requests(&self.settings.id).await;
        let mut stats = stats.lock().map(|s| *s).unwrap_or_default();
        stats.released = released + released_early;
        tracing::info!(?stats, "worker stopped");
        Ok(stats)
    }

    /// Receives up to `want` messages from either queue: a quick look at one, then a long poll
    /// on the other (the one [`receive_policy::long_polled`] picks); `None` when shutdown
    /// interrupts.
    async fn receive_any(
        &self,
        want: usize,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Option<Vec<(Source, QueueMessage)>> {
        let long_polled = match self.polls.lock() {
            Ok(mut polls) => {
                polls.long_polled = receive_policy::long_polled(polls.delivered, polls.long_polled, Instant::now());
                polls.long_polled
            }
            Err(_) => Source::Tasks as usize,
        };
        let order = if long_polled == Source::Tasks as usize {
            [Source::Chain, Source::Tasks]
        } else {
            [Source::Tasks, Source::Chain]
        };
        for (i, source) in order.into_iter().enumerate() {
            let slot = source as usize;
            let recently_empty =
                self.last_empty.lock().ok().and_then(|e| e[slot]).is_some_and(|at| at.elapsed() < EMPTY_PROBE_BACKOFF);
            // A quick look at a queue that was just empty (the next stage's, in a one-stage
            // job) is a billed request that finds nothing; look again only after a while.
            if i == 0 && recently_empty {
                continue;
            }
            let wait = if i == 0 { Duration::ZERO } else { self.settings.poll_wait };
            let polled = tokio::select! {
                biased;
                () = shutdown.as_mut() => return None,
                result = self.queue(source).receive(want, self.settings.visibility, wait) => result,
            };
            if let (Ok(messages), Ok(mut last_empty)) = (&polled, self.last_empty.lock()) {
                last_empty[slot] = messages.is_empty().then(Instant::now);
            }
            if let (Ok(messages), Ok(mut polls)) = (&polled, self.polls.lock()) {
                if !messages.is_empty() {
                    polls.delivered[slot] = Some(Instant::now());
                }
            }
            match polled {
                Ok(messages) if messages.is_empty() => continue,
                Ok(messages) => return Some(messages.into_iter().map(|m| (source, m)).collect()),
                Err(error) => {
                    tracing::warn!(%error, queue = self.queue(source).name(), "receive failed; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        Some(Vec::new())
    }

    /// Makes every message still held visible again at once.
    async fn release_held(&self) -> u64 {
        let held: Vec<((Source, String), Receipt)> =
            self.held.lock().map(|mut h| h.drain().collect()).unwrap_or_default();
        self.release(held).await
    }

    /// Makes messages visible again at once, in batches; returns how many.
    async fn release(&self, held: Vec<((Source, String), Receipt)>) -> u64 {
        let mut released = 0;
        for source in [Source::Tasks, Source::Chain] {
            let receipts: Vec<(Receipt, Duration)> =
                held.iter().filter(|((s, _), _)| *s == source).map(|(_, r)| (r.clone(), Duration::ZERO)).collect();
            for chunk in receipts.chunks(MAX_BATCH) {
                match self.queue(source).change_visibility(chunk).await {
                    Ok(failures) => released += (chunk.len() - failures.0.len()) as u64,
                    Err(error) => {
                        tracing::warn!(%error, "could not release tasks; they return after their visibility timeout")
                    }
                }
            }
        }
        released
    }

    /// Extends the visibility of every held message, in batches, a few times per timeout.
    ///
    /// This loop talks to the queue only: the database (worker records, request counts, attempt
    /// records) is written by other loops, so a stalled database cannot let a running task's
    /// message become visible and run twice. Each renewal round has its own deadline, shorter
    /// than a period, so one stalled queue call is abandoned and the next round tries again
    /// while the message is still invisible.
    async fn renew(self: Arc<Self>, stop: Arc<tokio::sync::Notify>) {
        let period = (self.settings.visibility / 3).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                () = stop.notified() => return,
                () = tokio::time::sleep(period) => {}
            }
            let held: Vec<((Source, String), Receipt)> =
                self.held.lock().map(|h| h.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
            let round = async {
                for source in [Source::Tasks, Source::Chain] {
                    let changes: Vec<(Receipt, Duration)> = held
                        .iter()
                        .filter(|((s, _), _)| *s == source)
                        .map(|(_, r)| (r.clone(), self.settings.visibility))
                        .collect();
                    for chunk in changes.chunks(MAX_BATCH) {
                        match self.queue(source).change_visibility(chunk).await {
                            Ok(failures) if !failures.is_empty() => {
                                tracing::warn!(?failures, "heartbeat lost some messages; another worker may run them")
                            }
                            Ok(_) => {}
                            Err(error) => tracing::warn!(%error, "heartbeat failed"),
                        }
                    }
                }
            };
            // A round may take at most one period: a stalled queue call is given up, not waited on.
            if tokio::time::timeout(period, round).await.is_err() {
                tracing::warn!(deadline = ?period, "a visibility renewal took too long; trying again next period");
            }
        }
    }

    /// Records that this worker is alive and publishes its request counts. Separate from
    /// [`Worker::renew`] because these are database writes, which may stall.
    async fn alive(self: Arc<Self>, stop: Arc<tokio::sync::Notify>, started_at: i64) {
        let mut last_alive = Instant::now();
        loop {
            tokio::select! {
                () = stop.notified() => return,
                () = tokio::time::sleep(REQUESTS_EVERY) => {}
            }
            self.grid.publish_requests(&self.settings.id).await;
            if last_alive.elapsed() >= WORKER_HEARTBEAT {
                last_alive = Instant::now();
                self.record_self("running", started_at).await;
            }
        }
    }

    /// Records, forwards and acknowledges finished tasks, in batches.
    async fn complete(self: Arc<Self>, mut done: mpsc::UnboundedReceiver<Completion>, stats: Arc<Mutex<WorkerStats>>) {
        let mut batch = Vec::new();
        while let Some(first) = done.recv().await {
            batch.push(first);
            // Lingering fills batches only while other tasks may finish meanwhile; with none
            // running it would only delay the record, and with it the end of a stage or job.
            let linger = if self.running.lock().is_ok_and(|running| running.is_empty()) {
                Duration::ZERO
            } else {
                self.settings.completion_linger
            };
            let linger = tokio::time::sleep(linger);
            tokio::pin!(linger);
            while batch.len() < MAX_BATCH {
                tokio::select! {
                    next = done.recv() => match next {
                        Some(next) => batch.push(next),
                        None => break,
                    },
                    () = &mut linger => break,
                }
            }
            // Whatever else is already finished goes in the same records.
            while batch.len() < 512 {
                match done.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            self.flush(std::mem::take(&mut batch), &stats).await;
        }
    }

    async fn flush(&self, batch: Vec<Completion>, stats: &Mutex<WorkerStats>) {
        let attempts: Vec<AttemptRecord> = batch.iter().filter_map(|c| c.attempt.clone()).collect();
        // The messages stay held (and heartbeated) while the record is retried: a database
        // outage or failover must not make finished tasks run again. Only past the patience
        // are they left to be redelivered, since without the record a task is not done.
        let since = Instant::now();
        let mut delay = Duration::from_millis(500);
        while let Err(error) = self.grid.analytics.record_attempts(&attempts).await {
            if since.elapsed() >= RECORD_PATIENCE {
                tracing::error!(%error, tasks = batch.len(), "could not record attempts; tasks will be redelivered");
                self.unhold_all(&batch);
                return;
            }
            tracing::warn!(%error, tasks = batch.len(), retry_in = ?delay, "could not record attempts; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        let forwards: Vec<String> = batch.iter().filter_map(|c| c.forward.clone()).collect();
        #[cfg(feature = "fault-injection")]
        if !forwards.is_empty() && crate::fault::fires(crate::fault::AFTER_RECORD) {
            // As if the process died here: no forward, no acknowledgement, no more renewals.
            self.unhold_all(&batch);
            return;
        }
        for chunk in forwards.chunks(MAX_BATCH) {
            if let Err(error) = self.grid.chain.send_batch(chunk).await {
                tracing::error!(%error, "could not forward results to the next stage; tasks will be redelivered");
                self.unhold_all(&batch);
                return;
            }
        }
        if let Ok(mut stats) = stats.lock() {
            for attempt in &attempts {
                if attempt.outcome == AttemptOutcome::Succeeded {
                    stats.succeeded += 1;
                } else {
                    stats.failed += 1;
                }
            }
        }
        for source in [Source::Tasks, Source::Chain] {
            let queue = self.queue(source);
            let mine = batch.iter().filter(|c| c.source == source);
            let deletes: Vec<Receipt> =
                mine.clone().filter(|c| matches!(c.action, Action::Delete)).map(|c| c.receipt.clone()).collect();
            for chunk in deletes.chunks(MAX_BATCH) {
                match queue.delete_batch(chunk).await {
                    Ok(failures) if !failures.is_empty() => tracing::warn!(?failures, "some acknowledgements failed"),
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "acknowledge failed; tasks will be redelivered and counted once")
                    }
                }
            }
            let retries: Vec<(Receipt, Duration)> = mine
                .clone()
                .filter_map(|c| match c.action {
                    Action::Retry(delay) => Some((c.receipt.clone(), delay)),
                    _ => None,
                })
                .collect();
            for chunk in retries.chunks(MAX_BATCH) {
                if let Err(error) = queue.change_visibility(chunk).await {
                    tracing::warn!(%error, "could not set retry backoff; tasks return after their visibility timeout");
                }
            }
            for completion in mine {
                if let Action::DeadLetter(reason) = &completion.action {
                    if let Err(error) = queue.dead_letter(&completion.receipt, reason).await {
                        tracing::warn!(%error, "could not dead-letter a task; it will be dead-lettered on redelivery");
                    }
                }
            }
        }
        self.unhold_all(&batch);
    }

    /// Stops renewing every message of `batch`: what is not acknowledged comes back after its
    /// visibility timeout.
    fn unhold_all(&self, batch: &[Completion]) {
        for completion in batch {
            self.unhold(completion.source, &completion.message_id);
        }
    }

    /// The job as this worker knows it, its state and failed stages re-read from the store
    /// every [`JOB_STATE_TTL`]. A refresh reads the store without holding the cache, so a
    /// stalled database never holds up tasks that only look at what is cached (completions
    /// above all).
    async fn job(&self, job_id: &str) -> Result<JobView, String> {
        let cached = self.jobs.lock().await.get(job_id).map(|c| (c.view.clone(), c.checked.elapsed() >= JOB_STATE_TTL));
        if let Some((view, stale)) = cached {
            if !stale {
                return Ok(view);
            }
            let state = self.grid.analytics.job(job_id).await.ok().flatten().map(|record| record.state);
            let paused = self.paused(job_id).await;
            let first = self.first_failed_stage(job_id, &view.spec).await;
            let mut jobs = self.jobs.lock().await;
            let Some(cached) = jobs.get_mut(job_id) else { return Ok(view) };
            if let Some(state) = state {
                cached.view.state = state;
            }
            if let Some(paused) = paused {
                cached.view.paused = paused;
            }
            if let Some(first) = first {
                cached.view.note_failed_stage(first);
            }
            cached.checked = Instant::now();
            return Ok(cached.view.clone());
        }
        // A job's first task loads it under the lock, so its other tasks wait for that one load
        // instead of each reading the spec again.
        let mut jobs = self.jobs.lock().await;
        if let Some(cached) = jobs.get(job_id) {
            return Ok(cached.view.clone());
        }
        let bytes = self.grid.store.get(&spec_key(job_id)).await.map_err(|e| format!("reading job spec: {e}"))?;
        let spec: JobSpec = serde_json::from_slice(&bytes).map_err(|e| format!("job spec is corrupt: {e}"))?;
        let state = match self.grid.analytics.job(job_id).await {
            Ok(Some(record)) => record.state,
            _ => JobState::Running,
        };
        let stopped_at = self.first_failed_stage(job_id, &spec).await;
        let paused = self.paused(job_id).await.unwrap_or(false);
        let processors: StageProcessors = Arc::new(
            spec.stages
                .iter()
                .map(|stage| match &stage.run {
                    StageRun::Command { argv, env } => {
                        Ok(Arc::new(CommandProcessor::new(argv.clone(), env.clone(), self.settings.sandbox.clone()))
                            as Arc<dyn Processor>)
                    }
                    StageRun::Processor { name, .. } => self.registry.get(name).ok_or_else(|| {
                        TaskFailure::new(format!("no processor named `{name}` is registered with this worker"))
                    }),
                })
                .collect(),
        );
        let view = JobView { spec: Arc::new(spec), processors, state, paused, stopped_at };
        jobs.insert(job_id.to_owned(), CachedJob { view: view.clone(), checked: Instant::now() });
        Ok(view)
    }

    /// Whether the job is paused, from the store (`None` when it cannot say: keep what is known).
    async fn paused(&self, job_id: &str) -> Option<bool> {
        match self.grid.analytics.admission(job_id).await {
            Ok(admission) => Some(admission.is_some_and(|a| a.paused)),
            Err(error) => {
                tracing::debug!(%error, job = %job_id, "cannot read whether the job is paused");
                None
            }
        }
    }

    /// Gives a task of a paused job back instead of running it: to admission, which sends it
    /// again once the job is resumed, and the message is deleted. Not back to the queue with a
    /// delay: every delivery counts towards the queue's receive limit, and a long pause would
    /// dead-letter tasks that never ran. Only when the store cannot take it is the message
    /// hidden for a while instead.
    async fn give_back(&self, task: &TaskMessage, body: &str) -> Action {
        let pending = PendingTask {
            stage: task.stage,
            task_id: task.task.clone(),
            seq: task.task.parse().unwrap_or(0),
            body: body.to_owned(),
        };
        match self.grid.analytics.return_pending(&task.job, &pending).await {
            Ok(()) => Action::Delete,
            Err(error) => {
                tracing::warn!(%error, job = %task.job, task = %task.task, "cannot give a paused job's task back; hiding it");
                Action::Retry(PAUSED_RETRY_DELAY)
            }
        }
    }

    /// With `on_stage_failure: stop`, the first stage with a task failed for good, from the
    /// analytics store (`None` when there is none, nothing to stop, or the store cannot say).
    async fn first_failed_stage(&self, job_id: &str, spec: &JobSpec) -> Option<u32> {
        if spec.on_stage_failure != StageFailurePolicy::Stop || spec.stages.len() < 2 {
            return None;
        }
        let stages = self.grid.analytics.stages(job_id).await.ok()?;
        spec.stop_stage(&stages).map(|index| stages[index].stage)
    }

    /// The first failed stage this worker knows of, without asking the store.
    async fn known_stopped_at(&self, job_id: &str) -> Option<u32> {
        self.jobs.lock().await.get(job_id).and_then(|cached| cached.view.stopped_at)
    }

    /// Remembers that `stage` of `job_id` has a task failed for good (this worker failed it), so
    /// this worker stops forwarding and running later stages without waiting for the store.
    async fn note_stage_failed(&self, job_id: &str, stage: u32) {
        let mut jobs = self.jobs.lock().await;
        if let Some(cached) = jobs.get_mut(job_id) {
            if cached.view.spec.on_stage_failure == StageFailurePolicy::Stop {
                cached.view.note_failed_stage(stage);
            }
        }
    }

    /// How many runs of `task` failed before this delivery, from its recorded attempts; `None`
    /// when the analytics store cannot say.
    async fn earlier_failures(&self, task: &TaskMessage, delivery: u32) -> Option<u32> {
        match self.grid.analytics.attempts(&task.job, task.stage, &task.task).await {
            Ok(attempts) => {
                let failed =
                    attempts.iter().filter(|a| a.attempt != delivery && a.outcome != AttemptOutcome::Succeeded);
                Some(u32::try_from(failed.count()).unwrap_or(u32::MAX))
            }
            Err(error) => {
                tracing::warn!(%error, job = %task.job, task = %task.task, "cannot read the task's earlier attempts");
                None
            }
        }
    }

    /// The tasks of `stage` that completed, in id order: what a reduce of the next stage reads.
    async fn completed_tasks(&self, job_id: &str, stage: u32) -> Result<Vec<String>, AnalyticsError> {
        let statuses = self.grid.analytics.task_statuses(job_id, stage).await?;
        Ok(statuses.into_iter().filter(|(_, status)| status == "done").map(|(task, _)| task).collect())
    }

    /// The task role's credentials for a task that may run `timeout` (`None` without a role).
    async fn task_credentials(&self, timeout: Duration) -> Result<Option<Arc<TaskCredentials>>, TaskFailure> {
        let Some(role) = &self.settings.task_role else { return Ok(None) };
        role.credentials(timeout).await.map(Some).map_err(|e| TaskFailure::new(e.to_string()))
    }

    /// Runs one delivered message to a completion; never panics on bad payloads.
    /// The chunk a byte-range task names, read from the original input: a local file's
    /// copied into `scratch_file`, an object's into memory.
    async fn read_range(
        &self,
        range: &crate::byte_range::InputRange,
        scratch_file: &std::path::Path,
    ) -> Result<RangeChunk, TaskFailure> {
        use crate::byte_range::{read_chunk, RangeSource};
        match &range.source {
            // Only where manager and workers share a disk: the embedded grid's store is local.
            RangeSource::File(path) if self.grid.store.is_local() => {
                let (source, chunk, target) = (path.clone(), range.clone(), scratch_file.to_path_buf());
                let copied =
                    tokio::task::spawn_blocking(move || crate::byte_range::copy::copy_chunk(&source, &chunk, &target))
                        .await
                        .map_err(std::io::Error::other)
                        .and_then(|copied| copied);
                copied.map(|_| RangeChunk::File(scratch_file.to_path_buf())).map_err(|e| {
                    TaskFailure::new(format!("reading bytes {}..{} of {}: {e}", range.start, range.end, path.display()))
                })
            }
            RangeSource::File(path) => Err(TaskFailure::new(format!(
                "input {} is a local file of the manager's machine; this worker does not share its disk",
                path.display()
            ))),
            RangeSource::Object { bucket, key } => match &self.settings.input_buckets {
                Some(buckets) => {
                    let object = crate::store::ObjectRange { store: buckets.open(bucket), key: key.clone() };
                    read_chunk(&object, range).await.map(RangeChunk::Memory).map_err(|e| {
                        TaskFailure::new(format!(
                            "reading bytes {}..{} of s3://{bucket}/{key}: {e}",
                            range.start, range.end
                        ))
                    })
                }
                None => Err(TaskFailure::new(format!("s3://{bucket}/{key}: this worker opens no S3 buckets"))),
            },
        }
    }

    async fn handle(&self, source: Source, message: QueueMessage) -> Completion {
        let started_at = now_millis();
        let mut completion = Completion {
            source,
            message_id: message.id.clone(),
            receipt: message.receipt.clone(),
            attempt: None,
            forward: None,
            action: Action::Delete,
        };
        let task = match TaskMessage::decode(&message.body) {
            Ok(task) => task,
            Err(error) => {
                tracing::error!(%error, id = %message.id, "dead-lettering a malformed message");
                completion.action = Action::DeadLetter(error.to_string());
                return completion;
            }
        };
        let JobView { spec, processors, state, paused, stopped_at } = match self.job(&task.job).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(job = %task.job, %error, "job spec unavailable; retrying later");
                completion.action = if message.receive_count >= 10 {
                    Action::DeadLetter(error)
                } else {
                    Action::Retry(SPEC_RETRY_DELAY)
                };
                return completion;
            }
        };
        if state.is_terminal() {
            return completion; // Cancelled, or failed: deleted unrun.
        }
        if paused {
            tracing::debug!(job = %task.job, stage = task.stage, task = %task.task, "giving back a task of a paused job");
            completion.action = self.give_back(&task, &message.body).await;
            return completion;
        }
        if stopped_at.is_some_and(|failed| task.stage > failed) {
            // `on_stage_failure: stop`: an earlier stage failed, so this stage is skipped.
            tracing::info!(job = %task.job, stage = task.stage, task = %task.task, "dropping a task of a stage after a failed one");
            return completion;
        }
        let Some(stage) = spec.stages.get(task.stage as usize) else {
            completion.action = Action::DeadLetter(format!("job `{}` has no stage {}", task.job, task.stage));
            return completion;
        };

        // Without the task role's credentials the task does not run: it fails (and is retried)
        // rather than run with none, let alone the worker's.
        let (aws, no_credentials) = match self.task_credentials(stage.timeout).await {
            Ok(aws) => (aws, None),
            Err(failure) => (None, Some(failure)),
        };
        let input_tasks = if stage.kind == StageKind::Reduce && task.stage > 0 {
            match self.completed_tasks(&task.job, task.stage - 1).await {
                Ok(tasks) => tasks,
                Err(error) => {
                    // Without the list the reduce would miss the empty inputs: run it later.
                    tracing::warn!(%error, job = %task.job, "cannot list the tasks a reduce reads; retrying later");
                    completion.action = Action::Retry(SPEC_RETRY_DELAY);
                    return completion;
                }
            }
        } else {
            Vec::new()
        };
        let scratch = match self.scratch.acquire() {
            Ok(dir) => dir,
            Err(error) => {
                completion.action = Action::Retry(Duration::from_secs(1));
                tracing::error!(%error, "cannot create a scratch directory");
                return completion;
            }
        };
        // A byte range of the original input is read here, before the clock of the task's
        // processor starts: a local file's straight into the scratch file, an object's into
        // the same place a small inline chunk goes.
        let (inline, input_file, unreadable) = match &task.range {
            None => (task.data.clone().map(bytes::Bytes::from), None, None),
            Some(range) => match self.read_range(range, &scratch.join(reused_input_name(&task.input))).await {
                Ok(RangeChunk::Memory(chunk)) => (Some(bytes::Bytes::from(chunk)), None, None),
                Ok(RangeChunk::File(path)) => (None, Some(path), None),
                Err(failure) => (None, None, Some(failure)),
            },
        };
        // A whole original object is not read here: the processor streams it (to a file, for
        // a command), since a per-file input may be a large media file.
        let (original, unreadable) = match (&task.object, &self.settings.input_buckets, unreadable) {
            (Some(object), Some(buckets), None) => {
                (Some(crate::store::ObjectRange { store: buckets.open(&object.bucket), key: object.key.clone() }), None)
            }
            (Some(object), None, None) => (
                None,
                Some(TaskFailure::new(format!(
                    "s3://{}/{}: this worker opens no S3 buckets",
                    object.bucket, object.key
                ))),
            ),
            (_, _, unreadable) => (None, unreadable),
        };
        let ctx = TaskContext {
            job_id: task.job.clone(),
            stage: task.stage,
            stage_name: stage.name.clone(),
            task_id: task.task.clone(),
            attempt: message.receive_count,
            input: task.input.clone(),
            input_tasks,
            inline,
            input_file,
            original,
            output_prefix: output_prefix(&task.job, task.stage, &stage.name, &task.task),
            params: match &stage.run {
                StageRun::Processor { params, .. } => params.clone(),
                StageRun::Command { .. } => serde_json::Value::Null,
            },
            store: self.grid.store.clone(),
            scratch: scratch.to_path_buf(),
            aws,
        };
        let processor = match no_credentials.or(unreadable) {
            Some(failure) => Err(failure),
            None => {
                processors.get(task.stage as usize).cloned().unwrap_or_else(|| Err(TaskFailure::new("no such stage")))
            }
        };
        // Running until its processor returns (or the run is dropped at the drain deadline);
        // its start is the attempt's, so "running for" and the stage's recorded times measure
        // the same span.
        let running = self.start_running(
            source,
            &message.id,
            RunningTask { job_id: task.job.clone(), stage: task.stage, task_id: task.task.clone(), started_at },
        );
        let result: Result<TaskOutput, TaskFailure> = match processor {
            Ok(processor) => match tokio::time::timeout(stage.timeout, processor.process(&ctx)).await {
                Ok(result) => result,
                Err(_) => {
                    Err(TaskFailure::new(format!("timed out after {}", humantime::format_duration(stage.timeout))))
                }
            },
            Err(failure) => Err(failure),
        };
        drop(scratch);
        drop(running);

        let ended_at = now_millis();
        let mut attempt = AttemptRecord {
            job_id: task.job.clone(),
            stage: task.stage,
            task_id: task.task.clone(),
            attempt: message.receive_count,
            worker_id: self.settings.id.clone(),
            started_at,
            ended_at,
            outcome: AttemptOutcome::Succeeded,
            exit_status: Some(0),
            bytes_in: 0,
            bytes_out: 0,
            error: None,
        };
        match result {
            Ok(output) => {
                attempt.bytes_in = output.bytes_in;
                attempt.bytes_out = output.bytes_out;
                let next = task.stage as usize + 1;
                // Read again: a failure this worker saw while the task ran counts too.
                let stopped_at = self.known_stopped_at(&task.job).await.or(stopped_at);
                let stopped = stopped_at.is_some_and(|failed| task.stage >= failed);
                if !stopped && spec.stages.get(next).is_some_and(|s| s.kind == StageKind::Map) {
                    completion.forward = Some(
                        TaskMessage {
                            job: task.job.clone(),
                            stage: task.stage + 1,
                            task: task.task.clone(),
                            input: ctx.output_prefix.clone(),
                            data: None,
                            range: None,
                            object: None,
                        }
                        .encode(),
                    );
                }
            }
            Err(failure) => {
                attempt.exit_status = failure.exit_status;
                attempt.error = Some(failure.message.clone());
                // `max_attempts` counts failed runs, not deliveries: releases on shutdown and
                // deliveries whose worker died raise the receive count but are no failure.
                let failures = self.earlier_failures(&task, message.receive_count).await.map(|n| n + 1);
                tracing::warn!(job = %task.job, stage = %stage.name, task = %task.task, delivery = message.receive_count, ?failures, error = %failure.message, "task failed");
                match failures {
                    Some(failures) if failures >= spec.retry.max_attempts => {
                        attempt.outcome = AttemptOutcome::Failed;
                        completion.action = Action::DeadLetter(failure.message);
                        self.note_stage_failed(&task.job, task.stage).await;
                    }
                    Some(failures) => {
                        attempt.outcome = AttemptOutcome::Retrying;
                        completion.action = Action::Retry(spec.retry.delay_after(failures));
                    }
                    // The store cannot say how many failed before: never dead-letter on a guess;
                    // try again (the queue's receive limit is the safety net).
                    None => {
                        attempt.outcome = AttemptOutcome::Retrying;
                        completion.action = Action::Retry(spec.retry.delay_after(message.receive_count));
                    }
                }
            }
        }
        completion.attempt = Some(attempt);
        completion
    }
}
