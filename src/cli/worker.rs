//! `batchgrid worker`: one worker process, against an embedded grid (`--state-dir`) or a
//! deployed one (`--env NAME`, or the `BATCHGRID_*` variables on the grid's instances).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use batchgrid_core::grid::{EmbeddedGridSettings, Grid};
use batchgrid_core::processor::ProcessorRegistry;
use batchgrid_core::worker::{default_worker_id, Worker, WorkerSettings};

use super::parse_duration;
use crate::env;

/// Arguments of `batchgrid worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// State directory of an embedded grid; without it, the worker joins a deployed grid.
    #[arg(long, env = env::STATE_DIR)]
    pub state_dir: Option<PathBuf>,
    /// The deployed grid.
    #[command(flatten)]
    pub stack: super::stack::StackArgs,
    /// Where a deployed grid's worker gives tasks their scratch directories.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("batchgrid-scratch"))]
    pub scratch_dir: PathBuf,
    /// Tasks run at once (default: the number of cores).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Visibility timeout of a received task; a heartbeat renews it while the task runs.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub visibility_timeout: Duration,
    /// Deliveries after which the queue dead-letters a task whose worker never finished it
    /// (embedded grid; a deployed queue's redrive policy says this).
    #[arg(long, default_value_t = 3)]
    pub max_receives: u32,
    /// On SIGTERM, how long running tasks may take before they are released.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_deadline: Duration,
    /// Worker id (default: host, pid and a random suffix).
    #[arg(long)]
    pub id: Option<String>,
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

/// Runs the worker until SIGTERM.
pub async fn run(args: WorkerArgs, registry: ProcessorRegistry) -> anyhow::Result<ExitCode> {
    let (grid, scratch) = match &args.state_dir {
        Some(state_dir) => {
            let state_dir = super::run::from_cwd(state_dir);
            let settings = EmbeddedGridSettings { max_receives: args.max_receives };
            let grid = Grid::open_embedded(&state_dir, &settings)
                .await
                .with_context(|| format!("opening the grid in {}", state_dir.display()))?;
            (grid, state_dir.join("scratch"))
        }
        None => {
            let stack = args.stack.resolve()?;
            let grid = Grid::open_aws(&stack.settings).await.context("opening the grid")?;
            (grid, args.scratch_dir.clone())
        }
    };
    let mut worker_settings = WorkerSettings::new(args.id.unwrap_or_else(default_worker_id), scratch);
    if let Some(concurrency) = args.concurrency {
        anyhow::ensure!(concurrency > 0, "--concurrency must be at least 1");
        worker_settings.concurrency = concurrency;
    }
    worker_settings.visibility = args.visibility_timeout;
    worker_settings.drain_deadline = args.drain_deadline;
    Worker::new(worker_settings, grid, registry).run(termination()).await?;
    Ok(ExitCode::SUCCESS)
}
