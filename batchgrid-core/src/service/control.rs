//! Operator actions beyond cancel: on a job, `retry` (every failed task of a failed job runs
//! again, into the same job) and `redrive` (the failed tasks a filter picks, of a failed or a
//! running job), each recorded in the job's history by the manager; on a worker, `drain`.

use std::sync::Arc;

use super::{JobService, ServiceError};
use crate::analytics::JobState;
use crate::manager::{RedriveFilter, RedriveRefusal, Redriven};
use crate::spec::JobSpec;

impl JobService {
    /// Runs every failed task of a failed job again, into the same job.
    pub async fn retry(self: &Arc<Self>, id: &str) -> Result<Redriven, ServiceError> {
        self.send_back(id, &RedriveFilter::default(), "retry", true).await
    }

    /// Runs the failed tasks `filter` picks again, of a failed or a running job.
    pub async fn redrive(self: &Arc<Self>, id: &str, filter: &RedriveFilter) -> Result<Redriven, ServiceError> {
        self.send_back(id, filter, "redrive", false).await
    }

    /// Asks a worker to take no new task and exit after its current ones.
    pub async fn drain_worker(&self, worker_id: &str) -> Result<(), ServiceError> {
        let at = crate::db::now_millis();
        if !self.manager.grid().analytics.request_drain(worker_id, at).await? {
            return Err(ServiceError::NotFound(format!("worker {worker_id}")));
        }
        tracing::info!(worker = %worker_id, "drain requested");
        Ok(())
    }

    async fn send_back(
        self: &Arc<Self>,
        id: &str,
        filter: &RedriveFilter,
        action: &str,
        only_failed: bool,
    ) -> Result<Redriven, ServiceError> {
        let analytics = &self.manager.grid().analytics;
        let job = analytics.job(id).await?.ok_or_else(|| ServiceError::NotFound(id.to_owned()))?;
        let outcome = match self.manager.redrive_tasks(id, filter, action, only_failed).await? {
            Ok(outcome) => outcome,
            Err(RedriveRefusal::State(state)) => {
                let wanted = if only_failed { "a failed job" } else { "a failed or running job" };
                return Err(ServiceError::Refused(format!("job `{id}` is {state}: {action} takes {wanted}")));
            }
            Err(RedriveRefusal::NothingToRun) => {
                let why = job.error.map(|e| format!(" (it ended: {e})")).unwrap_or_default();
                return Err(ServiceError::Refused(format!(
                    "job `{id}` has no failed task to run again ({}){why}",
                    filter.describe()
                )));
            }
        };
        if job.state == JobState::Failed {
            // Its driver has ended, or is ending (writing the report): a new one drives the
            // reopened job to its new end. Passes are idempotent, so an overlap is harmless.
            match serde_json::from_str::<JobSpec>(&job.spec) {
                Ok(spec) => self.start(id.to_owned(), spec),
                Err(error) => tracing::error!(job = %id, %error, "stored spec unreadable; the job is not driven"),
            }
        }
        Ok(outcome)
    }
}
