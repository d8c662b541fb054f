//! Schedules in the manager service: added from a job document with a `schedule:` block,
//! listed, paused, resumed, triggered, deleted; and [`JobService::fire_schedules`], the pass
//! that fires due occurrences through the same submit path as any job.
//!
//! Exactly once per occurrence: before submitting anything a manager inserts the occurrence's
//! (schedule, fire time) row, and only the manager whose insert created it goes on; later
//! moves of an occurrence (queued to started) are compare-and-sets on its state.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::dependencies::AfterOrigin;
use super::{JobService, ServiceError};
use crate::analytics::{OccurrenceRecord, OccurrenceState, ScheduleRecord};
use crate::manager::quiet::NextDue;
use crate::schedule::catch_up;
use crate::schedule::overlap::{self, OverlapDecision};
use crate::schedule::vars::Occurrence;
use crate::spec::{parse_job_with_policy, JobSpec, Overrides, SpecError};

/// Occurrences read back to find a schedule's running and queued ones.
const RECENT_OCCURRENCES: u32 = 100;

/// How long after a due time its pass comes: the wall clock and the timer may disagree by a
/// little, and a pass a moment early would find nothing due.
const DUE_SLACK: std::time::Duration = std::time::Duration::from_millis(20);

/// A schedule as the API reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleStatus {
    /// Its name.
    pub name: String,
    /// The cron expression.
    pub cron: String,
    /// Its zone.
    pub tz: String,
    /// Whether it is paused.
    pub paused: bool,
    /// The next fire times (RFC 3339 with offsets), none while paused.
    pub next: Vec<String>,
    /// Recent occurrences, newest first (only in `show`).
    #[serde(default)]
    pub occurrences: Vec<OccurrenceRecord>,
}

fn bad(origin: &str, field: &str, message: String) -> ServiceError {
    ServiceError::BadJob(SpecError { origin: origin.to_owned(), position: None, field: field.to_owned(), message })
}

fn spec_of(record: &ScheduleRecord) -> Result<(JobSpec, crate::spec::ScheduleSpec), ServiceError> {
    let corrupt =
        |message: String| crate::analytics::AnalyticsError::Corrupt(format!("schedule {}: {message}", record.name));
    let spec: JobSpec = serde_json::from_str(&record.spec).map_err(|e| corrupt(e.to_string()))?;
    let block = spec.schedule.as_deref().cloned().ok_or_else(|| corrupt("no schedule block".into()))?;
    Ok((spec, block))
}

/// When the schedules next need the manager, after a pass at `now` has fired what was due:
/// the earliest next fire time of a live schedule (less its warm-up, when the autoscaler raises
/// the group before it) or of a one-off run still to come. A schedule that cannot be read is
/// left out: firing it fails the same way every pass, and says so.
pub(crate) fn next_due(records: &[ScheduleRecord], now: DateTime<Utc>) -> NextDue {
    let due = records.iter().filter(|record| !record.paused).filter_map(|record| {
        let (_, block) = spec_of(record).ok()?;
        if let Some(at) = block.once_at {
            // At or before `now` it has just fired (and been paused) in this pass.
            return DateTime::<Utc>::from_timestamp_millis(at).filter(|at| *at > now);
        }
        let fire_time = block.schedule().ok()?.next_after(now).ok().flatten()?.with_timezone(&Utc);
        let lead = block.warm_up.and_then(|lead| chrono::Duration::from_std(lead).ok()).unwrap_or_default();
        Some(fire_time.checked_sub_signed(lead).unwrap_or(fire_time))
    });
    due.min().map_or(NextDue::Never, NextDue::At)
}

/// Whether a schedule's firing failed on the grid (retried next pass) rather than on the
/// schedule itself (a stored spec that cannot be read).
fn is_infrastructure(error: &ServiceError) -> bool {
    use crate::analytics::AnalyticsError;
    use crate::manager::ManagerError;
    match error {
        ServiceError::Manager(ManagerError::Analytics(AnalyticsError::Corrupt(_))) => false,
        ServiceError::Manager(error) => !error.is_job_fault(),
        _ => false,
    }
}

fn millis(time: &DateTime<Tz>) -> i64 {
    time.timestamp_millis()
}

impl JobService {
    /// Adds a schedule from a job document whose `schedule:` block says when it fires; it is
    /// named after the job. The first fire time considered is the first after `now`.
    pub async fn add_schedule(
        &self,
        text: &str,
        origin: &str,
        now: DateTime<Utc>,
    ) -> Result<ScheduleStatus, ServiceError> {
        let spec = parse_job_with_policy(text, origin, &self.base_dir, &Overrides::default(), &self.input_policy)?;
        spec.check_against_grid(self.manager.grid().tasks.max_receives(), Some(text), origin)?;
        if spec.schedule.is_none() {
            return Err(bad(origin, "schedule", "the job has no `schedule:` block saying when it fires".into()));
        }
        let record = ScheduleRecord {
            name: spec.name.clone(),
            spec: serde_json::to_string(&spec).unwrap_or_default(),
            paused: false,
            watermark: now.timestamp_millis(),
            created_at: now.timestamp_millis(),
            updated_at: now.timestamp_millis(),
        };
        if !self.manager.grid().analytics.create_schedule(&record).await? {
            return Err(bad(origin, "name", format!("a schedule named `{}` exists; delete it first", spec.name)));
        }
        tracing::info!(schedule = %record.name, "schedule added");
        self.schedule_status(&record, now, false).await
    }

    /// Every schedule, by name, with its next fire time.
    pub async fn schedules(&self, now: DateTime<Utc>) -> Result<Vec<ScheduleStatus>, ServiceError> {
        let mut statuses = Vec::new();
        for record in self.manager.grid().analytics.schedules().await? {
            statuses.push(self.schedule_status(&record, now, false).await?);
        }
        Ok(statuses)
    }

    /// Every schedule, by name, with its next fire times and recent occurrences (the
    /// dashboard's grid page), each record read once.
    pub async fn schedules_with_runs(&self, now: DateTime<Utc>) -> Result<Vec<ScheduleStatus>, ServiceError> {
        let mut statuses = Vec::new();
        for record in self.manager.grid().analytics.schedules().await? {
            statuses.push(self.schedule_status(&record, now, true).await?);
        }
        Ok(statuses)
    }

    /// One schedule with its next fire times and recent occurrences.
    pub async fn schedule(&self, name: &str, now: DateTime<Utc>) -> Result<ScheduleStatus, ServiceError> {
        let record = self.schedule_record(name).await?;
        self.schedule_status(&record, now, true).await
    }

    async fn schedule_record(&self, name: &str) -> Result<ScheduleRecord, ServiceError> {
        let record = self.manager.grid().analytics.schedule(name).await?;
        record.ok_or_else(|| ServiceError::NotFound(format!("schedule {name}")))
    }

    async fn schedule_status(
        &self,
        record: &ScheduleRecord,
        now: DateTime<Utc>,
        with_occurrences: bool,
    ) -> Result<ScheduleStatus, ServiceError> {
        let (_, block) = spec_of(record)?;
        let next = if record.paused {
            Vec::new()
        } else if let Some(at) = block.once_at {
            DateTime::<Utc>::from_timestamp_millis(at).map(|t| t.to_rfc3339()).into_iter().collect()
        } else {
            let schedule = block.schedule().map_err(|e| bad(&record.name, "schedule", e.to_string()))?;
            let count = if with_occurrences { 5 } else { 1 };
            let times: Result<Vec<_>, _> = schedule.iter_after(now).take(count).collect();
            times.map_err(|e| bad(&record.name, "schedule", e.to_string()))?.iter().map(|t| t.to_rfc3339()).collect()
        };
        let occurrences = if with_occurrences {
            self.manager.grid().analytics.occurrences(&record.name, 20).await?
        } else {
            Vec::new()
        };
        Ok(ScheduleStatus {
            name: record.name.clone(),
            cron: block.cron,
            tz: block.tz,
            paused: record.paused,
            next,
            occurrences,
        })
    }

    /// Pauses (`true`) or resumes a schedule; fire times passed while paused are not caught up.
    pub async fn pause_schedule(&self, name: &str, paused: bool, now: DateTime<Utc>) -> Result<(), ServiceError> {
        let analytics = &self.manager.grid().analytics;
        if !analytics.set_schedule_paused(name, paused, now.timestamp_millis()).await? {
            return Err(ServiceError::NotFound(format!("schedule {name}")));
        }
        Ok(())
    }

    /// Deletes a schedule and its occurrences; jobs it started go on.
    pub async fn delete_schedule(&self, name: &str) -> Result<(), ServiceError> {
        if !self.manager.grid().analytics.delete_schedule(name).await? {
            return Err(ServiceError::NotFound(format!("schedule {name}")));
        }
        Ok(())
    }

    /// Fires one occurrence now, outside the cron expression, under the schedule's overlap
    /// policy; its variables are those of `now` in the schedule's zone.
    pub async fn trigger_schedule(
        self: &Arc<Self>,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<OccurrenceRecord, ServiceError> {
        let record = self.schedule_record(name).await?;
        let (spec, block) = spec_of(&record)?;
        let zone = crate::schedule::parse_zone(&block.tz).map_err(|e| bad(name, "schedule.tz", e.to_string()))?;
        self.fire_occurrence(&record.name, &spec, now.with_timezone(&zone), true).await?;
        let occurrences = self.manager.grid().analytics.occurrences(name, RECENT_OCCURRENCES).await?;
        occurrences
            .into_iter()
            .find(|o| o.fire_time == now.timestamp_millis())
            .ok_or_else(|| ServiceError::NotFound(format!("schedule {name}: occurrence at {now}")))
    }

    /// Fires schedules every `every` until the task is dropped: the manager's clock loop. A
    /// pass that fails (the database away) is logged and the next one catches up, by the
    /// schedules' own catch-up policies. While the manager is quiet it makes no pass until it
    /// is woken or the next due time comes within the quiet horizon ([`crate::manager::quiet`]).
    pub async fn fire_schedules_every(self: Arc<Self>, every: std::time::Duration) {
        let activity = self.manager.activity().clone();
        let mut cadence = activity.cadence();
        loop {
            let now = DateTime::<Utc>::from(std::time::SystemTime::now());
            if let Err(error) = self.fire_schedules(now).await {
                tracing::warn!(%error, "firing schedules failed; retrying on the next pass");
            }
            // The next due time is known: the pass for it comes at that time, not up to `every`
            // after it (a little after, so that the pass finds it due).
            let until_due = match activity.outlook().next_due {
                NextDue::At(at) => {
                    (at - crate::manager::quiet::wall_clock()).to_std().ok().map(|wait| wait + DUE_SLACK)
                }
                NextDue::Never | NextDue::Unknown => None,
            };
            cadence.pace(until_due.map_or(every, |wait| wait.min(every))).await;
        }
    }

    /// One pass over every schedule at `now`: fires the due occurrences each catch-up policy
    /// keeps, starts queued ones whose turn has come, and moves the watermarks. Returns how many
    /// occurrences this manager claimed. One schedule's error is logged and does not stop the
    /// others. The schedules' next due time is left in the manager's activity; unknown after a
    /// pass the infrastructure cut short, so the manager stays busy and tries again.
    pub async fn fire_schedules(self: &Arc<Self>, now: DateTime<Utc>) -> Result<usize, ServiceError> {
        let activity = self.manager.activity();
        let records = match self.manager.grid().analytics.schedules().await {
            Ok(records) => records,
            Err(error) => {
                activity.set_next_due(NextDue::Unknown);
                return Err(error.into());
            }
        };
        let mut claimed = 0;
        let mut cut_short = false;
        for record in records.iter().filter(|record| !record.paused) {
            match self.fire_schedule(record, now).await {
                Ok(count) => claimed += count,
                Err(error) => {
                    // The schedule's own fault (a spec that cannot be read) fails every pass
                    // alike and must not keep the manager awake; the infrastructure's must.
                    cut_short |= is_infrastructure(&error);
                    tracing::warn!(schedule = %record.name, %error, "firing the schedule failed");
                }
            }
        }
        activity.set_next_due(if cut_short { NextDue::Unknown } else { next_due(&records, now) });
        Ok(claimed)
    }

    async fn fire_schedule(
        self: &Arc<Self>,
        record: &ScheduleRecord,
        now: DateTime<Utc>,
    ) -> Result<usize, ServiceError> {
        let (spec, block) = spec_of(record)?;
        if let Some(at) = block.once_at {
            return self.fire_once(record, &spec, at, now).await;
        }
        let schedule = block.schedule().map_err(|e| bad(&record.name, "schedule", e.to_string()))?;
        let watermark = DateTime::<Utc>::from_timestamp_millis(record.watermark).unwrap_or(now);
        let plan = catch_up::plan(&schedule, &block.catch_up_policy(), watermark, now)
            .map_err(|e| bad(&record.name, "schedule", e.to_string()))?;
        let mut claimed = 0;
        for fire_time in &plan.fire {
            if self.fire_occurrence(&record.name, &spec, *fire_time, false).await? {
                claimed += 1;
            }
        }
        self.manager.grid().analytics.advance_watermark(&record.name, plan.watermark.timestamp_millis()).await?;
        self.start_queued(&record.name, &spec, schedule.zone()).await?;
        Ok(claimed)
    }

    /// Claims an occurrence and, if this manager won it, acts on it under the overlap policy.
    pub(super) async fn fire_occurrence(
        self: &Arc<Self>,
        name: &str,
        spec: &JobSpec,
        fire_time: DateTime<Tz>,
        manual: bool,
    ) -> Result<bool, ServiceError> {
        let analytics = &self.manager.grid().analytics;
        let occurrence = OccurrenceRecord {
            schedule: name.to_owned(),
            fire_time: millis(&fire_time),
            state: OccurrenceState::Claimed,
            job_id: None,
            manual,
            reason: None,
            created_at: crate::db::now_millis(),
        };
        if !analytics.claim_occurrence(&occurrence).await? {
            // Another manager (or an earlier pass of this one) has it.
            return Ok(false);
        }
        let (running, queued) = self.running_and_queued(name).await?;
        let policy = spec.schedule.as_ref().map(|s| s.overlap).unwrap_or_default();
        let claimed = OccurrenceState::Claimed;
        match overlap::decide(policy, &running, queued.len()) {
            OverlapDecision::Start => self.start_occurrence(name, spec, fire_time, claimed).await?,
            OverlapDecision::Skip => {
                let reason = format!("skipped: {} still running (overlap: skip)", running.join(", "));
                analytics
                    .move_occurrence(name, millis(&fire_time), claimed, OccurrenceState::Skipped, None, Some(&reason))
                    .await?;
                tracing::info!(schedule = %name, fire_time = %fire_time.to_rfc3339(), "{reason}");
            }
            OverlapDecision::Queue => {
                analytics
                    .move_occurrence(name, millis(&fire_time), claimed, OccurrenceState::Queued, None, None)
                    .await?;
            }
            OverlapDecision::CancelThenStart(previous) => {
                for job_id in &previous {
                    self.manager.cancel(job_id).await?;
                    tracing::info!(schedule = %name, job = %job_id, "cancelled for the next occurrence (overlap: cancel_previous)");
                }
                self.start_occurrence(name, spec, fire_time, claimed).await?;
            }
        }
        Ok(true)
    }

    /// Starts the oldest queued occurrence once nothing of the schedule runs.
    async fn start_queued(self: &Arc<Self>, name: &str, spec: &JobSpec, zone: Tz) -> Result<(), ServiceError> {
        let (running, queued) = self.running_and_queued(name).await?;
        let Some(oldest) = queued.last() else { return Ok(()) };
        if !overlap::may_start_queued(running.len()) {
            return Ok(());
        }
        let Some(fire_time) = DateTime::<Utc>::from_timestamp_millis(oldest.fire_time) else { return Ok(()) };
        self.start_occurrence(name, spec, fire_time.with_timezone(&zone), OccurrenceState::Queued).await
    }

    /// The schedule's jobs still running, and its queued occurrences (newest first).
    async fn running_and_queued(&self, name: &str) -> Result<(Vec<String>, Vec<OccurrenceRecord>), ServiceError> {
        let analytics = &self.manager.grid().analytics;
        let mut running = Vec::new();
        let mut queued = Vec::new();
        for occurrence in analytics.occurrences(name, RECENT_OCCURRENCES).await? {
            match (occurrence.state, &occurrence.job_id) {
                (OccurrenceState::Started, Some(job_id)) => {
                    let live = analytics.job(job_id).await?.is_some_and(|job| !job.state.is_terminal());
                    if live {
                        running.push(job_id.clone());
                    }
                }
                (OccurrenceState::Queued, _) => queued.push(occurrence),
                _ => {}
            }
        }
        Ok((running, queued))
    }

    /// Submits the occurrence's job, moving it from `from` to started; an occurrence whose
    /// job cannot be made (its input missing this month) is recorded as failed, with why.
    async fn start_occurrence(
        self: &Arc<Self>,
        name: &str,
        spec: &JobSpec,
        fire_time: DateTime<Tz>,
        from: OccurrenceState,
    ) -> Result<(), ServiceError> {
        let analytics = &self.manager.grid().analytics;
        let at = millis(&fire_time);
        let run = match spec.for_occurrence(&Occurrence { fire_time }, &format!("schedule {name}")) {
            Ok(run) => run,
            Err(error) => {
                let reason = error.to_string();
                analytics.move_occurrence(name, at, from, OccurrenceState::Failed, None, Some(&reason)).await?;
                tracing::warn!(schedule = %name, %reason, "occurrence not started");
                return Ok(());
            }
        };
        if from != OccurrenceState::Claimed {
            // Take it first, so of two managers starting a queued occurrence only one submits.
            if !analytics.move_occurrence(name, at, from, OccurrenceState::Claimed, None, None).await? {
                return Ok(());
            }
        }
        let mut run = run;
        // A schedule's `after:` names the newest run of each job at this fire time.
        let origin = format!("schedule {name}");
        match self.resolve_after(&mut run, &AfterOrigin { origin: &origin, text: None }).await {
            Ok(()) => {}
            Err(ServiceError::BadJob(error)) => {
                let reason = error.to_string();
                analytics
                    .move_occurrence(name, at, OccurrenceState::Claimed, OccurrenceState::Failed, None, Some(&reason))
                    .await?;
                tracing::warn!(schedule = %name, %reason, "occurrence not started");
                return Ok(());
            }
            Err(other) => return Err(other),
        }
        let job_id = self.manager.submit(&run).await?;
        analytics
            .move_occurrence(name, at, OccurrenceState::Claimed, OccurrenceState::Started, Some(&job_id), None)
            .await?;
        tracing::info!(schedule = %name, job = %job_id, fire_time = %fire_time.to_rfc3339(), "occurrence started");
        self.start(job_id, run);
        Ok(())
    }
}
