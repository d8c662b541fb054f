//! A job's page: its stages' progress, tasks done over time and the task-time histogram (SVG),
//! percentiles, stragglers (tasks running more than twice their stage's p99), failed tasks
//! with the tail of their errors, its history, its report once it has ended, and its results
//! with download links.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use maud::html;

use super::actions::Action;
use super::auth::Caller;
use super::jobs::{rate_and_eta, totals};
use super::layout::{compute_cost, duration, progress, respond, shell, time};
use super::stragglers::{self, stragglers};
use super::{failure, Dashboard};
use crate::analytics::TimeHistogram;
use crate::chart;
use crate::service::path_encoding::encode_path;
use crate::service::ServiceError;
use crate::spec::JobSpec;

/// Characters of a failed task's error shown (its tail: the last lines say what went wrong).
const ERROR_TAIL: usize = 400;
/// Result objects listed.
const RESULTS_SHOWN: usize = 200;
/// Failed tasks listed.
const FAILED_SHOWN: usize = 100;
/// Stragglers listed (the most behind).
const STRAGGLERS_SHOWN: usize = 50;

/// A time read from the buckets, marked as the estimate it is.
fn approx(ms: Option<u64>) -> String {
    ms.map_or_else(|| "–".to_owned(), |ms| format!("≈{}", duration(i64::try_from(ms).unwrap_or(i64::MAX))))
}

/// The last `limit` characters of `text`, on a character boundary.
fn tail(text: &str, limit: usize) -> String {
    let count = text.chars().count();
    if count <= limit {
        return text.to_owned();
    }
    let skipped: String = text.chars().skip(count - limit).collect();
    format!("…{skipped}")
}

async fn render(state: &Dashboard, caller: &Caller, id: &str) -> Result<Response, ServiceError> {
    let service = &state.service;
    let manager = service.manager();
    let analytics = &manager.grid().analytics;
    let status = service.status(id).await?;
    // The rollups: a few hundred rows however many tasks the job has.
    let times = analytics.task_times(id).await?;
    let completions = analytics.completions(id).await?;
    let failed = analytics.failed_tasks(id).await?;
    // Only a running job has stragglers. A worker row that cannot be read costs this section,
    // not the page.
    let workers = if status.state.is_terminal() { Ok(Vec::new()) } else { analytics.workers().await };
    let history = service.history(id).await?;
    let ended = status.state.is_terminal();
    let report = if ended { manager.stored_report(id).await? } else { None };
    // The first page only (one LIST on S3): a job may have written a million results, which
    // `batchgrid results --download` fetches.
    let results = match analytics.job(id).await?.map(|job| serde_json::from_str::<JobSpec>(&job.spec)) {
        Some(Ok(spec)) if ended => manager.result_page(id, &spec, None, RESULTS_SHOWN).await?,
        _ => crate::manager::results::ResultPage::default(),
    };
    let now = crate::db::now_millis();
    let (done, expected) = totals(&status.stages);
    let (rate, eta) = rate_and_eta(&status.stages, status.started_at, status.finished_at, now);
    let mut all_times = TimeHistogram::default();
    for stage in &times {
        all_times.merge(&stage.histogram);
    }
    let stage_times = |stage: u32| times.iter().find(|t| t.stage == stage).map(|t| &t.histogram);
    let stage_names: Vec<&str> = status.stages.iter().map(|s| s.name.as_str()).collect();
    let behind = match &workers {
        Ok(workers) => Ok(stragglers(id, workers, &times, now)),
        Err(error) => Err(error.to_string()),
    };
    let base = format!("/ui/jobs/{}", encode_path(id));
    let body = html! {
        h1 { (status.name) " " span class=(format!("state state-{}", status.state.as_str())) #state { (status.state.as_str()) } }
        dl.facts {
            dt { "Id" } dd { (status.id) }
            dt { "Priority" } dd { (status.priority) @if status.paused { " · " strong #paused { "paused" } } }
            dt { "Progress" } dd #progress data-done=(done) { (progress(done, expected)) }
            dt { "Submitted" } dd { (time(status.submitted_at)) }
            @if let Some(started) = status.started_at { dt { "Started" } dd { (time(started)) } }
            @if let Some(finished) = status.finished_at { dt { "Finished" } dd { (time(finished)) } }
            @if let Some(rate) = rate { dt { "Throughput" } dd { (format!("{rate:.2}")) " tasks/s" } }
            @if let Some(eta) = eta { dt { "ETA" } dd { (duration(eta)) } }
            dt { "Cost so far" } dd #cost { (compute_cost(all_times.sum_ms(), manager.compute_price()))
                @if let Some(price) = manager.compute_price() {
                    small { " — done tasks' time at " (price.instance_type) "'s on-demand $" (format!("{:.4}", price.hourly_usd))
                        "/h ÷ " (price.tasks_per_instance) " tasks per instance; the report prices the instance-hours as used" }
                } }
            @if let Some(error) = &status.error { dt { "Error" } dd.notice { (error) } }
            @if let Some(note) = &status.watchdog { dt { "Watchdog" } dd.notice { (note) } }
        }
        p.actions {
            @for action in Action::offered(&status, !failed.is_empty()) {
                a.danger href=(format!("{base}/{}", action.name())) { (action.name()) "…" } " "
            }
        }
        h2 { "Stages" }
        table #stages {
            thead { tr { th { "Stage" } th { "Kind" } th { "Progress" } th { "Failed" } th { "Retrying" } th { "p50" } th { "p99" } } }
            tbody {
                @for stage in &status.stages {
                    @let histogram = stage_times(stage.stage);
                    tr { td { (stage.name) } td { (format!("{:?}", stage.kind).to_lowercase()) }
                         td { (progress(stage.done, stage.expected)) } td { (stage.failed) } td { (stage.retrying) }
                         td { (approx(histogram.and_then(|h| h.percentile(0.5)))) }
                         td { (approx(histogram.and_then(|h| h.percentile(0.99)))) } }
                }
            }
        }
        h2 { "Task times" }
        p #percentiles { "p50 " (approx(all_times.percentile(0.5))) " · p90 " (approx(all_times.percentile(0.9)))
            " · p99 " (approx(all_times.percentile(0.99))) " · max " (approx(all_times.max_ms()))
            " (" (all_times.count()) " done tasks; within 6%, from log-spaced buckets)" }
        div.charts {
            figure #done-over-time {
                figcaption { "Tasks done over time" }
                @match chart::completions(&completions, if ended { status.finished_at.unwrap_or(now) } else { now }) {
                    Some(svg) => (svg),
                    None => p { "No task has finished yet." },
                }
            }
            figure #task-times {
                figcaption { "Task-time histogram" }
                @match chart::histogram(&all_times) {
                    Some(svg) => (svg),
                    None => p { "No task has finished yet." },
                }
            }
        }
        @if !ended {
            h2 { "Stragglers" }
            p.hint { "Tasks running more than " (stragglers::FACTOR) "× their stage's p99, once the stage has "
                (stragglers::MIN_DONE) " done tasks. From the workers' heartbeats (every "
                (humantime::format_duration(crate::worker::HEARTBEAT_PERIOD)) "), so up to one heartbeat behind; a worker silent for "
                (humantime::format_duration(stragglers::STALE_AFTER)) " or stopped is left out." }
            @match &behind {
                Err(error) => p.notice #stragglers { "Cannot read the workers' running tasks: " (error) },
                Ok(behind) if behind.is_empty() => p #stragglers { "None." },
                Ok(behind) => {
                    table #stragglers {
                        thead { tr { th { "Stage" } th { "Task" } th { "Worker" } th { "Running for" } th { "Stage p99" } th { "Ratio" } } }
                        tbody {
                            @for straggler in behind.iter().take(STRAGGLERS_SHOWN) {
                                tr { td { (stage_names.get(straggler.stage as usize).copied().unwrap_or("?")) } td { (straggler.task_id) }
                                     td { (straggler.worker_id) } td { (duration(i64::try_from(straggler.running_ms).unwrap_or(i64::MAX))) }
                                     td { (approx(Some(straggler.p99_ms))) } td { (format!("{:.1}×", straggler.ratio)) } }
                            }
                        }
                    }
                    @if behind.len() > STRAGGLERS_SHOWN { p { "… and " (behind.len() - STRAGGLERS_SHOWN) " more." } }
                }
            }
        }
        h2 { "Failed tasks" }
        @if failed.is_empty() { p { "None." } } @else {
            table #failed {
                thead { tr { th { "Stage" } th { "Task" } th { "Attempts" } th { "Worker" } th { "Last error (tail)" } th { "Output" } } }
                tbody {
                    @for task in failed.iter().take(FAILED_SHOWN) {
                        tr { td { (stage_names.get(task.stage as usize).copied().unwrap_or("?")) } td { (task.task_id) }
                             td { (task.attempts) } td { (task.worker_id.as_deref().unwrap_or("")) }
                             td { pre { (tail(task.last_error.as_deref().unwrap_or(""), ERROR_TAIL)) } }
                             td { @if let Some(stage) = stage_names.get(task.stage as usize) {
                                 @let logs = format!("{base}/logs/{}/{}", encode_path(stage), encode_path(&task.task_id));
                                 a href=(format!("{logs}/stderr")) { "stderr" } " " a href=(format!("{logs}/stdout")) { "stdout" }
                             } } }
                    }
                }
            }
            @if failed.len() > FAILED_SHOWN { p { "… and " (failed.len() - FAILED_SHOWN) " more." } }
        }
        h2 { "History" }
        table #history {
            thead { tr { th { "When" } th { "From" } th { "To" } th { "By" } th { "Reason" } } }
            tbody {
                @for entry in &history {
                    tr { td { (time(entry.at)) } td { (entry.from.map(|s| s.as_str()).unwrap_or("–")) } td { (entry.to.as_str()) }
                         td { (entry.actor) } td { (entry.reason.as_deref().unwrap_or("")) } }
                }
            }
        }
        @if ended {
            h2 { "Results" }
            @if results.entries.is_empty() { p { "No result objects." } } @else {
                ul #results {
                    @for (path, object) in &results.entries {
                        li { a href=(format!("{base}/results/{}", encode_path(path))) { (path) } " (" (object.size) " bytes)" }
                    }
                }
                @if results.next.is_some() {
                    p { "The first " (RESULTS_SHOWN) " results; " code { "batchgrid results " (status.id) " --download DIR" } " fetches them all." }
                }
            }
            h2 { "Report" }
            @if let Some(report) = &report { pre #report { (report.render_text()) } } @else { p { "No report was stored." } }
        }
    };
    Ok(respond(StatusCode::OK, shell(&status.name, !ended, Some(caller.csrf()), body)))
}

pub(super) async fn page(
    State(state): State<Dashboard>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    render(&state, &caller, &id).await.unwrap_or_else(failure)
}

/// A result object, through the same streaming download as the API's.
pub(super) async fn result(State(state): State<Dashboard>, Path((id, path)): Path<(String, String)>) -> Response {
    match crate::service::api::download(&state.service, &id, &path).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// A task's captured output, as plain text (never HTML: it is whatever the command printed).
pub(super) async fn log(
    State(state): State<Dashboard>,
    Path((id, stage, task, stream)): Path<(String, String, String, String)>,
) -> Response {
    match state.service.task_log(&id, &stage, &task, &stream).await {
        Ok(bytes) => {
            let headers = [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")];
            (headers, bytes).into_response()
        }
        Err(error) => failure(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_of_an_error() {
        assert_eq!(tail("short", 10), "short");
        assert_eq!(tail("0123456789abc", 3), "…abc");
        assert_eq!(tail("ééééé", 2), "…éé");
    }
}
