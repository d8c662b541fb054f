//! The embedded task queue: SQLite with SQS semantics, shared by every process of a local grid.
//!
//! All queues of a grid live in one table keyed by queue name; a queue's dead letters live under
//! `<name>.dlq`. A receipt is `<id>.<delivery>`, where the delivery counter only ever rises
//! (unlike the receive count, which a redrive resets), so a receipt from an earlier delivery no
//! longer matches once the message has been delivered again.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::SqlitePool;
use sqlx::{QueryBuilder, Row};
use tokio::sync::Notify;

use super::{
    check_batch, BatchFailures, DeadLetter, QueueDepth, QueueError, QueueMessage, Receipt, TaskQueue, MAX_BATCH,
};
use crate::db::{millis, now_millis, open_sqlite};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/queue-sqlite");

/// Shortest and longest pause between receives while long-polling an empty queue (messages
/// also become visible by time: retries, expired visibility). Senders in this process wake a
/// poller at once; other processes' commits within [`WATCH_EVERY`].
const POLL_MIN: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_millis(100);
/// How often a long poll checks whether another process has committed to the database
/// (`PRAGMA data_version`: a read of shared memory, no disk, no lock).
const WATCH_EVERY: Duration = Duration::from_millis(5);

/// Receipts of dead letters name the message alone: a dead letter has no deliveries to tell apart.
const DEAD_RECEIPT: &str = "dead.";

fn dead_receipt(id: i64) -> Receipt {
    Receipt(format!("{DEAD_RECEIPT}{id}"))
}

/// A dead letter from a row of `id, body, receive_count, reason`.
fn dead_letter_from_row(row: &sqlx::sqlite::SqliteRow) -> DeadLetter {
    let id: i64 = row.get(0);
    DeadLetter {
        id: id.to_string(),
        body: row.get(1),
        receive_count: u32::try_from(row.get::<i64, _>(2)).unwrap_or(u32::MAX),
        reason: row.get(3),
        receipt: dead_receipt(id),
    }
}

/// A [`TaskQueue`] in a SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteQueue {
    pool: SqlitePool,
    name: String,
    dead_letter_name: String,
    max_receives: u32,
    arrivals: Arc<Notify>,
}

/// Opens the queue database and migrates it; share the pool between the queues of one grid.
pub async fn open_queue_database(path: &std::path::Path) -> Result<SqlitePool, QueueError> {
    let pool = open_sqlite(path, 1).await.map_err(|e| backend("(database)", e))?;
    MIGRATOR.run(&pool).await.map_err(|e| backend("(database)", e))?;
    Ok(pool)
}

fn backend(queue: &str, error: impl std::error::Error + Send + Sync + 'static) -> QueueError {
    QueueError::Backend { queue: queue.to_owned(), source: Box::new(error) }
}

/// Appends the batch delete. `+queue` keeps SQLite from choosing the queue's visibility index
/// (a scan of the whole backlog) over the primary key: without it each acknowledgement cost
/// time proportional to the queue's depth.
fn push_delete<'a>(query: &mut QueryBuilder<'a, sqlx::Sqlite>, queue: &'a str, pairs: &[(i64, i64)]) {
    query.push("DELETE FROM messages WHERE id IN (");
    let mut ids = query.separated(", ");
    for (id, _) in pairs {
        ids.push_bind(*id);
    }
    query.push(") AND +queue = ").push_bind(queue).push(" AND (id, delivery) IN (VALUES ");
    let mut values = query.separated(", ");
    for (id, delivery) in pairs {
        values
            .push("(")
            .push_bind_unseparated(*id)
            .push_unseparated(", ")
            .push_bind_unseparated(*delivery)
            .push_unseparated(")");
    }
    query.push(")");
}

/// A receipt is `ID.DELIVERY`: the message and which of its deliveries.
fn parse_receipt(receipt: &Receipt) -> Result<(i64, i64), QueueError> {
    let invalid = || QueueError::InvalidReceipt(receipt.0.clone());
    let (id, count) = receipt.0.split_once('.').ok_or_else(invalid)?;
    Ok((id.parse().map_err(|_| invalid())?, count.parse().map_err(|_| invalid())?))
}

impl SqliteQueue {
    /// A queue named `name` in the database behind `pool`, dead-lettering after `max_receives`.
    pub fn new(pool: SqlitePool, name: &str, max_receives: u32) -> Self {
        Self {
            pool,
            name: name.to_owned(),
            dead_letter_name: format!("{name}.dlq"),
            max_receives: max_receives.max(1),
            arrivals: Arc::new(Notify::new()),
        }
    }

    fn err(&self, error: impl std::error::Error + Send + Sync + 'static) -> QueueError {
        backend(&self.name, error)
    }

    /// A number that changes when another connection commits to the database. The pool has
    /// one connection, so successive values compare (a replaced connection only wakes a poll).
    async fn data_version(&self) -> Result<i64, QueueError> {
        sqlx::query_scalar("PRAGMA data_version").fetch_one(&self.pool).await.map_err(|e| self.err(e))
    }

    async fn receive_once(&self, max: usize, visibility: Duration) -> Result<Vec<QueueMessage>, QueueError> {
        let now = now_millis();
        // One statement claims the batch atomically, even against other processes.
        let rows = sqlx::query(
            "UPDATE messages SET visible_at = ?1, receive_count = receive_count + 1, delivery = delivery + 1
             WHERE id IN (SELECT id FROM messages WHERE queue = ?2 AND visible_at <= ?3
                          ORDER BY visible_at, id LIMIT ?4)
             RETURNING id, body, receive_count, delivery",
        )
        .bind(now.saturating_add(millis(visibility)))
        .bind(&self.name)
        .bind(now)
        .bind(max as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;

        let mut delivered = Vec::with_capacity(rows.len());
        let mut exhausted = Vec::new();
        for row in rows {
            let id: i64 = row.get(0);
            let count: i64 = row.get(2);
            let delivery: i64 = row.get(3);
            if count > i64::from(self.max_receives) {
                exhausted.push(id);
                continue;
            }
            delivered.push(QueueMessage {
                id: id.to_string(),
                body: row.get(1),
                receipt: Receipt(format!("{id}.{delivery}")),
                receive_count: u32::try_from(count).unwrap_or(u32::MAX),
            });
        }
        if !exhausted.is_empty() {
            let mut query = QueryBuilder::new("UPDATE messages SET queue = ");
            query.push_bind(&self.dead_letter_name).push(", visible_at = ").push_bind(now).push(
                ", receive_count = receive_count - 1, reason = COALESCE(reason, 'exceeded max receives') WHERE id IN (",
            );
            let mut ids = query.separated(", ");
            for id in &exhausted {
                ids.push_bind(*id);
            }
            query.push(")");
            query.build().execute(&self.pool).await.map_err(|e| self.err(e))?;
        }
        delivered.sort_by_key(|m| m.id.parse::<i64>().unwrap_or_default());
        Ok(delivered)
    }
}

#[async_trait]
impl TaskQueue for SqliteQueue {
    fn max_receives(&self) -> Option<u32> {
        Some(self.max_receives)
    }

    fn name(&self) -> &str {
        &self.name
    }

    async fn send_batch(&self, bodies: &[String]) -> Result<(), QueueError> {
        check_batch(bodies)?;
        if bodies.is_empty() {
            return Ok(());
        }
        let now = now_millis();
        let mut query = QueryBuilder::new("INSERT INTO messages (queue, body, visible_at, sent_at) ");
        query.push_values(bodies, |mut row, body| {
            row.push_bind(&self.name).push_bind(body).push_bind(now).push_bind(now);
        });
        query.build().execute(&self.pool).await.map_err(|e| self.err(e))?;
        self.arrivals.notify_waiters();
        Ok(())
    }

    async fn receive(&self, max: usize, visibility: Duration, wait: Duration) -> Result<Vec<QueueMessage>, QueueError> {
        if max > MAX_BATCH {
            return Err(QueueError::BatchTooLarge(max));
        }
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = POLL_MIN;
        loop {
            let arrived = self.arrivals.notified();
            let messages = self.receive_once(max, visibility).await?;
            let now = tokio::time::Instant::now();
            if !messages.is_empty() || now >= deadline {
                return Ok(messages);
            }
            // Until the next full receive, watch for a commit by another process: it may
            // have sent a message (the manager opening a reduce stage, a worker forwarding).
            let nap_until = (now + pause).min(deadline);
            let version = self.data_version().await?;
            tokio::pin!(arrived);
            loop {
                let watch = (tokio::time::Instant::now() + WATCH_EVERY).min(nap_until);
                tokio::select! {
                    () = &mut arrived => break,
                    () = tokio::time::sleep_until(watch) => {}
                }
                if watch >= nap_until || self.data_version().await? != version {
                    break;
                }
            }
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    async fn change_visibility(&self, changes: &[(Receipt, Duration)]) -> Result<BatchFailures, QueueError> {
        if changes.len() > MAX_BATCH {
            return Err(QueueError::BatchTooLarge(changes.len()));
        }
        let now = now_millis();
        let mut failures = BatchFailures::default();
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        for (index, (receipt, timeout)) in changes.iter().enumerate() {
            let Ok((id, delivery)) = parse_receipt(receipt) else {
                failures.0.push((index, format!("receipt `{}` is not valid", receipt.0)));
                continue;
            };
            let done = sqlx::query("UPDATE messages SET visible_at = ? WHERE id = ? AND delivery = ? AND queue = ?")
                .bind(now.saturating_add(millis(*timeout)))
                .bind(id)
                .bind(delivery)
                .bind(&self.name)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
            if done.rows_affected() == 0 {
                failures.0.push((index, "message is no longer held by this receipt".into()));
            }
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        if changes.iter().any(|(_, t)| t.is_zero()) {
            self.arrivals.notify_waiters();
        }
        Ok(failures)
    }

    async fn delete_batch(&self, receipts: &[Receipt]) -> Result<BatchFailures, QueueError> {
        if receipts.len() > MAX_BATCH {
            return Err(QueueError::BatchTooLarge(receipts.len()));
        }
        let mut failures = BatchFailures::default();
        let mut parsed = Vec::with_capacity(receipts.len());
        for (index, receipt) in receipts.iter().enumerate() {
            match parse_receipt(receipt) {
                Ok(pair) => parsed.push((index, pair)),
                Err(e) => failures.0.push((index, e.to_string())),
            }
        }
        if parsed.is_empty() {
            return Ok(failures);
        }
        let mut query = QueryBuilder::new("");
        let pairs: Vec<(i64, i64)> = parsed.iter().map(|(_, pair)| *pair).collect();
        push_delete(&mut query, &self.name, &pairs);
        let deleted = query.build().execute(&self.pool).await.map_err(|e| self.err(e))?;
        if deleted.rows_affected() as usize == parsed.len() {
            return Ok(failures);
        }
        // Some entries did not match: gone already (fine) or delivered again since (stale).
        for (index, (id, _)) in parsed {
            let still_here = sqlx::query("SELECT 1 FROM messages WHERE id = ? AND queue = ?")
                .bind(id)
                .bind(&self.name)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
            if still_here.is_some() {
                failures.0.push((index, "receipt is from an earlier delivery".into()));
            }
        }
        failures.0.sort();
        Ok(failures)
    }

    async fn dead_letter(&self, receipt: &Receipt, reason: &str) -> Result<(), QueueError> {
        let (id, delivery) = parse_receipt(receipt)?;
        let moved = sqlx::query(
            "UPDATE messages SET queue = ?, visible_at = ?, reason = ? WHERE id = ? AND delivery = ? AND queue = ?",
        )
        .bind(&self.dead_letter_name)
        .bind(now_millis())
        .bind(reason)
        .bind(id)
        .bind(delivery)
        .bind(&self.name)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        if moved.rows_affected() == 0 {
            return Err(QueueError::InvalidReceipt(receipt.0.clone()));
        }
        Ok(())
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let rows =
            sqlx::query("SELECT id, body, receive_count, reason FROM messages WHERE queue = ? ORDER BY id LIMIT ?")
                .bind(&self.dead_letter_name)
                .bind(max as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
        Ok(rows.into_iter().map(|row| dead_letter_from_row(&row)).collect())
    }

    async fn take_dead_letters(&self, max: usize, hold: Duration) -> Result<Vec<DeadLetter>, QueueError> {
        let now = now_millis();
        let until = now.saturating_add(millis(hold));
        let rows = sqlx::query(
            "UPDATE messages SET visible_at = ?1
             WHERE id IN (SELECT id FROM messages WHERE queue = ?2 AND visible_at <= ?3 ORDER BY id LIMIT ?4)
             RETURNING id, body, receive_count, reason",
        )
        .bind(until)
        .bind(&self.dead_letter_name)
        .bind(now)
        .bind(max.min(MAX_BATCH) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let mut letters: Vec<DeadLetter> = rows.into_iter().map(|row| dead_letter_from_row(&row)).collect();
        letters.sort_by_key(|l| l.id.parse::<i64>().unwrap_or(i64::MAX));
        Ok(letters)
    }

    async fn delete_dead_letters(&self, receipts: &[Receipt]) -> Result<BatchFailures, QueueError> {
        if receipts.len() > MAX_BATCH {
            return Err(QueueError::BatchTooLarge(receipts.len()));
        }
        let mut failures = BatchFailures::default();
        let mut ids = Vec::with_capacity(receipts.len());
        for (index, receipt) in receipts.iter().enumerate() {
            match receipt.0.strip_prefix(DEAD_RECEIPT).and_then(|id| id.parse::<i64>().ok()) {
                Some(id) => ids.push(id),
                None => failures.0.push((index, format!("`{}` is not a dead-letter receipt", receipt.0))),
            }
        }
        if ids.is_empty() {
            return Ok(failures);
        }
        // One statement for the batch: one write transaction on a file several processes share.
        let mut query = QueryBuilder::new("DELETE FROM messages WHERE queue = ");
        query.push_bind(&self.dead_letter_name).push(" AND id IN (");
        let mut list = query.separated(", ");
        for id in ids {
            list.push_bind(id);
        }
        query.push(")");
        query.build().execute(&self.pool).await.map_err(|e| self.err(e))?;
        Ok(failures)
    }

    async fn redrive(&self) -> Result<u64, QueueError> {
        let moved = sqlx::query(
            "UPDATE messages SET queue = ?, visible_at = ?, receive_count = 0, reason = NULL WHERE queue = ?",
        )
        .bind(&self.name)
        .bind(now_millis())
        .bind(&self.dead_letter_name)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        self.arrivals.notify_waiters();
        Ok(moved.rows_affected())
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(queue = ?1 AND visible_at <= ?3), 0), COALESCE(SUM(queue = ?1 AND visible_at > ?3), 0),
                    COALESCE(SUM(queue = ?2), 0)
             FROM messages WHERE queue IN (?1, ?2)",
        )
        .bind(&self.name)
        .bind(&self.dead_letter_name)
        .bind(now_millis())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let count = |i: usize| u64::try_from(row.get::<i64, _>(i)).unwrap_or(0);
        Ok(QueueDepth { visible: count(0), in_flight: count(1), dead: count(2) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every per-message statement must seek the primary key: a plan that scans the queue makes
    /// each operation cost time proportional to the backlog.
    #[tokio::test]
    async fn per_message_statements_use_the_primary_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pool = open_queue_database(&dir.path().join("q.db")).await.expect("open");
        let plan = |rows: Vec<sqlx::sqlite::SqliteRow>| {
            rows.iter().map(|r| r.get::<String, _>(3)).collect::<Vec<_>>().join("; ")
        };

        let mut delete = QueryBuilder::new("EXPLAIN QUERY PLAN ");
        push_delete(&mut delete, "input", &[(1, 1), (2, 1)]);
        let delete_plan = plan(delete.build().fetch_all(&pool).await.expect("explain delete"));
        assert!(
            delete_plan.contains("PRIMARY KEY") && !delete_plan.contains("messages_by_visibility"),
            "{delete_plan}"
        );

        let receive_plan = plan(
            sqlx::query(
                "EXPLAIN QUERY PLAN UPDATE messages SET visible_at = 1 WHERE id IN (SELECT id FROM messages
                 WHERE queue = 'input' AND visible_at <= 1 ORDER BY visible_at, id LIMIT 10)",
            )
            .fetch_all(&pool)
            .await
            .expect("explain receive"),
        );
        assert!(
            receive_plan.contains("PRIMARY KEY") && receive_plan.contains("(queue=? AND visible_at<?)"),
            "{receive_plan}"
        );
        assert!(!receive_plan.contains("TEMP B-TREE"), "receive must not sort the backlog: {receive_plan}");
    }
}
