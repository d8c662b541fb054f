//! `batchgrid image ENV`: the grid's machine image. Renders the image stack, uploads the
//! release binary, the systemd units and the default configuration to its deployment bucket
//! (creating the stack with only that bucket first when it has none yet), then deploys the
//! stack, whose EC2 Image Builder build installs them, through the grid's change-set deployer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use batchgrid_provision::deploy::{DeployOutcome, DeployRequest, Deployer, Event};
use batchgrid_provision::environment::{self, Environment};
use batchgrid_provision::{aws, image};

use super::provision::{confirmation, Place};

/// What `batchgrid --version` prints after the name, and what the image's build checks the
/// installed binary prints: the version and the git revision it was built from.
pub(crate) const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (rev ", env!("BATCHGRID_GIT_REVISION"), ")");

/// Arguments of `batchgrid image`.
#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    #[command(flatten)]
    place: Place,
    /// The release binary to install, built for the grid's architecture (`make image` builds it).
    #[arg(long, required_unless_present = "print_architecture")]
    binary: Option<PathBuf>,
    /// The binary's version: the artifacts' prefix and the image's `batchgrid:version` tag.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    version: String,
    /// The binary's git revision: the image's `batchgrid:revision` tag, checked by the build.
    #[arg(long, default_value = env!("BATCHGRID_GIT_REVISION"))]
    revision: String,
    /// The packaging folder: `systemd/*.service` and `defaults.env` (a built-in default when
    /// it has none).
    #[arg(long, default_value = "packaging")]
    artifacts: PathBuf,
    /// Render and upload the artifacts, but build no image (the local emulator has no EC2
    /// Image Builder).
    #[arg(long)]
    upload_only: bool,
    /// Apply to a protected environment without asking.
    #[arg(long)]
    yes: bool,
    /// Print the grid's architecture and its Rust target (`arm64 aarch64-unknown-linux-gnu`)
    /// and exit: what `make image` builds the binary for.
    #[arg(long)]
    print_architecture: bool,
}

/// One line per stack event; failures with their reason. (An image build sits minutes in
/// one event, so a progress bar over resources would say little.)
fn show(event: &Event) {
    match &event.reason {
        Some(reason) if event.status.ends_with("_FAILED") => {
            eprintln!("  {:<28} {}: {reason}", event.status, event.logical_id)
        }
        _ => eprintln!("  {:<28} {}", event.status, event.logical_id),
    }
}

fn request(stack: &str, template: String, name: &str, env: &Environment) -> DeployRequest {
    let tags = BTreeMap::from([
        ("Project".to_owned(), env.project.clone()),
        ("Environment".to_owned(), name.to_owned()),
        ("CostCentre".to_owned(), env.cost_centre.clone()),
    ]);
    DeployRequest { stack: stack.to_owned(), template, tags, protected: env.protected }
}

/// The deployment bucket: the environment's, the stack's, or (for a stack not there yet) the
/// one a first deploy of the stack with only its bucket creates.
async fn deployment_bucket(
    deployer: &Deployer,
    bucket_template: Option<String>,
    stack: &str,
    args: &ImageArgs,
    env: &Environment,
) -> anyhow::Result<String> {
    let Some(bucket_template) = bucket_template else {
        return Ok(env.image.deployment_bucket.clone());
    };
    let status = deployer.status(stack).await?;
    let outputs = match status {
        // A failed first create is deleted and created again by the deployer.
        Some(status) if status.as_str() != "ROLLBACK_COMPLETE" => deployer.outputs_for(stack, &bucket_template).await?,
        _ => {
            println!("stack {stack} is new: creating its deployment bucket first");
            let request = request(stack, bucket_template, &args.place.name, env);
            let mut confirm = confirmation(stack, &args.place.name, env.protected, args.yes);
            deployer.deploy(&request, &mut confirm, &mut show).await?.1
        }
    };
    outputs.get("DeploymentBucketName").cloned().with_context(|| {
        format!("stack {stack} has no DeploymentBucketName output: is it settled? (batchgrid outputs)")
    })
}

/// Refuses a binary of the wrong kind, or one that is not the version and revision the image
/// is tagged with, before a build that would take minutes to fail on it (the build's validate
/// phase checks the same); only warns when nothing will be built.
fn check_binary(binary: &Path, args: &ImageArgs, env: &Environment) -> anyhow::Result<()> {
    let architecture = env.architecture();
    let found = image::binary_architecture(binary)?;
    let problem = if found == Some(architecture) {
        version_mismatch(binary, &args.version, &args.revision)?
    } else {
        let what = found.map_or_else(|| "not a Linux executable".to_owned(), |a| format!("built for {a}"));
        Some(format!(
            "{} is {what}, but the {} grid is {architecture} (build it with --target {})",
            binary.display(),
            args.place.name,
            architecture.rust_target()
        ))
    };
    match problem {
        None => Ok(()),
        Some(message) if args.upload_only => {
            eprintln!("warning: {message}");
            Ok(())
        }
        Some(message) => bail!(message),
    }
}

/// What is wrong with the binary's `--version`, when this machine can run it (a binary built
/// for another architecture is left to the build's validate phase).
fn version_mismatch(binary: &Path, version: &str, revision: &str) -> anyhow::Result<Option<String>> {
    let native = match std::env::consts::ARCH {
        "x86_64" => image::binary_architecture(binary)? == Some(environment::Architecture::X86_64),
        "aarch64" => image::binary_architecture(binary)? == Some(environment::Architecture::Arm64),
        _ => false,
    };
    if !native {
        return Ok(None);
    }
    let output = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", binary.display()))?;
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let expected = format!("batchgrid {version} (rev {revision})");
    Ok((printed != expected).then(|| {
        format!(
            "{} --version prints `{printed}`, not `{expected}`: pass --version and --revision of the binary",
            binary.display()
        )
    }))
}

/// Builds (or, with `--upload-only`, prepares) the environment's machine image.
pub async fn run(args: ImageArgs) -> anyhow::Result<ExitCode> {
    let place = &args.place;
    let lookup = |name: &str| std::env::var(name).ok();
    let env = environment::load(&place.environments, &place.name, &lookup)?;
    let architecture = env.architecture();
    if args.print_architecture {
        println!("{architecture} {}", architecture.rust_target());
        return Ok(ExitCode::SUCCESS);
    }
    let engine = image::engine(&place.templates)?;
    let template = image::render_image(&engine, &place.name, &env, &args.version, &args.revision)?;
    let bucket_template = image::render_deployment_bucket(&engine, &place.name, &env)?;
    let dir = place.out.join(&place.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("image.yaml");
    std::fs::write(&path, &template).with_context(|| format!("writing {}", path.display()))?;
    println!("rendered {} ({architecture}, version {}, rev {})", path.display(), args.version, args.revision);

    let binary = args.binary.as_deref().context("--binary is required")?;
    check_binary(binary, &args, &env)?;
    let artifacts = image::collect_artifacts(binary, &args.artifacts)?;
    let config = aws::sdk_config(&env.region).await;
    let emulator = aws::endpoint_override(&config);
    if emulator && !args.upload_only {
        bail!(
            "the AWS endpoint is overridden (the local emulator?), which has no EC2 Image Builder: \
             pass --upload-only to render and upload the artifacts without building an image"
        );
    }
    // The emulator settles in milliseconds; AWS in minutes.
    let poll = if emulator { Duration::from_millis(300) } else { Duration::from_secs(5) };
    let deployer = Deployer::new(aws::cloudformation(&config), aws::s3(&config), poll)
        .with_template_bucket(Some(env.template_bucket.clone()));
    let stack = image::image_stack_name(&place.name, &env);

    let bucket = deployment_bucket(&deployer, bucket_template, &stack, &args, &env).await?;
    let keys = image::upload_artifacts(&aws::s3(&config), &bucket, &args.version, &artifacts).await?;
    for key in &keys {
        println!("  uploaded s3://{bucket}/{key}");
    }
    if let Some(missing) = &artifacts.missing_units {
        println!("  no {}: the image gets no systemd units (skipped)", missing.display());
    }
    if args.upload_only {
        if emulator {
            println!(
                "the local emulator cannot build images (it has no EC2 Image Builder): the image stack \
                 is rendered and its artifacts are uploaded; no AMI was built"
            );
        } else {
            println!("--upload-only: the artifacts are uploaded; no AMI was built");
        }
        return Ok(ExitCode::SUCCESS);
    }

    println!("building the image in stack {stack}: EC2 Image Builder takes 20 to 40 minutes");
    let request = request(&stack, template, &place.name, &env);
    let mut confirm = confirmation(&stack, &place.name, env.protected, args.yes);
    let (outcome, outputs) = deployer.deploy(&request, &mut confirm, &mut show).await?;
    match outcome {
        DeployOutcome::Unchanged => println!("stack {stack} is up to date: this build's image exists already"),
        DeployOutcome::Applied(changes) => println!("stack {stack}: applied {} change(s)", changes.len()),
    }
    let path = dir.join("image-outputs.json");
    std::fs::write(&path, serde_json::to_string_pretty(&outputs)?)
        .with_context(|| format!("writing {}", path.display()))?;
    for (key, value) in &outputs {
        println!("  {key} = {value}");
    }
    println!("outputs saved to {}; `grid.ami: image` runs the grid on this image", path.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_names_the_git_revision() {
        let revision = super::VERSION
            .strip_prefix(concat!(env!("CARGO_PKG_VERSION"), " (rev "))
            .and_then(|rest| rest.strip_suffix(')'))
            .expect("VERSION (rev REVISION)");
        assert!(!revision.is_empty() && revision.chars().all(|c| c.is_ascii_alphanumeric()), "{revision}");
    }
}
