//! The dashboard at month-end scale: the job list and a job's page served over HTTP from a
//! PostgreSQL history of 1,000 jobs and 5,000,000 recorded attempts (one job of a million
//! tasks among 999 of about 4,000), each page's median beside the time of a plain
//! `SELECT count(*) FROM attempts` measured in the same run. Target: every page under 200 ms.
//!
//! The history is loaded once into the database `batchgrid_bench_pages` on the PostgreSQL at
//! 127.0.0.1:5432 (about a minute) and reused while it is complete; `BENCH_PAGES_RELOAD=1`
//! loads it again. Set `BENCH_DATABASE_URL` to use another server.
//!
//! Run with `cargo bench -p batchgrid-core --bench pages` (or `make bench`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use batchgrid_core::analytics::PgAnalytics;
use batchgrid_core::grid::{EmbeddedGridSettings, Grid};
use batchgrid_core::manager::{spool_dir, Manager};
use batchgrid_core::secret::Secret;
use batchgrid_core::service::{api, JobService};
use batchgrid_core::spec::{parse_job, InputPolicy, Overrides};
use sqlx::postgres::PgPool;
use sqlx::{Executor, Row};

const DATABASE: &str = "batchgrid_bench_pages";
const TOKEN: &str = "bench-pages-token";
/// Jobs in the history; the one at [`BIG_JOB`] has [`BIG_TASKS`] tasks, the others
/// [`SMALL_TASKS`].
const JOBS: i64 = 1_000;
const BIG_JOB: i64 = 500;
const BIG_TASKS: i64 = 1_000_000;
const SMALL_TASKS: i64 = 3_920;
/// Requests timed per page, after two warm-ups.
const RUNS: usize = 21;
/// Bumped whenever the generated history changes, so an old one is loaded again.
const HISTORY_VERSION: i64 = 1;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let server =
            std::env::var("BENCH_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let url = format!("{}/{DATABASE}", server.trim_end_matches('/'));
        let admin = PgPool::connect(&format!("{}/postgres", server.trim_end_matches('/')))
            .await
            .unwrap_or_else(|e| panic!("the pages bench needs PostgreSQL at {server} (set BENCH_DATABASE_URL): {e}"));
        let reload = std::env::var("BENCH_PAGES_RELOAD").is_ok_and(|v| v == "1");
        if reload || !loaded(&url).await {
            let started = Instant::now();
            println!("loading the history: {JOBS} jobs, about 5,000,000 attempts (once; kept in {DATABASE})...");
            let _ = admin.execute(format!("DROP DATABASE IF EXISTS {DATABASE}").as_str()).await;
            admin.execute(format!("CREATE DATABASE {DATABASE}").as_str()).await.expect("create the bench database");
            // Migrates: the schema is this build's.
            drop(PgAnalytics::connect(&url, 2).await.expect("migrate"));
            let pool = PgPool::connect(&url).await.expect("connect");
            load(&pool).await;
            println!("loaded in {:.0} s", started.elapsed().as_secs_f64());
        }
        let pool = PgPool::connect(&url).await.expect("connect");
        let attempts: i64 = sqlx::query("SELECT count(*) FROM attempts").fetch_one(&pool).await.expect("count").get(0);
        let jobs: i64 = sqlx::query("SELECT count(*) FROM jobs").fetch_one(&pool).await.expect("count").get(0);

        // The baseline: a plain count of the attempts table, timed like the pages.
        let mut count_ms = Vec::new();
        for run in 0..RUNS + 2 {
            let started = Instant::now();
            let _: i64 = sqlx::query("SELECT count(*) FROM attempts").fetch_one(&pool).await.expect("count").get(0);
            if run >= 2 {
                count_ms.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let baseline = median(&mut count_ms);

        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state");
        let mut grid = Grid::open_embedded(&state, &EmbeddedGridSettings { max_receives: 5 }).await.expect("grid");
        grid.analytics = Arc::new(PgAnalytics::connect(&url, 4).await.expect("analytics"));
        let manager = Manager::new(grid, spool_dir(&state));
        let service =
            JobService::new(manager, Duration::from_millis(100), dir.path().to_path_buf(), InputPolicy::Operator);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(api::serve(listener, service, Secret::new(TOKEN.to_owned()), std::future::pending()));
        let http = batchgrid_core::aws::https::builder().expect("TLS").build().expect("HTTP client");

        println!("history: {jobs} jobs, {attempts} attempts; SELECT count(*) FROM attempts: median {baseline:.0} ms");
        let pages = [
            ("job list", "/ui/jobs".to_owned()),
            ("job list, filtered", "/ui/jobs?state=failed&name=claims".to_owned()),
            ("a job's page (3,998 attempts)", format!("/ui/jobs/{}", job_id(BIG_JOB + 1))),
            ("a job's page (1,020,000 attempts)", format!("/ui/jobs/{}", job_id(BIG_JOB))),
            ("a running job's page", format!("/ui/jobs/{}", job_id(JOBS))),
            ("/metrics", "/metrics".to_owned()),
        ];
        let mut worst: f64 = 0.0;
        let mut line = format!("RESULT dashboard_pages baseline_count_ms={baseline:.1}");
        for (name, path) in &pages {
            let mut times = Vec::new();
            let mut bytes = 0;
            for run in 0..RUNS + 2 {
                let started = Instant::now();
                let response = http.get(format!("{base}{path}")).bearer_auth(TOKEN).send().await.expect("request");
                assert!(response.status().is_success(), "{path}: {}", response.status());
                bytes = response.bytes().await.expect("body").len();
                if run >= 2 {
                    times.push(started.elapsed().as_secs_f64() * 1000.0);
                }
            }
            let p50 = median(&mut times);
            let max = times.iter().copied().fold(0.0, f64::max);
            worst = worst.max(p50);
            println!(
                "{name:<36} median {p50:>6.1} ms, slowest {max:>6.1} ms ({:.2}x the count), {} KiB",
                p50 / baseline.max(0.001),
                bytes / 1024
            );
            line.push_str(&format!(
                " {}_ms={p50:.1}",
                name.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect::<Vec<_>>().join("_")
            ));
        }
        println!("{line} worst_ms={worst:.1} (target < 200 ms)");
    });
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn job_id(n: i64) -> String {
    format!("bench-{n:04}")
}

/// Whether the database holds this version's whole history, on this build's schema.
async fn loaded(url: &str) -> bool {
    // A schema from another build (a migration added or changed) means loading again.
    if PgAnalytics::connect(url, 1).await.is_err() {
        return false;
    }
    let Ok(pool) = PgPool::connect(url).await else { return false };
    let version = sqlx::query("SELECT version FROM bench_history").fetch_one(&pool).await;
    matches!(version.map(|row| row.get::<i64, _>(0)), Ok(HISTORY_VERSION))
}

/// Generates the history in the database itself (generate_series), as the manager and workers
/// would have recorded it: jobs, their stages with exact counters, tasks, every attempt, the
/// history entries, and the rollups (by the migration's own backfill).
async fn load(pool: &PgPool) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("claims.csv"), "claim\n").expect("input");
    let spec = parse_job(
        "name: claims-monthly\ninput:\n  path: claims.csv\nsplit:\n  lines: 50000\nstages:\n  - name: validate\n    \
         command: [\"true\"]\n  - name: totals\n    kind: reduce\n    command: [\"cat\"]\noutput:\n  path: results\n",
        "bench.yaml",
        dir.path(),
        &Overrides::default(),
    )
    .expect("spec");
    let spec = serde_json::to_string(&spec).expect("spec json");
    // A year of month-ends: a job every 8 hours, the newest four still running.
    let t0: i64 = 1_764_547_200_000; // 2025-12-01
    let statements = [
        format!(
            "INSERT INTO jobs (id, name, state, spec, submitted_at, started_at, finished_at, error)
             SELECT 'bench-' || lpad(j::text, 4, '0'),
                    (ARRAY['claims-monthly', 'transcode-media', 'etl-nightly', 'claims-daily'])[1 + j % 4],
                    CASE WHEN j > {JOBS} - 4 THEN 'running' WHEN j % 20 = 0 THEN 'failed' ELSE 'completed' END,
                    $1, {t0} + j * 28800000, {t0} + j * 28800000 + 1000,
                    CASE WHEN j > {JOBS} - 4 THEN NULL
                         ELSE {t0} + j * 28800000 + CASE WHEN j = {BIG_JOB} THEN 14400000 ELSE 600000 END END,
                    CASE WHEN j % 20 = 0 AND j <= {JOBS} - 4 THEN 'tasks failed for good' END
             FROM generate_series(1::bigint, {JOBS}) AS j"
        ),
        "INSERT INTO stages (job_id, stage, name, kind, expected_tasks)
         SELECT id, 0, 'validate', 'map', NULL::bigint FROM jobs UNION ALL SELECT id, 1, 'totals', 'reduce', NULL FROM jobs"
            .to_owned(),
        "INSERT INTO job_admission (job_id) SELECT id FROM jobs".to_owned(),
        // Map tasks: 1 in 400 failed for good, 1 in 50 needed a second attempt, a long tail of
        // 1 in 997 a minute long; a running job has 60% done so far.
        format!(
            "INSERT INTO tasks (job_id, stage, task_id, status, attempts, worker_id, last_error, bytes_in, bytes_out,
                                duration_ms, finished_at)
             SELECT job.id, 0, 'chunk-' || lpad(t::text, 7, '0'),
                    CASE WHEN t % 400 = 7 THEN 'failed' ELSE 'done' END,
                    CASE WHEN t % 50 = 3 THEN 2 ELSE 1 END,
                    'worker-' || (t % 20),
                    CASE WHEN t % 400 = 7 THEN 'exit status 3: ' || repeat('rejected claim ', 20) END,
                    50000, 1000,
                    100 + (t * 7919) % 4000 + CASE WHEN t % 997 = 0 THEN 60000 ELSE 0 END,
                    job.started_at + t * (COALESCE(job.finished_at, job.started_at + 600000) - job.started_at) / job.n
             FROM (SELECT id, started_at, finished_at, state,
                          CASE WHEN id = 'bench-{BIG_JOB:04}' THEN {BIG_TASKS} ELSE {SMALL_TASKS} END AS n
                   FROM jobs) AS job,
                  LATERAL generate_series(1::bigint, CASE WHEN job.state = 'running' THEN job.n * 6 / 10 ELSE job.n END) AS t"
        ),
        // The reduce of every ended job.
        "INSERT INTO tasks (job_id, stage, task_id, status, attempts, worker_id, bytes_in, bytes_out, duration_ms,
                            finished_at)
         SELECT id, 1, 'reduce', 'done', 1, 'worker-0', 1000, 100, 900, finished_at FROM jobs WHERE finished_at IS NOT NULL"
            .to_owned(),
        // Every attempt: a second one after a retry, the first then `retrying`.
        "INSERT INTO attempts (job_id, stage, task_id, attempt, worker_id, started_at, ended_at, outcome, exit_status,
                               bytes_in, bytes_out, error)
         SELECT job_id, stage, task_id, 1, worker_id, finished_at - duration_ms - CASE WHEN attempts = 2 THEN 5000 ELSE 0 END,
                finished_at - CASE WHEN attempts = 2 THEN 5000 ELSE 0 END,
                CASE WHEN attempts = 2 THEN 'retrying' WHEN status = 'failed' THEN 'failed' ELSE 'succeeded' END,
                CASE WHEN attempts = 2 OR status = 'failed' THEN 3 ELSE 0 END, bytes_in, bytes_out,
                CASE WHEN attempts = 2 THEN 'exit status 3: transient' ELSE last_error END
         FROM tasks"
            .to_owned(),
        "INSERT INTO attempts (job_id, stage, task_id, attempt, worker_id, started_at, ended_at, outcome, exit_status,
                               bytes_in, bytes_out, error)
         SELECT job_id, stage, task_id, 2, worker_id, finished_at - duration_ms, finished_at,
                CASE WHEN status = 'failed' THEN 'failed' ELSE 'succeeded' END, 0, bytes_in, bytes_out, NULL
         FROM tasks WHERE attempts = 2"
            .to_owned(),
        // The counters, exact, as record_attempts keeps them.
        format!(
            "UPDATE stages SET expected_tasks = CASE WHEN stages.stage = 1 THEN 1
                                                     WHEN stages.job_id = 'bench-{BIG_JOB:04}' THEN {BIG_TASKS}
                                                     ELSE {SMALL_TASKS} END,
                    done = counts.done, failed = counts.failed
             FROM (SELECT job_id, stage, count(*) FILTER (WHERE status = 'done') AS done,
                          count(*) FILTER (WHERE status = 'failed') AS failed
                   FROM tasks GROUP BY job_id, stage) AS counts
             WHERE stages.job_id = counts.job_id AND stages.stage = counts.stage"
        ),
        "INSERT INTO job_history (job_id, seq, at, from_state, to_state, reason, actor)
         SELECT id, 2, started_at, 'submitted', 'running', NULL, 'manager' FROM jobs
         UNION ALL
         SELECT id, 3, finished_at, 'running', state, error, 'manager' FROM jobs WHERE finished_at IS NOT NULL"
            .to_owned(),
        "INSERT INTO workers (id, host, pid, started_at, last_seen, state, tasks_done, tasks_failed)
         SELECT 'worker-' || w, 'ip-10-0-1-' || w, 1000 + w, 0, 0, 'stopped', 0, 0 FROM generate_series(0, 19) AS w"
            .to_owned(),
    ];
    for (index, statement) in statements.iter().enumerate() {
        let started = Instant::now();
        // Only the first statement (the jobs) takes a parameter: their spec.
        let query = if index == 0 { sqlx::query(statement).bind(&spec) } else { sqlx::query(statement) };
        query.execute(pool).await.unwrap_or_else(|e| panic!("statement {index}: {e}"));
        println!("  step {}/{} in {:.1} s", index + 1, statements.len() + 1, started.elapsed().as_secs_f64());
    }
    // The rollups, by the migration's own backfill of tasks already done.
    let migration = include_str!("../migrations/postgres/0011_task_rollups.sql");
    let at = migration.find("INSERT INTO task_time_buckets").expect("the migration's backfill");
    pool.execute(&migration[at..]).await.expect("rollups");
    pool.execute("ANALYZE").await.expect("analyze");
    sqlx::query("CREATE TABLE bench_history (version BIGINT NOT NULL)").execute(pool).await.expect("marker");
    sqlx::query("INSERT INTO bench_history VALUES ($1)").bind(HISTORY_VERSION).execute(pool).await.expect("marker");
}
