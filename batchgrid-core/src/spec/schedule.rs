//! The `schedule:` block of a job file, and a scheduled job's occurrence variables.
//!
//! ```yaml
//! schedule:
//!   cron: "0 2 LW * *"          # required
//!   tz: Europe/Paris            # required: an IANA zone
//!   exclude: [2026-12-24, holidays/fr.txt]   # dates, or holiday files beside the job file
//!   catch_up: latest            # skip | latest | all
//!   catch_up_window: 1d
//!   overlap: skip               # skip | queue | cancel_previous | allow
//!   warm_up: 10m
//! ```
//!
//! Holiday files are read when the job file is parsed and kept as dates, so a stored schedule
//! does not depend on a file on whichever machine fires it.

use std::path::Path;
use std::time::Duration;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::locate::FieldPath;
use super::{InputPolicy, SpecError};
use crate::schedule::calendar::parse_date;
use crate::schedule::catch_up::DEFAULT_WINDOW;
use crate::schedule::vars::Occurrence;
use crate::schedule::{self, Calendar, CatchUp, CatchUpPolicy, CronExpr, Overlap, Schedule, ScheduleError};

/// A validated schedule: when the job fires and what fire times do when missed or overlapping.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScheduleSpec {
    /// The cron expression, as written.
    pub cron: String,
    /// The IANA zone it is read in.
    pub tz: String,
    /// Dates it does not fire on (inline dates and the holiday files' dates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<NaiveDate>,
    /// Which missed fire times fire.
    pub catch_up: CatchUp,
    /// How old a missed fire time may be and still fire.
    #[serde(with = "humantime_serde")]
    pub catch_up_window: Duration,
    /// What a fire time does while a previous run is going.
    pub overlap: Overlap,
    /// How long before a fire time the grid's capacity is raised.
    #[serde(default, with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
    pub warm_up: Option<Duration>,
    /// A one-off run (`submit --at`, `--in`): its one fire time, Unix milliseconds, instead of
    /// the cron expression (then [`ONCE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub once_at: Option<i64>,
}

/// The `cron` of a one-off run's schedule, which has no expression.
pub const ONCE: &str = "@once";

impl ScheduleSpec {
    /// The schedule of a one-off run at `at` (Unix milliseconds), kept with the others so it
    /// fires exactly once like any occurrence.
    pub fn once(at: i64) -> Self {
        Self {
            cron: ONCE.to_owned(),
            tz: "UTC".to_owned(),
            exclude: Vec::new(),
            catch_up: CatchUp::default(),
            catch_up_window: DEFAULT_WINDOW,
            overlap: Overlap::Allow,
            warm_up: None,
            once_at: Some(at),
        }
    }

    /// The schedule to evaluate.
    pub fn schedule(&self) -> Result<Schedule, ScheduleError> {
        let expr = CronExpr::parse(&self.cron)?;
        let zone = schedule::parse_zone(&self.tz)?;
        Ok(Schedule::new(expr, zone, Calendar::from_dates(self.exclude.iter().copied())))
    }

    /// The catch-up policy with its window.
    pub fn catch_up_policy(&self) -> CatchUpPolicy {
        CatchUpPolicy { mode: self.catch_up, window: self.catch_up_window }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    cron: String,
    tz: String,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    catch_up: Option<CatchUp>,
    #[serde(default, with = "humantime_serde::option")]
    catch_up_window: Option<Duration>,
    #[serde(default)]
    overlap: Option<Overlap>,
    #[serde(default, with = "humantime_serde::option")]
    warm_up: Option<Duration>,
}

/// Whether an `exclude:` item is written as a date (then it must be a valid one) rather than
/// naming a holiday file.
fn looks_like_date(item: &str) -> bool {
    let bytes = item.trim().as_bytes();
    bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| if i == 4 || i == 7 { *b == b'-' } else { b.is_ascii_digit() })
}

/// Validates a raw `schedule:` block; `error_at` places an error on a field of the file.
pub(super) fn validate(
    raw: RawSchedule,
    error_at: &dyn Fn(&FieldPath, String) -> SpecError,
    base_dir: &Path,
    policy: &InputPolicy,
) -> Result<ScheduleSpec, SpecError> {
    let field = FieldPath::root().key("schedule");
    let expr = CronExpr::parse(&raw.cron).map_err(|e| error_at(&field.key("cron"), e.message))?;
    let zone = schedule::parse_zone(&raw.tz).map_err(|e| error_at(&field.key("tz"), e.message))?;
    let mut calendar = Calendar::default();
    for (index, item) in raw.exclude.iter().enumerate() {
        let item_field = field.key("exclude").index(index);
        if looks_like_date(item) {
            let date = parse_date(item).map_err(|m| error_at(&item_field, m))?;
            calendar.exclude(date);
            continue;
        }
        if matches!(policy, InputPolicy::RawBucket(_)) {
            // The manager's disk is not the caller's: files are read by the CLI before it sends.
            return Err(error_at(
                &item_field,
                "the manager takes excluded dates, not holiday files; `batchgrid` reads the files before it submits"
                    .into(),
            ));
        }
        let path = base_dir.join(item);
        calendar.add_holiday_file(&path).map_err(|e| error_at(&item_field, e.message))?;
    }
    for (name, value) in [("catch_up_window", raw.catch_up_window), ("warm_up", raw.warm_up)] {
        if value.is_some_and(|d| d.is_zero()) {
            return Err(error_at(&field.key(name), "must be more than zero".into()));
        }
    }
    let schedule = Schedule::new(expr, zone, calendar.clone());
    // An expression that matches no date (30 February) or whose every match is excluded would
    // be accepted and then never run: refused here instead.
    let reference = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    match schedule.next_after(reference) {
        Ok(Some(_)) => {}
        Ok(None) => return Err(error_at(&field.key("cron"), format!("`{}` never fires", raw.cron.trim()))),
        Err(e) => return Err(error_at(&field.key(&e.field.to_string()), e.message)),
    }
    Ok(ScheduleSpec {
        cron: raw.cron.trim().to_owned(),
        tz: zone.name().to_owned(),
        exclude: calendar.dates().collect(),
        catch_up: raw.catch_up.unwrap_or_default(),
        catch_up_window: raw.catch_up_window.unwrap_or(DEFAULT_WINDOW),
        overlap: raw.overlap.unwrap_or_default(),
        warm_up: raw.warm_up,
        once_at: None,
    })
}

/// The names a command's arguments keep for the worker to replace.
pub(super) const COMMAND_PLACEHOLDERS: [&str; 2] = ["input", "output"];

/// A sample occurrence, to check a scheduled job's templates for unknown variables at parse.
pub(super) fn sample_occurrence() -> Occurrence {
    Occurrence { fire_time: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH.with_timezone(&chrono_tz::UTC) }
}

/// Whether `text` uses any occurrence variable.
pub(super) fn has_variables(text: &str) -> bool {
    schedule::vars::NAMES.iter().any(|name| text.contains(&format!("{{{name}}}")))
}

/// Schedule fields given on the command line (`schedule add --cron --tz`), over the file's.
#[derive(Debug, Clone, Default)]
pub struct ScheduleOverrides {
    /// Replaces `schedule.cron`.
    pub cron: Option<String>,
    /// Replaces `schedule.tz`.
    pub tz: Option<String>,
}

/// A job document ready for the manager's `POST /v1/schedules`: the command line's `--cron`
/// and `--tz` written into its `schedule:` block, validated here (so errors name the user's
/// file), and its holiday files replaced by their dates, which the manager cannot read.
pub fn schedule_document(
    text: &str,
    origin: &str,
    base_dir: &Path,
    overrides: &ScheduleOverrides,
) -> Result<String, SpecError> {
    let fail = |field: &str, message: String| SpecError {
        origin: origin.to_owned(),
        position: None,
        field: field.to_owned(),
        message,
    };
    let mut document: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| fail("(document)", e.to_string()))?;
    let serde_yaml::Value::Mapping(root) = &mut document else {
        return Err(fail("(document)", "a job document is a mapping".into()));
    };
    let block = root.entry("schedule".into()).or_insert_with(|| serde_yaml::Value::Mapping(Default::default()));
    let serde_yaml::Value::Mapping(block) = block else {
        return Err(fail("schedule", "must be a mapping".into()));
    };
    for (name, value) in [("cron", &overrides.cron), ("tz", &overrides.tz)] {
        if let Some(value) = value {
            block.insert(name.into(), value.clone().into());
        }
    }
    let rewritten = serde_yaml::to_string(&document).map_err(|e| fail("(document)", e.to_string()))?;
    // Validated as written when nothing was overridden, so errors carry the file's lines.
    let checked = if overrides.cron.is_none() && overrides.tz.is_none() { text } else { rewritten.as_str() };
    let spec = super::parse_job(checked, origin, base_dir, &super::Overrides::default())?;
    let Some(schedule) = spec.schedule else {
        return Err(fail("schedule", "the job has no `schedule:` block; give one, or --cron and --tz".into()));
    };
    if let Some(serde_yaml::Value::Mapping(block)) = document.get_mut("schedule") {
        let dates = schedule.exclude.iter().map(|d| serde_yaml::Value::from(d.to_string())).collect();
        block.insert("exclude".into(), serde_yaml::Value::Sequence(dates));
    }
    serde_yaml::to_string(&document).map_err(|e| fail("(document)", e.to_string()))
}
