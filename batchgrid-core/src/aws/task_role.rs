//! Assuming a task role through STS (see [`crate::task_role`]).

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::secret::Secret;
use crate::task_role::{AssumeError, AssumeRole, RoleCredentials};

/// [`AssumeRole`] through STS, with the worker's own credentials.
#[derive(Debug, Clone)]
pub struct StsAssumer {
    client: aws_sdk_sts::Client,
}

impl StsAssumer {
    /// Assumes roles with `client`.
    pub fn new(client: aws_sdk_sts::Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl AssumeRole for StsAssumer {
    async fn assume(&self, role_arn: &str, session: &str, duration: Duration) -> Result<RoleCredentials, AssumeError> {
        let seconds = i32::try_from(duration.as_secs()).unwrap_or(i32::MAX);
        let output = self
            .client
            .assume_role()
            .role_arn(role_arn)
            .role_session_name(session)
            .duration_seconds(seconds)
            .send()
            .await
            .map_err(|error| {
                let service = error.as_service_error();
                // STS says so with a ValidationError naming DurationSeconds.
                if service.and_then(|e| e.message()).is_some_and(|m| m.contains("DurationSeconds")) {
                    AssumeError::DurationTooLong(duration)
                } else {
                    AssumeError::Failed(super::error_text(&error))
                }
            })?;
        let credentials =
            output.credentials.ok_or_else(|| AssumeError::Failed("STS returned no credentials".into()))?;
        let expires_at = SystemTime::try_from(credentials.expiration)
            .map_err(|_| AssumeError::Failed("STS returned an unreadable expiry".into()))?;
        Ok(RoleCredentials {
            access_key_id: Secret::new(credentials.access_key_id),
            secret_access_key: Secret::new(credentials.secret_access_key),
            session_token: Secret::new(credentials.session_token),
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_sts::operation::assume_role::{AssumeRoleError, AssumeRoleOutput};
    use aws_sdk_sts::types::Credentials;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use aws_smithy_types::error::ErrorMetadata;

    use super::*;

    #[tokio::test]
    async fn an_assumed_session_becomes_role_credentials() {
        let expiry = aws_smithy_types::DateTime::from_secs(1_900_000_000);
        let rule = mock!(aws_sdk_sts::Client::assume_role)
            .match_requests(|r| {
                r.role_arn() == Some("arn:aws:iam::123456789012:role/tasks")
                    && r.role_session_name() == Some("batchgrid-w1")
                    && r.duration_seconds() == Some(3600)
            })
            .then_output(move || {
                AssumeRoleOutput::builder()
                    .credentials(
                        Credentials::builder()
                            .access_key_id("ASIAX")
                            .secret_access_key("s")
                            .session_token("t")
                            .expiration(expiry)
                            .build()
                            .expect("credentials"),
                    )
                    .build()
            });
        let assumer = StsAssumer::new(mock_client!(aws_sdk_sts, RuleMode::Sequential, &[&rule]));
        let credentials = assumer
            .assume("arn:aws:iam::123456789012:role/tasks", "batchgrid-w1", Duration::from_secs(3600))
            .await
            .expect("assumed");
        assert_eq!(credentials.access_key_id.expose(), "ASIAX");
        assert_eq!(credentials.expires_at, SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000));
    }

    #[tokio::test]
    async fn a_session_longer_than_the_role_allows_is_told_apart() {
        let too_long = mock!(aws_sdk_sts::Client::assume_role).then_error(|| {
            AssumeRoleError::generic(
                ErrorMetadata::builder()
                    .code("ValidationError")
                    .message("The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
                    .build(),
            )
        });
        let denied = mock!(aws_sdk_sts::Client::assume_role).then_error(|| {
            AssumeRoleError::generic(
                ErrorMetadata::builder()
                    .code("AccessDenied")
                    .message("not authorized to perform sts:AssumeRole")
                    .build(),
            )
        });
        let assumer = StsAssumer::new(mock_client!(aws_sdk_sts, RuleMode::Sequential, &[&too_long, &denied]));
        let arn = "arn:aws:iam::123456789012:role/tasks";
        let hours = Duration::from_secs(4 * 3600);
        assert!(matches!(assumer.assume(arn, "s", hours).await, Err(AssumeError::DurationTooLong(d)) if d == hours));
        let Err(AssumeError::Failed(message)) = assumer.assume(arn, "s", hours).await else { panic!("denied") };
        assert!(message.contains("AccessDenied") || message.contains("not authorized"), "{message}");
    }
}
