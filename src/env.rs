//! Environment variables the CLI reads, named once so clap's `env =` and the docs agree.

/// Log filter, in `tracing_subscriber::EnvFilter` syntax (e.g. `info,batchgrid_core=debug`).
pub const LOG: &str = "BATCHGRID_LOG";
/// `text` (default) or `json` log lines.
pub const LOG_FORMAT: &str = "BATCHGRID_LOG_FORMAT";
/// State directory of an embedded grid.
pub const STATE_DIR: &str = "BATCHGRID_STATE_DIR";
/// The environment a command's deployed grid belongs to (`--env`).
pub const ENV: &str = "BATCHGRID_ENV";
/// Region of the deployed grid (on its instances).
pub const REGION: &str = "BATCHGRID_REGION";
/// Bucket for raw job input.
pub const RAW_BUCKET: &str = "BATCHGRID_RAW_BUCKET";
/// Bucket for staged chunks and results.
pub const RESULTS_BUCKET: &str = "BATCHGRID_RESULTS_BUCKET";
/// URL of the input queue.
pub const INPUT_QUEUE_URL: &str = "BATCHGRID_INPUT_QUEUE_URL";
/// URL of the output queue.
pub const OUTPUT_QUEUE_URL: &str = "BATCHGRID_OUTPUT_QUEUE_URL";
/// The RDS instance's address, optionally `host:port`.
pub const DATABASE_HOST: &str = "BATCHGRID_DATABASE_HOST";
/// ARN of the RDS-managed credentials secret (read again whenever the database refuses it).
pub const DATABASE_SECRET_ARN: &str = "BATCHGRID_DATABASE_SECRET_ARN";
/// TLS to the database named by host and secret: `require` (default), `verify-ca`,
/// `verify-full`, `prefer` or `disable` (a PostgreSQL on loopback).
pub const DATABASE_SSLMODE: &str = "BATCHGRID_DATABASE_SSLMODE";
/// A PEM file of the certificate authorities `verify-ca` and `verify-full` trust (the image
/// installs RDS's global bundle as `/etc/batchgrid/rds-ca.pem`); required by those modes.
pub const DATABASE_SSLROOTCERT: &str = "BATCHGRID_DATABASE_SSLROOTCERT";
/// How the process logs in to the RDS database: `secret` (default: the master secret,
/// `BATCHGRID_DATABASE_SECRET_ARN`) or `iam` (a token signed with the instance role, as
/// `BATCHGRID_DATABASE_USER`; the grid's workers).
pub const DATABASE_AUTH: &str = "BATCHGRID_DATABASE_AUTH";
/// The database role IAM authentication logs in as (default `batchgrid_worker`).
pub const DATABASE_USER: &str = "BATCHGRID_DATABASE_USER";
/// The database on the RDS instance (the stack's is `batchgrid`; without it, the secret's
/// `dbname`, else `postgres`).
pub const DATABASE_NAME: &str = "BATCHGRID_DATABASE_NAME";
/// How long before a due schedule a quiet manager's loops look again (default 1m).
pub const QUIET_HORIZON: &str = "BATCHGRID_QUIET_HORIZON";
/// How long an unused analytics database connection stays open (default 60s).
pub const DATABASE_IDLE_TIMEOUT: &str = "BATCHGRID_DATABASE_IDLE_TIMEOUT";
/// A PostgreSQL URL (an external analytics database; overrides the stack's RDS).
pub const DATABASE_URL: &str = "BATCHGRID_DATABASE_URL";
/// The manager API's bearer token.
pub const API_TOKEN: &str = "BATCHGRID_API_TOKEN";
/// ARN of a Secrets Manager secret holding the API token.
pub const API_TOKEN_SECRET_ARN: &str = "BATCHGRID_API_TOKEN_SECRET_ARN";
/// Where the CLI reaches the manager's API.
pub const MANAGER_URL: &str = "BATCHGRID_MANAGER_URL";
/// Where the manager listens.
pub const LISTEN: &str = "BATCHGRID_LISTEN";
/// Turns on the worker's instance agent (set on the grid's instances).
pub const INSTANCE_AGENT: &str = "BATCHGRID_INSTANCE_AGENT";
/// The instance metadata service's address.
pub const METADATA_ENDPOINT: &str = "BATCHGRID_METADATA_ENDPOINT";
/// The worker Auto Scaling group's name.
pub const GROUP_NAME: &str = "BATCHGRID_GROUP_NAME";
/// The group's termination lifecycle hook.
pub const LIFECYCLE_HOOK: &str = "BATCHGRID_LIFECYCLE_HOOK";
/// Where a deployed grid's worker gives tasks their scratch directories.
pub const SCRATCH_DIR: &str = "BATCHGRID_SCRATCH_DIR";
/// The user a worker runs task commands as (`batchgrid-task` on the grid's instances).
pub const TASK_USER: &str = "BATCHGRID_TASK_USER";
/// Paths, `:`-separated, task commands may write besides their scratch directory.
pub const TASK_WRITABLE: &str = "BATCHGRID_TASK_WRITABLE";
/// How long a stopping worker lets its running tasks finish.
pub const DRAIN_DEADLINE: &str = "BATCHGRID_DRAIN_DEADLINE";
/// The worker group's first instance type (instance-hours of terminated instances count as it).
pub const INSTANCE_TYPE: &str = "BATCHGRID_INSTANCE_TYPE";
/// The IAM role whose short-lived credentials a worker gives its tasks (`grid.task_role_arn`).
pub const TASK_ROLE_ARN: &str = "BATCHGRID_TASK_ROLE_ARN";
/// Tasks a worker runs at once.
pub const CONCURRENCY: &str = "BATCHGRID_CONCURRENCY";
/// Messages a worker receives ahead of its free slots.
pub const PREFETCH: &str = "BATCHGRID_PREFETCH";
/// Longest wait of a worker's long poll.
pub const POLL_WAIT: &str = "BATCHGRID_POLL_WAIT";
/// Tasks one grid instance runs at once (the manager sizes the group with it).
pub const TASKS_PER_INSTANCE: &str = "BATCHGRID_TASKS_PER_INSTANCE";
/// The time the manager sizes the worker group to finish the remaining work in.
pub const TARGET_COMPLETION: &str = "BATCHGRID_TARGET_COMPLETION";
/// How long no work must remain before the manager lowers the group to its minimum.
pub const SCALE_IN_DELAY: &str = "BATCHGRID_SCALE_IN_DELAY";
