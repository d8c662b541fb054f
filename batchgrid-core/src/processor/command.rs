//! Running a command as a task, like a batch job definition: the task's input is copied to a
//! scratch directory, the program runs with `{input}` and `{output}` replaced in its arguments
//! (and `BATCHGRID_*` variables set), and whatever it leaves in the output directory becomes the
//! task's results.
//!
//! `{input}` is the staged file for a first-stage task, and a directory holding the earlier
//! stage's results otherwise. The command runs in its own process group, which is killed
//! whole when the task times out or the worker gives the task up.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::AsyncReadExt;

use super::{Processor, TaskContext, TaskFailure, TaskOutput};

/// Bytes of the command's standard error kept for the error text.
const STDERR_TAIL: usize = 2048;

/// A stage's command.
#[derive(Debug, Clone)]
pub struct CommandProcessor {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
}

impl CommandProcessor {
    /// A processor running `argv` with extra `env`.
    pub fn new(argv: Vec<String>, env: BTreeMap<String, String>) -> Self {
        Self { argv, env }
    }
}

/// Kills the command's whole process group if the task is dropped before it exits.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

fn failure(context: &str, error: impl std::fmt::Display) -> TaskFailure {
    TaskFailure::new(format!("{context}: {error}"))
}

#[async_trait]
impl Processor for CommandProcessor {
    async fn process(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskFailure> {
        let input_dir = ctx.scratch.join("in");
        let output_dir = ctx.scratch.join("out");
        for dir in [&input_dir, &output_dir] {
            tokio::fs::create_dir_all(dir).await.map_err(|e| failure("creating scratch directory", e))?;
        }

        let mut bytes_in = 0;
        let mut input_path = input_dir.clone();
        let inputs = ctx.inputs().await?;
        for object in &inputs {
            let relative = object.key.strip_prefix(&ctx.input_prefix).unwrap_or(&object.key);
            let local = input_dir.join(relative);
            if let Some(parent) = local.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(|e| failure("creating scratch directory", e))?;
            }
            bytes_in += ctx.store.get_to_file(&object.key, &local).await?;
            if ctx.first_stage && inputs.len() == 1 {
                input_path = local;
            }
        }

        let substitute = |arg: &str| {
            arg.replace("{input}", &input_path.to_string_lossy()).replace("{output}", &output_dir.to_string_lossy())
        };
        let Some((program, args)) = self.argv.split_first() else {
            return Err(TaskFailure::new("empty command"));
        };
        let mut command = tokio::process::Command::new(program);
        command
            .args(args.iter().map(|a| substitute(a)))
            .envs(&self.env)
            .env("BATCHGRID_INPUT", &input_path)
            .env("BATCHGRID_OUTPUT_DIR", &output_dir)
            .env("BATCHGRID_JOB_ID", &ctx.job_id)
            .env("BATCHGRID_STAGE", &ctx.stage_name)
            .env("BATCHGRID_TASK_ID", &ctx.task_id)
            .env("BATCHGRID_ATTEMPT", ctx.attempt.to_string())
            .current_dir(&ctx.scratch)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| failure(&format!("starting `{program}`"), e))?;
        let _group = GroupGuard(child.id().and_then(|id| i32::try_from(id).ok()));

        // Drain stderr while the command runs (a full pipe would stall it), keeping the tail.
        let mut stderr = child.stderr.take();
        let drain = async {
            let mut tail: Vec<u8> = Vec::new();
            if let Some(stderr) = stderr.as_mut() {
                let mut buffer = [0u8; 8192];
                while let Ok(n) = stderr.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                    tail.extend_from_slice(&buffer[..n]);
                    if tail.len() > 4 * STDERR_TAIL {
                        tail.drain(..tail.len() - STDERR_TAIL);
                    }
                }
            }
            tail
        };
        let (status, tail) = tokio::join!(child.wait(), drain);
        let status = status.map_err(|e| failure(&format!("waiting for `{program}`"), e))?;
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
