//! What a task runs. A stage names either a command (see [`command`]) or a [`Processor`]
//! registered by name in a [`ProcessorRegistry`]; teams that build their own worker binary
//! register theirs next to the built-in ones.

pub mod command;
pub mod sandbox;
pub mod supervise;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::store::{ObjectMeta, ObjectRange, ObjectStore, StoreError};

/// Everything a task may know and touch.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// Job id.
    pub job_id: String,
    /// Stage position.
    pub stage: u32,
    /// Stage name.
    pub stage_name: String,
    /// Task id.
    pub task_id: String,
    /// Delivery number, from 1.
    pub attempt: u32,
    /// The task's input: one object key, or a prefix ending in `/` (every object under it).
    pub input: String,
    /// For a reduce task, the tasks of the stage before that completed, in order: each has a
    /// subdirectory of the input, empty when it wrote nothing (no object is stored for those).
    pub input_tasks: Vec<String>,
    /// A small input that came inside the task message; `input` then only names it.
    pub inline: Option<Bytes>,
    /// The input already in a scratch file (a byte range of a local file, copied there by the
    /// worker); `input` then only names it.
    pub input_file: Option<PathBuf>,
    /// An input object read where it lies, outside the grid's store (an original S3 object
    /// of a per-file split or a manifest); `input` then only names it.
    pub original: Option<ObjectRange>,
    /// The task's results go under this prefix (deterministic per job, stage and task).
    pub output_prefix: String,
    /// The stage's `params`.
    pub params: serde_json::Value,
    /// The grid's object store.
    pub store: Arc<dyn ObjectStore>,
    /// An empty directory for scratch files, emptied by the caller after the task.
    pub scratch: PathBuf,
    /// The task role's credentials, when the worker has a task role (never the worker's own).
    pub aws: Option<Arc<crate::task_role::TaskCredentials>>,
}

impl TaskContext {
    /// Whether the input is a single object rather than a prefix.
    pub fn single_input(&self) -> bool {
        !self.input.ends_with('/')
    }

    /// The whole input of a single-input task: the inline data, or the object.
    pub async fn read_single_input(&self) -> Result<Bytes, StoreError> {
        if let Some(path) = &self.input_file {
            return tokio::fs::read(path)
                .await
                .map(Bytes::from)
                .map_err(|e| StoreError::backend(format!("reading {}", path.display()), e));
        }
        match &self.inline {
            Some(data) => Ok(data.clone()),
            None => {
                let (store, key) = self.input_object();
                store.get(key).await
            }
        }
    }

    /// The store and key a single input object is read from: the original object where the
    /// task reads one in place, the grid's store otherwise.
    pub fn input_object(&self) -> (&dyn ObjectStore, &str) {
        match &self.original {
            Some(original) => (original.store.as_ref(), &original.key),
            None => (self.store.as_ref(), &self.input),
        }
    }

    /// Keys of the task's input objects, in key order (inline input has none in the store).
    pub async fn input_keys(&self) -> Result<Vec<String>, StoreError> {
        if self.single_input() {
            return Ok(vec![self.input.clone()]);
        }
        Ok(self.store.list(&self.input).await?.into_iter().map(|o: ObjectMeta| o.key).collect())
    }

    /// Writes one result object, `name` relative to the task's output prefix.
    pub async fn write_output(&self, name: &str, data: Bytes) -> Result<u64, StoreError> {
        let size = data.len() as u64;
        self.store.put(&format!("{}{name}", self.output_prefix), data).await?;
        Ok(size)
    }
}

/// What a successful task reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskOutput {
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
}

/// Why a task failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TaskFailure {
    /// Error text for the report.
    pub message: String,
    /// A command's exit status, when it has one.
    pub exit_status: Option<i32>,
}

impl TaskFailure {
    /// A failure with a message and no exit status.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), exit_status: None }
    }
}

impl From<StoreError> for TaskFailure {
    fn from(error: StoreError) -> Self {
        TaskFailure::new(error.to_string())
    }
}

/// Task logic written in Rust. Results must go under `ctx.output_prefix` so that running a task
/// twice overwrites instead of duplicating.
#[async_trait]
pub trait Processor: Send + Sync {
    /// Runs one task.
    async fn process(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskFailure>;
}

/// Processors known to a worker, by name.
#[derive(Clone, Default)]
pub struct ProcessorRegistry {
    processors: HashMap<String, Arc<dyn Processor>>,
}

impl std::fmt::Debug for ProcessorRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.processors.keys().collect();
        names.sort();
        f.debug_struct("ProcessorRegistry").field("processors", &names).finish()
    }
}

impl ProcessorRegistry {
    /// A registry holding the built-in processors (`noop`, `concat`).
    pub fn with_builtins() -> Self {
        let mut registry = Self::default();
        registry.register("noop", Noop);
        registry.register("concat", Concat);
        registry
    }

    /// Adds or replaces a processor.
    pub fn register(&mut self, name: &str, processor: impl Processor + 'static) -> &mut Self {
        self.processors.insert(name.to_owned(), Arc::new(processor));
        self
    }

    /// Looks a processor up.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Processor>> {
        self.processors.get(name).cloned()
    }
}

/// Does nothing: for measuring the grid's own overhead.
#[derive(Debug, Clone, Copy)]
pub struct Noop;

#[async_trait]
impl Processor for Noop {
    async fn process(&self, _ctx: &TaskContext) -> Result<TaskOutput, TaskFailure> {
        Ok(TaskOutput::default())
    }
}

/// Concatenates every input object, in key order, into one output object named `concat`.
#[derive(Debug, Clone, Copy)]
pub struct Concat;

#[async_trait]
impl Processor for Concat {
    async fn process(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskFailure> {
        let mut joined = Vec::new();
        if ctx.single_input() {
            joined.extend_from_slice(&ctx.read_single_input().await?);
        } else {
            for key in ctx.input_keys().await? {
                joined.extend_from_slice(&ctx.store.get(&key).await?);
            }
        }
        let bytes_in = joined.len() as u64;
        let bytes_out = ctx.write_output("concat", Bytes::from(joined)).await?;
        Ok(TaskOutput { bytes_in, bytes_out })
    }
}
