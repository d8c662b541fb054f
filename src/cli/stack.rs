//! Which deployed grid a command talks to: a stack's saved outputs (`--env NAME` reads
//! `build/NAME/outputs.json` and the environment's region), or the `BATCHGRID_*` variables the
//! grid's instances are started with.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use batchgrid_core::analytics::credentials::SslMode;
use batchgrid_core::analytics::tls::DatabaseTls;
use batchgrid_core::grid::{AwsGridSettings, DatabaseSource, SchemaAccess};
use batchgrid_core::secret::Secret;

use crate::env;

/// Where to find the deployed grid.
#[derive(Debug, Clone, clap::Args)]
pub struct StackArgs {
    /// The environment whose deployed stack to use; without it, the `BATCHGRID_*` variables
    /// (as on the grid's instances).
    #[arg(long = "env", env = env::ENV)]
    pub env: Option<String>,
    /// The directory holding the environment files.
    #[arg(long, default_value = "environments")]
    pub environments: PathBuf,
    /// Where `make deploy` saved `NAME/outputs.json`.
    #[arg(long, default_value = "build")]
    pub out: PathBuf,
    /// Pooled analytics database connections.
    #[arg(long, default_value_t = 4)]
    pub database_connections: u32,
    /// How long an unused database connection stays open: well under the 5 minutes without
    /// a connection after which a serverless database (Aurora Serverless v2) pauses.
    #[arg(long, env = env::DATABASE_IDLE_TIMEOUT, default_value = "60s", value_parser = super::parse_duration)]
    pub database_idle_timeout: std::time::Duration,
}

/// A deployed grid's names.
#[derive(Debug, Clone)]
pub struct Stack {
    /// What the runtime needs.
    pub settings: AwsGridSettings,
    /// The bucket that takes raw input.
    pub raw_bucket: String,
    /// The worker Auto Scaling group, when known.
    pub group_name: Option<String>,
    /// The group's first instance type (what terminated instances are counted as).
    pub instance_type: Option<String>,
    /// The secret holding the manager's API token, from the stack's outputs.
    pub api_token_secret_arn: Option<String>,
    /// The environment's scaling settings, when the names come from an environment file.
    pub scaling: Option<batchgrid_core::scaling::SizingSettings>,
}

fn variable(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Stack {
    /// The names as JSON, for `--print-config`: everything but secrets (a database URL may
    /// hold a password, so only where it comes from is shown).
    pub fn describe(&self) -> serde_json::Value {
        let settings = &self.settings;
        let database = match &settings.database {
            DatabaseSource::Url(_) => serde_json::json!({ "url": format!("(from {}, not shown)", env::DATABASE_URL) }),
            DatabaseSource::Rds { host, secret_arn, database, tls } => serde_json::json!({
                "host": host,
                "auth": "secret",
                "secret_arn": secret_arn,
                "database": database,
                "sslmode": tls.mode().as_str(),
                "sslrootcert": tls.root_cert(),
            }),
            DatabaseSource::RdsIam { host, database, user, tls } => serde_json::json!({
                "host": host,
                "auth": "iam",
                "user": user,
                "database": database,
                "sslmode": tls.mode().as_str(),
                "sslrootcert": tls.root_cert(),
            }),
        };
        serde_json::json!({
            "region": settings.region,
            "raw_bucket": self.raw_bucket,
            "results_bucket": settings.results_bucket,
            "input_queue_url": settings.input_queue_url,
            "output_queue_url": settings.output_queue_url,
            "database": database,
        })
    }
}

impl StackArgs {
    /// Resolves the stack's names; every missing one is named in the error.
    pub fn resolve(&self) -> anyhow::Result<Stack> {
        let (values, region, origin, instance_type, scaling) = match &self.env {
            Some(name) => {
                let path = self.out.join(name).join("outputs.json");
                let text = std::fs::read_to_string(&path).with_context(|| {
                    format!("reading {} (deploy the environment first: make deploy ENV={name})", path.display())
                })?;
                let outputs: BTreeMap<String, String> = serde_json::from_str(&text)
                    .with_context(|| format!("{}: not a JSON object of strings", path.display()))?;
                let lookup = |name: &str| std::env::var(name).ok();
                let environment = batchgrid_provision::environment::load(&self.environments, name, &lookup)?;
                let instance_type = environment.grid.instance_types.first().cloned();
                let scaling = Some(scaling_settings(&environment));
                (outputs, environment.region, path.display().to_string(), instance_type, scaling)
            }
            None => {
                let mut values = BTreeMap::new();
                for (output, name) in [
                    ("RawBucketName", env::RAW_BUCKET),
                    ("ResultsBucketName", env::RESULTS_BUCKET),
                    ("InputQueueUrl", env::INPUT_QUEUE_URL),
                    ("OutputQueueUrl", env::OUTPUT_QUEUE_URL),
                    ("DatabaseEndpoint", env::DATABASE_HOST),
                    ("DatabaseSecretArn", env::DATABASE_SECRET_ARN),
                    ("WorkerGroupName", env::GROUP_NAME),
                ] {
                    if let Some(value) = variable(name) {
                        values.insert(output.to_owned(), value);
                    }
                }
                let region =
                    variable(env::REGION).with_context(|| format!("no --env given and {} is not set", env::REGION))?;
                let origin = "the BATCHGRID_* environment variables".to_owned();
                (values, region, origin, variable(env::INSTANCE_TYPE), None)
            }
        };
        let take = |key: &str| -> anyhow::Result<String> {
            values.get(key).cloned().with_context(|| format!("{origin} has no {key}"))
        };
        // The variables win over a stack's outputs, as the URL does: that is how a grid deployed
        // with an external database is pointed at credentials kept in Secrets Manager.
        let host = variable(env::DATABASE_HOST).or_else(|| values.get("DatabaseEndpoint").cloned());
        let arn = variable(env::DATABASE_SECRET_ARN).or_else(|| values.get("DatabaseSecretArn").cloned());
        let database_name = variable(env::DATABASE_NAME);
        let database = match (variable(env::DATABASE_URL), host, arn, database_auth()?) {
            (Some(url), _, _, _) => DatabaseSource::Url(Secret::new(url)),
            (None, Some(host), _, DatabaseAuth::Iam) => DatabaseSource::RdsIam {
                host,
                database: database_name.unwrap_or_else(|| DEFAULT_DATABASE_NAME.to_owned()),
                user: variable(env::DATABASE_USER).unwrap_or_else(|| DEFAULT_IAM_USER.to_owned()),
                tls: database_tls()?,
            },
            (None, Some(host), Some(secret_arn), DatabaseAuth::Secret) => {
                DatabaseSource::Rds { host, secret_arn, database: database_name, tls: database_tls()? }
            }
            _ => anyhow::bail!(
                "{origin} names no database (analytics.provider external): set {} to a PostgreSQL URL, or {} and {} \
                 to a host and a credentials secret",
                env::DATABASE_URL,
                env::DATABASE_HOST,
                env::DATABASE_SECRET_ARN
            ),
        };
        Ok(Stack {
            raw_bucket: take("RawBucketName")?,
            group_name: values.get("WorkerGroupName").cloned(),
            api_token_secret_arn: values.get("ApiTokenSecretArn").cloned(),
            instance_type,
            scaling,
            settings: AwsGridSettings {
                region,
                results_bucket: take("ResultsBucketName")?,
                input_queue_url: take("InputQueueUrl")?,
                output_queue_url: take("OutputQueueUrl")?,
                database,
                database_connections: self.database_connections,
                database_idle_timeout: self.database_idle_timeout,
                schema: SchemaAccess::Migrate,
            },
        })
    }
}

/// The role IAM authentication logs in as unless `BATCHGRID_DATABASE_USER` says otherwise
/// (created by the migrations).
const DEFAULT_IAM_USER: &str = "batchgrid_worker";
/// The database the stack's RDS instance is created with (`DBName`).
const DEFAULT_DATABASE_NAME: &str = "batchgrid";

/// How a process logs in to an RDS database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DatabaseAuth {
    /// With the master secret.
    Secret,
    /// With an IAM token.
    Iam,
}

/// `BATCHGRID_DATABASE_AUTH`: `secret` (default) or `iam`.
fn database_auth() -> anyhow::Result<DatabaseAuth> {
    match variable(env::DATABASE_AUTH).as_deref() {
        None | Some("secret") => Ok(DatabaseAuth::Secret),
        Some("iam") => Ok(DatabaseAuth::Iam),
        Some(other) => anyhow::bail!("{}: `{other}` is not one of secret, iam", env::DATABASE_AUTH),
    }
}

/// TLS to the database from `BATCHGRID_DATABASE_SSLMODE` (default `require`) and
/// `BATCHGRID_DATABASE_SSLROOTCERT`, the bundle read now: a verifying mode without a readable
/// one stops the process at startup, naming the setting, rather than trusting something else.
fn database_tls() -> anyhow::Result<DatabaseTls> {
    let mode: SslMode = match variable(env::DATABASE_SSLMODE) {
        Some(mode) => mode.parse().map_err(|e| anyhow::anyhow!("{}: {e}", env::DATABASE_SSLMODE))?,
        None => SslMode::default(),
    };
    let root_cert = variable(env::DATABASE_SSLROOTCERT).map(PathBuf::from);
    DatabaseTls::new(mode, root_cert.as_deref()).with_context(|| match &root_cert {
        Some(path) => {
            format!("{}={} ({}={})", env::DATABASE_SSLROOTCERT, path.display(), env::DATABASE_SSLMODE, mode.as_str())
        }
        None => format!("{}={} without {}", env::DATABASE_SSLMODE, mode.as_str(), env::DATABASE_SSLROOTCERT),
    })
}

/// The scaling settings an environment file gives the manager.
fn scaling_settings(
    _environment: &batchgrid_provision::environment::Environment,
) -> batchgrid_core::scaling::SizingSettings {
    batchgrid_core::scaling::SizingSettings::default()
}

/// The API token: `BATCHGRID_API_TOKEN`, or the Secrets Manager secret
/// `BATCHGRID_API_TOKEN_SECRET_ARN` names, or else the one a stack's outputs name.
pub async fn api_token(region: Option<&str>, stack_secret_arn: Option<&str>) -> anyhow::Result<Secret> {
    if let Some(token) = variable(env::API_TOKEN) {
        return Ok(Secret::new(token));
    }
    let Some(arn) = variable(env::API_TOKEN_SECRET_ARN).or(stack_secret_arn.map(str::to_owned)) else {
        anyhow::bail!("no API token: set {} or {}", env::API_TOKEN, env::API_TOKEN_SECRET_ARN);
    };
    let region = region
        .map(str::to_owned)
        .or_else(|| variable(env::REGION))
        .or_else(|| variable("AWS_REGION"))
        .context("reading the API token from Secrets Manager needs a region (BATCHGRID_REGION or AWS_REGION)")?;
    let config = batchgrid_core::aws::sdk_config(&region).await;
    let client = batchgrid_core::aws::secrets_client(&config, &Default::default());
    Ok(batchgrid_core::aws::secrets::fetch(&client, &arn).await?)
}
