//! Actions on a job, each a confirmation page and then a POST form carrying the session's CSRF
//! token: a cross-site page can neither read the token nor send the cookie (SameSite=Strict),
//! and a POST without the token is refused with 403. The API has cancel only so far; pause,
//! resume and retry join here when it has them.

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::html;

use super::auth::Caller;
use super::layout::{error_page, respond, shell, url_path};
use super::login::CsrfForm;
use super::{failure, Dashboard};

pub(super) async fn confirm_cancel(
    State(state): State<Dashboard>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let status = match state.service.status(&id).await {
        Ok(status) => status,
        Err(error) => return failure(error),
    };
    let body = html! {
        h1 { "Cancel " (status.name) "?" }
        p { "Job " code { (status.id) } " is " (status.state.as_str()) ". Cancelling stops it for good: \
             workers delete its remaining tasks unrun, and results written so far stay." }
        form method="post" action=(format!("/ui/jobs/{}/cancel", url_path(&id))) {
            input type="hidden" name="csrf" value=(caller.csrf());
            button.danger type="submit" #confirm { "Cancel the job" }
            " "
            a href=(format!("/ui/jobs/{}", url_path(&id))) { "Keep it running" }
        }
    };
    respond(StatusCode::OK, shell("Cancel a job", false, Some(caller.csrf()), body))
}

pub(super) async fn cancel(
    State(state): State<Dashboard>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    // A body that is no form carries no token either: refused the same way.
    let presented = form.ok().and_then(|Form(form)| form.csrf);
    if !state.sessions.csrf_ok(&caller, presented.as_deref()) {
        return error_page(StatusCode::FORBIDDEN, "missing or wrong CSRF token: use the form on the job's page");
    }
    match state.service.cancel(&id).await {
        Ok(()) => Redirect::to(&format!("/ui/jobs/{}", url_path(&id))).into_response(),
        Err(error) => failure(error),
    }
}
