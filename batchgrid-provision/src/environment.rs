//! Environments: `base.yaml` plus one file of overrides, merged, expanded and validated.
//!
//! Loading goes raw, then merged, then validated: each file is parsed on its own (with
//! `${VAR}` expanded there, so an unset variable is blamed on the file that uses it), the two
//! trees are deep-merged (maps key by key; scalars and lists replaced), and the result is
//! deserialized strictly. An error found on the merged tree names its field path; the file and
//! line are found by looking the path up in the override file first, then in the base.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use batchgrid_core::spec::locate::{bare_message, locate, locate_exact, position_suffix, FieldPath, Position};
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

/// An environment problem: file, line and key, on one line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}{at}: {key}: {message}", at = position_suffix(.position))]
pub struct EnvironmentError {
    /// The file the problem is in (or would be).
    pub file: PathBuf,
    /// Line and column, when known.
    pub position: Option<Position>,
    /// The key path, e.g. `grid.max_size`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// A validated environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// Project name, the first part of every resource name.
    pub project: String,
    /// AWS region.
    pub region: String,
    /// Appended to the stack name so that many grids coexist (a CI pipeline id).
    pub name_suffix: String,
    /// Protected environments ask before changes and refuse teardown without confirmation.
    pub protected: bool,
    /// Cost centre tag on every resource.
    pub cost_centre: String,
    /// Extra tags on every resource.
    pub tags: BTreeMap<String, String>,
    /// An existing bucket for templates too large to send inline (empty: none).
    pub template_bucket: String,
    /// The network.
    pub network: Network,
    /// The buckets.
    pub storage: Storage,
    /// The queues.
    pub queues: Queues,
    /// The analytics database.
    pub analytics: Analytics,
    /// The worker group.
    pub grid: GridGroup,
    /// The manager instance.
    pub manager: ManagerInstance,
    /// Log retention.
    pub logs: Logs,
    /// The machine image `make image` builds (optional: every key has a default).
    #[serde(default)]
    pub image: ImageSettings,
}

/// Network settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// CIDR of the VPC batchgrid creates.
    pub vpc_cidr: String,
    /// Add a gateway endpoint for S3 (saves NAT traffic).
    pub s3_gateway_endpoint: bool,
    /// Give the private subnets a way out (internet gateway, NAT, routes). Off creates only
    /// the VPC and its private subnets: for the local emulator, which cannot delete gateways
    /// and routes again.
    pub internet: bool,
    /// Use this VPC and its private subnets instead of creating a network.
    pub existing: Option<ExistingNetwork>,
    /// How the grid's instances reach AWS APIs: through a NAT gateway from private subnets
    /// (the default), or from public subnets with a public address of their own and no
    /// inbound rule (no NAT gateway to pay for).
    #[serde(default)]
    pub egress: Egress,
}

/// The way out to AWS APIs of the manager and the workers (`network.egress`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Egress {
    /// Private subnets behind a NAT gateway (and its Elastic IP).
    #[default]
    Nat,
    /// Public subnets, a public IPv4 address per instance while it runs, no inbound rule.
    Public,
}

/// A network the grid joins instead of creating one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExistingNetwork {
    /// The VPC id.
    pub vpc_id: String,
    /// Private subnets in at least two zones, with a route to AWS APIs.
    pub private_subnet_ids: Vec<String>,
}

/// Bucket settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// Keep object versions.
    pub versioning: bool,
    /// Days before interim results expire.
    pub interim_expiry_days: u32,
    /// S3 server access logs of both buckets, delivered to a log bucket of their own (an audit
    /// trail of who read or wrote which object; production turns it on).
    pub access_logs: bool,
}

/// Queue settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queues {
    /// Visibility timeout of the input and output queues.
    pub visibility_timeout_seconds: u32,
    /// Message retention, 1 to 14 days.
    pub retention_days: u32,
    /// Deliveries before a message moves to the dead-letter queue.
    pub max_receives: u32,
}

/// Analytics database settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Analytics {
    /// `rds` (the stack creates a PostgreSQL instance), `serverless` (the stack creates an
    /// Aurora PostgreSQL Serverless v2 cluster that pauses when idle) or `external` (the grid
    /// is given one: `local` uses the PostgreSQL on loopback, since the emulator's RDS has no
    /// database behind it).
    pub provider: String,
    /// RDS instance class.
    pub instance_class: String,
    /// Storage in GiB.
    pub allocated_storage_gb: u32,
    /// Standby in a second zone.
    pub multi_az: bool,
    /// Days of automated backups, 0 to 35.
    pub backup_retention_days: u32,
    /// Refuse deletion of the database.
    pub deletion_protection: bool,
    /// RDS enhanced monitoring: seconds between OS metrics (1, 5, 10, 15, 30 or 60), or 0 for
    /// none. On, the stack creates the monitoring role RDS publishes them with.
    pub enhanced_monitoring_seconds: u32,
    /// `serverless`: the most Aurora capacity units (ACUs, 1 to 256 in half steps) the
    /// cluster scales up to; the least is 0 (paused).
    #[serde(default = "default_max_acu")]
    pub max_acu: f64,
    /// `serverless`: seconds without a connection before the cluster pauses (300 to 86400).
    #[serde(default = "default_auto_pause_seconds")]
    pub auto_pause_seconds: u32,
}

/// `analytics.provider: rds`.
pub const PROVIDER_RDS: &str = "rds";
/// `analytics.provider: serverless`.
pub const PROVIDER_SERVERLESS: &str = "serverless";
/// `analytics.provider: external`.
pub const PROVIDER_EXTERNAL: &str = "external";

fn default_max_acu() -> f64 {
    4.0
}

fn default_auto_pause_seconds() -> u32 {
    300
}

impl Analytics {
    /// The stack creates the database (an RDS instance or an Aurora Serverless v2 cluster).
    pub fn creates_database(&self) -> bool {
        self.provider == PROVIDER_RDS || self.provider == PROVIDER_SERVERLESS
    }

    /// The database is Aurora PostgreSQL Serverless v2.
    pub fn is_serverless(&self) -> bool {
        self.provider == PROVIDER_SERVERLESS
    }
}

/// Worker Auto Scaling group settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridGroup {
    /// [`IMAGE_AMI`] (`image`, the default): the image `make image` built, read from the image
    /// stack's parameter; or a fixed AMI id, which must come from `make image` too (a stock
    /// image has no batchgrid, so `{{resolve:ssm:...}}` references are refused).
    pub ami: String,
    /// Instance types, in order of preference.
    pub instance_types: Vec<String>,
    /// Smallest group size.
    pub min_size: u32,
    /// Size at creation.
    pub desired_size: u32,
    /// Largest group size.
    pub max_size: u32,
    /// Use spot capacity.
    pub spot: bool,
    /// Give workers `AmazonSSMManagedInstanceCore`, so an operator can open a shell on them
    /// (Session Manager). Off by default: that policy also reads any SSM parameter, which a
    /// task on the instance could do too.
    pub shell_access: bool,
    /// An IAM role for tasks: workers may assume it (and only it) and give each command its
    /// short-lived credentials. `None` (the default): tasks get no AWS credentials.
    #[serde(default)]
    pub task_role_arn: Option<String>,
    /// Target queue backlog per in-service instance of the safety-net scaling policy (the
    /// manager sizes the group itself; see [`GridGroup::target_completion`]).
    pub backlog_per_instance: u32,
    /// Tasks one worker instance runs at once: the manager sizes the group by it (>= 1).
    pub tasks_per_instance: u32,
    /// The time the manager sizes the group to finish the remaining work in (>= 1m;
    /// written as `15m`, `1h30m`, ...).
    #[serde(with = "humantime_serde")]
    pub target_completion: Duration,
    /// How long the group stays up with no work left before the manager lowers it to
    /// `min_size` (0s to 24h).
    #[serde(with = "humantime_serde")]
    pub scale_in_delay: Duration,
}

/// Manager instance settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagerInstance {
    /// EC2 instance type.
    pub instance_type: String,
    /// `private` (reached through SSM port forwarding only).
    pub access: String,
    /// Size of its root volume (gp3) in GiB, at least the image's 8.
    #[serde(default = "default_manager_volume_gb")]
    pub volume_gb: u32,
}

fn default_manager_volume_gb() -> u32 {
    30
}

/// Settings of the machine image built by `make image` (the `image` stack).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSettings {
    /// Instance types Image Builder may build on, of the grid's architecture; empty: picked
    /// for it ([`Architecture::build_instance_types`]).
    #[serde(default)]
    pub build_instance_types: Vec<String>,
    /// An existing bucket for the image's artifacts; empty: the image stack creates one.
    #[serde(default)]
    pub deployment_bucket: String,
}

/// `grid.ami: image`: the grid runs the image `make image` built for it.
pub const IMAGE_AMI: &str = "image";

/// A processor architecture, as AWS names it for AMIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Architecture {
    /// 64-bit ARM (Graviton).
    #[serde(rename = "arm64")]
    Arm64,
    /// 64-bit x86 (Intel, AMD).
    #[serde(rename = "x86_64")]
    X86_64,
}

impl Architecture {
    /// The architecture of an instance type: Graviton families (`a1`, and those whose
    /// generation digit is followed by `g`: `m7g`, `c7gn`, `t4g`, `im4gn`, `hpc7g`) are arm64,
    /// every other family x86_64.
    pub fn of_instance_type(kind: &str) -> Self {
        let family = kind.split_once('.').map_or(kind, |(family, _)| family);
        if family == "a1" {
            return Self::Arm64;
        }
        let attributes = family
            .find(|c: char| c.is_ascii_digit())
            .map(|start| family[start..].trim_start_matches(|c: char| c.is_ascii_digit()))
            .unwrap_or("");
        if attributes.starts_with('g') {
            Self::Arm64
        } else {
            Self::X86_64
        }
    }

    /// AWS's name for it (`arm64`, `x86_64`), as in AMI names and public SSM parameters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Arm64 => "arm64",
            Self::X86_64 => "x86_64",
        }
    }

    /// The Rust target a binary for it is built for.
    pub fn rust_target(self) -> &'static str {
        match self {
            Self::Arm64 => "aarch64-unknown-linux-gnu",
            Self::X86_64 => "x86_64-unknown-linux-gnu",
        }
    }

    /// Build instances when the environment names none: current general-purpose and
    /// compute families, two so that a shortage of one does not stop the build.
    pub fn build_instance_types(self) -> [&'static str; 2] {
        match self {
            Self::Arm64 => ["m7g.large", "c7g.large"],
            Self::X86_64 => ["m7i.large", "c7i.large"],
        }
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Environment {
    /// The grid's architecture, from its instance types (validation made them agree).
    pub fn architecture(&self) -> Architecture {
        self.grid.instance_types.first().map_or(Architecture::Arm64, |kind| Architecture::of_instance_type(kind))
    }

    /// The instance types Image Builder builds the image on.
    pub fn build_instance_types(&self) -> Vec<String> {
        if self.image.build_instance_types.is_empty() {
            self.architecture().build_instance_types().iter().map(|&kind| kind.to_owned()).collect()
        } else {
            self.image.build_instance_types.clone()
        }
    }
}

/// Log settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logs {
    /// CloudWatch Logs retention in days (one of the values CloudWatch accepts).
    pub retention_days: u32,
}

/// Retention periods CloudWatch Logs accepts.
const LOG_RETENTION_DAYS: [u32; 22] =
    [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

/// Most tasks one instance may run at once.
const MAX_TASKS_PER_INSTANCE: u32 = 1024;
/// The shortest `grid.target_completion`.
const MIN_TARGET_COMPLETION: Duration = Duration::from_secs(60);
/// The longest `grid.target_completion` and `grid.scale_in_delay`.
const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);

/// A duration as the manager's environment reads it: humantime without spaces (`15m`,
/// `1h30m`), so it stays one word in a systemd environment file.
pub fn duration_text(duration: Duration) -> String {
    humantime::format_duration(duration).to_string().replace(' ', "")
}

/// Nesting accepted in environment files.
const MAX_DEPTH: usize = 16;

struct Source {
    path: PathBuf,
    text: String,
}

impl Source {
    fn error(&self, path: &FieldPath, message: impl Into<String>) -> EnvironmentError {
        EnvironmentError {
            file: self.path.clone(),
            position: locate(&self.text, path),
            key: path.to_string(),
            message: message.into(),
        }
    }
}

/// Loads `dir/base.yaml` and `dir/NAME.yaml`, reading `${VAR}` through `lookup`.
pub fn load(dir: &Path, name: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Environment, EnvironmentError> {
    let valid_name = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !valid_name || name == "base" {
        return Err(EnvironmentError {
            file: dir.join(format!("{name}.yaml")),
            position: None,
            key: "(environment)".into(),
            message: format!("`{name}` is not an environment name (letters, digits and `-`; not `base`)"),
        });
    }
    let base = read(&dir.join("base.yaml"))?;
    let overrides = read(&dir.join(format!("{name}.yaml")))?;
    let mut merged = parse(&base, lookup)?;
    let top = parse(&overrides, lookup)?;
    merge(&mut merged, top);

    // Errors on the merged tree are located where the user wrote the key: the override first.
    let blame = |path: &FieldPath, message: String| {
        if locate_exact(&overrides.text, path).is_some() {
            overrides.error(path, message)
        } else if locate_exact(&base.text, path).is_some() {
            base.error(path, message)
        } else {
            overrides.error(path, message)
        }
    };
    let environment: Environment = serde_path_to_error::deserialize(merged).map_err(|e| {
        let path = to_field_path(e.path());
        let message = bare_message(&e.into_inner().to_string());
        blame(&path, message)
    })?;
    validate(&environment).map_err(|(path, message)| blame(&path, message))?;
    Ok(environment)
}

fn read(path: &Path) -> Result<Source, EnvironmentError> {
    let text = std::fs::read_to_string(path).map_err(|e| EnvironmentError {
        file: path.to_path_buf(),
        position: None,
        key: "(file)".into(),
        message: format!("cannot read: {e}"),
    })?;
    Ok(Source { path: path.to_path_buf(), text })
}

fn parse(source: &Source, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Value, EnvironmentError> {
    // Whitespace only (tabs included, which YAML would reject as a token) is an empty file.
    let value: Value = if source.text.trim().is_empty() {
        Value::Null
    } else {
        serde_yaml::from_str(&source.text).map_err(|e| EnvironmentError {
            file: source.path.clone(),
            position: e.location().map(|l| Position { line: l.line(), column: l.column() }),
            key: "(document)".into(),
            message: bare_message(&e.to_string()),
        })?
    };
    let mut value = match value {
        // An empty (or comment-only) file would silently deploy the base's defaults,
        // unprotected: `{}` says that on purpose.
        Value::Null => {
            return Err(EnvironmentError {
                file: source.path.clone(),
                position: None,
                key: "(file)".into(),
                message: "is empty (only whitespace or comments): name the keys it overrides, or write `{}` to take every default".into(),
            })
        }
        Value::Mapping(_) => value,
        _ => return Err(source.error(&FieldPath::root(), "an environment file is a mapping of keys")),
    };
    expand(&mut value, &FieldPath::root(), source, lookup, 0)?;
    Ok(value)
}

/// Replaces `${VAR}` in every string, in place; an unset variable is an error at its key.
fn expand(
    value: &mut Value,
    path: &FieldPath,
    source: &Source,
    lookup: &dyn Fn(&str) -> Option<String>,
    depth: usize,
) -> Result<(), EnvironmentError> {
    if depth > MAX_DEPTH {
        return Err(source.error(path, format!("nesting deeper than {MAX_DEPTH} levels")));
    }
    match value {
        Value::String(text) => {
            let mut out = String::new();
            let mut rest = text.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                let Some(end) = after.find('}') else {
                    return Err(source.error(path, "unclosed `${` (write `${NAME}`)"));
                };
                let name = &after[..end];
                let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(source.error(path, format!("`${{{name}}}` is not a variable name")));
                }
                match lookup(name) {
                    Some(value) => out.push_str(&value),
                    None => return Err(source.error(path, format!("environment variable `{name}` is not set"))),
                }
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            *text = out;
        }
        Value::Mapping(map) => {
            for (key, child) in map.iter_mut() {
                let key = key.as_str().map(str::to_owned).unwrap_or_else(|| format!("{key:?}"));
                expand(child, &path.key(&key), source, lookup, depth + 1)?;
            }
        }
        Value::Sequence(items) => {
            for (index, child) in items.iter_mut().enumerate() {
                expand(child, &path.index(index), source, lookup, depth + 1)?;
            }
        }
        Value::Tagged(tagged) => expand(&mut tagged.value, path, source, lookup, depth + 1)?,
        _ => {}
    }
    Ok(())
}

/// Deep merge: maps key by key, everything else replaced by `top`.
fn merge(base: &mut Value, top: Value) {
    match (base, top) {
        (Value::Mapping(base), Value::Mapping(top)) => {
            for (key, value) in top {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, top) => *base = top,
    }
}

fn to_field_path(path: &serde_path_to_error::Path) -> FieldPath {
    let mut out = FieldPath::root();
    for segment in path.iter() {
        out = match segment {
            serde_path_to_error::Segment::Seq { index } => out.index(*index),
            serde_path_to_error::Segment::Map { key } => out.key(key),
            serde_path_to_error::Segment::Enum { variant } => out.key(variant),
            serde_path_to_error::Segment::Unknown => out,
        };
    }
    out
}

type Invalid = (FieldPath, String);

fn validate(env: &Environment) -> Result<(), Invalid> {
    let root = FieldPath::root();
    let name_ok =
        |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !name_ok(&env.project) {
        return Err((root.key("project"), "use lowercase letters, digits and `-`".into()));
    }
    if !env.name_suffix.is_empty() && !name_ok(&env.name_suffix) {
        return Err((root.key("name_suffix"), format!("`{}`: use lowercase letters, digits and `-`", env.name_suffix)));
    }
    if !env.region.split('-').count().eq(&3)
        || !env.region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err((root.key("region"), format!("`{}` is not an AWS region such as eu-west-1", env.region)));
    }
    let bucket = &env.template_bucket;
    if !bucket.is_empty() && !bucket_name_ok(bucket) {
        return Err((root.key("template_bucket"), format!("`{bucket}` is not an S3 bucket name")));
    }
    parse_cidr(&env.network.vpc_cidr).map_err(|m| (root.key("network").key("vpc_cidr"), m))?;
    if env.network.s3_gateway_endpoint && !env.network.internet && env.network.existing.is_none() {
        return Err((
            root.key("network").key("s3_gateway_endpoint"),
            "needs `internet: true` (the endpoint lives in its route table)".into(),
        ));
    }
    if env.network.egress == Egress::Public && (!env.network.internet || env.network.existing.is_some()) {
        return Err((
            root.key("network").key("egress"),
            "`public` needs the network batchgrid creates with `internet: true` (its public subnets)".into(),
        ));
    }
    if let Some(existing) = &env.network.existing {
        let existing_path = root.key("network").key("existing");
        if !aws_id_ok(&existing.vpc_id, "vpc-") {
            return Err((
                existing_path.key("vpc_id"),
                format!("`{}` is not a VPC id such as vpc-0abc", existing.vpc_id),
            ));
        }
        if existing.private_subnet_ids.len() < 2 {
            return Err((existing_path.key("private_subnet_ids"), "name private subnets in at least two zones".into()));
        }
        for (i, id) in existing.private_subnet_ids.iter().enumerate() {
            if !aws_id_ok(id, "subnet-") {
                return Err((existing_path.key("private_subnet_ids").index(i), format!("`{id}` is not a subnet id")));
            }
        }
    }
    for key in env.tags.keys() {
        if RESERVED_TAGS.contains(&key.as_str()) || key.starts_with("aws:") || key.starts_with("batchgrid:") {
            return Err((root.key("tags").key(key), format!("`{key}` is set by batchgrid (or AWS) on every resource")));
        }
    }
    let ami = &env.grid.ami;
    if ami.contains("resolve:ssm:") {
        // A public parameter names a stock image, which has no batchgrid binary, units or user.
        return Err((
            root.key("grid").key("ami"),
            format!(
                "`{ami}` is a stock image without batchgrid: use `{IMAGE_AMI}` (the image make image builds) or an AMI id make image built"
            ),
        ));
    }
    if !aws_id_ok(ami, "ami-") && ami != IMAGE_AMI {
        return Err((
            root.key("grid").key("ami"),
            format!(
                "`{ami}` is neither `{IMAGE_AMI}` (built by make image) nor an AMI id such as ami-0123456789abcdef0"
            ),
        ));
    }
    if !(1..=3650).contains(&env.storage.interim_expiry_days) {
        return Err((root.key("storage").key("interim_expiry_days"), "must be between 1 and 3650".into()));
    }
    let queues = root.key("queues");
    if env.queues.visibility_timeout_seconds > 43_200 {
        return Err((queues.key("visibility_timeout_seconds"), "SQS allows at most 43200 (12 hours)".into()));
    }
    if !(1..=14).contains(&env.queues.retention_days) {
        return Err((queues.key("retention_days"), "SQS keeps messages 1 to 14 days".into()));
    }
    if !(1..=1000).contains(&env.queues.max_receives) {
        return Err((queues.key("max_receives"), "must be between 1 and 1000".into()));
    }
    let analytics = root.key("analytics");
    if !env.analytics.instance_class.starts_with("db.") || !instance_type_ok(&env.analytics.instance_class[3..]) {
        return Err((
            analytics.key("instance_class"),
            format!("`{}` is not an RDS class such as db.t4g.micro", env.analytics.instance_class),
        ));
    }
    if !(20..=65_536).contains(&env.analytics.allocated_storage_gb) {
        return Err((analytics.key("allocated_storage_gb"), "must be between 20 and 65536".into()));
    }
    if env.analytics.backup_retention_days > 35 {
        return Err((analytics.key("backup_retention_days"), "RDS keeps backups 0 to 35 days".into()));
    }
    if ![PROVIDER_RDS, PROVIDER_SERVERLESS, PROVIDER_EXTERNAL].contains(&env.analytics.provider.as_str()) {
        return Err((
            analytics.key("provider"),
            format!("`{}`: use `rds`, `serverless` or `external`", env.analytics.provider),
        ));
    }
    if env.analytics.is_serverless() {
        validate_serverless(&env.analytics, &analytics)?;
    }
    if ![0, 1, 5, 10, 15, 30, 60].contains(&env.analytics.enhanced_monitoring_seconds) {
        return Err((
            analytics.key("enhanced_monitoring_seconds"),
            "RDS takes 0 (off), 1, 5, 10, 15, 30 or 60 seconds".into(),
        ));
    }
    if env.protected && env.analytics.creates_database() && !env.analytics.deletion_protection {
        return Err((analytics.key("deletion_protection"), "a protected environment needs deletion protection".into()));
    }
    let grid = root.key("grid");
    if env.grid.instance_types.is_empty() {
        return Err((grid.key("instance_types"), "name at least one instance type".into()));
    }
    for (i, kind) in env.grid.instance_types.iter().enumerate() {
        if !instance_type_ok(kind) {
            return Err((
                grid.key("instance_types").index(i),
                format!("`{kind}` is not an instance type such as m7g.large"),
            ));
        }
    }
    // One image serves one architecture: the group's types must agree on it.
    let architecture = env.architecture();
    if let Some((i, kind)) = env
        .grid
        .instance_types
        .iter()
        .enumerate()
        .find(|(_, kind)| Architecture::of_instance_type(kind) != architecture)
    {
        return Err((
            grid.key("instance_types").index(i),
            format!(
                "`{kind}` is {} but `{}` is {architecture}: one image serves one architecture",
                Architecture::of_instance_type(kind),
                env.grid.instance_types[0]
            ),
        ));
    }
    if env.grid.min_size > env.grid.max_size {
        return Err((
            grid.key("min_size"),
            format!("min_size {} is above max_size {}", env.grid.min_size, env.grid.max_size),
        ));
    }
    if !(env.grid.min_size..=env.grid.max_size).contains(&env.grid.desired_size) {
        return Err((
            grid.key("desired_size"),
            format!(
                "desired_size {} is outside min_size..max_size ({}..{})",
                env.grid.desired_size, env.grid.min_size, env.grid.max_size
            ),
        ));
    }
    if env.grid.backlog_per_instance == 0 {
        return Err((grid.key("backlog_per_instance"), "must be at least 1".into()));
    }
    if let Some(arn) = &env.grid.task_role_arn {
        batchgrid_core::task_role::check_role_arn(arn).map_err(|m| (grid.key("task_role_arn"), m))?;
    }
    if !(1..=MAX_TASKS_PER_INSTANCE).contains(&env.grid.tasks_per_instance) {
        return Err((grid.key("tasks_per_instance"), format!("must be between 1 and {MAX_TASKS_PER_INSTANCE}")));
    }
    // Below a minute the group cannot launch instances in time anyway; over a day the
    // manager would keep work waiting on a nearly idle group.
    if !(MIN_TARGET_COMPLETION..=MAX_DELAY).contains(&env.grid.target_completion) {
        return Err((grid.key("target_completion"), "must be between 1m and 24h".into()));
    }
    if env.grid.scale_in_delay > MAX_DELAY {
        return Err((grid.key("scale_in_delay"), "must be between 0s and 24h".into()));
    }
    if !instance_type_ok(&env.manager.instance_type) {
        return Err((
            root.key("manager").key("instance_type"),
            format!("`{}` is not an instance type", env.manager.instance_type),
        ));
    }
    // The manager boots the grid's AMI; an image built for the grid fits only its architecture.
    if env.grid.ami == IMAGE_AMI && Architecture::of_instance_type(&env.manager.instance_type) != architecture {
        return Err((
            root.key("manager").key("instance_type"),
            format!(
                "`{}` is {} but grid.ami `image` is built for the grid's {architecture}",
                env.manager.instance_type,
                Architecture::of_instance_type(&env.manager.instance_type)
            ),
        ));
    }
    if !(8..=16_384).contains(&env.manager.volume_gb) {
        return Err((root.key("manager").key("volume_gb"), "must be between 8 (the image's size) and 16384".into()));
    }
    if env.manager.access != "private" {
        return Err((
            root.key("manager").key("access"),
            "only `private` (SSM port forwarding) is supported yet".into(),
        ));
    }
    if !LOG_RETENTION_DAYS.contains(&env.logs.retention_days) {
        return Err((
            root.key("logs").key("retention_days"),
            format!("CloudWatch accepts one of {LOG_RETENTION_DAYS:?}"),
        ));
    }
    let image = root.key("image");
    for (i, kind) in env.image.build_instance_types.iter().enumerate() {
        let path = image.key("build_instance_types").index(i);
        if !instance_type_ok(kind) {
            return Err((path, format!("`{kind}` is not an instance type such as m7g.large")));
        }
        if Architecture::of_instance_type(kind) != architecture {
            return Err((
                path,
                format!(
                    "`{kind}` is {} but the grid is {architecture}: the image is built on its own architecture",
                    Architecture::of_instance_type(kind)
                ),
            ));
        }
    }
    let bucket = &env.image.deployment_bucket;
    if !bucket.is_empty() && !bucket_name_ok(bucket) {
        return Err((image.key("deployment_bucket"), format!("`{bucket}` is not an S3 bucket name")));
    }
    Ok(())
}

/// Aurora Serverless v2's own bounds: capacity in half ACUs up to 256, a pause after 5
/// minutes to a day, and backups kept at least a day (Aurora has no 0).
fn validate_serverless(analytics: &Analytics, path: &FieldPath) -> Result<(), Invalid> {
    let acu = analytics.max_acu;
    if !(1.0..=256.0).contains(&acu) || (acu * 2.0).fract() != 0.0 {
        return Err((path.key("max_acu"), format!("`{acu}`: Aurora takes 1 to 256 ACUs in half steps")));
    }
    if !(300..=86_400).contains(&analytics.auto_pause_seconds) {
        return Err((path.key("auto_pause_seconds"), "Aurora pauses after 300 to 86400 seconds".into()));
    }
    if analytics.backup_retention_days == 0 {
        return Err((path.key("backup_retention_days"), "Aurora keeps backups 1 to 35 days (no 0)".into()));
    }
    if analytics.multi_az {
        return Err((
            path.key("multi_az"),
            "`serverless` runs one instance; use provider `rds` for a standby in a second zone".into(),
        ));
    }
    Ok(())
}

/// An S3 bucket name: 3 to 63 lowercase letters, digits, `-` and `.`, starting alphanumeric.
fn bucket_name_ok(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
}

/// Tag keys batchgrid sets itself.
pub const RESERVED_TAGS: [&str; 3] = ["Project", "Environment", "CostCentre"];

/// `vpc-0abc...`-style ids: the prefix then hex digits.
fn aws_id_ok(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

/// `family.size`, e.g. `m7g.large`, `t4g.small`, `c6in.2xlarge`.
fn instance_type_ok(kind: &str) -> bool {
    let Some((family, size)) = kind.split_once('.') else { return false };
    let family_ok = family.len() >= 2
        && family.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && family.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let size_ok = !size.is_empty() && size.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    family_ok && size_ok
}

/// An IPv4 CIDR with a prefix of /16 to /28 (what a VPC accepts) and no host bits set.
fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let bad = || format!("`{text}` is not a CIDR such as 10.40.0.0/16");
    let (address, prefix) = text.split_once('/').ok_or_else(bad)?;
    let address: Ipv4Addr = address.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    if !(16..=26).contains(&prefix) {
        // Four subnets are cut from it, and AWS's smallest subnet is a /28.
        return Err(format!("`{text}`: the prefix must be between /16 and /26"));
    }
    let mask = u32::MAX << (32 - u32::from(prefix));
    if u32::from(address) & !mask != 0 {
        return Err(format!(
            "`{text}` has host bits set; did you mean {}/{prefix}?",
            Ipv4Addr::from(u32::from(address) & mask)
        ));
    }
    Ok((address, prefix))
}

#[cfg(test)]
mod tests;
