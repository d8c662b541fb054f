//! The grid's page: the manager's health, the queues' depths and the workers with their state
//! and the tasks each is running (as of its last heartbeat).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use maud::html;

use super::auth::Caller;
use super::layout::{duration, respond, shell, time, url_path};
use super::{failure, Dashboard};
use crate::manager::ManagerError;
use crate::service::ServiceError;

/// Running tasks listed per worker (the longest running: the heartbeat stores them first).
const RUNNING_SHOWN: usize = 10;

async fn render(state: &Dashboard, caller: &Caller) -> Result<Response, ServiceError> {
    let manager = state.service.manager();
    let grid = manager.grid();
    let health = state.service.health().await;
    let input = grid.tasks.depth().await.map_err(ManagerError::from)?;
    let output = grid.chain.depth().await.map_err(ManagerError::from)?;
    let workers = grid.analytics.workers().await?;
    let active = grid.analytics.active_jobs().await?.len();
    let now = crate::db::now_millis();
    let body = html! {
        h1 { "Grid" }
        h2 { "Manager" }
        p #health { "Health: " strong { (health.status) } " · active jobs: " (active) }
        @for line in health.describe() { p.notice { (line) } }
        h2 { "Queues" }
        table #queues {
            thead { tr { th { "Queue" } th { "Visible" } th { "In flight" } th { "Dead letters" } } }
            tbody {
                @for (name, depth) in [("input", input), ("output", output)] {
                    tr { td { (name) } td { (depth.visible) } td { (depth.in_flight) } td { (depth.dead) } }
                }
            }
        }
        h2 { "Workers" }
        table #workers {
            thead { tr { th { "Worker" } th { "Host" } th { "PID" } th { "State" } th { "Current tasks (running for)" } th { "Started" } th { "Last seen" } th { "Done" } th { "Failed" } } }
            tbody {
                @for worker in &workers {
                    tr { td { (worker.id) } td { (worker.host) } td { (worker.pid) } td { (worker.state) } td { (worker.current_tasks)
                        // A stopped worker's last list is what it ran before it stopped: not now.
                        @if worker.state != "stopped" && !worker.running.is_empty() {
                            ul.running {
                                @for task in worker.running.iter().take(RUNNING_SHOWN) {
                                    li { a href=(format!("/ui/jobs/{}", url_path(&task.job_id))) { (task.job_id) }
                                         " / stage " (task.stage) " / " (task.task_id) " · " (duration(now.saturating_sub(task.started_at))) }
                                }
                                @if worker.running.len() > RUNNING_SHOWN { li { "… and " (worker.running.len() - RUNNING_SHOWN) " more" } }
                            }
                        } }
                         td { (time(worker.started_at)) } td { (time(worker.last_seen)) } td { (worker.tasks_done) } td { (worker.tasks_failed) } }
                }
                @if workers.is_empty() { tr { td colspan="9" { "No worker has registered." } } }
            }
        }
    };
    Ok(respond(StatusCode::OK, shell("Grid", true, Some(caller.csrf()), body)))
}

pub(super) async fn page(State(state): State<Dashboard>, Extension(caller): Extension<Caller>) -> Response {
    render(&state, &caller).await.unwrap_or_else(failure)
}
