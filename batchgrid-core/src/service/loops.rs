//! The manager service's periodic loops, started here as `batchgrid manager` starts them: the
//! schedule pass, the dashboard's grid samples and, where there is a worker group to size, the
//! autoscaler. Each paces itself by the manager's [`Activity`](crate::manager::Activity): at
//! its own interval while the manager is busy, not at all while it is quiet.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::JobService;
use crate::scaling::Autoscaler;

/// How often the manager looks for due schedule occurrences by default: well inside the minute
/// a fire time may be late and still count as on time (`catch_up: skip`).
pub const SCHEDULE_PASS: Duration = Duration::from_secs(5);

/// How often the loops run while the manager is busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopIntervals {
    /// Between schedule passes.
    pub schedules: Duration,
    /// Between the dashboard's grid samples.
    pub samples: Duration,
}

impl Default for LoopIntervals {
    fn default() -> Self {
        Self { schedules: SCHEDULE_PASS, samples: super::dashboard::samples::SAMPLE_EVERY }
    }
}

/// The running loops; dropping this stops them.
#[derive(Debug)]
pub struct Loops {
    handles: Vec<JoinHandle<()>>,
}

impl Drop for Loops {
    fn drop(&mut self) {
        for handle in &self.handles {
            handle.abort();
        }
    }
}

/// Starts the service's loops: schedules and samples every `intervals` says, and `autoscaler`
/// (its own interval) if given, told the manager's activity.
pub fn start(service: &Arc<JobService>, autoscaler: Option<Autoscaler>, intervals: LoopIntervals) -> Loops {
    // Schedules fire from every manager; each occurrence's row makes it fire once.
    let mut handles = vec![tokio::spawn(service.clone().fire_schedules_every(intervals.schedules))];
    // The dashboard's queue depth and workers over time.
    handles.push(super::dashboard::samples::start_sampling_every(service.clone(), intervals.samples));
    if let Some(autoscaler) = autoscaler {
        let autoscaler = autoscaler.with_activity(service.manager().activity().clone());
        handles.push(tokio::spawn(autoscaler.run(std::future::pending())));
    }
    Loops { handles }
}
