//! `batchgrid render|diff|deploy|outputs|teardown ENV`: thin wrappers over
//! `batchgrid_provision`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use batchgrid_provision::deploy::{DeployOutcome, DeployRequest, Deployer, Event, PlannedChange};
use batchgrid_provision::environment::Environment;
use batchgrid_provision::{aws, environment, render};

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

async fn deployer(environment: &Environment) -> Deployer {
    let config = aws::sdk_config(&environment.region).await;
    // The emulator settles in milliseconds; AWS in minutes.
    let poll = if aws::endpoint_override(&config) { Duration::from_millis(300) } else { Duration::from_secs(5) };
    Deployer::new(aws::cloudformation(&config), aws::s3(&config), poll)
}

fn print_changes(changes: &[PlannedChange]) {
    if changes.is_empty() {
        println!("no changes");
    }
    for change in changes {
        println!("  {change}");
    }
}

fn show_event(event: &Event) {
    match &event.reason {
        Some(reason) if event.status.ends_with("_FAILED") => {
            eprintln!("  {:<28} {}: {reason}", event.status, event.logical_id)
        }
        _ => eprintln!("  {:<28} {}", event.status, event.logical_id),
    }
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
    let prepared = prepare(&place)?;
    match action {
        Action::Render => {
            println!("{}", prepared.dir.join("template.yaml").display());
        }
        Action::Diff => {
            let deployer = deployer(&prepared.environment).await;
            let changes = deployer.diff(&request(&prepared, &place.name)).await?;
            println!("stack {}:", prepared.stack);
            print_changes(&changes);
        }
        Action::Deploy { yes } => {
            let deployer = deployer(&prepared.environment).await;
            let protected = prepared.environment.protected;
            let name = place.name.clone();
            let mut confirm = |changes: &[PlannedChange]| {
                println!("stack {}: {} change(s)", prepared.stack, changes.len());
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
            };
            let (outcome, outputs) =
                deployer.deploy(&request(&prepared, &place.name), &mut confirm, &mut show_event).await?;
            match outcome {
                DeployOutcome::Unchanged => println!("stack {} is up to date: nothing to do", prepared.stack),
                DeployOutcome::Applied(changes) => {
                    println!("stack {}: applied {} change(s)", prepared.stack, changes.len())
                }
            }
            let path = prepared.dir.join("outputs.json");
            std::fs::write(&path, serde_json::to_string_pretty(&outputs)?)
                .with_context(|| format!("writing {}", path.display()))?;
            for (key, value) in &outputs {
                println!("  {key} = {value}");
            }
            println!("outputs saved to {}", path.display());
        }
        Action::Outputs => {
            let deployer = deployer(&prepared.environment).await;
            let outputs = deployer.outputs_for(&prepared.stack, &prepared.template).await?;
            println!("{}", serde_json::to_string_pretty(&outputs)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Empties the buckets and deletes the stack; a protected environment needs `--confirm NAME`.
pub async fn teardown(place: Place, confirm: Option<String>) -> anyhow::Result<ExitCode> {
    let prepared = prepare(&place)?;
    if prepared.environment.protected && confirm.as_deref() != Some(place.name.as_str()) {
        anyhow::bail!("{} is protected: pass --confirm {} to tear it down", place.name, place.name);
    }
    let deployer = deployer(&prepared.environment).await;
    let outputs = deployer.outputs_for(&prepared.stack, &prepared.template).await?;
    let buckets: Vec<String> =
        ["RawBucketName", "ResultsBucketName"].iter().filter_map(|key| outputs.get(*key).cloned()).collect();
    let removed = deployer.teardown(&prepared.stack, &buckets, &mut show_event).await?;
    let _ = std::fs::remove_file(prepared.dir.join("outputs.json"));
    println!(
        "stack {} deleted ({removed} objects and versions removed from {} bucket(s))",
        prepared.stack,
        buckets.len()
    );
    Ok(ExitCode::SUCCESS)
}
