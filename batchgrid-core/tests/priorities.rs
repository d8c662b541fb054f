//! Priorities, fair share and pause on the embedded grid: a manager service and in-process
//! workers sharing one grid, as on a laptop or a small AWS grid. The tests check orders and
//! relations between jobs (which finished first, how far the other had got, what started
//! after a pause), never raw timings, so a slow or busy machine does not fail them.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use batchgrid_core::analytics::{AnalyticsStore, JobRecord, JobState};
use batchgrid_core::db::{now_millis, open_sqlite};
use batchgrid_core::grid::{EmbeddedGridSettings, Grid};
use batchgrid_core::manager::{spool_dir, Manager};
use batchgrid_core::processor::{Processor, ProcessorRegistry, TaskContext, TaskFailure, TaskOutput};
use batchgrid_core::service::JobService;
use batchgrid_core::spec::{InputPolicy, Overrides};
use batchgrid_core::worker::{Worker, WorkerSettings};
use sqlx::sqlite::SqlitePool;
use sqlx::Row;

/// Sleeps a few milliseconds: a task that takes a worker's slot for a while.
struct Nap;

#[async_trait]
impl Processor for Nap {
    async fn process(&self, _ctx: &TaskContext) -> Result<TaskOutput, TaskFailure> {
        tokio::time::sleep(Duration::from_millis(3)).await;
        Ok(TaskOutput::default())
    }
}

/// A grid under `dir` with its manager service and two workers of three slots each.
struct Bench {
    service: Arc<JobService>,
    analytics: Arc<dyn AnalyticsStore>,
    /// The analytics database read directly, for attempts across a whole job.
    database: SqlitePool,
    stop: Arc<tokio::sync::Notify>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Bench {
    async fn start(dir: &Path) -> Self {
        let state = dir.join("state");
        let grid = Grid::open_embedded(&state, &EmbeddedGridSettings { max_receives: 5 }).await.expect("grid");
        let manager = Manager::new(grid.clone(), spool_dir(&state));
        let service = JobService::new(manager, Duration::from_millis(50), dir.to_path_buf(), InputPolicy::Operator);
        let stop = Arc::new(tokio::sync::Notify::new());
        let mut workers = Vec::new();
        for n in 0..2 {
            let mut settings = WorkerSettings::new(format!("w{n}"), state.join("scratch"));
            settings.concurrency = 3;
            settings.prefetch = Some(1);
            settings.poll_wait = Duration::from_millis(50);
            let mut registry = ProcessorRegistry::with_builtins();
            registry.register("nap", Nap);
            let worker = Worker::new(settings, grid.clone(), registry);
            let stop = stop.clone();
            workers.push(tokio::spawn(async move {
                worker.run(async move { stop.notified().await }).await.expect("worker");
            }));
        }
        let database = open_sqlite(&state.join("analytics.db"), 1).await.expect("analytics database");
        Self { service, analytics: grid.analytics.clone(), database, stop, workers }
    }

    /// Submits a job of `tasks` one-line tasks at `priority`.
    async fn submit(&self, dir: &Path, name: &str, tasks: usize, priority: u8) -> String {
        let input = dir.join(format!("{name}.txt"));
        let lines: String = (0..tasks).map(|n| format!("{n}\n")).collect();
        std::fs::write(&input, lines).expect("input");
        let job = format!(
            "name: {name}\ninput:\n  path: {name}.txt\nsplit:\n  lines: 1\nstages:\n  - name: nap\n    processor: nap\n\
             output:\n  path: out-{name}\npriority: {priority}\n"
        );
        self.service.submit(&job, &format!("{name}.yaml"), &Overrides::default()).await.expect("submit")
    }

    async fn job(&self, id: &str) -> JobRecord {
        self.analytics.job(id).await.expect("read job").expect("job exists")
    }

    async fn done(&self, id: &str) -> u64 {
        self.analytics.stages(id).await.expect("stages")[0].done
    }

    /// Waits until the job's first stage has `tasks` done, failing the test after two minutes
    /// (a stuck grid, not a slow one).
    async fn wait_done(&self, id: &str, tasks: u64) {
        let since = Instant::now();
        while self.done(id).await < tasks {
            assert!(since.elapsed() < Duration::from_secs(120), "timed out waiting for {tasks} tasks of {id}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_ended(&self, id: &str) -> JobRecord {
        let since = Instant::now();
        loop {
            let job = self.job(id).await;
            if job.state.is_terminal() {
                return job;
            }
            assert!(since.elapsed() < Duration::from_secs(120), "timed out waiting for job {id} to end");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One number from the analytics database.
    async fn count(&self, sql: &str, job: &str, from: i64, to: i64) -> i64 {
        let row = sqlx::query(sql).bind(job).bind(from).bind(to).fetch_one(&self.database).await.expect("query");
        row.try_get::<Option<i64>, _>(0).expect("a number").unwrap_or(0)
    }

    async fn stop(self) {
        self.stop.notify_waiters();
        for worker in self.workers {
            worker.await.expect("worker task");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_high_priority_job_overtakes_a_long_low_priority_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bench = Bench::start(dir.path()).await;
    const LOW_TASKS: usize = 6000;
    let low = bench.submit(dir.path(), "low", LOW_TASKS, 10).await;
    bench.wait_done(&low, 200).await;

    let submitted = now_millis();
    let high = bench.submit(dir.path(), "high", 60, 90).await;
    let high_end = bench.wait_ended(&high).await;
    let low_end = bench.wait_ended(&low).await;
    assert_eq!((high_end.state, low_end.state), (JobState::Completed, JobState::Completed));
    let (high_done, low_done) = (high_end.finished_at.expect("ended"), low_end.finished_at.expect("ended"));
    assert!(high_done < low_done, "the high-priority job finishes first ({high_done} vs {low_done})");

    let first_high = bench
        .count("SELECT MIN(started_at) FROM attempts WHERE job_id = ? AND started_at >= ? AND ? > 0", &high, 0, 1)
        .await;
    let low_between = bench
        .count(
            "SELECT COUNT(*) FROM attempts WHERE job_id = ? AND started_at > ? AND started_at < ?",
            &low,
            submitted,
            first_high,
        )
        .await;
    let low_after = bench
        .count("SELECT COUNT(*) FROM attempts WHERE job_id = ? AND started_at > ? AND ? > 0", &low, high_done, 1)
        .await;
    eprintln!("low tasks started before the high job's first: {low_between}; after it ended: {low_after}");
    // Without admission the high job's tasks would queue behind the whole low backlog: every
    // low task would start first. With it, only the window already queued does. That window is
    // sized by the observed rate (half a second of work), and these no-op tasks' rate moves
    // with the machine's load (1,368 seen on a loaded CI machine), so the bound is a third of
    // the job, still far from the whole backlog; `make bench` measures the time itself.
    assert!(
        low_between < (LOW_TASKS / 3) as i64,
        "{low_between} low-priority tasks started between the high job's submission and its first task"
    );
    assert!(low_between * 2 < low_after, "most of the low job ran after the high one ({low_after} vs {low_between})");
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn equal_priorities_progress_together() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bench = Bench::start(dir.path()).await;
    const TASKS: usize = 2500;
    let (a, b) = (bench.submit(dir.path(), "a", TASKS, 50).await, bench.submit(dir.path(), "b", TASKS, 50).await);
    // Sampled all along: the two never drift more than 10% of a job apart.
    let mut widest = 0u64;
    let since = Instant::now();
    while !(bench.job(&a).await.state.is_terminal() && bench.job(&b).await.state.is_terminal()) {
        let (x, y) = (bench.done(&a).await, bench.done(&b).await);
        widest = widest.max(x.abs_diff(y));
        assert!(since.elapsed() < Duration::from_secs(120), "timed out waiting for both jobs to end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("the widest gap between two equal jobs' done tasks: {widest} of {TASKS}");
    assert!(widest * 10 <= TASKS as u64, "equal jobs drifted {widest} tasks apart, more than 10% of {TASKS}");
    let (a_end, b_end) = (bench.job(&a).await, bench.job(&b).await);
    // When the first finishes, the other has done at least 90% of its tasks.
    let (first, other) = if a_end.finished_at <= b_end.finished_at { (&a_end, &b) } else { (&b_end, &a) };
    let other_done = bench
        .count(
            "SELECT COUNT(DISTINCT task_id) FROM attempts WHERE job_id = ? AND outcome = 'succeeded' AND ended_at <= ? AND ? >= 0",
            other,
            first.finished_at.expect("ended"),
            0,
        )
        .await;
    eprintln!("when the first of two equal jobs finished, the other had done {other_done} of {TASKS}");
    assert!(
        other_done * 10 >= (TASKS * 9) as i64,
        "when {} finished, {other} had done {other_done} of {TASKS}: not a fair share",
        first.id
    );
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_stops_new_starts_and_resume_continues() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bench = Bench::start(dir.path()).await;
    const TASKS: usize = 2000;
    let job = bench.submit(dir.path(), "pausable", TASKS, 50).await;
    bench.wait_done(&job, 100).await;

    bench.service.set_paused(&job, true).await.expect("pause");
    let paused_at = now_millis();
    // Whatever was already queued is given back; nothing starts from 2 s after the pause.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let late_starts = bench
        .count("SELECT COUNT(*) FROM attempts WHERE job_id = ? AND started_at > ? AND ? > 0", &job, paused_at + 2000, 1)
        .await;
    assert_eq!(late_starts, 0, "no task of a paused job starts 2 s after the pause");
    let status = bench.service.status(&job).await.expect("status");
    assert!(status.paused && !status.state.is_terminal(), "{status:?}");
    assert!(status.pending > 0, "work is waiting for the resume: {status:?}");
    assert!(bench.done(&job).await < TASKS as u64);

    bench.service.set_paused(&job, false).await.expect("resume");
    let end = bench.wait_ended(&job).await;
    assert_eq!(end.state, JobState::Completed);
    assert_eq!(bench.done(&job).await, TASKS as u64, "every task done, each counted once");
    let history = bench.service.history(&job).await.expect("history");
    let actions: Vec<(String, String)> = history
        .iter()
        .filter(|e| e.from == Some(e.to))
        .map(|e| (e.reason.clone().unwrap_or_default(), e.actor.clone()))
        .collect();
    assert_eq!(
        actions,
        [
            ("paused: no new task starts until resumed".to_owned(), "operator".to_owned()),
            ("resumed".to_owned(), "operator".to_owned())
        ]
    );
    bench.stop().await;
}

/// The API and its client, as `batchgrid submit --priority` and `batchgrid job pause | resume |
/// priority` use them: each action lands in the job's status and history; bad values and
/// ended jobs are refused with the field or the state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_pauses_resumes_and_reprioritises_and_refuses_what_it_cannot() {
    use batchgrid_core::secret::Secret;
    use batchgrid_core::service::{api, client::ApiClient};
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let grid = Grid::open_embedded(&state, &EmbeddedGridSettings { max_receives: 5 }).await.expect("grid");
    let service = JobService::new(
        Manager::new(grid, spool_dir(&state)),
        Duration::from_millis(50),
        dir.path().to_path_buf(),
        InputPolicy::Operator,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(api::serve(listener, service, Secret::new("t0ken"), std::future::pending()));
    let client = ApiClient::new(&format!("http://{address}"), Secret::new("t0ken")).expect("client");

    // No worker runs: the job waits, running, with its tasks pending.
    std::fs::write(dir.path().join("in.txt"), "a\nb\n").expect("input");
    let document = "name: api\ninput:\n  path: in.txt\nsplit:\n  lines: 1\nstages:\n  - name: s\n    processor: noop\n\
                    output:\n  path: out\npriority: 20\n";
    let id = client.submit_with_priority(document, "api.yaml", None, Some(80)).await.expect("submit");
    assert_eq!(client.status(&id).await.expect("status").priority, 80, "the flag wins over the file");
    client.set_paused(&id, true).await.expect("pause");
    client.set_paused(&id, true).await.expect("pausing a paused job is no error");
    assert!(client.status(&id).await.expect("status").paused);
    client.set_priority(&id, 95).await.expect("priority");
    client.set_paused(&id, false).await.expect("resume");
    let status = client.status(&id).await.expect("status");
    assert_eq!((status.paused, status.priority), (false, 95));
    let reasons: Vec<String> = client
        .history(&id)
        .await
        .expect("history")
        .into_iter()
        .filter(|e| e.actor == "operator")
        .filter_map(|e| e.reason)
        .collect();
    assert_eq!(reasons, ["paused: no new task starts until resumed", "priority 80 -> 95", "resumed"]);

    let refused = client.set_priority(&id, 150).await.expect_err("out of range");
    assert_eq!(refused.status().map(|s| s.as_u16()), Some(400), "{refused}");
    assert!(refused.to_string().contains("priority"), "{refused}");
    let refused = client.set_paused("no-such-job", true).await.expect_err("unknown");
    assert_eq!(refused.status().map(|s| s.as_u16()), Some(404), "{refused}");
    client.cancel(&id).await.expect("cancel");
    let refused = client.set_paused(&id, true).await.expect_err("ended");
    assert_eq!(refused.status().map(|s| s.as_u16()), Some(409), "{refused}");
    assert!(refused.to_string().contains("cancelled"), "{refused}");
}
