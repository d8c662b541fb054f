//! The conformance suites against the embedded backends.

use std::sync::Arc;

use batchgrid_core::analytics::SqliteAnalytics;
use batchgrid_core::conformance;
use batchgrid_core::queue::sqlite::open_queue_database;
use batchgrid_core::queue::{SqliteQueue, TaskQueue};
use batchgrid_core::store::LocalStore;

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
