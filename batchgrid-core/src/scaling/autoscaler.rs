//! The autoscaler: a loop in the manager that reads the work and the group every few seconds
//! and applies [`decide`]. Level-triggered: each pass reads what is and takes the decision
//! afresh, so a restarted manager or a missed pass changes nothing but timing. While the manager
//! is quiet ([`crate::manager::quiet`]) it only glances at the group, which reads no database,
//! and tells the manager if the group wants instances.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::group::{GroupError, WorkerGroup};
use super::sizing::{decide, remaining_tasks, Decision, JobWork, SizingInput, SizingSettings};
use super::warm_up::{self, WarmSchedule, WarmUp};
use crate::analytics::{AnalyticsError, AnalyticsStore, JobState};
use crate::manager::quiet::{Activity, Step};
use crate::queue::{QueueError, TaskQueue};

/// How often the autoscaler looks by default: a new job's first tasks raise a group at zero
/// within this (plus one Auto Scaling call).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);

/// Occurrences looked through for a schedule's previous run (skipped ones have no job).
const LAST_RUNS_LOOKED_AT: u32 = 10;

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
    /// The manager's activity, told what the group wants and pacing the passes.
    activity: Option<Activity>,
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
        Self {
            analytics,
            queues,
            group,
            settings,
            interval: DEFAULT_INTERVAL,
            idle_since: Some(Instant::now()),
            activity: None,
        }
    }

    /// Tells `activity` what the group wants after each look, and rests while it is quiet.
    pub fn with_activity(mut self, activity: Activity) -> Self {
        activity.watch_group();
        self.activity = Some(activity);
        self
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
            // A job still being split has tasks coming that nobody has counted yet: at least one;
            // but one waiting for its upstream jobs (`after:`) has nothing to run yet.
            let waiting = job.state == JobState::Submitted && waits_for_upstream(&job.spec);
            if matches!(job.state, JobState::Submitted | JobState::Splitting) && !waiting {
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

    /// The schedules that ask for warm-up, each with its previous run's work. A schedule
    /// whose stored spec cannot be read is passed over (the manager's firing reports it).
    async fn warm_schedules(&self) -> Result<Vec<WarmSchedule>, ScalingError> {
        let mut warm = Vec::new();
        for record in self.analytics.schedules().await? {
            if record.paused {
                continue;
            }
            let Ok(spec) = serde_json::from_str::<crate::spec::JobSpec>(&record.spec) else { continue };
            let Some(block) = spec.schedule.as_deref() else { continue };
            let (Some(warm_up), Ok(schedule)) = (block.warm_up, block.schedule()) else { continue };
            warm.push(WarmSchedule { name: record.name, schedule, warm_up, last_run: None });
        }
        Ok(warm)
    }

    /// The previous run of `schedule` as it started: all its tasks and their mean time.
    async fn last_run(&self, schedule: &str) -> Result<Option<JobWork>, ScalingError> {
        let occurrences = self.analytics.occurrences(schedule, LAST_RUNS_LOOKED_AT).await?;
        let Some(job_id) = occurrences.iter().filter_map(|o| o.job_id.clone()).next() else { return Ok(None) };
        let stages = self.analytics.stages(&job_id).await?;
        let tasks: u64 = stages.iter().map(|s| s.expected.unwrap_or(s.done + s.failed)).sum();
        let mean_task_time = self.analytics.mean_task_millis(&job_id).await?.map(Duration::from_millis);
        Ok((tasks > 0).then_some(JobWork { remaining: tasks, mean_task_time }))
    }

    /// The warm-up in force now, if any; the previous runs are read only for schedules in their
    /// warm-up window, so an idle grid with schedules costs one query a pass.
    async fn warm_up(&self) -> Result<Option<WarmUp>, ScalingError> {
        let now = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now());
        // Each schedule's next fire time is computed once; only those due read their last run.
        let mut due = Vec::new();
        for mut warm in self.warm_schedules().await? {
            if let Some(fire_time) = warm_up::due(&warm, now) {
                warm.last_run = self.last_run(&warm.name).await?;
                due.push((warm, fire_time));
            }
        }
        Ok(warm_up::largest(due.iter().map(|(warm, fire_time)| (warm, *fire_time)), &self.settings))
    }

    /// One pass: reads the work and the group, decides, and applies the decision.
    pub async fn pass(&mut self) -> Result<Decision, ScalingError> {
        let (jobs, queued) = self.work().await?;
        let warm_up = self.warm_up().await?;
        let has_work = jobs.iter().any(|j| j.remaining > 0) || queued > 0 || warm_up.is_some();
        let now = Instant::now();
        self.idle_since = if has_work { None } else { Some(self.idle_since.unwrap_or(now)) };
        let group = self.read_group().await?;
        let input = SizingInput { jobs, queued, group, idle_for: self.idle_since.map(|since| now - since), warm_up };
        let decision = decide(&input, &self.settings);
        if let Decision::Set { desired, reason } = &decision {
            self.group.set_desired(*desired).await?;
            self.observe(Some(*desired));
            tracing::info!(from = group.desired, to = desired, %reason, "worker group resized");
        }
        Ok(decision)
    }

    /// The group's state, told to the manager's activity (a failed read as unknown).
    async fn read_group(&self) -> Result<super::sizing::GroupState, ScalingError> {
        let group = self.group.state().await;
        self.observe(group.as_ref().ok().map(|group| group.desired));
        Ok(group?)
    }

    fn observe(&self, desired: Option<u32>) {
        if let Some(activity) = &self.activity {
            activity.observe_group(desired);
        }
    }

    /// While the manager is quiet: reads the group alone (no database). A group someone asked
    /// for instances makes the manager busy, and the next step a whole pass.
    async fn glance(&self) -> Result<(), ScalingError> {
        self.read_group().await.map(|_| ())
    }

    /// Runs passes until `shutdown` resolves. Errors are logged and retried on the next pass:
    /// a throttled or unreachable API must never stop the manager.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut cadence = self.activity.as_ref().map(Activity::cadence);
        let mut failing = false;
        let mut step = Step::Pass;
        loop {
            let result = match step {
                Step::Pass => self.pass().await.map(|_| ()),
                Step::Quiet => self.glance().await,
            };
            match result {
                Ok(()) if failing => {
                    tracing::info!("autoscaler recovered");
                    failing = false;
                }
                Ok(()) => {}
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
            let interval = self.interval;
            let next = async {
                match cadence.as_mut() {
                    Some(cadence) => cadence.step(interval).await,
                    None => {
                        tokio::time::sleep(interval).await;
                        Step::Pass
                    }
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                next = next => step = next,
            }
        }
    }
}

/// Whether a stored spec names jobs to wait for; only that field is read, every 2 s.
fn waits_for_upstream(spec: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct After {
        #[serde(default)]
        after: Vec<String>,
    }
    serde_json::from_str::<After>(spec).is_ok_and(|spec| !spec.after.is_empty())
}

#[cfg(test)]
mod tests;
