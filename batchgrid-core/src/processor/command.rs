//! Running a command as a task, like a batch job definition: the task's input is copied to a
//! scratch directory, the program runs with `{input}` and `{output}` replaced in its arguments
//! (and `BATCHGRID_*` variables set), and whatever it leaves in the output directory becomes the
//! task's results.
//!
//! `{input}` is the staged file for a first-stage task (a chunk or an input file), and a
//! directory holding the earlier stage's results otherwise. Inputs are read-only: where the
//! object store keeps the object as a local file, the command reads it in place (no copy per
//! task), so a command must not modify its input.
//!
//! The command's environment is built from an allowlist ([`INHERITED_ENV`], `HOME` and `TMPDIR`
//! set to the scratch directory, the stage's `env`, the `BATCHGRID_*` task variables), never inherited
//! from the worker. It runs under a supervisor that kills everything it started, however
//! detached, when it exits, times out, is given up, or the worker dies (see
//! [`super::supervise`]), and may write only its scratch directory, as its own user where one is
//! configured (see [`super::sandbox`]).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::AsyncReadExt;

use super::sandbox::TaskSandbox;
use super::{Processor, TaskContext, TaskFailure, TaskOutput};

/// Bytes of the command's standard error kept for the error text.
const STDERR_TAIL: usize = 2048;

/// Most bytes of each of a task's output streams stored; the rest is counted, not kept, so a
/// chatty command cannot fill the store or the worker's memory.
pub const LOG_CAP: usize = 1 << 20;

/// The names a task's captured streams are stored under, in its [`crate::task::log_prefix`].
pub const LOG_STREAMS: [&str; 2] = ["stdout.txt", "stderr.txt"];

/// A stage's command.
#[derive(Debug, Clone)]
pub struct CommandProcessor {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    sandbox: Arc<TaskSandbox>,
}

impl CommandProcessor {
    /// A processor running `argv` with extra `env`, confined by `sandbox`. A bare program name
    /// is looked up on `PATH` once here rather than on every task.
    pub fn new(mut argv: Vec<String>, env: BTreeMap<String, String>, sandbox: Arc<TaskSandbox>) -> Self {
        if let Some(program) = argv.first_mut() {
            if !program.contains('/') {
                let found = std::env::var_os("PATH").and_then(|paths| {
                    std::env::split_paths(&paths).map(|dir| dir.join(&*program)).find(|path| path.is_file())
                });
                if let Some(path) = found {
                    *program = path.to_string_lossy().into_owned();
                }
            }
        }
        Self { argv, env, sandbox }
    }
}

/// Has the supervisor kill everything the command started if the task is dropped (timed out,
/// given up) before the supervisor has been waited for.
struct StopGuard(Option<i32>);

impl StopGuard {
    /// The supervisor has been reaped: its id may now belong to someone else.
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            super::supervise::stop(pid);
        }
    }
}

/// Variables of the worker's environment a task inherits: the locale, the time zone and the
/// search path. Everything else (cloud credentials, the database URL, the API token) stays
/// out: a task sees only these, its stage's `env` and its `BATCHGRID_*` variables.
pub const INHERITED_ENV: [&str; 4] = ["PATH", "LANG", "LC_ALL", "TZ"];

/// `PATH` for a task when the worker has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Whether `name` is one path component (task ids are; this keeps a bad one inside the input).
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\'])
}

fn failure(context: &str, error: impl std::fmt::Display) -> TaskFailure {
    TaskFailure::new(format!("{context}: {error}"))
}

#[async_trait]
impl Processor for CommandProcessor {
    async fn process(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskFailure> {
        let output_dir = ctx.scratch.join("out");
        tokio::fs::create_dir_all(&output_dir).await.map_err(|e| failure("creating scratch directory", e))?;

        let mut bytes_in = 0;
        // A task user cannot read the embedded store's files in place; it gets a copy.
        let (input_store, input_key) = ctx.input_object();
        let in_place = if ctx.single_input()
            && ctx.inline.is_none()
            && ctx.input_file.is_none()
            && self.sandbox.user().is_none()
        {
            input_store.local_path(input_key)
        } else {
            None
        };
        let input_path = if let Some(path) = &ctx.input_file {
            bytes_in += tokio::fs::metadata(path).await.map(|m| m.len()).unwrap_or(0);
            path.clone()
        } else if let Some(data) = &ctx.inline {
            // A fixed name, rewritten in place task after task: no inode churn per task.
            let local = ctx.scratch.join(crate::scratch::reused_input_name(&ctx.input));
            overwrite(&local, data).await.map_err(|e| failure("writing inline input", e))?;
            bytes_in += data.len() as u64;
            local
        } else if let Some(path) = in_place {
            bytes_in += tokio::fs::metadata(&path).await.map(|m| m.len()).unwrap_or(0);
            path
        } else if ctx.single_input() {
            let name = ctx.input.rsplit('/').next().unwrap_or("input");
            let local = ctx.scratch.join(name);
            bytes_in += input_store.get_to_file(input_key, &local).await?;
            local
        } else {
            let input_dir = ctx.scratch.join("in");
            for key in ctx.input_keys().await? {
                let relative = key.strip_prefix(&ctx.input).unwrap_or(&key);
                let local = input_dir.join(relative);
                if let Some(parent) = local.parent() {
                    tokio::fs::create_dir_all(parent).await.map_err(|e| failure("creating scratch directory", e))?;
                }
                bytes_in += ctx.store.get_to_file(&key, &local).await?;
            }
            tokio::fs::create_dir_all(&input_dir).await.map_err(|e| failure("creating scratch directory", e))?;
            // A task that wrote nothing has no objects, so no directory came from the listing;
            // a reduce is promised one per task of the stage before all the same.
            for task in ctx.input_tasks.iter().filter(|t| is_plain_name(t)) {
                tokio::fs::create_dir_all(input_dir.join(task))
                    .await
                    .map_err(|e| failure("creating an input directory", e))?;
            }
            input_dir
        };

        let substitute = |arg: &str| {
            arg.replace("{input}", &input_path.to_string_lossy()).replace("{output}", &output_dir.to_string_lossy())
        };
        let Some((program, args)) = self.argv.split_first() else {
            return Err(TaskFailure::new("empty command"));
        };
        let mut command = tokio::process::Command::new(program);
        // Built from an allowlist, never inherited: the worker's environment holds its
        // credentials and secrets.
        command.env_clear().env("PATH", DEFAULT_PATH);
        for name in INHERITED_ENV {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command
            .args(args.iter().map(|a| substitute(a)))
            .env("HOME", &ctx.scratch)
            .env("TMPDIR", &ctx.scratch)
            .envs(&self.env)
            // The task role's credentials, after the stage's `env`: a job cannot replace them.
            .envs(ctx.aws.iter().flat_map(|aws| aws.env()))
            .env("BATCHGRID_INPUT", &input_path)
            .env("BATCHGRID_OUTPUT_DIR", &output_dir)
            .env("BATCHGRID_JOB_ID", &ctx.job_id)
            .env("BATCHGRID_STAGE", &ctx.stage_name)
            .env("BATCHGRID_TASK_ID", &ctx.task_id)
            .env("BATCHGRID_ATTEMPT", ctx.attempt.to_string())
            .current_dir(&ctx.scratch)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Not `kill_on_drop`: a SIGKILLed supervisor could not kill what the command
            // started; the guard asks it to (and tokio reaps it once it has exited).
            .process_group(0);
        let confinement = self.sandbox.for_task(&ctx.scratch).map_err(|e| failure("sandboxing the task", e))?;
        super::supervise::die_with_worker(&mut command, confinement.confinement());
        let mut child = command.spawn().map_err(|e| failure(&format!("starting `{program}`"), e))?;
        drop(confinement);
        let mut guard = StopGuard(child.id().and_then(|id| i32::try_from(id).ok()));

        // Drain both streams while the command runs (a full pipe would stall it). They are
        // the task's, not the worker's: on an instance the worker's own output is its JSON log,
        // into which a command could otherwise write forged lines.
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let wait = async {
            let status = child.wait().await;
            if status.is_ok() {
                // Reaped: from here its id may be another process's, never to be signalled.
                guard.disarm();
            }
            status
        };
        let (status, out, mut err) = tokio::join!(wait, capture(stdout), capture(stderr));
        let status = status.map_err(|e| failure(&format!("waiting for `{program}`"), e))?;
        let tail = std::mem::take(&mut err.tail);
        store_logs(ctx, out, err).await;
        if !status.success() {
            let tail =
                String::from_utf8_lossy(&tail[tail.len().saturating_sub(STDERR_TAIL)..]).trim().replace('\n', " | ");
            let how = match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
                (Some(code), _) => format!("exit status {code}"),
                (None, Some(signal)) => format!("killed by signal {signal}"),
                (None, None) => "failed".to_owned(),
            };
            let message =
                if tail.is_empty() { format!("`{program}` {how}") } else { format!("`{program}` {how}: {tail}") };
            return Err(TaskFailure { message, exit_status: status.code() });
        }

        let bytes_out = upload_outputs(ctx, &output_dir).await?;
        Ok(TaskOutput { bytes_in, bytes_out })
    }
}

/// One output stream of a task: its first [`LOG_CAP`] bytes, how many more there were, and
/// its last [`STDERR_TAIL`] bytes (for the error text).
#[derive(Debug, Default)]
struct Captured {
    kept: Vec<u8>,
    dropped: u64,
    tail: Vec<u8>,
}

impl Captured {
    /// What is stored: the kept bytes, and a note of what was not kept.
    fn stored(self) -> Vec<u8> {
        let mut text = self.kept;
        if self.dropped > 0 {
            if !text.ends_with(b"\n") {
                text.push(b'\n');
            }
            text.extend_from_slice(
                format!("[batchgrid: output truncated at {LOG_CAP} bytes; {} more not kept]\n", self.dropped)
                    .as_bytes(),
            );
        }
        text
    }
}

/// Reads `stream` to its end, keeping what [`Captured`] says.
async fn capture(stream: Option<impl tokio::io::AsyncRead + Unpin>) -> Captured {
    let mut captured = Captured::default();
    let Some(mut stream) = stream else {
        return captured;
    };
    let mut buffer = [0u8; 8192];
    // A read error ends the capture like the end of the stream: the command's status decides.
    while let Ok(n) = stream.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        let chunk = &buffer[..n];
        let room = LOG_CAP.saturating_sub(captured.kept.len()).min(n);
        captured.kept.extend_from_slice(&chunk[..room]);
        captured.dropped += (n - room) as u64;
        captured.tail.extend_from_slice(chunk);
        if captured.tail.len() > 4 * STDERR_TAIL {
            captured.tail.drain(..captured.tail.len() - STDERR_TAIL);
        }
    }
    captured
}

/// Stores a task's captured streams under its log prefix. Empty streams are stored only on a
/// retry (to replace an earlier attempt's), sparing two requests per quiet task. A failure to
/// store them is logged, not the task's: its results decide its outcome.
async fn store_logs(ctx: &TaskContext, out: Captured, err: Captured) {
    let prefix = crate::task::log_prefix(&ctx.job_id, ctx.stage, &ctx.stage_name, &ctx.task_id);
    for (name, captured) in LOG_STREAMS.into_iter().zip([out, err]) {
        if captured.kept.is_empty() && ctx.attempt <= 1 {
            continue;
        }
        let key = format!("{prefix}{name}");
        if let Err(error) = ctx.store.put(&key, bytes::Bytes::from(captured.stored())).await {
            tracing::warn!(%error, %key, "could not store the task's output");
        }
    }
}

/// Replaces a file's contents without truncating it first, so its blocks are reused.
async fn overwrite(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path).await?;
    file.write_all(data).await?;
    file.set_len(data.len() as u64).await?;
    file.flush().await
}

/// Uploads everything under `dir` to the task's output prefix, then removes results a previous
/// attempt left that this one did not write.
async fn upload_outputs(ctx: &TaskContext, dir: &Path) -> Result<u64, TaskFailure> {
    let files = tokio::task::spawn_blocking({
        let dir = dir.to_path_buf();
        move || list_files(&dir)
    })
    .await
    .map_err(|e| failure("listing outputs", e))?
    .map_err(|e| failure("listing outputs", e))?;
    let mut written = HashSet::new();
    let mut bytes_out = 0;
    for (path, relative) in files {
        let key = format!("{}{relative}", ctx.output_prefix);
        bytes_out += ctx.store.put_file(&key, &path).await?;
        written.insert(key);
    }
    let stale: Vec<String> =
        ctx.store.list(&ctx.output_prefix).await?.into_iter().map(|o| o.key).filter(|k| !written.contains(k)).collect();
    if !stale.is_empty() {
        ctx.store.delete(&stale).await?;
    }
    Ok(bytes_out)
}

fn list_files(root: &Path) -> std::io::Result<Vec<(PathBuf, String)>> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                let path = entry.path();
                let relative = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
                files.push((path, relative));
            }
        }
    }
    files.sort();
    Ok(files)
}
