//! Sizing the worker group from the work: the manager knows every job's remaining tasks and
//! observed task time, so it sets the group's desired capacity itself, from zero the moment a
//! job arrives and back to the minimum once the work has run out. A backlog-per-instance
//! metric is undefined at zero instances, so CloudWatch cannot do this from zero.
//!
//! - [`sizing`]: the decision, a pure function.
//! - [`group`]: the group behind a small trait (Auto Scaling on AWS).
//! - [`warm_up`]: a scheduled job's warm-up, a floor under the size before its fire time.
//! - [`autoscaler`]: the loop that reads the work and applies the decision.
//! - `control`: an operator's status, bounds, pause and resume of the group (on AWS).

pub mod autoscaler;
#[cfg(feature = "aws")]
pub mod control;
pub mod group;
pub mod sizing;
pub mod warm_up;

pub use autoscaler::{Autoscaler, ScalingError};
#[cfg(feature = "aws")]
pub use group::AutoScalingGroup;
pub use group::{GroupError, InstanceList, InstanceView, WorkerGroup};
pub use sizing::{decide, Decision, GroupState, SizingSettings};
