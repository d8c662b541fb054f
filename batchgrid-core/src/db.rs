//! Opening SQLite databases the way every embedded backend wants them: WAL so several worker
//! processes can read while one writes, a busy timeout so they queue for the write lock instead
//! of failing, and `synchronous=NORMAL`, which in WAL mode loses no committed transaction on a
//! process crash (only, at worst, the last ones on a power loss). Pages are memory-mapped, so a
//! process re-reading pages another process changed does not pay a syscall per page.
//!
//! Each process should use one connection per database: SQLite serialises writers anyway, and
//! its busy handler sleeps a millisecond or more on every collision, so writers of one process
//! are better queued by the pool than colliding inside SQLite.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

/// Opens (creating if needed) a SQLite database file as a small pool.
pub async fn open_sqlite(path: &Path, max_connections: u32) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(30))
        .pragma("temp_store", "memory")
        .pragma("mmap_size", "268435456");
    SqlitePoolOptions::new().max_connections(max_connections).min_connections(1).connect_with(options).await
}

/// Milliseconds since the Unix epoch: the time unit of every stored timestamp.
pub fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A duration as whole milliseconds, saturating.
pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
