//! The conformance suites against the embedded backends and PostgreSQL, plus what only a
//! server with concurrent writers can get wrong.

use std::sync::Arc;

use batchgrid_core::analytics::{
    AnalyticsStore, AttemptOutcome, AttemptRecord, JobRecord, JobState, PgAnalytics, SqliteAnalytics, StageRecord,
};
use batchgrid_core::conformance;
use batchgrid_core::queue::sqlite::open_queue_database;
use batchgrid_core::queue::{SqliteQueue, TaskQueue};
use batchgrid_core::spec::StageKind;
use batchgrid_core::store::LocalStore;
use batchgrid_testkit::postgres::TestDatabase;

#[tokio::test]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalStore::open(dir.path().join("objects")).expect("open");
    conformance::store::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_queue_conforms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pool = open_queue_database(&dir.path().join("queue.db")).await.expect("open");
    let mut next = 0;
    conformance::queue::run_all(|| {
        next += 1;
        let queue: Arc<dyn TaskQueue> =
            Arc::new(SqliteQueue::new(pool.clone(), &format!("q{next}"), conformance::queue::MAX_RECEIVES));
        async move { queue }
    })
    .await;
}

#[tokio::test]
async fn sqlite_analytics_conforms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteAnalytics::open(&dir.path().join("analytics.db")).await.expect("open");
    conformance::analytics::run_all(&store).await;
}

#[tokio::test]
async fn postgres_analytics_conforms() {
    let database = TestDatabase::new();
    let store = PgAnalytics::connect(&database.url(), 4).await.expect("connect");
    conformance::analytics::run_all(&store).await;
}

#[tokio::test]
async fn sqlite_admission_conforms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteAnalytics::open(&dir.path().join("analytics.db")).await.expect("open");
    conformance::admission::run_all(&store).await;
}

#[tokio::test]
async fn postgres_admission_conforms() {
    let database = TestDatabase::new();
    let store = PgAnalytics::connect(&database.url(), 4).await.expect("connect");
    conformance::admission::run_all(&store).await;
}

/// Two managers, each with its own connection pool (as two processes have), claim the same
/// occurrences at once: each is won by exactly one.
async fn two_managers_claim_once(a: Arc<dyn AnalyticsStore>, b: Arc<dyn AnalyticsStore>) {
    use batchgrid_core::analytics::{OccurrenceRecord, OccurrenceState, ScheduleRecord};
    let schedule = ScheduleRecord {
        name: "month-end".into(),
        spec: "{}".into(),
        paused: false,
        watermark: 0,
        created_at: 0,
        updated_at: 0,
    };
    a.create_schedule(&schedule).await.expect("create");
    for fire_time in 1..=50 {
        let occurrence = OccurrenceRecord {
            schedule: "month-end".into(),
            fire_time,
            state: OccurrenceState::Claimed,
            job_id: None,
            manual: false,
            reason: None,
            created_at: 0,
        };
        let (first, second) = (occurrence.clone(), occurrence);
        let (a, b) = (a.clone(), b.clone());
        let claims = (
            tokio::spawn(async move { a.claim_occurrence(&first).await }),
            tokio::spawn(async move { b.claim_occurrence(&second).await }),
        );
        let won = [claims.0.await.expect("join").expect("claim"), claims.1.await.expect("join").expect("claim")];
        assert_eq!(won.iter().filter(|w| **w).count(), 1, "fire time {fire_time}: {won:?}");
    }
    assert_eq!(a.occurrences("month-end", 100).await.expect("list").len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managers_on_one_sqlite_file_fire_each_occurrence_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("analytics.db");
    let a = SqliteAnalytics::open(&path).await.expect("open a");
    let b = SqliteAnalytics::open(&path).await.expect("open b");
    two_managers_claim_once(Arc::new(a), Arc::new(b)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managers_on_one_postgres_fire_each_occurrence_once() {
    let database = TestDatabase::new();
    let a = PgAnalytics::connect(&database.url(), 2).await.expect("connect a");
    let b = PgAnalytics::connect(&database.url(), 2).await.expect("connect b");
    two_managers_claim_once(Arc::new(a), Arc::new(b)).await;
}

/// Processes starting together all migrate the same fresh database: one applies the
/// migrations under sqlx's advisory lock, the others wait and find them applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_migrations_are_safe() {
    let database = TestDatabase::new();
    let url = database.url();
    let starts = (0..8).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { PgAnalytics::connect(&url, 1).await })
    });
    for start in futures::future::join_all(starts).await {
        start.expect("join").expect("every process migrates, or finds the migrations applied");
    }
    let store = PgAnalytics::connect(&url, 1).await.expect("connect after");
    assert!(store.request_totals().await.expect("the last migration's table exists").is_empty());
}

/// Batches recording the same stage from several processes at once must move its counters
/// exactly once per task (SQLite serialises writers; PostgreSQL does not).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_batches_keep_counters_exact() {
    const TASKS: usize = 40;
    const WRITERS: usize = 8;
    let database = TestDatabase::new();
    let store = PgAnalytics::connect(&database.url(), 1).await.expect("connect");
    let job = JobRecord {
        id: "concurrent".into(),
        name: "concurrent".into(),
        state: JobState::Running,
        spec: "{}".into(),
        submitted_at: 1,
        started_at: None,
        finished_at: None,
        error: None,
    };
    store
        .create_job(&job, &[StageRecord { stage: 0, name: "map".into(), kind: StageKind::Map }])
        .await
        .expect("create");
    // Every writer reports every task: even writers a retry, odd writers a success, each with
    // their own pool so the batches really overlap.
    let writers = (0..WRITERS).map(|writer| {
        let url = database.url();
        tokio::spawn(async move {
            let store = PgAnalytics::connect(&url, 1).await.expect("connect");
            let outcome = if writer % 2 == 0 { AttemptOutcome::Retrying } else { AttemptOutcome::Succeeded };
            let mut batch: Vec<AttemptRecord> = (0..TASKS)
                .map(|task| AttemptRecord {
                    job_id: "concurrent".into(),
                    stage: 0,
                    task_id: format!("t{task:02}"),
                    attempt: u32::try_from(writer + 1).expect("small"),
                    worker_id: format!("w{writer}"),
                    started_at: 10,
                    ended_at: 20,
                    outcome,
                    exit_status: None,
                    bytes_in: 0,
                    bytes_out: 0,
                    error: None,
                })
                .collect();
            // Different orders in different batches, as real workers would send them.
            if writer % 3 == 0 {
                batch.reverse();
            }
            store.record_attempts(&batch).await
        })
    });
    for writer in futures::future::join_all(writers).await {
        writer.expect("join").expect("record");
    }
    let progress = &store.stages("concurrent").await.expect("stages")[0];
    assert_eq!(
        (progress.done, progress.failed, progress.retrying),
        (TASKS as u64, 0, 0),
        "each task counted once, as done, however the batches interleaved"
    );
    let times = store.task_times("concurrent").await.expect("times");
    assert_eq!(times[0].histogram.count(), TASKS as u64, "the rollups count each task once too");
    assert_eq!(store.completions("concurrent").await.expect("completions"), vec![(0, TASKS as u64)]);
}
