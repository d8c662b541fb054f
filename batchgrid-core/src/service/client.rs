//! A client of the manager's API, for the CLI and for embedders.

use std::time::Duration;

use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use super::api::{ErrorBody, PriorityChange, Results, Submitted};
use super::path_encoding::encode_path;
use super::{Deferred, JobStatus, ScheduleStatus};
use crate::analytics::{HistoryEntry, OccurrenceRecord, WorkerRecord};
use crate::manager::{HealthReport, RedriveFilter, Redriven};
use crate::secret::Secret;

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The manager could not be reached.
    #[error("cannot reach the manager at {url}: {message}")]
    Unreachable {
        /// The manager's URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// The manager refused the call.
    #[error("{status}: {}{}", .body.error, location(.body))]
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// The manager's explanation.
        body: ErrorBody,
    },
}

fn location(body: &ErrorBody) -> String {
    match (&body.field, body.line) {
        (Some(field), Some(line)) => format!(" (field {field}, line {line})"),
        (Some(field), None) => format!(" (field {field})"),
        _ => String::new(),
    }
}

impl ClientError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            ClientError::Unreachable { .. } => None,
        }
    }
}

/// How long to wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a response may go without a byte: a stalled transfer fails, a long one does not.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// A connection to one manager.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Secret,
    /// Why the client cannot speak HTTPS, when it cannot: the manager's own address is plain
    /// HTTP (a port forward), so only presigned S3 URLs need TLS, and only they fail without it.
    no_tls: Option<String>,
}

impl ApiClient {
    /// A client of the manager at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, token: Secret) -> Result<Self, ClientError> {
        let (builder, no_tls) =
            with_tls(|| reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).read_timeout(IDLE_TIMEOUT));
        let http =
            builder.build().map_err(|e| ClientError::Unreachable { url: base.to_owned(), message: e.to_string() })?;
        Ok(Self { http, base: base.trim_end_matches('/').to_owned(), token, no_tls })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let response = request
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| ClientError::Unreachable { url: self.base.clone(), message: error_chain(&e) })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(ErrorBody {
            error: text.chars().take(500).collect(),
            field: None,
            line: None,
        });
        Err(ClientError::Refused { status, body })
    }

    async fn json<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, ClientError> {
        let response = self.send(request).await?;
        response.json().await.map_err(|e| ClientError::Unreachable { url: self.base.clone(), message: error_chain(&e) })
    }

    /// Submits a job document; `input` replaces its input (an uploaded `s3://` location).
    pub async fn submit(&self, document: &str, origin: &str, input: Option<&str>) -> Result<String, ClientError> {
        self.submit_with(document, origin, input, &[], None).await
    }

    /// As [`ApiClient::submit`], the job waiting for the jobs `after` names (names or ids).
    pub async fn submit_after(
        &self,
        document: &str,
        origin: &str,
        input: Option<&str>,
        after: &[String],
    ) -> Result<String, ClientError> {
        self.submit_with(document, origin, input, after, None).await
    }

    /// As [`ApiClient::submit`], with `priority` replacing the document's.
    pub async fn submit_with_priority(
        &self,
        document: &str,
        origin: &str,
        input: Option<&str>,
        priority: Option<u8>,
    ) -> Result<String, ClientError> {
        self.submit_with(document, origin, input, &[], priority).await
    }

    /// As [`ApiClient::submit`], with `after` and `priority` replacing the document's when given.
    pub async fn submit_with(
        &self,
        document: &str,
        origin: &str,
        input: Option<&str>,
        after: &[String],
        priority: Option<u8>,
    ) -> Result<String, ClientError> {
        let request = self.submit_request(document, origin, input, after, priority);
        Ok(self.json::<Submitted>(request).await?.job_id)
    }

    /// Stores a job document to run once at `at` (RFC 3339 with its offset).
    pub async fn submit_at(
        &self,
        document: &str,
        origin: &str,
        input: Option<&str>,
        after: &[String],
        at: &str,
    ) -> Result<Deferred, ClientError> {
        let request = self.submit_request(document, origin, input, after, None).query(&[("at", at)]);
        self.json(request).await
    }

    fn submit_request(
        &self,
        document: &str,
        origin: &str,
        input: Option<&str>,
        after: &[String],
        priority: Option<u8>,
    ) -> reqwest::RequestBuilder {
        let after = after.join(",");
        let priority = priority.map(|p| p.to_string());
        let mut query = vec![("origin", origin)];
        if let Some(input) = input {
            query.push(("input", input));
        }
        if !after.is_empty() {
            query.push(("after", &after));
        }
        if let Some(priority) = &priority {
            query.push(("priority", priority));
        }
        self.http.post(self.url("/v1/jobs")).query(&query).body(document.to_owned())
    }

    /// Adds a schedule from a job document with a `schedule:` block.
    pub async fn add_schedule(&self, document: &str, origin: &str) -> Result<ScheduleStatus, ClientError> {
        let request = self.http.post(self.url("/v1/schedules")).query(&[("origin", origin)]).body(document.to_owned());
        self.json(request).await
    }

    /// Every schedule.
    pub async fn schedules(&self) -> Result<Vec<ScheduleStatus>, ClientError> {
        self.json(self.http.get(self.url("/v1/schedules"))).await
    }

    /// One schedule with its recent occurrences.
    pub async fn schedule(&self, name: &str) -> Result<ScheduleStatus, ClientError> {
        self.json(self.http.get(self.url(&format!("/v1/schedules/{name}")))).await
    }

    /// `pause`, `resume` or `delete` a schedule.
    pub async fn schedule_action(&self, name: &str, action: &str) -> Result<(), ClientError> {
        let request = match action {
            "delete" => self.http.delete(self.url(&format!("/v1/schedules/{name}"))),
            _ => self.http.post(self.url(&format!("/v1/schedules/{name}/{action}"))),
        };
        self.send(request).await.map(|_| ())
    }

    /// Fires one occurrence of a schedule now.
    pub async fn trigger_schedule(&self, name: &str) -> Result<OccurrenceRecord, ClientError> {
        self.json(self.http.post(self.url(&format!("/v1/schedules/{name}/trigger")))).await
    }

    /// A command task's captured `stream` (`stdout` or `stderr`).
    pub async fn task_log(&self, id: &str, stage: &str, task: &str, stream: &str) -> Result<Vec<u8>, ClientError> {
        let response =
            self.send(self.http.get(self.url(&format!("/v1/jobs/{id}/logs/{stage}/{task}/{stream}")))).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Unreachable { url: self.base.clone(), message: error_chain(&e) })?;
        Ok(bytes.to_vec())
    }

    /// Every job, newest first.
    pub async fn jobs(&self) -> Result<Vec<JobStatus>, ClientError> {
        self.json(self.http.get(self.url("/v1/jobs"))).await
    }

    /// One job's status and progress.
    pub async fn status(&self, id: &str) -> Result<JobStatus, ClientError> {
        self.json(self.http.get(self.url(&format!("/v1/jobs/{id}")))).await
    }

    /// The first page of a job's result objects, with the report once the job has ended.
    pub async fn results(&self, id: &str) -> Result<Results, ClientError> {
        self.results_page(id, None, None, false).await
    }

    /// A page of a job's result objects: names after `after`, at most `limit` (the manager's
    /// page size when `None`), with presigned URLs when `urls` and the store has them.
    pub async fn results_page(
        &self,
        id: &str,
        after: Option<&str>,
        limit: Option<usize>,
        urls: bool,
    ) -> Result<Results, ClientError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(after) = after {
            query.push(("after", after.to_owned()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        if urls {
            query.push(("urls", "true".to_owned()));
        }
        let url = self.url(&format!("/v1/jobs/{}/results", encode_path(id)));
        self.json(self.http.get(url).query(&query)).await
    }

    /// Every page of a job's result objects in one list, with the first page's report.
    pub async fn all_results(&self, id: &str) -> Result<Results, ClientError> {
        let mut all = self.results_page(id, None, None, false).await?;
        while let Some(after) = all.next.take() {
            let page = self.results_page(id, Some(&after), None, false).await?;
            all.objects.extend(page.objects);
            all.next = page.next;
        }
        Ok(all)
    }

    /// Streams one result object through the manager into `target` (created or truncated);
    /// returns its size.
    pub async fn download_result(&self, id: &str, path: &str, target: &std::path::Path) -> Result<u64, ClientError> {
        let url = self.url(&format!("/v1/jobs/{}/results/{}", encode_path(id), encode_path(path)));
        let response = self.send(self.http.get(url)).await?;
        self.write_body(response, target).await
    }

    /// Streams the object at a presigned `url` (from a results page) into `target`; no bearer
    /// token goes with it: the URL carries its own signature, and S3 refuses a request with both.
    pub async fn download_presigned(&self, url: &str, target: &std::path::Path) -> Result<u64, ClientError> {
        let unreachable = |e: reqwest::Error| ClientError::Unreachable { url: host_of(url), message: error_chain(&e) };
        if let (Some(why), true) = (&self.no_tls, url.starts_with("https:")) {
            return Err(ClientError::Unreachable { url: host_of(url), message: format!("no HTTPS: {why}") });
        }
        let response = self.http.get(url).send().await.map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let error = format!("presigned GET: {}", text.chars().take(500).collect::<String>());
            return Err(ClientError::Refused { status, body: ErrorBody { error, field: None, line: None } });
        }
        self.write_body(response, target).await
    }

    async fn write_body(&self, mut response: reqwest::Response, target: &std::path::Path) -> Result<u64, ClientError> {
        use tokio::io::AsyncWriteExt;
        let local = |e: std::io::Error| ClientError::Unreachable {
            url: self.base.clone(),
            message: format!("writing {}: {e}", target.display()),
        };
        let mut file = tokio::fs::File::create(target).await.map_err(local)?;
        let mut written = 0u64;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ClientError::Unreachable { url: self.base.clone(), message: error_chain(&e) })?
        {
            file.write_all(&chunk).await.map_err(local)?;
            written += chunk.len() as u64;
        }
        file.flush().await.map_err(local)?;
        Ok(written)
    }

    /// Cancels a job.
    pub async fn cancel(&self, id: &str) -> Result<(), ClientError> {
        self.send(self.http.post(self.url(&format!("/v1/jobs/{id}/cancel")))).await.map(|_| ())
    }

    /// Runs a failed job's failed tasks again.
    pub async fn retry(&self, id: &str) -> Result<Redriven, ClientError> {
        self.json(self.http.post(self.url(&format!("/v1/jobs/{id}/retry")))).await
    }

    /// Runs the failed tasks `filter` picks again.
    pub async fn redrive(&self, id: &str, filter: &RedriveFilter) -> Result<Redriven, ClientError> {
        self.json(self.http.post(self.url(&format!("/v1/jobs/{id}/redrive"))).query(filter)).await
    }

    /// Pauses (`true`) or resumes a job.
    pub async fn set_paused(&self, id: &str, paused: bool) -> Result<(), ClientError> {
        let action = if paused { "pause" } else { "resume" };
        self.send(self.http.post(self.url(&format!("/v1/jobs/{id}/{action}")))).await.map(|_| ())
    }

    /// Changes a job's priority.
    pub async fn set_priority(&self, id: &str, priority: u8) -> Result<(), ClientError> {
        let request = self.http.put(self.url(&format!("/v1/jobs/{id}/priority"))).json(&PriorityChange { priority });
        self.send(request).await.map(|_| ())
    }

    /// A job's history, oldest first.
    pub async fn history(&self, id: &str) -> Result<Vec<HistoryEntry>, ClientError> {
        self.json(self.http.get(self.url(&format!("/v1/jobs/{id}/history")))).await
    }

    /// The manager's health.
    pub async fn health(&self) -> Result<HealthReport, ClientError> {
        self.json(self.http.get(self.url("/v1/health"))).await
    }

    /// Asks a worker to drain: no new task, exit after its current ones.
    pub async fn drain_worker(&self, id: &str) -> Result<(), ClientError> {
        self.send(self.http.post(self.url(&format!("/v1/workers/{id}/drain")))).await.map(|_| ())
    }

    /// Workers and their statistics.
    pub async fn workers(&self) -> Result<Vec<WorkerRecord>, ClientError> {
        self.json(self.http.get(self.url("/v1/workers"))).await
    }
}

/// A URL without its query: presigned URLs carry a signature that has no place in messages.
fn host_of(url: &str) -> String {
    url.split('?').next().unwrap_or_default().to_owned()
}

/// `builder` with TLS where the build has it; otherwise why not.
fn with_tls(builder: impl Fn() -> reqwest::ClientBuilder) -> (reqwest::ClientBuilder, Option<String>) {
    #[cfg(feature = "aws")]
    {
        // A machine without root certificates can still reach its manager over plain HTTP.
        match crate::aws::https::with_tls(builder()) {
            Ok(builder) => (builder, None),
            Err(error) => (builder(), Some(error.to_string())),
        }
    }
    #[cfg(not(feature = "aws"))]
    {
        (builder(), Some("this build has no AWS support".to_owned()))
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
