//! The grid's page: the manager's health, the queues' depths and the live workers over the
//! last day ([`super::samples`]), the queues now, the workers with the tasks each is running
//! (as of its last heartbeat), and the schedules with their next fire times and last runs.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use maud::html;

use super::auth::Caller;
use super::layout::{duration, respond, shell, time};
use super::samples::SAMPLE_EVERY;
use super::{failure, Dashboard};
use crate::chart;
use crate::manager::ManagerError;
use crate::service::path_encoding::encode_path;
use crate::service::ServiceError;

/// The span of the over-time charts.
const DAY_MS: i64 = 24 * 3600 * 1000;
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
    let samples = grid.analytics.grid_samples(now - DAY_MS).await?;
    let times: Vec<i64> = samples.iter().map(|s| s.at).collect();
    let queue_chart = chart::lines(
        &times,
        &[
            ("visible", "visible", samples.iter().map(|s| s.visible).collect()),
            ("in flight", "in-flight", samples.iter().map(|s| s.in_flight).collect()),
            ("dead letters", "dead", samples.iter().map(|s| s.dead).collect()),
        ],
    );
    let worker_chart = chart::lines(
        &times,
        &[
            ("workers", "workers", samples.iter().map(|s| s.workers).collect()),
            ("tasks held", "held", samples.iter().map(|s| s.tasks_held).collect()),
        ],
    );
    // The group answers without the database; a failure is a notice, not a failed page.
    let instances = match manager.instances() {
        Some(list) => Some(list.instances().await.map_err(|error| error.to_string())),
        None => None,
    };
    let utc_now = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now());
    let schedules = state.service.schedules_with_runs(utc_now).await?;
    let body = html! {
        h1 { "Grid" }
        h2 { "Manager" }
        p #health { "Health: " strong { (health.status) } " · active jobs: " (active) }
        @for line in health.describe() { p.notice { (line) } }
        h2 { "Over the last day" }
        div.charts {
            figure #queue-over-time {
                figcaption { "Queue depth (input and output queues)" }
                @match queue_chart { Some(svg) => (svg), None => p { "No sample in the last day: the manager samples every " (SAMPLE_EVERY.as_secs()) " s while it has work, and not while it is quiet." } }
            }
            figure #workers-over-time {
                figcaption { "Live workers and the tasks they hold" }
                @match worker_chart { Some(svg) => (svg), None => p { "Not sampled yet." } }
            }
        }
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
                                    li { a href=(format!("/ui/jobs/{}", encode_path(&task.job_id))) { (task.job_id) }
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
        h2 { "Instances" }
        @match &instances {
            None => p { "No worker group: this grid runs its workers itself (" code { "batchgrid run" } ")." },
            Some(Err(error)) => p.notice { "The worker group could not be read: " (error) },
            Some(Ok(list)) if list.is_empty() => p { "The worker group has no instances." },
            Some(Ok(list)) => table #instances {
                thead { tr { th { "Instance" } th { "Type" } th { "Lifecycle" } th { "Health" } th { "Protected" } th { "Worker" } th { "Running" } } }
                tbody {
                    @for instance in list {
                        // On AWS a worker's id starts with its instance's id (cli/worker.rs).
                        @let worker = workers.iter().filter(|w| w.id.starts_with(&instance.id)).max_by_key(|w| w.last_seen);
                        tr { td { (instance.id) } td { (instance.instance_type) } td { (instance.lifecycle) } td { (instance.health) }
                             td { @if instance.protected { "yes (busy)" } @else { "no" } }
                             td { @if let Some(worker) = worker { (worker.id) " (" (worker.state) ")" } @else { "–" } }
                             td { @if let Some(worker) = worker { (worker.current_tasks) } @else { "–" } } }
                    }
                }
            },
        }
        h2 { "Schedules" }
        @if schedules.is_empty() { p { "No schedules. A job file's " code { "schedule:" } " block adds one (" code { "batchgrid schedule add" } ")." } } @else {
            table #schedules {
                thead { tr { th { "Schedule" } th { "When" } th { "Next fire times" } th { "Last runs" } } }
                tbody {
                    @for schedule in &schedules {
                        tr {
                            td { (schedule.name) @if schedule.paused { " " strong { "paused" } } }
                            td { code { (schedule.cron) } " " (schedule.tz) }
                            td { @for next in schedule.next.iter().take(3) { (next) br; } @if schedule.next.is_empty() { "–" } }
                            td {
                                @for run in schedule.occurrences.iter().take(3) {
                                    (time(run.fire_time)) " "
                                    @match &run.job_id {
                                        Some(job) => a href=(format!("/ui/jobs/{}", encode_path(job))) { (format!("{:?}", run.state).to_lowercase()) },
                                        None => (format!("{:?}", run.state).to_lowercase()),
                                    }
                                    @if let Some(reason) = &run.reason { " (" (reason) ")" }
                                    br;
                                }
                                @if schedule.occurrences.is_empty() { "none yet" }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(respond(StatusCode::OK, shell("Grid", true, Some(caller.csrf()), body)))
}

pub(super) async fn page(State(state): State<Dashboard>, Extension(caller): Extension<Caller>) -> Response {
    render(&state, &caller).await.unwrap_or_else(failure)
}
