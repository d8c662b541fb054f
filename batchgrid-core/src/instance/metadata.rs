//! The instance metadata service (IMDSv2 only: the launch template requires tokens), through
//! the SDK's client, which fetches and refreshes the session token. Its endpoint is a setting,
//! so tests serve the metadata from loopback.

use std::time::{Duration, SystemTime};

use aws_config::imds::client::error::ImdsError;
use serde::Deserialize;

/// The metadata service's address on every EC2 instance.
pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";

/// Metadata read failures.
#[derive(Debug, thiserror::Error)]
#[error("instance metadata {path}: {message}")]
pub struct MetadataError {
    /// The path read.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// A spot interruption notice.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SpotNotice {
    /// `terminate`, `stop` or `hibernate`.
    pub action: String,
    /// When it happens (RFC 3339).
    pub time: String,
}

impl SpotNotice {
    /// Time left before the interruption (zero if it is past or unreadable).
    pub fn remaining(&self) -> Duration {
        humantime::parse_rfc3339_weak(&self.time)
            .ok()
            .and_then(|at| at.duration_since(SystemTime::now()).ok())
            .unwrap_or(Duration::ZERO)
    }
}

/// A client of the instance metadata service.
#[derive(Debug, Clone)]
pub struct InstanceMetadata {
    client: aws_config::imds::Client,
}

impl InstanceMetadata {
    /// A client of the service at `endpoint` (e.g. [`DEFAULT_ENDPOINT`]).
    pub fn new(endpoint: &str) -> Result<Self, MetadataError> {
        let builder = aws_config::imds::Client::builder()
            .endpoint(endpoint)
            .map_err(|e| MetadataError { path: endpoint.to_owned(), message: e.to_string() })?;
        let client = builder
            .connect_timeout(Duration::from_secs(1))
            .read_timeout(Duration::from_secs(2))
            .max_attempts(2)
            .build();
        Ok(Self { client })
    }

    /// Reads a metadata path; `None` when the service answers 404 (nothing there).
    async fn read(&self, path: &str) -> Result<Option<String>, MetadataError> {
        match self.client.get(path).await {
            Ok(value) => Ok(Some(value.as_ref().to_owned())),
            Err(ImdsError::ErrorResponse(response)) if response.response().status().as_u16() == 404 => Ok(None),
            Err(error) => Err(MetadataError { path: path.to_owned(), message: crate::aws::error_text(&error) }),
        }
    }

    /// The instance's id.
    pub async fn instance_id(&self) -> Result<String, MetadataError> {
        let path = "/latest/meta-data/instance-id";
        self.read(path).await?.ok_or_else(|| MetadataError { path: path.into(), message: "not found".into() })
    }

    /// The spot interruption notice, if one has been given.
    pub async fn spot_notice(&self) -> Result<Option<SpotNotice>, MetadataError> {
        let path = "/latest/meta-data/spot/instance-action";
        let Some(text) = self.read(path).await? else { return Ok(None) };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| MetadataError { path: path.into(), message: format!("unreadable notice: {e}") })
    }

    /// The group's target lifecycle state for the instance (`InService`, `Terminated`, ...).
    pub async fn target_lifecycle_state(&self) -> Result<Option<String>, MetadataError> {
        self.read("/latest/meta-data/autoscaling/target-lifecycle-state").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_time_of_a_notice() {
        let at = SystemTime::now() + Duration::from_secs(120);
        let notice = SpotNotice { action: "terminate".into(), time: humantime::format_rfc3339_seconds(at).to_string() };
        let left = notice.remaining();
        assert!(left > Duration::from_secs(110) && left <= Duration::from_secs(120), "{left:?}");
        let past = SpotNotice { action: "terminate".into(), time: "2017-09-18T08:22:00Z".into() };
        assert_eq!(past.remaining(), Duration::ZERO);
        let garbage = SpotNotice { action: "terminate".into(), time: "soon".into() };
        assert_eq!(garbage.remaining(), Duration::ZERO);
    }
}
