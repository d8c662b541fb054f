//! Reading secrets from Secrets Manager.

#[cfg(feature = "postgres")]
use serde::Deserialize;

pub use crate::secret::Secret;

/// Failures reading a secret (the messages never hold its value).
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Secrets Manager refused or failed.
    #[error("reading secret {arn}: {message}")]
    Fetch {
        /// The secret's ARN.
        arn: String,
        /// What went wrong.
        message: String,
    },
    /// The secret is not in the expected shape.
    #[error("secret {arn} is not {expected}")]
    Shape {
        /// The secret's ARN.
        arn: String,
        /// What it should have been.
        expected: &'static str,
    },
}

/// Reads a secret's string value.
pub async fn fetch(client: &aws_sdk_secretsmanager::Client, arn: &str) -> Result<Secret, SecretError> {
    let output = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| SecretError::Fetch { arn: arn.to_owned(), message: super::error_text(&e) })?;
    output.secret_string.map(Secret::new).ok_or(SecretError::Shape { arn: arn.to_owned(), expected: "a string secret" })
}

/// The JSON of a database credentials secret: RDS's managed master user secret holds
/// `username` and `password`; the format of a secret made by hand (or by RDS before managed
/// secrets) adds `host`, `port` and `dbname`.
#[cfg(feature = "postgres")]
#[derive(Deserialize)]
struct DatabaseCredentials {
    username: String,
    password: String,
    host: Option<String>,
    port: Option<Port>,
    dbname: Option<String>,
}

/// A port as a number or as a string of digits (both are seen in secrets written by hand).
#[cfg(feature = "postgres")]
#[derive(Deserialize)]
#[serde(untagged)]
enum Port {
    Number(u16),
    Text(String),
}

/// PostgreSQL's port when neither the configuration nor the secret names one.
#[cfg(feature = "postgres")]
pub(crate) const DEFAULT_PORT: u16 = 5432;
/// The database when the secret names none (RDS creates `postgres`).
#[cfg(feature = "postgres")]
const DEFAULT_DATABASE: &str = "postgres";

/// Database credentials kept in Secrets Manager, read again on every call, so that a rotated
/// secret is picked up. What the grid's configuration names (the host, and a port after it)
/// wins over the secret's fields; the secret fills in the rest.
#[cfg(feature = "postgres")]
#[derive(Debug, Clone)]
pub struct DatabaseSecret {
    client: aws_sdk_secretsmanager::Client,
    arn: String,
    host: String,
    port: Option<u16>,
    database: Option<String>,
    tls: crate::analytics::tls::DatabaseTls,
}

#[cfg(feature = "postgres")]
impl DatabaseSecret {
    /// The secret `arn`, for the database at `host` (`name` or `name:port`), over `tls`.
    pub fn new(
        client: aws_sdk_secretsmanager::Client,
        arn: &str,
        host: &str,
        tls: crate::analytics::tls::DatabaseTls,
    ) -> Result<Self, SecretError> {
        let (host, port) = split_host_port(host)
            .map_err(|_| SecretError::Shape { arn: arn.to_owned(), expected: "used with a host or host:port" })?;
        Ok(Self { client, arn: arn.to_owned(), host, port, database: None, tls })
    }

    /// Connects to `database` whatever the secret says (`None`: the secret's, else `postgres`);
    /// RDS's managed master secret names no database.
    pub fn with_database(mut self, database: Option<&str>) -> Self {
        self.database = database.map(str::to_owned);
        self
    }

    /// The connect options from the secret's current value.
    async fn read(&self) -> Result<sqlx::postgres::PgConnectOptions, SecretError> {
        let secret = fetch(&self.client, &self.arn).await?;
        let shape = || SecretError::Shape { arn: self.arn.clone(), expected: "database credentials JSON" };
        let credentials: DatabaseCredentials = serde_json::from_str(secret.expose()).map_err(|_| shape())?;
        let secret_port = match credentials.port {
            None => None,
            Some(Port::Number(port)) => Some(port),
            Some(Port::Text(text)) => Some(text.parse().map_err(|_| shape())?),
        };
        let host = match (self.host.is_empty(), credentials.host) {
            (true, Some(host)) => host,
            _ => self.host.clone(),
        };
        // Not `PgConnectOptions::new()`: it would take a password from ~/.pgpass.
        Ok(self.tls.apply(
            sqlx::postgres::PgConnectOptions::new_without_pgpass()
                .host(&host)
                .port(self.port.or(secret_port).unwrap_or(DEFAULT_PORT))
                .username(&credentials.username)
                .password(&credentials.password)
                .database(self.database.as_deref().or(credentials.dbname.as_deref()).unwrap_or(DEFAULT_DATABASE)),
        ))
    }
}

#[cfg(feature = "postgres")]
#[async_trait::async_trait]
impl crate::analytics::credentials::CredentialsSource for DatabaseSecret {
    async fn connect_options(
        &self,
    ) -> Result<sqlx::postgres::PgConnectOptions, crate::analytics::credentials::CredentialsError> {
        self.read().await.map_err(|e| crate::analytics::credentials::CredentialsError {
            origin: self.origin(),
            message: e.to_string(),
        })
    }

    fn origin(&self) -> String {
        format!("secret {}", self.arn)
    }
}

/// Splits `host`, `host:port` or `[v6]:port`; the port is `None` when not given.
pub(crate) fn split_host_port(text: &str) -> Result<(String, Option<u16>), std::num::ParseIntError> {
    if let Some(rest) = text.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').map(str::parse).transpose()?;
            return Ok((host.to_owned(), port));
        }
    }
    match text.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address.
        Some((host, port)) if !host.contains(':') => Ok((host.to_owned(), Some(port.parse()?))),
        _ => Ok((text.to_owned(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_may_carry_a_port() {
        assert_eq!(split_host_port("db.example"), Ok(("db.example".to_owned(), None)));
        assert_eq!(split_host_port("127.0.0.1:55432"), Ok(("127.0.0.1".to_owned(), Some(55432))));
        assert_eq!(split_host_port("[::1]:6543"), Ok(("::1".to_owned(), Some(6543))));
        assert_eq!(split_host_port("::1"), Ok(("::1".to_owned(), None)));
        assert!(split_host_port("db:port").is_err());
    }

    #[cfg(feature = "postgres")]
    mod database_secret {
        use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput;
        use aws_smithy_mocks::{mock, mock_client, RuleMode};
        use sqlx::postgres::PgSslMode;

        use crate::analytics::credentials::CredentialsSource;
        use crate::analytics::tls::DatabaseTls;

        use super::super::DatabaseSecret;

        fn holding(values: &[&'static str]) -> aws_sdk_secretsmanager::Client {
            let rules: Vec<_> = values
                .iter()
                .map(|&value| {
                    mock!(aws_sdk_secretsmanager::Client::get_secret_value)
                        .then_output(move || GetSecretValueOutput::builder().secret_string(value).build())
                })
                .collect();
            let rules: Vec<&_> = rules.iter().collect();
            mock_client!(aws_sdk_secretsmanager, RuleMode::Sequential, rules.as_slice())
        }

        #[tokio::test]
        async fn a_managed_secret_gets_rds_defaults_and_tls() {
            let client = holding(&[r#"{"username":"admin","password":"p:@/?#"}"#]);
            let secret = DatabaseSecret::new(client, "arn:s", "db.example", DatabaseTls::default()).expect("secret");
            let options = secret.connect_options().await.expect("options");
            assert_eq!((options.get_host(), options.get_port()), ("db.example", 5432));
            assert_eq!((options.get_username(), options.get_database()), ("admin", Some("postgres")));
            assert!(matches!(options.get_ssl_mode(), PgSslMode::Require));
        }

        #[tokio::test]
        async fn each_read_sees_the_current_value_and_configuration_wins_over_the_secret() {
            let client = holding(&[
                r#"{"username":"u1","password":"a","host":"other","port":"6000","dbname":"grid"}"#,
                r#"{"username":"u2","password":"b","host":"other","port":6000,"dbname":"grid","engine":"postgres"}"#,
            ]);
            let secret = DatabaseSecret::new(client, "arn:s", "127.0.0.1", DatabaseTls::disabled()).expect("secret");
            let first = secret.connect_options().await.expect("options");
            assert_eq!((first.get_host(), first.get_port(), first.get_database()), ("127.0.0.1", 6000, Some("grid")));
            assert!(matches!(first.get_ssl_mode(), PgSslMode::Disable));
            assert_eq!(secret.connect_options().await.expect("again").get_username(), "u2", "read afresh");

            let client = holding(&[r#"{"username":"u","password":"p","port":6000}"#]);
            let secret =
                DatabaseSecret::new(client, "arn:s", "127.0.0.1:7000", DatabaseTls::disabled()).expect("secret");
            assert_eq!(secret.connect_options().await.expect("options").get_port(), 7000, "host:port wins");
        }

        #[tokio::test]
        async fn a_malformed_secret_is_an_error_that_does_not_quote_it() {
            let client = holding(&[r#"{"username":"u","password":"hunter2","port":"many"}"#, "hunter2 plain"]);
            let secret = DatabaseSecret::new(client, "arn:s", "h", DatabaseTls::default()).expect("secret");
            for _ in 0..2 {
                let error = secret.connect_options().await.expect_err("malformed").to_string();
                assert!(error.contains("arn:s") && !error.contains("hunter2"), "{error}");
            }
        }
    }
}
