//! `batchgrid manager`: the job manager service against a deployed grid.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use batchgrid_core::grid::Grid;
use batchgrid_core::manager::{BucketOpener, Manager, QuietSettings};
use batchgrid_core::scaling::{AutoScalingGroup, Autoscaler, SizingSettings};
use batchgrid_core::service::{api, loops, JobService};
use batchgrid_core::store::{ObjectStore, S3Store};

use super::parse_duration;
use super::stack::{api_token, StackArgs};
use super::worker::termination;
use crate::env;

/// Arguments of `batchgrid manager`.
#[derive(Debug, clap::Args)]
pub struct ManagerArgs {
    #[command(flatten)]
    stack: StackArgs,
    /// Address the API listens on (private by default: reach it through an SSM port forward).
    #[arg(long, env = env::LISTEN, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// How often each running job's progress is checked.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    tick: Duration,
    /// Where inputs are cut into chunks before they are staged.
    #[arg(long, default_value = ".batchgrid/manager-spool")]
    spool: PathBuf,
    /// Print the configuration the manager would run with (names only, no secrets) and exit.
    #[arg(long)]
    print_config: bool,
    /// With no job, no worker and nothing scheduled sooner than this, the manager's loops leave
    /// the analytics database alone (it can pause); they look again this long before a
    /// schedule or one-off run is due.
    #[arg(long, env = env::QUIET_HORIZON, default_value = "1m", value_parser = parse_duration)]
    quiet_horizon: Duration,
    #[command(flatten)]
    scaling: ScalingArgs,
}

/// How the manager sizes the worker group (when the stack names one).
#[derive(Debug, clap::Args)]
struct ScalingArgs {
    /// Leave the worker group's size alone (someone else sizes it).
    #[arg(long)]
    no_autoscale: bool,
    /// Tasks one instance runs at once [default: the environment's grid.tasks_per_instance, or 2].
    #[arg(long, env = env::TASKS_PER_INSTANCE)]
    tasks_per_instance: Option<u32>,
    /// Size the group to finish the remaining work in this time [default: the environment's
    /// grid.target_completion, or 15m].
    #[arg(long, env = env::TARGET_COMPLETION, value_parser = parse_duration)]
    target_completion: Option<Duration>,
    /// Lower the group to its minimum once no work has remained this long [default: the
    /// environment's grid.scale_in_delay, or 10m].
    #[arg(long, env = env::SCALE_IN_DELAY, value_parser = parse_duration)]
    scale_in_delay: Option<Duration>,
    /// How often the group's size is reconsidered.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    scale_interval: Duration,
}

impl ScalingArgs {
    /// Flags and variables first, then the environment file, then the defaults.
    fn settings(&self, environment: Option<&SizingSettings>) -> SizingSettings {
        let base = environment.cloned().unwrap_or_default();
        SizingSettings {
            tasks_per_instance: self.tasks_per_instance.unwrap_or(base.tasks_per_instance).max(1),
            target_completion: self.target_completion.unwrap_or(base.target_completion),
            scale_in_delay: self.scale_in_delay.unwrap_or(base.scale_in_delay),
            assumed_task_time: base.assumed_task_time,
        }
    }
}

/// Serves the API until SIGTERM.
pub async fn run(args: ManagerArgs) -> anyhow::Result<ExitCode> {
    let stack = args.stack.resolve()?;
    if args.print_config {
        let token = match (std::env::var(env::API_TOKEN).is_ok(), std::env::var(env::API_TOKEN_SECRET_ARN)) {
            (true, _) => serde_json::json!({ "from": env::API_TOKEN }),
            (false, Ok(arn)) => serde_json::json!({ "secret_arn": arn }),
            (false, Err(_)) => serde_json::Value::Null,
        };
        let mut config = stack.describe();
        config["listen"] = serde_json::json!(args.listen);
        config["group"] = serde_json::json!(stack.group_name);
        config["instance_type"] = serde_json::json!(stack.instance_type);
        config["autoscale"] = match (&stack.group_name, args.scaling.no_autoscale) {
            (Some(_), false) => {
                let settings = args.scaling.settings(stack.scaling.as_ref());
                serde_json::json!({
                    "tasks_per_instance": settings.tasks_per_instance,
                    "target_completion": humantime::format_duration(settings.target_completion).to_string(),
                    "scale_in_delay": humantime::format_duration(settings.scale_in_delay).to_string(),
                })
            }
            _ => serde_json::Value::Null,
        };
        config["api_token"] = token;
        config["quiet_horizon"] = serde_json::json!(humantime::format_duration(args.quiet_horizon).to_string());
        config["database_idle_timeout"] =
            serde_json::json!(humantime::format_duration(stack.settings.database_idle_timeout).to_string());
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(ExitCode::SUCCESS);
    }
    let token = api_token(Some(&stack.settings.region), stack.api_token_secret_arn.as_deref()).await?;
    let grid = Grid::open_aws(&stack.settings).await.context("opening the grid")?;
    let config = batchgrid_core::aws::sdk_config(&stack.settings.region).await;
    let s3 = batchgrid_core::aws::s3_client(&config, &grid.meter);
    let opener: BucketOpener =
        Arc::new(move |bucket: &str| Arc::new(S3Store::new(s3.clone(), bucket, "")) as Arc<dyn ObjectStore>);
    let mut manager =
        Manager::new(grid, super::run::from_cwd(&args.spool)).with_quiet(QuietSettings { horizon: args.quiet_horizon });
    if let Some(group) = &stack.group_name {
        // Spot capacity is priced from EC2's spot price history; without EC2 (no HTTPS on this
        // machine) every instance is priced at the on-demand list price, and the report says so.
        let ec2 = match batchgrid_core::aws::ec2::Ec2Client::new(&config, &manager.grid().meter) {
            Ok(ec2) => Some(Arc::new(ec2) as Arc<dyn batchgrid_core::instance::cost::Ec2Facts>),
            Err(error) => {
                tracing::warn!(%error, "no EC2 client: job reports price spot capacity at on-demand list prices");
                None
            }
        };
        let usage = batchgrid_core::instance::cost::GroupActivity {
            client: batchgrid_core::aws::autoscaling_client(&config, &manager.grid().meter),
            ec2,
            group: group.clone(),
            default_type: stack.instance_type.clone().unwrap_or_default(),
        };
        manager = manager.with_instance_usage(Arc::new(usage));
        let client = batchgrid_core::aws::autoscaling_client(&config, &manager.grid().meter);
        manager = manager.with_instances(Arc::new(AutoScalingGroup::new(client, group.clone())));
    }
    let sizing = args.scaling.settings(stack.scaling.as_ref());
    if let Some(instance_type) = &stack.instance_type {
        match batchgrid_core::instance::cost::hourly_price(instance_type) {
            Some(hourly_usd) => {
                manager = manager.with_compute_price(batchgrid_core::metering::ComputePrice {
                    instance_type: instance_type.clone(),
                    hourly_usd,
                    tasks_per_instance: sizing.tasks_per_instance,
                });
            }
            None => {
                tracing::info!(%instance_type, "no list price known for the worker type: the dashboard shows task-hours, not dollars")
            }
        }
    }
    let mut autoscaler = None;
    if let (Some(group), false) = (&stack.group_name, args.scaling.no_autoscale) {
        let settings = args.scaling.settings(stack.scaling.as_ref());
        let client = batchgrid_core::aws::autoscaling_client(&config, &manager.grid().meter);
        let grid = manager.grid();
        let scaler = Autoscaler::new(
            grid.analytics.clone(),
            vec![grid.tasks.clone(), grid.chain.clone()],
            Arc::new(AutoScalingGroup::new(client, group.clone())),
            settings.clone(),
        )
        .with_interval(args.scaling.scale_interval);
        tracing::info!(%group, ?settings, "sizing the worker group from the work");
        autoscaler = Some(scaler);
    }
    let manager =
        manager.with_buckets(opener).keep_results_in_store().with_dead_letter_scan_every(Duration::from_secs(5));
    let base_dir = std::env::current_dir().context("reading the working directory")?;
    // The API's callers hold a token, not a login on this machine: they name data already in
    // the raw bucket (the CLI uploads local files there first), never a path on this disk.
    let policy = batchgrid_core::spec::InputPolicy::RawBucket(stack.raw_bucket.clone());
    let service = JobService::new(manager, args.tick, base_dir, policy);
    let resumed = service.resume().await.context("resuming unfinished jobs")?;
    // Schedules, the dashboard's samples and the autoscaler, each resting while the manager is
    // quiet; they stop when the API has stopped.
    let _loops = loops::start(&service, autoscaler, loops::LoopIntervals::default());
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    let address = listener.local_addr().unwrap_or(args.listen);
    tracing::info!(%address, resumed, "manager listening");
    eprintln!("manager listening on http://{address} ({resumed} unfinished job(s) resumed)");
    api::serve(listener, service, token, termination()).await.context("serving the API")?;
    Ok(ExitCode::SUCCESS)
}
