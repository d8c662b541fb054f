//! `batchgrid render|diff|deploy|outputs|park|teardown|cost ENV`: thin wrappers over
//! `batchgrid_provision`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use batchgrid_provision::deploy::{Buckets, DeployOutcome, DeployRequest, Deployer, Event, PlannedChange};
use batchgrid_provision::environment::Environment;
use batchgrid_provision::park::{DatabaseKind, ParkState, ParkingRecord, Snapshots};
use batchgrid_provision::render::Shape;
use batchgrid_provision::{aws, cost, environment, park, preflight, render};

/// Where environments, templates and build output live.
#[derive(Debug, clap::Args)]
pub struct Place {
    /// The environment's name: `environments/NAME.yaml` over `environments/base.yaml`.
    pub name: String,
    /// The directory holding the environment files.
    #[arg(long, default_value = "environments")]
    pub environments: PathBuf,
    /// The directory holding the templates.
    #[arg(long, default_value = "templates")]
    pub templates: PathBuf,
    /// Where build/NAME/ goes (template.yaml, outputs.json).
    #[arg(long, default_value = "build")]
    pub out: PathBuf,
}

/// What to do with the environment.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    /// Write the template.
    Render,
    /// Show the change set.
    Diff,
    /// Apply it.
    Deploy {
        /// Skip the confirmation of a protected environment.
        yes: bool,
    },
    /// Print saved or live outputs.
    Outputs,
    /// Detect and print drift.
    Drift,
    /// Print what the environment costs, from its rendered template.
    Cost {
        /// The estimate as JSON.
        json: bool,
    },
}

struct Prepared {
    environment: Environment,
    template: String,
    stack: String,
    dir: PathBuf,
}

fn prepare(place: &Place) -> anyhow::Result<Prepared> {
    let lookup = |name: &str| std::env::var(name).ok();
    let environment = environment::load(&place.environments, &place.name, &lookup)?;
    let engine = render::engine(&place.templates)?;
    let template = render::render(&engine, &place.name, &environment)?;
    let dir = place.out.join(&place.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("template.yaml");
    std::fs::write(&path, &template).with_context(|| format!("writing {}", path.display()))?;
    let stack = render::stack_name(&place.name, &environment);
    Ok(Prepared { environment, template, stack, dir })
}

/// Renders the environment again in `shape` over the prepared template (and its file).
fn reshape(place: &Place, prepared: &mut Prepared, shape: Shape<'_>) -> anyhow::Result<()> {
    let engine = render::engine(&place.templates)?;
    prepared.template = render::render_shape(&engine, &place.name, &prepared.environment, shape)?;
    let path = prepared.dir.join("template.yaml");
    std::fs::write(&path, &prepared.template).with_context(|| format!("writing {}", path.display()))
}

/// A parked or resumed stack's record; the template is then rendered resumed from its snapshot
/// (a resumed database keeps naming it, or CloudFormation would replace it with an empty one).
async fn resume_shape(
    place: &Place,
    prepared: &mut Prepared,
    deployer: &Deployer,
) -> anyhow::Result<Option<ParkingRecord>> {
    let record = park::parking_record(deployer, &prepared.stack, &prepared.template)
        .await
        .with_context(|| format!("reading the parking record of stack {}", prepared.stack))?;
    let Some(found) = &record else { return Ok(record) };
    let kind = DatabaseKind::of(&prepared.environment.analytics);
    found.check_resumable(kind)?;
    if let (Some(snapshot), Some(_)) = (found.snapshot.as_deref(), kind) {
        reshape(place, prepared, Shape::Resumed { snapshot })?;
    }
    Ok(record)
}

async fn deployer(environment: &Environment) -> Deployer {
    let config = aws::sdk_config(&environment.region).await;
    // The emulator settles in milliseconds; AWS in minutes.
    let poll = if aws::endpoint_override(&config) { Duration::from_millis(300) } else { Duration::from_secs(5) };
    Deployer::new(aws::cloudformation(&config), aws::s3(&config), poll)
        .with_template_bucket(Some(environment.template_bucket.clone()))
}

/// Shows the planned changes and, for a protected environment, asks before applying them.
pub(super) fn confirmation(
    stack: &str,
    name: &str,
    protected: bool,
    yes: bool,
) -> impl FnMut(&[PlannedChange]) -> bool {
    let (stack, name) = (stack.to_owned(), name.to_owned());
    move |changes| {
        println!("stack {stack}: {} change(s)", changes.len());
        print_changes(changes);
        if !protected || yes {
            return true;
        }
        if !std::io::stdin().is_terminal() {
            eprintln!("{name} is protected: rerun with --yes to apply without asking");
            return false;
        }
        eprint!("{name} is protected. Type its name to apply: ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).is_ok() && answer.trim() == name
    }
}

fn print_changes(changes: &[PlannedChange]) {
    if changes.is_empty() {
        println!("no changes");
    }
    for change in changes {
        println!("  {change}");
    }
}

/// Shows stack events: a progress bar over the planned resources on a terminal, one line per
/// event otherwise. Failures always get a line of their own, with the reason.
struct EventView {
    bar: Option<indicatif::ProgressBar>,
}

impl EventView {
    fn new(total: u64) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self { bar: None };
        }
        let bar = indicatif::ProgressBar::new(total.max(1));
        let style = indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar: Some(bar) }
    }

    fn show(&self, event: &Event) {
        let line = match &event.reason {
            Some(reason) if event.status.ends_with("_FAILED") => {
                format!("  {:<28} {}: {reason}", event.status, event.logical_id)
            }
            _ => format!("  {:<28} {}", event.status, event.logical_id),
        };
        let Some(bar) = &self.bar else {
            eprintln!("{line}");
            return;
        };
        if event.status.ends_with("_COMPLETE") && !event.status.contains("ROLLBACK") {
            bar.inc(1);
        }
        if event.status.ends_with("_FAILED") {
            bar.println(line);
        } else {
            bar.set_message(format!("{} {}", event.status, event.logical_id));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// With `grid.ami: image`, stops before the grid's stack is touched unless the image of this
/// build's version exists (`make image ENV=...` builds it); notes a different revision.
async fn check_image(deployer: &Deployer, prepared: &Prepared, name: &str) -> anyhow::Result<()> {
    let found = preflight::check_image(deployer, name, &prepared.environment, env!("CARGO_PKG_VERSION")).await?;
    let revision = env!("BATCHGRID_GIT_REVISION");
    if let Some(found) = found {
        match found.revision.as_deref() {
            Some(built) if built != revision => eprintln!(
                "note: image {} (stack {}) carries batchgrid {} rev {built}; this binary is rev {revision}",
                found.image_id,
                found.stack,
                env!("CARGO_PKG_VERSION")
            ),
            _ => eprintln!("image {} (stack {})", found.image_id, found.stack),
        }
    }
    Ok(())
}

fn request(prepared: &Prepared, name: &str) -> DeployRequest {
    let mut tags = BTreeMap::new();
    tags.insert("Project".to_owned(), prepared.environment.project.clone());
    tags.insert("Environment".to_owned(), name.to_owned());
    tags.insert("CostCentre".to_owned(), prepared.environment.cost_centre.clone());
    DeployRequest {
        stack: prepared.stack.clone(),
        template: prepared.template.clone(),
        tags,
        protected: prepared.environment.protected,
    }
}

/// Runs a provisioning action.
pub async fn run(place: Place, action: Action) -> anyhow::Result<ExitCode> {
    let mut prepared = prepare(&place)?;
    match action {
        Action::Render => {
            println!("{}", prepared.dir.join("template.yaml").display());
        }
        Action::Diff => {
            let deployer = deployer(&prepared.environment).await;
            check_image(&deployer, &prepared, &place.name).await?;
            resume_shape(&place, &mut prepared, &deployer).await?;
            let changes = deployer.diff(&request(&prepared, &place.name)).await?;
            println!("stack {}:", prepared.stack);
            print_changes(&changes);
            let deployed = deployer.deployed_template(&prepared.stack).await?;
            println!("{}", idle_cost_change(&prepared, deployed.as_deref())?);
        }
        Action::Deploy { yes } => {
            let deployer = deployer(&prepared.environment).await;
            check_image(&deployer, &prepared, &place.name).await?;
            let record = resume_shape(&place, &mut prepared, &deployer).await?;
            let protected = prepared.environment.protected;
            let mut confirm = confirmation(&prepared.stack, &place.name, protected, yes);
            // The bar's length is the number of planned changes, known once the change set is.
            let view = std::cell::RefCell::new(EventView { bar: None });
            let mut confirm_then_watch = |changes: &[PlannedChange]| {
                let go = confirm(changes);
                if go {
                    *view.borrow_mut() = EventView::new(changes.len() as u64);
                }
                go
            };
            let result = deployer
                .deploy(&request(&prepared, &place.name), &mut confirm_then_watch, &mut |e| view.borrow().show(e))
                .await;
            view.borrow().finish();
            let (outcome, outputs) = result?;
            match outcome {
                DeployOutcome::Unchanged => println!("stack {} is up to date: nothing to do", prepared.stack),
                DeployOutcome::Applied(changes) => {
                    println!("stack {}: applied {} change(s)", prepared.stack, changes.len())
                }
            }
            if let Some(record) = record.filter(|r| r.state == ParkState::Parked) {
                park::mark_resumed(deployer.s3(), &record).await.context("recording the resume")?;
                match &record.snapshot {
                    Some(snapshot) => println!(
                        "resumed from parking (parked {}): database restored from snapshot {snapshot}, buckets {} and {} adopted with their data",
                        record.parked_at, record.raw_bucket, record.results_bucket
                    ),
                    None => println!(
                        "resumed from parking (parked {}): buckets {} and {} adopted with their data",
                        record.parked_at, record.raw_bucket, record.results_bucket
                    ),
                }
            }
            save_outputs(&prepared, &outputs)?;
        }
        Action::Drift => {
            let deployer = deployer(&prepared.environment).await;
            let drift = deployer.drift(&prepared.stack).await?;
            println!("stack {}: {}", prepared.stack, drift.status);
            for resource in &drift.resources {
                println!("  {:<9} {} ({})", resource.status, resource.logical_id, resource.resource_type);
            }
        }
        Action::Cost { json } => {
            let table = cost::PriceTable::builtin()?;
            let estimate = cost::of_template(&prepared.template, &prepared.environment.region, &table)
                .with_context(|| format!("pricing {}", prepared.dir.join("template.yaml").display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&estimate)?);
            } else {
                print!("{}", cost::text::render(&prepared.stack, &estimate));
            }
        }
        Action::Outputs => {
            let deployer = deployer(&prepared.environment).await;
            let outputs = deployer.outputs_for(&prepared.stack, &prepared.template).await?;
            println!("{}", serde_json::to_string_pretty(&outputs)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How the deploy would move the idle cost: the deployed template's estimate against the
/// rendered one's (a deployed template that cannot be priced is said, not fatal).
fn idle_cost_change(prepared: &Prepared, deployed: Option<&str>) -> anyhow::Result<String> {
    let table = cost::PriceTable::builtin()?;
    let region = &prepared.environment.region;
    let after = cost::of_template(&prepared.template, region, &table).context("pricing the rendered template")?;
    let before = match deployed.map(|template| cost::of_template(template, region, &table)) {
        None => None,
        Some(Ok(before)) => Some(before),
        Some(Err(error)) => return Ok(format!("idle cost: the deployed template cannot be priced ({error})")),
    };
    Ok(cost::text::idle_change(before.as_ref(), &after))
}

/// Writes the stack's outputs to build/NAME/outputs.json and shows them.
fn save_outputs(prepared: &Prepared, outputs: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let path = prepared.dir.join("outputs.json");
    std::fs::write(&path, serde_json::to_string_pretty(outputs)?)
        .with_context(|| format!("writing {}", path.display()))?;
    for (key, value) in outputs {
        println!("  {key} = {value}");
    }
    println!("outputs saved to {}", path.display());
    Ok(())
}

/// Parks the environment: snapshots its database, records what it keeps in the results bucket,
/// and shrinks the stack to its buckets, queues and log group. A protected environment asks
/// first, as a deploy does.
pub async fn park(place: Place, yes: bool) -> anyhow::Result<ExitCode> {
    let mut prepared = prepare(&place)?;
    let running = prepared.template.clone();
    reshape(&place, &mut prepared, Shape::Parked)?;
    let deployer = deployer(&prepared.environment).await;
    let snapshots = match DatabaseKind::of(&prepared.environment.analytics) {
        Some(kind) => {
            let config = aws::sdk_config(&prepared.environment.region).await;
            let poll =
                if aws::endpoint_override(&config) { Duration::from_millis(300) } else { Duration::from_secs(15) };
            Some(Snapshots::new(aws::rds(&config), kind, poll))
        }
        None => None,
    };
    let mut confirm = confirmation(&prepared.stack, &place.name, prepared.environment.protected, yes);
    let view = EventView::new(0);
    let result =
        park::park(&deployer, snapshots.as_ref(), &request(&prepared, &place.name), &running, &mut confirm, &mut |e| {
            view.show(e)
        })
        .await;
    view.finish();
    let parked = result.with_context(|| format!("parking stack {}", prepared.stack))?;
    let record = &parked.record;
    println!(
        "stack {} parked: {} resource(s) removed; kept buckets {} and {} with their data",
        prepared.stack,
        parked.removed.iter().filter(|c| c.action == "remove").count(),
        record.raw_bucket,
        record.results_bucket
    );
    match &record.snapshot {
        Some(snapshot) => println!("database ({}) kept as snapshot {snapshot}", record.snapshot_kind),
        None => println!(
            "database: external (analytics.provider {}), left as it is",
            prepared.environment.analytics.provider
        ),
    }
    if parked.deletion_protection_lifted {
        println!("(the database's deletion protection was lifted to remove it; the resumed one has it again)");
    }
    if let Some(old) = &parked.superseded_snapshot {
        println!("the previous parking's snapshot {old} was deleted (the new one holds the data)");
    }
    println!(
        "parking record: s3://{}/{}; `batchgrid deploy {}` resumes it",
        record.results_bucket,
        park::RECORD_KEY,
        place.name
    );
    let outputs = deployer.outputs_for(&prepared.stack, &prepared.template).await?;
    save_outputs(&prepared, &outputs)?;
    Ok(ExitCode::SUCCESS)
}

/// Deletes the stack; a protected environment needs `--confirm NAME` and keeps its buckets
/// and their data (the template retains them), an unprotected one has them emptied first.
pub async fn teardown(place: Place, confirm: Option<String>) -> anyhow::Result<ExitCode> {
    let prepared = prepare(&place)?;
    let protected = prepared.environment.protected;
    if protected && confirm.as_deref() != Some(place.name.as_str()) {
        anyhow::bail!("{} is protected: pass --confirm {} to tear it down", place.name, place.name);
    }
    let deployer = deployer(&prepared.environment).await;
    let outputs = deployer.outputs_for(&prepared.stack, &prepared.template).await?;
    let buckets: Vec<String> =
        ["RawBucketName", "ResultsBucketName"].iter().filter_map(|key| outputs.get(*key).cloned()).collect();
    // Read before the buckets are emptied: a parked grid's database is only its snapshot.
    let record = park::parking_record(&deployer, &prepared.stack, &prepared.template).await.ok().flatten();
    let policy = if protected { Buckets::Keep } else { Buckets::Empty };
    let view = EventView::new(buckets.len() as u64 + 1);
    let result = deployer.teardown(&prepared.stack, &buckets, policy, &mut |e| view.show(e)).await;
    view.finish();
    let done = result.with_context(|| format!("tearing down stack {}", prepared.stack))?;
    let _ = std::fs::remove_file(prepared.dir.join("outputs.json"));
    if let Some(record) = record.filter(|r| r.snapshot.is_some()) {
        let snapshot = record.snapshot.as_deref().unwrap_or_default();
        if protected {
            println!("{} is protected, so its parked database snapshot {snapshot} stays", place.name);
        } else {
            let config = aws::sdk_config(&prepared.environment.region).await;
            // The record names the snapshot's kind (instance or cluster), whatever the
            // environment file says now.
            let snapshots = Snapshots::new(aws::rds(&config), record.snapshot_kind, Duration::from_secs(5));
            if let Some(deleted) = park::delete_parked_snapshot(&snapshots, &record)
                .await
                .with_context(|| format!("deleting snapshot {snapshot}"))?
            {
                println!("parked database snapshot {deleted} ({}) deleted", record.snapshot_kind);
            }
        }
    }
    if done.kept.is_empty() {
        println!(
            "stack {} deleted ({} objects and versions removed from {} bucket(s))",
            prepared.stack,
            done.removed,
            buckets.len()
        );
    } else {
        println!(
            "stack {} deleted; {} is protected, so its buckets stay with their data: {}",
            prepared.stack,
            place.name,
            done.kept.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A deployed environment's worker group: its name and an Auto Scaling client in its region.
pub(crate) async fn worker_group(place: &Place) -> anyhow::Result<(String, aws_sdk_autoscaling::Client)> {
    let prepared = prepare(place)?;
    let deployer = deployer(&prepared.environment).await;
    let outputs = deployer.outputs_for(&prepared.stack, &prepared.template).await?;
    let group = outputs
        .get("WorkerGroupName")
        .with_context(|| format!("stack {} has no WorkerGroupName", prepared.stack))?
        .clone();
    let config = aws::sdk_config(&prepared.environment.region).await;
    Ok((group, batchgrid_core::aws::autoscaling_client(&config, &Default::default())))
}

/// Starts an instance refresh of the worker group, so new instances launch from the image the
/// launch template now names; old ones drain through the lifecycle hook before they go.
pub async fn rollout(place: Place, min_healthy_percent: i32) -> anyhow::Result<ExitCode> {
    let (group, client) = worker_group(&place).await?;
    let group = group.as_str();
    let preferences = aws_sdk_autoscaling::types::RefreshPreferences::builder()
        .min_healthy_percentage(min_healthy_percent)
        // Scale-in protection marks busy workers; a refresh must not skip them forever, and
        // the lifecycle hook gives each one its drain.
        .scale_in_protected_instances(aws_sdk_autoscaling::types::ScaleInProtectedInstances::Refresh)
        .build();
    let refresh = client
        .start_instance_refresh()
        .auto_scaling_group_name(group)
        .preferences(preferences)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(batchgrid_core::aws::error_text(&e)))
        .with_context(|| format!("starting an instance refresh of {group}"))?;
    println!(
        "instance refresh {} of {group} started (keeping {min_healthy_percent}% in service); follow it with `aws autoscaling describe-instance-refreshes --auto-scaling-group-name {group}`",
        refresh.instance_refresh_id().unwrap_or("?")
    );
    Ok(ExitCode::SUCCESS)
}
