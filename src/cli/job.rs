//! `batchgrid job pause|resume|priority|retry|redrive`: operator actions on one job through the
//! manager's API, each recorded in the job's history (`batchgrid history ID`).

use std::process::ExitCode;

use batchgrid_core::manager::{RedriveFilter, Redriven};

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
    /// Run every failed task of a failed job again, into the same job (each counted once).
    Retry(Target),
    /// Run again the failed tasks (dead letters) picked by stage, task or error text, of a
    /// failed or a running job; without a filter, every failed task.
    Redrive {
        #[command(flatten)]
        target: Target,
        /// Only tasks of this stage (its position, from 0).
        #[arg(long)]
        stage: Option<u32>,
        /// Only this task id.
        #[arg(long)]
        task: Option<String>,
        /// Only tasks whose last error contains this text.
        #[arg(long)]
        error: Option<String>,
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
        JobCommand::Retry(target) => {
            let outcome = target.connection.client().await?.retry(&target.job).await?;
            return print_outcome(&outcome, target.connection.json);
        }
        JobCommand::Redrive { target, stage, task, error } => {
            let filter = RedriveFilter { stage, task, error };
            let outcome = target.connection.client().await?.redrive(&target.job, &filter).await?;
            return print_outcome(&outcome, target.connection.json);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_outcome(outcome: &Redriven, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(outcome)?);
    } else {
        println!(
            "job {}: {} failed task(s) sent back ({} from the dead-letter queues, {} re-sent)",
            outcome.job_id, outcome.tasks, outcome.from_dead_letters, outcome.resent
        );
        for lost in &outcome.lost {
            eprintln!("warning: {lost}: its message is gone; recorded failed again");
        }
    }
    Ok(if outcome.lost.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
