//! `batchgrid job pause|resume|priority`: control of one job through the manager's API; each
//! action is recorded in the job's history (`batchgrid history ID`).

use std::process::ExitCode;

use super::client::Connection;

/// Arguments of `batchgrid job`.
#[derive(Debug, clap::Args)]
pub struct JobArgs {
    #[command(subcommand)]
    command: JobCommand,
}

#[derive(Debug, clap::Subcommand)]
enum JobCommand {
    /// No new task of the job starts (within 2 s); running tasks finish.
    Pause(Target),
    /// The job's tasks start again.
    Resume(Target),
    /// Change the job's priority (0..=100, higher first) while it waits or runs.
    Priority {
        #[command(flatten)]
        target: Target,
        /// The new priority.
        #[arg(value_parser = clap::value_parser!(u8).range(0..=100))]
        priority: u8,
    },
}

#[derive(Debug, clap::Args)]
struct Target {
    /// The job's id.
    job: String,
    #[command(flatten)]
    connection: Connection,
}

/// Runs a `batchgrid job` command.
pub async fn run(args: JobArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        JobCommand::Pause(target) => {
            target.connection.client().await?.set_paused(&target.job, true).await?;
            eprintln!("job {} paused: no new task starts; running ones finish", target.job);
        }
        JobCommand::Resume(target) => {
            target.connection.client().await?.set_paused(&target.job, false).await?;
            eprintln!("job {} resumed", target.job);
        }
        JobCommand::Priority { target, priority } => {
            target.connection.client().await?.set_priority(&target.job, priority).await?;
            eprintln!("job {} now has priority {priority}", target.job);
        }
    }
    Ok(ExitCode::SUCCESS)
}
