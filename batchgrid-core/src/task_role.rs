//! Task roles: AWS access for a task comes from a role the environment names
//! (`grid.task_role_arn`, `BATCHGRID_TASK_ROLE_ARN` on the worker), never from the worker's
//! own credentials. The worker assumes the role, keeps the session for all its tasks, renews
//! it well before it expires (and before it would expire under a running task), and hands its
//! short-lived keys to each command as `AWS_*` variables.
//!
//! The AWS call sits behind [`AssumeRole`] (STS in [`crate::aws::task_role`]), so the embedded
//! grid and tests can stand in for it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::secret::Secret;

/// A task's credentials are renewed when they would expire within its timeout plus this.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// The session asked for when the task's timeout does not need a longer one (every role
/// allows one hour).
pub const DEFAULT_SESSION: Duration = Duration::from_secs(3600);
/// How long a session asked for a long task's sake serves later tasks before it is renewed.
const REUSE: Duration = Duration::from_secs(30 * 60);
/// The longest session STS grants (and only to a role whose `MaxSessionDuration` allows it).
pub const MAX_SESSION: Duration = Duration::from_secs(12 * 3600);
/// The shortest session STS grants.
pub const MIN_SESSION: Duration = Duration::from_secs(15 * 60);
/// STS's limit on a session name.
const MAX_SESSION_NAME: usize = 64;
/// What every session name starts with, so the role's trust policy and CloudTrail can tell
/// the grid's sessions apart.
pub const SESSION_PREFIX: &str = "batchgrid-";

/// The variables a command gets from a task role, set after the stage's `env` so a job cannot
/// replace them.
pub const TASK_ROLE_ENV: [&str; 5] =
    ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION"];

/// Temporary credentials of an assumed role. `Debug` prints only the expiry.
#[derive(Clone)]
pub struct RoleCredentials {
    /// The access key id (`ASIA...`).
    pub access_key_id: Secret,
    /// The secret access key.
    pub secret_access_key: Secret,
    /// The session token.
    pub session_token: Secret,
    /// When STS says they expire.
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for RoleCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleCredentials").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// What a task gets: the role's credentials and the grid's region.
#[derive(Debug, Clone)]
pub struct TaskCredentials {
    /// The role's temporary credentials.
    pub credentials: RoleCredentials,
    /// The grid's region, for `AWS_REGION` and `AWS_DEFAULT_REGION`.
    pub region: String,
}

impl TaskCredentials {
    /// The variables of [`TASK_ROLE_ENV`], with their values, for a command's environment.
    pub fn env(&self) -> [(&'static str, &str); 5] {
        let c = &self.credentials;
        let [key, secret, token, region, default_region] = TASK_ROLE_ENV;
        [
            (key, c.access_key_id.expose()),
            (secret, c.secret_access_key.expose()),
            (token, c.session_token.expose()),
            (region, &self.region),
            (default_region, &self.region),
        ]
    }
}

/// Why assuming a role failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AssumeError {
    /// The role's `MaxSessionDuration` is shorter than the session asked for.
    #[error("the role does not allow sessions of {}", humantime::format_duration(*.0))]
    DurationTooLong(Duration),
    /// Anything else (access denied, throttled past retries, no network).
    #[error("{0}")]
    Failed(String),
}

/// Assumes a role: STS on AWS, a stand-in in tests.
#[async_trait]
pub trait AssumeRole: Send + Sync + std::fmt::Debug {
    /// Credentials of `role_arn` for a session named `session` lasting `duration`.
    async fn assume(&self, role_arn: &str, session: &str, duration: Duration) -> Result<RoleCredentials, AssumeError>;
}

/// A task role's credentials could not be had; the task must not run.
#[derive(Debug, Clone, thiserror::Error)]
#[error("could not assume the task role {role}: {source}; the task did not run")]
pub struct TaskRoleError {
    /// The role's ARN.
    pub role: String,
    /// Why.
    #[source]
    pub source: AssumeError,
}

/// Whether credentials expiring at `expires_at` must be renewed before a task that may run for
/// `task_timeout` starts at `now`. They must outlive the task by [`REFRESH_MARGIN`]; when the
/// role's sessions (`longest`) cannot be that long, they are renewed once they have less than
/// `longest - REFRESH_MARGIN` left, so tasks still get nearly whole sessions and the role is
/// not assumed for every task.
pub fn needs_refresh(now: SystemTime, expires_at: SystemTime, task_timeout: Duration, longest: Duration) -> bool {
    let remaining = expires_at.duration_since(now).unwrap_or(Duration::ZERO);
    let wanted = task_timeout.saturating_add(REFRESH_MARGIN).min(longest.saturating_sub(REFRESH_MARGIN));
    remaining < wanted.max(REFRESH_MARGIN)
}

/// The session to ask for: an hour, or longer when the task's timeout needs it (the timeout,
/// the margin and half an hour for the tasks after it), at most `longest` (what the role is
/// known to allow).
pub fn session_duration(task_timeout: Duration, longest: Duration) -> Duration {
    let wanted = task_timeout.saturating_add(REFRESH_MARGIN).saturating_add(REUSE).max(DEFAULT_SESSION);
    // Whole seconds, as STS takes them, rounded up.
    let wanted = Duration::from_secs(wanted.as_secs() + u64::from(wanted.subsec_nanos() > 0));
    wanted.min(longest).clamp(MIN_SESSION, MAX_SESSION)
}

/// The session name for a worker: [`SESSION_PREFIX`] and the worker id, in STS's alphabet
/// (`[\w+=,.@-]`) and length (64); a long id keeps its end, where the unique part is.
pub fn session_name(worker_id: &str) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c);
    let id: String = worker_id.chars().map(|c| if allowed(c) { c } else { '-' }).collect();
    let room = MAX_SESSION_NAME - SESSION_PREFIX.len();
    let id = &id[id.len().saturating_sub(room)..];
    format!("{SESSION_PREFIX}{id}")
}

/// Checks that `arn` names an IAM role: `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`, with
/// names in IAM's alphabet. The message says what is wrong.
pub fn check_role_arn(arn: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!("`{arn}` is not an IAM role ARN such as arn:aws:iam::123456789012:role/batch-tasks: {why}"))
    };
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts.as_slice() else {
        return bad("it has fewer than six `:`-separated parts");
    };
    if *prefix != "arn"
        || !partition.starts_with("aws")
        || !partition.chars().all(|c| c.is_ascii_lowercase() || c == '-')
    {
        return bad("it must start with arn:aws (or another AWS partition)");
    }
    if *service != "iam" || !region.is_empty() {
        return bad("the service must be iam, with no region");
    }
    if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
        return bad("the account must be 12 digits");
    }
    let Some(path) = resource.strip_prefix("role/") else { return bad("the resource must be role/NAME") };
    let name_ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    let segments: Vec<&str> = path.split('/').collect();
    let Some(name) = segments.last() else { return bad("the role has no name") };
    if name.len() > 64 || !segments.iter().all(|s| name_ok(s)) {
        return bad("role names and paths take letters, digits and _+=,.@- (names up to 64)");
    }
    Ok(())
}

/// A task role, assumed once per worker and shared by its tasks. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct TaskRole {
    assumer: Arc<dyn AssumeRole>,
    arn: String,
    session: String,
    region: String,
    state: tokio::sync::Mutex<Cached>,
}

#[derive(Debug)]
struct Cached {
    current: Option<Arc<TaskCredentials>>,
    /// The longest session the role is known to allow: [`MAX_SESSION`] until STS says less.
    longest: Duration,
}

impl TaskRole {
    /// The role `arn`, assumed through `assumer` in sessions named after `worker_id`, for tasks
    /// in `region`.
    pub fn new(assumer: Arc<dyn AssumeRole>, arn: &str, worker_id: &str, region: &str) -> Self {
        Self {
            assumer,
            arn: arn.to_owned(),
            session: session_name(worker_id),
            region: region.to_owned(),
            state: tokio::sync::Mutex::new(Cached { current: None, longest: MAX_SESSION }),
        }
    }

    /// The role's ARN.
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// Credentials for a task that may run for `task_timeout`: the cached session while it
    /// outlives the task by [`REFRESH_MARGIN`], else a new one. One caller at a time talks to
    /// STS; the others wait and share its answer.
    pub async fn credentials(&self, task_timeout: Duration) -> Result<Arc<TaskCredentials>, TaskRoleError> {
        let mut cached = self.state.lock().await;
        let now = SystemTime::now();
        if let Some(current) = &cached.current {
            if !needs_refresh(now, current.credentials.expires_at, task_timeout, cached.longest) {
                return Ok(current.clone());
            }
        }
        let duration = session_duration(task_timeout, cached.longest);
        let mut assumed = self.assumer.assume(&self.arn, &self.session, duration).await;
        if let Err(AssumeError::DurationTooLong(_)) = assumed {
            if duration > DEFAULT_SESSION {
                // Every role allows an hour; remember the limit so no later call asks for more.
                cached.longest = DEFAULT_SESSION;
                assumed = self.assumer.assume(&self.arn, &self.session, DEFAULT_SESSION).await;
            }
        }
        let credentials = match assumed {
            Ok(credentials) => credentials,
            Err(source) => {
                // Credentials that still outlive the margin serve while STS is unreachable.
                if let Some(current) = &cached.current {
                    let remaining = current.credentials.expires_at.duration_since(now).unwrap_or(Duration::ZERO);
                    if remaining > REFRESH_MARGIN {
                        tracing::warn!(role = %self.arn, error = %source, ?remaining, "could not renew the task role's session; using the current one");
                        return Ok(current.clone());
                    }
                }
                tracing::warn!(role = %self.arn, error = %source, "could not assume the task role");
                return Err(TaskRoleError { role: self.arn.clone(), source });
            }
        };
        let lifetime = credentials.expires_at.duration_since(now).unwrap_or(Duration::ZERO);
        if lifetime < task_timeout {
            tracing::warn!(role = %self.arn, ?lifetime, ?task_timeout, "the task role's sessions are shorter than the task's timeout: raise the role's MaxSessionDuration");
        }
        tracing::info!(role = %self.arn, session = %self.session, ?lifetime, "assumed the task role");
        let fresh = Arc::new(TaskCredentials { credentials, region: self.region.clone() });
        cached.current = Some(fresh.clone());
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests;
