//! `worker drain`: an operator's request, kept in the workers table, that one worker take no
//! new task and exit after its current ones. The worker's process polls its row and then shuts
//! the worker down as SIGTERM would (it stops receiving, finishes what it runs within its drain
//! deadline, exits); on an instance it first asks the group to terminate the instance, whose
//! lifecycle hook drains the worker as on any scale-in.

use std::sync::Arc;
use std::time::Duration;

use crate::analytics::AnalyticsStore;

/// How often a worker looks for a drain request: one small read, and the operator waits at
/// most this long for the worker to stop taking tasks.
pub const DRAIN_POLL: Duration = Duration::from_secs(2);

/// Resolves once a drain of `worker_id` has been asked for. A store that cannot answer is
/// logged and asked again: an outage must not stop a worker, nor a drain be lost.
pub async fn requested(analytics: Arc<dyn AnalyticsStore>, worker_id: String, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        match analytics.drain_requested(&worker_id).await {
            Ok(true) => {
                tracing::info!(worker = %worker_id, "drain requested: taking no new task");
                return;
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "could not read whether a drain is requested"),
        }
    }
}
