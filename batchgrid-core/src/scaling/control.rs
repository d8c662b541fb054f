//! An operator's hand on the worker group (`batchgrid grid status | scale | pause | resume`):
//! its instances as Auto Scaling sees them, its bounds set directly, and a pause that holds it
//! at zero.
//!
//! A pause sets min, desired and max to zero and keeps the bounds it replaced in a tag on the
//! group ([`PAUSED_TAG`]); the manager's autoscaler never asks beyond the group's max, so its
//! scaling is suspended with nothing to tell it, and whichever machine resumes finds the bounds
//! to restore on the group itself.

use serde::{Deserialize, Serialize};

pub use super::group::InstanceView;
use super::group::{AutoScalingGroup, GroupError, InstanceList};

/// The tag holding a paused group's bounds, `MIN,MAX`.
pub const PAUSED_TAG: &str = "batchgrid:paused-bounds";

/// Bounds asked for by `grid scale`; each one left out keeps its current value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleRequest {
    /// New minimum size.
    pub min: Option<u32>,
    /// New desired capacity.
    pub desired: Option<u32>,
    /// New maximum size.
    pub max: Option<u32>,
}

/// A group's bounds that satisfy min <= desired <= max.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bounds {
    /// Minimum size.
    pub min: u32,
    /// Desired capacity.
    pub desired: u32,
    /// Maximum size.
    pub max: u32,
}

impl Bounds {
    /// `request` over `current`, checked; the error names the values that conflict.
    pub fn apply(current: Bounds, request: &ScaleRequest) -> Result<Bounds, ControlError> {
        let bounds = Bounds {
            min: request.min.unwrap_or(current.min),
            desired: request.desired.unwrap_or(current.desired),
            max: request.max.unwrap_or(current.max),
        };
        if bounds.min > bounds.max {
            return Err(ControlError::Invalid(format!("--min {} is above --max {}", bounds.min, bounds.max)));
        }
        if bounds.desired < bounds.min || bounds.desired > bounds.max {
            return Err(ControlError::Invalid(format!(
                "--desired {} is outside min {} ..= max {} (min <= desired <= max)",
                bounds.desired, bounds.min, bounds.max
            )));
        }
        Ok(bounds)
    }
}

/// The group as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    /// The group's name.
    pub name: String,
    /// Its bounds now.
    pub bounds: Bounds,
    /// While paused: the bounds a resume restores.
    pub paused: Option<Bounds>,
    /// Its instances, by id.
    pub instances: Vec<InstanceView>,
}

/// Why a control action failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The group could not be read or changed.
    #[error(transparent)]
    Group(#[from] GroupError),
    /// The requested bounds are impossible.
    #[error("{0}")]
    Invalid(String),
    /// The action does not fit the group's state (scaling a paused group, resuming a running one).
    #[error("{0}")]
    State(String),
}

fn count(n: Option<i32>) -> u32 {
    n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
}

fn size(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Reads `MIN,MAX` from the pause tag.
fn parse_paused(text: &str) -> Option<Bounds> {
    let (min, max) = text.split_once(',')?;
    let (min, max) = (min.trim().parse().ok()?, max.trim().parse().ok()?);
    Some(Bounds { min, desired: min, max })
}

impl AutoScalingGroup {
    /// The group's bounds, pause and instances.
    pub async fn view(&self) -> Result<GroupView, ControlError> {
        let answer = self
            .client()
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(self.name())
            .send()
            .await
            .map_err(|e| self.error(&e))?;
        let group = answer.auto_scaling_groups().first().ok_or_else(|| GroupError::Missing(self.name().to_owned()))?;
        let bounds = Bounds {
            min: count(group.min_size()),
            desired: count(group.desired_capacity()),
            max: count(group.max_size()),
        };
        let paused = group.tags().iter().find(|t| t.key() == Some(PAUSED_TAG)).and_then(|t| parse_paused(t.value()?));
        let mut instances: Vec<InstanceView> = group
            .instances()
            .iter()
            .map(|i| InstanceView {
                id: i.instance_id().unwrap_or_default().to_owned(),
                instance_type: i.instance_type().unwrap_or_default().to_owned(),
                lifecycle: i.lifecycle_state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
                health: i.health_status().unwrap_or_default().to_owned(),
                protected: i.protected_from_scale_in().unwrap_or(false),
            })
            .collect();
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(GroupView { name: self.name().to_owned(), bounds, paused, instances })
    }

    /// Sets the bounds `request` asks for (UpdateAutoScalingGroup), after checking
    /// min <= desired <= max against the values kept; a paused group is refused.
    pub async fn scale(&self, request: &ScaleRequest) -> Result<Bounds, ControlError> {
        let view = self.view().await?;
        if view.paused.is_some() {
            return Err(ControlError::State(format!("group {} is paused: resume it first", self.name())));
        }
        let bounds = Bounds::apply(view.bounds, request)?;
        self.set_bounds(bounds).await?;
        Ok(bounds)
    }

    /// Holds the group at zero instances, keeping its bounds for [`AutoScalingGroup::resume`];
    /// pausing a paused group changes nothing. Returns the bounds kept.
    pub async fn pause(&self) -> Result<Bounds, ControlError> {
        let view = self.view().await?;
        if let Some(kept) = view.paused {
            return Ok(kept);
        }
        // The tag first: a failure after it leaves a group that resumes to its bounds.
        let tag = aws_sdk_autoscaling::types::Tag::builder()
            .resource_id(self.name())
            .resource_type("auto-scaling-group")
            .key(PAUSED_TAG)
            .value(format!("{},{}", view.bounds.min, view.bounds.max))
            .propagate_at_launch(false)
            .build();
        self.client().create_or_update_tags().tags(tag).send().await.map_err(|e| self.error(&e))?;
        self.set_bounds(Bounds { min: 0, desired: 0, max: 0 }).await?;
        Ok(Bounds { desired: view.bounds.min, ..view.bounds })
    }

    /// Restores a paused group's bounds (desired at its minimum; the manager scales from
    /// there as work needs). Returns them.
    pub async fn resume(&self) -> Result<Bounds, ControlError> {
        let view = self.view().await?;
        let Some(kept) = view.paused else {
            return Err(ControlError::State(format!("group {} is not paused", self.name())));
        };
        self.set_bounds(kept).await?;
        let tag = aws_sdk_autoscaling::types::Tag::builder()
            .resource_id(self.name())
            .resource_type("auto-scaling-group")
            .key(PAUSED_TAG)
            .build();
        self.client().delete_tags().tags(tag).send().await.map_err(|e| self.error(&e))?;
        Ok(kept)
    }

    async fn set_bounds(&self, bounds: Bounds) -> Result<(), ControlError> {
        self.client()
            .update_auto_scaling_group()
            .auto_scaling_group_name(self.name())
            .min_size(size(bounds.min))
            .desired_capacity(size(bounds.desired))
            .max_size(size(bounds.max))
            .send()
            .await
            .map_err(|e| self.error(&e))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl InstanceList for AutoScalingGroup {
    async fn instances(&self) -> Result<Vec<InstanceView>, GroupError> {
        match self.view().await {
            Ok(view) => Ok(view.instances),
            Err(ControlError::Group(error)) => Err(error),
            Err(other) => Err(GroupError::Api { group: self.name().to_owned(), message: other.to_string() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_keep_min_desired_max_in_order_and_say_which_conflict() {
        let current = Bounds { min: 0, desired: 2, max: 10 };
        let set = |min, desired, max| Bounds::apply(current, &ScaleRequest { min, desired, max });
        assert_eq!(set(None, Some(5), None).expect("desired in range"), Bounds { min: 0, desired: 5, max: 10 });
        assert_eq!(set(Some(1), Some(1), Some(1)).expect("all one"), Bounds { min: 1, desired: 1, max: 1 });
        let error = set(Some(4), Some(3), None).expect_err("desired under min").to_string();
        assert!(error.contains("--desired 3 is outside min 4 ..= max 10"), "{error}");
        let error = set(None, None, Some(1)).expect_err("desired above the new max").to_string();
        assert!(error.contains("--desired 2") && error.contains("max 1"), "{error}");
        let error = set(Some(6), Some(6), Some(5)).expect_err("min above max").to_string();
        assert!(error.contains("--min 6 is above --max 5"), "{error}");
    }

    #[test]
    fn the_pause_tag_round_trips_and_a_garbled_one_is_ignored() {
        assert_eq!(parse_paused("1,20"), Some(Bounds { min: 1, desired: 1, max: 20 }));
        assert_eq!(parse_paused("x,2"), None);
        assert_eq!(parse_paused("3"), None);
    }
}
