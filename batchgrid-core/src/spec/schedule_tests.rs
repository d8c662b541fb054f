//! The `schedule:` block: parsed, validated, its errors naming file, line and field; and the
//! occurrence variables filled into a scheduled job.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::schedule::vars::Occurrence;
use crate::schedule::{CatchUp, Overlap};

/// A scheduled job; `SCHEDULE` is replaced by the block's body lines (indented two spaces).
const JOB: &str = "\
name: month-end
input:
  path: s3://raw-bucket/claims/{period}/
stages:
  - name: total
    command: [sh, -c, 'cp {input} {output}/{date}.csv']
output:
  path: results/{period}
schedule:
SCHEDULE";

fn parse_in(dir: &Path, body: &str) -> Result<JobSpec, SpecError> {
    parse_job(&JOB.replace("SCHEDULE", body), "job.yaml", dir, &Overrides::default())
}

fn error_in(dir: &Path, body: &str) -> String {
    let line = parse_in(dir, body).expect_err("must be rejected").to_string();
    assert!(!line.contains('\n'), "one line: {line}");
    line
}

#[test]
fn a_full_schedule_block_is_parsed_with_its_holiday_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("fr.txt"), "# bank holidays\n2026-12-25\n2027-01-01 # new year\n").expect("file");
    let spec = parse_in(
        dir.path(),
        "  cron: \"0 2 LW * *\"\n  tz: Europe/Paris\n  exclude: [2026-12-31, fr.txt]\n  catch_up: all\n  \
         catch_up_window: 3d\n  overlap: cancel_previous\n  warm_up: 10m\n",
    )
    .expect("valid");
    let schedule = spec.schedule.expect("scheduled");
    assert_eq!(schedule.cron, "0 2 LW * *");
    assert_eq!(schedule.tz, "Europe/Paris");
    let dates: Vec<String> = schedule.exclude.iter().map(|d| d.to_string()).collect();
    assert_eq!(dates, ["2026-12-25", "2026-12-31", "2027-01-01"]);
    assert_eq!((schedule.catch_up, schedule.catch_up_window), (CatchUp::All, Duration::from_secs(3 * 86_400)));
    assert_eq!(schedule.overlap, Overlap::CancelPrevious);
    assert_eq!(schedule.warm_up, Some(Duration::from_secs(600)));
    // The stored form is self-contained: it evaluates without the holiday file.
    let after = crate::schedule::parse_instant("2026-12-01T00:00:00Z").expect("time");
    let next = schedule.schedule().expect("valid").next_after(after).expect("next").expect("fires");
    assert_eq!(next.to_rfc3339(), "2026-12-30T02:00:00+01:00");
}

#[test]
fn defaults_are_latest_within_a_day_and_skip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let schedule = parse_in(dir.path(), "  cron: 0 2 L * *\n  tz: UTC\n").expect("valid").schedule.expect("scheduled");
    assert_eq!(schedule.catch_up_policy(), crate::schedule::CatchUpPolicy::default());
    assert_eq!(schedule.overlap, Overlap::Skip);
    assert_eq!(schedule.warm_up, None);
}

#[test]
fn schedule_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let line = error_in(dir.path(), "  cron: 0 2 X * *\n  tz: UTC\n");
    assert!(line.starts_with("job.yaml:10:3: schedule.cron: `0 2 X * *`: "), "{line}");
    let line = error_in(dir.path(), "  cron: 0 2 L * *\n  tz: Mars/Olympus\n");
    assert!(line.starts_with("job.yaml:11:3: schedule.tz: `Mars/Olympus` is not an IANA time zone"), "{line}");
    let line = error_in(dir.path(), "  cron: 0 2 L * *\n  tz: UTC\n  catch_up: sometimes\n");
    assert!(
        line.starts_with("job.yaml:12:") && line.contains("schedule.catch_up: unknown variant `sometimes`"),
        "{line}"
    );
    let line = error_in(dir.path(), "  cron: 0 2 L * *\n  tz: UTC\n  overlap: wait\n");
    assert!(line.contains("schedule.overlap: unknown variant `wait`") && line.contains("cancel_previous"), "{line}");
    let line = error_in(dir.path(), "  cron: 0 2 L * *\n  tz: UTC\n  warmup: 10m\n");
    assert!(line.starts_with("job.yaml:12:") && line.contains("unknown field `warmup`"), "{line}");
    let line = error_in(dir.path(), "  cron: 0 2 L * *\n  tz: UTC\n  catch_up_window: 0s\n");
    assert!(line.starts_with("job.yaml:12:3: schedule.catch_up_window: must be more than zero"), "{line}");
    let line = error_in(dir.path(), "  cron: 0 2 30 2 *\n  tz: UTC\n");
    assert!(line.starts_with("job.yaml:10:3: schedule.cron: `0 2 30 2 *` never fires"), "{line}");
    let line = error_in(dir.path(), "  tz: UTC\n");
    assert!(line.contains("schedule") && line.contains("missing field `cron`"), "{line}");
}

#[test]
fn exclude_errors_name_the_item_and_the_holiday_file_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("h.txt"), "2026-12-25\n2026-02-30\n").expect("file");
    let line = error_in(dir.path(), "  cron: 0 2 L * *\n  tz: UTC\n  exclude:\n    - 2026-12-24\n    - h.txt\n");
    let file = dir.path().join("h.txt");
    assert_eq!(
        line,
        format!("job.yaml:14:7: schedule.exclude[1]: {}:2: `2026-02-30` is not a date (YYYY-MM-DD)", file.display())
    );
    let line = error_in(dir.path(), "  cron: 0 2 L * *\n  tz: UTC\n  exclude: [2026-13-01]\n");
    assert!(
        line.starts_with("job.yaml:12:") && line.contains("schedule.exclude[0]: `2026-13-01` is not a date"),
        "{line}"
    );
    let line = error_in(dir.path(), "  cron: 0 2 L * *\n  tz: UTC\n  exclude: [missing.txt]\n");
    assert!(line.contains("schedule.exclude[0]: ") && line.contains("cannot read holiday file"), "{line}");
}

#[test]
fn the_api_takes_dates_but_reads_no_holiday_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("h.txt"), "2026-12-25\n").expect("file");
    let policy = InputPolicy::RawBucket("raw-bucket".into());
    let parse = |body: &str| {
        parse_job_with_policy(&JOB.replace("SCHEDULE", body), "job.yaml", dir.path(), &Overrides::default(), &policy)
    };
    parse("  cron: 0 2 L * *\n  tz: UTC\n  exclude: [2026-12-25]\n").expect("dates are fine");
    let error = parse("  cron: 0 2 L * *\n  tz: UTC\n  exclude: [h.txt]\n").expect_err("no file");
    assert_eq!(error.field, "schedule.exclude[0]");
}

#[test]
fn unknown_variables_are_refused_where_they_are_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let body = "  cron: 0 2 L * *\n  tz: UTC\n";
    let job = JOB.replace("SCHEDULE", body).replace("claims/{period}/", "claims/{perod}/");
    let error = parse_job(&job, "job.yaml", dir.path(), &Overrides::default()).expect_err("typo");
    assert!(error.to_string().starts_with("job.yaml:3:3: input.path: unknown variable `{perod}`"), "{error}");
    let job = JOB.replace("SCHEDULE", body).replace("{date}.csv", "{day}.csv");
    let error = parse_job(&job, "job.yaml", dir.path(), &Overrides::default()).expect_err("typo");
    assert_eq!(error.field, "stages[0].command[2]");
}

#[test]
fn an_occurrence_fills_its_month_into_the_job() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = parse_in(dir.path(), "  cron: 0 23 L * *\n  tz: America/New_York\n").expect("valid");
    let schedule = spec.schedule.as_ref().expect("scheduled").schedule().expect("valid");
    let after = crate::schedule::parse_instant("2026-11-15T00:00:00Z").expect("time");
    let fire_time = schedule.next_after(after).expect("next").expect("fires");
    let run = spec.for_occurrence(&Occurrence { fire_time }, "schedule month-end").expect("filled");
    assert_eq!(run.input, InputSpec::S3 { bucket: "raw-bucket".into(), key: "claims/2026-11/".into() });
    assert!(run.output.path.ends_with("results/2026-11"), "{}", run.output.path.display());
    let StageRun::Command { argv, .. } = &run.stages[0].run else { panic!("a command stage") };
    assert_eq!(argv[2], "cp {input} {output}/2026-11-30.csv");
    assert!(run.schedule.is_none(), "a run is one occurrence");
}

#[test]
fn a_local_input_of_a_later_month_is_checked_when_it_fires() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("2026-11")).expect("november's data");
    let job = JOB
        .replace("SCHEDULE", "  cron: 0 2 L * *\n  tz: UTC\n")
        .replace("s3://raw-bucket/claims/{period}/", "\"{period}\"");
    let spec = parse_job(&job, "job.yaml", dir.path(), &Overrides::default()).expect("a template need not exist yet");
    let schedule = spec.schedule.as_ref().expect("scheduled").schedule().expect("valid");
    let november = schedule.next_after(crate::schedule::parse_instant("2026-11-15T00:00:00Z").expect("t")).expect("n");
    let run = spec.for_occurrence(&Occurrence { fire_time: november.expect("fires") }, "s").expect("exists");
    assert_eq!(run.input, InputSpec::Local(dir.path().join("2026-11")));
    let december = schedule.next_after(crate::schedule::parse_instant("2026-12-15T00:00:00Z").expect("t")).expect("n");
    let error = spec.for_occurrence(&Occurrence { fire_time: december.expect("fires") }, "s").expect_err("no data");
    assert!(error.to_string().contains("2026-12") && error.to_string().contains("does not exist"), "{error}");
}
