//! The worker group the autoscaler sizes: a small trait, and its Auto Scaling implementation.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::sizing::GroupState;

/// Failures reading or sizing the group.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// The Auto Scaling API refused or failed.
    #[error("auto scaling group {group}: {message}")]
    Api {
        /// The group's name.
        group: String,
        /// What went wrong.
        message: String,
    },
    /// The group does not exist.
    #[error("auto scaling group {0} does not exist")]
    Missing(String),
}

/// A group of worker instances whose desired capacity can be read and set.
#[async_trait]
pub trait WorkerGroup: Send + Sync {
    /// The group's bounds and desired capacity.
    async fn state(&self) -> Result<GroupState, GroupError>;
    /// Asks the group for `desired` instances.
    async fn set_desired(&self, desired: u32) -> Result<(), GroupError>;
}

/// One instance of the worker group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    /// EC2 instance id.
    pub id: String,
    /// Instance type.
    pub instance_type: String,
    /// Auto Scaling lifecycle state (`InService`, `Terminating:Wait`, ...).
    pub lifecycle: String,
    /// Health as Auto Scaling sees it.
    pub health: String,
    /// Protected from scale-in (the worker protects itself while busy).
    pub protected: bool,
}

/// The worker group's instances, for the dashboard's grid page (a trait so the page needs no
/// AWS client, and a test can give it instances).
#[async_trait]
pub trait InstanceList: Send + Sync {
    /// The instances, by id.
    async fn instances(&self) -> Result<Vec<InstanceView>, GroupError>;
}

/// An EC2 Auto Scaling group.
#[cfg(feature = "aws")]
#[derive(Debug, Clone)]
pub struct AutoScalingGroup {
    client: aws_sdk_autoscaling::Client,
    name: String,
}

#[cfg(feature = "aws")]
impl AutoScalingGroup {
    /// The group `name`, reached through `client`.
    pub fn new(client: aws_sdk_autoscaling::Client, name: impl Into<String>) -> Self {
        Self { client, name: name.into() }
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn client(&self) -> &aws_sdk_autoscaling::Client {
        &self.client
    }

    pub(super) fn error<E: std::error::Error>(&self, error: &E) -> GroupError {
        GroupError::Api { group: self.name.clone(), message: crate::aws::error_text(error) }
    }
}

#[cfg(feature = "aws")]
#[async_trait]
impl WorkerGroup for AutoScalingGroup {
    async fn state(&self) -> Result<GroupState, GroupError> {
        let answer = self
            .client
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&self.name)
            .send()
            .await
            .map_err(|e| self.error(&e))?;
        let group = answer.auto_scaling_groups().first().ok_or_else(|| GroupError::Missing(self.name.clone()))?;
        let count = |n: Option<i32>| n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
        Ok(GroupState {
            min: count(group.min_size),
            max: count(group.max_size),
            desired: count(group.desired_capacity),
        })
    }

    async fn set_desired(&self, desired: u32) -> Result<(), GroupError> {
        // HonorCooldown off: the manager's decision is based on the work itself, not on a
        // metric that lags, so there is nothing for a cooldown to smooth.
        self.client
            .set_desired_capacity()
            .auto_scaling_group_name(&self.name)
            .desired_capacity(i32::try_from(desired).unwrap_or(i32::MAX))
            .honor_cooldown(false)
            .send()
            .await
            .map_err(|e| self.error(&e))?;
        Ok(())
    }
}
