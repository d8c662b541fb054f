//! The manager's HTTP API. Every route wants `Authorization: Bearer TOKEN` (health too: its
//! errors name the grid's endpoints, and the design's rule is one token for everything); errors are JSON
//! `{"error": "..."}` (with `field` and `line` for an invalid job).
//!
//! | method | path | does |
//! |---|---|---|
//! | POST | `/v1/jobs?input=&origin=&after=&priority=` | submit a job (YAML or JSON body) → 201 `{"job_id"}`; `after` (comma-separated names or ids) replaces the document's `after:`, `priority` its `priority`; with `at` (RFC 3339) it runs once then → 202 `{"schedule","at"}` |
//! | GET | `/v1/jobs` | every job, newest first |
//! | GET | `/v1/jobs/{id}` | a job with per-stage progress |
//! | GET | `/v1/jobs/{id}/results?after=&limit=&urls=` | a page of result objects (name order, `limit` at most 1,000, default 1,000; `next` is the `after` of the following page), with presigned GET URLs when `urls=true` and the store is S3; the first page carries the report once the job has ended |
//! | GET | `/v1/jobs/{id}/results/{path}` | one result object's bytes, streamed as the store sends them (`path` percent-encoded; 400 for a path that leaves the results) |
//! | GET | `/v1/jobs/{id}/logs/{stage}/{task}/{stdout\|stderr}` | a command task's captured output (text, at most 1 MiB) |
//! | POST | `/v1/jobs/{id}/cancel` | cancel → 202 |
//! | POST | `/v1/jobs/{id}/retry` | run a failed job's failed tasks again → 202 `{"tasks",...}`; 409 if it is not failed |
//! | POST | `/v1/jobs/{id}/redrive?stage=&task=&error=` | run the failed tasks picked again (failed or running job) → 202 |
//! | POST | `/v1/jobs/{id}/pause`, `/resume` | no new task of the job starts / they start again → 204 |
//! | PUT | `/v1/jobs/{id}/priority` | `{"priority": N}`, 0..=100 → 204 |
//! | GET | `/v1/jobs/{id}/history` | every state change: time, from, to, reason, actor |
//! | GET | `/v1/workers` | workers and their statistics |
//! | POST | `/v1/workers/{id}/drain` | the worker takes no new task and exits after its current ones → 202 |
//! | POST | `/v1/schedules?origin=` | add a schedule (a job document with `schedule:`) → 201 |
//! | GET | `/v1/schedules` | every schedule with its next fire time |
//! | GET | `/v1/schedules/{name}` | one schedule: next fire times, recent occurrences |
//! | POST | `/v1/schedules/{name}/pause`, `/resume` | pause or resume → 204 |
//! | POST | `/v1/schedules/{name}/trigger` | fire one occurrence now → 201 |
//! | DELETE | `/v1/schedules/{name}` | delete it and its occurrences → 204 |
//! | GET | `/metrics` | the grid in the Prometheus (OpenMetrics) text format; see [`super::metrics`] |
//! | GET | `/ui/...` | the dashboard in a browser; see [`super::dashboard`] |
//! | GET | `/v1/health` | `{"status":"ok"}` or `{"status":"degraded","analytics":{"error","since",...}}` |

mod schedules;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{JobService, ServiceError};
use crate::analytics::{HistoryEntry, WorkerRecord};
use crate::manager::{HealthReport, RedriveFilter, Redriven};
use crate::report::JobReport;
use crate::secret::{constant_time_eq, Secret};
use crate::spec::{JobSpec, Overrides};
use crate::store::StoreError;

/// Largest job document accepted (job files are configuration, not data).
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// An error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, in one line.
    pub error: String,
    /// For an invalid job: the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For an invalid job: the line in the submitted document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// The answer to a submission.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Submitted {
    /// The new job's id.
    pub job_id: String,
}

/// One result object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultObject {
    /// Path relative to the job's output.
    pub path: String,
    /// Object key in the results bucket.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// A presigned GET URL of the object, when asked for and the store has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A page of a job's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// Job id.
    pub job_id: String,
    /// The final stage's result objects of this page (complete once the job has completed).
    pub objects: Vec<ResultObject>,
    /// The `after` of the next page; `None` on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// The report, once the job has ended (first page only).
    pub report: Option<JobReport>,
}

/// Result objects per page unless the caller asks for fewer; S3's own page size, so a page
/// costs one LIST.
pub const RESULTS_PAGE_MAX: usize = 1000;

/// How long a presigned result URL stays valid: long enough to work through a page of large
/// files, short enough that a leaked URL soon stops working.
const PRESIGNED_FOR: std::time::Duration = std::time::Duration::from_secs(3600);

/// Query parameters of a results page.
#[derive(Debug, Default, Deserialize)]
struct ResultsQuery {
    /// List names after this one.
    after: Option<String>,
    /// At most this many (1..=1000).
    limit: Option<usize>,
    /// Add presigned GET URLs where the store has them.
    #[serde(default)]
    urls: bool,
}

/// Query parameters of a submission.
#[derive(Debug, Deserialize)]
struct SubmitQuery {
    /// Replaces the document's `input.path` (the client's upload, `s3://...`).
    input: Option<String>,
    /// Name of the document for error messages (the client's file name).
    origin: Option<String>,
    /// Replaces the document's `after:`: job names or ids, comma-separated.
    after: Option<String>,
    /// Runs the job once at this time (RFC 3339 with its offset) instead of now.
    at: Option<String>,
    /// Replaces the document's `priority`.
    priority: Option<u8>,
}

/// The body of a priority change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PriorityChange {
    /// 0..=100, higher first.
    pub priority: u8,
}

/// An error answer with its status (the dashboard sends a download's errors through it too).
pub(in crate::service) struct ApiError(StatusCode, ErrorBody);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        let status = match &error {
            ServiceError::BadJob(_) | ServiceError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::Ended { .. } | ServiceError::Refused(_) => StatusCode::CONFLICT,
            ServiceError::Manager(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let (field, line) = match &error {
            ServiceError::BadJob(e) => (Some(e.field.clone()), e.position.map(|p| p.line)),
            ServiceError::Invalid { field, .. } => (Some(field.clone()), None),
            _ => (None, None),
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(%error, "request failed");
        }
        ApiError(status, ErrorBody { error: error.to_string(), field, line })
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError(status, ErrorBody { error: message.into(), field: None, line: None })
}

#[derive(Clone)]
struct AppState {
    service: Arc<JobService>,
    token: Arc<Secret>,
}

/// The API's routes over `service`, guarded by `token`.
pub fn router(service: Arc<JobService>, token: Secret) -> Router {
    let activity = service.manager().activity().clone();
    let state = AppState { service, token: Arc::new(token) };
    Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(status))
        .route("/v1/jobs/{id}/results", get(results))
        .route("/v1/jobs/{id}/results/{*path}", get(result_object))
        .route("/v1/jobs/{id}/logs/{stage}/{task}/{stream}", get(task_log))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/retry", post(retry))
        .route("/v1/jobs/{id}/redrive", post(redrive))
        .route("/v1/jobs/{id}/pause", post(pause))
        .route("/v1/jobs/{id}/resume", post(resume))
        .route("/v1/jobs/{id}/priority", put(priority))
        .route("/v1/jobs/{id}/history", get(history))
        .route("/v1/workers", get(workers))
        .route("/v1/workers/{id}/drain", post(drain_worker))
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics))
        .merge(schedules::routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), authorize))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state.clone())
        // The dashboard answers a browser without the bearer header (a cookie or the login
        // form), so it sits beside the bearer-only layer, with its own guard.
        .merge(super::dashboard::router(state.service, (*state.token).clone()))
        .layer(axum::middleware::from_fn_with_state(activity, wake_on_write))
}

/// Wakes the manager's loops after any request that may have written (anything but a read,
/// unless refused as the caller's error, which changes nothing): a new job, schedule or one-off
/// run, a retry, a resumed job... A server error may have written half, so it wakes them too.
/// Reads leave the loops resting; they may open a connection, which the pool closes again once
/// it has sat idle.
async fn wake_on_write(State(activity): State<crate::manager::Activity>, request: Request, next: Next) -> Response {
    let reads = matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    let response = next.run(request).await;
    // After the handler: a schedule pass woken before the schedule was stored would miss it.
    if !reads && !response.status().is_client_error() {
        activity.wake();
    }
    response
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<JobService>,
    token: Secret,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(service, token)).with_graceful_shutdown(shutdown).await
}

async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), state.token.expose().as_bytes()) => next.run(request).await,
        _ => {
            let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

async fn submit(
    State(state): State<AppState>,
    Query(query): Query<SubmitQuery>,
    body: String,
) -> Result<Response, ApiError> {
    let after = query.after.iter().flat_map(|a| a.split(',')).map(str::trim).filter(|a| !a.is_empty());
    let overrides = Overrides {
        input: query.input.map(PathBuf::from),
        output: None,
        after: after.map(str::to_owned).collect(),
        priority: query.priority,
    };
    let origin = query.origin.unwrap_or_else(|| "request body".to_owned());
    if let Some(at) = &query.at {
        let at = super::parse_at(at).map_err(|message| {
            ApiError(StatusCode::BAD_REQUEST, ErrorBody { error: message, field: Some("at".into()), line: None })
        })?;
        let now = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now());
        let deferred = state.service.submit_at(&body, &origin, &overrides, at, now).await?;
        return Ok((StatusCode::ACCEPTED, Json(deferred)).into_response());
    }
    let job_id = state.service.submit(&body, &origin, &overrides).await?;
    Ok((StatusCode::CREATED, Json(Submitted { job_id })).into_response())
}

async fn list(State(state): State<AppState>) -> Result<Json<Vec<super::JobStatus>>, ApiError> {
    Ok(Json(state.service.jobs().await?))
}

async fn status(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<super::JobStatus>, ApiError> {
    Ok(Json(state.service.status(&id).await?))
}

async fn job_spec(service: &JobService, id: &str) -> Result<JobSpec, ApiError> {
    let analytics = &service.manager().grid().analytics;
    let job = analytics.job(id).await.map_err(ServiceError::from)?.ok_or_else(|| ServiceError::NotFound(id.into()))?;
    serde_json::from_str(&job.spec)
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, format!("stored spec unreadable: {e}")))
}

async fn results(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<ResultsQuery>,
) -> Result<Json<Results>, ApiError> {
    let limit = query.limit.unwrap_or(RESULTS_PAGE_MAX);
    if !(1..=RESULTS_PAGE_MAX).contains(&limit) {
        return Err(ServiceError::Invalid {
            field: "limit".into(),
            message: format!("must be 1..={RESULTS_PAGE_MAX}"),
        }
        .into());
    }
    let spec = job_spec(&state.service, &id).await?;
    let manager = state.service.manager();
    let page = manager.result_page(&id, &spec, query.after.as_deref(), limit).await.map_err(ServiceError::from)?;
    let store = &manager.grid().store;
    let mut objects = Vec::with_capacity(page.entries.len());
    for (path, object) in page.entries {
        let url = if query.urls {
            store.presigned_get(&object.key, PRESIGNED_FOR).await.map_err(|e| ServiceError::Manager(e.into()))?
        } else {
            None
        };
        objects.push(ResultObject { path, key: object.key, size: object.size, url });
    }
    // The report is read once, with the first page, not once per page.
    let report = match query.after {
        None => manager.stored_report(&id).await.map_err(ServiceError::from)?,
        Some(_) => None,
    };
    Ok(Json(Results { job_id: id, objects, next: page.next, report }))
}

async fn result_object(
    State(state): State<AppState>,
    Path((id, path)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    download(&state.service, &id, &path).await
}

/// One result object's bytes, streamed as the store hands them over (the API's and the
/// dashboard's downloads). The name goes straight to its key: nothing is listed.
pub(in crate::service) async fn download(service: &JobService, id: &str, path: &str) -> Result<Response, ApiError> {
    let spec = job_spec(service, id).await?;
    let key = crate::manager::results::result_key(id, &spec, path)
        .map_err(|e| ApiError::from(ServiceError::Invalid { field: "path".into(), message: e.to_string() }))?;
    let reader = match service.manager().grid().store.get_stream(&key).await {
        Ok(reader) => reader,
        Err(StoreError::NotFound(_)) => {
            return Err(error(StatusCode::NOT_FOUND, format!("job `{id}` has no result `{path}`")));
        }
        Err(e) => return Err(ServiceError::Manager(e.into()).into()),
    };
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (header::CONTENT_LENGTH, reader.size.to_string()),
    ];
    Ok((headers, Body::from_stream(reader.chunks)).into_response())
}

async fn task_log(
    State(state): State<AppState>,
    Path((id, stage, task, stream)): Path<(String, String, String, String)>,
) -> Result<Response, ApiError> {
    let bytes = state.service.task_log(&id, &stage, &task, &stream).await?;
    // Plain text, never HTML: the bytes are whatever the command printed.
    let headers = [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")];
    Ok((headers, bytes).into_response())
}

async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    state.service.cancel(&id).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Redriven>), ApiError> {
    Ok((StatusCode::ACCEPTED, Json(state.service.retry(&id).await?)))
}

async fn redrive(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(filter): Query<RedriveFilter>,
) -> Result<(StatusCode, Json<Redriven>), ApiError> {
    Ok((StatusCode::ACCEPTED, Json(state.service.redrive(&id, &filter).await?)))
}

async fn pause(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    state.service.set_paused(&id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn resume(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    state.service.set_paused(&id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn priority(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(change): Json<PriorityChange>,
) -> Result<StatusCode, ApiError> {
    state.service.set_priority(&id, change.priority).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn history(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Vec<HistoryEntry>>, ApiError> {
    Ok(Json(state.service.history(&id).await?))
}

async fn health(State(state): State<AppState>) -> Json<HealthReport> {
    Json(state.service.health().await)
}

async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let snapshot = state.service.metrics().await?;
    let body = snapshot.encode().map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorBody { error: format!("encoding the metrics: {e}"), field: None, line: None },
        )
    })?;
    let content_type = HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8");
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

async fn drain_worker(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    state.service.drain_worker(&id).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn workers(State(state): State<AppState>) -> Result<Json<Vec<WorkerRecord>>, ApiError> {
    let workers = state.service.manager().grid().analytics.workers().await.map_err(ServiceError::from)?;
    Ok(Json(workers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
