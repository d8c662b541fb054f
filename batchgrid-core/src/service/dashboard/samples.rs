//! The grid over time: every [`SAMPLE_EVERY`] the manager records the queues' depths and the
//! live workers with the tasks they hold ([`GridSample`]), keeping [`KEPT`]; the grid page
//! draws the last day of them. Recorded in the analytics store so a restarted manager still
//! shows the hours before it.

use std::sync::Arc;
use std::time::Duration;

use crate::analytics::{GridSample, WorkerRecord};
use crate::manager::ManagerError;
use crate::service::{JobService, ServiceError};

/// How often the grid is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(15);
/// How long samples are kept.
pub const KEPT: Duration = Duration::from_secs(14 * 24 * 3600);
/// A worker silent for longer than this is not counted as alive.
const ALIVE_WITHIN_MS: i64 = 60_000;

/// Workers alive at `now` and the tasks they hold.
pub fn live_workers(workers: &[WorkerRecord], now: i64) -> (u64, u64) {
    let live: Vec<&WorkerRecord> =
        workers.iter().filter(|w| w.state != "stopped" && now - w.last_seen <= ALIVE_WITHIN_MS).collect();
    (live.len() as u64, live.iter().map(|w| u64::from(w.current_tasks)).sum())
}

/// Reads the grid now.
pub async fn sample(service: &JobService, now: i64) -> Result<GridSample, ServiceError> {
    let grid = service.manager().grid();
    let input = grid.tasks.depth().await.map_err(ManagerError::from)?;
    let output = grid.chain.depth().await.map_err(ManagerError::from)?;
    let (workers, tasks_held) = live_workers(&grid.analytics.workers().await?, now);
    Ok(GridSample {
        at: now,
        visible: input.visible + output.visible,
        in_flight: input.in_flight + output.in_flight,
        dead: input.dead + output.dead,
        workers,
        tasks_held,
    })
}

/// Samples the grid every [`SAMPLE_EVERY`] for as long as the process runs; a failed sample
/// (the database away) is logged and skipped, a gap in the charts.
pub fn start_sampling(service: Arc<JobService>) {
    start_sampling_every(service, SAMPLE_EVERY);
}

/// Samples the grid every `every`, and once after each wake while the manager is quiet (a
/// quiet grid has nothing to draw: no queue, no worker; its charts show the last sample,
/// taken as it went quiet, until the next wake).
pub fn start_sampling_every(service: Arc<JobService>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut cadence = service.manager().activity().cadence();
        loop {
            let now = crate::db::now_millis();
            let forget_before = now - i64::try_from(KEPT.as_millis()).unwrap_or(i64::MAX);
            let recorded = match sample(&service, now).await {
                Ok(sample) => service
                    .manager()
                    .grid()
                    .analytics
                    .record_grid_sample(&sample, forget_before)
                    .await
                    .map_err(ServiceError::from),
                Err(error) => Err(error),
            };
            if let Err(error) = recorded {
                tracing::warn!(%error, "could not sample the grid for the dashboard");
            }
            cadence.pace(every).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_live_workers_count() {
        let worker = |id: &str, state: &str, last_seen: i64, current_tasks: u32| WorkerRecord {
            id: id.into(),
            last_seen,
            state: state.into(),
            current_tasks,
            ..WorkerRecord::default()
        };
        let workers = [
            worker("a", "running", 100_000, 3),
            worker("b", "draining", 50_000, 1),
            worker("c", "running", 39_999, 5),
            worker("d", "stopped", 100_000, 0),
        ];
        assert_eq!(live_workers(&workers, 100_000), (2, 4), "a and b; c silent over a minute, d stopped");
    }
}
