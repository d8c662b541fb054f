//! Rendering an environment to a CloudFormation template: a pure function of the validated
//! environment (the same input gives the same bytes), through handlebars partials in
//! `templates/`, one per concern.
//!
//! The engine runs with HTML escaping off and strict mode on (a missing value is an error, not
//! an empty string), and every value from the environment is written by the `yaml` helper as a
//! JSON scalar, which YAML reads as a quoted string or a number: a value holding a colon, a
//! quote, a newline or `{{` stays one value.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use handlebars::Handlebars;
use serde::Serialize;

use crate::environment::{Egress, Environment, RESERVED_TAGS};

/// The worker group's termination lifecycle hook, which workers complete after draining.
pub const LIFECYCLE_HOOK: &str = "drain-on-termination";
/// How long a worker told to stop may take to finish its tasks (within the hook's 300 s
/// heartbeat timeout, which the worker's lifecycle heartbeats extend anyway, and systemd's
/// TimeoutStopSec of 300 s).
pub const DRAIN_DEADLINE: &str = "240s";

/// The partials, in the order `main` includes them.
const PARTIALS: [&str; 14] = [
    "tags",
    "tags_deep",
    "bootstrap",
    "network",
    "storage",
    "queues",
    "aurora",
    "analytics",
    "logs",
    "grid_data_access",
    "grid",
    "manager",
    "outputs",
    "main",
];

/// Rendering errors.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A template file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A template is malformed.
    #[error("template {name}: {message}")]
    Template {
        /// Which template.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// A stack-level tag as the templates write it.
#[derive(Clone, Serialize)]
pub(crate) struct Tag {
    key: String,
    value: String,
}

/// Every stack's tags: the reserved ones (project, environment, cost centre), then the
/// environment's own.
pub(crate) fn stack_tags(name: &str, env: &Environment) -> Vec<Tag> {
    let mut tags = vec![
        Tag { key: RESERVED_TAGS[0].into(), value: env.project.clone() },
        Tag { key: RESERVED_TAGS[1].into(), value: name.into() },
        Tag { key: RESERVED_TAGS[2].into(), value: env.cost_centre.clone() },
    ];
    tags.extend(env.tags.iter().map(|(key, value)| Tag { key: key.clone(), value: value.clone() }));
    tags
}

/// Runs cfn-lint on `files` and fails the test on any finding (`make test` installs it).
#[cfg(test)]
pub(crate) fn assert_cfn_lint_clean(files: &[PathBuf]) {
    let output = std::process::Command::new("cfn-lint").args(files).output().unwrap_or_else(|e| {
        panic!("cannot run cfn-lint ({e}): install it with `python3 -m pip install cfn-lint` (make test does)")
    });
    assert!(
        output.status.success(),
        "cfn-lint found problems (exit {:?}):\n{}{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The checkov version `make tools` installs into its own virtual environment; the scan's
/// verdicts change between versions, so the version is pinned and said here once.
#[cfg(test)]
pub(crate) const CHECKOV_VERSION: &str = "3.3.30";

/// Where `make tools` puts checkov: `BATCHGRID_CHECKOV` if set, else the virtual environment
/// under `$HOME/.cache/batchgrid/checkov-venv` (outside the repository, shared by worktrees).
#[cfg(test)]
pub(crate) fn checkov_path() -> PathBuf {
    if let Some(path) = std::env::var_os("BATCHGRID_CHECKOV") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache/batchgrid/checkov-venv/bin/checkov")
}

/// Runs checkov on `files` and fails the test on any failed check. A check that does not apply
/// is skipped in the template, on the resource, with its reason (`Metadata: checkov: skip`);
/// [`assert_checkov_skips_explained`] holds every such skip to a written comment. Never skips
/// itself: a missing checkov is a failure that names `make tools`.
#[cfg(test)]
pub(crate) fn assert_checkov_clean(files: &[PathBuf]) {
    let checkov = checkov_path();
    let missing = |e: std::io::Error| -> ! {
        panic!(
            "cannot run checkov at {} ({e}): `make tools` installs checkov {CHECKOV_VERSION} in its own virtual \
             environment, ~/.cache/batchgrid/checkov-venv (BATCHGRID_CHECKOV names another checkov binary)",
            checkov.display()
        )
    };
    // The pinned version, and no other: checks and their verdicts change between releases.
    let version = std::process::Command::new(&checkov).arg("--version").output().unwrap_or_else(|e| missing(e));
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    assert_eq!(
        version,
        CHECKOV_VERSION,
        "{} is checkov {version}, not the pinned one: run `make tools`",
        checkov.display()
    );
    let mut command = std::process::Command::new(&checkov);
    for file in files {
        command.arg("--file").arg(file);
    }
    // --skip-download: no calls to the vendor's platform (tests never leave the machine).
    command.args(["--framework", "cloudformation", "--compact", "--quiet", "--skip-download", "--output", "cli"]);
    let output = command.output().unwrap_or_else(|e| missing(e));
    assert!(
        output.status.success(),
        "checkov failed checks (exit {:?}); fix the template or skip the check on the resource with \
         `Metadata: checkov: skip: [{{id: CKV_..., comment: why}}]`:\n{}{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every `Metadata: checkov: skip` in a rendered template names a check id and says why in
/// a comment of some length, so no failure is waved through without a reason in review.
#[cfg(test)]
pub(crate) fn assert_checkov_skips_explained(name: &str, template: &str) {
    let parsed: serde_yaml::Value = serde_yaml::from_str(template).unwrap_or_else(|e| panic!("{name}: not YAML: {e}"));
    let Some(resources) = parsed["Resources"].as_mapping() else { panic!("{name}: no Resources") };
    for (id, resource) in resources {
        let Some(skips) = resource["Metadata"]["checkov"]["skip"].as_sequence() else { continue };
        for skip in skips {
            let check = skip["id"].as_str().unwrap_or_default();
            let comment = skip["comment"].as_str().unwrap_or_default();
            assert!(check.starts_with("CKV_"), "{name}: {id:?} skips {skip:?} without a check id");
            assert!(
                comment.len() >= 40,
                "{name}: {id:?} skips {check} without a written reason (comment): {comment:?}"
            );
        }
    }
}

#[derive(Serialize)]
struct Subnet {
    id: &'static str,
    cidr: String,
    zone: u8,
    route_table: &'static str,
}

#[derive(Serialize)]
struct Named {
    id: &'static str,
}

#[derive(Serialize)]
struct Context<'a> {
    description: String,
    renderer: String,
    name: &'a str,
    env: &'a Environment,
    stack_name: String,
    group_name: String,
    log_group_name: String,
    tags: Vec<Tag>,
    create_network: bool,
    subnets: Vec<Subnet>,
    vpc_ref: String,
    vpc_cidr: &'a str,
    private_subnet_refs: Vec<String>,
    first_private_subnet_ref: String,
    buckets: [Named; 2],
    queues: [Named; 2],
    retain_policy: &'static str,
    versioning_status: &'static str,
    queue_retention_seconds: u32,
    database_deletion_policy: &'static str,
    on_demand_percent: u32,
    lifecycle_hook: &'static str,
    drain_deadline: &'static str,
    first_instance_type: String,
    worker_ami: String,
    manager_ami: String,
    tasks_per_instance: u32,
    target_completion: String,
    scale_in_delay: String,
    rds: bool,
    internet: bool,
    serverless: bool,
    nat: bool,
    public_egress: bool,
    worker_subnet_refs: Vec<String>,
    manager_subnet_ref: String,
    database: DatabaseRefs,
    parked: bool,
    restore_snapshot: Option<&'a str>,
}

/// How the templates name the database the stack creates: the RDS instance, or the Aurora
/// cluster (whose IAM-auth resource id and attributes differ).
#[derive(Serialize)]
struct DatabaseRefs {
    /// Its logical id, for `Fn::GetAtt`.
    id: &'static str,
    /// Its resource id inside `!Sub` (the `rds-db:connect` ARN).
    resource_id_sub: &'static str,
    /// Its endpoint's address inside `!Sub`.
    host_sub: &'static str,
    /// Its master secret's ARN inside `!Sub`.
    secret_sub: &'static str,
}

impl DatabaseRefs {
    fn of(env: &Environment) -> Self {
        if env.analytics.is_serverless() {
            Self {
                id: "AuroraCluster",
                resource_id_sub: "${AuroraCluster.DBClusterResourceId}",
                host_sub: "${AuroraCluster.Endpoint.Address}",
                secret_sub: "${AuroraCluster.MasterUserSecret.SecretArn}",
            }
        } else {
            Self {
                id: "Database",
                resource_id_sub: "${Database.DbiResourceId}",
                host_sub: "${Database.Endpoint.Address}",
                secret_sub: "${Database.MasterUserSecret.SecretArn}",
            }
        }
    }
}

/// Which shape of an environment's stack to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape<'a> {
    /// The whole grid, its database created empty.
    #[default]
    Running,
    /// The whole grid, its database restored from the snapshot `batchgrid park` took (and named
    /// again on every later deploy, or CloudFormation would replace it with an empty one).
    Resumed {
        /// The DB snapshot identifier.
        snapshot: &'a str,
    },
    /// Only the data and what costs nothing standing still: buckets, queues, log group.
    Parked,
}

/// The CloudFormation stack name of an environment.
pub fn stack_name(name: &str, env: &Environment) -> String {
    let mut stack = format!("{}-{name}", env.project);
    if !env.name_suffix.is_empty() {
        stack.push('-');
        stack.push_str(&env.name_suffix);
    }
    stack
}

/// The workers' image: with `ami: image`, the parameter `make image` writes, resolved by EC2
/// at every launch (so new instances take the newest image without a deploy).
fn worker_ami(name: &str, env: &Environment) -> String {
    if env.grid.ami == crate::environment::IMAGE_AMI {
        format!("resolve:ssm:{}", crate::image::image_id_parameter(name, env))
    } else {
        env.grid.ami.clone()
    }
}

/// The manager's image: an instance takes no launch-time reference, so with `ami: image`
/// CloudFormation resolves the parameter at deploy time.
fn manager_ami(name: &str, env: &Environment) -> String {
    if env.grid.ami == crate::environment::IMAGE_AMI {
        format!("{{{{resolve:ssm:{}}}}}", crate::image::image_id_parameter(name, env))
    } else {
        env.grid.ami.clone()
    }
}

/// Four equal subnets of a validated VPC CIDR (prefix 16 to 26): two public, two private.
fn quarter(cidr: &str) -> [String; 4] {
    let (address, prefix) = cidr.split_once('/').unwrap_or((cidr, "16"));
    let base = u32::from(address.parse::<Ipv4Addr>().unwrap_or(Ipv4Addr::new(10, 0, 0, 0)));
    let prefix: u32 = prefix.parse().unwrap_or(16);
    let size = 1u32 << (32 - (prefix + 2));
    [0, 1, 2, 3].map(|i| format!("{}/{}", Ipv4Addr::from(base + i * size), prefix + 2))
}

fn json(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

fn context<'a>(name: &'a str, env: &'a Environment, shape: Shape<'a>) -> Context<'a> {
    let stack = stack_name(name, env);
    let tags = stack_tags(name, env);
    let [public1, public2, private1, private2] = quarter(&env.network.vpc_cidr);
    let (create_network, vpc_ref, private_subnet_refs) = match &env.network.existing {
        Some(existing) => {
            (false, json(&existing.vpc_id), existing.private_subnet_ids.iter().map(|s| json(s)).collect())
        }
        None => (true, "!Ref Vpc".to_owned(), vec!["!Ref PrivateSubnet1".to_owned(), "!Ref PrivateSubnet2".to_owned()]),
    };
    let first_private_subnet_ref = private_subnet_refs.first().cloned().unwrap_or_default();
    let subnet = |id, cidr, zone, route_table| Subnet { id, cidr, zone, route_table };
    let mut subnets = vec![
        subnet("PublicSubnet1", public1, 0, "PublicRouteTable"),
        subnet("PublicSubnet2", public2, 1, "PublicRouteTable"),
        subnet("PrivateSubnet1", private1, 0, "PrivateRouteTable"),
        subnet("PrivateSubnet2", private2, 1, "PrivateRouteTable"),
    ];
    if !env.network.internet {
        subnets.drain(..2);
    }
    // Public egress needs the public subnets of a network batchgrid creates (validation says
    // so); an environment changed after loading falls back to the private ones.
    let public_egress = env.network.egress == Egress::Public && create_network && env.network.internet;
    let worker_subnet_refs = if public_egress {
        vec!["!Ref PublicSubnet1".to_owned(), "!Ref PublicSubnet2".to_owned()]
    } else {
        private_subnet_refs.clone()
    };
    let manager_subnet_ref =
        if public_egress { "!Ref PublicSubnet1".to_owned() } else { first_private_subnet_ref.clone() };
    Context {
        description: format!("batchgrid: the {name} grid ({stack})"),
        renderer: format!("batchgrid-provision {}", env!("CARGO_PKG_VERSION")),
        name,
        env,
        group_name: format!("{stack}-workers"),
        log_group_name: format!("/batchgrid/{stack}"),
        stack_name: stack,
        tags,
        create_network,
        subnets,
        vpc_ref,
        vpc_cidr: &env.network.vpc_cidr,
        private_subnet_refs,
        first_private_subnet_ref,
        buckets: [Named { id: "RawBucket" }, Named { id: "ResultsBucket" }],
        queues: [Named { id: "InputQueue" }, Named { id: "OutputQueue" }],
        // Protected environments keep their data when the stack goes: buckets stay and the
        // database leaves a final snapshot.
        retain_policy: if env.protected { "Retain" } else { "Delete" },
        versioning_status: if env.storage.versioning { "Enabled" } else { "Suspended" },
        queue_retention_seconds: env.queues.retention_days * 86_400,
        database_deletion_policy: if env.protected { "Snapshot" } else { "Delete" },
        on_demand_percent: if env.grid.spot { 0 } else { 100 },
        lifecycle_hook: LIFECYCLE_HOOK,
        first_instance_type: env.grid.instance_types.first().cloned().unwrap_or_default(),
        worker_ami: worker_ami(name, env),
        manager_ami: manager_ami(name, env),
        tasks_per_instance: env.grid.tasks_per_instance,
        target_completion: crate::environment::duration_text(env.grid.target_completion),
        scale_in_delay: crate::environment::duration_text(env.grid.scale_in_delay),
        drain_deadline: DRAIN_DEADLINE,
        rds: env.analytics.creates_database(),
        internet: env.network.internet,
        serverless: env.analytics.is_serverless(),
        nat: env.network.internet && !public_egress,
        public_egress,
        worker_subnet_refs,
        manager_subnet_ref,
        database: DatabaseRefs::of(env),
        parked: shape == Shape::Parked,
        restore_snapshot: match shape {
            Shape::Resumed { snapshot } => Some(snapshot),
            _ => None,
        },
    }
}

/// Template helpers: `yaml` writes any value as a JSON (so quoted YAML) scalar, `concat` joins
/// two strings, `str` turns a number into a string (CloudFormation wants some numbers as text).
mod helpers {
    #![allow(missing_docs)]
    use handlebars::handlebars_helper;

    handlebars_helper!(yaml_scalar: |value: Json| serde_json::to_string(value).unwrap_or_default());
    handlebars_helper!(concat: |a: str, b: str| format!("{a}{b}"));
    handlebars_helper!(to_str: |value: Json| match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    });
}

/// The template engine with the project's templates loaded from `dir`.
pub fn engine(dir: &Path) -> Result<Handlebars<'static>, RenderError> {
    let mut engine = Handlebars::new();
    engine.register_escape_fn(handlebars::no_escape);
    engine.set_strict_mode(true);
    engine.register_helper("yaml", Box::new(helpers::yaml_scalar));
    engine.register_helper("concat", Box::new(helpers::concat));
    engine.register_helper("str", Box::new(helpers::to_str));
    for name in PARTIALS {
        let path = dir.join(format!("{name}.yaml.hbs"));
        let text = std::fs::read_to_string(&path).map_err(|source| RenderError::Read { path: path.clone(), source })?;
        engine
            .register_template_string(name, text)
            .map_err(|e| RenderError::Template { name: name.to_owned(), message: e.to_string() })?;
    }
    Ok(engine)
}

/// Renders the template of environment `name`, the whole grid with an empty database.
pub fn render(engine: &Handlebars<'_>, name: &str, env: &Environment) -> Result<String, RenderError> {
    render_shape(engine, name, env, Shape::Running)
}

/// Renders the template of environment `name` in the given shape.
pub fn render_shape(
    engine: &Handlebars<'_>,
    name: &str,
    env: &Environment,
    shape: Shape<'_>,
) -> Result<String, RenderError> {
    engine
        .render("main", &context(name, env, shape))
        .map_err(|e| RenderError::Template { name: "main".to_owned(), message: e.to_string() })
}

#[cfg(test)]
mod tests;
