//! The grid's cost on SQS, measured against the moto emulator in one run:
//!
//! 1. SQS requests per task: a 10,000-task single-stage job of `noop` tasks, split by a
//!    [`Manager`] and run by two in-process [`Worker`]s over S3, SQS and SQLite analytics. Every
//!    SQS request of the manager and the workers counts, empty long polls included, from the
//!    job's submission until the manager sees it end (the workers are stopped then). SQS bills
//!    per request, so this is the job's queue bill; unbatched it would be 3 (send, receive,
//!    delete); the target is at most 0.35 with the workers' default settings. The same job runs
//!    again with workers tuned by hand (`--concurrency 10 --prefetch 10`), the figure the
//!    defaults should reach.
//! 2. Enqueue rate: the manager's submit and split of a 10,000-line input (batches of ten,
//!    several in flight) against the plainest client code, 10,000 single `SendMessage` calls one
//!    after another, each into a queue of its own.
//!
//! Each process gets its own grid (its own SQS client, meter and queue handles), as separate
//! processes would; only the SQLite analytics store is shared, and it is not what is measured.
//!
//! moto scans every message of a queue for each message it sends or receives (it recomputes the
//! queue's attributes), so it slows down in proportion to the queue's depth: a few hundred
//! messages/s with fifty queued, about one a second with ten thousand. SQS does not, so the
//! bench keeps moto's queues shallow without changing what is counted: the job's manager waits
//! before a send while [`QUEUE_CAP`] messages are queued and undeleted (its split merely keeps
//! pace with the workers), and the enqueue measurement purges its queues as they fill.
//!
//! Run with `cargo bench -p batchgrid-core --bench sqs_requests` (or `make bench`); it needs
//! `moto_server` (`make tools`). Set `BENCH_SQS_TASKS` to change the 10,000.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use batchgrid_core::analytics::{JobState, SqliteAnalytics};
use batchgrid_core::aws::{s3_client, sqs_client, RequestMeter};
use batchgrid_core::grid::Grid;
use batchgrid_core::manager::Manager;
use batchgrid_core::processor::ProcessorRegistry;
use batchgrid_core::queue::{BatchFailures, DeadLetter, QueueDepth, QueueError, QueueMessage, Receipt};
use batchgrid_core::queue::{SqsQueue, TaskQueue};
use batchgrid_core::spec::{parse_job, JobSpec, Overrides};
use batchgrid_core::store::S3Store;
use batchgrid_core::task::TaskMessage;
use batchgrid_core::worker::{Worker, WorkerSettings};
use batchgrid_testkit::moto::{create_queue_pair, Moto};

const REGION: &str = "us-east-1";
const BUCKET: &str = "batchgrid-bench";
const WORKERS: usize = 2;
/// Above this many SQS requests per task the bench prints where they went.
const TARGET_PER_TASK: f64 = 0.35;
/// Deliveries before a message is dead-lettered, as the deployed stacks set it.
const MAX_RECEIVES: u32 = 5;
/// The hand tuning the defaults are compared with: no-op tasks take microseconds, so a worker
/// can hold a whole batch of ten running and another ten received ahead; then every receive asks
/// for ten, and the completer gets near-full batches to delete.
const TUNED_CONCURRENCY: usize = 10;
const TUNED_PREFETCH: usize = 10;
/// How often the manager checks progress (the manager service's default).
const TICK: Duration = Duration::from_secs(1);

/// How the workers of one measured run are set up.
#[derive(Debug, Clone, Copy)]
enum Tuning {
    /// `WorkerSettings::new` as it comes: one task per core, prefetch adapted to task time.
    Defaults,
    /// [`TUNED_CONCURRENCY`] and [`TUNED_PREFETCH`].
    Tuned,
}

impl Tuning {
    fn settings(self, id: String, scratch: std::path::PathBuf) -> WorkerSettings {
        let mut settings = WorkerSettings::new(id, scratch);
        if let Tuning::Tuned = self {
            settings.concurrency = TUNED_CONCURRENCY;
            settings.prefetch = Some(TUNED_PREFETCH);
        }
        settings
    }
}

/// Most messages in the job's task queue, in flight included (see the module docs), the same for
/// both runs: what tuned workers can hold, plus a full batch of ten ready for the next receive.
/// SQS has no such limit (a job's tasks wait there in thousands); deeper only slows moto.
const QUEUE_CAP: u64 = (WORKERS * (TUNED_CONCURRENCY + TUNED_PREFETCH) + 10) as u64;
/// How often the enqueue measurement empties its queue (see the module docs).
const PURGE_EVERY: Duration = Duration::from_millis(100);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let tasks: u64 = std::env::var("BENCH_SQS_TASKS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
        let moto = Moto::start();
        let config = moto.sdk_config(REGION).await;
        s3_client(&config, &RequestMeter::new()).create_bucket().bucket(BUCKET).send().await.expect("create bucket");
        let dir = tempfile::tempdir().expect("temp dir");
        let input = dir.path().join("lines.txt");
        let lines: String = (1..=tasks).map(|i| format!("{i}\n")).collect();
        std::fs::write(&input, lines).expect("input");
        let spec = job_spec(&input, dir.path());

        let per_task = measure(&config, &spec, tasks, dir.path(), Tuning::Defaults, "bench").await;
        let tuned = measure(&config, &spec, tasks, dir.path(), Tuning::Tuned, "bench-tuned").await;

        let baseline = single_sends(&config, tasks).await;
        println!("baseline: {tasks} single SendMessage calls, one at a time: {baseline:.0} messages/s");
        let enqueue = manager_enqueue(&config, &spec, tasks, dir.path()).await;
        println!(
            "enqueue: manager submit + split of {tasks} one-line tasks (batches of 10, several in flight): \
             {enqueue:.0} messages/s ({:.2}x the baseline's rate)",
            enqueue / baseline
        );
        println!(
            "RESULT sqs_requests_per_task={per_task:.3} sqs_requests_per_task_tuned={tuned:.3} \
             enqueue_per_s={enqueue:.0} send_baseline_per_s={baseline:.0} enqueue_ratio={:.2}",
            enqueue / baseline
        );
    });
}

/// Runs the job with workers set up as `tuning` says and prints what it cost; requests per task.
async fn measure(
    config: &aws_config::SdkConfig,
    spec: &JobSpec,
    tasks: u64,
    dir: &Path,
    tuning: Tuning,
    queues: &str,
) -> f64 {
    let run = requests_per_task(config, spec, tasks, dir, tuning, queues).await;
    let per_task = run.sqs_total as f64 / tasks as f64;
    let workers = match tuning {
        Tuning::Defaults => "default worker settings".to_owned(),
        Tuning::Tuned => format!("concurrency {TUNED_CONCURRENCY}, prefetch {TUNED_PREFETCH}"),
    };
    println!(
        "sqs ({workers}): {tasks} no-op tasks, manager + {WORKERS} workers on moto: {} SQS requests = \
         {per_task:.3} per task (target <= {TARGET_PER_TASK}; unbatched 3) in {:.1}s",
        run.sqs_total,
        run.elapsed.as_secs_f64()
    );
    println!("sqs: per task by operation: {}", per_task_of(&run.by_operation, tasks));
    println!("sqs: per task by process: {}", per_task_of(&run.by_process, tasks));
    println!("sqs: {}", run.batches);
    if per_task > TARGET_PER_TASK {
        let (operation, count) = run.by_operation.iter().max_by_key(|(_, count)| **count).expect("requests");
        println!(
            "sqs: above target; the largest share is {operation} ({:.0}%), and the chain queue's empty \
             receives are {:.3} per task",
            100.0 * *count as f64 / run.sqs_total as f64,
            run.chain_empty as f64 / tasks as f64
        );
    }
    per_task
}

/// The job: one task per input line, each a `noop`.
fn job_spec(input: &Path, dir: &Path) -> JobSpec {
    let job = format!(
        "name: bench-sqs\ninput:\n  path: {}\nsplit:\n  lines: 1\nstages:\n  - name: noop\n    processor: noop\n\
         output:\n  path: out\n",
        input.display()
    );
    parse_job(&job, "bench.yaml", dir, &Overrides::default()).expect("job")
}

/// What the first measurement found.
struct RequestsRun {
    sqs_total: u64,
    by_operation: BTreeMap<String, u64>,
    by_process: BTreeMap<String, u64>,
    batches: String,
    chain_empty: u64,
    elapsed: Duration,
}

/// Batch counts of the task queue and of the chain queue, shared by every process.
type Counts = (Arc<BatchCounts>, Arc<BatchCounts>);

/// One process's view of the grid: its own SQS client and meter, as a separate process has.
async fn process_grid(
    config: &aws_config::SdkConfig,
    urls: (&str, &str),
    analytics: &Arc<SqliteAnalytics>,
    counts: &Counts,
    cap: Option<u64>,
) -> Grid {
    let meter = RequestMeter::new();
    let sqs = sqs_client(config, &meter);
    let open = |url: &str| {
        let sqs = sqs.clone();
        let url = url.to_owned();
        async move { SqsQueue::open(sqs, &url).await.expect("open queue") }
    };
    Grid {
        store: Arc::new(S3Store::new(s3_client(config, &meter), BUCKET, "")),
        tasks: Arc::new(CountingQueue { inner: open(urls.0).await, counts: counts.0.clone(), cap }),
        chain: Arc::new(CountingQueue { inner: open(urls.1).await, counts: counts.1.clone(), cap }),
        analytics: analytics.clone(),
        meter,
    }
}

/// Runs the whole job on fresh queues and counts every SQS request made meanwhile.
async fn requests_per_task(
    config: &aws_config::SdkConfig,
    spec: &JobSpec,
    tasks: u64,
    dir: &Path,
    tuning: Tuning,
    queues: &str,
) -> RequestsRun {
    let setup = sqs_client(config, &RequestMeter::new());
    let input_url = create_queue_pair(&setup, &format!("{queues}-input"), MAX_RECEIVES).await;
    let output_url = create_queue_pair(&setup, &format!("{queues}-output"), MAX_RECEIVES).await;
    let analytics = Arc::new(SqliteAnalytics::open(&dir.join(format!("{queues}.db"))).await.expect("analytics"));
    let counts: Counts = Default::default();
    let mut processes = Vec::new();
    for _ in 0..=WORKERS {
        processes.push(process_grid(config, (&input_url, &output_url), &analytics, &counts, Some(QUEUE_CAP)).await);
    }
    // Opening the queues (finding their dead-letter queues) is a start-up cost, not the job's.
    let before: Vec<u64> = processes.iter().map(|p| p.meter.total_for("SQS")).collect();
    let before_ops: Vec<_> = processes.iter().map(|p| p.meter.snapshot()).collect();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for (i, process) in processes.iter().enumerate().skip(1) {
        let settings = tuning.settings(format!("bench-worker-{i}"), dir.join("scratch"));
        let worker = Worker::new(settings, process.clone(), ProcessorRegistry::with_builtins());
        let mut stop = stop_rx.clone();
        workers.push(tokio::spawn(worker.run(async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        })));
    }
    // The deployed manager service reads the dead-letter queues at most every 5 s, as here.
    let manager = Manager::new(processes[0].clone(), dir.join(format!("{queues}-spool")))
        .keep_results_in_store()
        .with_dead_letter_scan_every(Duration::from_secs(5));
    let started = Instant::now();
    let mut ended = None;
    let report = manager
        .run(spec, TICK, |_, progress| {
            if progress.state.is_terminal() && ended.is_none() {
                ended = Some(started.elapsed());
                // The job is over: from here on the workers' polls are idle time, not the job's.
                let _ = stop_tx.send(true);
            }
        })
        .await
        .expect("job");
    for worker in workers {
        worker.await.expect("join").expect("worker");
    }
    assert_eq!(report.state, JobState::Completed, "the job completes: {:?}", report.error);
    assert_eq!(report.tasks_done, tasks, "every task is done");

    let mut by_operation = BTreeMap::new();
    let mut by_process = BTreeMap::new();
    for (i, process) in processes.iter().enumerate() {
        let name = if i == 0 { "manager".to_owned() } else { format!("worker-{i}") };
        by_process.insert(name, process.meter.total_for("SQS") - before[i]);
        for count in process.meter.snapshot().into_iter().filter(|c| c.service == "SQS") {
            let earlier = before_ops[i].iter().find(|b| b.operation == count.operation).map_or(0, |b| b.count);
            *by_operation.entry(count.operation).or_default() += count.count - earlier;
        }
    }
    by_operation.retain(|_, count| *count > 0);
    RequestsRun {
        sqs_total: by_process.values().sum(),
        by_operation,
        by_process,
        batches: format!("task queue: {}; chain queue: {}", counts.0.describe(), counts.1.describe()),
        chain_empty: counts.1.empty_receives.load(Ordering::Relaxed),
        elapsed: ended.unwrap_or_else(|| started.elapsed()),
    }
}

/// The baseline: one `SendMessage` per message, each awaited before the next.
async fn single_sends(config: &aws_config::SdkConfig, n: u64) -> f64 {
    let client = sqs_client(config, &RequestMeter::new());
    let url = client.create_queue().queue_name("bench-single-sends").send().await.expect("create queue").queue_url;
    let url = url.expect("queue url");
    let purger = purge_while_measuring(&client, &url);
    let started = Instant::now();
    for i in 0..n {
        client.send_message().queue_url(&url).message_body(task_body(i)).send().await.expect("send");
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    purger.abort();
    rate
}

/// Empties the queue every [`PURGE_EVERY`] until aborted, so that moto's cost per message stays
/// that of a shallow queue for both senders alike.
fn purge_while_measuring(client: &aws_sdk_sqs::Client, url: &str) -> tokio::task::JoinHandle<()> {
    let (client, url) = (client.clone(), url.to_owned());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PURGE_EVERY).await;
            client.purge_queue().queue_url(&url).send().await.expect("purge");
        }
    })
}

/// A body like the manager's: a one-line chunk carried inline.
fn task_body(i: u64) -> String {
    let task = format!("{i:07}");
    TaskMessage {
        job: "bench-sqs-01jbenchbenchbenchbenchbenchb".into(),
        stage: 0,
        input: format!("jobs/bench-sqs-01jbenchbenchbenchbenchbenchb/input/{task}/lines.txt"),
        task,
        data: Some(format!("{}\n", i + 1)),
        range: None,
        object: None,
    }
    .encode()
}

/// The manager's enqueue: submit, then split into a queue nobody reads; messages per second.
async fn manager_enqueue(config: &aws_config::SdkConfig, spec: &JobSpec, n: u64, dir: &Path) -> f64 {
    let setup = sqs_client(config, &RequestMeter::new());
    let input_url = create_queue_pair(&setup, "bench-enqueue", MAX_RECEIVES).await;
    let output_url = create_queue_pair(&setup, "bench-enqueue-output", MAX_RECEIVES).await;
    let analytics = Arc::new(SqliteAnalytics::open(&dir.join("enqueue.db")).await.expect("analytics"));
    let counts: Counts = Default::default();
    let grid = process_grid(config, (&input_url, &output_url), &analytics, &counts, None).await;
    let manager = Manager::new(grid, dir.join("enqueue-spool"));
    let purger = purge_while_measuring(&setup, &input_url);
    let started = Instant::now();
    let job_id = manager.submit(spec).await.expect("submit");
    let queued = manager.split(&job_id, spec, |_| {}).await.expect("split");
    let rate = queued as f64 / started.elapsed().as_secs_f64();
    purger.abort();
    assert_eq!(queued, n, "one task per line");
    assert_eq!(counts.0.sent.load(Ordering::Relaxed), n, "every task enqueued");
    rate
}

fn per_task_of(counts: &BTreeMap<String, u64>, tasks: u64) -> String {
    let lines: Vec<String> =
        counts.iter().map(|(name, count)| format!("{name}={:.3} ({count})", *count as f64 / tasks as f64)).collect();
    lines.join(" ")
}

/// Entries per call on one queue, summed over every process: how full the batches are.
#[derive(Debug, Default)]
struct BatchCounts {
    sends: AtomicU64,
    sent: AtomicU64,
    receives: AtomicU64,
    empty_receives: AtomicU64,
    received: AtomicU64,
    deletes: AtomicU64,
    deleted: AtomicU64,
}

impl BatchCounts {
    fn describe(&self) -> String {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let per = |entries: u64, calls: u64| entries as f64 / calls.max(1) as f64;
        let (receives, empty) = (get(&self.receives), get(&self.empty_receives));
        format!(
            "{} sends of {:.1} messages, {receives} receives ({empty} empty, the rest {:.1} messages each), \
             {} deletes of {:.1}",
            get(&self.sends),
            per(get(&self.sent), get(&self.sends)),
            per(get(&self.received), receives - empty),
            get(&self.deletes),
            per(get(&self.deleted), get(&self.deletes)),
        )
    }
}

/// The SQS queue, counting how many entries each call carried (the meter counts only calls), and
/// holding sends back while `cap` messages are undeleted (see the module docs).
#[derive(Debug)]
struct CountingQueue {
    inner: SqsQueue,
    counts: Arc<BatchCounts>,
    cap: Option<u64>,
}

#[async_trait]
impl TaskQueue for CountingQueue {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn send_batch(&self, bodies: &[String]) -> Result<(), QueueError> {
        if let Some(cap) = self.cap {
            let undeleted =
                || self.counts.sent.load(Ordering::Relaxed).saturating_sub(self.counts.deleted.load(Ordering::Relaxed));
            while undeleted() + bodies.len() as u64 > cap {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        self.counts.sends.fetch_add(1, Ordering::Relaxed);
        self.counts.sent.fetch_add(bodies.len() as u64, Ordering::Relaxed);
        self.inner.send_batch(bodies).await
    }

    async fn receive(&self, max: usize, visibility: Duration, wait: Duration) -> Result<Vec<QueueMessage>, QueueError> {
        let messages = self.inner.receive(max, visibility, wait).await?;
        self.counts.receives.fetch_add(1, Ordering::Relaxed);
        if messages.is_empty() {
            self.counts.empty_receives.fetch_add(1, Ordering::Relaxed);
        }
        self.counts.received.fetch_add(messages.len() as u64, Ordering::Relaxed);
        Ok(messages)
    }

    async fn change_visibility(&self, changes: &[(Receipt, Duration)]) -> Result<BatchFailures, QueueError> {
        self.inner.change_visibility(changes).await
    }

    async fn delete_batch(&self, receipts: &[Receipt]) -> Result<BatchFailures, QueueError> {
        self.counts.deletes.fetch_add(1, Ordering::Relaxed);
        self.counts.deleted.fetch_add(receipts.len() as u64, Ordering::Relaxed);
        self.inner.delete_batch(receipts).await
    }

    async fn dead_letter(&self, receipt: &Receipt, reason: &str) -> Result<(), QueueError> {
        self.inner.dead_letter(receipt, reason).await
    }

    async fn take_dead_letters(&self, max: usize, hold: Duration) -> Result<Vec<DeadLetter>, QueueError> {
        self.inner.take_dead_letters(max, hold).await
    }

    async fn delete_dead_letters(&self, receipts: &[Receipt]) -> Result<BatchFailures, QueueError> {
        self.inner.delete_dead_letters(receipts).await
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        self.inner.dead_letters(max).await
    }

    async fn redrive(&self) -> Result<u64, QueueError> {
        self.inner.redrive().await
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        self.inner.depth().await
    }
}
