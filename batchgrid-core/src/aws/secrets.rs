//! Reading secrets from Secrets Manager.

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

/// The JSON an RDS-managed master user secret holds.
#[derive(Deserialize)]
struct DatabaseCredentials {
    username: String,
    password: String,
}

/// A PostgreSQL URL for `host` from an RDS-managed credentials secret (TLS required).
pub async fn database_url(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
    host: &str,
    database: &str,
) -> Result<Secret, SecretError> {
    let secret = fetch(client, arn).await?;
    let credentials: DatabaseCredentials = serde_json::from_str(secret.expose())
        .map_err(|_| SecretError::Shape { arn: arn.to_owned(), expected: "RDS credentials JSON" })?;
    Ok(Secret::new(format!(
        "postgres://{}:{}@{host}:5432/{database}?sslmode=require",
        percent_encode(&credentials.username),
        percent_encode(&credentials.password)
    )))
}

/// Percent-encodes everything but unreserved URL characters (managed passwords hold `:@/?#`).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_encoded_for_urls() {
        assert_eq!(percent_encode("a:b@c/d?e#f g"), "a%3Ab%40c%2Fd%3Fe%23f%20g");
    }
}
