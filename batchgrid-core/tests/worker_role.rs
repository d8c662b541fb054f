//! The database role workers log in as (`batchgrid_worker`, migration 0007): everything a
//! worker does works, everything else is refused by the server (SQLSTATE 42501), and a worker
//! never migrates. RDS's `rds_iam` login needs a real instance; here the server trusts local
//! users, so the role logs in without a token and only its grants are under test.

use std::sync::Arc;

use batchgrid_core::analytics::credentials::{sqlstate, FixedUrl, ReconnectSettings};
use batchgrid_core::analytics::{
    AdmissionStore, AnalyticsError, AnalyticsStore, AttemptOutcome, AttemptRecord, JobRecord, JobState, PendingTask,
    PgAnalytics, RequestCount, RunningTask, StageRecord, WorkerRecord,
};
use batchgrid_core::spec::StageKind;
use batchgrid_testkit::postgres::TestDatabase;
use sqlx::Connection;

const WORKER: &str = "batchgrid_worker";
/// SQLSTATE `insufficient_privilege`.
const DENIED: &str = "42501";

fn job(id: &str) -> JobRecord {
    JobRecord {
        id: id.into(),
        name: id.into(),
        state: JobState::Running,
        spec: "{}".into(),
        submitted_at: 1,
        started_at: None,
        finished_at: None,
        error: None,
    }
}

fn attempt(task: &str) -> AttemptRecord {
    AttemptRecord {
        job_id: "j".into(),
        stage: 0,
        task_id: task.into(),
        attempt: 1,
        worker_id: "w".into(),
        started_at: 10,
        ended_at: 20,
        outcome: AttemptOutcome::Succeeded,
        exit_status: Some(0),
        bytes_in: 1,
        bytes_out: 2,
        error: None,
    }
}

async fn attach(url: &str) -> Result<PgAnalytics, AnalyticsError> {
    PgAnalytics::attach(Arc::new(FixedUrl::parse(url)?), 2, ReconnectSettings::default()).await
}

#[tokio::test]
async fn the_worker_role_can_do_a_workers_work_and_nothing_more() {
    let database = TestDatabase::new();
    let owner = PgAnalytics::connect(&database.url(), 2).await.expect("the owner migrates");
    owner
        .create_job(&job("j"), &[StageRecord { stage: 0, name: "map".into(), kind: StageKind::Map }])
        .await
        .expect("create");

    let worker = attach(&database.url_as(WORKER)).await.expect("the worker attaches");
    // What a worker does.
    worker.record_attempts(&[attempt("t1"), attempt("t2")]).await.expect("record attempts");
    worker.record_attempts(&[attempt("t1")]).await.expect("record a repeat (upsert)");
    worker
        .upsert_worker(&WorkerRecord {
            id: "w".into(),
            host: "h".into(),
            pid: 1,
            started_at: 1,
            last_seen: 2,
            state: "running".into(),
            tasks_done: 0,
            tasks_failed: 0,
            current_tasks: 0,
            // The running tasks' column (0012) is the workers' to write, like the rest of the row.
            running: vec![RunningTask { job_id: "j".into(), stage: 0, task_id: "t3".into(), started_at: 30 }],
        })
        .await
        .expect("heartbeat");
    worker
        .record_requests("w", &[RequestCount { service: "s3".into(), operation: "GetObject".into(), count: 3 }])
        .await
        .expect("request counts");
    assert_eq!(worker.job("j").await.expect("read the job").map(|job| job.state), Some(JobState::Running));
    assert_eq!(worker.stages("j").await.expect("stages")[0].done, 2, "counted once each");
    assert_eq!(worker.attempts("j", 0, "t1").await.expect("attempts").len(), 1);
    assert_eq!(
        owner.task_times("j").await.expect("rollups")[0].histogram.count(),
        2,
        "rolled up (0011 grants the rollups)"
    );
    let listed = owner.workers().await.expect("workers");
    assert_eq!(listed.iter().find(|w| w.id == "w").map(|w| w.running.len()), Some(1), "its running tasks");
    // A paused job's task given back to admission (migration 0009).
    owner.init_admission("j", 50).await.expect("admission");
    assert!(!worker.admission("j").await.expect("read the pause flag").expect("known").paused);
    let task = PendingTask { stage: 1, task_id: "t9".into(), seq: 9, body: "{}".into() };
    worker.return_pending("j", &task).await.expect("give a task back");
    assert_eq!(owner.admission("j").await.expect("admission").expect("known").pending, 1);

    // What it may not: the job's state and history, new jobs.
    let refused = worker.transition("j", JobState::Cancelled, Some("a task's wish"), "task").await;
    let error = refused.expect_err("a worker cannot change a job's state");
    assert_eq!(sqlstate(&error).as_deref(), Some(DENIED), "{error}");
    let error = worker.create_job(&job("forged"), &[]).await.expect_err("nor create a job");
    assert_eq!(sqlstate(&error).as_deref(), Some(DENIED), "{error}");
    let error = worker.set_paused("j", true, "task").await.expect_err("nor pause it");
    assert_eq!(sqlstate(&error).as_deref(), Some(DENIED), "{error}");
    assert_eq!(owner.job("j").await.expect("job").map(|job| job.state), Some(JobState::Running));

    // Nor rewrite a spec, delete records, or change the schema, however it is asked.
    let mut raw = sqlx::PgConnection::connect(&database.url_as(WORKER)).await.expect("connect as the worker");
    for statement in [
        "UPDATE jobs SET spec = '{\"forged\": true}'",
        "UPDATE job_admission SET priority = 100",
        "UPDATE job_admission SET paused = 1",
        "DELETE FROM tasks",
        "DELETE FROM attempts",
        "DELETE FROM task_time_buckets",
        "DELETE FROM completion_slots",
        "INSERT INTO job_history (job_id, seq, at, to_state, actor) VALUES ('j', 99, 1, 'done', 'x')",
        "SELECT * FROM schedules",
        "CREATE TABLE planted (x INT)",
        "DROP TABLE attempts",
    ] {
        let error = sqlx::query(statement).execute(&mut raw).await.expect_err(statement);
        assert_eq!(sqlstate(&error).as_deref(), Some(DENIED), "{statement}: {error}");
    }
    assert_eq!(owner.attempts("j", 0, "t2").await.expect("attempts").len(), 1, "nothing was deleted");
}

#[tokio::test]
async fn a_worker_never_migrates_and_says_whose_job_that_is() {
    let database = TestDatabase::new();
    // The role exists server-wide once any database has migrated; this one has not.
    let other = TestDatabase::new();
    PgAnalytics::connect(&other.url(), 1).await.expect("another database creates the role");

    let error = attach(&database.url_as(WORKER)).await.expect_err("no schema yet");
    assert!(matches!(error, AnalyticsError::SchemaBehind { found: 0, .. }), "{error}");
    assert!(error.to_string().contains("job manager"), "{error}");

    PgAnalytics::connect(&database.url(), 1).await.expect("the manager migrates");
    attach(&database.url_as(WORKER)).await.expect("then the worker attaches");
}
