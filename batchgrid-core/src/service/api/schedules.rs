//! The API's schedule routes (see the table in [`super`]).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::analytics::OccurrenceRecord;
use crate::service::ScheduleStatus;

/// Query parameters of a schedule's creation.
#[derive(Debug, Deserialize)]
struct AddQuery {
    /// Name of the document for error messages (the client's file name).
    origin: Option<String>,
}

/// The schedule routes, merged into the API's router.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/schedules", post(add).get(list))
        .route("/v1/schedules/{name}", get(show).delete(delete))
        .route("/v1/schedules/{name}/pause", post(pause))
        .route("/v1/schedules/{name}/resume", post(resume))
        .route("/v1/schedules/{name}/trigger", post(trigger))
}

fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from(std::time::SystemTime::now())
}

async fn add(
    State(state): State<AppState>,
    Query(query): Query<AddQuery>,
    body: String,
) -> Result<(StatusCode, Json<ScheduleStatus>), ApiError> {
    let origin = query.origin.unwrap_or_else(|| "request body".to_owned());
    Ok((StatusCode::CREATED, Json(state.service.add_schedule(&body, &origin, now()).await?)))
}

async fn list(State(state): State<AppState>) -> Result<Json<Vec<ScheduleStatus>>, ApiError> {
    Ok(Json(state.service.schedules(now()).await?))
}

async fn show(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<ScheduleStatus>, ApiError> {
    Ok(Json(state.service.schedule(&name, now()).await?))
}

async fn pause(State(state): State<AppState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    state.service.pause_schedule(&name, true, now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn resume(State(state): State<AppState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    state.service.pause_schedule(&name, false, now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn trigger(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<OccurrenceRecord>), ApiError> {
    Ok((StatusCode::CREATED, Json(state.service.trigger_schedule(&name, now()).await?)))
}

async fn delete(State(state): State<AppState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    state.service.delete_schedule(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
