//! The dashboard: the grid in a browser, served by the manager on the API's listener under
//! `/ui/` (and by `batchgrid run --dashboard`).
//!
//! Pages are rendered on the server with maud: its templates are Rust expressions checked at
//! compile time, it escapes every value it prints, and it needs no template files shipped
//! beside the binary (askama would also do, with its templates in separate files). Charts are
//! SVG drawn on the server ([`crate::chart`]) and pages refresh themselves with a meta refresh, so no script
//! runs at all and nothing comes from a CDN (the manager runs in a private subnet).
//!
//! | path | shows or does |
//! |---|---|
//! | `GET /ui/login`, `POST /ui/login` | the login form; a right token sets the session cookie |
//! | `POST /ui/logout` | ends the session |
//! | `GET /ui/jobs?state=&name=` | jobs: state, progress, throughput, ETA |
//! | `GET /ui/jobs/{id}` | a job: stages, charts, percentiles, stragglers, failures, history, report, results |
//! | `GET /ui/jobs/{id}/results/{path}` | one result object |
//! | `GET /ui/jobs/{id}/logs/{stage}/{task}/{stdout\|stderr}` | a task's captured output, as text |
//! | `GET`, `POST /ui/jobs/{id}/{cancel\|pause\|resume\|retry}` | the confirmation, then the action |
//! | `GET /ui/grid` | workers, queue depths, the manager's health |
//!
//! Access is the API token ([`auth`]); without it a page redirects to the login form, anything
//! else gets 401; an action without its session's CSRF token gets 403.

mod actions;
pub mod auth;
mod grid;
mod job;
mod jobs;
mod layout;
mod login;
pub mod samples;
mod stragglers;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use super::{JobService, ServiceError};
use crate::secret::Secret;
use auth::Sessions;

/// What the dashboard's handlers share.
#[derive(Clone)]
struct Dashboard {
    service: Arc<JobService>,
    sessions: Arc<Sessions>,
}

/// The dashboard's routes over `service`, opened by `token`.
pub fn router(service: Arc<JobService>, token: Secret) -> Router {
    let state = Dashboard { service, sessions: Arc::new(Sessions::new(token)) };
    let guarded = Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/jobs") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/jobs") }))
        .route("/ui/jobs", get(jobs::page))
        .route("/ui/jobs/{id}", get(job::page))
        .route("/ui/jobs/{id}/results/{*path}", get(job::result))
        .route("/ui/jobs/{id}/logs/{stage}/{task}/{stream}", get(job::log))
        .route("/ui/jobs/{id}/{action}", get(actions::confirm).post(actions::perform))
        .route("/ui/grid", get(grid::page))
        .route("/ui/logout", post(login::logout))
        .layer(axum::middleware::from_fn_with_state(state.clone(), require_caller));
    Router::new()
        .route("/ui/login", get(login::form).post(login::login))
        .route("/ui/style.css", get(style))
        .merge(guarded)
        .with_state(state)
}

/// Serves the dashboard alone on `listener` until `shutdown` resolves (`batchgrid run
/// --dashboard`: one machine's run has no API to share a listener with).
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<JobService>,
    token: Secret,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    samples::start_sampling(service.clone());
    axum::serve(listener, router(service, token)).with_graceful_shutdown(shutdown).await
}

/// Now, in Unix seconds.
fn now_seconds() -> i64 {
    crate::db::now_millis() / 1000
}

/// Lets a request through with its [`auth::Caller`] when it holds the token or a session;
/// sends a browser asking for a page to the login form, and refuses anything else with 401.
async fn require_caller(State(state): State<Dashboard>, mut request: Request, next: Next) -> Response {
    if let Some(caller) = state.sessions.caller(request.headers(), now_seconds()) {
        request.extensions_mut().insert(caller);
        let mut response = next.run(request).await;
        layout::secure(&mut response);
        return response;
    }
    let wants_html = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    let mut response = if wants_html && request.method() == Method::GET {
        Redirect::to("/ui/login").into_response()
    } else {
        let mut response = (StatusCode::UNAUTHORIZED, "log in at /ui/login or send the API token\n").into_response();
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    };
    layout::secure(&mut response);
    response
}

async fn style() -> Response {
    let mut response = ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], layout::STYLE).into_response();
    layout::secure(&mut response);
    response
}

/// A service error as an error page.
fn failure(error: ServiceError) -> Response {
    let status = match &error {
        ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
        ServiceError::Ended { .. } => StatusCode::CONFLICT,
        ServiceError::BadJob(_) | ServiceError::Invalid { .. } => StatusCode::BAD_REQUEST,
        ServiceError::Refused(_) => StatusCode::CONFLICT,
        ServiceError::Manager(_) => {
            tracing::error!(%error, "dashboard request failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    layout::error_page(status, &error.to_string())
}
