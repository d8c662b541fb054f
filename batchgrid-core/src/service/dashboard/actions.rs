//! Actions on a job (cancel, pause, resume, retry its failed tasks), each a confirmation page
//! and then a POST form carrying the session's CSRF token: a cross-site page can neither read
//! the token nor send the cookie (SameSite=Strict), and a POST without the token is refused
//! with 403. Each goes through the same service call as the API's, so the manager records it
//! in the job's history as the operator's.

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::html;

use super::auth::Caller;
use super::layout::{error_page, respond, shell};
use super::login::CsrfForm;
use super::{failure, Dashboard};
use crate::service::path_encoding::encode_path;
use crate::service::{JobStatus, ServiceError};

/// What an operator can do to a job from its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Stop it for good.
    Cancel,
    /// Hold its tasks back.
    Pause,
    /// Let a paused job's tasks go.
    Resume,
    /// Run a failed job's failed tasks again.
    Retry,
}

impl Action {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "cancel" => Some(Action::Cancel),
            "pause" => Some(Action::Pause),
            "resume" => Some(Action::Resume),
            "retry" => Some(Action::Retry),
            _ => None,
        }
    }

    /// Its path segment.
    pub(super) fn name(self) -> &'static str {
        match self {
            Action::Cancel => "cancel",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Retry => "retry",
        }
    }

    /// The actions that make sense for a job as it is now.
    pub(super) fn offered(status: &JobStatus, failed_tasks: bool) -> Vec<Action> {
        let ended = status.state.is_terminal();
        let mut actions = Vec::new();
        if !ended {
            actions.push(if status.paused { Action::Resume } else { Action::Pause });
            actions.push(Action::Cancel);
        } else if status.state == crate::analytics::JobState::Failed && failed_tasks {
            actions.push(Action::Retry);
        }
        actions
    }

    /// What the confirmation page says it will do.
    fn consequence(self) -> &'static str {
        match self {
            Action::Cancel => {
                "Cancelling stops it for good: workers delete its remaining tasks unrun, and results written \
                 so far stay."
            }
            Action::Pause => "Pausing holds its waiting tasks back; tasks already running finish.",
            Action::Resume => "Resuming lets its waiting tasks run again.",
            Action::Retry => "Retrying runs every failed task again, into the same job.",
        }
    }

    async fn perform(self, state: &Dashboard, id: &str) -> Result<(), ServiceError> {
        match self {
            Action::Cancel => state.service.cancel(id).await,
            Action::Pause => state.service.set_paused(id, true).await,
            Action::Resume => state.service.set_paused(id, false).await,
            Action::Retry => state.service.retry(id).await.map(|_| ()),
        }
    }
}

pub(super) async fn confirm(
    State(state): State<Dashboard>,
    Extension(caller): Extension<Caller>,
    Path((id, name)): Path<(String, String)>,
) -> Response {
    let Some(action) = Action::parse(&name) else {
        return error_page(StatusCode::NOT_FOUND, "no such page");
    };
    let status = match state.service.status(&id).await {
        Ok(status) => status,
        Err(error) => return failure(error),
    };
    let base = format!("/ui/jobs/{}", encode_path(&id));
    let body = html! {
        h1 { (action.name()) " " (status.name) "?" }
        p { "Job " code { (status.id) } " is " (status.state.as_str()) @if status.paused { " (paused)" } ". " (action.consequence()) }
        form method="post" action=(format!("{base}/{}", action.name())) {
            input type="hidden" name="csrf" value=(caller.csrf());
            button.danger type="submit" #confirm { "Yes, " (action.name()) " the job" }
            " "
            a href=(base) { "Back to the job" }
        }
    };
    respond(StatusCode::OK, shell("Confirm", false, Some(caller.csrf()), body))
}

pub(super) async fn perform(
    State(state): State<Dashboard>,
    Extension(caller): Extension<Caller>,
    Path((id, name)): Path<(String, String)>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    // A body that is no form carries no token either: refused the same way.
    let presented = form.ok().and_then(|Form(form)| form.csrf);
    if !state.sessions.csrf_ok(&caller, presented.as_deref()) {
        return error_page(StatusCode::FORBIDDEN, "missing or wrong CSRF token: use the form on the job's page");
    }
    let Some(action) = Action::parse(&name) else {
        return error_page(StatusCode::NOT_FOUND, "no such action");
    };
    match action.perform(&state, &id).await {
        Ok(()) => Redirect::to(&format!("/ui/jobs/{}", encode_path(&id))).into_response(),
        Err(error) => failure(error),
    }
}
