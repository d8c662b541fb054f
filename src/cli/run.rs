//! `batchgrid run`: a whole grid on one machine. The manager runs in this process; workers are
//! separate processes of this same executable, so a worker that dies takes only its own tasks
//! with it (they are redelivered) and is restarted.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use batchgrid_core::analytics::JobState;
use batchgrid_core::grid::{EmbeddedGridSettings, Grid};
use batchgrid_core::manager::{spool_dir, Manager};
use batchgrid_core::spec::{load_job_file, Overrides};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use super::parse_duration;
use super::progress::ProgressView;
use super::worker::termination;

/// Restarts of crashed workers allowed in one run before the run gives up on restarting.
const MAX_RESTARTS: u32 = 20;
/// How long workers get to drain when the job has ended.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Arguments of `batchgrid run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The job file.
    #[arg(required_unless_present = "resume")]
    pub job: Option<PathBuf>,
    /// Finish a run whose `batchgrid run` process was killed: the state directory it printed
    /// (or was given with --state-dir). The job goes on from where it was.
    #[arg(long, value_name = "STATE_DIR", conflicts_with_all = ["job", "input", "output", "state_dir"])]
    pub resume: Option<PathBuf>,
    /// Worker processes to start.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Tasks each worker runs at once (default: the number of cores).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Input to use instead of the file's `input.path`.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Output directory to use instead of the file's `output.path`.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// State directory (default: a new directory under `.batchgrid/`, removed after a
    /// successful run unless `--keep-state`).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Keep the state directory after a successful run.
    #[arg(long)]
    pub keep_state: bool,
    /// Visibility timeout of a received task; a heartbeat renews it while the task runs.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub visibility_timeout: Duration,
    /// Print progress and the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Serve the dashboard on this address (e.g. 127.0.0.1:8080; port 0 picks one) while the
    /// job runs. Its login token is BATCHGRID_API_TOKEN, or else a random one written to
    /// STATE_DIR/dashboard-token.
    #[arg(long, value_name = "ADDR")]
    pub dashboard: Option<std::net::SocketAddr>,
}

/// What `--resume` needs to go on with a run: written to `STATE_DIR/run.json` once the job is
/// submitted.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct RunRecord {
    job_id: String,
    workers: usize,
    concurrency: Option<usize>,
    visibility_timeout_ms: u64,
    max_receives: u32,
}

const RUN_RECORD: &str = "run.json";

impl RunRecord {
    fn write(&self, state_dir: &Path) -> anyhow::Result<()> {
        let path = state_dir.join(RUN_RECORD);
        let text = serde_json::to_string_pretty(self).context("encoding the run record")?;
        // Written whole, then renamed: a run killed while writing leaves the old record or none.
        let partial = state_dir.join(format!("{RUN_RECORD}.partial"));
        std::fs::write(&partial, text).with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))
    }

    fn read(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join(RUN_RECORD);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{} holds no run to resume (no {RUN_RECORD}: the run stopped before its job was \
                 submitted, or this is not a run's state directory)",
                state_dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{}: not a run record", path.display()))
    }
}

/// A fresh job, or a run to go on with.
enum Plan {
    Fresh(batchgrid_core::spec::JobSpec),
    Resume(RunRecord),
}

struct Workers {
    exe: PathBuf,
    args: Vec<String>,
    logs: PathBuf,
    children: Vec<Option<Child>>,
    restarts: u32,
}

impl Workers {
    fn spawn_one(&self, index: usize) -> anyhow::Result<Child> {
        let log_path = self.logs.join(format!("worker-{index}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let log_err = log.try_clone().with_context(|| format!("opening {}", log_path.display()))?;
        let child = Command::new(&self.exe)
            .arg("worker")
            .args(&self.args)
            .arg("--id")
            .arg(format!("local-{index}-{}", std::process::id()))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Own process group: a Ctrl-C at the terminal reaches only `run`, which cancels the
            // job and then stops the workers itself.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting worker {index} from {}", self.exe.display()))?;
        Ok(child)
    }

    /// Restarts workers that exited; returns notes for the user.
    fn check(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        for index in 0..self.children.len() {
            let exited = match self.children[index].as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Err(error)) => Some(error.to_string()),
                _ => None,
            };
            let Some(status) = exited else { continue };
            self.children[index] = None;
            if self.restarts >= MAX_RESTARTS {
                notes.push(format!("worker {index} exited ({status}); restart limit reached"));
                continue;
            }
            self.restarts += 1;
            match self.spawn_one(index) {
                Ok(child) => {
                    self.children[index] = Some(child);
                    notes.push(format!("worker {index} exited ({status}); restarted, its tasks will be redelivered"));
                }
                Err(error) => {
                    notes.push(format!("worker {index} exited ({status}) and could not be restarted: {error:#}"))
                }
            }
        }
        notes
    }

    /// SIGTERM to every worker, then SIGKILL to those still running after the grace period.
    async fn stop(&mut self) {
        for child in self.children.iter().flatten() {
            if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
            }
        }
        for child in self.children.iter_mut().flatten() {
            if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }
}

/// A path from the command line, relative to the working directory (job file paths are
/// relative to the job file).
pub fn from_cwd(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn default_state_dir() -> PathBuf {
    Path::new(".batchgrid").join(format!("run-{}", ulid::Ulid::new().to_string().to_lowercase()))
}

/// Runs a job on an embedded grid with worker processes and prints its report; or, with
/// `--resume`, finishes one whose process was killed.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let (plan, state_dir) = match (&args.resume, &args.job) {
        (Some(state_dir), _) => {
            let state_dir = from_cwd(state_dir);
            (Plan::Resume(RunRecord::read(&state_dir)?), state_dir)
        }
        (None, Some(job)) => {
            anyhow::ensure!(args.workers > 0, "--workers must be at least 1");
            anyhow::ensure!(args.concurrency != Some(0), "--concurrency must be at least 1");
            let overrides = Overrides {
                input: args.input.as_deref().map(from_cwd),
                output: args.output.as_deref().map(from_cwd),
                after: Vec::new(),
                priority: None,
            };
            let spec = load_job_file(job, &overrides)?;
            spec.refuse_if_scheduled(&job.display().to_string())?;
            // `run` starts a grid of its own, where no other job exists to wait for.
            anyhow::ensure!(
                spec.after.is_empty(),
                "{}: after: waits for jobs of a manager; submit it with `batchgrid submit`",
                job.display()
            );
            // Absolute: workers and the commands they run (in their scratch directories) use it too.
            let state_dir = from_cwd(&args.state_dir.clone().unwrap_or_else(default_state_dir));
            (Plan::Fresh(spec), state_dir)
        }
        (None, None) => anyhow::bail!("give a job file, or --resume STATE_DIR"),
    };
    let logs = state_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let settings = match &plan {
        Plan::Fresh(spec) => EmbeddedGridSettings::for_job(spec),
        Plan::Resume(record) => EmbeddedGridSettings { max_receives: record.max_receives },
    };
    let grid = Grid::open_embedded(&state_dir, &settings)
        .await
        .with_context(|| format!("opening the grid in {}", state_dir.display()))?;
    let manager = Manager::new(grid, spool_dir(&state_dir));
    if let Some(address) = args.dashboard {
        start_dashboard(address, &manager, &state_dir).await?;
    }
    // The job, and how its workers run.
    let (job_id, spec, record) = match plan {
        Plan::Fresh(spec) => {
            let job_id = manager.submit(&spec).await?;
            let record = RunRecord {
                job_id: job_id.clone(),
                workers: args.workers,
                concurrency: args.concurrency,
                visibility_timeout_ms: u64::try_from(args.visibility_timeout.as_millis()).unwrap_or(u64::MAX),
                max_receives: settings.max_receives,
            };
            record.write(&state_dir)?;
            (job_id, spec, record)
        }
        Plan::Resume(record) => {
            let analytics = &manager.grid().analytics;
            let job = analytics.job(&record.job_id).await?.with_context(|| {
                format!("{}: job {} is not in its analytics store", state_dir.display(), record.job_id)
            })?;
            let spec: batchgrid_core::spec::JobSpec = serde_json::from_str(&job.spec)
                .with_context(|| format!("job {}: its stored spec is unreadable", job.id))?;
            if job.state.is_terminal() {
                eprintln!("job {} had already ended ({}); its report:", job.id, job.state);
                let output = Some(spec.output.path.as_path());
                let report = batchgrid_core::report::JobReport::build(analytics.as_ref(), &job.id, output).await?;
                return finish(&args, &state_dir, &report);
            }
            // The manager's pass decides what is left: a job whose split never finished is split
            // again from the start, which is safe because task ids and result keys are
            // deterministic and progress is an upsert per task (a task queued twice counts once).
            let split = matches!(job.state, JobState::Submitted | JobState::Splitting);
            eprintln!(
                "resuming job {} ({}; {}) with {} worker(s)",
                job.id,
                job.state,
                if split { "splitting its input again" } else { "its input was split" },
                record.workers
            );
            (record.job_id.clone(), spec, record)
        }
    };

    let exe = std::env::current_exe().context("locating the batchgrid executable")?;
    let mut worker_args = vec![
        "--state-dir".to_owned(),
        state_dir.display().to_string(),
        "--max-receives".to_owned(),
        record.max_receives.to_string(),
        "--visibility-timeout".to_owned(),
        format!("{}ms", record.visibility_timeout_ms),
        // A run killed with SIGKILL cannot stop its workers: they stop themselves.
        "--exit-with-parent".to_owned(),
    ];
    if let Some(concurrency) = record.concurrency {
        worker_args.extend(["--concurrency".to_owned(), concurrency.to_string()]);
    }
    let mut workers = Workers { exe, args: worker_args, logs: logs.clone(), children: Vec::new(), restarts: 0 };
    for index in 0..record.workers {
        let child = workers.spawn_one(index)?;
        workers.children.push(Some(child));
    }
    let workers = Arc::new(Mutex::new(workers));

    let view = Arc::new(std::sync::Mutex::new(ProgressView::new(args.json)));

    // Supervise workers while the job runs; the supervisor returns only when none is left.
    let mut supervisor = {
        let (workers, view) = (workers.clone(), view.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let mut workers = workers.lock().await;
                let notes = workers.check();
                if let Ok(view) = view.lock() {
                    for note in notes {
                        view.note(&note);
                    }
                }
                if workers.children.iter().all(Option::is_none) {
                    return;
                }
            }
        })
    };

    let run = manager.drive(&job_id, &spec, Duration::from_millis(200), {
        let view = view.clone();
        move |job, progress| {
            if let Ok(mut view) = view.lock() {
                view.update(job, progress);
            }
        }
    });
    enum Ending<T> {
        Finished(T),
        Interrupted,
        NoWorkers,
    }
    let ending = tokio::select! {
        report = run => Ending::Finished(report),
        () = termination() => Ending::Interrupted,
        _ = &mut supervisor => Ending::NoWorkers,
    };
    supervisor.abort();
    let report = match ending {
        Ending::Finished(report) => report?,
        Ending::Interrupted | Ending::NoWorkers => {
            if matches!(ending, Ending::Interrupted) {
                manager.cancel(&job_id).await?;
            } else {
                let reason = format!("every worker exited; see {}", logs.display());
                manager.fail(&job_id, &reason).await?;
            }
            batchgrid_core::report::JobReport::build(manager.grid().analytics.as_ref(), &job_id, None).await?
        }
    };
    if let Ok(view) = view.lock() {
        view.finish();
    }
    workers.lock().await.stop().await;
    // A task dead-lettered after the manager's last scan (its job already ended) would stay in
    // the run's queue; with the workers stopped no more can come, so one scan settles them.
    if let Err(error) = manager.consume_dead_letters().await {
        tracing::warn!(%error, "could not clear the run's dead letters");
    }
    finish(&args, &state_dir, &report)
}

/// Prints the report, removes a default state directory after success, and picks the exit code.
/// Serves the dashboard over `manager` on `address` for as long as this process runs.
async fn start_dashboard(address: std::net::SocketAddr, manager: &Manager, state_dir: &Path) -> anyhow::Result<()> {
    use batchgrid_core::service::dashboard;
    let token = match std::env::var(crate::env::API_TOKEN) {
        Ok(token) if !token.is_empty() => batchgrid_core::secret::Secret::new(token),
        _ => {
            let token = dashboard::auth::random_token().context("no randomness for a dashboard token")?;
            let path = state_dir.join("dashboard-token");
            write_private(&path, token.expose()).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("dashboard token: in {} (or set {})", path.display(), crate::env::API_TOKEN);
            token
        }
    };
    let listener =
        tokio::net::TcpListener::bind(address).await.with_context(|| format!("binding the dashboard to {address}"))?;
    let bound = listener.local_addr().context("the dashboard's address")?;
    // The service only reads and cancels: the run's own driver, not the service, drives the job.
    let service = batchgrid_core::service::JobService::new(
        manager.clone(),
        Duration::from_millis(200),
        state_dir.to_path_buf(),
        batchgrid_core::spec::InputPolicy::Operator,
    );
    tokio::spawn(async move {
        if let Err(error) = dashboard::serve(listener, service, token, std::future::pending()).await {
            tracing::error!(%error, "the dashboard stopped");
        }
    });
    eprintln!("dashboard: http://{bound}/ui/");
    Ok(())
}

/// Writes a secret readable by this user alone.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())
}

fn finish(args: &RunArgs, state_dir: &Path, report: &batchgrid_core::report::JobReport) -> anyhow::Result<ExitCode> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", report.render_text());
    }
    let succeeded = report.state == JobState::Completed;
    let chosen = args.state_dir.is_some() || args.resume.is_some();
    if succeeded && !chosen && !args.keep_state {
        let _ = std::fs::remove_dir_all(state_dir);
    } else if !args.json {
        eprintln!("state and worker logs: {} (an interrupted run goes on with --resume)", state_dir.display());
    }
    Ok(if succeeded { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
