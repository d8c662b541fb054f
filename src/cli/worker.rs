//! `batchgrid worker`: one worker process, against an embedded grid (`--state-dir`) or a
//! deployed one (`--env NAME`, or the `BATCHGRID_*` variables on the grid's instances).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use batchgrid_core::aws::task_role::StsAssumer;
use batchgrid_core::drain;
use batchgrid_core::grid::{EmbeddedGridSettings, Grid};
use batchgrid_core::instance::{InstanceAgent, InstanceMetadata, InstanceSettings};
use batchgrid_core::processor::sandbox::{TaskSandbox, TASK_UMASK};
use batchgrid_core::processor::ProcessorRegistry;
use batchgrid_core::task_role::{check_role_arn, TaskRole};
use batchgrid_core::worker::{default_worker_id, Worker, WorkerSettings};
use std::sync::Arc;

use super::parse_duration;
use crate::env;

/// How long a starting worker waits for the manager to migrate the analytics database before
/// it gives up (and systemd starts it again).
const SCHEMA_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Arguments of `batchgrid worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// An action on a running worker instead of running one.
    #[command(subcommand)]
    pub action: Option<WorkerAction>,
    /// State directory of an embedded grid; without it, the worker joins a deployed grid.
    #[arg(long, env = env::STATE_DIR)]
    pub state_dir: Option<PathBuf>,
    /// The deployed grid.
    #[command(flatten)]
    pub stack: super::stack::StackArgs,
    /// Where a deployed grid's worker gives tasks their scratch directories.
    #[arg(long, env = env::SCRATCH_DIR, default_value_os_t = std::env::temp_dir().join("batchgrid-scratch"))]
    pub scratch_dir: PathBuf,
    /// Run task commands as this user (it must differ from the worker's; the worker then needs
    /// CAP_SETUID, CAP_SETGID and CAP_KILL). Without it, tasks run as the worker's user.
    #[arg(long, env = env::TASK_USER)]
    pub task_user: Option<String>,
    /// Paths task commands may write besides their scratch directory (`:`-separated in the
    /// environment), such as a shared file system mounted for them.
    #[arg(long, env = env::TASK_WRITABLE, value_delimiter = ':')]
    pub task_writable: Vec<PathBuf>,
    /// Tasks run at once (default: the number of cores).
    #[arg(long, env = env::CONCURRENCY)]
    pub concurrency: Option<usize>,
    /// Messages received ahead of free slots (default: adapted to the observed task time, up
    /// to a full batch of ten for short tasks and none for long ones); setting it fixes it.
    #[arg(long, env = env::PREFETCH)]
    pub prefetch: Option<usize>,
    /// Longest wait of one long poll (SQS allows up to 20 s; longer is cheaper when idle, shorter
    /// picks up a new job's first tasks sooner).
    #[arg(long, env = env::POLL_WAIT, default_value = "1s", value_parser = parse_duration)]
    pub poll_wait: Duration,
    /// Visibility timeout of a received task; a heartbeat renews it while the task runs.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub visibility_timeout: Duration,
    /// Deliveries after which the queue dead-letters a task whose worker never finished it
    /// (embedded grid; a deployed queue's redrive policy says this). A safety net above the
    /// jobs' `retry.max_attempts`, which count failed runs; 5, as `queues.max_receives` in
    /// environments/base.yaml.
    #[arg(long, default_value_t = 5)]
    pub max_receives: u32,
    /// On SIGTERM, how long running tasks may take before they are released.
    #[arg(long, env = env::DRAIN_DEADLINE, default_value = "30s", value_parser = parse_duration)]
    pub drain_deadline: Duration,
    /// An IAM role for tasks: the worker assumes it and gives each command its short-lived
    /// credentials as `AWS_*` variables (without it, tasks get no AWS credentials at all).
    #[arg(long, env = env::TASK_ROLE_ARN)]
    pub task_role_arn: Option<String>,
    /// Print the configuration the worker would run with (names only, no secrets) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Check that task commands can be sandboxed here as configured (the task user, the file
    /// confinement; a probe under --scratch-dir), print the outcome and exit: the machine
    /// image's build runs it.
    #[arg(long)]
    pub check_sandbox: bool,
    /// Worker id (default: host, pid and a random suffix).
    #[arg(long)]
    pub id: Option<String>,
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// Stop (as on SIGTERM) when the process that started this worker is gone: `batchgrid run`
    /// passes it, so a run killed with SIGKILL leaves no worker behind.
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
}

/// How the worker behaves on an instance of the grid's Auto Scaling group.
#[derive(Debug, clap::Args)]
pub struct InstanceArgs {
    /// Watch the instance: scale-in protection while busy, drain on termination lifecycle
    /// actions and spot interruption notices (the grid's instances turn this on).
    #[arg(long, env = env::INSTANCE_AGENT)]
    pub instance_agent: bool,
    /// The instance metadata service.
    #[arg(long, env = env::METADATA_ENDPOINT, default_value = batchgrid_core::instance::metadata::DEFAULT_ENDPOINT)]
    pub metadata_endpoint: String,
    /// The Auto Scaling group this instance belongs to.
    #[arg(long, env = env::GROUP_NAME)]
    pub group: Option<String>,
    /// The group's termination lifecycle hook.
    #[arg(long, env = env::LIFECYCLE_HOOK)]
    pub lifecycle_hook: Option<String>,
    /// How often the metadata is polled for spot notices and terminations.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub metadata_poll: Duration,
    /// Running tasks are stopped and released this long before a spot interruption.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub spot_margin: Duration,
    /// Idle time before scale-in protection is cleared.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub idle_grace: Duration,
    /// Fewest time between two scale-in protection calls.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub protection_interval: Duration,
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stopping only when killed");
            std::future::pending::<()>().await;
        }
    }
}

/// Resolves on SIGTERM or SIGINT, or, with `exit_with_parent`, once this process's parent is
/// gone (it is re-parented).
async fn stop_signal(exit_with_parent: bool) {
    if !exit_with_parent {
        return termination().await;
    }
    let parent = std::os::unix::process::parent_id();
    let orphaned = async {
        while std::os::unix::process::parent_id() == parent {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tracing::warn!(parent, "the process that started this worker is gone; stopping");
    };
    tokio::select! {
        () = termination() => {}
        () = orphaned => {}
    }
}

/// Actions on a running worker, through the manager.
#[derive(Debug, clap::Subcommand)]
pub enum WorkerAction {
    /// Ask a worker to take no new task and exit after its current ones (on an instance, the
    /// instance then leaves the group through its lifecycle hook). It notices within seconds.
    Drain {
        /// The worker's id (`batchgrid workers` lists them).
        id: String,
        #[command(flatten)]
        connection: super::client::Connection,
    },
}

/// How long a drained worker on an instance with a lifecycle hook waits for the group to start
/// terminating it before it drains by itself.
const LEAVE_PATIENCE: Duration = Duration::from_secs(120);

/// Runs the worker until SIGTERM, or a drain asked through the manager.
pub async fn run(args: WorkerArgs, registry: ProcessorRegistry) -> anyhow::Result<ExitCode> {
    if let Some(WorkerAction::Drain { id, connection }) = &args.action {
        connection.client().await?.drain_worker(id).await?;
        eprintln!("worker {id} asked to drain: it takes no new task and exits after its current ones");
        return Ok(ExitCode::SUCCESS);
    }
    if args.print_config {
        return print_config(&args);
    }
    if args.check_sandbox {
        let sandbox = task_sandbox(&args, &args.scratch_dir)?;
        let user = sandbox.user().map(|u| u.name.as_str()).unwrap_or("the worker's");
        println!("task sandbox works: tasks run as {user} user, files confined: {}", sandbox.confines_files());
        return Ok(ExitCode::SUCCESS);
    }
    let mut input_buckets = None;
    let (grid, scratch, region) = match &args.state_dir {
        Some(state_dir) => {
            let state_dir = super::run::from_cwd(state_dir);
            let settings = EmbeddedGridSettings { max_receives: args.max_receives };
            let grid = Grid::open_embedded(&state_dir, &settings)
                .await
                .with_context(|| format!("opening the grid in {}", state_dir.display()))?;
            let region = std::env::var(env::REGION).or_else(|_| std::env::var("AWS_REGION")).ok();
            (grid, state_dir.join("scratch"), region)
        }
        None => {
            let mut stack = args.stack.resolve()?;
            // A worker's database role may not change the schema: the manager migrates, and a
            // worker that boots first (a first deploy) waits for it.
            stack.settings.schema = batchgrid_core::grid::SchemaAccess::Attach(SCHEMA_WAIT);
            let grid = Grid::open_aws(&stack.settings).await.context("opening the grid")?;
            let region = Some(stack.settings.region.clone());
            // Byte-range tasks of s3:// inputs read their ranges where the input lies.
            let config = batchgrid_core::aws::sdk_config(&stack.settings.region).await;
            let s3 = batchgrid_core::aws::s3_client(&config, &grid.meter);
            input_buckets = Some(batchgrid_core::store::Buckets(Arc::new(move |bucket: &str| {
                Arc::new(batchgrid_core::store::S3Store::new(s3.clone(), bucket, ""))
                    as Arc<dyn batchgrid_core::store::ObjectStore>
            })));
            (grid, args.scratch_dir.clone(), region)
        }
    };
    let sandbox = task_sandbox(&args, &scratch)?;
    let task_role = task_role_arn(&args)?;
    let agent = if args.instance.instance_agent {
        let region =
            region.as_deref().context("the instance agent needs a region: --env, BATCHGRID_REGION or AWS_REGION")?;
        let config = batchgrid_core::aws::sdk_config(region).await;
        let instance = &args.instance;
        let settings = InstanceSettings {
            group: instance.group.clone(),
            lifecycle_hook: instance.lifecycle_hook.clone(),
            poll: instance.metadata_poll,
            spot_margin: instance.spot_margin,
            protection_interval: instance.protection_interval,
            idle_grace: instance.idle_grace,
            ..InstanceSettings::default()
        };
        let metadata = InstanceMetadata::new(&instance.metadata_endpoint)?;
        let client = batchgrid_core::aws::autoscaling_client(&config, &grid.meter);
        Some(InstanceAgent::start(metadata, client, settings).await?)
    } else {
        None
    };
    // On an instance the worker is named after it, so `grid status` can say which worker runs
    // where.
    let id = match (&args.id, &agent) {
        (Some(id), _) => id.clone(),
        (None, Some(agent)) => format!("{}-{}", agent.instance_id(), default_worker_id()),
        (None, None) => default_worker_id(),
    };
    let mut worker_settings = WorkerSettings::new(id, scratch);
    worker_settings.sandbox = Arc::new(sandbox);
    worker_settings.input_buckets = input_buckets;
    if let Some(arn) = task_role {
        let region = region.as_deref().context("a task role needs a region: --env, BATCHGRID_REGION or AWS_REGION")?;
        let config = batchgrid_core::aws::sdk_config(region).await;
        let assumer = StsAssumer::new(batchgrid_core::aws::sts_client(&config, &grid.meter));
        tracing::info!(role = %arn, "tasks get the task role's credentials");
        worker_settings.task_role = Some(Arc::new(TaskRole::new(Arc::new(assumer), &arn, &worker_settings.id, region)));
    }
    if let Some(concurrency) = args.concurrency {
        anyhow::ensure!(concurrency > 0, "--concurrency must be at least 1");
        worker_settings.concurrency = concurrency;
    }
    if let Some(prefetch) = args.prefetch {
        worker_settings.prefetch = Some(prefetch);
    }
    worker_settings.poll_wait = args.poll_wait;
    worker_settings.visibility = args.visibility_timeout;
    worker_settings.drain_deadline = args.drain_deadline;
    let drain = drain::requested(grid.analytics.clone(), worker_settings.id.clone(), drain::DRAIN_POLL);
    let exit_with_parent = args.exit_with_parent;
    let worker = Worker::new(worker_settings, grid, registry);
    let Some(agent) = agent else {
        let signal = async {
            tokio::select! {
                () = stop_signal(exit_with_parent) => {}
                () = drain => {}
            }
        };
        worker.run(signal).await?;
        return Ok(ExitCode::SUCCESS);
    };
    tracing::info!(instance = agent.instance_id(), group = ?args.instance.group, "instance agent started");
    let agent = Arc::new(agent);
    let (leaving, drained) = (agent.clone(), Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let hooked = agent.has_lifecycle_hook();
    let signal = {
        let drained = drained.clone();
        async move {
            let drain = async {
                drain.await;
                drained.store(true, std::sync::atomic::Ordering::SeqCst);
                // With a lifecycle hook the group terminates the instance and the hook drains
                // this worker as on any scale-in; should the group not start, drain here.
                if hooked {
                    match leaving.leave_group().await {
                        Ok(_) => tokio::time::sleep(LEAVE_PATIENCE).await,
                        Err(error) => tracing::error!(%error, "could not leave the group; draining the worker only"),
                    }
                }
            };
            tokio::select! {
                () = stop_signal(exit_with_parent) => {}
                () = drain => {}
            }
        }
    };
    let (reason, stats) = agent.clone().run_worker(worker, signal).await?;
    if drained.load(std::sync::atomic::Ordering::SeqCst) && !hooked {
        // Drained, and no hook to wait for: the instance leaves now, without a replacement.
        if let Err(error) = agent.leave_group().await {
            tracing::error!(%error, "drained, but could not leave the group");
        }
    }
    tracing::info!(?reason, ?stats, "worker stopped");
    Ok(ExitCode::SUCCESS)
}

/// The worker's task sandbox, checked by running a confined probe before any task. With a task
/// user, files are shared through its group: the worker's umask lets the group in.
fn task_sandbox(args: &WorkerArgs, scratch: &std::path::Path) -> anyhow::Result<TaskSandbox> {
    let writable: Vec<PathBuf> = args.task_writable.iter().filter(|p| !p.as_os_str().is_empty()).cloned().collect();
    let sandbox = TaskSandbox::new(args.task_user.as_deref(), writable).context("setting up the task sandbox")?;
    if sandbox.user().is_some() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(TASK_UMASK as nix::libc::mode_t));
    }
    std::fs::create_dir_all(scratch)
        .with_context(|| format!("creating the scratch directory {}", scratch.display()))?;
    if sandbox.user().is_some() {
        // The task user reaches its slots through it, without listing it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(scratch, std::fs::Permissions::from_mode(0o711))
            .with_context(|| format!("opening {} to the task user", scratch.display()))?;
    }
    let probe = tempfile::Builder::new()
        .prefix("sandbox-probe-")
        .tempdir_in(scratch)
        .with_context(|| format!("creating a probe directory in {}", scratch.display()))?;
    sandbox.probe(probe.path()).context("checking the task sandbox")?;
    tracing::info!(
        task_user = sandbox.user().map(|u| u.name.as_str()),
        files_confined = sandbox.confines_files(),
        "task sandbox checked"
    );
    Ok(sandbox)
}

/// The task role, checked; an empty value is none (as an unset systemd variable reads).
fn task_role_arn(args: &WorkerArgs) -> anyhow::Result<Option<String>> {
    match args.task_role_arn.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(arn) => {
            check_role_arn(arn).map_err(|m| anyhow::anyhow!("{}: {m}", env::TASK_ROLE_ARN))?;
            Ok(Some(arn.to_owned()))
        }
    }
}

/// Prints what the worker would run against, resolved exactly as a real start resolves it.
fn print_config(args: &WorkerArgs) -> anyhow::Result<ExitCode> {
    let grid = match &args.state_dir {
        Some(state_dir) => serde_json::json!({ "embedded": super::run::from_cwd(state_dir) }),
        None => args.stack.resolve()?.describe(),
    };
    let instance = &args.instance;
    let config = serde_json::json!({
        "grid": grid,
        "scratch_dir": args.scratch_dir,
        "task_user": args.task_user,
        "task_writable": args.task_writable,
        "task_files": batchgrid_core::processor::sandbox::landlock_status(),
        "drain_deadline": humantime::format_duration(args.drain_deadline).to_string(),
        "visibility_timeout": humantime::format_duration(args.visibility_timeout).to_string(),
        "instance_agent": instance.instance_agent,
        "group": instance.group,
        "lifecycle_hook": instance.lifecycle_hook,
        "metadata_endpoint": instance.metadata_endpoint,
        "task_role_arn": task_role_arn(args)?,
    });
    println!("{}", serde_json::to_string_pretty(&config)?);
    Ok(ExitCode::SUCCESS)
}
