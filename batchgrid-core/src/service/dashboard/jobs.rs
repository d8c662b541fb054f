//! The jobs page: every job (newest first) with its state, progress, throughput and ETA,
//! filtered by state and name through the query string, so a filtered view can be bookmarked.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use maud::html;
use serde::Deserialize;

use super::auth::Caller;
use super::layout::{compute_cost, duration, progress, respond, shell, time};
use super::{failure, Dashboard};
use crate::analytics::{JobList, JobQuery, JobState, StageProgress};
use crate::service::path_encoding::encode_path;
use crate::service::ServiceError;

/// Jobs shown on one page.
const SHOWN: u32 = 200;

/// The filters.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Filters {
    /// A state, or empty for all.
    #[serde(default)]
    state: String,
    /// A part of the job's name (case-insensitive), or empty.
    #[serde(default)]
    name: String,
}

/// Done and expected tasks over every stage (`None` while a stage's size is unknown).
pub(super) fn totals(stages: &[StageProgress]) -> (u64, Option<u64>) {
    let done = stages.iter().map(|s| s.done).sum();
    let expected = stages.iter().map(|s| s.expected).sum::<Option<u64>>();
    (done, expected)
}

/// Tasks done per second since the job started (until it ended), and, while it runs, the
/// time left by the service's ETA (the same as `batchgrid status` and the API show).
pub(super) fn rate_and_eta(
    stages: &[StageProgress],
    started_at: Option<i64>,
    ended_at: Option<i64>,
    now: i64,
) -> (Option<f64>, Option<i64>) {
    let Some(started) = started_at else { return (None, None) };
    let (done, _) = totals(stages);
    let elapsed = (ended_at.unwrap_or(now) - started).max(1) as f64 / 1000.0;
    let eta = match ended_at {
        None => crate::service::eta::estimate(stages, started, now)
            .map(|eta| i64::try_from(eta.remaining.as_millis()).unwrap_or(i64::MAX)),
        Some(_) => None,
    };
    (Some(done as f64 / elapsed), eta)
}

async fn render(state: &Dashboard, caller: &Caller, filters: Filters) -> Result<Response, ServiceError> {
    let analytics = &state.service.manager().grid().analytics;
    let wanted = if filters.state.is_empty() { None } else { JobState::parse(&filters.state) };
    let unknown_state = !filters.state.is_empty() && wanted.is_none();
    // Two queries whatever the history holds: the page of jobs, then their stages.
    let list = if unknown_state {
        JobList::default()
    } else {
        let query = JobQuery { state: wanted, name: Some(filters.name.clone()), limit: SHOWN };
        analytics.job_list(&query).await?
    };
    let ids: Vec<String> = list.jobs.iter().map(|job| job.id.clone()).collect();
    let mut stages = analytics.stages_of(&ids).await?;
    let task_ms = analytics.task_ms_of(&ids).await?;
    let price = state.service.manager().compute_price();
    let total = list.total;
    let now = crate::db::now_millis();
    let rows: Vec<_> = list
        .jobs
        .into_iter()
        .map(|job| {
            let job_stages = stages.remove(&job.id).unwrap_or_default();
            (job, job_stages)
        })
        .collect();
    let live = rows.iter().any(|(job, _)| !job.state.is_terminal());
    let body = html! {
        h1 { "Jobs" }
        form.filters method="get" action="/ui/jobs" {
            label { "State "
                select name="state" {
                    option value="" selected[filters.state.is_empty()] { "any" }
                    @for s in JobState::ALL { option value=(s.as_str()) selected[filters.state == s.as_str()] { (s.as_str()) } }
                }
            }
            label { "Name " input type="search" name="name" value=(filters.name); }
            button type="submit" { "Filter" }
        }
        @if unknown_state { p.notice { "There is no state “" (filters.state) "”." } }
        @if total > u64::from(SHOWN) { p { "Showing the newest " (SHOWN) " of " (total) " jobs." } }
        table #jobs {
            thead { tr { th { "Job" } th { "State" } th { "Progress" } th { "Tasks/s" } th { "ETA" } th { "Cost so far" } th { "Submitted" } th { "Duration" } } }
            tbody {
                @for (job, stages) in &rows {
                    @let (done, expected) = totals(stages);
                    @let (rate, eta) = rate_and_eta(stages, job.started_at, job.finished_at, now);
                    tr.job data-job=(job.id) data-done=(done) {
                        td { a href=(format!("/ui/jobs/{}", encode_path(&job.id))) { (job.name) } br; small { (job.id) } }
                        td { span class=(format!("state state-{}", job.state.as_str())) { (job.state.as_str()) } }
                        td { (progress(done, expected)) }
                        td { @if let Some(rate) = rate { (format!("{rate:.1}")) } @else { "–" } }
                        td { @if let Some(eta) = eta { (duration(eta)) } @else { "–" } }
                        td { (compute_cost(task_ms.get(&job.id).copied().unwrap_or(0), price)) }
                        td { (time(job.submitted_at)) }
                        td { @if let Some(started) = job.started_at { (duration(job.finished_at.unwrap_or(now) - started)) } }
                    }
                }
                @if rows.is_empty() { tr { td colspan="8" { "No jobs" @if !filters.state.is_empty() || !filters.name.is_empty() { " match these filters" } "." } } }
            }
        }
    };
    Ok(respond(StatusCode::OK, shell("Jobs", live, Some(caller.csrf()), body)))
}

pub(super) async fn page(
    State(state): State<Dashboard>,
    Extension(caller): Extension<Caller>,
    Query(filters): Query<Filters>,
) -> Response {
    render(&state, &caller, filters).await.unwrap_or_else(failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::StageKind;

    #[test]
    fn throughput_and_eta() {
        let stages = [StageProgress {
            stage: 0,
            name: "work".into(),
            kind: StageKind::Map,
            expected: Some(40),
            done: 10,
            failed: 0,
            retrying: 0,
        }];
        // 10 done in 5 s, 30 to go: 15 s at 2 per second.
        let (rate, eta) = rate_and_eta(&stages, Some(0), None, 5_000);
        assert_eq!(rate, Some(2.0));
        assert_eq!(eta, Some(15_000));
        assert_eq!(rate_and_eta(&stages, Some(0), Some(5_000), 9_000).1, None, "an ended job has no ETA");
        assert_eq!(rate_and_eta(&stages, None, None, 5_000), (None, None));
    }
}
