//! Database credentials that may change under a running process: where the PostgreSQL connect
//! options come from ([`CredentialsSource`]), and the one retry loop ([`Reconnect::run`]) every
//! analytics operation goes through.
//!
//! RDS rotates its managed master secret (every 7 days by default). Sessions opened before a
//! rotation keep working, but every new connection fails with SQLSTATE 28P01 until the process
//! reads the secret again. So on 28P01 the loop re-reads the source, hands the new options to the
//! pool, and retries the operation; reads are throttled per process so that a secret that is
//! simply wrong cannot hammer Secrets Manager.
//!
//! Retrying is safe because authentication fails before any statement runs, and because every
//! operation of the analytics store is idempotent by its contract (upserts keyed by task).

use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::AnalyticsError;

/// SQLSTATE `invalid_password`: the server refused the credentials.
const INVALID_PASSWORD: &str = "28P01";
/// SQLSTATE `invalid_authorization_specification`: what RDS answers to an IAM token that has
/// expired or does not match ("PAM authentication failed"); a fresh token may be let in.
const INVALID_AUTHORIZATION: &str = "28000";
/// SQLSTATE `admin_shutdown`: an administrator (or a failover) ended the session. The statement
/// in flight did not complete, so the operation can run again on a new connection.
const ADMIN_SHUTDOWN: &str = "57P01";

/// Failures reading credentials (the messages never hold a password).
#[derive(Debug, thiserror::Error)]
#[error("database credentials from {origin}: {message}")]
pub struct CredentialsError {
    /// Where they were read from (a secret's ARN, never its value).
    pub origin: String,
    /// What went wrong.
    pub message: String,
}

/// Where a process's PostgreSQL connect options come from.
#[async_trait]
pub trait CredentialsSource: Send + Sync + std::fmt::Debug {
    /// The current options, read afresh (a secret store is asked again on every call).
    async fn connect_options(&self) -> Result<PgConnectOptions, CredentialsError>;

    /// Whether reading again can give other credentials; a fixed URL cannot, so its
    /// authentication failures are final.
    fn rotates(&self) -> bool {
        true
    }

    /// How long options read from this source stay usable for new connections; `None`: until
    /// the server refuses them. An IAM token is accepted for 15 minutes after it was signed,
    /// so options holding one are read again, before an operation, once they are this old.
    fn max_age(&self) -> Option<Duration> {
        None
    }

    /// Where the credentials come from, for logs (no secret in it).
    fn origin(&self) -> String;
}

/// Credentials fixed in a URL (`BATCHGRID_DATABASE_URL`, tests).
#[derive(Clone)]
pub struct FixedUrl(PgConnectOptions);

impl FixedUrl {
    /// Parses `url` (its password, if any, stays out of every message).
    pub fn parse(url: &str) -> Result<Self, AnalyticsError> {
        Ok(Self(PgConnectOptions::from_str(url)?))
    }
}

impl std::fmt::Debug for FixedUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // PgConnectOptions' own Debug prints the password.
        f.write_str("FixedUrl(<redacted>)")
    }
}

#[async_trait]
impl CredentialsSource for FixedUrl {
    async fn connect_options(&self) -> Result<PgConnectOptions, CredentialsError> {
        Ok(self.0.clone())
    }

    fn rotates(&self) -> bool {
        false
    }

    fn origin(&self) -> String {
        "a fixed URL".to_owned()
    }
}

/// How the connection to the database uses TLS (libpq's `sslmode` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// No TLS (a database on loopback).
    Disable,
    /// TLS if the server offers it.
    Prefer,
    /// TLS, without checking the server's certificate (RDS's default).
    #[default]
    Require,
    /// TLS, with the certificate checked against the trusted roots.
    VerifyCa,
    /// TLS, with the certificate and the host name checked.
    VerifyFull,
}

impl SslMode {
    /// The libpq name.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// The driver's equivalent.
    pub fn to_pg(self) -> PgSslMode {
        match self {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        }
    }
}

impl FromStr for SslMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return Err(format!("`{text}` is not one of disable, prefer, require, verify-ca, verify-full")),
        })
    }
}

/// What a failed operation calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The server refused the credentials: read them again, then retry.
    Credentials,
    /// The session was ended under the statement: retry on a new connection.
    SessionEnded,
    /// Anything else: the caller decides.
    Other,
}

/// Classifies an analytics error by the first SQLSTATE in its chain of causes (a migration
/// error wraps the driver's).
pub(crate) fn classify(error: &AnalyticsError) -> Failure {
    let AnalyticsError::Backend(inner) = error else {
        return Failure::Other;
    };
    match sqlstate(inner.as_ref()).as_deref() {
        Some(INVALID_PASSWORD | INVALID_AUTHORIZATION) => Failure::Credentials,
        Some(ADMIN_SHUTDOWN) => Failure::SessionEnded,
        _ => Failure::Other,
    }
}

/// The SQLSTATE of the first database error in `error`'s chain of causes (a migration error
/// wraps the driver's).
pub fn sqlstate(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(sqlx::Error::Database(database)) = current.downcast_ref::<sqlx::Error>() {
            return database.code().map(|code| code.into_owned());
        }
        cause = current.source();
    }
    None
}

/// Whether the server refused the credentials (or the role does not exist yet).
pub fn is_refused(error: &AnalyticsError) -> bool {
    classify(error) == Failure::Credentials
}

/// How often and how long to retry.
#[derive(Debug, Clone, Copy)]
pub struct ReconnectSettings {
    /// Retries of one operation after its first try.
    pub retries: u32,
    /// The wait before the first retry of an ended session; doubled on each further one.
    pub backoff: Duration,
    /// The least time between two reads of the credentials in one process.
    pub min_read_interval: Duration,
}

impl Default for ReconnectSettings {
    fn default() -> Self {
        Self { retries: 3, backoff: Duration::from_millis(200), min_read_interval: Duration::from_secs(2) }
    }
}

/// Whether to read the credentials now, after a wait, or not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadPlan {
    /// Another task read them since this operation's try began: retry with those.
    AlreadyFresh,
    /// Read them after this long (zero: now); the wait keeps reads `min_read_interval` apart.
    ReadAfter(Duration),
}

/// The throttle: `seen` is the generation of the options the failed try ran with, `current`
/// the generation now; `since_read` is the time since the last read.
pub(crate) fn plan_read(seen: u64, current: u64, since_read: Duration, min_interval: Duration) -> ReadPlan {
    if seen != current {
        ReadPlan::AlreadyFresh
    } else {
        ReadPlan::ReadAfter(min_interval.saturating_sub(since_read))
    }
}

/// The current connect options of one process, where they come from, and the retry loop.
pub struct Reconnect {
    source: Arc<dyn CredentialsSource>,
    settings: ReconnectSettings,
    current: Mutex<PgConnectOptions>,
    /// Bumped each time new options are installed.
    generation: AtomicU64,
    /// When the source was last read; held across a read so concurrent failures wait for it.
    last_read: tokio::sync::Mutex<Instant>,
    /// When the options in use were read, for [`CredentialsSource::max_age`].
    read_at: Mutex<Instant>,
}

impl std::fmt::Debug for Reconnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the options: their Debug prints the password.
        f.debug_struct("Reconnect")
            .field("source", &self.source.origin())
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Reconnect {
    /// Reads the source once (the options to start with).
    pub async fn start(
        source: Arc<dyn CredentialsSource>,
        settings: ReconnectSettings,
    ) -> Result<Self, AnalyticsError> {
        let options = source.connect_options().await.map_err(|e| AnalyticsError::Backend(Box::new(e)))?;
        Ok(Self {
            source,
            settings,
            current: Mutex::new(options),
            generation: AtomicU64::new(0),
            last_read: tokio::sync::Mutex::new(Instant::now()),
            read_at: Mutex::new(Instant::now()),
        })
    }

    /// The options new connections should use.
    pub fn options(&self) -> PgConnectOptions {
        match self.current.lock() {
            Ok(options) => options.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Runs `operation` until it succeeds, fails for another reason than refused credentials or
    /// an ended session, or has been retried `settings.retries` times. After refused
    /// credentials the source is read again and `install` gets the new options (the pool's
    /// `set_connect_options`) before the retry.
    pub async fn run<T, F, Fut>(&self, install: impl Fn(PgConnectOptions), operation: F) -> Result<T, AnalyticsError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, AnalyticsError>>,
    {
        self.refresh_if_stale(&install).await?;
        let mut retries = 0;
        let mut backoff = self.settings.backoff;
        loop {
            let seen = self.generation.load(Ordering::Acquire);
            let error = match operation().await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let failure = classify(&error);
            let retriable = match failure {
                Failure::Credentials => self.source.rotates(),
                Failure::SessionEnded => true,
                Failure::Other => false,
            };
            if !retriable || retries >= self.settings.retries {
                return Err(error);
            }
            retries += 1;
            if failure == Failure::Credentials {
                tracing::warn!(
                    source = %self.source.origin(), retry = retries,
                    "the database refused the credentials (SQLSTATE 28P01 or 28000); re-reading them"
                );
                self.refresh(seen, &install).await?;
            } else {
                tracing::warn!(retry = retries, "the database ended the session (SQLSTATE 57P01); retrying");
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
        }
    }

    /// Reads the source unless another task did since generation `seen`; installs the result.
    async fn refresh(&self, seen: u64, install: &impl Fn(PgConnectOptions)) -> Result<(), AnalyticsError> {
        let mut last_read = self.last_read.lock().await;
        let current = self.generation.load(Ordering::Acquire);
        match plan_read(seen, current, last_read.elapsed(), self.settings.min_read_interval) {
            ReadPlan::AlreadyFresh => return Ok(()),
            ReadPlan::ReadAfter(wait) => tokio::time::sleep(wait).await,
        }
        let read = self.source.connect_options().await;
        *last_read = Instant::now();
        self.install(read.map_err(|e| AnalyticsError::Backend(Box::new(e)))?, install);
        tracing::warn!(source = %self.source.origin(), "database credentials refreshed");
        Ok(())
    }

    /// Reads the source before an operation when the options in use are older than the
    /// source's [`CredentialsSource::max_age`], so the pool never opens a connection with an
    /// expired token. A failed read keeps the old options: they may still be accepted, and an
    /// operation refused with them is retried through [`Reconnect::run`]'s own path.
    async fn refresh_if_stale(&self, install: &impl Fn(PgConnectOptions)) -> Result<(), AnalyticsError> {
        let Some(max_age) = self.source.max_age() else {
            return Ok(());
        };
        if self.read_age() < max_age {
            return Ok(());
        }
        let mut last_read = self.last_read.lock().await;
        // Another operation may have read them while this one waited for the lock.
        if self.read_age() < max_age {
            return Ok(());
        }
        let read = self.source.connect_options().await;
        *last_read = Instant::now();
        match read {
            Ok(options) => {
                self.install(options, install);
                tracing::debug!(source = %self.source.origin(), "database credentials renewed before they expire");
            }
            Err(error) => tracing::warn!(%error, "could not renew the database credentials; keeping the current ones"),
        }
        Ok(())
    }

    /// How long ago the options in use were read.
    fn read_age(&self) -> Duration {
        match self.read_at.lock() {
            Ok(at) => at.elapsed(),
            Err(poisoned) => poisoned.into_inner().elapsed(),
        }
    }

    /// Makes `options` the ones new connections use.
    fn install(&self, options: PgConnectOptions, install: &impl Fn(PgConnectOptions)) {
        match self.current.lock() {
            Ok(mut slot) => *slot = options.clone(),
            Err(poisoned) => *poisoned.into_inner() = options.clone(),
        }
        match self.read_at.lock() {
            Ok(mut at) => *at = Instant::now(),
            Err(poisoned) => *poisoned.into_inner() = Instant::now(),
        }
        install(options);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests;
