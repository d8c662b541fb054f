//! Task messages and the object key layout: one deterministic key per job, stage and task, so a
//! redelivered task overwrites its result instead of adding another.

use serde::{Deserialize, Serialize};

/// Largest chunk carried inside its task message instead of as an object: a small task costs
/// no object write and read (two S3 requests on AWS, two file creations locally).
pub const MAX_INLINE_BYTES: usize = 8 * 1024;

/// Task id of a reduce stage's single task.
pub const REDUCE_TASK_ID: &str = "all";

/// What travels on the queues: which task to run and where its input is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskMessage {
    /// Job id.
    pub job: String,
    /// Stage position.
    pub stage: u32,
    /// Task id within the stage.
    pub task: String,
    /// The task's input: one object key, or a prefix ending in `/` (every object under it).
    /// With `data`, the key only names the input; no object is stored.
    pub input: String,
    /// A small input carried in the message itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// A byte range of the job's original input, read by the worker itself (a split without
    /// copying); `input` then only names the chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<crate::byte_range::InputRange>,
    /// A whole S3 object the worker reads where it lies (a per-file split of an `s3://` prefix,
    /// a manifest): nothing is staged, and `input` then only names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<InputObject>,
}

/// An original S3 object a first-stage task reads in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputObject {
    /// Its bucket.
    pub bucket: String,
    /// Its key.
    pub key: String,
}

/// Malformed queue payloads.
#[derive(Debug, thiserror::Error)]
#[error("malformed task payload: {0}")]
pub struct PayloadError(String);

impl TaskMessage {
    /// The message body.
    pub fn encode(&self) -> String {
        // A struct of strings and integers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses and checks a message body.
    pub fn decode(body: &str) -> Result<Self, PayloadError> {
        let message: TaskMessage = serde_json::from_str(body).map_err(|e| PayloadError(e.to_string()))?;
        let safe = |s: &str| !s.is_empty() && !s.contains('/') && s != "." && s != "..";
        if !safe(&message.job) || !safe(&message.task) {
            return Err(PayloadError("job and task ids must be non-empty and contain no `/`".into()));
        }
        if message.data.as_ref().is_some_and(|d| d.len() > MAX_INLINE_BYTES) {
            return Err(PayloadError(format!("inline data exceeds {MAX_INLINE_BYTES} bytes")));
        }
        if let Some(range) = &message.range {
            let ordered = range.body_start <= range.start && range.start <= range.end && range.end <= range.size;
            if !ordered || message.data.is_some() || message.input.ends_with('/') {
                return Err(PayloadError(
                    "a byte range needs body_start <= start <= end <= size, no inline data and a single input key"
                        .into(),
                ));
            }
        }
        if message.object.is_some()
            && (message.data.is_some() || message.range.is_some() || message.input.ends_with('/'))
        {
            return Err(PayloadError(
                "an object input needs no inline data, no byte range and a single input key".into(),
            ));
        }
        if message.data.is_some() && message.input.ends_with('/') {
            return Err(PayloadError("inline data needs a single input key, not a prefix".into()));
        }
        if !message.input.starts_with(&format!("jobs/{}/", message.job)) {
            return Err(PayloadError(format!("input `{}` is outside job `{}`", message.input, message.job)));
        }
        Ok(message)
    }
}

/// Key of a job's stored spec.
pub fn spec_key(job: &str) -> String {
    format!("jobs/{job}/spec.json")
}

/// Key of a finished job's report (JSON).
pub fn report_key(job: &str) -> String {
    format!("jobs/{job}/report.json")
}

/// Key of a first-stage task's staged input. Chunks share one directory (no directory per
/// task to create); a whole input file keeps its own name under a directory of its own.
pub fn input_key(job: &str, task: &str, file_name: &str, per_file: bool) -> String {
    if per_file {
        format!("jobs/{job}/input/{task}/{file_name}")
    } else {
        format!("jobs/{job}/input/{file_name}")
    }
}

/// Prefix of every result of a stage.
pub fn stage_prefix(job: &str, stage: u32, stage_name: &str) -> String {
    format!("jobs/{job}/stages/{stage:02}-{stage_name}/")
}

/// Prefix of one task's results.
pub fn output_prefix(job: &str, stage: u32, stage_name: &str, task: &str) -> String {
    format!("{}{task}/", stage_prefix(job, stage, stage_name))
}

/// Prefix of one task's captured standard output and error (`stdout.txt`, `stderr.txt`): under
/// the job but outside `stages/`, so results listings and downstream stages never see them.
pub fn log_prefix(job: &str, stage: u32, stage_name: &str, task: &str) -> String {
    format!("jobs/{job}/logs/{stage:02}-{stage_name}/{task}/")
}

/// Key where the manager keeps a consumed dead letter's message, so `job retry` and
/// `job redrive` can send it again once the dead-letter queue no longer holds it (a first-stage
/// task's input is named only by its message). One per task: a later failure replaces it.
pub fn parked_letter_key(job: &str, stage: u32, task: &str) -> String {
    format!("jobs/{job}/dead-letters/{stage:02}/{task}.json")
}

/// Id of the `index`th first-stage task; zero-padded so keys sort in input order.
pub fn chunk_task_id(index: u64) -> String {
    format!("{index:06}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_reject_escapes() {
        let mut message = TaskMessage {
            job: "j1".into(),
            stage: 0,
            task: "000001".into(),
            input: input_key("j1", "000001", "a.csv", true),
            data: None,
            range: None,
            object: None,
        };
        assert_eq!(TaskMessage::decode(&message.encode()).ok(), Some(message.clone()));
        assert!(!message.encode().contains("data"), "no inline field unless there is data");
        let original = InputObject { bucket: "raw-bucket".into(), key: "media/a.mp4".into() };
        let referencing = TaskMessage { object: Some(original), ..message.clone() };
        assert_eq!(TaskMessage::decode(&referencing.encode()).ok(), Some(referencing.clone()));
        let older = r#"{"job":"j1","stage":0,"task":"t","input":"jobs/j1/input/t/a.csv"}"#;
        assert_eq!(TaskMessage::decode(older).map(|m| m.object).ok(), Some(None), "older messages still decode");
        let both = TaskMessage { data: Some("x".into()), ..referencing };
        assert!(TaskMessage::decode(&both.encode()).is_err(), "an object input carries no inline data");
        message.data = Some("a,b\n".into());
        assert_eq!(TaskMessage::decode(&message.encode()).ok(), Some(message.clone()));
        message.data = Some("x".repeat(MAX_INLINE_BYTES + 1));
        assert!(TaskMessage::decode(&message.encode()).is_err());
        assert!(TaskMessage::decode("not json").is_err());
        let escape = r#"{"job":"j1","stage":0,"task":"t","input":"jobs/j2/input/t/"}"#;
        assert!(TaskMessage::decode(escape).is_err());
        let slash = r#"{"job":"j1","stage":0,"task":"../x","input":"jobs/j1/input/t/"}"#;
        assert!(TaskMessage::decode(slash).is_err());
    }

    #[test]
    fn keys_are_deterministic() {
        assert_eq!(output_prefix("j", 1, "merge", REDUCE_TASK_ID), "jobs/j/stages/01-merge/all/");
        assert_eq!(chunk_task_id(42), "000042");
        assert_eq!(log_prefix("j", 0, "work", "000042"), "jobs/j/logs/00-work/000042/");
    }
}
