//! `batchgrid smoke ENV`: after a deploy, a tiny job through the manager, checked end to end,
//! with the time to the first task's start (scaling from zero included) and to the end.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use batchgrid_core::analytics::JobState;
use batchgrid_core::smoke;

use super::client::{upload, Connection};
use super::parse_duration;
use super::stack::StackArgs;

/// Arguments of `batchgrid smoke`.
#[derive(Debug, clap::Args)]
pub struct SmokeArgs {
    /// The deployed environment to test.
    env: String,
    /// The directory holding the environment files.
    #[arg(long, default_value = "environments")]
    environments: PathBuf,
    /// Where `make deploy` saved `NAME/outputs.json`.
    #[arg(long, default_value = "build")]
    out: PathBuf,
    /// Give up (and cancel the job) after this long: a grid at zero needs a few minutes to
    /// boot its first instance.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    connection: Connection,
}

/// Runs the smoke job; exit 0 only when it completed with the expected results in time.
pub async fn run(args: SmokeArgs) -> anyhow::Result<ExitCode> {
    let stack_args = StackArgs {
        env: Some(args.env.clone()),
        environments: args.environments.clone(),
        out: args.out.clone(),
        database_connections: 1,
        database_idle_timeout: batchgrid_core::analytics::DEFAULT_IDLE_TIMEOUT,
    };
    let stack = stack_args.resolve()?;
    let client = args.connection.client_for(&stack).await?;
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let input = dir.path().join("input.txt");
    std::fs::write(&input, smoke::input_text()).with_context(|| format!("writing {}", input.display()))?;
    let input = upload(&stack_args, smoke::JOB_NAME, &input, true).await?;

    let submitted_ms = batchgrid_core::db::now_millis();
    let started = Instant::now();
    let id = client.submit(&smoke::job_document(), "smoke.yaml", Some(&input)).await?;
    eprintln!(
        "smoke: submitted job {id} to {}; waiting up to {}",
        args.connection.manager,
        humantime::format_duration(args.timeout)
    );
    let status = loop {
        let status = client.status(&id).await?;
        if status.state.is_terminal() {
            break status;
        }
        if started.elapsed() > args.timeout {
            let _ = client.cancel(&id).await;
            anyhow::bail!(
                "smoke: job {id} still {} after {}; cancelled. Is the worker group scaling out (its desired \
                 capacity, the instances' console output, the manager's log)?",
                status.state,
                humantime::format_duration(args.timeout)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let elapsed = started.elapsed();
    if status.state != JobState::Completed {
        anyhow::bail!(
            "smoke: job {id} ended {}: {}",
            status.state,
            status.error.as_deref().unwrap_or("no reason given")
        );
    }
    let results = client.results(&id).await?;
    let mut objects = BTreeMap::new();
    for object in &results.objects {
        let target = dir.path().join("result");
        client.download_result(&id, &object.path, &target).await?;
        let bytes = std::fs::read(&target).with_context(|| format!("reading {}", target.display()))?;
        objects.insert(object.path.clone(), bytes);
    }
    let checked = smoke::check(&objects)?;
    // The stamp is the worker's clock, the submission this machine's: both keep NTP time, and
    // a start "before" the submission means they do not.
    let to_first_task = Duration::from_millis(u64::try_from(checked.first_start_ms - submitted_ms).unwrap_or(0));
    if args.connection.json {
        println!(
            "{}",
            serde_json::json!({
                "job_id": id,
                "state": status.state,
                "first_task_started_after_ms": to_first_task.as_millis() as u64,
                "ended_after_ms": elapsed.as_millis() as u64,
            })
        );
    } else {
        println!(
            "smoke: passed. job {id}: first task started {:.1}s after submission (scaling included), job ended after {:.1}s",
            to_first_task.as_secs_f64(),
            elapsed.as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}
