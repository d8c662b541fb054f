//! The embedded analytics store on SQLite, through the migrations PostgreSQL shares.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use async_trait::async_trait;
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::rollup::{group_by_stage, RollupDelta};
use super::running;
use super::{
    actor, kind_str, merged_request_counts, parse_kind, parse_state, reopenable, status_delta, to_i64, to_u32, to_u64,
    transition_stamps, winners_by_stage, worker_tallies, AnalyticsError, AnalyticsStore, AttemptOutcome, AttemptRecord,
    AttemptSpans, AttemptTotals, GridSample, HistoryEntry, JobList, JobQuery, JobRecord, JobState, RequestCount,
    StageProgress, StageRecord, StageTimes, TaskRecord, WorkerActivity, WorkerRecord, TRANSITION_ROUNDS,
};
use crate::db::{now_millis, open_sqlite};

mod admission;
mod schedules;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Rows per multi-row statement, well under SQLite's bound-parameter limit.
const ROWS_PER_STATEMENT: usize = 400;

/// An [`AnalyticsStore`] in a SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteAnalytics {
    pool: SqlitePool,
}

fn stage_from_row(row: &SqliteRow) -> Result<StageProgress, AnalyticsError> {
    Ok(StageProgress {
        stage: to_u32(row.get("stage")),
        name: row.get("name"),
        kind: parse_kind(row.get("kind"))?,
        expected: row.get::<Option<i64>, _>("expected_tasks").map(to_u64),
        done: to_u64(row.get("done")),
        failed: to_u64(row.get("failed")),
        retrying: to_u64(row.get("retrying")),
    })
}

fn job_from_row(row: &SqliteRow) -> Result<JobRecord, AnalyticsError> {
    let state: String = row.get("state");
    Ok(JobRecord {
        id: row.get("id"),
        name: row.get("name"),
        state: parse_state(&state)?,
        spec: row.get("spec"),
        submitted_at: row.get("submitted_at"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
        error: row.get("error"),
    })
}

fn task_from_row(row: &SqliteRow) -> TaskRecord {
    TaskRecord {
        job_id: row.get("job_id"),
        stage: to_u32(row.get("stage")),
        task_id: row.get("task_id"),
        status: row.get("status"),
        attempts: to_u32(row.get("attempts")),
        worker_id: row.get("worker_id"),
        last_error: row.get("last_error"),
        duration_ms: row.get("duration_ms"),
    }
}

/// How the stage counters move when each (job, stage) group of task records is upserted.
async fn status_deltas<'a>(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    groups: &BTreeMap<(&'a str, u32), Vec<&'a AttemptRecord>>,
    newly_done: &mut Vec<&'a AttemptRecord>,
) -> Result<Vec<((&'a str, u32), [i64; 3])>, AnalyticsError> {
    let mut deltas = Vec::with_capacity(groups.len());
    for (&(job_id, stage), members) in groups {
        let mut current: HashMap<String, String> = HashMap::new();
        for chunk in members.chunks(ROWS_PER_STATEMENT) {
            let mut query: QueryBuilder<Sqlite> =
                QueryBuilder::new("SELECT task_id, status FROM tasks WHERE job_id = ");
            query.push_bind(job_id).push(" AND stage = ").push_bind(i64::from(stage)).push(" AND task_id IN (");
            let mut ids = query.separated(", ");
            for task in chunk {
                ids.push_bind(&task.task_id);
            }
            query.push(")");
            for row in query.build().fetch_all(&mut **tx).await? {
                current.insert(row.get(0), row.get(1));
            }
        }
        deltas.push(((job_id, stage), status_delta(members, &current, newly_done)));
    }
    Ok(deltas)
}

impl SqliteAnalytics {
    /// Opens (creating and migrating) the database at `path`.
    pub async fn open(path: &Path) -> Result<Self, AnalyticsError> {
        let pool = open_sqlite(path, 1).await?;
        MIGRATOR.run(&pool).await.map_err(|e| AnalyticsError::Backend(Box::new(e)))?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl AnalyticsStore for SqliteAnalytics {
    async fn create_job(&self, job: &JobRecord, stages: &[StageRecord]) -> Result<(), AnalyticsError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO jobs (id, name, state, spec, submitted_at, started_at, finished_at, error)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&job.id)
        .bind(&job.name)
        .bind(job.state.as_str())
        .bind(&job.spec)
        .bind(job.submitted_at)
        .bind(job.started_at)
        .bind(job.finished_at)
        .bind(&job.error)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO job_history (job_id, seq, at, from_state, to_state, reason, actor)
             VALUES (?, 1, ?, NULL, ?, NULL, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&job.id)
        .bind(job.submitted_at)
        .bind(job.state.as_str())
        .bind(actor::MANAGER)
        .execute(&mut *tx)
        .await?;
        for stage in stages {
            sqlx::query("INSERT INTO stages (job_id, stage, name, kind) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING")
                .bind(&job.id)
                .bind(i64::from(stage.stage))
                .bind(&stage.name)
                .bind(kind_str(stage.kind))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn transition(
        &self,
        job_id: &str,
        to: JobState,
        reason: Option<&str>,
        actor: &str,
    ) -> Result<bool, AnalyticsError> {
        for _ in 0..TRANSITION_ROUNDS {
            let Some(row) =
                sqlx::query("SELECT state FROM jobs WHERE id = ?").bind(job_id).fetch_optional(&self.pool).await?
            else {
                return Err(AnalyticsError::JobNotFound(job_id.to_owned()));
            };
            let from = parse_state(&row.try_get::<String, _>("state")?)?;
            if !from.can_move_to(to) {
                return Ok(false);
            }
            let now = now_millis();
            let (started, finished, error) = transition_stamps(to, reason, now);
            let mut tx = self.pool.begin().await?;
            // Compare-and-set on the state just read: a change that slipped in between makes
            // this update miss, and the loop decides again on the new state.
            let moved = sqlx::query(
                "UPDATE jobs SET state = ?, started_at = COALESCE(started_at, ?), finished_at = COALESCE(?, finished_at),
                                 error = COALESCE(?, error)
                 WHERE id = ? AND state = ?",
            )
            .bind(to.as_str())
            .bind(started)
            .bind(finished)
            .bind(error)
            .bind(job_id)
            .bind(from.as_str())
            .execute(&mut *tx)
            .await?;
            if moved.rows_affected() == 0 {
                tx.rollback().await?;
                continue;
            }
            // The update holds the job's row, so the next sequence number is this writer's alone.
            sqlx::query(
                "INSERT INTO job_history (job_id, seq, at, from_state, to_state, reason, actor)
                 SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ?, ? FROM job_history WHERE job_id = ?",
            )
            .bind(job_id)
            .bind(now)
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(reason)
            .bind(actor)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn reopen_tasks(
        &self,
        job_id: &str,
        tasks: &[(u32, String)],
        reason: &str,
        actor: &str,
    ) -> Result<Option<u64>, AnalyticsError> {
        for _ in 0..TRANSITION_ROUNDS {
            let Some(row) =
                sqlx::query("SELECT state FROM jobs WHERE id = ?").bind(job_id).fetch_optional(&self.pool).await?
            else {
                return Err(AnalyticsError::JobNotFound(job_id.to_owned()));
            };
            let from = parse_state(&row.try_get::<String, _>("state")?)?;
            if !reopenable(from) {
                return Ok(None);
            }
            let mut tx = self.pool.begin().await?;
            // Compare-and-set on the state read, as a transition does.
            let moved = sqlx::query(
                "UPDATE jobs SET state = 'running', finished_at = NULL, error = NULL WHERE id = ? AND state = ?",
            )
            .bind(job_id)
            .bind(from.as_str())
            .execute(&mut *tx)
            .await?;
            if moved.rows_affected() == 0 {
                tx.rollback().await?;
                continue;
            }
            let mut reopened: BTreeMap<u32, i64> = BTreeMap::new();
            for (stage, task) in tasks {
                let changed = sqlx::query(
                    "UPDATE tasks SET status = 'retrying' WHERE job_id = ? AND stage = ? AND task_id = ? AND status = 'failed'",
                )
                .bind(job_id)
                .bind(i64::from(*stage))
                .bind(task)
                .execute(&mut *tx)
                .await?;
                *reopened.entry(*stage).or_default() += changed.rows_affected() as i64;
            }
            for (stage, count) in &reopened {
                sqlx::query(
                    "UPDATE stages SET failed = failed - ?, retrying = retrying + ? WHERE job_id = ? AND stage = ?",
                )
                .bind(count)
                .bind(count)
                .bind(job_id)
                .bind(i64::from(*stage))
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "INSERT INTO job_history (job_id, seq, at, from_state, to_state, reason, actor)
                 SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, 'running', ?, ? FROM job_history WHERE job_id = ?",
            )
            .bind(job_id)
            .bind(now_millis())
            .bind(from.as_str())
            .bind(reason)
            .bind(actor)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Some(reopened.values().map(|n| to_u64(*n)).sum()));
        }
        Ok(None)
    }

    async fn history(&self, job_id: &str) -> Result<Vec<HistoryEntry>, AnalyticsError> {
        let rows = sqlx::query(
            "SELECT seq, at, from_state, to_state, reason, actor FROM job_history WHERE job_id = ? ORDER BY seq",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let from: Option<String> = row.try_get("from_state")?;
                Ok(HistoryEntry {
                    seq: to_u64(row.try_get("seq")?),
                    at: row.try_get("at")?,
                    from: from.as_deref().map(parse_state).transpose()?,
                    to: parse_state(&row.try_get::<String, _>("to_state")?)?,
                    reason: row.try_get("reason")?,
                    actor: row.try_get("actor")?,
                })
            })
            .collect()
    }

    async fn task_statuses(&self, job_id: &str, stage: u32) -> Result<Vec<(String, String)>, AnalyticsError> {
        let rows = sqlx::query("SELECT task_id, status FROM tasks WHERE job_id = ? AND stage = ? ORDER BY task_id")
            .bind(job_id)
            .bind(i64::from(stage))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| Ok((row.try_get("task_id")?, row.try_get("status")?))).collect()
    }

    async fn set_stage_expected(&self, job_id: &str, stage: u32, expected: u64) -> Result<(), AnalyticsError> {
        sqlx::query("UPDATE stages SET expected_tasks = ? WHERE job_id = ? AND stage = ?")
            .bind(to_i64(expected))
            .bind(job_id)
            .bind(i64::from(stage))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn job(&self, job_id: &str) -> Result<Option<JobRecord>, AnalyticsError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?").bind(job_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn jobs(&self) -> Result<Vec<JobRecord>, AnalyticsError> {
        let rows = sqlx::query("SELECT * FROM jobs ORDER BY submitted_at DESC, id DESC").fetch_all(&self.pool).await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn active_jobs(&self) -> Result<Vec<JobRecord>, AnalyticsError> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE state IN ('submitted', 'splitting', 'running') ORDER BY submitted_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn stages(&self, job_id: &str) -> Result<Vec<StageProgress>, AnalyticsError> {
        let rows = sqlx::query(
            "SELECT stage, name, kind, expected_tasks, done, failed, retrying FROM stages WHERE job_id = ? ORDER BY stage",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stage_from_row).collect()
    }

    async fn record_attempts(&self, attempts: &[AttemptRecord]) -> Result<(), AnalyticsError> {
        if attempts.is_empty() {
            return Ok(());
        }
        let groups = winners_by_stage(attempts);
        let tallies = worker_tallies(attempts);

        // The attempts insert comes first: it takes the write lock, so the statuses read below
        // are current and the counter deltas computed from them are exact.
        let mut tx = self.pool.begin().await?;
        for chunk in attempts.chunks(ROWS_PER_STATEMENT) {
            let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO attempts (job_id, stage, task_id, attempt, worker_id, started_at, ended_at, outcome,
                                       exit_status, bytes_in, bytes_out, error) ",
            );
            query.push_values(chunk, |mut row, a| {
                row.push_bind(&a.job_id)
                    .push_bind(i64::from(a.stage))
                    .push_bind(&a.task_id)
                    .push_bind(i64::from(a.attempt))
                    .push_bind(&a.worker_id)
                    .push_bind(a.started_at)
                    .push_bind(a.ended_at)
                    .push_bind(a.outcome.as_str())
                    .push_bind(a.exit_status)
                    .push_bind(to_i64(a.bytes_in))
                    .push_bind(to_i64(a.bytes_out))
                    .push_bind(&a.error);
            });
            query.push(" ON CONFLICT (job_id, stage, task_id, attempt) DO NOTHING");
            query.build().execute(&mut *tx).await?;
        }
        let mut newly_done = Vec::new();
        let deltas = status_deltas(&mut tx, &groups, &mut newly_done).await?;
        let tasks: Vec<&AttemptRecord> = groups.values().flatten().copied().collect();
        for chunk in tasks.chunks(ROWS_PER_STATEMENT) {
            let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO tasks (job_id, stage, task_id, status, attempts, worker_id, last_error, bytes_in, bytes_out,
                                    duration_ms, finished_at) ",
            );
            query.push_values(chunk, |mut row, a| {
                let finished = (a.outcome != AttemptOutcome::Retrying).then_some(a.ended_at);
                row.push_bind(&a.job_id)
                    .push_bind(i64::from(a.stage))
                    .push_bind(&a.task_id)
                    .push_bind(a.outcome.task_status())
                    .push_bind(i64::from(a.attempt))
                    .push_bind(&a.worker_id)
                    .push_bind(&a.error)
                    .push_bind(to_i64(a.bytes_in))
                    .push_bind(to_i64(a.bytes_out))
                    .push_bind(a.ended_at - a.started_at)
                    .push_bind(finished);
            });
            query.push(
                " ON CONFLICT (job_id, stage, task_id) DO UPDATE SET
                    status = excluded.status, attempts = excluded.attempts, worker_id = excluded.worker_id,
                    last_error = COALESCE(excluded.last_error, tasks.last_error), bytes_in = excluded.bytes_in,
                    bytes_out = excluded.bytes_out, duration_ms = excluded.duration_ms, finished_at = excluded.finished_at
                  WHERE tasks.status <> 'done'",
            );
            query.build().execute(&mut *tx).await?;
        }
        for ((job_id, stage), delta) in deltas {
            if delta == [0; 3] {
                continue;
            }
            sqlx::query("UPDATE stages SET done = done + ?, failed = failed + ?, retrying = retrying + ? WHERE job_id = ? AND stage = ?")
                .bind(delta[0])
                .bind(delta[1])
                .bind(delta[2])
                .bind(job_id)
                .bind(i64::from(stage))
                .execute(&mut *tx)
                .await?;
        }
        add_to_rollups(&mut tx, &RollupDelta::of(&newly_done)).await?;
        for (worker, tally) in tallies {
            sqlx::query(
                "UPDATE workers SET tasks_done = tasks_done + ?, tasks_failed = tasks_failed + ?,
                                    last_seen = MAX(last_seen, ?) WHERE id = ?",
            )
            .bind(tally.done)
            .bind(tally.failed)
            .bind(tally.last_seen)
            .bind(worker)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn task(&self, job_id: &str, stage: u32, task_id: &str) -> Result<Option<TaskRecord>, AnalyticsError> {
        let row = sqlx::query("SELECT * FROM tasks WHERE job_id = ? AND stage = ? AND task_id = ?")
            .bind(job_id)
            .bind(i64::from(stage))
            .bind(task_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(task_from_row))
    }

    async fn failed_tasks(&self, job_id: &str) -> Result<Vec<TaskRecord>, AnalyticsError> {
        let rows = sqlx::query("SELECT * FROM tasks WHERE job_id = ? AND status = 'failed' ORDER BY stage, task_id")
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(task_from_row).collect())
    }

    async fn attempts(&self, job_id: &str, stage: u32, task_id: &str) -> Result<Vec<AttemptRecord>, AnalyticsError> {
        let rows =
            sqlx::query("SELECT * FROM attempts WHERE job_id = ? AND stage = ? AND task_id = ? ORDER BY attempt")
                .bind(job_id)
                .bind(i64::from(stage))
                .bind(task_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                let outcome: String = row.get("outcome");
                Ok(AttemptRecord {
                    job_id: row.get("job_id"),
                    stage: to_u32(row.get("stage")),
                    task_id: row.get("task_id"),
                    attempt: to_u32(row.get("attempt")),
                    worker_id: row.get("worker_id"),
                    started_at: row.get("started_at"),
                    ended_at: row.get("ended_at"),
                    outcome: AttemptOutcome::parse(&outcome)
                        .ok_or_else(|| AnalyticsError::Corrupt(format!("attempt outcome `{outcome}`")))?,
                    exit_status: row.get::<Option<i64>, _>("exit_status").and_then(|s| i32::try_from(s).ok()),
                    bytes_in: to_u64(row.get("bytes_in")),
                    bytes_out: to_u64(row.get("bytes_out")),
                    error: row.get("error"),
                })
            })
            .collect()
    }

    async fn task_durations(&self, job_id: &str) -> Result<Vec<u64>, AnalyticsError> {
        let rows = sqlx::query(
            "SELECT duration_ms FROM tasks WHERE job_id = ? AND status = 'done' AND duration_ms IS NOT NULL
             ORDER BY duration_ms",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|row| to_u64(row.get(0))).collect())
    }

    async fn completion_times(&self, job_id: &str) -> Result<Vec<i64>, AnalyticsError> {
        let rows =
            sqlx::query("SELECT ended_at FROM attempts WHERE job_id = ? AND outcome = 'succeeded' ORDER BY ended_at")
                .bind(job_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    async fn mean_task_millis(&self, job_id: &str) -> Result<Option<u64>, AnalyticsError> {
        // From the rollups: a sum over a few hundred bucket rows, not over the job's tasks. SUM
        // is NUMERIC in PostgreSQL: cast so both decode as an integer.
        let row = sqlx::query(
            "SELECT CAST(SUM(total_ms) AS BIGINT), CAST(SUM(tasks) AS BIGINT) FROM task_time_buckets WHERE job_id = ?",
        )
        .bind(job_id)
        .fetch_one(&self.pool)
        .await?;
        let total: Option<i64> = row.get(0);
        let tasks: Option<i64> = row.get(1);
        Ok(match (total, tasks) {
            (Some(total), Some(tasks)) if tasks > 0 => Some(to_u64(total) / to_u64(tasks)),
            _ => None,
        })
    }

    async fn attempt_totals(&self, job_id: &str) -> Result<AttemptTotals, AnalyticsError> {
        let row = sqlx::query(
            "SELECT COUNT(*), COALESCE(SUM(outcome <> 'succeeded'), 0),
                    COALESCE(SUM(CASE WHEN outcome = 'succeeded' THEN bytes_in ELSE 0 END), 0),
                    COALESCE(SUM(CASE WHEN outcome = 'succeeded' THEN bytes_out ELSE 0 END), 0)
             FROM attempts WHERE job_id = ?",
        )
        .bind(job_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(AttemptTotals {
            attempts: to_u64(row.get(0)),
            failed_attempts: to_u64(row.get(1)),
            bytes_in: to_u64(row.get(2)),
            bytes_out: to_u64(row.get(3)),
        })
    }

    async fn attempt_spans(&self, job_id: &str) -> Result<AttemptSpans, AnalyticsError> {
        // Each attempt's start against the latest end of those started before it: a start
        // past every earlier end opens a gap (a window function, one pass over the job's rows).
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(CASE WHEN started_at > covered THEN started_at - covered ELSE 0 END), 0) AS BIGINT),
                    MIN(started_at), MAX(ended_at)
             FROM (SELECT started_at, ended_at,
                          MAX(ended_at) OVER (ORDER BY started_at, ended_at
                                              ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS covered
                   FROM attempts WHERE job_id = ?) AS spans",
        )
        .bind(job_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(AttemptSpans { gaps_ms: to_u64(row.get(0)), first_start: row.get(1), last_end: row.get(2) })
    }

    async fn upsert_worker(&self, worker: &WorkerRecord) -> Result<(), AnalyticsError> {
        sqlx::query(
            "INSERT INTO workers (id, host, pid, started_at, last_seen, state, tasks_done, tasks_failed, current_tasks,
                                  running_tasks)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET last_seen = MAX(workers.last_seen, excluded.last_seen), state = excluded.state,
                                            current_tasks = excluded.current_tasks,
                                            running_tasks = excluded.running_tasks",
        )
        .bind(&worker.id)
        .bind(&worker.host)
        .bind(i64::from(worker.pid))
        .bind(worker.started_at)
        .bind(worker.last_seen)
        .bind(&worker.state)
        .bind(to_i64(worker.tasks_done))
        .bind(to_i64(worker.tasks_failed))
        .bind(i64::from(worker.current_tasks))
        .bind(running::encode(&worker.running))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>, AnalyticsError> {
        let rows = sqlx::query("SELECT * FROM workers ORDER BY started_at, id").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                let id: String = row.get("id");
                let running = running::decode(&id, row.get("running_tasks"))?;
                Ok(WorkerRecord {
                    host: row.get("host"),
                    pid: to_u32(row.get("pid")),
                    started_at: row.get("started_at"),
                    last_seen: row.get("last_seen"),
                    state: row.get("state"),
                    tasks_done: to_u64(row.get("tasks_done")),
                    tasks_failed: to_u64(row.get("tasks_failed")),
                    current_tasks: to_u32(row.get("current_tasks")),
                    running,
                    id,
                })
            })
            .collect()
    }

    async fn request_drain(&self, worker_id: &str, at: i64) -> Result<bool, AnalyticsError> {
        let updated =
            sqlx::query("UPDATE workers SET drain_requested_at = COALESCE(drain_requested_at, ?) WHERE id = ?")
                .bind(at)
                .bind(worker_id)
                .execute(&self.pool)
                .await?;
        Ok(updated.rows_affected() > 0)
    }

    async fn drain_requested(&self, worker_id: &str) -> Result<bool, AnalyticsError> {
        let row = sqlx::query("SELECT drain_requested_at FROM workers WHERE id = ?")
            .bind(worker_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some_and(|row| row.get::<Option<i64>, _>("drain_requested_at").is_some()))
    }

    async fn record_requests(&self, process_id: &str, counts: &[RequestCount]) -> Result<(), AnalyticsError> {
        let merged = merged_request_counts(counts);
        if merged.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for chunk in merged.chunks(ROWS_PER_STATEMENT) {
            let mut query: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO requests (process_id, service, operation, count) ");
            query.push_values(chunk, |mut row, &(service, operation, count)| {
                row.push_bind(process_id).push_bind(service).push_bind(operation).push_bind(count);
            });
            query.push(
                " ON CONFLICT (process_id, service, operation) DO UPDATE SET count = MAX(requests.count, excluded.count)",
            );
            query.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn request_totals(&self) -> Result<Vec<RequestCount>, AnalyticsError> {
        // SQLite compares TEXT byte-wise (the BINARY collation), the order the contract names.
        let rows = sqlx::query(
            "SELECT service, operation, SUM(count) AS count FROM requests GROUP BY service, operation
             ORDER BY service, operation",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| RequestCount {
                service: row.get("service"),
                operation: row.get("operation"),
                count: to_u64(row.get("count")),
            })
            .collect())
    }

    async fn job_list(&self, query: &JobQuery) -> Result<JobList, AnalyticsError> {
        let filter = |builder: &mut QueryBuilder<Sqlite>| {
            builder.push(" WHERE 1");
            if let Some(state) = query.state {
                builder.push(" AND state = ").push_bind(state.as_str());
            }
            if let Some(pattern) = query.name_pattern() {
                builder.push(" AND lower(name) LIKE ").push_bind(pattern).push(r" ESCAPE '\'");
            }
        };
        let mut count: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT COUNT(*) FROM jobs");
        filter(&mut count);
        let total: i64 = count.build().fetch_one(&self.pool).await?.get(0);
        if query.limit == 0 {
            // A count alone (/metrics' jobs by state): no page to read.
            return Ok(JobList { total: to_u64(total), jobs: Vec::new() });
        }
        let mut list: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT * FROM jobs");
        filter(&mut list);
        list.push(" ORDER BY submitted_at DESC, id DESC LIMIT ").push_bind(query.capped_limit());
        let rows = list.build().fetch_all(&self.pool).await?;
        Ok(JobList { total: to_u64(total), jobs: rows.iter().map(job_from_row).collect::<Result<_, _>>()? })
    }

    async fn stages_of(&self, job_ids: &[String]) -> Result<HashMap<String, Vec<StageProgress>>, AnalyticsError> {
        let mut stages: HashMap<String, Vec<StageProgress>> = HashMap::new();
        for chunk in job_ids.chunks(ROWS_PER_STATEMENT) {
            let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
                "SELECT job_id, stage, name, kind, expected_tasks, done, failed, retrying FROM stages WHERE job_id IN (",
            );
            let mut ids = query.separated(", ");
            for id in chunk {
                ids.push_bind(id);
            }
            query.push(") ORDER BY job_id, stage");
            for row in query.build().fetch_all(&self.pool).await? {
                stages.entry(row.get("job_id")).or_default().push(stage_from_row(&row)?);
            }
        }
        Ok(stages)
    }

    async fn task_times(&self, job_id: &str) -> Result<Vec<StageTimes>, AnalyticsError> {
        let rows = sqlx::query(
            "SELECT stage, bucket, tasks, total_ms FROM task_time_buckets WHERE job_id = ? ORDER BY stage, bucket",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(group_by_stage(rows.iter().map(|row| {
            (to_u32(row.get("stage")), to_u32(row.get("bucket")), to_u64(row.get("tasks")), to_u64(row.get("total_ms")))
        })))
    }

    async fn completions(&self, job_id: &str) -> Result<Vec<(i64, u64)>, AnalyticsError> {
        let rows = sqlx::query("SELECT slot, tasks FROM completion_slots WHERE job_id = ? ORDER BY slot")
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|row| (row.get("slot"), to_u64(row.get("tasks")))).collect())
    }

    async fn task_ms_of(&self, job_ids: &[String]) -> Result<HashMap<String, u64>, AnalyticsError> {
        let mut totals = HashMap::new();
        for chunk in job_ids.chunks(ROWS_PER_STATEMENT) {
            let mut query: QueryBuilder<Sqlite> =
                QueryBuilder::new("SELECT job_id, SUM(total_ms) FROM task_time_buckets WHERE job_id IN (");
            let mut ids = query.separated(", ");
            for id in chunk {
                ids.push_bind(id);
            }
            query.push(") GROUP BY job_id");
            for row in query.build().fetch_all(&self.pool).await? {
                totals.insert(row.get(0), to_u64(row.get(1)));
            }
        }
        Ok(totals)
    }

    async fn record_grid_sample(&self, sample: &GridSample, forget_before: i64) -> Result<(), AnalyticsError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO grid_samples (at, visible, in_flight, dead, workers, tasks_held) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (at) DO UPDATE SET visible = excluded.visible, in_flight = excluded.in_flight,
                 dead = excluded.dead, workers = excluded.workers, tasks_held = excluded.tasks_held",
        )
        .bind(sample.at)
        .bind(to_i64(sample.visible))
        .bind(to_i64(sample.in_flight))
        .bind(to_i64(sample.dead))
        .bind(to_i64(sample.workers))
        .bind(to_i64(sample.tasks_held))
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM grid_samples WHERE at < ?").bind(forget_before).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn grid_samples(&self, since: i64) -> Result<Vec<GridSample>, AnalyticsError> {
        let rows = sqlx::query("SELECT * FROM grid_samples WHERE at >= ? ORDER BY at")
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(GridSample {
                    at: row.get("at"),
                    visible: to_u64(row.get("visible")),
                    in_flight: to_u64(row.get("in_flight")),
                    dead: to_u64(row.get("dead")),
                    workers: to_u64(row.get("workers")),
                    tasks_held: to_u64(row.get("tasks_held")),
                })
            })
            .collect()
    }

    async fn worker_activity(
        &self,
        job_id: &str,
        start: i64,
        slot_ms: i64,
    ) -> Result<Vec<WorkerActivity>, AnalyticsError> {
        let slot_ms = slot_ms.max(1);
        let rows = sqlx::query(
            "SELECT worker_id, (started_at - ?2) / ?3 AS start_slot, (ended_at - ?2) / ?3 AS end_slot,
                    COUNT(*) AS attempts, SUM(started_at - ?2) AS started_sum, SUM(ended_at - ?2) AS ended_sum
             FROM attempts WHERE job_id = ?1 GROUP BY worker_id, start_slot, end_slot",
        )
        .bind(job_id)
        .bind(start)
        .bind(slot_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| WorkerActivity {
                worker_id: row.get("worker_id"),
                start_slot: row.get("start_slot"),
                end_slot: row.get("end_slot"),
                attempts: to_u64(row.get("attempts")),
                started_sum: row.get("started_sum"),
                ended_sum: row.get("ended_sum"),
            })
            .collect())
    }
}

/// Adds a batch's newly done tasks to the rollups.
async fn add_to_rollups(tx: &mut sqlx::Transaction<'_, Sqlite>, delta: &RollupDelta<'_>) -> Result<(), AnalyticsError> {
    let buckets: Vec<_> = delta.buckets.iter().collect();
    for chunk in buckets.chunks(ROWS_PER_STATEMENT) {
        let mut query: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO task_time_buckets (job_id, stage, bucket, tasks, total_ms) ");
        query.push_values(chunk, |mut row, ((job_id, stage, bucket), (tasks, total))| {
            row.push_bind(*job_id)
                .push_bind(i64::from(*stage))
                .push_bind(i64::from(*bucket))
                .push_bind(*tasks)
                .push_bind(*total);
        });
        query.push(
            " ON CONFLICT (job_id, stage, bucket) DO UPDATE SET tasks = task_time_buckets.tasks + excluded.tasks,
                total_ms = task_time_buckets.total_ms + excluded.total_ms",
        );
        query.build().execute(&mut **tx).await?;
    }
    let slots: Vec<_> = delta.slots.iter().collect();
    for chunk in slots.chunks(ROWS_PER_STATEMENT) {
        let mut query: QueryBuilder<Sqlite> = QueryBuilder::new("INSERT INTO completion_slots (job_id, slot, tasks) ");
        query.push_values(chunk, |mut row, ((job_id, slot), tasks)| {
            row.push_bind(*job_id).push_bind(*slot).push_bind(*tasks);
        });
        query.push(" ON CONFLICT (job_id, slot) DO UPDATE SET tasks = completion_slots.tasks + excluded.tasks");
        query.build().execute(&mut **tx).await?;
    }
    Ok(())
}
