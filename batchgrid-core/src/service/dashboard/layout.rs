//! The page shell every dashboard page shares (navigation, stylesheet, live refresh), the
//! security headers they are sent with, and small formatting helpers.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use crate::chart::ms;

/// The stylesheet, served from the binary (no CDN: the manager has no internet access).
pub const STYLE: &str = include_str!("style.css");

/// Seconds between a live page's reloads.
pub const REFRESH_SECONDS: u32 = 2;

/// No script may run, no other site may frame the pages or receive a form; styles and images
/// come from the manager alone.
const POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
                      frame-ancestors 'none'; base-uri 'none'";

/// A whole page: `live` pages reload themselves every [`REFRESH_SECONDS`] (a meta refresh needs
/// no script, which the policy forbids).
pub fn shell(title: &str, live: bool, csrf: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                @if live { meta http-equiv="refresh" content=(REFRESH_SECONDS); }
                title { (title) " · batchgrid" }
                link rel="stylesheet" href="/ui/style.css";
            }
            body {
                nav {
                    strong { "batchgrid" }
                    a href="/ui/jobs" { "Jobs" }
                    a href="/ui/grid" { "Grid" }
                    @if let Some(csrf) = csrf {
                        form.logout method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// `markup` as an HTML answer with `status` and the pages' headers.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup).into_response();
    secure(&mut response);
    response
}

/// Adds the headers every dashboard answer carries: the content policy, no framing, no
/// caching of pages that show a grid's jobs, no referrer to whatever a page links to.
pub fn secure(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// An error page.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    respond(
        status,
        shell(
            "Error",
            false,
            None,
            html! { h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) } p { (message) } },
        ),
    )
}

/// A progress bar with its numbers.
pub fn progress(done: u64, total: Option<u64>) -> Markup {
    let fraction = total.filter(|&t| t > 0).map(|t| (done as f64 / t as f64).min(1.0));
    html! {
        span.progress {
            @if let Some(fraction) = fraction {
                meter min="0" max="1" value=(format!("{fraction:.3}")) {}
                " " (done) " / " (total.unwrap_or(0))
            } @else {
                (done) " / ?"
            }
        }
    }
}

/// A Unix-milliseconds time as UTC.
pub fn time(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| millis.to_string())
}

/// A duration in milliseconds, short.
pub fn duration(millis: i64) -> String {
    ms(millis.max(0) as f64)
}

/// A job's compute so far: its task time, and its price where the worker type's is known.
pub fn compute_cost(task_ms: u64, price: Option<&crate::metering::ComputePrice>) -> String {
    let hours = task_ms as f64 / 3_600_000.0;
    match price {
        Some(price) => format!("${:.2} ({hours:.1} task-h)", price.cost_of(task_ms)),
        None => format!("{hours:.1} task-h"),
    }
}
