//! `batchgrid job retry|redrive`: operator actions on one job through the manager's API, each
//! recorded in the job's history.

use std::process::ExitCode;

use batchgrid_core::manager::{RedriveFilter, Redriven};

use super::client::Connection;

/// Arguments of `batchgrid job`.
#[derive(Debug, clap::Args)]
pub struct JobCommandArgs {
    #[command(subcommand)]
    command: JobCommand,
}

#[derive(Debug, clap::Subcommand)]
enum JobCommand {
    /// Run every failed task of a failed job again, into the same job (each counted once).
    Retry {
        /// The job's id.
        job: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Run again the failed tasks (dead letters) picked by stage, task or error text, of a
    /// failed or a running job; without a filter, every failed task.
    Redrive {
        /// The job's id.
        job: String,
        /// Only tasks of this stage (its position, from 0).
        #[arg(long)]
        stage: Option<u32>,
        /// Only this task id.
        #[arg(long)]
        task: Option<String>,
        /// Only tasks whose last error contains this text.
        #[arg(long)]
        error: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
}

/// Runs a `job` subcommand.
pub async fn run(args: JobCommandArgs) -> anyhow::Result<ExitCode> {
    let (outcome, connection) = match args.command {
        JobCommand::Retry { job, connection } => (connection.client().await?.retry(&job).await?, connection),
        JobCommand::Redrive { job, stage, task, error, connection } => {
            let filter = RedriveFilter { stage, task, error };
            (connection.client().await?.redrive(&job, &filter).await?, connection)
        }
    };
    print_outcome(&outcome, connection.json)
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
