//! Embedded-grid throughput, each figure beside a baseline measured in the same run:
//!
//! 1. A plain batched SQLite queue with no bookkeeping (claim ten rows, delete them): the floor
//!    cost of the storage engine.
//! 2. 100,000 no-op tasks of a registered Rust processor through the embedded queue and
//!    analytics store, with the real worker: every delivery received with a visibility timeout,
//!    every attempt recorded, every task upserted, every message acknowledged.
//! 3. The worker's rate over 10,000 tasks with 10,000 queued and with 1,000,000 queued: the
//!    queue's cost per task must not grow with the backlog.
//!
//! Run with `cargo bench -p batchgrid-core --bench throughput` (or `make bench`). Set
//! `BENCH_TASKS` to change the 100,000.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use batchgrid_core::grid::{EmbeddedGridSettings, Grid};
use batchgrid_core::manager::Manager;
use batchgrid_core::processor::ProcessorRegistry;
use batchgrid_core::spec::{parse_job, Overrides};
use batchgrid_core::worker::{Worker, WorkerSettings};
use sqlx::Row;

const CONCURRENCY: usize = 20;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let tasks: u64 = std::env::var("BENCH_TASKS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
        let baseline = plain_queue_drain(tasks).await;
        println!("baseline: plain batched SQLite queue drains {baseline:.0} messages/s ({tasks} messages)");
        let grid_rate = grid_drain(tasks, tasks, tasks).await;
        println!(
            "grid: {tasks} no-op tasks through the embedded queue and analytics store: {grid_rate:.0} tasks/s \
             ({:.2}x the baseline's time per task)",
            baseline / grid_rate
        );
        let shallow = grid_drain(10_000, 10_000, 10_000).await;
        let deep = grid_drain(1_000_000, 10_000, 1_000_000).await;
        println!("backlog: 10,000 tasks with 10,000 queued: {shallow:.0} tasks/s");
        println!("backlog: 10,000 tasks with 1,000,000 queued: {deep:.0} tasks/s ({:.2}x the shallow rate)", deep / shallow);
        println!(
            "RESULT grid_tasks_per_s={grid_rate:.0} baseline_per_s={baseline:.0} backlog_10k_per_s={shallow:.0} backlog_1m_per_s={deep:.0}"
        );
    });
}

/// The floor: insert `n` rows, then claim-and-delete them ten at a time with one statement.
async fn plain_queue_drain(n: u64) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let pool = batchgrid_core::db::open_sqlite(&dir.path().join("plain.db"), 4).await.expect("open");
    sqlx::query("CREATE TABLE q (id INTEGER PRIMARY KEY, body TEXT NOT NULL)").execute(&pool).await.expect("create");
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
         INSERT INTO q (body) SELECT printf('{\"task\":\"%06d\"}', i) FROM n",
    )
    .bind(n as i64)
    .execute(&pool)
    .await
    .expect("fill");
    let started = Instant::now();
    let mut drained = 0u64;
    loop {
        let rows = sqlx::query("DELETE FROM q WHERE id IN (SELECT id FROM q ORDER BY id LIMIT 10) RETURNING body")
            .fetch_all(&pool)
            .await
            .expect("drain");
        if rows.is_empty() {
            break;
        }
        drained += rows.len() as u64;
    }
    drained as f64 / started.elapsed().as_secs_f64()
}

/// Queues `queued` no-op tasks, runs one worker until `measured` are done and returns the rate.
/// `expected` is what the stage is told to expect.
async fn grid_drain(queued: u64, measured: u64, expected: u64) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("unused-input");
    std::fs::write(&input, "x\n").expect("input");
    let job = format!(
        "name: bench\ninput:\n  path: {}\nstages:\n  - name: noop\n    processor: noop\noutput:\n  path: out\n",
        input.display()
    );
    let spec = parse_job(&job, "bench.yaml", dir.path(), &Overrides::default()).expect("job");
    let state = dir.path().join("state");
    let grid = Grid::open_embedded(&state, &EmbeddedGridSettings::for_job(&spec)).await.expect("grid");
    let manager = Manager::new(grid.clone(), state.join("spool"));
    let job_id = manager.submit(&spec).await.expect("submit");
    grid.analytics.set_stage_expected(&job_id, 0, expected).await.expect("expected");
    fill_queue(&state.join("queue.db"), &job_id, queued).await;

    let mut settings = WorkerSettings::new("bench-worker", state.join("scratch"));
    settings.concurrency = CONCURRENCY;
    settings.poll_wait = Duration::from_millis(100);
    let worker = Worker::new(settings, grid.clone(), ProcessorRegistry::with_builtins());
    let stop = Arc::new(tokio::sync::Notify::new());
    let started = Instant::now();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { worker.run(async move { stop.notified().await }).await }
    });
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let done = grid.analytics.stages(&job_id).await.expect("progress")[0].done;
        if done >= measured {
            break;
        }
    }
    let elapsed = started.elapsed();
    stop.notify_one();
    running.await.expect("join").expect("worker");
    let attempts = grid.analytics.attempt_totals(&job_id).await.expect("totals").attempts;
    assert!(attempts >= measured, "every attempt recorded ({attempts} < {measured})");
    measured as f64 / elapsed.as_secs_f64()
}

/// Fills the task queue directly in SQL: sending a million messages ten at a time would
/// dominate the benchmark's run time without measuring anything new.
async fn fill_queue(db: &Path, job_id: &str, n: u64) {
    let pool = batchgrid_core::queue::sqlite::open_queue_database(db).await.expect("queue db");
    let now = batchgrid_core::db::now_millis();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?1)
         INSERT INTO messages (queue, body, visible_at, sent_at)
         SELECT 'input', printf('{\"job\":\"%s\",\"stage\":0,\"task\":\"%07d\",\"input\":\"jobs/%s/input/%07d/\"}', ?2, i, ?2, i), ?3, ?3
         FROM n",
    )
    .bind(n as i64)
    .bind(job_id)
    .bind(now)
    .execute(&pool)
    .await
    .expect("fill queue");
    let count: i64 = sqlx::query("SELECT COUNT(*) FROM messages").fetch_one(&pool).await.expect("count").get(0);
    assert_eq!(count as u64, n);
}
