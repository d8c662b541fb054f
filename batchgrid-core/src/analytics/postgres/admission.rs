//! [`AdmissionStore`] on PostgreSQL: the SQLite statements in its dialect; [`PgAnalytics`] runs
//! each through its reconnecting retry loop. Writers from several processes meet on rows, not
//! on one lock, so every transaction takes its rows first (task rows, or the job's row) and
//! the job's counter row last: the same order everywhere, so none waits on another in a cycle.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row, Transaction};

use super::{PgAnalytics, Sql};
use crate::analytics::admission::{
    pause_reason, priority_reason, stored_priority, AdmissionStore, JobAdmission, PendingTask,
};
use crate::analytics::{parse_state, to_i64, to_u32, to_u64, AnalyticsError, JobState};
use crate::db::now_millis;

/// Rows per multi-row insert: five parameters a row stays far under PostgreSQL's 65535.
const ROWS_PER_STATEMENT: usize = 400;

/// The columns [`admission_from_row`] reads, over `jobs j`.
const ADMISSION_SELECT: &str = "SELECT j.id, j.submitted_at, COALESCE(a.priority, 50) AS priority,
        COALESCE(a.paused, 0) AS paused, COALESCE(a.pending, 0) AS pending, COALESCE(a.admitted, 0) AS admitted,
        COALESCE(s.done + s.failed, 0) AS settled
     FROM jobs j LEFT JOIN job_admission a ON a.job_id = j.id LEFT JOIN stages s ON s.job_id = j.id AND s.stage = 0";

fn admission_from_row(row: &PgRow) -> Result<JobAdmission, AnalyticsError> {
    Ok(JobAdmission {
        job_id: row.try_get("id")?,
        priority: stored_priority(row.try_get("priority")?),
        paused: row.try_get::<i64, _>("paused")? != 0,
        pending: to_u64(row.try_get("pending")?),
        admitted: to_u64(row.try_get("admitted")?),
        settled: to_u64(row.try_get("settled")?),
        submitted_at: row.try_get("submitted_at")?,
    })
}

fn pending_from_row(row: &PgRow) -> Result<PendingTask, AnalyticsError> {
    Ok(PendingTask {
        stage: to_u32(row.try_get("stage")?),
        task_id: row.try_get("task_id")?,
        seq: to_u64(row.try_get("seq")?),
        body: row.try_get("body")?,
    })
}

/// Moves a job's counters (creating its row with the default priority if it has none).
async fn move_counters(
    tx: &mut Transaction<'_, Postgres>,
    job_id: &str,
    pending: i64,
    admitted: i64,
) -> Result<(), AnalyticsError> {
    if pending == 0 && admitted == 0 {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO job_admission (job_id, pending, admitted) VALUES ($1, $2, $3)
         ON CONFLICT (job_id) DO UPDATE SET pending = job_admission.pending + excluded.pending,
                                            admitted = job_admission.admitted + excluded.admitted",
    )
    .bind(job_id)
    .bind(pending)
    .bind(admitted)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Locks the job's row for an operator's change: the job's state if it has not ended, `None`
/// if it has; an unknown job is an error. Holding the row makes the history sequence number
/// read after it this transaction's alone, as in `transition`.
async fn lock_live_job(tx: &mut Transaction<'_, Postgres>, job_id: &str) -> Result<Option<JobState>, AnalyticsError> {
    let row =
        sqlx::query("SELECT state FROM jobs WHERE id = $1 FOR UPDATE").bind(job_id).fetch_optional(&mut **tx).await?;
    let Some(row) = row else { return Err(AnalyticsError::JobNotFound(job_id.to_owned())) };
    let state = parse_state(&row.try_get::<String, _>("state")?)?;
    Ok((!state.is_terminal()).then_some(state))
}

/// Appends an operator's action to the job's history: the state stays as it is.
async fn record_action(
    tx: &mut Transaction<'_, Postgres>,
    job_id: &str,
    state: JobState,
    reason: &str,
    actor: &str,
) -> Result<(), AnalyticsError> {
    sqlx::query(
        "INSERT INTO job_history (job_id, seq, at, from_state, to_state, reason, actor)
         SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6 FROM job_history WHERE job_id = $7",
    )
    .bind(job_id)
    .bind(now_millis())
    .bind(state.as_str())
    .bind(state.as_str())
    .bind(reason)
    .bind(actor)
    .bind(job_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The job's (priority, paused), its row created if missing and locked.
async fn controls(tx: &mut Transaction<'_, Postgres>, job_id: &str) -> Result<(i64, bool), AnalyticsError> {
    sqlx::query("INSERT INTO job_admission (job_id) VALUES ($1) ON CONFLICT (job_id) DO NOTHING")
        .bind(job_id)
        .execute(&mut **tx)
        .await?;
    let row = sqlx::query("SELECT priority, paused FROM job_admission WHERE job_id = $1 FOR UPDATE")
        .bind(job_id)
        .fetch_one(&mut **tx)
        .await?;
    Ok((row.try_get("priority")?, row.try_get::<i64, _>("paused")? != 0))
}

#[async_trait]
impl AdmissionStore for Sql {
    async fn init_admission(&self, job_id: &str, priority: u8) -> Result<(), AnalyticsError> {
        sqlx::query("INSERT INTO job_admission (job_id, priority) VALUES ($1, $2) ON CONFLICT (job_id) DO NOTHING")
            .bind(job_id)
            .bind(i64::from(priority))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn add_pending(&self, job_id: &str, tasks: &[PendingTask]) -> Result<u64, AnalyticsError> {
        if tasks.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        let mut added = 0;
        for chunk in tasks.chunks(ROWS_PER_STATEMENT) {
            let mut query: QueryBuilder<Postgres> =
                QueryBuilder::new("INSERT INTO pending_tasks (job_id, stage, task_id, seq, body) ");
            query.push_values(chunk, |mut row, task| {
                row.push_bind(job_id)
                    .push_bind(i64::from(task.stage))
                    .push_bind(&task.task_id)
                    .push_bind(to_i64(task.seq))
                    .push_bind(&task.body);
            });
            query.push(" ON CONFLICT DO NOTHING");
            added += query.build().execute(&mut *tx).await?.rows_affected();
        }
        move_counters(&mut tx, job_id, to_i64(added), 0).await?;
        tx.commit().await?;
        Ok(added)
    }

    async fn return_pending(&self, job_id: &str, task: &PendingTask) -> Result<(), AnalyticsError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO pending_tasks (job_id, stage, task_id, seq, body) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
        )
        .bind(job_id)
        .bind(i64::from(task.stage))
        .bind(&task.task_id)
        .bind(to_i64(task.seq))
        .bind(&task.body)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            move_counters(&mut tx, job_id, 1, 0).await?;
        } else {
            let reopened = sqlx::query(
                "UPDATE pending_tasks SET admitted = 0
                 WHERE job_id = $1 AND stage = $2 AND task_id = $3 AND admitted = 1",
            )
            .bind(job_id)
            .bind(i64::from(task.stage))
            .bind(&task.task_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let reopened = to_i64(reopened);
            move_counters(&mut tx, job_id, reopened, -reopened).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn next_pending(&self, job_id: &str, max: usize) -> Result<Vec<PendingTask>, AnalyticsError> {
        let limit = to_i64(max as u64);
        // Two queries, each an index range: one `ORDER BY stage DESC, seq` would sort the
        // whole backlog on every pass.
        let later = sqlx::query(
            "SELECT stage, task_id, seq, body FROM pending_tasks
             WHERE job_id = $1 AND admitted = 0 AND stage > 0 ORDER BY stage DESC, seq LIMIT $2",
        )
        .bind(job_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut tasks = later.iter().map(pending_from_row).collect::<Result<Vec<_>, _>>()?;
        let left = max.saturating_sub(tasks.len());
        if left > 0 {
            let first = sqlx::query(
                "SELECT stage, task_id, seq, body FROM pending_tasks
                 WHERE job_id = $1 AND admitted = 0 AND stage = 0 ORDER BY seq LIMIT $2",
            )
            .bind(job_id)
            .bind(to_i64(left as u64))
            .fetch_all(&self.pool)
            .await?;
            for row in &first {
                tasks.push(pending_from_row(row)?);
            }
        }
        Ok(tasks)
    }

    async fn mark_admitted(&self, job_id: &str, tasks: &[(u32, String)]) -> Result<u64, AnalyticsError> {
        if tasks.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        let (mut first, mut later) = (0u64, 0u64);
        // Sorted, so two managers marking overlapping sets lock their rows in one order.
        let mut sorted: Vec<&(u32, String)> = tasks.iter().collect();
        sorted.sort();
        for chunk in sorted.chunks(ROWS_PER_STATEMENT) {
            let (firsts, laters): (Vec<_>, Vec<_>) = chunk.iter().copied().partition(|(stage, _)| *stage == 0);
            if !firsts.is_empty() {
                let mut query: QueryBuilder<Postgres> = QueryBuilder::new(
                    "UPDATE pending_tasks SET admitted = 1 WHERE admitted = 0 AND stage = 0 AND job_id = ",
                );
                query.push_bind(job_id).push(" AND task_id IN (");
                let mut ids = query.separated(", ");
                for (_, task) in &firsts {
                    ids.push_bind(task);
                }
                query.push(")");
                first += query.build().execute(&mut *tx).await?.rows_affected();
            }
            for (stage, task) in laters {
                later += sqlx::query(
                    "DELETE FROM pending_tasks WHERE job_id = $1 AND stage = $2 AND task_id = $3 AND admitted = 0",
                )
                .bind(job_id)
                .bind(i64::from(*stage))
                .bind(task)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
        }
        move_counters(&mut tx, job_id, -to_i64(first + later), to_i64(first)).await?;
        tx.commit().await?;
        Ok(first + later)
    }

    async fn admissions(&self) -> Result<Vec<JobAdmission>, AnalyticsError> {
        let query = format!(
            "{ADMISSION_SELECT} WHERE j.state IN ('submitted', 'splitting', 'running') ORDER BY j.submitted_at, j.id"
        );
        let rows = sqlx::query(&query).fetch_all(&self.pool).await?;
        rows.iter().map(admission_from_row).collect()
    }

    async fn admission(&self, job_id: &str) -> Result<Option<JobAdmission>, AnalyticsError> {
        let query = format!("{ADMISSION_SELECT} WHERE j.id = $1");
        let row = sqlx::query(&query).bind(job_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(admission_from_row).transpose()
    }

    async fn set_paused(&self, job_id: &str, paused: bool, actor: &str) -> Result<bool, AnalyticsError> {
        let mut tx = self.pool.begin().await?;
        let Some(state) = lock_live_job(&mut tx, job_id).await? else { return Ok(false) };
        let (_, current) = controls(&mut tx, job_id).await?;
        if current == paused {
            return Ok(false);
        }
        sqlx::query("UPDATE job_admission SET paused = $1 WHERE job_id = $2")
            .bind(i64::from(paused))
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        record_action(&mut tx, job_id, state, pause_reason(paused), actor).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn set_priority(&self, job_id: &str, priority: u8, actor: &str) -> Result<bool, AnalyticsError> {
        let mut tx = self.pool.begin().await?;
        let Some(state) = lock_live_job(&mut tx, job_id).await? else { return Ok(false) };
        let (current, _) = controls(&mut tx, job_id).await?;
        if current == i64::from(priority) {
            return Ok(false);
        }
        sqlx::query("UPDATE job_admission SET priority = $1 WHERE job_id = $2")
            .bind(i64::from(priority))
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        record_action(&mut tx, job_id, state, &priority_reason(current, priority), actor).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn requeue_unsettled(&self, job_id: &str) -> Result<u64, AnalyticsError> {
        let mut tx = self.pool.begin().await?;
        let reopened = sqlx::query(
            "UPDATE pending_tasks p SET admitted = 0
             WHERE p.job_id = $1 AND p.stage = 0 AND p.admitted = 1 AND NOT EXISTS (
                 SELECT 1 FROM tasks t WHERE t.job_id = p.job_id AND t.stage = 0
                     AND t.task_id = p.task_id AND t.status IN ('done', 'failed'))",
        )
        .bind(job_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        move_counters(&mut tx, job_id, to_i64(reopened), -to_i64(reopened)).await?;
        tx.commit().await?;
        Ok(reopened)
    }

    async fn clear_pending(&self, job_id: &str) -> Result<(), AnalyticsError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM pending_tasks WHERE job_id = $1").bind(job_id).execute(&mut *tx).await?;
        sqlx::query("UPDATE job_admission SET pending = 0, admitted = 0 WHERE job_id = $1")
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl AdmissionStore for PgAnalytics {
    async fn init_admission(&self, job_id: &str, priority: u8) -> Result<(), AnalyticsError> {
        self.run(|sql| sql.init_admission(job_id, priority)).await
    }

    async fn add_pending(&self, job_id: &str, tasks: &[PendingTask]) -> Result<u64, AnalyticsError> {
        self.run(|sql| sql.add_pending(job_id, tasks)).await
    }

    async fn return_pending(&self, job_id: &str, task: &PendingTask) -> Result<(), AnalyticsError> {
        self.run(|sql| sql.return_pending(job_id, task)).await
    }

    async fn next_pending(&self, job_id: &str, max: usize) -> Result<Vec<PendingTask>, AnalyticsError> {
        self.run(|sql| sql.next_pending(job_id, max)).await
    }

    async fn mark_admitted(&self, job_id: &str, tasks: &[(u32, String)]) -> Result<u64, AnalyticsError> {
        self.run(|sql| sql.mark_admitted(job_id, tasks)).await
    }

    async fn admissions(&self) -> Result<Vec<JobAdmission>, AnalyticsError> {
        self.run(|sql| sql.admissions()).await
    }

    async fn admission(&self, job_id: &str) -> Result<Option<JobAdmission>, AnalyticsError> {
        self.run(|sql| sql.admission(job_id)).await
    }

    async fn set_paused(&self, job_id: &str, paused: bool, actor: &str) -> Result<bool, AnalyticsError> {
        self.run(|sql| sql.set_paused(job_id, paused, actor)).await
    }

    async fn set_priority(&self, job_id: &str, priority: u8, actor: &str) -> Result<bool, AnalyticsError> {
        self.run(|sql| sql.set_priority(job_id, priority, actor)).await
    }

    async fn requeue_unsettled(&self, job_id: &str) -> Result<u64, AnalyticsError> {
        self.run(|sql| sql.requeue_unsettled(job_id)).await
    }

    async fn clear_pending(&self, job_id: &str) -> Result<(), AnalyticsError> {
        self.run(|sql| sql.clear_pending(job_id)).await
    }
}
