//! IAM database authentication for RDS: a worker connects as its own database role with a
//! token signed by its instance role, so no worker ever holds the master secret.
//!
//! The token is a SigV4 presigned URL for the `rds-db:connect` action, without its scheme:
//! `host:port/?Action=connect&DBUser=USER&X-Amz-…`, valid for 15 minutes after signing and
//! checked only when a connection opens (sessions outlive it). It is what `aws rds
//! generate-db-auth-token` prints; `aws-sigv4` (the signer the SDK itself uses) signs it, so
//! there is no hand-written cryptography here, and a test checks the result against botocore's.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings};
use aws_sigv4::sign::v4;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sqlx::postgres::PgConnectOptions;

use crate::analytics::credentials::{CredentialsError, CredentialsSource};
use crate::analytics::tls::DatabaseTls;

/// How long RDS accepts a token after it was signed (fixed by RDS).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// How old a token may be before new connections get a fresh one: well inside its lifetime,
/// so a token is never presented in its last minutes (clock skew, a slow handshake).
pub const TOKEN_RENEW_AFTER: Duration = Duration::from_secs(600);

/// The service name tokens are signed for.
const SIGNING_NAME: &str = "rds-db";

/// SigV4's unreserved characters are `A-Z a-z 0-9 - _ . ~`; everything else is escaped.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Failures signing a token (the messages hold no key).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The database user name cannot be a PostgreSQL role of the grid.
    #[error("database user `{0}`: only letters, digits and `_` are allowed")]
    User(String),
    /// The signer refused its input.
    #[error("signing the database token: {0}")]
    Sign(String),
}

/// Where a token lets its holder in: the database endpoint, the region it is in, the role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenTarget {
    /// The instance's endpoint address.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Its region.
    pub region: String,
    /// The database role (it must have been granted `rds_iam`).
    pub user: String,
}

/// Signs a token for `target` with `credentials`, as of `now`.
pub fn auth_token(target: &TokenTarget, credentials: &Credentials, now: SystemTime) -> Result<String, TokenError> {
    if target.user.is_empty() || !target.user.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(TokenError::User(target.user.clone()));
    }
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&target.region)
        .name(SIGNING_NAME)
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| TokenError::Sign(e.to_string()))?
        .into();
    let query = format!("Action=connect&DBUser={}", target.user);
    let url = format!("https://{}:{}/?{query}", target.host, target.port);
    let request = SignableRequest::new("GET", url.as_str(), std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| TokenError::Sign(e.to_string()))?;
    let (instructions, _signature) = sign(request, &params).map_err(|e| TokenError::Sign(e.to_string()))?.into_parts();
    let mut token = format!("{}:{}/?{query}", target.host, target.port);
    for (name, value) in instructions.params() {
        token.push('&');
        token.push_str(name);
        token.push('=');
        token.extend(utf8_percent_encode(value, QUERY_VALUE));
    }
    Ok(token)
}

/// Connect options for a database role that logs in with IAM tokens: each read signs a new
/// token with the current credentials of the instance role (which the SDK refreshes itself).
#[derive(Clone)]
pub struct RdsIamAuth {
    provider: SharedCredentialsProvider,
    target: TokenTarget,
    database: String,
    tls: DatabaseTls,
}

impl std::fmt::Debug for RdsIamAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdsIamAuth").field("target", &self.target).field("database", &self.database).finish()
    }
}

impl RdsIamAuth {
    /// Tokens for `target`'s role on `database`, signed with `provider`'s credentials, over
    /// `tls` (IAM authentication requires TLS; RDS refuses it in the clear).
    pub fn new(provider: SharedCredentialsProvider, target: TokenTarget, database: &str, tls: DatabaseTls) -> Self {
        Self { provider, target, database: database.to_owned(), tls }
    }

    /// The options with a token signed as of `now`.
    async fn options_at(&self, now: SystemTime) -> Result<PgConnectOptions, CredentialsError> {
        let error = |message: String| CredentialsError { origin: self.origin(), message };
        let credentials = self.provider.provide_credentials().await.map_err(|e| error(super::error_text(&e)))?;
        let token = auth_token(&self.target, &credentials, now).map_err(|e| error(e.to_string()))?;
        // Not `PgConnectOptions::new()`: it would take a password from ~/.pgpass.
        Ok(self.tls.apply(
            PgConnectOptions::new_without_pgpass()
                .host(&self.target.host)
                .port(self.target.port)
                .username(&self.target.user)
                .password(&token)
                .database(&self.database),
        ))
    }
}

#[async_trait]
impl CredentialsSource for RdsIamAuth {
    async fn connect_options(&self) -> Result<PgConnectOptions, CredentialsError> {
        self.options_at(SystemTime::now()).await
    }

    fn max_age(&self) -> Option<Duration> {
        Some(TOKEN_RENEW_AFTER)
    }

    fn origin(&self) -> String {
        format!("IAM authentication as `{}` at {}:{}", self.target.user, self.target.host, self.target.port)
    }
}

#[cfg(test)]
mod tests;
