//! Job specifications: the YAML a user writes, parsed strictly into a validated [`JobSpec`].
//!
//! Parsing happens in two steps, raw then validated: serde (with `deny_unknown_fields`) catches
//! unknown keys and wrong types with serde_yaml's own location, and the validation pass checks
//! values and cross-field rules, locating the offending field with [`locate`]. Every error names
//! the file, line and field on one line.

pub mod locate;
mod schedule;

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::schedule::vars::Occurrence;
use locate::position_suffix;
pub use locate::{FieldPath, Position};
pub use schedule::{schedule_document, ScheduleOverrides, ScheduleSpec, ONCE};

/// Largest job file accepted; a job file is configuration, not data.
const MAX_JOB_FILE_BYTES: usize = 1024 * 1024;

/// A job file problem, with where it was found.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{origin}{at}: {field}: {message}", at = position_suffix(.position))]
pub struct SpecError {
    /// The file (or flag) the bad value came from.
    pub origin: String,
    /// Line and column, when known.
    pub position: Option<Position>,
    /// The field path, e.g. `stages[0].split.lines`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// A validated job: every value in it has been checked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobSpec {
    /// Short name, used in job ids and reports.
    pub name: String,
    /// Where the job's data comes from.
    pub input: InputSpec,
    /// How the input becomes first-stage tasks.
    pub split: SplitSpec,
    /// Stages in order; the first is always a map stage.
    pub stages: Vec<StageSpec>,
    /// Where the final stage's results are copied when the job completes.
    pub output: OutputSpec,
    /// How failed tasks are retried.
    pub retry: RetryPolicy,
    /// What a stage's task failed for good means for the stages after it.
    #[serde(default)]
    pub on_stage_failure: StageFailurePolicy,
    /// How long after submission the job may run before it fails (`deadline:`); none by default.
    #[serde(default, with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Duration>,
    /// 0..=100 (`priority:`, default 50): when jobs share the grid, a higher-priority job's
    /// tasks are admitted to the queue first; jobs of equal priority share the workers.
    /// Changeable while the job runs (`batchgrid job priority`); this is the value at submit.
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// When the job fires by itself (`schedule:`); its paths and command may then use the
    /// occurrence's `{period}`, `{date}` and `{fire_time}`, filled in by [`JobSpec::for_occurrence`].
    // Boxed: most jobs have none, and every job is moved around.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Box<ScheduleSpec>>,
    /// Jobs that must complete before this one starts (`after:`), by name or id as written;
    /// the manager's submit replaces each with the id it names (see `service::dependencies`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
}

/// What a task failed for good (past its retries) does to the stages after its own.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StageFailurePolicy {
    /// No task of a later stage starts once a stage has a failed task: workers stop forwarding
    /// and drop later-stage tasks unrun, the manager opens no later stage, and the job ends
    /// `failed` when the stages up to the failed one have drained, naming the skipped stages.
    #[default]
    Stop,
    /// Later map stages go on with the tasks that succeeded; a reduce stage is still skipped
    /// when any stage before it has a failed task, since it would run over partial data.
    Continue,
}

/// The job's input.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum InputSpec {
    /// A local file or directory (absolute once validated).
    Local(PathBuf),
    /// Objects in S3: with a `lines` or `bytes` split the one object `key`, otherwise every
    /// object whose key starts with `key`.
    S3 {
        /// The bucket.
        bucket: String,
        /// Object key or key prefix (may be empty: the whole bucket).
        key: String,
    },
    /// A list of inputs (`input.manifest`), one task per listed object.
    Manifest {
        /// Where the list is: a local file or an `s3://` object, never another manifest.
        location: Box<InputSpec>,
        /// How it lists them.
        format: crate::manifest::ManifestFormat,
    },
}

impl InputSpec {
    /// Parses `s3://bucket/key`; `None` for anything else.
    pub fn parse_s3(text: &str) -> Option<Result<Self, String>> {
        let rest = text.strip_prefix("s3://")?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        Some(if valid_bucket {
            Ok(InputSpec::S3 { bucket: bucket.to_owned(), key: key.to_owned() })
        } else {
            Err(format!("`{bucket}` is not a valid S3 bucket name (3-63 of a-z, 0-9, `-`, `.`)"))
        })
    }

    /// `s3://bucket/key` or the local path, for messages.
    pub fn describe(&self) -> String {
        match self {
            InputSpec::Local(path) => path.display().to_string(),
            InputSpec::S3 { bucket, key } => format!("s3://{bucket}/{key}"),
            InputSpec::Manifest { location, .. } => format!("the inputs listed in {}", location.describe()),
        }
    }
}

/// How the input is cut into first-stage tasks.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SplitSpec {
    /// One task per input file.
    PerFile,
    /// Chunks of at most this many lines.
    Lines {
        /// Lines per chunk, header excluded.
        lines: NonZeroU64,
        /// Repeat the input's first line at the top of every chunk.
        header: bool,
    },
    /// Chunks of about this many bytes, always cut after a newline.
    Bytes {
        /// Target bytes per chunk; a chunk ends at the first line end at or past it.
        bytes: NonZeroU64,
        /// Repeat the input's first line at the top of every chunk.
        header: bool,
    },
}

/// Whether a stage fans out or gathers.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// One task per task of the stage before, streamed as each completes.
    #[default]
    Map,
    /// One task over all outputs of the stage before, once that stage has completed.
    Reduce,
}

/// One stage of a job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageSpec {
    /// Unique within the job.
    pub name: String,
    /// Map or reduce.
    pub kind: StageKind,
    /// What a task of this stage runs.
    pub run: StageRun,
    /// Per-task time limit.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// What a stage runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum StageRun {
    /// An executable; `{input}` and `{output}` in its arguments become the task's paths.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
        /// Extra environment variables.
        env: BTreeMap<String, String>,
    },
    /// A processor registered with the worker by name.
    Processor {
        /// Registered name.
        name: String,
        /// Free-form parameters handed to the processor.
        params: serde_json::Value,
    },
}

/// Where results land.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutputSpec {
    /// Local directory (absolute once validated).
    pub path: PathBuf,
}

/// Retry policy for failed tasks.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Failed runs before a task is dead-lettered and reported failed. A run that never ended
    /// (its worker released it on shutdown or died) is not a failed run.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles each attempt.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// Upper bound on the delay.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// Delay before retrying after failed attempt number `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

fn default_priority() -> u8 {
    crate::analytics::DEFAULT_PRIORITY
}

impl JobSpec {
    /// With `on_stage_failure: stop`, the index of the first stage with a task failed for
    /// good: no stage after it runs. The manager and the workers both decide by this.
    pub fn stop_stage(&self, stages: &[crate::analytics::StageProgress]) -> Option<usize> {
        match self.on_stage_failure {
            StageFailurePolicy::Stop => stages.iter().position(|s| s.failed > 0),
            StageFailurePolicy::Continue => None,
        }
    }

    /// The job one occurrence of its schedule runs: `{period}`, `{date}` and `{fire_time}`
    /// filled in, a local input checked to exist, and no schedule of its own. `origin` names
    /// the schedule in errors.
    pub fn for_occurrence(&self, occurrence: &Occurrence, origin: &str) -> Result<JobSpec, SpecError> {
        let fail = |field: &str, message: String| SpecError {
            origin: origin.to_owned(),
            position: None,
            field: field.to_owned(),
            message: format!("{message} (occurrence {})", occurrence.fire_time_text()),
        };
        let fill_path = |path: &Path, field: &str| -> Result<PathBuf, SpecError> {
            let text = path.to_string_lossy();
            if !schedule::has_variables(&text) {
                return Ok(path.to_path_buf());
            }
            occurrence.substitute(&text, &[]).map(PathBuf::from).map_err(|m| fail(field, m))
        };
        let mut spec = self.clone();
        spec.schedule = None;
        let fill_input = |input: &InputSpec, field: &str| -> Result<InputSpec, SpecError> {
            Ok(match input {
                InputSpec::Local(path) => {
                    let path = fill_path(path, field)?;
                    if !path.exists() {
                        return Err(fail(field, format!("input `{}` does not exist", path.display())));
                    }
                    InputSpec::Local(path)
                }
                InputSpec::S3 { bucket, key } => InputSpec::S3 {
                    bucket: bucket.clone(),
                    key: occurrence.substitute(key, &[]).map_err(|m| fail(field, m))?,
                },
                InputSpec::Manifest { .. } => input.clone(),
            })
        };
        spec.input = match &self.input {
            InputSpec::Manifest { location, format } => {
                InputSpec::Manifest { location: Box::new(fill_input(location, "input.manifest")?), format: *format }
            }
            other => fill_input(other, "input.path")?,
        };
        spec.output.path = fill_path(&self.output.path, "output.path")?;
        for (index, stage) in spec.stages.iter_mut().enumerate() {
            let StageRun::Command { argv, env } = &mut stage.run else { continue };
            let field = format!("stages[{index}]");
            for arg in argv.iter_mut() {
                *arg = occurrence
                    .substitute(arg, &schedule::COMMAND_PLACEHOLDERS)
                    .map_err(|m| fail(&format!("{field}.command"), m))?;
            }
            for value in env.values_mut() {
                *value = occurrence
                    .substitute(value, &schedule::COMMAND_PLACEHOLDERS)
                    .map_err(|m| fail(&format!("{field}.env"), m))?;
            }
        }
        Ok(spec)
    }

    /// Refuses to run a job that has a `schedule:` block as a one-off: its paths may hold
    /// occurrence variables that only a fire time fills in. Its schedule fires it
    /// (`batchgrid schedule add`), or the block is removed to run it once.
    pub fn refuse_if_scheduled(&self, origin: &str) -> Result<(), SpecError> {
        if self.schedule.is_none() {
            return Ok(());
        }
        Err(SpecError {
            origin: origin.to_owned(),
            position: None,
            field: "schedule".into(),
            message: "this job runs on its schedule: add it with `batchgrid schedule add`, or remove the \
                      `schedule:` block to run it once"
                .into(),
        })
    }

    /// Index of the last stage.
    pub fn last_stage(&self) -> usize {
        self.stages.len() - 1
    }

    /// Checks the job against a grid whose queue dead-letters after `max_receives` deliveries
    /// (unknown: nothing to check). `text` is the job document, when there is one, to say on
    /// which line the refused field is.
    pub fn check_against_grid(
        &self,
        max_receives: Option<u32>,
        text: Option<&str>,
        origin: &str,
    ) -> Result<(), SpecError> {
        let Some(max_receives) = max_receives else { return Ok(()) };
        let honoured = crate::queue::max_honoured_attempts(max_receives);
        if self.retry.max_attempts <= honoured {
            return Ok(());
        }
        let field = FieldPath::root().key("retry").key("max_attempts");
        Err(SpecError {
            origin: origin.to_owned(),
            position: text.and_then(|text| locate::locate(text, &field)),
            field: field.to_string(),
            message: format!(
                "{} attempts asked, but this grid honours at most {honoured}: its queue dead-letters a task after \
                 {max_receives} deliveries and keeps {} for releases (shutdown, spot notices)",
                self.retry.max_attempts,
                crate::queue::RELEASE_MARGIN
            ),
        })
    }
}

// ---- raw form: what serde reads ------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: String,
    input: RawInput,
    #[serde(default)]
    split: Option<RawSplit>,
    stages: Vec<RawStage>,
    output: RawOutput,
    #[serde(default)]
    retry: Option<RawRetry>,
    #[serde(default, with = "humantime_serde::option")]
    timeout: Option<Duration>,
    #[serde(default)]
    on_stage_failure: Option<StageFailurePolicy>,
    #[serde(default, with = "humantime_serde::option")]
    deadline: Option<Duration>,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    schedule: Option<schedule::RawSchedule>,
    #[serde(default)]
    after: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    manifest: Option<String>,
    #[serde(default)]
    format: Option<crate::manifest::ManifestFormat>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSplit {
    #[serde(default)]
    lines: Option<u64>,
    #[serde(default)]
    bytes: Option<ByteSize>,
    #[serde(default)]
    per_file: Option<bool>,
    #[serde(default)]
    header: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    name: String,
    #[serde(default)]
    kind: StageKind,
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    processor: Option<String>,
    #[serde(default)]
    params: Option<serde_json::Value>,
    #[serde(default, with = "humantime_serde::option")]
    timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    path: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default, with = "humantime_serde::option")]
    backoff: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    max_backoff: Option<Duration>,
}

/// A byte count written as an integer or with a unit (`64MiB`, `1GB`).
#[derive(Debug, Clone, Copy)]
struct ByteSize(u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Number(u64),
            Text(String),
        }
        match Either::deserialize(deserializer)? {
            Either::Number(n) => Ok(ByteSize(n)),
            Either::Text(text) => parse_byte_size(&text).map(ByteSize).map_err(serde::de::Error::custom),
        }
    }
}

/// Parses `123`, `64KiB`, `64MiB`, `2GiB`, `10KB`, `10MB`, `1GB`.
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().map_err(|_| format!("`{text}` is not a byte size such as 64MiB"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown unit `{other}` (use B, KB, MB, GB, KiB, MiB or GiB)")),
    };
    number.checked_mul(multiplier).ok_or_else(|| format!("`{text}` is too large"))
}

// ---- parsing and validation ----------------------------------------------------------------

/// Values given on the command line that replace the file's; relative paths here are taken
/// as they are (the caller resolves them against its working directory).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Replaces `input.path`.
    pub input: Option<PathBuf>,
    /// Replaces `output.path`.
    pub output: Option<PathBuf>,
    /// Replaces `after:` when not empty (`submit --after`).
    pub after: Vec<String>,
    /// Replaces `priority` (`submit --priority`).
    pub priority: Option<u8>,
}

/// Which inputs a job may name, and so what parsing may look at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputPolicy {
    /// Local paths (resolved and checked to exist) and any `s3://` URL: for `batchgrid run`
    /// and the CLI, where whoever writes the job file is the machine's operator.
    #[default]
    Operator,
    /// Only `s3://BUCKET/...` inside this bucket (the grid's raw bucket): for the manager's API,
    /// whose callers must not read the manager's own disk. Nothing on the local disk is looked
    /// at (no `stat` of the input, nor of a command's program), so errors cannot tell a caller
    /// which files exist there.
    RawBucket(String),
}

/// Reads and validates a job file.
pub fn load_job_file(path: &Path, overrides: &Overrides) -> Result<JobSpec, SpecError> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| SpecError {
        origin: origin.clone(),
        position: None,
        field: "(file)".into(),
        message: format!("cannot read job file: {e}"),
    })?;
    let text = String::from_utf8(bytes).map_err(|_| SpecError {
        origin: origin.clone(),
        position: None,
        field: "(file)".into(),
        message: "job file is not UTF-8".into(),
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse_job(&text, &origin, &base, overrides)
}

/// Parses and validates job YAML; relative paths resolve against `base_dir`.
pub fn parse_job(text: &str, origin: &str, base_dir: &Path, overrides: &Overrides) -> Result<JobSpec, SpecError> {
    parse_job_with_policy(text, origin, base_dir, overrides, &InputPolicy::Operator)
}

/// As [`parse_job`], admitting only the inputs `policy` allows; the policy is checked before
/// anything names a local path, so a refused input is never looked up on disk.
pub fn parse_job_with_policy(
    text: &str,
    origin: &str,
    base_dir: &Path,
    overrides: &Overrides,
    policy: &InputPolicy,
) -> Result<JobSpec, SpecError> {
    let error_at = |path: &FieldPath, message: String| SpecError {
        origin: origin.to_owned(),
        position: locate::locate(text, path),
        field: path.to_string(),
        message,
    };
    if text.len() > MAX_JOB_FILE_BYTES {
        return Err(error_at(&FieldPath::root(), format!("job file exceeds {MAX_JOB_FILE_BYTES} bytes")));
    }
    if let Some(position) = too_deep(text) {
        return Err(SpecError {
            origin: origin.to_owned(),
            position: Some(position),
            field: "(document)".into(),
            message: format!("nesting deeper than {MAX_FLOW_DEPTH} levels"),
        });
    }
    let deserializer = serde_yaml::Deserializer::from_str(text);
    let raw: RawJob = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let position = inner.location().map(|l| Position { line: l.line(), column: l.column() });
        SpecError {
            origin: origin.to_owned(),
            position,
            field: if field == "." { "(document)".into() } else { field },
            message: locate::bare_message(&inner.to_string()),
        }
    })?;
    Validator { error_at: &error_at, base_dir, overrides, policy }.job(raw)
}

/// Deepest `[`/`{` nesting accepted; real job files use three or four.
const MAX_FLOW_DEPTH: usize = 64;

/// Where flow nesting first exceeds [`MAX_FLOW_DEPTH`], if it does. libyaml's time grows with
/// the square of flow depth, so deep nesting is refused before parsing (a 1 MiB file of
/// brackets would otherwise take minutes). Quoted text and comments are skipped; a bracket in a
/// plain scalar may be over-counted, which only matters past the limit.
fn too_deep(text: &str) -> Option<Position> {
    let (mut depth, mut line, mut column) = (0usize, 1usize, 0usize);
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut previous = '\n';
    for c in text.chars() {
        column += 1;
        if c == '\n' {
            // Quoted scalars may span lines, so a quote stays open across them.
            (line, column, comment) = (line + 1, 0, false);
        } else if comment {
            // Skipped to the end of the line.
        } else if let Some(q) = quote {
            if c == q && !(q == '"' && previous == '\\') {
                quote = None;
            }
        } else {
            match c {
                // A quote opens a scalar only where a scalar can start (not in `don't`).
                '\'' | '"' if previous.is_whitespace() || matches!(previous, '[' | '{' | ',' | ':') => quote = Some(c),
                '#' if previous.is_whitespace() => comment = true,
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Some(Position { line, column });
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        previous = c;
    }
    None
}

struct Validator<'a, F: Fn(&FieldPath, String) -> SpecError> {
    error_at: &'a F,
    base_dir: &'a Path,
    overrides: &'a Overrides,
    policy: &'a InputPolicy,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

impl<F: Fn(&FieldPath, String) -> SpecError> Validator<'_, F> {
    fn job(&self, raw: RawJob) -> Result<JobSpec, SpecError> {
        let root = FieldPath::root();
        check_name(&raw.name).map_err(|m| (self.error_at)(&root.key("name"), m))?;
        let schedule = match raw.schedule {
            Some(raw) => Some(Box::new(schedule::validate(raw, self.error_at, self.base_dir, self.policy)?)),
            None => None,
        };
        let scheduled = schedule.is_some();

        let input = self.job_input(&raw.input, scheduled)?;
        let local_input = match &input {
            InputSpec::Local(path) => path.clone(),
            // Whether an S3 key is one object is known when the manager lists it.
            InputSpec::S3 { .. } | InputSpec::Manifest { .. } => PathBuf::new(),
        };
        let split = self.split(raw.split.as_ref(), &local_input)?;
        if matches!(input, InputSpec::Manifest { .. }) && split != SplitSpec::PerFile {
            return Err((self.error_at)(
                &root.key("split"),
                "a manifest gives one task per listed object; `lines` and `bytes` split one file".into(),
            ));
        }

        let default_timeout = match raw.timeout {
            Some(t) if t.is_zero() => {
                return Err((self.error_at)(&root.key("timeout"), "must be more than zero".into()))
            }
            Some(t) => t,
            None => DEFAULT_TIMEOUT,
        };
        if raw.stages.is_empty() {
            return Err((self.error_at)(&root.key("stages"), "a job needs at least one stage".into()));
        }
        let mut stages: Vec<StageSpec> = Vec::with_capacity(raw.stages.len());
        for (index, stage) in raw.stages.into_iter().enumerate() {
            let field = root.key("stages").index(index);
            let spec = self.stage(stage, &field, default_timeout)?;
            if index == 0 && spec.kind == StageKind::Reduce {
                return Err((self.error_at)(&field.key("kind"), "the first stage must be a map stage".into()));
            }
            if stages.iter().any(|s| s.name == spec.name) {
                return Err((self.error_at)(&field.key("name"), format!("stage name `{}` is used twice", spec.name)));
            }
            stages.push(spec);
        }

        let output = match &self.overrides.output {
            Some(path) => self.absolute(path),
            None => {
                let field = root.key("output").key("path");
                if raw.output.path.trim().is_empty() {
                    return Err((self.error_at)(&field, "must not be empty".into()));
                }
                if scheduled {
                    self.template(&raw.output.path, &field, &[])?;
                }
                self.absolute(Path::new(&raw.output.path))
            }
        };
        if scheduled {
            self.stage_templates(&stages)?;
        }

        let retry = self.retry(raw.retry.as_ref())?;
        if raw.deadline.is_some_and(|d| d.is_zero()) {
            return Err((self.error_at)(&root.key("deadline"), "must be more than zero".into()));
        }
        let after = self.after(raw.after.unwrap_or_default())?;
        let priority = self.priority(raw.priority)?;
        Ok(JobSpec {
            name: raw.name,
            input,
            split,
            stages,
            output: OutputSpec { path: output },
            retry,
            on_stage_failure: raw.on_stage_failure.unwrap_or_default(),
            deadline: raw.deadline,
            priority,
            schedule,
            after,
        })
    }

    /// The jobs this one waits for: the command line's `--after` over the file's `after:`.
    /// Each is a job name or id; whether it exists is checked by the manager, which knows.
    fn after(&self, from_file: Vec<String>) -> Result<Vec<String>, SpecError> {
        let (items, from_flag) =
            if self.overrides.after.is_empty() { (from_file, false) } else { (self.overrides.after.clone(), true) };
        let mut after: Vec<String> = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            let fail = |message: String| {
                if from_flag {
                    let origin = self.override_origin().to_owned();
                    SpecError { origin, position: None, field: "after".into(), message }
                } else {
                    (self.error_at)(&FieldPath::root().key("after").index(index), message)
                }
            };
            let item = item.trim().to_owned();
            // Names and ids share the name alphabet (an id is the name, `-` and a ULID).
            let valid = !item.is_empty()
                && item.len() <= 100
                && item.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                return Err(fail(format!("`{item}` is not a job name or id")));
            }
            if after.contains(&item) {
                return Err(fail(format!("`{item}` is named twice")));
            }
            after.push(item);
        }
        Ok(after)
    }

    /// The job's priority: the override, else the file's, else the default; 0..=100.
    fn priority(&self, raw: Option<i64>) -> Result<u8, SpecError> {
        let max = crate::analytics::MAX_PRIORITY;
        let range = format!("must be between 0 and {max} (higher runs first)");
        if let Some(priority) = self.overrides.priority {
            if priority > max {
                return Err(SpecError {
                    origin: self.override_origin().to_owned(),
                    position: None,
                    field: "priority".into(),
                    message: format!("{priority}: {range}"),
                });
            }
            return Ok(priority);
        }
        match raw {
            None => Ok(default_priority()),
            Some(value) => u8::try_from(value)
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| (self.error_at)(&FieldPath::root().key("priority"), format!("{value}: {range}"))),
        }
    }

    /// Checks a scheduled job's field for unknown `{variables}`; whether it uses any.
    fn template(&self, text: &str, field: &FieldPath, passthrough: &[&str]) -> Result<bool, SpecError> {
        schedule::sample_occurrence().substitute(text, passthrough).map_err(|m| (self.error_at)(field, m))?;
        Ok(schedule::has_variables(text))
    }

    /// Checks the commands' arguments and environments of a scheduled job.
    fn stage_templates(&self, stages: &[StageSpec]) -> Result<(), SpecError> {
        for (index, stage) in stages.iter().enumerate() {
            let StageRun::Command { argv, env } = &stage.run else { continue };
            let field = FieldPath::root().key("stages").index(index);
            for (i, arg) in argv.iter().enumerate() {
                self.template(arg, &field.key("command").index(i), &schedule::COMMAND_PLACEHOLDERS)?;
            }
            for (name, value) in env {
                self.template(value, &field.key("env").key(name), &schedule::COMMAND_PLACEHOLDERS)?;
            }
        }
        Ok(())
    }

    /// The job's input: `input.path` (or the override that replaces it), or `input.manifest`;
    /// exactly one of the two.
    fn job_input(&self, raw: &RawInput, scheduled: bool) -> Result<InputSpec, SpecError> {
        let field = FieldPath::root().key("input");
        if raw.format.is_some() && raw.manifest.is_none() {
            return Err((self.error_at)(&field.key("format"), "`format` describes a `manifest`".into()));
        }
        match (&self.overrides.input, &raw.path, &raw.manifest) {
            (Some(_), _, Some(_)) => Err((self.error_at)(
                &field.key("manifest"),
                format!(
                    "{} replaces `input.path`; this job lists its inputs in `input.manifest`",
                    self.override_name()
                ),
            )),
            (Some(path), _, None) => self.input(path, self.override_name(), None, false),
            (None, Some(path), None) => {
                let field = field.key("path");
                let templated = scheduled && self.template(path, &field, &[])?;
                self.input(Path::new(path), "input.path", Some(&field), templated)
            }
            (None, None, Some(manifest)) => {
                let field = field.key("manifest");
                let templated = scheduled && self.template(manifest, &field, &[])?;
                let location = self.input(Path::new(manifest), "input.manifest", Some(&field), templated)?;
                if let InputSpec::Local(path) = &location {
                    if path.is_dir() {
                        return Err((self.error_at)(&field, "a manifest is one file, not a directory".into()));
                    }
                }
                if matches!(&location, InputSpec::S3 { key, .. } if key.is_empty() || key.ends_with('/')) {
                    return Err((self.error_at)(&field, "a manifest is one object, not a prefix".into()));
                }
                let format = raw.format.unwrap_or_else(|| crate::manifest::ManifestFormat::for_name(manifest));
                Ok(InputSpec::Manifest { location: Box::new(location), format })
            }
            (None, _, _) => Err((self.error_at)(
                &field,
                "give exactly one of `path` (the input) or `manifest` (a list of inputs)".into(),
            )),
        }
    }

    /// Where an input override comes from: the CLI's `--input`, or the API's `?input=`.
    fn override_origin(&self) -> &'static str {
        match self.policy {
            InputPolicy::RawBucket(_) => "query",
            InputPolicy::Operator => "command line",
        }
    }

    fn override_name(&self) -> &'static str {
        match self.policy {
            InputPolicy::RawBucket(_) => "?input=",
            InputPolicy::Operator => "--input",
        }
    }

    fn absolute(&self, path: &Path) -> PathBuf {
        let joined = if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) };
        normalize(&std::path::absolute(&joined).unwrap_or(joined))
    }

    /// A local path that must exist, or an `s3://` URL. A `templated` local path (one with an
    /// occurrence's variables) names a different input each run, so it is checked at each fire.
    fn input(
        &self,
        path: &Path,
        name: &str,
        field: Option<&FieldPath>,
        templated: bool,
    ) -> Result<InputSpec, SpecError> {
        let fail = |message: String| match field {
            Some(field) => (self.error_at)(field, message),
            None => {
                SpecError { origin: self.override_origin().to_owned(), position: None, field: name.to_owned(), message }
            }
        };
        if let InputPolicy::RawBucket(raw_bucket) = self.policy {
            // Checked before anything else: a refused input is never resolved nor looked up,
            // and the message repeats nothing of it, so it says nothing about the disk.
            return match path.to_str().and_then(InputSpec::parse_s3) {
                Some(Ok(InputSpec::S3 { bucket, key }))
                    if bucket == *raw_bucket && !key.split('/').any(|part| part == ".." || part == ".") =>
                {
                    Ok(InputSpec::S3 { bucket, key })
                }
                _ => Err(fail(format!(
                    "the manager takes only inputs in the grid's raw bucket (`s3://{raw_bucket}/...`); \
                     upload local data there first (`batchgrid submit` does)"
                ))),
            };
        }
        match path.to_str().and_then(InputSpec::parse_s3) {
            Some(Ok(input)) => Ok(input),
            Some(Err(message)) => Err(fail(message)),
            None if templated => Ok(InputSpec::Local(self.absolute(path))),
            None => self.existing_path(path, name, field).map(InputSpec::Local),
        }
    }

    fn existing_path(&self, path: &Path, name: &str, field: Option<&FieldPath>) -> Result<PathBuf, SpecError> {
        let resolved = self.absolute(path);
        if resolved.exists() {
            return Ok(resolved);
        }
        let message = format!("input `{}` does not exist", resolved.display());
        Err(match field {
            Some(field) => (self.error_at)(field, message),
            None => SpecError { origin: "command line".to_owned(), position: None, field: name.to_owned(), message },
        })
    }

    fn split(&self, raw: Option<&RawSplit>, input: &Path) -> Result<SplitSpec, SpecError> {
        let field = FieldPath::root().key("split");
        let Some(raw) = raw else {
            return Ok(SplitSpec::PerFile);
        };
        let header = raw.header.unwrap_or(false);
        let chosen = [raw.lines.is_some(), raw.bytes.is_some(), raw.per_file == Some(true)];
        if chosen.iter().filter(|c| **c).count() > 1 {
            return Err((self.error_at)(&field, "choose one of `lines`, `bytes` or `per_file`".into()));
        }
        let chunked = raw.lines.is_some() || raw.bytes.is_some();
        if chunked && input.is_dir() {
            return Err((self.error_at)(
                &field,
                "`lines` and `bytes` split one file; a directory input is split per file".into(),
            ));
        }
        if header && !chunked {
            return Err((self.error_at)(
                &field.key("header"),
                "`header` only applies to `lines` or `bytes` splits".into(),
            ));
        }
        if let Some(lines) = raw.lines {
            let lines = NonZeroU64::new(lines)
                .ok_or_else(|| (self.error_at)(&field.key("lines"), "chunk size must be at least 1 line".into()))?;
            return Ok(SplitSpec::Lines { lines, header });
        }
        if let Some(ByteSize(bytes)) = raw.bytes {
            let bytes = NonZeroU64::new(bytes)
                .ok_or_else(|| (self.error_at)(&field.key("bytes"), "chunk size must be at least 1 byte".into()))?;
            return Ok(SplitSpec::Bytes { bytes, header });
        }
        Ok(SplitSpec::PerFile)
    }

    fn stage(&self, raw: RawStage, field: &FieldPath, default_timeout: Duration) -> Result<StageSpec, SpecError> {
        check_name(&raw.name).map_err(|m| (self.error_at)(&field.key("name"), m))?;
        let run = match (raw.command, raw.processor) {
            (Some(_), Some(_)) | (None, None) => {
                return Err((self.error_at)(field, "a stage needs exactly one of `command` or `processor`".into()))
            }
            (Some(argv), None) => {
                let Some(program) = argv.first() else {
                    return Err((self.error_at)(&field.key("command"), "must name a program".into()));
                };
                let program = self.program(program).map_err(|m| (self.error_at)(&field.key("command").index(0), m))?;
                let mut argv = argv;
                argv[0] = program;
                if raw.params.is_some() {
                    return Err((self.error_at)(
                        &field.key("params"),
                        "`params` is for processors; pass arguments to a command in `command`".into(),
                    ));
                }
                StageRun::Command { argv, env: raw.env.unwrap_or_default() }
            }
            (None, Some(name)) => {
                if name.trim().is_empty() {
                    return Err((self.error_at)(&field.key("processor"), "must name a registered processor".into()));
                }
                if raw.env.is_some() {
                    return Err((self.error_at)(&field.key("env"), "`env` is for commands".into()));
                }
                StageRun::Processor { name, params: raw.params.unwrap_or(serde_json::Value::Null) }
            }
        };
        let timeout = match raw.timeout {
            Some(t) if t.is_zero() => {
                return Err((self.error_at)(&field.key("timeout"), "must be more than zero".into()))
            }
            Some(t) => t,
            None => default_timeout,
        };
        Ok(StageSpec { name: raw.name, kind: raw.kind, run, timeout })
    }

    /// Resolves a command's program: a path relative to the job file, or a name on `PATH`.
    fn program(&self, program: &str) -> Result<String, String> {
        if matches!(self.policy, InputPolicy::RawBucket(_)) {
            // The program runs on a worker's image, not the manager's disk, which a caller of
            // the API must not be able to probe: only the shape is checked here, and a missing
            // program fails the task on the worker.
            return if program.contains('/') && !program.starts_with('/') {
                Err("a program given by path must be absolute on the worker's image".into())
            } else {
                Ok(program.to_owned())
            };
        }
        if program.contains('/') {
            let path = self.absolute(Path::new(program));
            return if path.is_file() {
                Ok(path.display().to_string())
            } else {
                Err(format!("program `{}` does not exist", path.display()))
            };
        }
        let on_path = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
            .unwrap_or(false);
        if on_path {
            Ok(program.to_owned())
        } else {
            Err(format!("program `{program}` is not on PATH"))
        }
    }

    fn retry(&self, raw: Option<&RawRetry>) -> Result<RetryPolicy, SpecError> {
        let field = FieldPath::root().key("retry");
        let mut policy =
            RetryPolicy { max_attempts: 3, backoff: Duration::from_secs(2), max_backoff: Duration::from_secs(60) };
        if let Some(raw) = raw {
            if let Some(n) = raw.max_attempts {
                if !(1..=100).contains(&n) {
                    return Err((self.error_at)(&field.key("max_attempts"), "must be between 1 and 100".into()));
                }
                policy.max_attempts = n;
            }
            if let Some(b) = raw.backoff {
                policy.backoff = b;
            }
            if let Some(m) = raw.max_backoff {
                policy.max_backoff = m;
            }
            if policy.max_backoff < policy.backoff {
                return Err((self.error_at)(&field.key("max_backoff"), "must not be less than `backoff`".into()));
            }
            if policy.max_backoff > Duration::from_secs(12 * 3600) {
                // SQS caps a message's visibility timeout at 12 hours.
                return Err((self.error_at)(&field.key("max_backoff"), "must be at most 12h".into()));
            }
        }
        Ok(policy)
    }
}

/// Removes `.` and `..` lexically, so reports show `/data/out` rather than `/jobs/../data/out`.
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Job and stage names: used in object keys and ids, so kept to a safe alphabet.
fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(format!("`{name}` is not a valid name (1-63 letters, digits, `-` or `_`, starting with a letter or digit)"))
    }
}

#[cfg(test)]
mod schedule_tests;
#[cfg(test)]
mod tests;
