//! The analytics store on PostgreSQL (RDS on AWS), with the same schema and the same semantics as
//! the SQLite one; only the dialect differs (`$n` parameters, `GREATEST`, explicit casts).
//!
//! Unlike SQLite, PostgreSQL lets several writers in at once, from several processes, so the
//! read-then-write that keeps the stage counters exact is serialised per stage by an advisory
//! lock (see `record_attempts`).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};

use super::credentials::{CredentialsSource, FixedUrl, Reconnect, ReconnectSettings};
use super::rollup::{group_by_stage, RollupDelta};
use super::running;
use super::{
    actor, kind_str, merged_request_counts, parse_kind, parse_state, reopenable, status_delta, to_i64, to_u32, to_u64,
    transition_stamps, winners_by_stage, worker_tallies, AnalyticsError, AnalyticsStore, AttemptOutcome, AttemptRecord,
    AttemptSpans, AttemptTotals, GridSample, HistoryEntry, JobList, JobQuery, JobRecord, JobState, RequestCount,
    StageProgress, StageRecord, StageTimes, TaskRecord, WorkerActivity, WorkerRecord, TRANSITION_ROUNDS,
};
use crate::db::now_millis;

mod admission;
mod schedules;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Rows per multi-row statement: 12 parameters a row stays far under PostgreSQL's 65535.
const ROWS_PER_STATEMENT: usize = 400;

/// How long a pooled connection may sit unused before the pool closes it, by default: well
/// under the 5 minutes without a connection after which Aurora Serverless v2 may pause (the
/// pool looks for idle connections once per this period, so one may live up to twice it).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How many connections the pool may open, and how long an unused one stays open. The pool
/// keeps none open for their own sake (no minimum): an idle process holds no connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// The most connections open at once.
    pub max_connections: u32,
    /// How long an unused connection stays open.
    pub idle_timeout: Duration,
}

impl From<u32> for PoolSettings {
    /// `max_connections` connections, closed after [`DEFAULT_IDLE_TIMEOUT`] unused.
    fn from(max_connections: u32) -> Self {
        Self { max_connections, idle_timeout: DEFAULT_IDLE_TIMEOUT }
    }
}

/// An [`AnalyticsStore`] in a PostgreSQL database, over a connection pool. Credentials the
/// server refuses (a rotated secret) are read again from their source and the operation is
/// retried; see [`super::credentials`].
#[derive(Debug, Clone)]
pub struct PgAnalytics {
    sql: Sql,
    reconnect: Arc<Reconnect>,
}

/// The statements themselves, on one pool; [`PgAnalytics`] runs each through the retry loop.
#[derive(Debug, Clone)]
struct Sql {
    pool: PgPool,
}

/// Adds a batch's newly done tasks to the rollups, rows in key order (the lock order).
async fn add_to_rollups(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    delta: &RollupDelta<'_>,
) -> Result<(), AnalyticsError> {
    let buckets: Vec<_> = delta.buckets.iter().collect();
    for chunk in buckets.chunks(ROWS_PER_STATEMENT) {
        let mut query: QueryBuilder<Postgres> =
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
        let mut query: QueryBuilder<Postgres> =
            QueryBuilder::new("INSERT INTO completion_slots (job_id, slot, tasks) ");
        query.push_values(chunk, |mut row, ((job_id, slot), tasks)| {
            row.push_bind(*job_id).push_bind(*slot).push_bind(*tasks);
        });
        query.push(" ON CONFLICT (job_id, slot) DO UPDATE SET tasks = completion_slots.tasks + excluded.tasks");
        query.build().execute(&mut **tx).await?;
    }
    Ok(())
}

impl PgAnalytics {
    /// Connects to `url` with up to `max_connections` pooled connections, and migrates.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, AnalyticsError> {
        Self::connect_pool(url, PoolSettings::from(max_connections)).await
    }

    /// Connects to `url` with the pool `pool` describes, and migrates.
    pub async fn connect_pool(url: &str, pool: PoolSettings) -> Result<Self, AnalyticsError> {
        Self::connect_with_pool(Arc::new(FixedUrl::parse(url)?), pool, ReconnectSettings::default()).await
    }

    /// Connects with the credentials `source` gives (read again whenever the server refuses
    /// them, also while connecting), with up to `max_connections` pooled connections, and
    /// migrates.
    pub async fn connect_with(
        source: Arc<dyn CredentialsSource>,
        max_connections: u32,
        settings: ReconnectSettings,
    ) -> Result<Self, AnalyticsError> {
        Self::connect_with_pool(source, PoolSettings::from(max_connections), settings).await
    }

    /// As [`PgAnalytics::connect_with`], with the pool `pool` describes.
    ///
    /// Several processes may start at once: sqlx holds a session advisory lock on the database
    /// while it migrates, so one applies the migrations and the others wait, then find them done.
    pub async fn connect_with_pool(
        source: Arc<dyn CredentialsSource>,
        pool: PoolSettings,
        settings: ReconnectSettings,
    ) -> Result<Self, AnalyticsError> {
        let reconnect = Arc::new(Reconnect::start(source, settings).await?);
        reconnect.run(|_| {}, || migrate(reconnect.options())).await?;
        Self::open(reconnect, pool).await
    }

    /// Connects like [`PgAnalytics::connect_with`] but without migrating, for a process whose
    /// database role may not change the schema (a worker as `batchgrid_worker`): the schema must
    /// already be at this build's latest migration, or [`AnalyticsError::SchemaBehind`] says
    /// that the manager, which migrates, has not started (or is older).
    pub async fn attach(
        source: Arc<dyn CredentialsSource>,
        max_connections: u32,
        settings: ReconnectSettings,
    ) -> Result<Self, AnalyticsError> {
        Self::attach_pool(source, PoolSettings::from(max_connections), settings).await
    }

    /// As [`PgAnalytics::attach`], with the pool `pool` describes.
    pub async fn attach_pool(
        source: Arc<dyn CredentialsSource>,
        pool: PoolSettings,
        settings: ReconnectSettings,
    ) -> Result<Self, AnalyticsError> {
        let reconnect = Arc::new(Reconnect::start(source, settings).await?);
        let analytics = Self::open(reconnect, pool).await?;
        let needed = MIGRATOR.iter().map(|migration| migration.version).max().unwrap_or(0);
        let found = analytics.run(|sql| sql.schema_version()).await?;
        if found < needed {
            analytics.sql.pool.close().await;
            return Err(AnalyticsError::SchemaBehind { found, needed });
        }
        Ok(analytics)
    }

    /// Opens the pool with the options `reconnect` holds (read again if refused).
    async fn open(reconnect: Arc<Reconnect>, settings: PoolSettings) -> Result<Self, AnalyticsError> {
        let pool = reconnect
            .run(
                |_| {},
                || async {
                    // sqlx refuses a pool of zero connections; one is the least that works.
                    // No minimum kept open: a quiet manager holds no connection, so a
                    // serverless database can pause.
                    let pool = PgPoolOptions::new()
                        .max_connections(settings.max_connections.max(1))
                        .min_connections(0)
                        .idle_timeout(settings.idle_timeout)
                        .connect_with(reconnect.options())
                        .await?;
                    Ok(pool)
                },
            )
            .await?;
        Ok(Self { sql: Sql { pool }, reconnect })
    }

    /// Runs one operation through the retry loop; new options go to the pool, whose open
    /// sessions stay as they are.
    async fn run<'a, T, Fut>(&'a self, operation: impl Fn(&'a Sql) -> Fut) -> Result<T, AnalyticsError>
    where
        Fut: Future<Output = Result<T, AnalyticsError>>,
    {
        let pool = &self.sql.pool;
        self.reconnect.run(|options| pool.set_connect_options(options), || operation(&self.sql)).await
    }
}

/// Applies the migrations on a pool of its own, closed afterwards even on failure: if migrating
/// fails half-way, sqlx returns without unlocking, and a connection kept in the main pool would
/// hold the lock and block every other process's migration for as long as this pool lived. (A
/// pool rather than a bare connection: `run(&mut PgConnection)` makes the future non-`Send`.)
async fn migrate(options: PgConnectOptions) -> Result<(), AnalyticsError> {
    let migrating = PgPoolOptions::new().max_connections(1).connect_with(options).await?;
    let migrated = MIGRATOR.run(&migrating).await;
    migrating.close().await;
    migrated.map_err(|e| AnalyticsError::Backend(Box::new(e)))
}

/// SQLSTATE `undefined_table`.
const UNDEFINED_TABLE: &str = "42P01";

impl Sql {
    /// The latest migration applied to the database; 0 before the first.
    async fn schema_version(&self) -> Result<i64, AnalyticsError> {
        let found =
            sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await;
        match found {
            Ok(version) => Ok(version),
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some(UNDEFINED_TABLE) => Ok(0),
            Err(error) => Err(error.into()),
        }
    }
}

fn stage_from_row(row: &PgRow) -> Result<StageProgress, AnalyticsError> {
    Ok(StageProgress {
        stage: to_u32(row.try_get("stage")?),
        name: row.try_get("name")?,
        kind: parse_kind(row.try_get("kind")?)?,
        expected: row.try_get::<Option<i64>, _>("expected_tasks")?.map(to_u64),
        done: to_u64(row.try_get("done")?),
        failed: to_u64(row.try_get("failed")?),
        retrying: to_u64(row.try_get("retrying")?),
    })
}

fn job_from_row(row: &PgRow) -> Result<JobRecord, AnalyticsError> {
    let state: String = row.try_get("state")?;
    Ok(JobRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        state: parse_state(&state)?,
        spec: row.try_get("spec")?,
        submitted_at: row.try_get("submitted_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        error: row.try_get("error")?,
    })
}

fn task_from_row(row: &PgRow) -> Result<TaskRecord, AnalyticsError> {
    Ok(TaskRecord {
        job_id: row.try_get("job_id")?,
        stage: to_u32(row.try_get("stage")?),
        task_id: row.try_get("task_id")?,
        status: row.try_get("status")?,
        attempts: to_u32(row.try_get("attempts")?),
        worker_id: row.try_get("worker_id")?,
        last_error: row.try_get("last_error")?,
        duration_ms: row.try_get("duration_ms")?,
    })
}

/// The advisory lock key of one (job, stage): FNV-1a, computed here rather than in SQL so the
/// keys can be sorted before they are taken. A collision only serialises two stages needlessly.
fn stage_lock_key(job_id: &str, stage: u32) -> i64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    // The separator cannot occur in UTF-8, so ("a1", 2) and ("a", 12) hash different bytes.
    for byte in job_id.bytes().chain([0xff]).chain(stage.to_le_bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

#[async_trait]
impl AnalyticsStore for PgAnalytics {
    async fn create_job(&self, job: &JobRecord, stages: &[StageRecord]) -> Result<(), AnalyticsError> {
        self.run(|sql| sql.create_job(job, stages)).await
    }

    async fn transition(
        &self,
        job_id: &str,
        to: JobState,
        reason: Option<&str>,
        actor: &str,
    ) -> Result<bool, AnalyticsError> {
        self.run(|sql| sql.transition(job_id, to, reason, actor)).await
    }

    async fn reopen_tasks(
        &self,
        job_id: &str,
        tasks: &[(u32, String)],
        reason: &str,
        actor: &str,
    ) -> Result<Option<u64>, AnalyticsError> {
        self.run(|sql| sql.reopen_tasks(job_id, tasks, reason, actor)).await
    }

    async fn history(&self, job_id: &str) -> Result<Vec<HistoryEntry>, AnalyticsError> {
        self.run(|sql| sql.history(job_id)).await
    }

    async fn task_statuses(&self, job_id: &str, stage: u32) -> Result<Vec<(String, String)>, AnalyticsError> {
        self.run(|sql| sql.task_statuses(job_id, stage)).await
    }

    async fn set_stage_expected(&self, job_id: &str, stage: u32, expected: u64) -> Result<(), AnalyticsError> {
        self.run(|sql| sql.set_stage_expected(job_id, stage, expected)).await
    }

    async fn job(&self, job_id: &str) -> Result<Option<JobRecord>, AnalyticsError> {
        self.run(|sql| sql.job(job_id)).await
    }

    async fn jobs(&self) -> Result<Vec<JobRecord>, AnalyticsError> {
        self.run(|sql| sql.jobs()).await
    }

    async fn active_jobs(&self) -> Result<Vec<JobRecord>, AnalyticsError> {
        self.run(|sql| sql.active_jobs()).await
    }

    async fn stages(&self, job_id: &str) -> Result<Vec<StageProgress>, AnalyticsError> {
        self.run(|sql| sql.stages(job_id)).await
    }

    async fn record_attempts(&self, attempts: &[AttemptRecord]) -> Result<(), AnalyticsError> {
        self.run(|sql| sql.record_attempts(attempts)).await
    }

    async fn task(&self, job_id: &str, stage: u32, task_id: &str) -> Result<Option<TaskRecord>, AnalyticsError> {
        self.run(|sql| sql.task(job_id, stage, task_id)).await
    }

    async fn failed_tasks(&self, job_id: &str) -> Result<Vec<TaskRecord>, AnalyticsError> {
        self.run(|sql| sql.failed_tasks(job_id)).await
    }

    async fn attempts(&self, job_id: &str, stage: u32, task_id: &str) -> Result<Vec<AttemptRecord>, AnalyticsError> {
        self.run(|sql| sql.attempts(job_id, stage, task_id)).await
    }

    async fn task_durations(&self, job_id: &str) -> Result<Vec<u64>, AnalyticsError> {
        self.run(|sql| sql.task_durations(job_id)).await
    }

    async fn completion_times(&self, job_id: &str) -> Result<Vec<i64>, AnalyticsError> {
        self.run(|sql| sql.completion_times(job_id)).await
    }

    async fn attempt_totals(&self, job_id: &str) -> Result<AttemptTotals, AnalyticsError> {
        self.run(|sql| sql.attempt_totals(job_id)).await
    }

    async fn attempt_spans(&self, job_id: &str) -> Result<AttemptSpans, AnalyticsError> {
        self.run(|sql| sql.attempt_spans(job_id)).await
    }

    async fn mean_task_millis(&self, job_id: &str) -> Result<Option<u64>, AnalyticsError> {
        self.run(|sql| sql.mean_task_millis(job_id)).await
    }

    async fn upsert_worker(&self, worker: &WorkerRecord) -> Result<(), AnalyticsError> {
        self.run(|sql| sql.upsert_worker(worker)).await
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>, AnalyticsError> {
        self.run(|sql| sql.workers()).await
    }

    async fn request_drain(&self, worker_id: &str, at: i64) -> Result<bool, AnalyticsError> {
        self.run(|sql| sql.request_drain(worker_id, at)).await
    }

    async fn drain_requested(&self, worker_id: &str) -> Result<bool, AnalyticsError> {
        self.run(|sql| sql.drain_requested(worker_id)).await
    }

    async fn record_requests(&self, process_id: &str, counts: &[RequestCount]) -> Result<(), AnalyticsError> {
        self.run(|sql| sql.record_requests(process_id, counts)).await
    }

    async fn request_totals(&self) -> Result<Vec<RequestCount>, AnalyticsError> {
        self.run(|sql| sql.request_totals()).await
    }

    async fn job_list(&self, query: &JobQuery) -> Result<JobList, AnalyticsError> {
        self.run(|sql| sql.job_list(query)).await
    }

    async fn stages_of(&self, job_ids: &[String]) -> Result<HashMap<String, Vec<StageProgress>>, AnalyticsError> {
        self.run(|sql| sql.stages_of(job_ids)).await
    }

    async fn task_times(&self, job_id: &str) -> Result<Vec<StageTimes>, AnalyticsError> {
        self.run(|sql| sql.task_times(job_id)).await
    }

    async fn completions(&self, job_id: &str) -> Result<Vec<(i64, u64)>, AnalyticsError> {
        self.run(|sql| sql.completions(job_id)).await
    }

    async fn task_ms_of(&self, job_ids: &[String]) -> Result<HashMap<String, u64>, AnalyticsError> {
        self.run(|sql| sql.task_ms_of(job_ids)).await
    }

    async fn record_grid_sample(&self, sample: &GridSample, forget_before: i64) -> Result<(), AnalyticsError> {
        self.run(|sql| sql.record_grid_sample(sample, forget_before)).await
    }

    async fn grid_samples(&self, since: i64) -> Result<Vec<GridSample>, AnalyticsError> {
        self.run(|sql| sql.grid_samples(since)).await
    }

    async fn worker_activity(
        &self,
        job_id: &str,
        start: i64,
        slot_ms: i64,
    ) -> Result<Vec<WorkerActivity>, AnalyticsError> {
        self.run(|sql| sql.worker_activity(job_id, start, slot_ms)).await
    }
}

/// The statements. A statement that fails to authenticate has not run, so
/// [`PgAnalytics`] may run it again.
#[async_trait]
impl AnalyticsStore for Sql {
    async fn create_job(&self, job: &JobRecord, stages: &[StageRecord]) -> Result<(), AnalyticsError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO jobs (id, name, state, spec, submitted_at, started_at, finished_at, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
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
             VALUES ($1, 1, $2, NULL, $3, NULL, $4) ON CONFLICT DO NOTHING",
        )
        .bind(&job.id)
        .bind(job.submitted_at)
        .bind(job.state.as_str())
        .bind(actor::MANAGER)
        .execute(&mut *tx)
        .await?;
        for stage in stages {
            sqlx::query(
                "INSERT INTO stages (job_id, stage, name, kind) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
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
                sqlx::query("SELECT state FROM jobs WHERE id = $1").bind(job_id).fetch_optional(&self.pool).await?
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
                "UPDATE jobs SET state = $1, started_at = COALESCE(started_at, $2), finished_at = COALESCE($3, finished_at),
                                 error = COALESCE($4, error)
                 WHERE id = $5 AND state = $6",
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
                 SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6 FROM job_history WHERE job_id = $7",
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
                sqlx::query("SELECT state FROM jobs WHERE id = $1").bind(job_id).fetch_optional(&self.pool).await?
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
                "UPDATE jobs SET state = 'running', finished_at = NULL, error = NULL WHERE id = $1 AND state = $2",
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
                    "UPDATE tasks SET status = 'retrying' WHERE job_id = $1 AND stage = $2 AND task_id = $3 AND status = 'failed'",
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
                    "UPDATE stages SET failed = failed - $1, retrying = retrying + $2 WHERE job_id = $3 AND stage = $4",
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
                 SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, 'running', $4, $5 FROM job_history WHERE job_id = $6",
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
            "SELECT seq, at, from_state, to_state, reason, actor FROM job_history WHERE job_id = $1 ORDER BY seq",
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
        let rows = sqlx::query("SELECT task_id, status FROM tasks WHERE job_id = $1 AND stage = $2 ORDER BY task_id")
            .bind(job_id)
            .bind(i64::from(stage))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| Ok((row.try_get("task_id")?, row.try_get("status")?))).collect()
    }

    async fn set_stage_expected(&self, job_id: &str, stage: u32, expected: u64) -> Result<(), AnalyticsError> {
        sqlx::query("UPDATE stages SET expected_tasks = $1 WHERE job_id = $2 AND stage = $3")
            .bind(to_i64(expected))
            .bind(job_id)
            .bind(i64::from(stage))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn job(&self, job_id: &str) -> Result<Option<JobRecord>, AnalyticsError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1").bind(job_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn jobs(&self) -> Result<Vec<JobRecord>, AnalyticsError> {
        // COLLATE "C": byte order, as SQLite sorts, whatever the database's locale.
        let rows = sqlx::query(r#"SELECT * FROM jobs ORDER BY submitted_at DESC, id COLLATE "C" DESC"#)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn active_jobs(&self) -> Result<Vec<JobRecord>, AnalyticsError> {
        let rows = sqlx::query(
            r#"SELECT * FROM jobs WHERE state IN ('submitted', 'splitting', 'running')
               ORDER BY submitted_at, id COLLATE "C""#,
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn stages(&self, job_id: &str) -> Result<Vec<StageProgress>, AnalyticsError> {
        let rows = sqlx::query(
            "SELECT stage, name, kind, expected_tasks, done, failed, retrying FROM stages WHERE job_id = $1
             ORDER BY stage",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stage_from_row).collect()
    }

    /// Records the attempts and upserts their tasks in one transaction.
    ///
    /// The stage counters move by deltas computed from the tasks' statuses as read in the
    /// transaction. Under READ COMMITTED two transactions could read the same statuses (or
    /// both see a task missing) and count one change twice, so the transaction first takes a
    /// transaction-scoped advisory lock per (job, stage) it touches, in key order, so that two
    /// batches cannot deadlock on them. Worker rows are then updated in id order for the same
    /// reason.
    async fn record_attempts(&self, attempts: &[AttemptRecord]) -> Result<(), AnalyticsError> {
        if attempts.is_empty() {
            return Ok(());
        }
        let groups = winners_by_stage(attempts);
        let tallies = worker_tallies(attempts);
        let mut lock_keys: Vec<i64> = groups.keys().map(|&(job_id, stage)| stage_lock_key(job_id, stage)).collect();
        lock_keys.sort_unstable();
        lock_keys.dedup();

        let mut tx = self.pool.begin().await?;
        for key in lock_keys {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(key).execute(&mut *tx).await?;
        }
        for chunk in attempts.chunks(ROWS_PER_STATEMENT) {
            let mut query: QueryBuilder<Postgres> = QueryBuilder::new(
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
                    .push_bind(a.exit_status.map(i64::from))
                    .push_bind(to_i64(a.bytes_in))
                    .push_bind(to_i64(a.bytes_out))
                    .push_bind(&a.error);
            });
            query.push(" ON CONFLICT (job_id, stage, task_id, attempt) DO NOTHING");
            query.build().execute(&mut *tx).await?;
        }

        let mut deltas = Vec::with_capacity(groups.len());
        let mut newly_done = Vec::new();
        for (&(job_id, stage), members) in &groups {
            let ids: Vec<&str> = members.iter().map(|task| task.task_id.as_str()).collect();
            let rows =
                sqlx::query("SELECT task_id, status FROM tasks WHERE job_id = $1 AND stage = $2 AND task_id = ANY($3)")
                    .bind(job_id)
                    .bind(i64::from(stage))
                    .bind(&ids)
                    .fetch_all(&mut *tx)
                    .await?;
            let mut current: HashMap<String, String> = HashMap::with_capacity(rows.len());
            for row in rows {
                current.insert(row.try_get("task_id")?, row.try_get("status")?);
            }
            deltas.push(((job_id, stage), status_delta(members, &current, &mut newly_done)));
        }

        let tasks: Vec<&AttemptRecord> = groups.values().flatten().copied().collect();
        for chunk in tasks.chunks(ROWS_PER_STATEMENT) {
            let mut query: QueryBuilder<Postgres> = QueryBuilder::new(
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
            sqlx::query(
                "UPDATE stages SET done = done + $1, failed = failed + $2, retrying = retrying + $3
                 WHERE job_id = $4 AND stage = $5",
            )
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
                "UPDATE workers SET tasks_done = tasks_done + $1, tasks_failed = tasks_failed + $2,
                                    last_seen = GREATEST(last_seen, $3) WHERE id = $4",
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
        let row = sqlx::query("SELECT * FROM tasks WHERE job_id = $1 AND stage = $2 AND task_id = $3")
            .bind(job_id)
            .bind(i64::from(stage))
            .bind(task_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(task_from_row).transpose()
    }

    async fn failed_tasks(&self, job_id: &str) -> Result<Vec<TaskRecord>, AnalyticsError> {
        let rows = sqlx::query(
            r#"SELECT * FROM tasks WHERE job_id = $1 AND status = 'failed' ORDER BY stage, task_id COLLATE "C""#,
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_from_row).collect()
    }

    async fn attempts(&self, job_id: &str, stage: u32, task_id: &str) -> Result<Vec<AttemptRecord>, AnalyticsError> {
        let rows =
            sqlx::query("SELECT * FROM attempts WHERE job_id = $1 AND stage = $2 AND task_id = $3 ORDER BY attempt")
                .bind(job_id)
                .bind(i64::from(stage))
                .bind(task_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                let outcome: String = row.try_get("outcome")?;
                Ok(AttemptRecord {
                    job_id: row.try_get("job_id")?,
                    stage: to_u32(row.try_get("stage")?),
                    task_id: row.try_get("task_id")?,
                    attempt: to_u32(row.try_get("attempt")?),
                    worker_id: row.try_get("worker_id")?,
                    started_at: row.try_get("started_at")?,
                    ended_at: row.try_get("ended_at")?,
                    outcome: AttemptOutcome::parse(&outcome)
                        .ok_or_else(|| AnalyticsError::Corrupt(format!("attempt outcome `{outcome}`")))?,
                    exit_status: row.try_get::<Option<i64>, _>("exit_status")?.and_then(|s| i32::try_from(s).ok()),
                    bytes_in: to_u64(row.try_get("bytes_in")?),
                    bytes_out: to_u64(row.try_get("bytes_out")?),
                    error: row.try_get("error")?,
                })
            })
            .collect()
    }

    async fn task_durations(&self, job_id: &str) -> Result<Vec<u64>, AnalyticsError> {
        let rows = sqlx::query(
            "SELECT duration_ms FROM tasks WHERE job_id = $1 AND status = 'done' AND duration_ms IS NOT NULL
             ORDER BY duration_ms",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok(to_u64(row.try_get(0)?))).collect()
    }

    async fn completion_times(&self, job_id: &str) -> Result<Vec<i64>, AnalyticsError> {
        let rows =
            sqlx::query("SELECT ended_at FROM attempts WHERE job_id = $1 AND outcome = 'succeeded' ORDER BY ended_at")
                .bind(job_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
    }

    async fn mean_task_millis(&self, job_id: &str) -> Result<Option<u64>, AnalyticsError> {
        // From the rollups: a sum over a few hundred bucket rows, not over the job's tasks. SUM
        // is NUMERIC in PostgreSQL: cast so both decode as an integer.
        let row = sqlx::query(
            "SELECT CAST(SUM(total_ms) AS BIGINT), CAST(SUM(tasks) AS BIGINT) FROM task_time_buckets WHERE job_id = $1",
        )
        .bind(job_id)
        .fetch_one(&self.pool)
        .await?;
        let total: Option<i64> = row.try_get(0)?;
        let tasks: Option<i64> = row.try_get(1)?;
        Ok(match (total, tasks) {
            (Some(total), Some(tasks)) if tasks > 0 => Some(to_u64(total) / to_u64(tasks)),
            _ => None,
        })
    }

    async fn attempt_totals(&self, job_id: &str) -> Result<AttemptTotals, AnalyticsError> {
        // SUM over BIGINT is NUMERIC in PostgreSQL: cast back so it decodes as i64.
        let row = sqlx::query(
            "SELECT COUNT(*),
                    COUNT(*) FILTER (WHERE outcome <> 'succeeded'),
                    COALESCE(SUM(bytes_in) FILTER (WHERE outcome = 'succeeded'), 0)::BIGINT,
                    COALESCE(SUM(bytes_out) FILTER (WHERE outcome = 'succeeded'), 0)::BIGINT
             FROM attempts WHERE job_id = $1",
        )
        .bind(job_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(AttemptTotals {
            attempts: to_u64(row.try_get(0)?),
            failed_attempts: to_u64(row.try_get(1)?),
            bytes_in: to_u64(row.try_get(2)?),
            bytes_out: to_u64(row.try_get(3)?),
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
                   FROM attempts WHERE job_id = $1) AS spans",
        )
        .bind(job_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(AttemptSpans { gaps_ms: to_u64(row.try_get(0)?), first_start: row.try_get(1)?, last_end: row.try_get(2)? })
    }

    async fn upsert_worker(&self, worker: &WorkerRecord) -> Result<(), AnalyticsError> {
        sqlx::query(
            "INSERT INTO workers (id, host, pid, started_at, last_seen, state, tasks_done, tasks_failed, current_tasks,
                                  running_tasks)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (id) DO UPDATE SET last_seen = GREATEST(workers.last_seen, excluded.last_seen),
                                            state = excluded.state, current_tasks = excluded.current_tasks,
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
        let rows =
            sqlx::query(r#"SELECT * FROM workers ORDER BY started_at, id COLLATE "C""#).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("id")?;
                let running = running::decode(&id, row.try_get("running_tasks")?)?;
                Ok(WorkerRecord {
                    host: row.try_get("host")?,
                    pid: to_u32(row.try_get("pid")?),
                    started_at: row.try_get("started_at")?,
                    last_seen: row.try_get("last_seen")?,
                    state: row.try_get("state")?,
                    tasks_done: to_u64(row.try_get("tasks_done")?),
                    tasks_failed: to_u64(row.try_get("tasks_failed")?),
                    current_tasks: to_u32(row.try_get("current_tasks")?),
                    running,
                    id,
                })
            })
            .collect()
    }

    async fn request_drain(&self, worker_id: &str, at: i64) -> Result<bool, AnalyticsError> {
        let updated =
            sqlx::query("UPDATE workers SET drain_requested_at = COALESCE(drain_requested_at, $1) WHERE id = $2")
                .bind(at)
                .bind(worker_id)
                .execute(&self.pool)
                .await?;
        Ok(updated.rows_affected() > 0)
    }

    async fn drain_requested(&self, worker_id: &str) -> Result<bool, AnalyticsError> {
        let row = sqlx::query("SELECT drain_requested_at FROM workers WHERE id = $1")
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
            let mut query: QueryBuilder<Postgres> =
                QueryBuilder::new("INSERT INTO requests (process_id, service, operation, count) ");
            query.push_values(chunk, |mut row, &(service, operation, count)| {
                row.push_bind(process_id).push_bind(service).push_bind(operation).push_bind(count);
            });
            query.push(
                " ON CONFLICT (process_id, service, operation)
                  DO UPDATE SET count = GREATEST(requests.count, excluded.count)",
            );
            query.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn request_totals(&self) -> Result<Vec<RequestCount>, AnalyticsError> {
        // The sum cast back from NUMERIC; the order byte-wise, as SQLite's, whatever the locale.
        let rows = sqlx::query(
            r#"SELECT service, operation, SUM(count)::BIGINT AS count FROM requests GROUP BY service, operation
               ORDER BY service COLLATE "C", operation COLLATE "C""#,
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RequestCount {
                    service: row.try_get("service")?,
                    operation: row.try_get("operation")?,
                    count: to_u64(row.try_get("count")?),
                })
            })
            .collect()
    }

    async fn job_list(&self, query: &JobQuery) -> Result<JobList, AnalyticsError> {
        let filter = |builder: &mut QueryBuilder<Postgres>| {
            builder.push(" WHERE TRUE");
            if let Some(state) = query.state {
                builder.push(" AND state = ").push_bind(state.as_str());
            }
            if let Some(pattern) = query.name_pattern() {
                builder.push(" AND lower(name) LIKE ").push_bind(pattern).push(r" ESCAPE '\'");
            }
        };
        let mut count: QueryBuilder<Postgres> = QueryBuilder::new("SELECT COUNT(*) FROM jobs");
        filter(&mut count);
        let total: i64 = count.build().fetch_one(&self.pool).await?.try_get(0)?;
        if query.limit == 0 {
            // A count alone (/metrics' jobs by state): no page to read.
            return Ok(JobList { total: to_u64(total), jobs: Vec::new() });
        }
        let mut list: QueryBuilder<Postgres> = QueryBuilder::new("SELECT * FROM jobs");
        filter(&mut list);
        list.push(r#" ORDER BY submitted_at DESC, id COLLATE "C" DESC LIMIT "#).push_bind(query.capped_limit());
        let rows = list.build().fetch_all(&self.pool).await?;
        Ok(JobList { total: to_u64(total), jobs: rows.iter().map(job_from_row).collect::<Result<_, _>>()? })
    }

    async fn stages_of(&self, job_ids: &[String]) -> Result<HashMap<String, Vec<StageProgress>>, AnalyticsError> {
        let rows = sqlx::query(
            "SELECT job_id, stage, name, kind, expected_tasks, done, failed, retrying FROM stages
             WHERE job_id = ANY($1) ORDER BY job_id, stage",
        )
        .bind(job_ids)
        .fetch_all(&self.pool)
        .await?;
        let mut stages: HashMap<String, Vec<StageProgress>> = HashMap::new();
        for row in &rows {
            stages.entry(row.try_get("job_id")?).or_default().push(stage_from_row(row)?);
        }
        Ok(stages)
    }

    async fn task_times(&self, job_id: &str) -> Result<Vec<StageTimes>, AnalyticsError> {
        let rows = sqlx::query(
            "SELECT stage, bucket, tasks, total_ms FROM task_time_buckets WHERE job_id = $1 ORDER BY stage, bucket",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        let rows = rows
            .iter()
            .map(|row| {
                Ok((
                    to_u32(row.try_get("stage")?),
                    to_u32(row.try_get("bucket")?),
                    to_u64(row.try_get("tasks")?),
                    to_u64(row.try_get("total_ms")?),
                ))
            })
            .collect::<Result<Vec<_>, AnalyticsError>>()?;
        Ok(group_by_stage(rows))
    }

    async fn completions(&self, job_id: &str) -> Result<Vec<(i64, u64)>, AnalyticsError> {
        let rows = sqlx::query("SELECT slot, tasks FROM completion_slots WHERE job_id = $1 ORDER BY slot")
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| Ok((row.try_get("slot")?, to_u64(row.try_get("tasks")?)))).collect()
    }

    async fn task_ms_of(&self, job_ids: &[String]) -> Result<HashMap<String, u64>, AnalyticsError> {
        // SUM of BIGINT is NUMERIC: cast back.
        let rows = sqlx::query(
            "SELECT job_id, SUM(total_ms)::BIGINT AS total FROM task_time_buckets WHERE job_id = ANY($1) GROUP BY job_id",
        )
        .bind(job_ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok((row.try_get("job_id")?, to_u64(row.try_get("total")?)))).collect()
    }

    async fn record_grid_sample(&self, sample: &GridSample, forget_before: i64) -> Result<(), AnalyticsError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO grid_samples (at, visible, in_flight, dead, workers, tasks_held) VALUES ($1, $2, $3, $4, $5, $6)
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
        sqlx::query("DELETE FROM grid_samples WHERE at < $1").bind(forget_before).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn grid_samples(&self, since: i64) -> Result<Vec<GridSample>, AnalyticsError> {
        let rows = sqlx::query("SELECT * FROM grid_samples WHERE at >= $1 ORDER BY at")
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(GridSample {
                    at: row.try_get("at")?,
                    visible: to_u64(row.try_get("visible")?),
                    in_flight: to_u64(row.try_get("in_flight")?),
                    dead: to_u64(row.try_get("dead")?),
                    workers: to_u64(row.try_get("workers")?),
                    tasks_held: to_u64(row.try_get("tasks_held")?),
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
        // SUM of BIGINT is NUMERIC in PostgreSQL: cast back so it decodes as SQLite's does.
        let rows = sqlx::query(
            "SELECT worker_id, (started_at - $2) / $3 AS start_slot, (ended_at - $2) / $3 AS end_slot,
                    COUNT(*) AS attempts, SUM(started_at - $2)::BIGINT AS started_sum,
                    SUM(ended_at - $2)::BIGINT AS ended_sum
             FROM attempts WHERE job_id = $1 GROUP BY worker_id, start_slot, end_slot",
        )
        .bind(job_id)
        .bind(start)
        .bind(slot_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(WorkerActivity {
                    worker_id: row.try_get("worker_id")?,
                    start_slot: row.try_get("start_slot")?,
                    end_slot: row.try_get("end_slot")?,
                    attempts: to_u64(row.try_get("attempts")?),
                    started_sum: row.try_get("started_sum")?,
                    ended_sum: row.try_get("ended_sum")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::stage_lock_key;

    #[test]
    fn lock_keys_tell_stages_and_jobs_apart() {
        assert_ne!(stage_lock_key("job", 0), stage_lock_key("job", 1));
        assert_ne!(stage_lock_key("a1", 2), stage_lock_key("a", 12));
        assert_eq!(stage_lock_key("job", 3), stage_lock_key("job", 3), "the key is deterministic");
    }
}
