//! `batchgrid grid status | scale | pause | resume ENV`: the deployed worker group, by hand.
//! The instances come from Auto Scaling; each one's worker, from the manager's workers
//! (a worker on an instance is named after it).

use std::process::ExitCode;

use anyhow::Context;
use batchgrid_core::analytics::WorkerRecord;
use batchgrid_core::scaling::control::{Bounds, ScaleRequest};
use batchgrid_core::scaling::AutoScalingGroup;

use super::client::Connection;
use super::provision::{worker_group, Place};

/// Arguments of `batchgrid grid`.
#[derive(Debug, clap::Args)]
pub struct GridArgs {
    #[command(subcommand)]
    command: GridCommand,
}

#[derive(Debug, clap::Subcommand)]
enum GridCommand {
    /// The worker group's bounds and instances: type, lifecycle, health, scale-in protection,
    /// and the worker on each with its state and tasks (from the manager, when reachable).
    Status {
        #[command(flatten)]
        place: Place,
        #[command(flatten)]
        connection: Connection,
    },
    /// Set the group's bounds; each one left out keeps its value (min <= desired <= max).
    Scale {
        #[command(flatten)]
        place: Place,
        /// Minimum size.
        #[arg(long)]
        min: Option<u32>,
        /// Desired capacity.
        #[arg(long)]
        desired: Option<u32>,
        /// Maximum size.
        #[arg(long)]
        max: Option<u32>,
    },
    /// Scale the group to zero and hold it there (the manager's scaling cannot go past the
    /// group's max, now zero); its bounds are kept on the group for `resume`.
    Pause {
        #[command(flatten)]
        place: Place,
    },
    /// Restore a paused group's bounds; the manager scales it from there as work needs.
    Resume {
        #[command(flatten)]
        place: Place,
    },
}

fn bounds_text(bounds: &Bounds) -> String {
    format!("min {} desired {} max {}", bounds.min, bounds.desired, bounds.max)
}

/// Runs a `grid` subcommand.
pub async fn run(args: GridArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        GridCommand::Status { place, connection } => status(&place, &connection).await,
        GridCommand::Scale { place, min, desired, max } => {
            anyhow::ensure!(
                min.is_some() || desired.is_some() || max.is_some(),
                "grid scale: give at least one of --min, --desired, --max"
            );
            let group = open(&place).await?;
            let bounds = group.scale(&ScaleRequest { min, desired, max }).await.context("grid scale")?;
            println!("group {}: {}", group.name(), bounds_text(&bounds));
            Ok(ExitCode::SUCCESS)
        }
        GridCommand::Pause { place } => {
            let group = open(&place).await?;
            let kept = group.pause().await.context("grid pause")?;
            println!("group {} paused at zero; resume restores min {} max {}", group.name(), kept.min, kept.max);
            Ok(ExitCode::SUCCESS)
        }
        GridCommand::Resume { place } => {
            let group = open(&place).await?;
            let bounds = group.resume().await.context("grid resume")?;
            println!("group {} resumed: {}", group.name(), bounds_text(&bounds));
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn open(place: &Place) -> anyhow::Result<AutoScalingGroup> {
    let (name, client) = worker_group(place).await?;
    Ok(AutoScalingGroup::new(client, name))
}

async fn status(place: &Place, connection: &Connection) -> anyhow::Result<ExitCode> {
    let group = open(place).await?;
    let view = group.view().await.context("grid status")?;
    // The group answers without the manager; the workers need it, and are left out without it.
    let workers: Option<Vec<WorkerRecord>> = match connection.client().await {
        Ok(client) => match client.workers().await {
            Ok(workers) => Some(workers),
            Err(error) => {
                eprintln!("warning: workers unknown ({error})");
                None
            }
        },
        Err(error) => {
            eprintln!("warning: workers unknown ({error:#})");
            None
        }
    };
    let worker_on = |instance: &str| {
        workers.iter().flatten().filter(|w| w.id.starts_with(instance)).max_by_key(|w| w.last_seen).cloned()
    };
    if connection.json {
        let instances: Vec<serde_json::Value> =
            view.instances.iter().map(|i| serde_json::json!({ "instance": i, "worker": worker_on(&i.id) })).collect();
        let document = serde_json::json!({
            "group": view.name, "bounds": view.bounds, "paused": view.paused, "instances": instances,
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("group {}: {}", view.name, bounds_text(&view.bounds));
    if let Some(kept) = view.paused {
        println!("  paused; resume restores min {} max {}", kept.min, kept.max);
    }
    println!(
        "{:<20} {:<12} {:<20} {:<10} {:<9} {:<10} {:>7} {:>7} {:>7}",
        "instance", "type", "lifecycle", "health", "protected", "worker", "running", "done", "failed"
    );
    for instance in &view.instances {
        let worker = worker_on(&instance.id);
        let (state, running, done, failed) = worker
            .as_ref()
            .map(|w| {
                (w.state.clone(), w.current_tasks.to_string(), w.tasks_done.to_string(), w.tasks_failed.to_string())
            })
            .unwrap_or_else(|| ("-".into(), "-".into(), "-".into(), "-".into()));
        println!(
            "{:<20} {:<12} {:<20} {:<10} {:<9} {:<10} {:>7} {:>7} {:>7}",
            instance.id,
            instance.instance_type,
            instance.lifecycle,
            instance.health,
            if instance.protected { "yes (busy)" } else { "no" },
            state,
            running,
            done,
            failed
        );
    }
    Ok(ExitCode::SUCCESS)
}
