//! The job report: what ran, what failed and why, and how fast; its comparison with another
//! run (`compare`), its self-contained HTML page (`html`), and the series its plots draw:
//! throughput over time (`slots`), the task-time distribution (`distribution`) and the
//! per-worker timeline (`workers`).

pub mod compare;
pub mod distribution;
pub mod html;
pub mod slots;
pub mod workers;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::analytics::{AnalyticsError, AnalyticsStore, JobState, RequestCount, StageProgress};
use crate::metering::price_of;
use crate::spec::StageKind;
use distribution::TimeBucket;
use slots::{Slots, Throughput};
use workers::WorkerTimeline;

/// Task-time percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Slowest.
    pub max: u64,
}

impl Percentiles {
    /// Nearest-rank percentiles of ascending `sorted` values.
    pub fn of_sorted(sorted: &[u64]) -> Self {
        let rank = |p: f64| -> u64 {
            if sorted.is_empty() {
                return 0;
            }
            let index = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[index.clamp(1, sorted.len()) - 1]
        };
        Self { p50: rank(50.0), p90: rank(90.0), p99: rank(99.0), max: sorted.last().copied().unwrap_or(0) }
    }
}

/// A task that failed for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedTask {
    /// Stage name.
    pub stage: String,
    /// Task id.
    pub task: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub error: String,
}

/// The end-of-job report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobReport {
    /// Job id.
    pub job_id: String,
    /// Job name.
    pub name: String,
    /// Final (or current) state.
    pub state: JobState,
    /// Why it failed.
    pub error: Option<String>,
    /// Submission to end, in milliseconds.
    pub wall_ms: u64,
    /// Per-stage counts.
    pub stages: Vec<StageProgress>,
    /// Tasks done, all stages.
    pub tasks_done: u64,
    /// Tasks failed for good, all stages.
    pub tasks_failed: u64,
    /// Attempts recorded (retries included).
    pub attempts: u64,
    /// Attempts that failed.
    pub failed_attempts: u64,
    /// Tasks done per second of wall time.
    pub tasks_per_second: f64,
    /// Task-time percentiles of done tasks.
    pub task_ms: Percentiles,
    /// Bytes read by tasks.
    pub bytes_in: u64,
    /// Bytes written by tasks.
    pub bytes_out: u64,
    /// Every task that failed for good.
    pub failures: Vec<FailedTask>,
    /// Stages of an ended job that never ran (why is in `error`): stages after a failed one
    /// under `on_stage_failure: stop`, and reduce stages after failures.
    #[serde(default)]
    pub skipped_stages: Vec<String>,
    /// Where the results were written.
    pub output: Option<PathBuf>,
    /// AWS requests the grid made while the job ran, with their list price (empty on the
    /// embedded grid).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<RequestLine>,
    /// Total list price of those requests, in US dollars.
    #[serde(default)]
    pub request_cost_usd: f64,
    /// Instance-hours of the worker group while the job ran, by type (empty on the embedded grid).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_usage: Vec<InstanceUsage>,
    /// Their cost: spot capacity at its zone's spot price history, the rest at on-demand list
    /// prices (types without a known price are left out).
    #[serde(default)]
    pub instance_cost_usd: f64,
    /// Tasks done per time slot from submission to end (empty in reports stored before it
    /// was kept).
    #[serde(default)]
    pub throughput: Throughput,
    /// Every done task's time in log-spaced buckets (empty in older reports).
    #[serde(default)]
    pub task_time_histogram: Vec<TimeBucket>,
    /// Each worker's busy time per slot of `throughput` (empty in older reports).
    #[serde(default)]
    pub worker_timeline: WorkerTimeline,
    /// Time of the run during which none of the job's tasks was running (zero in older reports).
    #[serde(default)]
    pub waiting: Waiting,
}

/// The time a job spent with no task running: what the grid, not the work, took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// From submission to the first task's start (splitting, admission, the first receive).
    pub before_first_ms: u64,
    /// Between tasks (a stage's barrier, a retry's backoff).
    pub between_ms: u64,
    /// From the last task's end to the job's (noticing it, writing the results out).
    pub after_last_ms: u64,
}

impl Waiting {
    /// From a job's submission, end and its attempts' spans.
    pub fn of(submitted_at: i64, ended_at: i64, spans: &crate::analytics::AttemptSpans) -> Self {
        let gap = |from: i64, to: i64| u64::try_from(to.saturating_sub(from)).unwrap_or(0);
        match (spans.first_start, spans.last_end) {
            (Some(first), Some(last)) => Self {
                before_first_ms: gap(submitted_at, first),
                between_ms: spans.gaps_ms,
                after_last_ms: gap(last, ended_at),
            },
            _ => Self { before_first_ms: gap(submitted_at, ended_at), ..Self::default() },
        }
    }

    /// All of it.
    pub fn total_ms(&self) -> u64 {
        self.before_first_ms + self.between_ms + self.after_last_ms
    }
}

/// Instance-hours of one instance type, zone and purchase option in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceUsage {
    /// Instance type.
    pub instance_type: String,
    /// The availability zone they ran in, where known (not in older reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Spot or on-demand, where known (not in older reports).
    #[serde(default)]
    pub purchase: Purchase,
    /// Instances of this type that ran during the job.
    pub instances: u64,
    /// Hours they ran during the job.
    pub hours: f64,
    /// What they cost, priced as `priced_by` says; `None` when no price is known.
    pub cost_usd: Option<f64>,
    /// Where `cost_usd` comes from (older reports priced everything at on-demand list prices).
    #[serde(default)]
    pub priced_by: PricedBy,
}

/// How an instance was bought.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Purchase {
    /// At the on-demand price.
    OnDemand,
    /// Spot capacity, at the zone's spot price.
    Spot,
    /// Not known (an instance EC2 no longer lists, in a group that mixes both).
    #[default]
    Unknown,
}

impl std::fmt::Display for Purchase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Purchase::OnDemand => "on-demand",
            Purchase::Spot => "spot",
            Purchase::Unknown => "spot or on-demand",
        })
    }
}

/// Where an instance cost comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PricedBy {
    /// On-demand instances at the on-demand list price (the checked-in table).
    #[default]
    OnDemandList,
    /// Spot instances at EC2's spot price history for their type and zone, change by change.
    SpotHistory,
    /// The on-demand list price as an upper bound: spot (or unknown) capacity whose spot
    /// price could not be read.
    OnDemandUpperBound,
}

impl std::fmt::Display for PricedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PricedBy::OnDemandList => "on-demand list price",
            PricedBy::SpotHistory => "spot price history",
            PricedBy::OnDemandUpperBound => "on-demand list price, an upper bound",
        })
    }
}

/// Requests of one service operation in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestLine {
    /// Service (`S3`, `SQS`).
    pub service: String,
    /// Operation (`SendMessageBatch`).
    pub operation: String,
    /// Requests made.
    pub count: u64,
    /// Their list price in US dollars (zero where the operation is free).
    pub cost_usd: f64,
}

impl JobReport {
    /// Builds the report of `job_id` from the analytics store.
    pub async fn build(
        analytics: &dyn AnalyticsStore,
        job_id: &str,
        output: Option<&Path>,
    ) -> Result<Self, AnalyticsError> {
        let job = analytics.job(job_id).await?.ok_or_else(|| AnalyticsError::JobNotFound(job_id.to_owned()))?;
        let stages = analytics.stages(job_id).await?;
        let durations = analytics.task_durations(job_id).await?;
        let totals = analytics.attempt_totals(job_id).await?;
        let failed = analytics.failed_tasks(job_id).await?;
        let end = job.finished_at.unwrap_or_else(crate::db::now_millis);
        let wall_ms = u64::try_from(end - job.submitted_at).unwrap_or(0);
        // The report is built once per job, so reading every completion once is affordable;
        // the per-worker busy time is summed by the store, one row per worker and slot.
        let slots = Slots::over(job.submitted_at, end);
        let throughput = Throughput::count(&slots, &analytics.completion_times(job_id).await?);
        let width = i64::try_from(slots.width).unwrap_or(i64::MAX);
        let activity = analytics.worker_activity(job_id, slots.start, width).await?;
        let waiting = Waiting::of(job.submitted_at, end, &analytics.attempt_spans(job_id).await?);
        let tasks_done: u64 = stages.iter().map(|s| s.done).sum();
        let failures = failed
            .into_iter()
            .map(|t| FailedTask {
                stage: stages.iter().find(|s| s.stage == t.stage).map(|s| s.name.clone()).unwrap_or_default(),
                task: t.task_id,
                attempts: t.attempts,
                error: t.last_error.unwrap_or_default(),
            })
            .collect::<Vec<_>>();
        let skipped_stages = if job.state.is_terminal() && job.state != JobState::Cancelled {
            // The first stage is never skipped (a failed split is in `error`).
            stages
                .iter()
                .skip(1)
                .filter(|s| match s.expected {
                    None => true,
                    Some(0) => s.kind == StageKind::Reduce,
                    Some(_) => false,
                })
                .map(|s| s.name.clone())
                .collect()
        } else {
            Vec::new()
        };
        Ok(Self {
            skipped_stages,
            job_id: job.id,
            name: job.name,
            state: job.state,
            error: job.error,
            wall_ms,
            tasks_failed: failures.len() as u64,
            tasks_done,
            attempts: totals.attempts,
            failed_attempts: totals.failed_attempts,
            tasks_per_second: if wall_ms == 0 { 0.0 } else { tasks_done as f64 * 1000.0 / wall_ms as f64 },
            task_ms: Percentiles::of_sorted(&durations),
            task_time_histogram: distribution::histogram(&durations),
            throughput,
            worker_timeline: WorkerTimeline::spread(&slots, &activity),
            waiting,
            bytes_in: totals.bytes_in,
            bytes_out: totals.bytes_out,
            stages,
            failures,
            output: if job.state == JobState::Completed { output.map(Path::to_path_buf) } else { None },
            requests: Vec::new(),
            request_cost_usd: 0.0,
            instance_usage: Vec::new(),
            instance_cost_usd: 0.0,
        })
    }

    /// Adds the requests made between two snapshots of the grid's request totals (every
    /// process's, so jobs running side by side share them).
    pub fn with_requests(mut self, before: &[RequestCount], after: &[RequestCount]) -> Self {
        self.requests = after
            .iter()
            .filter_map(|a| {
                let earlier =
                    before.iter().find(|b| b.service == a.service && b.operation == a.operation).map_or(0, |b| b.count);
                let count = a.count.saturating_sub(earlier);
                (count > 0).then(|| RequestLine {
                    service: a.service.clone(),
                    operation: a.operation.clone(),
                    count,
                    cost_usd: price_of(&a.service, &a.operation).unwrap_or(0.0) * count as f64,
                })
            })
            .collect();
        self.request_cost_usd = self.requests.iter().map(|r| r.cost_usd).sum();
        self
    }

    /// Adds the worker group's instance-hours during the job.
    pub fn with_instance_usage(mut self, usage: Vec<InstanceUsage>) -> Self {
        self.instance_cost_usd = usage.iter().filter_map(|u| u.cost_usd).sum();
        self.instance_usage = usage;
        self
    }

    /// Requests of one service in this report.
    pub fn requests_of(&self, service: &str) -> u64 {
        self.requests.iter().filter(|r| r.service == service).map(|r| r.count).sum()
    }

    /// The report as text for a terminal or a log.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "job {} ({}) {} in {}", self.job_id, self.name, self.state, format_ms(self.wall_ms));
        if let Some(error) = &self.error {
            let _ = writeln!(out, "  reason: {error}");
        }
        let _ = writeln!(out, "  {:<20} {:<7} {:>9} {:>9} {:>7}", "stage", "kind", "tasks", "done", "failed");
        for stage in &self.stages {
            let kind = match stage.kind {
                StageKind::Map => "map",
                StageKind::Reduce => "reduce",
            };
            let expected = match stage.expected {
                _ if self.skipped_stages.contains(&stage.name) => "skipped".to_owned(),
                Some(n) => n.to_string(),
                None => "-".to_owned(),
            };
            let _ =
                writeln!(out, "  {:<20} {:<7} {:>9} {:>9} {:>7}", stage.name, kind, expected, stage.done, stage.failed);
        }
        let _ = writeln!(
            out,
            "  tasks: {} done, {} failed; attempts: {} ({} failed); {:.1} tasks/s",
            self.tasks_done, self.tasks_failed, self.attempts, self.failed_attempts, self.tasks_per_second
        );
        let _ = writeln!(
            out,
            "  task time: p50 {} p90 {} p99 {} max {}",
            format_ms(self.task_ms.p50),
            format_ms(self.task_ms.p90),
            format_ms(self.task_ms.p99),
            format_ms(self.task_ms.max)
        );
        let _ = writeln!(out, "  data: {} read, {} written", format_bytes(self.bytes_in), format_bytes(self.bytes_out));
        let waiting = &self.waiting;
        let _ = writeln!(
            out,
            "  waiting (no task running): {} ({} before the first task, {} between tasks, {} after the last)",
            format_ms(waiting.total_ms()),
            format_ms(waiting.before_first_ms),
            format_ms(waiting.between_ms),
            format_ms(waiting.after_last_ms)
        );
        if !self.failures.is_empty() {
            let _ = writeln!(out, "  failures:");
            for failure in &self.failures {
                let _ = writeln!(
                    out,
                    "    {}/{} after {} attempts: {}",
                    failure.stage, failure.task, failure.attempts, failure.error
                );
            }
        }
        if !self.requests.is_empty() {
            let total: u64 = self.requests.iter().map(|r| r.count).sum();
            let _ = writeln!(out, "  AWS requests: {total}, ${:.6} at list prices", self.request_cost_usd);
            for line in &self.requests {
                let _ = writeln!(
                    out,
                    "    {:<8} {:<32} {:>9}  ${:.6}",
                    line.service, line.operation, line.count, line.cost_usd
                );
            }
        }
        if !self.instance_usage.is_empty() {
            let hours: f64 = self.instance_usage.iter().map(|u| u.hours).sum();
            let _ = writeln!(out, "  instances: {hours:.2} instance-hours, ${:.4}", self.instance_cost_usd);
            for usage in &self.instance_usage {
                let cost = usage
                    .cost_usd
                    .map_or_else(|| "no price known".to_owned(), |c| format!("${c:.4} at the {}", usage.priced_by));
                let _ = writeln!(
                    out,
                    "    {:<14} {:<12} {:<17} {:>3} instance(s) {:>8.2} h  {cost}",
                    usage.instance_type,
                    usage.zone.as_deref().unwrap_or("zone unknown"),
                    usage.purchase.to_string(),
                    usage.instances,
                    usage.hours
                );
            }
        }
        if let Some(output) = &self.output {
            let _ = writeln!(out, "  results: {}", output.display());
        }
        out
    }
}

pub(crate) fn format_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.2}s", ms as f64 / 1000.0)
    }
}

fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_is_the_time_before_between_and_after_the_tasks() {
        let spans = crate::analytics::AttemptSpans { first_start: Some(1_040), last_end: Some(2_000), gaps_ms: 25 };
        let waiting = Waiting::of(1_000, 2_010, &spans);
        assert_eq!(waiting, Waiting { before_first_ms: 40, between_ms: 25, after_last_ms: 10 });
        assert_eq!(waiting.total_ms(), 75);
        // No task ran: the whole run was waiting.
        assert_eq!(Waiting::of(1_000, 1_500, &Default::default()).total_ms(), 500);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(Percentiles::of_sorted(&values), Percentiles { p50: 50, p90: 90, p99: 99, max: 100 });
        assert_eq!(Percentiles::of_sorted(&[7]), Percentiles { p50: 7, p90: 7, p99: 7, max: 7 });
        assert_eq!(Percentiles::of_sorted(&[]), Percentiles::default());
    }
}
