//! `GET /metrics`: the grid in the Prometheus text format (OpenMetrics, as the
//! `prometheus-client` crate writes it), for the monitoring a platform team already runs.
//!
//! Everything is read from the analytics store and the queues at scrape time rather than
//! counted in the manager's memory, so the series survive a manager restart and agree with
//! what the API and the reports say; a scrape costs a few queries. Per-job series cover the
//! active jobs and the most recent others ([`RECENT_JOBS`]), which bounds their cardinality.

use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::{JobService, ServiceError};
use crate::analytics::{JobQuery, JobState, RequestCount, TimeHistogram};
use crate::metering::price_of;
use crate::queue::QueueDepth;

/// Finished jobs whose per-job series are still exported, besides every active job.
pub const RECENT_JOBS: usize = 20;

/// Upper bounds of the task-duration histogram's buckets, in seconds: sub-second tasks to
/// hour-long ones (transcodes).
const DURATION_BUCKETS: [f64; 14] =
    [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0];

/// One job's series.
#[derive(Debug, Clone, Default)]
pub struct JobSeries {
    /// The job's id.
    pub job: String,
    /// (stage name, state, tasks) per stage and state.
    pub tasks: Vec<(String, &'static str, u64)>,
    /// Its done tasks' times.
    pub times: TimeHistogram,
}

/// What one scrape shows, read from the store and the queues.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    /// Jobs per state (every job).
    pub jobs_by_state: BTreeMap<String, u64>,
    /// Per-job series.
    pub jobs: Vec<JobSeries>,
    /// (queue name, depth).
    pub queues: Vec<(&'static str, QueueDepth)>,
    /// Workers per state.
    pub workers_by_state: BTreeMap<String, u64>,
    /// AWS requests of every process, by service and operation.
    pub requests: Vec<RequestCount>,
    /// The manager's failures per part (analytics, queue, store, disk) since it started.
    pub manager_errors: BTreeMap<String, u64>,
}

impl JobService {
    /// Reads what `/metrics` shows.
    pub async fn metrics(&self) -> Result<MetricsSnapshot, ServiceError> {
        let grid = self.manager().grid();
        let analytics = &grid.analytics;
        let mut snapshot = MetricsSnapshot::default();
        // Counts and a bounded page of jobs, never the whole history.
        for state in JobState::ALL {
            let query = JobQuery { state: Some(state), name: None, limit: 0 };
            snapshot.jobs_by_state.insert(state.as_str().to_owned(), analytics.job_list(&query).await?.total);
        }
        let active = analytics.active_jobs().await?;
        let newest =
            JobQuery { state: None, name: None, limit: u32::try_from(RECENT_JOBS + active.len()).unwrap_or(u32::MAX) };
        let recent =
            analytics.job_list(&newest).await?.jobs.into_iter().filter(|job| job.state.is_terminal()).take(RECENT_JOBS);
        let jobs: Vec<_> = active.into_iter().chain(recent).collect();
        for job in &jobs {
            let mut series = JobSeries { job: job.id.clone(), ..JobSeries::default() };
            for stage in analytics.stages(&job.id).await? {
                let settled = stage.done + stage.failed + stage.retrying;
                let mut states = vec![("done", stage.done), ("failed", stage.failed), ("retrying", stage.retrying)];
                if let Some(expected) = stage.expected {
                    states.push(("waiting", expected.saturating_sub(settled)));
                }
                series.tasks.extend(states.into_iter().map(|(state, count)| (stage.name.clone(), state, count)));
            }
            for stage in analytics.task_times(&job.id).await? {
                series.times.merge(&stage.histogram);
            }
            snapshot.jobs.push(series);
        }
        let depth = |queue: &std::sync::Arc<dyn crate::queue::TaskQueue>| {
            let queue = queue.clone();
            async move { queue.depth().await.map_err(crate::manager::ManagerError::from) }
        };
        snapshot.queues = vec![("input", depth(&grid.tasks).await?), ("output", depth(&grid.chain).await?)];
        for worker in analytics.workers().await? {
            *snapshot.workers_by_state.entry(worker.state).or_default() += 1;
        }
        snapshot.requests = analytics.request_totals().await?;
        snapshot.manager_errors = self.manager().error_counts();
        Ok(snapshot)
    }
}

impl MetricsSnapshot {
    /// The scrape's body, in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::with_prefix("batchgrid");
        registry.register_collector(Box::new(self.clone()));
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &registry)?;
        Ok(body)
    }
}

/// A gauge's or counter's value for the encoder.
#[derive(Debug)]
struct Value(MetricType, u64);

impl EncodeMetric for Value {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error> {
        let value = i64::try_from(self.1).unwrap_or(i64::MAX);
        match self.0 {
            MetricType::Counter => encoder.encode_counter::<NoLabelSet, _, u64>(&self.1, None),
            _ => encoder.encode_gauge(&value),
        }
    }

    fn metric_type(&self) -> MetricType {
        self.0
    }
}

/// A float gauge (dollars).
#[derive(Debug)]
struct Float(f64);

impl EncodeMetric for Float {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.0)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// Each label set with its value, under one metric name.
fn family<L: prometheus_client::encoding::EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, unit, kind)?;
    for (labels, value) in samples {
        Value(kind, value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The histogram of `times`, as (upper bound in seconds, count in that bucket alone): the
/// encoder makes them cumulative. A store bucket that straddles a bound counts above it.
fn duration_buckets(times: &TimeHistogram) -> Vec<(f64, u64)> {
    let mut buckets = Vec::with_capacity(DURATION_BUCKETS.len() + 1);
    let mut below = 0;
    for bound in DURATION_BUCKETS {
        let at_most = times.at_most((bound * 1000.0) as u64);
        buckets.push((bound, at_most - below));
        below = at_most;
    }
    // The encoder writes `+Inf` for `f64::MAX`, the bound prometheus-client's own histograms end with.
    buckets.push((f64::MAX, times.count() - below));
    buckets
}

impl Collector for MetricsSnapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        family(
            &mut encoder,
            "jobs",
            "Jobs by state.",
            None,
            MetricType::Gauge,
            self.jobs_by_state.iter().map(|(state, count)| (vec![("state", state.clone())], *count)),
        )?;
        family(
            &mut encoder,
            "tasks",
            "Tasks of the active and recent jobs, by job, stage and state (waiting: not yet settled).",
            None,
            MetricType::Gauge,
            self.jobs.iter().flat_map(|job| {
                job.tasks.iter().map(|(stage, state, count)| {
                    (vec![("job", job.job.clone()), ("stage", stage.clone()), ("state", (*state).to_owned())], *count)
                })
            }),
        )?;
        let mut histogram = encoder.encode_descriptor(
            "task_duration",
            "Durations of the done tasks of the active and recent jobs.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for job in &self.jobs {
            let labels = vec![("job", job.job.clone())];
            let sum = job.times.sum_ms() as f64 / 1000.0;
            let buckets = duration_buckets(&job.times);
            histogram.encode_family(&labels)?.encode_histogram::<NoLabelSet>(sum, job.times.count(), &buckets, None)?;
        }
        family(
            &mut encoder,
            "queue_messages",
            "Messages in the task queues: visible, in flight (received or delayed), dead-lettered.",
            None,
            MetricType::Gauge,
            self.queues.iter().flat_map(|(queue, depth)| {
                [("visible", depth.visible), ("in_flight", depth.in_flight), ("dead", depth.dead)]
                    .map(|(state, count)| (vec![("queue", (*queue).to_owned()), ("state", state.to_owned())], count))
            }),
        )?;
        family(
            &mut encoder,
            "workers",
            "Workers by state, as they last reported.",
            None,
            MetricType::Gauge,
            self.workers_by_state.iter().map(|(state, count)| (vec![("state", state.clone())], *count)),
        )?;
        family(
            &mut encoder,
            "aws_requests",
            "AWS requests of every grid process, by service and operation.",
            None,
            MetricType::Counter,
            self.requests
                .iter()
                .map(|r| (vec![("service", r.service.clone()), ("operation", r.operation.clone())], r.count)),
        )?;
        let mut cost = encoder.encode_descriptor(
            "aws_request_cost_dollars",
            "What those requests cost at list prices, by service (US dollars).",
            None,
            MetricType::Gauge,
        )?;
        let mut by_service: BTreeMap<&str, f64> = BTreeMap::new();
        for request in &self.requests {
            if let Some(price) = price_of(&request.service, &request.operation) {
                *by_service.entry(&request.service).or_default() += price * request.count as f64;
            }
        }
        for (service, dollars) in by_service {
            Float(dollars).encode(cost.encode_family(&vec![("service", service.to_owned())])?)?;
        }
        family(
            &mut encoder,
            "manager_errors",
            "Failures the manager met and retried since it started, by the part that failed.",
            None,
            MetricType::Counter,
            self.manager_errors.iter().map(|(part, count)| (vec![("part", part.clone())], *count)),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
