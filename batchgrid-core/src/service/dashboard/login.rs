//! The login form (the API token in, a session cookie out) and the logout.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::html;
use serde::Deserialize;

use super::auth::{clear_cookie, set_cookie, Caller};
use super::layout::{error_page, respond, shell};
use super::{now_seconds, Dashboard};

/// The login form's fields.
#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
}

/// A form that carries only its CSRF token.
#[derive(Deserialize)]
pub(super) struct CsrfForm {
    pub(super) csrf: Option<String>,
}

fn login_page(status: StatusCode, notice: Option<&str>) -> Response {
    respond(
        status,
        shell(
            "Log in",
            false,
            None,
            html! {
                form.login method="post" action="/ui/login" {
                    h1 { "Log in to batchgrid" }
                    @if let Some(notice) = notice { p.notice { (notice) } }
                    label for="token" { "API token" }
                    input #token type="password" name="token" autocomplete="current-password" autofocus required;
                    button type="submit" { "Log in" }
                }
            },
        ),
    )
}

pub(super) async fn form() -> Response {
    login_page(StatusCode::OK, None)
}

pub(super) async fn login(State(state): State<Dashboard>, Form(form): Form<LoginForm>) -> Response {
    if !state.sessions.is_token(form.token.trim()) {
        return login_page(StatusCode::UNAUTHORIZED, Some("That is not the grid's API token."));
    }
    match state.sessions.issue(now_seconds()) {
        Ok(cookie) => ([(header::SET_COOKIE, set_cookie(&cookie))], Redirect::to("/ui/jobs")).into_response(),
        Err(error) => {
            tracing::error!(%error, "no randomness for a session");
            error_page(StatusCode::INTERNAL_SERVER_ERROR, "cannot start a session")
        }
    }
}

pub(super) async fn logout(
    State(state): State<Dashboard>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !state.sessions.csrf_ok(&caller, form.csrf.as_deref()) {
        return error_page(StatusCode::FORBIDDEN, "missing or wrong CSRF token");
    }
    state.sessions.revoke(&caller);
    ([(header::SET_COOKIE, clear_cookie())], Redirect::to("/ui/login")).into_response()
}
