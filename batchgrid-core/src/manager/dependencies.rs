//! Job dependencies (`after:`): a job waits, neither split nor enqueued, until every job it
//! names has completed, and fails with the reason of the first that failed or was cancelled.
//! The verdict is read afresh on every pass (level-triggered), so a restarted manager decides
//! the same way.

use super::{Manager, ManagerError};
use crate::analytics::JobState;
use crate::spec::JobSpec;

/// What the jobs a job waits for say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Upstream {
    /// Every one has completed (or there are none): the job may start.
    Ready,
    /// This one has not ended yet.
    Waiting(String),
    /// One failed, was cancelled or does not exist: the job fails for this reason.
    Failed(String),
}

impl Manager {
    /// The verdict of the jobs `spec.after` names (ids, resolved at submit).
    pub(super) async fn upstream(&self, spec: &JobSpec) -> Result<Upstream, ManagerError> {
        for id in &spec.after {
            let Some(job) = self.grid.analytics.job(id).await? else {
                return Ok(Upstream::Failed(format!("upstream job `{id}` does not exist")));
            };
            let why = job.error.map(|e| format!(": {e}")).unwrap_or_default();
            match job.state {
                JobState::Completed => {}
                JobState::Failed => return Ok(Upstream::Failed(format!("upstream job `{id}` failed{why}"))),
                JobState::Cancelled => return Ok(Upstream::Failed(format!("upstream job `{id}` was cancelled{why}"))),
                JobState::Submitted | JobState::Splitting | JobState::Running => {
                    return Ok(Upstream::Waiting(id.clone()))
                }
            }
        }
        Ok(Upstream::Ready)
    }
}
