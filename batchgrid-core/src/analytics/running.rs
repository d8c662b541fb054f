//! The tasks a worker is running, as its heartbeat reports them (migration 0012): a JSON list
//! in the `workers` row, replaced by each heartbeat, so the dashboard can tell how long each
//! task has been running (attempts are recorded only when they end).

use serde::{Deserialize, Serialize};

use super::AnalyticsError;

/// The most running tasks one heartbeat records: a worker runs a few tasks per core, and the
/// cap keeps a heartbeat one small row even if a misconfigured worker runs thousands.
pub const MAX_RUNNING_RECORDED: usize = 256;

/// A task a worker has started and not yet finished.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunningTask {
    /// Its job.
    pub job_id: String,
    /// Its stage's position.
    pub stage: u32,
    /// Its id within the stage.
    pub task_id: String,
    /// When its attempt started (Unix milliseconds), as the attempt will record it.
    pub started_at: i64,
}

/// The stored form of `running`: at most [`MAX_RUNNING_RECORDED`] tasks, the longest running
/// first, since those are the ones a reader looks for (stragglers).
pub(crate) fn encode(running: &[RunningTask]) -> String {
    let mut kept: Vec<&RunningTask> = running.iter().collect();
    kept.sort_by(|a, b| {
        (a.started_at, &a.job_id, a.stage, &a.task_id).cmp(&(b.started_at, &b.job_id, b.stage, &b.task_id))
    });
    kept.truncate(MAX_RUNNING_RECORDED);
    // Serialising plain strings and numbers cannot fail; an empty list is the safe fallback.
    serde_json::to_string(&kept).unwrap_or_else(|_| "[]".to_owned())
}

/// The list stored for `worker_id`; a value that is not such a list is corrupt.
pub(crate) fn decode(worker_id: &str, stored: &str) -> Result<Vec<RunningTask>, AnalyticsError> {
    serde_json::from_str(stored)
        .map_err(|error| AnalyticsError::Corrupt(format!("worker {worker_id}: running tasks: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, started_at: i64) -> RunningTask {
        RunningTask { job_id: "j".into(), stage: 1, task_id: id.into(), started_at }
    }

    #[test]
    fn a_list_round_trips() {
        let running = vec![task("a", 5), task("b", 7)];
        assert_eq!(decode("w", &encode(&running)).expect("decode"), running);
        assert_eq!(encode(&[]), "[]");
    }

    #[test]
    fn the_longest_running_are_kept_when_capped() {
        let running: Vec<RunningTask> =
            (0..MAX_RUNNING_RECORDED as i64 + 10).rev().map(|at| task(&at.to_string(), at)).collect();
        let kept = decode("w", &encode(&running)).expect("decode");
        assert_eq!(kept.len(), MAX_RUNNING_RECORDED);
        assert_eq!(kept.first().map(|t| t.started_at), Some(0), "the oldest first");
        assert_eq!(kept.last().map(|t| t.started_at), Some(MAX_RUNNING_RECORDED as i64 - 1));
    }

    #[test]
    fn a_malformed_value_is_corrupt_not_a_panic() {
        for stored in ["", "{", "{}", "[1]", r#"[{"job_id":"j"}]"#] {
            match decode("w-9", stored) {
                Err(AnalyticsError::Corrupt(message)) => assert!(message.contains("w-9"), "{message}"),
                other => panic!("{stored}: {other:?}"),
            }
        }
    }
}
