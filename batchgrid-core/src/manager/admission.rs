//! Admission: priorities and fair share on queues that have neither.
//!
//! SQS delivers roughly in the order messages were sent, and a queue holding 200,000 tasks of
//! one job makes every job sent after it wait for all of them. So while a manager drives jobs,
//! their first-stage tasks do not go to the queue when the input is split: they wait in the
//! analytics store ([`crate::analytics::AdmissionStore`]), and one loop per manager admits
//! them in small windows:
//!
//! - The window is what the workers can take soon: the tasks they hold now (the task queue's
//!   in-flight count) plus a little ready work, enough for [`AdmissionSettings::ready_horizon`]
//!   at the observed completion rate and never less than [`AdmissionSettings::min_ready`]. So
//!   the queue never runs dry between passes, yet a newly arrived job waits behind at most that
//!   much ready work of others.
//! - The window is shared out by priority, highest first, each priority class taking what its
//!   jobs can use before the next gets any; within a class, jobs of equal priority get equal
//!   shares (water-filling: a job that needs less than its share leaves the rest to the
//!   others). A job's tasks already in the queue count against its share.
//! - Each pass sends what each job is short of, interleaved job by job so that equal shares
//!   also reach the workers interleaved.
//! - A paused job gets no share: nothing more of it is sent; what is already queued is given
//!   back by the workers that receive it (see [`crate::worker`]).
//!
//! Later stages are not admitted: their tasks are forwarded by workers through the output
//! queue as their inputs complete, and a reduce is one task. Their share of the workers follows
//! from their jobs' first stages; a paused job's later-stage tasks are given back like any.
//!
//! Delivery stays at least once: tasks are sent and only then marked admitted, so a crash in
//! between sends them again (they run twice and count once), and two managers on one store may
//! both send a task. The backlog the autoscaler sizes the group for includes the pending tasks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Manager, ManagerError};
use crate::analytics::JobAdmission;
use crate::queue::MAX_BATCH;

/// How long the queue's in-flight count is trusted: on SQS each read is a billed request, and
/// the count moves slowly next to a pass.
const HELD_TTL: Duration = Duration::from_secs(2);
/// The shortest time between passes woken by new tasks.
const WOKEN_GAP: Duration = Duration::from_millis(10);

/// How admission behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionSettings {
    /// Time between passes.
    pub every: Duration,
    /// Ready tasks the window always allows beyond those the workers hold.
    pub min_ready: u64,
    /// How much ready work beyond the workers' the window allows, at the observed rate.
    pub ready_horizon: Duration,
    /// The largest window, whatever the rate.
    pub max_window: u64,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        Self {
            every: Duration::from_millis(100),
            // Enough that the queue does not run dry between passes, which on SQS means empty
            // and part-filled receives (each a billed request), while a job that arrives waits
            // behind no more than about half a second of others' work.
            min_ready: 40,
            ready_horizon: Duration::from_millis(500),
            max_window: 20_000,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdmissionPass {
    /// The window the pass shared out.
    pub window: u64,
    /// Tasks sent, per job.
    pub admitted: Vec<(String, u64)>,
}

/// A manager's admission state, shared by its clones.
#[derive(Debug, Default)]
pub(super) struct Admission {
    /// Jobs being driven by this manager; the loop runs while there are any.
    drivers: AtomicUsize,
    /// Whether the loop runs; changed only under this lock, with `drivers` read under it.
    running: Mutex<bool>,
    /// Completions seen per job and when, for the completion rate.
    rate: Mutex<RateMeter>,
    /// One pass at a time in this process; holds the queue's in-flight count and when it was
    /// read.
    pass: tokio::sync::Mutex<Option<(u64, Instant)>>,
    /// Rung when this process adds pending tasks, so a new job's first tasks are admitted at
    /// once rather than at the next pass.
    added: tokio::sync::Notify,
}

impl Admission {
    /// Wakes the admission loop: tasks are pending.
    pub(super) fn tasks_added(&self) {
        self.added.notify_one();
    }

    /// Whether first-stage tasks go through admission: while this manager drives a job.
    pub(super) fn is_active(&self) -> bool {
        self.drivers.load(Ordering::SeqCst) > 0
    }
}

/// Keeps the admission loop running while it lives.
pub(super) struct AdmissionGuard {
    admission: Arc<Admission>,
}

impl Drop for AdmissionGuard {
    fn drop(&mut self) {
        self.admission.drivers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Default)]
struct RateMeter {
    settled: HashMap<String, u64>,
    at: Option<Instant>,
    /// Tasks settled per second, smoothed.
    per_second: f64,
}

impl RateMeter {
    fn observe(&mut self, jobs: &[JobAdmission]) -> f64 {
        let now = Instant::now();
        let mut delta = 0u64;
        let mut seen = HashMap::with_capacity(jobs.len());
        for job in jobs {
            let before = self.settled.get(&job.job_id).copied().unwrap_or(job.settled);
            delta += job.settled.saturating_sub(before);
            seen.insert(job.job_id.clone(), job.settled);
        }
        if let Some(at) = self.at {
            let elapsed = now.duration_since(at).as_secs_f64();
            if elapsed > 0.0 {
                self.per_second = 0.7 * self.per_second + 0.3 * (delta as f64 / elapsed);
            }
        }
        self.settled = seen;
        self.at = Some(now);
        self.per_second
    }
}

/// How many tasks of each job to admit now: `window` (tasks the workers hold or will soon
/// take) shared by priority, highest first, and equally within a priority; a job's outstanding
/// tasks count against its share. Paused jobs get nothing. Returns (index into `jobs`, count).
pub fn allocate(jobs: &[JobAdmission], window: u64) -> Vec<(usize, u64)> {
    let mut order: Vec<usize> = (0..jobs.len()).filter(|&i| !jobs[i].paused && jobs[i].pending > 0).collect();
    // Highest priority first; among equals, the older job first (it gets any remainder).
    order.sort_by(|&a, &b| {
        (jobs[b].priority, jobs[a].submitted_at, &jobs[a].job_id).cmp(&(
            jobs[a].priority,
            jobs[b].submitted_at,
            &jobs[b].job_id,
        ))
    });
    // Outstanding tasks of jobs with nothing left to admit still hold workers.
    let mut capacity = window
        .saturating_sub(jobs.iter().filter(|j| j.paused || j.pending == 0).map(JobAdmission::outstanding).sum::<u64>());
    let mut admit = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let priority = jobs[order[start]].priority;
        let end = order[start..].iter().position(|&i| jobs[i].priority != priority).map_or(order.len(), |n| start + n);
        // Water-filling in ascending demand: each takes at most an equal share of what is left.
        let mut class: Vec<usize> = order[start..end].to_vec();
        class.sort_by_key(|&i| jobs[i].outstanding() + jobs[i].pending);
        let mut shares: Vec<(usize, u64)> = Vec::with_capacity(class.len());
        for (taken, &i) in class.iter().enumerate() {
            let left = (class.len() - taken) as u64;
            let share = (capacity / left).min(jobs[i].outstanding() + jobs[i].pending);
            capacity -= share;
            shares.push((i, share));
        }
        // Give out what integer division left, one each, oldest first.
        for &i in &order[start..end] {
            if capacity == 0 {
                break;
            }
            if let Some(entry) =
                shares.iter_mut().find(|(j, share)| *j == i && *share < jobs[i].outstanding() + jobs[i].pending)
            {
                entry.1 += 1;
                capacity -= 1;
            }
        }
        for &i in &order[start..end] {
            let share = shares.iter().find(|(j, _)| *j == i).map_or(0, |s| s.1);
            let count = share.saturating_sub(jobs[i].outstanding()).min(jobs[i].pending);
            if count > 0 {
                admit.push((i, count));
            }
        }
        start = end;
    }
    admit
}

/// Interleaves the jobs' lists, one item of each in turn, so equal shares reach the queue (and
/// the workers) side by side rather than one job's batch after another's.
fn interleave<T>(lists: Vec<Vec<T>>) -> Vec<T> {
    let mut iterators: Vec<_> = lists.into_iter().map(Vec::into_iter).collect();
    let mut out = Vec::new();
    loop {
        let before = out.len();
        for iterator in &mut iterators {
            out.extend(iterator.next());
        }
        if out.len() == before {
            return out;
        }
    }
}

impl Manager {
    /// Keeps the admission loop running for as long as the guard lives: the first job driven
    /// starts it, and it stops on the pass after the last job's guard has gone.
    pub(super) fn admitting(&self) -> AdmissionGuard {
        let admission = self.admission.clone();
        admission.drivers.fetch_add(1, Ordering::SeqCst);
        let start = admission.running.lock().map(|mut running| !std::mem::replace(&mut *running, true));
        if start.unwrap_or(false) {
            let manager = self.clone();
            tokio::spawn(async move { manager.admission_loop().await });
        }
        AdmissionGuard { admission }
    }

    async fn admission_loop(self) {
        // The part of the grid the last failed pass could not reach, reported in health.
        let mut failing: Option<&'static str> = None;
        loop {
            {
                let Ok(mut running) = self.admission.running.lock() else { return };
                if self.admission.drivers.load(Ordering::SeqCst) == 0 {
                    *running = false;
                    return;
                }
            }
            match self.admit_once().await {
                Ok(_) => {
                    if let Some(part) = failing.take() {
                        self.health.recovered(part);
                    }
                }
                Err(error) => {
                    // Retried on the next pass; logged once per outage.
                    if failing.is_none() {
                        tracing::warn!(%error, "admission pass failed; retrying");
                    }
                    failing = Some(error.part());
                    self.health.failed(&error);
                }
            }
            // Woken by new tasks, a pass follows at once, but no sooner than WOKEN_GAP after
            // the last: a long split hands tasks over in many small batches.
            let last_pass = tokio::time::Instant::now();
            tokio::select! {
                () = tokio::time::sleep_until(last_pass + self.admission_settings.every) => {}
                () = self.admission.added.notified() => tokio::time::sleep_until(last_pass + WOKEN_GAP).await,
            }
        }
    }

    /// One admission pass: reads every live job's figures, sizes the window, and sends each
    /// job's share of it. Public for embedders that drive jobs themselves.
    pub async fn admit_once(&self) -> Result<AdmissionPass, ManagerError> {
        let mut held_cache = self.admission.pass.lock().await;
        let analytics = &self.grid.analytics;
        let jobs = analytics.admissions().await?;
        let rate = self.admission.rate.lock().map(|mut meter| meter.observe(&jobs)).unwrap_or(0.0);
        if !jobs.iter().any(|j| j.pending > 0 && !j.paused) {
            return Ok(AdmissionPass::default());
        }
        let settings = &self.admission_settings;
        let held = match *held_cache {
            Some((held, at)) if at.elapsed() < HELD_TTL => held,
            _ => {
                let held = self.grid.tasks.depth().await?.in_flight;
                *held_cache = Some((held, Instant::now()));
                held
            }
        };
        let ready = ((rate * settings.ready_horizon.as_secs_f64()) as u64).max(settings.min_ready);
        let window = (held + ready).min(settings.max_window);
        let shares = allocate(&jobs, window);
        let mut lists = Vec::with_capacity(shares.len());
        for &(index, count) in &shares {
            let tasks =
                analytics.next_pending(&jobs[index].job_id, usize::try_from(count).unwrap_or(usize::MAX)).await?;
            lists.push(tasks.into_iter().map(|task| (index, task)).collect::<Vec<_>>());
        }
        let mut tasks = interleave(lists);
        // Whole batches of ten (one request each on SQS); the rest waits for the next pass,
        // unless it is all there is.
        let pending: u64 = shares.iter().map(|&(index, _)| jobs[index].pending).sum();
        if tasks.len() as u64 != pending && tasks.len() > MAX_BATCH {
            tasks.truncate(tasks.len() / MAX_BATCH * MAX_BATCH);
        }
        if tasks.is_empty() {
            return Ok(AdmissionPass { window, admitted: Vec::new() });
        }
        self.enqueue(&self.grid.tasks, tasks.iter().map(|(_, task)| task.body.clone()).collect()).await?;
        // Marked only once sent: a crash in between sends them again, never loses them.
        let mut admitted = Vec::new();
        for &(index, _) in &shares {
            let keys: Vec<(u32, String)> =
                tasks.iter().filter(|(i, _)| *i == index).map(|(_, t)| (t.stage, t.task_id.clone())).collect();
            if !keys.is_empty() {
                analytics.mark_admitted(&jobs[index].job_id, &keys).await?;
                admitted.push((jobs[index].job_id.clone(), keys.len() as u64));
            }
        }
        Ok(AdmissionPass { window, admitted })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, priority: u8, pending: u64, admitted: u64, settled: u64) -> JobAdmission {
        JobAdmission {
            job_id: id.into(),
            priority,
            paused: false,
            pending,
            admitted,
            settled,
            submitted_at: id.len() as i64,
        }
    }

    fn named(jobs: &[JobAdmission], shares: Vec<(usize, u64)>) -> Vec<(String, u64)> {
        shares.into_iter().map(|(i, n)| (jobs[i].job_id.clone(), n)).collect()
    }

    #[test]
    fn a_higher_priority_takes_the_window_first() {
        // The low job holds the whole window; the high one arrives with plenty to do.
        let jobs = [job("low", 10, 190_000, 40, 0), job("high", 90, 100, 0, 0)];
        assert_eq!(named(&jobs, allocate(&jobs, 40)), [("high".to_owned(), 40)], "low gets nothing more");
        // Once the high job needs less than the window, the rest goes to the low one.
        let jobs = [job("low", 10, 190_000, 10, 0), job("high", 90, 5, 0, 0)];
        assert_eq!(named(&jobs, allocate(&jobs, 40)), [("high".to_owned(), 5), ("low".to_owned(), 25)]);
    }

    #[test]
    fn equal_priorities_share_equally_and_outstanding_work_counts() {
        let jobs = [job("a", 50, 1000, 0, 0), job("bb", 50, 1000, 0, 0)];
        assert_eq!(named(&jobs, allocate(&jobs, 40)), [("a".to_owned(), 20), ("bb".to_owned(), 20)]);
        // `a` already has 30 in the queue: it is topped up to its share of 20 only later.
        let jobs = [job("a", 50, 1000, 30, 0), job("bb", 50, 1000, 0, 0)];
        assert_eq!(named(&jobs, allocate(&jobs, 40)), [("bb".to_owned(), 20)]);
        // A job that needs little leaves the rest of its share to the other.
        let jobs = [job("a", 50, 4, 0, 0), job("bb", 50, 1000, 0, 0)];
        assert_eq!(named(&jobs, allocate(&jobs, 40)), [("a".to_owned(), 4), ("bb".to_owned(), 36)]);
    }

    #[test]
    fn paused_jobs_get_nothing_and_still_hold_what_they_have() {
        let mut paused = job("p", 90, 1000, 15, 5);
        paused.paused = true;
        let jobs = [paused, job("other", 10, 1000, 0, 0)];
        assert_eq!(named(&jobs, allocate(&jobs, 40)), [("other".to_owned(), 30)]);
    }

    #[test]
    fn interleaving_alternates_jobs() {
        assert_eq!(interleave(vec![vec![1, 2, 3], vec![10], vec![20, 21]]), [1, 10, 20, 2, 21, 3]);
    }
}
