//! One-off runs (`submit --at`, `--in`): a job stored as a schedule with one fire time, so it
//! fires through the same exactly-once claim as any occurrence, by whichever manager passes
//! first after its time, and is listed, shown and deleted with the schedules. Once fired it is
//! paused, and never looked at again.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::dependencies::AfterOrigin;
use super::{JobService, ServiceError};
use crate::analytics::ScheduleRecord;
use crate::spec::{parse_job_with_policy, JobSpec, Overrides, ScheduleSpec, SpecError};

/// The answer to a submission with a start time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deferred {
    /// The schedule holding the run (`schedule show NAME` names its job once it has fired).
    pub schedule: String,
    /// When it runs, RFC 3339.
    pub at: String,
}

/// Parses a start time: RFC 3339 with its offset, the seconds optional
/// (`2026-12-31T23:00+01:00`). A time without an offset is refused: it would mean the
/// manager's zone, which the caller cannot see.
pub fn parse_at(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M%:z"))
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("`{text}` is not a time with an offset, such as 2026-12-31T23:00+01:00"))
}

impl JobService {
    /// Validates a job document and stores it to run once at `at`; a time not after `now` is
    /// refused, naming `field` (`--at`, `?at=`).
    pub async fn submit_at(
        &self,
        text: &str,
        origin: &str,
        overrides: &Overrides,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Deferred, ServiceError> {
        // Kept to the millisecond, as stored: what is answered is what fires.
        let at = DateTime::<Utc>::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at);
        if at <= now {
            return Err(ServiceError::BadJob(SpecError {
                origin: origin.to_owned(),
                position: None,
                field: "at".into(),
                message: format!("{} is in the past (it is now {})", at.to_rfc3339(), now.to_rfc3339()),
            }));
        }
        let mut spec = parse_job_with_policy(text, origin, &self.base_dir, overrides, &self.input_policy)?;
        spec.refuse_if_scheduled(origin)?;
        spec.check_against_grid(self.manager.grid().tasks.max_receives(), Some(text), origin)?;
        let after_text = overrides.after.is_empty().then_some(text);
        self.resolve_after(&mut spec, &AfterOrigin { origin, text: after_text }).await?;
        spec.schedule = Some(Box::new(ScheduleSpec::once(at.timestamp_millis())));
        let name = format!("{}-at-{}", spec.name, ulid::Ulid::new().to_string().to_lowercase());
        let record = ScheduleRecord {
            name: name.clone(),
            spec: serde_json::to_string(&spec).unwrap_or_default(),
            paused: false,
            watermark: now.timestamp_millis(),
            created_at: now.timestamp_millis(),
            updated_at: now.timestamp_millis(),
        };
        self.manager.grid().analytics.create_schedule(&record).await?;
        tracing::info!(schedule = %name, at = %at.to_rfc3339(), "one-off run stored");
        Ok(Deferred { schedule: name, at: at.to_rfc3339() })
    }

    /// Fires a one-off run once `now` has reached its time (late if the managers were all
    /// down then); the claim makes it once however many managers pass. Returns whether this
    /// manager claimed it.
    pub(super) async fn fire_once(
        self: &Arc<Self>,
        record: &ScheduleRecord,
        spec: &JobSpec,
        at: i64,
        now: DateTime<Utc>,
    ) -> Result<usize, ServiceError> {
        if now.timestamp_millis() < at {
            return Ok(0);
        }
        let Some(fire_time) = DateTime::<Utc>::from_timestamp_millis(at) else { return Ok(0) };
        let claimed = self.fire_occurrence(&record.name, spec, fire_time.with_timezone(&chrono_tz::UTC), false).await?;
        // Done with, whoever claimed it: later passes skip it.
        self.manager.grid().analytics.set_schedule_paused(&record.name, true, now.timestamp_millis()).await?;
        Ok(usize::from(claimed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_times_need_an_offset_and_may_omit_seconds() {
        let expected = "2026-12-31T22:00:00+00:00";
        assert_eq!(parse_at("2026-12-31T23:00+01:00").map(|t| t.to_rfc3339()), Ok(expected.to_owned()));
        assert_eq!(parse_at("2026-12-31T23:00:00+01:00").map(|t| t.to_rfc3339()), Ok(expected.to_owned()));
        assert_eq!(parse_at(" 2026-12-31T22:00:00Z ").map(|t| t.to_rfc3339()), Ok(expected.to_owned()));
        let error = parse_at("2026-12-31T23:00").expect_err("no offset");
        assert!(error.contains("offset"), "{error}");
        assert!(parse_at("tomorrow").is_err());
    }
}
