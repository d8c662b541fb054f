//! The machine image of a grid: a CloudFormation stack of its own (`<grid stack>-image`) with
//! a deployment bucket and an EC2 Image Builder build (component, recipe, infrastructure
//! configuration, image) that installs the release binary, its systemd units and a default
//! configuration on the latest Amazon Linux 2023 for the grid's architecture. The new AMI's id
//! lands in the stack's outputs and in the SSM parameter [`image_id_parameter`], which the
//! grid's launch templates resolve with `grid.ami: image`.
//!
//! Rendering goes through the grid's engine (same helpers, same strictness, the `tags`
//! partial) with the `image*` templates added; it is a pure function of the environment, the
//! binary's version and its git revision. The artifacts go to `artifacts/VERSION/` in the
//! deployment bucket before the build, which reads them from there.

use std::path::{Path, PathBuf};

use aws_sdk_s3::primitives::ByteStream;
use handlebars::Handlebars;
use serde::Serialize;

use crate::environment::{Architecture, Environment};
use crate::render::{self, RenderError};

/// The image templates, partials first, then the template `image` that includes them.
const TEMPLATES: [&str; 6] = ["image_tags", "image_bucket", "image_role", "image_recipe", "image_build", "image"];

/// The artifact names under `artifacts/VERSION/`, as the component's document reads them.
pub mod names {
    /// The `batchgrid` binary.
    pub const BINARY: &str = "batchgrid";
    /// The default configuration, installed as `/etc/batchgrid/defaults.env`.
    pub const CONFIG: &str = "defaults.env";
    /// The folder of systemd units, installed in `/etc/systemd/system/`.
    pub const UNITS: &str = "systemd";
    /// The sysusers.d file creating the units' user, installed in `/usr/lib/sysusers.d/`.
    pub const SYSUSERS: &str = "sysusers.d/batchgrid.conf";
    /// The nftables rule keeping job tasks from the instance metadata service, installed as
    /// `/etc/batchgrid/task-firewall.nft` and loaded by `batchgrid-task-firewall.service`.
    pub const TASK_FIREWALL: &str = "nftables/batchgrid-task.nft";
}

/// Where the component installs RDS's global certificate bundle, the authorities the runtime
/// checks the database's certificate against (`BATCHGRID_DATABASE_SSLROOTCERT` in the defaults).
pub const DATABASE_CA_BUNDLE: &str = "/etc/batchgrid/rds-ca.pem";

/// Where the component downloads that bundle at build time: AWS's documented address of the
/// bundle for every commercial Region ("Certificate bundles by AWS Region", RDS user guide).
pub const DATABASE_CA_URL: &str = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem";

/// The default configuration installed with the binary when the packaging folder has none:
/// what every role shares. The instance's user data writes the stack's names to
/// `/etc/batchgrid/ROLE.env`, which the units read after this file, so those values win.
pub const DEFAULT_CONFIG: &str = "\
# batchgrid defaults, installed by the machine image as /etc/batchgrid/defaults.env. The
# instance's user data writes /etc/batchgrid/ROLE.env with the stack's names; units read
# that file after this one, so its values win.
BATCHGRID_LOG=info
BATCHGRID_LOG_FORMAT=json
# The database's certificate is checked, host name included, against the RDS bundle the
# image installs.
BATCHGRID_DATABASE_SSLMODE=verify-full
BATCHGRID_DATABASE_SSLROOTCERT=/etc/batchgrid/rds-ca.pem
";

/// The units' system user when the packaging folder has no sysusers.d file (the same line as
/// `packaging/sysusers.d/batchgrid.conf`): the image always gets the user its units run as.
pub const DEFAULT_SYSUSERS: &str = "\
# The system user and group batchgrid's units run as: no login shell, home at the state directory.
u batchgrid - \"batchgrid services\" /var/lib/batchgrid /usr/sbin/nologin
# The user job tasks run as, never the worker's: no login shell, home `/`, no instance metadata.
u batchgrid-task - \"batchgrid job tasks\" / /usr/sbin/nologin
# The worker shares its tasks' group: their scratch directories belong to it.
m batchgrid batchgrid-task
";

/// The rule keeping job tasks (user `batchgrid-task`) from the instance metadata service when
/// the packaging folder has none (the same rules as `packaging/nftables/batchgrid-task.nft`):
/// the image never runs tasks without it.
pub const DEFAULT_TASK_FIREWALL: &str = "\
#!/usr/sbin/nft -f
# Job tasks (user batchgrid-task) must not reach the instance metadata service.
table inet batchgrid_task
delete table inet batchgrid_task
table inet batchgrid_task {
\tchain output {
\t\ttype filter hook output priority filter; policy accept;
\t\tmeta skuid \"batchgrid-task\" ip daddr 169.254.169.254 meta l4proto tcp reject with tcp reset
\t\tmeta skuid \"batchgrid-task\" ip daddr 169.254.169.254 reject
\t\tmeta skuid \"batchgrid-task\" ip6 daddr fd00:ec2::254 meta l4proto tcp reject with tcp reset
\t\tmeta skuid \"batchgrid-task\" ip6 daddr fd00:ec2::254 reject
\t}
}
";

/// Errors while gathering or uploading the image's artifacts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// A local file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An S3 call failed. AWS errors are carried as text: no SDK types in this crate's API.
    #[error("{operation} s3://{bucket}/{key}: {message}")]
    S3 {
        /// The API operation.
        operation: &'static str,
        /// The bucket.
        bucket: String,
        /// The key or prefix.
        key: String,
        /// AWS's code and message.
        message: String,
    },
}

/// The image stack's name: the grid's stack name and `-image`.
pub fn image_stack_name(name: &str, env: &Environment) -> String {
    format!("{}-image", render::stack_name(name, env))
}

/// The SSM parameter holding the id of the grid's newest image: `/<grid stack>/image-id`. A
/// launch template reads it at launch time with `resolve:ssm:` and this name.
pub fn image_id_parameter(name: &str, env: &Environment) -> String {
    format!("/{}/image-id", render::stack_name(name, env))
}

/// The image's base, for Image Builder: the public SSM parameter of the latest Amazon Linux
/// 2023 for `architecture`, with the `ssm:` prefix Image Builder resolves at build time.
pub fn parent_image(architecture: Architecture) -> String {
    format!("ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{architecture}")
}

/// Where the artifacts of `version` go in the deployment bucket.
pub fn artifact_prefix(version: &str) -> String {
    format!("artifacts/{version}/")
}

/// Adds the image templates from `dir` to an engine made by [`render::engine`], which holds
/// the helpers and the shared partials (`tags`) they use.
pub fn register(engine: &mut Handlebars<'_>, dir: &Path) -> Result<(), RenderError> {
    for name in TEMPLATES {
        let path = dir.join(format!("{name}.yaml.hbs"));
        let text = std::fs::read_to_string(&path).map_err(|source| RenderError::Read { path: path.clone(), source })?;
        engine
            .register_template_string(name, text)
            .map_err(|e| RenderError::Template { name: name.to_owned(), message: e.to_string() })?;
    }
    Ok(())
}

/// The grid's engine with the image templates added: everything in `dir`.
pub fn engine(dir: &Path) -> Result<Handlebars<'static>, RenderError> {
    let mut engine = render::engine(dir)?;
    register(&mut engine, dir)?;
    Ok(engine)
}

#[derive(Clone, Serialize)]
struct Context<'a> {
    description: String,
    renderer: String,
    name: &'a str,
    env: &'a Environment,
    stack_name: String,
    grid_stack: String,
    image_id_parameter: String,
    tags: Vec<render::Tag>,
    version: &'a str,
    revision: &'a str,
    semantic_version: String,
    architecture: &'static str,
    parent_image: String,
    build_instance_types: Vec<String>,
    create_bucket: bool,
    bucket_only: bool,
    bucket_ref: String,
    retain_policy: &'static str,
    component_name: String,
    recipe_name: String,
}

fn invalid(message: String) -> RenderError {
    RenderError::Template { name: "image".to_owned(), message }
}

/// `MAJOR.MINOR.PATCH` of a version such as `0.1.0` or `0.1.0-rc.1+build`: Image Builder takes
/// only the three numbers. The rest may hold letters, digits and `.+-` (it is written into
/// an S3 key and a shell command).
fn semantic_version(version: &str) -> Result<String, RenderError> {
    let bad = || invalid(format!("version `{version}` is not MAJOR.MINOR.PATCH with an optional -suffix"));
    let core_end = version.find(['-', '+']).unwrap_or(version.len());
    let (core, rest) = version.split_at(core_end);
    let numbers: Vec<&str> = core.split('.').collect();
    // Image Builder's limit for each number.
    let number_ok = |n: &&str| !n.is_empty() && n.len() <= 9 && n.chars().all(|c| c.is_ascii_digit());
    if numbers.len() != 3 || !numbers.iter().all(number_ok) {
        return Err(bad());
    }
    if rest.len() == 1 || !rest.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-')) {
        return Err(bad());
    }
    let numbers: Vec<String> = numbers.iter().map(|n| n.trim_start_matches('0').to_owned()).collect();
    Ok(numbers.iter().map(|n| if n.is_empty() { "0" } else { n }).collect::<Vec<_>>().join("."))
}

/// A git revision (or `unknown`): letters, digits, `.`, `_` and `-`, at most 64.
fn check_revision(revision: &str) -> Result<(), RenderError> {
    let ok = (1..=64).contains(&revision.len())
        && revision.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("revision `{revision}` is not a git revision such as abcdef0")))
    }
}

fn json(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// FNV-1a, 64 bits: a fingerprint that stays the same across Rust releases and platforms
/// (std's hasher promises neither), so renders stay byte-for-byte reproducible.
fn fingerprint(text: &str) -> String {
    let hash = text
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3));
    format!("{:012x}", hash >> 16)
}

fn context<'a>(
    name: &'a str,
    env: &'a Environment,
    version: &'a str,
    revision: &'a str,
    bucket_only: bool,
) -> Result<Context<'a>, RenderError> {
    let semantic_version = semantic_version(version)?;
    check_revision(revision)?;
    let grid_stack = render::stack_name(name, env);
    let stack_name = image_stack_name(name, env);
    let tags = render::stack_tags(name, env);
    let create_bucket = env.image.deployment_bucket.is_empty();
    let architecture = env.architecture();
    Ok(Context {
        description: format!("batchgrid: the machine image of the {name} grid ({grid_stack})"),
        renderer: format!("batchgrid-provision {}", env!("CARGO_PKG_VERSION")),
        name,
        env,
        image_id_parameter: image_id_parameter(name, env),
        grid_stack,
        stack_name,
        tags,
        version,
        revision,
        semantic_version,
        architecture: architecture.as_str(),
        parent_image: parent_image(architecture),
        build_instance_types: env.build_instance_types(),
        create_bucket,
        bucket_only,
        bucket_ref: if create_bucket { "!Ref DeploymentBucket".to_owned() } else { json(&env.image.deployment_bucket) },
        // A protected environment keeps the artifacts its images were built from.
        retain_policy: if env.protected { "Retain" } else { "Delete" },
        component_name: String::new(),
        recipe_name: String::new(),
    })
}

/// Renders the image stack's template for environment `name`, building the binary of
/// `version` (`MAJOR.MINOR.PATCH`, optionally `-suffix`) at git `revision`.
pub fn render_image(
    engine: &Handlebars<'_>,
    name: &str,
    env: &Environment,
    version: &str,
    revision: &str,
) -> Result<String, RenderError> {
    let mut context = context(name, env, version, revision, false)?;
    // The fingerprint covers the component and the recipe as rendered, without their tags
    // (which change in place) and before they are named.
    let mut untagged = context.clone();
    untagged.tags.clear();
    let recipe = engine
        .render("image_recipe", &untagged)
        .map_err(|e| RenderError::Template { name: "image_recipe".to_owned(), message: e.to_string() })?;
    let fingerprint = fingerprint(&recipe);
    context.component_name = format!("{}-install-{fingerprint}", context.stack_name);
    context.recipe_name = format!("{}-{fingerprint}", context.stack_name);
    engine
        .render("image", &context)
        .map_err(|e| RenderError::Template { name: "image".to_owned(), message: e.to_string() })
}

/// Renders the image stack with its deployment bucket only: the first deploy of a stack that
/// creates its bucket, so that the artifacts can be uploaded before the build needs them.
/// `None` when the environment names an existing bucket (nothing to create first).
pub fn render_deployment_bucket(
    engine: &Handlebars<'_>,
    name: &str,
    env: &Environment,
) -> Result<Option<String>, RenderError> {
    if !env.image.deployment_bucket.is_empty() {
        return Ok(None);
    }
    let context = context(name, env, "0.0.0", "none", true)?;
    engine
        .render("image", &context)
        .map(Some)
        .map_err(|e| RenderError::Template { name: "image".to_owned(), message: e.to_string() })
}

/// Where an artifact's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local file.
    File(PathBuf),
    /// Built-in text ([`DEFAULT_CONFIG`]).
    BuiltIn(&'static str),
}

/// One file of the image, uploaded as `artifacts/VERSION/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Its name under the version's prefix, e.g. `batchgrid`, `systemd/batchgrid-worker.service`.
    pub name: String,
    /// Its contents.
    pub source: Source,
}

/// What goes into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifacts {
    /// The files, the binary first.
    pub files: Vec<Artifact>,
    /// The units folder, when it does not exist (the image then has no units).
    pub missing_units: Option<PathBuf>,
}

/// Gathers the artifacts: `binary`; `packaging/defaults.env`, or [`DEFAULT_CONFIG`] when there
/// is none; `packaging/systemd/*.service` (none when that folder is missing);
/// `packaging/sysusers.d/batchgrid.conf`, or [`DEFAULT_SYSUSERS`] when there is none;
/// `packaging/nftables/batchgrid-task.nft`, or [`DEFAULT_TASK_FIREWALL`] when there is none.
pub fn collect_artifacts(binary: &Path, packaging: &Path) -> Result<Artifacts, ArtifactError> {
    fn read_error(path: &Path) -> impl Fn(std::io::Error) -> ArtifactError + '_ {
        move |source| ArtifactError::Read { path: path.to_path_buf(), source }
    }
    let metadata = std::fs::metadata(binary).map_err(read_error(binary))?;
    if !metadata.is_file() {
        let source = std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file");
        return Err(ArtifactError::Read { path: binary.to_path_buf(), source });
    }
    let mut files = vec![Artifact { name: names::BINARY.to_owned(), source: Source::File(binary.to_path_buf()) }];
    let config = packaging.join(names::CONFIG);
    let config = if config.is_file() { Source::File(config) } else { Source::BuiltIn(DEFAULT_CONFIG) };
    files.push(Artifact { name: names::CONFIG.to_owned(), source: config });
    let units_dir = packaging.join(names::UNITS);
    let mut missing_units = None;
    if units_dir.is_dir() {
        let mut units = Vec::new();
        for entry in std::fs::read_dir(&units_dir).map_err(read_error(&units_dir))? {
            let path = entry.map_err(read_error(&units_dir))?.path();
            if path.is_file() && path.extension().is_some_and(|e| e == "service") {
                if let Some(file) = path.file_name().and_then(|f| f.to_str()) {
                    units.push(Artifact {
                        name: format!("{}/{file}", names::UNITS),
                        source: Source::File(path.clone()),
                    });
                }
            }
        }
        units.sort_by(|a, b| a.name.cmp(&b.name));
        files.extend(units);
    } else {
        missing_units = Some(units_dir);
    }
    let sysusers = packaging.join(names::SYSUSERS);
    let sysusers = if sysusers.is_file() { Source::File(sysusers) } else { Source::BuiltIn(DEFAULT_SYSUSERS) };
    files.push(Artifact { name: names::SYSUSERS.to_owned(), source: sysusers });
    let firewall = packaging.join(names::TASK_FIREWALL);
    let firewall = if firewall.is_file() { Source::File(firewall) } else { Source::BuiltIn(DEFAULT_TASK_FIREWALL) };
    files.push(Artifact { name: names::TASK_FIREWALL.to_owned(), source: firewall });
    Ok(Artifacts { files, missing_units })
}

/// The architecture of a Linux executable (its ELF header's machine), `None` for anything
/// else: checked before a build that would take minutes to fail on a binary of the wrong kind.
pub fn binary_architecture(path: &Path) -> Result<Option<Architecture>, ArtifactError> {
    use std::io::Read;
    let mut header = [0u8; 20];
    let mut file =
        std::fs::File::open(path).map_err(|source| ArtifactError::Read { path: path.to_path_buf(), source })?;
    if file.read_exact(&mut header).is_err() || &header[..4] != b"\x7fELF" {
        return Ok(None);
    }
    // e_machine, in the file's byte order (EI_DATA: 1 little-endian, 2 big-endian).
    let machine = match header[5] {
        2 => u16::from_be_bytes([header[18], header[19]]),
        _ => u16::from_le_bytes([header[18], header[19]]),
    };
    Ok(match machine {
        0x3e => Some(Architecture::X86_64),
        0xb7 => Some(Architecture::Arm64),
        _ => None,
    })
}

fn s3_error<'a, E>(operation: &'static str, bucket: &'a str, key: &'a str) -> impl Fn(E) -> ArtifactError + 'a
where
    E: std::error::Error + 'static,
{
    move |error| ArtifactError::S3 {
        operation,
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        message: aws_sdk_s3::error::DisplayErrorContext(&error).to_string(),
    }
}

/// Uploads the artifacts to `artifacts/VERSION/` in `bucket` and removes what else is under
/// that prefix (a unit dropped since an earlier upload of the same version), so the build
/// installs exactly these files. Returns the keys written.
pub async fn upload_artifacts(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    version: &str,
    artifacts: &Artifacts,
) -> Result<Vec<String>, ArtifactError> {
    let prefix = artifact_prefix(version);
    let mut keys = Vec::new();
    for artifact in &artifacts.files {
        let key = format!("{prefix}{}", artifact.name);
        let body = match &artifact.source {
            Source::File(path) => ByteStream::from_path(path)
                .await
                .map_err(|e| ArtifactError::Read { path: path.clone(), source: std::io::Error::other(e) })?,
            Source::BuiltIn(text) => ByteStream::from_static(text.as_bytes()),
        };
        s3.put_object().bucket(bucket).key(&key).body(body).send().await.map_err(s3_error(
            "PutObject",
            bucket,
            &key,
        ))?;
        keys.push(key);
    }
    let mut stale = Vec::new();
    let mut pages = s3.list_objects_v2().bucket(bucket).prefix(&prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(s3_error("ListObjectsV2", bucket, &prefix))?;
        stale.extend(
            page.contents().iter().filter_map(|o| o.key()).filter(|k| !keys.iter().any(|w| w == k)).map(str::to_owned),
        );
    }
    for key in stale {
        s3.delete_object().bucket(bucket).key(&key).send().await.map_err(s3_error("DeleteObject", bucket, &key))?;
    }
    Ok(keys)
}

#[cfg(test)]
mod tests;
