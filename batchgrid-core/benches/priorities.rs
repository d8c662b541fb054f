//! Priorities and fair share on the embedded grid, each figure beside a baseline measured in
//! the same run (a manager service and in-process workers running `noop` tasks):
//!
//! 1. Time to first task of a small high-priority job on an idle grid (the baseline), then the
//!    same job submitted while a low-priority job of 200,000 tasks runs: the ratio says what
//!    the backlog costs it (without admission it would wait for the whole backlog).
//! 2. Fair share: two equal jobs submitted together while the low-priority job still runs:
//!    their progress ratio (the slower's done tasks over the faster's) when the faster is half
//!    done, and how far the slower has got when the faster finishes (1.00 is perfectly even).
//!
//! Run with `cargo bench -p batchgrid-core --bench priorities` (or `make bench`). Set
//! `BENCH_LOW_TASKS` to change the 200,000.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use batchgrid_core::analytics::AnalyticsStore;
use batchgrid_core::db::{now_millis, open_sqlite};
use batchgrid_core::grid::{EmbeddedGridSettings, Grid};
use batchgrid_core::manager::{spool_dir, Manager};
use batchgrid_core::processor::ProcessorRegistry;
use batchgrid_core::service::JobService;
use batchgrid_core::spec::{InputPolicy, Overrides};
use batchgrid_core::worker::{Worker, WorkerSettings};
use sqlx::sqlite::SqlitePool;
use sqlx::Row;

const WORKERS: usize = 2;
const CONCURRENCY: usize = 4;
const HIGH_TASKS: usize = 200;
const EQUAL_TASKS: usize = 5000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let low_tasks: usize = std::env::var("BENCH_LOW_TASKS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
        let dir = tempfile::tempdir().expect("temp dir");
        let grid = Setup::start(dir.path()).await;

        let idle = grid.time_to_first_task(dir.path(), "idle-high", 90).await;
        grid.wait_ended("idle-high").await;
        println!("baseline: a {HIGH_TASKS}-task job on an idle grid starts its first task in {idle:.3}s");

        let low = grid.submit(dir.path(), "low", low_tasks, 10).await;
        grid.wait_done(&low, 5_000).await;
        let loaded = grid.time_to_first_task(dir.path(), "high", 90).await;
        grid.wait_ended("high").await;
        let low_state = grid.analytics.job(&low).await.ok().flatten().map(|j| j.state);
        let low_done = grid.done(&low).await;
        println!(
            "priority: with a {low_tasks}-task priority-10 job running, a priority-90 job starts its first task in \
             {loaded:.3}s ({:.2}x the idle grid's) and ends while the low job is {} ({low_done} done)",
            loaded / idle.max(0.001),
            low_state.map_or_else(|| "unknown".to_owned(), |s| s.to_string())
        );

        let a = grid.submit(dir.path(), "equal-a", EQUAL_TASKS, 50).await;
        let b = grid.submit(dir.path(), "equal-b", EQUAL_TASKS, 50).await;
        let halfway = grid.ratio_at_half(&a, &b).await;
        let (a_end, b_end) = (grid.wait_ended(&a).await, grid.wait_ended(&b).await);
        let (first_end, other) = if a_end <= b_end { (a_end, &b) } else { (b_end, &a) };
        let other_done = grid.done_by(other, first_end).await;
        let fairness = other_done as f64 / EQUAL_TASKS as f64;
        println!(
            "fair share: two equal {EQUAL_TASKS}-task jobs beside the low one: progress ratio {halfway:.2} when the \
             faster was half done; when the first finished the other had done {other_done} ({fairness:.2}; 1.00 is \
             even, >= 0.90 is the target)"
        );
        println!(
            "RESULT priority_first_task_s={loaded:.3} idle_first_task_s={idle:.3} ratio={:.2} \
             fairness_halfway={halfway:.2} fairness_at_end={fairness:.2}",
            loaded / idle.max(0.001)
        );
        let _ = grid.service.cancel(&low).await;
        grid.stop().await;
    });
}

/// Gives up on a stuck bench.
fn check(since: Instant) {
    assert!(since.elapsed() < Duration::from_secs(900), "the bench is stuck");
}

struct Setup {
    service: Arc<JobService>,
    analytics: Arc<dyn AnalyticsStore>,
    database: SqlitePool,
    stop: Arc<tokio::sync::Notify>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    ids: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Setup {
    async fn start(dir: &Path) -> Self {
        let state = dir.join("state");
        let grid = Grid::open_embedded(&state, &EmbeddedGridSettings { max_receives: 5 }).await.expect("grid");
        let manager = Manager::new(grid.clone(), spool_dir(&state));
        let service = JobService::new(manager, Duration::from_millis(100), dir.to_path_buf(), InputPolicy::Operator);
        let stop = Arc::new(tokio::sync::Notify::new());
        let mut workers = Vec::new();
        for n in 0..WORKERS {
            let mut settings = WorkerSettings::new(format!("bench-{n}"), state.join("scratch"));
            settings.concurrency = CONCURRENCY;
            settings.prefetch = Some(CONCURRENCY);
            settings.poll_wait = Duration::from_millis(100);
            let worker = Worker::new(settings, grid.clone(), ProcessorRegistry::with_builtins());
            let stop = stop.clone();
            workers.push(tokio::spawn(async move {
                let _ = worker.run(async move { stop.notified().await }).await;
            }));
        }
        let database = open_sqlite(&state.join("analytics.db"), 1).await.expect("analytics database");
        Self { service, analytics: grid.analytics.clone(), database, stop, workers, ids: Default::default() }
    }

    async fn submit(&self, dir: &Path, name: &str, tasks: usize, priority: u8) -> String {
        let input = dir.join(format!("{name}.txt"));
        if !input.exists() {
            let lines: String = (0..tasks).map(|n| format!("{n}\n")).collect();
            std::fs::write(&input, lines).expect("input");
        }
        let job = format!(
            "name: {name}\ninput:\n  path: {name}.txt\nsplit:\n  lines: 1\nstages:\n  - name: noop\n    processor: noop\n\
             output:\n  path: out-{name}\npriority: {priority}\n"
        );
        let id = self.service.submit(&job, &format!("{name}.yaml"), &Overrides::default()).await.expect("submit");
        if let Ok(mut ids) = self.ids.lock() {
            ids.insert(name.to_owned(), id.clone());
        }
        id
    }

    fn id(&self, name: &str) -> String {
        self.ids.lock().ok().and_then(|ids| ids.get(name).cloned()).unwrap_or_else(|| name.to_owned())
    }

    /// Submits a high-priority job; seconds from its submission to its first task's start.
    async fn time_to_first_task(&self, dir: &Path, name: &str, priority: u8) -> f64 {
        let submitted = now_millis();
        let id = self.submit(dir, name, HIGH_TASKS, priority).await;
        let since = Instant::now();
        loop {
            let row = sqlx::query("SELECT MIN(started_at) FROM attempts WHERE job_id = ?")
                .bind(&id)
                .fetch_one(&self.database)
                .await
                .expect("query");
            if let Some(first) = row.try_get::<Option<i64>, _>(0).ok().flatten() {
                return (first - submitted).max(0) as f64 / 1000.0;
            }
            check(since);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn done(&self, id: &str) -> u64 {
        self.analytics.stages(id).await.map(|s| s[0].done).unwrap_or(0)
    }

    /// The slower job's done tasks over the faster's, when the faster has done half of its.
    async fn ratio_at_half(&self, a: &str, b: &str) -> f64 {
        let since = Instant::now();
        loop {
            let (x, y) = (self.done(a).await, self.done(b).await);
            if x.max(y) >= EQUAL_TASKS as u64 / 2 {
                return x.min(y) as f64 / x.max(y) as f64;
            }
            check(since);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Tasks of `id` done by Unix millisecond `at`.
    async fn done_by(&self, id: &str, at: i64) -> i64 {
        let row = sqlx::query(
            "SELECT COUNT(DISTINCT task_id) FROM attempts WHERE job_id = ? AND outcome = 'succeeded' AND ended_at <= ?",
        )
        .bind(id)
        .bind(at)
        .fetch_one(&self.database)
        .await
        .expect("query");
        row.try_get(0).unwrap_or(0)
    }

    /// When the job ended, Unix milliseconds.
    async fn wait_ended(&self, name: &str) -> i64 {
        let id = self.id(name);
        let since = Instant::now();
        loop {
            if let Some(ended) = self.analytics.job(&id).await.ok().flatten().and_then(|j| j.finished_at) {
                return ended;
            }
            check(since);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_done(&self, id: &str, tasks: u64) {
        let since = Instant::now();
        while self.done(id).await < tasks {
            check(since);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) {
        self.stop.notify_waiters();
        for worker in self.workers {
            let _ = worker.await;
        }
    }
}
