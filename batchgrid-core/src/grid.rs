//! The backends of one grid, bundled, and the embedded grid: everything under one state
//! directory (`objects/` for the object store, `queue.db`, `analytics.db`), shared by the
//! manager and every worker process on the machine.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::analytics::{AnalyticsError, AnalyticsStore, SqliteAnalytics};
use crate::metering::RequestMeter;
use crate::queue::sqlite::open_queue_database;
use crate::queue::{QueueError, SqliteQueue, TaskQueue};
use crate::store::{LocalStore, ObjectStore, StoreError};

/// Name of the queue that feeds first-stage and reduce tasks.
pub const TASK_QUEUE: &str = "input";
/// Name of the queue that carries completed tasks on to the next stage.
pub const CHAIN_QUEUE: &str = "output";

/// The backends the manager and workers share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Grid {
    /// Input, staged chunks and results.
    pub store: Arc<dyn ObjectStore>,
    /// The input queue: first-stage tasks and reduce tasks.
    pub tasks: Arc<dyn TaskQueue>,
    /// The output queue: completed tasks, which are the next map stage's tasks.
    pub chain: Arc<dyn TaskQueue>,
    /// Progress and statistics.
    pub analytics: Arc<dyn AnalyticsStore>,
    /// Requests this process made to AWS (nothing on the embedded grid).
    pub meter: RequestMeter,
}

/// Failures opening a grid's backends.
#[derive(Debug, thiserror::Error)]
pub enum GridError {
    /// The state directory could not be created.
    #[error("state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The object store failed to open.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The queue failed to open.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The analytics store failed to open.
    #[error(transparent)]
    Analytics(#[from] AnalyticsError),
    /// A setting is missing or unusable.
    #[error("{0}")]
    Settings(String),
}

/// Settings of an embedded grid.
#[derive(Debug, Clone)]
pub struct EmbeddedGridSettings {
    /// Deliveries after which a message is dead-lettered even if no worker said so (a task
    /// whose worker keeps dying).
    pub max_receives: u32,
}

impl EmbeddedGridSettings {
    /// A grid sized for one job: it honours the job's `retry.max_attempts` with
    /// [`crate::queue::RELEASE_MARGIN`] deliveries to spare for releases and dead workers.
    pub fn for_job(spec: &crate::spec::JobSpec) -> Self {
        Self { max_receives: spec.retry.max_attempts.saturating_add(crate::queue::RELEASE_MARGIN) }
    }
}

impl Grid {
    /// Opens (creating if needed) the embedded grid under `state_dir`.
    pub async fn open_embedded(state_dir: &Path, settings: &EmbeddedGridSettings) -> Result<Self, GridError> {
        std::fs::create_dir_all(state_dir)
            .map_err(|source| GridError::StateDir { path: state_dir.to_path_buf(), source })?;
        let store = LocalStore::open(state_dir.join("objects"))?;
        let queue_db = open_queue_database(&state_dir.join("queue.db")).await?;
        let analytics = SqliteAnalytics::open(&state_dir.join("analytics.db")).await?;
        Ok(Self {
            store: Arc::new(store),
            tasks: Arc::new(SqliteQueue::new(queue_db.clone(), TASK_QUEUE, settings.max_receives)),
            chain: Arc::new(SqliteQueue::new(queue_db, CHAIN_QUEUE, settings.max_receives)),
            analytics: Arc::new(analytics),
            meter: RequestMeter::new(),
        })
    }

    /// Publishes this process's request counts so the manager can sum them into reports.
    pub async fn publish_requests(&self, process_id: &str) {
        let counts = self.meter.snapshot();
        if counts.is_empty() {
            return;
        }
        if let Err(error) = self.analytics.record_requests(process_id, &counts).await {
            tracing::warn!(%error, "could not record request counts");
        }
    }
}

/// Where the AWS grid's analytics database is.
#[cfg(all(feature = "aws", feature = "postgres"))]
#[derive(Debug, Clone)]
pub enum DatabaseSource {
    /// A PostgreSQL URL (an external database; `local` uses the one on loopback).
    Url(crate::aws::secrets::Secret),
    /// An RDS instance whose credentials Secrets Manager holds; they are read again whenever
    /// the database refuses them (the managed secret rotates).
    Rds {
        /// The instance's endpoint address, optionally with `:port`.
        host: String,
        /// The ARN of the RDS-managed master user secret.
        secret_arn: String,
        /// The database on the instance (`None`: the secret's `dbname`, else `postgres`).
        database: Option<String>,
        /// TLS to the database (`verify-full` with the RDS bundle on the grid's instances;
        /// `disable` for a PostgreSQL on loopback).
        tls: crate::analytics::tls::DatabaseTls,
    },
    /// An RDS instance reached as a database role that logs in with IAM tokens signed by this
    /// process's AWS credentials (the workers: no secret to read, nothing to rotate).
    RdsIam {
        /// The instance's endpoint address, optionally with `:port`.
        host: String,
        /// The database on the instance.
        database: String,
        /// The database role (granted `rds_iam` by the migrations).
        user: String,
        /// TLS to the database; RDS refuses IAM authentication without it.
        tls: crate::analytics::tls::DatabaseTls,
    },
}

/// What a process may do to the analytics database's schema.
#[cfg(all(feature = "aws", feature = "postgres"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaAccess {
    /// Apply the migrations (the manager, which owns the database).
    Migrate,
    /// Only use the schema, waiting up to this long for the manager to bring it to this build's
    /// version (a worker, whose database role may not change it; on a first deploy the workers
    /// may boot before the manager).
    Attach(std::time::Duration),
}

/// The names an AWS grid runs against: a deployed stack's outputs, or the environment
/// variables its instances are started with.
#[cfg(all(feature = "aws", feature = "postgres"))]
#[derive(Debug, Clone)]
pub struct AwsGridSettings {
    /// The stack's region.
    pub region: String,
    /// Bucket for staged chunks and results.
    pub results_bucket: String,
    /// The input queue's URL (its dead-letter queue is found through its redrive policy).
    pub input_queue_url: String,
    /// The output queue's URL.
    pub output_queue_url: String,
    /// The analytics database.
    pub database: DatabaseSource,
    /// Pooled database connections per process.
    pub database_connections: u32,
    /// How long an unused pooled connection stays open (a quiet manager then holds none, and
    /// a serverless database can pause).
    pub database_idle_timeout: std::time::Duration,
    /// Whether this process migrates the database or only uses it.
    pub schema: SchemaAccess,
}

#[cfg(all(feature = "aws", feature = "postgres"))]
impl Grid {
    /// Opens the grid on S3, SQS and PostgreSQL; every client counts its requests in the
    /// returned grid's meter.
    pub async fn open_aws(settings: &AwsGridSettings) -> Result<Self, GridError> {
        use crate::aws;
        let meter = RequestMeter::new();
        let config = aws::sdk_config(&settings.region).await;
        let s3 = aws::s3_client(&config, &meter);
        let sqs = aws::sqs_client(&config, &meter);
        let tasks = crate::queue::SqsQueue::open(sqs.clone(), &settings.input_queue_url).await?;
        let chain = crate::queue::SqsQueue::open(sqs, &settings.output_queue_url).await?;
        let credentials = database_credentials(&settings.database, &config, &meter)?;
        let pool = crate::analytics::PoolSettings {
            max_connections: settings.database_connections,
            idle_timeout: settings.database_idle_timeout,
        };
        let analytics = open_analytics(credentials, pool, settings.schema).await?;
        Ok(Self {
            store: Arc::new(crate::store::S3Store::new(s3, &settings.results_bucket, "")),
            tasks: Arc::new(tasks),
            chain: Arc::new(chain),
            analytics: Arc::new(analytics),
            meter,
        })
    }
}

/// The source of the database credentials `database` names.
#[cfg(all(feature = "aws", feature = "postgres"))]
fn database_credentials(
    database: &DatabaseSource,
    config: &aws_config::SdkConfig,
    meter: &RequestMeter,
) -> Result<Arc<dyn crate::analytics::credentials::CredentialsSource>, GridError> {
    use crate::aws;
    Ok(match database {
        DatabaseSource::Url(url) => Arc::new(crate::analytics::credentials::FixedUrl::parse(url.expose())?),
        DatabaseSource::Rds { host, secret_arn, database, tls } => Arc::new(
            aws::secrets::DatabaseSecret::new(aws::secrets_client(config, meter), secret_arn, host, tls.clone())
                .map_err(|e| GridError::Settings(e.to_string()))?
                .with_database(database.as_deref()),
        ),
        DatabaseSource::RdsIam { host, database, user, tls } => {
            let (address, port) = crate::aws::secrets::split_host_port(host)
                .map_err(|_| GridError::Settings(format!("database host `{host}`: not a host or host:port")))?;
            let provider = config.credentials_provider().ok_or_else(|| {
                GridError::Settings("IAM database authentication needs AWS credentials, and none are configured".into())
            })?;
            let region = config.region().map(ToString::to_string).unwrap_or_default();
            let target = aws::rds_iam::TokenTarget {
                host: address,
                port: port.unwrap_or(crate::aws::secrets::DEFAULT_PORT),
                region,
                user: user.clone(),
            };
            Arc::new(aws::rds_iam::RdsIamAuth::new(provider, target, database, tls.clone()))
        }
    })
}

/// Opens the analytics database: migrating it, or attaching to it and waiting, a few seconds
/// apart, for its schema and the process's role to be there (both come from the manager's
/// migrations).
#[cfg(all(feature = "aws", feature = "postgres"))]
async fn open_analytics(
    credentials: Arc<dyn crate::analytics::credentials::CredentialsSource>,
    pool: crate::analytics::PoolSettings,
    schema: SchemaAccess,
) -> Result<crate::analytics::PgAnalytics, GridError> {
    use crate::analytics::credentials::ReconnectSettings;
    use crate::analytics::PgAnalytics;
    const RETRY_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
    let wait = match schema {
        SchemaAccess::Migrate => {
            return Ok(PgAnalytics::connect_with_pool(credentials, pool, ReconnectSettings::default()).await?)
        }
        SchemaAccess::Attach(wait) => wait,
    };
    let deadline = std::time::Instant::now() + wait;
    loop {
        let error = match PgAnalytics::attach_pool(credentials.clone(), pool, ReconnectSettings::default()).await {
            Ok(analytics) => return Ok(analytics),
            Err(error) => error,
        };
        // Not there yet: an older schema, or a role the migrations have not created (refused).
        let waiting =
            matches!(error, AnalyticsError::SchemaBehind { .. }) || crate::analytics::credentials::is_refused(&error);
        if !waiting || std::time::Instant::now() + RETRY_EVERY > deadline {
            return Err(error.into());
        }
        tracing::warn!(%error, "waiting for the job manager to migrate the analytics database");
        tokio::time::sleep(RETRY_EVERY).await;
    }
}
