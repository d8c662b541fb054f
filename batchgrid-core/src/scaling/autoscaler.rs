//! The autoscaler: a loop in the manager that reads the work and the group every few seconds
//! and applies [`decide`]. Level-triggered: each pass reads what is and takes the decision
//! afresh, so a restarted manager or a missed pass changes nothing but timing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::group::{GroupError, WorkerGroup};
use super::sizing::{decide, remaining_tasks, Decision, JobWork, SizingInput, SizingSettings};
use crate::analytics::{AnalyticsError, AnalyticsStore, JobState};
use crate::queue::{QueueError, TaskQueue};

/// How often the autoscaler looks by default: a new job's first tasks raise a group at zero
/// within this (plus one Auto Scaling call).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);

/// Failures of one pass; the loop logs them and tries again on the next.
#[derive(Debug, thiserror::Error)]
pub enum ScalingError {
    /// Reading the jobs failed.
    #[error(transparent)]
    Analytics(#[from] AnalyticsError),
    /// Reading a queue's depth failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Reading or sizing the group failed.
    #[error(transparent)]
    Group(#[from] GroupError),
}

/// Sizes a worker group from the grid's work.
pub struct Autoscaler {
    analytics: Arc<dyn AnalyticsStore>,
    queues: Vec<Arc<dyn TaskQueue>>,
    group: Arc<dyn WorkerGroup>,
    settings: SizingSettings,
    interval: Duration,
    /// When the work last ran out (`None` while there is work). Starts at the autoscaler's
    /// start: a restarted manager waits a whole scale-in delay before it scales in.
    idle_since: Option<Instant>,
}

impl std::fmt::Debug for Autoscaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Autoscaler").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Autoscaler {
    /// An autoscaler of `group` over the jobs in `analytics` and the messages in `queues`.
    pub fn new(
        analytics: Arc<dyn AnalyticsStore>,
        queues: Vec<Arc<dyn TaskQueue>>,
        group: Arc<dyn WorkerGroup>,
        settings: SizingSettings,
    ) -> Self {
        Self { analytics, queues, group, settings, interval: DEFAULT_INTERVAL, idle_since: Some(Instant::now()) }
    }

    /// Looks every `interval` instead of [`DEFAULT_INTERVAL`].
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The work as the sizing function sees it. Queues are read only while some job is active,
    /// so an idle grid costs no queue requests.
    async fn work(&self) -> Result<(Vec<JobWork>, u64), ScalingError> {
        let mut jobs = Vec::new();
        for job in self.analytics.active_jobs().await? {
            let stages = self.analytics.stages(&job.id).await?;
            let mut remaining = remaining_tasks(&stages);
            // A job still being split has tasks coming that nobody has counted yet: at least one.
            if matches!(job.state, JobState::Submitted | JobState::Splitting) {
                remaining = remaining.max(1);
            }
            let mean_task_time = self.analytics.mean_task_millis(&job.id).await?.map(Duration::from_millis);
            jobs.push(JobWork { remaining, mean_task_time });
        }
        let mut queued = 0;
        if !jobs.is_empty() {
            for queue in &self.queues {
                let depth = queue.depth().await?;
                queued += depth.visible + depth.in_flight;
            }
            // The true backlog: tasks waiting for admission are work too, though no queue
            // holds them yet (admission keeps the queue short on purpose).
            queued += self.analytics.admissions().await?.iter().map(|a| a.pending).sum::<u64>();
        }
        Ok((jobs, queued))
    }

    /// One pass: reads the work and the group, decides, and applies the decision.
    pub async fn pass(&mut self) -> Result<Decision, ScalingError> {
        let (jobs, queued) = self.work().await?;
        let has_work = jobs.iter().any(|j| j.remaining > 0) || queued > 0;
        let now = Instant::now();
        self.idle_since = if has_work { None } else { Some(self.idle_since.unwrap_or(now)) };
        let group = self.group.state().await?;
        let input = SizingInput { jobs, queued, group, idle_for: self.idle_since.map(|since| now - since) };
        let decision = decide(&input, &self.settings);
        if let Decision::Set { desired, reason } = &decision {
            self.group.set_desired(*desired).await?;
            tracing::info!(from = group.desired, to = desired, %reason, "worker group resized");
        }
        Ok(decision)
    }

    /// Runs passes until `shutdown` resolves. Errors are logged and retried on the next pass:
    /// a throttled or unreachable API must never stop the manager.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut failing = false;
        loop {
            match self.pass().await {
                Ok(_) if failing => {
                    tracing::info!("autoscaler recovered");
                    failing = false;
                }
                Ok(_) => {}
                Err(error) => {
                    // Once per outage at warn, then quietly: the cause is already in the log.
                    if !failing {
                        tracing::warn!(%error, "autoscaler pass failed; retrying");
                    } else {
                        tracing::debug!(%error, "autoscaler pass failed again");
                    }
                    failing = true;
                }
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
