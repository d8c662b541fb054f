//! `batchgrid submit|status|watch|results|cancel|workers`: the manager's API from the command
//! line. Local inputs are uploaded to the stack's raw bucket first, with a progress bar.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use batchgrid_core::analytics::JobState;
use batchgrid_core::manager::JobProgress;
use batchgrid_core::schedule::chrono::{self, DateTime, Utc};
use batchgrid_core::service::client::ApiClient;
use batchgrid_core::service::download::{self, DownloadSettings};
use batchgrid_core::service::{parse_at, JobStatus};
use batchgrid_core::spec::{load_job_file, InputSpec, Overrides};
use batchgrid_core::store::{ObjectStore, S3Store};
use indicatif::{ProgressBar, ProgressStyle};

use super::progress::ProgressView;
use super::stack::{api_token, Stack, StackArgs};
use crate::env;

/// How to reach the manager.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The manager's API.
    #[arg(long, env = env::MANAGER_URL, default_value = "http://127.0.0.1:8080")]
    pub(crate) manager: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

impl Connection {
    pub(crate) async fn client(&self) -> anyhow::Result<ApiClient> {
        Ok(ApiClient::new(&self.manager, api_token(None, None).await?)?)
    }

    /// A client for a deployed stack: the token from the variables, or else from the secret
    /// the stack's outputs name.
    pub(crate) async fn client_for(&self, stack: &Stack) -> anyhow::Result<ApiClient> {
        let token = api_token(Some(&stack.settings.region), stack.api_token_secret_arn.as_deref()).await?;
        Ok(ApiClient::new(&self.manager, token)?)
    }
}

/// Arguments of `batchgrid submit`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The job file.
    job: PathBuf,
    /// Input to use instead of the file's `input.path` (a local path or `s3://bucket/key`).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Follow the job until it ends, as `watch` does.
    #[arg(long)]
    watch: bool,
    /// With `--watch`, download the results here when the job completes.
    #[arg(long, requires = "watch")]
    download: Option<PathBuf>,
    /// Wait until these jobs (names or ids, comma-separated or repeated) have completed;
    /// replaces the file's `after:`.
    #[arg(long, value_delimiter = ',')]
    after: Vec<String>,
    /// Run once at this time instead of now (RFC 3339 with its offset, e.g. 2026-12-31T23:00+01:00).
    #[arg(long, value_name = "TIME", conflicts_with_all = ["in_", "watch"])]
    at: Option<String>,
    /// Run once this long from now instead of now (e.g. 2h, 30m).
    #[arg(long = "in", id = "in_", value_name = "DURATION", value_parser = super::parse_duration, conflicts_with = "watch")]
    in_: Option<Duration>,
    /// Priority instead of the file's `priority` (0..=100, higher first; default 50).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
    priority: Option<u8>,
    #[command(flatten)]
    stack: StackArgs,
    #[command(flatten)]
    connection: Connection,
}

/// Arguments of the commands about one job.
#[derive(Debug, clap::Args)]
pub struct JobArgs {
    /// The job's id.
    job: String,
    #[command(flatten)]
    connection: Connection,
}

/// Arguments of `batchgrid status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The job's id; without it, every job, newest first.
    job: Option<String>,
    #[command(flatten)]
    connection: Connection,
}

/// Arguments of `batchgrid results`.
#[derive(Debug, clap::Args)]
pub struct ResultsArgs {
    /// The job's id.
    job: String,
    /// Download every result object into this directory (files already there with their
    /// listed size are kept, so a second run fetches only what is missing).
    #[arg(long)]
    download: Option<PathBuf>,
    /// Stream every file through the manager instead of straight from S3 (for a machine that
    /// reaches the manager but not the results bucket).
    #[arg(long, requires = "download")]
    through_manager: bool,
    /// Files downloaded at once.
    #[arg(long, default_value_t = download::DEFAULT_PARALLEL as u16, value_parser = clap::value_parser!(u16).range(1..=256))]
    parallel: u16,
    #[command(flatten)]
    connection: Connection,
}

/// Uploads a local input to the raw bucket under a fresh prefix; returns its `s3://` URL.
pub(crate) async fn upload(stack: &StackArgs, name: &str, input: &Path, quiet: bool) -> anyhow::Result<String> {
    let stack = stack.resolve()?;
    let config = batchgrid_core::aws::sdk_config(&stack.settings.region).await;
    let store = S3Store::new(batchgrid_core::aws::s3_client(&config, &Default::default()), &stack.raw_bucket, "");
    let prefix = format!("inputs/{name}-{}", ulid::Ulid::new().to_string().to_lowercase());
    let mut files: Vec<(String, PathBuf, u64)> = Vec::new();
    if input.is_dir() {
        let mut pending = vec![input.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
                let path = entry.with_context(|| format!("reading {}", dir.display()))?.path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    let relative = path.strip_prefix(input).unwrap_or(&path).to_string_lossy().replace('\\', "/");
                    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    files.push((format!("{prefix}/{relative}"), path, size));
                }
            }
        }
        files.sort();
    } else {
        let file_name = input.file_name().and_then(|n| n.to_str()).unwrap_or("input");
        let size = std::fs::metadata(input).with_context(|| format!("reading {}", input.display()))?.len();
        files.push((format!("{prefix}/{file_name}"), input.to_path_buf(), size));
    }
    let total: u64 = files.iter().map(|f| f.2).sum();
    let bar = if quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("uploading {bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    eprintln!(
        "uploading {} ({} file(s), {total} bytes) to s3://{}/{prefix}/",
        input.display(),
        files.len(),
        stack.raw_bucket
    );
    for (key, path, size) in &files {
        bar.set_message(key.rsplit('/').next().unwrap_or_default().to_owned());
        store.put_file(key, path).await.with_context(|| format!("uploading {}", path.display()))?;
        bar.inc(*size);
    }
    bar.finish_and_clear();
    Ok(match files.as_slice() {
        [(key, _, _)] if !input.is_dir() => format!("s3://{}/{key}", stack.raw_bucket),
        _ => format!("s3://{}/{prefix}/", stack.raw_bucket),
    })
}

/// Submits a job, uploading a local input first.
pub async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        input: args.input.as_deref().map(super::run::from_cwd),
        output: None,
        after: args.after.clone(),
        priority: args.priority,
    };
    // Checked here first, so errors name the user's file and line before anything is uploaded.
    let spec = load_job_file(&args.job, &overrides)?;
    let at = start_time(args.at.as_deref(), args.in_)?;
    let client = args.connection.client().await?;
    // A manifest job goes as written: `input.manifest` names an S3 object the manager reads.
    let input = match &spec.input {
        InputSpec::Local(path) => Some(upload(&args.stack, &spec.name, path, args.connection.json).await?),
        InputSpec::Manifest { location, .. } if matches!(location.as_ref(), InputSpec::Local(_)) => anyhow::bail!(
            "{}: input.manifest: a local manifest is for `batchgrid run`; upload it (and the files it lists) \
             to S3 and name it by its s3:// URL",
            args.job.display()
        ),
        InputSpec::Manifest { .. } => None,
        other => Some(other.describe()),
    };
    let shown = input.clone().unwrap_or_else(|| spec.input.describe());
    let document = std::fs::read_to_string(&args.job).with_context(|| format!("reading {}", args.job.display()))?;
    let origin = args.job.display().to_string();
    if let Some(at) = at {
        let deferred = client.submit_at(&document, &origin, input.as_deref(), &args.after, &at.to_rfc3339()).await?;
        if args.connection.json {
            println!("{}", serde_json::json!({ "schedule": deferred.schedule, "at": deferred.at, "input": shown }));
        } else {
            eprintln!(
                "job {} runs once at {} (`batchgrid schedule show {}` names its job once started)",
                spec.name, deferred.at, deferred.schedule
            );
            println!("{}", deferred.schedule);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let id = client.submit_with(&document, &origin, input.as_deref(), &args.after, args.priority).await?;
    if args.connection.json && !args.watch {
        println!("{}", serde_json::json!({ "job_id": id, "input": shown }));
    } else {
        eprintln!("submitted job {id} (input {shown})");
        if !args.watch {
            println!("{id}");
        }
    }
    if args.watch {
        return follow(&client, &id, args.connection.json, args.download.as_deref()).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// When a deferred run starts: `--at`, or `--in` from now; a time already past is refused
/// here, before anything is uploaded (the manager checks again against its own clock).
fn start_time(at: Option<&str>, after: Option<Duration>) -> anyhow::Result<Option<DateTime<Utc>>> {
    let now = DateTime::<Utc>::from(std::time::SystemTime::now());
    let at = match (at, after) {
        (Some(text), _) => parse_at(text).map_err(|e| anyhow::anyhow!("--at: {e}"))?,
        (None, Some(delay)) => {
            let delay = chrono::Duration::from_std(delay).map_err(|_| anyhow::anyhow!("--in: too far ahead"))?;
            now + delay
        }
        (None, None) => return Ok(None),
    };
    anyhow::ensure!(at > now, "--at: {} is in the past (it is now {})", at.to_rfc3339(), now.to_rfc3339());
    Ok(Some(at))
}

fn progress_of(status: &JobStatus) -> JobProgress {
    JobProgress { state: status.state, stages: status.stages.clone(), error: status.error.clone() }
}

/// Polls a job until it ends, showing progress; prints its report, downloads its results if
/// asked, and exits non-zero unless it completed.
async fn follow(client: &ApiClient, id: &str, json: bool, download: Option<&Path>) -> anyhow::Result<ExitCode> {
    let mut view = ProgressView::new(json);
    let status = loop {
        let status = client.status(id).await?;
        view.update_with_eta(id, &progress_of(&status), status.eta_seconds.map(Duration::from_secs));
        if status.state.is_terminal() {
            break status;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    view.finish();
    // The report is stored just after the job's state turns final.
    let mut results = client.results(id).await?;
    for _ in 0..40 {
        if results.report.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        results = client.results(id).await?;
    }
    if let Some(dir) = download {
        if status.state == JobState::Completed {
            download_results(client, id, dir, &DownloadSettings::default()).await?;
        }
    }
    match (&results.report, json) {
        (Some(report), true) => println!("{}", serde_json::to_string_pretty(report)?),
        (Some(report), false) => print!("{}", report.render_text()),
        (None, _) => println!("job {id} {}", status.state),
    }
    Ok(if status.state == JobState::Completed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

async fn download_results(client: &ApiClient, id: &str, dir: &Path, settings: &DownloadSettings) -> anyhow::Result<()> {
    let summary = download::download_results(client, id, dir, settings)
        .await
        .with_context(|| format!("downloading job {id}'s results into {}", dir.display()))?;
    eprintln!(
        "{} result file(s) in {}: {} fetched ({} straight from S3, {} bytes), {} already complete",
        summary.files,
        dir.display(),
        summary.fetched,
        summary.direct,
        summary.bytes,
        summary.skipped
    );
    Ok(())
}

/// Prints a job's state and per-stage progress, or every job.
pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = args.connection.client().await?;
    // Health first: when the analytics store is down, it says so even if the rest cannot answer.
    let health = client.health().await.context("asking the manager for its health")?;
    if !args.connection.json {
        for line in health.describe() {
            eprintln!("{line}");
        }
    }
    let Some(job) = &args.job else {
        let jobs = client.jobs().await?;
        if args.connection.json {
            println!("{}", serde_json::to_string_pretty(&jobs)?);
        } else {
            println!("{:<44} {:<10} {:<24}", "job", "state", "submitted");
            for job in jobs {
                let submitted =
                    std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(job.submitted_at).unwrap_or(0));
                println!("{:<44} {:<10} {}", job.id, job.state.as_str(), humantime::format_rfc3339_seconds(submitted));
            }
        }
        return Ok(ExitCode::SUCCESS);
    };
    let status = client.status(job).await?;
    if args.connection.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("job {} ({}) {}", status.id, status.name, status.state);
    let paused = if status.paused { ", paused" } else { "" };
    println!("  priority {}{paused}, {} task(s) waiting for admission", status.priority, status.pending);
    if let (Some(rate), Some(eta)) = (status.tasks_per_second, status.eta_seconds) {
        println!("  {rate:.1} tasks/s; about {} to go", humantime::format_duration(Duration::from_secs(eta)));
    }
    if let Some(error) = &status.error {
        println!("  reason: {error}");
    }
    if let Some(note) = &status.watchdog {
        println!("  watchdog: {note}");
    }
    for stage in &status.stages {
        let expected = stage.expected.map_or_else(|| "?".to_owned(), |n| n.to_string());
        println!(
            "  {:<20} {:>9}/{:<9} done  {:>6} failed  {:>6} retrying",
            stage.name, stage.done, expected, stage.failed, stage.retrying
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows a job to its end.
pub async fn watch(args: JobArgs) -> anyhow::Result<ExitCode> {
    let client = args.connection.client().await?;
    follow(&client, &args.job, args.connection.json, None).await
}

/// Lists (and downloads) a job's results.
pub async fn results(args: ResultsArgs) -> anyhow::Result<ExitCode> {
    let client = args.connection.client().await?;
    if let Some(dir) = &args.download {
        let settings = DownloadSettings {
            parallel: usize::from(args.parallel),
            through_manager: args.through_manager,
            page_size: None,
        };
        download_results(&client, &args.job, dir, &settings).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let results = client.all_results(&args.job).await?;
    if args.connection.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for object in &results.objects {
            println!("{:>12}  {}", object.size, object.path);
        }
        if let Some(report) = &results.report {
            print!("{}", report.render_text());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Cancels a job.
pub async fn cancel(args: JobArgs) -> anyhow::Result<ExitCode> {
    args.connection.client().await?.cancel(&args.job).await?;
    eprintln!("job {} cancelled", args.job);
    Ok(ExitCode::SUCCESS)
}

/// Prints a job's history: every state change, when, why and by whom.
pub async fn history(args: JobArgs) -> anyhow::Result<ExitCode> {
    let entries = args.connection.client().await?.history(&args.job).await?;
    if args.connection.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(ExitCode::SUCCESS);
    }
    for entry in entries {
        let at = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(entry.at).unwrap_or(0));
        let from = entry.from.map_or("-", |s| s.as_str());
        let reason = entry.reason.map(|r| format!("  ({r})")).unwrap_or_default();
        println!(
            "{}  {:<10} -> {:<10} by {}{reason}",
            humantime::format_rfc3339_millis(at),
            from,
            entry.to.as_str(),
            entry.actor
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Lists workers.
pub async fn workers(connection: Connection) -> anyhow::Result<ExitCode> {
    let workers = connection.client().await?.workers().await?;
    if connection.json {
        println!("{}", serde_json::to_string_pretty(&workers)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<40} {:<9} {:>8} {:>8}  last seen", "worker", "state", "done", "failed");
    let now = batchgrid_core::db::now_millis();
    for worker in workers {
        println!(
            "{:<40} {:<9} {:>8} {:>8}  {}s ago",
            worker.id,
            worker.state,
            worker.tasks_done,
            worker.tasks_failed,
            (now - worker.last_seen).max(0) / 1000
        );
    }
    Ok(ExitCode::SUCCESS)
}
