//! Argument parsing and dispatch.

mod client;
mod grid;
mod image;
mod job;
mod manager;
mod progress;
mod provision;
mod report;
mod run;
mod schedule;
mod smoke;
mod stack;
mod worker;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use batchgrid_core::processor::ProcessorRegistry;
use clap::{Parser, Subcommand};

use crate::env;

/// Stand up, run and tear down an on-demand batch-processing grid.
#[derive(Debug, Parser)]
#[command(name = "batchgrid", version = image::VERSION, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a job on this machine: a manager and worker processes on the embedded backends.
    Run(run::RunArgs),
    /// Check a job file and print the job as it will run.
    Validate(ValidateArgs),
    /// Stage a job's input and enqueue its tasks in an embedded grid, without running them.
    Split(SplitArgs),
    /// Run a worker until SIGTERM, against an embedded grid or a deployed one.
    Worker(Box<worker::WorkerArgs>),
    /// Serve the job manager's API against a deployed grid until SIGTERM.
    Manager(manager::ManagerArgs),
    /// Submit a job to the manager (a local input is uploaded to the raw bucket first).
    Submit(client::SubmitArgs),
    /// Show a job's state and per-stage progress (every job without an id).
    Status(client::StatusArgs),
    /// Follow a job until it ends, with a progress bar, then print its report.
    Watch(client::JobArgs),
    /// List a job's results and report; download them with --download.
    Results(client::ResultsArgs),
    /// A job's report as text or one self-contained HTML file (--html), compared with the
    /// previous run of its name or another job (--compare).
    Report(report::ReportArgs),
    /// Cancel a job.
    Cancel(client::JobArgs),
    /// Control a job: pause, resume, change its priority, retry its failed tasks, redrive
    /// selected dead letters (each recorded in its history).
    Job(job::JobArgs),
    /// The deployed worker group by hand: status, scale, pause, resume.
    Grid(grid::GridArgs),
    /// Schedules: check an expression's next fire times (`next`); add, list, show, pause,
    /// resume, trigger and delete the manager's.
    Schedule(schedule::ScheduleArgs),
    /// Show a job's history: every state change, when, why and by whom.
    History(client::JobArgs),
    /// List the grid's workers and their statistics.
    Workers(client::Connection),
    /// After a deploy: run a tiny job through the manager and check its results; prints the
    /// time to the first task's start (scaling from zero included) and to the end.
    Smoke(smoke::SmokeArgs),
    /// Check an environment (base.yaml merged with NAME.yaml) and print it as it will be used.
    Environment(EnvironmentArgs),
    /// Render an environment's CloudFormation template to build/NAME/template.yaml.
    Render(provision::Place),
    /// Show what a deploy would add, modify, remove or replace.
    Diff(provision::Place),
    /// Deploy an environment's stack through a change set; save its outputs.
    Deploy {
        #[command(flatten)]
        place: provision::Place,
        /// Apply to a protected environment without asking.
        #[arg(long)]
        yes: bool,
    },
    /// Print a deployed stack's outputs.
    Outputs(provision::Place),
    /// Detect and print drift between the deployed stack and its template.
    Drift(provision::Place),
    /// What an environment costs at list prices, from its rendered template: a month deployed
    /// and idle, a month parked, stored data, each running worker's hour.
    Cost {
        #[command(flatten)]
        place: provision::Place,
        /// Print the estimate as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace the worker group's instances with ones from the current image, a few at a time;
    /// each old worker drains through the termination lifecycle hook first.
    Rollout {
        #[command(flatten)]
        place: provision::Place,
        /// Share of the group kept in service during the refresh.
        #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(i32).range(0..=100))]
        min_healthy_percent: i32,
    },
    /// Build the grid's machine image: upload the release binary, units and configuration,
    /// then deploy the image stack (EC2 Image Builder); the AMI id lands in its outputs.
    Image(image::ImageArgs),
    /// Park an environment between peaks: snapshot its database, keep its buckets (and queues
    /// and logs), remove everything billed by the hour; `deploy` resumes it.
    Park {
        #[command(flatten)]
        place: provision::Place,
        /// Park a protected environment without asking.
        #[arg(long)]
        yes: bool,
    },
    /// Empty an environment's buckets and delete its stack.
    Teardown {
        #[command(flatten)]
        place: provision::Place,
        /// The environment's name, required for protected environments.
        #[arg(long)]
        confirm: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
struct EnvironmentArgs {
    /// The environment's name: `environments/NAME.yaml` over `environments/base.yaml`.
    name: String,
    /// The directory holding the environment files.
    #[arg(long, default_value = "environments")]
    dir: PathBuf,
}

#[derive(Debug, clap::Args)]
struct ValidateArgs {
    /// The job file.
    job: PathBuf,
}

#[derive(Debug, clap::Args)]
struct SplitArgs {
    /// The job file.
    job: PathBuf,
    /// State directory of the embedded grid.
    #[arg(long, env = env::STATE_DIR)]
    state_dir: PathBuf,
    /// Input to use instead of the file's `input.path`.
    #[arg(long)]
    input: Option<PathBuf>,
}

/// Parses `30s`, `5m`, `250ms`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("`{text}`: {e}"))
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env(env::LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only on a terminal: `batchgrid run` sends its workers' stderr to log files, and
    // systemd to the journal, where escape codes are noise.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let json = std::env::var(env::LOG_FORMAT).is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // A second initialisation (in tests) is harmless; ignore it.
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

/// Parses the command line and runs it with the given processors; the whole of `main`.
pub fn main_with(registry: ProcessorRegistry) -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => {
                init_logging("warn");
                run::run(args).await
            }
            Command::Worker(args) => {
                init_logging("info");
                worker::run(*args, registry).await
            }
            Command::Manager(args) => {
                init_logging("info");
                manager::run(args).await
            }
            Command::Submit(args) => client::submit(args).await,
            Command::Status(args) => client::status(args).await,
            Command::Watch(args) => client::watch(args).await,
            Command::Results(args) => client::results(args).await,
            Command::Report(args) => report::report(args).await,
            Command::Cancel(args) => client::cancel(args).await,
            Command::Job(args) => job::run(args).await,
            Command::Grid(args) => grid::run(args).await,
            Command::History(args) => client::history(args).await,
            Command::Workers(args) => client::workers(args).await,
            Command::Smoke(args) => smoke::run(args).await,
            Command::Validate(args) => validate(args),
            Command::Schedule(args) => schedule::run(args).await,
            Command::Environment(args) => environment(args),
            Command::Render(place) => provision::run(place, provision::Action::Render).await,
            Command::Diff(place) => provision::run(place, provision::Action::Diff).await,
            Command::Deploy { place, yes } => provision::run(place, provision::Action::Deploy { yes }).await,
            Command::Outputs(place) => provision::run(place, provision::Action::Outputs).await,
            Command::Drift(place) => provision::run(place, provision::Action::Drift).await,
            Command::Cost { place, json } => provision::run(place, provision::Action::Cost { json }).await,
            Command::Image(args) => image::run(args).await,
            Command::Park { place, yes } => provision::park(place, yes).await,
            Command::Teardown { place, confirm } => provision::teardown(place, confirm).await,
            Command::Rollout { place, min_healthy_percent } => provision::rollout(place, min_healthy_percent).await,
            Command::Split(args) => {
                init_logging("warn");
                split(args).await
            }
        }
    });
    match outcome {
        Ok(code) => code,
        Err(error) => {
            // One line: the cause chain joined, so a user sees file, line and field at once.
            eprintln!("error: {}", format!("{error:#}").replace('\n', " "));
            ExitCode::from(2)
        }
    }
}

fn environment(args: EnvironmentArgs) -> anyhow::Result<ExitCode> {
    let lookup = |name: &str| std::env::var(name).ok();
    let environment = batchgrid_provision::environment::load(&args.dir, &args.name, &lookup)?;
    println!("{}", serde_json::to_string_pretty(&environment)?);
    Ok(ExitCode::SUCCESS)
}

fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let spec = batchgrid_core::spec::load_job_file(&args.job, &Default::default())?;
    println!("{}", serde_json::to_string_pretty(&spec)?);
    Ok(ExitCode::SUCCESS)
}

async fn split(args: SplitArgs) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let overrides = batchgrid_core::spec::Overrides {
        input: args.input.as_deref().map(run::from_cwd),
        output: None,
        after: Vec::new(),
        priority: None,
    };
    let spec = batchgrid_core::spec::load_job_file(&args.job, &overrides)?;
    let settings = batchgrid_core::grid::EmbeddedGridSettings::for_job(&spec);
    let grid = batchgrid_core::grid::Grid::open_embedded(&args.state_dir, &settings)
        .await
        .with_context(|| format!("opening the grid in {}", args.state_dir.display()))?;
    let manager = batchgrid_core::manager::Manager::new(grid, batchgrid_core::manager::spool_dir(&args.state_dir));
    let job = manager.submit(&spec).await?;
    let tasks = manager.split(&job, &spec, |_| {}).await?;
    println!("{job} {tasks}");
    Ok(ExitCode::SUCCESS)
}
