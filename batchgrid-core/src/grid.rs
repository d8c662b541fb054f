//! The backends of one grid, bundled, and the embedded grid: everything under one state
//! directory (`objects/` for the object store, `queue.db`, `analytics.db`), shared by the
//! manager and every worker process on the machine.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::analytics::{AnalyticsError, AnalyticsStore, SqliteAnalytics};
use crate::queue::sqlite::open_queue_database;
use crate::queue::{QueueError, SqliteQueue, TaskQueue};
use crate::store::{LocalStore, ObjectStore, StoreError};

/// Name of the queue that feeds first-stage and reduce tasks.
pub const TASK_QUEUE: &str = "input";
/// Name of the queue that carries completed tasks on to the next stage.
pub const CHAIN_QUEUE: &str = "output";

/// The backends the manager and workers share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Grid {
    /// Input, staged chunks and results.
    pub store: Arc<dyn ObjectStore>,
    /// The input queue: first-stage tasks and reduce tasks.
    pub tasks: Arc<dyn TaskQueue>,
    /// The output queue: completed tasks, which are the next map stage's tasks.
    pub chain: Arc<dyn TaskQueue>,
    /// Progress and statistics.
    pub analytics: Arc<dyn AnalyticsStore>,
}

/// Failures opening a grid's backends.
#[derive(Debug, thiserror::Error)]
pub enum GridError {
    /// The state directory could not be created.
    #[error("state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The object store failed to open.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The queue failed to open.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The analytics store failed to open.
    #[error(transparent)]
    Analytics(#[from] AnalyticsError),
}

/// Settings of an embedded grid.
#[derive(Debug, Clone)]
pub struct EmbeddedGridSettings {
    /// Deliveries after which a message is dead-lettered even if no worker said so (a task
    /// whose worker keeps dying).
    pub max_receives: u32,
}

impl Grid {
    /// Opens (creating if needed) the embedded grid under `state_dir`.
    pub async fn open_embedded(state_dir: &Path, settings: &EmbeddedGridSettings) -> Result<Self, GridError> {
        std::fs::create_dir_all(state_dir)
            .map_err(|source| GridError::StateDir { path: state_dir.to_path_buf(), source })?;
        let store = LocalStore::open(state_dir.join("objects"))?;
        let queue_db = open_queue_database(&state_dir.join("queue.db")).await?;
        let analytics = SqliteAnalytics::open(&state_dir.join("analytics.db")).await?;
        Ok(Self {
            store: Arc::new(store),
            tasks: Arc::new(SqliteQueue::new(queue_db.clone(), TASK_QUEUE, settings.max_receives)),
            chain: Arc::new(SqliteQueue::new(queue_db, CHAIN_QUEUE, settings.max_receives)),
            analytics: Arc::new(analytics),
        })
    }
}
