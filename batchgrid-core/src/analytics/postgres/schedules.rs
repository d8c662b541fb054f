//! [`ScheduleStore`] on PostgreSQL: the SQLite statements in its dialect; [`PgAnalytics`] runs
//! each through its reconnecting retry loop.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::Row;

use super::{PgAnalytics, Sql};
use crate::analytics::schedules::{OccurrenceRecord, OccurrenceState, ScheduleRecord, ScheduleStore};
use crate::analytics::AnalyticsError;

fn schedule_from_row(row: &PgRow) -> Result<ScheduleRecord, AnalyticsError> {
    Ok(ScheduleRecord {
        name: row.try_get("name")?,
        spec: row.try_get("spec")?,
        paused: row.try_get::<i64, _>("paused")? != 0,
        watermark: row.try_get("watermark")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn occurrence_from_row(row: &PgRow) -> Result<OccurrenceRecord, AnalyticsError> {
    Ok(OccurrenceRecord {
        schedule: row.try_get("schedule")?,
        fire_time: row.try_get("fire_time")?,
        state: OccurrenceState::parse(&row.try_get::<String, _>("state")?)?,
        job_id: row.try_get("job_id")?,
        manual: row.try_get::<i64, _>("manual")? != 0,
        reason: row.try_get("reason")?,
        created_at: row.try_get("created_at")?,
    })
}

#[async_trait]
impl ScheduleStore for Sql {
    async fn create_schedule(&self, schedule: &ScheduleRecord) -> Result<bool, AnalyticsError> {
        let inserted = sqlx::query(
            "INSERT INTO schedules (name, spec, paused, watermark, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&schedule.name)
        .bind(&schedule.spec)
        .bind(i64::from(schedule.paused))
        .bind(schedule.watermark)
        .bind(schedule.created_at)
        .bind(schedule.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn schedule(&self, name: &str) -> Result<Option<ScheduleRecord>, AnalyticsError> {
        let row = sqlx::query("SELECT * FROM schedules WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(schedule_from_row).transpose()
    }

    async fn schedules(&self) -> Result<Vec<ScheduleRecord>, AnalyticsError> {
        let rows = sqlx::query("SELECT * FROM schedules ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter().map(schedule_from_row).collect()
    }

    async fn set_schedule_paused(&self, name: &str, paused: bool, now: i64) -> Result<bool, AnalyticsError> {
        let updated = sqlx::query(
            "UPDATE schedules SET paused = $1, updated_at = $2,
                    watermark = CASE WHEN $3 = 0 AND watermark < $4 THEN $5 ELSE watermark END
             WHERE name = $6",
        )
        .bind(i64::from(paused))
        .bind(now)
        .bind(i64::from(paused))
        .bind(now)
        .bind(now)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    async fn advance_watermark(&self, name: &str, to: i64) -> Result<(), AnalyticsError> {
        sqlx::query("UPDATE schedules SET watermark = $1 WHERE name = $2 AND watermark < $3")
            .bind(to)
            .bind(name)
            .bind(to)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool, AnalyticsError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM schedule_occurrences WHERE schedule = $1").bind(name).execute(&mut *tx).await?;
        let deleted = sqlx::query("DELETE FROM schedules WHERE name = $1").bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(deleted.rows_affected() == 1)
    }

    async fn claim_occurrence(&self, occurrence: &OccurrenceRecord) -> Result<bool, AnalyticsError> {
        let inserted = sqlx::query(
            "INSERT INTO schedule_occurrences (schedule, fire_time, state, job_id, manual, reason, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (schedule, fire_time) DO NOTHING",
        )
        .bind(&occurrence.schedule)
        .bind(occurrence.fire_time)
        .bind(occurrence.state.as_str())
        .bind(&occurrence.job_id)
        .bind(i64::from(occurrence.manual))
        .bind(&occurrence.reason)
        .bind(occurrence.created_at)
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn move_occurrence(
        &self,
        schedule: &str,
        fire_time: i64,
        from: OccurrenceState,
        to: OccurrenceState,
        job_id: Option<&str>,
        reason: Option<&str>,
    ) -> Result<bool, AnalyticsError> {
        let moved = sqlx::query(
            "UPDATE schedule_occurrences SET state = $1, job_id = COALESCE($2, job_id), reason = COALESCE($3, reason)
             WHERE schedule = $4 AND fire_time = $5 AND state = $6",
        )
        .bind(to.as_str())
        .bind(job_id)
        .bind(reason)
        .bind(schedule)
        .bind(fire_time)
        .bind(from.as_str())
        .execute(&self.pool)
        .await?;
        Ok(moved.rows_affected() == 1)
    }

    async fn occurrences(&self, schedule: &str, limit: u32) -> Result<Vec<OccurrenceRecord>, AnalyticsError> {
        let rows =
            sqlx::query("SELECT * FROM schedule_occurrences WHERE schedule = $1 ORDER BY fire_time DESC LIMIT $2")
                .bind(schedule)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(occurrence_from_row).collect()
    }
}

#[async_trait]
impl ScheduleStore for PgAnalytics {
    async fn create_schedule(&self, schedule: &ScheduleRecord) -> Result<bool, AnalyticsError> {
        self.run(|sql| sql.create_schedule(schedule)).await
    }

    async fn schedule(&self, name: &str) -> Result<Option<ScheduleRecord>, AnalyticsError> {
        self.run(|sql| sql.schedule(name)).await
    }

    async fn schedules(&self) -> Result<Vec<ScheduleRecord>, AnalyticsError> {
        self.run(|sql| sql.schedules()).await
    }

    async fn set_schedule_paused(&self, name: &str, paused: bool, now: i64) -> Result<bool, AnalyticsError> {
        self.run(|sql| sql.set_schedule_paused(name, paused, now)).await
    }

    async fn advance_watermark(&self, name: &str, to: i64) -> Result<(), AnalyticsError> {
        self.run(|sql| sql.advance_watermark(name, to)).await
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool, AnalyticsError> {
        self.run(|sql| sql.delete_schedule(name)).await
    }

    async fn claim_occurrence(&self, occurrence: &OccurrenceRecord) -> Result<bool, AnalyticsError> {
        self.run(|sql| sql.claim_occurrence(occurrence)).await
    }

    async fn move_occurrence(
        &self,
        schedule: &str,
        fire_time: i64,
        from: OccurrenceState,
        to: OccurrenceState,
        job_id: Option<&str>,
        reason: Option<&str>,
    ) -> Result<bool, AnalyticsError> {
        self.run(|sql| sql.move_occurrence(schedule, fire_time, from, to, job_id, reason)).await
    }

    async fn occurrences(&self, schedule: &str, limit: u32) -> Result<Vec<OccurrenceRecord>, AnalyticsError> {
        self.run(|sql| sql.occurrences(schedule, limit)).await
    }
}
