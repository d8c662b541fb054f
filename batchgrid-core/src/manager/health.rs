//! The manager's health: which parts of the grid it cannot reach, since when, and how often it
//! has tried; and the backoff between its tries. An infrastructure error is reported here and
//! retried, never written into a job (see `reconcile`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ManagerError;
use crate::db::now_millis;

/// First pause after a failure.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest pause between tries.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Capped exponential backoff: 1 s, 2 s, 4 s ... 30 s, back to 1 s after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: BACKOFF_INITIAL }
    }
}

impl Backoff {
    /// The pause before the next try, doubling the one after it up to [`BACKOFF_MAX`].
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }

    /// Starts again from [`BACKOFF_INITIAL`].
    pub fn reset(&mut self) {
        self.next = BACKOFF_INITIAL;
    }
}

/// One part of the grid the manager is failing to reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// The latest error.
    pub error: String,
    /// When the failures began, `HH:MM:SS` UTC.
    pub since: String,
    /// When the failures began, Unix milliseconds.
    pub since_ms: i64,
    /// Failed tries since then.
    pub failures: u64,
}

/// What `GET /v1/health` answers: `{"status":"ok"}`, or `{"status":"degraded","analytics":
/// {"error":...,"since":"14:02:11",...}}` with one entry per failing part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// `ok` or `degraded`.
    pub status: String,
    /// Failing parts by name: `analytics`, `queue`, `store`, `disk`.
    #[serde(flatten)]
    pub faults: BTreeMap<String, Fault>,
}

impl HealthReport {
    /// Whether every part answers.
    pub fn is_ok(&self) -> bool {
        self.faults.is_empty()
    }

    /// One line per failing part, e.g. "analytics store unreachable since 14:02:11 UTC, retrying".
    pub fn describe(&self) -> Vec<String> {
        self.faults
            .iter()
            .map(|(part, fault)| {
                format!(
                    "{} unreachable since {} UTC, retrying ({} failed tries; last error: {})",
                    describe_part(part),
                    fault.since,
                    fault.failures,
                    fault.error
                )
            })
            .collect()
    }
}

fn describe_part(part: &str) -> &str {
    match part {
        "analytics" => "analytics store",
        "queue" => "task queue",
        "store" => "object store",
        "disk" => "local disk",
        other => other,
    }
}

/// The manager's health, shared by every job it drives.
#[derive(Debug, Clone, Default)]
pub struct Health {
    faults: Arc<Mutex<BTreeMap<String, Fault>>>,
    /// Failures per part since the process started (for `/metrics`), kept after recovery.
    errors: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Health {
    /// Records a failed try against the part `error` comes from.
    pub fn failed(&self, error: &ManagerError) {
        self.failed_part(error.part(), &error.to_string());
    }

    /// Records a failed try against `part`.
    pub fn failed_part(&self, part: &str, error: &str) {
        let Ok(mut faults) = self.faults.lock() else { return };
        let now = now_millis();
        let fault = faults.entry(part.to_owned()).or_insert_with(|| Fault {
            error: String::new(),
            since: clock_time(now),
            since_ms: now,
            failures: 0,
        });
        fault.error = error.to_owned();
        fault.failures += 1;
        drop(faults);
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(part.to_owned()).or_default() += 1;
        }
    }

    /// Failures per part since the process started, recovered ones included.
    pub fn error_counts(&self) -> BTreeMap<String, u64> {
        self.errors.lock().map(|errors| errors.clone()).unwrap_or_default()
    }

    /// Records that `part` answered again.
    pub fn recovered(&self, part: &str) {
        if let Ok(mut faults) = self.faults.lock() {
            if let Some(fault) = faults.remove(part) {
                tracing::info!(part, failures = fault.failures, since = %fault.since, "reachable again");
            }
        }
    }

    /// Records that a whole reconcile pass succeeded: every part it touches answered.
    pub fn pass_succeeded(&self) {
        for part in ["analytics", "queue", "store"] {
            self.recovered(part);
        }
    }

    /// The current report.
    pub fn report(&self) -> HealthReport {
        let faults = self.faults.lock().map(|f| f.clone()).unwrap_or_default();
        let status = if faults.is_empty() { "ok" } else { "degraded" };
        HealthReport { status: status.to_owned(), faults }
    }
}

/// `HH:MM:SS` of a Unix-millisecond time, UTC.
fn clock_time(millis: i64) -> String {
    let seconds = millis.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", seconds / 3600, seconds / 60 % 60, seconds % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..8).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), BACKOFF_INITIAL);
    }

    #[test]
    fn health_reports_each_failing_part_since_its_first_failure() {
        let health = Health::default();
        assert_eq!(health.report().status, "ok");
        health.failed_part("analytics", "pool timed out");
        health.failed_part("analytics", "connection refused");
        let report = health.report();
        assert_eq!(report.status, "degraded");
        let fault = &report.faults["analytics"];
        assert_eq!((fault.failures, fault.error.as_str()), (2, "connection refused"));
        let line = &report.describe()[0];
        assert!(line.starts_with("analytics store unreachable since ") && line.contains(", retrying"), "{line}");
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["status"], "degraded");
        assert_eq!(json["analytics"]["since"], fault.since.as_str());
        health.pass_succeeded();
        assert!(health.report().is_ok());
    }

    #[test]
    fn clock_time_is_utc() {
        assert_eq!(clock_time(0), "00:00:00");
        assert_eq!(clock_time((14 * 3600 + 2 * 60 + 11) * 1000 + 999), "14:02:11");
    }
}
